//! A blocking NBD client over TCP or a UNIX socket, used by `read`,
//! `write`, `mirror` and `proxy`.
//!
//! [`NbdClient::connect`] opens the connection to a [`Target`] the way the
//! C flexnbd's mirror does (on TCP an optional bind with source port 0 and
//! `TCP_NODELAY`; a connect timeout and a hello timeout on both) and
//! negotiates whichever handshake the server speaks, for the export named
//! in [`ConnectOptions::export_name`] (`""`, the default export, unless
//! asked otherwise):
//!
//! - old-style (the C flexnbd, `nbdkit -o`): the 152-byte hello gives the
//!   size and flags; there are no export names, so a name is ignored;
//! - fixed newstyle: `NBD_OPT_GO` for the export asking for
//!   `NBD_INFO_BLOCK_SIZE`, falling back to `NBD_OPT_EXPORT_NAME` when the
//!   server answers `NBD_REP_ERR_UNSUP`;
//! - plain (not fixed) newstyle: `NBD_OPT_EXPORT_NAME` directly;
//! - with [`ConnectOptions::tls`], fixed newstyle only: `NBD_OPT_STARTTLS`
//!   right after the greeting, then the above over TLS (never a fallback
//!   to plaintext).
//!
//! Structured replies are never negotiated, so every reply is a simple one.
//!
//! Two layers of API sit on the connection:
//!
//! - high level: [`NbdClient::read_at`], [`NbdClient::write_at`],
//!   [`NbdClient::flush`] and [`NbdClient::disconnect`] check the range
//!   against the export before sending anything, split it into requests of
//!   at most [`NbdClient::max_request`] bytes and wait for each reply in
//!   turn, checking its magic, handle and error;
//! - low level, for a pipelined sender: [`NbdClient::send_request`] writes
//!   a header and its payload in one vectored write, and
//!   [`NbdClient::read_reply`] / [`NbdClient::read_payload`] (or the same on
//!   a [`ReplyReader`] in another thread) read what comes back.
//!
//! Every read and write on the socket is bounded by a timeout, so no call
//! blocks for ever. Errors are [`ClientError`]s whose [`ErrorKind`] tells
//! the outcomes of the C mirror apart.

use std::io::{self, IoSlice, Read};
use std::net::Shutdown;
use std::time::Duration;

use log::{debug, info};

use crate::nbd::{Stream, send_more, write_all_vectored};
use crate::proto::hash::HashParams;
use crate::proto::types::{Cmd, CmdFlags, Errno, TransmissionFlags};
use crate::proto::wire::{Request, SimpleReply};

mod connect;
mod error;
mod handshake;
mod negotiate;

pub use crate::nbd::tls::ClientTls;
pub use connect::ConnectOptions;
pub use error::{ClientError, ErrorKind, describe_errno};

pub(crate) use handshake::handshake;
pub(crate) use negotiate::{Export, max_request};

/// Where the server listens: the connection layer's address of either kind.
pub use crate::nbd::Peer as Target;

/// Which handshake the server spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// The old-style handshake (the C flexnbd).
    Oldstyle,
    /// The newstyle handshake, fixed or not.
    Newstyle,
}

/// A connection to an NBD server in the transmission phase.
#[derive(Debug)]
pub struct NbdClient {
    stream: Stream,
    peer: Target,
    style: Style,
    export: Export,
    max_request: u32,
    timeout: Option<Duration>,
    next_handle: u64,
    hash: Option<HashParams>,
}

impl NbdClient {
    /// Connects to `target` and negotiates the export named in `opts`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Connect`] if the socket cannot be bound or connected in
    /// time, [`ErrorKind::NoHello`] if the server sends nothing within the
    /// hello timeout, [`ErrorKind::Rejected`] if the server closes during
    /// the handshake, sends a bad hello or option reply, or refuses the
    /// export, and [`ErrorKind::Timeout`] or [`ErrorKind::Io`] if the
    /// handshake stalls or the socket fails.
    pub fn connect(target: impl Into<Target>, opts: &ConnectOptions) -> Result<Self, ClientError> {
        let target = target.into();
        let connect::Established {
            stream,
            style,
            export,
            hash,
            timeout,
        } = connect::establish(&target, opts)?;
        let max_request = negotiate::max_request(export.max_payload);
        info!(
            "connected to {target} ({style:?}{}): size {}, flags {:?}, max request {max_request}",
            if stream.is_tls() { ", TLS" } else { "" },
            export.size,
            export.flags
        );
        Ok(NbdClient {
            stream,
            peer: target,
            style,
            export,
            max_request,
            timeout,
            next_handle: 1,
            hash,
        })
    }

