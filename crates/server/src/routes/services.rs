//! Services and their registry credentials. Every save with credentials runs the
//! preflight first; a failure answers 422 and stores nothing unless
//! `save_without_verifying`. **A stored password is only ever sent to the registry
//! it was saved for**: changing the registry URL needs the password again.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use berth_api::{
    CreateService, ErrorCode, PutRegistry, RegistrySaved, ResourcesInput, ServiceView,
};
use berth_registry::{Credentials, PreflightReport};
use berth_store::{
    Membership, NewAudit, NewCredential, NewService, Resources, Service, ServiceId, ServiceSecret,
    ServiceStatus, SettingsChange, User,
};
use berth_types::{ImageRef, RegistryUrl, Slug};
use serde_json::json;

use crate::api::{audit_event, membership, parse_slug, ApiError, ApiJson, Caller};
use crate::routes::preflight;
use crate::state::AppState;
use crate::vault::Vault;
use crate::views;

/// `ecr`'s fields as the kinds take them.
macro_rules! aws_given {
    ($b:expr) => {
        crate::kinds::Aws {
            access_key_id: $b.aws_access_key_id.take(),
            secret_access_key: $b.aws_secret_access_key.take(),
            session_token: $b.aws_session_token.take(),
            role_arn: $b.role_arn.take(),
            external_id: $b.external_id.take(),
            region: $b.aws_region.take(),
        }
    };
}

/// `s` as read back, with where it answers.
pub(super) fn view(state: &AppState, project: &str, s: &berth_store::Service) -> ServiceView {
    let urls = match s.status {
        berth_store::ServiceStatus::Terminated => Vec::new(),
        _ => state.deployer.serving.urls(s, project),
    };
    views::service(s, urls)
}

/// A service's own limits, each checked against its range.
fn parse_resources(input: &ResourcesInput) -> Result<Resources, ApiError> {
    let bad = |m: String| ApiError::bad_request(ErrorCode::InvalidResources, m);
    if let Some(m) = input.memory_mb.filter(|m| !(16..=1 << 20).contains(m)) {
        return Err(bad(format!("memory_mb {m} is not between 16 and 1048576")));
    }
    if let Some(p) = input.pids.filter(|p| !(8..=1 << 20).contains(p)) {
        return Err(bad(format!("pids {p} is not between 8 and 1048576")));
    }
    if let Some(c) = input.cpus.filter(|c| !(0.01..=1024.0).contains(c)) {
        return Err(bad(format!("cpus {c} is not between 0.01 and 1024")));
    }
    Ok(Resources {
        memory_mb: input.memory_mb,
        pids: input.pids,
        cpu_millis: input.cpus.map(|c| (c * 1000.0).round() as i64),
    })
}

fn parse_image(image: &str) -> Result<ImageRef, ApiError> {
    image.parse().map_err(|e: berth_types::ReferenceError| {
        ApiError::bad_request(
            ErrorCode::InvalidImage,
            format!("the image reference is not valid: {e}"),
        )
    })
}

/// The registry URL, parsed (and so normalized: "the same registry" is equality).
fn parse_registry_url(url: &str) -> Result<RegistryUrl, ApiError> {
    url.parse::<RegistryUrl>().map_err(|e| {
        ApiError::preflight_failed(PreflightReport::invalid_url(format!(
            "The registry URL is not valid: {e}."
        )))
    })
}

/// Runs the preflight (counted against the caller's budget); refuses (422) unless
/// it passed or the caller overrides. Returns whether it passed.
async fn verify(
    state: &AppState,
    caller: &User,
    registry_url: &RegistryUrl,
    image: &ImageRef,
    creds: Credentials,
    override_failure: bool,
) -> Result<bool, ApiError> {
    preflight::count(state, caller).await?;
    let report = crate::checks::preflight(&state.registry, registry_url, image, Some(creds)).await;
    if report.ok {
        return Ok(true);
    }
    // Input that cannot be parsed cannot be stored, override or not.
    if !override_failure
        || report.steps.is_empty() && report.code == berth_registry::Code::InvalidUrl
    {
        return Err(ApiError::preflight_failed(report));
    }
    Ok(false)
}

