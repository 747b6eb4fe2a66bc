//! Client-side handshake pieces without I/O: the flags and options we send
//! and the interpretation of the server's `NBD_OPT_GO` replies.
//!
//! [`super::NbdClient::connect`] reads and writes the socket; everything
//! here only turns bytes into values, so it is tested against the
//! server-side negotiation in [`crate::proto::handshake`].

use byteorder::{BigEndian, ByteOrder};

use super::error::ClientError;
use crate::proto::ProtoError;
use crate::proto::consts::MAX_REQUEST_LEN;
use crate::proto::hash::{HashParams, NBD_OPT_FLEXNBD_HASH, option_data};
use crate::proto::types::{ClientFlags, HandshakeFlags, Info, Opt, Rep, TransmissionFlags};
use crate::proto::wire::{OptionHeader, OptionReplyHeader, Reader};

/// The longest part of a refusal message we keep.
const MAX_MESSAGE_LEN: usize = 256;

/// What negotiation learnt about the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Export {
    /// The export size in bytes.
    pub(crate) size: u64,
    /// Its transmission flags.
    pub(crate) flags: TransmissionFlags,
    /// The largest request payload the server accepts, if it said.
    pub(crate) max_payload: Option<u32>,
}

/// The client flags answering a newstyle server's handshake flags: fixed
/// newstyle and no zeroes, each only when the server offers it.
pub(crate) fn client_flags(server: HandshakeFlags) -> ClientFlags {
    let mut flags = ClientFlags(0);
    if server.contains(HandshakeFlags::FIXED_NEWSTYLE) {
        flags |= ClientFlags::FIXED_NEWSTYLE;
    }
    if server.contains(HandshakeFlags::NO_ZEROES) {
        flags |= ClientFlags::NO_ZEROES;
    }
    flags
}

/// The longest export name the protocol allows (`NBD_MAX_STRING`), in bytes.
pub(crate) const MAX_EXPORT_NAME: usize = 4096;

/// An option request: the header, then `data`.
pub(crate) fn option_request(opt: Opt, data: &[u8]) -> Vec<u8> {
    // Names are checked against MAX_EXPORT_NAME before any request is made.
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    let mut header = [0u8; OptionHeader::SIZE];
    OptionHeader { opt, len }.encode(&mut header);
    let mut buf = Vec::with_capacity(OptionHeader::SIZE + data.len());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(data);
    buf
}

/// `NBD_OPT_GO` for the export `name` (`""`: the default export), asking
/// for `NBD_INFO_BLOCK_SIZE`. `name` is at most [`MAX_EXPORT_NAME`] bytes.
pub(crate) fn go_request(name: &str) -> Vec<u8> {
    let mut data = vec![0u8; 4];
    BigEndian::write_u32(&mut data, u32::try_from(name.len()).unwrap_or(u32::MAX));
    data.extend_from_slice(name.as_bytes());
    // One information request.
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&Info::BLOCK_SIZE.0.to_be_bytes());
    option_request(Opt::GO, &data)
}

/// `NBD_OPT_EXPORT_NAME` for the export `name` (`""`: the default export).
pub(crate) fn export_name_request(name: &str) -> Vec<u8> {
    option_request(Opt::EXPORT_NAME, name.as_bytes())
}

/// The largest request we send: the server's maximum payload if it gave a
/// sensible one, never more than 32 MiB.
pub(crate) fn max_request(max_payload: Option<u32>) -> u32 {
    max_payload
        .filter(|&max| max > 0)
        .map_or(MAX_REQUEST_LEN, |max| max.min(MAX_REQUEST_LEN))
}

/// What to do after one reply to `NBD_OPT_GO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoStep {
    /// Read the next reply.
    Continue,
    /// The server acknowledged: transmission starts.
    Done(Export),
    /// The server does not know `NBD_OPT_GO`: fall back to `NBD_OPT_EXPORT_NAME`.
    Unsupported,
}

/// Collects the server's replies to `NBD_OPT_GO` until its ACK.
#[derive(Debug, Default)]
pub(crate) struct GoReplies {
    export: Option<(u64, TransmissionFlags)>,
    max_payload: Option<u32>,
}

impl GoReplies {
    /// Takes one reply: its header and its payload (`header.len` bytes).
    pub(crate) fn handle(
        &mut self,
        header: &OptionReplyHeader,
        payload: &[u8],
    ) -> Result<GoStep, ClientError> {
        if header.opt != Opt::GO {
            return Err(bad("reply to an option that was not sent"));
        }
        match header.rep {
            Rep::INFO => {
                self.info(payload).map_err(ClientError::BadHandshake)?;
                Ok(GoStep::Continue)
            }
            Rep::ACK => {
                let (size, flags) = self
                    .export
                    .ok_or_else(|| bad("NBD_OPT_GO acknowledged without NBD_INFO_EXPORT"))?;
                Ok(GoStep::Done(Export {
                    size,
                    flags,
                    max_payload: self.max_payload,
                }))
            }
            Rep::ERR_UNSUP => Ok(GoStep::Unsupported),
            rep if rep.is_error() => Err(refused(Opt::GO, rep, payload)),
            _ => Err(bad("unexpected reply type to NBD_OPT_GO")),
        }
    }

