//! What the store holds, decoded into domain types: an image is an [`ImageRef`], a
//! registry a [`RegistryUrl`], a digest a [`Digest`], a status an enum, an id a
//! newtype of its own. A row that does not decode is an error of the store
//! ([`crate::StoreError::Corrupt`]), never a surprise at deploy time.

use berth_types::{CredentialKind, Digest, ImageRef, RegistryUrl};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                $name(hex::encode(rand::random::<[u8; 16]>()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// A user's id.
    UserId
);
id_type!(
    /// A project's id (names are for people; ids for keys and audit).
    ProjectId
);
id_type!(
    /// A service's id: with the project id, what a sealed password is bound to.
    ServiceId
);
id_type!(
    /// A deployment's id: its container is `berth-<id>`.
    DeploymentId
);
id_type!(
    /// A project token's id.
    ProjectTokenId
);

macro_rules! status_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} {other:?}", stringify!($name))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

status_enum!(
    /// Where a service is: its last deployment's status, or created / terminated.
    ServiceStatus {
        Created = "CREATED",
        PendingDeploy = "PENDING_DEPLOY",
        Deploying = "DEPLOYING",
        Deployed = "DEPLOYED",
        Failed = "FAILED",
        Terminated = "TERMINATED",
    }
);

status_enum!(
    /// Where a deployment is. `Removed`: a deployed one that no longer runs (a newer
    /// one of its service replaced it, or the service was terminated).
    DeploymentStatus {
        PendingDeploy = "PENDING_DEPLOY",
        Deploying = "DEPLOYING",
        Deployed = "DEPLOYED",
        Failed = "FAILED",
        Removed = "REMOVED",
    }
);

impl From<DeploymentStatus> for ServiceStatus {
    fn from(s: DeploymentStatus) -> Self {
        match s {
            DeploymentStatus::PendingDeploy => ServiceStatus::PendingDeploy,
            DeploymentStatus::Deploying => ServiceStatus::Deploying,
            DeploymentStatus::Deployed | DeploymentStatus::Removed => ServiceStatus::Deployed,
            DeploymentStatus::Failed => ServiceStatus::Failed,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserRole {
    Admin,
    User,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub role: UserRole,
}

#[derive(Clone, Debug)]
pub struct Project {
    pub id: ProjectId,
    pub name: String,
    pub created_at: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    Owner,
    Member,
}

#[derive(Clone, Debug)]
pub struct Membership {
    pub project: Project,
    pub role: MemberRole,
}

/// A service's own container limits; `None` keeps the server's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory_mb: Option<u64>,
    pub pids: Option<i64>,
    /// Thousandths of a CPU.
    pub cpu_millis: Option<i64>,
}

status_enum!(
    /// When a service's container is started again after it exits: `OnFailure` (the
    /// default) after a failure (a non-zero exit, a signal, an exit nobody saw),
    /// `Always` after any exit, `Never`.
    RestartPolicy {
        OnFailure = "on-failure",
        Always = "always",
        Never = "never",
    }
);

// The enum is the macro's: a derive would need `#[default]` through it.
#[allow(clippy::derivable_impls)]
impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::OnFailure
    }
}

status_enum!(
    /// What a service's container may reach: `Public` (the default: outbound to
    /// the public internet, under the egress policy) or `None` (its own loopback).
    NetworkMode {
        Public = "public",
        None = "none",
    }
);

// The enum is the macro's: a derive would need `#[default]` through it.
#[allow(clippy::derivable_impls)]
impl Default for NetworkMode {
    fn default() -> Self {
        NetworkMode::Public
    }
}

/// How a service is reached and what it reaches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// The port its app listens on; `None`: the image's single exposed port, or
    /// none at all (a worker).
    pub port: Option<u16>,
    /// Answers 2xx or 3xx once the app is ready; `None`: the port accepting a
    /// connection is ready.
    pub health_path: Option<String>,
    /// Extra host names routed to it, each held by one service on the server.
    pub domains: Vec<String>,
    pub network: NetworkMode,
}

