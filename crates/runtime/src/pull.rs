//! Pulling an image by digest, given its host platform's manifest. The config is
//! downloaded into the blob cache first; then every layer at once (a few
//! downloads in parallel), each streamed through a bounded pipe straight into its
//! own unpacker, hashed as it arrives, unpacked into a directory of its own and
//! put in place only once its digest matched. A layer unpacked before from the
//! same blob is not downloaded again when the project's registry is a place the
//! blob came from and proves the project may have it (a HEAD); otherwise the blob
//! is downloaded and hashed, and only then is the directory reused (see
//! `proofs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry::manifest::PlatformManifest;
use berth_registry::{blob, Opened, RegistryError, Session};
use berth_types::Digest;
use futures_util::stream::{self, StreamExt};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::cache::{BlobCache, CacheError, Feed, Pipe, PipeWriter};
use crate::proofs::{Access, Reuse};
use crate::rootfs::ImageStore;
use crate::unpack::{self, Compression, UnpackError};

/// How long a blob download may go without a byte before it fails.
pub const DEFAULT_STALL: Duration = Duration::from_secs(30);

/// The terms a pull runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Terms {
    /// A blob download with no byte for this long fails.
    pub stall: Duration,
    pub caps: Caps,
}

impl Default for Terms {
    fn default() -> Self {
        Terms {
            stall: DEFAULT_STALL,
            caps: Caps::default(),
        }
    }
}

/// How large an image may be: what the reference implementations cap (the
/// manifest at 4 MiB in the registry client, the config here), and budgets for
/// what layers expand to, so that a bomb is refused while it expands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// The config blob, as the manifest declares it (read whole into memory).
    pub config_bytes: u64,
    /// One layer: its blob as declared, and its uncompressed tar stream.
    pub layer_bytes: u64,
    /// All layers' uncompressed bytes together.
    pub image_bytes: u64,
    /// Entries of one layer.
    pub entries: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            config_bytes: 8 << 20,
            layer_bytes: 8 << 30,
            image_bytes: 16 << 30,
            entries: 500_000,
        }
    }
}

/// Layers downloaded at once.
const PARALLEL_DOWNLOADS: usize = 8;
/// The longest wait between two tries to reach a registry that stopped answering
/// mid-blob (the tries go on until the stall timeout).
const MAX_RESUME_DELAY: Duration = Duration::from_secs(2);

/// Where a blob download was when no byte came for the stall timeout.
#[derive(Debug, thiserror::Error)]
#[error("blob {digest} stalled: no byte for {} s after {received} of {size} bytes from {registry}{}", .stall.as_secs(), .cause.as_ref().map(|c| format!(" (the registry stopped answering: {c})")).unwrap_or_default())]
pub struct Stall {
    pub digest: Digest,
    pub received: u64,
    pub size: u64,
    pub registry: String,
    pub stall: Duration,
    /// Why it stopped, when the registry went away rather than went quiet.
    pub cause: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Unpack(#[from] UnpackError),
    #[error("the image is not valid: {0}")]
    Invalid(String),
    /// The image is over a cap (see [`Caps`]).
    #[error("the image was refused: {0}")]
    Rejected(String),
    /// No byte of a blob arrived for the stall timeout: the registry trickles or hangs.
    #[error("{0}")]
    Stalled(Box<Stall>),
}

/// Where each blob of a pull is, for progress bars: shared with whoever watches.
#[derive(Debug, Default)]
pub struct Progress {
    blobs: std::sync::Mutex<Vec<BlobProgress>>,
    /// When the blobs' list was known: the time axis of the waterfall.
    began: std::sync::OnceLock<Instant>,
}

/// One blob of a pull: where it is, and when (milliseconds from the start of the
/// pull) its download began and ended and its unpack ended, for a waterfall.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobProgress {
    pub digest: String,
    pub size: u64,
    pub received: u64,
    pub state: BlobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloaded_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<u64>,
    /// A layer mounted lazily (eStargz): what its reads fetched, apart from the
    /// background pull the other fields then describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lazy: Option<LazyProgress>,
}

/// A lazily mounted layer's side of the waterfall: when its TOC was verified and
/// mounted, the prefetch before the start, the chunks fetched on demand by the
/// container's reads, and when the background pull made it an ordinary layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LazyProgress {
    pub mounted_ms: u64,
    pub prefetch_bytes: u64,
    pub on_demand_bytes: u64,
    pub on_demand_chunks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    Waiting,
    Downloading,
    Cached,
    Downloaded,
    /// Unpacked into the root filesystem (layers only).
    Applied,
}

