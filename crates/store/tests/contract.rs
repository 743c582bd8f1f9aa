//! The store's contract: one test per behaviour, each run on SQLite and on
//! PostgreSQL (`contract!` makes the pair), so a failure names the invariant and
//! the backend.

use berth_store::*;
use berth_types::Digest;
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

fn sealed(url: &str, sealed: &[u8]) -> NewCredential {
    NewCredential {
        registry_url: url.parse().unwrap(),
        kind: berth_types::CredentialKind::Basic,
        username: "bob".into(),
        secret: StoredSecret::Sealed(sealed.to_vec()),
        verified: true,
    }
}

fn digest(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

async fn sqlite() -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("berth.db").display()
    );
    (SqlStore::connect(&url).await.unwrap(), dir)
}

async fn postgres() -> SqlStore {
    let url = berth_testkit::Postgres::shared().create_database();
    SqlStore::connect(&url).await.unwrap()
}

/// `contract!(name, |store| async { ... })`: the behaviour, on both databases.
macro_rules! contract {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn sqlite() {
                let (store, _dir) = super::sqlite().await;
                ($body)(store).await;
            }

            #[tokio::test]
            async fn postgres() {
                ($body)(super::postgres().await).await;
            }
        }
    };
}

/// Two users and a project owned by alice.
struct Fx {
    alice: User,
    bob: User,
    p: Project,
}

async fn fixture(store: &SqlStore) -> Fx {
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
    let p = store
        .create_project("web", &alice, audit("project.create", Some("web"), None))
        .await
        .unwrap();
    Fx { alice, bob, p }
}

fn new_service(p: &Project, name: &str) -> NewService {
    NewService {
        id: ServiceId::random(),
        project_id: p.id.clone(),
        name: name.into(),
        image: "app:v1".parse().unwrap(),
        resources: Resources::default(),
        restart_policy: RestartPolicy::default(),
        traffic: Traffic::default(),
        settings: Settings::default(),
    }
}

fn traffic_change(t: &Traffic) -> SettingsChange {
    SettingsChange {
        traffic: t.clone(),
        ..SettingsChange::default()
    }
}

async fn service(store: &SqlStore, p: &Project, name: &str, c: Option<NewCredential>) -> Service {
    store
        .create_service(
            new_service(p, name),
            Vec::new(),
            c,
            audit("service.create", Some("web"), Some(name)),
        )
        .await
        .unwrap()
}

async fn got(store: &SqlStore, p: &Project, name: &str) -> Service {
    store.service(p, name).await.unwrap().unwrap()
}

/// Queues a deployment of `s` and claims it (the only one pending).
async fn claim_new(store: &SqlStore, s: &Service) -> Deployment {
    store
        .create_deployment(s, audit("deployment.create", Some("web"), Some(&s.name)))
        .await
        .unwrap();
    store
        .claim_deployment("http://a:8440", &Busy::default())
        .await
        .unwrap()
        .unwrap()
}

/// Queues, claims and records deployed with `d` a deployment of `s`.
async fn deploy(store: &SqlStore, s: &Service, d: Digest) -> Deployment {
    let claimed = claim_new(store, s).await;
    store
        .finish_deployment(&claimed, Outcome::Deployed { digest: d })
        .await
        .unwrap();
    claimed
}

contract!(
    users_are_unique_and_found_by_token,
    |store: SqlStore| async move {
        fixture(&store).await;
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
        let a = store.user_by_token_hash("hash-a").await.unwrap().unwrap();
        assert_eq!(a.name, "alice");
        assert!(store.user_by_token_hash("nope").await.unwrap().is_none());
        assert_eq!(
            store.user_by_name("bob").await.unwrap().unwrap().role,
            UserRole::User
        );
        assert_eq!(store.count_users().await.unwrap(), 2);
    }
);

