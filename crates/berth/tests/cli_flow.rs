//! The seed flow from the CLI alone, scripted (`--json`, `--registry-password-stdin`),
//! against the real `berth server` binary, the token-auth registry and runc.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use assert_cmd::Command;

mod common;

use common::*;

use berth_testkit::fixtures::PASSWORD;

#[test]
fn the_seed_flow_from_the_cli() {
    let reg = berth_testkit::TeamRegistry::start();
    reg.push_busybox("web", "echo hello from the cli; sleep 1234");
    let reg = &reg.reg;
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let server = start_server(&work.path().join("data"), &reg.authority());
    let mut transcript = String::new();
    let mut record = |o: &std::process::Output| {
        transcript.push_str(&String::from_utf8_lossy(&o.stdout));
        transcript.push_str(&String::from_utf8_lossy(&o.stderr));
    };

    // Admin creates alice; alice logs in (token from a pipe) and works without --token.
    let out = berth(&server, &server.admin_token, &home)
        .args(["user", "create", "alice", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let alice = json(&out)["token"].as_str().unwrap().to_owned();
    let out = Command::cargo_bin("berth")
        .unwrap()
        .env("XDG_CONFIG_HOME", &home)
        .args(["login", "--server", &server.url, "--token-stdin"])
        .write_stdin(alice.clone())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let login = home.join("berth/login.json");
    assert_eq!(
        std::fs::metadata(&login).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let logged_in = || {
        let mut c = Command::cargo_bin("berth").unwrap();
        c.env("XDG_CONFIG_HOME", &home)
            .env("BERTH_PROJECT", "web")
            .env_remove("BERTH_TOKEN")
            .env_remove("BERTH_SERVER");
        c
    };
    let out = logged_in()
        .args(["project", "create", "web"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // A wrong password: exit 1, the steps shown, nothing saved.
    let out = logged_in()
        .args([
            "service",
            "create",
            "api",
            "--image",
            "team/app:web",
            "--registry-url",
            &reg.authority(),
        ])
        .args(["--registry-username", "ci", "--registry-password-stdin"])
        .write_stdin("not-the-password\n")
        .output()
        .unwrap();
    record(&out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth_failed") && err.contains("not saved"),
        "{err}"
    );
    assert!(!err.contains("not-the-password"));

    // The right one: saved, masked.
    let out = logged_in()
        .args([
            "service",
            "create",
            "api",
            "--image",
            "team/app:web",
            "--registry-url",
            &reg.authority(),
        ])
        .args([
            "--registry-username",
            "ci",
            "--registry-password-stdin",
            "--json",
        ])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    record(&out);
    assert!(out.status.success(), "{out:?}");
    let v = json(&out);
    assert_eq!(
        (
            v["registry"]["username"].as_str(),
            v["registry"]["verified"].as_bool()
        ),
        (Some("c***"), Some(true))
    );
    let out = logged_in()
        .args(["service", "show", "api"])
        .output()
        .unwrap();
    record(&out);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("password set, verified"), "{out:?}");
    assert!(shown.contains("restarts: 0 (policy on-failure)"), "{out:?}");

    // Deploy, watch it come up, read the logs.
    let out = logged_in().args(["deploy", "api"]).output().unwrap();
    record(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("==> DEPLOYED") || err.contains("DEPLOYED ("),
        "{err}"
    );
    let out = logged_in().args(["logs", "api"]).output().unwrap();
    record(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello from the cli"),
        "{out:?}"
    );
    // The last line only, of the last ten minutes; nothing from the future.
    let out = logged_in()
        .args(["logs", "api", "--tail", "1", "--since", "10m"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        1,
        "{out:?}"
    );
    let out = logged_in()
        .args(["logs", "api", "--since", "2999-01-01T00:00:00+00:00"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    let out = logged_in()
        .args(["deploy", "api", "--detach", "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["status"], "PENDING_DEPLOY");

    // The audit log, and terminate.
    let out = logged_in().args(["audit", "--json"]).output().unwrap();
    let actions: Vec<String> = json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        actions.contains(&"deployment.create".to_owned())
            && actions.contains(&"service.create".to_owned()),
        "{actions:?}"
    );
    // Let the detached deploy finish before terminating.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = logged_in()
            .args(["service", "show", "api", "--json"])
            .output()
            .unwrap();
        let status = json(&out)["status"].as_str().unwrap_or_default().to_owned();
        if status == "DEPLOYED" || status == "FAILED" {
            break;
        }
        assert!(Instant::now() < deadline, "the detached deploy did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = logged_in()
        .args(["service", "terminate", "api", "--json"])
        .output()
        .unwrap();
    record(&out);
    assert_eq!(json(&out)["status"], "TERMINATED");
    assert_eq!(json(&out)["registry"], serde_json::Value::Null);

    // Usage errors exit 2; completions print.
    let out = logged_in().args(["service", "show"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::cargo_bin("berth")
        .unwrap()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("berth"));

    assert!(!transcript.contains(PASSWORD), "the password was printed");
}
