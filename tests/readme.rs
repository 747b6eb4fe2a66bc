//! The README's command blocks, run as written against the binary under test.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::commands::assert_exit_0;
use crate::support::{
    self, Daemon, Ready, TestEnv, flexnbd_path, flexnbd_std, free_port, require_tool, text,
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
/// instead of 10809, 10810 and 10811, and `/tmp/` is this test's directory:
/// 1. the first command: serve a scratch image (`cargo test`, the second, is
///    this); 3. use it from another terminal; 5. start the proxy in front of
///    it; 4. migrate it, checked with `cmp`. A line ending in `&`, or the
///    last command of the first block and the proxy, is a server that stays:
///    it runs as a [`Daemon`] until it answers on its `-p` port; every other
///    line runs with `sh -c` and must succeed.
#[test]
fn readme_quick_start_works_as_written() {
    if !require_tool("nbdinfo") || !require_tool("qemu-img") {
        return;
    }
    let readme = include_str!("../README.md");
    let blocks = sh_blocks(readme);
    assert!(blocks.len() >= 5, "README has fewer than five sh blocks");
    let env = TestEnv::new();
    let ports = [10809, 10810, 10811].map(|p| (p.to_string(), free_port().to_string()));
    let dir = format!("{}/", env.path().display());
    let binary = flexnbd_path().to_str().unwrap().to_owned();
    let edit = |command: &str| -> String {
        // The binary goes in last: its own path may contain `/tmp/`.
        let mut edited = command
            .replace("target/release/flexnbd", "\u{0}FLEXNBD\u{0}")
            .replace("/tmp/", &dir);
        for (readme_port, port) in &ports {
            edited = edited.replace(readme_port.as_str(), port);
        }
        edited.replace("\u{0}FLEXNBD\u{0}", &binary)
    };
    // Servers that stay up, killed when the test ends.
    let mut daemons = Vec::new();
    let mut start = |command: &str| {
        let words: Vec<String> = edit(command.trim_end_matches('&'))
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        assert_eq!(words[0], binary, "README: not flexnbd: {command}");
        let port = words
            .iter()
            .skip_while(|w| *w != "-p")
            .nth(1)
            .unwrap_or_else(|| panic!("README: no -p in {command}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().unwrap()));
        let mut cmd = flexnbd_std();
        cmd.args(&words[1..]);
        let mut daemon = Daemon::spawn(cmd, vec![Ready::Tcp(addr)]);
        daemon.wait_ready();
        daemons.push(daemon);
    };
    let sh = |command: &str| -> String {
        let out = run_sh_group(&edit(command), Duration::from_secs(120));
        assert_exit_0(&format!("README: {command}"), &out);
        text(&out.stdout) + &text(&out.stderr)
    };
    let lines = |block: &str| -> Vec<String> {
        block
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    };

    // 1. Build (skipped), make the image, serve it.
    let first = blocks[0]
        .trim()
        .strip_prefix("cargo build --release && ")
        .unwrap_or_else(|| panic!("README block 1 does not build first: {}", blocks[0]));
    let (setup, serve) = first
        .rsplit_once(" && ")
        .unwrap_or_else(|| panic!("README block 1 starts no server: {first}"));
    sh(setup);
    start(serve);
    assert_eq!(blocks[1].trim(), "cargo test", "README's second command");

    // 3. From another terminal.
    let mut output = String::new();
    for line in lines(&blocks[2]) {
        output += &sh(&line);
    }
    for shown in [
        "export-size: 1073741824",
        "virtual size: 1 GiB",
        "has_control=true",
        "hello",
    ] {
        assert!(
            output.contains(shown),
            "README block 3 does not show {shown}: {output}"
        );
    }

    // 5. The proxy in front of the server.
    let proxy = lines(&blocks[4]);
    assert_eq!(
        proxy.len(),
        1,
        "README block 5 is one command: {}",
        blocks[4]
    );
    start(&proxy[0]);

    // 4. The migration.
    let mut output = String::new();
    for line in lines(&blocks[3]) {
        if line.ends_with('&') {
            start(&line);
        } else {
            output += &sh(&line);
        }
    }
    for shown in [
        "Mirror started",
        "Migration complete in ",
        "mirror: ",
        "identical: the destination has every byte",
    ] {
        assert!(
            output.contains(shown),
            "README block 4 does not show {shown}: {output}"
        );
    }
}
