//! The worker: claims deployments from the durable queue, heartbeats them while
//! they run, records how they ended, and between deploys reconciles, collects
//! garbage and repairs the deploys of replicas that died.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry::Registry;
use berth_store::{Deployment, Outcome, Store};

use super::failure::Failure;
use super::{locked, log, run, Deployer};
use crate::secrets::Vault;

/// A worker proves it still runs its `DEPLOYING` deployment this often...
const HEARTBEAT: Duration = Duration::from_secs(5);
/// ...and a deployment whose worker has been silent this long is repaired (marked
/// `FAILED`) by whichever replica looks next: at its start, and every `STALE`.
const STALE: Duration = Duration::from_secs(30);
/// An idle worker reconciles this replica's containers with the database this often.
const RECONCILE: Duration = Duration::from_secs(2);

/// The cutoff for `DeploymentQueue::repair_deployments`: now minus [`STALE`].
pub fn stale_before() -> String {
    (chrono::Utc::now() - STALE).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What a worker needs, and nothing of the HTTP edge.
#[derive(Clone)]
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub vault: Arc<dyn Vault>,
    pub registry: Arc<Registry>,
    pub deployer: Arc<Deployer>,
}

impl Worker {
    /// Runs forever: claims deployments and runs them one at a time.
    pub async fn run(self) {
        let mut last_repair = Instant::now();
        let mut last_reconcile = Instant::now();
        self.deployer.reconcile(self.store.as_ref()).await;
        loop {
            let replica_url = self.deployer.replica_url.get().map_or("", String::as_str);
            match self.store.claim_deployment(replica_url).await {
                Ok(Some(d)) => {
                    self.deploy(&d).await;
                    // The deployment it replaced stops now, before its image may go.
                    self.deployer.reconcile(self.store.as_ref()).await;
                    last_reconcile = Instant::now();
                    self.deployer.collect_garbage(self.store.as_ref()).await;
                    // What the deploy wrote reaches the disk in the background.
                    let deployer = self.deployer.clone();
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = deployer.settle_disk() {
                            tracing::error!(error = %e, "syncing the blob cache");
                        }
                    });
                }
                Ok(None) => {
                    let gc = self.deployer.gc_wanted.load(Ordering::SeqCst);
                    if gc || last_reconcile.elapsed() >= RECONCILE {
                        last_reconcile = Instant::now();
                        self.deployer.reconcile(self.store.as_ref()).await;
                    }
                    if gc {
                        self.deployer.collect_garbage(self.store.as_ref()).await;
                    }
                    // Deploys of a replica that died are repaired by the ones alive.
                    if last_repair.elapsed() >= STALE {
                        last_repair = Instant::now();
                        self.repair().await;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => {
                    tracing::error!(error = %e, "claiming a deployment");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// Runs one claimed deployment to its end, heartbeating meanwhile.
    async fn deploy(&self, d: &Deployment) {
        let log = self.deployer.log_path(&d.id);
        let heartbeat = async {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = self.store.heartbeat(d).await {
                    tracing::warn!(deployment = %d.id, error = %e, "heartbeat");
                }
            }
        };
        let result = match self.deployer.durability.begin() {
            Ok(_writing) => tokio::select! {
                r = run::run(self, d, &log) => r,
                _ = heartbeat => unreachable!("the heartbeat loop does not end"),
            },
            Err(e) => Err(Failure::runtime(format!("the data dir: {e}"))),
        };
        let outcome = match result {
            Ok(digest) => {
                log::append(&log, "DEPLOYED");
                Outcome::Deployed { digest }
            }
            Err(f) => {
                log::append(
                    &log,
                    &format!("FAILED ({}): {}", f.code.as_str(), f.message),
                );
                Outcome::Failed {
                    digest: f.digest,
                    code: f.code.as_str(),
                    message: f.message,
                }
            }
        };
        let finished = self.store.finish_deployment(d, outcome).await;
        // Kept until here so that a watcher polling the deployment sees the blobs'
        // final state even when the pull took less than a poll.
        locked(&self.deployer.pulls).remove(&d.id);
        if let Err(e) = finished {
            tracing::error!(deployment = %d.id, error = %e, "recording the deployment's end");
        }
    }

    async fn repair(&self) {
        match self.store.repair_deployments(&stale_before()).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(
                repaired = n,
                "deployments whose server stopped were marked FAILED"
            ),
            Err(e) => tracing::error!(error = %e, "repairing deployments"),
        }
    }
}
