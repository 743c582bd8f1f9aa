//! The TOC (`stargz.index.json`) parsed into an index of the layer's entries,
//! each file with its chunks: where each starts in the blob, where its gzip
//! member ends (the next payload's offset, or the TOC's), its size and digest.
//! Whatever a hostile TOC could use to escape the layer or exhaust the reader is
//! refused here: paths outside the root, offsets past the payload, chunks that
//! do not tile their file, sizes past the caps.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use berth_types::Digest;
use serde::Deserialize;

use super::error::EstargzError;

/// The most entries a TOC may hold.
pub const MAX_ENTRIES: usize = 1 << 20;
/// The largest chunk (uncompressed) the reader fetches and verifies at once.
pub const MAX_CHUNK: u64 = 32 << 20;
/// The most compressed bytes one chunk's fetch may span (its gzip member, or the
/// part of a shared one up to the chunk's end).
pub const MAX_SPAN: u64 = 2 * MAX_CHUNK;

pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";

#[derive(Deserialize)]
struct RawToc {
    version: i64,
    entries: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEntry {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    modtime: String,
    #[serde(default)]
    link_name: String,
    #[serde(default)]
    mode: i64,
    #[serde(default)]
    uid: u32,
    #[serde(default)]
    gid: u32,
    #[serde(default)]
    dev_major: u32,
    #[serde(default)]
    dev_minor: u32,
    #[serde(default)]
    offset: i64,
    #[serde(default)]
    chunk_offset: i64,
    #[serde(default)]
    chunk_size: i64,
    #[serde(default)]
    chunk_digest: Option<String>,
    #[serde(default)]
    inner_offset: i64,
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink {
        target: String,
    },
    /// A hard link to the file at `target` (a path in this index).
    Hardlink {
        target: String,
    },
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One piece of a file's payload: `size` bytes at `file_offset` in the file,
/// found by gunzipping the blob from `blob_offset` (at most to `blob_end`) and
/// skipping `inner_offset` bytes; their sha256 is `digest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub file_offset: u64,
    pub size: u64,
    pub blob_offset: u64,
    pub blob_end: u64,
    pub inner_offset: u64,
    pub digest: Digest,
}

/// An entry of the layer, by its path relative to the layer's root (no leading
/// `/` or `./`, no trailing `/`; the root itself is `""`).
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    /// Permission bits, setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// RFC 3339, empty when unknown.
    pub modtime: String,
    pub chunks: Vec<Chunk>,
}

/// A layer's entries in TOC order (landmarks left out), with the directories a
/// TOC leaves implicit added before their first child.
#[derive(Debug)]
pub struct Index {
    entries: Vec<Entry>,
    by_path: HashMap<String, usize>,
    prefetch: Vec<usize>,
    prefetch_end: Option<u64>,
}

impl Index {
    /// Parses the TOC JSON of a layer whose TOC member starts at `toc_offset`
    /// (every payload lies before it).
    pub fn parse(json: &[u8], toc_offset: u64) -> Result<Index, EstargzError> {
        let raw: RawToc =
            serde_json::from_slice(json).map_err(|e| EstargzError::Toc(e.to_string()))?;
        if raw.version != 1 {
            return Err(EstargzError::Toc(format!("version {}, not 1", raw.version)));
        }
        if raw.entries.len() > MAX_ENTRIES {
            return Err(EstargzError::TooManyEntries {
                count: raw.entries.len(),
                limit: MAX_ENTRIES,
            });
        }
        let mut ends = BTreeSet::from([toc_offset]);
        for e in &raw.entries {
            if (e.kind == "reg" && e.size > 0) || e.kind == "chunk" {
                let off = u64::try_from(e.offset).unwrap_or(u64::MAX);
                if off >= toc_offset {
                    return Err(hostile(&e.name, "its payload is not before the TOC"));
                }
                ends.insert(off);
            }
        }
        let mut b = Builder {
            index: Index {
                entries: Vec::new(),
                by_path: HashMap::new(),
                prefetch: Vec::new(),
                prefetch_end: None,
            },
            ends,
            open: None,
        };
        for e in &raw.entries {
            b.add(e)?;
        }
        if let Some(i) = b.open {
            let e = &b.index.entries[i];
            return Err(hostile(&e.path, "its chunks end before its size"));
        }
        Ok(b.index)
    }

    /// The entries, in TOC order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The entry at `path` (a leading `/` is allowed).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let p = path.trim_start_matches('/').trim_end_matches('/');
        self.by_path.get(p).map(|&i| &self.entries[i])
    }

    /// The prioritized files (those before `.prefetch.landmark`), in order.
    pub fn prefetch(&self) -> impl Iterator<Item = &Entry> {
        self.prefetch.iter().map(|&i| &self.entries[i])
    }

    /// With a prefetch landmark, the blob's bytes `0..end` hold every
    /// prioritized file: one Range request fetches them all.
    pub fn prefetch_end(&self) -> Option<u64> {
        self.prefetch_end
    }
}

