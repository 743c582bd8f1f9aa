//! What the ingress tests share: an ingress on a loopback port, backends that are
//! small hyper servers on loopback ports, and clients that speak to the ingress
//! exactly as a test needs (a chosen `Host`, h2c with prior knowledge, raw bytes).
//! Every socket here is on 127.0.0.1.

#![allow(dead_code)] // each test file uses its own part

pub mod certs;
pub mod pebble;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_ingress::tls::Certificates;
use berth_ingress::{
    Backend, Host, Ingress, IngressConfig, Limits, NoObserver, Route, RouteTable, TcpDialer,
    TlsListen,
};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// How long a step a test waits for may take before the test fails (generous:
/// the machine may be busy; the tests never wait this long when they pass).
pub const PATIENCE: Duration = Duration::from_secs(10);

pub const LOOPBACK: std::net::Ipv4Addr = std::net::Ipv4Addr::LOCALHOST;

/// Awaits `f`, failing the test with `what` if it takes longer than [`PATIENCE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Limits small enough for the tests to see them act in well under a second or
/// two; the rest as large as the defaults.
pub fn quick_limits() -> Limits {
    Limits {
        max_request_body: 1024,
        max_header_bytes: 8 * 1024,
        header_read_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_millis(600),
        response_timeout: Duration::from_millis(600),
        max_connections: 8,
        max_per_service: 2,
    }
}

/// An ingress serving on loopback ports the system chose, until dropped.
pub struct TestIngress {
    pub addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub table: Arc<RouteTable>,
    pub certificates: Arc<Certificates>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<()>>,
}

impl TestIngress {
    pub async fn start(limits: Limits) -> TestIngress {
        TestIngress::start_with(limits, None, 0).await
    }

    /// With a TLS listener too, and the plain one on `plain_port` (0: any; the
    /// ACME tests need to know it before Pebble starts).
    pub async fn start_with(
        limits: Limits,
        tls: Option<TlsListen>,
        plain_port: u16,
    ) -> TestIngress {
        let table = Arc::new(RouteTable::new());
        let config = IngressConfig {
            listen: (LOOPBACK, plain_port).into(),
            tls,
            limits,
        };
        let ingress = Ingress::bind(config, table.clone(), Arc::new(NoObserver))
            .await
            .expect("the ingress binds")
            // A PEM directory's new files are seen at once.
            .reread_pem_every(Duration::from_millis(100));
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, tls_addr, certificates) = (
            ingress.local_addr(),
            ingress.tls_local_addr(),
            ingress.certificates(),
        );
        let served = tokio::spawn(ingress.serve(async {
            let _ = stopped.await;
        }));
        TestIngress {
            addr,
            tls_addr,
            table,
            certificates,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Routes `hosts` to a backend reachable at `backend` (a loopback port), as
    /// service `service`; gives back the backend it replaced.
    pub fn route(
        &self,
        service: &str,
        deployment: &str,
        hosts: &[&str],
        backend: SocketAddr,
    ) -> Option<Arc<Backend>> {
        self.table
            .set(route(service, deployment, hosts, backend))
            .expect("the hosts are free")
    }

    /// Stops accepting, lets what is in flight finish, and waits for the ingress
    /// to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            within("the ingress to stop", served).await.unwrap();
        }
    }
}

impl Drop for TestIngress {
    fn drop(&mut self) {
        if let Some(served) = &self.served {
            served.abort();
        }
    }
}

pub fn route(service: &str, deployment: &str, hosts: &[&str], backend: SocketAddr) -> Route {
    Route {
        service_id: service.into(),
        hosts: hosts.iter().map(|h| Host::parse(h).unwrap()).collect(),
        backend: Backend::new(service, deployment, Arc::new(TcpDialer(backend))),
    }
}

/// A backend: an HTTP/1.1 server on a loopback port answering with `handler`,
/// until dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler = Arc::new(handler);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let answer = handler(req);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream { addr, task }
    }

    /// Answers every request with a JSON description of it: the backend's
    /// `name`, the method, path, protocol version and every header it got.
    pub async fn echo(name: &'static str) -> Upstream {
        Upstream::start(move |req| async move { json(&describe(name, &req)) }).await
    }
}

/// What a backend saw of a request.
pub fn describe<B>(name: &str, req: &Request<B>) -> serde_json::Value {
    let mut headers = serde_json::Map::new();
    for name in req.headers().keys() {
        let all = req
            .headers()
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>();
        headers.insert(name.as_str().to_owned(), all.into());
    }
    serde_json::json!({
        "name": name,
        "method": req.method().as_str(),
        "path": req.uri().to_string(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    })
}

pub fn json(value: &serde_json::Value) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(full(value.to_string()))
        .unwrap()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A body whose frames the test sends one at a time; the body ends when the
/// sender is dropped.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, BoxError>(http_body::Frame::data(b)), rx))
    });
    (tx, http_body_util::StreamBody::new(stream).boxed())
}

/// An HTTP/1.1 connection to `addr`; requests carry the `Host` the test sets.
pub async fn http1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    send
}

/// An HTTP/2 connection to `addr` with prior knowledge (h2c); requests carry an
/// absolute URI, whose authority is the `:authority`.
pub async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    send
}

/// `GET path` with `Host: host`, on a new HTTP/1.1 connection; the whole answer.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let mut send = http1(addr).await;
    let req = Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap();
    let resp = within("a response", send.send_request(req))
        .await
        .expect("an answer");
    read_whole(resp).await
}

pub async fn read_whole(resp: Response<Incoming>) -> (StatusCode, HeaderMap, Bytes) {
    let (parts, body) = resp.into_parts();
    let bytes = within("the response body", body.collect())
        .await
        .expect("the body arrives whole")
        .to_bytes();
    (parts.status, parts.headers, bytes)
}

pub fn parse_json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// What a raw connection saw until the server closed it: the bytes it was sent
/// and how long after `since` the close came. `None` if it stayed open `limit`.
pub async fn read_until_closed(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    since: Instant,
    limit: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::from_std(since + limit);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((seen, since.elapsed())),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` to a raw connection, `gap` between each; stops at the first
/// failed write (the server closed), returning how many were written.
pub async fn dribble(
    stream: &mut (impl tokio::io::AsyncWrite + Unpin),
    bytes: &[u8],
    gap: Duration,
) -> usize {
    for (i, b) in bytes.iter().enumerate() {
        if stream.write_all(&[*b]).await.is_err() {
            return i;
        }
        tokio::time::sleep(gap).await;
    }
    bytes.len()
}

/// A real HTTPS client: rustls, only `root_pem` trusted, `hosts` resolved to
/// `addr` (loopback), no proxy from the environment, a new connection (and
/// handshake) for each request.
pub fn https_client(root_pem: &str, hosts: &[&str], addr: SocketAddr) -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .tls_info(true);
    for h in hosts {
        b = b.resolve(h, addr);
    }
    b
}

/// The leaf certificate the server showed (the client asked with `tls_info`).
pub fn peer_certificate(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("the server's certificate")
        .to_vec()
}
