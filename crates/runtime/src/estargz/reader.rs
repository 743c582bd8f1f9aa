//! A lazily mounted layer's reads: each chunk fetched once (concurrent reads of
//! one chunk share its fetch) and verified off the async threads, kept in a
//! bounded cache, counted for the waterfall. Once the background pull has made
//! the layer local, chunks come from its unpacked directory (opened beneath it,
//! no symlink followed, and still checked against the TOC: the TOC is the
//! image author's claim, and must not name through the unpacked tar's own
//! symlinks a file outside the layer) and the registry session (with its
//! credentials) is let go.

use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use futures_util::future::try_join_all;
use tokio::sync::OnceCell;

use super::{
    assemble, check_chunk_digest, span, verify_chunk, Chunk, Entry, EstargzError, Layer,
    RangeSource,
};

/// The verified chunks a layer keeps (uncompressed bytes): the kernel's page
/// cache keeps what was read, this keeps the chunks the kernel reads in pieces
/// (its reads are at most 128 KiB) and the prefetched ones until they are read.
pub const CHUNK_CACHE: u64 = 256 << 20;

/// What a reader tells whoever watches it: bytes fetched, reads that failed.
pub trait Watch: Send + Sync {
    /// `bytes` of the blob fetched for chunks the container's reads needed.
    fn on_demand(&self, bytes: u64, chunks: u64);
    /// `bytes` of the blob fetched before the start (the prefetch landmark's files).
    fn prefetched(&self, bytes: u64);
    /// A read failed (the container gets EIO): why, naming the chunk.
    fn failed(&self, e: &EstargzError);
}

type Cell = Arc<OnceCell<Arc<Vec<u8>>>>;

struct ChunkCache {
    cells: HashMap<u64, Cell>,
    order: VecDeque<(u64, u64)>,
    bytes: u64,
}

impl ChunkCache {
    /// The cell of chunk `c`, made if new; the oldest chunks go past the cap.
    fn cell(&mut self, c: &Chunk) -> Cell {
        if let Some(cell) = self.cells.get(&c.blob_offset) {
            return cell.clone();
        }
        let cell = Cell::default();
        self.cells.insert(c.blob_offset, cell.clone());
        self.order.push_back((c.blob_offset, c.size));
        self.bytes += c.size;
        while self.bytes > CHUNK_CACHE && self.order.len() > 1 {
            let (offset, size) = self.order.pop_front().expect("more than one");
            self.cells.remove(&offset);
            self.bytes -= size;
        }
        cell
    }
}

pub struct Reader {
    layer: Layer<Arc<dyn RangeSource>>,
    chunks: Mutex<ChunkCache>,
    /// The layer's unpacked directory, once the background pull verified it.
    local: RwLock<Option<PathBuf>>,
    watch: Arc<dyn Watch>,
    last_fetch: Mutex<Option<Instant>>,
}

