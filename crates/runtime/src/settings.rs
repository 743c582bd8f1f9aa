//! What a service sets over its image for one container: environment variables,
//! secrets (as variables or as files), the command and its arguments, and one
//! persistent volume. Pure: checked here and merged into the image's own values
//! here; [`crate::runc`] puts the result into the runtime spec, [`crate::volume`]
//! keeps the volume.
//!
//! Names and paths are validated at the API's edge; this module refuses them again
//! (a runtime never trusts what it mounts or execs on another layer's word).

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

/// What a service sets over its image, for one container.
#[derive(Clone, Default)]
pub struct RunSettings {
    /// Over the image's Env (a same-named variable replaced), in order.
    pub env: Vec<(String, String)>,
    /// Secrets given as environment variables (over `env` and the image's Env).
    pub secret_env: Vec<(String, SecretString)>,
    /// Secrets given as files `/run/secrets/NAME`, mode 0400, owned by the container's user.
    pub secret_files: Vec<(String, SecretString)>,
    /// Replaces the image's Entrypoint; the image's Cmd is then dropped unless `args` is set (Kubernetes' rule).
    pub command: Option<Vec<String>>,
    /// Replaces the image's Cmd.
    pub args: Option<Vec<String>>,
    pub volume: Option<VolumeSpec>,
}

/// A service's one volume: kept across its deploys, `size_mb` MiB at most, mounted
/// at `path` in its containers.
#[derive(Clone, Debug, PartialEq)]
pub struct VolumeSpec {
    pub service_id: String,
    pub path: String,
    pub size_mb: u64,
}

/// Where secret files appear in the container.
pub const SECRETS_PATH: &str = "/run/secrets";

/// PATH when the image sets none (Docker's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Settings the runtime refuses; the message names the setting (never a secret's value).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(String);

impl fmt::Debug for RunSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |v: &[(String, SecretString)]| -> Vec<String> {
            v.iter().map(|(n, _)| format!("{n}=[REDACTED]")).collect()
        };
        f.debug_struct("RunSettings")
            .field("env", &self.env)
            .field("secret_env", &names(&self.secret_env))
            .field("secret_files", &names(&self.secret_files))
            .field("command", &self.command)
            .field("args", &self.args)
            .field("volume", &self.volume)
            .finish()
    }
}

/// Whether `name` is a POSIX name (`[A-Za-z_][A-Za-z0-9_]*`): what a shell can
/// name as a variable, and a file name with nothing to resolve.
pub fn is_posix_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `id` can name a volume's files: `[A-Za-z0-9_.-]`, not starting with `.`.
fn is_file_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Checks a service id before it names files of the volume directory.
pub fn check_service_id(id: &str) -> Result<(), Invalid> {
    if is_file_name(id) {
        Ok(())
    } else {
        Err(Invalid(format!(
            "the volume's service id {id:?} is not a plain name (letters, digits, _ . -)"
        )))
    }
}

impl VolumeSpec {
    /// The path in the container, normalized (`.` and empty components dropped),
    /// or why it is refused: not absolute, `/`, `..` in it, at or under `/proc`,
    /// `/sys` or `/dev` (the container's own kernel views), or at or under
    /// [`SECRETS_PATH`] (the secret files' place).
    pub fn container_path(&self) -> Result<String, Invalid> {
        volume_path(&self.path)
    }
}

/// A volume's path in the container, normalized, or why it is refused (see
/// [`VolumeSpec::container_path`]); the API checks a requested path with it.
pub fn volume_path(p: &str) -> Result<String, Invalid> {
    let refuse = |why: &str| Err(Invalid(format!("the volume path {p:?} {why}")));
    if !p.starts_with('/') {
        return refuse("is not absolute");
    }
    if p.contains('\0') {
        return refuse("contains a NUL byte");
    }
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.contains(&"..") {
        return refuse("contains `..`");
    }
    match parts.first().copied() {
        None => return refuse("is the container's root"),
        Some(top @ ("proc" | "sys" | "dev")) => {
            return refuse(&format!("is at or under /{top}, which the kernel provides"))
        }
        Some(_) => {}
    }
    if parts.starts_with(&["run", "secrets"]) {
        return refuse(&format!(
            "is at or under {SECRETS_PATH}, where secret files go"
        ));
    }
    Ok(format!("/{}", parts.join("/")))
}

