//! The byte streams NBD runs over, and the listeners that accept them.
//!
//! [`Stream`] is one connected socket of any kind (TCP or UNIX today; a TLS
//! session is meant to become one more variant), [`Listener`] one listening
//! socket. Everything above this module — the handshake, the request reader,
//! the reply writer, the server, the proxy and the client — speaks to a
//! `Stream`, so a new transport is added here once.
//!
//! `&Stream` is `Read + Write` like `&TcpStream`: one thread may read while
//! others write through a lock, and another thread may `shutdown` it to wake
//! both.

use std::fmt;
use std::fs;
use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, TcpKeepalive, Type};

use super::tls::TlsStream;

/// A connected socket.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A UNIX-domain stream connection.
    Unix(UnixStream),
    /// A TLS session over one of the others (shared by its clones).
    Tls(Arc<TlsStream>),
}

/// The other end of a connection: where a client connects from (for logs
/// and access control), or where a client connects to (`client::Target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A peer on a UNIX socket (they have no useful address; the path is the listener's).
    Unix(PathBuf),
}

impl Peer {
    /// The peer's IP address, for the ACL: `None` on a UNIX socket, which
    /// only local processes allowed by its file mode can reach.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Peer::Tcp(addr) => Some(addr.ip()),
            Peer::Unix(_) => None,
        }
    }
}

impl From<SocketAddr> for Peer {
    fn from(addr: SocketAddr) -> Self {
        Peer::Tcp(addr)
    }
}

impl From<PathBuf> for Peer {
    fn from(path: PathBuf) -> Self {
        Peer::Unix(path)
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(addr) => write!(f, "{addr}"),
            Peer::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

impl Stream {
    /// Another handle on the same socket.
    ///
    /// # Errors
    ///
    /// The descriptor cannot be duplicated.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
            Stream::Tls(s) => Stream::Tls(Arc::clone(s)),
        })
    }

    /// Shuts down one or both directions, waking any thread blocked on them.
    ///
    /// # Errors
    ///
    /// As `shutdown(2)`; a socket already disconnected reports `NotConnected`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tls(s) => s.shutdown(how),
        }
    }

    /// Sets the read and the write timeout (`None`: block for ever).
    ///
    /// # Errors
    ///
    /// As `setsockopt(2)`; a zero duration is refused.
    pub fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Stream::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Stream::Tls(s) => s.socket().set_timeouts(timeout),
        }
    }

    /// Sets only the read timeout.
    ///
    /// # Errors
    ///
    /// As `setsockopt(2)`; a zero duration is refused.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(timeout),
            Stream::Unix(s) => s.set_read_timeout(timeout),
            Stream::Tls(s) => s.socket().set_read_timeout(timeout),
        }
    }

    /// Sets only the write timeout: a write (or `sendfile`) that makes no
    /// progress for that long fails.
    ///
    /// # Errors
    ///
    /// As `setsockopt(2)`; a zero duration is refused.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(timeout),
            Stream::Unix(s) => s.set_write_timeout(timeout),
            Stream::Tls(s) => s.socket().set_write_timeout(timeout),
        }
    }

    /// Switches between blocking and non-blocking mode.
    ///
    /// # Errors
    ///
    /// As `fcntl(2)`.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(nonblocking),
            Stream::Unix(s) => s.set_nonblocking(nonblocking),
            Stream::Tls(s) => s.socket().set_nonblocking(nonblocking),
        }
    }

    /// The TCP socket underneath, if it is one (for TCP-only options).
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Tcp(s) => Some(s),
            Stream::Unix(_) => None,
            Stream::Tls(s) => s.socket().as_tcp(),
        }
    }

    /// Whether file data may be sent with `sendfile(2)` straight into this
    /// stream: true for plain sockets, false under TLS (the bytes must be
    /// encrypted in user space).
    pub fn can_sendfile(&self) -> bool {
        !self.is_tls()
    }

    /// Whether file data should go into this stream with `sendfile(2)`
    /// rather than be copied through a buffer: only when it can take it
    /// ([`Stream::can_sendfile`]) and the peer is on another machine. On this
    /// machine (loopback, our own address, a UNIX socket) the peer's copy
    /// out of its socket would read the page cache's pages themselves, cold,
    /// on the peer's CPU; copied here first, it reads them warm from the
    /// cache the copy left them in, and the two copies run on two CPUs.
    /// Measured over loopback (bench/RESULTS.md): fio's 1 MiB sequential
    /// reads at up to twice the throughput, a 1 GiB migration 15-20%
    /// faster; the sender spends more CPU per GiB (it copies twice), the
    /// receiver less, both together less.
    ///
    /// In debug builds `FLEXNBD_TEST_SENDFILE=1` says yes over loopback
    /// too, so that tests (all on this machine) reach the `sendfile` paths.
    pub fn sendfile_pays(&self) -> bool {
        self.can_sendfile()
            && self
                .as_tcp()
                // Unreadable addresses count as this machine: copying is never wrong.
                .is_some_and(|tcp| !peer_is_this_machine(tcp).unwrap_or(true) || sendfile_forced())
    }

    /// Whether this is a TLS session.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