    fn info(&mut self, payload: &[u8]) -> Result<(), ProtoError> {
        let mut r = Reader::new(payload);
        match Info(r.u16()?) {
            Info::EXPORT => {
                let size = BigEndian::read_u64(r.take(8)?);
                let flags = TransmissionFlags(r.u16()?);
                r.finish()?;
                self.export = Some((size, flags));
            }
            Info::BLOCK_SIZE => {
                let _minimum = r.u32()?;
                let _preferred = r.u32()?;
                let maximum = r.u32()?;
                r.finish()?;
                self.max_payload = Some(maximum);
            }
            // The spec asks clients to ignore information they did not ask for or do not know.
            _ => {}
        }
        Ok(())
    }
}

/// The server's error reply `rep` to `opt`, with its message.
pub(crate) fn refused(opt: Opt, rep: Rep, payload: &[u8]) -> ClientError {
    let text = &payload[..payload.len().min(MAX_MESSAGE_LEN)];
    ClientError::Refused {
        opt,
        rep,
        message: String::from_utf8_lossy(text).into_owned(),
    }
}

/// The flexnbd hash extension's option request (`proto::hash`).
pub(crate) fn hash_request() -> Vec<u8> {
    option_request(NBD_OPT_FLEXNBD_HASH, &option_data())
}

/// The server's reply to the hash extension's option: its parameters on
/// ACK, `None` on an error reply (a server without the extension says
/// `NBD_REP_ERR_UNSUP`).
pub(crate) fn hash_reply(
    header: &OptionReplyHeader,
    payload: &[u8],
) -> Result<Option<HashParams>, ClientError> {
    if header.opt != NBD_OPT_FLEXNBD_HASH {
        return Err(bad("reply to an option that was not sent"));
    }
    match header.rep {
        Rep::ACK => HashParams::decode(payload)
            .map(Some)
            .map_err(ClientError::BadHandshake),
        rep if rep.is_error() => Ok(None),
        _ => Err(bad("unexpected reply type to the hash option")),
    }
}

