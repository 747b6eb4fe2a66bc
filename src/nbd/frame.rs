//! Framing over a [`Stream`]: reading requests (a header, then a bounded
//! payload or a discard) and writing replies (one vectored write, or a
//! header followed by file data with `sendfile`).
//!
//! Validation of what the bytes mean belongs to `proto` and to the caller;
//! this module only moves them with as few syscalls and copies as it can.

use std::borrow::Borrow;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::proto::wire::Request;
use crate::sys::lock;

use super::Stream;
use super::tls::TlsStream;

/// The read buffer in front of the socket, so small pipelined requests cost few syscalls.
pub const READ_BUFFER: usize = 256 << 10;
/// The read buffer in front of a TLS session's plaintext.
pub const TLS_READ_BUFFER: usize = 64 << 10;

/// The first piece of a payload charged by [`RequestReader::read_payload_charged`].
pub const PIECE_MIN: usize = 64 << 10;
/// The largest piece charged at once.
pub const PIECE_MAX: usize = 1 << 20;

/// Reads NBD requests from a stream through a read buffer.
///
/// The buffer sits on the concrete socket type, not on `&Stream`: std reads
/// into a TCP or UNIX socket's uninitialised buffer directly, whereas a
/// wrapper's default `read_buf` would zero the whole 256 KiB first (making
/// every idle connection's buffer resident) and zero each payload before
/// reading it.
#[derive(Debug)]
pub struct RequestReader<'a> {
    inner: Buffered<'a>,
    /// The last payload bypassed the buffer: see [`RequestReader::read_header`].
    streaming: bool,
}

