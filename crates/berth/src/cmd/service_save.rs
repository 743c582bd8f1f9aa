//! What a save of a service takes (the registry flags) and how its answer is
//! shown: shared by `berth service` and its wizard, which both depend on this and
//! not on each other.

use berth_api::time::stamp;
use berth_api::{ExitView, HealthView, RegistryView, ServiceView};

use super::api::{Answer, ApiFailure};
use super::{CliError, Outcome};

#[derive(clap::Args, Default)]
pub struct RegistryFlags {
    /// The registry URL (host[:port])
    #[arg(long)]
    pub registry_url: Option<String>,
    /// The registry user name
    #[arg(long)]
    pub registry_username: Option<String>,
    /// Read the registry password or token from stdin
    #[arg(long)]
    pub registry_password_stdin: bool,
    /// Save even if the connection test fails
    #[arg(long)]
    pub save_without_verifying: bool,
    /// Take the user name and password for the registry from a Docker config, as
    /// `docker login` left them (`auths`, `credHelpers`, `credsStore`): PATH, or
    /// $DOCKER_CONFIG/config.json, or ~/.docker/config.json
    #[arg(long, value_name = "PATH", num_args = 0..=1)]
    pub from_docker_config: Option<Option<std::path::PathBuf>>,
    /// The credential's kind: basic, ecr, gcp or acr [default: from the registry
    /// host]
    #[arg(long)]
    pub kind: Option<String>,
    /// A Google service account key file (kind gcp, sent as _json_key; checked
    /// before any request)
    #[arg(long, value_name = "PATH")]
    pub gcp_json_key_file: Option<std::path::PathBuf>,
    /// An AWS access key id (kind ecr; its secret is read like a password, from
    /// --registry-password-stdin or a masked prompt); berth mints ECR's 12-hour
    /// tokens from it at each deploy
    #[arg(long)]
    pub aws_access_key_id: Option<String>,
    /// An AWS role of yours for berth to assume (kind ecr, nothing secret to
    /// type): its trust policy names berth's AWS principal and requires the
    /// project's external id (`berth project list` shows it)
    #[arg(long, value_name = "ARN", conflicts_with = "aws_access_key_id")]
    pub aws_role_arn: Option<String>,
    /// The AWS region, when the registry host names none
    #[arg(long)]
    pub aws_region: Option<String>,
}

impl RegistryFlags {
    /// The key file's text, if one was named.
    pub fn gcp_json_key(&self) -> Result<Option<zeroize::Zeroizing<String>>, super::CliError> {
        self.gcp_json_key_file
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p)
                    .map(zeroize::Zeroizing::new)
                    .map_err(|e| {
                        super::CliError::Usage(format!("--gcp-json-key-file {}: {e}", p.display()))
                    })
            })
            .transpose()
    }
}

/// Prints a service the human way.
fn render(v: &ServiceView) {
    println!("name:     {}", v.name);
    println!("image:    {}", v.image);
    println!("status:   {}", v.status);
    let limits = limits(v);
    if !limits.is_empty() {
        println!("limits:   {}", limits.join(", "));
    }
    println!(
        "restarts: {} (policy {}{})",
        v.restarts,
        v.restart_policy,
        last_exit(v.last_exit.as_ref())
    );
    match &v.registry {
        None => println!("registry: none (anonymous pulls)"),
        Some(r) => println!(
            "registry: {} (user {}, password {}, {})",
            r.registry_url,
            r.username,
            if r.password_set { "set" } else { "not set" },
            if r.verified {
                "verified"
            } else {
                "not verified"
            }
        ),
    }
    if let Some(h) = v
        .registry
        .as_ref()
        .and_then(|r: &RegistryView| r.health.as_ref())
    {
        println!("health:   {}", health(h));
    }
    let port = match (v.port, &v.health_path) {
        (Some(p), Some(h)) => format!("{p} (ready: GET {h})"),
        (Some(p), None) => p.to_string(),
        (None, Some(h)) => format!("the image's exposed port (ready: GET {h})"),
        (None, None) => "the image's exposed port, if it has one".into(),
    };
    println!("port:     {port}");
    println!("network:  {}", v.network.as_str());
    for url in &v.urls {
        println!("url:      {url}");
    }
}

/// The limits set, by name (in the order of their names), each as the API
/// writes its number.
fn limits(v: &ServiceView) -> Vec<String> {
    let r = &v.resources;
    let number = |n: serde_json::Number| n.to_string();
    [
        ("cpus", r.cpus.and_then(serde_json::Number::from_f64)),
        ("memory_mb", r.memory_mb.map(serde_json::Number::from)),
        ("pids", r.pids.map(serde_json::Number::from)),
    ]
    .into_iter()
    .filter_map(|(name, n)| Some(format!("{name} {}", number(n?))))
    .collect()
}

/// `, last exit code 1 at ...` (or its signal, or a stop nobody saw); nothing
/// before the first exit.
fn last_exit(e: Option<&ExitView>) -> String {
    match e {
        None => String::new(),
        Some(ExitView {
            code: Some(c), at, ..
        }) => format!(", last exit code {c} at {}", stamp(at)),
        Some(ExitView {
            signal: Some(s),
            at,
            ..
        }) => format!(", last killed by signal {s} at {}", stamp(at)),
        Some(e) => format!(", last stopped at {} (exit not seen)", stamp(&e.at)),
    }
}

/// `ok (checked ...)`, or `failing (auth_failed) (checked ...)`.
fn health(h: &HealthView) -> String {
    let code = match h.code.as_str() {
        "ok" => String::new(),
        c => format!(" ({c})"),
    };
    format!("{}{code} (checked {})", h.status, stamp(&h.checked_at))
}

/// A 422 carries the preflight result: show its steps, then fail.
fn refused(f: ApiFailure, json: bool) -> Result<Outcome, CliError> {
    if json {
        f.print_json()?;
    } else if let Some(report) = f.preflight() {
        eprint!("{}", super::preflight::render(report));
        eprintln!("not saved: {}", f.message());
    } else {
        eprintln!("error: {f}");
    }
    Ok(Outcome::Failed)
}

/// The answer to a save: the service, or the refused preflight, or an error.
pub(super) fn saved(
    answer: Result<Answer<ServiceView>, ApiFailure>,
    json: bool,
) -> Result<Outcome, CliError> {
    match answer {
        Ok(v) => done(&v, json),
        Err(f) if f.status == 422 => refused(f, json),
        Err(f) => Err(f.into()),
    }
}

pub(super) fn done(v: &Answer<ServiceView>, json: bool) -> Result<Outcome, CliError> {
    if json {
        v.print_json()?;
    } else {
        render(&v.view);
    }
    Ok(Outcome::Ok)
}
