//! `flexnbd read` and `flexnbd write` against our own `flexnbd serve`
//! process, newstyle and `--oldstyle`: round trips, the 32 MiB request
//! limit, errors, signals and pipes, and flexnbd-c's happy-path tests.
//! (Against other servers and fakes: `client`.)

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crate::support::commands::{
    assert_success, nbd_read, nbd_write, nbd_write_sized, one_error_line, read_ok, write_ok,
};
use crate::support::daemon::serve_image;
use crate::support::{
    Daemon, Signal, Style, TestEnv, assert_same_bytes, finish, flexnbd_path, flexnbd_std,
    flexnbd_std_default_signals, pattern, read_range, text, wait_until,
};
use crate::support::{KIB, MIB};

/// How long a test waits for a command to reach a state or exit.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// 1. Round trips and errors

#[test]
fn three_mib_at_an_odd_offset_round_trips() {
    for style in Style::BOTH {
        let (env, disk, d) = serve_image(8 * MIB, style, &[]);
        let data = pattern(3 * MIB as usize, 3);
        let from = MIB + 12_345;
        write_ok(&d, from, &data);
        assert_same_bytes("read back", &read_ok(&d, from, 3 * MIB), &data);
        let file = env.read(&disk);
        assert_same_bytes(
            "the file",
            &file[from as usize..from as usize + data.len()],
            &data,
        );
        assert!(file[..from as usize].iter().all(|&b| b == 0));
        assert!(file[from as usize + data.len()..].iter().all(|&b| b == 0));
    }
}

#[test]
fn a_write_larger_than_one_request_round_trips() {
    for style in Style::BOTH {
        let (_env, disk, d) = serve_image(41 * MIB, style, &[]);
        // More than the 32 MiB a single request may carry.
        let data = pattern(40 * MIB as usize, 40);
        write_ok(&d, 512, &data);
        assert_same_bytes("read back", &read_ok(&d, 512, 40 * MIB), &data);
        assert_same_bytes("the file", &read_range(&disk, 512, 40 * MIB), &data);
    }
}

#[test]
fn out_of_range_read_and_write_fail_with_one_line_naming_the_range() {
    for style in Style::BOTH {
        let (env, disk, d) = serve_image(MIB, style, &[]);
        let line = one_error_line("read past the end", &nbd_read(&d, MIB - 100, 1000));
        assert!(
            line.contains("1000 bytes at offset 1048476") && line.contains("1048576"),
            "{style:?}: {line}"
        );
        let line = one_error_line("write past the end", &nbd_write(&d, MIB, b"x"));
        assert!(
            line.contains("1 bytes at offset 1048576") && line.contains("1048576"),
            "{style:?}: {line}"
        );
        assert!(env.read(&disk).iter().all(|&b| b == 0));
    }
}

#[test]
fn write_with_a_short_stdin_fails_and_writes_nothing() {
    for style in Style::BOTH {
        let (env, disk, d) = serve_image(MIB, style, &[]);
        let line = one_error_line("short stdin", &nbd_write_sized(&d, 0, 10, b"abc"));
        assert!(line.contains("3 of 10 bytes"), "{style:?}: {line}");
        assert!(env.read(&disk).iter().all(|&b| b == 0));
    }
}

#[test]
fn read_of_size_zero_prints_nothing() {
    for style in Style::BOTH {
        let (_env, _disk, d) = serve_image(MIB, style, &[]);
        for from in [0, MIB] {
            let out = nbd_read(&d, from, 0);
            assert_success("read -S 0", &out);
            assert!(out.stdout.is_empty(), "{style:?}");
        }
    }
}

#[test]
fn read_into_a_pipe_closed_early_exits_0() {
    let (_env, _disk, d) = serve_image(16 * MIB, Style::Newstyle, &[]);
    let [l, addr, p, port] = d.addr_args();
    let mut child = flexnbd_std()
        .args(["read", &l, &addr, &p, &port, "-F", "0", "-S"])
        .arg((16 * MIB).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn read");
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 10];
    stdout.read_exact(&mut first).expect("the first bytes");
    drop(stdout); // as `| head -c 10` does
    let out = finish(child, WAIT);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert_eq!(stderr, "");
}