/// What a service sets over its image (secrets apart: [`ServiceSecret`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Plain variables over the image's `Env`.
    pub env: std::collections::BTreeMap<String, String>,
    /// Replaces the image's Entrypoint (its Cmd is then dropped unless `args`).
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    pub args: Option<Vec<String>>,
    pub volume: Option<Volume>,
    /// Only replicas declaring this region run it.
    pub region: Option<String>,
}

/// A service's one persistent volume: mounted at `path`, `size_mb` at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub path: String,
    pub size_mb: u64,
}

/// A write-only variable of a service, as stored: sealed, never readable here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSecret {
    pub name: String,
    /// Given as the file `/run/secrets/NAME` rather than an environment variable.
    pub as_file: bool,
    pub secret: StoredSecret,
    pub updated_at: Time,
}

/// What a change to a service's settings writes, in one transaction.
#[derive(Clone, Debug, Default)]
pub struct SettingsChange {
    pub traffic: Traffic,
    pub settings: Settings,
    /// Secrets set (added or replaced), already sealed.
    pub set_secrets: Vec<ServiceSecret>,
    /// Names of secrets removed.
    pub remove_secrets: Vec<String>,
}

/// How a service's container last exited. Neither code nor signal: it stopped
/// while no server watched (a machine restart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub at: Time,
}

impl Exit {
    /// A failure, for the `on-failure` policy: anything but exit code 0.
    pub fn failed(&self) -> bool {
        self.code != Some(0)
    }
}

#[derive(Clone, Debug)]
pub struct NewService {
    pub id: ServiceId,
    pub project_id: ProjectId,
    pub name: String,
    pub image: ImageRef,
    pub resources: Resources,
    pub restart_policy: RestartPolicy,
    pub traffic: Traffic,
    pub settings: Settings,
}

/// Where a registry password is kept: one form or the other, never both.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoredSecret {
    /// Sealed by the vault's keyring for (project, service, key version), in the
    /// database row.
    Sealed(Vec<u8>),
    /// In AWS Secrets Manager: the row keeps the secret's ARN, nothing else about it.
    SecretsManager { arn: String },
}

impl StoredSecret {
    pub fn arn(&self) -> Option<&str> {
        match self {
            StoredSecret::SecretsManager { arn } => Some(arn),
            StoredSecret::Sealed(_) => None,
        }
    }
}

/// A registry credential ready to store: the password is already sealed (or kept
/// elsewhere).
#[derive(Clone, Debug)]
pub struct NewCredential {
    pub registry_url: RegistryUrl,
    pub kind: CredentialKind,
    pub username: String,
    pub secret: StoredSecret,
    pub verified: bool,
}

#[derive(Clone, Debug)]
pub struct Credential {
    pub registry_url: RegistryUrl,
    pub kind: CredentialKind,
    pub username: String,
    pub secret: StoredSecret,
    pub verified: bool,
    pub updated_at: Time,
    /// The last background check of the credential, if any ran.
    pub health: Option<Health>,
}

/// How the last check of a stored credential went: `ok`, or failing with the
/// preflight code, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    /// `ok`, or the preflight code of the failure (`auth_failed`...).
    pub code: String,
    pub checked_at: Time,
}

#[derive(Clone, Debug)]
pub struct Service {
    pub id: ServiceId,
    pub project_id: ProjectId,
    pub name: String,
    pub image: ImageRef,
    pub status: ServiceStatus,
    pub created_at: Time,
    pub credential: Option<Credential>,
    pub resources: Resources,
    pub restart_policy: RestartPolicy,
    pub traffic: Traffic,
    pub settings: Settings,
    /// Its secrets' names, how each is given and when it was set (no values).
    pub secrets: Vec<SecretName>,
    /// Restarts of its running deployment (a new deploy counts from zero again).
    pub restarts: u32,
    pub last_exit: Option<Exit>,
}

/// An audit event to append with a change.
#[derive(Clone, Debug)]
pub struct NewAudit {
    pub actor: String,
    pub action: &'static str,
    pub project: Option<String>,
    pub service: Option<String>,
    pub metadata: serde_json::Value,
}

