//! Migrations that go wrong, and migrations with the C flexnbd.
//!
//! 1. Hostile destinations (flexnbd-c's `fakes/dest`, behaviour doc 15.3 and
//!    15.7): a fake NBD server on a test thread misbehaves at one step, and
//!    our real `flexnbd serve` is the source, driven by the `flexnbd mirror`
//!    CLI. We check the CLI's reply, whether the source retries (a new
//!    connection reaches the fake within a bounded time) or not (none within
//!    3 s), that the source keeps serving its own clients, and how it exits.
//! 2. Hostile sources (`fakes/source`, 15.4 and 15.8): a fake sender
//!    misbehaves against our real `flexnbd listen`, newstyle and
//!    `--oldstyle`. The listener must keep listening without control and
//!    serve a well-behaved sender afterwards; only a DISCONNECT hands control
//!    over (a bad magic does not: flexnbd-c bug 14.3.1 fixed).
//! 3. The C flexnbd 0.5.0 as the other end, in both directions, with a spy on
//!    the wire. Skipped with a printed reason if the C binary cannot run,
//!    except under `CI=true`.
//!
//! Sources run with `FLEXNBD_MS_REQUEST_LIMIT_SECS` set low, so that a
//! destination that never replies is given up on within seconds.

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flexnbd::client::{ConnectOptions, NbdClient};
use flexnbd::proto::consts::{MIRROR_HANDLE, NBD_SIMPLE_REPLY_MAGIC};
use flexnbd::proto::types::{Cmd, CmdFlags, Errno};
use flexnbd::proto::wire::{NewstyleHello, OldstyleHello, Request, SimpleReply};

use crate::support::control::{queued_connections, status_line};
use crate::support::daemon::start_on_free_port;
use crate::support::wire::{self, Client, closed_within, read_request, reply_bytes, send_hello};
use crate::support::{
    Daemon, DaemonBuilder, FakePeer, Signal, Style, TestEnv, allocated, control, finish,
    flexnbd_std, free_port, pattern, text, wait_until,
};

/// The size of the sources and destinations that are not about volume.
const SIZE: u64 = 4096;
/// The source's request limit (`FLEXNBD_MS_REQUEST_LIMIT_SECS`) in most tests.
const LIMIT: Duration = Duration::from_secs(2);
/// How long a source that gave up is watched for a reconnection that must not come.
const NO_RETRY_WINDOW: Duration = Duration::from_secs(3);
/// How long a source that retries may take to reconnect.
const RETRY_WITHIN: Duration = Duration::from_secs(10);
/// How long any daemon may take to exit when it should.
const EXIT_WITHIN: Duration = Duration::from_secs(15);
/// The read timeout on every socket a fake uses.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest WRITE flexnbd-c's mirror sends (mirror_longest_write).
const MAX_MIRROR_WRITE: u32 = 8 << 20;

// ---------------------------------------------------------------------------
// Processes: our serve and listen, the CLI, the C flexnbd.

/// Our `flexnbd serve` with a control socket: the migration's source.
struct Source {
    daemon: Daemon,
    addr: SocketAddr,
    sock: PathBuf,
    file: PathBuf,
}

impl Source {
    /// Serves a file holding `data`, with the request limit `limit`.
    #[track_caller]
    fn start(env: &TestEnv, data: &[u8], limit: Duration) -> Source {
        let file = env.image_with("source.img", data);
        Source::start_file(env, file, limit)
    }

    #[track_caller]
    fn start_file(env: &TestEnv, file: PathBuf, limit: Duration) -> Source {
        let sock = env.sock_path_named("source.sock");
        let daemon = DaemonBuilder::new("serve", &file)
            .sock(&sock)
            .arg("-v")
            .env(
                "FLEXNBD_MS_REQUEST_LIMIT_SECS",
                format!("{}", limit.as_secs_f64()),
            )
            .start();
        let addr = daemon.addr();
        Source {
            daemon,
            addr,
            sock,
            file,
        }
    }

    /// `flexnbd mirror` to 127.0.0.1:`port`, to the end.
    #[track_caller]
    fn mirror(&self, port: u16, extra: &[&str]) -> Output {
        mirror_cli(&self.sock, port, extra)
    }

    fn spawn_mirror(&self, port: u16, extra: &[&str]) -> Child {
        spawn_mirror_cli(&self.sock, port, extra)
    }

    /// The `status` line.
    #[track_caller]
    fn status(&self) -> String {
        status_line(&self.sock)
    }

    /// The source still serves its own clients: a write reads back.
    #[track_caller]
    fn assert_serves(&self) {
        let opts = ConnectOptions {
            connect_timeout: Duration::from_secs(5),
            hello_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(10),
            ..ConnectOptions::default()
        };
        let mut client = NbdClient::connect(self.addr, &opts)
            .unwrap_or_else(|e| panic!("the source does not serve a client any more: {e}"));
        let data = pattern(512, 77);
        client.write_at(512, &data, false).unwrap();
        let mut back = vec![0u8; 512];
        client.read_at(512, &mut back).unwrap();
        assert_eq!(back, data, "the source's client read back something else");
        client.disconnect().unwrap();
    }

    /// SIGTERM with no migration running: the source exits 0.
    #[track_caller]
    fn stop_cleanly(&mut self) {
        let status = self.daemon.stop();
        assert_eq!(
            status.code(),
            Some(0),
            "serve did not exit 0 on SIGTERM while not mirroring ({status}); stderr:\n{}",
            self.daemon.stderr()
        );
    }
}

/// Our `flexnbd listen` with a control socket: the migration's destination.
struct Listener {
    daemon: Daemon,
    addr: SocketAddr,
    sock: PathBuf,
    file: PathBuf,
    style: Style,
}

