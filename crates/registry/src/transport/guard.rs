//! The one door to the network: a reqwest client whose every connection goes to an
//! address the [`NetworkPolicy`] allows.
//!
//! - Host names resolve through [`GuardedResolver`], which drops blocked addresses,
//!   so DNS rebinding cannot slip a private address in between check and connect.
//! - IP literals never reach a resolver in reqwest, so [`Transport::send`] checks them
//!   itself, at every hop.
//! - Redirects are followed here, by hand, each hop re-checked, and `Authorization`
//!   is dropped when a redirect leaves the host (ECR sends blobs to S3 by 307).
//! - No proxy: a proxy would resolve the target itself, out of our sight.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, AUTHORIZATION, LOCATION};
use reqwest::{Method, Response, StatusCode};
use url::Url;

use crate::error::RegistryError;
use crate::policy::NetworkPolicy;

const MAX_REDIRECTS: usize = 5;

/// Error a resolver returns when every address of a host is blocked.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to blocked addresses ({addr})")]
pub struct BlockedAddress {
    pub host: String,
    pub addr: IpAddr,
}

#[derive(Debug, thiserror::Error)]
#[error("could not resolve {host}: {reason}")]
pub struct ResolveFailed {
    pub host: String,
    pub reason: String,
}

/// Resolves with the system resolver, then keeps only allowed addresses.
#[derive(Clone)]
pub struct GuardedResolver {
    policy: Arc<NetworkPolicy>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveFailed {
                    host: host.clone(),
                    reason: e.to_string(),
                })?
                .collect();
            let allowed: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| policy.check(a.ip()).is_ok())
                .collect();
            match (allowed.is_empty(), addrs.first()) {
                (false, _) => Ok(Box::new(allowed.into_iter()) as Addrs),
                (true, Some(first)) => {
                    tracing::warn!(host = %host, addr = %first.ip(), "blocked by registry network policy");
                    Err(Box::new(BlockedAddress {
                        host,
                        addr: first.ip(),
                    })
                        as Box<dyn std::error::Error + Send + Sync>)
                }
                (true, None) => Err(Box::new(ResolveFailed {
                    host,
                    reason: "no addresses".into(),
                }) as _),
            }
        })
    }
}

/// The guarded HTTP client. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    client: reqwest::Client,
    policy: Arc<NetworkPolicy>,
}

/// One request, possibly with a body (token POSTs).
pub struct Request {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Option<Vec<u8>>,
    /// Plain HTTP is also allowed to this host (any port): the token service of a
    /// registry that is itself reached over plain HTTP, on the same host.
    pub plain_http_host: Option<String>,
}

