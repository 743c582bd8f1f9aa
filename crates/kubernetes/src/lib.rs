//! berth's Kubernetes runtime. A deployment becomes, in the project's namespace:
//! a `Deployment` named `berth-<deployment id>` that pins the image by the digest
//! berth resolved with the stored credentials, and a
//! `kubernetes.io/dockerconfigjson` `Secret` built from those credentials at
//! deploy time, owned by the Deployment (`ownerReferences`), so the cluster
//! deletes it with the workload. The Deployment is created with no replicas, the
//! Secret next (it needs the Deployment's uid), then it is scaled to one: the
//! kubelet never tries a pull before its Secret exists.
//!
//! Around the workload, what runc's sandbox gives a container on a machine of
//! its own: the server's memory and CPU when the service sets none, a user
//! namespace (`hostUsers: false`, said in the log when the API server drops it),
//! a NetworkPolicy per project ([`network`]: no ingress from other namespaces,
//! egress to the public internet and the cluster's DNS only), and a namespace
//! that is berth's for that project ([`names`]: hashed to fit when too long;
//! one that exists is adopted only with berth's labels for the project).
//!
//! The rollout is read back ([`Kubernetes::rollout`]): available pods are
//! `DEPLOYED`; a pull the kubelet reports failing is told apart by its message
//! (containerd's "401 Unauthorized", "pull access denied", "not found"), a crash
//! loop or a passed progress deadline is a runtime error; the kubelet's events go
//! to the infrastructure log.
//!
//! A service with a port is reached as on runc ([`traffic`]): its pods are
//! ready once they answer (a readiness probe), only the ingress controller's
//! namespace gets in, and once the rollout is available
//! ([`Kubernetes::publish`]) the service's `Service` and `Ingress` route its
//! host names to it. `network: none` lets a pod out nowhere.

mod names;
mod network;
mod rollout;
mod run_settings;
mod traffic;

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

pub use ipnet::IpNet;
pub use names::{berth_project, dns_label, traffic_name};
pub use network::{parse_cidrs, PRIVATE_V4, PRIVATE_V6};
pub use rollout::{classify_pull, Cause, Rollout, Verdict};
pub use run_settings::{claim_name, secrets_name, RunSettings, Volume, REGION_LABEL, SECRETS_PATH};
pub use traffic::{ingress_hosts, DRAIN_SLEEP_S};

/// The label every object berth creates carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "berth");
pub const PROJECT_LABEL: &str = "berth.dev/project";
pub const SERVICE_LABEL: &str = "berth.dev/service";
pub const DEPLOYMENT_LABEL: &str = "berth.dev/deployment";
/// A pod's network, `public` or `none` (the project's NetworkPolicy leaves the
/// second out).
pub const NETWORK_LABEL: &str = "berth.dev/network";
/// `--kubernetes-ingress-namespace`'s default: where ingress-nginx installs.
pub const DEFAULT_INGRESS_NAMESPACE: &str = "ingress-nginx";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("the Kubernetes configuration: {0}")]
    Config(String),
    /// The API server answered with an error status (its reason and message).
    #[error("the Kubernetes API refused {what}: {code} {reason}: {message}")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    #[error("the Kubernetes API did not answer {what}: {detail}")]
    Unreachable { what: String, detail: String },
    /// What berth would use for a project (its namespace, its NetworkPolicy)
    /// exists and was not made by berth for that project: nothing is created in
    /// or over it.
    #[error("{what} exists and is not berth's for project {project}: berth uses it only when it carries the labels {want} (it has {found}); delete it, or, if it is this project's, label it: kubectl label {kubectl} {want}")]
    NotBerths {
        what: String,
        project: String,
        want: String,
        found: String,
        kubectl: String,
    },
}

impl KubeError {
    fn from_kube(what: &str, e: kube::Error) -> KubeError {
        match e {
            kube::Error::Api(s) => KubeError::Api {
                what: what.to_owned(),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => KubeError::Unreachable {
                what: what.to_owned(),
                detail: other.to_string(),
            },
        }
    }

    fn is_status(&self, want: u16) -> bool {
        matches!(self, KubeError::Api { code, .. } if *code == want)
    }
}

/// Where workloads go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    /// One namespace per project, `berth-<project>`, created on first use with
    /// berth's labels.
    PerProject,
    /// One namespace the operator gives (and created, with its RBAC, by them).
    Fixed(String),
}