#[derive(Debug)]
enum Buffered<'a> {
    Tcp(BufReader<&'a TcpStream>),
    Unix(BufReader<&'a UnixStream>),
    Tls(BufReader<&'a TlsStream>),
}

/// Runs `$body` with `$r` bound to the `BufReader` of whichever socket it is.
macro_rules! with_reader {
    ($self:expr, $r:ident => $body:expr) => {
        match &mut $self.inner {
            Buffered::Tcp($r) => $body,
            Buffered::Unix($r) => $body,
            Buffered::Tls($r) => $body,
        }
    };
}

impl<'a> RequestReader<'a> {
    /// A reader over `stream` with a [`READ_BUFFER`]-byte buffer.
    pub fn new(stream: &'a Stream) -> Self {
        let inner = match stream {
            Stream::Tcp(s) => Buffered::Tcp(BufReader::with_capacity(READ_BUFFER, s)),
            Stream::Unix(s) => Buffered::Unix(BufReader::with_capacity(READ_BUFFER, s)),
            // Plaintext comes a record (16 KiB) at a time; this buffer is
            // zeroed once, so it is smaller than a plain socket's.
            Stream::Tls(s) => Buffered::Tls(BufReader::with_capacity(TLS_READ_BUFFER, s)),
        };
        RequestReader {
            inner,
            streaming: false,
        }
    }

    /// How many bytes are buffered (read from the socket, not yet taken).
    pub fn buffered(&self) -> usize {
        match &self.inner {
            Buffered::Tcp(r) => r.buffer().len(),
            Buffered::Unix(r) => r.buffer().len(),
            Buffered::Tls(r) => r.buffer().len(),
        }
    }

    /// Whether the socket has bytes to read now, without waiting; `None`
    /// when that cannot be told from the socket (TLS, whose library may
    /// hold decrypted bytes).
    pub fn readable_now(&self) -> Option<bool> {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        use std::os::fd::AsFd;
        let fd = match &self.inner {
            Buffered::Tcp(r) => r.get_ref().as_fd(),
            Buffered::Unix(r) => r.get_ref().as_fd(),
            Buffered::Tls(_) => return None,
        };
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // An error (a closed socket) counts as readable: the read reports it.
        Some(poll(&mut fds, Some(&now)).map_or(true, |n| n > 0))
    }

    /// Reads one request header. After a large payload read straight from
    /// the socket, with nothing buffered, only the header is read: filling
    /// the buffer would pull in the next payload, to be copied once more by
    /// [`RequestReader::read_payload`]. A client sending small requests
    /// instead pays one extra read before they are batched again.
    ///
    /// # Errors
    ///
    /// As `read(2)`; `UnexpectedEof` when the stream ends mid-header.
    pub fn read_header(&mut self) -> io::Result<[u8; Request::SIZE]> {
        let mut head = [0u8; Request::SIZE];
        let direct = std::mem::take(&mut self.streaming) && self.buffered() == 0;
        with_reader!(self, r => {
            if direct {
                let mut socket = *r.get_ref();
                socket.read_exact(&mut head)?;
            } else {
                r.read_exact(&mut head)?;
            }
        });
        Ok(head)
    }

    /// Reads a small payload through the buffer.
    ///
    /// # Errors
    ///
    /// As `read(2)`; `UnexpectedEof` when the stream ends first.
    pub fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        with_reader!(self, r => r.read_exact(buf))
    }

    /// Reads a large payload into `buf`: what is already buffered is
    /// copied, the rest comes straight from the socket (through the buffer
    /// every byte would be copied twice).
    ///
    /// # Errors
    ///
    /// As `read(2)`; `UnexpectedEof` when the stream ends first.
    pub fn read_payload(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.streaming = true;
        with_reader!(self, r => {
            let buffered = r.buffer().len().min(buf.len());
            buf[..buffered].copy_from_slice(&r.buffer()[..buffered]);
            r.consume(buffered);
            let mut socket = *r.get_ref();
            socket.read_exact(&mut buf[buffered..])
        })
    }

    /// Reads a large payload of `len` bytes into `buf` (its capacity made at
    /// least `len`; on success its length is `len`), charging `charge(n)`
    /// before each piece of `n` bytes is read: the memory a client makes
    /// the server hold grows with what it actually sent (a new buffer's
    /// pages are touched only as its pieces are read), and a `charge` that
    /// blocks stops the reading. Pieces start at [`PIECE_MIN`] and double
    /// up to [`PIECE_MAX`]. A reused buffer's initialised bytes are read
    /// over, not cleared again. The socket read timeout is `stall` while
    /// the payload is awaited, so a client that stops half way is dropped
    /// after `stall` instead of holding its share for ever.
    ///
    /// # Errors
    ///
    /// As `read(2)`; `UnexpectedEof` when the stream ends first; a client
    /// silent for `stall` mid-payload is an error saying so.
    pub fn read_payload_charged(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        stall: std::time::Duration,
        mut charge: impl FnMut(usize),
    ) -> io::Result<()> {
        if buf.capacity() < len {
            *buf = Vec::with_capacity(len);
        }
        self.streaming = true;
        let result = with_reader!(self, r => {
            let mut piece = PIECE_MIN;
            let mut filled = 0;
            let mut timeout_set = false;
            let mut read = || -> io::Result<()> {
                while filled < len {
                    let n = piece.min(len - filled);
                    charge(n);
                    if buf.len() < filled + n {
                        // Within the capacity: zeroes only this piece.
                        buf.resize(filled + n, 0);
                    }
                    let target = &mut buf[filled..filled + n];
                    let buffered = r.buffer().len().min(n);
                    target[..buffered].copy_from_slice(&r.buffer()[..buffered]);
                    r.consume(buffered);
                    if buffered < n {
                        if !timeout_set {
                            r.get_ref().set_read_timeout(Some(stall))?;
                            timeout_set = true;
                        }
                        let mut socket = *r.get_ref();
                        socket.read_exact(&mut target[buffered..])?;
                    }
                    filled += n;
                    piece = (piece * 2).min(PIECE_MAX);
                }
                Ok(())
            };
            let result = read();
            if timeout_set {
                r.get_ref().set_read_timeout(None)?;
            }
            result
        });
        buf.truncate(len);
        result.map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => io::Error::other(format!(
                "the client sent nothing for {stall:?} in the middle of a request's payload"
            )),
            _ => e,
        })
    }

    /// Reads and drops `len` bytes (the payload of a refused WRITE) without
    /// allocating for it, so the stream stays in step.
    ///
    /// # Errors
    ///
    /// As `read(2)`; `UnexpectedEof` when the stream ends first.
    pub fn discard(&mut self, len: u64) -> io::Result<()> {
        let copied = with_reader!(self, r => io::copy(&mut r.take(len), &mut io::sink())?);
        if copied < len {
            Err(io::ErrorKind::UnexpectedEof.into())
        } else {
            Ok(())
        }
    }
}

