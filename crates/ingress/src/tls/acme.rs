//! Certificates from an ACME CA (RFC 8555) through instant-acme: one certificate
//! per routed host (hosts come and go with services), HTTP-01 answered on the
//! plain listener, the account and each certificate and key kept under a
//! directory (keys 0600), loaded again at start, renewed when a third of the
//! lifetime is left. A host that failed waits before it is tried again (from a
//! minute, doubling up to a day), so a name that does not point here costs the CA
//! little.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType,
    HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::pem::{load_dir, parse, write_private};
use super::{Certificates, Challenges, TlsError};
use crate::host::Host;
use crate::route::RouteTable;

/// Where certificates come from, and where they are kept.
#[derive(Clone, Debug)]
pub struct AcmeConfig {
    /// The CA's directory URL (Let's Encrypt:
    /// `https://acme-v02.api.letsencrypt.org/directory`).
    pub directory_url: String,
    /// Contact URIs for the account (`mailto:ops@example.com`), may be empty.
    pub contact: Vec<String>,
    /// Where the account (`account.json`) and the certificates (`<host>.crt`,
    /// `<host>.key`) are kept. Created 0700 if missing.
    pub dir: PathBuf,
    /// A PEM file of roots to trust for the CA's own HTTPS (a test CA such as
    /// Pebble); `None`: the Web PKI roots.
    pub ca_roots: Option<PathBuf>,
    /// How often to look again when nothing changed (renewals are found then).
    pub check_every: Duration,
}

impl AcmeConfig {
    pub fn new(directory_url: impl Into<String>, dir: impl Into<PathBuf>) -> AcmeConfig {
        AcmeConfig {
            directory_url: directory_url.into(),
            contact: Vec::new(),
            dir: dir.into(),
            ca_roots: None,
            check_every: Duration::from_secs(3600),
        }
    }
}

/// Loads what the directory already holds into `certs` (at start, before the
/// TLS listener takes connections).
pub(crate) fn load(config: &AcmeConfig, certs: &Certificates) -> Result<(), TlsError> {
    for c in load_dir(&config.dir)? {
        certs.insert(c);
    }
    Ok(())
}