/// A client command stopped by a signal dies of it (no handler, no exit
/// status), as the README's exit-status section says.
#[test]
fn write_waiting_for_stdin_dies_of_sigint() {
    use std::os::unix::process::ExitStatusExt;
    let (env, disk, d) = serve_image(MIB, Style::Newstyle, &[]);
    let [l, addr, p, port] = d.addr_args();
    // stdin stays open and empty: write waits for it. `env` execs flexnbd
    // in the same process, with SIGINT at its default action even when this
    // test run inherited it ignored.
    let child = flexnbd_std_default_signals()
        .args(["write", &l, &addr, &p, &port, "-F", "0", "-S", "10"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn write");
    // A signal that comes while `env` still ignores it would be lost: wait for flexnbd.
    let exe = format!("/proc/{}/exe", child.id());
    wait_until("env exec'ing flexnbd", WAIT, || {
        std::fs::read_link(&exe).ok().as_deref() == Some(flexnbd_path())
    });
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, Signal::INT).expect("kill");
    let status = finish(child, WAIT).status;
    assert_eq!(status.signal(), Some(2), "{status}");
    assert!(env.read(&disk).iter().all(|&b| b == 0));
}

/// flexnbd-c's 64-block `f` pattern: 1 KiB blocks of little-endian u32 file offsets.
fn offsets_pattern(blocks: usize) -> Vec<u8> {
    (0..blocks * 256)
        .flat_map(|i| (i as u32 * 4).to_le_bytes())
        .collect()
}

/// flexnbd-c's test_happy_path: test_read1 and test_writeread1.
#[test]
fn happy_path_reads_and_writes_blocks_0_12_and_63() {
    for style in Style::BOTH {
        let env = TestEnv::new();
        let original = offsets_pattern(64);
        let disk = env.image_with("disk.img", &original);
        let d = Daemon::serve_in(&env, &disk, style, &[]);
        for block in [0u64, 12, 63] {
            let at = block * KIB;
            let got = read_ok(&d, at, KIB);
            assert_eq!(
                got,
                original[at as usize..][..KIB as usize],
                "block {block}"
            );
        }
        for at in [124u64, 1200, 10028, 25488] {
            assert_eq!(read_ok(&d, at, 4), original[at as usize..][..4], "at {at}");
        }
        let x = vec![b'X'; KIB as usize];
        for block in [0u64, 12, 63] {
            write_ok(&d, block * KIB, &x);
            assert_eq!(read_range(&disk, block * KIB, KIB), x, "block {block}");
            assert_eq!(read_ok(&d, block * KIB, KIB), x, "block {block}");
        }
        let mut expected = original.clone();
        for block in [0usize, 12, 63] {
            expected[block * 1024..][..1024].fill(b'X');
        }
        assert_same_bytes("the file", &env.read(&disk), &expected);
    }
}

/// flexnbd-c's test_writeread2: writes to even blocks leave the odd ones alone.
#[test]
fn happy_path_even_block_writes_do_not_touch_odd_blocks() {
    let (env, disk, d) = serve_image(1024 * KIB, Style::Oldstyle, &[]);
    let x = vec![b'X'; KIB as usize];
    for i in 0..64u64 {
        write_ok(&d, 2 * i * KIB, &x);
    }
    let all = read_ok(&d, 0, 1024 * KIB);
    assert_same_bytes("the file", &env.read(&disk), &all);
    for (block, bytes) in all.chunks(KIB as usize).enumerate() {
        let written = block % 2 == 0 && block < 128;
        let want = if written { b'X' } else { 0 };
        assert!(
            bytes.iter().all(|&b| b == want),
            "block {block} should be all {want:#x}"
        );
    }
}

/// flexnbd-c's test_write_to_high_block: past 2 GiB in a 4 GiB sparse file.
#[test]
fn happy_path_write_to_a_high_block() {
    for style in Style::BOTH {
        let (_env, disk, d) = serve_image(4 << 30, style, &[]);
        let at = (1u64 << 31) + (1 << 29);
        write_ok(&d, at, b"12345678");
        assert_eq!(read_ok(&d, at, 8), b"12345678", "{style:?}");
        assert_eq!(read_range(&disk, at, 8), b"12345678", "{style:?}");
    }
}
