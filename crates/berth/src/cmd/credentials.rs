//! Credentials for pullers berth does not run, read from a berth server with a
//! project token (`berth project token create`):
//! - `berth credential-helper` (also run as `docker-credential-berth`, the name
//!   Docker, skopeo, podman and crane look for): the Docker credential-helper
//!   protocol, `get` with the registry host on stdin.
//! - `berth credential-provider`: a kubelet image credential provider (the
//!   `credentialprovider.kubelet.k8s.io/v1` exec protocol: a request with the image
//!   on stdin, the credentials for its repository on stdout).

use std::collections::BTreeMap;
use std::io::Read;

use berth_api::{CredentialsAnswer, CredentialsRequest, ErrorCode};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::api::{Api, Connection};
use super::{CliError, Outcome};

/// Where the project token comes from.
#[derive(clap::Args, Clone, Default)]
pub struct TokenSource {
    /// A file holding the project token (berth_pt_...)
    #[arg(long, env = "BERTH_PROJECT_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The service whose credentials to use when several of the project's
    /// services hold different ones for a registry
    #[arg(long, env = "BERTH_SERVICE")]
    pub service: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum HelperCommand {
    /// Print the credentials for the registry host read from stdin
    #[command(after_help = "Examples:\n  echo ghcr.io | docker-credential-berth get")]
    Get,
    /// Refused: berth's credentials are saved in berth
    #[command(
        after_help = "Examples:\n  berth --project web service registry set api --registry-password-stdin < token.txt   # instead"
    )]
    Store,
    /// Refused: berth's credentials are removed in berth
    #[command(
        after_help = "Examples:\n  berth --project web service registry remove api   # instead"
    )]
    Erase,
    /// Lists nothing (berth answers per registry)
    #[command(after_help = "Examples:\n  docker-credential-berth list")]
    List,
}

/// The token: the file, else BERTH_PROJECT_TOKEN.
fn token(source: &TokenSource) -> Result<SecretString, CliError> {
    if let Some(path) = &source.token_file {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| CliError::Usage(format!("the token file {}: {e}", path.display())))?,
        );
        return Ok(SecretString::from(text.trim().to_owned()));
    }
    std::env::var("BERTH_PROJECT_TOKEN")
        .map(SecretString::from)
        .map_err(|_| {
            CliError::Usage(
                "no project token: set BERTH_PROJECT_TOKEN or BERTH_PROJECT_TOKEN_FILE (berth project token create makes one)"
                    .into(),
            )
        })
}

/// Asks the server; `None` when it has no credentials for this.
async fn ask(
    conn: &Connection,
    source: &TokenSource,
    mut body: CredentialsRequest,
) -> Result<Option<CredentialsAnswer>, CliError> {
    body.service.clone_from(&source.service);
    let api = Api::with_token(conn, token(source)?)?;
    match api
        .call(Method::POST, "/v1/registry-credentials", Some(&body))
        .await?
    {
        Ok(answer) => Ok(Some(answer.view)),
        Err(f) if f.code() == Some(ErrorCode::NoCredentials) => Ok(None),
        Err(f) => Err(f.into()),
    }
}

/// What a Docker credential helper prints for `get` (the protocol's names; its
/// keys in the order they have always been printed).
#[derive(Serialize)]
struct HelperAnswer<'a> {
    #[serde(rename = "Secret")]
    secret: &'a str,
    #[serde(rename = "ServerURL")]
    server_url: &'a str,
    #[serde(rename = "Username")]
    username: &'a str,
}

fn stdin_text() -> Result<zeroize::Zeroizing<String>, CliError> {
    let mut text = zeroize::Zeroizing::new(String::new());
    std::io::stdin().take(1 << 20).read_to_string(&mut text)?;
    Ok(text)
}

