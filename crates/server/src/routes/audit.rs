use axum::extract::{Path, Query, State};
use axum::Json;
use berth_api::AuditEventView;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::api::{membership, ApiError, Caller};
use crate::state::AppState;

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Only events of this service.
    pub service: Option<String>,
    /// Events older than this id (paging: pass the last id of the previous page).
    pub before: Option<i64>,
    /// At most this many (default 50, at most 500).
    pub limit: Option<i64>,
}

/// The project's audit events, newest first.
#[utoipa::path(get, path = "/v1/projects/{p}/audit-events",
    params(("p" = String, Path, description = "project name"), AuditQuery),
    responses((status = 200, description = "events, newest first: {id, at, actor, action, project, service, metadata}", body = [AuditEventView]),
              (status = 404, body = berth_api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(p): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Vec<AuditEventView>>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let events = state
        .store
        .audit_events(&m.project, q.service.as_deref(), q.before, limit)
        .await?;
    Ok(Json(
        events.into_iter().map(crate::views::audit_event).collect(),
    ))
}
