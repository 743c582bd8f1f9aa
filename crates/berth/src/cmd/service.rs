//! `berth service create|list|show|registry set|registry test|registry remove|terminate`

use std::collections::BTreeMap;
use std::io::IsTerminal;

use berth_api::{
    CreateService, NetworkName, PreflightRequest, PutRegistry, RegistryInput, RegistrySaved,
    RegistryView, ResourcesInput, ServiceView, UpdateService,
};
use berth_registry::PreflightReport;
use reqwest::Method;
use secrecy::SecretString;

use super::api::{Api, Connection};
use super::service_save::{
    apply_new, done, env_given, saved, secrets_given, RegistryFlags, RunFlags,
};
use super::{CliError, Outcome};
use crate::input;

// Parsed once per process: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a service; with registry credentials, they are tested before saving
    ///
    /// On a terminal, anything missing is asked for: name, image, "Private
    /// registry?", URL, username, password (masked), then a connection test and
    /// Save (or "Save without verifying?" when the test fails).
    ///
    /// Examples:
    ///   berth service create                      # the interactive wizard
    ///   berth service create api --image ghcr.io/acme/api:v2 --registry-url ghcr.io \
    ///       --registry-username alice --registry-password-stdin < token.txt
    ///   berth service create web --image nginx:1.27
    ///   berth service create web --image ghcr.io/acme/web:v1 --env LOG_LEVEL=info \
    ///       --env-file web.env --secret API_KEY --volume /data:1024 --region eu < api-key.txt
    ///   berth service create job --image busybox:1.36 --command /bin/sh --command -c \
    ///       --command 'echo hi; sleep 3600'
    #[command(verbatim_doc_comment)]
    Create(CreateArgs),
    /// List the project's services
    #[command(
        after_help = "Examples:\n  berth --project web service list\n  berth --project web service list --json"
    )]
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a service (credentials masked)
    #[command(after_help = "Examples:\n  berth --project web service show api")]
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Registry credentials of a service
    #[command(subcommand)]
    #[command(
        after_help = "Examples:\n  berth --project web service registry set api --registry-password-stdin < new-token.txt\n  berth --project web service registry remove api"
    )]
    Registry(RegistryCommand),
    /// Change a service's settings (they apply at its next deploy)
    ///
    /// Variables and secrets not named keep theirs. A secret's value is never a
    /// flag value: it is asked for (masked) on a terminal, else read from stdin.
    #[command(after_help = SET_EXAMPLES)]
    Set(SettingsArgs),
    /// Print where a service answers (its URLs, one a line)
    #[command(
        after_help = "Examples:\n  berth --project web service url api\n  curl \"$(berth --project web service url api | head -1)\""
    )]
    Url {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Terminate a service: stop what runs and delete its stored secret for good
    #[command(after_help = "Examples:\n  berth --project web service terminate api")]
    Terminate {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

// Parsed once per process: the size of a variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(clap::Subcommand)]
pub enum RegistryCommand {
    /// Set or update credentials; omitted values keep their stored value
    #[command(
        after_help = "Examples:\n  berth --project web service registry set api --registry-password-stdin < new-token.txt\n  berth --project web service registry set api --registry-url ghcr.io --registry-username alice --registry-password-stdin < pat.txt\n  berth --project web service registry set api --image ghcr.io/acme/api:v3\n  berth --project web service registry set api --registry-password-stdin --redeploy < rotated-token.txt"
    )]
    Set(SetArgs),
    /// Test the service's registry with a password (nothing is saved)
    #[command(
        after_help = "Examples:\n  berth --project web service registry test api\n  BERTH_REGISTRY_USERNAME=alice berth --project web service registry test api --registry-password-stdin < pat.txt"
    )]
    Test(TestArgs),
    /// Remove the credentials (the secret is deleted); deploys pull anonymously
    #[command(after_help = "Examples:\n  berth --project web service registry remove api")]
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

