//! [`Accounts`]: users, projects, members.

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{append_audit, conflict, id, time, SqlStore};
use crate::model::*;
use crate::{Accounts, Result};

fn user_from(row: &AnyRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: id(row, "id")?,
        name: row.try_get("name")?,
        role: if role == "admin" {
            UserRole::Admin
        } else {
            UserRole::User
        },
    })
}

#[async_trait]
impl Accounts for SqlStore {
    async fn create_user(
        &self,
        name: &str,
        token_hash: &str,
        role: UserRole,
        audit: NewAudit,
    ) -> Result<User> {
        let mut tx = self.pool.begin().await?;
        let id = UserId::random();
        sqlx::query("INSERT INTO users (id, name, token_hash, role, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id.as_str())
            .bind(name)
            .bind(token_hash)
            .bind(if role == UserRole::Admin { "admin" } else { "user" })
            .bind(stamp(now()))
            .execute(&mut *tx)
            .await
            .map_err(conflict("a user with this name"))?;
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
            id: ProjectId::random(),
            name: name.into(),
            created_at: now(),
        };
        sqlx::query("INSERT INTO projects (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(project.id.as_str())
            .bind(&project.name)
            .bind(stamp(project.created_at))
            .execute(&mut *tx)
            .await
            .map_err(conflict("a project with this name"))?;
        sqlx::query("INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, 'owner', $3)")
            .bind(project.id.as_str())
            .bind(owner.id.as_str())
            .bind(stamp(now()))
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
        .bind(user.id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(membership).transpose()
    }

    async fn projects_of(&self, user: &User) -> Result<Vec<Membership>> {
        sqlx::query(
            "SELECT p.id, p.name, p.created_at, m.role FROM projects p JOIN members m ON m.project_id = p.id WHERE m.user_id = $1 ORDER BY p.name",
        )
        .bind(user.id.as_str())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(membership)
        .collect()
    }

    async fn add_member(&self, project: &Project, user: &User, audit: NewAudit) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO members (project_id, user_id, role, created_at) VALUES ($1, $2, 'member', $3)")
            .bind(project.id.as_str())
            .bind(user.id.as_str())
            .bind(stamp(now()))
            .execute(&mut *tx)
            .await
            .map_err(conflict("this member"))?;
        append_audit(&mut tx, Some(&project.id), &audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn project_name(&self, project_id: &ProjectId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT name FROM projects WHERE id = $1")
            .bind(project_id.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("name")).transpose()?)
    }
}

/// A project joined with the caller's role in it.
fn membership(row: &AnyRow) -> Result<Membership> {
    let role: String = row.try_get("role")?;
    Ok(Membership {
        project: Project {
            id: id(row, "id")?,
            name: row.try_get("name")?,
            created_at: time(row, "created_at")?,
        },
        role: if role == "owner" {
            MemberRole::Owner
        } else {
            MemberRole::Member
        },
    })
}
