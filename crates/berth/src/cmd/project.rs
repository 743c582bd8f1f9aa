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
    /// Add a user to a project (owner only)
    #[command(after_help = "Examples:\n  berth project add-member web bob")]
    AddMember {
        name: String,
        user: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: &Connection, cmd: Command) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    let (v, json) = match cmd {
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
