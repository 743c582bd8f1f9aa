//! eStargz layers read in place from the real registry: the testkit's encoder
//! writes them, skopeo pushes them with their annotations, and the reader fetches
//! the footer, the TOC and only the chunks a read needs, by `Range`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use berth_registry::open::Unobserved;
use berth_registry::{open, NetworkPolicy, Registry, RegistryError, Session, Target, TokenReuse};
use berth_runtime::estargz::{
    EstargzError, Kind, Layer, RangeSource, RegistryBlob, TOC_DIGEST_ANNOTATION,
};
use berth_testkit::estargz::{self, Encoder, Entry, EstargzLayer};
use berth_testkit::LocalRegistry;
use berth_types::Digest;
use secrecy::SecretString;

const CHUNK: usize = 64 * 1024;

/// 1 MiB that compresses poorly (so chunks have real compressed sizes).
fn big() -> Vec<u8> {
    berth_testkit::noise(1, 1 << 20)
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::dir("bin"),
        Entry::file("bin/app", b"#!/bin/sh\necho lazily\n", 0o755),
        Entry::file("data/big.bin", &big(), 0o644),
        Entry::symlink("bin/sh", "/bin/busybox"),
        Entry::hardlink("bin/app2", "bin/app"),
        Entry::file("etc/empty", b"", 0o600),
    ]
}

/// Counts what the reader asks the registry for: each call is one `Range` GET.
struct Counted<S> {
    inner: S,
    requests: AtomicU64,
    bytes: AtomicU64,
    ranges: Mutex<Vec<(u64, u64)>>,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Self {
        Counted {
            inner,
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            ranges: Mutex::new(Vec::new()),
        }
    }
    fn reset(&self) -> (u64, u64) {
        self.ranges.lock().unwrap().clear();
        (
            self.requests.swap(0, Ordering::SeqCst),
            self.bytes.swap(0, Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl<S: RangeSource> RangeSource for Counted<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn read_range(&self, offset: u64, len: u64) -> Result<Vec<u8>, RegistryError> {
        let got = self.inner.read_range(offset, len).await?;
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.bytes.fetch_add(got.len() as u64, Ordering::SeqCst);
        self.ranges.lock().unwrap().push((offset, len));
        Ok(got)
    }
}

/// The registry behind `reg`, its policy allowing only this loopback registry.
fn registry(reg: &LocalRegistry) -> Registry {
    let url = reg.authority();
    Registry::new(NetworkPolicy::from_lists("127.0.0.1/32", &url).unwrap()).unwrap()
}

/// Repository `repo`'s `v1` on `reg`.
fn target(registry: &Registry, reg: &LocalRegistry, repo: &str) -> Target {
    registry
        .target(
            &reg.authority().parse().unwrap(),
            &format!("{repo}:v1").parse().unwrap(),
        )
        .unwrap()
}

/// Pushes `layer` (annotated with `annotations`) as `target` and opens a session
/// to it; returns the session and the layer descriptor's digest, size and
/// toc.digest annotation, as the pushed manifest says.
async fn pushed<'r>(
    reg: &LocalRegistry,
    registry: &'r Registry,
    target: &'r Target,
    layer: &EstargzLayer,
    annotations: serde_json::Value,
) -> (Session<'r>, Digest, u64, Digest) {
    let tag = format!("{}:v1", target.repository);
    estargz::image(&[(layer, annotations)], &["/bin/app"]).push(reg, &tag);
    let creds = Some(berth_registry::Credentials::new(
        "alice",
        SecretString::from("alice-pass-1"),
    ));
    let mut s = open(registry, target, creds, TokenReuse::Cached, &mut Unobserved)
        .await
        .unwrap();
    let platform = s.platform_manifest().await.unwrap();
    let desc = &platform.manifest.layers()[0];
    let toc = desc.annotations().as_ref().unwrap()[TOC_DIGEST_ANNOTATION]
        .parse()
        .unwrap();
    let digest = desc.digest().to_string().parse().unwrap();
    (s.session, digest, desc.size(), toc)
}

#[tokio::test]
async fn a_pushed_estargz_layer_is_read_chunk_by_chunk_by_range() {
    let reg = LocalRegistry::htpasswd(&[("alice", "alice-pass-1")]);
    let registry = registry(&reg);
    let layer = Encoder {
        chunk_size: CHUNK,
        prefetch: Some(2),
        tamper: None,
    }
    .encode(&entries());
    let target = target(&registry, &reg, "team/lazy");
    let (s, digest, size, toc) =
        pushed(&reg, &registry, &target, &layer, layer.annotations()).await;
    assert_eq!(
        digest.to_string(),
        layer.digest,
        "skopeo pushed the blob as written"
    );
    assert_eq!(toc.to_string(), layer.toc_digest, "and kept the annotation");

    let source = Counted::new(RegistryBlob::new(s, digest, size));
    let lazy = Layer::open(&source, &toc).await.unwrap();
    // Footer, then TOC: two requests, nothing of the files.
    let (requests, bytes) = source.reset();
    assert_eq!(requests, 2);
    assert_eq!(bytes, size - layer.toc_offset);

    let index = lazy.index();
    let mut paths: Vec<&str> = index.entries().iter().map(|e| e.path.as_str()).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "bin",
            "bin/app",
            "bin/app2",
            "bin/sh",
            "data",
            "data/big.bin",
            "etc",
            "etc/empty"
        ]
    );
    assert_eq!(
        index.get("bin/sh").unwrap().kind,
        Kind::Symlink {
            target: "/bin/busybox".into()
        }
    );
    assert_eq!(index.get("bin/app").unwrap().mode, 0o755);
    assert_eq!(index.get("data/big.bin").unwrap().chunks.len(), 16);
    let prefetch: Vec<&str> = index.prefetch().map(|e| e.path.as_str()).collect();
    assert_eq!(prefetch, ["bin/app"], "the files before .prefetch.landmark");
    assert!(index.prefetch_end().unwrap() < layer.toc_offset);

