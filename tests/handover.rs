//! `listen --serve-after-handover`: once a migration hands control over, the
//! destination serves the file on the same listener and control socket, as
//! a `serve` would, instead of exiting.
//!
//! - The migrated file is served byte for byte to new clients (several at
//!   once), `status` answers as a serve's, a further `mirror` moves it on,
//!   and SIGTERM then ends it as a serve (exit 0).
//! - A client behind `flexnbd proxy`, writing and reading all the while,
//!   carries on with the destination after the handover: every write it
//!   had acknowledged is in the destination's file, and reads see them. The
//!   proxy's upstream is a "service address" (a relay here, a moved IP or a
//!   load balancer in production) that leads to whichever server listens.
//!   The longest pause between two replies is printed, not asserted
//!   (`bench/run --only handover-idle,handover-busy` measures it).
//!
//! Without the flag `listen` exits 0 at the handover, as the migration
//! tests check.

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flexnbd::client::{ConnectOptions, NbdClient};

use crate::support::commands::{read_ok, write_ok};
use crate::support::control::status;
use crate::support::daemon::proxy_command;
use crate::support::{
    self, Daemon, DaemonBuilder, MIB, Signal, TestEnv, flexnbd_std, status_value, wait_until,
};

/// How long a migration that should complete may take, in a debug build on a busy machine.
const MIGRATION_WITHIN: Duration = Duration::from_secs(90);
/// How long a process may take to exit when it should.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

/// `listen --serve-after-handover` on `file`, with a control socket.
fn serving_listen(file: &Path, sock: &Path) -> Daemon {
    DaemonBuilder::new("listen", file)
        .sock(sock)
        .arg("--serve-after-handover")
        .start()
}

/// A source serving a file of pattern data and a `listen
/// --serve-after-handover` on an empty one, both with control sockets.
struct Pair {
    env: TestEnv,
    data: Vec<u8>,
    dst: PathBuf,
    source_sock: PathBuf,
    dest_sock: PathBuf,
    source: Daemon,
    dest: Daemon,
}

impl Pair {
    /// `size` bytes of pattern `seed`; `extra` goes to both commands.
    fn start(size: u64, seed: u64, extra: &[&str]) -> Pair {
        let env = TestEnv::new();
        let data = env.pattern(size as usize, seed);
        let src = env.image_with("source.img", &data);
        let dst = env.image("destination.img", size);
        let source_sock = env.sock_path_named("source.sock");
        let dest_sock = env.sock_path_named("dest.sock");
        let source = DaemonBuilder::new("serve", &src)
            .sock(&source_sock)
            .args(extra)
            .start();
        let dest = DaemonBuilder::new("listen", &dst)
            .sock(&dest_sock)
            .arg("--serve-after-handover")
            .args(extra)
            .start();
        Pair {
            env,
            data,
            dst,
            source_sock,
            dest_sock,
            source,
            dest,
        }
    }

    /// Waits for the source to exit 0 and the destination to have control.
    fn handed_over(&mut self, within: Duration) {
        let code = self.source.wait_exit(within).code();
        assert_eq!(code, Some(0), "{}", self.source.stderr());
        wait_until("the destination has control", EXIT_WITHIN, || {
            status_value(&self.dest_sock, "has_control") == "true"
        });
    }
}

