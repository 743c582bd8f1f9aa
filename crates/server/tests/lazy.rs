//! Deploys that start before their image is pulled: eStargz images pushed to the
//! real token-auth registry, their layers mounted through FUSE (the kernel's,
//! `/dev/fuse`), the containers run with runc reading lazily fetched files; the
//! background pull that turns the layers into cached ones; an altered chunk
//! refused; the full pull where FUSE cannot be had; and a tenant that names
//! another's lazy layers getting none of their bytes.

mod common;

use std::time::{Duration, Instant};

use berth_testkit::estargz::{self, Encoder, Entry};
use berth_testkit::TestImage;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// An image of two eStargz layers: the host's busybox (prefetched), then the
/// app's files in chunks of 64 KiB (`tamper`: a chunk altered behind its
/// `chunkDigest`); it runs `sh -c script`.
fn lazy_image(script: &str, files: &[Entry], tamper: Option<(&str, usize)>) -> TestImage {
    let base = Encoder {
        prefetch: Some(3),
        ..Default::default()
    }
    .encode(&berth_testkit::fixtures::estargz_busybox());
    let app = Encoder {
        chunk_size: 64 * 1024,
        tamper: tamper.map(|(f, n)| (f.to_owned(), n)),
        ..Default::default()
    }
    .encode(files);
    estargz::image(
        &[(&base, base.annotations()), (&app, app.annotations())],
        &["/bin/sh", "-c", script],
    )
}

/// 2 MiB of noise: 32 chunks.
fn big() -> Vec<u8> {
    berth_testkit::noise(25, 2 << 20)
}

/// Alice's project `web` with service `api` running `team/app:{tag}` from `url`.
async fn alice_with(server: &Server, url: &str, tag: &str) -> Client {
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": format!("team/app:{tag}"), "registry": registry_body(url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    alice
}

/// The FUSE mounts under `dir` (from this process's mount table).
fn lazy_mounts(dir: &std::path::Path) -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()) && l.contains(" - fuse berth-estargz "))
        .count()
}

