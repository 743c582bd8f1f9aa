//! The AWS paths against moto on loopback (never AWS): master keys wrapped by KMS
//! (shared by replicas through the database, rotated while serving), and passwords
//! kept in Secrets Manager, one secret per service, only the ARN in the database.

mod common;

use base64::Engine;
use berth_server::SecretStoreKind;
use berth_store::prelude::*;
use berth_testkit::Moto;
use common::*;
use reqwest::StatusCode;
use serde_json::json;

async fn arn_of(server: &Server, project: &str, service: &str) -> Option<String> {
    let store = &server.running.store;
    let admin = store.user_by_name("alice").await.unwrap().unwrap();
    let m = store
        .project_for_member(project, &admin)
        .await
        .unwrap()
        .unwrap();
    let s = store.service(&m.project, service).await.unwrap().unwrap();
    // A password is in one place only: the store refuses to decode a row with both.
    s.credential?.secret.arn().map(str::to_owned)
}

fn files_contain(dir: &std::path::Path, needle: &str) -> bool {
    files_under(dir).iter().any(|p| {
        std::fs::read(p)
            .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            .unwrap_or(false)
    })
}

#[tokio::test]
async fn kms_wrapped_keys_are_shared_by_replicas_and_rotate_while_serving() {
    let moto = Moto::shared();
    let kms_key = moto.create_kms_key().await;
    let registry = Registry::start();
    let url = registry.url();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut config_a = config(dir_a.path(), Db::Postgres, &url, None);
    config_a.vault.kms_key_id = Some(kms_key.clone());
    let mut config_b = config(dir_b.path(), Db::Postgres, &url, None);
    config_b.database_url = config_a.database_url.clone();
    config_b.vault = config_a.vault.clone();
    let a = Server::start(config_a.clone()).await;
    let b = Server::start(config_b).await;
    for dir in [dir_a.path(), dir_b.path()] {
        assert!(
            !dir.join("master.key").exists(),
            "with KMS no key material is written to disk"
        );
    }

    let alice_a = a.admin().new_user("alice").await;
    let alice_b = b.client(&alice_a.token);
    alice_a.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice_a
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Sealed through A, opened by B: both unwrapped the same data key from KMS.
    let leave_as_is = json!({"image": "team/app:v2"});
    let (s, v) = alice_b
        .put(
            "/v1/projects/web/services/api/registry",
            leave_as_is.clone(),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Rotation while both serve: a new KMS data key, everything re-sealed, the old
    // version retired; both replicas follow.
    let (version, resealed) = berth_server::rotate_master_key(&config_a).await.unwrap();
    assert_eq!((version, resealed), (2, 1));
    for c in [&alice_b, &alice_a] {
        let (s, v) = c
            .put(
                "/v1/projects/web/services/api/registry",
                leave_as_is.clone(),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let stored = a
        .running
        .store
        .vault_meta("kms_keyring")
        .await
        .unwrap()
        .unwrap();
    let wrapped = berth_vault::WrappedKeyring::from_bytes(&stored).unwrap();
    assert_eq!(wrapped.active, 2);
    assert_eq!(wrapped.keys.keys().copied().collect::<Vec<_>>(), vec![2]);
    assert_eq!(wrapped.kms_key_id, kms_key);

    // The same database without KMS (a key file instead) is refused at start.
    let dir_c = tempfile::tempdir().unwrap();
    let mut config_c = config(dir_c.path(), Db::Postgres, &url, None);
    config_c.database_url = config_a.database_url.clone();
    let err = berth_server::start(config_c).await.err().expect("refused");
    assert!(
        err.to_string().contains("master key does not match"),
        "{err}"
    );
    a.running.stop().await;
    b.running.stop().await;
}

#[tokio::test]
async fn a_wrapped_key_kms_will_not_unwrap_is_a_clear_startup_error() {
    let moto = Moto::shared();
    let kms_key = moto.create_kms_key().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, "", None);
    cfg.vault.kms_key_id = Some(kms_key.clone());
    let server = Server::start(cfg.clone()).await;
    let store = server.running.store.clone();
    let stored = store.vault_meta("kms_keyring").await.unwrap().unwrap();
    server.running.stop().await;
    let store = berth_store::SqlStore::connect(&cfg.database_url)
        .await
        .unwrap();
    let original = berth_vault::WrappedKeyring::from_bytes(&stored).unwrap();
    // Version 1's wrapped key relabelled as version 2: the KMS encryption context
    // (which names the version) no longer matches.
    let mut relabelled = original.clone();
    relabelled.keys = [(2, original.keys[&1].clone())].into();
    relabelled.active = 2;
    // A flipped byte in the wrapped key.
    let mut flipped = original.clone();
    let mut blob = base64::engine::general_purpose::STANDARD
        .decode(&original.keys[&1])
        .unwrap();
    let last = blob.len() - 1;
    blob[last] ^= 1;
    flipped.keys = [(1, base64::engine::general_purpose::STANDARD.encode(blob))].into();
    let mut current = stored.clone();
    for bad in [relabelled, flipped] {
        assert!(store
            .swap_vault_meta("kms_keyring", Some(&current), &bad.to_bytes())
            .await
            .unwrap());
        current = bad.to_bytes();
        let err = berth_server::start(cfg.clone())
            .await
            .err()
            .expect("refused");
        assert!(err.to_string().contains("AWS KMS: Decrypt"), "{err}");
    }
    store.close().await;
}

#[tokio::test]
async fn secrets_manager_holds_one_secret_per_service_and_loses_it_on_terminate() {
    let moto = Moto::shared();
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!("berth-test-{}/", hex::encode(rand::random::<[u8; 4]>()));
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.vault.secret_store = SecretStoreKind::AwsSecretsManager;
    cfg.vault.secrets_manager_prefix = prefix.clone();
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let create = |name: &str, password: &str| json!({"name": name, "image": "team/app:v1", "registry": registry_body(&url, "ci", password)});

    // A refused save creates no secret.
    let (s, _) = alice
        .post("/v1/projects/web/services", create("bad", "wrong-password"))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(moto.secret_names(&prefix).await.is_empty());

    let (s, v) = alice
        .post("/v1/projects/web/services", create("api", PASSWORD))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["registry"]["password_set"], true);
    let arn = arn_of(&server, "web", "api")
        .await
        .expect("an ARN is stored");
    let secret = moto
        .secrets_manager()
        .await
        .get_secret_value()
        .secret_id(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(secret.secret_string.as_deref(), Some(PASSWORD));
    let first = moto.secret_names(&prefix).await;
    assert_eq!(first.len(), 1);

    // Leave-as-is reads the password back from Secrets Manager; the save makes a
    // new secret and deletes the old one.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"image": "team/app:v2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registry"]["verified"], true);
    let second = moto.secret_names(&prefix).await;
    assert_eq!(second.len(), 1);
    assert_ne!(first, second);

    // Removing the credentials deletes the secret; so does terminating.
    let (s, v) = alice.delete("/v1/projects/web/services/api/registry").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["registry"].is_null());
    assert!(moto.secret_names(&prefix).await.is_empty());
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            registry_body(&url, "ci", PASSWORD),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(moto.secret_names(&prefix).await.len(), 1);
    let (s, v) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "TERMINATED");
    assert!(moto.secret_names(&prefix).await.is_empty());

    server.running.stop().await;
    assert!(
        !files_contain(dir.path(), PASSWORD),
        "the password never touches the data dir"
    );
}
