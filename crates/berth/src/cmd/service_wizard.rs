//! `berth service create` on a terminal with something missing: the seed's wizard.
//! Name, image, "Private registry?", URL, username, password (masked), Test
//! connection with the step results, then Save, or "Save without verifying?" when
//! the test fails; "Add environment variables?" when no --env was given. Prompts
//! go to stderr; stdout keeps only the result.

use std::collections::BTreeMap;

use berth_api::{CreateService, PreflightRequest, RegistryInput};
use berth_registry::PreflightReport;
use berth_types::{ImageRef, Slug};
use dialoguer::theme::SimpleTheme;
use dialoguer::{Confirm, Input, Password};
use reqwest::Method;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::api::Api;
use super::service_save::{apply_new, saved, RegistryFlags, RunFlags};
use super::{CliError, Outcome};

fn prompt_err(e: dialoguer::Error) -> CliError {
    CliError::Usage(format!("cannot read from the terminal: {e}"))
}

/// The registry an image names (Docker Hub when it names none), as a URL default.
fn registry_of(image: &str) -> String {
    image
        .parse::<ImageRef>()
        .map(|r| r.registry().to_owned())
        .unwrap_or_default()
}

/// What the command line gave the wizard.
pub struct Given {
    pub name: Option<String>,
    pub image: Option<String>,
    pub registry: RegistryFlags,
    pub run: RunFlags,
}

pub async fn create(api: &Api, base: &str, given: Given, json: bool) -> Result<Outcome, CliError> {
    let theme = SimpleTheme;
    let (name, image) = name_and_image(&theme, given.name, given.image)?;
    let mut body = CreateService {
        name,
        image,
        ..Default::default()
    };
    apply_new(&given.run, &mut body)?;
    if given.run.env.is_empty() && given.run.env_file.is_empty() {
        body.env = ask_env(&theme)?;
    }
    let flags = given.registry;
    let private = flags.registry_url.is_some()
        || Confirm::with_theme(&theme)
            .with_prompt("Private registry?")
            .default(false)
            .interact()
            .map_err(prompt_err)?;
    if private {
        match ask_registry(api, &theme, &body.image, flags).await? {
            Some((registry, save_without_verifying)) => {
                body.registry = Some(registry);
                body.save_without_verifying = save_without_verifying;
            }
            None => {
                eprintln!("not saved");
                return Ok(Outcome::Failed);
            }
        }
    }
    saved(api.call(Method::POST, base, Some(&body)).await?, json)
}

/// The name and image given, or asked for.
fn name_and_image(
    theme: &SimpleTheme,
    name: Option<String>,
    image: Option<String>,
) -> Result<(String, String), CliError> {
    let name = match name {
        Some(n) => n,
        None => Input::<String>::with_theme(theme)
            .with_prompt("Service name")
            .validate_with(|s: &String| s.parse::<Slug>().map(|_| ()).map_err(|e| e.to_string()))
            .interact_text()
            .map_err(prompt_err)?,
    };
    let image = match image {
        Some(i) => i,
        None => Input::<String>::with_theme(theme)
            .with_prompt("Image (e.g. ghcr.io/acme/api:v2)")
            .validate_with(|s: &String| {
                s.parse::<ImageRef>().map(|_| ()).map_err(|e| e.to_string())
            })
            .interact_text()
            .map_err(prompt_err)?,
    };
    Ok((name, image))
}

/// "Add environment variables?", then NAME=VALUE lines until an empty one.
fn ask_env(theme: &SimpleTheme) -> Result<BTreeMap<String, String>, CliError> {
    let mut env = BTreeMap::new();
    let wanted = Confirm::with_theme(theme)
        .with_prompt("Add environment variables?")
        .default(false)
        .interact()
        .map_err(prompt_err)?;
    if !wanted {
        return Ok(env);
    }
    loop {
        let line = Input::<String>::with_theme(theme)
            .with_prompt("NAME=VALUE (empty to finish)")
            .allow_empty(true)
            .validate_with(|s: &String| match s.split_once('=') {
                _ if s.is_empty() => Ok(()),
                Some((n, _)) if !n.is_empty() => Ok(()),
                _ => Err("not NAME=VALUE"),
            })
            .interact_text()
            .map_err(prompt_err)?;
        let Some((n, v)) = line.split_once('=') else {
            break;
        };
        env.insert(n.to_owned(), v.to_owned());
    }
    Ok(env)
}

/// URL, username and password, tested until they pass and "Save?" is answered,
/// or "Save without verifying?" is: the credentials and whether they were
/// saved unverified; `None` when nothing is to be saved.
async fn ask_registry(
    api: &Api,
    theme: &SimpleTheme,
    image: &str,
    flags: RegistryFlags,
) -> Result<Option<(RegistryInput, bool)>, CliError> {
    let mut url = flags.registry_url.unwrap_or_else(|| registry_of(image));
    let mut user = flags.registry_username.unwrap_or_default();
    let ask = |q: &str, default: bool| {
        Confirm::with_theme(theme)
            .with_prompt(q)
            .default(default)
            .interact()
            .map_err(prompt_err)
    };
    loop {
        url = Input::<String>::with_theme(theme)
            .with_prompt("Registry URL")
            .with_initial_text(url)
            .interact_text()
            .map_err(prompt_err)?;
        let mut input = Input::<String>::with_theme(theme).with_prompt("Username");
        if !user.is_empty() {
            input = input.with_initial_text(user);
        }
        user = input.interact_text().map_err(prompt_err)?;
        let password = SecretString::from(
            Zeroizing::new(
                Password::with_theme(theme)
                    .with_prompt("Password or token")
                    .interact()
                    .map_err(prompt_err)?,
            )
            .to_string(),
        );
        let passed = test_connection(api, &url, &user, &password, image).await?;
        let save_without_verifying = if passed {
            if !ask("Save?", true)? {
                return Ok(None);
            }
            false
        } else if ask("Try other credentials?", true)? {
            continue;
        } else if ask("Save without verifying?", false)? {
            true
        } else {
            return Ok(None);
        };
        let registry = RegistryInput {
            registry_url: url,
            username: Some(user),
            password: Some(password),
            ..Default::default()
        };
        return Ok(Some((registry, save_without_verifying)));
    }
}

/// Test Connection: the steps on stderr; whether it passed.
async fn test_connection(
    api: &Api,
    url: &str,
    user: &str,
    password: &SecretString,
    image: &str,
) -> Result<bool, CliError> {
    eprintln!("Testing the connection to {url}...");
    let body = PreflightRequest {
        registry_url: url.to_owned(),
        username: Some(user.to_owned()),
        password: Some(password.clone()),
        image: image.to_owned(),
    };
    let answer = api.call::<PreflightReport>(Method::POST, "/v1/preflight", Some(&body));
    Ok(match answer.await? {
        Ok(report) => {
            eprint!("{}", super::preflight::render(&report.view));
            report.view.ok
        }
        Err(f) => {
            let code = f.code().map_or("error", |c| c.as_str());
            eprintln!("the test could not run: {} ({code})", f.message());
            false
        }
    })
}
