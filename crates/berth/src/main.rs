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
    #[command(after_help = "Examples:\n  berth admin rotate-master-key --data-dir /var/lib/berth")]
    Admin(AdminCommand),
    /// Save a server URL and API token for later commands (file mode 0600)
    #[command(
        after_help = "Examples:\n  berth login --server https://berth.example.com\n  berth login --server http://127.0.0.1:8440 --token-stdin < berth-data/admin-token"
    )]
    Login(cmd::login::Args),
    /// Users (admin)
    #[command(subcommand)]
    #[command(after_help = "Examples:\n  berth user create alice")]
    User(cmd::user::Command),
    /// Projects and their members
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  berth project create web\n  berth project add-member web bob"
    )]
    Project(cmd::project::Command),
    /// Services and their registry credentials (needs --project)
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  berth --project web service create\n  berth --project web service list"
    )]
    Service(cmd::service::Command),
    /// Deploy a service's image and watch it come up (needs --project)
    #[command(
        after_help = "Examples:\n  berth --project web deploy api\n  berth --project web deploy api --follow\n  id=$(berth --project web deploy api --detach)"
    )]
    Deploy(cmd::deploy::DeployArgs),
    /// A deployment's infrastructure log and container output (needs --project)
    #[command(
        after_help = "Examples:\n  berth --project web logs api\n  berth --project web logs api --deployment 3f2a... --follow"
    )]
    Logs(cmd::deploy::LogsArgs),
    /// The project's audit log (needs --project)
    #[command(
        after_help = "Examples:\n  berth --project web audit\n  berth --project web audit --service api --json"
    )]
    Audit(cmd::audit::Args),
    /// The Docker credential-helper protocol, with a project token
    ///
    /// Docker, skopeo, podman and crane run `docker-credential-berth get` (a link
    /// to this binary under that name) with the registry host on stdin; berth
    /// answers with the credentials of the project's service for that registry.
    /// The server: --server, BERTH_SERVER or `berth login`; the token:
    /// BERTH_PROJECT_TOKEN_FILE or BERTH_PROJECT_TOKEN.
    ///
    /// Examples:
    ///   ln -s "$(command -v berth)" /usr/local/bin/docker-credential-berth
    ///   echo ghcr.io | BERTH_PROJECT_TOKEN_FILE=~/.berth-token berth credential-helper get
    #[command(verbatim_doc_comment)]
    CredentialHelper {
        #[command(flatten)]
        source: cmd::credentials::TokenSource,
        #[command(subcommand)]
        command: cmd::credentials::HelperCommand,
    },
    /// A kubelet image credential provider, with a project token
    ///
    /// Reads a CredentialProviderRequest (credentialprovider.kubelet.k8s.io/v1) on
    /// stdin and prints a CredentialProviderResponse with the credentials of the
    /// project's service for the image's repository (none: an empty auth, and the
    /// kubelet pulls anonymously). See the README's "berth on Kubernetes".
    ///
    /// Examples:
    ///   berth credential-provider --server https://berth.example --token-file /etc/berth/kubelet-token
    #[command(verbatim_doc_comment)]
    CredentialProvider {
        #[command(flatten)]
        source: cmd::credentials::TokenSource,
    },
    /// Print shell completions
    #[command(
        after_help = "Examples:\n  berth completions bash > /etc/bash_completion.d/berth\n  berth completions zsh > \"${fpath[1]}/_berth\"\n  berth completions fish > ~/.config/fish/completions/berth.fish"
    )]
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
    #[command(
        after_help = "Examples:\n  berth admin rotate-master-key --data-dir /var/lib/berth\n  BERTH_DATABASE_URL=postgres://berth@db/berth berth admin rotate-master-key --data-dir /var/lib/berth --kms-key-id alias/berth"
    )]
    RotateMasterKey(cmd::server::Args),
}

fn main() -> ExitCode {
    // Run as `docker-credential-berth ACTION`: the helper protocol's name for us.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let called = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(str::to_owned);
    if called.as_deref() == Some("docker-credential-berth") {
        args[0] = "berth".into();
        args.insert(1, "credential-helper".into());
    }
    let cli = Cli::parse_from(args);
    let json =
        matches!(&cli.command, Command::Server(a) if a.log_format == cmd::server::LogFormat::Json);
    init_logging(
        if matches!(cli.command, Command::Server(_)) {
            "info"
        } else {
            "warn"
        },
        json,
    );
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
            Command::CredentialHelper { source, command } => {
                cmd::credentials::helper(&cli.conn, &source, command).await
            }
            Command::CredentialProvider { source } => {
                cmd::credentials::provider(&cli.conn, &source).await
            }
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
/// for the server and `warn` for the CLI, with the targets that could write a
/// secret capped; `json`: one JSON object a line.
fn init_logging(default: &str, json: bool) {
    let filter = std::env::var("BERTH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(berth_server::log_filter(&filter))
        .with_writer(std::io::stderr);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command's `--help` shows examples.
    #[test]
    fn every_command_has_examples() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sc in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
                let path = format!("{path} {}", sc.get_name());
                let text = format!(
                    "{} {}",
                    sc.get_after_help()
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    sc.get_long_about()
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                );
                if !text.contains("Examples:") {
                    missing.push(path.clone());
                }
                walk(sc, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "berth", &mut missing);
        assert!(missing.is_empty(), "no examples in --help: {missing:?}");
        Cli::command().debug_assert();
    }
}