impl Listener {
    /// Listens on a fresh sparse file of `size` bytes.
    #[track_caller]
    fn start(env: &TestEnv, size: u64, style: Style) -> Listener {
        let file = env.image("dest.img", size);
        let sock = env.sock_path_named("dest.sock");
        let daemon = DaemonBuilder::new("listen", &file)
            .sock(&sock)
            .arg("-v")
            .args(style.args())
            .start();
        let addr = daemon.addr();
        Listener {
            daemon,
            addr,
            sock,
            file,
            style,
        }
    }

    #[track_caller]
    fn status(&self) -> String {
        status_line(&self.sock)
    }

    /// Waits (bounded) until no client is connected, so the single slot is free.
    #[track_caller]
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = self.status();
            if status.contains(" num_clients=0 ") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "a client is still connected: {status}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// After a misbehaving sender: still listening, without control, and a
    /// well-behaved sender's write and read work.
    #[track_caller]
    fn assert_survives(&mut self) {
        self.wait_idle();
        assert!(
            self.daemon.is_running(),
            "listen exited after a misbehaving sender; stderr:\n{}",
            self.daemon.stderr()
        );
        let status = self.status();
        assert!(
            status.contains(" has_control=false "),
            "listen took control: {status}"
        );
        let mut s = connect_when_free(self.addr, self.style);
        s.write(0x5752_4954_4531_3233, 1024, b"goodbyte");
        s.expect_reply(0x5752_4954_4531_3233, Errno::OK);
        assert_eq!(s.read(0x5245_4144_4241_434b, 1024, 8), b"goodbyte");
        drop(s);
        self.wait_idle();
        assert!(
            self.daemon.is_running(),
            "listen exited after a clean close"
        );
    }

    /// flexnbd-c's `successful_transfer`: hello, an 8-byte write, its reply,
    /// DISCONNECT. The listener takes control and exits 0 with the data.
    #[track_caller]
    fn finish_transfer(&mut self) {
        let mut s = connect_when_free(self.addr, self.style);
        s.write(1, 0, b"12345678");
        s.expect_reply(1, Errno::OK);
        s.request(Cmd::DISC, 2, 0, 0);
        let status = self.daemon.wait_exit(EXIT_WITHIN);
        assert_eq!(
            status.code(),
            Some(0),
            "listen did not exit 0 after DISCONNECT ({status}); stderr:\n{}",
            self.daemon.stderr()
        );
        let file = std::fs::read(&self.file).unwrap();
        assert_eq!(&file[..8], b"12345678");
    }
}

/// Spawns `flexnbd ARGS` with its output piped.
fn spawn_cli(args: &[&OsStr]) -> Child {
    flexnbd_std()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run flexnbd")
}

/// `flexnbd mirror -s sock -l 127.0.0.1 -p port EXTRA`, to the end.
#[track_caller]
fn mirror_cli(sock: &Path, port: u16, extra: &[&str]) -> Output {
    finish(spawn_mirror_cli(sock, port, extra), Duration::from_secs(40))
}

/// [`mirror_cli`], started.
fn spawn_mirror_cli(sock: &Path, port: u16, extra: &[&str]) -> Child {
    let port = port.to_string();
    let mut args: Vec<&OsStr> = vec![
        "mirror".as_ref(),
        "-s".as_ref(),
        sock.as_os_str(),
        "-l".as_ref(),
        "127.0.0.1".as_ref(),
        "-p".as_ref(),
        port.as_ref(),
    ];
    args.extend(extra.iter().map(OsStr::new));
    spawn_cli(&args)
}

/// The CLI exited `code` and said `message` on stdout (code 0) or stderr (otherwise).
#[track_caller]
fn assert_cli(out: &Output, code: i32, message: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status; stdout {stdout:?} stderr {stderr:?}"
    );
    let (said, silent) = if code == 0 {
        (&stdout, &stderr)
    } else {
        (&stderr, &stdout)
    };
    assert_eq!(
        said.trim_end(),
        message,
        "stdout {stdout:?} stderr {stderr:?}"
    );
    assert!(silent.is_empty(), "stdout {stdout:?} stderr {stderr:?}");
}

