//! Deploy speed: berth's deploy (POST to DEPLOYED) of a 1 GiB image of 5 layers of
//! random data, against containerd's `ctr images pull` of the same image from the
//! same local registry (containerd started here on a private socket and root), and
//! berth's cached redeploy. Prints figures; asserts nothing about time.
//!
//! Run: `cargo bench -p berth-server --bench deploy` (needs docker-registry, skopeo,
//! runc, busybox-static and containerd from Debian's packages).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::{require, LocalRegistry};
use serde_json::json;
use sha2::{Digest, Sha256};

const LAYERS: usize = 5;
const LAYER_BYTES: usize = (1 << 30) / LAYERS;

fn blob(layout: &Path, data: &[u8]) -> (String, usize) {
    let hex = hex::encode(Sha256::digest(data));
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(layout.join("blobs/sha256").join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len())
}

/// An OCI layout with 5 uncompressed layers of random data (random data does not
/// compress; plain tar keeps the comparison about transfer, hashing and unpacking).
fn build_layout(layout: &Path) {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for i in 0..LAYERS {
        let mut data = vec![0u8; LAYER_BYTES];
        let mut seed = 0x9E3779B97F4A7C15u64 ^ i as u64;
        for chunk in data.chunks_mut(8) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        let mut b = tar::Builder::new(Vec::with_capacity(LAYER_BYTES + 4096));
        let mut add = |name: &str, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, bytes).unwrap();
        };
        if i == 0 {
            add("bin/busybox", &busybox);
        }
        add(&format!("data/layer{i}.bin"), &data);
        let tar = b.into_inner().unwrap();
        let (d, s) = blob(layout, &tar);
        diff_ids.push(d.clone());
        layers.push(
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s}),
        );
    }
    let config = json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sleep", "3600"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cs) = blob(layout, config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers});
    let (md, ms) = blob(layout, manifest.to_string().as_bytes());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
}

async fn berth_deploy(reg: &LocalRegistry, dir: &Path) -> (Duration, Duration) {
    let url = reg.authority();
    let config = berth_server::Config {
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}?mode=rwc", dir.join("berth.db").display()),
        master_key: None,
        registry: berth_registry::NetworkPolicy::from_lists("127.0.0.1/32", &url).unwrap(),
        vault: Default::default(),
        advertise_url: None,
        sandbox: Default::default(),
        deploys: Default::default(),
    };
    let running = berth_server::start(config).await.unwrap();
    let base = format!("http://{}", running.addr);
    let token = std::fs::read_to_string(dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    post("/v1/projects", json!({"name": "bench"}))
        .await
        .unwrap();
    let r = post(
        "/v1/projects/bench/services",
        json!({"name": "big", "image": "bench/big:v1",
               "registry": {"registry_url": url, "username": reg.admin.0, "password": reg.admin.1}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let mut times = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let d: serde_json::Value = post("/v1/projects/bench/services/big/deployments", json!({}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let path = format!(
            "{base}/v1/projects/bench/services/big/deployments/{}",
            d["id"].as_str().unwrap()
        );
        loop {
            let v: serde_json::Value = http
                .get(&path)
                .bearer_auth(&token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match v["status"].as_str() {
                Some("DEPLOYED") => break,
                Some("FAILED") => panic!("deploy failed: {v}"),
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        times.push(t.elapsed());
        let log = http
            .get(format!("{path}/logs"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in log.lines().filter(|l| {
            l.contains("blob")
                || l.contains("unpack")
                || l.contains("ready")
                || l.contains("started")
        }) {
            println!("  {line}");
        }
    }
    let _ = http
        .delete(format!("{base}/v1/projects/bench/services/big"))
        .bearer_auth(&token)
        .send()
        .await;
    running.stop().await;
    (times[0], times[1])
}

fn ctr_pull(reg: &LocalRegistry, dir: &Path) -> Option<Duration> {
    let containerd = ["/usr/bin/containerd", "/usr/sbin/containerd"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let sock = dir.join("containerd.sock");
    let mut cfg = std::fs::File::create(dir.join("config.toml")).unwrap();
    writeln!(cfg, "version = 2").unwrap();
    let mut daemon = Command::new(containerd)
        .arg("--config")
        .arg(dir.join("config.toml"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let ctr = require("ctr");
    let mut best = None;
    for snapshotter in ["overlayfs", "native"] {
        let t = Instant::now();
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(&sock)
            .args([
                "images",
                "pull",
                "--plain-http",
                "--snapshotter",
                snapshotter,
                "--user",
            ])
            .arg(format!("{}:{}", reg.admin.0, reg.admin.1))
            .arg(format!("{}/bench/big:v1", reg.authority()))
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .output()
            .unwrap();
        if out.status.success() {
            best = Some((t.elapsed(), snapshotter));
            break;
        }
        eprintln!(
            "ctr pull with {snapshotter} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    best.map(|(d, s)| {
        println!("(containerd snapshotter: {s})");
        d
    })
}

fn main() {
    let reg = LocalRegistry::htpasswd(&[("bench", "bench-pass-1")]);
    let work = tempfile::tempdir_in(
        std::env::var("BERTH_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into()),
    )
    .unwrap();
    let layout = work.path().join("layout");
    let t = Instant::now();
    build_layout(&layout);
    let skopeo = Command::new(require("skopeo"))
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--dest-creds=bench:bench-pass-1",
        ])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{}/bench/big:v1", reg.authority()))
        .status()
        .unwrap();
    assert!(skopeo.success());
    println!(
        "built and pushed a {} MiB image of {LAYERS} layers in {:.1} s",
        (LAYER_BYTES * LAYERS) >> 20,
        t.elapsed().as_secs_f64()
    );

    let berth_dir = work.path().join("berth");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (first, cached) = rt.block_on(berth_deploy(&reg, &berth_dir));
    let ctr_dir = work.path().join("containerd");
    std::fs::create_dir_all(&ctr_dir).unwrap();
    let ctr = ctr_pull(&reg, &ctr_dir);

    println!("{:<44} {:>10}", "", "seconds");
    println!(
        "{:<44} {:>10.2}",
        "berth deploy, first (POST to DEPLOYED)",
        first.as_secs_f64()
    );
    println!(
        "{:<44} {:>10.2}",
        "berth deploy, cached redeploy",
        cached.as_secs_f64()
    );
    match ctr {
        Some(c) => {
            println!(
                "{:<44} {:>10.2}",
                "containerd ctr images pull (pull + unpack)",
                c.as_secs_f64()
            );
            println!(
                "ratio ctr / berth first deploy: {:.2}x",
                c.as_secs_f64() / first.as_secs_f64()
            );
        }
        None => println!(
            "containerd not installed or failed: no peer figure (apt-get install containerd)"
        ),
    }
}
