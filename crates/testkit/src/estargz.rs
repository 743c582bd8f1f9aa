//! eStargz layers written here, exactly as stargz-snapshotter's `docs/estargz.md`
//! lays them out (and its `estargz/` writer does): each regular file's payload
//! in gzip members of its own (one per chunk), the TOC (`stargz.index.json`) as
//! the last tar entry in a member of its own, then the 51-byte footer naming the
//! TOC's offset. The blob stays an ordinary gzip tar.
//!
//! Hand-written rather than a crate: no Rust crate writes eStargz, and the tests
//! need to lie on purpose (a chunk's bytes altered under an unchanged TOC).

use std::collections::BTreeMap;
use std::io::Write;

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::image::{write_blob, write_layout_index, OCI_MANIFEST};
use crate::TestImage;

/// The annotation on a layer descriptor naming its TOC's digest.
pub const TOC_DIGEST_ANNOTATION: &str = "containerd.io/snapshot/stargz/toc.digest";
/// The annotation on a layer descriptor giving its uncompressed (tar) size.
pub const UNCOMPRESSED_SIZE_ANNOTATION: &str = "io.containers.estargz.uncompressed-size";
pub const TOC_NAME: &str = "stargz.index.json";
pub const PREFETCH_LANDMARK: &str = ".prefetch.landmark";
pub const NO_PREFETCH_LANDMARK: &str = ".no.prefetch.landmark";
pub const FOOTER_SIZE: usize = 51;
/// stargz-snapshotter's default chunk size.
pub const DEFAULT_CHUNK_SIZE: usize = 4 << 20;

/// One tar entry of a layer.
#[derive(Clone, Debug)]
pub enum Entry {
    File {
        path: String,
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// A hard link to an earlier file.
    Hardlink {
        path: String,
        target: String,
    },
}

impl Entry {
    pub fn file(path: &str, data: &[u8], mode: u32) -> Self {
        Entry::File {
            path: path.into(),
            data: data.to_vec(),
            mode,
        }
    }
    pub fn dir(path: &str) -> Self {
        Entry::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Entry::Symlink {
            path: path.into(),
            target: target.into(),
        }
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        Entry::Hardlink {
            path: path.into(),
            target: target.into(),
        }
    }
}

/// How a layer is written.
#[derive(Clone, Debug)]
pub struct Encoder {
    /// Files larger than this are split into chunks of this size.
    pub chunk_size: usize,
    /// `Some(n)`: the first `n` entries are the prioritized ones, followed by
    /// `.prefetch.landmark`; `None`: `.no.prefetch.landmark` comes first.
    pub prefetch: Option<usize>,
    /// A lie: chunk number `.1` (0-based) of file `.0` is written with its first
    /// byte flipped while the TOC keeps the honest `chunkDigest`.
    pub tamper: Option<(String, usize)>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            prefetch: None,
            tamper: None,
        }
    }
}

/// An eStargz layer blob and what its descriptor and the image config say of it.
#[derive(Clone, Debug)]
pub struct EstargzLayer {
    pub blob: Vec<u8>,
    /// `sha256:` of the blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// `sha256:` of the TOC JSON: the `toc.digest` annotation.
    pub toc_digest: String,
    /// The uncompressed tar's size: the `uncompressed-size` annotation.
    pub uncompressed_size: u64,
    /// Where the TOC's gzip member starts.
    pub toc_offset: u64,
    /// The TOC as written.
    pub toc: Value,
}

