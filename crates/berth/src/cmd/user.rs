//! `berth user create NAME` (admin)

use reqwest::Method;
use serde_json::json;

use super::api::{print_json, Api, Connection};
use super::{CliError, Outcome};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a user and print its API token (shown once)
    #[command(
        after_help = "Examples:\n  berth user create alice\n  berth user create ci-bot --json | jq -r .token"
    )]
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(conn: &Connection, cmd: Command) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    match cmd {
        Command::Create { name, json } => {
            let v = api
                .ok(Method::POST, "/v1/users", Some(json!({"name": name})))
                .await?;
            if json {
                print_json(&v)?;
            } else {
                eprintln!(
                    "created user {}; its token (shown once):",
                    v["name"].as_str().unwrap_or_default()
                );
                println!("{}", v["token"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(Outcome::Ok)
}
