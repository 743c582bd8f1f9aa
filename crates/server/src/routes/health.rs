use axum::http::StatusCode;

/// 200 once the server is ready (it only listens after setup is done).
/// Needs no token.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "ready", body = String, content_type = "text/plain")))]
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// 200 once the database answers and carries every migration this version
/// needs; 503 with the reason otherwise. Needs no token.
#[utoipa::path(get, path = "/readyz", security(()), responses((status = 200, description = "ready", body = String, content_type = "text/plain"), (status = 503, description = "the database is not reachable or not migrated", body = String, content_type = "text/plain")))]
pub async fn readyz(
    axum::extract::State(state): axum::extract::State<crate::state::AppState>,
) -> (StatusCode, String) {
    match state.store.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
    }
}
