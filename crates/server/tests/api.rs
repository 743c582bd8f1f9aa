//! Every route against a real server and a real registry: one test per behaviour,
//! each on SQLite and on PostgreSQL (`api_test!` makes the pair).

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A server on `db` with the shared registry; `alice` owns project `web`, `bob`
/// is a user who is not (yet) a member.
struct Fx {
    registry: Registry,
    url: String,
    server: Server,
    admin: Client,
    alice: Client,
    bob: Client,
    _dir: tempfile::TempDir,
}

async fn fx(db: Db) -> Fx {
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), db, &url, None)).await;
    let admin = server.admin();
    let alice = admin.new_user("alice").await;
    let bob = admin.new_user("bob").await;
    let (s, v) = alice.post("/v1/projects", json!({"name": "web"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["role"], "owner");
    Fx {
        registry,
        url,
        server,
        admin,
        alice,
        bob,
        _dir: dir,
    }
}

/// `api_test!(name, |fx| { ... })`: the behaviour, on both databases.
macro_rules! api_test {
    ($name:ident, |$fx:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let fixture = fx(Db::Sqlite).await;
                let $fx: &Fx = &fixture;
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let fixture = fx(Db::Postgres).await;
                let $fx: &Fx = &fixture;
                $body
            }
        }
    };
}

fn code(r: &(StatusCode, Value)) -> (StatusCode, Option<&str>) {
    (r.0, r.1["code"].as_str())
}

async fn audit_len(c: &Client) -> usize {
    c.get("/v1/projects/web/audit-events?limit=500")
        .await
        .1
        .as_array()
        .unwrap()
        .len()
}

