//! Deployments end to end: a private image from the token-auth registry, pulled,
//! run with runc, its output in the logs; failures with their codes; terminate.

mod common;

use std::time::{Duration, Instant};

use berth_testkit::hostile::manifest_answer;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn logs_containing(c: &Client, path: &str, needle: &str) -> String {
    logs_containing_within(c, path, needle, 15).await
}

/// `?follow=true` streams the log: reads chunks until `needle` appeared, then
/// hangs up (the stream stays open while the container runs).
async fn followed_until(c: &Client, path: &str, needle: &str) -> String {
    use futures_util::StreamExt;
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}{path}?follow=true", c.base))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains(needle) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .unwrap_or_else(|_| panic!("{needle:?} never streamed"));
    text
}

/// Whether a process whose command line holds `marker` (a test's own unique
/// `sleep N`) runs: read from /proc, so that it does not depend on procps being
/// installed (a missing `pgrep` made every `while running(..)` pass at once).
fn running(marker: &str) -> bool {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| {
            let line: Vec<u8> = c.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
            String::from_utf8_lossy(&line).contains(marker)
        })
}

/// Alice, with her project `web` and its service `api` running `image` from the
/// registry at `url` with the `ci` credentials.
async fn alice_with_api(server: &Server, url: &str, image: &str) -> Client {
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": image, "registry": registry_body(url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    alice
}

