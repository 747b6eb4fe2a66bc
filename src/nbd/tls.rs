//! TLS under NBD (`NBD_OPT_STARTTLS`), with rustls: the credentials, the
//! upgrade of a plain [`Stream`] on either side, and the encrypted stream.
//!
//! Credentials live in a directory in the layout GnuTLS-based tools use
//! (nbdkit's and qemu's `--tls-certificates` / `tls-creds-x509,dir=`), so
//! one directory serves all of them:
//!
//! | file | used by |
//! |---|---|
//! | `ca-cert.pem` | a client, to check the server; a server with `--tls-verify-peer`, to check clients |
//! | `server-cert.pem`, `server-key.pem` | a server (the certificate file may hold the chain) |
//! | `client-cert.pem`, `client-key.pem` | a client, presented when both exist |
//!
//! The files are read again for every connection that starts TLS, so an
//! operator rotates certificates by replacing them: connections already
//! open keep their session, the next one gets the new files. A directory
//! that cannot be used at that moment fails that connection only, with the
//! reason in the log.
//!
//! # The encrypted stream
//!
//! A connection is read by one thread while others write replies, and a
//! read may block for as long as the client is idle. So [`TlsStream`]
//! never blocks on the socket while holding the TLS state: a reader takes
//! the state only to hand it the bytes it read and take the plaintext out;
//! a writer encrypts under the state's lock, then sends the records under
//! its own turn lock (which keeps records in order). Locks are taken in the
//! order turn, then state.

use std::fmt;
use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use thiserror::Error;

pub use crate::proto::handshake::TlsMode;

mod record;

use super::Stream;
use crate::sys::lock;
use record::Record;

/// The CA certificate, in the credentials directory.
pub const CA_CERT: &str = "ca-cert.pem";
/// The server's certificate (and chain).
pub const SERVER_CERT: &str = "server-cert.pem";
/// The server's private key.
pub const SERVER_KEY: &str = "server-key.pem";
/// The client's certificate (and chain), presented when it exists.
pub const CLIENT_CERT: &str = "client-cert.pem";
/// The client's private key.
pub const CLIENT_KEY: &str = "client-key.pem";

/// Plaintext encrypted and sent at once: a bound on the ciphertext a
/// writer holds. Two records: each `send` leaves while its ciphertext is
/// still in this CPU's cache and the peer starts decrypting a large reply
/// while the rest is encrypted. Sending 256 KiB at once cost a TLS
/// sequential read 15-20% (nbdcopy: median 762 against 913 MiB/s over six
/// interleaved runs, and the client spent more CPU on the same records and
/// syscalls); one record per send was between the two. A write of up to a
/// record more is sent whole: a 32 KiB reply and its header leave in one
/// send, not a second one for the header's bytes.
const WRITE_CHUNK: usize = 32 << 10;
/// The plaintext of a full TLS record.
const RECORD: usize = 16 << 10;
/// Ciphertext read from the socket at once (four full records).
const READ_CHUNK: usize = 64 << 10;

/// Why credentials cannot be used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file cannot be read.
    // The cause is in the message, not a `source` too: anyhow's `{:#}`
    // would print it twice.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// A file holds no usable PEM item of the kind needed.
    #[error("{}: {what}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the configuration (a key that does not match the certificate, …).
    #[error("{context}: {error}")]
    Config {
        /// What was being set up.
        context: String,
        /// Why.
        error: rustls::Error,
    },
}

/// A server's TLS credentials: a directory read at every upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    dir: PathBuf,
    verify_peer: bool,
}

impl ServerTls {
    /// Credentials in `dir`; with `verify_peer`, clients must present a
    /// certificate signed by the directory's CA. The directory is read once
    /// here, so a server does not start with credentials it cannot use.
    ///
    /// # Errors
    ///
    /// A file is missing or unreadable, or the key does not fit.
    pub fn new(dir: &Path, verify_peer: bool) -> Result<Self, TlsError> {
        let tls = ServerTls {
            dir: dir.to_path_buf(),
            verify_peer,
        };
        tls.config()?;
        Ok(tls)
    }

    /// Reads the directory and builds a rustls server configuration.
    ///
    /// # Errors
    ///
    /// As [`ServerTls::new`].
    pub fn config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let certs = load_certs(&self.dir.join(SERVER_CERT))?;
        let key = load_key(&self.dir.join(SERVER_KEY))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("choosing TLS versions", e))?;
        let builder = if self.verify_peer {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots(&self.dir)?, provider())
                    .build()
                    .map_err(|e| unusable_ca(&self.dir, "clients", e))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| config_error(&format!("{}", self.dir.join(SERVER_KEY).display()), e))?;
        // Ours, not the client's (GnuTLS clients put AES-256-GCM first).
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }
}

/// A client's TLS credentials: the CA that signs the server's certificate,
/// and the client's own certificate if the directory has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    dir: PathBuf,
    server_name: Option<String>,
}

