//! The flexnbd hash extension end to end (docs/hash-extension.md): our
//! `serve` mirrors into our `listen`, real processes, files on disk.
//!
//! - `mirror --verify` finds a block corrupted in the destination's file
//!   behind its server's back mid-migration, sends it again, and hands over
//!   a byte-identical copy; a destination that keeps corrupting makes the
//!   migration fail instead, and the source keeps serving.
//! - Incremental: into a destination that holds a copy with 1% of its
//!   64 KiB blocks changed, only about that much is sent; a retry after the
//!   destination was killed half-way sends only what is missing (the
//!   retry sends at most 60% of the file).
//! - `--verify` into the C flexnbd's `listen` (no extension) is refused at
//!   the start; plain migrations into it are unchanged (`mirror_faults`).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::migration::{
    Cli, EXIT_WITHIN, MIB, MIGRATION_WITHIN, Node, UNLIMITED, assert_ok, assert_same_files,
    data_image, lift_the_limit_and_check, mirror_args, run, start_mirror,
};
use crate::support::{Signal, TestEnv, pattern, text};

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

#[test]
fn verify_repairs_a_destination_corrupted_behind_its_back() {
    let env = TestEnv::new();
    let size = 24 * MIB;
    let src = data_image(&env, "source.img", size, 41);
    let dst = env.image("dest.img", size);
    let mut source = Node::serve(&env, &src);
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    let waiting = Cli::spawn(&mirror_args(
        &source,
        dest.port,
        &["--wait", "--verify", "-m", "1048576"],
    ));
    // The first transfers are on the destination: spoil some of them.
    source.wait_progress(8 * MIB);
    corrupt(&dst, 4096, 100, 1);
    corrupt(&dst, 3 * MIB, 2 * BLOCK as usize, 2);
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst);
    let out = waiting.finish(MIGRATION_WITHIN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("Migration complete and verified"),
        "{:?}",
        text(&out.stdout)
    );
    let log = source.daemon.stderr();
    assert!(log.contains("verify: "), "no mismatch was logged:\n{log}");
    assert!(log.contains("verified: the destination's hashes match ours"));
}

#[test]
fn verify_fails_rather_than_hand_over_to_a_destination_that_keeps_corrupting() {
    let env = TestEnv::new();
    let size = 16 * MIB;
    let src = data_image(&env, "source.img", size, 42);
    let dst = env.image("dest.img", size);
    let mut source = Node::serve(&env, &src);
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    start_mirror(&source, dest.port, &["--verify", "-m", "1048576"]);
    source.wait_progress(8 * MIB);
    // From here on, the first block of the destination's file is spoilt
    // again and again, however often the source repairs it.
    let stop = Arc::new(AtomicBool::new(false));
    let corrupter = {
        let (stop, dst) = (stop.clone(), dst.clone());
        std::thread::spawn(move || {
            let f = File::options().write(true).open(&dst).unwrap();
            let junk = pattern(4096, 3);
            while !stop.load(Ordering::SeqCst) {
                f.write_all_at(&junk, 0).unwrap();
            }
        })
    };
    let sock = source.sock.to_str().unwrap().to_owned();
    assert_ok(
        &run(&["mirror-speed", "-s", &sock, "-m", UNLIMITED]),
        "updated",
    );
    let st = source.wait_status("the migration failing", |st| {
        st.migration.is_none() && st.last_migration.is_some()
    });
    stop.store(true, Ordering::SeqCst);
    corrupter.join().unwrap();
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
    // The destination never got control; the source still serves.
    assert!(dest.daemon.is_running());
    assert!(!dest.status().has_control);
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
fn changed_copy(env: &TestEnv, src: &Path, name: &str, percent: u64) -> std::path::PathBuf {
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

#[test]
fn incremental_into_a_copy_with_one_percent_changed_sends_little() {
    let env = TestEnv::new();
    let size = 64 * MIB;
    let src = data_image(&env, "source.img", size, 43);
    let dst = changed_copy(&env, &src, "dest.img", 1);
    let mut source = Node::serve(&env, &src);
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    let out = Cli::spawn(&mirror_args(&source, dest.port, &["--wait", "--verify"]))
        .finish(MIGRATION_WITHIN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert_same_files("destination", &dst, &src);
    let sent = bytes_sent(&source);
    assert!(
        sent <= size * 3 / 100,
        "{sent} bytes sent for a {size}-byte file of which 1% differed"
    );
    let log = source.daemon.stderr();
    assert!(log.contains("incremental: "), "{log}");
}

#[test]
fn no_incremental_copies_everything_into_a_copy() {
    let env = TestEnv::new();
    let size = 16 * MIB;
    let src = data_image(&env, "source.img", size, 44);
    let dst = changed_copy(&env, &src, "dest.img", 1);
    let mut source = Node::serve(&env, &src);
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    let out = Cli::spawn(&mirror_args(
        &source,
        dest.port,
        &["--wait", "--no-incremental"],
    ))
    .finish(MIGRATION_WITHIN);
    assert!(out.status.success(), "{}", text(&out.stderr));
    source.assert_exits(0, "source after the handover");
    dest.assert_exits(0, "destination after the handover");
    assert_same_files("destination", &dst, &src);
    assert!(bytes_sent(&source) >= size);
}

#[test]
fn a_retry_after_the_destination_died_half_way_sends_only_what_is_missing() {
    let env = TestEnv::new();
    let size = 32 * MIB;
    let src = data_image(&env, "source.img", size, 45);
    let dst = env.image("dest.img", size);
    let mut source = Node::start(&env, "serve", &src, "source.sock", |b| {
        b.env("FLEXNBD_MS_REQUEST_LIMIT_SECS", "5")
    });
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    let dest_port = dest.port;
    start_mirror(&source, dest_port, &["-m", "4194304"]);
    source.wait_progress(size / 2);
    dest.daemon.signal(Signal::KILL);
    dest.daemon.wait_exit(EXIT_WITHIN);
    let st = source.wait_status("a retry", |st| {
        st.migration
            .as_ref()
            .is_some_and(|m| m.retries.unwrap_or(0) >= 1)
    });
    // What the first attempt sent, about half the file.
    let first = st.migration.unwrap().bytes_sent.unwrap();
    // The same file: what the first attempt wrote is there.
    let mut dest = Node::listen(&env, &dst, "dest2.sock", Some(dest_port));
    dest.wait_status("the source reconnecting", |st| st.num_clients == 1);
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst);
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
fn status_shows_the_verification() {
    let env = TestEnv::new();
    let size = 4 * MIB;
    let src = data_image(&env, "source.img", size, 47);
    let dst = env.image("dest.img", size);
    let mut source = Node::serve(&env, &src);
    let mut dest = Node::listen(&env, &dst, "dest.sock", None);
    start_mirror(&source, dest.port, &["--verify", "-m", "1048576"]);
    let st = source.wait_status("mirroring", |st| st.migration.is_some());
    let m = st.migration.unwrap();
    assert_eq!(m.verified, Some(false), "{m:?}");
    assert!(source.status_line().contains("migration_verified=false"));
    lift_the_limit_and_check(&mut source, &mut dest, &src, &dst);
}