contract!(
    projects_have_owners_and_members,
    |store: SqlStore| async move {
        let Fx { alice, bob, p } = fixture(&store).await;
        assert!(matches!(
            store
                .create_project("web", &bob, audit("project.create", Some("web"), None))
                .await,
            Err(StoreError::Conflict(_))
        ));
        let role = |u: User| {
            let store = store.clone();
            async move {
                store
                    .project_for_member("web", &u)
                    .await
                    .unwrap()
                    .map(|m| m.role)
            }
        };
        assert_eq!(role(alice.clone()).await, Some(MemberRole::Owner));
        assert_eq!(role(bob.clone()).await, None, "not a member: not found");
        let listed = |u: User| {
            let store = store.clone();
            async move {
                store
                    .projects_of(&u)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| (m.project.name, m.role))
                    .collect::<Vec<_>>()
            }
        };
        store
            .create_project("api", &bob, audit("project.create", Some("api"), None))
            .await
            .unwrap();
        assert_eq!(
            listed(bob.clone()).await,
            vec![("api".to_owned(), MemberRole::Owner)]
        );
        store
            .add_member(&p, &bob, audit("project.member.add", Some("web"), None))
            .await
            .unwrap();
        assert_eq!(role(bob.clone()).await, Some(MemberRole::Member));
        assert_eq!(
            listed(bob.clone()).await,
            vec![
                ("api".to_owned(), MemberRole::Owner),
                ("web".to_owned(), MemberRole::Member)
            ],
            "by name, with the role in each"
        );
        assert_eq!(
            listed(alice.clone()).await,
            vec![("web".to_owned(), MemberRole::Owner)]
        );
        assert!(matches!(
            store
                .add_member(&p, &bob, audit("project.member.add", Some("web"), None))
                .await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            store.project_name(&p.id).await.unwrap().as_deref(),
            Some("web")
        );
        assert_eq!(
            store
                .project_name(&ProjectId::from("nope".to_owned()))
                .await
                .unwrap(),
            None
        );
    }
);

contract!(
    a_domain_belongs_to_one_service_until_it_is_terminated,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let web = service(&store, &p, "web", None).await;
        assert_eq!(
            web.traffic,
            Traffic::default(),
            "a new service is public, no port"
        );
        let t = Traffic {
            port: Some(8080),
            health_path: Some("/healthz".into()),
            domains: vec!["shop.example.com".into(), "www.shop.example.com".into()],
            network: NetworkMode::None,
        };
        store
            .update_settings(
                &web,
                &traffic_change(&t),
                vec![audit("service.update", Some("web"), Some("web"))],
            )
            .await
            .unwrap();
        assert_eq!(got(&store, &p, "web").await.traffic, t);

        // Another service cannot take one of them, and its update stores nothing.
        let api = service(&store, &p, "api", None).await;
        let taken = Traffic {
            port: Some(9000),
            domains: vec!["api.example.com".into(), "shop.example.com".into()],
            ..Traffic::default()
        };
        let e = store
            .update_settings(
                &api,
                &traffic_change(&taken),
                vec![audit("service.update", Some("web"), Some("api"))],
            )
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert_eq!(got(&store, &p, "api").await.traffic, Traffic::default());

        // Terminated, the service lets its names go.
        store
            .terminate_service(&web, audit("service.terminate", Some("web"), Some("web")))
            .await
            .unwrap();
        store
            .update_settings(
                &api,
                &traffic_change(&taken),
                vec![audit("service.update", Some("web"), Some("api"))],
            )
            .await
            .unwrap();
        assert_eq!(got(&store, &p, "api").await.traffic.domains, taken.domains);
    }
);

