//! What a service runs with, end to end with real runc: plain variables over the
//! image's, a secret as a variable and one as a 0400 file, command and args
//! replacing the image's, a volume whose data survives a redeploy and whose size
//! holds (ENOSPC inside the container), removed on terminate; bad settings
//! refused storing nothing; and region placement across two replicas on
//! PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

const API_KEY: &str = "k3y-for-the-api-Xq93";
const TLS_KEY: &str = "-----BEGIN KEY-----\nnot-really-a-key-Pz71\n-----END KEY-----\n";

/// What the container prints: each setting as it sees it (secrets by their
/// SHA-256 only, so that no value reaches the logs), then it waits. A missing
/// secret file says nothing on stderr: the shell writes its complaint in pieces
/// that interleave with the line the test reads.
const SCRIPT: &str = r#"
echo "GREETING=$GREETING"
echo "PATH=$PATH"
echo "args=$*"
echo "api=$(printf %s "$API_KEY" | busybox sha256sum | busybox cut -d' ' -f1)"
echo "tls_env=${TLS_KEY:-unset}"
echo "tls_file=$(busybox stat -c '%a %u' /run/secrets/TLS_KEY 2>/dev/null) $({ busybox sha256sum < /run/secrets/TLS_KEY; } 2>/dev/null | busybox cut -d' ' -f1)"
echo x >> /data/runs
echo "runs=$(busybox wc -l < /data/runs)"
err=$(busybox dd if=/dev/zero of=/data/fill bs=1M count=40 2>&1)
echo "dd=$? nospace=$(echo "$err" | busybox grep -c 'No space left')"
busybox rm -f /data/fill
echo "settings shown"
trap 'exit 0' TERM
while true; do busybox sleep 1; done
"#;

fn sha256(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

async fn logs_containing(c: &Client, path: &str, needle: &str) -> String {
    logs_containing_within(c, path, needle, 20).await
}

/// The line of `logs` that starts with `key=`, without the key.
fn seen<'a>(logs: &'a str, key: &str) -> &'a str {
    let prefix = format!("{key}=");
    logs.lines()
        .find_map(|l| {
            // Container lines are stamped: `[time] text`.
            let text = l.split_once("] ").map_or(l, |(_, t)| t);
            text.strip_prefix(&prefix)
        })
        .unwrap_or_else(|| panic!("no {key}= line in:\n{logs}"))
}

/// Waits until `dir` holds no file (a volume removed lazily may take a moment).
async fn until_empty(dir: &std::path::Path) {
    until_empty_within(dir, 15).await
}

async fn until_empty_within(dir: &std::path::Path, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !files_under(dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "left in {}: {:?}",
            dir.display(),
            files_under(dir)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_setting_reaches_the_container() {
    berth_testkit::require("runc");
    berth_testkit::require("mkfs.ext4");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox("cfg", "echo the image's own command; sleep 600");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;

    // Refused settings store nothing, and a secret's value is never echoed.
    for (bad, why) in [
        (
            json!({"volume": {"path": "/proc/x", "size_mb": 16}}),
            "/proc",
        ),
        (
            json!({"volume": {"path": "/data/../etc", "size_mb": 16}}),
            "..",
        ),
        (json!({"volume": {"path": "/", "size_mb": 16}}), "root"),
        (json!({"env": {"9LIVES": "x"}}), "POSIX"),
        (json!({"secrets": {"BAD NAME": API_KEY}}), "POSIX"),
        (json!({"secrets": {"K": format!("{API_KEY}\u{0}")}}), "NUL"),
        (json!({"region": "Mars Base"}), "region"),
    ] {
        let mut body = json!({"name": "cfg", "image": "team/app:cfg",
            "registry": registry_body(&url, "ci", PASSWORD)});
        body.as_object_mut()
            .unwrap()
            .extend(bad.as_object().unwrap().clone());
        let (s, v) = alice.post("/v1/projects/web/services", body).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["code"], "invalid_settings", "{v}");
        assert!(v["message"].as_str().unwrap().contains(why), "{v}");
        assert!(!v.to_string().contains(API_KEY), "{v}");
    }
    let (_, list) = alice.get("/v1/projects/web/services").await;
    assert_eq!(list, json!([]), "a refused create stores nothing");

    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "cfg", "image": "team/app:cfg", "registry": registry_body(&url, "ci", PASSWORD),
                "env": {"GREETING": "hello"},
                "secrets": {"API_KEY": API_KEY, "TLS_KEY": TLS_KEY}, "secret_files": ["TLS_KEY"],
                "command": ["/bin/busybox", "sh", "-c"], "args": [SCRIPT, "sh", "one", "two"],
                "volume": {"path": "/data", "size_mb": 16}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // The read-back: values of plain settings, names of secrets.
    assert_eq!(v["env"], json!({"GREETING": "hello"}));
    assert_eq!(v["volume"], json!({"path": "/data", "size_mb": 16}));
    let names: Vec<(&str, &str)> = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["as"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("API_KEY", "env"), ("TLS_KEY", "file")]);
    assert!(!v.to_string().contains(API_KEY) && !v.to_string().contains("not-really"));

    let path = start_deploy(&alice, "web", "cfg").await;
    let d = wait_for_end(&alice, &path).await;
    let logs = logs_containing(&alice, &format!("{path}/logs"), "settings shown").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}\n{logs}");
    assert_eq!(seen(&logs, "GREETING"), "hello");
    assert!(
        seen(&logs, "PATH").contains("/bin"),
        "the image's PATH stays"
    );
    assert_eq!(
        seen(&logs, "args"),
        "one two",
        "command and args replace the image's"
    );
    assert!(!logs.contains("the image's own command"));
    assert_eq!(seen(&logs, "api"), sha256(API_KEY));
    assert_eq!(
        seen(&logs, "tls_env"),
        "unset",
        "a file secret is no variable"
    );
    assert_eq!(
        seen(&logs, "tls_file"),
        format!("400 0 {}", sha256(TLS_KEY)),
        "0400, the container's user"
    );
    assert_eq!(seen(&logs, "runs"), "1");
    assert_eq!(
        seen(&logs, "dd"),
        "1 nospace=1",
        "writing past the volume's size fails with ENOSPC"
    );
    assert!(
        logs.contains(
            "settings: variables GREETING; secret variables API_KEY; secret files TLS_KEY"
        ),
        "{logs}"
    );
    assert!(!logs.contains(API_KEY) && !logs.contains("not-really"));

    // A change applies at the next deploy; the volume's data stays.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/cfg",
            json!({"env": {"GREETING": "changed"}, "secrets": {"TLS_KEY": null}, "redeploy": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["secrets"].as_array().unwrap().len(), 1, "{v}");
    let path = format!(
        "/v1/projects/web/services/cfg/deployments/{}",
        v["deployment"]["id"].as_str().unwrap()
    );
    let d = wait_for_end(&alice, &path).await;
    let logs = logs_containing(&alice, &format!("{path}/logs"), "settings shown").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}\n{logs}");
    assert_eq!(seen(&logs, "GREETING"), "changed");
    assert_eq!(
        seen(&logs, "runs"),
        "2",
        "the volume's data survived the redeploy"
    );
    assert!(
        seen(&logs, "tls_file").starts_with(' '),
        "the removed secret is gone"
    );

    // Audited by name, never by value.
    let (_, events) = alice.get("/v1/projects/web/audit-events").await;
    let text = events.to_string();
    assert!(
        text.contains("service.secret.remove") && text.contains("TLS_KEY"),
        "{text}"
    );
    assert!(!text.contains(API_KEY) && !text.contains("not-really"));

    // Terminate: the volume and its data go too.
    let (s, _) = alice.delete("/v1/projects/web/services/cfg").await;
    assert_eq!(s, StatusCode::OK);
    until_empty(&dir.path().join("volumes")).await;
    server.running.stop().await;
}

