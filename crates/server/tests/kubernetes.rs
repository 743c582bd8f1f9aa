//! The Kubernetes runtime end to end, against the testkit's stateful fake API
//! server (no Kubernetes API server can be installed on these machines; see the
//! README) and the real token registry: a deploy resolves the digest with the
//! stored credentials, creates the Deployment pinned by it (no replicas), the
//! pull Secret it owns, then scales it; the fake kubelet pulls only with that
//! Secret. A redeploy replaces the old Deployment once the new one is available;
//! a kubelet's 401, a crash loop and a missing tag fail with their own codes and
//! leave nothing on the cluster; terminating deletes everything. Around the
//! pod, what runc's sandbox gives: the server's memory and CPU, a user
//! namespace (and a warning when the API server drops it), the project's
//! NetworkPolicy; a namespace someone else made is not used, and a project's
//! name too long for one is hashed to fit. A service with a port gets a
//! readiness probe, a Service and an Ingress (owned by its serving Deployments,
//! so a terminate's delete takes them), only the ingress controller's namespace
//! in; a redeploy keeps them, a pod that never answers never changes them, a
//! worker's deploy deletes them; `network: none` reaches nothing, as the fake's
//! NetworkPolicy evaluation says. A service's settings: variables and
//! command/args on the container, secrets in a Secret the Deployment owns
//! (`secretKeyRef`, 0400 files), the volume as the service's claim kept and
//! grown across a redeploy and deleted on terminate, the region as a node
//! selector; no secret's value in berth's logs or the deployment's.
//!
//! `the_same_on_a_real_cluster` runs the scenario on the cluster named by
//! `BERTH_TEST_KUBECONFIG`, where one is configured (one whose nodes can pull
//! from this machine's loopback registry, such as k3s on this host with it as
//! an insecure registry); it is skipped otherwise.

mod common;

use base64::Engine;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

use berth_testkit::{FakeKube, Kubelet, Peer};

/// The test process's logging at TRACE, captured (once per binary: the tests
/// that grep it share it).
fn trace_logs() -> &'static Captured {
    static LOGS: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    LOGS.get_or_init(Captured::at_trace)
}

fn on_cluster(cfg: &mut berth_server::Config, kubeconfig: std::path::PathBuf) {
    cfg.runtime = berth_server::RuntimeChoice::Kubernetes(berth_kubernetes::Settings {
        kubeconfig: Some(kubeconfig),
        ..Default::default()
    });
}

/// The server's container defaults, other than the built-in ones so that a
/// test tells them apart.
const DEFAULTS: berth_kubernetes::Resources = berth_kubernetes::Resources {
    memory_mb: 384,
    cpu_millis: 750,
};

