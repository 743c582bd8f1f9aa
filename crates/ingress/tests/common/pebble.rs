//! Pebble, Let's Encrypt's test CA (Debian's `pebble`), on loopback ports, with
//! a DNS responder of the test's own that answers 127.0.0.1 for every name, so
//! its HTTP-01 validation (real: `PEBBLE_VA_ALWAYS_VALID` is removed from its
//! environment) reaches the ingress's plain listener and nothing else.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use super::certs::TestCa;
use super::{within, LOOPBACK};

/// A running Pebble, killed when dropped.
pub struct Pebble {
    /// The ACME directory (its HTTPS is under `listener_ca`).
    pub directory_url: String,
    /// A PEM file with the CA of Pebble's own HTTPS listeners.
    pub listener_ca: PathBuf,
    /// The root Pebble issues under, from its management endpoint: what a client
    /// of the ingress trusts.
    pub issuing_root_pem: String,
    pub dns: Dns,
    log: PathBuf,
    _child: Child,
    _dir: tempfile::TempDir,
}

/// A free TCP port on 127.0.0.1 (bound, then let go).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((LOOPBACK, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Pebble's binary, or `None` (the test skips) when it is not installed and the
/// run is not CI's, where it must be.
pub fn binary() -> Option<PathBuf> {
    let found = std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .map(|d| Path::new(d).join("pebble"))
        .chain([PathBuf::from("/usr/bin/pebble")])
        .find(|p| p.is_file());
    if found.is_none() {
        let why = "pebble is not installed (Debian package `pebble`; scripts/test.sh installs it)";
        if std::env::var_os("CI").is_some() {
            panic!("{why}, and CI is set: the ACME tests must run");
        }
        eprintln!("SKIPPED: {why}");
    }
    found
}

impl Pebble {
    /// Starts Pebble on loopback ports of its own, validating HTTP-01 on
    /// `http_port` (the ingress's plain listener); `validity` sets how long its
    /// certificates last (its default: five years).
    pub async fn start(bin: &Path, http_port: u16, validity: Option<Duration>) -> Pebble {
        let (acme_port, management_port, tls_alpn_port) = (free_port(), free_port(), free_port());
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Pebble listener test CA");
        let listener = ca.leaf(&["127.0.0.1", "localhost"]);
        let (cert, key, listener_ca) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("listener-ca.pem"),
        );
        std::fs::write(&cert, &listener.cert_pem).unwrap();
        std::fs::write(&key, &listener.key_pem).unwrap();
        std::fs::write(&listener_ca, ca.pem()).unwrap();
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            // TLS-ALPN-01 is not used: a port where nothing listens.
            "tlsPort": tls_alpn_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = validity {
            pebble["certificateValidityPeriod"] = v.as_secs().into();
        }
        let config = dir.path().join("pebble.json");
        std::fs::write(&config, serde_json::json!({ "pebble": pebble }).to_string()).unwrap();

        let dns = Dns::start().await;
        let log = dir.path().join("pebble.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("-config")
            .arg(&config)
            .arg("-dnsserver")
            .arg(dns.addr.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            // Deterministic runs: no nonce rejected at random, every order
            // validated afresh (no authorization reused).
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .env_remove("PEBBLE_ALTERNATE_ROOTS")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("pebble starts");

        let client = reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
            .build()
            .unwrap();
        let directory_url = format!("https://127.0.0.1:{acme_port}/dir");
        let up = async {
            loop {
                if let Ok(r) = client.get(&directory_url).send().await {
                    if r.status().is_success() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        if tokio::time::timeout(super::PATIENCE, up).await.is_err() {
            panic!(
                "pebble did not answer:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let roots = format!("https://127.0.0.1:{management_port}/roots/0");
        let issuing_root_pem = within("pebble's root", client.get(&roots).send())
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            issuing_root_pem.contains("BEGIN CERTIFICATE"),
            "{issuing_root_pem}"
        );
        Pebble {
            directory_url,
            listener_ca,
            issuing_root_pem,
            dns,
            log,
            _child: child,
            _dir: dir,
        }
    }

    /// What Pebble logged (for a failing test's message).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A DNS responder on a loopback UDP port: every A question is answered
/// 127.0.0.1, every other type with no record. Hand-made (~40 lines of wire
/// format) where a DNS server crate would bring a resolver stack for one answer.
pub struct Dns {
    pub addr: SocketAddr,
    /// Every name asked, with its type (1: A, 28: AAAA).
    pub asked: Arc<Mutex<Vec<(String, u16)>>>,
    task: JoinHandle<()>,
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Dns {
    async fn start() -> Dns {
        let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
        let addr = socket.local_addr().unwrap();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                // Answers go back only to loopback askers (Pebble).
                if !from.ip().is_loopback() {
                    continue;
                }
                if let Some((name, qtype, reply)) = answer(&buf[..n]) {
                    log.lock().unwrap().push((name, qtype));
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        Dns { addr, asked, task }
    }

    pub fn asked(&self) -> Vec<(String, u16)> {
        self.asked.lock().unwrap().clone()
    }
}

/// The reply to one query (RFC 1035 4.1): the header with QR and AA set, the
/// question echoed, and for type A one record 127.0.0.1 (TTL 60).
fn answer(query: &[u8]) -> Option<(String, u16, Vec<u8>)> {
    if query.len() < 12 || query[4..6] != [0, 1] {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    while *query.get(i)? != 0 {
        let len = usize::from(query[i]);
        labels.push(String::from_utf8_lossy(query.get(i + 1..i + 1 + len)?).into_owned());
        i += 1 + len;
    }
    let question_end = i + 5; // the root label, QTYPE, QCLASS
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    query.get(question_end - 1)?;
    let is_a = qtype == 1;
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&query[0..2]); // ID
    r.push(0x80 | (query[2] & 0x79) | 0x04); // QR, opcode and RD as asked, AA
    r.push(0x80); // RA, NOERROR
    r.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    r.extend_from_slice(&query[12..question_end]);
    if is_a {
        // A pointer to the name in the question, A, IN, TTL 60, 4 bytes.
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some((labels.join("."), qtype, r))
}
