//! Request and response shapes against kube's mock service: the exact paths,
//! methods and bodies `apply` and `delete` send, and how they take the API
//! server's 409, 404 and 403 (`Status` objects as the API server writes them),
//! a namespace that is not berth's, and a `hostUsers` the API server dropped;
//! a serving pod's probe, drain and own NetworkPolicy, and `publish`'s writes
//! (owners kept, another service's objects refused, a worker's deletes).

use http::{Request, Response};
use kube::client::Body;
use secrecy::SecretString;
use serde_json::{json, Value};
use tower_test::mock::{self, Handle};

use super::*;

type Mock = Handle<Request<Body>, Response<Body>>;

fn cluster() -> (Kubernetes, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    (Kubernetes::from_client(client, Settings::default()), handle)
}

fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

fn ok(code: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

/// The next request: method, path and query, JSON body (Null when none).
async fn next(h: &mut Mock) -> (String, String, Value, mock::SendResponse<Response<Body>>) {
    let (req, send) = h.next_request().await.expect("a request");
    let method = req.method().to_string();
    let path = req.uri().path_and_query().unwrap().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (method, path, body, send)
}

fn workload<'a>() -> Workload<'a> {
    Workload {
        deployment: "d1",
        project: "web",
        service: "api",
        image: "ghcr.io/acme/api@sha256:aa".into(),
        pull: Some(PullCredentials {
            registry: "ghcr.io".into(),
            username: "ci".into(),
            password: SecretString::from("s3cret"),
        }),
        run_as_non_root: true,
        memory_mb: Some(256),
        cpu_millis: Some(500),
        serve: None,
        network: Network::Public,
        settings: Default::default(),
    }
}

#[tokio::test]
async fn apply_replaces_a_leftover_and_orders_its_writes() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        // The namespace exists already (409), and is berth's for the project.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!((m.as_str(), p.as_str()), ("POST", "/api/v1/namespaces?"));
        assert_eq!(body["metadata"]["name"], "berth-web");
        assert_eq!(body["metadata"]["labels"]["berth.dev/project"], "web");
        send.send_response(status(
            409,
            "AlreadyExists",
            "namespaces \"berth-web\" already exists",
        ));
        let (m, p, _, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("GET", "/api/v1/namespaces/berth-web")
        );
        send.send_response(ok(200, body));
        // The NetworkPolicy, before any pod.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "POST",
                "/apis/networking.k8s.io/v1/namespaces/berth-web/networkpolicies?"
            )
        );
        assert_eq!(body["metadata"]["name"], "berth-web");
        assert_eq!(
            body["spec"]["podSelector"],
            json!({"matchExpressions": [{"key": "berth.dev/network", "operator": "NotIn", "values": ["none"]}]})
        );
        send.send_response(ok(201, body));
        // A Deployment left by a crash mid-deploy: 409, then deleted and made again.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("POST", "/apis/apps/v1/namespaces/berth-web/deployments?")
        );
        assert_eq!(body["spec"]["replicas"], 0, "created with no replicas");
        send.send_response(status(
            409,
            "AlreadyExists",
            "deployments.apps \"berth-d1\" already exists",
        ));
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/berth-web/deployments/berth-d1?"
            )
        );
        assert_eq!(body["propagationPolicy"], "Background");
        send.send_response(ok(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ));
        let (m, p, _, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("DELETE", "/api/v1/namespaces/berth-web/secrets/berth-d1?")
        );
        send.send_response(status(404, "NotFound", "secrets \"berth-d1\" not found"));
        let (m, p, _, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "DELETE",
                "/api/v1/namespaces/berth-web/secrets/berth-d1-secrets?"
            )
        );
        send.send_response(status(
            404,
            "NotFound",
            "secrets \"berth-d1-secrets\" not found",
        ));
        let (m, p, _, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "DELETE",
                "/apis/networking.k8s.io/v1/namespaces/berth-web/networkpolicies/berth-d1?"
            )
        );
        send.send_response(status(
            404,
            "NotFound",
            "networkpolicies.networking.k8s.io \"berth-d1\" not found",
        ));
        let (m, _, body, send) = next(&mut h).await;
        assert_eq!(m, "POST");
        let pod = &body["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], "ghcr.io/acme/api@sha256:aa");
        assert_eq!(
            pod["containers"][0]["resources"],
            json!({"requests": {"memory": "256Mi", "cpu": "500m"}, "limits": {"memory": "256Mi", "cpu": "500m"}})
        );
        assert_eq!(pod["hostUsers"], false);
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "berth-d1"}]));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            body["spec"]["selector"]["matchLabels"],
            json!({"berth.dev/deployment": "d1"})
        );
        let mut created = body.clone();
        created["metadata"]["uid"] = json!("uid-1");
        send.send_response(ok(201, created));
        // The Secret, owned by that uid.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("POST", "/api/v1/namespaces/berth-web/secrets?")
        );
        assert_eq!(body["type"], "kubernetes.io/dockerconfigjson");
        assert_eq!(body["immutable"], true);
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(body["metadata"]["ownerReferences"][0]["kind"], "Deployment");
        assert!(body["data"][".dockerconfigjson"].is_string(), "base64 data");
        send.send_response(ok(201, body));
        // Then one replica, by merge patch.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "PATCH",
                "/apis/apps/v1/namespaces/berth-web/deployments/berth-d1?"
            )
        );
        assert_eq!(body, json!({"spec": {"replicas": 1}}));
        send.send_response(ok(200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "berth-d1"}})));
    });
    let applied = k.apply(&workload()).await.unwrap();
    assert_eq!(
        applied,
        Applied {
            placed: Placed {
                namespace: "berth-web".into(),
                name: "berth-d1".into()
            },
            user_namespace: UserNamespace::Own,
            secret: None,
            claim: None,
        }
    );
    server.await.unwrap();
}

