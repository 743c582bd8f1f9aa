//! Blobs by digest: proven (`HEAD`) or streamed to the caller, who hashes each
//! byte as it arrives, resumed with `Range` where a connection broke. Transient
//! failures are retried (`content`). A part of a blob is read with one `Range`
//! request (`read_range`), for seekable layers.

use std::time::Duration;

use berth_types::Digest;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_RANGE, RANGE};
use reqwest::{Method, Response, StatusCode};

use crate::client::Session;
use crate::content::{classify, get_with_retries, is_transient, retry_delay, ATTEMPTS};
use crate::error::RegistryError;
use crate::transport::guard::read_limited;

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
    let mut extra = HeaderMap::new();
    if offset > 0 {
        extra.insert(
            RANGE,
            HeaderValue::from_str(&format!("bytes={offset}-")).expect("a valid header"),
        );
    }
    let resp = get_blob(s, digest, &extra).await?;
    let skip = if resp.status() == StatusCode::PARTIAL_CONTENT {
        0
    } else {
        offset
    };
    Ok((resp, skip))
}

/// Reads bytes `[offset, offset + len)` of blob `digest` in one `Range` request:
/// for readers of seekable layers (eStargz), who verify what they read against
/// digests of their own. An answer that is not exactly that range (a registry
/// ignoring `Range` and sending the whole blob, another range, fewer or more
/// bytes) is a protocol error: the whole blob is never read for a part of it.
pub async fn read_range(
    s: &mut Session<'_>,
    digest: &Digest,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, RegistryError> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let last = offset
        .checked_add(len - 1)
        .ok_or_else(|| RegistryError::Protocol(format!("range {offset}+{len} overflows")))?;
    let mut extra = HeaderMap::new();
    extra.insert(
        RANGE,
        HeaderValue::from_str(&format!("bytes={offset}-{last}")).expect("a valid header"),
    );
    let resp = get_blob(s, digest, &extra).await?;
    let answered = resp
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes "))
        .and_then(|v| v.split_once('/'))
        .map(|(r, _)| r.to_owned());
    if resp.status() != StatusCode::PARTIAL_CONTENT
        || answered.as_deref() != Some(&format!("{offset}-{last}"))
    {
        return Err(RegistryError::Protocol(format!(
            "blob {digest}: asked for bytes {offset}-{last}, answered HTTP {} with range {answered:?}",
            resp.status().as_u16()
        )));
    }
    let limit = usize::try_from(len)
        .map_err(|_| RegistryError::Protocol(format!("range of {len} bytes is too large")))?;
    let body = read_limited(resp, limit).await?;
    if body.len() != limit {
        return Err(RegistryError::Protocol(format!(
            "blob {digest}: bytes {offset}-{last} ended after {} bytes",
            body.len()
        )));
    }
    Ok(body)
}

/// GETs blob `digest` (with `extra` headers, e.g. `Range`); a failed answer is
/// the blob's error.
async fn get_blob(
    s: &mut Session<'_>,
    digest: &Digest,
    extra: &HeaderMap,
) -> Result<Response, RegistryError> {
    let path = format!("/v2/{}/blobs/{digest}", s.target().repository);
    let resp = get_with_retries(s, &path, &[], extra).await?;
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
    Ok(resp)
}
