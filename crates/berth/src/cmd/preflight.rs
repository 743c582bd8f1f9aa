//! `berth preflight IMAGE --registry URL [--username U --registry-password-stdin]`

use berth_registry::preflight::{self, PreflightReport, StepName};
use berth_registry::{Credentials, Registry};

use super::{CliError, Outcome};
use crate::input;

#[derive(clap::Args)]
pub struct Args {
    /// The image reference, e.g. ghcr.io/acme/api:v2 or acme/api:v2
    image: String,
    /// The registry URL (host[:port], optionally with https://)
    #[arg(long = "registry", visible_alias = "registry-url")]
    registry: String,
    /// The registry user name (asks for the password on a terminal)
    #[arg(long, visible_alias = "registry-username")]
    username: Option<String>,
    /// Read the password or token from stdin
    #[arg(long)]
    registry_password_stdin: bool,
    /// Print the result as one JSON document
    #[arg(long)]
    json: bool,
}

pub async fn run(args: Args) -> Result<Outcome, CliError> {
    let creds = match (&args.username, args.registry_password_stdin) {
        (Some(u), true) => Some(Credentials::new(
            u.clone(),
            input::secret_from_stdin("password")?,
        )),
        (Some(u), false) => Some(Credentials::new(
            u.clone(),
            input::secret_from_prompt(&format!("Password for {u}: "), "--registry-password-stdin")?,
        )),
        (None, true) => {
            return Err(CliError::Usage(
                "--registry-password-stdin needs --username".into(),
            ))
        }
        (None, false) => None,
    };
    let policy = crate::settings::registry_policy_from_env()?;
    let registry = Registry::new(policy)?;
    let report = match preflight::target(&registry, &args.registry, &args.image) {
        Ok(target) => preflight::run(&registry, &target, creds).await,
        Err(report) => *report,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.ok {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

/// The human form: one line per step, then the verdict.
pub fn render(r: &PreflightReport) -> String {
    let mut out = String::new();
    for s in &r.steps {
        let name = match s.step {
            StepName::Ping => "ping",
            StepName::Token => "token",
            StepName::Manifest => "manifest",
        };
        let status = s
            .status
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "{} {name:<9} {status:>3} {:>6} ms  {}\n",
            if s.ok { "ok  " } else { "FAIL" },
            s.ms,
            s.detail
        ));
    }
    if !r.platforms.is_empty() {
        out.push_str(&format!("platforms: {}\n", r.platforms.join(", ")));
    }
    if let Some(d) = &r.digest {
        out.push_str(&format!("digest: {d}\n"));
    }
    out.push_str(&format!(
        "{}: {} ({} ms)\n",
        r.code, r.message, r.duration_ms
    ));
    out
}
