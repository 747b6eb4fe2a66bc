//! Integration tests: one binary, one module per feature.
//!
//! Shared helpers (the binary, temp dirs, daemons, interop tools) live in
//! `support`; see its module docs. Add one `mod` line per feature file.

mod support;

/// The command line: help, version, usage errors, flexnbd-c's option forms.
mod cli;
/// Committed man pages and completions match `flexnbd generate`.
mod generated;