/// The write side of a connection, shared by the threads that reply: each
/// reply goes out whole under one lock, so replies never interleave. The
/// first failed write marks the writer broken and shuts the socket down
/// (waking the reading thread, so the connection ends); later replies are
/// dropped, as the client is gone.
#[derive(Debug)]
pub struct ReplyWriter<S> {
    stream: S,
    /// Held while a reply is being written (the stream itself needs no
    /// lock to be shut down, so a stuck write cannot block that).
    turn: Mutex<()>,
    broken: AtomicBool,
}

impl<S: Borrow<Stream>> ReplyWriter<S> {
    /// A writer over `stream`.
    pub fn new(stream: S) -> Self {
        ReplyWriter {
            stream,
            turn: Mutex::new(()),
            broken: AtomicBool::new(false),
        }
    }

    /// Whether a write failed (the connection is ending).
    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::SeqCst)
    }

    /// Sends a reply made of several slices in one vectored write.
    pub fn send(&self, parts: &mut [IoSlice<'_>]) {
        self.send_with(|mut stream| write_all_vectored(&mut stream, parts));
    }

    /// Sends `head` with `MSG_MORE`, then whatever `body` writes to the
    /// stream (file data with `sendfile`), under the same lock. A failure
    /// half way leaves the reply torn, so it breaks the connection (the
    /// spec's answer to an error mid-payload).
    pub fn send_then(&self, head: &[u8], body: impl FnOnce(&Stream) -> io::Result<()>) {
        self.send_with(|stream| send_more(stream, head).and_then(|()| body(stream)));
    }

    /// Marks the writer broken and shuts the socket down both ways: the
    /// connection ends (a reply that will never come must not be waited for).
    pub fn break_connection(&self) {
        self.broken.store(true, Ordering::SeqCst);
        let _ = self.stream.borrow().shutdown(Shutdown::Both);
    }

    fn send_with(&self, write: impl FnOnce(&Stream) -> io::Result<()>) {
        if self.is_broken() {
            return;
        }
        let _turn = lock(&self.turn);
        let stream: &Stream = self.stream.borrow();
        if let Err(e) = write(stream) {
            log::info!("cannot send reply: {e}");
            self.broken.store(true, Ordering::SeqCst);
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Writes every byte of `parts`, in as few `writev` calls as the socket takes.
///
/// # Errors
///
/// Any error but `Interrupted`; `WriteZero` when the peer takes nothing.
pub fn write_all_vectored(w: &mut impl Write, mut parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    // Drop leading empty slices, so an empty payload costs nothing and a
    // list of empty slices is no write at all (not a `WriteZero`).
    IoSlice::advance_slices(&mut parts, 0);
    while !parts.is_empty() {
        match w.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Sends `buf` whole with `MSG_MORE`: more of the same message (a payload
/// after its header) follows at once, so they can leave in one segment.
/// Under TLS, a plain write (the records are the segments).
///
/// # Errors
///
/// Any error from `send` but `EINTR`, or `WriteZero`.
pub fn send_more(stream: &Stream, mut buf: &[u8]) -> io::Result<()> {
    use rustix::net::SendFlags;
    if stream.is_tls() {
        let mut stream = stream;
        return stream.write_all(buf);
    }
    while !buf.is_empty() {
        match rustix::net::send(stream, buf, SendFlags::MORE | SendFlags::NOSIGNAL) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether an I/O error means the peer went away (or stopped answering)
/// rather than a fault worth reporting.
pub fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair() -> (Stream, Stream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Stream::from(a), Stream::from(b))
    }

    #[test]
    fn headers_payloads_and_discards_stay_in_step() {
        let (client, server) = pair();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[1u8; Request::SIZE]);
        bytes.extend_from_slice(&[2u8; 10]); // small payload
        bytes.extend_from_slice(&[3u8; Request::SIZE]);
        bytes.extend_from_slice(&[4u8; 100_000]); // large payload
        bytes.extend_from_slice(&[5u8; Request::SIZE]);
        bytes.extend_from_slice(&[6u8; 5000]); // discarded
        bytes.extend_from_slice(&[7u8; Request::SIZE]);
        let writer = std::thread::spawn(move || {
            write_all_vectored(&mut &client, &mut [IoSlice::new(&bytes)]).unwrap();
        });
        let mut reader = RequestReader::new(&server);
        assert_eq!(reader.read_header().unwrap(), [1u8; Request::SIZE]);
        let mut small = [0u8; 10];
        reader.read_exact(&mut small).unwrap();
        assert_eq!(small, [2u8; 10]);
        assert_eq!(reader.read_header().unwrap(), [3u8; Request::SIZE]);
        let mut large = vec![0u8; 100_000];
        reader.read_payload(&mut large).unwrap();
        assert!(large.iter().all(|&b| b == 4));
        assert_eq!(reader.read_header().unwrap(), [5u8; Request::SIZE]);
        reader.discard(5000).unwrap();
        assert_eq!(reader.read_header().unwrap(), [7u8; Request::SIZE]);
        writer.join().unwrap();
        let e = reader.read_header().unwrap_err();
        assert!(is_disconnect(&e), "{e}");
        assert!(reader.discard(1).is_err());
    }

    #[test]
    fn vectored_writes_send_every_slice_and_skip_empty_ones() {
        let (a, b) = pair();
        let big = vec![9u8; 1 << 20];
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            (&b).read_to_end(&mut got).unwrap();
            got
        });
        write_all_vectored(
            &mut &a,
            &mut [IoSlice::new(b""), IoSlice::new(b"ab"), IoSlice::new(&big)],
        )
        .unwrap();
        send_more(&a, b"cd").unwrap();
        drop(a);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 4 + (1 << 20));
        assert_eq!(&got[..2], b"ab");
        assert_eq!(&got[got.len() - 2..], b"cd");
    }

    #[test]
    fn a_failed_reply_breaks_the_writer_and_shuts_the_socket() {
        let (a, b) = pair();
        let writer = ReplyWriter::new(&a);
        writer.send(&mut [IoSlice::new(b"one")]);
        writer.send_then(b"two", |mut s| s.write_all(b"three"));
        let mut got = [0u8; 11];
        (&b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"onetwothree");
        assert!(!writer.is_broken());
        drop(b);
        // The peer is gone: the first send that notices breaks the writer.
        for _ in 0..3 {
            writer.send(&mut [IoSlice::new(&[0u8; 65536])]);
        }
        assert!(writer.is_broken());
        let mut buf = [0u8; 1];
        assert_eq!((&a).read(&mut buf).unwrap(), 0, "shut down for reading too");
    }

    /// A writer that takes at most 3 bytes per call, from the first non-empty slice.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &b[..]);
            self.write(first)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn vectored_writes_survive_short_writes() {
        let mut w = Trickle(Vec::new());
        let mut bufs = [
            IoSlice::new(b"header"),
            IoSlice::new(b""),
            IoSlice::new(b"payload"),
        ];
        write_all_vectored(&mut w, &mut bufs).unwrap();
        assert_eq!(w.0, b"headerpayload");
        let mut bufs = [IoSlice::new(b""), IoSlice::new(b"")];
        write_all_vectored(&mut w, &mut bufs).unwrap();
    }

    #[test]
    fn charged_payloads_are_charged_in_growing_pieces_and_stalls_end() {
        let (client, server) = pair();
        let len = 300_000;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            (&client).write_all(&[1u8; Request::SIZE]).unwrap();
            (&client).write_all(&sent).unwrap();
            // Half a payload, then silence.
            (&client).write_all(&[2u8; Request::SIZE]).unwrap();
            (&client).write_all(&[3u8; 1000]).unwrap();
            client
        });
        let mut reader = RequestReader::new(&server);
        reader.read_header().unwrap();
        let mut buf = Vec::new();
        let mut charges = Vec::new();
        reader
            .read_payload_charged(&mut buf, len, std::time::Duration::from_secs(5), |n| {
                charges.push(n);
            })
            .unwrap();
        assert_eq!(buf, data);
        assert_eq!(charges, vec![65536, 131072, 103392]);
        let _client = writer.join().unwrap();
        reader.read_header().unwrap();
        let e = reader
            .read_payload_charged(&mut buf, 5000, std::time::Duration::from_millis(50), |_| {})
            .unwrap_err();
        assert!(e.to_string().contains("sent nothing"), "{e}");
    }
}