/// A server on a fresh data dir, with [`alice_with_api`] running `team/app:web`.
async fn serve_api(url: &str) -> (tempfile::TempDir, Server, Client) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, url, None)).await;
    let alice = alice_with_api(&server, url, "team/app:web").await;
    (dir, server, alice)
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_a_private_image_and_terminate_it() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let marker = format!("sleep {}", 1000 + rand::random::<u16>() as u32);
    registry.push_busybox("web", &format!("echo hello from berth; {marker}"));

    let (dir, server, alice) = serve_api(&url).await;

    // PENDING_DEPLOY -> DEPLOYING -> DEPLOYED, the output in the logs.
    let (s, d) = alice
        .post("/v1/projects/web/services/api/deployments", json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    assert_eq!(d["status"], "PENDING_DEPLOY");
    let path = format!(
        "/v1/projects/web/services/api/deployments/{}",
        d["id"].as_str().unwrap()
    );
    let d = wait_for_end(&alice, &path).await;
    let logs = logs_containing(&alice, &format!("{path}/logs"), "hello from berth").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}\n{logs}");
    assert!(d["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(
        logs.contains("manifest: team/app:web resolves to"),
        "{logs}"
    );
    assert!(logs.contains("MB/s"), "{logs}");
    assert!(!logs.contains(PASSWORD));
    assert!(running(&marker), "the container runs");
    let streamed = followed_until(&alice, &format!("{path}/logs"), "hello from berth").await;
    assert!(streamed.starts_with('['), "from the first line: {streamed}");
    assert_eq!(
        alice.get("/v1/projects/web/services/api").await.1["status"],
        "DEPLOYED"
    );

    // A wrong tag, a wrong password: FAILED with their codes and the registry's words.
    for (name, image, password, code) in [
        ("badtag", "team/app:nope", PASSWORD, "manifest_not_found"),
        ("badpw", "team/app:web", "wrong-password", "auth_failed"),
    ] {
        let (s, v) = alice
            .post(
                "/v1/projects/web/services",
                json!({"name": name, "image": image, "registry": registry_body(&url, "ci", password), "save_without_verifying": true}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (_, d) = alice
            .post(
                &format!("/v1/projects/web/services/{name}/deployments"),
                json!({}),
            )
            .await;
        let path = format!(
            "/v1/projects/web/services/{name}/deployments/{}",
            d["id"].as_str().unwrap()
        );
        let d = wait_for_end(&alice, &path).await;
        assert_eq!(
            (d["status"].as_str(), d["failure_code"].as_str()),
            (Some("FAILED"), Some(code)),
            "{d}"
        );
        let logs = logs_containing(&alice, &format!("{path}/logs"), "FAILED").await;
        assert!(!logs.contains("wrong-password"));
    }

    // The deployed image is kept: unpacked once, its one layer too (the layer's
    // blob went straight into it), its config in the blob cache.
    assert_eq!(unpacked(dir.path()), (1, 1));
    assert_eq!(
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .count(),
        1
    );

    // Terminate: the process stops, the secret is gone.
    let (s, v) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "TERMINATED");
    assert_eq!(v["registry"], Value::Null);
    let deadline = Instant::now() + Duration::from_secs(15);
    while running(&marker) {
        assert!(
            Instant::now() < deadline,
            "the container still runs after terminate"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing runs the image any more: the worker collects its unpacked image,
    // its layers and its blobs.
    let blobs = || {
        std::fs::read_dir(dir.path().join("blobs/sha256"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while unpacked(dir.path()) != (0, 0) || blobs() > 0 {
        assert!(
            Instant::now() < deadline,
            "images and layers {:?} and blobs {} left after terminate",
            unpacked(dir.path()),
            blobs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.running.stop().await;
}

/// How many containers of the server with data dir `dir` run, as runc says.
fn running_count(dir: &std::path::Path) -> usize {
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(dir.join("runc"))
        .args(["list", "--format", "json"])
        .output()
        .expect("runc list");
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list.as_array()
        .map(|l| l.iter().filter(|c| c["status"] == "running").count())
        .unwrap_or(0)
}

async fn deploy(c: &Client, service: &str) -> (String, Value) {
    let (s, d) = c
        .post(
            &format!("/v1/projects/web/services/{service}/deployments"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let path = format!(
        "/v1/projects/web/services/{service}/deployments/{}",
        d["id"].as_str().unwrap()
    );
    let d = wait_for_end(c, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    (path, d)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A new deploy replaces the running one (`REMOVED`, its container stopped); a
/// server restart leaves the container running and the new server adopts it
/// (follows its log, stops it on terminate).
#[tokio::test(flavor = "multi_thread")]
async fn a_redeploy_replaces_and_a_restarted_server_adopts() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    // Ends on SIGTERM (a shell as PID 1 would otherwise ignore it).
    registry.push_busybox(
        "web",
        "trap 'exit 0' TERM; echo up; while true; do sleep 1; done",
    );

    let (dir, server, alice) = serve_api(&url).await;
    let marker = dir.path();

    let (first, _) = deploy(&alice, "api").await;
    until("the first container runs", || running_count(marker) == 1).await;
    let (second, _) = deploy(&alice, "api").await;
    assert_eq!(alice.get(&first).await.1["status"], "REMOVED");
    assert_eq!(alice.get(&second).await.1["status"], "DEPLOYED");
    // The old one is stopped once the new one runs.
    until("one container runs after the redeploy", || {
        running_count(marker) == 1
    })
    .await;
    logs_containing(&alice, &format!("{first}/logs"), "stopped; the container").await;
    let (s, list) = alice.get("/v1/projects/web/services/api/deployments").await;
    assert_eq!(s, StatusCode::OK);
    let statuses: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(statuses, ["DEPLOYED", "REMOVED"], "{list}");

    // Restart: the container outlives the server; the next server takes it up.
    let token = alice.token.clone();
    server.running.stop().await;
    assert_eq!(
        running_count(marker),
        1,
        "the container outlived the server"
    );
    assert!(
        !marker.join("unsynced-since-boot").exists(),
        "a clean stop leaves the blob cache synced"
    );
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.client(&token);
    logs_containing(&alice, &format!("{second}/logs"), "taken up again").await;
    // The infrastructure log, then the output, pumped again by the new server.
    let streamed = followed_until(&alice, &format!("{second}/logs"), "] up\n").await;
    assert!(streamed.contains("taken up again"), "{streamed}");
    assert_eq!(alice.get(&second).await.1["status"], "DEPLOYED");

    // The machine went down: the container stopped while no server ran. The next
    // start restarts the service with a new deployment (by berth, audited), which
    // replaces the stopped one.
    server.running.stop().await;
    let second_id = second.rsplit('/').next().unwrap();
    let killed = std::process::Command::new("runc")
        .arg("--root")
        .arg(marker.join("runc"))
        .args(["kill", &format!("berth-{second_id}"), "KILL"])
        .status()
        .unwrap();
    assert!(killed.success());
    until("the killed container stops", || running_count(marker) == 0).await;
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.client(&token);
    logs_containing(&alice, &format!("{second}/logs"), "restarts the service").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let third = loop {
        let (_, list) = alice.get("/v1/projects/web/services/api/deployments").await;
        let list = list.as_array().unwrap().clone();
        if list.len() == 3 && list[0]["status"] == "DEPLOYED" && list[1]["status"] == "REMOVED" {
            break list[0]["id"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no restart: {list:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(third, second_id);
    until("the restarted container runs", || {
        running_count(marker) == 1
    })
    .await;
    let (_, events) = alice.get("/v1/projects/web/audit-events").await;
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "berth"
                && e["action"] == "deployment.create"
                && e["metadata"]["replaces"] == second_id),
        "{events}"
    );

    let (s, _) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(running_count(marker), 0, "terminate waited for the stop");
    let third = format!("/v1/projects/web/services/api/deployments/{third}");
    assert_eq!(alice.get(&third).await.1["status"], "REMOVED");
    server.running.stop().await;
}

/// Two replicas on one PostgreSQL: whichever runs the deployment, its log (the
/// container's output included) reads the same through either one, and a
/// terminate through the other one stops the container where it runs.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_serve_each_others_logs_and_stops() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox(
        "web",
        "trap 'exit 0' TERM; echo output of the container; while true; do sleep 1; done",
    );
    let ([dir_a, dir_b], config_a, config_b) = replica_configs(&url);
    let a = Server::start(config_a).await;
    let b = Server::start(config_b).await;
    let alice_a = a.admin().new_user("alice").await;
    let alice_b = b.client(&alice_a.token);
    alice_a.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice_a
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:web", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let (path, d) = deploy(&alice_a, "api").await;
    let id = d["id"].as_str().unwrap();
    let log = |dir: &std::path::Path| dir.join("deployments").join(id).join("log");
    let (runs_here, other) = match (log(dir_a.path()).exists(), log(dir_b.path()).exists()) {
        (true, false) => (dir_a.path(), &alice_b),
        (false, true) => (dir_b.path(), &alice_a),
        both => panic!("the log should be on exactly one replica: {both:?}"),
    };
    for c in [&alice_a, &alice_b] {
        logs_containing(c, &format!("{path}/logs"), "output of the container").await;
    }
    let streamed = followed_until(other, &format!("{path}/logs"), "output of the container").await;
    assert!(streamed.contains("DEPLOYED"), "{streamed}");

    // Terminated through the replica that does not run it: stopped where it runs.
    assert_eq!(running_count(runs_here), 1);
    let (s, _) = other.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    until("the container stops on its own replica", || {
        running_count(runs_here) == 0
    })
    .await;
    a.running.stop().await;
    b.running.stop().await;
}

/// Tenant B names, from an anonymous registry of its own, the manifest of tenant
/// A's private image (digests are in deploy logs): the cached blobs and the
/// unpacked image are A's, and B's registry cannot serve them, so B gets nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_cannot_run_another_tenants_cached_image() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let secret = format!("private output of tenant A {}", rand::random::<u32>());
    let img = berth_testkit::fixtures::busybox(&format!("echo {secret}; sleep 1237"));
    img.push(&registry.reg, "team/app:web");
    let manifest = img.blob(&img.digest);

    // B's registry: anonymous, A's manifest under B's name, no blob at all, yet
    // a HEAD of any blob the manifest names answers 200 with its right length.
    let digest = img.digest.clone();
    let (_, config_digest, layers) = img.parts();
    let sizes: std::collections::HashMap<String, usize> = layers
        .iter()
        .chain([&config_digest])
        .map(|d| (d.clone(), img.blob(d).len()))
        .collect();
    let thief = thief_registry(manifest, digest, move |m, d| match sizes.get(d) {
        Some(n) if m == axum::http::Method::HEAD => axum::http::Response::builder()
            .header("content-length", *n)
            .header("docker-content-digest", d)
            .body(axum::body::Body::empty())
            .unwrap(),
        _ => empty_answer(axum::http::StatusCode::NOT_FOUND),
    });
    let dir = tempfile::tempdir().unwrap();
    let insecure = format!("{url},{}", thief.server.authority());
    let server = Server::start(config(dir.path(), Db::Sqlite, &insecure, None)).await;

    // A deploys its private image: the blobs are in the cache, unpacked.
    let alice = alice_with_api(&server, &url, "team/app:web").await;
    let a_path = start_deploy(&alice, "web", "api").await;
    assert_eq!(wait_for_end(&alice, &a_path).await["status"], "DEPLOYED");
    logs_containing(&alice, &format!("{a_path}/logs"), &secret).await;

    // B points a service at its own registry and deploys.
    let image = format!("{}/team/app:web", thief.server.authority());
    let (_bob, d, logs) = bob_deploys(&server, &image).await;
    assert_eq!(d["status"], "FAILED", "{d}\n{logs}");
    assert_eq!(d["failure_code"], "manifest_not_found", "{d}");
    assert!(
        logs.contains("HTTP 404 for blob"),
        "the registry's answer is in the log:\n{logs}"
    );
    assert!(!logs.contains(&secret), "A's output reached B:\n{logs}");
    assert!(
        thief
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.starts_with("GET ")),
        "a HEAD from a registry the bytes never came from is not taken as proof: {:?}",
        thief.requests.lock().unwrap()
    );
    // A still runs; terminate it.
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// The sandbox, as a container sees it and as the host sees it: a user namespace
/// (not the identity map; the container's root owns its files as the mapped id on
/// the host), seccomp in filter mode refusing `unshare`, a pids limit that stops a
/// fork bomb while the server keeps serving, and a memory limit whose OOM kill is
/// said in the log.
#[tokio::test(flavor = "multi_thread")]
async fn containers_run_unprivileged_in_a_sandbox_with_limits() {
    use std::os::unix::fs::MetadataExt;
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox(
        "box",
        "cat /proc/self/uid_map; grep Seccomp: /proc/self/status; \
         if unshare -U true 2>/dev/null; then echo UNSHARE-ALLOWED; else echo UNSHARE-REFUSED; fi; \
         echo root-was-here > /written-by-root; \
         i=0; while [ $i -lt 200 ]; do (sleep 1000 &) 2>/dev/null; i=$((i+1)); done; \
         echo FORKS-DONE; sleep 1000",
    );
    registry.push_busybox(
        "hog",
        "echo HOGGING; x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo SURVIVED",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.sandbox.pids = 64;
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    // The hog's own limit (48 MiB) over the server's default (512 MiB).
    for (name, resources) in [("box", json!({})), ("hog", json!({"memory_mb": 48}))] {
        let (s, v) = alice
            .post("/v1/projects/web/services", json!({"name": name, "image": format!("team/app:{name}"), "registry": registry_body(&url, "ci", PASSWORD), "resources": resources}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["resources"], resources);
    }

    let path = start_deploy(&alice, "web", "box").await;
    let id = path.rsplit('/').next().unwrap().to_owned();
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let logs = logs_containing(&alice, &format!("{path}/logs"), "FORKS-DONE").await;
    let map_line = logs
        .lines()
        .filter_map(|l| l.split_once("] "))
        .map(|(_, text)| text)
        .find(|l| l.trim_start().starts_with('0'))
        .unwrap_or_else(|| panic!("no uid_map in:\n{logs}"));
    let fields: Vec<&str> = map_line.split_whitespace().collect();
    assert_eq!(fields, ["0", "1000000000", "65536"], "{logs}");
    assert!(logs.contains("Seccomp:\t2"), "{logs}");
    assert!(logs.contains("UNSHARE-REFUSED"), "{logs}");
    // The fork bomb hit the pids limit; the server still answers at once.
    let t = Instant::now();
    assert_eq!(server.client("").get("/healthz").await.0, StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(2));
    // This container's own pids cgroup (`/berth/berth-<id>`, cgroup v1 or v2), not
    // whichever berth container another run left on the machine.
    let pids = [
        format!("/sys/fs/cgroup/pids/berth/berth-{id}/pids.current"),
        format!("/sys/fs/cgroup/berth/berth-{id}/pids.current"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .unwrap_or_else(|| panic!("no pids cgroup for berth-{id}"));
    let max = [
        format!("/sys/fs/cgroup/pids/berth/berth-{id}/pids.max"),
        format!("/sys/fs/cgroup/berth/berth-{id}/pids.max"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .unwrap_or_default();
    assert_eq!(max.trim(), "64", "the service's pids limit is its cgroup's");
    assert!(
        pids.trim().parse::<i64>().unwrap() <= 64,
        "pids.current {pids}"
    );
    // The file the container's root wrote belongs, on the host, to the mapped id.
    let written = files_under(&server.dir)
        .into_iter()
        .find(|p| p.ends_with("upper/written-by-root"))
        .expect("the container's write is in its upper directory");
    assert_eq!(std::fs::metadata(&written).unwrap().uid(), 1_000_000_000);
    // The data dir lets a container's root pass to its own bundle and nothing more.
    use std::os::unix::fs::PermissionsExt;
    for (name, mode) in [
        ("", 0o711),
        ("berth.db", 0o600),
        ("master.key", 0o600),
        ("admin-token", 0o600),
        ("blobs", 0o700),
        ("images", 0o700),
        ("deployments", 0o711),
    ] {
        let got = std::fs::metadata(server.dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(got, mode, "{name:?} is {got:o}");
    }
    // The generated spec says all of it.
    let spec: Value = serde_json::from_slice(
        &std::fs::read(
            server
                .dir
                .join(format!("deployments/{id}/bundle/config.json")),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], 1_000_000_000u64);
    assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 64);
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], 512u64 << 20);
    assert_eq!(spec["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(spec["process"]["noNewPrivileges"], true);

    // The memory hog is killed, and its log says why.
    let hog = start_deploy(&alice, "web", "hog").await;
    wait_for_end(&alice, &hog).await;
    let logs = logs_containing(&alice, &format!("{hog}/logs"), "out of memory").await;
    assert!(logs.contains("48 MiB"), "{logs}");
    assert!(!logs.contains("SURVIVED"), "{logs}");

    for s in ["box", "hog"] {
        alice
            .delete(&format!("/v1/projects/web/services/{s}"))
            .await;
    }
    server.running.stop().await;
}

/// A registry that trickles a blob a byte a second holds one worker slot until the
/// deployment's deadline, never the queue: another tenant's service on a healthy
/// registry deploys meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickling_registry_times_out_and_stalls_no_one_else() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox("web", "echo healthy; sleep 1238");
    let slow = trickling(&berth_testkit::fixtures::busybox("echo never; sleep 1"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        dir.path(),
        Db::Sqlite,
        &format!("{url},{}", slow.authority()),
        None,
    );
    cfg.deploys.deadline = Duration::from_secs(15);
    let server = Server::start(cfg).await;
    let (bob, alice) = (
        server.admin().new_user("bob").await,
        server.admin().new_user("alice").await,
    );
    bob.post("/v1/projects", json!({"name": "slow"})).await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let image = format!("{}/team/slow:v1", slow.authority());
    let (s, v) = bob
        .post(
            "/v1/projects/slow/services",
            json!({"name": "app", "image": image}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:web", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    // The slow one first, then the healthy one.
    let slow_path = start_deploy(&bob, "slow", "app").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let (_, slow_now) = bob.get(&slow_path).await;
    assert_eq!(
        slow_now["status"], "DEPLOYING",
        "the slow pull is still going: {slow_now}"
    );

    let d = wait_for_end(&bob, &slow_path).await;
    assert_eq!(
        (d["status"].as_str(), d["failure_code"].as_str()),
        (Some("FAILED"), Some("timeout")),
        "{d}"
    );
    let message = d["failure_message"].as_str().unwrap();
    assert!(message.contains("15 s deadline"), "{message}");
    assert!(
        message.contains(&slow.authority()),
        "names the registry: {message}"
    );
    assert!(
        message.contains("blob sha256:") && message.contains(" of "),
        "names the blob and the bytes: {message}"
    );
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// A registry serving `img` as `team/slow:v1`: its config at once, its layer a
/// byte a second.
fn trickling(img: &berth_testkit::TestImage) -> berth_testkit::hostile::FakeServer {
    use axum::routing::{any, get};
    let digest = img.digest.clone();
    let (manifest, config_digest, layers) = img.parts();
    let config_blob = img.blob(&config_digest);
    let layer = img.blob(&layers[0]);
    berth_testkit::hostile::FakeServer::start(move |_| {
        axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/v2/team/slow/manifests/{reference}",
                any(move || {
                    let answer = manifest_answer(manifest.clone(), digest.clone());
                    async move { answer }
                }),
            )
            .route(
                "/v2/team/slow/blobs/{digest}",
                any(move |axum::extract::Path(d): axum::extract::Path<String>| {
                    let (config, layer, config_digest) =
                        (config_blob.clone(), layer.clone(), config_digest.clone());
                    async move {
                        if d == config_digest {
                            return axum::body::Body::from(config);
                        }
                        // A byte a second.
                        let bytes = futures_util::stream::unfold(0usize, move |i| {
                            let layer = layer.clone();
                            async move {
                                if i > 0 {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                                (i < layer.len())
                                    .then(|| (Ok::<_, std::io::Error>(vec![layer[i]]), i + 1))
                            }
                        });
                        axum::body::Body::from_stream(bytes)
                    }
                }),
            )
    })
}

/// Terminating a service stops its pull in flight: within 2 s the deployment is
/// `REMOVED` saying why, its slot is free (the only one: another deploy runs at
/// once) and nothing it had begun to write is left.
#[tokio::test(flavor = "multi_thread")]
async fn terminate_stops_a_pull_in_flight() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox("web", "echo healthy; sleep 1239");
    let slow = trickling(&berth_testkit::fixtures::busybox("echo never; sleep 1"));
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        dir.path(),
        Db::Sqlite,
        &format!("{url},{}", slow.authority()),
        None,
    );
    cfg.deploys.concurrency = 1;
    cfg.deploys.deadline = Duration::from_secs(120);
    let server = Server::start(cfg).await;
    let bob = server.admin().new_user("bob").await;
    bob.post("/v1/projects", json!({"name": "slow"})).await;
    let image = format!("{}/team/slow:v1", slow.authority());
    let (s, v) = bob
        .post(
            "/v1/projects/slow/services",
            json!({"name": "app", "image": image}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let slow_path = start_deploy(&bob, "slow", "app").await;
    // The layer is on its way (a byte a second).
    let staging = dir.path().join("images/layers/.staging");
    let in_staging = || std::fs::read_dir(&staging).map_or(0, |d| d.count());
    until("the layer's unpack began", || in_staging() > 0).await;
    let (_, d) = bob.get(&slow_path).await;
    assert_eq!(d["status"], "DEPLOYING", "{d}");

    let terminated = Instant::now();
    let (s, v) = bob.delete("/v1/projects/slow/services/app").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d = loop {
        let (_, d) = bob.get(&slow_path).await;
        if d["status"] != "DEPLOYING" || terminated.elapsed() > Duration::from_secs(10) {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(d["status"], "REMOVED", "{d}");
    eprintln!(
        "REMOVED {} ms after the terminate",
        terminated.elapsed().as_millis()
    );
    assert!(
        d["failure_message"]
            .as_str()
            .is_some_and(|m| m.contains("terminated")),
        "{d}"
    );
    // The slot is free: the server's only one runs another deploy now.
    let alice = alice_with_api(&server, &url, "team/app:web").await;
    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    eprintln!(
        "the next deploy DEPLOYED {} ms after the terminate",
        terminated.elapsed().as_millis()
    );
    assert!(
        terminated.elapsed() < Duration::from_secs(20),
        "the slot was held {:?}",
        terminated.elapsed()
    );
    let (_, logs) = bob.get(&format!("{slow_path}/logs")).await;
    assert!(
        logs.as_str()
            .unwrap_or_default()
            .contains("REMOVED: the service was terminated"),
        "{logs}"
    );
    // Nothing half-written is left: no staged layer, no partial blob.
    until("the staged layer is removed", || in_staging() == 0).await;
    let tmp = std::fs::read_dir(dir.path().join("blobs/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "a partial blob was left");
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// DEPLOYED means the process runs; one that fails within the start window fails
/// its deployment with the exit code and its last lines.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_fails_in_its_start_window_fails_the_deploy() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox(
        "crash",
        "echo starting up; echo config missing >&2; sleep 1; exit 3",
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.deploys.start_window = Duration::from_secs(3);
    let server = Server::start(cfg).await;
    let alice = alice_with_api(&server, &url, "team/app:crash").await;
    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(
        (d["status"].as_str(), d["failure_code"].as_str()),
        (Some("FAILED"), Some("runtime_error")),
        "{d}"
    );
    let message = d["failure_message"].as_str().unwrap();
    assert!(message.contains("exit code 3"), "{message}");
    assert!(
        message.contains("config missing"),
        "its last lines: {message}"
    );
    server.running.stop().await;
}

/// Unmounts a test's small filesystem however the test ends.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The disk fills while a layer unpacks (a data dir on a 24 MiB tmpfs, a layer
/// that expands to 40 MiB): the deployment fails saying so, the half-unpacked image
/// is removed, the server keeps serving, and once there is room the next deploy works.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_fails_the_deploy_cleanly_and_the_next_one_works() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let zeros = vec![0u8; 40 << 20]; // compresses to almost nothing, expands to 40 MiB
    berth_testkit::TestImage::build(
        &[("bin/busybox", &busybox), ("big", &zeros)],
        &["/bin/busybox", "sh", "-c", "echo fits now; sleep 1239"],
    )
    .push(&registry.reg, "team/app:big");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=24m,mode=0711", "tmpfs"])
        .arg(&data)
        .status()
        .expect("mount runs (the tests run as root, as runc needs)");
    assert!(mounted.success(), "mounting a tmpfs for the data dir");
    let _unmount = Mounted(data.clone());

    let server = Server::start(config(&data, Db::Sqlite, &url, None)).await;
    let alice = alice_with_api(&server, &url, "team/app:big").await;
    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "FAILED", "{d}");
    let message = d["failure_message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains("no space left"),
        "the reason: {d}"
    );
    assert_eq!(
        unpacked(&data),
        (0, 0),
        "the half-unpacked image is removed"
    );
    assert_eq!(server.client("").get("/healthz").await.0, StatusCode::OK);

    // Room again: the next deploy works.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=256m"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(grown.success());
    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    logs_containing(&alice, &format!("{path}/logs"), "fits now").await;
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// The service read-back, once `done` holds for it (or the test fails after 20 s).
async fn service_until(c: &Client, service: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = c.get(&format!("/v1/projects/web/services/{service}")).await;
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "never reached: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A container that exits after its start window is restarted by the default
/// `on-failure` policy with growing delays (200, 400, 800 ms here), counted in the
/// read-back with its last exit; under `never` it stays stopped.
#[tokio::test(flavor = "multi_thread")]
async fn crashing_containers_restart_with_backoff_unless_the_policy_says_never() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox("crashloop", "echo up; sleep 0.5; exit 3");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.deploys.start_window = Duration::from_millis(200);
    cfg.deploys.restart_backoff.initial = Duration::from_millis(200);
    let server = Server::start(cfg).await;
    let alice = alice_with_api(&server, &url, "team/app:crashloop").await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "job", "image": "team/app:crashloop", "restart_policy": "never",
                   "registry": registry_body(&url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(
        (s, v["restart_policy"].as_str()),
        (StatusCode::CREATED, Some("never")),
        "{v}"
    );
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "bad", "image": "team/app:crashloop", "restart_policy": "sometimes"}),
        )
        .await;
    assert!(s.is_client_error(), "{s} {v}");

    let api = start_deploy(&alice, "web", "api").await;
    let job = start_deploy(&alice, "web", "job").await;
    for path in [&api, &job] {
        assert_eq!(wait_for_end(&alice, path).await["status"], "DEPLOYED");
    }
    let v = service_until(&alice, "api", |v| v["restarts"].as_u64() >= Some(3)).await;
    assert_eq!(v["restart_policy"], "on-failure");
    assert_eq!(v["last_exit"]["code"], 3, "{v}");
    let log = logs_containing(&alice, &format!("{api}/logs"), "restarted (restart 3)").await;
    for (n, ms) in [(1, 200), (2, 400), (3, 800)] {
        assert!(
            log.contains(&format!("the container exited (exit code 3); restart {n} in {ms} ms (restart policy on-failure)")),
            "{log}"
        );
    }
    // Every run's output is kept: "up" once per start.
    let output = logs_containing(&alice, &format!("{api}/logs"), "] up").await;
    assert!(output.matches("] up").count() >= 3, "{output}");

    let v = service_until(&alice, "job", |v| !v["last_exit"].is_null()).await;
    assert_eq!(
        (v["restarts"].as_u64(), &v["last_exit"]["code"]),
        (Some(0), &json!(3))
    );
    logs_containing(
        &alice,
        &format!("{job}/logs"),
        "restart policy never: left stopped",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, v) = alice.get("/v1/projects/web/services/job").await;
    assert_eq!(v["restarts"], 0, "never restarted: {v}");
    let (_, d) = alice.get(&job).await;
    assert_eq!(d["status"], "DEPLOYED", "stopped, not failed: {d}");

    // A new deploy counts from zero.
    let again = start_deploy(&alice, "web", "api").await;
    assert_eq!(wait_for_end(&alice, &again).await["status"], "DEPLOYED");
    let (_, v) = alice.get("/v1/projects/web/services/api").await;
    assert!(v["restarts"].as_u64() < Some(3), "{v}");
    alice.delete("/v1/projects/web/services/api").await;
    alice.delete("/v1/projects/web/services/job").await;
    server.running.stop().await;
}

/// A container that writes as fast as it can: its output rotates under the cap
/// (three files of 1 MiB here), `?tail=` and `?since=` read only what they ask for.
#[tokio::test(flavor = "multi_thread")]
async fn a_chatty_container_keeps_its_output_under_the_cap() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox("chatty", "yes berth-says-yes");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.deploys.logs = berth_runtime::log::Rotation {
        max_bytes: 1 << 20,
        max_files: 3,
    };
    let server = Server::start(cfg).await;
    let alice = alice_with_api(&server, &url, "team/app:chatty").await;
    let path = start_deploy(&alice, "web", "api").await;
    assert_eq!(wait_for_end(&alice, &path).await["status"], "DEPLOYED");
    let id = path.rsplit('/').next().unwrap();
    let ddir = dir.path().join("deployments").join(id);
    // Written through the three files more than once.
    until("the output to rotate twice", || {
        ddir.join("output.2").exists()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut total = 0;
    for entry in std::fs::read_dir(&ddir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("output") && name != "output.fifo" {
            // Rotation goes on while this reads: a file renamed away since the
            // listing is counted under its new name or not at all.
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{name}: {e}"),
            };
            assert!(len <= 1 << 20, "{name}: {len} bytes");
            assert!(
                ["output", "output.1", "output.2"].contains(&name.as_str()),
                "{name}"
            );
            total += len;
        }
    }
    assert!(total <= 3 << 20, "{total} bytes of output kept");

    let (_, v) = alice.get(&format!("{path}/logs?tail=3")).await;
    let text = v.as_str().unwrap().to_owned();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().all(|l| l.ends_with("] berth-says-yes")),
        "{text}"
    );
    let (_, v) = alice.get(&format!("{path}/logs")).await;
    let all = v.as_str().unwrap();
    assert!(
        all.starts_with('[') && all.contains("deployment "),
        "the infrastructure log first"
    );
    assert!(
        all.len() as u64 <= (3 << 20) + (64 << 10),
        "{} bytes",
        all.len()
    );
    let (_, v) = alice
        .get(&format!("{path}/logs?since=2999-01-01T00:00:00Z"))
        .await;
    assert_eq!(v.as_str(), Some(""), "nothing is that new");
    let (_, v) = alice.get(&format!("{path}/logs?since=2s&tail=2")).await;
    assert_eq!(v.as_str().unwrap().lines().count(), 2, "{v}");
    let (s, v) = alice.get(&format!("{path}/logs?since=yesterday")).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_since"))
    );
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// PostgreSQL goes away while two deployments pull (every connection to the
/// database terminated, new ones refused for 4 s, as a restart looks to its
/// clients): the workers' pool reconnects, both deployments end `DEPLOYED` (their
/// ends recorded once the database is back), and the next deploy works.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_restart_mid_deploy_leaves_nothing_deploying() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    registry.push_busybox(
        "web",
        "trap 'exit 0' TERM; echo serving; while true; do sleep 1; done",
    );
    // The registry through a 400 kB/s link: the 1.2 MB pull outlasts the outage's start.
    let slow = berth_testkit::hostile::Throttle::start(&registry.url(), 400_000);
    let url = slow.authority();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Db::Postgres, &url, None);
    let database = cfg.database_url.clone();
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    for name in ["api", "worker"] {
        let (s, v) = alice
            .post(
                "/v1/projects/web/services",
                json!({"name": name, "image": "team/app:web", "registry": registry_body(&url, "ci", PASSWORD)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let paths = [
        start_deploy(&alice, "web", "api").await,
        start_deploy(&alice, "web", "worker").await,
    ];
    for p in &paths {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alice.get(p).await.1["status"] != "DEPLOYING" {
            assert!(Instant::now() < deadline, "never claimed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::task::spawn_blocking(move || {
        berth_testkit::Postgres::shared().outage(&database, Duration::from_secs(4))
    })
    .await
    .unwrap();
    for p in &paths {
        let d = wait_for_end(&alice, p).await;
        assert_eq!(d["status"], "DEPLOYED", "{d}");
    }
    let again = start_deploy(&alice, "web", "api").await;
    assert_eq!(wait_for_end(&alice, &again).await["status"], "DEPLOYED");
    for name in ["api", "worker"] {
        alice
            .delete(&format!("/v1/projects/web/services/{name}"))
            .await;
    }
    server.running.stop().await;
}

/// Rotating credentials on a live service (`PUT .../registry` with `redeploy`):
/// the new credentials are checked and saved, a deployment with them starts, and
/// the running container keeps serving until the new one runs; the audit log says
/// it was a rotation.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_redeploys_without_downtime() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let old = format!("sleep {}", 1000 + rand::random::<u16>() as u32);
    let new = format!("sleep {}", 1000 + rand::random::<u16>() as u32);
    registry.push_busybox("web", &format!("echo old; {old}"));
    registry.push_busybox("rotated", &format!("echo new; {new}"));
    let (_dir, server, alice) = serve_api(&url).await;
    let (old_path, _) = deploy(&alice, "api").await;
    assert!(running(&old));

    // The admin credentials instead of ci's, and the image's new tag with them.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"username": "admin", "password": "admin-pass-1", "image": "team/app:rotated", "redeploy": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registry"]["username"], "ad***");
    assert_eq!(v["registry"]["verified"], true);
    assert_eq!(v["deployment"]["status"], "PENDING_DEPLOY", "{v}");
    let new_path = format!(
        "/v1/projects/web/services/api/deployments/{}",
        v["deployment"]["id"].as_str().unwrap()
    );
    // Until the new deployment runs, the old one is live and its container serves.
    loop {
        let (_, d) = alice.get(&new_path).await;
        if d["status"] == "DEPLOYED" {
            break;
        }
        assert_ne!(d["status"], "FAILED", "{d}");
        let old_live = alice.get(&old_path).await.1["status"] == "DEPLOYED" && running(&old);
        if !old_live {
            // Only because the new one ran between the two reads.
            let (_, d) = alice.get(&new_path).await;
            assert_eq!(
                d["status"], "DEPLOYED",
                "the old one stopped before the new one ran: {d}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(running(&new));
    assert_eq!(alice.get(&old_path).await.1["status"], "REMOVED");
    until("the old container stops", || !running(&old)).await;

    let (_, events) = alice.get("/v1/projects/web/audit-events").await;
    let events = events.as_array().unwrap();
    assert_eq!(events[0]["action"], "deployment.create");
    assert_eq!(events[0]["metadata"]["rotation"], true);
    assert_eq!(events[1]["action"], "service.update");
    assert_eq!(events[1]["metadata"]["rotation"], true);
    assert_eq!(events[1]["metadata"]["preflight"], "passed");

    // Without `redeploy`, a save starts nothing.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"username": "ci", "password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v.get("deployment").is_none(), "{v}");
    assert_eq!(alice.get(&new_path).await.1["status"], "DEPLOYED");
    let (_, terminated) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(terminated["status"], "TERMINATED");
    until("the new container stops", || !running(&new)).await;
    server.running.stop().await;
}
