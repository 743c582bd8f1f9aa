//! [`VaultMeta`]: the key check, named vault values, and re-sealing passwords.

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sqlx::Row;

use super::{id, SqlStore};
use crate::model::*;
use crate::{Result, StoreError, VaultMeta};

#[async_trait]
impl VaultMeta for SqlStore {
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
        let secret_rows = sqlx::query(
            "SELECT k.service_id, s.project_id, k.name, k.sealed FROM service_secrets k JOIN services s ON s.id = k.service_id WHERE k.secret_arn IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SealedRow {
                    service_id: id(r, "service_id")?,
                    project_id: id(r, "project_id")?,
                    secret_name: None,
                    sealed_password: r.try_get("sealed_password")?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .and_then(|mut all| {
                all.extend(self.sealed_service_secrets_sync(&secret_rows)?);
                Ok(all)
            })
    }

    async fn reseal_service_secret(
        &self,
        service_id: &ServiceId,
        name: &str,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        let r = sqlx::query("UPDATE service_secrets SET sealed = $1 WHERE service_id = $2 AND name = $3 AND sealed = $4")
            .bind(BASE64.encode(new))
            .bind(service_id.as_str())
            .bind(name)
            .bind(BASE64.encode(old))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn reseal_credential(
        &self,
        service_id: &ServiceId,
        old: &[u8],
        new: &[u8],
    ) -> Result<bool> {
        let r = sqlx::query("UPDATE credentials SET sealed_password = $1 WHERE service_id = $2 AND sealed_password = $3")
            .bind(new.to_vec())
            .bind(service_id.as_str())
            .bind(old.to_vec())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

impl SqlStore {
    fn sealed_service_secrets_sync(&self, rows: &[sqlx::any::AnyRow]) -> Result<Vec<SealedRow>> {
        rows.iter()
            .map(|r| {
                let sealed: String = r.try_get("sealed")?;
                Ok(SealedRow {
                    service_id: id(r, "service_id")?,
                    project_id: id(r, "project_id")?,
                    secret_name: Some(r.try_get("name")?),
                    sealed_password: BASE64.decode(sealed).map_err(|e| StoreError::Corrupt {
                        column: "sealed",
                        reason: e.to_string(),
                    })?,
                })
            })
            .collect()
    }
}
