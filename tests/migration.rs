//! Live migration end to end: our `serve` mirrors into our `listen`, real
//! processes over real sockets, with files on disk.
//!
//! - fio's `nbd` engine writes to the source from several connections at
//!   several rates and block sizes while it migrates; both processes exit 0
//!   and the destination file is the source file as the source left it.
//! - `--unlink` removes the source file only once the destination has
//!   acknowledged everything (a relay holds the replies back to show it).
//! - `break`, `mirror-speed` (with the `status` keys it shows), a sparse
//!   file that stays sparse, a destination killed and restarted, a source
//!   killed mid-transfer.
//! - `mirror --wait`: a progress bar on a terminal (run under util-linux
//!   `script`), plain lines on a pipe, non-zero when the migration is stopped.
//!
//! Slow migrations are made slow with the migration's own speed limit, never
//! with sleeps; every wait polls `status` or the process with a deadline.
//! Hostile peers and the C flexnbd are in `mirror_faults`.

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flexnbd::client::{ConnectOptions, NbdClient};
use flexnbd::proto::consts::MIRROR_HANDLE;
use flexnbd::proto::types::Cmd;
use flexnbd::proto::wire::Request;
use flexnbd::status::{Phase, Status};

use crate::support::MIB;
use crate::support::commands::assert_exit_0;
use crate::support::wire;
use crate::support::{
    self, Daemon, DaemonBuilder, Signal, TestEnv, allocated, control, control::status_line,
    flexnbd_std, pattern, require_tool, text,
};

/// At least the longest transfer the source sends (1 MiB; flexnbd-c's
/// mirror_longest_write, 8 MiB, as a bound).
pub(crate) const MAX_TRANSFER: u64 = 8 * MIB;
/// How long a migration that should complete may take, in a debug build on a busy machine.
pub(crate) const MIGRATION_WITHIN: Duration = Duration::from_secs(90);
/// How long a process may take to exit when it should.
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(30);
/// How long a state reported by `status` may take to arrive.
const STATE_WITHIN: Duration = Duration::from_secs(30);
/// How often the waits poll.
const POLL: Duration = Duration::from_millis(20);
/// `mirror-speed` value that lifts the limit (flexnbd-c's "unlimited", 2^64-1).
pub(crate) const UNLIMITED: &str = "18446744073709551615";

// ---------------------------------------------------------------------------
// Files.

/// Fills `path` (already `size` bytes long) with deterministic data, 1 MiB at a time.
pub(crate) fn fill(path: &Path, size: u64, seed: u64) {
    let f = File::options().write(true).open(path).unwrap();
    for (i, at) in (0..size).step_by(MIB as usize).enumerate() {
        let len = MIB.min(size - at) as usize;
        f.write_all_at(&pattern(len, seed + i as u64), at).unwrap();
    }
}

/// A file of `size` bytes full of deterministic data.
pub(crate) fn data_image(env: &TestEnv, name: &str, size: u64, seed: u64) -> PathBuf {
    let path = env.image(name, size);
    fill(&path, size, seed);
    path
}

