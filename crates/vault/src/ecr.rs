//! Amazon ECR's registry tokens, minted from what a user saved: their AWS access
//! keys, or a role of theirs that berth's own AWS identity assumes with the
//! project's external id (the cross-account pattern AWS recommends for a
//! platform acting for its customers). `GetAuthorizationToken` (the AWS
//! configuration from the standard chain for the endpoint, as the KMS and Secrets
//! Manager clients), cached until shortly before its `expiresAt` and never stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_sdk_ecr::config::Credentials;
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// The keys an ECR credential keeps (sealed, as a password is).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct AwsKeys {
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_session_token: Option<String>,
    pub aws_region: String,
}

impl Drop for AwsKeys {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.aws_secret_access_key.zeroize();
        if let Some(t) = &mut self.aws_session_token {
            t.zeroize();
        }
    }
}

/// A role of the user's for berth to assume: the trust policy the user writes
/// names berth's AWS principal and requires `sts:ExternalId` to be this project's.
/// The external id is not kept here: it is derived from the project at every mint
/// ([`token`]), so no stored or submitted text can name another project's (a record
/// an earlier version sealed with one has it ignored).
#[derive(serde::Serialize, serde::Deserialize)]
pub struct AwsRole {
    pub role_arn: String,
    pub aws_region: String,
}

/// What an ECR credential keeps, sealed as a password is: keys or a role.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum EcrSource {
    Role(AwsRole),
    Keys(AwsKeys),
}

/// The external id berth sends when assuming a role for a project: fixed by the
/// project's id, shown to its members to put in their role's trust policy.
pub fn external_id(project_id: &str) -> String {
    format!("berth-{project_id}")
}

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    /// AWS refused (its error code and message: AccessDenied,
    /// UnrecognizedClientException, ExpiredTokenException...).
    #[error("AWS refused {call}: {code}: {message}")]
    Refused {
        call: &'static str,
        code: String,
        message: String,
    },
    #[error("AWS did not answer {call}: {detail}")]
    Unreachable { call: &'static str, detail: String },
    #[error("AWS answered GetAuthorizationToken without a usable token")]
    Malformed,
}

fn aws_error<E, R>(call: &'static str, e: aws_sdk_ecr::error::SdkError<E, R>) -> EcrError
where
    E: aws_sdk_ecr::error::ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    use aws_sdk_ecr::error::ProvideErrorMetadata;
    match e.code() {
        Some(code) => EcrError::Refused {
            call,
            code: code.to_owned(),
            message: e.message().unwrap_or_default().to_owned(),
        },
        None => EcrError::Unreachable {
            call,
            detail: aws_sdk_ecr::error::DisplayErrorContext(&e).to_string(),
        },
    }
}

/// A minted token outlives its use by this much at least, or is minted again.
const MARGIN: Duration = Duration::from_secs(300);

type Cache = Mutex<HashMap<[u8; 32], (SecretString, SystemTime)>>;

fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The registry password (the user is `AWS`): a token for every ECR registry the
/// keys' principal (or the role, assumed with `project`'s external id) may read.
pub async fn token(source: &EcrSource, project: &str) -> Result<SecretString, EcrError> {
    let key = source.cache_key(project);
    if let Some((t, expires)) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if SystemTime::now() + MARGIN < *expires {
            return Ok(t.clone());
        }
    }
    let config = crate::aws::config().await;
    let (credentials, region) = match source {
        EcrSource::Keys(keys) => (
            Credentials::new(
                keys.aws_access_key_id.clone(),
                keys.aws_secret_access_key.clone(),
                keys.aws_session_token.clone(),
                None,
                "berth-saved-keys",
            ),
            keys.aws_region.clone(),
        ),
        EcrSource::Role(role) => (
            assume(&config, role, &external_id(project)).await?,
            role.aws_region.clone(),
        ),
    };
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&config)
            .region(aws_sdk_ecr::config::Region::new(region))
            .credentials_provider(credentials)
            .build(),
    );
    let answer = ecr
        .get_authorization_token()
        .send()
        .await
        .map_err(|e| aws_error("GetAuthorizationToken", e))?;
    let data = answer
        .authorization_data()
        .first()
        .ok_or(EcrError::Malformed)?;
    let encoded = data.authorization_token().ok_or(EcrError::Malformed)?;
    let decoded = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| EcrError::Malformed)?,
    );
    let text = std::str::from_utf8(&decoded).map_err(|_| EcrError::Malformed)?;
    let password = text.strip_prefix("AWS:").ok_or(EcrError::Malformed)?;
    let password = SecretString::from(password.to_owned());
    // An `expiresAt` already past (moto answers 2015) means: mint each time.
    let expires = data
        .expires_at()
        .and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    if expires > SystemTime::now() + MARGIN {
        cache()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (password.clone(), expires));
    }
    Ok(password)
}

/// The account and the region an ECR host names
/// (`<account>.dkr.ecr.<region>.amazonaws.com`).
pub fn host_parts(host: &str) -> Option<(String, String)> {
    let host = host.split(':').next()?;
    let rest = host.strip_suffix(".amazonaws.com")?;
    let mut parts = rest.split('.');
    let account = parts.next()?;
    let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
    (dkr == "dkr" && ecr == "ecr" && account.chars().all(|c| c.is_ascii_digit()))
        .then(|| (account.to_owned(), region.to_owned()))
}

