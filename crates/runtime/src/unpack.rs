//! Applying a layer to a root filesystem, refusing anything that would write
//! outside it.
//!
//! `tar::Entry::unpack_in` is not a sandbox (it follows symlinks planted by earlier
//! entries), so entries are walked here and every path is resolved component by
//! component under the root: absolute paths and `..` are refused, and so is any
//! path whose directories pass through a symlink (an earlier entry, or layer, could
//! have planted it). The final component is never followed: an existing symlink there
//! is replaced, not written through. The unpacker is the only writer of a fresh
//! rootfs, so checking with `lstat` before acting has no racing writer.
//! **Invariant: no entry of any layer creates, changes or removes anything outside
//! the root.**

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use berth_types::Digest;
use sha2::{Digest as _, Sha256};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From a layer media type (OCI or Docker).
    pub fn from_media_type(mt: &str) -> Result<Self, UnpackError> {
        if mt.ends_with("+gzip")
            || mt.ends_with(".gzip")
            || mt == "application/vnd.docker.image.rootfs.diff.tar.gzip"
        {
            Ok(Compression::Gzip)
        } else if mt.ends_with("+zstd") {
            Ok(Compression::Zstd)
        } else if mt.ends_with(".tar") || mt == "application/vnd.docker.image.rootfs.diff.tar" {
            Ok(Compression::None)
        } else {
            Err(UnpackError::MediaType(mt.into()))
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer I/O: {0}")]
    Io(#[from] io::Error),
    #[error("unsupported layer media type {0:?}")]
    MediaType(String),
    #[error("refused layer entry {path:?}: {reason}")]
    Refused { path: String, reason: &'static str },
}

#[derive(Debug)]
pub struct Unpacked {
    /// The digest of the uncompressed tar stream, to check against the config's
    /// `diff_ids`. `None` for an uncompressed layer: its diff_id is the blob's own
    /// digest, which the cache already verified (hashing it twice would be waste).
    pub diff_id: Option<Digest>,
    pub entries: u64,
}

struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Applies one layer (as it streams) to `root`.
pub fn apply_layer(
    reader: impl Read,
    compression: Compression,
    root: &Path,
) -> Result<Unpacked, UnpackError> {
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    };
    let mut hashing = HashingReader {
        inner: decompressed,
        hasher: (compression != Compression::None).then(Sha256::new),
    };
    let mut entries = 0;
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries()? {
            let mut entry = entry?;
            apply_entry(&mut entry, root)?;
            entries += 1;
        }
    }
    // The diff_id covers the whole stream, trailing blocks included.
    io::copy(&mut hashing, &mut io::sink())?;
    Ok(Unpacked {
        diff_id: hashing
            .hasher
            .map(|h| Digest::sha256_from_bytes(&h.finalize().into())),
        entries,
    })
}

fn refused(path: &Path, reason: &'static str) -> UnpackError {
    UnpackError::Refused {
        path: path.display().to_string(),
        reason,
    }
}

/// The entry's path as normal components, or refused.
fn clean(path: &Path) -> Result<Vec<std::ffi::OsString>, UnpackError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n.to_owned()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(refused(path, "absolute path"))
            }
            Component::ParentDir => return Err(refused(path, "'..' in path")),
        }
    }
    Ok(out)
}

