//! The deploy worker: takes `PENDING_DEPLOY` deployments from the durable queue,
//! decrypts the credentials (only for the pull), resolves the tag to a digest, pulls
//! by that digest through the shared cache, runs it with runc, and writes every step
//! to the deployment's infrastructure log, followed by the container's output.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_registry::{manifest, preflight, Code, Credentials, TokenReuse};
use berth_runtime::cache::BlobCache;
use berth_runtime::durable::{Durability, Found};
use berth_runtime::pull::{self, PullError};
use berth_runtime::rootfs::{self, ImageStore, Layout};
use berth_runtime::runc::{Runc, Runtime};
use berth_store::{Deployment, Outcome};
use berth_types::{Digest, ImageRef, RegistryUrl};

use crate::state::AppState;

/// Grace between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// A worker proves it still runs its `DEPLOYING` deployment this often...
const HEARTBEAT: Duration = Duration::from_secs(5);
/// ...and a deployment whose worker has been silent this long is repaired (marked
/// `FAILED`) by whichever replica looks next: at its start, and every `STALE`.
const STALE: Duration = Duration::from_secs(30);
/// An idle worker reconciles this replica's containers with the database this often.
const RECONCILE: Duration = Duration::from_secs(2);

/// The cutoff for [`berth_store::Store::repair_deployments`]: now minus [`STALE`].
pub fn stale_before() -> String {
    (chrono::Utc::now() - STALE).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

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
    /// install.
    runtime: Option<Box<dyn Runtime>>,
    /// Pulls in flight on this replica, for progress bars.
    pulls: Mutex<HashMap<String, Arc<pull::Progress>>>,
    /// Set when a service was terminated: the worker collects garbage next.
    gc_wanted: AtomicBool,
    /// Containers being stopped (a terminate and the reconciler may meet).
    stopping: Mutex<HashSet<String>>,
    /// Deployments whose container was found not running, already said in their log.
    not_running: Mutex<HashSet<String>>,
    /// Deployments whose container this process adopted (it watched them run).
    adopted: Mutex<HashSet<String>>,
}

impl Deployer {
    pub fn new(data_dir: &Path) -> std::io::Result<Self> {
        let root = data_dir.join("deployments");
        std::fs::create_dir_all(&root)?;
        let cache = BlobCache::open(data_dir.join("blobs"))?;
        let images = ImageStore::open(data_dir.join("images"))?;
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
        let runtime: Option<Box<dyn Runtime>> = match Runc::find(data_dir.join("runc")) {
            Ok(r) => Some(Box::new(r)),
            Err(_) => None,
        };
        if runtime.is_none() {
            tracing::warn!("runc not found: deployments will fail until it is installed (apt-get install runc)");
        }
        Ok(Deployer {
            root,
            cache,
            images,
            durability,
            replica_url: Default::default(),
            runtime,
            pulls: Mutex::new(HashMap::new()),
            gc_wanted: AtomicBool::new(false),
            stopping: Mutex::new(HashSet::new()),
            not_running: Mutex::new(HashSet::new()),
            adopted: Mutex::new(HashSet::new()),
        })
    }

    pub fn log_path(&self, id: &str) -> PathBuf {
        self.root.join(id).join("log")
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.root.join(id).join("bundle")
    }

    /// Makes what deploys wrote durable (see `berth_runtime::durable`).
    pub fn settle_disk(&self) -> std::io::Result<()> {
        self.durability.settle()
    }

    /// Asks the worker to collect garbage when it is idle.
    pub fn want_gc(&self) {
        self.gc_wanted.store(true, Ordering::SeqCst);
    }

