//! The flexnbd hash extension end to end (docs/hash-extension.md): our
//! `serve` mirrors into our `listen`, real processes, files on disk.
//!
//! - `mirror --verify` finds a block corrupted in the destination's file
//!   behind its server's back mid-migration, sends it again, and hands over
//!   a byte-identical copy; a destination that keeps corrupting (a relay
//!   spoils every WRITE to its first block) makes the migration fail
//!   instead, and the source keeps serving.
//! - Incremental: into a destination that holds a copy with 1% of its
//!   64 KiB blocks changed, only about that much is sent; a retry after the
//!   destination was killed half-way sends only what is missing (the
//!   retry sends at most 60% of the file).
//! - `--verify` into the C flexnbd's `listen` (no extension) is refused at
//!   the start; plain migrations into it are unchanged (`mirror_faults`).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::migration::{
    Cli, EXIT_WITHIN, MIGRATION_WITHIN, Node, UNLIMITED, assert_ok, assert_same_files, data_image,
    data_pair, destination_killed_and_restarted, lift_the_limit_and_check, mirror_args, run,
    start_mirror,
};
use crate::support::{MIB, TestEnv, pattern, text, wait_until};

/// The block size our `listen` hashes by.
const BLOCK: u64 = 64 << 10;

/// The bytes the source sent over all attempts, from its last log line.
#[track_caller]
fn bytes_sent(source: &Node) -> u64 {
    let log = source.daemon.stderr();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("handover: ") && l.contains(" bytes sent for "))
        .unwrap_or_else(|| panic!("no handover line in the source's log:\n{log}"));
    let after = &line[line.find("handover: ").unwrap() + "handover: ".len()..];
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// Overwrites `len` bytes at `offset` of `path` with garbage, behind its server's back.
fn corrupt(path: &Path, offset: u64, len: usize, seed: u64) {
    let f = File::options().write(true).open(path).unwrap();
    f.write_all_at(&pattern(len, seed), offset).unwrap();
}

/// A source of `size` bytes of data (from `seed`) migrating into an empty
/// destination under `mirror --wait --verify` at `speed` bytes/s, once 8 MiB
/// are on the destination: both files, both nodes and the `mirror --wait`.
fn verified_migration_under_way(
    env: &TestEnv,
    size: u64,
    seed: u64,
    speed: &str,
) -> (PathBuf, PathBuf, Node, Node, Cli) {
    let (src, dst, mut source, dest) = data_pair(env, size, seed);
    let waiting = Cli::spawn(&mirror_args(
        &source,
        dest.port,
        &["--wait", "--verify", "-m", speed],
    ));
    source.wait_progress(8 * MIB);
    (src, dst, source, dest, waiting)
}

/// The `mirror --wait` ended with a verified handover.
#[track_caller]
fn assert_verified(waiting: Cli) {
    let out = waiting.finish(MIGRATION_WITHIN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Migration complete and verified"),
        "{:?}",
        text(&out.stdout)
    );
}

#[test]
fn verify_repairs_a_destination_corrupted_behind_its_back() {
    let env = TestEnv::new();
    let (src, dst, mut source, mut dest, waiting) =
        verified_migration_under_way(&env, 24 * MIB, 41, "1048576");
    // The first transfers are on the destination: spoil some of them.
    corrupt(&dst, 4096, 100, 1);
    corrupt(&dst, 3 * MIB, 2 * BLOCK as usize, 2);
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst);
    assert_verified(waiting);
    let log = source.daemon.stderr();
    // Found by the check before the handover, while clients were still served.
    assert!(
        log.contains("differ before the handover"),
        "no mismatch was logged:\n{log}"
    );
    assert!(log.contains("verified: the destination's hashes match ours"));
}

/// A relay in front of a destination that spoils every WRITE to offset 0 on
/// its way there (it flips one byte of the payload): a destination that
/// keeps corrupting what it is sent, however often it is repaired.
fn start_flipping_relay(dest: SocketAddr) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for source in listener.incoming() {
            let Ok(source) = source else { return };
            let Ok(dest) = TcpStream::connect(dest) else {
                return;
            };
            let (mut down_from, mut down_to) =
                (dest.try_clone().unwrap(), source.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut down_from, &mut down_to);
                let _ = down_to.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = flip_writes_at_zero(source, dest);
            });
        }
    });
    port
}

