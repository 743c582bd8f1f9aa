//! The server configuration: one typed struct, from flags > `BERTH_*` env > TOML
//! file > defaults. The binary maps flags and env; this module reads the file and
//! fills what neither gave.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use berth_registry::NetworkPolicy;
use berth_runtime::sandbox::Sandbox;
use serde::Deserialize;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8440";

#[derive(Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `sqlite://...` or `postgres://...`; default `sqlite://DATA_DIR/berth.db`.
    pub database_url: String,
    /// Base64 of 32 bytes; `None` means the key file in the data dir.
    pub master_key: Option<String>,
    pub registry: NetworkPolicy,
    pub vault: VaultConfig,
    /// How the other replicas reach this one (`http://host:port`), for reading the
    /// logs of the deployments it runs; default: the address it listens on (the
    /// host name for an unspecified address).
    pub advertise_url: Option<String>,
    /// What every container runs inside (user namespace range, limits).
    pub sandbox: Sandbox,
    /// How deployments run: how many at once, their deadline, a blob's stall timeout.
    pub deploys: DeployLimits,
    /// How often stored credentials are checked against their registry.
    pub checks: CredentialChecks,
    /// Where containers run: on this machine with runc, or on a Kubernetes
    /// cluster.
    pub runtime: RuntimeChoice,
    /// How apps are reached (the ingress) and what they reach (egress).
    pub traffic: TrafficConfig,
    /// The region this replica serves (`--region`): it runs the services naming
    /// it and those naming none.
    pub region: Option<String>,
}

/// The ingress and the containers' egress.
#[derive(Clone, Debug, PartialEq)]
pub struct TrafficConfig {
    /// Plain HTTP; `None`: no ingress.
    pub ingress_listen: Option<SocketAddr>,
    /// HTTPS; `None`: none.
    pub ingress_tls_listen: Option<SocketAddr>,
    /// Where the HTTPS listener's certificates come from.
    pub tls: Option<TlsSource>,
    /// Apps are `<service>.<project>.<apps_domain>`.
    pub apps_domain: String,
    /// Ranges containers may reach despite the blocklist.
    pub egress_allow: Vec<ipnet::IpNet>,
    /// Where containers' DNS queries go; empty: the host's resolvers.
    pub container_dns: Vec<SocketAddr>,
}

/// The ingress's certificates: PEM files (`<host>.crt`, `<host>.key`) in a
/// directory, or issued by an ACME CA for the routed hosts.
#[derive(Clone, Debug, PartialEq)]
pub enum TlsSource {
    PemDir(PathBuf),
    Acme {
        directory_url: String,
        /// `mailto:` contacts for the account.
        contact: Vec<String>,
        /// Extra roots for the CA's own HTTPS (a test CA).
        ca_file: Option<PathBuf>,
    },
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            ingress_listen: Some(SocketAddr::from(([127, 0, 0, 1], 8441))),
            ingress_tls_listen: None,
            tls: None,
            apps_domain: "localhost".into(),
            egress_allow: Vec::new(),
            container_dns: Vec::new(),
        }
    }
}

/// `--runtime`: runc on this machine (the default), or a Kubernetes cluster.
#[derive(Clone, Debug, Default)]
pub enum RuntimeChoice {
    #[default]
    Runc,
    Kubernetes(berth_kubernetes::Settings),
}

/// The background checks of stored credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialChecks {
    /// Each credential is checked once per period (jittered; zero: never).
    pub interval: std::time::Duration,
    /// At most this many checks of one registry per round, one at a time.
    pub per_registry: usize,
}

impl Default for CredentialChecks {
    fn default() -> Self {
        CredentialChecks {
            interval: std::time::Duration::from_secs(6 * 3600),
            per_registry: 10,
        }
    }
}

