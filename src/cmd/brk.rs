//! `flexnbd break`: stop a running migration; the server keeps serving with control.

use anyhow::Result;

use crate::cli::{BreakArgs, GlobalArgs};
use crate::control::client;
use crate::exit::ExitCode;

/// Runs `break`: sends `break` and waits until the migration has stopped.
///
/// # Errors
///
/// The control socket cannot be reached or gives no valid reply.
pub fn run(args: BreakArgs, global: GlobalArgs) -> Result<ExitCode> {
    crate::logging::init(crate::logging::level_for(global.verbose, global.quiet), "");
    // A migration that is connecting may take ~20 s to notice.
    let reply = client::request::<&str>(
        &args.control.sock,
        "break",
        &[],
        Some(std::time::Duration::from_secs(120)),
    )?;
    super::report(&reply)
}
