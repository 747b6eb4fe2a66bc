//! The control socket of a real `flexnbd serve`, as an operator or a script
//! sees it: the `status` and `acl` commands (and the limits they show at
//! the door: `--default-deny`, `--max-clients`), the socket's lifecycle,
//! and malformed requests.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use crate::support::MIB;
use crate::support::commands::{
    assert_success, one_error_line, read_ok, run, serve_once, write_ok,
};
use crate::support::control::wait_num_clients;
use crate::support::daemon::logged_addr;
use crate::support::daemon::serve_image;
use crate::support::wire::{Client, Handshake};
use crate::support::{Daemon, Style, TestEnv, control_raw, status_value, text};

/// How long a socket read or write in these tests may block.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for the daemon to reach a state (clients gone, ...).
const WAIT: Duration = Duration::from_secs(10);

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
    // 1 MiB and 300 bytes: the export is 1 MiB.
    let (env, _disk, d) = serve_image(MIB + 300, Style::Newstyle, &[]);
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
    let (env, _disk, d) = serve_image(3 * MIB, Style::Oldstyle, &[]);
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
        let (env, _disk, d) = serve_image(MIB, style, &[]);
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
    let (env, _disk, d) = serve_image(MIB, Style::Newstyle, &[]);
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
        let (env, _disk, d) = serve_image(MIB, style, &["127.0.0.1"]);
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
    let (env, _disk, d) = serve_image(MIB, Style::Newstyle, &["-d"]);
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
    let (env, _disk, d) = serve_image(MIB, Style::Oldstyle, &["--max-clients", "1"]);
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
    let (env, _disk, mut d) = serve_image(MIB, Style::Newstyle, &[]);
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
    let mut d = Daemon::serve_in(&env, &disk, Style::Newstyle, &[]);
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
    let out = serve_once(&disk, 0, &sock, &[]);
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
    let mut first = Daemon::serve_in(&env, &disk, Style::Newstyle, &[]);
    let inode = std::fs::metadata(&sock).unwrap().ino();

    let out = serve_once(&other, 0, &sock, &[]);
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
