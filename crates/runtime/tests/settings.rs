//! What a service sets over its image, with real runc: environment, command and
//! arguments, secrets (as variables and as files, never on disk), and a volume
//! (kept, size enforced, removed). Each test runs again in a process of its own
//! with nothing more than the runc systemd unit grants (its capability bounding
//! set and no_new_privs, applied with `setpriv`), as the server would.
//! Containers run with no network at all.

use std::future::Future;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_runtime::log::{Logs, Rotation};
use berth_runtime::network::{Netns, Network};
use berth_runtime::run_dir::RunDir;
use berth_runtime::runc::{Launch, Runc, Runtime, RuntimeError};
use berth_runtime::sandbox::Sandbox;
use berth_runtime::settings::{RunSettings, VolumeSpec};
use oci_spec::image::ImageConfiguration;
use sha2::Digest as _;

/// Set in the process a test re-runs itself in, under the unit's capabilities.
const UNDER_THE_UNIT: &str = "BERTH_TEST_UNDER_THE_UNIT";

/// The runc unit's `CapabilityBoundingSet=` as setpriv's `-all,+a,+b`.
fn unit_bounding_set() -> String {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/berth.service");
    let text = std::fs::read_to_string(unit).unwrap();
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit names its capabilities");
    let mut out = vec!["-all".to_owned()];
    out.extend(
        caps.split_whitespace()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())),
    );
    out.join(",")
}

/// Runs `body` as test `name` of a process holding only what the runc unit
/// grants: this process re-runs its own binary for that one test under setpriv,
/// which then runs `body`.
async fn as_the_unit(name: &str, body: impl Future<Output = ()>) {
    berth_testkit::require("runc");
    if std::env::var_os(UNDER_THE_UNIT).is_some() {
        return body.await;
    }
    let setpriv = berth_testkit::require("setpriv");
    let out = tokio::process::Command::new(setpriv)
        .arg("--nnp")
        .arg(format!("--bounding-set={}", unit_bounding_set()))
        .arg("--inh-caps=-all")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(UNDER_THE_UNIT, "1")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{name} under the unit's capabilities:\n{stdout}\n{stderr}"
    );
}

