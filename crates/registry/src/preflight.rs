//! The Test Connection preflight: `ping`, `token` (when challenged), `manifest`,
//! each timed and reported, then one stable code and one sentence telling the user
//! what to do. **The whole preflight, DNS included, ends within
//! [`PREFLIGHT_DEADLINE`], whatever the registry does.**

use std::time::{Duration, Instant};

use berth_types::{Digest, ImageRef, RegistryUrl};
use serde::{Deserialize, Serialize};

use crate::client::{Registry, Target, TokenReuse};
use crate::credentials::Credentials;
use crate::error::{Code, RegistryError};
use crate::manifest::{self, host_platform};
pub use crate::open::StepName;
use crate::open::{self, Observer};
use crate::policy::PREFLIGHT_DEADLINE;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Step {
    pub step: StepName,
    pub ok: bool,
    pub status: Option<u16>,
    pub ms: u64,
    pub detail: String,
}

/// The preflight result of CONTRACT.md.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PreflightReport {
    pub ok: bool,
    pub code: Code,
    pub message: String,
    pub digest: Option<Digest>,
    pub duration_ms: u64,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// For a multi-platform image: the platforms it has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// The registry's pull budget (`ratelimit-limit`/`ratelimit-remaining`, as
    /// Docker Hub sends them), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::manifest::RateLimit>,
}

impl PreflightReport {
    /// A report for input refused before any request was made.
    pub fn invalid_url(message: impl Into<String>) -> Self {
        Self::failed_before_any_step(Code::InvalidUrl, message)
    }

    /// A failure decided before any registry request (bad input, or credentials
    /// that could not be turned into what the registry takes).
    pub fn failed_before_any_step(code: Code, message: impl Into<String>) -> Self {
        PreflightReport {
            ok: false,
            code,
            message: message.into(),
            digest: None,
            duration_ms: 0,
            steps: Vec::new(),
            media_type: None,
            platforms: Vec::new(),
            rate_limit: None,
        }
    }
}

/// Parses the user's registry URL and image, or says why not (an `invalid_url`
/// report, made before any request).
pub fn parse(
    registry_url: &str,
    image: &str,
) -> Result<(RegistryUrl, ImageRef), Box<PreflightReport>> {
    let url: RegistryUrl = registry_url
        .parse()
        .map_err(|e: berth_types::RegistryUrlError| {
            PreflightReport::invalid_url(capitalize(&e.to_string()))
        })?;
    let image: ImageRef = image.parse().map_err(|e: berth_types::ReferenceError| {
        PreflightReport::invalid_url(format!("The image reference is not valid: {e}."))
    })?;
    Ok((url, image))
}

/// Binds a parsed registry URL and image (see [`Registry::target`]), or says why not.
pub fn bind(
    registry: &Registry,
    url: &RegistryUrl,
    image: &ImageRef,
) -> Result<Target, Box<PreflightReport>> {
    registry
        .target(url, image)
        .map_err(|e| Box::new(PreflightReport::invalid_url(capitalize(&e.to_string()))))
}

/// Parses and binds the user's registry URL and image.
pub fn target(
    registry: &Registry,
    registry_url: &str,
    image: &str,
) -> Result<Target, Box<PreflightReport>> {
    let (url, image) = parse(registry_url, image)?;
    bind(registry, &url, &image)
}

