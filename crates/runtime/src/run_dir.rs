//! A container's private directory outside the data dir: a small tmpfs at
//! `<base>/<container id>/` (the base defaults under `/run`), for a container with
//! secrets or a volume. It holds
//! - `config.json`, the runtime spec (secret variables are in it); the bundle's
//!   `config.json` is a symlink to it, so the spec is never on disk and a restart
//!   re-uses it while the machine is up;
//! - `secrets/NAME`, the secret files (0400, the container user's);
//! - `root/`, the container's root as runc sees it: a private recursive bind of the
//!   bundle's root filesystem, with the secrets (read-only) and the volume mounted
//!   onto it.
//!
//! Why mounts made here and not bind mounts in the spec: with a user namespace,
//! runc 1.1 opens a bind mount's source from inside the container's mount
//! namespace, which needs CAP_SYS_PTRACE, and berth's systemd unit does not grant
//! it. runc binds the root recursively, so what is mounted under `root/` is what
//! the container sees; the bind is private, so nothing mounted onto it shows in the
//! data dir (under the bundle's root filesystem). In the container these mounts
//! are locked (copied into a namespace its user namespace owns): it cannot unmount
//! them or make them writable.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use secrecy::{ExposeSecret, SecretString};

/// The tmpfs: enough for a spec and a few secrets, never executable. 0711: runc
/// sets the root up as the container's root user (an id the tmpfs's owner, the
/// host's root, is not), which must pass through to `root/`, and may read nothing.
const TMPFS_OPTIONS: &str = "size=4m,mode=0711";