/// Exited with 0 or 1 by itself, not by a signal.
#[track_caller]
fn assert_no_crash(status: ExitStatus, stderr: &str) {
    assert!(
        matches!(status.code(), Some(0 | 1)),
        "the source crashed or failed oddly ({status}); stderr:\n{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Fake destinations.

/// Reads one mirror WRITE (header and payload) and checks it is flexnbd-c's.
#[track_caller]
fn read_mirror_write(s: &mut TcpStream) -> Request {
    let req = read_request(s).req;
    assert_eq!(req.cmd, Cmd::WRITE);
    assert_eq!(req.handle, MIRROR_HANDLE);
    req
}

// ---------------------------------------------------------------------------
// 1. Hostile destinations against our serve (15.3, 15.7).

/// A destination the source gave up on before it started: the CLI's reply,
/// no reconnection, no migration left, and the source serves on and exits 0.
#[track_caller]
fn assert_given_up<R: Send + 'static>(
    script: impl FnOnce(TcpStream) -> R + Send + 'static,
    message: &str,
) -> (R, Duration) {
    let env = TestEnv::new();
    let mut source = Source::start(&env, &pattern(SIZE as usize, 1), LIMIT);
    let fake = FakePeer::first_only(script);
    let started = Instant::now();
    let out = source.mirror(fake.port(), &[]);
    let took = started.elapsed();
    assert_cli(&out, 1, message);
    assert!(
        source.status().contains(" is_mirroring=false "),
        "{}",
        source.status()
    );
    let result = fake.first_result(Duration::from_secs(15));
    assert!(
        fake.reconnected_within(NO_RETRY_WINDOW).is_none(),
        "the source retried a destination that failed before the migration started"
    );
    source.assert_serves();
    source.stop_cleanly();
    (result, took)
}

/// A destination that fails after the migration started: `Mirror started`,
/// then a reconnection; the source serves meanwhile, `break` stops it, and
/// it exits 0.
#[track_caller]
fn assert_retried<R: Send + 'static>(script: impl FnOnce(TcpStream) -> R + Send + 'static) -> R {
    let env = TestEnv::new();
    let mut source = Source::start(&env, &pattern(SIZE as usize, 2), LIMIT);
    let fake = FakePeer::first_only(script);
    let out = source.mirror(fake.port(), &[]);
    assert_cli(&out, 0, "Mirror started");
    let result = fake.first_result(Duration::from_secs(20));
    assert!(
        fake.reconnected_within(RETRY_WITHIN).is_some(),
        "the source did not reconnect within {RETRY_WITHIN:?}; stderr:\n{}",
        source.daemon.stderr()
    );
    let status = source.status();
    assert!(status.contains(" is_mirroring=true "), "{status}");
    assert!(!status.contains(" migration_retries=0 "), "{status}");
    source.assert_serves();
    assert_eq!(control(&source.sock, "break", &[]), "0: mirror stopped\n");
    assert!(
        source.status().contains(" is_mirroring=false "),
        "{}",
        source.status()
    );
    source.stop_cleanly();
    result
}

#[test]
fn unreachable_destination_fails_to_connect_and_leaves_no_mirror_behind() {
    let env = TestEnv::new();
    let data = pattern(SIZE as usize, 3);
    let mut source = Source::start(&env, &data, LIMIT);
    let out = source.mirror(free_port(), &[]);
    assert_cli(&out, 1, "Mirror failed to connect");
    // flexnbd-c bug 14.3.4: the failed mirror stayed and blocked the next one.
    let status = source.status();
    assert!(status.contains(" is_mirroring=false "), "{status}");
    assert!(status.contains(" has_control=true "), "{status}");
    source.assert_serves();
    let data = std::fs::read(&source.file).unwrap();

    // A second mirror is accepted, and this one completes.
    let mut dest = Listener::start(&env, SIZE, Style::Newstyle);
    let out = source.mirror(dest.addr.port(), &[]);
    assert_cli(&out, 0, "Mirror started");
    let status = source.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", source.daemon.stderr());
    let status = dest.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", dest.daemon.stderr());
    assert_eq!(std::fs::read(&dest.file).unwrap(), data);
}

#[test]
fn destination_closing_at_once_is_rejected_and_not_retried() {
    assert_given_up(drop, "Mirror was rejected");
}

#[test]
fn hello_with_wrong_magic_is_rejected_and_not_retried() {
    assert_given_up(
        |mut s| {
            let mut hello = [0u8; OldstyleHello::SIZE];
            OldstyleHello {
                size: SIZE,
                flags: 0,
            }
            .encode(&mut hello);
            hello[8..16].copy_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
            s.write_all(&hello).unwrap();
            closed_within(&mut s, Duration::from_secs(10))
        },
        "Mirror was rejected",
    );
}

#[test]
fn hello_with_wrong_size_is_reported_closed_and_not_retried() {
    let (closed, _) = assert_given_up(
        |mut s| {
            send_hello(&mut s, 12345 * 512, 0);
            closed_within(&mut s, Duration::from_secs(10))
        },
        "Remote size does not match local size",
    );
    assert!(closed, "the source kept the mismatched connection open");
}

#[test]
fn destination_silent_after_connect_fails_to_respond_after_5s() {
    let (_, took) = assert_given_up(
        |s| {
            // flexnbd-c's hang_after_connect: nothing for 6 s.
            std::thread::sleep(Duration::from_secs(6));
            drop(s);
        },
        "Remote server failed to respond",
    );
    assert!(
        took >= Duration::from_millis(4500) && took < Duration::from_secs(10),
        "the hello timeout is 5 s, the reply took {took:?}"
    );
}

#[test]
fn close_after_hello_is_retried() {
    assert_retried(|mut s| {
        send_hello(&mut s, SIZE, 0);
        drop(s);
    });
}

#[test]
fn close_after_write_header_is_retried() {
    assert_retried(|mut s| {
        send_hello(&mut s, SIZE, 0);
        let mut head = [0u8; Request::SIZE];
        s.read_exact(&mut head).unwrap();
        drop(s);
    });
}

#[test]
fn error_reply_to_a_write_is_retried() {
    assert_retried(|mut s| {
        send_hello(&mut s, SIZE, 0);
        let req = read_mirror_write(&mut s);
        s.write_all(&reply_bytes(Errno(1), req.handle)).unwrap();
        closed_within(&mut s, Duration::from_secs(10))
    });
}

#[test]
fn reply_with_wrong_magic_is_retried() {
    assert_retried(|mut s| {
        send_hello(&mut s, SIZE, 0);
        let req = read_mirror_write(&mut s);
        let mut reply = reply_bytes(Errno::OK, req.handle);
        reply[..4].copy_from_slice(&(!NBD_SIMPLE_REPLY_MAGIC).to_be_bytes());
        s.write_all(&reply).unwrap();
        closed_within(&mut s, Duration::from_secs(10))
    });
}

#[test]
fn reply_with_wrong_handle_is_retried() {
    assert_retried(|mut s| {
        send_hello(&mut s, SIZE, 0);
        read_mirror_write(&mut s);
        s.write_all(&reply_bytes(Errno::OK, u64::from_be_bytes(*b"NOTMINE!")))
            .unwrap();
        closed_within(&mut s, Duration::from_secs(10))
    });
}

