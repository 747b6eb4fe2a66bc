//! The client side of the handshake: the old-style hello, or the
//! fixed-newstyle greeting, `NBD_OPT_STARTTLS` when TLS is wanted, and
//! `NBD_OPT_GO` (or `EXPORT_NAME`). One `read_exact` per structure, then a
//! pure decode (`negotiate`, `proto`).

use std::io::{Read, Write};
use std::time::Duration;

use log::{debug, warn};

use super::negotiate::{self, Export, GoReplies, GoStep};
use super::{ClientError, Style};
use crate::proto::consts::{HELLO_PADDING, OLDSTYLE_HELLO_SIZE};
use crate::proto::hash::HashParams;
use crate::proto::types::{HandshakeFlags, Opt, Rep};
use crate::proto::wire::{ExportNameReply, Greeting, OldstyleHello, OptionReplyHeader};

/// Negotiates the export `name` over `stream`, whichever handshake the
/// server speaks. Generic over the stream so that the fuzz targets
/// (the `fuzzing` module, above this one) can run it over bytes in memory.
pub(crate) fn handshake(
    stream: impl Read + Write,
    timeout: Option<Duration>,
    name: &str,
) -> Result<(Style, Export), ClientError> {
    handshake_asking_hash(stream, timeout, name, false).map(|(style, export, _)| (style, export))
}

/// [`handshake`], first asking a fixed-newstyle server for the flexnbd
/// hash extension when `want_hash`: its parameters, if it offers it.
pub(crate) fn handshake_asking_hash(
    stream: impl Read + Write,
    timeout: Option<Duration>,
    name: &str,
    want_hash: bool,
) -> Result<(Style, Export, Option<HashParams>), ClientError> {
    let mut h = Handshake {
        stream,
        timeout,
        want_hash,
        hash: None,
    };
    let (style, export) =
        closed_is_handshake_closed(h.greet().and_then(|greeting| match greeting {
            Greeted::Oldstyle(export) => {
                ignore_name(name);
                Ok((Style::Oldstyle, export))
            }
            Greeted::Newstyle(server) => h.options(server, name).map(|e| (Style::Newstyle, e)),
        }))?;
    Ok((style, export, h.hash))
}

/// Reads the greeting and asks for TLS with `NBD_OPT_STARTTLS`; on `Ok` the
/// caller runs the TLS handshake over the same socket and then
/// [`after_starttls`] over the TLS session. Nothing but the greeting and
/// the request for TLS is sent in clear.
///
/// # Errors
///
/// [`ClientError::NoTls`] when the server speaks a handshake without TLS,
/// [`ClientError::Refused`] when it refuses `STARTTLS`; the errors of
/// [`handshake`].
pub(crate) fn starttls(
    stream: impl Read + Write,
    timeout: Option<Duration>,
) -> Result<HandshakeFlags, ClientError> {
    let mut h = Handshake::new(stream, timeout);
    closed_is_handshake_closed(h.greet().and_then(|greeting| match greeting {
        Greeted::Oldstyle(_) => Err(ClientError::NoTls(
            "the server speaks the old-style handshake, which has no TLS".to_owned(),
        )),
        Greeted::Newstyle(server) if !server.contains(HandshakeFlags::FIXED_NEWSTYLE) => {
            Err(ClientError::NoTls(
                "the server does not speak fixed newstyle, which TLS needs".to_owned(),
            ))
        }
        Greeted::Newstyle(server) => h.starttls().map(|()| server),
    }))
}

/// Negotiates the export `name` over the TLS session, after [`starttls`]
/// (asking for the hash extension first when `want_hash`).
///
/// # Errors
///
/// As [`handshake`].
pub(crate) fn after_starttls(
    stream: impl Read + Write,
    timeout: Option<Duration>,
    server: HandshakeFlags,
    name: &str,
    want_hash: bool,
) -> Result<(Export, Option<HashParams>), ClientError> {
    let mut h = Handshake {
        want_hash,
        ..Handshake::new(stream, timeout)
    };
    let export = closed_is_handshake_closed(h.options(server, name))?;
    Ok((export, h.hash))
}

fn closed_is_handshake_closed<T>(result: Result<T, ClientError>) -> Result<T, ClientError> {
    result.map_err(|e| match e {
        ClientError::Closed { .. } => ClientError::HandshakeClosed,
        e => e,
    })
}

fn ignore_name(name: &str) {
    if !name.is_empty() {
        warn!(
            "the server speaks the old-style handshake, which has no export names: ignoring {name:?}"
        );
    }
}

enum Greeted {
    Oldstyle(Export),
    /// The server's handshake flags; the client's were sent.
    Newstyle(HandshakeFlags),
}

