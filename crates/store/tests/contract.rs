//! One contract suite, run on SQLite and on PostgreSQL.

use berth_store::*;
use serde_json::json;

fn audit(action: &'static str, project: Option<&str>, service: Option<&str>) -> NewAudit {
    NewAudit {
        actor: "alice".into(),
        action,
        project: project.map(str::to_owned),
        service: service.map(str::to_owned),
        metadata: json!({"k": "v"}),
    }
}

fn cred(url: &str, sealed: &[u8]) -> NewCredential {
    NewCredential {
        registry_url: url.into(),
        username: "bob".into(),
        sealed_password: sealed.to_vec(),
        secret_arn: None,
        verified: true,
    }
}

async fn got_service(store: &SqlStore, p: &Project, name: &str) -> Service {
    store.service(p, name).await.unwrap().unwrap()
}

async fn contract(store: SqlStore) {
    // Users.
    let alice = store
        .create_user(
            "alice",
            "hash-a",
            UserRole::Admin,
            audit("user.create", None, None),
        )
        .await
        .unwrap();
    let bob = store
        .create_user(
            "bob",
            "hash-b",
            UserRole::User,
            audit("user.create", None, None),
        )
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_user(
                "alice",
                "hash-c",
                UserRole::User,
                audit("user.create", None, None)
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .user_by_token_hash("hash-a")
            .await
            .unwrap()
            .unwrap()
            .name,
        "alice"
    );
    assert!(store.user_by_token_hash("nope").await.unwrap().is_none());
    assert_eq!(
        store.user_by_name("bob").await.unwrap().unwrap().role,
        UserRole::User
    );
    assert_eq!(store.count_users().await.unwrap(), 2);

    // Projects and membership.
    let p = store
        .create_project("web", &alice, audit("project.create", Some("web"), None))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_project("web", &bob, audit("project.create", Some("web"), None))
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .project_for_member("web", &alice)
            .await
            .unwrap()
            .unwrap()
            .role,
        MemberRole::Owner
    );
    assert!(store
        .project_for_member("web", &bob)
        .await
        .unwrap()
        .is_none());
    store
        .add_member(&p, &bob, audit("project.member.add", Some("web"), None))
        .await
        .unwrap();
    assert_eq!(
        store
            .project_for_member("web", &bob)
            .await
            .unwrap()
            .unwrap()
            .role,
        MemberRole::Member
    );
    assert!(matches!(
        store
            .add_member(&p, &bob, audit("project.member.add", Some("web"), None))
            .await,
        Err(StoreError::Conflict(_))
    ));

    // Services: a refused save stores nothing.
    let new = |name: &str| NewService {
        id: new_id(),
        project_id: p.id.clone(),
        name: name.into(),
        image: "app:v1".into(),
    };
    let s = store
        .create_service(
            new("api"),
            Some(cred("ghcr.io", b"sealed-1")),
            audit("service.create", Some("web"), Some("api")),
        )
        .await
        .unwrap();
    let events_before = store.audit_events(&p, None, None, 100).await.unwrap().len();
    assert!(matches!(
        store
            .create_service(
                new("api"),
                Some(cred("x.io", b"sealed-x")),
                audit("service.create", Some("web"), Some("api"))
            )
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.audit_events(&p, None, None, 100).await.unwrap().len(),
        events_before,
        "no audit for a refused save"
    );
    assert_eq!(
        store.sealed_credentials().await.unwrap().len(),
        1,
        "no credential for a refused save"
    );

    let got = store.service(&p, "api").await.unwrap().unwrap();
    assert_eq!(got.id, s.id);
    assert_eq!(got.status, STATUS_CREATED);
    let c = got.credential.clone().unwrap();
    assert_eq!(
        (
            c.registry_url.as_str(),
            c.username.as_str(),
            c.sealed_password.as_slice(),
            c.verified
        ),
        ("ghcr.io", "bob", &b"sealed-1"[..], true)
    );
    store
        .create_service(
            new("worker"),
            None,
            audit("service.create", Some("web"), Some("worker")),
        )
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_services(&p)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["api", "worker"]);
    assert!(store
        .service(&p, "worker")
        .await
        .unwrap()
        .unwrap()
        .credential
        .is_none());

    // Update, remove, terminate.
    store
        .put_credential(
            &got,
            Some("app:v2"),
            cred("ghcr.io", b"sealed-2"),
            audit("service.update", Some("web"), Some("api")),
        )
        .await
        .unwrap();
    let got = store.service(&p, "api").await.unwrap().unwrap();
    assert_eq!(got.image, "app:v2");
    assert_eq!(
        got.credential.as_ref().unwrap().sealed_password,
        b"sealed-2"
    );
    // A credential held by Secrets Manager: only its ARN is stored, and rotation
    // does not list it (there is nothing sealed to re-seal).
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:berth/x";
    store
        .create_service(
            new("sm"),
            Some(NewCredential {
                sealed_password: Vec::new(),
                secret_arn: Some(arn.into()),
                ..cred("ghcr.io", b"")
            }),
            audit("service.create", Some("web"), Some("sm")),
        )
        .await
        .unwrap();
    let sm = got_service(&store, &p, "sm").await.credential.unwrap();
    assert_eq!(sm.secret_arn.as_deref(), Some(arn));
    assert!(sm.password_set());
    assert!(store
        .sealed_credentials()
        .await
        .unwrap()
        .iter()
        .all(|r| !r.sealed_password.is_empty()));
    assert!(store
        .reseal_credential(&got.id, b"sealed-2", b"sealed-3")
        .await
        .unwrap());
    assert!(
        !store
            .reseal_credential(&got.id, b"sealed-2", b"sealed-4")
            .await
            .unwrap(),
        "compare-and-swap"
    );
    assert!(store
        .delete_credential(
            &got,
            audit("service.registry.remove", Some("web"), Some("api"))
        )
        .await
        .unwrap());
    assert!(!store
        .delete_credential(
            &got,
            audit("service.registry.remove", Some("web"), Some("api"))
        )
        .await
        .unwrap());
    store
        .put_credential(
            &got,
            None,
            cred("ghcr.io", b"sealed-5"),
            audit("service.update", Some("web"), Some("api")),
        )
        .await
        .unwrap();
    store
        .terminate_service(&got, audit("service.terminate", Some("web"), Some("api")))
        .await
        .unwrap();
    let got = store.service(&p, "api").await.unwrap().unwrap();
    assert_eq!(got.status, STATUS_TERMINATED);
    assert!(got.credential.is_none());
    assert!(store.sealed_credentials().await.unwrap().is_empty());
    assert!(matches!(
        store
            .put_credential(
                &got,
                None,
                cred("ghcr.io", b"s"),
                audit("service.update", Some("web"), Some("api"))
            )
            .await,
        Err(StoreError::NotFound)
    ));

    // Audit: newest first, paged, filtered by service.
    let all = store.audit_events(&p, None, None, 100).await.unwrap();
    let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions.first(), Some(&"service.terminate"));
    assert_eq!(actions.last(), Some(&"project.create"));
    assert_eq!(all[0].metadata, json!({"k": "v"}));
    let page1 = store.audit_events(&p, None, None, 2).await.unwrap();
    let page2 = store
        .audit_events(&p, None, Some(page1[1].id), 2)
        .await
        .unwrap();
    assert_eq!(page2[0].id, all[2].id);
    let worker = store
        .audit_events(&p, Some("worker"), None, 100)
        .await
        .unwrap();
    assert_eq!(worker.len(), 1);

    // Rate limit: 5 a window, per key; old hits pruned.
    for i in 0..5 {
        assert!(store
            .rate_limit_hit("u1", 1_000 + i, 60_000, 5)
            .await
            .unwrap());
    }
    assert!(!store.rate_limit_hit("u1", 1_010, 60_000, 5).await.unwrap());
    assert!(store.rate_limit_hit("u2", 1_010, 60_000, 5).await.unwrap());
    assert!(store.rate_limit_hit("u1", 61_005, 60_000, 5).await.unwrap());

    // Deployments: a durable queue.
    let worker = store.service(&p, "worker").await.unwrap().unwrap();
    let d1 = store
        .create_deployment(
            &worker,
            audit("deployment.create", Some("web"), Some("worker")),
        )
        .await
        .unwrap();
    let d2 = store
        .create_deployment(
            &worker,
            audit("deployment.create", Some("web"), Some("worker")),
        )
        .await
        .unwrap();
    assert_eq!(
        store.service(&p, "worker").await.unwrap().unwrap().status,
        PENDING_DEPLOY
    );
    let claimed = store
        .claim_deployment("http://replica-a:8440")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.id.as_str(), claimed.status.as_str()),
        (d1.id.as_str(), DEPLOYING)
    );
    assert_eq!(
        claimed.replica_url.as_deref(),
        Some("http://replica-a:8440")
    );
    store
        .finish_deployment(
            &claimed,
            Outcome::Deployed {
                digest: "sha256:ab".into(),
            },
        )
        .await
        .unwrap();
    let got = store.deployment(&worker, &d1.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.digest.as_deref()),
        (DEPLOYED, Some("sha256:ab"))
    );
    assert_eq!(
        store.service(&p, "worker").await.unwrap().unwrap().status,
        DEPLOYED
    );
    let claimed = store
        .claim_deployment("http://replica-a:8440")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, d2.id);
    assert!(store
        .claim_deployment("http://replica-a:8440")
        .await
        .unwrap()
        .is_none());
    // Alive (a fresh heartbeat): another replica's repair leaves it alone.
    store.heartbeat(&claimed).await.unwrap();
    assert_eq!(
        store
            .repair_deployments("2000-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        0
    );
    // A server that died mid-deploy (no heartbeat since): marked FAILED, its
    // service too.
    assert_eq!(
        store
            .repair_deployments("2999-01-01T00:00:00.000Z")
            .await
            .unwrap(),
        1
    );
    assert_eq!(got_service(&store, &p, "worker").await.status, FAILED);
    let got = store.deployment(&worker, &d2.id).await.unwrap().unwrap();
    assert_eq!(
        (got.status.as_str(), got.failure_code.as_deref()),
        (FAILED, Some("runtime_error"))
    );
    assert_eq!(store.deployments_of(&worker).await.unwrap().len(), 2);
    assert!(
        store
            .deployment(&got_service(&store, &p, "api").await, &d1.id)
            .await
            .unwrap()
            .is_none(),
        "scoped to its service"
    );
    assert!(
        matches!(
            store
                .create_deployment(
                    &got_service(&store, &p, "api").await,
                    audit("deployment.create", Some("web"), Some("api"))
                )
                .await,
            Err(StoreError::NotFound)
        ),
        "no deploys of a terminated service"
    );

    // A new deployed deployment replaces the one that ran: REMOVED, and only the
    // new one is live; terminating the service removes it too.
    let live = |store: &SqlStore| {
        let store = store.clone();
        async move {
            let mut l: Vec<_> = store
                .live_deployments()
                .await
                .unwrap()
                .into_iter()
                .map(|d| (d.id, d.digest))
                .collect();
            l.sort();
            l
        }
    };
    assert_eq!(
        live(&store).await,
        [(d1.id.clone(), "sha256:ab".to_owned())]
    );
    let d3 = store
        .create_deployment(
            &worker,
            audit("deployment.create", Some("web"), Some("worker")),
        )
        .await
        .unwrap();
    let claimed = store
        .claim_deployment("http://replica-a:8440")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, d3.id);
    store
        .finish_deployment(
            &claimed,
            Outcome::Deployed {
                digest: "sha256:cd".into(),
            },
        )
        .await
        .unwrap();
    let status = |id: String| {
        let (store, worker) = (store.clone(), worker.clone());
        async move {
            store
                .deployment(&worker, &id)
                .await
                .unwrap()
                .unwrap()
                .status
        }
    };
    assert_eq!(status(d1.id.clone()).await, REMOVED);
    assert_eq!(
        status(d2.id.clone()).await,
        FAILED,
        "only DEPLOYED is replaced"
    );
    assert_eq!(
        live(&store).await,
        [(d3.id.clone(), "sha256:cd".to_owned())]
    );
    store
        .terminate_service(
            &worker,
            audit("service.terminate", Some("web"), Some("worker")),
        )
        .await
        .unwrap();
    assert_eq!(status(d3.id.clone()).await, REMOVED);
    assert!(live(&store).await.is_empty());
    assert_eq!(
        store
            .project_name(&worker.project_id)
            .await
            .unwrap()
            .as_deref(),
        Some("web")
    );
    assert_eq!(store.project_name("nope").await.unwrap(), None);

    // Vault key check.
    assert!(store.key_check().await.unwrap().is_none());
    store.set_key_check(b"check").await.unwrap();
    store.set_key_check(b"check2").await.unwrap();
    assert_eq!(store.key_check().await.unwrap().unwrap(), b"check2");

    // Vault values: first writer wins, then compare-and-swap.
    assert!(store.vault_meta("kms").await.unwrap().is_none());
    assert!(store.swap_vault_meta("kms", None, b"a").await.unwrap());
    assert!(!store.swap_vault_meta("kms", None, b"b").await.unwrap());
    assert!(!store
        .swap_vault_meta("kms", Some(b"x"), b"b")
        .await
        .unwrap());
    assert!(store
        .swap_vault_meta("kms", Some(b"a"), b"b")
        .await
        .unwrap());
    assert_eq!(store.vault_meta("kms").await.unwrap().unwrap(), b"b");
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("berth.db").display()
    );
    contract(SqlStore::connect(&url).await.unwrap()).await;
    // Reopening migrates nothing twice.
    SqlStore::connect(&url).await.unwrap();
}

#[tokio::test]
async fn postgres() {
    let url = berth_testkit::Postgres::shared().create_database();
    contract(SqlStore::connect(&url).await.unwrap()).await;
    SqlStore::connect(&url).await.unwrap();
}
