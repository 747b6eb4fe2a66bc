//! Server-side fixed-newstyle option negotiation, without I/O.
//!
//! The I/O layer reads the client flags, builds a [`ServerNegotiation`],
//! then for each option reads the header and payload and calls
//! [`ServerNegotiation::handle`], which appends the reply bytes to an
//! output buffer and says whether to keep negotiating, enter transmission,
//! or stop.

use byteorder::{BigEndian, ByteOrder};

use super::ProtoError;
use super::consts::*;
use super::types::*;
use super::wire::{ExportNameReply, OptionReplyHeader, Reader};

/// What the server exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Export {
    /// The size in bytes.
    pub size: u64,
    /// The transmission flags.
    pub flags: TransmissionFlags,
}

/// Whether a server offers TLS, and whether it insists on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// No TLS: `NBD_OPT_STARTTLS` is refused as unsupported.
    #[default]
    Off,
    /// TLS is offered; a client may also go on in plaintext.
    On,
    /// Only TLS: before `NBD_OPT_STARTTLS` every option but `ABORT` gets
    /// `NBD_REP_ERR_TLS_REQD` (and `EXPORT_NAME`, which has no error
    /// reply, a closed connection).
    Require,
}

/// What to do after an option has been answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read the next option.
    Continue,
    /// The client aborted (the ACK is in the output): close the connection.
    Abort,
    /// Negotiation is over (after `EXPORT_NAME` or a successful `GO`): enter transmission.
    Transmit,
    /// `EXPORT_NAME` named an export this server does not have: the
    /// protocol has no error reply for it, so close the connection.
    UnknownExport,
    /// `STARTTLS` was accepted (the ACK is in the output): send it, run the
    /// TLS handshake, call [`ServerNegotiation::tls_started`] and read the
    /// next option over TLS.
    StartTls,
    /// `EXPORT_NAME` before `STARTTLS` on a server that requires TLS: it
    /// has no error reply, so close the connection.
    TlsRequired,
}

/// The outcome of negotiation that the transmission phase needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected for BLOCK_STATUS.
    pub base_allocation: bool,
    /// The flexnbd hash extension was negotiated (`proto::hash`).
    pub hash: bool,
    /// Transmission runs over TLS.
    pub tls: bool,
}

/// The server's negotiation state for one connection.
#[derive(Debug)]
pub struct ServerNegotiation {
    export: Export,
    /// The one export name served; `None` serves the file under any name.
    name: Option<String>,
    no_zeroes: bool,
    structured_allowed: bool,
    /// The hash extension's flags, when it is offered.
    hash_offer: Option<u32>,
    tls: TlsMode,
    state: Negotiated,
}

impl ServerNegotiation {
    /// The handshake flags a fixed-newstyle server sends.
    pub const HANDSHAKE_FLAGS: HandshakeFlags =
        HandshakeFlags(HandshakeFlags::FIXED_NEWSTYLE.0 | HandshakeFlags::NO_ZEROES.0);

    /// Starts negotiation after the client's flags were read.
    ///
    /// # Errors
    ///
    /// The spec requires the server to drop a client that sets unknown flags
    /// or does not speak fixed newstyle.
    pub fn new(export: Export, client_flags: ClientFlags) -> Result<Self, ProtoError> {
        if client_flags.unknown() != 0 {
            return Err(ProtoError::Invalid("unknown client flags"));
        }
        if !client_flags.contains(ClientFlags::FIXED_NEWSTYLE) {
            return Err(ProtoError::Invalid(
                "client does not support fixed newstyle",
            ));
        }
        Ok(ServerNegotiation {
            export,
            name: None,
            no_zeroes: client_flags.contains(ClientFlags::NO_ZEROES),
            structured_allowed: true,
            hash_offer: None,
            tls: TlsMode::Off,
            state: Negotiated::default(),
        })
    }

    /// Refuses structured replies and meta contexts with `NBD_REP_ERR_UNSUP`
    /// (for a server, like the proxy, that can only send simple replies).
    pub fn without_structured_replies(mut self) -> Self {
        self.structured_allowed = false;
        self
    }

    /// Serves the export under `name` only: `LIST` shows it, and a client
    /// asking for another name gets `NBD_REP_ERR_UNKNOWN` (or, for
    /// `EXPORT_NAME`, which has no error reply, the connection closed).
    pub fn with_export_name(mut self, name: Option<String>) -> Self {
        self.name = name;
        self
    }

