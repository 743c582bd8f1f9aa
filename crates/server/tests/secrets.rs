//! A whole scenario with trace logging, then a grep of the data dir (database, WAL,
//! key file, everything) and of the logs for the passwords, `user:password` in base64
//! and the passwords in base64. None may appear. The same for the cloud kinds: a
//! Google service account key, AWS keys and the ECR token minted from them.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_in_the_data_dir_or_the_logs() {
    // berth's own filter at the most the operator can ask.
    let logs = Captured::at_trace();

    berth_testkit::require("runc");
    let registry = Registry::start();
    // The runner starts lazily (eStargz): the session its mounts read through,
    // and the background pull after it, hold the credentials too.
    let layer = berth_testkit::estargz::encode(&berth_testkit::fixtures::estargz_busybox());
    berth_testkit::estargz::image(
        &[(&layer, layer.annotations())],
        &[
            "/bin/sh",
            "-c",
            "trap 'exit 0' TERM; echo running; while true; do sleep 1; done",
        ],
    )
    .push(&registry.reg, "team/app:run");
    let url = registry.url();
    // Once with the defaults (key file, sealed in the database), once on AWS (KMS
    // data keys, Secrets Manager; moto on loopback, whose SDK traffic is logged too).
    let moto = berth_testkit::Moto::shared();
    let kms_key = moto.create_kms_key().await;
    let (dir, aws_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut tokens = scenario(config(dir.path(), Db::Sqlite, &url, None), &url).await;
    let mut aws = config(aws_dir.path(), Db::Sqlite, &url, None);
    aws.vault.kms_key_id = Some(kms_key);
    aws.vault.secret_store = berth_server::SecretStoreKind::AwsSecretsManager;
    tokens.extend(scenario(aws, &url).await);
    // Once on PostgreSQL: its own files (tables, WAL) are searched too.
    let pg_dir = tempfile::tempdir().unwrap();
    tokens.extend(scenario(config(pg_dir.path(), Db::Postgres, &url, None), &url).await);
    // The cloud kinds: a Google key and ECR keys, saved and deployed with.
    let ecr = berth_testkit::LocalRegistry::htpasswd(&[("AWS", ECR_TOKEN)]);
    berth_testkit::fixtures::busybox(
        "trap 'exit 0' TERM; echo running; while true; do sleep 1; done",
    )
    .push(&ecr, "team/app:run");
    let cloud_dir = tempfile::tempdir().unwrap();
    let insecure = format!("{url},{}", ecr.authority());
    tokens.extend(
        cloud(
            config(cloud_dir.path(), Db::Sqlite, &insecure, None),
            &url,
            &ecr.authority(),
        )
        .await,
    );

    let logs = logs.text();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    assert!(logs.len() > 1000, "logs were captured");
    let data_dirs = [dir.path(), aws_dir.path(), cloud_dir.path(), pg_dir.path()];
    let files: Vec<_> = data_dirs
        .iter()
        .flat_map(|d| files_under(d))
        .chain(files_under(&berth_testkit::Postgres::shared().data_dir()))
        .collect();
    assert!(
        files.iter().any(|f| f.ends_with("berth.db-wal"))
            || files.iter().any(|f| f.ends_with("berth.db"))
    );
    assert!(
        files.iter().any(|f| f.to_string_lossy().contains("pg_wal")),
        "PostgreSQL's WAL is searched"
    );
    for secret in all_secret_forms() {
        if let Some(at) = logs.find(&secret) {
            let line_start = logs[..at].rfind('\n').map_or(0, |i| i + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |i| at + i);
            panic!(
                "a secret form appears in the logs: {secret}, in:\n{}",
                &logs[line_start..line_end.min(line_start + 2000)]
            );
        }
    }
    assert_no_secret_in(&files);
    // API tokens (users' and projects') are secrets too: never logged, kept only as
    // hashes.
    assert!(tokens.iter().any(|t| t.starts_with("berth_pt_")));
    for t in &tokens {
        assert!(!logs.contains(t.as_str()));
        assert_not_in(&files, t, "an API token");
    }
    // So are the registry's bearer tokens (in memory only: never logged, never on
    // disk), the admin token (only in its 0600 file) and the master key (only in
    // its 0600 key file).
    let bearer = registry.tokens.issued();
    assert!(!bearer.is_empty(), "the registry issued tokens");
    // Every data dir's admin token and master keys (the AWS run's keys are KMS's).
    let mut kept: Vec<(&str, String)> = Vec::new();
    for d in data_dirs {
        let admin = std::fs::read_to_string(d.join("admin-token")).unwrap();
        kept.push(("the admin token", admin.trim().to_owned()));
        if let Ok(key_file) = std::fs::read_to_string(d.join("master.key")) {
            let v: serde_json::Value = serde_json::from_str(&key_file).unwrap();
            for k in v["keys"].as_object().unwrap().values() {
                kept.push(("the master key", k.as_str().unwrap().to_owned()));
            }
        }
    }
    assert!(kept.iter().filter(|(w, _)| *w == "the master key").count() >= 3);
    let own_file = |f: &std::path::Path, name: &str| f.file_name().is_some_and(|n| n == name);
    let elsewhere: Vec<_> = files
        .iter()
        .filter(|f| !own_file(f, "admin-token") && !own_file(f, "master.key"))
        .cloned()
        .collect();
    for (what, secret) in bearer
        .iter()
        .map(|t| ("a registry token", t.clone()))
        .chain(kept)
    {
        assert!(!logs.contains(&secret), "{what} appears in the logs");
        assert_not_in(&elsewhere, &secret, what);
    }
}

