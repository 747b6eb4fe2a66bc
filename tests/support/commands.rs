//! `flexnbd`'s client commands (`status`, `acl`, `read`, `write`, ...) run to
//! completion, and what an operator expects of their output: silence on
//! success, one `flexnbd: ...` line on failure.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use super::{Daemon, flexnbd, text};

/// Runs `flexnbd args...` to completion with `stdin`.
#[track_caller]
pub(crate) fn run(args: &[&str], stdin: &[u8]) -> Output {
    flexnbd()
        .args(args)
        .write_stdin(stdin.to_vec())
        .output()
        .unwrap_or_else(|e| panic!("cannot run flexnbd {args:?}: {e}"))
}

/// Asserts `out` is a success with nothing on stderr.
#[track_caller]
pub(crate) fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what}: {}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
}

/// Asserts `out` exited 0, whatever it wrote to stderr; shows its status,
/// stdout and stderr if not.
#[track_caller]
pub(crate) fn assert_exit_0(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Asserts `out` failed with exit 1, nothing on stdout and exactly one line
/// `flexnbd: ...` on stderr; returns that line.
#[track_caller]
pub(crate) fn one_error_line(what: &str, out: &Output) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit status; stderr:\n{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{what}: stdout should be empty, got {:?}",
        text(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(
        lines.len() == 1 && stderr.ends_with('\n') && lines[0].starts_with("flexnbd: "),
        "{what}: stderr should be one line `flexnbd: ...`, got:\n{stderr}"
    );
    lines[0].to_owned()
}

/// `flexnbd serve -l 127.0.0.1 -p PORT -f FILE -s SOCK`, run to completion.
#[track_caller]
pub(crate) fn serve_once(file: &Path, port: u16, sock: &Path, extra: &[&str]) -> Output {
    let port = port.to_string();
    let mut args = vec![
        "serve",
        "-l",
        "127.0.0.1",
        "-p",
        &port,
        "-f",
        file.to_str().expect("a UTF-8 path"),
        "-s",
        sock.to_str().expect("a UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    run(&args, &[])
}

/// `flexnbd mirror -s SOCK -l DEST --wait --no-progress` from `source`
/// (its control socket SOCK) to `dest`, a host or an NBD URI: the mirror must
/// succeed, and the source then exit 0 within 30 s.
#[track_caller]
pub(crate) fn mirror_wait_ok(source: &mut Daemon, dest: &str) {
    let sock = source.sock().to_str().expect("a UTF-8 path").to_owned();
    let out = run(
        &["mirror", "-s", &sock, "-l", dest, "--wait", "--no-progress"],
        &[],
    );
    assert!(
        out.status.success(),
        "mirror to {dest}: {}",
        text(&out.stderr)
    );
    assert!(source.wait_exit(Duration::from_secs(30)).success());
}

/// `flexnbd read` of `size` bytes at `from` from the daemon.
#[track_caller]
pub(crate) fn nbd_read(d: &Daemon, from: u64, size: u64) -> Output {
    read_or_write(d, "read", from, size, &[])
}

/// `flexnbd write` of `data` at `from` to the daemon.
#[track_caller]
pub(crate) fn nbd_write(d: &Daemon, from: u64, data: &[u8]) -> Output {
    nbd_write_sized(d, from, data.len() as u64, data)
}

/// `flexnbd write -S size` at `from`, with `stdin` (which may be shorter).
#[track_caller]
pub(crate) fn nbd_write_sized(d: &Daemon, from: u64, size: u64, stdin: &[u8]) -> Output {
    read_or_write(d, "write", from, size, stdin)
}

/// `flexnbd <command> -l ADDR -p PORT -F from -S size` with `stdin`.
#[track_caller]
fn read_or_write(d: &Daemon, command: &str, from: u64, size: u64, stdin: &[u8]) -> Output {
    let [l, addr, p, port] = d.addr_args();
    let (from, size) = (from.to_string(), size.to_string());
    run(
        &[command, &l, &addr, &p, &port, "-F", &from, "-S", &size],
        stdin,
    )
}

/// Writes `data` at `from` with `flexnbd write`, asserting it succeeds.
#[track_caller]
pub(crate) fn write_ok(d: &Daemon, from: u64, data: &[u8]) {
    let out = nbd_write(d, from, data);
    assert_success(&format!("write of {} bytes at {from}", data.len()), &out);
    assert!(
        out.stdout.is_empty(),
        "write printed {:?}",
        text(&out.stdout)
    );
}

/// Reads `size` bytes at `from` with `flexnbd read`, asserting it succeeds.
#[track_caller]
pub(crate) fn read_ok(d: &Daemon, from: u64, size: u64) -> Vec<u8> {
    let out = nbd_read(d, from, size);
    assert_success(&format!("read of {size} bytes at {from}"), &out);
    assert_eq!(
        out.stdout.len() as u64,
        size,
        "read returned a short stdout"
    );
    out.stdout
}
