//! Preflight latency: berth's preflight (in-process, fresh token each time, as the
//! Test Connection button does) against `skopeo inspect --raw` (a new process each
//! time, as a user would run it), on the same local token-auth registry.
//! A benchmark prints figures; it asserts nothing about time.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_registry::{preflight, Credentials, NetworkPolicy, Registry};
use berth_testkit::{require, Grant, LocalRegistry, TestImage, TokenServer, TokenServerMode, User};
use secrecy::SecretString;

const RUNS: usize = 30;

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() * 9 / 10]))
}

fn main() {
    let tokens = TokenServer::start(
        vec![User::new("ci", "bench-pass-1", Grant::All)],
        vec![],
        TokenServerMode::GetAndPost,
    );
    let reg = LocalRegistry::token(&tokens);
    TestImage::build(&[("f", b"x")], &["/f"]).push(&reg, "bench/app:v1");
    let url = reg.authority();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let policy = NetworkPolicy::from_lists("127.0.0.1/32", &url).unwrap();
    let registry = Registry::new(policy).unwrap();
    let target = preflight::target(&registry, &url, "bench/app:v1").unwrap();
    let mut berth = Vec::new();
    for _ in 0..RUNS {
        let creds = Credentials::new("ci", SecretString::from("bench-pass-1"));
        let t = Instant::now();
        let r = rt.block_on(preflight::run(&registry, &target, Some(creds)));
        berth.push(t.elapsed());
        assert!(r.ok, "{r:?}");
    }

    let skopeo_bin = require("skopeo");
    let mut skopeo = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(&skopeo_bin)
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                "ci:bench-pass-1",
            ])
            .arg(format!("docker://{url}/bench/app:v1"))
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .output()
            .unwrap();
        skopeo.push(t.elapsed());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let (b0, b50, b90) = stats(berth);
    let (s0, s50, s90) = stats(skopeo);
    println!(
        "preflight latency, {RUNS} runs each, local token-auth registry (ping + token + manifest)"
    );
    println!("{:<28} {:>9} {:>9} {:>9}", "", "min ms", "p50 ms", "p90 ms");
    println!(
        "{:<28} {b0:>9.2} {b50:>9.2} {b90:>9.2}",
        "berth preflight (in-proc)"
    );
    println!(
        "{:<28} {s0:>9.2} {s50:>9.2} {s90:>9.2}",
        "skopeo inspect --raw"
    );
    println!("p50 ratio skopeo/berth: {:.1}x", s50 / b50);
}
