//! The server side of the handshake over a [`Stream`], shared by `serve`,
//! `listen` and the proxy's client side: the old-style greeting, or the
//! fixed-newstyle greeting and the option loop driven by
//! [`ServerNegotiation`] (which decides every reply; this module only moves
//! bytes, bounds the loop and sets the deadline).

use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use crate::proto::ProtoError;
use crate::proto::handshake::{Export, Negotiated, ServerNegotiation, Step};
use crate::proto::types::ClientFlags;
use crate::proto::wire::{NewstyleHello, OldstyleHello, OptionHeader};
use crate::sys::{RateLimit, Verdict};

use super::Stream;
use super::tls::{self, ServerTls, TlsMode};

/// How long a client may take over each step of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most options a client may send before it must start transmission.
pub const MAX_OPTIONS: usize = 4096;

/// What the server offers in the handshake.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The export's size and transmission flags.
    pub export: Export,
    /// The export's name; `None` serves it under any name (newstyle only).
    pub name: Option<String>,
    /// Greet old-style (no options; flexnbd-c's protocol) instead of fixed newstyle.
    pub oldstyle: bool,
    /// Whether structured replies may be negotiated (the proxy relays only simple ones).
    pub structured_replies: bool,
    /// The deadline for each read and write of the handshake (the TLS
    /// handshake's included).
    pub timeout: Duration,
    /// Offer the flexnbd hash extension with these flags (`proto::hash`; `listen` only).
    pub hash: Option<u32>,
    /// TLS: offered or required, with the credentials to answer with.
    pub tls: Option<TlsOffer>,
}

/// What a server says to `NBD_OPT_STARTTLS`.
#[derive(Debug, Clone)]
pub struct TlsOffer {
    /// Offered or required (never [`TlsMode::Off`]: that is no offer).
    pub mode: TlsMode,
    /// The credentials, read again at each upgrade.
    pub credentials: ServerTls,
}

/// How a handshake ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Transmission starts with what was negotiated.
    Transmit(Negotiated),
    /// The client aborted the negotiation.
    Aborted,
    /// `admit` said no: the client was sent nothing more.
    Refused,
}

/// Runs the server side of the handshake on `stream`. Just before the last
/// byte that starts transmission is sent (the old-style greeting, or the
/// reply to `NBD_OPT_GO`/`EXPORT_NAME`), `admit` decides whether this
/// client may be served; so a client that sees transmission start is
/// already counted. On success the stream's timeouts are cleared.
///
/// A client that asks for TLS (`NBD_OPT_STARTTLS`, when offered) has its
/// `stream` replaced by the TLS session, over which negotiation goes on
/// and transmission runs.
///
/// # Errors
///
/// The stream failed or timed out, or the client broke the protocol
/// (`InvalidData`, with the [`ProtoError`] inside), or sent more than
/// [`MAX_OPTIONS`] options, or the TLS handshake failed (the message
/// starts "TLS handshake failed"), or the client tried to start
/// transmission in plaintext on a server that requires TLS.
pub fn serve_handshake(
    stream: &mut Stream,
    offer: &Offer,
    admit: impl FnOnce() -> bool,
) -> io::Result<Handshake> {
    stream.set_timeouts(Some(offer.timeout))?;
    let end = negotiate(stream, offer, admit)?;
    if let Handshake::Transmit(_) = end {
        stream.set_timeouts(None)?;
    }
    Ok(end)
}