impl VolumeSpec {
    /// Everything [`VolumeSpec::container_path`] checks, the service id and a size.
    pub fn check(&self) -> Result<(), Invalid> {
        check_service_id(&self.service_id)?;
        self.container_path()?;
        if self.size_mb == 0 {
            return Err(Invalid("the volume's size must be at least 1 MB".into()));
        }
        Ok(())
    }
}

impl RunSettings {
    /// Refuses what the runtime will not run: variable and secret names that are
    /// not POSIX names, NUL bytes in values or arguments, a bad volume.
    pub fn check(&self) -> Result<(), Invalid> {
        let name = |kind: &str, n: &str| {
            if is_posix_name(n) {
                Ok(())
            } else {
                Err(Invalid(format!(
                    "the {kind} name {n:?} is not a POSIX name (letters, digits and _, not starting with a digit)"
                )))
            }
        };
        for (n, v) in &self.env {
            name("environment variable", n)?;
            if v.contains('\0') {
                return Err(Invalid(format!(
                    "the environment variable {n}'s value contains a NUL byte"
                )));
            }
        }
        for (kind, secrets) in [
            ("secret variable", &self.secret_env),
            ("secret file", &self.secret_files),
        ] {
            for (n, v) in secrets {
                name(kind, n)?;
                if kind == "secret variable" && v.expose_secret().contains('\0') {
                    return Err(Invalid(format!(
                        "the {kind} {n}'s value contains a NUL byte"
                    )));
                }
            }
        }
        for (kind, words) in [("command", &self.command), ("args", &self.args)] {
            if words.iter().flatten().any(|w| w.contains('\0')) {
                return Err(Invalid(format!("the {kind} contains a NUL byte")));
            }
        }
        if let Some(v) = &self.volume {
            v.check()?;
        }
        Ok(())
    }

    /// The process's arguments over the image's Entrypoint and Cmd, by Kubernetes'
    /// rule: `command` replaces the Entrypoint and drops the Cmd, `args` replaces
    /// the Cmd.
    pub fn process_args(&self, entrypoint: &[String], cmd: &[String]) -> Vec<String> {
        let head = self.command.as_deref().unwrap_or(entrypoint);
        let tail: &[String] = match (&self.command, &self.args) {
            (_, Some(args)) => args,
            (Some(_), None) => &[],
            (None, None) => cmd,
        };
        head.iter().chain(tail).cloned().collect()
    }

    /// The process's environment (`NAME=value`): the image's Env, then `env`, then
    /// `secret_env`, each replacing a same-named variable in place or added in
    /// order; PATH defaulted when nothing sets it. Holds the secrets' values: it
    /// goes into the spec only.
    pub fn process_env(&self, image_env: &[String]) -> Vec<String> {
        let mut env = image_env.to_vec();
        let name_of = |e: &str| e.split_once('=').map_or(e, |(n, _)| n).to_owned();
        let mut set = |name: &str, value: &str| {
            let entry = format!("{name}={value}");
            match env.iter().position(|e| name_of(e) == name) {
                Some(i) => env[i] = entry,
                None => env.push(entry),
            }
        };
        for (n, v) in &self.env {
            set(n, v);
        }
        for (n, v) in &self.secret_env {
            set(n, v.expose_secret());
        }
        if !env.iter().any(|e| name_of(e) == "PATH") {
            env.push(DEFAULT_PATH.into());
        }
        env
    }

