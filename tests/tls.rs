//! TLS, our binary against itself: `serve --tls require|on` with `read` and
//! `write --tls`, client certificates (`--tls-verify-peer`), what a bad peer
//! gets (plaintext against `require`, garbage or nothing after STARTTLS,
//! expired, wrong-CA and wrong-host certificates), certificates rotated
//! under a running server, usage errors, and migrations over TLS.
//!
//! Every certificate comes from `support::tls` (made in-process); every
//! server listens on 127.0.0.1 and every wait has a deadline. A bad
//! connection must leave a log line and a server that still serves a good
//! client.

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flexnbd::client::{ConnectOptions, NbdClient};
use flexnbd::proto::types::{Opt, Rep};

use crate::support::commands::{self, assert_success, one_error_line};
use crate::support::daemon::proxy_command;
use crate::support::tls::{OTHER_HOST, Part, Pki, SERVER_NAME};
use crate::support::wire::{self, Client};
use crate::support::{
    Daemon, DaemonBuilder, SYSTEM_PYTHON, TestEnv, control, finish, flexnbd, have_tool, pattern,
    require_tool, text, wait_until,
};

/// How long a log line, a close or a state may take to show.
const WITHIN: Duration = Duration::from_secs(20);
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Helpers.

/// `flexnbd MODE -v --tls-certificates CERTS EXTRA...` on `file`, with the
/// control socket `sock_name`, started.
#[track_caller]
fn start(
    env: &TestEnv,
    mode: &str,
    file: &Path,
    sock_name: &str,
    certs: &Path,
    extra: &[&str],
) -> Daemon {
    DaemonBuilder::new(mode, file)
        .sock(env.sock_path_named(sock_name))
        .arg("-v")
        .arg("--tls-certificates")
        .arg(certs)
        .args(extra)
        .start()
}

/// `flexnbd serve` ([`start`]) of a fresh 1 MiB `NAME.img` in `env`, with the
/// control socket `NAME.sock`.
#[track_caller]
fn serve_mib(env: &TestEnv, name: &str, certs: &Path, extra: &[&str]) -> Daemon {
    let disk = env.image(&format!("{name}.img"), MIB);
    start(env, "serve", &disk, &format!("{name}.sock"), certs, extra)
}

/// `flexnbd serve --tls require` with the usual server directory, `EXTRA`
/// after; its env, pki and disk (4 MiB of zeroes).
#[track_caller]
fn serve_require(extra: &[&str]) -> (TestEnv, Pki, PathBuf, Daemon) {
    let env = TestEnv::new();
    let pki = Pki::new();
    let disk = env.image("disk.img", 4 * MIB);
    let mut args = vec!["--tls", "require"];
    args.extend_from_slice(extra);
    let d = start(&env, "serve", &disk, "serve.sock", &pki.server(), &args);
    (env, pki, disk, d)
}

/// `flexnbd read` (or `write`, with `stdin`) of `size` bytes at `from`, over
/// TLS when `certs` is given (`--tls --tls-certificates CERTS`), plus `extra`.
fn client(
    d: &Daemon,
    command: &str,
    certs: Option<&Path>,
    from: u64,
    size: u64,
    stdin: &[u8],
    extra: &[&str],
) -> Output {
    let [l, addr, p, port] = d.addr_args();
    let (from, size) = (from.to_string(), size.to_string());
    let mut args: Vec<&str> = vec![command, &l, &addr, &p, &port, "-F", &from, "-S", &size];
    let certs = certs.map(|c| c.to_str().unwrap().to_owned());
    if let Some(certs) = &certs {
        args.extend(["--tls", "--tls-certificates", certs]);
    }
    args.extend_from_slice(extra);
    commands::run(&args, stdin)
}

/// Writes `data` at `from` over TLS with `certs`, reads it back the same
/// way, and checks both succeed silently.
#[track_caller]
fn round_trip(d: &Daemon, certs: &Path, from: u64, data: &[u8], extra: &[&str]) {
    let n = data.len() as u64;
    let out = client(d, "write", Some(certs), from, n, data, extra);
    assert_success("write --tls", &out);
    let out = client(d, "read", Some(certs), from, n, &[], extra);
    assert_success("read --tls", &out);
    assert!(out.stdout == data, "read --tls returned other bytes");
}

