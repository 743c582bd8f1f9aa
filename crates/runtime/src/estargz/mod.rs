//! eStargz layers read in place (stargz-snapshotter's `docs/estargz.md`): the
//! footer names the TOC's offset, the TOC is fetched and checked against the
//! digest the layer's descriptor annotates (pinned by the manifest's digest),
//! and a file's bytes are read by fetching only the chunks that hold them,
//! **each verified against its `chunkDigest` before any byte is returned**.
//! What the FUSE filesystem of a lazy layer stands on.

pub mod error;
pub mod footer;
pub mod fs;
pub mod mount;
pub mod reader;
pub mod source;
pub mod toc;

use std::future::Future;
use std::io::Read;
use std::ops::{Deref, Range};
use std::time::Duration;

use berth_types::Digest;
use futures_util::future::try_join_all;
use sha2::{Digest as _, Sha256};

pub use error::{EstargzError, Mismatch};
pub use source::{BlobPool, PooledBlob, RangeSource, RegistryBlob};
pub use toc::{Chunk, Entry, Index, Kind};

/// The annotation on a layer descriptor naming its TOC's digest.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The largest TOC read, compressed and uncompressed.
pub const MAX_TOC: u64 = 64 << 20;
/// How long one range fetch may take, unless told otherwise.
pub const FETCH_DEADLINE: Duration = Duration::from_secs(30);
const TOC_NAME: &str = "stargz.index.json";

/// An eStargz layer whose TOC was verified: its index, and reads of its files.
pub struct Layer<S> {
    source: S,
    index: Index,
    deadline: Duration,
}

impl<S: RangeSource> Layer<S> {
    /// Reads the footer and the TOC of the blob `source` reads; the TOC must have
    /// digest `toc_digest` (the descriptor's annotation).
    pub async fn open(source: S, toc_digest: &Digest) -> Result<Self, EstargzError> {
        Self::open_with(source, toc_digest, FETCH_DEADLINE).await
    }

