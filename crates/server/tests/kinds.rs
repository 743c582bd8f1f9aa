//! Credential kinds against the real token registry: a Google service account key
//! (sent as `_json_key`, checked before any request), a malformed key refused
//! without a request; ECR keys minted into a token by AWS (moto on loopback) at
//! each use, directly from keys or through a role assumed with the project's
//! external id (STS, moto too).

mod common;

use berth_testkit::{Grant, LocalRegistry, TestImage, TokenServer, TokenServerMode, User};
use common::*;
use reqwest::StatusCode;
use serde_json::json;

const KEY: &str = r#"{"type":"service_account","project_id":"p","client_email":"ci@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIEv-not-a-real-key\n-----END PRIVATE KEY-----\n"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_key_is_checked_then_sent_as_json_key() {
    let tokens = TokenServer::start(
        vec![
            User::new("admin", "admin-pass-1", Grant::All),
            User::new("_json_key", KEY, Grant::Pull(vec!["team/app".into()])),
        ],
        vec![],
        TokenServerMode::GetAndPost,
    );
    let reg = LocalRegistry::token(&tokens);
    TestImage::build(&[("a", b"a")], &["/a"]).push(&reg, "team/app:v1");
    let url = reg.authority();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;

    // A key without its client_email: refused before any request to the registry.
    let before = tokens.requests();
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "bad", "image": "team/app:v1",
                   "registry": {"registry_url": url, "json_key": r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----"}"#}}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_credentials")),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("client_email"),
        "{v}"
    );
    assert_eq!(tokens.requests(), before, "no request was made");
    assert_eq!(
        alice.get("/v1/projects/web/services/bad").await.0,
        StatusCode::NOT_FOUND
    );

    // The key: kind gcp inferred from the field, user _json_key, verified.
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1", "registry": {"registry_url": url, "json_key": KEY}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["registry"]["kind"], "gcp");
    assert_eq!(v["registry"]["verified"], true);
    assert!(!v.to_string().contains("PRIVATE KEY"), "{v}");
    let (_, events) = alice.get("/v1/projects/web/audit-events").await;
    assert_eq!(events[0]["metadata"]["kind"], "gcp");
    assert!(!events.to_string().contains("PRIVATE KEY"));

    // An unknown kind.
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "x", "image": "team/app:v1",
                   "registry": {"registry_url": url, "kind": "aws", "username": "u", "password": "p"}}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_kind")),
        "{v}"
    );
    server.running.stop().await;
}