    /// Offers the flexnbd hash extension (`proto::hash`) with these
    /// [`HashParams`](super::hash::HashParams) flags; `None` (the default)
    /// answers its option `NBD_REP_ERR_UNSUP`, as any other unknown one.
    pub fn with_hash_extension(mut self, flags: Option<u32>) -> Self {
        self.hash_offer = flags;
        self
    }

    /// Offers TLS (or insists on it) with `NBD_OPT_STARTTLS`.
    pub fn with_tls(mut self, mode: TlsMode) -> Self {
        self.tls = mode;
        self
    }

    /// The TLS handshake that [`Step::StartTls`] asked for succeeded: what
    /// was negotiated in plaintext is forgotten, as the spec requires, and
    /// options are answered in full from now on.
    pub fn tls_started(&mut self) {
        self.state = Negotiated {
            tls: true,
            ..Negotiated::default()
        };
    }

    /// Whether `asked` names the export served.
    fn knows(&self, asked: &[u8]) -> bool {
        self.name.as_ref().is_none_or(|n| n.as_bytes() == asked)
    }

    /// What has been negotiated so far.
    pub fn negotiated(&self) -> Negotiated {
        self.state
    }

    /// Answers one option, appending the reply bytes to `out`.
    pub fn handle(&mut self, opt: Opt, data: &[u8], out: &mut Vec<u8>) -> Step {
        if opt == Opt::STARTTLS {
            return self.starttls(data, out);
        }
        if self.tls == TlsMode::Require && !self.state.tls {
            match opt {
                Opt::ABORT => {}
                Opt::EXPORT_NAME => return Step::TlsRequired,
                _ => {
                    error(
                        out,
                        opt,
                        Rep::ERR_TLS_REQD,
                        "this server requires TLS: send NBD_OPT_STARTTLS first",
                    );
                    return Step::Continue;
                }
            }
        }
        match opt {
            Opt::EXPORT_NAME if !self.knows(data) => Step::UnknownExport,
            Opt::EXPORT_NAME => {
                let mut buf = [0u8; ExportNameReply::SIZE];
                ExportNameReply {
                    size: self.export.size,
                    flags: self.export.flags,
                }
                .encode(&mut buf);
                out.extend_from_slice(&buf);
                if !self.no_zeroes {
                    out.extend_from_slice(&[0u8; HELLO_PADDING]);
                }
                Step::Transmit
            }
            Opt::ABORT => {
                reply(out, opt, Rep::ACK, &[]);
                Step::Abort
            }
            Opt::LIST => {
                if !data.is_empty() {
                    error(out, opt, Rep::ERR_INVALID, "LIST takes no data");
                } else {
                    let name = self.name.as_deref().unwrap_or("");
                    // A name is at most MAX_NAME_LEN bytes (checked where it is set).
                    let len = u32::try_from(name.len()).unwrap_or(u32::MAX);
                    let mut payload = len.to_be_bytes().to_vec();
                    payload.extend_from_slice(name.as_bytes());
                    reply(out, opt, Rep::SERVER, &payload);
                    reply(out, opt, Rep::ACK, &[]);
                }
                Step::Continue
            }
            Opt::INFO | Opt::GO => match self.info(opt, data, out) {
                Ok(true) if opt == Opt::GO => Step::Transmit,
                Ok(_) => Step::Continue,
                Err(e) => {
                    error(out, opt, Rep::ERR_INVALID, &e.to_string());
                    Step::Continue
                }
            },
            Opt::STRUCTURED_REPLY | Opt::LIST_META_CONTEXT | Opt::SET_META_CONTEXT
                if !self.structured_allowed =>
            {
                error(
                    out,
                    opt,
                    Rep::ERR_UNSUP,
                    "structured replies are not supported here",
                );
                Step::Continue
            }
            Opt::STRUCTURED_REPLY => {
                if !data.is_empty() {
                    error(out, opt, Rep::ERR_INVALID, "STRUCTURED_REPLY takes no data");
                } else {
                    self.state.structured = true;
                    reply(out, opt, Rep::ACK, &[]);
                }
                Step::Continue
            }
            Opt::LIST_META_CONTEXT | Opt::SET_META_CONTEXT => {
                if opt == Opt::SET_META_CONTEXT && !self.state.structured {
                    error(
                        out,
                        opt,
                        Rep::ERR_INVALID,
                        "structured replies must be negotiated first",
                    );
                } else if let Err(e) = self.meta_context(opt, data, out) {
                    error(out, opt, Rep::ERR_INVALID, &e.to_string());
                }
                Step::Continue
            }
            super::hash::NBD_OPT_FLEXNBD_HASH if self.hash_offer.is_some() => {
                self.hash_option(data, out);
                Step::Continue
            }
            _ => {
                error(
                    out,
                    opt,
                    Rep::ERR_UNSUP,
                    &format!("option {opt} is not supported"),
                );
                Step::Continue
            }
        }
    }