#[test]
fn no_reply_to_a_write_is_retried_after_the_request_limit() {
    let (waited, closed) = assert_retried(|mut s| {
        send_hello(&mut s, SIZE, 0);
        read_mirror_write(&mut s);
        let written = Instant::now();
        let closed = closed_within(&mut s, Duration::from_secs(15));
        (written.elapsed(), closed)
    });
    assert!(closed, "the source never gave up on the silent destination");
    assert!(
        waited >= LIMIT - Duration::from_millis(500) && waited < LIMIT + Duration::from_secs(5),
        "the request limit is {LIMIT:?}, the source gave up after {waited:?}"
    );
}

#[test]
fn destination_closing_after_acking_everything_does_not_crash_the_source() {
    let env = TestEnv::new();
    let mut source = Source::start(&env, &pattern(SIZE as usize, 4), LIMIT);
    let pid = rustix::process::Pid::from_raw(source.daemon.pid() as i32).unwrap();
    // flexnbd-c's close_after_writes: one write (the whole 4 KiB export), its
    // ack and the close reach the source while it is stopped, so it sees them at once.
    let fake = FakePeer::first_only(move |mut s| {
        send_hello(&mut s, SIZE, 0);
        let req = read_mirror_write(&mut s);
        assert_eq!((req.offset, req.len), (0, SIZE as u32));
        rustix::process::kill_process(pid, Signal::STOP).unwrap();
        let reply = s.write_all(&reply_bytes(Errno::OK, req.handle));
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
        rustix::process::kill_process(pid, Signal::CONT).unwrap();
        reply.unwrap();
    });
    let out = source.mirror(fake.port(), &[]);
    assert_cli(&out, 0, "Mirror started");
    fake.first_result(Duration::from_secs(15));
    // Either it sent DISCONNECT into the closed socket and exits 0 by itself,
    // or it saw the close first and retries (then SIGTERM: exit 1). Never a crash.
    let status = match source.daemon.try_wait_exit(Duration::from_secs(5)) {
        Some(status) => status,
        None => {
            source.assert_serves();
            source.daemon.signal(Signal::TERM);
            source.daemon.wait_exit(EXIT_WITHIN)
        }
    };
    assert_no_crash(status, &source.daemon.stderr());
}

#[test]
fn break_while_the_destination_is_connected_stops_without_reconnecting() {
    let env = TestEnv::new();
    let mut source = Source::start(&env, &pattern(SIZE as usize, 5), Duration::from_secs(30));
    // flexnbd-c's break_after_hello: the break is queued behind the mirror
    // command, which is still waiting for the hello.
    let (accepted_tx, accepted) = mpsc::channel();
    let (go_tx, go) = mpsc::channel::<()>();
    let fake = FakePeer::first_only(move |mut s| {
        accepted_tx.send(()).unwrap();
        go.recv_timeout(Duration::from_secs(10)).unwrap();
        send_hello(&mut s, SIZE, 0);
        // The write may or may not go out before the break is handled; never answer it.
        closed_within(&mut s, Duration::from_secs(15))
    });
    let mirror = source.spawn_mirror(fake.port(), &[]);
    accepted.recv_timeout(Duration::from_secs(10)).unwrap();
    let sock = source.sock.clone();
    assert_eq!(
        queued_connections(&sock),
        0,
        "a control request is queued already"
    );
    let brk = spawn_cli(&["break".as_ref(), "-s".as_ref(), sock.as_os_str()]);
    // The control thread serves one connection at a time and is busy with the
    // mirror: the break's connection waits in the socket's backlog.
    wait_until(
        "the break queued behind the mirror",
        Duration::from_secs(10),
        || queued_connections(&sock) == 1,
    );
    go_tx.send(()).unwrap();
    assert_cli(
        &finish(mirror, Duration::from_secs(20)),
        0,
        "Mirror started",
    );
    assert_cli(&finish(brk, Duration::from_secs(20)), 0, "mirror stopped");
    assert!(
        fake.first_result(Duration::from_secs(20)),
        "the destination's connection was not closed by break"
    );
    assert!(
        fake.reconnected_within(NO_RETRY_WINDOW).is_none(),
        "the source reconnected after break"
    );
    let status = source.status();
    assert!(status.contains(" is_mirroring=false "), "{status}");
    assert!(status.contains(" has_control=true "), "{status}");
    source.assert_serves();
    source.stop_cleanly();
}

#[test]
fn sigterm_while_mirroring_exits_1() {
    let env = TestEnv::new();
    let mut source = Source::start(&env, &pattern(SIZE as usize, 6), Duration::from_secs(30));
    let (written_tx, written) = mpsc::channel();
    let fake = FakePeer::first_only(move |mut s| {
        send_hello(&mut s, SIZE, 0);
        read_mirror_write(&mut s);
        written_tx.send(()).unwrap();
        closed_within(&mut s, Duration::from_secs(15))
    });
    let out = source.mirror(fake.port(), &[]);
    assert_cli(&out, 0, "Mirror started");
    written.recv_timeout(Duration::from_secs(10)).unwrap();
    source.daemon.signal(Signal::TERM);
    let status = source.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(
        status.code(),
        Some(1),
        "a signal during a migration must exit 1 ({status}); stderr:\n{}",
        source.daemon.stderr()
    );
    assert!(
        fake.first_result(Duration::from_secs(20)),
        "the destination's connection was not closed"
    );
    assert!(source.file.exists(), "the source file went away");
}

// ---------------------------------------------------------------------------
// 2. Hostile sources against our listen (15.4, 15.8).

