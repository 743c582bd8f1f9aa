//! Where a layer's bytes come from: any range of a blob, read at once. The
//! registry's blob answers with one `Range` request each (`blob::read_range`,
//! through the guarded transport and the session's auth).

use async_trait::async_trait;
use berth_registry::{blob, RegistryError, Session};
use berth_types::Digest;
use tokio::sync::Mutex;

/// Byte ranges of one blob. The reader bounds each call with its deadline and
/// checks the length of what comes back.
#[async_trait]
pub trait RangeSource: Send + Sync {
    /// The blob's size (its descriptor's).
    fn size(&self) -> u64;
    /// Bytes `[offset, offset + len)`.
    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError>;
}

#[async_trait]
impl<T: RangeSource + ?Sized> RangeSource for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }
    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        (**self).read_range(offset, len).await
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
