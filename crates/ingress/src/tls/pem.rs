//! Certificates from PEM files: `<name>.crt` (the chain, leaf first) beside
//! `<name>.key` (its private key, PKCS#8, PKCS#1 or SEC1). The names served are
//! the leaf's own (subjectAltName), whatever the file is called.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use tokio::sync::watch;

use super::{x509, Certificate, Certificates, TlsError};

/// Every `<name>.crt` with its `<name>.key` in `dir`, sorted by file name (so a
/// later file wins a name two files share). A missing directory is empty.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<Certificate>, TlsError> {
    load_each(dir)?.into_iter().collect()
}

/// Reads `dir` again every `every` until `shutdown`: a pair a renewal replaced
/// is served from the next read; one that does not load (caught half-written)
/// leaves what it replaces served and is read again the next time.
pub(crate) async fn follow(
    dir: PathBuf,
    certs: Arc<Certificates>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let each = match load_each(&dir) {
            Ok(each) => each,
            Err(e) => {
                tracing::warn!(error = %e, "certificate directory not read");
                continue;
            }
        };
        for pair in each {
            match pair {
                Ok(c) => certs.insert(c),
                Err(e) => tracing::warn!(error = %e, "certificate not loaded"),
            }
        }
    }
}

/// Each pair in `dir` loaded on its own (as [`load_dir`] orders them).
fn load_each(dir: &Path) -> Result<Vec<Result<Certificate, TlsError>>, TlsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(TlsError::Read {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let mut crts: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    crts.sort();
    Ok(crts
        .iter()
        .map(|crt| load_pair(crt, &crt.with_extension("key")))
        .collect())
}

/// One chain and its key.
pub(crate) fn load_pair(crt: &Path, key: &Path) -> Result<Certificate, TlsError> {
    let chain_pem = std::fs::read(crt).map_err(|source| TlsError::Read {
        path: crt.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key).map_err(|source| TlsError::Read {
        path: key.to_owned(),
        source,
    })?;
    parse(&chain_pem, &key_pem).map_err(|reason| TlsError::Invalid {
        path: crt.to_owned(),
        reason,
    })
}

/// A chain (PEM, leaf first) and its key (PEM) as a servable certificate.
pub(crate) fn parse(chain_pem: &[u8], key_pem: &[u8]) -> Result<Certificate, String> {
    let chain = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    let leaf = chain.first().ok_or("no certificate in the file")?;
    let (names, not_before, not_after) = x509::read(leaf)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("key PEM: {e}"))?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| format!("key: {e}"))?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match()
        .map_err(|e| format!("key and certificate: {e}"))?;
    Ok(Certificate {
        key: Arc::new(key),
        names: names.into_iter().map(|n| n.to_ascii_lowercase()).collect(),
        not_before,
        not_after,
    })
}

/// Writes a file only its owner can read (a key), replacing it whole: written
/// beside it, then renamed over it.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
