use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_store::{Deployment, DEPLOYED, FAILED, REMOVED, STATUS_TERMINATED};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use crate::api::{audit_event, membership, ApiError, Caller};
use crate::state::AppState;

/// Queues a deployment of the service's image (`PENDING_DEPLOY`).
#[utoipa::path(post, path = "/v1/projects/{p}/services/{s}/deployments",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 202, description = "the deployment: {id, status, image, digest, failure_code, failure_message, created_at, updated_at}", body = Object),
              (status = 404, body = crate::api::ErrorBody), (status = 409, body = crate::api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Deployment>), ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = state
        .store
        .service(&m.project, &s)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    if service.status == STATUS_TERMINATED {
        return Err(ApiError::service_terminated());
    }
    let d = state
        .store
        .create_deployment(
            &service,
            audit_event(
                &caller,
                "deployment.create",
                &m.project,
                Some(&service.name),
                json!({"image": service.image}),
            ),
        )
        .await
        .map_err(ApiError::terminated_or)?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

/// The service's deployments, newest first.
#[utoipa::path(get, path = "/v1/projects/{p}/services/{s}/deployments",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 200, body = [Object]), (status = 404, body = crate::api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
) -> Result<Json<Vec<Deployment>>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = state
        .store
        .service(&m.project, &s)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    Ok(Json(state.store.deployments_of(&service).await?))
}

async fn find(
    state: &AppState,
    caller: &berth_store::User,
    p: &str,
    s: &str,
    id: &str,
) -> Result<Deployment, ApiError> {
    let m = membership(state, caller, p).await?;
    let service = state
        .store
        .service(&m.project, s)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))?;
    state
        .store
        .deployment(&service, id)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment"))
}

/// A deployment as shown one at a time: while its image is being pulled (and the
/// replica answering is the one pulling it), `progress` lists each blob with its
/// size, the bytes received and its state.
#[derive(serde::Serialize)]
pub struct DeploymentView {
    #[serde(flatten)]
    deployment: Deployment,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<Vec<berth_runtime::pull::BlobProgress>>,
}

/// One deployment.
#[utoipa::path(get, path = "/v1/projects/{p}/services/{s}/deployments/{id}",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name"), ("id" = String, Path, description = "deployment id")),
    responses((status = 200, description = "the deployment, with `progress` ([{digest, size, received, state}]) while its image is pulled", body = Object), (status = 404, body = crate::api::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s, id)): Path<(String, String, String)>,
) -> Result<Json<DeploymentView>, ApiError> {
    let deployment = find(&state, &caller, &p, &s, &id).await?;
    let progress = state.deployer.progress(&deployment.id);
    Ok(Json(DeploymentView {
        deployment,
        progress,
    }))
}

#[derive(Deserialize, IntoParams)]
pub struct LogQuery {
    /// Keep the answer open and stream new lines while the deployment runs.
    #[serde(default)]
    pub follow: bool,
}

/// Marks a request one replica forwarded to another (never forwarded again).
const FORWARDED: &str = "x-berth-forwarded";

/// The log of a deployment another replica ran lives on that replica: the request
/// goes there (with the caller's own token, which it checks again) and its answer,
/// streamed, comes back. `None` when this replica is the one, or nobody ran it yet.
async fn forward_to_replica(
    state: &AppState,
    d: &Deployment,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Option<Response>, ApiError> {
    let Some(replica) = d.replica_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if headers.contains_key(FORWARDED)
        || state.deployer.replica_url.get().map(String::as_str) == Some(replica)
    {
        return Ok(None);
    }
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client")
    });
    let target = format!(
        "{replica}{}",
        uri.path_and_query().map_or(uri.path(), |p| p.as_str())
    );
    let mut req = client.get(&target).header(FORWARDED, "1");
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let mut auth = auth.clone();
        auth.set_sensitive(true);
        req = req.header(header::AUTHORIZATION, auth);
    }
    let resp = req.send().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "replica_unavailable",
            format!(
                "the log of this deployment is kept by the replica at {replica}, which did not answer: {e}"
            ),
        )
    })?;
    let mut out = Response::new(Body::empty());
    *out.status_mut() = resp.status();
    if let Some(ct) = resp.headers().get(header::CONTENT_TYPE) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    *out.body_mut() = Body::from_stream(resp.bytes_stream());
    Ok(Some(out))
}

/// What the log holds past `offset` (at most 1 MiB at a time): a follower reads
/// only what was appended, never the whole file again.
fn read_from(path: &std::path::Path, offset: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.take(1 << 20).read_to_end(&mut buf);
        }
    }
    buf
}

/// The infrastructure log (each step, the registry's own error text), then the
/// container's output, as text lines.
#[utoipa::path(get, path = "/v1/projects/{p}/services/{s}/deployments/{id}/logs",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name"), ("id" = String, Path, description = "deployment id"), LogQuery),
    responses((status = 200, description = "text/plain log lines (from the replica that ran the deployment, when another one did)", body = String), (status = 404, body = crate::api::ErrorBody), (status = 502, description = "replica_unavailable: the replica that ran it did not answer", body = crate::api::ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s, id)): Path<(String, String, String)>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    let d = find(&state, &caller, &p, &s, &id).await?;
    let path = state.deployer.log_path(&d.id);
    if !path.exists() {
        if let Some(forwarded) = forward_to_replica(&state, &d, &headers, &uri).await? {
            return Ok(forwarded);
        }
    }
    if !q.follow {
        let text = std::fs::read(&path).unwrap_or_default();
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    // Follow: send what is there, then what is appended, until the deployment has
    // ended (FAILED, or DEPLOYED with its container stopped).
    let stream = futures_util::stream::unfold((0u64, false), move |(offset, done)| {
        let state = state.clone();
        let path = path.clone();
        let d = d.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let chunk = read_from(&path, offset);
                if !chunk.is_empty() {
                    let next = offset + chunk.len() as u64;
                    return Some((Ok::<_, std::io::Error>(chunk), (next, false)));
                }
                let status = match state.store.service_by_id(&d.service_id).await {
                    Ok(Some(svc)) => state
                        .store
                        .deployment(&svc, &d.id)
                        .await
                        .ok()
                        .flatten()
                        .map(|x| x.status),
                    _ => None,
                };
                let ended = match status.as_deref() {
                    Some(FAILED) | Some(REMOVED) | None => true,
                    Some(DEPLOYED) => !state.deployer.is_running(&d.id),
                    _ => false,
                };
                if ended {
                    return Some((Ok(Vec::new()), (offset, true)));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}
