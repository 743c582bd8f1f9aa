//! A service's one persistent volume: an ext4 filesystem in a file of its own,
//! `<volumes>/<service_id>.img`, its whole size reserved on the host when made
//! (`fallocate`), loop-mounted at `<volumes>/<service_id>/` and kept mounted across
//! the service's deploys and restarts. A filesystem of its own is what makes the
//! size a limit: a write past it is `ENOSPC` inside the container and fills
//! nothing else (a quota on a shared filesystem needs quota support on the host's
//! filesystem, which berth cannot count on). The volumes directory is the server's
//! alone (0700); a container gets only its own service's mount, bind-mounted into
//! its root by [`crate::runc`].

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::settings::{check_service_id, Invalid, VolumeSpec};

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("volumes need {tool}, which was not found on PATH; install it (Debian: apt-get install {package})")]
    Missing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("the volume of service {service_id} is {have_mb} MB and cannot shrink to {want_mb} MB; keep its size, or remove the volume (its data is lost) first")]
    Shrink {
        service_id: String,
        have_mb: u64,
        want_mb: u64,
    },
    #[error("the volume of service {service_id}: {step}: {reason}")]
    Step {
        service_id: String,
        step: &'static str,
        reason: String,
    },
}

fn failed(service_id: &str, step: &'static str, reason: String) -> VolumeError {
    VolumeError::Step {
        service_id: service_id.to_owned(),
        step,
        reason,
    }
}

/// A volume mounted on the host, kept as it is while this lives.
pub struct Mounted<'a> {
    path: PathBuf,
    _lock: std::sync::MutexGuard<'a, ()>,
}

impl Mounted<'_> {
    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The volumes of one server, under `dir`.
#[derive(Debug)]
pub struct Volumes {
    dir: PathBuf,
    /// One change at a time: two containers of a service starting at once must not
    /// both make (or grow) its filesystem.
    lock: std::sync::Mutex<()>,
}

/// A tool from PATH or the sbin directories (a server's PATH may lack them).
fn tool(name: &'static str, package: &'static str) -> Result<PathBuf, VolumeError> {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or(VolumeError::Missing {
            tool: name,
            package,
        })
}

/// Runs `command`; its stderr (or status) as the error.
fn run(command: &mut Command) -> Result<String, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(if said.is_empty() {
            out.status.to_string()
        } else {
            said
        })
    }
}

/// Reserves `bytes` for the file at `path` (extending it; the blocks are the
/// file's, so no later write elsewhere can take them).
fn reserve(path: &Path, bytes: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, bytes)?;
    f.sync_all()
}

