//! The control socket's line protocol, as pure code over bytes.
//!
//! This is flexnbd-c's framing (behaviour doc, section 5.1), kept byte
//! compatible:
//!
//! ```text
//! client → server   <command>\n<arg>\n<arg>\n...\n      (an empty line ends it)
//! server → client   <code>: <text>\n                     (then the server closes)
//! ```
//!
//! Request framing, exactly as the C server reads it:
//!
//! - lines end in LF; the first line is the command, the others are its
//!   arguments;
//! - an empty line or EOF ends the request, and a final line that reaches
//!   EOF without its LF is discarded (`"status"` then EOF is a request with
//!   no command);
//! - a line longer than [`MAX_LINE_LEN`] bytes is split into lines of that
//!   length (so 256 bytes followed by LF is a 256-byte line followed by an
//!   empty line, which ends the request);
//! - CR is not stripped, and the bytes need not be UTF-8.
//!
//! Two departures, both for requests no real client sends: a NUL byte is an
//! ordinary byte (C truncates a line at it), and a request of more than
//! [`MAX_REQUEST_LINES`] lines is refused (C has no limit).
//!
//! Nothing here touches a socket: [`RequestParser`] is fed bytes, and
//! [`read_request`] drives it from any [`Read`], such as a byte slice.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

/// The longest request line; longer lines are split (flexnbd-c's limit).
pub const MAX_LINE_LEN: usize = 256;

/// The most lines, command included, that a request may have.
///
/// flexnbd-c has no limit; ours keeps a misbehaving client from using
/// unbounded memory. 4096 lines allows thousands of ACL entries.
pub const MAX_REQUEST_LINES: usize = 4096;

/// The longest reply line a client accepts, newline included (flexnbd-c's limit).
pub const MAX_REPLY_LEN: usize = 1024;

/// A request that cannot be framed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request has more than [`MAX_REQUEST_LINES`] lines.
    #[error("request has more than {MAX_REQUEST_LINES} lines")]
    TooManyLines,
    /// Reading the request failed (including a read timeout).
    #[error("cannot read request")]
    Io(#[from] io::Error),
}

/// One request: a command line and its argument lines, as raw bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    lines: Vec<Vec<u8>>,
}

impl Request {
    /// A request made of these lines; the first is the command.
    pub fn from_lines(lines: Vec<Vec<u8>>) -> Self {
        Request { lines }
    }

    /// The command, or `None` when the request had no line at all.
    pub fn command(&self) -> Option<&[u8]> {
        self.lines.first().map(Vec::as_slice)
    }

    /// The argument lines after the command.
    pub fn args(&self) -> &[Vec<u8>] {
        self.lines.get(1..).unwrap_or_default()
    }

    /// All lines, command first.
    pub fn lines(&self) -> &[Vec<u8>] {
        &self.lines
    }
}

/// An incremental request parser: feed it bytes until it is complete or EOF.
///
/// ```
/// use flexnbd::control::protocol::RequestParser;
///
/// let mut parser = RequestParser::new();
/// let used = parser.feed(b"acl\n127.0.0.1\n\nignored").unwrap();
/// assert_eq!(used, 15);
/// assert!(parser.is_complete());
/// let request = parser.finish();
/// assert_eq!(request.command(), Some(&b"acl"[..]));
/// assert_eq!(request.args(), [b"127.0.0.1".to_vec()]);
/// ```
#[derive(Debug, Default)]
pub struct RequestParser {
    lines: Vec<Vec<u8>>,
    line: Vec<u8>,
    complete: bool,
}

impl RequestParser {
    /// A parser that has seen no bytes.
    pub fn new() -> Self {
        RequestParser::default()
    }

