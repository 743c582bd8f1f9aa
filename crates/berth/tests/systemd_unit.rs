//! The systemd units in `deploy/`: `systemd-analyze verify` accepts them (where
//! systemd-analyze is installed; it prints each one's exposure too), and berth
//! deploys a container with nothing more than the runc unit grants it: its
//! capability bounding set and no_new_privs, applied with `setpriv`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name)
}

/// The unit's text with its ExecStart pointed at the binary under test (verify
/// checks that the program exists).
fn unit_for_test(name: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit(name)).unwrap().replace(
        "/usr/local/bin/berth",
        assert_cmd::cargo::cargo_bin("berth").to_str().unwrap(),
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_units_verify() {
    let Ok(analyze) = which("systemd-analyze") else {
        eprintln!("systemd-analyze is not installed: the units are not verified here");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for name in ["berth.service", "berth-kubernetes.service"] {
        let path = unit_for_test(name, dir.path());
        let out = Command::new(&analyze)
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
        let out = Command::new(&analyze)
            .args(["security", "--offline=true"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let level = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_default();
        println!("{name}: {}", level.trim());
    }
}

fn which(program: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

/// `CapabilityBoundingSet=CAP_A CAP_B` as setpriv's `-all,+a,+b`.
fn bounding_set(unit_text: &str) -> String {
    let caps = unit_text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit names its capabilities");
    let mut out = vec!["-all".to_owned()];
    for c in caps.split_whitespace() {
        out.push(format!(
            "+{}",
            c.trim_start_matches("CAP_").to_ascii_lowercase()
        ));
    }
    out.join(",")
}

#[test]
fn berth_deploys_with_only_what_the_unit_grants() {
    berth_testkit::require("runc");
    let setpriv = berth_testkit::require("setpriv");
    let text = std::fs::read_to_string(unit("berth.service")).unwrap();
    assert!(text.contains("\nNoNewPrivileges=yes"));
    let reg = berth_testkit::TeamRegistry::start();
    reg.push_busybox("web", "echo hello under the unit; exec sleep 600");
    let host = reg.url();
    let work = tempfile::tempdir().unwrap();
    let home = work.path().join("home");
    let wrapper = vec![
        setpriv.to_string_lossy().into_owned(),
        "--nnp".to_owned(),
        format!("--bounding-set={}", bounding_set(&text)),
        "--inh-caps=-all".to_owned(),
    ];
    let server = start_server_under(&work.path().join("data"), &host, &wrapper);
    let cli = || berth(&server, &server.admin_token, &home);
    let out = cli().args(["project", "create", "web"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let image = format!("{host}/team/app:web");
    create_service_as_ci(&server, &home, &host, "api", &image);
    let out = cli().args(["deploy", "api"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let log = std::fs::read_to_string(work.path().join("data.log")).unwrap_or_default();
    assert!(out.status.success(), "{err}\nserver log:\n{log}");
    let out = cli().args(["logs", "api"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hello under the unit"),
        "{out:?}"
    );
    let out = cli()
        .args(["service", "terminate", "api"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
