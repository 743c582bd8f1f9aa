//! Test harness for berth's integration tests, talking only to loopback:
//! - [`LocalRegistry`]: Debian's `docker-registry` (CNCF distribution) with htpasswd
//!   or token auth, started on a free port in a temporary directory;
//! - [`TokenServer`]: the token server for it (ES256 JWTs, certificate in `x5c`);
//! - [`TestImage`]: images built here as OCI layouts and pushed with `skopeo`;
//! - [`estargz`]: eStargz layers (lazily pullable gzip) and images of them;
//! - [`hostile`]: canary listeners and servers that misbehave on purpose;
//! - [`Moto`]: moto in server mode, standing in for AWS KMS and Secrets Manager;
//! - [`FakeKube`]: a stateful fake Kubernetes API server with a scripted kubelet;
//! - [`fixtures`]: the registry and images the server and CLI tests share;
//! - [`bench`]: what the server's benches share (the API as the admin, containerd).

pub mod bench;
pub mod estargz;
pub mod fixtures;
pub mod hostile;
mod image;
mod kube_api;
mod moto;
mod postgres;
mod registry;
pub mod throttle;
mod token_server;

pub use fixtures::TeamRegistry;
pub use image::{layout_blob, push_index, TestImage};
pub use kube_api::{FakeKube, Kubelet, Peer};
pub use moto::Moto;
pub use postgres::Postgres;
pub use registry::LocalRegistry;
pub use token_server::{Grant, TokenServer, TokenServerMode, User, IDENTITY_USER};

/// Finds a binary the tests need, or panics naming the package and the command
/// that installs it.
pub fn require(bin: &str) -> std::path::PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = std::path::Path::new(dir).join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("{bin} is not installed; run `scripts/test.sh` (it installs the test dependencies from Debian's packages)");
}

/// Runs `start` on a thread that lives as long as the test process and returns
/// what it made. A child spawned there with a parent-death signal lives as long as
/// the process: the signal follows the spawning thread, not the process.
pub(crate) fn on_lasting_thread<T: Send + 'static>(start: fn() -> T) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(start()).unwrap();
        loop {
            std::thread::park();
        }
    });
    rx.recv().unwrap()
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// `len` bytes that do not compress (xorshift64 from `seed`): layers whose
/// compressed sizes are real.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
