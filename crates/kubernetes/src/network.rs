//! The NetworkPolicy that walls a project's pods in, as runc's sandbox does on
//! a machine of its own: ingress only from the project's own pods; egress to
//! them, to the cluster's DNS (port 53 in `kube-system`), to the public internet,
//! and to what the operator allows (`--kubernetes-egress-allow`). Cloud metadata
//! (link-local), other tenants' pods, berth itself and the cluster's services
//! are at private addresses, so they are out.
//!
//! NetworkPolicies only ever allow: once one selects a pod, what none of them
//! allows is refused. An operator who wants more (a database out) adds a policy
//! of their own or an allowed CIDR; this one is never in the way of theirs.
//! Because they only add, a pod of a `network: none` service must not be
//! selected by this policy at all (its egress rules would let it out): it
//! selects the project's pods whose `berth.dev/network` is not `none`, and
//! those are walled in by their deployment's own policy ([`crate::traffic`]),
//! which lets nothing out.

use serde_json::{json, Value};

use crate::{Namespaces, MANAGED_BY, NETWORK_LABEL, PROJECT_LABEL};

/// Everything but the public internet, by IPv4 range: RFC 1918, the
/// carrier-grade NAT range (some clusters' pod networks) and link-local (the
/// cloud metadata address `169.254.169.254`).
pub const PRIVATE_V4: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "169.254.0.0/16",
];
/// The same for IPv6: unique local addresses (all of `fc00::/7`, of which
/// `fd00::/8` is the half in use) and link-local.
pub const PRIVATE_V6: [&str; 2] = ["fc00::/7", "fe80::/10"];

/// `a, b`: the CIDRs an operator allows (`--kubernetes-egress-allow`); a bare
/// address is one host, and host bits are cleared (the API server wants a
/// network).
pub fn parse_cidrs(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("{s:?} is not a CIDR (such as 10.20.0.0/16)"))
        })
        .collect()
}

/// The NetworkPolicy of `project` in `namespace`. In a namespace of its own it
/// selects every pod there; in one namespace the operator gives every project,
/// the project's pods by their label (and the other projects' are not its
/// own).
pub(crate) fn policy(
    namespaces: &Namespaces,
    namespace: &str,
    name: &str,
    project: &str,
    egress_allow: &[ipnet::IpNet],
) -> Value {
    let own = match namespaces {
        Namespaces::PerProject => json!({}),
        Namespaces::Fixed(_) => json!({"matchLabels": {PROJECT_LABEL: project}}),
    };
    let mut egress = vec![
        json!({"to": [{"podSelector": own}]}),
        json!({
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }),
        json!({"to": [
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_V4}},
            {"ipBlock": {"cidr": "::/0", "except": PRIVATE_V6}},
        ]}),
    ];
    if !egress_allow.is_empty() {
        let to: Vec<Value> = egress_allow
            .iter()
            .map(|c| json!({"ipBlock": {"cidr": c.to_string()}}))
            .collect();
        egress.push(json!({ "to": to }));
    }
    // `NotIn` also selects pods without the label (those of deployments made
    // before berth labelled the network).
    let mut selected = own.clone();
    selected["matchExpressions"] =
        json!([{"key": NETWORK_LABEL, "operator": "NotIn", "values": ["none"]}]);
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1, PROJECT_LABEL: project},
        },
        "spec": {
            "podSelector": selected,
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": own}]}],
            "egress": egress,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_cidrs() {
        assert_eq!(
            parse_cidrs(" 10.20.0.5/16, 192.0.2.7,fd12::/64 ,").unwrap(),
            vec![
                "10.20.0.0/16".parse::<ipnet::IpNet>().unwrap(),
                "192.0.2.7/32".parse().unwrap(),
                "fd12::/64".parse().unwrap(),
            ]
        );
        assert!(parse_cidrs("harbor.internal")
            .unwrap_err()
            .contains("not a CIDR"));
    }

    #[test]
    fn in_a_shared_namespace_the_project_is_its_own_pods() {
        let allow = ["10.20.0.0/16".parse().unwrap()];
        let p = policy(
            &Namespaces::Fixed("apps".into()),
            "apps",
            "berth-web",
            "web",
            &allow,
        );
        let own = json!({"matchLabels": {"berth.dev/project": "web"}});
        assert_eq!(
            p["spec"]["podSelector"],
            json!({"matchLabels": {"berth.dev/project": "web"},
                   "matchExpressions": [{"key": "berth.dev/network", "operator": "NotIn", "values": ["none"]}]})
        );
        assert_eq!(
            p["spec"]["ingress"],
            json!([{"from": [{"podSelector": own}]}])
        );
        assert_eq!(
            p["spec"]["egress"][0],
            json!({"to": [{"podSelector": own}]})
        );
        assert_eq!(
            p["spec"]["egress"][3],
            json!({"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]})
        );
        assert_eq!(p["metadata"]["namespace"], "apps");
    }
}
