//! Lazy layers mounted through FUSE, read as files by the kernel: the layer is
//! pushed to the real registry, its TOC fetched by `Range`, and each chunk a
//! read needs fetched and verified before the read is answered.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_registry::open::Unobserved;
use berth_registry::{open, Credentials, NetworkPolicy, Registry, TokenReuse};
use berth_runtime::estargz::mount::{self, Mounted};
use berth_runtime::estargz::reader::{Reader, Watch};
use berth_runtime::estargz::{
    BlobPool, EstargzError, Layer, RangeSource, FETCH_DEADLINE, TOC_DIGEST_ANNOTATION,
};
use berth_runtime::unpack::IdShift;
use berth_testkit::estargz::{self, Encoder, Entry};
use berth_testkit::LocalRegistry;
use secrecy::SecretString;

const CHUNK: usize = 64 * 1024;
const IDS: IdShift = IdShift {
    base: 100_000,
    size: 65_536,
};

#[derive(Default)]
struct Seen {
    on_demand: AtomicU64,
    chunks: AtomicU64,
    prefetched: AtomicU64,
    failed: Mutex<Vec<String>>,
}

impl Watch for Seen {
    fn on_demand(&self, bytes: u64, chunks: u64) {
        self.on_demand.fetch_add(bytes, Ordering::SeqCst);
        self.chunks.fetch_add(chunks, Ordering::SeqCst);
    }
    fn prefetched(&self, bytes: u64) {
        self.prefetched.fetch_add(bytes, Ordering::SeqCst);
    }
    fn failed(&self, e: &EstargzError) {
        self.failed.lock().unwrap().push(e.to_string());
    }
}

fn big() -> Vec<u8> {
    berth_testkit::noise(7, 1 << 20)
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::dir("bin"),
        Entry::file("bin/app", b"#!/bin/sh\necho lazily\n", 0o755),
        Entry::file("data/big.bin", &big(), 0o640),
        Entry::symlink("bin/sh", "/bin/busybox"),
        Entry::hardlink("bin/app2", "bin/app"),
        Entry::file("etc/.wh.passwd", b"", 0o644),
        Entry::dir("var"),
        Entry::file("var/.wh..wh..opq", b"", 0o644),
        Entry::file("var/kept", b"kept", 0o644),
    ]
}

/// Pushes `layer` as `team/lazy:v1` on a fresh htpasswd registry, opens it
/// through a pool, mounts it; returns what the test needs to keep.
async fn mounted(
    encoder: Encoder,
) -> (
    LocalRegistry,
    tempfile::TempDir,
    Mounted,
    Arc<Reader>,
    Arc<Seen>,
) {
    if let Err(why) = mount::available(Path::new("/dev/fuse")) {
        panic!("these tests mount FUSE filesystems (as root, /dev/fuse): {why}");
    }
    let reg = LocalRegistry::htpasswd(&[("alice", "alice-pass-1")]);
    let layer = encoder.encode(&entries());
    estargz::image(&[(&layer, layer.annotations())], &["/bin/app"]).push(&reg, "team/lazy:v1");
    let url = reg.authority();
    let registry =
        Arc::new(Registry::new(NetworkPolicy::from_lists("127.0.0.1/32", &url).unwrap()).unwrap());
    let target = registry
        .target(&url.parse().unwrap(), &"team/lazy:v1".parse().unwrap())
        .unwrap();
    let creds = Credentials::new("alice", SecretString::from("alice-pass-1"));
    let mut opened = open(
        &registry,
        &target,
        Some(creds.clone()),
        TokenReuse::Cached,
        &mut Unobserved,
    )
    .await
    .unwrap();
    let platform = opened.platform_manifest().await.unwrap();
    let desc = &platform.manifest.layers()[0];
    let toc = desc.annotations().as_ref().unwrap()[TOC_DIGEST_ANNOTATION]
        .parse()
        .unwrap();
    let pool = BlobPool::spawn(registry.clone(), target.clone(), Some(creds));
    let source: Arc<dyn RangeSource> =
        Arc::new(pool.blob(desc.digest().to_string().parse().unwrap(), desc.size()));
    let layer = Layer::open_with(source, &toc, FETCH_DEADLINE)
        .await
        .unwrap();
    let seen = Arc::new(Seen::default());
    let reader = Arc::new(Reader::new(layer, seen.clone()));
    reader.prefetch().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mounted = Mounted::mount(reader.clone(), &dir.path().join("0"), IDS).unwrap();
    (reg, dir, mounted, reader, seen)
}