    /// Answers `STARTTLS`.
    fn starttls(&mut self, data: &[u8], out: &mut Vec<u8>) -> Step {
        let opt = Opt::STARTTLS;
        if self.tls == TlsMode::Off {
            error(
                out,
                opt,
                Rep::ERR_UNSUP,
                "TLS is not enabled on this server",
            );
        } else if self.state.tls {
            error(out, opt, Rep::ERR_INVALID, "TLS is already active");
        } else if !data.is_empty() {
            error(out, opt, Rep::ERR_INVALID, "STARTTLS takes no data");
        } else {
            reply(out, opt, Rep::ACK, &[]);
            return Step::StartTls;
        }
        Step::Continue
    }

    /// Answers `INFO` or `GO`; whether the export was found.
    fn info(&mut self, opt: Opt, data: &[u8], out: &mut Vec<u8>) -> Result<bool, ProtoError> {
        let mut r = Reader::new(data);
        let name = r.string()?;
        let count = r.u16()?;
        let mut want_block_size = false;
        for _ in 0..count {
            if Info(r.u16()?) == Info::BLOCK_SIZE {
                want_block_size = true;
            }
        }
        r.finish()?;
        if !self.knows(name.as_bytes()) {
            error(
                out,
                opt,
                Rep::ERR_UNKNOWN,
                &format!("no export named '{}'", name.escape_debug()),
            );
            return Ok(false);
        }
        let mut export = [0u8; 12];
        BigEndian::write_u16(&mut export[0..2], Info::EXPORT.0);
        BigEndian::write_u64(&mut export[2..10], self.export.size);
        BigEndian::write_u16(&mut export[10..12], self.export.flags.0);
        reply(out, opt, Rep::INFO, &export);
        if want_block_size {
            let mut bs = [0u8; 14];
            BigEndian::write_u16(&mut bs[0..2], Info::BLOCK_SIZE.0);
            BigEndian::write_u32(&mut bs[2..6], MIN_BLOCK_SIZE);
            BigEndian::write_u32(&mut bs[6..10], PREFERRED_BLOCK_SIZE);
            BigEndian::write_u32(&mut bs[10..14], MAX_REQUEST_LEN);
            reply(out, opt, Rep::INFO, &bs);
        }
        reply(out, opt, Rep::ACK, &[]);
        Ok(true)
    }

    /// Answers the hash extension's option: ACK with our parameters; where
    /// TLS is offered, only over TLS.
    fn hash_option(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let opt = super::hash::NBD_OPT_FLEXNBD_HASH;
        if self.tls != TlsMode::Off && !self.state.tls {
            error(
                out,
                opt,
                Rep::ERR_TLS_REQD,
                "hashes are only given over TLS here",
            );
            return;
        }
        match super::hash::decode_option_data(data) {
            Ok(_) => {
                let flags = self.hash_offer.unwrap_or(0);
                self.state.hash = true;
                reply(
                    out,
                    opt,
                    Rep::ACK,
                    &super::hash::HashParams::ours(flags).encode(),
                );
            }
            Err(e) => error(out, opt, Rep::ERR_INVALID, &e.to_string()),
        }
    }

    fn meta_context(&mut self, opt: Opt, data: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let mut r = Reader::new(data);
        let _name = r.string()?;
        let count = r.u32()?;
        let mut matched = false;
        if count == 0 {
            // LIST with no queries lists everything; SET with none selects nothing.
            matched = opt == Opt::LIST_META_CONTEXT;
        }
        for _ in 0..count {
            let query = r.string()?;
            if query == BASE_ALLOCATION || (opt == Opt::LIST_META_CONTEXT && query == "base:") {
                matched = true;
            }
        }
        r.finish()?;
        if opt == Opt::SET_META_CONTEXT {
            self.state.base_allocation = matched;
        }
        if matched {
            let id = if opt == Opt::SET_META_CONTEXT {
                BASE_ALLOCATION_ID
            } else {
                0
            };
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(BASE_ALLOCATION.as_bytes());
            reply(out, opt, Rep::META_CONTEXT, &payload);
        }
        reply(out, opt, Rep::ACK, &[]);
        Ok(())
    }
}

