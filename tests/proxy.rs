//! The proxy: `flexnbd proxy`, and the same program run as `flexnbd-proxy`.
//!
//! The proxy tests of flexnbd-c (behaviour doc 15.6) as behaviours, each
//! with an old-style client (`--oldstyle`, what the C flexnbd-proxy speaks)
//! and a fixed newstyle client (our default):
//!
//! - reads and writes reach the upstream `flexnbd serve` (old-style upstream
//!   for the old-style client, newstyle for the newstyle one);
//! - a read and a write are resent, byte for byte, on a new connection when a
//!   fake upstream closes part-way, and a write is resent when the upstream
//!   stops reading for longer than `FLEXNBD_UPSTREAM_TIMEOUT`;
//! - a 32 MiB write goes through, a longer one gets an error; a write past
//!   the end gets the upstream's error;
//! - a second client gets no hello until the first has gone;
//! - an unreachable upstream at start is an error exit.
//!
//! Beyond flexnbd-proxy: several requests in flight (and all resent), FLUSH,
//! FUA, TRIM and WRITE_ZEROES passed through or refused honestly, the
//! read-ahead cache, a UNIX socket and the `flexnbd-proxy` name (a symlink),
//! and a live migration behind the proxy with fio verifying every block.
//!
//! And what that migration relies on: a source never has two overlapping
//! WRITEs in flight to its destination.
//!
//! Fakes are threads on 127.0.0.1 ports of their own; the proxy is a real
//! process on a port it picks (`-p 0`, read from its log).

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flexnbd::proto::types::{ClientFlags, Cmd, CmdFlags, Errno, Opt};
use flexnbd::proto::wire::{NewstyleHello, OldstyleHello, Request, SimpleReply};

use crate::support::wire::{
    self, Client, Seen, closed_within, read_request, reply_bytes, send_hello,
};
use crate::support::{
    Daemon, DaemonBuilder, FakePeer, Ready, Signal, Style, TestEnv, flexnbd_std, pattern,
    require_tool, unix_uri, wait_until,
};

/// The read timeout on every socket a test or fake uses.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// The upstream size the fakes announce (16 blocks of 1 KiB, as flexnbd-c's tests).
const FAKE_SIZE: u64 = 16 * 1024;
/// flexnbd-c's transmission flags: HAS_FLAGS | SEND_FLUSH | SEND_FUA.
const FLEXNBD_C_FLAGS: u32 = 13;
/// The largest request the proxy relays (flexnbd-c's NBD_MAX_SIZE).
const MAX_REQUEST: u32 = 32 << 20;

/// Two tests from one function: `<name>::oldstyle` and `<name>::newstyle`.
macro_rules! both_styles {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn oldstyle() {
                super::$name(super::Style::Oldstyle);
            }
            #[test]
            fn newstyle() {
                super::$name(super::Style::Newstyle);
            }
        }
    )*};
}

both_styles!(
    reads_and_writes_are_proxied,
    read_is_resent_when_the_upstream_dies_part_way,
    write_is_resent_when_the_upstream_dies_part_way,
    write_is_resent_when_the_upstream_times_out,
    maximum_write_request_size,
    write_past_the_end_returns_an_error_to_the_client,
    only_one_client_at_a_time,
    unreachable_upstream_at_start_is_an_error_exit,
    several_requests_in_flight_are_all_resent,
    read_ahead_cache_answers_the_second_half_locally,
    sigterm_mid_session_exits_0,
    bad_input_from_a_client_does_not_stop_the_proxy,
);

// ---------------------------------------------------------------------------
// Processes.

/// `flexnbd proxy -l 127.0.0.1 -p 0 -C <upstream> -v [--oldstyle] EXTRA...`.
fn proxy_command(upstream: SocketAddr, style: Style, extra: &[&str]) -> Command {
    let mut cmd = flexnbd_std();
    cmd.args(["proxy", "-l", "127.0.0.1", "-p", "0", "-v"])
        .arg("-C")
        .arg(upstream.ip().to_string())
        .arg("-P")
        .arg(upstream.port().to_string());
    cmd.args(style.args()).args(extra);
    cmd
}

/// A proxy to `upstream`, ready for a client.
#[track_caller]
fn start_proxy(upstream: SocketAddr, style: Style, extra: &[&str]) -> Daemon {
    Daemon::start_logged_port(proxy_command(upstream, style, extra))
}

/// Our `flexnbd serve` of `file`, old-style for an old-style client (so that
/// both kinds of upstream are covered), newstyle otherwise.
#[track_caller]
fn start_upstream(file: &Path, style: Style) -> Daemon {
    DaemonBuilder::new("serve", file).args(style.args()).start()
}

/// Our `serve` of `file` as the upstream ([`start_upstream`]) and a proxy
/// to it in `style`: the upstream (keep it) and the proxy.
#[track_caller]
fn proxy_to_serve(file: &Path, style: Style) -> (Daemon, Daemon) {
    let upstream = start_upstream(file, style);
    let proxy = start_proxy(upstream.addr(), style, &[]);
    (upstream, proxy)
}

/// [`proxy_to_serve`] of a blank 16 KiB `disc.img` in `env`, the disc of
/// flexnbd-c's proxy tests.
#[track_caller]
fn proxy_to_blank_disc(env: &TestEnv, style: Style) -> (Daemon, Daemon) {
    proxy_to_serve(&env.image("disc.img", 16 * 1024), style)
}

