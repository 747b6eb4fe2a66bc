//! Interoperability with the real NBD clients operators use: nbdinfo,
//! nbdcopy, nbdsh (python3-libnbd), qemu-img, qemu-io and fio's nbd engine,
//! against the server in-process on port 0, newstyle and `--oldstyle`.
//!
//! A missing tool skips its test with a printed reason, except with
//! CI=true, where it fails (`support::require_tool`).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flexnbd::proto::types::Errno;

use crate::serve::Harness;
use crate::support::commands::assert_exit_0;
use crate::support::{nbdsh_command, require_tool};

#[track_caller]
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert_exit_0(&format!("{cmd:?}"), &out);
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `qemu-io -f raw -c COMMAND... URI`, which must succeed; its stdout.
#[track_caller]
fn qemu_io(uri: &str, commands: &[&str]) -> String {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]);
    for command in commands {
        cmd.args(["-c", command]);
    }
    stdout(&run(cmd.arg(uri)))
}

/// [`qemu_io`] of `reads` (`read -P ...`), each of which must find its pattern.
#[track_caller]
fn qemu_io_reads(uri: &str, reads: &[&str]) {
    let out = qemu_io(uri, reads);
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

/// A file of `len` bytes of deterministic data with a hole in its second quarter.
fn data_file(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join("src.img");
    let mut bytes: Vec<u8> = (0..len)
        .map(|i| ((i as u64 * 2654435761) >> 13) as u8)
        .collect();
    bytes[len / 4..len / 2].fill(0);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// For a test of `tool` (`None`: it skips, see [`require_tool`]): a server
/// of `size` bytes, and a temporary directory holding a [`data_file`] of
/// that size.
fn with_data(tool: &str, size: usize) -> Option<(Harness, tempfile::TempDir, PathBuf)> {
    if !require_tool(tool) {
        return None;
    }
    let h = Harness::new(size as u64);
    let dir = tempfile::tempdir().unwrap();
    let src = data_file(dir.path(), size);
    Some((h, dir, src))
}

#[test]
fn nbdinfo_json_and_map() {
    if !require_tool("nbdinfo") {
        return;
    }
    let h = Harness::new(8 << 20);
    let out = run(Command::new("nbdinfo").arg("--json").arg(h.uri()));
    let json = stdout(&out);
    for needle in [
        "\"protocol\": \"newstyle-fixed\"",
        "\"export-size\": 8388608",
        "\"can_multi_conn\": true",
        "\"can_fua\": true",
        "\"can_trim\": true",
        "\"can_zero\": true",
        "\"can_flush\": true",
        "\"can_cache\": true",
        "\"block_size_maximum\": 33554432",
        "\"base:allocation\"",
    ] {
        assert!(
            json.contains(needle),
            "nbdinfo --json lacks {needle}:\n{json}"
        );
    }
    let mut c = h.client(false);
    c.write(1, 1 << 20, &[1u8; 65536]);
    c.expect_reply(1, Errno::OK);
    let map = stdout(&run(Command::new("nbdinfo").arg("--map").arg(h.uri())));
    let rows: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][..3], ["0", "1048576", "3"], "{map}");
    assert_eq!(rows[1][..3], ["1048576", "65536", "0"], "{map}");
    assert_eq!(rows[2][..2], ["1114112", "7274496"], "{map}");
}

#[test]
fn qemu_img_convert_and_compare_both_ways() {
    let Some((h, dir, src)) = with_data("qemu-img", 8 << 20) else {
        return;
    };
    run(Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw"])
        .arg(&src)
        .arg(h.uri()));
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw"])
        .arg(&src)
        .arg(h.uri()));
    let back = dir.path().join("back.img");
    run(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(h.uri())
        .arg(&back));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
    assert_eq!(h.file(), std::fs::read(&src).unwrap());
}

#[test]
fn qemu_io_patterns() {
    if !require_tool("qemu-io") {
        return;
    }
    let h = Harness::new(4 << 20);
    qemu_io(
        &h.uri(),
        &["write -P 0xab 512k 1M", "flush", "write -z 1M 64k"],
    );
    qemu_io_reads(
        &h.uri(),
        &[
            "read -P 0xab 512k 512k",
            "read -P 0 1M 64k",
            "read -P 0xab 1088k 448k",
        ],
    );
}

