//! Helpers shared by every integration test module.
//!
//! - [`flexnbd`] / [`flexnbd_std`]: the built binary, with a clean environment
//!   and (for the `assert_cmd` form) a time limit.
//! - [`TestEnv`]: a temporary directory with images, socket paths and free
//!   ports ([`env`]).
//! - [`Daemon`]: a long-running `flexnbd serve` owned by a test, killed on
//!   drop ([`daemon`]).
//! - [`commands`]: `flexnbd read`, `write`, `status`... run to completion,
//!   and their output checked.
//! - [`control`]: raw requests to a control socket, and the `status` line.
//! - [`fake_peer`]: [`FakePeer`], a fake upstream or migration destination on
//!   a test thread.
//! - [`wire`]: NBD byte by byte, a raw client and the pieces of a fake server.
//! - [`tls`]: [`tls::Pki`], a test CA and credentials directories in the
//!   GnuTLS layout, made in-process.
//! - [`require_tool`], [`tool`], [`nbdsh_command`]: the interop tools (qemu,
//!   libnbd, nbdkit, fio), skipped when missing except under `CI=true`;
//!   [`flexnbd_c`], [`flexnbd_proxy_c`]: the C flexnbd 0.5.0 programs from
//!   `../shared/peers/flexnbd-c/`, skipped when missing except under `CI=true`.
//! - [`finish`]: a CLI child's output, within a time limit.
//! - [`assert_same_bytes`]: compares large buffers and reports the first
//!   difference instead of dumping megabytes.
//! - [`wait_until`]: a condition polled with a deadline.
//!
//! Every helper is bounded in time and uses only 127.0.0.1.

// Each test module uses a different subset of these helpers, so some are
// always unused from the point of view of one module.
#![allow(dead_code)]

pub(crate) mod commands;
pub(crate) mod control;
pub(crate) mod daemon;
pub(crate) mod env;
pub(crate) mod fake_peer;
pub(crate) mod tls;
pub(crate) mod wire;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// Re-exported for test modules, which may not use all of them yet.
#[allow(unused_imports)]
pub(crate) use control::{control, control_raw, status_value};
#[allow(unused_imports)]
pub(crate) use daemon::{Daemon, DaemonBuilder, Ready, Signal, StartError};
pub(crate) use env::{TestEnv, allocated, free_port, pattern, read_range};
#[allow(unused_imports)]
pub(crate) use fake_peer::FakePeer;
#[allow(unused_imports)]
pub(crate) use wire::Style;

/// A kibibyte, for sizes and offsets in tests.
pub(crate) const KIB: u64 = 1 << 10;
/// A mebibyte.
pub(crate) const MIB: u64 = 1 << 20;

/// The NBD URI of `export` (percent-encoded already, "" for the default)
/// on the UNIX socket at `sock`: `nbd+unix:///EXPORT?socket=PATH`.
pub(crate) fn unix_uri(export: &str, sock: &Path) -> String {
    format!("nbd+unix:///{export}?socket={}", sock.display())
}

/// The longest any single command run through [`flexnbd`] or [`tool`] may take.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of the `flexnbd` binary under test.
pub(crate) fn flexnbd_path() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_flexnbd"))
}

/// `flexnbd` as an `assert_cmd` command: clean environment, stdin closed, killed after
/// [`COMMAND_TIMEOUT`].
pub(crate) fn flexnbd() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::from_std(flexnbd_std());
    cmd.timeout(COMMAND_TIMEOUT);
    cmd
}

/// `flexnbd` as a plain `std::process::Command` (for spawning), with the same clean
/// environment as [`flexnbd`] and stdin from `/dev/null`.
pub(crate) fn flexnbd_std() -> Command {
    let mut cmd = Command::new(flexnbd_path());
    clean_env(&mut cmd);
    cmd.stdin(Stdio::null());
    cmd
}