/// How the server reaches the cluster and lays workloads out.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A kubeconfig file; `None`: the standard inference (in-cluster service
    /// account, else `KUBECONFIG` or `~/.kube/config`).
    pub kubeconfig: Option<std::path::PathBuf>,
    pub namespaces: Namespaces,
    /// `hostUsers: false` on pods (a user namespace per pod: root in the pod is
    /// not root on the node). On by default; an API server that does not keep
    /// the field (before 1.33, or the UserNamespacesSupport feature off) drops
    /// it, and the deployment's log says so.
    pub user_namespaces: bool,
    /// The Deployment's `progressDeadlineSeconds`.
    pub progress_deadline_s: i32,
    /// What a service that sets no memory or CPU gets, as requests and limits:
    /// the server's container defaults, as runc's sandbox gives them.
    pub default_resources: Resources,
    /// Addresses a project's pods may reach besides the public internet (an
    /// internal database, a node-local DNS cache), in its NetworkPolicy.
    pub egress_allow: Vec<ipnet::IpNet>,
    /// The services' Ingresses' `ingressClassName`; `None`: left out, so the
    /// cluster's default IngressClass takes them.
    pub ingress_class: Option<String>,
    /// The namespace of the ingress controller's pods, the only ones a serving
    /// pod lets in (selected by its `kubernetes.io/metadata.name` label).
    pub ingress_namespace: String,
    /// The storage class of services' volumes (PersistentVolumeClaims); `None`:
    /// the cluster's default class.
    pub storage_class: Option<String>,
}

/// A container's memory and CPU (requests and limits alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resources {
    pub memory_mb: u64,
    /// Thousandths of a CPU.
    pub cpu_millis: u64,
}

/// Whether the pod has a user namespace of its own (`hostUsers: false`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserNamespace {
    /// Asked for, and kept by the API server.
    Own,
    /// Asked for, and dropped by the API server (before Kubernetes 1.33, or the
    /// UserNamespacesSupport feature off): root in the pod is root on the node.
    Dropped,
    /// Not asked for (`--kubernetes-user-namespaces=false`).
    NotAsked,
}

/// What [`Kubernetes::apply`] made, and what the API server kept of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub placed: Placed,
    pub user_namespace: UserNamespace,
    /// The Secret of the service's secrets, when it has any.
    pub secret: Option<String>,
    /// The service's claim, when it has a volume.
    pub claim: Option<Claim>,
}

/// The service's PersistentVolumeClaim, as a deploy left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub change: ClaimChange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimChange {
    /// Made now, empty.
    Created,
    /// The service's, with its data; `bytes`: what it requests (never less
    /// than asked: a claim is grown, never shrunk), when berth could read it.
    Kept { bytes: Option<u128> },
    /// Its request raised from `from` bytes to the volume's size (the storage
    /// class must allow expansion; the data stays).
    Grown { from: u128 },
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kubeconfig: None,
            namespaces: Namespaces::PerProject,
            user_namespaces: true,
            progress_deadline_s: 120,
            // runc's sandbox defaults (`--container-memory-mb`, `--container-cpus`).
            default_resources: Resources {
                memory_mb: 512,
                cpu_millis: 1000,
            },
            egress_allow: Vec::new(),
            ingress_class: None,
            ingress_namespace: DEFAULT_INGRESS_NAMESPACE.to_owned(),
            storage_class: None,
        }
    }
}

/// What a deployment asks the cluster to run.
pub struct Workload<'a> {
    /// berth's deployment id: the objects are `berth-<id>`.
    pub deployment: &'a str,
    pub project: &'a str,
    pub service: &'a str,
    /// `host/repository@sha256:...`: the digest berth resolved.
    pub image: String,
    /// The registry host and what it is sent (for ECR, a token minted now).
    pub pull: Option<PullCredentials>,
    /// The image runs as a numeric non-root user: `runAsNonRoot: true` holds it
    /// to that (a named user is left alone: the kubelet cannot verify one).
    pub run_as_non_root: bool,
    pub memory_mb: Option<u64>,
    pub cpu_millis: Option<u64>,
    /// How the app is reached; `None`: a worker (no port), which gets no
    /// Service or Ingress.
    pub serve: Option<Serve>,
    pub network: Network,
    /// What the service sets over its image: variables, secrets, command and
    /// args, its volume, its region.
    pub settings: RunSettings,
}

/// A service that serves: its port, what ready means, its host names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serve {
    /// The container port (the service's, else the image's single exposed one).
    pub port: u16,
    /// Ready when it answers 2xx or 3xx; `None`: when the port accepts.
    pub health_path: Option<String>,
    /// `<service>.<project>.<apps domain>` and the service's domains.
    pub hosts: Vec<String>,
}

/// What a pod may reach: the project's egress (`Public`), or nothing, the
/// cluster's DNS included (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    Public,
    None,
}

/// What [`Kubernetes::publish`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routing {
    /// The service's `Service` and `Ingress`, both `name`, route `hosts` to
    /// its pods; `left_out` are host names an Ingress cannot have.
    Routed {
        name: String,
        hosts: Vec<String>,
        left_out: Vec<String>,
    },
    /// A worker: no Service or Ingress; `deleted` says which of an earlier
    /// deploy's were deleted now (`Ingress berth-...`).
    Unrouted { deleted: Vec<String> },
}

