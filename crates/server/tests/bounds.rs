//! What one client may make the server hold: series in `/metrics` (none of a
//! label a request chooses), followed log streams (per user), credential reads
//! (per project token, per minute), and a project token's life.

mod common;

use common::*;
use rand::distributions::{Alphanumeric, Uniform};
use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// The metrics are the process's: the test counting series runs alone (write),
/// the others together (read), so no other test's traffic is counted.
static METRICS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The series `/metrics` holds now: its lines that are not comments.
async fn series(server: &Server) -> (usize, String) {
    let r = http()
        .get(format!("{}/metrics", server.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    let n = text.lines().filter(|l| !l.starts_with('#')).count();
    (n, text)
}

fn random_word(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A method token no server knows: ten letters.
fn random_method() -> String {
    let letters = Uniform::new_inclusive(b'A', b'Z');
    rand::thread_rng()
        .sample_iter(letters)
        .take(10)
        .map(char::from)
        .collect()
}

/// One round of what the issue's reproduction sent, and more: made-up methods on
/// a route that exists, made-up paths (some in a route's shape) with every
/// method, unauthenticated. The statuses are checked, so the round did reach
/// the routes.
async fn hostile_round(server: &Server, words: &mut Vec<String>) {
    let http = http();
    let base = server.base();
    let send = |method: Method, path: String| {
        let req = http.request(method, format!("{base}{path}"));
        async move { req.send().await.unwrap().status() }
    };
    let odd = ["FOO", "get", "PROPFIND", "M-SEARCH", "BREW"];
    for i in 0..600 {
        let m = if i % 2 == 0 {
            let m = random_method();
            words.push(m.clone());
            m
        } else {
            odd[i % odd.len()].to_owned()
        };
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(
            send(method, "/healthz".into()).await,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
    let methods = [Method::GET, Method::POST, Method::DELETE, Method::OPTIONS];
    for i in 0..600 {
        let word = random_word(12).to_ascii_lowercase();
        words.push(word.clone());
        let method = if i % 5 == 0 {
            Method::from_bytes(random_method().as_bytes()).unwrap()
        } else {
            methods[i % methods.len()].clone()
        };
        let (path, want) = match i % 3 {
            0 => (
                format!("/{word}/{}", random_word(30)),
                StatusCode::NOT_FOUND,
            ),
            1 => (
                format!("/v1/{word}?{}", random_word(8)),
                StatusCode::NOT_FOUND,
            ),
            // A route's shape: the label is its template, the name is nowhere.
            _ => (
                format!("/v1/projects/{word}/services/{word}"),
                StatusCode::UNAUTHORIZED,
            ),
        };
        let got = send(method.clone(), path.clone()).await;
        let allowed = matches!(method, Method::GET | Method::DELETE);
        let want = if want == StatusCode::UNAUTHORIZED && !allowed {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            want
        };
        assert_eq!(got, want, "{method} {path}");
    }
}

#[tokio::test]
async fn odd_methods_and_paths_add_no_series_to_metrics() {
    let _alone = METRICS.write().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, "", None)).await;
    // The scrape's own series first (a request is counted once answered).
    series(&server).await;
    let (before, _) = series(&server).await;
    let mut words = Vec::new();
    hostile_round(&server, &mut words).await;
    let (first, _) = series(&server).await;
    hostile_round(&server, &mut words).await;
    hostile_round(&server, &mut words).await;
    let (third, text) = series(&server).await;
    eprintln!(
        "series: {before} before, {first} after round 1, {third} after round 3 ({} requests, {} bytes of text)",
        3 * 1200,
        text.len()
    );
    assert_eq!(first, third, "series grew after the first round:\n{text}");
    // Round 1 added only what one label set per (method class, route, status)
    // makes: two histograms (`other` and the standard methods on /healthz, and
    // the route template), a few counters.
    assert!(first - before < 200, "{before} -> {first}:\n{text}");
    for w in &words {
        assert!(!text.contains(w.as_str()), "{w} became a label:\n{text}");
    }
    for want in [
        r#"berth_http_requests_total{method="other",route="/healthz",status="405"}"#,
        r#"route="/v1/projects/{p}/services/{s}",status="401""#,
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
}

/// A server whose worker deploys nothing (deployments stay `PENDING_DEPLOY`, and
/// a follower of one waits for lines forever); `alice` owns `web` with service
/// `api` and one deployment of it, whose logs path this returns; `bob` is a member.
async fn following_fixture(dir: &std::path::Path) -> (Server, Client, Client, String) {
    let mut cfg = config(dir, Db::Sqlite, "", None);
    cfg.deploys.concurrency = 0;
    let server = Server::start(cfg).await;
    let admin = server.admin();
    let alice = admin.new_user("alice").await;
    let bob = admin.new_user("bob").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    alice
        .post("/v1/projects/web/members", json!({"user": "bob"}))
        .await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let deployment = start_deploy(&alice, "web", "api").await;
    (server, alice, bob, format!("{deployment}/logs?follow=true"))
}

async fn follow(c: &Client, path: &str) -> reqwest::Response {
    http()
        .get(format!("{}{path}", c.base))
        .bearer_auth(&c.token)
        .send()
        .await
        .unwrap()
}

/// 429 `rate_limited` with a `Retry-After` of whole seconds.
async fn assert_rate_limited(r: reqwest::Response) -> u64 {
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["code"], "rate_limited", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    retry
}

#[tokio::test]
async fn followed_logs_are_capped_per_user_and_a_closed_one_frees_its_place() {
    let _counted = METRICS.read().await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, alice, bob, path) = following_fixture(dir.path()).await;
    let mut open = Vec::new();
    for _ in 0..8 {
        let r = follow(&alice, &path).await;
        assert_eq!(r.status(), StatusCode::OK);
        open.push(r);
    }
    let retry = assert_rate_limited(follow(&alice, &path).await).await;
    assert!((1..=60).contains(&retry), "{retry}");
    // Reading without following is not capped, and the cap is alice's alone.
    let (s, _) = alice.get(path.trim_end_matches("?follow=true")).await;
    assert_eq!(s, StatusCode::OK);
    let bobs = follow(&bob, &path).await;
    assert_eq!(bobs.status(), StatusCode::OK);

    // One of alice's clients goes away: its place is given back.
    drop(open.pop());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let admitted = loop {
        let r = follow(&alice, &path).await;
        if r.status() == StatusCode::OK {
            break r;
        }
        assert_rate_limited(r).await;
        assert!(
            std::time::Instant::now() < deadline,
            "a closed follower's place was not given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_rate_limited(follow(&alice, &path).await).await;
    drop((admitted, open, bobs));
}

/// A server with the team registry; `alice` owns `web`, whose service `api`
/// holds the `ci` credentials.
async fn credentials_fixture(db: Db) -> (Registry, Server, Client, tempfile::TempDir) {
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), db, &url, None)).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (registry, server, alice, dir)
}

/// A new project token of `web`, made with `body`: (its value, the answer).
async fn token(alice: &Client, body: Value) -> (String, Value) {
    let (s, t) = alice.post("/v1/projects/web/tokens", body).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    (t["token"].as_str().unwrap().to_owned(), t)
}

async fn read_credentials(server: &Server, token: &str, registry: &str) -> reqwest::Response {
    http()
        .post(format!("{}/v1/registry-credentials", server.base()))
        .bearer_auth(token)
        .json(&json!({"registry": registry}))
        .send()
        .await
        .unwrap()
}

async fn credential_reads_are_rate_limited_per_token(db: Db) {
    let _counted = METRICS.read().await;
    let (registry, server, alice, _dir) = credentials_fixture(db).await;
    let (a, _) = token(&alice, json!({"name": "kubelet"})).await;
    let (b, _) = token(&alice, json!({"name": "ci"})).await;
    for i in 0..60 {
        let r = read_credentials(&server, &a, &registry.url()).await;
        assert_eq!(r.status(), StatusCode::OK, "read {i}");
    }
    let retry = assert_rate_limited(read_credentials(&server, &a, &registry.url()).await).await;
    assert_eq!(retry, 60);
    // Another token of the same project has its own budget.
    let r = read_credentials(&server, &b, &registry.url()).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Nothing past the budget was read: 61 reads audited, not 62.
    let (_, events) = alice.get("/v1/projects/web/audit-events?limit=500").await;
    let reads = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credentials.read")
        .count();
    assert_eq!(reads, 61, "{events}");
}

#[tokio::test]
async fn credential_reads_are_rate_limited_per_token_sqlite() {
    credential_reads_are_rate_limited_per_token(Db::Sqlite).await;
}

#[tokio::test]
async fn credential_reads_are_rate_limited_per_token_postgres() {
    credential_reads_are_rate_limited_per_token(Db::Postgres).await;
}

async fn an_expired_project_token_is_refused_like_an_unknown_one(db: Db) {
    let _counted = METRICS.read().await;
    let (registry, server, alice, _dir) = credentials_fixture(db).await;
    let r = alice
        .post(
            "/v1/projects/web/tokens",
            json!({"name": "never", "expires_in": 0}),
        )
        .await;
    assert_eq!(
        (r.0, r.1["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_expiry"))
    );
    let (short, made) = token(&alice, json!({"name": "short", "expires_in": 1})).await;
    let (_, forever) = token(&alice, json!({"name": "forever"})).await;
    let expires: chrono::DateTime<chrono::Utc> =
        made["expires_at"].as_str().unwrap().parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left <= chrono::Duration::seconds(1) && left > chrono::Duration::zero(),
        "{made}"
    );
    assert!(forever["expires_at"].is_null(), "{forever}");
    let (_, listed) = alice.get("/v1/projects/web/tokens").await;
    let listed: std::collections::BTreeMap<&str, &Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), &t["expires_at"]))
        .collect();
    assert_eq!(listed["short"], &made["expires_at"]);
    assert!(listed["forever"].is_null());

    let r = read_credentials(&server, &short, &registry.url()).await;
    assert_eq!(r.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let expired = read_credentials(&server, &short, &registry.url()).await;
    let unknown = read_credentials(&server, "berth_pt_not-a-token", &registry.url()).await;
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let expired: Value = expired.json().await.unwrap();
    assert_eq!(expired, unknown.json::<Value>().await.unwrap());
    // The refusal is audited, by the token, without its value.
    let (_, events) = alice.get("/v1/projects/web/audit-events").await;
    let refused: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credentials.refused")
        .collect();
    assert_eq!(refused.len(), 1, "{events}");
    assert_eq!(
        (&refused[0]["actor"], &refused[0]["metadata"]["reason"]),
        (&json!("token:short"), &json!("expired"))
    );
    assert!(!events.to_string().contains(&short));
}

#[tokio::test]
async fn an_expired_project_token_is_refused_like_an_unknown_one_sqlite() {
    an_expired_project_token_is_refused_like_an_unknown_one(Db::Sqlite).await;
}

#[tokio::test]
async fn an_expired_project_token_is_refused_like_an_unknown_one_postgres() {
    an_expired_project_token_is_refused_like_an_unknown_one(Db::Postgres).await;
}
