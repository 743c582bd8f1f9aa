//! `berth server --log-format json`: every log line one JSON object, for a log
//! shipper; SIGTERM lets the requests in flight finish.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = berth_testkit::free_port();
    let log = dir.path().join("server.log");
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .args(["server", "--log-format", "json", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("BERTH_LOG", "info")
        .env("BERTH_INGRESS_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
}

/// SIGTERM while a slow preflight is in flight: no new connection is taken, the
/// preflight's answer still arrives whole, and the process exits 0.
#[test]
fn sigterm_finishes_the_requests_in_flight() {
    use std::io::{Read, Write};
    let reg = berth_testkit::LocalRegistry::htpasswd(&[("ci", "Pu11-0nly")]);
    berth_testkit::TestImage::build(&[("a", b"a")], &["/a"]).push(&reg, "team/app:v1");
    // A registry answering at 200 bytes a second: the preflight takes seconds.
    let slow = berth_testkit::hostile::Throttle::start(&reg.authority(), 200);
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(&dir.path().join("data"), &slow.authority());
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let body = serde_json::json!({"registry_url": slow.authority(), "username": "ci",
                                  "password": "Pu11-0nly", "image": "team/app:v1"})
    .to_string();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        conn,
        "POST /v1/preflight HTTP/1.1\r\nHost: berth\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        server.admin_token,
        body.len()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "a stopping server takes no new connection"
    );
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""ok":true"#), "{answer}");
    let mut server = server;
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}
