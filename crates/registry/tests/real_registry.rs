//! The preflight against Debian's docker-registry, with htpasswd and token auth.

mod common;

use berth_registry::preflight::StepName::{self, Manifest, Ping, Token};
use berth_registry::{Code, Registry, TokenReuse};
use berth_testkit::{Grant, LocalRegistry, TestImage, TokenServer, TokenServerMode, User};
use common::{creds, policy, run, steps};

fn hello() -> TestImage {
    TestImage::build(
        &[("hello.txt", b"hello from berth")],
        &["/bin/sh", "-c", "cat /hello.txt"],
    )
}

/// One preflight and what its report must say: `check` runs a table of them.
struct Case {
    what: &'static str,
    image: String,
    user: Option<(&'static str, &'static str)>,
    code: Code,
    says: &'static [&'static str],
    steps: Option<Vec<(StepName, bool, Option<u16>)>>,
}

fn case(
    what: &'static str,
    image: impl Into<String>,
    user: Option<(&'static str, &'static str)>,
    code: Code,
    says: &'static [&'static str],
) -> Case {
    Case {
        what,
        image: image.into(),
        user,
        code,
        says,
        steps: None,
    }
}

const OK_STEPS: [(StepName, bool, Option<u16>); 3] = [
    (Ping, true, Some(401)),
    (Token, true, Some(200)),
    (Manifest, true, Some(200)),
];

async fn check(url: &str, cases: Vec<Case>) {
    for c in cases {
        let creds = c.user.and_then(|(u, p)| creds(u, p));
        let r = run(policy(&[url]), url, &c.image, creds).await;
        assert_eq!(r.code, c.code, "{}: {r:?}", c.what);
        assert_eq!(r.ok, c.code == Code::Ok, "{}", c.what);
        for s in c.says {
            assert!(
                r.message.contains(s),
                "{}: {:?} lacks {s:?}",
                c.what,
                r.message
            );
        }
        if let Some(want) = c.steps {
            assert_eq!(steps(&r), want, "{}", c.what);
        }
    }
}

#[tokio::test]
async fn htpasswd_registry_every_code() {
    let reg = LocalRegistry::htpasswd(&[("alice", "correct horse battery"), ("bob", "bobs-pass")]);
    let img = hello();
    img.push(&reg, "team/app:v1");
    let url = reg.authority();
    let alice = Some(("alice", "correct horse battery"));
    check(
        &url,
        vec![
            Case {
                steps: Some(OK_STEPS.to_vec()),
                ..case(
                    "the three steps",
                    "team/app:v1",
                    alice,
                    Code::Ok,
                    &["resolves to"],
                )
            },
            case(
                "the image may name the host, by digest",
                format!("{url}/team/app@{}", img.digest),
                Some(("bob", "bobs-pass")),
                Code::Ok,
                &[],
            ),
            Case {
                steps: Some(vec![(Ping, true, Some(401)), (Token, false, Some(401))]),
                ..case(
                    "a wrong password",
                    "team/app:v1",
                    Some(("alice", "wrong")),
                    Code::AuthFailed,
                    &["rejected the username or password"],
                )
            },
            case(
                "no credentials",
                "team/app:v1",
                None,
                Code::AuthFailed,
                &["requires credentials"],
            ),
            case(
                "a missing tag",
                "team/app:nope",
                alice,
                Code::ManifestNotFound,
                &["has no tag nope", "MANIFEST_UNKNOWN"],
            ),
            case(
                "a missing repository",
                "team/ghost:v1",
                alice,
                Code::ManifestNotFound,
                &[],
            ),
            Case {
                steps: Some(vec![]),
                ..case(
                    "an image on another registry",
                    "ghcr.io/team/app:v1",
                    alice,
                    Code::InvalidUrl,
                    &["ghcr.io"],
                )
            },
            case(
                "the host:port trap",
                "test.com:5000",
                alice,
                Code::ManifestNotFound,
                &["reads as repository"],
            ),
        ],
    )
    .await;
    let r = run(
        policy(&[&url]),
        &url,
        "team/app:v1",
        creds("alice", "correct horse battery"),
    )
    .await;
    assert_eq!(
        r.digest.as_ref().unwrap().to_string(),
        img.digest,
        "the digest pushed"
    );
    // Plain HTTP to a host that is not in the insecure list.
    let r = run(
        policy::<&str>(&[]),
        &format!("http://{url}"),
        "team/app:v1",
        None,
    )
    .await;
    assert_eq!(r.code, Code::InvalidUrl, "{r:?}");
    assert!(
        r.message.contains("BERTH_REGISTRY_INSECURE"),
        "{}",
        r.message
    );
    let r = run(
        policy(&[&url]),
        &url,
        "team/app:nope",
        alice.and_then(|(u, p)| creds(u, p)),
    )
    .await;
    assert_eq!(r.steps.last().unwrap().status, Some(404));
}

