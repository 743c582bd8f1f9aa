//! Deploy speed, side by side in one run, for three images pushed to one local
//! registry (docker-registry, htpasswd auth):
//! - 1 GiB in 5 layers of random data, gzip (as most real images' big layers are:
//!   incompressible content in gzip);
//! - the same 1 GiB as plain tar layers;
//! - 300 MB in 60,000 small files over 3 gzip layers (a Node or Python app), where
//!   metadata work dominates.
//!
//! For each: berth's first deploy (POST to `DEPLOYED`, from a fresh data dir),
//! berth's cached redeploy, containerd's `ctr images pull` (fetch + unpack, a fresh
//! containerd root each time), and the floor: every blob of the image downloaded in
//! parallel and hashed, written nowhere, by berth's own registry client; and the
//! write floor: the image's files written by this process, nothing downloaded. Also the
//! server's peak RSS during the first deploy (VmHWM, reset before it). Prints
//! figures; asserts nothing about time.
//!
//! And the cached redeploy of a service with a port (`port`): busybox's httpd
//! listening at once, default flags, twenty redeploys from POST to `DEPLOYED`
//! (median, max, and the median one's log lines as ms after its POST).
//!
//! Run: `cargo bench -p berth-server --bench deploy` (needs docker-registry, skopeo,
//! runc, pasta, busybox-static and containerd from Debian's packages).
//! `BERTH_BENCH_ONLY` picks cases by name (`port`, `gzip`, `tar`, `files`).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use support::server_config;

use berth_testkit::bench::{self, rss, Api, Containerd};
use berth_testkit::{require, LocalRegistry};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Random bytes (xorshift), or text-like ones that compress about 3:1, streamed.
struct Noise {
    seed: u64,
    left: u64,
    text: bool,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let bytes = self.seed.to_le_bytes();
            for (b, r) in chunk.iter_mut().zip(bytes) {
                *b = if self.text {
                    b"etaoin shrdlu\n{}();"[r as usize % 19]
                } else {
                    r
                };
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Counts and hashes what passes.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Clone, Copy)]
struct Files {
    count: usize,
    size: u64,
    text: bool,
}

struct Spec {
    name: &'static str,
    title: &'static str,
    gzip: bool,
    layers: Vec<Files>,
}

fn specs() -> Vec<Spec> {
    let big = Files {
        count: 1,
        size: (1 << 30) / 5,
        text: false,
    };
    let small = Files {
        count: 20_000,
        size: 5_000,
        text: true,
    };
    vec![
        Spec {
            name: "gzip",
            title: "1 GiB, 5 gzip layers",
            gzip: true,
            layers: vec![big; 5],
        },
        Spec {
            name: "tar",
            title: "1 GiB, 5 plain tar layers",
            gzip: false,
            layers: vec![big; 5],
        },
        Spec {
            name: "files",
            title: "300 MB in 60,000 files, 3 gzip layers",
            gzip: true,
            layers: vec![small; 3],
        },
    ]
}

fn put_blob(layout: &Path, tmp: &Path, digest: &str) {
    let dir = layout.join("blobs/sha256");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::rename(tmp, dir.join(digest.trim_start_matches("sha256:"))).unwrap();
}

fn write_small_blob(layout: &Path, data: &[u8]) -> (String, u64) {
    let d = format!("sha256:{}", hex::encode(Sha256::digest(data)));
    let tmp = layout.join("tmp-blob");
    std::fs::write(&tmp, data).unwrap();
    put_blob(layout, &tmp, &d);
    (d, data.len() as u64)
}

