//! The options of the two server subcommands, `serve` and `listen`.
//!
//! Both run the same server: what they share (where the server listens,
//! the pid file, the control socket's mode, the ACL's default, the export
//! name and the connection limits) is one flattened group each, so a new
//! server option is written once. Help texts that differ between the two
//! (the file, the control socket, `--oldstyle`, the ACL) stay in each
//! command's own struct.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::parse_nonzero_bytes;
use crate::net::{AclEntry, parse_ip};

/// Where a server listens.
#[derive(Debug, Args, Clone)]
pub struct ListenAddrArgs {
    /// The address to serve on: an IPv4 or IPv6 address (0 means all IPv4
    /// addresses), or the path of a UNIX socket (starting with / or ./).
    ///
    /// A UNIX socket is created with --socket-mode (0600) whatever the
    /// umask, a stale one left by a crashed server is replaced, and it is
    /// removed on exit. Not needed (and ignored) when systemd passes the
    /// listening socket.
    #[arg(short = 'l', long, value_name = "ADDR", value_parser = parse_listen_addr, required = true)]
    pub addr: Option<ListenAddr>,
    /// The port to serve on (0 picks a free port); not with a UNIX socket.
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Permission bits of the NBD UNIX socket, in octal (default 0600: owner only).
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    pub socket_mode: u32,
}

/// Where a server listens: an IP address (with `--port`) or a UNIX socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Ip(IpAddr),
    /// A UNIX socket at this path.
    Unix(PathBuf),
}

/// A listen address: a path (starting with `/` or `.`) or an IP address as
/// flexnbd-c reads them.
fn parse_listen_addr(text: &str) -> Result<ListenAddr, String> {
    if text.starts_with('/') || text.starts_with("./") || text.starts_with("../") {
        Ok(ListenAddr::Unix(PathBuf::from(text)))
    } else {
        parse_ip(text)
            .map(ListenAddr::Ip)
            .map_err(|e| format!("{e}; a UNIX socket path starts with / or ./"))
    }
}

/// Parses permission bits written in octal (`600`, `0600` or `0o600`).
///
/// # Errors
///
/// The text is not an octal number of at most 0777.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 && !digits.starts_with('+') => Ok(mode),
        _ => Err(format!(
            "'{text}' is not a mode: give permission bits in octal, 0000 to 0777"
        )),
    }
}

/// Options of `serve`.
#[derive(Debug, Args, Clone)]
pub struct ServeArgs {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenAddrArgs,
    /// The file to serve.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
    /// Path to the control socket.
    ///
    /// Created once the NBD port listens and removed on a clean exit. A stale
    /// socket file left by a crashed server is replaced; the socket of a
    /// running server, or a file that is not a socket, makes serve fail.
    #[arg(short, long, value_name = "SOCK")]
    pub sock: Option<PathBuf>,
    /// What `serve` shares with `listen`.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Drop a client whose request takes longer than 120 seconds.
    ///
    /// Only the offending client is disconnected; the server keeps running.
    #[arg(short, long)]
    pub killswitch: bool,
    /// Export the file read-only: writes, trims and zeroes get EPERM.
    #[arg(short, long)]
    pub read_only: bool,
    /// Speak the old-style handshake of the C flexnbd instead of fixed newstyle.
    ///
    /// Use this when the clients are C flexnbd peers (its mirror, proxy,
    /// read and write). qemu and libnbd clients speak both styles.
    #[arg(long)]
    pub oldstyle: bool,
    /// Most clients served at once; further connections are closed at once.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,
    /// Migrations over TLS, with the client certificate of --tls-certificates.
    ///
    /// Every migration this server starts speaks TLS to its destination, as
    /// an nbds:// destination asks for one migration (flexnbd mirror --tls).
    #[arg(long)]
    pub mirror_tls: bool,
    /// Addresses allowed to connect, as ADDRESS[/MASK] (e.g. 10.0.0.0/8 or ::1).
    ///
    /// An empty list allows everyone unless --default-deny is given; a
    /// non-empty list denies everyone not listed. A refused client is closed
    /// without a byte. `flexnbd acl` replaces the list at run time.
    #[arg(value_name = "ACL_ADDRESS")]
    pub acl: Vec<AclEntry>,
}

