//! The UNIX control socket: a listener thread that runs one command per connection.
//!
//! The protocol is flexnbd-c's (behaviour doc, section 5), byte for byte:
//! a request is a command line and argument lines ended by an empty line
//! (see [`protocol`]), and the reply is one `N: text` line, after which the
//! server closes the connection.
//!
//! ```text
//! client                         control thread                 server (Controlled)
//!   | connect                        | accept                         |
//!   | "acl\n10.0.0.0/8\n\n"  ----->  | read request (deadline)        |
//!   |                                | dispatch ------------------->  | set_acl(entries)
//!   |  <-----  "0: updated\n"        | write reply, close             |
//! ```
//!
//! [`ControlServer`] owns the socket and one thread named `control`, which
//! serves connections one at a time; others wait in the listen backlog of 5.
//! The server side is reached only through the [`Controlled`] trait, so this
//! module knows nothing of the NBD server's internals; the migration
//! commands' arguments are parsed by [`crate::mirror`], whose typed results
//! the `commands` module words as flexnbd-c's replies. Commands:
//!
//! | request | reply |
//! |---|---|
//! | `status` (arguments ignored) | `0: <status line>` |
//! | `acl` and zero or more entries | `0: updated`, or `1: bad spec: <entry>` and the old list stays |
//! | `mirror ADDR PORT [ACTION [BIND [MAX_BPS]]]` | `0: Mirror started`, or `1: <why not>` (see [`crate::mirror::MirrorRequest::parse`]) |
//! | `mirror_max_bps BPS` | `0: updated`, `1: Not currently mirroring`, `1: Bad format` |
//! | `break` (arguments ignored) | `0: mirror stopped`, `1: not mirroring`, `1: mirror completed` |
//! | no command (empty first line, or EOF before one) | `9: missing command` |
//! | anything else (names are case-sensitive) | `10: unknown command` |
//!
//! To add a command, add a method to [`Controlled`] and an arm to
//! [`dispatch`]; the framing and the thread do not change.
//!
//! Where we depart from flexnbd-c, all invisible to a well-behaved client:
//!
//! - a client has [`DEFAULT_REQUEST_TIMEOUT`] to send its whole request; a
//!   client that is too slow, or whose read fails, is dropped without a
//!   reply and without running anything (C waits for ever, and runs
//!   whatever it has read after a read error);
//! - no junk bytes after `10: unknown command\n`;
//! - a stale socket file left by a crashed server is replaced, a live one
//!   is refused, and anything that is not a socket is left alone (C fails
//!   to bind in all three cases);
//! - the socket is unlinked on stop only if it is still ours;
//! - a path too long for a UNIX socket is an error (C truncates it);
//! - the socket is created with mode [`DEFAULT_SOCKET_MODE`] (0600, owner
//!   only) or the mode asked for, whatever the umask, and never exists
//!   with a wider one (C leaves it to the umask, so under umask 000 any
//!   local user could replace the ACL or start a mirror).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{error, info, warn};

pub mod client;
mod commands;
pub mod protocol;

pub use commands::{Controlled, dispatch};
pub use protocol::{Reply, Request};
use protocol::{RequestError, read_request};

/// How long a client has to send its whole request before it is dropped.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The mode of the control socket unless told otherwise: owner only.
pub const DEFAULT_SOCKET_MODE: u32 = 0o600;

/// The listen backlog, as in flexnbd-c.
const BACKLOG: i32 = 5;

/// How long to back off after `accept` fails for a reason other than shutdown (e.g. out of fds).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// The control socket of a running server, and the thread that serves it.
///
/// Dropping it stops it as [`ControlServer::stop`] does.
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
    /// Device and inode of the socket we bound, so that stop unlinks only our own.
    identity: Option<(u64, u64)>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// State shared between [`ControlServer`] and its thread.
