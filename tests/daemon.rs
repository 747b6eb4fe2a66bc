//! The real `flexnbd serve` binary, as an operator or a script sees it: the
//! `status` and `acl` commands, the control socket's lifecycle, signals,
//! `read` and `write` against it (newstyle and `--oldstyle`), start-up
//! errors, interop tools against the process, and the README's quick start.
//!
//! Every server here is a separate process started through
//! [`support::Daemon`]; NBD traffic that must be exact goes through
//! [`support::wire::Client`], a small byte-level client built on
//! `flexnbd::proto`.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use flexnbd::proto::types::{Cmd, Errno};

use crate::support::daemon::{EXIT_TIMEOUT, logged_addr};
use crate::support::wire::{Client, Handshake};
use crate::support::{
    self, Daemon, Ready, Signal, TestEnv, assert_same_bytes, control, control_raw, flexnbd,
    flexnbd_path, flexnbd_std, flexnbd_std_default_signals, free_port, pattern, require_tool, text,
    tool,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// How long a socket read or write in these tests may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for the daemon to reach a state (clients gone, ...).
const WAIT: Duration = Duration::from_secs(10);
/// How often those waits poll.
const POLL: Duration = Duration::from_millis(5);

// ---------------------------------------------------------------------------
// Helpers

/// The handshake a daemon speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// The default: fixed newstyle.
    Newstyle,
    /// `serve --oldstyle`, as the C flexnbd.
    Oldstyle,
}

impl Style {
    const BOTH: [Style; 2] = [Style::Newstyle, Style::Oldstyle];

    /// The extra `serve` arguments for this style.
    fn args(self) -> &'static [&'static str] {
        match self {
            Style::Newstyle => &[],
            Style::Oldstyle => &["--oldstyle"],
        }
    }

    /// The handshake a client speaks to this style: `GO` or old-style.
    fn handshake(self) -> Handshake {
        match self {
            Style::Newstyle => Handshake::Go,
            Style::Oldstyle => Handshake::Oldstyle,
        }
    }
}

/// `flexnbd serve` on `disk` with a control socket, in `style`, plus `args`.
#[track_caller]
fn serve(env: &TestEnv, disk: &Path, style: Style, args: &[&str]) -> Daemon {
    Daemon::serve(disk)
        .sock(env.sock_path())
        .args(style.args())
        .args(args)
        .start()
}

/// Runs `flexnbd args...` to completion with `stdin`.
#[track_caller]
fn run(args: &[&str], stdin: &[u8]) -> Output {
    flexnbd()
        .args(args)
        .write_stdin(stdin.to_vec())
        .output()
        .unwrap_or_else(|e| panic!("cannot run flexnbd {args:?}: {e}"))
}

/// Asserts `out` is a success with `stdout` and nothing on stderr.
#[track_caller]
fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what}: {}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
}