/// A server on `kube`, and alice with project `project` and its service `api`
/// on the token registry.
async fn on_fake_cluster(
    kube: &FakeKube,
    registry: &Registry,
    dir: &std::path::Path,
    project: &str,
) -> (Server, Client) {
    let url = registry.url();
    let mut cfg = config(dir, Db::Sqlite, &url, None);
    cfg.runtime = berth_server::RuntimeChoice::Kubernetes(berth_kubernetes::Settings {
        kubeconfig: Some(kube.kubeconfig()),
        default_resources: DEFAULTS,
        egress_allow: berth_kubernetes::parse_cidrs("10.20.0.0/16").unwrap(),
        ..Default::default()
    });
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    let (s, v) = alice.post("/v1/projects", json!({"name": project})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = alice
        .post(&format!("/v1/projects/{project}/services"), json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (server, alice)
}

async fn deploy(alice: &Client, service: &str) -> Value {
    let path = start_deploy(alice, "web", service).await;
    wait_for_end(alice, &path).await
}

async fn infra_log(alice: &Client, service: &str, id: &str) -> String {
    let (_, v) = alice
        .get(&format!(
            "/v1/projects/web/services/{service}/deployments/{id}/logs"
        ))
        .await;
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_run_on_the_cluster_with_a_pull_secret_they_own() {
    // Every log line at TRACE (the Kubernetes client's too), grepped at the end
    // for the password and the Secret's base64 forms of it.
    let logs = trace_logs();
    let registry = Registry::start();
    let url = registry.url();
    let kube = FakeKube::start(Kubelet::PullWith {
        registry: url.clone(),
        username: "ci".into(),
        password: PASSWORD.into(),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    on_cluster(&mut cfg, kube.kubeconfig());
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");

    let d = deploy(&alice, "api").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let name = format!("berth-{id}");
    // The project's namespace, labelled.
    let ns = kube
        .get("namespaces", "", "berth-web")
        .expect("the namespace");
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "berth"
    );
    assert_eq!(ns["metadata"]["labels"]["berth.dev/project"], "web");
    assert!(kube
        .get("networkpolicies", "berth-web", "berth-web")
        .is_some());
    // The Deployment: the digest berth resolved, the pull Secret, the sandbox.
    let dep = kube
        .get("deployments", "berth-web", &name)
        .expect("the Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["image"],
        format!("{url}/team/app@{}", registry.digest)
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], name);
    assert_eq!(pod["automountServiceAccountToken"], false);
    // The image names no user (root): runAsNonRoot is not claimed for it.
    assert!(pod["securityContext"]["runAsNonRoot"].is_null(), "{pod}");
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(dep["spec"]["replicas"], 1);
    // The Secret: owned by the Deployment, the credentials for the registry only.
    let secret = kube.get("secrets", "berth-web", &name).expect("the Secret");
    assert_eq!(secret["type"], "kubernetes.io/dockerconfigjson");
    let owner = &secret["metadata"]["ownerReferences"][0];
    assert_eq!(
        (owner["kind"].as_str(), owner["uid"].clone()),
        (Some("Deployment"), dep["metadata"]["uid"].clone())
    );
    let secret_data = secret["data"][".dockerconfigjson"]
        .as_str()
        .unwrap()
        .to_owned();
    let config: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(secret["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config["auths"][&url]["username"], "ci");
    assert_eq!(config["auths"].as_object().unwrap().len(), 1);
    // In this order: the Deployment with no replicas, its Secret, then scaled
    // (the kubelet never tries before the Secret exists).
    let writes: Vec<(String, String)> = kube
        .requests()
        .into_iter()
        .filter(|(m, _, _)| m != "GET")
        .map(|(m, p, _)| (m, p.split('?').next().unwrap().to_owned()))
        .collect();
    assert_eq!(
        writes,
        vec![
            ("POST".into(), "/api/v1/namespaces".into()),
            (
                "POST".into(),
                "/apis/networking.k8s.io/v1/namespaces/berth-web/networkpolicies".into()
            ),
            (
                "POST".into(),
                "/apis/apps/v1/namespaces/berth-web/deployments".into()
            ),
            ("POST".into(), "/api/v1/namespaces/berth-web/secrets".into()),
            (
                "PATCH".into(),
                format!("/apis/apps/v1/namespaces/berth-web/deployments/{name}")
            ),
        ]
    );
    let first_post = kube
        .requests()
        .into_iter()
        .find(|(m, p, _)| m == "POST" && p.contains("/deployments"))
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&first_post.2).unwrap()["spec"]["replicas"],
        0
    );
    // The rollout was watched (the Deployment and its pods), not only polled.
    let watches = kube
        .requests()
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.contains("watch=true"))
        .count();
    assert!(watches >= 2, "{:?}", kube.requests());
    // The kubelet's events are in the infrastructure log.
    let log = infra_log(&alice, "api", &id).await;
    for want in [
        "creating Deployment",
        "kubelet: Normal Pulled",
        "kubelet: Normal Started",
        "the pod is available",
    ] {
        assert!(log.contains(want), "{want} not in:\n{log}");
    }
    assert!(!log.contains(PASSWORD));

    // A redeploy: the new Deployment, then the old one deleted (its Secret with it).
    let d2 = deploy(&alice, "api").await;
    assert_eq!(d2["status"], "DEPLOYED", "{d2}");
    let name2 = format!("berth-{}", d2["id"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while kube.get("deployments", "berth-web", &name).is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the old Deployment stayed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        kube.get("secrets", "berth-web", &name).is_none(),
        "its Secret went with it"
    );
    assert!(kube.get("deployments", "berth-web", &name2).is_some());
    let (_, old) = alice
        .get(&format!("/v1/projects/web/services/api/deployments/{id}"))
        .await;
    assert_eq!(old["status"], "REMOVED", "{old}");

    // The kubelet refused by the registry (the Secret's password is not the one
    // it wants): auth_failed from its message, and nothing left behind.
    kube.set_kubelet(Kubelet::PullWith {
        registry: url.clone(),
        username: "ci".into(),
        password: "rotated-elsewhere".into(),
    });
    let d3 = deploy(&alice, "api").await;
    assert_eq!(
        (d3["status"].as_str(), d3["failure_code"].as_str()),
        (Some("FAILED"), Some("auth_failed")),
        "{d3}"
    );
    let name3 = format!("berth-{}", d3["id"].as_str().unwrap());
    assert!(kube.get("deployments", "berth-web", &name3).is_none());
    assert!(kube.get("secrets", "berth-web", &name3).is_none());
    let log3 = infra_log(&alice, "api", d3["id"].as_str().unwrap()).await;
    assert!(log3.contains("401 Unauthorized"), "{log3}");
    // The running one was not touched.
    assert!(kube.get("deployments", "berth-web", &name2).is_some());

    // A crash loop: runtime_error with the exit code.
    kube.set_kubelet(Kubelet::Crash);
    let d4 = deploy(&alice, "api").await;
    assert_eq!(d4["failure_code"], "runtime_error", "{d4}");
    assert!(
        d4["failure_message"]
            .as_str()
            .unwrap_or_default()
            .contains("CrashLoopBackOff")
            || d4.to_string().contains("CrashLoopBackOff"),
        "{d4}"
    );

    // RBAC that lacks a verb: the API server's 403, said as it is.
    kube.set_kubelet(Kubelet::Run);
    kube.forbid_creates(true);
    let d6 = deploy(&alice, "api").await;
    assert_eq!(d6["failure_code"], "runtime_error", "{d6}");
    assert!(d6.to_string().contains("cannot create resource"), "{d6}");
    kube.forbid_creates(false);

    // A missing tag: the registry says so before anything reaches the cluster.
    kube.set_kubelet(Kubelet::Run);
    let before = kube.requests().len();
    let (s, v) = alice
        .post("/v1/projects/web/services", json!({"name": "typo", "image": "team/app:nope", "registry": registry_body(&url, "ci", PASSWORD), "save_without_verifying": true}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let d5 = deploy(&alice, "typo").await;
    assert_eq!(d5["failure_code"], "manifest_not_found", "{d5}");
    assert!(
        kube.requests()[before..].iter().all(|(m, _, _)| m == "GET"),
        "nothing was created for a tag the registry does not have"
    );

    // Terminate: the Deployment and its Secret are deleted.
    let (s, _) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    assert!(kube.get("deployments", "berth-web", &name2).is_none());
    assert!(kube.get("secrets", "berth-web", &name2).is_none());
    assert!(
        kube.names("pods", "berth-web").is_empty(),
        "{:?}",
        kube.names("pods", "berth-web")
    );
    // The password is nowhere in berth's data dir, nor in its logs: plain,
    // `user:password` and itself in base64 (three alphabets), nor the pull
    // Secret's whole data.
    let mut forms = secret_forms("ci", PASSWORD);
    forms.push(secret_data);
    for f in files_under(dir.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for form in &forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                "{}",
                f.display()
            );
        }
    }
    let logs = logs.text();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "trace logging was on"
    );
    for form in &forms {
        assert!(!logs.contains(form.as_str()), "{form} is in the logs");
    }
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_get_the_servers_defaults_a_user_namespace_and_a_network_policy() {
    let registry = Registry::start();
    let kube = FakeKube::start(Kubelet::Run);
    let dir = tempfile::tempdir().unwrap();
    let (server, alice) = on_fake_cluster(&kube, &registry, dir.path(), "web").await;

    let d = deploy(&alice, "api").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let id = d["id"].as_str().unwrap();
    let dep = kube
        .get("deployments", "berth-web", &format!("berth-{id}"))
        .expect("the Deployment");
    let pod = &dep["spec"]["template"]["spec"];
    // The service sets no resources: the server's defaults, requested and
    // limited alike.
    let amounts = json!({"memory": "384Mi", "cpu": "750m"});
    assert_eq!(
        pod["containers"][0]["resources"],
        json!({"requests": amounts, "limits": amounts})
    );
    assert_eq!(pod["hostUsers"], false);
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(
        sc["capabilities"],
        json!({"drop": ["ALL"], "add": ["AUDIT_WRITE", "KILL", "NET_BIND_SERVICE"]})
    );
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    let log = infra_log(&alice, "api", id).await;
    for want in [
        "resources (requests and limits): 384 MiB of memory (the server's default), 750m CPU (the server's default)",
        "processes: the node's limit (the kubelet's podPidsLimit)",
        "NetworkPolicy berth-web in namespace berth-web",
        "to 10.20.0.0/16 (--kubernetes-egress-allow)",
        "the pod has a user namespace of its own (hostUsers: false)",
    ] {
        assert!(log.contains(want), "{want} not in:\n{log}");
    }
    assert!(!log.contains("warning"), "{log}");

    // The project's NetworkPolicy, exactly: its own pods in, and out only to
    // them, the cluster's DNS, public addresses and what the operator allows.
    let policies = kube.names("networkpolicies", "berth-web");
    assert_eq!(policies, vec!["berth-web".to_owned()]);
    let policy = kube
        .get("networkpolicies", "berth-web", "berth-web")
        .unwrap();
    assert_eq!(
        policy["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "berth", "berth.dev/project": "web"})
    );
    assert_eq!(
        policy["spec"],
        json!({
            "podSelector": {"matchExpressions": [{"key": "berth.dev/network", "operator": "NotIn", "values": ["none"]}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}}]}],
            "egress": [
                {"to": [{"podSelector": {}}]},
                {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
                 "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
                {"to": [
                    {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]}},
                    {"ipBlock": {"cidr": "::/0", "except": ["fc00::/7", "fe80::/10"]}},
                ]},
                {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
            ],
        })
    );

    // An API server that does not know hostUsers drops it: the deploy goes on,
    // and its log says what that means.
    kube.drop_host_users(true);
    let d2 = deploy(&alice, "api").await;
    assert_eq!(d2["status"], "DEPLOYED", "{d2}");
    let id2 = d2["id"].as_str().unwrap();
    let dep2 = kube
        .get("deployments", "berth-web", &format!("berth-{id2}"))
        .unwrap();
    assert!(dep2["spec"]["template"]["spec"]["hostUsers"].is_null());
    let log2 = infra_log(&alice, "api", id2).await;
    assert!(
        log2.contains("warning: the API server dropped hostUsers: false"),
        "{log2}"
    );
    // The second deploy found the project's policy as it wants it: not
    // written again. (The stop of the first deletes its deployment's own
    // policy, which a worker never had: a 404.)
    let policy_writes = kube
        .requests()
        .iter()
        .filter(|(m, p, _)| {
            let path = p.split('?').next().unwrap_or_default();
            m != "GET"
                && (path.ends_with("/networkpolicies")
                    || path.ends_with("/networkpolicies/berth-web"))
        })
        .count();
    assert_eq!(policy_writes, 2, "a POST each, the second a 409");
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespace_is_berths_for_the_project_and_fits() {
    let registry = Registry::start();
    let kube = FakeKube::start(Kubelet::Run);
    // Someone else's namespace where berth would make the project's.
    kube.create_namespace(
        "berth-web",
        json!({"kubernetes.io/metadata.name": "berth-web", "team": "payments"}),
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, alice) = on_fake_cluster(&kube, &registry, dir.path(), "web").await;
    let d = deploy(&alice, "api").await;
    assert_eq!(
        (d["status"].as_str(), d["failure_code"].as_str()),
        (Some("FAILED"), Some("runtime_error")),
        "{d}"
    );
    let message = d["failure_message"].as_str().unwrap_or_default();
    for want in [
        "namespace berth-web exists and is not berth's for project web",
        "app.kubernetes.io/managed-by=berth berth.dev/project=web",
        "team=payments",
        "kubectl label namespace berth-web",
    ] {
        assert!(message.contains(want), "{want} not in {d}");
    }
    // Nothing was made, nor deleted, in it.
    let writes: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|(m, p, _)| m != "GET" && p.contains("/namespaces/berth-web/"))
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    for resource in ["deployments", "secrets", "networkpolicies", "pods"] {
        assert!(kube.names(resource, "berth-web").is_empty(), "{resource}");
    }
    let id = d["id"].as_str().unwrap();
    let log = infra_log(&alice, "api", id).await;
    assert!(log.contains("is not berth's for project web"), "{log}");

    // Labelled as the message says, it is the project's.
    kube.create_namespace(
        "berth-web",
        json!({"app.kubernetes.io/managed-by": "berth", "berth.dev/project": "web"}),
    );
    let d = deploy(&alice, "api").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");

    // A project whose name makes `berth-<name>` longer than a namespace name
    // may be: what fits and a hash (the fake refuses what a real API server
    // refuses, 422 for a name over 63 characters).
    let long = "l".repeat(63);
    let (s, v) = alice.post("/v1/projects", json!({"name": long})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = alice
        .post(&format!("/v1/projects/{long}/services"), json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&registry.url(), "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let path = start_deploy(&alice, &long, "api").await;
    let d = wait_for_end(&alice, &path).await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let ns = berth_kubernetes::berth_project(&long);
    assert_eq!(ns.len(), 63, "{ns}");
    assert!(
        ns.starts_with(&format!("berth-{}-", "l".repeat(46))),
        "{ns}"
    );
    let made = kube
        .get("namespaces", "", &ns)
        .expect("the hashed namespace");
    assert_eq!(made["metadata"]["labels"]["berth.dev/project"], long);
    assert!(kube.get("networkpolicies", &ns, &ns).is_some());
    assert_eq!(kube.names("deployments", &ns).len(), 1);
    server.running.stop().await;
}

/// A server on `kube` with apps under `apps.example.net`, Ingresses of class
/// `nginx`, and alice with project `web`.
async fn serving_cluster(
    kube: &FakeKube,
    registry: &Registry,
    dir: &std::path::Path,
    deadline: Option<std::time::Duration>,
) -> (Server, Client) {
    let mut cfg = config(dir, Db::Sqlite, &registry.url(), None);
    cfg.runtime = berth_server::RuntimeChoice::Kubernetes(berth_kubernetes::Settings {
        kubeconfig: Some(kube.kubeconfig()),
        ingress_class: Some("nginx".into()),
        ..Default::default()
    });
    cfg.traffic.apps_domain = "apps.example.net".into();
    if let Some(d) = deadline {
        cfg.deploys.deadline = d;
    }
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    let (s, v) = alice.post("/v1/projects", json!({"name": "web"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    (server, alice)
}

/// Creates service `name` of project `web` on the team registry with `settings`
/// (port, health path, domains, network).
async fn create_service(alice: &Client, registry: &Registry, name: &str, settings: Value) {
    let mut body = json!({"name": name, "image": "team/app:v1", "registry": registry_body(&registry.url(), "ci", PASSWORD)});
    for (k, v) in settings.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, v) = alice.post("/v1/projects/web/services", body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// The one pod of deployment `id` in `berth-web`.
fn pod_of(kube: &FakeKube, id: &str) -> Peer {
    let pods = kube.names("pods", "berth-web");
    let name = pods
        .iter()
        .find(|p| p.starts_with(&format!("berth-{id}-")))
        .unwrap_or_else(|| panic!("no pod of {id} in {pods:?}"));
    Peer::Pod("berth-web".into(), name.clone())
}

fn controller() -> Peer {
    Peer::Other {
        namespace: "ingress-nginx".into(),
        labels: json!({"app.kubernetes.io/name": "ingress-nginx", "app.kubernetes.io/component": "controller"}),
    }
}

fn cluster_dns() -> Peer {
    Peer::Other {
        namespace: "kube-system".into(),
        labels: json!({"k8s-app": "kube-dns"}),
    }
}

fn address(a: &str) -> Peer {
    Peer::Address(a.parse().unwrap())
}

/// The uids of the Deployments an object names as its owners.
fn owners(obj: &Value) -> Vec<String> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["uid"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_with_a_port_is_probed_routed_by_service_and_ingress_and_terminate_removes_them()
{
    let registry = Registry::start();
    let kube = FakeKube::start(Kubelet::Run);
    let dir = tempfile::tempdir().unwrap();
    let (server, alice) = serving_cluster(&kube, &registry, dir.path(), None).await;
    create_service(
        &alice,
        &registry,
        "api",
        json!({"port": 8080, "health_path": "/healthz", "domains": ["shop.example.com"]}),
    )
    .await;
    let d = deploy(&alice, "api").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let name = format!("berth-{id}");
    let dep = kube.get("deployments", "berth-web", &name).unwrap();
    let uid = dep["metadata"]["uid"].as_str().unwrap().to_owned();

    // Ready means answering: the health path, on the named port.
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http", "scheme": "HTTP"})
    );
    assert!(c["readinessProbe"]["tcpSocket"].is_null());
    assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], 5);

    // The Service: the service's pods, port 80 to theirs, owned by the Deployment.
    let traffic = berth_kubernetes::traffic_name("web", "api");
    let svc = kube
        .get("services", "berth-web", &traffic)
        .expect("the Service");
    assert_eq!(
        svc["spec"]["selector"],
        json!({"app.kubernetes.io/managed-by": "berth", "berth.dev/project": "web", "berth.dev/service": "api"})
    );
    assert_eq!(
        svc["spec"]["ports"],
        json!([{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"}])
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(owners(&svc), [uid.as_str()]);
    // The Ingress: the class, the service's own host and its domain, to the Service.
    let ing = kube
        .get("ingresses", "berth-web", &traffic)
        .expect("the Ingress");
    assert_eq!(ing["spec"]["ingressClassName"], "nginx");
    let rules = ing["spec"]["rules"].as_array().unwrap();
    let hosts: Vec<&str> = rules.iter().map(|r| r["host"].as_str().unwrap()).collect();
    assert_eq!(hosts, ["api.web.apps.example.net", "shop.example.com"]);
    for r in rules {
        assert_eq!(
            r["http"]["paths"],
            json!([{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": traffic, "port": {"number": 80}}}}])
        );
    }
    assert_eq!(owners(&ing), [uid.as_str()]);

    // In: the ingress controller's namespace, on the app's port only; nothing
    // from another namespace or outside the cluster. (The project's own pods
    // stay allowed by the project's policy, as before.)
    let pod = pod_of(&kube, &id);
    let mut policies = kube.names("networkpolicies", "berth-web");
    policies.sort();
    assert_eq!(policies, [name.clone(), "berth-web".to_owned()]);
    assert!(kube.allows(&controller(), &pod, "TCP", 8080));
    assert!(!kube.allows(&controller(), &pod, "TCP", 22));
    let stranger = Peer::Other {
        namespace: "berth-other".into(),
        labels: json!({"app.kubernetes.io/managed-by": "berth"}),
    };
    assert!(!kube.allows(&stranger, &pod, "TCP", 8080));
    assert!(!kube.allows(&address("10.0.0.9"), &pod, "TCP", 8080));
    // Out (network: public): the cluster's DNS and public addresses.
    assert!(kube.allows(&pod, &cluster_dns(), "UDP", 53));
    assert!(kube.allows(&pod, &address("1.1.1.1"), "TCP", 443));
    assert!(!kube.allows(&pod, &address("169.254.169.254"), "TCP", 80));

    let log = infra_log(&alice, "api", &id).await;
    for want in [
        "port 8080: the pod is ready once GET /healthz answers 2xx or 3xx",
        &format!("NetworkPolicy {name} in namespace berth-web: ingress from the ingress controller's namespace ingress-nginx"),
        &format!("serving api.web.apps.example.net, shop.example.com through Ingress {traffic} (class nginx)"),
    ] {
        assert!(log.contains(want), "{want} not in:\n{log}");
    }

    // Terminate: the Deployment goes, and with it, its last owner, the
    // Service, the Ingress and the deployment's NetworkPolicy.
    let (s, _) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    wait_until("terminate deletes the Deployment", || {
        kube.get("deployments", "berth-web", &name).is_none()
    })
    .await;
    assert!(kube.get("services", "berth-web", &traffic).is_none());
    assert!(kube.get("ingresses", "berth-web", &traffic).is_none());
    assert_eq!(kube.names("networkpolicies", "berth-web"), ["berth-web"]);
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redeploy_keeps_the_route_until_ready_and_a_worker_deploy_removes_it() {
    let registry = Registry::start();
    let kube = FakeKube::start(Kubelet::Run);
    let dir = tempfile::tempdir().unwrap();
    let deadline = std::time::Duration::from_secs(10);
    let (server, alice) = serving_cluster(&kube, &registry, dir.path(), Some(deadline)).await;
    create_service(&alice, &registry, "api", json!({"port": 8080})).await;
    let traffic = berth_kubernetes::traffic_name("web", "api");

    // No health path: ready when the port accepts.
    let d1 = deploy(&alice, "api").await;
    assert_eq!(d1["status"], "DEPLOYED", "{d1}");
    let name1 = format!("berth-{}", d1["id"].as_str().unwrap());
    let dep1 = kube.get("deployments", "berth-web", &name1).unwrap();
    assert_eq!(
        dep1["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"],
        json!({"port": "http"})
    );
    let svc1 = kube.get("services", "berth-web", &traffic).unwrap();

    // A redeploy: the same Service (its address too), now owned by the new
    // Deployment alone once the old one is deleted.
    let d2 = deploy(&alice, "api").await;
    assert_eq!(d2["status"], "DEPLOYED", "{d2}");
    let name2 = format!("berth-{}", d2["id"].as_str().unwrap());
    wait_until("the old Deployment is deleted", || {
        kube.get("deployments", "berth-web", &name1).is_none()
    })
    .await;
    let uid2 = kube.get("deployments", "berth-web", &name2).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let svc2 = kube.get("services", "berth-web", &traffic).unwrap();
    assert_eq!(svc2["metadata"]["uid"], svc1["metadata"]["uid"]);
    assert_eq!(svc2["spec"]["clusterIP"], svc1["spec"]["clusterIP"]);
    assert_eq!(owners(&svc2), [uid2.as_str()]);
    let ing2 = kube.get("ingresses", "berth-web", &traffic).unwrap();
    assert_eq!(owners(&ing2), [uid2.as_str()]);

    // A deploy whose app never answers its probe is never available: it fails
    // at the deadline, and what serves is untouched.
    kube.set_kubelet(Kubelet::Unready);
    let d3 = deploy(&alice, "api").await;
    assert_eq!(
        (d3["status"].as_str(), d3["failure_code"].as_str()),
        (Some("FAILED"), Some("timeout")),
        "{d3}"
    );
    let log3 = infra_log(&alice, "api", d3["id"].as_str().unwrap()).await;
    for want in [
        "Readiness probe failed: dial tcp 10.42.0.17:8080: connect: connection refused",
        "waiting for it to answer its readiness probe",
    ] {
        assert!(log3.contains(want), "{want} not in:\n{log3}");
    }
    let svc3 = kube.get("services", "berth-web", &traffic).unwrap();
    assert_eq!(
        owners(&svc3),
        [uid2.as_str()],
        "the failed deploy never owned it"
    );
    assert_eq!(
        kube.get("ingresses", "berth-web", &traffic).unwrap()["metadata"]["resourceVersion"],
        ing2["metadata"]["resourceVersion"],
        "nor rewrote the Ingress"
    );
    assert!(kube.get("deployments", "berth-web", &name2).is_some());

    // Without a port (the image exposes none), the service is a worker: once
    // its deploy runs, the Service and the Ingress are deleted.
    kube.set_kubelet(Kubelet::Run);
    let (s, v) = alice
        .put("/v1/projects/web/services/api", json!({"port": 0}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let d4 = deploy(&alice, "api").await;
    assert_eq!(d4["status"], "DEPLOYED", "{d4}");
    let id4 = d4["id"].as_str().unwrap();
    assert!(kube.get("services", "berth-web", &traffic).is_none());
    assert!(kube.get("ingresses", "berth-web", &traffic).is_none());
    let c4 = &kube
        .get("deployments", "berth-web", &format!("berth-{id4}"))
        .unwrap()["spec"]["template"]["spec"]["containers"][0];
    assert!(
        c4["ports"].is_null() && c4["readinessProbe"].is_null(),
        "{c4}"
    );
    let log4 = infra_log(&alice, "api", id4).await;
    assert!(
        log4.contains(&format!(
            "no port (a worker): no Service or Ingress; the earlier deploy's Ingress {traffic} and Service {traffic} deleted"
        )),
        "{log4}"
    );
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn network_none_lets_a_pod_reach_nothing_dns_included() {
    let registry = Registry::start();
    let kube = FakeKube::start(Kubelet::Run);
    let dir = tempfile::tempdir().unwrap();
    let (server, alice) = serving_cluster(&kube, &registry, dir.path(), None).await;
    create_service(
        &alice,
        &registry,
        "sealed",
        json!({"port": 8080, "network": "none"}),
    )
    .await;
    create_service(&alice, &registry, "batch", json!({"network": "none"})).await;
    create_service(&alice, &registry, "api", json!({"port": 8080})).await;
    let mut ids = Vec::new();
    for service in ["sealed", "batch", "api"] {
        let d = deploy(&alice, service).await;
        assert_eq!(d["status"], "DEPLOYED", "{d}");
        ids.push(d["id"].as_str().unwrap().to_owned());
    }
    let (sealed, batch, api) = (
        pod_of(&kube, &ids[0]),
        pod_of(&kube, &ids[1]),
        pod_of(&kube, &ids[2]),
    );
    // Nothing out, the cluster's DNS and the project's other pods included.
    for pod in [&sealed, &batch] {
        assert!(!kube.allows(pod, &cluster_dns(), "UDP", 53));
        assert!(!kube.allows(pod, &cluster_dns(), "TCP", 53));
        assert!(!kube.allows(pod, &address("1.1.1.1"), "TCP", 443));
        assert!(!kube.allows(pod, &api, "TCP", 8080));
    }
    // A public pod of the same project still reaches out.
    assert!(kube.allows(&api, &cluster_dns(), "UDP", 53));
    assert!(kube.allows(&api, &address("1.1.1.1"), "TCP", 443));
    // In: a `none` service with a port is still served through the ingress
    // controller (as runc's ingress reaches a `none` container); one without
    // a port lets nothing in.
    assert!(kube.allows(&controller(), &sealed, "TCP", 8080));
    assert!(!kube.allows(&api, &sealed, "TCP", 8080));
    assert!(!kube.allows(&controller(), &batch, "TCP", 8080));
    // Why: the project's policy leaves `none` pods out, and each one's own
    // policy allows no egress.
    let project = kube
        .get("networkpolicies", "berth-web", "berth-web")
        .unwrap();
    assert_eq!(
        project["spec"]["podSelector"],
        json!({"matchExpressions": [{"key": "berth.dev/network", "operator": "NotIn", "values": ["none"]}]})
    );
    let own = kube
        .get("networkpolicies", "berth-web", &format!("berth-{}", ids[1]))
        .unwrap();
    assert_eq!(own["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(own["spec"]["egress"], json!([]));
    let log = infra_log(&alice, "batch", &ids[1]).await;
    assert!(
        log.contains("leaves this pod out (network: none)")
            && log.contains("lets it reach nothing, the cluster's DNS included"),
        "{log}"
    );
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_on_a_real_cluster() {
    let Some(kubeconfig) = std::env::var_os("BERTH_TEST_KUBECONFIG") else {
        eprintln!("BERTH_TEST_KUBECONFIG is not set: no real cluster to run on (the fake API server's test covers the scenario)");
        return;
    };
    let registry = Registry::start();
    let url = registry.url();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    on_cluster(&mut cfg, kubeconfig.into());
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    registry.push_busybox("kube", "echo hello from the cluster; exec sleep 600");
    let (s, v) = alice
        .post("/v1/projects/web/services", json!({"name": "api", "image": "team/app:kube", "registry": registry_body(&url, "ci", PASSWORD)}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let d = deploy(&alice, "api").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let (s, _) = alice.delete("/v1/projects/web/services/api").await;
    assert_eq!(s, StatusCode::OK);
    server.running.stop().await;
}

const API_KEY: &str = "k3y-for-the-api-Xq93";
const TLS_KEY: &str = "-----BEGIN KEY-----\nnot-really-a-key-Pz71\n-----END KEY-----\n";

/// The non-GET requests since `from`: (method, path without its query).
fn writes_since(kube: &FakeKube, from: usize) -> Vec<(String, String)> {
    kube.requests()[from..]
        .iter()
        .filter(|(m, _, _)| m != "GET")
        .map(|(m, p, _)| (m.clone(), p.split('?').next().unwrap().to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_reach_the_pod_through_a_secret_a_claim_and_a_node_selector() {
    let logs = trace_logs();
    let registry = Registry::start();
    let url = registry.url();
    let kube = FakeKube::start(Kubelet::Run);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &url, None);
    cfg.runtime = berth_server::RuntimeChoice::Kubernetes(berth_kubernetes::Settings {
        kubeconfig: Some(kube.kubeconfig()),
        storage_class: Some("fast-ssd".into()),
        ..Default::default()
    });
    // A replica claims only its region's services (and those naming none).
    cfg.region = Some("eu-west-1".into());
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "db", "image": "team/app:v1", "registry": registry_body(&url, "ci", PASSWORD),
                "env": {"GREETING": "hello $(HOME)"},
                "secrets": {"API_KEY": API_KEY, "TLS_KEY": TLS_KEY}, "secret_files": ["TLS_KEY"],
                "command": ["/bin/sh", "-c"], "args": ["echo $GREETING", "sh"],
                "volume": {"path": "/var/lib/db/", "size_mb": 16}, "region": "eu-west-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    // Nothing made on the cluster by a save: writes start with the deploy.
    let d = deploy(&alice, "db").await;
    assert_eq!(d["status"], "DEPLOYED", "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let name = format!("berth-{id}");
    let secret_name = format!("{name}-secrets");
    let claim = berth_kubernetes::claim_name("web", "db");

    // The container: variables literal (the kubelet's `$(...)` escaped),
    // secrets by reference only.
    let dep = kube.get("deployments", "berth-web", &name).unwrap();
    let uid = dep["metadata"]["uid"].as_str().unwrap().to_owned();
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["env"],
        json!([
            {"name": "GREETING", "value": "hello $$(HOME)"},
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": secret_name, "key": "API_KEY"}}},
        ])
    );
    assert_eq!(c["command"], json!(["/bin/sh", "-c"]));
    assert_eq!(c["args"], json!(["echo $$GREETING", "sh"]));
    assert_eq!(
        c["volumeMounts"],
        json!([
            {"name": "secrets", "mountPath": "/run/secrets", "readOnly": true},
            {"name": "data", "mountPath": "/var/lib/db"},
        ])
    );
    assert_eq!(
        pod["volumes"],
        json!([
            {"name": "secrets", "secret": {"secretName": secret_name, "items": [{"key": "TLS_KEY", "path": "TLS_KEY"}], "defaultMode": 0o400}},
            {"name": "data", "persistentVolumeClaim": {"claimName": claim}},
        ])
    );
    assert_eq!(
        pod["nodeSelector"],
        json!({"topology.kubernetes.io/region": "eu-west-1"})
    );
    assert_eq!(
        pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert!(
        !dep.to_string().contains("k3y-for"),
        "no value in the Deployment"
    );

    // The Secret: Opaque, the secrets' values under their names, owned by the
    // Deployment as its controller.
    let secret = kube
        .get("secrets", "berth-web", &secret_name)
        .expect("the Secret");
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["immutable"], true);
    let decode = |k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(secret["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(secret["data"].as_object().unwrap().len(), 2);
    assert_eq!(decode("API_KEY"), API_KEY);
    assert_eq!(decode("TLS_KEY"), TLS_KEY);
    let owner = &secret["metadata"]["ownerReferences"];
    assert_eq!(owner.as_array().unwrap().len(), 1);
    assert_eq!(
        (&owner[0]["kind"], &owner[0]["uid"], &owner[0]["controller"]),
        (&json!("Deployment"), &json!(uid), &json!(true))
    );

    // The claim: the service's, its size, the operator's class, owned by the
    // Deployment that mounts it.
    let pvc = kube
        .get("persistentvolumeclaims", "berth-web", &claim)
        .expect("the claim");
    let pvc_uid = pvc["metadata"]["uid"].clone();
    assert_eq!(pvc["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "16Mi");
    assert_eq!(pvc["spec"]["storageClassName"], "fast-ssd");
    assert_eq!(pvc["metadata"]["labels"]["berth.dev/service"], "db");
    assert_eq!(owners(&pvc), [uid.as_str()]);

    // In order: the Deployment (no replicas), what it owns, then scaled.
    let writes = writes_since(&kube, 0);
    let at = writes
        .iter()
        .position(|(m, p)| m == "POST" && p.ends_with("/deployments"))
        .unwrap();
    assert_eq!(
        writes[at..],
        [
            (
                "POST".to_owned(),
                "/apis/apps/v1/namespaces/berth-web/deployments".to_owned()
            ),
            (
                "POST".to_owned(),
                "/api/v1/namespaces/berth-web/secrets".to_owned()
            ),
            (
                "POST".to_owned(),
                "/api/v1/namespaces/berth-web/secrets".to_owned()
            ),
            (
                "POST".to_owned(),
                "/api/v1/namespaces/berth-web/persistentvolumeclaims".to_owned()
            ),
            (
                "PATCH".to_owned(),
                format!("/apis/apps/v1/namespaces/berth-web/deployments/{name}")
            ),
        ]
    );
    let log = infra_log(&alice, "db", &id).await;
    for want in [
        "settings: variables GREETING; secret variables API_KEY; secret files TLS_KEY under /run/secrets; command",
        &format!("Secret {secret_name} (Opaque, owned by the Deployment) holds the service's secrets: API_KEY as variables (secretKeyRef); TLS_KEY as files under /run/secrets (read-only, mode 0400)"),
        &format!("volume: PersistentVolumeClaim {claim} created with 16 MiB (storage class fast-ssd, ReadWriteOnce), mounted at /var/lib/db"),
        "region eu-west-1: only nodes labelled topology.kubernetes.io/region=eu-west-1 run the pod (nodeSelector)",
    ] {
        assert!(log.contains(want), "{want} not in:\n{log}");
    }

    // A redeploy with a bigger volume: the same claim (its data), its request
    // raised, owned by the new Deployment once the old one is gone; the old
    // Secret goes with the old Deployment.
    let (s, v) = alice
        .put(
            "/v1/projects/web/services/db",
            json!({"volume": {"path": "/var/lib/db", "size_mb": 32}, "redeploy": true}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let path = format!(
        "/v1/projects/web/services/db/deployments/{}",
        v["deployment"]["id"].as_str().unwrap()
    );
    let d2 = wait_for_end(&alice, &path).await;
    assert_eq!(d2["status"], "DEPLOYED", "{d2}");
    let id2 = d2["id"].as_str().unwrap().to_owned();
    let name2 = format!("berth-{id2}");
    let uid2 = kube.get("deployments", "berth-web", &name2).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_until("the replaced Deployment is deleted", || {
        kube.get("deployments", "berth-web", &name).is_none()
    })
    .await;
    assert!(kube.get("secrets", "berth-web", &secret_name).is_none());
    assert!(kube
        .get("secrets", "berth-web", &format!("{name2}-secrets"))
        .is_some());
    let pvc = kube
        .get("persistentvolumeclaims", "berth-web", &claim)
        .expect("the claim outlives the replaced Deployment");
    assert_eq!(pvc["metadata"]["uid"], pvc_uid, "the same claim: its data");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "32Mi");
    assert_eq!(pvc["status"]["capacity"]["storage"], "32Mi");
    assert_eq!(owners(&pvc), [uid2.as_str()]);
    let log2 = infra_log(&alice, "db", &id2).await;
    assert!(
        log2.contains(&format!("volume: PersistentVolumeClaim {claim} kept with its data, its request raised from 16 MiB to 32 MiB")),
        "{log2}"
    );

    // Terminate: the Deployment, and with it its Secret and the claim (its
    // last owner gone).
    let (s, _) = alice.delete("/v1/projects/web/services/db").await;
    assert_eq!(s, StatusCode::OK);
    wait_until("terminate deletes the Deployment", || {
        kube.get("deployments", "berth-web", &name2).is_none()
    })
    .await;
    assert!(kube
        .get("secrets", "berth-web", &format!("{name2}-secrets"))
        .is_none());
    assert!(kube.names("persistentvolumeclaims", "berth-web").is_empty());

    // The secrets' values only ever went to the Secret: not in the
    // deployments' logs, berth's data dir or its logs at TRACE.
    let b64 = base64::engine::general_purpose::STANDARD;
    let forms = [
        API_KEY.to_owned(),
        "not-really-a-key-Pz71".to_owned(),
        b64.encode(API_KEY),
        b64.encode(TLS_KEY),
    ];
    for id in [&id, &id2] {
        let log = infra_log(&alice, "db", id).await;
        for form in &forms {
            assert!(
                !log.contains(form.as_str()),
                "{form} in the deployment's log"
            );
        }
    }
    for f in files_under(dir.path()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for form in &forms {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_bytes()),
                "{form} in {}",
                f.display()
            );
        }
    }
    let text = logs.text();
    for form in &forms {
        assert!(!text.contains(form.as_str()), "{form} is in the logs");
    }
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_region_no_node_serves_leaves_the_pod_unscheduled_and_says_why() {
    let registry = Registry::start();
    let kube = FakeKube::start(Kubelet::Run);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), Db::Sqlite, &registry.url(), None);
    cfg.runtime = berth_server::RuntimeChoice::Kubernetes(berth_kubernetes::Settings {
        kubeconfig: Some(kube.kubeconfig()),
        ..Default::default()
    });
    cfg.region = Some("us-east-1".into());
    cfg.deploys.deadline = std::time::Duration::from_secs(8);
    let server = Server::start(cfg).await;
    let alice = server.admin().new_user("alice").await;
    alice.post("/v1/projects", json!({"name": "web"})).await;
    let (s, v) = alice
        .post(
            "/v1/projects/web/services",
            json!({"name": "api", "image": "team/app:v1", "registry": registry_body(&registry.url(), "ci", PASSWORD), "region": "us-east-1"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let d = deploy(&alice, "api").await;
    assert_eq!(d["status"], "FAILED", "{d}");
    let id = d["id"].as_str().unwrap();
    let log = infra_log(&alice, "api", id).await;
    assert!(
        log.contains("1 node(s) didn't match Pod's node affinity/selector"),
        "{log}"
    );
    wait_until("a failed deploy leaves nothing", || {
        kube.get("deployments", "berth-web", &format!("berth-{id}"))
            .is_none()
    })
    .await;
    server.running.stop().await;
}
