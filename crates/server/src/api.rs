//! What every route shares: the error shape, the JSON extractor that answers bad
//! bodies with that shape, the caller extractor, and project lookups that answer 404
//! for anything outside the caller's projects.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::{ErrorBody, ErrorCode};
use berth_store::{MemberRole, Membership, NewAudit, Project, StoreError, User};
use secrecy::SecretString;
use serde::de::DeserializeOwned;

use crate::state::AppState;
use crate::tokens;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    /// `Retry-After` seconds, for a 429.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody {
                code,
                message: message.into(),
                preflight: None,
            },
            retry_after: None,
        }
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// `429 rate_limited`, with when to try again (`Retry-After`).
    pub fn rate_limited(message: impl Into<String>, retry_after_seconds: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            message,
        )
        .retry_after(retry_after_seconds)
    }

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{what} not found"),
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    pub fn service_terminated() -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorCode::ServiceTerminated,
            "the service is terminated",
        )
    }

    /// A store write refused because the service was terminated meanwhile.
    pub fn terminated_or(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::service_terminated(),
            other => other.into(),
        }
    }

    pub fn preflight_failed(report: berth_registry::PreflightReport) -> Self {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: ErrorBody {
                code: ErrorCode::PreflightFailed,
                message: format!(
                    "{} Nothing was saved; fix the problem, or save with save_without_verifying: true.",
                    report.message
                ),
                preflight: Some(Box::new(report)),
            },
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(self.body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Conflict,
                format!("{what} already exists"),
            ),
            StoreError::NotFound => ApiError::not_found("resource"),
            e @ StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; see the server log",
                )
            }
            StoreError::Database(msg) => {
                tracing::error!(error = %msg, "database error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; see the server log",
                )
            }
        }
    }
}

impl From<berth_vault::VaultError> for ApiError {
    fn from(e: berth_vault::VaultError) -> Self {
        tracing::error!(error = %e, "vault error");
        if let berth_vault::VaultError::SecretStore(_) = e {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::SecretStoreUnavailable,
                "the secret store (AWS Secrets Manager) failed; nothing was changed; see the server log",
            );
        }
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::VaultError,
            "a stored secret could not be used; see the server log",
        )
    }
}

/// `Json<T>` whose rejections are `{code, message}` 400s.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => {
                let status = rejection.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    ErrorCode::TooLarge
                } else {
                    ErrorCode::BadRequest
                };
                // The body text of serde errors may quote input; it never reaches logs,
                // and a client sees only what it sent.
                Err(ApiError::new(
                    if status == StatusCode::PAYLOAD_TOO_LARGE {
                        status
                    } else {
                        StatusCode::BAD_REQUEST
                    },
                    code,
                    rejection.body_text(),
                ))
            }
        }
    }
}

/// The authenticated caller.
pub struct Caller(pub User);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "a valid API token is required (Authorization: Bearer <token>)",
            )
        };
        let token = bearer(parts).ok_or_else(unauthorized)?;
        let hash = tokens::hash(&token);
        match state.store.user_by_token_hash(&hash).await? {
            Some(user) => Ok(Caller(user)),
            None => Err(unauthorized()),
        }
    }
}

/// The request's `Authorization: Bearer` token, if it has one.
pub fn bearer(parts: &Parts) -> Option<SecretString> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(|t| SecretString::from(t.trim().to_owned()))
}

/// A project, service or user name from a request body.
pub fn parse_slug(name: &str) -> Result<berth_types::Slug, ApiError> {
    name.parse().map_err(|e: berth_types::NameError| {
        ApiError::bad_request(ErrorCode::InvalidName, e.to_string())
    })
}

/// The caller's membership of project `name`, or 404 (never 403: no existence leak).
pub async fn membership(
    state: &AppState,
    caller: &User,
    name: &str,
) -> Result<Membership, ApiError> {
    state
        .store
        .project_for_member(name, caller)
        .await?
        .ok_or_else(|| ApiError::not_found("project"))
}

pub fn require_owner(m: &Membership) -> Result<(), ApiError> {
    if m.role == MemberRole::Owner {
        Ok(())
    } else {
        Err(ApiError::forbidden("only the project's owner may do this"))
    }
}

/// The audit event of a change to `project` (and `service`) made by `caller`.
pub fn audit_event(
    caller: &User,
    action: &'static str,
    project: &Project,
    service: Option<&str>,
    metadata: serde_json::Value,
) -> NewAudit {
    NewAudit {
        actor: caller.name.clone(),
        action,
        project: Some(project.name.clone()),
        service: service.map(str::to_owned),
        metadata,
    }
}

/// A credential refused for its kind's needs is the client's to fix.
impl From<crate::kinds::KindError> for ApiError {
    fn from(e: crate::kinds::KindError) -> Self {
        // The kinds' codes are public codes; one they would invent is a bug here.
        let code = e.code.parse().unwrap_or_else(|unknown| {
            tracing::error!(error = %unknown, "a credential kind's error code");
            ErrorCode::BadRequest
        });
        ApiError::bad_request(code, e.message)
    }
}
