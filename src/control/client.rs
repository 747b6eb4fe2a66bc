//! The client side of the control socket, used by `status`, `acl`, `mirror`, `mirror-speed` and `break`.
//!
//! One connection carries one request and one reply, as flexnbd-c's client
//! does (behaviour doc, section 1.4): send the command, its arguments and an
//! empty line; read one line of at most [`MAX_REPLY_LEN`] bytes; ignore
//! anything after it. Unlike flexnbd-c, failures are errors rather than
//! aborts, and the reply can be waited for with a timeout.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{EncodeError, MAX_REPLY_LEN, ParseReplyError, Reply, encode_request};

/// How long `status` and `acl` wait for a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a control request got no usable reply.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The command or an argument cannot be framed as one request line.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Nothing accepts connections at the socket path.
    #[error("cannot connect to control socket {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error from `connect`.
        #[source]
        source: io::Error,
    },
    /// The request could not be written, and no reply came.
    #[error("cannot send request to control socket {}", path.display())]
    Send {
        /// The socket path.
        path: PathBuf,
        /// The error from `write`.
        #[source]
        source: io::Error,
    },
    /// Reading the reply failed.
    #[error("cannot read reply from control socket {}", path.display())]
    Receive {
        /// The socket path.
        path: PathBuf,
        /// The error from `read`.
        #[source]
        source: io::Error,
    },
    /// No complete reply line arrived within the timeout.
    #[error("no reply from control socket {} within {}", path.display(), humantime::format_duration(*timeout))]
    TimedOut {
        /// The socket path.
        path: PathBuf,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The server closed the connection before a complete reply line.
    #[error("control socket {} closed the connection without a complete reply", path.display())]
    Closed {
        /// The socket path.
        path: PathBuf,
    },
    /// The reply has no newline within [`MAX_REPLY_LEN`] bytes.
    #[error("reply from control socket {} is longer than {MAX_REPLY_LEN} bytes", path.display())]
    TooLong {
        /// The socket path.
        path: PathBuf,
    },
    /// The reply line is not `N: text`.
    #[error("bad reply from control socket {}", path.display())]
    BadReply {
        /// The socket path.
        path: PathBuf,
        /// What was wrong with it.
        #[source]
        source: ParseReplyError,
    },
}

/// Sends `command` with `args` to the control socket at `path` and returns its reply.
///
/// `timeout` bounds each write and the wait for the reply; `None` waits for
/// ever (a `mirror` may take about 20 s to answer). Connecting is not
/// bounded: a server busy with another client keeps this one in its
/// backlog until it is served.
///
/// # Errors
///
/// A [`ControlError`] naming the socket path. A reply with a non-zero code
/// is not an error: it is returned as is.
pub fn request<S: AsRef<str>>(
    path: &Path,
    command: &str,
    args: &[S],
    timeout: Option<Duration>,
) -> Result<Reply, ControlError> {
    let bytes = encode_request(command, args)?;
    let mut stream = UnixStream::connect(path).map_err(|source| ControlError::Connect {
        path: path.to_owned(),
        source,
    })?;
    // A zero Duration is refused by set_read_timeout; treat it as the shortest wait.
    let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
    let configured = stream
        .set_read_timeout(timeout)
        .and_then(|()| stream.set_write_timeout(timeout));
    if let Err(source) = configured {
        return Err(ControlError::Send {
            path: path.to_owned(),
            source,
        });
    }
    let sent = stream.write_all(&bytes);
    let reply = read_reply(&mut stream, path, timeout);
    match (sent, reply) {
        (_, Ok(reply)) => Ok(reply),
        // A server that replied early and closed may make the write fail; without a
        // reply, the write error is the better explanation.
        (Err(source), Err(_)) => Err(ControlError::Send {
            path: path.to_owned(),
            source,
        }),
        (Ok(()), Err(e)) => Err(e),
    }
}

