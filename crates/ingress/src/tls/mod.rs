//! TLS on the ingress: certificates by server name (SNI), from a directory of PEM
//! files ([`pem`]) or issued by an ACME CA ([`acme`]), whose HTTP-01 answers the
//! plain listener serves ([`Challenges`]).

pub mod acme;
pub(crate) mod pem;
mod x509;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::host::Host;

/// Why a certificate could not be loaded or issued.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("ACME: {0}")]
    Acme(String),
}

/// A certificate chain and its key, as the TLS listener serves it.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    /// The DNS names of the leaf (its subjectAltName), lowercase; `*.` for a wildcard.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Certificate {
    /// Whether it should be renewed now: a third of its lifetime or less is left.
    pub fn wants_renewal(&self, now: SystemTime) -> bool {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        match self.not_after.duration_since(now) {
            Ok(left) => left <= life / 3,
            Err(_) => true,
        }
    }
}

/// Certificates by host name, which the TLS listener picks from by SNI: the exact
/// name first, then a wildcard one label up (`*.example.com`).
#[derive(Debug, Default)]
pub struct Certificates {
    by_name: RwLock<HashMap<String, Arc<Certificate>>>,
}

impl Certificates {
    pub fn new() -> Certificates {
        Certificates::default()
    }

    /// Serves `cert` for each of its names (replacing what served them).
    pub fn insert(&self, cert: Certificate) {
        let cert = Arc::new(cert);
        let mut map = self.by_name.write().expect("certificates lock");
        for n in &cert.names {
            map.insert(n.clone(), cert.clone());
        }
    }

    /// The certificate served for a name, if any (exact names only).
    pub fn get(&self, host: &Host) -> Option<Arc<Certificate>> {
        self.by_name
            .read()
            .expect("certificates lock")
            .get(host.as_str())
            .cloned()
    }

    fn find(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let host = Host::parse(name).ok()?;
        let map = self.by_name.read().expect("certificates lock");
        if let Some(c) = map.get(host.as_str()) {
            return Some(c.key.clone());
        }
        let (_, parent) = host.as_str().split_once('.')?;
        map.get(&format!("*.{parent}")).map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.find(hello.server_name()?)
    }
}

/// ACME HTTP-01 key authorizations by token, while an order is being validated.
#[derive(Debug, Default)]
pub struct Challenges {
    by_token: RwLock<HashMap<String, String>>,
}

impl Challenges {
    pub(crate) fn get(&self, token: &str) -> Option<String> {
        self.by_token
            .read()
            .expect("challenges lock")
            .get(token)
            .cloned()
    }

    pub(crate) fn insert(&self, token: String, key_authorization: String) {
        self.by_token
            .write()
            .expect("challenges lock")
            .insert(token, key_authorization);
    }

    pub(crate) fn remove(&self, token: &str) {
        self.by_token
            .write()
            .expect("challenges lock")
            .remove(token);
    }
}

/// The server side of TLS: certificates by SNI, ALPN for HTTP/2 and HTTP/1.1.
pub(crate) fn server_config(certs: Arc<Certificates>) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_no_client_auth()
    .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn renewal_is_due_with_a_third_of_the_life_left() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let day = Duration::from_secs(86_400);
        let cert = Certificate {
            key: Arc::new(CertifiedKey::new(
                vec![],
                rustls::crypto::ring::sign::any_supported_type(
                    &rcgen::KeyPair::generate()
                        .unwrap()
                        .serialize_der()
                        .try_into()
                        .unwrap(),
                )
                .unwrap(),
            )),
            names: vec![],
            not_before: start,
            not_after: start + 90 * day,
        };
        assert!(!cert.wants_renewal(start + 59 * day));
        assert!(cert.wants_renewal(start + 60 * day));
        assert!(cert.wants_renewal(start + 91 * day));
    }
}
