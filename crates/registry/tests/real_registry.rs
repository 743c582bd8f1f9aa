//! The preflight against Debian's docker-registry, with htpasswd and token auth.

mod common;

use berth_registry::preflight::StepName::{Manifest, Ping, Token};
use berth_registry::{Code, Registry, TokenReuse};
use berth_testkit::{Grant, LocalRegistry, TestImage, TokenServer, TokenServerMode, User};
use common::{creds, policy, run, steps};

fn hello() -> TestImage {
    TestImage::build(
        &[("hello.txt", b"hello from berth")],
        &["/bin/sh", "-c", "cat /hello.txt"],
    )
}

#[tokio::test]
async fn htpasswd_registry_every_code() {
    let reg = LocalRegistry::htpasswd(&[("alice", "correct horse battery"), ("bob", "bobs-pass")]);
    let img = hello();
    img.push(&reg, "team/app:v1");
    let url = reg.authority();
    let p = || policy(&[&url]);

    // ok: the three steps, and the digest that was pushed.
    let r = run(
        p(),
        &url,
        "team/app:v1",
        creds("alice", "correct horse battery"),
    )
    .await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert!(r.ok);
    assert_eq!(
        steps(&r),
        vec![
            (Ping, true, Some(401)),
            (Token, true, Some(200)),
            (Manifest, true, Some(200))
        ]
    );
    assert_eq!(r.digest.as_ref().unwrap().to_string(), img.digest);

    // The image may name the registry host too; and a digest reference works.
    let r = run(
        p(),
        &url,
        &format!("{url}/team/app@{}", img.digest),
        creds("bob", "bobs-pass"),
    )
    .await;
    assert_eq!(r.code, Code::Ok, "{r:?}");

    // A wrong password.
    let r = run(p(), &url, "team/app:v1", creds("alice", "wrong")).await;
    assert_eq!(r.code, Code::AuthFailed, "{r:?}");
    assert!(
        r.message.contains("rejected the username or password"),
        "{}",
        r.message
    );
    assert_eq!(
        steps(&r),
        vec![(Ping, true, Some(401)), (Token, false, Some(401))]
    );

    // No credentials for a registry that wants them.
    let r = run(p(), &url, "team/app:v1", None).await;
    assert_eq!(r.code, Code::AuthFailed, "{r:?}");
    assert!(r.message.contains("requires credentials"), "{}", r.message);

    // A tag that does not exist, and a repository that does not exist.
    let r = run(
        p(),
        &url,
        "team/app:nope",
        creds("alice", "correct horse battery"),
    )
    .await;
    assert_eq!(r.code, Code::ManifestNotFound, "{r:?}");
    assert!(r.message.contains("has no tag nope"), "{}", r.message);
    assert!(r.message.contains("MANIFEST_UNKNOWN"), "{}", r.message);
    assert_eq!(r.steps.last().unwrap().status, Some(404));
    let r = run(
        p(),
        &url,
        "team/ghost:v1",
        creds("alice", "correct horse battery"),
    )
    .await;
    assert_eq!(r.code, Code::ManifestNotFound, "{r:?}");

    // An image that names another registry than the URL.
    let r = run(
        p(),
        &url,
        "ghcr.io/team/app:v1",
        creds("alice", "correct horse battery"),
    )
    .await;
    assert_eq!(r.code, Code::InvalidUrl, "{r:?}");
    assert!(r.message.contains("ghcr.io"), "{}", r.message);
    assert!(r.steps.is_empty());

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

    // The `host:port` trap: repository `test.com`, tag `5000`, with a hint.
    let r = run(
        p(),
        &url,
        "test.com:5000",
        creds("alice", "correct horse battery"),
    )
    .await;
    assert_eq!(r.code, Code::ManifestNotFound, "{r:?}");
    assert!(r.message.contains("reads as repository"), "{}", r.message);
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
    let p = || policy(&[&url]);

    let r = run(p(), &url, "team/app:v1", creds("admin", "admin-pass-1")).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert_eq!(
        steps(&r),
        vec![
            (Ping, true, Some(401)),
            (Token, true, Some(200)),
            (Manifest, true, Some(200))
        ]
    );
    assert!(
        r.steps[1].detail.contains("authenticated token"),
        "{}",
        r.steps[1].detail
    );

    // A user limited to team/app.
    let r = run(p(), &url, "team/app:v1", creds("limited", "limited-pass-1")).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    let r = run(
        p(),
        &url,
        "team/other:v1",
        creds("limited", "limited-pass-1"),
    )
    .await;
    assert_eq!(r.code, Code::AuthFailed, "{r:?}");
    assert!(
        r.message
            .contains("accepted these credentials, but they grant no pull access to team/other"),
        "{}",
        r.message
    );

    // A valid login with no rights at all, and a rejected password: told apart.
    let r = run(p(), &url, "team/app:v1", creds("nobody", "nobody-pass-1")).await;
    assert_eq!(r.code, Code::AuthFailed);
    assert!(r.message.contains("grant no pull access"), "{}", r.message);
    let r = run(p(), &url, "team/app:v1", creds("admin", "wrong-pass")).await;
    assert_eq!(r.code, Code::AuthFailed);
    assert!(
        r.message.contains("rejected the username or password"),
        "{}",
        r.message
    );
    assert!(r.message.contains("UNAUTHORIZED"), "{}", r.message);

    // Anonymous: fine on a public repository, refused on a private one.
    let r = run(p(), &url, "public/app:v1", None).await;
    assert_eq!(r.code, Code::Ok, "{r:?}");
    assert!(
        r.steps[1].detail.contains("anonymous token"),
        "{}",
        r.steps[1].detail
    );
    let r = run(p(), &url, "team/app:v1", None).await;
    assert_eq!(r.code, Code::AuthFailed, "{r:?}");

    let r = run(
        p(),
        &url,
        "team/app:missing",
        creds("admin", "admin-pass-1"),
    )
    .await;
    assert_eq!(r.code, Code::ManifestNotFound, "{r:?}");

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
