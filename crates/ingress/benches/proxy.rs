//! The ingress's overhead, side by side with nginx, in one run: one backend on
//! loopback (nginx answering `ok` from memory), loaded by `wrk` (a) directly, (b)
//! through nginx `proxy_pass` with upstream keep-alive, (c) through berth's
//! [`Ingress`] routing by `Host` to a [`TcpDialer`]. Two loads: saturating (64
//! connections, 2 threads: requests/s and latency under load) and one connection
//! (one request at a time: the latency a proxy adds when nothing queues). Prints
//! figures; asserts nothing about time, only that every answer was the backend's.
//!
//! Run: `cargo bench -p berth-ingress --bench proxy` (needs `wrk` and `nginx` from
//! Debian's packages: `apt-get install wrk nginx-light`). `BERTH_BENCH_SECONDS`
//! (default 10) is each wrk run's length, `BERTH_BENCH_ROUNDS` (default 2) how
//! many times each case runs; the best round of each case is kept.
//! `BERTH_BENCH_ONLY` picks cases by name (`direct`, `nginx`, `berth`).
//!
//! Why a cargo bench and not a script: berth's side is the library itself
//! ([`Ingress::bind`], [`RouteTable::set`]) built by cargo in release, the same
//! code and runtime shape as the server (a multi-threaded tokio runtime with a
//! worker per core), with no bench binary to keep in step; nginx and wrk are
//! driven as child processes, each run in a temporary directory of its own.
//!
//! Traffic goes to 127.0.0.1 only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_ingress::{
    Backend, Host, Ingress, IngressConfig, Limits, NoObserver, Route, RouteTable, TcpDialer,
};

/// The name the proxies route by (nginx and the backend ignore it).
const HOST: &str = "bench.localhost";

/// A port free now on 127.0.0.1, for nginx to bind.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One nginx master with its workers, in the foreground as our child, with its
/// config, logs and pid file under a directory of its own (`-p`).
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path, http_block: &str, port: u16) -> Nginx {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes auto;\n\
                 pid {dir}/nginx.pid;\n\
                 error_log {dir}/logs/error.log warn;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{\n\
                   access_log off;\n\
                   client_body_temp_path {dir}/body;\n\
                   proxy_temp_path {dir}/proxy;\n\
                   fastcgi_temp_path {dir}/fastcgi;\n\
                   uwsgi_temp_path {dir}/uwsgi;\n\
                   scgi_temp_path {dir}/scgi;\n\
                   keepalive_requests 100000000;\n\
                   keepalive_timeout 120s;\n\
                   {http_block}\n\
                 }}\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("logs/error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .spawn()
            .expect("nginx (apt-get install nginx-light)");
        wait_listening(port);
        Nginx { child, port }
    }

    /// The master and its workers.
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        pids.extend(children(self.child.id()));
        pids
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master: it stops its workers (a SIGKILL would orphan them).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time (user + system) the processes used so far, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            // Fields after the command's closing parenthesis; utime and stime are
            // the 14th and 15th of the line.
            let rest = &stat[stat.rfind(')').unwrap() + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
        })
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// One GET with `Host: bench.localhost` over a fresh connection: the answer must be
/// the backend's `ok`.
fn check_answers_ok(port: u16) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\nok\n"),
        "port {port} answered: {answer}"
    );
}

/// What one wrk run measured.
#[derive(Clone, Copy, Debug)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// The proxy's CPU per request (user + system), µs; none for direct.
    cpu_us: Option<f64>,
}

#[derive(Clone, Copy)]
struct Load {
    name: &'static str,
    threads: u32,
    connections: u32,
}

const LOADS: [Load; 2] = [
    Load {
        name: "64 connections, 2 wrk threads",
        threads: 2,
        connections: 64,
    },
    Load {
        name: "1 connection (one request at a time)",
        threads: 1,
        connections: 1,
    },
];

fn ms(v: &str) -> f64 {
    let (n, unit) = v
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| v.split_at(i))
        .unwrap_or((v, "ms"));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("a latency: {v}"));
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => panic!("a latency unit: {v}"),
    }
}

/// A case: its name, the port wrk loads, the processes whose CPU is the proxy's.
type Case<'a> = (&'static str, u16, Box<dyn Fn() -> Vec<u32> + 'a>);

/// Runs wrk against `port`; `cpu_of` names the processes whose CPU is the proxy's.
fn wrk(port: u16, load: Load, seconds: u64, cpu_of: &dyn Fn() -> Vec<u32>) -> Run {
    let ticks = clock_ticks_per_second();
    let before = cpu_ticks(&cpu_of());
    let out = Command::new("wrk")
        .args(["--latency", "-H"])
        .arg(format!("Host: {HOST}"))
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{seconds}s"))
        .arg(format!("http://127.0.0.1:{port}/"))
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .expect("wrk (apt-get install wrk)");
    let after = cpu_ticks(&cpu_of());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    // Any answer other than the backend's 200 (a 404 from a proxy that did not
    // route, a 502) would make a fast proxy of a broken one.
    assert!(
        !text.contains("Non-2xx") && !text.contains("Socket errors"),
        "wrk saw errors:\n{text}"
    );
    let field = |prefix: &str| -> &str {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in wrk's output:\n{text}"))
            .split_whitespace()
            .next()
            .unwrap()
    };
    let rps: f64 = field("Requests/sec:").parse().unwrap();
    let requests = rps * seconds as f64;
    let cpu_us =
        (!cpu_of().is_empty()).then(|| (after - before) as f64 / ticks * 1e6 / requests.max(1.0));
    Run {
        rps,
        p50_ms: ms(field("50%")),
        p99_ms: ms(field("99%")),
        cpu_us,
    }
}