impl ClientTls {
    /// Credentials in `dir`. `server_name` is the name the server's
    /// certificate must carry; `None` uses the address connected to.
    pub fn new(dir: &Path, server_name: Option<String>) -> Self {
        ClientTls {
            dir: dir.to_path_buf(),
            server_name,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name the server's certificate must carry, if set.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// Reads the directory and builds a rustls client configuration.
    ///
    /// # Errors
    ///
    /// The CA is missing or unreadable, or the client's key does not fit its certificate.
    pub fn config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(&self.dir)?, provider())
            .build()
            .map_err(|e| unusable_ca(&self.dir, "servers", e))?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_error("choosing TLS versions", e))?
            .with_webpki_verifier(verifier);
        let cert = self.dir.join(CLIENT_CERT);
        let key = self.dir.join(CLIENT_KEY);
        let config = if cert.exists() || key.exists() {
            builder
                .with_client_auth_cert(load_certs(&cert)?, load_key(&key)?)
                .map_err(|e| config_error(&format!("{}", key.display()), e))?
        } else {
            builder.with_no_client_auth()
        };
        Ok(Arc::new(config))
    }
}

fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // AES-128-GCM first (docs/tls.md, "Speed"): a client decrypting
    // everything we send is the limit of a TLS read, and AES-256 costs it
    // 14 rounds per block against 10. The sort is stable: the rest keep
    // rustls's order.
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 1,
        _ => 2,
    });
    Arc::new(provider)
}

fn config_error(context: &str, error: rustls::Error) -> TlsError {
    TlsError::Config {
        context: context.to_owned(),
        error,
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            what: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            what: "holds no certificate".to_owned(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_path_buf(),
        what: format!("holds no usable private key: {e}"),
    })
}

/// The CA certificates of the directory `dir`.
fn roots(dir: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(&dir.join(CA_CERT))? {
        roots
            .add(cert)
            .map_err(|e| unusable_ca(dir, "anything", e))?;
    }
    Ok(Arc::new(roots))
}

fn unusable_ca(dir: &Path, peers: &str, e: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        path: dir.join(CA_CERT),
        what: format!("cannot verify {peers} with it: {e}"),
    }
}

/// Runs the server side of the TLS handshake on `plain` (after the ACK to
/// `NBD_OPT_STARTTLS` was sent), within the stream's timeouts.
///
/// # Errors
///
/// The credentials cannot be read (`Other`), the client's bytes are not
/// TLS or its certificate is refused (`InvalidData`), or the stream failed
/// or timed out.
pub fn accept(plain: &Stream, tls: &ServerTls) -> io::Result<Stream> {
    let config = tls.config().map_err(io::Error::other)?;
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    TlsStream::handshake(plain, conn.into())
}

/// Runs the client side of the TLS handshake on `plain` (after the server
/// acknowledged `NBD_OPT_STARTTLS`) with `config` (from
/// [`ClientTls::config`]), checking that the server's certificate is for
/// `name`.
///
/// # Errors
///
/// As [`accept`], and `InvalidInput` for a server name that is neither a
/// host name nor an IP address.
pub fn connect(plain: &Stream, config: Arc<ClientConfig>, name: &str) -> io::Result<Stream> {
    let name = ServerName::try_from(name.to_owned()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{name:?} is not a host name or an IP address to check the server's certificate for"
            ),
        )
    })?;
    let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    TlsStream::handshake(plain, conn.into())
}

/// A TLS session over a plain socket; see the module documentation.
pub struct TlsStream {
    socket: Stream,
    state: Mutex<Connection>,
    /// The writers' turn, with the ciphertext being sent.
    turn: Mutex<Vec<u8>>,
    /// The reader's turn, with ciphertext read and not yet taken by rustls.
    input: Mutex<Input>,
}

struct Input {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    fn handshake(plain: &Stream, mut conn: Connection) -> io::Result<Stream> {
        // Not buffered: whatever the handshake reads beyond its last
        // record stays in rustls and is read as plaintext later.
        let mut io = plain;
        while conn.is_handshaking() {
            conn.complete_io(&mut io)?;
        }
        // Early data and tickets the handshake left queued.
        while conn.wants_write() {
            conn.write_tls(&mut io)?;
        }
        conn.set_buffer_limit(None);
        let socket = plain.try_clone()?;
        Ok(Stream::Tls(Arc::new(TlsStream {
            socket,
            state: Mutex::new(conn),
            turn: Mutex::new(Vec::new()),
            input: Mutex::new(Input {
                buf: vec![0u8; READ_CHUNK].into_boxed_slice(),
                start: 0,
                end: 0,
            }),
        })))
    }

    /// The plain socket underneath (for timeouts and shutdown).
    pub(super) fn socket(&self) -> &Stream {
        &self.socket
    }