impl Reader {
    pub fn new(layer: Layer<Arc<dyn RangeSource>>, watch: Arc<dyn Watch>) -> Reader {
        Reader {
            layer,
            chunks: Mutex::new(ChunkCache {
                cells: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
            local: RwLock::new(None),
            watch,
            last_fetch: Mutex::new(None),
        }
    }

    pub fn layer(&self) -> &Layer<Arc<dyn RangeSource>> {
        &self.layer
    }

    pub fn watch(&self) -> &dyn Watch {
        self.watch.as_ref()
    }

    /// When a chunk was last fetched on demand (a background pull waits for a pause).
    pub fn last_fetch(&self) -> Option<Instant> {
        *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chunks not cached come from now on from `dir`, the layer unpacked from
    /// its verified blob, each checked as a fetched one is; the registry session
    /// is closed.
    pub fn go_local(&self, dir: PathBuf) {
        *self.local.write().unwrap_or_else(|e| e.into_inner()) = Some(dir);
        self.layer.source().close();
    }

    /// Lets the registry session go (the reader is being retired).
    pub fn close(&self) {
        self.layer.source().close();
    }

    pub fn is_local(&self) -> bool {
        self.local
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Up to `len` bytes of file `entry` from `offset`: from the chunks that
    /// hold them, each verified before any byte is returned (or from the local
    /// copy, once there is one).
    pub async fn read(
        &self,
        entry: &Entry,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, EstargzError> {
        let (entry, range) = span(self.layer.index(), entry, offset, len);
        assemble(entry, range, |c| self.chunk(&entry.path, c)).await
    }

    /// Chunk `c` of `path`: from the cache, or fetched (once, however many
    /// reads wait for it) and verified.
    async fn chunk(&self, path: &str, c: &Chunk) -> Result<Arc<Vec<u8>>, EstargzError> {
        let cell = self
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cell(c);
        let bytes = cell
            .get_or_try_init(|| async {
                let local = self.local.read().unwrap_or_else(|e| e.into_inner()).clone();
                if let Some(dir) = local {
                    let (path, chunk) = (path.to_owned(), c.clone());
                    return checked(move || local_chunk(&dir, &path, &chunk))
                        .await
                        .map(Arc::new);
                }
                let len = c.blob_end - c.blob_offset;
                let member = self.layer.fetch_range(c.blob_offset, len).await?;
                *self.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                let (path, chunk) = (path.to_owned(), c.clone());
                let bytes = checked(move || verify_chunk(&path, &chunk, &member)).await?;
                self.watch.on_demand(len, 1);
                Ok::<_, EstargzError>(Arc::new(bytes))
            })
            .await?;
        Ok(bytes.clone())
    }

    /// The prioritized files (those before `.prefetch.landmark`), fetched in one
    /// Range request and verified chunk by chunk, on every core, into the cache:
    /// what the container reads first is here before it starts. Returns the
    /// bytes fetched.
    pub async fn prefetch(&self) -> Result<u64, EstargzError> {
        let Some(end) = self.layer.index().prefetch_end() else {
            return Ok(0);
        };
        let blob = Arc::new(self.layer.fetch_range(0, end).await?);
        let mut work: Vec<(String, Chunk, Cell)> = Vec::new();
        {
            let mut cache = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
            for e in self.layer.index().prefetch() {
                for c in e.chunks.iter().filter(|c| c.blob_end <= end) {
                    work.push((e.path.clone(), c.clone(), cache.cell(c)));
                }
            }
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let share = work.len().div_ceil(cores).max(1);
        let mut shares = Vec::new();
        while !work.is_empty() {
            let rest = work.split_off(share.min(work.len()));
            let mine = std::mem::replace(&mut work, rest);
            let blob = blob.clone();
            shares.push(checked(move || {
                for (path, c, cell) in mine {
                    let member = &blob[c.blob_offset as usize..c.blob_end as usize];
                    let bytes = verify_chunk(&path, &c, member)?;
                    let _ = cell.set(Arc::new(bytes));
                }
                Ok(())
            }));
        }
        try_join_all(shares).await?;
        self.watch.prefetched(end);
        Ok(end)
    }
}

/// Runs a chunk check on the blocking pool (inflating and hashing a chunk of
/// several MiB takes milliseconds no async thread should spend).
async fn checked<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EstargzError> + Send + 'static,
) -> Result<T, EstargzError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EstargzError::CheckPanicked(e.to_string()))?
}

/// Chunk `c` of the file at `path` in the unpacked layer `dir`, checked
/// against its `chunkDigest`. The file is opened beneath `dir` with no symlink
/// followed on the way (the unpacked tar may hold symlinks the TOC does not
/// show), and must be a regular file.
fn local_chunk(dir: &std::path::Path, path: &str, c: &Chunk) -> Result<Vec<u8>, EstargzError> {
    use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
    let fail = |e: &dyn std::fmt::Display| EstargzError::Local(format!("{path}: {e}"));
    let root = rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(&e))?;
    let fd = rustix::fs::openat2(
        &root,
        path,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| fail(&e))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| fail(&e))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(fail(&"not a regular file in the unpacked layer"));
    }
    let file = std::fs::File::from(fd);
    let mut buf = vec![0; c.size as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], c.file_offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(fail(&e)),
        }
    }
    if got != buf.len() {
        return Err(fail(&format!(
            "{got} bytes at {}, not {}",
            c.file_offset, c.size
        )));
    }
    check_chunk_digest(path, c, &buf)?;
    Ok(buf)
}
