//! Entry points for fuzzing: each takes arbitrary bytes, drives one parser
//! the way the real code does, and panics only when an invariant breaks.
//!
//! The cargo-fuzz targets in `fuzz/` call these functions, and
//! `tests/fuzz_corpus.rs` replays the committed corpora (`fuzz/corpus/`)
//! through the very same functions on stable Rust, so a crash found once
//! stays fixed. Not part of the supported API (hidden from the docs).
//!
//! | target | what the bytes are | checked |
//! |---|---|---|
//! | [`negotiation`] | a config byte, then what a client sends after the greeting | every option gets well-formed replies ending in ACK or an error; only GO/EXPORT_NAME transmit, only ABORT aborts |
//! | [`request`] | what a client sends in transmission | headers round-trip; the end of a range never overflows silently |
//! | [`client_handshake`] | what a server sends from its greeting | our client's requests are well-formed; a negotiated export is sane |
//! | [`client_reply`] | what a server sends in transmission | simple and structured reply headers round-trip; the client accepts only the reply it waits for |
//! | [`control`] | a control-socket request, or a reply line | framing does not depend on how the bytes arrive; every reply is one line that parses back |
//! | [`status`] | a status line | it prints back to a line that parses the same; its JSON strings are escaped |
//! | [`hash`] | hash extension parameters, option data, hash requests and replies | parameters round-trip and stay in their limits; an accepted request is whole blocks in range and bounded; ranges we ask for are accepted |

use std::io::{self, Read, Write};
use std::str::FromStr;

use crate::client::{self, ClientError, Style};
use crate::control::protocol::{MAX_REPLY_LEN, Reply, RequestParser, read_request};
use crate::control::{Controlled, dispatch};
use crate::net::AclEntry;
use crate::proto::consts::{HELLO_PADDING, MAX_REQUEST_LEN};
use crate::proto::handshake::{Export, ServerNegotiation, Step, TlsMode};
use crate::proto::types::{ClientFlags, Cmd, Errno, Opt, Rep, TransmissionFlags};
use crate::proto::wire::{
    ChunkHeader, ExportNameReply, OptionHeader, OptionReplyHeader, Request, SimpleReply,
};
use crate::status::Status;

/// A fuzz target's entry point.
pub type Target = fn(&[u8]);

/// Every target by name, as the fuzz targets and the corpus directories are named.
pub const TARGETS: &[(&str, Target)] = &[
    ("negotiation", negotiation),
    ("request", request),
    ("client_handshake", client_handshake),
    ("client_reply", client_reply),
    ("control", control),
    ("status", status),
    ("hash", hash),
];

/// The export the server side offers in [`negotiation`].
const EXPORT: Export = Export {
    size: 1 << 20,
    flags: TransmissionFlags(1 | 4 | 8 | 32),
};

/// Takes `n` bytes off the front of `data`, or `None` if there are fewer.
fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if data.len() < n {
        return None;
    }
    let (head, rest) = data.split_at(n);
    *data = rest;
    Some(head)
}

/// Takes a fixed-size array off the front of `data`.
fn take_array<const N: usize>(data: &mut &[u8]) -> Option<[u8; N]> {
    take(data, N).and_then(|b| b.try_into().ok())
}

/// The server's option negotiation: byte 0 chooses the configuration (bit
/// 0: no structured replies, as the proxy; bit 1: the export is named
/// `disk`, as with `-x disk`; bits 2-3: TLS off, on or required, a
/// STARTTLS taken as a TLS handshake that succeeded), then come the client
/// flags (4 bytes) and options as a client sends them.
pub fn negotiation(mut data: &[u8]) {
    let Some([config]) = take_array::<1>(&mut data) else {
        return;
    };
    let Some(flags) = take_array::<4>(&mut data) else {
        return;
    };
    let Ok(mut neg) = ServerNegotiation::new(EXPORT, ClientFlags(u32::from_be_bytes(flags))) else {
        return;
    };
    if config & 1 != 0 {
        neg = neg.without_structured_replies();
    }
    if config & 2 != 0 {
        neg = neg.with_export_name(Some("disk".to_owned()));
    }
    let tls = match (config >> 2) & 3 {
        0 => TlsMode::Off,
        1 => TlsMode::On,
        _ => TlsMode::Require,
    };
    neg = neg.with_tls(tls);
    while let Some(head) = take_array::<{ OptionHeader::SIZE }>(&mut data) {
        // A bad header ends the connection, as in the server.
        let Ok(header) = OptionHeader::decode(&head) else {
            return;
        };
        let Some(payload) = take(&mut data, header.len as usize) else {
            return;
        };
        let mut out = Vec::new();
        let before_tls = !neg.negotiated().tls;
        let step = neg.handle(header.opt, payload, &mut out);
        if step == Step::TlsRequired {
            assert!(tls == TlsMode::Require && before_tls && header.opt == Opt::EXPORT_NAME);
            assert!(out.is_empty(), "no reply to EXPORT_NAME without TLS");
            return;
        }
        if tls == TlsMode::Require
            && before_tls
            && ![Opt::STARTTLS, Opt::ABORT].contains(&header.opt)
        {
            // The reply type: after the magic (8 bytes) and the option (4).
            assert_eq!(
                out.get(12..16),
                Some(&Rep::ERR_TLS_REQD.0.to_be_bytes()[..])
            );
        }
        check_option_replies(header.opt, step, &out);
        if step == Step::StartTls {
            assert!(
                tls != TlsMode::Off && before_tls,
                "STARTTLS accepted twice or when off"
            );
            neg.tls_started();
            continue;
        }
        let negotiated = neg.negotiated();
        assert!(
            !negotiated.base_allocation || negotiated.structured,
            "base:allocation without structured replies"
        );
        assert!(
            config & 1 == 0 || !negotiated.structured,
            "structured replies negotiated where they are refused"
        );
        if step != Step::Continue {
            return;
        }
    }
}

