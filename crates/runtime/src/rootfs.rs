//! Unpacked images, as containerd's overlay snapshotter keeps them: each layer
//! unpacked once into a directory of its own (`ROOT/layers/<shift>/<blob hex>`,
//! whiteouts kept as overlay whiteouts), shared by every image that has it, and an
//! image (`ROOT/<manifest hex>/complete`) is the list of its layers. Layers unpack
//! in parallel, each as it downloads, and nothing is applied twice. A deployment
//! gets an overlay: the image's layers as lower directories, its own upper
//! directory above, so a redeploy unpacks nothing and a container's writes never
//! reach a shared layer. Where overlay mounts are not permitted, the deployment
//! gets a copy of the layers flattened in order instead.
//!
//! A layer is addressed by the digest of the blob it was unpacked from, which its
//! download verified, never by the config's `diff_ids`: those are the image
//! author's claim, and a layer found by a claimed diff_id would hand one tenant
//! another's files after proving access to a different blob. (An uncompressed
//! layer's blob digest is its diff_id, so its directory is the same either way.)

use std::collections::HashSet;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_types::Digest;

use crate::unpack::IdShift;

/// What a complete image is made of (its blobs, and its layers' blob digests in
/// order, lowest first), the digests it was asked for by, and the id shift its owners
/// were written with.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ImageRefs {
    pub requested: Vec<Digest>,
    pub blobs: Vec<Digest>,
    #[serde(default)]
    pub layers: Vec<Digest>,
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

const LAYERS: &str = "layers";
const STAGING: &str = ".staging";

