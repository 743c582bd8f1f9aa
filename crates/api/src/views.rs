//! What the API answers. Secrets never have a field here, except the two answers
//! made to hand one over once (a new user's token, a project token's read of
//! credentials); usernames are masked.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
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

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RegistryView {
    pub registry_url: String,
    #[schema(value_type = KindName)]
    pub kind: String,
    /// Masked, e.g. `al***`.
    pub username: String,
    pub password_set: bool,
    pub verified: bool,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub updated_at: DateTime<Utc>,
    /// The last background check of the credentials against the registry (`null`
    /// until one ran, for credentials saved without verifying).
    pub health: Option<HealthView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct HealthView {
    /// `ok` or `failing`.
    pub status: String,
    /// `ok`, or the preflight code of the failure (`auth_failed`...).
    pub code: String,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub checked_at: DateTime<Utc>,
}

/// A service's own limits, as set (an absent one is the server's default).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema, Default)]
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
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicyName {
    #[default]
    OnFailure,
    Always,
    Never,
}

impl RestartPolicyName {
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicyName::OnFailure => "on-failure",
            RestartPolicyName::Always => "always",
            RestartPolicyName::Never => "never",
        }
    }
}

impl std::fmt::Display for RestartPolicyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RestartPolicyName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            RestartPolicyName::OnFailure,
            RestartPolicyName::Always,
            RestartPolicyName::Never,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
        .ok_or_else(|| format!("{s:?} is not a restart policy (on-failure, always, never)"))
    }
}

/// How the service's container last exited: `code` or `signal`, or neither when it
/// stopped while no server watched (a machine restart).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ExitView {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub image: String,
    pub status: String,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    pub registry: Option<RegistryView>,
    pub resources: ResourcesView,
    pub restart_policy: RestartPolicyName,
    /// Restarts of the running deployment by the restart policy.
    pub restarts: u32,
    pub last_exit: Option<ExitView>,
    /// The port its app listens on, as set (`null`: the image's exposed port).
    pub port: Option<u16>,
    pub health_path: Option<String>,
    pub domains: Vec<String>,
    pub network: crate::NetworkName,
    /// Where the app answers: its name under the apps domain, then its domains.
    pub urls: Vec<String>,
    pub env: std::collections::BTreeMap<String, String>,
    /// Its secrets' names and when each was set; never a value.
    pub secrets: Vec<SecretView>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub volume: Option<crate::VolumeInput>,
    pub region: Option<String>,
}

/// A secret of a service as read back: no value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    /// `env` (a variable) or `file` (`/run/secrets/NAME`).
    #[serde(rename = "as")]
    pub given_as: String,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub updated_at: DateTime<Utc>,
}

/// A deployment; one read alone also carries `progress` while its image is pulled
/// (by the replica answering).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
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
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub progress: Option<Vec<BlobView>>,
    /// How the pull went, once it is over (on the replica that pulled): each
    /// blob's `started_ms`, `downloaded_ms` and `applied_ms` from the pull's start.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub pull: Option<PullView>,
    /// Why a pending one waits, when it waits for something it may never get
    /// (its service names a region no replica serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PullView {
    #[schema(value_type = Vec<Object>)]
    pub blobs: Vec<BlobView>,
}

/// One blob of a pull: where it is, and when (milliseconds from the start of the
/// pull) its download began and ended and its unpack ended, for a waterfall.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobView {
    pub digest: String,
    pub size: u64,
    pub received: u64,
    pub state: BlobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloaded_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_ms: Option<u64>,
    /// A layer the container started on before it was downloaded (eStargz,
    /// mounted lazily): its chunks fetched on demand; `started_ms`..`applied_ms`
    /// are then its background pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lazy: Option<LazyView>,
}

/// A lazily mounted layer: when its TOC was verified and it was mounted, the bytes
/// prefetched before the start, the chunks fetched on demand by the container's
/// reads (each verified), and when the background pull made it an ordinary
/// cached layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LazyView {
    pub mounted_ms: u64,
    pub prefetch_bytes: u64,
    pub on_demand_bytes: u64,
    pub on_demand_chunks: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    Waiting,
    Downloading,
    Cached,
    Downloaded,
    /// Unpacked into the root filesystem (layers only).
    Applied,
}

impl BlobState {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobState::Waiting => "waiting",
            BlobState::Downloading => "downloading",
            BlobState::Cached => "cached",
            BlobState::Downloaded => "downloaded",
            BlobState::Applied => "applied",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEventView {
    pub id: i64,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub project: Option<String>,
    pub service: Option<String>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

/// The service as saved, and the deployment a rotation (`redeploy`) started.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RegistrySaved {
    #[serde(flatten)]
    pub service: ServiceView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<DeploymentView>,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ProjectView {
    pub name: String,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    /// The caller's role: `owner` or `member`.
    pub role: String,
    /// The external id berth assumes an ECR credential's role with for this
    /// project: require it (`sts:ExternalId`) in the role's trust policy.
    pub aws_external_id: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MemberView {
    pub project: String,
    pub user: String,
    pub role: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedUser {
    pub name: String,
    /// The API token, shown this once; only its hash is stored.
    pub token: String,
}

// No `Debug`: the answer to a creation carries the token.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    /// `read-credentials`: the project's registry credentials, nothing else.
    pub scope: String,
    pub created_by: String,
    #[serde(with = "crate::time")]
    #[schema(value_type = String)]
    pub created_at: DateTime<Utc>,
    #[serde(with = "crate::time::option")]
    #[schema(value_type = Option<String>)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it stops opening anything (RFC 3339); null: never.
    #[serde(with = "crate::time::option")]
    #[schema(value_type = Option<String>)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Only in the answer to its creation: shown once, stored as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct CredentialsAnswer {
    pub registry_url: String,
    pub username: String,
    /// The password or token (for `ecr`, a registry token minted now).
    #[serde(serialize_with = "crate::requests::expose")]
    #[schema(value_type = String)]
    pub password: SecretString,
    /// The service whose credentials these are.
    pub service: String,
    /// How long the caller may keep them.
    pub cache_seconds: u64,
}

/// The answer to a project token's revocation.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Revoked {
    /// The token's name.
    pub revoked: String,
}
