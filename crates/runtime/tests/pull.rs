//! Pulling from the real registry into the cache and the unpacked-image store.

mod common;

use berth_registry::open::Unobserved;
use berth_registry::{
    manifest, open, Credentials, NetworkPolicy, Registry, RegistryError, TokenReuse,
};
use berth_runtime::cache::BlobCache;
use berth_runtime::proofs::{Access, Proofs};
use berth_runtime::pull::{pull, Terms};
use berth_runtime::rootfs::ImageStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_testkit::hostile::{manifest_answer, FakeServer};
use berth_testkit::{LocalRegistry, TestImage};
use common::pull_anonymously;
use secrecy::SecretString;

#[tokio::test]
async fn pull_applies_layers_in_order_and_reuses_the_cache() {
    let reg = LocalRegistry::htpasswd(&[("alice", "alice-pass-1")]);
    let img = TestImage::build_layers(
        &[
            &[("a", b"first"), ("b", b"to be removed")],
            &[(".wh.b", b""), ("c", b"second")],
        ],
        &["/c"],
    );
    img.push(&reg, "team/app:v1");
    berth_testkit::push_index(
        &reg,
        "team/multi:v1",
        &[("linux", "arm64"), ("linux", "amd64")],
    );
    berth_testkit::push_index(&reg, "team/arm:v1", &[("linux", "arm64")]);

    let url = reg.authority();
    let registry = Registry::new(NetworkPolicy::from_lists("127.0.0.1/32", &url).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path().join("blobs")).unwrap();
    let images = ImageStore::open(dir.path().join("images")).unwrap();

    let target = registry
        .target(&url.parse().unwrap(), &"team/app:v1".parse().unwrap())
        .unwrap();
    let creds = Some(Credentials::new(
        "alice",
        SecretString::from("alice-pass-1"),
    ));
    let mut s = open(
        &registry,
        &target,
        creds.clone(),
        TokenReuse::Cached,
        &mut Unobserved,
    )
    .await
    .unwrap();
    let platform = s.platform_manifest().await.unwrap();

    let proofs = Proofs::default();
    let access = Access {
        proofs: &proofs,
        project: "p1",
    };
    let progress = berth_runtime::pull::Progress::default();
    let first = pull(
        &mut s,
        &platform,
        Terms::default(),
        access,
        &cache,
        &images,
        &progress,
    )
    .await
    .unwrap();
    // The watcher's view: the config downloaded, every layer downloaded and applied.
    let states: Vec<_> = progress
        .snapshot()
        .into_iter()
        .map(|b| (b.state, b.received == b.size))
        .collect();
    use berth_runtime::pull::BlobState::*;
    assert_eq!(
        states,
        vec![(Downloaded, true), (Applied, true), (Applied, true)]
    );
    let root1 = common::Merged::of(&first);
    assert!(!first.reused);
    assert_eq!(root1.read("a"), b"first");
    assert_eq!(root1.read("c"), b"second");
    assert!(!root1.exists("b"), "the whiteout hides b");
    assert_eq!(first.blobs.len(), 3);
    assert!(first.fetched_bytes() > 0);
    assert_eq!(
        first
            .config
            .config()
            .as_ref()
            .unwrap()
            .cmd()
            .as_ref()
            .unwrap(),
        &vec!["/c".to_string()]
    );

    // A second deploy of the same image fetches no blob and unpacks nothing.
    let second = pull(
        &mut s,
        &platform,
        Terms::default(),
        access,
        &cache,
        &images,
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(second.reused);
    assert_eq!(second.fetched_bytes(), 0);

    // Another project has no proof yet: the unpacked image is reused only once
    // the registry answered its HEADs (one per blob, in parallel).
    let other = Access {
        proofs: &proofs,
        project: "p2",
    };
    let third = pull(
        &mut s,
        &platform,
        Terms::default(),
        other,
        &cache,
        &images,
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(third.reused);
    assert_eq!(proofs.len(), 6, "p2 has its own proofs");
    proofs.forget_project("p2");
    assert_eq!(proofs.len(), 3);
    assert!(second.blobs.iter().all(|b| b.took.is_none()));
    assert_eq!(common::Merged::of(&second).read("c"), b"second");

    // An index: the host platform's manifest is pulled; without one, a clear error.
    for (image, ok) in [("team/multi:v1", true), ("team/arm:v1", false)] {
        let target = registry
            .target(&url.parse().unwrap(), &image.parse().unwrap())
            .unwrap();
        let opened = open(
            &registry,
            &target,
            creds.clone(),
            TokenReuse::Cached,
            &mut Unobserved,
        )
        .await;
        let pulled = match opened {
            Ok(mut s) => {
                let platform = s.platform_manifest().await.unwrap();
                let index = s.resolved.digest.clone();
                pull(
                    &mut s,
                    &platform,
                    Terms::default(),
                    access,
                    &cache,
                    &images,
                    &Default::default(),
                )
                .await
                .map(|p| (p, index))
                .map_err(|e| e.to_string())
            }
            Err(e) => Err(match e {
                RegistryError::NoPlatform { wanted, available } => {
                    assert_eq!(wanted, manifest::host_platform());
                    assert_eq!(available, vec!["linux/arm64"]);
                    "no platform".to_owned()
                }
                other => other.to_string(),
            }),
        };
        match (pulled, ok) {
            (Ok((p, index)), true) => {
                assert_ne!(p.manifest, index, "the platform manifest, not the index");
                assert_eq!(
                    common::Merged::of(&p).read("platform"),
                    manifest::host_platform().as_bytes()
                );
            }
            (Err(e), false) if e == "no platform" => {}
            (other, _) => panic!("{image}: {:?}", other.map(|(p, _)| p.manifest)),
        }
    }
}

/// A registry whose connection drops halfway through the biggest blob, once, and
/// which honours `Range`: the quirk no real registry here shows on demand.
fn breaking_registry(layout: std::path::PathBuf, ranges: Arc<Mutex<Vec<String>>>) -> FakeServer {
    use axum::body::Body;
    use axum::extract::Path as UrlPath;
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::Response;
    use axum::routing::get;

    let broke = Arc::new(AtomicBool::new(false));
    let read = berth_testkit::layout_blob;
    let (l1, l2) = (layout.clone(), layout);
    FakeServer::start(move |_| {
        axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/v2/team/app/manifests/{reference}",
                get(move |UrlPath(reference): UrlPath<String>| async move {
                    let body = read(&l1, &reference).unwrap();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    Response::builder()
                        .header(header::CONTENT_TYPE, v["mediaType"].as_str().unwrap())
                        .header("docker-content-digest", reference)
                        .body(Body::from(body))
                        .unwrap()
                }),
            )
            .route(
                "/v2/team/app/blobs/{digest}",
                get(
                    move |UrlPath(digest): UrlPath<String>, headers: HeaderMap| async move {
                        let data = read(&l2, &digest).unwrap();
                        let len = data.len();
                        if let Some(r) = headers.get(header::RANGE) {
                            let r = r.to_str().unwrap().to_owned();
                            ranges.lock().unwrap().push(r.clone());
                            let from: usize = r
                                .trim_start_matches("bytes=")
                                .trim_end_matches('-')
                                .parse()
                                .unwrap();
                            return Response::builder()
                                .status(StatusCode::PARTIAL_CONTENT)
                                .header(
                                    header::CONTENT_RANGE,
                                    format!("bytes {from}-{}/{len}", len - 1),
                                )
                                .body(Body::from(data[from..].to_vec()))
                                .unwrap();
                        }
                        if len > 1_000_000 && !broke.swap(true, Ordering::SeqCst) {
                            let half = data[..len / 2].to_vec();
                            let parts: Vec<Result<Vec<u8>, std::io::Error>> =
                                vec![Ok(half), Err(std::io::Error::other("connection dropped"))];
                            return Response::builder()
                                .header(header::CONTENT_LENGTH, len)
                                .body(Body::from_stream(futures_util::stream::iter(parts)))
                                .unwrap();
                        }
                        Response::new(Body::from(data))
                    },
                ),
            )
    })
}

#[tokio::test]
async fn a_download_that_breaks_is_resumed_with_range() {
    // Random (xorshift) so that the layer stays big once compressed.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let img = TestImage::build(&[("big.bin", &big)], &["/big.bin"]);
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let server = breaking_registry(img.layout().to_owned(), ranges.clone());
    let image = format!("team/app@{}", img.digest);
    let (pulled, _dir) = pull_anonymously(&server.authority(), &image, Terms::default()).await;
    let pulled = pulled.unwrap();
    assert_eq!(common::Merged::of(&pulled).read("big.bin"), big);
    let ranges = ranges.lock().unwrap().clone();
    assert_eq!(ranges.len(), 1, "{ranges:?}");
    let from: u64 = ranges[0]
        .trim_start_matches("bytes=")
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0, "resumed from where it broke: {ranges:?}");
}