/// How a replica runs deployments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeployLimits {
    /// Deployments run at once on a replica (fairly across projects).
    pub concurrency: usize,
    /// A deployment that has not started its container by then is `FAILED timeout`.
    pub deadline: std::time::Duration,
    /// A blob download with no byte for this long is `FAILED timeout`.
    pub stall: std::time::Duration,
    /// A container that exits with a failure this soon after it started fails its
    /// deployment (`runtime_error`, with the exit code and its last lines).
    pub start_window: std::time::Duration,
    /// A service with a port is `DEPLOYED` once its port (or health path)
    /// answers; not by then, its deployment is `FAILED timeout`.
    pub ready_deadline: std::time::Duration,
    /// How large an image may be.
    pub caps: berth_runtime::pull::Caps,
    /// How much of each deployment's container output is kept.
    pub logs: berth_runtime::log::Rotation,
    /// The delays between restarts of a container that keeps exiting.
    pub restart_backoff: Backoff,
    /// eStargz layers mounted lazily (FUSE) instead of pulled before the start.
    pub lazy_pull: bool,
    /// The FUSE device lazy mounts open; where it cannot be opened, images are
    /// pulled in full (tests point it at a path that does not exist).
    pub fuse_device: &'static str,
}

/// Kubernetes' CrashLoopBackOff: the first restart after `initial`, each next one
/// after twice the delay before it, at most `max`; a container that ran for
/// [`Backoff::RESET_AFTER`] without exiting starts from `initial` again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: std::time::Duration,
    pub max: std::time::Duration,
}

impl Backoff {
    pub const RESET_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

    /// The delay before restart number `streak + 1` of a crash loop.
    pub fn delay(&self, streak: u32) -> std::time::Duration {
        self.initial
            .saturating_mul(1u32 << streak.min(20))
            .min(self.max)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: std::time::Duration::from_secs(10),
            max: std::time::Duration::from_secs(300),
        }
    }
}

impl Default for DeployLimits {
    fn default() -> Self {
        DeployLimits {
            concurrency: 4,
            deadline: std::time::Duration::from_secs(900),
            stall: berth_runtime::pull::DEFAULT_STALL,
            start_window: std::time::Duration::from_millis(500),
            ready_deadline: std::time::Duration::from_secs(60),
            caps: Default::default(),
            logs: Default::default(),
            restart_backoff: Default::default(),
            lazy_pull: true,
            fuse_device: "/dev/fuse",
        }
    }
}

/// The master key never reaches a log line or a panic message.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("data_dir", &self.data_dir)
            .field("listen", &self.listen)
            .field("database_url", &"[REDACTED]")
            .field(
                "master_key",
                &self.master_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field("registry", &self.registry)
            .field("vault", &self.vault)
            .field("advertise_url", &self.advertise_url)
            .field("sandbox", &self.sandbox)
            .field("deploys", &self.deploys)
            .field("runtime", &self.runtime)
            .finish()
    }
}

/// Where master keys come from and where passwords are kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VaultConfig {
    /// A KMS key (id, ARN or alias) wrapping the master keys (envelope encryption).
    pub kms_key_id: Option<String>,
    pub secret_store: SecretStoreKind,
    /// Name prefix of the Secrets Manager secrets.
    pub secrets_manager_prefix: String,
    /// The KMS key Secrets Manager encrypts them with (the account default if unset).
    pub secrets_manager_kms_key_id: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SecretStoreKind {
    /// Sealed with the master key, in the database.
    #[default]
    Database,
    /// One AWS Secrets Manager secret per service; its ARN in the database.
    AwsSecretsManager,
}

impl std::str::FromStr for SecretStoreKind {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "database" => Ok(SecretStoreKind::Database),
            "aws-secrets-manager" => Ok(SecretStoreKind::AwsSecretsManager),
            other => Err(ConfigError::SecretStore(other.into())),
        }
    }
}

pub const DEFAULT_SECRETS_MANAGER_PREFIX: &str = "berth/";

/// The TOML file. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub master_key: Option<String>,
    pub advertise_url: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub registry: FileRegistry,
    #[serde(default)]
    pub vault: FileVault,
    #[serde(default)]
    pub containers: FileContainers,
    #[serde(default)]
    pub deploys: FileDeploys,
    #[serde(default)]
    pub credentials: FileCredentials,
    #[serde(default)]
    pub runtime: FileRuntime,
    #[serde(default)]
    pub ingress: FileIngress,
}

/// `[ingress]`: how apps are reached.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileIngress {
    pub listen: Option<String>,
    pub tls_listen: Option<String>,
    pub apps_domain: Option<String>,
    pub tls_certs: Option<PathBuf>,
    pub acme_directory: Option<String>,
    pub acme_email: Option<String>,
    pub acme_ca_file: Option<PathBuf>,
}