    /// Removes unpacked images no live deployment runs, and the blobs only they
    /// used. Only the worker calls it, between deploys (no pull is in flight) and
    /// after a reconcile (no container of a deployment that is not live is left).
    async fn collect_garbage(&self, store: &dyn berth_store::Store) {
        self.gc_wanted.store(false, Ordering::SeqCst);
        let live: HashSet<String> = match store.live_deployments().await {
            Ok(l) => l.into_iter().map(|d| d.digest).collect(),
            Err(e) => {
                tracing::error!(error = %e, "garbage collection: reading live images");
                return;
            }
        };
        let (images, cache) = (self.images.clone(), self.cache.clone());
        let r = tokio::task::spawn_blocking(move || {
            let (removed_images, keep) = images.gc(&live)?;
            let removed_blobs = cache.gc(&keep)?;
            Ok::<_, std::io::Error>((removed_images, removed_blobs))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match r {
            Ok((0, 0)) => {}
            Ok((images, blobs)) => tracing::info!(images, blobs, "garbage collected"),
            Err(e) => tracing::error!(error = %e, "garbage collection"),
        }
    }

    /// Where the pull of deployment `id` is, if this replica is pulling it.
    pub fn progress(&self, id: &str) -> Option<Vec<pull::BlobProgress>> {
        locked(&self.pulls).get(id).map(|p| p.snapshot())
    }

    /// Is the container of deployment `id` still running?
    pub fn is_running(&self, id: &str) -> bool {
        self.runtime
            .as_ref()
            .is_some_and(|r| r.is_running(&container_id(id)))
    }

    /// Makes this replica's containers match the database. A container whose
    /// deployment should not run any more (replaced by a newer deploy, its service
    /// terminated, perhaps through another replica, or left by a crash before its
    /// deploy was recorded) is stopped and its bundle removed; a live one that an
    /// earlier server process started is adopted; one that stopped by itself is
    /// said in its log, once. Only the worker calls it, between deploys.
    async fn reconcile(&self, store: &dyn berth_store::Store) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        // In this order: a container listed here existed before the in-flight
        // snapshot, so a deploy not in flight then had recorded its end (the worker
        // drops its `pulls` entry only after that) before `live` is read.
        let containers = match runtime.list().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "listing containers");
                return;
            }
        };
        let in_flight: HashSet<String> = locked(&self.pulls)
            .keys()
            .map(|id| container_id(id))
            .collect();
        let live: HashMap<String, berth_store::LiveDeployment> =
            match store.live_deployments().await {
                Ok(l) => l.into_iter().map(|d| (container_id(&d.id), d)).collect(),
                Err(e) => {
                    tracing::error!(error = %e, "reading live deployments");
                    return;
                }
            };
        let mut stops = Vec::new();
        for cid in &containers {
            let Some(id) = cid.strip_prefix(CONTAINER_PREFIX) else {
                continue;
            };
            if !in_flight.contains(cid) && !live.contains_key(cid) {
                stops.push(self.stop(id));
            }
        }
        // The live deployments this replica ran (their log is in its data dir).
        for (cid, live) in &live {
            let id = live.id.as_str();
            let log = self.log_path(id);
            if in_flight.contains(cid)
                || runtime.is_running(cid)
                || !log.exists()
                || locked(&self.not_running).contains(id)
            {
                continue;
            }
            let exited = runtime.exited(cid);
            let watched = exited.is_some() || locked(&self.adopted).contains(id);
            if containers.contains(cid) {
                match runtime.adopt(cid).await {
                    Ok(true) => {
                        locked(&self.adopted).insert(id.to_owned());
                        log_line(
                            &log,
                            "the server restarted; the container still runs and was taken up again",
                        );
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(container = %cid, error = %e, "adopting a container");
                        continue;
                    }
                }
            }
            locked(&self.not_running).insert(id.to_owned());
            match exited {
                Some(status) => log_line(&log, &format!("the container exited ({status})")),
                None if watched => log_line(&log, "the container exited"),
                // It ran under an earlier server process and stopped while no
                // server watched (a machine restart, most often): the service comes
                // back with a new deployment, which replaces this one once it runs.
                None => match restart(store, live).await {
                    Ok(new) => log_line(
                        &log,
                        &format!("the container stopped while the server was down; deployment {new} restarts the service"),
                    ),
                    Err(e) => {
                        log_line(&log, "the container stopped while the server was down");
                        tracing::error!(deployment = id, error = %e, "restarting a service");
                    }
                },
            }
        }
        let stopped = stops.len();
        futures_util::future::join_all(stops).await;
        if stopped > 0 {
            tracing::info!(
                stopped,
                "containers of deployments that no longer run were stopped"
            );
        }
    }

    /// Stops the container of deployment `id` (if any) and removes its bundle.
    pub async fn stop(&self, id: &str) {
        if !locked(&self.stopping).insert(id.to_owned()) {
            return;
        }
        if let Some(runtime) = &self.runtime {
            if let Err(e) = runtime.stop(&container_id(id), STOP_GRACE).await {
                tracing::warn!(deployment = id, error = %e, "stopping the container");
            }
        }
        rootfs::remove(&self.bundle(id));
        log_line(
            &self.log_path(id),
            "stopped; the container and its root filesystem were removed",
        );
        locked(&self.stopping).remove(id);
    }
}

