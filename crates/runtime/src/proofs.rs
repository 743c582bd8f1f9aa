//! Proofs of access to the shared blob cache. Projects share one cache, and digests
//! are no secret (they appear in logs), so holding a digest proves nothing: a
//! project may use a cached blob, or an image unpacked from such blobs, only after
//! the registry its own deployment names, with its own credentials, said it serves
//! that digest (`HEAD /v2/<repo>/blobs/<digest>`, or the download itself). Kubernetes
//! calls the same rule "ensure secret pulled images"; berth applies it always.
//!
//! A proof holds for one (project, registry, repository, digest) for a short time,
//! so that a cached redeploy costs one round of parallel `HEAD`s at most; new or
//! removed credentials drop the project's proofs at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_registry::{blob, RegistryError, Session};
use berth_types::Digest;

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

impl Access<'_> {
    fn key(&self, s: &Session<'_>, digest: &Digest) -> Key {
        let t = s.target();
        Key {
            project: self.project.to_owned(),
            place: format!("{}{}", t.base, t.repository),
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

    /// Records that the registry served `digest` to this session (a download).
    pub fn record(&self, s: &Session<'_>, digest: &Digest) {
        let key = self.key(s, digest);
        self.proofs.map().insert(key, Instant::now());
    }

    /// Proves access to `digest` unless a recent proof holds; an error is the
    /// registry's refusal.
    pub async fn prove(&self, s: &mut Session<'_>, digest: &Digest) -> Result<(), RegistryError> {
        if self.is_proven(s, digest) {
            return Ok(());
        }
        blob::prove(s, digest).await?;
        self.record(s, digest);
        Ok(())
    }
}