/// Options of `listen`.
#[derive(Debug, Args, Clone)]
pub struct ListenArgs {
    /// Where to listen.
    #[command(flatten)]
    pub listen: ListenAddrArgs,
    /// The file to receive into; it must exist with the source's size.
    #[arg(short, long, value_name = "FILE")]
    pub file: PathBuf,
    /// Path to the control socket.
    #[arg(short, long, value_name = "SOCK")]
    pub sock: Option<PathBuf>,
    /// What `listen` shares with `serve`.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Speak the old-style handshake of the C flexnbd instead of fixed newstyle.
    ///
    /// Use this when the source is a C flexnbd, whose mirror only speaks old-style.
    #[arg(long)]
    pub oldstyle: bool,
    /// Once the migration has handed control over, go on serving the file as `serve` would.
    ///
    /// Without it `listen` exits 0 when control arrives, as the C flexnbd
    /// does, and the file is served again only once something starts
    /// `serve` on it. With it the same listener and control socket serve
    /// the file at once: new clients (up to --max-clients, still subject to the
    /// ACL), `status`, `acl`, a further `mirror`. Before control arrives
    /// it is the same `listen`: one client at a time.
    #[arg(long)]
    pub serve_after_handover: bool,
    /// With --serve-after-handover: most clients served at once after the handover.
    #[arg(long, value_name = "N", default_value_t = 1024, requires = "serve_after_handover",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,
    /// Do not hash FILE ahead of a source's incremental comparison.
    ///
    /// By default, when FILE already holds data, `listen` reads it once
    /// from the start and keeps a hash of each 64 KiB block (of the first
    /// 64 GiB; about 36 MiB), so that a flexnbd source comparing before it
    /// copies finds them ready and only reads and hashes its own file. It
    /// stops at the first write, and the hashes are then dropped. Use this
    /// when the source will not compare (`mirror --no-incremental`) and
    /// reading FILE would only load the disk. An --oldstyle `listen` (a C
    /// flexnbd's destination) never hashes ahead.
    #[arg(long)]
    pub no_hash_ahead: bool,
    /// Addresses allowed to connect, as ADDRESS[/MASK].
    #[arg(value_name = "ACL_ADDRESS")]
    pub acl: Vec<AclEntry>,
}

/// The server options `serve` and `listen` share, after the file and the
/// control socket: the pid file, the control socket's mode, the ACL's
/// default, the export name, the connection limits and TLS.
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Write the process id to PATH once serving; removed on exit.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Permission bits of the control socket, in octal (default 0600: owner only).
    ///
    /// The socket is created with exactly this mode whatever the umask, and
    /// never exists with a wider one. Anyone who can connect to it can change
    /// the ACL or start a migration to a host of their choice, so widen it
    /// (e.g. 0660 for a group) with care. The C flexnbd left the mode to the
    /// umask.
    #[arg(long, value_name = "MODE", default_value = "0600", value_parser = parse_mode)]
    pub control_mode: u32,
    /// Deny connections by default unless in ACL.
    #[arg(short, long)]
    pub default_deny: bool,
    /// Serve the file under this export name only (newstyle).
    ///
    /// NBD_OPT_LIST shows it, and a client asking for another name is
    /// refused (NBD_REP_ERR_UNKNOWN). Without it, any name is accepted.
    #[arg(short = 'x', long, value_name = "NAME", value_parser = parse_export_name,
          conflicts_with = "oldstyle")]
    pub export_name: Option<String>,
    /// Bounds on connections that have not finished their handshake.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// TLS towards clients.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
}

/// The `--tls` modes of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TlsModeArg {
    /// No TLS (NBD_OPT_STARTTLS is refused).
    #[default]
    Off,
    /// TLS offered; clients may also stay in plaintext.
    On,
    /// Only TLS: a client that does not upgrade gets nothing but errors.
    Require,
}