#[tokio::test]
async fn multi_platform_index() {
    let reg = LocalRegistry::htpasswd(&[("alice", "pw-alice-123")]);
    berth_testkit::push_index(&reg, "multi:all", &[("linux", "amd64"), ("linux", "arm64")]);
    berth_testkit::push_index(
        &reg,
        "multi:armonly",
        &[("linux", "arm64"), ("linux", "s390x")],
    );
    let url = reg.authority();

    let r = run(
        policy(&[&url]),
        &url,
        "multi:all",
        creds("alice", "pw-alice-123"),
    )
    .await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert_eq!(r.platforms, vec!["linux/amd64", "linux/arm64"]);
    assert_eq!(
        r.media_type.as_deref(),
        Some("application/vnd.oci.image.index.v1+json")
    );

    let r = run(
        policy(&[&url]),
        &url,
        "multi:armonly",
        creds("alice", "pw-alice-123"),
    )
    .await;
    assert_eq!(r.code, Code::ManifestNotFound, "{r:?}");
    assert!(
        r.message.contains("no build for linux/amd64"),
        "{}",
        r.message
    );
    assert!(
        r.message.contains("linux/arm64, linux/s390x"),
        "{}",
        r.message
    );
}

fn token_setup(mode: TokenServerMode) -> (TokenServer, LocalRegistry) {
    let tokens = TokenServer::start(
        vec![
            User::new("admin", "admin-pass-1", Grant::All),
            User::new(
                "limited",
                "limited-pass-1",
                Grant::Pull(vec!["team/app".into()]),
            ),
            User::new("nobody", "nobody-pass-1", Grant::Nothing),
        ],
        vec!["public/app".into()],
        TokenServerMode::GetAndPost,
    );
    let reg = LocalRegistry::token(&tokens);
    let img = hello();
    img.push(&reg, "team/app:v1");
    img.push(&reg, "team/other:v1");
    img.push(&reg, "public/app:v1");
    tokens.set_mode(mode);
    (tokens, reg)
}

#[tokio::test]
async fn token_registry_every_code() {
    let (tokens, reg) = token_setup(TokenServerMode::GetAndPost);
    let url = reg.authority();
    let admin = Some(("admin", "admin-pass-1"));
    let limited = Some(("limited", "limited-pass-1"));
    check(
        &url,
        vec![
            Case {
                steps: Some(OK_STEPS.to_vec()),
                ..case("the three steps", "team/app:v1", admin, Code::Ok, &[])
            },
            case(
                "a user limited to team/app",
                "team/app:v1",
                limited,
                Code::Ok,
                &[],
            ),
            case(
                "...and refused elsewhere",
                "team/other:v1",
                limited,
                Code::AuthFailed,
                &["accepted these credentials, but they grant no pull access to team/other"],
            ),
            case(
                "a login with no rights",
                "team/app:v1",
                Some(("nobody", "nobody-pass-1")),
                Code::AuthFailed,
                &["grant no pull access"],
            ),
            case(
                "a rejected password, told apart",
                "team/app:v1",
                Some(("admin", "wrong-pass")),
                Code::AuthFailed,
                &["rejected the username or password", "UNAUTHORIZED"],
            ),
            case(
                "anonymous on a public repository",
                "public/app:v1",
                None,
                Code::Ok,
                &[],
            ),
            case(
                "anonymous on a private one",
                "team/app:v1",
                None,
                Code::AuthFailed,
                &[],
            ),
            case(
                "a missing tag",
                "team/app:missing",
                admin,
                Code::ManifestNotFound,
                &[],
            ),
        ],
    )
    .await;
    // What the token step says it did.
    let r = run(
        policy(&[&url]),
        &url,
        "team/app:v1",
        creds("admin", "admin-pass-1"),
    )
    .await;
    assert!(
        r.steps[1].detail.contains("authenticated token"),
        "{}",
        r.steps[1].detail
    );
    // The manifest's size from the HEAD's Content-Length (a HEAD has no body).
    assert!(
        !r.steps[2].detail.contains("(0 bytes)") && r.steps[2].detail.contains(" bytes)"),
        "{}",
        r.steps[2].detail
    );
    let r = run(policy(&[&url]), &url, "public/app:v1", None).await;
    assert!(
        r.steps[1].detail.contains("anonymous token"),
        "{}",
        r.steps[1].detail
    );
    assert!(tokens.requests() >= 8);
}

