//! A content-addressed blob cache under the data dir, shared by all deployments:
//! `ROOT/sha256/<hex>`. A blob enters only through a [`BlobWriter`], which hashes
//! every byte written and publishes the file (atomic rename) only if the digest
//! matches. **Nothing unverified is ever visible in the cache.**
//!
//! While a blob is written, a [`Feed`] lets one reader follow it (the unpacker
//! reads a layer as it downloads, from the page cache, instead of after): the
//! reader sees the end of the stream only once the whole blob's digest matched, and
//! an error otherwise, so whatever it built from an unverified blob is thrown away.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use berth_types::Digest;
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache I/O: {0}")]
    Io(#[from] io::Error),
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("only sha256 content is cached, not {0}")]
    Algorithm(String),
}

#[derive(Clone, Debug)]
pub struct BlobCache {
    root: PathBuf,
    /// Serialises this process's updates of the origin files (read, add, rename).
    origins: Arc<Mutex<()>>,
}

/// Where a blob's origins are kept: `ROOT/origins/sha256/<hex>`, a JSON list of the
/// places (`registry-base/repository`) its bytes were downloaded from and verified.
const ORIGINS: &str = "origins";

impl BlobCache {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("sha256"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        std::fs::create_dir_all(root.join(ORIGINS).join("sha256"))?;
        Ok(BlobCache {
            root,
            origins: Arc::default(),
        })
    }

    fn origins_path(&self, d: &Digest) -> PathBuf {
        self.root.join(ORIGINS).join(d.algorithm()).join(d.hex())
    }

