//! One module per subcommand; the only code that prints to stdout.
//!
//! Each module has `pub fn run(args, global) -> anyhow::Result<ExitCode>`.

use std::io::Write;

use anyhow::Result;

use crate::control::Reply;

use crate::cli::{Cli, Command};
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