/// Asserts `out` failed with exit 1, nothing on stdout and exactly one line
/// `flexnbd: ...` on stderr; returns that line.
#[track_caller]
fn one_error_line(what: &str, out: &Output) -> String {
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

/// `flexnbd read` of `size` bytes at `from` from the daemon.
#[track_caller]
fn nbd_read(d: &Daemon, from: u64, size: u64) -> Output {
    let [l, addr, p, port] = d.addr_args();
    run(
        &[
            "read",
            &l,
            &addr,
            &p,
            &port,
            "-F",
            &from.to_string(),
            "-S",
            &size.to_string(),
        ],
        &[],
    )
}

/// `flexnbd write` of `data` at `from` to the daemon.
#[track_caller]
fn nbd_write(d: &Daemon, from: u64, data: &[u8]) -> Output {
    nbd_write_sized(d, from, data.len() as u64, data)
}

/// `flexnbd write -S size` at `from`, with `stdin` (which may be shorter).
#[track_caller]
fn nbd_write_sized(d: &Daemon, from: u64, size: u64, stdin: &[u8]) -> Output {
    let [l, addr, p, port] = d.addr_args();
    run(
        &[
            "write",
            &l,
            &addr,
            &p,
            &port,
            "-F",
            &from.to_string(),
            "-S",
            &size.to_string(),
        ],
        stdin,
    )
}

/// Writes `data` at `from` with `flexnbd write`, asserting it succeeds.
#[track_caller]
fn write_ok(d: &Daemon, from: u64, data: &[u8]) {
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
fn read_ok(d: &Daemon, from: u64, size: u64) -> Vec<u8> {
    let out = nbd_read(d, from, size);
    assert_success(&format!("read of {size} bytes at {from}"), &out);
    assert_eq!(
        out.stdout.len() as u64,
        size,
        "read returned a short stdout"
    );
    out.stdout
}

/// `len` bytes of `path` at `offset`.
#[track_caller]
fn file_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let file = std::fs::File::open(path).expect("cannot open image");
    let mut buf = vec![0u8; usize::try_from(len).expect("range fits in memory")];
    file.read_exact_at(&mut buf, offset)
        .expect("cannot read image");
    buf
}

/// The status line's `key=value` pairs from the control socket, in order.
#[track_caller]
fn status_pairs(sock: &Path) -> Vec<(String, String)> {
    let reply = control(sock, "status", &[]);
    let line = reply
        .strip_prefix("0: ")
        .and_then(|r| r.strip_suffix(" \n"))
        .unwrap_or_else(|| panic!("not a status reply: {reply:?}"));
    line.split(' ')
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad pair {pair:?} in {reply:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// One value of the status line.
#[track_caller]
fn status_value(sock: &Path, key: &str) -> String {
    status_pairs(sock)
        .into_iter()
        .find_map(|(k, v)| (k == key).then_some(v))
        .unwrap_or_else(|| panic!("status has no {key}"))
}

/// Waits (bounded) until `status` reports `n` clients.
#[track_caller]
fn wait_num_clients(sock: &Path, n: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = status_value(sock, "num_clients");
        if now == n.to_string() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "num_clients stayed at {now}, expected {n}"
        );
        std::thread::sleep(POLL);
    }
}

/// Asserts a new connection to `addr` is closed by the server without a byte.
#[track_caller]
pub(crate) fn assert_refused(addr: SocketAddr) {
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("TCP connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset && got.is_empty() => {}
        Ok(n) => panic!(
            "a refused connection got {n} bytes: {:02x?}",
            &got[..n.min(16)]
        ),
        Err(e) => panic!("a refused connection was not closed within {IO_TIMEOUT:?}: {e}"),
    }
}

// ---------------------------------------------------------------------------
// 1. status

#[test]
fn status_prints_the_c_line_with_pid_and_size_rounded_down_to_512() {
    let env = TestEnv::new();
    // 1 MiB and 300 bytes: the export is 1 MiB.
    let disk = env.image("disk.img", MIB + 300);
    let d = serve(&env, &disk, Style::Newstyle, &[]);
    let sock = env.sock_path();
    let out = run(&["status", "-s", sock.to_str().unwrap()], &[]);
    assert_success("status", &out);
    assert_eq!(
        text(&out.stdout),
        format!(
            "pid={} size=1048576 is_mirroring=false clients_allowed=true num_clients=0 has_control=true \n",
            d.pid()
        )
    );

    let json = run(&["status", "-s", sock.to_str().unwrap(), "--json"], &[]);
    assert_success("status --json", &json);
    assert_eq!(
        text(&json.stdout),
        format!(
            r#"{{"pid":{},"size":1048576,"is_mirroring":false,"clients_allowed":true,"num_clients":0,"has_control":true}}"#,
            d.pid()
        ) + "\n"
    );
}

#[test]
fn status_json_carries_the_same_data_as_the_line() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", 3 * MIB);
    let d = serve(&env, &disk, Style::Oldstyle, &[]);
    let _client = Client::connect(d.addr(), Handshake::Oldstyle);
    let sock = env.sock_path();
    let line = run(&["status", "-s", sock.to_str().unwrap()], &[]);
    let json = run(&["status", "-s", sock.to_str().unwrap(), "--json"], &[]);
    assert_success("status", &line);
    assert_success("status --json", &json);
    // Numbers and booleans are bare JSON values; the keys keep their order.
    let from_line = text(&line.stdout)
        .trim_end()
        .split(' ')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            format!("\"{k}\":{v}")
        })
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(text(&json.stdout), format!("{{{from_line}}}\n"));
    assert!(from_line.contains("\"num_clients\":1"), "{from_line}");
}

#[test]
fn status_counts_clients_as_they_connect_and_leave() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let d = serve(&env, &disk, style, &[]);
        let sock = env.sock_path();
        assert_eq!(status_value(&sock, "num_clients"), "0", "{style:?}");
        let first = Client::connect(d.addr(), style.handshake());
        assert_eq!(first.size, MIB, "{style:?}");
        assert_eq!(status_value(&sock, "num_clients"), "1", "{style:?}");
        let second = Client::connect(d.addr(), style.handshake());
        assert_eq!(status_value(&sock, "num_clients"), "2", "{style:?}");
        drop(first);
        wait_num_clients(&sock, 1);
        drop(second);
        wait_num_clients(&sock, 0);
    }
}

