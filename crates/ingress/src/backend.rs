//! A backend: one deployment of a service, how to reach it ([`Dialer`]), a pool
//! of keep-alive connections to it, and what is in flight there (so a replaced
//! backend can be drained before its container stops).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::UpstreamBody;

/// How long a dial may take before the request fails with a 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A boxed future, as [`Dialer::dial`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How the proxy opens a connection to a deployment. The server's opens the
/// socket inside the container's network namespace and connects to the app's port
/// on that namespace's loopback; [`TcpDialer`] connects to an address.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self) -> BoxFuture<'_, io::Result<TcpStream>>;
}

/// Connects to one socket address (tests, and backends reachable from the host).
#[derive(Clone, Debug)]
pub struct TcpDialer(pub SocketAddr);

impl Dialer for TcpDialer {
    fn dial(&self) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(TcpStream::connect(self.0))
    }
}

/// One deployment of a service, as the route table points at it.
pub struct Backend {
    service_id: Arc<str>,
    deployment_id: Arc<str>,
    pub(crate) client: Client<Connector, UpstreamBody>,
    in_flight: AtomicUsize,
    idle: Notify,
}

/// How a [`Backend::drain`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Nothing was in flight any more.
    Idle,
    /// The grace passed with this many requests (or upgraded connections) still open.
    GraceExpired { in_flight: usize },
}

impl Backend {
    /// A backend for a deployment of a service. A dial that has not connected in
    /// [`CONNECT_TIMEOUT`] fails (the client gets a 502).
    pub fn new(
        service_id: impl Into<Arc<str>>,
        deployment_id: impl Into<Arc<str>>,
        dialer: Arc<dyn Dialer>,
    ) -> Arc<Backend> {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(Connector {
                dialer,
                connect_timeout: CONNECT_TIMEOUT,
            });
        Arc::new(Backend {
            service_id: service_id.into(),
            deployment_id: deployment_id.into(),
            client,
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    pub fn service_id(&self) -> &Arc<str> {
        &self.service_id
    }

    pub fn deployment_id(&self) -> &Arc<str> {
        &self.deployment_id
    }

    /// Requests in flight, upgraded connections included.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Resolves once nothing is in flight here (requests whose response body has
    /// not been sent in full, upgraded connections still open), or when `grace`
    /// has passed. Call it on the backend [`crate::RouteTable::set`] gave back:
    /// no new request reaches it once it is out of the table.
    pub async fn drain(&self, grace: Duration) -> Drained {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a release in between wakes us.
            notified.as_mut().enable();
            let n = self.in_flight();
            if n == 0 {
                return Drained::Idle;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {
                    let in_flight = self.in_flight();
                    return if in_flight == 0 { Drained::Idle } else { Drained::GraceExpired { in_flight } };
                }
            }
        }
    }

    /// Counts one request in flight until the guard drops.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("service_id", &self.service_id)
            .field("deployment_id", &self.deployment_id)
            .field("in_flight", &self.in_flight())
            .finish()
    }
}

/// One request in flight on a backend (held by the response body or the
/// upgraded connection's copy task).
pub(crate) struct InFlight(Arc<Backend>);

impl InFlight {
    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// hyper-util's connector interface over a [`Dialer`]: the pool asks it for a
/// connection whatever the URI (the URI's authority only keys the pool).
#[derive(Clone)]
pub(crate) struct Connector {
    dialer: Arc<dyn Dialer>,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = io::Error;
    type Future = BoxFuture<'static, io::Result<TokioIo<TcpStream>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let stream = tokio::time::timeout(timeout, dialer.dial())
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            stream.set_nodelay(true)?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Arc<Backend> {
        Backend::new(
            "svc",
            "dep",
            Arc::new(TcpDialer(([127, 0, 0, 1], 9).into())),
        )
    }

    #[tokio::test]
    async fn drain_of_an_idle_backend_is_at_once() {
        assert_eq!(backend().drain(Duration::from_secs(5)).await, Drained::Idle);
    }

    #[tokio::test]
    async fn drain_waits_for_what_is_in_flight() {
        let b = backend();
        let guard = b.enter();
        let released = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            drop(guard);
        });
        assert_eq!(b.drain(Duration::from_secs(5)).await, Drained::Idle);
        released.await.unwrap();
    }

    #[tokio::test]
    async fn drain_gives_up_after_the_grace() {
        let b = backend();
        let _guard = b.enter();
        assert_eq!(
            b.drain(Duration::from_millis(20)).await,
            Drained::GraceExpired { in_flight: 1 }
        );
    }
}