impl EstargzLayer {
    /// The annotations of its layer descriptor.
    pub fn annotations(&self) -> Value {
        json!({
            TOC_DIGEST_ANNOTATION: self.toc_digest,
            UNCOMPRESSED_SIZE_ANNOTATION: self.uncompressed_size.to_string(),
        })
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The blob as it is written: closed gzip members, the open one, and the tar
/// stream's hash and length.
struct Blob {
    out: Vec<u8>,
    member: Option<GzEncoder<Vec<u8>>>,
    diff: Sha256,
    tar_len: u64,
}

impl Blob {
    /// Appends tar bytes to the open member (opening one if none is).
    fn tar(&mut self, bytes: &[u8]) {
        self.diff.update(bytes);
        self.tar_len += bytes.len() as u64;
        self.member
            .get_or_insert_with(|| GzEncoder::new(Vec::new(), flate2::Compression::fast()))
            .write_all(bytes)
            .unwrap();
    }

    /// Closes the open member; returns where the next one starts.
    fn close(&mut self) -> u64 {
        if let Some(gz) = self.member.take() {
            self.out.extend_from_slice(&gz.finish().unwrap());
        }
        self.out.len() as u64
    }

    fn pad(&mut self, size: u64) {
        let rem = (size % 512) as usize;
        if rem != 0 {
            self.tar(&vec![0u8; 512 - rem]);
        }
    }
}

fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).expect("a path tar's ustar header holds");
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// The eStargz footer: an empty gzip member whose extra field names the TOC's
/// offset (`%016xSTARGZ` in an `SG` subfield).
pub fn footer(toc_offset: u64) -> Vec<u8> {
    let subfield = format!("{toc_offset:016x}STARGZ");
    let mut f = vec![0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 255];
    f.extend_from_slice(&(4 + subfield.len() as u16).to_le_bytes());
    f.extend_from_slice(b"SG");
    f.extend_from_slice(&(subfield.len() as u16).to_le_bytes());
    f.extend_from_slice(subfield.as_bytes());
    f.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    f.extend_from_slice(&[0; 8]);
    assert_eq!(f.len(), FOOTER_SIZE);
    f
}

const MODTIME: &str = "1970-01-01T00:00:00Z";

impl Encoder {
    /// Writes `entries` as one eStargz layer.
    pub fn encode(&self, entries: &[Entry]) -> EstargzLayer {
        let landmark = |name: &str| Entry::file(name, &[0xf], 0o644);
        let mut all: Vec<Entry> = entries.to_vec();
        match self.prefetch {
            Some(n) => all.insert(n.min(all.len()), landmark(PREFETCH_LANDMARK)),
            None => all.insert(0, landmark(NO_PREFETCH_LANDMARK)),
        }
        let mut blob = Blob {
            out: Vec::new(),
            member: None,
            diff: Sha256::new(),
            tar_len: 0,
        };
        let mut toc = Vec::new();
        for e in &all {
            self.entry(&mut blob, &mut toc, e);
        }
        let toc_offset = blob.close();
        let toc = json!({"version": 1, "entries": toc});
        let toc_json = serde_json::to_vec_pretty(&toc).unwrap();
        let h = header(
            TOC_NAME,
            tar::EntryType::Regular,
            toc_json.len() as u64,
            0o644,
        );
        blob.tar(h.as_bytes());
        blob.tar(&toc_json);
        blob.pad(toc_json.len() as u64);
        blob.tar(&[0u8; 1024]);
        blob.close();
        blob.out.extend_from_slice(&footer(toc_offset));
        let diff_id = format!("sha256:{}", hex::encode(blob.diff.finalize()));
        EstargzLayer {
            digest: sha256(&blob.out),
            blob: blob.out,
            diff_id,
            toc_digest: sha256(&toc_json),
            uncompressed_size: blob.tar_len,
            toc_offset,
            toc,
        }
    }

    fn entry(&self, blob: &mut Blob, toc: &mut Vec<Value>, e: &Entry) {
        let meta = |name: &str, kind: &str, mode: u32| json!({"name": name, "type": kind, "mode": mode, "uid": 0, "gid": 0, "modtime": MODTIME});
        match e {
            Entry::Dir { path, mode } => {
                let name = format!("{}/", path.trim_end_matches('/'));
                blob.tar(header(&name, tar::EntryType::Directory, 0, *mode).as_bytes());
                toc.push(meta(&name, "dir", *mode));
            }
            Entry::Symlink { path, target } | Entry::Hardlink { path, target } => {
                let (kind, tkind) = match e {
                    Entry::Symlink { .. } => (tar::EntryType::Symlink, "symlink"),
                    _ => (tar::EntryType::Link, "hardlink"),
                };
                let mut h = header(path, kind, 0, 0o777);
                h.set_link_name(target).unwrap();
                h.set_cksum();
                blob.tar(h.as_bytes());
                let mut m = meta(path, tkind, 0o777);
                m["linkName"] = json!(target);
                toc.push(m);
            }
            Entry::File { path, data, mode } => self.file(blob, toc, path, data, *mode),
        }
    }

