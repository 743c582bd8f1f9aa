//! Shared by the runtime's integration tests.
#![allow(dead_code)]

use berth_registry::open::Unobserved;
use berth_registry::{open, NetworkPolicy, Registry, TokenReuse};
use berth_runtime::cache::BlobCache;
use berth_runtime::proofs::{Access, Proofs};
use berth_runtime::pull::{pull, PullError, Pulled, Terms};
use berth_runtime::rootfs::ImageStore;

/// Pulls `image` anonymously from the (plain HTTP, loopback) registry at `url` into
/// a fresh cache and image store on `terms`; the directory holds both.
pub async fn pull_anonymously(
    url: &str,
    image: &str,
    terms: Terms,
) -> (Result<Pulled, PullError>, tempfile::TempDir) {
    let registry = Registry::new(NetworkPolicy::from_lists("127.0.0.1/32", url).unwrap()).unwrap();
    let target = registry
        .target(&url.parse().unwrap(), &image.parse().unwrap())
        .unwrap();
    let mut s = open(
        &registry,
        &target,
        None,
        TokenReuse::Cached,
        &mut Unobserved,
    )
    .await
    .unwrap();
    let platform = s.platform_manifest().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = BlobCache::open(dir.path().join("blobs")).unwrap();
    let images = ImageStore::open(dir.path().join("images")).unwrap();
    let proofs = Proofs::default();
    let access = Access {
        proofs: &proofs,
        project: "p1",
    };
    let r = pull(
        &mut s,
        &platform,
        terms,
        access,
        &cache,
        &images,
        &Default::default(),
    )
    .await;
    (r, dir)
}