#[test]
fn status_on_a_missing_socket_fails_with_one_line() {
    let env = TestEnv::new();
    let sock = env.sock_path();
    for extra in [&[][..], &["--json"], &["-q"]] {
        let mut args = vec!["status", "-s", sock.to_str().unwrap()];
        args.extend_from_slice(extra);
        let line = one_error_line("status on a missing socket", &run(&args, &[]));
        assert!(
            line.contains(sock.to_str().unwrap()),
            "the error should name the socket: {line}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. acl

#[test]
fn acl_cli_updates_or_rejects_a_bad_entry_keeping_the_old_list() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let d = serve(&env, &disk, Style::Newstyle, &[]);
    let sock = env.sock_path();
    let sock = sock.to_str().unwrap();

    let out = run(&["acl", "-s", sock, "127.0.0.1"], &[]);
    assert_success("acl 127.0.0.1", &out);
    assert_eq!(text(&out.stdout), "updated\n");
    Client::connect(d.addr(), Handshake::Go);

    // A list without us, then a bad update that would have let us in.
    let out = run(&["acl", "-s", sock, "10.0.0.0/8"], &[]);
    assert_eq!(text(&out.stdout), "updated\n");
    assert_refused(d.addr());
    for bad in ["10.0.0.0/0", "bogus", "127.0.0.1/33"] {
        let out = run(&["acl", "-s", sock, "127.0.0.1", bad], &[]);
        assert_eq!(out.status.code(), Some(1), "acl with {bad}");
        assert!(out.stdout.is_empty(), "acl with {bad}");
        assert_eq!(text(&out.stderr), format!("bad spec: {bad}\n"));
        assert_refused(d.addr());
    }

    // No entries: an empty list, which lets everyone in without --default-deny.
    let out = run(&["acl", "-s", sock], &[]);
    assert_success("acl with no entries", &out);
    assert_eq!(text(&out.stdout), "updated\n");
    Client::connect(d.addr(), Handshake::Go).read(7, 0, 512);
}

#[test]
fn acl_without_us_refuses_new_clients_and_drops_connected_ones() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let d = serve(&env, &disk, style, &["127.0.0.1"]);
        let sock = env.sock_path();
        let mut client = Client::connect(d.addr(), style.handshake());
        client.read(7, 0, 4096);
        assert_eq!(status_value(&sock, "num_clients"), "1");

        let out = run(
            &["acl", "-s", sock.to_str().unwrap(), "10.0.0.0/8", "::1"],
            &[],
        );
        assert_success("acl", &out);
        client.assert_closed();
        wait_num_clients(&sock, 0);
        assert_refused(d.addr());
        assert_eq!(status_value(&sock, "num_clients"), "0");
    }
}

#[test]
fn default_deny_with_no_entries_refuses_everyone_until_acl_allows() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let d = serve(&env, &disk, Style::Newstyle, &["-d"]);
    let sock = env.sock_path();
    let sock_arg = sock.to_str().unwrap();
    assert_refused(d.addr());
    assert_eq!(status_value(&sock, "clients_allowed"), "true");

    assert_success("acl", &run(&["acl", "-s", sock_arg, "127.0.0.0/8"], &[]));
    Client::connect(d.addr(), Handshake::Go).read(7, 0, 512);
    // An empty list under --default-deny refuses everyone again.
    assert_success("acl", &run(&["acl", "-s", sock_arg], &[]));
    assert_refused(d.addr());
}

#[test]
fn max_clients_closes_connections_beyond_the_limit() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let d = serve(&env, &disk, Style::Oldstyle, &["--max-clients", "1"]);
    let first = Client::connect(d.addr(), Handshake::Oldstyle);
    assert_refused(d.addr());
    drop(first);
    wait_num_clients(&env.sock_path(), 0);
    Client::connect(d.addr(), Handshake::Oldstyle).read(7, 0, 512);
}

// ---------------------------------------------------------------------------
// 3. The control socket's lifecycle

#[test]
fn control_socket_appears_only_once_the_nbd_port_accepts() {
    // Several starts, to give a wrong order a chance to show.
    for _ in 0..3 {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let sock = env.sock_path();
        let cmd = Daemon::serve(&disk).port(0).sock(&sock).command(0);
        let mut d = Daemon::spawn(cmd, Vec::new());
        let deadline = Instant::now() + WAIT;
        while !sock.exists() {
            assert!(d.is_running(), "serve exited:\n{}", d.stderr());
            assert!(
                Instant::now() < deadline,
                "no control socket:\n{}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // The port was logged before the socket was created, and accepts now.
        let addr = logged_addr(&d.stderr()).expect("no `Bound to` line before the socket");
        let addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        let mut client = Client::connect(addr, Handshake::Go);
        assert_eq!(client.read(7, 0, 512), vec![0u8; 512]);
    }
}

#[test]
fn malformed_control_requests_get_c_replies_and_serving_goes_on() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let mut d = serve(&env, &disk, Style::Newstyle, &[]);
    let sock = env.sock_path();
    let cases: [(&[u8], &str); 7] = [
        // A line cut off by EOF is discarded, as in flexnbd-c.
        (b"status", "9: missing command\n"),
        (b"", "9: missing command\n"),
        (b"\n", "9: missing command\n"),
        (b"bogus\n\n", "10: unknown command\n"),
        (b"STATUS\n\n", "10: unknown command\n"),
        // No CR stripping.
        (b"status\r\n\n", "10: unknown command\n"),
        (b"acl\n127.0.0.1\r\n\n", "1: bad spec: 127.0.0.1\r\n"),
    ];
    let too_long = format!("acl\n{}\n", "127.0.0.1\n".repeat(4096));
    assert_eq!(
        text(&control_raw(&sock, too_long.as_bytes())),
        "1: request too long\n"
    );
    for (request, reply) in cases {
        assert_eq!(
            text(&control_raw(&sock, request)),
            reply,
            "request {:?}",
            text(request)
        );
    }
    assert!(d.is_running());
    assert_eq!(status_value(&sock, "pid"), d.pid().to_string());
    write_ok(&d, 512, b"still serving");
    assert_eq!(read_ok(&d, 512, 13), b"still serving");
    assert_eq!(d.stop().code(), Some(0));
}

#[test]
fn stale_control_socket_is_replaced_at_start_up() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let sock = env.sock_path();
    // What a crashed server leaves: a socket file nobody listens on.
    drop(UnixListener::bind(&sock).expect("bind a UNIX socket"));
    assert!(sock.exists());
    let mut d = serve(&env, &disk, Style::Newstyle, &[]);
    assert_eq!(status_value(&sock, "pid"), d.pid().to_string());
    assert_eq!(d.stop().code(), Some(0));
    assert!(!sock.exists(), "control socket left behind");
}