impl Transport {
    pub fn new(policy: NetworkPolicy) -> Result<Self, RegistryError> {
        let policy = Arc::new(policy);
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .https_only(false);
        if let Some(pem) = &policy.extra_roots_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                RegistryError::InvalidUrl(format!(
                    "BERTH_REGISTRY_CA_FILE is not a PEM bundle: {e}"
                ))
            })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| RegistryError::Network(format!("cannot build HTTP client: {e}")))?;
        Ok(Transport { client, policy })
    }

    pub fn policy(&self) -> &NetworkPolicy {
        &self.policy
    }

    /// Checks what can be checked before connecting: the scheme against the insecure
    /// list and an IP-literal host against the blocklist.
    pub fn check_url(&self, url: &Url, plain_http_host: Option<&str>) -> Result<(), RegistryError> {
        match url.scheme() {
            "https" => {}
            "http" => {
                let host = url.host_str().unwrap_or_default();
                if !self.policy.is_insecure(host, url.port()) && plain_http_host != Some(host) {
                    return Err(RegistryError::InvalidUrl(format!(
                        "plain HTTP to {} is not allowed; only hosts in BERTH_REGISTRY_INSECURE are reached without TLS",
                        authority(url)
                    )));
                }
            }
            other => {
                return Err(RegistryError::InvalidUrl(format!(
                    "unsupported URL scheme {other:?}"
                )))
            }
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(RegistryError::InvalidUrl("URL has no host".into())),
        };
        self.policy.check(ip).map_err(|addr| {
            tracing::warn!(%addr, "blocked by registry network policy");
            RegistryError::Blocked {
                host: authority(url),
                class: crate::policy::range_class(addr),
            }
        })
    }

    /// Sends a request, following redirects by hand. Returns the final response and
    /// the URL it came from.
    #[tracing::instrument(skip_all, fields(method = %req.method, url = %loggable(&req.url)))]
    pub async fn send(&self, req: Request) -> Result<(Response, Url), RegistryError> {
        let Request {
            mut method,
            mut url,
            mut headers,
            mut body,
            plain_http_host,
        } = req;
        for _ in 0..=MAX_REDIRECTS {
            self.check_url(&url, plain_http_host.as_deref())?;
            let mut rb = self
                .client
                .request(method.clone(), url.clone())
                .headers(headers.clone());
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            let resp = rb.send().await.map_err(|e| classify(&authority(&url), e))?;
            tracing::debug!(status = resp.status().as_u16(), "response");
            let status = resp.status();
            if !status.is_redirection() || status == StatusCode::NOT_MODIFIED {
                return Ok((resp, url));
            }
            let Some(loc) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) else {
                return Ok((resp, url));
            };
            let next = url.join(loc).map_err(|_| {
                RegistryError::Protocol(format!("redirect to an invalid location {loc:?}"))
            })?;
            if next.host() != url.host()
                || next.port_or_known_default() != url.port_or_known_default()
                || next.scheme() != url.scheme()
            {
                headers.remove(AUTHORIZATION);
                // A 307/308 would re-send the body; a token request's body holds the
                // password. It never goes to another host.
                if body.is_some()
                    && matches!(
                        status,
                        StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
                    )
                {
                    return Err(RegistryError::RedirectRefused {
                        from: authority(&url),
                        to: authority(&next),
                    });
                }
            }
            if matches!(status, StatusCode::SEE_OTHER)
                || (matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND)
                    && method == Method::POST)
            {
                method = Method::GET;
                body = None;
            }
            tracing::debug!(to = %loggable(&next), "following redirect");
            url = next;
        }
        Err(RegistryError::TooManyRedirects)
    }
}

/// A URL as logs may show it: no query string (pre-signed blob redirects carry
/// signatures there) and no user info.
pub fn loggable(url: &Url) -> String {
    format!("{}://{}{}", url.scheme(), authority(url), url.path())
}

/// `host[:port]` of a URL, for messages.
pub fn authority(url: &Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => String::new(),
    }
}

/// Reads a response body up to `limit` bytes; more is a protocol error (a hostile
/// server must not make us buffer without end).
pub async fn read_limited(mut resp: Response, limit: usize) -> Result<Vec<u8>, RegistryError> {
    let host = authority(resp.url());
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&host, e))? {
        if out.len() + chunk.len() > limit {
            return Err(RegistryError::Protocol(format!(
                "response from {host} is larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Classifies a reqwest error: a blocked address, a timeout, or another
/// network failure, in words a user can act on. Never includes headers.
pub(crate) fn classify(host: &str, e: reqwest::Error) -> RegistryError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BlockedAddress>() {
            return RegistryError::Blocked {
                host: b.host.clone(),
                class: crate::policy::range_class(b.addr),
            };
        }
        if let Some(r) = s.downcast_ref::<ResolveFailed>() {
            return RegistryError::Network(format!("could not resolve {}: {}", r.host, r.reason));
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return RegistryError::Network(format!("{host} refused the connection"));
            }
        }
        source = s.source();
    }
    if e.is_timeout() {
        return RegistryError::Timeout;
    }
    // reqwest's Display names the URL (never headers); walk to the innermost cause
    // for something readable, e.g. a TLS certificate complaint.
    let mut innermost = e.to_string();
    let mut s = std::error::Error::source(&e);
    while let Some(x) = s {
        innermost = x.to_string();
        s = x.source();
    }
    if e.is_connect() {
        RegistryError::Network(format!("could not connect to {host}: {innermost}"))
    } else {
        RegistryError::Network(format!("request to {host} failed: {innermost}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_urls_carry_no_query_and_no_user_info() {
        let u = Url::parse("https://user:pw@bucket.s3.amazonaws.com:8443/blobs/x?X-Amz-Signature=abc&X-Amz-Credential=AKIA").unwrap();
        let l = loggable(&u);
        assert_eq!(l, "https://bucket.s3.amazonaws.com:8443/blobs/x");
        for secret in ["Signature", "abc", "AKIA", "pw", "user"] {
            assert!(!l.contains(secret), "{l}");
        }
    }
}
