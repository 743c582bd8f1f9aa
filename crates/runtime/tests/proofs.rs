//! A registry that lies gets nothing from the shared cache: cached bytes are
//! reused only after a place they came from proves them, and a registry the bytes
//! never came from must serve them (downloaded and hashed) first.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::response::Response;
use berth_registry::Credentials;
use berth_runtime::proofs::Proofs;
use berth_runtime::pull::{PullError, Terms};
use berth_testkit::hostile::FakeServer;
use berth_testkit::{LocalRegistry, TestImage};
use secrecy::SecretString;

/// A registry of mallory's: serves `manifest` for any tag, the blobs it `holds`,
/// and answers `HEAD` with 200 and the right length for every blob in `claims`
/// while holding none of them (a `GET` of one is 404). Counts the `GET`s of
/// blobs it claimed.
struct Liar {
    server: FakeServer,
    claimed_gets: Arc<AtomicUsize>,
}

impl Liar {
    fn start(
        manifest: Vec<u8>,
        holds: HashMap<String, Vec<u8>>,
        claims: HashMap<String, u64>,
    ) -> Self {
        let claimed_gets = Arc::new(AtomicUsize::new(0));
        let gets = claimed_gets.clone();
        let manifest_digest = berth_types::Digest::sha256_from_bytes(
            &<sha2::Sha256 as sha2::Digest>::digest(&manifest).into(),
        )
        .to_string();
        let server = FakeServer::start(move |_| {
            axum::Router::new().fallback(move |req: Request<Body>| {
                let (manifest, manifest_digest) = (manifest.clone(), manifest_digest.clone());
                let (holds, claims, gets) = (holds.clone(), claims.clone(), gets.clone());
                async move {
                    let path = req.uri().path().to_owned();
                    let head = req.method() == Method::HEAD;
                    if path == "/v2/" {
                        return Response::new(Body::empty());
                    }
                    if path.contains("/manifests/") {
                        return Response::builder()
                            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
                            .header("docker-content-digest", manifest_digest)
                            .header("content-length", manifest.len())
                            .body(if head { Body::empty() } else { Body::from(manifest) })
                            .unwrap();
                    }
                    let digest = path.rsplit('/').next().unwrap_or_default().to_owned();
                    if let Some(bytes) = holds.get(&digest) {
                        return Response::builder()
                            .header("content-length", bytes.len())
                            .header("docker-content-digest", &digest)
                            .body(if head { Body::empty() } else { Body::from(bytes.clone()) })
                            .unwrap();
                    }
                    match claims.get(&digest) {
                        Some(size) if head => Response::builder()
                            .header("content-length", *size)
                            .header("docker-content-digest", &digest)
                            .body(Body::empty())
                            .unwrap(),
                        Some(_) => {
                            gets.fetch_add(1, Ordering::SeqCst);
                            Response::builder()
                                .status(StatusCode::NOT_FOUND)
                                .body(Body::from(r#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#))
                                .unwrap()
                        }
                        None => Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Body::empty())
                            .unwrap(),
                    }
                }
            })
        });
        Liar {
            server,
            claimed_gets,
        }
    }

    /// Mallory's project pulls `mallory/app:v1` from this registry, into the
    /// cache and image store under `dir` that alice's pull filled.
    async fn pulled_by_mallory(
        &self,
        proofs: &Proofs,
        dir: &std::path::Path,
    ) -> Result<berth_runtime::pull::Pulled, PullError> {
        common::pull_into(
            &self.server.authority(),
            "mallory/app:v1",
            None,
            ("mallory-project", proofs),
            Terms::default(),
            dir,
        )
        .await
    }
}

/// Alice's private image, pulled by her project into the cache under `dir`.
async fn alice_pulls(dir: &std::path::Path, proofs: &Proofs) -> (LocalRegistry, TestImage) {
    let reg = LocalRegistry::htpasswd(&[("alice", "alice-pass-1")]);
    let img = TestImage::build(&[("secret", b"alice's private data")], &["/secret"]);
    img.push(&reg, "alice/app:v1");
    let pulled = common::pull_into(
        &reg.authority(),
        "alice/app:v1",
        Some(Credentials::new(
            "alice",
            SecretString::from("alice-pass-1"),
        )),
        ("alice-project", proofs),
        Terms::default(),
        dir,
    )
    .await
    .unwrap();
    assert_eq!(
        common::Merged::of(&pulled).read("secret"),
        b"alice's private data"
    );
    (reg, img)
}

fn sizes(img: &TestImage, digests: &[String]) -> HashMap<String, u64> {
    digests
        .iter()
        .map(|d| (d.clone(), img.blob(d).len() as u64))
        .collect()
}

#[tokio::test]
async fn a_registry_that_answers_head_for_everything_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let proofs = Proofs::default();
    let (_reg, alice) = alice_pulls(dir.path(), &proofs).await;
    // Mallory serves alice's very manifest, and claims every blob it names.
    let (manifest, config, layers) = alice.parts();
    let mut all = layers.clone();
    all.push(config);
    let liar = Liar::start(manifest, HashMap::new(), sizes(&alice, &all));
    let stolen = liar.pulled_by_mallory(&proofs, dir.path()).await;
    match stolen {
        Err(PullError::Registry(e)) => {
            assert!(e.to_string().contains("HTTP 404 for blob sha256:"), "{e}")
        }
        Err(e) => panic!("refused, but not by the registry: {e}"),
        Ok(p) => panic!(
            "mallory got alice's image from the cache: {:?}",
            common::Merged::of(&p).read("secret")
        ),
    }
    assert!(
        liar.claimed_gets.load(Ordering::SeqCst) > 0,
        "the blobs were asked for, not taken on a HEAD"
    );
}