/// The daemon's stderr from byte `from` on.
fn log_since(d: &Daemon, from: usize) -> String {
    d.stderr().get(from..).unwrap_or_default().to_owned()
}

/// Waits until the daemon logs, after byte `from` of its stderr, a line that
/// holds every word of `words` (case-insensitive); returns that line.
#[track_caller]
fn wait_log_line(d: &Daemon, from: usize, words: &[&str]) -> String {
    let mut found = String::new();
    wait_until(&format!("a log line with {words:?}"), WITHIN, || {
        let log = log_since(d, from).to_lowercase();
        match log
            .lines()
            .find(|l| words.iter().all(|w| l.contains(&w.to_lowercase())))
        {
            Some(line) => {
                found = line.to_owned();
                println!("logged: {line}");
                true
            }
            None => false,
        }
    });
    found
}

/// The server still serves a good TLS client after whatever came before.
#[track_caller]
fn still_serves(d: &Daemon, certs: &Path) {
    round_trip(d, certs, 8192, &pattern(4096, 99), &[]);
}

/// A raw client that has read the greeting and sent `NBD_OPT_STARTTLS`,
/// and got its ACK: the next bytes are the TLS handshake's.
#[track_caller]
fn after_starttls(d: &Daemon) -> Client {
    let mut c = Client::new(wire::tcp(d.addr()));
    c.newstyle_hello();
    c.send_option(Opt::STARTTLS, &[]);
    let (rep, data) = c.option_reply();
    assert_eq!(rep, Rep::ACK, "STARTTLS not acknowledged: {data:?}");
    c
}

// ---------------------------------------------------------------------------
// 1. Serving over TLS.

#[test]
fn require_serves_read_and_write_with_and_without_a_client_certificate() {
    let (_env, pki, disk, d) = serve_require(&[]);
    let data = pattern(256 * 1024, 1);
    // With a client certificate, without one (the CA only), and with the
    // name checked given explicitly: the certificate names localhost and 127.0.0.1.
    round_trip(&d, &pki.client(), 0, &data, &[]);
    round_trip(&d, &pki.ca_only(), 65536, &data, &[]);
    round_trip(
        &d,
        &pki.ca_only(),
        0,
        &data,
        &["--tls-hostname", SERVER_NAME],
    );
    let file = std::fs::read(&disk).unwrap();
    assert!(
        file[..data.len()] == data[..],
        "the file does not hold what was written"
    );
}

#[test]
fn an_nbds_uri_implies_tls() {
    let (_env, pki, _disk, d) = serve_require(&[]);
    let certs = pki.client();
    let uri = format!(
        "nbds://127.0.0.1:{}/?tls-certificates={}&tls-hostname={SERVER_NAME}",
        d.port(),
        certs.display()
    );
    let data = pattern(8192, 2);
    let out = commands::run(&["write", "-l", &uri, "-F", "4096", "-S", "8192"], &data);
    assert_success("write to an nbds:// URI", &out);
    let out = commands::run(&["read", "-l", &uri, "-F", "4096", "-S", "8192"], &[]);
    assert_success("read from an nbds:// URI", &out);
    assert!(out.stdout == data);
}

#[test]
fn verify_peer_serves_only_holders_of_a_certificate_from_its_ca() {
    let (_env, pki, _disk, d) = serve_require(&["--tls-verify-peer"]);
    round_trip(&d, &pki.client(), 0, &pattern(4096, 3), &[]);
    for (what, certs) in [
        ("no client certificate", pki.ca_only()),
        (
            "a client certificate from another CA",
            pki.dir(&[Part::Ca, Part::WrongCaClient]),
        ),
        (
            "an expired client certificate",
            pki.dir(&[Part::Ca, Part::ExpiredClient]),
        ),
    ] {
        let before = d.stderr().len();
        let out = client(&d, "read", Some(&certs), 0, 4096, &[], &[]);
        let line = one_error_line(what, &out);
        assert!(!line.is_empty());
        // The server says why it closed the connection.
        wait_log_line(&d, before, &["certificate"]);
        still_serves(&d, &pki.client());
    }
}

