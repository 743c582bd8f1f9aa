//! [`RateLimits`]: a sliding window of hits per key, in one table every replica shares.

use async_trait::async_trait;
use sqlx::Row;

use super::{Backend, SqlStore};
use crate::{RateLimits, Result};

#[async_trait]
impl RateLimits for SqlStore {
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
}
