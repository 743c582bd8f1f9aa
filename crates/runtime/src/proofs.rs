//! Proofs of access to the shared blob cache. Projects share one cache, and digests
//! are no secret (they appear in logs), so holding a digest proves nothing.
//!
//! **The rule: a project may use cached bytes (a blob in the cache, or a layer
//! unpacked from one) only once the place its own deployment names (registry and
//! repository), with its own credentials, served those very bytes, or said it serves
//! them (`HEAD /v2/<repo>/blobs/<digest>`) while being a place the bytes were
//! once downloaded from and verified.** A `HEAD` answered by a place the bytes never
//! came from proves nothing: anyone can answer 200 with the right length, so there
//! the project downloads the blob and hashes it itself (the bytes are thrown away
//! when an unpacked copy exists), and that place becomes one of the blob's origins
//! (`BlobCache::add_origin`). Deduplication across registries and repositories is
//! traded away on purpose: the second place pays one download per blob, once.
//!
//! A proof holds for one (project, registry, repository, digest) for a short time,
//! so that a cached redeploy costs one round of parallel `HEAD`s at most; new or
//! removed credentials drop the project's proofs at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_registry::{blob, RegistryError, Session};
use berth_types::Digest;

use crate::cache::BlobCache;

/// How long a proof holds.
pub const PROOF_TTL: Duration = Duration::from_secs(300);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    project: String,
    /// `registry-base/repository`: where the proof was made.
    place: String,
    digest: Digest,
}

/// The proofs this replica holds.
#[derive(Debug)]
pub struct Proofs {
    ttl: Duration,
    proven: Mutex<HashMap<Key, Instant>>,
}

impl Default for Proofs {
    fn default() -> Self {
        Proofs::new(PROOF_TTL)
    }
}

impl Proofs {
    pub fn new(ttl: Duration) -> Self {
        Proofs {
            ttl,
            proven: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Instant>> {
        self.proven.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops every proof of `project` (its credentials changed or went).
    pub fn forget_project(&self, project: &str) {
        self.map().retain(|k, _| k.project != project);
    }

    /// How many proofs are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One project's access, through one session.
#[derive(Clone, Copy)]
pub struct Access<'a> {
    pub proofs: &'a Proofs,
    pub project: &'a str,
}

/// What a project may do with bytes the cache holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// Its place proved access to bytes downloaded from there: use them.
    Proven,
    /// Its place is not one the bytes came from: download and hash them first.
    Download,
}

/// Where a session pulls from: its registry's API base and the repository. An
/// origin is recorded per repository, not per host: a host may route repositories
/// to different backends (a proxy, a path-routed gateway), and one of them lying
/// must not vouch for another's bytes.
pub fn place(s: &Session<'_>) -> String {
    let t = s.target();
    format!("{}{}", t.base, t.repository)
}

impl Access<'_> {
    fn key(&self, s: &Session<'_>, digest: &Digest) -> Key {
        Key {
            project: self.project.to_owned(),
            place: place(s),
            digest: digest.clone(),
        }
    }

    fn is_proven(&self, s: &Session<'_>, digest: &Digest) -> bool {
        let key = self.key(s, digest);
        let mut map = self.proofs.map();
        match map.get(&key) {
            Some(at) if at.elapsed() < self.proofs.ttl => true,
            Some(_) => {
                map.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Records that the registry served `digest` to this session and the bytes
    /// matched it (a verified download): its place becomes an origin of the blob.
    pub fn downloaded(
        &self,
        s: &Session<'_>,
        cache: &BlobCache,
        digest: &Digest,
    ) -> std::io::Result<()> {
        cache.add_origin(digest, &place(s))?;
        let key = self.key(s, digest);
        self.proofs.map().insert(key, Instant::now());
        Ok(())
    }

    /// Whether this project may use the cached bytes of `digest`: proven (a recent
    /// proof, or a `HEAD` answered by a place the bytes came from), or to be
    /// downloaded and hashed first. An error is the origin's refusal.
    pub async fn reuse(
        &self,
        s: &mut Session<'_>,
        cache: &BlobCache,
        digest: &Digest,
    ) -> Result<Reuse, RegistryError> {
        if !cache.came_from(digest, &place(s)) {
            return Ok(Reuse::Download);
        }
        if self.is_proven(s, digest) {
            return Ok(Reuse::Proven);
        }
        blob::prove(s, digest).await?;
        let key = self.key(s, digest);
        self.proofs.map().insert(key, Instant::now());
        Ok(Reuse::Proven)
    }
}