/// The client disconnects, then the proxy stops cleanly ([`stop_proxy`]).
#[track_caller]
fn disconnect_and_stop(c: Client, proxy: &mut Daemon) {
    c.disconnect();
    stop_proxy(proxy);
}

/// SIGTERM: the proxy exits 0 (flexnbd-c's signal handler does too).
#[track_caller]
fn stop_proxy(proxy: &mut Daemon) {
    let status = proxy.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "the proxy did not exit 0 on SIGTERM ({status}); stderr:\n{}",
        proxy.stderr()
    );
}

// ---------------------------------------------------------------------------
// A client speaking to the proxy byte by byte.

/// A request for [`expect_replies`]: its command, flags, offset, length,
/// payload, and the error its reply must carry.
type Expected<'a> = (Cmd, CmdFlags, u64, u32, &'a [u8], Errno);

/// Sends each request in turn, with handles from `first` on, and asserts
/// its reply before the next.
#[track_caller]
fn expect_replies(c: &mut Client, first: u64, requests: &[Expected<'_>]) {
    for (handle, &(cmd, flags, offset, len, payload, error)) in (first..).zip(requests) {
        c.send(cmd, flags, handle, offset, len, payload);
        assert_eq!(c.reply_to(handle), error, "{cmd:?} (handle {handle})");
    }
}

/// A [`Client`] of the proxy, through the handshake of `style` (newstyle:
/// NO_ZEROES, EXPORT_NAME ""), reads and writes bounded by [`IO_TIMEOUT`].
#[track_caller]
fn connect(addr: SocketAddr, style: Style) -> Client {
    Client::connect_within(addr, style.export_name_handshake(), IO_TIMEOUT)
}

// ---------------------------------------------------------------------------
// What the fake upstreams ([`FakePeer`]) serve.

/// Answers `req`: error 0, with `len` bytes of `data_at(offset)` for a READ.
fn answer(s: &mut TcpStream, req: &Request) {
    s.write_all(&reply_bytes(Errno::OK, req.handle)).unwrap();
    if req.cmd == Cmd::READ {
        s.write_all(&fake_data(req.offset, req.len)).unwrap();
    }
}

/// What the fakes' disc holds: flexnbd-c's `f` pattern (each u32 is its own offset, LE).
fn fake_data(offset: u64, len: u32) -> Vec<u8> {
    (offset / 4..(offset + u64::from(len)) / 4)
        .flat_map(|i| ((i * 4) as u32).to_le_bytes())
        .collect()
}

// ---------------------------------------------------------------------------
// flexnbd-c's proxy tests (15.6).

fn reads_and_writes_are_proxied(style: Style) {
    let env = TestEnv::new();
    let data = pattern(16 * 1024, 6);
    let file = env.image_with("disc.img", &data);
    let (_upstream, mut proxy) = proxy_to_serve(&file, style);
    let mut c = connect(proxy.addr(), style);
    assert_eq!(c.size, data.len() as u64);
    for i in 0..4u64 {
        let got = c.read(0x1000 + i, i * 4096, 4096);
        crate::support::assert_same_bytes(
            "read through the proxy",
            &got,
            &data[(i * 4096) as usize..][..4096],
        );
    }
    for i in 0..4u64 {
        assert_eq!(
            c.write_reply(0x2000 + i, i * 4096, &[0xff; 4096]),
            Errno::OK
        );
        let on_disc = env.read(&file);
        assert!(
            on_disc[(i * 4096) as usize..][..4096]
                .iter()
                .all(|&b| b == 0xff),
            "write {i} did not reach the file"
        );
    }
    disconnect_and_stop(c, &mut proxy);
}

/// A fake that closes after receiving the first request, then answers it on
/// the second connection; returns both copies of the request as received.
fn resend_after_close(
    style: Style,
    send: impl FnOnce(&mut Client) -> Vec<u8>,
) -> (Seen, Seen, Vec<u8>) {
    let fake = FakePeer::start(|n, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        let seen = read_request(&mut s);
        if n > 0 {
            answer(&mut s, &seen.req);
            closed_within(&mut s, IO_TIMEOUT);
        }
        seen
    });
    let mut proxy = start_proxy(fake.addr(), style, &[]);
    let mut c = connect(proxy.addr(), style);
    let got = send(&mut c);
    let first = fake.result(0, Duration::from_secs(15));
    disconnect_and_stop(c, &mut proxy);
    let second = fake.result(1, Duration::from_secs(15));
    (first, second, got)
}

fn read_is_resent_when_the_upstream_dies_part_way(style: Style) {
    let (first, second, got) = resend_after_close(style, |c| c.read(0xabcd, 4096, 4096));
    assert_eq!(first.req.cmd, Cmd::READ);
    assert_ne!(first.req.len, 0);
    assert_eq!(first.head, second.head, "the resent request differs");
    assert_eq!(got, fake_data(4096, 4096), "the client got other data");
}