/// Runs the preflight against `target` with `creds` (or anonymously).
#[tracing::instrument(skip_all, fields(registry = %target.registry, repository = %target.repository))]
pub async fn run(
    registry: &Registry,
    target: &Target,
    creds: Option<Credentials>,
) -> PreflightReport {
    let started = Instant::now();
    let has_creds = creds.is_some();
    let mut progress = Progress::default();
    let outcome = tokio::time::timeout(
        PREFLIGHT_DEADLINE,
        steps(registry, target, creds, &mut progress),
    )
    .await;
    let outcome = match outcome {
        Ok(r) => r,
        Err(_) => {
            if let Some((step, at)) = progress.current.take() {
                progress.steps.push(Step {
                    step,
                    ok: false,
                    status: None,
                    ms: at.elapsed().as_millis() as u64,
                    detail: format!(
                        "no complete answer within {} s",
                        PREFLIGHT_DEADLINE.as_secs()
                    ),
                });
            }
            Err(RegistryError::Timeout)
        }
    };
    let duration_ms = started.elapsed().as_millis() as u64;
    match outcome {
        Ok(resolved) => PreflightReport {
            ok: true,
            code: Code::Ok,
            message: match resolved.platforms.is_empty() {
                true => format!(
                    "Connected: {} resolves to {}.",
                    target.image, resolved.digest
                ),
                false => format!(
                    "Connected: {} resolves to {}, a multi-platform image with {}.",
                    target.image,
                    resolved.digest,
                    host_platform()
                ),
            },
            digest: Some(resolved.digest),
            duration_ms,
            steps: progress.steps,
            media_type: Some(resolved.media_type),
            platforms: resolved.platforms,
            rate_limit: resolved.rate_limit,
        },
        Err(e) => {
            tracing::info!(code = %e.code(), error = %e, "preflight failed");
            PreflightReport {
                ok: false,
                code: e.code(),
                message: explain(&e, target, has_creds),
                digest: None,
                duration_ms,
                steps: progress.steps,
                media_type: None,
                platforms: match e {
                    RegistryError::NoPlatform { available, .. } => available,
                    _ => Vec::new(),
                },
                rate_limit: None,
            }
        }
    }
}

/// The preflight's observer: each step becomes a [`Step`] of the report.
#[derive(Default)]
struct Progress {
    steps: Vec<Step>,
    current: Option<(StepName, Instant)>,
}

impl Observer for Progress {
    fn started(&mut self, step: StepName) {
        self.current = Some((step, Instant::now()));
    }

    fn passed(&mut self, step: StepName, status: Option<u16>, detail: String, took: Duration) {
        self.current = None;
        self.steps.push(Step {
            step,
            ok: true,
            status,
            ms: took.as_millis() as u64,
            detail,
        });
    }

    fn failed(&mut self, step: StepName, e: &RegistryError, took: Duration) {
        self.current = None;
        self.steps.push(Step {
            step,
            ok: false,
            status: e.status(),
            ms: took.as_millis() as u64,
            detail: e.to_string(),
        });
    }
}

async fn steps(
    registry: &Registry,
    target: &Target,
    creds: Option<Credentials>,
    p: &mut Progress,
) -> Result<manifest::Resolved, RegistryError> {
    open::open(registry, target, creds, TokenReuse::Fresh, p)
        .await
        .map(|o| o.resolved)
}

