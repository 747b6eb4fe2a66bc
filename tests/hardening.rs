//! What a hostile or broken client cannot do to the server: take it down
//! with a panic, keep a slot after one, or flood the log; and what bounds
//! the CPU a busy client makes the server spend polling for it.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use flexnbd::proto::types::{Cmd, CmdFlags, Errno};

use crate::support::wire::{Client, Handshake};
use crate::support::{Daemon, DaemonBuilder, TestEnv, wait_until};

const SIZE: u64 = 1 << 20;

/// A `mode` daemon over a fresh image with `env` set and a control socket; its address.
fn daemon_with_env(t: &TestEnv, mode: &str, env: &[(&str, &str)]) -> (Daemon, SocketAddr) {
    let file = t.image("disk.img", SIZE);
    start(env.iter().fold(
        DaemonBuilder::new(mode, &file).sock(t.sock_path()),
        |b, (k, v)| b.env(k, v),
    ))
}

/// `serve` over a fresh image of `size` bytes with a control socket and `args`.
fn serve_with(t: &TestEnv, size: u64, args: &[&str]) -> (Daemon, SocketAddr) {
    let file = t.image("disk.img", size);
    start(
        DaemonBuilder::new("serve", &file)
            .sock(t.sock_path())
            .args(args),
    )
}

/// Starts `builder`; the daemon and its NBD address.
fn start(builder: DaemonBuilder) -> (Daemon, SocketAddr) {
    let d = builder.start();
    let addr = d.addr();
    (d, addr)
}

/// Whether the fault points exist (debug builds): if not, says why the test skips.
fn panic_points() -> bool {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the panic points exist in debug builds only");
    }
    cfg!(debug_assertions)
}

/// A panic test's set-up: a `mode` daemon with the fault point `point`
/// armed at `at`; `None` (the test skips) where the points do not exist.
fn with_panic_point(mode: &str, point: &str, at: &str) -> Option<(TestEnv, Daemon, SocketAddr)> {
    if !panic_points() {
        return None;
    }
    let t = TestEnv::new();
    let (d, addr) = daemon_with_env(&t, mode, &[(point, at)]);
    Some((t, d, addr))
}

/// Waits until `d`'s `status` shows `n` clients.
#[track_caller]
fn wait_num_clients(d: &Daemon, n: u64) {
    crate::support::control::wait_num_clients(d.sock(), n);
}

/// A new client of `addr` writes `data` at `offset` and reads it back (the
/// server still serves); the client, still connected.
#[track_caller]
fn still_served(addr: SocketAddr, offset: u64, data: &[u8]) -> Client {
    let mut c = Client::connect(addr, Handshake::Go);
    c.write(1, offset, data);
    c.expect_reply(1, Errno::OK);
    let len = u32::try_from(data.len()).expect("a request's length");
    assert_eq!(c.read(2, offset, len), data);
    c
}

/// The `hogs` go, `c` disconnects, and `d` then counts no client.
#[track_caller]
fn all_leave<T>(d: &Daemon, hogs: Vec<T>, c: Client) {
    drop(hogs);
    c.disconnect();
    wait_num_clients(d, 0);
}

#[test]
fn a_panic_serving_a_request_closes_only_that_connection() {
    let Some((_t, d, addr)) = with_panic_point("serve", "FLEXNBD_TEST_PANIC_WORKER", "4096") else {
        return;
    };
    let mut other = Client::connect(addr, Handshake::Go);
    let mut victim = Client::connect(addr, Handshake::Go);
    // A FUA write always goes through the guarded path (never the inline fast paths).
    victim.send(Cmd::WRITE, CmdFlags::FUA, 1, 4096, 512, &[5u8; 512]);
    victim.assert_closed();
    // Everyone else is still served, and new clients too.
    assert_eq!(other.read(2, 0, 512), vec![0u8; 512]);
    let mut fresh = Client::connect(addr, Handshake::Go);
    fresh.write(3, 0, &[7u8; 512]);
    fresh.expect_reply(3, Errno::OK);
    assert_eq!(other.read(4, 0, 512), vec![7u8; 512]);
    drop(other);
    drop(fresh);
    wait_num_clients(&d, 0);
    assert!(
        d.stderr()
            .contains("internal error serving WRITE at 4096+512"),
        "{}",
        d.stderr()
    );
}