impl ImageStore {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        Self::open_shifted(root, IdShift::NONE)
    }

    /// An image store whose layers are unpacked with owners shifted by `ids`; a
    /// layer unpacked with another shift is not reused.
    pub fn open_shifted(root: impl Into<PathBuf>, ids: IdShift) -> io::Result<Self> {
        let root = root.into();
        let store = ImageStore { root, ids };
        std::fs::create_dir_all(store.layers_dir())?;
        std::fs::create_dir_all(store.root.join(LAYERS).join(STAGING))?;
        Ok(store)
    }

    pub fn ids(&self) -> IdShift {
        self.ids
    }

    fn dir(&self, manifest: &Digest) -> PathBuf {
        self.root.join(manifest.hex())
    }

    /// Where this store's layers are: one directory per id shift.
    fn layers_dir(&self) -> PathBuf {
        self.root
            .join(LAYERS)
            .join(format!("{}-{}", self.ids.base, self.ids.size))
    }

    /// The layer unpacked from blob `digest`, if there. A layer directory exists
    /// only once complete: it is renamed into place.
    pub fn layer(&self, digest: &Digest) -> Option<PathBuf> {
        let dir = self.layers_dir().join(digest.hex());
        dir.is_dir().then_some(dir)
    }

    /// A fresh directory to unpack the layer blob `digest` into, owned by the
    /// containers' root; [`ImageStore::commit_layer`] puts it in place.
    pub fn stage_layer(&self, digest: &Digest) -> io::Result<PathBuf> {
        let dir = self.root.join(LAYERS).join(STAGING).join(format!(
            "{}-{:016x}",
            digest.hex(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir)?;
        let root = self.ids.host(0);
        std::os::unix::fs::chown(&dir, Some(root), Some(root))?;
        Ok(dir)
    }

    /// Puts a staged layer in place (another pull that unpacked the same layer
    /// first wins; this one's copy goes).
    pub fn commit_layer(&self, staged: &Path, digest: &Digest) -> io::Result<PathBuf> {
        let dir = self.layers_dir().join(digest.hex());
        match std::fs::rename(staged, &dir) {
            Ok(()) => Ok(dir),
            Err(_) if dir.is_dir() => {
                remove_tree(staged);
                Ok(dir)
            }
            Err(e) => Err(e),
        }
    }

    /// The layers of `manifest`, lowest first, if the image is complete and every
    /// layer is still there.
    pub fn ready(&self, manifest: &Digest) -> Option<Vec<PathBuf>> {
        let refs: ImageRefs =
            serde_json::from_slice(&std::fs::read(self.dir(manifest).join("complete")).ok()?)
                .ok()?;
        if refs.ids != self.ids {
            return None;
        }
        refs.layers.iter().map(|l| self.layer(l)).collect()
    }

    /// Marks `manifest` complete, made of `layers` (blob digests, lowest first); only
    /// then is it reused. The marker records what the image is made of and which
    /// digests were asked for it (an index, a tag's digest), for the garbage
    /// collector.
    pub fn complete(
        &self,
        manifest: &Digest,
        requested: &Digest,
        blobs: Vec<Digest>,
        layers: Vec<Digest>,
    ) -> io::Result<Vec<PathBuf>> {
        let dirs = layers
            .iter()
            .map(|l| {
                self.layer(l)
                    .ok_or_else(|| io::Error::other(format!("layer {l} is not unpacked")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let made_of = ImageRefs {
            requested: vec![requested.clone()],
            blobs,
            layers,
            ids: self.ids,
        };
        let json = serde_json::to_vec(&made_of).map_err(io::Error::other)?;
        std::fs::create_dir_all(self.dir(manifest))?;
        std::fs::write(self.dir(manifest).join("complete"), json)?;
        Ok(dirs)
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
    /// the layers no remaining image has, and any half-done unpack (call it when no
    /// pull runs). Returns how many images went, and the blobs the remaining ones
    /// are made of.
    pub fn gc(&self, live: &HashSet<Digest>) -> io::Result<(usize, HashSet<Digest>)> {
        let mut removed = 0;
        let mut keep = HashSet::new();
        let mut layers = HashSet::new();
        for e in std::fs::read_dir(&self.root)?.flatten() {
            if e.file_name() == LAYERS {
                continue;
            }
            let own = format!("sha256:{}", e.file_name().to_string_lossy()).parse::<Digest>();
            let refs: Option<ImageRefs> = std::fs::read(e.path().join("complete"))
                .ok()
                .map(|b| serde_json::from_slice(&b).unwrap_or_default());
            let wanted = refs.as_ref().is_some_and(|r| {
                r.ids == self.ids
                    && (own.as_ref().is_ok_and(|o| live.contains(o))
                        || r.requested.iter().any(|d| live.contains(d)))
            });
            match refs {
                Some(r) if wanted => {
                    keep.extend(r.blobs);
                    layers.extend(r.layers.iter().map(|l| l.hex().to_owned()));
                }
                _ => {
                    remove_tree(&e.path());
                    removed += 1;
                }
            }
        }
        let mine = self.layers_dir();
        for e in std::fs::read_dir(self.root.join(LAYERS))?.flatten() {
            let path = e.path();
            if path == mine {
                for l in std::fs::read_dir(&path)?.flatten() {
                    if !layers.contains(l.file_name().to_string_lossy().as_ref()) {
                        remove_tree(&l.path());
                    }
                }
            } else {
                // Half-done unpacks, and layers written with another id shift.
                remove_tree(&path);
            }
        }
        std::fs::create_dir_all(self.root.join(LAYERS).join(STAGING))?;
        Ok((removed, keep))
    }

    /// Removes a half-done unpack.
    pub fn discard(&self, manifest: &Digest) {
        remove_tree(&self.dir(manifest));
    }
}

/// Removes a directory tree; an unpacked layer may hold directories without write
/// permission (mode 0555 from the image), which `remove_dir_all` cannot empty.
pub fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    let _ = Command::new("chmod")
        .arg("-R")
        .arg("u+rwx")
        .arg(path)
        .status();
    let _ = std::fs::remove_dir_all(path);
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// How a deployment's root filesystem was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Overlay,
    Copy,
}

/// Gives `bundle/rootfs` the contents of the image made of `layers` (lowest
/// first): an overlay mount when permitted, else a copy of the layers flattened
/// in order.
pub fn prepare(layers: &[PathBuf], bundle: &Path, ids: IdShift) -> io::Result<Layout> {
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
    if layers.is_empty() {
        return Ok(Layout::Copy); // nothing to stack: the empty upper is the image
    }
    if mount_layers(layers, &upper, &work, &target).is_ok() {
        return Ok(Layout::Overlay);
    }
    for layer in layers {
        flatten_layer(layer, &target)?;
    }
    Ok(Layout::Copy)
}

/// The overlay of `layers` (the last one on top) under `upper`, at `target`:
/// through the new mount API, one `lowerdir+` per layer (Linux 6.8+: no limit
/// from the option string's page), else the classic option string.
fn mount_layers(layers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> io::Result<()> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, FsMountFlags,
        FsOpenFlags, MountAttrFlags, MoveMountFlags,
    };
    let new_api = (|| -> rustix::io::Result<()> {
        let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
        for l in layers.iter().rev() {
            fsconfig_set_string(&fs, "lowerdir+", l.as_path())?;
        }
        fsconfig_set_string(&fs, "upperdir", upper)?;
        fsconfig_set_string(&fs, "workdir", work)?;
        fsconfig_create(&fs)?;
        let m = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())?;
        move_mount(
            &m,
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })();
    if new_api.is_ok() {
        return Ok(());
    }
    let lower: Vec<String> = layers
        .iter()
        .rev()
        .map(|l| l.display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount_overlay(target, &opts)
}

/// Copies `layer` over `target` as overlayfs would show it above: its whiteouts
/// (0/0 character devices) remove what they name, its opaque directories hide
/// what was below them.
fn flatten_layer(layer: &Path, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    fn walk(layer: &Path, target: &Path, whiteouts: &mut Vec<PathBuf>) -> io::Result<()> {
        for e in std::fs::read_dir(layer)?.flatten() {
            let (src, dst) = (e.path(), target.join(e.file_name()));
            let meta = std::fs::symlink_metadata(&src)?;
            let ft = meta.file_type();
            if ft.is_char_device() && meta.rdev() == 0 {
                remove_tree_or_file(&dst);
                whiteouts.push(dst);
            } else if ft.is_dir() {
                let opaque =
                    rustix::fs::lgetxattr(&src, "trusted.overlay.opaque", &mut [0u8; 1]).is_ok();
                if opaque || !std::fs::symlink_metadata(&dst).is_ok_and(|m| m.is_dir()) {
                    remove_tree_or_file(&dst);
                }
                walk(&src, &dst, whiteouts)?;
            }
        }
        Ok(())
    }
    let mut whiteouts = Vec::new();
    walk(layer, target, &mut whiteouts)?;
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", layer.display()))
        .arg(target)
        .status()?;
    if !status.success() {
        return Err(io::Error::other(
            "copying a layer into the root filesystem failed",
        ));
    }
    for w in whiteouts {
        let _ = std::fs::remove_file(w);
    }
    Ok(())
}

fn remove_tree_or_file(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => remove_tree(p),
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unpack::{unpack_layer, Budget, Compression, Target, Whiteouts};

    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn unpack_to(dir: &Path, tar: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        let target = Target {
            ids: IdShift::NONE,
            budget: Budget::UNLIMITED,
            image: None,
            whiteouts: Whiteouts::Overlay,
        };
        unpack_layer(tar, Compression::None, dir, target).unwrap();
    }

    /// Two layers in directories of their own, the upper one hiding a file and a
    /// directory's lower contents: stacked as an overlay and flattened as a copy,
    /// the same root filesystem.
    #[test]
    fn layers_stack_the_same_as_overlay_and_as_copy() {
        let dir = tempfile::tempdir().unwrap();
        let (l1, l2) = (dir.path().join("l1"), dir.path().join("l2"));
        unpack_to(
            &l1,
            &layer(&[
                ("a", Some(b"a1")),
                ("b", Some(b"b1")),
                ("d", None),
                ("d/x", Some(b"x1")),
                ("e", None),
                ("e/kept", Some(b"k1")),
            ]),
        );
        unpack_to(
            &l2,
            &layer(&[
                (".wh.b", Some(b"")),
                ("d", None),
                ("d/.wh..wh..opq", Some(b"")),
                ("d/z", Some(b"z2")),
                ("c", Some(b"c2")),
                ("e/new", Some(b"n2")),
            ]),
        );
        // The whiteouts are overlay's own.
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let wh = std::fs::symlink_metadata(l2.join("b")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        let mut y = [0u8; 1];
        assert_eq!(
            rustix::fs::getxattr(l2.join("d"), "trusted.overlay.opaque", &mut y).unwrap(),
            1
        );

        let check = |root: &Path| {
            let read = |p: &str| std::fs::read(root.join(p)).ok();
            assert_eq!(read("a").as_deref(), Some(&b"a1"[..]));
            assert_eq!(read("c").as_deref(), Some(&b"c2"[..]));
            assert_eq!(read("d/z").as_deref(), Some(&b"z2"[..]));
            assert_eq!(read("e/kept").as_deref(), Some(&b"k1"[..]));
            assert_eq!(read("e/new").as_deref(), Some(&b"n2"[..]));
            assert!(!root.join("b").exists(), "b is whited out");
            assert!(!root.join("d/x").exists(), "d is opaque");
        };
        let layers = vec![l1.clone(), l2.clone()];
        let bundle = dir.path().join("bundle");
        assert_eq!(
            prepare(&layers, &bundle, IdShift::NONE).unwrap(),
            Layout::Overlay
        );
        check(&bundle.join("rootfs"));
        remove(&bundle);
        let flat = dir.path().join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        for l in &layers {
            flatten_layer(l, &flat).unwrap();
        }
        check(&flat);
        assert!(
            std::fs::symlink_metadata(flat.join("b")).is_err(),
            "no whiteout device is left in the copy"
        );
    }
}
