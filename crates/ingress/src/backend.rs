//! A backend: one deployment of a service, how to reach it ([`Dialer`]), a pool
//! of keep-alive connections to it, and what is in flight there (so a replaced
//! backend can be drained before its container stops).
//!
//! The pool is hyper's HTTP/1.1 client connections in a stack of our own rather
//! than hyper-util's pooled `Client`: a backend is one address, so there is no
//! pool key to hash, and a connection goes back to the stack when the response
//! body it carried has ended, where the `Client` spawns a task per request to
//! wait for that (the ingress bench measured the difference).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use crate::UpstreamBody;

/// How long a dial may take before the request fails with a 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An idle connection to a backend is closed when next looked at after this long.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Keep-alive connections to the deployment.
    pub(crate) client: Pool,
    in_flight: AtomicUsize,
    drained: Notify,
}

/// A backend's connections: a stack of idle ones, and how to open another.
#[derive(Clone)]
pub(crate) struct Pool(Arc<PoolInner>);

struct PoolInner {
    dialer: Arc<dyn Dialer>,
    /// Idle keep-alive connections, the most recently used last.
    idle: Mutex<Vec<IdleConnection>>,
}

struct IdleConnection {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// Why a request got no response from its backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    #[error("connecting: {0}")]
    Connect(io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// Whether no connection could be opened.
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, UpstreamError::Connect(_))
    }
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
        Arc::new(Backend {
            service_id: service_id.into(),
            deployment_id: deployment_id.into(),
            client: Pool(Arc::new(PoolInner {
                dialer,
                idle: Mutex::new(Vec::new()),
            })),
            in_flight: AtomicUsize::new(0),
            drained: Notify::new(),
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
            let notified = self.drained.notified();
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
            self.0.drained.notify_waiters();
        }
    }
}

impl Pool {
    /// Sends `req` (origin-form, with its `Host`) over an idle connection, or a new
    /// one. A request a reused connection closed under before it was written is
    /// sent again, over the next connection; once a new one fails, that is the
    /// answer.
    pub(crate) async fn request(
        &self,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        loop {
            let (mut sender, reused) = match self.checkout().await {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    // A switched connection is the upgrade's, never the pool's.
                    let reusable = resp.status() != http::StatusCode::SWITCHING_PROTOCOLS;
                    let connection = reusable.then(|| (sender, self.clone()));
                    return Ok(resp.map(|body| PooledBody {
                        body,
                        ended: false,
                        connection,
                    }));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }

    /// The most recently used idle connection that is still open, once it can
    /// take a request.
    async fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        loop {
            let mut sender = {
                let mut idle = self.0.idle.lock().expect("pool lock");
                loop {
                    let c = idle.pop()?;
                    if !c.sender.is_closed() && c.since.elapsed() < POOL_IDLE_TIMEOUT {
                        break c.sender;
                    }
                }
            };
            // Ready as soon as its connection has read the end of the last response.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Back to the pool, with the connections idle too long dropped (closed).
    fn checkin(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.0.idle.lock().expect("pool lock");
        let stale = idle
            .iter()
            .take_while(|c| now.duration_since(c.since) >= POOL_IDLE_TIMEOUT)
            .count();
        idle.drain(..stale);
        idle.push(IdleConnection { sender, since: now });
    }

    /// A new connection, its HTTP/1.1 driven by a task of its own (with upgrades,
    /// for a protocol switch) until it closes.
    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, UpstreamError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, self.0.dialer.dial())
            .await
            .map_err(|_| {
                UpstreamError::Connect(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            })?
            .map_err(UpstreamError::Connect)?;
        stream.set_nodelay(true).map_err(UpstreamError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "backend connection ended");
            }
        });
        Ok(sender)
    }
}

/// A backend's response body on its way through; its connection goes back to
/// the pool once the body has been read to its end (not when it is dropped
/// earlier: that connection is closed).
pub(crate) struct PooledBody {
    body: Incoming,
    ended: bool,
    connection: Option<(SendRequest<UpstreamBody>, Pool)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // hyper stops polling a body of known length once it has it all.
        if self.ended || self.body.is_end_stream() {
            if let Some((sender, pool)) = self.connection.take() {
                pool.checkin(sender);
            }
        }
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

    /// A backend on loopback answering `ok` to each request head, closing each
    /// connection after its first answer when `close_after_one`; counts connections.
    async fn ok_server(close_after_one: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            head.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if s.write_all(answer).await.is_err() || close_after_one {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn get(pool: &Pool) -> String {
        use http_body_util::BodyExt;
        let req = Request::get("/")
            .header(http::header::HOST, "app")
            .body(
                http_body_util::Empty::new()
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            )
            .unwrap();
        let resp = pool.request(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_response_has_ended() {
        let (addr, accepted) = ok_server(false).await;
        let b = Backend::new("svc", "dep", Arc::new(TcpDialer(addr)));
        for _ in 0..3 {
            assert_eq!(get(&b.client).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_backend_closed_is_not_used_again() {
        let (addr, accepted) = ok_server(true).await;
        let b = Backend::new("svc", "dep", Arc::new(TcpDialer(addr)));
        for _ in 0..3 {
            assert_eq!(get(&b.client).await, "ok");
            // The close reaches the idle connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
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
