//! Lazy starts on this replica (see `berth_runtime::lazy`): whether a deploy
//! starts lazily (and, in its log, why not), the mounts kept for as long as the
//! deployment runs, the background pull that makes its layers local, and a
//! marker in the deployment's directory. FUSE mounts live in this process: a
//! container left running by an earlier server process lost them (its reads
//! fail), so the reconcile replaces it rather than adopting it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use berth_registry::manifest::PlatformManifest;
use berth_registry::open::Unobserved;
use berth_registry::{Credentials, Opened, Target, TokenReuse};
use berth_runtime::estargz::mount;
use berth_runtime::estargz::BlobPool;
use berth_runtime::lazy::{self, LazyError, LazyImage, LazyLayer, LazyPlan};
use berth_runtime::proofs::Access;
use berth_runtime::pull::{self, Progress, Pulled};
use berth_store::{Deployment, DeploymentId, ProjectId};

use super::{locked, log, Deployer, Worker};

/// The file in a deployment's directory that says its layers are FUSE mounts of
/// this process.
pub(super) const MARKER: &str = "lazy";

/// Where, in a deployment's directory, its layers are mounted (one directory each).
const LAYERS: &str = "lazy-layers";

/// The background pull leaves the container's first reads this long to
/// themselves (from its start)...
const HOLD: Duration = Duration::from_secs(1);
/// ...then waits for its reads to pause this long...
const QUIET: Duration = Duration::from_millis(500);
/// ...but never longer than this after the start.
const HOLD_MAX: Duration = Duration::from_secs(10);

/// Failed reads said in a deployment's log; a container that keeps reading a
/// bad chunk does not fill it.
const FAILURES_LOGGED: u32 = 20;

/// The lazy images of this replica's deployments.
#[derive(Default)]
pub(super) struct Lazies {
    running: std::sync::Mutex<HashMap<DeploymentId, Running>>,
    /// Background pulls in flight, by deployment: their progress, read live by
    /// the waterfall after the deploy ended.
    background: std::sync::Mutex<HashMap<DeploymentId, Arc<Progress>>>,
}

struct Running {
    image: Arc<LazyImage>,
    project: ProjectId,
    background: BackgroundPull,
}

/// A lazy image's background pull: waiting for its container's start, then
/// running.
enum BackgroundPull {
    Pending(Box<Background>),
    /// Being started, or stopped for good (its project's access changed).
    Started,
    Running(tokio::task::AbortHandle),
}

impl BackgroundPull {
    fn stop(self) {
        if let BackgroundPull::Running(h) = self {
            h.abort();
        }
    }
}

impl Lazies {
    /// The background pull of deployment `id`, while it runs.
    pub(super) fn background(&self, id: &DeploymentId) -> Option<Arc<Progress>> {
        locked(&self.background).get(id).cloned()
    }

    /// Whether any background pull runs (the garbage collector waits for them).
    pub(super) fn pulling(&self) -> bool {
        !locked(&self.background).is_empty()
    }
}

/// The layers to mount lazily, or `Err` with why the image is pulled in full
/// (`None`: nothing worth a log line).
pub(super) fn layers(
    w: &Worker,
    platform: &PlatformManifest,
) -> Result<Vec<LazyLayer>, Option<String>> {
    let m = &platform.manifest;
    let annotated = m
        .layers()
        .iter()
        .filter(|l| {
            l.annotations()
                .as_ref()
                .is_some_and(|a| a.contains_key(berth_runtime::estargz::TOC_DIGEST_ANNOTATION))
        })
        .count();
    if annotated == 0 || w.deployer.images.ready(&platform.digest).is_some() {
        return Err(None);
    }
    if !w.limits.lazy_pull {
        return Err(Some(
            "eStargz image: lazy pulling is off (--lazy-pull off), pulling in full".into(),
        ));
    }
    let Some(layers) = lazy::estargz_layers(m) else {
        return Err(Some(format!(
            "{annotated} of {} layers are eStargz: pulling in full",
            m.layers().len()
        )));
    };
    if let Err(e) = mount::available(Path::new(w.limits.fuse_device)) {
        return Err(Some(format!(
            "eStargz image, but FUSE cannot be mounted ({e}): pulling in full"
        )));
    }
    Ok(layers)
}

/// What a lazy start needs from the deploy.
pub(super) struct Start<'a> {
    pub d: &'a Deployment,
    pub project: &'a ProjectId,
    pub target: &'a Target,
    pub creds: Option<Credentials>,
    pub progress: Arc<Progress>,
    pub log: &'a Path,
}

