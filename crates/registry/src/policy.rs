//! The registry network policy: which addresses berth may connect to on a user's
//! behalf, which hosts may be reached over plain HTTP, which extra roots to trust.
//!
//! **Invariant: every outbound connection made for a user goes to an address for
//! which [`NetworkPolicy::check`] said yes.** The guarded transport applies it to the
//! resolved socket address (and to IP literals, which never reach a resolver).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;

/// The whole preflight, DNS included, ends within this.
pub const PREFLIGHT_DEADLINE: Duration = Duration::from_secs(8);

#[derive(Clone, Debug, Default)]
pub struct NetworkPolicy {
    /// CIDRs exempt from the blocklist (`BERTH_REGISTRY_ALLOW_PRIVATE`).
    pub allow_private: Vec<IpNet>,
    /// `host:port` (or bare `host`) reached over plain HTTP (`BERTH_REGISTRY_INSECURE`).
    pub insecure: Vec<String>,
    /// Extra PEM roots (`BERTH_REGISTRY_CA_FILE`, already read).
    pub extra_roots_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0:?} is not a CIDR (e.g. 10.20.0.0/16 or 10.20.0.7/32)")]
    Cidr(String),
    #[error("{0:?} is not host:port")]
    Insecure(String),
}

/// The blocklist of [`is_blocked`] as CIDR ranges, for packet filters (a
/// container's egress rules): the same ranges, with the IPv6 forms that embed an
/// IPv4 address blocked whole (mapped, compatible, NAT64, 6to4, Teredo).
pub const BLOCKED_RANGES: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/3",
    "::/96",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Comma-separated CIDRs (or bare addresses, as /32 or /128).
pub fn parse_cidrs(list: &str) -> Result<Vec<IpNet>, PolicyError> {
    split_list(list)
        .map(|c| {
            c.parse::<IpNet>()
                .or_else(|_| c.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| PolicyError::Cidr(c.into()))
        })
        .collect()
}

impl NetworkPolicy {
    /// Builds a policy from the comma-separated forms used in env and config.
    pub fn from_lists(allow_private: &str, insecure: &str) -> Result<Self, PolicyError> {
        let allow_private = parse_cidrs(allow_private)?;
        let insecure = split_list(insecure)
            .map(|h| {
                if h.contains("://") || h.contains('/') {
                    Err(PolicyError::Insecure(h.into()))
                } else {
                    Ok(h.to_ascii_lowercase())
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(NetworkPolicy {
            allow_private,
            insecure,
            extra_roots_pem: None,
        })
    }

    /// May berth connect to `ip`?
    pub fn check(&self, ip: IpAddr) -> Result<(), IpAddr> {
        let canonical = canonical(ip);
        let allowed = self
            .allow_private
            .iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical));
        if allowed || !is_blocked(ip) {
            Ok(())
        } else {
            Err(ip)
        }
    }

    /// May `authority` (`host[:port]`, as in a URL) be reached over plain HTTP?
    pub fn is_insecure(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.to_ascii_lowercase();
        let with_port = port.map(|p| format!("{host}:{p}"));
        self.insecure
            .iter()
            .any(|h| *h == host || Some(h) == with_port.as_ref())
    }
}

fn split_list(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty())
}

/// An IPv4 address hidden in an IPv6 one (mapped, compatible, NAT64, 6to4) is
/// judged as that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped), ::a.b.c.d (compatible, deprecated) and
        // ::ffff:0:a.b.c.d (IPv4-translated, RFC 2765)
        [0, 0, 0, 0, 0, 0xffff, _, _]
        | [0, 0, 0, 0, 0, 0, _, _]
        | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

/// The blocklist of CONTRACT.md: loopback, RFC 1918, link-local, CGNAT, unique-local,
/// unspecified, broadcast, multicast, reserved and documentation ranges, and every
/// IPv6 form that embeds one of them.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                // `::` and `::1` are in the compatible range too; they are blocked as v4
                // 0.0.0.0 and 0.0.0.1 are.
                return is_blocked_v4(v4) || v6.is_loopback() || v6.is_unspecified();
            }
            let s = v6.segments();
            v6.is_unspecified()
                || v6.is_loopback()
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] & 0xfe00) == 0xfc00 // unique-local fc00::/7
                || (s[0] & 0xff00) == 0xff00 // multicast
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x2001 && s[1] == 0) // Teredo: hides an IPv4 address
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
                || (s[0] == 0x100 && s[1] == 0 && s[2] == 0 && s[3] == 0) // discard 100::/64
        }
    }
}

