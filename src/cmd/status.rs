//! `flexnbd status`: ask a server for its status line over the control socket.
//!
//! Prints the text of the reply as flexnbd-c does (behaviour doc, section
//! 1.4): after `0: ` on stdout, trailing space included; any other reply's
//! text on stderr. The exit status is the reply's code. `--json` prints the
//! same status as one JSON object.

use std::io::Write;
use std::str::FromStr;

use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::control::{Reply, client};
use crate::exit::ExitCode;
use crate::server::status::Status;

/// Runs `status`.
///
/// # Errors
///
/// The control socket cannot be reached or gives no valid reply, a
/// `--json` reply is not a status line, or stdout cannot be written.
pub fn run(args: StatusArgs, global: GlobalArgs) -> Result<ExitCode> {
    crate::logging::init(crate::logging::level_for(global.verbose, global.quiet), "");
    let reply = client::request::<&str>(
        &args.control.sock,
        "status",
        &[],
        Some(client::DEFAULT_TIMEOUT),
    )?;
    if args.json && reply.code == 0 {
        let status = Status::from_str(&reply.text).context("cannot convert the status to JSON")?;
        writeln!(std::io::stdout().lock(), "{}", status.to_json())?;
        return Ok(ExitCode::Success);
    }
    report(&reply)
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
