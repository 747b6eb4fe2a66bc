//! Sets `FLEXNBD_VERSION` for `--version`: the package version, followed by
//! the commit (`0.1.0 (1970a93)`) when built from a git checkout of this
//! package with git installed; the bare version otherwise (a tarball, a
//! crates.io download), silently.

use std::path::Path;
use std::process::Command;

fn main() {
    let version = env!("CARGO_PKG_VERSION");
    let full = match commit() {
        Some(commit) => format!("{version} ({commit})"),
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=FLEXNBD_VERSION={full}");
}

/// The short commit of HEAD, if this package is the top of a git work tree;
/// also tells cargo to run this again when HEAD moves.
fn commit() -> Option<String> {
    // Not a checkout of some other repository this package was unpacked in.
    let top = git(&["rev-parse", "--show-toplevel"])?;
    let here = std::env::var_os("CARGO_MANIFEST_DIR")?;
    if Path::new(&top).canonicalize().ok()? != Path::new(&here).canonicalize().ok()? {
        return None;
    }
    // HEAD, and the branch it points at, as files (a worktree has its own HEAD).
    for path in [
        Some("HEAD".to_owned()),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            let file = Path::new(&top).join(file);
            if file.exists() {
                println!("cargo:rerun-if-changed={}", file.display());
            }
        }
    }
    // A packed branch moves packed-refs instead.
    if let Some(file) = git(&["rev-parse", "--git-path", "packed-refs"]) {
        let file = Path::new(&top).join(file);
        if file.exists() {
            println!("cargo:rerun-if-changed={}", file.display());
        }
    }
    git(&["rev-parse", "--short", "HEAD"])
}

/// The trimmed stdout of a successful `git ARGS`, or None.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}