/// Forwards a newstyle client's bytes: the flags, the options up to GO,
/// then requests, with byte 100 of every WRITE at offset 0 flipped.
fn flip_writes_at_zero(source: TcpStream, mut dest: TcpStream) -> std::io::Result<()> {
    let mut from = BufReader::new(source);
    let take = |n: usize, from: &mut BufReader<TcpStream>| -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        from.read_exact(&mut b)?;
        Ok(b)
    };
    dest.write_all(&take(4, &mut from)?)?;
    loop {
        let head = take(16, &mut from)?;
        let opt = u32::from_be_bytes(head[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(head[12..16].try_into().unwrap()) as usize;
        dest.write_all(&head)?;
        dest.write_all(&take(len, &mut from)?)?;
        if opt == 7 {
            break;
        }
    }
    loop {
        let head = take(28, &mut from)?;
        dest.write_all(&head)?;
        let cmd = u16::from_be_bytes(head[6..8].try_into().unwrap());
        let offset = u64::from_be_bytes(head[16..24].try_into().unwrap());
        let len = u32::from_be_bytes(head[24..28].try_into().unwrap()) as usize;
        if cmd == 1 {
            let mut payload = take(len, &mut from)?;
            if offset == 0 && len > 100 {
                payload[100] ^= 0xff;
            }
            dest.write_all(&payload)?;
        }
    }
}

#[test]
fn verify_fails_rather_than_hand_over_to_a_destination_that_keeps_corrupting() {
    let env = TestEnv::new();
    let size = 16 * MIB;
    let (_src, dst, mut source, mut dest) = data_pair(&env, size, 42);
    let relay = start_flipping_relay(dest.addr());
    start_mirror(&source, relay, &["--verify", "-m", "1048576"]);
    let running = source.wait_progress(8 * MIB);
    assert_eq!(running.migration.unwrap().verified, Some(false));
    assert!(source.status_line().contains("migration_verified=false"));
    let sock = source.sock.to_str().unwrap().to_owned();
    assert_ok(
        &run(&["mirror-speed", "-s", &sock, "-m", UNLIMITED]),
        "updated",
    );
    let st = source.wait_status("the migration failing", |st| {
        st.migration.is_none() && st.last_migration.is_some()
    });
    assert_eq!(
        st.last_migration,
        Some(flexnbd::status::Outcome::Failed),
        "{st:?}"
    );
    assert!(!st.last_verified);
    assert!(st.clients_allowed && st.has_control, "{st:?}");
    let log = source.daemon.stderr();
    assert!(
        log.contains("still differs after 3 repairs"),
        "no verify failure in the source's log:\n{log}"
    );
    // The destination never got control and holds the spoilt block; the source still serves.
    assert!(dest.daemon.is_running());
    assert!(!dest.status().has_control);
    let mut head = [0u8; 4096];
    File::open(&dst)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert_ne!(head[..], pattern(MIB as usize, 42)[..4096]);
    let out = run(&[
        "read",
        "-l",
        "127.0.0.1",
        "-p",
        &source.port.to_string(),
        "-F",
        "0",
        "-S",
        "4096",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, pattern(MIB as usize, 42)[..4096]);
}

/// A copy of `src` in which `percent`% of the 64 KiB blocks (spread
/// evenly) were changed.
fn changed_copy(env: &TestEnv, src: &Path, name: &str, percent: u64) -> PathBuf {
    let dst = env.child(name);
    std::fs::copy(src, &dst).unwrap();
    let blocks = src.metadata().unwrap().len() / BLOCK;
    let step = 100 / percent;
    for (i, block) in (0..blocks).step_by(step as usize).enumerate() {
        // Change a few bytes in the middle of the block.
        corrupt(&dst, block * BLOCK + 1000 + i as u64, 64, 100 + i as u64);
    }
    dst
}

/// Migrates a `size`-byte file into a destination holding a copy with 1%
/// of its blocks changed, with `extra` options on `mirror --wait`; checks
/// the handover and returns the bytes sent and the source's log.
fn migrate_into_a_copy(size: u64, seed: u64, extra: &[&str]) -> (u64, String) {
    let env = TestEnv::new();
    let src = data_image(&env, "source.img", size, seed);
    let dst = changed_copy(&env, &src, "dest.img", 1);
    let mut source = Node::serve(&env, &src);
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    let mut args = vec!["--wait"];
    args.extend_from_slice(extra);
    let out = Cli::spawn(&mirror_args(&source, dest.port, &args)).finish(MIGRATION_WITHIN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert_same_files("destination", &dst, &src);
    (bytes_sent(&source), source.daemon.stderr())
}

#[test]
fn incremental_into_a_copy_with_one_percent_changed_sends_little() {
    let size = 64 * MIB;
    let (sent, log) = migrate_into_a_copy(size, 43, &["--verify"]);
    assert!(
        sent <= size * 3 / 100,
        "{sent} bytes sent for a {size}-byte file of which 1% differed"
    );
    assert!(log.contains("incremental: "), "{log}");
}

/// A `listen` over a copy with 1% changed, given time to hash its file
/// ahead (until its log says so); then, with `behind_its_back`, one block
/// that was the same as the source's is changed in its file by another
/// process. Migrates without `--verify`; checks the copy is byte-identical
/// and returns the destination's log.
fn migrate_into_a_copy_hashed_ahead(seed: u64, behind_its_back: bool) -> String {
    let env = TestEnv::new();
    let size = 16 * MIB;
    let src = data_image(&env, "source.img", size, seed);
    let dst = changed_copy(&env, &src, "dest.img", 1);
    let mut source = Node::serve(&env, &src);
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    wait_until(
        "the destination's hashes computed ahead",
        MIGRATION_WITHIN,
        || dest.daemon.stderr().contains(" bytes ahead in "),
    );
    if behind_its_back {
        // Block 5 is one changed_copy left alone: a hash kept from before
        // this would match the source's, and the block would not be sent.
        corrupt(&dst, 5 * BLOCK + 7, 32, 9);
    }
    let out = Cli::spawn(&mirror_args(&source, dest.port, &["--wait"])).finish(MIGRATION_WITHIN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert_same_files("destination", &dst, &src);
    assert!(bytes_sent(&source) <= size * 3 / 100);
    dest.daemon.stderr()
}

#[test]
fn hashes_computed_ahead_answer_the_comparison() {
    let log = migrate_into_a_copy_hashed_ahead(46, false);
    let answered = format!(
        "{} bytes of hash requests were answered from hashes computed ahead",
        16 * MIB
    );
    assert!(log.contains(&answered), "{log}");
}

#[test]
fn a_change_behind_the_destinations_back_drops_the_hashes_computed_ahead() {
    let log = migrate_into_a_copy_hashed_ahead(47, true);
    assert!(
        log.contains("the file changed behind the server's back"),
        "{log}"
    );
}

#[test]
fn no_incremental_copies_everything_into_a_copy() {
    let size = 16 * MIB;
    let (sent, _) = migrate_into_a_copy(size, 44, &["--no-incremental"]);
    assert!(sent >= size);
}

#[test]
fn a_retry_after_the_destination_died_half_way_sends_only_what_is_missing() {
    let env = TestEnv::new();
    let size = 32 * MIB;
    // The same file: what the first attempt wrote is there.
    let (source, first) = destination_killed_and_restarted(&env, false, "4194304", size / 2);
    let retry = bytes_sent(&source) - first;
    assert!(
        retry <= size * 60 / 100,
        "the retry sent {retry} bytes of a {size}-byte file (the first attempt {first})"
    );
}

#[test]
fn verify_into_the_c_listen_is_refused_at_the_start() {
    let Some(c) = crate::support::flexnbd_c() else {
        return;
    };
    let env = TestEnv::new();
    let size = 4 * MIB;
    let src = data_image(&env, "source.img", size, 46);
    let dst = env.image("c-dest.img", size);
    let source = Node::serve(&env, &src);
    let (mut c_dest, c_addr, _) = crate::mirror_faults::start_c(&env, &c, "listen", &dst);
    let out = run(&mirror_args(&source, c_addr.port(), &["--verify"]));
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("cannot verify") || text(&out.stderr).contains("cannot verify"),
        "stdout {:?} stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // Without --verify the same destination takes the migration.
    let out = run(&mirror_args(&source, c_addr.port(), &[]));
    assert_ok(&out, "Mirror started");
    let st = c_dest.wait_exit(EXIT_WITHIN);
    assert_eq!(st.code(), Some(0), "{}", c_dest.stderr());
    assert_same_files("destination", &dst, &src);
}

#[test]
fn an_idle_source_hashes_its_file_during_the_copy_for_verify() {
    let env = TestEnv::new();
    let size = 16 * MIB;
    let (src, dst, mut source, mut dest, waiting) =
        verified_migration_under_way(&env, size, 49, "2097152");
    // A thread of the source hashes its file behind the copy, never past
    // it: with the copy paused half-way (after at least 4 s at 2 MiB/s,
    // where the whole file takes a few ms to hash), it has not finished.
    let sock = source.sock.to_str().unwrap().to_owned();
    assert_ok(&run(&["mirror-speed", "-s", &sock, "-m", "0"]), "updated");
    let log = source.daemon.stderr();
    assert!(
        log.contains("hashing ahead caught up with the copy"),
        "{log}"
    );
    assert!(
        !log.contains(" bytes ahead in "),
        "it read past the copy:\n{log}"
    );
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst);
    assert_verified(waiting);
    let log = source.daemon.stderr();
    // The comparison before the handover took all of its side from them.
    let ahead = format!("{size} bytes of ours hashed during the copy");
    assert!(log.contains(&ahead), "{log}");
}

#[test]
fn verify_with_a_client_writing_throughout_hands_over_a_verified_copy() {
    let env = TestEnv::new();
    let size = 16 * MIB;
    let (src, dst, mut source, mut dest, waiting) =
        verified_migration_under_way(&env, size, 48, "4194304");
    // A client writes 4 KiB blocks all over the file until the handover
    // closes its connection.
    let addr = source.addr();
    let writer = std::thread::spawn(move || {
        let opts = flexnbd::client::ConnectOptions {
            reply_timeout: std::time::Duration::from_secs(10),
            ..flexnbd::client::ConnectOptions::default()
        };
        let mut client = flexnbd::client::NbdClient::connect(addr, &opts).unwrap();
        let mut n = 0u64;
        loop {
            let offset = (n * 7919 % (size / 4096)) * 4096;
            if client
                .write_at(offset, &pattern(4096, 1000 + n), false)
                .is_err()
            {
                return n;
            }
            n += 1;
        }
    });
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst);
    let writes = writer.join().unwrap();
    assert!(writes > 0);
    assert_verified(waiting);
}
