//! `berth audit [--service NAME]`

use berth_api::time::stamp;
use berth_api::AuditEventView;

use super::api::{Api, Connection};
use super::{CliError, Outcome};

#[derive(clap::Args)]
pub struct Args {
    /// Only this service's events
    #[arg(long)]
    service: Option<String>,
    /// At most this many events
    #[arg(long, default_value_t = 50)]
    limit: u32,
    #[arg(long)]
    json: bool,
}

pub async fn run(conn: &Connection, args: Args) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    let project = Api::project(conn)?;
    let mut path = format!("/v1/projects/{project}/audit-events?limit={}", args.limit);
    if let Some(s) = &args.service {
        path.push_str(&format!("&service={s}"));
    }
    let events = api.get::<Vec<AuditEventView>>(&path).await?;
    if args.json {
        return events.print_json().map(|_| Outcome::Ok);
    }
    println!(
        "{:<25} {:<10} {:<24} {:<12} METADATA",
        "AT", "ACTOR", "ACTION", "SERVICE"
    );
    for e in &events.view {
        println!(
            "{:<25} {:<10} {:<24} {:<12} {}",
            stamp(&e.at),
            e.actor,
            e.action,
            e.service.as_deref().unwrap_or("-"),
            e.metadata
        );
    }
    Ok(Outcome::Ok)
}