/// `service create`: without NAME or --image on a terminal, the wizard asks.
#[derive(clap::Args)]
pub struct CreateArgs {
    /// The service name (a slug: a-z, 0-9, -)
    name: Option<String>,
    /// The image reference, e.g. ghcr.io/acme/api:v2
    #[arg(long)]
    image: Option<String>,
    #[command(flatten)]
    registry: RegistryFlags,
    /// The container's memory limit, MiB [default: the server's]
    #[arg(long)]
    memory_mb: Option<u64>,
    /// The container's process and thread limit [default: the server's]
    #[arg(long)]
    pids: Option<i64>,
    /// The container's CPU limit, in CPUs, e.g. 0.5 [default: the server's]
    #[arg(long)]
    cpus: Option<f64>,
    /// When the container is started again after it exits, with a growing delay
    #[arg(long, value_parser = ["on-failure", "always", "never"], default_value = "on-failure")]
    restart_policy: String,
    #[command(flatten)]
    traffic: TrafficFlags,
    #[command(flatten)]
    run: RunFlags,
    #[arg(long)]
    json: bool,
}

/// How a service is reached and what it reaches.
#[derive(clap::Args)]
pub struct TrafficFlags {
    /// The port the app listens on [default: the image's single exposed port;
    /// none: a worker]; 0 goes back to the default
    #[arg(long)]
    port: Option<u16>,
    /// A path that answers 2xx/3xx once the app is ready, e.g. /healthz
    /// [default: the port accepting a connection]; "" removes it
    #[arg(long)]
    health_path: Option<String>,
    /// An extra host name routed to the service (repeat for several)
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// What the container may reach: public (the internet, under the egress
    /// policy) or none
    #[arg(long, value_parser = ["public", "none"])]
    network: Option<String>,
}

impl TrafficFlags {
    fn network(&self) -> Option<NetworkName> {
        self.network.as_deref().map(|n| match n {
            "none" => NetworkName::None,
            _ => NetworkName::Public,
        })
    }
}

const SET_EXAMPLES: &str = "Examples:
  berth --project web service set api --port 8080 --health-path /healthz
  berth --project web service set api --domain shop.example.com --redeploy
  berth --project web service set worker --network none
  berth --project web service set api --env LOG_LEVEL=debug --unset-env OLD_FLAG
  printf %s \"$KEY\" | berth --project web service set api --secret API_KEY --redeploy
  printf '%s\\n%s\\n' \"$USER\" \"$PASS\" | berth --project web service set api --secret DB_USER --secret DB_PASS
  berth --project web service set api --secret-file TLS_KEY < tls.key
  berth --project web service set api --remove-secret OLD_TOKEN
  berth --project web service set api --command /bin/sh --command -c --command 'exec app --port 8080'
  berth --project web service set api --no-command --no-args --region ''";

/// `service set`.
#[derive(clap::Args)]
pub struct SettingsArgs {
    name: String,
    #[command(flatten)]
    traffic: TrafficFlags,
    /// Remove every extra host name
    #[arg(long, conflicts_with = "domains")]
    no_domains: bool,
    #[command(flatten)]
    run: RunFlags,
    /// Remove a variable (repeat for several)
    #[arg(long, value_name = "NAME")]
    unset_env: Vec<String>,
    /// Remove a secret (repeat for several)
    #[arg(long, value_name = "NAME")]
    remove_secret: Vec<String>,
    /// Go back to the image's Entrypoint
    #[arg(long, conflicts_with = "command")]
    no_command: bool,
    /// Go back to the image's Cmd
    #[arg(long, conflicts_with = "args")]
    no_args: bool,
    /// Deploy now with the new settings
    #[arg(long)]
    redeploy: bool,
    #[arg(long)]
    json: bool,
}

