//! What callers use: a [`Registry`] (the guarded transport plus the token cache,
//! shared by everything in a process) and a [`Session`] with one repository, which
//! walks the protocol steps and keeps the authorization they earned.

use berth_types::{ImageRef, RegistryUrl, Scheme};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response};
use url::Url;

use crate::credentials::{bearer_header, Credentials};
use crate::error::RegistryError;
use crate::policy::NetworkPolicy;
use crate::transport::auth::{on_unauthorized, Answer, AuthState};
use crate::transport::bearer::{self, BearerChallenge, TokenCache};
use crate::transport::challenge::{self, Challenge, Scheme as ChallengeScheme};
use crate::transport::guard::{authority, Request, Transport};
use crate::transport::ping::{self, Pinged};

/// The registry client of a process: one guarded transport, one token cache.
pub struct Registry {
    transport: Transport,
    tokens: TokenCache,
}

/// A repository on a registry, checked against the network policy's scheme rules.
#[derive(Clone, Debug)]
pub struct Target {
    pub registry: RegistryUrl,
    /// `scheme://host[:port]/` of the registry API.
    pub base: Url,
    pub repository: String,
    pub image: ImageRef,
}

impl Target {
    pub fn is_docker_hub(&self) -> bool {
        self.registry.is_docker_hub()
    }

    /// The host the registry was given as, for per-registry hints.
    pub fn host(&self) -> String {
        self.registry.host().to_string()
    }

    fn plain_http_host(&self) -> Option<String> {
        (self.base.scheme() == "http").then(|| self.base.host_str().unwrap_or_default().to_owned())
    }
}

/// Whether a session may reuse cached tokens. A preflight must prove the credentials
/// now, so it asks the token server afresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenReuse {
    Fresh,
    Cached,
}

impl Registry {
    pub fn new(policy: NetworkPolicy) -> Result<Self, RegistryError> {
        Ok(Registry {
            transport: Transport::new(policy)?,
            tokens: TokenCache::default(),
        })
    }

    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Binds an image to the registry its credentials are for. An image that names a
    /// different registry host is refused; one that names none lives on `registry`.
    pub fn target(
        &self,
        registry: &RegistryUrl,
        image: &ImageRef,
    ) -> Result<Target, RegistryError> {
        if let Some(domain) = image.domain() {
            if !registry.matches_domain(domain) {
                return Err(RegistryError::InvalidUrl(format!(
                    "the image names the registry {domain}, but the registry URL is {registry}: use one registry for both, or leave the host out of the image"
                )));
            }
        }
        let host = registry.host().to_string();
        let insecure = self.transport.policy().is_insecure(&host, registry.port());
        let scheme = match (registry.scheme(), insecure) {
            (Some(Scheme::Http), true) | (None, true) => "http",
            (Some(Scheme::Http), false) => {
                return Err(RegistryError::InvalidUrl(format!(
                    "plain HTTP to {} is not allowed; only hosts in BERTH_REGISTRY_INSECURE are reached without TLS",
                    registry.authority()
                )))
            }
            (Some(Scheme::Https), _) | (None, false) => "https",
        };
        let base =
            Url::parse(&format!("{scheme}://{}/", registry.api_authority())).map_err(|e| {
                RegistryError::InvalidUrl(format!("the registry URL is not valid: {e}"))
            })?;
        Ok(Target {
            registry: registry.clone(),
            base,
            repository: image.repository_on(registry.is_docker_hub()),
            image: image.clone(),
        })
    }

    /// The target an image names by itself (Docker Hub when it names no host).
    pub fn target_of(&self, image: &ImageRef) -> Result<Target, RegistryError> {
        let registry: RegistryUrl = image
            .registry()
            .parse()
            .map_err(|e: berth_types::RegistryUrlError| RegistryError::InvalidUrl(e.to_string()))?;
        self.target(&registry, image)
    }

    pub fn session<'r>(
        &'r self,
        target: &'r Target,
        creds: Option<Credentials>,
        reuse: TokenReuse,
    ) -> Session<'r> {
        Session {
            registry: self,
            target,
            creds,
            reuse,
            auth: AuthState::Anonymous,
        }
    }
}

/// What the auth step did, for reports.
#[derive(Debug)]
pub struct Authenticated {
    pub status: u16,
    pub detail: String,
}

/// A conversation with one repository.
pub struct Session<'r> {
    registry: &'r Registry,
    target: &'r Target,
    creds: Option<Credentials>,
    reuse: TokenReuse,
    auth: AuthState,
}

