//! The map of the workspace, guarded: dependencies point one way, binary
//! (`berth`) -> server (`berth-server`) -> (`berth-vault`, `berth-store`,
//! `berth-runtime`, `berth-kubernetes`, `berth-ingress`) -> `berth-registry` ->
//! `berth-types`. `berth-api`, the HTTP API's types, is shared by the binary and
//! the server and sits on the registry (a 422 carries its preflight report);
//! `berth-kubernetes` and `berth-ingress` (the proxy) use none of berth's crates;
//! `berth-testkit` is for tests only. The lower layers pull in nothing of the
//! layers above (no HTTP server, database or container runtime code in the
//! registry client or the API types, no network in the types). Read from `cargo
//! metadata`, so a new edge fails here before it grows roots.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Each workspace crate and the workspace crates it may depend on (normal and
/// build dependencies; `berth-testkit` is for tests only, a dev-dependency).
const ALLOWED: &[(&str, &[&str])] = &[
    ("berth-types", &[]),
    ("berth-registry", &["berth-types"]),
    ("berth-api", &["berth-registry", "berth-types"]),
    ("berth-vault", &["berth-types"]),
    ("berth-store", &["berth-types"]),
    ("berth-runtime", &["berth-registry", "berth-types"]),
    ("berth-kubernetes", &[]),
    ("berth-ingress", &[]),
    (
        "berth-server",
        &[
            "berth-api",
            "berth-vault",
            "berth-store",
            "berth-runtime",
            "berth-kubernetes",
            "berth-ingress",
            "berth-registry",
            "berth-types",
        ],
    ),
    (
        "berth",
        &["berth-server", "berth-api", "berth-registry", "berth-types"],
    ),
    ("berth-testkit", &[]),
];

/// Outside crates a layer must not depend on directly: what would make it know
/// of a layer it should not.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "berth-types",
        &["tokio", "reqwest", "hyper", "axum", "sqlx"],
    ),
    (
        "berth-registry",
        &[
            "axum",
            "sqlx",
            "tower-http",
            "utoipa",
            "libc",
            "rustix",
            "tar",
        ],
    ),
    (
        "berth-api",
        &["axum", "sqlx", "tower-http", "hyper", "reqwest", "tokio"],
    ),
    ("berth-store", &["axum", "reqwest", "hyper", "utoipa"]),
    ("berth-vault", &["axum", "sqlx", "utoipa"]),
    ("berth-runtime", &["axum", "sqlx", "utoipa"]),
    ("berth-kubernetes", &["axum", "sqlx", "utoipa", "reqwest"]),
    // The proxy speaks HTTP with hyper itself: no web framework, database or
    // outbound client of the registry's kind.
    ("berth-ingress", &["axum", "sqlx", "utoipa", "reqwest"]),
];

#[test]
fn dependencies_point_one_way() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(k, v)| (*k, v.iter().copied().collect()))
        .collect();
    let forbidden: BTreeMap<&str, &[&str]> = FORBIDDEN.iter().copied().collect();
    let mut wrong = Vec::new();
    let packages = meta["packages"].as_array().unwrap();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        let Some(ok) = allowed.get(name) else {
            wrong.push(format!(
                "{name} is a new workspace crate: give it a place in ALLOWED (and ARCHITECTURE.md)"
            ));
            continue;
        };
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            let dev = d["kind"].as_str() == Some("dev");
            if dep.starts_with("berth") {
                if dep == "berth-testkit" && !dev {
                    wrong.push(format!("{name} -> berth-testkit outside dev-dependencies"));
                }
                if !dev && !ok.contains(dep) {
                    wrong.push(format!("{name} -> {dep}"));
                }
            } else if !dev && forbidden.get(name).is_some_and(|f| f.contains(&dep)) {
                wrong.push(format!(
                    "{name} -> {dep} (an outside crate of another layer)"
                ));
            }
        }
    }
    assert_eq!(
        packages.len(),
        ALLOWED.len(),
        "every workspace crate has a place"
    );
    assert!(
        wrong.is_empty(),
        "dependency edges outside binary -> server -> (vault, store, runtime) -> registry -> types:\n  {}",
        wrong.join("\n  ")
    );
}