fn negotiate(
    stream: &mut Stream,
    offer: &Offer,
    admit: impl FnOnce() -> bool,
) -> io::Result<Handshake> {
    let export = offer.export;
    if offer.oldstyle {
        if !admit() {
            return Ok(Handshake::Refused);
        }
        let mut hello = [0u8; OldstyleHello::SIZE];
        OldstyleHello {
            size: export.size,
            flags: u32::from(export.flags.0),
        }
        .encode(&mut hello);
        (&*stream).write_all(&hello)?;
        return Ok(Handshake::Transmit(Negotiated::default()));
    }
    let mut hello = [0u8; NewstyleHello::SIZE];
    NewstyleHello {
        flags: ServerNegotiation::HANDSHAKE_FLAGS,
    }
    .encode(&mut hello);
    (&*stream).write_all(&hello)?;
    let mut flags = [0u8; 4];
    (&*stream).read_exact(&mut flags)?;
    let mut negotiation = ServerNegotiation::new(export, ClientFlags(u32::from_be_bytes(flags)))
        .map_err(invalid_data)?;
    if !offer.structured_replies {
        negotiation = negotiation.without_structured_replies();
    }
    negotiation = negotiation.with_export_name(offer.name.clone());
    negotiation = negotiation.with_hash_extension(offer.hash);
    if let Some(tls) = &offer.tls {
        negotiation = negotiation.with_tls(tls.mode);
    }
    let mut payload = Vec::new();
    let mut out = Vec::new();
    let mut admit = Some(admit);
    for _ in 0..MAX_OPTIONS {
        let mut head = [0u8; OptionHeader::SIZE];
        (&*stream).read_exact(&mut head)?;
        let header = OptionHeader::decode(&head).map_err(invalid_data)?;
        // The length was bounded by decode, so this allocation is bounded too.
        payload.resize(header.len as usize, 0);
        (&*stream).read_exact(&mut payload)?;
        log::debug!("option {} with {} bytes", header.opt, header.len);
        out.clear();
        let step = negotiation.handle(header.opt, &payload, &mut out);
        if step == Step::Transmit && !admit.take().is_some_and(|admit| admit()) {
            return Ok(Handshake::Refused);
        }
        (&*stream).write_all(&out)?;
        match step {
            Step::Continue => {}
            Step::StartTls => {
                // Offered only with credentials: `with_tls` saw a mode.
                let Some(tls) = &offer.tls else {
                    return Err(io::Error::other("STARTTLS accepted without credentials"));
                };
                *stream = tls::accept(stream, &tls.credentials).map_err(|e| {
                    // A read or write timeout: say which limit, not "os error 11".
                    let why = if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) {
                        format!("stalled for {:?} (--handshake-timeout)", offer.timeout)
                    } else {
                        e.to_string()
                    };
                    io::Error::new(e.kind(), TlsFailed(format!("TLS handshake failed: {why}")))
                })?;
                negotiation.tls_started();
                if let Stream::Tls(session) = &*stream {
                    log::debug!("TLS session started: {}", session.describe());
                }
            }
            Step::TlsRequired => {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "client tried to start transmission without TLS, which this server requires",
                ));
            }
            Step::Abort => return Ok(Handshake::Aborted),
            Step::Transmit => return Ok(Handshake::Transmit(negotiation.negotiated())),
            Step::UnknownExport => {
                log::info!(
                    "client asked for export '{}', which is not served",
                    String::from_utf8_lossy(&payload).escape_debug()
                );
                return Ok(Handshake::Aborted);
            }
        }
    }
    Err(invalid_data(ProtoError::Invalid("too many options")))
}

/// The TLS handshake after `NBD_OPT_STARTTLS` failed: not TLS, a refused
/// certificate, unusable credentials, or a stall.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TlsFailed(String);

/// Whether a handshake error is a failed TLS handshake (worth a warning:
/// a client with the wrong certificate, or not speaking TLS at all).
pub fn is_tls_failure(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TlsFailed>())
}

/// The limit for [`warn_tls_failure`]: 10 warnings at once, then one a second.
pub fn tls_warning_limit() -> RateLimit {
    RateLimit::new(10, Duration::from_secs(1))
}

/// Logs a failed TLS handshake as a warning, `who: e`, within `limit`:
/// each is a new connection, so the limit must be shared by all of them,
/// or a scanner would fill the log at its connection rate. The first one
/// let through after some were dropped says how many.
pub fn warn_tls_failure(limit: &RateLimit, who: fmt::Arguments<'_>, e: &io::Error) {
    match limit.check() {
        Verdict::Allow { suppressed: 0 } => log::warn!("{who}: {e}"),
        Verdict::Allow { suppressed } => {
            log::warn!("{who}: {e} ({suppressed} more failed TLS handshake(s) not logged)");
        }
        Verdict::Suppress => log::debug!("{who}: {e}"),
    }
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
            name: None,
            oldstyle,
            structured_replies: true,
            timeout: Duration::from_secs(5),
            hash: None,
            tls: None,
        }
    }

    fn run(oldstyle: bool, client_bytes: Vec<u8>) -> (io::Result<Handshake>, Vec<u8>) {
        run_admitting(oldstyle, client_bytes, true)
    }

    fn run_admitting(
        oldstyle: bool,
        client_bytes: Vec<u8>,
        admitted: bool,
    ) -> (io::Result<Handshake>, Vec<u8>) {
        let (a, b) = UnixStream::pair().unwrap();
        let mut server = Stream::from(a);
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
        let result = serve_handshake(&mut server, &offer(oldstyle), || admitted);
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
        assert!(matches!(result.unwrap(), Handshake::Transmit(_)));
        assert_eq!(got.len(), OldstyleHello::SIZE);
        assert_eq!(&got[..8], b"NBDMAGIC");
        // Refused: not a byte.
        let (result, got) = run_admitting(true, Vec::new(), false);
        assert_eq!(result.unwrap(), Handshake::Refused);
        assert!(got.is_empty());
    }

    #[test]
    fn export_name_starts_transmission_and_abort_ends_it() {
        let mut bytes = 3u32.to_be_bytes().to_vec(); // FIXED_NEWSTYLE | NO_ZEROES
        bytes.extend(option(Opt::EXPORT_NAME, b""));
        let (result, got) = run(false, bytes.clone());
        assert!(matches!(result.unwrap(), Handshake::Transmit(_)));
        assert_eq!(&got[..8], b"NBDMAGIC");
        // Refused: the greeting, and no reply to EXPORT_NAME.
        let (result, got) = run_admitting(false, bytes, false);
        assert_eq!(result.unwrap(), Handshake::Refused);
        assert_eq!(got.len(), NewstyleHello::SIZE);

        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend(option(Opt::ABORT, b""));
        let (result, _) = run(false, bytes);
        assert_eq!(result.unwrap(), Handshake::Aborted);
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