/// The handshake's I/O.
struct Handshake<S> {
    stream: S,
    timeout: Option<Duration>,
    /// Ask for the hash extension before GO.
    want_hash: bool,
    /// What the server answered to it.
    hash: Option<HashParams>,
}

impl<S: Read + Write> Handshake<S> {
    fn new(stream: S, timeout: Option<Duration>) -> Self {
        Handshake {
            stream,
            timeout,
            want_hash: false,
            hash: None,
        }
    }

    fn greet(&mut self) -> Result<Greeted, ClientError> {
        let mut head = [0u8; 16];
        self.read(&mut head)?;
        match Greeting::decode(&head).map_err(ClientError::BadHello)? {
            Greeting::Oldstyle => self.oldstyle(&head).map(Greeted::Oldstyle),
            Greeting::Newstyle => {
                let mut buf = [0u8; 2];
                self.read(&mut buf)?;
                let server = HandshakeFlags(u16::from_be_bytes(buf));
                let flags = negotiate::client_flags(server);
                self.write(&flags.0.to_be_bytes())?;
                Ok(Greeted::Newstyle(server))
            }
        }
    }

    fn oldstyle(&mut self, head: &[u8; 16]) -> Result<Export, ClientError> {
        let mut buf = [0u8; OLDSTYLE_HELLO_SIZE];
        buf[..16].copy_from_slice(head);
        self.read(&mut buf[16..])?;
        let hello = OldstyleHello::decode(&buf).map_err(ClientError::BadHello)?;
        Ok(Export {
            size: hello.size,
            flags: hello.transmission_flags(),
            max_payload: None,
        })
    }

    fn options(&mut self, server: HandshakeFlags, name: &str) -> Result<Export, ClientError> {
        if server.contains(HandshakeFlags::FIXED_NEWSTYLE) {
            if self.want_hash {
                self.write(&negotiate::hash_request())?;
                let (header, payload) = self.option_reply()?;
                self.hash = negotiate::hash_reply(&header, &payload)?;
                debug!("hash extension: {:?}", self.hash);
            }
            if let Some(export) = self.go(name)? {
                return Ok(export);
            }
            debug!("server does not support NBD_OPT_GO; falling back to NBD_OPT_EXPORT_NAME");
        }
        self.export_name(name, server.contains(HandshakeFlags::NO_ZEROES))
    }

    /// Sends `NBD_OPT_STARTTLS` and reads its one reply.
    fn starttls(&mut self) -> Result<(), ClientError> {
        self.write(&negotiate::option_request(Opt::STARTTLS, &[]))?;
        let (header, payload) = self.option_reply()?;
        if header.opt != Opt::STARTTLS {
            return Err(ClientError::BadHandshake(
                crate::proto::ProtoError::Invalid("reply to another option than STARTTLS"),
            ));
        }
        match header.rep {
            Rep::ACK => Ok(()),
            rep => Err(negotiate::refused(Opt::STARTTLS, rep, &payload)),
        }
    }

    fn option_reply(&mut self) -> Result<(OptionReplyHeader, Vec<u8>), ClientError> {
        let mut head = [0u8; OptionReplyHeader::SIZE];
        self.read(&mut head)?;
        // decode bounds the length (64 KiB) before we allocate for it.
        let header = OptionReplyHeader::decode(&head).map_err(ClientError::BadHandshake)?;
        let mut payload = vec![0u8; header.len as usize];
        self.read(&mut payload)?;
        Ok((header, payload))
    }

    /// Sends `NBD_OPT_GO`; `None` if the server does not support it.
    fn go(&mut self, name: &str) -> Result<Option<Export>, ClientError> {
        self.write(&negotiate::go_request(name))?;
        let mut replies = GoReplies::default();
        loop {
            let (header, payload) = self.option_reply()?;
            match replies.handle(&header, &payload)? {
                GoStep::Continue => {}
                GoStep::Done(export) => return Ok(Some(export)),
                GoStep::Unsupported => return Ok(None),
            }
        }
    }

    fn export_name(&mut self, name: &str, no_zeroes: bool) -> Result<Export, ClientError> {
        self.write(&negotiate::export_name_request(name))?;
        let mut buf = [0u8; ExportNameReply::SIZE];
        self.read(&mut buf)?;
        let reply = ExportNameReply::decode(&buf);
        if !no_zeroes {
            let mut zeroes = [0u8; HELLO_PADDING];
            self.read(&mut zeroes)?;
        }
        Ok(Export {
            size: reply.size,
            flags: reply.flags,
            max_payload: None,
        })
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), ClientError> {
        self.stream
            .read_exact(buf)
            .map_err(|e| ClientError::from_io(e, "reading the handshake", self.timeout))
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), ClientError> {
        self.stream
            .write_all(buf)
            .map_err(|e| ClientError::from_io(e, "sending the handshake", self.timeout))
    }
}