fn write_is_resent_when_the_upstream_dies_part_way(style: Style) {
    let data = pattern(4096, 7);
    let sent = data.clone();
    let (first, second, _) = resend_after_close(style, move |c| {
        assert_eq!(c.write_reply(0xbeef, 8192, &sent), Errno::OK);
        Vec::new()
    });
    assert_eq!((first.req.cmd, first.req.offset), (Cmd::WRITE, 8192));
    assert_eq!(first, second, "the resent request or its data differs");
    assert_eq!(second.payload, data);
}

fn write_is_resent_when_the_upstream_times_out(style: Style) {
    // The fake reads the header of a write much larger than the socket
    // buffers, then stops reading: the proxy is stuck writing the rest until
    // FLEXNBD_UPSTREAM_TIMEOUT, then must give up, reconnect and resend all of it.
    const TIMEOUT_SECS: u64 = 2;
    let len = 8 << 20;
    let connection_1 = Arc::new(AtomicBool::new(false));
    let seen_1 = connection_1.clone();
    let fake = FakePeer::start(move |n, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        if n == 0 {
            let mut head = [0u8; Request::SIZE];
            s.read_exact(&mut head).unwrap();
            let at = Instant::now();
            // Hold the connection open, unread, until the proxy has given up on it.
            let deadline = at + Duration::from_secs(20);
            while !seen_1.load(Ordering::SeqCst) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            return Some((head, at));
        }
        let seen = read_request(&mut s);
        answer(&mut s, &seen.req);
        closed_within(&mut s, IO_TIMEOUT);
        assert_eq!(seen.payload.len(), len);
        Some((seen.head, Instant::now()))
    });
    let mut cmd = proxy_command(fake.addr(), style, &[]);
    cmd.env("FLEXNBD_UPSTREAM_TIMEOUT", TIMEOUT_SECS.to_string());
    let mut proxy = Daemon::start_logged_port(cmd);
    let mut c = connect(proxy.addr(), style);
    let data = pattern(len, 8);
    let writer = std::thread::spawn(move || {
        let e = c.write_reply(0x77, 0, &data);
        (c, e)
    });
    let reconnected = fake.accepted(1, Duration::from_secs(30));
    connection_1.store(true, Ordering::SeqCst);
    let (first, stuck_at) = fake.result(0, Duration::from_secs(10)).unwrap();
    let waited = reconnected.duration_since(stuck_at);
    assert!(
        waited >= Duration::from_secs(TIMEOUT_SECS) - Duration::from_millis(500),
        "the proxy gave up after {waited:?}, before FLEXNBD_UPSTREAM_TIMEOUT={TIMEOUT_SECS}"
    );
    let (c, error) = writer.join().unwrap();
    assert_eq!(error, Errno::OK);
    disconnect_and_stop(c, &mut proxy);
    let (second, _) = fake.result(1, Duration::from_secs(15)).unwrap();
    assert_eq!(first, second, "the resent header differs");
    assert!(
        proxy.stderr().contains("Timed out"),
        "no timeout logged:\n{}",
        proxy.stderr()
    );
}

#[test]
fn upstream_timeout_counts_from_the_request_not_from_the_last_reply() {
    // FLEXNBD_UPSTREAM_TIMEOUT=3. The first request is answered at once; the
    // second is sent 2 s later and answered 1.5 s after that, within the
    // timeout. The proxy must not give up on it 3 s after the first reply.
    let fake = FakePeer::start(|_, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        let mut answered = 0;
        while let Ok(head) = {
            let mut head = [0u8; Request::SIZE];
            s.read_exact(&mut head).map(|()| head)
        } {
            let req = Request::decode(&head).unwrap();
            if answered == 1 {
                std::thread::sleep(Duration::from_millis(1500)); // a slow server
            }
            answer(&mut s, &req);
            answered += 1;
        }
        answered
    });
    let mut cmd = proxy_command(fake.addr(), Style::Newstyle, &[]);
    cmd.env("FLEXNBD_UPSTREAM_TIMEOUT", "3");
    let mut proxy = Daemon::start_logged_port(cmd);
    let mut c = connect(proxy.addr(), Style::Newstyle);
    assert_eq!(c.read(1, 0, 512), fake_data(0, 512));
    std::thread::sleep(Duration::from_secs(2)); // the client is idle for a while
    assert_eq!(c.read(2, 512, 512), fake_data(512, 512));
    disconnect_and_stop(c, &mut proxy);
    assert_eq!(
        fake.result(0, Duration::from_secs(15)),
        2,
        "a request was resent"
    );
    assert!(
        !proxy.stderr().contains("Timed out"),
        "the proxy timed out a request answered within the timeout:\n{}",
        proxy.stderr()
    );
}

fn maximum_write_request_size(style: Style) {
    let env = TestEnv::new();
    let file = env.image("disc.img", 40 << 20);
    let (_upstream, mut proxy) = proxy_to_serve(&file, style);
    let mut c = connect(proxy.addr(), style);
    let data = pattern(MAX_REQUEST as usize, 9);
    assert_eq!(c.write_reply(1, 4096, &data), Errno::OK);
    let on_disc = env.read(&file);
    crate::support::assert_same_bytes("the 32 MiB write", &on_disc[4096..][..data.len()], &data);
    // Longer than any request the proxy relays: flexnbd-c drops the client
    // without a reply; ours answers EINVAL and goes on (the client can recover).
    let too_long = vec![1u8; MAX_REQUEST as usize + 4096];
    assert_eq!(c.write_reply(2, 0, &too_long), Errno::EINVAL);
    assert_eq!(c.read(3, 4096, 512), data[..512]);
    disconnect_and_stop(c, &mut proxy);
}

