//! The NBD client (`flexnbd::client`) and the `read` / `write` subcommands,
//! against real servers (nbdkit newstyle and old-style, the C flexnbd) and
//! scripted fake servers that misbehave at one step each.
//!
//! A missing tool skips its test with `skipped: <tool> not installed`,
//! unless `CI=true`, where it fails the test.

#![allow(clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

use flexnbd::client::{ClientError, ConnectOptions, ErrorKind, NbdClient, Style};
use flexnbd::proto::consts::{MAX_REQUEST_LEN, NBD_INIT_PASSWD, NBD_OPTS_MAGIC};
use flexnbd::proto::types::{Cmd, CmdFlags, Errno, HandshakeFlags, Opt, Rep};
use flexnbd::proto::wire::{
    ExportNameReply, NewstyleHello, OldstyleHello, OptionHeader, OptionReplyHeader, Request,
    SimpleReply,
};

use crate::support::daemon::start_on_free_port;
use crate::support::{
    self, COMMAND_TIMEOUT, Daemon, TestEnv, assert_same_bytes, finish, flexnbd, flexnbd_std,
    free_port, pattern, read_range, require_tool, text,
};

const MIB: usize = 1 << 20;
/// nbdkit with 64 MiB that refuses requests over 1 MiB.
const MAX_1_MIB: &[&str] = &[
    "--filter=blocksize-policy",
    "memory",
    "64M",
    "blocksize-maximum=1M",
    "blocksize-error-policy=error",
];

// ---------------------------------------------------------------------------
// Helpers: servers, fakes.

/// nbdkit serving `extra` (plugin, filters, parameters) on 127.0.0.1; `None` if not installed.
fn nbdkit(extra: &[&str]) -> Option<Daemon> {
    if !require_tool("nbdkit") {
        return None;
    }
    Some(start_on_free_port(None, |port| {
        let mut cmd = std::process::Command::new("nbdkit");
        cmd.args(["-f", "--exit-with-parent", "-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .args(extra);
        cmd
    }))
}

/// The C flexnbd serving `disk.img` of `size` bytes in `env` (old-style);
/// `None` if it cannot run here.
fn flexnbd_c(env: &TestEnv, size: u64) -> Option<Daemon> {
    let program = support::flexnbd_c()?;
    let disk = env.image("disk.img", size);
    let sock = env.sock_path();
    Some(start_on_free_port(Some(&sock), |port| {
        let mut cmd = std::process::Command::new(&program);
        cmd.args(["serve", "-l", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-f")
            .arg(&disk)
            .arg("-s")
            .arg(&sock);
        cmd
    }))
}

/// Options with short timeouts, so failing tests end quickly.
fn quick() -> ConnectOptions {
    ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        hello_timeout: Duration::from_millis(500),
        reply_timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    }
}

fn connect(addr: SocketAddr) -> NbdClient {
    NbdClient::connect(addr, &quick()).expect("connect")
}

/// A fake server: one connection, handled by `script` on a thread.
fn fake<T: Send + 'static>(
    script: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        script(stream)
    });
    (addr, handle)
}

fn oldstyle_hello(size: u64, flags: u32) -> [u8; OldstyleHello::SIZE] {
    let mut buf = [0u8; OldstyleHello::SIZE];
    OldstyleHello { size, flags }.encode(&mut buf);
    buf
}

fn read_request(s: &mut TcpStream) -> Request {
    let mut buf = [0u8; Request::SIZE];
    s.read_exact(&mut buf).expect("request");
    Request::decode(&buf).expect("request magic")
}

fn send_reply(s: &mut TcpStream, error: Errno, handle: u64) {
    let mut buf = [0u8; SimpleReply::SIZE];
    SimpleReply { error, handle }.encode(&mut buf);
    s.write_all(&buf).expect("reply");
}

/// Reads until the client closes; returns how many bytes arrived.
fn drain(s: &mut TcpStream) -> usize {
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    sink.len()
}

