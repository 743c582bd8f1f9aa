//! What a save of a service takes (the registry flags) and how its answer is
//! shown: shared by `berth service` and its wizard, which both depend on this and
//! not on each other.

use berth_registry::PreflightReport;
use serde_json::Value;

use super::api::{print_json, ApiFailure};
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
fn render(v: &Value) {
    println!("name:     {}", v["name"].as_str().unwrap_or_default());
    println!("image:    {}", v["image"].as_str().unwrap_or_default());
    println!("status:   {}", v["status"].as_str().unwrap_or_default());
    if let Some(r) = v["resources"].as_object().filter(|r| !r.is_empty()) {
        let limits: Vec<String> = r.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("limits:   {}", limits.join(", "));
    }
    if let Some(policy) = v["restart_policy"].as_str() {
        let last = match (&v["last_exit"]["code"], &v["last_exit"]["signal"]) {
            _ if v["last_exit"].is_null() => String::new(),
            (Value::Number(c), _) => format!(
                ", last exit code {c} at {}",
                v["last_exit"]["at"].as_str().unwrap_or_default()
            ),
            (_, Value::Number(s)) => format!(
                ", last killed by signal {s} at {}",
                v["last_exit"]["at"].as_str().unwrap_or_default()
            ),
            _ => format!(
                ", last stopped at {} (exit not seen)",
                v["last_exit"]["at"].as_str().unwrap_or_default()
            ),
        };
        println!(
            "restarts: {} (policy {policy}{last})",
            v["restarts"].as_u64().unwrap_or(0)
        );
    }
    match v["registry"].as_object() {
        None => println!("registry: none (anonymous pulls)"),
        Some(r) => println!(
            "registry: {} (user {}, password {}, {})",
            r["registry_url"].as_str().unwrap_or_default(),
            r["username"].as_str().unwrap_or_default(),
            if r["password_set"].as_bool() == Some(true) {
                "set"
            } else {
                "not set"
            },
            if r["verified"].as_bool() == Some(true) {
                "verified"
            } else {
                "not verified"
            }
        ),
    }
    if let Some(h) = v["registry"]["health"].as_object() {
        println!(
            "health:   {}{} (checked {})",
            h["status"].as_str().unwrap_or_default(),
            match h["code"].as_str() {
                Some(c) if c != "ok" => format!(" ({c})"),
                _ => String::new(),
            },
            h["checked_at"].as_str().unwrap_or_default()
        );
    }
}

/// A 422 carries the preflight result: show its steps, then fail.
fn refused(f: ApiFailure, json: bool) -> Result<Outcome, CliError> {
    if json {
        print_json(&f.body)?;
    } else if let Ok(report) =
        serde_json::from_value::<PreflightReport>(f.body["preflight"].clone())
    {
        eprint!("{}", super::preflight::render(&report));
        eprintln!("not saved: {}", f.message);
    } else {
        eprintln!("error: {} ({}): {}", f.code, f.status, f.message);
    }
    Ok(Outcome::Failed)
}

/// The answer to a save: the service, or the refused preflight, or an error.
pub(super) fn saved(answer: Result<Value, ApiFailure>, json: bool) -> Result<Outcome, CliError> {
    match answer {
        Ok(v) => done(&v, json),
        Err(f) if f.status == 422 => refused(f, json),
        Err(f) => Err(CliError::Other(anyhow::anyhow!(
            "{} ({}): {}",
            f.code,
            f.status,
            f.message
        ))),
    }
}

pub(super) fn done(v: &Value, json: bool) -> Result<Outcome, CliError> {
    if json {
        print_json(v)?;
    } else {
        render(v);
    }
    Ok(Outcome::Ok)
}
