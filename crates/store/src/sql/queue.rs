//! [`DeploymentQueue`]: the durable queue (claim with `SKIP LOCKED` on PostgreSQL,
//! heartbeats, repair of deploys whose server stopped).

use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{append_audit, id, parsed, time, Backend, SqlStore};
use crate::model::*;
use crate::{decode_digest, DeploymentQueue, Result, StoreError};

const DEPLOYMENT_COLUMNS: &str =
    "id, service_id, project_id, status, image, digest, failure_code, failure_message, created_at, updated_at, replica_url";

fn deployment_from(r: &AnyRow) -> Result<Deployment> {
    let digest: Option<String> = r.try_get("digest")?;
    Ok(Deployment {
        id: id(r, "id")?,
        service_id: id(r, "service_id")?,
        project_id: id(r, "project_id")?,
        status: parsed(r, "status")?,
        image: parsed(r, "image")?,
        digest: digest.as_deref().map(decode_digest).transpose()?,
        failure_code: r.try_get("failure_code")?,
        failure_message: r.try_get("failure_message")?,
        created_at: time(r, "created_at")?,
        updated_at: time(r, "updated_at")?,
        replica_url: r.try_get("replica_url")?,
    })
}

#[async_trait]
impl DeploymentQueue for SqlStore {
    async fn create_deployment(&self, service: &Service, audit: NewAudit) -> Result<Deployment> {
        self.insert_deployment(service, None, audit).await
    }

    async fn restart_deployment(
        &self,
        service: &Service,
        replaces: &DeploymentId,
        audit: NewAudit,
    ) -> Result<Deployment> {
        self.insert_deployment(service, Some(replaces), audit).await
    }

