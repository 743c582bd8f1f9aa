//! A lazy layer's FUSE mount: mounted read-only, nodev, nosuid, open to every
//! user (the overlay above it reads as the server, the container as its own
//! users; the kernel checks modes), by the mount syscall itself (fuser without
//! libfuse). Unmounted when dropped; a mount still busy is detached and its
//! connection aborted, so that no reader waits on a session that is gone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use super::fs::LayerFs;
use super::reader::Reader;
use super::EstargzError;
use crate::unpack::IdShift;

/// Can this process mount FUSE filesystems: is `device` there and can it be
/// opened? Says why not.
pub fn available(device: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map(drop)
        .map_err(|e| format!("{}: {e}", device.display()))
}

pub struct Mounted {
    dir: PathBuf,
    session: Option<BackgroundSession>,
}

impl Mounted {
    /// Mounts `reader`'s layer at `dir` (made if missing); reads run on the
    /// current tokio runtime.
    pub fn mount(reader: Arc<Reader>, dir: &Path, ids: IdShift) -> Result<Mounted, EstargzError> {
        std::fs::create_dir_all(dir).map_err(|e| EstargzError::Mount(e.to_string()))?;
        control_filesystem();
        let fs = LayerFs::new(reader, ids, tokio::runtime::Handle::current());
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("berth-estargz".into()),
            MountOption::Subtype("estargz".into()),
            MountOption::RO,
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::DefaultPermissions,
        ];
        config.acl = SessionACL::All;
        let session = fuser::spawn_mount(fs, dir, &config)
            .map_err(|e| EstargzError::Mount(format!("{}: {e}", dir.display())))?;
        Ok(Mounted {
            dir: dir.to_owned(),
            session: Some(session),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        // The connection's number, if `dir` is still this FUSE mount (not the
        // directory under it: that minor would name another connection).
        // `f_type`'s width differs by architecture.
        #[allow(clippy::unnecessary_cast)]
        let fuse = rustix::fs::statfs(&self.dir).is_ok_and(|s| s.f_type as i64 == FUSE_SUPER_MAGIC);
        let device = fuse
            .then(|| std::fs::metadata(&self.dir).ok())
            .flatten()
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                libc::minor(m.dev())
            });
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        if let Some(minor) = device {
            // The session thread ends when its connection does: at once when
            // aborted, else when the last user of the detached mount lets go.
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
        }
        let until = std::time::Instant::now() + SESSION_END;
        while !session.guard.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if session.guard.is_finished() {
            let _ = session.join();
        } else {
            // Its thread is let go, to end with its connection.
            tracing::warn!(dir = %self.dir.display(), "a lazy layer's FUSE session did not end after its unmount");
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `statfs`'s `f_type` of a FUSE filesystem (linux/magic.h).
const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// How long a drop waits for the session thread of a mount it detached.
const SESSION_END: std::time::Duration = std::time::Duration::from_secs(2);

/// Mounts the FUSE control filesystem (`fusectl`) where the kernel offers it and
/// it is not mounted yet: its `abort` files end a connection whose mount is
/// still held elsewhere (a detached overlay, a mount namespace). Once per process.
fn control_filesystem() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let dir = Path::new("/sys/fs/fuse/connections");
        let mounted = std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|m| m.lines().any(|l| l.contains(" - fusectl ")));
        if !mounted && dir.is_dir() {
            if let Err(e) = rustix::mount::mount(
                "fusectl",
                dir,
                "fusectl",
                rustix::mount::MountFlags::empty(),
                None,
            ) {
                tracing::debug!(error = %e, "mounting fusectl");
            }
        }
    });
}