struct Shared {
    listener: UnixListener,
    target: Arc<dyn Controlled>,
    request_timeout: Duration,
    stopping: AtomicBool,
    /// A handle on the connection whose request is being read, so that
    /// stop can cut a slow client short. `None` while a command runs.
    reading: Mutex<Option<UnixStream>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("listener", &self.listener)
            .field("request_timeout", &self.request_timeout)
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn reading(&self) -> MutexGuard<'_, Option<UnixStream>> {
        // The guarded value is a plain handle; a panic elsewhere cannot leave it inconsistent.
        self.reading.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

impl ControlServer {
    /// Creates the socket at `path` and starts serving it on a thread named `control`.
    ///
    /// Clients get [`DEFAULT_REQUEST_TIMEOUT`] to send their request.
    ///
    /// # Errors
    ///
    /// See [`ControlServer::start_with_timeout`].
    pub fn start(path: &Path, target: Arc<dyn Controlled>) -> io::Result<ControlServer> {
        Self::start_with_timeout(path, target, DEFAULT_REQUEST_TIMEOUT)
    }

    /// Like [`ControlServer::start`], with the time a client has to send its request.
    ///
    /// If `path` is a socket nobody listens on (left by a server that
    /// crashed), it is replaced. The socket's mode is [`DEFAULT_SOCKET_MODE`].
    ///
    /// # Errors
    ///
    /// An error whose message names `path` when: a process listens on it
    /// ([`io::ErrorKind::AddrInUse`]); it exists and is not a socket
    /// ([`io::ErrorKind::AlreadyExists`], and it is left alone); it is too
    /// long for a UNIX socket; or creating the socket or the thread fails.
    pub fn start_with_timeout(
        path: &Path,
        target: Arc<dyn Controlled>,
        request_timeout: Duration,
    ) -> io::Result<ControlServer> {
        Self::start_with_options(path, target, request_timeout, DEFAULT_SOCKET_MODE)
    }