/// Follows the route table: orders a certificate for each public host without a
/// fresh one, until `shutdown`.
pub(crate) async fn run(
    config: AcmeConfig,
    table: Arc<RouteTable>,
    certs: Arc<Certificates>,
    challenges: Arc<Challenges>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut changes = table.subscribe();
    let mut account: Option<Account> = None;
    let mut backoff: HashMap<Host, (Instant, Duration)> = HashMap::new();
    loop {
        let now = SystemTime::now();
        for host in table.hosts() {
            let fresh = certs.get(&host).is_some_and(|c| !c.wants_renewal(now));
            let waiting = backoff
                .get(&host)
                .is_some_and(|(at, _)| Instant::now() < *at);
            if fresh || waiting || !host.is_public() {
                continue;
            }
            let issued = async {
                if account.is_none() {
                    account = Some(open_account(&config).await?);
                }
                let account = account.as_ref().expect("opened above");
                issue(account, &host, &challenges, &config.dir).await
            };
            let issued = tokio::select! {
                r = issued => r,
                _ = shutdown.changed() => return,
            };
            match issued {
                Ok(cert) => {
                    tracing::info!(%host, "certificate issued");
                    backoff.remove(&host);
                    certs.insert(cert);
                }
                Err(e) => {
                    let wait = backoff
                        .get(&host)
                        .map_or(Duration::from_secs(60), |(_, w)| {
                            (*w * 2).min(Duration::from_secs(86_400))
                        });
                    tracing::warn!(%host, error = %e, retry_in = ?wait, "certificate not issued");
                    backoff.insert(host.clone(), (Instant::now() + wait, wait));
                }
            }
        }
        let next_retry = backoff
            .values()
            .map(|(at, _)| *at)
            .min()
            .map_or(config.check_every, |at| {
                at.saturating_duration_since(Instant::now())
            });
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(next_retry.min(config.check_every)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The account kept in the directory, or a new one (then kept).
async fn open_account(config: &AcmeConfig) -> Result<Account, TlsError> {
    std::fs::create_dir_all(&config.dir).map_err(|source| TlsError::Read {
        path: config.dir.clone(),
        source,
    })?;
    let path = config.dir.join("account.json");
    let http = || -> Result<Box<dyn HttpClient>, TlsError> {
        Ok(Box::new(AcmeHttp::new(config.ca_roots.as_deref())?))
    };
    if let Ok(saved) = std::fs::read(&path) {
        if let Ok(credentials) = serde_json::from_slice::<AccountCredentials>(&saved) {
            match Account::builder_with_http(http()?)
                .from_credentials(credentials)
                .await
            {
                Ok(account) => return Ok(account),
                Err(e) => tracing::warn!(error = %e, "saved ACME account not usable, creating one"),
            }
        }
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let (account, credentials) = Account::builder_with_http(http()?)
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            config.directory_url.clone(),
            None,
        )
        .await
        .map_err(acme)?;
    let json = serde_json::to_vec(&credentials).map_err(|e| TlsError::Acme(e.to_string()))?;
    write_private(&path, &json).map_err(|source| TlsError::Read { path, source })?;
    Ok(account)
}

/// One order for one host, validated by HTTP-01, the key and chain written to
/// the directory.
async fn issue(
    account: &Account,
    host: &Host,
    challenges: &Challenges,
    dir: &Path,
) -> Result<super::Certificate, TlsError> {
    let identifiers = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(acme)?;
    let mut tokens = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(acme)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(TlsError::Acme(format!("authorization {other:?}"))),
            }
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| TlsError::Acme("no http-01 challenge offered".into()))?;
            challenges.insert(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_owned(),
            );
            tokens.push(challenge.token.clone());
            challenge.set_ready().await.map_err(acme)?;
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retries).await.map_err(acme)?;
        if status != OrderStatus::Ready {
            return Err(TlsError::Acme(format!("order {status:?}")));
        }
        let key = rcgen::KeyPair::generate().map_err(|e| TlsError::Acme(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![host.to_string()])
            .map_err(|e| TlsError::Acme(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params
            .serialize_request(&key)
            .map_err(|e| TlsError::Acme(e.to_string()))?;
        order.finalize_csr(csr.der()).await.map_err(acme)?;
        let chain = order.poll_certificate(&retries).await.map_err(acme)?;
        Ok((chain, key.serialize_pem()))
    }
    .await;
    for t in &tokens {
        challenges.remove(t);
    }
    let (chain, key) = result?;
    let cert = parse(chain.as_bytes(), key.as_bytes()).map_err(TlsError::Acme)?;
    let (crt_path, key_path) = (
        dir.join(format!("{host}.crt")),
        dir.join(format!("{host}.key")),
    );
    // The key first: a chain is never on disk without its key.
    write_private(&key_path, key.as_bytes()).map_err(|source| TlsError::Read {
        path: key_path,
        source,
    })?;
    write_private(&crt_path, chain.as_bytes()).map_err(|source| TlsError::Read {
        path: crt_path,
        source,
    })?;
    Ok(cert)
}

fn acme(e: instant_acme::Error) -> TlsError {
    TlsError::Acme(e.to_string())
}

/// instant-acme's transport: hyper with rustls on ring and the roots we choose
/// (its own default client brings the platform verifier and a second provider).
struct AcmeHttp(Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>);

impl AcmeHttp {
    fn new(ca_roots: Option<&Path>) -> Result<AcmeHttp, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_roots {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| TlsError::Invalid {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                for c in certs {
                    roots.add(c).map_err(|e| TlsError::Invalid {
                        path: path.to_owned(),
                        reason: e.to_string(),
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok(AcmeHttp(
            Client::builder(TokioExecutor::new()).build(connector),
        ))
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>,
    > {
        let fut = self.0.request(req);
        Box::pin(async move {
            fut.await
                .map(BytesResponse::from)
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))
        })
    }
}
