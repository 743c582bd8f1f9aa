//! Registry URLs as users type them: `ghcr.io`, `https://quay.io`, `localhost:5000`,
//! `http://10.0.0.5:5000`. Only scheme, host and port; anything else is refused.

use std::fmt;
use std::str::FromStr;

use crate::reference::{DOCKER_HUB, DOCKER_HUB_CONFIG_KEY, DOCKER_HUB_HOST, DOCKER_HUB_NAMES};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    Https,
    Http,
}

/// A registry endpoint as given by the user. The host is normalized the WHATWG way
/// (lowercase, IPv4 in any numeric form turned into dotted quads), so `0x7f000001`
/// and `2130706434` are seen for what they are.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryUrl {
    /// The scheme the user wrote, if any; the network policy decides the default.
    scheme: Option<Scheme>,
    host: url::Host<String>,
    port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryUrlError {
    #[error("the registry URL is empty")]
    Empty,
    #[error("the registry URL is not a valid URL: {0}")]
    Syntax(String),
    #[error("the registry URL scheme must be https:// or http://")]
    Scheme,
    #[error("the registry URL must not contain a user name or password; give them as username and password")]
    Userinfo,
    #[error("the registry URL must be just a host (and port), without a path such as {0:?}")]
    Path(String),
    #[error("the registry URL must not contain a query or fragment")]
    Query,
}

impl RegistryUrl {
    pub fn scheme(&self) -> Option<Scheme> {
        self.scheme
    }

    pub fn host(&self) -> &url::Host<String> {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `host[:port]` as written in image references (IPv6 in brackets).
    pub fn authority(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.host),
            None => self.host.to_string(),
        }
    }

    /// Docker Hub under any of its names.
    pub fn is_docker_hub(&self) -> bool {
        self.port.is_none()
            && matches!(&self.host, url::Host::Domain(d) if DOCKER_HUB_NAMES.contains(&d.as_str()))
    }

    /// The host to connect to: Docker Hub's API lives on `registry-1.docker.io`.
    pub fn api_authority(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_HOST.to_owned()
        } else {
            self.authority()
        }
    }

    /// The domain an image reference names this registry by (`docker.io` for
    /// Docker Hub, whatever name it was given as).
    pub fn image_domain(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB.to_owned()
        } else {
            self.authority()
        }
    }

    /// The key a Docker config file (`auths`) keeps this registry's credentials
    /// under: Docker Hub's is its v1 index URL, which every container runtime
    /// looks up; any other registry's is its host.
    pub fn docker_config_key(&self) -> String {
        if self.is_docker_hub() {
            DOCKER_HUB_CONFIG_KEY.to_owned()
        } else {
            self.authority()
        }
    }

    /// Does an image reference's domain (`host[:port]` as written) name this registry?
    pub fn matches_domain(&self, domain: &str) -> bool {
        match domain.parse::<RegistryUrl>() {
            Ok(other) => {
                (self.is_docker_hub() && other.is_docker_hub())
                    || (self.host == other.host && self.port == other.port)
            }
            Err(_) => false,
        }
    }
}

impl FromStr for RegistryUrl {
    type Err = RegistryUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RegistryUrlError::Empty);
        }
        let (scheme, with_scheme) = if let Some((sch, _)) = s.split_once("://") {
            match sch.to_ascii_lowercase().as_str() {
                "https" => (Some(Scheme::Https), s.to_owned()),
                "http" => (Some(Scheme::Http), s.to_owned()),
                _ => return Err(RegistryUrlError::Scheme),
            }
        } else {
            (None, format!("https://{s}"))
        };
        let u =
            url::Url::parse(&with_scheme).map_err(|e| RegistryUrlError::Syntax(e.to_string()))?;
        if !u.username().is_empty() || u.password().is_some() {
            return Err(RegistryUrlError::Userinfo);
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(RegistryUrlError::Query);
        }
        if u.path() != "/" {
            return Err(RegistryUrlError::Path(u.path().into()));
        }
        let host = u
            .host()
            .ok_or_else(|| RegistryUrlError::Syntax("no host".into()))?
            .to_owned();
        // `url` drops a port equal to the scheme's default; keep what the user meant.
        let port = u.port();
        Ok(RegistryUrl { scheme, host, port })
    }
}

impl fmt::Display for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Some(Scheme::Http) => write!(f, "http://{}", self.authority()),
            Some(Scheme::Https) => write!(f, "https://{}", self.authority()),
            None => f.write_str(&self.authority()),
        }
    }
}

impl fmt::Debug for RegistryUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegistryUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expect: Result<&str, RegistryUrlError>) {
        let got = input.parse::<RegistryUrl>().map(|u| u.to_string());
        assert_eq!(got, expect.map(str::to_owned), "{input}");
    }

    #[test]
    fn parses() {
        check("ghcr.io", Ok("ghcr.io"));
        check("GHCR.IO/", Ok("ghcr.io"));
        check("https://quay.io", Ok("https://quay.io"));
        check("HTTP://localhost:5000", Ok("http://localhost:5000"));
        check("127.0.0.1:5000", Ok("127.0.0.1:5000"));
        check("[::1]:5000", Ok("[::1]:5000"));
        check("2130706434", Ok("127.0.0.2"));
        check("0x7f000001:80", Ok("127.0.0.1:80"));
        check("[::ffff:127.0.0.1]", Ok("[::ffff:7f00:1]"));
        check("", Err(RegistryUrlError::Empty));
        check("ftp://x.io", Err(RegistryUrlError::Scheme));
        check("https://u:p@x.io", Err(RegistryUrlError::Userinfo));
        check("x.io/v2/", Err(RegistryUrlError::Path("/v2/".into())));
        check(
            "https://index.docker.io/v1/",
            Err(RegistryUrlError::Path("/v1/".into())),
        );
        check("x.io?a=b", Err(RegistryUrlError::Query));
        check("x.io#f", Err(RegistryUrlError::Query));
        assert!(matches!(
            "x .io".parse::<RegistryUrl>(),
            Err(RegistryUrlError::Syntax(_))
        ));
    }

    #[test]
    fn docker_hub_names() {
        for hub in [
            "docker.io",
            "index.docker.io",
            "https://registry-1.docker.io",
        ] {
            let u: RegistryUrl = hub.parse().unwrap();
            assert!(u.is_docker_hub(), "{hub}");
            assert_eq!(u.api_authority(), "registry-1.docker.io");
            assert!(u.matches_domain("docker.io"));
            assert!(u.matches_domain("index.docker.io"));
        }
        let ghcr: RegistryUrl = "ghcr.io".parse().unwrap();
        assert!(!ghcr.matches_domain("docker.io"));
        assert!(ghcr.matches_domain("GHCR.io"));
        let local: RegistryUrl = "127.0.0.1:5000".parse().unwrap();
        assert!(local.matches_domain("127.0.0.1:5000"));
        assert!(!local.matches_domain("127.0.0.1:5001"));
        assert!(!local.matches_domain("127.0.0.1"));
    }
}