/// Queues a new deployment of `live`'s service, by berth itself (audited as such).
async fn restart(
    store: &dyn berth_store::Store,
    live: &berth_store::LiveDeployment,
) -> Result<String, berth_store::StoreError> {
    let service = store
        .service_by_id(&live.service_id)
        .await?
        .ok_or(berth_store::StoreError::NotFound)?;
    let project = store.project_name(&service.project_id).await?;
    let d = store
        .create_deployment(
            &service,
            berth_store::NewAudit {
                actor: "berth".into(),
                action: "deployment.create",
                project,
                service: Some(service.name.clone()),
                metadata: serde_json::json!({
                    "reason": "restart: the container stopped while the server was down",
                    "replaces": live.id,
                }),
            },
        )
        .await?;
    Ok(d.id)
}

const CONTAINER_PREFIX: &str = "berth-";

/// The deployer's bookkeeping behind its mutexes; a panic elsewhere does not make
/// it unusable (each is a set or map whose every state is valid).
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn container_id(deployment: &str) -> String {
    format!("{CONTAINER_PREFIX}{deployment}")
}

/// Appends one timestamped line to an infrastructure log.
fn log_line(path: &Path, line: &str) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let _ = writeln!(f, "[{at}] {line}");
    }
}

/// Runs forever: claims deployments and runs them one at a time.
pub async fn worker(state: AppState) {
    let mut last_repair = Instant::now();
    let mut last_reconcile = Instant::now();
    state.deployer.reconcile(state.store.as_ref()).await;
    loop {
        let replica_url = state.deployer.replica_url.get().map_or("", String::as_str);
        match state.store.claim_deployment(replica_url).await {
            Ok(Some(d)) => {
                let log = state.deployer.log_path(&d.id);
                let heartbeat = async {
                    loop {
                        tokio::time::sleep(HEARTBEAT).await;
                        if let Err(e) = state.store.heartbeat(&d).await {
                            tracing::warn!(deployment = %d.id, error = %e, "heartbeat");
                        }
                    }
                };
                let writing = state.deployer.durability.begin();
                let result = match writing {
                    Ok(_writing) => tokio::select! {
                        r = run(&state, &d, &log) => r,
                        _ = heartbeat => unreachable!("the heartbeat loop does not end"),
                    },
                    Err(e) => Err(runtime_failure(format!("the data dir: {e}"))),
                };
                let outcome = match result {
                    Ok(digest) => {
                        log_line(&log, "DEPLOYED");
                        Outcome::Deployed {
                            digest: digest.to_string(),
                        }
                    }
                    Err(f) => {
                        log_line(&log, &format!("FAILED ({}): {}", f.code, f.message));
                        Outcome::Failed {
                            digest: f.digest.map(|d| d.to_string()),
                            code: f.code,
                            message: f.message,
                        }
                    }
                };
                let finished = state.store.finish_deployment(&d, outcome).await;
                // Kept until here so that a watcher polling the deployment sees the
                // blobs' final state even when the pull took less than a poll.
                locked(&state.deployer.pulls).remove(&d.id);
                if let Err(e) = finished {
                    tracing::error!(deployment = %d.id, error = %e, "recording the deployment's end");
                }
                // The deployment it replaced stops now, before its image may go.
                state.deployer.reconcile(state.store.as_ref()).await;
                last_reconcile = Instant::now();
                state.deployer.collect_garbage(state.store.as_ref()).await;
                // What the deploy wrote reaches the disk in the background.
                let deployer = state.deployer.clone();
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = deployer.settle_disk() {
                        tracing::error!(error = %e, "syncing the blob cache");
                    }
                });
            }
            Ok(None) => {
                let gc = state.deployer.gc_wanted.load(Ordering::SeqCst);
                if gc || last_reconcile.elapsed() >= RECONCILE {
                    last_reconcile = Instant::now();
                    state.deployer.reconcile(state.store.as_ref()).await;
                }
                if gc {
                    state.deployer.collect_garbage(state.store.as_ref()).await;
                }
                // Deploys of a replica that died are repaired by the ones alive.
                if last_repair.elapsed() >= STALE {
                    last_repair = Instant::now();
                    match state.store.repair_deployments(&stale_before()).await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(
                            repaired = n,
                            "deployments whose server stopped were marked FAILED"
                        ),
                        Err(e) => tracing::error!(error = %e, "repairing deployments"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            Err(e) => {
                tracing::error!(error = %e, "claiming a deployment");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

struct Failure {
    code: String,
    message: String,
    digest: Option<Digest>,
}

fn failure(code: Code, message: impl Into<String>) -> Failure {
    Failure {
        code: code.as_str().into(),
        message: message.into(),
        digest: None,
    }
}

fn runtime_failure(message: impl Into<String>) -> Failure {
    Failure {
        code: "runtime_error".into(),
        message: message.into(),
        digest: None,
    }
}

#[tracing::instrument(skip_all, fields(deployment = %d.id))]
async fn run(state: &AppState, d: &Deployment, log: &Path) -> Result<Digest, Failure> {
    let started = Instant::now();
    log_line(log, &format!("deployment {} of {}", d.id, d.image));
    let service = state
        .store
        .service_by_id(&d.service_id)
        .await
        .map_err(|e| runtime_failure(e.to_string()))?
        .ok_or_else(|| runtime_failure("the service is gone"))?;
    let image: ImageRef = d
        .image
        .parse()
        .map_err(|e: berth_types::ReferenceError| failure(Code::InvalidUrl, e.to_string()))?;

    // Credentials are decrypted here, for this pull only.
    let (target, creds) = match &service.credential {
        Some(c) => {
            let url: RegistryUrl =
                c.registry_url
                    .parse()
                    .map_err(|e: berth_types::RegistryUrlError| {
                        failure(Code::InvalidUrl, e.to_string())
                    })?;
            let password = state
                .secrets
                .get(&service.project_id, &service.id, c)
                .await
                .map_err(|e| runtime_failure(e.to_string()))?;
            log_line(
                log,
                &format!(
                    "credentials for {} (user {})",
                    c.registry_url,
                    crate::api::mask_username(&c.username)
                ),
            );
            let target = state
                .registry
                .target(&url, &image)
                .map_err(|e| failure(e.code(), e.to_string()))?;
            (target, Some(Credentials::new(c.username.clone(), password)))
        }
        None => {
            log_line(log, "no registry credentials: pulling anonymously");
            (
                state
                    .registry
                    .target_of(&image)
                    .map_err(|e| failure(e.code(), e.to_string()))?,
                None,
            )
        }
    };
    let has_creds = creds.is_some();
    let explain = |e: &berth_registry::RegistryError| {
        failure(e.code(), preflight::explain(e, &target, has_creds))
    };
    let mut session = state.registry.session(&target, creds, TokenReuse::Cached);

    let t = Instant::now();
    let pinged = session.ping().await.map_err(|e| explain(&e))?;
    log_line(
        log,
        &format!(
            "ping {}: HTTP {} ({} ms)",
            target.base,
            pinged.status,
            t.elapsed().as_millis()
        ),
    );
    let t = Instant::now();
    if let Some(a) = session
        .authenticate(&pinged.challenges)
        .await
        .map_err(|e| explain(&e))?
    {
        log_line(
            log,
            &format!("token: {} ({} ms)", a.detail, t.elapsed().as_millis()),
        );
    }
    let t = Instant::now();
    let resolved = manifest::resolve(&mut session, &image.manifest_reference())
        .await
        .map_err(|e| explain(&e))?;
    log_line(
        log,
        &format!(
            "manifest: {} resolves to {} ({} ms)",
            image,
            resolved.digest,
            t.elapsed().as_millis()
        ),
    );

    let bundle = state.deployer.bundle(&d.id);
    let progress = Arc::new(pull::Progress::default());
    locked(&state.deployer.pulls).insert(d.id.clone(), progress.clone());
    let pulled = pull::pull(
        &mut session,
        &resolved.digest,
        &state.deployer.cache,
        &state.deployer.images,
        &progress,
    )
    .await;
    let pulled = pulled.map_err(|e| {
        let mut f = match &e {
            PullError::Registry(r) => explain(r),
            PullError::NoPlatform { .. } => failure(Code::ManifestNotFound, e.to_string()),
            PullError::Cache(_) | PullError::DiffId { .. } => {
                failure(Code::NetworkError, e.to_string())
            }
            PullError::Unpack(_) | PullError::Invalid(_) => runtime_failure(e.to_string()),
        };
        f.digest = Some(resolved.digest.clone());
        f
    })?;
    for b in &pulled.blobs {
        match b.took {
            Some(took) => log_line(
                log,
                &format!(
                    "blob {}: {} bytes in {} ms ({:.1} MB/s)",
                    b.digest,
                    b.size,
                    took.as_millis(),
                    b.size as f64 / 1e6 / took.as_secs_f64().max(1e-6)
                ),
            ),
            None => log_line(log, &format!("blob {}: {} bytes, cached", b.digest, b.size)),
        }
    }
    if pulled.reused {
        log_line(log, &format!("image {} already unpacked", pulled.manifest));
    } else {
        log_line(
            log,
            &format!("unpacked in {} ms", pulled.unpack_took.as_millis()),
        );
    }
    let t = Instant::now();
    let layout = rootfs::prepare(&pulled.rootfs, &bundle).map_err(|e| {
        rootfs::remove(&bundle);
        runtime_failure(format!("preparing the root filesystem: {e}"))
    })?;
    let how = match layout {
        Layout::Overlay => "overlay on the shared image",
        Layout::Copy => "private copy",
    };
    log_line(
        log,
        &format!(
            "root filesystem ready ({how}, {} ms)",
            t.elapsed().as_millis()
        ),
    );

    let Some(runtime) = &state.deployer.runtime else {
        return Err(runtime_failure("no container runtime: runc was not found on PATH; install it (Debian: apt-get install runc)"));
    };
    // Terminated while pulling: do not start it.
    if let Ok(Some(svc)) = state.store.service_by_id(&d.service_id).await {
        if svc.status == berth_store::STATUS_TERMINATED {
            rootfs::remove(&bundle);
            return Err(runtime_failure(
                "the service was terminated during the deploy",
            ));
        }
    }
    let cid = container_id(&d.id);
    runtime
        .start(&cid, &bundle, &pulled.config, log)
        .await
        .map_err(|e| runtime_failure(e.to_string()))?;
    // A container that fails at once (bad command, bad spec) is a failed deploy.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(status) = runtime.exited(&cid) {
        if !status.success() {
            return Err(Failure {
                digest: Some(pulled.manifest.clone()),
                ..runtime_failure(format!(
                    "the container exited at once with {status}; see the log"
                ))
            });
        }
    }
    log_line(
        log,
        &format!(
            "started in {} ms total; container output follows",
            started.elapsed().as_millis()
        ),
    );
    Ok(resolved.digest)
}
