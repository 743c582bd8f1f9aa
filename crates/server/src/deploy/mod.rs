//! Deployments, in rooms of their own:
//! - [`worker`]: claims `PENDING_DEPLOY` deployments from the durable queue,
//!   heartbeats them, records how they ended;
//! - [`run`]: one deploy as small steps: credentials, open the registry (ping,
//!   authenticate, resolve), pull, root filesystem, start;
//! - [`reconcile`]: this replica's containers against the database (a pure
//!   decision function and what carries it out);
//! - [`gc`]: unpacked images and blobs no live deployment needs;
//! - [`lazy`]: eStargz images started before they are pulled (FUSE mounts kept
//!   while their deployment runs, the background pull that makes them local);
//! - [`log`]: the infrastructure log (append, read, follow, forward);
//! - [`failure`]: a failed deploy's stable code and message;
//! - [`kubernetes`]: the same deploy on a Kubernetes cluster (resolve, then a
//!   Deployment pinned by digest with the pull Secret it owns), its stops and
//!   its reconcile.
//!
//! The worker takes the store, the vault and the registry it needs, never the HTTP
//! edge's state.

mod failure;
mod gc;
pub mod ingress;
mod kubernetes;
mod lazy;
pub mod log;
mod reconcile;
mod run;
mod settings;
mod worker;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_runtime::cache::BlobCache;
use berth_runtime::durable::{Durability, Found};
use berth_runtime::log::Logs;
use berth_runtime::network::{DnsForwarder, Egress, EgressPolicy};
use berth_runtime::proofs::Proofs;
use berth_runtime::pull;
use berth_runtime::rootfs::{self, ImageStore};
use berth_runtime::runc::{Runc, Runtime};
use berth_runtime::sandbox::Sandbox;
use berth_store::{Deployment, DeploymentId, LiveDeployment, NewAudit, Store, StoreError};

use crate::config::DeployLimits;

pub use worker::{stale_before, REGION_SEEN};

/// What the worker and each deploy need, and nothing of the HTTP edge. Defined
/// here, beside the `Deployer`, so that one deploy (`run`, `kubernetes`) takes it
/// without importing the loop that runs deploys (`worker`, its `impl`).
#[derive(Clone)]
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub vault: Arc<dyn crate::vault::Vault>,
    pub registry: Arc<berth_registry::Registry>,
    pub deployer: Arc<Deployer>,
    pub limits: DeployLimits,
    /// The region this replica serves (`--region`).
    pub region: Option<String>,
}

/// Grace between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

const CONTAINER_PREFIX: &str = "berth-";

/// What runs deployments on this replica: the data dir's blob cache and unpacked
/// images, the container runtime, and the bookkeeping of what is in flight.
/// The file, in a deployment's directory, that keeps how its pull went.
const PULL_RECORD: &str = "pull.json";

pub struct Deployer {
    root: PathBuf,
    cache: BlobCache,
    images: ImageStore,
    /// Blobs and images are synced in bulk, between deploys.
    durability: Durability,
    /// How the other replicas reach this one (set once listening); recorded on the
    /// deployments this one claims.
    pub replica_url: std::sync::OnceLock<String>,
    /// `None` when no runtime binary was found: deploys then fail saying what to
    /// install (or when deployments run on a cluster).
    runtime: Option<Box<dyn Runtime>>,
    /// The Kubernetes cluster deployments run on (`--runtime kubernetes`).
    cluster: Option<berth_kubernetes::Kubernetes>,
    /// The deployments whose objects this replica placed on the cluster and has
    /// not deleted (their placements are files next to their logs, read once
    /// at start; kept here so that a reconcile does not scan the directory).
    on_cluster: Mutex<HashSet<DeploymentId>>,
    /// Proofs of access to cached content, per project (see `berth_runtime::proofs`).
    pub proofs: Proofs,
    /// Deployments this replica's worker runs now.
    in_flight: Mutex<HashMap<DeploymentId, Deployment>>,
    /// Pulls in flight on this replica, for progress bars.
    pulls: Mutex<HashMap<DeploymentId, Arc<pull::Progress>>>,
    /// Deployments started lazily: their mounts and background pulls.
    lazies: lazy::Lazies,
    /// Set when a service was terminated: the worker collects garbage next.
    gc_wanted: AtomicBool,
    /// How a terminate here stops a deploy in flight at once (other replicas'
    /// terminates are seen by polling the service).
    cancels: Mutex<HashMap<DeploymentId, Arc<tokio::sync::Notify>>>,
    /// Containers being stopped (a terminate and the reconciler may meet).
    stopping: Mutex<HashSet<DeploymentId>>,
    /// Deployments whose container was found not running, already said in their log.
    not_running: Mutex<HashSet<DeploymentId>>,
    /// Deployments whose container this process adopted (it watched them run).
    adopted: Mutex<HashSet<DeploymentId>>,
    /// Deploy limits: the output kept and the restart backoff among them.
    limits: DeployLimits,
    /// Each crash-looping container's restarts in a row, and when it last started.
    crashes: Mutex<HashMap<DeploymentId, reconcile::Crashes>>,
    /// Containers waiting out their backoff before the restart policy starts them.
    restarting: Mutex<HashSet<DeploymentId>>,
    /// Wakes this replica's worker when a deployment is queued here, before its
    /// next poll of the queue.
    queued: tokio::sync::Notify,
    /// The relay of `public` containers' DNS queries, running as long as this.
    _dns: Option<DnsForwarder>,
    /// What the ingress routes each app's names to.
    pub serving: ingress::Serving,
}

