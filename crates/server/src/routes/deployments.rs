use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_api::{DeploymentView, ErrorCode, PullView};
use berth_store::{Deployment, DeploymentStatus, Project, Service, ServiceStatus, User};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use crate::api::{audit_event, membership, ApiError, Caller};
use crate::deploy::log;
use crate::state::AppState;
use crate::views;

/// Queues a deployment of the service's image (`PENDING_DEPLOY`).
#[utoipa::path(post, path = "/v1/projects/{p}/services/{s}/deployments",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 202, description = "the deployment", body = DeploymentView),
              (status = 404, body = berth_api::ErrorBody), (status = 409, body = berth_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
) -> Result<(StatusCode, Json<DeploymentView>), ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = state
        .store
        .service(&m.project, &s)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    if service.status == ServiceStatus::Terminated {
        return Err(ApiError::service_terminated());
    }
    let d = queue(&state, &caller, &m.project, &service, json!({})).await?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, &service, &d).await)))
}

/// Queues a deployment of `service`, audited as `deployment.create` with the image
/// and `metadata`'s fields (a rotation says so).
pub async fn queue(
    state: &AppState,
    caller: &User,
    project: &Project,
    service: &Service,
    metadata: serde_json::Value,
) -> Result<Deployment, ApiError> {
    let mut meta = json!({"image": service.image.to_string()});
    if let (Some(all), Some(more)) = (meta.as_object_mut(), metadata.as_object()) {
        all.extend(more.clone());
    }
    let d = state
        .store
        .create_deployment(
            service,
            audit_event(
                caller,
                "deployment.create",
                project,
                Some(&service.name),
                meta,
            ),
        )
        .await
        .map_err(ApiError::terminated_or)?;
    state.deployer.queued();
    Ok(d)
}

/// The service's deployments, newest first.
#[utoipa::path(get, path = "/v1/projects/{p}/services/{s}/deployments",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 200, body = [DeploymentView]), (status = 404, body = berth_api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
) -> Result<Json<Vec<DeploymentView>>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = state
        .store
        .service(&m.project, &s)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    let all = state.store.deployments_of(&service).await?;
    // Why pending ones wait is the service's, asked once for the list.
    let waiting = match all.iter().any(pending) {
        true => waiting_for_region(&state, &service).await,
        false => None,
    };
    Ok(Json(
        all.iter()
            .map(|d| {
                let mut v = views::deployment(d);
                if pending(d) {
                    v.message = waiting.clone();
                }
                v
            })
            .collect(),
    ))
}

/// A deployment as answered: with why it waits when it waits for a region no
/// replica serves.
pub async fn view(state: &AppState, service: &Service, d: &Deployment) -> DeploymentView {
    let mut v = views::deployment(d);
    if pending(d) {
        v.message = waiting_for_region(state, service).await;
    }
    v
}

fn pending(d: &Deployment) -> bool {
    d.status == berth_store::DeploymentStatus::PendingDeploy
}

async fn waiting_for_region(state: &AppState, service: &Service) -> Option<String> {
    let region = service.settings.region.as_deref()?;
    let since = berth_store::now() - crate::deploy::REGION_SEEN;
    match state.store.region_served(region, &since).await {
        Ok(true) => None,
        Ok(false) => Some(format!(
            "no replica serves region {region}: it stays pending until a server started with --region {region} runs"
        )),
        Err(e) => {
            tracing::warn!(error = %e, "reading the replicas' regions");
            None
        }
    }
}

async fn find(
    state: &AppState,
    caller: &berth_store::User,
    p: &str,
    s: &str,
    id: &str,
) -> Result<(Service, Deployment), ApiError> {
    let m = membership(state, caller, p).await?;
    let service = state
        .store
        .service(&m.project, s)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    let d = state
        .store
        .deployment(&service, id)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment"))?;
    Ok((service, d))
}

