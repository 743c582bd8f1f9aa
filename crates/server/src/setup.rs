//! Start-up: data dir, keyring, database, key check, first admin, listener.
//! **A wrong master key stops the server at start, with a clear error.**

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use berth_registry::Registry;
use berth_store::{Accounts, DeploymentQueue, NewAudit, SqlStore, UserRole, VaultMeta};
use berth_vault::{KeySource, Keyring, Sealed};
use secrecy::ExposeSecret;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::state::AppState;
use crate::tokens;
use crate::vault::SealedVault;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot create the data dir {0}: {1}")]
    DataDir(String, String),
    #[error(transparent)]
    Keyring(#[from] berth_vault::KeyringError),
    #[error(transparent)]
    Store(#[from] berth_store::StoreError),
    #[error("the master key does not match this database: it was created with another key (check BERTH_MASTER_KEY, or the data dir's master.key)")]
    WrongMasterKey,
    #[error("vault: {0}")]
    Vault(#[from] berth_vault::VaultError),
    #[error("registry client: {0}")]
    Registry(#[from] berth_registry::RegistryError),
    #[error("cannot write {0}: {1}")]
    AdminToken(String, String),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, String),
    #[error("the Kubernetes runtime: {0}")]
    Kubernetes(#[from] berth_kubernetes::KubeError),
}

/// The parts of a started server.
pub struct Parts {
    pub state: AppState,
    pub store: SqlStore,
}

/// The key file or `BERTH_MASTER_KEY` (KMS is opened by [`SealedVault::open`]).
fn keyring(config: &Config) -> Result<Keyring, berth_vault::KeyringError> {
    let source = match &config.master_key {
        Some(k) => KeySource::Env { current: k.clone() },
        None => KeySource::File(config.data_dir.join("master.key")),
    };
    Keyring::open(source)
}

/// Creates the data dir, or takes up an existing one, as Docker keeps its data root
/// under user namespaces: `0711`, so that a container's root (an unprivileged host
/// id) can pass through to its own bundle, while nobody but the server can list
/// it; what holds secrets inside is `0600`/`0700` (the key file, the admin token,
/// the database, the blob cache, the unpacked images). An existing dir of another
/// mode (`0700`, berth's own default before user namespaces) is made `0711`.
fn private_data_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o711 {
        tracing::info!(dir = %dir.display(), from = format!("{mode:o}"), "the data dir is made 0711: passable for containers in user namespaces, listable by nobody else");
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(())
}

/// Opens everything the server needs, creating what a first start must.
pub async fn open(config: &Config) -> Result<Parts, SetupError> {
    let dir_err = |e: std::io::Error| {
        SetupError::DataDir(config.data_dir.display().to_string(), e.to_string())
    };
    private_data_dir(&config.data_dir).map_err(dir_err)?;
    let store = SqlStore::connect(&config.database_url).await?;
    // The database (and so its WAL and shared-memory files, which SQLite creates
    // with the database's mode) is the server's alone.
    let db = config.data_dir.join("berth.db");
    if db.exists() {
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).map_err(dir_err)?;
    }
    let secrets =
        SealedVault::open(&config.vault, || keyring(config), Arc::new(store.clone())).await?;
    let keys = secrets.keys();
    match store.key_check().await? {
        Some(check) => keys
            .verify_check_value(&Sealed(check))
            .map_err(|_| SetupError::WrongMasterKey)?,
        None => store.set_key_check(&keys.check_value()?.0).await?,
    }
    if store.count_users().await? == 0 {
        create_admin(&store, &config.data_dir).await?;
    }
    let registry = Registry::new(config.registry.clone())?;
    let repaired = store
        .repair_deployments(&crate::deploy::stale_before())
        .await?;
    if repaired > 0 {
        tracing::warn!(
            repaired,
            "deployments interrupted by a stop were marked FAILED"
        );
    }
    let cluster = match &config.runtime {
        crate::config::RuntimeChoice::Runc => {
            config.sandbox.check_range_free().map_err(|e| {
                SetupError::DataDir(config.data_dir.display().to_string(), e.to_string())
            })?;
            None
        }
        crate::config::RuntimeChoice::Kubernetes(settings) => {
            let k = berth_kubernetes::Kubernetes::connect(settings.clone()).await?;
            tracing::info!(namespaces = ?settings.namespaces, "deployments run on the Kubernetes cluster");
            Some(k)
        }
    };
    let egress = match &cluster {
        Some(_) => None,
        None => Some(egress(&config.traffic).await.map_err(dir_err)?),
    };
    let deployer = crate::deploy::Deployer::new(
        &config.data_dir,
        config.sandbox,
        config.deploys,
        cluster,
        egress,
        &config.traffic.apps_domain,
    )
    .map_err(dir_err)?;
    let state = AppState {
        store: Arc::new(store.clone()),
        secrets: Arc::new(secrets),
        registry: Arc::new(registry),
        deployer: Arc::new(deployer),
        followers: Default::default(),
    };
    Ok(Parts { state, store })
}

/// What `public` containers reach out through: the egress policy, and the relay
/// of their DNS queries (started here, kept as long as the deployer).
async fn egress(
    traffic: &crate::config::TrafficConfig,
) -> std::io::Result<(
    berth_runtime::network::EgressPolicy,
    berth_runtime::network::DnsForwarder,
)> {
    let upstreams = match &traffic.container_dns[..] {
        [] => berth_runtime::network::system_resolvers(),
        given => given.to_vec(),
    };
    let dns = berth_runtime::network::DnsForwarder::start(upstreams).await?;
    let policy = berth_runtime::network::EgressPolicy {
        allow: traffic.egress_allow.clone(),
    };
    Ok((policy, dns))
}

/// The first admin; its token goes to `DATA_DIR/admin-token` (0600), nowhere else.
async fn create_admin(store: &SqlStore, data_dir: &Path) -> Result<(), SetupError> {
    let token = tokens::generate();
    let path = data_dir.join("admin-token");
    let err = |e: std::io::Error| SetupError::AdminToken(path.display().to_string(), e.to_string());
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    f.write_all(format!("{}\n", token.expose_secret()).as_bytes())
        .map_err(err)?;
    f.sync_all().map_err(err)?;
    store
        .create_user(
            "admin",
            &tokens::hash(&token),
            UserRole::Admin,
            NewAudit {
                actor: "berth".into(),
                action: "user.create",
                project: None,
                service: None,
                metadata: serde_json::json!({"user": "admin", "role": "admin"}),
            },
        )
        .await?;
    tracing::info!(path = %path.display(), "created the admin user; its token is in this file");
    Ok(())
}

/// How long a shutdown waits for requests in flight: within systemd's default
/// stop timeout and Kubernetes' default termination grace (30 s).
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(20);

/// A server listening in the background.
pub struct Running {
    pub addr: SocketAddr,
    /// Where the ingress serves apps over HTTP (`None`: switched off).
    pub ingress: Option<SocketAddr>,
    pub store: SqlStore,
    shutdown: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets requests in flight finish, closes the database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.handle).await;
        self.store.close().await;
    }
}

