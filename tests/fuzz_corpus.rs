//! Replays every committed fuzz corpus file (`fuzz/corpus/<target>/`)
//! through the same entry point its cargo-fuzz target calls
//! ([`flexnbd::fuzzing`]), on stable Rust: a crash the fuzzer once found
//! stays fixed, without nightly or cargo-fuzz. See docs/fuzzing.md.

use std::path::Path;

use flexnbd::fuzzing::TARGETS;

/// The fewest inputs a committed corpus may have; fewer means it went missing.
const MIN_INPUTS: usize = 3;

#[test]
fn every_corpus_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut total = 0;
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("cannot list corpus").path())
            .collect();
        files.sort();
        assert!(
            files.len() >= MIN_INPUTS,
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
    // Every target directory is one the library knows (no stale corpus).
    for entry in std::fs::read_dir(&root).expect("cannot list fuzz/corpus") {
        let name = entry.expect("cannot list fuzz/corpus").file_name();
        let name = name.to_string_lossy();
        assert!(
            TARGETS.iter().any(|(t, _)| *t == name),
            "fuzz/corpus/{name} has no target in flexnbd::fuzzing::TARGETS"
        );
    }
    eprintln!("replayed {total} corpus inputs");
}
