//! Deployments on a Kubernetes cluster (`--runtime kubernetes`): the registry
//! walk is the same (berth resolves the digest with the stored credentials, so a
//! bad credential or a missing tag fails in seconds with the registry's own
//! answer), then the cluster is given a Deployment pinned by that digest, the
//! pull Secret and the Secret of the service's secrets it owns, the service's
//! volume claim (kept across deploys), and the rollout is followed into the infrastructure log
//! until its pod is available (for a service with a port: answering its
//! readiness probe) or the kubelet reports why not; then the service's
//! Service and Ingress route its host names to it (`publish`). Where a
//! deployment's objects are is kept next to its log (`kubernetes.json`), so that
//! a stop, a reconcile and the next server process find them.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use berth_kubernetes::{
    Applied, ClaimChange, KubeError, Network, Placed, PullCredentials, Routing, Serve,
    UserNamespace, Verdict, Workload,
};
use berth_registry::{Code, Credentials, Target};
use berth_runtime::settings::RunSettings;
use berth_store::{Deployment, DeploymentId, NetworkMode, RestartPolicy, Service, ServiceStatus};
use berth_types::Digest;

use super::failure::Failure;
use super::Worker;
use super::{locked, log, Deployer};

const PLACED: &str = "kubernetes.json";
/// A rollout is read again on every change its watches see, and at least this
/// often.
const FALLBACK: Duration = Duration::from_secs(5);

impl Deployer {
    /// Where deployment `id`'s objects are on the cluster, if this replica
    /// placed them and they were not deleted since.
    pub(super) fn placed(&self, id: &DeploymentId) -> Option<Placed> {
        let text = std::fs::read_to_string(self.root.join(id.as_str()).join(PLACED)).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some(Placed {
            namespace: v["namespace"].as_str()?.to_owned(),
            name: v["name"].as_str()?.to_owned(),
        })
    }

    fn record_placed(&self, id: &DeploymentId, placed: &Placed) -> std::io::Result<()> {
        let dir = self.root.join(id.as_str());
        std::fs::create_dir_all(&dir)?;
        let text = serde_json::json!({"namespace": placed.namespace, "name": placed.name});
        std::fs::write(dir.join(PLACED), text.to_string())?;
        locked(&self.on_cluster).insert(id.clone());
        Ok(())
    }

    /// Forgets where deployment `id` was to be placed, deleting nothing: for a
    /// deploy refused before anything was created (a namespace not berth's,
    /// where berth must not even delete).
    fn forget_placed(&self, id: &DeploymentId) {
        let _ = std::fs::remove_file(self.root.join(id.as_str()).join(PLACED));
        locked(&self.on_cluster).remove(id);
    }

    /// Deletes deployment `id`'s Deployment (its pods and Secrets go with it).
    pub(super) async fn stop_on_cluster(&self, id: &DeploymentId) {
        let (Some(cluster), Some(placed)) = (&self.cluster, self.placed(id)) else {
            return;
        };
        match cluster.delete(&placed).await {
            Ok(()) => {
                let _ = std::fs::remove_file(self.root.join(id.as_str()).join(PLACED));
                locked(&self.on_cluster).remove(id);
                log::append(
                    &self.log_path(id),
                    &format!(
                        "stopped; the Deployment {} and its Secrets were deleted from namespace {}; its pods go with it, and the service's claim when no other Deployment mounts it",
                        placed.name, placed.namespace
                    ),
                );
            }
            Err(e) => tracing::warn!(deployment = %id, error = %e, "deleting a Deployment"),
        }
    }

