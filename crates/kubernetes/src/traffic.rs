//! How a service's pods are reached, and what they reach, as objects: the
//! container's named port, its readiness probe and its drain on deletion; the
//! deployment's own NetworkPolicy (ingress only from the ingress controller's
//! namespace, on that port; no egress at all for `network: none`); the
//! service's `Service` and `Ingress`, one of each for the service, rewritten by
//! each deploy that serves once its rollout is available ([`crate::Kubernetes::publish`]).
//!
//! **Why the Service selects the service, not the deployment.** Zero dropped
//! requests is the aim, and neither a selector switch nor a shared selector is
//! one step on a cluster: endpoints are rebuilt by the endpoint-slice
//! controller, and kube-proxy and the ingress controller each pick them up a
//! moment later. So the deciding part is that a pod serves as long as anything
//! may still send to it, which the kubelet gives either way: a pod is an
//! endpoint only while its readiness probe passes (the new one joins once it
//! answers), and a pod being deleted leaves the endpoints first and keeps
//! serving for [`DRAIN_SLEEP_S`] (a `preStop` sleep) before its app is told to
//! stop, with the rest of the grace period to finish what it answers. With
//! that, selecting the service's pods needs no write at the switch (a write
//! that could fail halfway, or race a terminate) and a failed deploy never
//! touches what serves: its pod never became ready, so it never was an
//! endpoint. The cost is a moment where both deployments answer, as in any
//! rolling update; runc's ingress switches in one step because berth is the
//! proxy there.

use serde_json::{json, Value};

use crate::names::is_ingress_host;
use crate::{
    dns_label, Network, Placed, Serve, Workload, DEPLOYMENT_LABEL, MANAGED_BY, PROJECT_LABEL,
    SERVICE_LABEL,
};

/// The container port's name: the Service's `targetPort`, the probe's and the
/// NetworkPolicy's port, so that a redeploy on another port needs none of them
/// rewritten while the old pod still serves on its own.
pub const PORT_NAME: &str = "http";
/// The Service's port, where the Ingress sends.
pub const SERVICE_PORT: i32 = 80;
/// How long a pod being deleted keeps serving before its app gets SIGTERM:
/// time for the endpoint's removal to reach kube-proxy and the ingress
/// controller. Within the pod's default 30 s grace period, which leaves the
/// app 25 s to finish what it answers (runc's ingress drains for 30 s).
pub const DRAIN_SLEEP_S: i64 = 5;
/// The readiness probe's period and timeout (runc's probe waits 2 s too).
const PROBE_S: i32 = 2;

/// The container of a serving pod: its port, named; ready when the health
/// path answers 2xx or 3xx (what a kubelet's `httpGet` counts as success,
/// and runc's probe too), else when the port accepts; and its drain.
pub(crate) fn serving_container(container: &mut Value, serve: &Serve) {
    container["ports"] =
        json!([{"name": PORT_NAME, "containerPort": serve.port, "protocol": "TCP"}]);
    let check = match &serve.health_path {
        Some(path) => json!({"httpGet": {"path": path, "port": PORT_NAME, "scheme": "HTTP"}}),
        None => json!({"tcpSocket": {"port": PORT_NAME}}),
    };
    let mut probe = check;
    probe["periodSeconds"] = json!(PROBE_S);
    probe["timeoutSeconds"] = json!(PROBE_S);
    probe["successThreshold"] = json!(1);
    probe["failureThreshold"] = json!(3);
    container["readinessProbe"] = probe;
    // The kubelet's own sleep (Kubernetes 1.30+), not `sleep` in the image:
    // an image need not have one.
    container["lifecycle"] = json!({"preStop": {"sleep": {"seconds": DRAIN_SLEEP_S}}});
}

/// The pod's labels: the workload's, and its network (`public` or `none`),
/// which the project's policy selects on.
pub(crate) fn network_value(n: Network) -> &'static str {
    match n {
        Network::Public => "public",
        Network::None => "none",
    }
}