pub async fn helper(
    conn: &Connection,
    source: &TokenSource,
    cmd: HelperCommand,
) -> Result<Outcome, CliError> {
    match cmd {
        HelperCommand::Get => {
            let host = stdin_text()?.trim().to_owned();
            let question = CredentialsRequest {
                registry: Some(host.clone()),
                ..Default::default()
            };
            match ask(conn, source, question).await? {
                Some(v) => {
                    let out = zeroize::Zeroizing::new(serde_json::to_string(&HelperAnswer {
                        secret: v.password.expose_secret(),
                        server_url: &host,
                        username: &v.username,
                    })?);
                    println!("{}", out.as_str());
                    Ok(Outcome::Ok)
                }
                None => {
                    // The protocol's own words for "none": callers go anonymous.
                    println!("credentials not found in native keychain");
                    Ok(Outcome::Failed)
                }
            }
        }
        HelperCommand::Store | HelperCommand::Erase => {
            let _ = stdin_text()?;
            eprintln!("berth keeps its credentials itself: save them with berth service registry set, remove them with berth service registry remove");
            Ok(Outcome::Failed)
        }
        HelperCommand::List => {
            println!("{{}}");
            Ok(Outcome::Ok)
        }
    }
}

/// The kubelet's exec protocol versions this provider speaks (it answers in the
/// request's).
const PROVIDER_VERSIONS: &[&str] = &[
    "credentialprovider.kubelet.k8s.io/v1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
    "credentialprovider.kubelet.k8s.io/v1alpha1",
];

/// `host/repository` of an image reference: the key the kubelet matches images
/// against (the tag and digest left out).
fn repository_key(image: &str) -> Result<String, CliError> {
    let parsed: berth_types::ImageRef = image
        .parse()
        .map_err(|e| CliError::Other(anyhow::anyhow!("the image {image:?}: {e}")))?;
    let host = parsed.registry().to_owned();
    let hub = host == berth_types::DOCKER_HUB;
    Ok(format!("{host}/{}", parsed.repository_on(hub)))
}

/// The kubelet's `CredentialProviderRequest` (only what this provider reads; each
/// field optional so that a wrong request is told apart from a broken one).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderRequest {
    api_version: Option<String>,
    kind: Option<String>,
    image: Option<String>,
}

/// The `CredentialProviderResponse` (keys in the order they have always been
/// printed).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProviderResponse<'a> {
    api_version: &'a str,
    auth: BTreeMap<String, ProviderAuth<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_duration: Option<String>,
    cache_key_type: &'static str,
    kind: &'static str,
}

#[derive(Serialize)]
struct ProviderAuth<'a> {
    password: &'a str,
    username: &'a str,
}

pub async fn provider(conn: &Connection, source: &TokenSource) -> Result<Outcome, CliError> {
    let text = stdin_text()?;
    let request: ProviderRequest = serde_json::from_str(&text)
        .map_err(|e| CliError::Usage(format!("stdin is not a CredentialProviderRequest: {e}")))?;
    let version = request.api_version.as_deref().unwrap_or_default();
    if !PROVIDER_VERSIONS.contains(&version)
        || request.kind.as_deref() != Some("CredentialProviderRequest")
    {
        return Err(CliError::Usage(format!(
            "not a CredentialProviderRequest of a version this provider speaks ({})",
            PROVIDER_VERSIONS.join(", ")
        )));
    }
    let image = request
        .image
        .ok_or_else(|| CliError::Usage("the request names no image".into()))?;
    let key = repository_key(&image)?;
    let question = CredentialsRequest {
        image: Some(image),
        ..Default::default()
    };
    let answer = ask(conn, source, question).await?;
    let mut response = ProviderResponse {
        api_version: version,
        auth: BTreeMap::new(),
        cache_duration: None,
        // Per repository: another repository on the same registry may be another
        // service's, with other credentials.
        cache_key_type: "Image",
        kind: "CredentialProviderResponse",
    };
    if let Some(v) = &answer {
        response.cache_duration = Some(format!("{}s", v.cache_seconds));
        response.auth.insert(
            key,
            ProviderAuth {
                password: v.password.expose_secret(),
                username: &v.username,
            },
        );
    }
    let out = zeroize::Zeroizing::new(serde_json::to_string(&response)?);
    println!("{}", out.as_str());
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn repository_keys() {
        for (image, key) in [
            ("ghcr.io/acme/api:v2", "ghcr.io/acme/api"),
            ("nginx", "docker.io/library/nginx"),
            ("127.0.0.1:5000/team/app@sha256:0000000000000000000000000000000000000000000000000000000000000000", "127.0.0.1:5000/team/app"),
        ] {
            assert_eq!(super::repository_key(image).unwrap(), key);
        }
    }
}
