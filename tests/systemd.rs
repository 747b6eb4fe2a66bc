//! systemd integration: socket activation through `systemd-socket-activate`
//! (Debian's `systemd` package), the notifications a unit sees on a
//! `NOTIFY_SOCKET` the test owns, `--pid-file`, journald log lines, and
//! the one line every server exit prints.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flexnbd::proto::types::Errno;

use crate::support::MIB;
use crate::support::commands::mirror_wait_ok;
use crate::support::daemon::EXIT_TIMEOUT;
use crate::support::wire::{Client, Handshake};
use crate::support::{
    Daemon, DaemonBuilder, Signal, TestEnv, flexnbd, flexnbd_path, flexnbd_std, free_port, pattern,
    require_tool, text, wait_until,
};

/// How long a notification may take to arrive.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(20);
const ACTIVATE: &str = "systemd-socket-activate";

/// The service manager's end of `NOTIFY_SOCKET`: a datagram socket in the test's dir.
struct Notify {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl Notify {
    fn new(env: &TestEnv) -> Notify {
        let path = env.child("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notify {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits for a datagram with a line starting with `prefix`; returns that line.
    #[track_caller]
    fn expect(&mut self, prefix: &str) -> String {
        if let Some(line) = self.find(prefix) {
            return line;
        }
        let deadline = Instant::now() + NOTIFY_TIMEOUT;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no {prefix:?} within {NOTIFY_TIMEOUT:?}; seen {:?}",
                self.seen
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen.push(text(&buf[..n]));
                if let Some(line) = self.find(prefix) {
                    return line;
                }
            }
        }
    }

    fn find(&self, prefix: &str) -> Option<String> {
        self.seen
            .iter()
            .flat_map(|d| d.lines())
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    }
}

/// A temp dir with a 1 MiB `disk.img`, or `None` (the test skips) without
/// `systemd-socket-activate`.
fn activation_env() -> Option<(TestEnv, PathBuf)> {
    if !require_tool(ACTIVATE) {
        return None;
    }
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    Some((env, disk))
}

/// `systemd-socket-activate -l LISTEN -E NOTIFY_SOCKET=... flexnbd ARGS`
/// (`udp:ADDR` passes a datagram socket), once it listens. flexnbd starts
/// at the first connection, as under a .socket unit.
fn activate(listen: &str, notify: Option<&Path>, args: &[&str]) -> Daemon {
    let mut cmd = Command::new(ACTIVATE);
    if listen.starts_with("udp:") {
        cmd.arg("--datagram");
    }
    cmd.arg("-l").arg(listen.trim_start_matches("udp:"));
    if let Some(path) = notify {
        cmd.arg("-E")
            .arg(format!("NOTIFY_SOCKET={}", path.display()));
    }
    cmd.arg(flexnbd_path()).args(args);
    let d = Daemon::spawn(cmd, Vec::new());
    wait_until("systemd-socket-activate listening", EXIT_TIMEOUT, || {
        d.stderr().contains("Listening on")
    });
    d
}

fn pid_in(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim_end().parse().ok()
}

#[test]
fn socket_activated_serve_answers_on_the_passed_socket_and_notifies() {
    let Some((env, disk)) = activation_env() else {
        return;
    };
    let sock = env.sock_path();
    let pid_file = env.child("flexnbd.pid");
    let mut notify = Notify::new(&env);
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let args = [
        "serve",
        "-f",
        disk.to_str().unwrap(),
        "-s",
        sock.to_str().unwrap(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        "-v",
    ];
    let mut d = activate(&addr.to_string(), Some(&notify.path), &args);

    // The first connection starts flexnbd, which serves it from fd 3.
    let mut client = Client::connect(addr, Handshake::Go);
    let data = pattern(64 << 10, 7);
    assert_eq!(client.write_reply(1, 4096, &data), Errno::OK);
    assert_eq!(client.read(2, 4096, data.len() as u32), data);

    let ready = notify.expect("READY=1");
    assert_eq!(ready, "READY=1");
    assert!(sock.exists(), "READY=1 before the control socket");
    assert_eq!(
        notify.expect("STATUS="),
        format!("STATUS=serving {}", disk.display())
    );
    // systemd-socket-activate execs flexnbd: the same process.
    assert_eq!(pid_in(&pid_file), Some(d.pid()), "pid file");
    let log = d.stderr();
    assert!(log.contains("socket-activated listener on fd 3"), "{log}");
    assert!(!log.contains("Bound to"), "bound -l/-p itself: {log}");
    client.disconnect();

    d.signal(Signal::TERM);
    let status = d.wait_exit(EXIT_TIMEOUT);
    notify.expect("STOPPING=1");
    let log = d.stderr();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains(": stopped by SIGTERM"), "{log}");
    assert!(!pid_file.exists(), "pid file left behind");
}

#[test]
fn socket_activated_listen_takes_a_unix_socket_and_leaves_it_to_systemd() {
    let Some((env, disk)) = activation_env() else {
        return;
    };
    let path = env.child("nbd.sock");
    let mut d = activate(
        path.to_str().unwrap(),
        None,
        &["listen", "-f", disk.to_str().unwrap()],
    );
    // The first connection starts flexnbd, which greets it.
    let s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(NOTIFY_TIMEOUT)).unwrap();
    let mut greeting = Vec::new();
    (&s).take(8).read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"NBDMAGIC");
    drop(s);

    // Stopped before any migration arrived: a failure, and it says so.
    d.signal(Signal::TERM);
    let status = d.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(1));
    let log = d.stderr();
    assert!(
        log.contains("stopped by SIGTERM before the migration completed"),
        "{log}"
    );
    // The socket file belongs to the .socket unit, which outlives the service.
    assert!(path.exists(), "the activated socket's file was removed");
}