/// The reply to NBD_OPT_EXPORT_NAME for an export of `size` bytes (flags:
/// HAS_FLAGS only), without the zeroes.
fn export_name_reply(size: u64) -> [u8; ExportNameReply::SIZE] {
    let mut head = [0u8; ExportNameReply::SIZE];
    ExportNameReply {
        size,
        flags: flexnbd::proto::types::TransmissionFlags(1),
    }
    .encode(&mut head);
    head
}

/// Asserts that the C flexnbd's `disk.img` in `env` holds `data` at `offset`.
#[track_caller]
fn assert_c_file_holds(env: &TestEnv, offset: u64, data: &[u8]) {
    let file = read_range(&env.child("disk.img"), offset, data.len() as u64);
    assert_same_bytes("the C flexnbd's file", &file, data);
}

/// Why the client's handshake with a fake running `script` failed, which
/// must be an error of kind `Rejected`.
#[track_caller]
fn rejected_by(script: impl FnOnce(TcpStream) + Send + 'static) -> ClientError {
    let (addr, _fake) = fake(script);
    let err = NbdClient::connect(addr, &quick()).expect_err("the handshake succeeded");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err:?}");
    err
}

/// [`rejected_by`] a fixed-newstyle fake that reads the client's first
/// option (its GO) and answers it with `answer`, then drains.
#[track_caller]
fn go_rejected_by(answer: impl FnOnce(&mut TcpStream) + Send + 'static) -> ClientError {
    rejected_by(|mut s| {
        newstyle_greeting(&mut s, HandshakeFlags::FIXED_NEWSTYLE);
        read_option(&mut s);
        answer(&mut s);
        drain(&mut s);
    })
}

/// An old-style fake of `size` bytes that answers the first request with
/// `respond(stream, request)`, then drains.
fn oldstyle_fake(
    size: u64,
    respond: impl FnOnce(&mut TcpStream, Request) + Send + 'static,
) -> (SocketAddr, JoinHandle<()>) {
    fake(move |mut s| {
        s.write_all(&oldstyle_hello(size, 13)).expect("hello");
        let req = read_request(&mut s);
        respond(&mut s, req);
        drain(&mut s);
    })
}

fn read_option(s: &mut TcpStream) -> (OptionHeader, Vec<u8>) {
    let mut buf = [0u8; OptionHeader::SIZE];
    s.read_exact(&mut buf).expect("option");
    let h = OptionHeader::decode(&buf).expect("option header");
    let mut payload = vec![0u8; h.len as usize];
    s.read_exact(&mut payload).expect("option payload");
    (h, payload)
}

/// Reads the client's next option, which must be `opt`; its payload.
#[track_caller]
fn expect_option(s: &mut TcpStream, opt: Opt) -> Vec<u8> {
    let (h, payload) = read_option(s);
    assert_eq!(h.opt, opt);
    payload
}

fn send_option_reply(s: &mut TcpStream, opt: Opt, rep: Rep, payload: &[u8]) {
    send_option_reply_header(s, opt, rep, payload.len() as u32);
    s.write_all(payload).expect("option reply payload");
}

/// An option reply's header announcing `len` bytes (which may be a lie).
fn send_option_reply_header(s: &mut TcpStream, opt: Opt, rep: Rep, len: u32) {
    let mut buf = [0u8; OptionReplyHeader::SIZE];
    OptionReplyHeader { opt, rep, len }.encode(&mut buf);
    s.write_all(&buf).expect("option reply");
}

fn newstyle_greeting(s: &mut TcpStream, flags: HandshakeFlags) -> u32 {
    let mut buf = [0u8; NewstyleHello::SIZE];
    NewstyleHello { flags }.encode(&mut buf);
    s.write_all(&buf).expect("greeting");
    let mut cflags = [0u8; 4];
    s.read_exact(&mut cflags).expect("client flags");
    u32::from_be_bytes(cflags)
}

/// Answers one READ with `byte` repeated, then drains.
fn serve_one_read(s: &mut TcpStream, byte: u8) {
    let req = read_request(s);
    assert_eq!(req.cmd, Cmd::READ);
    send_reply(s, Errno::OK, req.handle);
    s.write_all(&vec![byte; req.len as usize]).expect("data");
    drain(s);
}