/// A sender's connection to a `listen`, through the handshake of `style`
/// (old-style: the hello; newstyle: NO_ZEROES and EXPORT_NAME of the default
/// export), which must announce [`SIZE`].
#[track_caller]
fn connect(addr: SocketAddr, style: Style) -> Client {
    let c = Client::connect(addr, style.export_name_handshake());
    assert_eq!(c.size, SIZE);
    c
}

/// [`connect`], connecting again (for up to 5 s) while the listener
/// refuses, i.e. closes before its first byte: a connection closed in the
/// backlog still takes the single slot for a moment once accepted, and
/// `status` cannot count it before that.
#[track_caller]
fn connect_when_free(addr: SocketAddr, style: Style) -> Client {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = wire::tcp(addr);
        match s.peek(&mut [0u8; 1]) {
            Ok(1) => {
                let mut c = Client::new(s);
                c.handshake(style.export_name_handshake());
                assert_eq!(c.size, SIZE);
                return c;
            }
            Ok(_) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => panic!("the listener refuses every connection: {other:?}"),
        }
    }
}

/// The server closes `s` within 2 s without sending a byte.
#[track_caller]
fn assert_closed_without_a_byte(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("expected EOF, got {n} bytes: {:02x?}", &buf[..n]),
        Err(e) => panic!("expected EOF within 2 s: {e}"),
    }
}

/// Starts a `listen` in `style`, lets `misbehave` do its worst to it, then
/// checks it survives ([`Listener::assert_survives`]) and still takes a clean
/// transfer.
fn survives(style: Style, misbehave: impl FnOnce(&mut Listener)) {
    let env = TestEnv::new();
    let mut l = Listener::start(&env, SIZE, style);
    misbehave(&mut l);
    l.assert_survives();
    l.finish_transfer();
}

fn connect_then_close(style: Style) {
    survives(style, |l| {
        drop(wire::tcp(l.addr));
        l.assert_survives();
        // flexnbd-c reconnects 0.5 s later; a second bare connect works too.
        drop(wire::tcp(l.addr));
    });
}

fn close_after_hello(style: Style) {
    survives(style, |l| {
        drop(connect(l.addr, style));
        if style == Style::Newstyle {
            l.assert_survives();
            // Also in the middle of the negotiation: greeting read, then gone.
            let mut s = wire::tcp(l.addr);
            let mut hello = [0u8; NewstyleHello::SIZE];
            s.read_exact(&mut hello).unwrap();
            drop(s);
        }
    });
}

fn read_request_without_reading_the_hello(style: Style) {
    survives(style, |l| {
        // flexnbd-c's close_mid_read: a read request, 4 bytes read, close.
        let mut s = wire::tcp(l.addr);
        s.write_all(&wire::header(Cmd::READ, CmdFlags(0), 1, 0, SIZE as u32))
            .unwrap();
        let mut four = [0u8; 4];
        s.read_exact(&mut four).unwrap();
        drop(s);
    });
}

fn second_connection_is_refused_and_the_first_continues(style: Style) {
    survives(style, |l| {
        let mut first = connect(l.addr, style);
        let mut second = wire::tcp(l.addr);
        assert_closed_without_a_byte(&mut second);
        first.write(7, 2048, b"stillok!");
        first.expect_reply(7, Errno::OK);
        assert_eq!(first.read(8, 2048, 8), b"stillok!");
        drop(first);
    });
}

fn connection_from_outside_the_acl_sees_eof(style: Style) {
    survives(style, |l| {
        assert_eq!(control(&l.sock, "acl", &["127.0.0.1"]), "0: updated\n");
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 6), 0)).into())
            .unwrap();
        socket.connect_timeout(&l.addr.into(), IO_TIMEOUT).unwrap();
        let mut banned: TcpStream = socket.into();
        assert_closed_without_a_byte(&mut banned);
    });
}

fn write_out_of_range_gets_an_error_and_the_next_write_works(style: Style) {
    survives(style, |l| {
        let mut s = connect(l.addr, style);
        let handle = u64::from_be_bytes(*b"myhandle");
        s.write(handle, SIZE + 1, &[0xAB; 32]);
        // ENOSPC in both handshakes, with the handle echoed and the payload drained.
        s.expect_reply(handle, Errno::ENOSPC);
        s.write(handle + 1, 0, b"in range");
        s.expect_reply(handle + 1, Errno::OK);
        drop(s);
        assert_eq!(&std::fs::read(&l.file).unwrap()[..8], b"in range");
    });
}

fn write_header_then_close(style: Style) {
    survives(style, |l| {
        let mut s = connect(l.addr, style);
        s.request(Cmd::WRITE, 1, 0, 8);
        drop(s);
    });
}

fn write_header_and_data_then_close(style: Style) {
    survives(style, |l| {
        let mut s = connect(l.addr, style);
        s.write(1, 8, b"partial!");
        drop(s);
    });
}

fn bad_magic_gets_an_error_and_does_not_hand_control_over(style: Style) {
    survives(style, |l| {
        let mut s = connect(l.addr, style);
        let handle = u64::from_be_bytes(*b"myhandle");
        let mut head = wire::header(Cmd::WRITE, CmdFlags(0), handle, 0, 0);
        head[..4].fill(0);
        s.s.write_all(&head).unwrap();
        let r = s.reply();
        assert_eq!(r.handle, handle);
        assert_ne!(r.error, Errno::OK);
        let mut rest = Vec::new();
        s.s.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "bytes after the error reply: {rest:02x?}");
        // flexnbd-c bug 14.3.1: C takes control here and exits 0.
    });
}

