//! Image references, parsed with the distribution grammar
//! (github.com/distribution/reference, `reference.go` and `normalize.go`).
//!
//! Written by hand rather than taken from `oci-spec`'s `distribution::Reference`
//! because that type normalizes the domain away: berth must know whether the user
//! named a registry host, to refuse an image that points at a different host than
//! the credentials were given for.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// The canonical name of Docker Hub in references.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker Hub's registry API is actually served from.
pub const DOCKER_HUB_HOST: &str = "registry-1.docker.io";
/// The key Docker Hub's credentials are kept under in a Docker config file
/// (`auths`): its v1 index URL, which every container runtime looks up.
pub const DOCKER_HUB_CONFIG_KEY: &str = "https://index.docker.io/v1/";
/// Every name Docker Hub goes by in registry URLs (the dashboard receives this
/// list from the server: one rule, here).
pub const DOCKER_HUB_NAMES: &[&str] = &[
    DOCKER_HUB,
    "index.docker.io",
    DOCKER_HUB_HOST,
    "registry.hub.docker.com",
];
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Tag or digest (or both; then the digest wins when pulling).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
    TagAndDigest(String, Digest),
}

/// A parsed image reference such as `ghcr.io/acme/api:v2` or `nginx`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The domain as written (`host[:port]`), or `None` when the reference names none.
    domain: Option<String>,
    /// The repository path as written, e.g. `acme/api` or `nginx`.
    path: String,
    reference: Reference,
    /// No tag or digest was written (`nginx`): the reference is `latest`, and the
    /// image is shown as written.
    implicit_latest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the image reference is empty")]
    Empty,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error("the repository name {0:?} is not valid: path components are lowercase letters and digits, separated by '.', '_', '__' or '-'")]
    Path(String),
    #[error("the registry host {0:?} is not valid")]
    Domain(String),
    #[error("the tag {0:?} is not valid: up to 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'")]
    Tag(String),
    #[error("the digest is not valid: {0}")]
    Digest(String),
    #[error("the repository name is longer than 255 characters")]
    TooLong,
}

impl ImageRef {
    /// The domain as written, if any.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The repository path as written (no `library/` added).
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    /// The registry this reference names on its own: its domain, or Docker Hub.
    /// `index.docker.io` is normalized to `docker.io`.
    pub fn registry(&self) -> &str {
        match self.domain.as_deref() {
            None | Some("index.docker.io") => DOCKER_HUB,
            Some(d) => d,
        }
    }

    /// The repository to ask `registry` for: Docker Hub's official images live under
    /// `library/`, so a one-component name there gets it added.
    pub fn repository_on(&self, registry_is_docker_hub: bool) -> String {
        if registry_is_docker_hub && !self.path.contains('/') {
            format!("library/{}", self.path)
        } else {
            self.path.clone()
        }
    }

    /// What to put after `/manifests/`: the digest when there is one, else the tag.
    pub fn manifest_reference(&self) -> String {
        match &self.reference {
            Reference::Tag(t) => t.clone(),
            Reference::Digest(d) | Reference::TagAndDigest(_, d) => d.to_string(),
        }
    }

    pub fn tag(&self) -> Option<&str> {
        match &self.reference {
            Reference::Tag(t) | Reference::TagAndDigest(t, _) => Some(t),
            Reference::Digest(_) => None,
        }
    }

    pub fn digest(&self) -> Option<&Digest> {
        match &self.reference {
            Reference::Digest(d) | Reference::TagAndDigest(_, d) => Some(d),
            Reference::Tag(_) => None,
        }
    }

