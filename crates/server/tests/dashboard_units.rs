//! The dashboard's pure modules (routes, formatting, the credentials form's rules)
//! under node's own test runner: `crates/server/dashboard/tests/*.test.mjs`,
//! importing the modules the binary serves, as they are (copied beside the
//! module the server makes, `registry-rules.js`).

use std::path::Path;
use std::process::Command;

#[test]
fn the_dashboard_modules_pass_their_unit_tests() {
    let node = berth_testkit::require("node");
    let served = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    let copy = tempfile::tempdir().unwrap();
    for sub in ["", "tests"] {
        std::fs::create_dir_all(copy.path().join(sub)).unwrap();
        for e in std::fs::read_dir(served.join(sub)).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".js") || name.ends_with(".mjs") || name == "package.json" {
                std::fs::copy(e.path(), copy.path().join(sub).join(&name)).unwrap();
            }
        }
    }
    std::fs::write(
        copy.path().join("registry-rules.js"),
        berth_server::dashboard::registry_rules_js(),
    )
    .unwrap();
    let dir = copy.path().join("tests");
    // Named one by one: node 20's `--test` takes files, not globs.
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no test in {}", dir.display());
    let output = Command::new(node)
        .arg("--test")
        .args(&files)
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the dashboard's unit tests failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
}
