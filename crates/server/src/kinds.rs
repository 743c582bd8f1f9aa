//! A registry credential of each kind turned into what the registry is sent (a
//! user name and a password or token), checked locally first where the kind
//! allows: a Google service account key is read before any request is made.

use base64::Engine;
use berth_types::{CredentialKind, RegistryUrl};
use secrecy::{ExposeSecret, SecretString};

/// A credential that cannot be what its kind needs: a stable code (`invalid_kind`,
/// `invalid_credentials`, `missing_field`, `password_required`) and a message that
/// never quotes a secret. The HTTP edge answers it as a 400.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct KindError {
    pub code: &'static str,
    pub message: String,
}

impl KindError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        KindError {
            code,
            message: message.into(),
        }
    }
}

/// What a save gives, whatever the kind. Everything here came from the client:
/// a stored secret is never passed in as `password` (see [`Kept`]).
#[derive(Default)]
pub struct Given {
    pub kind: Option<String>,
    pub username: Option<String>,
    /// A password or token the client typed: for `basic`, `acr` and `gcp` (with
    /// `oauth2accesstoken`), never taken as `ecr`'s keys or role.
    pub password: Option<SecretString>,
    /// `gcp`: the service account key file's text.
    pub json_key: Option<SecretString>,
    /// `ecr`: AWS keys or a role.
    pub aws: Aws,
}

/// `ecr`'s fields as given.
#[derive(Default)]
pub struct Aws {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<SecretString>,
    pub session_token: Option<SecretString>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub region: Option<String>,
}

impl Aws {
    pub fn given(&self) -> bool {
        self.access_key_id.is_some()
            || self.secret_access_key.is_some()
            || self.session_token.is_some()
            || self.role_arn.is_some()
            || self.external_id.is_some()
            || self.region.is_some()
    }
}

/// The credential stored for the same registry, which an update without a new
/// secret keeps, only for the kind it was saved as: a kind change never turns
/// stored AWS keys (or a key file) into a password the API would hand out.
pub struct Kept {
    pub kind: CredentialKind,
    pub username: String,
    pub password: SecretString,
}

/// A credential resolved from what a save gave: its kind, user name and secret.
pub struct Resolved {
    pub kind: CredentialKind,
    pub username: String,
    pub secret: Secret,
}

/// A credential's secret, typed until the vault seals it.
pub enum Secret {
    /// A password or token, as the registry takes it.
    Password(SecretString),
    /// ECR keys or a role, minted into a registry token at each use.
    Ecr(berth_vault::ecr::EcrSource),
}

impl Secret {
    /// The secret as stored for `kind` (the vault's text), read once.
    pub fn from_stored(
        kind: CredentialKind,
        text: SecretString,
    ) -> Result<Secret, berth_vault::ecr::EcrError> {
        match kind {
            CredentialKind::Ecr => berth_vault::ecr::EcrSource::from_secret(&text)
                .map(Secret::Ecr)
                .ok_or(berth_vault::ecr::EcrError::Malformed),
            _ => Ok(Secret::Password(text)),
        }
    }

    /// The text the vault seals.
    pub fn sealed_text(&self) -> SecretString {
        match self {
            Secret::Password(p) => p.clone(),
            Secret::Ecr(source) => source.to_secret(),
        }
    }
}