/// Whether an image config's `User` (`uid`, `uid:gid`, a name) is a numeric
/// user other than root.
pub fn non_root_user(user: &str) -> bool {
    let uid = user.split(':').next().unwrap_or_default();
    uid.parse::<u32>().is_ok_and(|u| u != 0)
}

pub struct PullCredentials {
    pub registry: String,
    pub username: String,
    pub password: SecretString,
}

/// Where a deployment's objects are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placed {
    pub namespace: String,
    pub name: String,
}

pub struct Kubernetes {
    client: Client,
    settings: Settings,
}

impl Kubernetes {
    pub async fn connect(settings: Settings) -> Result<Kubernetes, KubeError> {
        let config = match &settings.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(file, &Default::default())
                    .await
                    .map_err(|e| KubeError::Config(e.to_string()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?,
        };
        let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
        Ok(Kubernetes { client, settings })
    }

    /// Over a client made elsewhere (kube's mock service in the tests).
    pub fn from_client(client: Client, settings: Settings) -> Kubernetes {
        Kubernetes { client, settings }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The namespace of `project`'s workloads.
    pub fn namespace(&self, project: &str) -> String {
        match &self.settings.namespaces {
            Namespaces::PerProject => berth_project(project),
            Namespaces::Fixed(ns) => ns.clone(),
        }
    }

    /// The memory and CPU a workload is given: its service's, else the
    /// server's defaults.
    pub fn resources(&self, w: &Workload<'_>) -> Resources {
        let d = self.settings.default_resources;
        Resources {
            memory_mb: w.memory_mb.unwrap_or(d.memory_mb),
            cpu_millis: w.cpu_millis.unwrap_or(d.cpu_millis),
        }
    }

    /// The objects of deployment `id` of `project`.
    pub fn placed(&self, project: &str, deployment: &str) -> Placed {
        Placed {
            namespace: self.namespace(project),
            name: object_name(deployment),
        }
    }

    /// Creates the namespace when berth makes one per project. One that exists
    /// (409) is used only when it carries berth's labels for this project: a
    /// namespace someone else made, or another project's whose long name hashed
    /// the same, is refused.
    async fn ensure_namespace(&self, project: &str) -> Result<(), KubeError> {
        if self.settings.namespaces != Namespaces::PerProject {
            return Ok(());
        }
        let name = self.namespace(project);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = from_json(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": owner_labels(project)},
        }));
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = KubeError::from_kube("creating the namespace", e);
                if !e.is_status(409) {
                    return Err(e);
                }
                let found = api
                    .get(&name)
                    .await
                    .map_err(|e| KubeError::from_kube("reading the namespace", e))?;
                berths(
                    &found.metadata,
                    project,
                    format!("namespace {name}"),
                    format!("namespace {name}"),
                )
            }
        }
    }

    /// Creates the project's NetworkPolicy in `namespace`, or brings the one
    /// there up to date (the allowed CIDRs may have changed); one of that name
    /// berth did not make for the project is refused.
    async fn ensure_network_policy(&self, project: &str, namespace: &str) -> Result<(), KubeError> {
        let name = berth_project(project);
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), namespace);
        let want: NetworkPolicy = from_json(network::policy(
            &self.settings.namespaces,
            namespace,
            &name,
            &dns_label(project),
            &self.settings.egress_allow,
        ));
        let e = match api.create(&PostParams::default(), &want).await {
            Ok(_) => return Ok(()),
            Err(e) => KubeError::from_kube("creating the NetworkPolicy", e),
        };
        if !e.is_status(409) {
            return Err(e);
        }
        let found = api
            .get(&name)
            .await
            .map_err(|e| KubeError::from_kube("reading the NetworkPolicy", e))?;
        berths(
            &found.metadata,
            project,
            format!("NetworkPolicy {name} in namespace {namespace}"),
            format!("networkpolicy {name} -n {namespace}"),
        )?;
        if found.spec == want.spec {
            return Ok(());
        }
        let mut replaced = want;
        replaced.metadata.resource_version = found.metadata.resource_version;
        match api.replace(&name, &PostParams::default(), &replaced).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = KubeError::from_kube("replacing the NetworkPolicy", e);
                // Another deploy of the project wrote it in between.
                if e.is_status(409) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates the workload: the namespace and the NetworkPolicy first (no pod
    /// ever runs unconfined), then the Deployment (no replicas yet), the pull
    /// Secret and the Secret of the service's secrets it owns, the service's
    /// claim (made, or owned by this Deployment too and grown), then one
    /// replica: the kubelet never looks for any of them before they exist. A Deployment left from an earlier
    /// attempt of the same deployment (a crash mid-deploy) is replaced. What
    /// the API server kept of the pod's user namespace is read from the stored
    /// Deployment it answers.
    pub async fn apply(&self, w: &Workload<'_>) -> Result<Applied, KubeError> {
        self.ensure_namespace(w.project).await?;
        let placed = self.placed(w.project, w.deployment);
        self.ensure_network_policy(w.project, &placed.namespace)
            .await?;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &placed.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &placed.namespace);
        let body = self.deployment_object(w, &placed);
        let created = match deployments.create(&PostParams::default(), &body).await {
            Ok(d) => d,
            Err(e) => {
                let e = KubeError::from_kube("creating the Deployment", e);
                if !e.is_status(409) {
                    return Err(e);
                }
                self.delete(&placed).await?;
                deployments
                    .create(&PostParams::default(), &body)
                    .await
                    .map_err(|e| KubeError::from_kube("creating the Deployment", e))?
            }
        };
        let user_namespace = if !self.settings.user_namespaces {
            UserNamespace::NotAsked
        } else if created
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.host_users)
            == Some(false)
        {
            UserNamespace::Own
        } else {
            UserNamespace::Dropped
        };
        let uid = created.metadata.uid.clone().unwrap_or_default();
        if let Some(pull) = &w.pull {
            let secret = pull_secret(w, &placed, &uid, pull);
            match secrets.create(&PostParams::default(), &secret).await {
                Ok(_) => {}
                Err(e) => {
                    let e = KubeError::from_kube("creating the pull Secret", e);
                    if !e.is_status(409) {
                        return Err(e);
                    }
                    secrets
                        .replace(&placed.name, &PostParams::default(), &secret)
                        .await
                        .map_err(|e| KubeError::from_kube("replacing the pull Secret", e))?;
                }
            }
        }
        let secret = match run_settings::secret(w, &placed, &uid) {
            Some(secret) => Some(self.create_owned_secret(&placed, secret).await?),
            None => None,
        };
        let claim = match &w.settings.volume {
            Some(volume) => Some(self.ensure_claim(w, &placed, &uid, volume).await?),
            None => None,
        };
        if let Some(policy) =
            traffic::deployment_policy(w, &placed, &self.settings.ingress_namespace)
        {
            self.create_owned_policy(&placed, &uid, from_json(policy))
                .await?;
        }
        deployments
            .patch(
                &placed.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await
            .map_err(|e| KubeError::from_kube("scaling the Deployment", e))?;
        Ok(Applied {
            placed,
            user_namespace,
            secret,
            claim,
        })
    }

    /// Creates the Secret of the service's secrets (owned by the Deployment
    /// already); one left from an earlier attempt of the deployment is
    /// deleted first (it is immutable); its name.
    async fn create_owned_secret(
        &self,
        placed: &Placed,
        secret: Secret,
    ) -> Result<String, KubeError> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &placed.namespace);
        let name = secrets_name(placed);
        let e = match api.create(&PostParams::default(), &secret).await {
            Ok(_) => return Ok(name),
            Err(e) => KubeError::from_kube("creating the Secret of the service's secrets", e),
        };
        if !e.is_status(409) {
            return Err(e);
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) => {
                let e =
                    KubeError::from_kube("deleting an earlier Secret of the service's secrets", e);
                if !e.is_status(404) {
                    return Err(e);
                }
            }
        }
        api.create(&PostParams::default(), &secret)
            .await
            .map_err(|e| KubeError::from_kube("creating the Secret of the service's secrets", e))?;
        Ok(name)
    }

    /// Makes the service's claim, owned by this Deployment; one that exists
    /// (berth's for this service: an earlier deploy's, with its data) gets this
    /// Deployment as an owner too, so it outlives the one being replaced, and
    /// its request raised to the volume's size when that is larger (a claim is
    /// never shrunk). A write that lost a race with another deploy of the
    /// service (409 `Conflict`) is tried again on what that one wrote.
    async fn ensure_claim(
        &self,
        w: &Workload<'_>,
        placed: &Placed,
        owner_uid: &str,
        volume: &Volume,
    ) -> Result<Claim, KubeError> {
        const KIND: &str = "PersistentVolumeClaim";
        let api: Api<PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &placed.namespace);
        let owner = shared_owner(placed, owner_uid);
        let mut want = run_settings::claim(
            w,
            &placed.namespace,
            volume,
            self.settings.storage_class.as_deref(),
        );
        let name = want.metadata.name.clone().unwrap_or_default();
        want.metadata.owner_references = Some(vec![owner.clone()]);
        let e = match api.create(&PostParams::default(), &want).await {
            Ok(_) => {
                return Ok(Claim {
                    name,
                    change: ClaimChange::Created,
                })
            }
            Err(e) => KubeError::from_kube("creating the PersistentVolumeClaim", e),
        };
        if !e.is_status(409) {
            return Err(e);
        }
        let wanted = u128::from(volume.size_mb) << 20;
        let mut last = e;
        for _ in 0..3 {
            let mut found = api
                .get(&name)
                .await
                .map_err(|e| KubeError::from_kube("reading the PersistentVolumeClaim", e))?;
            berths_for_service(&found.metadata, w, KIND, &name)?;
            if found.metadata.deletion_timestamp.is_some() {
                return Err(KubeError::Api {
                    what: format!("using the {KIND} {name}"),
                    code: 409,
                    reason: "Terminating".into(),
                    message: "it is being deleted (its service's last Deployment was); deploy again once it is gone".into(),
                });
            }
            let (write, change) = claim_update(&mut found, &owner, volume.size_mb, wanted);
            if !write {
                return Ok(Claim { name, change });
            }
            match api.replace(&name, &PostParams::default(), &found).await {
                Ok(_) => return Ok(Claim { name, change }),
                Err(e) => {
                    let e = KubeError::from_kube("updating the PersistentVolumeClaim", e);
                    if !e.is_status(409) {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The deployment's own NetworkPolicy, owned by its Deployment (so it goes
    /// with it), before any pod: a `network: none` pod is selected by no other.
    /// One left from an earlier attempt is replaced.
    async fn create_owned_policy(
        &self,
        placed: &Placed,
        owner_uid: &str,
        mut policy: NetworkPolicy,
    ) -> Result<(), KubeError> {
        let api: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &placed.namespace);
        policy.metadata.owner_references = Some(vec![sole_owner(placed, owner_uid)]);
        match api.create(&PostParams::default(), &policy).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = KubeError::from_kube("creating the deployment's NetworkPolicy", e);
                if !e.is_status(409) {
                    return Err(e);
                }
                let found = api.get(&placed.name).await.map_err(|e| {
                    KubeError::from_kube("reading the deployment's NetworkPolicy", e)
                })?;
                policy.metadata.resource_version = found.metadata.resource_version;
                api.replace(&placed.name, &PostParams::default(), &policy)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        KubeError::from_kube("replacing the deployment's NetworkPolicy", e)
                    })
            }
        }
    }

    /// Routes the service's host names to its pods, once deployment `placed`
    /// is available: creates or rewrites the service's `Ingress` (first: an
    /// ingress controller's refusal, a host another Ingress has, comes before
    /// anything changed) and `Service`, each owned by this Deployment too, so
    /// the cluster deletes them once the service's last deployment is gone (a
    /// terminate). A worker's deploy deletes those an earlier deploy made,
    /// now that it runs. Objects of those names berth did not make for this
    /// service are refused, never rewritten or deleted.
    pub async fn publish(&self, w: &Workload<'_>, placed: &Placed) -> Result<Routing, KubeError> {
        let name = traffic_name(w.project, w.service);
        let ns = &placed.namespace;
        let services: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let ingresses: Api<Ingress> = Api::namespaced(self.client.clone(), ns);
        let Some(serve) = &w.serve else {
            let mut deleted = Vec::new();
            if self
                .delete_if_berths(&ingresses, &name, w, "Ingress")
                .await?
            {
                deleted.push(format!("Ingress {name}"));
            }
            if self
                .delete_if_berths(&services, &name, w, "Service")
                .await?
            {
                deleted.push(format!("Service {name}"));
            }
            return Ok(Routing::Unrouted { deleted });
        };
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
        let uid = deployments
            .get(&placed.name)
            .await
            .map_err(|e| KubeError::from_kube("reading the Deployment", e))?
            .metadata
            .uid
            .unwrap_or_default();
        let owner = shared_owner(placed, &uid);
        let (hosts, left_out) = ingress_hosts(&serve.hosts);
        if hosts.is_empty() {
            // An Ingress needs a rule (or a default backend, which is not one
            // service's to take).
            self.delete_if_berths(&ingresses, &name, w, "Ingress")
                .await?;
        } else {
            let class = self.settings.ingress_class.as_deref();
            let ingress = from_json(traffic::ingress(w, &name, ns, class, &hosts));
            self.upsert(&ingresses, ingress, &owner, w, "Ingress", |_, _| {})
                .await?;
        }
        let service = from_json(traffic::service(w, &name, ns));
        // The address the API server gave stays (it may not change).
        let keep_address = |found: &Service, want: &mut Service| {
            if let (Some(f), Some(s)) = (&found.spec, want.spec.as_mut()) {
                s.cluster_ip = f.cluster_ip.clone();
                s.cluster_ips = f.cluster_ips.clone();
            }
        };
        self.upsert(&services, service, &owner, w, "Service", keep_address)
            .await?;
        Ok(Routing::Routed {
            name,
            hosts,
            left_out,
        })
    }

    /// Creates `want` owned by `owner`; one that exists (berth's for this
    /// service) is replaced, keeping the owners it has (the deployment still
    /// serving stays one until the cluster deletes it) and what `keep` copies
    /// from it. A write that lost a race with another deploy of the service
    /// (409 `Conflict`) is tried again on what that one wrote.
    async fn upsert<K>(
        &self,
        api: &Api<K>,
        mut want: K,
        owner: &OwnerReference,
        w: &Workload<'_>,
        kind: &str,
        keep: impl Fn(&K, &mut K),
    ) -> Result<(), KubeError>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = want.meta().name.clone().unwrap_or_default();
        want.meta_mut().owner_references = Some(vec![owner.clone()]);
        let e = match api.create(&PostParams::default(), &want).await {
            Ok(_) => return Ok(()),
            Err(e) => KubeError::from_kube(&format!("creating the {kind}"), e),
        };
        if !e.is_status(409) {
            return Err(e);
        }
        let mut last = e;
        for _ in 0..3 {
            let found = api
                .get(&name)
                .await
                .map_err(|e| KubeError::from_kube(&format!("reading the {kind}"), e))?;
            berths_for_service(found.meta(), w, kind, &name)?;
            let mut replaced = want.clone();
            let mut owners = found.meta().owner_references.clone().unwrap_or_default();
            if !owners.iter().any(|o| o.uid == owner.uid) {
                owners.push(owner.clone());
            }
            replaced.meta_mut().owner_references = Some(owners);
            replaced.meta_mut().resource_version = found.meta().resource_version.clone();
            keep(&found, &mut replaced);
            match api.replace(&name, &PostParams::default(), &replaced).await {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let e = KubeError::from_kube(&format!("replacing the {kind}"), e);
                    if !e.is_status(409) {
                        return Err(e);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Deletes object `name` if it is berth's for `w`'s service; whether it did.
    async fn delete_if_berths<K>(
        &self,
        api: &Api<K>,
        name: &str,
        w: &Workload<'_>,
        kind: &str,
    ) -> Result<bool, KubeError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let Some(found) = api
            .get_opt(name)
            .await
            .map_err(|e| KubeError::from_kube(&format!("reading the {kind}"), e))?
        else {
            return Ok(false);
        };
        if berths_for_service(found.meta(), w, kind, name).is_err() {
            return Ok(false);
        }
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = KubeError::from_kube(&format!("deleting the {kind}"), e);
                if e.is_status(404) {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    fn deployment_object(&self, w: &Workload<'_>, placed: &Placed) -> Deployment {
        let labels = workload_labels(w);
        let r = self.resources(w);
        let amounts =
            json!({"memory": format!("{}Mi", r.memory_mb), "cpu": format!("{}m", r.cpu_millis)});
        let mut pod_spec = json!({
            "containers": [{
                "name": "app",
                "image": w.image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": amounts, "limits": amounts},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    // runc's set (oci-spec's default process): what a root
                    // process needs to bind port 80 and signal its children.
                    "capabilities": {"drop": ["ALL"], "add": RUNC_CAPABILITIES},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }],
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
        });
        if let Some(serve) = &w.serve {
            traffic::serving_container(&mut pod_spec["containers"][0], serve);
        }
        run_settings::container(&mut pod_spec["containers"][0], &w.settings, placed);
        run_settings::pod(&mut pod_spec, w, placed);
        if w.pull.is_some() {
            pod_spec["imagePullSecrets"] = json!([{"name": placed.name}]);
        }
        if self.settings.user_namespaces {
            pod_spec["hostUsers"] = json!(false);
        }
        if w.run_as_non_root {
            pod_spec["securityContext"]["runAsNonRoot"] = json!(true);
        }
        from_json(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": placed.name, "namespace": placed.namespace, "labels": labels},
            "spec": {
                "replicas": 0,
                "progressDeadlineSeconds": self.settings.progress_deadline_s,
                "selector": {"matchLabels": {DEPLOYMENT_LABEL: w.deployment}},
                "template": {"metadata": {"labels": labels}, "spec": pod_spec},
            },
        }))
    }

    /// Where the rollout of `placed` is: its Deployment, its pods and the
    /// events about them.
    pub async fn rollout(&self, placed: &Placed) -> Result<Rollout, KubeError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &placed.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &placed.namespace);
        let events: Api<Event> = Api::namespaced(self.client.clone(), &placed.namespace);
        let deployment = deployments
            .get_opt(&placed.name)
            .await
            .map_err(|e| KubeError::from_kube("reading the Deployment", e))?;
        let id = placed.name.trim_start_matches("berth-");
        let pods = pods
            .list(&ListParams::default().labels(&format!("{DEPLOYMENT_LABEL}={id}")))
            .await
            .map_err(|e| KubeError::from_kube("listing the pods", e))?
            .items;
        let mut seen = Vec::new();
        for pod in &pods {
            let Some(name) = pod.metadata.name.as_deref() else {
                continue;
            };
            let listed = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
                .await
                .map_err(|e| KubeError::from_kube("listing the events", e))?;
            seen.extend(listed.items);
        }
        Ok(Rollout {
            deployment,
            pods,
            events: seen,
        })
    }

    /// The workload's changes as they happen: an item whenever its Deployment or
    /// one of its pods is added, modified or deleted (two watches, merged). The
    /// stream ends when a watch does (the API server ends them after a while);
    /// the caller watches again.
    pub async fn changes(
        &self,
        placed: &Placed,
    ) -> Result<futures_util::stream::BoxStream<'static, ()>, KubeError> {
        use futures_util::StreamExt;
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &placed.namespace);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &placed.namespace);
        let id = placed.name.trim_start_matches("berth-");
        let d = deployments
            .watch(
                &WatchParams::default().fields(&format!("metadata.name={}", placed.name)),
                "0",
            )
            .await
            .map_err(|e| KubeError::from_kube("watching the Deployment", e))?;
        let p = pods
            .watch(
                &WatchParams::default().labels(&format!("{DEPLOYMENT_LABEL}={id}")),
                "0",
            )
            .await
            .map_err(|e| KubeError::from_kube("watching the pods", e))?;
        let d = d
            .take_while(|e| futures_util::future::ready(e.is_ok()))
            .map(|_| ());
        let p = p
            .take_while(|e| futures_util::future::ready(e.is_ok()))
            .map(|_| ());
        Ok(futures_util::stream::select(d, p).boxed())
    }

    /// Whether the Deployment of `placed` exists.
    pub async fn exists(&self, placed: &Placed) -> Result<bool, KubeError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &placed.namespace);
        Ok(deployments
            .get_opt(&placed.name)
            .await
            .map_err(|e| KubeError::from_kube("reading the Deployment", e))?
            .is_some())
    }

    /// Deletes the Deployment (its pods, its Secrets and its NetworkPolicy go
    /// with it, by owner; the service's Service, Ingress and claim too when it
    /// was their last owner) and the Secrets and the NetworkPolicy too, should
    /// a cluster's garbage collector lag; a missing one is fine.
    pub async fn delete(&self, placed: &Placed) -> Result<(), KubeError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &placed.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &placed.namespace);
        let policies: Api<NetworkPolicy> = Api::namespaced(self.client.clone(), &placed.namespace);
        for r in [
            deployments
                .delete(&placed.name, &DeleteParams::background())
                .await
                .map(|_| ())
                .map_err(|e| KubeError::from_kube("deleting the Deployment", e)),
            secrets
                .delete(&placed.name, &DeleteParams::background())
                .await
                .map(|_| ())
                .map_err(|e| KubeError::from_kube("deleting the pull Secret", e)),
            secrets
                .delete(&secrets_name(placed), &DeleteParams::background())
                .await
                .map(|_| ())
                .map_err(|e| {
                    KubeError::from_kube("deleting the Secret of the service's secrets", e)
                }),
            policies
                .delete(&placed.name, &DeleteParams::background())
                .await
                .map(|_| ())
                .map_err(|e| KubeError::from_kube("deleting the deployment's NetworkPolicy", e)),
        ] {
            match r {
                Err(e) if !e.is_status(404) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The capabilities a container keeps: those of runc's sandbox.
pub const RUNC_CAPABILITIES: [&str; 3] = ["AUDIT_WRITE", "KILL", "NET_BIND_SERVICE"];

/// The labels that say an object is berth's for `project` (names fitted to
/// label values: a name ending in `-` is not one).
fn owner_labels(project: &str) -> serde_json::Value {
    json!({MANAGED_BY.0: MANAGED_BY.1, PROJECT_LABEL: dns_label(project)})
}

fn workload_labels(w: &Workload<'_>) -> serde_json::Value {
    json!({
        MANAGED_BY.0: MANAGED_BY.1,
        PROJECT_LABEL: dns_label(w.project),
        SERVICE_LABEL: dns_label(w.service),
        DEPLOYMENT_LABEL: w.deployment,
        NETWORK_LABEL: traffic::network_value(w.network),
    })
}

/// An owner reference to the Deployment of `placed`, one owner among others:
/// the service's Service and Ingress are owned by each Deployment that served
/// them, and go once the last is deleted.
fn shared_owner(placed: &Placed, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: placed.name.clone(),
        uid: uid.to_owned(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// The Deployment of `placed` as the controller of what is its alone (its
/// NetworkPolicy, as its pull Secret).
fn sole_owner(placed: &Placed, uid: &str) -> OwnerReference {
    OwnerReference {
        controller: Some(true),
        block_owner_deletion: Some(true),
        ..shared_owner(placed, uid)
    }
}

/// Whether a Service or Ingress that exists is berth's for `w`'s service.
fn berths_for_service(
    meta: &ObjectMeta,
    w: &Workload<'_>,
    kind: &str,
    name: &str,
) -> Result<(), KubeError> {
    let namespace = meta.namespace.clone().unwrap_or_default();
    let what = format!("{kind} {name} in namespace {namespace}");
    let kubectl = format!("{} {name} -n {namespace}", kind.to_ascii_lowercase());
    berths(meta, w.project, what.clone(), kubectl.clone())?;
    let want = dns_label(w.service);
    let labels = meta.labels.clone().unwrap_or_default();
    match labels.get(SERVICE_LABEL) {
        Some(v) if *v == want => Ok(()),
        found => Err(KubeError::NotBerths {
            what,
            project: format!("{} (service {})", w.project, w.service),
            want: format!("{SERVICE_LABEL}={want}"),
            found: found
                .map(|v| format!("{SERVICE_LABEL}={v}"))
                .unwrap_or_else(|| format!("no {SERVICE_LABEL}")),
            kubectl,
        }),
    }
}

/// Whether an object that exists carries berth's labels for `project`.
fn berths(
    meta: &ObjectMeta,
    project: &str,
    what: String,
    kubectl: String,
) -> Result<(), KubeError> {
    let labels = meta.labels.clone().unwrap_or_default();
    let want = [
        (MANAGED_BY.0, MANAGED_BY.1.to_owned()),
        (PROJECT_LABEL, dns_label(project)),
    ];
    if want
        .iter()
        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(v.as_str()))
    {
        return Ok(());
    }
    let found = if labels.is_empty() {
        "none".to_owned()
    } else {
        labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(KubeError::NotBerths {
        what,
        project: project.to_owned(),
        want: want
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        found,
        kubectl,
    })
}

/// `berth-<deployment id>`: a valid object name (ids are 32 hex digits).
pub fn object_name(deployment: &str) -> String {
    format!("berth-{deployment}")
}

/// The `.dockerconfigjson` of a pull Secret: `auths` for the registry host with
/// the user name, the password and their base64 `auth`.
pub fn docker_config_json(pull: &PullCredentials) -> zeroize::Zeroizing<String> {
    let auth = zeroize::Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        pull.username,
        pull.password.expose_secret()
    )));
    zeroize::Zeroizing::new(
        json!({"auths": {pull.registry.clone(): {
            "username": pull.username,
            "password": pull.password.expose_secret(),
            "auth": auth.as_str(),
        }}})
        .to_string(),
    )
}

fn pull_secret(
    w: &Workload<'_>,
    placed: &Placed,
    owner_uid: &str,
    pull: &PullCredentials,
) -> Secret {
    let config = docker_config_json(pull);
    let mut data = BTreeMap::new();
    data.insert(
        ".dockerconfigjson".to_owned(),
        k8s_openapi::ByteString(config.as_bytes().to_vec()),
    );
    let mut secret: Secret = from_json(json!({
        "apiVersion": "v1", "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {
            "name": placed.name,
            "namespace": placed.namespace,
            "labels": workload_labels(w),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "Deployment", "name": placed.name,
                "uid": owner_uid, "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "immutable": true,
    }));
    secret.data = Some(data);
    secret
}

/// An object from its JSON, as the API documents it (berth's own literals: a
/// failure is a bug in this file, caught by its tests).
fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).expect("a well-formed Kubernetes object")
}

