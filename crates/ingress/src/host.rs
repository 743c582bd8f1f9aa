//! Host names as the route table keys them: lowercase, no port, no trailing dot.

use std::fmt;

/// A host name a service answers to, normalized: ASCII lowercase, without a
/// trailing dot. Built once ([`Host::parse`]); lookups normalize what a client
/// sent the same way ([`Host::from_authority`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

/// Why a name is not a host name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a host name: {0:?}")]
pub struct HostError(pub String);

impl Host {
    /// A DNS name (letters, digits, `-`, `_` and dots; labels of 1 to 63 octets, 253
    /// in all), any case, an optional trailing dot. No port, no IP literal brackets.
    pub fn parse(name: &str) -> Result<Host, HostError> {
        let bad = || HostError(name.to_owned());
        let lower = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if lower.is_empty() || lower.len() > 253 {
            return Err(bad());
        }
        for label in lower.split('.') {
            let ok = !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad());
            }
        }
        Ok(Host(lower))
    }

    /// The host of what a client sent as `Host` or `:authority`: the port and a
    /// trailing dot stripped, lowercased. `None` for what cannot name a route (empty,
    /// userinfo, an IP literal is kept as is and simply matches nothing).
    pub fn from_authority(authority: &str) -> Option<Host> {
        if authority.contains('@') {
            return None;
        }
        let name = if let Some(rest) = authority.strip_prefix('[') {
            // An IPv6 literal: no route is keyed by one, keep it whole.
            return rest.split(']').next().map(|v6| Host(format!("[{v6}]")));
        } else {
            match authority.rsplit_once(':') {
                Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
                Some(_) => return None,
                None => authority,
            }
        };
        Host::parse(name).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether a public CA could issue a certificate for this name: not `localhost`
    /// nor under it, not a single label.
    pub fn is_public(&self) -> bool {
        self.0 != "localhost" && !self.0.ends_with(".localhost") && self.0.contains('.')
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(authority: &str, expect: Option<&str>) {
        assert_eq!(
            Host::from_authority(authority).as_ref().map(Host::as_str),
            expect,
            "{authority}"
        );
    }

    #[test]
    fn authorities_normalize() {
        check("Web.Shop.Localhost:8441", Some("web.shop.localhost"));
        check("web.shop.localhost.", Some("web.shop.localhost"));
        check("WEB.example.COM.:443", Some("web.example.com"));
        check("example.com", Some("example.com"));
        check("[::1]:8080", Some("[::1]"));
        check("", None);
        check("user@example.com", None);
        check("example.com:http", None);
        check("exa mple.com", None);
        check("-bad.example", None);
        check("a..b", None);
    }

    #[test]
    fn parse_refuses_what_is_no_name() {
        assert!(Host::parse("example.com:80").is_err());
        assert!(Host::parse(".").is_err());
        assert!(Host::parse(&"a".repeat(64)).is_err());
        assert_eq!(Host::parse("A.B.").unwrap().as_str(), "a.b");
    }

    #[test]
    fn public_names() {
        assert!(Host::parse("web.example.com").unwrap().is_public());
        assert!(!Host::parse("web.shop.localhost").unwrap().is_public());
        assert!(!Host::parse("intranet").unwrap().is_public());
    }
}