impl Progress {
    pub fn snapshot(&self) -> Vec<BlobProgress> {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The blobs' list, each waiting; a lazily mounted layer keeps its `lazy`
    /// side (its background pull starts the list again).
    pub(crate) fn start(&self, blobs: &[(Digest, u64)]) {
        self.began.get_or_init(Instant::now);
        let mut list = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        let lazy: std::collections::HashMap<String, LazyProgress> = list
            .iter()
            .filter_map(|b| Some((b.digest.clone(), b.lazy.clone()?)))
            .collect();
        *list = blobs
            .iter()
            .map(|(d, size)| BlobProgress {
                digest: d.to_string(),
                size: *size,
                received: 0,
                state: BlobState::Waiting,
                started_ms: None,
                downloaded_ms: None,
                applied_ms: None,
                lazy: lazy.get(&d.to_string()).cloned(),
            })
            .collect();
    }

    /// Milliseconds since the pull began.
    pub fn now_ms(&self) -> u64 {
        self.began.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// Changes the lazy side of blob `index`, if it has one.
    pub fn lazy_if_any(&self, index: usize, change: impl FnOnce(&mut LazyProgress)) {
        if let Some(l) = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
            .and_then(|b| b.lazy.as_mut())
        {
            change(l);
        }
    }

    /// Changes the lazy side of blob `index` (made if it had none).
    pub fn lazy(&self, index: usize, change: impl FnOnce(&mut LazyProgress)) {
        if let Some(b) = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
        {
            change(b.lazy.get_or_insert_with(LazyProgress::default));
        }
    }

    pub(crate) fn update(&self, index: usize, received: u64, state: BlobState) {
        let at = self.began.get().map(|b| b.elapsed().as_millis() as u64);
        if let Some(b) = self
            .blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(index)
        {
            match state {
                BlobState::Downloading => {
                    b.started_ms = b.started_ms.or(at);
                }
                BlobState::Downloaded => {
                    b.started_ms = b.started_ms.or(at);
                    b.downloaded_ms = b.downloaded_ms.or(at);
                }
                BlobState::Applied => b.applied_ms = b.applied_ms.or(at),
                BlobState::Waiting | BlobState::Cached => {}
            }
            b.received = received;
            // An applied layer stays applied (its blob's commit may finish after).
            if b.state != BlobState::Applied {
                b.state = state;
            }
        }
    }
}

/// What a layer's download did, for the infrastructure log.
#[derive(Clone, Debug)]
pub struct Fetched {
    pub digest: Digest,
    pub size: u64,
    /// `None` when the cache already had it.
    pub took: Option<Duration>,
}

#[derive(Debug)]
pub struct Pulled {
    /// The platform manifest actually pulled.
    pub manifest: Digest,
    pub config: ImageConfiguration,
    pub blobs: Vec<Fetched>,
    pub unpack_took: Duration,
    /// The image's unpacked layers, lowest first (shared: never write into them).
    pub layers: Vec<std::path::PathBuf>,
    /// Whether the unpacked image was already there.
    pub reused: bool,
}

impl Pulled {
    pub fn fetched_bytes(&self) -> u64 {
        self.blobs
            .iter()
            .filter(|b| b.took.is_some())
            .map(|b| b.size)
            .sum()
    }
}

fn invalid(e: impl std::fmt::Display) -> PullError {
    PullError::Invalid(e.to_string())
}

/// The blobs a manifest names, typed once: its config first, then its layers,
/// lowest first, each with its declared size.
pub(crate) fn blobs_of(m: &ImageManifest) -> Result<Vec<(Digest, u64)>, PullError> {
    std::iter::once(m.config())
        .chain(m.layers())
        .map(|d| Ok((d.digest().to_string().parse().map_err(invalid)?, d.size())))
        .collect()
}

/// Refuses a config declared over its cap, before a byte is downloaded.
pub(crate) fn check_config(m: &ImageManifest, caps: Caps) -> Result<(), PullError> {
    if m.config().size() > caps.config_bytes {
        return Err(PullError::Rejected(format!(
            "its config is declared {} bytes, over the {} byte cap",
            m.config().size(),
            caps.config_bytes
        )));
    }
    Ok(())
}

/// Refuses an image whose config or a layer is declared over its cap.
fn check_declared(m: &ImageManifest, caps: Caps) -> Result<(), PullError> {
    check_config(m, caps)?;
    match m
        .layers()
        .iter()
        .enumerate()
        .find(|(_, l)| l.size() > caps.layer_bytes)
    {
        Some((i, l)) => Err(PullError::Rejected(format!(
            "layer {i} ({}) is declared {} bytes, over the {} byte cap per layer",
            l.digest(),
            l.size(),
            caps.layer_bytes
        ))),
        None => Ok(()),
    }
}

/// The config blob `digest` read from the cache.
fn read_config(cache: &BlobCache, digest: &Digest) -> Result<ImageConfiguration, PullError> {
    let bytes = std::fs::read(cache.path(digest)).map_err(CacheError::from)?;
    serde_json::from_slice(&bytes).map_err(invalid)
}

/// Streams one blob into the cache unless it is there already; `feed` (if any)
/// passes the bytes on to a reader as they land.
/// Where a pull's blobs come from, and on what terms: the cache (used only with a
/// proof of `access`), the registry (a blob with no byte for the stall timeout
/// fails), within the caps.
#[derive(Clone, Copy)]
struct Source<'a> {
    cache: &'a BlobCache,
    access: Access<'a>,
    terms: Terms,
}

/// Where a download goes: into the cache (followed by a reader, if a feed is
/// given), through a pipe to its unpacker without being kept, or, for a layer
/// unpacked already, nowhere: its bytes are only hashed, to prove the registry
/// has them (see `proofs`).
enum Dest {
    Cache(Option<Arc<Feed>>),
    Pipe(Arc<Pipe>),
    Unpacked,
}

/// A download in progress, into its [`Dest`].
enum Writing {
    Cache(crate::cache::BlobWriter),
    Pipe(PipeWriter),
    Hash(Hashing),
}

/// A blob's bytes hashed and dropped.
struct Hashing {
    hasher: sha2::Sha256,
    expected: Digest,
    written: u64,
}

impl Writing {
    fn written(&self) -> u64 {
        match self {
            Writing::Cache(w) => w.written(),
            Writing::Pipe(w) => w.written(),
            Writing::Hash(h) => h.written,
        }
    }