/// The kind (given, else the one the fields say, else the stored one, else the
/// host's) and the user name and password to send. `kept` is the credential
/// stored for this registry (an update without a new secret keeps it);
/// `project_id` fixes the external id a role is assumed with.
pub fn resolve(
    url: &RegistryUrl,
    given: Given,
    kept: Option<Kept>,
    project_id: &str,
) -> Result<Resolved, KindError> {
    let kind = kind_of(url, &given, kept.as_ref())?;
    let kept = kept_for(kind, &given, kept)?;
    let missing = |what: &str| {
        KindError::new(
            "missing_field",
            format!("{what} is required for {} credentials", kind.as_str()),
        )
    };
    match kind {
        CredentialKind::Ecr if given.aws.role_arn.is_some() || given.aws.external_id.is_some() => {
            let region = region(url, given.aws.region.clone(), kept_region(&kept))?;
            ecr_role(given.aws, region, project_id, missing)
        }
        CredentialKind::Ecr if given.aws.given() => {
            let region = region(url, given.aws.region.clone(), kept_region(&kept))?;
            ecr_keys(given.aws, region, missing)
        }
        // A password is never taken as ECR keys or a role: the client would choose
        // what berth unseals and mints with.
        CredentialKind::Ecr if given.password.is_some() || given.json_key.is_some() => {
            Err(KindError::new(
                "invalid_credentials",
                "ecr credentials are AWS keys (aws_access_key_id and aws_secret_access_key) or a role (role_arn), not a password; for a token from `aws ecr get-login-password`, save kind basic with username AWS",
            ))
        }
        // Stored ECR keys or role, kept as they are (an update of something else).
        CredentialKind::Ecr => match kept {
            Some(k) => Ok(Resolved {
                kind,
                username: k.username,
                secret: Secret::from_stored(kind, k.password).map_err(|_| {
                    KindError::new(
                        "password_required",
                        "the stored ecr credentials cannot be read: give the keys or the role again",
                    )
                })?,
            }),
            None => Err(missing("aws_access_key_id and aws_secret_access_key (or role_arn)")),
        },
        CredentialKind::Gcp if given.json_key.is_some() => gcp_key(given),
        _ => {
            let (kept_username, kept_password) = match kept {
                Some(k) => (Some(k.username), Some(k.password)),
                None => (None, None),
            };
            Ok(Resolved {
                kind,
                username: given
                    .username
                    .or(kept_username)
                    .ok_or_else(|| missing("username"))?,
                secret: Secret::Password(
                    given
                        .password
                        .or(kept_password)
                        .ok_or_else(|| missing("password"))?,
                ),
            })
        }
    }
}

/// The kind given, else the one the fields say, else the stored one, else the host's.
fn kind_of(
    url: &RegistryUrl,
    given: &Given,
    kept: Option<&Kept>,
) -> Result<CredentialKind, KindError> {
    Ok(match &given.kind {
        Some(k) => k
            .parse::<CredentialKind>()
            .map_err(|e| KindError::new("invalid_kind", e.to_string()))?,
        None if given.json_key.is_some() => CredentialKind::Gcp,
        None if given.aws.given() => CredentialKind::Ecr,
        None => kept.map(|k| k.kind).unwrap_or_else(|| {
            match CredentialKind::for_host(&url.authority()) {
                // A pasted `aws ecr get-login-password` token (user AWS) stays what it
                // is: a user name and a password.
                CredentialKind::Ecr => CredentialKind::Basic,
                k => k,
            }
        }),
    })
}

/// What is stored is kept only as the kind it was saved as: without a new secret,
/// another kind is refused; with one, nothing of the stored one is merged in.
fn kept_for(
    kind: CredentialKind,
    given: &Given,
    kept: Option<Kept>,
) -> Result<Option<Kept>, KindError> {
    let new_secret = given.password.is_some() || given.json_key.is_some() || given.aws.given();
    match kept {
        Some(k) if !new_secret && k.kind != kind => Err(KindError::new(
            "password_required",
            format!(
                "the kind changed from {} to {}: give the {} credentials' secret again (a stored secret is kept only as the kind it was saved as)",
                k.kind.as_str(),
                kind.as_str(),
                kind.as_str()
            ),
        )),
        Some(k) if k.kind != kind => Ok(None),
        other => Ok(other),
    }
}

/// The region of stored ECR credentials, kept when new ones do not name one.
fn kept_region(kept: &Option<Kept>) -> Option<String> {
    kept.as_ref()
        .filter(|k| k.kind == CredentialKind::Ecr)
        .and_then(|k| berth_vault::ecr::EcrSource::from_secret(&k.password))
        .map(|s| s.region().to_owned())
}

