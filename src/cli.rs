//! The command line, as clap derive types and nothing else.
//!
//! Subcommand names, long and short options follow the C flexnbd so that
//! existing scripts keep working (`-l/--addr`, `-p/--port`, `-f/--file`,
//! `-s/--sock`, ...). Every argument's doc comment is its help text; the man
//! pages and shell completions are generated from this definition by the
//! `man` and `completions` subcommands. Sizes and rates are parsed here, with
//! suffixes (`parse_bytes`). This module imports only the small parsing
//! types it needs, never server or I/O code.

use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::net::parse_ip;
use crate::uri::ServerAddr;

mod server;

pub use server::{
    LimitArgs, ListenAddr, ListenAddrArgs, ListenArgs, ServeArgs, ServerArgs, ServerTlsArgs,
    TlsModeArg, parse_mode,
};

/// What `--version` shows: the package version, and the commit when built
/// from a git checkout (`0.1.0 (1970a93)`; see build.rs).
pub const VERSION: &str = env!("FLEXNBD_VERSION");

/// A fast NBD server that serves a file and can live-migrate it.
///
/// flexnbd exports one file over the Network Block Device protocol to qemu,
/// the Linux kernel's nbd-client and the libnbd tools, is controlled through
/// a UNIX control socket, and is a drop-in replacement for the C flexnbd.
///
/// Addresses are IPv4 or IPv6 literals, which may be written in brackets; 0
/// means every IPv4 address; host names are not looked up. Sizes, offsets
/// and rates take a suffix, K, M, G, T, P or E, each a power of 1024 (64K,
/// 512M, 1.5G).
#[derive(Debug, Parser)]
#[command(
    name = "flexnbd",
    version = VERSION,
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
    /// How log lines look: auto is journal under systemd's journal, else plain.
    ///
    /// plain: an RFC 3339 UTC timestamp, level, pid, thread and message
    /// (source file:line from -vv). journal: a syslog priority prefix
    /// (<3> error ... <7> debug) and no timestamp, for journalctl -p.
    /// c: the C flexnbd's layout (monotonic ms, level, pid, thread, file,
    /// source file:line), for diffing logs with it.
    #[arg(long, value_name = "FORMAT", global = true, default_value = "auto")]
    pub log_format: LogFormat,
}

