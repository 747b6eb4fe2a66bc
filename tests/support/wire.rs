//! NBD byte by byte, for tests that must see or send exact bytes: a raw
//! client ([`Client`]) and the pieces of a fake server ([`send_hello`],
//! [`read_request`], [`reply_bytes`], [`closed_within`]).
//!
//! Everything is built on `flexnbd::proto`'s wire structs, so a test checks
//! the server (or the proxy, or a mirror source) and not its own encoding.
//! Every socket read and write is bounded (by [`IO_TIMEOUT`] unless a test
//! asks for longer), and every failure panics with what was expected.

// Lengths and flags are cut to the wire's widths on purpose: the payloads of
// tests are small, and the old-style flags word carries 16 bits of flags.
#![allow(clippy::cast_possible_truncation)]

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use flexnbd::proto::types::{ClientFlags, Cmd, CmdFlags, Errno, HandshakeFlags, Opt, Rep};
use flexnbd::proto::wire::{
    ChunkHeader, ExportNameReply, NewstyleHello, OldstyleHello, OptionHeader, OptionReplyHeader,
    Request, SimpleReply,
};

/// How long one socket read or write of these helpers may block.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts one connection on `listener` (blocking or not) within `within`,
/// waiting on the listener rather than polling it; the stream returned is
/// blocking. Panics naming `what` if nobody connects in time.
#[track_caller]
pub(crate) fn accept_within(listener: &TcpListener, within: Duration, what: &str) -> TcpStream {
    try_accept_within(listener, within)
        .unwrap_or_else(|| panic!("{what}: nobody connected within {within:?}"))
}

/// [`accept_within`], or `None` if nobody connects within `within`.
#[track_caller]
pub(crate) fn try_accept_within(listener: &TcpListener, within: Duration) -> Option<TcpStream> {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let timeout = Timespec::try_from(left).expect("a timeout in range");
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => panic!("poll on a listener failed: {e}"),
        }
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("a blocking stream");
                return Some(s);
            }
            // Gone before we took it (a client that gave up): wait again.
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// A TCP connection to `addr` with [`IO_TIMEOUT`] on connect, reads and writes.
#[track_caller]
pub(crate) fn tcp(addr: SocketAddr) -> TcpStream {
    tcp_within(addr, IO_TIMEOUT)
}

/// [`tcp`] with `timeout` in place of [`IO_TIMEOUT`].
#[track_caller]
pub(crate) fn tcp_within(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, timeout).expect("TCP connect");
    s.set_read_timeout(Some(timeout)).expect("read timeout");
    s.set_write_timeout(Some(timeout)).expect("write timeout");
    s
}

/// The 28 bytes of a request header, flags and all.
pub(crate) fn header(
    cmd: Cmd,
    flags: CmdFlags,
    handle: u64,
    offset: u64,
    len: u32,
) -> [u8; Request::SIZE] {
    let mut head = [0u8; Request::SIZE];
    Request {
        flags,
        cmd,
        handle,
        offset,
        len,
    }
    .encode(&mut head);
    head
}

/// The 16 bytes of an option header (`len` may be a lie).
pub(crate) fn option_header(opt: Opt, len: u32) -> [u8; OptionHeader::SIZE] {
    let mut head = [0u8; OptionHeader::SIZE];
    OptionHeader { opt, len }.encode(&mut head);
    head
}

/// How a [`Client`] gets from the greeting to the transmission phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// Old-style: read the 152-byte hello, nothing to send.
    Oldstyle,
    /// Fixed newstyle, then `NBD_OPT_GO` for the default export.
    Go,
    /// Fixed newstyle with `NO_ZEROES`, then `NBD_OPT_EXPORT_NAME ""` (what
    /// flexnbd-c's fakes and a mirror source speak).
    ExportName,
}

/// The handshake a server process speaks: what `serve`, `listen` and `proxy`
/// are started with, and what a client then speaks to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Style {
    /// Fixed newstyle, our default.
    Newstyle,
    /// `--oldstyle`, flexnbd-c's handshake.
    Oldstyle,
}

impl Style {
    /// Both, for tests that run once in each.
    pub(crate) const BOTH: [Style; 2] = [Style::Newstyle, Style::Oldstyle];