/// `ecr` through a role of the user's, assumed with the project's external id.
fn ecr_role(
    aws: Aws,
    aws_region: String,
    project_id: &str,
    missing: impl Fn(&str) -> KindError,
) -> Result<Resolved, KindError> {
    if aws.access_key_id.is_some() || aws.secret_access_key.is_some() {
        return Err(KindError::new(
            "invalid_credentials",
            "give either AWS keys (aws_access_key_id and aws_secret_access_key) or a role to assume (role_arn), not both",
        ));
    }
    let role_arn = aws.role_arn.ok_or_else(|| missing("role_arn"))?;
    if !is_role_arn(&role_arn) {
        return Err(KindError::new(
            "invalid_credentials",
            format!(
                "role_arn {role_arn:?} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
            ),
        ));
    }
    let external_id = berth_vault::ecr::external_id(project_id);
    if aws.external_id.as_ref().is_some_and(|e| *e != external_id) {
        return Err(KindError::new(
            "invalid_credentials",
            format!("the external id is set by berth for each project, so that no other project can assume your role: this project's is {external_id}; require it in the role's trust policy and leave external_id out (or give that value)"),
        ));
    }
    let source = berth_vault::ecr::EcrSource::Role(berth_vault::ecr::AwsRole {
        aws_region,
        role_arn: role_arn.clone(),
    });
    Ok(Resolved {
        kind: CredentialKind::Ecr,
        username: role_arn,
        secret: Secret::Ecr(source),
    })
}

/// `ecr` from the user's AWS keys.
fn ecr_keys(
    aws: Aws,
    aws_region: String,
    missing: impl Fn(&str) -> KindError,
) -> Result<Resolved, KindError> {
    let keys = berth_vault::ecr::AwsKeys {
        aws_access_key_id: aws
            .access_key_id
            .ok_or_else(|| missing("aws_access_key_id"))?,
        aws_secret_access_key: aws
            .secret_access_key
            .ok_or_else(|| missing("aws_secret_access_key"))?
            .expose_secret()
            .to_owned(),
        aws_session_token: aws.session_token.map(|t| t.expose_secret().to_owned()),
        aws_region,
    };
    Ok(Resolved {
        kind: CredentialKind::Ecr,
        username: keys.aws_access_key_id.clone(),
        secret: Secret::Ecr(berth_vault::ecr::EcrSource::Keys(keys)),
    })
}

/// `gcp` from a service account key, checked before any request; sent as
/// `_json_key`, or `_json_key_base64` when the user asks for it, as Google documents.
fn gcp_key(given: Given) -> Result<Resolved, KindError> {
    let key = given
        .json_key
        .unwrap_or_else(|| SecretString::from(String::new()));
    check_gcp_key(key.expose_secret()).map_err(|m| KindError::new("invalid_credentials", m))?;
    let kind = CredentialKind::Gcp;
    match given.username.as_deref() {
        Some("_json_key_base64") => Ok(Resolved {
            kind,
            username: "_json_key_base64".into(),
            secret: Secret::Password(SecretString::from(
                base64::engine::general_purpose::STANDARD.encode(key.expose_secret().as_bytes()),
            )),
        }),
        None | Some("_json_key") => Ok(Resolved {
            kind,
            username: "_json_key".into(),
            secret: Secret::Password(key),
        }),
        Some(other) => Err(KindError::new(
            "invalid_credentials",
            format!("with a json_key the username is _json_key or _json_key_base64, not {other:?}"),
        )),
    }
}

/// What the registry is sent for a credential: its user name and password, or,
/// for `ecr`, `AWS` and a token minted from the keys (a role assumed with
/// `project_id`'s external id, whatever any record holds).
pub async fn credentials_for(
    username: &str,
    secret: &Secret,
    project_id: &str,
) -> Result<berth_registry::Credentials, berth_vault::ecr::EcrError> {
    match secret {
        Secret::Password(p) => Ok(berth_registry::Credentials::new(username, p.clone())),
        Secret::Ecr(source) => {
            let token = berth_vault::ecr::token(source, project_id).await?;
            Ok(berth_registry::Credentials::new("AWS", token))
        }
    }
}

