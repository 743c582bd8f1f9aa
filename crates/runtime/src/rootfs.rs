//! Unpacked images, kept once per platform manifest (`ROOT/<hex>/rootfs`) and shared
//! read-only by the deployments of that image: each deployment gets an overlay
//! (image below, its own upper directory above), so a redeploy unpacks nothing and a
//! container's writes never reach the shared copy. Where overlay mounts are not
//! permitted, the deployment gets a full copy instead.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_types::Digest;

#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(ImageStore { root })
    }

    fn dir(&self, manifest: &Digest) -> PathBuf {
        self.root.join(manifest.hex())
    }

    /// The unpacked root filesystem of `manifest`, if complete.
    pub fn ready(&self, manifest: &Digest) -> Option<PathBuf> {
        let dir = self.dir(manifest);
        dir.join("complete").exists().then(|| dir.join("rootfs"))
    }

    /// A fresh directory to unpack `manifest` into (anything half-done is removed).
    pub fn staging(&self, manifest: &Digest) -> io::Result<PathBuf> {
        let dir = self.dir(manifest);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("rootfs"))?;
        Ok(dir.join("rootfs"))
    }

    /// Marks `manifest` complete; only then is it reused.
    pub fn complete(&self, manifest: &Digest) -> io::Result<PathBuf> {
        std::fs::write(self.dir(manifest).join("complete"), b"")?;
        Ok(self.dir(manifest).join("rootfs"))
    }

    /// Removes a half-done unpack.
    pub fn discard(&self, manifest: &Digest) {
        let _ = std::fs::remove_dir_all(self.dir(manifest));
    }
}

/// How a deployment's root filesystem was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Overlay,
    Copy,
}

/// Gives `bundle/rootfs` the contents of `image`: an overlay mount when permitted,
/// else a copy.
pub fn prepare(image: &Path, bundle: &Path) -> io::Result<Layout> {
    let (upper, work, target) = (
        bundle.join("upper"),
        bundle.join("work"),
        bundle.join("rootfs"),
    );
    for d in [&upper, &work, &target] {
        std::fs::create_dir_all(d)?;
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        upper.display(),
        work.display()
    );
    if mount_overlay(&target, &opts).is_ok() {
        return Ok(Layout::Overlay);
    }
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", image.display()))
        .arg(&target)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(
            "copying the image's root filesystem failed",
        ));
    }
    Ok(Layout::Copy)
}

/// Undoes [`prepare`] (unmounts if needed) and removes the bundle.
pub fn remove(bundle: &Path) {
    let target = bundle.join("rootfs");
    if let Ok(c) = CString::new(target.as_os_str().as_bytes()) {
        // SAFETY: a valid C string; failure (not mounted) is fine.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_dir_all(bundle);
}

fn mount_overlay(target: &Path, opts: &str) -> io::Result<()> {
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| io::Error::other("NUL in path"));
    let (src, tgt, fstype, data) = (
        cstr(b"overlay")?,
        cstr(target.as_os_str().as_bytes())?,
        cstr(b"overlay")?,
        cstr(opts.as_bytes())?,
    );
    // SAFETY: valid C strings that outlive the call.
    let r = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
