//! The SQL implementation of the store's traits for SQLite and PostgreSQL, one file
//! per trait; this one connects, migrates and holds what the files share.
//!
//! One implementation on sqlx's `Any` driver rather than one per database: the
//! queries are the same text on both (`$N` parameters, used in order, once each),
//! only the schema differs (BLOB/BYTEA, AUTOINCREMENT/BIGSERIAL), so two copies
//! would only drift apart. sqlx's checked macros bind to one driver, which is why
//! the queries are unchecked strings; the shared contract tests check them on both.

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::str::FromStr;
use std::time::Duration;

use crate::model::*;
use crate::{Result, StoreError};

mod accounts;
mod audit;
mod checks;
mod project_tokens;
mod queue;
mod rate_limit;
mod services;
mod stats;
mod vault_meta;

const SQLITE_SCHEMA: &str = include_str!("../migrations/sqlite.sql");
const POSTGRES_SCHEMA: &str = include_str!("../migrations/postgres.sql");
/// Portable migrations after the first, in order: (version, SQL for both backends).
const MIGRATIONS: &[(i64, &str)] = &[
    (2, include_str!("../migrations/002_deployments.sql")),
    (3, include_str!("../migrations/003_secret_arn.sql")),
    (4, include_str!("../migrations/004_heartbeat.sql")),
    (5, include_str!("../migrations/005_replica.sql")),
    (6, include_str!("../migrations/006_resources.sql")),
    (7, include_str!("../migrations/007_restarts.sql")),
    (8, include_str!("../migrations/008_health.sql")),
    (9, include_str!("../migrations/009_kind.sql")),
    (10, include_str!("../migrations/010_project_tokens.sql")),
    (11, include_str!("../migrations/011_token_expiry.sql")),
    (12, include_str!("../migrations/012_traffic.sql")),
    (13, include_str!("../migrations/013_settings.sql")),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A pool on SQLite or PostgreSQL.
#[derive(Clone)]
pub struct SqlStore {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
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

/// Appends an audit event in the transaction of the change it records.
async fn append_audit(
    conn: &mut sqlx::AnyConnection,
    project_id: Option<&ProjectId>,
    a: &NewAudit,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (at, actor, action, project_id, project, service, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(stamp(now()))
    .bind(&a.actor)
    .bind(a.action)
    .bind(project_id.map(|p| p.as_str().to_owned()))
    .bind(a.project.clone())
    .bind(a.service.clone())
    .bind(a.metadata.to_string())
    .execute(conn)
    .await?;
    Ok(())
}

/// A column decoded through `FromStr` into its domain type.
fn parsed<T>(row: &AnyRow, column: &'static str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    let text: String = row.try_get(column)?;
    text.parse().map_err(|e: T::Err| StoreError::Corrupt {
        column,
        reason: e.to_string(),
    })
}

/// A time column (RFC 3339 text, as [`stamp`] writes it).
fn time(row: &AnyRow, column: &'static str) -> Result<Time> {
    let text: String = row.try_get(column)?;
    decode_time(&text, column)
}

/// A time column that may be `NULL`.
fn time_opt(row: &AnyRow, column: &'static str) -> Result<Option<Time>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| decode_time(&t, column)).transpose()
}

fn decode_time(text: &str, column: &'static str) -> Result<Time> {
    parse_stamp(text).map_err(|e| StoreError::Corrupt {
        column,
        reason: format!("{text:?} is not a time: {e}"),
    })
}

/// An id column.
fn id<T: From<String>>(row: &AnyRow, column: &'static str) -> Result<T> {
    Ok(T::from(row.try_get::<String, _>(column)?))
}

/// A unique violation named for what it is about.
fn conflict(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| match StoreError::from(e) {
        StoreError::Conflict(_) => StoreError::Conflict(what),
        other => other,
    }
}

impl SqlStore {
    /// Runs raw SQL, for tests that need a row no API would write.
    #[doc(hidden)]
    pub async fn corrupt_for_tests(&self, sql: &str) {
        sqlx::raw_sql(sql)
            .execute(&self.pool)
            .await
            .expect("test SQL");
    }
}
