//! Step 3: resolve a manifest to its digest.
//!
//! `HEAD` with every manifest type in Accept. HEAD answers carry no body, so a
//! non-2xx is repeated as GET to read the registry's error code. Without a
//! `Docker-Content-Digest` header (ECR, Artifactory, Red Hat), or for an index whose
//! platforms we want, the manifest is fetched and hashed.

use berth_types::Digest;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response};
use sha2::{Digest as _, Sha256};

use crate::client::Session;
use crate::content::{classify, get_with_retries};
use crate::error::RegistryError;
use crate::transport::guard::read_limited;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const ACCEPT_MANIFESTS: &[&str] = &[
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];
/// distribution refuses manifests above 4 MiB; so do we.
pub(crate) const MANIFEST_LIMIT: usize = 4 * 1024 * 1024;

/// A manifest resolved to a digest.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub status: u16,
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// For an index: every `os/arch[/variant]` it holds (attestations left out).
    pub platforms: Vec<String>,
    /// For an index: the manifest for the host platform, if it has one.
    pub platform_manifest: Option<Digest>,
    /// The manifest bytes, when they were fetched.
    pub body: Option<Vec<u8>>,
    /// The registry's pull budget, when it says (Docker Hub does on every manifest
    /// answer, and a HEAD does not count against it).
    pub rate_limit: Option<RateLimit>,
}

/// A registry's pull budget, from `ratelimit-limit` and `ratelimit-remaining`
/// (`100;w=21600`: 100 pulls per 21600 s).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    /// The window, in seconds, when the registry gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_s: Option<u64>,
}

impl RateLimit {
    /// From an answer's headers, when it carries both.
    pub fn from_headers(headers: &reqwest::header::HeaderMap) -> Option<RateLimit> {
        let read = |name: &str| {
            let v = headers.get(name)?.to_str().ok()?;
            let mut parts = v.split(';');
            let n = parts.next()?.trim().parse::<u64>().ok()?;
            let w = parts
                .filter_map(|p| p.trim().strip_prefix("w="))
                .find_map(|w| w.parse::<u64>().ok());
            Some((n, w))
        };
        let (limit, window_s) = read("ratelimit-limit")?;
        let (remaining, w2) = read("ratelimit-remaining")?;
        Some(RateLimit {
            limit,
            remaining,
            window_s: window_s.or(w2),
        })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {} pulls left", self.remaining, self.limit)?;
        match self.window_s {
            Some(w) if w % 3600 == 0 => write!(f, " per {} h", w / 3600),
            Some(w) => write!(f, " per {w} s"),
            None => Ok(()),
        }
    }
}

impl Resolved {
    pub fn is_index(&self) -> bool {
        is_index(&self.media_type)
    }
}

fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// The platform berth runs images on: this machine's, as OCI names it.
pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "x86" => "386",
        other => other,
    };
    format!("linux/{arch}")
}

/// Resolves `reference` (a tag or digest) in the session's repository.
#[tracing::instrument(skip_all, fields(reference = %reference))]
pub async fn resolve(s: &mut Session<'_>, reference: &str) -> Result<Resolved, RegistryError> {
    let path = format!("/v2/{}/manifests/{}", s.target().repository, reference);
    let head = s.send(Method::HEAD, &path, ACCEPT_MANIFESTS).await?;
    if !head.status().is_success() {
        // HEAD errors have no body: ask again with GET to learn the registry's code.
        let get = s.send(Method::GET, &path, ACCEPT_MANIFESTS).await?;
        if get.status().is_success() {
            return from_body(get, reference).await;
        }
        return Err(classify(s, get).await);
    }
    let header_digest = head
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<Digest>().ok());
    let media_type = content_type(&head);
    let rate_limit = RateLimit::from_headers(head.headers());
    match header_digest {
        Some(digest) if !is_index(&media_type) => Ok(Resolved {
            status: head.status().as_u16(),
            digest,
            media_type,
            // The header, not `content_length()`: a HEAD's body is empty, so
            // reqwest's length of it is 0.
            size: head
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            platforms: Vec::new(),
            platform_manifest: None,
            body: None,
            rate_limit,
        }),
        _ => {
            let get = s.send(Method::GET, &path, ACCEPT_MANIFESTS).await?;
            if !get.status().is_success() {
                return Err(classify(s, get).await);
            }
            let mut resolved = from_body(get, reference).await?;
            resolved.rate_limit = rate_limit.or(resolved.rate_limit);
            if let Some(h) = header_digest {
                if h != resolved.digest {
                    return Err(RegistryError::DigestMismatch {
                        expected: h,
                        actual: resolved.digest,
                    });
                }
            }
            Ok(resolved)
        }
    }
}

pub(crate) fn content_type(r: &Response) -> String {
    r.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_owned())
        .unwrap_or_default()
}