/// TLS towards a server's clients (`serve`, `listen`, `proxy`).
#[derive(Debug, Args, Clone, Default)]
pub struct ServerTlsArgs {
    /// Offer TLS to clients with NBD_OPT_STARTTLS: off, on or require.
    ///
    /// on lets each client choose; require serves only clients that upgrade
    /// (every other option gets NBD_REP_ERR_TLS_REQD). Needs
    /// --tls-certificates; not with --oldstyle, whose handshake has no
    /// STARTTLS.
    #[arg(long, value_name = "MODE", default_value = "off")]
    pub tls: TlsModeArg,
    /// The directory of TLS certificates, laid out as for nbdkit and qemu.
    ///
    /// ca-cert.pem (the CA that signs peers' certificates), server-cert.pem
    /// and server-key.pem (this server's), and client-cert.pem and
    /// client-key.pem (presented by the connections this process makes:
    /// migrations, the proxy's upstream). The files are read again for
    /// every TLS connection, so replacing them rotates certificates without
    /// a restart; connections already open keep their session.
    #[arg(long, value_name = "DIR")]
    pub tls_certificates: Option<PathBuf>,
    /// Accept only TLS clients presenting a certificate signed by DIR/ca-cert.pem.
    #[arg(long)]
    pub tls_verify_peer: bool,
}

/// Bounds that keep silent or slow connections from locking clients out
/// (`serve` and `listen`).
#[derive(Debug, Args, Clone)]
pub struct LimitArgs {
    /// How long a client may take over each step of the handshake.
    ///
    /// A connection that says nothing for this long is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s",
          value_parser = positive_duration)]
    pub handshake_timeout: std::time::Duration,
    /// Most connections still in their handshake at once.
    ///
    /// When full, a new connection closes the one that has been in its
    /// handshake longest, so silent connections cannot keep a real client out.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_handshakes: u32,
    /// Most connections from one address at once (no limit by default).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients_per_address: Option<u32>,
    /// Most bytes of request payloads and read buffers held for all clients.
    ///
    /// A connection that would go over waits, without reading, until
    /// others finish. A WRITE's payload is counted as its bytes arrive.
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = parse_nonzero_bytes)]
    pub max_inflight: u64,
    /// How long a client may pause in the middle of sending a request's payload, or leave a reply unread.
    ///
    /// Its connection is then closed and what it held freed: a client
    /// that stops reading cannot hold a worker, a buffer or the memory
    /// budget for longer.
    #[arg(long, value_name = "DURATION", default_value = "30s",
          value_parser = positive_duration)]
    pub stall_timeout: std::time::Duration,
    /// At a migration's handover, how long clients have to finish their requests.
    ///
    /// Clients still connected then (one that does not read its replies,
    /// say) have their connections closed, so no client can hold up the
    /// handover for longer.
    #[arg(long, value_name = "DURATION", default_value = "1s",
          value_parser = positive_duration)]
    pub handover_grace: std::time::Duration,
    /// How long to poll for a queue-depth-1 client's next request before sleeping.
    ///
    /// A client that sends one small request at a time and waits for each
    /// reply pays for waking the server's thread on every request: tens of
    /// microseconds on a virtual machine. After answering such a client,
    /// its connection's thread polls the socket for up to this long,
    /// shorter when the client pauses. At most half the CPUs (4 at most,
    /// none when the server may run on one CPU only) poll at once. 0 turns
    /// polling off. At most 1ms.
    #[arg(long, value_name = "DURATION", default_value = "100us",
          value_parser = busy_poll_duration)]
    pub busy_poll: std::time::Duration,
}

/// An export name: at most 4096 bytes (the NBD limit).
fn parse_export_name(text: &str) -> Result<String, String> {
    if text.len() > 4096 {
        Err("an export name is at most 4096 bytes".to_owned())
    } else {
        Ok(text.to_owned())
    }
}

/// The most `--busy-poll` may be: longer, a client that paused would cost
/// more CPU than the wake-up it saves.
const MAX_BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// A duration such as `100us`, `0`, at most [`MAX_BUSY_POLL`].
fn busy_poll_duration(text: &str) -> Result<std::time::Duration, String> {
    let max = MAX_BUSY_POLL;
    match humantime::parse_duration(text) {
        Ok(d) if d > max => Err(format!("at most {}", humantime::format_duration(max))),
        Ok(d) => Ok(d),
        Err(_) if text == "0" => Ok(std::time::Duration::ZERO),
        Err(e) => Err(e.to_string()),
    }
}

/// A duration such as `10s` or `500ms`, more than zero.
fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err("must be more than zero".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}
