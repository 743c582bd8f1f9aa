//! What the stored NetworkPolicies let through, by the rules a network plugin
//! that enforces them (Calico, Cilium) follows: policies only add; a pod no
//! policy of its namespace selects for a direction is open that way; one that is
//! selected gets only what some selecting policy's rules allow; a connection
//! needs the sender's egress and the receiver's ingress. A test asks about the
//! objects as stored, so that a policy that looks right alone but is undone by
//! another (an allow elsewhere that selects the same pod) is caught.

use std::net::IpAddr;

use serde_json::{json, Value};

/// One end of a connection.
#[derive(Clone, Debug)]
pub enum Peer {
    /// A pod the fake kubelet made: (namespace, name).
    Pod(String, String),
    /// A pod of a namespace berth has nothing in (an ingress controller's, the
    /// cluster DNS in `kube-system`), with its labels.
    Other { namespace: String, labels: Value },
    /// An address outside the cluster's pods (the internet, a node, the cloud
    /// metadata service).
    Address(IpAddr),
}

/// A pod as policies see it: its namespace, its labels, its container ports.
struct Pod {
    namespace: String,
    labels: Value,
    spec: Value,
}

/// `objects` are the fake's (resource, namespace, name) -> object.
pub(super) fn allows(
    objects: &std::collections::BTreeMap<(String, String, String), Value>,
    from: &Peer,
    to: &Peer,
    protocol: &str,
    port: u16,
) -> bool {
    let pod = |p: &Peer| -> Option<Pod> {
        match p {
            Peer::Pod(ns, name) => {
                objects
                    .get(&("pods".into(), ns.clone(), name.clone()))
                    .map(|v| Pod {
                        namespace: ns.clone(),
                        labels: v["metadata"]["labels"].clone(),
                        spec: v["spec"].clone(),
                    })
            }
            Peer::Other { namespace, labels } => Some(Pod {
                namespace: namespace.clone(),
                labels: labels.clone(),
                spec: json!({}),
            }),
            Peer::Address(_) => None,
        }
    };
    let namespace_labels = |ns: &str| -> Value {
        objects
            .get(&("namespaces".into(), String::new(), ns.to_owned()))
            .map(|n| n["metadata"]["labels"].clone())
            // A namespace the fake does not hold still has the label the API
            // server gives every namespace.
            .unwrap_or_else(|| json!({"kubernetes.io/metadata.name": ns}))
    };
    let (sender, receiver) = (pod(from), pod(to));
    let policies = |ns: &str| -> Vec<&Value> {
        objects
            .iter()
            .filter(|((r, n, _), _)| r == "networkpolicies" && n == ns)
            .map(|(_, v)| v)
            .collect()
    };
    // Whether `peer` is one of a rule's peers, for a policy in `policy_ns`.
    let peer_matches = |rule_peer: &Value, policy_ns: &str, peer: &Peer| -> bool {
        if !rule_peer["ipBlock"].is_null() {
            let Peer::Address(ip) = peer else {
                return false;
            };
            let within = |c: &Value| {
                c.as_str()
                    .and_then(|c| c.parse::<ipnet::IpNet>().ok())
                    .is_some_and(|n| n.contains(ip))
            };
            return within(&rule_peer["ipBlock"]["cidr"])
                && !rule_peer["ipBlock"]["except"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(within);
        }
        let Some(p) = pod(peer) else {
            return false;
        };
        let in_namespace = match &rule_peer["namespaceSelector"] {
            Value::Null => p.namespace == policy_ns,
            sel => selects(sel, &namespace_labels(&p.namespace)),
        };
        in_namespace
            && match &rule_peer["podSelector"] {
                Value::Null => true,
                sel => selects(sel, &p.labels),
            }
    };
    let port_matches = |rule: &Value| -> bool {
        let Some(ports) = rule["ports"].as_array() else {
            return true;
        };
        ports.iter().any(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let number = match &p["port"] {
                Value::Null => return proto == protocol,
                Value::Number(n) => n.as_u64().map(|n| n as u16),
                // A named port is the receiving pod's.
                Value::String(name) => receiver.as_ref().and_then(|r| named_port(&r.spec, name)),
                _ => None,
            };
            let end = p["endPort"].as_u64().map(|e| e as u16).or(number);
            proto == protocol && number.is_some_and(|n| (n..=end.unwrap_or(n)).contains(&port))
        })
    };
    // One direction: `subject` is the pod whose policies decide, `other` the
    // far end, `direction` "ingress"/"egress" and its peers' key.
    let open = |subject: &Option<Pod>, other: &Peer, direction: &str, peers: &str| -> bool {
        let Some(s) = subject else {
            return true;
        };
        let kind = if direction == "ingress" {
            "Ingress"
        } else {
            "Egress"
        };
        let selecting: Vec<&Value> = policies(&s.namespace)
            .into_iter()
            .filter(|p| selects(&p["spec"]["podSelector"], &s.labels))
            .filter(|p| policy_types(&p["spec"]).contains(&kind))
            .collect();
        if selecting.is_empty() {
            return true;
        }
        selecting.iter().any(|p| {
            p["spec"][direction]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| {
                    let any_peer = match rule[peers].as_array() {
                        None => true,
                        Some(list) if list.is_empty() => true,
                        Some(list) => list.iter().any(|rp| peer_matches(rp, &s.namespace, other)),
                    };
                    any_peer && port_matches(rule)
                })
        })
    };
    open(&sender, to, "egress", "to") && open(&receiver, from, "ingress", "from")
}

