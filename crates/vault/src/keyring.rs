use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// 32 bytes of key material, zeroized on drop, never printed.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(k.as_mut());
        MasterKey(k)
    }

    pub fn from_base64(b64: &str) -> Result<Self, KeyringError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(b64.trim())
                .map_err(|_| KeyringError::Malformed("not base64".into()))?,
        );
        let arr: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyringError::Malformed(format!("{} bytes, 32 needed", bytes.len())))?;
        Ok(MasterKey(Zeroizing::new(arr)))
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Result<Self, KeyringError> {
        let arr: [u8; 32] = b
            .try_into()
            .map_err(|_| KeyringError::Malformed(format!("{} bytes, 32 needed", b.len())))?;
        Ok(MasterKey(Zeroizing::new(arr)))
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(STANDARD.encode(self.0.as_ref()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("the master key is malformed: {0}")]
    Malformed(String),
    #[error("cannot read or write the key file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    #[error("the master key file {0} is readable by other users; chmod 600 it")]
    Permissions(PathBuf),
    #[error("master key version {0} is not in the keyring")]
    UnknownVersion(u32),
    #[error("AWS KMS: {0}")]
    Kms(String),
    #[error("rotation needs the key file or KMS: a key given by BERTH_MASTER_KEY cannot be rotated in place; move to the key file (unset BERTH_MASTER_KEY, write it as the data dir's master.key) or to KMS first")]
    NotRotatable,
}

/// Where the master keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// The keyring file (`DATA_DIR/master.key`), created on first start.
    File(PathBuf),
    /// `BERTH_MASTER_KEY`: the one key, version 1.
    Env { current: String },
    /// Keys unwrapped by the caller (AWS KMS), replaced with [`Keyring::replace`].
    Unwrapped,
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    active: u32,
    /// version -> base64 key
    keys: BTreeMap<u32, String>,
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for v in self.keys.values_mut() {
            v.zeroize();
        }
    }
}