    /// The extra arguments of `serve`, `listen` or `proxy` for this style.
    pub(crate) fn args(self) -> &'static [&'static str] {
        match self {
            Style::Newstyle => &[],
            Style::Oldstyle => &["--oldstyle"],
        }
    }

    /// What a modern client (qemu, libnbd) speaks to this style: `GO`, or
    /// old-style.
    pub(crate) fn handshake(self) -> Handshake {
        match self {
            Style::Newstyle => Handshake::Go,
            Style::Oldstyle => Handshake::Oldstyle,
        }
    }

    /// What flexnbd-c's clients and a mirror source speak to this style:
    /// `EXPORT_NAME` with `NO_ZEROES`, or old-style.
    pub(crate) fn export_name_handshake(self) -> Handshake {
        match self {
            Style::Newstyle => Handshake::ExportName,
            Style::Oldstyle => Handshake::Oldstyle,
        }
    }
}

/// A byte-level NBD client: a handshake, then simple requests and replies.
///
/// `s` is open for tests that send something no well-behaved client would.
pub(crate) struct Client {
    pub(crate) s: TcpStream,
    /// The export size the handshake announced (0 before one, or when `GO`
    /// sent no `NBD_INFO_EXPORT`).
    pub(crate) size: u64,
    /// The transmission flags the handshake announced (not kept from `GO`).
    pub(crate) flags: u16,
}

impl Client {
    /// Connects (see [`tcp`]) and completes `handshake`.
    #[track_caller]
    pub(crate) fn connect(addr: SocketAddr, handshake: Handshake) -> Client {
        Client::connect_within(addr, handshake, IO_TIMEOUT)
    }

    /// [`Client::connect`] with `timeout` on every read and write.
    #[track_caller]
    pub(crate) fn connect_within(
        addr: SocketAddr,
        handshake: Handshake,
        timeout: Duration,
    ) -> Client {
        let mut c = Client::new(tcp_within(addr, timeout));
        c.handshake(handshake);
        c
    }

    /// A client on a connection that has not started its handshake.
    pub(crate) fn new(s: TcpStream) -> Client {
        Client {
            s,
            size: 0,
            flags: 0,
        }
    }

    /// Completes `handshake`, keeping the size and flags it announces.
    #[track_caller]
    pub(crate) fn handshake(&mut self, handshake: Handshake) {
        match handshake {
            Handshake::Oldstyle => self.oldstyle_hello(),
            Handshake::Go => {
                self.newstyle_hello();
                self.go(false);
            }
            Handshake::ExportName => {
                self.newstyle_hello();
                self.export_name();
            }
        }
    }

    /// Reads the old-style hello.
    #[track_caller]
    pub(crate) fn oldstyle_hello(&mut self) {
        let mut hello = [0u8; OldstyleHello::SIZE];
        self.s.read_exact(&mut hello).expect("old-style hello");
        let hello = OldstyleHello::decode(&hello).expect("old-style hello");
        self.size = hello.size;
        self.flags = hello.flags as u16;
    }

    /// Reads the newstyle greeting, checks it is fixed newstyle, and answers
    /// with the client flags `FIXED_NEWSTYLE | NO_ZEROES`.
    #[track_caller]
    pub(crate) fn newstyle_hello(&mut self) {
        let mut hello = [0u8; NewstyleHello::SIZE];
        self.s.read_exact(&mut hello).expect("newstyle hello");
        let hello = NewstyleHello::decode(&hello).expect("newstyle hello");
        assert!(hello.flags.contains(HandshakeFlags::FIXED_NEWSTYLE));
        let flags = ClientFlags::FIXED_NEWSTYLE.0 | ClientFlags::NO_ZEROES.0;
        self.s
            .write_all(&flags.to_be_bytes())
            .expect("client flags");
    }

    /// Sends option `opt` with `data`.
    #[track_caller]
    pub(crate) fn send_option(&mut self, opt: Opt, data: &[u8]) {
        let head = option_header(opt, data.len() as u32);
        self.s.write_all(&head).expect("option header");
        self.s.write_all(data).expect("option data");
    }

    /// Reads one option reply: its type and data.
    #[track_caller]
    pub(crate) fn option_reply(&mut self) -> (Rep, Vec<u8>) {
        let mut head = [0u8; OptionReplyHeader::SIZE];
        self.s.read_exact(&mut head).expect("option reply");
        let head = OptionReplyHeader::decode(&head).expect("option reply");
        (head.rep, self.payload(head.len, "option reply data"))
    }

