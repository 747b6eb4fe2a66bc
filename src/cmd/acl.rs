//! `flexnbd acl`: replace a running server's access control list over the control socket.
//!
//! The entries are sent as they are; the server checks them and keeps its
//! old list if one is bad (`1: bad spec: <entry>` on stderr, exit 1). No
//! entries set an empty list. Output and exit status follow flexnbd-c's
//! clients (behaviour doc, section 1.4).

use anyhow::Result;

use crate::cli::{AclArgs, GlobalArgs};
use crate::control::client;
use crate::exit::ExitCode;

/// Runs `acl`.
///
/// # Errors
///
/// An entry cannot be sent as one line (empty, or with a newline), the
/// control socket cannot be reached or gives no valid reply, or stdout
/// cannot be written.
pub fn run(args: AclArgs, global: GlobalArgs) -> Result<ExitCode> {
    let reply = super::control_request(
        global,
        &args.control.sock,
        "acl",
        &args.acl,
        client::DEFAULT_TIMEOUT,
    )?;
    super::report(&reply)
}