    /// `true` for the classic `host:5000`-without-a-path mistake: no domain, a path
    /// that looks like a host name, and a tag made only of digits. The grammar reads
    /// it as repository `host` with tag `5000`; callers use this to add a hint.
    pub fn looks_like_host_and_port(&self) -> bool {
        self.domain.is_none()
            && self.path.contains('.')
            && !self.path.contains('/')
            && matches!(&self.reference, Reference::Tag(t) if t.bytes().all(|b| b.is_ascii_digit()))
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // Split off the digest first: `@` cannot appear anywhere else.
        let (rest, digest) = match s.split_once('@') {
            Some((rest, d)) => (
                rest,
                Some(
                    d.parse::<Digest>()
                        .map_err(|e| ReferenceError::Digest(e.to_string()))?,
                ),
            ),
            None => (s, None),
        };
        // A tag is what follows the last ':' if no '/' comes after it (a ':' before a
        // '/' is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(ReferenceError::Tag(t.into()));
            }
        }
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::TooLong);
        }
        let (domain, path) = split_domain(name);
        if let Some(d) = domain {
            if !valid_domain(d) {
                return Err(ReferenceError::Domain(d.into()));
            }
        }
        if path.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase);
        }
        if !valid_path(path) {
            return Err(ReferenceError::Path(path.into()));
        }
        let implicit_latest = tag.is_none() && digest.is_none();
        let reference = match (tag, digest) {
            (Some(t), Some(d)) => Reference::TagAndDigest(t.into(), d),
            (Some(t), None) => Reference::Tag(t.into()),
            (None, Some(d)) => Reference::Digest(d),
            (None, None) => Reference::Tag("latest".into()),
        };
        Ok(ImageRef {
            domain: domain.map(str::to_owned),
            path: path.into(),
            reference,
            implicit_latest,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = &self.domain {
            write!(f, "{d}/")?;
        }
        f.write_str(&self.path)?;
        if self.implicit_latest {
            return Ok(());
        }
        match &self.reference {
            Reference::Tag(t) => write!(f, ":{t}"),
            Reference::Digest(d) => write!(f, "@{d}"),
            Reference::TagAndDigest(t, d) => write!(f, ":{t}@{d}"),
        }
    }
}

/// `splitDockerDomain`: the first component is a domain when it has a '.' or ':',
/// is `localhost`, or has an uppercase letter (repositories cannot).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    (1..=128).contains(&b.len())
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// host [':' port], host being domain components, an IPv4 address or `[IPv6]`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if host.is_empty() {
        return d.starts_with('[');
    }
    host.split('.').all(|c| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
    })
}