/// Answers a deploy's namespace and NetworkPolicy as created.
async fn namespace_and_policy_created(h: &mut Mock) {
    for _ in 0..2 {
        let (m, _, body, send) = next(h).await;
        assert_eq!(m, "POST");
        send.send_response(ok(201, body));
    }
}

#[tokio::test]
async fn a_dropped_host_users_is_told() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        namespace_and_policy_created(&mut h).await;
        // An API server that does not know the field stores the pod without it.
        let (_, _, body, send) = next(&mut h).await;
        let mut stored = body.clone();
        stored["spec"]["template"]["spec"]
            .as_object_mut()
            .unwrap()
            .remove("hostUsers");
        stored["metadata"]["uid"] = json!("uid-1");
        send.send_response(ok(201, stored));
        for _ in 0..2 {
            let (_, _, body, send) = next(&mut h).await;
            send.send_response(ok(200, body));
        }
    });
    let applied = k.apply(&workload()).await.unwrap();
    server.await.unwrap();
    assert_eq!(applied.user_namespace, UserNamespace::Dropped);
}

#[tokio::test]
async fn a_namespace_someone_else_made_is_not_used() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut h).await;
        send.send_response(status(
            409,
            "AlreadyExists",
            "namespaces \"berth-web\" already exists",
        ));
        let (m, _, _, send) = next(&mut h).await;
        assert_eq!(m, "GET");
        send.send_response(ok(
            200,
            json!({"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "berth-web", "labels": {"kubernetes.io/metadata.name": "berth-web"}}}),
        ));
        // Nothing more: the mock fails the test on any further request.
        assert!(h.next_request().await.is_none());
    });
    let e = k.apply(&workload()).await.unwrap_err();
    drop(k);
    server.await.unwrap();
    assert!(matches!(e, KubeError::NotBerths { .. }), "{e}");
    let message = e.to_string();
    for want in [
        "namespace berth-web exists and is not berth's for project web",
        "app.kubernetes.io/managed-by=berth berth.dev/project=web",
        "it has kubernetes.io/metadata.name=berth-web",
        "kubectl label namespace berth-web",
    ] {
        assert!(message.contains(want), "{want} not in {message}");
    }
}

#[tokio::test]
async fn a_forbidden_create_is_said_as_the_api_server_said_it() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        namespace_and_policy_created(&mut h).await;
        let (_, _, _, send) = next(&mut h).await;
        send.send_response(status(403, "Forbidden", "deployments.apps is forbidden: User \"system:serviceaccount:berth:berth\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"berth-web\""));
    });
    let e = k.apply(&workload()).await.unwrap_err();
    server.await.unwrap();
    match &e {
        KubeError::Api {
            code,
            reason,
            message,
            ..
        } => {
            assert_eq!((*code, reason.as_str()), (403, "Forbidden"));
            assert!(message.contains("cannot create resource"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(!e.to_string().contains("s3cret"));
}

#[tokio::test]
async fn delete_takes_what_is_already_gone() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        for _ in 0..4 {
            let (m, _, _, send) = next(&mut h).await;
            assert_eq!(m, "DELETE");
            send.send_response(status(404, "NotFound", "not found"));
        }
    });
    k.delete(&Placed {
        namespace: "berth-web".into(),
        name: "berth-d1".into(),
    })
    .await
    .unwrap();
    server.await.unwrap();
}