fn write_past_the_end_returns_an_error_to_the_client(style: Style) {
    let env = TestEnv::new();
    let (_upstream, mut proxy) = proxy_to_blank_disc(&env, style);
    let mut c = connect(proxy.addr(), style);
    // flexnbd-c's test: block 1000 of a 16-block disc; its server says ENOSPC (28).
    assert_eq!(c.write_reply(1, 1000 * 1024, &[0xff; 1024]), Errno::ENOSPC);
    assert_eq!(
        c.write_reply(2, 0, &[0xff; 1024]),
        Errno::OK,
        "the session did not go on"
    );
    disconnect_and_stop(c, &mut proxy);
}

fn only_one_client_at_a_time(style: Style) {
    let env = TestEnv::new();
    let (_upstream, mut proxy) = proxy_to_blank_disc(&env, style);
    let mut first = connect(proxy.addr(), style);
    let mut second = TcpStream::connect_timeout(&proxy.addr(), IO_TIMEOUT).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut byte = [0u8; 1];
    match second.read(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("a second client got {other:?} while the first was connected"),
    }
    assert_eq!(first.write_reply(1, 0, &[7; 512]), Errno::OK);
    first.disconnect();
    // Once the first has gone, the waiting one is served.
    second.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut c = Client::new(second);
    c.handshake(style.export_name_handshake());
    assert_eq!(c.read(2, 0, 512), vec![7; 512]);
    disconnect_and_stop(c, &mut proxy);
}

fn unreachable_upstream_at_start_is_an_error_exit(style: Style) {
    // A port nobody listens on: bound and closed again.
    let port = crate::support::free_port();
    let env = TestEnv::new();
    let path = env.sock_path_named("proxy.sock");
    let mut cmd = flexnbd_std();
    cmd.args(["proxy", "-l"])
        .arg(&path)
        .args(["-C", "127.0.0.1", "-P", &port.to_string()])
        .args(style.args());
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // flexnbd-c exits 0 here (a bug, behaviour doc 1.5); its README and ours say error.
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("couldn't connect to upstream server") && stderr.contains("refused"),
        "{stderr}"
    );
    assert!(!path.exists(), "it listened anyway");
}

// ---------------------------------------------------------------------------
// Beyond flexnbd-proxy.

fn several_requests_in_flight_are_all_resent(style: Style) {
    // The fake takes four requests, closes without answering, then answers
    // all four on the next connection (in reverse order).
    let fake = FakePeer::start(|n, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        let seen: Vec<Seen> = (0..4).map(|_| read_request(&mut s)).collect();
        if n > 0 {
            for r in seen.iter().rev() {
                answer(&mut s, &r.req);
            }
            closed_within(&mut s, IO_TIMEOUT);
        }
        seen
    });
    let mut proxy = start_proxy(fake.addr(), style, &[]);
    let mut c = connect(proxy.addr(), style);
    let write = pattern(1024, 10);
    c.send(Cmd::READ, CmdFlags(0), 10, 0, 1024, &[]);
    c.send(Cmd::WRITE, CmdFlags(0), 11, 1024, 1024, &write);
    c.send(Cmd::READ, CmdFlags(0), 12, 2048, 512, &[]);
    c.send(Cmd::READ, CmdFlags(0), 13, 4096, 4096, &[]);
    let mut got = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let r = c.reply();
        assert_eq!(r.error, Errno::OK);
        let len = match r.handle {
            10 => 1024,
            12 => 512,
            13 => 4096,
            _ => 0,
        };
        let mut data = vec![0u8; len];
        c.s.read_exact(&mut data).unwrap();
        got.insert(r.handle, data);
    }
    assert_eq!(
        got.keys().copied().collect::<Vec<_>>(),
        vec![10, 11, 12, 13]
    );
    assert_eq!(got[&10], fake_data(0, 1024));
    assert_eq!(got[&12], fake_data(2048, 512));
    assert_eq!(got[&13], fake_data(4096, 4096));
    disconnect_and_stop(c, &mut proxy);
    let first = fake.result(0, Duration::from_secs(15));
    let second = fake.result(1, Duration::from_secs(15));
    assert_eq!(
        first, second,
        "the requests were not all resent as they were"
    );
    assert_eq!(second[1].payload, write);
}

