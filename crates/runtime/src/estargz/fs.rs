//! A lazily mounted layer as a read-only FUSE filesystem (the `fuser` crate, no
//! libfuse): the TOC's entries as inodes, owners shifted into the containers'
//! user range as unpacked layers' are, whiteouts in overlayfs' own format (a
//! `.wh.NAME` entry is a character device 0:0 named NAME, `.wh..wh..opq` makes
//! its directory opaque through `trusted.overlay.opaque`), so that the mount is
//! an overlay lower directory like any unpacked layer. Metadata is answered from
//! memory on the session's thread; a read runs as a task on the tokio runtime,
//! its chunks fetched and verified there, and answers EIO (the reader's watcher
//! told why) when a chunk cannot be had or does not match its digest.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use super::reader::Reader;
use super::{Entry, Kind};
use crate::unpack::IdShift;

/// The layer never changes: the kernel may keep what it was told.
const TTL: Duration = Duration::from_secs(3600);
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const ROOT: u64 = 1;

/// What an inode is: a TOC entry (by its index) or a whiteout.
enum Node {
    Dir {
        entry: Option<usize>,
        children: BTreeMap<OsString, u64>,
        opaque: bool,
    },
    Leaf {
        entry: usize,
    },
    Whiteout,
}

pub struct LayerFs {
    reader: Arc<Reader>,
    nodes: Vec<Node>,
    nlink: Vec<u32>,
    ids: IdShift,
    runtime: tokio::runtime::Handle,
}

impl LayerFs {
    /// The filesystem of `reader`'s layer; reads run on `runtime`.
    pub fn new(reader: Arc<Reader>, ids: IdShift, runtime: tokio::runtime::Handle) -> LayerFs {
        let mut fs = LayerFs {
            reader,
            nodes: vec![Node::Whiteout],
            nlink: vec![0],
            ids,
            runtime,
        };
        fs.build();
        fs
    }

    fn build(&mut self) {
        self.push(Node::Dir {
            entry: None,
            children: BTreeMap::new(),
            opaque: false,
        });
        let mut by_path: HashMap<String, u64> = HashMap::from([(String::new(), ROOT)]);
        let index = self.reader.layer().index();
        let entries: Vec<(usize, Entry)> = index.entries().iter().cloned().enumerate().collect();
        for (i, e) in entries {
            if e.path.is_empty() {
                if let Node::Dir { entry, .. } = &mut self.nodes[ROOT as usize] {
                    *entry = Some(i);
                }
                continue;
            }
            let (parent_path, name) = e.path.rsplit_once('/').unwrap_or(("", &e.path));
            // The index adds a TOC's implicit directories before their children.
            let Some(&parent) = by_path.get(parent_path) else {
                continue;
            };
            if name == OPAQUE_MARKER {
                if let Node::Dir { opaque, .. } = &mut self.nodes[parent as usize] {
                    *opaque = true;
                }
                continue;
            }
            let (name, ino) = if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                (hidden.to_owned(), self.push(Node::Whiteout))
            } else {
                let ino = match &e.kind {
                    Kind::Hardlink { target } => match by_path.get(target.as_str()) {
                        Some(&ino) => ino,
                        None => continue,
                    },
                    Kind::Dir => self.push(Node::Dir {
                        entry: Some(i),
                        children: BTreeMap::new(),
                        opaque: false,
                    }),
                    _ => self.push(Node::Leaf { entry: i }),
                };
                by_path.insert(e.path.clone(), ino);
                (name.to_owned(), ino)
            };
            self.nlink[ino as usize] += 1;
            if let Node::Dir { children, .. } = &mut self.nodes[parent as usize] {
                children.insert(OsString::from(name), ino);
            }
        }
    }

    fn push(&mut self, node: Node) -> u64 {
        self.nodes.push(node);
        self.nlink.push(0);
        (self.nodes.len() - 1) as u64
    }

    fn node(&self, ino: INodeNo) -> Option<&Node> {
        let i = ino.0 as usize;
        (i != 0).then(|| self.nodes.get(i)).flatten()
    }

    fn entry(&self, i: usize) -> &Entry {
        &self.reader.layer().index().entries()[i]
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, uid, gid, rdev, mtime) = match &self.nodes[ino as usize] {
            Node::Whiteout => (FileType::CharDevice, 0, 0, 0, 0, 0, SystemTime::UNIX_EPOCH),
            Node::Dir { entry: None, .. } => (
                FileType::Directory,
                0o755,
                4096,
                0,
                0,
                0,
                SystemTime::UNIX_EPOCH,
            ),
            Node::Dir { entry: Some(i), .. } | Node::Leaf { entry: i } => {
                let e = self.entry(*i);
                let (kind, size, rdev) = match &e.kind {
                    Kind::Dir => (FileType::Directory, 4096, 0),
                    Kind::File | Kind::Hardlink { .. } => (FileType::RegularFile, e.size, 0),
                    Kind::Symlink { target } => (FileType::Symlink, target.len() as u64, 0),
                    Kind::Char { major, minor } => (
                        FileType::CharDevice,
                        0,
                        libc::makedev(*major, *minor) as u32,
                    ),
                    Kind::Block { major, minor } => (
                        FileType::BlockDevice,
                        0,
                        libc::makedev(*major, *minor) as u32,
                    ),
                    Kind::Fifo => (FileType::NamedPipe, 0, 0),
                };
                (kind, e.mode, size, e.uid, e.gid, rdev, modtime(&e.modtime))
            }
        };
        let nlink = match kind {
            FileType::Directory => 2,
            _ => self.nlink[ino as usize].max(1),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm: (perm & 0o7777) as u16,
            nlink,
            uid: self.ids.host(u64::from(uid)),
            gid: self.ids.host(u64::from(gid)),
            rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    fn kind(&self, ino: u64) -> FileType {
        self.attr(ino).kind
    }
}

