//! `flexnbd status` (placeholder while the skeleton is built).

use anyhow::{Result, bail};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::exit::ExitCode;

/// Runs `status`.
///
/// # Errors
///
/// Not written yet.
pub fn run(_args: StatusArgs, _global: GlobalArgs) -> Result<ExitCode> {
    bail!("status is not implemented yet")
}
