use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use hkdf::Hkdf;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::keyring::{Keyring, KeyringError, MasterKey};

/// Everything sealed by berth starts its AAD with this (domain separation).
pub const AAD_PREFIX: &str = "berth/credential/v1";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// Wrong key, tampered ciphertext, or a ciphertext moved to another row.
    #[error("a stored secret could not be decrypted (wrong master key, or the data was altered)")]
    Open,
    #[error("a stored secret is malformed")]
    Malformed,
    /// The external secret store (AWS Secrets Manager) failed; the text is AWS's
    /// error, which never holds the secret.
    #[error("{0}")]
    SecretStore(String),
}

/// A sealed secret as stored: `version (4 bytes, big endian) || nonce || ciphertext+tag`.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed(pub Vec<u8>);

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sealed(v{:?}, {} bytes)",
            self.key_version(),
            self.0.len()
        )
    }
}

impl Sealed {
    pub fn key_version(&self) -> Option<u32> {
        self.0
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

fn project_key(master: &MasterKey, project_id: &str, version: u32) -> Zeroizing<[u8; 32]> {
    let salt = format!("berth/project-key/v1/{project_id}");
    let info = format!("berth/project-key/v1 project={project_id} key-version={version}");
    let hk = Hkdf::<Sha256>::new(Some(salt.as_bytes()), master.bytes());
    let mut okm = Zeroizing::new([0u8; 32]);
    hk.expand(info.as_bytes(), okm.as_mut())
        .expect("32 bytes is a valid HKDF-SHA256 length");
    okm
}

fn aad(project_id: &str, service_id: &str, version: u32) -> Vec<u8> {
    format!("{AAD_PREFIX} project={project_id} service={service_id} key-version={version}")
        .into_bytes()
}

impl Keyring {
    /// Seals `secret` for (project, service) under the active key version.
    pub fn seal(
        &self,
        project_id: &str,
        service_id: &str,
        secret: &SecretString,
    ) -> Result<Sealed, VaultError> {
        let (version, master) = self.active();
        let key = project_key(&master, project_id, version);
        let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| VaultError::Malformed)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.expose_secret().as_bytes(),
                    aad: &aad(project_id, service_id, version),
                },
            )
            .map_err(|_| VaultError::Open)?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + ct.len());
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(Sealed(out))
    }

    /// Opens a sealed secret of (project, service), with the key version it names.
    pub fn unseal(
        &self,
        project_id: &str,
        service_id: &str,
        sealed: &Sealed,
    ) -> Result<SecretString, VaultError> {
        let b = &sealed.0;
        if b.len() < 4 + NONCE_LEN + 16 {
            return Err(VaultError::Malformed);
        }
        let version = sealed.key_version().ok_or(VaultError::Malformed)?;
        let master = self.key(version)?;
        let key = project_key(&master, project_id, version);
        let cipher = Aes256Gcm::new_from_slice(key.as_ref()).map_err(|_| VaultError::Malformed)?;
        let nonce: [u8; NONCE_LEN] = b[4..4 + NONCE_LEN]
            .try_into()
            .map_err(|_| VaultError::Malformed)?;
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    &Nonce::from(nonce),
                    Payload {
                        msg: &b[4 + NONCE_LEN..],
                        aad: &aad(project_id, service_id, version),
                    },
                )
                .map_err(|_| VaultError::Open)?,
        );
        let s = std::str::from_utf8(&plain).map_err(|_| VaultError::Malformed)?;
        Ok(SecretString::from(s.to_owned()))
    }

    /// A value sealed at setup so that a wrong master key is caught at start, not at
    /// the first deploy.
    pub fn check_value(&self) -> Result<Sealed, VaultError> {
        self.seal("-", "key-check", &SecretString::from("berth key check"))
    }

    pub fn verify_check_value(&self, sealed: &Sealed) -> Result<(), VaultError> {
        let v = self.unseal("-", "key-check", sealed)?;
        if v.expose_secret() == "berth key check" {
            Ok(())
        } else {
            Err(VaultError::Open)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::from_key(MasterKey::generate())
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let k = ring();
        let s = SecretString::from("p@ss");
        let a = k.seal("p1", "s1", &s).unwrap();
        let b = k.seal("p1", "s1", &s).unwrap();
        assert_ne!(a, b, "fresh nonce each time");
        assert_eq!(a.key_version(), Some(1));
        assert_eq!(k.unseal("p1", "s1", &a).unwrap().expose_secret(), "p@ss");
    }

    #[test]
    fn tampering_and_moving_fail() {
        let k = ring();
        let sealed = k.seal("p1", "s1", &SecretString::from("p@ss")).unwrap();
        // Every flipped byte is caught.
        for i in 0..sealed.0.len() {
            let mut t = sealed.clone();
            t.0[i] ^= 0x01;
            assert!(k.unseal("p1", "s1", &t).is_err(), "flip at {i}");
        }
        // Copied to another service or project: refused.
        assert!(matches!(
            k.unseal("p1", "s2", &sealed),
            Err(VaultError::Open)
        ));
        assert!(matches!(
            k.unseal("p2", "s1", &sealed),
            Err(VaultError::Open)
        ));
        // Another master key: refused.
        assert!(matches!(
            ring().unseal("p1", "s1", &sealed),
            Err(VaultError::Open)
        ));
        assert!(matches!(
            k.unseal("p1", "s1", &Sealed(vec![0; 10])),
            Err(VaultError::Malformed)
        ));
    }

    #[test]
    fn check_value_catches_a_wrong_key() {
        let k = ring();
        let cv = k.check_value().unwrap();
        assert!(k.verify_check_value(&cv).is_ok());
        assert!(ring().verify_check_value(&cv).is_err());
    }
}
