//! The API client of the CLI: where the server is (flag, env, or the file written by
//! `berth login`), the token, and one way to call a route and report its errors.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
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

/// A failed call: the server's `{code, message}` and the whole body.
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub body: Value,
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

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<reqwest::Response, CliError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.expose_secret());
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send()
            .await
            .map_err(|e| CliError::Other(anyhow::anyhow!("cannot reach {}: {e}", self.base)))
    }

    /// Calls a JSON route; a non-2xx answer is an [`ApiFailure`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Result<Value, ApiFailure>, CliError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(Ok(value));
        }
        Ok(Err(ApiFailure {
            status,
            code: value["code"].as_str().unwrap_or("error").to_owned(),
            message: value["message"]
                .as_str()
                .unwrap_or("the server refused the request")
                .to_owned(),
            body: value,
        }))
    }

    /// Calls a route and turns a failure into one clear error line.
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, CliError> {
        self.call(method, path, body).await?.map_err(|f| {
            CliError::Other(anyhow::anyhow!("{} ({}): {}", f.code, f.status, f.message))
        })
    }
}

/// Prints `value` as one JSON document.
pub fn print_json(value: &Value) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