    /// After [`Client::newstyle_hello`]: optionally structured replies and
    /// the `base:allocation` context, then `NBD_OPT_GO` for the default
    /// export (empty name, no information requests), keeping the size of
    /// its `NBD_INFO_EXPORT`.
    #[track_caller]
    pub(crate) fn go(&mut self, structured: bool) {
        if structured {
            self.send_option(Opt::STRUCTURED_REPLY, &[]);
            assert_eq!(self.option_reply().0, Rep::ACK);
            let context = flexnbd::proto::consts::BASE_ALLOCATION;
            let mut query = 0u32.to_be_bytes().to_vec();
            query.extend_from_slice(&1u32.to_be_bytes());
            query.extend_from_slice(&(context.len() as u32).to_be_bytes());
            query.extend_from_slice(context.as_bytes());
            self.send_option(Opt::SET_META_CONTEXT, &query);
            assert_eq!(self.option_reply().0, Rep::META_CONTEXT);
            assert_eq!(self.option_reply().0, Rep::ACK);
        }
        self.send_option(Opt::GO, &[0u8; 6]);
        loop {
            let (rep, data) = self.option_reply();
            if rep == Rep::ACK {
                return;
            }
            assert_eq!(rep, Rep::INFO, "unexpected reply to GO");
            // NBD_INFO_EXPORT: type 0, size, flags.
            if data.len() == 12 && data[..2] == [0, 0] {
                self.size = u64::from_be_bytes(data[2..10].try_into().expect("8 bytes"));
            }
        }
    }

    /// After [`Client::newstyle_hello`]: `NBD_OPT_EXPORT_NAME ""` and its
    /// reply (no padding: `NO_ZEROES` was sent).
    #[track_caller]
    pub(crate) fn export_name(&mut self) {
        self.send_option(Opt::EXPORT_NAME, &[]);
        let mut reply = [0u8; ExportNameReply::SIZE];
        self.s.read_exact(&mut reply).expect("export name reply");
        let reply = ExportNameReply::decode(&reply);
        self.size = reply.size;
        self.flags = reply.flags.0;
    }

    /// Sends a request header with `flags`, then `payload` (which need not be
    /// `len` bytes: tests send lies too).
    #[track_caller]
    pub(crate) fn send(
        &mut self,
        cmd: Cmd,
        flags: CmdFlags,
        handle: u64,
        offset: u64,
        len: u32,
        payload: &[u8],
    ) {
        self.s
            .write_all(&header(cmd, flags, handle, offset, len))
            .expect("send request");
        self.s.write_all(payload).expect("send payload");
    }

    /// Sends a request header without flags or payload.
    #[track_caller]
    pub(crate) fn request(&mut self, cmd: Cmd, handle: u64, offset: u64, len: u32) {
        self.send(cmd, CmdFlags(0), handle, offset, len, &[]);
    }

    /// Sends a WRITE of `data` without waiting for its reply.
    #[track_caller]
    pub(crate) fn write(&mut self, handle: u64, offset: u64, data: &[u8]) {
        let len = data.len() as u32;
        self.send(Cmd::WRITE, CmdFlags(0), handle, offset, len, data);
    }

    /// A WRITE and its reply: the reply's error (its handle is checked).
    #[track_caller]
    pub(crate) fn write_reply(&mut self, handle: u64, offset: u64, data: &[u8]) -> Errno {
        self.write(handle, offset, data);
        self.reply_to(handle)
    }

    /// Reads the simple reply to `handle` (its handle is checked): its error.
    #[track_caller]
    pub(crate) fn reply_to(&mut self, handle: u64) -> Errno {
        let r = self.reply();
        assert_eq!(r.handle, handle, "reply to the wrong handle");
        r.error
    }

    /// Reads one simple reply.
    #[track_caller]
    pub(crate) fn reply(&mut self) -> SimpleReply {
        let mut head = [0u8; SimpleReply::SIZE];
        self.s
            .read_exact(&mut head)
            .unwrap_or_else(|e| panic!("no reply: {e}"));
        SimpleReply::decode(&head).expect("reply")
    }