contract!(
    settings_and_secrets_read_back_and_go_with_the_service,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let web = service(&store, &p, "web", None).await;
        assert_eq!(web.settings, Settings::default());
        assert!(web.secrets.is_empty());
        let settings = Settings {
            env: [("DATABASE_URL".to_owned(), "postgres://db/app".to_owned())].into(),
            command: Some(vec!["/bin/app".into()]),
            args: Some(vec!["--serve".into(), "x y".into()]),
            volume: Some(Volume {
                path: "/data".into(),
                size_mb: 64,
            }),
            region: Some("eu-west".into()),
        };
        let secret = |name: &str, bytes: &[u8], as_file| ServiceSecret {
            name: name.into(),
            as_file,
            secret: StoredSecret::Sealed(bytes.to_vec()),
            updated_at: now(),
        };
        let change = SettingsChange {
            traffic: Traffic::default(),
            settings: settings.clone(),
            set_secrets: vec![
                secret("API_KEY", b"sealed-a", false),
                secret("TLS_KEY", b"sealed-t", true),
            ],
            remove_secrets: vec![],
        };
        store
            .update_settings(
                &web,
                &change,
                vec![audit("service.update", Some("web"), Some("web"))],
            )
            .await
            .unwrap();
        let read = got(&store, &p, "web").await;
        assert_eq!(read.settings, settings);
        let names: Vec<_> = read
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.as_file))
            .collect();
        assert_eq!(names, [("API_KEY", false), ("TLS_KEY", true)]);
        let listed = store.list_services(&p).await.unwrap();
        assert_eq!(
            listed[0].secrets, read.secrets,
            "the list reads the names too"
        );
        let sealed = store.service_secrets(&web.id).await.unwrap();
        assert_eq!(sealed[0].secret, StoredSecret::Sealed(b"sealed-a".to_vec()));

        // Replaced and removed in one change.
        let change = SettingsChange {
            settings: settings.clone(),
            set_secrets: vec![secret("API_KEY", b"sealed-b", true)],
            remove_secrets: vec!["TLS_KEY".into()],
            ..SettingsChange::default()
        };
        store
            .update_settings(
                &web,
                &change,
                vec![audit("service.secret.set", Some("web"), Some("web"))],
            )
            .await
            .unwrap();
        let sealed = store.service_secrets(&web.id).await.unwrap();
        assert_eq!(sealed.len(), 1);
        assert_eq!(sealed[0].secret, StoredSecret::Sealed(b"sealed-b".to_vec()));
        assert!(sealed[0].as_file);

        store
            .terminate_service(&web, audit("service.terminate", Some("web"), Some("web")))
            .await
            .unwrap();
        assert!(store.service_secrets(&web.id).await.unwrap().is_empty());
    }
);

contract!(
    a_service_naming_a_region_is_claimed_only_there,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let eu = service(&store, &p, "eu", None).await;
        let change = SettingsChange {
            settings: Settings {
                region: Some("eu-west".into()),
                ..Settings::default()
            },
            ..SettingsChange::default()
        };
        store
            .update_settings(
                &eu,
                &change,
                vec![audit("service.update", Some("web"), Some("eu"))],
            )
            .await
            .unwrap();
        let eu = got(&store, &p, "eu").await;
        store
            .create_deployment(&eu, audit("deployment.create", Some("web"), Some("eu")))
            .await
            .unwrap();
        let us = Busy {
            region: Some("us-east".into()),
            ..Busy::default()
        };
        assert!(store.claim_deployment("us", &us).await.unwrap().is_none());
        assert!(store
            .claim_deployment("none", &Busy::default())
            .await
            .unwrap()
            .is_none());

        let since = now() - chrono::Duration::seconds(1);
        assert!(!store.region_served("eu-west", &since).await.unwrap());
        store
            .announce_replica("http://eu:8440", Some("eu-west"))
            .await
            .unwrap();
        store
            .announce_replica("http://eu:8440", Some("eu-west"))
            .await
            .unwrap();
        assert!(store.region_served("eu-west", &since).await.unwrap());
        assert!(!store.region_served("us-east", &since).await.unwrap());

        let eu_replica = Busy {
            region: Some("eu-west".into()),
            ..Busy::default()
        };
        let d = store
            .claim_deployment("eu", &eu_replica)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(d.service_id, eu.id);
    }
);

