//! Making this replica's containers match the database. [`decide`] is a pure
//! function of what was observed (table-tested below); [`Deployer::reconcile`]
//! observes and carries its decisions out.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_store::{DeploymentId, Exit, LiveDeployment, RestartPolicy, Service, Store};

use crate::config::Backoff;

use super::{container_id, locked, log, restart, Deployer, CONTAINER_PREFIX};

/// What reconcile sees of one live deployment (`DEPLOYED`, service not terminated).
#[derive(Clone, Debug)]
pub struct LiveFacts {
    pub id: DeploymentId,
    /// Its container runs (and this process watches it).
    pub running: bool,
    /// This replica ran it: its log is in this data dir.
    pub ran_here: bool,
    /// Already said in its log that it does not run.
    pub reported: bool,
    /// How it exited, when this process watched it exit.
    pub exited: Option<ExitStatus>,
    /// This process adopted it from an earlier one.
    pub adopted: bool,
}

/// Everything [`decide`] needs.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The deployments whose containers the runtime lists on this replica.
    pub containers: HashSet<DeploymentId>,
    /// Deploys in progress here (their containers may exist before they are live).
    pub in_flight: HashSet<DeploymentId>,
    pub live: Vec<LiveFacts>,
}

/// How a live deployment's container came to not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gone {
    /// This process watched it exit with this status.
    Exited(ExitStatus),
    /// It exited while watched (adopted: no status to tell).
    Stopped,
    /// It ran under an earlier server process and stopped while none watched (a
    /// machine restart, most often): the service comes back with a new deployment.
    StoppedWhileDown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Its deployment should not run any more: stop it, remove its bundle.
    Stop(DeploymentId),
    /// A container an earlier server process started: take it up again; if it
    /// cannot be (it is not running after all), then it is `otherwise`.
    Adopt { id: DeploymentId, otherwise: Gone },
    /// Say once in its log that it no longer runs (and restart it if it stopped
    /// while the server was down).
    Report { id: DeploymentId, gone: Gone },
}

/// The decisions, from what was observed.
pub fn decide(f: &Facts) -> Vec<Action> {
    let live: HashSet<&DeploymentId> = f.live.iter().map(|l| &l.id).collect();
    let mut stops: Vec<&DeploymentId> = f
        .containers
        .iter()
        .filter(|id| !f.in_flight.contains(*id) && !live.contains(id))
        .collect();
    stops.sort();
    let mut actions: Vec<Action> = stops.into_iter().cloned().map(Action::Stop).collect();
    for l in &f.live {
        if f.in_flight.contains(&l.id) || l.running || !l.ran_here || l.reported {
            continue;
        }
        let gone = match l.exited {
            Some(status) => Gone::Exited(status),
            None if l.adopted => Gone::Stopped,
            None => Gone::StoppedWhileDown,
        };
        // Only a container nobody watched can be adopted.
        if f.containers.contains(&l.id) && l.exited.is_none() {
            actions.push(Action::Adopt {
                id: l.id.clone(),
                otherwise: gone,
            });
        } else {
            actions.push(Action::Report {
                id: l.id.clone(),
                gone,
            });
        }
    }
    actions
}

impl Gone {
    /// The exit to record: a code or a signal when this process saw it.
    fn exit(&self) -> Exit {
        let at = berth_store::now();
        match self {
            Gone::Exited(status) => Exit {
                code: status.code(),
                signal: status.signal(),
                at,
            },
            Gone::Stopped | Gone::StoppedWhileDown => Exit {
                code: None,
                signal: None,
                at,
            },
        }
    }
}

/// Whether `policy` starts a container again after `exit`.
pub fn wants_restart(policy: RestartPolicy, exit: &Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit.failed(),
        RestartPolicy::Never => false,
    }
}

/// A container's crash loop: restarts in a row, and when it last started.
#[derive(Clone, Copy, Debug)]
pub struct Crashes {
    streak: u32,
    started: Instant,
}

impl Crashes {
    /// The delay before the next restart; the loop starts over once the container
    /// ran for [`Backoff::RESET_AFTER`].
    fn next(&mut self, backoff: &Backoff, now: Instant) -> Duration {
        if now.duration_since(self.started) >= Backoff::RESET_AFTER {
            self.streak = 0;
        }
        let delay = backoff.delay(self.streak);
        self.streak += 1;
        delay
    }
}

