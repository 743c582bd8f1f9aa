//! The OpenAPI 3 document, generated from the route annotations.

use axum::Json;
use utoipa::OpenApi;

use crate::routes::{
    audit, deployments, health, metrics, preflight, project_tokens, projects, services, users,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "berth", description = "Run pre-built images from private container registries."),
    paths(
        health::healthz,
        health::readyz,
        metrics::scrape,
        document,
        users::create,
        projects::create,
        projects::list,
        projects::add_member,
        project_tokens::create,
        project_tokens::list,
        project_tokens::revoke,
        project_tokens::read,
        preflight::run,
        services::create,
        services::list,
        services::show,
        services::update,
        services::put_registry,
        services::remove_registry,
        services::terminate,
        deployments::create,
        deployments::list,
        deployments::show,
        deployments::logs,
        audit::list,
    ),
    components(schemas(berth_api::ErrorBody)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 document of this server. Needs no token.
#[utoipa::path(get, path = "/openapi.json", security(()), responses((status = 200, description = "this document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
