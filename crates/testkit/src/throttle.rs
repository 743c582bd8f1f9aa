//! A TCP proxy on loopback that caps what an upstream sends back, like a link of
//! a given speed between a registry and its clients, and counts the bytes it
//! forwards each way.
//!
//! Hand-written rather than a crate: the proxies on crates.io throttle each
//! connection on its own, and a link is shared: a puller that opens five
//! connections must not get five times the rate.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How much each read from either side asks for at most.
const READ_SIZE: usize = 64 << 10;

/// The rate at which [`Throttle`] does not throttle at all: it only counts.
pub const UNLIMITED: u64 = u64::MAX;

/// A proxy from [`Throttle::addr`] to one upstream on loopback; the bytes from
/// the upstream to the clients go through one token bucket shared by every
/// connection, so their total is capped at the rate. Stopped on drop.
pub struct Throttle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// What the accept loop and every connection's pumps share.
struct Shared {
    upstream: SocketAddr,
    bucket: Option<Mutex<Bucket>>,
    downstream_bytes: AtomicU64,
    upstream_bytes: AtomicU64,
    stopping: AtomicBool,
    /// Every open connection's two sockets, by number, shut down on drop so
    /// that the pumps end.
    open: Mutex<HashMap<u64, [TcpStream; 2]>>,
}

/// One proxied connection, held by both of its pumps: the last one to end
/// forgets its sockets.
struct Connection {
    number: u64,
    shared: Arc<Shared>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.open.lock().unwrap().remove(&self.number);
    }
}

/// A token bucket that may go into debt: a sender takes what it sends at once and
/// then sleeps until the bucket is out of debt, so that senders are served in
/// turn and the long-run rate is exact.
struct Bucket {
    bytes_per_sec: f64,
    /// Bytes that may be sent now; negative: owed.
    tokens: f64,
    /// At most this many tokens are saved up while the link is idle.
    burst: f64,
    refilled: Instant,
}

impl Bucket {
    fn new(bytes_per_sec: u64) -> Self {
        let rate = bytes_per_sec as f64;
        // 20 ms of the rate, at least one read: enough that sleeps stay longer
        // than the scheduler's slack, small enough that no burst shows.
        let burst = (rate / 50.0).max(READ_SIZE as f64);
        Bucket {
            bytes_per_sec: rate,
            tokens: burst,
            burst,
            refilled: Instant::now(),
        }
    }

    /// Takes `n` tokens; returns how long the caller must wait before sending.
    fn take(&mut self, n: usize) -> Duration {
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.bytes_per_sec;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.refilled = now;
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.bytes_per_sec)
        }
    }
}

