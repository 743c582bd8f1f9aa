//! `berth server`: the control plane.

use std::path::PathBuf;

use berth_server::{Config, FileConfig};

use super::{CliError, Outcome};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Server flags; each also reads its `BERTH_*` variable, and the TOML config fills
/// whatever neither gave (flag > env > config > default).
#[derive(clap::Args, Clone)]
pub struct Args {
    /// How log lines are written to stderr: `text`, or `json` (one object a line,
    /// for a log shipper)
    #[arg(long, env = "BERTH_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Where the database, the master key file and the admin token live
    #[arg(long, env = "BERTH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8440]
    #[arg(long, env = "BERTH_LISTEN")]
    listen: Option<String>,
    /// A TOML config file
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// postgres://... to run on PostgreSQL (several replicas may share it)
    #[arg(long, env = "BERTH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// CIDRs exempt from the registry SSRF blocklist
    #[arg(long, env = "BERTH_REGISTRY_ALLOW_PRIVATE")]
    registry_allow_private: Option<String>,
    /// host:port list reached over plain HTTP
    #[arg(long, env = "BERTH_REGISTRY_INSECURE")]
    registry_insecure: Option<String>,
    /// Extra PEM roots for registries with private CAs
    #[arg(long, env = "BERTH_REGISTRY_CA_FILE")]
    registry_ca_file: Option<PathBuf>,
    /// Wrap the master keys with this AWS KMS key (id, ARN or alias/NAME)
    #[arg(long, env = "BERTH_KMS_KEY_ID")]
    kms_key_id: Option<String>,
    /// Where passwords are kept: database (sealed, the default) or aws-secrets-manager
    #[arg(long, env = "BERTH_SECRET_STORE", value_parser = ["database", "aws-secrets-manager"])]
    secret_store: Option<String>,
    /// Name prefix of the Secrets Manager secrets [default: berth/]
    #[arg(long, env = "BERTH_SECRETS_MANAGER_PREFIX")]
    secrets_manager_prefix: Option<String>,
    /// The KMS key Secrets Manager encrypts the secrets with [default: the account's]
    #[arg(long, env = "BERTH_SECRETS_MANAGER_KMS_KEY_ID")]
    secrets_manager_kms_key_id: Option<String>,
    /// How other replicas reach this one, for deployment logs [default: the listen address]
    #[arg(long, env = "BERTH_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// First host id of the containers' user namespace range (65536 ids) [default: 1000000000]
    #[arg(long, env = "BERTH_USERNS_BASE")]
    userns_base: Option<u32>,
    /// Memory limit of each container, MiB [default: 512]
    #[arg(long, env = "BERTH_CONTAINER_MEMORY_MB")]
    container_memory_mb: Option<u64>,
    /// Process (and thread) limit of each container [default: 512]
    #[arg(long, env = "BERTH_CONTAINER_PIDS")]
    container_pids: Option<i64>,
    /// CPU limit of each container, in CPUs [default: 1]
    #[arg(long, env = "BERTH_CONTAINER_CPUS")]
    container_cpus: Option<f64>,
    /// Deployments run at once on this replica, fairly across projects [default: 4]
    #[arg(long, env = "BERTH_DEPLOY_CONCURRENCY")]
    deploy_concurrency: Option<usize>,
    /// Seconds a deployment may take to start its container [default: 900]
    #[arg(long, env = "BERTH_DEPLOY_TIMEOUT")]
    deploy_timeout: Option<u64>,
    /// Seconds a blob download may go without a byte [default: 30]
    #[arg(long, env = "BERTH_BLOB_STALL_TIMEOUT")]
    blob_stall_timeout: Option<u64>,
    /// Milliseconds a new container must keep running (or exit 0) to count as started [default: 500]
    #[arg(long, env = "BERTH_START_WINDOW_MS")]
    start_window_ms: Option<u64>,
    /// Container output kept per deployment: rotated at this many MiB [default: 20]
    #[arg(long, env = "BERTH_LOG_MAX_SIZE_MB")]
    log_max_size_mb: Option<u64>,
    /// Container output files kept per deployment, the current one included [default: 5]
    #[arg(long, env = "BERTH_LOG_MAX_FILES")]
    log_max_files: Option<u32>,
    /// First delay before restarting a container that exited; it doubles up to 5 minutes [default: 10000]
    #[arg(long, env = "BERTH_RESTART_BACKOFF_MS")]
    restart_backoff_ms: Option<u64>,
    /// Start containers of eStargz images before their layers are downloaded
    /// (chunks fetched on first read, each verified), when FUSE can be mounted
    /// [default: on]
    #[arg(long, env = "BERTH_LAZY_PULL", value_parser = ["on", "off"])]
    lazy_pull: Option<String>,
    /// Seconds between two background checks of each stored credential against its registry; 0: none [default: 21600]
    #[arg(long, env = "BERTH_CREDENTIAL_CHECK_INTERVAL")]
    credential_check_interval: Option<u64>,
    /// Where containers run: runc (on this machine) or kubernetes (a cluster)
    /// [default: runc]
    #[arg(long, env = "BERTH_RUNTIME", value_parser = ["runc", "kubernetes"])]
    runtime: Option<String>,
    /// The cluster's kubeconfig (kubernetes runtime) [default: in-cluster, else
    /// KUBECONFIG or ~/.kube/config]
    #[arg(long, env = "BERTH_KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// One namespace for every project's workloads (kubernetes runtime)
    /// [default: berth-<project>, created with labels]
    #[arg(long, env = "BERTH_KUBERNETES_NAMESPACE")]
    kubernetes_namespace: Option<String>,
    /// Run pods in user namespaces (hostUsers: false; Kubernetes 1.33+);
    /// =false for clusters whose runtime cannot [default: true]
    #[arg(
        long,
        env = "BERTH_KUBERNETES_USER_NAMESPACES",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    kubernetes_user_namespaces: Option<bool>,
    /// CIDRs a project's pods may reach besides the public internet
    /// (kubernetes runtime; comma-separated) [default: none]
    #[arg(long, env = "BERTH_KUBERNETES_EGRESS_ALLOW")]
    kubernetes_egress_allow: Option<String>,
    /// The ingressClassName of the services' Ingresses (kubernetes runtime)
    /// [default: none, the cluster's default class]
    #[arg(long, env = "BERTH_KUBERNETES_INGRESS_CLASS")]
    kubernetes_ingress_class: Option<String>,
    /// The ingress controller's namespace, the only one let in to serving pods
    /// (kubernetes runtime) [default: ingress-nginx]
    #[arg(long, env = "BERTH_KUBERNETES_INGRESS_NAMESPACE")]
    kubernetes_ingress_namespace: Option<String>,
    /// The storage class of services' volumes (kubernetes runtime)
    /// [default: the cluster's default class]
    #[arg(long, env = "BERTH_KUBERNETES_STORAGE_CLASS")]
    kubernetes_storage_class: Option<String>,
    /// The region this replica serves: it runs the services naming this region
    /// and those naming none [default: none, only services naming no region]
    #[arg(long, env = "BERTH_REGION")]
    region: Option<String>,
    /// Where the ingress serves the apps over HTTP ("off": no ingress)
    /// [default: 127.0.0.1:8441]
    #[arg(long, env = "BERTH_INGRESS_LISTEN")]
    ingress_listen: Option<String>,
    /// Where the ingress serves the apps over HTTPS [default: off]
    #[arg(long, env = "BERTH_INGRESS_TLS_LISTEN")]
    ingress_tls_listen: Option<String>,
    /// The HTTPS ingress's certificates: a directory of <host>.crt and <host>.key
    /// PEM files (read at start)
    #[arg(long, env = "BERTH_INGRESS_TLS_CERTS")]
    ingress_tls_certs: Option<std::path::PathBuf>,
    /// The HTTPS ingress's certificates from an ACME CA (HTTP-01 on the plain
    /// ingress), e.g. https://acme-v02.api.letsencrypt.org/directory
    #[arg(long, env = "BERTH_ACME_DIRECTORY")]
    acme_directory: Option<String>,
    /// The ACME account's contact e-mail
    #[arg(long, env = "BERTH_ACME_EMAIL")]
    acme_email: Option<String>,
    /// Extra PEM roots for the ACME CA's own HTTPS (a private or test CA)
    #[arg(long, env = "BERTH_ACME_CA_FILE")]
    acme_ca_file: Option<std::path::PathBuf>,
    /// Apps are served at <service>.<project>.<apps-domain> [default: localhost]
    #[arg(long, env = "BERTH_APPS_DOMAIN")]
    apps_domain: Option<String>,
    /// CIDRs containers may reach besides the public internet (comma-separated;
    /// a loopback range lets them reach the host's 127.0.0.1) [default: none]
    #[arg(long, env = "BERTH_CONTAINER_EGRESS_ALLOW")]
    container_egress_allow: Option<String>,
    /// Resolvers containers' DNS queries are relayed to (comma-separated
    /// IP[:port]) [default: the host's /etc/resolv.conf]
    #[arg(long, env = "BERTH_CONTAINER_DNS")]
    container_dns: Option<String>,
}

