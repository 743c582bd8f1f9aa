//! Step 2: the token exchange (distribution "Token Authentication Specification" and
//! "OAuth2 Token Authentication").
//!
//! - GET `realm?service=&scope=` with Basic credentials (or none, for anonymous).
//! - A token server that wants OAuth2 (answers the GET with 404/405) gets a POST form
//!   `grant_type=password`; an identity token (username `<token>`) is sent as
//!   `grant_type=refresh_token`, and a 404 on that POST falls back to GET, as the
//!   spec says.
//! - The answer's `token` or `access_token` is used; `expires_in` defaults to 60 s.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::Sha256;
use url::Url;
use zeroize::Zeroizing;

use super::challenge::Challenge;
use super::error::RegistryErrorBody;
use super::guard::{authority, read_limited, Request, Transport};
use crate::credentials::Credentials;
use crate::error::RegistryError;

const DEFAULT_EXPIRES_IN: u64 = 60;
/// Spec minimum; also what we assume when a server says less.
const MIN_EXPIRES_IN: u64 = 60;
const TOKEN_BODY_LIMIT: usize = 1024 * 1024;

/// A Bearer challenge checked for use: the realm is a URL we may call.
#[derive(Clone, Debug)]
pub struct BearerChallenge {
    pub realm: Url,
    pub service: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
}

impl BearerChallenge {
    /// Validates the realm of a Bearer challenge against where the registry lives.
    /// A realm over plain HTTP is accepted only for a registry that is itself reached
    /// over plain HTTP, on the same host (or for a host in the insecure list).
    pub fn from_challenge(
        c: &Challenge,
        registry: &Url,
        t: &Transport,
    ) -> Result<Self, RegistryError> {
        let raw = c
            .param("realm")
            .ok_or_else(|| RegistryError::Challenge("Bearer challenge without a realm".into()))?;
        let reject = |reason: &str| RegistryError::RealmRejected {
            realm: raw.chars().take(200).collect(),
            reason: reason.into(),
        };
        let realm = Url::parse(raw).map_err(|_| reject("not an absolute URL"))?;
        if !realm.username().is_empty() || realm.password().is_some() {
            return Err(reject("it carries a user name or password"));
        }
        match realm.scheme() {
            "https" => {}
            "http" => {
                let same_host = registry.scheme() == "http" && realm.host() == registry.host();
                let insecure = t
                    .policy()
                    .is_insecure(realm.host_str().unwrap_or_default(), realm.port());
                if !same_host && !insecure {
                    return Err(reject(
                        "plain HTTP token service for a registry reached over HTTPS",
                    ));
                }
            }
            _ => return Err(reject("not an http(s) URL")),
        }
        Ok(BearerChallenge {
            realm,
            service: c.param("service").map(str::to_owned),
            scope: c.param("scope").map(str::to_owned),
            error: c.param("error").map(str::to_owned),
        })
    }

    fn plain_http_host(&self, registry: &Url) -> Option<String> {
        (registry.scheme() == "http").then(|| registry.host_str().unwrap_or_default().to_owned())
    }
}

/// A bearer token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    pub secret: SecretString,
    pub expires_at: Instant,
    pub expires_in: Duration,
}