/// `flexnbd mirror -s SOCK -l 127.0.0.1 -p PORT EXTRA...`, asserting it exits 0.
#[track_caller]
fn mirror(sock: &Path, port: u16, extra: &[&str]) {
    let mut args = vec![
        "mirror".to_owned(),
        "-s".to_owned(),
        sock.to_str().unwrap().to_owned(),
        "-l".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let child = flexnbd_std()
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = support::finish(child, MIGRATION_WITHIN);
    support::commands::assert_success("mirror", &out);
}

/// Waits for `d` to exit with `code`, its log saying `says`.
#[track_caller]
fn exits(d: &mut Daemon, code: i32, says: &str) {
    let status = d.wait_exit(EXIT_WITHIN);
    let stderr = d.stderr();
    assert_eq!(status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(says), "{stderr}");
}

/// One value of `status`, as a pair, for assertions that show the key.
fn key(sock: &Path, k: &str) -> (String, String) {
    (k.to_owned(), status_value(sock, k))
}

#[test]
fn serve_after_handover_serves_the_migrated_file_on_the_same_address() {
    const SIZE: u64 = 4 * MIB;
    let mut p = Pair::start(SIZE, 14, &[]);
    assert_eq!(
        key(&p.dest_sock, "has_control"),
        ("has_control".into(), "false".into())
    );
    mirror(&p.source_sock, p.dest.port(), &["--wait", "--no-progress"]);
    p.handed_over(EXIT_WITHIN);
    let Pair {
        env,
        data,
        dest_sock,
        mut dest,
        ..
    } = p;
    assert!(dest.is_running(), "listen exited: {}", dest.stderr());

    // The same address serves the migrated file, byte for byte.
    assert!(
        read_ok(&dest, 0, SIZE) == data,
        "the file read back differs"
    );
    // `status` answers as a serve's, once the reader's connection is
    // counted out (its thread ends just after the client has gone).
    wait_until("the reader counted out", EXIT_WITHIN, || {
        status(&dest_sock)
            .iter()
            .any(|(k, v)| k == "num_clients" && v == "0")
    });
    let pairs = status(&dest_sock);
    for (k, v) in [
        ("has_control", "true"),
        ("is_mirroring", "false"),
        ("clients_allowed", "true"),
        ("num_clients", "0"),
    ] {
        assert!(
            pairs.iter().any(|(pk, pv)| pk == k && pv == v),
            "{k}={v} not in {pairs:?}"
        );
    }
    // Several clients at once, as a serve (listen takes one at a time).
    let opts = ConnectOptions::default();
    let mut a = NbdClient::connect(dest.addr(), &opts).unwrap();
    let mut b = NbdClient::connect(dest.addr(), &opts).unwrap();
    let mut buf = vec![0; 4096];
    a.read_at(0, &mut buf).unwrap();
    assert!(buf == data[..4096]);
    b.write_at(4096, b"written after the handover", false)
        .unwrap();
    b.flush().unwrap();
    a.disconnect().unwrap();
    b.disconnect().unwrap();
    write_ok(&dest, 8192, b"and by a third client");
    // Disconnecting clients do not stop it.
    assert!(dest.is_running(), "listen exited: {}", dest.stderr());

    // A further migration moves it on, as from a serve.
    let third = env.image("third.img", SIZE);
    let mut onward = DaemonBuilder::new("listen", &third).start();
    mirror(&dest_sock, onward.port(), &["--wait", "--no-progress"]);
    exits(&mut dest, 0, "was migrated away");
    exits(&mut onward, 0, "completed: it has control");
    let mut expected = data;
    expected[4096..4096 + 26].copy_from_slice(b"written after the handover");
    expected[8192..8192 + 21].copy_from_slice(b"and by a third client");
    assert!(env.read(&third) == expected, "the onward copy differs");
}

/// `--max-clients` bounds the clients once it serves: beyond it a
/// connection is closed at once, and a freed slot takes the next one.
#[test]
fn serve_after_handover_keeps_to_max_clients() {
    let mut p = Pair::start(MIB, 16, &["--max-clients", "1"]);
    mirror(&p.source_sock, p.dest.port(), &["--wait", "--no-progress"]);
    p.handed_over(EXIT_WITHIN);
    let opts = ConnectOptions::default();
    let first = NbdClient::connect(p.dest.addr(), &opts).unwrap();
    assert!(
        NbdClient::connect(p.dest.addr(), &opts).is_err(),
        "a second client was served beyond --max-clients 1"
    );
    first.disconnect().unwrap();
    wait_until("the slot to be free", EXIT_WITHIN, || {
        key(&p.dest_sock, "num_clients").1 == "0"
    });
    let mut again = NbdClient::connect(p.dest.addr(), &opts).unwrap();
    let mut buf = vec![0; 512];
    again.read_at(0, &mut buf).unwrap();
    assert!(buf == p.data[..512]);
}

#[test]
fn serve_after_handover_ends_as_a_serve_on_sigterm() {
    // Old-style, as for a C source: writes synced one by one until control.
    let mut p = Pair::start(MIB, 3, &["--oldstyle"]);
    mirror(&p.source_sock, p.dest.port(), &["--wait", "--no-progress"]);
    p.handed_over(EXIT_WITHIN);
    assert!(p.env.read(&p.dst) == p.data);
    let mut dest = p.dest;
    dest.signal(Signal::TERM);
    exits(&mut dest, 0, "stopped by SIGTERM");
}

#[test]
fn signal_before_the_handover_still_fails_with_the_flag() {
    let env = TestEnv::new();
    let dst = env.image("destination.img", MIB);
    let mut dest = serving_listen(&dst, &env.sock_path_named("dest.sock"));
    dest.signal(Signal::TERM);
    exits(&mut dest, 1, "incomplete copy");
}

// ---------------------------------------------------------------------------
// Behind the proxy.

/// A "service address": each connection goes to `source` while it accepts
/// connections, and to `dest` once it does not. Counts the connections
/// that went to `dest`.
struct Relay {
    port: u16,
    to_dest: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(source: SocketAddr, dest: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let to_dest = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (to_dest.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let upstream = match TcpStream::connect(source) {
                    Ok(s) => s,
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        match TcpStream::connect(dest) {
                            Ok(s) => {
                                count.fetch_add(1, Ordering::SeqCst);
                                s
                            }
                            Err(_) => continue,
                        }
                    }
                    Err(_) => continue,
                };
                pipe(client, upstream);
            }
        });
        Relay {
            port,
            to_dest,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Copies bytes both ways between `a` and `b` until either side closes.
fn pipe(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        let _ = from.set_nodelay(true);
        std::thread::spawn(move || {
            let mut buf = vec![0; 256 << 10];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(Shutdown::Both);
            let _ = from.shutdown(Shutdown::Both);
        });
    }
}

