//! Running an unpacked image with `runc`, driven as a subprocess (an in-process
//! container library that clones the process is unsafe in a threaded async server).
//! The runtime spec starts from oci-spec's defaults (fresh namespaces, the default
//! capability set, masked and read-only kernel paths) and adds the image config's
//! Entrypoint, Cmd, Env, WorkingDir and User, with `noNewPrivileges`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec, UserBuilder};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no container runtime: runc was not found on PATH; install it (Debian: apt-get install runc)")]
    NotInstalled,
    #[error("the image has nothing to run (no Entrypoint or Cmd)")]
    NoCommand,
    #[error("the image's User {0:?} is not numeric uid[:gid]; only numeric users are supported")]
    User(String),
    #[error("runtime spec: {0}")]
    Spec(String),
    #[error("runc: {0}")]
    Runc(String),
    #[error("runtime I/O: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug)]
pub struct Runc {
    bin: PathBuf,
    /// runc's state directory (`--root`), private to this berth.
    state: PathBuf,
}

impl Runc {
    pub fn find(state: impl Into<PathBuf>) -> Result<Self, RuntimeError> {
        let bin = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/sbin", "/sbin"])
            .map(|d| Path::new(d).join("runc"))
            .find(|p| p.is_file())
            .ok_or(RuntimeError::NotInstalled)?;
        Ok(Runc {
            bin,
            state: state.into(),
        })
    }

    /// Writes `bundle/config.json` for running `rootfs` (inside `bundle`) with `config`.
    pub fn write_spec(
        &self,
        bundle: &Path,
        config: &ImageConfiguration,
    ) -> Result<(), RuntimeError> {
        let c = config.config().clone().unwrap_or_default();
        let mut args: Vec<String> = c.entrypoint().clone().unwrap_or_default();
        args.extend(c.cmd().clone().unwrap_or_default());
        if args.is_empty() {
            return Err(RuntimeError::NoCommand);
        }
        let (uid, gid) = match c.user().as_deref().filter(|u| !u.is_empty()) {
            None => (0, 0),
            Some(u) => {
                let (a, b) = u.split_once(':').unwrap_or((u, "0"));
                match (a.parse::<u32>(), b.parse::<u32>()) {
                    (Ok(a), Ok(b)) => (a, b),
                    _ => return Err(RuntimeError::User(u.to_owned())),
                }
            }
        };
        let spec_err = |e: oci_spec::OciSpecError| RuntimeError::Spec(e.to_string());
        let mut spec = Spec::default();
        let defaults = spec.process().clone().unwrap_or_default();
        let mut env = c.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        }
        let process = ProcessBuilder::default()
            .terminal(false)
            .args(args)
            .env(env)
            .cwd(
                c.working_dir()
                    .clone()
                    .filter(|w| !w.is_empty())
                    .unwrap_or_else(|| "/".into()),
            )
            .user(
                UserBuilder::default()
                    .uid(uid)
                    .gid(gid)
                    .build()
                    .map_err(spec_err)?,
            )
            .no_new_privileges(true)
            .capabilities(defaults.capabilities().clone().unwrap_or_default())
            .rlimits(defaults.rlimits().clone().unwrap_or_default())
            .build()
            .map_err(spec_err)?;
        spec.set_process(Some(process));
        spec.set_root(Some(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .map_err(spec_err)?,
        ));
        spec.set_hostname(Some("berth".into()));
        let f = std::fs::File::create(bundle.join("config.json"))?;
        serde_json::to_writer_pretty(f, &spec).map_err(|e| RuntimeError::Spec(e.to_string()))?;
        Ok(())
    }

    /// Starts container `id` from `bundle`; its stdout and stderr go to `log`. The
    /// returned child is `runc run`, which lives as long as the container.
    pub fn start(
        &self,
        id: &str,
        bundle: &Path,
        log: &Path,
    ) -> Result<tokio::process::Child, RuntimeError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let child = tokio::process::Command::new(&self.bin)
            .arg("--root")
            .arg(&self.state)
            .args(["run", "--bundle"])
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(false)
            .spawn()?;
        Ok(child)
    }

    async fn runc(&self, args: &[&str]) -> Result<(), RuntimeError> {
        let out = tokio::process::Command::new(&self.bin)
            .arg("--root")
            .arg(&self.state)
            .args(args)
            .output()
            .await?;
        if out.status.success() {
            Ok(())
        } else {
            Err(RuntimeError::Runc(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }

    /// SIGTERM, then SIGKILL after `grace`, then the container is deleted.
    pub async fn stop(
        &self,
        id: &str,
        child: Option<&mut tokio::process::Child>,
        grace: Duration,
    ) -> Result<(), RuntimeError> {
        let _ = self.runc(&["kill", id, "TERM"]).await;
        let exited = match child {
            Some(c) => tokio::time::timeout(grace, c.wait()).await.is_ok(),
            None => false,
        };
        if !exited {
            let _ = self.runc(&["kill", id, "KILL"]).await;
        }
        self.runc(&["delete", "--force", id])
            .await
            .or_else(|e| match &e {
                RuntimeError::Runc(msg)
                    if msg.contains("does not exist") || msg.contains("not exist") =>
                {
                    Ok(())
                }
                _ => Err(e),
            })
    }
}
