//! No import circles between the modules of a crate: `a` uses `b` and `b` uses
//! `a` (or a longer ring) means neither can be read, changed or tested without the
//! other. Read from the sources: every `use` and every `crate::`/`super::`/`self::`
//! path outside `#[cfg(test)]` modules is an edge to the module it names (the
//! longest module prefix of the path). A module's use of its own ancestors (the
//! types it lives inside: `super::Deployer`) is not an edge: a parent's files may
//! use their children, and children what the parent defines, as Rust intends.
//!
//! Hand-written rather than `cargo modules dependencies --acyclic`: that needs a
//! rust-analyzer build per run (minutes) and a network install in CI; this reads
//! text in milliseconds. It sees what it is shown: a glob import (`use a::*`) counts
//! as an edge to `a`, a macro's generated paths are not seen.
//!
//! Run it to print every crate's cycles: `cargo test -p berth --test modules -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose circles are known and being taken apart, with how many modules
/// are in circles: the count may only go down. Today none: every crate has none.
const KNOWN: &[(&str, usize)] = &[];

type Module = Vec<String>;

/// The module a source file defines, from its path under `src/`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text without comments, string and char literals, and `#[cfg(test)]` items.
fn code(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            i += 2;
            while i < b.len() && !b[i..].starts_with(b"*/") {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'r'
            && (b[i..].starts_with(b"r\"") || b[i..].starts_with(b"r#"))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while j < b.len() && b[j] == b'#' {
                hashes += 1;
                j += 1;
            }
            if j < b.len() && b[j] == b'"' {
                let end: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                j += 1;
                while j < b.len() && !b[j..].starts_with(&end) {
                    j += 1;
                }
                i = j + end.len();
                out.push_str("\"\"");
            } else {
                out.push('r');
                i += 1;
            }
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\''
            && i + 2 < b.len()
            && (b[i + 2] == b'\'' || (b[i + 1] == b'\\' && b[i + 3..].contains(&b'\'')))
        {
            // A char literal ('a', '\n'); a lifetime ('a) is left alone.
            i += 1;
            while i < b.len() && b[i] != b'\'' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    strip_test_items(&out)
}

/// Removes each `#[cfg(test)]` item (up to its closing brace or semicolon).
fn strip_test_items(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let mut depth = 0usize;
        let mut end = after.len();
        for (k, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = k + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = k + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Expands a use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    // `x as y` renames: only `x` is a path.
    let mut kept = String::new();
    let mut toks = tree.split_whitespace();
    while let Some(t) = toks.next() {
        if t == "as" {
            let renamed = toks.next().unwrap_or_default();
            kept.extend(renamed.chars().filter(|c| matches!(c, ',' | '{' | '}')));
        } else {
            kept.push_str(t);
        }
    }
    let tree = kept;
    fn go(prefix: &[String], t: &str, out: &mut Vec<Vec<String>>) {
        if let Some(open) = t.find('{') {
            let head: Vec<String> = t[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let inner = &t[open + 1..t.rfind('}').unwrap_or(t.len())];
            let mut p = prefix.to_vec();
            p.extend(head);
            let mut depth = 0;
            let mut start = 0;
            for (k, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        go(&p, &inner[start..k], out);
                        start = k + 1;
                    }
                    _ => {}
                }
            }
            go(&p, &inner[start..], out);
        } else if !t.is_empty() {
            let mut p = prefix.to_vec();
            p.extend(t.split("::").filter(|s| !s.is_empty()).map(String::from));
            out.push(p);
        }
    }
    let mut out = Vec::new();
    go(&[], &tree, &mut out);
    out
}

/// Every path a file names: its `use` trees, and inline `crate::`/`super::`/`self::` paths.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    // The code with its `use` declarations blanked, for the inline paths.
    let mut rest = String::with_capacity(code.len());
    while let Some(at) = code[i..].find("use ") {
        let at = i + at;
        if at > 0 && ident(bytes[at - 1]) {
            rest.push_str(&code[i..at + 4]);
            i = at + 4;
            continue;
        }
        rest.push_str(&code[i..at]);
        let Some(end) = code[at..].find(';') else {
            i = at;
            break;
        };
        out.extend(expand(&code[at + 4..at + end]));
        i = at + end;
    }
    rest.push_str(&code[i..]);
    let code = rest.as_str();
    let bytes = code.as_bytes();
    for start in ["crate::", "super::", "self::"] {
        let mut i = 0;
        while let Some(at) = code[i..].find(start) {
            let at = i + at;
            i = at + start.len();
            if at > 0 && (ident(bytes[at - 1]) || bytes[at - 1] == b':') {
                continue;
            }
            let end = code[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .map_or(code.len(), |e| at + e);
            out.push(
                code[at..end]
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
    }
    out
}

/// The module `path` (named in module `from`) reaches, if it is one of `modules`.
fn resolve(from: &Module, path: &[String], modules: &BTreeSet<Module>) -> Option<Module> {
    let mut abs: Vec<String> = Vec::new();
    let mut segs = path.iter().peekable();
    match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
        }
        Some("self") => {
            segs.next();
            abs = from.clone();
        }
        Some("super") => {
            abs = from.clone();
            while segs.peek().map(|s| s.as_str()) == Some("super") {
                segs.next();
                abs.pop();
            }
        }
        Some(first) => {
            // A child module named bare (`use worker::Worker` in `deploy/mod.rs`).
            let mut child = from.clone();
            child.push(first.to_owned());
            if !modules.contains(&child) {
                return None; // another crate
            }
            abs = from.clone();
        }
        None => return None,
    }
    abs.extend(segs.cloned());
    (0..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// The circles (strongly connected components of more than one module) of the crate
/// whose sources are under `src`.
fn circles(src: &Path) -> Vec<Vec<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut modules = BTreeSet::new();
    for f in &files {
        modules.insert(module_of(src, f));
    }
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for f in &files {
        let from = module_of(src, f);
        let text = std::fs::read_to_string(f).unwrap();
        for p in paths(&code(&text)) {
            if let Some(to) = resolve(&from, &p, &modules) {
                let ancestor = to.len() < from.len() && from.starts_with(&to);
                if to != from && !ancestor {
                    edges.entry(from.clone()).or_default().insert(to);
                }
            }
        }
    }
    strongly_connected(&modules, &edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            c.iter()
                .map(|m| format!("crate::{}", m.join("::")))
                .collect()
        })
        .collect()
}

/// Tarjan's algorithm.
fn strongly_connected(
    nodes: &BTreeSet<Module>,
    edges: &BTreeMap<Module, BTreeSet<Module>>,
) -> Vec<Vec<Module>> {
    struct T<'a> {
        edges: &'a BTreeMap<Module, BTreeSet<Module>>,
        index: BTreeMap<Module, usize>,
        low: BTreeMap<Module, usize>,
        stack: Vec<Module>,
        on: BTreeSet<Module>,
        out: Vec<Vec<Module>>,
    }
    fn visit(t: &mut T<'_>, v: &Module) {
        let n = t.index.len();
        t.index.insert(v.clone(), n);
        t.low.insert(v.clone(), n);
        t.stack.push(v.clone());
        t.on.insert(v.clone());
        for w in t.edges.get(v).cloned().unwrap_or_default() {
            if !t.index.contains_key(&w) {
                visit(t, &w);
                let l = t.low[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            } else if t.on.contains(&w) {
                let l = t.index[&w].min(t.low[v]);
                t.low.insert(v.clone(), l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(&w);
                let done = &w == v;
                c.push(w);
                if done {
                    break;
                }
            }
            t.out.push(c);
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_circles() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    let mut failures = Vec::new();
    for e in std::fs::read_dir(&crates).unwrap().flatten() {
        let src = e.path().join("src");
        if !src.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        checked += 1;
        let found = circles(&src);
        let in_circles: usize = found.iter().map(Vec::len).sum();
        for c in &found {
            println!("{name}: circle of {}: {}", c.len(), c.join(" <-> "));
        }
        let allowed = KNOWN
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, n)| *n);
        if in_circles > allowed {
            failures.push(format!(
                "crates/{name}: {in_circles} modules in circles (at most {allowed}): {found:?}"
            ));
        } else if in_circles < allowed {
            println!("crates/{name}: {in_circles} modules in circles, fewer than the {allowed} allowed: lower KNOWN");
        }
    }
    assert!(checked >= 10, "only {checked} crates were read");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_reader_sees_what_is_written() {
    let modules: BTreeSet<Module> = [
        vec![],
        vec!["a".to_string()],
        vec!["b".into()],
        vec!["b".into(), "c".into()],
    ]
    .into_iter()
    .collect();
    let src = r#"
        use crate::a::Thing; // crate::b in a comment
        use super::{c, Other};
        use std::io;
        const S: &str = "crate::b::in_a_string";
        fn f() { crate::b::c::g(); }
        #[cfg(test)]
        mod tests { use crate::a::X; }
    "#;
    let from = vec!["b".to_string()];
    let found: BTreeSet<Module> = paths(&code(src))
        .iter()
        .filter_map(|p| resolve(&from, p, &modules))
        .collect();
    assert_eq!(
        found,
        [vec!["a".to_string()], vec![], vec!["b".into(), "c".into()]]
            .into_iter()
            .collect()
    );
    assert_eq!(
        expand("a::{b, c::{d, e as f}}"),
        vec![
            vec!["a".to_string(), "b".into()],
            vec!["a".into(), "c".into(), "d".into()],
            vec!["a".into(), "c".into(), "e".into()],
        ]
    );
}
