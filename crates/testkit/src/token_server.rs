//! A token server for `docker-registry`'s token auth (distribution "Token
//! Authentication Specification"): ES256 JWTs whose certificate rides in `x5c`,
//! trusted by the registry through `rootcertbundle`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, RawForm, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::json;

pub const SERVICE: &str = "berth-test-registry";
pub const ISSUER: &str = "berth-test-issuer";

/// What a user may do.
#[derive(Clone, Debug)]
pub enum Grant {
    /// pull and push on every repository.
    All,
    /// pull on these repositories only.
    Pull(Vec<String>),
    /// A valid login that may do nothing.
    Nothing,
}

#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password: String,
    pub grant: Grant,
}

impl User {
    pub fn new(name: &str, password: &str, grant: Grant) -> Self {
        User {
            name: name.into(),
            password: password.into(),
            grant,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenServerMode {
    /// GET with Basic auth, and POST (OAuth2) too.
    GetAndPost,
    /// Only the OAuth2 POST; a GET answers 404.
    OAuth2Only,
}

struct Inner {
    users: std::sync::Mutex<Vec<User>>,
    /// Repositories anyone may pull without credentials.
    public: Vec<String>,
    key: SigningKey,
    cert_der: Vec<u8>,
    oauth2_only: AtomicBool,
    requests: AtomicUsize,
    /// Every token handed out, for tests that grep for them.
    issued: std::sync::Mutex<Vec<String>>,
}

/// A running token server on 127.0.0.1, on its own thread and runtime.
pub struct TokenServer {
    inner: Arc<Inner>,
    cert_pem: String,
    port: u16,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl TokenServer {
    pub fn start(users: Vec<User>, public: Vec<String>, mode: TokenServerMode) -> Self {
        let key_pair =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("keygen");
        let params = rcgen::CertificateParams::new(vec!["berth-test-token-signer".to_string()])
            .expect("params");
        let cert = params.self_signed(&key_pair).expect("self-signed cert");
        let key = SigningKey::from_pkcs8_der(&key_pair.serialize_der()).expect("p256 key");
        let inner = Arc::new(Inner {
            users: std::sync::Mutex::new(users),
            public,
            key,
            cert_der: cert.der().to_vec(),
            oauth2_only: AtomicBool::new(mode == TokenServerMode::OAuth2Only),
            requests: AtomicUsize::new(0),
            issued: Default::default(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let state = inner.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let app = Router::new()
                    .route("/token", get(token_get).post(token_post))
                    .with_state(state);
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        TokenServer {
            inner,
            cert_pem: cert.pem(),
            port,
            _shutdown: tx,
        }
    }

    /// Switches modes, e.g. to OAuth2-only once images were pushed (skopeo needs GET).
    pub fn set_mode(&self, mode: TokenServerMode) {
        self.inner
            .oauth2_only
            .store(mode == TokenServerMode::OAuth2Only, Ordering::SeqCst);
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Every token this server issued (registry bearer tokens are secrets too).
    pub fn issued(&self) -> Vec<String> {
        self.inner.issued.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Changes a user's password, as a registry's admin would (a rotated or
    /// revoked token).
    pub fn set_password(&self, name: &str, password: &str) {
        for u in self.inner.users.lock().unwrap().iter_mut() {
            if u.name == name {
                u.password = password.into();
            }
        }
    }

    /// The first user with [`Grant::All`], for pushing.
    pub fn admin(&self) -> (String, String) {
        self.inner
            .users
            .lock()
            .unwrap()
            .iter()
            .find(|u| matches!(u.grant, Grant::All))
            .map(|u| (u.name.clone(), u.password.clone()))
            .unwrap_or_default()
    }
}

fn unauthorized(msg: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"errors": [{"code": "UNAUTHORIZED", "message": msg}]})),
    )
        .into_response()
}

async fn token_get(
    State(s): State<Arc<Inner>>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    if s.oauth2_only.load(Ordering::SeqCst) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let login = match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        None => None,
        Some(v) => {
            let Some(b64) = v.strip_prefix("Basic ") else {
                return unauthorized("only Basic auth here");
            };
            let decoded =
                String::from_utf8(STANDARD.decode(b64).unwrap_or_default()).unwrap_or_default();
            match decoded.split_once(':') {
                Some((u, p)) => Some((u.to_owned(), p.to_owned())),
                None => return unauthorized("malformed Basic auth"),
            }
        }
    };
    let scopes: Vec<String> = q
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .collect();
    issue(&s, login, &scopes, "token")
        .unwrap_or_else(|| unauthorized("invalid username or password"))
}

/// The user a refresh token stands for (Azure's and Docker's identity tokens).
pub const IDENTITY_USER: &str = "00000000-0000-0000-0000-000000000000";

async fn token_post(State(s): State<Arc<Inner>>, RawForm(body): RawForm) -> Response {
    s.requests.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = url_decode(&body);
    let login = match form.get("grant_type").map(String::as_str) {
        Some("password") => match (form.get("username"), form.get("password")) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        },
        // Azure's refresh tokens (`az acr login --expose-token`): the user named
        // `00000000-0000-0000-0000-000000000000` whose password is the token, and
        // only through this grant.
        Some("refresh_token") => form
            .get("refresh_token")
            .map(|t| (IDENTITY_USER.to_owned(), t.clone())),
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "unsupported_grant_type"})),
            )
                .into_response()
        }
    };
    if form.get("grant_type").map(String::as_str) == Some("password")
        && login.as_ref().is_some_and(|(u, _)| u == IDENTITY_USER)
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_grant", "error_description": "a refresh token goes in grant_type=refresh_token"})),
        )
            .into_response();
    }
    let scopes: Vec<String> = form
        .get("scope")
        .map(|s| s.split(' ').map(str::to_owned).collect())
        .unwrap_or_default();
    match issue(&s, login, &scopes, "access_token") {
        Some(r) => r,
        None => (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_grant", "error_description": "invalid username or password"})),
        )
            .into_response(),
    }
}

