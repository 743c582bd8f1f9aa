//! Running an unpacked image with `runc`, driven as a subprocess (an in-process
//! container library that clones the process is unsafe in a threaded async server).
//! The runtime spec starts from oci-spec's defaults (fresh namespaces, the default
//! capability set, masked and read-only kernel paths), adds the image config's
//! Entrypoint, Cmd, Env, WorkingDir and User with the service's [`RunSettings`]
//! over them, and then the [`Sandbox`]: a user namespace, seccomp, cgroup limits,
//! `noNewPrivileges`. A container with secrets or a volume gets a private
//! directory outside the data dir ([`RunDir`]): its spec, its secret files and
//! its root with them and the volume mounted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::{ProcessBuilder, RootBuilder, Spec, UserBuilder};

use crate::log::{Logs, Pump};
use crate::network::{self, Egress, Netns, Network, NetworkError};
use crate::run_dir::{Access, RunDir};
use crate::sandbox::{Limits, Sandbox};
use crate::settings::{Invalid, RunSettings, SECRETS_PATH};
use crate::volume::{VolumeError, Volumes};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no container runtime: runc was not found on PATH; install it (Debian: apt-get install runc)")]
    NotInstalled,
    #[error("the image has nothing to run (no Entrypoint or Cmd)")]
    NoCommand,
    #[error("the image's User {user:?}: {reason}")]
    User { user: String, reason: String },
    #[error("runtime spec: {0}")]
    Spec(String),
    #[error("runc: {0}")]
    Runc(String),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("run settings: {0}")]
    Settings(#[from] Invalid),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("runtime I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// How one container starts, beyond its image: its limits, its network and what
/// its service sets over the image.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub limits: Limits,
    pub network: Network,
    pub settings: RunSettings,
}

/// The image's `User` (`user`, `uid`, `user:group`, `uid:gid`, names or numbers)
/// as uid and gid, names looked up in the image's own `/etc/passwd` and
/// `/etc/group`, as runc and Docker do. Those files are opened inside the root
/// (`openat2` `RESOLVE_IN_ROOT`): a symlink planted at `/etc/passwd` resolves in the
/// image, never to the host's file.
pub fn resolve_user(spec: &str, rootfs: &Path) -> Result<(u32, u32), RuntimeError> {
    let err = |reason: String| RuntimeError::User {
        user: spec.to_owned(),
        reason,
    };
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    // name:password:uid:gid:...
    let entry = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(u32, u32)> {
        passwd.as_deref()?.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && pred(&f)).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, primary_gid) = match user.parse::<u32>() {
        Ok(uid) => (uid, entry(&|f| f[2] == user).map(|(_, g)| g).unwrap_or(0)),
        Err(_) => entry(&|f| f[0] == user).ok_or_else(|| {
            err(match &passwd {
                Some(_) => format!("no user {user:?} in the image's /etc/passwd"),
                None => "the image has no /etc/passwd to look the name up in".into(),
            })
        })?,
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => read_in_root(rootfs, "etc/group")
                .as_deref()
                .and_then(|text| {
                    text.lines().find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok())?
                    })
                })
                .ok_or_else(|| err(format!("no group {g:?} in the image's /etc/group")))?,
        },
    };
    Ok((uid, gid))
}

/// A small text file of the image, resolved inside `rootfs`.
fn read_in_root(rootfs: &Path, rel: &str) -> Option<String> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    use std::io::Read;
    let root = crate::unpack::open_dir_path(rootfs).ok()?;
    let fd = openat2(
        &root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(1 << 20)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// The spec's network namespace becomes the one at `netns` (made by berth, owned
/// by the host's user namespace: the container's root cannot reconfigure it).
/// runc cannot mount a fresh sysfs there (sysfs follows the network namespace's
/// owner); the container gets a read-only tmpfs at `/sys` instead of the host's.
fn join_netns(spec: &mut serde_json::Value, netns: &Netns) {
    use serde_json::json;
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        namespaces.retain(|n| n["type"] != "network");
        namespaces.push(json!({"type": "network", "path": netns.path()}));
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts.iter_mut().filter(|m| m["type"] == "sysfs") {
            *m = json!({
                "destination": "/sys",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "noexec", "nodev", "ro", "size=64k"],
            });
        }
    }
}

