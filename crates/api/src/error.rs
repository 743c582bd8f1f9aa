//! The error body every route answers a failure with, and its stable codes.

use berth_registry::PreflightReport;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The public error codes (`code` of an [`ErrorBody`]), stable: clients branch on
/// them. The preflight's failure codes appear too, for a failure that is the
/// registry's (or AWS's) answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A body that is not the route's JSON.
    BadRequest,
    /// A body over the size limit.
    TooLarge,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    Internal,
    /// AWS Secrets Manager failed; nothing was changed.
    SecretStoreUnavailable,
    /// A stored secret could not be opened.
    VaultError,
    ServiceTerminated,
    RateLimited,
    /// A save whose preflight failed (422, with the report in `preflight`).
    PreflightFailed,
    InvalidName,
    InvalidImage,
    InvalidResources,
    /// A service's port, health path, domain or network that cannot be.
    InvalidSettings,
    /// A domain another service holds (409).
    DomainTaken,
    InvalidExpiry,
    InvalidSince,
    InvalidKind,
    InvalidCredentials,
    MissingField,
    PasswordRequired,
    /// No service of the project holds credentials for what was asked.
    NoCredentials,
    /// Several services hold different credentials for it: name one.
    Ambiguous,
    /// The replica that ran a deployment did not answer.
    ReplicaUnavailable,
    InvalidUrl,
    AuthFailed,
    ManifestNotFound,
    Timeout,
    SsrfBlocked,
    NetworkError,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::Internal,
        ErrorCode::SecretStoreUnavailable,
        ErrorCode::VaultError,
        ErrorCode::ServiceTerminated,
        ErrorCode::RateLimited,
        ErrorCode::PreflightFailed,
        ErrorCode::InvalidName,
        ErrorCode::InvalidImage,
        ErrorCode::InvalidResources,
        ErrorCode::InvalidSettings,
        ErrorCode::DomainTaken,
        ErrorCode::InvalidExpiry,
        ErrorCode::InvalidSince,
        ErrorCode::InvalidKind,
        ErrorCode::InvalidCredentials,
        ErrorCode::MissingField,
        ErrorCode::PasswordRequired,
        ErrorCode::NoCredentials,
        ErrorCode::Ambiguous,
        ErrorCode::ReplicaUnavailable,
        ErrorCode::InvalidUrl,
        ErrorCode::AuthFailed,
        ErrorCode::ManifestNotFound,
        ErrorCode::Timeout,
        ErrorCode::SsrfBlocked,
        ErrorCode::NetworkError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Internal => "internal",
            ErrorCode::SecretStoreUnavailable => "secret_store_unavailable",
            ErrorCode::VaultError => "vault_error",
            ErrorCode::ServiceTerminated => "service_terminated",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::PreflightFailed => "preflight_failed",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidImage => "invalid_image",
            ErrorCode::InvalidResources => "invalid_resources",
            ErrorCode::InvalidSettings => "invalid_settings",
            ErrorCode::DomainTaken => "domain_taken",
            ErrorCode::InvalidExpiry => "invalid_expiry",
            ErrorCode::InvalidSince => "invalid_since",
            ErrorCode::InvalidKind => "invalid_kind",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::PasswordRequired => "password_required",
            ErrorCode::NoCredentials => "no_credentials",
            ErrorCode::Ambiguous => "ambiguous",
            ErrorCode::ReplicaUnavailable => "replica_unavailable",
            ErrorCode::InvalidUrl => "invalid_url",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::ManifestNotFound => "manifest_not_found",
            ErrorCode::Timeout => "timeout",
            ErrorCode::SsrfBlocked => "ssrf_blocked",
            ErrorCode::NetworkError => "network_error",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code no [`ErrorCode`] spells.
#[derive(Debug)]
pub struct UnknownCode(pub String);

impl std::fmt::Display for UnknownCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} is not an API error code", self.0)
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = UnknownCode;
    fn from_str(s: &str) -> Result<Self, UnknownCode> {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownCode(s.to_owned()))
    }
}

/// A failed preflight's code, as the code of the request that needed it.
impl From<berth_registry::Code> for ErrorCode {
    fn from(c: berth_registry::Code) -> Self {
        use berth_registry::Code;
        match c {
            Code::InvalidUrl => ErrorCode::InvalidUrl,
            Code::AuthFailed => ErrorCode::AuthFailed,
            Code::ManifestNotFound => ErrorCode::ManifestNotFound,
            Code::Timeout => ErrorCode::Timeout,
            Code::SsrfBlocked => ErrorCode::SsrfBlocked,
            Code::NetworkError => ErrorCode::NetworkError,
            // Not a failure: a route never answers an error with it.
            Code::Ok => ErrorCode::Internal,
        }
    }
}

/// `{"code": "...", "message": "..."}`, plus the preflight result on a 422.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    #[schema(value_type = String)]
    pub code: ErrorCode,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub preflight: Option<Box<PreflightReport>>,
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_are_spelled_as_serde_spells_them() {
        for c in ErrorCode::ALL {
            let json = serde_json::to_value(c).unwrap();
            assert_eq!(json.as_str(), Some(c.as_str()));
            assert_eq!(c.as_str().parse::<ErrorCode>().unwrap(), *c);
        }
        assert!("teapot".parse::<ErrorCode>().is_err());
    }
}
