//! berth's storage behind one narrow trait, [`Store`], and its SQL implementation,
//! [`SqlStore`], which runs on SQLite (the embedded default) and PostgreSQL (for
//! several replicas).
//!
//! Every change to a service is written in one transaction together with its audit
//! event: **a refused or failed save stores nothing**.

mod model;
mod sql;

use async_trait::async_trait;

pub use model::*;
pub use sql::SqlStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("not found")]
    NotFound,
    #[error("database error: {0}")]
    Database(String),
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

/// What the server needs from storage. Implementations share one contract-test suite.
#[async_trait]
pub trait Store: Send + Sync {
    // users
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

    // projects
    async fn create_project(&self, name: &str, owner: &User, audit: NewAudit) -> Result<Project>;
    /// The project if `user` is a member (owner included).
    async fn project_for_member(&self, name: &str, user: &User) -> Result<Option<Membership>>;
    async fn add_member(&self, project: &Project, user: &User, audit: NewAudit) -> Result<()>;

    // services
    async fn create_service(
        &self,
        service: NewService,
        credential: Option<NewCredential>,
        audit: NewAudit,
    ) -> Result<Service>;
    async fn service(&self, project: &Project, name: &str) -> Result<Option<Service>>;
    async fn list_services(&self, project: &Project) -> Result<Vec<Service>>;
    /// Replaces the credential (and optionally the image) of a live service.
    async fn put_credential(
        &self,
        service: &Service,
        image: Option<&str>,
        credential: NewCredential,
        audit: NewAudit,
    ) -> Result<()>;
    /// Deletes the credential; `false` when there was none.
    async fn delete_credential(&self, service: &Service, audit: NewAudit) -> Result<bool>;
    /// Deletes the credential and marks the service `TERMINATED`.
    async fn terminate_service(&self, service: &Service, audit: NewAudit) -> Result<()>;

    // deployments
    async fn service_by_id(&self, id: &str) -> Result<Option<Service>>;
    async fn create_deployment(&self, service: &Service, audit: NewAudit) -> Result<Deployment>;
    async fn deployment(&self, service: &Service, id: &str) -> Result<Option<Deployment>>;
    async fn deployments_of(&self, service: &Service) -> Result<Vec<Deployment>>;
    /// Moves the oldest `PENDING_DEPLOY` deployment to `DEPLOYING` and returns it; on
    /// PostgreSQL several replicas claim different ones (`FOR UPDATE SKIP LOCKED`).
    /// `replica_url` is recorded as where the deployment runs.
    async fn claim_deployment(&self, replica_url: &str) -> Result<Option<Deployment>>;
    /// Records how `d` ended. A deployed one replaces its service's earlier deployed
    /// ones, which become `REMOVED` in the same transaction (their containers are
    /// stopped by the replica that runs them).
    async fn finish_deployment(&self, d: &Deployment, outcome: Outcome) -> Result<()>;
    /// The deployments that should be running (`DEPLOYED`, service not terminated):
    /// what each replica's containers are reconciled against, and whose images the
    /// garbage collector keeps.
    async fn live_deployments(&self) -> Result<Vec<LiveDeployment>>;
    /// The name of project `project_id` (for audit events the server writes itself).
    async fn project_name(&self, project_id: &str) -> Result<Option<String>>;
    /// The worker running `d` is alive (several replicas: each proves it holds its
    /// `DEPLOYING` rows).
    async fn heartbeat(&self, d: &Deployment) -> Result<()>;
    /// Deployments left `DEPLOYING` by a stopped server (no heartbeat since
    /// `stale_before`, an RFC 3339 time) become `FAILED` with a reason; another
    /// replica's deploy in progress is left alone.
    async fn repair_deployments(&self, stale_before: &str) -> Result<u64>;

    // audit
    async fn audit_events(
        &self,
        project: &Project,
        service: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>>;

    /// Counts a hit for `key` in a sliding window; `false` when over `max`. Shared by
    /// every replica on the same database.
    async fn rate_limit_hit(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        max: i64,
    ) -> Result<bool>;

    // vault support
    async fn key_check(&self) -> Result<Option<Vec<u8>>>;
    async fn set_key_check(&self, sealed: &[u8]) -> Result<()>;
    /// A named vault value (e.g. the KMS-wrapped keyring), shared by every replica.
    async fn vault_meta(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Sets a vault value if it is still `old` (`None`: if it does not exist yet);
    /// `false` when another writer got there first.
    async fn swap_vault_meta(&self, name: &str, old: Option<&[u8]>, new: &[u8]) -> Result<bool>;
    /// Credentials sealed in the database (not those in an external secret store).
    async fn sealed_credentials(&self) -> Result<Vec<SealedRow>>;
    /// Swaps a credential's sealed secret if it is still `old` (compare-and-swap, so a
    /// concurrent update wins over a rotation).
    async fn reseal_credential(&self, service_id: &str, old: &[u8], new: &[u8]) -> Result<bool>;
}