/// Checks the bytes a server sent in answer to one option.
fn check_option_replies(opt: Opt, step: Step, mut out: &[u8]) {
    if step == Step::UnknownExport {
        assert_eq!(opt, Opt::EXPORT_NAME, "only EXPORT_NAME closes for a name");
        assert!(
            out.is_empty(),
            "EXPORT_NAME for an unknown name has no reply"
        );
        return;
    }
    if opt == Opt::EXPORT_NAME {
        assert_eq!(step, Step::Transmit, "EXPORT_NAME must end negotiation");
        assert!(
            out.len() == ExportNameReply::SIZE
                || out.len() == ExportNameReply::SIZE + HELLO_PADDING,
            "EXPORT_NAME reply of {} bytes",
            out.len()
        );
        let head: [u8; ExportNameReply::SIZE] = out[..ExportNameReply::SIZE]
            .try_into()
            .unwrap_or_else(|_| unreachable!("length checked"));
        let reply = ExportNameReply::decode(&head);
        assert_eq!((reply.size, reply.flags), (EXPORT.size, EXPORT.flags));
        assert!(out[ExportNameReply::SIZE..].iter().all(|&b| b == 0));
        return;
    }
    let mut last = None;
    while !out.is_empty() {
        let head = take_array::<{ OptionReplyHeader::SIZE }>(&mut out)
            .unwrap_or_else(|| panic!("truncated option reply header: {out:02x?}"));
        let reply = OptionReplyHeader::decode(&head)
            .unwrap_or_else(|e| panic!("our own option reply does not decode: {e}"));
        assert_eq!(reply.opt, opt, "reply to another option");
        assert!(
            last.is_none_or(|r: Rep| r != Rep::ACK && !r.is_error()),
            "a reply after the final one"
        );
        take(&mut out, reply.len as usize)
            .unwrap_or_else(|| panic!("reply payload shorter than its length"));
        last = Some(reply.rep);
    }
    let last = last.unwrap_or_else(|| panic!("option {opt} got no reply"));
    assert!(
        last == Rep::ACK || last.is_error(),
        "option {opt} ended with {last:?}"
    );
    match step {
        Step::Transmit => assert!(opt == Opt::GO && last == Rep::ACK, "{opt} transmits"),
        Step::Abort => assert!(opt == Opt::ABORT, "{opt} aborts"),
        Step::Continue => assert!(opt != Opt::ABORT, "ABORT continues"),
        Step::UnknownExport => unreachable!("checked above"),
        Step::StartTls => assert!(opt == Opt::STARTTLS && last == Rep::ACK, "{opt} starts TLS"),
        Step::TlsRequired => unreachable!("checked by the caller"),
    }
}

/// Transmission-phase requests as the server reads them: a header, and
/// for a WRITE of at most [`MAX_REQUEST_LEN`] bytes, its payload.
pub fn request(mut data: &[u8]) {
    while let Some(head) = take_array::<{ Request::SIZE }>(&mut data) {
        let fields = Request::decode_fields(&head);
        let Ok(req) = Request::decode(&head) else {
            // The server answers EBADMSG to the handle, then drops the connection.
            return;
        };
        assert_eq!(req, fields);
        let mut again = [0u8; Request::SIZE];
        req.encode(&mut again);
        assert_eq!(again, head, "request header does not round-trip");
        match req.end() {
            Some(end) => assert!(end >= req.offset && end - req.offset == u64::from(req.len)),
            None => assert!(req.offset > u64::MAX - u64::from(req.len)),
        }
        if req.cmd == Cmd::WRITE {
            if req.len > MAX_REQUEST_LEN {
                return;
            }
            if take(&mut data, req.len as usize).is_none() {
                return;
            }
        }
    }
}

