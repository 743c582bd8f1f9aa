//! `berth service create` on a terminal with something missing: the seed's wizard.
//! Name, image, "Private registry?", URL, username, password (masked), Test
//! connection with the step results, then Save, or "Save without verifying?" when
//! the test fails. Prompts go to stderr; stdout keeps only the result.

use berth_api::{CreateService, PreflightRequest, RegistryInput};
use berth_registry::PreflightReport;
use berth_types::{ImageRef, Slug};
use dialoguer::theme::SimpleTheme;
use dialoguer::{Confirm, Input, Password};
use reqwest::Method;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::api::Api;
use super::service_save::{saved, RegistryFlags};
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

pub async fn create(
    api: &Api,
    base: &str,
    name: Option<String>,
    image: Option<String>,
    flags: RegistryFlags,
    json: bool,
) -> Result<Outcome, CliError> {
    let theme = SimpleTheme;
    let name = match name {
        Some(n) => n,
        None => Input::<String>::with_theme(&theme)
            .with_prompt("Service name")
            .validate_with(|s: &String| s.parse::<Slug>().map(|_| ()).map_err(|e| e.to_string()))
            .interact_text()
            .map_err(prompt_err)?,
    };
    let image = match image {
        Some(i) => i,
        None => Input::<String>::with_theme(&theme)
            .with_prompt("Image (e.g. ghcr.io/acme/api:v2)")
            .validate_with(|s: &String| {
                s.parse::<ImageRef>().map(|_| ()).map_err(|e| e.to_string())
            })
            .interact_text()
            .map_err(prompt_err)?,
    };
    let private = flags.registry_url.is_some()
        || Confirm::with_theme(&theme)
            .with_prompt("Private registry?")
            .default(false)
            .interact()
            .map_err(prompt_err)?;
    if !private {
        let body = CreateService {
            name,
            image,
            registry: None,
            resources: None,
            restart_policy: Default::default(),
            save_without_verifying: false,
            ..Default::default()
        };
        return saved(api.call(Method::POST, base, Some(&body)).await?, json);
    }

    let mut url = flags.registry_url.unwrap_or_else(|| registry_of(&image));
    let mut user = flags.registry_username.unwrap_or_default();
    loop {
        url = Input::<String>::with_theme(&theme)
            .with_prompt("Registry URL")
            .with_initial_text(url)
            .interact_text()
            .map_err(prompt_err)?;
        let mut input = Input::<String>::with_theme(&theme).with_prompt("Username");
        if !user.is_empty() {
            input = input.with_initial_text(user);
        }
        user = input.interact_text().map_err(prompt_err)?;
        let password = SecretString::from(
            Zeroizing::new(
                Password::with_theme(&theme)
                    .with_prompt("Password or token")
                    .interact()
                    .map_err(prompt_err)?,
            )
            .to_string(),
        );

        eprintln!("Testing the connection to {url}...");
        let body = PreflightRequest {
            registry_url: url.clone(),
            username: Some(user.clone()),
            password: Some(password.clone()),
            image: image.clone(),
        };
        let answer = api.call::<PreflightReport>(Method::POST, "/v1/preflight", Some(&body));
        let passed = match answer.await? {
            Ok(report) => {
                eprint!("{}", super::preflight::render(&report.view));
                report.view.ok
            }
            Err(f) => {
                let code = f.code().map_or("error", |c| c.as_str());
                eprintln!("the test could not run: {} ({code})", f.message());
                false
            }
        };
        let ask = |q: &str, default: bool| {
            Confirm::with_theme(&theme)
                .with_prompt(q)
                .default(default)
                .interact()
                .map_err(prompt_err)
        };
        let save_without_verifying = if passed {
            if !ask("Save?", true)? {
                eprintln!("not saved");
                return Ok(Outcome::Failed);
            }
            false
        } else if ask("Try other credentials?", true)? {
            continue;
        } else if ask("Save without verifying?", false)? {
            true
        } else {
            eprintln!("not saved");
            return Ok(Outcome::Failed);
        };
        let body = CreateService {
            name,
            image,
            registry: Some(RegistryInput {
                registry_url: url,
                username: Some(user),
                password: Some(password),
                ..Default::default()
            }),
            resources: None,
            restart_policy: Default::default(),
            save_without_verifying,
            ..Default::default()
        };
        return saved(api.call(Method::POST, base, Some(&body)).await?, json);
    }
}