/// Fails if `secret` is in any of `files` (which must not be none).
fn assert_not_in(files: &[std::path::PathBuf], secret: &str, what: &str) {
    assert!(!files.is_empty(), "no file to search");
    let finder = memchr::memmem::Finder::new(secret.as_bytes());
    for f in files {
        // A file may go while we look (a running server's temporary files).
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        assert!(
            finder.find(&bytes).is_none(),
            "{what} appears in {}",
            f.display()
        );
    }
}

const WRONG: &str = "Wr0ng-Guess-Passw0rd";

/// A service's own secrets: given as a variable, as a file, and set again.
const SVC_ENV: &str = "svc-Secret-Env-9f3cQ";
const SVC_FILE: &str = "svc-Secret-File-77abZ";
const SVC_ROTATED: &str = "svc-Secret-Rotated-e1d0W";

/// The ECR token moto mints for its account, and the AWS secret it is minted with.
const ECR_TOKEN: &str = "123456789012-auth-token";
const AWS_SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY";

fn all_secret_forms() -> Vec<String> {
    let key = berth_testkit::fixtures::GCP_KEY;
    secret_forms("ci", PASSWORD)
        .into_iter()
        .chain(secret_forms("ci", WRONG))
        .chain(secret_forms("_json_key", key))
        .chain(secret_forms("AWS", ECR_TOKEN))
        .chain(secret_forms("AKIAIOSFODNN7EXAMPLE", AWS_SECRET))
        .chain(["not-a-real-key-Gk3y".to_owned()])
        .chain(
            [SVC_ENV, SVC_FILE, SVC_ROTATED]
                .into_iter()
                .flat_map(|v| secret_forms("", v)),
        )
        .collect()
}

