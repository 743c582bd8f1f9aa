use axum::http::StatusCode;

/// 200 once the server is ready (it only listens after setup is done).
/// Needs no token.
#[utoipa::path(get, path = "/healthz", security(()), responses((status = 200, description = "ready", body = String, content_type = "text/plain")))]
pub async fn healthz() -> (StatusCode, &'static str) {
    (StatusCode::OK, "ok\n")
}

/// The OpenAPI 3 document of this server. Needs no token.
#[utoipa::path(get, path = "/openapi.json", security(()), responses((status = 200, description = "this document", body = Object)))]
pub async fn openapi() -> axum::Json<utoipa::openapi::OpenApi> {
    crate::openapi::document().await
}
