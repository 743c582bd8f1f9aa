//! Applying a layer to a root filesystem, refusing anything that would write
//! outside it.
//!
//! `tar::Entry::unpack_in` is not a sandbox (it follows symlinks planted by earlier
//! entries), so entries are walked here, and every change is made relative to a
//! directory descriptor the kernel resolved inside the root (`openat2` with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`; a component-by-component `O_NOFOLLOW`
//! walk on kernels without it): absolute paths and `..` are refused, and so is any
//! path whose directories pass through a symlink (an earlier entry, or layer, could
//! have planted it). The final component is never followed (`O_NOFOLLOW`,
//! `AT_SYMLINK_NOFOLLOW`): an existing symlink there is replaced, not written
//! through. rustix is used rather than cap-std because the unpacker needs
//! `linkat`/`symlinkat`/`fchownat` between two directories of one root, which
//! cap-std's `Dir` does not offer with ownership.
//! **Invariant: no entry of any layer creates, changes or removes anything outside
//! the root.**

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{
    chownat, fchmod, fchown, fstat, linkat, mkdirat, openat, openat2, statat, symlinkat, unlinkat,
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Uid, CWD,
};
use rustix::io::Errno;

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
    /// The layer expands past a cap: a decompression bomb, or an image too large
    /// for this server.
    #[error("the layer expands past the {what} cap of {limit}")]
    OverCap { what: &'static str, limit: u64 },
}

/// How far one layer may expand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Uncompressed bytes (the tar stream).
    pub bytes: u64,
    /// Entries (files, directories, links, whiteouts).
    pub entries: u64,
}

impl Budget {
    pub const UNLIMITED: Budget = Budget {
        bytes: u64::MAX,
        entries: u64::MAX,
    };
}

/// What is left of an image's uncompressed budget, shared by its layers as they
/// unpack in parallel.
#[derive(Debug)]
pub struct ImageBudget {
    left: std::sync::atomic::AtomicU64,
    pub limit: u64,
}

impl ImageBudget {
    pub fn new(limit: u64) -> Self {
        ImageBudget {
            left: limit.into(),
            limit,
        }
    }

    /// Takes `n` bytes; false once the image is over its budget.
    fn take(&self, n: u64) -> bool {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }
}

/// Counts the uncompressed bytes and fails once they pass the budget (the layer's,
/// or the image's left), so that a bomb is stopped while it expands, not after.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
    image: Option<std::sync::Arc<ImageBudget>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(OverBytes("layer", self.limit)));
        }
        if let Some(image) = &self.image {
            if !image.take(n as u64) {
                return Err(io::Error::other(OverBytes("image", image.limit)));
            }
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct OverBytes(&'static str, u64);

impl std::fmt::Display for OverBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "over {} uncompressed bytes", self.1)
    }
}

impl std::error::Error for OverBytes {}

/// An I/O error that is the byte cap speaking, as the cap error.
fn cap_error(e: io::Error) -> UnpackError {
    match e.get_ref().and_then(|i| i.downcast_ref::<OverBytes>()) {
        Some(OverBytes("image", limit)) => UnpackError::OverCap {
            what: "image's uncompressed size",
            limit: *limit,
        },
        Some(OverBytes(_, limit)) => UnpackError::OverCap {
            what: "uncompressed size",
            limit: *limit,
        },
        None => UnpackError::Io(e),
    }
}

/// What a layer's whiteouts become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whiteouts {
    /// Applied: what they hide is removed from the root being written (the layers
    /// of an image applied in order into one directory).
    Apply,
    /// Kept as overlayfs's own, for a layer unpacked into a directory of its own and
    /// stacked as an overlay lower directory: `.wh.NAME` becomes a 0/0 character
    /// device `NAME`, `.wh..wh..opq` the `trusted.overlay.opaque` attribute of its
    /// directory (as containerd's overlay snapshotter does).
    Overlay,
}

#[derive(Debug)]
pub struct Unpacked {
    pub entries: u64,
    /// Uncompressed bytes of the layer's tar stream.
    pub bytes: u64,
}

