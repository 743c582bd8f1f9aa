//! What fetching content by digest shares, whatever the content: GETs retried
//! when the failure is transient (5xx and dropped connections with exponential
//! backoff, 429 after `Retry-After`), and a failed answer read as the error of its
//! step.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};

use crate::client::Session;
use crate::error::RegistryError;
use crate::transport::error::RegistryErrorBody;
use crate::transport::guard::read_limited;

pub(crate) const ATTEMPTS: u32 = 4;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

pub(crate) fn is_transient(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Network(_) | RegistryError::Timeout)
}

/// How long to wait before attempt `n` (1-based) after `resp`, if it is worth retrying.
pub(crate) fn retry_delay(
    status: StatusCode,
    retry_after: Option<&str>,
    n: u32,
) -> Option<Duration> {
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
pub(crate) async fn get_with_retries(
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

/// Turns a failed answer into the error for its step (a blob's caller names the
/// blob: see `blob::open_at`).
pub(crate) async fn classify(s: &Session<'_>, resp: Response) -> RegistryError {
    let status = resp.status().as_u16();
    let body = read_limited(resp, 64 * 1024)
        .await
        .ok()
        .and_then(|b| RegistryErrorBody::parse(&b));
    match status {
        // 403: DENIED, or an expired token (ECR).
        401 | 403 => RegistryError::Unauthorized {
            status,
            body,
            credentials_accepted: s.credentials_accepted(),
        },
        _ => RegistryError::Manifest { status, body },
    }
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