/// The `--log-format` choices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// journal when stderr is systemd's journal stream, else plain.
    #[default]
    Auto,
    /// Timestamp, level, pid, thread, message.
    Plain,
    /// Syslog priority prefix, no timestamp.
    Journal,
    /// The C flexnbd's layout.
    C,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve FILE from ADDR:PORT, with an optional control socket at SOCK.
    ///
    /// Serves until SIGINT, SIGTERM or SIGQUIT: then it stops accepting,
    /// answers every request its clients have already sent (a client that
    /// does not read its replies gets 5 seconds), removes the control
    /// socket and exits.
    Serve(ServeArgs),
    /// Listen for an incoming migration on ADDR:PORT.
    ///
    /// Serves FILE to one client at a time without control: when a client
    /// (the migration's source) sends DISCONNECT, the data is ours and the
    /// process exits 0. A signal before that exits 1.
    Listen(ListenArgs),
    /// Read SIZE bytes from a server at ADDR:PORT to stdout, starting at OFFSET.
    ///
    /// Speaks both the old-style and the newstyle handshake, so it reads from
    /// flexnbd in either mode, the C flexnbd, qemu-nbd, nbdkit and nbd-server.
    Read(ReadWriteArgs),
    /// Write SIZE bytes from stdin to a server at ADDR:PORT, starting at OFFSET.
    Write(ReadWriteArgs),
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
    /// Print the shell completion script for SHELL to stdout.
    ///
    /// For bash: `flexnbd completions bash > /usr/share/bash-completion/completions/flexnbd`;
    /// zsh: `_flexnbd` in a directory on $fpath; fish: `~/.config/fish/completions/flexnbd.fish`.
    Completions(CompletionsArgs),
    /// Write the man pages into DIR, or print flexnbd(1) to stdout.
    ///
    /// With DIR, writes flexnbd.1 and one flexnbd-COMMAND.1 per subcommand
    /// there (creating DIR); `man -l DIR/flexnbd-serve.1` reads one.
    Man(ManArgs),
    /// The older spelling of `completions` and `man`: `generate completions SHELL`, `generate man DIR`.
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Options of `mirror`.
#[derive(Debug, Args, Clone)]
pub struct MirrorArgs {
    /// The address to mirror to: an IP address (with --port), a UNIX socket path or an NBD URI.
    ///
    /// nbd://HOST:PORT/EXPORT (PORT optional) or nbd+unix:///EXPORT?socket=PATH, as for
    /// read and write. A host name is looked up here. A socket path or an
    /// export name goes to the server as a URI, which the C flexnbd does
    /// not understand (see docs/control-protocol.md).
    #[arg(short = 'l', long, value_name = "ADDR")]
    pub addr: ServerAddr,
    /// The port to mirror to (with an IP address only).
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
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
    ///
    /// A number of bytes with an optional suffix (100M is 100 MiB/s); 0 pauses the migration.
    #[arg(short, long, value_name = "BPS", value_parser = parse_bytes)]
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
    /// Check the copy before handing over: the destination's block hashes
    /// must match ours.
    ///
    /// After the last write and the FLUSH, both sides hash the whole file
    /// (BLAKE3, 64 KiB blocks); blocks that differ are sent again and
    /// checked again, up to 3 times, and the handover happens only when all
    /// match, otherwise the migration fails and the source keeps serving.
    /// The source hashes its side while the copy runs (until a client
    /// writes), reading only what the copy has already read, so -m and
    /// mirror-speed bound that reading too. Needs a flexnbd listen as the destination
    /// (docs/hash-extension.md).
    #[arg(long)]
    pub verify: bool,
    /// Send only the blocks whose hashes differ from the destination's copy.
    ///
    /// The default does so when the destination (a flexnbd listen) says its
    /// file holds data; this does it whenever the destination offers hashes.
    #[arg(long, conflicts_with = "no_incremental")]
    pub incremental: bool,
    /// Copy the whole file, even to a destination that holds a copy.
    #[arg(long)]
    pub no_incremental: bool,
    /// Migrate over TLS, with the serving process's own --tls-certificates.
    ///
    /// The destination is sent to the server as an nbds:// URI (which the C
    /// flexnbd does not understand); its certificate is checked for the
    /// host named here. The destination should run listen --tls require
    /// --tls-verify-peer, so that only this source can write into it.
    #[arg(long)]
    pub tls: bool,
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
    /// Address of the proxied server: an IP address (with --conn-port), a UNIX socket path or an NBD URI.
    ///
    /// nbd://HOST:PORT/EXPORT (PORT optional) or nbd+unix:///EXPORT?socket=PATH, as for
    /// read and write.
    #[arg(short = 'C', long, value_name = "ADDR")]
    pub conn_addr: ServerAddr,
    /// Port of the proxied server (with an IP address only).
    #[arg(short = 'P', long, value_name = "PORT")]
    pub conn_port: Option<u16>,
    /// The address we connect from, as a proxy.
    #[arg(short, long, value_name = "ADDR", value_parser = parse_ip)]
    pub bind: Option<IpAddr>,
    /// Use a RAM read cache of the given size (4096 if no size is given; at most 16 MiB).
    ///
    /// A number of bytes with an optional suffix, e.g. --cache=64K.
    #[arg(long, value_name = "CACHE_BYTES", num_args = 0..=1, require_equals = true,
          default_missing_value = "4096", value_parser = parse_bytes_usize)]
    pub cache: Option<usize>,
    /// Speak the old-style handshake to the client (as the C flexnbd-proxy) instead of fixed newstyle.
    #[arg(long)]
    pub oldstyle: bool,
    /// TLS towards clients; its --tls-certificates also serve --upstream-tls.
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Speak TLS to the upstream server, with the client certificate of --tls-certificates.
    ///
    /// An nbds:// upstream asks for it too.
    #[arg(long)]
    pub upstream_tls: bool,
    /// Extra arguments, ignored as the C flexnbd ignores them.
    #[command(flatten)]
    pub ignored: IgnoredArgs,
}

/// The command line of `flexnbd-proxy`, the proxy under its C name.
#[derive(Debug, Parser)]
#[command(name = "flexnbd-proxy", version = VERSION, infer_long_args = true)]
pub struct ProxyCli {
    /// Logging options.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The proxy's options.
    #[command(flatten)]
    pub args: ProxyArgs,
}

/// Whether the process was started as `flexnbd-proxy` (a symlink), not `flexnbd`.
pub fn invoked_as_proxy(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "flexnbd-proxy")
}

impl Cli {
    /// Parses the process's arguments; started as `flexnbd-proxy`, they are
    /// [`ProxyCli`]'s, run as the `proxy` subcommand.
    ///
    /// A usage error exits as clap does: its message, and status 2.
    pub fn parse_invoked() -> Cli {
        match std::env::args_os().next() {
            Some(argv0) if invoked_as_proxy(&argv0) => {
                let proxy = ProxyCli::parse();
                Cli {
                    global: proxy.global,
                    command: Command::Proxy(proxy.args),
                }
            }
            _ => Cli::parse_activated(),
        }
    }