    async fn deployment(&self, service: &Service, id: &str) -> Result<Option<Deployment>> {
        let row = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE service_id = $1 AND id = $2"
        ))
        .bind(service.id.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(deployment_from).transpose()
    }

    async fn deployments_of(&self, service: &Service) -> Result<Vec<Deployment>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE service_id = $1 ORDER BY created_at DESC"
        ))
        .bind(service.id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(deployment_from).collect()
    }

    async fn claim_deployment(&self, replica_url: &str, busy: &Busy) -> Result<Option<Deployment>> {
        // Another project's first; a busy project's only when nobody else waits.
        if !busy.projects.is_empty() {
            let excluded = busy.projects.iter().map(|p| p.as_str()).collect::<Vec<_>>();
            if let Some(d) = self
                .claim(
                    replica_url,
                    busy.region.as_deref(),
                    &busy.services,
                    &excluded,
                )
                .await?
            {
                return Ok(Some(d));
            }
        }
        self.claim(replica_url, busy.region.as_deref(), &busy.services, &[])
            .await
    }

    async fn announce_replica(&self, url: &str, region: Option<&str>) -> Result<()> {
        sqlx::query(
            "INSERT INTO replicas (url, region, seen_at) VALUES ($1, $2, $3) \
             ON CONFLICT (url) DO UPDATE SET region = excluded.region, seen_at = excluded.seen_at",
        )
        .bind(url)
        .bind(region)
        .bind(stamp(now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn region_served(&self, region: &str, seen_since: &Time) -> Result<bool> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM replicas WHERE region = $1 AND seen_at >= $2")
                .bind(region)
                .bind(stamp(*seen_since))
                .fetch_one(&self.pool)
                .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    async fn finish_deployment(&self, d: &Deployment, outcome: Outcome) -> Result<()> {
        let (status, digest, code, message) = match outcome {
            Outcome::Deployed { digest } => (DeploymentStatus::Deployed, Some(digest), None, None),
            Outcome::Failed {
                digest,
                code,
                message,
            } => (DeploymentStatus::Failed, digest, Some(code), Some(message)),
        };
        let mut tx = self.pool.begin().await?;
        // Only a deployment still DEPLOYING ends here: one that a repair already
        // marked FAILED (its worker was silent too long) stays as it is.
        let ended = sqlx::query(
            "UPDATE deployments SET status = $1, digest = $2, failure_code = $3, failure_message = $4, updated_at = $5 WHERE id = $6 AND status = $7",
        )
        .bind(status.as_str())
        .bind(digest.map(|d| d.to_string()))
        .bind(code)
        .bind(message)
        .bind(stamp(now()))
        .bind(d.id.as_str())
        .bind(DeploymentStatus::Deploying.as_str())
        .execute(&mut *tx)
        .await?;
        if ended.rows_affected() == 0 {
            return Ok(());
        }
        if status == DeploymentStatus::Deployed {
            sqlx::query(
                "UPDATE deployments SET status = $1, updated_at = $2 WHERE service_id = $3 AND status = $4 AND id <> $5",
            )
            .bind(DeploymentStatus::Removed.as_str())
            .bind(stamp(now()))
            .bind(d.service_id.as_str())
            .bind(DeploymentStatus::Deployed.as_str())
            .bind(d.id.as_str())
            .execute(&mut *tx)
            .await?;
            // A new deploy counts its restarts from zero; berth's restart of it does not.
            sqlx::query(
                "UPDATE services SET restarts = 0, last_exit_code = NULL, last_exit_signal = NULL, last_exit_at = NULL \
                 WHERE id = $1 AND EXISTS (SELECT 1 FROM deployments WHERE id = $2 AND restart_of IS NULL)",
            )
            .bind(d.service_id.as_str())
            .bind(d.id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE services SET status = $1 WHERE id = $2 AND status <> $3")
            .bind(ServiceStatus::from(status).as_str())
            .bind(d.service_id.as_str())
            .bind(ServiceStatus::Terminated.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn live_deployments(&self) -> Result<Vec<LiveDeployment>> {
        let rows = sqlx::query(
            "SELECT d.id, d.service_id, d.digest FROM deployments d JOIN services s ON s.id = d.service_id \
             WHERE s.status <> $1 AND d.status = $2 AND d.digest IS NOT NULL",
        )
        .bind(ServiceStatus::Terminated.as_str())
        .bind(DeploymentStatus::Deployed.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LiveDeployment {
                    id: id(r, "id")?,
                    service_id: id(r, "service_id")?,
                    digest: parsed(r, "digest")?,
                })
            })
            .collect()
    }

    async fn heartbeat(&self, d: &Deployment) -> Result<()> {
        sqlx::query("UPDATE deployments SET heartbeat_at = $1 WHERE id = $2 AND status = $3")
            .bind(stamp(now()))
            .bind(d.id.as_str())
            .bind(DeploymentStatus::Deploying.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn repair_deployments(&self, stale_before: &Time) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let stale = sqlx::query(
            "SELECT id, service_id FROM deployments WHERE status = $1 AND (heartbeat_at IS NULL OR heartbeat_at < $2)",
        )
        .bind(DeploymentStatus::Deploying.as_str())
        .bind(stamp(*stale_before))
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
            .bind(DeploymentStatus::Failed.as_str())
            .bind(stamp(now()))
            .bind(&id)
            .bind(DeploymentStatus::Deploying.as_str())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE services SET status = $1 WHERE id = $2 AND status = $3")
                .bind(ServiceStatus::Failed.as_str())
                .bind(&service_id)
                .bind(ServiceStatus::Deploying.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(stale.len() as u64)
    }
}

impl SqlStore {
    async fn insert_deployment(
        &self,
        service: &Service,
        restart_of: Option<&DeploymentId>,
        audit: NewAudit,
    ) -> Result<Deployment> {
        let mut tx = self.pool.begin().await?;
        let at = now();
        let id = DeploymentId::random();
        let updated = sqlx::query(
            "UPDATE services SET status = $1, updated_at = $2 WHERE id = $3 AND status <> $4",
        )
        .bind(ServiceStatus::PendingDeploy.as_str())
        .bind(stamp(at))
        .bind(service.id.as_str())
        .bind(ServiceStatus::Terminated.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO deployments (id, service_id, project_id, status, image, created_at, updated_at, restart_of) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id.as_str())
        .bind(service.id.as_str())
        .bind(service.project_id.as_str())
        .bind(DeploymentStatus::PendingDeploy.as_str())
        .bind(service.image.to_string())
        .bind(stamp(at))
        .bind(stamp(at))
        .bind(restart_of.map(DeploymentId::as_str))
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        tx.commit().await?;
        Ok(Deployment {
            id,
            service_id: service.id.clone(),
            project_id: service.project_id.clone(),
            status: DeploymentStatus::PendingDeploy,
            image: service.image.clone(),
            digest: None,
            failure_code: None,
            failure_message: None,
            created_at: at,
            updated_at: at,
            replica_url: None,
        })
    }

    /// Claims the oldest pending deployment of no service in `services` and no
    /// project in `projects`, of a service naming no region or `region`.
    async fn claim(
        &self,
        replica_url: &str,
        region: Option<&str>,
        services: &[ServiceId],
        projects: &[&str],
    ) -> Result<Option<Deployment>> {
        let lock = match self.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // $1..$5 are fixed; the exclusions follow, one placeholder each.
        let mut n = 5;
        let mut list = |len: usize| {
            let l: Vec<String> = (0..len)
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            l.join(", ")
        };
        let mut filter = match region {
            Some(_) => format!(
                " AND service_id IN (SELECT id FROM services WHERE region IS NULL OR region = {})",
                list(1)
            ),
            None => " AND service_id IN (SELECT id FROM services WHERE region IS NULL)".to_owned(),
        };
        if !services.is_empty() {
            filter.push_str(&format!(
                " AND service_id NOT IN ({})",
                list(services.len())
            ));
        }
        if !projects.is_empty() {
            filter.push_str(&format!(
                " AND project_id NOT IN ({})",
                list(projects.len())
            ));
        }
        let sql = format!(
            "UPDATE deployments SET status = $1, updated_at = $2, heartbeat_at = $3, replica_url = $4 WHERE id = \
             (SELECT id FROM deployments WHERE status = $5{filter} ORDER BY created_at LIMIT 1 {lock}) \
             RETURNING {DEPLOYMENT_COLUMNS}"
        );
        let mut tx = self.pool.begin().await?;
        let mut q = sqlx::query(&sql)
            .bind(DeploymentStatus::Deploying.as_str())
            .bind(stamp(now()))
            .bind(stamp(now()))
            .bind(replica_url)
            .bind(DeploymentStatus::PendingDeploy.as_str());
        if let Some(r) = region {
            q = q.bind(r);
        }
        for s in services {
            q = q.bind(s.as_str());
        }
        for p in projects {
            q = q.bind(*p);
        }
        let row = q.fetch_optional(&mut *tx).await?;
        let d = row.as_ref().map(deployment_from).transpose()?;
        if let Some(d) = &d {
            sqlx::query("UPDATE services SET status = $1 WHERE id = $2 AND status <> $3")
                .bind(ServiceStatus::Deploying.as_str())
                .bind(d.service_id.as_str())
                .bind(ServiceStatus::Terminated.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(d)
    }
}
