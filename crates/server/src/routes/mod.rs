//! One file per resource. [`router`] assembles them.

pub mod audit;
pub mod deployments;
pub mod health;
pub mod metrics;
pub mod preflight;
pub mod project_tokens;
pub mod projects;
pub mod run_settings;
pub mod service_settings;
pub mod services;
pub mod users;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;

use crate::state::AppState;

/// Request bodies are small JSON documents.
const BODY_LIMIT: usize = 64 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::scrape))
        .route("/openapi.json", get(crate::openapi::document))
        .route("/v1/users", post(users::create))
        .route("/v1/projects", post(projects::create).get(projects::list))
        .route("/v1/projects/{p}/members", post(projects::add_member))
        .route(
            "/v1/projects/{p}/tokens",
            post(project_tokens::create).get(project_tokens::list),
        )
        .route(
            "/v1/projects/{p}/tokens/{name}",
            axum::routing::delete(project_tokens::revoke),
        )
        .route("/v1/registry-credentials", post(project_tokens::read))
        .route("/v1/preflight", post(preflight::run))
        .route(
            "/v1/projects/{p}/services",
            post(services::create).get(services::list),
        )
        .route(
            "/v1/projects/{p}/services/{s}",
            get(services::show)
                .put(services::update)
                .delete(services::terminate),
        )
        .route(
            "/v1/projects/{p}/services/{s}/registry",
            put(services::put_registry).delete(services::remove_registry),
        )
        .route(
            "/v1/projects/{p}/services/{s}/deployments",
            post(deployments::create).get(deployments::list),
        )
        .route(
            "/v1/projects/{p}/services/{s}/deployments/{id}",
            get(deployments::show),
        )
        .route(
            "/v1/projects/{p}/services/{s}/deployments/{id}/logs",
            get(deployments::logs),
        )
        .route("/v1/projects/{p}/audit-events", get(audit::list))
        .merge(crate::dashboard::router())
        .route_layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}
