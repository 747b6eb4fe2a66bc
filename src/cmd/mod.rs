//! One module per subcommand; the only code that prints to stdout.
//!
//! Each module has `pub fn run(args, global) -> anyhow::Result<ExitCode>`.

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, Result};

use crate::control::Reply;

use crate::cli::{Cli, Command, ConnectArgs, GlobalArgs, LogFormat, RangeArgs};
use crate::client::{ConnectOptions, NbdClient};
use crate::exit::ExitCode;

pub mod acl;
pub mod brk;
pub mod generate;
pub mod listen;
pub mod mirror;
pub mod mirror_speed;
pub mod proxy;
pub mod read;
pub mod serve;
pub mod status;
pub mod write;

/// Runs the subcommand named on the command line.
///
/// # Errors
///
/// Whatever the subcommand fails with; `main` prints it as one line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    crate::logging::set_format(log_format(global.log_format));
    match cli.command {
        Command::Serve(args) => serve::run(args, global),
        Command::Listen(args) => listen::run(args, global),
        Command::Mirror(args) => mirror::run(args, global),
        Command::MirrorSpeed(args) => mirror_speed::run(args, global),
        Command::Break(args) => brk::run(args, global),
        Command::Proxy(args) => proxy::run(args, global),
        Command::Read(args) => read::run(args, global),
        Command::Write(args) => write::run(args, global),
        Command::Acl(args) => acl::run(args, global),
        Command::Status(args) => status::run(args, global),
        Command::Generate(args) => generate::run(args),
    }
}

/// The logger's format for `--log-format`.
fn log_format(format: LogFormat) -> crate::logging::Format {
    use crate::logging::Format;
    match format {
        LogFormat::Auto => Format::Auto,
        LogFormat::Plain => Format::Plain,
        LogFormat::Journal => Format::Journal,
        LogFormat::C => Format::C,
    }
}

/// The start of `read` and `write`: logging, then a connection and handshake
/// with the server of `conn` (from `--bind` if given). Returns the client and
/// the server's address, for error messages.
///
/// # Errors
///
/// A failed connection or handshake.
pub(crate) fn connect(conn: &ConnectArgs, global: GlobalArgs) -> Result<(NbdClient, SocketAddr)> {
    crate::logging::init(crate::logging::level_for(global.verbose, global.quiet), "");
    let target = SocketAddr::new(conn.addr, conn.port);
    let opts = ConnectOptions {
        bind: conn.bind,
        ..ConnectOptions::default()
    };
    Ok((NbdClient::connect(target, &opts)?, target))
}

/// The copy loop of `read` and `write`: walks `range` in pieces of at most
/// `max_request` bytes, calling `piece(offset, buf)` with one buffer, reused,
/// cut to each piece's length. Pieces go one at a time and in order, so a
/// failure stops the copy where it happened.
///
/// # Errors
///
/// `"{what} chunk too large"` when a piece cannot be held in memory, or
/// whatever `piece` fails with.
pub(crate) fn copy_in_pieces(
    range: RangeArgs,
    max_request: u32,
    what: &str,
    mut piece: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<()> {
    let (from, size) = (range.from, range.size);
    let chunk = usize::try_from(size.min(u64::from(max_request)))
        .with_context(|| format!("{what} chunk too large"))?;
    let mut buf = vec![0u8; chunk];
    let mut done = 0u64;
    while done < size {
        // A remainder too large for usize is larger than a chunk.
        let n = usize::try_from(size - done).map_or(chunk, |rest| rest.min(chunk));
        piece(from + done, &mut buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Prints a control reply's text as flexnbd-c's clients do and returns its exit code.
///
/// The text goes to stdout for code 0 and to stderr otherwise; the exit
/// code is the reply's code. Shared by the control-socket subcommands.
///
/// # Errors
///
/// Writing to stdout fails (a closed pipe included).
pub(crate) fn report(reply: &Reply) -> Result<ExitCode> {
    if reply.code == 0 {
        writeln!(std::io::stdout().lock(), "{}", reply.text)?;
        Ok(ExitCode::Success)
    } else {
        // As with log lines, a failure to write to stderr has nowhere to be reported.
        let _ = writeln!(std::io::stderr().lock(), "{}", reply.text);
        Ok(ExitCode::Code(reply.code))
    }
}
