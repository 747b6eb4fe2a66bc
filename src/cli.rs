//! The command line, as clap derive types and nothing else.
//!
//! Subcommand names, long and short options follow the C flexnbd so that
//! existing scripts keep working (`-l/--addr`, `-p/--port`, `-f/--file`,
//! `-s/--sock`, ...). Every argument's doc comment is its help text; the man
//! pages and shell completions are generated from this definition by the
//! hidden `generate` subcommand. This module imports only the small parsing
//! types it needs, never server or I/O code.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::net::{AclEntry, parse_ip};

/// A fast NBD server that serves a file and can live-migrate it.
///
/// flexnbd exports one file over the Network Block Device protocol to qemu,
/// the Linux kernel's nbd-client and the libnbd tools, is controlled through
/// a UNIX control socket, and is a drop-in replacement for the C flexnbd.
#[derive(Debug, Parser)]
#[command(
    name = "flexnbd",
    version,
    propagate_version = true,
    infer_long_args = true
)]
#[command(after_help = "Run 'flexnbd help <command>' for the options of one command.")]
pub struct Cli {
    /// Options accepted by every subcommand.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The mode to run in.
    #[command(subcommand)]
    pub command: Command,
}

/// Logging options shared by every subcommand.
#[derive(Debug, Args, Clone, Copy, Default)]
pub struct GlobalArgs {
    /// Log more: -v for informational messages, -vv for per-request debug.
    /// With -q as well, the last one given wins (as flexnbd-c).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, overrides_with = "quiet")]
    pub verbose: u8,
    /// Log nothing; errors that end the command are still printed.
    #[arg(short, long, global = true, overrides_with = "verbose")]
    pub quiet: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve FILE from ADDR:PORT, with an optional control socket at SOCK.
    Serve(ServeArgs),
    /// Listen for an incoming migration on ADDR:PORT.
    ///
    /// Serves FILE to one client at a time without control: when a client
    /// (the migration's source) sends DISCONNECT, the data is ours and the
    /// process exits 0. A signal before that exits 1.
    Listen(ListenArgs),
    /// Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET.
    Read(ReadArgs),
    /// Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET.
    Write(WriteArgs),
    /// Set the access control list for a server with control socket SOCK.
    Acl(AclArgs),
    /// Get the status for a server with control socket SOCK.
    Status(StatusArgs),
    /// Start mirroring from the server with control socket SOCK to one at ADDR:PORT.
    ///
    /// The server copies its file to the destination while its clients keep
    /// writing, then hands over: it stops serving, sends DISCONNECT (the
    /// destination takes control) and exits 0. A destination that fails
    /// after it was accepted is retried every second until the migration
    /// completes or `flexnbd break` stops it.
    Mirror(MirrorArgs),
    /// Set the maximum speed of a migration from a mirroring server listening on SOCK.
    MirrorSpeed(MirrorSpeedArgs),
    /// Stop mirroring from the server with control socket SOCK.
    ///
    /// The server keeps serving, with control; a new mirror can be started.
    Break(BreakArgs),
    /// Resiliently proxy an NBD connection between a client and a server.
    ///
    /// Serves one client at a time on TCP or a UNIX socket and relays its
    /// requests to the server at CONN_ADDR:CONN_PORT; when that server dies,
    /// times out or is replaced (after a migration), the proxy reconnects
    /// and resends what was in flight, and the client never sees the break.
    /// Also runs as `flexnbd-proxy` (a symlink to flexnbd), as the C flexnbd-proxy.
    Proxy(ProxyArgs),
    /// Generate man pages or shell completions (for packagers).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Where a server listens.
#[derive(Debug, Args, Clone)]
pub struct ListenAddrArgs {
    /// The address to serve on (an IPv4 or IPv6 address; 0 means all IPv4 addresses).
    #[arg(short = 'l', long, value_name = "ADDR", value_parser = parse_ip)]
    pub addr: IpAddr,
    /// The port to serve on (0 picks a free port).
    #[arg(short, long, value_name = "PORT")]
    pub port: u16,
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
    #[arg(short, long, value_name = "SOCK")]
    pub sock: Option<PathBuf>,
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
    /// Addresses allowed to connect, as ADDRESS[/MASK] (e.g. 10.0.0.0/8 or ::1).
    ///
    /// An empty list allows everyone unless --default-deny is given; a
    /// non-empty list denies everyone not listed.
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
    /// Speak the old-style handshake of the C flexnbd instead of fixed newstyle.
    ///
    /// Use this when the source is a C flexnbd, whose mirror only speaks old-style.
    #[arg(long)]
    pub oldstyle: bool,
    /// Addresses allowed to connect, as ADDRESS[/MASK].
    #[arg(value_name = "ACL_ADDRESS")]
    pub acl: Vec<AclEntry>,
}

/// Options of `mirror`.
#[derive(Debug, Args, Clone)]
pub struct MirrorArgs {
    /// The address to mirror to.
    #[arg(short = 'l', long, value_name = "ADDR", value_parser = parse_ip)]
    pub addr: IpAddr,
    /// The port to mirror to.
    #[arg(short, long, value_name = "PORT")]
    pub port: u16,
    /// Path to the control socket of the server to migrate.
    #[arg(short, long, value_name = "SOCK")]
    pub sock: PathBuf,
    /// Unlink the local file when done.
    ///
    /// The file is removed after the destination acknowledged every byte
    /// and before the DISCONNECT that hands control over, so exactly one
    /// copy is canonical whatever happens after.
    #[arg(short, long)]
    pub unlink: bool,
    /// Bind the local socket to a particular IP address.
    #[arg(short, long, value_name = "BIND_ADDR", value_parser = parse_ip)]
    pub bind: Option<IpAddr>,
    /// Maximum speed of the migration, in bytes/sec (changeable with mirror-speed).
    #[arg(short, long, value_name = "BPS")]
    pub max_speed: Option<u64>,
    /// Follow the migration until it ends and exit with its outcome.
    ///
    /// Exits 0 once the destination has control, non-zero if the migration
    /// is stopped or the source dies. Draws a progress bar on stderr when it
    /// is a terminal, and prints a progress line every few seconds otherwise.
    #[arg(short, long)]
    pub wait: bool,
    /// With --wait, print no progress, only the outcome.
    #[arg(long, requires = "wait")]
    pub no_progress: bool,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// Options of `proxy` (and of `flexnbd-proxy`).
#[derive(Debug, Args, Clone)]
pub struct ProxyArgs {
    /// The address we will bind to as a proxy: an IP address, or a path (starting with /) for a UNIX socket.
    #[arg(short = 'l', long, value_name = "ADDR")]
    pub addr: String,
    /// The port we will bind to as a proxy, if required.
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Address of the proxied server.
    #[arg(short = 'C', long, value_name = "ADDR", value_parser = parse_ip)]
    pub conn_addr: IpAddr,
    /// Port of the proxied server.
    #[arg(short = 'P', long, value_name = "PORT")]
    pub conn_port: u16,
    /// The address we connect from, as a proxy.
    #[arg(short, long, value_name = "ADDR", value_parser = parse_ip)]
    pub bind: Option<IpAddr>,
    /// Use a RAM read cache of the given size (4096 if no size is given; at most 16 MiB).
    #[arg(long, value_name = "CACHE_BYTES", num_args = 0..=1, require_equals = true,
          default_missing_value = "4096")]
    pub cache: Option<usize>,
    /// Speak the old-style handshake to the client (as the C flexnbd-proxy) instead of fixed newstyle.
    #[arg(long)]
    pub oldstyle: bool,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// The command line of `flexnbd-proxy`, the proxy under its C name.
#[derive(Debug, Parser)]
#[command(name = "flexnbd-proxy", version, infer_long_args = true)]
pub struct ProxyCli {
    /// Logging options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The proxy's options.
    #[command(flatten)]
    pub args: ProxyArgs,
}

/// Options of `mirror-speed`.
#[derive(Debug, Args, Clone)]
pub struct MirrorSpeedArgs {
    /// The mirroring server.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Maximum speed of the migration, in bytes/sec.
    #[arg(short, long, value_name = "BPS")]
    pub max_speed: u64,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// Options of `break`.
#[derive(Debug, Args, Clone)]
pub struct BreakArgs {
    /// The mirroring server.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// Extra arguments after the options, accepted and ignored for C
/// compatibility: the C flexnbd does not check for them, so scripts written
/// for it may pass them. Hidden from help, man pages and completions.
#[derive(Debug, Args, Clone, Default)]
pub struct IgnoredArgs {
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[arg(hide = true, value_name = "IGNORED")]
    pub ignored: Vec<String>,
}

/// The server a client subcommand talks to.
#[derive(Debug, Args, Clone)]
pub struct ConnectArgs {
    /// The address of the server.
    #[arg(short = 'l', long, value_name = "ADDR", value_parser = parse_ip)]
    pub addr: IpAddr,
    /// The port of the server.
    #[arg(short, long, value_name = "PORT")]
    pub port: u16,
    /// Bind the local socket to a particular IP address.
    #[arg(short, long, value_name = "BIND_ADDR", value_parser = parse_ip)]
    pub bind: Option<IpAddr>,
}

/// The byte range of `read` and `write`.
#[derive(Debug, Args, Clone, Copy)]
pub struct RangeArgs {
    /// Byte offset to start at.
    #[arg(short = 'F', long, value_name = "OFFSET")]
    pub from: u64,
    /// Number of bytes.
    #[arg(short = 'S', long, value_name = "SIZE")]
    pub size: u64,
}

/// Options of `read`.
#[derive(Debug, Args, Clone)]
pub struct ReadArgs {
    /// The server to read from.
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The range to read.
    #[command(flatten)]
    pub range: RangeArgs,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// Options of `write`.
#[derive(Debug, Args, Clone)]
pub struct WriteArgs {
    /// The server to write to.
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The range to write; exactly SIZE bytes are read from stdin.
    #[command(flatten)]
    pub range: RangeArgs,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// The control socket of a running server.
#[derive(Debug, Args, Clone)]
pub struct ControlArgs {
    /// Path to the control socket.
    #[arg(short, long, value_name = "SOCK")]
    pub sock: PathBuf,
}

/// Options of `acl`.
#[derive(Debug, Args, Clone)]
pub struct AclArgs {
    /// The server to change.
    #[command(flatten)]
    pub control: ControlArgs,
    /// The new access control list, as ADDRESS[/MASK]; none means an empty list.
    ///
    /// Entries are checked by the server, which keeps the old list and
    /// answers with an error if any entry is bad.
    #[arg(value_name = "ACL_ADDRESS")]
    pub acl: Vec<String>,
}

/// Options of `status`.
#[derive(Debug, Args, Clone)]
pub struct StatusArgs {
    /// The server to ask.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Print the status as one JSON object instead of the key=value line.
    #[arg(long)]
    pub json: bool,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// What `generate` produces.
#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    /// The artefact to generate.
    #[command(subcommand)]
    pub what: GenerateWhat,
}

/// Artefacts generated from this CLI definition.
#[derive(Debug, Subcommand, Clone)]
pub enum GenerateWhat {
    /// Write flexnbd.1 and one page per subcommand into DIR.
    Man {
        /// The directory to write the pages into.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL to stdout.
    Completions {
        /// The shell to generate completions for.
        #[arg(value_enum, value_name = "SHELL")]
        shell: Shell,
    },
}

/// Shells that completions are generated for.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// GNU bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
    /// Elvish.
    Elvish,
    /// PowerShell.
    Powershell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn control_mode_is_octal_and_owner_only_by_default() {
        for (text, mode) in [("600", 0o600), ("0660", 0o660), ("0o777", 0o777), ("0", 0)] {
            assert_eq!(parse_mode(text), Ok(mode), "{text}");
        }
        for bad in ["", "8", "1000", "0x1ff", "+600", "rw", "-1"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        for cmd in ["serve", "listen"] {
            let line = ["flexnbd", cmd, "-l", "0", "-p", "1", "-f", "x", "-s", "ctl"];
            let (serve, listen) = match Cli::try_parse_from(line).unwrap().command {
                Command::Serve(a) => (Some(a.control_mode), None),
                Command::Listen(a) => (None, Some(a.control_mode)),
                _ => panic!("{cmd}"),
            };
            assert_eq!(serve.or(listen), Some(0o600), "{cmd}");
        }
    }

    #[test]
    fn flexnbd_c_serve_line_parses() {
        let cli = Cli::try_parse_from([
            "flexnbd",
            "serve",
            "-l",
            "127.0.0.1",
            "-p",
            "4777",
            "-f",
            "disk.img",
            "-s",
            "ctl",
            "-d",
            "-k",
            "127.0.0.1",
            "10.0.0.0/8",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.port, 4777);
        assert!(args.default_deny && args.killswitch);
        assert_eq!(args.acl.len(), 2);
    }

    #[test]
    fn abbreviated_long_options_and_equals_work() {
        let cli = Cli::try_parse_from([
            "flexnbd",
            "read",
            "--addr=::1",
            "--port",
            "1",
            "--from",
            "0",
            "--size",
            "9",
        ])
        .unwrap();
        let Command::Read(args) = cli.command else {
            panic!("not read")
        };
        assert_eq!(args.range.size, 9);
    }

    #[test]
    fn bad_acl_entry_is_a_usage_error() {
        let err = Cli::try_parse_from([
            "flexnbd",
            "serve",
            "-l",
            "0",
            "-p",
            "1",
            "-f",
            "x",
            "10.0.0.0/0",
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
