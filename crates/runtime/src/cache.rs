//! A content-addressed blob cache under the data dir, shared by all deployments:
//! `ROOT/sha256/<hex>`. A blob enters only through a [`BlobWriter`], which hashes
//! every byte written and publishes the file (atomic rename) only if the digest
//! matches. **Nothing unverified is ever visible in the cache.**

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

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
}

impl BlobCache {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("sha256"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(BlobCache { root })
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
        })
    }

    /// Removes every blob not in `keep`, and leftover temporary files. Returns how
    /// many files were removed.
    pub fn gc(&self, keep: &HashSet<Digest>) -> io::Result<usize> {
        let mut removed = 0;
        for e in std::fs::read_dir(self.root.join("sha256"))?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let referenced = format!("sha256:{name}")
                .parse::<Digest>()
                .is_ok_and(|d| keep.contains(&d));
            if !referenced {
                std::fs::remove_file(e.path())?;
                removed += 1;
            }
        }
        for e in std::fs::read_dir(self.root.join("tmp"))?.flatten() {
            std::fs::remove_file(e.path())?;
            removed += 1;
        }
        Ok(removed)
    }
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
}

impl BlobWriter {
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), CacheError> {
        self.hasher.update(chunk);
        self.file.write_all(chunk)?;
        self.written += chunk.len() as u64;
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
            return Err(CacheError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.dest)?;
        Ok(self.dest.clone())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Not committed (error, cancelled deploy): leave nothing behind.
        if self.tmp.exists() {
            let _ = std::fs::remove_file(&self.tmp);
        }
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
        assert_eq!(cache.gc(&HashSet::new()).unwrap(), 1);
        assert!(!cache.contains(&d));
    }
}