fn main() {
    let seconds: u64 = std::env::var("BERTH_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let rounds: usize = std::env::var("BERTH_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let work = tempfile::tempdir().unwrap();

    // The backend, the same for all three: nginx answering from memory.
    let backend_port = free_port();
    let backend = Nginx::start(
        &work.path().join("backend"),
        &format!(
            "server {{ listen 127.0.0.1:{backend_port} backlog=4096; \
             location / {{ default_type text/plain; return 200 \"ok\\n\"; }} }}"
        ),
        backend_port,
    );

    // nginx as the reverse proxy: HTTP/1.1 with keep-alive to the backend, and the
    // same X-Forwarded-* headers berth sets.
    let nginx_port = free_port();
    let nginx = Nginx::start(
        &work.path().join("proxy"),
        &format!(
            "upstream backend {{ server 127.0.0.1:{backend_port}; keepalive 128; \
               keepalive_requests 100000000; }}\n\
             server {{ listen 127.0.0.1:{nginx_port} backlog=4096;\n\
               location / {{\n\
                 proxy_pass http://backend;\n\
                 proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n\
                 proxy_set_header Host $host;\n\
                 proxy_set_header X-Forwarded-For $remote_addr;\n\
                 proxy_set_header X-Forwarded-Proto $scheme;\n\
                 proxy_set_header X-Forwarded-Host $http_host;\n\
               }}\n\
             }}"
        ),
        nginx_port,
    );

    // berth's ingress, on a runtime shaped as the server's (`Runtime::new`: a worker
    // thread per core), routing the host to the backend.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = Arc::new(RouteTable::new());
    let backend_addr: SocketAddr = ([127, 0, 0, 1], backend_port).into();
    table
        .set(Route {
            service_id: "bench".into(),
            hosts: vec![Host::parse(HOST).unwrap()],
            backend: Backend::new("bench", "bench-1", Arc::new(TcpDialer(backend_addr))),
        })
        .unwrap();
    let ingress = rt
        .block_on(Ingress::bind(
            IngressConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                tls: None,
                limits: Limits::default(),
            },
            table,
            Arc::new(NoObserver),
        ))
        .unwrap();
    let berth_port = ingress.local_addr().port();
    rt.spawn(ingress.serve(std::future::pending()));
    wait_listening(berth_port);

    let only = std::env::var("BERTH_BENCH_ONLY").unwrap_or_default();
    let cases: Vec<Case> = vec![
        ("direct", backend.port, Box::new(Vec::new)),
        ("nginx", nginx.port, Box::new(|| nginx.pids())),
        ("berth", berth_port, Box::new(|| vec![std::process::id()])),
    ];
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|(name, _, _)| only.is_empty() || only.split(',').any(|o| o == *name))
        .collect();
    for (_, port, _) in &cases {
        check_answers_ok(*port);
    }

    let nginx_version = Command::new("nginx")
        .arg("-v")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_owned())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "{cores} cores, shared by wrk, the proxy and the backend (nginx workers: one per core \
         for both nginx; berth: a tokio worker per core); {nginx_version}; {seconds} s per run, \
         best of {rounds} rounds by requests/s"
    );

    let mut tables = Vec::new();
    for load in LOADS {
        // Rounds go across the cases, so a busy moment on the machine hits each alike.
        let mut best: Vec<Option<Run>> = vec![None; cases.len()];
        for round in 0..rounds {
            for (i, (name, port, cpu_of)) in cases.iter().enumerate() {
                let run = wrk(*port, load, seconds, cpu_of.as_ref());
                println!(
                    "  {} / round {}: {name:<6} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms",
                    load.name,
                    round + 1,
                    run.rps,
                    run.p50_ms,
                    run.p99_ms
                );
                if best[i].map_or(true, |b| run.rps > b.rps) {
                    best[i] = Some(run);
                }
            }
        }
        tables.push((load, best));
    }

    println!();
    for (load, best) in tables {
        let direct = cases
            .iter()
            .zip(&best)
            .find(|((name, _, _), _)| *name == "direct")
            .and_then(|(_, run)| *run);
        println!(
            "wrk -t{} -c{} -d{seconds}s: {}",
            load.threads, load.connections, load.name
        );
        println!(
            "| {:<6} | {:>9} | {:>8} | {:>8} | {:>10} | {:>10} | {:>12} |",
            "", "req/s", "p50 ms", "p99 ms", "+p50 ms", "+p99 ms", "proxy CPU/req"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for ((name, _, _), run) in cases.iter().zip(best) {
            let run = run.unwrap();
            let added = |of: fn(&Run) -> f64| match direct {
                Some(d) if *name != "direct" => format!("{:+.3}", of(&run) - of(&d)),
                _ => "-".to_owned(),
            };
            println!(
                "| {:<6} | {:>9.0} | {:>8.3} | {:>8.3} | {:>10} | {:>10} | {:>12} |",
                name,
                run.rps,
                run.p50_ms,
                run.p99_ms,
                added(|r| r.p50_ms),
                added(|r| r.p99_ms),
                run.cpu_us.map_or("-".into(), |c| format!("{c:.1} µs")),
            );
        }
        println!();
    }
    drop(cases);
    drop(nginx);
    drop(backend);
}