#[test]
fn requests_in_flight_are_bounded() {
    // The fake takes 64 requests and answers none: no 65th may come within
    // a second. Then it answers everything.
    const SENT: u64 = 100;
    let fake = FakePeer::start(|_, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        let mut held: Vec<Request> = (0..64).map(|_| read_request(&mut s).req).collect();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut head = [0u8; Request::SIZE];
        match s.read_exact(&mut head) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("fake upstream: {e}"),
            Ok(()) => {
                let req = Request::decode(&head).unwrap();
                let mut payload = vec![0u8; req.len as usize];
                s.read_exact(&mut payload).unwrap();
                held.push(req);
            }
        }
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let first_batch = held.len();
        for req in &held {
            answer(&mut s, req);
        }
        for _ in first_batch..SENT as usize {
            let seen = read_request(&mut s);
            answer(&mut s, &seen.req);
        }
        closed_within(&mut s, IO_TIMEOUT);
        first_batch
    });
    let mut proxy = start_proxy(fake.addr(), Style::Newstyle, &[]);
    let mut c = connect(proxy.addr(), Style::Newstyle);
    for i in 0..SENT {
        c.send(
            Cmd::WRITE,
            CmdFlags(0),
            i,
            i * 512 % FAKE_SIZE,
            512,
            &[i as u8; 512],
        );
    }
    let mut handles: Vec<u64> = (0..SENT)
        .map(|_| {
            let r = c.reply();
            assert_eq!(r.error, Errno::OK);
            r.handle
        })
        .collect();
    handles.sort_unstable();
    assert_eq!(handles, (0..SENT).collect::<Vec<_>>());
    disconnect_and_stop(c, &mut proxy);
    assert_eq!(fake.result(0, Duration::from_secs(15)), 64);
}

fn read_ahead_cache_answers_the_second_half_locally(style: Style) {
    // One connection that records every request it answers.
    let fake = FakePeer::start(|_, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        let mut seen = Vec::new();
        loop {
            let mut head = [0u8; Request::SIZE];
            if s.read_exact(&mut head).is_err() {
                return seen;
            }
            let req = Request::decode(&head).unwrap();
            if req.cmd == Cmd::WRITE {
                let mut payload = vec![0u8; req.len as usize];
                s.read_exact(&mut payload).unwrap();
            }
            answer(&mut s, &req);
            seen.push((req.cmd, req.offset, req.len));
        }
    });
    let mut proxy = start_proxy(fake.addr(), style, &["--cache=8192"]);
    let mut c = connect(proxy.addr(), style);
    assert_eq!(c.read(1, 0, 4096), fake_data(0, 4096));
    assert_eq!(c.read(2, 4096, 4096), fake_data(4096, 4096)); // from the cache
    assert_eq!(c.read(3, 4096, 1024), fake_data(4096, 1024)); // a subrange: still cached
    assert_eq!(c.write_reply(4, 0, &[0; 512]), Errno::OK); // empties it
    assert_eq!(c.read(5, 4096, 1024), fake_data(4096, 1024));
    assert_eq!(c.read(6, 12 * 1024, 4096), fake_data(12 * 1024, 4096)); // 2x would pass the end
    disconnect_and_stop(c, &mut proxy);
    let seen = fake.result(0, Duration::from_secs(15));
    assert_eq!(
        seen,
        vec![
            (Cmd::READ, 0, 8192),
            (Cmd::WRITE, 0, 512),
            (Cmd::READ, 4096, 2048),
            (Cmd::READ, 12 * 1024, 4096),
        ]
    );
}

fn sigterm_mid_session_exits_0(style: Style) {
    let env = TestEnv::new();
    let (_upstream, mut proxy) = proxy_to_blank_disc(&env, style);
    let mut c = connect(proxy.addr(), style);
    assert_eq!(c.write_reply(1, 0, &[1; 512]), Errno::OK);
    proxy.signal(Signal::TERM);
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", proxy.stderr());
    // The client's connection is closed.
    let mut buf = [0u8; 1];
    assert!(matches!(c.s.read(&mut buf), Ok(0) | Err(_)));
}

fn bad_input_from_a_client_does_not_stop_the_proxy(style: Style) {
    let env = TestEnv::new();
    let data = pattern(16 * 1024, 13);
    let file = env.image_with("disc.img", &data);
    let (_upstream, mut proxy) = proxy_to_serve(&file, style);
    let addr = proxy.addr();
    let closed = |mut s: TcpStream| {
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    };

    // Garbage instead of a handshake (newstyle) or a request (old-style).
    let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    closed(s);

    if style == Style::Newstyle {
        // An option claiming 4 GiB of payload.
        let mut s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        s.read_exact(&mut [0u8; NewstyleHello::SIZE]).unwrap();
        s.write_all(&ClientFlags::FIXED_NEWSTYLE.0.to_be_bytes())
            .unwrap();
        s.write_all(&wire::option_header(Opt::GO, u32::MAX))
            .unwrap();
        closed(s);
    }

    // Requests no upstream should see: answered EINVAL, and the session goes on.
    let mut c = connect(addr, style);
    expect_replies(
        &mut c,
        1,
        &[
            (Cmd::READ, CmdFlags(0), 0, u32::MAX, &[], Errno::EINVAL),
            (
                Cmd::WRITE,
                CmdFlags(0x8000),
                0,
                512,
                &[9; 512],
                Errno::EINVAL,
            ),
            (Cmd(0x77), CmdFlags(0), 0, 0, &[], Errno::EINVAL),
        ],
    );
    c.send(Cmd::READ, CmdFlags(0), 4, u64::MAX - 10, 512, &[]);
    assert_ne!(c.reply_to(4), Errno::OK);
    assert_eq!(c.read(5, 0, 4096), data[..4096]);
    // A request with a bad magic ends the session.
    c.s.write_all(&[0u8; Request::SIZE]).unwrap();
    closed(c.s);

    let mut c = connect(addr, style);
    assert_eq!(c.read(6, 4096, 4096), data[4096..8192]);
    disconnect_and_stop(c, &mut proxy);
}