/// Temporary keys for the user's role, from berth's own identity (the standard
/// chain), bound to the project by the external id. They live as long as STS
/// gives them (an hour); only the ECR token minted with them is cached.
async fn assume(
    config: &aws_config::SdkConfig,
    role: &AwsRole,
    external_id: &str,
) -> Result<Credentials, EcrError> {
    let sts = aws_sdk_sts::Client::new(config);
    let answer = sts
        .assume_role()
        .role_arn(&role.role_arn)
        .external_id(external_id)
        .role_session_name("berth-ecr-pull")
        .send()
        .await
        .map_err(|e| aws_error("AssumeRole", e))?;
    let c = answer.credentials().ok_or(EcrError::Malformed)?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        SystemTime::try_from(*c.expiration()).ok(),
        "berth-assumed-role",
    ))
}

impl EcrSource {
    /// What a minted token is cached under: a hash of the whole source, secret
    /// included. The key id alone is no secret (the API shows it masked, AWS
    /// prints it in errors): a cache keyed by it would hand one project the token
    /// minted with another's keys to whoever saved the same id with any secret.
    /// The key holds the project (whose external id a role is assumed with), so
    /// another project naming the same role assumes it itself (and AWS refuses it
    /// unless the trust policy names that project's external id too).
    fn cache_key(&self, project: &str) -> [u8; 32] {
        use sha2::Digest as _;
        let text = Zeroizing::new(serde_json::to_string(self).unwrap_or_default());
        let mut h = sha2::Sha256::new();
        h.update(text.as_bytes());
        h.update([0]);
        h.update(external_id(project).as_bytes());
        h.finalize().into()
    }

    /// The region the token is minted in.
    pub fn region(&self) -> &str {
        match self {
            EcrSource::Keys(k) => &k.aws_region,
            EcrSource::Role(r) => &r.aws_region,
        }
    }

    /// The source as sealed text.
    pub fn to_secret(&self) -> SecretString {
        SecretString::from(serde_json::to_string(self).unwrap_or_default())
    }

    pub fn from_secret(s: &SecretString) -> Option<EcrSource> {
        serde_json::from_str(s.expose_secret()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::{AwsKeys, AwsRole, EcrSource};
    use secrecy::ExposeSecret;

    #[test]
    fn a_token_is_cached_under_the_whole_keys_not_the_key_id() {
        let keys = |secret: &str, region: &str| {
            EcrSource::Keys(AwsKeys {
                aws_access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
                aws_secret_access_key: secret.into(),
                aws_session_token: None,
                aws_region: region.into(),
            })
        };
        let a = || keys("a", "us-east-1");
        assert_eq!(a().cache_key("p1"), a().cache_key("p1"));
        assert_ne!(a().cache_key("p1"), keys("b", "us-east-1").cache_key("p1"));
        assert_ne!(a().cache_key("p1"), keys("a", "eu-west-1").cache_key("p1"));
        // A role is cached per project: the same role named by another project
        // is assumed again, with that project's external id.
        let role = || {
            EcrSource::Role(AwsRole {
                role_arn: "arn:aws:iam::123456789012:role/pull".into(),
                aws_region: "us-east-1".into(),
            })
        };
        assert_eq!(role().cache_key("p1"), role().cache_key("p1"));
        assert_ne!(role().cache_key("p1"), role().cache_key("p2"));
    }

    #[test]
    fn sealed_sources_read_back_as_what_they_were() {
        let keys = EcrSource::Keys(AwsKeys {
            aws_access_key_id: "AKIA1".into(),
            aws_secret_access_key: "s".into(),
            aws_session_token: None,
            aws_region: "us-east-1".into(),
        });
        assert!(matches!(
            EcrSource::from_secret(&keys.to_secret()),
            Some(EcrSource::Keys(k)) if k.aws_access_key_id == "AKIA1"
        ));
        let role = EcrSource::Role(AwsRole {
            role_arn: "arn:aws:iam::1:role/r".into(),
            aws_region: "us-east-1".into(),
        });
        assert!(matches!(
            EcrSource::from_secret(&role.to_secret()),
            Some(EcrSource::Role(r)) if r.role_arn == "arn:aws:iam::1:role/r"
        ));
        assert!(!role.to_secret().expose_secret().contains("external_id"));
        // A record sealed by an earlier version, with another project's external
        // id in it, reads as the role alone: the id is the minting project's.
        let old = r#"{"role_arn":"arn:aws:iam::1:role/r","external_id":"berth-victim","aws_region":"us-east-1"}"#;
        match EcrSource::from_secret(&old.to_owned().into()) {
            Some(EcrSource::Role(r)) => assert_eq!(r.role_arn, "arn:aws:iam::1:role/r"),
            _ => panic!("an old role record reads as a role"),
        }
        assert!(EcrSource::from_secret(&"hunter2".to_owned().into()).is_none());
    }

    #[test]
    fn ecr_hosts() {
        assert_eq!(
            super::host_parts("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            Some(("123456789012".into(), "eu-west-1".into()))
        );
        assert_eq!(super::host_parts("ghcr.io"), None);
        assert_eq!(super::host_parts("s3.eu-west-1.amazonaws.com"), None);
    }
}