    /// The server's address.
    pub fn peer(&self) -> &Target {
        &self.peer
    }

    /// The export size in bytes.
    pub fn size(&self) -> u64 {
        self.export.size
    }

    /// The export's transmission flags.
    pub fn flags(&self) -> TransmissionFlags {
        self.export.flags
    }

    /// The handshake the server spoke.
    pub fn style(&self) -> Style {
        self.style
    }

    /// The flexnbd hash extension's parameters, if it was negotiated.
    pub fn hash_params(&self) -> Option<HashParams> {
        self.hash
    }

    /// Whether WRITE payloads from a file should go to this server with
    /// `sendfile` ([`Stream::sendfile_pays`]): not under TLS, not to a
    /// server on this machine.
    pub fn sendfile_pays(&self) -> bool {
        self.stream.sendfile_pays()
    }

    /// The largest payload sent or asked for in one request: the server's
    /// maximum if it gave one, at most 32 MiB.
    pub fn max_request(&self) -> u32 {
        self.max_request
    }

    /// Checks that `len` bytes at `offset` lie inside the export.
    ///
    /// # Errors
    ///
    /// [`ClientError::OutOfRange`] if they do not, or if `offset + len` overflows.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<(), ClientError> {
        check_range(offset, len, self.export.size)
    }

    /// Checks that `len` bytes at `offset` may be written: in range, and the export is writable.
    ///
    /// # Errors
    ///
    /// [`ClientError::ReadOnly`] or [`ClientError::OutOfRange`].
    pub fn check_write(&self, offset: u64, len: u64) -> Result<(), ClientError> {
        if self.export.flags.contains(TransmissionFlags::READ_ONLY) {
            return Err(ClientError::ReadOnly);
        }
        self.check_range(offset, len)
    }

    /// Reads `buf.len()` bytes at `offset`, in requests of at most [`max_request`](Self::max_request) bytes.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidRequest`] (before anything is sent) if the range
    /// is outside the export; otherwise any error of a request or its reply.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), ClientError> {
        self.check_range(offset, buf.len() as u64)?;
        let mut at = offset;
        for chunk in buf.chunks_mut(self.max_request as usize) {
            let req = self.request(Cmd::READ, CmdFlags(0), at, chunk.len())?;
            self.send_request(&req, &[])?;
            self.await_reply(&req)?;
            self.read_payload(chunk)?;
            at += u64::from(req.len);
        }
        Ok(())
    }

    /// Writes `data` at `offset`, in requests of at most [`max_request`](Self::max_request) bytes,
    /// each with `NBD_CMD_FLAG_FUA` if `fua`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidRequest`] (before anything is sent) if the range
    /// is outside the export, the export is read-only, or `fua` is asked of
    /// a server that does not advertise it; otherwise any error of a
    /// request or its reply.
    pub fn write_at(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<(), ClientError> {
        self.check_write(offset, data.len() as u64)?;
        let flags = if fua {
            if !self.export.flags.contains(TransmissionFlags::SEND_FUA) {
                return Err(ClientError::Unsupported("FUA"));
            }
            CmdFlags::FUA
        } else {
            CmdFlags(0)
        };
        let mut at = offset;
        for chunk in data.chunks(self.max_request as usize) {
            let req = self.request(Cmd::WRITE, flags, at, chunk.len())?;
            self.send_request(&req, chunk)?;
            self.await_reply(&req)?;
            at += u64::from(req.len);
        }
        Ok(())
    }

    /// Asks the server to make every completed write durable.
    ///
    /// # Errors
    ///
    /// [`ClientError::Unsupported`] if the server does not advertise
    /// `SEND_FLUSH`; otherwise any error of the request or its reply.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if !self.export.flags.contains(TransmissionFlags::SEND_FLUSH) {
            return Err(ClientError::Unsupported("FLUSH"));
        }
        let req = self.request(Cmd::FLUSH, CmdFlags(0), 0, 0)?;
        self.send_request(&req, &[])?;
        self.await_reply(&req)
    }

    /// Sends `NBD_CMD_DISC` and closes the connection without waiting for a
    /// reply (there is none), as the C mirror does.
    ///
    /// # Errors
    ///
    /// Any error sending the request.
    pub fn disconnect(mut self) -> Result<(), ClientError> {
        let req = self.request(Cmd::DISC, CmdFlags(0), 0, 0)?;
        self.send_request(&req, &[])?;
        // The server closes its end; a failure to shut ours down changes nothing.
        let _ = self.stream.shutdown(Shutdown::Write);
        Ok(())
    }

    /// A fresh handle for a request: a counter per client.
    pub fn next_handle(&mut self) -> u64 {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        handle
    }

    /// Sends one request: the 28-byte header and `payload` in one vectored write.
    ///
    /// `payload` must be exactly `req.len` bytes for `WRITE` and empty for
    /// every other command. Nothing is checked against the export: that is
    /// the caller's job (see [`check_range`](Self::check_range)).
    ///
    /// # Errors
    ///
    /// [`ClientError::PayloadMismatch`] before sending if the payload does
    /// not fit the header; [`ErrorKind::Timeout`] or [`ErrorKind::Io`] if
    /// the write fails.
    pub fn send_request(&mut self, req: &Request, payload: &[u8]) -> Result<(), ClientError> {
        let expected = if req.cmd == Cmd::WRITE {
            req.len as usize
        } else {
            0
        };
        if payload.len() != expected {
            return Err(ClientError::PayloadMismatch {
                cmd: req.cmd,
                len: req.len,
                payload: payload.len(),
            });
        }
        debug!(
            "sending {} handle {:#x} offset {} len {}",
            req.cmd, req.handle, req.offset, req.len
        );
        let mut header = [0u8; Request::SIZE];
        req.encode(&mut header);
        let mut bufs = [IoSlice::new(&header), IoSlice::new(payload)];
        write_all_vectored(&mut &self.stream, &mut bufs)
            .map_err(|e| ClientError::from_io(e, "sending a request", self.timeout))
    }

    /// Sends a `WRITE` whose `req.len` payload bytes `payload` writes to the
    /// socket itself, e.g. with `sendfile` straight from a file, so that
    /// they never pass through user space. The header goes first with
    /// `MSG_MORE`, to leave in one segment with the start of the payload.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] or [`ErrorKind::Io`] if a write fails, or
    /// what `payload` returns. Part of the request may have been sent: the
    /// connection is then out of step and must be given up.
    pub fn send_write_with(
        &mut self,
        req: &Request,
        payload: impl FnOnce(&Stream) -> io::Result<()>,
    ) -> Result<(), ClientError> {
        debug!(
            "sending {} handle {:#x} offset {} len {} (payload by the caller)",
            req.cmd, req.handle, req.offset, req.len
        );
        let mut header = [0u8; Request::SIZE];
        req.encode(&mut header);
        send_more(&self.stream, &header)
            .and_then(|()| payload(&self.stream))
            .map_err(|e| ClientError::from_io(e, "sending a request", self.timeout))
    }

    /// Reads the next reply header (checking its magic, not its handle or error).
    ///
    /// For a successful `READ`, [`read_payload`](Self::read_payload) must follow.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Protocol`] for a bad magic (including a structured
    /// reply); [`ErrorKind::Timeout`] or [`ErrorKind::Io`] if the read fails.
    pub fn read_reply(&mut self) -> Result<SimpleReply, ClientError> {
        read_reply(&self.stream, self.timeout)
    }

    /// Reads the data following a successful `READ` reply into `buf`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] or [`ErrorKind::Io`] if the read fails.
    pub fn read_payload(&mut self, buf: &mut [u8]) -> Result<(), ClientError> {
        read_payload(&self.stream, buf, self.timeout)
    }

    /// A reader of replies on a clone of the socket, for a separate reply thread.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] if the socket cannot be cloned.
    pub fn reply_reader(&self) -> Result<ReplyReader, ClientError> {
        let stream = self.stream.try_clone().map_err(|source| ClientError::Io {
            what: "cloning the socket",
            source,
        })?;
        Ok(ReplyReader {
            stream,
            timeout: self.timeout,
            partial: [0; SimpleReply::SIZE],
            filled: 0,
        })
    }

    /// Shuts the socket down in both directions, waking any thread blocked
    /// on it (a [`ReplyReader`], say) with an error.
    ///
    /// # Errors
    ///
    /// The error of `shutdown(2)`.
    pub fn shutdown(&self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Both)
    }

    fn request(
        &mut self,
        cmd: Cmd,
        flags: CmdFlags,
        offset: u64,
        len: usize,
    ) -> Result<Request, ClientError> {
        // Chunks are at most max_request (32 MiB), so this only fails on a bug.
        let len = u32::try_from(len).map_err(|_| ClientError::OutOfRange {
            offset,
            len: len as u64,
            size: self.export.size,
        })?;
        Ok(Request {
            flags,
            cmd,
            handle: self.next_handle(),
            offset,
            len,
        })
    }

    fn await_reply(&mut self, req: &Request) -> Result<(), ClientError> {
        let reply = self.read_reply()?;
        check_reply(req, &reply)
    }
}

