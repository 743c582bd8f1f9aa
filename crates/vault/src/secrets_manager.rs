//! The AWS Secrets Manager secret store: one secret per service credential, named
//! `PREFIX<project id>/<service id>/<random>`, holding only the password; the
//! database keeps its ARN. Secrets Manager encrypts it with KMS (the account's
//! default key, or the one configured). A new save makes a new secret and the
//! caller deletes the old one once the database points at the new one, so a failed
//! save never leaves a service pointing at a half-written secret.

use aws_sdk_secretsmanager::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_secretsmanager::types::Tag;
use secrecy::{ExposeSecret, SecretString};

use crate::seal::VaultError;

#[derive(Clone)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    prefix: String,
    kms_key_id: Option<String>,
}

impl std::fmt::Debug for SecretsManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsManager")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn sm_err(step: &str, e: impl std::error::Error) -> VaultError {
    VaultError::SecretStore(format!(
        "Secrets Manager {step}: {}",
        DisplayErrorContext(e)
    ))
}

impl SecretsManager {
    /// A client from the standard AWS configuration (see [`crate::Kms::new`]).
    pub async fn new(prefix: impl Into<String>, kms_key_id: Option<String>) -> Self {
        let config = crate::aws::config().await;
        SecretsManager {
            client: aws_sdk_secretsmanager::Client::new(&config),
            prefix: prefix.into(),
            kms_key_id,
        }
    }

    /// Stores a password for (project, service); returns the new secret's ARN.
    #[tracing::instrument(skip_all, fields(project = project_id, service = service_id))]
    pub async fn put(
        &self,
        project_id: &str,
        service_id: &str,
        password: &SecretString,
    ) -> Result<String, VaultError> {
        let name = format!(
            "{}{project_id}/{service_id}/{}",
            self.prefix,
            hex::encode(rand::random::<[u8; 4]>())
        );
        let out = self
            .client
            .create_secret()
            .name(&name)
            .description("berth: registry password of one service")
            .set_kms_key_id(self.kms_key_id.clone())
            .secret_string(password.expose_secret())
            .tags(
                Tag::builder()
                    .key("berth:project")
                    .value(project_id)
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key("berth:service")
                    .value(service_id)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sm_err("CreateSecret", e))?;
        let arn = out
            .arn
            .ok_or_else(|| VaultError::SecretStore("CreateSecret returned no ARN".into()))?;
        tracing::debug!(%arn, "secret created");
        Ok(arn)
    }

    /// Reads a password by ARN.
    #[tracing::instrument(skip_all)]
    pub async fn get(&self, arn: &str) -> Result<SecretString, VaultError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| sm_err("GetSecretValue", e))?;
        // The SDK hands over an owned String; moving it into SecretString means the
        // one copy we hold is zeroized on drop (the SDK's response buffer is not ours).
        out.secret_string
            .map(SecretString::from)
            .ok_or_else(|| VaultError::SecretStore("the secret has no string value".into()))
    }

    /// Deletes a secret at once, with no recovery window; a secret already gone is
    /// not an error (a retried terminate must succeed).
    #[tracing::instrument(skip_all, fields(%arn))]
    pub async fn delete(&self, arn: &str) -> Result<(), VaultError> {
        match self
            .client
            .delete_secret()
            .secret_id(arn)
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(()),
            Err(e) => Err(sm_err("DeleteSecret", e)),
        }
    }
}