/// Reads `len` bytes at `from` through `client`, whose fake answers with
/// [`serve_one_read`] of `byte`: they are all `byte`. Then drops the client.
#[track_caller]
fn read_once(mut client: NbdClient, from: u64, len: usize, byte: u8) {
    let mut buf = vec![0u8; len];
    client.read_at(from, &mut buf).expect("read");
    assert_eq!(buf, vec![byte; len]);
}

/// `flexnbd read` of `size` bytes at `from`.
fn read_cmd(addr: SocketAddr, from: u64, size: u64) -> Command {
    let mut cmd = flexnbd();
    cmd.args(["read", "-l", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-F", &from.to_string(), "-S", &size.to_string()]);
    cmd
}

/// `flexnbd write` of `size` bytes at `from`.
fn write_cmd(addr: SocketAddr, from: u64, size: u64) -> Command {
    let mut cmd = flexnbd();
    cmd.args(["write", "-l", "127.0.0.1", "-p", &addr.port().to_string()])
        .args(["-F", &from.to_string(), "-S", &size.to_string()]);
    cmd
}

/// Writes `data` at `from` with the binary, then reads it back with the binary.
fn binary_round_trip(addr: SocketAddr, from: u64, data: &[u8]) {
    let size = data.len() as u64;
    write_cmd(addr, from, size)
        .write_stdin(data.to_vec())
        .assert()
        .success()
        .stderr("");
    let out = read_cmd(addr, from, size).assert().success().stderr("");
    assert!(out.get_output().stdout == data, "data read back differs");
}

/// Writes, flushes if possible and reads back through the library.
fn library_round_trip(client: &mut NbdClient, from: u64, data: &[u8]) {
    client.write_at(from, data, false).expect("write");
    if client
        .flags()
        .contains(flexnbd::proto::types::TransmissionFlags::SEND_FLUSH)
    {
        client.flush().expect("flush");
    }
    let mut back = vec![0u8; data.len()];
    client.read_at(from, &mut back).expect("read");
    assert!(back == data, "data read back differs");
}

// ---------------------------------------------------------------------------
// Library against real servers.

#[test]
fn newstyle_round_trip_against_nbdkit() {
    let Some(server) = nbdkit(&["memory", "1M"]) else {
        return;
    };
    let mut client = connect(server.addr());
    assert_eq!(client.style(), Style::Newstyle);
    assert_eq!(client.size(), MIB as u64);
    assert!(client.max_request() <= MAX_REQUEST_LEN && client.max_request() > 0);
    library_round_trip(&mut client, 4096, &pattern(64 * 1024, 1));
    // FUA is advertised by nbdkit's memory plugin.
    client.write_at(0, b"durable", true).expect("fua write");
    let mut back = [0u8; 7];
    client.read_at(0, &mut back).expect("read");
    assert_eq!(&back, b"durable");
    // The last byte is in range; a zero-length request at the end is too.
    client
        .write_at(MIB as u64 - 1, b"z", false)
        .expect("last byte");
    client
        .read_at(MIB as u64, &mut [])
        .expect("empty read at the end");
    client.disconnect().expect("disconnect");
}

#[test]
fn oldstyle_round_trip_against_nbdkit() {
    // nbdkit -o advertises FLUSH but rejects it (an nbdkit bug), so no flush here.
    let Some(server) = nbdkit(&["-o", "memory", "1M"]) else {
        return;
    };
    let mut client = connect(server.addr());
    assert_eq!(client.style(), Style::Oldstyle);
    assert_eq!(client.size(), MIB as u64);
    assert_eq!(client.max_request(), MAX_REQUEST_LEN);
    let data = pattern(100_000, 2);
    client.write_at(12345, &data, false).expect("write");
    let mut back = vec![0u8; data.len()];
    client.read_at(12345, &mut back).expect("read");
    assert!(back == data);
    client.disconnect().expect("disconnect");
}

#[test]
fn oldstyle_round_trip_against_flexnbd_c_reaches_the_file() {
    let env = TestEnv::new();
    let Some(server) = flexnbd_c(&env, MIB as u64) else {
        return;
    };
    let mut client = connect(server.addr());
    assert_eq!(client.style(), Style::Oldstyle);
    assert_eq!(client.size(), MIB as u64);
    let data = pattern(200_000, 3);
    library_round_trip(&mut client, 512, &data);
    client.disconnect().expect("disconnect");
    assert_c_file_holds(&env, 512, &data);
}

#[test]
fn requests_are_split_at_the_servers_maximum() {
    let Some(server) = nbdkit(MAX_1_MIB) else {
        return;
    };
    let mut client = connect(server.addr());
    assert_eq!(client.max_request(), MIB as u32);
    // 40 MiB as 40 requests each way; one larger request would get EINVAL.
    library_round_trip(&mut client, 3 * MIB as u64, &pattern(40 * MIB, 4));
}

#[test]
fn replies_can_be_read_on_another_thread() {
    let Some(server) = nbdkit(&["memory", "1M"]) else {
        return;
    };
    let mut client = connect(server.addr());
    client
        .write_at(0, &pattern(8 * 4096, 5), false)
        .expect("write");
    let mut replies = client.reply_reader().expect("reply reader");
    let reader = thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..8 {
            let reply = replies.read_reply().expect("reply");
            assert_eq!(reply.error, Errno::OK);
            let mut data = vec![0u8; 4096];
            replies.read_payload(&mut data).expect("data");
            got.push((reply.handle, data));
        }
        got
    });
    let mut sent = Vec::new();
    for i in 0..8u64 {
        let req = Request {
            flags: CmdFlags(0),
            cmd: Cmd::READ,
            handle: client.next_handle(),
            offset: i * 4096,
            len: 4096,
        };
        client.send_request(&req, &[]).expect("send");
        sent.push(req);
    }
    let got = reader.join().expect("reader thread");
    let expected = pattern(8 * 4096, 5);
    for (handle, data) in got {
        let req = sent
            .iter()
            .find(|r| r.handle == handle)
            .expect("known handle");
        let at = req.offset as usize;
        assert!(data == expected[at..at + 4096]);
    }
}

