use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserRole {
    Admin,
    User,
}

#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: UserRole,
}

#[derive(Clone, Debug)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub created_at: String,
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

#[derive(Clone, Debug)]
pub struct NewService {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub image: String,
}

/// A registry credential ready to store: the password is already sealed.
#[derive(Clone, Debug)]
pub struct NewCredential {
    pub registry_url: String,
    pub username: String,
    pub sealed_password: Vec<u8>,
    /// Set when the password lives in AWS Secrets Manager (then `sealed_password` is
    /// empty): the secret's ARN, nothing else about it.
    pub secret_arn: Option<String>,
    pub verified: bool,
}

#[derive(Clone, Debug)]
pub struct Credential {
    pub registry_url: String,
    pub username: String,
    pub sealed_password: Vec<u8>,
    pub secret_arn: Option<String>,
    pub verified: bool,
    pub updated_at: String,
}

impl Credential {
    pub fn password_set(&self) -> bool {
        !self.sealed_password.is_empty() || self.secret_arn.is_some()
    }
}

#[derive(Clone, Debug)]
pub struct Service {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub image: String,
    pub status: String,
    pub created_at: String,
    pub credential: Option<Credential>,
}

pub const STATUS_CREATED: &str = "CREATED";
pub const STATUS_TERMINATED: &str = "TERMINATED";

/// An audit event to append with a change.
#[derive(Clone, Debug)]
pub struct NewAudit {
    pub actor: String,
    pub action: &'static str,
    pub project: Option<String>,
    pub service: Option<String>,
    pub metadata: serde_json::Value,
}

#[derive(Clone, Debug, Serialize)]
pub struct AuditEvent {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub project: Option<String>,
    pub service: Option<String>,
    pub metadata: serde_json::Value,
}

#[derive(Clone, Debug)]
pub struct SealedRow {
    pub service_id: String,
    pub project_id: String,
    pub sealed_password: Vec<u8>,
}

/// A random 128-bit id, hex.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Now, RFC 3339 UTC with milliseconds (sorts as text).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub const PENDING_DEPLOY: &str = "PENDING_DEPLOY";
pub const DEPLOYING: &str = "DEPLOYING";
pub const DEPLOYED: &str = "DEPLOYED";
pub const FAILED: &str = "FAILED";
/// A deployed deployment that no longer runs: a newer one of its service was
/// deployed (it replaces this one), or the service was terminated.
pub const REMOVED: &str = "REMOVED";

/// A deployment that should be running: `DEPLOYED`, of a service not terminated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveDeployment {
    pub id: String,
    pub service_id: String,
    pub digest: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Deployment {
    pub id: String,
    #[serde(skip)]
    pub service_id: String,
    #[serde(skip)]
    pub project_id: String,
    pub status: String,
    pub image: String,
    pub digest: Option<String>,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The replica that claimed it (its advertised URL): where its log is.
    #[serde(skip)]
    pub replica_url: Option<String>,
}

/// How a deployment ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    Deployed {
        digest: String,
    },
    Failed {
        digest: Option<String>,
        code: String,
        message: String,
    },
}