fn sigterm_before_control_exits_1(style: Style) {
    let env = TestEnv::new();
    let mut l = Listener::start(&env, SIZE, style);
    let _s = connect(l.addr, style);
    l.daemon.signal(Signal::TERM);
    let status = l.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(1), "{}", l.daemon.stderr());
}

fn clean_transfer_hands_control_over(style: Style) {
    let env = TestEnv::new();
    let mut l = Listener::start(&env, SIZE, style);
    l.finish_transfer();
}

/// The pages of `path` in the page cache that are dirty or under writeback
/// (Linux's `cachestat`, 6.5 and later, called through Python's ctypes), or
/// `None` if the kernel lacks it or there is no Python.
#[track_caller]
fn unsynced_pages(path: &Path) -> Option<u64> {
    const SCRIPT: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
class Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]
class Stat(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in ("cache", "dirty", "writeback", "evicted", "recently_evicted")]
fd = os.open(sys.argv[1], os.O_RDONLY)
st = Stat()
if libc.syscall(451, fd, ctypes.byref(Range(0, 0)), ctypes.byref(st), 0) != 0:
    print("errno", ctypes.get_errno())
else:
    print("pages", st.cache, st.dirty, st.writeback)
"#;
    // Optional, as an interop tool: a fresh Debian may have no Python.
    if !Path::new(crate::support::SYSTEM_PYTHON).exists() {
        assert!(!crate::support::in_ci(), "CI=true needs /usr/bin/python3");
        crate::support::print_skip("no /usr/bin/python3 to call cachestat");
        return None;
    }
    let out = Command::new(crate::support::SYSTEM_PYTHON)
        .args(["-c", SCRIPT])
        .arg(path)
        .output()
        .unwrap();
    let said = text(&out.stdout);
    let words: Vec<&str> = said.split_whitespace().collect();
    match words.as_slice() {
        ["pages", cached, dirty, writeback] => {
            assert_ne!(*cached, "0", "the page cache holds nothing of {path:?}");
            Some(dirty.parse::<u64>().unwrap() + writeback.parse::<u64>().unwrap())
        }
        ["errno", "38"] => {
            crate::support::print_skip("this kernel has no cachestat");
            None
        }
        _ => panic!("cachestat failed: {said} {}", text(&out.stderr)),
    }
}

/// A plain WRITE to `listen` in `style`, then how many pages of the file are
/// still dirty right after its reply (`None` without cachestat).
fn unsynced_after_a_write(style: Style) -> Option<u64> {
    let env = TestEnv::new();
    let mut l = Listener::start(&env, SIZE, style);
    let mut s = connect(l.addr, style);
    s.write(1, 0, &pattern(SIZE as usize, 9));
    s.expect_reply(1, Errno::OK);
    let unsynced = unsynced_pages(&l.file);
    drop(s);
    l.finish_transfer();
    unsynced
}

/// flexnbd-c's source (old-style, `mirror --unlink`) never sends FLUSH and
/// deletes its file before the DISCONNECT: an old-style `listen` makes every
/// write durable before it replies, as flexnbd-c's destination does.
#[test]
fn oldstyle_listen_makes_every_write_durable_before_its_reply() {
    if let Some(pages) = unsynced_after_a_write(Style::Oldstyle) {
        assert_eq!(pages, 0, "pages still dirty after the reply to a WRITE");
    }
}

/// A newstyle `listen` leaves durability to FLUSH (which our source sends
/// before the handover): a write is acknowledged from the page cache. This
/// also shows that the check above can see a write that was not synced.
#[test]
fn newstyle_listen_acknowledges_writes_from_the_page_cache() {
    if let Some(pages) = unsynced_after_a_write(Style::Newstyle) {
        assert!(
            pages > 0,
            "a write was synced before its reply without FUA or FLUSH"
        );
    }
}

macro_rules! per_style {
    ($module:ident, $style:expr, [$($scenario:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($style);
                }
            )*
        }
    };
}

macro_rules! listen_scenarios {
    ($($module:ident: $style:expr),*) => {
        $(
            per_style!($module, $style, [
                connect_then_close,
                close_after_hello,
                read_request_without_reading_the_hello,
                second_connection_is_refused_and_the_first_continues,
                connection_from_outside_the_acl_sees_eof,
                write_out_of_range_gets_an_error_and_the_next_write_works,
                write_header_then_close,
                write_header_and_data_then_close,
                bad_magic_gets_an_error_and_does_not_hand_control_over,
                sigterm_before_control_exits_1,
                clean_transfer_hands_control_over,
            ]);
        )*
    };
}

listen_scenarios!(listen_newstyle: super::Style::Newstyle, listen_oldstyle: super::Style::Oldstyle);

// ---------------------------------------------------------------------------
// 3. The C flexnbd as the other end.

/// The C flexnbd if it can run here; otherwise prints why the test is
/// skipped (or fails, under `CI=true`).
fn c_flexnbd() -> Option<PathBuf> {
    crate::support::flexnbd_c()
}

/// The C flexnbd's `serve` or `listen` on `file`, with a control socket.
#[track_caller]
pub(crate) fn start_c(
    env: &TestEnv,
    c: &Path,
    mode: &str,
    file: &Path,
) -> (Daemon, SocketAddr, PathBuf) {
    let sock = env.sock_path_named(&format!("c-{mode}.sock"));
    let daemon = start_on_free_port(Some(&sock), |port| {
        let mut cmd = Command::new(c);
        cmd.arg(mode)
            .args(["-l", "127.0.0.1", "-p", &port.to_string(), "-f"])
            .arg(file)
            .arg("-s")
            .arg(&sock);
        cmd
    });
    let addr = daemon.addr();
    (daemon, addr, sock)
}

