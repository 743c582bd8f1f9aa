//! A container's network: its own network namespace, created by berth (owned by the
//! host's user namespace, so root inside the container cannot reconfigure it), with
//! only `lo` for `none`, and for `public` a userspace network stack (pasta, from
//! Debian's `passt`) for outbound traffic under an egress policy enforced by
//! nftables rules inside that namespace. Nothing is added on the host's side: no
//! bridge, no veth, no route, no address, no port handed out. Inbound traffic
//! (the ingress) opens its socket inside the namespace and connects to the app's
//! port on the namespace's own loopback ([`Netns::dial`]), as the kubelet's
//! port-forward does.

mod dns;
mod netns;
mod pasta;
mod probe;

use std::net::IpAddr;

use ipnet::IpNet;

pub use dns::{system_resolvers, DnsForwarder};
pub use netns::{run_inside, Netns};
pub use probe::{probe, Probe, ProbeError};

/// What a container may reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Network {
    /// Outbound to the public internet, under the egress policy.
    #[default]
    Public,
    /// Nothing but its own loopback (inbound still works through the ingress).
    None,
}

/// The container's side of the userspace link: fixed documentation addresses
/// (never routed anywhere; pasta translates every flow into a socket of its own),
/// so that the rules can name the gateway before the link exists.
pub const CONTAINER_ADDRESS: &str = "192.0.2.2";
/// Pasta maps this address to the host's loopback: the rules refuse it unless the
/// policy allows a host loopback address.
pub const GATEWAY_ADDRESS: &str = "192.0.2.1";
/// The container's resolver: pasta carries port 53 of the namespace's loopback to
/// berth's [`DnsForwarder`] on the host's loopback.
pub const RESOLVER_ADDRESS: &str = "127.0.0.1";

/// Where `public` containers may connect: anywhere but the registry guard's
/// blocklist (host loopback, RFC 1918, link-local, CGNAT, ULA, multicast,
/// reserved), unless a range is allowed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EgressPolicy {
    /// Ranges exempt from the blocklist (`--container-egress-allow`).
    pub allow: Vec<IpNet>,
}

impl EgressPolicy {
    /// Whether the policy lets a container reach the host's loopback (through the
    /// gateway address pasta maps to it).
    fn allows_host_loopback(&self) -> bool {
        let lo: IpAddr = "127.0.0.1".parse().expect("literal");
        self.allow.iter().any(|n| n.contains(&lo))
    }