/// Hashes a fetched manifest; checks it against a digest reference; reads an index's
/// platforms.
async fn from_body(resp: Response, reference: &str) -> Result<Resolved, RegistryError> {
    let status = resp.status().as_u16();
    let mut media_type = content_type(&resp);
    let rate_limit = RateLimit::from_headers(resp.headers());
    let body = read_limited(resp, MANIFEST_LIMIT).await?;
    let digest = Digest::sha256_from_bytes(&Sha256::digest(&body).into());
    if let Ok(wanted) = reference.parse::<Digest>() {
        if wanted.algorithm() == "sha256" && wanted != digest {
            return Err(RegistryError::DigestMismatch {
                expected: wanted,
                actual: digest,
            });
        }
    }
    media_type = sniff_media_type(media_type, &body);
    let (platforms, platform_manifest) = if is_index(&media_type) {
        index_platforms(&body)?
    } else {
        (Vec::new(), None)
    };
    Ok(Resolved {
        status,
        size: body.len() as u64,
        digest,
        media_type,
        platforms,
        platform_manifest,
        body: Some(body),
        rate_limit,
    })
}

/// The media type a manifest answer carries, or, when the registry sent no useful
/// `Content-Type` (some send none, or `application/json`), the one its body names.
fn sniff_media_type(content_type: String, body: &[u8]) -> String {
    if !content_type.is_empty() && content_type != "application/json" {
        return content_type;
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        })
        .unwrap_or(content_type)
}

/// The manifest of the host platform: what a pull unpacks.
#[derive(Clone, Debug)]
pub struct PlatformManifest {
    /// Its own digest (the index's entry for an index, else the resolved digest).
    pub digest: Digest,
    pub manifest: oci_spec::image::ImageManifest,
}

/// The host platform's manifest of what `resolved` names: its body when resolving
/// fetched it (nothing is fetched twice), the index's entry for this platform
/// otherwise (fetched by digest and checked against it).
pub async fn platform(
    s: &mut Session<'_>,
    resolved: &Resolved,
) -> Result<PlatformManifest, RegistryError> {
    let (mut digest, mut media_type, mut body) = match &resolved.body {
        Some(b) => (
            resolved.digest.clone(),
            resolved.media_type.clone(),
            b.clone(),
        ),
        None => {
            let (ct, b) = by_digest(s, &resolved.digest).await?;
            (resolved.digest.clone(), sniff_media_type(ct, &b), b)
        }
    };
    if is_index(&media_type) {
        let (available, chosen) = index_platforms(&body)?;
        let Some(chosen) = chosen else {
            return Err(RegistryError::NoPlatform {
                wanted: host_platform(),
                available,
            });
        };
        let (ct, b) = by_digest(s, &chosen).await?;
        media_type = sniff_media_type(ct, &b);
        if is_index(&media_type) {
            return Err(RegistryError::Protocol(
                "an image index names another index for this platform".into(),
            ));
        }
        (digest, body) = (chosen, b);
    }
    let manifest = serde_json::from_slice(&body)
        .map_err(|e| RegistryError::Protocol(format!("the image manifest is not valid: {e}")))?;
    Ok(PlatformManifest { digest, manifest })
}

/// An index's platforms (`os/arch[/variant]`, attestation manifests left out) and
/// the entry for the host platform, if it has one: the one place a platform is
/// chosen.
fn index_platforms(body: &[u8]) -> Result<(Vec<String>, Option<Digest>), RegistryError> {
    let index: oci_spec::image::ImageIndex = serde_json::from_slice(body)
        .map_err(|e| RegistryError::Protocol(format!("the image index is not valid: {e}")))?;
    let host = host_platform();
    let mut platforms = Vec::new();
    let mut chosen = None;
    for m in index.manifests() {
        let Some(p) = m.platform() else { continue };
        let mut name = format!("{}/{}", p.os(), p.architecture());
        if name.contains("unknown") {
            continue; // buildx attestation manifests
        }
        if name == host && chosen.is_none() {
            chosen = m.digest().to_string().parse().ok();
        }
        if let Some(v) = p.variant() {
            name = format!("{name}/{v}");
        }
        if !platforms.contains(&name) {
            platforms.push(name);
        }
    }
    Ok((platforms, chosen))
}

/// Fetches the manifest (or index) `digest` and checks its bytes against it.
pub async fn by_digest(
    s: &mut Session<'_>,
    digest: &Digest,
) -> Result<(String, Vec<u8>), RegistryError> {
    let path = format!("/v2/{}/manifests/{digest}", s.target().repository);
    let resp = get_with_retries(
        s,
        &path,
        ACCEPT_MANIFESTS,
        &reqwest::header::HeaderMap::new(),
    )
    .await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_platforms_skip_attestations() {
        let idx = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "size": 1, "digest": format!("sha256:{}", "a".repeat(64)), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": OCI_MANIFEST, "size": 1, "digest": format!("sha256:{}", "b".repeat(64)), "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": OCI_MANIFEST, "size": 1, "digest": format!("sha256:{}", "c".repeat(64)), "platform": {"os": "unknown", "architecture": "unknown"}}
            ]
        });
        let (p, chosen) = index_platforms(idx.to_string().as_bytes()).unwrap();
        assert_eq!(p, vec!["linux/arm64/v8", "linux/amd64"]);
        if host_platform() == "linux/amd64" {
            assert_eq!(
                chosen.unwrap().to_string(),
                format!("sha256:{}", "b".repeat(64))
            );
        }
    }
}
