//! What the server's benches (`crates/server/benches/`) share: where their data
//! goes, a process's memory, the API as the admin, and containerd driven by
//! `ctr`. A server's configuration stays in each bench: the testkit depends on
//! no berth crate.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::require;

/// A temporary directory for a run's data dirs, under `BERTH_BENCH_DIR`
/// (default `/var/tmp`: gigabytes, and not a tmpfs).
pub fn work_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(std::env::var("BERTH_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()))
        .unwrap()
}

/// Removes `dir` and all it holds, whatever is left of it.
pub fn remove(dir: &Path) {
    let _ = Command::new("rm").arg("-rf").arg(dir).status();
}

/// The resident set (`VmRSS`) and its peak (`VmHWM`), MiB, of process `pid`
/// (`self` for this one).
pub fn rss(pid: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            >> 10
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A berth server's API as its admin (the token it wrote into its data dir).
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    /// The API of the server listening on `addr` with its data under `data_dir`.
    pub fn admin(addr: SocketAddr, data_dir: &Path) -> Api {
        let token = std::fs::read_to_string(data_dir.join("admin-token"))
            .unwrap()
            .trim()
            .to_owned();
        Api {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: format!("http://{addr}"),
            token,
        }
    }

    /// The client, for requests elsewhere than the API (the ingress).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// A request to `path` (`/v1/...`) with the admin's token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// POSTs `body` to `path`.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `path`'s answer as a `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> T {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `path`'s answer as text.
    pub async fn text(&self, path: &str) -> String {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// DELETEs `path`, whatever the answer (a run's end, tidying up).
    pub async fn delete(&self, path: &str) {
        let _ = self.request(reqwest::Method::DELETE, path).send().await;
    }

    /// Project `project` and its service `service` of `image` from the
    /// registry at `registry_url`, with `user`'s credentials.
    pub async fn create_service(
        &self,
        project: &str,
        service: &str,
        image: &str,
        registry_url: &str,
        user: (&str, &str),
    ) {
        self.post("/v1/projects", serde_json::json!({"name": project}))
            .await;
        let r = self
            .post(
                &format!("/v1/projects/{project}/services"),
                serde_json::json!({"name": service, "image": image,
                    "registry": {"registry_url": registry_url, "username": user.0, "password": user.1}}),
            )
            .await;
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }
}

/// containerd on a fresh root under a directory of its own; killed and the
/// directory removed on drop.
pub struct Containerd {
    dir: PathBuf,
    sock: PathBuf,
    daemon: Child,
}

impl Containerd {
    /// Starts containerd with its root, state, socket and log under `dir`, and
    /// waits (up to 20 s) for its socket.
    pub fn start(dir: &Path) -> Result<Containerd, String> {
        let bin = ["/usr/bin/containerd", "/usr/sbin/containerd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("containerd is not installed")?;
        std::fs::create_dir_all(dir).unwrap();
        let sock = dir.join("containerd.sock");
        let mut cfg = std::fs::File::create(dir.join("config.toml")).unwrap();
        writeln!(cfg, "version = 2").unwrap();
        let daemon = Command::new(bin)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state")
            .arg(dir.join("state"))
            .arg("--address")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
            .spawn()
            .map_err(|e| format!("containerd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !sock.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Containerd {
            dir: dir.to_owned(),
            sock,
            daemon,
        })
    }

    /// `ctr` talking to this daemon, with no proxy (the registry is on loopback).
    pub fn ctr(&self) -> Command {
        let mut c = Command::new(require("ctr"));
        c.arg("--address").arg(&self.sock);
        for v in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            c.env_remove(v);
        }
        c
    }

    /// `ctr images pull` (fetch and unpack) of `reference` over plain HTTP as
    /// `user`, into `snapshotter`: how long it took, or what ctr said.
    pub fn pull(
        &self,
        reference: &str,
        user: (&str, &str),
        snapshotter: &str,
    ) -> Result<Duration, String> {
        let t = Instant::now();
        let out = self
            .ctr()
            .args([
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
            ])
            .arg("--user")
            .arg(format!("{}:{}", user.0, user.1))
            .arg(reference)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(t.elapsed())
        } else {
            Err(format!(
                "ctr images pull failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// The daemon's peak RSS, MiB.
    pub fn peak_rss(&self) -> u64 {
        rss(&self.daemon.id().to_string()).1
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        // Its snapshots are overlay mounts no more, but may hold read-only dirs.
        remove(&self.dir);
    }
}