/// `policyTypes`, or what the API server defaults it to: Ingress, and Egress
/// when there are egress rules.
fn policy_types(spec: &Value) -> Vec<&str> {
    match spec["policyTypes"].as_array() {
        Some(t) => t.iter().filter_map(Value::as_str).collect(),
        None if spec["egress"].as_array().is_some_and(|e| !e.is_empty()) => {
            vec!["Ingress", "Egress"]
        }
        None => vec!["Ingress"],
    }
}

/// A label selector (`matchLabels` and `matchExpressions`) against labels;
/// `{}` selects everything.
pub(super) fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |k: &str| labels[k].as_str();
    let by_labels = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let by_expressions = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let k = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => label(k).is_some_and(|v| values.contains(&v)),
                // NotIn selects objects without the key too.
                "NotIn" => !label(k).is_some_and(|v| values.contains(&v)),
                "Exists" => label(k).is_some(),
                "DoesNotExist" => label(k).is_none(),
                _ => false,
            }
        });
    by_labels && by_expressions
}

/// The number of the container port named `name` in a pod spec.
fn named_port(spec: &Value, name: &str) -> Option<u16> {
    spec["containers"]
        .as_array()?
        .iter()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .map(|p| p as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn world(policies: &[Value]) -> BTreeMap<(String, String, String), Value> {
        let mut objects = BTreeMap::new();
        for (name, labels) in [
            ("public", json!({"app": "a", "net": "public"})),
            ("none", json!({"app": "b", "net": "none"})),
        ] {
            objects.insert(
                ("pods".into(), "ns".into(), name.into()),
                json!({"metadata": {"labels": labels}, "spec": {"containers": [{"ports": [{"name": "http", "containerPort": 8080}]}]}}),
            );
        }
        for (i, p) in policies.iter().enumerate() {
            objects.insert(
                ("networkpolicies".into(), "ns".into(), format!("p{i}")),
                p.clone(),
            );
        }
        objects
    }

    fn pod(name: &str) -> Peer {
        Peer::Pod("ns".into(), name.into())
    }

    fn addr(s: &str) -> Peer {
        Peer::Address(s.parse().unwrap())
    }

    #[test]
    fn policies_only_add_and_select_by_label() {
        // No policy: everything is open.
        let open = world(&[]);
        assert!(allows(&open, &pod("none"), &addr("1.1.1.1"), "TCP", 443));
        // An egress allow for every pod undoes a deny-all that selects one of them.
        let allow_all =
            json!({"spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}});
        let deny_b = json!({"spec": {"podSelector": {"matchLabels": {"app": "b"}}, "policyTypes": ["Egress"], "egress": []}});
        let w = world(&[allow_all, deny_b.clone()]);
        assert!(allows(&w, &pod("none"), &addr("1.1.1.1"), "TCP", 443));
        // Selected out of the allow by NotIn, the deny-all holds.
        let allow_public = json!({"spec": {"podSelector": {"matchExpressions": [{"key": "net", "operator": "NotIn", "values": ["none"]}]},
                                           "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}]}});
        let w = world(&[allow_public, deny_b]);
        assert!(!allows(&w, &pod("none"), &addr("1.1.1.1"), "TCP", 443));
        assert!(allows(&w, &pod("public"), &addr("1.1.1.1"), "TCP", 443));
        assert!(
            !allows(&w, &pod("public"), &addr("10.1.2.3"), "TCP", 443),
            "except"
        );
    }

    #[test]
    fn ingress_from_a_namespace_on_a_named_port() {
        let p = json!({"spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
                         "ports": [{"protocol": "TCP", "port": "http"}]}]}});
        let w = world(&[p]);
        let controller = Peer::Other {
            namespace: "ingress-nginx".into(),
            labels: json!({"app.kubernetes.io/name": "ingress-nginx"}),
        };
        let elsewhere = Peer::Other {
            namespace: "other".into(),
            labels: json!({}),
        };
        assert!(allows(&w, &controller, &pod("public"), "TCP", 8080));
        assert!(!allows(&w, &controller, &pod("public"), "TCP", 9090));
        assert!(!allows(&w, &controller, &pod("public"), "UDP", 8080));
        assert!(!allows(&w, &elsewhere, &pod("public"), "TCP", 8080));
        assert!(!allows(&w, &pod("none"), &pod("public"), "TCP", 8080));
        // `none` is selected by no ingress policy: open.
        assert!(allows(&w, &elsewhere, &pod("none"), "TCP", 8080));
    }
}