/// ECR keys AWS refused to mint a token with: counted as a preflight, refused
/// like one (or saved unverified when the user says so).
async fn refused_mint(
    state: &AppState,
    caller: &User,
    e: &berth_vault::ecr::EcrError,
    override_failure: bool,
) -> Result<bool, ApiError> {
    preflight::count(state, caller).await?;
    let report = crate::kinds::ecr_report(e);
    crate::metrics::metrics().preflight(report.code.as_str());
    if override_failure {
        Ok(false)
    } else {
        Err(ApiError::preflight_failed(report))
    }
}

fn outcome(passed: bool) -> &'static str {
    if passed {
        "passed"
    } else {
        "overridden"
    }
}

pub(super) async fn live_service(
    state: &AppState,
    m: &Membership,
    name: &str,
) -> Result<Service, ApiError> {
    state
        .store
        .service(&m.project, name)
        .await?
        .ok_or_else(|| ApiError::not_found("service"))
}

/// Creates a service, with registry credentials verified by the preflight.
#[utoipa::path(post, path = "/v1/projects/{p}/services", request_body = CreateService,
    params(("p" = String, Path, description = "project name")),
    responses((status = 201, body = ServiceView), (status = 400, body = berth_api::ErrorBody),
              (status = 404, body = berth_api::ErrorBody), (status = 409, body = berth_api::ErrorBody),
              (status = 422, description = "the preflight failed; nothing was stored", body = berth_api::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(p): Path<String>,
    ApiJson(body): ApiJson<CreateService>,
) -> Result<(StatusCode, Json<ServiceView>), ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let name: Slug = parse_slug(&body.name)?;
    let image = parse_image(&body.image)?;
    let traffic = super::service_settings::parse_new(&body, &state.deployer.serving.apps_domain)?;
    let run = super::run_settings::parse_new(&body)?;
    let resources = parse_resources(&body.resources.unwrap_or_default())?;
    if state
        .store
        .service(&m.project, name.as_str())
        .await?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Conflict,
            "a service with this name already exists",
        ));
    }
    let id = ServiceId::random();
    let mut metadata = json!({"image": image.to_string()});
    let credential = new_credential(
        &state,
        (&caller, &m),
        (&id, &image),
        body.registry,
        body.save_without_verifying,
        &mut metadata,
    )
    .await?;
    let password = credential.as_ref().map(|c| c.secret.clone());
    let secret_names: Vec<&str> = run.set_secrets.iter().map(|g| g.name.as_str()).collect();
    if !secret_names.is_empty() {
        metadata["secrets"] = json!(secret_names);
    }
    let vault = state.secrets.as_ref();
    let secrets = match super::run_settings::seal(vault, &m.project.id, &id, run.set_secrets).await
    {
        Ok(s) => s,
        Err(e) => {
            discard_sealed(vault, password.as_ref(), &[]).await;
            return Err(e);
        }
    };
    let new = NewService {
        id,
        project_id: m.project.id.clone(),
        name: name.to_string(),
        image,
        resources,
        restart_policy: crate::views::restart_policy(body.restart_policy),
        traffic,
        settings: run.settings,
    };
    let audit = NewAudit {
        actor: caller.name.clone(),
        action: "service.create",
        project: Some(m.project.name.clone()),
        service: Some(name.to_string()),
        metadata,
    };
    let created = state
        .store
        .create_service(new, secrets.clone(), credential, audit)
        .await;
    let service = match created {
        Ok(s) => s,
        Err(e) => {
            discard_sealed(vault, password.as_ref(), &secrets).await;
            return Err(e.into());
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(view(&state, &m.project.name, &service)),
    ))
}

