//! Project tokens (owners create them: read the project's registry credentials,
//! nothing else) and the one route they open: the credentials for an image or a
//! registry, as the Docker credential helper and the kubelet credential provider
//! ask. The only route that answers a secret; every use is in the audit log.
//! A token may expire; each has a budget of reads a minute.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use berth_api::{
    CreateToken, CredentialsAnswer, CredentialsRequest, ErrorCode, Revoked, TokenView,
};
use berth_store::{Project, ProjectToken, Service, ServiceStatus, TokenUse};
use berth_types::{ImageRef, DOCKER_HUB};
use secrecy::ExposeSecret;

use crate::api::{audit_event, membership, parse_slug, require_owner, ApiError, ApiJson, Caller};
use crate::state::AppState;
use crate::vault::Vault;

/// How long a consumer may keep credentials it read (the kubelet's
/// `cacheDuration`): short, so that a rotation or a removal reaches it soon.
const CACHE_SECONDS: u64 = 300;

/// Reads a minute per project token, counted in the table every replica shares.
/// The kubelet asks once per image per `cacheDuration` (the 300 s above), and
/// Docker asks the helper at each pull, so a node starting many pods or a CI job
/// pulling a dozen images stays far below one a second; a leaked or looping token
/// cannot make this route (each answer opens a sealed secret, and for ECR mints a
/// token from AWS) an oracle run at the database's speed. The window is the
/// preflight budget's minute: each hit prunes every key's hits older than its own
/// window, so budgets sharing the table must share the window.
const READS_PER_MINUTE: i64 = 60;
const WINDOW_MS: i64 = 60_000;

/// The longest life a token may be given: ten years, in seconds.
const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;

/// Creates a project token (owner only); the token is in this answer only.
#[utoipa::path(post, path = "/v1/projects/{p}/tokens", request_body = CreateToken,
    params(("p" = String, Path, description = "project name")),
    responses((status = 201, body = TokenView), (status = 400, description = "invalid_name, invalid_expiry", body = berth_api::ErrorBody), (status = 403, body = berth_api::ErrorBody),
              (status = 404, body = berth_api::ErrorBody), (status = 409, body = berth_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(p): Path<String>,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    let m = membership(&state, &caller, &p).await?;
    require_owner(&m)?;
    let name = parse_slug(&body.name)?;
    let expires_at = body.expires_in.map(expiry).transpose()?;
    let token = crate::tokens::generate_with(crate::tokens::PROJECT_PREFIX);
    let saved = state
        .store
        .create_project_token(
            &m.project,
            name.as_str(),
            &crate::tokens::hash(&token),
            expires_at.as_ref(),
            &caller,
            audit_event(
                &caller,
                "project.token.create",
                &m.project,
                None,
                serde_json::json!({"token": name.as_str(), "scope": "read-credentials", "expires_at": expires_at.map(berth_store::stamp)}),
            ),
        )
        .await?;
    let mut view = crate::views::token(saved);
    view.token = Some(token.expose_secret().to_owned());
    Ok((StatusCode::CREATED, Json(view)))
}

/// When a token made now with `expires_in` seconds expires.
fn expiry(expires_in: u64) -> Result<berth_store::Time, ApiError> {
    if !(1..=MAX_EXPIRES_IN).contains(&expires_in) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidExpiry,
            format!("expires_in is in seconds, from 1 to {MAX_EXPIRES_IN} (ten years)"),
        ));
    }
    let life = chrono::Duration::seconds(expires_in as i64);
    Ok(berth_store::now() + life)
}

