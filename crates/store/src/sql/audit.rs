//! [`AuditLog`]: reading the events the other traits append.

use async_trait::async_trait;
use sqlx::Row;

use super::{time, SqlStore};
use crate::model::*;
use crate::{AuditLog, Result};

#[async_trait]
impl AuditLog for SqlStore {
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
        .bind(project.id.as_str())
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
                    at: time(r, "at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    project: r.try_get("project")?,
                    service: r.try_get("service")?,
                    metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }
}
