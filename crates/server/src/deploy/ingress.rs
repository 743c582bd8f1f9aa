//! What the ingress routes to: each service's host names point at its current
//! ready deployment, reached inside that container's network namespace. A new
//! deployment is published once it answers; the one it replaced is drained
//! (requests in flight finish, up to a grace) before its container stops. What
//! was published is kept beside the deployment's log, so that a restarted
//! server routes to the containers it adopts.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_ingress::{Backend, BoxFuture, Dialer, Host, Route, RouteTable};
use berth_runtime::network::Netns;
use berth_store::{DeploymentId, Service};
use serde::{Deserialize, Serialize};

use super::locked;

/// How long a replaced deployment may finish what it is answering.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);
/// The file beside a deployment's log saying what it was published as.
const PUBLISHED: &str = "published.json";

/// The route table and the backends being drained.
pub struct Serving {
    pub table: Arc<RouteTable>,
    /// `<service>.<project>.<apps_domain>`.
    pub apps_domain: String,
    /// The ingress's plain HTTP port, once it listens (for the services' URLs).
    pub port: std::sync::OnceLock<u16>,
    /// The deployment each service's names point at now.
    current: Mutex<HashMap<DeploymentId, String>>,
    /// Backends replaced in the table, until their container stops.
    retired: Mutex<HashMap<DeploymentId, Arc<Backend>>>,
}

/// What a deployment was published as.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    service_id: String,
    hosts: Vec<String>,
    port: u16,
}

/// Opens the app's port on the loopback of its container's namespace.
struct NetnsDialer {
    ns: Netns,
    port: u16,
}

impl Dialer for NetnsDialer {
    fn dial(&self) -> BoxFuture<'_, std::io::Result<tokio::net::TcpStream>> {
        Box::pin(self.ns.dial(self.port))
    }
}

impl Serving {
    pub fn new(apps_domain: &str) -> Self {
        Serving {
            table: Arc::new(RouteTable::new()),
            apps_domain: apps_domain.to_owned(),
            port: std::sync::OnceLock::new(),
            current: Mutex::default(),
            retired: Mutex::default(),
        }
    }

    /// Every name `service` of project `project` answers to.
    pub fn host_names(&self, service: &Service, project: &str) -> Vec<String> {
        let mut names = vec![format!("{}.{project}.{}", service.name, self.apps_domain)];
        names.extend(service.traffic.domains.iter().cloned());
        names
    }

    /// Where `service` answers (none while the ingress is off): each of its
    /// names as an `http://` URL.
    pub fn urls(&self, service: &Service, project: &str) -> Vec<String> {
        let Some(port) = self.port.get() else {
            return Vec::new();
        };
        let port = match port {
            80 => String::new(),
            p => format!(":{p}"),
        };
        self.host_names(service, project)
            .iter()
            .map(|h| format!("http://{h}{port}/"))
            .collect()
    }

    /// Routes `service`'s names to deployment `id`, whose app answers on `port`
    /// in `ns`; the deployment it replaces waits in `retired` for its stop.
    pub fn publish(
        &self,
        dir: &Path,
        service_id: &str,
        hosts: Vec<String>,
        id: &DeploymentId,
        ns: Netns,
        port: u16,
    ) -> Result<(), String> {
        let record = Published {
            service_id: service_id.to_owned(),
            hosts: hosts.clone(),
            port,
        };
        let hosts = hosts
            .iter()
            .map(|h| Host::parse(h).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let backend = Backend::new(service_id, id.as_str(), Arc::new(NetnsDialer { ns, port }));
        let old = self
            .table
            .set(Route {
                service_id: service_id.into(),
                hosts,
                backend,
            })
            .map_err(|e| e.to_string())?;
        {
            let mut current = locked(&self.current);
            current.retain(|_, s| s != service_id);
            current.insert(id.clone(), service_id.to_owned());
        }
        if let Some(old) = old {
            locked(&self.retired).insert(DeploymentId::from(old.deployment_id().to_string()), old);
        }
        let _ = std::fs::write(
            dir.join(PUBLISHED),
            serde_json::to_vec(&record).unwrap_or_default(),
        );
        Ok(())
    }

    /// Routes again to a deployment adopted from an earlier server process.
    pub fn republish(&self, dir: &Path, id: &DeploymentId, ns: Netns) {
        let Some(p) = std::fs::read(dir.join(PUBLISHED))
            .ok()
            .and_then(|b| serde_json::from_slice::<Published>(&b).ok())
        else {
            return;
        };
        if let Err(e) = self.publish(dir, &p.service_id, p.hosts, id, ns, p.port) {
            tracing::warn!(deployment = %id, error = %e, "routing to an adopted deployment");
        }
    }

    /// Before deployment `id`'s container stops: out of the table if it still
    /// answers there (its service terminated, or nothing replaced it), then the
    /// requests in flight finish, up to `grace`.
    pub async fn retire(&self, id: &DeploymentId, grace: Duration) {
        let service = locked(&self.current).remove(id);
        let current = service.and_then(|s| self.table.remove(&s));
        let backend = current.or_else(|| locked(&self.retired).remove(id));
        if let Some(b) = backend {
            b.drain(grace).await;
        }
    }
}

/// Each routed request as a line of its deployment's log (method, path without
/// its query, status, bytes, time) and in the metrics. Lines go through a bounded
/// queue to one writer, so that a flood of requests never waits on the disk; a
/// deployment's access lines stop at [`ACCESS_LOG_CAP`] (said once).
pub struct AccessLog {
    tx: tokio::sync::mpsc::Sender<(String, String)>,
}

/// Access lines kept per deployment.
pub const ACCESS_LOG_CAP: u64 = 8 << 20;

impl AccessLog {
    /// Writes into the logs of the deployments under `root`.
    pub fn start(root: std::path::PathBuf) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, String)>(4096);
        tokio::spawn(async move {
            let mut written: HashMap<String, u64> = HashMap::new();
            while let Some((deployment, line)) = rx.recv().await {
                let n = written.entry(deployment.clone()).or_default();
                if *n > ACCESS_LOG_CAP {
                    continue;
                }
                *n += line.len() as u64 + 40;
                let path =
                    berth_runtime::log::Logs::in_dir(&root.join(&deployment), Default::default())
                        .infra;
                let line = if *n > ACCESS_LOG_CAP {
                    format!(
                        "access log: {} MiB written, further requests are not logged",
                        ACCESS_LOG_CAP >> 20
                    )
                } else {
                    line
                };
                let _ = tokio::task::spawn_blocking(move || super::log::append(&path, &line)).await;
            }
        });
        AccessLog { tx }
    }
}

impl berth_ingress::Observer for AccessLog {
    fn observe(&self, a: &berth_ingress::Access<'_>) {
        crate::metrics::metrics().app_request(a.service_id, a.status.as_u16(), a.duration);
        let line = format!(
            "access: {} {} {} {} bytes {} ms",
            a.method,
            a.path,
            a.status.as_u16(),
            a.bytes_sent,
            a.duration.as_millis()
        );
        // Full: the line is dropped, never the request slowed.
        let _ = self.tx.try_send((a.deployment_id.to_owned(), line));
    }
}