/// `[runtime]`: where containers run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    /// `runc` or `kubernetes`.
    pub kind: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    /// One namespace for every project's workloads (default: `berth-<project>`).
    pub namespace: Option<String>,
    /// `hostUsers: false` on pods (default: true).
    pub user_namespaces: Option<bool>,
    /// CIDRs a project's pods may reach besides the public internet.
    pub egress_allow: Option<StringOrList>,
    /// The services' Ingresses' class (default: the cluster's default class).
    pub ingress_class: Option<String>,
    /// The ingress controller's namespace (default: `ingress-nginx`).
    pub ingress_namespace: Option<String>,
    /// The storage class of services' volumes (default: the cluster's default).
    pub storage_class: Option<String>,
}

/// `[credentials]`: the background checks of stored credentials.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCredentials {
    /// Seconds between two checks of a credential (0: no checks).
    pub check_interval_secs: Option<u64>,
}

/// `[deploys]`: how deployments run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDeploys {
    pub concurrency: Option<usize>,
    pub timeout_secs: Option<u64>,
    pub stall_secs: Option<u64>,
    pub start_window_ms: Option<u64>,
    /// Uncompressed MiB of one layer, and of an image.
    pub max_layer_mb: Option<u64>,
    pub max_image_mb: Option<u64>,
    /// Entries of one layer.
    pub max_layer_entries: Option<u64>,
    /// Container output kept per deployment: files of this many MiB, this many files.
    pub log_max_size_mb: Option<u64>,
    pub log_max_files: Option<u32>,
    /// The first delay of a crash loop's restarts, and the longest.
    pub restart_backoff_ms: Option<u64>,
    pub restart_backoff_max_ms: Option<u64>,
    /// eStargz layers mounted lazily (`--lazy-pull`).
    pub lazy_pull: Option<bool>,
}

/// `[containers]`: the sandbox every container runs in.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileContainers {
    pub userns_base: Option<u32>,
    pub memory_mb: Option<u64>,
    pub pids: Option<i64>,
    pub cpus: Option<f64>,
    /// CIDRs containers may reach besides the public internet.
    pub egress_allow: Option<StringOrList>,
    /// Resolvers for containers' DNS (IP or IP:port).
    pub dns: Option<StringOrList>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileVault {
    pub kms_key_id: Option<String>,
    pub secret_store: Option<String>,
    pub secrets_manager_prefix: Option<String>,
    pub secrets_manager_kms_key_id: Option<String>,
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
    #[error("secret store {0:?} is not one of: database, aws-secrets-manager")]
    SecretStore(String),
    #[error(
        "give the master key one way: BERTH_MASTER_KEY or a KMS key (BERTH_KMS_KEY_ID), not both"
    )]
    TwoKeySources,
    #[error("--region: {0}")]
    Region(String),
    #[error("advertise URL {0:?} is not http://HOST:PORT or https://HOST:PORT")]
    AdvertiseUrl(String),
    #[error("container limits: {0}")]
    Containers(String),
    #[error("the Kubernetes runtime: {0}")]
    Kubernetes(String),
    #[error("traffic: {0}")]
    Traffic(String),
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
    pub kms_key_id: Option<String>,
    pub secret_store: Option<String>,
    pub secrets_manager_prefix: Option<String>,
    pub secrets_manager_kms_key_id: Option<String>,
    pub advertise_url: Option<String>,
    pub userns_base: Option<u32>,
    pub container_memory_mb: Option<u64>,
    pub container_pids: Option<i64>,
    pub container_cpus: Option<f64>,
    pub deploy_concurrency: Option<usize>,
    pub deploy_timeout_secs: Option<u64>,
    pub blob_stall_secs: Option<u64>,
    pub start_window_ms: Option<u64>,
    pub log_max_size_mb: Option<u64>,
    pub log_max_files: Option<u32>,
    pub restart_backoff_ms: Option<u64>,
    pub lazy_pull: Option<bool>,
    pub credential_check_interval_secs: Option<u64>,
    pub runtime: Option<String>,
    pub kubeconfig: Option<PathBuf>,
    pub kubernetes_namespace: Option<String>,
    pub kubernetes_user_namespaces: Option<bool>,
    /// Comma-separated CIDRs.
    pub kubernetes_egress_allow: Option<String>,
    pub kubernetes_ingress_class: Option<String>,
    pub kubernetes_ingress_namespace: Option<String>,
    pub kubernetes_storage_class: Option<String>,
    pub region: Option<String>,
    pub ingress_listen: Option<String>,
    pub ingress_tls_listen: Option<String>,
    pub ingress_tls_certs: Option<PathBuf>,
    pub acme_directory: Option<String>,
    pub acme_email: Option<String>,
    pub acme_ca_file: Option<PathBuf>,
    pub apps_domain: Option<String>,
    pub container_egress_allow: Option<String>,
    pub container_dns: Option<String>,
}