/// Resolves the directories of `comps` (all but the last) under `root`, creating
/// missing ones, refusing symlinks and non-directories on the way.
fn resolve_parent(
    root: &Path,
    comps: &[std::ffi::OsString],
    original: &Path,
) -> Result<PathBuf, UnpackError> {
    let mut dir = root.to_path_buf();
    for c in &comps[..comps.len().saturating_sub(1)] {
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(refused(original, "a parent directory is a symlink"))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(refused(original, "a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&dir)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(dir)
}

/// Removes whatever is at `path` (without following a symlink there).
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn apply_entry<R: Read>(entry: &mut tar::Entry<'_, R>, root: &Path) -> Result<(), UnpackError> {
    let path = entry.path()?.into_owned();
    let comps = clean(&path)?;
    let Some(name) = comps.last().cloned() else {
        return Ok(()); // the root itself ("./")
    };
    let parent = resolve_parent(root, &comps, &path)?;
    let name_str = name.to_string_lossy();

    // Whiteouts (OCI image spec, "Whiteouts").
    if name_str == ".wh..wh..opq" {
        for child in fs::read_dir(&parent)? {
            remove_existing(&child?.path())?;
        }
        return Ok(());
    }
    if let Some(hidden) = name_str.strip_prefix(".wh.") {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
            return Err(refused(&path, "malformed whiteout"));
        }
        remove_existing(&parent.join(hidden))?;
        return Ok(());
    }

    let target = parent.join(&name);
    let header = entry.header();
    let mode = header.mode().unwrap_or(0o644) & 0o1777; // no setuid/setgid from images
    let (uid, gid) = (
        header.uid().unwrap_or(0) as u32,
        header.gid().unwrap_or(0) as u32,
    );
    let kind = header.entry_type();
    match kind {
        tar::EntryType::Directory => {
            match fs::symlink_metadata(&target) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&target)?;
                    fs::create_dir(&target)?;
                }
                Err(_) => fs::create_dir(&target)?,
            }
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove_existing(&target)?;
            let f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(mode)
                .open(&target)?;
            // io::copy fills a BufWriter's own buffer directly: 1 MiB writes, not
            // 8 KiB ones (a 200 MB file is 200 syscalls instead of 25,000).
            let mut w =
                io::BufWriter::with_capacity((entry.size() as usize).clamp(8 << 10, 1 << 20), f);
            io::copy(entry, &mut w)?;
            w.flush()?;
            fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name()?
                .ok_or_else(|| refused(&path, "symlink without a target"))?
                .into_owned();
            remove_existing(&target)?;
            // The target is only text here; it is resolved inside the container's root
            // at run time, and our own writes never pass through a symlink.
            std::os::unix::fs::symlink(&link, &target)?;
        }
        tar::EntryType::Link => {
            let link = entry
                .link_name()?
                .ok_or_else(|| refused(&path, "hard link without a target"))?
                .into_owned();
            let link_comps = clean(&link)?;
            if link_comps.is_empty() {
                return Err(refused(&path, "hard link to the root"));
            }
            let link_parent = resolve_existing_parent(root, &link_comps, &path)?;
            let source = link_parent.join(link_comps.last().expect("non-empty"));
            let meta = fs::symlink_metadata(&source)
                .map_err(|_| refused(&path, "hard link to a missing file"))?;
            if meta.is_dir() {
                return Err(refused(&path, "hard link to a directory"));
            }
            remove_existing(&target)?;
            fs::hard_link(&source, &target)?;
            return Ok(());
        }
        // Devices and FIFOs are not created: containers get their /dev from the runtime.
        _ => return Ok(()),
    }
    std::os::unix::fs::lchown(&target, Some(uid), Some(gid))?;
    Ok(())
}