/// Which kind of range a blocked address is in, for messages: a user learns why a
/// host was refused, never the address it resolved to (which would let Test
/// Connection read internal DNS).
pub fn range_class(ip: IpAddr) -> &'static str {
    if ip.is_loopback() {
        return "loopback";
    }
    let v4 = match canonical(ip) {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            return if v6.is_loopback() {
                "loopback"
            } else if v6.is_unspecified() {
                "unspecified"
            } else if (s[0] & 0xffc0) == 0xfe80 {
                "link-local"
            } else if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
                "private (unique-local)"
            } else if (s[0] & 0xff00) == 0xff00 {
                "multicast"
            } else {
                "reserved"
            };
        }
    };
    let o = v4.octets();
    if o[0] == 127 {
        "loopback"
    } else if o[0] == 10 || (o[0] == 172 && (o[1] & 0xf0) == 16) || (o[0] == 192 && o[1] == 168) {
        "private (RFC 1918)"
    } else if o[0] == 169 && o[1] == 254 {
        "link-local"
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        "shared (carrier-grade NAT)"
    } else if o[0] == 0 {
        "unspecified"
    } else if (224..240).contains(&o[0]) {
        "multicast"
    } else {
        "reserved"
    }
}

fn is_blocked_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    o[0] == 0 // "this network", includes 0.0.0.0
        || o[0] == 10
        || o[0] == 127
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 169 && o[1] == 254)
        || (o[0] == 172 && (o[1] & 0xf0) == 16)
        || (o[0] == 192 && o[1] == 168)
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 192 && o[1] == 0 && o[2] == 2) // TEST-NET-1
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || (o[0] == 198 && o[1] == 51 && o[2] == 100) // TEST-NET-2
        || (o[0] == 203 && o[1] == 0 && o[2] == 113) // TEST-NET-3
        || (o[0] == 192 && o[1] == 88 && o[2] == 99) // 6to4 relay anycast
        || o[0] >= 224 // multicast 224/4, reserved 240/4, broadcast
}

impl PartialEq for NetworkPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.allow_private == other.allow_private && self.insecure == other.insecure
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cidr_blocklist_is_the_predicate() {
        for range in super::BLOCKED_RANGES {
            let net: IpNet = range.parse().unwrap();
            for ip in [net.network(), net.broadcast()] {
                assert!(is_blocked(ip), "{range}: {ip} is not blocked by is_blocked");
            }
        }
        // Every blocked IPv4 sample is inside a listed range.
        let nets: Vec<IpNet> = super::BLOCKED_RANGES
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        for a in (0..=255u8).step_by(1) {
            for b in [0u8, 2, 16, 31, 64, 88, 100, 127, 168, 254, 255] {
                for c in [0u8, 2, 99, 100, 113] {
                    let ip = IpAddr::V4(Ipv4Addr::new(a, b, c, 1));
                    if is_blocked(ip) {
                        assert!(
                            nets.iter().any(|n| n.contains(&ip)),
                            "{ip} is blocked but in no range"
                        );
                    }
                }
            }
        }
    }

    use super::*;

    fn check(policy: &NetworkPolicy, ip: &str, blocked: bool) {
        let addr: IpAddr = ip.parse().unwrap();
        assert_eq!(policy.check(addr).is_err(), blocked, "{ip}");
    }

    #[test]
    fn blocklist() {
        let p = NetworkPolicy::default();
        for ip in [
            "127.0.0.1",
            "127.0.0.2",
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "::",
            "::1",
            "fe80::1",
            "febf::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:0:127.0.0.1",
            "::ffff:0:10.1.2.3",
            "::ffff:0:a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
        ] {
            check(&p, ip, true);
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "140.82.112.33",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            check(&p, ip, false);
        }
    }

    #[test]
    fn range_classes_name_no_address() {
        for (ip, class) in [
            ("127.0.0.2", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private (RFC 1918)"),
            ("::ffff:0:192.168.1.1", "private (RFC 1918)"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("fd00::1", "private (unique-local)"),
            ("224.0.0.1", "multicast"),
            ("192.0.2.1", "reserved"),
        ] {
            assert_eq!(range_class(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn allowlist_exempts_exactly_its_cidrs() {
        let p = NetworkPolicy::from_lists("127.0.0.1/32, 10.20.0.0/16, fd00::5", "").unwrap();
        check(&p, "127.0.0.1", false);
        check(&p, "::ffff:127.0.0.1", false);
        check(&p, "127.0.0.2", true);
        check(&p, "10.20.3.4", false);
        check(&p, "10.21.0.1", true);
        check(&p, "fd00::5", false);
        check(&p, "fd00::6", true);
        assert_eq!(
            NetworkPolicy::from_lists("nope", ""),
            Err(PolicyError::Cidr("nope".into()))
        );
    }

    #[test]
    fn insecure_hosts() {
        let p = NetworkPolicy::from_lists("", "127.0.0.1:5000, Registry.Local").unwrap();
        assert!(p.is_insecure("127.0.0.1", Some(5000)));
        assert!(!p.is_insecure("127.0.0.1", Some(5001)));
        assert!(!p.is_insecure("127.0.0.1", None));
        assert!(p.is_insecure("registry.local", Some(80)));
        assert!(p.is_insecure("registry.local", None));
        assert_eq!(
            NetworkPolicy::from_lists("", "http://x:1"),
            Err(PolicyError::Insecure("http://x:1".into()))
        );
    }
}