/// Mounts the image's layers lazily (kept until the deployment stops), readies
/// their background pull (begun once the container started), and answers the
/// image as a pull would.
pub(super) async fn start(
    w: &Worker,
    opened: &mut Opened<'_>,
    platform: &PlatformManifest,
    layers: Vec<LazyLayer>,
    s: Start<'_>,
) -> Result<Pulled, LazyError> {
    let t = Instant::now();
    let deployer = &w.deployer;
    let dir = deployer.root.join(s.d.id.as_str());
    let count = layers.len();
    // Written first: a crash during the mount leaves a deployment that is not adopted.
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(MARKER), b""))
        .map_err(|e| LazyError::Layer {
            layer: layers[0].digest.clone(),
            source: berth_runtime::estargz::EstargzError::Mount(format!(
                "marking the deployment's directory: {e}"
            )),
        })?;
    let plan = LazyPlan {
        layers,
        terms: pull::Terms {
            stall: w.limits.stall,
            caps: w.limits.caps,
        },
        access: Access {
            proofs: &deployer.proofs,
            project: s.project.as_str(),
        },
        cache: &deployer.cache,
        pool: BlobPool::spawn(w.registry.clone(), s.target.clone(), s.creds.clone()),
        under: dir.join(LAYERS),
        ids: deployer.images.ids(),
        progress: s.progress.clone(),
        failed: failed_reads(s.log.to_owned()),
    };
    let image = match lazy::start(opened, platform, plan).await {
        Ok(image) => Arc::new(image),
        Err(e) => {
            let _ = std::fs::remove_file(dir.join(MARKER));
            return Err(e);
        }
    };
    let prefetched: u64 = s
        .progress
        .snapshot()
        .iter()
        .filter_map(|b| b.lazy.as_ref())
        .map(|l| l.prefetch_bytes)
        .sum();
    log::append(
        s.log,
        &format!(
            "lazy: {count} eStargz layers mounted in {} ms (TOCs verified, {prefetched} bytes prefetched); the rest is pulled in the background",
            t.elapsed().as_millis()
        ),
    );
    let pulled = Pulled {
        manifest: platform.digest.clone(),
        config: image.config.clone(),
        blobs: Vec::new(),
        unpack_took: Duration::ZERO,
        layers: image.dirs(),
        reused: false,
    };
    let background = Background {
        deployer: deployer.clone(),
        registry: w.registry.clone(),
        id: s.d.id.clone(),
        project: s.project.clone(),
        target: pinned(s.target, &opened.resolved.digest),
        creds: s.creds,
        platform: platform.clone(),
        terms: pull::Terms {
            stall: w.limits.stall,
            caps: w.limits.caps,
        },
        progress: s.progress,
        image: Arc::downgrade(&image),
    };
    locked(&deployer.lazies.running).insert(
        s.d.id.clone(),
        Running {
            image,
            project: s.project.clone(),
            background: BackgroundPull::Pending(Box::new(background)),
        },
    );
    Ok(pulled)
}

impl Deployer {
    /// Deployment `id`'s container started: the background pull of its lazy
    /// image (if it has one) begins, after the start's reads (see [`HOLD`]).
    pub(super) fn started_lazily(&self, id: &DeploymentId) {
        let mut running = locked(&self.lazies.running);
        let Some(r) = running.get_mut(id) else {
            return;
        };
        if let BackgroundPull::Pending(_) = r.background {
            let BackgroundPull::Pending(background) =
                std::mem::replace(&mut r.background, BackgroundPull::Started)
            else {
                unreachable!("matched just above")
            };
            locked(&self.lazies.background).insert(id.clone(), background.progress.clone());
            r.background = BackgroundPull::Running(tokio::spawn(background.run()).abort_handle());
        }
    }
}

/// `target` at digest `d`: the background pull fetches what the deploy resolved
/// and records it under the deployment's own digest (which the garbage
/// collector keeps), wherever the tag points by then.
fn pinned(target: &Target, d: &berth_types::Digest) -> Target {
    let domain = target
        .image
        .domain()
        .map(|x| format!("{x}/"))
        .unwrap_or_default();
    match format!("{domain}{}@{d}", target.image.path()).parse() {
        Ok(image) => Target {
            image,
            ..target.clone()
        },
        Err(_) => target.clone(),
    }
}

/// Says in the deployment's log why a container's read failed (it got EIO),
/// the first [`FAILURES_LOGGED`] times.
fn failed_reads(
    log: std::path::PathBuf,
) -> Arc<dyn Fn(&berth_runtime::estargz::EstargzError) + Send + Sync> {
    let said = AtomicU32::new(0);
    Arc::new(move |e| match said.fetch_add(1, Ordering::Relaxed) {
        n if n < FAILURES_LOGGED => log::append(&log, &format!("lazy read failed: {e}")),
        n if n == FAILURES_LOGGED => log::append(
            &log,
            "lazy read failed again; further failed reads are not logged",
        ),
        _ => {}
    })
}

/// The full pull that makes a lazy image local.
struct Background {
    deployer: Arc<Deployer>,
    registry: Arc<berth_registry::Registry>,
    id: DeploymentId,
    project: ProjectId,
    target: Target,
    creds: Option<Credentials>,
    platform: PlatformManifest,
    terms: pull::Terms,
    progress: Arc<Progress>,
    image: Weak<LazyImage>,
}

