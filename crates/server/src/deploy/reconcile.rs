//! Making this replica's containers match the database. [`decide`] is a pure
//! function of what was observed (table-tested below); [`Deployer::reconcile`]
//! observes and carries its decisions out.

use std::collections::{HashMap, HashSet};
use std::process::ExitStatus;

use berth_store::{DeploymentId, LiveDeployment, Store};

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

impl Deployer {
    /// Makes this replica's containers match the database. A container whose
    /// deployment should not run any more (replaced by a newer deploy, its service
    /// terminated, perhaps through another replica, or left by a crash before its
    /// deploy was recorded) is stopped and its bundle removed; a live one that an
    /// earlier server process started is adopted; one that stopped by itself is
    /// said in its log, once. Only the worker calls it, between deploys.
    pub(super) async fn reconcile(&self, store: &dyn Store) {
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
                Action::Adopt { id, otherwise } => {
                    let cid = container_id(&id);
                    match runtime.adopt(&cid).await {
                        Ok(true) => {
                            log::append(
                                &self.log_path(&id),
                                "the server restarted; the container still runs and was taken up again",
                            );
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

    async fn report(&self, store: &dyn Store, live: &LiveDeployment, gone: Gone) {
        let log = self.log_path(&live.id);
        locked(&self.not_running).insert(live.id.clone());
        match gone {
            Gone::Exited(status) => log::append(&log, &format!("the container exited ({status})")),
            Gone::Stopped => log::append(&log, "the container exited"),
            Gone::StoppedWhileDown => match restart(store, live).await {
                Ok(new) => log::append(
                    &log,
                    &format!("the container stopped while the server was down; deployment {new} restarts the service"),
                ),
                Err(e) => {
                    log::append(&log, "the container stopped while the server was down");
                    tracing::error!(deployment = %live.id, error = %e, "restarting a service");
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

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
