//! Lazy pulling (issue 25), side by side in one run, one run per row, the
//! registry (docker-registry, htpasswd auth) reached through a
//! [`Throttle`](berth_testkit::throttle::Throttle) that counts what it sends:
//!
//! a. **Lazy start**: an image of eStargz layers, busybox plus 4 layers of
//!    256 MiB of random bytes (4 MiB files), whose entrypoint reads 10 MB of
//!    `/data/f0` (16 MiB, in the top layer) and then prints `first-line`. Timed
//!    from the POST that creates the deployment to that line in the
//!    deployment's output file: berth with `lazy_pull` on (`lazy`), the same at
//!    100 MB/s (`lazy-100`), berth with `lazy_pull` off (`full`), containerd's
//!    `ctr images pull` (`ctr-pull`, overlayfs: no stargz snapshotter here) and
//!    `ctr run` after it to the same line (`ctr-run`). Also the bytes the registry
//!    sent until then and the peak RSS (berth: this process, which runs the
//!    server; containerd: its daemon).
//! b. **At the wire's speed**: an ordinary gzip image of 1 GiB (the same shape)
//!    through the throttle at 100 MB/s: every blob fetched and discarded
//!    (`transfer`), berth's first deploy, POST to `DEPLOYED` (`first-deploy`), and
//!    `ctr images pull` (`ctr-pull-100`), each with its ratio to the transfer.
//!
//! `/data/f0` sits before the prefetch landmark of its layer, as stargz's
//! optimizer puts the files an entrypoint reads; the other layers say
//! `.no.prefetch.landmark`.
//!
//! Run: `cargo bench -p berth-server --bench lazy` (needs docker-registry, skopeo,
//! runc, busybox-static and containerd from Debian's packages).
//! `BERTH_BENCH_ROWS` picks rows by the names above (comma list; default all);
//! `BERTH_BENCH_DIR` is where data dirs go (default `/var/tmp`). Prints figures;
//! asserts nothing about time.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use berth_testkit::bench::{self, rss, Api, Containerd};
use berth_testkit::estargz::{self, Encoder, Entry};
use berth_testkit::throttle::{Throttle, UNLIMITED};
use berth_testkit::{noise, LocalRegistry, TestImage};
use serde_json::json;

/// The link of the rows "at 100 MB/s".
const LINK_BYTES_PER_SEC: u64 = 100_000_000;
/// The data layers of both images, each of `FILES_PER_LAYER` files of `FILE_SIZE`.
const DATA_LAYERS: usize = 4;
const FILES_PER_LAYER: usize = 64;
const FILE_SIZE: usize = 4 << 20;
/// The file the entrypoint reads from, in the top layer.
const READ_FILE_SIZE: usize = 16 << 20;
/// What the entrypoint prints once it has read: the end of every timed row of a.
const FIRST_LINE: &str = "first-line";
const LAZY_SCRIPT: &str =
    "busybox head -c 10000000 /data/f0 | busybox wc -c; echo first-line; exec busybox sleep 3600";
/// The same, ending once it has printed: `ctr run` then ends by itself.
const CTR_SCRIPT: &str = "busybox head -c 10000000 /data/f0 | busybox wc -c; echo first-line";
const USER: (&str, &str) = ("bench", "bench-pass-1");

/// The files of data layer `layer` (0-based, the top one last): (path, bytes).
fn data_files(layer: usize) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    if layer + 1 == DATA_LAYERS {
        files.push(("data/f0".to_owned(), noise(0xf0, READ_FILE_SIZE)));
    }
    for n in 0..FILES_PER_LAYER {
        let seed = 0x9E37_79B9_7F4A_7C15 ^ ((layer as u64) << 32 | n as u64);
        files.push((format!("data/l{layer}/f{n}"), noise(seed, FILE_SIZE)));
    }
    files
}

fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").expect("busybox-static")
}