/// Writes layer `i` of `spec` to `LAYOUT/tmp-layer`, streaming; returns its diff_id.
fn write_layer(layout: &Path, spec: &Spec, i: usize) -> String {
    let tmp = layout.join("tmp-layer");
    let file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp).unwrap());
    let compressed: Box<dyn Write> = if spec.gzip {
        Box::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::default(),
        ))
    } else {
        Box::new(file)
    };
    let mut tar_hash = Hashing {
        inner: compressed,
        hash: Sha256::new(),
        len: 0,
    };
    {
        let mut b = tar::Builder::new(&mut tar_hash);
        let mut add = |name: &str, size: u64, data: &mut dyn Read| {
            let mut h = tar::Header::new_gnu();
            h.set_size(size);
            h.set_mode(0o755);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        };
        if i == 0 {
            let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
            add("bin/busybox", busybox.len() as u64, &mut &busybox[..]);
        }
        let f = spec.layers[i];
        for n in 0..f.count {
            let mut noise = Noise {
                seed: 0x9E37_79B9_7F4A_7C15 ^ ((i as u64) << 32 | n as u64),
                left: f.size,
                text: f.text,
            };
            let name = if f.count == 1 {
                format!("data/layer{i}.bin")
            } else {
                format!("app/l{i}/d{}/f{n}.js", n / 500)
            };
            add(&name, f.size, &mut noise);
        }
        b.finish().unwrap();
    }
    tar_hash.flush().unwrap();
    let diff_id = format!("sha256:{}", hex::encode(tar_hash.hash.finalize()));
    // Dropping the compressor writes its trailer; the buffered file flushes.
    drop(tar_hash.inner);
    diff_id
}

/// Builds the OCI layout of `spec`; returns its total blob bytes.
fn build_layout(layout: &Path, spec: &Spec) -> u64 {
    std::fs::create_dir_all(layout).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut total = 0;
    for i in 0..spec.layers.len() {
        let diff_id = write_layer(layout, spec, i);
        // The blob was written to its temporary name: hash it for its digest.
        let tmp = layout.join("tmp-layer");
        let mut f = std::fs::File::open(&tmp).unwrap();
        let mut h = Sha256::new();
        let size = std::io::copy(&mut f, &mut h).unwrap();
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        put_blob(layout, &tmp, &digest);
        total += size;
        diff_ids.push(diff_id);
        let media_type = if spec.gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        layers.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
    }
    let config = json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/busybox", "sleep", "3600"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let (cd, cs) = write_small_blob(layout, config.to_string().as_bytes());
    let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs}, "layers": layers});
    let (md, ms) = write_small_blob(layout, manifest.to_string().as_bytes());
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    total
}

/// `user:password` of the registry's admin, as the API and `ctr` take them.
fn admin(reg: &LocalRegistry) -> (&str, &str) {
    (&reg.admin.0, &reg.admin.1)
}

