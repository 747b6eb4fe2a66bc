//! `flexnbd read`: copy a byte range of an NBD export to stdout.
//!
//! Connects to an old-style or newstyle server, checks the range against
//! the export size before sending anything, reads it in requests of at
//! most the client's maximum and writes each piece to stdout as it
//! arrives. Unlike the C client, stdout may be a terminal, and any error
//! exits 1 with one line (C exits 0 after an error reply or a timeout).

use std::io::Write;

use anyhow::{Context, Result};
use log::warn;

use crate::cli::{GlobalArgs, ReadWriteArgs};
use crate::exit::ExitCode;

/// Runs `read`.
///
/// # Errors
///
/// A failed connection or handshake, a range outside the export, an error
/// from the server, or a failed write to stdout (a closed pipe is reported
/// as a `BrokenPipe` I/O error, which `main` treats as success).
pub fn run(args: ReadWriteArgs, global: GlobalArgs) -> Result<ExitCode> {
    let (mut client, target) = super::connect("read", &args.conn, global)?;
    client
        .check_range(args.range.from, args.range.size)
        .with_context(|| format!("cannot read from {target}"))?;

    let mut stdout = std::io::stdout().lock();
    let max_request = client.max_request();
    super::copy_in_pieces(args.range, max_request, "read", |offset, piece| {
        client
            .read_at(offset, piece)
            .with_context(|| format!("cannot read from {target}"))?;
        stdout.write_all(piece).context("cannot write to stdout")
    })?;
    stdout.flush().context("cannot write to stdout")?;

    if let Err(err) = client.disconnect() {
        // Every byte asked for has been delivered; a failed goodbye changes nothing.
        warn!("cannot disconnect from {target}: {err}");
    }
    Ok(ExitCode::Success)
}
