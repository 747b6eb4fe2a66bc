//! Tests of the helpers themselves, run against stand-in processes (`sleep`,
//! `sh`) and in-process sockets, so they do not depend on any subcommand.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use super::daemon::{is_addr_in_use, logged_addr};
use super::*;

#[test]
fn pattern_is_deterministic_and_seeded() {
    assert_eq!(pattern(0, 1), Vec::<u8>::new());
    assert_eq!(pattern(13, 7), pattern(13, 7));
    assert_ne!(pattern(64, 1), pattern(64, 2));
    // A longer pattern extends a shorter one with the same seed.
    assert_eq!(pattern(4096, 3)[..100], pattern(100, 3)[..]);
    let p = pattern(1 << 16, 9);
    assert_eq!(p.len(), 1 << 16);
    assert!(p.iter().any(|&b| b != 0));
}

#[test]
fn images_are_sparse_or_exact() {
    let env = TestEnv::new();
    let sparse = env.image("sparse.img", 8 << 20);
    let meta = sparse.metadata().expect("stat");
    assert_eq!(meta.len(), 8 << 20);
    assert_eq!(meta.blocks(), 0, "image() should not allocate blocks");

    let data = pattern(5000, 1);
    let exact = env.image_with("exact.img", &data);
    assert_same_bytes("image_with", &env.read(&exact), &data);
    assert!(env.sock_path().starts_with(env.path()));
}

#[test]
#[should_panic(expected = "first difference at offset 3")]
fn assert_same_bytes_reports_the_first_difference() {
    assert_same_bytes("demo", b"abcdef", b"abcXef");
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    // Usually still free; a clash here would only mean a very busy machine.
    let _ = TcpListener::bind(("127.0.0.1", port));
}

#[test]
fn refusing_port_refuses_and_cannot_be_taken() {
    let (_held, port) = env::refusing_port();
    let err = std::net::TcpStream::connect(("127.0.0.1", port)).expect_err("connected");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(TcpListener::bind(("127.0.0.1", port)).is_err());
}

#[test]
fn logged_port_and_addr_in_use_are_recognised() {
    let line = "8697814:I:15606 main disk.img src/net.rs:148: Bound to 127.0.0.1 port 4777\n";
    assert_eq!(
        logged_addr(&format!("noise\n{line}")),
        Some("127.0.0.1:4777".parse().expect("addr"))
    );
    assert_eq!(
        logged_addr("1:I:1 main x f.rs:1: Bound to [::1] port 99."),
        Some("[::1]:99".parse().expect("addr"))
    );
    assert_eq!(logged_addr("Bound to nowhere"), None);
    assert!(is_addr_in_use(
        "flexnbd: cannot bind 127.0.0.1:4777: Address already in use (os error 98)"
    ));
    assert!(!is_addr_in_use("flexnbd: cannot open disk.img"));
}

#[test]
fn have_tool_finds_programs_on_path() {
    assert!(have_tool("sh"));
    assert!(!have_tool("flexnbd-no-such-tool"));
}

#[test]
fn require_tool_skips_or_fails_in_ci() {
    let missing = std::panic::catch_unwind(|| require_tool("flexnbd-no-such-tool"));
    if in_ci() {
        assert!(missing.is_err(), "a missing tool must fail under CI=true");
    } else {
        assert!(!missing.expect("no panic outside CI"));
    }
    assert!(require_tool("sh"));
}

fn sleeper() -> Command {
    let mut cmd = Command::new("sleep");
    cmd.arg("30");
    cmd
}

#[test]
fn daemon_signal_and_wait_exit() {
    let mut d = Daemon::spawn(sleeper(), vec![]);
    d.wait_ready();
    assert!(d.is_running());
    d.signal(Signal::TERM);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(Signal::TERM.as_raw()));
    assert!(!d.is_running());
}

#[test]
fn daemon_is_killed_on_drop() {
    let d = Daemon::spawn(sleeper(), vec![]);
    let pid = rustix::process::Pid::from_raw(i32::try_from(d.pid()).expect("pid")).expect("pid");
    drop(d);
    // Reaped, so the PID is gone (not even a zombie).
    assert!(rustix::process::test_kill_process(pid).is_err());
}

#[test]
fn daemon_ready_on_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut d = Daemon::spawn(sleeper(), vec![Ready::Tcp(addr)]);
    d.wait_ready();
    assert_eq!(d.addr(), addr);
    assert_eq!(d.uri(), format!("nbd://127.0.0.1:{}", addr.port()));
}

#[test]
fn daemon_ready_on_logged_port() {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "sleep 0.1; echo '1:I:1 main d.img src/x.rs:1: Bound to 127.0.0.1 port 4242' >&2; sleep 30",
    ]);
    let mut d = Daemon::spawn(cmd, vec![Ready::LoggedPort]);
    d.wait_ready();
    assert_eq!(d.addr(), SocketAddr::from(([127, 0, 0, 1], 4242)));
    assert!(d.stderr().contains("Bound to"));
}