    /// Consumes bytes up to the end of the request and returns how many it used.
    ///
    /// Bytes after the empty line that ends the request are not used; once
    /// complete, the parser uses nothing more.
    ///
    /// # Errors
    ///
    /// [`RequestError::TooManyLines`] when the request grows past
    /// [`MAX_REQUEST_LINES`] lines; the parser should then be dropped.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, RequestError> {
        if self.complete {
            return Ok(0);
        }
        for (i, &byte) in input.iter().enumerate() {
            if byte == b'\n' {
                if self.line.is_empty() {
                    self.complete = true;
                    return Ok(i + 1);
                }
                self.end_line()?;
            } else {
                self.line.push(byte);
                if self.line.len() == MAX_LINE_LEN {
                    self.end_line()?;
                }
            }
        }
        Ok(input.len())
    }

    fn end_line(&mut self) -> Result<(), RequestError> {
        if self.lines.len() == MAX_REQUEST_LINES {
            return Err(RequestError::TooManyLines);
        }
        self.lines.push(std::mem::take(&mut self.line));
        Ok(())
    }

    /// Whether the empty line that ends the request has been seen.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The request so far; a line still waiting for its LF is discarded, as at EOF.
    pub fn finish(self) -> Request {
        Request { lines: self.lines }
    }
}

/// Reads one request from `reader`: up to its empty line, or to EOF.
///
/// Reads in chunks, so bytes after the request may be consumed and are
/// lost; the control protocol has nothing after a request.
///
/// # Errors
///
/// Any read error (an interrupted read is retried), or
/// [`RequestError::TooManyLines`].
pub fn read_request<R: Read>(reader: &mut R) -> Result<Request, RequestError> {
    let mut parser = RequestParser::new();
    let mut buf = [0u8; 512];
    while !parser.is_complete() {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        parser.feed(&buf[..n])?;
    }
    Ok(parser.finish())
}

/// Why a request cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The command or an argument is empty; the server would read it as the end of the request.
    #[error("an empty argument cannot be sent: an empty line ends a control request")]
    Empty,
    /// The command or an argument contains a newline.
    #[error("'{}' cannot be sent: it contains a newline", .0.escape_debug())]
    Newline(String),
    /// The command or an argument is longer than [`MAX_LINE_LEN`] bytes; the server would split it.
    #[error("'{0}' cannot be sent: it is longer than {MAX_LINE_LEN} bytes")]
    TooLong(String),
}

/// Encodes a request: `command\n`, each argument and `\n`, then an empty line.
///
/// flexnbd-c's client sends an empty argument as is, which silently ends the
/// request there; ours refuses it, and anything the server would not read
/// back as the same single line.
///
/// # Errors
///
/// An [`EncodeError`] naming the first line that cannot be sent.
pub fn encode_request<S: AsRef<str>>(command: &str, args: &[S]) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    for line in std::iter::once(command).chain(args.iter().map(AsRef::as_ref)) {
        if line.is_empty() {
            return Err(EncodeError::Empty);
        }
        if line.contains('\n') {
            return Err(EncodeError::Newline(line.to_owned()));
        }
        // A line of exactly MAX_LINE_LEN bytes would be followed by an empty line.
        if line.len() >= MAX_LINE_LEN {
            return Err(EncodeError::TooLong(line.to_owned()));
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Ok(out)
}

/// A reply line: a numeric code and a text, shown as `N: text`.
///
/// Codes: 0 success, 1 a command error, 9 missing command, 10 unknown command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status: 0 for success; the CLI exits with it.
    pub code: u8,
    /// The text after `N: `, printed by the CLI.
    pub text: String,
}

impl Reply {
    /// A success reply, code 0.
    pub fn ok(text: impl Into<String>) -> Self {
        Reply {
            code: 0,
            text: text.into(),
        }
    }

    /// A command error, code 1.
    pub fn error(text: impl Into<String>) -> Self {
        Reply {
            code: 1,
            text: text.into(),
        }
    }

    /// `9: missing command`: the request had no command line.
    pub fn missing_command() -> Self {
        Reply {
            code: 9,
            text: "missing command".to_owned(),
        }
    }

    /// `10: unknown command`.
    pub fn unknown_command() -> Self {
        Reply {
            code: 10,
            text: "unknown command".to_owned(),
        }
    }

    /// The reply as sent on the wire: `N: text\n`, with any newline in the text turned into a space.
    pub fn encode(&self) -> Vec<u8> {
        format!("{}: {}\n", self.code, self.text.replace('\n', " ")).into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.text)
    }
}

/// A reply line that is not `N: text`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad reply line '{}'", .0.escape_debug())]
pub struct ParseReplyError(pub String);

