//! Pulling from the real registry into the cache and the unpacked-image store.

use berth_registry::{manifest, Credentials, NetworkPolicy, Registry, TokenReuse};
use berth_runtime::cache::BlobCache;
use berth_runtime::pull::{pull, PullError};
use berth_runtime::rootfs::ImageStore;
use berth_testkit::{LocalRegistry, TestImage};
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
    let mut s = registry.session(&target, creds.clone(), TokenReuse::Cached);
    let pinged = s.ping().await.unwrap();
    s.authenticate(&pinged.challenges).await.unwrap();
    let resolved = manifest::resolve(&mut s, "v1").await.unwrap();

    let progress = berth_runtime::pull::Progress::default();
    let first = pull(&mut s, &resolved.digest, &cache, &images, &progress)
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
    let root1 = first.rootfs.clone();
    assert!(!first.reused);
    assert_eq!(std::fs::read(root1.join("a")).unwrap(), b"first");
    assert_eq!(std::fs::read(root1.join("c")).unwrap(), b"second");
    assert!(!root1.join("b").exists(), "the whiteout removed b");
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
        &resolved.digest,
        &cache,
        &images,
        &Default::default(),
    )
    .await
    .unwrap();
    assert!(second.reused);
    assert_eq!(second.fetched_bytes(), 0);
    assert!(second.blobs.iter().all(|b| b.took.is_none()));
    assert_eq!(std::fs::read(second.rootfs.join("c")).unwrap(), b"second");

    // An index: the host platform's manifest is pulled; without one, a clear error.
    for (image, ok) in [("team/multi:v1", true), ("team/arm:v1", false)] {
        let target = registry
            .target(&url.parse().unwrap(), &image.parse().unwrap())
            .unwrap();
        let mut s = registry.session(&target, creds.clone(), TokenReuse::Cached);
        let pinged = s.ping().await.unwrap();
        s.authenticate(&pinged.challenges).await.unwrap();
        let resolved = manifest::resolve(&mut s, "v1").await.unwrap();
        match (
            pull(
                &mut s,
                &resolved.digest,
                &cache,
                &images,
                &Default::default(),
            )
            .await,
            ok,
        ) {
            (Ok(p), true) => {
                assert_ne!(
                    p.manifest, resolved.digest,
                    "the platform manifest, not the index"
                );
                assert_eq!(
                    std::fs::read(p.rootfs.join("platform")).unwrap(),
                    manifest::host_platform().as_bytes()
                );
            }
            (Err(PullError::NoPlatform { wanted, available }), false) => {
                assert_eq!(wanted, manifest::host_platform());
                assert_eq!(available, vec!["linux/arm64"]);
            }
            (other, _) => panic!("{image}: {other:?}"),
        }
    }
}
