//! The background checks of stored credentials against the real token registry: a
//! password changed at the registry turns the service's credential health
//! `failing` (audited), and changed back turns it `ok`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn health_until(alice: &Client, want: &str, after: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = alice.get("/v1/projects/web/services/api").await;
        let h = v["registry"]["health"].clone();
        if h["status"] == want && h["checked_at"].as_str().unwrap_or_default() > after {
            return h;
        }
        assert!(Instant::now() < deadline, "health never {want}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_password_turns_the_credential_failing_before_any_deploy() {
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.checks.interval = Duration::from_secs(1);
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["registry"]["kind"], "basic");
    // Verified at the save: healthy from the start, then checked again.
    let saved = v["registry"]["health"].clone();
    assert_eq!(saved["status"], "ok", "{v}");
    let checked = health_until(&alice, "ok", saved["checked_at"].as_str().unwrap()).await;

    // The registry's admin revokes the password: the next check says so.
    registry.tokens.set_password("ci", "revoked-Pa55word");
    let failing = health_until(&alice, "failing", checked["checked_at"].as_str().unwrap()).await;
    assert_eq!(failing["code"], "auth_failed", "{failing}");
    // And put back: ok again.
    registry.tokens.set_password("ci", PASSWORD);
    health_until(&alice, "ok", failing["checked_at"].as_str().unwrap()).await;

    // Each change audited once, by berth, never with a secret.
    let (_, events) = alice.get("/v1/projects/web/audit-events").await;
    let health: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.registry.health")
        .collect();
    assert_eq!(health.len(), 2, "{events}");
    assert_eq!(health[1]["metadata"]["health"], "failing");
    assert_eq!(health[1]["metadata"]["code"], "auth_failed");
    assert_eq!(health[0]["metadata"]["health"], "ok");
    assert_eq!(health[0]["actor"], "berth");
    assert!(!events.to_string().contains(PASSWORD));
    server.running.stop().await;
}
