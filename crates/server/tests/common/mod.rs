//! Test harness for the API: real servers (in-process), real registries, both stores.
#![allow(dead_code, unused_imports)]

use berth_registry::NetworkPolicy;
use berth_server::{Config, Running};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

pub use berth_testkit::fixtures::PASSWORD;
/// The shared token registry (see `berth_testkit::fixtures`).
pub use berth_testkit::TeamRegistry as Registry;

#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Queues a deployment of `service` in `project`; its path.
pub async fn start_deploy(c: &Client, project: &str, service: &str) -> String {
    let base = format!("/v1/projects/{project}/services/{service}/deployments");
    let (s, d) = c.post(&base, json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    format!("{base}/{}", d["id"].as_str().unwrap())
}

/// Polls deployment `path` until it is `DEPLOYED` or `FAILED` (60 s at most).
pub async fn wait_for_end(c: &Client, path: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (s, v) = c.get(path).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if v["status"] == "DEPLOYED" || v["status"] == "FAILED" {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deployment stuck: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A random master key, base64 (for `BERTH_MASTER_KEY`).
pub fn random_key() -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

/// Two replicas' configs: one fresh PostgreSQL database, one master key
/// (`BERTH_MASTER_KEY`), a data dir each.
pub fn replica_configs(url: &str) -> ([tempfile::TempDir; 2], Config, Config) {
    let key = random_key();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = config(dirs[0].path(), Db::Postgres, url, Some(key.clone()));
    let mut b = config(dirs[1].path(), Db::Postgres, url, Some(key));
    b.database_url = a.database_url.clone();
    (dirs, a, b)
}

pub fn config(dir: &std::path::Path, db: Db, insecure: &str, master_key: Option<String>) -> Config {
    let database_url = match db {
        Db::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("berth.db").display()),
        Db::Postgres => berth_testkit::Postgres::shared().create_database(),
    };
    Config {
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url,
        master_key,
        registry: NetworkPolicy::from_lists("127.0.0.1/32", insecure).unwrap(),
        vault: Default::default(),
        advertise_url: None,
        sandbox: Default::default(),
        deploys: Default::default(),
        checks: Default::default(),
        runtime: Default::default(),
        traffic: berth_server::TrafficConfig {
            ingress_listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        },
        region: None,
    }
}

pub struct Server {
    pub running: Running,
    pub admin_token: String,
    pub dir: std::path::PathBuf,
    /// Removes this data dir's containers when the test fails.
    pub containers: Containers,
}

/// A test that fails leaves no container running: containers outlive their server
/// on purpose (`kill_on_drop(false)`, adopted by the next one), so a panicking test
/// removes the ones of its own data dir (a passing one terminated its services;
/// one that restarts a server on the same dir keeps them).
pub struct Containers(std::path::PathBuf);

impl Drop for Containers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let root = self.0.join("runc");
        let Ok(out) = std::process::Command::new("runc")
            .arg("--root")
            .arg(&root)
            .args(["list", "-q"])
            .output()
        else {
            return;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", id])
                .status();
        }
        // Their network namespaces (pasta quits with them).
        for ns in std::fs::read_dir(self.0.join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if ns.path().extension().is_none() {
                berth_runtime::network::Netns::at(&ns.path()).remove();
            }
        }
    }
}

