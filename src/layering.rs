//! The import rule of STYLE.md §3.3, checked: a module uses only the modules
//! below it.
//!
//! [`LAYERS`] says, for every top-level module, which crate modules it may
//! name. The test reads every file under `src/` and fails on a `crate::X`
//! (or, in `main.rs`, `flexnbd::X`) that its module may not use, doc links
//! included, on a module missing from the table, and on a table that is not
//! a layering (a cycle). To add a module, give it a row; to add an import
//! that the table refuses, move the code down instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// May name every other module: the binary and the subcommands sit on top.
const ANY: &[&str] = &["*"];

/// Each top-level module and the crate modules it may name, lowest first.
const LAYERS: &[(&str, &[&str])] = &[
    // Leaves: no crate imports at all.
    ("proto", &[]),
    ("status", &[]),
    ("sys", &[]),
    // systemd's socket activation and notifications.
    ("sd", &[]),
    ("exit", &[]),
    ("net", &[]),
    // NBD URIs and server addresses: parsing only, over `net`'s IP parser.
    ("uri", &["net"]),
    // Utilities over the leaves: the logger reads the clock, the backing
    // file shares the reply layout's zero check.
    ("logging", &["sys"]),
    ("backing", &["proto"]),
    // The NBD connection layer (handshake, request reader, reply writer).
    ("nbd", &["proto", "sys"]),
    ("client", &["proto", "nbd", "net", "sys"]),
    (
        "server",
        &["proto", "nbd", "backing", "net", "sys", "status"],
    ),
    // The mirror drives a server and is an NBD client of the destination.
    (
        "mirror",
        &[
            "proto", "backing", "client", "net", "server", "status", "sys", "uri",
        ],
    ),
    ("proxy", &["proto", "nbd", "client", "net", "sys"]),
    // The control socket words the mirror's typed results as replies.
    ("control", &["mirror", "nbd", "net", "status", "sys"]),
    // Parsing types only (addresses, ACL entries), so `generate` can reuse it.
    ("cli", &["net", "uri"]),
    ("cmd", ANY),
    // The fuzz targets' entry points reach into every decoder.
    ("fuzzing", ANY),
    ("main", ANY),
];

/// Imports that break the table and are being removed; each must still
/// exist, so that the entry goes as soon as the import does.
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[];

/// Files that are not a module's code: the crate root and this checker.
const SKIP: &[&str] = &["lib.rs", "layering.rs"];

fn allowed(from: &str) -> Option<&'static [&'static str]> {
    LAYERS
        .iter()
        .find(|(name, _)| *name == from)
        .map(|(_, deps)| *deps)
}

/// The top-level module a file under `src/` belongs to.
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .expect("a file under src/")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.strip_suffix(".rs").unwrap_or(&first).to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("readable src/") {
        let path = entry.expect("readable src/ entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every crate module `text` names after `prefix` (`crate::` or `flexnbd::`).
///
/// # Panics
///
/// On a grouped `crate::{...}` import, which this scan does not read.
fn named_modules(text: &str, prefix: &str, file: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices(prefix) {
        let before = text[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `mycrate::`, not ours
        }
        let rest = &text[at + prefix.len()..];
        assert!(
            !rest.starts_with('{'),
            "{}: split the grouped `{prefix}{{..}}` import so that the layering check can read it",
            file.display()
        );
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            found.insert(name);
        }
    }
    found
}

/// Which crate modules each top-level module names, with one file that names each.
fn imports() -> BTreeMap<(String, String), PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("a file under src/");
        if SKIP.iter().any(|s| relative == Path::new(s)) {
            continue;
        }
        let from = module_of(relative);
        let text = fs::read_to_string(&file).expect("readable source file");
        let prefix = if from == "main" {
            "flexnbd::"
        } else {
            "crate::"
        };
        for to in named_modules(&text, prefix, relative) {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| relative.to_owned());
            }
        }
    }
    edges
}

#[test]
fn imports_only_point_down() {
    let mut wrong = Vec::new();
    let edges = imports();
    for ((from, to), file) in &edges {
        let Some(deps) = allowed(from) else {
            wrong.push(format!(
                "module `{from}` ({}) has no row in LAYERS",
                file.display()
            ));
            continue;
        };
        let known = KNOWN_VIOLATIONS.contains(&(from.as_str(), to.as_str()));
        if deps != ANY && !deps.contains(&to.as_str()) && !known {
            wrong.push(format!(
                "{} names `{to}`, which `{from}` may not use (allowed: {deps:?})",
                file.display()
            ));
        }
    }
    for (from, to) in KNOWN_VIOLATIONS {
        if !edges.contains_key(&((*from).to_owned(), (*to).to_owned())) {
            wrong.push(format!(
                "`{from}` no longer uses `{to}`: remove it from KNOWN_VIOLATIONS"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_table_is_a_layering() {
    // Every module a row allows has a row of its own, and following the
    // rows never leads back: depth-first search with an explicit path.
    fn visit<'a>(module: &'a str, path: &mut Vec<&'a str>, done: &mut BTreeSet<&'a str>) {
        if done.contains(module) {
            return;
        }
        assert!(
            !path.contains(&module),
            "cycle: {} -> {module}",
            path.join(" -> ")
        );
        let deps = allowed(module).unwrap_or_else(|| panic!("`{module}` has no row in LAYERS"));
        path.push(module);
        for dep in deps.iter().filter(|d| **d != "*") {
            visit(dep, path, done);
        }
        path.pop();
        done.insert(module);
    }
    let mut done = BTreeSet::new();
    for (module, _) in LAYERS {
        visit(module, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_scan_reads_imports_paths_and_doc_links() {
    let text = "use crate::proto::wire;\nlet x = crate::net::parse_ip(s);\n\
                /// See [`crate::server::dirty`].\nmycrate::nope; $crate::status::Status";
    let found = named_modules(text, "crate::", Path::new("x.rs"));
    let want: BTreeSet<String> = ["proto", "net", "server", "status"]
        .map(String::from)
        .into();
    assert_eq!(found, want);
    assert_eq!(module_of(Path::new("server/conn.rs")), "server");
    assert_eq!(module_of(Path::new("net.rs")), "net");
}