#[test]
fn a_file_in_the_way_of_the_control_socket_is_left_alone() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let sock = env.sock_path();
    std::fs::write(&sock, b"not a socket").unwrap();
    let out = run(
        &[
            "serve",
            "-l",
            "127.0.0.1",
            "-p",
            "0",
            "-f",
            disk.to_str().unwrap(),
            "-s",
            sock.to_str().unwrap(),
        ],
        &[],
    );
    let line = one_error_line("serve over a regular file", &out);
    assert_eq!(line.matches(sock.to_str().unwrap()).count(), 1, "{line}");
    assert!(line.contains("not a socket"), "{line}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"not a socket");
}

#[test]
fn second_serve_on_the_same_socket_fails_and_leaves_the_first_alone() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let other = env.image("other.img", MIB);
    let sock = env.sock_path();
    let mut first = serve(&env, &disk, Style::Newstyle, &[]);
    let inode = std::fs::metadata(&sock).unwrap().ino();

    let out = run(
        &[
            "serve",
            "-l",
            "127.0.0.1",
            "-p",
            "0",
            "-f",
            other.to_str().unwrap(),
            "-s",
            sock.to_str().unwrap(),
        ],
        &[],
    );
    let line = one_error_line("second serve", &out);
    assert_eq!(
        line,
        format!(
            "flexnbd: control socket {} is in use by another process",
            sock.display()
        )
    );

    assert!(first.is_running());
    // The second server's check that the socket is live (a connection that
    // hangs up at once) is no cause for a warning.
    assert_eq!(first.stderr(), "", "the first server complained");
    assert_eq!(std::fs::metadata(&sock).unwrap().ino(), inode);
    assert_eq!(status_value(&sock, "pid"), first.pid().to_string());
    write_ok(&first, 0, b"first");
    assert_eq!(read_ok(&first, 0, 5), b"first");
    assert_eq!(first.stop().code(), Some(0));
    assert!(!sock.exists());
}

// ---------------------------------------------------------------------------
// 4. Signals

