//! The background checks spread across replicas: two servers on one PostgreSQL
//! database check each stored credential once per period between them, not once
//! each. Its own test binary, so that the process's preflight counter (shared by
//! in-process servers) counts only these two replicas' checks.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::json;

/// The preflights this process ran, all codes together (`berth_preflights_total`).
async fn preflights(base: &str) -> u64 {
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("berth_preflights_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_check_each_credential_once_per_period_between_them() {
    const PERIOD: Duration = Duration::from_secs(3);
    const SERVICES: u64 = 3;
    let registry = Registry::start();
    // Slow answers (a check takes a second or so), so that a replica ticking
    // while the other checks would check too, were the credential not claimed.
    let slow = berth_testkit::hostile::Throttle::start(&registry.url(), 600);
    let url = slow.authority();
    let (_dirs, mut config_a, mut config_b) = replica_configs(&url);
    config_a.checks.interval = PERIOD;
    config_b.checks.interval = PERIOD;
    let a = Server::start(config_a).await;
    let b = Server::start(config_b).await;
    let alice = a.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let start = Instant::now();
    for name in ["api", "worker", "cron"] {
        let (s, v) = alice
            .post(
                "/v1/projects/web/services",
                json!({"name": name, "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    tokio::time::sleep(Duration::from_secs(14)).await;
    let saved = SERVICES; // each save ran one preflight
    let checks = preflights(&a.base()).await - saved;
    let elapsed = start.elapsed();
    // A credential is due a period after its last check (the save's preflight
    // counts as one): at most elapsed / period checks each, whoever runs them.
    // Two replicas each checking on their own would be about twice that.
    let most = SERVICES * (elapsed.as_secs_f64() / PERIOD.as_secs_f64()).floor() as u64;
    println!(
        "{checks} checks of {SERVICES} credentials in {:.1} s with a {} s period (at most {most})",
        elapsed.as_secs_f64(),
        PERIOD.as_secs()
    );
    assert!(checks >= SERVICES, "every credential was checked: {checks}");
    assert!(
        checks <= most,
        "{checks} checks: more than once per period per credential"
    );
    // Both replicas see the same health.
    let (_, v) = b
        .client(&alice.token)
        .get("/v1/projects/web/services/api")
        .await;
    assert_eq!(v["registry"]["health"]["status"], "ok", "{v}");
    a.running.stop().await;
    b.running.stop().await;
}
