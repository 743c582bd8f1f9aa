//! What refusing an eStargz layer, or a read from one, says.

use berth_registry::RegistryError;
use berth_types::Digest;

#[derive(Debug, thiserror::Error)]
pub enum EstargzError {
    #[error("fetching bytes {offset}+{len} of the layer: {source}")]
    Fetch {
        offset: u64,
        len: u64,
        source: RegistryError,
    },
    #[error("fetching bytes {offset}+{len} of the layer took longer than {secs} s")]
    Deadline { offset: u64, len: u64, secs: u64 },
    #[error("the source answered {got} bytes for bytes {offset}+{len}")]
    ShortRead { offset: u64, len: u64, got: usize },
    #[error("not an eStargz footer: {0}")]
    Footer(String),
    #[error("the TOC is larger than {limit} bytes")]
    TocTooLarge { limit: u64 },
    #[error("the TOC's digest is {}, the layer's descriptor says {}", .0.actual, .0.expected)]
    TocDigest(Box<Mismatch>),
    #[error("the TOC cannot be read: {0}")]
    Toc(String),
    #[error("the TOC has {count} entries, more than {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("the TOC entry {entry:?} is refused: {reason}")]
    Hostile { entry: String, reason: String },
    #[error("chunk at {chunk_offset} of {path} does not match its chunkDigest {} (got {})", .digests.expected, .digests.actual)]
    ChunkDigest {
        path: String,
        chunk_offset: u64,
        digests: Box<Mismatch>,
    },
    #[error("chunk at {chunk_offset} of {path} cannot be decompressed: {reason}")]
    Chunk {
        path: String,
        chunk_offset: u64,
        reason: String,
    },
    #[error("{0} is not in the layer")]
    NotFound(String),
    #[error("{0} is not a regular file")]
    NotAFile(String),
    #[error("a chunk's check did not finish: {0}")]
    CheckPanicked(String),
    #[error("reading the local copy of the layer: {0}")]
    Local(String),
    #[error("mounting the layer: {0}")]
    Mount(String),
}

/// What was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub expected: Digest,
    pub actual: Digest,
}