/// Deploys service `service` of project `bench`, polling its deployment every
/// `poll` until it is `DEPLOYED` (panics if it failed): the deployment's path.
async fn deployed(api: &Api, service: &str, poll: Duration) -> String {
    let d: serde_json::Value = api
        .post(
            &format!("/v1/projects/bench/services/{service}/deployments"),
            json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let path = format!(
        "/v1/projects/bench/services/{service}/deployments/{}",
        d["id"].as_str().unwrap()
    );
    loop {
        let v: serde_json::Value = api.get(&path).await;
        match v["status"].as_str() {
            Some("DEPLOYED") => return path,
            Some("FAILED") => panic!("deploy failed: {v}"),
            _ => tokio::time::sleep(poll).await,
        }
    }
}

struct BerthRun {
    first: Duration,
    cached: Duration,
    rss_before: u64,
    rss_peak: u64,
}

async fn berth_deploy(reg: &LocalRegistry, dir: &Path, repo: &str) -> BerthRun {
    let url = reg.authority();
    // DEPLOYED as soon as the container runs: the start window (500 ms by
    // default, `--start-window-ms`) is a wait the operator chooses, not work.
    let config = server_config(
        &reg.authority(),
        dir,
        berth_server::DeployLimits {
            start_window: Duration::ZERO,
            ..Default::default()
        },
    );
    let running = berth_server::start(config).await.unwrap();
    let api = Api::admin(running.addr, dir);
    api.create_service("bench", "big", &format!("{repo}:v1"), &url, admin(reg))
        .await;
    // The peak from here on is the deploy's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = rss("self").0;
    let mut times = Vec::new();
    let mut rss_peak = 0;
    // The first deploy, then three cached redeploys (their median is reported: the
    // first of them can meet the write-back of the first deploy's gigabyte).
    for _ in 0..4 {
        let t = Instant::now();
        let path = deployed(&api, "big", Duration::from_millis(5)).await;
        times.push(t.elapsed());
        if rss_peak == 0 {
            rss_peak = rss("self").1;
        } else {
            println!(
                "  cached redeploy: {:.3} s",
                times.last().unwrap().as_secs_f64()
            );
            continue;
        }
        let log = api.text(&format!("{path}/logs")).await;
        for line in log.lines().filter(|l| {
            l.contains("blob")
                || l.contains("unpack")
                || l.contains("ready")
                || l.contains("started")
        }) {
            println!("  {line}");
        }
    }
    api.delete("/v1/projects/bench/services/big").await;
    running.stop().await;
    let mut cached = times[1..].to_vec();
    cached.sort();
    BerthRun {
        first: times[0],
        cached: cached[cached.len() / 2],
        rss_before,
        rss_peak,
    }
}

/// Every blob of the image, in parallel, downloaded and hashed by berth's own
/// registry client, written nowhere: what the network and the hash cost.
async fn floor(reg: &LocalRegistry, repo: &str) -> Duration {
    use berth_registry::open::Unobserved;
    use berth_registry::{Credentials, Registry, TokenReuse};
    let url = reg.authority();
    let registry =
        Registry::new(berth_registry::NetworkPolicy::from_lists("127.0.0.1/32", &url).unwrap())
            .unwrap();
    let target = registry
        .target(
            &url.parse().unwrap(),
            &format!("{repo}:v1").parse().unwrap(),
        )
        .unwrap();
    let creds = Credentials::new(reg.admin.0.clone(), reg.admin.1.clone().into());
    let t = Instant::now();
    let mut opened = berth_registry::open(
        &registry,
        &target,
        Some(creds),
        TokenReuse::Cached,
        &mut Unobserved,
    )
    .await
    .unwrap();
    let platform = opened.platform_manifest().await.unwrap();
    let mut digests = vec![platform.manifest.config().digest().to_string()];
    digests.extend(
        platform
            .manifest
            .layers()
            .iter()
            .map(|l| l.digest().to_string()),
    );
    let session = &opened.session;
    let all = digests.into_iter().map(|d| {
        let mut s = session.fork();
        async move {
            let digest: berth_types::Digest = d.parse().unwrap();
            let (mut resp, _) = berth_registry::blob::open_at(&mut s, &digest, 0)
                .await
                .unwrap();
            let mut h = Sha256::new();
            while let Some(chunk) = resp.chunk().await.unwrap() {
                h.update(&chunk);
            }
            assert_eq!(hex::encode(h.finalize()), digest.hex());
        }
    });
    futures_util::future::join_all(all).await;
    t.elapsed()
}

/// The machine's own cost of writing the image's files: every layer's files
/// written at once (one thread per layer, 1 MiB writes, no fsync) into `dir`,
/// then removed. No deploy can unpack faster than this plus what it downloads.
fn write_floor(spec: &Spec, dir: &Path) -> Duration {
    std::fs::create_dir_all(dir).unwrap();
    let t = Instant::now();
    std::thread::scope(|scope| {
        for (l, files) in spec.layers.iter().enumerate() {
            scope.spawn(move || {
                let chunk = vec![7u8; 1 << 20];
                let layer = dir.join(format!("layer{l}"));
                std::fs::create_dir_all(&layer).unwrap();
                for i in 0..files.count {
                    let mut f = std::fs::File::create(layer.join(format!("f{i}"))).unwrap();
                    let mut left = files.size as usize;
                    while left > 0 {
                        let n = left.min(chunk.len());
                        f.write_all(&chunk[..n]).unwrap();
                        left -= n;
                    }
                }
            });
        }
    });
    let took = t.elapsed();
    let _ = std::fs::remove_dir_all(dir);
    took
}

/// `ctr images pull` of `repo:v1` by a fresh containerd under `dir`: with the
/// overlayfs snapshotter, or the native one where overlayfs fails.
fn ctr_pull(reg: &LocalRegistry, dir: &Path, repo: &str) -> Option<Duration> {
    let containerd = Containerd::start(dir).ok()?;
    let reference = format!("{}/{repo}:v1", reg.authority());
    let (took, snapshotter) = ["overlayfs", "native"]
        .into_iter()
        .find_map(
            |snapshotter| match containerd.pull(&reference, admin(reg), snapshotter) {
                Ok(took) => Some((took, snapshotter)),
                Err(e) => {
                    eprintln!("with the {snapshotter} snapshotter, {e}");
                    None
                }
            },
        )?;
    println!("  (containerd snapshotter: {snapshotter})");
    Some(took)
}

/// How many cached redeploys of the service with a port are timed.
const PORT_REDEPLOYS: usize = 20;

/// What the service with a port runs: busybox's httpd, listening on 8080 as soon
/// as the shell starts it (a few ms).
const WEB_SCRIPT: &str =
    "mkdir -p /www; echo ok > /www/index.html; exec busybox httpd -f -p 8080 -h /www";

/// One timed redeploy: POST to `DEPLOYED` as the client saw it, and the
/// deployment's log lines, each with its stamp as ms after the POST.
struct Redeploy {
    took: Duration,
    steps: Vec<(i64, String)>,
}

/// A redeploy's steps, each from the log line starting with its first text to
/// the one starting with its second ("": the POST, then `DEPLOYED` as the client
/// saw it).
const STEPS: [(&str, &str, &str); 5] = [
    (
        "POST to claimed (the worker's queue poll)",
        "",
        "deployment ",
    ),
    (
        "claimed to root filesystem ready (registry, cache)",
        "deployment ",
        "root filesystem ready",
    ),
    (
        "container start (namespace, runc)",
        "root filesystem ready",
        "waiting for port",
    ),
    ("ready probe", "waiting for port", "ready: "),
    ("ready to DEPLOYED seen by the client", "ready: ", ""),
];

impl Redeploy {
    /// Milliseconds from the line starting with `from` to the one starting with `to`.
    fn step(&self, from: &str, to: &str) -> i64 {
        let at = |start: &str| {
            self.steps
                .iter()
                .find(|(_, text)| !start.is_empty() && text.starts_with(start))
                .map(|(ms, _)| *ms)
        };
        let end = at(to).unwrap_or(self.took.as_millis() as i64);
        end - at(from).unwrap_or(0)
    }
}

/// The cached redeploy of a service with a port, with the server's default
/// flags (the ready probe, not the start window, decides when it is
/// `DEPLOYED`): a first deploy warms the cache, then [`PORT_REDEPLOYS`] are timed
/// from the POST until the deployment reads `DEPLOYED`, each one replacing (and
/// draining) the one before.
async fn port_redeploys(reg: &LocalRegistry, dir: &Path) -> Vec<Redeploy> {
    berth_testkit::fixtures::busybox(WEB_SCRIPT).push(reg, "bench/web:v1");
    let running = berth_server::start(server_config(&reg.authority(), dir, Default::default()))
        .await
        .unwrap();
    let api = Api::admin(running.addr, dir);
    api.create_service("bench", "web", "bench/web:v1", &reg.authority(), admin(reg))
        .await;
    let r = api
        .request(reqwest::Method::PUT, "/v1/projects/bench/services/web")
        .json(&json!({"port": 8080}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut runs = Vec::new();
    // The first deploy pulls and unpacks; the rest find everything cached.
    for i in 0..=PORT_REDEPLOYS {
        // At a moment of no relation to the server's last deploy, as a person's or
        // a CI job's POST: the worker polls its queue, and a POST sent right after
        // the last DEPLOYED would always meet that poll at the same point.
        tokio::time::sleep(Duration::from_millis(300 + rand::random::<u64>() % 500)).await;
        let posted = chrono::Utc::now();
        let t = Instant::now();
        let path = deployed(&api, "web", Duration::from_millis(2)).await;
        let took = t.elapsed();
        let log = api.text(&format!("{path}/logs")).await;
        let steps = log
            .lines()
            .filter_map(|l| {
                let at = berth_runtime::log::stamped_at(l.as_bytes())?;
                let text = l.split_once("] ").map_or(l, |(_, t)| t);
                Some(((at - posted).num_milliseconds(), text.to_owned()))
            })
            .collect();
        if i > 0 {
            println!("  cached redeploy {i}: {:.3} s", took.as_secs_f64());
            runs.push(Redeploy { took, steps });
        }
    }
    // The app answers through the ingress.
    let ingress = running.ingress.expect("the ingress listens");
    let body = api
        .http()
        .get(format!("http://{ingress}/"))
        .header("host", "web.bench.localhost")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body.trim(), "ok");
    api.delete("/v1/projects/bench/services/web").await;
    running.stop().await;
    runs
}

fn main() {
    let only = std::env::var("BERTH_BENCH_ONLY").unwrap_or_default();
    let reg = LocalRegistry::htpasswd(&[("bench", "bench-pass-1")]);
    let work = bench::work_dir();
    let rt = tokio::runtime::Runtime::new().unwrap();
    if only.is_empty() || only.split(',').any(|o| o == "port") {
        let dir = work.path().join("berth-port");
        let mut runs = rt.block_on(port_redeploys(&reg, &dir));
        bench::remove(&dir);
        runs.sort_by_key(|r| r.took);
        let median = &runs[runs.len() / 2];
        println!();
        println!(
            "cached redeploy of a service with a port (busybox httpd on 8080), default flags, POST to DEPLOYED, {} runs: median {:.3} s, max {:.3} s",
            runs.len(),
            median.took.as_secs_f64(),
            runs.last().unwrap().took.as_secs_f64()
        );
        println!("each step over the {} runs, ms (median, max):", runs.len());
        for (name, from, to) in STEPS {
            let mut v: Vec<i64> = runs.iter().map(|r| r.step(from, to)).collect();
            v.sort();
            println!("  {name:<52} {:>5} {:>5}", v[v.len() / 2], v[v.len() - 1]);
        }
        println!("the median run's log, ms after the POST:");
        for (ms, text) in &median.steps {
            println!("  {ms:>5}  {text}");
        }
        println!(
            "  {:>5}  (DEPLOYED seen by the client)",
            median.took.as_millis()
        );
        println!();
    }
    let mut rows = Vec::new();
    for spec in specs() {
        if !only.is_empty() && !only.split(',').any(|o| o == spec.name) {
            continue;
        }
        let layout: PathBuf = work.path().join(format!("layout-{}", spec.name));
        let t = Instant::now();
        let bytes = build_layout(&layout, &spec);
        let repo = format!("bench/{}", spec.name);
        let skopeo = Command::new(require("skopeo"))
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                "--dest-creds=bench:bench-pass-1",
            ])
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repo}:v1", reg.authority()))
            .status()
            .unwrap();
        assert!(skopeo.success());
        let _ = std::fs::remove_dir_all(&layout);
        println!(
            "{}: {} MB of blobs, built and pushed in {:.1} s",
            spec.title,
            bytes / 1_000_000,
            t.elapsed().as_secs_f64()
        );
        let floor_t = rt.block_on(floor(&reg, &repo));
        let write_t = write_floor(&spec, &work.path().join(format!("write-{}", spec.name)));
        let berth_dir = work.path().join(format!("berth-{}", spec.name));
        let run = rt.block_on(berth_deploy(&reg, &berth_dir, &repo));
        bench::remove(&berth_dir);
        let ctr = ctr_pull(
            &reg,
            &work.path().join(format!("containerd-{}", spec.name)),
            &repo,
        );
        rows.push((spec.title, floor_t, write_t, run, ctr));
    }

    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "berth with --start-window-ms 0 (the default 500 ms start window adds to each deploy); * median of 3 redeploys"
    );
    println!(
        "floor: every blob downloaded in parallel and hashed, written nowhere; write: the image's files written at once, nothing downloaded"
    );
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>8} {:>8} {:>11} {:>11} {:>12}",
        "image",
        "floor s",
        "write s",
        "berth s",
        "cached s*",
        "ctr s",
        "berth/floor",
        "ctr/berth",
        "peak RSS MiB"
    );
    for (title, floor_t, write_t, run, ctr) in rows {
        let f = run.first.as_secs_f64();
        println!(
            "{:<40} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>10.2}x {:>11} {:>5} (+{})",
            title,
            floor_t.as_secs_f64(),
            write_t.as_secs_f64(),
            f,
            run.cached.as_secs_f64(),
            ctr.map_or("-".into(), |c| format!("{:.2}", c.as_secs_f64())),
            f / floor_t.as_secs_f64(),
            ctr.map_or("-".into(), |c| format!("{:.2}x", c.as_secs_f64() / f)),
            run.rss_peak,
            run.rss_peak.saturating_sub(run.rss_before),
        );
    }
}