#[test]
fn nbdcopy_both_ways_with_flush() {
    let Some((h, dir, src)) = with_data("nbdcopy", 16 << 20) else {
        return;
    };
    run(Command::new("nbdcopy")
        .arg("--flush")
        .arg(&src)
        .arg(h.uri()));
    assert_eq!(h.file(), std::fs::read(&src).unwrap());
    let back = dir.path().join("back.img");
    run(Command::new("nbdcopy")
        .args(["-C", "4"])
        .arg(h.uri())
        .arg(&back));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
}

#[test]
fn nbdsh_fua_trim_zero_cache_block_status_and_holes() {
    if !require_tool("nbdsh") {
        return;
    }
    let h = Harness::new(4 << 20);
    // nbdsh makes the handle `h`, asks for base:allocation and connects (in
    // command-line order) before running the script.
    let script = r#"
import nbd
assert h.get_structured_replies_negotiated()
assert h.can_fua() and h.can_trim() and h.can_zero() and h.can_cache() and h.can_multi_conn()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
h.pwrite(b"x" * 65536, 0, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"x" * 65536
h.flush()
h.trim(16384, 0)
h.zero(4096, 16384, nbd.CMD_FLAG_NO_HOLE)
h.zero(4096, 20480, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(24576, 0) == b"\0" * 24576
assert h.pread(40960, 24576) == b"x" * 40960
h.cache(65536, 0)
extents = []
def cb(meta, offset, entries, err):
    extents.extend(entries)
h.block_status(4 << 20, 0, cb)
assert extents[0:2] == [16384, 3], extents
assert 3 in extents[3::2], extents
chunks = []
def chunk(buf, offset, status, err):
    chunks.append((offset, len(buf), status))
buf = h.pread_structured(1 << 20, 0, chunk)
assert any(s == nbd.READ_HOLE for (_, _, s) in chunks), chunks
assert any(s == nbd.READ_DATA for (_, _, s) in chunks), chunks
assert buf[24576:65536] == b"x" * 40960 and buf[65536:] == b"\0" * ((1 << 20) - 65536)
try:
    h.pread(1, 4 << 20)
    raise SystemExit("read past the end succeeded")
except nbd.Error as e:
    assert e.errnum == 22, e
h.shutdown()
print("ok")
"#;
    let out = nbdsh_command()
        .args(["--base-allocation", "-u", &h.uri(), "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nbdsh failed with {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out).trim(), "ok");
}

#[test]
fn fio_verify_with_four_jobs_at_iodepth_16() {
    if !require_tool("fio") {
        return;
    }
    let h = Harness::new(32 << 20);
    let out = run(Command::new("fio")
        .args([
            "--name=flexnbd",
            "--ioengine=nbd",
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--numjobs=4",
            "--size=8M",
            "--offset_increment=8M",
            "--verify=crc32c",
            "--do_verify=1",
            "--verify_fatal=1",
            "--group_reporting",
            // Otherwise fio leaves local-<name>-<job>-verify.state in the
            // working directory, the source tree.
            "--verify_state_save=0",
        ])
        .arg(format!("--uri={}", h.uri())));
    let text = stdout(&out);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("err= 0"), "{text}");
    // Every block written was read back and checked (4 jobs x 2048 blocks each way).
    assert!(text.contains("issued rwts: total=8192,8192,0,0"), "{text}");
    assert!(
        !errors.contains("verify") && !text.contains("bad magic"),
        "verification errors:\n{errors}"
    );
}

#[test]
fn oldstyle_reads_with_qemu_io_and_nbdinfo() {
    if !require_tool("qemu-io") || !require_tool("nbdinfo") {
        return;
    }
    let h = Harness::start_oldstyle(1 << 20);
    let mut c = h.oldstyle();
    c.write(1, 4096, &[0x5a; 8192]);
    c.expect_reply(1, Errno::OK);
    let info = stdout(&run(Command::new("nbdinfo").arg(h.uri())));
    assert!(info.contains("protocol: oldstyle"), "{info}");
    assert!(info.contains("export-size: 1048576"), "{info}");
    qemu_io_reads(&h.uri(), &["read -P 0x5a 4k 8k", "read -P 0 12k 4k"]);
}