    /// Sets the socket's read timeout (`None`: block for ever).
    ///
    /// # Errors
    ///
    /// As `setsockopt(2)`.
    pub fn set_read_timeout(&self, timeout: Option<std::time::Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    /// The TLS version and cipher suite, for logs.
    pub fn describe(&self) -> String {
        let state = lock(&self.state);
        let version = state
            .protocol_version()
            .map_or_else(|| "TLS".to_owned(), |v| format!("{v:?}"));
        let suite = state
            .negotiated_cipher_suite()
            .map_or_else(String::new, |s| format!(" {:?}", s.suite()));
        format!("{version}{suite}")
    }

    /// Encrypts the first bytes of `bufs` into `out` (which the caller
    /// sends); returns how many plaintext bytes that is.
    ///
    /// One record's plaintext at a time, its ciphertext moved to `out`
    /// before the next is encrypted. rustls encrypts each record into an
    /// allocation of its own: freed one by one, they reuse the same few
    /// pages, where 256 KiB of them freed at once went back to the kernel
    /// and were faulted in again for the next chunk (a tenth of the
    /// server's CPU on a TLS sequential read). A record may span slices: a
    /// reply's header shares the first record of its payload.
    fn encrypt(&self, bufs: &[IoSlice<'_>], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut state = lock(&self.state);
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        let limit = if total <= WRITE_CHUNK + RECORD {
            total
        } else {
            WRITE_CHUNK
        };
        let mut taken = 0;
        let mut record = Record::new(bufs);
        while taken < limit {
            let pieces = record.next(RECORD.min(limit - taken));
            if pieces.is_empty() {
                break;
            }
            // The buffer limit is off: rustls takes all of it.
            let n = state.writer().write_vectored(pieces)?;
            if n == 0 {
                // rustls took nothing (it always takes all once the
                // handshake is done): fail rather than offer it again for ever.
                return Err(io::ErrorKind::WriteZero.into());
            }
            taken += n;
            record.advance(n);
            while state.wants_write() {
                state.write_tls(out)?;
            }
        }
        Ok(taken)
    }

    /// Sends what rustls has queued (alerts, key updates, a close_notify).
    fn flush_tls(&self) -> io::Result<()> {
        let mut out = lock(&self.turn);
        {
            let mut state = lock(&self.state);
            while state.wants_write() {
                state.write_tls(&mut *out)?;
            }
        }
        let sent = (&self.socket).write_all(&out);
        out.clear();
        sent
    }

    /// On a `Write` or `Both` shutdown, sends a close_notify if no writer
    /// is busy and the socket takes it at once (a shutdown must never wait:
    /// it is how blocked threads are woken), then shuts the socket down.
    pub(super) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        if how != Shutdown::Read {
            if let Ok(mut out) = self.turn.try_lock() {
                {
                    let mut state = lock(&self.state);
                    state.send_close_notify();
                    while state.wants_write() {
                        if state.write_tls(&mut *out).is_err() {
                            break;
                        }
                    }
                }
                let flags = rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL;
                let _ = rustix::net::send(&self.socket, &out, flags);
                out.clear();
            }
        }
        self.socket.shutdown(how)
    }
}

impl Read for &TlsStream {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        let mut input = lock(&self.input);
        loop {
            let mut flush = false;
            let got = {
                let mut state = lock(&self.state);
                // Hand rustls what was read, as far as it takes it (it
                // refuses more once a record's plaintext waits unread).
                while input.start < input.end {
                    let Input { buf, start, end } = &mut *input;
                    // An error: it holds enough for now.
                    let taken = state.read_tls(&mut &buf[*start..*end]).unwrap_or_default();
                    *start += taken;
                    let processed = state.process_new_packets();
                    flush |= state.wants_write();
                    match processed {
                        Err(e) => {
                            drop(state);
                            let _ = self.flush_tls();
                            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                        }
                        Ok(io_state) if io_state.plaintext_bytes_to_read() > 0 || taken == 0 => {
                            break;
                        }
                        Ok(_) => {}
                    }
                }
                state.reader().read(dst)
            };
            if flush {
                self.flush_tls()?;
            }
            match got {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            if input.start == input.end {
                input.start = 0;
                input.end = 0;
            } else if input.end == input.buf.len() {
                // rustls took nothing from a full buffer: cannot happen
                // with records under 64 KiB, but never spin on it.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS record larger than the read buffer",
                ));
            }
            let end = input.end;
            let n = (&self.socket).read(&mut input.buf[end..])?;
            if n == 0 {
                // The peer closed: rustls says whether it did so cleanly
                // (close_notify: end of stream) or not (UnexpectedEof).
                let mut state = lock(&self.state);
                let _ = state.read_tls(&mut &[][..]);
                let _ = state.process_new_packets();
                return match state.reader().read(dst) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        Err(io::ErrorKind::UnexpectedEof.into())
                    }
                    other => other,
                };
            }
            input.end += n;
        }
    }
}

impl Write for &TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut out = lock(&self.turn);
        let sent = self
            .encrypt(bufs, &mut out)
            .and_then(|taken| (&self.socket).write_all(&out).map(|()| taken));
        // Also on an error: nothing of this write is left for the next.
        out.clear();
        sent
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = ServerTls::new(&dir.path().join("none"), false).unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        assert!(e.to_string().contains("server-cert.pem"), "{e}");
        let e = ClientTls::new(dir.path(), None).config().unwrap_err();
        assert!(e.to_string().contains("ca-cert.pem"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(CA_CERT), "garbage").unwrap();
        let e = ClientTls::new(dir.path(), None).config().unwrap_err();
        assert!(e.to_string().contains("holds no certificate"), "{e}");
    }
}
