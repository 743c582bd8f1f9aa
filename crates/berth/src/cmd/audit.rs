//! `berth audit [--service NAME]`

use reqwest::Method;

use super::api::{print_json, Api, Connection};
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
    let v = api.ok(Method::GET, &path, None).await?;
    if args.json {
        return print_json(&v).map(|_| Outcome::Ok);
    }
    println!(
        "{:<25} {:<10} {:<24} {:<12} METADATA",
        "AT", "ACTOR", "ACTION", "SERVICE"
    );
    for e in v.as_array().into_iter().flatten() {
        println!(
            "{:<25} {:<10} {:<24} {:<12} {}",
            e["at"].as_str().unwrap_or_default(),
            e["actor"].as_str().unwrap_or_default(),
            e["action"].as_str().unwrap_or_default(),
            e["service"].as_str().unwrap_or("-"),
            e["metadata"]
        );
    }
    Ok(Outcome::Ok)
}
