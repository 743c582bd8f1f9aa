use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_registry::{preflight, Credentials, PreflightReport};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa::ToSchema;

use crate::api::{ApiError, ApiJson, Caller};
use crate::state::AppState;

/// Test Connection: 5 a minute per user, shared by every replica.
pub const PREFLIGHTS_PER_MINUTE: i64 = 5;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreflightRequest {
    pub registry_url: String,
    pub username: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    pub image: String,
}

/// Credentials from optional parts: both or neither.
pub fn credentials(
    username: Option<String>,
    password: Option<SecretString>,
) -> Result<Option<Credentials>, ApiError> {
    match (username, password) {
        (Some(u), Some(p)) => Ok(Some(Credentials::new(u, p))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ApiError::bad_request(
            "missing_field",
            "a username needs a password",
        )),
        (None, Some(_)) => Err(ApiError::bad_request(
            "missing_field",
            "a password needs a username",
        )),
    }
}

/// Runs the preflight for user input (parse errors become an `invalid_url` report).
pub async fn check(
    state: &AppState,
    registry_url: &str,
    image: &str,
    creds: Option<Credentials>,
) -> PreflightReport {
    match preflight::target(&state.registry, registry_url, image) {
        Ok(target) => preflight::run(&state.registry, &target, creds).await,
        Err(report) => *report,
    }
}

/// Runs the registry preflight (ping, token, manifest) within 8 s.
#[utoipa::path(post, path = "/v1/preflight", request_body = PreflightRequest,
    responses((status = 200, description = "the preflight result, ok or not", body = Object),
              (status = 400, body = crate::api::ErrorBody), (status = 429, body = crate::api::ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<PreflightRequest>,
) -> Result<Response, ApiError> {
    let creds = credentials(body.username, body.password)?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let allowed = state
        .store
        .rate_limit_hit(
            &format!("preflight:{}", caller.id),
            now_ms,
            60_000,
            PREFLIGHTS_PER_MINUTE,
        )
        .await?;
    if !allowed {
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("at most {PREFLIGHTS_PER_MINUTE} connection tests a minute; try again shortly"),
        )
        .into_response();
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("60"));
        return Ok(r);
    }
    let report = check(&state, &body.registry_url, &body.image, creds).await;
    Ok(Json(report).into_response())
}