/// The eStargz image of part a, each layer encoded on a thread of its own.
fn lazy_image() -> TestImage {
    let base = Encoder::default().encode(&[
        Entry::dir("bin"),
        Entry::file("bin/busybox", &busybox(), 0o755),
    ]);
    let data: Vec<_> = std::thread::scope(|scope| {
        let encoding: Vec<_> = (0..DATA_LAYERS)
            .map(|layer| {
                scope.spawn(move || {
                    let mut entries =
                        vec![Entry::dir("data"), Entry::dir(&format!("data/l{layer}"))];
                    entries.extend(
                        data_files(layer)
                            .iter()
                            .map(|(path, bytes)| Entry::file(path, bytes, 0o644)),
                    );
                    // The top layer's landmark comes right after `data/` and
                    // `data/f0`: the file the entrypoint reads is prefetched.
                    let prefetch = (layer + 1 == DATA_LAYERS).then_some(2);
                    Encoder {
                        prefetch,
                        ..Encoder::default()
                    }
                    .encode(&entries)
                })
            })
            .collect();
        encoding.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let layers: Vec<_> = std::iter::once(&base)
        .chain(&data)
        .map(|l| (l, l.annotations()))
        .collect();
    estargz::image(&layers, &["/bin/busybox", "sh", "-c", LAZY_SCRIPT])
}

/// The gzip image of part b: the same files as ordinary gzip layers.
fn gzip_image() -> TestImage {
    let busybox = busybox();
    let data: Vec<Vec<(String, Vec<u8>)>> = (0..DATA_LAYERS).map(data_files).collect();
    let base: Vec<(&str, &[u8])> = vec![("bin/busybox", &busybox)];
    let mut layers: Vec<Vec<(&str, &[u8])>> = vec![base];
    for files in &data {
        layers.push(files.iter().map(|(p, b)| (p.as_str(), &b[..])).collect());
    }
    let layer_refs: Vec<&[(&str, &[u8])]> = layers.iter().map(|l| &l[..]).collect();
    TestImage::build_layers(&layer_refs, &["/bin/busybox", "sleep", "3600"])
}

/// The size of every blob of an image's layout, MB.
fn layout_mb(image: &TestImage) -> u64 {
    let (_, config, layers) = image.parts();
    std::iter::once(config)
        .chain(layers)
        .map(|d| {
            let path = image
                .layout()
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:"));
            std::fs::metadata(path).unwrap().len()
        })
        .sum::<u64>()
        / 1_000_000
}

/// One row's figures.
struct Row {
    name: &'static str,
    took: Result<Duration, String>,
    /// What the registry sent until the end of the row, if counted.
    registry_bytes: Option<u64>,
    /// Peak RSS, MiB, and whose (berth: with the rise from its RSS before the row,
    /// this process's allocator keeping some of what building the images took).
    peak_rss: Option<(u64, String)>,
    /// Anything more to say (how many layers were mounted lazily).
    note: String,
}

/// Where a berth row stops the clock.
#[derive(Clone, Copy)]
enum Until {
    /// The container's first line of output in the deployment's output file.
    FirstLine,
    /// The deployment reads `DEPLOYED`.
    Deployed,
}

/// How berth pulls the eStargz layers.
#[derive(Clone, Copy)]
enum Pull {
    Lazy,
    Full,
}

/// A server on loopback with its data under `dir`, allowed to reach `registry`
/// only, with the pull mode and no start window.
fn server_config(registry: SocketAddr, dir: &Path, pull: Pull) -> berth_server::Config {
    // DEPLOYED as soon as the container runs: the start window is a wait the
    // operator chooses, not work.
    let deploys = berth_server::DeployLimits {
        start_window: Duration::ZERO,
        lazy_pull: matches!(pull, Pull::Lazy),
        ..Default::default()
    };
    support::server_config(&registry.to_string(), dir, deploys)
}

/// One berth deployment of `repo:v1` from a fresh data dir under `dir`, the
/// registry reached through `link`: from the POST to `until`.
async fn berth_row(
    name: &'static str,
    link: &Throttle,
    dir: &Path,
    repo: &str,
    pull: Pull,
    until: Until,
) -> Row {
    let running = berth_server::start(server_config(link.addr(), dir, pull))
        .await
        .unwrap();
    let api = Api::admin(running.addr, dir);
    let registry_url = link.addr().to_string();
    api.create_service("bench", "big", &format!("{repo}:v1"), &registry_url, USER)
        .await;
    // The peak and the bytes from here on are the deploy's.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = rss("self").0;
    link.reset_counts();
    let t = Instant::now();
    let d: berth_api::DeploymentView = api
        .post("/v1/projects/bench/services/big/deployments", json!({}))
        .await
        .json()
        .await
        .unwrap();
    let path = format!("/v1/projects/bench/services/big/deployments/{}", d.id);
    let view = || api.get::<berth_api::DeploymentView>(&path);
    let output = dir.join("deployments").join(&d.id).join("output");
    let deadline = t + Duration::from_secs(900);
    let mut last_status_read = Instant::now();
    let took = loop {
        if let Until::FirstLine = until {
            let text = std::fs::read(&output).unwrap_or_default();
            if String::from_utf8_lossy(&text).contains(FIRST_LINE) {
                break Ok(t.elapsed());
            }
        }
        // The status less often than the output file: it costs the server a query.
        if matches!(until, Until::Deployed)
            || last_status_read.elapsed() > Duration::from_millis(200)
        {
            last_status_read = Instant::now();
            let v = view().await;
            match (v.status.as_str(), until) {
                ("DEPLOYED", Until::Deployed) => break Ok(t.elapsed()),
                ("FAILED", _) => {
                    break Err(format!(
                        "FAILED {:?}: {:?}",
                        v.failure_code, v.failure_message
                    ))
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            break Err("no first line in 900 s".into());
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    };
    let registry_bytes = link.downstream_bytes();
    let peak = rss("self").1;
    let v = view().await;
    let blobs = v.pull.map(|p| p.blobs).or(v.progress).unwrap_or_default();
    let lazy = blobs.iter().filter(|b| b.lazy.is_some()).count();
    let on_demand: u64 = blobs
        .iter()
        .filter_map(|b| b.lazy.as_ref())
        .map(|l| l.on_demand_bytes + l.prefetch_bytes)
        .sum();
    let note = if blobs.is_empty() {
        String::new()
    } else if lazy > 0 {
        format!(
            "{lazy} of {} blobs mounted lazily, {} MB prefetched + on demand",
            blobs.len(),
            on_demand / 1_000_000
        )
    } else {
        format!("no blob of {} mounted lazily", blobs.len())
    };
    api.delete("/v1/projects/bench/services/big").await;
    running.stop().await;
    bench::remove(dir);
    Row {
        name,
        took,
        registry_bytes: Some(registry_bytes),
        peak_rss: Some((peak, format!("berth +{}", peak.saturating_sub(rss_before)))),
        note,
    }
}

/// Every blob of `repo:v1` (config and layers) fetched through `link` at once,
/// as a puller fetches them, and discarded: what the wire alone costs.
async fn transfer(link: &Throttle, repo: &str) -> Duration {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}/v2/{repo}", link.addr());
    let t = Instant::now();
    let manifest: serde_json::Value = http
        .get(format!("{base}/manifests/v1"))
        .basic_auth(USER.0, Some(USER.1))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    let digests = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|d| d["digest"].as_str().unwrap().to_owned());
    let all = digests.map(|digest| {
        let http = &http;
        let base = &base;
        async move {
            let mut resp = http
                .get(format!("{base}/blobs/{digest}"))
                .basic_auth(USER.0, Some(USER.1))
                .send()
                .await
                .unwrap()
                .error_for_status()
                .unwrap();
            while resp.chunk().await.unwrap().is_some() {}
        }
    });
    futures_util::future::join_all(all).await;
    t.elapsed()
}

/// `ctr run` of the pulled `reference` running [`CTR_SCRIPT`], until it prints
/// [`FIRST_LINE`].
fn run_to_first_line(containerd: &Containerd, reference: &str) -> Result<Duration, String> {
    let t = Instant::now();
    let mut child = containerd
        .ctr()
        .args(["run", "--rm", "--snapshotter", "overlayfs"])
        .arg(reference)
        .args(["bench-run", "/bin/busybox", "sh", "-c", CTR_SCRIPT])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut took = None;
    for line in stdout.lines() {
        let Ok(line) = line else { break };
        if line.contains(FIRST_LINE) {
            took = Some(t.elapsed());
        }
    }
    let out = child.wait_with_output().unwrap();
    took.ok_or_else(|| {
        format!(
            "ctr run printed no first line ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// containerd's rows for `repo:v1` through `link`: `ctr images pull` and, if
/// `run` is given, `ctr run` after it to the first line (the pull's time plus the
/// run's).
fn ctr_rows(
    link: &Throttle,
    dir: &Path,
    repo: &str,
    pull_name: Option<&'static str>,
    run_name: Option<&'static str>,
) -> Vec<Row> {
    let reference = format!("{}/{repo}:v1", link.addr());
    let failed = |name, e: String| Row {
        name,
        took: Err(e),
        registry_bytes: None,
        peak_rss: None,
        note: String::new(),
    };
    let names = pull_name.into_iter().chain(run_name);
    let containerd = match Containerd::start(dir) {
        Ok(c) => c,
        Err(e) => return names.map(|n| failed(n, e.clone())).collect(),
    };
    link.reset_counts();
    let pulled = containerd.pull(&reference, USER, "overlayfs");
    let pull_bytes = link.downstream_bytes();
    let pull_rss = containerd.peak_rss();
    let mut rows = Vec::new();
    if let Some(name) = pull_name {
        rows.push(Row {
            name,
            took: pulled.clone(),
            registry_bytes: Some(pull_bytes),
            peak_rss: Some((pull_rss, "containerd".into())),
            note: "overlayfs snapshotter: fetch and unpack".into(),
        });
    }
    if let Some(name) = run_name {
        let took = pulled.and_then(|p| run_to_first_line(&containerd, &reference).map(|r| p + r));
        rows.push(Row {
            name,
            took,
            registry_bytes: Some(link.downstream_bytes()),
            peak_rss: Some((containerd.peak_rss(), "containerd".into())),
            note: "ctr images pull, then ctr run (runc) to the first line".into(),
        });
    }
    rows
}

fn first_line(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| format!("{cmd}: not found"))
}

fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "machine: {cores} cores, kernel {}, {}, {}",
        kernel.trim(),
        first_line("ctr", "--version"),
        first_line("runc", "--version")
    );
}

fn print_rows(title: &str, rows: &[Row], transfer: Option<Duration>) {
    println!();
    println!("{title}");
    println!(
        "{:<24} {:>9} {:>9} {:>12} {:>24}  note",
        "row", "time s", "/transfer", "registry MB", "peak RSS MiB"
    );
    for row in rows {
        let (time, ratio) = match (&row.took, transfer) {
            (Ok(d), Some(t)) => (
                format!("{:.2}", d.as_secs_f64()),
                format!("{:.2}x", d.as_secs_f64() / t.as_secs_f64()),
            ),
            (Ok(d), None) => (format!("{:.2}", d.as_secs_f64()), "-".into()),
            (Err(_), _) => ("-".into(), "-".into()),
        };
        let bytes = row
            .registry_bytes
            .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1e6));
        let peak = row
            .peak_rss
            .as_ref()
            .map_or("-".into(), |(mib, whose)| format!("{mib} ({whose})"));
        let note = match &row.took {
            Err(e) => format!("not measured: {e}"),
            Ok(_) => row.note.clone(),
        };
        println!(
            "{:<24} {:>9} {:>9} {:>12} {:>24}  {note}",
            row.name, time, ratio, bytes, peak
        );
    }
}

/// Builds `image`, pushes it as `repo:v1` and says how long it took.
fn push(reg: &LocalRegistry, repo: &str, build: fn() -> TestImage) {
    let t = Instant::now();
    let image = build();
    let mb = layout_mb(&image);
    image.push(reg, &format!("{repo}:v1"));
    println!(
        "{repo}: {mb} MB of blobs, built and pushed in {:.1} s",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    let wanted = std::env::var("BERTH_BENCH_ROWS").unwrap_or_default();
    let wants = |row: &str| wanted.is_empty() || wanted.split(',').any(|w| w.trim() == row);
    print_machine();
    let reg = LocalRegistry::htpasswd(&[USER]);
    let upstream: SocketAddr = reg.authority().parse().unwrap();
    let counting = Throttle::start(upstream, UNLIMITED);
    let link = Throttle::start(upstream, LINK_BYTES_PER_SEC);
    let work = bench::work_dir();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let lazy_rows = ["lazy", "lazy-100", "full", "ctr-pull", "ctr-run"];
    if lazy_rows.iter().any(|r| wants(r)) {
        push(&reg, "bench/lazy", lazy_image);
        let mut rows = Vec::new();
        let berth = [
            ("lazy", "berth lazy", &counting, Pull::Lazy),
            ("full", "berth full pull", &counting, Pull::Full),
            ("lazy-100", "berth lazy at 100 MB/s", &link, Pull::Lazy),
        ];
        for (key, name, via, pull) in berth {
            if wants(key) {
                let dir = work.path().join(format!("berth-{key}"));
                rows.push(rt.block_on(berth_row(
                    name,
                    via,
                    &dir,
                    "bench/lazy",
                    pull,
                    Until::FirstLine,
                )));
            }
        }
        if wants("ctr-pull") || wants("ctr-run") {
            rows.extend(ctr_rows(
                &counting,
                &work.path().join("containerd-lazy"),
                "bench/lazy",
                wants("ctr-pull").then_some("ctr images pull"),
                wants("ctr-run").then_some("ctr pull + run"),
            ));
        }
        print_rows(
            "a. lazy start: eStargz, busybox + 4 x 256 MiB random; POST (or ctr) to the line printed after reading 10 MB of /data/f0; loopback, unthrottled except where said",
            &rows,
            None,
        );
    }

    let wire_rows = ["transfer", "first-deploy", "ctr-pull-100"];
    if wire_rows.iter().any(|r| wants(r)) {
        push(&reg, "bench/gzip", gzip_image);
        let mut rows = Vec::new();
        // The ratios need the transfer: it runs whenever any row of b does.
        link.reset_counts();
        let transfer_time = rt.block_on(transfer(&link, "bench/gzip"));
        if wants("transfer") {
            rows.push(Row {
                name: "transfer alone",
                took: Ok(transfer_time),
                registry_bytes: Some(link.downstream_bytes()),
                peak_rss: None,
                note: "every blob at once with reqwest, discarded".into(),
            });
        }
        if wants("first-deploy") {
            let dir = work.path().join("berth-gzip");
            rows.push(rt.block_on(berth_row(
                "berth first deploy",
                &link,
                &dir,
                "bench/gzip",
                Pull::Lazy,
                Until::Deployed,
            )));
        }
        if wants("ctr-pull-100") {
            rows.extend(ctr_rows(
                &link,
                &work.path().join("containerd-gzip"),
                "bench/gzip",
                Some("ctr images pull"),
                None,
            ));
        }
        print_rows(
            "b. at the wire's speed: gzip, busybox + 4 x 256 MiB random, through a 100 MB/s link",
            &rows,
            Some(transfer_time),
        );
    }
}
