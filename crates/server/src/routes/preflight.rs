use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::{ErrorCode, PreflightRequest};
use berth_registry::{preflight, Credentials};
use berth_store::User;
use secrecy::SecretString;

use crate::api::{ApiError, ApiJson, Caller};
use crate::state::AppState;

/// Preflights run on a user's behalf (Test Connection, and the one every save with
/// credentials runs): 5 a minute per user, shared by every replica. One budget, so
/// that no route lets a user try passwords against a third party's registry faster.
pub const PREFLIGHTS_PER_MINUTE: i64 = 5;
const WINDOW_MS: i64 = 60_000;

/// Credentials from optional parts: both or neither.
pub fn credentials(
    username: Option<String>,
    password: Option<SecretString>,
) -> Result<Option<Credentials>, ApiError> {
    match (username, password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::new(u, p))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ApiError::bad_request(
            ErrorCode::MissingField,
            "a username needs a password",
        )),
        (None, Some(_)) => Err(ApiError::bad_request(
            ErrorCode::MissingField,
            "a password needs a username",
        )),
    }
}

/// Counts one preflight against `caller`'s budget, or answers `429 rate_limited`
/// with `Retry-After`.
pub async fn count(state: &AppState, caller: &User) -> Result<(), ApiError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let allowed = state
        .store
        .rate_limit_hit(
            &format!("preflight:{}", caller.id),
            now_ms,
            WINDOW_MS,
            PREFLIGHTS_PER_MINUTE,
        )
        .await?;
    if allowed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        format!("at most {PREFLIGHTS_PER_MINUTE} connection tests a minute (saves with credentials included); try again shortly"),
    )
    .retry_after(WINDOW_MS as u64 / 1000))
}

/// Runs the registry preflight (ping, token, manifest) within 8 s.
#[utoipa::path(post, path = "/v1/preflight", request_body = PreflightRequest,
    responses((status = 200, description = "the preflight result, ok or not", body = Object),
              (status = 400, body = berth_api::ErrorBody), (status = 429, body = berth_api::ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<PreflightRequest>,
) -> Result<Response, ApiError> {
    let creds = credentials(body.username, body.password)?;
    count(&state, &caller).await?;
    let report = match preflight::parse(&body.registry_url, &body.image) {
        Ok((url, image)) => crate::checks::preflight(&state.registry, &url, &image, creds).await,
        Err(report) => *report,
    };
    Ok(Json(report).into_response())
}