    /// A regular file: its header in the open member, then each chunk in a member
    /// of its own (the tar padding goes with the last one, as Go's writer does).
    fn file(&self, blob: &mut Blob, toc: &mut Vec<Value>, path: &str, data: &[u8], mode: u32) {
        blob.tar(header(path, tar::EntryType::Regular, data.len() as u64, mode).as_bytes());
        let mut first = json!({"name": path, "type": "reg", "size": data.len(), "mode": mode,
                               "uid": 0, "gid": 0, "modtime": MODTIME, "digest": sha256(data)});
        if data.is_empty() {
            toc.push(first);
            return;
        }
        let chunks: Vec<&[u8]> = data.chunks(self.chunk_size.max(1)).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let offset = blob.close();
            let mut ent = if i == 0 {
                std::mem::take(&mut first)
            } else {
                json!({"name": path, "type": "chunk"})
            };
            ent["offset"] = json!(offset);
            ent["chunkOffset"] = json!(i * self.chunk_size);
            // The last chunk (or an unchunked file) says 0, per the spec.
            ent["chunkSize"] = json!(if i + 1 < chunks.len() { chunk.len() } else { 0 });
            ent["chunkDigest"] = json!(sha256(chunk));
            toc.push(ent);
            if self.tamper.as_ref() == Some(&(path.to_owned(), i)) {
                let mut bad = chunk.to_vec();
                bad[0] ^= 0xff;
                blob.tar(&bad);
            } else {
                blob.tar(chunk);
            }
        }
        blob.pad(data.len() as u64);
    }
}

/// Writes `entries` as an eStargz layer with the default [`Encoder`].
pub fn encode(entries: &[Entry]) -> EstargzLayer {
    Encoder::default().encode(entries)
}

/// A linux/amd64 image whose layers are `layers` (eStargz), each descriptor with
/// its `annotations`: an OCI layout like [`TestImage`]'s, pushed the same way.
pub fn image(layers: &[(&EstargzLayer, Value)], cmd: &[&str]) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let mut descriptors = Vec::new();
    for (layer, annotations) in layers {
        let (digest, size) = write_blob(dir.path(), &layer.blob);
        descriptors.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                "digest": digest, "size": size, "annotations": annotations}),
        );
    }
    let diff_ids: Vec<&str> = layers.iter().map(|(l, _)| l.diff_id.as_str()).collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let (config_digest, config_size) = write_blob(dir.path(), config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": descriptors,
    });
    let (digest, size) = write_blob(dir.path(), manifest.to_string().as_bytes());
    write_layout_index(dir.path(), OCI_MANIFEST, &digest, size);
    TestImage::from_layout(dir, digest)
}

