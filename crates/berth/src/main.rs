//! `berth`: the server and the CLI in one binary. A thin shell over the library
//! crates: parse flags, read secrets from a terminal or a pipe, print results.

mod cmd;
mod input;
mod settings;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "Run pre-built images from private container registries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Test registry credentials against a registry, from this machine
    ///
    /// Runs the same preflight as the server's Test Connection: GET /v2/, the token
    /// exchange, HEAD of the manifest, within 8 seconds, under the same network
    /// policy (BERTH_REGISTRY_ALLOW_PRIVATE, BERTH_REGISTRY_INSECURE,
    /// BERTH_REGISTRY_CA_FILE).
    ///
    /// Examples:
    ///   berth preflight ghcr.io/acme/api:v2 --registry ghcr.io --username alice --registry-password-stdin < token.txt
    ///   berth preflight nginx:1.27 --registry docker.io --json
    #[command(verbatim_doc_comment)]
    Preflight(cmd::preflight::Args),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Preflight(args) => cmd::preflight::run(args).await,
            Command::Completions { shell } => {
                clap_complete::generate(
                    shell,
                    &mut Cli::command(),
                    "berth",
                    &mut std::io::stdout(),
                );
                Ok(cmd::Outcome::Ok)
            }
        }
    });
    match result {
        Ok(cmd::Outcome::Ok) => ExitCode::SUCCESS,
        Ok(cmd::Outcome::Failed) => ExitCode::from(1),
        Err(cmd::CliError::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(cmd::CliError::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Logs go to stderr; `BERTH_LOG` (or `RUST_LOG`) sets the filter, default `warn`.
fn init_logging() {
    let filter = std::env::var("BERTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}