impl FileConfig {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read(path.into(), e.to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.into(), e.to_string()))
    }
}

impl Config {
    /// Each section in turn: when several settings are wrong, the first one in
    /// this order is the one reported.
    pub fn resolve(o: Overrides, file: FileConfig) -> Result<Self, ConfigError> {
        let data_dir = o
            .data_dir
            .clone()
            .or(file.data_dir.clone())
            .ok_or(ConfigError::NoDataDir)?;
        let listen = listen_address(&o, &file)?;
        let database_url = o
            .database_url
            .clone()
            .or(file.database_url.clone())
            .unwrap_or_else(|| {
                format!("sqlite://{}?mode=rwc", data_dir.join("berth.db").display())
            });
        let registry = registry_policy(&o, &file.registry)?;
        let master_key = nonempty(o.master_key.as_deref().or(file.master_key.as_deref()));
        let vault = vault_config(&o, &file.vault)?;
        if master_key.is_some() && vault.kms_key_id.is_some() {
            return Err(ConfigError::TwoKeySources);
        }
        let advertise_url = advertise_url(&o, &file)?;
        let sandbox = sandbox(&o, &file.containers)?;
        let deploys = deploy_limits(&o, &file.deploys)?;
        let checks = credential_checks(&o, &file.credentials);
        let runtime = runtime_choice(&o, &file.runtime, &deploys, &sandbox)?;
        let traffic = traffic(&o, &file)?;
        let region = match nonempty(o.region.as_deref().or(file.region.as_deref())) {
            Some(r) => region(&r).map_err(ConfigError::Region)?,
            None => None,
        };
        Ok(Config {
            data_dir,
            listen,
            database_url,
            master_key,
            registry,
            vault,
            advertise_url,
            sandbox,
            deploys,
            checks,
            runtime,
            traffic,
            region,
        })
    }
}

/// A region's name: a slug (`[a-z0-9][a-z0-9-]{0,62}`); `""` is none.
pub fn region(r: &str) -> Result<Option<String>, String> {
    if r.is_empty() {
        return Ok(None);
    }
    let ok = r.len() <= 63
        && r.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    match ok {
        true => Ok(Some(r.to_owned())),
        false => Err(format!(
            "the region {r:?} is not a name such as eu-west-1 (lowercase letters, digits, -)"
        )),
    }
}

/// The ingress addresses (`off` switches one off), the apps' domain, and the
/// containers' egress ranges and resolvers.
fn traffic(o: &Overrides, file: &FileConfig) -> Result<TrafficConfig, ConfigError> {
    let mut t = TrafficConfig::default();
    let address = |v: &str| -> Result<Option<SocketAddr>, ConfigError> {
        match v.trim() {
            "" | "off" => Ok(None),
            v => v
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::Listen(v.into())),
        }
    };
    if let Some(v) = o
        .ingress_listen
        .as_deref()
        .or(file.ingress.listen.as_deref())
    {
        t.ingress_listen = address(v)?;
    }
    if let Some(v) = o
        .ingress_tls_listen
        .as_deref()
        .or(file.ingress.tls_listen.as_deref())
    {
        t.ingress_tls_listen = address(v)?;
    }
    if let Some(d) = o
        .apps_domain
        .as_deref()
        .or(file.ingress.apps_domain.as_deref())
    {
        let d = d.trim().trim_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if d.is_empty() || !d.split('.').all(label_ok) {
            return Err(ConfigError::Traffic(format!(
                "{d:?} is not a domain for apps (e.g. apps.example.com)"
            )));
        }
        t.apps_domain = d;
    }
    let allow = o.container_egress_allow.clone().or(file
        .containers
        .egress_allow
        .as_ref()
        .map(StringOrList::joined));
    if let Some(list) = allow {
        t.egress_allow = berth_registry::policy::parse_cidrs(&list)
            .map_err(|e| ConfigError::Traffic(format!("container egress: {e}")))?;
    }
    let dns = o
        .container_dns
        .clone()
        .or(file.containers.dns.as_ref().map(StringOrList::joined));
    if let Some(list) = dns {
        t.container_dns = list
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|a| {
                a.parse::<SocketAddr>()
                    .or_else(|_| {
                        a.parse::<std::net::IpAddr>()
                            .map(|ip| SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| {
                        ConfigError::Traffic(format!("container DNS {a:?} is not IP or IP:port"))
                    })
            })
            .collect::<Result<_, _>>()?;
    }
    Ok(t)
}

