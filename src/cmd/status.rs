//! `flexnbd status`: ask a server for its status line over the control socket.
//!
//! Prints the text of the reply as flexnbd-c does (behaviour doc, section
//! 1.4): after `0: ` on stdout, trailing space included; any other reply's
//! text on stderr. The exit status is the reply's code. `--json` prints the
//! same status as one JSON object, with the progress fields one snapshot
//! gives (`state`, `bytes_remaining`; see [`super::progress`]) last once a
//! migration has run.

use std::io::Write;
use std::str::FromStr;

use anyhow::{Context, Result};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::control::client;
use crate::exit::ExitCode;
use crate::status::Status;

use super::progress;

/// Runs `status`.
///
/// # Errors
///
/// The control socket cannot be reached or gives no valid reply, a
/// `--json` reply is not a status line, or stdout cannot be written.
pub fn run(args: StatusArgs, global: GlobalArgs) -> Result<ExitCode> {
    let reply = super::control_request::<&str>(
        global,
        &args.control.sock,
        "status",
        &[],
        client::DEFAULT_TIMEOUT,
    )?;
    if args.json && reply.code == 0 {
        let status = Status::from_str(&reply.text).context("cannot convert the status to JSON")?;
        // The status's own keys, then what one snapshot says of the progress.
        let json = status.to_json();
        let members = json.strip_suffix('}').unwrap_or(&json);
        writeln!(
            std::io::stdout().lock(),
            "{members}{}}}",
            progress::json_members(&status)
        )?;
        return Ok(ExitCode::Success);
    }
    super::report(&reply)
}