/// Opens everything and starts listening; returns once `/healthz` would answer.
pub async fn start(config: Config) -> Result<Running, SetupError> {
    let parts = open(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| SetupError::Listen(config.listen, e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| SetupError::Listen(config.listen, e.to_string()))?;
    let replica_url = replica_url(&config, addr);
    tracing::info!(%replica_url, "other replicas reach this one at");
    let _ = parts.state.deployer.replica_url.set(replica_url);
    let worker = crate::deploy::Worker {
        store: parts.state.store.clone(),
        vault: parts.state.secrets.clone(),
        registry: parts.state.registry.clone(),
        deployer: parts.state.deployer.clone(),
        limits: config.deploys,
        region: config.region.clone(),
    };
    let worker = tokio::spawn(worker.run());
    let checker = crate::checks::Checker {
        store: Arc::new(parts.store.clone()),
        vault: parts.state.secrets.clone(),
        registry: parts.state.registry.clone(),
        config: config.checks,
    };
    let checker = tokio::spawn(checker.run());
    let deployer = parts.state.deployer.clone();
    let (ingress, ingress_task, ingress_stop) = start_ingress(&config, &deployer).await?;
    let app = crate::routes::router(parts.state).layer(
        tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer::new([
            axum::http::header::AUTHORIZATION,
        ]),
    );
    let (tx, rx) = oneshot::channel::<()>();
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stop_told = stopping.clone();
    let handle = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = rx.await;
            stop_told.notify_one();
        });
        // Requests in flight finish; one that would not (a followed log) is cut
        // once the grace is over.
        let grace = async {
            stopping.notified().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        tokio::select! {
            r = std::future::IntoFuture::into_future(serve) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "server stopped");
                }
            }
            _ = grace => tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "requests still open when the shutdown grace ended (followed logs?): closed"
            ),
        }
        let _ = ingress_stop.send(());
        if let Some(t) = ingress_task {
            let _ = t.await;
        }
        worker.abort();
        checker.abort();
        // A clean stop leaves the cache synced: no verification at the next boot.
        let _ = worker.await;
        // Lazy mounts and their background pulls end with this process (their
        // containers are replaced at the next start).
        deployer.retire_all_lazy().await;
        let synced = tokio::task::spawn_blocking(move || deployer.settle_disk()).await;
        if let Ok(Err(e)) = synced {
            tracing::error!(error = %e, "syncing the blob cache");
        }
    });
    tracing::info!(%addr, "berth server listening");
    Ok(Running {
        addr,
        ingress,
        store: parts.store,
        shutdown: Some(tx),
        handle,
    })
}