#[tokio::test]
async fn oauth2_only_token_server() {
    let (_tokens, reg) = token_setup(TokenServerMode::OAuth2Only);
    let url = reg.authority();
    let r = run(
        policy(&[&url]),
        &url,
        "team/app:v1",
        creds("limited", "limited-pass-1"),
    )
    .await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert!(r.steps[1].detail.contains("POST"), "{}", r.steps[1].detail);
    let r = run(
        policy(&[&url]),
        &url,
        "team/app:v1",
        creds("limited", "bad"),
    )
    .await;
    assert_eq!(r.code, Code::AuthFailed, "{r:?}");
    assert!(r.message.contains("invalid_grant"), "{}", r.message);
}

/// Azure's refresh token (`az acr login --expose-token`): the all-zero user, sent
/// through the OAuth2 `refresh_token` grant (the token server takes it no other
/// way); a wrong or expired token is `auth_failed`.
#[tokio::test]
async fn an_azure_refresh_token_goes_through_the_refresh_token_grant() {
    let refresh = "eyJ-an-acr-refresh-token";
    let tokens = TokenServer::start(
        vec![
            User::new("admin", "admin-pass-1", Grant::All),
            User::new(
                berth_testkit::IDENTITY_USER,
                refresh,
                Grant::Pull(vec!["team/app".into()]),
            ),
        ],
        vec![],
        TokenServerMode::GetAndPost,
    );
    let reg = LocalRegistry::token(&tokens);
    hello().push(&reg, "team/app:v1");
    tokens.set_mode(TokenServerMode::OAuth2Only);
    let url = reg.authority();
    let user = berth_testkit::IDENTITY_USER;
    let r = run(policy(&[&url]), &url, "team/app:v1", creds(user, refresh)).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert!(r.steps[1].detail.contains("POST"), "{}", r.steps[1].detail);
    let r = run(policy(&[&url]), &url, "team/app:v1", creds(user, "expired")).await;
    assert_eq!(r.code, Code::AuthFailed, "{r:?}");
}

#[tokio::test]
async fn tokens_are_cached_per_credential() {
    let (tokens, reg) = token_setup(TokenServerMode::GetAndPost);
    let url = reg.authority();
    let registry = Registry::new(policy(&[&url])).unwrap();
    let target = registry
        .target(&url.parse().unwrap(), &"team/app:v1".parse().unwrap())
        .unwrap();
    let before = tokens.requests();
    for _ in 0..3 {
        let mut s = registry.session(&target, creds("admin", "admin-pass-1"), TokenReuse::Cached);
        let pinged = s.ping().await.unwrap();
        s.authenticate(&pinged.challenges).await.unwrap();
        berth_registry::manifest::resolve(&mut s, "v1")
            .await
            .unwrap();
    }
    assert_eq!(
        tokens.requests() - before,
        1,
        "one token for three sessions"
    );
    // Another credential gets its own token.
    let mut s = registry.session(
        &target,
        creds("limited", "limited-pass-1"),
        TokenReuse::Cached,
    );
    let pinged = s.ping().await.unwrap();
    s.authenticate(&pinged.challenges).await.unwrap();
    assert_eq!(tokens.requests() - before, 2);
}

#[tokio::test]
async fn https_with_a_private_ca() {
    let (reg, ca_pem) = LocalRegistry::htpasswd_tls(&[("alice", "tls-pass-1")]);
    hello().push(&reg, "team/app:v1");
    let url = reg.authority();
    // Not in the insecure list: HTTPS. Without the CA, the certificate is refused.
    let plain = berth_registry::NetworkPolicy::from_lists("127.0.0.1/32", "").unwrap();
    let r = run(
        plain.clone(),
        &url,
        "team/app:v1",
        creds("alice", "tls-pass-1"),
    )
    .await;
    assert_eq!(r.code, Code::NetworkError, "{r:?}");
    assert!(
        r.message.to_lowercase().contains("certificate"),
        "{}",
        r.message
    );
    // With BERTH_REGISTRY_CA_FILE's roots, it works.
    let mut with_ca = plain;
    with_ca.extra_roots_pem = Some(ca_pem.into_bytes());
    let r = run(with_ca, &url, "team/app:v1", creds("alice", "tls-pass-1")).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert_eq!(
        steps(&r),
        vec![
            (Ping, true, Some(401)),
            (Token, true, Some(200)),
            (Manifest, true, Some(200))
        ]
    );
}