/// A new service's registry credentials: resolved by kind, proved by a preflight
/// (unless saved without verifying), sealed; the audit's `metadata` says how.
async fn new_credential(
    state: &AppState,
    (caller, m): (&User, &Membership),
    (id, image): (&ServiceId, &ImageRef),
    registry: Option<berth_api::RegistryInput>,
    save_without_verifying: bool,
    metadata: &mut serde_json::Value,
) -> Result<Option<NewCredential>, ApiError> {
    let Some(mut r) = registry else {
        return Ok(None);
    };
    let registry_url = parse_registry_url(&r.registry_url)?;
    let given = crate::kinds::resolve(
        &registry_url,
        crate::kinds::Given {
            aws: aws_given!(r),
            kind: r.kind,
            username: r.username,
            password: r.password,
            json_key: r.json_key,
        },
        None,
        m.project.id.as_str(),
    )?;
    let passed = preflight_resolved(
        state,
        caller,
        (&registry_url, image),
        &given,
        m.project.id.as_str(),
        save_without_verifying,
    )
    .await?;
    metadata["preflight"] = json!(outcome(passed));
    metadata["registry_url"] = json!(registry_url.to_string());
    let secret = state
        .secrets
        .put(&m.project.id, id, &given.secret.sealed_text())
        .await?;
    metadata["kind"] = json!(given.kind.as_str());
    Ok(Some(NewCredential {
        registry_url,
        kind: given.kind,
        username: given.username,
        secret,
        verified: passed,
    }))
}

/// Undoes the sealing of a save the store refused (what an external secret
/// store holds is deleted).
async fn discard_sealed(
    vault: &dyn crate::vault::Vault,
    password: Option<&berth_store::StoredSecret>,
    secrets: &[ServiceSecret],
) {
    if let Some(p) = password {
        vault.discard(p).await;
    }
    super::run_settings::discard(vault, secrets).await;
}

/// The project's services.
#[utoipa::path(get, path = "/v1/projects/{p}/services",
    params(("p" = String, Path, description = "project name")),
    responses((status = 200, body = [ServiceView]), (status = 404, body = berth_api::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path(p): Path<String>,
) -> Result<Json<Vec<ServiceView>>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let services = state.store.list_services(&m.project).await?;
    Ok(Json(
        services
            .iter()
            .map(|s| view(&state, &m.project.name, s))
            .collect(),
    ))
}

/// One service, credentials masked.
#[utoipa::path(get, path = "/v1/projects/{p}/services/{s}",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 200, body = ServiceView), (status = 404, body = berth_api::ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
) -> Result<Json<ServiceView>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    Ok(Json(view(
        &state,
        &m.project.name,
        &live_service(&state, &m, &s).await?,
    )))
}

/// Changes a service's settings; omitted fields keep theirs. They apply at the
/// next deploy; with `redeploy`, one starts now.
#[utoipa::path(put, path = "/v1/projects/{p}/services/{s}", request_body = berth_api::UpdateService,
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 200, description = "the service (and, with `redeploy`, the deployment it started)", body = RegistrySaved),
              (status = 400, body = berth_api::ErrorBody), (status = 404, body = berth_api::ErrorBody),
              (status = 409, description = "a domain another service holds", body = berth_api::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
    ApiJson(body): ApiJson<berth_api::UpdateService>,
) -> Result<Json<RegistrySaved>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = live_service(&state, &m, &s).await?;
    let apps_domain = &state.deployer.serving.apps_domain;
    let traffic = super::service_settings::merged(&service.traffic, &body, apps_domain)?;
    let run = super::run_settings::merged(&service, &body)?;
    let audits = update_audits(&caller, &m, &service, (&traffic, &run), body.redeploy);
    save_settings(&state, &service, traffic, run, audits).await?;
    let service = live_service(&state, &m, &s).await?;
    let deployment = redeploy(&state, (&caller, &m), &service, body.redeploy, "settings").await?;
    Ok(Json(RegistrySaved {
        service: view(&state, &m.project.name, &service),
        deployment,
    }))
}