/// Runs `f` off the async threads (the mount's reads are answered on them).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mounted_layer_reads_as_files_fetching_only_what_is_read() {
    let encoder = Encoder {
        chunk_size: CHUNK,
        prefetch: Some(2),
        tamper: None,
    };
    let (_reg, _dir, m, _reader, seen) = mounted(encoder).await;
    let root = m.dir().to_owned();
    assert!(
        seen.prefetched.load(Ordering::SeqCst) > 0,
        "bin/app is prefetched"
    );
    assert_eq!(seen.on_demand.load(Ordering::SeqCst), 0, "nothing read yet");

    let r = root.clone();
    let (app, link, meta, meta2, target) = blocking(move || {
        (
            std::fs::read(r.join("bin/app")).unwrap(),
            std::fs::read(r.join("bin/app2")).unwrap(),
            std::fs::metadata(r.join("bin/app")).unwrap(),
            std::fs::metadata(r.join("bin/app2")).unwrap(),
            std::fs::read_link(r.join("bin/sh")).unwrap(),
        )
    })
    .await;
    assert_eq!(app, b"#!/bin/sh\necho lazily\n");
    assert_eq!(link, app);
    assert_eq!(meta.ino(), meta2.ino(), "a hard link is the same inode");
    assert_eq!(meta.nlink(), 2);
    assert_eq!(meta.mode() & 0o7777, 0o755);
    assert_eq!(
        (meta.uid(), meta.gid()),
        (100_000, 100_000),
        "owners shifted"
    );
    assert_eq!(target.to_str(), Some("/bin/busybox"));
    assert_eq!(
        seen.on_demand.load(Ordering::SeqCst),
        0,
        "the prefetched file came from the prefetch"
    );

    // 100 kB from the middle of the 1 MiB file: only the chunks holding them.
    let r = root.clone();
    let got = blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(r.join("data/big.bin")).unwrap();
        let mut buf = vec![0; 100_000];
        f.read_exact_at(&mut buf, 5 * CHUNK as u64 + 30_000)
            .unwrap();
        buf
    })
    .await;
    let data = big();
    assert_eq!(got, data[5 * CHUNK + 30_000..5 * CHUNK + 130_000]);
    let chunks = seen.chunks.load(Ordering::SeqCst);
    assert!(
        (2..=6).contains(&chunks),
        "{chunks} chunks fetched of 16 (the two read, and the kernel's readahead)"
    );
    let r = root.clone();
    let whole = blocking(move || std::fs::read(r.join("data/big.bin")).unwrap()).await;
    assert_eq!(whole, data);
    assert_eq!(seen.chunks.load(Ordering::SeqCst), 16, "each chunk once");

    // Whiteouts as overlayfs reads them.
    let r = root.clone();
    let (wh, opaque, listing) = blocking(move || {
        (
            std::fs::symlink_metadata(r.join("etc/passwd")).unwrap(),
            rustix::fs::getxattr(r.join("var"), "trusted.overlay.opaque", &mut [0u8; 8]),
            std::fs::read_dir(r.join("var"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect::<Vec<_>>(),
        )
    })
    .await;
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "{wh:?}");
    assert_eq!(opaque.ok(), Some(1), "var is opaque");
    assert_eq!(listing, ["kept"], "the marker itself is not listed");
    assert!(seen.failed.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_altered_chunk_fails_its_read_with_eio_and_says_which() {
    let encoder = Encoder {
        chunk_size: CHUNK,
        prefetch: None,
        tamper: Some(("data/big.bin".into(), 3)),
    };
    let (_reg, _dir, m, _reader, seen) = mounted(encoder).await;
    let file = m.dir().join("data/big.bin");
    let (before, altered, after) = blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(&file).unwrap();
        let mut buf = vec![0; CHUNK];
        let before = f.read_exact_at(&mut buf, 0).map(|_| buf.clone());
        let altered = f.read_exact_at(&mut buf, 3 * CHUNK as u64 + 10);
        let after = f
            .read_exact_at(&mut buf, 8 * CHUNK as u64)
            .map(|_| buf.clone());
        (before, altered, after)
    })
    .await;
    let data = big();
    assert_eq!(before.unwrap(), data[..CHUNK], "chunk 0 reads");
    assert_eq!(after.unwrap(), data[8 * CHUNK..9 * CHUNK], "chunk 8 reads");
    let e = altered.expect_err("the altered chunk is refused");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let failed = seen.failed.lock().unwrap().clone();
    assert!(
        failed
            .iter()
            .any(|f| f.contains("chunk at 196608 of data/big.bin") && f.contains("chunkDigest")),
        "{failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_made_local_reads_from_its_directory_without_the_registry() {
    let encoder = Encoder {
        chunk_size: CHUNK,
        prefetch: None,
        tamper: None,
    };
    let (reg, dir, m, reader, seen) = mounted(encoder).await;
    // Where the background pull unpacked the layer (written here as it would be).
    let local = dir.path().join("local");
    std::fs::create_dir_all(local.join("data")).unwrap();
    std::fs::write(local.join("data/big.bin"), big()).unwrap();
    reader.go_local(local);
    drop(reg);
    let file = m.dir().join("data/big.bin");
    let got = blocking(move || std::fs::read(file).unwrap()).await;
    assert_eq!(got, big(), "read with the registry gone");
    assert_eq!(seen.chunks.load(Ordering::SeqCst), 0, "no chunk fetched");
    assert!(reader.is_local());
}

/// The TOC is the image author's claim, the unpacked tar another: made local,
/// a chunk whose local bytes differ from its `chunkDigest` is still refused,
/// and a path the tar made a symlink (`data` -> `/etc` here) is not followed
/// out of the layer: no host file is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_made_local_still_checks_chunks_and_follows_no_symlink() {
    let encoder = Encoder {
        chunk_size: CHUNK,
        prefetch: None,
        tamper: None,
    };
    let (_reg, dir, m, reader, seen) = mounted(encoder).await;
    let local = dir.path().join("local");
    std::fs::create_dir_all(local.join("data")).unwrap();
    let mut altered = big();
    altered[3 * CHUNK] ^= 0xff;
    std::fs::write(local.join("data/big.bin"), &altered).unwrap();
    reader.go_local(local.clone());
    let file = m.dir().join("data/big.bin");
    let (good, bad) = blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(file).unwrap();
        let mut buf = vec![0; CHUNK];
        let good = f.read_exact_at(&mut buf, 0).map(|_| buf.clone());
        let bad = f
            .read_exact_at(&mut buf, 3 * CHUNK as u64)
            .map(|_| buf.clone());
        (good, bad)
    })
    .await;
    assert_eq!(good.unwrap(), big()[..CHUNK], "an unaltered chunk reads");
    let e = bad.expect_err("the altered local chunk is refused");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");

    // `data` made a symlink to a directory outside the layer.
    std::fs::remove_dir_all(local.join("data")).unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("big.bin"), big()).unwrap();
    std::os::unix::fs::symlink(&outside, local.join("data")).unwrap();
    let file = m.dir().join("data/big.bin");
    let read = blocking(move || {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(file).unwrap();
        let mut buf = vec![0; CHUNK];
        f.read_exact_at(&mut buf, 5 * CHUNK as u64).map(|_| buf)
    })
    .await;
    let e = read.expect_err("a symlinked path is not followed");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    let failed = seen.failed.lock().unwrap().clone();
    assert!(
        failed
            .iter()
            .any(|f| f.contains("chunk at 196608 of data/big.bin")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|f| f.contains("data/big.bin") && f.contains("symbolic link")),
        "{failed:?}"
    );
}

/// An eStargz blob is gzip members back to back (one per chunk, the TOC's last):
/// the full pull's unpacker reads every member, not only the first.
#[test]
fn an_estargz_layer_unpacks_in_full_like_any_gzip_layer() {
    let layer = Encoder {
        chunk_size: CHUNK,
        prefetch: Some(2),
        tamper: None,
    }
    .encode(&entries());
    let root = tempfile::tempdir().unwrap();
    berth_runtime::unpack::apply_layer(
        &layer.blob[..],
        berth_runtime::unpack::Compression::Gzip,
        root.path(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(root.path().join("data/big.bin")).unwrap(),
        big()
    );
    assert_eq!(
        std::fs::read(root.path().join("bin/app")).unwrap(),
        b"#!/bin/sh\necho lazily\n"
    );
}
