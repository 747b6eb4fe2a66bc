//! The client's error type and the kinds a caller branches on.
//!
//! The kinds follow the outcomes the C flexnbd's mirror tells apart when it
//! connects (`FAIL_CONNECT`, `FAIL_NO_HELLO`, `FAIL_REJECTED`) and while it
//! transfers (bad reply, error reply, timeout), so the mirror can decide
//! whether to retry without parsing messages.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

use super::Target;
use crate::proto::ProtoError;
use crate::proto::types::{Cmd, Errno, Opt, Rep};

/// What went wrong, coarsely: the value callers match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The connection could not be made: bind failed, refused, unreachable or timed out.
    Connect,
    /// Connected, but the server sent nothing within the hello timeout.
    NoHello,
    /// The handshake failed: the server closed early, sent a bad hello or
    /// option reply, or refused the export.
    Rejected,
    /// The server broke the protocol during transmission (bad reply magic, wrong handle).
    Protocol,
    /// The server answered a request with an error; see [`ClientError::errno`].
    Reply,
    /// The server did not answer (or accept data) within the reply timeout.
    Timeout,
    /// The connection failed or was closed by the server during transmission.
    Io,
    /// The request was refused before anything was sent: out of range, too
    /// long, or using a feature the server does not advertise.
    InvalidRequest,
}