    /// The cluster's side of the reconcile: what this replica placed for a
    /// deployment that should no longer run (replaced, terminated, failed, or
    /// left by a crash mid-deploy) is deleted. Restarts are the cluster's.
    pub(super) async fn reconcile_cluster(
        self: &Arc<Self>,
        store: &dyn berth_store::DeploymentQueue,
    ) {
        let placed: Vec<DeploymentId> = locked(&self.on_cluster).iter().cloned().collect();
        if placed.is_empty() {
            return;
        }
        let in_flight: HashSet<DeploymentId> = locked(&self.in_flight).keys().cloned().collect();
        let live: HashSet<DeploymentId> = match store.live_deployments().await {
            Ok(l) => l.into_iter().map(|d| d.id).collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading live deployments");
                return;
            }
        };
        let stale: Vec<&DeploymentId> = placed
            .iter()
            .filter(|id| !live.contains(*id) && !in_flight.contains(*id))
            .collect();
        futures_util::future::join_all(stale.iter().map(|id| self.stop(id))).await;
        if !stale.is_empty() {
            tracing::info!(
                deleted = stale.len(),
                "Deployments of deployments that no longer run were deleted"
            );
        }
    }
}

/// The deployments whose placement files are under `root` (the deployments
/// directory), read when the server starts.
pub(super) fn placed_on_disk(root: &Path) -> HashSet<DeploymentId> {
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join(PLACED).exists())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .map(|s| DeploymentId::from(s.to_owned()))
        })
        .collect()
}

/// What the deployment's log says of the sandbox around the pod before it is
/// created: its memory and CPU and where they come from, the processes limit
/// (the node's: Kubernetes has no per-pod one) and the NetworkPolicy.
fn isolation_lines(
    cluster: &berth_kubernetes::Kubernetes,
    workload: &Workload<'_>,
    service: &Service,
    placed: &Placed,
) -> Vec<String> {
    let r = cluster.resources(workload);
    let whose = |own: bool| {
        if own {
            "the service's"
        } else {
            "the server's default"
        }
    };
    let pids = match service.resources.pids {
        Some(n) => format!("the service's limit of {n} is not applied"),
        None => "--container-pids is runc's only".to_owned(),
    };
    let allowed = &cluster.settings().egress_allow;
    let allowed = if allowed.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = allowed.iter().map(|c| c.to_string()).collect();
        format!(", and to {} (--kubernetes-egress-allow)", list.join(", "))
    };
    let project_policy = berth_kubernetes::berth_project(workload.project);
    let mut traffic = Vec::new();
    if let Some(serve) = &workload.serve {
        traffic.push(match &serve.health_path {
            Some(path) => format!(
                "port {}: the pod is ready once GET {path} answers 2xx or 3xx (its readiness probe); until then it gets no traffic",
                serve.port
            ),
            None => format!(
                "port {}: the pod is ready once the port accepts a connection (its readiness probe); until then it gets no traffic",
                serve.port
            ),
        });
        traffic.push(format!(
            "NetworkPolicy {} in namespace {}: ingress from the ingress controller's namespace {} (--kubernetes-ingress-namespace), on port {} only",
            placed.name,
            placed.namespace,
            cluster.settings().ingress_namespace,
            serve.port
        ));
    }
    let project_line = match workload.network {
        Network::Public => format!(
            "NetworkPolicy {project_policy} in namespace {}: ingress only from the project's pods; egress to them, to the cluster's DNS and to public addresses only{allowed}",
            placed.namespace
        ),
        Network::None => format!(
            "NetworkPolicy {project_policy} in namespace {} leaves this pod out (network: none); NetworkPolicy {} lets it reach nothing, the cluster's DNS included",
            placed.namespace, placed.name
        ),
    };
    let mut lines = vec![
        format!(
            "resources (requests and limits): {} MiB of memory ({}), {}m CPU ({})",
            r.memory_mb,
            whose(workload.memory_mb.is_some()),
            r.cpu_millis,
            whose(workload.cpu_millis.is_some()),
        ),
        format!("processes: the node's limit (the kubelet's podPidsLimit); Kubernetes has no per-pod one, so {pids}"),
        project_line,
    ];
    lines.extend(traffic);
    lines
}