    /// Whether the container needs anything outside its bundle: secrets (kept off
    /// the disk) or a volume.
    pub fn needs_private_dir(&self) -> bool {
        !self.secret_env.is_empty() || !self.secret_files.is_empty() || self.volume.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_follow_kubernetes_rule() {
        let (ep, cmd) = (strings(&["/entry"]), strings(&["serve", "--port=1"]));
        let check = |command: Option<&[&str]>, args: Option<&[&str]>| {
            RunSettings {
                command: command.map(strings),
                args: args.map(strings),
                ..Default::default()
            }
            .process_args(&ep, &cmd)
        };
        assert_eq!(check(None, None), strings(&["/entry", "serve", "--port=1"]));
        assert_eq!(check(Some(&["/bin/sh"]), None), strings(&["/bin/sh"]));
        assert_eq!(
            check(None, Some(&["migrate"])),
            strings(&["/entry", "migrate"])
        );
        assert_eq!(
            check(Some(&["/bin/sh"]), Some(&["-c", "x"])),
            strings(&["/bin/sh", "-c", "x"])
        );
        assert_eq!(check(None, Some(&[])), strings(&["/entry"]));
    }

    #[test]
    fn env_is_merged_over_the_image_in_order() {
        let s = RunSettings {
            env: vec![
                ("B".into(), "from-service".into()),
                ("NEW".into(), "1".into()),
                ("C".into(), "plain".into()),
            ],
            secret_env: vec![("C".into(), "hidden".into())],
            ..Default::default()
        };
        assert_eq!(
            s.process_env(&strings(&["A=1", "B=from-image", "PATH=/x"])),
            strings(&["A=1", "B=from-service", "PATH=/x", "NEW=1", "C=hidden"])
        );
        assert_eq!(
            RunSettings::default().process_env(&strings(&["A=1"])),
            strings(&["A=1", DEFAULT_PATH])
        );
    }

    #[test]
    fn names_and_paths_are_refused_as_the_runtime_would_not_run_them() {
        let volume = |path: &str| RunSettings {
            volume: Some(VolumeSpec {
                service_id: "svc-1".into(),
                path: path.into(),
                size_mb: 16,
            }),
            ..Default::default()
        };
        for (path, said) in [
            ("data", "is not absolute"),
            ("/", "is the container's root"),
            ("//./", "is the container's root"),
            ("/proc", "/proc"),
            ("/sys/fs/x", "/sys"),
            ("/dev/shm", "/dev"),
            ("/data/../etc", "`..`"),
            ("/run/secrets", "secret files"),
        ] {
            let e = volume(path).check().unwrap_err().to_string();
            assert!(e.contains(said), "{path}: {e}");
        }
        for path in ["/data", "/var/lib/db/", "/proc2", "/a..b", "/run"] {
            volume(path)
                .check()
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        assert_eq!(
            volume("/var//./lib/db/")
                .volume
                .unwrap()
                .container_path()
                .unwrap(),
            "/var/lib/db"
        );
        let mut bad_id = volume("/data");
        bad_id.volume.as_mut().unwrap().service_id = "../x".into();
        assert!(bad_id.check().is_err());

        for name in ["1A", "A-B", "", "A B", "A=B", "x/y", "é"] {
            let env = RunSettings {
                env: vec![(name.into(), "v".into())],
                ..Default::default()
            };
            assert!(
                env.check().unwrap_err().to_string().contains("POSIX"),
                "{name:?}"
            );
            let file = RunSettings {
                secret_files: vec![(name.into(), "v".into())],
                ..Default::default()
            };
            assert!(file.check().is_err(), "{name:?}");
            let var = RunSettings {
                secret_env: vec![(name.into(), "v".into())],
                ..Default::default()
            };
            assert!(var.check().is_err(), "{name:?}");
        }
        let ok = RunSettings {
            env: vec![("_A1".into(), "v".into())],
            secret_files: vec![("db_password".into(), "v".into())],
            ..Default::default()
        };
        ok.check().unwrap();
        let nul = RunSettings {
            secret_env: vec![("K".into(), "a\0b".into())],
            ..Default::default()
        };
        let e = nul.check().unwrap_err().to_string();
        assert!(e.contains("NUL") && !e.contains("a\0b"), "{e}");
    }

    #[test]
    fn debug_is_redacted() {
        let s = RunSettings {
            env: vec![("MODE".into(), "prod".into())],
            secret_env: vec![("TOKEN".into(), "s3cr3t-env".into())],
            secret_files: vec![("db".into(), "s3cr3t-file".into())],
            ..Default::default()
        };
        let text = format!("{s:?}");
        assert!(text.contains("TOKEN") && text.contains("db") && text.contains("prod"));
        assert!(!text.contains("s3cr3t"), "{text}");
    }
}