contract!(
    a_refused_save_stores_nothing,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        service(&store, &p, "api", Some(sealed("ghcr.io", b"sealed-1"))).await;
        let events_before = store.audit_events(&p, None, None, 100).await.unwrap().len();
        assert!(matches!(
            store
                .create_service(
                    new_service(&p, "api"),
                    Vec::new(),
                    Some(sealed("x.io", b"sealed-x")),
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
    }
);

contract!(services_read_back_typed, |store: SqlStore| async move {
    let Fx { p, .. } = fixture(&store).await;
    let s = service(&store, &p, "api", Some(sealed("ghcr.io", b"sealed-1"))).await;
    service(&store, &p, "worker", None).await;
    let api = got(&store, &p, "api").await;
    assert_eq!(api.id, s.id);
    assert_eq!(api.status, ServiceStatus::Created);
    assert_eq!(api.image, "app:v1".parse().unwrap());
    let c = api.credential.unwrap();
    assert_eq!(c.registry_url, "ghcr.io".parse().unwrap());
    assert_eq!(
        (c.username.as_str(), &c.secret, c.verified),
        ("bob", &StoredSecret::Sealed(b"sealed-1".to_vec()), true)
    );
    let names: Vec<String> = store
        .list_services(&p)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["api", "worker"]);
    assert!(got(&store, &p, "worker").await.credential.is_none());
    assert_eq!(
        store.service_by_id(&s.id).await.unwrap().unwrap().name,
        "api"
    );
});

contract!(
    credentials_are_replaced_removed_and_resealed,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let s = service(&store, &p, "api", Some(sealed("ghcr.io", b"sealed-1"))).await;
        store
            .put_credential(
                &s,
                Some(&"app:v2".parse().unwrap()),
                sealed("ghcr.io", b"sealed-2"),
                audit("service.update", Some("web"), Some("api")),
            )
            .await
            .unwrap();
        let api = got(&store, &p, "api").await;
        assert_eq!(api.image.to_string(), "app:v2");
        assert_eq!(
            api.credential.unwrap().secret,
            StoredSecret::Sealed(b"sealed-2".to_vec())
        );
        assert!(store
            .reseal_credential(&s.id, b"sealed-2", b"sealed-3")
            .await
            .unwrap());
        assert!(
            !store
                .reseal_credential(&s.id, b"sealed-2", b"sealed-4")
                .await
                .unwrap(),
            "compare-and-swap"
        );
        let remove = || {
            store.delete_credential(
                &s,
                audit("service.registry.remove", Some("web"), Some("api")),
            )
        };
        assert!(remove().await.unwrap());
        assert!(!remove().await.unwrap(), "nothing left to remove");
    }
);

contract!(
    a_secrets_manager_credential_keeps_only_its_arn,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:berth/x";
        service(
            &store,
            &p,
            "sm",
            Some(NewCredential {
                secret: StoredSecret::SecretsManager { arn: arn.into() },
                ..sealed("ghcr.io", b"")
            }),
        )
        .await;
        service(&store, &p, "db", Some(sealed("ghcr.io", b"s"))).await;
        let sm = got(&store, &p, "sm").await.credential.unwrap();
        assert_eq!(sm.secret.arn(), Some(arn));
        // Rotation lists only what is sealed in the database.
        let rows = store.sealed_credentials().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].sealed_password, b"s");
    }
);

contract!(
    a_terminated_service_keeps_no_credential_and_takes_no_change,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let s = service(&store, &p, "api", Some(sealed("ghcr.io", b"s"))).await;
        store
            .terminate_service(&s, audit("service.terminate", Some("web"), Some("api")))
            .await
            .unwrap();
        let api = got(&store, &p, "api").await;
        assert_eq!(api.status, ServiceStatus::Terminated);
        assert!(api.credential.is_none());
        assert!(store.sealed_credentials().await.unwrap().is_empty());
        assert!(matches!(
            store
                .put_credential(
                    &api,
                    None,
                    sealed("ghcr.io", b"s"),
                    audit("service.update", Some("web"), Some("api"))
                )
                .await,
            Err(StoreError::NotFound)
        ));
        assert!(
            matches!(
                store
                    .create_deployment(&api, audit("deployment.create", Some("web"), Some("api")))
                    .await,
                Err(StoreError::NotFound)
            ),
            "no deploys of a terminated service"
        );
    }
);

contract!(
    audit_is_newest_first_paged_and_filtered,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        service(&store, &p, "api", None).await;
        service(&store, &p, "worker", None).await;
        let all = store.audit_events(&p, None, None, 100).await.unwrap();
        let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            ["service.create", "service.create", "project.create"]
        );
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
    }
);

contract!(
    rate_limits_count_per_key_in_a_window,
    |store: SqlStore| async move {
        for i in 0..5 {
            assert!(store
                .rate_limit_hit("u1", 1_000 + i, 60_000, 5)
                .await
                .unwrap());
        }
        assert!(!store.rate_limit_hit("u1", 1_010, 60_000, 5).await.unwrap());
        assert!(store.rate_limit_hit("u2", 1_010, 60_000, 5).await.unwrap());
        assert!(
            store.rate_limit_hit("u1", 61_005, 60_000, 5).await.unwrap(),
            "old hits pruned"
        );
    }
);