/// Replaces file `name` of directory `dir` (mode 0644) inside `rootfs` with
/// `text`. The directory is resolved in the root (`openat2` `RESOLVE_IN_ROOT`): a
/// symlink the image planted at it resolves inside the image, never to the
/// host's files; whatever was at `name` (a symlink too) is removed first.
fn write_in_root(rootfs: &Path, dir: &str, name: &str, text: &str) -> std::io::Result<()> {
    use rustix::fs::{mkdirat, openat, openat2, unlinkat, AtFlags, Mode, OFlags, ResolveFlags};
    use std::io::Write;
    let root = crate::unpack::open_dir_path(rootfs)?;
    let in_root = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let dir = match openat2(
        &root,
        dir,
        OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        in_root,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => {
            // Missing, or a symlink to nothing in the image: a directory now.
            let _ = unlinkat(&root, dir, AtFlags::empty());
            mkdirat(&root, dir, Mode::from_raw_mode(0o755))?;
            openat2(
                &root,
                dir,
                OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                in_root,
            )?
        }
        Err(e) => return Err(e.into()),
    };
    match unlinkat(&dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let fd = openat(
        &dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    std::fs::File::from(fd).write_all(text.as_bytes())
}

/// The memory limit the spec in `bundle` gives its container.
fn memory_limit(bundle: &Path) -> Option<u64> {
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).ok()?).ok()?;
    spec["linux"]["resources"]["memory"]["limit"].as_u64()
}

/// Runs containers from prepared bundles (root filesystem in `bundle/rootfs`).
/// `runc` today; the Kubernetes runtime comes later behind the same trait.
#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Starts container `id` from `bundle` with the image's config; its output goes
    /// to `logs` (rotated), what berth says of it to their infrastructure log.
    /// Returns once the process was started.
    async fn start(
        &self,
        id: &str,
        bundle: &Path,
        config: &ImageConfiguration,
        launch: Launch,
        logs: &Logs,
    ) -> Result<(), RuntimeError>;
    /// Runs container `id` again from the bundle and spec it was started with
    /// (its root filesystem as it left it, as `docker restart` does).
    async fn restart(&self, id: &str, bundle: &Path, logs: &Logs) -> Result<(), RuntimeError>;
    /// Whether everything container `id` wrote is in its output files (it ended and
    /// the pump drained its FIFO), or no pump of this process follows it.
    fn output_drained(&self, id: &str) -> bool;
    /// How container `id` ended, if it has (`None`: running, or not started by this
    /// process).
    fn exited(&self, id: &str) -> Option<std::process::ExitStatus>;
    /// Whether container `id` (started or adopted by this process) still runs.
    fn is_running(&self, id: &str) -> bool;
    /// Whether the runtime reports container `id`'s process as started (`running`).
    async fn started(&self, id: &str) -> bool;
    /// The containers this runtime holds, running or not, whoever started them.
    async fn list(&self) -> Result<Vec<String>, RuntimeError>;
    /// Takes up container `id`, started by an earlier server process (a restart or
    /// an upgrade leaves containers running): true when it runs, and from then on
    /// `is_running` and a graceful `stop` work on it as on one started here.
    /// Its output is pumped into `logs` again.
    async fn adopt(&self, id: &str, logs: &Logs) -> Result<bool, RuntimeError>;
    /// SIGTERM, then SIGKILL after `grace`, then the container is deleted (and its
    /// network namespace with it).
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Container `id`'s network namespace, while it has one.
    fn netns(&self, id: &str) -> Option<Netns>;
    /// Deletes a service's volume (its data is gone); nothing to do when it has none.
    async fn remove_volume(&self, service_id: &str) -> Result<(), RuntimeError>;
    /// The services with a volume on this machine.
    fn volume_ids(&self) -> Vec<String>;
}

