//! The `flexnbd serve` process as an operator sees it: signals (and the
//! requests in flight when one comes), start-up errors, a read-only export,
//! its log lines, and its bytes as interop tools and flexnbd-c's clients see
//! them.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use flexnbd::proto::types::{Cmd, Errno};

use crate::support::commands::{nbd_write, one_error_line, read_ok, serve_once};
use crate::support::daemon::EXIT_TIMEOUT;
use crate::support::daemon::serve_image;
use crate::support::wire::{Client, Handshake};
use crate::support::{
    self, Daemon, Signal, Style, TestEnv, assert_same_bytes, pattern, read_range, require_tool,
    text, tool,
};
use crate::support::{KIB, MIB};

/// How long a socket read or write in these tests may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// 1. Signals

#[test]
fn sigterm_sigint_and_sigquit_stop_serve_cleanly() {
    for sig in [Signal::TERM, Signal::INT, Signal::QUIT] {
        let env = TestEnv::new();
        let disk = env.image("disk.img", MIB);
        let sock = env.sock_path();
        let mut d = Daemon::serve_in(&env, &disk, Style::Newstyle, &[]);
        let addr = d.addr();
        d.signal(sig);
        let status = d.wait_exit(EXIT_TIMEOUT);
        assert_eq!(status.code(), Some(0), "{sig:?}: {status}");
        assert!(!sock.exists(), "{sig:?}: control socket left behind");
        assert!(
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).is_err(),
            "{sig:?}: the port still accepts"
        );
        // One line says why, at info level: nothing else went wrong.
        let log = d.stderr();
        assert!(
            log.lines().count() == 1 && log.contains(" I ") && log.contains(": stopped by SIG"),
            "{sig:?}: {log}"
        );
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
        let (_env, disk, mut d) = serve_image(4 * MIB, style, &[]);
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
            &read_range(&disk, offset(0), expected.len() as u64),
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
    let (_env, _disk, mut d) = serve_image(32 * MIB, Style::Oldstyle, &[]);
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
// 2. Start-up errors

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
        let d = Daemon::serve_in(&env, &disk, style, &["-r"]);
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
// 3. The bytes interop tools see; logging

#[test]
fn nbdinfo_and_qemu_img_see_an_oldstyle_daemon() {
    if !require_tool("nbdinfo") || !require_tool("qemu-img") {
        return;
    }
    let (_env, _disk, d) = serve_image(3 * MIB + 512, Style::Oldstyle, &[]);
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
    let (_env, _disk, d) = serve_image(40 * MIB + 100, Style::Oldstyle, &[]);
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
    let mut d = Daemon::serve(&disk)
        .port(0)
        .sock(env.sock_path())
        .args(["--log-format", "c"])
        .start();
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

// ---------------------------------------------------------------------------
// 4. Large READs both ways

/// Large READs come back the same whether they are copied through a buffer
/// (to a client on this machine, what every test here is) or sent with
/// `sendfile` (to a remote client; `FLEXNBD_TEST_SENDFILE=1` asks a debug
/// build for it on loopback too): data, a hole read as zeroes, pipelined.
#[test]
fn large_reads_are_the_same_copied_or_with_sendfile() {
    const SIZE: u64 = 4 * MIB;
    let data = pattern(2 * MIB as usize, 21);
    let mut replies = Vec::new();
    for sendfile in [false, true] {
        let env = TestEnv::new();
        let disk = env.image("disk.img", SIZE);
        let mut builder = support::DaemonBuilder::new("serve", &disk);
        if sendfile {
            builder = builder.env("FLEXNBD_TEST_SENDFILE", "1");
        }
        let mut d = builder.start();
        let mut c = Client::connect(d.addr(), Handshake::Go);
        c.write(1, 0, &data);
        c.expect_reply(1, Errno::OK);
        // Pipelined: 1 MiB of data, 1 MiB over data then the hole, 256 KiB of hole.
        let reads = [(2, 0, MIB), (3, MIB + MIB / 2, MIB), (4, 3 * MIB, MIB / 4)];
        for &(handle, offset, len) in &reads {
            c.request(Cmd::READ, handle, offset, len as u32);
        }
        let mut got = Vec::new();
        for &(handle, offset, len) in &reads {
            c.expect_reply(handle, Errno::OK);
            let mut buf = vec![0u8; len as usize];
            c.s.read_exact(&mut buf).unwrap();
            let mut want = vec![0u8; len as usize];
            let end = (offset + len).min(data.len() as u64);
            if offset < end {
                want[..(end - offset) as usize]
                    .copy_from_slice(&data[offset as usize..end as usize]);
            }
            assert_same_bytes(&format!("READ {offset}+{len}"), &buf, &want);
            got.push(buf);
        }
        replies.push(got);
        drop(c);
        d.stop();
    }
    assert!(replies[0] == replies[1]);
}