fn bad(what: &'static str) -> ClientError {
    ClientError::BadHandshake(ProtoError::Invalid(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::handshake::{Export as ServerExport, ServerNegotiation, Step};
    use crate::proto::wire::OptionHeader;

    const EXPORT: ServerExport = ServerExport {
        size: 1 << 20,
        flags: TransmissionFlags(1 | 4 | 8),
    };

    /// Feeds a server's option replies to `GoReplies` and returns the last step.
    fn run_go(mut out: &[u8]) -> Result<GoStep, ClientError> {
        let mut go = GoReplies::default();
        let mut step = GoStep::Continue;
        while !out.is_empty() {
            let head: [u8; OptionReplyHeader::SIZE] = out[..20].try_into().unwrap();
            let h = OptionReplyHeader::decode(&head).unwrap();
            let len = h.len as usize;
            step = go.handle(&h, &out[20..20 + len])?;
            out = &out[20 + len..];
        }
        Ok(step)
    }

    fn reply(opt: Opt, rep: Rep, payload: &[u8]) -> Vec<u8> {
        let mut head = [0u8; OptionReplyHeader::SIZE];
        OptionReplyHeader {
            opt,
            rep,
            len: payload.len() as u32,
        }
        .encode(&mut head);
        let mut v = head.to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn flags_follow_what_the_server_offers() {
        assert_eq!(
            client_flags(HandshakeFlags::FIXED_NEWSTYLE | HandshakeFlags::NO_ZEROES),
            ClientFlags::FIXED_NEWSTYLE | ClientFlags::NO_ZEROES
        );
        assert_eq!(
            client_flags(HandshakeFlags::FIXED_NEWSTYLE),
            ClientFlags::FIXED_NEWSTYLE
        );
        assert_eq!(client_flags(HandshakeFlags(0)), ClientFlags(0));
    }

    #[test]
    fn go_request_is_understood_by_our_server() {
        let req = go_request("");
        let head: [u8; OptionHeader::SIZE] = req[..16].try_into().unwrap();
        let h = OptionHeader::decode(&head).unwrap();
        assert_eq!((h.opt, h.len), (Opt::GO, 8));
        let mut server =
            ServerNegotiation::new(EXPORT, ClientFlags::FIXED_NEWSTYLE | ClientFlags::NO_ZEROES)
                .unwrap();
        let mut out = Vec::new();
        assert_eq!(server.handle(h.opt, &req[16..], &mut out), Step::Transmit);
        assert_eq!(
            run_go(&out).unwrap(),
            GoStep::Done(Export {
                size: 1 << 20,
                flags: TransmissionFlags(13),
                max_payload: Some(MAX_REQUEST_LEN),
            })
        );
    }

    #[test]
    fn export_name_request_is_understood_by_our_server() {
        let req = export_name_request("");
        let head: [u8; OptionHeader::SIZE] = req[..].try_into().unwrap();
        let h = OptionHeader::decode(&head).unwrap();
        assert_eq!((h.opt, h.len), (Opt::EXPORT_NAME, 0));
        let req = export_name_request("disk");
        let head: [u8; OptionHeader::SIZE] = req[..16].try_into().unwrap();
        let h = OptionHeader::decode(&head).unwrap();
        assert_eq!((h.opt, h.len), (Opt::EXPORT_NAME, 4));
        assert_eq!(&req[16..], b"disk");
    }

    #[test]
    fn go_request_carries_the_name() {
        let req = go_request("disk");
        let head: [u8; OptionHeader::SIZE] = req[..16].try_into().unwrap();
        let h = OptionHeader::decode(&head).unwrap();
        assert_eq!((h.opt, h.len), (Opt::GO, 4 + 4 + 2 + 2));
        assert_eq!(&req[16..20], &4u32.to_be_bytes());
        assert_eq!(&req[20..24], b"disk");
        assert_eq!(&req[24..26], &1u16.to_be_bytes());
        assert_eq!(&req[26..28], &Info::BLOCK_SIZE.0.to_be_bytes());
    }

    #[test]
    fn unknown_info_is_ignored_and_block_size_is_optional() {
        let mut export = vec![0, 0];
        export.extend_from_slice(&4096u64.to_be_bytes());
        export.extend_from_slice(&1u16.to_be_bytes());
        let mut out = reply(Opt::GO, Rep::INFO, &[0, 2, b'h', b'i']);
        out.extend(reply(Opt::GO, Rep::INFO, &export));
        out.extend(reply(Opt::GO, Rep::ACK, &[]));
        assert_eq!(
            run_go(&out).unwrap(),
            GoStep::Done(Export {
                size: 4096,
                flags: TransmissionFlags::HAS_FLAGS,
                max_payload: None,
            })
        );
    }

    #[test]
    fn bad_replies_are_rejections() {
        // ACK without NBD_INFO_EXPORT.
        let e = run_go(&reply(Opt::GO, Rep::ACK, &[])).unwrap_err();
        assert!(matches!(e, ClientError::BadHandshake(_)), "{e:?}");
        // A truncated NBD_INFO_EXPORT.
        let e = run_go(&reply(Opt::GO, Rep::INFO, &[0, 0, 1])).unwrap_err();
        assert!(matches!(e, ClientError::BadHandshake(_)), "{e:?}");
        // A reply to another option.
        let e = run_go(&reply(Opt::LIST, Rep::ACK, &[])).unwrap_err();
        assert!(matches!(e, ClientError::BadHandshake(_)), "{e:?}");
        // A refusal carries the server's message.
        let e = run_go(&reply(Opt::GO, Rep::ERR_UNKNOWN, b"no such export")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "server refused GO with ERR_UNKNOWN: no such export"
        );
        // ERR_UNSUP means: fall back to EXPORT_NAME.
        assert_eq!(
            run_go(&reply(Opt::GO, Rep::ERR_UNSUP, &[])).unwrap(),
            GoStep::Unsupported
        );
    }

    #[test]
    fn the_hash_option_is_understood_by_our_server_or_refused() {
        let req = hash_request();
        let head: [u8; OptionHeader::SIZE] = req[..16].try_into().unwrap();
        let h = OptionHeader::decode(&head).unwrap();
        let flags = ClientFlags::FIXED_NEWSTYLE | ClientFlags::NO_ZEROES;
        for offered in [None, Some(1)] {
            let mut server = ServerNegotiation::new(EXPORT, flags)
                .unwrap()
                .with_hash_extension(offered);
            let mut out = Vec::new();
            assert_eq!(server.handle(h.opt, &req[16..], &mut out), Step::Continue);
            let head: [u8; OptionReplyHeader::SIZE] = out[..20].try_into().unwrap();
            let rh = OptionReplyHeader::decode(&head).unwrap();
            let got = hash_reply(&rh, &out[20..]).unwrap();
            assert_eq!(got, offered.map(HashParams::ours));
        }
        let e = hash_reply(
            &OptionReplyHeader {
                opt: NBD_OPT_FLEXNBD_HASH,
                rep: Rep::ACK,
                len: 3,
            },
            &[0, 0, 1],
        );
        assert!(e.is_err());
    }

    #[test]
    fn max_request_is_capped_at_32_mib() {
        assert_eq!(max_request(None), MAX_REQUEST_LEN);
        assert_eq!(max_request(Some(0)), MAX_REQUEST_LEN);
        assert_eq!(max_request(Some(65536)), 65536);
        assert_eq!(max_request(Some(u32::MAX)), MAX_REQUEST_LEN);
    }
}