#[test]
fn a_passed_progress_deadline_is_a_runtime_error() {
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "berth-d1", "generation": 2},
        "status": {"observedGeneration": 2, "replicas": 1, "unavailableReplicas": 1, "conditions": [
            {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "Deployment does not have minimum availability."},
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"berth-d1-6b7f\" has timed out progressing."}]}
    }))
    .unwrap();
    let r = Rollout {
        deployment: Some(deployment),
        pods: vec![],
        events: vec![],
    };
    match r.verdict() {
        Verdict::Failed { code, message } => {
            assert_eq!(code, crate::Cause::RuntimeError);
            assert!(message.contains("timed out progressing"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_rollout_is_watched_by_its_deployment_and_its_pods() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        let mut paths = Vec::new();
        for _ in 0..2 {
            let (m, p, _, send) = next(&mut h).await;
            assert_eq!(m, "GET");
            paths.push(p);
            // A watch answers a stream of JSON lines.
            let line = json!({"type": "ADDED", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "berth-d1-x", "resourceVersion": "7"}}});
            send.send_response(ok(200, line));
        }
        paths.sort();
        paths
    });
    let placed = Placed {
        namespace: "berth-web".into(),
        name: "berth-d1".into(),
    };
    let mut changes = k.changes(&placed).await.unwrap();
    use futures_util::StreamExt;
    assert_eq!(changes.next().await, Some(()));
    let paths = server.await.unwrap();
    assert!(
        paths[0].starts_with("/api/v1/namespaces/berth-web/pods?"),
        "{paths:?}"
    );
    assert!(
        paths[0].contains("watch=true")
            && paths[0].contains("labelSelector=berth.dev%2Fdeployment%3Dd1"),
        "{paths:?}"
    );
    assert!(
        paths[1].starts_with("/apis/apps/v1/namespaces/berth-web/deployments?"),
        "{paths:?}"
    );
    assert!(
        paths[1].contains("watch=true")
            && paths[1].contains("fieldSelector=metadata.name%3Dberth-d1"),
        "{paths:?}"
    );
    assert!(
        paths.iter().all(|p| p.contains("resourceVersion=0")),
        "{paths:?}"
    );
}

fn serving(network: Network) -> Workload<'static> {
    Workload {
        serve: Some(Serve {
            port: 8080,
            health_path: Some("/healthz".into()),
            hosts: vec!["api.web.apps.example".into(), "shop.example.com".into()],
        }),
        network,
        ..workload()
    }
}

#[tokio::test]
async fn a_serving_pod_is_probed_drained_and_walled_in_before_it_runs() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        namespace_and_policy_created(&mut h).await;
        // The Deployment, as the typed client sends it (nothing dropped on the
        // way through k8s-openapi's types).
        let (_, _, body, send) = next(&mut h).await;
        let pod = &body["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(
            c["ports"],
            json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
        );
        assert_eq!(
            c["readinessProbe"],
            json!({"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                   "periodSeconds": 2, "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(
            c["lifecycle"],
            json!({"preStop": {"sleep": {"seconds": 5}}})
        );
        assert_eq!(
            body["spec"]["template"]["metadata"]["labels"]["berth.dev/network"],
            "none"
        );
        let mut created = body.clone();
        created["metadata"]["uid"] = json!("uid-1");
        send.send_response(ok(201, created));
        let (_, p, body, send) = next(&mut h).await;
        assert!(p.contains("/secrets"), "{p}");
        send.send_response(ok(201, body));
        // Its own NetworkPolicy, owned by it, before the replica.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "POST",
                "/apis/networking.k8s.io/v1/namespaces/berth-web/networkpolicies?"
            )
        );
        assert_eq!(body["metadata"]["name"], "berth-d1");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        assert_eq!(
            body["spec"],
            json!({
                "podSelector": {"matchLabels": {"berth.dev/deployment": "d1"}},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{
                    "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
                    "ports": [{"protocol": "TCP", "port": "http"}],
                }],
                "egress": [],
            })
        );
        send.send_response(ok(201, body));
        let (m, _, _, send) = next(&mut h).await;
        assert_eq!(m, "PATCH");
        send.send_response(ok(200, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "berth-d1"}})));
    });
    k.apply(&serving(Network::None)).await.unwrap();
    server.await.unwrap();
}

fn placed() -> Placed {
    Placed {
        namespace: "berth-web".into(),
        name: "berth-d1".into(),
    }
}

