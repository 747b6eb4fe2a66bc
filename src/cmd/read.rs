//! `flexnbd read`: copy a byte range of an NBD export to stdout.
//!
//! Connects to an old-style or newstyle server, checks the range against
//! the export size before sending anything, reads it in requests of at
//! most the client's maximum and writes each piece to stdout as it
//! arrives. Unlike the C client, stdout may be a terminal, and any error
//! exits 1 with one line (C exits 0 after an error reply or a timeout).

use std::io::Write;
use std::net::SocketAddr;

use anyhow::{Context, Result};
use log::warn;

use crate::cli::{GlobalArgs, ReadArgs};
use crate::client::{ConnectOptions, NbdClient};
use crate::exit::ExitCode;

/// Runs `read`.
///
/// # Errors
///
/// A failed connection or handshake, a range outside the export, an error
/// from the server, or a failed write to stdout (a closed pipe is reported
/// as a `BrokenPipe` I/O error, which `main` treats as success).
pub fn run(args: ReadArgs, global: GlobalArgs) -> Result<ExitCode> {
    crate::logging::init(crate::logging::level_for(global.verbose, global.quiet), "");
    let target = SocketAddr::new(args.conn.addr, args.conn.port);
    let opts = ConnectOptions {
        bind: args.conn.bind,
        ..ConnectOptions::default()
    };
    let mut client = NbdClient::connect(target, &opts)?;
    let (from, size) = (args.range.from, args.range.size);
    client
        .check_range(from, size)
        .with_context(|| format!("cannot read from {target}"))?;

    let chunk = usize::try_from(size.min(u64::from(client.max_request())))
        .context("read chunk too large")?;
    let mut buf = vec![0u8; chunk];
    let mut stdout = std::io::stdout().lock();
    let mut done = 0u64;
    while done < size {
        // A remainder too large for usize is larger than a chunk.
        let n = usize::try_from(size - done).map_or(chunk, |rest| rest.min(chunk));
        let piece = &mut buf[..n];
        client
            .read_at(from + done, piece)
            .with_context(|| format!("cannot read from {target}"))?;
        stdout.write_all(piece).context("cannot write to stdout")?;
        done += n as u64;
    }
    stdout.flush().context("cannot write to stdout")?;

    if let Err(err) = client.disconnect() {
        // Every byte asked for has been delivered; a failed goodbye changes nothing.
        warn!("cannot disconnect from {target}: {err}");
    }
    Ok(ExitCode::Success)
}