#[test]
fn a_passed_socket_that_is_not_a_stream_listener_is_refused_in_one_line() {
    let Some((_env, disk)) = activation_env() else {
        return;
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // A datagram socket: flexnbd starts at the first datagram.
    let mut d = activate(
        &format!("udp:{addr}"),
        None,
        &["serve", "-f", disk.to_str().unwrap()],
    );
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .send_to(b"x", addr)
        .unwrap();
    let status = d.wait_exit(EXIT_TIMEOUT);
    assert_eq!(status.code(), Some(1));
    let log = d.stderr();
    let ours: Vec<&str> = log.lines().filter(|l| l.starts_with("flexnbd:")).collect();
    assert_eq!(
        ours,
        [
            "flexnbd: socket activation: fd 3 is not a TCP or UNIX stream socket (use ListenStream= in the .socket unit)"
        ],
        "{log}"
    );
}

#[test]
fn listen_fds_for_another_process_is_not_activation() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let out = flexnbd()
        .args(["serve", "-f", disk.to_str().unwrap()])
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "flexnbd: --addr is required: LISTEN_FDS is set but LISTEN_PID is not this process\n"
    );
}

#[test]
fn migration_progress_goes_to_systemd_as_status_lines() {
    let env = TestEnv::new();
    let src = env.image_with("src.img", &pattern(32 * MIB as usize, 3));
    let dst = env.image("dst.img", 32 * MIB);
    let mut notify = Notify::new(&env);
    let sock = env.sock_path();
    let _source = Daemon::serve(&src)
        .sock(&sock)
        .env("NOTIFY_SOCKET", &notify.path)
        .start();
    notify.expect("READY=1");
    let dest = DaemonBuilder::new("listen", &dst).start();
    let port = dest.port().to_string();
    // 1 MiB/s: half a minute, so several one-second STATUS lines.
    flexnbd()
        .args(["mirror", "-s", sock.to_str().unwrap(), "-l", "127.0.0.1"])
        .args(["-p", &port, "-m", "1048576"])
        .assert()
        .success();
    let line = notify.expect("STATUS=migrating");
    assert!(line.contains(" done, ") && line.contains("/s"), "{line}");
    flexnbd()
        .args(["break", "-s", sock.to_str().unwrap()])
        .assert()
        .success();
    let idle = format!("STATUS=serving {}; last migration", src.display());
    assert_eq!(notify.expect(&idle), format!("{idle} stopped"));
}

/// `listen --serve-after-handover` tells systemd it waits for a migration,
/// then, once control arrived, that it serves the file.
#[test]
fn a_listen_that_serves_after_the_handover_says_so_to_systemd() {
    let env = TestEnv::new();
    let src = env.image_with("src.img", &pattern(4 * MIB as usize, 4));
    let dst = env.image("dst.img", 4 * MIB);
    let mut notify = Notify::new(&env);
    let sock = env.sock_path();
    let mut source = Daemon::serve(&src).sock(&sock).start();
    let mut dest = DaemonBuilder::new("listen", &dst)
        .sock(env.sock_path_named("dest.sock"))
        .arg("--serve-after-handover")
        .env("NOTIFY_SOCKET", &notify.path)
        .start();
    notify.expect("READY=1");
    assert_eq!(
        notify.expect("STATUS=waiting"),
        format!("STATUS=waiting for a migration into {}", dst.display())
    );
    mirror_wait_ok(&mut source, &format!("nbd://127.0.0.1:{}", dest.port()));
    assert_eq!(
        notify.expect("STATUS=serving"),
        format!("STATUS=serving {}", dst.display())
    );
    assert!(dest.stop().success());
}

#[test]
fn pid_file_is_written_once_serving_and_removed_on_exit() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let pid_file = env.child("serve.pid");
    let mut d = Daemon::serve(&disk)
        .sock(env.sock_path())
        .args(["--pid-file", pid_file.to_str().unwrap()])
        .start();
    // Written just after the control socket appears.
    wait_until("the pid file", EXIT_TIMEOUT, || {
        pid_in(&pid_file) == Some(d.pid())
    });
    let status = d.stop();
    assert!(
        status.success() && !pid_file.exists(),
        "{status}: pid file left behind"
    );
}

#[test]
fn journal_stream_stderr_gets_priority_prefixes_and_no_time() {
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let log_path = env.child("stderr.log");
    let log = File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let child = flexnbd_std()
        .args(["listen", "-l", "127.0.0.1", "-p", "0", "-v"])
        .arg("-f")
        .arg(&disk)
        .arg("-s")
        .arg(env.sock_path())
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&log_path).unwrap();
    // The control socket comes after the signal handlers: SIGTERM is ours then.
    wait_until("the control socket", EXIT_TIMEOUT, || {
        read().contains("control socket listening")
    });
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap(),
        Signal::TERM,
    )
    .unwrap();
    let out = crate::support::finish(child, EXIT_TIMEOUT);
    assert_eq!(out.status.code(), Some(1));
    let log = read();
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "<6>main {}: Bound to 127.0.0.1 port ",
            disk.display()
        )),
        "{log}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("<3>main ")
            && last.contains("stopped by SIGTERM before the migration completed"),
        "{log}"
    );
    assert!(!log.contains("Z "), "a timestamp under the journal: {log}");
}