fn context(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> io::Error {
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// A container's private directory, at `<base>/<id>`.
#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

/// How a directory is mounted into the container's root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// As its mount is (a volume: read-write, `nodev`, `nosuid`).
    AsMounted,
    /// Read-only, `nosuid`, `nodev`, `noexec` (the secrets).
    ReadOnly,
}

impl RunDir {
    pub fn at(base: &Path, id: &str) -> RunDir {
        RunDir {
            path: base.join(id),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container's root as runc is told it.
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    pub fn config(&self) -> PathBuf {
        self.path.join("config.json")
    }

    fn secrets(&self) -> PathBuf {
        self.path.join("secrets")
    }

    /// The ids of the containers that have a directory under `base`.
    pub fn list(base: &Path) -> Vec<String> {
        std::fs::read_dir(base)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A new, empty private directory (one left by an earlier run is removed
    /// first), its tmpfs mounted.
    pub fn create(base: &Path, id: &str) -> io::Result<RunDir> {
        let dir = RunDir::at(base, id);
        dir.remove();
        make_passable(base).map_err(context(format!("creating {}", base.display())))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir.path)
            .map_err(context(format!("creating {}", dir.path.display())))?;
        use rustix::mount::{mount, MountFlags};
        let options = std::ffi::CString::new(TMPFS_OPTIONS).expect("no NUL");
        mount(
            "tmpfs",
            &dir.path,
            "tmpfs",
            MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
            options.as_c_str(),
        )
        .map_err(|e| context("mounting the container's private tmpfs")(e.into()))?;
        Ok(dir)
    }

    /// Whether the tmpfs is mounted (the directory is then on another device than
    /// its parent).
    pub fn exists(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let parent = self.path.parent().unwrap_or(Path::new("/"));
        match (std::fs::metadata(&self.path), std::fs::metadata(parent)) {
            (Ok(d), Ok(p)) => d.dev() != p.dev(),
            _ => false,
        }
    }

    /// Writes the spec (0600, the host's root's only).
    pub fn write_config(&self, spec: &serde_json::Value) -> io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.config())
            .map_err(context("writing the spec"))?;
        serde_json::to_writer_pretty(f, spec).map_err(io::Error::other)
    }

    /// Writes each secret as `secrets/NAME` (0400), the directory and the files
    /// owned by `owner` (the container user's host ids).
    pub fn write_secrets(
        &self,
        secrets: &[(String, SecretString)],
        owner: (u32, u32),
    ) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.secrets();
        let ctx = || context("writing the secret files");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(ctx())?;
        for (name, value) in secrets {
            // Names are POSIX names (checked): nothing to resolve. A repeated name:
            // the last value.
            let path = dir.join(name);
            let _ = std::fs::remove_file(&path);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o400)
                .open(&path)
                .map_err(ctx())?;
            f.write_all(value.expose_secret().as_bytes())
                .map_err(ctx())?;
            f.set_permissions(std::fs::Permissions::from_mode(0o400))
                .map_err(ctx())?;
            std::os::unix::fs::fchown(&f, Some(owner.0), Some(owner.1)).map_err(ctx())?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).map_err(ctx())?;
        std::os::unix::fs::chown(&dir, Some(owner.0), Some(owner.1)).map_err(ctx())
    }

    /// Binds `rootfs` (and what is mounted under it) at `root/`, privately:
    /// what is mounted onto it later stays off `rootfs`.
    pub fn mount_root(&self, rootfs: &Path) -> io::Result<()> {
        use rustix::mount::{mount_bind_recursive, mount_change, MountPropagationFlags};
        let root = self.root();
        let ctx = || context("binding the container's root");
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&root)
            .map_err(ctx())?;
        mount_bind_recursive(rootfs, &root).map_err(|e| ctx()(e.into()))?;
        mount_change(
            &root,
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .map_err(|e| ctx()(e.into()))
    }

    /// Mounts the secret files read-only at `destination` in the container's root.
    pub fn mount_secrets(&self, destination: &str, container_root: (u32, u32)) -> io::Result<()> {
        self.mount_in_root(
            &self.secrets(),
            destination,
            Access::ReadOnly,
            container_root,
        )
    }

    /// Mounts host directory `source` (a mount's root, or a directory berth made)
    /// at `destination` (absolute, checked) in the container's root. The
    /// destination is resolved inside the root, never through a symlink out of it
    /// (the image's own, planted anywhere on the way); missing directories are
    /// made, owned by `container_root` (the container's root user's host ids).
    pub fn mount_in_root(
        &self,
        source: &Path,
        destination: &str,
        access: Access,
        container_root: (u32, u32),
    ) -> io::Result<()> {
        use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};
        let ctx = || context(format!("mounting at {destination} in the container"));
        let root = crate::unpack::open_dir_path(&self.root()).map_err(ctx())?;
        let target = dir_in_root(&root, destination, container_root).map_err(ctx())?;
        let tree = open_tree(
            rustix::fs::CWD,
            source,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| ctx()(e.into()))?;
        move_mount(
            &tree,
            "",
            &target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| ctx()(e.into()))?;
        if access == Access::ReadOnly {
            // The tree's descriptor names the mount, now attached: remounted
            // through it, not through a path the container's files could redirect.
            use rustix::mount::{mount_remount, MountFlags};
            mount_remount(
                format!("/proc/self/fd/{}", tree.as_raw_fd()).as_str(),
                MountFlags::BIND
                    | MountFlags::RDONLY
                    | MountFlags::NOSUID
                    | MountFlags::NODEV
                    | MountFlags::NOEXEC,
                "",
            )
            .map_err(|e| ctx()(e.into()))?;
        }
        Ok(())
    }

    /// Unmounts the tmpfs and everything on it (lazily: runc may still be letting
    /// go) and removes the directory. Nothing to do when there is none.
    pub fn remove(&self) {
        use rustix::mount::{unmount, UnmountFlags};
        // A detach takes the mounts on it (root/ and what is under it) along.
        while self.exists() {
            if unmount(&self.path, UnmountFlags::DETACH).is_err() {
                break;
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Creates the missing directories of `base` (0711: passable, not listable).
fn make_passable(base: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut p = base;
    while !p.exists() {
        missing.push(p.to_owned());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for dir in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o711).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        // The process's umask (0077 under the systemd unit) took the x bits.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    }
    Ok(())
}

/// The directory at `path` (absolute) inside the root open at `root`, made where
/// missing (each component resolved inside the root: `..` and symlinks, absolute
/// or relative, never leave it).
fn dir_in_root(root: &OwnedFd, path: &str, owner: (u32, u32)) -> io::Result<OwnedFd> {
    use rustix::fs::{chownat, mkdirat, openat2, unlinkat, AtFlags, Gid, Uid};
    let in_root = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let open = |rel: &str| {
        openat2(
            root,
            if rel.is_empty() { "." } else { rel },
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            in_root,
        )
    };
    let mut done = String::new();
    for part in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        let parent = open(&done)?;
        let next = if done.is_empty() {
            part.to_owned()
        } else {
            format!("{done}/{part}")
        };
        if let Err(rustix::io::Errno::NOENT) = open(&next) {
            // Missing, or a symlink to nothing in the root: a directory now.
            let _ = unlinkat(&parent, part, AtFlags::empty());
            mkdirat(&parent, part, Mode::from_raw_mode(0o755))?;
            chownat(
                &parent,
                part,
                Some(Uid::from_raw(owner.0)),
                Some(Gid::from_raw(owner.1)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        done = next;
    }
    Ok(open(&done)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_point_is_made_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // An absolute symlink to a host directory, a relative one climbing out.
        std::os::unix::fs::symlink(&outside, root.join("data")).unwrap();
        std::os::unix::fs::symlink("../../../outside", root.join("var/lib")).unwrap();
        let fd = crate::unpack::open_dir_path(&root).unwrap();
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        for path in ["/data/db", "/var/lib/x", "/new/deep/dir"] {
            let made = dir_in_root(&fd, path, me).unwrap();
            let real = std::fs::read_link(format!("/proc/self/fd/{}", made.as_raw_fd())).unwrap();
            assert!(
                real.starts_with(&root),
                "{path} resolved to {}",
                real.display()
            );
        }
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        assert!(root.join("new/deep/dir").is_dir());
    }
}
