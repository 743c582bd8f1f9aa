//! Lazy pulling: an image whose every layer is eStargz (its descriptor annotates
//! the TOC's digest) starts before its layers are downloaded. Each layer's TOC is
//! fetched by `Range` and checked against the annotation (pinned by the manifest's
//! digest), its prioritized files (`.prefetch.landmark`) fetched in one request,
//! and the layer mounted through FUSE as an overlay lower directory; the
//! container's reads fetch the chunks they need, each verified before a byte is
//! returned. The ordinary pull then runs in the background and, once every blob
//! is in and verified, the mounts read from the unpacked layers and let the
//! registry session go.
//!
//! Nothing here reads the shared cache's layers: every byte a lazy mount serves
//! was fetched with the deploying project's own session, so one tenant's lazily
//! fetched layer never reaches another (the config alone goes through the cache,
//! under the proofs of access as in every pull).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use berth_registry::manifest::PlatformManifest;
use berth_registry::Opened;
use berth_types::Digest;
use futures_util::future::try_join_all;
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::cache::BlobCache;
use crate::estargz::mount::Mounted;
use crate::estargz::reader::{Reader, Watch};
use crate::estargz::{
    BlobPool, EstargzError, Layer, RangeSource, FETCH_DEADLINE, TOC_DIGEST_ANNOTATION,
};
use crate::proofs::Access;
use crate::pull::{self, BlobState, Progress, PullError, Terms};
use crate::unpack::{Compression, IdShift};

/// A layer that can be mounted lazily: its blob and its TOC's digest.
#[derive(Clone, Debug)]
pub struct LazyLayer {
    pub digest: Digest,
    pub size: u64,
    pub toc: Digest,
}

/// The image's layers, if every one is a gzip layer annotated with its TOC's
/// digest (an image with any other layer is pulled in full).
pub fn estargz_layers(m: &ImageManifest) -> Option<Vec<LazyLayer>> {
    if m.layers().is_empty() {
        return None;
    }
    m.layers()
        .iter()
        .map(|l| {
            let gzip =
                Compression::from_media_type(l.media_type().as_ref()).ok()? == Compression::Gzip;
            let toc = l.annotations().as_ref()?.get(TOC_DIGEST_ANNOTATION)?;
            gzip.then_some(LazyLayer {
                digest: l.digest().to_string().parse().ok()?,
                size: l.size(),
                toc: toc.parse().ok()?,
            })
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error("layer {layer}: {source}")]
    Layer { layer: Digest, source: EstargzError },
}

/// An image started lazily: its layers' readers and their mounts (lowest first).
pub struct LazyImage {
    pub config: ImageConfiguration,
    readers: Vec<Arc<Reader>>,
    mounts: Vec<Mounted>,
}

impl LazyImage {
    /// The mounts, as the overlay's lower directories (lowest first).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.mounts.iter().map(|m| m.dir().to_owned()).collect()
    }

    /// When any layer last fetched a chunk for a read.
    pub fn last_fetch(&self) -> Option<Instant> {
        self.readers.iter().filter_map(|r| r.last_fetch()).max()
    }

    /// Lets every layer's registry session go: the image is being retired, and a
    /// mount whose session thread lingers must not keep the credentials.
    pub fn close(&self) {
        for reader in &self.readers {
            reader.close();
        }
    }

    /// Every layer reads from its unpacked directory from now on (`dirs`, the
    /// background pull's, lowest first); the registry sessions are let go.
    pub fn go_local(&self, dirs: &[PathBuf]) {
        for (reader, dir) in self.readers.iter().zip(dirs) {
            reader.go_local(dir.clone());
        }
    }
}

/// Tells the waterfall what a layer's reads fetched, and whoever asked why a
/// read failed.
struct ProgressWatch {
    progress: Arc<Progress>,
    index: usize,
    failed: Arc<dyn Fn(&EstargzError) + Send + Sync>,
}

impl Watch for ProgressWatch {
    fn on_demand(&self, bytes: u64, chunks: u64) {
        self.progress.lazy(self.index, |l| {
            l.on_demand_bytes += bytes;
            l.on_demand_chunks += chunks;
        });
    }

    fn prefetched(&self, bytes: u64) {
        self.progress
            .lazy(self.index, |l| l.prefetch_bytes += bytes);
    }

    fn failed(&self, e: &EstargzError) {
        (self.failed)(e)
    }
}

/// What a lazy start works with besides the registry.
pub struct LazyPlan<'a> {
    pub layers: Vec<LazyLayer>,
    pub terms: Terms,
    pub access: Access<'a>,
    pub cache: &'a BlobCache,
    /// Range reads of the layers, on a session of their own that lives as long
    /// as the mounts need it.
    pub pool: BlobPool,
    /// Where the mounts go (a directory each, made here).
    pub under: PathBuf,
    pub ids: IdShift,
    pub progress: Arc<Progress>,
    /// Called when a container's read fails (it gets EIO), with why.
    pub failed: Arc<dyn Fn(&EstargzError) + Send + Sync>,
}

/// Fetches the config (through the cache, as a pull does), opens every layer's
/// TOC and fetches its prefetch set, all layers at once, and mounts them.
pub async fn start(
    opened: &mut Opened<'_>,
    platform: &PlatformManifest,
    plan: LazyPlan<'_>,
) -> Result<LazyImage, LazyError> {
    let progress = &plan.progress;
    let config = pull::config(
        opened,
        platform,
        plan.terms,
        plan.access,
        plan.cache,
        progress,
    )
    .await?;
    let blobs = pull::blobs_of(&platform.manifest)?;
    progress.start(&blobs);
    progress.update(0, blobs[0].1, BlobState::Cached);
    let open = plan.layers.iter().enumerate().map(|(i, l)| {
        let source: Arc<dyn RangeSource> = Arc::new(plan.pool.blob(l.digest.clone(), l.size));
        let watch = Arc::new(ProgressWatch {
            progress: progress.clone(),
            index: i + 1,
            failed: plan.failed.clone(),
        });
        async move {
            let fail = |source| LazyError::Layer {
                layer: l.digest.clone(),
                source,
            };
            let layer = Layer::open_with(source, &l.toc, FETCH_DEADLINE)
                .await
                .map_err(fail)?;
            let reader = Arc::new(Reader::new(layer, watch));
            reader.prefetch().await.map_err(fail)?;
            Ok::<_, LazyError>(reader)
        }
    });
    let readers = try_join_all(open).await?;
    let mut mounts = Vec::with_capacity(readers.len());
    for (i, (reader, l)) in readers.iter().zip(&plan.layers).enumerate() {
        let dir = plan.under.join(i.to_string());
        let mounted = match Mounted::mount(reader.clone(), &dir, plan.ids) {
            Ok(m) => m,
            Err(source) => {
                // Unmounting joins each session's thread: off the async threads.
                let done = std::mem::take(&mut mounts);
                tokio::task::spawn_blocking(move || drop(done));
                return Err(LazyError::Layer {
                    layer: l.digest.clone(),
                    source,
                });
            }
        };
        mounts.push(mounted);
        let at = progress.now_ms();
        progress.lazy(i + 1, |p| p.mounted_ms = at);
    }
    Ok(LazyImage {
        config,
        readers,
        mounts,
    })
}

/// Marks every lazy layer of `progress` local now.
pub fn mark_local(progress: &Progress) {
    let at = progress.now_ms();
    for i in 0..progress.snapshot().len() {
        progress.lazy_if_any(i, |l| l.local_ms = Some(at));
    }
}
