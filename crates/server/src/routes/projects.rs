use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use berth_store::{MemberRole, NewAudit};
use berth_types::Slug;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{audit_event, membership, parse_slug, require_owner, ApiError, ApiJson, Caller};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// A slug: `[a-z0-9][a-z0-9-]{0,62}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63)]
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectView {
    pub name: String,
    pub created_at: String,
    /// The caller's role: `owner` or `member`.
    pub role: String,
    /// The external id berth assumes an ECR credential's role with for this
    /// project: require it (`sts:ExternalId`) in the role's trust policy.
    pub aws_external_id: String,
}

/// Creates a project; the caller is its owner.
#[utoipa::path(post, path = "/v1/projects", request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, body = crate::api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<ProjectView>), ApiError> {
    let name: Slug = parse_slug(&body.name)?;
    let project = state
        .store
        .create_project(
            name.as_str(),
            &caller,
            NewAudit {
                actor: caller.name.clone(),
                action: "project.create",
                project: Some(name.to_string()),
                service: None,
                metadata: serde_json::json!({}),
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ProjectView {
            aws_external_id: berth_vault::ecr::external_id(project.id.as_str()),
            name: project.name,
            created_at: project.created_at,
            role: "owner".into(),
        }),
    ))
}

/// The projects the caller is a member of, by name, with the caller's role in each.
#[utoipa::path(get, path = "/v1/projects",
    responses((status = 200, body = [ProjectView])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Vec<ProjectView>>, ApiError> {
    let projects = state.store.projects_of(&caller).await?;
    Ok(Json(
        projects
            .into_iter()
            .map(|m| ProjectView {
                aws_external_id: berth_vault::ecr::external_id(m.project.id.as_str()),
                name: m.project.name,
                created_at: m.project.created_at,
                role: match m.role {
                    MemberRole::Owner => "owner",
                    MemberRole::Member => "member",
                }
                .into(),
            })
            .collect(),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    pub project: String,
    pub user: String,
    pub role: String,
}

/// Adds a member (owner only).
#[utoipa::path(post, path = "/v1/projects/{p}/members", request_body = AddMember,
    params(("p" = String, Path, description = "project name")),
    responses((status = 201, body = MemberView), (status = 403, body = crate::api::ErrorBody), (status = 404, body = crate::api::ErrorBody)))]
pub async fn add_member(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(p): Path<String>,
    ApiJson(body): ApiJson<AddMember>,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    let m = membership(&state, &caller, &p).await?;
    require_owner(&m)?;
    let user = state
        .store
        .user_by_name(&body.user)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    state
        .store
        .add_member(
            &m.project,
            &user,
            audit_event(
                &caller,
                "project.member.add",
                &m.project,
                None,
                serde_json::json!({"user": user.name}),
            ),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(MemberView {
            project: m.project.name,
            user: user.name,
            role: "member".into(),
        }),
    ))
}