impl Deployer {
    pub fn new(
        data_dir: &Path,
        sandbox: Sandbox,
        limits: DeployLimits,
        cluster: Option<berth_kubernetes::Kubernetes>,
        egress: Option<(EgressPolicy, DnsForwarder)>,
        apps_domain: &str,
    ) -> std::io::Result<Self> {
        let root = data_dir.join("deployments");
        std::fs::create_dir_all(&root)?;
        let cache = BlobCache::open(data_dir.join("blobs"))?;
        let images = ImageStore::open_shifted(data_dir.join("images"), sandbox.ids)?;
        // Tenants' content is the server's alone; the deployments' bundles must be
        // passable (not listable) by the containers' unprivileged root.
        use std::os::unix::fs::PermissionsExt;
        for (dir, mode) in [("blobs", 0o700), ("images", 0o700), ("deployments", 0o711)] {
            std::fs::set_permissions(data_dir.join(dir), std::fs::Permissions::from_mode(mode))?;
        }
        let (durability, found) = Durability::open(data_dir)?;
        if found == Found::MaybeLost {
            tracing::warn!("the machine stopped while blobs were not yet synced: verifying the blob cache, dropping unpacked images");
            let blobs = cache.verify_all()?;
            let (images, _) = images.gc(&HashSet::new())?;
            durability.mark_verified()?;
            tracing::warn!(
                removed_blobs = blobs,
                removed_images = images,
                "blob cache verified"
            );
        }
        let (policy, dns) = match egress {
            Some((policy, dns)) => (Some(policy), Some(dns)),
            None => (None, None),
        };
        let runtime: Option<Box<dyn Runtime>> = match Runc::find(data_dir.join("runc"), sandbox) {
            Ok(r) if cluster.is_none() => Some(Box::new(match (policy, &dns) {
                (Some(policy), Some(dns)) => r.with_egress(Egress {
                    policy,
                    dns_port: dns.port(),
                }),
                _ => r,
            })),
            _ => None,
        };
        if runtime.is_none() && cluster.is_none() {
            tracing::warn!("runc not found: deployments will fail until it is installed (apt-get install runc)");
        }
        let on_cluster = if cluster.is_some() {
            kubernetes::placed_on_disk(&root)
        } else {
            HashSet::new()
        };
        Ok(Deployer {
            root,
            cache,
            images,
            durability,
            replica_url: Default::default(),
            runtime,
            on_cluster: Mutex::new(on_cluster),
            cluster,
            proofs: Proofs::default(),
            in_flight: Mutex::new(HashMap::new()),
            pulls: Mutex::new(HashMap::new()),
            lazies: Default::default(),
            gc_wanted: AtomicBool::new(false),
            stopping: Mutex::new(HashSet::new()),
            cancels: Mutex::default(),
            not_running: Mutex::new(HashSet::new()),
            adopted: Mutex::new(HashSet::new()),
            limits,
            crashes: Mutex::new(HashMap::new()),
            restarting: Mutex::new(HashSet::new()),
            queued: tokio::sync::Notify::new(),
            _dns: dns,
            serving: ingress::Serving::new(apps_domain),
        })
    }

    /// A deployment was just queued on this replica: its worker claims it now
    /// rather than at its next poll (other replicas' workers find it when they
    /// poll).
    pub fn queued(&self) {
        self.queued.notify_one();
    }

    /// Where deployments keep their files (logs, bundles).
    pub fn deployments_dir(&self) -> &Path {
        &self.root
    }

    /// Where the logs of deployment `id` are: its infrastructure log and its
    /// container's output.
    pub fn logs(&self, id: &DeploymentId) -> Logs {
        Logs::in_dir(&self.root.join(id.as_str()), self.limits.logs)
    }

    /// The infrastructure log of deployment `id`.
    pub fn log_path(&self, id: &DeploymentId) -> PathBuf {
        self.logs(id).infra
    }