#[test]
fn a_panic_on_the_reading_thread_frees_the_listen_slot() {
    // `listen` takes one client at a time: a leaked slot would lock everyone out.
    let Some((_t, d, addr)) = with_panic_point("listen", "FLEXNBD_TEST_PANIC_READER", "8192")
    else {
        return;
    };
    for round in 0..3u64 {
        let mut c = Client::connect(addr, Handshake::Go);
        c.request(Cmd::READ, round, 8192, 512);
        c.assert_closed();
        wait_num_clients(&d, 0);
    }
    let mut c = Client::connect(addr, Handshake::Go);
    c.write(9, 0, &[1u8; 4096]);
    c.expect_reply(9, Errno::OK);
    assert!(d.stderr().contains("injected panic"), "{}", d.stderr());
}

#[test]
fn a_flood_of_bad_requests_logs_a_bounded_number_of_lines() {
    let t = TestEnv::new();
    let (d, addr) = daemon_with_env(&t, "serve", &[]);
    let mut c = Client::connect(addr, Handshake::Go);
    const BAD: u64 = 5000;
    let writer = {
        let mut s = c.s.try_clone().unwrap();
        std::thread::spawn(move || {
            for i in 0..BAD {
                // Out of range: each is refused with a warning.
                let h = crate::support::wire::header(Cmd::READ, CmdFlags(0), i, SIZE, 512);
                std::io::Write::write_all(&mut s, &h).unwrap();
            }
        })
    };
    for i in 0..BAD {
        c.expect_reply(i, Errno::EINVAL);
    }
    writer.join().unwrap();
    c.disconnect();
    wait_num_clients(&d, 0);
    let stderr = d.stderr();
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("out of range"))
        .count();
    assert!(
        (1..=40).contains(&warnings),
        "{warnings} out-of-range lines for {BAD} bad requests"
    );
    assert!(
        stderr.contains("more warning(s) about this client's requests were not logged")
            || stderr.contains("similar warning(s) not logged"),
        "no summary of the dropped warnings:\n{stderr}"
    );
}

#[test]
fn silent_connections_cannot_lock_a_real_client_out() {
    let t = TestEnv::new();
    let (d, addr) = daemon_with_env(&t, "serve", &[]);
    // As many silent connections as the server has client slots (1024 by
    // default): before, each took a slot until its handshake timed out.
    let silent: Vec<std::net::TcpStream> =
        (0..1024).map(|_| crate::support::wire::tcp(addr)).collect();
    let started = Instant::now();
    let c = still_served(addr, 0, &[9u8; 4096]);
    eprintln!(
        "a real client behind 1024 silent connections was served in {:?}",
        started.elapsed()
    );
    all_leave(&d, silent, c);
}

#[test]
fn handshake_limits_are_flags() {
    let t = TestEnv::new();
    let (d, addr) = serve_with(
        &t,
        SIZE,
        &[
            "--handshake-timeout",
            "300ms",
            "--max-clients-per-address",
            "2",
        ],
    );
    // A silent connection is closed after the handshake timeout.
    let mut silent = Client::new(crate::support::wire::tcp(addr));
    let mut hello = [0u8; 18];
    std::io::Read::read_exact(&mut silent.s, &mut hello).unwrap();
    silent.assert_closed();
    wait_num_clients(&d, 0);
    // Two connections from one address are served; a third is closed at once.
    let mut a = Client::connect(addr, Handshake::Go);
    let _b = Client::connect(addr, Handshake::Go);
    let mut third = Client::new(crate::support::wire::tcp(addr));
    third.assert_closed();
    assert_eq!(a.read(1, 0, 512), vec![0u8; 512]);
    assert!(
        d.stderr()
            .contains("connection(s) from that address already"),
        "{}",
        d.stderr()
    );
    for bad in ["0s", "soon"] {
        crate::support::flexnbd()
            .args(["serve", "-l", "127.0.0.1", "-p", "1", "-f", "disk.img"])
            .args(["--handshake-timeout", bad])
            .assert()
            .code(2);
    }
}