/// A container reads files of a layer it did not wait for; the background pull
/// then makes the layers local (the waterfall says when), the next deploy finds
/// the image unpacked, and a terminate leaves no mount.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_reads_lazily_fetched_files_and_the_layers_turn_local() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let data = big();
    let sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&data[..]))
    };
    let marker = format!("sleep {}", 3000 + rand::random::<u16>() as u32);
    lazy_image(
        &format!("cat /app/hello.txt; echo; sha256sum /app/big.bin; {marker}"),
        &[
            Entry::dir("app"),
            Entry::file("app/hello.txt", b"hello from a lazy layer", 0o644),
            Entry::file("app/big.bin", &data, 0o644),
        ],
        None,
    )
    .push(&registry.reg, "team/app:lazy");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = alice_with(&server, &url, "lazy").await;

    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    let logs = logs_containing_within(&alice, &format!("{path}/logs"), &sum, 20).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}\n{logs}");
    assert!(logs.contains("lazy: 2 eStargz layers mounted"), "{logs}");
    assert!(logs.contains("hello from a lazy layer"), "{logs}");
    assert_eq!(lazy_mounts(dir.path()), 2, "{logs}");

    // The waterfall: what the container's reads fetched, then local.
    let logs =
        logs_containing_within(&alice, &format!("{path}/logs"), "background pull:", 30).await;
    assert!(
        logs.contains("the layers now read from the local image"),
        "{logs}"
    );
    let d = until_local(&alice, &path).await;
    let blobs = d["pull"]["blobs"].as_array().unwrap();
    let app = &blobs[2]["lazy"];
    // Its 32 chunks, unless the background pull made it local before the
    // container's reads were over (the exact counts are the runtime's tests').
    assert!(app["on_demand_bytes"].as_u64().unwrap() >= 64 << 10, "{d}");
    assert!(app["on_demand_chunks"].as_u64().unwrap() >= 1, "{d}");
    assert!(
        blobs[1]["lazy"]["prefetch_bytes"].as_u64().unwrap() > 0,
        "{d}"
    );
    assert!(
        app["local_ms"].as_u64().unwrap() >= app["mounted_ms"].as_u64().unwrap(),
        "{d}"
    );
    assert_eq!(
        unpacked(dir.path()),
        (1, 2),
        "the image is unpacked in the store"
    );

    // The next deploy is an ordinary one, from the unpacked image.
    let next = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &next).await;
    let logs = logs_containing_within(&alice, &format!("{next}/logs"), &sum, 20).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}\n{logs}");
    assert!(logs.contains("already unpacked"), "{logs}");
    assert!(!logs.contains("lazy:"), "{logs}");

    // The first deployment was replaced: its mounts went with it.
    let t = Instant::now();
    while lazy_mounts(dir.path()) > 0 && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lazy_mounts(dir.path()), 0);
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// Polls deployment `path` until every lazy blob of its pull is local.
async fn until_local(c: &Client, path: &str) -> Value {
    let t = Instant::now();
    loop {
        let (_, d) = c.get(path).await;
        let local = d["pull"]["blobs"].as_array().is_some_and(|b| {
            b.iter()
                .filter(|b| !b["lazy"].is_null())
                .all(|b| b["lazy"]["local_ms"].is_u64())
        });
        if local {
            return d;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "never local: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// FUSE mounts live in the server process: after a restart, a container that
/// started lazily is not adopted (its reads would fail) but stopped, its dead
/// mounts detached, and replaced by a new deployment (whatever the restart
/// policy: it did not exit).
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_replaces_a_lazily_started_container() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    lazy_image(
        "trap 'exit 0' TERM; cat /app/hello.txt; echo; while true; do sleep 1; done",
        &[
            Entry::dir("app"),
            Entry::file("app/hello.txt", b"hello again", 0o644),
        ],
        None,
    )
    .push(&registry.reg, "team/app:lazy");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    // `never`, and replaced even so: berth stopped it, it did not exit.
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:lazy", "restart_policy": "never",
                   "registry": registry_body(&url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let first = start_deploy(&alice, "web", "api").await;
    assert_eq!(wait_for_end(&alice, &first).await["status"], "DEPLOYED");
    let logs = logs_containing_within(&alice, &format!("{first}/logs"), "hello again", 20).await;
    assert!(logs.contains("lazy: 2 eStargz layers mounted"), "{logs}");

    let token = alice.token.clone();
    server.running.stop().await;
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.client(&token);
    let logs = logs_containing_within(
        &alice,
        &format!("{first}/logs"),
        "stopped; the container and its root filesystem were removed",
        30,
    )
    .await;
    assert!(
        logs.contains("lazily mounted layers went with the server before it"),
        "{logs}"
    );
    assert!(!logs.contains("taken up again"), "{logs}");
    let logs = logs_containing_within(&alice, &format!("{first}/logs"), "replaces it", 10).await;
    assert!(!logs.contains("left stopped"), "{logs}");
    let t = Instant::now();
    let second = loop {
        let (_, list) = alice.get("/v1/projects/web/services/api/deployments").await;
        let list = list.as_array().unwrap().clone();
        if list.len() == 2 && list[0]["status"] == "DEPLOYED" {
            break list[0]["id"].as_str().unwrap().to_owned();
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no restart: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let second = format!("/v1/projects/web/services/api/deployments/{second}");
    logs_containing_within(&alice, &format!("{second}/logs"), "hello again", 20).await;
    assert!(
        !dir.path()
            .join("deployments")
            .join(first.rsplit('/').next().unwrap())
            .join("lazy-layers")
            .exists(),
        "the dead mounts were detached and their directories removed"
    );
    alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(lazy_mounts(dir.path()), 0);
    server.running.stop().await;
}

/// A chunk whose bytes do not match its `chunkDigest`: the container's read
/// fails (EIO) and its neighbours read fine; the log says which chunk.
#[tokio::test(flavor = "multi_thread")]
async fn an_altered_chunk_fails_the_read_and_is_logged() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let data = big();
    let marker = format!("sleep {}", 3000 + rand::random::<u16>() as u32);
    lazy_image(
        &format!(
            "if cat /app/big.bin > /dev/null; then echo read whole; else echo read refused; fi; \
             dd if=/app/big.bin bs=65536 skip=8 count=1 2>/dev/null | wc -c; {marker}"
        ),
        &[Entry::dir("app"), Entry::file("app/big.bin", &data, 0o644)],
        Some(("app/big.bin", 3)),
    )
    .push(&registry.reg, "team/app:tampered");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = alice_with(&server, &url, "tampered").await;

    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    let logs = logs_containing_within(&alice, &format!("{path}/logs"), "65536", 20).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}\n{logs}");
    assert!(logs.contains("read refused"), "{logs}");
    assert!(!logs.contains("read whole"), "{logs}");
    assert!(
        logs.contains(
            "lazy read failed: chunk at 196608 of app/big.bin does not match its chunkDigest"
        ),
        "{logs}"
    );
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// Where FUSE cannot be mounted, an eStargz image is pulled in full, and the log
/// says why.
#[tokio::test(flavor = "multi_thread")]
async fn without_fuse_an_estargz_image_is_pulled_in_full() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let marker = format!("sleep {}", 3000 + rand::random::<u16>() as u32);
    lazy_image(
        &format!("cat /app/hello.txt; echo; {marker}"),
        &[
            Entry::dir("app"),
            Entry::file("app/hello.txt", b"hello, pulled in full", 0o644),
        ],
        None,
    )
    .push(&registry.reg, "team/app:lazy");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), Db::Sqlite, &url, None);
    config.deploys.fuse_device = "/nonexistent/fuse";
    let server = Server::start(config).await;
    let alice = alice_with(&server, &url, "lazy").await;

    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    let logs =
        logs_containing_within(&alice, &format!("{path}/logs"), "hello, pulled in full", 20).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}\n{logs}");
    assert!(
        logs.contains("eStargz image, but FUSE cannot be mounted (/nonexistent/fuse: No such file or directory"),
        "{logs}"
    );
    assert!(logs.contains("unpacked in"), "{logs}");
    assert!(!logs.contains("lazy:"), "{logs}");
    assert_eq!(lazy_mounts(dir.path()), 0);
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}