/// What the deployment's log says of the objects the settings made: the
/// Secret (by the secrets' names only), the claim, the region.
fn settings_lines(
    cluster: &berth_kubernetes::Kubernetes,
    workload: &Workload<'_>,
    applied: &Applied,
) -> Vec<String> {
    let s = &workload.settings;
    let mut lines = Vec::new();
    if let Some(secret) = &applied.secret {
        let names = |v: &[(String, secrecy::SecretString)]| -> Vec<String> {
            v.iter().map(|(n, _)| n.clone()).collect()
        };
        let mut given = Vec::new();
        if !s.secret_env.is_empty() {
            given.push(format!(
                "{} as variables (secretKeyRef)",
                names(&s.secret_env).join(", ")
            ));
        }
        if !s.secret_files.is_empty() {
            given.push(format!(
                "{} as files under {} (read-only, mode 0400)",
                names(&s.secret_files).join(", "),
                berth_kubernetes::SECRETS_PATH
            ));
        }
        lines.push(format!(
            "Secret {secret} (Opaque, owned by the Deployment) holds the service's secrets: {}",
            given.join("; ")
        ));
    }
    if let (Some(claim), Some(volume)) = (&applied.claim, &s.volume) {
        let class = match &cluster.settings().storage_class {
            Some(c) => format!("storage class {c}"),
            None => "the cluster's default storage class".to_owned(),
        };
        let mib = |b: u128| b >> 20;
        let what = match &claim.change {
            ClaimChange::Created => format!(
                "created with {} MiB ({class}, ReadWriteOnce)",
                volume.size_mb
            ),
            ClaimChange::Kept { bytes: Some(b) } if *b > u128::from(volume.size_mb) << 20 => format!(
                "kept with its data at {} MiB (a claim is never shrunk to {} MiB)",
                mib(*b),
                volume.size_mb
            ),
            ClaimChange::Kept { .. } => "kept with its data".to_owned(),
            ClaimChange::Grown { from } => format!(
                "kept with its data, its request raised from {} MiB to {} MiB (the storage class must allow expansion)",
                mib(*from),
                volume.size_mb
            ),
        };
        lines.push(format!(
            "volume: PersistentVolumeClaim {} {what}, mounted at {}; the pod goes to the node of the service's running pod (one node attaches it at a time)",
            claim.name, volume.path
        ));
    }
    if let Some(region) = &s.region {
        lines.push(format!(
            "region {region}: only nodes labelled {}={region} run the pod (nodeSelector)",
            berth_kubernetes::REGION_LABEL
        ));
    }
    lines
}

/// What the deployment's log says of what `publish` did.
fn routing_lines(cluster: &berth_kubernetes::Kubernetes, routing: &Routing) -> Vec<String> {
    match routing {
        Routing::Routed {
            name,
            hosts,
            left_out,
        } => {
            let class = match &cluster.settings().ingress_class {
                Some(c) => format!("class {c}"),
                None => "the cluster's default class".to_owned(),
            };
            let mut lines: Vec<String> = left_out
                .iter()
                .map(|h| format!("warning: {h} is not a host name an Ingress can have (a DNS name of labels that start and end with a letter or digit): not routed"))
                .collect();
            lines.push(if hosts.is_empty() {
                format!("Service {name} selects the service's ready pods; no host name to route, so no Ingress")
            } else {
                format!(
                    "serving {} through Ingress {name} ({class}) and Service {name} (port 80 to the ready pods)",
                    hosts.join(", ")
                )
            });
            lines
        }
        Routing::Unrouted { deleted } if deleted.is_empty() => {
            vec!["no port (a worker): no Service or Ingress".to_owned()]
        }
        Routing::Unrouted { deleted } => vec![format!(
            "no port (a worker): no Service or Ingress; the earlier deploy's {} deleted",
            deleted.join(" and ")
        )],
    }
}

fn failure(cause: berth_kubernetes::Cause, message: String) -> Failure {
    use berth_kubernetes::Cause;
    match cause {
        Cause::AuthFailed => Failure::registry(Code::AuthFailed, message),
        Cause::ManifestNotFound => Failure::registry(Code::ManifestNotFound, message),
        Cause::NetworkError => Failure::registry(Code::NetworkError, message),
        Cause::RuntimeError => Failure::runtime(message),
    }
}