/// A blob that sends a little and then nothing: the pull fails once no byte came
/// for the stall timeout, naming the blob, the bytes received and the registry.
#[tokio::test]
async fn a_stalled_blob_fails_after_the_stall_timeout() {
    use axum::body::Body;
    use axum::extract::Path as UrlPath;
    use axum::http::header;
    use axum::response::Response;
    use axum::routing::get;
    let img = TestImage::build(&[("f", &[7u8; 50_000])], &["/f"]);
    let (manifest, config_digest, layers) = img.parts();
    let blobs = [(config_digest.clone(), img.blob(&config_digest))];
    let layer = img.blob(&layers[0]);
    let digest = img.digest.clone();
    let server = FakeServer::start(move |_| {
        axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/v2/team/app/manifests/{reference}",
                get(move || async move { manifest_answer(manifest, digest) }),
            )
            .route(
                "/v2/team/app/blobs/{digest}",
                get(move |UrlPath(d): UrlPath<String>| async move {
                    if let Some((_, b)) = blobs.iter().find(|(c, _)| *c == d) {
                        return Response::new(Body::from(b.clone()));
                    }
                    let first: Result<Vec<u8>, std::io::Error> = Ok(layer[..100].to_vec());
                    let stream = futures_util::StreamExt::chain(
                        futures_util::stream::iter(vec![first]),
                        futures_util::stream::pending(),
                    );
                    Response::builder()
                        .header(header::CONTENT_LENGTH, layer.len())
                        .body(Body::from_stream(stream))
                        .unwrap()
                }),
            )
    });
    let url = server.authority();
    let started = std::time::Instant::now();
    let (r, dir) = pull_anonymously(
        &url,
        "team/app:v1",
        Terms {
            stall: std::time::Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await;
    let err = r.expect_err("stalled");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let text = err.to_string();
    assert!(
        text.contains("stalled") && text.contains("after 100 of") && text.contains(&url),
        "{text}"
    );
    assert!(
        common::nothing_unpacked(dir.path()),
        "the partial unpack is gone"
    );
}

/// Every file in the blob cache is a whole blob whose bytes hash to its name: no
/// partial download was ever published.
fn only_whole_blobs(cache: &std::path::Path) -> usize {
    use sha2::Digest as _;
    let mut n = 0;
    for e in std::fs::read_dir(cache.join("sha256")).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            hex::encode(sha2::Sha256::digest(&data)),
            name,
            "a partial blob was published"
        );
        n += 1;
    }
    n
}