impl FromStr for Reply {
    type Err = ParseReplyError;

    /// Parses a reply line without its newline.
    ///
    /// The code is the decimal number before the first `:`; the text is
    /// what follows the `:` and one space. flexnbd-c's client is looser
    /// (`atoi`, and it skips any one character after the `:`); the lines
    /// it accepts from a flexnbd server parse the same here.
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = || ParseReplyError(line.to_owned());
        let (code, text) = line.split_once(':').ok_or_else(bad)?;
        if code.is_empty() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let code = code.parse::<u8>().map_err(|_| bad())?;
        let text = text.strip_prefix(' ').unwrap_or(text);
        Ok(Reply {
            code,
            text: text.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<Vec<u8>> {
        read_request(&mut &input[..]).unwrap().lines().to_vec()
    }

    fn v(items: &[&[u8]]) -> Vec<Vec<u8>> {
        items.iter().map(|s| s.to_vec()).collect()
    }

    #[test]
    fn command_and_arguments() {
        assert_eq!(
            lines(b"acl\n127.0.0.1\n::1/64\n\n"),
            v(&[b"acl", b"127.0.0.1", b"::1/64"])
        );
        let r = read_request(&mut &b"status\n\n"[..]).unwrap();
        assert_eq!(r.command(), Some(&b"status"[..]));
        assert!(r.args().is_empty());
    }

    #[test]
    fn empty_input_and_empty_first_line_have_no_command() {
        let r = read_request(&mut &b""[..]).unwrap();
        assert_eq!(r.command(), None);
        assert!(r.args().is_empty());
        assert_eq!(lines(b"\n"), Vec::<Vec<u8>>::new());
        assert_eq!(lines(b"\nstatus\n\n"), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn eof_ends_the_request_and_drops_a_line_without_lf() {
        assert_eq!(lines(b"status\n"), v(&[b"status"]));
        assert_eq!(lines(b"status"), Vec::<Vec<u8>>::new());
        assert_eq!(lines(b"acl\n10.0.0.1"), v(&[b"acl"]));
    }

    #[test]
    fn bytes_after_the_empty_line_are_not_used() {
        let mut p = RequestParser::new();
        assert_eq!(p.feed(b"status\n\nmore\n\n").unwrap(), 8);
        assert!(p.is_complete());
        assert_eq!(p.feed(b"x\n").unwrap(), 0);
        assert_eq!(p.finish().lines(), v(&[b"status"]));
    }

    #[test]
    fn fed_byte_by_byte_gives_the_same_request() {
        let input = b"acl\n127.0.0.1\n\n";
        let mut p = RequestParser::new();
        for (i, b) in input.iter().enumerate() {
            assert!(!p.is_complete(), "complete early at byte {i}");
            assert_eq!(p.feed(std::slice::from_ref(b)).unwrap(), 1);
        }
        assert!(p.is_complete());
        assert_eq!(p.finish().lines(), v(&[b"acl", b"127.0.0.1"]));
    }

    #[test]
    fn no_cr_stripping() {
        assert_eq!(lines(b"status\r\n\r\n"), v(&[b"status\r", b"\r"]));
    }

    #[test]
    fn long_lines_are_split_every_256_bytes() {
        let mut input = vec![b'a'; 1000];
        input.extend_from_slice(b"\n\n");
        let got = lines(&input);
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].len(), 256);
        assert_eq!(got[1].len(), 256);
        assert_eq!(got[2].len(), 256);
        assert_eq!(got[3].len(), 1000 - 768);
    }

    #[test]
    fn a_line_of_exactly_256_bytes_then_lf_ends_the_request() {
        // C reads 256 bytes as a full line; the LF that follows is an empty line.
        let mut input = vec![b'b'; 256];
        input.extend_from_slice(b"\nnext\n\n");
        assert_eq!(lines(&input), vec![vec![b'b'; 256]]);
        // 255 bytes and LF is a normal line.
        let mut input = vec![b'b'; 255];
        input.extend_from_slice(b"\nnext\n\n");
        assert_eq!(lines(&input), vec![vec![b'b'; 255], b"next".to_vec()]);
    }

    #[test]
    fn a_full_256_byte_chunk_survives_eof_but_a_shorter_tail_does_not() {
        assert_eq!(lines(&[b'c'; 256]), vec![vec![b'c'; 256]]);
        assert_eq!(lines(&[b'c'; 300]), vec![vec![b'c'; 256]]);
        assert_eq!(lines(&[b'c'; 255]), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn binary_garbage_is_kept_as_bytes() {
        let input = b"\x00\xff\xfe\x01\n\x80abc\x00\n\n";
        assert_eq!(lines(input), v(&[b"\x00\xff\xfe\x01", b"\x80abc\x00"]));
    }

    #[test]
    fn too_many_lines_is_an_error() {
        let input = b"x\n".repeat(MAX_REQUEST_LINES);
        assert_eq!(lines(&input).len(), MAX_REQUEST_LINES);
        let input = b"x\n".repeat(MAX_REQUEST_LINES + 1);
        assert!(matches!(
            read_request(&mut &input[..]),
            Err(RequestError::TooManyLines)
        ));
    }

    #[test]
    fn read_errors_are_reported() {
        struct Failing;
        impl Read for Failing {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::TimedOut.into())
            }
        }
        assert!(matches!(
            read_request(&mut Failing),
            Err(RequestError::Io(e)) if e.kind() == io::ErrorKind::TimedOut
        ));
    }

    #[test]
    fn encodes_requests_like_flexnbd_c() {
        assert_eq!(
            encode_request::<&str>("status", &[]).unwrap(),
            b"status\n\n"
        );
        assert_eq!(
            encode_request("acl", &["127.0.0.1", "::1/128"]).unwrap(),
            b"acl\n127.0.0.1\n::1/128\n\n"
        );
        let encoded = encode_request("acl", &["10.0.0.0/8"]).unwrap();
        assert_eq!(lines(&encoded), v(&[b"acl", b"10.0.0.0/8"]), "round trip");
    }

    #[test]
    fn refuses_lines_the_server_would_read_differently() {
        assert!(matches!(
            encode_request("acl", &["1.2.3.4", ""]),
            Err(EncodeError::Empty)
        ));
        assert!(matches!(
            encode_request::<&str>("", &[]),
            Err(EncodeError::Empty)
        ));
        assert!(matches!(
            encode_request("acl", &["a\nb"]),
            Err(EncodeError::Newline(_))
        ));
        assert!(matches!(
            encode_request("acl", &["a".repeat(256)]),
            Err(EncodeError::TooLong(_))
        ));
        assert!(encode_request("acl", &["a".repeat(255)]).is_ok());
    }

    #[test]
    fn reply_display_and_encoding() {
        assert_eq!(Reply::ok("updated").to_string(), "0: updated");
        assert_eq!(Reply::ok("updated").encode(), b"0: updated\n");
        assert_eq!(Reply::error("bad spec: x").encode(), b"1: bad spec: x\n");
        assert_eq!(Reply::missing_command().encode(), b"9: missing command\n");
        assert_eq!(Reply::unknown_command().encode(), b"10: unknown command\n");
        assert_eq!(Reply::ok("a\nb").encode(), b"0: a b\n");
    }

    #[test]
    fn parses_reply_lines() {
        assert_eq!("0: updated".parse(), Ok(Reply::ok("updated")));
        assert_eq!("10: unknown command".parse(), Ok(Reply::unknown_command()));
        // The status line keeps its trailing space.
        let r: Reply = "0: pid=1 size=2 ".parse().unwrap();
        assert_eq!(r.text, "pid=1 size=2 ");
        // Only the first colon splits.
        let r: Reply = "1: bad spec: ::1/200".parse().unwrap();
        assert_eq!((r.code, r.text.as_str()), (1, "bad spec: ::1/200"));
        assert_eq!("0:".parse(), Ok(Reply::ok("")));
        assert_eq!("0:x".parse(), Ok(Reply::ok("x")));
        for bad in ["updated", "", ": x", "x: y", "256: big", "-1: neg", " 0: x"] {
            assert!(bad.parse::<Reply>().is_err(), "{bad:?} should not parse");
        }
    }
}