#[test]
fn sigterm_while_the_client_does_not_read_its_replies_exits_0() {
    // 64 reads of 1 MiB, answered by the upstream, never read by the
    // client: the proxy is stuck writing replies, and must still stop.
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = answered.clone();
    let fake = FakePeer::start(move |_, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        while let Ok(head) = {
            let mut head = [0u8; Request::SIZE];
            s.read_exact(&mut head).map(|()| head)
        } {
            let req = Request::decode(&head).unwrap();
            let mut reply = [0u8; SimpleReply::SIZE];
            SimpleReply {
                error: Errno::OK,
                handle: req.handle,
            }
            .encode(&mut reply);
            if s.write_all(&reply).is_err() || s.write_all(&vec![0u8; req.len as usize]).is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    let mut proxy = start_proxy(fake.addr(), Style::Newstyle, &[]);
    let mut c = connect(proxy.addr(), Style::Newstyle);
    for i in 0..64 {
        c.send(Cmd::READ, CmdFlags(0), i, 0, 1 << 20, &[]);
    }
    // The upstream sends what fits in the sockets; then everyone is stuck.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = (0, Instant::now());
    loop {
        let n = answered.load(Ordering::SeqCst);
        if n != last.0 {
            last = (n, Instant::now());
        } else if n > 0 && last.1.elapsed() > Duration::from_millis(500) {
            break; // no progress: the replies are stuck on the client's side
        }
        assert!(Instant::now() < deadline, "the upstream never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        answered.load(Ordering::SeqCst) < 64,
        "the client's socket took 64 MiB"
    );
    proxy.signal(Signal::TERM);
    let status = proxy.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr());
    drop(c);
}

#[test]
fn flush_fua_trim_and_write_zeroes_pass_through_a_newstyle_upstream() {
    use flexnbd::proto::types::TransmissionFlags as F;
    let env = TestEnv::new();
    let file = env.image_with("disc.img", &pattern(64 * 1024, 11));
    let (_upstream, mut proxy) = proxy_to_serve(&file, Style::Newstyle);
    let mut c = connect(proxy.addr(), Style::Newstyle);
    let flags = F(c.flags);
    for f in [
        F::SEND_FLUSH,
        F::SEND_FUA,
        F::SEND_TRIM,
        F::SEND_WRITE_ZEROES,
    ] {
        assert!(flags.contains(f), "{f:?} not advertised: {flags:?}");
    }
    assert!(
        !flags.contains(F::CAN_MULTI_CONN),
        "one client at a time: {flags:?}"
    );
    assert_eq!(c.write_reply(1, 0, &[5; 4096]), Errno::OK);
    expect_replies(
        &mut c,
        2,
        &[
            (Cmd::WRITE, CmdFlags::FUA, 4096, 4096, &[6; 4096], Errno::OK),
            (Cmd::FLUSH, CmdFlags(0), 0, 0, &[], Errno::OK),
            (Cmd::WRITE_ZEROES, CmdFlags(0), 8192, 8192, &[], Errno::OK),
            (Cmd::TRIM, CmdFlags(0), 32768, 4096, &[], Errno::OK),
        ],
    );
    let on_disc = env.read(&file);
    assert!(on_disc[..4096].iter().all(|&b| b == 5));
    assert!(on_disc[4096..8192].iter().all(|&b| b == 6));
    assert!(
        on_disc[8192..16384].iter().all(|&b| b == 0),
        "WRITE_ZEROES did not zero"
    );
    disconnect_and_stop(c, &mut proxy);
}

#[test]
fn trim_and_write_zeroes_are_refused_honestly_behind_an_oldstyle_upstream() {
    use flexnbd::proto::types::TransmissionFlags as F;
    // Behind a flexnbd-c-style upstream (flags 13: FLUSH and FUA only).
    let fake = FakePeer::start(|_, mut s| {
        send_hello(&mut s, FAKE_SIZE, FLEXNBD_C_FLAGS);
        let mut seen = Vec::new();
        while let Ok(head) = {
            let mut head = [0u8; Request::SIZE];
            s.read_exact(&mut head).map(|()| head)
        } {
            let req = Request::decode(&head).unwrap();
            if req.cmd == Cmd::WRITE {
                let mut payload = vec![0u8; req.len as usize];
                s.read_exact(&mut payload).unwrap();
            }
            answer(&mut s, &req);
            seen.push((req.cmd, req.flags));
        }
        seen
    });
    let mut proxy = start_proxy(fake.addr(), Style::Newstyle, &[]);
    let mut c = connect(proxy.addr(), Style::Newstyle);
    let flags = F(c.flags);
    assert!(
        flags.contains(F::SEND_FLUSH) && flags.contains(F::SEND_FUA),
        "{flags:?}"
    );
    assert!(
        !flags.contains(F::SEND_TRIM) && !flags.contains(F::SEND_WRITE_ZEROES),
        "{flags:?}"
    );
    expect_replies(
        &mut c,
        1,
        &[
            (Cmd::TRIM, CmdFlags(0), 0, 4096, &[], Errno::EINVAL),
            (Cmd::WRITE_ZEROES, CmdFlags(0), 0, 4096, &[], Errno::EINVAL),
            (Cmd::FLUSH, CmdFlags(0), 0, 0, &[], Errno::OK),
            (Cmd::WRITE, CmdFlags::FUA, 0, 512, &[1; 512], Errno::OK),
        ],
    );
    disconnect_and_stop(c, &mut proxy);
    // Only what the upstream can do reached it; FUA kept.
    assert_eq!(
        fake.result(0, Duration::from_secs(15)),
        vec![(Cmd::FLUSH, CmdFlags(0)), (Cmd::WRITE, CmdFlags::FUA)]
    );
}

#[test]
fn flexnbd_proxy_symlink_is_the_proxy_on_a_unix_socket() {
    let env = TestEnv::new();
    let mut data = pattern(256 * 1024, 12);
    let file = env.image_with("disc.img", &data);
    let upstream = start_upstream(&file, Style::Oldstyle);
    let link = env.child("flexnbd-proxy");
    std::os::unix::fs::symlink(crate::support::flexnbd_path(), &link).unwrap();

    // Its help is flexnbd-proxy's: no subcommand, the proxy's options.
    let help = Command::new(&link).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{help:?}");
    assert!(
        text.contains("flexnbd-proxy") && text.contains("--conn-addr"),
        "{text}"
    );

    let path = env.sock_path_named("proxy.sock");
    let mut cmd = Command::new(&link);
    cmd.arg("-l").arg(&path).args([
        "-C",
        "127.0.0.1",
        "-P",
        &upstream.port().to_string(),
        "--cache",
    ]);
    let mut proxy = Daemon::spawn(cmd, vec![Ready::Sock(path.clone())]);
    proxy.wait_ready();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    // Fixed newstyle by default: a libnbd tool can use it.
    let mut magic = [0u8; 8];
    s.read_exact(&mut magic).unwrap();
    assert_eq!(&magic, b"NBDMAGIC");
    drop(s);
    if require_tool("nbdinfo") {
        let uri = unix_uri("", &path);
        let out = crate::support::tool("nbdinfo")
            .arg("--size")
            .arg(&uri)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            data.len().to_string()
        );
    }
    if require_tool("qemu-io") {
        let uri = unix_uri("", &path);
        let out = crate::support::tool("qemu-io")
            .args([
                "-f",
                "raw",
                "-c",
                "write -P 0x5a 4096 64k",
                "-c",
                "read -P 0x5a 4096 64k",
            ])
            .arg(&uri)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !text.contains("fail"), "{out:?}");
        let mut expected = data.clone();
        expected[4096..4096 + (64 << 10)].fill(0x5a);
        crate::support::assert_same_bytes("qemu-io through the proxy", &env.read(&file), &expected);
        data.clone_from(&expected);
    }
    if require_tool("nbdcopy") {
        let uri = unix_uri("", &path);
        let copy = env.child("copy.img");
        let out = crate::support::tool("nbdcopy")
            .arg(&uri)
            .arg(&copy)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        crate::support::assert_same_bytes("nbdcopy through the proxy", &env.read(&copy), &data);
    }
    stop_proxy(&mut proxy);
    assert!(!path.exists(), "the UNIX socket was left behind");
}

