//! `flexnbd serve` (placeholder while the skeleton is built).

use anyhow::{Result, bail};

use crate::cli::{GlobalArgs, ServeArgs};
use crate::exit::ExitCode;

/// Runs `serve`.
///
/// # Errors
///
/// Not written yet.
pub fn run(_args: ServeArgs, _global: GlobalArgs) -> Result<ExitCode> {
    bail!("serve is not implemented yet")
}