    /// [`Layer::open`] with each range fetch bounded by `deadline`.
    pub async fn open_with(
        source: S,
        toc_digest: &Digest,
        deadline: Duration,
    ) -> Result<Self, EstargzError> {
        let mut layer = Layer {
            source,
            index: Index::parse(br#"{"version":1,"entries":[]}"#, 0)?,
            deadline,
        };
        let size = layer.source.size();
        let tail_len = size.min(footer::FOOTER_SIZE);
        let tail = layer.fetch(size - tail_len, tail_len).await?;
        let (toc_offset, footer_len) = footer::parse(&tail)?;
        let toc_end = size - footer_len;
        if toc_offset >= toc_end {
            return Err(EstargzError::Footer(format!(
                "the TOC offset {toc_offset} is past the blob's {size} bytes"
            )));
        }
        if toc_end - toc_offset > MAX_TOC {
            return Err(EstargzError::TocTooLarge { limit: MAX_TOC });
        }
        let member = layer.fetch(toc_offset, toc_end - toc_offset).await?;
        let json = toc_json(&member)?;
        let actual = Digest::sha256_from_bytes(&Sha256::digest(&json).into());
        if &actual != toc_digest {
            return Err(EstargzError::TocDigest(Box::new(Mismatch {
                expected: toc_digest.clone(),
                actual,
            })));
        }
        layer.index = Index::parse(&json, toc_offset)?;
        Ok(layer)
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Up to `len` bytes of the file at `path` from `offset` (fewer at its end):
    /// the chunks holding them are fetched and each verified before any byte is
    /// returned.
    pub async fn read(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, EstargzError> {
        let entry = self
            .index
            .get(path)
            .ok_or_else(|| EstargzError::NotFound(path.to_owned()))?;
        let (entry, range) = span(&self.index, entry, offset, len);
        if entry.kind != Kind::File {
            return Err(EstargzError::NotAFile(path.to_owned()));
        }
        assemble(entry, range, |c| self.chunk(&entry.path, c)).await
    }

    /// Chunk `c` of the file at `path`, verified against its `chunkDigest`.
    pub async fn chunk(&self, path: &str, c: &Chunk) -> Result<Vec<u8>, EstargzError> {
        let member = self
            .fetch(c.blob_offset, c.blob_end - c.blob_offset)
            .await?;
        verify_chunk(path, c, &member)
    }

    /// The source the layer reads from.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// Bytes `[offset, offset + len)` of the blob, within the deadline.
    pub async fn fetch_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, EstargzError> {
        self.fetch(offset, len).await
    }

    /// Bytes `[offset, offset + len)` of the blob, within the deadline.
    async fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, EstargzError> {
        if offset
            .checked_add(len)
            .is_none_or(|e| e > self.source.size())
        {
            return Err(EstargzError::ShortRead {
                offset,
                len,
                got: 0,
            });
        }
        let bytes = tokio::time::timeout(self.deadline, self.source.read_range(offset, len))
            .await
            .map_err(|_| EstargzError::Deadline {
                offset,
                len,
                secs: self.deadline.as_secs(),
            })?
            .map_err(|source| EstargzError::Fetch {
                offset,
                len,
                source,
            })?;
        if bytes.len() as u64 != len {
            return Err(EstargzError::ShortRead {
                offset,
                len,
                got: bytes.len(),
            });
        }
        Ok(bytes)
    }
}

/// What a read of `len` bytes of `entry` from `offset` reads: the file itself
/// (a hard link's target), and the bytes asked for that it holds (empty past its
/// end).
pub(crate) fn span<'a>(
    index: &'a Index,
    entry: &'a Entry,
    offset: u64,
    len: u64,
) -> (&'a Entry, Range<u64>) {
    let entry = match &entry.kind {
        Kind::Hardlink { target } => index.get(target).expect("a link's target is indexed"),
        _ => entry,
    };
    let end = offset.saturating_add(len).min(entry.size);
    (entry, offset..end.max(offset))
}

/// Bytes `range` of file `entry` (no link: see [`span`]) from the chunks that
/// hold them, each got by `get` (all at once); whether `get` fetches, caches or
/// shares a fetch is the caller's, as is checking each chunk before it returns.
pub(crate) async fn assemble<'a, F, Fut, B>(
    entry: &'a Entry,
    range: Range<u64>,
    get: F,
) -> Result<Vec<u8>, EstargzError>
where
    F: Fn(&'a Chunk) -> Fut,
    Fut: Future<Output = Result<B, EstargzError>>,
    B: Deref,
    B::Target: AsRef<[u8]>,
{
    if range.is_empty() {
        return Ok(Vec::new());
    }
    let Range { start, end } = range;
    let needed = entry
        .chunks
        .iter()
        .filter(|c| c.file_offset < end && c.file_offset + c.size > start);
    let get = &get;
    let chunks =
        try_join_all(needed.map(|c| async move { Ok::<_, EstargzError>((c, get(c).await?)) }))
            .await?;
    let mut out = Vec::with_capacity((end - start) as usize);
    for (c, bytes) in chunks {
        let from = start.max(c.file_offset) - c.file_offset;
        let to = end.min(c.file_offset + c.size) - c.file_offset;
        out.extend_from_slice(&(*bytes).as_ref()[from as usize..to as usize]);
    }
    Ok(out)
}

/// Chunk `c` of the file at `path` from `member`, the blob's bytes from the
/// chunk's `blob_offset` on (at least to its member's end, or its own): only as
/// much as the chunk needs is inflated (a member that inflates to more is never
/// expanded past it), and the bytes are returned only if they match the chunk's
/// `chunkDigest`.
pub fn verify_chunk(path: &str, c: &Chunk, member: &[u8]) -> Result<Vec<u8>, EstargzError> {
    let fail = |reason: String| EstargzError::Chunk {
        path: path.to_owned(),
        chunk_offset: c.file_offset,
        reason,
    };
    let want = c.inner_offset + c.size;
    let mut bytes = Vec::with_capacity(want as usize);
    flate2::read::GzDecoder::new(member)
        .take(want)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 != want {
        return Err(fail(format!("{} bytes, not {want}", bytes.len())));
    }
    let bytes = bytes.split_off(c.inner_offset as usize);
    check_chunk_digest(path, c, &bytes)?;
    Ok(bytes)
}

/// Whether `bytes` (uncompressed) are chunk `c` of the file at `path`, by its
/// `chunkDigest`.
pub fn check_chunk_digest(path: &str, c: &Chunk, bytes: &[u8]) -> Result<(), EstargzError> {
    let actual = Digest::sha256_from_bytes(&Sha256::digest(bytes).into());
    if actual != c.digest {
        return Err(EstargzError::ChunkDigest {
            path: path.to_owned(),
            chunk_offset: c.file_offset,
            digests: Box::new(Mismatch {
                expected: c.digest.clone(),
                actual,
            }),
        });
    }
    Ok(())
}

/// The TOC JSON from its gzip member: the first tar entry, named
/// `stargz.index.json`, at most [`MAX_TOC`] bytes.
fn toc_json(member: &[u8]) -> Result<Vec<u8>, EstargzError> {
    let gz = flate2::read::GzDecoder::new(member).take(MAX_TOC + 512);
    let mut archive = tar::Archive::new(gz);
    let mut entries = archive
        .entries()
        .map_err(|e| EstargzError::Toc(e.to_string()))?;
    let mut first = entries
        .next()
        .ok_or_else(|| EstargzError::Toc("no tar entry".into()))?
        .map_err(|e| EstargzError::Toc(e.to_string()))?;
    let name = first.path_bytes().into_owned();
    if name != TOC_NAME.as_bytes() {
        return Err(EstargzError::Toc(format!(
            "the first entry is {:?}, not {TOC_NAME}",
            String::from_utf8_lossy(&name)
        )));
    }
    if first.size() > MAX_TOC {
        return Err(EstargzError::TocTooLarge { limit: MAX_TOC });
    }
    let mut json = Vec::with_capacity(first.size() as usize);
    first
        .read_to_end(&mut json)
        .map_err(|e| EstargzError::Toc(e.to_string()))?;
    Ok(json)
}
