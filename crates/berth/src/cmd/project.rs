//! `berth project create NAME`, `berth project list`, `berth project add-member
//! NAME USER`

use berth_api::time::stamp;
use berth_api::{
    AddMember, CreateProject, CreateToken, MemberView, ProjectView, Revoked, TokenView,
};

use super::api::{Api, Connection};
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
        after_help = "Examples:\n  berth project token create web kubelet-prod --expires-in 90d > /etc/berth/kubelet-token\n  berth project token list web\n  berth project token revoke web kubelet-prod"
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
        after_help = "Examples:\n  berth project token create web kubelet-prod > kubelet-token\n  berth project token create web ci --expires-in 90d > ci-token"
    )]
    Create {
        project: String,
        name: String,
        /// How long it opens anything: a number and a unit, s, m, h or d (`12h`,
        /// `90d`); without it, until revoked
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires_in: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// The project's tokens, when each was last used and when it expires
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

/// `--expires-in`: a whole number and a unit (`90s`, `30m`, `12h`, `90d`), in
/// seconds. (Four units and no mixing: humantime's full grammar is more than a
/// token's life needs.)
fn parse_duration(text: &str) -> Result<u64, String> {
    let usage = || format!("{text:?} is not a duration such as 12h or 90d (s, m, h, d)");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(usage)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| usage())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(usage()),
    };
    match n.checked_mul(unit) {
        Some(0) => Err(format!("{text:?}: a token's life is longer than nothing")),
        Some(seconds) => Ok(seconds),
        None => Err(usage()),
    }
}

async fn token(api: &Api, cmd: TokenCommand) -> Result<Outcome, CliError> {
    match cmd {
        TokenCommand::Create {
            project,
            name,
            expires_in,
            json,
        } => {
            let body = CreateToken {
                name: name.clone(),
                expires_in,
            };
            let created = api
                .post::<TokenView>(&format!("/v1/projects/{project}/tokens"), &body)
                .await?;
            if json {
                created.print_json()?;
            } else {
                // The token alone on stdout (to redirect into a file); the rest
                // on stderr.
                let until = match &created.view.expires_at {
                    Some(at) => format!(", expires {}", stamp(at)),
                    None => String::new(),
                };
                eprintln!("created token {name} of project {project} (read-credentials{until}); it is shown once:");
                println!("{}", created.view.token.as_deref().unwrap_or_default());
            }
        }
        TokenCommand::List { project, json } => {
            let tokens = api
                .get::<Vec<TokenView>>(&format!("/v1/projects/{project}/tokens"))
                .await?;
            if json {
                tokens.print_json()?;
            } else {
                println!(
                    "{:<24} {:<17} {:<12} {:<24} EXPIRES",
                    "TOKEN", "SCOPE", "CREATED BY", "LAST USED"
                );
                for t in &tokens.view {
                    println!(
                        "{:<24} {:<17} {:<12} {:<24} {}",
                        t.name,
                        t.scope,
                        t.created_by,
                        t.last_used_at.as_ref().map_or("never".into(), stamp),
                        t.expires_at.as_ref().map_or("never".into(), stamp)
                    );
                }
            }
        }
        TokenCommand::Revoke { project, name } => {
            api.delete::<Revoked>(&format!("/v1/projects/{project}/tokens/{name}"))
                .await?;
            println!("revoked token {name} of project {project}");
        }
    }
    Ok(Outcome::Ok)
}

pub async fn run(conn: &Connection, cmd: Command) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    match cmd {
        Command::Token(t) => return token(&api, t).await,
        Command::List { json } => {
            let projects = api.get::<Vec<ProjectView>>("/v1/projects").await?;
            if json {
                projects.print_json()?;
            } else {
                println!("{:<24} {:<7} AWS EXTERNAL ID", "PROJECT", "ROLE");
                for p in &projects.view {
                    println!("{:<24} {:<7} {}", p.name, p.role, p.aws_external_id);
                }
            }
        }
        Command::Create { name, json } => {
            let created = api
                .post::<ProjectView>("/v1/projects", &CreateProject { name })
                .await?;
            if json {
                created.print_json()?;
            } else {
                println!("created project {} (owner)", created.view.name);
            }
        }
        Command::AddMember { name, user, json } => {
            let added = api
                .post::<MemberView>(&format!("/v1/projects/{name}/members"), &AddMember { user })
                .await?;
            if json {
                added.print_json()?;
            } else {
                println!("added {} to {}", added.view.user, added.view.project);
            }
        }
    }
    Ok(Outcome::Ok)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn expires_in_is_a_number_and_a_unit() {
        for (text, want) in [
            ("90d", Some(90 * 86_400)),
            ("12h", Some(43_200)),
            ("30m", Some(1_800)),
            ("1s", Some(1)),
            ("0d", None),
            ("12", None),
            ("h", None),
            ("1.5h", None),
            ("-1d", None),
            ("2w", None),
            ("12 h", None),
            ("99999999999999999999d", None),
        ] {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }
}