/// [`credentials_for`] a credential as stored (its vault text, read once).
pub async fn registry_credentials(
    kind: CredentialKind,
    username: String,
    password: SecretString,
    project_id: &str,
) -> Result<berth_registry::Credentials, berth_vault::ecr::EcrError> {
    let secret = Secret::from_stored(kind, password)?;
    credentials_for(&username, &secret, project_id).await
}

/// A failed ECR mint as a preflight result: the AWS error code in the message.
pub fn ecr_report(e: &berth_vault::ecr::EcrError) -> berth_registry::PreflightReport {
    use berth_vault::ecr::EcrError;
    let (code, message) = match e {
        EcrError::Refused { call: "AssumeRole", .. } => (
            berth_registry::Code::AuthFailed,
            format!("berth could not assume the role: {e}. Check that the role's trust policy names berth's AWS principal and requires this project's external id."),
        ),
        EcrError::Refused { .. } | EcrError::Malformed => (
            berth_registry::Code::AuthFailed,
            format!("The AWS credentials were refused: {e}. Check the key, its secret and that it (or the role) may call ecr:GetAuthorizationToken."),
        ),
        EcrError::Unreachable { .. } => (berth_registry::Code::NetworkError, format!("{e}.")),
    };
    berth_registry::PreflightReport::failed_before_any_step(code, message)
}

/// The region an ECR credential mints in: given, else the one the host names,
/// else the one the stored credential for this registry minted in.
fn region(
    url: &RegistryUrl,
    given: Option<String>,
    kept: Option<String>,
) -> Result<String, KindError> {
    match given {
        Some(r) => Ok(r),
        None => berth_vault::ecr::host_parts(&url.authority())
            .map(|(_, region)| region)
            .or(kept)
            .ok_or_else(|| {
                KindError::new(
                    "missing_field",
                    "aws_region (the registry host names none) is required for ecr credentials",
                )
            }),
    }
}

