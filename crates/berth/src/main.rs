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
    #[command(flatten)]
    conn: cmd::api::Connection,
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
    /// Run the berth server
    ///
    /// First start on an empty data dir creates the SQLite database, the master key
    /// file (0600, unless BERTH_MASTER_KEY is set) and DATA_DIR/admin-token (0600).
    ///
    /// Examples:
    ///   berth server --data-dir /var/lib/berth --listen 127.0.0.1:8440
    ///   BERTH_DATABASE_URL=postgres://berth@db/berth berth server --data-dir /var/lib/berth
    #[command(verbatim_doc_comment)]
    Server(cmd::server::Args),
    /// Operator tasks on a server's data
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Save a server URL and API token for later commands (file mode 0600)
    Login(cmd::login::Args),
    /// Users (admin)
    #[command(subcommand)]
    User(cmd::user::Command),
    /// Projects and their members
    #[command(subcommand)]
    Project(cmd::project::Command),
    /// Services and their registry credentials (needs --project)
    #[command(subcommand)]
    Service(cmd::service::Command),
    /// Deploy a service's image and watch it come up (needs --project)
    Deploy(cmd::deploy::DeployArgs),
    /// A deployment's infrastructure log and container output (needs --project)
    Logs(cmd::deploy::LogsArgs),
    /// The project's audit log (needs --project)
    Audit(cmd::audit::Args),
    /// Print shell completions
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Re-encrypt every stored secret under a new master key version
    ///
    /// Servers keep serving meanwhile: they read the new version from the key file.
    RotateMasterKey(cmd::server::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(if matches!(cli.command, Command::Server(_)) {
        "info"
    } else {
        "warn"
    });
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
            Command::Server(args) => cmd::server::run(args).await,
            Command::Login(args) => cmd::login::run(&cli.conn, args).await,
            Command::User(c) => cmd::user::run(&cli.conn, c).await,
            Command::Project(c) => cmd::project::run(&cli.conn, c).await,
            Command::Service(c) => cmd::service::run(&cli.conn, c).await,
            Command::Deploy(args) => cmd::deploy::deploy(&cli.conn, args).await,
            Command::Logs(args) => cmd::deploy::logs(&cli.conn, args).await,
            Command::Audit(args) => cmd::audit::run(&cli.conn, args).await,
            Command::Admin(AdminCommand::RotateMasterKey(args)) => {
                cmd::server::rotate_master_key(args).await
            }
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

/// Logs go to stderr; `BERTH_LOG` (or `RUST_LOG`) sets the filter, default `info`
/// for the server and `warn` for the CLI.
fn init_logging(default: &str) {
    let filter = std::env::var("BERTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
}