/// Master keys by version, one active. Re-reads its file when asked for a version it
/// does not hold (another process rotated the keys).
pub struct Keyring {
    source: KeySource,
    inner: RwLock<(u32, BTreeMap<u32, MasterKey>)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active_version())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// Opens the keyring, creating the key file (mode 0600) if it does not exist.
    pub fn open(source: KeySource) -> Result<Self, KeyringError> {
        let (active, keys) = match &source {
            KeySource::File(path) => {
                if !path.exists() {
                    let key = MasterKey::generate();
                    let mut keys = BTreeMap::new();
                    keys.insert(1, key);
                    write_key_file(path, 1, &keys)?;
                    tracing::info!(path = %path.display(), "created a new master key file");
                }
                read_key_file(path)?
            }
            KeySource::Env { current } => {
                let mut keys = BTreeMap::new();
                keys.insert(1, MasterKey::from_base64(current)?);
                (1, keys)
            }
            KeySource::Unwrapped => {
                return Err(KeyringError::Malformed(
                    "keys from KMS are opened with Keyring::unwrapped".into(),
                ))
            }
        };
        Ok(Keyring {
            source,
            inner: RwLock::new((active, keys)),
        })
    }

    /// A keyring of keys the caller unwrapped (AWS KMS).
    pub fn unwrapped(active: u32, keys: BTreeMap<u32, MasterKey>) -> Result<Self, KeyringError> {
        if !keys.contains_key(&active) {
            return Err(KeyringError::UnknownVersion(active));
        }
        Ok(Keyring {
            source: KeySource::Unwrapped,
            inner: RwLock::new((active, keys)),
        })
    }

    /// Swaps in a fresh set of unwrapped keys (after a rotation elsewhere).
    pub fn replace(&self, active: u32, keys: BTreeMap<u32, MasterKey>) -> Result<(), KeyringError> {
        if !keys.contains_key(&active) {
            return Err(KeyringError::UnknownVersion(active));
        }
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = (active, keys);
        Ok(())
    }

    /// A keyring holding one given key, for tests and tools.
    pub fn from_key(key: MasterKey) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(1, key);
        Keyring {
            source: KeySource::Env {
                current: String::new(),
            },
            inner: RwLock::new((1, keys)),
        }
    }

    pub fn active_version(&self) -> u32 {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn versions(&self) -> Vec<u32> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .keys()
            .copied()
            .collect()
    }

    pub(crate) fn key(&self, version: u32) -> Result<MasterKey, KeyringError> {
        if let Some(k) = self
            .inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .get(&version)
        {
            return Ok(k.clone());
        }
        self.reload()?;
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .get(&version)
            .cloned()
            .ok_or(KeyringError::UnknownVersion(version))
    }

    /// The active key. With a key file, a file changed by a rotation elsewhere is
    /// re-read first, so that nothing is sealed under a version being retired.
    pub(crate) fn active(&self) -> (u32, MasterKey) {
        if let KeySource::File(path) = &self.source {
            let on_disk = read_key_file(path).map(|(v, _)| v).ok();
            if on_disk.is_some_and(|v| v != self.active_version()) {
                if let Err(e) = self.reload() {
                    tracing::error!(error = %e, "cannot re-read the master key file");
                }
            }
        }
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        (g.0, g.1[&g.0].clone())
    }

    /// Re-reads the key file (after a rotation by another process).
    pub fn reload(&self) -> Result<(), KeyringError> {
        if let KeySource::File(path) = &self.source {
            let fresh = read_key_file(path)?;
            *self.inner.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        }
        Ok(())
    }

    /// Adds a new key version and makes it active (old versions stay readable).
    pub fn rotate(&self) -> Result<u32, KeyringError> {
        let KeySource::File(path) = &self.source else {
            return Err(KeyringError::NotRotatable);
        };
        self.reload()?;
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let next = g.1.keys().max().copied().unwrap_or(0) + 1;
        g.1.insert(next, MasterKey::generate());
        write_key_file(path, next, &g.1)?;
        g.0 = next;
        Ok(next)
    }

    /// Drops every version but the active one (after all secrets were re-sealed).
    pub fn retire_old(&self) -> Result<(), KeyringError> {
        let KeySource::File(path) = &self.source else {
            return Err(KeyringError::NotRotatable);
        };
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let active = g.0;
        g.1.retain(|v, _| *v == active);
        write_key_file(path, active, &g.1)
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> KeyringError {
    KeyringError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn read_key_file(path: &Path) -> Result<(u32, BTreeMap<u32, MasterKey>), KeyringError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyringError::Permissions(path.to_owned()));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| io_err(path, e))?);
    let file: KeyFile = serde_json::from_str(&text).map_err(|_| {
        KeyringError::Malformed(format!("{} is not a berth key file", path.display()))
    })?;
    let mut keys = BTreeMap::new();
    for (v, k) in &file.keys {
        keys.insert(*v, MasterKey::from_base64(k)?);
    }
    if !keys.contains_key(&file.active) {
        return Err(KeyringError::UnknownVersion(file.active));
    }
    Ok((file.active, keys))
}

/// Writes the key file atomically (temp file 0600, fsync, rename).
fn write_key_file(
    path: &Path,
    active: u32,
    keys: &BTreeMap<u32, MasterKey>,
) -> Result<(), KeyringError> {
    let file = KeyFile {
        active,
        keys: keys
            .iter()
            .map(|(v, k)| (*v, k.to_base64().to_string()))
            .collect(),
    };
    let text = Zeroizing::new(serde_json::to_string_pretty(&file).map_err(|e| io_err(path, e))?);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(text.as_bytes()).map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = Keyring::open(KeySource::File(path.clone())).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let b = Keyring::open(KeySource::File(path.clone())).unwrap();
        assert_eq!(a.active().1.bytes(), b.active().1.bytes());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Keyring::open(KeySource::File(path)),
            Err(KeyringError::Permissions(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_versions_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let k = Keyring::open(KeySource::File(path.clone())).unwrap();
        let other = Keyring::open(KeySource::File(path.clone())).unwrap();
        assert_eq!(k.rotate().unwrap(), 2);
        assert_eq!(k.versions(), vec![1, 2]);
        // Another process sees version 2 on demand.
        assert!(other.key(2).is_ok());
        k.retire_old().unwrap();
        assert_eq!(
            Keyring::open(KeySource::File(path)).unwrap().versions(),
            vec![2]
        );
    }

    #[test]
    fn env_keys_are_checked() {
        assert!(Keyring::open(KeySource::Env {
            current: "c2hvcnQ=".into()
        })
        .is_err());
        let good = STANDARD.encode([7u8; 32]);
        let k = Keyring::open(KeySource::Env { current: good }).unwrap();
        assert_eq!(k.active_version(), 1);
        assert!(format!("{:?}", k.active().1).contains("REDACTED"));
    }
}