/// What the registry walk settled before the cluster is asked: where the image
/// is, the digest it resolved to, the credentials to pull it with and the user
/// its config names.
pub(super) struct Resolved<'a> {
    pub target: &'a Target,
    pub digest: &'a Digest,
    pub creds: Option<Credentials>,
    pub user: String,
    /// The image config's single exposed TCP port.
    pub exposed_port: Option<u16>,
}

/// The settings as the Kubernetes runtime takes them: the runc runtime's
/// (checked, secrets opened) and the service's region.
fn cluster_settings(s: RunSettings, region: Option<String>) -> berth_kubernetes::RunSettings {
    let volume = s.volume.as_ref().map(|v| berth_kubernetes::Volume {
        // Checked by `settings::of`: normalized here, as runc mounts it.
        path: v.container_path().unwrap_or_else(|_| v.path.clone()),
        size_mb: v.size_mb,
    });
    berth_kubernetes::RunSettings {
        env: s.env,
        secret_env: s.secret_env,
        secret_files: s.secret_files,
        command: s.command,
        args: s.args,
        volume,
        region,
    }
}

pub(super) async fn run(
    w: &Worker,
    d: &Deployment,
    service: &Service,
    image: Resolved<'_>,
    settings: RunSettings,
    log: &Path,
) -> Result<(), Failure> {
    let Resolved {
        target,
        digest: resolved,
        creds,
        user: image_user,
        exposed_port,
    } = image;
    let Some(cluster) = &w.deployer.cluster else {
        return Err(Failure::runtime("no Kubernetes cluster is configured"));
    };
    let project = live_project(w, d, service).await?;
    let image = format!(
        "{}/{}@{resolved}",
        target.registry.image_domain(),
        target.repository
    );
    if service.restart_policy != RestartPolicy::Always {
        log::append(
            log,
            "the cluster restarts a Deployment's pod whenever it exits (Kubernetes has no other policy for Deployments)",
        );
    }
    let workload = Workload {
        deployment: d.id.as_str(),
        project: &project,
        service: &service.name,
        image: image.clone(),
        pull: creds.map(|c| PullCredentials {
            registry: target.registry.docker_config_key(),
            username: c.username,
            password: c.password,
        }),
        run_as_non_root: berth_kubernetes::non_root_user(&image_user),
        memory_mb: service.resources.memory_mb,
        cpu_millis: service
            .resources
            .cpu_millis
            .and_then(|c| u64::try_from(c).ok()),
        // As on runc: the service's port, else the image's single exposed one.
        serve: service.traffic.port.or(exposed_port).map(|port| Serve {
            port,
            health_path: service.traffic.health_path.clone(),
            hosts: w.deployer.serving.host_names(service, &project),
        }),
        network: match service.traffic.network {
            NetworkMode::Public => Network::Public,
            NetworkMode::None => Network::None,
        },
        settings: cluster_settings(settings, service.settings.region.clone()),
    };
    let placed = place(w, d, service, cluster, &workload, log)
        .await
        .map_err(|f| f.at(resolved))?;
    follow_rollout(w, d, cluster, &placed, log)
        .await
        .map_err(|f| f.at(resolved))?;
    // Available: routed to now (a failed deploy never changes what serves).
    match cluster.publish(&workload, &placed).await {
        Ok(routing) => {
            for line in routing_lines(cluster, &routing) {
                log::append(log, &line);
            }
            Ok(())
        }
        Err(e) => {
            w.deployer.stop_on_cluster(&d.id).await;
            Err(Failure::runtime(format!("routing to the deployment: {e}")).at(resolved))
        }
    }
}

/// The name of the project of a service still live (terminated while its
/// image was resolved: nothing is placed).
async fn live_project(w: &Worker, d: &Deployment, service: &Service) -> Result<String, Failure> {
    if let Ok(Some(svc)) = w.store.service_by_id(&d.service_id).await {
        if svc.status == ServiceStatus::Terminated {
            return Err(Failure::runtime(
                "the service was terminated during the deploy",
            ));
        }
    }
    w.store
        .project_name(&service.project_id)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))?
        .ok_or_else(|| Failure::runtime("the project is gone"))
}