#[test]
fn sigterm_sigint_and_sigquit_stop_serve_cleanly() {
    for sig in [Signal::TERM, Signal::INT, Signal::QUIT] {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let sock = env.sock_path();
        let mut d = serve(&env, &disk, Style::Newstyle, &[]);
        let addr = d.addr();
        d.signal(sig);
        let status = d.wait_exit(EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{sig:?}: {status}");
        assert!(!sock.exists(), "{sig:?}: control socket left behind");
        assert!(
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err(),
            "{sig:?}: the port still accepts"
        );
        assert_eq!(d.stderr(), "", "{sig:?}: serve complained");
    }
}

/// Every request the server has read when a signal arrives is answered
/// before the connection closes.
///
/// The server stops reading at the end of what has reached its socket, so
/// requests still in transit when the signal lands may be cut off: the
/// second batch below checks that whatever was answered is a prefix of what
/// was sent (requests are read in order) and that nothing unanswered was
/// written. The first batch is known to have been read, because the reply
/// to the FLUSH sent after it has arrived.
#[test]
fn requests_in_flight_at_a_signal_get_their_replies() {
    const BLOCK: usize = 64 * KIB as usize;
    const FLUSH_HANDLE: u64 = 0xffff;
    let handle = |i: usize| 0x100 + i as u64;
    let offset = |i: usize| 4096 + (i * BLOCK) as u64;
    for (sig, style) in [
        (Signal::TERM, Style::Newstyle),
        (Signal::INT, Style::Oldstyle),
        (Signal::QUIT, Style::Newstyle),
    ] {
        let env = TestEnv::new();
        let disk = env.image("disk.img", 4 * MIB);
        let mut d = serve(&env, &disk, style, &[]);
        let mut client = Client::connect(d.addr(), style.handshake());
        let data = pattern(32 * BLOCK, 7);
        let blocks: Vec<&[u8]> = data.chunks(BLOCK).collect();

        let mut answered = BTreeSet::new();
        for (i, block) in blocks[..16].iter().enumerate() {
            client.write(handle(i), offset(i), block);
        }
        client.request(Cmd::FLUSH, FLUSH_HANDLE, 0, 0);
        loop {
            let reply = client.reply();
            assert_eq!(reply.error, Errno::OK, "{sig:?} {style:?}");
            if reply.handle == FLUSH_HANDLE {
                break;
            }
            answered.insert(reply.handle);
        }
        for (i, block) in blocks.iter().enumerate().skip(16) {
            client.write(handle(i), offset(i), block);
        }
        d.signal(sig);
        while let Some(reply) = client.try_reply() {
            assert_eq!(reply.error, Errno::OK, "{sig:?} {style:?}");
            assert!(answered.insert(reply.handle), "{sig:?}: two replies");
        }
        let n = answered.len();
        assert!(n >= 16, "{sig:?} {style:?}: only {n} replies");
        assert_eq!(
            answered,
            (0..n).map(handle).collect(),
            "{sig:?} {style:?}: the answered writes are not the first {n} sent"
        );
        assert_eq!(d.wait_exit(EXIT_TIMEOUT).code(), Some(0), "{sig:?}");
        let mut expected = vec![0u8; 32 * BLOCK];
        expected[..n * BLOCK].copy_from_slice(&data[..n * BLOCK]);
        assert_same_bytes(
            "the file after the signal",
            &file_range(&disk, offset(0), expected.len() as u64),
            &expected,
        );
    }
}

/// A client that stops reading its replies must not keep a stopped server
/// alive for ever: after SIGTERM, `serve` gives its clients
/// `SHUTDOWN_GRACE` (5 s) to finish, then closes their connections and
/// exits 0 as usual.
#[test]
fn sigterm_stops_serve_while_a_client_ignores_its_replies() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", 32 * MIB);
    let mut d = serve(&env, &disk, Style::Oldstyle, &[]);
    let mut client = Client::connect(d.addr(), Handshake::Oldstyle);
    // 256 MiB of replies: far more than the socket buffers hold.
    for handle in 0..8 {
        client.request(Cmd::READ, handle, 0, 32 << 20);
    }
    // A first reply has started (replies may come in any order): the server
    // has read requests whose 32 MiB replies cannot fit in the socket
    // buffers, so it will block.
    let first = client.reply();
    assert_eq!(first.error, Errno::OK);
    assert!(first.handle < 8, "reply to unknown handle {}", first.handle);
    d.signal(Signal::TERM);
    let exited = d.try_wait_exit(EXIT_TIMEOUT);
    drop(client);
    let status = exited.unwrap_or_else(|| {
        panic!("serve still running {EXIT_TIMEOUT:?} after SIGTERM, held by a client that does not read")
    });
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

// ---------------------------------------------------------------------------
// 5. read and write against our own serve

#[test]
fn three_mib_at_an_odd_offset_round_trips() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", 8 * MIB);
        let d = serve(&env, &disk, style, &[]);
        let data = pattern(3 * MIB as usize, 3);
        let from = MIB + 12_345;
        write_ok(&d, from, &data);
        assert_same_bytes("read back", &read_ok(&d, from, 3 * MIB), &data);
        let file = env.read(&disk);
        assert_same_bytes(
            "the file",
            &file[from as usize..from as usize + data.len()],
            &data,
        );
        assert!(file[..from as usize].iter().all(|&b| b == 0));
        assert!(file[from as usize + data.len()..].iter().all(|&b| b == 0));
    }
}

#[test]
fn a_write_larger_than_one_request_round_trips() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", 41 * MIB);
        let d = serve(&env, &disk, style, &[]);
        // More than the 32 MiB a single request may carry.
        let data = pattern(40 * MIB as usize, 40);
        write_ok(&d, 512, &data);
        assert_same_bytes("read back", &read_ok(&d, 512, 40 * MIB), &data);
        assert_same_bytes("the file", &file_range(&disk, 512, 40 * MIB), &data);
    }
}

#[test]
fn out_of_range_read_and_write_fail_with_one_line_naming_the_range() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let d = serve(&env, &disk, style, &[]);
        let line = one_error_line("read past the end", &nbd_read(&d, MIB - 100, 1000));
        assert!(
            line.contains("1000 bytes at offset 1048476") && line.contains("1048576"),
            "{style:?}: {line}"
        );
        let line = one_error_line("write past the end", &nbd_write(&d, MIB, b"x"));
        assert!(
            line.contains("1 bytes at offset 1048576") && line.contains("1048576"),
            "{style:?}: {line}"
        );
        assert!(env.read(&disk).iter().all(|&b| b == 0));
    }
}

#[test]
fn write_with_a_short_stdin_fails_and_writes_nothing() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let d = serve(&env, &disk, style, &[]);
        let line = one_error_line("short stdin", &nbd_write_sized(&d, 0, 10, b"abc"));
        assert!(line.contains("3 of 10 bytes"), "{style:?}: {line}");
        assert!(env.read(&disk).iter().all(|&b| b == 0));
    }
}