/// Asserts two files have the same length and bytes; names the first difference.
#[track_caller]
pub(crate) fn assert_same_files(what: &str, a: &Path, b: &Path) {
    let (la, lb) = (a.metadata().unwrap().len(), b.metadata().unwrap().len());
    assert_eq!(
        la,
        lb,
        "{what}: {} and {} differ in length",
        a.display(),
        b.display()
    );
    let (fa, fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    let mut ba = vec![0u8; MAX_TRANSFER as usize];
    let mut bb = vec![0u8; MAX_TRANSFER as usize];
    let mut at = 0;
    while at < la {
        let n = MAX_TRANSFER.min(la - at) as usize;
        fa.read_exact_at(&mut ba[..n], at).unwrap();
        fb.read_exact_at(&mut bb[..n], at).unwrap();
        if ba[..n] != bb[..n] {
            let i = ba[..n]
                .iter()
                .zip(&bb[..n])
                .position(|(x, y)| x != y)
                .unwrap();
            panic!(
                "{what}: {} and {} differ, first at offset {}",
                a.display(),
                b.display(),
                at + i as u64
            );
        }
        at += n as u64;
    }
}

// ---------------------------------------------------------------------------
// Processes.

/// A `flexnbd serve` or `flexnbd listen` with a control socket.
pub(crate) struct Node {
    pub(crate) daemon: Daemon,
    pub(crate) port: u16,
    pub(crate) sock: PathBuf,
    file: PathBuf,
}

impl Node {
    /// `flexnbd <mode> -v` on `file` with the control socket `sock_name`,
    /// with `more` done to its builder.
    #[track_caller]
    pub(crate) fn start(
        env: &TestEnv,
        mode: &str,
        file: &Path,
        sock_name: &str,
        more: impl FnOnce(DaemonBuilder) -> DaemonBuilder,
    ) -> Node {
        let sock = env.sock_path_named(sock_name);
        let daemon = more(DaemonBuilder::new(mode, file).sock(&sock).arg("-v")).start();
        Node {
            port: daemon.port(),
            daemon,
            sock,
            file: file.to_owned(),
        }
    }

    /// `flexnbd serve -v` on `file`: a migration's source.
    #[track_caller]
    pub(crate) fn serve(env: &TestEnv, file: &Path) -> Node {
        Node::start(env, "serve", file, "source.sock", |b| b)
    }

    /// `flexnbd listen -v` on `file`, on `port` if given: a migration's destination.
    #[track_caller]
    pub(crate) fn listen(env: &TestEnv, file: &Path, sock_name: &str, port: Option<u16>) -> Node {
        Node::start(env, "listen", file, sock_name, |b| match port {
            Some(p) => b.port(p),
            None => b,
        })
    }

    #[track_caller]
    pub(crate) fn status(&self) -> Status {
        let reply = control(&self.sock, "status", &[]);
        let line = reply
            .strip_prefix("0: ")
            .unwrap_or_else(|| panic!("status failed: {reply:?}"));
        Status::from_str(line.trim_end_matches('\n')).unwrap()
    }

    /// The status reply, `0: ` and all.
    #[track_caller]
    pub(crate) fn status_line(&self) -> String {
        status_line(&self.sock)
    }

    /// Polls `status` until `pred` holds; panics with the last status after [`STATE_WITHIN`].
    #[track_caller]
    pub(crate) fn wait_status(&mut self, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + STATE_WITHIN;
        loop {
            assert!(
                self.daemon.is_running(),
                "{what}: the server exited; stderr:\n{}",
                self.daemon.stderr()
            );
            let st = self.status();
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {STATE_WITHIN:?}; last status {st:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the migration to have been acknowledged up to `bytes` (at least).
    #[track_caller]
    pub(crate) fn wait_progress(&mut self, bytes: u64) -> Status {
        self.wait_status("migration progress", |st| {
            st.migration.as_ref().is_some_and(|m| {
                st.size - m.bytes_left >= bytes && m.phase != Some(Phase::Connecting)
            })
        })
    }

    /// Waits for the process to exit by itself with `code`.
    #[track_caller]
    pub(crate) fn assert_exits(&mut self, code: i32, what: &str) {
        let status = self.daemon.wait_exit(EXIT_WITHIN);
        assert_eq!(
            status.code(),
            Some(code),
            "{what}: exit status {status}; stderr:\n{}",
            self.daemon.stderr()
        );
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }
}

/// `flexnbd ARGS` with its output piped, killed (by PID) when dropped.
pub(crate) struct Cli {
    child: Option<Child>,
}

impl Cli {
    pub(crate) fn spawn<S: AsRef<OsStr>>(args: &[S]) -> Cli {
        let child = flexnbd_std()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run flexnbd");
        Cli { child: Some(child) }
    }

    /// Waits up to `timeout` for it to end; fails (after killing it) otherwise.
    #[track_caller]
    pub(crate) fn finish(mut self, timeout: Duration) -> Output {
        support::finish(self.child.take().unwrap(), timeout)
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `flexnbd mirror -s SOURCE_SOCK -l 127.0.0.1 -p PORT EXTRA...`.
pub(crate) fn mirror_args(source: &Node, port: u16, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "mirror".to_owned(),
        "-s".to_owned(),
        source.sock.to_str().unwrap().to_owned(),
        "-l".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        port.to_string(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Runs `mirror --wait` from `source` to `dest` and checks the migration
/// completed: the CLI, the source and the destination exit 0, and the
/// destination's file `dst` is the source's `src`.
#[track_caller]
fn migrate_and_check(source: &mut Node, dest: &mut Node, src: &Path, dst: &Path) {
    let out = Cli::spawn(&mirror_args(source, dest.port, &["--wait"])).finish(MIGRATION_WITHIN);
    assert!(
        out.status.success(),
        "mirror --wait: {}; stderr {:?}",
        out.status,
        text(&out.stderr)
    );
    finish_and_check(source, dest, src, dst);
}

/// Lifts the speed limit of the running migration from `source` to `dest`
/// and checks it completes as [`migrate_and_check`] does.
#[track_caller]
pub(crate) fn lift_the_limit_and_check(source: &mut Node, dest: &mut Node, src: &Path, dst: &Path) {
    let sock = source.sock.to_str().unwrap();
    assert_ok(
        &run(&["mirror-speed", "-s", sock, "-m", UNLIMITED]),
        "updated",
    );
    finish_and_check(source, dest, src, dst);
}

/// The source and the destination exit 0 by themselves, and the
/// destination's file `dst` is the source's `src`.
#[track_caller]
pub(crate) fn finish_and_check(source: &mut Node, dest: &mut Node, src: &Path, dst: &Path) {
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert_same_files("destination", dst, src);
}

/// Runs a short CLI command to the end.
#[track_caller]
pub(crate) fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Cli::spawn(args).finish(Duration::from_secs(60))
}

/// The command succeeded and printed `stdout` (trimmed) on stdout.
#[track_caller]
pub(crate) fn assert_ok(out: &Output, stdout: &str) {
    assert!(
        out.status.success() && text(&out.stdout).trim_end() == stdout,
        "expected success with {stdout:?}: {}; stdout {:?} stderr {:?}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// A plain `mirror` (no `--wait`) that must reply `Mirror started`.
#[track_caller]
pub(crate) fn start_mirror(source: &Node, port: u16, extra: &[&str]) {
    assert_ok(&run(&mirror_args(source, port, extra)), "Mirror started");
}

/// A source serving `size` bytes of data (from `seed`) and an empty
/// destination listening: both files and both nodes.
#[track_caller]
pub(crate) fn data_pair(env: &TestEnv, size: u64, seed: u64) -> (PathBuf, PathBuf, Node, Node) {
    let src = data_image(env, "source.img", size, seed);
    let dst = env.image("dest.img", size);
    let source = Node::serve(env, &src);
    let dest = Node::listen(env, &dst, "dest.sock", None);
    (src, dst, source, dest)
}

/// A sparse source of `size` bytes with what `write` writes to it (synced),
/// and an empty destination listening: both files and both nodes. With
/// `sendfile`, the source sends WRITE payloads with `sendfile` as to a
/// destination on another machine (a debug build's `FLEXNBD_TEST_SENDFILE`);
/// without, it reads them into a buffer, as to one on this machine.
#[track_caller]
fn sparse_pair(
    env: &TestEnv,
    size: u64,
    sendfile: bool,
    write: impl FnOnce(&File),
) -> (PathBuf, PathBuf, Node, Node) {
    let src = env.image("source.img", size);
    let f = File::options().write(true).open(&src).unwrap();
    write(&f);
    f.sync_all().unwrap();
    drop(f);
    let dst = env.image("dest.img", size);
    let source = Node::start(env, "serve", &src, "source.sock", |b| {
        b.env("FLEXNBD_TEST_SENDFILE", if sendfile { "1" } else { "0" })
    });
    let dest = Node::listen(env, &dst, "dest.sock", None);
    (src, dst, source, dest)
}

/// A source of `size` bytes of data (from `seed`) migrating into an empty
/// destination under `mirror --wait` at 1 MiB/s, once its first transfer
/// is acknowledged: the first 8 MiB go at once, the next one seconds later.
/// The source's file, the destination's, both nodes and the `mirror --wait`.
#[track_caller]
fn throttled_migration(env: &TestEnv, size: u64, seed: u64) -> (PathBuf, PathBuf, Node, Node, Cli) {
    let (src, dst, mut source, dest) = data_pair(env, size, seed);
    let waiting = Cli::spawn(&mirror_args(
        &source,
        dest.port,
        &["--wait", "-m", "1048576"],
    ));
    source.wait_progress(MAX_TRANSFER);
    (src, dst, source, dest, waiting)
}

/// A client of `node` writes `data` at `offset` and reads it back.
#[track_caller]
fn write_through_client(node: &Node, offset: u64, data: &[u8]) {
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(5),
        hello_timeout: Duration::from_secs(5),
        reply_timeout: Duration::from_secs(10),
        ..ConnectOptions::default()
    };
    let mut client = NbdClient::connect(node.addr(), &opts)
        .unwrap_or_else(|e| panic!("{} does not serve a client: {e}", node.file.display()));
    client.write_at(offset, data, true).unwrap();
    let mut back = vec![0u8; data.len()];
    client.read_at(offset, &mut back).unwrap();
    assert!(back == data, "a client read back something else");
    client.disconnect().unwrap();
}

// ---------------------------------------------------------------------------
// 1. fio writes while the file migrates.

/// A fio process, killed (by PID) when dropped.
struct Fio {
    child: Option<Child>,
    out: PathBuf,
}

impl Fio {
    /// Runs the job file `job` (with `uri` and the common options prepended).
    fn start(env: &TestEnv, uri: &str, jobs: &str) -> Fio {
        let job = env.child("writers.fio");
        // time_based with a runtime that outlasts the migration: the writers
        // are still writing at the handover, where their connections close
        // (fio then stops with "Transport endpoint is not connected", which
        // continue_on_error does not hide, so fio's own status is not checked).
        let text = format!(
            "[global]\nioengine=nbd\nuri={uri}\nrw=randwrite\ntime_based=1\nruntime=120\n\
             continue_on_error=all\nrandrepeat=0\n\n{jobs}"
        );
        std::fs::write(&job, text).unwrap();
        let out = env.child("fio.out");
        let child = Command::new("fio")
            .arg(&job)
            .arg(format!("--output={}", out.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run fio");
        Fio {
            child: Some(child),
            out,
        }
    }

    /// Waits up to [`EXIT_WITHIN`] for fio to stop by itself; returns its output.
    #[track_caller]
    fn wait(&mut self) -> String {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + EXIT_WITHIN;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("fio still running {EXIT_WITHIN:?} after the handover");
            }
            std::thread::sleep(POLL);
        }
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        format!(
            "{}\n{err}",
            std::fs::read_to_string(&self.out).unwrap_or_default()
        )
    }
}

impl Drop for Fio {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Migrates a 256 MiB file while fio writes to it through `jobs` (`writers`
/// connections), with the migration capped at `max_speed` so that the
/// writers overlap it; checks both exits and the files.
fn migrate_under_fio(jobs: &str, writers: u64, max_speed: &str) {
    if !require_tool("fio") {
        return;
    }
    let env = TestEnv::new();
    let size = 256 * MIB;
    let (src, dst, mut source, mut dest) = data_pair(&env, size, 1);
    let original = env.child("original.img");
    std::fs::copy(&src, &original).unwrap();

    let mut fio = Fio::start(&env, &format!("nbd://127.0.0.1:{}", source.port), jobs);
    // Every writer is connected before the migration starts.
    source.wait_status("fio's connections", |st| st.num_clients >= writers);
    let out = Cli::spawn(&mirror_args(
        &source,
        dest.port,
        &["--wait", "-m", max_speed],
    ))
    .finish(MIGRATION_WITHIN);
    assert_exit_0("mirror --wait", &out);
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    let fio_out = fio.wait();

    // After the handover the source serves nobody: its file as left is the data.
    assert_same_files("destination after the handover", &dst, &src);
    // The writers really wrote during the migration.
    let unchanged = std::fs::read(&original).unwrap() == std::fs::read(&src).unwrap();
    assert!(!unchanged, "fio wrote nothing to the source:\n{fio_out}");
}

#[test]
fn fio_writers_at_several_rates_and_sizes_during_migration() {
    migrate_under_fio(
        "[slow-4k]\nbs=4k\nrate=2m\n\n\
         [mixed]\nbsrange=512-128k\nrate=8m\nnumjobs=2\n\n\
         [big]\nbs=1m\nrate=16m\n",
        4,
        "100000000",
    );
}

#[test]
fn fio_unthrottled_small_writes_during_migration() {
    // Writers as fast as they can go, against a migration that is not capped
    // much: write-through must still make it converge.
    migrate_under_fio(
        "[fast-512]\nbs=512\n\n[fast-64k]\nbs=64k\niodepth=4\n",
        2,
        "200000000",
    );
}

// ---------------------------------------------------------------------------
// 2. --unlink, break, mirror-speed and status, sparse files.

/// A TCP relay between the source and the destination that can hold back the
/// destination's replies once the handshake is over.
struct Relay {
    port: u16,
    /// Bytes relayed from the source to the destination.
    up: Arc<AtomicU64>,
    /// The last bytes relayed from the source to the destination.
    tail: Arc<std::sync::Mutex<Vec<u8>>>,
    hold: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Relays one connection to `target`; replies are held while `hold` is
    /// set and the source has sent more than its handshake.
    fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicU64::new(0));
        let hold = Arc::new(AtomicBool::new(true));
        let tail = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up2, hold2, tail2) = (up.clone(), hold.clone(), tail.clone());
        let acceptor = std::thread::spawn(move || {
            let from_source = wire::accept_within(&listener, STATE_WITHIN, "the relay");
            let to_dest = TcpStream::connect(target).unwrap();
            for s in [&from_source, &to_dest] {
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            }
            let (src_r, dst_w) = (
                from_source.try_clone().unwrap(),
                to_dest.try_clone().unwrap(),
            );
            let counter = up2.clone();
            let upward = std::thread::spawn(move || {
                copy(src_r, dst_w, |chunk| {
                    counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                    let mut t = tail2.lock().unwrap();
                    t.extend_from_slice(chunk);
                    let excess = t.len().saturating_sub(TAIL);
                    t.drain(..excess);
                });
            });
            copy(to_dest, from_source, |_| {
                // The handshake is a few hundred bytes; the first WRITE is megabytes.
                let deadline = Instant::now() + Duration::from_secs(60);
                while hold2.load(Ordering::SeqCst)
                    && up2.load(Ordering::SeqCst) > 4096
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
            let _ = upward.join();
        });
        Relay {
            port,
            up,
            tail,
            hold,
            threads: vec![acceptor],
        }
    }

    fn release(&self) {
        self.hold.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.release();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How many of the last bytes from the source a [`Relay`] keeps: two request headers.
const TAIL: usize = 2 * Request::SIZE;

/// Copies until EOF or an error, calling `before(chunk)` before forwarding each chunk.
fn copy(mut from: TcpStream, mut to: TcpStream, mut before: impl FnMut(&[u8])) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                before(&buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn unlink_removes_the_source_only_after_every_byte_was_acknowledged() {
    let env = TestEnv::new();
    // No larger than the source's window (16 transfers of 1 MiB), so that
    // the copy is sent while the replies are held: all but the last MiB,
    // which the copy leaves to the write-through cycles (they wait for the
    // replies first).
    let size = 16 * MIB;
    let copied = (size - MIB) as usize;
    let (src, dst, mut source, mut dest) = data_pair(&env, size, 2);
    let original = env.child("original.img");
    std::fs::copy(&src, &original).unwrap();
    let relay = Relay::start(dest.addr());

    start_mirror(&source, relay.port, &["--unlink"]);
    // The copy reaches the destination, which writes it; its replies are held.
    let deadline = Instant::now() + MIGRATION_WITHIN;
    while relay.up.load(Ordering::SeqCst) < copied as u64 {
        assert!(
            Instant::now() < deadline,
            "the source did not send everything"
        );
        std::thread::sleep(POLL);
    }
    let deadline = Instant::now() + STATE_WITHIN;
    loop {
        if std::fs::read(&dst).unwrap()[..copied] == std::fs::read(&original).unwrap()[..copied] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the destination did not write the copy"
        );
        std::thread::sleep(POLL);
    }
    // The data is there, but unacknowledged: the source keeps its file.
    let held_until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < held_until {
        assert!(
            src.exists(),
            "the source unlinked its file before the destination acknowledged everything"
        );
        let st = source.status();
        assert!(st.migration.is_some(), "{st:?}");
        std::thread::sleep(POLL);
    }
    relay.release();
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert!(!src.exists(), "--unlink left the source file");
    assert_same_files("destination", &dst, &original);
    // To a newstyle destination the last requests are a FLUSH, so that what
    // it acknowledged is durable before the source lets go, then DISCONNECT.
    let tail = relay.tail.lock().unwrap().clone();
    let flush = Request::decode(tail[..Request::SIZE].try_into().unwrap()).unwrap();
    let disc = Request::decode(tail[Request::SIZE..].try_into().unwrap()).unwrap();
    assert_eq!(
        (flush.cmd, flush.handle, flush.offset, flush.len),
        (Cmd::FLUSH, MIRROR_HANDLE, 0, 0),
        "{flush:?}"
    );
    assert_eq!(
        (disc.cmd, disc.offset, disc.len),
        (Cmd::DISC, 0, 0),
        "{disc:?}"
    );
}

#[test]
fn break_mid_migration_keeps_serving_and_a_new_mirror_completes() {
    let env = TestEnv::new();
    let size = 32 * MIB;
    let (src, dst, mut source, mut dest, waiting) = throttled_migration(&env, size, 3);
    assert_ok(
        &run(&["break", "-s", source.sock.to_str().unwrap()]),
        "mirror stopped",
    );

    // `mirror --wait` reports the stop and fails.
    let out = waiting.finish(STATE_WITHIN);
    assert!(
        !out.status.success() && text(&out.stderr).contains("stopped"),
        "mirror --wait after break: {}; stdout {:?} stderr {:?}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    // The source still has control and serves; no migration is left.
    let st = source.status();
    assert!(
        st.migration.is_none() && st.has_control && st.clients_allowed,
        "{st:?}"
    );
    assert!(
        source.status_line().contains(" is_mirroring=false "),
        "{}",
        source.status_line()
    );
    let late = pattern(64 * 1024, 33);
    write_through_client(&source, 20 * MIB + 512, &late);
    // The destination keeps listening, without control, its slot freed.
    dest.wait_status("the destination's slot", |st| st.num_clients == 0);
    assert!(!dest.status().has_control);

    // A new migration starts and completes, with the write made after the break.
    migrate_and_check(&mut source, &mut dest, &src, &dst);
    let mut back = vec![0u8; late.len()];
    File::open(&dst)
        .unwrap()
        .read_exact_at(&mut back, 20 * MIB + 512)
        .unwrap();
    assert!(
        back == late,
        "the write made after the break did not migrate"
    );
}

/// The keys of a status reply, in order.
fn keys(line: &str) -> Vec<&str> {
    line.strip_prefix("0: ")
        .unwrap_or(line)
        .split_whitespace()
        .map(|pair| pair.split_once('=').unwrap().0)
        .collect()
}

/// flexnbd-c's keys while mirroring with a limit, in flexnbd-c's order.
const C_KEYS: [&str; 11] = [
    "pid",
    "size",
    "is_mirroring",
    "clients_allowed",
    "num_clients",
    "has_control",
    "migration_speed",
    "migration_duration",
    "migration_seconds_left",
    "migration_bytes_left",
    "migration_speed_limit",
];

#[test]
fn mirror_speed_slows_a_running_migration_and_status_shows_it() {
    let env = TestEnv::new();
    let size = 256 * MIB;
    let (src, dst, mut source, mut dest) = data_pair(&env, size, 4);
    let sock = source.sock.to_str().unwrap().to_owned();

    let fast = 32 * MIB;
    start_mirror(&source, dest.port, &["-m", &fast.to_string()]);
    source.wait_progress(MAX_TRANSFER);

    // flexnbd-c's keys first, in its order, then ours; the JSON has the same.
    let line = source.status_line();
    assert_eq!(keys(&line)[..C_KEYS.len()], C_KEYS, "{line}");
    assert!(line.contains(" is_mirroring=true "), "{line}");
    assert!(
        line.contains(&format!(" migration_speed_limit={fast} ")),
        "{line}"
    );
    let json = run(&["status", "-s", &sock, "--json"]);
    assert!(json.status.success(), "{}", text(&json.stderr));
    let json = text(&json.stdout);
    for key in C_KEYS.iter().skip(1) {
        assert!(
            json.contains(&format!("\"{key}\":")),
            "{key} missing: {json}"
        );
    }
    assert!(
        json.contains(&format!("\"migration_speed_limit\":{fast}")),
        "{json}"
    );

    // Slow it down.
    let slow = MIB;
    assert_ok(
        &run(&["mirror-speed", "-s", &sock, "-m", &slow.to_string()]),
        "updated",
    );
    let before = source.status();
    let t0 = Instant::now();
    assert_eq!(before.migration.as_ref().unwrap().speed_limit, Some(slow));
    // Watch it for a few seconds (the status polls are the measurement).
    let mut after = before.clone();
    while t0.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
        after = source.status();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (b, a) = (before.migration.unwrap(), after.migration.clone().unwrap());
    let progress = b.bytes_left.saturating_sub(a.bytes_left);
    // At 1 MiB/s an 8 MiB transfer waits 8 s for the next. Besides what the
    // limit allows, only transfers already taken under the old limit may be
    // acknowledged in the window (one in flight, one waiting, one more on a
    // loaded machine); unthrottled it would be about 96 MiB.
    let most = (slow as f64 * (elapsed + 1.0)) as u64 + 3 * MAX_TRANSFER;
    assert!(
        progress <= most,
        "{progress} bytes in {elapsed:.1} s at a limit of {slow} bytes/s (at most {most})"
    );
    assert!(a.bytes_left > 0 && a.bytes_left <= size, "{a:?}");
    // Honest values: the ETA is flexnbd-c's bytes_left / (speed + 1), the
    // duration counts whole seconds of this attempt, and the average speed
    // is no more than the first limit allows (plus the unthrottled first transfer).
    assert_eq!(a.seconds_left, a.bytes_left / (a.speed + 1), "{a:?}");
    assert!(a.duration >= b.duration + 2, "{b:?} then {a:?}");
    assert!(
        a.speed <= fast + MAX_TRANSFER && a.speed > 0,
        "migration_speed {} with limits {fast} then {slow}",
        a.speed
    );
    assert_eq!(a.phase, Some(Phase::Copying), "{a:?}");

    // Lift the limit: it completes.
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst);
}

#[test]
fn sparse_1g_file_with_50m_of_data_migrates_and_stays_sparse() {
    let env = TestEnv::new();
    let size = 1024 * MIB;
    let (src, dst, mut source, mut dest) = sparse_pair(&env, size, false, |f| {
        for i in 0..50u64 {
            f.write_all_at(&pattern(MIB as usize, 100 + i), i * 20 * MIB + 4096)
                .unwrap();
        }
    });

    migrate_and_check(&mut source, &mut dest, &src, &dst);
    let (a_src, a_dst) = (allocated(&src), allocated(&dst));
    assert!(
        a_dst >= 50 * MIB && a_dst <= a_src + MIB,
        "the destination has {a_dst} bytes allocated, the source {a_src}"
    );
}

/// The zero check finds data far into a range of zeroes (the last byte of
/// a transfer, a few bytes in its middle, the last byte of the file): it
/// still goes as a WRITE, and the rest stays sparse. Both ways of sending:
/// read piece by piece then `sendfile` (to another machine), and read whole
/// into a buffer (to this one).
#[test]
fn data_deep_inside_ranges_of_zeroes_is_sent() {
    for sendfile in [false, true] {
        let env = TestEnv::new();
        let size = 64 * MIB;
        let (src, dst, mut source, mut dest) = sparse_pair(&env, size, sendfile, |f| {
            f.write_all_at(&[0x5a], MAX_TRANSFER - 1).unwrap();
            f.write_all_at(b"deep", 2 * MAX_TRANSFER + 5 * MIB + 7)
                .unwrap();
            f.write_all_at(&pattern(3 * MIB as usize, 9), 40 * MIB + 5)
                .unwrap();
            f.write_all_at(&[0xa5], size - 1).unwrap();
        });

        migrate_and_check(&mut source, &mut dest, &src, &dst);
        // Data lies in 7 of the source's transfers; the rest is zeroes.
        let a_dst = allocated(&dst);
        assert!(
            a_dst <= 7 * flexnbd::mirror::MAX_TRANSFER + MIB,
            "sendfile {sendfile}: the destination has {a_dst} bytes allocated: \
             ranges of zeroes were written"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. A process killed mid-transfer.

/// The destination is killed once `kill_at` bytes are acknowledged (at
/// `speed` bytes/s) and restarted on the same port, on `fresh` file or the
/// same one: the source retries and completes. Returns the source, exited,
/// and what it had sent when the destination died.
pub(crate) fn destination_killed_and_restarted(
    env: &TestEnv,
    fresh: bool,
    speed: &str,
    kill_at: u64,
) -> (Node, u64) {
    let size = 32 * MIB;
    let src = data_image(env, "source.img", size, 5);
    let dst = env.image("dest.img", size);
    // A short request limit: the source notices a dead destination quickly.
    let mut source = Node::start(env, "serve", &src, "source.sock", |b| {
        b.env("FLEXNBD_MS_REQUEST_LIMIT_SECS", "5")
    });
    let mut dest = Node::listen(env, &dst, "dest.sock", None);
    let dest_port = dest.port;

    start_mirror(&source, dest_port, &["-m", speed]);
    source.wait_progress(kill_at);
    dest.daemon.signal(Signal::KILL);
    dest.daemon.wait_exit(EXIT_WITHIN);
    let st = source.wait_status("a retry", |st| {
        st.migration
            .as_ref()
            .is_some_and(|m| m.retries.unwrap_or(0) >= 1)
    });
    let sent = st.migration.and_then(|m| m.bytes_sent).unwrap_or(0);

    let dst2 = if fresh {
        env.image("dest2.img", size)
    } else {
        dst
    };
    let mut dest = Node::listen(env, &dst2, "dest2.sock", Some(dest_port));
    // The new destination gets the migration again.
    dest.wait_status("the source reconnecting", |st| st.num_clients == 1);
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst2);
    (source, sent)
}

#[test]
fn destination_killed_and_restarted_on_the_same_file_gets_everything() {
    destination_killed_and_restarted(&TestEnv::new(), false, "1048576", MAX_TRANSFER);
}

#[test]
fn destination_killed_and_restarted_on_a_fresh_file_gets_everything() {
    destination_killed_and_restarted(&TestEnv::new(), true, "1048576", MAX_TRANSFER);
}

#[test]
fn source_killed_mid_transfer_leaves_the_destination_listening_without_control() {
    let env = TestEnv::new();
    let size = 32 * MIB;
    let (src, dst, mut source, mut dest, waiting) = throttled_migration(&env, size, 6);
    let first = MAX_TRANSFER as usize;
    let mut a = vec![0u8; first];
    File::open(&src).unwrap().read_exact_at(&mut a, 0).unwrap();
    let dest_head = || {
        let mut b = vec![0u8; first];
        File::open(&dst).unwrap().read_exact_at(&mut b, 0).unwrap();
        b
    };
    assert!(
        dest_head() == a,
        "acknowledged, but not in the destination file"
    );
    source.daemon.signal(Signal::KILL);
    source.daemon.wait_exit(EXIT_WITHIN);
    // `mirror --wait` reports the loss and fails.
    let out = waiting.finish(STATE_WITHIN);
    assert!(
        out.status.code() == Some(1) && text(&out.stderr).contains("went away before the handover"),
        "mirror --wait after the source died: {}; stdout {:?} stderr {:?}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );

    // The connection is gone; the destination keeps its partial data and listens on.
    dest.wait_status("the dead source's connection to close", |st| {
        st.num_clients == 0
    });
    let st = dest.status();
    assert!(!st.has_control, "{st:?}");
    assert!(
        dest_head() == a,
        "the destination lost the acknowledged first transfer"
    );
    assert!(
        dest.daemon.try_wait_exit(Duration::from_secs(1)).is_none(),
        "the destination exited after its source died; stderr:\n{}",
        dest.daemon.stderr()
    );
    // Without control a stop exits 1.
    assert_eq!(dest.daemon.stop().code(), Some(1));
}

// ---------------------------------------------------------------------------
// 4. mirror --wait.

/// A source of 64 MiB (sparse apart from its first 8 MiB) and an empty destination.
fn small_pair(env: &TestEnv) -> (Node, Node) {
    let size = 64 * MIB;
    let src = env.image("source.img", size);
    fill(&src, MAX_TRANSFER, 7);
    let dst = env.image("dest.img", size);
    (
        Node::serve(env, &src),
        Node::listen(env, &dst, "dest.sock", None),
    )
}

#[test]
fn mirror_wait_on_a_terminal_draws_a_progress_bar() {
    if !require_tool("script") {
        return;
    }
    let env = TestEnv::new();
    let (mut source, mut dest) = small_pair(&env);
    // About two seconds at 32 MiB/s: the bar is drawn several times.
    let args = mirror_args(&source, dest.port, &["--wait", "-m", "33554432"]);
    let command = std::iter::once(crate::support::flexnbd_path().to_str().unwrap().to_owned())
        .chain(args)
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script
        .args(["-qefc", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("CI");
    let child = script
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Cli { child: Some(child) }.finish(MIGRATION_WITHIN);
    let screen = text(&out.stdout);
    assert!(
        out.status.success(),
        "{}: {screen:?} {:?}",
        out.status,
        text(&out.stderr)
    );
    for part in [
        "Mirror started",
        "[",
        "/s",
        "eta",
        "MiB",
        "to send",
        "sent",
        "retries",
        "copying",
        "handed over",
        "Migration complete",
    ] {
        assert!(
            screen.contains(part),
            "no {part:?} on the terminal: {screen:?}"
        );
    }
    assert!(
        screen.contains('\r') || screen.contains('\x1b'),
        "no redrawn bar: {screen:?}"
    );
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert_same_files("destination", &dest.file, &source.file);
}

#[test]
fn mirror_wait_on_a_pipe_prints_plain_progress_lines() {
    let env = TestEnv::new();
    let (mut source, mut dest) = small_pair(&env);
    let out = Cli::spawn(&mirror_args(
        &source,
        dest.port,
        &["--wait", "-m", "33554432"],
    ))
    .finish(MIGRATION_WITHIN);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "{}: {stdout:?} {stderr:?}",
        out.status
    );
    assert!(
        stdout.starts_with("Mirror started\nMigration complete in "),
        "{stdout:?}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("mirror: "))
        .unwrap_or_else(|| panic!("no progress line: {stderr:?}"));
    for part in [
        "/67108864 bytes",
        "bytes left to send",
        "eta ",
        "bytes sent",
        "retries",
    ] {
        assert!(line.contains(part), "no {part:?} in {line:?}");
    }
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "{stderr:?}"
    );
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert_same_files("destination", &dest.file, &source.file);
}