    /// [`Cli::parse`], except that under systemd's socket activation
    /// (`LISTEN_FDS` set) `-l/-p` of `serve` and `listen` are optional: the
    /// listener is passed, not bound.
    fn parse_activated() -> Cli {
        if std::env::var_os("LISTEN_FDS").is_none() {
            return Cli::parse();
        }
        let optional = |c: clap::Command| {
            c.mut_arg("addr", |a| a.required(false))
                .mut_arg("port", |a| a.required(false))
        };
        let matches = Cli::command()
            .mut_subcommand("serve", optional)
            .mut_subcommand("listen", optional)
            .get_matches();
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

/// Options of `mirror-speed`.
#[derive(Debug, Args, Clone)]
pub struct MirrorSpeedArgs {
    /// The mirroring server.
    #[command(flatten)]
    pub control: ControlArgs,
    /// Maximum speed of the migration, in bytes/sec.
    ///
    /// A number of bytes with an optional suffix (10M is 10 MiB/s); 0 pauses the migration.
    #[arg(short, long, value_name = "BPS", value_parser = parse_bytes)]
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
    /// The server: an IP address (with --port), a UNIX socket path or an NBD URI.
    ///
    /// An NBD URI names the export too: nbd://HOST:PORT/EXPORT (PORT optional) over TCP
    /// (HOST may be a host name; PORT defaults to 10809) or
    /// nbd+unix:///EXPORT?socket=PATH over a UNIX socket. A path starting
    /// with / is a UNIX socket (default export). nbds:// and nbds+unix://
    /// are the same over TLS (see --tls).
    #[arg(short = 'l', long, value_name = "ADDR")]
    pub addr: ServerAddr,
    /// The port of the server (with an IP address only).
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Bind the local socket to a particular IP address (TCP only).
    #[arg(short, long, value_name = "BIND_ADDR", value_parser = parse_ip)]
    pub bind: Option<IpAddr>,
    /// TLS towards the server.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// TLS towards a server, for a client (`read`, `write`).
#[derive(Debug, Args, Clone, Default)]
pub struct ClientTlsArgs {
    /// Speak TLS (NBD_OPT_STARTTLS); a server without TLS is an error.
    ///
    /// Nothing but the greeting and the request for TLS is sent in clear.
    /// An nbds:// URI, --tls-certificates and --tls-hostname ask for TLS too.
    #[arg(long)]
    pub tls: bool,
    /// The directory of TLS certificates: ca-cert.pem checks the server's
    /// certificate; client-cert.pem and client-key.pem, if there, are presented.
    ///
    /// Implies --tls. Also tls-certificates=DIR in an nbds:// URI.
    #[arg(long, value_name = "DIR")]
    pub tls_certificates: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host connected to). Implies --tls.
    #[arg(long, value_name = "NAME")]
    pub tls_hostname: Option<String>,
}

/// The byte range of `read` and `write`.
#[derive(Debug, Args, Clone, Copy)]
pub struct RangeArgs {
    /// Byte offset to start at (a suffix is allowed: 1M is 1048576).
    #[arg(short = 'F', long, value_name = "OFFSET", value_parser = parse_bytes)]
    pub from: u64,
    /// Number of bytes (a suffix is allowed: 4K is 4096).
    #[arg(short = 'S', long, value_name = "SIZE", value_parser = parse_bytes)]
    pub size: u64,
}

/// Options of `read` and `write`, which take the same: the server and the
/// byte range (for `write`, exactly SIZE bytes are read from stdin).
#[derive(Debug, Args, Clone)]
pub struct ReadWriteArgs {
    /// The server to read from or write to.
    #[command(flatten)]
    pub conn: ConnectArgs,
    /// The range to read or write.
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

/// Options of `completions`.
#[derive(Debug, Args, Clone, Copy)]
pub struct CompletionsArgs {
    /// The shell to print completions for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

/// Options of `man`.
#[derive(Debug, Args, Clone)]
pub struct ManArgs {
    /// The directory to write every page into; without it, flexnbd(1) goes to stdout.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What `generate` produces.
#[derive(Debug, Args, Clone)]
pub struct GenerateArgs {
    /// The artefact to generate.
    #[command(subcommand)]
    pub what: GenerateWhat,
}

/// Artefacts generated from this CLI definition, under `generate`.
#[derive(Debug, Subcommand, Clone)]
pub enum GenerateWhat {
    /// As `flexnbd man`.
    Man(ManArgs),
    /// As `flexnbd completions`.
    Completions(CompletionsArgs),
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

/// How sizes and rates are written on the command line: a number of bytes
/// with an optional suffix, every suffix a power of 1024 as in qemu-img and
/// nbdkit (K, KB and KiB are all 1024; B is optional; case does not matter;
/// fractions round to the nearest byte).
const SIZE_SYNTAX: parse_size::Config = parse_size::Config::new().with_binary();

/// A byte count or rate from the command line: `4096`, `64K`, `512M`, `1G`,
/// `1.5GiB`. Only the command line takes suffixes; the control socket's
/// numbers stay plain, as flexnbd-c's.
fn parse_bytes(text: &str) -> Result<u64, String> {
    SIZE_SYNTAX.parse_size(text).map_err(|e| match e {
        parse_size::Error::PosOverflow => "too large: at most 16E - 1 bytes".to_owned(),
        _ => "not a size: a number of bytes, optionally followed by K, M, G, T, P or E \
              (powers of 1024), e.g. 512M"
            .to_owned(),
    })
}

/// [`parse_bytes`], more than zero.
fn parse_nonzero_bytes(text: &str) -> Result<u64, String> {
    match parse_bytes(text)? {
        0 => Err("must be more than zero".to_owned()),
        n => Ok(n),
    }
}

/// [`parse_bytes`] for a size held in memory.
fn parse_bytes_usize(text: &str) -> Result<usize, String> {
    usize::try_from(parse_bytes(text)?).map_err(|_| "too large for this machine".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Parses `flexnbd <line>`, the arguments split at spaces.
    fn parse(line: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["flexnbd"].into_iter().chain(line.split(' ')))
    }

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
            let line = format!("{cmd} -l 0 -p 1 -f x -s ctl");
            let (serve, listen) = match parse(&line).unwrap().command {
                Command::Serve(a) => (Some(a.server.control_mode), None),
                Command::Listen(a) => (None, Some(a.server.control_mode)),
                _ => panic!("{cmd}"),
            };
            assert_eq!(serve.or(listen), Some(0o600), "{cmd}");
        }
    }

    #[test]
    fn flexnbd_c_serve_line_parses() {
        let cli = parse("serve -l 127.0.0.1 -p 4777 -f disk.img -s ctl -d -k 127.0.0.1 10.0.0.0/8")
            .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen.port, Some(4777));
        assert!(args.server.default_deny && args.killswitch);
        assert_eq!(args.acl.len(), 2);
    }

    #[test]
    fn abbreviated_long_options_and_equals_work() {
        let cli = parse("read --addr=::1 --port 1 --from 0 --size 9").unwrap();
        let Command::Read(args) = cli.command else {
            panic!("not read")
        };
        assert_eq!(args.range.size, 9);
    }

    #[test]
    fn the_proxy_is_known_by_its_file_name() {
        for argv0 in ["flexnbd-proxy", "/usr/bin/flexnbd-proxy", "./flexnbd-proxy"] {
            assert!(invoked_as_proxy(OsStr::new(argv0)), "{argv0}");
        }
        for argv0 in [
            "flexnbd",
            "/usr/bin/flexnbd",
            "flexnbd-proxy.old",
            "/flexnbd-proxy/flexnbd",
            "",
        ] {
            assert!(!invoked_as_proxy(OsStr::new(argv0)), "{argv0}");
        }
    }

    #[test]
    fn bad_acl_entry_is_a_usage_error() {
        let err = parse("serve -l 0 -p 1 -f x 10.0.0.0/0").unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    /// Parses `flexnbd read -l ::1 -p 1 -F <from> -S <size>` and returns the range.
    fn read_range(from: &str, size: &str) -> Result<RangeArgs, clap::Error> {
        let cli = Cli::try_parse_from([
            "flexnbd", "read", "-l", "::1", "-p", "1", "-F", from, "-S", size,
        ])?;
        let Command::Read(args) = cli.command else {
            panic!("not read")
        };
        Ok(args.range)
    }

    #[test]
    fn sizes_take_binary_suffixes_and_plain_numbers_are_unchanged() {
        for (text, bytes) in [
            ("0", 0),
            ("4096", 4096),
            ("18446744073709551615", u64::MAX),
            ("1K", 1024),
            ("1k", 1024),
            ("1KB", 1024),
            ("1KiB", 1024),
            ("512M", 512 << 20),
            ("1G", 1 << 30),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
            ("1E", 1 << 60),
        ] {
            assert_eq!(parse_bytes(text), Ok(bytes), "{text}");
            let range = read_range(text, text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((range.from, range.size), (bytes, bytes), "{text}");
        }
    }

    #[test]
    fn bad_sizes_are_one_line_usage_errors() {
        for bad in ["", "G", "1X", "-1", "1 G B", "ten", "16E"] {
            let err = parse_bytes(bad).expect_err(bad);
            assert!(!err.contains('\n'), "{bad}: {err}");
            let err = read_range("0", bad).expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
        assert_eq!(
            parse_bytes("16E"),
            Err("too large: at most 16E - 1 bytes".to_owned())
        );
    }
}