#[test]
fn a_plaintext_client_of_a_require_server_is_refused_clearly() {
    let (_env, pki, _disk, d) = serve_require(&[]);
    let out = client(&d, "read", None, 0, 4096, &[], &[]);
    let line = one_error_line("plaintext read from a --tls require server", &out);
    assert!(line.to_lowercase().contains("tls"), "{line}");
    // Byte by byte: every option but STARTTLS gets NBD_REP_ERR_TLS_REQD,
    // and no export is ever served in clear.
    let mut c = Client::new(wire::tcp(d.addr()));
    c.newstyle_hello();
    c.send_option(Opt::LIST, &[]);
    assert_eq!(c.option_reply().0, Rep::ERR_TLS_REQD, "LIST");
    c.send_option(Opt::GO, &[0u8; 6]);
    assert_eq!(c.option_reply().0, Rep::ERR_TLS_REQD, "GO");
    c.send_option(Opt::ABORT, &[]);
    // EXPORT_NAME cannot be answered with an error: the server closes.
    let mut c = Client::new(wire::tcp(d.addr()));
    c.newstyle_hello();
    c.send_option(Opt::EXPORT_NAME, &[]);
    assert!(
        wire::closed_within(&mut c.s, WITHIN),
        "EXPORT_NAME in clear left the connection open"
    );
    still_serves(&d, &pki.client());
}

#[test]
fn tls_on_serves_plaintext_and_tls_clients() {
    let env = TestEnv::new();
    let pki = Pki::new();
    let d = serve_mib(&env, "serve", &pki.server(), &["--tls", "on"]);
    round_trip(&d, &pki.client(), 0, &pattern(4096, 4), &[]);
    let data = pattern(4096, 5);
    assert_success(
        "plaintext write",
        &client(&d, "write", None, 4096, 4096, &data, &[]),
    );
    let out = client(&d, "read", None, 0, 8192, &[], &[]);
    assert_success("plaintext read", &out);
    assert!(out.stdout[..4096] == pattern(4096, 4)[..] && out.stdout[4096..] == data[..]);
}

#[test]
fn tls_on_with_verify_peer_checks_tls_clients_and_still_lets_plaintext_in() {
    // As nbdkit's --tls=on: only --tls require makes the certificate the one way in.
    let env = TestEnv::new();
    let pki = Pki::new();
    let args = ["--tls", "on", "--tls-verify-peer"];
    let d = serve_mib(&env, "serve", &pki.server(), &args);
    round_trip(&d, &pki.client(), 0, &pattern(4096, 8), &[]);
    let out = client(&d, "read", Some(&pki.ca_only()), 0, 4096, &[], &[]);
    one_error_line(
        "read --tls without a certificate, --tls on --tls-verify-peer",
        &out,
    );
    let out = client(&d, "read", None, 0, 4096, &[], &[]);
    assert_success("plaintext read, --tls on --tls-verify-peer", &out);
    assert!(out.stdout == pattern(4096, 8));
}

// ---------------------------------------------------------------------------
// 2. Bad TLS input.

#[test]
fn garbage_instead_of_a_client_hello_closes_the_connection() {
    let (_env, pki, _disk, d) = serve_require(&[]);
    for garbage in [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec(),
        vec![0u8; 4096],
        // A TLS record header announcing a handshake record, then nonsense.
        [&[0x16, 0x03, 0x01, 0x00, 0x20][..], &[0xff; 32]].concat(),
    ] {
        let before = d.stderr().len();
        let mut c = after_starttls(&d);
        // The server may close before it has read everything.
        let _ = c.s.write_all(&garbage);
        assert!(
            wire::closed_within(&mut c.s, WITHIN),
            "garbage after STARTTLS left the connection open"
        );
        wait_log_line(&d, before, &["tls"]);
        still_serves(&d, &pki.client());
    }
}