/// ECR from AWS keys: berth asks AWS (moto on loopback) for a registry token at
/// the save and at each deploy, sends it as `AWS`, and keeps only the sealed keys.
#[tokio::test(flavor = "multi_thread")]
async fn ecr_keys_are_minted_into_a_token_at_each_use() {
    berth_testkit::require("runc");
    berth_testkit::Moto::shared();
    // What moto mints for its default account; the registry knows only that.
    let reg = LocalRegistry::htpasswd(&[("AWS", "123456789012-auth-token")]);
    berth_testkit::fixtures::busybox("echo pulled from ecr; exec sleep 600")
        .push(&reg, "team/app:v1");
    let url = reg.authority();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1",
                   "registry": {"registry_url": url, "kind": "ecr", "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
                                "aws_secret_access_key": secret, "aws_region": "us-east-1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["registry"]["kind"], "ecr");
    assert_eq!(v["registry"]["verified"], true, "{v}");
    assert!(!v.to_string().contains(secret));

    let path = start_deploy(&alice, "web", "api").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");

    // Neither the keys' secret nor a minted token is anywhere in the data dir.
    for f in files_under(dir.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for needle in [secret, "123456789012-auth-token"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{} holds {needle}",
                f.display()
            );
        }
    }
    // New keys on a host that names no region keep the stored region.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"aws_access_key_id": "AKIAIOSFODNN7EXAMPL2", "aws_secret_access_key": secret}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registry"]["verified"], true, "{v}");
    // A kind change never relabels the stored keys as a password (which
    // /v1/registry-credentials would answer whole).
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"kind": "basic"}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("password_required")),
        "{v}"
    );
    let (_, v) = alice.get("/v1/projects/web/services/api").await;
    assert_eq!(v["registry"]["kind"], "ecr", "{v}");
    alice.delete("/v1/projects/web/services/api").await;

    // Through a role: berth's own identity assumes it with the project's
    // external id, which the project shows and nobody may choose.
    let (_, projects) = alice.get("/v1/projects").await;
    let external_id = projects[0]["aws_external_id"].as_str().unwrap().to_owned();
    assert!(external_id.starts_with("berth-"), "{projects}");
    let role = "arn:aws:iam::123456789012:role/berth-pull";
    let moto = berth_testkit::Moto::shared();
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "other-id", "image": "team/app:v1",
                   "registry": {"registry_url": url, "role_arn": role, "external_id": "berth-someone-else", "aws_region": "us-east-1"}}),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_credentials")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains(&external_id), "{v}");
    moto.start_recording().await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "role", "image": "team/app:v1",
                   "registry": {"registry_url": url, "role_arn": role, "aws_region": "us-east-1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["registry"]["kind"], "ecr");
    assert_eq!(v["registry"]["verified"], true, "{v}");
    let asked = moto.recorded().await;
    let assume = asked
        .iter()
        .find(|b| b.contains("Action=AssumeRole"))
        .unwrap_or_else(|| panic!("no AssumeRole in {asked:?}"));
    assert!(
        assume.contains(&format!("ExternalId={external_id}")),
        "{assume}"
    );
    assert!(
        assume.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fberth-pull"),
        "{assume}"
    );
    let path = start_deploy(&alice, "web", "role").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");

    // Another project never has berth assume alice's role with her external id
    // (no secret: AWS says so, berth shows it to every member), whatever a save
    // or an update of it contains: here the sealed form of a role naming it.
    let mallory = server.admin().new_user("mallory").await;
    mallory.post("/v1/projects", json!({"name": "evil"})).await;
    let (_, projects) = mallory.get("/v1/projects").await;
    let own_id = projects[0]["aws_external_id"].as_str().unwrap().to_owned();
    assert_ne!(own_id, external_id);
    let sealed = json!({"role_arn": role, "external_id": external_id, "aws_region": "us-east-1"})
        .to_string();
    moto.start_recording().await;
    for save_without_verifying in [false, true] {
        let (s, v) = mallory
            .post(
                "/v1/projects/evil/services",
                json!({"name": "stolen", "image": "team/app:v1", "save_without_verifying": save_without_verifying,
                       "registry": {"registry_url": url, "kind": "ecr", "username": role, "password": sealed}}),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_credentials")),
            "{v}"
        );
    }
    assert_eq!(
        mallory.get("/v1/projects/evil/services/stolen").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = mallory
        .post(
            "/v1/projects/evil/services",
            json!({"name": "own", "image": "team/app:v1",
                   "registry": {"registry_url": url, "role_arn": role, "aws_region": "us-east-1"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for update in [
        json!({"kind": "ecr", "password": sealed}),
        json!({"password": sealed}),
    ] {
        let (s, v) = mallory
            .put("/v1/projects/evil/services/own/registry", update)
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    }
    let path = start_deploy(&mallory, "evil", "own").await;
    let d = wait_for_end(&mallory, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let asked = moto.recorded().await;
    let assumed: Vec<&String> = asked
        .iter()
        .filter(|b| b.contains("Action=AssumeRole"))
        .collect();
    assert!(
        assumed
            .iter()
            .any(|b| b.contains(&format!("ExternalId={own_id}"))),
        "{assumed:?}"
    );
    assert!(
        !assumed
            .iter()
            .any(|b| b.contains(&format!("ExternalId={external_id}"))),
        "berth assumed alice's role for mallory: {assumed:?}"
    );
    alice.delete("/v1/projects/web/services/role").await;
    server.running.stop().await;
}