/// Whether the other end of `tcp` is on this machine: a loopback address,
/// or our own address; `None` when the addresses cannot be read (each
/// caller picks its safe answer).
fn peer_is_this_machine(tcp: &TcpStream) -> Option<bool> {
    let peer = tcp.peer_addr().ok()?.ip().to_canonical();
    let local = tcp.local_addr().ok()?.ip().to_canonical();
    Some(peer.is_loopback() || peer == local)
}

/// Whether `FLEXNBD_TEST_SENDFILE=1` asks a debug build for `sendfile` to
/// peers on this machine too.
#[cfg(debug_assertions)]
fn sendfile_forced() -> bool {
    use std::sync::OnceLock;
    static FORCE: OnceLock<bool> = OnceLock::new();
    *FORCE.get_or_init(|| std::env::var("FLEXNBD_TEST_SENDFILE").is_ok_and(|v| v == "1"))
}

#[cfg(not(debug_assertions))]
#[inline(always)]
fn sendfile_forced() -> bool {
    false
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Tcp(s)
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream::Unix(s)
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
            Stream::Tls(s) => s.socket().as_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tls(s) => (&**s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
            Stream::Tls(s) => (&**s).write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).write_vectored(bufs),
            Stream::Unix(s) => (&*s).write_vectored(bufs),
            Stream::Tls(s) => (&**s).write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A UNIX socket at a path, removed by [`Listener::remove_path`].
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds a TCP listener as flexnbd-c does: SO_REUSEADDR, TCP_NODELAY
    /// (inherited by accepted sockets), dual-stack on an IPv6 address, and
    /// EADDRNOTAVAIL retried 10 times a second apart (an address still
    /// being configured at boot).
    ///
    /// # Errors
    ///
    /// The address cannot be bound.
    pub fn bind_tcp(addr: SocketAddr) -> io::Result<TcpListener> {
        let mut tries = 0;
        loop {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_tcp_nodelay(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(false)?;
            }
            match socket.bind(&addr.into()) {
                Ok(()) => {
                    socket.listen(128)?;
                    let listener: TcpListener = socket.into();
                    let local = listener.local_addr()?;
                    log::info!("Bound to {} port {}", local.ip(), local.port());
                    return Ok(listener);
                }
                Err(e)
                    if e.raw_os_error() == Some(rustix::io::Errno::ADDRNOTAVAIL.raw_os_error())
                        && tries < 10 =>
                {
                    tries += 1;
                    log::warn!("cannot bind {addr} ({e}); retrying");
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Accepts one connection, configured for NBD (see [`configure`]).
    ///
    /// # Errors
    ///
    /// As `accept(2)`, including `WouldBlock` on a non-blocking listener.
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        let (stream, peer) = match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                (Stream::Tcp(s), Peer::Tcp(peer))
            }
            Listener::Unix(l, path) => {
                let (s, _) = l.accept()?;
                (Stream::Unix(s), Peer::Unix(path.clone()))
            }
        };
        if let Err(e) = configure(&stream) {
            // A socket the peer already closed; the handshake will notice.
            log::debug!("cannot set socket options for {peer}: {e}");
        }
        Ok((stream, peer))
    }

    /// Switches between blocking and non-blocking accepts.
    ///
    /// # Errors
    ///
    /// As `fcntl(2)`.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Listener::Tcp(l) => l.set_nonblocking(nonblocking),
            Listener::Unix(l, _) => l.set_nonblocking(nonblocking),
        }
    }

    /// The socket path of a UNIX listener.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Listener::Tcp(_) => None,
            Listener::Unix(_, path) => Some(path),
        }
    }

    /// Removes a UNIX listener's socket file (when the server stops). An
    /// empty path marks a socket this process did not create (one systemd
    /// passed): its file is left alone.
    pub fn remove_path(&self) {
        if let Some(path) = self.path().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Self {
        Listener::Tcp(l)
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
        }
    }
}

