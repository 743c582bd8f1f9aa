//! One error enum for the registry crate, a variant per step, each mapping to one
//! stable public code.

use std::fmt;

use berth_types::Digest;
use serde::{Deserialize, Serialize};

use crate::transport::error::RegistryErrorBody;

/// The stable public codes (CONTRACT.md, preflight result).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    Ok,
    InvalidUrl,
    AuthFailed,
    ManifestNotFound,
    Timeout,
    SsrfBlocked,
    NetworkError,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Ok => "ok",
            Code::InvalidUrl => "invalid_url",
            Code::AuthFailed => "auth_failed",
            Code::ManifestNotFound => "manifest_not_found",
            Code::Timeout => "timeout",
            Code::SsrfBlocked => "ssrf_blocked",
            Code::NetworkError => "network_error",
        }
    }
}

impl RegistryError {
    /// The HTTP status the failing answer had, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Ping { status, .. }
            | RegistryError::Token { status, .. }
            | RegistryError::BasicRejected { status }
            | RegistryError::Unauthorized { status, .. }
            | RegistryError::Manifest { status, .. }
            | RegistryError::Blob { status, .. }
            | RegistryError::NoAccess { status, .. } => Some(*status),
            _ => None,
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request to a registry, its token server or a redirect target failed.
/// Messages never contain a password, a token or an `Authorization` value.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry URL or image reference cannot be used (parse, host mismatch, scheme).
    #[error("{0}")]
    InvalidUrl(String),
    /// The network policy refused the address this host resolved to.
    /// The class of range is named, never the address (it would tell a user what
    /// internal names resolve to).
    #[error("{host} resolves to a {class} address, which berth may not connect to; an operator can allow it with BERTH_REGISTRY_ALLOW_PRIVATE")]
    Blocked { host: String, class: &'static str },
    /// The token realm is not acceptable (plain HTTP for an HTTPS registry, bad URL).
    #[error("the registry's token service {realm:?} was refused: {reason}")]
    RealmRejected { realm: String, reason: String },
    #[error("the registry did not answer in time")]
    Timeout,
    /// DNS, TCP, TLS or HTTP-level failure.
    #[error("{0}")]
    Network(String),
    /// `GET /v2/` answered something other than 200 or 401.
    #[error("GET /v2/ answered HTTP {status}: {detail}")]
    Ping { status: u16, detail: String },
    /// A 401 without a challenge we can answer.
    #[error("the registry's authentication challenge could not be used: {0}")]
    Challenge(String),
    /// The token server refused the credentials or failed.
    #[error("the token server answered HTTP {status}{}", fmt_body(.body))]
    Token {
        status: u16,
        body: Option<RegistryErrorBody>,
    },
    /// A Basic-auth registry answered `GET /v2/` with the credentials with this status.
    #[error("the registry refused the Basic credentials (HTTP {status})")]
    BasicRejected { status: u16 },
    /// The registry refused access to the repository (401/403 on the manifest).
    #[error("the registry refused access (HTTP {status}){}", fmt_body(.body))]
    Unauthorized {
        status: u16,
        body: Option<RegistryErrorBody>,
        /// Whether credentials were accepted (a token was issued) before this refusal.
        credentials_accepted: bool,
    },
    /// The manifest request failed for another reason (404 and friends).
    #[error("the manifest request answered HTTP {status}{}", fmt_body(.body))]
    Manifest {
        status: u16,
        body: Option<RegistryErrorBody>,
    },
    /// An index has no manifest for the host platform.
    #[error("the image has no build for {wanted}; it has {}", .available.join(", "))]
    NoPlatform {
        wanted: String,
        available: Vec<String>,
    },
    #[error("content digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("the registry answered with something that is not valid: {0}")]
    Protocol(String),
    #[error("too many redirects")]
    TooManyRedirects,
    /// A blob download failed for another reason than credentials (a 404: the
    /// registry does not have it, whatever a `HEAD` said).
    #[error("the registry answered HTTP {status} for blob {digest}{}", fmt_body(.body))]
    Blob {
        digest: Digest,
        status: u16,
        body: Option<RegistryErrorBody>,
    },
    /// The registry did not prove that it serves this blob to these credentials
    /// (`HEAD` answered neither 200 nor a redirect): a cached copy may not be used.
    #[error("the registry does not serve blob {digest} to these credentials (HEAD answered HTTP {status}), so the cached copy is not used")]
    NoAccess { digest: Digest, status: u16 },
    /// A host other than the registry (reached through a redirect) asked for
    /// credentials: they are only ever sent to the registry they were saved for.
    #[error("{host}, reached through a redirect, asked for credentials; berth sends them only to the registry they were saved for and to the token service its own challenge names")]
    ForeignChallenge { host: String },
    /// A request that carries credentials in its body was redirected to another host.
    #[error("the request to {from} was redirected to {to}; it carries credentials, so it was not sent there")]
    RedirectRefused { from: String, to: String },
}

fn fmt_body(body: &Option<RegistryErrorBody>) -> String {
    match body {
        Some(b) if !b.errors.is_empty() => format!(": {b}"),
        _ => String::new(),
    }
}

impl RegistryError {
    pub fn code(&self) -> Code {
        use RegistryError::*;
        match self {
            InvalidUrl(_) => Code::InvalidUrl,
            Blocked { .. } | RealmRejected { .. } => Code::SsrfBlocked,
            Timeout => Code::Timeout,
            Network(_) | Challenge(_) | Protocol(_) | TooManyRedirects | DigestMismatch { .. } => {
                Code::NetworkError
            }
            Ping { status, .. } if *status >= 500 || *status == 429 => Code::NetworkError,
            Ping { .. } => Code::InvalidUrl,
            Token {
                status: 401 | 403, ..
            } => Code::AuthFailed,
            Token { .. } => Code::NetworkError,
            BasicRejected { status: 401 | 403 } => Code::AuthFailed,
            BasicRejected { .. } => Code::NetworkError,
            Unauthorized { .. } | ForeignChallenge { .. } | RedirectRefused { .. } => {
                Code::AuthFailed
            }
            NoAccess {
                status: 401 | 403, ..
            } => Code::AuthFailed,
            NoAccess { status, .. } if *status >= 500 || *status == 429 => Code::NetworkError,
            NoAccess { .. } => Code::ManifestNotFound,
            Manifest { status: 404, .. } => Code::ManifestNotFound,
            Manifest { body: Some(b), .. }
                if b.has_code(&["MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN"]) =>
            {
                Code::ManifestNotFound
            }
            Manifest { .. } => Code::NetworkError,
            Blob { status, .. } if *status >= 500 || *status == 429 => Code::NetworkError,
            Blob { .. } => Code::ManifestNotFound,
            NoPlatform { .. } => Code::ManifestNotFound,
        }
    }
}