#[tokio::test]
async fn publish_keeps_the_serving_owner_and_adds_the_new_one() {
    let (k, mut h) = cluster();
    let name = traffic_name("web", "api");
    let n = name.clone();
    let server = tokio::spawn(async move {
        let name = n;
        let (m, p, _, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "GET",
                "/apis/apps/v1/namespaces/berth-web/deployments/berth-d1"
            )
        );
        send.send_response(ok(
            200,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "berth-d1", "uid": "uid-1"}}),
        ));
        // The Ingress first; it exists, written by the deployment serving now.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "POST",
                "/apis/networking.k8s.io/v1/namespaces/berth-web/ingresses?"
            )
        );
        assert!(body["spec"].get("ingressClassName").is_none());
        send.send_response(status(
            409,
            "AlreadyExists",
            "ingresses.networking.k8s.io already exists",
        ));
        let (m, _, _, send) = next(&mut h).await;
        assert_eq!(m, "GET");
        let old_owner = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "berth-d0", "uid": "uid-0"});
        send.send_response(ok(200, json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "berth-web", "resourceVersion": "41",
                         "labels": {"app.kubernetes.io/managed-by": "berth", "berth.dev/project": "web", "berth.dev/service": "api"},
                         "ownerReferences": [old_owner]},
            "spec": {"rules": []}})));
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            (
                "PUT",
                format!("/apis/networking.k8s.io/v1/namespaces/berth-web/ingresses/{name}?")
                    .as_str()
            )
        );
        assert_eq!(body["metadata"]["resourceVersion"], "41");
        let owners: Vec<&str> = body["metadata"]["ownerReferences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["uid"].as_str().unwrap())
            .collect();
        assert_eq!(owners, ["uid-0", "uid-1"]);
        assert!(body["metadata"]["ownerReferences"][1]["controller"].is_null());
        assert_eq!(body["spec"]["rules"][1]["host"], "shop.example.com");
        send.send_response(ok(200, body));
        // Then the Service, new.
        let (m, p, body, send) = next(&mut h).await;
        assert_eq!(
            (m.as_str(), p.as_str()),
            ("POST", "/api/v1/namespaces/berth-web/services?")
        );
        assert_eq!(body["spec"]["ports"][0]["targetPort"], "http");
        send.send_response(ok(201, body));
    });
    let routing = k
        .publish(&serving(Network::Public), &placed())
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(
        routing,
        Routing::Routed {
            name,
            hosts: vec!["api.web.apps.example".into(), "shop.example.com".into()],
            left_out: vec![],
        }
    );
}

#[tokio::test]
async fn publish_refuses_an_object_of_another_service() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        let (_, _, _, send) = next(&mut h).await;
        send.send_response(ok(
            200,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "berth-d1", "uid": "uid-1"}}),
        ));
        let (_, _, _, send) = next(&mut h).await;
        send.send_response(status(409, "AlreadyExists", "already exists"));
        let (_, _, _, send) = next(&mut h).await;
        send.send_response(ok(
            200,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "x", "namespace": "berth-web", "labels": {"team": "payments"}}}),
        ));
        assert!(h.next_request().await.is_none(), "nothing written over it");
    });
    let e = k
        .publish(&serving(Network::Public), &placed())
        .await
        .unwrap_err();
    drop(k);
    server.await.unwrap();
    assert!(matches!(e, KubeError::NotBerths { .. }), "{e}");
    assert!(e.to_string().contains("team=payments"), "{e}");
}

#[tokio::test]
async fn a_workers_deploy_deletes_only_berths_service_and_ingress() {
    let (k, mut h) = cluster();
    let server = tokio::spawn(async move {
        // The Ingress is gone already; a Service of that name is someone else's.
        let (m, p, _, send) = next(&mut h).await;
        assert_eq!(m, "GET");
        assert!(p.contains("/ingresses/"), "{p}");
        send.send_response(status(404, "NotFound", "not found"));
        let (m, p, _, send) = next(&mut h).await;
        assert_eq!(m, "GET");
        assert!(p.contains("/services/"), "{p}");
        send.send_response(ok(200, json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "x", "namespace": "berth-web", "labels": {"app.kubernetes.io/managed-by": "berth", "berth.dev/project": "web", "berth.dev/service": "other"}}})));
        assert!(h.next_request().await.is_none(), "nothing deleted");
    });
    let routing = k.publish(&workload(), &placed()).await.unwrap();
    drop(k);
    server.await.unwrap();
    assert_eq!(routing, Routing::Unrouted { deleted: vec![] });
}