/// How other replicas reach this one: `--advertise-url`, else the address it
/// listens on (the host's name for an unspecified address).
fn replica_url(config: &Config, addr: std::net::SocketAddr) -> String {
    config.advertise_url.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            let host = rustix::system::uname()
                .nodename()
                .to_string_lossy()
                .into_owned();
            format!("http://{host}:{}", addr.port())
        } else {
            format!("http://{addr}")
        }
    })
}

/// The ingress, bound (its address known before the server answers), serving in
/// the background until told to stop.
async fn start_ingress(
    config: &Config,
    deployer: &Arc<crate::deploy::Deployer>,
) -> Result<
    (
        Option<SocketAddr>,
        Option<tokio::task::JoinHandle<()>>,
        oneshot::Sender<()>,
    ),
    SetupError,
> {
    let (tx, rx) = oneshot::channel::<()>();
    let Some(listen) = config.traffic.ingress_listen else {
        return Ok((None, None, tx));
    };
    let tls = match (config.traffic.ingress_tls_listen, &config.traffic.tls) {
        (Some(listen), Some(source)) => Some(berth_ingress::TlsListen {
            listen,
            certificates: match source {
                crate::config::TlsSource::PemDir(dir) => {
                    berth_ingress::CertificateSource::PemDir(dir.clone())
                }
                crate::config::TlsSource::Acme {
                    directory_url,
                    contact,
                    ca_file,
                } => {
                    let mut acme = berth_ingress::AcmeConfig::new(
                        directory_url.clone(),
                        config.data_dir.join("acme"),
                    );
                    acme.contact = contact.clone();
                    acme.ca_roots = ca_file.clone();
                    berth_ingress::CertificateSource::Acme(acme)
                }
            },
        }),
        _ => None,
    };
    let ingress = berth_ingress::Ingress::bind(
        berth_ingress::IngressConfig {
            listen,
            tls,
            limits: Default::default(),
        },
        deployer.serving.table.clone(),
        Arc::new(crate::deploy::ingress::AccessLog::start(
            deployer.deployments_dir().to_owned(),
        )),
    )
    .await
    .map_err(|e| SetupError::Listen(listen, e.to_string()))?;
    let addr = ingress.local_addr();
    let _ = deployer.serving.port.set(addr.port());
    tracing::info!(%addr, apps_domain = %config.traffic.apps_domain, "ingress listening");
    if let Some(tls) = ingress.tls_local_addr() {
        tracing::info!(addr = %tls, "ingress listening for HTTPS");
    }
    let task = tokio::spawn(ingress.serve(async move {
        let _ = rx.await;
    }));
    Ok((Some(addr), Some(task), tx))
}

/// Runs until SIGINT or SIGTERM, then shuts down gracefully.
pub async fn serve(config: Config) -> Result<(), SetupError> {
    let running = start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| SetupError::Listen(running.addr, e.to_string()))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.stop().await;
    Ok(())
}

/// `berth admin rotate-master-key`: a new key version becomes active, every secret is
/// re-sealed under it (compare-and-swap, so a concurrent save wins), then the old
/// versions are retired. Running servers pick the new version up from the key file
/// (or, with KMS, from the database). Secrets in AWS Secrets Manager are encrypted
/// by AWS and are not part of this.
/// Returns (new version, secrets re-sealed).
pub async fn rotate_master_key(config: &Config) -> Result<(u32, usize), SetupError> {
    let store = SqlStore::connect(&config.database_url).await?;
    let secrets =
        SealedVault::open(&config.vault, || keyring(config), Arc::new(store.clone())).await?;
    let keys = secrets.keys();
    if let Some(check) = store.key_check().await? {
        keys.verify_check_value(&Sealed(check))
            .map_err(|_| SetupError::WrongMasterKey)?;
    }
    let version = secrets.rotate().await?;
    let mut resealed = 0;
    // Two passes: the second catches secrets a server sealed under an old version
    // while the first ran.
    for _ in 0..2 {
        for row in store.sealed_credentials().await? {
            let sealed = Sealed(row.sealed_password.clone());
            if sealed.key_version() == Some(version) {
                continue;
            }
            // A service secret is bound to its service and its name.
            let bound = match &row.secret_name {
                Some(name) => crate::vault::secret_binding(&row.service_id, name),
                None => row.service_id.clone(),
            };
            let plain = keys.unseal(row.project_id.as_str(), bound.as_str(), &sealed)?;
            let fresh = keys.seal(row.project_id.as_str(), bound.as_str(), &plain)?;
            let swapped = match &row.secret_name {
                Some(name) => {
                    store
                        .reseal_service_secret(
                            &row.service_id,
                            name,
                            &row.sealed_password,
                            &fresh.0,
                        )
                        .await?
                }
                None => {
                    store
                        .reseal_credential(&row.service_id, &row.sealed_password, &fresh.0)
                        .await?
                }
            };
            if swapped {
                resealed += 1;
            }
        }
    }
    store.set_key_check(&keys.check_value()?.0).await?;
    secrets.retire_old().await?;
    store.close().await;
    Ok((version, resealed))
}
