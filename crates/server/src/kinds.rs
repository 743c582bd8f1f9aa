//! A registry credential of each kind turned into what the registry is sent (a
//! user name and a password or token), checked locally first where the kind
//! allows: a Google service account key is read before any request is made.

use base64::Engine;
use berth_types::{CredentialKind, RegistryUrl};
use secrecy::{ExposeSecret, SecretString};

use crate::api::ApiError;

/// What a save gives, whatever the kind.
#[derive(Default)]
pub struct Given {
    pub kind: Option<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// `gcp`: the service account key file's text.
    pub json_key: Option<SecretString>,
    /// `ecr`: AWS keys or a role were given.
    pub aws: bool,
}

/// A credential as the registry takes it.
pub struct Resolved {
    pub kind: CredentialKind,
    pub username: String,
    pub password: SecretString,
}

/// The kind (given, else the one the fields or the host say) and the user name
/// and password to send. `stored` is the kind saved before (an update keeps it).
pub fn resolve(
    url: &RegistryUrl,
    given: Given,
    stored: Option<CredentialKind>,
) -> Result<Resolved, ApiError> {
    let kind = match &given.kind {
        Some(k) => k
            .parse::<CredentialKind>()
            .map_err(|e| ApiError::bad_request("invalid_kind", e.to_string()))?,
        None if given.json_key.is_some() => CredentialKind::Gcp,
        None if given.aws => CredentialKind::Ecr,
        None => stored.unwrap_or_else(|| match CredentialKind::for_host(&url.authority()) {
            // A pasted `aws ecr get-login-password` token (user AWS) stays what it
            // is: a user name and a password.
            CredentialKind::Ecr => CredentialKind::Basic,
            k => k,
        }),
    };
    let missing = |what: &str| {
        ApiError::bad_request(
            "missing_field",
            format!("{what} is required for {} credentials", kind.as_str()),
        )
    };
    match kind {
        CredentialKind::Ecr => Err(ApiError::bad_request(
            "unsupported_kind",
            "ECR credentials from AWS keys or a role are not supported by this version of berth yet: save the registry's token as kind basic, username AWS, password from `aws ecr get-login-password` (it lasts 12 hours)",
        )),
        CredentialKind::Gcp if given.json_key.is_some() => {
            let key = given.json_key.unwrap_or_else(|| SecretString::from(String::new()));
            check_gcp_key(key.expose_secret())
                .map_err(|m| ApiError::bad_request("invalid_credentials", m))?;
            // `_json_key_base64` when the user asks for it, as Google documents.
            match given.username.as_deref() {
                Some("_json_key_base64") => Ok(Resolved {
                    kind,
                    username: "_json_key_base64".into(),
                    password: SecretString::from(
                        base64::engine::general_purpose::STANDARD
                            .encode(key.expose_secret().as_bytes()),
                    ),
                }),
                None | Some("_json_key") => Ok(Resolved {
                    kind,
                    username: "_json_key".into(),
                    password: key,
                }),
                Some(other) => Err(ApiError::bad_request(
                    "invalid_credentials",
                    format!("with a json_key the username is _json_key or _json_key_base64, not {other:?}"),
                )),
            }
        }
        _ => Ok(Resolved {
            kind,
            username: given.username.ok_or_else(|| missing("username"))?,
            password: given.password.ok_or_else(|| missing("password"))?,
        }),
    }
}

/// A Google service account key: JSON with `type` `service_account`, a
/// `client_email` and a `private_key`; the error names what is missing and never
/// quotes the key.
pub fn check_gcp_key(text: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "the json_key is not JSON (line {}, column {}): give the service account key file's whole text",
            e.line(),
            e.column()
        )
    })?;
    let field = |name: &str| {
        v.get(name)
            .and_then(|f| f.as_str())
            .filter(|s| !s.is_empty())
    };
    if field("type") != Some("service_account") {
        return Err(
            "the json_key is not a service account key: its \"type\" is not \"service_account\""
                .into(),
        );
    }
    if field("client_email").is_none() {
        return Err("the json_key has no \"client_email\"".into());
    }
    match field("private_key") {
        Some(k) if k.contains("PRIVATE KEY") => Ok(()),
        Some(_) => Err("the json_key's \"private_key\" is not a PEM private key".into()),
        None => Err("the json_key has no \"private_key\"".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_key_is_checked_before_any_request() {
        let good = r#"{"type":"service_account","client_email":"ci@p.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----\n"}"#;
        assert_eq!(check_gcp_key(good), Ok(()));
        for (key, says) in [
            ("{", "not JSON"),
            (r#"{"type":"authorized_user"}"#, "service_account"),
            (
                r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----"}"#,
                "client_email",
            ),
            (
                r#"{"type":"service_account","client_email":"a@b"}"#,
                "no \"private_key\"",
            ),
            (
                r#"{"type":"service_account","client_email":"a@b","private_key":"hunter2"}"#,
                "not a PEM",
            ),
        ] {
            let e = check_gcp_key(key).unwrap_err();
            assert!(e.contains(says), "{key}: {e}");
            assert!(!e.contains("hunter2"), "never quotes the key: {e}");
        }
    }

    #[test]
    fn kinds_from_the_fields_then_the_host() {
        let url = |u: &str| u.parse::<RegistryUrl>().unwrap();
        let basic = || Given {
            username: Some("u".into()),
            password: Some(SecretString::from("p")),
            ..Default::default()
        };
        let kind = |u: &str, g: Given| resolve(&url(u), g, None).map(|r| r.kind.as_str());
        assert_eq!(kind("ghcr.io", basic()).ok(), Some("basic"));
        assert_eq!(kind("myacr.azurecr.io", basic()).ok(), Some("acr"));
        assert_eq!(kind("europe-docker.pkg.dev", basic()).ok(), Some("gcp"));
        assert_eq!(
            kind("1.dkr.ecr.eu-west-1.amazonaws.com", basic()).ok(),
            Some("basic"),
            "a pasted ECR token"
        );
        let aws = Given {
            aws: true,
            ..Default::default()
        };
        assert_eq!(
            kind("1.dkr.ecr.eu-west-1.amazonaws.com", aws)
                .err()
                .unwrap()
                .body
                .code,
            "unsupported_kind"
        );
        let wrong = Given {
            kind: Some("aws".into()),
            ..basic()
        };
        assert_eq!(
            kind("ghcr.io", wrong).err().unwrap().body.code,
            "invalid_kind"
        );
    }
}
