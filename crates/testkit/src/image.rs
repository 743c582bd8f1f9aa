//! Images built in the tests: an OCI image layout written here (gzip layer, config,
//! manifest), pushed to a [`LocalRegistry`] with `skopeo`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use flate2::write::GzEncoder;
use serde_json::json;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::registry::LocalRegistry;
use crate::require;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An OCI image layout on disk holding one tagged manifest (or index).
pub struct TestImage {
    dir: TempDir,
    /// The digest of what `latest` points at in the layout.
    pub digest: String,
}

/// A blob written into a layout: (digest, size).
pub(crate) fn write_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let hex = hex::encode(Sha256::digest(data));
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len() as u64)
}

/// Writes one platform's image (layer, config, manifest) and returns the manifest
/// descriptor parts (digest, size).
fn write_image(
    layout: &Path,
    files: &[(&str, &[u8])],
    cmd: &[&str],
    os: &str,
    arch: &str,
) -> (String, u64) {
    write_layered(layout, &[files], cmd, os, arch, None)
}

/// Writes one gzip layer; returns (layer digest, size, diff_id).
fn write_layer(layout: &Path, files: &[(&str, &[u8])]) -> (String, u64, String) {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.finish().unwrap();
    }
    let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar_bytes)));
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar_bytes).unwrap();
    let layer = gz.finish().unwrap();
    let (layer_digest, layer_size) = write_blob(layout, &layer);
    (layer_digest, layer_size, diff_id)
}

fn write_layered(
    layout: &Path,
    layers: &[&[(&str, &[u8])]],
    cmd: &[&str],
    os: &str,
    arch: &str,
    claimed_diff_ids: Option<&[String]>,
) -> (String, u64) {
    let written: Vec<(String, u64, String)> = layers
        .iter()
        .map(|files| write_layer(layout, files))
        .collect();
    let diff_ids: Vec<&String> = match claimed_diff_ids {
        Some(claimed) => claimed.iter().collect(),
        None => written.iter().map(|(_, _, d)| d).collect(),
    };
    let config = json!({
        "architecture": arch,
        "os": os,
        "config": {"Cmd": cmd, "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "berth-testkit"}]
    });
    let (config_digest, config_size) = write_blob(layout, config.to_string().as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": written.iter().map(|(d, s, _)| json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s})).collect::<Vec<_>>()
    });
    write_blob(layout, manifest.to_string().as_bytes())
}

pub(crate) fn write_layout_index(layout: &Path, media_type: &str, digest: &str, size: u64) {
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": media_type, "digest": digest, "size": size,
                       "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
}

/// Blob `digest` (`sha256:...`) of the OCI layout at `layout`.
pub fn layout_blob(layout: &Path, digest: &str) -> std::io::Result<Vec<u8>> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
}

impl TestImage {
    /// An image from a layout written elsewhere in the testkit (`estargz`).
    pub(crate) fn from_layout(dir: TempDir, digest: String) -> Self {
        TestImage { dir, digest }
    }

    /// The OCI layout directory (`blobs/sha256/...`, `index.json`).
    pub fn layout(&self) -> &Path {
        self.dir.path()
    }

    /// One of the image's blobs (its manifest included), by digest.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        layout_blob(self.layout(), digest).expect("a blob of this image")
    }

    /// The image's manifest, its config's digest and its layers' digests: what a
    /// fake registry serves it from.
    pub fn parts(&self) -> (Vec<u8>, String, Vec<String>) {
        let manifest = self.blob(&self.digest);
        let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        let config = m["config"]["digest"].as_str().unwrap().to_owned();
        let layers = m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect();
        (manifest, config, layers)
    }

    /// A linux/amd64 image with one layer holding `files`, running `cmd`.
    pub fn build(files: &[(&str, &[u8])], cmd: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (digest, size) = write_image(dir.path(), files, cmd, "linux", "amd64");
        write_layout_index(dir.path(), OCI_MANIFEST, &digest, size);
        TestImage { dir, digest }
    }

    /// A linux/amd64 image with one layer per element of `layers`.
    pub fn build_layers(layers: &[&[(&str, &[u8])]], cmd: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (digest, size) = write_layered(dir.path(), layers, cmd, "linux", "amd64", None);
        write_layout_index(dir.path(), OCI_MANIFEST, &digest, size);
        TestImage { dir, digest }
    }

    /// A linux/amd64 image with one layer per element of `layers`, whose config
    /// claims `diff_ids` instead of the layers' own: a lying image.
    pub fn build_claiming(layers: &[&[(&str, &[u8])]], cmd: &[&str], diff_ids: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (digest, size) =
            write_layered(dir.path(), layers, cmd, "linux", "amd64", Some(diff_ids));
        write_layout_index(dir.path(), OCI_MANIFEST, &digest, size);
        TestImage { dir, digest }
    }

    /// The diff_ids the image's config states.
    pub fn diff_ids(&self) -> Vec<String> {
        let (_, config, _) = self.parts();
        let c: serde_json::Value = serde_json::from_slice(&self.blob(&config)).unwrap();
        c["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_owned())
            .collect()
    }

    /// A multi-platform index with one small image per `(os, arch)`.
    pub fn index(platforms: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifests: Vec<_> = platforms
            .iter()
            .map(|(os, arch)| {
                let marker = format!("{os}/{arch}");
                let (d, s) = write_image(dir.path(), &[("platform", marker.as_bytes())], &["/platform"], os, arch);
                json!({"mediaType": OCI_MANIFEST, "digest": d, "size": s, "platform": {"os": os, "architecture": arch}})
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
        let (digest, size) = write_blob(dir.path(), index.to_string().as_bytes());
        write_layout_index(dir.path(), OCI_INDEX, &digest, size);
        TestImage { dir, digest }
    }

    /// Pushes the image as `repo:tag` with the registry's admin credentials.
    pub fn push(&self, reg: &LocalRegistry, repo_tag: &str) {
        let skopeo = require("skopeo");
        let mut cmd = Command::new(skopeo);
        cmd.args([
            "--insecure-policy",
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        if !reg.admin.0.is_empty() {
            cmd.arg(format!("--dest-creds={}:{}", reg.admin.0, reg.admin.1));
        }
        cmd.arg(format!("oci:{}:latest", self.dir.path().display()))
            .arg(format!("docker://{}/{repo_tag}", reg.authority()));
        for v in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(v);
        }
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {repo_tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Builds and pushes an index for `platforms`; returns its digest.
pub fn push_index(reg: &LocalRegistry, repo_tag: &str, platforms: &[(&str, &str)]) -> String {
    let img = TestImage::index(platforms);
    img.push(reg, repo_tag);
    img.digest.clone()
}