/// Creates `name` in `web` with the `ci` credentials, verified.
async fn create_with_creds(fx: &Fx, c: &Client, name: &str) -> Value {
    let (s, v) = c
        .post("/v1/projects/web/services", json!({"name": name, "image": "team/app:v1", "registry": registry_body(&fx.url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v
}

api_test!(health_and_the_openapi_document_need_no_token, |fx| {
    let anon = fx.server.client("");
    assert_eq!(anon.get("/healthz").await.0, StatusCode::OK);
    let (_, doc) = anon.get("/openapi.json").await;
    for path in [
        "/v1/users",
        "/v1/projects",
        "/v1/projects/{p}/members",
        "/v1/preflight",
        "/v1/projects/{p}/services",
        "/v1/projects/{p}/services/{s}",
        "/v1/projects/{p}/services/{s}/registry",
        "/v1/projects/{p}/audit-events",
        "/v1/projects/{p}/tokens",
        "/v1/projects/{p}/tokens/{name}",
        "/v1/registry-credentials",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
    // What needs no token says so (an empty requirement); everything else needs one.
    for open in ["/healthz", "/openapi.json"] {
        assert_eq!(doc["paths"][open]["get"]["security"], json!([{}]), "{open}");
    }
    assert_eq!(doc["security"], json!([{"bearer": []}]));
    assert!(doc["paths"]["/v1/projects"]["post"]["security"].is_null());
    // The schemas carry the rules the server applies.
    let schemas = &doc["components"]["schemas"];
    for s in ["CreateProject", "CreateUser", "CreateService"] {
        assert_eq!(
            schemas[s]["properties"]["name"]["pattern"], "^[a-z0-9][a-z0-9-]{0,62}$",
            "{s}"
        );
    }
    assert_eq!(
        schemas["ResourcesInput"]["properties"]["memory_mb"]["minimum"],
        16
    );
});

api_test!(only_the_admin_creates_users_and_tokens_are_checked, |fx| {
    let r = fx.alice.post("/v1/users", json!({"name": "mallory"})).await;
    assert_eq!(code(&r), (StatusCode::FORBIDDEN, Some("forbidden")));
    let r = fx.admin.post("/v1/users", json!({"name": "alice"})).await;
    assert_eq!(code(&r), (StatusCode::CONFLICT, Some("conflict")));
    let r = fx
        .admin
        .post("/v1/users", json!({"name": "Not A Slug"}))
        .await;
    assert_eq!(code(&r), (StatusCode::BAD_REQUEST, Some("invalid_name")));
    let r = fx
        .server
        .client("")
        .post("/v1/projects", json!({"name": "x"}))
        .await;
    assert_eq!(code(&r), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let r = fx
        .server
        .client("berth_not-a-token")
        .post("/v1/projects", json!({"name": "x"}))
        .await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED);
});

api_test!(projects_are_isolated_and_owners_add_members, |fx| {
    let (alice, bob) = (&fx.alice, &fx.bob);
    // Project names are global: a taken name is 409.
    let r = bob.post("/v1/projects", json!({"name": "web"})).await;
    assert_eq!(code(&r), (StatusCode::CONFLICT, Some("conflict")));
    let r = bob.get("/v1/projects/web/services").await;
    assert_eq!(
        code(&r),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "a foreign project is 404"
    );
    assert_eq!(
        bob.get("/v1/projects/nope/services").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = alice
        .post("/v1/projects/web/members", json!({"user": "bob"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(bob.get("/v1/projects/web/services").await.0, StatusCode::OK);
    let r = bob
        .post("/v1/projects/web/members", json!({"user": "alice"}))
        .await;
    assert_eq!(r.0, StatusCode::FORBIDDEN, "members are not owners");
    let r = alice
        .post("/v1/projects/web/members", json!({"user": "ghost"}))
        .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND);
    let r = fx
        .server
        .client(&fx.server.admin_token)
        .get("/v1/projects/web/audit-events")
        .await;
    assert_eq!(
        r.0,
        StatusCode::NOT_FOUND,
        "the admin is not a member either"
    );
});

api_test!(malformed_bodies_are_400, |fx| {
    let alice = &fx.alice;
    for (body, want) in [
        (json!({"name": "api"}), "bad_request"),
        (
            json!({"name": "api", "image": "x", "extra": 1}),
            "bad_request",
        ),
        (
            json!({"name": "api", "image": "Bad:Image:"}),
            "invalid_image",
        ),
        (json!({"name": "Api", "image": "x"}), "invalid_name"),
    ] {
        let r = alice.post("/v1/projects/web/services", body.clone()).await;
        assert_eq!(
            code(&r),
            (StatusCode::BAD_REQUEST, Some(want)),
            "{body}: {}",
            r.1
        );
    }
});

api_test!(a_failing_preflight_stores_nothing, |fx| {
    let alice = &fx.alice;
    let before = audit_len(alice).await;
    let (s, v) = alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&fx.url, "ci", "wrong")}))
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
    assert_eq!(audit_len(alice).await, before);
});

api_test!(a_passing_save_is_stored_masked, |fx| {
    fx.alice
        .post("/v1/projects/web/members", json!({"user": "bob"}))
        .await;
    let v = create_with_creds(fx, &fx.bob, "api").await;
    assert_eq!(
        v["registry"],
        json!({"registry_url": fx.url, "kind": "basic", "username": "c***", "password_set": true, "verified": true, "updated_at": v["registry"]["updated_at"],
               "health": {"status": "ok", "code": "ok", "checked_at": v["registry"]["updated_at"]}}),
        "verified at the save: healthy as of the save"
    );
    assert_eq!(v["status"], "CREATED");
    let (s, v) = fx.alice.get("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["registry"]["username"], "c***");
    assert!(!v.to_string().contains(PASSWORD));
    let r = fx
        .alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1"}),
        )
        .await;
    assert_eq!(r.0, StatusCode::CONFLICT);
});

api_test!(a_service_carries_its_own_limits, |fx| {
    let alice = &fx.alice;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1", "resources": {"memory_mb": 256, "pids": 100, "cpus": 0.5}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["resources"],
        json!({"memory_mb": 256, "pids": 100, "cpus": 0.5})
    );
    let (_, v) = alice.get("/v1/projects/web/services/api").await;
    assert_eq!(
        v["resources"],
        json!({"memory_mb": 256, "pids": 100, "cpus": 0.5})
    );
    for bad in [
        json!({"memory_mb": 1}),
        json!({"pids": 0}),
        json!({"cpus": 0.0}),
        json!({"disk": 1}),
    ] {
        let r = alice
            .post(
                "/v1/projects/web/services",
                json!({"name": "bad", "image": "team/app:v1", "resources": bad}),
            )
            .await;
        assert_eq!(r.0, StatusCode::BAD_REQUEST, "{bad}: {}", r.1);
    }
    assert_eq!(
        alice.get("/v1/projects/web/services/bad").await.0,
        StatusCode::NOT_FOUND
    );
});

api_test!(
    save_without_verifying_stores_unverified_but_never_unparseable_input,
    |fx| {
        let alice = &fx.alice;
        let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "later", "image": "team/app:v1", "registry": registry_body(&fx.url, "ci", "not-yet"), "save_without_verifying": true}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["registry"]["verified"], false);
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
        // Fixed later with the right password: verified.
        let (s, v) = alice
            .put(
                "/v1/projects/web/services/later/registry",
                json!({"password": PASSWORD}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["registry"]["verified"], true);
    }
);

api_test!(
    put_keeps_omitted_fields_and_the_password_stays_with_its_registry,
    |fx| {
        let alice = &fx.alice;
        create_with_creds(fx, alice, "api").await;
        let (s, v) = alice
            .put(
                "/v1/projects/web/services/api/registry",
                json!({"image": "team/app:v2"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["image"], "team/app:v2");
        assert_eq!(
            v["registry"]["verified"], true,
            "the stored password was used"
        );
        let r = alice
            .put(
                "/v1/projects/web/services/api/registry",
                json!({"registry_url": "ghcr.io"}),
            )
            .await;
        assert_eq!(
            code(&r),
            (StatusCode::BAD_REQUEST, Some("password_required")),
            "{}",
            r.1
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
    }
);

api_test!(
    put_on_a_service_without_credentials_needs_everything,
    |fx| {
        let alice = &fx.alice;
        alice
            .post(
                "/v1/projects/web/services",
                json!({"name": "plain", "image": "team/app:v1"}),
            )
            .await;
        let r = alice
            .put(
                "/v1/projects/web/services/plain/registry",
                json!({"username": "ci"}),
            )
            .await;
        assert_eq!(code(&r), (StatusCode::BAD_REQUEST, Some("missing_field")));
    }
);

api_test!(remove_and_terminate_destroy_the_secret, |fx| {
    let alice = &fx.alice;
    create_with_creds(fx, alice, "api").await;
    create_with_creds(fx, alice, "later").await;
    let (s, v) = alice
        .delete("/v1/projects/web/services/later/registry")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["registry"], Value::Null);
    let (s, v) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "TERMINATED");
    assert_eq!(v["registry"], Value::Null, "the secret is gone");
    let r = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(code(&r), (StatusCode::CONFLICT, Some("service_terminated")));
    let (s, v) = alice.get("/v1/projects/web/services").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "a terminated service is still listed"
    );
});

api_test!(the_audit_log_records_each_change_without_secrets, |fx| {
    let alice = &fx.alice;
    alice
        .post("/v1/projects/web/members", json!({"user": "bob"}))
        .await;
    create_with_creds(fx, &fx.bob, "api").await;
    alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "later", "image": "team/app:v1", "registry": registry_body(&fx.url, "ci", "not-yet"), "save_without_verifying": true}),
        )
        .await;
    alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"image": "team/app:v2"}),
        )
        .await;
    alice
        .delete("/v1/projects/web/services/later/registry")
        .await;
    alice.delete("/v1/projects/web/services/api").await;
    let (_, events) = alice.get("/v1/projects/web/audit-events?limit=500").await;
    let events = events.as_array().unwrap().clone();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "service.terminate",
            "service.registry.remove",
            "service.update",
            "service.create",
            "service.create",
            "project.member.add",
            "project.create"
        ],
        "newest first"
    );
    let creates: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "service.create")
        .collect();
    assert!(creates
        .iter()
        .any(|e| e["metadata"]["preflight"] == "passed" && e["actor"] == "bob"));
    assert!(creates
        .iter()
        .any(|e| e["metadata"]["preflight"] == "overridden"));
    assert!(!Value::Array(events.clone()).to_string().contains(PASSWORD));
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
    let only = only.as_array().unwrap();
    assert_eq!(only.len(), 2);
    assert!(only.iter().all(|e| e["service"] == "later"));
});