/// `service registry set`.
#[derive(clap::Args)]
pub struct SetArgs {
    name: String,
    #[command(flatten)]
    registry: RegistryFlags,
    /// Change the image too
    #[arg(long)]
    image: Option<String>,
    /// Rotate on a live service: deploy with the new credentials once saved
    /// (the running deployment is replaced only once the new one runs)
    #[arg(long)]
    redeploy: bool,
    #[arg(long)]
    json: bool,
}

/// `service registry test`.
#[derive(clap::Args)]
pub struct TestArgs {
    name: String,
    #[arg(long)]
    registry_password_stdin: bool,
    #[arg(long)]
    json: bool,
}

fn password(flags: &RegistryFlags, user: &str) -> Result<SecretString, CliError> {
    if flags.registry_password_stdin {
        input::secret_from_stdin("registry password")
    } else {
        input::secret_from_prompt(
            &format!("Registry password for {user}: "),
            "--registry-password-stdin",
        )
    }
}

/// The registry's `host[:port]`: the registry URL's, else the image's, else
/// Docker Hub's.
fn registry_host(url: Option<&str>, image: Option<&str>) -> Result<String, CliError> {
    if let Some(u) = url {
        let parsed: berth_types::RegistryUrl = u
            .parse()
            .map_err(|e| CliError::Usage(format!("--registry-url: {e}")))?;
        return Ok(parsed.authority());
    }
    let domain = image
        .and_then(|i| i.parse::<berth_types::ImageRef>().ok())
        .and_then(|i| i.domain().map(str::to_owned));
    Ok(domain.unwrap_or_else(|| berth_types::DOCKER_HUB.to_owned()))
}

/// The ECR fields of a registry body.
struct AwsFields {
    access_key_id: Option<String>,
    secret_access_key: Option<SecretString>,
    role_arn: Option<String>,
    region: Option<String>,
}

impl AwsFields {
    /// A new service's credentials of kind `ecr`.
    fn input(self, registry_url: String) -> RegistryInput {
        RegistryInput {
            registry_url,
            kind: Some("ecr".into()),
            aws_access_key_id: self.access_key_id,
            aws_secret_access_key: self.secret_access_key,
            role_arn: self.role_arn,
            aws_region: self.region,
            ..Default::default()
        }
    }

    /// Credentials changed to kind `ecr`.
    fn put(self, body: &mut PutRegistry) {
        body.kind = Some("ecr".into());
        body.aws_access_key_id = self.access_key_id;
        body.aws_secret_access_key = self.secret_access_key;
        body.role_arn = self.role_arn;
        body.aws_region = self.region;
    }
}

/// `--aws-access-key-id` (the secret read like a password) or `--aws-role-arn`:
/// the ECR fields of a registry body.
fn aws_fields(flags: &RegistryFlags) -> Result<Option<AwsFields>, CliError> {
    if let Some(role) = &flags.aws_role_arn {
        return Ok(Some(AwsFields {
            access_key_id: None,
            secret_access_key: None,
            role_arn: Some(role.clone()),
            region: flags.aws_region.clone(),
        }));
    }
    let Some(key) = &flags.aws_access_key_id else {
        return Ok(None);
    };
    let secret = if flags.registry_password_stdin {
        input::secret_from_stdin("AWS secret access key")?
    } else {
        input::secret_from_prompt(
            &format!("AWS secret access key for {key}: "),
            "--registry-password-stdin",
        )?
    };
    Ok(Some(AwsFields {
        access_key_id: Some(key.clone()),
        secret_access_key: Some(secret),
        role_arn: None,
        region: flags.aws_region.clone(),
    }))
}

/// A Google key file's text, as the secret it is.
fn gcp_json_key(flags: &RegistryFlags) -> Result<Option<SecretString>, CliError> {
    Ok(flags
        .gcp_json_key()?
        .map(|key| SecretString::from(key.as_str().to_owned())))
}