#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub id: i64,
    pub at: Time,
    pub actor: String,
    pub action: String,
    pub project: Option<String>,
    pub service: Option<String>,
    pub metadata: serde_json::Value,
}

/// A password sealed in the database, for re-sealing under a new key version.
#[derive(Clone, Debug)]
pub struct SealedRow {
    pub service_id: ServiceId,
    pub project_id: ProjectId,
    /// `None`: the service's registry password; a name: that service secret.
    pub secret_name: Option<String>,
    pub sealed_password: Vec<u8>,
}

/// A token scoped to one project: reads its registry credentials, nothing else.
#[derive(Clone, Debug)]
pub struct ProjectToken {
    pub id: ProjectTokenId,
    pub project_id: ProjectId,
    pub name: String,
    /// `read-credentials` (the only scope there is).
    pub scope: String,
    /// The name of the owner who created it.
    pub created_by: String,
    pub created_at: Time,
    pub last_used_at: Option<Time>,
    /// When it stops opening anything; `None`: never.
    pub expires_at: Option<Time>,
}

/// What a presented project token turned out to be.
#[derive(Clone, Debug)]
pub enum TokenUse {
    /// Within its life: stamped as used.
    Live(ProjectToken),
    /// Past its expiry: refused like an unknown token, but its project can be told
    /// (the refusal is audited), and it is not stamped as used.
    Expired(ProjectToken),
}

/// A time, in UTC. Kept as RFC 3339 text with milliseconds in both databases
/// ([`stamp`]): one width, so times compare as text in SQL.
pub type Time = chrono::DateTime<chrono::Utc>;

/// Now, to the millisecond (what a stored time keeps of it).
pub fn now() -> Time {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(3)
}

/// A time as the store writes times: RFC 3339 UTC with milliseconds (sorts as text).
pub fn stamp(t: Time) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A time the store wrote (any RFC 3339 time is read).
pub fn parse_stamp(text: &str) -> Result<Time, chrono::ParseError> {
    chrono::DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&chrono::Utc))
}

/// A deployment that should be running: `DEPLOYED`, of a service not terminated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveDeployment {
    pub id: DeploymentId,
    pub service_id: ServiceId,
    pub digest: Digest,
}

#[derive(Clone, Debug)]
pub struct Deployment {
    pub id: DeploymentId,
    pub service_id: ServiceId,
    pub project_id: ProjectId,
    pub status: DeploymentStatus,
    pub image: ImageRef,
    pub digest: Option<Digest>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
    /// The replica that claimed it (its advertised URL): where its log is.
    pub replica_url: Option<String>,
}

/// What a replica's workers are deploying now, and where the replica is (see
/// `DeploymentQueue::claim_deployment`).
#[derive(Clone, Debug, Default)]
pub struct Busy {
    pub services: Vec<ServiceId>,
    pub projects: Vec<ProjectId>,
    /// The replica's region: it claims deployments of services naming no region
    /// or this one.
    pub region: Option<String>,
}

/// A secret as a service's read-back shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretName {
    pub name: String,
    pub as_file: bool,
    pub updated_at: Time,
}

/// How a deployment ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    Deployed {
        digest: Digest,
    },
    Failed {
        digest: Option<Digest>,
        /// A stable public code (`auth_failed`, `runtime_error`, ...).
        code: &'static str,
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in ServiceStatus::ALL {
            assert_eq!(s.as_str().parse::<ServiceStatus>().unwrap(), *s);
        }
        for s in DeploymentStatus::ALL {
            assert_eq!(s.as_str().parse::<DeploymentStatus>().unwrap(), *s);
        }
        assert!("deployed".parse::<DeploymentStatus>().is_err());
    }

    #[test]
    fn stamps_round_trip() {
        let t = now();
        assert_eq!(parse_stamp(&stamp(t)).unwrap(), t);
        assert_eq!(
            stamp(parse_stamp("2024-05-01T12:00:00.120Z").unwrap()),
            "2024-05-01T12:00:00.120Z"
        );
    }
}