#[test]
fn c_serve_mirrors_into_our_oldstyle_listen_and_holes_stay_holes() {
    let Some(c) = c_flexnbd() else { return };
    let env = TestEnv::new();
    // 12 MiB, mostly holes: two 8 MiB transfers from the C source, zeroes and all.
    let size: u64 = 12 << 20;
    let src = env.image("c-source.img", size);
    let file = std::fs::OpenOptions::new().write(true).open(&src).unwrap();
    for (offset, len, seed) in [
        (0u64, 64usize << 10, 1u64),
        (3 << 20, 4096, 2),
        ((8 << 20) - 100, 200, 3),
        (size - 4096, 4096, 4),
    ] {
        file.write_all_at(&pattern(len, seed), offset).unwrap();
    }
    drop(file);
    let expected = std::fs::read(&src).unwrap();
    assert!(
        allocated(&src) < 1 << 20,
        "the test file is not sparse here"
    );

    let (mut c_source, _, c_sock) = start_c(&env, &c, "serve", &src);
    let mut dest = Listener::start(&env, size, Style::Oldstyle);
    let dest_file = dest.file.clone();

    // Our CLI drives the C source: the control protocol is the same.
    let out = mirror_cli(&c_sock, dest.addr.port(), &[]);
    assert_cli(&out, 0, "Mirror started");
    let status = c_source.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", c_source.stderr());
    let status = dest.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", dest.daemon.stderr());
    crate::support::assert_same_bytes(
        "destination",
        &std::fs::read(&dest_file).unwrap(),
        &expected,
    );
    assert!(
        src.exists(),
        "the C source removed its file without --unlink"
    );
    assert!(
        allocated(&dest_file) <= allocated(&src) + (256 << 10),
        "the destination is not sparse: {} bytes allocated, the source {}",
        allocated(&dest_file),
        allocated(&src)
    );
}

/// A TCP relay that records both directions of one connection.
struct Spy {
    addr: SocketAddr,
    thread: Option<JoinHandle<(Vec<u8>, Vec<u8>)>>,
}

impl Spy {
    fn start(target: SocketAddr) -> Spy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let source = wire::accept_within(&listener, Duration::from_secs(60), "spy");
            let dest = TcpStream::connect_timeout(&target, IO_TIMEOUT).unwrap();
            let down = {
                let (from, to) = (dest.try_clone().unwrap(), source.try_clone().unwrap());
                std::thread::spawn(move || relay(from, to))
            };
            let up = relay(source, dest);
            (up, down.join().unwrap())
        });
        Spy {
            addr,
            thread: Some(thread),
        }
    }

    /// (source to destination, destination to source), once both closed.
    #[track_caller]
    fn streams(&mut self) -> (Vec<u8>, Vec<u8>) {
        let t = self.thread.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "spy: the connection never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        t.join().unwrap()
    }
}

/// Copies `from` to `to` until EOF, passing the EOF on; returns what went through.
fn relay(mut from: TcpStream, mut to: TcpStream) -> Vec<u8> {
    from.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    seen
}

/// Checks the recorded migration is what flexnbd-c sends: after the hello,
/// only WRITEs (type 1, flags 0, handle `.MIRROR.`, at most 8 MiB) carrying
/// the source's bytes and covering the export, each acknowledged, then one
/// DISCONNECT and nothing after it.
#[track_caller]
fn assert_flexnbd_c_wire(up: &[u8], down: &[u8], data: &[u8]) {
    let size = data.len() as u64;
    let hello: &[u8; OldstyleHello::SIZE] = down[..OldstyleHello::SIZE].try_into().unwrap();
    assert_eq!(OldstyleHello::decode(hello).unwrap().size, size);
    let mut at = 0usize;
    let mut writes = Vec::new();
    loop {
        let head: &[u8; Request::SIZE] = up
            .get(at..at + Request::SIZE)
            .unwrap_or_else(|| panic!("the stream ends at {at} without a DISCONNECT"))
            .try_into()
            .unwrap();
        let req = Request::decode(head).unwrap();
        at += Request::SIZE;
        assert_eq!(req.flags, CmdFlags(0), "request {req:?}");
        match req.cmd {
            Cmd::WRITE => {
                assert_eq!(req.handle, MIRROR_HANDLE, "request {req:?}");
                assert!(req.len <= MAX_MIRROR_WRITE, "request {req:?}");
                let end = req.offset + u64::from(req.len);
                assert!(end <= size, "request {req:?}");
                let payload = &up[at..at + req.len as usize];
                crate::support::assert_same_bytes(
                    &format!("payload of {req:?}"),
                    payload,
                    &data[req.offset as usize..end as usize],
                );
                at += req.len as usize;
                writes.push((req.offset, end));
            }
            Cmd::DISC => {
                assert_eq!((req.offset, req.len), (0, 0), "request {req:?}");
                break;
            }
            other => panic!("unexpected request {other:?}: {req:?}"),
        }
    }
    assert_eq!(at, up.len(), "bytes after the DISCONNECT");
    writes.sort_unstable();
    let mut covered = 0;
    for (start, end) in &writes {
        assert!(
            *start <= covered,
            "a gap at {covered} in the writes {writes:?}"
        );
        covered = covered.max(*end);
    }
    assert_eq!(covered, size, "the writes do not cover the export");
    let replies = &down[OldstyleHello::SIZE..];
    assert_eq!(
        replies.len(),
        writes.len() * SimpleReply::SIZE,
        "one reply per write"
    );
    for reply in replies.chunks(SimpleReply::SIZE) {
        let r = SimpleReply::decode(reply.try_into().unwrap()).unwrap();
        assert_eq!((r.error, r.handle), (Errno::OK, MIRROR_HANDLE));
    }
}

