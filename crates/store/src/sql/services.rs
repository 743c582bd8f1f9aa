//! [`Services`]: services and their registry credentials.

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use berth_types::ImageRef;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{append_audit, conflict, id, parsed, time, time_opt, SqlStore};
use crate::model::*;
use crate::{Result, Services, StoreError};

pub(super) const SERVICE_COLUMNS: &str = "s.id, s.project_id, s.name, s.image, s.status, s.created_at, s.memory_mb, s.pids, s.cpu_millis, \
     s.restart_policy, s.restarts, s.last_exit_code, s.last_exit_signal, s.last_exit_at, \
     s.port, s.health_path, s.network, s.domains, \
     s.env, s.command, s.args, s.volume_path, s.volume_size_mb, s.region, \
     c.registry_url, c.username, c.sealed_password, c.secret_arn, c.verified, c.updated_at AS c_updated_at, \
     c.health_status, c.health_code, c.health_checked_at, c.kind";

pub(super) fn service_from(row: &AnyRow) -> Result<Service> {
    let registry_url: Option<String> = row.try_get("registry_url")?;
    let credential = match registry_url {
        Some(_) => {
            let arn: Option<String> = row.try_get("secret_arn")?;
            Some(Credential {
                registry_url: parsed(row, "registry_url")?,
                kind: parsed(row, "kind")?,
                username: row.try_get("username")?,
                secret: match (arn, row.try_get::<Vec<u8>, _>("sealed_password")?) {
                    (None, sealed) => StoredSecret::Sealed(sealed),
                    (Some(arn), sealed) if sealed.is_empty() => {
                        StoredSecret::SecretsManager { arn }
                    }
                    (Some(_), _) => {
                        return Err(StoreError::Corrupt {
                            column: "sealed_password",
                            reason: "a password is both sealed and in Secrets Manager".into(),
                        })
                    }
                },
                verified: row.try_get::<i64, _>("verified")? != 0,
                updated_at: time(row, "c_updated_at")?,
                health: health_from(row)?,
            })
        }
        None => None,
    };
    Ok(Service {
        id: id(row, "id")?,
        project_id: id(row, "project_id")?,
        name: row.try_get("name")?,
        image: parsed(row, "image")?,
        status: parsed(row, "status")?,
        created_at: time(row, "created_at")?,
        credential,
        resources: Resources {
            memory_mb: row
                .try_get::<Option<i64>, _>("memory_mb")?
                .map(|m| m as u64),
            pids: row.try_get("pids")?,
            cpu_millis: row.try_get("cpu_millis")?,
        },
        restart_policy: parsed(row, "restart_policy")?,
        traffic: Traffic {
            port: row
                .try_get::<Option<i64>, _>("port")?
                .map(|p| {
                    u16::try_from(p).map_err(|_| StoreError::Corrupt {
                        column: "port",
                        reason: format!("{p} is not a port"),
                    })
                })
                .transpose()?,
            health_path: row.try_get("health_path")?,
            network: parsed(row, "network")?,
            domains: row
                .try_get::<String, _>("domains")?
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect(),
        },
        settings: settings_from(row)?,
        secrets: Vec::new(),
        restarts: row.try_get::<i64, _>("restarts")?.clamp(0, u32::MAX.into()) as u32,
        last_exit: match time_opt(row, "last_exit_at")? {
            None => None,
            Some(at) => Some(Exit {
                code: row
                    .try_get::<Option<i64>, _>("last_exit_code")?
                    .map(|c| c as i32),
                signal: row
                    .try_get::<Option<i64>, _>("last_exit_signal")?
                    .map(|c| c as i32),
                at,
            }),
        },
    })
}

/// A JSON column holding `T`.
fn json<T: serde::de::DeserializeOwned>(row: &AnyRow, column: &'static str) -> Result<Option<T>> {
    let text: Option<String> = row.try_get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            column,
            reason: e.to_string(),
        })
    })
    .transpose()
}

fn settings_from(row: &AnyRow) -> Result<Settings> {
    let path: Option<String> = row.try_get("volume_path")?;
    let size: Option<i64> = row.try_get("volume_size_mb")?;
    Ok(Settings {
        env: json(row, "env")?.unwrap_or_default(),
        command: json(row, "command")?,
        args: json(row, "args")?,
        volume: match (path, size) {
            (Some(path), Some(size)) => Some(Volume {
                path,
                size_mb: size.max(0) as u64,
            }),
            _ => None,
        },
        region: row.try_get("region")?,
    })
}

