//! [`ProjectTokens`]: tokens scoped to a project, stored as their hash.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{append_audit, conflict, id, time, time_opt, SqlStore};
use crate::model::*;
use crate::{ProjectTokens, Result};

const COLUMNS: &str =
    "id, project_id, name, scope, created_by, created_at, last_used_at, expires_at";

fn token_from(row: &AnyRow) -> Result<ProjectToken> {
    Ok(ProjectToken {
        id: id(row, "id")?,
        project_id: id(row, "project_id")?,
        name: row.try_get("name")?,
        scope: row.try_get("scope")?,
        created_by: row.try_get("created_by")?,
        created_at: time(row, "created_at")?,
        last_used_at: time_opt(row, "last_used_at")?,
        expires_at: time_opt(row, "expires_at")?,
    })
}

#[async_trait]
impl ProjectTokens for SqlStore {
    async fn create_project_token(
        &self,
        project: &Project,
        name: &str,
        token_hash: &str,
        expires_at: Option<&Time>,
        created_by: &User,
        audit: NewAudit,
    ) -> Result<ProjectToken> {
        let token = ProjectToken {
            id: ProjectTokenId::random(),
            project_id: project.id.clone(),
            name: name.into(),
            scope: "read-credentials".into(),
            created_by: created_by.name.clone(),
            created_at: now(),
            last_used_at: None,
            expires_at: expires_at.copied(),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO project_tokens (id, project_id, name, scope, token_hash, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(token.id.as_str())
        .bind(project.id.as_str())
        .bind(&token.name)
        .bind(&token.scope)
        .bind(token_hash)
        .bind(&token.created_by)
        .bind(stamp(token.created_at))
        .bind(token.expires_at.map(stamp))
        .execute(&mut *tx)
        .await
        .map_err(conflict("a token with this name"))?;
        append_audit(&mut tx, Some(&project.id), &audit).await?;
        tx.commit().await?;
        Ok(token)
    }

    async fn project_tokens(&self, project: &ProjectId) -> Result<Vec<ProjectToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM project_tokens WHERE project_id = $1 ORDER BY name"
        ))
        .bind(project.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(token_from).collect()
    }

    async fn use_project_token(&self, token_hash: &str, now: &Time) -> Result<Option<TokenUse>> {
        // Times are RFC 3339 UTC text of one width: they compare as text on both
        // databases, so the expiry is decided in the same statement that stamps.
        let live = sqlx::query(&format!(
            "UPDATE project_tokens SET last_used_at = $1 \
             WHERE token_hash = $2 AND (expires_at IS NULL OR expires_at > $3) RETURNING {COLUMNS}"
        ))
        .bind(stamp(*now))
        .bind(token_hash)
        .bind(stamp(*now))
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = live {
            return Ok(Some(TokenUse::Live(token_from(&row)?)));
        }
        let expired = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM project_tokens WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        expired
            .as_ref()
            .map(|row| token_from(row).map(TokenUse::Expired))
            .transpose()
    }

    async fn audit_token_use(&self, token: &ProjectToken, audit: NewAudit) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        append_audit(&mut conn, Some(&token.project_id), &audit).await
    }

    async fn revoke_project_token(
        &self,
        project: &Project,
        name: &str,
        audit: NewAudit,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM project_tokens WHERE project_id = $1 AND name = $2")
            .bind(project.id.as_str())
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(false);
        }
        append_audit(&mut tx, Some(&project.id), &audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