#[test]
fn read_of_size_zero_prints_nothing() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let d = serve(&env, &disk, style, &[]);
        for from in [0, MIB] {
            let out = nbd_read(&d, from, 0);
            assert_success("read -S 0", &out);
            assert!(out.stdout.is_empty(), "{style:?}");
        }
    }
}

#[test]
fn read_into_a_pipe_closed_early_exits_0() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", 16 * MIB);
    let d = serve(&env, &disk, Style::Newstyle, &[]);
    let [l, addr, p, port] = d.addr_args();
    let mut child = flexnbd_std()
        .args(["read", &l, &addr, &p, &port, "-F", "0", "-S"])
        .arg((16 * MIB).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn read");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).expect("the first bytes");
    drop(stdout); // as `| head -c 10` does
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("read did not exit after its stdout closed");
        }
        std::thread::sleep(POLL);
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(stderr, "");
}

/// A client command stopped by a signal dies of it (no handler, no exit
/// status), as the README's exit-status section says.
#[test]
fn write_waiting_for_stdin_dies_of_sigint() {
    use std::os::unix::process::ExitStatusExt;
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let d = serve(&env, &disk, Style::Newstyle, &[]);
    let [l, addr, p, port] = d.addr_args();
    // stdin stays open and empty: write waits for it. `env` execs flexnbd
    // in the same process, with SIGINT at its default action even when this
    // test run inherited it ignored.
    let mut child = flexnbd_std_default_signals()
        .args(["write", &l, &addr, &p, &port, "-F", "0", "-S", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn write");
    // A signal that comes while `env` still ignores it would be lost: wait for flexnbd.
    let exe = format!("/proc/{}/exe", child.id());
    let deadline = Instant::now() + WAIT;
    while std::fs::read_link(&exe).ok().as_deref() != Some(flexnbd_path()) {
        assert!(Instant::now() < deadline, "env did not exec flexnbd");
        std::thread::sleep(POLL);
    }
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, Signal::INT).expect("kill");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("write did not die of SIGINT");
        }
        std::thread::sleep(POLL);
    };
    assert_eq!(status.signal(), Some(2), "{status}");
    assert!(env.read(&disk).iter().all(|&b| b == 0));
}

/// flexnbd-c's 64-block `f` pattern: 1 KiB blocks of little-endian u32 file offsets.
fn offsets_pattern(blocks: usize) -> Vec<u8> {
    (0..blocks * 256)
        .flat_map(|i| (i as u32 * 4).to_le_bytes())
        .collect()
}

/// flexnbd-c's test_happy_path: test_read1 and test_writeread1.
#[test]
fn happy_path_reads_and_writes_blocks_0_12_and_63() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let original = offsets_pattern(64);
        let disk = env.image_with("disk.img", &original);
        let d = serve(&env, &disk, style, &[]);
        for block in [0u64, 12, 63] {
            let at = block * KIB;
            let got = read_ok(&d, at, KIB);
            assert_eq!(
                got,
                original[at as usize..][..KIB as usize],
                "block {block}"
            );
        }
        for at in [124u64, 1200, 10028, 25488] {
            assert_eq!(read_ok(&d, at, 4), original[at as usize..][..4], "at {at}");
        }
        let x = vec![b'X'; KIB as usize];
        for block in [0u64, 12, 63] {
            write_ok(&d, block * KIB, &x);
            assert_eq!(file_range(&disk, block * KIB, KIB), x, "block {block}");
            assert_eq!(read_ok(&d, block * KIB, KIB), x, "block {block}");
        }
        let mut expected = original.clone();
        for block in [0usize, 12, 63] {
            expected[block * 1024..][..1024].fill(b'X');
        }
        assert_same_bytes("the file", &env.read(&disk), &expected);
    }
}

/// flexnbd-c's test_writeread2: writes to even blocks leave the odd ones alone.
#[test]
fn happy_path_even_block_writes_do_not_touch_odd_blocks() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", 1024 * KIB);
    let d = serve(&env, &disk, Style::Oldstyle, &[]);
    let x = vec![b'X'; KIB as usize];
    for i in 0..64u64 {
        write_ok(&d, 2 * i * KIB, &x);
    }
    let all = read_ok(&d, 0, 1024 * KIB);
    assert_same_bytes("the file", &env.read(&disk), &all);
    for (block, bytes) in all.chunks(KIB as usize).enumerate() {
        let written = block % 2 == 0 && block < 128;
        let want = if written { b'X' } else { 0 };
        assert!(
            bytes.iter().all(|&b| b == want),
            "block {block} should be all {want:#x}"
        );
    }
}

/// flexnbd-c's test_write_to_high_block: past 2 GiB in a 4 GiB sparse file.
#[test]
fn happy_path_write_to_a_high_block() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image("disk.img", 4 << 30);
        let d = serve(&env, &disk, style, &[]);
        let at = (1u64 << 31) + (1 << 29);
        write_ok(&d, at, b"12345678");
        assert_eq!(read_ok(&d, at, 8), b"12345678", "{style:?}");
        assert_eq!(file_range(&disk, at, 8), b"12345678", "{style:?}");
    }
}

