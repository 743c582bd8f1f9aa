//! Amazon ECR's registry tokens, minted from the AWS access keys a user saved:
//! `GetAuthorizationToken` (the AWS configuration from the standard chain for the
//! endpoint, as the KMS and Secrets Manager clients; the keys are the user's, not
//! berth's), cached until shortly before their `expiresAt` and never stored.

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

#[derive(Debug, thiserror::Error)]
pub enum EcrError {
    /// AWS refused (its error code and message: AccessDenied,
    /// UnrecognizedClientException, ExpiredTokenException...).
    #[error("AWS refused GetAuthorizationToken: {code}: {message}")]
    Refused { code: String, message: String },
    #[error("AWS did not answer GetAuthorizationToken: {0}")]
    Unreachable(String),
    #[error("AWS answered GetAuthorizationToken without a usable token")]
    Malformed,
}

/// A minted token outlives its use by this much at least, or is minted again.
const MARGIN: Duration = Duration::from_secs(300);

type Cache = Mutex<HashMap<[u8; 32], (SecretString, SystemTime)>>;

fn cache() -> &'static Cache {
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The registry password (the user is `AWS`): a token for every ECR registry the
/// keys' principal may read.
pub async fn token(keys: &AwsKeys) -> Result<SecretString, EcrError> {
    let key = keys.cache_key();
    if let Some((t, expires)) = cache().lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        if SystemTime::now() + MARGIN < *expires {
            return Ok(t.clone());
        }
    }
    let config = crate::aws::config().await;
    let ecr = aws_sdk_ecr::Client::from_conf(
        aws_sdk_ecr::config::Builder::from(&config)
            .region(aws_sdk_ecr::config::Region::new(keys.aws_region.clone()))
            .credentials_provider(Credentials::new(
                keys.aws_access_key_id.clone(),
                keys.aws_secret_access_key.clone(),
                keys.aws_session_token.clone(),
                None,
                "berth-saved-keys",
            ))
            .build(),
    );
    let answer = ecr.get_authorization_token().send().await.map_err(|e| {
        use aws_sdk_ecr::error::ProvideErrorMetadata;
        match e.code() {
            Some(code) => EcrError::Refused {
                code: code.to_owned(),
                message: e.message().unwrap_or_default().to_owned(),
            },
            None => EcrError::Unreachable(aws_sdk_ecr::error::DisplayErrorContext(&e).to_string()),
        }
    })?;
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

impl AwsKeys {
    /// What a minted token is cached under: a hash of the whole keys, secret
    /// included. The key id alone is no secret (the API shows it masked, AWS
    /// prints it in errors): a cache keyed by it would hand one project the token
    /// minted with another's keys to whoever saved the same id with any secret.
    fn cache_key(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let text = Zeroizing::new(serde_json::to_string(self).unwrap_or_default());
        sha2::Sha256::digest(text.as_bytes()).into()
    }

    /// The keys as sealed text.
    pub fn to_secret(&self) -> SecretString {
        SecretString::from(serde_json::to_string(self).unwrap_or_default())
    }

    pub fn from_secret(s: &SecretString) -> Option<AwsKeys> {
        serde_json::from_str(s.expose_secret()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::AwsKeys;

    #[test]
    fn a_token_is_cached_under_the_whole_keys_not_the_key_id() {
        let keys = |secret: &str| AwsKeys {
            aws_access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            aws_secret_access_key: secret.into(),
            aws_session_token: None,
            aws_region: "us-east-1".into(),
        };
        assert_eq!(keys("a").cache_key(), keys("a").cache_key());
        assert_ne!(keys("a").cache_key(), keys("b").cache_key());
        let mut other_region = keys("a");
        other_region.aws_region = "eu-west-1".into();
        assert_ne!(keys("a").cache_key(), other_region.cache_key());
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