/// An in-memory connection: reads come from `input`, writes are kept.
#[derive(Debug)]
struct Memory<'a> {
    input: &'a [u8],
    written: Vec<u8>,
}

impl Read for Memory<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Memory<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Our client's handshake against a server that sends `data`.
pub fn client_handshake(data: &[u8]) {
    let mut conn = Memory {
        input: data,
        written: Vec::new(),
    };
    let result = client::handshake(&mut conn, None, "");
    let mut sent = conn.written.as_slice();
    let Ok((style, export)) = result else {
        return;
    };
    let max = client::max_request(export.max_payload);
    assert!(
        (1..=MAX_REQUEST_LEN).contains(&max),
        "max request {max} for {:?}",
        export.max_payload
    );
    match style {
        Style::Oldstyle => assert!(
            sent.is_empty(),
            "the client sent bytes to an old-style server"
        ),
        Style::Newstyle => {
            let flags =
                take_array::<4>(&mut sent).unwrap_or_else(|| panic!("the client sent no flags"));
            assert_eq!(
                ClientFlags(u32::from_be_bytes(flags)).unknown(),
                0,
                "the client sent unknown flags"
            );
            while let Some(head) = take_array::<{ OptionHeader::SIZE }>(&mut sent) {
                let header = OptionHeader::decode(&head)
                    .unwrap_or_else(|e| panic!("our option header does not decode: {e}"));
                assert!(take(&mut sent, header.len as usize).is_some());
            }
            assert!(sent.is_empty(), "the client sent a truncated option");
        }
    }
}

/// What our client reads in transmission: replies to READs of 512 bytes
/// with handles 1, 2, ... (each successful one followed by its data); a
/// structured header's magic is decoded as a chunk (the client never
/// negotiates structured replies, so its reader must refuse it).
pub fn client_reply(mut data: &[u8]) {
    const LEN: u32 = 512;
    let mut handle = 1;
    while data.len() >= SimpleReply::SIZE {
        if data.len() >= ChunkHeader::SIZE {
            let head: [u8; ChunkHeader::SIZE] = data[..ChunkHeader::SIZE]
                .try_into()
                .unwrap_or_else(|_| unreachable!("length checked"));
            if let Ok(chunk) = ChunkHeader::decode(&head) {
                let mut again = [0u8; ChunkHeader::SIZE];
                chunk.encode(&mut again);
                assert_eq!(again, head, "chunk header does not round-trip");
            }
        }
        let Some(head) = take_array::<{ SimpleReply::SIZE }>(&mut data) else {
            return;
        };
        let req = Request {
            flags: crate::proto::types::CmdFlags(0),
            cmd: Cmd::READ,
            handle,
            offset: 0,
            len: LEN,
        };
        let reply = match SimpleReply::decode(&head) {
            Ok(reply) => reply,
            Err(_) => return,
        };
        let mut again = [0u8; SimpleReply::SIZE];
        reply.encode(&mut again);
        assert_eq!(again, head, "reply header does not round-trip");
        match client::check_reply(&req, &reply) {
            Ok(()) => {
                assert!(reply.handle == handle && reply.error == Errno::OK);
                if take(&mut data, LEN as usize).is_none() {
                    return;
                }
            }
            Err(ClientError::UnexpectedHandle { expected, got }) => {
                assert!(expected == handle && got == reply.handle && got != handle);
                return;
            }
            Err(e) => {
                assert_eq!(e.errno(), Some(reply.error));
                assert!(reply.error != Errno::OK);
                let _ = e.to_string();
            }
        }
        handle += 1;
    }
}

/// A server that accepts every control command and does nothing.
#[derive(Debug)]
struct Idle;

impl Controlled for Idle {
    fn status(&self) -> Status {
        Status::default()
    }

    fn set_acl(&self, entries: Vec<AclEntry>) {
        // Accepted entries print and parse back to themselves.
        for entry in entries {
            let text = entry.to_string();
            assert_eq!(text.parse::<AclEntry>().ok(), Some(entry), "{text}");
        }
    }
}