/// With `wanted`, a deployment of `service` now (its audit's metadata says
/// `why`: a rotation, new settings); its view.
async fn redeploy(
    state: &AppState,
    (caller, m): (&User, &Membership),
    service: &Service,
    wanted: bool,
    why: &str,
) -> Result<Option<berth_api::DeploymentView>, ApiError> {
    if !wanted {
        return Ok(None);
    }
    let metadata = json!({ why: true });
    let d = super::deployments::queue(state, caller, &m.project, service, metadata).await?;
    Ok(Some(super::deployments::view(state, service, &d).await))
}

/// The audit of a settings change: what changed, and the secrets set and
/// removed, by name.
fn update_audits(
    caller: &User,
    m: &Membership,
    service: &Service,
    (traffic, run): (&berth_store::Traffic, &super::run_settings::Parsed),
    redeploy: bool,
) -> Vec<NewAudit> {
    let old = &service.traffic;
    let mut changed: Vec<&str> = [
        ("port", traffic.port != old.port),
        ("health_path", traffic.health_path != old.health_path),
        ("domains", traffic.domains != old.domains),
        ("network", traffic.network != old.network),
    ]
    .into_iter()
    .filter_map(|(name, c)| c.then_some(name))
    .collect();
    changed.extend(run.changed.iter().copied());
    let event =
        |action, metadata| audit_event(caller, action, &m.project, Some(&service.name), metadata);
    let mut audits = vec![event(
        "service.update",
        json!({"changed": changed, "redeploy": redeploy}),
    )];
    let set: Vec<&str> = run.set_secrets.iter().map(|g| g.name.as_str()).collect();
    if !set.is_empty() {
        audits.push(event("service.secret.set", json!({ "names": set })));
    }
    if !run.remove_secrets.is_empty() {
        audits.push(event(
            "service.secret.remove",
            json!({ "names": run.remove_secrets }),
        ));
    }
    audits
}

/// Seals the secrets set, writes the change in one transaction, then deletes
/// what the replaced and removed secrets leave in an external store.
async fn save_settings(
    state: &AppState,
    service: &Service,
    traffic: berth_store::Traffic,
    run: super::run_settings::Parsed,
    audits: Vec<NewAudit>,
) -> Result<(), ApiError> {
    let vault = state.secrets.as_ref();
    let set_secrets =
        super::run_settings::seal(vault, &service.project_id, &service.id, run.set_secrets).await?;
    let replaced: Vec<ServiceSecret> = match set_secrets.is_empty() && run.remove_secrets.is_empty()
    {
        true => Vec::new(),
        false => state
            .store
            .service_secrets(&service.id)
            .await?
            .into_iter()
            .filter(|old| {
                run.remove_secrets.contains(&old.name)
                    || set_secrets.iter().any(|new| new.name == old.name)
            })
            .collect(),
    };
    let change = SettingsChange {
        traffic,
        settings: run.settings,
        set_secrets,
        remove_secrets: run.remove_secrets,
    };
    if let Err(e) = state.store.update_settings(service, &change, audits).await {
        super::run_settings::discard(vault, &change.set_secrets).await;
        return Err(super::service_settings::domain_taken(e));
    }
    for old in &replaced {
        vault.discard(&old.secret).await;
    }
    Ok(())
}

/// Sets or updates registry credentials; omitted fields keep their stored value.
#[utoipa::path(put, path = "/v1/projects/{p}/services/{s}/registry", request_body = PutRegistry,
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 200, description = "the service (and, with `redeploy`, the deployment it started)", body = RegistrySaved), (status = 400, body = berth_api::ErrorBody),
              (status = 404, body = berth_api::ErrorBody), (status = 409, body = berth_api::ErrorBody),
              (status = 422, description = "the preflight failed; nothing was stored", body = berth_api::ErrorBody)))]