/// `--from-docker-config`: the credentials for `host`, said on stderr (never the
/// password).
fn imported(
    flags: &RegistryFlags,
    host: &str,
) -> Result<Option<super::docker_config::Found>, CliError> {
    let Some(path) = &flags.from_docker_config else {
        return Ok(None);
    };
    if flags.registry_password_stdin || flags.registry_username.is_some() {
        return Err(CliError::Usage(
            "--from-docker-config gives the user name and password: leave out --registry-username and --registry-password-stdin".into(),
        ));
    }
    let path = super::docker_config::config_path(path.as_deref());
    let found = super::docker_config::credentials_for(&path, host)?;
    eprintln!(
        "using the credentials of {} for {host} from {} ({})",
        found.username,
        path.display(),
        found.source
    );
    Ok(Some(found))
}

fn ask(what: &str, flag: &str) -> Result<String, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!("{flag} is required")));
    }
    eprint!("{what}: ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let v = line.trim().to_owned();
    if v.is_empty() {
        return Err(CliError::Usage(format!("{flag} is required")));
    }
    Ok(v)
}

pub async fn run(conn: &Connection, cmd: Command) -> Result<Outcome, CliError> {
    let api = Api::connect(conn)?;
    let project = Api::project(conn)?;
    let base = format!("/v1/projects/{project}/services");
    match cmd {
        Command::Create(args) => create(&api, &base, args).await,
        Command::List { json } => list(&api, &base, json).await,
        Command::Show { name, json } => done(&api.get(&format!("{base}/{name}")).await?, json),
        Command::Set(args) => set_settings(&api, &base, args).await,
        Command::Url { name, json } => {
            let answer: super::api::Answer<ServiceView> =
                api.get(&format!("{base}/{name}")).await?;
            if json {
                answer.print_json()?;
            } else if answer.view.urls.is_empty() {
                eprintln!("{name} has no URL: the server's ingress is off");
            } else {
                for url in &answer.view.urls {
                    println!("{url}");
                }
            }
            Ok(Outcome::Ok)
        }
        Command::Terminate { name, json } => {
            done(&api.delete(&format!("{base}/{name}")).await?, json)
        }
        Command::Registry(RegistryCommand::Remove { name, json }) => {
            done(&api.delete(&format!("{base}/{name}/registry")).await?, json)
        }
        Command::Registry(RegistryCommand::Set(args)) => set_registry(&api, &base, args).await,
        Command::Registry(RegistryCommand::Test(args)) => test_registry(&api, &base, args).await,
    }
}

/// `service create`: from flags, or the wizard when something is missing on a
/// terminal (unless the password comes from stdin, which the wizard cannot read).
async fn create(api: &Api, base: &str, args: CreateArgs) -> Result<Outcome, CliError> {
    let CreateArgs {
        name,
        image,
        registry,
        memory_mb,
        pids,
        cpus,
        restart_policy,
        traffic,
        run,
        json,
    } = args;
    let interactive = std::io::stdin().is_terminal() && !registry.registry_password_stdin;
    let (name, image) = match (name, image) {
        (Some(n), Some(i)) => (n, i),
        (name, image) if interactive => {
            let given = super::service_wizard::Given {
                name,
                image,
                registry,
                run,
            };
            return super::service_wizard::create(api, base, given, json).await;
        }
        (None, _) => return Err(CliError::Usage("NAME is required".into())),
        (_, None) => return Err(CliError::Usage("--image is required".into())),
    };
    one_reader_of_stdin(&registry, &run)?;
    let host = registry_host(registry.registry_url.as_deref(), Some(&image))?;
    let mut body = CreateService {
        name,
        image,
        // `null` when there are no credentials: the body has always carried the key.
        registry: new_registry(&registry, host)?,
        resources: resources(memory_mb, pids, cpus),
        restart_policy: restart_policy.parse().map_err(CliError::Usage)?,
        save_without_verifying: registry.save_without_verifying,
        port: traffic.port,
        health_path: traffic.health_path.clone(),
        domains: traffic.domains.clone(),
        network: traffic.network(),
        ..Default::default()
    };
    apply_new(&run, &mut body)?;
    saved(api.call(Method::POST, base, Some(&body)).await?, json)
}