    /// The nftables ruleset loaded into a `public` container's namespace. Rules
    /// are checked in order: the namespace's own loopback (its resolver included),
    /// the allowed ranges, then the blocklist is rejected (a refused connection
    /// fails at once rather than hanging), then everything else is accepted.
    pub fn ruleset(&self) -> String {
        let (mut v4, mut v6): (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        for range in berth_registry::policy::BLOCKED_RANGES {
            if range.contains(':') {
                v6.push((*range).into());
            } else {
                v4.push((*range).into());
            }
        }
        let mut rules = vec!["oifname \"lo\" accept".to_owned()];
        if self.allows_host_loopback() {
            rules.push(format!("ip daddr {GATEWAY_ADDRESS} accept"));
        } else {
            rules.push(format!(
                "ip daddr {GATEWAY_ADDRESS} reject with icmpx type admin-prohibited"
            ));
        }
        for net in &self.allow {
            let family = if matches!(net, IpNet::V4(_)) {
                "ip"
            } else {
                "ip6"
            };
            rules.push(format!("{family} daddr {net} accept"));
        }
        rules.push(format!(
            "ip daddr {{ {} }} reject with icmpx type admin-prohibited",
            v4.join(", ")
        ));
        rules.push(format!(
            "ip6 daddr {{ {} }} reject with icmpx type admin-prohibited",
            v6.join(", ")
        ));
        format!(
            "table inet berth_egress {{\n  chain output {{\n    type filter hook output priority 0; policy accept;\n{}\n  }}\n}}\n",
            rules
                .iter()
                .map(|r| format!("    {r}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("the container network needs {tool}, which was not found on PATH; install it (Debian: apt-get install {package})")]
    Missing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("creating the container's network namespace: {0}")]
    Namespace(std::io::Error),
    #[error("loading the egress rules into the container's namespace: {0}")]
    Rules(String),
    #[error("starting pasta for the container's outbound traffic: {0}")]
    Pasta(String),
}

/// A tool the network needs, from PATH or the sbin directories.
fn find_tool(
    tool: &'static str,
    package: &'static str,
) -> Result<std::path::PathBuf, NetworkError> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| std::path::Path::new(d).join(tool))
        .find(|p| p.is_file())
        .ok_or(NetworkError::Missing { tool, package })
}

/// Everything a `public` container's network needs from the server: the policy
/// and the port of the DNS forwarder on the host's loopback.
#[derive(Clone, Debug)]
pub struct Egress {
    pub policy: EgressPolicy,
    pub dns_port: u16,
}

/// Sets up container `id`'s namespace at `path`: `lo` only, or with `egress` the
/// rules and then pasta. On failure nothing is left behind.
pub fn create(path: &std::path::Path, egress: Option<&Egress>) -> Result<Netns, NetworkError> {
    let rules = match egress {
        Some(e) => Some((find_tool("nft", "nftables")?, e.policy.ruleset())),
        None => None,
    };
    let pasta = match egress {
        Some(_) => Some(find_tool("pasta", "passt")?),
        None => None,
    };
    let ns = Netns::create(path, rules)?;
    if let (Some(bin), Some(e)) = (pasta, egress) {
        if let Err(err) = pasta::start(&bin, &ns, e.dns_port) {
            ns.remove();
            return Err(err);
        }
    }
    Ok(ns)
}

/// The image's single exposed TCP port (`8080/tcp` or `8080`); none, or several,
/// is no port.
pub fn exposed_port(config: &oci_spec::image::ImageConfiguration) -> Option<u16> {
    let ports = config.config().as_ref()?.exposed_ports().clone()?;
    let tcp: Vec<u16> = ports
        .iter()
        .filter_map(|p| match p.split_once('/') {
            Some((n, "tcp")) | Some((n, "")) => n.parse().ok(),
            Some(_) => None,
            None => p.parse().ok(),
        })
        .collect();
    match tcp[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// The `/etc/resolv.conf` of a `public` container.
pub fn resolv_conf() -> String {
    format!("nameserver {RESOLVER_ADDRESS}\noptions ndots:1\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_exposed_tcp_port() {
        let check = |ports: &[&str]| {
            let config: oci_spec::image::ImageConfiguration = serde_json::from_value(serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "config": {"ExposedPorts": ports.iter().map(|p| (p.to_string(), serde_json::json!({}))).collect::<serde_json::Map<_, _>>()},
                "rootfs": {"type": "layers", "diff_ids": []}
            }))
            .unwrap();
            exposed_port(&config)
        };
        assert_eq!(check(&["8080/tcp"]), Some(8080));
        assert_eq!(check(&["8080"]), Some(8080));
        assert_eq!(check(&["53/udp", "8080/tcp"]), Some(8080));
        assert_eq!(check(&["80/tcp", "443/tcp"]), None);
        assert_eq!(check(&[]), None);
    }

    #[test]
    fn the_rules_refuse_the_blocklist_and_the_host_unless_allowed() {
        let rules = EgressPolicy::default().ruleset();
        assert!(rules.contains("oifname \"lo\" accept"), "{rules}");
        assert!(rules.contains("ip daddr 192.0.2.1 reject"), "{rules}");
        for range in [
            "10.0.0.0/8",
            "169.254.0.0/16",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
        ] {
            assert!(rules.contains(range), "{range} missing: {rules}");
        }
        for range in ["fc00::/7", "fe80::/10", "::1/128", "::ffff:0:0/96"] {
            assert!(rules.contains(range), "{range} missing: {rules}");
        }
        // Allowed ranges come before the blocklist.
        let allow = EgressPolicy {
            allow: vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.20.0.0/16".parse().unwrap(),
            ],
        }
        .ruleset();
        assert!(allow.contains("ip daddr 192.0.2.1 accept"), "{allow}");
        let (a, b) = (
            allow.find("ip daddr 10.20.0.0/16 accept").unwrap(),
            allow.find("ip daddr { 0.0.0.0/8").unwrap(),
        );
        assert!(a < b, "{allow}");
    }
}