    async fn write(&mut self, chunk: bytes::Bytes) -> Result<(), PullError> {
        match self {
            Writing::Cache(w) => w.write_chunk(&chunk).map_err(PullError::from),
            Writing::Pipe(w) => match w.write_chunk(chunk).await {
                true => Ok(()),
                false => Err(invalid(UNPACK_STOPPED)),
            },
            Writing::Hash(h) => {
                use sha2::Digest as _;
                h.hasher.update(&chunk);
                h.written += chunk.len() as u64;
                Ok(())
            }
        }
    }

    async fn commit(self) -> Result<(), PullError> {
        match self {
            // The digest check ends the feed at once; the file work off the async
            // threads.
            Writing::Cache(w) => tokio::task::spawn_blocking(move || w.commit().map(drop))
                .await
                .map_err(invalid)?
                .map_err(PullError::from),
            Writing::Pipe(w) => w.commit().map_err(PullError::from),
            Writing::Hash(h) => {
                use sha2::Digest as _;
                let actual = Digest::sha256_from_bytes(&h.hasher.finalize().into());
                if actual != h.expected {
                    return Err(CacheError::DigestMismatch {
                        expected: h.expected,
                        actual,
                    }
                    .into());
                }
                Ok(())
            }
        }
    }
}

/// A download stopped because its unpacker had (which says why).
const UNPACK_STOPPED: &str = "the layer's unpack stopped";

/// Streams one blob into `dest` unless it is here already (in the cache, or
/// unpacked for `Dest::Unpacked`) and the project's registry proves it at a place
/// the bytes came from (then fed to the reader from the cache); otherwise the blob
/// is downloaded and verified, and its registry becomes one of its origins.
async fn fetch(
    mut s: Session<'_>,
    src: Source<'_>,
    digest: Digest,
    size: u64,
    progress: (&Progress, usize),
    dest: Dest,
) -> Result<Fetched, PullError> {
    let (progress, index) = progress;
    let Source {
        cache,
        access,
        terms,
    } = src;
    let here = matches!(dest, Dest::Unpacked) || cache.contains(&digest);
    // Not a byte of the copy here is used before the registry proved that it
    // serves this blob to this project, at a place the bytes came from.
    if here && access.reuse(&mut s, cache, &digest).await? == Reuse::Proven {
        progress.update(index, size, BlobState::Cached);
        if let Dest::Cache(Some(f)) = dest {
            f.begin_cached(&cache.path(&digest))
                .map_err(CacheError::from)?;
        }
        return Ok(Fetched {
            digest,
            size,
            took: None,
        });
    }
    let started = Instant::now();
    progress.update(index, 0, BlobState::Downloading);
    let mut w = match dest {
        Dest::Cache(Some(f)) => Writing::Cache(cache.writer_feeding(&digest, f)?),
        Dest::Cache(None) => Writing::Cache(cache.writer(&digest)?),
        Dest::Pipe(p) => Writing::Pipe(p.writer(&digest)),
        Dest::Unpacked => {
            use sha2::Digest as _;
            Writing::Hash(Hashing {
                hasher: sha2::Sha256::new(),
                expected: digest.clone(),
                written: 0,
            })
        }
    };
    download(
        &mut s,
        &digest,
        size,
        terms.stall,
        (progress, index),
        &mut w,
    )
    .await?;
    let size = w.written();
    w.commit().await?;
    progress.update(index, size, BlobState::Downloaded);
    access
        .downloaded(&s, cache, &digest)
        .map_err(CacheError::from)?;
    Ok(Fetched {
        digest,
        size,
        took: Some(started.elapsed()),
    })
}

/// Streams blob `digest` into `w`. A connection that drops mid-blob is resumed
/// where it broke (`Range`), into the same writer, whose hash simply goes on; a
/// registry that went away is tried again (with a growing delay) until it comes
/// back or no byte came for the stall timeout.
async fn download(
    s: &mut Session<'_>,
    digest: &Digest,
    size: u64,
    stall: Duration,
    (progress, index): (&Progress, usize),
    w: &mut Writing,
) -> Result<(), PullError> {
    let stalled = |received: u64, cause: Option<String>, s: &Session<'_>| {
        PullError::Stalled(Box::new(Stall {
            digest: digest.clone(),
            received,
            size,
            registry: s.target().registry.to_string(),
            stall,
            cause,
        }))
    };
    let mut last_byte = Instant::now();
    let mut tries = 0u32;
    let mut cause: Option<String> = None;
    'download: loop {
        if tries > 0 {
            if last_byte.elapsed() >= stall {
                return Err(stalled(w.written(), cause, s));
            }
            let delay = Duration::from_millis(100 << tries.min(5)).min(MAX_RESUME_DELAY);
            tokio::time::sleep(delay.min(stall.saturating_sub(last_byte.elapsed()))).await;
        }
        tries += 1;
        let (mut resp, mut skip) = match blob::open_at(s, digest, w.written()).await {
            Ok(opened) => opened,
            Err(e @ (RegistryError::Network(_) | RegistryError::Timeout)) if w.written() > 0 => {
                tracing::debug!(%digest, at = w.written(), error = %e, "the registry does not answer; trying again");
                cause = Some(e.to_string());
                continue 'download;
            }
            Err(e) => return Err(e.into()),
        };
        loop {
            let Ok(next) = tokio::time::timeout(stall, resp.chunk()).await else {
                return Err(stalled(w.written(), None, s));
            };
            let chunk = match next {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(()),
                Err(e) => {
                    tracing::debug!(%digest, at = w.written(), error = %e, "resuming the download");
                    cause = Some(e.to_string());
                    continue 'download;
                }
            };
            last_byte = Instant::now();
            tries = 1;
            // A registry that ignored the range re-sends what we have: skip it.
            let drop_n = skip.min(chunk.len() as u64) as usize;
            skip -= drop_n as u64;
            if drop_n < chunk.len() {
                if w.written() + (chunk.len() - drop_n) as u64 > size {
                    return Err(invalid(format!(
                        "blob {digest} is larger than the {size} bytes its manifest says"
                    )));
                }
                w.write(chunk.slice(drop_n..)).await?;
                progress.update(index, w.written(), BlobState::Downloading);
            }
        }
    }
}