/// Tenant B names tenant A's lazy layers (their digests and TOC digests) in a
/// manifest of its own registry, which has A's config but none of A's layers:
/// B's lazy start fetches through B's session only, so it gets no chunk, and
/// the full pull after it finds no proof for A's cached blobs.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_gets_no_byte_of_another_tenants_lazy_layers() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    let secret = format!("private data of tenant A {}", rand::random::<u32>());
    let img = lazy_image(
        "cat /app/secret.txt; echo; sleep 1239",
        &[
            Entry::dir("app"),
            Entry::file("app/secret.txt", secret.as_bytes(), 0o644),
        ],
        None,
    );
    img.push(&registry.reg, "team/app:lazy");

    // B's manifest: A's, with an annotation of its own (so another digest: not
    // A's unpacked image), served with A's config bytes; every layer byte 404.
    let (manifest, config_digest, _) = img.parts();
    let mut m: Value = serde_json::from_slice(&manifest).unwrap();
    m["annotations"] = json!({"org.example.thief": "yes"});
    let manifest = serde_json::to_vec(&m).unwrap();
    let digest = {
        use sha2::Digest;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&manifest)))
    };
    let config_bytes = img.blob(&config_digest);
    let thief = thief_registry(manifest, digest, move |_, d| match d == config_digest {
        true => axum::http::Response::builder()
            .header("content-length", config_bytes.len())
            .body(axum::body::Body::from(config_bytes.clone()))
            .unwrap(),
        false => empty_answer(axum::http::StatusCode::NOT_FOUND),
    });
    let dir = tempfile::tempdir().unwrap();
    let insecure = format!("{url},{}", thief.server.authority());
    let server = Server::start(config(dir.path(), Db::Sqlite, &insecure, None)).await;

    // A deploys lazily: A's chunks are fetched and cached in A's mounts.
    let alice = alice_with(&server, &url, "lazy").await;
    let a_path = start_deploy(&alice, "web", "api").await;
    assert_eq!(wait_for_end(&alice, &a_path).await["status"], "DEPLOYED");
    let a_logs = logs_containing_within(&alice, &format!("{a_path}/logs"), &secret, 20).await;
    assert!(
        a_logs.contains("lazy: 2 eStargz layers mounted"),
        "{a_logs}"
    );

    let image = format!("{}/team/app:lazy", thief.server.authority());
    let (_bob, d, logs) = bob_deploys(&server, &image).await;
    assert_eq!(d["status"], "FAILED", "{d}\n{logs}");
    assert!(logs.contains("lazy start failed"), "{logs}");
    assert!(logs.contains("HTTP 404 for blob"), "{logs}");
    assert!(!logs.contains(&secret), "A's data reached B:\n{logs}");
    let asked = thief.requests.lock().unwrap().clone();
    assert!(
        asked.iter().any(|r| r.contains("bytes=")),
        "B's lazy start asked B's registry for the layer's bytes: {asked:?}"
    );
    alice.delete("/v1/projects/web/services/api").await;
    server.running.stop().await;
}
