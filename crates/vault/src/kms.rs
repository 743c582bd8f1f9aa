//! Master keys from AWS KMS (envelope encryption): each key version is a KMS data
//! key (AES-256). Only its KMS-encrypted form is kept, in the database, so every
//! replica reads the same keyring and none of them ever writes key material to disk.
//! The KMS encryption context binds each wrapped key to its version.

use std::collections::BTreeMap;

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keyring::{KeyringError, MasterKey};

/// The keyring as stored: KMS ciphertexts of the data keys, by version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKeyring {
    pub kms_key_id: String,
    pub active: u32,
    /// version -> base64 of the KMS ciphertext blob
    pub keys: BTreeMap<u32, String>,
}

impl WrappedKeyring {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a keyring serializes")
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, KeyringError> {
        serde_json::from_slice(b)
            .map_err(|_| KeyringError::Malformed("the stored KMS keyring is not valid".into()))
    }
}

/// A KMS key that wraps berth's master keys.
#[derive(Clone)]
pub struct Kms {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl std::fmt::Debug for Kms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kms").field("key_id", &self.key_id).finish()
    }
}

fn kms_err(step: &str, e: impl std::error::Error) -> KeyringError {
    KeyringError::Kms(format!(
        "{step}: {}",
        aws_sdk_kms::error::DisplayErrorContext(e)
    ))
}

/// The plaintext data key KMS returned, as a master key; the SDK's buffer is
/// zeroized here.
fn master_key(plaintext: Option<Blob>, step: &str) -> Result<MasterKey, KeyringError> {
    let plain = Zeroizing::new(
        plaintext
            .ok_or_else(|| KeyringError::Kms(format!("{step} returned no key")))?
            .into_inner(),
    );
    MasterKey::from_bytes(&plain)
}

impl Kms {
    /// A client from the standard AWS configuration (environment, profile, instance
    /// role; `AWS_ENDPOINT_URL` for a private endpoint).
    pub async fn new(key_id: impl Into<String>) -> Self {
        let config = crate::aws::config().await;
        Kms {
            client: aws_sdk_kms::Client::new(&config),
            key_id: key_id.into(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// A new data key for `version`: the key itself, and its wrapped form to store.
    pub async fn generate(&self, version: u32) -> Result<(MasterKey, String), KeyringError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context("berth:purpose", "master-key")
            .encryption_context("berth:key-version", version.to_string())
            .send()
            .await
            .map_err(|e| kms_err("GenerateDataKey", e))?;
        let key = master_key(out.plaintext, "GenerateDataKey")?;
        let wrapped = out
            .ciphertext_blob
            .ok_or_else(|| KeyringError::Kms("GenerateDataKey returned no ciphertext".into()))?;
        Ok((key, STANDARD.encode(wrapped.as_ref())))
    }

    /// Unwraps every version of a stored keyring.
    pub async fn unwrap(
        &self,
        wrapped: &WrappedKeyring,
    ) -> Result<BTreeMap<u32, MasterKey>, KeyringError> {
        let mut keys = BTreeMap::new();
        for (version, b64) in &wrapped.keys {
            let blob = STANDARD
                .decode(b64)
                .map_err(|_| KeyringError::Malformed("a wrapped key is not base64".into()))?;
            let out = self
                .client
                .decrypt()
                .key_id(&wrapped.kms_key_id)
                .ciphertext_blob(Blob::new(blob))
                .encryption_context("berth:purpose", "master-key")
                .encryption_context("berth:key-version", version.to_string())
                .send()
                .await
                .map_err(|e| kms_err("Decrypt", e))?;
            keys.insert(*version, master_key(out.plaintext, "Decrypt")?);
        }
        Ok(keys)
    }
}
