//! `berth project create NAME`, `berth project list`, `berth project add-member
//! NAME USER`

use reqwest::Method;
use serde_json::json;

use super::api::{print_json, Api, Connection};
use super::{CliError, Outcome};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a project; you are its owner
    #[command(after_help = "Examples:\n  berth project create web")]
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The projects you are a member of, your role in each, and the external id
    /// berth assumes an ECR role with for each
    #[command(after_help = "Examples:\n  berth project list")]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Project tokens: read the project's registry credentials, nothing else (for
    /// docker-credential-berth and the kubelet credential provider)
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  berth project token create web kubelet-prod > /etc/berth/kubelet-token\n  berth project token list web\n  berth project token revoke web kubelet-prod"
    )]
    Token(TokenCommand),
    /// Add a user to a project (owner only)
    #[command(after_help = "Examples:\n  berth project add-member web bob")]
    AddMember {
        name: String,
        user: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token (owner only); prints it once, on stdout
    #[command(
        after_help = "Examples:\n  berth project token create web kubelet-prod > kubelet-token"
    )]
    Create {
        project: String,
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// The project's tokens and when each was last used
    #[command(after_help = "Examples:\n  berth project token list web")]
    List {
        project: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token (owner only)
    #[command(after_help = "Examples:\n  berth project token revoke web kubelet-prod")]
    Revoke { project: String, name: String },
}

async fn token(api: &Api, cmd: TokenCommand) -> Result<Outcome, CliError> {
    match cmd {
        TokenCommand::Create {
            project,
            name,
            json,
        } => {
            let v = api
                .ok(
                    Method::POST,
                    &format!("/v1/projects/{project}/tokens"),
                    Some(json!({"name": name})),
                )
                .await?;
            if json {
                print_json(&v)?;
            } else {
                // The token alone on stdout (to redirect into a file); the rest
                // on stderr.
                eprintln!("created token {name} of project {project} (read-credentials); it is shown once:");
                println!("{}", v["token"].as_str().unwrap_or_default());
            }
        }
        TokenCommand::List { project, json } => {
            let v = api
                .ok(Method::GET, &format!("/v1/projects/{project}/tokens"), None)
                .await?;
            if json {
                print_json(&v)?;
            } else {
                println!(
                    "{:<24} {:<17} {:<12} LAST USED",
                    "TOKEN", "SCOPE", "CREATED BY"
                );
                for t in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<17} {:<12} {}",
                        t["name"].as_str().unwrap_or_default(),
                        t["scope"].as_str().unwrap_or_default(),
                        t["created_by"].as_str().unwrap_or_default(),
                        t["last_used_at"].as_str().unwrap_or("never")
                    );
                }
            }
        }
        TokenCommand::Revoke { project, name } => {
            api.ok(
                Method::DELETE,
                &format!("/v1/projects/{project}/tokens/{name}"),
                None,
            )
            .await?;
            println!("revoked token {name} of project {project}");
        }
    }
    Ok(Outcome::Ok)
}

pub async fn run(conn: &Connection, cmd: Command) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    let (v, json) = match cmd {
        Command::Token(t) => return token(&api, t).await,
        Command::List { json } => {
            let v = api.ok(Method::GET, "/v1/projects", None).await?;
            if json {
                print_json(&v)?;
            } else {
                println!("{:<24} {:<7} AWS EXTERNAL ID", "PROJECT", "ROLE");
                for p in v.as_array().into_iter().flatten() {
                    println!(
                        "{:<24} {:<7} {}",
                        p["name"].as_str().unwrap_or_default(),
                        p["role"].as_str().unwrap_or_default(),
                        p["aws_external_id"].as_str().unwrap_or_default()
                    );
                }
            }
            return Ok(Outcome::Ok);
        }
        Command::Create { name, json } => (
            api.ok(Method::POST, "/v1/projects", Some(json!({"name": name})))
                .await?,
            json,
        ),
        Command::AddMember { name, user, json } => (
            api.ok(
                Method::POST,
                &format!("/v1/projects/{name}/members"),
                Some(json!({"user": user})),
            )
            .await?,
            json,
        ),
    };
    if json {
        print_json(&v)?;
    } else if let Some(user) = v["user"].as_str() {
        println!(
            "added {user} to {}",
            v["project"].as_str().unwrap_or_default()
        );
    } else {
        println!(
            "created project {} (owner)",
            v["name"].as_str().unwrap_or_default()
        );
    }
    Ok(Outcome::Ok)
}
