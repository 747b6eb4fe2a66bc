//! A small stderr logger for the `log` facade, in one of three line formats.
//!
//! ```text
//! plain    2026-12-02T12:00:00.123Z W 1234 main disk.img: message
//! journal  <4>main disk.img: message
//! c        8697814:W:1234 main disk.img src/net.rs:148: message
//! ```
//!
//! - plain (the default): wall-clock UTC time (RFC 3339, milliseconds), the
//!   level letter (`D I W E`, trace `T`), pid, thread name and context (the
//!   served file for servers, nothing for client commands).
//! - journal (the default when stderr is systemd's journal stream, i.e.
//!   `JOURNAL_STREAM` names stderr's device and inode): a syslog priority
//!   prefix (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and trace)
//!   that journald strips and files, and no time or pid, which it adds.
//! - c: the C flexnbd's layout, `<ms>:<L>:<pid> <thread> <context>
//!   <file>:<line>: <message>` with the monotonic clock in milliseconds, for
//!   those who diff logs with it.
//!
//! plain and journal add the source `file:line` only from `-vv` (debug) up.
//! Each line is one write, so lines from different threads never
//! interleave; while a progress bar is registered
//! ([`set_progress_bar`]) a line is written with the bar suspended, so
//! neither tears the other. Nothing is ever logged to stdout.

use std::fmt;
use std::io::Write;
use std::panic::Location;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::SystemTime;

use indicatif::ProgressBar;
use log::{Level, LevelFilter, Log, Metadata, Record};

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// The format chosen with [`set_format`]; [`Format::Auto`] until then.
static FORMAT: OnceLock<Format> = OnceLock::new();

/// The progress bar lines are drawn around, if one is showing.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

struct Logger {
    context: String,
}

/// How log lines look (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// [`Format::Journal`] when stderr is systemd's journal, else [`Format::Plain`].
    Auto,
    /// Timestamp, level, pid, thread, context, message.
    Plain,
    /// A syslog priority prefix, no timestamp.
    Journal,
    /// The C flexnbd's layout.
    C,
}