/// Stdin carries one thing: the registry password or the secrets' values.
fn one_reader_of_stdin(registry: &RegistryFlags, run: &RunFlags) -> Result<(), CliError> {
    let password_piped = registry.registry_password_stdin && !std::io::stdin().is_terminal();
    if password_piped && !run.secrets.names.is_empty() {
        return Err(CliError::Usage(
            "--registry-password-stdin and --secret both read stdin: create the service, then add the secrets with `berth service set`".into(),
        ));
    }
    Ok(())
}

/// `service set`: the settings given; the others keep theirs.
async fn set_settings(api: &Api, base: &str, args: SettingsArgs) -> Result<Outcome, CliError> {
    let mut body = run_changes(&args)?;
    let SettingsArgs {
        name,
        traffic,
        no_domains,
        redeploy,
        json,
        ..
    } = args;
    body = UpdateService {
        port: traffic.port,
        health_path: traffic.health_path.clone(),
        domains: match (no_domains, traffic.domains.is_empty()) {
            (true, _) => Some(Vec::new()),
            (false, true) => None,
            (false, false) => Some(traffic.domains.clone()),
        },
        network: traffic.network(),
        redeploy,
        ..body
    };
    let answer: super::api::Answer<RegistrySaved> = api
        .call(Method::PUT, &format!("{base}/{name}"), Some(&body))
        .await?
        .map_err(CliError::from)?;
    if json {
        answer.print_json()?;
        return Ok(Outcome::Ok);
    }
    let deployment = answer.view.deployment.clone();
    done(&answer.map(|saved| saved.service), false)?;
    match &deployment {
        Some(d) => {
            println!(
                "deploying: {} (berth deploy {name} --follow to watch)",
                d.id
            );
            if let Some(why) = &d.message {
                eprintln!("waiting: {why}");
            }
        }
        None => println!("the new settings apply at the next deploy (berth deploy {name})"),
    }
    Ok(Outcome::Ok)
}

/// The run settings a `service set` changes (secrets read now); the rest of the
/// body is the caller's.
fn run_changes(args: &SettingsArgs) -> Result<UpdateService, CliError> {
    let run = &args.run;
    let set_and_removed = |set: &[&String], removed: &[String], what: &str| match removed
        .iter()
        .find(|r| set.contains(r))
    {
        Some(both) => Err(CliError::Usage(format!(
            "{both} is both set and removed: give one {what}"
        ))),
        None => Ok(()),
    };
    let mut env: BTreeMap<String, Option<String>> = env_given(run)?
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    set_and_removed(
        &env.keys().collect::<Vec<_>>(),
        &args.unset_env,
        "of --env and --unset-env",
    )?;
    let secret_names: Vec<&String> = run.secrets.names.iter().map(|n| &n.name).collect();
    set_and_removed(
        &secret_names,
        &args.remove_secret,
        "of --secret and --remove-secret",
    )?;
    env.extend(args.unset_env.iter().map(|n| (n.clone(), None)));
    let (secrets, secret_files) = secrets_given(run)?;
    let mut secrets: BTreeMap<String, Option<SecretString>> =
        secrets.into_iter().map(|(k, v)| (k, Some(v))).collect();
    secrets.extend(args.remove_secret.iter().map(|n| (n.clone(), None)));
    let words = |reset: bool, given: &Vec<String>| match (reset, given.is_empty()) {
        (true, _) => Some(Vec::new()),
        (false, true) => None,
        (false, false) => Some(given.clone()),
    };
    Ok(UpdateService {
        env: (!env.is_empty()).then_some(env),
        secrets: (!secrets.is_empty()).then_some(secrets),
        secret_files,
        command: words(args.no_command, &run.command),
        args: words(args.no_args, &run.args),
        volume: run.volume.clone(),
        region: run.region.clone(),
        ..Default::default()
    })
}