#[derive(Debug)]
pub struct Runc {
    bin: PathBuf,
    /// What every container runs inside.
    sandbox: Sandbox,
    /// runc's state directory (`--root`), private to this berth.
    state: PathBuf,
    /// The containers' network namespaces, one file each (beside `state`: runc
    /// takes every directory in its root for a container).
    netns_dir: PathBuf,
    /// Outbound traffic of `public` containers; `None` refuses to start them.
    egress: Option<Egress>,
    /// The services' volumes (beside `state` unless configured).
    volumes: Volumes,
    /// Where containers' private directories go: outside the data dir, on no disk
    /// (each is a tmpfs of its own).
    run_dir: PathBuf,
    /// Containers being started or restarted here: their private directories are
    /// not leftovers, though runc does not list them yet.
    preparing: std::sync::Mutex<std::collections::HashSet<String>>,
    /// `runc run` of each container started by this process.
    children: std::sync::Mutex<std::collections::HashMap<String, tokio::process::Child>>,
    /// The init process of each container adopted from an earlier server process,
    /// as a pidfd: not our child, but a handle the kernel keeps from being reused.
    adopted: std::sync::Mutex<std::collections::HashMap<String, std::os::fd::OwnedFd>>,
    /// The pump of each container's output, started here or on adoption.
    pumps: std::sync::Mutex<std::collections::HashMap<String, Pump>>,
}

/// Whether the process behind `pidfd` still runs (a pidfd polls readable once it
/// has exited).
fn pidfd_alive(pidfd: &std::os::fd::OwnedFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    matches!(
        poll(&mut fds, Some(&rustix::event::Timespec::default())),
        Ok(0)
    )
}

impl Runc {
    pub fn find(state: impl Into<PathBuf>, sandbox: Sandbox) -> Result<Self, RuntimeError> {
        let bin = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/usr/sbin", "/sbin"])
            .map(|d| Path::new(d).join("runc"))
            .find(|p| p.is_file())
            .ok_or(RuntimeError::NotInstalled)?;
        let state: PathBuf = state.into();
        Ok(Runc {
            bin,
            sandbox,
            netns_dir: state.with_file_name("netns"),
            egress: None,
            volumes: Volumes::new(state.with_file_name("volumes")),
            run_dir: default_run_dir(&state),
            preparing: Default::default(),
            state,
            children: Default::default(),
            adopted: Default::default(),
            pumps: Default::default(),
        })
    }

    /// Lets `public` containers reach out, under `egress`.
    pub fn with_egress(mut self, egress: Egress) -> Self {
        self.egress = Some(egress);
        self
    }

    /// Keeps the services' volumes under `dir` (default: `volumes` beside the
    /// state directory, in the data dir).
    pub fn with_volumes(mut self, dir: impl Into<PathBuf>) -> Self {
        self.volumes = Volumes::new(dir);
        self
    }