/// [`flexnbd_std`] with SIGINT, SIGTERM and SIGQUIT at their default action, for
/// tests of what a signal does to a client command: a test run started in the
/// background of a non-interactive shell inherits them ignored, and so would
/// the child (`env --default-signal`, coreutils 8.31 or later).
pub(crate) fn flexnbd_std_default_signals() -> Command {
    let mut cmd = Command::new("env");
    cmd.arg("--default-signal=INT,TERM,QUIT")
        .arg(flexnbd_path());
    clean_env(&mut cmd);
    cmd.stdin(Stdio::null());
    cmd
}

/// Removes the variables that could change flexnbd's behaviour or output.
fn clean_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("FLEXNBD_") {
            cmd.env_remove(&key);
        }
    }
    // clap wraps help to $COLUMNS and colours it when forced to.
    // systemd's variables (a test run inside a unit) change where we listen and how we log.
    for key in [
        "COLUMNS",
        "LINES",
        "CLICOLOR_FORCE",
        "CLICOLOR",
        "RUST_LOG",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        "JOURNAL_STREAM",
    ] {
        cmd.env_remove(key);
    }
}

/// Whether the test run must have every interop tool (`CI=true`).
pub(crate) fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The full path of `name` if it is an executable on `PATH`.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether `name` can be run here, without the CI check of [`require_tool`].
///
/// `nbdsh` counts as present when `/usr/bin/python3` can import the `nbd` module
/// (see [`nbdsh_command`]).
pub(crate) fn have_tool(name: &str) -> bool {
    if name == "nbdsh" {
        return Command::new(SYSTEM_PYTHON)
            .args(["-c", "import nbd"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    }
    which(name).is_some()
}

/// Whether an interop test may run: true when `name` is installed.
///
/// Otherwise prints `skipped <test>: <name> not installed` (see
/// [`print_skip`]) and returns false, so the test can `return` early. Under
/// `CI=true` a missing tool is a failure instead: CI installs every tool
/// (`.ci/run`).
///
/// ```ignore
/// if !require_tool("qemu-img") {
///     return;
/// }
/// ```
#[track_caller]
pub(crate) fn require_tool(name: &str) -> bool {
    if have_tool(name) {
        return true;
    }
    assert!(
        !in_ci(),
        "{name} is not installed, but CI=true requires every interop tool (see .ci/run)"
    );
    print_skip(&format!("{name} not installed"));
    false
}

/// The Python with the libnbd bindings. pyenv's `python3`, first on some
/// `PATH`s, lacks the `nbd` module, and `nbdsh` runs whichever `python3` is first.
pub(crate) const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// `nbdsh`, run as `/usr/bin/python3 -m nbd` (see [`SYSTEM_PYTHON`]), with a time limit.
///
/// Check [`require_tool`]`("nbdsh")` first.
pub(crate) fn nbdsh_command() -> assert_cmd::Command {
    let mut cmd = tool(SYSTEM_PYTHON);
    cmd.args(["-m", "nbd"]);
    cmd
}

/// An external tool (`qemu-img`, `nbdinfo`, ...) as an `assert_cmd` command with a time
/// limit. Check [`require_tool`] first.
pub(crate) fn tool(program: impl AsRef<OsStr>) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::new(program);
    cmd.timeout(COMMAND_TIMEOUT);
    cmd
}

/// The C flexnbd 0.5.0 binary, the reference peer for interop and differential
/// tests; see [`flexnbd_c_peer`].
pub(crate) fn flexnbd_c() -> Option<PathBuf> {
    flexnbd_c_peer("flexnbd")
}

/// The C flexnbd-proxy 0.5.0 binary; see [`flexnbd_c_peer`].
pub(crate) fn flexnbd_proxy_c() -> Option<PathBuf> {
    flexnbd_c_peer("flexnbd-proxy")
}

/// [`flexnbd_c`] under its older name.
pub(crate) fn require_flexnbd_c() -> Option<PathBuf> {
    flexnbd_c()
}

/// One of the C flexnbd 0.5.0 programs (`flexnbd` or `flexnbd-proxy`), the
/// reference peers: from the directory in `$FLEXNBD_C_DIR`, else
/// `../shared/peers/flexnbd-c/` beside the checkout (where CI puts it).
/// `$FLEXNBD_C` overrides the path of `flexnbd` itself.
///
/// `None`, with a printed reason, when it is missing or cannot run (it needs
/// `libev4`); under `CI=true` that is a test failure instead, since `.ci/run`
/// installs what it needs.
pub(crate) fn flexnbd_c_peer(name: &str) -> Option<PathBuf> {
    let env_path = |var: &str| {
        std::env::var_os(var)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    let candidates: Vec<PathBuf> = if let (Some(p), "flexnbd") = (env_path("FLEXNBD_C"), name) {
        vec![p]
    } else if let Some(dir) = env_path("FLEXNBD_C_DIR") {
        vec![dir.join(name)]
    } else {
        vec![
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/peers/flexnbd-c")
                .join(name),
        ]
    };
    let problem = match candidates.iter().find(|p| p.is_file()) {
        None => format!("{} not found (set FLEXNBD_C_DIR)", candidates[0].display()),
        Some(path) => {
            // It prints its usage and exits non-zero; a missing libev4 makes the loader fail.
            match Command::new(path)
                .arg("--help")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
            {
                Err(e) => format!("cannot run {}: {e}", path.display()),
                Ok(out)
                    if String::from_utf8_lossy(&out.stderr)
                        .contains("error while loading shared libraries") =>
                {
                    format!(
                        "{} cannot run (apt-get install libev4): {}",
                        path.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                }
                Ok(_) => return Some(path.clone()),
            }
        }
    };
    assert!(!in_ci(), "the C {name} is required when CI=true: {problem}");
    print_skip(&problem);
    None
}

/// Says why a test skips, as `skipped <test>: <reason>`, where `cargo test`
/// shows it: straight to stderr, which the test harness does not capture
/// (it captures only `print!` and `eprint!`), so a run that skips says so.
pub(crate) fn print_skip(reason: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    // Nowhere to report a failure to write to stderr.
    let _ = writeln!(std::io::stderr().lock(), "skipped {test}: {reason}");
}

/// Asserts two byte buffers are equal, reporting the length and the first
/// differing offset with a few bytes of context instead of both buffers.
#[track_caller]
pub(crate) fn assert_same_bytes(what: &str, actual: &[u8], expected: &[u8]) {
    if actual == expected {
        return;
    }
    let first = actual
        .iter()
        .zip(expected)
        .position(|(a, e)| a != e)
        .unwrap_or(actual.len().min(expected.len()));
    let window = |b: &[u8]| {
        let end = b.len().min(first + 16);
        format!("{:02x?}", &b[first.min(end)..end])
    };
    panic!(
        "{what}: bytes differ\n  length:   actual {} expected {}\n  first difference at offset {first} ({first:#x})\n  actual:   {}\n  expected: {}",
        actual.len(),
        expected.len(),
        window(actual),
        window(expected),
    );
}

/// Waits up to `timeout` for a CLI child (output piped) and returns its
/// output; kills it (by its handle) and fails after, with what it printed.
#[track_caller]
pub(crate) fn finish(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait for the CLI").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output of the CLI");
            panic!(
                "flexnbd CLI still running after {timeout:?}; stdout {:?} stderr {:?}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("output of the CLI")
}

/// Waits until `cond` holds, polling every [`POLL`]; panics naming `what` if
/// it does not within `within`.
#[track_caller]
pub(crate) fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(POLL);
    }
}

/// How often [`wait_until`] polls.
pub(crate) const POLL: Duration = Duration::from_millis(10);

/// Output as text, for assertion messages.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` to its end, asserts it succeeded (showing its stderr if not),
/// and returns its stdout as text.
#[track_caller]
pub(crate) fn run_ok(cmd: &mut assert_cmd::Command) -> String {
    let what = format!("{cmd:?}");
    text(&stdout_ok(&what, cmd))
}

/// Runs `cmd` (`what`, in the messages) to its end, asserts it succeeded
/// (showing its stderr if not), and returns its stdout.
#[track_caller]
pub(crate) fn stdout_ok(what: &str, cmd: &mut assert_cmd::Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {:?}: {}",
        out.status,
        text(&out.stderr)
    );
    out.stdout
}

#[cfg(test)]
mod tests;