fn modtime(rfc3339: &str) -> SystemTime {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.timestamp()).ok())
        .map_or(SystemTime::UNIX_EPOCH, |s| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(s)
        })
}

impl Filesystem for LayerFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.node(parent) {
            Some(Node::Dir { children, .. }) => match children.get(name) {
                Some(&ino) => reply.entry(&TTL, &self.attr(ino), Generation(0)),
                None => reply.error(Errno::ENOENT),
            },
            Some(_) => reply.error(Errno::ENOTDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.node(ino) {
            Some(_) => reply.attr(&TTL, &self.attr(ino.0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Some(Node::Leaf { entry }) => match &self.entry(*entry).kind {
                Kind::Symlink { target } => reply.data(target.as_bytes()),
                _ => reply.error(Errno::EINVAL),
            },
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.node(ino) {
            Some(Node::Leaf { .. }) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Some(Node::Dir { .. }) => reply.error(Errno::EISDIR),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(Node::Leaf { entry }) = self.node(ino) else {
            return reply.error(Errno::EINVAL);
        };
        let (reader, entry) = (self.reader.clone(), *entry);
        self.runtime.spawn(async move {
            let e = &reader.layer().index().entries()[entry];
            match reader.read(e, offset, u64::from(size)).await {
                Ok(bytes) => reply.data(&bytes),
                Err(err) => {
                    reader.watch().failed(&err);
                    reply.error(Errno::EIO)
                }
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(Node::Dir { children, .. }) = self.node(ino) else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            (ino.0, FileType::Directory, OsStr::new("..")),
        ];
        let all = dots.into_iter().chain(
            children
                .iter()
                .map(|(name, &child)| (child, self.kind(child), name.as_os_str())),
        );
        for (i, (child, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let files = self.nodes.len() as u64;
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.node(ino) {
            Some(Node::Dir { opaque: true, .. }) if name == OPAQUE_XATTR => {
                xattr_reply(reply, b"y", size)
            }
            Some(_) => reply.error(Errno::ENODATA),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.node(ino) {
            Some(Node::Dir { opaque: true, .. }) => {
                xattr_reply(reply, format!("{OPAQUE_XATTR}\0").as_bytes(), size)
            }
            Some(_) => xattr_reply(reply, b"", size),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// An xattr answer: its size when asked for the size, else the value if it fits.
fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