    /// The places the bytes of `d` were downloaded from and verified (whether they
    /// are kept as a blob here or as a layer unpacked from it). None for content
    /// an earlier version of berth kept: it is downloaded again before reuse.
    pub fn origins(&self, d: &Digest) -> Vec<String> {
        std::fs::read(self.origins_path(d))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Whether the bytes of `d` were once downloaded from `place` and verified.
    pub fn came_from(&self, d: &Digest, place: &str) -> bool {
        self.origins(d).iter().any(|o| o == place)
    }

    /// Records that `place` served the bytes of `d` and they matched the digest.
    /// Written whole and renamed into place: a crash leaves the old list or the new.
    pub fn add_origin(&self, d: &Digest, place: &str) -> io::Result<()> {
        let _one_writer = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let mut list = self.origins(d);
        if list.iter().any(|o| o == place) {
            return Ok(());
        }
        list.push(place.to_owned());
        let tmp = self
            .root
            .join("tmp")
            .join(format!("origins-{}.{:016x}", d.hex(), rand_suffix()));
        std::fs::write(&tmp, serde_json::to_vec(&list).map_err(io::Error::other)?)?;
        std::fs::rename(&tmp, self.origins_path(d))
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join(d.algorithm()).join(d.hex())
    }

    pub fn contains(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    /// A writer for the blob `expected`.
    pub fn writer(&self, expected: &Digest) -> Result<BlobWriter, CacheError> {
        if expected.algorithm() != "sha256" {
            return Err(CacheError::Algorithm(expected.algorithm().into()));
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{}.{:016x}", expected.hex(), rand_suffix()));
        Ok(BlobWriter {
            file: File::create(&tmp)?,
            tmp,
            dest: self.path(expected),
            expected: expected.clone(),
            hasher: Sha256::new(),
            written: 0,
            feed: None,
        })
    }

    /// A writer whose bytes `feed` passes on to its reader as they are written.
    pub fn writer_feeding(
        &self,
        expected: &Digest,
        feed: Arc<Feed>,
    ) -> Result<BlobWriter, CacheError> {
        let mut w = self.writer(expected)?;
        feed.begin(File::open(&w.tmp)?);
        w.feed = Some(feed);
        Ok(w)
    }

    /// Hashes every blob again and removes those whose content does not match
    /// their name (after a machine crash with unsynced writes; see `durable.rs`),
    /// and leftover temporary files. Returns how many blobs were removed.
    pub fn verify_all(&self) -> io::Result<usize> {
        let mut removed = 0;
        for e in std::fs::read_dir(self.root.join("sha256"))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let intact = format!("sha256:{name}")
                .parse::<Digest>()
                .ok()
                .is_some_and(|d| digest_file(&e.path()).is_ok_and(|a| a == d));
            if !intact {
                std::fs::remove_file(e.path())?;
                removed += 1;
            }
        }
        self.gc_tmp()?;
        Ok(removed)
    }

    fn gc_tmp(&self) -> io::Result<usize> {
        let mut removed = 0;
        for e in std::fs::read_dir(self.root.join("tmp"))?.flatten() {
            std::fs::remove_file(e.path())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes every blob not in `keep`, and leftover temporary files. Returns how
    /// many files were removed.
    pub fn gc(&self, keep: &HashSet<Digest>) -> io::Result<usize> {
        let removed = remove_unkept(&self.root.join("sha256"), keep)?;
        // Origins of content neither kept here nor unpacked from a kept blob.
        remove_unkept(&self.root.join(ORIGINS).join("sha256"), keep)?;
        Ok(removed + self.gc_tmp()?)
    }
}

/// Removes every file of `dir` (named by a sha256 hex digest) not in `keep`;
/// how many went.
fn remove_unkept(dir: &Path, keep: &HashSet<Digest>) -> io::Result<usize> {
    let mut removed = 0;
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let referenced = format!("sha256:{name}")
            .parse::<Digest>()
            .is_ok_and(|d| keep.contains(&d));
        if !referenced {
            std::fs::remove_file(e.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0) as u64;
    t ^ (std::process::id() as u64).rotate_left(32)
}

/// Hashes as it writes; [`commit`](BlobWriter::commit) publishes or discards.
pub struct BlobWriter {
    file: File,
    tmp: PathBuf,
    dest: PathBuf,
    expected: Digest,
    hasher: Sha256,
    written: u64,
    feed: Option<Arc<Feed>>,
}

impl BlobWriter {
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), CacheError> {
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
        if let Some(f) = &self.feed {
            f.advance(self.written);
        }
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Publishes the blob if its digest matches; otherwise deletes it.
    pub fn commit(self) -> Result<PathBuf, CacheError> {
        let actual = Digest::sha256_from_bytes(&self.hasher.clone().finalize().into());
        if actual != self.expected {
            let _ = std::fs::remove_file(&self.tmp);
            let e = CacheError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            };
            if let Some(f) = &self.feed {
                f.end(Err(e.to_string()));
            }
            return Err(e);
        }
        if let Some(f) = &self.feed {
            f.end(Ok(()));
        }
        // No fsync here: the cache is made durable in bulk (see `durable.rs`).
        std::fs::rename(&self.tmp, &self.dest)?;
        Ok(self.dest.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if let Some(f) = &self.feed {
            f.end(Err("the download did not complete".into()));
        }
        // Not committed (error, cancelled deploy): leave nothing behind.
        if self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// One blob on its way into the cache, followed by one reader. Hand-written: the
/// reader is blocking code (the tar unpacker) following an async writer through
/// the file both share, which no channel or pipe crate does without a copy.
#[derive(Debug, Default)]
pub struct Feed {
    state: Mutex<FeedState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct FeedState {
    /// Opened by the writer before anything can rename or remove it; read with
    /// `pread` at the reader's own offset.
    file: Option<Arc<File>>,
    written: u64,
    /// Set once: `Ok` when the whole blob was verified.
    end: Option<Result<(), String>>,
}

impl Feed {
    /// Points the feed at a blob the cache already holds.
    pub fn begin_cached(&self, path: &Path) -> io::Result<()> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut st = self.lock();
        st.file = Some(Arc::new(file));
        st.written = len;
        st.end.get_or_insert(Ok(()));
        drop(st);
        self.changed.notify_all();
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(&self, file: File) {
        self.lock().file = Some(Arc::new(file));
        self.changed.notify_all();
    }

    fn advance(&self, written: u64) {
        self.lock().written = written;
        self.changed.notify_all();
    }

    /// Ends the feed (the first end wins); `Err` makes the reader fail.
    pub fn end(&self, result: Result<(), String>) {
        let mut st = self.lock();
        if st.end.is_none() {
            st.end = Some(result);
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Blocks until the blob has started (or ended), then reads it as it grows.
    pub fn reader(self: &Arc<Self>) -> io::Result<FeedReader> {
        let mut st = self.lock();
        loop {
            if let Some(file) = &st.file {
                return Ok(FeedReader {
                    file: file.clone(),
                    feed: self.clone(),
                    pos: 0,
                });
            }
            if let Some(Err(e)) = &st.end {
                return Err(io::Error::other(e.clone()));
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Reads a [`Feed`]'s blob, waiting for bytes not yet written.
pub struct FeedReader {
    file: Arc<File>,
    feed: Arc<Feed>,
    pos: u64,
}

impl io::Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.feed.lock();
        loop {
            if let Some(Err(e)) = &st.end {
                return Err(io::Error::other(e.clone()));
            }
            if self.pos < st.written {
                let available = (st.written - self.pos).min(buf.len() as u64) as usize;
                drop(st);
                let n = std::os::unix::fs::FileExt::read_at(
                    &*self.file,
                    &mut buf[..available],
                    self.pos,
                )?;
                self.pos += n as u64;
                return Ok(n);
            }
            if st.end.is_some() {
                return Ok(0);
            }
            st = self
                .feed
                .changed
                .wait(st)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Moves the reader's position without reading: forward over bytes that may not be
/// written yet (a later read waits for them), as the tar reader skips file data
/// that [`FeedCopier`] copies in the kernel instead.
impl io::Seek for FeedReader {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let to = match pos {
            io::SeekFrom::Start(n) => Some(n),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            io::SeekFrom::End(_) => None,
        };
        self.pos = to.ok_or_else(|| io::Error::other("a seek a feed cannot make"))?;
        Ok(self.pos)
    }
}

impl FeedReader {
    /// A copier of byte ranges of the same blob.
    pub fn copier(&self) -> FeedCopier {
        FeedCopier {
            file: self.file.clone(),
            feed: self.feed.clone(),
        }
    }
}

/// Copies a range of a [`Feed`]'s blob into a file with `copy_file_range`, once
/// the range is written: the bytes stay in the kernel (no read into user space
/// and write back), the way an uncompressed layer's file data goes from the blob
/// cache to the unpacked layer.
#[derive(Clone)]
pub struct FeedCopier {
    file: Arc<File>,
    feed: Arc<Feed>,
}

impl FeedCopier {
    pub fn copy_to(&self, offset: u64, len: u64, out: &File) -> io::Result<()> {
        let end = offset + len;
        {
            let mut st = self.feed.lock();
            loop {
                if let Some(Err(e)) = &st.end {
                    return Err(io::Error::other(e.clone()));
                }
                if st.written >= end {
                    break;
                }
                if st.end.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the blob ends inside a file's data",
                    ));
                }
                st = self
                    .feed
                    .changed
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        let mut off_in = offset;
        let mut left = len;
        while left > 0 {
            let chunk = left.min(1 << 30) as usize;
            let n = rustix::fs::copy_file_range(&*self.file, Some(&mut off_in), out, None, chunk)
                .map_err(io::Error::from)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the blob ended early",
                ));
            }
            left -= n as u64;
        }
        Ok(())
    }
}

/// A layer's blob passing from its download to its unpacker without being kept:
/// the unpacked layer is what is cached (a second copy of the blob on disk would
/// be written and read back for nothing). The writer hashes every byte and ends
/// the stream `Ok` only once the digest matched; its reader sees the end of the
/// stream only then, and an error otherwise, so whatever it built from an
/// unverified blob is thrown away. At most [`PIPE_BYTES`] wait in between: a
/// download waits for its unpacker (backpressure), never the other way round.
/// Hand-written: an async writer and a blocking reader (the tar unpacker) with
/// byte-counted backpressure and a verified end, which no channel crate has.
#[derive(Debug, Default)]
pub struct Pipe {
    state: Mutex<PipeState>,
    /// The reader waits here for chunks or the end.
    readable: Condvar,
    /// The writer waits here for room.
    room: tokio::sync::Notify,
}

pub const PIPE_BYTES: usize = 8 << 20;

#[derive(Debug, Default)]
struct PipeState {
    chunks: std::collections::VecDeque<bytes::Bytes>,
    queued: usize,
    end: Option<Result<(), String>>,
}

impl Pipe {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a chunk once there is room; false when the stream has ended (its
    /// reader stopped): the download is for nothing then.
    async fn push(&self, chunk: bytes::Bytes) -> bool {
        loop {
            let notified = self.room.notified();
            {
                let mut st = self.lock();
                if st.end.is_some() {
                    return false;
                }
                if st.queued < PIPE_BYTES {
                    st.queued += chunk.len();
                    st.chunks.push_back(chunk);
                    drop(st);
                    self.readable.notify_one();
                    return true;
                }
            }
            notified.await;
        }
    }

    /// Ends the stream (the first end wins); `Err` makes the reader fail.
    pub fn end(&self, result: Result<(), String>) {
        let mut st = self.lock();
        if st.end.is_none() {
            st.end = Some(result);
        }
        drop(st);
        self.readable.notify_all();
        self.room.notify_waiters();
    }

    /// The writer of `expected`'s bytes into this pipe.
    pub fn writer(self: &Arc<Self>, expected: &Digest) -> PipeWriter {
        PipeWriter {
            pipe: self.clone(),
            hasher: Sha256::new(),
            expected: expected.clone(),
            written: 0,
            done: false,
        }
    }

    /// The blocking reader of this pipe.
    pub fn reader(self: &Arc<Self>) -> PipeReader {
        PipeReader {
            pipe: self.clone(),
            current: bytes::Bytes::new(),
        }
    }
}

/// Hashes and passes on a blob's bytes; see [`Pipe`].
pub struct PipeWriter {
    pipe: Arc<Pipe>,
    hasher: Sha256,
    expected: Digest,
    written: u64,
    done: bool,
}

impl PipeWriter {
    /// False once the reader stopped.
    pub async fn write_chunk(&mut self, chunk: bytes::Bytes) -> bool {
        self.hasher.update(&chunk);
        self.written += chunk.len() as u64;
        self.pipe.push(chunk).await
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks the digest and ends the stream accordingly.
    pub fn commit(mut self) -> Result<(), CacheError> {
        self.done = true;
        let actual = Digest::sha256_from_bytes(&self.hasher.clone().finalize().into());
        if actual != self.expected {
            let e = CacheError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            };
            self.pipe.end(Err(e.to_string()));
            return Err(e);
        }
        self.pipe.end(Ok(()));
        Ok(())
    }
}

impl Drop for PipeWriter {
    fn drop(&mut self) {
        if !self.done {
            self.pipe.end(Err("the download did not complete".into()));
        }
    }
}

/// Reads a [`Pipe`], waiting for chunks. Dropped before the end (the unpack
/// failed), it ends the stream, so that the download stops.
pub struct PipeReader {
    pipe: Arc<Pipe>,
    current: bytes::Bytes,
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.pipe.end(Err("the unpack stopped".into()));
    }
}

impl io::Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            let mut st = self.pipe.lock();
            loop {
                if let Some(Err(e)) = &st.end {
                    return Err(io::Error::other(e.clone()));
                }
                if let Some(c) = st.chunks.pop_front() {
                    st.queued -= c.len();
                    drop(st);
                    self.pipe.room.notify_one();
                    self.current = c;
                    break;
                }
                if st.end.is_some() {
                    return Ok(0);
                }
                st = self
                    .pipe
                    .readable
                    .wait(st)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

/// The digest of a file already on disk.
pub fn digest_file(path: &Path) -> io::Result<Digest> {
    let mut h = Sha256::new();
    io::copy(&mut File::open(path)?, &mut h)?;
    Ok(Digest::sha256_from_bytes(&h.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn digest_of(b: &[u8]) -> Digest {
        Digest::sha256_from_bytes(&Sha256::digest(b).into())
    }

    #[test]
    fn verified_blobs_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path()).unwrap();
        let d = digest_of(b"hello world");
        let mut w = cache.writer(&d).unwrap();
        w.write_chunk(b"hello ").unwrap();
        w.write_chunk(b"world").unwrap();
        let p = w.commit().unwrap();
        assert!(cache.contains(&d));
        assert_eq!(std::fs::read(p).unwrap(), b"hello world");

        let d2 = digest_of(b"expected");
        let mut w = cache.writer(&d2).unwrap();
        w.write_chunk(b"tampered").unwrap();
        assert!(matches!(w.commit(), Err(CacheError::DigestMismatch { .. })));
        assert!(!cache.contains(&d2));
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0,
            "nothing kept"
        );

        // An abandoned writer leaves nothing either.
        let w = cache.writer(&d2).unwrap();
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );

        assert_eq!(cache.gc(&HashSet::from([d.clone()])).unwrap(), 0);

        // After a machine crash, a blob whose bytes never reached the disk is
        // found by hashing everything again; intact ones stay.
        let lost = digest_of(b"lost");
        let mut w = cache.writer(&lost).unwrap();
        w.write_chunk(b"lost").unwrap();
        w.commit().unwrap();
        std::fs::write(cache.path(&lost), b"").unwrap();
        assert_eq!(cache.verify_all().unwrap(), 1);
        assert!(!cache.contains(&lost) && cache.contains(&d));

        // A reader following a writer gets every byte, and the end only once the
        // blob is verified; a mismatch or an abandoned writer is an error to it.
        let body = vec![7u8; 300_000];
        let d3 = digest_of(&body);
        for (content, ok) in [(body.clone(), true), (vec![8u8; 300_000], false)] {
            let feed = Arc::new(Feed::default());
            let follower = {
                let feed = feed.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    feed.reader()?.read_to_end(&mut out).map(|_| out)
                })
            };
            let mut w = cache.writer_feeding(&d3, feed).unwrap();
            for c in content.chunks(7_000) {
                w.write_chunk(c).unwrap();
            }
            assert_eq!(w.commit().is_ok(), ok);
            let got = follower.join().unwrap();
            assert_eq!(got.is_ok(), ok);
            if ok {
                assert_eq!(got.unwrap(), body);
            }
        }
        let feed = Arc::new(Feed::default());
        let follower = {
            let feed = feed.clone();
            std::thread::spawn(move || feed.reader()?.read_to_end(&mut Vec::new()))
        };
        let mut w = cache.writer_feeding(&digest_of(b"x"), feed).unwrap();
        w.write_chunk(b"partial").unwrap();
        drop(w);
        assert!(follower.join().unwrap().is_err());
        assert_eq!(cache.gc(&HashSet::new()).unwrap(), 2, "d and d3");
        assert!(!cache.contains(&d));
    }
}