#[test]
fn daemon_ready_on_sock_ignores_a_stale_socket_file() {
    let env = TestEnv::new();
    let sock = env.sock_path();
    drop(UnixListener::bind(&sock).expect("bind")); // leaves a file nobody listens on
    let mut d = Daemon::spawn(sleeper(), vec![Ready::Sock(sock.clone())]);
    let err = d
        .try_wait_ready(Duration::from_millis(200))
        .expect_err("a stale socket is not ready");
    assert!(matches!(err, StartError::TimedOut { .. }), "{err}");

    // A live listener that answers like a control socket is.
    std::fs::remove_file(&sock).expect("unlink");
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut lines = BufReader::new(&stream).lines();
        let first = lines.next().expect("a line").expect("read");
        (&stream).write_all(b"0: ok\n").expect("reply");
        first
    });
    let mut d = Daemon::spawn(sleeper(), vec![Ready::Sock(sock.clone())]);
    d.wait_ready();
    assert_eq!(d.sock(), sock);
    assert_eq!(server.join().expect("server thread"), "status");
}

#[test]
fn daemon_that_exits_early_reports_status_and_stderr() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "echo boom >&2; exit 3"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let started = Instant::now();
    let mut d = Daemon::spawn(cmd, vec![Ready::Tcp(addr)]);
    match d.try_wait_ready(Duration::from_secs(10)) {
        Err(StartError::Exited { status, stderr }) => {
            assert_eq!(status.code(), Some(3));
            assert_eq!(stderr, "boom\n");
        }
        other => panic!("expected an early exit, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn control_sends_lines_and_returns_the_reply() {
    let env = TestEnv::new();
    let sock = env.sock_path();
    let listener = UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut request = Vec::new();
        for line in BufReader::new(&stream).lines() {
            let line = line.expect("read");
            if line.is_empty() {
                break;
            }
            request.push(line);
        }
        (&stream).write_all(b"0: updated\n").expect("reply");
        request
    });
    assert_eq!(
        control(&sock, "acl", &["127.0.0.1", "10.0.0.0/8"]),
        "0: updated\n"
    );
    assert_eq!(
        server.join().expect("server thread"),
        ["acl", "127.0.0.1", "10.0.0.0/8"]
    );
}

#[test]
fn status_pairs_come_from_a_reply_a_line_or_a_transcript() {
    let pairs = |text| control::status_pairs(text);
    let want = vec![
        ("pid".to_owned(), "7".to_owned()),
        ("size".to_owned(), "512".to_owned()),
    ];
    assert_eq!(pairs("0: pid=7 size=512 \n"), want);
    assert_eq!(pairs("pid=7 size=512 \n"), want);
    assert_eq!(pairs("0 | pid=7 size=512 \n | "), want);
    assert!(pairs("10: unknown command\n").is_empty());
}

#[test]
fn queued_connections_counts_the_backlog() {
    let env = TestEnv::new();
    let sock = env.sock_path();
    let listener = UnixListener::bind(&sock).expect("bind");
    assert_eq!(control::queued_connections(&sock), 0);
    let first = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    let _second = std::os::unix::net::UnixStream::connect(&sock).expect("connect");
    assert_eq!(control::queued_connections(&sock), 2);
    let accepted = listener.accept().expect("accept");
    assert_eq!(control::queued_connections(&sock), 1);
    drop((first, accepted));
}

#[test]
fn flexnbd_command_has_a_clean_environment() {
    let cmd = flexnbd_std();
    let removed: Vec<_> = cmd
        .get_envs()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.to_string_lossy().into_owned())
        .collect();
    assert!(removed.iter().any(|k| k == "COLUMNS"), "{removed:?}");
    assert_eq!(cmd.get_program(), flexnbd_path());
}

#[test]
fn serve_builder_command_line() {
    let cmd = Daemon::serve("/tmp/disk.img")
        .sock("/tmp/ctl.sock")
        .arg("--oldstyle")
        .args(["-d", "10.0.0.0/8"])
        .command(4777);
    let args: Vec<_> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let expected =
        "serve -l 127.0.0.1 -p 4777 -f /tmp/disk.img -s /tmp/ctl.sock --oldstyle -d 10.0.0.0/8";
    assert_eq!(args, expected.split(' ').collect::<Vec<_>>());
    // -p 0 adds -v so the daemon logs the port it bound, unless already verbose.
    let logged = Daemon::serve("d.img").port(0).command(0);
    assert!(logged.get_args().any(|a| a == "-v"));
    let verbose = Daemon::serve("d.img").port(0).arg("-vv").command(0);
    assert_eq!(
        verbose
            .get_args()
            .filter(|a| a.to_string_lossy().starts_with("-v"))
            .count(),
        1
    );
}