    /// Makes containers' private directories (each a tmpfs: specs with secrets,
    /// secret files) under `dir`, which must be outside the data dir (default:
    /// `/run/berth/<hash of the state directory>`).
    pub fn with_run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = dir.into();
        self
    }

    /// Where containers' private directories go.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Marks container `id` as being started until the guard drops.
    fn preparing(&self, id: &str) -> Preparing<'_> {
        self.preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_owned());
        Preparing {
            runc: self,
            id: id.to_owned(),
        }
    }

    /// Removes the private directories of containers that no longer exist (not
    /// listed by runc, not being started, not followed by this process).
    fn remove_leftover_run_dirs(&self, listed: &[String]) {
        let preparing = self.preparing.lock().unwrap_or_else(|e| e.into_inner());
        for id in RunDir::list(&self.run_dir) {
            if listed.contains(&id)
                || preparing.contains(&id)
                || self.children().contains_key(&id)
                || self.adopted().contains_key(&id)
            {
                continue;
            }
            RunDir::at(&self.run_dir, &id).remove();
        }
    }

    fn netns_path(&self, id: &str) -> PathBuf {
        self.netns_dir.join(id)
    }

    /// Container `id`'s network namespace, made anew: `lo`, and for `public` the
    /// egress rules and pasta.
    fn make_netns(&self, id: &str, network: Network) -> Result<Netns, RuntimeError> {
        let egress = match network {
            Network::None => None,
            Network::Public => Some(self.egress.as_ref().ok_or_else(|| {
                RuntimeError::Spec("outbound networking is not configured on this server".into())
            })?),
        };
        Ok(network::create(&self.netns_path(id), egress)?)
    }

    fn children(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, tokio::process::Child>> {
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the spec for running `bundle/rootfs` with `config` and `launch`, and
    /// makes what it names: without secrets or a volume, `bundle/config.json`;
    /// with them, the container's private directory (its spec there, the bundle's
    /// `config.json` a symlink to it, the secret files, the volume made or grown
    /// and mounted, the root runc is given). On failure the private directory is
    /// left for the caller to remove.
    pub fn write_spec(
        &self,
        id: &str,
        bundle: &Path,
        config: &ImageConfiguration,
        netns: &Netns,
        launch: &Launch,
    ) -> Result<(), RuntimeError> {
        let settings = &launch.settings;
        settings.check()?;
        let sandbox = self.sandbox.with(launch.limits);
        let spec_err = |e: oci_spec::OciSpecError| RuntimeError::Spec(e.to_string());
        let mut spec = Spec::default();
        let (process, uid, gid) = process_of(settings, config, bundle, &spec)?;
        spec.set_process(Some(process));
        spec.set_root(Some(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()
                .map_err(spec_err)?,
        ));
        spec.set_hostname(Some("berth".into()));
        let mut spec =
            serde_json::to_value(&spec).map_err(|e| RuntimeError::Spec(e.to_string()))?;
        sandbox.apply(&mut spec, id);
        join_netns(&mut spec, netns);
        if launch.network == Network::Public {
            // The image's own resolv.conf would name resolvers the egress rules
            // refuse; Docker replaces it too. Written into the deployment's own
            // root (not bind-mounted: runc 1.1 opens bind sources from inside the
            // container's mount namespace, which a server without CAP_SYS_PTRACE
            // may not enter).
            write_in_root(
                &bundle.join("rootfs"),
                "etc",
                "resolv.conf",
                &network::resolv_conf(),
            )?;
        }
        let config_path = bundle.join("config.json");
        match std::fs::remove_file(&config_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        if !settings.needs_private_dir() {
            let f = std::fs::File::create(&config_path)?;
            serde_json::to_writer_pretty(f, &spec)
                .map_err(|e| RuntimeError::Spec(e.to_string()))?;
            return Ok(());
        }
        // Files the container's user owns, and directories its root owns, as the
        // host sees them.
        let ids = sandbox.ids;
        let user = (ids.host(uid.into()), ids.host(gid.into()));
        self.write_private(
            id,
            bundle,
            spec,
            settings,
            (user, (ids.host(0), ids.host(0))),
        )
    }

    /// The spec of a container with secrets or a volume, in its private tmpfs
    /// (`bundle/config.json` a link to it): its root a private bind of the
    /// bundle's, with the volume and the secret files mounted onto it.
    fn write_private(
        &self,
        id: &str,
        bundle: &Path,
        mut spec: serde_json::Value,
        settings: &RunSettings,
        (user, root_ids): ((u32, u32), (u32, u32)),
    ) -> Result<(), RuntimeError> {
        let private = RunDir::create(&self.run_dir, id)?;
        private.mount_root(&bundle.join("rootfs"))?;
        if let Some(volume) = &settings.volume {
            let mounted = self.volumes.ensure(volume, user)?;
            private.mount_in_root(
                mounted.path(),
                &volume.container_path()?,
                Access::AsMounted,
                root_ids,
            )?;
        }
        if !settings.secret_files.is_empty() {
            private.write_secrets(&settings.secret_files, user)?;
            private.mount_secrets(SECRETS_PATH, root_ids)?;
        }
        spec["root"]["path"] = serde_json::json!(private.root());
        private.write_config(&spec)?;
        std::os::unix::fs::symlink(private.config(), bundle.join("config.json"))?;
        Ok(())
    }

    /// Starts container `id` from `bundle`; its stdout and stderr are the FIFO of
    /// `logs`, pumped into its rotating files. The returned child is `runc run`,
    /// which lives as long as the container.
    fn spawn(
        &self,
        id: &str,
        bundle: &Path,
        logs: &Logs,
    ) -> Result<tokio::process::Child, RuntimeError> {
        // The container's end first: the pump then always finds a writer.
        let out = logs.open_fifo_for_container()?;
        self.follow_output(id, logs)?;
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

    /// Starts pumping the output of container `id`, unless a pump already does.
    fn follow_output(&self, id: &str, logs: &Logs) -> std::io::Result<()> {
        let mut pumps = self.pumps.lock().unwrap_or_else(|e| e.into_inner());
        if pumps.get(id).is_some_and(|p| !p.is_done()) {
            return Ok(());
        }
        pumps.insert(id.to_owned(), crate::log::pump(logs)?);
        Ok(())
    }

    /// Follows `runc events` of container `id` and says in `log` when the kernel's
    /// out-of-memory killer struck inside it (runc reports the cgroup's OOM
    /// notifications, on cgroup v1 and v2 alike).
    fn watch_oom(&self, id: &str, log: &Path, memory_bytes: Option<u64>) {
        let Some(memory_bytes) = memory_bytes else {
            return;
        };
        let (bin, state, id, log) = (
            self.bin.clone(),
            self.state.clone(),
            id.to_owned(),
            log.to_owned(),
        );
        let limit_mb = memory_bytes >> 20;
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            // `runc run` creates the container a moment after it starts.
            for _ in 0..100 {
                let Ok(mut events) = tokio::process::Command::new(&bin)
                    .arg("--root")
                    .arg(&state)
                    .args(["events", "--interval", "1h", &id])
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .kill_on_drop(true)
                    .spawn()
                else {
                    return;
                };
                let started = std::time::Instant::now();
                let mut lines =
                    tokio::io::BufReader::new(events.stdout.take().expect("piped")).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if event["type"] == "oom" {
                        crate::log::append_line(
                            &log,
                            &format!("out of memory: the container reached its {limit_mb} MiB memory limit and the kernel killed a process in it"),
                        );
                    }
                }
                let _ = events.wait().await;
                if started.elapsed() > Duration::from_secs(1) {
                    return; // it followed the container to its end
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }

    fn adopted(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::os::fd::OwnedFd>> {
        self.adopted.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn runc(&self, args: &[&str]) -> Result<(), RuntimeError> {
        self.runc_output(args).await.map(drop)
    }

    /// Runs `runc --root STATE ARGS...`; its stdout, or its stderr as the error.
    async fn runc_output(&self, args: &[&str]) -> Result<Vec<u8>, RuntimeError> {
        let out = tokio::process::Command::new(&self.bin)
            .arg("--root")
            .arg(&self.state)
            .args(args)
            .output()
            .await?;
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(RuntimeError::Runc(
                String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            ))
        }
    }
}

#[async_trait::async_trait]
impl Runtime for Runc {
    async fn start(
        &self,
        id: &str,
        bundle: &Path,
        config: &ImageConfiguration,
        launch: Launch,
        logs: &Logs,
    ) -> Result<(), RuntimeError> {
        launch.settings.check()?;
        let memory_bytes = self.sandbox.with(launch.limits).memory_bytes;
        let _preparing = self.preparing(id);
        let netns = self.make_netns(id, launch.network)?;
        let spawned = self
            .write_spec(id, bundle, config, &netns, &launch)
            .and_then(|()| self.spawn(id, bundle, logs));
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                netns.remove();
                RunDir::at(&self.run_dir, id).remove();
                return Err(e);
            }
        };
        self.children().insert(id.to_owned(), child);
        self.watch_oom(id, &logs.infra, Some(memory_bytes));
        Ok(())
    }

    async fn restart(&self, id: &str, bundle: &Path, logs: &Logs) -> Result<(), RuntimeError> {
        let _preparing = self.preparing(id);
        self.children().remove(id);
        self.adopted().remove(id);
        let _ = self.runc(&["delete", "--force", id]).await;
        let child = self.spawn(id, bundle, logs)?;
        self.children().insert(id.to_owned(), child);
        self.watch_oom(id, &logs.infra, memory_limit(bundle));
        Ok(())
    }

    fn output_drained(&self, id: &str) -> bool {
        let pumps = self.pumps.lock().unwrap_or_else(|e| e.into_inner());
        pumps.get(id).is_none_or(Pump::is_done)
    }

    fn exited(&self, id: &str) -> Option<std::process::ExitStatus> {
        self.children().get_mut(id)?.try_wait().ok().flatten()
    }

    fn is_running(&self, id: &str) -> bool {
        if let Some(child) = self.children().get_mut(id) {
            return matches!(child.try_wait(), Ok(None));
        }
        self.adopted().get(id).is_some_and(pidfd_alive)
    }

    async fn started(&self, id: &str) -> bool {
        #[derive(serde::Deserialize)]
        struct State {
            status: String,
        }
        self.runc_output(&["state", id])
            .await
            .ok()
            .and_then(|out| serde_json::from_slice::<State>(&out).ok())
            .is_some_and(|s| s.status == "running")
    }

    async fn list(&self) -> Result<Vec<String>, RuntimeError> {
        let listed: Vec<String> = if self.state.exists() {
            let out = self.runc_output(&["list", "--quiet"]).await?;
            String::from_utf8_lossy(&out)
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        } else {
            Vec::new()
        };
        self.remove_leftover_run_dirs(&listed);
        Ok(listed)
    }

    async fn adopt(&self, id: &str, logs: &Logs) -> Result<bool, RuntimeError> {
        if self.children().contains_key(id) || self.adopted().contains_key(id) {
            return Ok(self.is_running(id));
        }
        #[derive(serde::Deserialize)]
        struct State {
            status: String,
            pid: i32,
        }
        let out = self.runc_output(&["state", id]).await?;
        let state: State =
            serde_json::from_slice(&out).map_err(|e| RuntimeError::Runc(e.to_string()))?;
        if state.status != "running" {
            return Ok(false);
        }
        let Some(pid) = rustix::process::Pid::from_raw(state.pid) else {
            return Ok(false);
        };
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .map_err(std::io::Error::from)?;
        self.adopted().insert(id.to_owned(), pidfd);
        if logs.fifo().exists() {
            self.follow_output(id, logs)?;
        }
        Ok(self.is_running(id))
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let mut child = self.children().remove(id);
        let adopted = self.adopted().remove(id);
        let _ = self.runc(&["kill", id, "TERM"]).await;
        let exited = match (child.as_mut(), adopted) {
            (Some(c), _) => tokio::time::timeout(grace, c.wait()).await.is_ok(),
            (None, Some(pidfd)) => {
                let deadline = tokio::time::Instant::now() + grace;
                while pidfd_alive(&pidfd) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                !pidfd_alive(&pidfd)
            }
            (None, None) => false,
        };
        if !exited {
            let _ = self.runc(&["kill", id, "KILL"]).await;
        }
        let deleted = self.runc(&["delete", "--force", id]).await;
        Netns::at(&self.netns_path(id)).remove();
        RunDir::at(&self.run_dir, id).remove();
        deleted.or_else(|e| match &e {
            RuntimeError::Runc(msg)
                if msg.contains("does not exist") || msg.contains("not exist") =>
            {
                Ok(())
            }
            _ => Err(e),
        })
    }

    fn netns(&self, id: &str) -> Option<Netns> {
        let ns = Netns::at(&self.netns_path(id));
        ns.exists().then_some(ns)
    }

    async fn remove_volume(&self, service_id: &str) -> Result<(), RuntimeError> {
        Ok(self.volumes.remove(service_id)?)
    }

    fn volume_ids(&self) -> Vec<String> {
        self.volumes.ids()
    }
}

/// The container's process: the image's Entrypoint, Cmd, Env, working dir and
/// user with the service's settings over them, and its user's ids.
fn process_of(
    settings: &RunSettings,
    config: &ImageConfiguration,
    bundle: &Path,
    spec: &Spec,
) -> Result<(oci_spec::runtime::Process, u32, u32), RuntimeError> {
    let spec_err = |e: oci_spec::OciSpecError| RuntimeError::Spec(e.to_string());
    let c = config.config().clone().unwrap_or_default();
    let args = settings.process_args(
        c.entrypoint().as_deref().unwrap_or_default(),
        c.cmd().as_deref().unwrap_or_default(),
    );
    if args.is_empty() {
        return Err(RuntimeError::NoCommand);
    }
    let (uid, gid) = match c.user().as_deref().filter(|u| !u.is_empty()) {
        None => (0, 0),
        Some(u) => resolve_user(u, &bundle.join("rootfs"))?,
    };
    let defaults = spec.process().clone().unwrap_or_default();
    let env = settings.process_env(c.env().as_deref().unwrap_or_default());
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
    Ok((process, uid, gid))
}

/// A container being started; see [`Runc::preparing`].
struct Preparing<'a> {
    runc: &'a Runc,
    id: String,
}

impl Drop for Preparing<'_> {
    fn drop(&mut self) {
        self.runc
            .preparing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// `/run/berth/<hash>`: a server's own place under `/run` (two servers on one
/// machine, or tests side by side, have different state directories).
fn default_run_dir(state: &Path) -> PathBuf {
    use sha2::Digest as _;
    let state = std::path::absolute(state).unwrap_or_else(|_| state.to_owned());
    let hash = sha2::Sha256::digest(state.as_os_str().as_encoded_bytes());
    Path::new("/run/berth").join(&hex::encode(hash)[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_in_the_root_stays_in_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::create_dir_all(&root).unwrap();
        // etc planted as a symlink to a host directory, resolv.conf as one to a
        // host file: both resolve inside the root, the host is untouched.
        std::os::unix::fs::symlink(&outside, root.join("etc")).unwrap();
        write_in_root(&root, "etc", "resolv.conf", "nameserver 127.0.0.1\n").unwrap();
        assert!(
            std::fs::read_dir(&outside).unwrap().next().is_none(),
            "wrote outside the root"
        );
        let root2 = dir.path().join("rootfs2");
        std::fs::create_dir_all(root2.join("etc")).unwrap();
        std::fs::write(outside.join("hosts-file"), "host").unwrap();
        std::os::unix::fs::symlink(outside.join("hosts-file"), root2.join("etc/resolv.conf"))
            .unwrap();
        write_in_root(&root2, "etc", "resolv.conf", "nameserver 127.0.0.1\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(outside.join("hosts-file")).unwrap(),
            "host"
        );
        assert_eq!(
            std::fs::read_to_string(root2.join("etc/resolv.conf")).unwrap(),
            "nameserver 127.0.0.1\n"
        );
    }

    #[test]
    fn users_by_name_or_number_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.join("etc/group"), "root:x:0:\nstaff:x:50:app\n").unwrap();
        let check = |spec: &str| resolve_user(spec, &root).map_err(|e| e.to_string());
        assert_eq!(check("app"), Ok((1000, 1001)));
        assert_eq!(check("1000"), Ok((1000, 1001)));
        assert_eq!(check("4242"), Ok((4242, 0)));
        assert_eq!(check("app:staff"), Ok((1000, 50)));
        assert_eq!(check("app:7"), Ok((1000, 7)));
        assert_eq!(check("5:6"), Ok((5, 6)));
        assert!(check("nobody").unwrap_err().contains("no user \"nobody\""));
        assert!(check("app:wheel").unwrap_err().contains("no group"));

        // /etc/passwd planted as a symlink to the host's: resolved inside the image.
        let other = tempfile::tempdir().unwrap();
        let root2 = other.path().join("rootfs");
        std::fs::create_dir_all(root2.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root2.join("etc/passwd")).unwrap();
        assert!(
            resolve_user("root", &root2).is_err(),
            "the host's /etc/passwd was read"
        );
    }
}