/// The deployment's own NetworkPolicy, `berth-<id>` like its Deployment (which
/// owns it): for a pod that serves, ingress from the pods of the ingress
/// controller's namespace (by the `kubernetes.io/metadata.name` label the API
/// server gives every namespace) on its port; for `network: none`, egress to
/// nothing, cluster DNS included (the project's policy does not select such a
/// pod, so this is the only one that does). `None`: a public worker, which
/// the project's policy says everything of.
pub(crate) fn deployment_policy(
    w: &Workload<'_>,
    placed: &Placed,
    ingress_namespace: &str,
) -> Option<Value> {
    if w.serve.is_none() && w.network == Network::Public {
        return None;
    }
    let ingress = match &w.serve {
        Some(_) => json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ingress_namespace}}}],
            "ports": [{"protocol": "TCP", "port": PORT_NAME}],
        }]),
        None => json!([]),
    };
    let mut spec = json!({
        "podSelector": {"matchLabels": {DEPLOYMENT_LABEL: w.deployment}},
        "policyTypes": ["Ingress"],
        "ingress": ingress,
    });
    if w.network == Network::None {
        spec["policyTypes"] = json!(["Ingress", "Egress"]);
        spec["egress"] = json!([]);
    }
    Some(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": placed.name, "namespace": placed.namespace, "labels": crate::workload_labels(w)},
        "spec": spec,
    }))
}

/// The labels of a service's Service and Ingress (no deployment: they outlive
/// each one), and the Service's selector.
pub(crate) fn service_labels(w: &Workload<'_>) -> Value {
    json!({
        MANAGED_BY.0: MANAGED_BY.1,
        PROJECT_LABEL: dns_label(w.project),
        SERVICE_LABEL: dns_label(w.service),
    })
}

/// The service's `Service`: ClusterIP, its port 80 to the pods' named port,
/// selecting the service's pods (see the module's note for why not the
/// deployment's).
pub(crate) fn service(w: &Workload<'_>, name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": service_labels(w)},
        "spec": {
            "type": "ClusterIP",
            "selector": service_labels(w),
            "ports": [{"name": PORT_NAME, "protocol": "TCP", "port": SERVICE_PORT, "targetPort": PORT_NAME}],
        },
    })
}

/// The service's `Ingress`: a rule per host to the Service, in `class` (none:
/// the cluster's default class).
pub(crate) fn ingress(
    w: &Workload<'_>,
    name: &str,
    namespace: &str,
    class: Option<&str>,
    hosts: &[String],
) -> Value {
    let rules: Vec<Value> = hosts
        .iter()
        .map(|h| {
            json!({"host": h, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": name, "port": {"number": SERVICE_PORT}}},
            }]}})
        })
        .collect();
    let mut spec = json!({ "rules": rules });
    if let Some(class) = class {
        spec["ingressClassName"] = json!(class);
    }
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace, "labels": service_labels(w)},
        "spec": spec,
    })
}