// ---------------------------------------------------------------------------
// 6. Start-up errors

/// `serve -l 127.0.0.1 -p PORT -f FILE -s SOCK`, run to completion.
fn serve_once(file: &Path, port: u16, sock: &Path, extra: &[&str]) -> Output {
    let port = port.to_string();
    let mut args = vec![
        "serve",
        "-l",
        "127.0.0.1",
        "-p",
        &port,
        "-f",
        file.to_str().unwrap(),
        "-s",
        sock.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run(&args, &[])
}

#[test]
fn serve_start_up_errors_are_one_line_and_leave_no_socket() {
    let env = TestEnv::new();
    let sock = env.sock_path();
    let disk = env.image("disk.img", MIB);

    let missing = env.child("missing.img");
    let line = one_error_line("missing file", &serve_once(&missing, 0, &sock, &[]));
    assert!(line.contains(missing.to_str().unwrap()), "{line}");
    assert!(!sock.exists());

    for extra in [&[][..], &["-r"]] {
        let dir = env.path();
        let line = one_error_line("directory", &serve_once(dir, 0, &sock, extra));
        assert!(line.contains(dir.to_str().unwrap()), "{line}");
        assert!(!sock.exists());
    }

    let nowhere = env.child("no-such-dir").join("ctl.sock");
    let line = one_error_line(
        "socket in a missing directory",
        &serve_once(&disk, 0, &nowhere, &[]),
    );
    assert_eq!(line.matches(nowhere.to_str().unwrap()).count(), 1, "{line}");

    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let line = one_error_line("address in use", &serve_once(&disk, port, &sock, &[]));
    assert!(
        line.contains(&format!("127.0.0.1:{port}")) && support::daemon::is_addr_in_use(&line),
        "{line}"
    );
    assert!(!sock.exists());
}

#[test]
fn read_only_serve_refuses_writes() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let disk = env.image_with("disk.img", &pattern(MIB as usize, 5));
        let d = serve(&env, &disk, style, &["-r"]);
        let line = one_error_line("write to a read-only export", &nbd_write(&d, 0, b"abc"));
        assert!(line.contains("read-only"), "{style:?}: {line}");
        // The server itself answers EPERM to a client that writes anyway.
        let mut client = Client::connect(d.addr(), style.handshake());
        client.write(9, 0, b"abc");
        let reply = client.reply();
        assert_eq!((reply.error, reply.handle), (Errno::EPERM, 9), "{style:?}");
        assert_eq!(read_ok(&d, 0, 3), pattern(3, 5));
        assert_same_bytes("the file", &env.read(&disk), &pattern(MIB as usize, 5));
    }
}

// ---------------------------------------------------------------------------
// 7. Interop tools against the process; logging

#[test]
fn nbdinfo_and_qemu_img_see_an_oldstyle_daemon() {
    if !require_tool("nbdinfo") || !require_tool("qemu-img") {
        return;
    }
    let env = TestEnv::new();
    let disk = env.image("disk.img", 3 * MIB + 512);
    let d = serve(&env, &disk, Style::Oldstyle, &[]);
    let info = tool("nbdinfo").arg(d.uri()).output().unwrap();
    assert!(info.status.success(), "{}", text(&info.stderr));
    let info = text(&info.stdout);
    assert!(info.contains("protocol: oldstyle"), "{info}");
    assert!(info.contains("export-size: 3146240"), "{info}");

    let qemu = tool("qemu-img")
        .args(["info", "--output=json", "-f", "raw"])
        .arg(d.uri())
        .output()
        .unwrap();
    assert!(qemu.status.success(), "{}", text(&qemu.stderr));
    let qemu = text(&qemu.stdout);
    assert!(qemu.contains("\"virtual-size\": 3146240"), "{qemu}");
}

/// The README's compatibility promises, seen through the binary: the C
/// flexnbd's 152-byte hello with `--oldstyle`, and EINVAL for a request over
/// 32 MiB (after which the connection still works).
#[test]
fn oldstyle_hello_is_the_c_bytes_and_big_requests_get_einval() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", 40 * MIB + 100);
    let d = serve(&env, &disk, Style::Oldstyle, &[]);
    let mut s = TcpStream::connect_timeout(&d.addr(), IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut hello = [0u8; 152];
    s.read_exact(&mut hello).unwrap();
    let mut expected = b"NBDMAGIC".to_vec();
    expected.extend_from_slice(&0x00420281861253_u64.to_be_bytes());
    expected.extend_from_slice(&(40 * MIB).to_be_bytes());
    expected.extend_from_slice(&13u32.to_be_bytes());
    expected.extend_from_slice(&[0u8; 124]);
    assert_eq!(hello[..], expected[..]);

    let mut client = Client::new(s);
    client.request(Cmd::READ, 5, 0, (32 << 20) + 1);
    let reply = client.reply();
    assert_eq!((reply.error, reply.handle), (Errno::EINVAL, 5));
    assert_eq!(client.read(7, 40 * MIB - 512, 512), vec![0u8; 512]);
}

