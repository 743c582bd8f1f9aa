//! What a service runs with beyond its image: plain variables, secrets, command
//! and args, one volume, a region; parsed and checked at the edge for a new
//! service and for `PUT /v1/projects/{p}/services/{s}` (in `services`), and the
//! secrets sealed before anything is stored.
//!
//! A secret's value never appears in an error, a log line or an answer: errors
//! name the secret, never its value.

use std::collections::BTreeMap;

use berth_api::{CreateService, ErrorCode, UpdateService, VolumeInput};
use berth_runtime::settings::{is_posix_name, volume_path};
use berth_store::{ProjectId, Service, ServiceId, ServiceSecret, Settings, Volume};
use secrecy::{ExposeSecret, SecretString};

use crate::api::ApiError;
use crate::vault::Vault;

/// At most this many variables and secrets together.
pub const MAX_VARIABLES: usize = 200;
/// A variable's or a secret's value, at most.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// The command and args together, at most this many words and bytes.
const MAX_WORDS: usize = 256;
const MAX_COMMAND_BYTES: usize = 128 * 1024;
/// A volume's size, at most (64 GiB); its space is reserved on the host.
pub const MAX_VOLUME_MB: u64 = 64 * 1024;

fn bad(message: String) -> ApiError {
    ApiError::bad_request(ErrorCode::InvalidSettings, message)
}

/// A secret given in a request: its name, value and whether it is a file.
pub(super) struct GivenSecret {
    pub name: String,
    pub value: SecretString,
    pub as_file: bool,
}

/// What a settings change writes, secrets not sealed yet.
pub(super) struct Parsed {
    pub settings: Settings,
    pub set_secrets: Vec<GivenSecret>,
    pub remove_secrets: Vec<String>,
    /// The names of the settings that changed, for the audit.
    pub changed: Vec<&'static str>,
}

fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    if name.len() <= 255 && is_posix_name(name) {
        return Ok(());
    }
    Err(bad(format!(
        "the {kind} name {:?} is not a POSIX name (letters, digits and _, not starting with a digit, at most 255)",
        name.chars().take(64).collect::<String>()
    )))
}

fn check_env_value(name: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(bad(format!(
            "the value of {name} is over {MAX_VALUE_BYTES} bytes"
        )));
    }
    if value.contains('\0') {
        return Err(bad(format!("the value of {name} contains a NUL byte")));
    }
    Ok(())
}

/// The value is never quoted back: only the secret's name and what is wrong.
fn check_secret(name: &str, value: &SecretString, as_file: bool) -> Result<(), ApiError> {
    check_name("secret", name)?;
    let v = value.expose_secret();
    if v.len() > MAX_VALUE_BYTES {
        return Err(bad(format!(
            "the secret {name} is over {MAX_VALUE_BYTES} bytes"
        )));
    }
    if !as_file && v.contains('\0') {
        return Err(bad(format!(
            "the secret {name} contains a NUL byte (give it as a file)"
        )));
    }
    Ok(())
}

fn words(kind: &str, given: &Option<Vec<String>>) -> Result<Option<Vec<String>>, ApiError> {
    let Some(w) = given else { return Ok(None) };
    if w.iter().any(|w| w.contains('\0')) {
        return Err(bad(format!("the {kind} contains a NUL byte")));
    }
    if w.len() > MAX_WORDS || w.iter().map(String::len).sum::<usize>() > MAX_COMMAND_BYTES {
        return Err(bad(format!(
            "the {kind} is over {MAX_WORDS} words or {MAX_COMMAND_BYTES} bytes"
        )));
    }
    // `[]` is none: the image's own.
    Ok((!w.is_empty()).then(|| w.clone()))
}

fn volume(v: &VolumeInput) -> Result<Volume, ApiError> {
    let path = volume_path(&v.path).map_err(|e| bad(e.to_string()))?;
    if !(1..=MAX_VOLUME_MB).contains(&v.size_mb) {
        return Err(bad(format!(
            "the volume's size_mb {} is not between 1 and {MAX_VOLUME_MB}",
            v.size_mb
        )));
    }
    Ok(Volume {
        path,
        size_mb: v.size_mb,
    })
}