/// An empty value counts as none, and still beats the file's: `BERTH_KMS_KEY_ID=`
/// switches off the file's KMS key.
fn nonempty(v: Option<&str>) -> Option<String> {
    v.filter(|s| !s.is_empty()).map(str::to_owned)
}

fn listen_address(o: &Overrides, file: &FileConfig) -> Result<SocketAddr, ConfigError> {
    let listen = o
        .listen
        .as_deref()
        .or(file.listen.as_deref())
        .unwrap_or(DEFAULT_LISTEN);
    listen
        .parse()
        .map_err(|_| ConfigError::Listen(listen.to_owned()))
}

/// Private ranges allowed, plain-HTTP hosts, and the extra CA (read here: an
/// unreadable file stops the start).
fn registry_policy(o: &Overrides, file: &FileRegistry) -> Result<NetworkPolicy, ConfigError> {
    let allow = o
        .allow_private
        .clone()
        .or(file.allow_private.as_ref().map(StringOrList::joined))
        .unwrap_or_default();
    let insecure = o
        .insecure
        .clone()
        .or(file.insecure.as_ref().map(StringOrList::joined))
        .unwrap_or_default();
    let mut registry = NetworkPolicy::from_lists(&allow, &insecure)
        .map_err(|e| ConfigError::Policy(e.to_string()))?;
    if let Some(ca) = o.ca_file.as_ref().or(file.ca_file.as_ref()) {
        let pem = std::fs::read(ca).map_err(|e| ConfigError::CaFile(ca.clone(), e.to_string()))?;
        registry.extra_roots_pem = Some(pem);
    }
    Ok(registry)
}

fn vault_config(o: &Overrides, file: &FileVault) -> Result<VaultConfig, ConfigError> {
    Ok(VaultConfig {
        kms_key_id: nonempty(o.kms_key_id.as_deref().or(file.kms_key_id.as_deref())),
        secret_store: nonempty(o.secret_store.as_deref().or(file.secret_store.as_deref()))
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or_default(),
        secrets_manager_prefix: o
            .secrets_manager_prefix
            .clone()
            .or(file.secrets_manager_prefix.clone())
            .unwrap_or_else(|| DEFAULT_SECRETS_MANAGER_PREFIX.into()),
        secrets_manager_kms_key_id: nonempty(
            o.secrets_manager_kms_key_id
                .as_deref()
                .or(file.secrets_manager_kms_key_id.as_deref()),
        ),
    })
}

/// Trimmed of its trailing `/` (paths are appended to it); http or https only.
fn advertise_url(o: &Overrides, file: &FileConfig) -> Result<Option<String>, ConfigError> {
    let advertise_url = nonempty(o.advertise_url.as_deref().or(file.advertise_url.as_deref()))
        .map(|u| u.trim_end_matches('/').to_owned());
    if let Some(u) = &advertise_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) {
            return Err(ConfigError::AdvertiseUrl(u.clone()));
        }
    }
    Ok(advertise_url)
}

/// `[containers]`: the user namespace range and the limits every container gets.
fn sandbox(o: &Overrides, file: &FileContainers) -> Result<Sandbox, ConfigError> {
    let mut sandbox = Sandbox::default();
    if let Some(base) = o.userns_base.or(file.userns_base) {
        sandbox.ids.base = base;
    }
    if let Some(mb) = o.container_memory_mb.or(file.memory_mb) {
        if mb < 16 {
            return Err(ConfigError::Containers(format!(
                "{mb} MiB of memory is too little (16 at least)"
            )));
        }
        sandbox.memory_bytes = mb << 20;
    }
    if let Some(pids) = o.container_pids.or(file.pids) {
        if pids < 8 {
            return Err(ConfigError::Containers(format!(
                "{pids} processes are too few (8 at least)"
            )));
        }
        sandbox.pids = pids;
    }
    if let Some(cpus) = o.container_cpus.or(file.cpus) {
        if !(0.01..=1024.0).contains(&cpus) {
            return Err(ConfigError::Containers(format!(
                "{cpus} CPUs is not between 0.01 and 1024"
            )));
        }
        sandbox.cpus = cpus;
    }
    Ok(sandbox)
}

