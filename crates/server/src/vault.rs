//! Where registry passwords are kept, and under which master keys: the one door the
//! routes and the deploy worker use.
//!
//! - Passwords are sealed into the database (default), or put in AWS Secrets Manager
//!   with only the ARN in the database (`secret_store = "aws-secrets-manager"`). A
//!   row is read the way it was written, whatever the current setting.
//! - Master keys come from the key file, `BERTH_MASTER_KEY`, or AWS KMS. With KMS,
//!   the wrapped keyring is a database value shared by every replica; a rotation by
//!   one process is picked up by the others before their next seal, and on demand
//!   when they meet a key version they do not hold.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use berth_store::{ProjectId, ServiceId, StoredSecret, VaultMeta};
use berth_vault::{Keyring, Kms, Sealed, SecretsManager, VaultError, WrappedKeyring};
use secrecy::SecretString;

use crate::config::{SecretStoreKind, VaultConfig};

/// The vault value holding the KMS-wrapped keyring.
pub const KMS_KEYRING: &str = "kms_keyring";

/// Where registry passwords are kept: what the routes and the deploy worker use.
/// Each password is bound to its (project, service); a stored one is read back
/// from wherever its [`StoredSecret`] says it is.
#[async_trait]
pub trait Vault: Send + Sync {
    /// Keeps a password for (project, service), in the configured store.
    async fn put(
        &self,
        project: &ProjectId,
        service: &ServiceId,
        password: &SecretString,
    ) -> Result<StoredSecret, VaultError>;
    /// Reads a stored password back.
    async fn get(
        &self,
        project: &ProjectId,
        service: &ServiceId,
        secret: &StoredSecret,
    ) -> Result<SecretString, VaultError>;
    /// Destroys a credential's external secret (a sealed one goes with its row).
    async fn destroy(&self, secret: &StoredSecret) -> Result<(), VaultError>;
    /// Undoes a [`Vault::put`] whose database write failed; logs what it cannot.
    async fn discard(&self, secret: &StoredSecret);
}

/// What a service secret is sealed for: its service and its name, so that a
/// sealed value moved to another name or service does not open.
pub fn secret_binding(service: &ServiceId, name: &str) -> ServiceId {
    ServiceId::from(format!("{}/secret/{name}", service.as_str()))
}

pub struct SealedVault {
    keys: Keyring,
    kms: Option<KmsKeys>,
    secrets_manager: Option<SecretsManager>,
    store_in: SecretStoreKind,
    db: Arc<dyn VaultMeta>,
}

struct KmsKeys {
    kms: Kms,
    /// The stored keyring the in-memory keys were unwrapped from.
    seen: Mutex<Vec<u8>>,
}

impl SealedVault {
    /// Opens the key source (creating the first KMS data key if the database has
    /// none yet) and the secret store.
    pub async fn open(
        config: &VaultConfig,
        file_or_env: impl FnOnce() -> Result<Keyring, berth_vault::KeyringError>,
        db: Arc<dyn VaultMeta>,
    ) -> Result<Self, crate::SetupError> {
        let (keys, kms) = match &config.kms_key_id {
            None => (file_or_env()?, None),
            Some(key_id) => {
                let kms = Kms::new(key_id.clone()).await;
                let (keys, seen) = kms_keyring(&kms, db.as_ref()).await?;
                (
                    keys,
                    Some(KmsKeys {
                        kms,
                        seen: Mutex::new(seen),
                    }),
                )
            }
        };
        let secrets_manager = match config.secret_store {
            SecretStoreKind::AwsSecretsManager => Some(
                SecretsManager::new(
                    config.secrets_manager_prefix.clone(),
                    config.secrets_manager_kms_key_id.clone(),
                )
                .await,
            ),
            SecretStoreKind::Database => None,
        };
        Ok(SealedVault {
            keys,
            kms,
            secrets_manager,
            store_in: config.secret_store,
            db,
        })
    }

    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    fn secrets_manager(&self, arn: &str) -> Result<&SecretsManager, VaultError> {
        self.secrets_manager.as_ref().ok_or_else(|| {
            VaultError::SecretStore(format!(
                "the password is in AWS Secrets Manager ({arn}) but this server runs with secret_store = database"
            ))
        })
    }

    /// With KMS: takes up a keyring another process rotated.
    async fn refresh(&self) -> Result<(), VaultError> {
        let Some(k) = &self.kms else { return Ok(()) };
        let stored = self
            .db
            .vault_meta(KMS_KEYRING)
            .await
            .map_err(|e| VaultError::SecretStore(e.to_string()))?
            .unwrap_or_default();
        if *k.seen.lock().unwrap_or_else(|e| e.into_inner()) == stored {
            return Ok(());
        }
        let wrapped = WrappedKeyring::from_bytes(&stored)?;
        let keys = k.kms.unwrap(&wrapped).await?;
        self.keys.replace(wrapped.active, keys)?;
        *k.seen.lock().unwrap_or_else(|e| e.into_inner()) = stored;
        tracing::info!(active = wrapped.active, "took up the rotated KMS keyring");
        Ok(())
    }