/// Creates a listening UNIX socket at `path` with exactly the permission
/// bits `mode`, whatever the umask, replacing a stale socket file (one
/// nobody listens on, left by a process that crashed). A socket some
/// process listens on, or a file that is not a socket, is left alone and
/// is an error. `what` names the socket in messages ("control socket").
///
/// # Errors
///
/// As above, or the socket cannot be created, bound or listened on.
pub fn bind_unix(path: &Path, mode: u32, backlog: i32, what: &str) -> io::Result<UnixListener> {
    let shown = path.display();
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot check {what} {shown}: {e}"),
            ));
        }
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{shown} exists and is not a socket; not replacing it with the {what}"),
            ));
        }
        Ok(_) => match is_listening(path) {
            Ok(true) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{what} {shown} is in use by another process"),
                ));
            }
            Ok(false) => {
                log::warn!("removing stale {what} {shown}");
                match fs::remove_file(path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("cannot remove stale {what} {shown}: {e}"),
                        ));
                    }
                    _ => {}
                }
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot check whether {what} {shown} is in use: {e}"),
                ));
            }
        },
    }
    let fail = |action: &str, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot {action} {what} {shown}: {e}"))
    };
    let addr = SockAddr::unix(path).map_err(|e| fail("use", e))?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| fail("create", e))?;
    // Linux creates the socket file with the mode of the unbound socket's
    // inode less the umask, so the file never exists with more than `mode`
    // allows; no process-wide umask change, which would race with other
    // threads creating files.
    rustix::fs::fchmod(&socket, rustix::fs::Mode::from_raw_mode(mode & 0o777))
        .map_err(|e| fail("set the mode of", e.into()))?;
    socket.bind(&addr).map_err(|e| fail("bind", e))?;
    set_mode(path, mode).map_err(|e| {
        let _ = fs::remove_file(path);
        fail("set the mode of", e)
    })?;
    socket.listen(backlog).map_err(|e| fail("listen on", e))?;
    Ok(UnixListener::from(socket))
}

/// Gives the socket file just bound at `path` exactly the permission bits
/// `mode`: the umask may have taken some away. Nobody can connect before
/// the socket listens, so widening it now opens no window.
fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = mode & 0o777;
    if fs::symlink_metadata(path)?.permissions().mode() & 0o777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Whether a process accepts connections on the socket at `path`.
///
/// Connects without blocking, so a live server with a full backlog counts
/// as listening instead of stalling us.
fn is_listening(path: &Path) -> io::Result<bool> {
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(false),
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock
                || e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) =>
        {
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// Options every accepted socket gets: blocking, and on TCP keepalive
/// 30/10/3 and no Nagle, as flexnbd-c sets them.
///
/// # Errors
///
/// As `setsockopt(2)`.
pub fn configure(stream: &Stream) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    if let Stream::Tcp(s) = stream {
        s.set_nodelay(true)?;
        let keepalive = TcpKeepalive::new()
            .with_time(Duration::from_secs(30))
            .with_interval(Duration::from_secs(10))
            .with_retries(3);
        SockRef::from(s).set_tcp_keepalive(&keepalive)?;
        unpace_if_local(s);
    }
    Ok(())
}