    /// Like [`ControlServer::start_with_timeout`], with the socket file's
    /// permission bits (`mode`, e.g. 0o660), set exactly whatever the umask.
    ///
    /// # Errors
    ///
    /// As [`ControlServer::start_with_timeout`].
    pub fn start_with_options(
        path: &Path,
        target: Arc<dyn Controlled>,
        request_timeout: Duration,
        mode: u32,
    ) -> io::Result<ControlServer> {
        let listener = bind(path, mode)?;
        let identity = fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()));
        let shared = Arc::new(Shared {
            listener,
            target,
            request_timeout,
            stopping: AtomicBool::new(false),
            reading: Mutex::new(None),
        });
        let spawned = thread::Builder::new().name("control".to_owned()).spawn({
            let shared = Arc::clone(&shared);
            move || run(&shared)
        });
        let mut server = ControlServer {
            path: path.to_owned(),
            identity,
            shared,
            thread: None,
        };
        match spawned {
            Ok(thread) => server.thread = Some(thread),
            Err(e) => {
                server.unlink();
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot start the thread of control socket {}: {e}",
                        path.display()
                    ),
                ));
            }
        }
        info!("control socket listening at {}", path.display());
        Ok(server)
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving: lets a command in progress finish, drops a client
    /// still sending its request, removes the socket file and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // On Linux, shutting down a listening socket wakes a blocked
        // accept() (it returns EINVAL), and later accepts fail at once.
        if let Err(e) = rustix::net::shutdown(&self.shared.listener, rustix::net::Shutdown::Both) {
            warn!("cannot shut down control socket, waking it by connecting: {e}");
            let _ = UnixStream::connect(&self.path);
        }
        if let Some(conn) = self.shared.reading().as_ref() {
            // The control thread sees EOF, then the stop flag, and drops the request.
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
        if thread.join().is_err() {
            error!("control thread panicked");
        }
        self.unlink();
        info!("control socket {} closed", self.path.display());
    }

    /// Removes the socket file if it is still the one we created.
    fn unlink(&self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && Some((m.dev(), m.ino())) == self.identity);
        if !ours {
            warn!(
                "control socket {} was replaced or removed; leaving it",
                self.path.display()
            );
            return;
        }
        if let Err(e) = fs::remove_file(&self.path) {
            warn!("cannot remove control socket {}: {e}", self.path.display());
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Creates the control socket at `path` with permission bits `mode`,
/// replacing a stale socket file.
fn bind(path: &Path, mode: u32) -> io::Result<UnixListener> {
    crate::nbd::stream::bind_unix(path, mode, BACKLOG, "control socket")
}

/// The control thread: accept, serve, repeat until stopped.
fn run(shared: &Shared) {
    loop {
        let accepted = shared.listener.accept();
        if shared.is_stopping() {
            break;
        }
        match accepted {
            Ok((stream, _)) => serve_one(shared, stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                ) => {}
            Err(e) => {
                error!("cannot accept control connection: {e}");
                thread::sleep(ACCEPT_RETRY);
            }
        }
    }
}

/// Reads one request, runs it and writes its reply.
fn serve_one(shared: &Shared, stream: UnixStream) {
    let deadline = Instant::now() + shared.request_timeout;
    match stream.try_clone() {
        Ok(handle) => *shared.reading() = Some(handle),
        Err(e) => {
            warn!("cannot serve control connection: {e}");
            return;
        }
    }
    // Checked after publishing the handle: a stop from now on will shut it down.
    let request = if shared.is_stopping() {
        None
    } else {
        Some(read_request(&mut DeadlineReader {
            stream: &stream,
            deadline,
        }))
    };
    shared.reading().take();
    let request = match request {
        Some(request) if !shared.is_stopping() => request,
        _ => {
            info!("control socket closing; request dropped");
            return;
        }
    };
    let reply = match request {
        Ok(request) => dispatch_guarded(&*shared.target, &request),
        Err(RequestError::TooManyLines) => {
            warn!("control request too long");
            Reply::error("request too long")
        }
        Err(RequestError::Io(e)) if is_timeout(&e) => {
            warn!(
                "control client sent no complete request within {}; dropped",
                humantime::format_duration(shared.request_timeout)
            );
            return;
        }
        Err(RequestError::Io(e)) => {
            warn!("cannot read control request: {e}");
            return;
        }
    };
    // The reply is small and the socket buffer empty, so this only waits on
    // a pathological client; still, never block the control thread for ever.
    let write_timeout = shared.request_timeout.max(Duration::from_millis(1));
    let sent = stream
        .set_write_timeout(Some(write_timeout))
        .and_then(|()| (&stream).write_all(&reply.encode()));
    match sent {
        Ok(()) => {}
        // A client that hung up without waiting for the reply, such as another
        // server checking whether this socket is live: nothing went wrong here.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) =>
        {
            info!("control client left before the reply '{reply}'");
        }
        Err(e) => warn!("cannot send control reply '{reply}': {e}"),
    }
}

/// Runs a request; a panic in it (a bug) is logged and answered as an
/// internal error, and the control socket goes on serving.
fn dispatch_guarded(target: &dyn Controlled, request: &Request) -> Reply {
    let command = String::from_utf8_lossy(request.command().unwrap_or_default()).into_owned();
    let run = || {
        crate::sys::fault::panic_point("CONTROL", &command);
        dispatch(target, request)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|_| {
        error!(
            "internal error running control command '{}'",
            command.escape_debug()
        );
        Reply::error("internal error")
    })
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Reads from a stream, failing with [`io::ErrorKind::TimedOut`] once `deadline` has passed.
///
/// The deadline covers the whole request, so a client trickling one byte
/// at a time cannot hold the control socket longer than a silent one.
struct DeadlineReader<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::sync::mpsc;

    use tempfile::TempDir;

    use super::*;
    use crate::net::AclEntry;
    use crate::status::Status;

    /// Long enough for any step of a test on a loaded 2-core box.
    const PATIENCE: Duration = Duration::from_secs(10);

    const STATUS_LINE: &[u8] =
        b"0: pid=42 size=1048576 is_mirroring=false clients_allowed=true num_clients=3 has_control=true \n";

    /// A server stand-in that records ACL changes.
    #[derive(Default)]
    struct Fake {
        acl: Mutex<Vec<AclEntry>>,
        acl_sets: Mutex<usize>,
    }

    impl Fake {
        fn acl(&self) -> Vec<AclEntry> {
            self.acl.lock().unwrap().clone()
        }
    }

    impl Controlled for Fake {
        fn status(&self) -> Status {
            Status {
                pid: 42,
                size: 1 << 20,
                clients_allowed: true,
                num_clients: 3,
                has_control: true,
                migration: None,
                last_migration: None,
                last_verified: false,
            }
        }

        fn set_acl(&self, entries: Vec<AclEntry>) {
            *self.acl.lock().unwrap() = entries;
            *self.acl_sets.lock().unwrap() += 1;
        }
    }

    /// The reply line (without its newline) to a request of these lines.
    fn reply_to(target: &dyn Controlled, lines: &[&str]) -> String {
        let request = Request::from_lines(lines.iter().map(|l| l.as_bytes().to_vec()).collect());
        dispatch(target, &request).to_string()
    }

    #[test]
    fn mirror_arguments_are_checked_in_flexnbd_c_order() {
        let fake = Fake::default();
        let err = |a: &[&str]| reply_to(&fake, &[&["mirror"], a].concat());
        assert_eq!(
            err(&["127.0.0.1"]),
            "1: mirror takes at least two parameters"
        );
        assert_eq!(err(&["host", "1"]), "1: bad IP address");
        assert_eq!(err(&["127.0.0.1", "70000"]), "1: bad IP port number");
        assert_eq!(err(&["127.0.0.1", "x"]), "1: bad IP port number");
        assert_eq!(
            err(&["127.0.0.1", "1", "stay"]),
            "1: action must be 'exit' or 'nothing'"
        );
        assert_eq!(
            err(&["127.0.0.1", "1", "exit", "nowhere"]),
            "1: bad bind address"
        );
        assert_eq!(
            err(&["127.0.0.1", "1", "exit", "0", "99999999999999999999"]),
            "1: max_bps out of range"
        );
        assert_eq!(
            err(&["127.0.0.1", "1", "exit", "0", "fast"]),
            "1: max_bps couldn't be parsed"
        );
        assert_eq!(
            err(&["127.0.0.1", "1", "exit", "0", "5", "more"]),
            "1: unrecognised parameters to mirror"
        );
    }

    #[test]
    fn mirror_commands_on_a_server_without_mirroring() {
        let fake = Fake::default();
        let run = |lines: &[&str]| reply_to(&fake, lines);
        assert_eq!(
            run(&["mirror", "127.0.0.1", "1"]),
            "1: mirroring is not supported here"
        );
        assert_eq!(
            run(&["mirror", "127.0.0.1"]),
            "1: mirror takes at least two parameters"
        );
        assert_eq!(run(&["mirror_max_bps", "5"]), "1: Not currently mirroring");
        assert_eq!(run(&["break"]), "1: not mirroring");
    }

    fn entries(list: &[&str]) -> Vec<AclEntry> {
        list.iter().map(|e| e.parse().unwrap()).collect()
    }

    struct Env {
        _dir: TempDir,
        path: PathBuf,
        fake: Arc<Fake>,
        server: ControlServer,
    }

    fn start_with(timeout: Duration) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let fake = Arc::new(Fake::default());
        let server = ControlServer::start_with_timeout(&path, fake.clone(), timeout).unwrap();
        Env {
            _dir: dir,
            path,
            fake,
            server,
        }
    }

    fn start() -> Env {
        start_with(PATIENCE)
    }

    /// Sends `bytes`, then EOF, and returns everything the server sends back before closing.
    fn exchange(path: &Path, bytes: &[u8]) -> Vec<u8> {
        let mut conn = UnixStream::connect(path).unwrap();
        conn.set_read_timeout(Some(PATIENCE)).unwrap();
        conn.set_write_timeout(Some(PATIENCE)).unwrap();
        // The server may stop reading (and close) before all bytes are written.
        let _ = conn.write_all(bytes);
        let _ = conn.shutdown(std::net::Shutdown::Write);
        read_to_close(&mut conn)
    }

    fn read_to_close(conn: &mut UnixStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            match conn.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // Closing with unread request bytes resets the connection after the reply.
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
                Err(e) => panic!("no close from the control server: {e}"),
            }
        }
    }

    #[test]
    fn status_reply_is_exact() {
        let env = start();
        assert_eq!(exchange(&env.path, b"status\n\n"), STATUS_LINE);
        // EOF after the LF ends the request too, and arguments are ignored.
        assert_eq!(exchange(&env.path, b"status\n"), STATUS_LINE);
        assert_eq!(exchange(&env.path, b"status\nx\ny\n\n"), STATUS_LINE);
    }

    #[test]
    fn acl_is_replaced_when_every_entry_parses() {
        let env = start();
        assert_eq!(
            exchange(&env.path, b"acl\n127.0.0.1\n::1/64\n10.0.0.0/8\n\n"),
            b"0: updated\n"
        );
        assert_eq!(
            env.fake.acl(),
            entries(&["127.0.0.1", "::1/64", "10.0.0.0/8"])
        );
        assert_eq!(exchange(&env.path, b"acl\n\n"), b"0: updated\n");
        assert_eq!(env.fake.acl(), vec![]);
        assert_eq!(*env.fake.acl_sets.lock().unwrap(), 2);
    }

    #[test]
    fn a_bad_acl_entry_keeps_the_old_list() {
        let env = start();
        exchange(&env.path, b"acl\n192.168.0.1\n\n");
        assert_eq!(
            exchange(&env.path, b"acl\n10.0.0.1\nnot-an-ip\n10.0.0.2/99\n\n"),
            b"1: bad spec: not-an-ip\n"
        );
        assert_eq!(
            exchange(&env.path, b"acl\n10.0.0.2/99\n\n"),
            b"1: bad spec: 10.0.0.2/99\n"
        );
        assert_eq!(env.fake.acl(), entries(&["192.168.0.1"]));
        assert_eq!(*env.fake.acl_sets.lock().unwrap(), 1);
    }

    #[test]
    fn unknown_commands_get_no_junk_after_the_newline() {
        let env = start();
        for request in [
            &b"STATUS\n\n"[..],
            b"Mirror\n1.2.3.4\n99\n\n",
            b"status \n\n",
        ] {
            assert_eq!(exchange(&env.path, request), b"10: unknown command\n");
        }
    }

    #[test]
    fn cr_is_not_stripped() {
        let env = start();
        assert_eq!(
            exchange(&env.path, b"status\r\n\r\n"),
            b"10: unknown command\n"
        );
    }

    #[test]
    fn missing_command() {
        let env = start();
        for request in [&b""[..], b"\n", b"\nstatus\n\n", b"status"] {
            assert_eq!(
                exchange(&env.path, request),
                b"9: missing command\n",
                "request {:?}",
                request.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn a_1000_byte_line_is_split() {
        let env = start();
        let mut request = vec![b'a'; 1000];
        request.extend_from_slice(b"\n\n");
        assert_eq!(exchange(&env.path, &request), b"10: unknown command\n");
        // As an ACL entry, only its first 256 bytes are one argument.
        let mut request = b"acl\n".to_vec();
        request.extend_from_slice(&[b'b'; 1000]);
        request.extend_from_slice(b"\n\n");
        let mut want = b"1: bad spec: ".to_vec();
        want.extend_from_slice(&[b'b'; 256]);
        want.push(b'\n');
        assert_eq!(exchange(&env.path, &request), want);
    }

    #[test]
    fn binary_garbage_gets_one_reply_and_the_server_carries_on() {
        let env = start();
        // A fixed-seed xorshift stream: the same garbage on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let garbage: Vec<u8> = (0..8192)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect();
        for chunk in [&garbage[..], &garbage[1..], &garbage[..100]] {
            let reply = exchange(&env.path, chunk);
            let line = std::str::from_utf8(&reply).unwrap();
            let reply: Reply = line.strip_suffix('\n').unwrap().parse().unwrap();
            assert!([9, 10].contains(&reply.code), "{line}");
        }
        // Unlike C, which truncates at a NUL, a NUL is an ordinary byte.
        assert_eq!(
            exchange(&env.path, b"status\0\n\n"),
            b"10: unknown command\n"
        );
        assert_eq!(exchange(&env.path, b"status\n\n"), STATUS_LINE);
    }

    #[test]
    fn too_many_lines_is_refused() {
        let env = start();
        let mut request = b"acl\n".to_vec();
        request.extend_from_slice(&b"127.0.0.1\n".repeat(protocol::MAX_REQUEST_LINES));
        request.push(b'\n');
        assert_eq!(exchange(&env.path, &request), b"1: request too long\n");
        assert_eq!(*env.fake.acl_sets.lock().unwrap(), 0);
    }

    #[test]
    fn a_silent_client_is_dropped_and_the_next_one_served() {
        let env = start_with(Duration::from_millis(200));
        let mut silent = UnixStream::connect(&env.path).unwrap();
        silent.write_all(b"status\n").unwrap();
        silent.set_read_timeout(Some(PATIENCE)).unwrap();
        // Queued behind the silent client; served once it times out.
        assert_eq!(exchange(&env.path, b"status\n\n"), STATUS_LINE);
        assert_eq!(
            read_to_close(&mut silent),
            b"",
            "no reply to an incomplete request"
        );
    }

    #[test]
    fn a_trickling_client_gets_no_more_time_than_a_silent_one() {
        let env = start_with(Duration::from_millis(300));
        let mut slow = UnixStream::connect(&env.path).unwrap();
        slow.set_read_timeout(Some(PATIENCE)).unwrap();
        let started = Instant::now();
        // One byte every 50 ms would reset a per-read timeout for ever.
        let mut closed = false;
        while started.elapsed() < PATIENCE {
            if slow.write_all(b"x").is_err() {
                closed = true;
                break;
            }
            let mut probe = [0u8; 1];
            slow.set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            match slow.read(&mut probe) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => panic!("unexpected reply"),
                Err(e) if is_timeout(&e) => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        assert!(closed, "server never dropped the trickling client");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(exchange(&env.path, b"status\n\n"), STATUS_LINE);
    }

    #[test]
    fn client_round_trip() {
        let env = start();
        let timeout = Some(PATIENCE);
        let reply = client::request::<&str>(&env.path, "status", &[], timeout).unwrap();
        assert_eq!(reply.code, 0);
        assert_eq!(reply.text.parse::<Status>().unwrap(), env.fake.status());
        let reply = client::request(&env.path, "acl", &["::1", "nope"], timeout).unwrap();
        assert_eq!(reply, Reply::error("bad spec: nope"));
        let reply = client::request(&env.path, "acl", &["::1"], timeout).unwrap();
        assert_eq!(reply, Reply::ok("updated"));
        assert_eq!(env.fake.acl(), entries(&["::1"]));
        let reply = client::request::<&str>(&env.path, "bogus", &[], timeout).unwrap();
        assert_eq!(reply, Reply::unknown_command());
    }

    #[test]
    fn a_stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        drop(UnixListener::bind(&path).unwrap()); // leaves the file behind
        assert!(path.exists());
        let server = ControlServer::start(&path, Arc::new(Fake::default())).unwrap();
        assert_eq!(exchange(&path, b"status\n\n"), STATUS_LINE);
        server.stop();
        assert!(!path.exists());
    }

    #[test]
    fn the_socket_is_owner_only_or_has_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let server = ControlServer::start(&path, Arc::new(Fake::default())).unwrap();
        assert_eq!(mode(&path), 0o600);
        server.stop();
        for wanted in [0o660, 0o666, 0o700] {
            let target = Arc::new(Fake::default());
            let server =
                ControlServer::start_with_options(&path, target, DEFAULT_REQUEST_TIMEOUT, wanted)
                    .unwrap();
            assert_eq!(mode(&path), wanted);
            assert_eq!(exchange(&path, b"status\n\n"), STATUS_LINE);
            server.stop();
        }
    }

    #[test]
    fn a_live_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let other = UnixListener::bind(&path).unwrap();
        let err = ControlServer::start(&path, Arc::new(Fake::default())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        assert_eq!(
            err.to_string(),
            format!(
                "control socket {} is in use by another process",
                path.display()
            )
        );
        // The other process's socket is untouched and still works.
        assert!(path.exists());
        let _client = UnixStream::connect(&path).unwrap();
        other.set_nonblocking(true).unwrap();
        assert!(other.accept().is_ok());
    }

    #[test]
    fn a_second_server_on_our_own_socket_is_refused() {
        let env = start();
        let err = ControlServer::start(&env.path, Arc::new(Fake::default())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AddrInUse);
        assert_eq!(exchange(&env.path, b"status\n\n"), STATUS_LINE);
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        fs::write(&path, b"precious").unwrap();
        let err = ControlServer::start(&path, Arc::new(Fake::default())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn a_path_too_long_for_a_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x".repeat(120));
        let err = ControlServer::start(&path, Arc::new(Fake::default())).unwrap_err();
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        assert!(!path.exists());
    }

    #[test]
    fn stop_and_drop_unlink_the_socket() {
        let env = start();
        let path = env.path.clone();
        assert!(path.exists());
        env.server.stop();
        assert!(!path.exists());
        assert!(UnixStream::connect(&path).is_err());

        let env = start();
        let path = env.path.clone();
        drop(env.server);
        assert!(!path.exists());
    }

    #[test]
    fn stop_leaves_a_replaced_socket_alone() {
        let env = start();
        fs::remove_file(&env.path).unwrap();
        let _other = UnixListener::bind(&env.path).unwrap();
        env.server.stop();
        assert!(env.path.exists());
    }

    #[test]
    fn stop_does_not_wait_for_a_slow_client() {
        let env = start_with(Duration::from_secs(600));
        let mut slow = UnixStream::connect(&env.path).unwrap();
        slow.write_all(b"status\n").unwrap();
        slow.set_read_timeout(Some(PATIENCE)).unwrap();
        // Make sure the control thread is blocked reading this request.
        let deadline = Instant::now() + PATIENCE;
        while env.server.shared.reading().is_none() {
            assert!(Instant::now() < deadline, "request never read");
            thread::yield_now();
        }
        let started = Instant::now();
        env.server.stop();
        assert!(started.elapsed() < PATIENCE, "stop waited for the client");
        assert_eq!(
            read_to_close(&mut slow),
            b"",
            "a dropped request gets no reply"
        );
    }

    /// A server whose `status` blocks until the test lets it go.
    struct Blocking {
        entered: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Controlled for Blocking {
        fn status(&self) -> Status {
            self.entered.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv_timeout(PATIENCE).unwrap();
            Fake::default().status()
        }

        fn set_acl(&self, _: Vec<AclEntry>) {}
    }

    #[test]
    fn stop_lets_the_command_in_progress_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (entered_tx, entered_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let target = Arc::new(Blocking {
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
        });
        let server = ControlServer::start(&path, target).unwrap();
        let shared = Arc::clone(&server.shared);
        let client = thread::spawn({
            let path = path.clone();
            move || exchange(&path, b"status\n\n")
        });
        entered_rx.recv_timeout(PATIENCE).unwrap();
        let stopper = thread::spawn(move || server.stop());
        let deadline = Instant::now() + PATIENCE;
        while !shared.is_stopping() {
            assert!(Instant::now() < deadline, "stop never started");
            thread::yield_now();
        }
        assert!(path.exists(), "unlinked before the command finished");
        release_tx.send(()).unwrap();
        assert_eq!(client.join().unwrap(), STATUS_LINE);
        stopper.join().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn dispatch_without_sockets() {
        let fake = Fake::default();
        let req = |lines: &[&str]| {
            Request::from_lines(lines.iter().map(|l| l.as_bytes().to_vec()).collect())
        };
        assert_eq!(dispatch(&fake, &req(&[])), Reply::missing_command());
        assert_eq!(dispatch(&fake, &req(&["Status"])), Reply::unknown_command());
        assert_eq!(
            dispatch(&fake, &req(&["status"])).encode(),
            STATUS_LINE.to_vec()
        );
        assert_eq!(
            dispatch(&fake, &req(&["acl", "1.2.3.4/16"])),
            Reply::ok("updated")
        );
        assert_eq!(fake.acl(), entries(&["1.2.3.4/16"]));
        let invalid_utf8 = Request::from_lines(vec![b"acl".to_vec(), b"\xff1.2.3.4".to_vec()]);
        assert_eq!(
            dispatch(&fake, &invalid_utf8),
            Reply::error("bad spec: \u{fffd}1.2.3.4")
        );
    }
}