impl Background {
    async fn run(self) {
        self.hold().await;
        let log = self.deployer.log_path(&self.id);
        let t = Instant::now();
        match self.pull().await {
            Ok(pulled) => {
                crate::metrics::metrics().pulled(pulled.fetched_bytes());
                if let Some(image) = self.image.upgrade() {
                    image.go_local(&pulled.layers);
                    // The last hold on the mounts may be this one: their drop blocks.
                    tokio::task::spawn_blocking(move || drop(image));
                    lazy::mark_local(&self.progress);
                    log::append(
                        &log,
                        &format!(
                            "background pull: {} bytes in {} ms, verified and unpacked; the layers now read from the local image",
                            pulled.fetched_bytes(),
                            t.elapsed().as_millis()
                        ),
                    );
                }
            }
            Err(e) => log::append(
                &log,
                &format!(
                    "background pull failed: {e}; reads keep fetching chunks from the registry"
                ),
            ),
        }
        locked(&self.deployer.lazies.background).remove(&self.id);
        self.deployer.keep_pull(&self.id, &self.progress);
        let deployer = self.deployer.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = deployer.settle_disk() {
                tracing::error!(error = %e, "syncing the blob cache");
            }
        });
    }

    /// Leaves the network to the container's start: [`HOLD`], then until its
    /// reads pause for [`QUIET`], at most [`HOLD_MAX`].
    async fn hold(&self) {
        let began = Instant::now();
        tokio::time::sleep(HOLD).await;
        while began.elapsed() < HOLD_MAX {
            let last = self.image.upgrade().and_then(|i| i.last_fetch());
            if last.is_none_or(|at| at.elapsed() >= QUIET) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn pull(&self) -> Result<Pulled, String> {
        let d = &self.deployer;
        let _writing = d
            .durability
            .begin()
            .map_err(|e| format!("the data dir: {e}"))?;
        let mut opened = berth_registry::open(
            &self.registry,
            &self.target,
            self.creds.clone(),
            TokenReuse::Cached,
            &mut Unobserved,
        )
        .await
        .map_err(|e| e.to_string())?;
        let access = Access {
            proofs: &d.proofs,
            project: self.project.as_str(),
        };
        pull::pull(
            &mut opened,
            &self.platform,
            self.terms,
            access,
            &d.cache,
            &d.images,
            &self.progress,
        )
        .await
        .map_err(|e| e.to_string())
    }
}

impl Deployer {
    /// Unmounts deployment `id`'s lazy layers (after its root filesystem went),
    /// its background pull stopped; mounts an earlier server process left (dead
    /// since it ended) are detached too.
    pub(super) async fn retire_lazy(&self, id: &DeploymentId) {
        let running = locked(&self.lazies.running).remove(id);
        locked(&self.lazies.background).remove(id);
        let dir = self.root.join(id.as_str());
        let stale = self.was_lazy(id).then(|| dir.join(LAYERS));
        // Unmounting joins each mount's FUSE thread: off the async threads.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(r) = running {
                r.background.stop();
                r.image.close();
                drop(r.image);
            }
            if let Some(layers) = stale {
                for entry in std::fs::read_dir(&layers).into_iter().flatten().flatten() {
                    let _ =
                        rustix::mount::unmount(entry.path(), rustix::mount::UnmountFlags::DETACH);
                    let _ = std::fs::remove_dir(entry.path());
                }
                let _ = std::fs::remove_dir(&layers);
            }
        })
        .await;
        let _ = std::fs::remove_file(dir.join(MARKER));
    }

    /// Project `project`'s registry access changed (its credentials replaced or
    /// removed): its proofs of access go, and so do the background pulls its
    /// lazy images run with the credentials of before (their mounts keep
    /// reading through the sessions they opened, until their deployment stops).
    pub fn forget_project(&self, project: &ProjectId) {
        self.proofs.forget_project(project.as_str());
        let mut running = locked(&self.lazies.running);
        for (id, r) in running.iter_mut().filter(|(_, r)| &r.project == project) {
            let background = std::mem::replace(&mut r.background, BackgroundPull::Started);
            background.stop();
            locked(&self.lazies.background).remove(id);
        }
    }

    /// Every lazy image of this process let go (the server stops).
    pub async fn retire_all_lazy(&self) {
        let ids: Vec<DeploymentId> = locked(&self.lazies.running).keys().cloned().collect();
        for id in ids {
            let running = locked(&self.lazies.running).remove(&id);
            locked(&self.lazies.background).remove(&id);
            if let Some(r) = running {
                r.background.stop();
                r.image.close();
                let _ = tokio::task::spawn_blocking(move || drop(r.image)).await;
            }
        }
    }

    /// Whether deployment `id`'s layers were mounted lazily by a server process
    /// (this one's are in memory; an earlier one's left the marker).
    pub(super) fn was_lazy(&self, id: &DeploymentId) -> bool {
        self.root.join(id.as_str()).join(MARKER).exists()
    }
}
