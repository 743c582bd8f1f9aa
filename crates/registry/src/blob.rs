//! Fetching content by digest: manifests (verified here) and blobs (streamed to the
//! caller, who hashes each byte as it arrives). Transient failures are retried:
//! 5xx and dropped connections with exponential backoff, 429 after `Retry-After`.

use std::time::Duration;

use berth_types::Digest;
use reqwest::header::{HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::client::Session;
use crate::error::RegistryError;
use crate::manifest::{classify, content_type, ACCEPT_MANIFESTS, MANIFEST_LIMIT};
use crate::transport::guard::read_limited;

const ATTEMPTS: u32 = 4;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

fn is_transient(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Network(_) | RegistryError::Timeout)
}

/// How long to wait before attempt `n` (1-based) after `resp`, if it is worth retrying.
fn retry_delay(status: StatusCode, retry_after: Option<&str>, n: u32) -> Option<Duration> {
    let backoff = Duration::from_millis(200 * 2u64.pow(n.saturating_sub(1)));
    if status == StatusCode::TOO_MANY_REQUESTS {
        let secs = retry_after.and_then(|v| v.trim().parse::<u64>().ok());
        return Some(
            secs.map(Duration::from_secs)
                .unwrap_or(backoff)
                .min(MAX_RETRY_AFTER),
        );
    }
    status.is_server_error().then_some(backoff)
}

/// GETs `path` with retries; returns the first non-transient answer.
async fn get_with_retries(
    s: &mut Session<'_>,
    path: &str,
    accept: &[&str],
    extra: &HeaderMap,
) -> Result<Response, RegistryError> {
    let mut n = 0;
    loop {
        n += 1;
        match s.send_with(Method::GET, path, accept, extra).await {
            Ok(resp) => {
                let ra = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match retry_delay(resp.status(), ra.as_deref(), n) {
                    Some(delay) if n < ATTEMPTS => {
                        tracing::debug!(status = resp.status().as_u16(), ?delay, "retrying");
                        tokio::time::sleep(delay).await;
                    }
                    _ => return Ok(resp),
                }
            }
            Err(e) if is_transient(&e) && n < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(n - 1))).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Fetches the manifest (or index) `digest` and checks its bytes against it.
pub async fn manifest(
    s: &mut Session<'_>,
    digest: &Digest,
) -> Result<(String, Vec<u8>), RegistryError> {
    let path = format!("/v2/{}/manifests/{digest}", s.target().repository);
    let resp = get_with_retries(s, &path, ACCEPT_MANIFESTS, &HeaderMap::new()).await?;
    if !resp.status().is_success() {
        return Err(classify(s, resp).await);
    }
    let media_type = content_type(&resp);
    let body = read_limited(resp, MANIFEST_LIMIT).await?;
    let actual = Digest::sha256_from_bytes(&Sha256::digest(&body).into());
    if &actual != digest {
        return Err(RegistryError::DigestMismatch {
            expected: digest.clone(),
            actual,
        });
    }
    Ok((media_type, body))
}

/// Asks the registry whether it serves blob `digest` to this session (`HEAD`): the
/// proof of access a project gives before it may use a cached copy of the blob.
/// Reads no byte of the blob.
pub async fn prove(s: &mut Session<'_>, digest: &Digest) -> Result<(), RegistryError> {
    let path = format!("/v2/{}/blobs/{digest}", s.target().repository);
    let mut n = 0;
    loop {
        n += 1;
        let resp = s.send(Method::HEAD, &path, &[]).await;
        let resp = match resp {
            Err(e) if is_transient(&e) && n < ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(n - 1))).await;
                continue;
            }
            other => other?,
        };
        let status = resp.status();
        // A registry on object storage answers with a redirect to it (whose signed
        // URL may refuse a HEAD): the registry sending this session to the content
        // is the proof.
        let base = &s.target().base;
        let redirected = resp.url().host() != base.host()
            || resp.url().port_or_known_default() != base.port_or_known_default();
        if status.is_success() || redirected {
            return Ok(());
        }
        if let Some(delay) = retry_delay(status, None, n).filter(|_| n < ATTEMPTS) {
            tokio::time::sleep(delay).await;
            continue;
        }
        return Err(RegistryError::NoAccess {
            digest: digest.clone(),
            status: status.as_u16(),
        });
    }
}

/// Opens blob `digest` for streaming, from byte `offset` on (`Range`, to resume a
/// download that broke; 0 for the whole blob). The caller must hash what it reads
/// and compare with `digest` (see the runtime's cache). Returns the answer and how many leading bytes of its body to skip: 0
/// for a 206, `offset` when the registry ignored the range and sent it all.
pub async fn open_at(
    s: &mut Session<'_>,
    digest: &Digest,
    offset: u64,
) -> Result<(Response, u64), RegistryError> {
    let path = format!("/v2/{}/blobs/{digest}", s.target().repository);
    let mut extra = HeaderMap::new();
    if offset > 0 {
        extra.insert(
            RANGE,
            HeaderValue::from_str(&format!("bytes={offset}-")).expect("a valid header"),
        );
    }
    let resp = get_with_retries(s, &path, &[], &extra).await?;
    if !resp.status().is_success() {
        return Err(match classify(s, resp).await {
            RegistryError::Manifest { status, body } => RegistryError::Blob {
                digest: digest.clone(),
                status,
                body,
            },
            other => other,
        });
    }
    let skip = if resp.status() == StatusCode::PARTIAL_CONTENT {
        0
    } else {
        offset
    };
    Ok((resp, skip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays() {
        let d = |s: u16, ra: Option<&str>, n| retry_delay(StatusCode::from_u16(s).unwrap(), ra, n);
        assert_eq!(d(200, None, 1), None);
        assert_eq!(d(404, None, 1), None);
        assert_eq!(d(503, None, 1), Some(Duration::from_millis(200)));
        assert_eq!(d(502, None, 3), Some(Duration::from_millis(800)));
        assert_eq!(d(429, Some("2"), 1), Some(Duration::from_secs(2)));
        assert_eq!(d(429, Some("3600"), 1), Some(MAX_RETRY_AFTER));
        assert_eq!(d(429, None, 2), Some(Duration::from_millis(400)));
    }
}