/// How an image's owners are written to disk: container id `n` becomes host id
/// `base + n`, so that a container running in a user namespace mapped onto
/// `base..base+size` owns its own files; ids at or past `size` become the
/// namespace's `nobody` (65534). `IdShift::NONE` keeps the image's ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdShift {
    pub base: u32,
    pub size: u32,
}

impl IdShift {
    pub const NONE: IdShift = IdShift {
        base: 0,
        size: u32::MAX,
    };

    pub fn host(&self, id: u64) -> u32 {
        let id = if id < u64::from(self.size) {
            id as u32
        } else {
            65534.min(self.size.saturating_sub(1))
        };
        self.base.saturating_add(id)
    }
}

impl Default for IdShift {
    fn default() -> Self {
        IdShift::NONE
    }
}

/// Applies one layer (as it streams) to `root`.
pub fn apply_layer(
    reader: impl Read,
    compression: Compression,
    root: &Path,
) -> Result<Unpacked, UnpackError> {
    apply_layer_shifted(reader, compression, root, IdShift::NONE, Budget::UNLIMITED)
}

/// [`apply_layer`], owners shifted by `ids`, within `budget`.
pub fn apply_layer_shifted(
    reader: impl Read,
    compression: Compression,
    root: &Path,
    ids: IdShift,
    budget: Budget,
) -> Result<Unpacked, UnpackError> {
    unpack_layer(
        reader,
        compression,
        root,
        Target {
            ids,
            budget,
            image: None,
            whiteouts: Whiteouts::Apply,
        },
    )
}

/// How and where a layer is written.
#[derive(Clone, Debug)]
pub struct Target {
    pub ids: IdShift,
    pub budget: Budget,
    /// The image's budget, shared with its other layers.
    pub image: Option<std::sync::Arc<ImageBudget>>,
    pub whiteouts: Whiteouts,
}

/// Unpacks one layer (as it streams) into `root` as `target` says.
pub fn unpack_layer(
    reader: impl Read,
    compression: Compression,
    root: &Path,
    target: Target,
) -> Result<Unpacked, UnpackError> {
    let Target {
        ids,
        budget,
        image,
        whiteouts,
    } = target;
    let decompressed: Box<dyn Read> = match compression {
        Compression::None => Box::new(reader),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader)?),
    };
    // No diff_id is computed: an unpacked layer is addressed by the digest of the
    // blob it came from, which its download verifies in the same pass, so the
    // config's diff_ids address nothing and a second hash over the uncompressed
    // bytes would only cost time (see rootfs.rs).
    let mut capped = Capped {
        inner: decompressed,
        read: 0,
        limit: budget.bytes,
        image,
    };
    let mut root = Root::open(root)?;
    root.ids = ids;
    root.whiteouts = whiteouts;
    let entries = {
        let mut archive = tar::Archive::new(&mut capped);
        apply_entries(archive.entries().map_err(cap_error)?, &root, budget)?
    };
    // To the end of the stream, trailing blocks included: the blob's digest is
    // checked at its end, and a blob that fails it fails the layer.
    io::copy(&mut capped, &mut io::sink()).map_err(cap_error)?;
    Ok(Unpacked {
        entries,
        bytes: capped.read,
    })
}

/// Unpacks an uncompressed layer as its blob arrives in the cache, copying each
/// file's data from the blob with `copy_file_range` (the tar reader seeks over
/// it) instead of reading it through. Its size is the blob's, within the caps the pull checked
/// against the declared size before the download, and `declared` is taken from
/// the image's budget at once.
pub fn unpack_layer_direct(
    reader: crate::cache::FeedReader,
    declared: u64,
    root: &Path,
    target: Target,
) -> Result<Unpacked, UnpackError> {
    let Target {
        ids,
        budget,
        image,
        whiteouts,
    } = target;
    if declared > budget.bytes {
        return Err(UnpackError::OverCap {
            what: "uncompressed size",
            limit: budget.bytes,
        });
    }
    if let Some(image) = &image {
        if !image.take(declared) {
            return Err(UnpackError::OverCap {
                what: "image's uncompressed size",
                limit: image.limit,
            });
        }
    }
    let mut root = Root::open(root)?;
    root.ids = ids;
    root.whiteouts = whiteouts;
    root.direct = Some(reader.copier());
    let mut buffered = io::BufReader::with_capacity(64 << 10, reader);
    let entries = {
        let mut archive = tar::Archive::new(&mut buffered);
        apply_entries(archive.entries_with_seek()?, &root, budget)?
    };
    // To the end of the stream: a blob that fails its digest fails the layer.
    io::copy(&mut buffered, &mut io::sink())?;
    Ok(Unpacked {
        entries,
        bytes: declared,
    })
}

