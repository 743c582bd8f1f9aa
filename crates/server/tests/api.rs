//! Every route against a real server, real registries, on SQLite and PostgreSQL.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

async fn api_suite(db: Db) {
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), db, &url, None)).await;
    let admin = server.admin();

    // Health, OpenAPI.
    let (s, _) = server.client("").get("/healthz").await;
    assert_eq!(s, StatusCode::OK);
    let (_, doc) = server.client("").get("/openapi.json").await;
    for path in [
        "/v1/users",
        "/v1/projects",
        "/v1/projects/{p}/members",
        "/v1/preflight",
        "/v1/projects/{p}/services",
        "/v1/projects/{p}/services/{s}",
        "/v1/projects/{p}/services/{s}/registry",
        "/v1/projects/{p}/audit-events",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }

    // Users and tokens.
    let alice = admin.new_user("alice").await;
    let bob = admin.new_user("bob").await;
    let (s, v) = alice.post("/v1/users", json!({"name": "mallory"})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden"))
    );
    let (s, v) = admin.post("/v1/users", json!({"name": "alice"})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (s, v) = admin.post("/v1/users", json!({"name": "Not A Slug"})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_name"))
    );
    let (s, v) = server
        .client("")
        .post("/v1/projects", json!({"name": "x"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = server
        .client("berth_not-a-token")
        .post("/v1/projects", json!({"name": "x"}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Projects, isolation, members.
    let (s, v) = alice.post("/v1/projects", json!({"name": "web"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["role"], "owner");
    let (s, v) = bob.post("/v1/projects", json!({"name": "web"})).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("conflict"))
    );
    let (s, v) = bob.get("/v1/projects/web/services").await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "foreign project is 404"
    );
    let (s, _) = bob.get("/v1/projects/nope/services").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = alice
        .post("/v1/projects/web/members", json!({"user": "bob"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = bob
        .post("/v1/projects/web/members", json!({"user": "alice"}))
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "members are not owners");
    let (s, _) = alice
        .post("/v1/projects/web/members", json!({"user": "ghost"}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Malformed bodies.
    let (s, v) = alice
        .post("/v1/projects/web/services", json!({"name": "api"}))
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request")),
        "{v}"
    );
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "x", "extra": 1}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request")),
        "{v}"
    );
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "Bad:Image:"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_image")),
        "{v}"
    );

    // A failing preflight stores nothing.
    let audit_before = alice
        .get("/v1/projects/web/audit-events")
        .await
        .1
        .as_array()
        .unwrap()
        .len();
    let (s, v) = alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", "wrong")}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["code"], "preflight_failed");
    assert_eq!(v["preflight"]["code"], "auth_failed");
    assert_eq!(v["preflight"]["ok"], false);
    assert!(
        !v.to_string().contains("wrong\""),
        "the password is not echoed"
    );
    assert_eq!(
        alice.get("/v1/projects/web/services/api").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        alice
            .get("/v1/projects/web/audit-events")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        audit_before
    );

    // A passing one saves, masked.
    let (s, v) = bob
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["registry"],
        json!({"registry_url": url, "username": "c***", "password_set": true, "verified": true, "updated_at": v["registry"]["updated_at"]})
    );
    assert_eq!(v["status"], "CREATED");
    let (s, v) = alice.get("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["registry"]["username"], "c***");
    assert!(!v.to_string().contains(PASSWORD));
    let (s, _) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);

    // Overridden: saved unverified.
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "later", "image": "team/app:v1", "registry": registry_body(&url, "ci", "not-yet"), "save_without_verifying": true}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["registry"]["verified"], false);
    // Unparseable input is refused even with the override.
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "bad", "image": "team/app:v1", "registry": registry_body("ftp://x", "ci", "p"), "save_without_verifying": true}),
        )
        .await;
    assert_eq!(
        (s, v["preflight"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_url")),
        "{v}"
    );

    // PUT: omitted fields are kept; the stored password is used for the same registry.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"image": "team/app:v2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["image"], "team/app:v2");
    assert_eq!(v["registry"]["verified"], true);
    // ...but never sent to another registry.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"registry_url": "ghcr.io"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("password_required")),
        "{v}"
    );
    // A failing update keeps what was stored.
    let before = alice.get("/v1/projects/web/services/api").await.1;
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"password": "wrong"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(alice.get("/v1/projects/web/services/api").await.1, before);
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/later/registry",
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registry"]["verified"], true);
    // A service without credentials: PUT needs everything.
    alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "plain", "image": "team/app:v1"}),
        )
        .await;
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/plain/registry",
            json!({"username": "ci"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_field"))
    );

    // Remove, terminate.
    let (s, v) = alice
        .delete("/v1/projects/web/services/later/registry")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["registry"], serde_json::Value::Null);
    let (s, v) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "TERMINATED");
    assert_eq!(v["registry"], serde_json::Value::Null, "the secret is gone");
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("service_terminated"))
    );
    let (s, v) = alice.get("/v1/projects/web/services").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v.as_array().unwrap().len(), 3);

    // The audit log: actions, preflight outcome, no secret, paging, filter.
    let (_, events) = alice.get("/v1/projects/web/audit-events?limit=500").await;
    let actions: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "project.create",
        "project.member.add",
        "service.create",
        "service.update",
        "service.registry.remove",
        "service.terminate",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let creates: Vec<&serde_json::Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "service.create")
        .collect();
    assert!(creates
        .iter()
        .any(|e| e["metadata"]["preflight"] == "passed" && e["actor"] == "bob"));
    assert!(creates
        .iter()
        .any(|e| e["metadata"]["preflight"] == "overridden"));
    assert!(!events.to_string().contains(PASSWORD));
    let (_, page) = alice.get("/v1/projects/web/audit-events?limit=2").await;
    let last = page[1]["id"].as_i64().unwrap();
    let (_, next) = alice
        .get(&format!(
            "/v1/projects/web/audit-events?limit=2&before={last}"
        ))
        .await;
    assert!(next[0]["id"].as_i64().unwrap() < last);
    let (_, only) = alice
        .get("/v1/projects/web/audit-events?service=later")
        .await;
    assert!(only
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["service"] == "later"));
    let (s, _) = server
        .client(&admin_token_of(&server))
        .get("/v1/projects/web/audit-events")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the admin is not a member either");

    // Test Connection: results, then the rate limit.
    let body = json!({"registry_url": url, "username": "ci", "password": PASSWORD, "image": "team/app:v1"});
    let (s, v) = alice.post("/v1/preflight", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["code"].as_str(), v["digest"].as_str()),
        (Some(true), Some("ok"), Some(registry.digest.as_str()))
    );
    let (s, v) = alice
        .post(
            "/v1/preflight",
            json!({"registry_url": url, "image": "team/app:v1"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::OK, Some("auth_failed"))
    );
    let (s, v) = alice
        .post(
            "/v1/preflight",
            json!({"registry_url": url, "username": "ci", "image": "x"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing_field"))
    );
    for _ in 0..3 {
        assert_eq!(
            alice.post("/v1/preflight", body.clone()).await.0,
            StatusCode::OK
        );
    }
    let (s, v) = alice.post("/v1/preflight", body.clone()).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert_eq!(
        bob.post("/v1/preflight", body.clone()).await.0,
        StatusCode::OK,
        "per user"
    );

    server.running.stop().await;
}

fn admin_token_of(server: &Server) -> String {
    server.admin_token.clone()
}

#[tokio::test]
async fn api_on_sqlite() {
    api_suite(Db::Sqlite).await;
}

#[tokio::test]
async fn api_on_postgres() {
    api_suite(Db::Postgres).await;
}