#[test]
fn serve_log_lines_have_the_c_layout() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    // Port 0 adds -v, and the port comes from the `Bound to` line.
    let mut d = Daemon::serve(&disk).port(0).sock(env.sock_path()).start();
    Client::connect(d.addr(), Handshake::Go).read(7, 0, 512);
    assert_eq!(d.stop().code(), Some(0));
    let log = d.stderr();
    let context = format!(" {} ", disk.display());
    for line in log.lines() {
        // <ms>:<L>:<pid> <thread> <context> <file>:<line>: <message>
        let mut fields = line.splitn(3, ':');
        let ms = fields.next().unwrap();
        let level = fields.next().unwrap_or("");
        let rest = fields.next().unwrap_or("");
        let pid = rest.split(' ').next().unwrap();
        assert!(
            ms.parse::<u64>().is_ok()
                && ["T", "D", "I", "W", "E"].contains(&level)
                && pid == d.pid().to_string()
                && rest.contains(&context)
                && rest.contains(" src/"),
            "not in the C layout: {line:?}"
        );
    }
    assert!(
        log.contains(&format!("Bound to 127.0.0.1 port {}", d.port())),
        "{log}"
    );
    assert!(
        log.contains(&format!("Serving file {}", disk.display())),
        "{log}"
    );
    assert_eq!(d.stdout(), "", "serve wrote to stdout");
}

/// The fenced `sh` blocks of a Markdown text.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Runs `script` with `sh -c` in a process group of its own, waits up to
/// `timeout`, and kills the whole group (the servers it started in the
/// background included) if it is still running then.
fn run_sh_group(script: &str, timeout: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = rustix::process::Pid::from_child(&child);
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {timeout:?}:\n{script}\nstdout:\n{}\nstderr:\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(POLL);
    }
    let out = child.wait_with_output().unwrap();
    // The servers have exited by now if it worked; make sure nothing is left either way.
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    out
}

/// The README's command blocks run as written, except that the build is
/// skipped, the binary is the one under test, the ports are free ones
/// instead of 10809 and 10810, and `/tmp/` is this test's directory:
/// 1. the quick start: a migration under a writer, checked with `cmp`;
/// 2. serve a scratch image; 3. look at it from another terminal.
#[test]
fn readme_quick_start_works_as_written() {
    if !require_tool("nbdinfo") || !require_tool("qemu-img") {
        return;
    }
    let readme = include_str!("../README.md");
    let blocks = sh_blocks(readme);
    assert!(blocks.len() >= 3, "README has fewer than three sh blocks");
    let env = TestEnv::new();
    let port = free_port().to_string();
    let port2 = free_port().to_string();
    let dir = format!("{}/", env.path().display());
    let binary = flexnbd_path().to_str().unwrap().to_owned();
    let edit = |command: &str| -> String {
        // The binary goes in last: its own path may contain `/tmp/`.
        command
            .replace("./target/release/flexnbd", "\u{0}FLEXNBD\u{0}")
            .replace("/tmp/", &dir)
            .replace("10809", &port)
            .replace("10810", &port2)
            .replace("\u{0}FLEXNBD\u{0}", &binary)
    };
    let words = |command: &str| -> Vec<String> {
        edit(command)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };

    // 1. The quick start, one command: build, then the migration.
    let quick = blocks[0]
        .trim()
        .strip_prefix("cargo build --release && ")
        .unwrap_or_else(|| panic!("README block 1 does not build first: {}", blocks[0]));
    let out = run_sh_group(&edit(quick), Duration::from_secs(120));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("Mirror started")
            && stdout.contains("Migration complete in ")
            && stdout.contains("identical: the destination has every byte"),
        "README quick start: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("mirror: "),
        "no progress line: {}",
        text(&out.stderr)
    );

    // 2. Serve a scratch image.
    let mut daemon = None;
    for command in blocks[1].trim().split(" && ") {
        let words = words(command);
        if words[0] == binary && words[1] == "serve" {
            let mut cmd = flexnbd_std();
            cmd.args(&words[1..]);
            let addr = SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().unwrap()));
            let mut d = Daemon::spawn(
                cmd,
                vec![Ready::Tcp(addr), Ready::Sock(env.child("flexnbd.sock"))],
            );
            d.wait_ready();
            daemon = Some(d);
        } else {
            let out = tool(&words[0]).args(&words[1..]).output().unwrap();
            assert!(out.status.success(), "{command}: {}", text(&out.stderr));
        }
    }
    assert!(
        daemon.is_some(),
        "README block 2 starts no server: {}",
        blocks[1]
    );

    // 3. From another terminal.
    for command in blocks[2].lines().filter(|l| !l.trim().is_empty()) {
        let words = words(command);
        let out = if words[0] == binary {
            flexnbd().args(&words[1..]).output().unwrap()
        } else {
            tool(&words[0]).args(&words[1..]).output().unwrap()
        };
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "README: {command}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