/// Each failed TLS handshake is a new connection, so a scanner would fill
/// the log at its connection rate: the warnings are limited over all
/// connections (10 at once, then one a second, the next saying how many
/// were dropped), and the server goes on serving.
#[test]
fn a_flood_of_failed_tls_handshakes_logs_a_bounded_number_of_lines() {
    const FLOOD: usize = 100;
    let (_env, pki, _disk, d) = serve_require(&[]);
    let before = d.stderr().len();
    let started = Instant::now();
    for _ in 0..FLOOD {
        let mut c = after_starttls(&d);
        let _ = c.s.write_all(&[0u8; 512]);
        assert!(
            wire::closed_within(&mut c.s, WITHIN),
            "garbage left the connection open"
        );
    }
    let secs = started.elapsed().as_secs() as usize;
    let lines = |log: &str| {
        log.lines()
            .filter(|l| l.to_lowercase().contains("tls handshake failed"))
            .count()
    };
    // The last connection's warning may still be on its way: the count is
    // an upper bound once the last one is logged or dropped.
    let logged = lines(&log_since(&d, before));
    assert!(
        logged <= 10 + secs + 1,
        "{logged} TLS warnings for {FLOOD} failed handshakes in {secs} s"
    );
    // Once the limit lets one through again, it says what was dropped.
    wait_until("the count of the dropped warnings", WITHIN, || {
        let mut c = after_starttls(&d);
        let _ = c.s.write_all(&[0u8; 512]);
        let _ = wire::closed_within(&mut c.s, WITHIN);
        log_since(&d, before).contains("more failed TLS handshake(s) not logged")
    });
    still_serves(&d, &pki.client());
}

