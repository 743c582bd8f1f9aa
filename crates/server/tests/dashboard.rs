//! The dashboard in a real browser: Debian's chromium, driven by Playwright
//! (`tests/dashboard/browser.mjs`), against this server and the token registry.
//! The script signs in, creates a project and services through the wizard (a
//! failing Test Connection, a passing one, Save without verifying, the rate-limit
//! message), follows a deploy to DEPLOYED with its output and a failed one with
//! the registry's answer, edits masked credentials leaving the password as-is,
//! removes credentials, terminates, reads the audit log, saves a Google service
//! account key file, shows an ECR role's external id, runs axe-core on every
//! page, and checks the page and the browser's storage for the password after
//! each save. Screenshots: `target/dashboard-screenshots/`.
//!
//! A second walk (`tests/dashboard/settings.mjs`) sets a service's run settings
//! through the wizard and the Settings tab and searches the page and every answer
//! of the API for the secrets' values. Screenshots:
//! `target/dashboard-settings-screenshots/`.

mod common;

use common::{config, Db, Registry, Server, PASSWORD};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `scripts/test.sh` installed Playwright and axe-core (`npm ci`).
fn scripts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard")
}

/// Runs `script` (under `tests/dashboard/`) with node, `env` and `OUT` (its
/// screenshots' directory, emptied first), no proxy; its stdout once it passed,
/// which must end with `done`.
async fn walk(script: &str, env: Vec<(&'static str, OsString)>, out: &str, done: &str) -> String {
    let chromium = berth_testkit::require("chromium");
    let node = berth_testkit::require("node");
    assert!(
        scripts().join("node_modules/playwright-core").is_dir(),
        "Playwright is not installed; run `scripts/test.sh` (it runs npm ci in {})",
        scripts().display()
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(out);
    let _ = std::fs::remove_dir_all(&out);
    let script = scripts().join(script);
    let output = tokio::task::spawn_blocking(move || {
        Command::new(node)
            .arg(script)
            .envs(env)
            .env("OUT", &out)
            .env("CHROMIUM", chromium)
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .output()
    })
    .await
    .unwrap()
    .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(done), "{stdout}");
    stdout
}

/// The run settings through the wizard and the Settings tab; no secret's value
/// in the page, in any answer of the API or in the data dir.
#[tokio::test(flavor = "multi_thread")]
async fn run_settings_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, "", None)).await;
    let carol = server.admin().new_user("carol").await;
    walk(
        "settings.mjs",
        vec![
            ("BERTH_URL", server.base().into()),
            ("TOKEN", carol.token.clone().into()),
        ],
        "dashboard-settings-screenshots",
        "settings: all checks passed",
    )
    .await;
    // The values the script typed (settings.mjs's SECRETS), sealed at rest.
    for f in common::files_under(&server.dir) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for secret in ["db-Pw-9f3Kq-first", "zT8v", "tok-N4wR2-added"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds {secret}",
                f.display()
            );
        }
    }
    server.running.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_in_a_browser() {
    berth_testkit::require("runc");
    let registry = Registry::start();
    let url = registry.url();
    registry.push_busybox("web", "echo hello from berth; exec sleep 600");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path(), Db::Sqlite, &url, None)).await;
    let alice = server.admin().new_user("alice").await;
    let bob = server.admin().new_user("bob").await;
    walk(
        "browser.mjs",
        vec![
            ("BERTH_URL", server.base().into()),
            ("ALICE_TOKEN", alice.token.clone().into()),
            ("BOB_TOKEN", bob.token.clone().into()),
            ("GCP_KEY", berth_testkit::fixtures::GCP_KEY.into()),
            ("REG", url.clone().into()),
            ("REG_USER", "ci".into()),
            ("REG_PASSWORD", PASSWORD.into()),
        ],
        "dashboard-screenshots",
        "dashboard: all checks passed",
    )
    .await;

    // Nothing the dashboard did wrote the password or the key where berth keeps
    // its data.
    for f in common::files_under(&server.dir) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for secret in [PASSWORD, "not-a-real-key-Gk3y"] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds {secret}",
                f.display()
            );
        }
    }
    server.running.stop().await;
}