/// The TOC's entries by name (chunks under their file's name, in order).
pub fn toc_entries(layer: &EstargzLayer) -> BTreeMap<String, Vec<Value>> {
    let mut by_name: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in layer.toc["entries"].as_array().unwrap() {
        by_name
            .entry(e["name"].as_str().unwrap().to_owned())
            .or_default()
            .push(e.clone());
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn files() -> Vec<Entry> {
        let big: Vec<u8> = (0..300_000u32).flat_map(|i| i.to_le_bytes()).collect();
        vec![
            Entry::dir("bin"),
            Entry::file("bin/hello", b"#!/bin/sh\necho hello\n", 0o755),
            Entry::file("empty", b"", 0o644),
            Entry::file("data/big.bin", &big, 0o600),
            Entry::symlink("bin/sh", "/bin/busybox"),
            Entry::hardlink("hello-again", "bin/hello"),
        ]
    }

    /// The blob is an ordinary gzip tar: GNU tar unpacks it to the same files, and
    /// its uncompressed bytes are the diff_id.
    #[test]
    fn the_blob_is_a_plain_gzip_tar_that_tar_unpacks() {
        let enc = Encoder {
            chunk_size: 100_000,
            prefetch: Some(2),
            tamper: None,
        };
        let layer = enc.encode(&files());
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("layer.tar.gz");
        std::fs::write(&blob, &layer.blob).unwrap();
        let out = dir.path().join("root");
        std::fs::create_dir(&out).unwrap();
        let st = Command::new("tar")
            .arg("-xzf")
            .arg(&blob)
            .arg("-C")
            .arg(&out)
            .status()
            .unwrap();
        assert!(st.success());
        for e in files() {
            match e {
                Entry::File { path, data, mode } => {
                    assert_eq!(std::fs::read(out.join(&path)).unwrap(), data, "{path}");
                    use std::os::unix::fs::PermissionsExt;
                    let m = std::fs::metadata(out.join(&path)).unwrap().permissions();
                    assert_eq!(m.mode() & 0o777, mode, "{path}");
                }
                Entry::Symlink { path, target } => {
                    assert_eq!(
                        std::fs::read_link(out.join(&path)).unwrap().to_str(),
                        Some(target.as_str())
                    );
                }
                Entry::Hardlink { path, target } => {
                    assert_eq!(
                        std::fs::read(out.join(path)).unwrap(),
                        std::fs::read(out.join(target)).unwrap()
                    );
                }
                Entry::Dir { path, .. } => assert!(out.join(path).is_dir()),
            }
        }
        assert_eq!(std::fs::read(out.join(PREFETCH_LANDMARK)).unwrap(), [0xf]);
        let toc = std::fs::read(out.join(TOC_NAME)).unwrap();
        assert_eq!(sha256(&toc), layer.toc_digest);

        let mut tar_bytes = Vec::new();
        use std::io::Read;
        flate2::read::MultiGzDecoder::new(&layer.blob[..])
            .read_to_end(&mut tar_bytes)
            .unwrap();
        assert_eq!(sha256(&tar_bytes), layer.diff_id);
        assert_eq!(tar_bytes.len() as u64, layer.uncompressed_size);
    }

    /// Each chunk starts a gzip member at its `offset` that holds exactly its bytes
    /// (followed by tar padding or headers), the footer names the TOC's member,
    /// which holds `stargz.index.json` first.
    #[test]
    fn chunks_toc_and_footer_are_where_the_toc_says() {
        let layer = Encoder {
            chunk_size: 100_000,
            ..Encoder::default()
        }
        .encode(&files());
        let by_name = toc_entries(&layer);
        let big = &by_name["data/big.bin"];
        assert_eq!(big.len(), 12, "1.2 MB in 100 kB chunks");
        assert_eq!(big[0]["type"], "reg");
        assert_eq!(big[0]["chunkSize"], 100_000);
        assert_eq!(big[11]["type"], "chunk");
        assert_eq!(big[11]["chunkSize"], 0);
        assert_eq!(by_name[NO_PREFETCH_LANDMARK][0]["size"], 1);
        let data = match &files()[3] {
            Entry::File { data, .. } => data.clone(),
            _ => unreachable!(),
        };
        for c in big {
            use std::io::Read;
            let off = c["offset"].as_u64().unwrap() as usize;
            let start = c["chunkOffset"].as_u64().unwrap() as usize;
            let want = &data[start..(start + 100_000).min(data.len())];
            let mut got = vec![0; want.len()];
            flate2::read::GzDecoder::new(&layer.blob[off..])
                .read_exact(&mut got)
                .unwrap();
            assert_eq!(got, want);
            assert_eq!(c["chunkDigest"], sha256(want));
        }
        let f = &layer.blob[layer.blob.len() - FOOTER_SIZE..];
        assert_eq!(f, footer(layer.toc_offset));
        let mut a = tar::Archive::new(flate2::read::GzDecoder::new(
            &layer.blob[layer.toc_offset as usize..],
        ));
        let first = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(first.path().unwrap().to_str(), Some(TOC_NAME));
    }
}
