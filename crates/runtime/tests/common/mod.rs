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
    let dir = tempfile::tempdir().unwrap();
    let proofs = Proofs::default();
    let r = pull_into(url, image, None, ("p1", &proofs), terms, dir.path()).await;
    (r, dir)
}

/// Pulls `image` from the (plain HTTP, loopback) registry at `url` with `creds`,
/// for a project (its name and the proofs it shares with others), into the cache
/// and image store under `dir` (shared by the pulls given the same one).
pub async fn pull_into(
    url: &str,
    image: &str,
    creds: Option<berth_registry::Credentials>,
    (project, proofs): (&str, &Proofs),
    terms: Terms,
    dir: &std::path::Path,
) -> Result<Pulled, PullError> {
    let registry = Registry::new(NetworkPolicy::from_lists("127.0.0.1/32", url).unwrap()).unwrap();
    let target = registry
        .target(&url.parse().unwrap(), &image.parse().unwrap())
        .unwrap();
    let mut s = open(
        &registry,
        &target,
        creds,
        TokenReuse::Cached,
        &mut Unobserved,
    )
    .await
    .unwrap();
    let platform = s.platform_manifest().await.unwrap();
    let cache = BlobCache::open(dir.join("blobs")).unwrap();
    let images = ImageStore::open(dir.join("images")).unwrap();
    let access = Access { proofs, project };
    pull(
        &mut s,
        &platform,
        terms,
        access,
        &cache,
        &images,
        &Default::default(),
    )
    .await
}

/// The root filesystem a deployment of `pulled` sees: its layers stacked (an
/// overlay, as a deployment gets it), unmounted on drop.
pub struct Merged {
    bundle: tempfile::TempDir,
}

impl Merged {
    pub fn of(pulled: &Pulled) -> Self {
        let bundle = tempfile::tempdir().unwrap();
        berth_runtime::rootfs::prepare(
            &pulled.layers,
            bundle.path(),
            berth_runtime::unpack::IdShift::NONE,
        )
        .unwrap();
        Merged { bundle }
    }

    pub fn read(&self, path: &str) -> Vec<u8> {
        std::fs::read(self.bundle.path().join("rootfs").join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub fn exists(&self, path: &str) -> bool {
        self.bundle.path().join("rootfs").join(path).exists()
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        berth_runtime::rootfs::remove(self.bundle.path());
    }
}

/// Nothing unpacked is left in the image store at `dir/images`: no image, no
/// layer, no half-done layer.
pub fn nothing_unpacked(dir: &std::path::Path) -> bool {
    let images = dir.join("images");
    let entries = |p: std::path::PathBuf| {
        std::fs::read_dir(p)
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut left: Vec<_> = entries(images.clone())
        .into_iter()
        .filter(|p| !p.ends_with("layers"))
        .collect();
    for shift in entries(images.join("layers")) {
        left.extend(entries(shift));
    }
    left.is_empty()
}