/// The container limits given, or `None` to leave all of them to the server.
fn resources(
    memory_mb: Option<u64>,
    pids: Option<i64>,
    cpus: Option<f64>,
) -> Option<ResourcesInput> {
    (memory_mb.is_some() || pids.is_some() || cpus.is_some()).then_some(ResourcesInput {
        memory_mb,
        pids,
        cpus,
    })
}

/// A new service's `registry` body, from the first credential source given: ECR
/// keys or role, a Google key, the Docker config, else a user name and password.
fn new_registry(registry: &RegistryFlags, host: String) -> Result<Option<RegistryInput>, CliError> {
    let url = registry
        .registry_url
        .clone()
        .unwrap_or_else(|| host.clone());
    let mut body = if let Some(aws) = aws_fields(registry)? {
        aws.input(url)
    } else if let Some(key) = gcp_json_key(registry)? {
        RegistryInput {
            registry_url: url,
            json_key: Some(key),
            username: registry.registry_username.clone(),
            ..Default::default()
        }
    } else if let Some(found) = imported(registry, &host)? {
        RegistryInput {
            registry_url: url,
            username: Some(found.username),
            password: Some(found.password),
            ..Default::default()
        }
    } else if let Some(url) = &registry.registry_url {
        let user = match &registry.registry_username {
            Some(u) => u.clone(),
            None => ask("Registry username", "--registry-username")?,
        };
        let pw = password(registry, &user)?;
        RegistryInput {
            registry_url: url.clone(),
            username: Some(user),
            password: Some(pw),
            ..Default::default()
        }
    } else {
        return Ok(None);
    };
    if let Some(kind) = &registry.kind {
        body.kind = Some(kind.clone());
    }
    Ok(Some(body))
}

/// `service list`: a table, or the JSON as the API answered it.
async fn list(api: &Api, base: &str, json: bool) -> Result<Outcome, CliError> {
    let services = api.get::<Vec<ServiceView>>(base).await?;
    if json {
        return services.print_json().map(|_| Outcome::Ok);
    }
    println!(
        "{:<20} {:<16} {:<40} {:<24} HEALTH",
        "NAME", "STATUS", "IMAGE", "REGISTRY"
    );
    for s in &services.view {
        println!(
            "{:<20} {:<16} {:<40} {:<24} {}",
            s.name,
            s.status,
            s.image,
            s.registry.as_ref().map_or("-", |r| r.registry_url.as_str()),
            health(s)
        );
    }
    Ok(Outcome::Ok)
}

/// The HEALTH column: the last check of the stored credentials, `-` without any.
fn health(service: &ServiceView) -> String {
    let Some(registry) = &service.registry else {
        return "-".to_owned();
    };
    match &registry.health {
        Some(h) if h.status == "failing" => format!("failing ({})", h.code),
        Some(h) => h.status.clone(),
        None => "not checked yet".to_owned(),
    }
}

/// `service registry set`: saves what was given (the server keeps the rest); with
/// `--redeploy`, watches the deployment it starts.
async fn set_registry(api: &Api, base: &str, args: SetArgs) -> Result<Outcome, CliError> {
    let mut body = changed_registry(&args)?;
    if args.registry.from_docker_config.is_some() {
        let host = replaced_registry_host(api, base, &args).await?;
        if let Some(found) = imported(&args.registry, &host)? {
            body.registry_url = Some(args.registry.registry_url.clone().unwrap_or(host));
            body.username = Some(found.username);
            body.password = Some(found.password);
        }
    }
    if let Some(kind) = &args.registry.kind {
        body.kind = Some(kind.clone());
    }
    let name = &args.name;
    let answer = api
        .call::<RegistrySaved>(Method::PUT, &format!("{base}/{name}/registry"), Some(&body))
        .await?;
    match answer {
        // A rotation: shown like `berth deploy` until the new deployment
        // runs (exit 1 if it fails; the running one is left alone).
        Ok(saved) if saved.view.deployment.is_some() => {
            let id = saved.view.deployment.as_ref().map(|d| d.id.clone());
            if !args.json {
                done(&saved.map(|s| s.service), false)?;
            }
            let watch = super::deploy::Watch {
                detach: false,
                follow: false,
                json: args.json,
            };
            let deployments = format!("{base}/{name}/deployments");
            super::deploy::watch(api, &deployments, &id.unwrap_or_default(), &watch).await
        }
        other => saved(other.map(|a| a.map(|s| s.service)), args.json),
    }
}

