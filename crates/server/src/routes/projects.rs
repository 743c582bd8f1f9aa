use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use berth_api::{AddMember, CreateProject, MemberView, ProjectView};
use berth_store::{MemberRole, NewAudit};
use berth_types::Slug;

use crate::api::{audit_event, membership, parse_slug, require_owner, ApiError, ApiJson, Caller};
use crate::state::AppState;

/// Creates a project; the caller is its owner.
#[utoipa::path(post, path = "/v1/projects", request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, body = berth_api::ErrorBody)))]
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

/// Adds a member (owner only).
#[utoipa::path(post, path = "/v1/projects/{p}/members", request_body = AddMember,
    params(("p" = String, Path, description = "project name")),
    responses((status = 201, body = MemberView), (status = 403, body = berth_api::ErrorBody), (status = 404, body = berth_api::ErrorBody)))]
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
