//! Where a layer's bytes come from: any range of a blob, read at once. The
//! registry's blob answers with one `Range` request each (`blob::read_range`,
//! through the guarded transport and the session's auth).

use std::sync::Arc;

use async_trait::async_trait;
use berth_registry::{blob, Credentials, Registry, RegistryError, Session, Target, TokenReuse};
use berth_types::Digest;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot, Mutex};

/// Byte ranges of one blob. The reader bounds each call with its deadline and
/// checks the length of what comes back.
#[async_trait]
pub trait RangeSource: Send + Sync {
    /// The blob's size (its descriptor's).
    fn size(&self) -> u64;
    /// Bytes `[offset, offset + len)`.
    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError>;
    /// No more reads will come: let go of what the reads needed (a registry
    /// session and its credentials). Reads after this fail.
    fn close(&self) {}
}

#[async_trait]
impl<T: RangeSource + ?Sized> RangeSource for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        (**self).read_range(offset, len).await
    }
    fn close(&self) {
        (**self).close()
    }
}

#[async_trait]
impl<T: RangeSource + ?Sized> RangeSource for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        (**self).read_range(offset, len).await
    }
    fn close(&self) {
        (**self).close()
    }
}

/// A blob on a registry, read through a session of its repository.
pub struct RegistryBlob<'r> {
    // One request at a time: the session's token refreshes stay in one place.
    session: Mutex<Session<'r>>,
    digest: Digest,
    size: u64,
}

impl<'r> RegistryBlob<'r> {
    pub fn new(session: Session<'r>, digest: Digest, size: u64) -> Self {
        RegistryBlob {
            session: Mutex::new(session),
            digest,
            size,
        }
    }
}

#[async_trait]
impl RangeSource for RegistryBlob<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        let mut s = self.session.lock().await;
        blob::read_range(&mut s, &self.digest, offset, len).await
    }
}

/// Range requests a pool answers at once (a lazy mount's reads, its prefetch).
const POOL_PARALLEL: usize = 8;

struct RangeRequest {
    digest: Digest,
    offset: u64,
    len: u64,
    answer: oneshot::Sender<Result<Vec<u8>, RegistryError>>,
}

/// Range reads of one repository's blobs that outlive the deploy that opened
/// them (a lazy mount reads as long as its container runs): a task owns the
/// registry session, and with it the credentials, until every handle to it is
/// closed or dropped. Up to [`POOL_PARALLEL`] requests run at once, each on a
/// fork of the last session that was answered (its token reused).
#[derive(Clone)]
pub struct BlobPool {
    requests: mpsc::Sender<RangeRequest>,
}

impl BlobPool {
    /// Starts the pool's task on the current tokio runtime.
    pub fn spawn(registry: Arc<Registry>, target: Target, creds: Option<Credentials>) -> BlobPool {
        let (requests, mut incoming) = mpsc::channel::<RangeRequest>(64);
        tokio::spawn(async move {
            let (registry, target) = (registry, target);
            let mut base = registry.session(&target, creds, TokenReuse::Cached);
            let mut running = FuturesUnordered::new();
            loop {
                tokio::select! {
                    r = incoming.recv(), if running.len() < POOL_PARALLEL => {
                        let Some(r) = r else { break };
                        let mut s = base.fork();
                        running.push(async move {
                            let res = blob::read_range(&mut s, &r.digest, r.offset, r.len).await;
                            let answered = res.is_ok();
                            let _ = r.answer.send(res);
                            (s, answered)
                        });
                    }
                    Some((s, answered)) = running.next(), if !running.is_empty() => {
                        if answered {
                            base = s;
                        }
                    }
                }
            }
            while running.next().await.is_some() {}
        });
        BlobPool { requests }
    }

    /// Blob `digest` of `size` bytes through this pool.
    pub fn blob(&self, digest: Digest, size: u64) -> PooledBlob {
        PooledBlob {
            requests: std::sync::Mutex::new(Some(self.requests.clone())),
            digest,
            size,
        }
    }
}

/// One blob read through a [`BlobPool`]; closing it lets go of its share of the
/// pool (the pool ends, its session and credentials dropped, once all have).
pub struct PooledBlob {
    requests: std::sync::Mutex<Option<mpsc::Sender<RangeRequest>>>,
    digest: Digest,
    size: u64,
}

#[async_trait]
impl RangeSource for PooledBlob {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        let gone = || RegistryError::Network("the layer's registry session was closed".into());
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(gone)?;
        let (answer, answered) = oneshot::channel();
        let request = RangeRequest {
            digest: self.digest.clone(),
            offset,
            len,
            answer,
        };
        requests.send(request).await.map_err(|_| gone())?;
        answered.await.map_err(|_| gone())?
    }

    fn close(&self) {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }
}
