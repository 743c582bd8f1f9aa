//! [`CredentialChecks`]: which replica checks which stored credential, and the
//! results.

use async_trait::async_trait;
use sqlx::Row;

use super::{append_audit, SqlStore};
use crate::model::*;
use crate::{CredentialChecks, Result};

#[async_trait]
impl CredentialChecks for SqlStore {
    async fn claim_credential_checks(
        &self,
        due_before: &Time,
        now: &Time,
        hold_until: &Time,
        limit: i64,
    ) -> Result<Vec<ServiceId>> {
        // One statement: the WHERE is evaluated again on each row it updates, so
        // of two replicas claiming at once (PostgreSQL re-reads a row another
        // transaction changed; SQLite has one writer), only one gets a row.
        let rows = sqlx::query(
            "UPDATE credentials SET health_claimed_until = $1 \
             WHERE service_id IN ( \
               SELECT c.service_id FROM credentials c JOIN services s ON s.id = c.service_id \
               WHERE s.status <> 'TERMINATED' \
                 AND (c.health_checked_at IS NULL OR c.health_checked_at < $2) \
                 AND (c.health_claimed_until IS NULL OR c.health_claimed_until < $3) \
               ORDER BY c.health_checked_at IS NOT NULL, c.health_checked_at LIMIT $4) \
             AND (health_checked_at IS NULL OR health_checked_at < $5) \
             AND (health_claimed_until IS NULL OR health_claimed_until < $6) \
             RETURNING service_id",
        )
        .bind(stamp(*hold_until))
        .bind(stamp(*due_before))
        .bind(stamp(*now))
        .bind(limit)
        .bind(stamp(*due_before))
        .bind(stamp(*now))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok(ServiceId::from(r.try_get::<String, _>("service_id")?)))
            .collect()
    }

    async fn record_health(
        &self,
        service: &Service,
        updated_at: &Time,
        health: &Health,
        audit: NewAudit,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let before = sqlx::query(
            "SELECT health_status, health_code FROM credentials WHERE service_id = $1 AND updated_at = $2",
        )
        .bind(service.id.as_str())
        .bind(stamp(*updated_at))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(before) = before else {
            // Replaced or removed since the check began: its result is moot.
            return Ok(false);
        };
        let status = if health.ok { "ok" } else { "failing" };
        let changed = before
            .try_get::<Option<String>, _>("health_status")?
            .as_deref()
            != Some(status)
            || before
                .try_get::<Option<String>, _>("health_code")?
                .as_deref()
                != Some(health.code.as_str());
        sqlx::query(
            "UPDATE credentials SET health_status = $1, health_code = $2, health_checked_at = $3, health_claimed_until = NULL WHERE service_id = $4 AND updated_at = $5",
        )
        .bind(status)
        .bind(&health.code)
        .bind(stamp(health.checked_at))
        .bind(service.id.as_str())
        .bind(stamp(*updated_at))
        .execute(&mut *tx)
        .await?;
        if changed {
            append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }
}