impl Token {
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        Token {
            secret: SecretString::from("t"),
            expires_at: Instant::now(),
            expires_in: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("expires_in", &self.expires_in)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Drop for TokenResponse {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.token.zeroize();
        self.access_token.zeroize();
    }
}

/// The outcome of a token request, for the preflight's step report.
pub struct Fetched {
    pub token: Token,
    pub status: u16,
    pub method: &'static str,
}

/// Fetches a token for `scopes` from the challenge's realm.
#[tracing::instrument(skip_all, fields(realm = %authority(&ch.realm)))]
pub async fn fetch(
    t: &Transport,
    registry: &Url,
    ch: &BearerChallenge,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<Fetched, RegistryError> {
    match creds {
        Some(c) if c.is_identity_token() => match post_oauth2(t, registry, ch, scopes, c).await {
            Err(RegistryError::Token { status: 404, .. }) => {
                get(t, registry, ch, scopes, creds).await
            }
            other => other,
        },
        Some(c) => match get(t, registry, ch, scopes, creds).await {
            // The token server only speaks OAuth2.
            Err(RegistryError::Token {
                status: 404 | 405, ..
            }) => post_oauth2(t, registry, ch, scopes, c).await,
            other => other,
        },
        None => get(t, registry, ch, scopes, None).await,
    }
}

async fn get(
    t: &Transport,
    registry: &Url,
    ch: &BearerChallenge,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<Fetched, RegistryError> {
    let mut url = ch.realm.clone();
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = &ch.service {
            q.append_pair("service", s);
        }
        for s in scopes {
            q.append_pair("scope", s);
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(c) = creds {
        headers.insert(AUTHORIZATION, c.basic_header());
    }
    let req = Request {
        method: Method::GET,
        url,
        headers,
        body: None,
        plain_http_host: ch.plain_http_host(registry),
    };
    finish(t, req, "GET").await
}

async fn post_oauth2(
    t: &Transport,
    registry: &Url,
    ch: &BearerChallenge,
    scopes: &[String],
    c: &Credentials,
) -> Result<Fetched, RegistryError> {
    // The form holds the password: zeroize our copy once reqwest has its own.
    let body = Zeroizing::new({
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        if c.is_identity_token() {
            form.append_pair("grant_type", "refresh_token");
            form.append_pair("refresh_token", c.password.expose_secret());
        } else {
            form.append_pair("grant_type", "password");
            form.append_pair("username", &c.username);
            form.append_pair("password", c.password.expose_secret());
        }
        if let Some(s) = &ch.service {
            form.append_pair("service", s);
        }
        if !scopes.is_empty() {
            form.append_pair("scope", &scopes.join(" "));
        }
        form.append_pair("client_id", "berth");
        form.finish()
    });
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let req = Request {
        method: Method::POST,
        url: ch.realm.clone(),
        headers,
        body: Some(body.as_bytes().to_vec()),
        plain_http_host: ch.plain_http_host(registry),
    };
    finish(t, req, "POST").await
}

async fn finish(
    t: &Transport,
    req: Request,
    method: &'static str,
) -> Result<Fetched, RegistryError> {
    let (resp, _) = t.send(req).await?;
    let status = resp.status().as_u16();
    let body = Zeroizing::new(read_limited(resp, TOKEN_BODY_LIMIT).await?);
    if !(200..300).contains(&status) {
        return Err(RegistryError::Token {
            status,
            body: RegistryErrorBody::parse(&body).or_else(|| oauth_error(&body)),
        });
    }
    let mut parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
        RegistryError::Protocol("the token server's answer is not a token JSON document".into())
    })?;
    let token = parsed
        .token
        .take()
        .filter(|s| !s.is_empty())
        .or_else(|| parsed.access_token.take())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            RegistryError::Protocol("the token server answered without a token".into())
        })?;
    let secs = parsed
        .expires_in
        .unwrap_or(DEFAULT_EXPIRES_IN)
        .max(MIN_EXPIRES_IN);
    let expires_in = Duration::from_secs(secs);
    Ok(Fetched {
        token: Token {
            secret: SecretString::from(token),
            expires_at: Instant::now() + expires_in,
            expires_in,
        },
        status,
        method,
    })
}

/// OAuth2 error bodies: `{"error": "invalid_grant", "error_description": "..."}`.
fn oauth_error(body: &[u8]) -> Option<RegistryErrorBody> {
    #[derive(Deserialize)]
    struct OAuthError {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    let e: OAuthError = serde_json::from_slice(body).ok()?;
    Some(RegistryErrorBody {
        errors: vec![super::error::RegistryErrorEntry {
            code: e.error,
            message: e.error_description,
        }],
    })
}

/// Tokens cached per (realm, service, scopes, credential), so deploys of the same
/// image do not ask the token server again. The credential enters the key only as an
/// HMAC under a per-process random key: the cache holds no password, nor a hash that
/// could be tested against guesses offline.
pub struct TokenCache {
    key: Zeroizing<[u8; 32]>,
    entries: Mutex<HashMap<CacheKey, Token>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    realm: String,
    service: Option<String>,
    scopes: Vec<String>,
    credential: [u8; 32],
}

impl Default for TokenCache {
    fn default() -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        TokenCache {
            key,
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl TokenCache {
    pub fn key(
        &self,
        ch: &BearerChallenge,
        scopes: &[String],
        creds: Option<&Credentials>,
    ) -> CacheKey {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref()).expect("any key length");
        if let Some(c) = creds {
            mac.update(c.username.as_bytes());
            mac.update(&[0]);
            mac.update(c.password.expose_secret().as_bytes());
        }
        CacheKey {
            realm: ch.realm.to_string(),
            service: ch.service.clone(),
            scopes: scopes.to_vec(),
            credential: mac.finalize().into_bytes().into(),
        }
    }

    /// A cached token with at least 10 s of life left.
    pub fn get(&self, key: &CacheKey) -> Option<Token> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|t| t.expires_at > Instant::now() + Duration::from_secs(10))
            .cloned()
    }

    pub fn put(&self, key: CacheKey, token: Token) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        entries.retain(|_, t| t.expires_at > now);
        entries.insert(key, token);
    }
}
