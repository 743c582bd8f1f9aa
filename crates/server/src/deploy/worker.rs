//! The worker: claims deployments from the durable queue, several at once (fairly
//! across projects, never two of one service), heartbeats them while they run,
//! gives each a deadline, records how they ended, and meanwhile reconciles,
//! collects garbage and repairs the deploys of replicas that died.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_registry::Code;
use berth_store::{Busy, Deployment, Outcome};

use super::failure::Failure;
use super::{locked, log, run, Worker};

/// A worker proves it still runs its `DEPLOYING` deployment this often...
const HEARTBEAT: Duration = Duration::from_secs(5);
/// ...and a deployment whose worker has been silent this long is repaired (marked
/// `FAILED`) by whichever replica looks next: at its start, and every `STALE`.
const STALE: Duration = Duration::from_secs(30);
/// An idle worker reconciles this replica's containers with the database this often.
const RECONCILE: Duration = Duration::from_secs(2);
/// A deploy looks this often whether its service was terminated (on any replica):
/// then its pull stops, well within the 2 s a terminate promises.
const TERMINATED_POLL: Duration = Duration::from_millis(500);
/// A replica says it is alive (and which region it serves) this often...
const ANNOUNCE: Duration = Duration::from_secs(10);
/// ...and a region counts as served while a replica of it said so this recently.
pub const REGION_SEEN: Duration = Duration::from_secs(30);

/// The cutoff for `DeploymentQueue::repair_deployments`: now minus [`STALE`].
pub fn stale_before() -> berth_store::Time {
    berth_store::now() - STALE
}