    /// The pull of deployment `id` as it ended (each blob's times, for the
    /// waterfall), if this replica pulled it; a lazy image's background pull as
    /// it goes.
    pub fn pull_record(&self, id: &DeploymentId) -> Option<Vec<pull::BlobProgress>> {
        if let Some(progress) = self.lazies.background(id) {
            return Some(progress.snapshot());
        }
        let bytes = std::fs::read(self.root.join(id.as_str()).join(PULL_RECORD)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps the final state of deployment `id`'s pull next to its log, then forgets
    /// the live one.
    fn end_pull(&self, id: &DeploymentId) {
        if let Some(progress) = locked(&self.pulls).remove(id) {
            self.keep_pull(id, &progress);
        }
    }

    /// Writes `progress` next to deployment `id`'s log.
    fn keep_pull(&self, id: &DeploymentId, progress: &pull::Progress) {
        let blobs = progress.snapshot();
        if blobs.is_empty() {
            return;
        }
        if let Ok(json) = serde_json::to_vec(&blobs) {
            let _ = std::fs::write(self.root.join(id.as_str()).join(PULL_RECORD), json);
        }
    }

    fn bundle(&self, id: &DeploymentId) -> PathBuf {
        self.root.join(id.as_str()).join("bundle")
    }

    /// Makes what deploys wrote durable (see `berth_runtime::durable`).
    pub fn settle_disk(&self) -> std::io::Result<()> {
        self.durability.settle()
    }

    /// Asks the worker to collect garbage when it is idle.
    pub fn want_gc(&self) {
        self.gc_wanted.store(true, Ordering::SeqCst);
    }

    /// Where the pull of deployment `id` is, if this replica is pulling it.
    pub fn progress(&self, id: &DeploymentId) -> Option<Vec<pull::BlobProgress>> {
        locked(&self.pulls).get(id).map(|p| p.snapshot())
    }

    /// Is the container of deployment `id` still running, or about to run again (a
    /// restart waits out its backoff)?
    pub fn is_running(&self, id: &DeploymentId) -> bool {
        if self.cluster.is_some() {
            return locked(&self.on_cluster).contains(id);
        }
        locked(&self.restarting).contains(id)
            || self
                .runtime
                .as_ref()
                .is_some_and(|r| r.is_running(&container_id(id)))
    }

    /// Stops the container of deployment `id` (if any) and removes its bundle.
    /// The signal that stops deployment `id`'s deploy in flight here.
    fn cancel_signal(&self, id: &DeploymentId) -> Arc<tokio::sync::Notify> {
        locked(&self.cancels).entry(id.clone()).or_default().clone()
    }

    fn forget_cancel(&self, id: &DeploymentId) {
        locked(&self.cancels).remove(id);
    }

    /// Stops the deploys in flight here of a service just terminated (recorded
    /// `REMOVED` already): their pulls end now, not at their deadline.
    pub fn cancel_deploys_of(&self, service: &berth_store::ServiceId) {
        let ids: Vec<DeploymentId> = locked(&self.in_flight)
            .values()
            .filter(|d| &d.service_id == service)
            .map(|d| d.id.clone())
            .collect();
        for id in ids {
            // `notify_one` keeps the permit when the deploy is not waiting yet.
            self.cancel_signal(&id).notify_one();
        }
    }

    /// Deletes a terminated service's volume on this machine (its data is gone).
    /// On Kubernetes, its claim goes with the Deployment that owns it.
    pub async fn remove_volume(&self, service: &berth_store::ServiceId) {
        if let Some(runtime) = &self.runtime {
            if let Err(e) = runtime.remove_volume(service.as_str()).await {
                tracing::warn!(service = %service, error = %e, "removing the service's volume");
            }
        }
    }

    pub async fn stop(&self, id: &DeploymentId) {
        if !locked(&self.stopping).insert(id.clone()) {
            return;
        }
        if self.cluster.is_some() {
            self.stop_on_cluster(id).await;
            locked(&self.stopping).remove(id);
            return;
        }
        // Out of the ingress first; what it is answering finishes.
        self.serving.retire(id, ingress::DRAIN_GRACE).await;
        if let Some(runtime) = &self.runtime {
            if let Err(e) = runtime.stop(&container_id(id), STOP_GRACE).await {
                tracing::warn!(deployment = %id, error = %e, "stopping the container");
            }
        }
        rootfs::remove(&self.bundle(id));
        self.retire_lazy(id).await;
        log::append(
            &self.log_path(id),
            "stopped; the container and its root filesystem were removed",
        );
        locked(&self.stopping).remove(id);
    }
}

/// Queues a new deployment of `live`'s service, by berth itself (audited as such).
async fn restart(
    store: &dyn Store,
    service: &berth_store::Service,
    live: &LiveDeployment,
    reason: &str,
) -> Result<DeploymentId, StoreError> {
    let project = store.project_name(&service.project_id).await?;
    let d = store
        .restart_deployment(
            service,
            &live.id,
            NewAudit {
                actor: "berth".into(),
                action: "deployment.create",
                project,
                service: Some(service.name.clone()),
                metadata: serde_json::json!({
                    "reason": reason,
                    "replaces": live.id.as_str(),
                }),
            },
        )
        .await?;
    Ok(d.id)
}

/// The deployer's bookkeeping behind its mutexes; a panic elsewhere does not make
/// it unusable (each is a set or map whose every state is valid).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn container_id(deployment: &DeploymentId) -> String {
    format!("{CONTAINER_PREFIX}{deployment}")
}