/// An error from [`NbdClient`](super::NbdClient).
///
/// Messages are lower case and never repeat their source, so an `anyhow`
/// chain printed with `{:#}` reads as one line.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Binding the local socket to `--bind` failed.
    #[error("cannot bind to {addr}")]
    Bind {
        /// The local address asked for.
        addr: IpAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The connect failed.
    #[error("cannot connect to {addr}")]
    Connect {
        /// The server's address.
        addr: Target,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The connect did not complete in time.
    #[error("timed out connecting to {addr} after {}", humantime::format_duration(*timeout))]
    ConnectTimeout {
        /// The server's address.
        addr: Target,
        /// The connect timeout.
        timeout: Duration,
    },
    /// Connected, but no byte of the hello arrived in time (the C mirror's `FAIL_NO_HELLO`).
    #[error("no NBD hello from {addr} within {}", humantime::format_duration(*timeout))]
    NoHello {
        /// The server's address.
        addr: Target,
        /// The hello timeout.
        timeout: Duration,
    },
    /// The server closed the connection before the handshake finished.
    #[error("server closed the connection during the handshake")]
    HandshakeClosed,
    /// The hello had a bad password or magic.
    #[error("bad NBD hello")]
    BadHello(#[source] ProtoError),
    /// The server answered an option with an error.
    #[error("server refused {opt} with {rep}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Refused {
        /// The option refused.
        opt: Opt,
        /// The error reply type.
        rep: Rep,
        /// The server's message, if any (lossily decoded, at most a few KiB).
        message: String,
    },
    /// TLS was asked for, and the server speaks a handshake without it.
    #[error("{0}")]
    NoTls(String),
    /// The TLS credentials cannot be used.
    #[error("unusable TLS credentials")]
    TlsCredentials(#[source] crate::nbd::tls::TlsError),
    /// The TLS handshake failed (the server's certificate refused, or ours).
    #[error("TLS handshake with {addr} failed")]
    Tls {
        /// The server's address.
        addr: Target,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The server sent a malformed or unexpected option reply.
    #[error("bad handshake reply")]
    BadHandshake(#[source] ProtoError),
    /// A reply header was malformed (bad magic, e.g. a structured reply).
    #[error("bad reply from server")]
    BadReply(#[source] ProtoError),
    /// A reply carried a handle that was not the one awaited.
    #[error("reply for handle {got:#x} while waiting for {expected:#x}")]
    UnexpectedHandle {
        /// The handle of the request awaited.
        expected: u64,
        /// The handle in the reply.
        got: u64,
    },
    /// The server answered a request with an error.
    #[error("{} failed: {}", describe_request(*cmd, *offset, *len), describe_errno(*errno))]
    ErrorReply {
        /// The command that failed.
        cmd: Cmd,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u32,
        /// The error the server sent.
        errno: Errno,
    },
    /// Nothing arrived (or could be sent) within the timeout.
    #[error("timed out after {} {what}", humantime::format_duration(*timeout))]
    Timeout {
        /// What was being done, e.g. "reading a reply".
        what: &'static str,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The server closed the connection.
    #[error("server closed the connection while {what}")]
    Closed {
        /// What was being done, e.g. "reading a reply".
        what: &'static str,
    },
    /// Another socket error.
    #[error("{what} failed")]
    Io {
        /// What was being done, e.g. "sending a request".
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The range does not lie inside the export.
    #[error("request of {len} bytes at offset {offset} is out of range given export size {size}")]
    OutOfRange {
        /// The first byte.
        offset: u64,
        /// The length.
        len: u64,
        /// The export size.
        size: u64,
    },
    /// A request's payload does not match its header.
    #[error("request payload of {payload} bytes does not match {cmd} length {len}")]
    PayloadMismatch {
        /// The command.
        cmd: Cmd,
        /// The length in the header.
        len: u32,
        /// The payload length given.
        payload: usize,
    },
    /// The export is read-only, so nothing may be written.
    #[error("the export is read-only")]
    ReadOnly,
    /// The server does not advertise what the request needs.
    #[error("server does not support {0}")]
    Unsupported(&'static str),
    /// The export name asked for is longer than the protocol's 4096 bytes.
    #[error("export name of {0} bytes is longer than 4096")]
    ExportNameTooLong(usize),
}

impl ClientError {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Bind { .. }
            | ClientError::Connect { .. }
            | ClientError::ConnectTimeout { .. } => ErrorKind::Connect,
            ClientError::NoHello { .. } => ErrorKind::NoHello,
            ClientError::HandshakeClosed
            | ClientError::BadHello(_)
            | ClientError::Refused { .. }
            | ClientError::NoTls(_)
            | ClientError::Tls { .. }
            | ClientError::BadHandshake(_) => ErrorKind::Rejected,
            ClientError::BadReply(_) | ClientError::UnexpectedHandle { .. } => ErrorKind::Protocol,
            ClientError::ErrorReply { .. } => ErrorKind::Reply,
            ClientError::Timeout { .. } => ErrorKind::Timeout,
            ClientError::Closed { .. } | ClientError::Io { .. } => ErrorKind::Io,
            ClientError::OutOfRange { .. }
            | ClientError::PayloadMismatch { .. }
            | ClientError::ReadOnly
            | ClientError::Unsupported(_)
            | ClientError::ExportNameTooLong(_)
            | ClientError::TlsCredentials(_) => ErrorKind::InvalidRequest,
        }
    }

    /// The error the server replied with, for [`ErrorKind::Reply`].
    pub fn errno(&self) -> Option<Errno> {
        match self {
            ClientError::ErrorReply { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// Maps an I/O error on the connection to a client error.
    ///
    /// A read or write timeout (`WouldBlock` or `TimedOut` from a socket
    /// with `SO_RCVTIMEO`/`SO_SNDTIMEO`) becomes [`ClientError::Timeout`],
    /// an early end of stream [`ClientError::Closed`].
    pub(crate) fn from_io(err: io::Error, what: &'static str, timeout: Option<Duration>) -> Self {
        match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
                what,
                timeout: timeout.unwrap_or_default(),
            },
            // A peer that went away. Mapping EPIPE here also keeps it out of the
            // error chain, where `main` would take it for a closed stdout and exit 0.
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => ClientError::Closed { what },
            _ => ClientError::Io { what, source: err },
        }
    }
}

/// `READ of 512 bytes at offset 0`, or just `FLUSH` for a request without a range.
fn describe_request(cmd: Cmd, offset: u64, len: u32) -> String {
    if len == 0 && offset == 0 {
        cmd.to_string()
    } else {
        format!("{cmd} of {len} bytes at offset {offset}")
    }
}

/// Names an NBD error value with its meaning, e.g. `ENOSPC (no space left on device)`.
pub fn describe_errno(errno: Errno) -> String {
    let meaning = match errno {
        Errno::EPERM => "operation not permitted",
        Errno::EIO => "input/output error",
        Errno::ENOMEM => "cannot allocate memory",
        Errno::EINVAL => "invalid argument",
        Errno::ENOSPC => "no space left on device",
        Errno::EBADMSG => "bad message",
        Errno::EOVERFLOW => "value too large",
        Errno::ENOTSUP => "operation not supported",
        Errno::ESHUTDOWN => "server shutting down",
        _ => return format!("error {}", errno.0),
    };
    format!("{errno} ({meaning})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_is_displayed_by_name() {
        assert_eq!(
            describe_errno(Errno::ENOSPC),
            "ENOSPC (no space left on device)"
        );
        assert_eq!(describe_errno(Errno(1234)), "error 1234");
        let err = ClientError::ErrorReply {
            cmd: Cmd::WRITE,
            offset: 512,
            len: 4096,
            errno: Errno::EIO,
        };
        assert_eq!(
            err.to_string(),
            "WRITE of 4096 bytes at offset 512 failed: EIO (input/output error)"
        );
        assert_eq!(err.kind(), ErrorKind::Reply);
        let flush = ClientError::ErrorReply {
            cmd: Cmd::FLUSH,
            offset: 0,
            len: 0,
            errno: Errno::EINVAL,
        };
        assert_eq!(flush.to_string(), "FLUSH failed: EINVAL (invalid argument)");
        assert_eq!(err.errno(), Some(Errno::EIO));
    }

    #[test]
    fn io_errors_map_to_kinds() {
        let t = Some(Duration::from_secs(3));
        let e = ClientError::from_io(io::ErrorKind::WouldBlock.into(), "reading a reply", t);
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert_eq!(e.to_string(), "timed out after 3s reading a reply");
        let e = ClientError::from_io(io::ErrorKind::UnexpectedEof.into(), "reading a reply", t);
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(
            e.to_string(),
            "server closed the connection while reading a reply"
        );
    }

    #[test]
    fn refused_shows_the_message_only_when_there_is_one() {
        let e = ClientError::Refused {
            opt: Opt::GO,
            rep: Rep::ERR_UNKNOWN,
            message: String::new(),
        };
        assert_eq!(e.to_string(), "server refused GO with ERR_UNKNOWN");
        let e = ClientError::Refused {
            opt: Opt::GO,
            rep: Rep::ERR_UNKNOWN,
            message: "no such export".into(),
        };
        assert_eq!(
            e.to_string(),
            "server refused GO with ERR_UNKNOWN: no such export"
        );
        assert_eq!(e.kind(), ErrorKind::Rejected);
    }
}
