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
