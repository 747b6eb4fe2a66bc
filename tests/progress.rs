//! What `mirror --wait` says on a pipe while a real migration runs: one
//! plain line at once, one every 5 s and on each change of state, and a
//! last one saying how it ended.
//!
//! - at a limit: no rate above it, an ETA only with a rate, `done` at the end;
//! - paused (`-m 0`), then resumed at a lower limit, then lifted: `paused`
//!   with a zero rate and an unknown ETA (never `eta 0 s`), `status --json`
//!   saying `paused`, the resumed rate under the new limit;
//! - after `break`: `stopped`, the bytes left unsent, no ETA.
//!
//! Every line goes through [`check_line`], the rules for any state. The
//! lines are read as they come, from a thread, with a deadline per wait.

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use crate::support::MIB;
use crate::support::commands::{assert_success, run};
use crate::support::{Daemon, DaemonBuilder, TestEnv, flexnbd_std, status_value, text, wait_until};

/// How long a line or an exit may take to come, in a debug build on a busy machine.
const WITHIN: Duration = Duration::from_secs(60);
/// `mirror-speed` value that lifts the limit (flexnbd-c's "unlimited", 2^64-1).
const UNLIMITED: &str = "18446744073709551615";

/// A source serving a sparse file of `size` bytes and an empty destination listening.
struct Pair {
    _source: Daemon,
    dest: Daemon,
    source_sock: PathBuf,
    _env: TestEnv,
}

impl Pair {
    #[track_caller]
    fn new(size: u64) -> Pair {
        let env = TestEnv::new();
        let source_sock = env.sock_path_named("source.sock");
        let source = DaemonBuilder::new("serve", env.image("source.img", size))
            .sock(&source_sock)
            .start();
        let dest = DaemonBuilder::new("listen", env.image("dest.img", size))
            .sock(env.sock_path_named("dest.sock"))
            .start();
        Pair {
            _source: source,
            dest,
            source_sock,
            _env: env,
        }
    }

    fn sock(&self) -> &str {
        self.source_sock.to_str().unwrap()
    }

    /// `flexnbd mirror --wait` to the destination with `extra` arguments, stderr a pipe.
    fn wait_mirror(&self, extra: &[&str]) -> Watch {
        let port = self.dest.port().to_string();
        let mut args = vec![
            "mirror",
            "--wait",
            "-s",
            self.sock(),
            "-l",
            "127.0.0.1",
            "-p",
            &port,
        ];
        args.extend_from_slice(extra);
        let mut child = flexnbd_std()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run flexnbd mirror");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watch {
            child: Some(child),
            lines,
            seen: Vec::new(),
        }
    }

    /// Runs a control command (`mirror-speed`, `break`, `status`) and returns its stdout.
    #[track_caller]
    fn control(&self, args: &[&str]) -> String {
        let all = [args, &["-s", self.sock()]].concat();
        let out = run(&all, b"");
        assert_success(&format!("{all:?}"), &out);
        text(&out.stdout)
    }
}

