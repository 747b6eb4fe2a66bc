//! One module per subcommand; the only code that prints to stdout.
//!
//! Each module has `pub fn run(args, global) -> anyhow::Result<ExitCode>`.

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::exit::ExitCode;

pub mod acl;
pub mod generate;
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
        Command::Read(args) => read::run(args, global),
        Command::Write(args) => write::run(args, global),
        Command::Acl(args) => acl::run(args, global),
        Command::Status(args) => status::run(args, global),
        Command::Generate(args) => generate::run(args),
    }
}