#[test]
fn a_stalled_tls_handshake_is_cut_by_the_handshake_timeout() {
    let (_env, pki, _disk, d) = serve_require(&["--handshake-timeout", "1s"]);
    // Nothing at all after STARTTLS, and half a ClientHello.
    for partial in [&[][..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
        let before = d.stderr().len();
        let mut c = after_starttls(&d);
        c.s.write_all(partial).unwrap();
        let started = Instant::now();
        assert!(
            wire::closed_within(&mut c.s, WITHIN),
            "a stalled TLS handshake was not cut within {WITHIN:?}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "closed before the timeout: {:?}",
            started.elapsed()
        );
        wait_log_line(&d, before, &["tls handshake failed", "--handshake-timeout"]);
        still_serves(&d, &pki.client());
    }
}

#[test]
fn our_client_refuses_bad_server_certificates_and_the_server_goes_on() {
    let env = TestEnv::new();
    let pki = Pki::new();
    let client_certs = pki.client();
    for (what, server_parts, expect) in [
        ("expired", [Part::Ca, Part::ExpiredServer], "expired"),
        (
            "from another CA",
            [Part::Ca, Part::WrongCaServer],
            "certificate",
        ),
        (
            "for another host",
            [Part::Ca, Part::OtherHostServer],
            "certificate",
        ),
    ] {
        let disk = env.image(&format!("{}.img", what.replace(' ', "-")), MIB);
        let sock = format!("{}.sock", what.replace(' ', "-"));
        let certs = pki.dir(&server_parts);
        let d = start(&env, "serve", &disk, &sock, &certs, &["--tls", "require"]);
        let before = d.stderr().len();
        let out = client(&d, "read", Some(&client_certs), 0, 4096, &[], &[]);
        let line = one_error_line(
            &format!("read from a server with a certificate {what}"),
            &out,
        );
        assert!(line.to_lowercase().contains(expect), "{what}: {line}");
        // The server logs the failed handshake and serves the next client.
        wait_log_line(&d, before, &["tls"]);
    }
    // The other host's certificate is good for its own name.
    let d = serve_mib(
        &env,
        "named",
        &pki.dir(&[Part::Ca, Part::OtherHostServer]),
        &["--tls", "require"],
    );
    round_trip(
        &d,
        &client_certs,
        0,
        &pattern(4096, 6),
        &["--tls-hostname", OTHER_HOST],
    );
}

#[test]
fn our_client_never_sends_data_in_clear_when_tls_was_asked_for() {
    // A plaintext-only server and an old-style one (no STARTTLS at all):
    // `write --tls` fails at the handshake, before any data.
    let env = TestEnv::new();
    let pki = Pki::new();
    for (what, args, expect) in [
        ("a server without TLS", &[][..], "tls"),
        ("an old-style server", &["--oldstyle"][..], "old-style"),
    ] {
        let disk = env.image(&format!("{}.img", what.len()), MIB);
        let d = Daemon::serve(&disk)
            .sock(env.sock_path_named(&format!("{}.sock", what.len())))
            .args(args)
            .start();
        let data = [0xaa; 4096];
        let out = client(&d, "write", Some(&pki.client()), 0, 4096, &data, &[]);
        let line = one_error_line(&format!("write --tls to {what}"), &out);
        assert!(line.to_lowercase().contains(expect), "{what}: {line}");
        assert!(
            std::fs::read(&disk).unwrap().iter().all(|&b| b == 0),
            "data reached {what}"
        );
        // --tls-certificates alone asks for TLS as well: a directory given
        // and silently unused would send the data in clear.
        let [l, addr, p, port] = d.addr_args();
        let certs = pki.client();
        let certs = certs.to_str().unwrap();
        let args = [
            "write",
            &l,
            &addr,
            &p,
            &port,
            "-F",
            "0",
            "-S",
            "4096",
            "--tls-certificates",
            certs,
        ];
        let out = commands::run(&args, &data);
        one_error_line(&format!("write --tls-certificates to {what}"), &out);
        assert!(
            std::fs::read(&disk).unwrap().iter().all(|&b| b == 0),
            "data reached {what} with --tls-certificates alone"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. Certificates read at each connection.

/// An `nbdsh` connected over TLS to `d` that waits for a line on stdin
/// before each read: a connection kept open across a rotation.
struct HeldOpen {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl HeldOpen {
    fn connect(d: &Daemon, certs: &Path) -> HeldOpen {
        let uri = format!(
            "nbds://127.0.0.1:{}/?tls-certificates={}",
            d.port(),
            certs.display()
        );
        let script = format!(
            "import sys\nh.set_uri_allow_local_file(True)\nh.connect_uri({uri:?})\nprint('connected', flush=True)\n\
             for line in sys.stdin:\n    print(len(h.pread(4096, 0)), flush=True)\n"
        );
        let mut child = std::process::Command::new(SYSTEM_PYTHON)
            .args(["-m", "nbd", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot run nbdsh");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let held = HeldOpen { child, lines };
        assert_eq!(held.line(), "connected");
        held
    }

    #[track_caller]
    fn line(&self) -> String {
        self.lines
            .recv_timeout(WITHIN)
            .expect("nbdsh said nothing in time")
    }

    /// One read of 4 KiB on the open connection.
    #[track_caller]
    fn read(&mut self) {
        writeln!(self.child.stdin.as_mut().unwrap(), "read").unwrap();
        assert_eq!(self.line(), "4096");
    }
}

impl Drop for HeldOpen {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rotated_certificates_serve_new_connections_and_open_ones_keep_working() {
    let env = TestEnv::new();
    let pki = Pki::new();
    let certs = pki.server();
    let d = serve_mib(&env, "serve", &certs, &["--tls", "require"]);
    let old_ca = pki.client();
    let new_ca = pki.dir(&[Part::OtherCa]);
    still_serves(&d, &old_ca);
    let held = have_tool("nbdsh").then(|| HeldOpen::connect(&d, &old_ca));

    // The operator replaces the CA and the server's certificate.
    pki.write(&certs, &[Part::OtherCa, Part::WrongCaServer]);
    let out = client(&d, "read", Some(&old_ca), 0, 4096, &[], &[]);
    one_error_line(
        "a client trusting only the old CA, after the rotation",
        &out,
    );
    still_serves(&d, &new_ca);
    if let Some(mut held) = held {
        held.read();
        held.read();
    } else {
        require_tool("nbdsh");
    }
}

#[test]
fn a_broken_directory_fails_only_the_connections_made_while_it_is_broken() {
    let (_env, pki, _disk, d) = serve_require(&[]);
    let certs = server_dir_of(&d);
    let key = certs.join("server-key.pem");
    let saved = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    let before = d.stderr().len();
    let out = client(&d, "read", Some(&pki.client()), 0, 4096, &[], &[]);
    one_error_line("read while the server's key is missing", &out);
    let line = wait_log_line(&d, before, &["server-key.pem"]);
    assert!(!line.is_empty());
    assert!(
        commands::run(&["status", "-s", d.sock().to_str().unwrap()], &[])
            .status
            .success()
    );
    std::fs::write(&key, saved).unwrap();
    still_serves(&d, &pki.client());
}

/// The `--tls-certificates` directory a daemon was started with (from its
/// command line, as `/proc` shows it).
fn server_dir_of(d: &Daemon) -> PathBuf {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", d.pid())).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let i = args
        .iter()
        .position(|a| *a == b"--tls-certificates")
        .expect("started with --tls-certificates");
    PathBuf::from(String::from_utf8(args[i + 1].to_vec()).unwrap())
}

// ---------------------------------------------------------------------------
// 4. Usage errors.

#[test]
fn tls_options_that_cannot_work_are_refused_at_start() {
    let env = TestEnv::new();
    let pki = Pki::new();
    let disk = env.image("disk.img", MIB);
    let certs = pki.server();
    let disk = disk.to_str().unwrap();
    let certs = certs.to_str().unwrap();
    let usage = |args: &[&str], words: &[&str]| {
        let out = flexnbd()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run flexnbd {args:?}: {e}"));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for w in words {
            assert!(stderr.contains(w), "{args:?}: no {w:?} in {stderr}");
        }
    };
    let base = ["serve", "-l", "127.0.0.1", "-p", "0", "-f", disk];
    for mode in ["on", "require"] {
        usage(
            &[&base[..], &["--tls", mode]].concat(),
            &["--tls-certificates"],
        );
        usage(
            &[
                &base[..],
                &["--tls", mode, "--tls-certificates", certs, "--oldstyle"],
            ]
            .concat(),
            &["--oldstyle"],
        );
    }
    usage(
        &[&base[..], &["--tls", "maybe", "--tls-certificates", certs]].concat(),
        &["maybe"],
    );
    usage(
        &[&base[..], &["--tls-verify-peer"]].concat(),
        &["--tls-verify-peer"],
    );
    usage(
        &[&base[..], &["--mirror-tls"]].concat(),
        &["--mirror-tls needs --tls-certificates"],
    );

    // A directory that cannot serve is found at start, not at the first client.
    for (what, dir) in [
        ("missing", env.child("no-such-dir")),
        ("without a key", pki.dir(&[Part::Ca])),
    ] {
        let dir_s = dir.to_str().unwrap().to_owned();
        let out = flexnbd()
            .args(base)
            .args(["--tls", "require", "--tls-certificates", &dir_s])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{what}: started anyway");
        assert!(
            stderr.contains(&dir_s),
            "{what}: the message names no directory: {stderr}"
        );
        // One line, the cause said once.
        assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
        assert!(stderr.matches("(os error").count() <= 1, "{what}: {stderr}");
    }
}

// ---------------------------------------------------------------------------
// 5. Migrations over TLS.

/// `flexnbd mirror -s SOURCE_SOCK -l DEST... EXTRA...`, run to its end.
fn mirror(source: &Daemon, dest: &[&str], extra: &[&str]) -> Output {
    let sock = source.sock().to_str().unwrap().to_owned();
    let mut args = vec!["mirror", "-s", &sock, "-l"];
    args.extend_from_slice(dest);
    args.extend_from_slice(extra);
    commands::run(&args, &[])
}

/// A migration's two ends: a `serve` of `size` bytes of data (from
/// `seed`) with `source_certs` and `source_extra`, and a `listen --tls
/// require --tls-verify-peer` on an empty file with the usual server
/// directory.
struct Pair {
    src: PathBuf,
    dst: PathBuf,
    source: Daemon,
    dest: Daemon,
}

impl Pair {
    #[track_caller]
    fn start(
        env: &TestEnv,
        pki: &Pki,
        size: u64,
        seed: u64,
        source_certs: &Path,
        source_extra: &[&str],
    ) -> Pair {
        let src = env.image_with("source.img", &pattern(size as usize, seed));
        let dst = env.image("dest.img", size);
        let source = start(
            env,
            "serve",
            &src,
            "source.sock",
            source_certs,
            source_extra,
        );
        let dest = start(
            env,
            "listen",
            &dst,
            "dest.sock",
            &pki.server(),
            &["--tls", "require", "--tls-verify-peer"],
        );
        Pair {
            src,
            dst,
            source,
            dest,
        }
    }

    /// `-l 127.0.0.1 -p DEST_PORT` for [`mirror`].
    fn dest_addr(&self) -> [String; 3] {
        [
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            self.dest.port().to_string(),
        ]
    }

    /// `out`, this pair's `mirror --wait` (`what`), succeeded, both ends
    /// exited 0 (the handover) and the files are the same.
    #[track_caller]
    fn assert_migrated(&mut self, what: &str, out: &Output) {
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        for (what, d) in [
            ("source", &mut self.source),
            ("destination", &mut self.dest),
        ] {
            let status = d.wait_exit(WITHIN);
            assert_eq!(status.code(), Some(0), "{what}: {}", d.stderr());
        }
        crate::support::assert_same_bytes(
            "destination after a TLS migration",
            &std::fs::read(&self.dst).unwrap(),
            &std::fs::read(&self.src).unwrap(),
        );
    }
}

/// Writes 64 KiB blocks (from a pattern) at pseudo-random offsets of the
/// first `span` bytes through a plaintext client of `addr` until `stop` or
/// until the connection ends (the handover closes it); counts the writes.
fn writer(addr: SocketAddr, span: u64, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) {
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        hello_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(30),
        ..ConnectOptions::default()
    };
    let Ok(mut c) = NbdClient::connect(addr, &opts) else {
        return;
    };
    let block = pattern(65536, 7);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while !stop.load(Ordering::Relaxed) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x % (span / 65536)) * 65536;
        if c.write_at(offset, &block, false).is_err() {
            return;
        }
        count.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn a_migration_over_tls_under_a_writer_is_byte_identical() {
    let env = TestEnv::new();
    let pki = Pki::new();
    let size = 64 * MIB;
    let mut pair = Pair::start(&env, &pki, size, 11, &pki.full(), &[]);
    let (stop, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let w = {
        let (addr, stop, count) = (pair.source.addr(), stop.clone(), count.clone());
        std::thread::spawn(move || writer(addr, size, stop, count))
    };
    wait_until("the writer's first writes", WITHIN, || {
        count.load(Ordering::Relaxed) > 10
    });
    let dest = pair.dest_addr();
    let dest: Vec<&str> = dest.iter().map(String::as_str).collect();
    let out = mirror(
        &pair.source,
        &dest,
        &["--tls", "--wait", "--no-progress", "-m", "33554432"],
    );
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    assert!(count.load(Ordering::Relaxed) > 10);
    pair.assert_migrated("mirror --tls --wait", &out);
}

#[test]
fn a_migration_to_an_nbds_uri_and_with_mirror_tls_on_the_source() {
    let env = TestEnv::new();
    let pki = Pki::new();
    // serve --mirror-tls: every migration uses TLS, no --tls needed on mirror.
    let mut pair = Pair::start(&env, &pki, 8 * MIB, 12, &pki.full(), &["--mirror-tls"]);
    let uri = format!(
        "nbds://127.0.0.1:{}/?tls-hostname={SERVER_NAME}",
        pair.dest.port()
    );
    let out = mirror(&pair.source, &[&uri], &["--wait", "--no-progress"]);
    pair.assert_migrated("mirror to nbds://", &out);
}

#[test]
fn a_migration_without_the_client_certificate_the_destination_requires_fails_clearly_until_it_has_one()
 {
    let env = TestEnv::new();
    let pki = Pki::new();
    // The source has the CA (it can check the destination) but no certificate of its own.
    let source_certs = pki.ca_only();
    let mut pair = Pair::start(&env, &pki, 4 * MIB, 13, &source_certs, &[]);
    let before = pair.dest.stderr().len();
    let dest = pair.dest_addr();
    let dest: Vec<&str> = dest.iter().map(String::as_str).collect();
    let out = mirror(&pair.source, &dest, &["--tls"]);
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "mirror without a client certificate: {stderr}"
    );
    assert!(!stderr.trim().is_empty(), "mirror failed silently");
    // The control reply is flexnbd-c's ("Mirror was rejected"); the
    // source's log says why.
    wait_log_line(&pair.source, 0, &["mirror", "certificaterequired"]);
    wait_log_line(&pair.dest, before, &["certificate"]);
    // Nothing reached the destination; the source still serves, with control.
    assert!(std::fs::read(&pair.dst).unwrap().iter().all(|&b| b == 0));
    assert!(pair.source.is_running() && pair.dest.is_running());
    let status = control(pair.source.sock(), "status", &[]);
    assert!(status.contains("has_control=true"), "{status}");
    let read = client(&pair.source, "read", None, 0, 4096, &[], &[]);
    assert_success("read from the source after the failed migration", &read);
    assert!(read.stdout == pattern(4 * MIB as usize, 13)[..4096]);

    // Given a client certificate (no restart: the source reads its
    // directory when a migration connects), the next attempt completes.
    pki.write(&source_certs, &[Part::Client]);
    let out = mirror(&pair.source, &dest, &["--tls", "--wait", "--no-progress"]);
    pair.assert_migrated("mirror after the rotation", &out);
}

// ---------------------------------------------------------------------------
// 6. The proxy: TLS towards its clients and towards its upstream.

/// [`proxy_command`] to `upstream` with `--tls-certificates CERTS`, started.
#[track_caller]
fn start_proxy(upstream: &Daemon, certs: &Path, extra: &[&str]) -> Daemon {
    let mut cmd = proxy_command(upstream.port(), &["--tls-certificates"]);
    cmd.arg(certs).args(extra);
    Daemon::start_logged_port(cmd)
}

#[test]
fn the_proxy_speaks_tls_to_its_clients_and_to_its_upstream() {
    let (_env, pki, disk, upstream) = serve_require(&["--tls-verify-peer"]);
    // TLS on both sides, the proxy presenting its client certificate upstream.
    let proxy = start_proxy(
        &upstream,
        &pki.full(),
        &["--upstream-tls", "--tls", "require", "--tls-verify-peer"],
    );
    let data = pattern(100_000, 31);
    round_trip(&proxy, &pki.client(), 4096, &data, &[]);
    assert!(std::fs::read(&disk).unwrap()[4096..4096 + data.len()] == data[..]);
    // A plaintext client of that proxy is refused.
    let out = client(&proxy, "read", None, 0, 512, &[], &[]);
    one_error_line("plaintext read through a --tls require proxy", &out);

    // Plaintext to its clients, TLS upstream.
    let plain = start_proxy(&upstream, &pki.full(), &["--upstream-tls"]);
    let out = client(&plain, "read", None, 4096, data.len() as u64, &[], &[]);
    assert_success("plaintext read through a proxy with --upstream-tls", &out);
    assert!(out.stdout == data);

    // Without --upstream-tls the proxy cannot start: its first connection
    // upstream is refused, and it says why.
    let mut cmd = proxy_command(upstream.port(), &[]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = finish(cmd.spawn().unwrap(), WITHIN);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("TLS"), "{stderr}");
}

#[test]
fn mirror_tls_from_a_server_without_certificates_is_refused() {
    let env = TestEnv::new();
    let pki = Pki::new();
    let src = env.image_with("source.img", &pattern(MIB as usize, 14));
    let dst = env.image("dest.img", MIB);
    let mut source = Daemon::serve(&src)
        .sock(env.sock_path_named("source.sock"))
        .start();
    let dest = start(
        &env,
        "listen",
        &dst,
        "dest.sock",
        &pki.server(),
        &["--tls", "require"],
    );
    let out = mirror(
        &source,
        &["127.0.0.1", "-p", &dest.port().to_string()],
        &["--tls"],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--tls-certificates"), "{stderr}");
    assert!(source.is_running());
    assert!(control(source.sock(), "status", &[]).contains("is_mirroring=false"));
}