contract!(
    the_queue_hands_out_the_oldest_deployment_once,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let s = service(&store, &p, "worker", None).await;
        let create =
            || store.create_deployment(&s, audit("deployment.create", Some("web"), Some("worker")));
        let d1 = create().await.unwrap();
        let d2 = create().await.unwrap();
        assert_eq!(
            got(&store, &p, "worker").await.status,
            ServiceStatus::PendingDeploy
        );
        let claimed = store
            .claim_deployment("http://replica-a:8440", &Busy::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (&claimed.id, claimed.status),
            (&d1.id, DeploymentStatus::Deploying)
        );
        assert_eq!(
            claimed.replica_url.as_deref(),
            Some("http://replica-a:8440")
        );
        assert_eq!(
            got(&store, &p, "worker").await.status,
            ServiceStatus::Deploying
        );
        store
            .finish_deployment(
                &claimed,
                Outcome::Deployed {
                    digest: digest('a'),
                },
            )
            .await
            .unwrap();
        let d = store.deployment(&s, d1.id.as_str()).await.unwrap().unwrap();
        assert_eq!(
            (d.status, d.digest),
            (DeploymentStatus::Deployed, Some(digest('a')))
        );
        assert_eq!(
            got(&store, &p, "worker").await.status,
            ServiceStatus::Deployed
        );
        assert_eq!(
            store
                .claim_deployment("x", &Busy::default())
                .await
                .unwrap()
                .unwrap()
                .id,
            d2.id
        );
        assert!(store
            .claim_deployment("x", &Busy::default())
            .await
            .unwrap()
            .is_none());
        assert_eq!(store.deployments_of(&s).await.unwrap().len(), 2);
        let other = service(&store, &p, "api", None).await;
        assert!(
            store
                .deployment(&other, d1.id.as_str())
                .await
                .unwrap()
                .is_none(),
            "scoped to its service"
        );
    }
);

contract!(
    claims_are_fair_between_projects_and_one_per_service,
    |store: SqlStore| async move {
        let Fx { alice, p, .. } = fixture(&store).await;
        let q = store
            .create_project(
                "other",
                &alice,
                audit("project.create", Some("other"), None),
            )
            .await
            .unwrap();
        let a1 = service(&store, &p, "a1", None).await;
        let a2 = service(&store, &p, "a2", None).await;
        let b = service(&store, &q, "b", None).await;
        for s in [&a1, &a2, &b] {
            store
                .create_deployment(s, audit("deployment.create", Some("web"), Some(&s.name)))
                .await
                .unwrap();
        }
        // `web` is busy on this replica: `other`'s deployment goes first, though newer.
        let busy = Busy {
            services: vec![],
            projects: vec![p.id.clone()],
            region: None,
        };
        let first = store.claim_deployment("x", &busy).await.unwrap().unwrap();
        assert_eq!(first.service_id, b.id);
        // Nobody else waits: a busy project's deployment is taken after all...
        let second = store.claim_deployment("x", &busy).await.unwrap().unwrap();
        assert_eq!(second.service_id, a1.id);
        // ...but never a second one of a service being deployed.
        let busy = Busy {
            services: vec![a2.id.clone()],
            projects: vec![],
            region: None,
        };
        assert!(store.claim_deployment("x", &busy).await.unwrap().is_none());
        assert_eq!(
            store
                .claim_deployment("x", &Busy::default())
                .await
                .unwrap()
                .unwrap()
                .service_id,
            a2.id
        );
    }
);

contract!(
    a_failed_deployment_records_its_code,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let s = service(&store, &p, "api", None).await;
        let claimed = claim_new(&store, &s).await;
        store
            .finish_deployment(
                &claimed,
                Outcome::Failed {
                    digest: Some(digest('b')),
                    code: "auth_failed",
                    message: "the registry refused".into(),
                },
            )
            .await
            .unwrap();
        let d = store
            .deployment(&s, claimed.id.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                d.status,
                d.failure_code.as_deref(),
                d.failure_message.as_deref(),
                d.digest
            ),
            (
                DeploymentStatus::Failed,
                Some("auth_failed"),
                Some("the registry refused"),
                Some(digest('b'))
            )
        );
        assert_eq!(got(&store, &p, "api").await.status, ServiceStatus::Failed);
    }
);

