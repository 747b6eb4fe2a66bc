//! The README's command blocks, run as written against the binary under test.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{
    self, Daemon, Ready, TestEnv, flexnbd, flexnbd_path, flexnbd_std, free_port, require_tool,
    text, tool,
};

/// The fenced `sh` blocks of a Markdown text.
fn sh_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

/// Runs `script` with `sh -c` in a process group of its own, waits up to
/// `timeout`, and kills the whole group (the servers it started in the
/// background included) if it is still running then.
fn run_sh_group(script: &str, timeout: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .args(["-c", script])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pgid = rustix::process::Pid::from_child(&child);
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            let out = child.wait_with_output().unwrap();
            panic!(
                "still running after {timeout:?}:\n{script}\nstdout:\n{}\nstderr:\n{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        std::thread::sleep(support::POLL);
    }
    let out = child.wait_with_output().unwrap();
    // The servers have exited by now if it worked; make sure nothing is left either way.
    let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
    out
}

/// The README's command blocks run as written, except that the build is
/// skipped, the binary is the one under test, the ports are free ones
/// instead of 10809 and 10810, and `/tmp/` is this test's directory:
/// 1. the quick start: a migration under a writer, checked with `cmp`;
/// 2. serve a scratch image; 3. look at it from another terminal.
#[test]
fn readme_quick_start_works_as_written() {
    if !require_tool("nbdinfo") || !require_tool("qemu-img") {
        return;
    }
    let readme = include_str!("../README.md");
    let blocks = sh_blocks(readme);
    assert!(blocks.len() >= 3, "README has fewer than three sh blocks");
    let env = TestEnv::new();
    let port = free_port().to_string();
    let port2 = free_port().to_string();
    let dir = format!("{}/", env.path().display());
    let binary = flexnbd_path().to_str().unwrap().to_owned();
    let edit = |command: &str| -> String {
        // The binary goes in last: its own path may contain `/tmp/`.
        command
            .replace("./target/release/flexnbd", "\u{0}FLEXNBD\u{0}")
            .replace("/tmp/", &dir)
            .replace("10809", &port)
            .replace("10810", &port2)
            .replace("\u{0}FLEXNBD\u{0}", &binary)
    };
    let words = |command: &str| -> Vec<String> {
        edit(command)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };

    // 1. The quick start, one command: build, then the migration.
    let quick = blocks[0]
        .trim()
        .strip_prefix("cargo build --release && ")
        .unwrap_or_else(|| panic!("README block 1 does not build first: {}", blocks[0]));
    let out = run_sh_group(&edit(quick), Duration::from_secs(120));
    let stdout = text(&out.stdout);
    assert!(
        out.status.success()
            && stdout.contains("Mirror started")
            && stdout.contains("Migration complete in ")
            && stdout.contains("identical: the destination has every byte"),
        "README quick start: {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("mirror: "),
        "no progress line: {}",
        text(&out.stderr)
    );

    // 2. Serve a scratch image.
    let mut daemon = None;
    for command in blocks[1].trim().split(" && ") {
        let words = words(command);
        if words[0] == binary && words[1] == "serve" {
            let mut cmd = flexnbd_std();
            cmd.args(&words[1..]);
            let addr = SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().unwrap()));
            let mut d = Daemon::spawn(
                cmd,
                vec![Ready::Tcp(addr), Ready::Sock(env.child("flexnbd.sock"))],
            );
            d.wait_ready();
            daemon = Some(d);
        } else {
            let out = tool(&words[0]).args(&words[1..]).output().unwrap();
            assert!(out.status.success(), "{command}: {}", text(&out.stderr));
        }
    }
    assert!(
        daemon.is_some(),
        "README block 2 starts no server: {}",
        blocks[1]
    );

    // 3. From another terminal.
    for command in blocks[2].lines().filter(|l| !l.trim().is_empty()) {
        let words = words(command);
        let out = if words[0] == binary {
            flexnbd().args(&words[1..]).output().unwrap()
        } else {
            tool(&words[0]).args(&words[1..]).output().unwrap()
        };
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "README: {command}: {}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