#[test]
fn read_only_export_refuses_writes_before_sending() {
    let Some(server) = nbdkit(&["-r", "memory", "1M"]) else {
        return;
    };
    let mut client = connect(server.addr());
    let err = client.write_at(0, b"x", false).unwrap_err();
    assert!(matches!(err, ClientError::ReadOnly), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    // The connection is still usable.
    client.read_at(0, &mut [0u8; 16]).expect("read");
}

// ---------------------------------------------------------------------------
// Library against fake servers.

#[test]
fn out_of_range_is_rejected_before_sending() {
    let (addr, fake) = fake(|mut s| {
        s.write_all(&oldstyle_hello(4096, 13)).expect("hello");
        drain(&mut s)
    });
    let mut client = connect(addr);
    let err = client.read_at(4000, &mut [0u8; 200]).unwrap_err();
    assert!(matches!(err, ClientError::OutOfRange { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::InvalidRequest);
    assert_eq!(
        err.to_string(),
        "request of 200 bytes at offset 4000 is out of range given export size 4096"
    );
    let err = client.write_at(u64::MAX, b"x", false).unwrap_err();
    assert!(matches!(err, ClientError::OutOfRange { .. }), "{err:?}");
    assert!(client.check_range(4097, 0).is_err());
    drop(client);
    assert_eq!(fake.join().expect("fake"), 0, "bytes were sent");
}

#[test]
fn connection_refused_is_a_connect_error() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let err = NbdClient::connect(addr, &quick()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(
        err.to_string()
            .starts_with(&format!("cannot connect to {addr}")),
        "{err}"
    );
}

#[test]
fn bind_address_is_used() {
    let (addr, fake) = fake(|mut s| {
        let peer = s.peer_addr().expect("peer");
        s.write_all(&oldstyle_hello(512, 1)).expect("hello");
        drain(&mut s);
        peer
    });
    let opts = ConnectOptions {
        bind: Some("127.0.0.1".parse().unwrap()),
        ..quick()
    };
    let client = NbdClient::connect(addr, &opts).expect("connect");
    drop(client);
    assert!(fake.join().expect("fake").ip().is_loopback());
}

#[test]
fn bad_hello_magic_is_rejected() {
    let err = rejected_by(|mut s| {
        let mut hello = oldstyle_hello(4096, 13);
        hello[15] ^= 0xff;
        s.write_all(&hello).expect("hello");
        drain(&mut s);
    });
    assert!(matches!(err, ClientError::BadHello(_)), "{err:?}");
}

#[test]
fn bad_password_is_rejected() {
    rejected_by(|mut s| {
        s.write_all(b"NBDMAGIX\0\0\x42\x02\x81\x86\x12\x53")
            .expect("hello");
        drain(&mut s);
    });
}

#[test]
fn close_after_oldstyle_greeting_is_rejected() {
    let err = rejected_by(|mut s| {
        s.write_all(&oldstyle_hello(4096, 13)[..16])
            .expect("greeting");
    });
    assert!(matches!(err, ClientError::HandshakeClosed), "{err:?}");
}

#[test]
fn close_after_newstyle_greeting_is_rejected() {
    rejected_by(|mut s| {
        newstyle_greeting(
            &mut s,
            HandshakeFlags::FIXED_NEWSTYLE | HandshakeFlags::NO_ZEROES,
        );
        let _ = s.shutdown(Shutdown::Both);
    });
}

#[test]
fn silent_server_is_no_hello() {
    let (addr, _fake) = fake(|mut s| {
        drain(&mut s);
    });
    let started = Instant::now();
    let err = NbdClient::connect(addr, &quick()).unwrap_err();
    assert!(matches!(err, ClientError::NoHello { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::NoHello);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        err.to_string(),
        format!("no NBD hello from {addr} within 500ms")
    );
}

#[test]
fn error_reply_carries_the_errno() {
    let (addr, _fake) = oldstyle_fake(4096, |s, req| send_reply(s, Errno::EIO, req.handle));
    let mut client = connect(addr);
    let err = client.read_at(0, &mut [0u8; 512]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Reply);
    assert_eq!(err.errno(), Some(Errno::EIO));
    assert_eq!(
        err.to_string(),
        "READ of 512 bytes at offset 0 failed: EIO (input/output error)"
    );
}

#[test]
fn wrong_handle_is_a_protocol_error() {
    let (addr, _fake) = oldstyle_fake(4096, |s, req| {
        send_reply(s, Errno::OK, req.handle ^ 1);
    });
    let mut client = connect(addr);
    let err = client.write_at(0, &[7u8; 512], false).unwrap_err();
    assert!(
        matches!(err, ClientError::UnexpectedHandle { .. }),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Protocol);
}

#[test]
fn bad_reply_magic_is_a_protocol_error() {
    let (addr, _fake) = oldstyle_fake(4096, |s, req| {
        // A structured reply chunk, which was never negotiated.
        let mut buf = [0u8; 20];
        buf[..4].copy_from_slice(&0x668e_33efu32.to_be_bytes());
        buf[8..16].copy_from_slice(&req.handle.to_be_bytes());
        s.write_all(&buf).expect("chunk");
    });
    let mut client = connect(addr);
    let err = client.read_at(0, &mut [0u8; 512]).unwrap_err();
    assert!(matches!(err, ClientError::BadReply(_)), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Protocol);
}

#[test]
fn missing_reply_is_a_timeout() {
    let (addr, _fake) = oldstyle_fake(4096, |_, _| {});
    let opts = ConnectOptions {
        reply_timeout: Duration::from_millis(300),
        ..quick()
    };
    let mut client = NbdClient::connect(addr, &opts).expect("connect");
    let started = Instant::now();
    let err = client.flush().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn eof_instead_of_a_reply_is_an_io_error() {
    let (addr, _fake) = fake(|mut s| {
        s.write_all(&oldstyle_hello(4096, 13)).expect("hello");
        read_request(&mut s);
    });
    let mut client = connect(addr);
    let err = client.read_at(0, &mut [0u8; 512]).unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err:?}");
    assert_eq!(err.kind(), ErrorKind::Io);
}

#[test]
fn go_unsupported_falls_back_to_export_name_with_zeroes() {
    let (addr, fake) = fake(|mut s| {
        let cflags = newstyle_greeting(&mut s, HandshakeFlags::FIXED_NEWSTYLE);
        let payload = expect_option(&mut s, Opt::GO);
        // Default export, one request: NBD_INFO_BLOCK_SIZE.
        assert_eq!(payload, [0, 0, 0, 0, 0, 1, 0, 3]);
        send_option_reply(&mut s, Opt::GO, Rep::ERR_UNSUP, b"");
        expect_option(&mut s, Opt::EXPORT_NAME);
        let mut reply = [0u8; ExportNameReply::SIZE + 124];
        reply[..ExportNameReply::SIZE].copy_from_slice(&export_name_reply(8192));
        s.write_all(&reply).expect("export name reply");
        serve_one_read(&mut s, 0xab);
        cflags
    });
    let client = connect(addr);
    assert_eq!((client.style(), client.size()), (Style::Newstyle, 8192));
    read_once(client, 8092, 100, 0xab);
    // Fixed newstyle, and no NO_ZEROES since the server did not offer it.
    assert_eq!(fake.join().expect("fake"), 1);
}

#[test]
fn plain_newstyle_uses_export_name_without_zeroes() {
    let (addr, fake) = fake(|mut s| {
        let cflags = newstyle_greeting(&mut s, HandshakeFlags::NO_ZEROES);
        expect_option(&mut s, Opt::EXPORT_NAME);
        s.write_all(&export_name_reply(4096))
            .expect("export name reply");
        serve_one_read(&mut s, 0x5a);
        cflags
    });
    read_once(connect(addr), 0, 10, 0x5a);
    assert_eq!(
        fake.join().expect("fake"),
        2,
        "client flags: NO_ZEROES only"
    );
}

#[test]
fn go_refusal_is_rejected_with_the_servers_message() {
    let err = go_rejected_by(|s| send_option_reply(s, Opt::GO, Rep::ERR_POLICY, b"go away"));
    assert_eq!(
        err.to_string(),
        "server refused GO with ERR_POLICY: go away"
    );
}

#[test]
fn oversized_option_reply_is_rejected_before_allocating() {
    let err = go_rejected_by(|s| send_option_reply_header(s, Opt::GO, Rep::INFO, u32::MAX));
    assert!(matches!(err, ClientError::BadHandshake(_)), "{err:?}");
}

// ---------------------------------------------------------------------------
// The `read` and `write` subcommands.

#[test]
fn binary_round_trip_against_nbdkit_newstyle() {
    let Some(server) = nbdkit(&["memory", "1M"]) else {
        return;
    };
    binary_round_trip(server.addr(), 1000, &pattern(300_000, 6));
}

#[test]
fn binary_read_against_nbdkit_oldstyle() {
    let Some(server) = nbdkit(&["-o", "memory", "1M"]) else {
        return;
    };
    let data = pattern(70_000, 7);
    let mut client = connect(server.addr());
    client.write_at(100, &data, false).expect("write");
    client.disconnect().expect("disconnect");
    let out = read_cmd(server.addr(), 100, data.len() as u64)
        .assert()
        .success();
    assert!(out.get_output().stdout == data);
}

#[test]
fn binary_round_trip_against_flexnbd_c() {
    let env = TestEnv::new();
    let Some(server) = flexnbd_c(&env, MIB as u64) else {
        return;
    };
    let data = pattern(123_456, 8);
    binary_round_trip(server.addr(), 4096, &data);
    assert_c_file_holds(&env, 4096, &data);
}

#[test]
fn binary_splits_40_mib_at_the_servers_maximum() {
    let Some(server) = nbdkit(MAX_1_MIB) else {
        return;
    };
    binary_round_trip(server.addr(), MIB as u64, &pattern(40 * MIB, 9));
}

#[test]
fn binary_moves_40_mib_in_32_mib_requests() {
    let Some(server) = nbdkit(&["memory", "64M"]) else {
        return;
    };
    binary_round_trip(server.addr(), 0, &pattern(40 * MIB, 10));
}

#[test]
fn binary_out_of_range_fails_before_sending() {
    let Some(server) = nbdkit(&["memory", "1M"]) else {
        return;
    };
    read_cmd(server.addr(), 1_048_000, 1000)
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            "request of 1000 bytes at offset 1048000 is out of range given export size 1048576",
        ));
    // write checks the range before it reads stdin.
    write_cmd(server.addr(), 1_048_576, 1)
        .write_stdin("")
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "out of range given export size 1048576",
        ));
}