/// The server's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn stalled_32m_writes_hold_only_what_they_sent() {
    let t = TestEnv::new();
    let (d, addr) = serve_with(&t, 64 << 20, &["--max-clients", "2000"]);
    const CONNS: usize = 1024;
    const SENT: usize = 32 << 10;
    // Each declares a 32 MiB WRITE, sends 32 KiB of it, and stalls.
    let stalled: Vec<Client> = (0..CONNS)
        .map(|i| {
            let mut c = Client::connect(addr, Handshake::Go);
            c.send(
                Cmd::WRITE,
                CmdFlags(0),
                i as u64,
                0,
                32 << 20,
                &[0xAB; SENT],
            );
            c
        })
        .collect();
    // Another client is still served, reads and writes.
    let c = still_served(addr, 1 << 20, &[3u8; 1 << 20]);
    let rss = rss_bytes(d.pid());
    eprintln!(
        "RSS with {CONNS} connections stalled in a 32 MiB WRITE: {} MiB",
        rss >> 20
    );
    assert!(rss < 300 << 20, "RSS {} MiB", rss >> 20);
    all_leave(&d, stalled, c);
}

#[test]
fn a_client_stalled_mid_payload_is_dropped_after_the_stall_timeout() {
    let t = TestEnv::new();
    let (d, addr) = serve_with(&t, SIZE, &["--stall-timeout", "200ms", "-v"]);
    let mut c = Client::connect(addr, Handshake::Go);
    c.send(Cmd::WRITE, CmdFlags(0), 1, 0, 512 << 10, &[1u8; 1000]);
    c.assert_closed();
    wait_num_clients(&d, 0);
    assert!(
        d.stderr().contains("in the middle of a request's payload"),
        "{}",
        d.stderr()
    );
    // An idle client (between requests) is not affected by the stall timeout.
    let mut idle = Client::connect(addr, Handshake::Go);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(idle.read(2, 0, 512), vec![0u8; 512]);
}

/// A `mode` daemon on `file` with a control socket named `sock_name`; its port.
fn node(
    t: &TestEnv,
    mode: &str,
    file: &std::path::Path,
    sock_name: &str,
    args: &[&str],
) -> (Daemon, u16, std::path::PathBuf) {
    let sock = t.sock_path_named(sock_name);
    let (d, addr) = start(DaemonBuilder::new(mode, file).sock(&sock).args(args));
    (d, addr.port(), sock)
}