/// The `health_*` columns of a credential row.
pub(super) fn health_from(row: &AnyRow) -> Result<Option<Health>> {
    let status: Option<String> = row.try_get("health_status")?;
    let Some(status) = status else {
        return Ok(None);
    };
    Ok(Some(Health {
        ok: status == "ok",
        code: row
            .try_get::<Option<String>, _>("health_code")?
            .unwrap_or_else(|| status.clone()),
        // Written with the status, always.
        checked_at: time_opt(row, "health_checked_at")?.ok_or(StoreError::Corrupt {
            column: "health_checked_at",
            reason: "a health status without the time of its check".into(),
        })?,
    }))
}

async fn upsert_credential(
    conn: &mut sqlx::AnyConnection,
    service_id: &ServiceId,
    c: &NewCredential,
    at: Time,
) -> Result<()> {
    sqlx::query("DELETE FROM credentials WHERE service_id = $1")
        .bind(service_id.as_str())
        .execute(&mut *conn)
        .await?;
    let (sealed, arn) = match &c.secret {
        StoredSecret::Sealed(s) => (s.clone(), None),
        StoredSecret::SecretsManager { arn } => (Vec::new(), Some(arn.clone())),
    };
    sqlx::query(
        "INSERT INTO credentials (service_id, registry_url, username, sealed_password, secret_arn, verified, updated_at, health_status, health_code, health_checked_at, kind) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(service_id.as_str())
    .bind(c.registry_url.to_string())
    .bind(&c.username)
    .bind(sealed)
    .bind(arn)
    .bind(i64::from(c.verified))
    .bind(stamp(at))
    // A credential the save's preflight passed is healthy as of now; one saved
    // without verifying waits for its first check.
    .bind(c.verified.then_some("ok"))
    .bind(c.verified.then_some("ok"))
    .bind(c.verified.then(|| stamp(at)))
    .bind(c.kind.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes `domains` the extra host names of `service_id`: the old ones released,
/// the new ones claimed (a name another service holds is a conflict), and the
/// service's own list for reading back.
async fn claim_domains(
    conn: &mut sqlx::AnyConnection,
    service_id: &ServiceId,
    domains: &[String],
) -> Result<()> {
    sqlx::query("DELETE FROM service_domains WHERE service_id = $1")
        .bind(service_id.as_str())
        .execute(&mut *conn)
        .await?;
    for d in domains {
        sqlx::query("INSERT INTO service_domains (domain, service_id) VALUES ($1, $2)")
            .bind(d)
            .bind(service_id.as_str())
            .execute(&mut *conn)
            .await
            .map_err(conflict("a service with this domain"))?;
    }
    sqlx::query("UPDATE services SET domains = $1 WHERE id = $2")
        .bind(domains.join(","))
        .bind(service_id.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn set_settings(
    conn: &mut sqlx::AnyConnection,
    service_id: &ServiceId,
    s: &Settings,
) -> Result<()> {
    let to_json = |v: &Option<Vec<String>>| v.as_ref().map(|v| serde_json::json!(v).to_string());
    sqlx::query(
        "UPDATE services SET env = $1, command = $2, args = $3, volume_path = $4, volume_size_mb = $5, region = $6 WHERE id = $7",
    )
    .bind(serde_json::json!(s.env).to_string())
    .bind(to_json(&s.command))
    .bind(to_json(&s.args))
    .bind(s.volume.as_ref().map(|v| v.path.clone()))
    .bind(s.volume.as_ref().map(|v| v.size_mb as i64))
    .bind(s.region.as_deref())
    .bind(service_id.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sets and removes secrets of `service_id`.
async fn change_secrets(
    conn: &mut sqlx::AnyConnection,
    service_id: &ServiceId,
    set: &[ServiceSecret],
    remove: &[String],
) -> Result<()> {
    for name in remove {
        sqlx::query("DELETE FROM service_secrets WHERE service_id = $1 AND name = $2")
            .bind(service_id.as_str())
            .bind(name)
            .execute(&mut *conn)
            .await?;
    }
    for secret in set {
        let (sealed, arn) = match &secret.secret {
            StoredSecret::Sealed(b) => (BASE64.encode(b), None),
            StoredSecret::SecretsManager { arn } => (String::new(), Some(arn.as_str())),
        };
        sqlx::query("DELETE FROM service_secrets WHERE service_id = $1 AND name = $2")
            .bind(service_id.as_str())
            .bind(&secret.name)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO service_secrets (service_id, name, as_file, sealed, secret_arn, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(service_id.as_str())
        .bind(&secret.name)
        .bind(i64::from(secret.as_file))
        .bind(sealed)
        .bind(arn)
        .bind(stamp(secret.updated_at))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

fn secret_from(row: &AnyRow) -> Result<ServiceSecret> {
    let arn: Option<String> = row.try_get("secret_arn")?;
    let sealed: String = row.try_get("sealed")?;
    Ok(ServiceSecret {
        name: row.try_get("name")?,
        as_file: row.try_get::<i64, _>("as_file")? != 0,
        secret: match arn {
            Some(arn) => StoredSecret::SecretsManager { arn },
            None => {
                StoredSecret::Sealed(BASE64.decode(sealed).map_err(|e| StoreError::Corrupt {
                    column: "sealed",
                    reason: e.to_string(),
                })?)
            }
        },
        updated_at: time(row, "updated_at")?,
    })
}

impl SqlStore {
    /// Fills in the secret names of `services` (one query).
    async fn with_secret_names(&self, mut services: Vec<Service>) -> Result<Vec<Service>> {
        if services.is_empty() {
            return Ok(services);
        }
        let list: Vec<String> = (1..=services.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT service_id, name, as_file, updated_at FROM service_secrets WHERE service_id IN ({}) ORDER BY name",
            list.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for s in &services {
            q = q.bind(s.id.as_str());
        }
        for row in q.fetch_all(&self.pool).await? {
            let service_id: String = row.try_get("service_id")?;
            if let Some(s) = services.iter_mut().find(|s| s.id.as_str() == service_id) {
                s.secrets.push(SecretName {
                    name: row.try_get("name")?,
                    as_file: row.try_get::<i64, _>("as_file")? != 0,
                    updated_at: time(&row, "updated_at")?,
                });
            }
        }
        Ok(services)
    }

    async fn one_with_secret_names(&self, service: Option<Service>) -> Result<Option<Service>> {
        Ok(self
            .with_secret_names(service.into_iter().collect())
            .await?
            .pop())
    }
}

async fn set_traffic(
    conn: &mut sqlx::AnyConnection,
    service_id: &ServiceId,
    t: &Traffic,
) -> Result<()> {
    sqlx::query("UPDATE services SET port = $1, health_path = $2, network = $3 WHERE id = $4")
        .bind(t.port.map(i64::from))
        .bind(t.health_path.as_deref())
        .bind(t.network.as_str())
        .bind(service_id.as_str())
        .execute(&mut *conn)
        .await?;
    claim_domains(conn, service_id, &t.domains).await
}

#[async_trait]
impl Services for SqlStore {
    async fn create_service(
        &self,
        s: NewService,
        secrets: Vec<ServiceSecret>,
        credential: Option<NewCredential>,
        audit: NewAudit,
    ) -> Result<Service> {
        let mut tx = self.pool.begin().await?;
        let at = now();
        sqlx::query(
            "INSERT INTO services (id, project_id, name, image, status, created_at, updated_at, memory_mb, pids, cpu_millis, restart_policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(s.id.as_str())
        .bind(s.project_id.as_str())
        .bind(&s.name)
        .bind(s.image.to_string())
        .bind(ServiceStatus::Created.as_str())
        .bind(stamp(at))
        .bind(stamp(at))
        .bind(s.resources.memory_mb.map(|m| m as i64))
        .bind(s.resources.pids)
        .bind(s.resources.cpu_millis)
        .bind(s.restart_policy.as_str())
        .execute(&mut *tx)
        .await
        .map_err(conflict("a service with this name"))?;
        set_traffic(&mut tx, &s.id, &s.traffic).await?;
        set_settings(&mut tx, &s.id, &s.settings).await?;
        change_secrets(&mut tx, &s.id, &secrets, &[]).await?;
        if let Some(c) = &credential {
            upsert_credential(&mut tx, &s.id, c, at).await?;
        }
        append_audit(&mut tx, Some(&s.project_id), &audit).await?;
        tx.commit().await?;
        Ok(Service {
            id: s.id,
            project_id: s.project_id,
            name: s.name,
            image: s.image,
            status: ServiceStatus::Created,
            created_at: at,
            resources: s.resources,
            restart_policy: s.restart_policy,
            traffic: s.traffic,
            settings: s.settings,
            secrets: secrets
                .iter()
                .map(|x| SecretName {
                    name: x.name.clone(),
                    as_file: x.as_file,
                    updated_at: x.updated_at,
                })
                .collect(),
            restarts: 0,
            last_exit: None,
            credential: credential.map(|c| Credential {
                registry_url: c.registry_url,
                kind: c.kind,
                username: c.username,
                secret: c.secret,
                verified: c.verified,
                health: c.verified.then(|| Health {
                    ok: true,
                    code: "ok".into(),
                    checked_at: at,
                }),
                updated_at: at,
            }),
        })
    }

    async fn service(&self, project: &Project, name: &str) -> Result<Option<Service>> {
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s LEFT JOIN credentials c ON c.service_id = s.id WHERE s.project_id = $1 AND s.name = $2"
        ))
        .bind(project.id.as_str())
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        let service = row.as_ref().map(service_from).transpose()?;
        self.one_with_secret_names(service).await
    }

    async fn service_by_id(&self, id: &ServiceId) -> Result<Option<Service>> {
        let row = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s LEFT JOIN credentials c ON c.service_id = s.id WHERE s.id = $1"
        ))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let service = row.as_ref().map(service_from).transpose()?;
        self.one_with_secret_names(service).await
    }

    async fn list_services(&self, project: &Project) -> Result<Vec<Service>> {
        let rows = sqlx::query(&format!(
            "SELECT {SERVICE_COLUMNS} FROM services s LEFT JOIN credentials c ON c.service_id = s.id WHERE s.project_id = $1 ORDER BY s.name"
        ))
        .bind(project.id.as_str())
        .fetch_all(&self.pool)
        .await?;
        let services = rows.iter().map(service_from).collect::<Result<Vec<_>>>()?;
        self.with_secret_names(services).await
    }

    async fn put_credential(
        &self,
        service: &Service,
        image: Option<&ImageRef>,
        credential: NewCredential,
        audit: NewAudit,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE services SET image = $1, updated_at = $2 WHERE id = $3 AND status <> $4",
        )
        .bind(image.unwrap_or(&service.image).to_string())
        .bind(stamp(now()))
        .bind(service.id.as_str())
        .bind(ServiceStatus::Terminated.as_str())
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        upsert_credential(&mut tx, &service.id, &credential, now()).await?;
        append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_settings(
        &self,
        service: &Service,
        change: &SettingsChange,
        audits: Vec<NewAudit>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let updated =
            sqlx::query("UPDATE services SET updated_at = $1 WHERE id = $2 AND status <> $3")
                .bind(stamp(now()))
                .bind(service.id.as_str())
                .bind(ServiceStatus::Terminated.as_str())
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        set_traffic(&mut tx, &service.id, &change.traffic).await?;
        set_settings(&mut tx, &service.id, &change.settings).await?;
        change_secrets(
            &mut tx,
            &service.id,
            &change.set_secrets,
            &change.remove_secrets,
        )
        .await?;
        for audit in &audits {
            append_audit(&mut tx, Some(&service.project_id), audit).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_credential(&self, service: &Service, audit: NewAudit) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM credentials WHERE service_id = $1")
            .bind(service.id.as_str())
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
            .bind(service.id.as_str())
            .execute(&mut *tx)
            .await?;
        // Its host names are free for another service; its secrets are gone.
        claim_domains(&mut tx, &service.id, &[]).await?;
        sqlx::query("DELETE FROM service_secrets WHERE service_id = $1")
            .bind(service.id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE services SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(ServiceStatus::Terminated.as_str())
            .bind(stamp(now()))
            .bind(service.id.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE deployments SET status = $1, updated_at = $2 WHERE service_id = $3 AND status = $4",
        )
        .bind(DeploymentStatus::Removed.as_str())
        .bind(stamp(now()))
        .bind(service.id.as_str())
        .bind(DeploymentStatus::Deployed.as_str())
        .execute(&mut *tx)
        .await?;
        // One still waiting or pulling ends here too: its worker sees the service
        // terminated, stops the pull and records nothing more.
        sqlx::query(
            "UPDATE deployments SET status = $1, failure_message = $2, updated_at = $3 WHERE service_id = $4 AND status IN ($5, $6)",
        )
        .bind(DeploymentStatus::Removed.as_str())
        .bind(crate::TERMINATED_IN_FLIGHT)
        .bind(stamp(now()))
        .bind(service.id.as_str())
        .bind(DeploymentStatus::PendingDeploy.as_str())
        .bind(DeploymentStatus::Deploying.as_str())
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, Some(&service.project_id), &audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn service_secrets(&self, service: &ServiceId) -> Result<Vec<ServiceSecret>> {
        let rows = sqlx::query(
            "SELECT name, as_file, sealed, secret_arn, updated_at FROM service_secrets WHERE service_id = $1 ORDER BY name",
        )
        .bind(service.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(secret_from).collect()
    }

    async fn record_exit(&self, service: &ServiceId, exit: &Exit, restarted: bool) -> Result<()> {
        sqlx::query(
            "UPDATE services SET restarts = restarts + $1, last_exit_code = $2, last_exit_signal = $3, last_exit_at = $4 WHERE id = $5",
        )
        .bind(i64::from(restarted))
        .bind(exit.code.map(i64::from))
        .bind(exit.signal.map(i64::from))
        .bind(stamp(exit.at))
        .bind(service.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