contract!(
    only_silent_deploys_are_repaired,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let s = service(&store, &p, "api", None).await;
        let claimed = claim_new(&store, &s).await;
        // Alive (a fresh heartbeat): another replica's repair leaves it alone.
        store.heartbeat(&claimed).await.unwrap();
        assert_eq!(
            store
                .repair_deployments(&parse_stamp("2000-01-01T00:00:00.000Z").unwrap())
                .await
                .unwrap(),
            0
        );
        // A server that died mid-deploy (no heartbeat since): FAILED, its service too.
        assert_eq!(
            store
                .repair_deployments(&parse_stamp("2999-01-01T00:00:00.000Z").unwrap())
                .await
                .unwrap(),
            1
        );
        let d = store
            .deployment(&s, claimed.id.as_str())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.status, d.failure_code.as_deref()),
            (DeploymentStatus::Failed, Some("runtime_error"))
        );
        assert_eq!(got(&store, &p, "api").await.status, ServiceStatus::Failed);
    }
);

contract!(
    a_new_deployment_replaces_the_live_one,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let s = service(&store, &p, "worker", None).await;
        let live = || async {
            let mut l: Vec<_> = store
                .live_deployments()
                .await
                .unwrap()
                .into_iter()
                .map(|d| (d.id, d.digest))
                .collect();
            l.sort_by(|a, b| a.0.cmp(&b.0));
            l
        };
        let d1 = deploy(&store, &s, digest('a')).await;
        assert_eq!(live().await, [(d1.id.clone(), digest('a'))]);
        // A failed deploy replaces nothing.
        let failed = claim_new(&store, &s).await;
        store
            .finish_deployment(
                &failed,
                Outcome::Failed {
                    digest: None,
                    code: "runtime_error",
                    message: "x".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(live().await, [(d1.id.clone(), digest('a'))]);
        let d3 = deploy(&store, &s, digest('c')).await;
        let status = |id: DeploymentId| {
            let (store, s) = (store.clone(), s.clone());
            async move {
                store
                    .deployment(&s, id.as_str())
                    .await
                    .unwrap()
                    .unwrap()
                    .status
            }
        };
        assert_eq!(status(d1.id.clone()).await, DeploymentStatus::Removed);
        assert_eq!(
            status(failed.id.clone()).await,
            DeploymentStatus::Failed,
            "only DEPLOYED is replaced"
        );
        assert_eq!(live().await, [(d3.id.clone(), digest('c'))]);
        store
            .terminate_service(&s, audit("service.terminate", Some("web"), Some("worker")))
            .await
            .unwrap();
        assert_eq!(status(d3.id.clone()).await, DeploymentStatus::Removed);
        assert!(live().await.is_empty());
    }
);

contract!(
    restarts_count_until_a_new_deploy,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let s = store
            .create_service(
                NewService {
                    restart_policy: RestartPolicy::Never,
                    ..new_service(&p, "job")
                },
                Vec::new(),
                None,
                audit("service.create", Some("web"), Some("job")),
            )
            .await
            .unwrap();
        let d1 = deploy(&store, &s, digest('a')).await;
        let exit = |code| Exit {
            code,
            signal: None,
            at: parse_stamp("2026-11-24T00:00:00.000Z").unwrap(),
        };
        store
            .record_exit(&s.id, &exit(Some(3)), true)
            .await
            .unwrap();
        store
            .record_exit(&s.id, &exit(Some(4)), true)
            .await
            .unwrap();
        let read = got(&store, &p, "job").await;
        assert_eq!(read.restart_policy, RestartPolicy::Never);
        assert_eq!((read.restarts, read.last_exit), (2, Some(exit(Some(4)))));
        // berth's own restart of the service keeps the count...
        let again = store
            .restart_deployment(
                &s,
                &d1.id,
                audit("deployment.create", Some("web"), Some("job")),
            )
            .await
            .unwrap();
        let claimed = store
            .claim_deployment("http://a:8440", &Busy::default())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(claimed.id, again.id);
        store
            .finish_deployment(
                &claimed,
                Outcome::Deployed {
                    digest: digest('a'),
                },
            )
            .await
            .unwrap();
        assert_eq!(got(&store, &p, "job").await.restarts, 2);
        // ...a new deploy counts from zero; an exit not restarted is not counted.
        deploy(&store, &s, digest('b')).await;
        let read = got(&store, &p, "job").await;
        assert_eq!((read.restarts, read.last_exit), (0, None));
        store.record_exit(&s.id, &exit(None), false).await.unwrap();
        let read = got(&store, &p, "job").await;
        assert_eq!((read.restarts, read.last_exit), (0, Some(exit(None))));
    }
);