/// Reads replies on a clone of a client's socket, so that one thread can
/// send requests while another reads replies.
#[derive(Debug)]
pub struct ReplyReader {
    stream: Stream,
    timeout: Option<Duration>,
    /// A reply header read in part when a read timed out; the next call goes on from here.
    partial: [u8; SimpleReply::SIZE],
    filled: usize,
}

impl ReplyReader {
    /// Reads the next reply header; see [`NbdClient::read_reply`].
    ///
    /// # Errors
    ///
    /// As [`NbdClient::read_reply`].
    ///
    /// A timeout never loses bytes: a header read in part is kept, and the
    /// next call completes it, so a caller may wait again after a timeout.
    pub fn read_reply(&mut self) -> Result<SimpleReply, ClientError> {
        while self.filled < SimpleReply::SIZE {
            match (&self.stream).read(&mut self.partial[self.filled..]) {
                Ok(0) => {
                    return Err(ClientError::Closed {
                        what: "reading a reply",
                    });
                }
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ClientError::from_io(e, "reading a reply", self.timeout)),
            }
        }
        self.filled = 0;
        let reply = SimpleReply::decode(&self.partial).map_err(ClientError::BadReply)?;
        debug!("reply handle {:#x} error {}", reply.handle, reply.error);
        Ok(reply)
    }

    /// Sets how long one read may wait for data (the connection's reply
    /// timeout otherwise); `None` waits for ever.
    ///
    /// # Errors
    ///
    /// The socket option cannot be set.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)?;
        self.timeout = timeout;
        Ok(())
    }

    /// Shuts the socket down in both directions, which also wakes a thread
    /// blocked writing to it through the [`NbdClient`].
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Reads the data following a successful `READ` reply; see [`NbdClient::read_payload`].
    ///
    /// # Errors
    ///
    /// As [`NbdClient::read_payload`].
    pub fn read_payload(&mut self, buf: &mut [u8]) -> Result<(), ClientError> {
        read_payload(&self.stream, buf, self.timeout)
    }
}