#[test]
fn our_serve_mirrors_into_c_listen_with_flexnbd_c_wire_protocol() {
    let Some(c) = c_flexnbd() else { return };
    let env = TestEnv::new();
    // 17 MiB and a bit: transfers of 8, 8 and 1 MiB + 4 KiB, with a hole inside.
    let size = (17 << 20) + 4096;
    let mut data = pattern(size, 8);
    data[(5 << 20)..(7 << 20)].fill(0);
    let src = env.child("source.img");
    {
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(size as u64).unwrap();
        f.write_all_at(&data[..5 << 20], 0).unwrap();
        f.write_all_at(&data[7 << 20..], 7 << 20).unwrap();
    }
    let mut source = Source::start_file(&env, src.clone(), LIMIT);
    let dest_file = env.image("c-dest.img", size as u64);
    let (mut c_dest, c_addr, _) = start_c(&env, &c, "listen", &dest_file);
    let mut spy = Spy::start(c_addr);

    let out = source.mirror(spy.addr.port(), &[]);
    assert_cli(&out, 0, "Mirror started");
    let status = source.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", source.daemon.stderr());
    let status = c_dest.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", c_dest.stderr());
    crate::support::assert_same_bytes("destination", &std::fs::read(&dest_file).unwrap(), &data);
    assert_eq!(
        std::fs::read(&src).unwrap(),
        data,
        "the source file changed"
    );
    let (up, down) = spy.streams();
    assert_flexnbd_c_wire(&up, &down, &data);
}

#[test]
fn our_mirror_unlink_into_c_listen_removes_the_source_file() {
    let Some(c) = c_flexnbd() else { return };
    let env = TestEnv::new();
    let data = pattern(1 << 20, 9);
    let mut source = Source::start(&env, &data, LIMIT);
    let dest_file = env.image("c-dest.img", data.len() as u64);
    let (mut c_dest, c_addr, _) = start_c(&env, &c, "listen", &dest_file);

    let out = source.mirror(c_addr.port(), &["--unlink"]);
    assert_cli(&out, 0, "Mirror started");
    let status = source.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", source.daemon.stderr());
    let status = c_dest.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", c_dest.stderr());
    assert!(!source.file.exists(), "--unlink left the source file");
    crate::support::assert_same_bytes("destination", &std::fs::read(&dest_file).unwrap(), &data);
}

/// A relay from a migration's source to its destination that passes
/// requests on one by one and holds the DISCONNECT back: `held` hears when
/// it arrived, and it goes on once `release` says so. Replies pass as they come.
fn disconnect_holding_relay(
    target: SocketAddr,
    held: mpsc::Sender<()>,
    release: mpsc::Receiver<()>,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut source = wire::accept_within(&listener, Duration::from_secs(60), "relay");
        source
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut dest = TcpStream::connect_timeout(&target, IO_TIMEOUT).unwrap();
        let down = {
            let (from, to) = (dest.try_clone().unwrap(), source.try_clone().unwrap());
            std::thread::spawn(move || relay(from, to))
        };
        // The hello goes the other way; from the source come only requests.
        let mut head = [0u8; Request::SIZE];
        while source.read_exact(&mut head).is_ok() {
            let req = Request::decode(&head).unwrap();
            if req.cmd == Cmd::DISC {
                held.send(()).unwrap();
                release.recv_timeout(Duration::from_secs(60)).unwrap();
            }
            let mut payload = vec![
                0u8;
                if req.cmd == Cmd::WRITE {
                    req.len as usize
                } else {
                    0
                }
            ];
            source.read_exact(&mut payload).unwrap();
            dest.write_all(&head).unwrap();
            dest.write_all(&payload).unwrap();
        }
        let _ = dest.shutdown(Shutdown::Write);
        down.join().unwrap();
    });
    (addr, thread)
}

/// The case `listen --oldstyle` syncs every write for: flexnbd-c's `mirror
/// --unlink` deletes the source file after the last reply and only then
/// sends the DISCONNECT, and never a FLUSH. While the DISCONNECT is held
/// back, the source file is gone and the destination's copy, the only one,
/// has no page left unsynced.
#[test]
fn c_mirror_unlink_into_our_oldstyle_listen_finds_every_write_synced() {
    let Some(c) = c_flexnbd() else { return };
    let env = TestEnv::new();
    let data = pattern(2 << 20, 11);
    let src = env.image_with("c-source.img", &data);
    let (mut c_source, _, c_sock) = start_c(&env, &c, "serve", &src);
    let mut dest = Listener::start(&env, data.len() as u64, Style::Oldstyle);
    let dest_file = dest.file.clone();
    let (held_tx, held) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let (relay_addr, relay) = disconnect_holding_relay(dest.addr, held_tx, release_rx);

    let out = mirror_cli(&c_sock, relay_addr.port(), &["--unlink"]);
    assert_cli(&out, 0, "Mirror started");
    held.recv_timeout(Duration::from_secs(60))
        .expect("the C source sent no DISCONNECT");
    assert!(!src.exists(), "the C source kept its file with --unlink");
    if let Some(pages) = unsynced_pages(&dest_file) {
        assert_eq!(
            pages, 0,
            "the destination acknowledged writes it had not synced"
        );
    }
    release.send(()).unwrap();
    let status = c_source.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", c_source.stderr());
    let status = dest.daemon.wait_exit(EXIT_WITHIN);
    assert_eq!(status.code(), Some(0), "{}", dest.daemon.stderr());
    relay.join().unwrap();
    crate::support::assert_same_bytes("destination", &std::fs::read(&dest_file).unwrap(), &data);
}
