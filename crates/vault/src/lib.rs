//! The credential vault.
//!
//! - A **keyring** of master keys, each with a version; one is active. Its source is
//!   a key file in the data dir (created mode 0600 on first start) or
//!   `BERTH_MASTER_KEY` (base64 of 32 bytes).
//! - A **per-project key** per (project, master key version), derived with
//!   HKDF-SHA256; salt and info bind the project id and the key version.
//! - **Sealing** is AES-256-GCM with a fresh random 96-bit nonce; the AAD binds the
//!   ciphertext to project, service and key version, so a ciphertext copied to
//!   another row does not open. A sealed blob starts with its key version.
//!
//! - **AWS**: the master keys may instead be KMS data keys ([`Kms`], envelope
//!   encryption: only their wrapped form is stored), and passwords may live in AWS
//!   Secrets Manager ([`SecretsManager`]) with only the ARN in the database.
//!
//! Plaintext only ever lives in `SecretString` / `Zeroizing` buffers.

mod aws;
pub mod ecr;
mod keyring;
mod kms;
mod seal;
mod secrets_manager;

pub use keyring::{KeySource, Keyring, KeyringError, MasterKey};
pub use kms::{Kms, WrappedKeyring};
pub use seal::{Sealed, VaultError, AAD_PREFIX};
pub use secrets_manager::SecretsManager;
