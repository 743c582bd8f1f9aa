//! `berth preflight` end to end: the real binary against the real token-auth
//! registry, with trace logging, and no secret anywhere in its output.

use assert_cmd::Command;
use base64::Engine;
use berth_testkit::{LocalRegistry, TokenServer};

use berth_testkit::fixtures::PASSWORD;

fn setup() -> (TokenServer, LocalRegistry, String) {
    let r = berth_testkit::TeamRegistry::start();
    (r.tokens, r.reg, r.digest)
}

fn berth(reg: &LocalRegistry) -> Command {
    let mut c = Command::cargo_bin("berth").unwrap();
    c.env("BERTH_REGISTRY_ALLOW_PRIVATE", "127.0.0.1/32")
        .env("BERTH_REGISTRY_INSECURE", reg.authority())
        .env("BERTH_LOG", "trace");
    c
}

/// The password, `user:password` in base64 and the password in base64.
fn secret_forms() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    vec![
        PASSWORD.into(),
        b64.encode(format!("ci:{PASSWORD}")),
        b64.encode(PASSWORD),
    ]
}

#[test]
fn prints_the_three_steps_and_the_digest() {
    let (_t, reg, digest) = setup();
    let out = berth(&reg)
        .args([
            "preflight",
            "team/app:v1",
            "--registry",
            &reg.authority(),
            "--username",
            "ci",
            "--registry-password-stdin",
        ])
        .write_stdin(format!("{PASSWORD}\n"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for step in ["ping", "token", "manifest"] {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(step)),
            "{stdout}"
        );
    }
    assert!(stdout.contains(&format!("digest: {digest}")), "{stdout}");
    for s in secret_forms() {
        assert!(
            !stdout.contains(&s) && !stderr.contains(&s),
            "secret form {s:?} printed"
        );
    }
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "trace logging was on: {stderr}"
    );
}

#[test]
fn json_and_exit_codes() {
    let (_t, reg, digest) = setup();
    let out = berth(&reg)
        .args([
            "preflight",
            "team/app:v1",
            "--registry",
            &reg.authority(),
            "--username",
            "ci",
            "--registry-password-stdin",
            "--json",
        ])
        .write_stdin(PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["code"], "ok");
    assert_eq!(v["digest"], digest.as_str());
    assert_eq!(v["steps"].as_array().unwrap().len(), 3);

    // A wrong password: exit 1, auth_failed, and the wrong password is not echoed.
    let out = berth(&reg)
        .args([
            "preflight",
            "team/app:v1",
            "--registry",
            &reg.authority(),
            "--username",
            "ci",
            "--registry-password-stdin",
            "--json",
        ])
        .write_stdin("not-the-right-one")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["code"], "auth_failed");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("not-the-right-one"));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("not-the-right-one"));

    // No terminal and no --registry-password-stdin: a usage error naming the flag.
    let out = berth(&reg)
        .args([
            "preflight",
            "team/app:v1",
            "--registry",
            &reg.authority(),
            "--username",
            "ci",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--registry-password-stdin"));

    // A password is never accepted as a flag value.
    let out = berth(&reg)
        .args([
            "preflight",
            "team/app:v1",
            "--registry",
            &reg.authority(),
            "--password",
            PASSWORD,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