fn url_decode(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// A signed token for `scopes`, or `None` when the login is wrong.
fn issue(
    s: &Inner,
    login: Option<(String, String)>,
    scopes: &[String],
    field: &str,
) -> Option<Response> {
    let user = match &login {
        None => None,
        Some((u, p)) => {
            let users = s.users.lock().unwrap();
            match users.iter().find(|x| &x.name == u && &x.password == p) {
                Some(user) => Some(user.clone()),
                None => return None,
            }
        }
    };
    let mut access = Vec::new();
    for scope in scopes {
        let mut parts = scope.splitn(3, ':');
        let (Some(typ), Some(name), Some(actions)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if typ != "repository" {
            continue;
        }
        let wanted: Vec<&str> = actions.split(',').collect();
        let granted: Vec<&str> = wanted
            .into_iter()
            .filter(|a| match user.as_ref().map(|u| &u.grant) {
                Some(Grant::All) => true,
                Some(Grant::Pull(repos)) => *a == "pull" && repos.iter().any(|r| r == name),
                Some(Grant::Nothing) => false,
                None => *a == "pull" && s.public.iter().any(|r| r == name),
            })
            .collect();
        access.push(json!({"type": "repository", "name": name, "actions": granted}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&s.cert_der)]});
    let claims = json!({
        "iss": ISSUER,
        "sub": user.as_ref().map(|u| u.name.as_str()).unwrap_or(""),
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("{:x}", rand::random::<u64>()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig: Signature = s.key.sign(signing_input.as_bytes());
    let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    s.issued.lock().unwrap().push(jwt.clone());
    Some(
        axum::Json(json!({field: jwt, "expires_in": 300, "issued_at": "2026-01-01T00:00:00Z"}))
            .into_response(),
    )
}