/// What the client behind the proxy did: its model of the file, how many
/// requests it completed, and the longest pause between two replies.
struct Driven {
    model: Vec<u8>,
    ops: u64,
    longest_pause: Duration,
}

/// Writes 4 KiB blocks at QD1 through `proxy`, reading back every fourth,
/// until `stop`; counts completed requests in `done`.
fn drive(proxy: SocketAddr, mut model: Vec<u8>, stop: &AtomicBool, done: &AtomicU64) -> Driven {
    const BLOCK: usize = 4096;
    let mut client = NbdClient::connect(proxy, &ConnectOptions::default()).unwrap();
    let blocks = (model.len() / BLOCK) as u64;
    let mut last = Instant::now();
    let mut longest_pause = Duration::ZERO;
    let mut ops = 0u64;
    let mut buf = vec![0; BLOCK];
    while !stop.load(Ordering::SeqCst) {
        // A block from a scrambled sequence; its content names the op.
        let block = (ops.wrapping_mul(0x9e37_79b9) % blocks) as usize;
        let at = block * BLOCK;
        if ops % 4 == 3 {
            client.read_at(at as u64, &mut buf).unwrap();
            assert!(
                buf == model[at..at + BLOCK],
                "read of block {block} differs"
            );
        } else {
            let data = support::pattern(BLOCK, ops);
            client.write_at(at as u64, &data, false).unwrap();
            model[at..at + BLOCK].copy_from_slice(&data);
        }
        ops += 1;
        done.store(ops, Ordering::SeqCst);
        let now = Instant::now();
        longest_pause = longest_pause.max(now - last);
        last = now;
    }
    client.flush().unwrap();
    client.disconnect().unwrap();
    Driven {
        model,
        ops,
        longest_pause,
    }
}

#[test]
fn a_client_behind_the_proxy_carries_on_with_the_destination() {
    let mut p = Pair::start(8 * MIB, 7, &[]);
    let (source, dest) = (&p.source, &p.dest);
    let relay = Relay::start(source.addr(), dest.addr());
    let mut proxy = Daemon::start_logged_port(proxy_command(relay.port, &[]));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, done, addr) = (stop.clone(), done.clone(), proxy.addr());
        let data = p.data.clone();
        std::thread::spawn(move || drive(addr, data, &stop, &done))
    };
    let ops_now = || done.load(Ordering::SeqCst);
    wait_until("the client's first requests", EXIT_WITHIN, || {
        ops_now() >= 50
    });
    mirror(&p.source_sock, dest.port(), &[]);
    p.handed_over(MIGRATION_WITHIN);
    // The client goes on, served by the destination.
    let after_handover = ops_now();
    wait_until(
        "the client's requests after the handover",
        MIGRATION_WITHIN,
        || ops_now() >= after_handover + 200,
    );
    stop.store(true, Ordering::SeqCst);
    let driven = client.join().unwrap();
    assert!(
        relay.to_dest.load(Ordering::SeqCst) >= 1,
        "the proxy never reached the destination"
    );
    eprintln!(
        "{} requests; longest pause between two replies {:?}",
        driven.ops, driven.longest_pause
    );
    assert_eq!(proxy.stop().code(), Some(0), "{}", proxy.stderr());
    assert_eq!(p.dest.stop().code(), Some(0), "{}", p.dest.stderr());
    assert!(
        p.env.read(&p.dst) == driven.model,
        "the destination file lacks acknowledged writes"
    );
}