/// The project's tokens (never their values), with when each was last used and
/// when it expires.
#[utoipa::path(get, path = "/v1/projects/{p}/tokens",
    params(("p" = String, Path, description = "project name")),
    responses((status = 200, body = [TokenView]), (status = 404, body = berth_api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(p): Path<String>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let tokens = state.store.project_tokens(&m.project.id).await?;
    Ok(Json(tokens.into_iter().map(crate::views::token).collect()))
}

/// Revokes a project token (owner only): its next use is refused.
#[utoipa::path(delete, path = "/v1/projects/{p}/tokens/{name}",
    params(("p" = String, Path, description = "project name"), ("name" = String, Path, description = "token name")),
    responses((status = 200), (status = 403, body = berth_api::ErrorBody), (status = 404, body = berth_api::ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, name)): Path<(String, String)>,
) -> Result<Json<Revoked>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    require_owner(&m)?;
    let gone = state
        .store
        .revoke_project_token(
            &m.project,
            &name,
            audit_event(
                &caller,
                "project.token.revoke",
                &m.project,
                None,
                serde_json::json!({"token": name}),
            ),
        )
        .await?;
    if !gone {
        return Err(ApiError::not_found("token"));
    }
    Ok(Json(Revoked { revoked: name }))
}

/// A request made with a live project token within its budget: the token and its
/// project.
pub struct ProjectCaller(pub ProjectToken, pub Project);

impl FromRequestParts<AppState> for ProjectCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "a project token is required (Authorization: Bearer berth_pt_...); an owner creates one with berth project token create",
            )
        };
        let token = crate::api::bearer(parts).ok_or_else(unauthorized)?;
        let used = state
            .store
            .use_project_token(&crate::tokens::hash(&token), &berth_store::now())
            .await?
            .ok_or_else(unauthorized)?;
        let (used, live) = match used {
            TokenUse::Live(t) => (t, true),
            TokenUse::Expired(t) => (t, false),
        };
        let name = state
            .store
            .project_name(&used.project_id)
            .await?
            .ok_or_else(unauthorized)?;
        let project = Project {
            id: used.project_id.clone(),
            name,
            // Not known here, and not needed: the project stands for its id and name.
            created_at: Default::default(),
        };
        let within_budget = count(state, &used).await?;
        if !live {
            // Answered as an unknown token is. Its project is told (who still
            // holds it?), as often as a live token may read: a client retrying
            // forever does not fill the audit log.
            if within_budget {
                state
                    .store
                    .audit_token_use(
                        &used,
                        berth_store::NewAudit {
                            actor: format!("token:{}", used.name),
                            action: "credentials.refused",
                            project: Some(project.name.clone()),
                            service: None,
                            metadata: serde_json::json!({
                                "token": used.name,
                                "reason": "expired",
                                "expires_at": used.expires_at.map(berth_store::stamp),
                            }),
                        },
                    )
                    .await?;
            }
            return Err(unauthorized());
        }
        if !within_budget {
            return Err(ApiError::rate_limited(
                format!("at most {READS_PER_MINUTE} credential reads a minute per project token; keep what was read for its cache_seconds"),
                WINDOW_MS as u64 / 1000,
            ));
        }
        Ok(ProjectCaller(used, project))
    }
}

/// Counts one use of `token` against its budget; `false` past it.
async fn count(state: &AppState, token: &ProjectToken) -> Result<bool, ApiError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Ok(state
        .store
        .rate_limit_hit(
            &format!("credentials:{}", token.id.as_str()),
            now_ms,
            WINDOW_MS,
            READS_PER_MINUTE,
        )
        .await?)
}

/// Docker Hub's registry names, as one.
fn same_host(a: &str, b: &str) -> bool {
    let norm = |h: &str| {
        let h = h.to_ascii_lowercase();
        match h.as_str() {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
                DOCKER_HUB.to_owned()
            }
            _ => h,
        }
    };
    norm(a) == norm(b)
}