/// On a connection to this machine, replaces a congestion control that
/// paces its sends (BBR, which without the `fq` qdisc paces with a timer
/// per burst) with one that does not: CUBIC, or Reno where only it is
/// allowed (`net.ipv4.tcp_allowed_congestion_control`). Over loopback there
/// is no path to model, and pacing only costs: on the benchmark machine
/// (BBR by default, `pfifo_fast`), without it a 1 GiB nbdcopy read went
/// from a median of 1,309 MiB/s to 2,208 and the server's CPU per GiB
/// from 0.71 s to 0.40 s (five interleaved runs by hand).
/// Connections to other machines keep the system's choice; so does any
/// congestion control but BBR. Best effort: a failure leaves the socket as
/// it was.
pub fn unpace_if_local(tcp: &TcpStream) {
    // Unreadable addresses: leave the system's choice alone.
    if peer_is_this_machine(tcp) != Some(true) {
        return;
    }
    let socket = SockRef::from(tcp);
    let Ok(current) = socket.tcp_congestion() else {
        return;
    };
    if !paces(&current) {
        return;
    }
    for replacement in [&b"cubic"[..], b"reno"] {
        if socket.set_tcp_congestion(replacement).is_ok() {
            log::debug!(
                "connection to this machine: congestion control {} instead of {}",
                String::from_utf8_lossy(replacement),
                String::from_utf8_lossy(name(&current))
            );
            return;
        }
    }
}

/// A congestion control's name, without the NUL padding `getsockopt` returns.
fn name(raw: &[u8]) -> &[u8] {
    raw.split(|&b| b == 0).next().unwrap_or_default()
}

/// Whether the congestion control `raw` names paces its sends.
fn paces(raw: &[u8]) -> bool {
    name(raw).starts_with(b"bbr")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bbr_counts_as_pacing() {
        assert!(paces(b"bbr\0\0\0\0\0\0\0\0\0\0\0\0\0"));
        assert!(paces(b"bbr2"));
        assert!(!paces(b"cubic\0\0\0"));
        assert!(!paces(b"reno"));
        assert!(!paces(b""));
        assert_eq!(name(b"cubic\0\0"), b"cubic");
    }

    #[test]
    fn a_loopback_connection_under_bbr_is_moved_off_it() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        if SockRef::from(&server).set_tcp_congestion(b"bbr").is_err() {
            eprintln!("skipped: this kernel offers no BBR to switch from");
            return;
        }
        unpace_if_local(&server);
        let now = SockRef::from(&server).tcp_congestion().unwrap();
        assert!(!paces(&now), "{:?}", String::from_utf8_lossy(&now));
        // Still a working connection.
        (&server).write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        (&client).read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"x");
    }

    #[test]
    fn tcp_and_unix_streams_carry_bytes_both_ways() {
        let tcp = Listener::Tcp(Listener::bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap());
        let Listener::Tcp(l) = &tcp else {
            unreachable!()
        };
        let addr = l.local_addr().unwrap();
        let client = Stream::from(TcpStream::connect(addr).unwrap());
        let (server, peer) = tcp.accept().unwrap();
        assert_eq!(peer.ip(), Some(addr.ip()));
        roundtrip(&client, &server);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let unix = Listener::Unix(UnixListener::bind(&path).unwrap(), path.clone());
        let client = Stream::from(UnixStream::connect(&path).unwrap());
        let (server, peer) = unix.accept().unwrap();
        assert_eq!(peer, Peer::Unix(path.clone()));
        assert_eq!(peer.ip(), None);
        roundtrip(&client, &server);
        unix.remove_path();
        assert!(!path.exists());
    }

    fn roundtrip(a: &Stream, b: &Stream) {
        a.set_timeouts(Some(Duration::from_secs(5))).unwrap();
        b.set_timeouts(Some(Duration::from_secs(5))).unwrap();
        (&*a).write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        (&*b).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        let c = b.try_clone().unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        (&*a).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}
