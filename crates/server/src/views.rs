//! What the API answers: view types of its own, built from the store's rows (which
//! know nothing of the wire). Secrets never have a field here; usernames are masked.

use berth_store::{AuditEvent, Deployment, RestartPolicy, Service};
use berth_types::mask_username;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A registry credential's kind: `basic` (a user name and a password or token),
/// `ecr` (AWS keys or a role, minted into a token at each use), `gcp` (a
/// service account key or an access token), `acr` (admin user, service principal
/// or refresh token). For the API description only: the wire carries the text.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum KindName {
    Basic,
    Ecr,
    Gcp,
    Acr,
}

#[derive(Serialize, ToSchema)]
pub struct RegistryView {
    pub registry_url: String,
    #[schema(value_type = KindName)]
    pub kind: String,
    /// Masked, e.g. `al***`.
    pub username: String,
    pub password_set: bool,
    pub verified: bool,
    pub updated_at: String,
    /// The last background check of the credentials against the registry (`null`
    /// until one ran, for credentials saved without verifying).
    pub health: Option<HealthView>,
}

#[derive(Serialize, ToSchema)]
pub struct HealthView {
    /// `ok` or `failing`.
    pub status: String,
    /// `ok`, or the preflight code of the failure (`auth_failed`...).
    pub code: String,
    pub checked_at: String,
}

/// A service's own limits, as set (an absent one is the server's default).
#[derive(Serialize, ToSchema, Default)]
pub struct ResourcesView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

/// When the container is started again after it exits (with a growing delay, as
/// Kubernetes' CrashLoopBackOff): `on-failure` (the default: a non-zero exit, a
/// signal, an exit nobody saw), `always`, `never`.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicyName {
    #[default]
    OnFailure,
    Always,
    Never,
}

impl From<RestartPolicyName> for RestartPolicy {
    fn from(p: RestartPolicyName) -> Self {
        match p {
            RestartPolicyName::OnFailure => RestartPolicy::OnFailure,
            RestartPolicyName::Always => RestartPolicy::Always,
            RestartPolicyName::Never => RestartPolicy::Never,
        }
    }
}

impl From<RestartPolicy> for RestartPolicyName {
    fn from(p: RestartPolicy) -> Self {
        match p {
            RestartPolicy::OnFailure => RestartPolicyName::OnFailure,
            RestartPolicy::Always => RestartPolicyName::Always,
            RestartPolicy::Never => RestartPolicyName::Never,
        }
    }
}

/// How the service's container last exited: `code` or `signal`, or neither when it
/// stopped while no server watched (a machine restart).
#[derive(Serialize, ToSchema)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub image: String,
    pub status: String,
    pub created_at: String,
    pub registry: Option<RegistryView>,
    pub resources: ResourcesView,
    pub restart_policy: RestartPolicyName,
    /// Restarts of the running deployment by the restart policy.
    pub restarts: u32,
    pub last_exit: Option<ExitView>,
}

impl From<&Service> for ServiceView {
    fn from(s: &Service) -> Self {
        ServiceView {
            name: s.name.clone(),
            image: s.image.to_string(),
            status: s.status.to_string(),
            created_at: s.created_at.clone(),
            registry: s.credential.as_ref().map(|c| RegistryView {
                registry_url: c.registry_url.to_string(),
                kind: c.kind.as_str().into(),
                username: mask_username(&c.username),
                password_set: true,
                verified: c.verified,
                updated_at: c.updated_at.clone(),
                health: c.health.as_ref().map(|h| HealthView {
                    status: if h.ok { "ok" } else { "failing" }.into(),
                    code: h.code.clone(),
                    checked_at: h.checked_at.clone(),
                }),
            }),
            resources: ResourcesView {
                memory_mb: s.resources.memory_mb,
                pids: s.resources.pids,
                cpus: s.resources.cpu_millis.map(|m| m as f64 / 1000.0),
            },
            restart_policy: s.restart_policy.into(),
            restarts: s.restarts,
            last_exit: s.last_exit.as_ref().map(|e| ExitView {
                code: e.code,
                signal: e.signal,
                at: e.at.clone(),
            }),
        }
    }
}

/// A deployment; one read alone also carries `progress` while its image is pulled
/// (by the replica answering).
#[derive(Serialize, ToSchema)]
pub struct DeploymentView {
    pub id: String,
    pub status: String,
    pub image: String,
    pub digest: Option<String>,
    /// Why it failed: `invalid_url`, `auth_failed`, `manifest_not_found`, `timeout`,
    /// `ssrf_blocked`, `network_error`, `runtime_error` or `image_rejected`.
    #[schema(example = "image_rejected")]
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub progress: Option<Vec<berth_runtime::pull::BlobProgress>>,
    /// How the pull went, once it is over (on the replica that pulled): each
    /// blob's `started_ms`, `downloaded_ms` and `applied_ms` from the pull's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub pull: Option<PullView>,
}

#[derive(Serialize, ToSchema)]
pub struct PullView {
    #[schema(value_type = Vec<Object>)]
    pub blobs: Vec<berth_runtime::pull::BlobProgress>,
}

impl From<&Deployment> for DeploymentView {
    fn from(d: &Deployment) -> Self {
        DeploymentView {
            id: d.id.to_string(),
            status: d.status.to_string(),
            image: d.image.to_string(),
            digest: d.digest.as_ref().map(ToString::to_string),
            failure_code: d.failure_code.clone(),
            failure_message: d.failure_message.clone(),
            created_at: d.created_at.clone(),
            updated_at: d.updated_at.clone(),
            progress: None,
            pull: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AuditEventView {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub project: Option<String>,
    pub service: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        AuditEventView {
            id: e.id,
            at: e.at,
            actor: e.actor,
            action: e.action,
            project: e.project,
            service: e.service,
            metadata: e.metadata,
        }
    }
}
