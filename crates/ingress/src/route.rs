//! The route table: which service answers a host name, and its current backend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::backend::Backend;
use crate::host::Host;

/// What [`RouteTable::set`] installs for a service.
#[derive(Clone, Debug)]
pub struct Route {
    pub service_id: Arc<str>,
    /// Every name the service answers to: `<service>.<project>.<apps-domain>` and
    /// its `domains`.
    pub hosts: Vec<Host>,
    pub backend: Arc<Backend>,
}

/// Why a route was not installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouteError {
    #[error("host {host} is already routed to service {service_id}")]
    HostTaken { host: Host, service_id: Arc<str> },
}

/// Host names to services, services to their current backend. Reads (one per
/// request) take a read lock for a map lookup; writes are rare (deploys).
#[derive(Default)]
pub struct RouteTable {
    inner: RwLock<Inner>,
    changed: watch::Sender<()>,
}

#[derive(Default)]
struct Inner {
    by_host: HashMap<Host, Arc<Service>>,
    /// Each service's hosts, and the service.
    by_id: HashMap<Arc<str>, (Vec<Host>, Arc<Service>)>,
}

/// A service in the table: what outlives its backends and its hosts (the count
/// of what is open to it, limited per service).
pub(crate) struct Service {
    pub(crate) id: Arc<str>,
    backend: ArcSwap<Backend>,
    open: AtomicUsize,
}

impl Service {
    pub(crate) fn backend(&self) -> Arc<Backend> {
        self.backend.load_full()
    }

    /// One more request (or upgraded connection) open to the service, unless
    /// `limit` are already.
    pub(crate) fn try_open(self: &Arc<Self>, limit: usize) -> Option<Open> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Open(self.clone()))
    }
}