// ---------------------------------------------------------------------------
// A live migration behind the proxy.

/// fio's job: random 4 KiB writes over the whole disc, each read back and checked.
fn fio_job(size: u64) -> Vec<String> {
    [
        "--name=behind-proxy",
        "--rw=randwrite",
        "--bs=4k",
        "--verify=crc32c",
        "--verify_fatal=1",
        // Otherwise fio leaves a verify.state file in the working directory.
        "--verify_state_save=0",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([format!("--size={size}")])
    .collect()
}

#[test]
fn live_migration_behind_the_proxy_loses_no_write() {
    if !require_tool("fio") {
        return;
    }
    const SIZE: u64 = 16 << 20;
    let env = TestEnv::new();
    let src = env.image("source.img", SIZE);
    let dst = env.image("destination.img", SIZE);
    let source_sock = env.sock_path_named("source.sock");
    let mut source = DaemonBuilder::new("serve", &src).sock(&source_sock).start();
    let mut listen = DaemonBuilder::new("listen", &dst)
        .sock(env.sock_path_named("dest.sock"))
        .start();
    let mut proxy = start_proxy(source.addr(), Style::Newstyle, &[]);
    let uri = format!("nbd://127.0.0.1:{}", proxy.port());

    // Rate-limited, so that the writes outlast the migration by far.
    let mut fio = Command::new("fio")
        .args(fio_job(SIZE))
        .args([
            "--ioengine=nbd",
            "--iodepth=4",
            "--rate=2m",
            "--do_verify=1",
        ])
        .arg(format!("--uri={uri}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once fio's writes reach the source, migrate it.
    wait_until("fio writing to the source", Duration::from_secs(30), || {
        std::fs::metadata(&src).unwrap().blocks() > 0
    });
    let out = crate::support::flexnbd()
        .args(["mirror", "-s"])
        .arg(&source_sock)
        .args(["-l", "127.0.0.1", "-p", &listen.port().to_string()])
        .output()
        .unwrap();
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim()
        ),
        (Some(0), "Mirror started"),
        "{out:?}"
    );
    let listened = listen.wait_exit(Duration::from_secs(120));
    assert_eq!(listened.code(), Some(0), "listen: {}", listen.stderr());
    let served = source.wait_exit(Duration::from_secs(30));
    assert_eq!(served.code(), Some(0), "source: {}", source.stderr());
    // The operator serves the destination where the source was.
    let mut dest = DaemonBuilder::new("serve", &dst)
        .port(source.port())
        .start();

    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = fio.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = fio.kill();
            let _ = fio.wait();
            panic!("fio did not finish in time; proxy:\n{}", proxy.stderr());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    fio.stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    fio.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        status.success() && stdout.contains("err= 0"),
        "fio through the proxy failed ({status}):\n{stdout}\n{stderr}\nproxy:\n{}",
        proxy.stderr()
    );
    assert!(stdout.contains("issued rwts: total=4096,4096,"), "{stdout}");
    assert!(
        proxy.stderr().contains("resending") || proxy.stderr().contains("reconnected"),
        "the proxy never reconnected, so nothing was tested:\n{}",
        proxy.stderr()
    );
    stop_proxy(&mut proxy);
    assert_eq!(dest.stop().code(), Some(0), "{}", dest.stderr());

    // The file on disc holds every block fio wrote (fio re-derives them).
    let out = crate::support::tool("fio")
        .args(fio_job(SIZE))
        .args(["--ioengine=psync", "--verify_only=1"])
        .arg(format!("--filename={}", dst.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("err= 0"),
        "the destination file does not hold what fio wrote:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// What the migration behind the proxy relies on: a source never has two
// overlapping WRITEs in flight. (NBD does not order requests in flight, and
// our listen serves them in parallel: a stale copy could land last. The fio
// test above lost blocks that way about once in eight runs under load.)

#[test]
fn a_migration_never_has_overlapping_writes_in_flight() {
    use flexnbd::client::{ConnectOptions, NbdClient};
    const SIZE: u64 = 1 << 20;
    let env = TestEnv::new();
    let file = env.image_with("source.img", &pattern(SIZE as usize, 21));
    let sock = env.sock_path_named("source.sock");
    let source = DaemonBuilder::new("serve", &file).sock(&sock).start();

    // A client rewriting one block of the file, all through the migration.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let addr = source.addr();
        std::thread::spawn(move || {
            let opts = ConnectOptions {
                connect_timeout: IO_TIMEOUT,
                hello_timeout: IO_TIMEOUT,
                reply_timeout: IO_TIMEOUT,
                ..ConnectOptions::default()
            };
            let mut client = NbdClient::connect(addr, &opts).unwrap();
            let mut n = 0u8;
            while !stop.load(Ordering::SeqCst) {
                n = n.wrapping_add(1);
                // Until the handover closes the connection.
                if client.write_at(8192, &[n; 4096], false).is_err() {
                    break;
                }
            }
        })
    };

    // The destination, old-style (so no FLUSH in between): it holds the
    // first WRITE's payload unread for a second, so that the source is
    // stuck sending it while the client writes, then holds the reply for
    // another second, and records every WRITE that arrives overlapping one
    // it has not answered yet.
    let fake = FakePeer::start(move |n, mut s| {
        if n > 0 {
            return Vec::new();
        }
        let mut hello = [0u8; OldstyleHello::SIZE];
        OldstyleHello {
            size: SIZE,
            flags: FLEXNBD_C_FLAGS,
        }
        .encode(&mut hello);
        s.write_all(&hello).unwrap();
        let mut head = [0u8; Request::SIZE];
        s.read_exact(&mut head).unwrap();
        let first = Request::decode(&head).unwrap();
        assert_eq!(first.cmd, Cmd::WRITE);
        let held = Instant::now();
        while held.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(10)); // the fake is slow on purpose
        }
        let mut payload = vec![0u8; first.len as usize];
        s.read_exact(&mut payload).unwrap();
        let mut unanswered = vec![first];
        let mut overlaps = Vec::new();
        let answer_due = Instant::now() + Duration::from_secs(1);
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        loop {
            if !unanswered.is_empty() && Instant::now() >= answer_due {
                for req in unanswered.drain(..) {
                    answer(&mut s, &req);
                }
            }
            let mut head = [0u8; Request::SIZE];
            match s.read_exact(&mut head) {
                Ok(()) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) => panic!("fake destination: {e}"),
            }
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let req = Request::decode(&head).unwrap();
            if req.cmd != Cmd::WRITE {
                assert_eq!(req.cmd, Cmd::DISC, "{req:?}");
                return overlaps;
            }
            let mut payload = vec![0u8; req.len as usize];
            s.read_exact(&mut payload).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let end = req.offset + u64::from(req.len);
            if let Some(old) = unanswered
                .iter()
                .find(|o| o.offset < end && req.offset < o.offset + u64::from(o.len))
            {
                overlaps.push((*old, req));
            }
            if Instant::now() >= answer_due {
                answer(&mut s, &req);
            } else {
                unanswered.push(req);
            }
        }
    });
    let out = crate::support::flexnbd()
        .args(["mirror", "-s"])
        .arg(&sock)
        .args(["-l", "127.0.0.1", "-p", &fake.addr().port().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let overlaps = fake.result(0, Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    assert!(
        overlaps.is_empty(),
        "WRITEs sent over ones still in flight: {overlaps:?}"
    );
    drop(source);
}
