//! A service's run settings from the CLI (issue 24), against the real `berth
//! server` binary: variables from flags and an env file, secrets read from stdin
//! (never argv), command and args, a volume, a region; `service show` names the
//! secrets and never prints a value; `service set` changes and removes; bad input
//! is a usage error (exit 2) that quotes no value; `berth deploy` says why a
//! deployment for a region no replica serves waits.

mod common;

use std::io::BufRead;
use std::process::{Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const API_KEY: &str = "sk-live-Api-Key-0001";
const DB_PASS: &str = "Db-Pass-Word-0002";
const TLS_KEY: &str = "-----BEGIN KEY----- Tls-0003";
const IN_BAD_FILE: &str = "Pasted-Token-0004";
const NEVER_SAVED: &str = "Never-Saved-0005";
const SECRETS: [&str; 5] = [API_KEY, DB_PASS, TLS_KEY, IN_BAD_FILE, NEVER_SAVED];

/// A server with the project `web`, and everything the CLI printed.
struct Cli {
    server: ServerProcess,
    home: std::path::PathBuf,
    token: String,
    log: std::path::PathBuf,
    transcript: String,
    _work: tempfile::TempDir,
}

impl Cli {
    fn start() -> Self {
        let work = tempfile::tempdir().unwrap();
        let home = work.path().join("home");
        let data = work.path().join("data");
        let server = start_server(&data, "");
        let out = berth(&server, &server.admin_token, &home)
            .args(["user", "create", "alice", "--json"])
            .output()
            .unwrap();
        let token = json(&out)["token"].as_str().unwrap().to_owned();
        let out = berth(&server, &token, &home)
            .args(["project", "create", "web"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        Cli {
            server,
            home,
            token,
            log: data.with_extension("log"),
            transcript: String::new(),
            _work: work,
        }
    }

    /// `berth ARGS` with `stdin` piped in; argv never carries a secret.
    fn run(&mut self, args: &[&str], stdin: &str) -> Output {
        for secret in SECRETS {
            assert!(!args.iter().any(|a| a.contains(secret)), "a secret in argv");
        }
        let out = berth(&self.server, &self.token, &self.home)
            .args(args)
            .write_stdin(stdin)
            .output()
            .unwrap();
        self.transcript
            .push_str(&String::from_utf8_lossy(&out.stdout));
        self.transcript
            .push_str(&String::from_utf8_lossy(&out.stderr));
        out
    }

    fn ok(&mut self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn show(&mut self, name: &str) -> serde_json::Value {
        let out = self.run(&["service", "show", name, "--json"], "");
        assert!(out.status.success(), "{out:?}");
        json(&out)
    }

    /// Exits 2 with `message` on stderr.
    fn usage(&mut self, args: &[&str], stdin: &str, message: &str) {
        let out = self.run(args, stdin);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(message), "{args:?}: {message:?} not in {err}");
    }
}

/// The secrets' names and how each is given, in name order.
fn secrets(v: &serde_json::Value) -> Vec<(String, String)> {
    let s = v["secrets"].as_array().expect("secrets");
    s.iter()
        .map(|s| {
            assert!(s["updated_at"].is_string(), "{s}");
            let field = |f: &str| s[f].as_str().unwrap().to_owned();
            (field("name"), field("as"))
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn settings_from_the_cli_and_no_secret_ever_shown() {
    let mut cli = Cli::start();
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("web.env");
    std::fs::write(
        &env_file,
        "# settings\n\nexport LOG_LEVEL=debug\nMODE='prod'\nGREETING=from the file\n",
    )
    .unwrap();
    let env_file = env_file.to_str().unwrap();

    // Create: variables (a flag over the file's), one secret from stdin, the rest.
    let v = json(&cli.run(
        &[
            "service",
            "create",
            "api",
            "--image",
            "nginx:1.27",
            "--env",
            "GREETING=hello",
            "--env-file",
            env_file,
            "--secret",
            "API_KEY",
            "--volume",
            "/data:64",
            "--region",
            "eu",
            "--command",
            "/bin/sh",
            "--command",
            "-c",
            "--command",
            "echo $GREETING",
            "--args",
            "--verbose",
            "--json",
        ],
        &format!("{API_KEY}\n"),
    ));
    assert_eq!(
        v["env"],
        serde_json::json!({"GREETING": "hello", "LOG_LEVEL": "debug", "MODE": "prod"})
    );
    assert_eq!(secrets(&v), pairs(&[("API_KEY", "env")]));
    assert_eq!(
        v["command"],
        serde_json::json!(["/bin/sh", "-c", "echo $GREETING"])
    );
    assert_eq!(v["args"], serde_json::json!(["--verbose"]));
    assert_eq!(
        v["volume"],
        serde_json::json!({"path": "/data", "size_mb": 64})
    );
    assert_eq!(v["region"], "eu");

    // Shown: names and settings, no value.
    let shown = cli.ok(&["service", "show", "api"], "");
    for line in [
        "env:      GREETING=hello",
        "          LOG_LEVEL=debug",
        "secrets:  API_KEY (env, set ",
        "command:  /bin/sh -c 'echo $GREETING'",
        "args:     --verbose",
        "volume:   /data (64 MiB)",
        "region:   eu",
    ] {
        assert!(shown.contains(line), "{line:?} not in\n{shown}");
    }

    // Set: two secrets, one line each, in the order given (one as a file).
    cli.ok(
        &[
            "service",
            "set",
            "api",
            "--secret-file",
            "TLS_KEY",
            "--secret",
            "DB_PASS",
        ],
        &format!("{TLS_KEY}\n{DB_PASS}\n"),
    );
    let v = cli.show("api");
    assert_eq!(
        secrets(&v),
        pairs(&[("API_KEY", "env"), ("DB_PASS", "env"), ("TLS_KEY", "file")])
    );
    let shown = cli.ok(&["service", "show", "api"], "");
    assert!(
        shown.contains("TLS_KEY (file /run/secrets/TLS_KEY, set "),
        "{shown}"
    );

    // Set: removals; the others keep theirs.
    let out = cli.ok(
        &[
            "service",
            "set",
            "api",
            "--unset-env",
            "GREETING",
            "--env",
            "NEW=1",
            "--remove-secret",
            "API_KEY",
            "--no-args",
            "--region",
            "",
        ],
        "",
    );
    assert!(out.contains("apply at the next deploy"), "{out}");
    let v = cli.show("api");
    assert_eq!(
        v["env"],
        serde_json::json!({"LOG_LEVEL": "debug", "MODE": "prod", "NEW": "1"})
    );
    assert_eq!(
        secrets(&v),
        pairs(&[("DB_PASS", "env"), ("TLS_KEY", "file")])
    );
    assert_eq!(v["args"], serde_json::Value::Null);
    assert_eq!(v["region"], serde_json::Value::Null);
    assert_eq!(v["command"][0], "/bin/sh", "{v}");

    // The server refuses a bad name, naming it and not the value.
    let out = cli.run(&["service", "set", "api", "--secret", "1BAD"], NEVER_SAVED);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1BAD"),
        "{out:?}"
    );

    // Nothing secret anywhere: the CLI's output, the audit, the server's log.
    let audit = cli.ok(&["audit", "--json"], "");
    let log = std::fs::read_to_string(&cli.log).unwrap();
    for secret in SECRETS {
        assert!(!cli.transcript.contains(secret), "{secret} printed");
        assert!(!audit.contains(secret), "{secret} in the audit");
        assert!(!log.contains(secret), "{secret} in the server's log");
    }
}

#[test]
fn bad_settings_are_usage_errors_that_quote_no_value() {
    let mut cli = Cli::start();
    let dir = tempfile::tempdir().unwrap();
    let bad_file = dir.path().join("bad.env");
    std::fs::write(&bad_file, format!("A=1\n# c\n{IN_BAD_FILE}\n")).unwrap();
    let bad_file = bad_file.to_str().unwrap();
    let create = ["service", "create", "x", "--image", "nginx:1.27"];
    let with = |more: &[&'static str]| [&create[..], more].concat();

    cli.usage(&with(&["--volume", "/data"]), "", "PATH:SIZE_MB");
    cli.usage(&with(&["--volume", "/data:0"]), "", "above 0");
    cli.usage(&with(&["--env", "NOVALUE"]), "", "NAME=VALUE");
    let args = [&create[..], &["--env-file", bad_file]].concat();
    cli.usage(&args, "", "line 3 is not NAME=VALUE");
    cli.usage(&with(&["--env-file", "/nonexistent.env"]), "", "--env-file");
    cli.usage(&with(&["--secret", "A"]), "", "is empty");
    cli.usage(
        &with(&["--secret", "A", "--secret", "B"]),
        &format!("{NEVER_SAVED}\n"),
        "2 secrets (A, B) take one line each on stdin, in the order given; it has 1",
    );
    cli.usage(
        &with(&["--secret", "A", "--secret-file", "A"]),
        "",
        "named twice",
    );
    cli.usage(
        &with(&["--registry-url", "127.0.0.1:1", "--registry-username", "u"])
            .iter()
            .copied()
            .chain(["--registry-password-stdin", "--secret", "A"])
            .collect::<Vec<_>>(),
        NEVER_SAVED,
        "both read stdin",
    );
    cli.ok(&create, "");
    cli.usage(
        &["service", "set", "x", "--env", "A=1", "--unset-env", "A"],
        "",
        "A is both set and removed",
    );
    cli.usage(
        &["service", "set", "x", "--command", "a", "--no-command"],
        "",
        "cannot be used with",
    );
    // Nothing was saved by the refused commands.
    let v = cli.show("x");
    assert_eq!(v["env"], serde_json::json!({}));
    assert_eq!(v["secrets"], serde_json::json!([]));
    assert!(cli.run(&["service", "show", "y"], "").status.code() != Some(0));
    for secret in SECRETS {
        assert!(!cli.transcript.contains(secret), "{secret} printed");
    }
}

#[test]
fn deploy_says_why_a_deployment_waits_for_its_region() {
    let mut cli = Cli::start();
    cli.ok(
        &[
            "service",
            "create",
            "far",
            "--image",
            "nginx:1.27",
            "--region",
            "mars",
        ],
        "",
    );
    let out = cli.run(&["deploy", "far", "--detach"], "");
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("waiting: no replica serves region mars"),
        "{err}"
    );

    // Watching: the reason, once, instead of a silent wait.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("berth"))
        .args(["deploy", "far"])
        .env("BERTH_SERVER", &cli.server.url)
        .env("BERTH_TOKEN", &cli.token)
        .env("BERTH_PROJECT", "web")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("no replica serves region mars") => break true,
            Ok(line) => seen.push(line),
            Err(_) => break false,
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(found, "no reason given; stderr: {seen:?}");
    assert!(seen.iter().any(|l| l == "==> PENDING_DEPLOY"), "{seen:?}");
}