/// `[deploys]`: how many at once, their deadlines, how large an image may be, the
/// logs kept and the restarts' backoff.
fn deploy_limits(o: &Overrides, file: &FileDeploys) -> Result<DeployLimits, ConfigError> {
    let mut deploys = DeployLimits::default();
    if let Some(n) = o.deploy_concurrency.or(file.concurrency) {
        if !(1..=256).contains(&n) {
            return Err(ConfigError::Containers(format!(
                "deploy concurrency {n} is not between 1 and 256"
            )));
        }
        deploys.concurrency = n;
    }
    if let Some(t) = o.deploy_timeout_secs.or(file.timeout_secs) {
        deploys.deadline = std::time::Duration::from_secs(t.max(1));
    }
    if let Some(t) = o.blob_stall_secs.or(file.stall_secs) {
        deploys.stall = std::time::Duration::from_secs(t.max(1));
    }
    if let Some(t) = o.start_window_ms.or(file.start_window_ms) {
        deploys.start_window = std::time::Duration::from_millis(t);
    }
    // The caps have no flag or env variable: the file only.
    if let Some(mb) = file.max_layer_mb {
        deploys.caps.layer_bytes = mb << 20;
    }
    if let Some(mb) = file.max_image_mb {
        deploys.caps.image_bytes = mb << 20;
    }
    if let Some(n) = file.max_layer_entries {
        deploys.caps.entries = n;
    }
    deploys.logs = log_rotation(o, file)?;
    deploys.restart_backoff = restart_backoff(o, file);
    if let Some(on) = o.lazy_pull.or(file.lazy_pull) {
        deploys.lazy_pull = on;
    }
    Ok(deploys)
}

/// How much of each deployment's container output is kept.
fn log_rotation(
    o: &Overrides,
    file: &FileDeploys,
) -> Result<berth_runtime::log::Rotation, ConfigError> {
    let mut logs = berth_runtime::log::Rotation::default();
    if let Some(mb) = o.log_max_size_mb.or(file.log_max_size_mb) {
        if !(1..=1 << 20).contains(&mb) {
            return Err(ConfigError::Containers(format!(
                "a log file of {mb} MiB is not between 1 MiB and 1 TiB"
            )));
        }
        logs.max_bytes = mb << 20;
    }
    if let Some(n) = o.log_max_files.or(file.log_max_files) {
        if !(1..=100).contains(&n) {
            return Err(ConfigError::Containers(format!(
                "{n} log files is not between 1 and 100"
            )));
        }
        logs.max_files = n;
    }
    Ok(logs)
}