/// A real registry (docker-registry behind a proxy that passes 1 MB/s, so that it
/// can die mid-blob) killed while a 3 MB layer downloads: revived within the stall
/// timeout, the pull goes on where it broke and completes; left dead, the pull
/// fails saying the registry stopped answering, and the cache holds whole blobs only.
#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_dies_mid_pull_is_resumed_or_fails_cleanly() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let big: Vec<u8> = (0..3_000_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let img = TestImage::build(&[("big.bin", &big)], &["/big.bin"]);
    let mut registry = LocalRegistry::anonymous();
    img.push(&registry, "team/app:v1");
    let proxy = berth_testkit::hostile::Throttle::start(&registry.authority(), 1_000_000);
    let terms = Terms {
        stall: std::time::Duration::from_secs(6),
        ..Default::default()
    };

    // Dies after a second, back two seconds later.
    let url = proxy.authority();
    let pulling = tokio::spawn(async move { pull_anonymously(&url, "team/app:v1", terms).await });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    registry.kill();
    proxy.sever();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    registry.revive();
    let (r, dir) = pulling.await.unwrap();
    let pulled = r.expect("resumed once the registry came back");
    assert_eq!(common::Merged::of(&pulled).read("big.bin"), big);
    // The config is kept; the layer went straight into its unpacked directory.
    assert_eq!(only_whole_blobs(&dir.path().join("blobs")), 1);

    // Dies for good: a clear failure once no byte came for the stall timeout.
    let url = proxy.authority();
    let pulling = tokio::spawn(async move { pull_anonymously(&url, "team/app:v1", terms).await });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    registry.kill();
    proxy.sever();
    let (r, dir) = pulling.await.unwrap();
    let text = r.expect_err("the registry is gone").to_string();
    assert!(
        text.contains("stalled: no byte for 6 s")
            && text.contains("the registry stopped answering"),
        "{text}"
    );
    assert!(
        text.contains(&proxy.authority()),
        "names the registry: {text}"
    );
    assert!(
        only_whole_blobs(&dir.path().join("blobs")) <= 1,
        "only the config"
    );
    assert!(
        common::nothing_unpacked(dir.path()),
        "the partial unpack is gone"
    );
}