/// No name is both a plain variable and a secret; together at most
/// [`MAX_VARIABLES`].
fn check_names_apart<'a>(
    env: &BTreeMap<String, String>,
    secrets: impl Iterator<Item = &'a str>,
) -> Result<(), ApiError> {
    let mut count = env.len();
    for s in secrets {
        count += 1;
        if env.contains_key(s) {
            return Err(bad(format!(
                "{s} is both a variable and a secret; remove one"
            )));
        }
    }
    if count > MAX_VARIABLES {
        return Err(bad(format!(
            "at most {MAX_VARIABLES} variables and secrets together"
        )));
    }
    Ok(())
}

fn secret_files_known(
    files: &[String],
    mut given: impl FnMut(&str) -> bool,
) -> Result<(), ApiError> {
    match files.iter().find(|f| !given(f)) {
        Some(f) => Err(bad(format!(
            "secret_files names {f:?}, which is not among the secrets given"
        ))),
        None => Ok(()),
    }
}

/// The settings of a new service.
pub(super) fn parse_new(body: &CreateService) -> Result<Parsed, ApiError> {
    for (n, v) in &body.env {
        check_name("environment variable", n)?;
        check_env_value(n, v)?;
    }
    secret_files_known(&body.secret_files, |f| body.secrets.contains_key(f))?;
    let mut set_secrets = Vec::new();
    for (n, v) in &body.secrets {
        let as_file = body.secret_files.contains(n);
        check_secret(n, v, as_file)?;
        set_secrets.push(GivenSecret {
            name: n.clone(),
            value: v.clone(),
            as_file,
        });
    }
    check_names_apart(&body.env, body.secrets.keys().map(String::as_str))?;
    let settings = Settings {
        env: body.env.clone(),
        command: words("command", &body.command)?,
        args: words("args", &body.args)?,
        volume: body.volume.as_ref().map(volume).transpose()?,
        region: crate::config::region(body.region.as_deref().unwrap_or("")).map_err(bad)?,
    };
    Ok(Parsed {
        settings,
        set_secrets,
        remove_secrets: Vec::new(),
        changed: Vec::new(),
    })
}

/// `stored`'s settings with what `body` changes.
pub(super) fn merged(stored: &Service, body: &UpdateService) -> Result<Parsed, ApiError> {
    let mut s = stored.settings.clone();
    let mut changed = Vec::new();
    if let Some(env) = &body.env {
        for (n, v) in env {
            match v {
                Some(v) => {
                    check_name("environment variable", n)?;
                    check_env_value(n, v)?;
                    s.env.insert(n.clone(), v.clone());
                }
                None => {
                    s.env.remove(n);
                }
            }
        }
    }
    let given = body.secrets.clone().unwrap_or_default();
    secret_files_known(&body.secret_files, |f| {
        matches!(given.get(f), Some(Some(_)))
    })?;
    let (mut set_secrets, mut remove_secrets) = (Vec::new(), Vec::new());
    for (n, v) in given {
        match v {
            Some(value) => {
                let as_file = body.secret_files.contains(&n);
                check_secret(&n, &value, as_file)?;
                set_secrets.push(GivenSecret {
                    name: n,
                    value,
                    as_file,
                });
            }
            None if stored.secrets.iter().any(|k| k.name == n) => remove_secrets.push(n),
            None => {}
        }
    }
    let kept = stored.secrets.iter().map(|k| k.name.as_str()).filter(|n| {
        !remove_secrets.iter().any(|r| r == n) && !set_secrets.iter().any(|g| g.name == *n)
    });
    check_names_apart(
        &s.env,
        kept.chain(set_secrets.iter().map(|g| g.name.as_str())),
    )?;
    if body.command.is_some() {
        s.command = words("command", &body.command)?;
    }
    if body.args.is_some() {
        s.args = words("args", &body.args)?;
    }
    if let Some(v) = &body.volume {
        let v = volume(v)?;
        if let Some(old) = &stored.settings.volume {
            if v.size_mb < old.size_mb {
                return Err(bad(format!(
                    "the volume's size cannot shrink ({} MB to {} MB): its data would not fit",
                    old.size_mb, v.size_mb
                )));
            }
        }
        s.volume = Some(v);
    }
    if let Some(r) = &body.region {
        s.region = crate::config::region(r).map_err(bad)?;
    }
    let old = &stored.settings;
    for (name, c) in [
        ("env", s.env != old.env),
        (
            "secrets",
            !set_secrets.is_empty() || !remove_secrets.is_empty(),
        ),
        ("command", s.command != old.command),
        ("args", s.args != old.args),
        ("volume", s.volume != old.volume),
        ("region", s.region != old.region),
    ] {
        if c {
            changed.push(name);
        }
    }
    Ok(Parsed {
        settings: s,
        set_secrets,
        remove_secrets,
        changed,
    })
}

