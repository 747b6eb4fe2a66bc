//! `flexnbd write`: copy exactly SIZE bytes from stdin to an NBD export.
//!
//! Connects to an old-style or newstyle server, checks the range (and that
//! the export is writable) before reading stdin, then sends the data in
//! requests of at most the client's maximum, reading each piece from stdin
//! before it is sent. A stdin that ends early is an error (the C client
//! spins for ever). At the end it sends FLUSH if the server advertises it,
//! so exit 0 means the data is durable on such servers.

use std::io::{ErrorKind, Read};

use anyhow::{Context, Result, bail};
use log::warn;

use crate::cli::{GlobalArgs, ReadWriteArgs};
use crate::exit::ExitCode;
use crate::proto::types::TransmissionFlags;

/// Runs `write`.
///
/// # Errors
///
/// A failed connection or handshake, a range outside the export, a
/// read-only export, a stdin that fails or ends before SIZE bytes, or an
/// error from the server.
pub fn run(args: ReadWriteArgs, global: GlobalArgs) -> Result<ExitCode> {
    let (mut client, target) = super::connect("write", &args.conn, global)?;
    let (from, size) = (args.range.from, args.range.size);
    client
        .check_write(from, size)
        .with_context(|| format!("cannot write to {target}"))?;

    let mut stdin = std::io::stdin().lock();
    let max_request = client.max_request();
    super::copy_in_pieces(args.range, max_request, "write", |offset, piece| {
        let got = fill(&mut stdin, piece).context("cannot read stdin")?;
        if got < piece.len() {
            let done = offset - from;
            bail!("stdin ended after {} of {size} bytes", done + got as u64);
        }
        client
            .write_at(offset, piece, false)
            .with_context(|| format!("cannot write to {target}"))
    })?;
    if client.flags().contains(TransmissionFlags::SEND_FLUSH) {
        client
            .flush()
            .with_context(|| format!("cannot flush {target}"))?;
    }

    if let Err(err) = client.disconnect() {
        // Every write has been acknowledged (and flushed, where possible).
        warn!("cannot disconnect from {target}: {err}");
    }
    Ok(ExitCode::Success)
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn fill(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_stops_at_the_end_of_input() {
        let mut buf = [0u8; 8];
        assert_eq!(fill(&mut &b"abc"[..], &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"abc");
        let mut input = std::io::Read::chain(&b"ab"[..], &b"cdefghij"[..]);
        assert_eq!(fill(&mut input, &mut buf).unwrap(), 8);
        assert_eq!(&buf, b"abcdefgh");
    }
}
