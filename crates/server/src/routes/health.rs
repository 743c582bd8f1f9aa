use axum::http::StatusCode;

/// 200 once the server is ready (it only listens after setup is done).
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ready")))]
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}