impl Args {
    pub fn config(self) -> Result<Config, CliError> {
        let file = match &self.config {
            Some(p) => FileConfig::read(p).map_err(|e| CliError::Usage(e.to_string()))?,
            None => FileConfig::default(),
        };
        // The master key is read from env only: a flag would show in `ps`.
        let master_key = std::env::var("BERTH_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        Config::resolve(
            berth_server::ConfigOverrides {
                data_dir: self.data_dir,
                listen: self.listen,
                database_url: self.database_url,
                master_key,
                allow_private: self.registry_allow_private,
                insecure: self.registry_insecure,
                ca_file: self.registry_ca_file,
                kms_key_id: self.kms_key_id,
                secret_store: self.secret_store,
                secrets_manager_prefix: self.secrets_manager_prefix,
                secrets_manager_kms_key_id: self.secrets_manager_kms_key_id,
                advertise_url: self.advertise_url,
                userns_base: self.userns_base,
                container_memory_mb: self.container_memory_mb,
                container_pids: self.container_pids,
                container_cpus: self.container_cpus,
                deploy_concurrency: self.deploy_concurrency,
                deploy_timeout_secs: self.deploy_timeout,
                blob_stall_secs: self.blob_stall_timeout,
                start_window_ms: self.start_window_ms,
                log_max_size_mb: self.log_max_size_mb,
                log_max_files: self.log_max_files,
                restart_backoff_ms: self.restart_backoff_ms,
                lazy_pull: self.lazy_pull.as_deref().map(|v| v == "on"),
                credential_check_interval_secs: self.credential_check_interval,
                runtime: self.runtime.clone(),
                kubeconfig: self.kubeconfig.clone(),
                kubernetes_namespace: self.kubernetes_namespace.clone(),
                kubernetes_user_namespaces: self.kubernetes_user_namespaces,
                kubernetes_egress_allow: self.kubernetes_egress_allow.clone(),
                kubernetes_ingress_class: self.kubernetes_ingress_class.clone(),
                kubernetes_ingress_namespace: self.kubernetes_ingress_namespace.clone(),
                kubernetes_storage_class: self.kubernetes_storage_class.clone(),
                region: self.region.clone(),
                ingress_listen: self.ingress_listen.clone(),
                ingress_tls_listen: self.ingress_tls_listen.clone(),
                ingress_tls_certs: self.ingress_tls_certs.clone(),
                acme_directory: self.acme_directory.clone(),
                acme_email: self.acme_email.clone(),
                acme_ca_file: self.acme_ca_file.clone(),
                apps_domain: self.apps_domain.clone(),
                container_egress_allow: self.container_egress_allow.clone(),
                container_dns: self.container_dns.clone(),
            },
            file,
        )
        .map_err(|e| CliError::Usage(e.to_string()))
    }
}

pub async fn run(args: Args) -> Result<Outcome, CliError> {
    let config = args.config()?;
    berth_server::serve(config)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    Ok(Outcome::Ok)
}

pub async fn rotate_master_key(args: Args) -> Result<Outcome, CliError> {
    let config = args.config()?;
    let (version, n) = berth_server::rotate_master_key(&config)
        .await
        .map_err(|e| CliError::Other(e.into()))?;
    println!(
        "master key version {version} is active; {n} secrets re-encrypted; older versions retired"
    );
    Ok(Outcome::Ok)
}
