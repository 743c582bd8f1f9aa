//! Images that are bombs: refused by the caps, before download where the manifest
//! already says too much, while expanding otherwise, leaving nothing behind.

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::Path as UrlPath;
use axum::response::Response;
use axum::routing::get;
use berth_runtime::pull::{Caps, PullError, Terms};
use berth_testkit::hostile::{manifest_answer, FakeServer};
use common::pull_anonymously;
use sha2::Digest as _;

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(b)))
}

/// A registry serving one image of these layers (zstd), its config declared as
/// `config_size` when given; records every blob request.
fn serve(
    layers: Vec<Vec<u8>>,
    tars: Vec<Vec<u8>>,
    config_size: Option<u64>,
) -> (FakeServer, Arc<Mutex<Vec<String>>>) {
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/x"]},
        "rootfs": {"type": "layers", "diff_ids": tars.iter().map(|t| sha(t)).collect::<Vec<_>>()}
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config_size.unwrap_or(config.len() as u64)},
        "layers": layers.iter().map(|l| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": sha(l), "size": l.len()})).collect::<Vec<_>>()
    })
    .to_string()
    .into_bytes();
    let mut blobs: Vec<(String, Vec<u8>)> = vec![(sha(&config), config)];
    blobs.extend(layers.into_iter().map(|l| (sha(&l), l)));
    let hits: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = hits.clone();
    let digest = sha(&manifest);
    let server = FakeServer::start(move |_| {
        axum::Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route(
                "/v2/app/manifests/{reference}",
                get(move || async move { manifest_answer(manifest, digest) }),
            )
            .route(
                "/v2/app/blobs/{digest}",
                get(move |UrlPath(d): UrlPath<String>| {
                    seen.lock().unwrap().push(d.clone());
                    let b = blobs.iter().find(|(x, _)| *x == d).map(|(_, b)| b.clone());
                    async move { Response::new(Body::from(b.unwrap_or_default())) }
                }),
            )
    });
    (server, hits)
}

/// A tar of `n` entries: empty files, or one file of `size` zero bytes.
fn tar_of(files: usize, size: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let zeros = vec![0u8; size];
    for i in 0..files {
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("f{i}"), &zeros[..]).unwrap();
    }
    b.into_inner().unwrap()
}

async fn try_pull(server: &FakeServer, caps: Caps) -> (Result<(), PullError>, tempfile::TempDir) {
    let terms = Terms {
        caps,
        ..Default::default()
    };
    let (r, dir) = pull_anonymously(&server.authority(), "app:v1", terms).await;
    (r.map(drop), dir)
}

fn rejected(r: Result<(), PullError>) -> String {
    match r {
        Err(e @ PullError::Rejected(_)) => e.to_string(),
        other => panic!("not rejected: {other:?}"),
    }
}

#[tokio::test]
async fn a_config_declared_at_4_gib_is_refused_before_download() {
    let tar = tar_of(1, 10);
    let (server, hits) = serve(
        vec![zstd::encode_all(&tar[..], 3).unwrap()],
        vec![tar],
        Some(4 << 30),
    );
    let (r, _dir) = try_pull(&server, Caps::default()).await;
    let message = rejected(r);
    assert!(
        message.contains("config is declared 4294967296 bytes"),
        "{message}"
    );
    assert!(hits.lock().unwrap().is_empty(), "nothing was downloaded");
}

#[tokio::test]
async fn a_small_zstd_layer_that_expands_past_the_budget_leaves_nothing() {
    let tar = tar_of(1, 64 << 20); // 64 MiB of zeros: a few KiB of zstd
    let layer = zstd::encode_all(&tar[..], 3).unwrap();
    assert!(layer.len() < 1 << 20);
    let (server, _) = serve(vec![layer], vec![tar], None);
    let caps = Caps {
        image_bytes: 16 << 20,
        ..Default::default()
    };
    let (r, dir) = try_pull(&server, caps).await;
    let message = rejected(r);
    assert!(
        message.contains("uncompressed size cap of 16777216"),
        "{message}"
    );
    assert!(
        common::nothing_unpacked(dir.path()),
        "the partial unpack is removed"
    );
}

#[tokio::test]
async fn a_layer_of_too_many_files_hits_the_entry_cap() {
    // The default cap is 500,000 entries per layer; a layer of a million empty
    // files hits it the same way as these 2,000 hit a cap of 1,000.
    let tar = tar_of(2_000, 0);
    let (server, _) = serve(
        vec![zstd::encode_all(&tar[..], 3).unwrap()],
        vec![tar],
        None,
    );
    let caps = Caps {
        entries: 1_000,
        ..Default::default()
    };
    let (r, dir) = try_pull(&server, caps).await;
    let message = rejected(r);
    assert!(
        message.contains("entry count cap of 1000 per layer"),
        "{message}"
    );
    assert!(common::nothing_unpacked(dir.path()));
}
