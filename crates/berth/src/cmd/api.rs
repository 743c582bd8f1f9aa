//! The API client of the CLI: where the server is (flag, env, or the file written by
//! `berth login`), the token, and one way to call a route and report its errors.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use berth_api::{ErrorBody, ErrorCode};
use berth_registry::PreflightReport;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::CliError;

/// Server, token and project, from global flags and env.
#[derive(clap::Args, Clone, Debug)]
pub struct Connection {
    /// The berth server, e.g. http://127.0.0.1:8440
    #[arg(long, global = true, env = "BERTH_SERVER")]
    pub server: Option<String>,
    /// API token (prefer `berth login`, or BERTH_TOKEN)
    #[arg(long, global = true, env = "BERTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The project of project-scoped commands
    #[arg(long, global = true, env = "BERTH_PROJECT")]
    pub project: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Saved {
    pub server: String,
    pub token: String,
}

impl Drop for Saved {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.token.zeroize();
    }
}

/// `$XDG_CONFIG_HOME/berth/login.json`, or `~/.config/berth/login.json`.
pub fn login_file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".config")
        });
    base.join("berth").join("login.json")
}

pub fn save_login(server: &str, token: &SecretString) -> Result<PathBuf, CliError> {
    let path = login_file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let saved = Saved {
        server: server.trim_end_matches('/').to_owned(),
        token: token.expose_secret().to_owned(),
    };
    let text = zeroize::Zeroizing::new(serde_json::to_string(&saved)?);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text.as_bytes())?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

pub struct Api {
    base: String,
    token: SecretString,
    http: reqwest::Client,
}

/// An answer of the API: read as its `berth-api` type for the human view, and
/// kept as the server sent it, which is what `--json` prints (the API's own shape,
/// field for field, whatever this berth's types know of it).
pub struct Answer<T> {
    pub view: T,
    sent: Value,
}

impl<T> Answer<T> {
    /// Prints the answer as the server sent it, as one JSON document.
    pub fn print_json(&self) -> Result<(), CliError> {
        print_json(&self.sent)
    }

    /// The same answer read through a part of its view.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            view: f(self.view),
            sent: self.sent,
        }
    }
}

/// A failed call: its status, the server's error body (`None` when the answer
/// was not the API's error shape, e.g. a proxy's page), and the body as sent.
pub struct ApiFailure {
    pub status: u16,
    pub error: Option<ErrorBody>,
    sent: Value,
}

impl ApiFailure {
    pub fn code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }

    pub fn message(&self) -> &str {
        self.error
            .as_ref()
            .map_or("the server refused the request", |e| e.message.as_str())
    }

    /// The preflight a refused save ran (a 422's).
    pub fn preflight(&self) -> Option<&PreflightReport> {
        self.error.as_ref()?.preflight.as_deref()
    }

    /// Prints the body as the server sent it, as one JSON document.
    pub fn print_json(&self) -> Result<(), CliError> {
        print_json(&self.sent)
    }
}

/// `code (status): message`, the one line a failed call ends a command with.
impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.code().map_or("error", ErrorCode::as_str);
        write!(f, "{code} ({}): {}", self.status, self.message())
    }
}

impl From<ApiFailure> for CliError {
    fn from(f: ApiFailure) -> Self {
        CliError::Other(anyhow::anyhow!("{f}"))
    }
}

impl Api {
    pub fn connect(c: &Connection) -> Result<Self, CliError> {
        let saved: Option<Saved> = std::fs::read_to_string(login_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let token = c
            .token
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.token.clone()))
            .ok_or_else(|| {
                CliError::Usage(
                    "no token: pass --token, set BERTH_TOKEN, or run `berth login`".into(),
                )
            })?;
        Api::with_token(c, SecretString::from(token))
    }

    /// The server as `connect` finds it (flag, BERTH_SERVER, `berth login`), with
    /// a token given otherwise (a project token).
    pub fn with_token(c: &Connection, token: SecretString) -> Result<Self, CliError> {
        let saved: Option<Saved> = std::fs::read_to_string(login_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let base = c
            .server
            .clone()
            .or_else(|| saved.as_ref().map(|s| s.server.clone()))
            .ok_or_else(|| {
                CliError::Usage(
                    "no server: pass --server, set BERTH_SERVER, or run `berth login`".into(),
                )
            })?;
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: reqwest::Client::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .build()?,
        })
    }

    pub fn project(c: &Connection) -> Result<String, CliError> {
        c.project.clone().ok_or_else(|| {
            CliError::Usage("no project: pass --project or set BERTH_PROJECT".into())
        })
    }

    /// A request to a route that is not JSON (logs), or whose status alone counts.
    pub async fn send(&self, method: Method, path: &str) -> Result<reqwest::Response, CliError> {
        self.request(method, path, None).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<reqwest::Response, CliError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        req.send()
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("cannot reach {}: {e}", self.base)))
    }

    /// Calls a JSON route; a non-2xx answer is an [`ApiFailure`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Result<Answer<T>, ApiFailure>, CliError> {
        let body = body.map(serde_json::to_vec).transpose()?;
        let resp = self.request(method, path, body).await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let sent: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !(200..300).contains(&status) {
            return Ok(Err(ApiFailure {
                status,
                error: serde_json::from_value(sent.clone()).ok(),
                sent,
            }));
        }
        let view = serde_json::from_value(sent.clone()).map_err(|e| {
            CliError::Other(anyhow::anyhow!(
                "the server's answer to {path} is not what this berth reads: {e}"
            ))
        })?;
        Ok(Ok(Answer { view, sent }))
    }

    /// GET; a failure is one clear error line.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, CliError> {
        Ok(self.call(Method::GET, path, None::<&()>).await??)
    }

    /// DELETE; a failure is one clear error line.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<Answer<T>, CliError> {
        Ok(self.call(Method::DELETE, path, None::<&()>).await??)
    }

    /// POST `body`; a failure is one clear error line.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &(impl Serialize + ?Sized),
    ) -> Result<Answer<T>, CliError> {
        Ok(self.call(Method::POST, path, Some(body)).await??)
    }
}

/// Prints `value` as one JSON document.
fn print_json(value: &Value) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