/// A Google key and AWS keys: saved (the key checked, the ECR token minted by
/// moto), deployed with, terminated; the API token used.
async fn cloud(cfg: berth_server::Config, url: &str, ecr: &str) -> Vec<String> {
    berth_testkit::Moto::shared();
    let server = Server::start(cfg).await;
    let carol = server.admin().new_user("carol").await;
    carol.post("/v1/projects", json!({"name": "cloud"})).await;
    let services = [
        (
            "gar",
            json!({"registry_url": url, "json_key": berth_testkit::fixtures::GCP_KEY}),
        ),
        (
            "ecr",
            json!({"registry_url": ecr, "aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
                       "aws_secret_access_key": AWS_SECRET, "aws_region": "us-east-1"}),
        ),
    ];
    for (name, registry) in services {
        let (s, v) = carol
            .post(
                "/v1/projects/cloud/services",
                json!({"name": name, "image": "team/app:run", "registry": registry}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let (s, d) = carol
            .post(
                &format!("/v1/projects/cloud/services/{name}/deployments"),
                json!({}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{d}");
        let path = format!(
            "/v1/projects/cloud/services/{name}/deployments/{}",
            d["id"].as_str().unwrap()
        );
        let d = wait_for_end(&carol, &path).await;
        assert_eq!(d["status"], "DEPLOYED", "{d}");
    }
    assert_no_secret_in(&files_under(&server.dir));
    for name in ["gar", "ecr"] {
        carol
            .delete(&format!("/v1/projects/cloud/services/{name}"))
            .await;
    }
    server.running.stop().await;
    vec![carol.token.clone()]
}

fn assert_no_secret_in(files: &[std::path::PathBuf]) {
    for secret in all_secret_forms() {
        assert_not_in(files, &secret, "a secret form");
    }
}

/// Saves, refuses, updates, tests, deploys (the credentials decrypted for the
/// pull), removes and terminates; returns the API tokens used.
async fn scenario(cfg: berth_server::Config, url: &str) -> Vec<String> {
    let url = url.to_owned();
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;

    let wrong = WRONG;
    let (s, _) = alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", wrong)}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _) = alice
        .post("/v1/projects/web/services", json!({"name": "other", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        alice
            .put(
                "/v1/projects/web/services/api/registry",
                json!({"image": "team/app:v2"})
            )
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        alice
            .put(
                "/v1/projects/web/services/api/registry",
                json!({"password": PASSWORD})
            )
            .await
            .0,
        StatusCode::OK
    );
    // Five preflights a minute per user (saves included): a second member goes on.
    let first_token = alice.token.clone();
    let alice = {
        let bob = server.admin().new_user("bob").await;
        alice
            .post("/v1/projects/web/members", json!({"user": "bob"}))
            .await;
        bob
    };
    let body = json!({"registry_url": url, "username": "ci", "password": PASSWORD, "image": "team/app:v1"});
    assert_eq!(alice.post("/v1/preflight", body).await.0, StatusCode::OK);
    let body =
        json!({"registry_url": url, "username": "ci", "password": wrong, "image": "team/app:v1"});
    assert_eq!(alice.post("/v1/preflight", body).await.0, StatusCode::OK);
    let (s, _) = alice
        .post("/v1/projects/web/services", json!({"name": "runner", "image": "team/app:run", "registry": registry_body(&url, "ci", PASSWORD),
            "secrets": {"API_KEY": SVC_ENV, "TLS_KEY": SVC_FILE}, "secret_files": ["TLS_KEY"]}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, d) = alice
        .post("/v1/projects/web/services/runner/deployments", json!({}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let path = format!(
        "/v1/projects/web/services/runner/deployments/{}",
        d["id"].as_str().unwrap()
    );
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    logs_containing_within(&alice, &format!("{path}/logs"), "background pull:", 30).await;
    // A secret set again and one removed, redeployed with.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/runner",
            json!({"secrets": {"API_KEY": SVC_ROTATED, "TLS_KEY": null}, "redeploy": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v.to_string().contains(SVC_ROTATED), "{v}");
    let path = format!(
        "/v1/projects/web/services/runner/deployments/{}",
        v["deployment"]["id"].as_str().unwrap()
    );
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    // While it runs: the blob cache, the unpacked image, the bundle, runc's state
    // and the logs hold no form of the password either.
    let files = files_under(&server.dir);
    // (A container with secrets has its spec in a tmpfs outside the data dir:
    // its bundle's config.json is a link there, which is not followed.)
    assert!(
        files.iter().any(|f| f.ends_with("state.json"))
            && files.iter().any(|f| f.ends_with("output")),
        "{files:?}"
    );
    assert_no_secret_in(&files);
    // A project token, used: its value is a secret like the others.
    let owner = server.client(&first_token);
    let (s, t) = owner
        .post("/v1/projects/web/tokens", json!({"name": "puller"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let project_token = t["token"].as_str().unwrap().to_owned();
    assert!(project_token.starts_with("berth_pt_"), "{t}");
    let (s, v) = server
        .client(&project_token)
        .post(
            "/v1/registry-credentials",
            json!({"image": format!("{url}/team/app:run")}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        alice
            .delete("/v1/projects/web/services/other/registry")
            .await
            .0,
        StatusCode::OK
    );
    for service in ["api", "runner"] {
        assert_eq!(
            alice
                .delete(&format!("/v1/projects/web/services/{service}"))
                .await
                .0,
            StatusCode::OK
        );
    }
    server.running.stop().await;

    vec![first_token, alice.token.clone(), project_token]
}