/// The hosts an Ingress can have, and those it cannot (a service or project
/// named `web-` makes `api.web-.<domain>`, whose label ends in `-`): the
/// first are routed, the others said in the log rather than failing the deploy.
pub fn ingress_hosts(hosts: &[String]) -> (Vec<String>, Vec<String>) {
    let mut routed = Vec::new();
    let mut left_out = Vec::new();
    for h in hosts {
        if is_ingress_host(h) {
            if !routed.contains(h) {
                routed.push(h.clone());
            }
        } else {
            left_out.push(h.clone());
        }
    }
    (routed, left_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(serve: Option<Serve>, network: Network) -> Workload<'static> {
        Workload {
            deployment: "d1",
            project: "web",
            service: "api",
            image: "ghcr.io/acme/api@sha256:aa".into(),
            pull: None,
            run_as_non_root: false,
            memory_mb: None,
            cpu_millis: None,
            serve,
            network,
            settings: Default::default(),
        }
    }

    fn serve(health_path: Option<&str>) -> Option<Serve> {
        Some(Serve {
            port: 8080,
            health_path: health_path.map(str::to_owned),
            hosts: vec!["api.web.example.net".into()],
        })
    }

    fn placed() -> Placed {
        Placed {
            namespace: "berth-web".into(),
            name: "berth-d1".into(),
        }
    }

    #[test]
    fn ready_is_the_health_path_answering_else_the_port_accepting() {
        for (health_path, want) in [
            (
                Some("/healthz"),
                json!({"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}}),
            ),
            (None, json!({"tcpSocket": {"port": "http"}})),
        ] {
            let mut c = json!({"name": "app"});
            serving_container(&mut c, serve(health_path).as_ref().unwrap());
            assert_eq!(
                c["ports"],
                json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
            );
            let probe = &c["readinessProbe"];
            for (k, v) in want.as_object().unwrap() {
                assert_eq!(&probe[k], v, "{probe}");
            }
            assert_eq!(probe["periodSeconds"], 2);
            assert_eq!(c["lifecycle"]["preStop"]["sleep"]["seconds"], DRAIN_SLEEP_S);
        }
    }

    /// (serves, network) -> the deployment's policy's spec, or none.
    #[test]
    fn a_deployments_policy_says_only_what_the_projects_does_not() {
        let from_controller = json!([{
            "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
            "ports": [{"protocol": "TCP", "port": "http"}],
        }]);
        let selector = json!({"matchLabels": {"berth.dev/deployment": "d1"}});
        for (serve, network, want) in [
            (None, Network::Public, None),
            (
                serve(None),
                Network::Public,
                Some(
                    json!({"podSelector": selector, "policyTypes": ["Ingress"], "ingress": from_controller}),
                ),
            ),
            (
                serve(None),
                Network::None,
                Some(
                    json!({"podSelector": selector, "policyTypes": ["Ingress", "Egress"],
                            "ingress": from_controller, "egress": []}),
                ),
            ),
            (
                None,
                Network::None,
                Some(
                    json!({"podSelector": selector, "policyTypes": ["Ingress", "Egress"],
                            "ingress": [], "egress": []}),
                ),
            ),
        ] {
            let got = deployment_policy(&workload(serve, network), &placed(), "ingress-nginx");
            assert_eq!(got.map(|p| p["spec"].clone()), want);
        }
    }

    #[test]
    fn the_service_selects_the_services_pods_and_the_ingress_each_host() {
        let w = workload(serve(None), Network::Public);
        let s = service(&w, "berth-api-x", "berth-web");
        let labels = json!({"app.kubernetes.io/managed-by": "berth", "berth.dev/project": "web", "berth.dev/service": "api"});
        assert_eq!(s["spec"]["selector"], labels);
        assert_eq!(
            s["spec"]["ports"],
            json!([{"name": "http", "protocol": "TCP", "port": 80, "targetPort": "http"}])
        );
        let hosts = vec!["api.web.example.net".to_owned(), "shop.example.com".into()];
        let i = ingress(&w, "berth-api-x", "berth-web", Some("nginx"), &hosts);
        assert_eq!(i["spec"]["ingressClassName"], "nginx");
        let rule_hosts: Vec<&str> = i["spec"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["host"].as_str().unwrap())
            .collect();
        assert_eq!(rule_hosts, ["api.web.example.net", "shop.example.com"]);
        assert_eq!(
            i["spec"]["rules"][1]["http"]["paths"][0]["backend"],
            json!({"service": {"name": "berth-api-x", "port": {"number": 80}}})
        );
        let i = ingress(&w, "berth-api-x", "berth-web", None, &hosts);
        assert!(
            i["spec"].get("ingressClassName").is_none(),
            "the cluster's default"
        );
    }

    #[test]
    fn hosts_an_ingress_cannot_have_are_left_out() {
        let hosts: Vec<String> = [
            "api.web-.localhost",
            "api.web.localhost",
            "10.0.0.1",
            "api.web.localhost",
        ]
        .map(String::from)
        .to_vec();
        let (routed, left_out) = ingress_hosts(&hosts);
        assert_eq!(routed, ["api.web.localhost"]);
        assert_eq!(left_out, ["api.web-.localhost", "10.0.0.1"]);
    }
}