/// Ten clients write 8 KiB blocks as fast as they can and never read a
/// reply; a migration to `listen` must still hand over, bounded.
fn handover_with_clients_that_never_read(oldstyle: bool) {
    const FILE: u64 = 20 << 20;
    let t = TestEnv::new();
    let src = t.image_with("src.img", &crate::support::pattern(20 << 20, 7));
    let dst = t.image("dst.img", FILE);
    let style: &[&str] = if oldstyle {
        &["--oldstyle", "-v"]
    } else {
        &["-v"]
    };
    let (mut source, sport, ssock) = node(&t, "serve", &src, "src.sock", style);
    let (mut dest, dport, _) = node(&t, "listen", &dst, "dst.sock", style);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, sport));
    let handshake = if oldstyle {
        Handshake::Oldstyle
    } else {
        Handshake::Go
    };
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..10u8)
        .map(|w| {
            let mut c = Client::connect(addr, handshake);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let block = [w + 1; 8192];
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                    let offset = (i * 8192 * 10 + u64::from(w) * 8192) % FILE;
                    let h = crate::support::wire::header(Cmd::WRITE, CmdFlags(0), i, offset, 8192);
                    let sent = std::io::Write::write_all(&mut c.s, &h)
                        .and_then(|()| std::io::Write::write_all(&mut c.s, &block));
                    if sent.is_err() {
                        break; // closed by the handover
                    }
                    i += 1;
                }
                i
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200)); // writers are at full speed
    let started = Instant::now();
    let out = crate::support::flexnbd()
        .args(["mirror", "-l", "127.0.0.1", "-p"])
        .arg(dport.to_string())
        .arg("-s")
        .arg(&ssock)
        .arg("--wait")
        .timeout(Duration::from_secs(60))
        .output()
        .expect("mirror");
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let sent: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    assert!(
        out.status.success(),
        "mirror --wait: {:?}\n{}",
        out,
        source.stderr()
    );
    source.wait_exit(Duration::from_secs(30));
    dest.wait_exit(Duration::from_secs(30));
    let stderr = source.stderr();
    if std::env::var_os("SHOW_LOG").is_some() {
        eprintln!("{stderr}");
    }
    let wire: u64 = stderr
        .lines()
        .find_map(|l| {
            l.split("handover: ")
                .nth(1)?
                .split(" bytes sent")
                .next()?
                .parse()
                .ok()
        })
        .expect("no handover line");
    eprintln!(
        "oldstyle={oldstyle}: handover with 10 non-reading writers ({sent} writes sent) took {took:?}, {:.2} bytes per byte",
        wire as f64 / FILE as f64
    );
    assert_eq!(
        std::fs::read(&dst).expect("destination"),
        std::fs::read(&src).expect("source"),
        "destination differs from the source"
    );
}

#[test]
fn handover_with_oldstyle_clients_that_never_read_is_bounded() {
    handover_with_clients_that_never_read(true);
}

#[test]
fn handover_with_newstyle_clients_that_never_read_is_bounded() {
    handover_with_clients_that_never_read(false);
}

#[test]
fn a_panic_in_a_control_command_is_answered_and_the_socket_goes_on() {
    let Some((_t, d, addr)) = with_panic_point("serve", "FLEXNBD_TEST_PANIC_CONTROL", "acl") else {
        return;
    };
    let reply = crate::support::control(d.sock(), "acl", &["127.0.0.1"]);
    assert_eq!(reply, "1: internal error\n");
    for _ in 0..2 {
        let status = crate::support::control(d.sock(), "status", &[]);
        assert!(status.starts_with("0: pid="), "{status}");
    }
    let mut c = Client::connect(addr, Handshake::Go);
    assert_eq!(c.read(1, 0, 512), vec![0u8; 512]);
    assert!(
        d.stderr()
            .contains("internal error running control command 'acl'")
    );
}

#[test]
fn a_panic_in_the_mirror_leaves_the_server_serving_and_able_to_mirror_again() {
    if !panic_points() {
        return;
    }
    let t = TestEnv::new();
    let src = t.image_with("src.img", &crate::support::pattern(1 << 20, 3));
    let dst = t.image("dst.img", 1 << 20);
    let ssock = t.sock_path_named("src.sock");
    let (source, saddr) = start(
        DaemonBuilder::new("serve", &src)
            .sock(&ssock)
            .env("FLEXNBD_TEST_PANIC_MIRROR", "copy"),
    );
    let (_dest, dport, _) = node(&t, "listen", &dst, "dst.sock", &[]);
    crate::support::run_ok(
        crate::support::flexnbd()
            .args(["mirror", "-l", "127.0.0.1", "-p"])
            .arg(dport.to_string())
            .arg("-s")
            .arg(&ssock),
    );
    wait_until("the mirror to give up", Duration::from_secs(20), || {
        let status = crate::support::control(&ssock, "status", &[]);
        status.contains("is_mirroring=false") && status.contains("last_migration=failed")
    });
    let status = crate::support::control(&ssock, "status", &[]);
    assert!(status.contains("clients_allowed=true"), "{status}");
    // Writes are not held for a migration that is gone.
    let mut c = Client::connect(saddr, Handshake::Go);
    let started = Instant::now();
    c.write(1, 0, &[5u8; 4096]);
    c.expect_reply(1, Errno::OK);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a write waited for the dead mirror"
    );
    // The slot is free: a new mirror is accepted (and fails the same way).
    let again = crate::support::control(&ssock, "mirror", &["127.0.0.1", &dport.to_string()]);
    assert_eq!(again, "0: Mirror started\n", "{}", source.stderr());
    assert!(source.stderr().contains("internal error in the mirror"));
}

