//! `flexnbd write` (placeholder while the skeleton is built).

use anyhow::{Result, bail};

use crate::cli::{GlobalArgs, WriteArgs};
use crate::exit::ExitCode;

/// Runs `write`.
///
/// # Errors
///
/// Not written yet.
pub fn run(_args: WriteArgs, _global: GlobalArgs) -> Result<ExitCode> {
    bail!("write is not implemented yet")
}
