//! `flexnbd read` (placeholder while the skeleton is built).

use anyhow::{Result, bail};

use crate::cli::{GlobalArgs, ReadArgs};
use crate::exit::ExitCode;

/// Runs `read`.
///
/// # Errors
///
/// Not written yet.
pub fn run(_args: ReadArgs, _global: GlobalArgs) -> Result<ExitCode> {
    bail!("read is not implemented yet")
}
