//! berth's storage behind narrow traits, one per concern (in the manner of lldap's
//! backend handlers): [`Accounts`], [`Services`], [`DeploymentQueue`],
//! [`AuditLog`], [`RateLimits`], [`VaultMeta`], [`CredentialChecks`], [`Stats`]. [`Store`] is all of them, and
//! [`SqlStore`] implements them on SQLite (the embedded default) and PostgreSQL
//! (for several replicas), one SQL file per trait under `sql/`.
//!
//! Rows decode into domain types (`berth_types`) and status enums. Every change to
//! a service is written in one transaction together with its audit event: **a
//! refused or failed save stores nothing**.

mod model;
mod sql;

use async_trait::async_trait;
use berth_types::{Digest, ImageRef};

pub use model::*;
pub use sql::SqlStore;

/// The message of a deployment that was still pending or deploying when its
/// service was terminated (it ends `REMOVED`).
pub const TERMINATED_IN_FLIGHT: &str =
    "the service was terminated before this deployment finished: its pull was stopped";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Database(String),
    /// A stored value that does not decode (written by hand, or by a future
    /// version): reported as what it is, never passed on as a string.
    #[error("a stored {column} is not valid: {reason}")]
    Corrupt {
        column: &'static str,
        reason: String,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(d) = &e {
            let unique = d.code().as_deref() == Some("23505")
                || d.code().as_deref() == Some("2067")
                || d.code().as_deref() == Some("1555")
                || d.message().contains("UNIQUE constraint failed");
            if unique {
                return StoreError::Conflict("a resource with this name");
            }
        }
        StoreError::Database(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Users, projects and who belongs to which.
#[async_trait]
pub trait Accounts: Send + Sync {
    async fn create_user(
        &self,
        name: &str,
        token_hash: &str,
        role: UserRole,
        audit: NewAudit,
    ) -> Result<User>;
    async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>>;
    async fn user_by_name(&self, name: &str) -> Result<Option<User>>;
    async fn count_users(&self) -> Result<i64>;
    async fn create_project(&self, name: &str, owner: &User, audit: NewAudit) -> Result<Project>;
    /// The project if `user` is a member (owner included).
    async fn project_for_member(&self, name: &str, user: &User) -> Result<Option<Membership>>;
    /// Every project `user` is a member of (owner included), by name.
    async fn projects_of(&self, user: &User) -> Result<Vec<Membership>>;
    async fn add_member(&self, project: &Project, user: &User, audit: NewAudit) -> Result<()>;
    /// The name of a project (for audit events the server writes itself).
    async fn project_name(&self, project_id: &ProjectId) -> Result<Option<String>>;
}

/// Services and their registry credentials.
#[async_trait]
pub trait Services: Send + Sync {
    async fn create_service(
        &self,
        service: NewService,
        secrets: Vec<ServiceSecret>,
        credential: Option<NewCredential>,
        audit: NewAudit,
    ) -> Result<Service>;
    async fn service(&self, project: &Project, name: &str) -> Result<Option<Service>>;
    async fn service_by_id(&self, id: &ServiceId) -> Result<Option<Service>>;
    async fn list_services(&self, project: &Project) -> Result<Vec<Service>>;
    /// Replaces the credential (and optionally the image) of a live service.
    async fn put_credential(
        &self,
        service: &Service,
        image: Option<&ImageRef>,
        credential: NewCredential,
        audit: NewAudit,
    ) -> Result<()>;
    /// Replaces the settings of a live service (how it is reached, what runs, its
    /// secrets), with one audit event per kind of change; `Conflict` when another
    /// service holds one of the domains, and then nothing changed.
    async fn update_settings(
        &self,
        service: &Service,
        change: &SettingsChange,
        audits: Vec<NewAudit>,
    ) -> Result<()>;
    /// A service's secrets, sealed, for a deploy.
    async fn service_secrets(&self, service: &ServiceId) -> Result<Vec<ServiceSecret>>;
    /// Deletes the credential; `false` when there was none.
    async fn delete_credential(&self, service: &Service, audit: NewAudit) -> Result<bool>;
    /// Deletes the credential and marks the service `TERMINATED` (its deployed
    /// deployments `REMOVED`).
    async fn terminate_service(&self, service: &Service, audit: NewAudit) -> Result<()>;
    /// Records how the service's container exited; `restarted`: the restart policy
    /// starts it again (one more restart counted).
    async fn record_exit(&self, service: &ServiceId, exit: &Exit, restarted: bool) -> Result<()>;
}

/// The durable deployment queue that every replica's worker takes from.
#[async_trait]
pub trait DeploymentQueue: Send + Sync {
    /// Queues a `PENDING_DEPLOY` deployment of the service's image (`NotFound` once
    /// the service is terminated).
    async fn create_deployment(&self, service: &Service, audit: NewAudit) -> Result<Deployment>;
    /// Queues a deployment by which berth restarts the service of `replaces` (whose
    /// container stopped while no server watched); its success keeps the service's
    /// restart count, where a new deploy's resets it.
    async fn restart_deployment(
        &self,
        service: &Service,
        replaces: &DeploymentId,
        audit: NewAudit,
    ) -> Result<Deployment>;
    async fn deployment(&self, service: &Service, id: &str) -> Result<Option<Deployment>>;
    async fn deployments_of(&self, service: &Service) -> Result<Vec<Deployment>>;
    /// Moves the oldest `PENDING_DEPLOY` deployment to `DEPLOYING` and returns it; on
    /// PostgreSQL several replicas claim different ones (`FOR UPDATE SKIP LOCKED`).
    /// `replica_url` is recorded as where the deployment runs. Never one of a
    /// service in `busy.services`; one of a project in `busy.projects` only when no
    /// other project waits (fairness between tenants on a replica's workers).
    async fn claim_deployment(&self, replica_url: &str, busy: &Busy) -> Result<Option<Deployment>>;
    /// Records that the replica at `url` (of `region`) is alive now.
    async fn announce_replica(&self, url: &str, region: Option<&str>) -> Result<()>;
    /// Whether a replica of `region` was alive at `seen_since` or later.
    async fn region_served(&self, region: &str, seen_since: &Time) -> Result<bool>;
    /// Records how `d` ended. A deployed one replaces its service's earlier deployed
    /// ones, which become `REMOVED` in the same transaction (their containers are
    /// stopped by the replica that runs them). Only a `DEPLOYING` one ends: a
    /// deployment a repair already marked `FAILED` is left as it is.
    async fn finish_deployment(&self, d: &Deployment, outcome: Outcome) -> Result<()>;
    /// The deployments that should be running (`DEPLOYED`, service not terminated):
    /// what each replica's containers are reconciled against, and whose images the
    /// garbage collector keeps.
    async fn live_deployments(&self) -> Result<Vec<LiveDeployment>>;
    /// The worker running `d` is alive (several replicas: each proves it holds its
    /// `DEPLOYING` rows).
    async fn heartbeat(&self, d: &Deployment) -> Result<()>;
    /// Deployments left `DEPLOYING` by a stopped server (no heartbeat since
    /// `stale_before`, an RFC 3339 time) become `FAILED` with a reason; another
    /// replica's deploy in progress is left alone.
    async fn repair_deployments(&self, stale_before: &Time) -> Result<u64>;
}

/// The append-only audit log (appended by the other traits' writes, in their
/// transactions).
#[async_trait]
pub trait AuditLog: Send + Sync {
    async fn audit_events(
        &self,
        project: &Project,
        service: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>>;
}

/// Sliding-window counters shared by every replica on the same database.
#[async_trait]
pub trait RateLimits: Send + Sync {
    /// Counts a hit for `key`; `false` when over `max` in the window.
    async fn rate_limit_hit(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        max: i64,
    ) -> Result<bool>;
}

/// What the vault keeps in the database: the key check, named values (the
/// KMS-wrapped keyring), and the sealed passwords a rotation re-seals.
#[async_trait]
pub trait VaultMeta: Send + Sync {
    async fn key_check(&self) -> Result<Option<Vec<u8>>>;
    async fn set_key_check(&self, sealed: &[u8]) -> Result<()>;
    /// A named vault value, shared by every replica.
    async fn vault_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Sets a vault value if it is still `old` (`None`: if it does not exist yet);
    /// `false` when another writer got there first.
    async fn swap_vault_meta(&self, name: &str, old: Option<&[u8]>, new: &[u8]) -> Result<bool>;
    /// Credentials and service secrets sealed in the database (not those in an
    /// external secret store).
    async fn sealed_credentials(&self) -> Result<Vec<SealedRow>>;
    /// Swaps a credential's sealed secret if it is still `old` (compare-and-swap, so a
    /// concurrent update wins over a rotation).
    async fn reseal_credential(
        &self,
        service_id: &ServiceId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool>;
    /// [`VaultMeta::reseal_credential`] for a service secret.
    async fn reseal_service_secret(
        &self,
        service_id: &ServiceId,
        name: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool>;
}

/// The background checks of stored credentials, shared by every replica: each
/// credential is checked once per period, by one replica.
#[async_trait]
pub trait CredentialChecks: Send + Sync {
    /// Takes up to `limit` credentials last checked before `due_before` (or never)
    /// that no replica holds, and holds them until `hold_until` (RFC 3339 times).
    async fn claim_credential_checks(
        &self,
        due_before: &Time,
        now: &Time,
        hold_until: &Time,
        limit: i64,
    ) -> Result<Vec<ServiceId>>;
    /// Records a check's result, if the credential is still the one checked (saved
    /// at `updated_at`); a change of health is appended to the audit log as
    /// `audit` says. `true` when the health changed.
    async fn record_health(
        &self,
        service: &Service,
        updated_at: &Time,
        health: &Health,
        audit: NewAudit,
    ) -> Result<bool>;
}

/// Tokens scoped to a project (read its registry credentials), created and
/// revoked by its owners.
#[async_trait]
pub trait ProjectTokens: Send + Sync {
    /// A new token (its hash), expiring at `expires_at` (RFC 3339) if given;
    /// `Conflict` when the project has one of this name.
    async fn create_project_token(
        &self,
        project: &Project,
        name: &str,
        token_hash: &str,
        expires_at: Option<&Time>,
        created_by: &User,
        audit: NewAudit,
    ) -> Result<ProjectToken>;
    /// The project's tokens, by name.
    async fn project_tokens(&self, project: &ProjectId) -> Result<Vec<ProjectToken>>;
    /// The token with this hash as of `now` (RFC 3339): live (then stamped as used
    /// at `now`) or expired; `None` when there is none.
    async fn use_project_token(&self, token_hash: &str, now: &Time) -> Result<Option<TokenUse>>;
    /// Appends what a token read to the audit log (every use is listed).
    async fn audit_token_use(&self, token: &ProjectToken, audit: NewAudit) -> Result<()>;
    /// Deletes the project's token of this name; `false` when there is none.
    async fn revoke_project_token(
        &self,
        project: &Project,
        name: &str,
        audit: NewAudit,
    ) -> Result<bool>;
}

/// What the operator's probes and metrics read.
#[async_trait]
pub trait Stats: Send + Sync {
    /// The database answers and carries every migration this version knows.
    async fn ready(&self) -> Result<()>;
    /// Deployments by status, and stored credentials by health (`ok`, `failing`,
    /// `unchecked`).
    async fn stats(&self) -> Result<Counts>;
}

/// Rows counted by what they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub deployments: Vec<(String, i64)>,
    pub credentials: Vec<(String, i64)>,
}

/// All of storage: what the HTTP edge holds. Inner parts take the narrow trait they
/// need (the deploy worker a [`DeploymentQueue`] and [`Services`], the vault a
/// [`VaultMeta`]).
pub trait Store:
    Accounts
    + Services
    + DeploymentQueue
    + AuditLog
    + RateLimits
    + VaultMeta
    + CredentialChecks
    + ProjectTokens
    + Stats
{
}

impl<
        T: Accounts
            + Services
            + DeploymentQueue
            + AuditLog
            + RateLimits
            + VaultMeta
            + CredentialChecks
            + ProjectTokens
            + Stats,
    > Store for T
{
}

/// Decodes a stored digest.
pub(crate) fn decode_digest(s: &str) -> Result<Digest> {
    s.parse()
        .map_err(|e: berth_types::DigestError| StoreError::Corrupt {
            column: "digest",
            reason: e.to_string(),
        })
}

/// Every store trait, for code that calls them on a concrete [`SqlStore`].
pub mod prelude {
    pub use crate::{
        Accounts, AuditLog, CredentialChecks, DeploymentQueue, ProjectTokens, RateLimits, Services,
        Stats, VaultMeta,
    };
}
