//! Registry credentials. The password is a [`SecretString`]: redacted in `Debug`,
//! zeroized on drop, exposed only where a header or form is built from it.

use base64::Engine;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// The username Docker uses to say "the password is an identity (refresh) token".
pub const IDENTITY_TOKEN_USERNAME: &str = "<token>";
/// The username Azure documents for `docker login` with an ACR refresh token
/// (`az acr login --expose-token`); its password is sent the same way.
pub const AZURE_REFRESH_TOKEN_USERNAME: &str = "00000000-0000-0000-0000-000000000000";

#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: SecretString,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"[REDACTED]")
            .finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: SecretString) -> Self {
        Credentials {
            username: username.into(),
            password,
        }
    }

    /// `Authorization: Basic ...`, marked sensitive so no HTTP layer prints it.
    pub fn basic_header(&self) -> HeaderValue {
        let plain = Zeroizing::new(format!(
            "{}:{}",
            self.username,
            self.password.expose_secret()
        ));
        let encoded =
            Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(plain.as_bytes()));
        let mut v = HeaderValue::from_str(&format!("Basic {}", encoded.as_str()))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic"));
        v.set_sensitive(true);
        v
    }

    /// The password is a refresh token, for the OAuth2 `refresh_token` grant.
    pub fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USERNAME || self.username == AZURE_REFRESH_TOKEN_USERNAME
    }
}

/// `Authorization: Bearer ...`, marked sensitive.
pub fn bearer_header(token: &SecretString) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer"));
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let c = Credentials::new("alice", SecretString::from("hunter2-secret"));
        let dbg = format!("{c:?} {:?}", c.basic_header());
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("aHVudGVy"), "{dbg}");
        assert!(dbg.contains("alice"));
    }
}
