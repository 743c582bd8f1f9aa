//! berth's Kubernetes runtime. A deployment becomes, in the project's namespace:
//! a `Deployment` named `berth-<deployment id>` that pins the image by the digest
//! berth resolved with the stored credentials, and a
//! `kubernetes.io/dockerconfigjson` `Secret` built from those credentials at
//! deploy time, owned by the Deployment (`ownerReferences`), so the cluster
//! deletes it with the workload. The Deployment is created with no replicas, the
//! Secret next (it needs the Deployment's uid), then it is scaled to one: the
//! kubelet never tries a pull before its Secret exists.
//!
//! The rollout is read back ([`Kubernetes::rollout`]): available pods are
//! `DEPLOYED`; a pull the kubelet reports failing is told apart by its message
//! (containerd's "401 Unauthorized", "pull access denied", "not found"), a crash
//! loop or a passed progress deadline is a runtime error; the kubelet's events go
//! to the infrastructure log.

mod rollout;

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::{Api, Client};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

pub use rollout::{classify_pull, Rollout, Verdict};

/// The label every object berth creates carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "berth");
pub const PROJECT_LABEL: &str = "berth.dev/project";
pub const SERVICE_LABEL: &str = "berth.dev/service";
pub const DEPLOYMENT_LABEL: &str = "berth.dev/deployment";

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
    /// `hostUsers: false` on pods (a user namespace per pod), for clusters that
    /// support it (Kubernetes 1.33+ with a runtime that does).
    pub user_namespaces: bool,
    /// The Deployment's `progressDeadlineSeconds`.
    pub progress_deadline_s: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kubeconfig: None,
            namespaces: Namespaces::PerProject,
            user_namespaces: false,
            progress_deadline_s: 120,
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

    /// The namespace of `project`'s workloads.
    pub fn namespace(&self, project: &str) -> String {
        match &self.settings.namespaces {
            Namespaces::PerProject => format!("berth-{project}"),
            Namespaces::Fixed(ns) => ns.clone(),
        }
    }

    /// The objects of deployment `id` of `project`.
    pub fn placed(&self, project: &str, deployment: &str) -> Placed {
        Placed {
            namespace: self.namespace(project),
            name: object_name(deployment),
        }
    }

    /// Creates the namespace when berth owns one per project (409: it exists).
    async fn ensure_namespace(&self, project: &str) -> Result<(), KubeError> {
        if self.settings.namespaces != Namespaces::PerProject {
            return Ok(());
        }
        let name = self.namespace(project);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = from_json(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {MANAGED_BY.0: MANAGED_BY.1, PROJECT_LABEL: project}},
        }));
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = KubeError::from_kube("creating the namespace", e);
                if e.is_status(409) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Creates the workload: the Deployment (no replicas yet), the pull Secret
    /// it owns, then one replica. A Deployment left from an earlier attempt of
    /// the same deployment (a crash mid-deploy) is replaced.
    pub async fn apply(&self, w: &Workload<'_>) -> Result<Placed, KubeError> {
        self.ensure_namespace(w.project).await?;
        let placed = self.placed(w.project, w.deployment);
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
        deployments
            .patch(
                &placed.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"replicas": 1}})),
            )
            .await
            .map_err(|e| KubeError::from_kube("scaling the Deployment", e))?;
        Ok(placed)
    }

    fn deployment_object(&self, w: &Workload<'_>, placed: &Placed) -> Deployment {
        let labels = json!({
            MANAGED_BY.0: MANAGED_BY.1,
            PROJECT_LABEL: w.project,
            SERVICE_LABEL: w.service,
            DEPLOYMENT_LABEL: w.deployment,
        });
        let mut limits = serde_json::Map::new();
        if let Some(m) = w.memory_mb {
            limits.insert("memory".into(), json!(format!("{m}Mi")));
        }
        if let Some(c) = w.cpu_millis {
            limits.insert("cpu".into(), json!(format!("{c}m")));
        }
        let mut pod_spec = json!({
            "containers": [{
                "name": "app",
                "image": w.image,
                "imagePullPolicy": "IfNotPresent",
                "resources": {"limits": limits},
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
            }],
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
        });
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

    /// Deletes the Deployment (its pods and its Secret go with it, by owner)
    /// and the Secret too, should a cluster's garbage collector lag; a missing
    /// one is fine.
    pub async fn delete(&self, placed: &Placed) -> Result<(), KubeError> {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &placed.namespace);
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &placed.namespace);
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
        ] {
            match r {
                Err(e) if !e.is_status(404) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
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
            "labels": {MANAGED_BY.0: MANAGED_BY.1, PROJECT_LABEL: w.project, SERVICE_LABEL: w.service, DEPLOYMENT_LABEL: w.deployment},
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

#[cfg(test)]
mod shapes;

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