#[test]
fn binary_write_with_short_stdin_fails() {
    let Some(server) = nbdkit(&["memory", "1M"]) else {
        return;
    };
    write_cmd(server.addr(), 0, 4096)
        .write_stdin(vec![1u8; 100])
        .assert()
        .code(1)
        .stderr("flexnbd: stdin ended after 100 of 4096 bytes\n");
    // Over several chunks: the first full chunks are written, the error counts all bytes.
    let Some(small) = nbdkit(&[
        "--filter=blocksize-policy",
        "memory",
        "8M",
        "blocksize-maximum=1M",
    ]) else {
        return;
    };
    write_cmd(small.addr(), 0, 4 * MIB as u64)
        .write_stdin(vec![1u8; 2 * MIB + 5])
        .assert()
        .code(1)
        .stderr(format!(
            "flexnbd: stdin ended after {} of {} bytes\n",
            2 * MIB + 5,
            4 * MIB
        ));
}

#[test]
fn binary_write_to_read_only_export_fails() {
    let Some(server) = nbdkit(&["-r", "memory", "1M"]) else {
        return;
    };
    write_cmd(server.addr(), 0, 1)
        .write_stdin("x")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("the export is read-only"));
}

#[test]
fn binary_connection_refused() {
    let port = free_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    read_cmd(addr, 0, 1)
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::starts_with(format!(
            "flexnbd: cannot connect to 127.0.0.1:{port}: "
        )));
}