pub async fn put_registry(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
    ApiJson(mut body): ApiJson<PutRegistry>,
) -> Result<Json<RegistrySaved>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = live_service(&state, &m, &s).await?;
    if service.status == ServiceStatus::Terminated {
        return Err(ApiError::service_terminated());
    }
    let stored = service.credential.as_ref();
    let registry_url = merged_registry_url(body.registry_url.as_deref(), stored)?;
    let new_image = body.image.as_deref().map(parse_image).transpose()?;
    let image = new_image.clone().unwrap_or_else(|| service.image.clone());
    let aws = aws_given!(body);
    let password_given = body.password.is_some() || body.json_key.is_some() || aws.given();
    let kept = kept_credential(&state, &service, &registry_url, password_given).await?;
    let resolved = crate::kinds::resolve(
        &registry_url,
        crate::kinds::Given {
            kind: body.kind.clone(),
            username: body.username.clone(),
            password: body.password.take(),
            json_key: body.json_key.take(),
            aws,
        },
        kept,
        m.project.id.as_str(),
    )?;
    let passed = preflight_resolved(
        &state,
        &caller,
        (&registry_url, &image),
        &resolved,
        m.project.id.as_str(),
        body.save_without_verifying,
    )
    .await?;
    let changed: Vec<&str> = [
        ("registry_url", body.registry_url.is_some()),
        ("username", body.username.is_some()),
        ("image", body.image.is_some()),
        ("password", stored.is_none() || password_given),
    ]
    .into_iter()
    .filter_map(|(name, yes)| yes.then_some(name))
    .collect();
    let secret = state
        .secrets
        .put(&m.project.id, &service.id, &resolved.secret.sealed_text())
        .await?;
    let saved = state
        .store
        .put_credential(
            &service,
            new_image.as_ref(),
            NewCredential {
                registry_url: registry_url.clone(),
                kind: resolved.kind,
                username: resolved.username,
                secret: secret.clone(),
                verified: passed,
            },
            audit_event(&caller, "service.update", &m.project, Some(&service.name), json!({"preflight": outcome(passed), "registry_url": registry_url.to_string(), "changed": changed, "rotation": body.redeploy})),
        )
        .await;
    if let Err(e) = saved {
        state.secrets.discard(&secret).await;
        return Err(ApiError::terminated_or(e));
    }
    // New credentials prove access anew.
    state.deployer.forget_project(&m.project.id);
    // The database now points at the new secret: the old one goes.
    if let Some(old) = stored {
        if let Err(e) = state.secrets.destroy(&old.secret).await {
            tracing::error!(error = %e, "cannot delete the replaced secret");
        }
    }
    let service = live_service(&state, &m, &s).await?;
    // A rotation: a deployment with the new credentials, which replaces the
    // running one once its container runs (a failed one leaves it running).
    let deployment = redeploy(&state, (&caller, &m), &service, body.redeploy, "rotation").await?;
    Ok(Json(RegistrySaved {
        service: view(&state, &m.project.name, &service),
        deployment,
    }))
}

/// The registry URL an update names, else the stored one.
fn merged_registry_url(
    given: Option<&str>,
    stored: Option<&berth_store::Credential>,
) -> Result<RegistryUrl, ApiError> {
    match (given, stored) {
        (Some(u), _) => parse_registry_url(u),
        (None, Some(c)) => Ok(c.registry_url.clone()),
        (None, None) => Err(ApiError::bad_request(
            ErrorCode::MissingField,
            "registry_url is required: the service has no registry credentials yet",
        )),
    }
}

/// The stored credential, unsealed only for the registry it was saved for: kept
/// when no new secret is given (as its own kind only), or for the region of new
/// ECR keys. Another registry without a new secret is refused.
async fn kept_credential(
    state: &AppState,
    service: &Service,
    registry_url: &RegistryUrl,
    password_given: bool,
) -> Result<Option<crate::kinds::Kept>, ApiError> {
    let Some(c) = &service.credential else {
        return Ok(None);
    };
    if c.registry_url != *registry_url {
        return match password_given {
            true => Ok(None),
            false => Err(ApiError::bad_request(
                ErrorCode::PasswordRequired,
                "the registry URL changed: give the password again (a stored password is only sent to the registry it was saved for)",
            )),
        };
    }
    Ok(Some(crate::kinds::Kept {
        kind: c.kind,
        username: c.username.clone(),
        password: state
            .secrets
            .get(&service.project_id, &service.id, &c.secret)
            .await?,
    }))
}