contract!(
    vault_values_first_writer_wins_then_compare_and_swap,
    |store: SqlStore| async move {
        assert!(store.key_check().await.unwrap().is_none());
        store.set_key_check(b"check").await.unwrap();
        store.set_key_check(b"check2").await.unwrap();
        assert_eq!(store.key_check().await.unwrap().unwrap(), b"check2");
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
);

contract!(
    a_services_own_limits_read_back,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let limits = Resources {
            memory_mb: Some(256),
            pids: Some(100),
            cpu_millis: Some(1500),
        };
        store
            .create_service(
                NewService {
                    resources: limits,
                    ..new_service(&p, "api")
                },
                Vec::new(),
                None,
                audit("service.create", Some("web"), Some("api")),
            )
            .await
            .unwrap();
        service(&store, &p, "plain", None).await;
        assert_eq!(got(&store, &p, "api").await.resources, limits);
        assert_eq!(
            got(&store, &p, "plain").await.resources,
            Resources::default()
        );
    }
);

contract!(
    a_stored_value_that_does_not_decode_is_an_error,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        service(&store, &p, "api", None).await;
        store
            .corrupt_for_tests("UPDATE services SET image = 'Not An Image'")
            .await;
        assert!(matches!(
            store.service(&p, "api").await,
            Err(StoreError::Corrupt {
                column: "image",
                ..
            })
        ));
    }
);

#[tokio::test]
async fn reopening_migrates_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("berth.db").display()
    );
    SqlStore::connect(&url).await.unwrap();
    SqlStore::connect(&url).await.unwrap();
    let url = berth_testkit::Postgres::shared().create_database();
    SqlStore::connect(&url).await.unwrap();
    SqlStore::connect(&url).await.unwrap();
}

contract!(
    each_credential_is_checked_by_one_replica_once_per_period,
    |store: SqlStore| async move {
        let Fx { p, .. } = fixture(&store).await;
        let verified = service(&store, &p, "api", Some(sealed("ghcr.io", b"x"))).await;
        let mut unverified = sealed("ghcr.io", b"y");
        unverified.verified = false;
        let other = service(&store, &p, "worker", Some(unverified)).await;
        service(&store, &p, "anon", None).await;
        // A credential the save verified starts healthy; one saved without
        // verifying waits for its first check.
        assert!(
            verified
                .credential
                .as_ref()
                .unwrap()
                .health
                .as_ref()
                .unwrap()
                .ok
        );
        assert_eq!(other.credential.as_ref().unwrap().health, None);

        let t = |s: &str| parse_stamp(&format!("2999-01-01T00:00:{s}.000Z")).unwrap();
        let claim = |due: Time, now: Time, hold: Time| {
            let store = store.clone();
            async move {
                store
                    .claim_credential_checks(&due, &now, &hold, 10)
                    .await
                    .unwrap()
            }
        };
        // Two replicas at once: each credential to one of them.
        let (a, b) = tokio::join!(
            claim(t("00"), t("00"), t("30")),
            claim(t("00"), t("00"), t("30"))
        );
        let mut all: Vec<_> = a.iter().chain(b.iter()).cloned().collect();
        all.sort();
        let mut want = vec![verified.id.clone(), other.id.clone()];
        want.sort();
        assert_eq!(all, want, "both credentials, once, none without one");
        // Held: nobody takes them again until the hold ends.
        assert!(claim(t("00"), t("10"), t("40")).await.is_empty());

        // A failing check is recorded and audited; the same result again is not.
        let failing = Health {
            ok: false,
            code: "auth_failed".into(),
            checked_at: t("20"),
        };
        let updated = other.credential.as_ref().unwrap().updated_at;
        let health_audit = || audit("service.registry.health", Some("web"), Some("worker"));
        assert!(store
            .record_health(&other, &updated, &failing, health_audit())
            .await
            .unwrap());
        assert!(!store
            .record_health(&other, &updated, &failing, health_audit())
            .await
            .unwrap());
        let read = store.service(&p, "worker").await.unwrap().unwrap();
        assert_eq!(read.credential.unwrap().health, Some(failing.clone()));
        let events = store
            .audit_events(&p, Some("worker"), None, 10)
            .await
            .unwrap();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.action == "service.registry.health")
                .count(),
            1
        );
        // Not due again before the period has passed since its check.
        assert!(claim(t("15"), t("50"), t("59"))
            .await
            .iter()
            .all(|id| id != &other.id));
        assert!(claim(t("25"), t("50"), t("59")).await.contains(&other.id));

        // A result for credentials replaced meanwhile is dropped.
        assert!(!store
            .record_health(&other, &t("00"), &failing, health_audit())
            .await
            .unwrap());
    }
);