#[test]
fn a_client_that_never_reads_its_replies_is_dropped_after_the_stall_timeout() {
    let t = TestEnv::new();
    let (d, addr) = serve_with(&t, 16 << 20, &["--stall-timeout", "300ms", "-v"]);
    let c = Client::connect(addr, Handshake::Go);
    // 1 MiB READs, sent and never read: the replies fill the socket buffers
    // and the server's writes stop making progress.
    let sender = {
        let mut s = c.s.try_clone().expect("clone");
        std::thread::spawn(move || {
            for i in 0..256u64 {
                let h = crate::support::wire::header(
                    Cmd::READ,
                    CmdFlags(0),
                    i,
                    (i % 16) << 20,
                    1 << 20,
                );
                if std::io::Write::write_all(&mut s, &h).is_err() {
                    break; // closed by the server
                }
            }
        })
    };
    wait_num_clients(&d, 0);
    sender.join().expect("sender");
    assert!(d.stderr().contains("cannot send"), "{}", d.stderr());
    // Everyone else goes on.
    let mut other = Client::connect(addr, Handshake::Go);
    assert_eq!(other.read(1, 0, 4096), vec![0u8; 4096]);
    drop(c);
}

/// The debug line a connection logs at its end when it polled for requests.
const POLLED: &str = "polled for the next request";

/// A client at queue depth 1 sends `n` small requests one after another,
/// each after the previous reply, checking every reply.
fn queue_depth_one(addr: SocketAddr, n: u64) {
    let mut c = Client::connect(addr, Handshake::Go);
    for i in 0..n {
        let data = [i.to_le_bytes()[0]; 4096];
        assert_eq!(c.write_reply(2 * i, i * 4096, &data), Errno::OK);
        assert_eq!(c.read(2 * i + 1, i * 4096, 4096), data);
    }
    c.disconnect();
}

#[test]
fn a_queue_depth_one_client_is_polled_for_and_zero_turns_it_off() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: one CPU, where the server never polls");
        return;
    }
    let t = TestEnv::new();
    // The longest window: a loaded test machine, slow to send the next
    // request, must not shrink it to nothing before the client qualifies.
    let (d, addr) = serve_with(&t, SIZE, &["-vv", "--busy-poll", "1ms"]);
    queue_depth_one(addr, 64);
    wait_until(
        "the connection's polling line",
        Duration::from_secs(10),
        || d.stderr().contains(POLLED),
    );
    let line = d
        .stderr()
        .lines()
        .find(|l| l.contains(POLLED))
        .unwrap()
        .to_owned();
    let polls: u64 = line
        .split(POLLED)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    // 128 requests, each alone: every wait after the first 16 may poll.
    assert!((1..=128).contains(&polls), "{line}");

    let t = TestEnv::new();
    let (d, addr) = serve_with(&t, SIZE, &["-vv", "--busy-poll", "0"]);
    queue_depth_one(addr, 64);
    wait_num_clients(&d, 0);
    wait_until("the connection's end", Duration::from_secs(10), || {
        d.stderr().contains("finished")
    });
    assert!(!d.stderr().contains(POLLED), "{}", d.stderr());
}
