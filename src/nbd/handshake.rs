//! The server side of the handshake over a [`Stream`], shared by `serve`,
//! `listen` and the proxy's client side: the old-style greeting, or the
//! fixed-newstyle greeting and the option loop driven by
//! [`ServerNegotiation`] (which decides every reply; this module only moves
//! bytes, bounds the loop and sets the deadline).

use std::io::{self, Read, Write};
use std::time::Duration;

use crate::proto::ProtoError;
use crate::proto::handshake::{Export, Negotiated, ServerNegotiation, Step};
use crate::proto::types::ClientFlags;
use crate::proto::wire::{NewstyleHello, OldstyleHello, OptionHeader};

use super::Stream;

/// How long a client may take over each step of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most options a client may send before it must start transmission.
pub const MAX_OPTIONS: usize = 4096;

/// What the server offers in the handshake.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// The export's size and transmission flags.
    pub export: Export,
    /// Greet old-style (no options; flexnbd-c's protocol) instead of fixed newstyle.
    pub oldstyle: bool,
    /// Whether structured replies may be negotiated (the proxy relays only simple ones).
    pub structured_replies: bool,
    /// The deadline for each read and write of the handshake.
    pub timeout: Duration,
}

/// Runs the server side of the handshake on `stream`. `Ok(None)` means the
/// client aborted the negotiation. On success the stream's timeouts are
/// cleared for transmission.
///
/// # Errors
///
/// The stream failed or timed out, or the client broke the protocol
/// (`InvalidData`, with the [`ProtoError`] inside), or sent more than
/// [`MAX_OPTIONS`] options.
pub fn serve_handshake(stream: &Stream, offer: &Offer) -> io::Result<Option<Negotiated>> {
    stream.set_timeouts(Some(offer.timeout))?;
    let negotiated = negotiate(stream, offer)?;
    if negotiated.is_some() {
        stream.set_timeouts(None)?;
    }
    Ok(negotiated)
}

fn negotiate(mut stream: &Stream, offer: &Offer) -> io::Result<Option<Negotiated>> {
    let export = offer.export;
    if offer.oldstyle {
        let mut hello = [0u8; OldstyleHello::SIZE];
        OldstyleHello {
            size: export.size,
            flags: u32::from(export.flags.0),
        }
        .encode(&mut hello);
        stream.write_all(&hello)?;
        return Ok(Some(Negotiated::default()));
    }
    let mut hello = [0u8; NewstyleHello::SIZE];
    NewstyleHello {
        flags: ServerNegotiation::HANDSHAKE_FLAGS,
    }
    .encode(&mut hello);
    stream.write_all(&hello)?;
    let mut flags = [0u8; 4];
    stream.read_exact(&mut flags)?;
    let mut negotiation = ServerNegotiation::new(export, ClientFlags(u32::from_be_bytes(flags)))
        .map_err(invalid_data)?;
    if !offer.structured_replies {
        negotiation = negotiation.without_structured_replies();
    }
    let mut payload = Vec::new();
    let mut out = Vec::new();
    for _ in 0..MAX_OPTIONS {
        let mut head = [0u8; OptionHeader::SIZE];
        stream.read_exact(&mut head)?;
        let header = OptionHeader::decode(&head).map_err(invalid_data)?;
        // The length was bounded by decode, so this allocation is bounded too.
        payload.resize(header.len as usize, 0);
        stream.read_exact(&mut payload)?;
        log::debug!("option {} with {} bytes", header.opt, header.len);
        out.clear();
        let step = negotiation.handle(header.opt, &payload, &mut out);
        stream.write_all(&out)?;
        match step {
            Step::Continue => {}
            Step::Abort => return Ok(None),
            Step::Transmit => return Ok(Some(negotiation.negotiated())),
        }
    }
    Err(invalid_data(ProtoError::Invalid("too many options")))
}

/// A protocol violation as an I/O error (`InvalidData`), for callers that end the connection on either.
pub fn invalid_data(e: ProtoError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::consts::*;
    use crate::proto::types::{Opt, TransmissionFlags};
    use std::os::unix::net::UnixStream;

    fn offer(oldstyle: bool) -> Offer {
        Offer {
            export: Export {
                size: 1 << 20,
                flags: TransmissionFlags::HAS_FLAGS,
            },
            oldstyle,
            structured_replies: true,
            timeout: Duration::from_secs(5),
        }
    }

    fn run(oldstyle: bool, client_bytes: Vec<u8>) -> (io::Result<Option<Negotiated>>, Vec<u8>) {
        let (a, b) = UnixStream::pair().unwrap();
        let server = Stream::from(a);
        let mut reader = b.try_clone().unwrap();
        let mut writer = b;
        // Write and read on two threads: neither side may wait on the other's buffer.
        let sender = std::thread::spawn(move || {
            // The server may stop reading (too many options) before all is sent.
            let _ = writer.write_all(&client_bytes);
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        let receiver = std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = reader.read_to_end(&mut got);
            got
        });
        let result = serve_handshake(&server, &offer(oldstyle));
        drop(server);
        sender.join().unwrap();
        (result, receiver.join().unwrap())
    }

    fn option(opt: Opt, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&NBD_OPTS_MAGIC.to_be_bytes());
        v.extend_from_slice(&opt.0.to_be_bytes());
        v.extend_from_slice(&u32::try_from(data.len()).unwrap().to_be_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn oldstyle_sends_the_greeting_and_transmits() {
        let (result, got) = run(true, Vec::new());
        assert!(result.unwrap().is_some());
        assert_eq!(got.len(), OldstyleHello::SIZE);
        assert_eq!(&got[..8], b"NBDMAGIC");
    }

    #[test]
    fn export_name_starts_transmission_and_abort_ends_it() {
        let mut bytes = 3u32.to_be_bytes().to_vec(); // FIXED_NEWSTYLE | NO_ZEROES
        bytes.extend(option(Opt::EXPORT_NAME, b""));
        let (result, got) = run(false, bytes);
        assert!(result.unwrap().is_some());
        assert_eq!(&got[..8], b"NBDMAGIC");

        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend(option(Opt::ABORT, b""));
        let (result, _) = run(false, bytes);
        assert!(result.unwrap().is_none());
    }

    #[test]
    fn bad_client_flags_and_a_silent_end_are_errors() {
        let (result, _) = run(false, 0x8000_0000u32.to_be_bytes().to_vec());
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (result, _) = run(false, 3u32.to_be_bytes().to_vec());
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn too_many_options_end_the_handshake() {
        let mut bytes = 3u32.to_be_bytes().to_vec();
        for _ in 0..=MAX_OPTIONS {
            bytes.extend(option(Opt(0x1234), b""));
        }
        let (result, _) = run(false, bytes);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