    /// With KMS: a new data key becomes the active version (old ones stay readable).
    pub async fn rotate(&self) -> Result<u32, crate::SetupError> {
        let Some(k) = &self.kms else {
            return Ok(self.keys.rotate()?);
        };
        loop {
            let stored = self.db.vault_meta(KMS_KEYRING).await?.unwrap_or_default();
            let mut wrapped = WrappedKeyring::from_bytes(&stored)?;
            let next = wrapped.keys.keys().max().copied().unwrap_or(0) + 1;
            let (_, blob) = k.kms.generate(next).await?;
            wrapped.keys.insert(next, blob);
            wrapped.active = next;
            if self
                .db
                .swap_vault_meta(KMS_KEYRING, Some(&stored), &wrapped.to_bytes())
                .await?
            {
                self.refresh().await?;
                return Ok(next);
            }
        }
    }

    /// Drops every key version but the active one (after all secrets were re-sealed).
    pub async fn retire_old(&self) -> Result<(), crate::SetupError> {
        let Some(_) = &self.kms else {
            return Ok(self.keys.retire_old()?);
        };
        loop {
            let stored = self.db.vault_meta(KMS_KEYRING).await?.unwrap_or_default();
            let mut wrapped = WrappedKeyring::from_bytes(&stored)?;
            let active = wrapped.active;
            wrapped.keys.retain(|v, _| *v == active);
            if self
                .db
                .swap_vault_meta(KMS_KEYRING, Some(&stored), &wrapped.to_bytes())
                .await?
            {
                self.refresh().await?;
                return Ok(());
            }
        }
    }
}

/// Reads the wrapped keyring from the database and unwraps it with KMS; on a first
/// start, asks KMS for the first data key (replicas racing: one insert wins, the
/// others read it).
async fn kms_keyring(
    kms: &Kms,
    db: &dyn VaultMeta,
) -> Result<(Keyring, Vec<u8>), crate::SetupError> {
    loop {
        if let Some(stored) = db.vault_meta(KMS_KEYRING).await? {
            let wrapped = WrappedKeyring::from_bytes(&stored)?;
            let keys = kms.unwrap(&wrapped).await?;
            return Ok((Keyring::unwrapped(wrapped.active, keys)?, stored));
        }
        let (_, blob) = kms.generate(1).await?;
        let wrapped = WrappedKeyring {
            kms_key_id: kms.key_id().to_owned(),
            active: 1,
            keys: [(1, blob)].into(),
        };
        if db
            .swap_vault_meta(KMS_KEYRING, None, &wrapped.to_bytes())
            .await?
        {
            tracing::info!(
                kms_key = kms.key_id(),
                "created the first KMS-wrapped master key"
            );
        }
    }
}

#[async_trait]
impl Vault for SealedVault {
    async fn put(
        &self,
        project: &ProjectId,
        service: &ServiceId,
        password: &SecretString,
    ) -> Result<StoredSecret, VaultError> {
        match (self.store_in, &self.secrets_manager) {
            (SecretStoreKind::AwsSecretsManager, Some(sm)) => Ok(StoredSecret::SecretsManager {
                arn: sm.put(project.as_str(), service.as_str(), password).await?,
            }),
            _ => {
                self.refresh().await?;
                Ok(StoredSecret::Sealed(
                    self.keys
                        .seal(project.as_str(), service.as_str(), password)?
                        .0,
                ))
            }
        }
    }

    async fn get(
        &self,
        project: &ProjectId,
        service: &ServiceId,
        secret: &StoredSecret,
    ) -> Result<SecretString, VaultError> {
        let sealed = match secret {
            StoredSecret::SecretsManager { arn } => {
                return self.secrets_manager(arn)?.get(arn).await
            }
            StoredSecret::Sealed(s) => Sealed(s.clone()),
        };
        let (project, service) = (project.as_str(), service.as_str());
        match self.keys.unseal(project, service, &sealed) {
            Err(VaultError::Keyring(berth_vault::KeyringError::UnknownVersion(_)))
                if self.kms.is_some() =>
            {
                self.refresh().await?;
                self.keys.unseal(project, service, &sealed)
            }
            other => other,
        }
    }

    async fn destroy(&self, secret: &StoredSecret) -> Result<(), VaultError> {
        match secret.arn() {
            Some(arn) => self.secrets_manager(arn)?.delete(arn).await,
            None => Ok(()),
        }
    }

    async fn discard(&self, secret: &StoredSecret) {
        if let Some(arn) = secret.arn() {
            let deleted = async { self.secrets_manager(arn)?.delete(arn).await };
            if let Err(e) = deleted.await {
                tracing::error!(error = %e, %arn, "cannot delete an unused secret");
            }
        }
    }
}
