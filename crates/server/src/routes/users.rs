use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use berth_api::{CreateUser, CreatedUser};
use berth_store::{NewAudit, UserRole};
use berth_types::Slug;
use secrecy::ExposeSecret;

use crate::api::{parse_slug, ApiError, ApiJson, Caller};
use crate::state::AppState;
use crate::tokens;

/// Creates a user (admin only) and returns its token once.
#[utoipa::path(post, path = "/v1/users", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 403, body = berth_api::ErrorBody), (status = 409, body = berth_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<CreateUser>,
) -> Result<(StatusCode, Json<CreatedUser>), ApiError> {
    if caller.role != UserRole::Admin {
        return Err(ApiError::forbidden("only an admin may create users"));
    }
    let name: Slug = parse_slug(&body.name)?;
    let token = tokens::generate();
    let user = state
        .store
        .create_user(
            name.as_str(),
            &tokens::hash(&token),
            UserRole::User,
            NewAudit {
                actor: caller.name.clone(),
                action: "user.create",
                project: None,
                service: None,
                metadata: serde_json::json!({"user": name.as_str()}),
            },
        )
        .await?;
    tracing::info!(user = %user.name, by = %caller.name, "user created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedUser {
            name: user.name,
            token: token.expose_secret().to_owned(),
        }),
    ))
}
