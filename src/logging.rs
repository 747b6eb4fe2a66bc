//! A small stderr logger for the `log` facade, in the C flexnbd's line format.
//!
//! Lines read `<ms>:<L>:<pid> <thread> <context> <file>:<line>: <message>`,
//! where `<ms>` is the monotonic clock in milliseconds, `<L>` one of
//! `D I W E F` (trace is shown as `T`), `<thread>` the thread's name and
//! `<context>` the served file for servers, empty for client commands.
//! Nothing is ever logged to stdout.

use std::io::Write;
use std::sync::OnceLock;

use log::{Level, LevelFilter, Log, Metadata, Record};

static LOGGER: OnceLock<Logger> = OnceLock::new();

struct Logger {
    context: String,
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

/// Installs the logger once per process; later calls only change the level and keep the context.
pub fn init(level: LevelFilter, context: &str) {
    let logger = LOGGER.get_or_init(|| Logger {
        context: context.to_owned(),
    });
    // A second init (tests running several servers in one process) keeps the first logger.
    let _ = log::set_logger(logger);
    log::set_max_level(level);
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

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let thread = std::thread::current();
        let line = format!(
            "{}:{}:{} {} {} {}:{}: {}\n",
            crate::sys::monotonic_ms(),
            letter(record.level()),
            std::process::id(),
            thread.name().unwrap_or("-"),
            self.context,
            record.file().unwrap_or("?"),
            record.line().unwrap_or(0),
            record.args()
        );
        // One write per line so lines from different threads never interleave.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_flexnbd_c_flags() {
        assert_eq!(level_for(0, false), LevelFilter::Warn);
        assert_eq!(level_for(1, false), LevelFilter::Info);
        assert_eq!(level_for(2, false), LevelFilter::Debug);
        assert_eq!(level_for(9, false), LevelFilter::Trace);
        assert_eq!(level_for(0, true), LevelFilter::Off);
    }
}
