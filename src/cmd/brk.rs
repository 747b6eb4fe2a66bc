//! `flexnbd break`: stop a running migration; the server keeps serving with control.

use anyhow::Result;

use crate::cli::{BreakArgs, GlobalArgs};
use crate::exit::ExitCode;

/// Runs `break`: sends `break` and waits until the migration has stopped.
///
/// # Errors
///
/// The control socket cannot be reached or gives no valid reply.
pub fn run(args: BreakArgs, global: GlobalArgs) -> Result<ExitCode> {
    // A migration that is connecting may take ~20 s to notice.
    let reply = super::control_request::<&str>(
        global,
        &args.control.sock,
        "break",
        &[],
        std::time::Duration::from_secs(120),
    )?;
    super::report(&reply)
}
