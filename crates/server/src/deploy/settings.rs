//! What a deployment runs with over its image, read at deploy time: the
//! service's variables, command, args and volume as stored, and its secrets
//! opened from the vault for this start only (they live in memory, in
//! zeroized `SecretString`s, until the runtime writes them where the container
//! reads them). Both runtimes take the same [`RunSettings`].

use std::path::Path;

use berth_runtime::settings::{RunSettings, VolumeSpec};
use berth_store::{Service, ServiceSecret};

use super::failure::Failure;
use super::{log, Worker};

/// The service's secrets as stored (sealed), read with the service at the
/// deploy's start: the start itself then needs no database (one that restarts
/// during the pull does not fail the deploy).
pub(super) async fn sealed(w: &Worker, service: &Service) -> Result<Vec<ServiceSecret>, Failure> {
    w.store
        .service_secrets(&service.id)
        .await
        .map_err(|e| Failure::runtime(e.to_string()))
}

/// The settings `service` runs with; its `secrets` opened.
pub(super) async fn of(
    w: &Worker,
    service: &Service,
    secrets: Vec<ServiceSecret>,
    log: &Path,
) -> Result<RunSettings, Failure> {
    let s = &service.settings;
    let mut out = RunSettings {
        env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        command: s.command.clone(),
        args: s.args.clone(),
        volume: s.volume.as_ref().map(|v| VolumeSpec {
            service_id: service.id.as_str().to_owned(),
            path: v.path.clone(),
            size_mb: v.size_mb,
        }),
        ..Default::default()
    };
    for secret in &secrets {
        let binding = crate::vault::secret_binding(&service.id, &secret.name);
        let value = w
            .vault
            .get(&service.project_id, &binding, &secret.secret)
            .await
            .map_err(|e| Failure::runtime(format!("opening the secret {}: {e}", secret.name)))?;
        match secret.as_file {
            true => out.secret_files.push((secret.name.clone(), value)),
            false => out.secret_env.push((secret.name.clone(), value)),
        }
    }
    out.check().map_err(|e| Failure::runtime(e.to_string()))?;
    if let Some(line) = describe(&out) {
        log::append(log, &line);
    }
    Ok(out)
}

/// One log line saying what is set, by name only (never a value); none when
/// the image runs as built.
fn describe(s: &RunSettings) -> Option<String> {
    let names = |v: &[(String, secrecy::SecretString)]| -> String {
        v.iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if !s.env.is_empty() {
        parts.push(format!(
            "variables {}",
            s.env
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !s.secret_env.is_empty() {
        parts.push(format!("secret variables {}", names(&s.secret_env)));
    }
    if !s.secret_files.is_empty() {
        parts.push(format!(
            "secret files {} under {}",
            names(&s.secret_files),
            berth_runtime::settings::SECRETS_PATH
        ));
    }
    if let Some(c) = &s.command {
        parts.push(format!("command {c:?}"));
    }
    if let Some(a) = &s.args {
        parts.push(format!("args {a:?}"));
    }
    if let Some(v) = &s.volume {
        parts.push(format!("volume at {} of {} MB", v.path, v.size_mb));
    }
    (!parts.is_empty()).then(|| format!("settings: {}", parts.join("; ")))
}
