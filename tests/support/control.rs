//! Raw requests to a control socket, as flexnbd-c's line protocol frames them.
//!
//! A request is the command on one line, each argument on its own line, then
//! an empty line; the server answers `N: text\n` and closes the connection.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// How long a control request may take.
pub(crate) const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `command` with `args` (one per line, then an empty line) and returns the whole
/// reply as text, e.g. `"0: updated\n"`.
#[track_caller]
pub(crate) fn control(sock: &Path, command: &str, args: &[&str]) -> String {
    let mut request = String::new();
    for line in std::iter::once(command).chain(args.iter().copied()) {
        request.push_str(line);
        request.push('\n');
    }
    request.push('\n');
    String::from_utf8_lossy(&control_raw(sock, request.as_bytes())).into_owned()
}

/// Sends `request` verbatim, closes the writing half (so the server sees EOF), and returns
/// everything the server sends until it closes the connection.
#[track_caller]
pub(crate) fn control_raw(sock: &Path, request: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(sock)
        .unwrap_or_else(|e| panic!("cannot connect to control socket {}: {e}", sock.display()));
    stream
        .set_read_timeout(Some(CONTROL_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(CONTROL_TIMEOUT)))
        .expect("cannot set socket timeouts");
    stream
        .write_all(request)
        .unwrap_or_else(|e| panic!("cannot send control request: {e}"));
    // The server may already have answered and closed (e.g. a request without a command).
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    if let Err(e) = stream.read_to_end(&mut reply) {
        panic!(
            "no complete control reply within {CONTROL_TIMEOUT:?}: {e}; got {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    reply
}

/// The `key=value` words of `text`, in order, whatever surrounds them: a
/// status reply (`0: pid=... \n`), a line of `flexnbd status`, or a CLI
/// transcript holding one.
pub(crate) fn status_pairs(text: &str) -> Vec<(String, String)> {
    text.split_whitespace()
        .filter_map(|word| word.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The `status` reply of the server at `sock`, `0: ` and all; panics unless
/// it is `0: pid=...`: nothing but `key=value` pairs, each followed by a space.
#[track_caller]
pub(crate) fn status_line(sock: &Path) -> String {
    let reply = control(sock, "status", &[]);
    let pairs = reply
        .strip_prefix("0: ")
        .and_then(|r| r.strip_suffix(" \n"))
        .filter(|r| r.starts_with("pid="))
        .map(|r| r.split(' ').all(|pair| pair.contains('=')));
    assert!(pairs == Some(true), "not a status reply: {reply:?}");
    reply
}

/// The `status` of the server at `sock` as `key=value` pairs, in order (see
/// [`status_line`]).
#[track_caller]
pub(crate) fn status(sock: &Path) -> Vec<(String, String)> {
    status_pairs(&status_line(sock))
}

/// One value of the `status` of the server at `sock`.
#[track_caller]
pub(crate) fn status_value(sock: &Path, key: &str) -> String {
    status(sock)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
        .unwrap_or_else(|| panic!("status has no {key}"))
}

/// Waits until the `status` of the server at `sock` reports `n` clients;
/// panics with the last count after [`CONTROL_TIMEOUT`].
#[track_caller]
pub(crate) fn wait_num_clients(sock: &Path, n: u64) {
    let deadline = std::time::Instant::now() + CONTROL_TIMEOUT;
    loop {
        let now = status_value(sock, "num_clients");
        if now == n.to_string() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "num_clients stayed at {now}, expected {n}"
        );
        std::thread::sleep(super::POLL);
    }
}

/// How many connections to the UNIX socket listening at `sock` wait in its
/// backlog, not yet accepted: the entries of `/proc/net/unix` with its path
/// and no inode (a connection gets an inode when it is accepted).
#[track_caller]
pub(crate) fn queued_connections(sock: &Path) -> usize {
    let table = std::fs::read_to_string("/proc/net/unix").expect("cannot read /proc/net/unix");
    let path = sock.to_str().expect("a UTF-8 socket path");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() == 8 && fields[6] == "0" && fields[7] == path
        })
        .count()
}