/// A request open to a service, counted against its limit until dropped.
pub(crate) struct Open(Arc<Service>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RouteTable {
    pub fn new() -> RouteTable {
        RouteTable::default()
    }

    /// Routes `route.hosts` to `route.backend`, in one step: a request sees the
    /// previous state or this one, never a mix. Hosts the service had and no longer
    /// lists stop routing. Returns the backend this one replaces (drain it, then
    /// stop it), `None` for a service new to the table. A host another service
    /// holds is refused and nothing changes.
    pub fn set(&self, route: Route) -> Result<Option<Arc<Backend>>, RouteError> {
        let mut guard = self.inner.write().expect("route table lock");
        let inner = &mut *guard;
        for host in &route.hosts {
            if let Some(other) = inner.by_host.get(host) {
                if other.id != route.service_id {
                    return Err(RouteError::HostTaken {
                        host: host.clone(),
                        service_id: other.id.clone(),
                    });
                }
            }
        }
        let previous = match inner.by_id.get_mut(&route.service_id) {
            Some((hosts, service)) => {
                for h in hosts.iter() {
                    inner.by_host.remove(h);
                }
                hosts.clone_from(&route.hosts);
                for h in &route.hosts {
                    inner.by_host.insert(h.clone(), service.clone());
                }
                Some(service.backend.swap(route.backend))
            }
            None => {
                let service = Arc::new(Service {
                    id: route.service_id.clone(),
                    backend: ArcSwap::new(route.backend),
                    open: AtomicUsize::new(0),
                });
                for h in &route.hosts {
                    inner.by_host.insert(h.clone(), service.clone());
                }
                inner.by_id.insert(route.service_id, (route.hosts, service));
                None
            }
        };
        drop(guard);
        self.changed.send_replace(());
        Ok(previous)
    }

    /// Stops routing to a service; returns its backend, to drain and stop.
    pub fn remove(&self, service_id: &str) -> Option<Arc<Backend>> {
        let mut inner = self.inner.write().expect("route table lock");
        let (hosts, service) = inner.by_id.remove(service_id)?;
        for h in &hosts {
            inner.by_host.remove(h);
        }
        drop(inner);
        self.changed.send_replace(());
        Some(service.backend())
    }

    /// The service a `Host` header or `:authority` names (any case, with or
    /// without a port or a trailing dot).
    pub fn lookup(&self, authority: &str) -> Option<Arc<Backend>> {
        self.service(authority).map(|s| s.backend())
    }

    pub(crate) fn service(&self, authority: &str) -> Option<Arc<Service>> {
        let host = Host::from_authority(authority)?;
        self.inner
            .read()
            .expect("route table lock")
            .by_host
            .get(&host)
            .cloned()
    }

    /// Every host routed now, sorted.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = self
            .inner
            .read()
            .expect("route table lock")
            .by_host
            .keys()
            .cloned()
            .collect();
        hosts.sort();
        hosts
    }

    /// Told of each change (for certificates to follow the hosts).
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::TcpDialer;

    fn backend(dep: &str) -> Arc<Backend> {
        Backend::new("svc", dep, Arc::new(TcpDialer(([127, 0, 0, 1], 9).into())))
    }

    fn hosts(names: &[&str]) -> Vec<Host> {
        names.iter().map(|n| Host::parse(n).unwrap()).collect()
    }

    fn route(id: &str, names: &[&str], dep: &str) -> Route {
        Route {
            service_id: id.into(),
            hosts: hosts(names),
            backend: backend(dep),
        }
    }

    fn routed(t: &RouteTable, authority: &str) -> Option<String> {
        t.lookup(authority).map(|b| b.deployment_id().to_string())
    }

    #[test]
    fn lookup_is_by_normalized_host() {
        let t = RouteTable::new();
        assert!(t
            .set(route("s1", &["web.shop.localhost", "shop.example"], "d1"))
            .unwrap()
            .is_none());
        for a in [
            "web.shop.localhost",
            "WEB.Shop.localhost:8441",
            "web.shop.localhost.",
            "shop.example:443",
        ] {
            assert_eq!(routed(&t, a).as_deref(), Some("d1"), "{a}");
        }
        assert_eq!(routed(&t, "other.shop.localhost"), None);
        assert_eq!(routed(&t, ""), None);
    }

    #[test]
    fn set_swaps_the_backend_and_gives_back_the_old_one() {
        let t = RouteTable::new();
        t.set(route("s1", &["a.example"], "d1")).unwrap();
        let old = t.set(route("s1", &["a.example"], "d2")).unwrap().unwrap();
        assert_eq!(&**old.deployment_id(), "d1");
        assert_eq!(routed(&t, "a.example").as_deref(), Some("d2"));
    }

    #[test]
    fn new_hosts_replace_the_old_ones() {
        let t = RouteTable::new();
        t.set(route("s1", &["a.example", "b.example"], "d1"))
            .unwrap();
        t.set(route("s1", &["b.example", "c.example"], "d2"))
            .unwrap();
        assert_eq!(routed(&t, "a.example"), None);
        assert_eq!(routed(&t, "c.example").as_deref(), Some("d2"));
        assert_eq!(t.hosts(), hosts(&["b.example", "c.example"]));
    }

    #[test]
    fn a_host_of_another_service_is_refused_whole() {
        let t = RouteTable::new();
        t.set(route("s1", &["a.example"], "d1")).unwrap();
        let err = t
            .set(route("s2", &["b.example", "a.example"], "d2"))
            .unwrap_err();
        assert_eq!(
            err,
            RouteError::HostTaken {
                host: Host::parse("a.example").unwrap(),
                service_id: "s1".into()
            }
        );
        assert_eq!(routed(&t, "b.example"), None);
    }

    #[test]
    fn remove_stops_routing() {
        let t = RouteTable::new();
        t.set(route("s1", &["a.example"], "d1")).unwrap();
        assert_eq!(&**t.remove("s1").unwrap().deployment_id(), "d1");
        assert_eq!(routed(&t, "a.example"), None);
        assert!(t.remove("s1").is_none());
    }

    #[test]
    fn the_per_service_count_is_kept_across_backends() {
        let t = RouteTable::new();
        t.set(route("s1", &["a.example"], "d1")).unwrap();
        let s = t.service("a.example").unwrap();
        let open = s.try_open(1).unwrap();
        assert!(s.try_open(1).is_none());
        t.set(route("s1", &["a.example"], "d2")).unwrap();
        assert!(t.service("a.example").unwrap().try_open(1).is_none());
        drop(open);
        assert!(t.service("a.example").unwrap().try_open(1).is_some());
    }
}