/// A tenant whose image's config claims another tenant's diff_ids gets its own
/// layers: an unpacked layer is found by the blob it came from (which the tenant's
/// registry proves it may have), never by the diff_ids an image states.
#[tokio::test]
async fn a_lying_config_never_reaches_another_tenants_layers() {
    let alice_reg = LocalRegistry::htpasswd(&[("alice", "alice-pass-1")]);
    let secret = TestImage::build(&[("secret", b"alice's private data")], &["/secret"]);
    secret.push(&alice_reg, "alice/app:v1");
    // Mallory learned the digest of alice's layer (a diff_id is only a hash) and
    // states it for a layer of her own, on her own registry.
    let liar =
        TestImage::build_claiming(&[&[("mine", b"mallory's")]], &["/mine"], &secret.diff_ids());
    let mallory_reg = LocalRegistry::anonymous();
    liar.push(&mallory_reg, "mallory/app:v1");

    let dir = tempfile::tempdir().unwrap();
    let proofs = Proofs::default();
    let alice = common::pull_into(
        &alice_reg.authority(),
        "alice/app:v1",
        Some(Credentials::new(
            "alice",
            SecretString::from("alice-pass-1"),
        )),
        ("alice-project", &proofs),
        Terms::default(),
        dir.path(),
    )
    .await
    .unwrap();
    assert_eq!(
        common::Merged::of(&alice).read("secret"),
        b"alice's private data"
    );

    let mallory = common::pull_into(
        &mallory_reg.authority(),
        "mallory/app:v1",
        None,
        ("mallory-project", &proofs),
        Terms::default(),
        dir.path(),
    )
    .await
    .unwrap();
    assert!(!mallory.reused);
    assert!(
        mallory.fetched_bytes() > 0,
        "her layer was downloaded, not found"
    );
    let root = common::Merged::of(&mallory);
    assert!(!root.exists("secret"), "alice's layer reached mallory");
    assert_eq!(root.read("mine"), b"mallory's");
    assert_ne!(alice.layers, mallory.layers);
}