/// Two replicas on one PostgreSQL database, one in `eu` and one in `us`: a
/// service naming a region is run by that region's replica only; one naming a
/// region no replica serves stays pending and says why.
#[tokio::test(flavor = "multi_thread")]
async fn deployments_go_to_their_regions_replica() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox(
        "web",
        "trap 'exit 0' TERM; echo up; while true; do sleep 1; done",
    );
    let ([dir_eu, dir_us], mut config_eu, mut config_us) = replica_configs(&url);
    config_eu.region = Some("eu".into());
    config_us.region = Some("us".into());
    let eu = Server::start(config_eu).await;
    let us = Server::start(config_us).await;
    let alice = eu.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    for (name, region) in [("in-eu", "eu"), ("in-us", "us"), ("in-ap", "ap")] {
        let (s, v) = alice
            .post(
                "/v1/projects/web/services",
                json!({"name": name, "image": "team/app:web", "region": region,
                    "registry": registry_body(&url, "ci", PASSWORD),
                    "volume": {"path": "/data", "size_mb": 8}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["region"], region);
    }
    let runs_on = |id: &str| {
        let log = |d: &std::path::Path| d.join("deployments").join(id).join("log").exists();
        (log(dir_eu.path()), log(dir_us.path()))
    };
    for (name, expected) in [("in-eu", (true, false)), ("in-us", (false, true))] {
        // Several deploys each, so that a right answer is not luck.
        for _ in 0..3 {
            let path = start_deploy(&alice, "web", name).await;
            let d = wait_for_end(&alice, &path).await;
            assert_eq!(d["status"], "DEPLOYED", "{d}");
            assert_eq!(runs_on(d["id"].as_str().unwrap()), expected, "{name}");
        }
    }
    let path = start_deploy(&alice, "web", "in-ap").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, d) = alice.get(&path).await;
    assert_eq!(d["status"], "PENDING_DEPLOY", "{d}");
    assert!(
        d["message"]
            .as_str()
            .is_some_and(|m| m.contains("no replica serves region ap")),
        "{d}"
    );
    let (_, list) = alice
        .get("/v1/projects/web/services/in-ap/deployments")
        .await;
    assert_eq!(list[0]["message"], d["message"]);
    // Each volume is on its region's replica; one terminated through the other
    // replica is swept by its own (at its next repair pass, within 30 s).
    assert!(!files_under(&dir_eu.path().join("volumes")).is_empty());
    assert!(!files_under(&dir_us.path().join("volumes")).is_empty());
    let alice_us = us.client(&alice.token);
    for name in ["in-eu", "in-us", "in-ap"] {
        alice_us
            .delete(&format!("/v1/projects/web/services/{name}"))
            .await;
    }
    until_empty_within(&dir_us.path().join("volumes"), 15).await;
    until_empty_within(&dir_eu.path().join("volumes"), 45).await;
    eu.running.stop().await;
    us.running.stop().await;
}