    /// The next reply, or `None` once the server has closed the connection.
    #[track_caller]
    pub(crate) fn try_reply(&mut self) -> Option<SimpleReply> {
        let mut head = [0u8; SimpleReply::SIZE];
        // One deadline for the whole wait, however often a signal cuts it short.
        let timeout = self.s.read_timeout().expect("read timeout");
        let deadline = timeout.map(|t| Instant::now() + t);
        let first = loop {
            match self.s.read(&mut head) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => break 0,
                // A signal to this process (a child's SIGCHLD, caught by
                // whoever waits for children with a timeout) is no answer:
                // wait for what is left of the time.
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    if let Some(deadline) = deadline {
                        let left = deadline.saturating_duration_since(Instant::now());
                        assert!(!left.is_zero(), "no reply and no close within {timeout:?}");
                        self.s.set_read_timeout(Some(left)).expect("read timeout");
                    }
                }
                Err(e) => panic!("no reply and no close in time: {e}"),
            }
        };
        self.s.set_read_timeout(timeout).expect("read timeout");
        if first == 0 {
            return None;
        }
        self.s.read_exact(&mut head[first..]).expect("reply");
        Some(SimpleReply::decode(&head).expect("reply"))
    }

    /// Reads one simple reply and asserts its handle and error.
    #[track_caller]
    pub(crate) fn expect_reply(&mut self, handle: u64, error: Errno) {
        let r = self.reply();
        assert_eq!((r.error, r.handle), (error, handle), "reply");
    }

    /// A READ that must succeed (simple reply): its data.
    #[track_caller]
    pub(crate) fn read(&mut self, handle: u64, offset: u64, len: u32) -> Vec<u8> {
        self.request(Cmd::READ, handle, offset, len);
        self.expect_reply(handle, Errno::OK);
        self.payload(len, "read payload")
    }

    /// Reads one structured reply chunk: its header and data.
    #[track_caller]
    pub(crate) fn chunk(&mut self) -> (ChunkHeader, Vec<u8>) {
        let mut head = [0u8; ChunkHeader::SIZE];
        self.s.read_exact(&mut head).expect("chunk header");
        let h = ChunkHeader::decode(&head).expect("chunk header");
        let data = self.payload(h.len, "chunk data");
        (h, data)
    }

    /// Reads the `len` bytes that follow a header (`what` names them if they
    /// do not come).
    #[track_caller]
    fn payload(&mut self, len: u32, what: &str) -> Vec<u8> {
        let mut data = vec![0u8; len as usize];
        self.s.read_exact(&mut data).expect(what);
        data
    }

    /// Reads until the server closes (or a read fails); returns what arrived.
    pub(crate) fn rest(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.s.read_to_end(&mut v);
        v
    }

    /// Asserts the server closes the connection (bounded) without sending more.
    #[track_caller]
    pub(crate) fn assert_closed(&mut self) {
        let mut rest = Vec::new();
        match self.s.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{} unexpected bytes", rest.len()),
            Err(e) if e.kind() == ErrorKind::ConnectionReset && rest.is_empty() => {}
            Err(e) => panic!("connection not closed in time: {e}"),
        }
    }

    /// Sends `NBD_CMD_DISC` and lets the connection go.
    #[track_caller]
    pub(crate) fn disconnect(mut self) {
        self.request(Cmd::DISC, 0xd15c, 0, 0);
    }
}

// ---------------------------------------------------------------------------
// The server side, for fakes.

/// An old-style hello: `NBDMAGIC`, the magic, `size`, `flags`, zeroes.
#[track_caller]
pub(crate) fn send_hello(s: &mut TcpStream, size: u64, flags: u32) {
    let mut hello = [0u8; OldstyleHello::SIZE];
    OldstyleHello { size, flags }.encode(&mut hello);
    s.write_all(&hello).expect("send hello");
}

/// One request as the peer sent it: the raw header, decoded, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) head: [u8; Request::SIZE],
    pub(crate) req: Request,
    pub(crate) payload: Vec<u8>,
}

/// Reads one request (with a WRITE's payload).
#[track_caller]
pub(crate) fn read_request(s: &mut TcpStream) -> Seen {
    let mut head = [0u8; Request::SIZE];
    s.read_exact(&mut head).expect("no request from the peer");
    let req = Request::decode(&head).expect("bad request magic from the peer");
    let mut payload = Vec::new();
    if req.cmd == Cmd::WRITE {
        payload.resize(req.len as usize, 0);
        s.read_exact(&mut payload).expect("short write payload");
    }
    Seen { head, req, payload }
}

/// The 16 bytes of a simple reply.
pub(crate) fn reply_bytes(error: Errno, handle: u64) -> [u8; SimpleReply::SIZE] {
    let mut buf = [0u8; SimpleReply::SIZE];
    SimpleReply { error, handle }.encode(&mut buf);
    buf
}

/// Reads until the peer closes; true if it did within `within` (a reset
/// counts as closed), false if it was still open then.
#[track_caller]
pub(crate) fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            // A signal (a child's SIGCHLD): look again until the deadline.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) => panic!("read failed while waiting for a close: {e}"),
        }
    }
}