/// path-component ['/' path-component]*, component := alnum [separator alnum]*,
/// separator := [_.] | __ | [-]+
fn valid_path(p: &str) -> bool {
    p.split('/').all(valid_component)
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A run of separators between two alphanumerics.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (input, Ok((registry, repository on that registry, manifest reference)) | Err)
    fn check(input: &str, expect: Result<(&str, &str, &str), ReferenceError>) {
        let got = input.parse::<ImageRef>().map(|r| {
            let hub = r.registry() == DOCKER_HUB;
            (
                r.registry().to_owned(),
                r.repository_on(hub),
                r.manifest_reference(),
            )
        });
        let expect = expect.map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
        assert_eq!(got, expect, "{input}");
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn grammar() {
        check("nginx", Ok(("docker.io", "library/nginx", "latest")));
        check("nginx:1.25", Ok(("docker.io", "library/nginx", "1.25")));
        check(
            "docker.io/nginx",
            Ok(("docker.io", "library/nginx", "latest")),
        );
        check(
            "index.docker.io/acme/app:v1",
            Ok(("docker.io", "acme/app", "v1")),
        );
        check("acme/app", Ok(("docker.io", "acme/app", "latest")));
        check("ghcr.io/acme/api:main", Ok(("ghcr.io", "acme/api", "main")));
        check("localhost/app", Ok(("localhost", "app", "latest")));
        check(
            "localhost:5000/a/b/c:t",
            Ok(("localhost:5000", "a/b/c", "t")),
        );
        check(
            "127.0.0.1:5000/app",
            Ok(("127.0.0.1:5000", "app", "latest")),
        );
        check("[::1]:5000/app:v", Ok(("[::1]:5000", "app", "v")));
        check(&format!("app@{D}"), Ok(("docker.io", "library/app", D)));
        check(&format!("r.io/app:v1@{D}"), Ok(("r.io", "app", D)));
        check(
            "a__b/c-d--e/f.g_h",
            Ok(("docker.io", "a__b/c-d--e/f.g_h", "latest")),
        );
        // The classic trap: no '/', so this is repository `test.com`, tag `5000`.
        check(
            "test.com:5000",
            Ok(("docker.io", "library/test.com", "5000")),
        );
        check("test.com:5000/app", Ok(("test.com:5000", "app", "latest")));
        // Uppercase first component is a domain; uppercase in the path is refused.
        check("Example.com/app", Ok(("Example.com", "app", "latest")));
        check("acme/App", Err(ReferenceError::Uppercase));
        check("App", Err(ReferenceError::Uppercase));
        check("", Err(ReferenceError::Empty));
        check(":tag", Err(ReferenceError::Empty));
        check("app:", Err(ReferenceError::Tag("".into())));
        check("app:-x", Err(ReferenceError::Tag("-x".into())));
        check(
            &format!("app:{}", "t".repeat(129)),
            Err(ReferenceError::Tag("t".repeat(129))),
        );
        check("a..b", Err(ReferenceError::Path("a..b".into())));
        check("a___b", Err(ReferenceError::Path("a___b".into())));
        check("-a", Err(ReferenceError::Path("-a".into())));
        check("a//b", Err(ReferenceError::Path("a//b".into())));
        check("r.io/", Err(ReferenceError::Path("".into())));
        check(
            "r.io:port/app",
            Err(ReferenceError::Domain("r.io:port".into())),
        );
        check("-r.io/app", Err(ReferenceError::Domain("-r.io".into())));
        check(
            "app@sha256:abc",
            Err(ReferenceError::Digest(
                "digest hex has the wrong length or characters for sha256".into(),
            )),
        );
        check(
            &format!("r.io/{}", "a".repeat(251)),
            Err(ReferenceError::TooLong),
        );
    }

    #[test]
    fn host_port_hint() {
        assert!("test.com:5000"
            .parse::<ImageRef>()
            .unwrap()
            .looks_like_host_and_port());
        assert!(!"test.com:5000/app"
            .parse::<ImageRef>()
            .unwrap()
            .looks_like_host_and_port());
        assert!(!"app:5000"
            .parse::<ImageRef>()
            .unwrap()
            .looks_like_host_and_port());
    }

    proptest! {
        /// Whatever the input, the parser never panics, and what it accepts it prints
        /// back in a form that parses to the same value.
        #[test]
        fn display_round_trips(s in "[a-zA-Z0-9./:@_\\-\\[\\]]{0,80}") {
            if let Ok(r) = s.parse::<ImageRef>() {
                let again: ImageRef = r.to_string().parse().unwrap();
                prop_assert_eq!(again, r);
            }
        }

        /// Every name built from the grammar parses, with its parts intact.
        #[test]
        fn grammar_names_parse(
            domain in proptest::option::of("[a-z][a-z0-9]{0,8}\\.[a-z]{2,5}(:[0-9]{1,5})?"),
            // No '.' in components: a first component with one would be a domain.
            comps in proptest::collection::vec("[a-z0-9]{1,6}([_-][a-z0-9]{1,6})?", 1..4),
            tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}",
        ) {
            let path = comps.join("/");
            let s = match &domain { Some(d) => format!("{d}/{path}:{tag}"), None => format!("{path}:{tag}") };
            let r: ImageRef = s.parse().unwrap();
            prop_assert_eq!(r.domain(), domain.as_deref());
            prop_assert_eq!(r.path(), path.as_str());
            prop_assert_eq!(r.tag(), Some(tag.as_str()));
        }

        #[test]
        fn uppercase_paths_refused(path in "[a-z]{1,5}[A-Z][a-z]{0,5}") {
            prop_assert_eq!(format!("acme/{path}").parse::<ImageRef>(), Err(ReferenceError::Uppercase));
        }
    }
}
