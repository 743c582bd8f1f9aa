//! The SSRF guard and the deadline against servers that misbehave on purpose. Every
//! blocked address is a loopback address outside the allowlist with a canary
//! listening on it: the canary must record no connection.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use berth_registry::preflight::StepName;
use berth_registry::{Code, NetworkPolicy};
use berth_testkit::hostile::{Canary, FakeServer, Misbehaviour, RawServer};
use common::{creds, policy, run};
use sha2::Digest as _;

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}"#;

fn manifest_digest() -> String {
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(MANIFEST.as_bytes()))
    )
}

fn manifest_response(with_digest: bool) -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        "application/vnd.oci.image.manifest.v1+json"
            .parse()
            .unwrap(),
    );
    if with_digest {
        h.insert("docker-content-digest", manifest_digest().parse().unwrap());
    }
    (StatusCode::OK, h, MANIFEST).into_response()
}

/// `GET /v2/` of a Basic-auth registry: 200 with credentials, a challenge without.
async fn basic_v2(h: HeaderMap) -> Response {
    if h.contains_key("authorization") {
        StatusCode::OK.into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", r#"Basic realm="fake""#)],
        )
            .into_response()
    }
}

fn challenge(realm: &str) -> Response {
    let mut h = HeaderMap::new();
    h.insert(
        "www-authenticate",
        format!(r#"Bearer realm="{realm}",service="fake""#)
            .parse()
            .unwrap(),
    );
    (StatusCode::UNAUTHORIZED, h).into_response()
}

#[tokio::test]
async fn realm_on_a_blocked_address_is_never_contacted() {
    let canary = Canary::bind("127.0.0.2");
    let realm = format!("{}/token", canary.url());
    let fake = FakeServer::start(move |_| {
        Router::new().route("/v2/", get(move || async move { challenge(&realm) }))
    });
    let url = fake.authority();

    // With the canary's authority allowed over HTTP, the address check is what stops it.
    let r = run(
        policy(&[url.clone(), canary.addr.to_string()]),
        &url,
        "app:v1",
        creds("u", "p"),
    )
    .await;
    assert_eq!(r.code, Code::SsrfBlocked, "{r:?}");
    assert!(r.message.contains("127.0.0.2"), "{}", r.message);
    assert_eq!(r.steps.last().unwrap().step, StepName::Token);
    // Without it, the plain-HTTP realm on another host is refused first.
    let r = run(policy(&[&url]), &url, "app:v1", creds("u", "p")).await;
    assert_eq!(r.code, Code::SsrfBlocked, "{r:?}");
    assert!(
        r.message.contains("plain HTTP token service"),
        "{}",
        r.message
    );
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn redirect_to_a_blocked_address_is_never_followed() {
    let canary = Canary::bind("127.0.0.3");
    let target = format!("{}/v2/app/manifests/v1", canary.url());
    let fake = FakeServer::start(move |_| {
        Router::new()
            .route("/v2/", get(|| async { StatusCode::OK }))
            .route(
                "/v2/app/manifests/v1",
                any(move || async move {
                    (StatusCode::TEMPORARY_REDIRECT, [("location", target)]).into_response()
                }),
            )
    });
    let url = fake.authority();
    let r = run(
        policy(&[url.clone(), canary.addr.to_string()]),
        &url,
        "app:v1",
        None,
    )
    .await;
    assert_eq!(r.code, Code::SsrfBlocked, "{r:?}");
    assert!(r.message.contains("127.0.0.3"), "{}", r.message);
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn every_spelling_of_a_blocked_address_is_caught() {
    let canary = Canary::bind("127.0.0.2");
    let port = canary.addr.port();
    // No allowlist at all: every loopback address is blocked.
    for host in [
        format!("127.0.0.2:{port}"),
        format!("2130706434:{port}"),
        format!("0x7f000002:{port}"),
        format!("0177.0.0.2:{port}"),
        format!("[::ffff:127.0.0.2]:{port}"),
        format!("[::ffff:7f00:2]:{port}"),
        format!("0.0.0.0:{port}"),
        format!("[::]:{port}"),
        format!("localhost:{port}"),
    ] {
        let insecure = NetworkPolicy::from_lists("", &host).unwrap();
        let r = run(insecure, &host, "app:v1", None).await;
        assert_eq!(r.code, Code::SsrfBlocked, "{host}: {r:?}");
    }
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn a_blocked_name_says_which_range_never_the_address() {
    // `localhost` stands in for `db.internal`: a name whose address a user must
    // not learn through Test Connection.
    let canary = Canary::bind("127.0.0.1");
    let host = format!("localhost:{}", canary.addr.port());
    let r = run(
        NetworkPolicy::from_lists("", &host).unwrap(),
        &host,
        "app:v1",
        None,
    )
    .await;
    assert_eq!(r.code, Code::SsrfBlocked, "{r:?}");
    assert!(r.message.contains("loopback"), "{}", r.message);
    let all = serde_json::to_string(&r).unwrap();
    for addr in ["127.0.0.1", "::1", "0:0:0:0:0:0:0:1"] {
        assert!(!all.contains(addr), "the report names {addr}: {all}");
    }
    assert_eq!(canary.hits(), 0);
}

#[tokio::test]
async fn a_server_that_hangs_times_out_within_the_deadline() {
    for how in [Misbehaviour::Hang, Misbehaviour::Trickle] {
        let server = RawServer::start(how);
        let url = server.authority();
        let started = Instant::now();
        let r = run(policy(&[&url]), &url, "app:v1", None).await;
        let took = started.elapsed();
        assert_eq!(r.code, Code::Timeout, "{how:?}: {r:?}");
        assert!(took < Duration::from_millis(9_500), "{how:?} took {took:?}");
        assert!(took >= Duration::from_secs(8), "{how:?} took {took:?}");
        assert_eq!(r.steps.len(), 1);
        assert_eq!(r.steps[0].step, StepName::Ping);
        assert!(!r.steps[0].ok);
    }
}

#[tokio::test]
async fn missing_digest_header_is_computed_from_the_body() {
    let fake = FakeServer::start(|_| {
        Router::new()
            .route("/v2/", get(|| async { StatusCode::OK }))
            .route(
                "/v2/app/manifests/v1",
                any(|| async { manifest_response(false) }),
            )
    });
    let url = fake.authority();
    let r = run(policy(&[&url]), &url, "app:v1", None).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert_eq!(r.digest.unwrap().to_string(), manifest_digest());
}

#[tokio::test]
async fn authorization_is_not_forwarded_to_another_host() {
    let seen: Arc<Mutex<Vec<bool>>> = Arc::default();
    let seen2 = seen.clone();
    let other = FakeServer::start(move |_| {
        Router::new().route(
            "/blob",
            any(move |h: HeaderMap| {
                seen2.lock().unwrap().push(h.contains_key("authorization"));
                async { manifest_response(true) }
            }),
        )
    });
    let to = format!("http://127.0.0.1:{}/blob", other.port);
    let fake = FakeServer::start(move |_| {
        Router::new().route("/v2/", get(basic_v2)).route(
            "/v2/app/manifests/v1",
            any(move || async move {
                (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response()
            }),
        )
    });
    let url = fake.authority();
    let r = run(
        policy(&[url.clone(), other.authority()]),
        &url,
        "app:v1",
        creds("u", "secret-pw"),
    )
    .await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|had_auth| !had_auth),
        "Authorization crossed hosts"
    );
}

#[tokio::test]
async fn insufficient_scope_is_answered_once_with_the_named_scope() {
    let token_requests = Arc::new(AtomicUsize::new(0));
    let tr = token_requests.clone();
    let fake = FakeServer::start(move |base| {
        let realm = format!("{base}/token");
        let realm2 = realm.clone();
        Router::new()
            .route("/v2/", get(move || async move { challenge(&realm) }))
            .route(
                "/token",
                get(move |q: axum::extract::Query<Vec<(String, String)>>| {
                    tr.fetch_add(1, Ordering::SeqCst);
                    let scopes: Vec<String> = q.0.iter().filter(|(k, _)| k == "scope").map(|(_, v)| v.clone()).collect();
                    async move { axum::Json(serde_json::json!({"token": scopes.join("+")})) }
                }),
            )
            .route(
                "/v2/app/manifests/v1",
                any(move |m: Method, h: HeaderMap| async move {
                    let auth = h.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    if auth.contains("repository:shared/base:pull") {
                        let _ = m;
                        manifest_response(true)
                    } else {
                        let mut h = HeaderMap::new();
                        h.insert(
                            "www-authenticate",
                            format!(r#"Bearer realm="{realm2}",service="fake",scope="repository:shared/base:pull",error="insufficient_scope""#)
                                .parse()
                                .unwrap(),
                        );
                        (StatusCode::UNAUTHORIZED, h).into_response()
                    }
                }),
            )
    });
    let url = fake.authority();
    let r = run(policy(&[&url]), &url, "app:v1", None).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert_eq!(token_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn expired_token_answered_with_403_is_an_auth_failure() {
    let fake = FakeServer::start(|base| {
        let realm = format!("{base}/token");
        Router::new()
            .route("/v2/", get(move || async move { challenge(&realm) }))
            .route("/token", get(|| async { axum::Json(serde_json::json!({"access_token": "t", "expires_in": 3600})) }))
            .route(
                "/v2/app/manifests/v1",
                any(|| async {
                    (StatusCode::FORBIDDEN, axum::Json(serde_json::json!({"errors":[{"code":"DENIED","message":"Your authorization token has expired."}]})))
                }),
            )
    });
    let url = fake.authority();
    let r = run(policy(&[&url]), &url, "app:v1", creds("AWS", "token")).await;
    assert_eq!(r.code, Code::AuthFailed, "{r:?}");
    assert!(r.message.contains("token has expired"), "{}", r.message);
}

#[tokio::test]
async fn a_registry_that_is_not_one() {
    let fake = FakeServer::start(|_| Router::new().route("/", get(|| async { "hello" })));
    let url = fake.authority();
    let r = run(policy(&[&url]), &url, "app:v1", None).await;
    assert_eq!(r.code, Code::InvalidUrl, "{r:?}");
    assert!(
        r.message
            .contains("does not look like a container registry"),
        "{}",
        r.message
    );
    // Nothing listens: a network error, said plainly.
    let port = berth_testkit::free_port();
    let url = format!("127.0.0.1:{port}");
    let r = run(policy(&[&url]), &url, "app:v1", None).await;
    assert_eq!(r.code, Code::NetworkError, "{r:?}");
    assert!(r.message.contains("refused"), "{}", r.message);
}

/// What a second host saw: every request's path, `Authorization` and body.
type Seen = Arc<Mutex<Vec<(String, Option<String>, Vec<u8>)>>>;

/// A second allowed host (127.0.0.5) that records every request and answers each
/// with a challenge of its own, hoping for the user's credentials.
fn credential_trap() -> (FakeServer, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let server = FakeServer::start_on("127.0.0.5", move |base| {
        let realm = format!("{base}/token");
        Router::new().fallback(any(
            move |uri: axum::http::Uri, h: HeaderMap, body: axum::body::Bytes| {
                let realm = realm.clone();
                s.lock().unwrap().push((
                    uri.to_string(),
                    h.get("authorization")
                        .map(|v| v.to_str().unwrap_or("?").to_owned()),
                    body.to_vec(),
                ));
                async move {
                    let mut r = challenge(&realm);
                    r.headers_mut()
                        .append("www-authenticate", r#"Basic realm="trap""#.parse().unwrap());
                    r
                }
            },
        ))
    });
    (server, seen)
}

fn redirect(to: String) -> Response {
    (StatusCode::TEMPORARY_REDIRECT, [("location", to)]).into_response()
}

#[tokio::test]
async fn credentials_go_only_to_the_registry_they_were_saved_for() {
    const PASSWORD: &str = "trap-Pa55word-xyz";
    let (trap, seen) = credential_trap();
    let trap_url = format!("http://{}", trap.authority());
    // Each registry sends one step to the trap (a 307, which keeps the method and
    // body); the trap answers with challenges of its own.
    let registries = [
        ("ping", {
            let to = trap_url.clone();
            FakeServer::start(move |_| {
                Router::new().route(
                    "/v2/",
                    any(move || async move { redirect(format!("{to}/v2/")) }),
                )
            })
        }),
        ("manifest", {
            let to = trap_url.clone();
            FakeServer::start(move |_| {
                Router::new().route("/v2/", get(basic_v2)).route(
                    "/v2/app/manifests/v1",
                    any(move || async move { redirect(format!("{to}/v2/app/manifests/v1")) }),
                )
            })
        }),
        ("token form", {
            let to = trap_url.clone();
            FakeServer::start(move |base| {
                let realm = format!("{base}/token");
                Router::new()
                    .route("/v2/", get(move || async move { challenge(&realm) }))
                    // OAuth2 only: the GET is refused, the POST form (with the
                    // password) is redirected.
                    .route(
                        "/token",
                        get(|| async { StatusCode::METHOD_NOT_ALLOWED.into_response() })
                            .post(move || async move { redirect(format!("{to}/token")) }),
                    )
            })
        }),
    ];
    for (step, registry) in &registries {
        let url = registry.authority();
        let r = run(
            NetworkPolicy::from_lists(
                "127.0.0.1/32, 127.0.0.5/32",
                &format!("{url},{}", trap.authority()),
            )
            .unwrap(),
            &url,
            "app:v1",
            creds("u", PASSWORD),
        )
        .await;
        assert_eq!(r.code, Code::AuthFailed, "{step}: {r:?}");
        assert!(
            r.message.contains("only to the registry")
                || r.message.contains("it carries credentials"),
            "{step}: the message says why: {}",
            r.message
        );
        assert!(!r.message.contains(PASSWORD));
    }
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 2, "the trap was reached: {seen:?}");
    for (path, auth, body) in seen.iter() {
        assert_eq!(
            auth, &None,
            "an Authorization header reached the other host at {path}"
        );
        assert!(
            !String::from_utf8_lossy(body).contains(PASSWORD) && !path.contains(PASSWORD),
            "the password reached the other host at {path}"
        );
        assert!(
            !path.starts_with("/token"),
            "the trap's own realm was never asked: {path}"
        );
    }
}

/// The pull path: a blob redirected to another host (as to object storage), which
/// then asks for credentials, gets none.
#[tokio::test]
async fn a_blob_redirect_never_carries_credentials_to_another_host() {
    use berth_registry::open::Unobserved;
    use berth_registry::{blob, open, Registry, TokenReuse};
    let (trap, seen) = credential_trap();
    let to = format!("http://{}", trap.authority());
    let fake = FakeServer::start(move |base| {
        let realm = format!("{base}/token");
        Router::new()
            .route(
                "/v2/",
                get(move |h: HeaderMap| {
                    let realm = realm.clone();
                    async move {
                        if h.contains_key("authorization") {
                            StatusCode::OK.into_response()
                        } else {
                            challenge(&realm)
                        }
                    }
                }),
            )
            .route(
                "/token",
                get(|| async { axum::Json(serde_json::json!({"token": "registry-token-abc"})) }),
            )
            .route(
                "/v2/app/manifests/v1",
                any(|| async { manifest_response(true) }),
            )
            .route(
                "/v2/app/blobs/{digest}",
                any(move || async move { redirect(format!("{to}/bucket/blob?X-Amz-Signature=s")) }),
            )
    });
    let url = fake.authority();
    let registry = Registry::new(
        NetworkPolicy::from_lists(
            "127.0.0.1/32, 127.0.0.5/32",
            &format!("{url},{}", trap.authority()),
        )
        .unwrap(),
    )
    .unwrap();
    let target = registry
        .target(&url.parse().unwrap(), &"app:v1".parse().unwrap())
        .unwrap();
    let mut opened = open(
        &registry,
        &target,
        creds("u", "blob-Pa55word"),
        TokenReuse::Fresh,
        &mut Unobserved,
    )
    .await
    .unwrap();
    let digest = manifest_digest().parse().unwrap();
    let err = blob::open_at(&mut opened.session, &digest, 0)
        .await
        .expect_err("refused");
    assert_eq!(err.code(), Code::AuthFailed, "{err}");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].1, None,
        "no Authorization crossed to the other host"
    );
}

/// A registry that states its pull budget (Docker Hub's `ratelimit-*` headers on
/// the manifest HEAD, which does not count against it): the preflight reports it
/// and the manifest step says it; one that answers 429 is a clear, soft failure.
#[tokio::test]
async fn the_registrys_rate_limit_is_reported_and_a_429_explained() {
    let fake = FakeServer::start(|_| {
        Router::new()
            .route("/v2/", get(|| async { StatusCode::OK }))
            .route(
                "/v2/app/manifests/v1",
                any(|| async {
                    let mut r = manifest_response(true);
                    r.headers_mut()
                        .insert("ratelimit-limit", "100;w=21600".parse().unwrap());
                    r.headers_mut()
                        .insert("ratelimit-remaining", "76;w=21600".parse().unwrap());
                    r
                }),
            )
            .route(
                "/v2/app/manifests/busy",
                any(|| async {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("content-type", "application/json")],
                        r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}"#,
                    )
                }),
            )
    });
    let url = fake.authority();
    let r = run(policy(&[&url]), &url, "app:v1", None).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    let limit = r.rate_limit.clone().expect("the rate limit");
    assert_eq!(
        (limit.limit, limit.remaining, limit.window_s),
        (100, 76, Some(21600))
    );
    let manifest = r
        .steps
        .iter()
        .find(|s| s.step == StepName::Manifest)
        .unwrap();
    assert!(
        manifest
            .detail
            .contains("rate limit: 76 of 100 pulls left per 6 h"),
        "{manifest:?}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["rate_limit"]["remaining"], 76);

    let r = run(policy(&[&url]), &url, "app:busy", None).await;
    assert!(!r.ok);
    assert!(r.message.contains("rate-limiting"), "{r:?}");
    assert!(
        r.message.contains("You have reached your pull rate limit"),
        "{r:?}"
    );
}
