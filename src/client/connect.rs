//! Opening a connection: the socket (bound and connected within a
//! timeout), the wait for the server's hello, and the handshake, with TLS
//! when asked for.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use log::debug;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::handshake::{self, handshake_asking_hash};
use super::negotiate::{self, Export};
use super::{ClientError, ClientTls, Style, Target};
use crate::nbd::Stream;
use crate::proto::hash::HashParams;

/// How to connect; [`Default`] gives the C flexnbd's timings and the default export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The local address to bind to (with source port 0); `None` lets the
    /// kernel choose. Only for TCP: ignored on a UNIX socket.
    pub bind: Option<IpAddr>,
    /// The export to ask for: `""` is the server's default export. At most
    /// 4096 bytes; old-style servers have no names, and it is ignored there.
    pub export_name: String,
    /// How long the connect may take (15 s, as the C client). Zero means no limit.
    pub connect_timeout: Duration,
    /// How long to wait for the first byte of the server's hello (5 s, as
    /// the C mirror's `MS_HELLO_TIME_SECS`). Zero means no limit.
    pub hello_timeout: Duration,
    /// How long any later read or write on the socket may make no progress:
    /// the rest of the handshake, and each request and reply (60 s, the C
    /// mirror's request timeout). Zero means no limit.
    pub reply_timeout: Duration,
    /// Speak TLS (`NBD_OPT_STARTTLS`) with these credentials: nothing but
    /// the greeting and the request for TLS goes in clear, and a server
    /// without TLS is an error, never a fallback to plaintext.
    pub tls: Option<ClientTls>,
    /// Ask a fixed-newstyle server for the flexnbd hash extension
    /// (`proto::hash`) before `NBD_OPT_GO`; a server without it goes on plainly.
    pub hash_extension: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            bind: None,
            export_name: String::new(),
            connect_timeout: Duration::from_secs(15),
            hello_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(60),
            tls: None,
            hash_extension: false,
        }
    }
}

/// A connection [`establish`] opened.
pub(super) struct Established {
    pub(super) stream: Stream,
    pub(super) style: Style,
    pub(super) export: Export,
    /// The hash extension's parameters, if asked for and offered.
    pub(super) hash: Option<HashParams>,
    /// The timeout set on the stream.
    pub(super) timeout: Option<Duration>,
}

/// Connects to `target` and negotiates as `opts` says.
pub(super) fn establish(
    target: &Target,
    opts: &ConnectOptions,
) -> Result<Established, ClientError> {
    if opts.export_name.len() > negotiate::MAX_EXPORT_NAME {
        return Err(ClientError::ExportNameTooLong(opts.export_name.len()));
    }
    // Credentials first: a directory that cannot be used is the
    // operator's error, found before anything is sent.
    let tls = match &opts.tls {
        Some(tls) => Some((tls.config().map_err(ClientError::TlsCredentials)?, tls)),
        None => None,
    };
    let mut stream = open(target, opts)?;
    wait_for_hello(&stream, target, opts.hello_timeout)?;
    let timeout = nonzero(opts.reply_timeout);
    set_timeouts(&stream, timeout)?;
    let (style, export, hash) = match tls {
        None => handshake_asking_hash(&stream, timeout, &opts.export_name, opts.hash_extension)?,
        Some((config, tls)) => {
            let server = handshake::starttls(&stream, timeout)?;
            let name = tls
                .server_name()
                .map_or_else(|| default_server_name(target), str::to_owned);
            stream = crate::nbd::tls::connect(&stream, config, &name).map_err(|source| {
                ClientError::Tls {
                    addr: target.clone(),
                    source,
                }
            })?;
            let (export, hash) = handshake::after_starttls(
                &stream,
                timeout,
                server,
                &opts.export_name,
                opts.hash_extension,
            )?;
            (Style::Newstyle, export, hash)
        }
    };
    Ok(Established {
        stream,
        style,
        export,
        hash,
        timeout,
    })
}

/// `None` for a zero duration (no limit).
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Creates the socket, binds it if asked (TCP only), connects with a
/// timeout and, on TCP, sets `TCP_NODELAY`.
fn open(target: &Target, opts: &ConnectOptions) -> Result<Stream, ClientError> {
    let connect_err = |source| ClientError::Connect {
        addr: target.clone(),
        source,
    };
    let (socket, addr) = match target {
        Target::Tcp(addr) => {
            let socket = Socket::new(
                Domain::for_address(*addr),
                Type::STREAM,
                Some(Protocol::TCP),
            )
            .map_err(connect_err)?;
            if let Some(ip) = opts.bind {
                socket
                    .bind(&SocketAddr::new(ip, 0).into())
                    .map_err(|source| ClientError::Bind { addr: ip, source })?;
            }
            (socket, SockAddr::from(*addr))
        }
        Target::Unix(path) => {
            if let Some(ip) = opts.bind {
                debug!("not binding to {ip}: {} is a UNIX socket", path.display());
            }
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(connect_err)?;
            (socket, SockAddr::unix(path).map_err(connect_err)?)
        }
    };
    let connected = match nonzero(opts.connect_timeout) {
        Some(t) => socket.connect_timeout(&addr, t),
        None => socket.connect(&addr),
    };
    connected.map_err(|source| {
        if source.kind() == io::ErrorKind::TimedOut {
            ClientError::ConnectTimeout {
                addr: target.clone(),
                timeout: opts.connect_timeout,
            }
        } else {
            connect_err(source)
        }
    })?;
    Ok(match target {
        Target::Tcp(_) => {
            socket.set_tcp_nodelay(true).map_err(connect_err)?;
            let tcp = TcpStream::from(socket);
            crate::nbd::stream::unpace_if_local(&tcp);
            Stream::Tcp(tcp)
        }
        Target::Unix(_) => Stream::Unix(UnixStream::from(socket)),
    })
}

/// Waits until the first byte of the hello can be read, without consuming it.
fn wait_for_hello(stream: &Stream, addr: &Target, timeout: Duration) -> Result<(), ClientError> {
    let limit = nonzero(timeout);
    set_timeouts(stream, limit)?;
    let mut byte = [0u8; 1];
    let peeked = loop {
        // MSG_PEEK through rustix: std's UnixStream::peek is not stable yet.
        match rustix::net::recv(stream, &mut byte, rustix::net::RecvFlags::PEEK) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other.map(|(n, _)| n).map_err(io::Error::from),
        }
    };
    match peeked {
        Ok(0) => Err(ClientError::HandshakeClosed),
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(ClientError::NoHello {
                addr: addr.clone(),
                timeout,
            })
        }
        Err(e) => Err(
            match ClientError::from_io(e, "waiting for the hello", limit) {
                ClientError::Closed { .. } => ClientError::HandshakeClosed,
                e => e,
            },
        ),
    }
}

/// The name a server's certificate is checked for when none was given: the
/// IP address connected to, or `localhost` on a UNIX socket.
fn default_server_name(target: &Target) -> String {
    match target {
        Target::Tcp(addr) => addr.ip().to_string(),
        Target::Unix(_) => "localhost".to_owned(),
    }
}

fn set_timeouts(stream: &Stream, timeout: Option<Duration>) -> Result<(), ClientError> {
    stream
        .set_timeouts(timeout)
        .map_err(|source| ClientError::Io {
            what: "setting socket timeouts",
            source,
        })
}