/// Checks that `len` bytes at `offset` lie inside an export of `size` bytes.
fn check_range(offset: u64, len: u64, size: u64) -> Result<(), ClientError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(ClientError::OutOfRange { offset, len, size }),
    }
}

/// Checks that `reply` answers `req` and reports no error.
pub(crate) fn check_reply(req: &Request, reply: &SimpleReply) -> Result<(), ClientError> {
    if reply.handle != req.handle {
        return Err(ClientError::UnexpectedHandle {
            expected: req.handle,
            got: reply.handle,
        });
    }
    if reply.error != Errno::OK {
        return Err(ClientError::ErrorReply {
            cmd: req.cmd,
            offset: req.offset,
            len: req.len,
            errno: reply.error,
        });
    }
    Ok(())
}

fn read_reply(mut stream: &Stream, timeout: Option<Duration>) -> Result<SimpleReply, ClientError> {
    let mut buf = [0u8; SimpleReply::SIZE];
    stream
        .read_exact(&mut buf)
        .map_err(|e| ClientError::from_io(e, "reading a reply", timeout))?;
    let reply = SimpleReply::decode(&buf).map_err(ClientError::BadReply)?;
    debug!("reply handle {:#x} error {}", reply.handle, reply.error);
    Ok(reply)
}

fn read_payload(
    mut stream: &Stream,
    buf: &mut [u8],
    timeout: Option<Duration>,
) -> Result<(), ClientError> {
    stream
        .read_exact(buf)
        .map_err(|e| ClientError::from_io(e, "reading data", timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks_overflow_and_the_end() {
        assert!(check_range(0, 0, 0).is_ok());
        assert!(check_range(0, 4096, 4096).is_ok());
        assert!(check_range(4096, 0, 4096).is_ok());
        let e = check_range(4000, 97, 4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "request of 97 bytes at offset 4000 is out of range given export size 4096"
        );
        assert_eq!(e.kind(), ErrorKind::InvalidRequest);
        assert!(check_range(u64::MAX, 1, u64::MAX).is_err());
        assert!(check_range(4097, 0, 4096).is_err());
    }

    #[test]
    fn replies_are_checked_for_handle_and_error() {
        let req = Request {
            flags: CmdFlags(0),
            cmd: Cmd::READ,
            handle: 7,
            offset: 512,
            len: 512,
        };
        let ok = SimpleReply {
            error: Errno::OK,
            handle: 7,
        };
        assert!(check_reply(&req, &ok).is_ok());
        let e = check_reply(&req, &SimpleReply { handle: 8, ..ok }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Protocol);
        let e = check_reply(
            &req,
            &SimpleReply {
                error: Errno::EINVAL,
                ..ok
            },
        )
        .unwrap_err();
        assert_eq!(e.errno(), Some(Errno::EINVAL));
    }
}