/// Reads one reply line of at most [`MAX_REPLY_LEN`] bytes, newline included, and parses it.
fn read_reply<R: Read>(
    reader: &mut R,
    path: &Path,
    timeout: Option<Duration>,
) -> Result<Reply, ControlError> {
    let mut buf = [0u8; MAX_REPLY_LEN];
    let mut len = 0;
    let line_len = loop {
        if let Some(pos) = buf[..len].iter().position(|&b| b == b'\n') {
            break pos;
        }
        if len == MAX_REPLY_LEN {
            return Err(ControlError::TooLong {
                path: path.to_owned(),
            });
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => {
                return Err(ControlError::Closed {
                    path: path.to_owned(),
                });
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ControlError::TimedOut {
                    path: path.to_owned(),
                    timeout: timeout.unwrap_or_default(),
                });
            }
            Err(source) => {
                return Err(ControlError::Receive {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_len]);
    line.parse().map_err(|source| ControlError::BadReply {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::thread;

    use super::*;

    fn reply_of(bytes: &[u8]) -> Result<Reply, ControlError> {
        read_reply(&mut &bytes[..], Path::new("/s"), None)
    }

    #[test]
    fn reads_one_line_and_ignores_the_rest() {
        assert_eq!(reply_of(b"0: updated\n").unwrap(), Reply::ok("updated"));
        // flexnbd-c's junk after an unknown-command reply.
        assert_eq!(
            reply_of(b"10: unknown command\n\0ab").unwrap(),
            Reply::unknown_command()
        );
        assert_eq!(
            reply_of(b"0: pid=1 \n0: second\n").unwrap(),
            Reply::ok("pid=1 ")
        );
    }

    #[test]
    fn eof_before_the_newline_is_an_error() {
        assert!(matches!(reply_of(b""), Err(ControlError::Closed { .. })));
        assert!(matches!(
            reply_of(b"0: updated"),
            Err(ControlError::Closed { .. })
        ));
    }

    #[test]
    fn a_line_without_colon_is_an_error() {
        let err = reply_of(b"garbage\n").unwrap_err();
        assert!(matches!(err, ControlError::BadReply { .. }));
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(
            chain,
            "bad reply from control socket /s: bad reply line 'garbage'"
        );
    }

    #[test]
    fn replies_are_limited_to_1024_bytes() {
        let mut long = b"0: ".to_vec();
        long.resize(1023, b'x');
        long.push(b'\n');
        assert_eq!(reply_of(&long).unwrap().text.len(), 1020);
        let mut too_long = b"0: ".to_vec();
        too_long.resize(1024, b'x');
        too_long.push(b'\n');
        assert!(matches!(
            reply_of(&too_long),
            Err(ControlError::TooLong { .. })
        ));
    }

    #[test]
    fn connect_error_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nothing.sock");
        let err = request::<&str>(&path, "status", &[], Some(Duration::from_secs(5))).unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        let want = format!("cannot connect to control socket {}: ", path.display());
        assert!(chain.starts_with(&want), "{chain}");
        assert!(chain.contains("os error"), "{chain}");
    }

    /// A server that reads one request and answers with `reply` verbatim.
    fn canned(reply: &'static [u8]) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while !got.ends_with(b"\n\n") {
                if conn.read(&mut byte).unwrap() == 0 {
                    break;
                }
                got.push(byte[0]);
            }
            conn.write_all(reply).unwrap();
            got
        });
        (dir, path, handle)
    }

    #[test]
    fn sends_the_request_and_parses_the_reply() {
        let (_dir, path, server) = canned(b"1: bad spec: nope\n");
        let reply = request(
            &path,
            "acl",
            &["10.0.0.1", "nope"],
            Some(Duration::from_secs(5)),
        )
        .unwrap();
        assert_eq!(reply, Reply::error("bad spec: nope"));
        assert_eq!(server.join().unwrap(), b"acl\n10.0.0.1\nnope\n\n");
    }

    #[test]
    fn a_server_that_closes_without_newline_is_an_error() {
        let (_dir, path, server) = canned(b"0: half");
        let err = request::<&str>(&path, "status", &[], None).unwrap_err();
        assert!(matches!(err, ControlError::Closed { .. }), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn a_silent_server_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let _listener = UnixListener::bind(&path).unwrap();
        // The connection waits in the backlog; nobody ever replies.
        let err =
            request::<&str>(&path, "status", &[], Some(Duration::from_millis(100))).unwrap_err();
        assert!(matches!(err, ControlError::TimedOut { .. }), "{err}");
        assert!(err.to_string().ends_with("within 100ms"), "{err}");
    }

    #[test]
    fn unsendable_arguments_are_refused_before_connecting() {
        let err = request(Path::new("/nonexistent/x.sock"), "acl", &[""], None).unwrap_err();
        assert!(matches!(err, ControlError::Encode(EncodeError::Empty)));
    }
}