/// `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`.
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", partition, "iam", "", account, resource]
        if partition.starts_with("aws")
            && account.len() == 12
            && account.chars().all(|c| c.is_ascii_digit())
            && resource.strip_prefix("role/").is_some_and(|n| !n.is_empty()))
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
    fn a_stored_secret_is_kept_only_as_its_own_kind() {
        let url = |u: &str| u.parse::<RegistryUrl>().unwrap();
        let keys = berth_vault::ecr::EcrSource::Keys(berth_vault::ecr::AwsKeys {
            aws_access_key_id: "AKIA1".into(),
            aws_secret_access_key: "stored-secret".into(),
            aws_session_token: None,
            aws_region: "eu-central-1".into(),
        });
        let kept = || {
            Some(Kept {
                kind: CredentialKind::Ecr,
                username: "AKIA1".into(),
                password: keys.to_secret(),
            })
        };
        let host = url("registry.local:5000");
        // An update of something else keeps the stored keys, as ecr.
        let same = resolve(&host, Given::default(), kept(), "p1").ok().unwrap();
        assert_eq!(same.kind, CredentialKind::Ecr);
        assert_eq!(same.username, "AKIA1");
        // A kind change without a new secret is refused: the stored keys never
        // become a basic password (which /v1/registry-credentials would answer).
        for k in ["basic", "acr", "gcp"] {
            let e = resolve(
                &host,
                Given {
                    kind: Some(k.into()),
                    ..Default::default()
                },
                kept(),
                "p1",
            )
            .err()
            .unwrap();
            assert_eq!(e.code, "password_required", "{k}");
            assert!(!e.message.contains("stored-secret"));
        }
        // New keys on a host that names no region keep the stored region.
        let rotated = resolve(
            &host,
            Given {
                aws: Aws {
                    access_key_id: Some("AKIA2".into()),
                    secret_access_key: Some(SecretString::from("new")),
                    ..Default::default()
                },
                ..Default::default()
            },
            kept(),
            "p1",
        )
        .ok()
        .unwrap();
        match &rotated.secret {
            Secret::Ecr(s) => assert_eq!(s.region(), "eu-central-1"),
            Secret::Password(_) => panic!("keys"),
        }
        // A new basic password replaces the keys, with its own user name only.
        let basic = resolve(
            &host,
            Given {
                kind: Some("basic".into()),
                password: Some(SecretString::from("pw")),
                ..Default::default()
            },
            kept(),
            "p1",
        )
        .err()
        .unwrap();
        assert_eq!(
            basic.code, "missing_field",
            "no user name merged from the keys"
        );
    }

    #[test]
    fn kinds_from_the_fields_then_the_host() {
        let url = |u: &str| u.parse::<RegistryUrl>().unwrap();
        let basic = || Given {
            username: Some("u".into()),
            password: Some(SecretString::from("p")),
            ..Default::default()
        };
        let kind = |u: &str, g: Given| resolve(&url(u), g, None, "p1").map(|r| r.kind.as_str());
        assert_eq!(kind("ghcr.io", basic()).ok(), Some("basic"));
        assert_eq!(kind("myacr.azurecr.io", basic()).ok(), Some("acr"));
        assert_eq!(kind("europe-docker.pkg.dev", basic()).ok(), Some("gcp"));
        assert_eq!(
            kind("1.dkr.ecr.eu-west-1.amazonaws.com", basic()).ok(),
            Some("basic"),
            "a pasted ECR token"
        );
        let role = |arn: &str, external_id: Option<&str>| Given {
            aws: Aws {
                role_arn: Some(arn.into()),
                external_id: external_id.map(Into::into),
                ..Default::default()
            },
            ..Default::default()
        };
        let ecr = "123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        let arn = "arn:aws:iam::123456789012:role/pull";
        assert_eq!(kind(ecr, role(arn, None)).ok(), Some("ecr"));
        assert_eq!(kind(ecr, role(arn, Some("berth-p1"))).ok(), Some("ecr"));
        // Another project's external id (or any other) is refused: it is berth's.
        let e = kind(ecr, role(arn, Some("berth-p2"))).err().unwrap();
        assert_eq!(e.code, "invalid_credentials");
        assert!(e.message.contains("berth-p1"), "{}", e.message);
        assert_eq!(
            kind(ecr, role("arn:aws:iam::1:user/pull", None))
                .err()
                .unwrap()
                .code,
            "invalid_credentials"
        );
        let keys = || Given {
            aws: Aws {
                access_key_id: Some("AKIA1".into()),
                secret_access_key: Some(SecretString::from("s")),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(
            kind("1.dkr.ecr.eu-west-1.amazonaws.com", keys()).ok(),
            Some("ecr")
        );
        let no_region = kind("registry.local:5000", keys()).err().unwrap();
        assert!(
            no_region.message.contains("aws_region"),
            "{}",
            no_region.message
        );
        // A password is never taken as ECR keys or a role, whatever it holds: here
        // a sealed role naming another project's external id.
        let sealed = r#"{"role_arn":"arn:aws:iam::123456789012:role/pull","external_id":"berth-victim","aws_region":"us-east-1"}"#;
        let smuggled = Given {
            kind: Some("ecr".into()),
            username: Some("arn:aws:iam::123456789012:role/pull".into()),
            password: Some(SecretString::from(sealed)),
            ..Default::default()
        };
        assert_eq!(
            kind(ecr, smuggled).err().unwrap().code,
            "invalid_credentials"
        );
        let wrong = Given {
            kind: Some("aws".into()),
            ..basic()
        };
        assert_eq!(kind("ghcr.io", wrong).err().unwrap().code, "invalid_kind");
    }
}