/// A running `mirror --wait` and the stderr lines it printed so far.
struct Watch {
    child: Option<Child>,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Watch {
    /// Waits for the next progress line (checked) for which `pred` holds.
    #[track_caller]
    fn line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WITHIN;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with("mirror: ") {
                        check_line(&line);
                        if pred(&line) {
                            return line;
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{what}: no such line within {WITHIN:?}: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("{what}: mirror --wait ended first: {:#?}", self.seen)
                }
            }
        }
    }

    /// Waits for it to exit: its status, stdout, and its progress lines (checked).
    #[track_caller]
    fn finish(mut self) -> (ExitStatus, String, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + WITHIN;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "mirror --wait still running: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        // The reader thread ends at the pipe's end, which the exit closed.
        while let Ok(line) = self.lines.recv_timeout(WITHIN) {
            self.seen.push(line);
        }
        eprintln!("mirror --wait stderr:\n{}", self.seen.join("\n"));
        let progress: Vec<String> = self
            .seen
            .iter()
            .filter(|l| l.starts_with("mirror: "))
            .cloned()
            .collect();
        progress.iter().for_each(|l| check_line(l));
        (status, stdout, progress)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The number before `suffix` in `line` (`12 bytes/s` → 12).
fn number_before(line: &str, suffix: &str) -> Option<u64> {
    let head = &line[..line.find(suffix)?];
    head.rsplit(' ').next()?.parse().ok()
}

/// The state word: `mirror: paused 0/...` → `paused`.
fn state(line: &str) -> &str {
    line.strip_prefix("mirror: ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("")
}

/// What every progress line must respect, whatever its state.
#[track_caller]
fn check_line(line: &str) {
    let rate = number_before(line, " bytes/s");
    if let (Some(rate), Some(limit)) = (
        rate,
        number_before(line, ")").filter(|_| line.contains("(limit ")),
    ) {
        assert!(rate <= limit, "a rate above the limit: {line}");
    }
    if line.contains("rate unknown") || rate == Some(0) {
        assert!(
            line.contains("eta unknown"),
            "an ETA without a rate: {line}"
        );
    }
    if line.contains("eta 0 s") {
        assert!(
            line.contains(" 0 bytes left to send"),
            "eta 0 s with bytes left: {line}"
        );
    }
    let ok = match state(line) {
        "paused" => line.contains(" 0 bytes/s (limit 0)") && line.contains("eta unknown"),
        "stopped" | "failed" => {
            line.contains("bytes left unsent") && !line.contains("eta") && !line.contains("bytes/s")
        }
        "done" => !line.contains("eta") && !line.contains("left"),
        "connecting" | "copying" | "converging" | "handover" | "retrying" => {
            line.contains("bytes left to send, eta ")
        }
        other => panic!("unknown state {other:?}: {line}"),
    };
    assert!(ok, "not what its state shows: {line}");
}

#[test]
fn at_a_limit_the_rate_never_shows_above_it_and_the_end_says_done() {
    let size = 48 * MIB;
    let limit = 6 * MIB;
    let pair = Pair::new(size);
    let watch = pair.wait_mirror(&["-m", &limit.to_string()]);
    let (status, stdout, lines) = watch.finish();
    assert!(status.success(), "{status}: {stdout:?} {lines:#?}");
    assert!(stdout.contains("Migration complete in "), "{stdout:?}");
    // 8 s or so: a first line, one 5 s later with a measured rate, the last.
    let measured: Vec<u64> = lines
        .iter()
        .filter_map(|l| number_before(l, " bytes/s"))
        .collect();
    assert!(
        measured.iter().any(|&r| r > 0 && r <= limit),
        "no measured rate under {limit}: {lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&format!("(limit {limit})"))
            && l.contains("eta ")
            && !l.contains("eta unknown")),
        "no line with an estimate: {lines:#?}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!("mirror: done {size}/{size} bytes, ")),
        "{lines:#?}"
    );
}

#[test]
fn paused_then_resumed_then_lifted() {
    let size = 32 * MIB;
    let pair = Pair::new(size);
    let mut watch = pair.wait_mirror(&["-m", "0"]);
    let first = watch.line("the first line", |l| state(l) == "paused");
    assert!(
        first.contains(&format!(" {size} bytes left to send")),
        "{first}"
    );
    // `status --json` says the same.
    let json = pair.control(&["status", "--json"]);
    assert!(
        json.contains(r#""state":"paused""#)
            && json.contains(&format!(r#""bytes_remaining":{size}"#)),
        "{json}"
    );
    // Five seconds later, still paused: a measured rate of zero, no estimate.
    watch.line("a second paused line", |l| state(l) == "paused");

    // Resumed at 2 MiB/s: a line at once, with at most that.
    let slow = 2 * MIB;
    assert_eq!(
        pair.control(&["mirror-speed", "-m", &slow.to_string()])
            .trim(),
        "updated"
    );
    let resumed = watch.line("a line after the resume", |l| state(l) == "copying");
    assert!(resumed.contains(&format!("(limit {slow})")), "{resumed}");

    // Lifted: it completes.
    assert_eq!(
        pair.control(&["mirror-speed", "-m", UNLIMITED]).trim(),
        "updated"
    );
    let (status, stdout, lines) = watch.finish();
    assert!(status.success(), "{status}: {stdout:?} {lines:#?}");
    assert!(
        lines.last().unwrap().starts_with("mirror: done "),
        "{lines:#?}"
    );
}

#[test]
fn after_break_it_says_stopped_with_what_was_left_unsent() {
    let size = 32 * MIB;
    let pair = Pair::new(size);
    let mut watch = pair.wait_mirror(&["-m", &MIB.to_string()]);
    watch.line("the first line", |l| state(l) == "copying");
    // Once the first transfer went, so that some was sent and some was not
    // (the last line may still show the count of the poll before it).
    wait_until("the first transfer", WITHIN, || {
        status_value(&pair.source_sock, "migration_bytes_copied")
            .parse::<u64>()
            .is_ok_and(|n| n > 0)
    });
    assert_eq!(pair.control(&["break"]).trim(), "mirror stopped");
    let (status, stdout, lines) = watch.finish();
    assert!(!status.success(), "{status}: {stdout:?} {lines:#?}");
    let last = lines.last().unwrap();
    assert_eq!(state(last), "stopped", "{lines:#?}");
    let unsent = number_before(last, " bytes left unsent").unwrap();
    assert!(unsent > 0 && unsent <= size, "{last}");
    // The source keeps its data and reports the outcome.
    let json = pair.control(&["status", "--json"]);
    assert!(json.contains(r#""state":"stopped""#), "{json}");
}