impl Volumes {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Volumes {
            dir: dir.into(),
            lock: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The services that have a volume here.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_suffix(".img")?;
                check_service_id(id).is_ok().then(|| id.to_owned())
            })
            .collect()
    }

    /// The filesystem image of service `id`'s volume.
    pub fn image(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }

    /// Where service `id`'s volume is mounted on the host.
    pub fn mount_point(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Whether a filesystem is mounted at `path` (it is then on another device
    /// than its directory).
    fn mounted(&self, path: &Path) -> bool {
        match (std::fs::metadata(path), std::fs::metadata(&self.dir)) {
            (Ok(m), Ok(d)) => m.dev() != d.dev(),
            _ => false,
        }
    }

    /// The volume of `spec.service_id`, ready to be bind-mounted: made on first
    /// use (its root owned by `owner`, the container user's host ids), grown to a
    /// larger `size_mb`, mounted if it was not. A smaller size is refused:
    /// shrinking would lose data. The volume stays as it is (mounted, its size)
    /// while the returned guard lives: bind it before letting go.
    pub fn ensure(&self, spec: &VolumeSpec, owner: (u32, u32)) -> Result<Mounted<'_>, VolumeError> {
        spec.check()?;
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let id = spec.service_id.as_str();
        let io = |s: &'static str| move |e: std::io::Error| failed(id, s, e.to_string());
        let want = spec.size_mb << 20;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("creating the volumes directory"))?;
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("creating the volumes directory"))?;
        let image = self.image(id);
        if !image.exists() {
            self.make(id, &image, want, owner)?;
        }
        let have = std::fs::metadata(&image)
            .map_err(io("reading its size"))?
            .len();
        if want < have {
            return Err(VolumeError::Shrink {
                service_id: id.to_owned(),
                have_mb: have >> 20,
                want_mb: spec.size_mb,
            });
        }
        let at = self.mount_point(id);
        if !self.mounted(&at) {
            self.mount(id, &image, &at)?;
        }
        if want > have {
            self.grow(id, &image, &at, have, want)?;
        }
        Ok(Mounted {
            path: at,
            _lock: lock,
        })
    }

    /// A new filesystem image of `bytes`, its root owned by `owner`. Made aside
    /// and renamed into place: an image is a whole filesystem or nothing.
    fn make(
        &self,
        id: &str,
        image: &Path,
        bytes: u64,
        owner: (u32, u32),
    ) -> Result<(), VolumeError> {
        let mkfs = tool("mkfs.ext4", "e2fsprogs")?;
        let new = self.dir.join(format!("{id}.img.new"));
        let made = reserve(&new, bytes)
            .map_err(|e| failed(id, "reserving its space", e.to_string()))
            .and_then(|()| {
                // -m 0: no blocks kept for the host's root, the service gets the
                // whole size.
                run(Command::new(mkfs)
                    .args(["-q", "-F", "-m", "0", "-E"])
                    .arg(format!("root_owner={}:{}", owner.0, owner.1))
                    .arg(&new))
                .map_err(|e| failed(id, "making its filesystem", e))
            })
            .and_then(|_| {
                std::fs::rename(&new, image)
                    .map_err(|e| failed(id, "making its filesystem", e.to_string()))
            });
        if made.is_err() {
            let _ = std::fs::remove_file(&new);
        }
        made
    }

    fn mount(&self, id: &str, image: &Path, at: &Path) -> Result<(), VolumeError> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(at)
            .or_else(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| failed(id, "mounting it", e.to_string()))?;
        run(Command::new(tool("mount", "mount")?)
            .args(["-t", "ext4", "-o", "loop,nodev,nosuid"])
            .arg(image)
            .arg(at))
        .map_err(|e| failed(id, "mounting it", e))?;
        Ok(())
    }

    /// Grows the mounted volume from `have` to `want` bytes: the file, then the
    /// loop device's idea of its size, then the filesystem, online; offline
    /// (unmounted, checked, grown, mounted again) where the kernel refuses online
    /// resizing and no container uses it. On failure the file is as it was.
    fn grow(
        &self,
        id: &str,
        image: &Path,
        at: &Path,
        have: u64,
        want: u64,
    ) -> Result<(), VolumeError> {
        let losetup = tool("losetup", "mount")?;
        let resize = tool("resize2fs", "e2fsprogs")?;
        let device = || -> Result<String, VolumeError> {
            let devices = run(Command::new(&losetup)
                .args(["-n", "-O", "NAME", "-j"])
                .arg(image))
            .map_err(|e| failed(id, "finding its loop device", e))?;
            devices
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| failed(id, "finding its loop device", "none is attached".into()))
        };
        reserve(image, want).map_err(|e| failed(id, "reserving the larger size", e.to_string()))?;
        let dev = device()?;
        let grown = run(Command::new(&losetup).args(["-c", &dev]))
            .map_err(|e| failed(id, "growing its loop device", e))
            .and_then(|_| match run(Command::new(&resize).arg(&dev)) {
                Ok(_) => Ok(()),
                Err(online) if self.users(at) > 1 => Err(failed(
                    id,
                    "growing its filesystem",
                    format!("{online}; online resizing failed, and offline resizing needs the volume unused: stop the service's running deployment, then deploy again"),
                )),
                Err(_) => self.grow_offline(id, image, at),
            });
        if grown.is_err() {
            // Back to the size the filesystem has: a later deploy tries again.
            let back = std::fs::OpenOptions::new()
                .write(true)
                .open(image)
                .and_then(|f| f.set_len(have));
            if back.is_ok() {
                if let Ok(dev) = device() {
                    let _ = run(Command::new(&losetup).args(["-c", &dev]));
                }
            }
        }
        grown
    }

    /// Unmounted, checked (resize2fs wants a fresh check), grown to its file's
    /// size, mounted again.
    fn grow_offline(&self, id: &str, image: &Path, at: &Path) -> Result<(), VolumeError> {
        let fsck = tool("e2fsck", "e2fsprogs")?;
        let resize = tool("resize2fs", "e2fsprogs")?;
        rustix::mount::unmount(at, rustix::mount::UnmountFlags::empty())
            .map_err(|e| failed(id, "unmounting it to grow it", e.to_string()))?;
        let checked = Command::new(fsck)
            .args(["-f", "-p"])
            .arg(image)
            .output()
            .map_err(|e| e.to_string())
            .and_then(|out| match out.status.code() {
                // 1: errors corrected.
                Some(0 | 1) => Ok(()),
                _ => Err(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            })
            .map_err(|e| failed(id, "checking its filesystem", e));
        let grown = checked.and_then(|()| {
            run(Command::new(resize).arg(image))
                .map(drop)
                .map_err(|e| failed(id, "growing its filesystem", e))
        });
        // Mounted again whatever happened: the service keeps its data.
        let mounted = self.mount(id, image, at);
        grown.and(mounted)
    }

    /// How many mounts of this host's mount namespace show the filesystem at
    /// `at`: its own mount, and one per container of the service (their roots'
    /// binds are here too, under their private directories).
    fn users(&self, at: &Path) -> usize {
        let Ok(meta) = std::fs::metadata(at) else {
            return 0;
        };
        let dev = format!(
            "{}:{}",
            rustix::fs::major(meta.dev()),
            rustix::fs::minor(meta.dev())
        );
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').nth(2) == Some(dev.as_str()))
            .count()
    }

    /// Deletes service `id`'s volume and its data: unmounted (lazily while a
    /// container still uses it: its space is freed when that one stops), image
    /// removed. Nothing to do when it has none.
    pub fn remove(&self, id: &str) -> Result<(), VolumeError> {
        check_service_id(id)?;
        let _one = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let at = self.mount_point(id);
        let step = |step: &'static str| {
            move |e: std::io::Error| VolumeError::Step {
                service_id: id.to_owned(),
                step,
                reason: e.to_string(),
            }
        };
        while self.mounted(&at) {
            use rustix::mount::{unmount, UnmountFlags};
            match unmount(&at, UnmountFlags::empty()) {
                Ok(()) => {}
                Err(rustix::io::Errno::BUSY) => unmount(&at, UnmountFlags::DETACH)
                    .map_err(|e| step("unmounting it")(e.into()))?,
                Err(e) => return Err(step("unmounting it")(e.into())),
            }
        }
        for file in [self.image(id), self.dir.join(format!("{id}.img.new"))] {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(step("deleting its image")(e)),
            }
        }
        match std::fs::remove_dir(&at) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(step("removing its mount point")(e)),
        }
    }
}