/// The control socket: the request framing (the whole input, and the same
/// bytes split in two at byte 0's value), the reply to that request, and
/// the input as a reply line, as the control client parses it.
pub fn control(data: &[u8]) {
    let Ok(request) = read_request(&mut &data[..]) else {
        return;
    };
    let split = data.first().map_or(0, |&b| usize::from(b).min(data.len()));
    let mut parser = RequestParser::new();
    let used = parser.feed(&data[..split]).and_then(|first| {
        let second = if parser.is_complete() {
            0
        } else {
            parser.feed(&data[split..])?
        };
        Ok(first + second)
    });
    if let Ok(used) = used {
        assert!(used <= data.len());
        assert_eq!(parser.finish(), request, "framing depends on the split");
    }

    let reply = dispatch(&Idle, &request);
    let wire = reply.encode();
    assert!(wire.len() <= MAX_REPLY_LEN, "reply of {} bytes", wire.len());
    assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1);
    let line = String::from_utf8(wire).unwrap_or_else(|e| panic!("reply is not UTF-8: {e}"));
    let parsed = Reply::from_str(line.trim_end_matches('\n'))
        .unwrap_or_else(|e| panic!("our reply does not parse: {e}"));
    assert_eq!(parsed, reply);

    if let Ok(reply) = Reply::from_str(&String::from_utf8_lossy(data)) {
        let _ = reply.to_string();
    }
}

/// A status line, as `status --json` and `mirror --wait` parse it.
pub fn status(data: &[u8]) {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(status) = Status::from_str(line) else {
        return;
    };
    let printed = status.to_string();
    assert_eq!(
        Status::from_str(&printed).ok(),
        Some(status.clone()),
        "{printed}"
    );
    check_json(&status.to_json());
}

/// Checks that the strings in `json` are properly escaped: each runs from a
/// quote to the next unescaped quote and holds no control characters.
fn check_json(json: &str) {
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            assert!(!c.is_control(), "raw control character in {json}");
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else {
            assert!(
                c.is_ascii_alphanumeric() || "{}:,".contains(c),
                "{c:?} outside a string in {json}"
            );
        }
    }
    assert!(!in_string, "unterminated string in {json}");
}

/// The hash extension (`proto::hash`): the server's parameters as a client
/// reads them, the option's data as a server reads it, then requests
/// (u64 size, u64 offset, u32 length) as our server checks them and a
/// reply payload split into hashes.
pub fn hash(data: &[u8]) {
    use crate::proto::hash::{
        HASH_LEN, HashParams, decode_hashes, decode_option_data, request_ranges,
    };
    let params = match HashParams::decode(data.get(..HashParams::SIZE).unwrap_or(data)) {
        Ok(p) => {
            assert_eq!(HashParams::decode(&p.encode()), Ok(p));
            assert!(p.block_size.is_power_of_two() && p.block_size >= 4096);
            assert!((1..=65536).contains(&p.max_blocks));
            p
        }
        Err(_) => HashParams::ours(0),
    };
    if let Ok(version) = decode_option_data(data) {
        assert!(version > 0 && data.len() == 4);
    }
    let block = u64::from(params.block_size);
    let mut rest = data;
    while let Some(raw) = take(&mut rest, 20) {
        let size = u64::from_be_bytes(raw[0..8].try_into().unwrap_or_default()) >> (raw[0] % 64);
        let offset =
            u64::from_be_bytes(raw[8..16].try_into().unwrap_or_default()) % size.saturating_add(1);
        let len = u32::from_be_bytes(raw[16..20].try_into().unwrap_or_default());
        if let Ok(n) = params.check_request(size, offset, len) {
            let end = offset + u64::from(len);
            assert!(end <= size && offset % block == 0 && len > 0);
            assert!(n >= 1 && n <= params.max_blocks as usize);
            assert_eq!(n as u64, u64::from(len).div_ceil(block));
            assert!(u64::from(len) % block == 0 || end == size);
        }
        // What a source asks for is always accepted, and covers the range.
        let mut at = None;
        for (o, l) in request_ranges(&params, size, offset, u64::from(len)).take(64) {
            assert!(at.is_none_or(|a| a == o), "ranges are contiguous");
            let l32 = u32::try_from(l).unwrap_or(u32::MAX);
            assert!(
                params.check_request(size, o, l32).is_ok(),
                "{o}+{l} of {size}"
            );
            at = Some(o + l);
        }
        let count = usize::from(raw[19]);
        let payload = &data[..data.len().min(count * HASH_LEN)];
        assert_eq!(
            decode_hashes(payload, count).is_ok(),
            payload.len() == count * HASH_LEN
        );
    }
}