impl Throttle {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to
    /// `upstream`, at most `bytes_per_sec` from the upstream to the clients, all
    /// connections together ([`UNLIMITED`]: no cap). Panics if `upstream` is not a
    /// loopback address: the tests reach nothing else.
    pub fn start(upstream: SocketAddr, bytes_per_sec: u64) -> Throttle {
        assert!(
            upstream.ip().is_loopback(),
            "the throttle forwards to loopback only, not {upstream}"
        );
        assert!(bytes_per_sec > 0, "a rate of 0 bytes/s forwards nothing");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            bucket: (bytes_per_sec != UNLIMITED).then(|| Mutex::new(Bucket::new(bytes_per_sec))),
            downstream_bytes: AtomicU64::new(0),
            upstream_bytes: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
        });
        let accepting = shared.clone();
        std::thread::spawn(move || accept_loop(listener, accepting));
        Throttle { addr, shared }
    }

    /// Where clients connect: `127.0.0.1:PORT`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bytes forwarded from the upstream to the clients since the start or the
    /// last [`Throttle::reset_counts`].
    pub fn downstream_bytes(&self) -> u64 {
        self.shared.downstream_bytes.load(Ordering::Relaxed)
    }

    /// Bytes forwarded from the clients to the upstream, likewise.
    pub fn upstream_bytes(&self) -> u64 {
        self.shared.upstream_bytes.load(Ordering::Relaxed)
    }

    /// Sets both counts back to zero.
    pub fn reset_counts(&self) {
        self.shared.downstream_bytes.store(0, Ordering::Relaxed);
        self.shared.upstream_bytes.store(0, Ordering::Relaxed);
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees `stopping`.
        let _ = TcpStream::connect(self.addr);
        for [client, upstream] in self.shared.open.lock().unwrap().values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = upstream.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for (number, client) in (0u64..).zip(listener.incoming()) {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(upstream) = TcpStream::connect(shared.upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = |s: &TcpStream| -> Option<[TcpStream; 2]> {
            Some([s.try_clone().ok()?, s.try_clone().ok()?])
        };
        let (Some([client2, client3]), Some([upstream2, upstream3])) =
            (clones(&client), clones(&upstream))
        else {
            continue;
        };
        shared
            .open
            .lock()
            .unwrap()
            .insert(number, [client3, upstream3]);
        let connection = Arc::new(Connection {
            number,
            shared: shared.clone(),
        });
        let up = connection.clone();
        std::thread::spawn(move || {
            pump(client, upstream, &up.shared.upstream_bytes, None);
        });
        std::thread::spawn(move || {
            let shared = &connection.shared;
            pump(
                upstream2,
                client2,
                &shared.downstream_bytes,
                shared.bucket.as_ref(),
            );
        });
    }
}

/// Copies `from` to `to` until either side ends, counting into `count` and
/// paced by `bucket` if any; then ends the other direction too.
fn pump(mut from: TcpStream, mut to: TcpStream, count: &AtomicU64, bucket: Option<&Mutex<Bucket>>) {
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(bucket) = bucket {
            let wait = bucket.lock().unwrap().take(n);
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on loopback that sends `len` bytes to each connection, then
    /// closes it.
    fn sender(len: usize) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let mut conn = conn.unwrap();
                std::thread::spawn(move || {
                    let chunk = vec![0x5au8; 1 << 20];
                    let mut left = len;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        if conn.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        left -= n;
                    }
                });
            }
        });
        addr
    }

    fn receive_all(addr: SocketAddr) -> usize {
        let mut conn = TcpStream::connect(addr).unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        got.len()
    }

    /// 20 MB at 50 MB/s takes about 0.4 s; only the lower bound is asserted (a
    /// throttle is never faster than its rate, but a busy machine can make it
    /// slower), and the counts are exact.
    #[test]
    fn a_transfer_takes_as_long_as_the_rate_says() {
        let len = 20_000_000;
        let throttle = Throttle::start(sender(len), 50_000_000);
        let t = Instant::now();
        assert_eq!(receive_all(throttle.addr()), len);
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert_eq!(throttle.downstream_bytes(), len as u64);
        assert_eq!(throttle.upstream_bytes(), 0);
        throttle.reset_counts();
        assert_eq!(throttle.downstream_bytes(), 0);
    }

    /// The rate is the link's: two connections at once share it, so 2 x 10 MB
    /// at 50 MB/s takes about 0.4 s too.
    #[test]
    fn connections_share_the_rate() {
        let len = 10_000_000;
        let throttle = Throttle::start(sender(len), 50_000_000);
        let addr = throttle.addr();
        let t = Instant::now();
        let both = [
            std::thread::spawn(move || receive_all(addr)),
            std::thread::spawn(move || receive_all(addr)),
        ];
        for h in both {
            assert_eq!(h.join().unwrap(), len);
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert_eq!(throttle.downstream_bytes(), 2 * len as u64);
    }

    /// Unlimited, it only counts; both directions are counted.
    #[test]
    fn unlimited_counts_both_ways() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut asked = [0u8; 5];
            conn.read_exact(&mut asked).unwrap();
            conn.write_all(b"pong!!").unwrap();
        });
        let throttle = Throttle::start(upstream, UNLIMITED);
        let mut conn = TcpStream::connect(throttle.addr()).unwrap();
        conn.write_all(b"ping!").unwrap();
        let mut got = Vec::new();
        conn.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"pong!!");
        assert_eq!(throttle.upstream_bytes(), 5);
        assert_eq!(throttle.downstream_bytes(), 6);
    }

    /// Dropped, it accepts no more connections.
    #[test]
    fn dropping_it_stops_it() {
        let throttle = Throttle::start(sender(10), UNLIMITED);
        let addr = throttle.addr();
        assert_eq!(receive_all(addr), 10);
        drop(throttle);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(addr).is_ok() {
            assert!(Instant::now() < deadline, "still listening on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
