//! What kind of registry credential a user gives: the registry's own user name and
//! password or token (`basic`), or a cloud's (`gcp`, `acr`, `ecr`), each with the
//! fields that cloud's documentation names.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    /// A user name and a password or token.
    Basic,
    /// Amazon ECR: AWS keys or a role, minted into a 12-hour token.
    Ecr,
    /// Google Artifact Registry / Container Registry: a service account JSON key
    /// (`_json_key`) or an access token (`oauth2accesstoken`).
    Gcp,
    /// Azure Container Registry: an admin user or service principal, or a refresh
    /// token with the `00000000-0000-0000-0000-000000000000` user.
    Acr,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Basic => "basic",
            CredentialKind::Ecr => "ecr",
            CredentialKind::Gcp => "gcp",
            CredentialKind::Acr => "acr",
        }
    }

    /// The kind a registry host is run by: `*.dkr.ecr.REGION.amazonaws.com` is ECR,
    /// `gcr.io`, `*.gcr.io` and `*-docker.pkg.dev` are Google's, `*.azurecr.io` is
    /// Azure's; anything else is `basic`.
    pub fn for_host(host: &str) -> CredentialKind {
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        if host.ends_with(".amazonaws.com") && host.contains(".dkr.ecr.") {
            CredentialKind::Ecr
        } else if host == "gcr.io" || host.ends_with(".gcr.io") || host.ends_with("-docker.pkg.dev")
        {
            CredentialKind::Gcp
        } else if host.ends_with(".azurecr.io") {
            CredentialKind::Acr
        } else {
            CredentialKind::Basic
        }
    }
}

impl fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a credential kind (basic, ecr, gcp or acr)")]
pub struct KindError(pub String);

impl FromStr for CredentialKind {
    type Err = KindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "basic" => Ok(CredentialKind::Basic),
            "ecr" => Ok(CredentialKind::Ecr),
            "gcp" => Ok(CredentialKind::Gcp),
            "acr" => Ok(CredentialKind::Acr),
            other => Err(KindError(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_host() {
        for (host, kind) in [
            (
                "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
                CredentialKind::Ecr,
            ),
            ("gcr.io", CredentialKind::Gcp),
            ("eu.gcr.io", CredentialKind::Gcp),
            ("europe-west1-docker.pkg.dev", CredentialKind::Gcp),
            ("myregistry.azurecr.io", CredentialKind::Acr),
            ("ghcr.io", CredentialKind::Basic),
            ("registry.local:5000", CredentialKind::Basic),
            ("s3.amazonaws.com", CredentialKind::Basic),
        ] {
            assert_eq!(CredentialKind::for_host(host), kind, "{host}");
            assert_eq!(kind.as_str().parse::<CredentialKind>().unwrap(), kind);
        }
        assert!("aws".parse::<CredentialKind>().is_err());
    }
}