/// Applies every entry of a layer's tar stream within the entry budget; returns
/// how many there were.
fn apply_entries<R: Read>(
    entries: tar::Entries<'_, R>,
    root: &Root,
    budget: Budget,
) -> Result<u64, UnpackError> {
    let mut count = 0;
    for entry in entries {
        let mut entry = entry.map_err(cap_error)?;
        count += 1;
        if count > budget.entries {
            return Err(UnpackError::OverCap {
                what: "entry count",
                limit: budget.entries,
            });
        }
        apply_entry(&mut entry, root).map_err(|e| match e {
            UnpackError::Io(io) => cap_error(io),
            other => other,
        })?;
    }
    Ok(count)
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

/// An `O_PATH` descriptor of the directory `path`, to resolve paths beneath it
/// with `openat2`.
pub(crate) fn open_dir_path(path: &Path) -> io::Result<OwnedFd> {
    openat(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

/// A root filesystem being written, held as a directory file descriptor: every
/// operation is relative to a directory opened inside it, never to a path string.
struct Root {
    fd: OwnedFd,
    ids: IdShift,
    whiteouts: Whiteouts,
    /// An uncompressed layer's blob: file data is copied from it in the kernel.
    direct: Option<crate::cache::FeedCopier>,
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

impl Root {
    fn open(path: &Path) -> io::Result<Self> {
        Ok(Root {
            fd: open_dir_path(path)?,
            ids: IdShift::NONE,
            whiteouts: Whiteouts::Apply,
            direct: None,
        })
    }

    /// Opens the directory `comps` under the root. The kernel resolves it
    /// (`openat2`, `RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS`): it cannot leave the
    /// root, and a symlink anywhere on the way is refused, not followed. With
    /// `create`, missing directories are made one level at a time, each opened with
    /// `O_NOFOLLOW` from its parent's descriptor.
    fn dir(
        &self,
        comps: &[std::ffi::OsString],
        create: Create,
        original: &Path,
    ) -> Result<OwnedFd, UnpackError> {
        let rel: PathBuf = comps.iter().collect();
        let how = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let resolve =
            ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        if comps.is_empty() {
            return rustix::io::dup(&self.fd).map_err(|e| errno(e).into());
        }
        match openat2(&self.fd, &rel, how, Mode::empty(), resolve) {
            Ok(fd) => return Ok(fd),
            Err(Errno::LOOP) => return Err(refused(original, "a parent directory is a symlink")),
            Err(Errno::NOTDIR) => return Err(refused(original, "a parent is not a directory")),
            // Missing (create below), or a kernel without openat2 (walk below).
            Err(Errno::NOENT) | Err(Errno::NOSYS) => {}
            Err(e) => return Err(errno(e).into()),
        }
        let mut cur = rustix::io::dup(&self.fd).map_err(errno)?;
        for c in comps {
            let next = match openat(&cur, c.as_os_str(), how | OFlags::NOFOLLOW, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create == Create::Missing => {
                    mkdirat(&cur, c.as_os_str(), Mode::from_raw_mode(0o755)).map_err(errno)?;
                    // A parent the layer did not list belongs to the container's root.
                    let root_id = self.ids.host(0);
                    chownat(
                        &cur,
                        c.as_os_str(),
                        Some(Uid::from_raw(root_id)),
                        Some(Gid::from_raw(root_id)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(errno)?;
                    openat(&cur, c.as_os_str(), how | OFlags::NOFOLLOW, Mode::empty())
                        .map_err(errno)?
                }
                Err(Errno::NOENT) => return Err(refused(original, "hard link to a missing file")),
                Err(Errno::LOOP) => {
                    return Err(refused(original, "a parent directory is a symlink"))
                }
                Err(Errno::NOTDIR) => return Err(refused(original, "a parent is not a directory")),
                Err(e) => return Err(errno(e).into()),
            };
            // O_PATH|O_NOFOLLOW opens a symlink itself rather than failing: check.
            if FileType::from_raw_mode(fstat(&next).map_err(errno)?.st_mode) != FileType::Directory
            {
                return Err(refused(original, "a parent directory is a symlink"));
            }
            cur = next;
        }
        Ok(cur)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Create {
    Missing,
    Nothing,
}

/// What is at `name` in `dir`, without following a symlink.
fn kind_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Option<FileType>> {
    match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(errno(e)),
    }
}

/// Removes whatever is at `name` in `dir` (a directory with all it holds), without
/// following a symlink.
fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match kind_at(dir, name)? {
        None => Ok(()),
        Some(FileType::Directory) => {
            let sub = openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)?;
            clear(&sub)?;
            unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(errno)
        }
        Some(_) => unlinkat(dir, name, AtFlags::empty()).map_err(errno),
    }
}

/// Removes everything in the directory `dir` (an opaque whiteout).
fn clear(dir: &OwnedFd) -> io::Result<()> {
    let listing = openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let mut names = Vec::new();
    for e in Dir::read_from(&listing).map_err(errno)? {
        let e = e.map_err(errno)?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    for n in names {
        remove_at(dir, &n)?;
    }
    Ok(())
}

/// A directory to work in: `O_PATH` descriptors cannot list or change modes.
fn real_dir(dir: &OwnedFd) -> io::Result<OwnedFd> {
    openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)
}

fn apply_entry<R: Read>(entry: &mut tar::Entry<'_, R>, root: &Root) -> Result<(), UnpackError> {
    let path = entry.path()?.into_owned();
    let comps = clean(&path)?;
    let Some(name) = comps.last().cloned() else {
        return Ok(()); // the root itself ("./")
    };
    let parent = real_dir(&root.dir(&comps[..comps.len() - 1], Create::Missing, &path)?)?;
    if apply_whiteout(&parent, &name, &path, root)? {
        return Ok(());
    }
    let header = entry.header();
    let mode = Mode::from_raw_mode(header.mode().unwrap_or(0o644) & 0o1777); // no setuid/setgid from images
    let owner = (
        Some(Uid::from_raw(root.ids.host(header.uid().unwrap_or(0)))),
        Some(Gid::from_raw(root.ids.host(header.gid().unwrap_or(0)))),
    );
    match header.entry_type() {
        tar::EntryType::Directory => make_dir(&parent, &name, mode, owner),
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            write_file(entry, &parent, &name, mode, owner, root)
        }
        tar::EntryType::Symlink => {
            let link = entry
                .link_name()?
                .ok_or_else(|| refused(&path, "symlink without a target"))?
                .into_owned();
            remove_at(&parent, &name)?;
            // The target is only text here; it is resolved inside the container's root
            // at run time, and our own writes never pass through a symlink.
            symlinkat(link.as_os_str(), &parent, &name).map_err(errno)?;
            chownat(&parent, &name, owner.0, owner.1, AtFlags::SYMLINK_NOFOLLOW).map_err(errno)?;
            Ok(())
        }
        tar::EntryType::Link => {
            let link = entry
                .link_name()?
                .ok_or_else(|| refused(&path, "hard link without a target"))?
                .into_owned();
            hard_link(&parent, &name, &link, &path, root)
        }
        // Devices and FIFOs are not created: containers get their /dev from the runtime.
        _ => Ok(()),
    }
}

type Owner = (Option<Uid>, Option<Gid>);

/// Applies `name` if it is a whiteout (OCI image spec, "Whiteouts"): an opaque
/// directory, or a removed entry (kept as overlay's own where layers are stacked
/// by overlay). False when it is no whiteout.
fn apply_whiteout(
    parent: &OwnedFd,
    name: &OsStr,
    path: &Path,
    root: &Root,
) -> Result<bool, UnpackError> {
    let name_str = name.to_string_lossy();
    if name_str == ".wh..wh..opq" {
        match root.whiteouts {
            Whiteouts::Apply => clear(parent)?,
            Whiteouts::Overlay => {
                rustix::fs::fsetxattr(
                    parent,
                    "trusted.overlay.opaque",
                    b"y",
                    rustix::fs::XattrFlags::empty(),
                )
                .map_err(errno)?;
            }
        }
        return Ok(true);
    }
    let Some(hidden) = name_str.strip_prefix(".wh.") else {
        return Ok(false);
    };
    if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
        return Err(refused(path, "malformed whiteout"));
    }
    remove_at(parent, OsStr::new(hidden))?;
    if root.whiteouts == Whiteouts::Overlay {
        rustix::fs::mknodat(parent, hidden, FileType::CharacterDevice, Mode::empty(), 0)
            .map_err(errno)?;
        let r = root.ids.host(0);
        chownat(
            parent,
            hidden,
            Some(Uid::from_raw(r)),
            Some(Gid::from_raw(r)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
    }
    Ok(true)
}

/// A directory entry: made (replacing a non-directory), or kept, with the image's
/// mode and owner.
fn make_dir(parent: &OwnedFd, name: &OsStr, mode: Mode, owner: Owner) -> Result<(), UnpackError> {
    match kind_at(parent, name)? {
        Some(FileType::Directory) => {}
        Some(_) => {
            unlinkat(parent, name, AtFlags::empty()).map_err(errno)?;
            mkdirat(parent, name, mode).map_err(errno)?;
        }
        None => mkdirat(parent, name, mode).map_err(errno)?,
    }
    let d = openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    fchmod(&d, mode).map_err(errno)?;
    fchown(&d, owner.0, owner.1).map_err(errno)?;
    Ok(())
}

/// A regular file: created afresh (never through a symlink), its bytes copied.
fn write_file<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    parent: &OwnedFd,
    name: &OsStr,
    mode: Mode,
    owner: Owner,
    root: &Root,
) -> Result<(), UnpackError> {
    remove_at(parent, name)?;
    let fd = openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        mode,
    )
    .map_err(errno)?;
    // The umask applied at creation: set the image's mode and owner exactly.
    fchmod(&fd, mode).map_err(errno)?;
    fchown(&fd, owner.0, owner.1).map_err(errno)?;
    let file = fs::File::from(fd);
    if let Some(direct) = &root.direct {
        direct.copy_to(entry.raw_file_position(), entry.size(), &file)?;
    } else {
        // io::copy fills a BufWriter's own buffer directly: 1 MiB writes,
        // not 8 KiB ones (a 200 MB file is 200 syscalls instead of 25,000).
        let mut w =
            io::BufWriter::with_capacity((entry.size() as usize).clamp(8 << 10, 1 << 20), file);
        io::copy(entry, &mut w)?;
        w.flush()?;
    }
    Ok(())
}

/// A hard link to a file already unpacked in this root, reached without passing
/// through a symlink; never to a directory or out of the root.
fn hard_link(
    parent: &OwnedFd,
    name: &OsStr,
    link: &Path,
    path: &Path,
    root: &Root,
) -> Result<(), UnpackError> {
    let link_comps = clean(link)?;
    let Some(source) = link_comps.last() else {
        return Err(refused(path, "hard link to the root"));
    };
    let source_dir = root
        .dir(&link_comps[..link_comps.len() - 1], Create::Nothing, path)
        .map_err(|e| match e {
            UnpackError::Refused { reason, .. } if reason != "hard link to a missing file" => {
                refused(path, "hard link through a symlink or non-directory")
            }
            other => other,
        })?;
    match kind_at(&source_dir, source)? {
        None => return Err(refused(path, "hard link to a missing file")),
        Some(FileType::Directory) => return Err(refused(path, "hard link to a directory")),
        Some(_) => {}
    }
    remove_at(parent, name)?;
    linkat(&source_dir, source, parent, name, AtFlags::empty()).map_err(errno)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_types::Digest;
    use sha2::Sha256;

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

    /// Unpacks `layer` as a pull does an uncompressed one: its blob written into
    /// the cache in small chunks by another thread while the unpacker follows it
    /// and copies file data with `copy_file_range`.
    fn apply_direct(layer: &[u8], root: &Path) -> Result<Unpacked, UnpackError> {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let cache = crate::cache::BlobCache::open(dir.path()).unwrap();
        let digest = Digest::sha256_from_bytes(&Sha256::digest(layer).into());
        let feed = std::sync::Arc::new(crate::cache::Feed::default());
        let mut w = cache.writer_feeding(&digest, feed.clone()).unwrap();
        let data = layer.to_vec();
        let writer = std::thread::spawn(move || {
            for c in data.chunks(700) {
                w.write_chunk(c).unwrap();
            }
            w.commit().map(drop)
        });
        let target = Target {
            ids: IdShift::NONE,
            budget: Budget::UNLIMITED,
            image: None,
            whiteouts: Whiteouts::Apply,
        };
        let r = unpack_layer_direct(feed.reader().unwrap(), layer.len() as u64, root, target);
        drop(feed);
        let _ = writer.join();
        r
    }

    impl Fixture {
        /// Applies the layer both ways (streamed, and direct into a second root):
        /// the same result, or the same refusal.
        fn apply(&self, entries: &[E<'_>]) -> Result<Unpacked, UnpackError> {
            let layer = tar(entries);
            let streamed = apply_layer(&layer[..], Compression::None, &self.root);
            let second = self.root.with_file_name("rootfs-direct");
            fs::create_dir_all(&second).unwrap();
            let direct = apply_direct(&layer, &second);
            match (&streamed, &direct) {
                (Ok(a), Ok(b)) => assert_eq!(a.entries, b.entries),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                other => panic!("streamed and direct differ: {other:?}"),
            }
            streamed
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
    fn file_data_copied_in_the_kernel_is_the_same() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let layer = tar(&[
            E::Dir("etc/"),
            E::File("etc/empty", b""),
            E::File("etc/one", b"1"),
            E::File("etc/block", &[9u8; 512]),
            E::File("big", &big),
            E::Hard("big-too", "big"),
            E::Sym("link", "big"),
        ]);
        let f = fixture();
        let u = apply_direct(&layer, &f.root).unwrap();
        assert_eq!(u.entries, 7);
        assert_eq!(fs::read(f.root.join("etc/empty")).unwrap(), b"");
        assert_eq!(fs::read(f.root.join("etc/one")).unwrap(), b"1");
        assert_eq!(fs::read(f.root.join("etc/block")).unwrap(), [9u8; 512]);
        assert_eq!(fs::read(f.root.join("big")).unwrap(), big);
        assert_eq!(fs::read(f.root.join("big-too")).unwrap(), big);
        assert_eq!(fs::read(f.root.join("link")).unwrap(), big);
        // A blob cut inside a file's data (the writer fails its digest): an error,
        // never a short file taken for whole.
        let cut = &layer[..layer.len() / 2];
        let g = fixture();
        let dir = tempfile::tempdir().unwrap();
        let cache = crate::cache::BlobCache::open(dir.path()).unwrap();
        use sha2::Digest as _;
        let digest = Digest::sha256_from_bytes(&Sha256::digest(&layer).into());
        let feed = std::sync::Arc::new(crate::cache::Feed::default());
        let mut w = cache.writer_feeding(&digest, feed.clone()).unwrap();
        w.write_chunk(cut).unwrap();
        let writer = std::thread::spawn(move || w.commit().map(drop));
        let target = Target {
            ids: IdShift::NONE,
            budget: Budget::UNLIMITED,
            image: None,
            whiteouts: Whiteouts::Apply,
        };
        assert!(
            unpack_layer_direct(feed.reader().unwrap(), layer.len() as u64, &g.root, target)
                .is_err()
        );
        assert!(writer.join().unwrap().is_err());
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
        for (bytes, c) in [
            (&layer, Compression::None),
            (&gz, Compression::Gzip),
            (&zst, Compression::Zstd),
        ] {
            let f = fixture();
            let u = apply_layer(&bytes[..], c, &f.root).unwrap();
            assert_eq!(u.bytes, layer.len() as u64, "{c:?}");
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
