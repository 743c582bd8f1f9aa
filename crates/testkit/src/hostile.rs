//! Servers that misbehave on purpose, for what no real registry here shows, and
//! canaries that record any connection to an address that must stay untouched.
//! All bind loopback addresses only.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A listener on a blocked loopback address (127.0.0.2, 127.0.0.3...) that counts
/// connections. A test passes only if it counted none.
pub struct Canary {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Canary {
    pub fn bind(ip: &str) -> Self {
        let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind canary on {ip}: {e}"));
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok(_) => {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Canary { addr, hits, stop }
    }

    pub fn hits(&self) -> usize {
        // Give a connection in flight a moment to be accepted.
        std::thread::sleep(Duration::from_millis(30));
        self.hits.load(Ordering::SeqCst)
    }

    /// `http://IP:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// How a raw TCP server answers.
#[derive(Clone, Copy, Debug)]
pub enum Misbehaviour {
    /// Accepts and never sends a byte.
    Hang,
    /// Sends an HTTP response one byte a second.
    Trickle,
}

/// Reads up to the end of an HTTP request head (or 10 s, or the peer's close).
fn read_request_head(conn: &mut std::net::TcpStream) {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
}

/// A raw TCP server on 127.0.0.1 that misbehaves.
pub struct RawServer {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl RawServer {
    pub fn start(how: Misbehaviour) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || match how {
                            Misbehaviour::Hang => {
                                while !s.load(Ordering::SeqCst) {
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                                drop(conn);
                            }
                            Misbehaviour::Trickle => {
                                // Only once the request is in: a response that starts
                                // before it is "unexpected" to the client, a different
                                // failure from the slow one this server is for.
                                read_request_head(&mut conn);
                                for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".iter() {
                                    if s.load(Ordering::SeqCst) || conn.write_all(&[*b]).is_err() {
                                        break;
                                    }
                                    std::thread::sleep(Duration::from_secs(1));
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        RawServer { port, stop }
    }

    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// An axum router served on a loopback address, on its own thread and runtime.
pub struct FakeServer {
    pub ip: &'static str,
    pub port: u16,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl FakeServer {
    /// Serves the router built by `make`, which gets this server's own base URL
    /// (`http://127.0.0.1:PORT`) so that it can point challenges or redirects at itself.
    pub fn start(make: impl FnOnce(String) -> axum::Router + Send + 'static) -> Self {
        Self::start_on("127.0.0.1", make)
    }

    /// [`FakeServer::start`] on another loopback address (a second "host").
    pub fn start_on(
        ip: &'static str,
        make: impl FnOnce(String) -> axum::Router + Send + 'static,
    ) -> Self {
        let l = TcpListener::bind((ip, 0)).unwrap();
        l.set_nonblocking(true).unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = make(format!("http://{ip}:{port}"));
                let listener = tokio::net::TcpListener::from_std(l).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        FakeServer {
            ip,
            port,
            _shutdown: tx,
        }
    }

    pub fn authority(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }
}

/// A registry's answer to a manifest request: the OCI manifest `body`, with its
/// media type and `Docker-Content-Digest`, as fake registries serve one.
pub fn manifest_answer(body: Vec<u8>, digest: String) -> axum::response::Response {
    axum::response::Response::builder()
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .header("docker-content-digest", digest)
        .body(axum::body::Body::from(body))
        .expect("a valid response")
}

/// A TCP proxy on loopback that passes a connection's answer through at most
/// `bytes_per_sec`, so that a test can act while a download is under way (a local
/// registry is otherwise done before anything can happen to it). A connection
/// whose upstream refuses is closed, as a dead registry's would be; [`Throttle::sever`]
/// closes the open ones (what the upstream already sent waits in the proxy's socket
/// buffers, which a registry that dies with its machine would not deliver).
pub struct Throttle {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicUsize>,
}

impl Throttle {
    pub fn start(upstream: &str, bytes_per_sec: usize) -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicUsize::new(0));
        let (s, e) = (stop.clone(), epoch.clone());
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok((client, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let upstream = upstream.clone();
                let epoch = e.clone();
                let born = epoch.load(Ordering::SeqCst);
                std::thread::spawn(move || {
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                        return; // refused: the client sees its connection closed
                    };
                    let (mut c_read, mut s_write) =
                        (client.try_clone().unwrap(), server.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut c_read, &mut s_write);
                        let _ = s_write.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut server, mut client) = (server, client);
                    let mut buf = vec![0u8; (bytes_per_sec / 20).max(1)];
                    while epoch.load(Ordering::SeqCst) == born {
                        use std::io::Read;
                        match server.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if client.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Throttle { addr, stop, epoch }
    }

    /// Closes every connection open now.
    pub fn sever(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// `127.0.0.1:PORT`
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
