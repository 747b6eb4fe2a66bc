//! `flexnbd acl` (placeholder while the skeleton is built).

use anyhow::{Result, bail};

use crate::cli::{AclArgs, GlobalArgs};
use crate::exit::ExitCode;

/// Runs `acl`.
///
/// # Errors
///
/// Not written yet.
pub fn run(_args: AclArgs, _global: GlobalArgs) -> Result<ExitCode> {
    bail!("acl is not implemented yet")
}