#[test]
fn binary_error_reply_exits_1() {
    // The C client exits 0 here (flexnbd-c-behaviour 14.3 item 9); we do not.
    let (addr, _fake) = oldstyle_fake(4096, |s, req| send_reply(s, Errno::ENOSPC, req.handle));
    write_cmd(addr, 0, 512)
        .write_stdin(vec![0u8; 512])
        .assert()
        .code(1)
        .stderr(format!(
            "flexnbd: cannot write to {addr}: WRITE of 512 bytes at offset 0 failed: \
             ENOSPC (no space left on device)\n"
        ));
}

#[test]
fn binary_read_into_a_closed_pipe_exits_0() {
    let Some(server) = nbdkit(&["memory", "64M"]) else {
        return;
    };
    let mut child = flexnbd_std()
        .args(["read", "-l", "127.0.0.1", "-p", &server.port().to_string()])
        .args(["-F", "0", "-S", &(64 * MIB).to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("first byte");
    drop(stdout);
    let out = finish(child, COMMAND_TIMEOUT);
    let (status, stderr) = (out.status, text(&out.stderr));
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn binary_write_and_read_of_nothing() {
    let Some(server) = nbdkit(&["memory", "1M"]) else {
        return;
    };
    write_cmd(server.addr(), MIB as u64, 0)
        .write_stdin("")
        .assert()
        .success();
    read_cmd(server.addr(), MIB as u64, 0)
        .assert()
        .success()
        .stdout("");
}

#[test]
fn reply_magic_constants_match_the_spec() {
    // Guards the fakes above, which build some bytes by hand.
    assert_eq!(NBD_INIT_PASSWD.to_be_bytes(), *b"NBDMAGIC");
    assert_eq!(NBD_OPTS_MAGIC.to_be_bytes(), *b"IHAVEOPT");
}
