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
        let device = std::fs::metadata(&self.dir).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            libc::minor(m.dev())
        });
        let _ = rustix::mount::unmount(&self.dir, rustix::mount::UnmountFlags::DETACH);
        if let Some(minor) = device {
            // The session thread ends when its connection does.
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
        }
        let _ = session.join();
        let _ = std::fs::remove_dir(&self.dir);
    }
}
