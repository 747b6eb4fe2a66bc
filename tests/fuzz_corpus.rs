//! Replays every committed fuzz input through the same entry point its
//! cargo-fuzz target calls ([`flexnbd::fuzzing`]), on stable Rust, without
//! nightly or cargo-fuzz: the corpora (`fuzz/corpus/<target>/`, minimised
//! by `cargo fuzz cmin`) and the inputs of crashes once found and fixed
//! (`fuzz/regressions/<target>/`, kept by hand so cmin never drops them).
//! See docs/fuzzing.md.

use std::path::Path;

use flexnbd::fuzzing::TARGETS;

/// The fewest inputs a committed corpus may have; fewer means it went missing.
const MIN_INPUTS: usize = 3;

/// Runs every file in `fuzz/<kind>/<target>/` through its target; returns how many.
fn replay(kind: &str, min_inputs: usize) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    let mut total = 0;
    for entry in std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display())) {
        let name = entry.expect("cannot list fuzz inputs").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/{kind}/{name} has no target in flexnbd::fuzzing::TARGETS"
        );
    }
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .map(|entry| entry.expect("cannot list fuzz inputs").path())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && min_inputs == 0 => Vec::new(),
            Err(e) => panic!("{}: {e}", dir.display()),
        };
        files.sort();
        assert!(
            files.len() >= min_inputs,
            "{}: only {} inputs",
            dir.display(),
            files.len()
        );
        for file in &files {
            let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            // A panic names the input, to reproduce with `cargo fuzz run <target> <file>`.
            let result = std::panic::catch_unwind(|| target(&data));
            assert!(result.is_ok(), "{name}: {} fails", file.display());
        }
        total += files.len();
    }
    total
}

#[test]
fn every_corpus_input_passes_its_target() {
    let total = replay("corpus", MIN_INPUTS);
    eprintln!("replayed {total} corpus inputs");
}

#[test]
fn every_regression_input_passes_its_target() {
    let total = replay("regressions", 0);
    assert!(total > 0, "fuzz/regressions is empty");
    eprintln!("replayed {total} regression inputs");
}
