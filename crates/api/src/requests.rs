//! What the routes take. The server reads these (unknown fields refused); the CLI
//! writes them, leaving out what it was not given.
//!
//! Secrets are `SecretString`s: redacted in `Debug`, exposed only when the CLI
//! sends the body ([`expose`]).

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, Serializer};
use utoipa::ToSchema;

use crate::views::{KindName, RestartPolicyName};

/// Writes a secret into the body being sent: the one place a request's secret is
/// exposed.
pub(crate) fn expose<S: Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

fn expose_some<S: Serializer>(secret: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => expose(secret, s),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// A slug: `[a-z0-9][a-z0-9-]{0,62}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63)]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// A slug: `[a-z0-9][a-z0-9-]{0,62}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63)]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    pub user: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A slug naming what will hold it, e.g. `kubelet-prod` or `ci`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$")]
    pub name: String,
    /// Seconds until the token stops opening anything (at most ten years);
    /// omitted, it never expires.
    #[schema(minimum = 1, maximum = 315_360_000)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsRequest {
    /// The image to pull (`host/repo:tag`): the credentials of the project's
    /// service that pulls this repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Or a registry host alone (the Docker credential helper's question).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// The service whose credentials to use, when several match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreflightRequest {
    pub registry_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<SecretString>,
    pub image: String,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryInput {
    pub registry_url: String,
    /// Inferred from the fields (`json_key`: gcp, AWS keys or a role: ecr) or
    /// the host when omitted.
    #[schema(value_type = Option<KindName>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<SecretString>,
    /// `gcp`: the service account key file's text (write-only, like `password`).
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub json_key: Option<SecretString>,
    /// `ecr`: an access key id (shown masked, like a username).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    /// `ecr`: its secret (write-only, like `password`).
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub aws_secret_access_key: Option<SecretString>,
    /// `ecr`: a session token, for temporary keys (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub aws_session_token: Option<SecretString>,
    /// `ecr`: the region, when the registry host names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// `ecr`: a role of yours for berth to assume (`arn:aws:iam::ACCOUNT:role/NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `ecr`: the external id berth assumes the role with: set by berth for each
    /// project (`berth-<project id>`, see the project's `aws_external_id`); when
    /// given, it must be that value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
}

/// A service's own container limits; each omitted one keeps the server's default.
#[derive(Debug, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourcesInput {
    /// Memory limit, MiB (16 to 1048576).
    #[schema(minimum = 16, maximum = 1048576)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Processes and threads (8 to 1048576).
    #[schema(minimum = 8, maximum = 1048576)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// CPUs, e.g. 0.5 (0.01 to 1024).
    #[schema(minimum = 0.01, maximum = 1024)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateService {
    /// A slug: `[a-z0-9][a-z0-9-]{0,62}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9-]{0,62}$", min_length = 1, max_length = 63)]
    pub name: String,
    pub image: String,
    pub registry: Option<RegistryInput>,
    /// The service's own container limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesInput>,
    #[serde(default)]
    pub restart_policy: RestartPolicyName,
    #[serde(default)]
    pub save_without_verifying: bool,
    /// The port its app listens on (default: the image's single exposed port;
    /// none: a worker, with no ingress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A path that answers 2xx/3xx once the app is ready (default: the port
    /// accepting a connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    /// Extra host names routed to the service, each held by one service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkName>,
    /// Plain environment variables, merged over the image's `Env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Write-only variables: sealed at rest, never returned.
    #[schema(value_type = BTreeMap<String, String>)]
    #[serde(
        default,
        serialize_with = "expose_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub secrets: BTreeMap<String, SecretString>,
    /// Names among `secrets` given as the file `/run/secrets/NAME` (tmpfs, 0400)
    /// rather than as a variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<String>,
    /// Replaces the image's Entrypoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeInput>,
    /// Only replicas declaring this region (`--region`) run it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

/// A service's one persistent volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeInput {
    /// Where it is mounted in the container (absolute; not `/`, `/proc`, `/sys`,
    /// `/dev`, `/run/secrets`).
    pub path: String,
    /// Its size; writes past it fail with ENOSPC.
    pub size_mb: u64,
}

fn expose_map<S: Serializer>(
    secrets: &BTreeMap<String, SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(secrets.iter().map(|(k, v)| (k, v.expose_secret())))
}

fn expose_changes<S: Serializer>(
    secrets: &Option<BTreeMap<String, Option<SecretString>>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match secrets {
        None => s.serialize_none(),
        Some(m) => s.collect_map(
            m.iter()
                .map(|(k, v)| (k, v.as_ref().map(|v| v.expose_secret()))),
        ),
    }
}

/// What a container may reach: `public` (the default: the public internet, under
/// the egress policy) or `none` (its own loopback only).
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NetworkName {
    #[default]
    Public,
    None,
}

impl NetworkName {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkName::Public => "public",
            NetworkName::None => "none",
        }
    }
}

/// `PUT /v1/projects/{p}/services/{s}`: the service's settings; an omitted field
/// keeps its value. They apply at the next deploy; `redeploy` starts one.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateService {
    /// `0` goes back to the image's exposed port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `""` removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domains: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkName>,
    /// Variables set (a value) or removed (`null`); others keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, Option<String>>>,
    /// Secrets set (a value) or removed (`null`); others keep theirs.
    #[schema(value_type = Option<BTreeMap<String, Option<String>>>)]
    #[serde(
        default,
        serialize_with = "expose_changes",
        skip_serializing_if = "Option::is_none"
    )]
    pub secrets: Option<BTreeMap<String, Option<SecretString>>>,
    /// Names among the secrets set here given as files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_files: Vec<String>,
    /// `[]` goes back to the image's Entrypoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// `[]` goes back to the image's Cmd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// A volume of a new size (grown, never shrunk) or path; the data stays.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeInput>,
    /// `""` removes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default)]
    pub redeploy: bool,
}

#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutRegistry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub password: Option<SecretString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Kept when omitted.
    #[schema(value_type = Option<KindName>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `gcp`: the service account key file's text (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub json_key: Option<SecretString>,
    /// `ecr`: an access key id (shown masked, like a username).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_access_key_id: Option<String>,
    /// `ecr`: its secret (write-only, like `password`).
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub aws_secret_access_key: Option<SecretString>,
    /// `ecr`: a session token, for temporary keys (write-only).
    #[schema(value_type = Option<String>, format = Password)]
    #[serde(
        serialize_with = "expose_some",
        skip_serializing_if = "Option::is_none"
    )]
    pub aws_session_token: Option<SecretString>,
    /// `ecr`: the region, when the registry host names none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws_region: Option<String>,
    /// `ecr`: a role of yours for berth to assume (`arn:aws:iam::ACCOUNT:role/NAME`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// `ecr`: the external id berth assumes the role with: set by berth for each
    /// project (`berth-<project id>`, see the project's `aws_external_id`); when
    /// given, it must be that value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default)]
    pub save_without_verifying: bool,
    /// Rotate on a live service: once saved, start a deployment with the new
    /// credentials; it replaces the running one only once it runs.
    #[serde(default)]
    pub redeploy: bool,
}