/// The preflight of a resolved credential (ECR's minted first): whether it
/// passed, or was overridden; an error when it failed and may not be saved.
async fn preflight_resolved(
    state: &AppState,
    caller: &User,
    (registry_url, image): (&RegistryUrl, &ImageRef),
    resolved: &crate::kinds::Resolved,
    project_id: &str,
    save_without_verifying: bool,
) -> Result<bool, ApiError> {
    let minted =
        crate::kinds::credentials_for(&resolved.username, &resolved.secret, project_id).await;
    match minted {
        Ok(creds) => {
            verify(
                state,
                caller,
                registry_url,
                image,
                creds,
                save_without_verifying,
            )
            .await
        }
        Err(e) => refused_mint(state, caller, &e, save_without_verifying).await,
    }
}

/// Removes registry credentials (the secret is deleted); later deploys pull anonymously.
#[utoipa::path(delete, path = "/v1/projects/{p}/services/{s}/registry",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 200, body = ServiceView), (status = 404, body = berth_api::ErrorBody)))]
pub async fn remove_registry(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
) -> Result<Json<ServiceView>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = live_service(&state, &m, &s).await?;
    // The external secret goes first: if that fails, nothing changed and the call can
    // be retried; the other order could leave a live secret no row points at.
    if let Some(c) = &service.credential {
        state.secrets.destroy(&c.secret).await?;
    }
    state
        .store
        .delete_credential(
            &service,
            audit_event(
                &caller,
                "service.registry.remove",
                &m.project,
                Some(&service.name),
                json!({}),
            ),
        )
        .await?;
    state.deployer.forget_project(&m.project.id);
    Ok(Json(view(
        &state,
        &m.project.name,
        &live_service(&state, &m, &s).await?,
    )))
}

/// Terminates a service: stops what runs, deletes its secret for good.
#[utoipa::path(delete, path = "/v1/projects/{p}/services/{s}",
    params(("p" = String, Path, description = "project name"), ("s" = String, Path, description = "service name")),
    responses((status = 200, body = ServiceView), (status = 404, body = berth_api::ErrorBody)))]
pub async fn terminate(
    State(state): State<AppState>,
    Caller(caller): Caller,
    Path((p, s)): Path<(String, String)>,
) -> Result<Json<ServiceView>, ApiError> {
    let m = membership(&state, &caller, &p).await?;
    let service = live_service(&state, &m, &s).await?;
    if service.status != ServiceStatus::Terminated {
        for d in state.store.deployments_of(&service).await? {
            state.deployer.stop(&d.id).await;
        }
        if let Some(c) = &service.credential {
            state.secrets.destroy(&c.secret).await?;
        }
        for s in state.store.service_secrets(&service.id).await? {
            state.secrets.destroy(&s.secret).await?;
        }
        state
            .store
            .terminate_service(
                &service,
                audit_event(
                    &caller,
                    "service.terminate",
                    &m.project,
                    Some(&service.name),
                    json!({"secret_deleted": service.credential.is_some()}),
                ),
            )
            .await?;
        // Its deploys in flight here stop now (other replicas see it within 0.5 s).
        state.deployer.cancel_deploys_of(&service.id);
        state.deployer.forget_project(&m.project.id);
        // Its volume's data goes with it.
        state.deployer.remove_volume(&service.id).await;
        // Only now is its image no longer live.
        state.deployer.want_gc();
    }
    Ok(Json(view(
        &state,
        &m.project.name,
        &live_service(&state, &m, &s).await?,
    )))
}