/// Only the image's config (its user, entrypoint...), into `cache` like any
/// blob: for a runtime that pulls the layers itself (a cluster's kubelet).
pub async fn config(
    opened: &mut Opened<'_>,
    platform: &PlatformManifest,
    terms: Terms,
    access: Access<'_>,
    cache: &BlobCache,
    progress: &Progress,
) -> Result<ImageConfiguration, PullError> {
    let m = &platform.manifest;
    check_config(m, terms.caps)?;
    let (digest, size) = blobs_of(m)?.swap_remove(0);
    progress.start(&[(digest.clone(), size)]);
    let src = Source {
        cache,
        access,
        terms,
    };
    let dest = Dest::Cache(None);
    let blob = fetch(
        opened.session.fork(),
        src,
        digest,
        size,
        (progress, 0),
        dest,
    )
    .await?;
    read_config(cache, &blob.digest)
}

/// Pulls the image `opened` resolved (its host platform's manifest `platform`)
/// into `cache` and unpacks it into `images`, unless it is there already. Cached
/// blobs, and an unpacked image, are used only once the registry proved, to this
/// session, that it serves each of them (`access`): a project never reuses
/// content it could not pull itself.
pub async fn pull(
    opened: &mut Opened<'_>,
    platform: &PlatformManifest,
    terms: Terms,
    access: Access<'_>,
    cache: &BlobCache,
    images: &ImageStore,
    progress: &Progress,
) -> Result<Pulled, PullError> {
    let requested = &opened.resolved.digest;
    let s = &mut opened.session;
    let (manifest, m) = (platform.digest.clone(), &platform.manifest);
    check_declared(m, terms.caps)?;
    let blobs = blobs_of(m)?;
    let src = Source {
        cache,
        access,
        terms,
    };
    if let Some(layers) = images.ready(&manifest) {
        let fetched = reuse_unpacked(s, src, &blobs, progress).await?;
        images
            .add_request(&manifest, requested)
            .map_err(CacheError::from)?;
        return Ok(Pulled {
            config: read_config(cache, &fetched[0].digest)?,
            manifest,
            blobs: fetched,
            unpack_took: Duration::ZERO,
            layers,
            reused: true,
        });
    }
    let (config, fetched, unpack_took) = match unpack_all(s, m, &blobs, src, images, progress).await
    {
        Ok(r) => r,
        Err(e) => {
            images.discard(&manifest);
            return Err(e);
        }
    };
    let made_of = fetched.iter().map(|b| b.digest.clone()).collect();
    let layer_blobs = blobs.into_iter().skip(1).map(|(d, _)| d).collect();
    let layers = images
        .complete(&manifest, requested, made_of, layer_blobs)
        .map_err(CacheError::from)?;
    Ok(Pulled {
        manifest,
        config,
        blobs: fetched,
        unpack_took,
        layers,
        reused: false,
    })
}