fn hostile(entry: &str, reason: &str) -> EstargzError {
    EstargzError::Hostile {
        entry: entry.to_owned(),
        reason: reason.to_owned(),
    }
}

/// A TOC name as a path under the layer's root; `None` for one that is absolute
/// or leaves the root (`..`), has empty or `.` components, or a NUL.
fn clean(name: &str) -> Option<String> {
    let p = name.strip_prefix("./").unwrap_or(name);
    let p = p.strip_suffix('/').unwrap_or(p);
    if p.is_empty() {
        return Some(String::new());
    }
    if p.starts_with('/') || p.contains('\0') {
        return None;
    }
    p.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        .then(|| p.to_owned())
}

struct Builder {
    index: Index,
    /// Every payload's offset and the TOC's: where a member starting at one ends.
    ends: BTreeSet<u64>,
    /// The file whose chunks are still coming.
    open: Option<usize>,
}

impl Builder {
    fn add(&mut self, e: &RawEntry) -> Result<(), EstargzError> {
        let path = clean(&e.name).ok_or_else(|| hostile(&e.name, "its path leaves the root"))?;
        if e.kind == "chunk" {
            return self.chunk(e, &path);
        }
        if self.open.is_some() {
            return Err(hostile(&e.name, "it comes before the last file's chunks"));
        }
        if path == PREFETCH_LANDMARK || path == NO_PREFETCH_LANDMARK {
            if path == PREFETCH_LANDMARK {
                self.index.prefetch = (0..self.index.entries.len())
                    .filter(|&i| !self.index.entries[i].chunks.is_empty())
                    .collect();
                self.index.prefetch_end = Some(u64::try_from(e.offset).unwrap_or(0));
            }
            return Ok(());
        }
        if path.is_empty() && e.kind != "dir" {
            return Err(hostile(&e.name, "the root is not a directory"));
        }
        let kind = match e.kind.as_str() {
            "dir" => Kind::Dir,
            "reg" => Kind::File,
            "symlink" if !e.link_name.is_empty() && !e.link_name.contains('\0') => Kind::Symlink {
                target: e.link_name.clone(),
            },
            "hardlink" => Kind::Hardlink {
                target: self.link_target(e)?,
            },
            "char" => Kind::Char {
                major: e.dev_major,
                minor: e.dev_minor,
            },
            "block" => Kind::Block {
                major: e.dev_major,
                minor: e.dev_minor,
            },
            "fifo" => Kind::Fifo,
            other => return Err(hostile(&e.name, &format!("type {other:?}"))),
        };
        let mode = u32::try_from(e.mode)
            .map(|m| m & 0o7777)
            .map_err(|_| hostile(&e.name, "its mode"))?;
        if let Some(&j) = self.index.by_path.get(&path) {
            // A directory named again (or after a child made it implicit) takes the
            // later metadata; anything else twice is refused.
            let dir = &mut self.index.entries[j];
            if kind != Kind::Dir || dir.kind != Kind::Dir {
                return Err(hostile(&e.name, "it appears twice"));
            }
            (dir.mode, dir.uid, dir.gid) = (mode, e.uid, e.gid);
            dir.modtime = e.modtime.clone();
            return Ok(());
        }
        let size = if kind == Kind::File {
            u64::try_from(e.size).map_err(|_| hostile(&e.name, "a negative size"))?
        } else {
            0
        };
        self.parents(&path);
        let entry = Entry {
            path: path.clone(),
            kind,
            mode,
            uid: e.uid,
            gid: e.gid,
            size,
            modtime: e.modtime.clone(),
            chunks: Vec::new(),
        };
        let i = self.push(entry);
        if size > 0 {
            if e.chunk_offset != 0 {
                return Err(hostile(&e.name, "its first chunk is not at 0"));
            }
            self.open = Some(i);
            self.chunk(e, &path)?;
        }
        Ok(())
    }

    fn push(&mut self, entry: Entry) -> usize {
        let i = self.index.entries.len();
        self.index.by_path.insert(entry.path.clone(), i);
        self.index.entries.push(entry);
        i
    }