impl Worker {
    /// Runs forever: claims deployments while a slot is free and runs each in a
    /// task of its own, so that a slow registry holds one slot, never the queue.
    pub async fn run(self) {
        let slots = Arc::new(tokio::sync::Semaphore::new(self.limits.concurrency));
        let mut last_repair = Instant::now();
        let mut last_reconcile = Instant::now();
        let mut last_announce: Option<Instant> = None;
        self.deployer.reconcile(&self.store).await;
        loop {
            if last_announce.is_none_or(|t| t.elapsed() >= ANNOUNCE) {
                last_announce = Some(Instant::now());
                self.announce().await;
            }
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let replica_url = self.deployer.replica_url.get().map_or("", String::as_str);
            match self.store.claim_deployment(replica_url, &self.busy()).await {
                Ok(Some(d)) => {
                    locked(&self.deployer.in_flight).insert(d.id.clone(), d.clone());
                    let w = self.clone();
                    tokio::spawn(async move {
                        w.deploy(&d).await;
                        drop(slot);
                        // The deployment it replaced stops now, before its image may go.
                        w.deployer.reconcile(&w.store).await;
                        w.collect_garbage_if_idle().await;
                        // What the deploy wrote reaches the disk in the background.
                        let deployer = w.deployer.clone();
                        tokio::task::spawn_blocking(move || {
                            if let Err(e) = deployer.settle_disk() {
                                tracing::error!(error = %e, "syncing the blob cache");
                            }
                        });
                    });
                }
                Ok(None) => {
                    drop(slot);
                    let gc = self.deployer.gc_wanted.load(Ordering::SeqCst);
                    if gc || last_reconcile.elapsed() >= RECONCILE {
                        last_reconcile = Instant::now();
                        self.deployer.reconcile(&self.store).await;
                    }
                    if gc {
                        self.collect_garbage_if_idle().await;
                    }
                    // Deploys of a replica that died are repaired by the ones alive.
                    if last_repair.elapsed() >= STALE {
                        last_repair = Instant::now();
                        self.repair().await;
                    }
                    // Until the next poll, or a deployment queued here (a permit
                    // kept by `Notify` if it came while this was claiming).
                    let _ = tokio::time::timeout(
                        Duration::from_millis(250),
                        self.deployer.queued.notified(),
                    )
                    .await;
                }
                Err(e) => {
                    drop(slot);
                    tracing::error!(error = %e, "claiming a deployment");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    }

    /// The services and projects this replica is deploying now.
    fn busy(&self) -> Busy {
        let in_flight = locked(&self.deployer.in_flight);
        let mut projects: Vec<_> = in_flight.values().map(|d| d.project_id.clone()).collect();
        projects.sort();
        projects.dedup();
        Busy {
            services: in_flight.values().map(|d| d.service_id.clone()).collect(),
            projects,
            region: self.region.clone(),
        }
    }

    /// Records that this replica is alive and the region it serves, so that a
    /// deployment waiting for a region no replica serves can say so.
    async fn announce(&self) {
        let url = self.deployer.replica_url.get().map_or("", String::as_str);
        if let Err(e) = self
            .store
            .announce_replica(url, self.region.as_deref())
            .await
        {
            tracing::warn!(error = %e, "announcing this replica");
        }
    }

    /// Garbage is collected only while no pull runs here (a pull may be about to
    /// use what looks unused), a lazy image's background pull among them.
    async fn collect_garbage_if_idle(&self) {
        if locked(&self.deployer.in_flight).is_empty() && !self.deployer.lazies.pulling() {
            self.deployer.collect_garbage(self.store.as_ref()).await;
        } else {
            self.deployer.want_gc();
        }
    }

    /// Runs one claimed deployment to its end (or its deadline), heartbeating
    /// meanwhile.
    async fn deploy(&self, d: &Deployment) {
        let started = Instant::now();
        let log = self.deployer.log_path(&d.id);
        let heartbeat = async {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = self.store.heartbeat(d).await {
                    tracing::warn!(deployment = %d.id, error = %e, "heartbeat");
                }
            }
        };
        let deadline = self.limits.deadline;
        let result = match self.deployer.durability.begin() {
            Ok(_writing) => tokio::select! {
                r = tokio::time::timeout(deadline, run::run(self, d, &log)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(self.past_deadline(d)),
                },
                _ = heartbeat => unreachable!("the heartbeat loop does not end"),
                // Dropping the deploy's future stops its downloads at once; what they
                // wrote goes with them (a blob's temporary file, a staged layer).
                () = self.terminated(d) => {
                    self.cancelled(d, started).await;
                    return;
                }
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
                // Mounts of a lazy start go with it (its container, if it runs,
                // is stopped by the reconcile).
                self.deployer.retire_lazy(&d.id).await;
                Outcome::Failed {
                    digest: f.digest,
                    code: f.code.as_str(),
                    message: f.message,
                }
            }
        };
        match &outcome {
            Outcome::Deployed { .. } => {
                crate::metrics::metrics().deployment_ended("DEPLOYED", None, started.elapsed())
            }
            Outcome::Failed { code, .. } => {
                crate::metrics::metrics().deployment_ended("FAILED", Some(code), started.elapsed())
            }
        }
        // The pull's final state is kept before the end is recorded: a watcher that
        // sees the deployment ended finds how its pull went.
        self.deployer.end_pull(&d.id);
        self.record_end(d, outcome).await;
        self.deployer.forget_cancel(&d.id);
        locked(&self.deployer.in_flight).remove(&d.id);
    }

    /// Resolves once `d`'s service is terminated: at once when it was terminated
    /// here, else seen in the database (another replica's terminate).
    async fn terminated(&self, d: &Deployment) {
        let here = self.deployer.cancel_signal(&d.id);
        let polled = async {
            loop {
                tokio::time::sleep(TERMINATED_POLL).await;
                match self.store.service_by_id(&d.service_id).await {
                    Ok(Some(s)) if s.status != berth_store::ServiceStatus::Terminated => {}
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(deployment = %d.id, error = %e, "reading the service");
                    }
                }
            }
        };
        tokio::select! {
            () = here.notified() => {}
            () = polled => {}
        }
    }

    /// A deploy stopped because its service was terminated: the terminate already
    /// recorded it `REMOVED`; what it placed goes, and its slot is free.
    async fn cancelled(&self, d: &Deployment, started: Instant) {
        log::append(
            &self.deployer.log_path(&d.id),
            &format!("REMOVED: {}", berth_store::TERMINATED_IN_FLIGHT),
        );
        self.deployer.stop(&d.id).await;
        crate::metrics::metrics().deployment_ended("REMOVED", None, started.elapsed());
        self.deployer.end_pull(&d.id);
        self.deployer.forget_cancel(&d.id);
        locked(&self.deployer.in_flight).remove(&d.id);
    }

    /// Records how a deployment ended, through a database that may be restarting:
    /// tried again (0.25 s, doubling to 4 s) for as long as another replica would
    /// wait before it repairs the deployment; after that the repair marks it
    /// `FAILED` (and the reconcile stops a container it started). Nothing stays
    /// `DEPLOYING`.
    async fn record_end(&self, d: &Deployment, outcome: Outcome) {
        let give_up = Instant::now() + STALE;
        let mut delay = Duration::from_millis(250);
        loop {
            match self.store.finish_deployment(d, outcome.clone()).await {
                Ok(()) => return,
                Err(e) if Instant::now() < give_up => {
                    tracing::warn!(deployment = %d.id, error = %e, "recording the deployment's end; trying again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(4));
                }
                Err(e) => {
                    tracing::error!(deployment = %d.id, error = %e, "recording the deployment's end");
                    return;
                }
            }
        }
    }

    /// The deadline passed: say where the pull was (which blobs, how far).
    fn past_deadline(&self, d: &Deployment) -> Failure {
        let unfinished: Vec<String> = self
            .deployer
            .progress(&d.id)
            .unwrap_or_default()
            .into_iter()
            .filter(|b| b.received < b.size)
            .map(|b| format!("blob {}: {} of {} bytes", b.digest, b.received, b.size))
            .collect();
        let mut message = format!(
            "the deployment did not start within its {} s deadline",
            self.limits.deadline.as_secs()
        );
        if !unfinished.is_empty() {
            message.push_str(&format!(
                " pulling {} from {}: {}",
                d.image,
                d.image.registry(),
                unfinished.join("; ")
            ));
        }
        Failure::registry(Code::Timeout, message)
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
        self.deployer.sweep_volumes(self.store.as_ref()).await;
    }
}
