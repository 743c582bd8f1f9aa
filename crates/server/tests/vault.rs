//! The vault through the server: replicas sharing one PostgreSQL, a wrong master key,
//! tampered and swapped ciphertexts, rotation while serving.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn two_replicas_on_one_postgres_behave_as_one() {
    let registry = Registry::start();
    let url = registry.url();
    let (_dirs, config_a, config_b) = replica_configs(&url);
    let a = Server::start(config_a).await;
    let b = Server::start(config_b).await;
    assert!(
        b.admin_token.is_empty(),
        "only the first replica creates the admin"
    );

    let admin_a = a.admin();
    let alice_a = admin_a.new_user("alice").await;
    let alice_b = b.client(&alice_a.token);
    alice_a.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice_a
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Saved through A, used by B: B decrypts the password to run the preflight.
    let (s, v) = alice_b
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"image": "team/app:v2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["registry"]["verified"], true);

    // One rate limit across replicas (the two saves above counted, one on each).
    let body = json!({"registry_url": url, "username": "ci", "password": PASSWORD, "image": "team/app:v1"});
    for c in [&alice_a, &alice_b, &alice_a] {
        assert_eq!(
            c.post("/v1/preflight", body.clone()).await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        alice_b.post("/v1/preflight", body.clone()).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        alice_a.post("/v1/preflight", body).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    a.running.stop().await;
    b.running.stop().await;
}

#[tokio::test]
async fn a_wrong_master_key_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, "", None)).await;
    server.running.stop().await;
    // Another key file in its place.
    let other = tempfile::tempdir().unwrap();
    berth_vault::Keyring::open(berth_vault::KeySource::File(other.path().join("k"))).unwrap();
    std::fs::copy(other.path().join("k"), dir.path().join("master.key")).unwrap();
    let err = berth_server::start(config(dir.path(), Db::Sqlite, "", None))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("master key does not match"),
        "{err}"
    );
    // A wrong key given by env.
    let err = berth_server::start(config(dir.path(), Db::Sqlite, "", Some(random_key())))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("master key does not match"),
        "{err}"
    );
}

#[tokio::test]
async fn tampered_or_swapped_ciphertexts_are_refused() {
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    for name in ["one", "two"] {
        let (s, v) = alice
            .post("/v1/projects/web/services", json!({"name": name, "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    use berth_store::prelude::*;
    let store = &server.running.store;
    let rows = store.sealed_credentials().await.unwrap();
    let (one, two) = (&rows[0], &rows[1]);

    // A flipped byte.
    let mut flipped = one.sealed_password.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(store
        .reseal_credential(&one.service_id, &one.sealed_password, &flipped)
        .await
        .unwrap());
    // A ciphertext copied from another row.
    assert!(store
        .reseal_credential(&two.service_id, &two.sealed_password, &one.sealed_password)
        .await
        .unwrap());
    for name in ["one", "two"] {
        let (s, v) = alice
            .put(
                &format!("/v1/projects/web/services/{name}/registry"),
                json!({"image": "team/app:v2"}),
            )
            .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::INTERNAL_SERVER_ERROR, Some("vault_error")),
            "{name}: {v}"
        );
        assert!(!v.to_string().contains(PASSWORD));
    }
    server.running.stop().await;
}

#[tokio::test]
async fn rotation_while_serving() {
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), Db::Sqlite, &url, None);
    let server = Server::start(cfg.clone()).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD),
            "secrets": {"API_KEY": "k-one", "TLS_KEY": "k-two"}, "secret_files": ["TLS_KEY"]}))
        .await;

    // The registry password and the service's two secrets.
    let (version, resealed) = berth_server::rotate_master_key(&cfg).await.unwrap();
    assert_eq!((version, resealed), (2, 3));
    // The running server reads version 2 from the key file on demand.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/api/registry",
            json!({"image": "team/app:v2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // New saves use version 2.
    use berth_store::prelude::*;
    let rows = server.running.store.sealed_credentials().await.unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(
            berth_vault::Sealed(row.sealed_password.clone()).key_version(),
            Some(2),
            "{:?}",
            row.secret_name
        );
    }
    server.running.stop().await;
    // And a restart checks the key against the re-sealed check value.
    let server = Server::start(cfg).await;
    server.running.stop().await;
}