/// Like [`resolve_parent`], but nothing is created: a hard link's source must exist.
fn resolve_existing_parent(
    root: &Path,
    comps: &[std::ffi::OsString],
    original: &Path,
) -> Result<PathBuf, UnpackError> {
    let mut dir = root.to_path_buf();
    for c in &comps[..comps.len() - 1] {
        dir.push(c);
        let m = fs::symlink_metadata(&dir)
            .map_err(|_| refused(original, "hard link to a missing file"))?;
        if m.file_type().is_symlink() || !m.is_dir() {
            return Err(refused(
                original,
                "hard link through a symlink or non-directory",
            ));
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Sym(&'a str, &'a str),
        Hard(&'a str, &'a str),
    }

    /// A tar written header by header, so that names the `tar` builder would refuse
    /// (absolute, `..`) can be written.
    fn tar(entries: &[E<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_old();
            let (name, link, kind, data): (&str, &str, tar::EntryType, &[u8]) = match e {
                E::File(n, d) => (n, "", tar::EntryType::Regular, d),
                E::Dir(n) => (n, "", tar::EntryType::Directory, b""),
                E::Sym(n, t) => (n, t, tar::EntryType::Symlink, b""),
                E::Hard(n, t) => (n, t, tar::EntryType::Link, b""),
            };
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind == tar::EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_uid(0);
            h.set_gid(0);
            h.set_cksum();
            b.append(&h, data).unwrap();
        }
        b.into_inner().unwrap()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        let outside = dir.path().join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret"), b"untouched").unwrap();
        Fixture {
            _dir: dir,
            root,
            outside,
        }
    }

    impl Fixture {
        fn apply(&self, entries: &[E<'_>]) -> Result<Unpacked, UnpackError> {
            apply_layer(&tar(entries)[..], Compression::None, &self.root)
        }

        /// Nothing outside the root was created, changed or removed.
        fn outside_untouched(&self) {
            let names: Vec<_> = fs::read_dir(&self.outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
            assert_eq!(fs::read(self.outside.join("secret")).unwrap(), b"untouched");
        }
    }

    fn check_refused(entries: &[E<'_>], reason: &str) {
        let f = fixture();
        let outside = f.outside.to_str().unwrap().to_owned();
        let _ = outside;
        match f.apply(entries) {
            Err(UnpackError::Refused { reason: r, .. }) => assert_eq!(r, reason),
            other => panic!("expected refusal ({reason}), got {other:?}"),
        }
        f.outside_untouched();
    }

    #[test]
    fn a_normal_layer() {
        let f = fixture();
        let layer = tar(&[
            E::Dir("./"),
            E::Dir("etc/"),
            E::File("etc/hostname", b"berth"),
            E::Sym("etc/alias", "hostname"),
            E::Hard("etc/copy", "etc/hostname"),
            E::File("./usr/bin/tool", b"#!"),
        ]);
        let u = apply_layer(&layer[..], Compression::None, &f.root).unwrap();
        assert_eq!(u.entries, 6);
        assert_eq!(
            u.diff_id, None,
            "an uncompressed layer's diff_id is its digest"
        );
        assert_eq!(fs::read(f.root.join("etc/alias")).unwrap(), b"berth");
        assert_eq!(fs::read(f.root.join("etc/copy")).unwrap(), b"berth");
        assert_eq!(fs::read(f.root.join("usr/bin/tool")).unwrap(), b"#!");
    }

    #[test]
    fn hostile_entries_are_refused() {
        check_refused(&[E::File("/etc/evil", b"x")], "absolute path");
        check_refused(&[E::File("../outside/evil", b"x")], "'..' in path");
        check_refused(&[E::File("a/../../outside/evil", b"x")], "'..' in path");
        // A write through a symlink planted by an earlier entry.
        let f = fixture();
        let out = f.outside.to_str().unwrap().to_owned();
        match f.apply(&[E::Sym("link", &out), E::File("link/evil", b"x")]) {
            Err(UnpackError::Refused { reason, .. }) => {
                assert_eq!(reason, "a parent directory is a symlink")
            }
            other => panic!("{other:?}"),
        }
        f.outside_untouched();
        // Relative symlinks out of the root, then a write through them.
        check_refused(
            &[
                E::Sym("up", "../../outside"),
                E::File("up/secret", b"pwned"),
            ],
            "a parent directory is a symlink",
        );
        // Hard links out of the root, or through a symlink.
        check_refused(&[E::Hard("h", "../outside/secret")], "'..' in path");
        check_refused(&[E::Hard("h", "/etc/passwd")], "absolute path");
        let f = fixture();
        let out = f.outside.to_str().unwrap().to_owned();
        assert!(matches!(
            f.apply(&[E::Sym("d", &out), E::Hard("h", "d/secret")]),
            Err(UnpackError::Refused { .. })
        ));
        f.outside_untouched();
        check_refused(&[E::File(".wh..", b"")], "malformed whiteout");
    }

    #[test]
    fn a_symlink_as_final_component_is_replaced_not_followed() {
        let f = fixture();
        let target = f.outside.join("secret");
        f.apply(&[
            E::Sym("file", target.to_str().unwrap()),
            E::File("file", b"inside"),
        ])
        .unwrap();
        assert_eq!(fs::read(f.root.join("file")).unwrap(), b"inside");
        assert!(!fs::symlink_metadata(f.root.join("file"))
            .unwrap()
            .file_type()
            .is_symlink());
        f.outside_untouched();
    }

    #[test]
    fn a_symlink_planted_by_an_earlier_layer_is_not_followed() {
        let f = fixture();
        let out = f.outside.to_str().unwrap().to_owned();
        f.apply(&[E::Sym("etc", &out)]).unwrap();
        assert!(matches!(
            f.apply(&[E::File("etc/secret", b"pwned")]),
            Err(UnpackError::Refused { .. })
        ));
        f.outside_untouched();
    }

    #[test]
    fn whiteouts() {
        let f = fixture();
        f.apply(&[
            E::File("a/x", b"1"),
            E::File("a/y", b"2"),
            E::File("b", b"3"),
            E::File("c/keep", b"4"),
        ])
        .unwrap();
        f.apply(&[
            E::File(".wh.b", b""),
            E::File("a/.wh..wh..opq", b""),
            E::File("a/z", b"5"),
        ])
        .unwrap();
        assert!(!f.root.join("b").exists());
        let mut a: Vec<_> = fs::read_dir(f.root.join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        a.sort();
        assert_eq!(a, vec![std::ffi::OsString::from("z")]);
        assert!(f.root.join("c/keep").exists());
    }

    #[test]
    fn compressions() {
        use std::io::Write;
        let layer = tar(&[E::File("f", b"data")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&layer).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::stream::encode_all(&layer[..], 1).unwrap();
        let want = Digest::sha256_from_bytes(&Sha256::digest(&layer).into());
        for (bytes, c, diff_id) in [
            (&layer, Compression::None, None),
            (&gz, Compression::Gzip, Some(want.clone())),
            (&zst, Compression::Zstd, Some(want.clone())),
        ] {
            let f = fixture();
            let u = apply_layer(&bytes[..], c, &f.root).unwrap();
            assert_eq!(u.diff_id, diff_id, "{c:?}");
            assert_eq!(fs::read(f.root.join("f")).unwrap(), b"data");
        }
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd").unwrap(),
            Compression::Zstd
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip")
                .unwrap(),
            Compression::Gzip
        );
        assert!(Compression::from_media_type("text/plain").is_err());
    }
}
