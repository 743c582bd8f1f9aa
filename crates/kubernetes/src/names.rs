//! Names and label values berth makes from people's names. A namespace name is
//! a DNS-1123 label (at most 63 characters of `a-z`, `0-9` and `-`, starting
//! and ending with a letter or digit), and a label value must end with one too;
//! `berth-<project>` for a 63-character project, or a project named `web-`, is
//! neither. Such a name keeps what fits of itself and ends in a hash of the
//! whole, so it stays readable, deterministic and distinct.

use sha2::{Digest, Sha256};

/// The longest DNS-1123 label, and label value.
const MAX: usize = 63;
/// Hex digits of the hash a name that does not fit ends with (40 bits: two
/// projects sharing a namespace by chance is also refused by the label check).
const HASH: usize = 10;

/// `name` itself when it is a DNS-1123 label, else what fits of it (its
/// characters outside `a-z0-9-` dropped), `-`, and the first hex digits of
/// its SHA-256.
pub fn dns_label(name: &str) -> String {
    if is_dns_label(name) {
        return name.to_owned();
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    let kept: String = name
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(MAX - HASH - 1)
        .collect();
    let kept = kept.trim_matches('-');
    if kept.is_empty() {
        hash[..HASH].to_owned()
    } else {
        format!("{kept}-{}", &hash[..HASH])
    }
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=MAX).contains(&b.len())
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// `berth-<project>`, fitted: the namespace of the project's workloads (when
/// berth makes one per project) and the name of its NetworkPolicy.
pub fn berth_project(project: &str) -> String {
    dns_label(&format!("berth-{project}"))
}

/// `berth-<service>-<hash of project and service>`: the name of a service's
/// Service and Ingress, the same from one deploy to the next. The hash makes
/// it one project's in a namespace every project shares (`web-a`'s `b` and
/// `web`'s `a-b` would both be `berth-web-a-b`); the service's name, cut to fit
/// and never ending in `-`, keeps it readable. Starting with a letter, it is
/// also the RFC 1035 label a Service's name must be.
pub fn traffic_name(project: &str, service: &str) -> String {
    let hash = hex::encode(Sha256::digest(format!("{project}/{service}").as_bytes()));
    let kept: String = service
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .take(MAX - "berth-".len() - HASH - 1)
        .collect();
    let kept = kept.trim_matches('-');
    if kept.is_empty() {
        format!("berth-{}", &hash[..HASH])
    } else {
        format!("berth-{kept}-{}", &hash[..HASH])
    }
}

/// A name the API server takes as a host of an Ingress rule: a DNS-1123
/// subdomain (lowercase labels of at most 63 characters, starting and ending
/// with a letter or digit, 253 in all) that is not an IP address.
pub fn is_ingress_host(host: &str) -> bool {
    host.len() <= 253
        && host.parse::<std::net::IpAddr>().is_err()
        && host.split('.').all(is_dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(project: &str, want: &str) {
        let got = berth_project(project);
        assert_eq!(got, want, "{project:?}");
        assert!(is_dns_label(&got), "{got:?} is not a DNS-1123 label");
    }

    #[test]
    fn namespaces_of_projects() {
        let p57 = "a".repeat(57);
        let p58 = "a".repeat(58);
        let p63 = "b".repeat(63);
        for (project, want) in [
            ("web", "berth-web".to_owned()),
            ("0day", "berth-0day".to_owned()),
            // 6 + 57 = 63: fits as it is.
            (p57.as_str(), format!("berth-{p57}")),
            // 64: what fits, then the hash.
            (p58.as_str(), format!("berth-{}-3cc72d2a80", "a".repeat(46))),
            (p63.as_str(), format!("berth-{}-ae674ba0ea", "b".repeat(46))),
            // A label cannot end with '-'.
            ("web-", "berth-web-78ef21a437".to_owned()),
        ] {
            check(project, &want);
        }
    }

    #[test]
    fn long_names_that_share_what_fits_stay_apart() {
        let a = berth_project(&format!("{}x", "a".repeat(60)));
        let b = berth_project(&format!("{}y", "a".repeat(60)));
        assert_ne!(a, b);
        assert_eq!(a.len(), 63);
        assert_eq!(a, berth_project(&format!("{}x", "a".repeat(60))));
    }

    #[test]
    fn traffic_names_fit_and_keep_projects_apart() {
        let s63 = "s".repeat(63);
        for (project, service, want) in [
            ("web", "api", "berth-api-"),
            ("web", "api-", "berth-api-"),
            ("web", s63.as_str(), "berth-sssss"),
        ] {
            let got = traffic_name(project, service);
            assert!(got.starts_with(want), "{got}");
            assert!(is_dns_label(&got) && got.len() <= 63, "{got}");
        }
        assert_eq!(traffic_name("web", &s63).len(), 63);
        // The same string before the hash, two projects' services apart.
        assert_ne!(traffic_name("web-a", "b"), traffic_name("web", "a-b"));
        assert_eq!(traffic_name("web", "api"), traffic_name("web", "api"));
    }

    #[test]
    fn ingress_hosts() {
        let long = format!("{}.example.com", "a".repeat(64));
        for (host, ok) in [
            ("api.web.localhost", true),
            ("shop.example.com", true),
            ("localhost", true),
            ("web-.proj.localhost", false),
            ("1.2.3.4", false),
            (long.as_str(), false),
            ("a..b", false),
        ] {
            assert_eq!(is_ingress_host(host), ok, "{host}");
        }
    }

    #[test]
    fn label_values() {
        for (value, want) in [
            ("web", "web"),
            ("web-", "web-9161755adc"),
            ("--", "d8156bae0c"),
        ] {
            assert_eq!(dns_label(value), want, "{value:?}");
        }
    }
}
