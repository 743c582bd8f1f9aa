//! ARCHITECTURE.md kept true to the code, as far as text can be checked:
//! - its code map names every module: each `.rs` file under `crates/<crate>/src/`
//!   appears, by its path from `src/` (`deploy/run.rs`, `cache.rs`), in that
//!   crate's section of the map (the lines from `  <crate>/` to the next crate).
//!   A crate's root (`lib.rs`, `main.rs`) is covered by the section itself;
//! - every `.rs` file the map names in a crate's section exists (a rename that
//!   the map missed fails here);
//! - every invariant says what guards it ("Guarded by"), and each test or file
//!   named there exists: a `tests::name` or `snake_case_name` is a `fn`, a `mod`
//!   or the first argument of a test macro (`api_test!(name, ...)`) somewhere under
//!   `crates/*/src/` or `crates/*/tests/`; a `path.rs` is a file under `crates/`.
//!
//! What a module holds, or whether a test guards what the document says, stays
//! for the reader to judge; this only keeps names from drifting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn document() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md")
}

/// Every file under `dir`, as paths relative to `dir` with `/` separators.
fn files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.path().is_dir() {
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.push(name);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// The workspace's crates: the directories under `crates/` that have a `src/`.
fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("crates"))
        .expect("crates/")
        .flatten()
        .filter(|e| e.path().join("src").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no crate found under crates/");
    names
}

/// The code map's text for each crate: from its line `  <crate>/  ...` (two
/// spaces in) to the next such line or the first line that is not indented.
fn sections(doc: &str) -> BTreeMap<String, String> {
    let after = doc
        .split("## Code map")
        .nth(1)
        .expect("a `## Code map` heading");
    let map = after
        .split("```")
        .nth(1)
        .expect("the code map's code block");
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in map.lines() {
        if line.starts_with("  ") && !line.starts_with("   ") {
            let first = line.split_whitespace().next().unwrap_or("");
            current = first.strip_suffix('/').map(str::to_owned);
        } else if !line.starts_with(' ') {
            current = None;
        }
        if let Some(c) = &current {
            let text = out.entry(c.clone()).or_default();
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `text` names `path` whole: not as the tail of a longer path
/// (`log.rs` is not named by `deploy/log.rs`) nor of a longer word.
fn names(text: &str, path: &str) -> bool {
    text.match_indices(path).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + path.len()..].chars().next();
        !before.is_some_and(|c| is_name_char(c) || c == '/') && !after.is_some_and(is_name_char)
    })
}