contract!(
    project_tokens_are_found_by_hash_until_revoked,
    |store: SqlStore| async move {
        let fx = fixture(&store).await;
        let t = store
            .create_project_token(
                &fx.p,
                "kubelet",
                "hash-t",
                None,
                &fx.alice,
                audit("project.token.create", Some("web"), None),
            )
            .await
            .unwrap();
        assert_eq!(
            (t.scope.as_str(), t.created_by.as_str()),
            ("read-credentials", "alice")
        );
        assert!(t.last_used_at.is_none());
        // One name per project.
        assert!(matches!(
            store
                .create_project_token(
                    &fx.p,
                    "kubelet",
                    "hash-u",
                    None,
                    &fx.alice,
                    audit("project.token.create", Some("web"), None)
                )
                .await,
            Err(StoreError::Conflict(_))
        ));
        // Not a user's token, nor the other way round.
        assert!(store.user_by_token_hash("hash-t").await.unwrap().is_none());
        assert!(store
            .use_project_token("hash-a", &now())
            .await
            .unwrap()
            .is_none());
        let Some(TokenUse::Live(used)) = store.use_project_token("hash-t", &now()).await.unwrap()
        else {
            panic!("a token without expiry is live")
        };
        assert_eq!(used.id, t.id);
        assert!(used.last_used_at.is_some());
        store
            .audit_token_use(&used, audit("credentials.read", Some("web"), Some("api")))
            .await
            .unwrap();
        let listed = store.project_tokens(&fx.p.id).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].last_used_at.is_some());
        assert!(store
            .revoke_project_token(
                &fx.p,
                "kubelet",
                audit("project.token.revoke", Some("web"), None)
            )
            .await
            .unwrap());
        assert!(!store
            .revoke_project_token(
                &fx.p,
                "kubelet",
                audit("project.token.revoke", Some("web"), None)
            )
            .await
            .unwrap());
        assert!(store
            .use_project_token("hash-t", &now())
            .await
            .unwrap()
            .is_none());
        let events = store.audit_events(&fx.p, None, None, 10).await.unwrap();
        let actions: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions[..3],
            [
                "project.token.revoke",
                "credentials.read",
                "project.token.create"
            ]
        );
    }
);

contract!(
    a_project_token_opens_nothing_past_its_expiry,
    |store: SqlStore| async move {
        let fx = fixture(&store).await;
        let at = |s: &str| parse_stamp(&format!("2030-01-01T00:00:{s}.000Z")).unwrap();
        let t = store
            .create_project_token(
                &fx.p,
                "ci",
                "hash-e",
                Some(&at("10")),
                &fx.alice,
                audit("project.token.create", Some("web"), None),
            )
            .await
            .unwrap();
        assert_eq!(t.expires_at, Some(at("10")));
        let listed = store.project_tokens(&fx.p.id).await.unwrap();
        assert_eq!(listed[0].expires_at, t.expires_at);
        // Before: live, and stamped.
        match store.use_project_token("hash-e", &at("09")).await.unwrap() {
            Some(TokenUse::Live(u)) => {
                assert_eq!(u.last_used_at, Some(at("09")))
            }
            other => panic!("live before its expiry: {other:?}"),
        }
        // At and after: expired (the project can be told), and not stamped.
        for when in [
            at("10"),
            at("11"),
            parse_stamp("2031-01-01T00:00:00.000Z").unwrap(),
        ] {
            match store.use_project_token("hash-e", &when).await.unwrap() {
                Some(TokenUse::Expired(e)) => {
                    assert_eq!(
                        (e.project_id.clone(), e.name.as_str()),
                        (fx.p.id.clone(), "ci")
                    );
                    assert_eq!(e.last_used_at, Some(at("09")));
                }
                other => panic!("expired at {when}: {other:?}"),
            }
        }
        // Another token is not affected, nor is an unknown hash told apart from it.
        assert!(store
            .use_project_token("hash-none", &at("11"))
            .await
            .unwrap()
            .is_none());
    }
);