impl Server {
    pub async fn start(config: Config) -> Self {
        let dir = config.data_dir.clone();
        let running = berth_server::start(config).await.expect("server starts");
        let admin_token = std::fs::read_to_string(dir.join("admin-token"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Server {
            running,
            admin_token,
            containers: Containers(dir.clone()),
            dir,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.running.addr)
    }

    pub fn client(&self, token: &str) -> Client {
        Client {
            base: self.base(),
            token: token.to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub fn admin(&self) -> Client {
        self.client(&self.admin_token)
    }
}

pub struct Client {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

impl Client {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !self.token.is_empty() {
            req = req.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }

    /// Creates a user (as admin) and returns a client for it.
    pub async fn new_user(&self, name: &str) -> Client {
        let (s, v) = self.post("/v1/users", json!({"name": name})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        Client {
            base: self.base.clone(),
            token: v["token"].as_str().unwrap().to_owned(),
            http: self.http.clone(),
        }
    }
}

pub fn registry_body(url: &str, user: &str, password: &str) -> Value {
    json!({"registry_url": url, "username": user, "password": password})
}

/// Every file under `dir`, recursively (to grep a data dir).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    // Regular files only, symlinks not followed (an unpacked image has its own),
    // a directory that went while we walked skipped.
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&e.path())),
            Ok(t) if t.is_file() => out.push(e.path()),
            _ => {}
        }
    }
    out
}

/// How many images, and how many layers (half-done ones included), the data dir
/// `dir` holds unpacked.
pub fn unpacked(dir: &std::path::Path) -> (usize, usize) {
    let images = dir.join("images");
    let list = |p: std::path::PathBuf| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let manifests = list(images.clone())
        .into_iter()
        .filter(|p| !p.ends_with("layers"))
        .count();
    let layers = list(images.join("layers"))
        .into_iter()
        .map(|shift| list(shift).len())
        .sum();
    (manifests, layers)
}

/// A tracing writer that keeps what was written (for the tests that grep the
/// logs for secrets).
#[derive(Clone, Default)]
pub struct Captured(pub std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Makes the test process's logging berth's own filter at TRACE (the most an
    /// operator can ask), written here. Once per test binary.
    pub fn at_trace() -> Captured {
        let logs = Captured::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            .with_env_filter(berth_server::log_filter("trace"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        logs
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The forms a password travels in: plain, and `user:password` and itself in
/// base64 (padded, unpadded, URL-safe), as a log or a file could hold them.
pub fn secret_forms(user: &str, password: &str) -> Vec<String> {
    use base64::Engine;
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    let mut out = vec![password.to_owned()];
    for e in engines {
        out.push(e.encode(format!("{user}:{password}")));
        out.push(e.encode(password));
    }
    out
}

/// Polls a deployment's logs at `path` until they contain `needle` (`seconds` at
/// most); the logs.
pub async fn logs_containing_within(c: &Client, path: &str, needle: &str, seconds: u64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        let (_, v) = c.get(path).await;
        let text = v
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string());
        if text.contains(needle) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{needle:?} not in logs:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// A registry of tenant B's own (anonymous, on loopback) that answers
/// `manifest`, as `digest`, for any reference of `team/app`, and each blob
/// request with `blob(method, digest)`; every blob request is kept as
/// `METHOD digest[ bytes=RANGE]` (the tests that name another tenant's content).
pub struct Thief {
    pub server: berth_testkit::hostile::FakeServer,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub fn thief_registry(
    manifest: Vec<u8>,
    digest: String,
    blob: impl Fn(&axum::http::Method, &str) -> axum::response::Response + Clone + Send + Sync + 'static,
) -> Thief {
    use axum::routing::{any, get};
    let requests: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let seen = requests.clone();
    let server = berth_testkit::hostile::FakeServer::start(move |_| {
        axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/v2/team/app/manifests/{reference}",
                any(move || {
                    let answer =
                        berth_testkit::hostile::manifest_answer(manifest.clone(), digest.clone());
                    async move { answer }
                }),
            )
            .route(
                "/v2/team/app/blobs/{digest}",
                any(
                    move |m: axum::http::Method,
                          headers: axum::http::HeaderMap,
                          axum::extract::Path(d): axum::extract::Path<String>| {
                        let range = headers
                            .get("range")
                            .map(|r| format!(" {}", r.to_str().unwrap_or_default()))
                            .unwrap_or_default();
                        seen.lock().unwrap().push(format!("{m} {d}{range}"));
                        let answer = blob(&m, &d);
                        async move { answer }
                    },
                ),
            )
    });
    Thief { server, requests }
}

/// A registry answer with no body: `status`.
pub fn empty_answer(status: axum::http::StatusCode) -> axum::response::Response {
    axum::http::Response::builder()
        .status(status)
        .body(axum::body::Body::empty())
        .unwrap()
}

/// Bob, a new user, deploys service `steal` of project `thief` from `image`;
/// the deployment as it ended, and its logs.
pub async fn bob_deploys(server: &Server, image: &str) -> (Client, Value, String) {
    let bob = server.admin().new_user("bob").await;
    bob.post("/v1/projects", json!({"name": "thief"})).await;
    let (s, v) = bob
        .post(
            "/v1/projects/thief/services",
            json!({"name": "steal", "image": image}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let path = start_deploy(&bob, "thief", "steal").await;
    let d = wait_for_end(&bob, &path).await;
    let (_, logs) = bob.get(&format!("{path}/logs")).await;
    let logs = logs.as_str().unwrap_or_default().to_owned();
    (bob, d, logs)
}