    /// The directories above `path` the TOC has not named, added as 0755.
    fn parents(&mut self, path: &str) {
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for c in &comps[..comps.len().saturating_sub(1)] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            if !self.index.by_path.contains_key(&parent) {
                self.push(Entry {
                    path: parent.clone(),
                    kind: Kind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    modtime: String::new(),
                    chunks: Vec::new(),
                });
            }
        }
    }

    /// A hard link's target: a regular file earlier in the TOC (through links).
    fn link_target(&self, e: &RawEntry) -> Result<String, EstargzError> {
        let t = clean(&e.link_name)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| hostile(&e.name, "its link leaves the root"))?;
        match self
            .index
            .by_path
            .get(&t)
            .map(|&i| &self.index.entries[i].kind)
        {
            Some(Kind::File) => Ok(t),
            Some(Kind::Hardlink { target }) => Ok(target.clone()),
            _ => Err(hostile(&e.name, "its link names no earlier regular file")),
        }
    }

    /// The next chunk of the open file (its first comes with its `reg` entry).
    fn chunk(&mut self, e: &RawEntry, path: &str) -> Result<(), EstargzError> {
        let Some(i) = self.open else {
            return Err(hostile(&e.name, "a chunk of no file"));
        };
        let file = &self.index.entries[i];
        let covered = file.chunks.last().map_or(0, |c| c.file_offset + c.size);
        if file.path != path || u64::try_from(e.chunk_offset).ok() != Some(covered) {
            return Err(hostile(&e.name, "a chunk out of place"));
        }
        let left = file.size - covered;
        let size = match e.chunk_size {
            0 => left,
            n => u64::try_from(n).map_err(|_| hostile(&e.name, "a negative chunk size"))?,
        };
        if size == 0 || size > left || size > MAX_CHUNK {
            return Err(hostile(&e.name, "a chunk size out of bounds"));
        }
        let blob_offset = u64::try_from(e.offset).map_err(|_| hostile(&e.name, "its offset"))?;
        let blob_end = *self
            .ends
            .range((Bound::Excluded(blob_offset), Bound::Unbounded))
            .next()
            .expect("every payload lies before the TOC");
        let inner_offset =
            u64::try_from(e.inner_offset).map_err(|_| hostile(&e.name, "its innerOffset"))?;
        if blob_end - blob_offset > MAX_SPAN || inner_offset.saturating_add(size) > MAX_SPAN {
            return Err(hostile(&e.name, "a chunk spanning too much of the blob"));
        }
        let digest = e
            .chunk_digest
            .as_deref()
            .and_then(|d| d.parse::<Digest>().ok())
            .filter(|d| d.algorithm() == "sha256")
            .ok_or_else(|| hostile(&e.name, "no sha256 chunkDigest"))?;
        let file = &mut self.index.entries[i];
        file.chunks.push(Chunk {
            file_offset: covered,
            size,
            blob_offset,
            blob_end,
            inner_offset,
            digest,
        });
        if covered + size == file.size {
            self.open = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const D: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn parse(entries: Value) -> Result<Index, EstargzError> {
        let toc = json!({"version": 1, "entries": entries});
        Index::parse(&serde_json::to_vec(&toc).unwrap(), 1000)
    }

    fn reg(name: &str) -> Value {
        json!({"name": name, "type": "reg", "size": 3, "offset": 10, "chunkDigest": D, "mode": 420})
    }

    /// Each hostile entry is refused with the reason it names.
    #[test]
    fn hostile_entries_are_refused() {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "dot-dot",
                json!([reg("a/../../etc/passwd")]),
                "leaves the root",
            ),
            ("absolute", json!([reg("/etc/passwd")]), "leaves the root"),
            ("bare dot-dot", json!([reg("..")]), "leaves the root"),
            ("empty component", json!([reg("a//b")]), "leaves the root"),
            ("nul", json!([reg("a\u{0}b")]), "leaves the root"),
            (
                "past the blob",
                json!([{"name": "a", "type": "reg", "size": 3, "offset": 5000, "chunkDigest": D}]),
                "not before the TOC",
            ),
            (
                "at the TOC",
                json!([{"name": "a", "type": "reg", "size": 3, "offset": 1000, "chunkDigest": D}]),
                "not before the TOC",
            ),
            (
                "negative offset",
                json!([{"name": "a", "type": "reg", "size": 3, "offset": -1, "chunkDigest": D}]),
                "not before the TOC",
            ),
            (
                "no chunkDigest",
                json!([{"name": "a", "type": "reg", "size": 3, "offset": 10}]),
                "chunkDigest",
            ),
            (
                "md5 chunkDigest",
                json!([{"name": "a", "type": "reg", "size": 3, "offset": 10, "chunkDigest": "md5:00"}]),
                "chunkDigest",
            ),
            (
                "chunk larger than the file",
                json!([{"name": "a", "type": "reg", "size": 3, "offset": 10, "chunkSize": 9, "chunkDigest": D}]),
                "out of bounds",
            ),
            (
                "huge chunk",
                json!([{"name": "a", "type": "reg", "size": 1u64 << 40, "offset": 10, "chunkDigest": D}]),
                "out of bounds",
            ),
            (
                "chunks short of the size",
                json!([{"name": "a", "type": "reg", "size": 6, "offset": 10, "chunkSize": 3, "chunkDigest": D}]),
                "end before its size",
            ),
            (
                "a gap between chunks",
                json!([{"name": "a", "type": "reg", "size": 6, "offset": 10, "chunkSize": 3, "chunkDigest": D},
                                            {"name": "a", "type": "chunk", "offset": 20, "chunkOffset": 4, "chunkDigest": D}]),
                "out of place",
            ),
            (
                "a chunk of another file",
                json!([{"name": "a", "type": "reg", "size": 6, "offset": 10, "chunkSize": 3, "chunkDigest": D},
                                               {"name": "b", "type": "chunk", "offset": 20, "chunkOffset": 3, "chunkDigest": D}]),
                "out of place",
            ),
            (
                "an orphan chunk",
                json!([{"name": "b", "type": "chunk", "offset": 20, "chunkOffset": 3, "chunkDigest": D}]),
                "a chunk of no file",
            ),
            ("twice", json!([reg("a"), reg("a")]), "twice"),
            (
                "hard link out",
                json!([{"name": "l", "type": "hardlink", "linkName": "../../etc/shadow"}]),
                "leaves the root",
            ),
            (
                "hard link to nothing",
                json!([{"name": "l", "type": "hardlink", "linkName": "nope"}]),
                "no earlier regular file",
            ),
            (
                "hard link to a dir",
                json!([{"name": "d", "type": "dir"}, {"name": "l", "type": "hardlink", "linkName": "d"}]),
                "no earlier regular file",
            ),
            (
                "unknown type",
                json!([{"name": "x", "type": "socket"}]),
                "type",
            ),
            (
                "negative mode",
                json!([{"name": "x", "type": "dir", "mode": -1}]),
                "mode",
            ),
            (
                "innerOffset past the cap",
                json!([{"name": "a", "type": "reg", "size": 3, "offset": 10, "innerOffset": MAX_SPAN, "chunkDigest": D}]),
                "spanning",
            ),
        ];
        for (what, entries, reason) in cases {
            match parse(entries) {
                Err(EstargzError::Hostile { reason: r, .. }) => {
                    assert!(
                        r.contains(reason),
                        "{what}: refused for {r:?}, not {reason:?}"
                    )
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn too_many_entries_and_a_wrong_version_are_refused() {
        let many: Vec<Value> = (0..=MAX_ENTRIES)
            .map(|_| json!({"name": "d", "type": "dir"}))
            .collect();
        assert!(matches!(
            parse(Value::Array(many)),
            Err(EstargzError::TooManyEntries { .. })
        ));
        let v2 = serde_json::to_vec(&json!({"version": 2, "entries": []})).unwrap();
        assert!(matches!(Index::parse(&v2, 10), Err(EstargzError::Toc(_))));
    }

    #[test]
    fn paths_parents_chunks_and_prefetch() {
        let idx = parse(json!([
            {"name": "./", "type": "dir", "mode": 493},
            {"name": "./a/b/f", "type": "reg", "size": 5, "offset": 10, "chunkSize": 2, "chunkDigest": D, "mode": 0o104755},
            {"name": "./a/b/f", "type": "chunk", "offset": 40, "chunkOffset": 2, "chunkDigest": D},
            {"name": ".prefetch.landmark", "type": "reg", "size": 1, "offset": 90, "chunkDigest": D},
            {"name": "l", "type": "hardlink", "linkName": "a/b/f"},
            {"name": "s", "type": "symlink", "linkName": "/etc/hostname"},
            {"name": "e", "type": "reg", "size": 0},
        ]))
        .unwrap();
        let f = idx.get("/a/b/f").unwrap();
        assert_eq!(f.mode, 0o4755);
        assert_eq!(f.chunks.len(), 2);
        assert_eq!(
            (
                f.chunks[0].blob_offset,
                f.chunks[0].blob_end,
                f.chunks[0].size
            ),
            (10, 40, 2)
        );
        assert_eq!(
            (
                f.chunks[1].blob_offset,
                f.chunks[1].blob_end,
                f.chunks[1].size
            ),
            (40, 90, 3)
        );
        assert_eq!(idx.get("a/b").unwrap().kind, Kind::Dir);
        assert_eq!(
            idx.get("l").unwrap().kind,
            Kind::Hardlink {
                target: "a/b/f".into()
            }
        );
        assert!(idx.get(".prefetch.landmark").is_none());
        let prefetch: Vec<&str> = idx.prefetch().map(|e| e.path.as_str()).collect();
        assert_eq!(prefetch, ["a/b/f"]);
        assert_eq!(idx.prefetch_end(), Some(90));
    }
}
