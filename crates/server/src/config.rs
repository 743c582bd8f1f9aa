//! The server configuration: one typed struct, from flags > `BERTH_*` env > TOML
//! file > defaults. The binary maps flags and env; this module reads the file and
//! fills what neither gave.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use berth_registry::NetworkPolicy;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8440";

#[derive(Clone, Debug)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`; default `sqlite://DATA_DIR/berth.db`.
    pub database_url: String,
    /// Base64 of 32 bytes; `None` means the key file in the data dir.
    pub master_key: Option<String>,
    pub registry: NetworkPolicy,
}

/// The TOML file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub master_key: Option<String>,
    #[serde(default)]
    pub registry: FileRegistry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRegistry {
    pub allow_private: Option<StringOrList>,
    pub insecure: Option<StringOrList>,
    pub ca_file: Option<PathBuf>,
}

/// `"a, b"` or `["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn joined(&self) -> String {
        match self {
            StringOrList::One(s) => s.clone(),
            StringOrList::Many(v) => v.join(","),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {0}: {1}")]
    Read(PathBuf, String),
    #[error("the config file {0} is not valid: {1}")]
    Parse(PathBuf, String),
    #[error("--data-dir (BERTH_DATA_DIR, data_dir) is required")]
    NoDataDir,
    #[error("{0:?} is not an address to listen on (e.g. 127.0.0.1:8440)")]
    Listen(String),
    #[error("registry policy: {0}")]
    Policy(String),
    #[error("cannot read the registry CA file {0}: {1}")]
    CaFile(PathBuf, String),
}

/// What flags and env gave (already merged by clap: a flag beats its env variable).
#[derive(Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub master_key: Option<String>,
    pub allow_private: Option<String>,
    pub insecure: Option<String>,
    pub ca_file: Option<PathBuf>,
}

impl FileConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.into(), e.to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e.to_string()))
    }
}

impl Config {
    pub fn resolve(o: Overrides, file: FileConfig) -> Result<Self, ConfigError> {
        let data_dir = o.data_dir.or(file.data_dir).ok_or(ConfigError::NoDataDir)?;
        let listen_s = o
            .listen
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_s
            .parse()
            .map_err(|_| ConfigError::Listen(listen_s.clone()))?;
        let database_url = o.database_url.or(file.database_url).unwrap_or_else(|| {
            format!("sqlite://{}?mode=rwc", data_dir.join("berth.db").display())
        });
        let allow = o
            .allow_private
            .or(file.registry.allow_private.map(|s| s.joined()))
            .unwrap_or_default();
        let insecure = o
            .insecure
            .or(file.registry.insecure.map(|s| s.joined()))
            .unwrap_or_default();
        let mut registry = NetworkPolicy::from_lists(&allow, &insecure)
            .map_err(|e| ConfigError::Policy(e.to_string()))?;
        if let Some(ca) = o.ca_file.or(file.registry.ca_file) {
            let pem =
                std::fs::read(&ca).map_err(|e| ConfigError::CaFile(ca.clone(), e.to_string()))?;
            registry.extra_roots_pem = Some(pem);
        }
        Ok(Config {
            data_dir,
            listen,
            database_url,
            master_key: o.master_key.or(file.master_key).filter(|k| !k.is_empty()),
            registry,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_beat_the_file_which_beats_defaults() {
        let file: FileConfig = toml::from_str(
            r#"
            data_dir = "/from/file"
            listen = "127.0.0.1:9000"
            [registry]
            allow_private = ["10.0.0.0/8", "192.168.1.0/24"]
            insecure = "harbor.local:5000"
            "#,
        )
        .unwrap();
        let c = Config::resolve(
            Overrides {
                listen: Some("127.0.0.1:9100".into()),
                ..Default::default()
            },
            file,
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from/file"));
        assert_eq!(c.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(c.database_url, "sqlite:///from/file/berth.db?mode=rwc");
        assert_eq!(c.registry.allow_private.len(), 2);
        assert!(c.registry.is_insecure("harbor.local", Some(5000)));
        assert!(matches!(
            Config::resolve(Overrides::default(), FileConfig::default()),
            Err(ConfigError::NoDataDir)
        ));
        assert!(toml::from_str::<FileConfig>("nonsense = 1").is_err());
    }
}
