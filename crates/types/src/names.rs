use std::fmt;
use std::str::FromStr;

/// A project or service name: `[a-z0-9][a-z0-9-]{0,62}`, used in URL paths.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slug(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("names are 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
pub struct NameError;

impl Slug {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A registry username as berth shows it (`al***`): enough to recognise, not
/// enough to reuse. The API, the CLI and the deploy log all show it this way.
pub fn mask_username(u: &str) -> String {
    let keep = if u.chars().count() > 4 { 2 } else { 1 };
    let head: String = u.chars().take(keep).collect();
    format!("{head}***")
}

impl FromStr for Slug {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = (1..=63).contains(&b.len())
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(Slug(s.to_owned()))
        } else {
            Err(NameError)
        }
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn masks() {
        assert_eq!(super::mask_username("alice"), "al***");
        assert_eq!(super::mask_username("bob"), "b***");
        assert_eq!(super::mask_username(""), "***");
        assert_eq!(super::mask_username("ñandú-user"), "ña***");
    }

    use super::*;

    #[test]
    fn slugs() {
        for ok in ["a", "web", "my-app-2", "0abc", &"a".repeat(63)] {
            assert!(ok.parse::<Slug>().is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a/b", &"a".repeat(64), "é"] {
            assert!(bad.parse::<Slug>().is_err(), "{bad}");
        }
    }
}