/// The level for a `-v` count and `-q`: warn by default, info, debug, trace; `-q` logs nothing.
pub fn level_for(verbose: u8, quiet: bool) -> LevelFilter {
    if quiet {
        return LevelFilter::Off;
    }
    match verbose {
        0 => LevelFilter::Warn,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Chooses the line format for the whole process; the first call wins.
pub fn set_format(format: Format) {
    let _ = FORMAT.set(resolve(format, journal_env().as_deref(), stderr_id()));
}

/// The format in use: the one set, else the automatic choice.
fn format() -> Format {
    *FORMAT.get_or_init(|| resolve(Format::Auto, journal_env().as_deref(), stderr_id()))
}

/// `Auto` decided: journal when `journal_stream` (`JOURNAL_STREAM`, `DEV:INO`)
/// names stderr (`stderr`, its device and inode).
fn resolve(format: Format, journal_stream: Option<&str>, stderr: Option<(u64, u64)>) -> Format {
    if format != Format::Auto {
        return format;
    }
    let named = journal_stream.and_then(|v| {
        let (dev, ino) = v.split_once(':')?;
        Some((dev.parse().ok()?, ino.parse().ok()?))
    });
    if named.is_some() && named == stderr {
        Format::Journal
    } else {
        Format::Plain
    }
}

fn journal_env() -> Option<String> {
    std::env::var("JOURNAL_STREAM").ok()
}

fn stderr_id() -> Option<(u64, u64)> {
    let stat = rustix::fs::fstat(std::io::stderr()).ok()?;
    Some((stat.st_dev, stat.st_ino))
}

/// Installs the logger once per process; later calls only change the level and keep the context.
pub fn init(level: LevelFilter, context: &str) {
    let logger = LOGGER.get_or_init(|| Logger {
        context: context.to_owned(),
    });
    // A second init (tests running several servers in one process) keeps the first logger.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
}

/// Draws log lines around `bar` (suspending it for each line) until called with `None`.
pub fn set_progress_bar(bar: Option<ProgressBar>) {
    *BAR.lock().unwrap_or_else(PoisonError::into_inner) = bar;
}

/// Logs why a server is ending, whatever the level: only `-q` silences it,
/// and not for an error.
#[track_caller]
pub fn exit_reason(level: Level, message: fmt::Arguments<'_>) {
    if log::max_level() == LevelFilter::Off && level != Level::Error {
        return;
    }
    let caller = Location::caller();
    let record = Record::builder()
        .level(level)
        .args(message)
        .file(Some(caller.file()))
        .line(Some(caller.line()))
        .build();
    let fallback = Logger {
        context: String::new(),
    };
    LOGGER.get().unwrap_or(&fallback).write(&record);
}

/// Prints the one line a failed command ends with, `flexnbd: <message>`,
/// with the error priority under the journal.
pub fn print_error(message: &str) {
    let prefix = if format() == Format::Journal {
        "<3>"
    } else {
        ""
    };
    write_line(&format!("{prefix}flexnbd: {message}\n"));
}

fn letter(level: Level) -> char {
    match level {
        Level::Error => 'E',
        Level::Warn => 'W',
        Level::Info => 'I',
        Level::Debug => 'D',
        Level::Trace => 'T',
    }
}

/// The syslog priority journald reads from a `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// What a line says, apart from the clock.
struct Line<'a> {
    level: Level,
    pid: u32,
    thread: &'a str,
    context: &'a str,
    /// The source `file:line`, when it is shown.
    source: Option<(&'a str, u32)>,
    message: &'a fmt::Arguments<'a>,
}

/// One line in `format` (not `Auto`); `now` is the wall-clock time for
/// plain, `monotonic_ms` the clock for c.
fn render(format: Format, line: &Line<'_>, now: SystemTime, monotonic_ms: u64) -> String {
    let mut head = String::from(line.thread);
    if !line.context.is_empty() {
        head.push(' ');
        head.push_str(line.context);
    }
    let source = match line.source {
        Some((file, n)) => format!(" {file}:{n}"),
        None => String::new(),
    };
    match format {
        Format::C => {
            let (file, n) = line.source.unwrap_or(("?", 0));
            format!(
                "{monotonic_ms}:{}:{} {} {} {file}:{n}: {}\n",
                letter(line.level),
                line.pid,
                line.thread,
                line.context,
                line.message
            )
        }
        Format::Journal => format!(
            "<{}>{head}{source}: {}\n",
            priority(line.level),
            line.message
        ),
        Format::Plain | Format::Auto => format!(
            "{} {} {} {head}{source}: {}\n",
            humantime::format_rfc3339_millis(now),
            letter(line.level),
            line.pid,
            line.message
        ),
    }
}

/// Writes `text` in one write, with a registered progress bar suspended.
fn write_line(text: &str) {
    let write = || {
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    };
    let bar = BAR.lock().unwrap_or_else(PoisonError::into_inner).clone();
    match bar {
        Some(bar) if !bar.is_hidden() => bar.suspend(write),
        _ => write(),
    }
}

impl Logger {
    fn write(&self, record: &Record<'_>) {
        let format = format();
        let thread = std::thread::current();
        let show_source = format == Format::C || log::max_level() >= LevelFilter::Debug;
        let line = Line {
            level: record.level(),
            pid: std::process::id(),
            thread: thread.name().unwrap_or("-"),
            context: &self.context,
            source: show_source.then(|| (record.file().unwrap_or("?"), record.line().unwrap_or(0))),
            message: record.args(),
        };
        write_line(&render(
            format,
            &line,
            SystemTime::now(),
            crate::sys::monotonic_ms(),
        ));
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.write(record);
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn levels_follow_flexnbd_c_flags() {
        assert_eq!(level_for(0, false), LevelFilter::Warn);
        assert_eq!(level_for(1, false), LevelFilter::Info);
        assert_eq!(level_for(2, false), LevelFilter::Debug);
        assert_eq!(level_for(9, false), LevelFilter::Trace);
        assert_eq!(level_for(0, true), LevelFilter::Off);
    }

    /// 2026-12-02T12:00:00.123Z
    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_212_800_123)
    }

    fn rendered(format: Format, level: Level, context: &str, source: bool) -> String {
        let message = format_args!("Bound to 127.0.0.1 port 4777");
        let line = Line {
            level,
            pid: 42,
            thread: "main",
            context,
            source: source.then_some(("src/nbd/stream.rs", 148)),
            message: &message,
        };
        render(format, &line, noon(), 8_697_814)
    }

    /// Plain lines carry UTC time and the source only from debug up; c
    /// lines keep flexnbd-c's layout, two spaces where the context is empty.
    #[test]
    fn plain_and_c_lines_have_their_layouts() {
        let cases = [
            (
                Format::Plain,
                Level::Warn,
                "disk.img",
                false,
                "2026-12-02T12:00:00.123Z W 42 main disk.img",
            ),
            (
                Format::Plain,
                Level::Info,
                "",
                false,
                "2026-12-02T12:00:00.123Z I 42 main",
            ),
            (
                Format::Plain,
                Level::Debug,
                "disk.img",
                true,
                "2026-12-02T12:00:00.123Z D 42 main disk.img src/nbd/stream.rs:148",
            ),
            (
                Format::C,
                Level::Info,
                "disk.img",
                true,
                "8697814:I:42 main disk.img src/nbd/stream.rs:148",
            ),
            (
                Format::C,
                Level::Error,
                "",
                true,
                "8697814:E:42 main  src/nbd/stream.rs:148",
            ),
        ];
        for (format, level, context, source, head) in cases {
            assert_eq!(
                rendered(format, level, context, source),
                format!("{head}: Bound to 127.0.0.1 port 4777\n")
            );
        }
    }

    #[test]
    fn journal_lines_carry_a_priority_and_no_time() {
        let cases = [
            (Level::Error, "<3>"),
            (Level::Warn, "<4>"),
            (Level::Info, "<6>"),
            (Level::Debug, "<7>"),
            (Level::Trace, "<7>"),
        ];
        for (level, prefix) in cases {
            assert_eq!(
                rendered(Format::Journal, level, "disk.img", false),
                format!("{prefix}main disk.img: Bound to 127.0.0.1 port 4777\n")
            );
        }
        assert_eq!(
            rendered(Format::Journal, Level::Debug, "", true),
            "<7>main src/nbd/stream.rs:148: Bound to 127.0.0.1 port 4777\n"
        );
    }

    #[test]
    fn auto_is_journal_only_when_the_stream_is_stderr() {
        let stderr = Some((64769, 1234));
        let cases = [
            (Format::Auto, Some("64769:1234"), stderr, Format::Journal),
            (Format::Auto, Some("64769:999"), stderr, Format::Plain),
            (Format::Auto, Some("junk"), stderr, Format::Plain),
            (Format::Auto, None, stderr, Format::Plain),
            (Format::Auto, None, None, Format::Plain),
            (Format::C, Some("64769:1234"), stderr, Format::C),
            (Format::Plain, Some("64769:1234"), stderr, Format::Plain),
        ];
        for (format, stream, stderr, expected) in cases {
            assert_eq!(resolve(format, stream, stderr), expected, "{stream:?}");
        }
    }
}
