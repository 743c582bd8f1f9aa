//! The interactive `berth service create` wizard under a pseudo-terminal, against the
//! real server binary and an htpasswd registry: every question answered the way a
//! person would, a failed test retried, a save without verifying, and the passwords
//! never on the screen.

mod common;

use std::time::Duration;

use berth_testkit::LocalRegistry;
use common::*;
use expectrl::{Eof, Session};

const PASSWORD: &str = "Wizard-Pa55word!";
const WRONG: &str = "wrong-Guess-99";

/// `berth ARGS` under a pty, and everything the terminal showed.
struct Pty {
    p: Session,
    screen: Vec<u8>,
}

impl Pty {
    fn start(server: &ServerProcess, token: &str) -> Self {
        Self::run(server, token, &["service", "create"])
    }

    fn run(server: &ServerProcess, token: &str, args: &[&str]) -> Self {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"));
        cmd.args(args)
            .env("BERTH_SERVER", &server.url)
            .env("BERTH_TOKEN", token)
            .env("BERTH_PROJECT", "web")
            .env("TERM", "xterm")
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy");
        let mut p = Session::spawn(cmd).expect("spawn under a pty");
        // The size the rendered screen has (see `finish_rendered`).
        p.get_process_mut()
            .set_window_size(200, 300)
            .expect("the pty's size");
        p.set_expect_timeout(Some(Duration::from_secs(30)));
        Pty {
            p,
            screen: Vec::new(),
        }
    }

    /// Waits for `prompt`, then types `keys`.
    fn answer(&mut self, prompt: &str, keys: &str) {
        let m = self.p.expect(prompt).unwrap_or_else(|e| {
            panic!(
                "waiting for {prompt:?}: {e}; screen so far:\n{}",
                self.text()
            )
        });
        self.screen.extend_from_slice(m.before());
        for part in m.matches() {
            self.screen.extend_from_slice(part);
        }
        self.p.send(keys).unwrap();
    }

    /// Ends like [`Pty::finish`], with the screen as a terminal shows it at the
    /// end (escape sequences applied: redrawn bars once, cleared lines gone).
    fn finish_rendered(mut self) -> (bool, String) {
        let m = self.p.expect(Eof).unwrap();
        self.screen.extend_from_slice(m.before());
        for part in m.matches() {
            self.screen.extend_from_slice(part);
        }
        let status = self.p.get_process().wait().unwrap();
        let ok = matches!(status, expectrl::WaitStatus::Exited(_, 0));
        let mut term = vt100::Parser::new(300, 200, 0);
        // A pty turns each \n into \r\n already.
        term.process(&self.screen);
        (ok, term.screen().contents())
    }

    fn finish(mut self) -> (bool, String) {
        let m = self.p.expect(Eof).unwrap();
        self.screen.extend_from_slice(m.before());
        for part in m.matches() {
            self.screen.extend_from_slice(part);
        }
        let status = self.p.get_process().wait().unwrap();
        let ok = matches!(status, expectrl::WaitStatus::Exited(_, 0));
        (ok, self.text())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen).into_owned()
    }
}