#[tokio::test]
async fn a_registry_serving_the_victims_layers_under_its_own_config_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let proofs = Proofs::default();
    let (_reg, alice) = alice_pulls(dir.path(), &proofs).await;
    let (alice_manifest, _, alice_layers) = alice.parts();
    // Mallory's own config (held and served honestly), stating alice's diff_ids,
    // in a manifest that names alice's layer: a new manifest digest, so no
    // unpacked image matches it, but the layer directory does.
    let own = TestImage::build_claiming(
        &[&[("mine", b"mallory's")]],
        &["/secret"],
        &alice.diff_ids(),
    );
    let (own_manifest, own_config, _) = own.parts();
    let mut m: serde_json::Value = serde_json::from_slice(&own_manifest).unwrap();
    let a: serde_json::Value = serde_json::from_slice(&alice_manifest).unwrap();
    m["layers"] = a["layers"].clone();
    let manifest = serde_json::to_vec(&m).unwrap();
    let holds = HashMap::from([(own_config.clone(), own.blob(&own_config))]);
    let liar = Liar::start(manifest, holds, sizes(&alice, &alice_layers));
    let stolen = liar.pulled_by_mallory(&proofs, dir.path()).await;
    assert!(
        matches!(stolen, Err(PullError::Registry(_))),
        "mallory's manifest reached alice's layer: {:?}",
        stolen.map(|p| p.layers)
    );
    assert!(liar.claimed_gets.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn the_same_digest_from_a_second_registry_is_downloaded_once_then_proven_there() {
    let dir = tempfile::tempdir().unwrap();
    let proofs = Proofs::default();
    let (_reg, alice) = alice_pulls(dir.path(), &proofs).await;
    // Bob's registry holds the same image, honestly (he has the bytes).
    let bobs = LocalRegistry::anonymous();
    alice.push(&bobs, "bob/app:v1");
    let pull = |project: &'static str| {
        let (authority, proofs, dir) = (bobs.authority(), &proofs, dir.path());
        async move {
            common::pull_into(
                &authority,
                "bob/app:v1",
                None,
                (project, proofs),
                Terms::default(),
                dir,
            )
            .await
            .unwrap()
        }
    };
    let first = pull("bob-project").await;
    assert!(first.reused, "the unpacked image is reused...");
    let blob_bytes: u64 = first.blobs.iter().map(|b| b.size).sum();
    assert_eq!(
        first.fetched_bytes(),
        blob_bytes,
        "...only once every blob came from bob's registry and matched its digest"
    );
    assert_eq!(
        common::Merged::of(&first).read("secret"),
        b"alice's private data"
    );
    // Bob's registry is now a place these bytes came from: another project
    // pulling from it proves them there (HEADs) and downloads nothing.
    let second = pull("carol-project").await;
    assert!(second.reused);
    assert_eq!(second.fetched_bytes(), 0);
}