/// A process-wide unique suffix: container ids and cgroups are the machine's.
fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{:x}{:x}{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn sha256_hex(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A server's data dir with a runc runtime in it, and the image layer its
/// containers run (busybox, users `root` and `app` 1000:1000, owners shifted
/// into the sandbox's range). Its drop removes everything its containers and
/// volumes left, whatever happened.
struct Host {
    dir: tempfile::TempDir,
    runc: Runc,
    layer: PathBuf,
    containers: Vec<String>,
    services: Vec<String>,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        // As the server makes it: passable by the containers' root, no more.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        let sandbox = Sandbox::default();
        let layer = dir.path().join("layer");
        let shift = |p: &Path, id: u32| {
            std::os::unix::fs::lchown(
                p,
                Some(sandbox.ids.host(id.into())),
                Some(sandbox.ids.host(id.into())),
            )
            .unwrap()
        };
        std::fs::create_dir_all(layer.join("bin")).unwrap();
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::create_dir_all(layer.join("home/app")).unwrap();
        std::fs::copy("/bin/busybox", layer.join("bin/busybox")).unwrap();
        std::fs::write(
            layer.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(layer.join("etc/group"), "root:x:0:\napp:x:1000:\n").unwrap();
        for p in [
            "",
            "bin",
            "bin/busybox",
            "etc",
            "etc/passwd",
            "etc/group",
            "home",
        ] {
            shift(&layer.join(p), 0);
        }
        shift(&layer.join("home/app"), 1000);
        let runc = Runc::find(dir.path().join("runc"), sandbox).unwrap();
        Host {
            dir,
            runc,
            layer,
            containers: Vec::new(),
            services: Vec::new(),
        }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// A new container id with its bundle (an overlay over the layer) and logs.
    fn bundle(&mut self) -> (String, PathBuf, Logs) {
        let id = format!("berth-settings-{}", unique());
        let deployment = self.data().join("deployments").join(&id);
        std::fs::create_dir_all(&deployment).unwrap();
        for d in [self.data().join("deployments"), deployment.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let bundle = deployment.join("bundle");
        berth_runtime::rootfs::prepare(
            std::slice::from_ref(&self.layer),
            &bundle,
            Sandbox::default().ids,
        )
        .unwrap();
        std::fs::set_permissions(&bundle, std::fs::Permissions::from_mode(0o711)).unwrap();
        self.containers.push(id.clone());
        let logs = Logs::in_dir(&deployment, Rotation::default());
        (id, bundle, logs)
    }

    /// Starts a container of `image` with `settings` (no network).
    async fn start(
        &mut self,
        image: &ImageConfiguration,
        settings: RunSettings,
    ) -> Result<(String, Logs), RuntimeError> {
        if let Some(v) = &settings.volume {
            self.services.push(v.service_id.clone());
        }
        let (id, bundle, logs) = self.bundle();
        let launch = Launch {
            network: Network::None,
            settings,
            ..Default::default()
        };
        self.runc.start(&id, &bundle, image, launch, &logs).await?;
        Ok((id, logs))
    }

    /// Runs a container to its end; its output.
    async fn run(&mut self, image: &ImageConfiguration, settings: RunSettings) -> String {
        let (id, logs) = self.start(image, settings).await.unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        while self.runc.exited(&id).is_none() || !self.runc.output_drained(&id) {
            assert!(Instant::now() < give_up, "{id} did not end");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.runc.stop(&id, Duration::from_secs(1)).await.unwrap();
        std::fs::read_to_string(&logs.output).unwrap_or_default()
    }

    /// The private directory of container `id`.
    fn private(&self, id: &str) -> PathBuf {
        self.runc.run_dir().join(id)
    }

    fn volumes(&self) -> PathBuf {
        self.data().join("volumes")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let state = self.data().join("runc");
        for id in &self.containers {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&state)
                .args(["delete", "--force", id])
                .output();
            Netns::at(&self.data().join("netns").join(id)).remove();
            RunDir::at(self.runc.run_dir(), id).remove();
            berth_runtime::rootfs::remove(&self.data().join("deployments").join(id).join("bundle"));
        }
        let volumes = berth_runtime::volume::Volumes::new(self.volumes());
        for s in &self.services {
            let _ = volumes.remove(s);
        }
        let _ = std::fs::remove_dir(self.runc.run_dir());
    }
}

fn image(config: serde_json::Value) -> ImageConfiguration {
    serde_json::from_value(serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .unwrap()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Output lines without their stamps.
fn lines(output: &str) -> Vec<String> {
    output
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, text)| text).to_owned())
        .collect()
}

/// Waits until the output at `logs` has a line starting with `prefix`.
async fn line_starting(logs: &Logs, prefix: &str) -> String {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&logs.output).unwrap_or_default();
        if let Some(l) = lines(&text).into_iter().find(|l| l.starts_with(prefix)) {
            return l;
        }
        assert!(Instant::now() < give_up, "no {prefix:?} in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every regular file under `dir` (symlinks not followed), read.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                if let Ok(bytes) = std::fs::read(e.path()) {
                    out.push((e.path(), bytes));
                }
            }
        }
    }
    out
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread")]
async fn env_command_and_args_are_set_over_the_image() {
    as_the_unit("env_command_and_args_are_set_over_the_image", async {
        let mut host = Host::new();
        let echo = image(serde_json::json!({
            "Entrypoint": ["/bin/busybox", "echo", "EP"],
            "Cmd": ["CMD"],
            "Env": ["A=image", "B=image"],
        }));
        let settings = |command: Option<&[&str]>, args: Option<&[&str]>| RunSettings {
            command: command.map(strings),
            args: args.map(strings),
            ..Default::default()
        };
        let echo_line: &[&str] = &["/bin/busybox", "echo", "LINE"];
        for (command, args, want) in [
            (None, None, "EP CMD"),
            (None, Some(&["ARGS", "2"][..]), "EP ARGS 2"),
            (Some(echo_line), None, "LINE"),
            (Some(echo_line), Some(&["ARGS"][..]), "LINE ARGS"),
        ] {
            let out = host.run(&echo, settings(command, args)).await;
            assert_eq!(lines(&out), [want], "{command:?} {args:?}");
        }

        let env = RunSettings {
            command: Some(strings(&["/bin/busybox", "sh", "-c", "echo A=$A B=$B C=$C PATH=$PATH"])),
            env: vec![("B".into(), "service".into()), ("C".into(), "new".into())],
            ..Default::default()
        };
        let out = host.run(&echo, env).await;
        assert_eq!(
            lines(&out),
            ["A=image B=service C=new PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        );
        // No secret, no volume: the spec is in the bundle, as before.
        let id = host.containers.last().unwrap().clone();
        assert!(!host.private(&id).exists());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_reach_the_container_and_never_the_disk() {
    as_the_unit("secrets_reach_the_container_and_never_the_disk", async {
        let mut host = Host::new();
        let (env_secret, file_secret) = (
            format!("env-secret-{}", unique()),
            format!("file-secret-{}", unique()),
        );
        let app = image(serde_json::json!({
            "Entrypoint": ["/bin/busybox", "sh", "-c"],
            "Cmd": ["echo image-cmd"],
            "User": "app",
            "Env": ["TOKEN=from-image"],
        }));
        // The container says what it sees by hashes, so that its output (in the
        // data dir) holds no secret.
        let script = "echo env:$(printf %s \"$TOKEN\" | sha256sum); \
             echo file:$(sha256sum < /run/secrets/db_password); \
             echo stat:$(stat -c '%a %u %g' /run/secrets/db_password); \
             echo mount:$(grep ' /run/secrets ' /proc/self/mountinfo | cut -d' ' -f6); \
             if echo x > /run/secrets/new 2>/dev/null; then echo write:yes; else echo write:no; fi; \
             echo ready; exec sleep 600";
        let settings = RunSettings {
            args: Some(strings(&[script])),
            secret_env: vec![("TOKEN".into(), env_secret.clone().into())],
            secret_files: vec![("db_password".into(), file_secret.clone().into())],
            ..Default::default()
        };
        let (id, logs) = host.start(&app, settings).await.unwrap();
        line_starting(&logs, "ready").await;
        let said = |what: &str| {
            let text = std::fs::read_to_string(&logs.output).unwrap();
            lines(&text)
                .into_iter()
                .find_map(|l| l.strip_prefix(&format!("{what}:")).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {what}: in\n{text}"))
        };
        assert_eq!(said("env"), format!("{} -", sha256_hex(&env_secret)));
        assert_eq!(said("file"), format!("{} -", sha256_hex(&file_secret)));
        assert_eq!(said("stat"), "400 1000 1000", "0400, the app user's");
        assert!(said("mount").starts_with("ro,"), "{}", said("mount"));
        assert_eq!(said("write"), "no");

        // Seen from the host: the spec and the files are in the container's
        // private tmpfs, outside the data dir; the bundle's spec is a link to it.
        let private = host.private(&id);
        assert!(!private.starts_with(host.data()));
        let link = std::fs::read_link(host.data().join(format!("deployments/{id}/bundle/config.json")))
            .unwrap();
        assert_eq!(link, private.join("config.json"));
        let spec = std::fs::read(&link).unwrap();
        assert!(holds(&spec, &env_secret), "the walk below reads files as this does");
        let file = std::fs::metadata(private.join("secrets/db_password")).unwrap();
        assert_eq!(
            (file.mode() & 0o777, file.uid(), file.gid()),
            (0o400, 1_000_001_000, 1_000_001_000)
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let tmpfs = mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(private.to_str().unwrap()))
            .unwrap_or_else(|| panic!("{} is not a mount", private.display()));
        assert!(tmpfs.contains(" - tmpfs "), "{tmpfs}");

        // Every file of the data dir (runc's state, the bundle, the root
        // filesystem as the host sees it, the logs) while the container runs.
        let files = files_under(host.data());
        assert!(files.len() > 5, "the walk saw {} files", files.len());
        assert!(files.iter().any(|(p, _)| p.ends_with("runc/".to_owned() + &id + "/state.json")));
        assert!(files.iter().any(|(p, _)| p.ends_with("bundle/rootfs/bin/busybox")));
        for (path, bytes) in &files {
            for secret in [&env_secret, &file_secret] {
                assert!(!holds(bytes, secret), "a secret is in {}", path.display());
            }
        }

        // Restarted in place (as after a crash): the same spec, the same secrets.
        let bundle = host.data().join(format!("deployments/{id}/bundle"));
        host.runc.restart(&id, &bundle, &logs).await.unwrap();
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&logs.output).unwrap_or_default();
            let envs: Vec<String> = lines(&text).into_iter().filter(|l| l.starts_with("env:")).collect();
            if envs.len() == 2 && lines(&text).iter().filter(|l| *l == "ready").count() == 2 {
                assert_eq!(envs[0], envs[1], "{text}");
                break;
            }
            assert!(Instant::now() < give_up, "not restarted:\n{text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // A later server process keeps the private directory of a container runc
        // still has, and removes one whose container runc has no more.
        let later = Runc::find(host.data().join("runc"), Sandbox::default()).unwrap();
        let gone = format!("berth-settings-gone-{}", unique());
        let leftover = RunDir::create(later.run_dir(), &gone).unwrap();
        assert!(leftover.exists());
        assert!(later.list().await.unwrap().contains(&id));
        assert!(private.exists());
        assert!(!leftover.exists() && !leftover.path().exists());

        // Stopped: the tmpfs is gone, and with it every copy of the secrets.
        host.runc.stop(&id, Duration::from_secs(1)).await.unwrap();
        assert!(!private.exists(), "{} is left", private.display());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(private.to_str().unwrap()), "{mounts}");
        let mut after = files_under(host.data());
        after.extend(files_under(host.runc.run_dir()));
        for (path, bytes) in &after {
            for secret in [&env_secret, &file_secret] {
                assert!(!holds(bytes, secret), "a secret is in {}", path.display());
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_volume_keeps_its_data_and_its_size() {
    as_the_unit("a_volume_keeps_its_data_and_its_size", async {
        let mut host = Host::new();
        let service = format!("svc-{}", unique());
        let sh = image(serde_json::json!({
            "Entrypoint": ["/bin/busybox", "sh", "-c"],
            "User": "app",
        }));
        let with_volume = |size_mb: u64, script: &str| RunSettings {
            args: Some(strings(&[script])),
            volume: Some(VolumeSpec {
                service_id: service.clone(),
                path: "/var/lib/app".into(),
                size_mb,
            }),
            ..Default::default()
        };

        // Written as the image's user, then filled past its 16 MB.
        let out = host
            .run(
                &sh,
                with_volume(
                    16,
                    "echo kept > /var/lib/app/note && echo wrote; \
                     dd if=/dev/zero of=/var/lib/app/fill bs=1M count=64 2>&1; \
                     rm /var/lib/app/fill; echo done",
                ),
            )
            .await;
        assert!(out.contains("wrote"), "{out}");
        assert!(out.contains("No space left on device"), "{out}");
        assert!(out.contains("done"), "{out}");
        let first = host.containers[0].clone();
        assert!(
            !host.private(&first).exists(),
            "stopped: its private directory is gone"
        );
        // The host is fine: the volume's file holds its reserved 16 MiB, no more,
        // and nothing of the fill went into the container's own layer.
        let image_file = host.volumes().join(format!("{service}.img"));
        let meta = std::fs::metadata(&image_file).unwrap();
        assert_eq!(meta.len(), 16 << 20);
        let allocated = meta.blocks() * 512;
        assert!(
            allocated <= (16 << 20) + (64 << 10),
            "{allocated} bytes allocated"
        );
        let upper: u64 = files_under(
            &host
                .data()
                .join(format!("deployments/{first}/bundle/upper")),
        )
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum();
        assert!(upper < 1 << 20, "{upper} bytes in the container's layer");

        // A second container of the service finds it; a grown size grows it.
        let out = host
            .run(
                &sh,
                with_volume(32, "cat /var/lib/app/note; df -k /var/lib/app | tail -n 1"),
            )
            .await;
        let got = lines(&out);
        assert_eq!(got[0], "kept", "{out}");
        let total_kb: u64 = got[1].split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((24_000..=33_000).contains(&total_kb), "{out}");

        // Smaller is refused, and says why.
        let err = host.start(&sh, with_volume(8, "true")).await.unwrap_err();
        assert!(err.to_string().contains("cannot shrink to 8 MB"), "{err}");

        // Removed: unmounted, its file gone; removing again is nothing to do.
        host.runc.remove_volume(&service).await.unwrap();
        assert!(!image_file.exists());
        assert!(!host.volumes().join(&service).exists());
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&service), "{mounts}");
        host.runc.remove_volume(&service).await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_are_refused_and_leave_nothing() {
    as_the_unit("bad_settings_are_refused_and_leave_nothing", async {
        let mut host = Host::new();
        let sh = image(serde_json::json!({"Cmd": ["/bin/busybox", "true"]}));
        let volume = |path: &str| RunSettings {
            volume: Some(VolumeSpec {
                service_id: "svc".into(),
                path: path.into(),
                size_mb: 16,
            }),
            ..Default::default()
        };
        for (settings, said) in [
            (volume("data"), "is not absolute"),
            (volume("/"), "is the container's root"),
            (volume("/proc/self"), "/proc"),
            (volume("/sys"), "/sys"),
            (volume("/dev/x"), "/dev"),
            (volume("/data/../../etc"), "`..`"),
            (
                RunSettings {
                    env: vec![("NOT-POSIX".into(), "x".into())],
                    ..Default::default()
                },
                "not a POSIX name",
            ),
            (
                RunSettings {
                    secret_files: vec![("../passwd".into(), "x".into())],
                    ..Default::default()
                },
                "not a POSIX name",
            ),
        ] {
            match host.start(&sh, settings).await {
                Err(e @ RuntimeError::Settings(_)) => {
                    assert!(e.to_string().contains(said), "{e}")
                }
                other => panic!("not refused ({said}): {other:?}"),
            }
            let id = host.containers.last().unwrap();
            assert!(!host.private(id).exists());
            assert!(!host.data().join("netns").join(id).exists());
        }
        assert!(!host.volumes().exists(), "no volume was made");
    })
    .await;
}