#[test]
fn the_code_map_names_every_module() {
    let doc = document();
    let sections = sections(&doc);
    let mut missing = Vec::new();
    for krate in crates() {
        let Some(section) = sections.get(&krate) else {
            missing.push(format!(
                "crates/{krate}: no section `  {krate}/` in the code map"
            ));
            continue;
        };
        let modules = files(&root().join("crates").join(&krate).join("src"));
        let modules: Vec<&String> = modules.iter().filter(|f| f.ends_with(".rs")).collect();
        assert!(!modules.is_empty(), "crates/{krate}/src has no .rs file");
        for module in modules {
            if module == "lib.rs" || module == "main.rs" {
                continue;
            }
            if !names(section, module) {
                missing.push(format!("crates/{krate}/src/{module}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name these modules (by their path from \
         src/, in their crate's section):\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_file_the_code_map_names_exists() {
    let doc = document();
    let mut stale = Vec::new();
    let sections = sections(&doc);
    assert!(!sections.is_empty(), "the code map has no crate section");
    for (krate, section) in &sections {
        let dir = root().join("crates").join(krate);
        let words = section.split(|c: char| !(is_name_char(c) || c == '/' || c == '.'));
        for word in words.filter(|w| w.ends_with(".rs")) {
            if !dir.join("src").join(word).is_file() && !dir.join(word).is_file() {
                stale.push(format!("{krate}: {word}"));
            }
        }
    }
    assert!(
        stale.is_empty(),
        "the code map names files that are not in their crate (neither under src/ \
         nor from the crate's directory):\n  {}",
        stale.join("\n  ")
    );
}

/// The Invariants section's bullets, each as one line of text.
fn invariants(doc: &str) -> Vec<String> {
    let after = doc
        .split("## Invariants")
        .nth(1)
        .expect("an `## Invariants` heading");
    let section = after.split("\n## ").next().unwrap_or("");
    let mut bullets: Vec<String> = Vec::new();
    for line in section.lines() {
        if let Some(start) = line.strip_prefix("- ") {
            bullets.push(start.to_owned());
        } else if let Some(last) = bullets.last_mut() {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    bullets
}

/// Whether `name` is defined in `code` (whitespace collapsed): a function, a
/// module, or a test macro's first argument (`api_test!(name, |fx| ...)`).
fn defines(code: &str, name: &str) -> bool {
    [
        format!("fn {name}("),
        format!("fn {name}<"),
        format!("mod {name} {{"),
        format!("mod {name};"),
        format!("!({name},"),
        format!("!( {name},"),
    ]
    .iter()
    .any(|pattern| code.contains(pattern.as_str()))
}

#[test]
fn every_invariant_names_a_guard_that_exists() {
    let doc = document();
    let crates_dir = root().join("crates");
    let all_files = files(&crates_dir);
    let code: Vec<String> = all_files
        .iter()
        .filter(|f| f.ends_with(".rs") && (f.contains("/src/") || f.contains("/tests/")))
        .map(|f| std::fs::read_to_string(crates_dir.join(f)).expect("a source file"))
        .map(|text| text.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();

    let bullets = invariants(&doc);
    assert!(!bullets.is_empty(), "the Invariants section has no bullet");
    let mut problems = Vec::new();
    for bullet in &bullets {
        let title: String = bullet.chars().take(70).collect();
        let Some((_, guards)) = bullet.split_once("Guarded by") else {
            problems.push(format!("no \"Guarded by\": {title}"));
            continue;
        };
        // Backticked spans are the odd pieces between backticks.
        let spans = guards.split('`').skip(1).step_by(2);
        let mut checked = 0;
        for span in spans {
            let span = span.strip_prefix("crates/").unwrap_or(span);
            if span.ends_with(".rs") {
                checked += 1;
                let found = all_files
                    .iter()
                    .any(|f| f == span || f.ends_with(&format!("/{span}")));
                if !found {
                    problems.push(format!("no file {span}: {title}"));
                }
            } else if span
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
                && (span.contains('_') || span.contains("::"))
            {
                checked += 1;
                let name = span.rsplit("::").next().unwrap_or(span);
                if !code.iter().any(|text| defines(text, name)) {
                    problems.push(format!("no test `{span}`: {title}"));
                }
            }
        }
        if checked == 0 {
            problems.push(format!("\"Guarded by\" names no test or file: {title}"));
        }
    }
    assert!(
        problems.is_empty(),
        "ARCHITECTURE.md's invariants name guards that do not exist:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_checks_read_what_is_written() {
    assert!(names("cache.rs (blobs), pull.rs", "cache.rs"));
    assert!(names("    deploy/run.rs   one deploy", "deploy/run.rs"));
    assert!(!names("    deploy/log.rs   reading", "log.rs"));
    assert!(!names("the changelog.rs file", "log.rs"));
    assert!(defines("async fn a_b_c() {", "a_b_c"));
    assert!(defines("api_test!( a_b_c, |fx| {", "a_b_c"));
    assert!(defines("#[cfg(test)] mod tests {", "tests"));
    assert!(!defines("let a_b_c = 1;", "a_b_c"));
    let doc = "## Code map\n\n```\ncrates/\n  one/  x   a.rs\n    b/c.rs  y\n  two/  z\ndeploy/  w\n```\n";
    let s = sections(doc);
    assert_eq!(s["one"], "  one/  x   a.rs\n    b/c.rs  y\n");
    assert_eq!(s["two"], "  two/  z\n");
}

/// The server's control side (the deploy worker and its rooms, the background
/// checks, credential kinds, the metrics registry) knows nothing of HTTP: no
/// axum, no `ApiError` (`api`), no `routes`, no `AppState` (`state`). Routes
/// translate control errors into API errors at the edge.
#[test]
fn the_control_side_knows_nothing_of_http() {
    let src = root().join("crates/server/src");
    let mut control: Vec<PathBuf> = files(&src.join("deploy"))
        .iter()
        .map(|f| src.join("deploy").join(f))
        .collect();
    for f in ["checks.rs", "kinds.rs", "metrics.rs"] {
        control.push(src.join(f));
    }
    assert!(control.len() > 5, "no control-side file found: {control:?}");
    for path in &control {
        let code = std::fs::read_to_string(path).unwrap();
        for (i, line) in code.lines().enumerate() {
            let line = line.trim_start();
            if line.starts_with("//") {
                continue;
            }
            for banned in [
                "axum",
                "crate::api",
                "crate::routes",
                "crate::state",
                "AppState",
            ] {
                assert!(
                    !line.contains(banned),
                    "{}:{}: the control side uses {banned}: {line}",
                    path.display(),
                    i + 1
                );
            }
        }
    }
}
