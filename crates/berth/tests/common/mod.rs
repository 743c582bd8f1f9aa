//! The CLI tests' harness: the real `berth server` binary as a child process, and
//! the `berth` binary pointed at it.
#![allow(dead_code)]

use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

pub struct ServerProcess {
    pub child: Child,
    pub url: String,
    pub admin_token: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn start_server(dir: &std::path::Path, insecure: &str) -> ServerProcess {
    start_server_under(dir, insecure, &[])
}

/// `berth server` run by `wrapper` (a program and its arguments, e.g. `setpriv`
/// with a capability bounding set), or directly when it is empty.
pub fn start_server_under(
    dir: &std::path::Path,
    insecure: &str,
    wrapper: &[String],
) -> ServerProcess {
    let port = berth_testkit::free_port();
    let berth = assert_cmd::cargo::cargo_bin("berth");
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = StdCommand::new(program);
            c.args(args).arg(&berth);
            c
        }
        None => StdCommand::new(&berth),
    };
    let child = cmd
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        // Tests run many servers at once: each its own ingress port.
        .env("BERTH_INGRESS_LISTEN", "127.0.0.1:0")
        .env("BERTH_REGISTRY_ALLOW_PRIVATE", "127.0.0.1/32")
        .env("BERTH_REGISTRY_INSECURE", insecure)
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.with_extension("log")).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin_token = std::fs::read_to_string(dir.join("admin-token"))
        .unwrap()
        .trim()
        .to_owned();
    ServerProcess {
        child,
        url,
        admin_token,
    }
}

pub fn berth(server: &ServerProcess, token: &str, config_home: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin("berth").unwrap();
    c.env("BERTH_SERVER", &server.url)
        .env("BERTH_TOKEN", token)
        .env("BERTH_PROJECT", "web")
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy");
    c
}

pub fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `berth service create NAME --image IMAGE` in the `web` project with the team
/// registry's `ci` user, the password on stdin; asserts it was saved.
pub fn create_service_as_ci(
    server: &ServerProcess,
    home: &std::path::Path,
    registry: &str,
    name: &str,
    image: &str,
) {
    let out = berth(server, &server.admin_token, home)
        .args(["service", "create", name, "--image", image])
        .args([
            "--registry-url",
            registry,
            "--registry-username",
            "ci",
            "--registry-password-stdin",
        ])
        .write_stdin(berth_testkit::fixtures::PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