/// Records the placement (a crash from here on leaves something the next
/// reconcile finds and deletes), says what is made and how it is isolated, and
/// applies it.
async fn place(
    w: &Worker,
    d: &Deployment,
    service: &Service,
    cluster: &berth_kubernetes::Kubernetes,
    workload: &Workload<'_>,
    log: &Path,
) -> Result<berth_kubernetes::Placed, Failure> {
    let placed = cluster.placed(workload.project, d.id.as_str());
    w.deployer
        .record_placed(&d.id, &placed)
        .map_err(|e| Failure::runtime(format!("recording the placement: {e}")))?;
    log::append(
        log,
        &format!(
            "creating Deployment {} in namespace {} with image {}{}",
            placed.name,
            placed.namespace,
            workload.image,
            if workload.pull.is_some() {
                " and the pull Secret it owns"
            } else {
                ""
            }
        ),
    );
    for line in isolation_lines(cluster, workload, service, &placed) {
        log::append(log, &line);
    }
    let applied = match cluster.apply(workload).await {
        Ok(a) => a,
        Err(e @ KubeError::NotBerths { .. }) => {
            w.deployer.forget_placed(&d.id);
            return Err(Failure::runtime(e.to_string()));
        }
        Err(e) => {
            w.deployer.stop_on_cluster(&d.id).await;
            return Err(Failure::runtime(e.to_string()));
        }
    };
    for line in settings_lines(cluster, workload, &applied) {
        log::append(log, &line);
    }
    log::append(
        log,
        match applied.user_namespace {
            UserNamespace::Own => "the pod has a user namespace of its own (hostUsers: false): root in it is not root on the node",
            UserNamespace::Dropped => "warning: the API server dropped hostUsers: false (Kubernetes before 1.33, or its UserNamespacesSupport feature off): the pod shares the node's user namespace, and root in it is root on the node",
            UserNamespace::NotAsked => "user namespaces are off (--kubernetes-user-namespaces=false): root in the pod is root on the node",
        },
    );
    Ok(placed)
}

/// Follows the rollout into the log until the pod is available or it failed (the
/// objects then deleted).
async fn follow_rollout(
    w: &Worker,
    d: &Deployment,
    cluster: &berth_kubernetes::Kubernetes,
    placed: &berth_kubernetes::Placed,
    log: &Path,
) -> Result<(), Failure> {
    // Read again whenever the Deployment or its pods change (watched), and at
    // least every few seconds (a watch may end or miss).
    let mut changes = cluster.changes(placed).await.ok();
    let mut said: HashSet<String> = HashSet::new();
    let mut waiting = String::new();
    let mut errors: HashMap<String, u32> = HashMap::new();
    loop {
        let rollout = match cluster.rollout(placed).await {
            Ok(r) => r,
            Err(e) => {
                // The API server may blink; the deploy's deadline bounds this.
                let n = errors.entry(e.to_string()).or_default();
                *n += 1;
                if *n == 1 {
                    log::append(log, &format!("reading the rollout: {e}; trying again"));
                }
                tokio::time::sleep(FALLBACK.min(Duration::from_secs(1))).await;
                continue;
            }
        };
        for (key, line) in rollout.event_lines() {
            if said.insert(key) {
                log::append(log, &line);
            }
        }
        match rollout.verdict() {
            Verdict::Available => {
                log::append(log, "the pod is available; the rollout is complete");
                return Ok(());
            }
            Verdict::Failed { code, message } => {
                log::append(log, &message);
                w.deployer.stop_on_cluster(&d.id).await;
                return Err(failure(code, message));
            }
            Verdict::Waiting(what) => {
                if what != waiting {
                    log::append(log, &what);
                    waiting = what;
                }
            }
        }
        let ended = match &mut changes {
            Some(stream) => {
                tokio::select! {
                    next = futures_util::StreamExt::next(stream) => next.is_none(),
                    _ = tokio::time::sleep(FALLBACK) => false,
                }
            }
            None => {
                tokio::time::sleep(FALLBACK).await;
                true
            }
        };
        if ended {
            changes = cluster.changes(placed).await.ok();
        }
    }
}