/// An image unpacked already: every blob it is made of, at once, proven at a place
/// it came from, or downloaded and hashed (a layer's bytes then dropped: it is
/// unpacked); the config kept in the cache.
async fn reuse_unpacked(
    s: &Session<'_>,
    src: Source<'_>,
    blobs: &[(Digest, u64)],
    progress: &Progress,
) -> Result<Vec<Fetched>, PullError> {
    progress.start(blobs);
    // (Futures made first, as in `unpack_all`.)
    let fetches: Vec<_> = blobs
        .iter()
        .enumerate()
        .map(|(i, (d, size))| {
            let dest = match i {
                0 => Dest::Cache(None),
                _ => Dest::Unpacked,
            };
            fetch(s.fork(), src, d.clone(), *size, (progress, i), dest)
        })
        .collect();
    stream::iter(fetches)
        .buffered(PARALLEL_DOWNLOADS)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

type Unpacked = (ImageConfiguration, Vec<Fetched>, Duration);

async fn unpack_all(
    s: &mut Session<'_>,
    m: &ImageManifest,
    blobs: &[(Digest, u64)],
    src: Source<'_>,
    images: &ImageStore,
    progress: &Progress,
) -> Result<Unpacked, PullError> {
    progress.start(blobs);
    // The config first (small, kept in the cache), checked to be an image config.
    let (config_digest, config_size) = blobs[0].clone();
    let config_blob = fetch(
        s.fork(),
        src,
        config_digest,
        config_size,
        (progress, 0),
        Dest::Cache(None),
    )
    .await?;
    let config = read_config(src.cache, &config_blob.digest)?;
    if config.rootfs().diff_ids().len() != m.layers().len() {
        return Err(invalid("the config's diff_ids do not match the layers"));
    }
    let plan = plan_layers(&blobs[1..], images, src.cache);
    let (fetched, unpacked) = tokio::join!(
        download_layers(s, src, &plan, progress),
        unpack_layers(m, &plan, images, src.terms.caps, progress)
    );
    // The reason, not its echo: a download stopped by its unpacker says why through
    // the unpacker's error, an unpacker stopped by its download through the download's.
    match (fetched, unpacked) {
        (Ok(layers), Ok(took)) => {
            let fetched = std::iter::once(config_blob).chain(layers).collect();
            Ok((config, fetched, took))
        }
        (Err(PullError::Invalid(m)), Err(e)) if m == UNPACK_STOPPED => Err(e),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
    }
}

/// One layer of a pull: its place in the progress list (the config is 0), its blob
/// and where its bytes come from.
struct Planned {
    index: usize,
    digest: Digest,
    size: u64,
    source: LayerSource,
}

/// Each layer: unpacked already from this very blob (proven at a place it came
/// from, or downloaded and hashed, never unpacked again), in the cache from an
/// earlier version of berth (fed from there), or downloaded through a pipe straight
/// into its unpacker.
fn plan_layers(layers: &[(Digest, u64)], images: &ImageStore, cache: &BlobCache) -> Vec<Planned> {
    layers
        .iter()
        .enumerate()
        .map(|(i, (digest, size))| Planned {
            index: i + 1,
            digest: digest.clone(),
            size: *size,
            source: if images.layer(digest).is_some() {
                LayerSource::Unpacked
            } else if cache.contains(digest) {
                LayerSource::Cached(Arc::default())
            } else {
                LayerSource::Download(Arc::default())
            },
        })
        .collect()
}

/// Every layer's bytes, a few downloads at once, into its unpacker (or proven);
/// whatever happens, no unpacker is left waiting for bytes that will not come.
async fn download_layers(
    session: &Session<'_>,
    src: Source<'_>,
    plan: &[Planned],
    progress: &Progress,
) -> Result<Vec<Fetched>, PullError> {
    // Futures made first, then run a few at once (a closure over borrowed items
    // would make the future's Send bound higher-ranked, which the compiler cannot
    // prove for tokio::spawn).
    let futures: Vec<_> = plan
        .iter()
        .map(|l| {
            let fork = session.fork();
            let at = (progress, l.index);
            async move {
                match &l.source {
                    LayerSource::Unpacked => {
                        fetch(fork, src, l.digest.clone(), l.size, at, Dest::Unpacked).await
                    }
                    LayerSource::Cached(feed) => {
                        let _end = EndFeeds(std::slice::from_ref(feed));
                        let dest = Dest::Cache(Some(feed.clone()));
                        fetch(fork, src, l.digest.clone(), l.size, at, dest).await
                    }
                    LayerSource::Download(pipe) => {
                        let dest = Dest::Pipe(pipe.clone());
                        let r = fetch(fork, src, l.digest.clone(), l.size, at, dest).await;
                        if let Err(e) = &r {
                            pipe.end(Err(e.to_string()));
                        }
                        r
                    }
                }
            }
        })
        .collect();
    let mut downloads = stream::iter(futures).buffered(PARALLEL_DOWNLOADS);
    let mut fetched = Vec::new();
    let mut failed = None;
    while let Some(r) = downloads.next().await {
        match r {
            Ok(f) => fetched.push(f),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    drop(downloads);
    for l in plan {
        match &l.source {
            LayerSource::Cached(feed) => feed.end(Err("the download stopped".into())),
            LayerSource::Download(pipe) => pipe.end(Err("the download stopped".into())),
            LayerSource::Unpacked => {}
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(fetched),
    }
}

/// Every layer unpacked into a directory of its own as it downloads, all at once;
/// how long that took.
async fn unpack_layers(
    m: &ImageManifest,
    plan: &[Planned],
    images: &ImageStore,
    caps: Caps,
    progress: &Progress,
) -> Result<Duration, PullError> {
    let started = Instant::now();
    let image = Arc::new(unpack::ImageBudget::new(caps.image_bytes));
    let unpacks = plan.iter().map(|l| {
        let i = l.index - 1;
        unpack_one(
            i,
            &m.layers()[i],
            &l.digest,
            &l.source,
            images,
            caps,
            image.clone(),
            progress,
        )
    });
    // Every unpack runs to its end (a failed download ends the others' streams at
    // once): none is left writing into a directory that is being thrown away.
    let results = futures_util::future::join_all(unpacks).await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(started.elapsed())
}

/// Where a layer's bytes come from.
enum LayerSource {
    /// Its directory exists: nothing to download or unpack.
    Unpacked,
    /// The blob cache has it (kept by an earlier version of berth).
    Cached(Arc<Feed>),
    /// Downloaded through a pipe, never kept.
    Download(Arc<Pipe>),
}

/// Unpacks layer `i` (blob `digest`) into a directory of its own (unless an
/// earlier pull did) and puts it in place; a failed one leaves nothing.
#[allow(clippy::too_many_arguments)]
async fn unpack_one(
    i: usize,
    layer: &oci_spec::image::Descriptor,
    digest: &Digest,
    source: &LayerSource,
    images: &ImageStore,
    caps: Caps,
    image: Arc<unpack::ImageBudget>,
    progress: &Progress,
) -> Result<(), PullError> {
    let compression = Compression::from_media_type(layer.media_type().as_ref())?;
    let reading = match source {
        LayerSource::Unpacked => {
            progress.update(i + 1, layer.size(), BlobState::Applied);
            return Ok(());
        }
        LayerSource::Cached(feed) => Reading::Cached(feed.clone()),
        LayerSource::Download(pipe) => Reading::Piped(pipe.reader()),
    };
    let staged = images.stage_layer(digest).map_err(CacheError::from)?;
    let target = unpack::Target {
        ids: images.ids(),
        budget: unpack::Budget {
            bytes: caps.layer_bytes,
            entries: caps.entries,
        },
        image: Some(image),
        whiteouts: unpack::Whiteouts::Overlay,
    };
    let declared = layer.size();
    let (images_, digest_) = (images.clone(), digest.clone());
    // The staged directory is removed or put in place by the blocking task itself:
    // a deploy cancelled meanwhile (its future dropped) leaves nothing half-made.
    let unpacked = tokio::task::spawn_blocking(move || {
        let dir = &staged;
        let r = match reading {
            Reading::Cached(feed) => match feed.reader() {
                Err(e) => Err(UnpackError::from(e)),
                Ok(reader) if compression == Compression::None => {
                    unpack::unpack_layer_direct(reader, declared, dir, target)
                }
                Ok(reader) => unpack::unpack_layer(
                    std::io::BufReader::with_capacity(1 << 20, reader),
                    compression,
                    dir,
                    target,
                ),
            },
            // Chunks as they arrived from the network (tens of KiB): buffered for the
            // decompressor and the tar reader's 512-byte headers.
            Reading::Piped(reader) => unpack::unpack_layer(
                std::io::BufReader::with_capacity(256 << 10, reader),
                compression,
                dir,
                target,
            ),
        };
        match r {
            Ok(_) => images_
                .commit_layer(dir, &digest_)
                .map(drop)
                .map_err(|e| PullError::from(CacheError::from(e))),
            Err(e) => {
                crate::rootfs::remove_tree(dir);
                Err(match e {
                    UnpackError::OverCap { what, limit } => PullError::Rejected(format!(
                        "layer {i} ({digest_}) expands past the {what} cap of {limit}{}",
                        if what == "image's uncompressed size" {
                            ""
                        } else {
                            " per layer"
                        }
                    )),
                    other => PullError::Unpack(other),
                })
            }
        }
    })
    .await
    .map_err(invalid)
    .and_then(|r| r);
    unpacked?;
    progress.update(i + 1, layer.size(), BlobState::Applied);
    Ok(())
}

/// What an unpacker reads.
enum Reading {
    Cached(Arc<Feed>),
    Piped(crate::cache::PipeReader),
}

/// Ends every feed not ended yet (a failed or cancelled download stream).
struct EndFeeds<'a>(&'a [Arc<Feed>]);

impl Drop for EndFeeds<'_> {
    fn drop(&mut self) {
        for f in self.0 {
            f.end(Err("the download stopped".into()));
        }
    }
}
