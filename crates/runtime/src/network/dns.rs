//! The containers' resolver: a relay on the host's loopback that pasta carries
//! each `public` container's port 53 to, forwarding queries to the server's
//! upstream resolvers (the host's `/etc/resolv.conf`, or `--container-dns`). It
//! reads no query: answers naming private addresses are harmless, since the
//! egress rules refuse connecting to them. Each UDP query gets a socket (and so a
//! source port) of its own, every exchange a deadline, and all of them a cap, so
//! that one container flooding it cannot stall the others for long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Semaphore;

const DEADLINE: Duration = Duration::from_secs(5);
const IN_FLIGHT: usize = 512;

/// The running relay; dropped, it stops.
pub struct DnsForwarder {
    port: u16,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for DnsForwarder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The name servers of `/etc/resolv.conf` (port 53).
pub fn system_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

impl DnsForwarder {
    /// Listens on a free port of 127.0.0.1 (UDP and TCP, the same number) and
    /// relays to `upstreams` (the first that answers).
    pub async fn start(upstreams: Vec<SocketAddr>) -> std::io::Result<DnsForwarder> {
        let (udp, tcp) = bind_pair().await?;
        let port = udp.local_addr()?.port();
        let upstreams = Arc::new(upstreams);
        let cap = Arc::new(Semaphore::new(IN_FLIGHT));
        let udp = Arc::new(udp);
        let tasks = vec![
            tokio::spawn(serve_udp(udp, upstreams.clone(), cap.clone())),
            tokio::spawn(serve_tcp(tcp, upstreams, cap)),
        ];
        Ok(DnsForwarder { port, tasks })
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// A UDP and a TCP socket on the same free port of 127.0.0.1.
async fn bind_pair() -> std::io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free port")))
}

async fn serve_udp(sock: Arc<UdpSocket>, upstreams: Arc<Vec<SocketAddr>>, cap: Arc<Semaphore>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            continue; // full: the client retries, as with a lost packet
        };
        let query = buf[..n].to_vec();
        let (sock, upstreams) = (sock.clone(), upstreams.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(answer) = ask_udp(&upstreams, &query).await {
                let _ = sock.send_to(&answer, from).await;
            }
        });
    }
}

async fn ask_udp(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind = if up.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let Ok(s) = UdpSocket::bind(bind).await else {
            continue;
        };
        if s.connect(up).await.is_err() || s.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        // Only an answer with the query's id counts (the first two bytes).
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.recv(&mut buf)).await {
            if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

async fn serve_tcp(listener: TcpListener, upstreams: Arc<Vec<SocketAddr>>, cap: Arc<Semaphore>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = cap.clone().try_acquire_owned() else {
            continue; // dropped: closed
        };
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let _permit = permit;
            for up in upstreams.iter() {
                let Ok(Ok(mut server)) =
                    tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(up)).await
                else {
                    continue;
                };
                let _ = tokio::time::timeout(
                    DEADLINE * 2,
                    tokio::io::copy_bidirectional(&mut client, &mut server),
                )
                .await;
                return;
            }
        });
    }
}
