//! `berth user create NAME` (admin)

use berth_api::{CreateUser, CreatedUser};

use super::api::{Api, Connection};
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
            let created = api
                .post::<CreatedUser>("/v1/users", &CreateUser { name })
                .await?;
            if json {
                created.print_json()?;
            } else {
                let user = &created.view;
                eprintln!("created user {}; its token (shown once):", user.name);
                println!("{}", user.token);
            }
        }
    }
    Ok(Outcome::Ok)
}
