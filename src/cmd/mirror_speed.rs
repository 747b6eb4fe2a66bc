//! `flexnbd mirror-speed`: change a running migration's bandwidth limit.

use anyhow::Result;

use crate::cli::{GlobalArgs, MirrorSpeedArgs};
use crate::control::client;
use crate::exit::ExitCode;

/// Runs `mirror-speed`: sends `mirror_max_bps BPS`; exit status is the reply's code.
///
/// # Errors
///
/// The control socket cannot be reached or gives no valid reply.
pub fn run(args: MirrorSpeedArgs, global: GlobalArgs) -> Result<ExitCode> {
    let bps = args.max_speed.to_string();
    let reply = super::control_request(
        global,
        &args.control.sock,
        "mirror_max_bps",
        &[bps.as_str()],
        client::DEFAULT_TIMEOUT,
    )?;
    super::report(&reply)
}