/// Which of `services` answer a question: by repository for an image (else by
/// host, when they all hold the same user), by host for a registry; the newest
/// credentials first.
fn choose<'a>(
    services: &'a [Service],
    image: Option<&ImageRef>,
    host: &str,
) -> Result<&'a Service, ApiError> {
    let mut on_host: Vec<&Service> = services
        .iter()
        .filter(|s| s.status != ServiceStatus::Terminated)
        .filter(|s| {
            s.credential
                .as_ref()
                .is_some_and(|c| same_host(&c.registry_url.authority(), host))
        })
        .collect();
    on_host.sort_by(|a, b| {
        let at = |s: &Service| s.credential.as_ref().map(|c| c.updated_at);
        at(b).cmp(&at(a))
    });
    if let Some(image) = image {
        let hub = same_host(host, DOCKER_HUB);
        let repo = image.repository_on(hub);
        if let Some(s) = on_host.iter().find(|s| s.image.repository_on(hub) == repo) {
            return Ok(s);
        }
    }
    let users: std::collections::BTreeSet<&str> = on_host
        .iter()
        .filter_map(|s| s.credential.as_ref().map(|c| c.username.as_str()))
        .collect();
    match (on_host.first(), users.len()) {
        (None, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NoCredentials,
            format!("no service of this project has credentials for {host}"),
        )),
        (Some(s), 1) => Ok(s),
        (Some(_), _) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Ambiguous,
            format!(
                "several services hold different credentials for {host} ({}): name one (service, or BERTH_SERVICE for the helpers)",
                on_host.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// The registry credentials for an image or a registry, with a project token.
/// Listed in the audit log on every use (`credentials.read`); an expired token's
/// refusal too (`credentials.refused`). 60 reads a minute per token.
#[utoipa::path(post, path = "/v1/registry-credentials", request_body = CredentialsRequest,
    responses((status = 200, body = CredentialsAnswer), (status = 401, description = "no token, an unknown, revoked or expired one", body = berth_api::ErrorBody),
              (status = 404, body = berth_api::ErrorBody), (status = 409, body = berth_api::ErrorBody),
              (status = 429, description = "rate_limited: past the token's reads a minute; see Retry-After", body = berth_api::ErrorBody)))]
pub async fn read(
    State(state): State<AppState>,
    ProjectCaller(token, project): ProjectCaller,
    ApiJson(body): ApiJson<CredentialsRequest>,
) -> Result<Json<CredentialsAnswer>, ApiError> {
    let image = body
        .image
        .as_deref()
        .map(|i| {
            i.parse::<ImageRef>()
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidImage, e.to_string()))
        })
        .transpose()?;
    let host = match (&image, &body.registry) {
        (Some(i), _) => i.registry().to_owned(),
        (None, Some(r)) => r
            .trim()
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        (None, None) => {
            return Err(ApiError::bad_request(
                ErrorCode::MissingField,
                "image or registry is required",
            ))
        }
    };
    let mut services = state.store.list_services(&project).await?;
    if let Some(name) = &body.service {
        services.retain(|s| &s.name == name);
    }
    let service = choose(&services, image.as_ref(), &host)?;
    let c = service
        .credential
        .as_ref()
        .ok_or_else(|| ApiError::not_found("credentials"))?;
    let password = state
        .secrets
        .get(&project.id, &service.id, &c.secret)
        .await?;
    let creds = crate::kinds::registry_credentials(
        c.kind,
        c.username.clone(),
        password,
        project.id.as_str(),
    )
    .await
    .map_err(|e| {
        let report = crate::kinds::ecr_report(&e);
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            ErrorCode::from(report.code),
            report.message,
        )
    })?;
    state
        .store
        .audit_token_use(
            &token,
            berth_store::NewAudit {
                actor: format!("token:{}", token.name),
                action: "credentials.read",
                project: Some(project.name.clone()),
                service: Some(service.name.clone()),
                metadata: serde_json::json!({
                    "token": token.name,
                    "registry": c.registry_url.authority(),
                    "image": body.image,
                }),
            },
        )
        .await?;
    Ok(Json(CredentialsAnswer {
        registry_url: c.registry_url.authority(),
        username: creds.username,
        password: creds.password,
        service: service.name.clone(),
        cache_seconds: CACHE_SECONDS,
    }))
}