#[test]
fn the_create_wizard_asks_tests_and_never_echoes_the_password() {
    let reg = LocalRegistry::htpasswd(&[("ci", PASSWORD)]);
    berth_testkit::fixtures::busybox(
        "echo hello from the wizard; trap 'exit 0' TERM; while :; do sleep 1; done",
    )
    .push(&reg, "team/app:v1");
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work.path().join("data"), &reg.authority());
    let home = work.path().join("home");
    let out = berth(&server, &server.admin_token, &home)
        .args(["user", "create", "alice", "--json"])
        .output()
        .unwrap();
    let alice = json(&out)["token"].as_str().unwrap().to_owned();
    let out = berth(&server, &alice, &home)
        .args(["project", "create", "web"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let image = format!("{}/team/app:v1", reg.authority());

    // A wrong password, a retry with the right one, Save.
    let mut w = Pty::start(&server, &alice);
    w.answer("Service name", "api\r");
    w.answer("Image", &format!("{image}\r"));
    w.answer("Add environment variables?", "n");
    w.answer("Private registry?", "y");
    // The URL is pre-filled from the image; Enter accepts it.
    w.answer("Registry URL", "\r");
    w.answer("Username", "ci\r");
    w.answer("Password or token", &format!("{WRONG}\r"));
    w.answer("Try other credentials?", "y");
    w.answer("Registry URL", "\r");
    w.answer("Username", "\r");
    w.answer("Password or token", &format!("{PASSWORD}\r"));
    w.answer("Save?", "y");
    let (ok, screen) = w.finish();
    assert!(ok, "the wizard failed:\n{screen}");
    for shown in [
        "FAIL",
        "auth_failed",
        "ok  ",
        "manifest",
        "registry:",
        "verified",
    ] {
        assert!(
            screen.contains(shown),
            "{shown:?} not on the screen:\n{screen}"
        );
    }
    for secret in [PASSWORD, WRONG] {
        assert!(!screen.contains(secret), "a password was echoed:\n{screen}");
    }
    let out = berth(&server, &alice, &home)
        .args(["service", "show", "api", "--json"])
        .output()
        .unwrap();
    let v = json(&out);
    assert_eq!(v["registry"]["verified"], true, "{v}");
    assert_eq!(v["registry"]["password_set"], true, "{v}");

    // Deploy on a terminal: a spinner, a bar per blob, the first output lines.
    let (ok, screen) = Pty::run(&server, &alice, &["deploy", "api"]).finish();

    // A cached redeploy, as the terminal shows it at the end: each output line
    // once (none cut), every blob's bar, the URL last.
    let (again_ok, again) = Pty::run(&server, &alice, &["deploy", "api"]).finish_rendered();
    assert!(again_ok, "{again}");
    let lines: Vec<&str> = again
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    let hello = lines
        .iter()
        .filter(|l| l.contains("hello from the wizard"))
        .count();
    assert_eq!(hello, 1, "the output line is shown {hello} times:\n{again}");
    let bars = lines
        .iter()
        .filter(|l| {
            l.contains("[")
                && (l.contains("cached") || l.contains("applied") || l.contains("downloaded"))
        })
        .count();
    assert!(bars >= 2, "not every blob keeps its bar:\n{again}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("deployment ") && l.contains(" DEPLOYED ")),
        "the verdict is not a line of its own:\n{again}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("url: http://api.web.localhost:")),
        "the URL is not last:\n{again}"
    );
    let out = berth(&server, &alice, &home)
        .args(["service", "terminate", "api"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(ok, "{screen}");
    for shown in ["applied", "DEPLOYED", "hello from the wizard", "=="] {
        assert!(
            screen.contains(shown),
            "{shown:?} not on the screen:\n{screen}"
        );
    }

    // A failing test, no retry, "Save without verifying?" yes.
    let mut w = Pty::start(&server, &alice);
    w.answer("Service name", "api2\r");
    w.answer("Image", &format!("{image}\r"));
    w.answer("Add environment variables?", "n");
    w.answer("Private registry?", "y");
    w.answer("Registry URL", "\r");
    w.answer("Username", "ci\r");
    w.answer("Password or token", &format!("{WRONG}\r"));
    w.answer("Try other credentials?", "n");
    w.answer("Save without verifying?", "y");
    let (ok, screen) = w.finish();
    assert!(ok, "{screen}");
    assert!(!screen.contains(WRONG), "{screen}");
    let out = berth(&server, &alice, &home)
        .args(["service", "show", "api2", "--json"])
        .output()
        .unwrap();
    assert_eq!(json(&out)["registry"]["verified"], false);

    // No private registry: an anonymous service.
    let mut w = Pty::start(&server, &alice);
    w.answer("Service name", "web\r");
    w.answer("Image", "nginx:1.27\r");
    w.answer("Add environment variables?", "y");
    w.answer("NAME=VALUE", "GREETING=hello world\r");
    w.answer("NAME=VALUE", "novalue\r");
    w.answer("not NAME=VALUE", "\x15MODE=prod\r");
    w.answer("NAME=VALUE", "\r");
    w.answer("Private registry?", "n");
    let (ok, screen) = w.finish();
    assert!(ok, "{screen}");
    assert!(screen.contains("none (anonymous pulls)"), "{screen}");
    assert!(screen.contains("GREETING='hello world'"), "{screen}");
    let out = berth(&server, &alice, &home)
        .args(["service", "show", "web", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        json(&out)["env"],
        serde_json::json!({"GREETING": "hello world", "MODE": "prod"})
    );

    // Without a terminal, a missing value is a usage error naming it.
    let out = berth(&server, &alice, &home)
        .args(["service", "create", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--image"));
}

/// `--secret` on a terminal: a masked prompt per secret, in the order given;
/// the values never on the screen.
#[test]
fn secret_values_are_asked_for_masked() {
    const API_KEY: &str = "Pty-Api-Key-77";
    const TLS_KEY: &str = "Pty-Tls-Key-88";
    let work = tempfile::tempdir().unwrap();
    let server = start_server(&work.path().join("data"), "");
    let home = work.path().join("home");
    let token = server.admin_token.clone();
    let out = berth(&server, &token, &home)
        .args(["project", "create", "web"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut w = Pty::run(
        &server,
        &token,
        &[
            "service",
            "create",
            "api",
            "--image",
            "nginx:1.27",
            "--secret",
            "API_KEY",
            "--secret-file",
            "TLS_KEY",
        ],
    );
    w.answer("Value of secret API_KEY: ", &format!("{API_KEY}\r"));
    w.answer("Value of secret TLS_KEY: ", &format!("{TLS_KEY}\r"));
    let (ok, screen) = w.finish();
    assert!(ok, "{screen}");
    assert!(screen.contains("API_KEY (env, set "), "{screen}");
    assert!(
        screen.contains("TLS_KEY (file /run/secrets/TLS_KEY, set "),
        "{screen}"
    );
    for secret in [API_KEY, TLS_KEY] {
        assert!(!screen.contains(secret), "a secret was echoed:\n{screen}");
    }
}
