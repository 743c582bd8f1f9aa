//! The SQL implementation of [`Store`] for SQLite and PostgreSQL.
//!
//! One implementation on sqlx's `Any` driver rather than one per database: the
//! queries are the same text on both (`$N` parameters, used in order, once each),
//! only the schema differs (BLOB/BYTEA, AUTOINCREMENT/BIGSERIAL), so two copies
//! would only drift apart. sqlx's checked macros bind to one driver, which is why
//! the queries are unchecked strings; the shared contract tests check them on both.

use async_trait::async_trait;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::str::FromStr;
use std::time::Duration;

use crate::model::*;
use crate::{Result, Store, StoreError};

const SQLITE_SCHEMA: &str = include_str!("migrations/sqlite.sql");
const POSTGRES_SCHEMA: &str = include_str!("migrations/postgres.sql");
/// Portable migrations after the first, in order: (version, SQL for both backends).
const MIGRATIONS: &[(i64, &str)] = &[
    (2, include_str!("migrations/002_deployments.sql")),
    (3, include_str!("migrations/003_secret_arn.sql")),
    (4, include_str!("migrations/004_heartbeat.sql")),
    (5, include_str!("migrations/005_replica.sql")),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A pool on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

impl SqlStore {
    /// Connects (creating a SQLite file if needed) and migrates.
    ///
    /// `sqlite://PATH` gets WAL, `secure_delete` (freed pages are zeroed, so a deleted
    /// secret does not linger in the file) and foreign keys on every connection.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Database(
                "the database URL must start with sqlite: or postgres://".into(),
            ));
        };
        let opts = AnyConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad database URL: {e}")))?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        use sqlx::Executor;
                        conn.execute(
                            "PRAGMA journal_mode=WAL; PRAGMA secure_delete=ON; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000; PRAGMA synchronous=NORMAL;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Database(format!("cannot open the database: {e}")))?;
        let store = SqlStore { pool, backend };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Replicas starting together: one migrates, the others wait.
            sqlx::query("SELECT pg_advisory_xact_lock(4242001)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            .execute(&mut *tx)
            .await?;
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_version")
            .fetch_one(&mut *tx)
            .await?
            .try_get("v")?;
        let current = current.unwrap_or(0);
        if current < 1 {
            let schema = match self.backend {
                Backend::Sqlite => SQLITE_SCHEMA,
                Backend::Postgres => POSTGRES_SCHEMA,
            };
            sqlx::raw_sql(schema).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_version (version) VALUES (1)")
                .execute(&mut *tx)
                .await?;
            tracing::info!("database schema created");
        }
        for (version, sql) in MIGRATIONS {
            if current < *version {
                sqlx::raw_sql(sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_version (version) VALUES ($1)")
                    .bind(*version)
                    .execute(&mut *tx)
                    .await?;
                tracing::info!(version, "database migrated");
            }
        }
        tx.commit().await?;
        Ok(())
    }

    pub fn is_sqlite(&self) -> bool {
        self.backend == Backend::Sqlite
    }

    /// Checkpoints the SQLite WAL into the main file (for backups and tests).
    pub async fn checkpoint(&self) -> Result<()> {
        if self.backend == Backend::Sqlite {
            sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn append_audit(
    conn: &mut sqlx::AnyConnection,
    project_id: Option<&str>,
    a: &NewAudit,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, project_id, project, service, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(now())
    .bind(&a.actor)
    .bind(a.action)
    .bind(project_id.map(str::to_owned))
    .bind(a.project.clone())
    .bind(a.service.clone())
    .bind(a.metadata.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

fn user_from(row: &AnyRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: if role == "admin" {
            UserRole::Admin
        } else {
            UserRole::User
        },
    })
}

const SERVICE_COLUMNS: &str = "s.id, s.project_id, s.name, s.image, s.status, s.created_at, \
     c.registry_url, c.username, c.sealed_password, c.secret_arn, c.verified, c.updated_at AS c_updated_at";

fn service_from(row: &AnyRow) -> Result<Service> {
    let registry_url: Option<String> = row.try_get("registry_url")?;
    let credential = match registry_url {
        Some(registry_url) => Some(Credential {
            registry_url,
            username: row.try_get("username")?,
            sealed_password: row.try_get("sealed_password")?,
            secret_arn: row.try_get("secret_arn")?,
            verified: row.try_get::<i64, _>("verified")? != 0,
            updated_at: row.try_get("c_updated_at")?,
        }),
        None => None,
    };
    Ok(Service {
        id: row.try_get("id")?,
        project_id: row.try_get("project_id")?,
        name: row.try_get("name")?,
        image: row.try_get("image")?,
        status: row.try_get("status")?,
        created_at: row.try_get("created_at")?,
        credential,
    })
}

async fn upsert_credential(
    conn: &mut sqlx::AnyConnection,
    service_id: &str,
    c: &NewCredential,
) -> Result<()> {
    sqlx::query("DELETE FROM credentials WHERE service_id = $1")
        .bind(service_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO credentials (service_id, registry_url, username, sealed_password, secret_arn, verified, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(service_id)
    .bind(&c.registry_url)
    .bind(&c.username)
    .bind(c.sealed_password.clone())
    .bind(c.secret_arn.clone())
    .bind(i64::from(c.verified))
    .bind(now())
    .execute(conn)
    .await?;
    Ok(())
}

const DEPLOYMENT_COLUMNS: &str =
    "id, service_id, project_id, status, image, digest, failure_code, failure_message, created_at, updated_at, replica_url";

fn deployment_from(r: &AnyRow) -> Result<Deployment> {
    Ok(Deployment {
        id: r.try_get("id")?,
        service_id: r.try_get("service_id")?,
        project_id: r.try_get("project_id")?,
        status: r.try_get("status")?,
        image: r.try_get("image")?,
        digest: r.try_get("digest")?,
        failure_code: r.try_get("failure_code")?,
        failure_message: r.try_get("failure_message")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
        replica_url: r.try_get("replica_url")?,
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn service_by_id(&self, id: &str) -> Result<Option<Service>> {
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s LEFT JOIN credentials c ON c.service_id = s.id WHERE s.id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(service_from).transpose()
    }

    async fn create_deployment(&self, service: &Service, audit: NewAudit) -> Result<Deployment> {
        let mut tx = self.pool.begin().await?;
        let at = now();
        let id = new_id();
        let updated = sqlx::query(
            "UPDATE services SET status = $1, updated_at = $2 WHERE id = $3 AND status <> $4",
        )
        .bind(PENDING_DEPLOY)
        .bind(&at)
        .bind(&service.id)
        .bind(STATUS_TERMINATED)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO deployments (id, service_id, project_id, status, image, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&id)
        .bind(&service.id)
        .bind(&service.project_id)
        .bind(PENDING_DEPLOY)
        .bind(&service.image)
        .bind(&at)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        tx.commit().await?;
        Ok(Deployment {
            id,
            service_id: service.id.clone(),
            project_id: service.project_id.clone(),
            status: PENDING_DEPLOY.into(),
            image: service.image.clone(),
            digest: None,
            failure_code: None,
            failure_message: None,
            created_at: at.clone(),
            updated_at: at,
            replica_url: None,
        })
    }

    async fn deployment(&self, service: &Service, id: &str) -> Result<Option<Deployment>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE service_id = $1 AND id = $2"
        ))
        .bind(&service.id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deployment_from).transpose()
    }

    async fn deployments_of(&self, service: &Service) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE service_id = $1 ORDER BY created_at DESC"
        ))
        .bind(&service.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deployment_from).collect()
    }

    async fn claim_deployment(&self, replica_url: &str) -> Result<Option<Deployment>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!(
            "UPDATE deployments SET status = $1, updated_at = $2, heartbeat_at = $3, replica_url = $4 WHERE id = \
             (SELECT id FROM deployments WHERE status = $5 ORDER BY created_at LIMIT 1 {lock}) \
             RETURNING {DEPLOYMENT_COLUMNS}"
        ))
        .bind(DEPLOYING)
        .bind(now())
        .bind(now())
        .bind(replica_url)
        .bind(PENDING_DEPLOY)
        .fetch_optional(&mut *tx)
        .await?;
        let d = row.as_ref().map(deployment_from).transpose()?;
        if let Some(d) = &d {
            sqlx::query("UPDATE services SET status = $1 WHERE id = $2 AND status <> $3")
                .bind(DEPLOYING)
                .bind(&d.service_id)
                .bind(STATUS_TERMINATED)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(d)
    }

    async fn finish_deployment(&self, d: &Deployment, outcome: Outcome) -> Result<()> {
        let (status, digest, code, message) = match outcome {
            Outcome::Deployed { digest } => (DEPLOYED, Some(digest), None, None),
            Outcome::Failed {
                digest,
                code,
                message,
            } => (FAILED, digest, Some(code), Some(message)),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE deployments SET status = $1, digest = $2, failure_code = $3, failure_message = $4, updated_at = $5 WHERE id = $6",
        )
        .bind(status)
        .bind(digest)
        .bind(code)
        .bind(message)
        .bind(now())
        .bind(&d.id)
        .execute(&mut *tx)
        .await?;
        if status == DEPLOYED {
            sqlx::query(
                "UPDATE deployments SET status = $1, updated_at = $2 WHERE service_id = $3 AND status = $4 AND id <> $5",
            )
            .bind(REMOVED)
            .bind(now())
            .bind(&d.service_id)
            .bind(DEPLOYED)
            .bind(&d.id)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE services SET status = $1 WHERE id = $2 AND status <> $3")
            .bind(status)
            .bind(&d.service_id)
            .bind(STATUS_TERMINATED)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn project_name(&self, project_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT name FROM projects WHERE id = $1")
            .bind(project_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }

    async fn live_deployments(&self) -> Result<Vec<LiveDeployment>> {
        let rows = sqlx::query(
            "SELECT d.id, d.service_id, d.digest FROM deployments d JOIN services s ON s.id = d.service_id \
             WHERE s.status <> $1 AND d.status = $2 AND d.digest IS NOT NULL",
        )
        .bind(STATUS_TERMINATED)
        .bind(DEPLOYED)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveDeployment {
                    id: r.try_get("id")?,
                    service_id: r.try_get("service_id")?,
                    digest: r.try_get("digest")?,
                })
            })
            .collect()
    }

    async fn heartbeat(&self, d: &Deployment) -> Result<()> {
        sqlx::query("UPDATE deployments SET heartbeat_at = $1 WHERE id = $2 AND status = $3")
            .bind(now())
            .bind(&d.id)
            .bind(DEPLOYING)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn repair_deployments(&self, stale_before: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let stale = sqlx::query(
            "SELECT id, service_id FROM deployments WHERE status = $1 AND (heartbeat_at IS NULL OR heartbeat_at < $2)",
        )
        .bind(DEPLOYING)
        .bind(stale_before)
        .fetch_all(&mut *tx)
        .await?;
        for row in &stale {
            let id: String = row.try_get("id")?;
            let service_id: String = row.try_get("service_id")?;
            sqlx::query(
                "UPDATE deployments SET status = $1, failure_code = 'runtime_error', \
                 failure_message = 'the server running this deploy stopped; deploy again', updated_at = $2 \
                 WHERE id = $3 AND status = $4",
            )
            .bind(FAILED)
            .bind(now())
            .bind(&id)
            .bind(DEPLOYING)
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE services SET status = $1 WHERE id = $2 AND status = $3")
                .bind(FAILED)
                .bind(&service_id)
                .bind(DEPLOYING)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(stale.len() as u64)
    }

    async fn create_user(
        &self,
        name: &str,
        token_hash: &str,
        role: UserRole,
        audit: NewAudit,
    ) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let id = new_id();
        sqlx::query("INSERT INTO users (id, name, token_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(name)
            .bind(token_hash)
            .bind(if role == UserRole::Admin { "admin" } else { "user" })
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict("a user with this name"),
                other => other,
            })?;
        append_audit(&mut tx, None, &audit).await?;
        tx.commit().await?;
        Ok(User {
            id,
            name: name.into(),
            role,
        })
    }

    async fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, name, role, token_hash FROM users WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<User>> {
        let row = sqlx::query("SELECT id, name, role FROM users WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn count_users(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    async fn create_project(&self, name: &str, owner: &User, audit: NewAudit) -> Result<Project> {
        let mut tx = self.pool.begin().await?;
        let project = Project {
            id: new_id(),
            name: name.into(),
            created_at: now(),
        };
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(&project.id)
            .bind(&project.name)
            .bind(&project.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict("a project with this name"),
                other => other,
            })?;
        sqlx::query("INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
            .bind(&project.id)
            .bind(&owner.id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        append_audit(&mut tx, Some(&project.id), &audit).await?;
        tx.commit().await?;
        Ok(project)
    }

    async fn project_for_member(&self, name: &str, user: &User) -> Result<Option<Membership>> {
        let row = sqlx::query(
            "SELECT p.id, p.name, p.created_at, m.role FROM projects p JOIN members m ON m.project_id = p.id WHERE p.name = $1 AND m.user_id = $2",
        )
        .bind(name)
        .bind(&user.id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let role: String = row.try_get("role")?;
        Ok(Some(Membership {
            project: Project {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
            },
            role: if role == "owner" {
                MemberRole::Owner
            } else {
                MemberRole::Member
            },
        }))
    }

    async fn add_member(&self, project: &Project, user: &User, audit: NewAudit) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, 'member', $3)")
            .bind(&project.id)
            .bind(&user.id)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict("this member"),
                other => other,
            })?;
        append_audit(&mut tx, Some(&project.id), &audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_service(
        &self,
        s: NewService,
        credential: Option<NewCredential>,
        audit: NewAudit,
    ) -> Result<Service> {
        let mut tx = self.pool.begin().await?;
        let at = now();
        sqlx::query(
            "INSERT INTO services (id, project_id, name, image, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.id)
        .bind(&s.project_id)
        .bind(&s.name)
        .bind(&s.image)
        .bind(STATUS_CREATED)
        .bind(&at)
        .bind(&at)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict("a service with this name"),
            other => other,
        })?;
        if let Some(c) = &credential {
            upsert_credential(&mut tx, &s.id, c).await?;
        }
        append_audit(&mut tx, Some(&s.project_id), &audit).await?;
        tx.commit().await?;
        Ok(Service {
            id: s.id,
            project_id: s.project_id,
            name: s.name,
            image: s.image,
            status: STATUS_CREATED.into(),
            created_at: at.clone(),
            credential: credential.map(|c| Credential {
                registry_url: c.registry_url,
                username: c.username,
                sealed_password: c.sealed_password,
                secret_arn: c.secret_arn,
                verified: c.verified,
                updated_at: at,
            }),
        })
    }

    async fn service(&self, project: &Project, name: &str) -> Result<Option<Service>> {
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s LEFT JOIN credentials c ON c.service_id = s.id WHERE s.project_id = $1 AND s.name = $2"
        ))
        .bind(&project.id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(service_from).transpose()
    }

    async fn list_services(&self, project: &Project) -> Result<Vec<Service>> {
        let rows = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s LEFT JOIN credentials c ON c.service_id = s.id WHERE s.project_id = $1 ORDER BY s.name"
        ))
        .bind(&project.id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(service_from).collect()
    }

    async fn put_credential(
        &self,
        service: &Service,
        image: Option<&str>,
        credential: NewCredential,
        audit: NewAudit,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE services SET image = $1, updated_at = $2 WHERE id = $3 AND status <> $4",
        )
        .bind(image.unwrap_or(&service.image))
        .bind(now())
        .bind(&service.id)
        .bind(STATUS_TERMINATED)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        upsert_credential(&mut tx, &service.id, &credential).await?;
        append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_credential(&self, service: &Service, audit: NewAudit) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM credentials WHERE service_id = $1")
            .bind(&service.id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Ok(false);
        }
        append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn terminate_service(&self, service: &Service, audit: NewAudit) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM credentials WHERE service_id = $1")
            .bind(&service.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE services SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(STATUS_TERMINATED)
            .bind(now())
            .bind(&service.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deployments SET status = $1, updated_at = $2 WHERE service_id = $3 AND status = $4",
        )
        .bind(REMOVED)
        .bind(now())
        .bind(&service.id)
        .bind(DEPLOYED)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_events(
        &self,
        project: &Project,
        service: Option<&str>,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, project, service, metadata FROM audit_events \
             WHERE project_id = $1 AND id < $2 AND ($3 = '' OR service = $4) ORDER BY id DESC LIMIT $5",
        )
        .bind(&project.id)
        .bind(before.unwrap_or(i64::MAX))
        .bind(service.unwrap_or(""))
        .bind(service.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let metadata: String = r.try_get("metadata")?;
                Ok(AuditEvent {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    project: r.try_get("project")?,
                    service: r.try_get("service")?,
                    metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    async fn rate_limit_hit(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
        max: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        // Old hits of every key go: the table never grows past one window of traffic.
        sqlx::query("DELETE FROM rate_hits WHERE at_ms <= $1")
            .bind(now_ms - window_ms)
            .execute(&mut *tx)
            .await?;
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM rate_hits WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if n >= max {
            tx.commit().await?;
            return Ok(false);
        }
        sqlx::query("INSERT INTO rate_hits (key, at_ms) VALUES ($1, $2)")
            .bind(key)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn key_check(&self) -> Result<Option<Vec<u8>>> {
        self.vault_meta("key_check").await
    }

    async fn set_key_check(&self, sealed: &[u8]) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM vault_meta WHERE name = 'key_check'")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO vault_meta (name, value) VALUES ('key_check', $1)")
            .bind(sealed.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn vault_meta(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT value FROM vault_meta WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn swap_vault_meta(&self, name: &str, old: Option<&[u8]>, new: &[u8]) -> Result<bool> {
        let r = match old {
            // The primary key makes a second first-writer fail instead of overwrite.
            None => sqlx::query("INSERT INTO vault_meta (name, value) VALUES ($1, $2)")
                .bind(name)
                .bind(new.to_vec())
                .execute(&self.pool)
                .await
                .map(|r| r.rows_affected()),
            Some(old) => {
                sqlx::query("UPDATE vault_meta SET value = $1 WHERE name = $2 AND value = $3")
                    .bind(new.to_vec())
                    .bind(name)
                    .bind(old.to_vec())
                    .execute(&self.pool)
                    .await
                    .map(|r| r.rows_affected())
            }
        };
        match r.map_err(StoreError::from) {
            Ok(n) => Ok(n == 1),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn sealed_credentials(&self) -> Result<Vec<SealedRow>> {
        let rows = sqlx::query(
            "SELECT c.service_id, s.project_id, c.sealed_password FROM credentials c JOIN services s ON s.id = c.service_id WHERE c.secret_arn IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SealedRow {
                    service_id: r.try_get("service_id")?,
                    project_id: r.try_get("project_id")?,
                    sealed_password: r.try_get("sealed_password")?,
                })
            })
            .collect()
    }

    async fn reseal_credential(&self, service_id: &str, old: &[u8], new: &[u8]) -> Result<bool> {
        let r = sqlx::query("UPDATE credentials SET sealed_password = $1 WHERE service_id = $2 AND sealed_password = $3")
            .bind(new.to_vec())
            .bind(service_id)
            .bind(old.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
