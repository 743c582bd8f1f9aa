//! Unpacked images, kept once per platform manifest (`ROOT/<hex>/rootfs`) and shared
//! read-only by the deployments of that image: each deployment gets an overlay
//! (image below, its own upper directory above), so a redeploy unpacks nothing and a
//! container's writes never reach the shared copy. Where overlay mounts are not
//! permitted, the deployment gets a full copy instead.

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_types::Digest;

use crate::unpack::IdShift;

/// What a complete image is made of, the digests it was asked for by, and the id
/// shift its owners were written with.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageRefs {
    pub requested: Vec<Digest>,
    pub blobs: Vec<Digest>,
    #[serde(default)]
    pub ids: IdShift,
}

#[derive(Clone, Debug)]
pub struct ImageStore {
    root: PathBuf,
    /// The owners of unpacked files are shifted into the containers' user namespace
    /// range, once, at unpack (runc 1.1 has no idmapped mounts).
    ids: IdShift,
}

impl ImageStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_shifted(root, IdShift::NONE)
    }

    /// An image store whose images are unpacked with owners shifted by `ids`; an
    /// image unpacked with another shift is not reused.
    pub fn open_shifted(root: impl Into<PathBuf>, ids: IdShift) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(ImageStore { root, ids })
    }

    pub fn ids(&self) -> IdShift {
        self.ids
    }

    fn dir(&self, manifest: &Digest) -> PathBuf {
        self.root.join(manifest.hex())
    }

    /// The unpacked root filesystem of `manifest`, if complete.
    pub fn ready(&self, manifest: &Digest) -> Option<PathBuf> {
        let dir = self.dir(manifest);
        let refs: ImageRefs =
            serde_json::from_slice(&std::fs::read(dir.join("complete")).ok()?).ok()?;
        (refs.ids == self.ids).then(|| dir.join("rootfs"))
    }

    /// A fresh directory to unpack `manifest` into (anything half-done, or unpacked
    /// with another shift, is removed), owned by the containers' root.
    pub fn staging(&self, manifest: &Digest) -> io::Result<PathBuf> {
        let dir = self.dir(manifest);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("rootfs"))?;
        let root = self.ids.host(0);
        std::os::unix::fs::chown(dir.join("rootfs"), Some(root), Some(root))?;
        Ok(dir.join("rootfs"))
    }

    /// Marks `manifest` complete; only then is it reused. The marker records what
    /// the image is made of and which digests were asked for it (an index, a tag's
    /// digest), for the garbage collector.
    pub fn complete(
        &self,
        manifest: &Digest,
        requested: &Digest,
        blobs: Vec<Digest>,
    ) -> io::Result<PathBuf> {
        let made_of = ImageRefs {
            requested: vec![requested.clone()],
            blobs,
            ids: self.ids,
        };
        let json = serde_json::to_vec(&made_of).map_err(io::Error::other)?;
        std::fs::write(self.dir(manifest).join("complete"), json)?;
        Ok(self.dir(manifest).join("rootfs"))
    }

    /// Records that `requested` (an index, say) led to the complete image `manifest`.
    pub fn add_request(&self, manifest: &Digest, requested: &Digest) -> io::Result<()> {
        let path = self.dir(manifest).join("complete");
        let mut refs: ImageRefs =
            serde_json::from_slice(&std::fs::read(&path)?).unwrap_or_default();
        if !refs.requested.contains(requested) {
            refs.requested.push(requested.clone());
            std::fs::write(&path, serde_json::to_vec(&refs).map_err(io::Error::other)?)?;
        }
        Ok(())
    }

    /// Removes every image that neither is nor was asked for by a digest in `live`,
    /// and any half-done unpack (call it when no pull runs). Returns how many images
    /// went, and the blobs the remaining ones are made of.
    pub fn gc(&self, live: &HashSet<Digest>) -> io::Result<(usize, HashSet<Digest>)> {
        let mut removed = 0;
        let mut keep = HashSet::new();
        for e in std::fs::read_dir(&self.root)?.flatten() {
            let own = format!("sha256:{}", e.file_name().to_string_lossy()).parse::<Digest>();
            let refs: Option<ImageRefs> = std::fs::read(e.path().join("complete"))
                .ok()
                .map(|b| serde_json::from_slice(&b).unwrap_or_default());
            let wanted = refs.as_ref().is_some_and(|r| {
                own.as_ref().is_ok_and(|o| live.contains(o))
                    || r.requested.iter().any(|d| live.contains(d))
            });
            if wanted {
                keep.extend(refs.into_iter().flat_map(|r| r.blobs));
            } else {
                std::fs::remove_dir_all(e.path())?;
                removed += 1;
            }
        }
        Ok((removed, keep))
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
pub fn prepare(image: &Path, bundle: &Path, ids: IdShift) -> io::Result<Layout> {
    let (upper, work, target) = (
        bundle.join("upper"),
        bundle.join("work"),
        bundle.join("rootfs"),
    );
    for d in [&upper, &work, &target] {
        std::fs::create_dir_all(d)?;
    }
    // The merged root takes the upper directory's owner: the container's root.
    let root = ids.host(0);
    for d in [&upper, &target] {
        std::os::unix::fs::chown(d, Some(root), Some(root))?;
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
