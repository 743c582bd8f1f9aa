//! [`Stats`]: what `/readyz` and `/metrics` read.

use async_trait::async_trait;
use sqlx::Row;

use super::{SqlStore, MIGRATIONS};
use crate::{Counts, Result, Stats, StoreError};

#[async_trait]
impl Stats for SqlStore {
    async fn ready(&self) -> Result<()> {
        let current: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM schema_version")
            .fetch_one(&self.pool)
            .await?
            .try_get("v")?;
        let latest = MIGRATIONS.last().map_or(1, |(v, _)| *v);
        match current {
            Some(v) if v >= latest => Ok(()),
            v => Err(StoreError::Database(format!(
                "the database schema is at version {}, this berth needs {latest}",
                v.unwrap_or(0)
            ))),
        }
    }

    async fn stats(&self) -> Result<Counts> {
        let count = |sql: &'static str| async move {
            sqlx::query(sql)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>("k")?, r.try_get::<i64, _>("n")?)))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Counts {
            deployments: count(
                "SELECT status AS k, COUNT(*) AS n FROM deployments GROUP BY status ORDER BY status",
            )
            .await?,
            credentials: count(
                "SELECT COALESCE(c.health_status, 'unchecked') AS k, COUNT(*) AS n FROM credentials c \
                 JOIN services s ON s.id = c.service_id WHERE s.status <> 'TERMINATED' \
                 GROUP BY COALESCE(c.health_status, 'unchecked') ORDER BY 1",
            )
            .await?,
        })
    }
}