api_test!(test_connection_answers_then_rate_limits_per_user, |fx| {
    let (alice, url) = (&fx.alice, &fx.url);
    let body = json!({"registry_url": url, "username": "ci", "password": PASSWORD, "image": "team/app:v1"});
    let (s, v) = alice.post("/v1/preflight", body.clone()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["ok"].as_bool(), v["code"].as_str(), v["digest"].as_str()),
        (Some(true), Some("ok"), Some(fx.registry.digest.as_str()))
    );
    let r = alice
        .post(
            "/v1/preflight",
            json!({"registry_url": url, "image": "team/app:v1"}),
        )
        .await;
    assert_eq!(code(&r), (StatusCode::OK, Some("auth_failed")));
    let r = alice
        .post(
            "/v1/preflight",
            json!({"registry_url": url, "username": "ci", "image": "x"}),
        )
        .await;
    assert_eq!(
        code(&r),
        (StatusCode::BAD_REQUEST, Some("missing_field")),
        "refused before counting"
    );
    for _ in 0..3 {
        assert_eq!(
            alice.post("/v1/preflight", body.clone()).await.0,
            StatusCode::OK
        );
    }
    let r = alice.post("/v1/preflight", body.clone()).await;
    assert_eq!(
        code(&r),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    assert_eq!(
        fx.bob.post("/v1/preflight", body.clone()).await.0,
        StatusCode::OK,
        "per user"
    );
});

