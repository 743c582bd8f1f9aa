//! `berth login --server URL [--token-stdin]`

use secrecy::ExposeSecret;

use super::{api, CliError, Outcome};
use crate::input;

#[derive(clap::Args)]
pub struct Args {
    /// Read the token from stdin instead of a masked prompt
    #[arg(long)]
    token_stdin: bool,
}

pub async fn run(conn: &api::Connection, args: Args) -> Result<Outcome, CliError> {
    let server = conn
        .server
        .clone()
        .ok_or_else(|| CliError::Usage("berth login needs --server URL".into()))?;
    let token = if args.token_stdin {
        input::secret_from_stdin("token")?
    } else {
        input::secret_from_prompt("API token: ", "--token-stdin")?
    };
    // Check the token before saving it: any project-less route that needs auth will do.
    let check = api::Api::connect(&api::Connection {
        server: Some(server.clone()),
        token: Some(token.expose_secret().to_owned()),
        project: None,
    })?;
    let resp = check
        .send(reqwest::Method::GET, "/v1/projects/-/services")
        .await?;
    if resp.status().as_u16() == 401 {
        return Err(CliError::Other(anyhow::anyhow!(
            "unauthorized: the server refused this token"
        )));
    }
    let path = api::save_login(&server, &token)?;
    eprintln!(
        "logged in to {server}; saved to {} (mode 0600)",
        path.display()
    );
    Ok(Outcome::Ok)
}