impl<'r> Session<'r> {
    /// An independent session with this one's authorization, for parallel downloads.
    pub fn fork(&self) -> Session<'r> {
        Session {
            registry: self.registry,
            target: self.target,
            creds: self.creds.clone(),
            reuse: self.reuse,
            auth: self.auth.clone(),
        }
    }

    pub fn target(&self) -> &Target {
        self.target
    }

    pub fn has_credentials(&self) -> bool {
        self.creds.is_some()
    }

    /// Were credentials presented and accepted (a token issued for them, or Basic
    /// accepted by `/v2/`)?
    pub fn credentials_accepted(&self) -> bool {
        self.creds.is_some() && !matches!(self.auth, AuthState::Anonymous)
    }

    /// Is `url` on the registry itself (same scheme, host and port)?
    fn is_registry(&self, url: &Url) -> bool {
        url.scheme() == self.target.base.scheme()
            && url.host() == self.target.base.host()
            && url.port_or_known_default() == self.target.base.port_or_known_default()
    }

    fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.target.repository)
    }

    /// Step 1: `GET /v2/`.
    pub async fn ping(&self) -> Result<Pinged, RegistryError> {
        ping::ping(
            &self.registry.transport,
            &self.target.base,
            self.target.plain_http_host().as_deref(),
        )
        .await
    }

    /// Step 2: answer the challenges `/v2/` gave. `None` when no challenge was made.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate(
        &mut self,
        challenges: &[Challenge],
    ) -> Result<Option<Authenticated>, RegistryError> {
        if let Some(c) = challenges
            .iter()
            .find(|c| c.scheme == ChallengeScheme::Bearer)
        {
            let ch =
                BearerChallenge::from_challenge(c, &self.target.base, &self.registry.transport)?;
            let scopes = vec![self.pull_scope()];
            return self.bearer(ch, scopes).await.map(Some);
        }
        if challenges
            .iter()
            .any(|c| c.scheme == ChallengeScheme::Basic)
        {
            return self.basic().await.map(Some);
        }
        if challenges.is_empty() {
            return Ok(None);
        }
        Err(RegistryError::Challenge(
            "the registry asks for an authentication scheme other than Basic or Bearer".into(),
        ))
    }

    async fn bearer(
        &mut self,
        ch: BearerChallenge,
        scopes: Vec<String>,
    ) -> Result<Authenticated, RegistryError> {
        let key = self.registry.tokens.key(&ch, &scopes, self.creds.as_ref());
        if self.reuse == TokenReuse::Cached {
            if let Some(token) = self.registry.tokens.get(&key) {
                self.auth = AuthState::Bearer { scopes, token };
                return Ok(Authenticated {
                    status: 200,
                    detail: "cached token".into(),
                });
            }
        }
        let fetched = bearer::fetch(
            &self.registry.transport,
            &self.target.base,
            &ch,
            &scopes,
            self.creds.as_ref(),
        )
        .await?;
        let detail = format!(
            "{} token from {} ({}, expires in {} s)",
            if self.creds.is_some() {
                "authenticated"
            } else {
                "anonymous"
            },
            authority(&ch.realm),
            fetched.method,
            fetched.token.expires_in.as_secs()
        );
        self.registry.tokens.put(key, fetched.token.clone());
        self.auth = AuthState::Bearer {
            scopes,
            token: fetched.token,
        };
        Ok(Authenticated {
            status: fetched.status,
            detail,
        })
    }

    async fn basic(&mut self) -> Result<Authenticated, RegistryError> {
        let Some(creds) = &self.creds else {
            return Err(RegistryError::Unauthorized {
                status: 401,
                body: None,
                credentials_accepted: false,
            });
        };
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, creds.basic_header());
        let url = self.url("/v2/")?;
        let (resp, _) = self
            .registry
            .transport
            .send(self.request(Method::GET, url, headers))
            .await?;
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Err(RegistryError::BasicRejected { status });
        }
        self.auth = AuthState::Basic;
        Ok(Authenticated {
            status,
            detail: "Basic credentials accepted by /v2/".into(),
        })
    }

    fn url(&self, path: &str) -> Result<Url, RegistryError> {
        self.target
            .base
            .join(path)
            .map_err(|e| RegistryError::InvalidUrl(e.to_string()))
    }

    fn request(&self, method: Method, url: Url, headers: HeaderMap) -> Request {
        Request {
            method,
            url,
            headers,
            body: None,
            plain_http_host: self.target.plain_http_host(),
        }
    }

    fn auth_header(&self) -> Option<HeaderValue> {
        match &self.auth {
            AuthState::Anonymous => None,
            AuthState::Basic => self.creds.as_ref().map(Credentials::basic_header),
            AuthState::Bearer { token, .. } => Some(bearer_header(&token.secret)),
        }
    }

    /// An authorized request to `path` (under the registry base). A 401 carrying a
    /// challenge we have not answered yet, or `insufficient_scope` naming a scope we
    /// did not ask for, is answered once and the request retried.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        accept: &[&str],
    ) -> Result<Response, RegistryError> {
        self.send_with(method, path, accept, &HeaderMap::new())
            .await
    }

    /// [`Session::send`] with extra request headers (e.g. `Range`).
    pub async fn send_with(
        &mut self,
        method: Method,
        path: &str,
        accept: &[&str],
        extra: &HeaderMap,
    ) -> Result<Response, RegistryError> {
        let url = self.url(path)?;
        let mut retried = false;
        loop {
            let mut headers = extra.clone();
            if !accept.is_empty() {
                let v = HeaderValue::from_str(&accept.join(", "))
                    .map_err(|_| RegistryError::Protocol("bad Accept header".into()))?;
                headers.insert(ACCEPT, v);
            }
            if let Some(a) = self.auth_header() {
                headers.insert(AUTHORIZATION, a);
            }
            let (resp, answered_by) = self
                .registry
                .transport
                .send(self.request(method.clone(), url.clone(), headers))
                .await?;
            if resp.status().as_u16() != 401 || retried {
                return Ok(resp);
            }
            // Credentials go only to the registry they were saved for (and to the
            // realm its own challenge names): a 401 from the host a redirect led to
            // is not answered.
            if !self.is_registry(&answered_by) {
                return Err(RegistryError::ForeignChallenge {
                    host: authority(&answered_by),
                });
            }
            let challenges = challenge::parse_all(
                resp.headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let pull = self.pull_scope();
            let (c, scopes) =
                match on_unauthorized(&self.auth, &challenges, self.creds.is_some(), &pull) {
                    Answer::GiveUp => return Ok(resp),
                    Answer::Basic => {
                        self.basic().await?;
                        retried = true;
                        continue;
                    }
                    Answer::Bearer { challenge, scopes } => (challenge, scopes),
                };
            let ch =
                BearerChallenge::from_challenge(c, &self.target.base, &self.registry.transport)?;
            tracing::debug!(?scopes, "answering a challenge and retrying once");
            self.bearer(ch, scopes).await?;
            retried = true;
        }
    }
}