/// `found` with `owner` among its owners and its storage request raised to
/// `size_mb` when it asks for less (`wanted` bytes; never lowered): whether it
/// must be written, and what the claim went through.
fn claim_update(
    found: &mut PersistentVolumeClaim,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    size_mb: u64,
    wanted: u128,
) -> (bool, ClaimChange) {
    let had = run_settings::requested(found);
    let mut owners = found.metadata.owner_references.clone().unwrap_or_default();
    let owned = owners.iter().any(|o| o.uid == owner.uid);
    let grow = had.filter(|h| *h < wanted);
    if owned && grow.is_none() {
        return (false, ClaimChange::Kept { bytes: had });
    }
    if !owned {
        owners.push(owner.clone());
    }
    found.metadata.owner_references = Some(owners);
    let Some(from) = grow else {
        return (true, ClaimChange::Kept { bytes: had });
    };
    if let Some(requests) = found
        .spec
        .as_mut()
        .and_then(|s| s.resources.as_mut())
        .and_then(|r| r.requests.as_mut())
    {
        requests.insert(
            "storage".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity(format!("{size_mb}Mi")),
        );
    }
    (true, ClaimChange::Grown { from })
}

#[cfg(test)]
mod mock_api_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_root_users() {
        for (user, non_root) in [
            ("1000", true),
            ("1000:1000", true),
            ("0", false),
            ("0:0", false),
            ("", false),
            ("root", false),
            ("app", false),
        ] {
            assert_eq!(non_root_user(user), non_root, "{user:?}");
        }
    }

    #[test]
    fn a_pull_secret_holds_the_credentials_for_the_host_only() {
        let pull = PullCredentials {
            registry: "ghcr.io".into(),
            username: "alice".into(),
            password: SecretString::from("s3cret"),
        };
        let v: serde_json::Value = serde_json::from_str(&docker_config_json(&pull)).unwrap();
        let entry = &v["auths"]["ghcr.io"];
        assert_eq!(entry["username"], "alice");
        assert_eq!(entry["password"], "s3cret");
        assert_eq!(entry["auth"], "YWxpY2U6czNjcmV0");
        assert_eq!(v["auths"].as_object().unwrap().len(), 1);
    }
}