fn reply(out: &mut Vec<u8>, opt: Opt, rep: Rep, payload: &[u8]) {
    let mut head = [0u8; OptionReplyHeader::SIZE];
    // Payloads built here are small and bounded; a failed conversion would be a bug.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    OptionReplyHeader { opt, rep, len }.encode(&mut head);
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
}

fn error(out: &mut Vec<u8>, opt: Opt, rep: Rep, message: &str) {
    reply(out, opt, rep, message.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::OptionReplyHeader;

    const EXPORT: Export = Export {
        size: 1 << 20,
        flags: TransmissionFlags(1 | 4 | 8),
    };

    fn neg() -> ServerNegotiation {
        ServerNegotiation::new(EXPORT, ClientFlags::FIXED_NEWSTYLE | ClientFlags::NO_ZEROES)
            .unwrap()
    }

    /// Splits option replies into (rep, payload) pairs.
    fn replies(mut out: &[u8]) -> Vec<(Rep, Vec<u8>)> {
        let mut v = Vec::new();
        while !out.is_empty() {
            let head: [u8; OptionReplyHeader::SIZE] = out[..20].try_into().unwrap();
            let h = OptionReplyHeader::decode(&head).unwrap();
            let len = h.len as usize;
            v.push((h.rep, out[20..20 + len].to_vec()));
            out = &out[20 + len..];
        }
        v
    }

    fn go_payload(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut p = (name.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            p.extend_from_slice(&i.to_be_bytes());
        }
        p
    }

    #[test]
    fn rejects_unknown_client_flags_and_non_fixed_clients() {
        assert!(ServerNegotiation::new(EXPORT, ClientFlags(1 | 0x80)).is_err());
        assert!(ServerNegotiation::new(EXPORT, ClientFlags(0)).is_err());
    }

    #[test]
    fn export_name_pads_unless_no_zeroes() {
        let mut out = Vec::new();
        assert_eq!(
            neg().handle(Opt::EXPORT_NAME, b"", &mut out),
            Step::Transmit
        );
        assert_eq!(out.len(), 10);
        let mut padded = ServerNegotiation::new(EXPORT, ClientFlags::FIXED_NEWSTYLE).unwrap();
        out.clear();
        padded.handle(Opt::EXPORT_NAME, b"x", &mut out);
        assert_eq!(out.len(), 134);
        assert_eq!(&out[..8], &(1u64 << 20).to_be_bytes());
    }

    #[test]
    fn go_sends_export_info_block_size_and_ack() {
        let mut out = Vec::new();
        let step = neg().handle(Opt::GO, &go_payload("", &[Info::BLOCK_SIZE.0]), &mut out);
        assert_eq!(step, Step::Transmit);
        let r = replies(&out);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].0, Rep::INFO);
        assert_eq!(r[0].1.len(), 12);
        assert_eq!(&r[1].1[10..14], &MAX_REQUEST_LEN.to_be_bytes());
        assert_eq!(r[2].0, Rep::ACK);
    }

    #[test]
    fn info_stays_in_negotiation_and_bad_payload_is_invalid() {
        let mut out = Vec::new();
        let mut n = neg();
        assert_eq!(
            n.handle(Opt::INFO, &go_payload("", &[]), &mut out),
            Step::Continue
        );
        out.clear();
        assert_eq!(n.handle(Opt::GO, &[0, 0, 0, 9], &mut out), Step::Continue);
        assert_eq!(replies(&out)[0].0, Rep::ERR_INVALID);
    }

    #[test]
    fn unknown_options_get_unsup() {
        let mut out = Vec::new();
        assert_eq!(neg().handle(Opt(77), b"junk", &mut out), Step::Continue);
        assert_eq!(replies(&out)[0].0, Rep::ERR_UNSUP);
        out.clear();
        neg().handle(Opt::STARTTLS, b"", &mut out);
        assert_eq!(replies(&out)[0].0, Rep::ERR_UNSUP);
    }

    #[test]
    fn the_hash_extension_is_acked_only_when_offered() {
        use crate::proto::hash::{HashParams, NBD_OPT_FLEXNBD_HASH, option_data};
        let mut out = Vec::new();
        let mut plain = neg();
        plain.handle(NBD_OPT_FLEXNBD_HASH, &option_data(), &mut out);
        assert_eq!(replies(&out)[0].0, Rep::ERR_UNSUP);
        assert!(!plain.negotiated().hash);
        let mut offered = neg().with_hash_extension(Some(1));
        out.clear();
        offered.handle(NBD_OPT_FLEXNBD_HASH, b"bad", &mut out);
        assert_eq!(replies(&out)[0].0, Rep::ERR_INVALID);
        assert!(!offered.negotiated().hash);
        out.clear();
        offered.handle(NBD_OPT_FLEXNBD_HASH, &option_data(), &mut out);
        let r = replies(&out);
        assert_eq!(r[0].0, Rep::ACK);
        assert_eq!(HashParams::decode(&r[0].1), Ok(HashParams::ours(1)));
        assert!(offered.negotiated().hash);
        // Where TLS is offered, only over TLS.
        let mut tls = neg().with_tls(TlsMode::On).with_hash_extension(Some(0));
        out.clear();
        tls.handle(NBD_OPT_FLEXNBD_HASH, &option_data(), &mut out);
        assert_eq!(replies(&out)[0].0, Rep::ERR_TLS_REQD);
        tls.handle(Opt::STARTTLS, b"", &mut Vec::new());
        tls.tls_started();
        out.clear();
        tls.handle(NBD_OPT_FLEXNBD_HASH, &option_data(), &mut out);
        assert_eq!(replies(&out)[0].0, Rep::ACK);
    }

    #[test]
    fn starttls_follows_the_mode() {
        // Off: unsupported, as before.
        let mut out = Vec::new();
        assert_eq!(neg().handle(Opt::STARTTLS, b"", &mut out), Step::Continue);
        assert_eq!(replies(&out)[0].0, Rep::ERR_UNSUP);
        // On: plaintext options are answered; STARTTLS is acknowledged once.
        let mut n = neg().with_tls(TlsMode::On);
        out.clear();
        assert_eq!(
            n.handle(Opt::STRUCTURED_REPLY, b"", &mut out),
            Step::Continue
        );
        assert_eq!(replies(&out)[0].0, Rep::ACK);
        out.clear();
        assert_eq!(n.handle(Opt::STARTTLS, b"x", &mut out), Step::Continue);
        assert_eq!(replies(&out)[0].0, Rep::ERR_INVALID);
        out.clear();
        assert_eq!(n.handle(Opt::STARTTLS, b"", &mut out), Step::StartTls);
        assert_eq!(replies(&out), vec![(Rep::ACK, vec![])]);
        n.tls_started();
        // What was negotiated in plaintext is forgotten.
        assert_eq!(
            n.negotiated(),
            Negotiated {
                tls: true,
                ..Negotiated::default()
            }
        );
        out.clear();
        assert_eq!(n.handle(Opt::STARTTLS, b"", &mut out), Step::Continue);
        assert_eq!(replies(&out)[0].0, Rep::ERR_INVALID);
    }

    #[test]
    fn require_answers_only_starttls_and_abort_in_plaintext() {
        let mut n = neg().with_tls(TlsMode::Require);
        for opt in [
            Opt::GO,
            Opt::INFO,
            Opt::LIST,
            Opt::STRUCTURED_REPLY,
            Opt(77),
        ] {
            let mut out = Vec::new();
            assert_eq!(
                n.handle(opt, &go_payload("", &[]), &mut out),
                Step::Continue
            );
            assert_eq!(replies(&out)[0].0, Rep::ERR_TLS_REQD, "{opt}");
        }
        let mut out = Vec::new();
        assert_eq!(n.handle(Opt::EXPORT_NAME, b"", &mut out), Step::TlsRequired);
        assert!(out.is_empty());
        assert_eq!(
            neg()
                .with_tls(TlsMode::Require)
                .handle(Opt::ABORT, b"", &mut out),
            Step::Abort
        );
        // After TLS, GO transmits.
        n.handle(Opt::STARTTLS, b"", &mut Vec::new());
        n.tls_started();
        let mut out = Vec::new();
        assert_eq!(
            n.handle(Opt::GO, &go_payload("", &[]), &mut out),
            Step::Transmit
        );
        assert!(n.negotiated().tls);
    }

    #[test]
    fn structured_replies_can_be_refused() {
        let mut n = neg().without_structured_replies();
        let mut out = Vec::new();
        n.handle(Opt::STRUCTURED_REPLY, b"", &mut out);
        assert_eq!(replies(&out)[0].0, Rep::ERR_UNSUP);
        out.clear();
        n.handle(Opt::LIST_META_CONTEXT, &meta_payload(&[]), &mut out);
        assert_eq!(replies(&out)[0].0, Rep::ERR_UNSUP);
        assert!(!n.negotiated().structured);
    }

    #[test]
    fn list_and_abort() {
        let mut out = Vec::new();
        neg().handle(Opt::LIST, b"", &mut out);
        let r = replies(&out);
        assert_eq!((r[0].0, r[1].0), (Rep::SERVER, Rep::ACK));
        out.clear();
        assert_eq!(neg().handle(Opt::ABORT, b"", &mut out), Step::Abort);
        assert_eq!(replies(&out)[0].0, Rep::ACK);
    }

    fn meta_payload(queries: &[&str]) -> Vec<u8> {
        let mut p = 0u32.to_be_bytes().to_vec();
        p.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            p.extend_from_slice(&(q.len() as u32).to_be_bytes());
            p.extend_from_slice(q.as_bytes());
        }
        p
    }

    #[test]
    fn meta_context_needs_structured_replies_then_selects_base_allocation() {
        let mut n = neg();
        let mut out = Vec::new();
        n.handle(
            Opt::SET_META_CONTEXT,
            &meta_payload(&[BASE_ALLOCATION]),
            &mut out,
        );
        assert_eq!(replies(&out)[0].0, Rep::ERR_INVALID);
        out.clear();
        n.handle(Opt::STRUCTURED_REPLY, b"", &mut out);
        out.clear();
        n.handle(
            Opt::SET_META_CONTEXT,
            &meta_payload(&["qemu:dirty-bitmap:x", BASE_ALLOCATION]),
            &mut out,
        );
        let r = replies(&out);
        assert_eq!(r[0].0, Rep::META_CONTEXT);
        assert_eq!(&r[0].1[..4], &BASE_ALLOCATION_ID.to_be_bytes());
        assert_eq!(&r[0].1[4..], BASE_ALLOCATION.as_bytes());
        assert!(n.negotiated().structured && n.negotiated().base_allocation);
        out.clear();
        n.handle(Opt::LIST_META_CONTEXT, &meta_payload(&[]), &mut out);
        assert_eq!(replies(&out).len(), 2);
    }

    #[test]
    fn a_named_export_is_listed_and_other_names_are_unknown() {
        let named = || neg().with_export_name(Some("disk0".to_owned()));
        let mut out = Vec::new();
        assert_eq!(named().handle(Opt::LIST, b"", &mut out), Step::Continue);
        let r = replies(&out);
        assert_eq!(r[0], (Rep::SERVER, b"\0\0\0\x05disk0".to_vec()));
        assert_eq!(r[1].0, Rep::ACK);

        let mut out = Vec::new();
        assert_eq!(
            named().handle(Opt::GO, &go_payload("other", &[]), &mut out),
            Step::Continue
        );
        let r = replies(&out);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, Rep::ERR_UNKNOWN);
        assert_eq!(r[0].1, b"no export named 'other'".to_vec());

        let mut out = Vec::new();
        assert_eq!(
            named().handle(Opt::GO, &go_payload("disk0", &[]), &mut out),
            Step::Transmit
        );
        assert_eq!(
            named().handle(Opt::EXPORT_NAME, b"nope", &mut Vec::new()),
            Step::UnknownExport
        );
        assert_eq!(
            named().handle(Opt::EXPORT_NAME, b"disk0", &mut Vec::new()),
            Step::Transmit
        );
        // Without a name, any name is served and LIST shows "".
        assert_eq!(
            neg().handle(Opt::EXPORT_NAME, b"whatever", &mut Vec::new()),
            Step::Transmit
        );
        let mut out = Vec::new();
        neg().handle(Opt::LIST, b"", &mut out);
        assert_eq!(replies(&out)[0], (Rep::SERVER, vec![0, 0, 0, 0]));
    }
}