/// The crash loop's delays; the longest is never shorter than the first.
fn restart_backoff(o: &Overrides, file: &FileDeploys) -> Backoff {
    let mut backoff = Backoff::default();
    if let Some(ms) = o.restart_backoff_ms.or(file.restart_backoff_ms) {
        backoff.initial = std::time::Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = file.restart_backoff_max_ms {
        backoff.max = std::time::Duration::from_millis(ms.max(1));
    }
    backoff.max = backoff.max.max(backoff.initial);
    backoff
}

fn credential_checks(o: &Overrides, file: &FileCredentials) -> CredentialChecks {
    let mut checks = CredentialChecks::default();
    if let Some(t) = o
        .credential_check_interval_secs
        .or(file.check_interval_secs)
    {
        checks.interval = std::time::Duration::from_secs(t);
    }
    checks
}

fn runtime_choice(
    o: &Overrides,
    file: &FileRuntime,
    deploys: &DeployLimits,
    sandbox: &Sandbox,
) -> Result<RuntimeChoice, ConfigError> {
    match o.runtime.as_deref().or(file.kind.as_deref()) {
        None | Some("runc") => Ok(RuntimeChoice::Runc),
        Some("kubernetes") => Ok(RuntimeChoice::Kubernetes(kubernetes_settings(
            o, file, deploys, sandbox,
        )?)),
        Some(other) => Err(ConfigError::Containers(format!(
            "runtime {other:?} is not runc or kubernetes"
        ))),
    }
}

/// The cluster's settings; its deadline and container defaults follow what runc
/// would use.
fn kubernetes_settings(
    o: &Overrides,
    file: &FileRuntime,
    deploys: &DeployLimits,
    sandbox: &Sandbox,
) -> Result<berth_kubernetes::Settings, ConfigError> {
    Ok(berth_kubernetes::Settings {
        kubeconfig: o.kubeconfig.clone().or(file.kubeconfig.clone()),
        namespaces: match o.kubernetes_namespace.clone().or(file.namespace.clone()) {
            Some(ns) => berth_kubernetes::Namespaces::Fixed(ns),
            None => berth_kubernetes::Namespaces::PerProject,
        },
        user_namespaces: o
            .kubernetes_user_namespaces
            .or(file.user_namespaces)
            .unwrap_or(true),
        progress_deadline_s: (deploys.deadline.as_secs().clamp(10, 3600) as i32) - 5,
        // The same defaults runc's sandbox gives a container.
        default_resources: berth_kubernetes::Resources {
            memory_mb: sandbox.memory_bytes >> 20,
            cpu_millis: (sandbox.cpus * 1000.0).round() as u64,
        },
        egress_allow: cidrs(
            &o.kubernetes_egress_allow
                .clone()
                .or(file.egress_allow.as_ref().map(StringOrList::joined))
                .unwrap_or_default(),
        )?,
        ingress_class: nonempty(
            o.kubernetes_ingress_class
                .as_deref()
                .or(file.ingress_class.as_deref()),
        ),
        ingress_namespace: ingress_namespace(o, file)?,
        storage_class: nonempty(
            o.kubernetes_storage_class
                .as_deref()
                .or(file.storage_class.as_deref()),
        ),
    })
}

/// `--kubernetes-ingress-namespace`: a namespace name (a DNS-1123 label), which
/// the NetworkPolicies select by its `kubernetes.io/metadata.name` label.
fn ingress_namespace(o: &Overrides, file: &FileRuntime) -> Result<String, ConfigError> {
    let ns = nonempty(
        o.kubernetes_ingress_namespace
            .as_deref()
            .or(file.ingress_namespace.as_deref()),
    )
    .unwrap_or_else(|| berth_kubernetes::DEFAULT_INGRESS_NAMESPACE.to_owned());
    if berth_kubernetes::dns_label(&ns) != ns {
        return Err(ConfigError::Kubernetes(format!(
            "--kubernetes-ingress-namespace: {ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
        )));
    }
    Ok(ns)
}

fn cidrs(list: &str) -> Result<Vec<berth_kubernetes::IpNet>, ConfigError> {
    berth_kubernetes::parse_cidrs(list)
        .map_err(|e| ConfigError::Kubernetes(format!("--kubernetes-egress-allow: {e}")))
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
        assert_eq!(
            c.vault,
            VaultConfig {
                secrets_manager_prefix: "berth/".into(),
                ..Default::default()
            }
        );
    }

    #[test]
    fn kubernetes_gets_the_container_defaults_and_user_namespaces_unless_off() {
        let kube = |o: Overrides, file: &str| {
            let c = Config::resolve(
                Overrides {
                    data_dir: Some("/d".into()),
                    runtime: Some("kubernetes".into()),
                    ..o
                },
                toml::from_str(file).unwrap(),
            );
            match c.map(|c| c.runtime) {
                Ok(RuntimeChoice::Kubernetes(s)) => Ok(s),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        let s = kube(Overrides::default(), "").unwrap();
        assert!(s.user_namespaces);
        assert_eq!(
            s.default_resources,
            berth_kubernetes::Resources {
                memory_mb: 512,
                cpu_millis: 1000
            }
        );
        assert!(s.egress_allow.is_empty());
        let s = kube(
            Overrides {
                container_memory_mb: Some(300),
                container_cpus: Some(0.25),
                kubernetes_user_namespaces: Some(false),
                kubernetes_egress_allow: Some("10.20.0.0/16, 169.254.20.10".into()),
                ..Default::default()
            },
            "[runtime]\nuser_namespaces = true\negress_allow = [\"192.168.1.0/24\"]",
        )
        .unwrap();
        assert!(!s.user_namespaces, "the flag beats the file");
        assert_eq!(
            s.default_resources,
            berth_kubernetes::Resources {
                memory_mb: 300,
                cpu_millis: 250
            }
        );
        let allowed: Vec<String> = s.egress_allow.iter().map(|c| c.to_string()).collect();
        assert_eq!(allowed, ["10.20.0.0/16", "169.254.20.10/32"]);
        let s = kube(
            Overrides::default(),
            "[runtime]\negress_allow = \"192.168.1.0/24\"",
        )
        .unwrap();
        assert_eq!(s.egress_allow.len(), 1);
        let e = kube(
            Overrides {
                kubernetes_egress_allow: Some("harbor.internal".into()),
                ..Default::default()
            },
            "",
        )
        .unwrap_err();
        assert!(e.contains("--kubernetes-egress-allow"), "{e}");
    }

    #[test]
    fn kubernetes_ingress_class_and_namespace() {
        let kube = |o: Overrides, file: &str| {
            let c = Config::resolve(
                Overrides {
                    data_dir: Some("/d".into()),
                    runtime: Some("kubernetes".into()),
                    ..o
                },
                toml::from_str(file).unwrap(),
            );
            match c.map(|c| c.runtime) {
                Ok(RuntimeChoice::Kubernetes(s)) => Ok((s.ingress_class, s.ingress_namespace)),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.to_string()),
            }
        };
        assert_eq!(
            kube(Overrides::default(), ""),
            Ok((None, "ingress-nginx".into()))
        );
        assert_eq!(
            kube(
                Overrides::default(),
                "[runtime]\ningress_class = \"nginx\"\ningress_namespace = \"traefik\""
            ),
            Ok((Some("nginx".into()), "traefik".into()))
        );
        assert_eq!(
            kube(
                Overrides {
                    kubernetes_ingress_class: Some("public".into()),
                    kubernetes_ingress_namespace: Some("kube-system".into()),
                    ..Default::default()
                },
                "[runtime]\ningress_class = \"nginx\""
            ),
            Ok((Some("public".into()), "kube-system".into())),
            "the flags beat the file"
        );
        let e = kube(
            Overrides {
                kubernetes_ingress_namespace: Some("Ingress_NGINX".into()),
                ..Default::default()
            },
            "",
        )
        .unwrap_err();
        assert!(e.contains("--kubernetes-ingress-namespace"), "{e}");
    }

    #[test]
    fn debug_shows_no_key_and_no_database_password() {
        let c = Config::resolve(
            Overrides {
                data_dir: Some("/d".into()),
                master_key: Some("c2VjcmV0LW1hc3Rlci1rZXktYmFzZTY0LXh4eHh4eHg=".into()),
                database_url: Some("postgres://berth:db-Pa55@db/berth".into()),
                ..Default::default()
            },
            FileConfig::default(),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("c2VjcmV0"), "{dbg}");
        assert!(!dbg.contains("db-Pa55"), "{dbg}");
        assert!(dbg.contains("REDACTED"));
    }

    #[test]
    fn vault_settings() {
        let file: FileConfig = toml::from_str(
            r#"
            data_dir = "/d"
            [vault]
            kms_key_id = "alias/berth"
            secret_store = "aws-secrets-manager"
            secrets_manager_prefix = "prod/berth/"
            "#,
        )
        .unwrap();
        let c = Config::resolve(Overrides::default(), file).unwrap();
        assert_eq!(c.vault.kms_key_id.as_deref(), Some("alias/berth"));
        assert_eq!(c.vault.secret_store, SecretStoreKind::AwsSecretsManager);
        assert_eq!(c.vault.secrets_manager_prefix, "prod/berth/");
        let both = Overrides {
            data_dir: Some("/d".into()),
            master_key: Some("k".into()),
            kms_key_id: Some("alias/berth".into()),
            ..Default::default()
        };
        assert!(matches!(
            Config::resolve(both, FileConfig::default()),
            Err(ConfigError::TwoKeySources)
        ));
        let bad = Overrides {
            data_dir: Some("/d".into()),
            secret_store: Some("s3".into()),
            ..Default::default()
        };
        assert!(matches!(
            Config::resolve(bad, FileConfig::default()),
            Err(ConfigError::SecretStore(_))
        ));
    }
}