/// One friendly sentence (or two) per failure, with hints for well-known registries.
/// Never includes a secret: only the registry's own error text and our words.
pub fn explain(e: &RegistryError, target: &Target, has_creds: bool) -> String {
    let repo = &target.repository;
    let hint = registry_hint(target);
    let registry_says = |body: &Option<crate::transport::error::RegistryErrorBody>| match body {
        Some(b) => format!(" The registry said: {b}."),
        None => String::new(),
    };
    match e {
        RegistryError::Token { status: 401 | 403, body } => {
            format!("The registry rejected the username or password.{}{hint}", registry_says(body))
        }
        RegistryError::BasicRejected { status: 401 | 403 } => {
            format!("The registry rejected the username or password.{hint}")
        }
        RegistryError::Unauthorized {
            body,
            credentials_accepted: true,
            ..
        } if target.is_docker_hub() => format!(
            "Docker Hub accepted these credentials but refused {repo}: either the repository does not exist, or this account cannot pull it (Docker Hub answers the same for both).{}",
            registry_says(body)
        ),
        RegistryError::Unauthorized {
            body,
            credentials_accepted: true,
            ..
        } => format!(
            "The registry accepted these credentials, but they grant no pull access to {repo}.{}{hint}",
            registry_says(body)
        ),
        RegistryError::Unauthorized { body, .. } if !has_creds => format!(
            "The registry requires credentials to pull {repo}: add a username and password{}.{}",
            if target.is_docker_hub() { " (or check the name: Docker Hub answers the same for a repository that does not exist)" } else { "" },
            registry_says(body)
        ),
        RegistryError::Unauthorized { body, .. } => {
            format!("The registry refused these credentials for {repo}.{}{hint}", registry_says(body))
        }
        RegistryError::Manifest { body: Some(b), .. } if b.has_code(&["NAME_UNKNOWN"]) => format!(
            "The repository {repo} does not exist in this registry (check the name, it is case-sensitive).{}",
            host_port_hint(target)
        ),
        RegistryError::Manifest { status: 404, body } | RegistryError::Manifest { body: body @ Some(_), status: _ }
            if e.code() == Code::ManifestNotFound =>
        {
            format!(
                "The credentials work, but {repo} has no {} {}.{}{}",
                if target.image.digest().is_some() { "manifest" } else { "tag" },
                target.image.manifest_reference(),
                registry_says(body),
                host_port_hint(target)
            )
        }
        RegistryError::Manifest { status: 429, body } if target.registry.is_docker_hub() => format!(
            "Docker Hub's pull rate limit is used up for {} (100 pulls per 6 hours anonymously, 200 with a free account; a paid account has more). Try again once the window has passed, or save credentials of an account with a higher limit.{}",
            if has_creds { "this account" } else { "anonymous pulls from this server's address" },
            registry_says(body)
        ),
        RegistryError::Manifest { status: 429, body } => format!(
            "The registry is rate-limiting requests; try again later.{}",
            registry_says(body)
        ),
        RegistryError::NoPlatform { wanted, available } => format!(
            "The image has no build for {wanted}, the platform deployments run on; it has {}. Build and push a {wanted} image.",
            available.join(", ")
        ),
        RegistryError::Timeout => format!(
            "The registry did not answer within {} seconds. Check the URL and that the registry is up, then try again.",
            PREFLIGHT_DEADLINE.as_secs()
        ),
        RegistryError::Blocked { .. } | RegistryError::RealmRejected { .. } => capitalize(&format!("{e}.")),
        RegistryError::Ping { status, .. } if *status < 500 => format!(
            "{} does not look like a container registry: {e}. Check the registry URL.",
            target.registry
        ),
        _ => format!("{} Check the registry URL and that the registry is up.", capitalize(&format!("{e}."))),
    }
}

fn host_port_hint(target: &Target) -> String {
    if target.image.looks_like_host_and_port() {
        format!(
            " Note: {} reads as repository {:?} with tag {:?}; to name a registry host, add the repository after it ({}/NAME:TAG).",
            target.image,
            target.image.path(),
            target.image.tag().unwrap_or_default(),
            target.image.to_string().trim_start_matches("docker.io/")
        )
    } else {
        String::new()
    }
}

fn registry_hint(target: &Target) -> &'static str {
    let host = target.host();
    if target.is_docker_hub() {
        " For Docker Hub, use your Docker Hub username and an access token with at least Read access."
    } else if host == "ghcr.io" {
        " For GHCR, use your GitHub username and a personal access token with the read:packages scope, and make sure the package is visible to that account."
    } else if host == "registry.gitlab.com" {
        " For GitLab, use a personal, project or deploy token with the read_registry scope."
    } else if host == "quay.io" {
        " For Quay, use a robot account (name like org+robot) with read permission on the repository."
    } else if host.ends_with(".amazonaws.com") {
        " For ECR, the username is AWS and the password a 12-hour token from `aws ecr get-login-password`; an expired token is refused."
    } else if host == "gcr.io" || host.ends_with(".gcr.io") || host.ends_with("-docker.pkg.dev") {
        " For Google registries, use oauth2accesstoken with an access token, or _json_key with a service account key that has Artifact Registry Reader."
    } else if host.ends_with(".azurecr.io") {
        " For Azure ACR, use the admin user, a repository-scoped token, or a service principal with AcrPull."
    } else {
        ""
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod send_check {
    /// The preflight runs inside server handlers: its future must be `Send`.
    #[allow(dead_code)]
    fn preflight_future_is_send(r: &super::Registry, t: &super::Target) {
        fn is_send<T: Send>(_: T) {}
        is_send(super::run(r, t, None));
    }
}