    // A small file: one request, its one chunk.
    assert_eq!(
        lazy.read("/bin/app", 0, 1 << 20).await.unwrap(),
        b"#!/bin/sh\necho lazily\n"
    );
    assert_eq!(source.reset().0, 1);
    assert_eq!(lazy.read("bin/app2", 3, 6).await.unwrap(), b"bin/sh");
    assert_eq!(lazy.read("etc/empty", 0, 10).await.unwrap(), b"");
    source.reset();

    // 100 kB from the middle of a 16-chunk file: the two chunks holding them.
    let data = big();
    let (from, len) = (5 * CHUNK as u64 + 30_000, 100_000u64);
    let got = lazy.read("data/big.bin", from, len).await.unwrap();
    assert_eq!(got, data[from as usize..(from + len) as usize]);
    let (requests, bytes) = source.reset();
    assert_eq!(requests, 2, "chunks 5 and 6 only");
    let chunks = &index.get("data/big.bin").unwrap().chunks;
    let spans: u64 = chunks[5..7]
        .iter()
        .map(|c| c.blob_end - c.blob_offset)
        .sum();
    assert_eq!(bytes, spans);
    assert!(bytes < 3 * CHUNK as u64, "{bytes} bytes fetched for {len}");

    // The last bytes of the file, and past its end.
    let tail = lazy
        .read("data/big.bin", data.len() as u64 - 10, 100)
        .await
        .unwrap();
    assert_eq!(tail, data[data.len() - 10..]);
    assert!(lazy
        .read("data/big.bin", 1 << 30, 10)
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        lazy.read("bin", 0, 1).await,
        Err(EstargzError::NotAFile(_))
    ));
    assert!(matches!(
        lazy.read("nope", 0, 1).await,
        Err(EstargzError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_toc_not_matching_the_annotation_is_refused() {
    let reg = LocalRegistry::htpasswd(&[("alice", "alice-pass-1")]);
    let registry = registry(&reg);
    let layer = estargz::encode(&entries());
    // The descriptor names another TOC (here: the one of another layer).
    let other = estargz::encode(&[Entry::file("x", b"x", 0o644)]);
    let target = target(&registry, &reg, "team/liar");
    let (s, digest, size, toc) =
        pushed(&reg, &registry, &target, &layer, other.annotations()).await;
    assert_eq!(toc.to_string(), other.toc_digest);
    let source = Counted::new(RegistryBlob::new(s, digest, size));
    match Layer::open(&source, &toc).await {
        Err(EstargzError::TocDigest(m)) => {
            assert_eq!(m.expected, toc);
            assert_eq!(m.actual.to_string(), layer.toc_digest);
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("a TOC the manifest does not pin was accepted"),
    }
}

#[tokio::test]
async fn a_chunk_whose_bytes_were_altered_is_refused_and_no_byte_returned() {
    let reg = LocalRegistry::htpasswd(&[("alice", "alice-pass-1")]);
    let registry = registry(&reg);
    // Chunk 3 of the big file holds other bytes than its chunkDigest says; the
    // TOC (and so its digest annotation) is the honest one.
    let enc = Encoder {
        chunk_size: CHUNK,
        prefetch: None,
        tamper: Some(("data/big.bin".into(), 3)),
    };
    let layer = enc.encode(&entries());
    let target = target(&registry, &reg, "team/tampered");
    let (s, digest, size, toc) =
        pushed(&reg, &registry, &target, &layer, layer.annotations()).await;
    let lazy = Layer::open(RegistryBlob::new(s, digest, size), &toc)
        .await
        .unwrap();
    let data = big();
    // The chunks around it read fine.
    let ok = lazy
        .read("data/big.bin", 2 * CHUNK as u64, 10)
        .await
        .unwrap();
    assert_eq!(ok, data[2 * CHUNK..2 * CHUNK + 10]);
    // A read touching it, even by one byte, returns an error naming it and nothing else.
    for (from, len) in [
        (3 * CHUNK as u64 + 5, 1),
        (2 * CHUNK as u64, CHUNK as u64 + 1),
    ] {
        match lazy.read("data/big.bin", from, len).await {
            Err(EstargzError::ChunkDigest {
                path, chunk_offset, ..
            }) => {
                assert_eq!(path, "data/big.bin");
                assert_eq!(chunk_offset, 3 * CHUNK as u64);
            }
            other => panic!("read {from}+{len}: {:?}", other.map(|b| b.len())),
        }
    }
}