/// How an exit reads in the log: `exit code 3`, `signal 9`, or nothing known.
fn describe(exit: &Exit) -> String {
    match (exit.code, exit.signal) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("signal {s}"),
        (None, None) => "no exit status seen".into(),
    }
}

impl Deployer {
    /// Makes this replica's containers match the database. A container whose
    /// deployment should not run any more (replaced by a newer deploy, its service
    /// terminated, perhaps through another replica, or left by a crash before its
    /// deploy was recorded) is stopped and its bundle removed; a live one that an
    /// earlier server process started is adopted; one that stopped by itself is
    /// said in its log, once. Only the worker calls it, between deploys.
    pub(super) async fn reconcile(self: &Arc<Self>, store: &Arc<dyn Store>) {
        if self.cluster.is_some() {
            return self.reconcile_cluster(store.as_ref()).await;
        }
        let Some(runtime) = &self.runtime else {
            return;
        };
        // In this order: a container listed here existed before the in-flight
        // snapshot, so a deploy not in flight then had recorded its end (the worker
        // drops its `in_flight` entry only after that) before `live` is read.
        let containers = match runtime.list().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "listing containers");
                return;
            }
        };
        let in_flight: HashSet<DeploymentId> = locked(&self.in_flight).keys().cloned().collect();
        let live: HashMap<DeploymentId, LiveDeployment> = match store.live_deployments().await {
            Ok(l) => l.into_iter().map(|d| (d.id.clone(), d)).collect(),
            Err(e) => {
                tracing::error!(error = %e, "reading live deployments");
                return;
            }
        };
        let facts = Facts {
            containers: containers
                .iter()
                .filter_map(|c| c.strip_prefix(CONTAINER_PREFIX))
                .map(|id| DeploymentId::from(id.to_owned()))
                .collect(),
            in_flight,
            live: live
                .keys()
                .map(|id| {
                    let cid = container_id(id);
                    LiveFacts {
                        id: id.clone(),
                        running: runtime.is_running(&cid),
                        ran_here: self.log_path(id).exists(),
                        reported: locked(&self.not_running).contains(id),
                        exited: runtime.exited(&cid),
                        adopted: locked(&self.adopted).contains(id),
                    }
                })
                .collect(),
        };
        let mut stops = Vec::new();
        for action in decide(&facts) {
            match action {
                Action::Stop(id) => stops.push(id),
                // Being stopped here: its child is already let go, not to be
                // taken up again (nor routed to).
                Action::Adopt { id, .. } if locked(&self.stopping).contains(&id) => {}
                // Its layers were FUSE mounts of the server process before this
                // one: its reads fail now. It is replaced, as if it had stopped.
                Action::Adopt { id, .. } if self.was_lazy(&id) => {
                    log::append(
                        &self.log_path(&id),
                        "the server restarted; the container's lazily mounted layers went with the server before it, so it is stopped",
                    );
                    self.stop(&id).await;
                    self.replace_lazy(store, &live[&id]).await;
                }
                Action::Adopt { id, otherwise } => {
                    let cid = container_id(&id);
                    match runtime.adopt(&cid, &self.logs(&id)).await {
                        Ok(true) => {
                            log::append(
                                &self.log_path(&id),
                                "the server restarted; the container still runs and was taken up again",
                            );
                            if let Some(ns) = runtime.netns(&cid) {
                                self.serving
                                    .republish(&self.root.join(id.as_str()), &id, ns);
                            }
                            locked(&self.adopted).insert(id);
                        }
                        Ok(false) => self.report(store, &live[&id], otherwise).await,
                        Err(e) => {
                            tracing::warn!(container = %cid, error = %e, "adopting a container")
                        }
                    }
                }
                Action::Report { id, gone } => self.report(store, &live[&id], gone).await,
            }
        }
        let stopped = stops.len();
        futures_util::future::join_all(stops.iter().map(|id| self.stop(id))).await;
        if stopped > 0 {
            tracing::info!(
                stopped,
                "containers of deployments that no longer run were stopped"
            );
        }
    }

    /// Says in its log that a live deployment's container no longer runs, records
    /// the exit, and lets the service's restart policy decide: a container that
    /// exited under this process is started again in place after its backoff; one
    /// that stopped while no server watched comes back as a new deployment.
    async fn report(self: &Arc<Self>, store: &Arc<dyn Store>, live: &LiveDeployment, gone: Gone) {
        let log = self.log_path(&live.id);
        let Some(service) = self.said_not_running(store, live).await else {
            return;
        };
        let exit = gone.exit();
        let policy = service.restart_policy;
        let again = wants_restart(policy, &exit);
        let how = match gone {
            Gone::StoppedWhileDown => "the container stopped while the server was down".to_owned(),
            _ => format!("the container exited ({})", describe(&exit)),
        };
        if let Err(e) = store.record_exit(&service.id, &exit, again).await {
            tracing::error!(deployment = %live.id, error = %e, "recording an exit");
        }
        let n = service.restarts + 1;
        match (again, gone) {
            (false, _) => log::append(
                &log,
                &format!("{how}; restart policy {policy}: left stopped"),
            ),
            (true, Gone::StoppedWhileDown) => match restart(
                store.as_ref(),
                &service,
                live,
                "restart: the container stopped while the server was down",
            )
            .await
            {
                Ok(new) => log::append(
                    &log,
                    &format!("{how}; restart {n} (restart policy {policy}): deployment {new} restarts the service"),
                ),
                Err(e) => {
                    log::append(&log, &how);
                    tracing::error!(deployment = %live.id, error = %e, "restarting a service");
                }
            },
            (true, _) => {
                let delay = locked(&self.crashes)
                    .entry(live.id.clone())
                    .or_insert(Crashes {
                        streak: 0,
                        started: Instant::now(),
                    })
                    .next(&self.limits.restart_backoff, Instant::now());
                log::append(
                    &log,
                    &format!(
                        "{how}; restart {n} in {} ms (restart policy {policy})",
                        delay.as_millis()
                    ),
                );
                locked(&self.restarting).insert(live.id.clone());
                let (me, store, id) = (self.clone(), store.clone(), live.id.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    me.restart_in_place(store.as_ref(), &service, &id, n).await;
                    locked(&me.restarting).remove(&id);
                });
            }
        }
    }

    /// Marks `live` as said not to run (not reported again), and reads its
    /// service; `None` when it is gone, or unread (then said again at the next
    /// reconcile).
    async fn said_not_running(
        &self,
        store: &Arc<dyn Store>,
        live: &LiveDeployment,
    ) -> Option<Service> {
        locked(&self.not_running).insert(live.id.clone());
        match store.service_by_id(&live.service_id).await {
            Ok(service) => service,
            Err(e) => {
                locked(&self.not_running).remove(&live.id);
                tracing::error!(deployment = %live.id, error = %e, "reading a service");
                None
            }
        }
    }

    /// Queues the deployment that replaces a lazily started one whose mounts
    /// died with the server before this one, whatever the restart policy: its
    /// container did not exit, berth stopped it. No exit is recorded.
    async fn replace_lazy(&self, store: &Arc<dyn Store>, live: &LiveDeployment) {
        let log = self.log_path(&live.id);
        let Some(service) = self.said_not_running(store, live).await else {
            return;
        };
        let reason = "replace: the server restarted under a lazily started container";
        match restart(store.as_ref(), &service, live, reason).await {
            Ok(new) => log::append(&log, &format!("deployment {new} replaces it")),
            Err(e) => {
                log::append(&log, "replacing it failed; deploy the service again");
                tracing::error!(deployment = %live.id, error = %e, "replacing a lazy deployment");
            }
        }
    }

    /// Starts the container of `id` again, unless its deployment stopped being live
    /// while the backoff ran (a newer deploy, a terminate).
    async fn restart_in_place(
        &self,
        store: &dyn berth_store::DeploymentQueue,
        service: &Service,
        id: &DeploymentId,
        n: u32,
    ) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        let live = store
            .live_deployments()
            .await
            .is_ok_and(|l| l.iter().any(|d| &d.id == id));
        if !live || locked(&self.stopping).contains(id) {
            return;
        }
        let logs = self.logs(id);
        match runtime
            .restart(&container_id(id), &self.bundle(id), &logs)
            .await
        {
            Ok(()) => {
                if let Some(c) = locked(&self.crashes).get_mut(id) {
                    c.started = Instant::now();
                }
                locked(&self.not_running).remove(id);
                log::append(&logs.infra, &format!("restarted (restart {n})"));
                tracing::info!(deployment = %id, service = %service.name, restarts = n, "container restarted");
            }
            Err(e) => log::append(&logs.infra, &format!("restart {n} failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> DeploymentId {
        DeploymentId::from(s.to_owned())
    }

    fn live(name: &str) -> LiveFacts {
        LiveFacts {
            id: id(name),
            running: false,
            ran_here: true,
            reported: false,
            exited: None,
            adopted: false,
        }
    }

    /// `check(facts, expected)`: one case per row.
    fn check(f: Facts, expected: Vec<Action>) {
        assert_eq!(decide(&f), expected, "{f:?}");
    }

    #[test]
    fn restart_policies_and_backoff() {
        let exit = |code: Option<i32>, signal: Option<i32>| Exit {
            code,
            signal,
            at: berth_store::now(),
        };
        use RestartPolicy::*;
        for (policy, e, want) in [
            (OnFailure, exit(Some(3), None), true),
            (OnFailure, exit(None, Some(9)), true),
            (OnFailure, exit(None, None), true), // nobody saw it end well
            (OnFailure, exit(Some(0), None), false),
            (Always, exit(Some(0), None), true),
            (Always, exit(Some(1), None), true),
            (Never, exit(Some(1), None), false),
            (Never, exit(None, None), false),
        ] {
            assert_eq!(wants_restart(policy, &e), want, "{policy} {e:?}");
        }
        let b = Backoff {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        };
        let t0 = Instant::now();
        let mut c = Crashes {
            streak: 0,
            started: t0,
        };
        let delays: Vec<u64> = (0..7).map(|_| c.next(&b, t0).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
        // Ten minutes of running: the loop starts over.
        let t1 = t0 + Backoff::RESET_AFTER;
        assert_eq!(c.next(&b, t1).as_secs(), 10);
        c.started = t1; // restarted, and exited again a second later
        assert_eq!(c.next(&b, t1 + Duration::from_secs(1)).as_secs(), 20);
        assert_eq!(b.delay(10_000), Duration::from_secs(300));
    }

    #[test]
    fn decisions() {
        let exit3 = ExitStatus::from_raw(3 << 8);
        let set = |ids: &[&str]| ids.iter().map(|s| id(s)).collect::<HashSet<_>>();
        // A container whose deployment is not live is stopped...
        check(
            Facts {
                containers: set(&["old"]),
                ..Default::default()
            },
            vec![Action::Stop(id("old"))],
        );
        // ...unless its deploy is in flight here.
        check(
            Facts {
                containers: set(&["new"]),
                in_flight: set(&["new"]),
                ..Default::default()
            },
            vec![],
        );
        // A live one that runs: nothing to do.
        check(
            Facts {
                containers: set(&["a"]),
                live: vec![LiveFacts {
                    running: true,
                    ..live("a")
                }],
                ..Default::default()
            },
            vec![],
        );
        // Listed but not watched by this process: adopt it.
        check(
            Facts {
                containers: set(&["a"]),
                live: vec![live("a")],
                ..Default::default()
            },
            vec![Action::Adopt {
                id: id("a"),
                otherwise: Gone::StoppedWhileDown,
            }],
        );
        // Watched and exited: said with its status, once.
        check(
            Facts {
                containers: set(&["a"]),
                live: vec![LiveFacts {
                    exited: Some(exit3),
                    ..live("a")
                }],
                ..Default::default()
            },
            vec![Action::Report {
                id: id("a"),
                gone: Gone::Exited(exit3),
            }],
        );
        check(
            Facts {
                live: vec![LiveFacts {
                    exited: Some(exit3),
                    reported: true,
                    ..live("a")
                }],
                ..Default::default()
            },
            vec![],
        );
        // Adopted earlier, now gone: said without a status.
        check(
            Facts {
                live: vec![LiveFacts {
                    adopted: true,
                    ..live("a")
                }],
                ..Default::default()
            },
            vec![Action::Report {
                id: id("a"),
                gone: Gone::Stopped,
            }],
        );
        // Ran here under an earlier process, gone while no server watched: restart.
        check(
            Facts {
                live: vec![live("a")],
                ..Default::default()
            },
            vec![Action::Report {
                id: id("a"),
                gone: Gone::StoppedWhileDown,
            }],
        );
        // Another replica's deployment (no log here): not ours to judge.
        check(
            Facts {
                live: vec![LiveFacts {
                    ran_here: false,
                    ..live("a")
                }],
                ..Default::default()
            },
            vec![],
        );
    }
}
