//! Registry credentials from a Docker client's `config.json`, so that a user who
//! ran `docker login` types nothing: `credHelpers` (per registry) and
//! `credsStore` (for all) through the docker-credential-helpers protocol
//! (`docker-credential-NAME get`, the server on stdin, `{"ServerURL", "Username",
//! "Secret"}` on stdout), and `auths` (base64 `auth`, or `username`/`password`).
//!
//! Written here rather than with the `docker_credential` crate: that one reads
//! only `$DOCKER_CONFIG`/`$HOME/.docker` (not a path the user names), returns the
//! secret as a plain `String`, and puts a failing helper's stdout (which can hold
//! the secret) in its error text.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use super::CliError;

// Docker Hub's key in `auths` and the name its helpers are asked for.
use berth_types::DOCKER_HUB_CONFIG_KEY as DOCKER_HUB;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: std::collections::BTreeMap<String, String>,
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<SecretString>,
    username: Option<String>,
    password: Option<SecretString>,
    identitytoken: Option<SecretString>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: SecretString,
}

/// A user name and its password or token, from the config.
pub struct Found {
    pub username: String,
    pub password: SecretString,
    /// Where it came from, to say so (`credHelpers: pass`, `auths`...).
    pub source: String,
}

/// The config file: `path`, else `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn config_path(path: Option<&Path>) -> PathBuf {
    if let Some(p) = path {
        return p.to_owned();
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(dir).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".docker/config.json")
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// `host[:port]` of an `auths` key (`https://ghcr.io`, `ghcr.io`,
/// `https://index.docker.io/v1/`), lower-cased.
fn key_host(key: &str) -> String {
    let rest = key.split_once("://").map_or(key, |(_, r)| r);
    rest.split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

fn same_registry(key: &str, host: &str) -> bool {
    let k = key_host(key);
    k == host || (is_docker_hub(&k) && is_docker_hub(host))
}

/// The credentials for the registry `host` (`host[:port]`; `docker.io` for
/// Docker Hub) in the config at `path`.
pub fn credentials_for(path: &Path, host: &str) -> Result<Found, CliError> {
    let host = host.to_ascii_lowercase();
    let text = std::fs::read(path).map_err(|e| {
        CliError::Usage(format!(
            "cannot read the Docker config {}: {e}",
            path.display()
        ))
    })?;
    let config: DockerConfig = serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("{} is not a Docker config: {e}", path.display())))?;
    let server = if is_docker_hub(&host) {
        DOCKER_HUB.to_owned()
    } else {
        host.clone()
    };
    if let Some((_, helper)) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| same_registry(k, &host))
    {
        return from_helper(helper, &server).map(|(username, password)| Found {
            username,
            password,
            source: format!("credHelpers: docker-credential-{helper}"),
        });
    }
    if let Some((key, entry)) = config.auths.iter().find(|(k, _)| same_registry(k, &host)) {
        if let Some(found) = from_auth_entry(entry)? {
            return Ok(Found {
                source: format!("auths[{key}]"),
                ..found
            });
        }
    }
    if let Some(store) = &config.creds_store {
        return from_helper(store, &server).map(|(username, password)| Found {
            username,
            password,
            source: format!("credsStore: docker-credential-{store}"),
        });
    }
    Err(CliError::Usage(format!(
        "{} has no credentials for {host} (run `docker login {host}` first)",
        path.display()
    )))
}

fn from_auth_entry(entry: &AuthEntry) -> Result<Option<Found>, CliError> {
    if let Some(auth) = entry
        .auth
        .as_ref()
        .filter(|a| !a.expose_secret().is_empty())
    {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(auth.expose_secret().trim())
                .map_err(|_| {
                    CliError::Usage("the auth value in the Docker config is not base64".into())
                })?,
        );
        let text = std::str::from_utf8(&decoded).map_err(|_| {
            CliError::Usage("the auth value in the Docker config is not text".into())
        })?;
        let (user, pass) = text.split_once(':').ok_or_else(|| {
            CliError::Usage("the auth value in the Docker config is not user:password".into())
        })?;
        return Ok(Some(Found {
            username: user.to_owned(),
            password: SecretString::from(pass.to_owned()),
            source: String::new(),
        }));
    }
    match (&entry.username, &entry.password, &entry.identitytoken) {
        (Some(u), Some(p), _) => Ok(Some(Found {
            username: u.clone(),
            password: p.clone(),
            source: String::new(),
        })),
        // An identity token (a refresh token, as `az acr login` writes): the
        // registry's OAuth2 user with the token as its password.
        (_, _, Some(t)) => Ok(Some(Found {
            username: "00000000-0000-0000-0000-000000000000".into(),
            password: t.clone(),
            source: String::new(),
        })),
        _ => Ok(None),
    }
}

/// Asks `docker-credential-NAME get` for `server`. Its output is never shown: on
/// failure only the exit status and its stderr's first line are.
fn from_helper(name: &str, server: &str) -> Result<(String, SecretString), CliError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(CliError::Usage(format!(
            "{name:?} is not a credential helper name"
        )));
    }
    let bin = format!("docker-credential-{name}");
    let mut child = Command::new(&bin)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CliError::Usage(format!("cannot run {bin}: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes())?;
    }
    // A helper that hangs (a keychain waiting for a click) does not hang berth.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Err(CliError::Usage(format!("{bin} did not answer within 30 s")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        return Err(CliError::Usage(format!(
            "{bin} get failed ({}): {}",
            out.status,
            why.lines().next().unwrap_or("no message")
        )));
    }
    let answer: HelperAnswer = serde_json::from_slice(&stdout)
        .map_err(|_| CliError::Usage(format!("{bin} answered something else than credentials")))?;
    Ok((answer.username, answer.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(config: &str, host: &str) -> Result<(String, String), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, config).unwrap();
        credentials_for(&path, host)
            .map(|f| (f.username, f.password.expose_secret().to_owned()))
            .map_err(|e| match e {
                CliError::Usage(m) => m,
                CliError::Other(e) => e.to_string(),
            })
    }

    #[test]
    fn auths_by_host_in_every_spelling() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let config = format!(
            r#"{{"auths": {{"https://index.docker.io/v1/": {{"auth": "{b64}"}},
                "ghcr.io": {{"username": "bob", "password": "pat"}},
                "https://registry.local:5000": {{"auth": "{b64}"}},
                "myacr.azurecr.io": {{"identitytoken": "refresh"}}}}}}"#
        );
        let ok = |u: &str, p: &str| Ok((u.to_owned(), p.to_owned()));
        assert_eq!(found(&config, "docker.io"), ok("alice", "s3cret"));
        assert_eq!(
            found(&config, "registry-1.docker.io"),
            ok("alice", "s3cret")
        );
        assert_eq!(found(&config, "GHCR.io"), ok("bob", "pat"));
        assert_eq!(found(&config, "registry.local:5000"), ok("alice", "s3cret"));
        assert_eq!(
            found(&config, "myacr.azurecr.io"),
            ok("00000000-0000-0000-0000-000000000000", "refresh")
        );
        let missing = found(&config, "quay.io").unwrap_err();
        assert!(missing.contains("no credentials for quay.io"), "{missing}");
        assert!(found(r#"{"auths": {"x.io": {"auth": "%%%"}}}"#, "x.io").is_err());
        assert!(found("not json", "x.io")
            .unwrap_err()
            .contains("not a Docker config"));
    }
}