/// One deployment.
#[utoipa::path(get, path = "/v1/projects/{p}/services/{s}/deployments/{id}",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name"), ("id" = String, Path, description = "deployment id")),
    responses((status = 200, description = "the deployment, with `progress` ([{digest, size, received, state}]) while its image is pulled", body = DeploymentView), (status = 404, body = berth_api::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s, id)): Path<(String, String, String)>,
) -> Result<Json<DeploymentView>, ApiError> {
    let (service, deployment) = find(&state, &caller, &p, &s, &id).await?;
    let progress = state.deployer.progress(&deployment.id);
    let pull = progress
        .is_none()
        .then(|| state.deployer.pull_record(&deployment.id))
        .flatten()
        .map(|blobs| PullView {
            blobs: views::blobs(blobs),
        });
    let progress = progress.map(views::blobs);
    Ok(Json(DeploymentView {
        progress,
        pull,
        ..view(&state, &service, &deployment).await
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct LogQuery {
    /// Keep the answer open and stream new lines while the deployment runs.
    #[serde(default)]
    pub follow: bool,
    /// Only the last N lines (then, with `follow`, what is appended).
    pub tail: Option<usize>,
    /// Only lines written since: an RFC 3339 time or a duration back from now
    /// (`90s`, `10m`, `2h`, `1d`).
    pub since: Option<String>,
}

/// The log of a deployment another replica ran lives on that replica: the request
/// goes there and its answer, streamed, comes back. `None` when this replica is
/// the one, or nobody ran it yet.
async fn forward_to_replica(
    state: &AppState,
    d: &Deployment,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Option<Response>, ApiError> {
    let Some(replica) = d.replica_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if headers.contains_key(log::FORWARDED)
        || state.deployer.replica_url.get().map(String::as_str) == Some(replica)
    {
        return Ok(None);
    }
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let resp = log::forward(replica, path, headers.get(header::AUTHORIZATION))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                ErrorCode::ReplicaUnavailable,
                format!(
                    "the log of this deployment is kept by the replica at {replica}, which did not answer: {e}"
                ),
            )
        })?;
    let mut out = Response::new(Body::empty());
    *out.status_mut() = resp.status();
    // Retry-After: the other replica's refusal of one more follower says when.
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    *out.body_mut() = Body::from_stream(resp.bytes_stream());
    Ok(Some(out))
}

/// A place for one more followed stream of `caller`, or `429 rate_limited`.
fn admit_follower(state: &AppState, caller: &User) -> Result<log::Following, ApiError> {
    // Places are given back as clients go, at no time one can tell: a short wait.
    const RETRY_SECONDS: u64 = 10;
    state.followers.admit(&caller.id).map_err(|full| {
        let message = match full {
            log::Full::User(n) => format!(
                "at most {n} followed log streams at once per user; close one, or read without follow"
            ),
            log::Full::Replica(n) => format!(
                "this server already follows {n} log streams, its most; try again shortly"
            ),
        };
        ApiError::rate_limited(message, RETRY_SECONDS)
    })
}

/// `resp` with its body owning the follower's place: once the body is dropped (its
/// end, or its client gone), the place is given back.
fn holding(resp: Response, following: Option<log::Following>) -> Response {
    if following.is_none() {
        return resp;
    }
    resp.map(|body| {
        Body::from_stream(futures_util::StreamExt::map(
            body.into_data_stream(),
            move |chunk| {
                let _owned = &following;
                chunk
            },
        ))
    })
}

/// The infrastructure log (each step, the registry's own error text), then the
/// container's output, as text lines.
#[utoipa::path(get, path = "/v1/projects/{p}/services/{s}/deployments/{id}/logs",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name"), ("id" = String, Path, description = "deployment id"), LogQuery),
    responses((status = 200, description = "text/plain log lines (from the replica that ran the deployment, when another one did)", body = String), (status = 404, body = berth_api::ErrorBody), (status = 429, description = "rate_limited: too many followed streams open (per user, or on this server); see Retry-After", body = berth_api::ErrorBody), (status = 502, description = "replica_unavailable: the replica that ran it did not answer", body = berth_api::ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s, id)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let (_, d) = find(&state, &caller, &p, &s, &id).await?;
    let since = match q.since.as_deref() {
        None => None,
        Some(text) => Some(log::parse_since(text).ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidSince,
                format!("since {text:?} is neither an RFC 3339 time nor a duration such as 10m"),
            )
        })?),
    };
    // Taken before a forward too: this replica holds the client's connection as
    // long as the one that keeps the log does.
    let following = q
        .follow
        .then(|| admit_follower(&state, &caller))
        .transpose()?;
    let logs = state.deployer.logs(&d.id);
    if !logs.infra.exists() {
        if let Some(forwarded) = forward_to_replica(&state, &d, &headers, &uri).await? {
            return Ok(holding(forwarded, following));
        }
    }
    // Follow: what is there, then what is appended, until the deployment has ended
    // (FAILED, or DEPLOYED with its container stopped).
    let ended = move || {
        let (state, d) = (state.clone(), d.clone());
        async move {
            let status = match state.store.service_by_id(&d.service_id).await {
                Ok(Some(svc)) => state
                    .store
                    .deployment(&svc, d.id.as_str())
                    .await
                    .ok()
                    .flatten()
                    .map(|x| x.status),
                _ => None,
            };
            match status {
                Some(DeploymentStatus::Failed | DeploymentStatus::Removed) | None => true,
                Some(DeploymentStatus::Deployed) => !state.deployer.is_running(&d.id),
                _ => false,
            }
        }
    };
    let reading = log::Reading {
        tail: q.tail,
        since,
    };
    let body = Body::from_stream(log::stream(logs, reading, q.follow.then_some(ended)));
    let resp = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    Ok(holding(resp, following))
}
