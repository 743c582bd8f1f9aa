//! `GET /metrics` and the middleware that counts every routed request; the
//! counters themselves are `crate::metrics`.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::metrics::metrics;
use crate::state::AppState;

/// A request's method as a label: one of HTTP's own, else `other`. (A method is
/// any token a client cares to send; axum answers an unknown one 405 on a route
/// that exists.)
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Counts and times every routed request (a `route_layer`, so the route is the
/// pattern, `/v1/projects/{p}/services`, never a name from a path; a request no
/// route matched does not reach it, and would be `unmatched`).
pub async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics().request(method, route, resp.status().as_u16(), started.elapsed());
    resp
}

/// `GET /metrics`. Needs no token (as `/healthz`): it names no project, service or
/// user, only counts.
#[utoipa::path(get, path = "/metrics", security(()), responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text")))]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let counts = match state.store.stats().await {
        Ok(counts) => Some(counts),
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the database did not answer");
            None
        }
    };
    match metrics().render(counts) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_method_label_is_one_of_http_s_own_or_other() {
        for (method, want) in [
            ("GET", "GET"),
            ("OPTIONS", "OPTIONS"),
            ("TRACE", "TRACE"),
            ("get", "other"),
            ("FOO", "other"),
            ("PROPFIND", "other"),
        ] {
            let m = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&m), want, "{method}");
        }
    }
}