/// Seals `given` for (project, service, name). On failure, what was already put
/// in an external store is discarded.
pub(super) async fn seal(
    vault: &dyn Vault,
    project: &ProjectId,
    service: &ServiceId,
    given: Vec<GivenSecret>,
) -> Result<Vec<ServiceSecret>, ApiError> {
    let mut sealed: Vec<ServiceSecret> = Vec::new();
    for g in given {
        match vault
            .put(
                project,
                &crate::vault::secret_binding(service, &g.name),
                &g.value,
            )
            .await
        {
            Ok(secret) => sealed.push(ServiceSecret {
                name: g.name,
                as_file: g.as_file,
                secret,
                updated_at: chrono::Utc::now(),
            }),
            Err(e) => {
                discard(vault, &sealed).await;
                return Err(e.into());
            }
        }
    }
    Ok(sealed)
}

/// Undoes [`seal`] when the write that should have kept them failed.
pub(super) async fn discard(vault: &dyn Vault, sealed: &[ServiceSecret]) {
    for s in sealed {
        vault.discard(&s.secret).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(json: serde_json::Value) -> Result<Parsed, ApiError> {
        parse_new(&serde_json::from_value(json).unwrap())
    }

    #[test]
    fn names_values_and_paths_are_checked_at_the_edge() {
        let ok = create(serde_json::json!({"name": "a", "image": "x",
            "env": {"A": "1", "_B2": ""}, "secrets": {"KEY": "hunter2", "CERT": "pem"},
            "secret_files": ["CERT"], "command": ["/bin/sh"], "args": [],
            "volume": {"path": "/data/./x/", "size_mb": 10}, "region": "eu-west-1"}))
        .ok()
        .unwrap();
        assert_eq!(ok.settings.volume.unwrap().path, "/data/x");
        assert_eq!(ok.settings.args, None);
        assert!(ok.set_secrets.iter().any(|s| s.name == "CERT" && s.as_file));
        for bad in [
            serde_json::json!({"env": {"1A": "x"}}),
            serde_json::json!({"env": {"A-B": "x"}}),
            serde_json::json!({"env": {"A": "x\u{0}"}}),
            serde_json::json!({"env": {"A": "x".repeat(MAX_VALUE_BYTES + 1)}}),
            serde_json::json!({"env": {"A": "1"}, "secrets": {"A": "2"}}),
            serde_json::json!({"secrets": {"B": "v"}, "secret_files": ["C"]}),
            serde_json::json!({"volume": {"path": "/", "size_mb": 1}}),
            serde_json::json!({"volume": {"path": "/proc/x", "size_mb": 1}}),
            serde_json::json!({"volume": {"path": "/dev", "size_mb": 1}}),
            serde_json::json!({"volume": {"path": "/sys", "size_mb": 1}}),
            serde_json::json!({"volume": {"path": "/data/../etc", "size_mb": 1}}),
            serde_json::json!({"volume": {"path": "data", "size_mb": 1}}),
            serde_json::json!({"volume": {"path": "/data", "size_mb": 0}}),
            serde_json::json!({"region": "EU West"}),
        ] {
            let mut body = bad.clone();
            body["name"] = "a".into();
            body["image"] = "x".into();
            assert!(create(body).is_err(), "{bad}");
        }
        let many: BTreeMap<String, String> = (0..=MAX_VARIABLES)
            .map(|i| (format!("V{i}"), String::new()))
            .collect();
        assert!(create(serde_json::json!({"name": "a", "image": "x", "env": many})).is_err());
    }

    #[test]
    fn a_secret_value_is_never_in_an_error() {
        let value = "s3cr3t-\u{0}-value";
        let e = create(serde_json::json!({"name": "a", "image": "x", "secrets": {"K": value}}))
            .err()
            .unwrap();
        let shown = format!("{e:?} {}", e.body.message);
        assert!(shown.contains('K') && !shown.contains("s3cr3t"), "{shown}");
        let long = "s3cr3t".repeat(MAX_VALUE_BYTES);
        let e = create(serde_json::json!({"name": "a", "image": "x", "secrets": {"K": long}}))
            .err()
            .unwrap();
        assert!(!format!("{e:?} {}", e.body.message).contains("s3cr3t"));
    }
}