/// The `registry set` body from the flags alone (secrets read from stdin or a
/// prompt); `--from-docker-config` is added by the caller.
fn changed_registry(args: &SetArgs) -> Result<PutRegistry, CliError> {
    let registry = &args.registry;
    let mut body = PutRegistry {
        registry_url: registry.registry_url.clone(),
        username: registry.registry_username.clone(),
        image: args.image.clone(),
        save_without_verifying: registry.save_without_verifying,
        redeploy: args.redeploy,
        ..Default::default()
    };
    if registry.registry_password_stdin && registry.aws_access_key_id.is_none() {
        body.password = Some(input::secret_from_stdin("registry password")?);
    }
    body.json_key = gcp_json_key(registry)?;
    if let Some(aws) = aws_fields(registry)? {
        aws.put(&mut body);
    }
    Ok(body)
}

/// The registry whose Docker config credentials `registry set` imports: the one
/// of the credentials being replaced, unless another one is named.
async fn replaced_registry_host(api: &Api, base: &str, args: &SetArgs) -> Result<String, CliError> {
    match (&args.registry.registry_url, &args.image) {
        (None, None) => {
            let name = &args.name;
            let service = api
                .get::<ServiceView>(&format!("{base}/{name}"))
                .await?
                .view;
            let stored = service.registry.map(|r| r.registry_url);
            registry_host(stored.as_deref(), Some(&service.image))
        }
        (url, image) => registry_host(url.as_deref(), image.as_deref()),
    }
}

/// `service registry test`: a preflight of the stored registry with a password
/// given now; exits 1 when it fails.
async fn test_registry(api: &Api, base: &str, args: TestArgs) -> Result<Outcome, CliError> {
    let TestArgs {
        name,
        registry_password_stdin,
        json,
    } = args;
    let svc = api
        .get::<ServiceView>(&format!("{base}/{name}"))
        .await?
        .view;
    let Some(reg) = &svc.registry else {
        return Err(CliError::Usage(format!(
            "{name} has no registry credentials; use `berth service registry set`"
        )));
    };
    let user = ask_user_for_test(reg)?;
    let flags = RegistryFlags {
        registry_password_stdin,
        ..Default::default()
    };
    let pw = password(&flags, &user)?;
    let body = PreflightRequest {
        registry_url: reg.registry_url.clone(),
        username: Some(user),
        password: Some(pw),
        image: svc.image.clone(),
    };
    let answer = api.post::<PreflightReport>("/v1/preflight", &body).await?;
    let report = &answer.view;
    if json {
        answer.print_json()?;
    } else {
        print!("{}", super::preflight::render(report));
    }
    Ok(if report.ok {
        Outcome::Ok
    } else {
        Outcome::Failed
    })
}

/// The stored user name is masked, so the test asks for it (or takes it from env).
fn ask_user_for_test(reg: &RegistryView) -> Result<String, CliError> {
    match std::env::var("BERTH_REGISTRY_USERNAME") {
        Ok(u) if !u.is_empty() => Ok(u),
        _ => ask(
            &format!("Registry username (stored as {})", reg.username),
            "BERTH_REGISTRY_USERNAME",
        ),
    }
}