api_test!(
    every_preflight_on_a_users_behalf_counts_against_one_budget,
    |fx| {
        // Trying passwords against someone's registry through saves: five, then 429.
        let alice = &fx.alice;
        let create = |i: usize| {
            alice.post(
            "/v1/projects/web/services",
            json!({"name": format!("s{i}"), "image": "team/app:v1", "registry": registry_body(&fx.url, "ci", &format!("guess-{i}"))}),
        )
        };
        for i in 0..5 {
            assert_eq!(
                create(i).await.0,
                StatusCode::UNPROCESSABLE_ENTITY,
                "a refused save counts"
            );
        }
        let r = create(5).await;
        assert_eq!(
            code(&r),
            (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
            "{}",
            r.1
        );
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .put(format!(
                "{}/v1/projects/web/services/s0/registry",
                fx.server.base()
            ))
            .bearer_auth(&alice.token)
            .json(&json!({"registry_url": fx.url, "username": "ci", "password": "guess-6"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "nothing was saved to update"
        );
        let r = alice
            .post(
                "/v1/preflight",
                json!({"registry_url": fx.url, "image": "team/app:v1"}),
            )
            .await;
        assert_eq!(
            code(&r),
            (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
            "one budget"
        );
        // A save without credentials runs no preflight and is not counted.
        let r = alice
            .post(
                "/v1/projects/web/services",
                json!({"name": "plain", "image": "team/app:v1"}),
            )
            .await;
        assert_eq!(r.0, StatusCode::CREATED);
        // The 429 says when to come back.
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("{}/v1/preflight", fx.server.base()))
            .bearer_auth(&alice.token)
            .json(&json!({"registry_url": fx.url, "image": "team/app:v1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(resp.headers().get("retry-after").is_some());
    }
);

api_test!(
    a_foreign_service_is_404_everywhere_and_nothing_changes,
    |fx| {
        let (alice, bob) = (&fx.alice, &fx.bob);
        create_with_creds(fx, alice, "api").await;
        let (s, d) = alice
            .post("/v1/projects/web/services/api/deployments", json!({}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{d}");
        let id = d["id"].as_str().unwrap().to_owned();
        let before_service = alice.get("/v1/projects/web/services/api").await.1;
        let before_audit = audit_len(alice).await;
        // bob owns a project of his own, and tries alice's resources from every side.
        bob.post("/v1/projects", json!({"name": "bobs"})).await;
        let p = "/v1/projects/web/services/api";
        let tries = [
            bob.get(p).await,
            bob.get(&format!("{p}/deployments")).await,
            bob.post(&format!("{p}/deployments"), json!({})).await,
            bob.get(&format!("{p}/deployments/{id}")).await,
            bob.get(&format!("{p}/deployments/{id}/logs")).await,
            bob.get("/v1/projects/web/audit-events").await,
            bob.put(&format!("{p}/registry"), json!({"password": PASSWORD}))
                .await,
            bob.delete(&format!("{p}/registry")).await,
            bob.delete(p).await,
            // The same names through his own project: still not alice's.
            bob.get(&format!("/v1/projects/bobs/services/api/deployments/{id}"))
                .await,
        ];
        for (i, r) in tries.iter().enumerate() {
            assert_eq!(
                code(r),
                (StatusCode::NOT_FOUND, Some("not_found")),
                "try {i}: {}",
                r.1
            );
        }
        let after = alice.get("/v1/projects/web/services/api").await.1;
        assert_eq!(
            after["registry"], before_service["registry"],
            "credentials unchanged"
        );
        assert_ne!(after["status"], "TERMINATED");
        assert_eq!(audit_len(alice).await, before_audit, "nothing was done");
    }
);

api_test!(probes_and_metrics_need_no_token_and_name_no_tenant, |fx| {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{}{path}", fx.server.base());
        async move {
            let r = http.get(url).send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    assert_eq!(get("/readyz").await, (StatusCode::OK, "ready\n".into()));
    // A preflight and a save to count.
    create_with_creds(fx, &fx.alice, "api").await;
    let (s, text) = get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    // The counters are the process's (both databases' tests run in one), so only
    // their lines are checked, not their values.
    for want in [
        r#"berth_http_requests_total{method="POST",route="/v1/projects/{p}/services",status="201"} "#,
        r#"berth_preflights_total{code="ok"}"#,
        r#"berth_credentials{status="ok"} "#,
        "berth_queue_depth ",
        "berth_http_request_duration_seconds_bucket",
        "# EOF",
    ] {
        assert!(text.contains(want), "{want} not in:\n{text}");
    }
    assert!(
        !text.contains("web") && !text.contains("alice"),
        "no tenant's name: {text}"
    );
});

api_test!(
    project_tokens_read_their_own_projects_credentials_only,
    |fx| {
        create_with_creds(fx, &fx.alice, "api").await;
        // bob owns another project holding credentials for the same registry.
        fx.bob.post("/v1/projects", json!({"name": "other"})).await;
        let (s, v) = fx
        .bob
        .post("/v1/projects/other/services", json!({"name": "x", "image": "team/app:v2", "registry": registry_body(&fx.url, "admin", "admin-pass-1")}))
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        // Owners only create them; a member is refused.
        fx.alice
            .post("/v1/projects/web/members", json!({"user": "bob"}))
            .await;
        let r = fx
            .bob
            .post("/v1/projects/web/tokens", json!({"name": "kubelet"}))
            .await;
        assert_eq!(code(&r), (StatusCode::FORBIDDEN, Some("forbidden")));
        let (s, t) = fx
            .alice
            .post("/v1/projects/web/tokens", json!({"name": "kubelet"}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let token = t["token"].as_str().unwrap().to_owned();
        assert_eq!(t["scope"], "read-credentials");
        let r = fx
            .alice
            .post("/v1/projects/web/tokens", json!({"name": "kubelet"}))
            .await;
        assert_eq!(code(&r), (StatusCode::CONFLICT, Some("conflict")));
        let (_, listed) = fx.bob.get("/v1/projects/web/tokens").await;
        assert_eq!(listed[0]["name"], "kubelet");
        assert!(listed[0].get("token").is_none(), "never listed: {listed}");

        let puller = fx.server.client(&token);
        // It reads this project's credentials...
        let (s, v) = puller
            .post(
                "/v1/registry-credentials",
                json!({"image": format!("{}/team/app:v9", fx.url)}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(
            (
                v["service"].as_str(),
                v["username"].as_str(),
                v["password"].as_str()
            ),
            (Some("api"), Some("ci"), Some(PASSWORD))
        );
        // ...never the other project's (its service is not found by name here)...
        let r = puller
            .post(
                "/v1/registry-credentials",
                json!({"registry": fx.url, "service": "x"}),
            )
            .await;
        assert_eq!(code(&r), (StatusCode::NOT_FOUND, Some("no_credentials")));
        // ...and nothing else: not the project's services, not the users' routes.
        assert_eq!(
            puller.get("/v1/projects/web/services").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(puller.get("/v1/projects").await.0, StatusCode::UNAUTHORIZED);
        // A user's token does not open the credentials route.
        let r = fx
            .alice
            .post("/v1/registry-credentials", json!({"registry": fx.url}))
            .await;
        assert_eq!(code(&r), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
        // Two services with different users on one registry: a host alone is
        // ambiguous; the image's repository or the service's name decides.
        let (s, v) = fx
        .alice
        .post("/v1/projects/web/services", json!({"name": "admin-side", "image": "team/app:v2", "registry": registry_body(&fx.url, "admin", "admin-pass-1")}))
        .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let r = puller
            .post("/v1/registry-credentials", json!({"registry": fx.url}))
            .await;
        assert_eq!(code(&r), (StatusCode::CONFLICT, Some("ambiguous")));
        let (_, v) = puller
            .post(
                "/v1/registry-credentials",
                json!({"registry": fx.url, "service": "admin-side"}),
            )
            .await;
        assert_eq!(v["username"], "admin");

        // Audited on every use, by the token, without the secret.
        let (_, events) = fx.alice.get("/v1/projects/web/audit-events").await;
        let reads: Vec<&Value> = events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "credentials.read")
            .collect();
        assert_eq!(reads.len(), 2, "{events}");
        assert_eq!(reads[0]["actor"], "token:kubelet");
        assert!(!events.to_string().contains(PASSWORD));
        // Revoked: refused at once.
        let r = fx.bob.delete("/v1/projects/web/tokens/kubelet").await;
        assert_eq!(code(&r), (StatusCode::FORBIDDEN, Some("forbidden")));
        assert_eq!(
            fx.alice.delete("/v1/projects/web/tokens/kubelet").await.0,
            StatusCode::OK
        );
        let r = puller
            .post(
                "/v1/registry-credentials",
                json!({"registry": fx.url, "service": "api"}),
            )
            .await;
        assert_eq!(code(&r), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    }
);
