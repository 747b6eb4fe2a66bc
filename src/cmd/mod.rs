//! One module per subcommand; the only code that prints to stdout.
//!
//! Each module has `pub fn run(args, global) -> anyhow::Result<ExitCode>`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::control::Reply;

use crate::cli::{Cli, Command, ConnectArgs, GlobalArgs, LogFormat, RangeArgs};
use crate::client::{ConnectOptions, ErrorKind, NbdClient, Target};
use crate::exit::ExitCode;
use crate::uri::{Host, NbdUri, PortError, ServerAddr, Transport};

pub mod acl;
pub mod brk;
pub mod generate;
pub mod listen;
pub mod mirror;
pub mod mirror_speed;
pub mod progress;
pub mod proxy;
pub mod read;
pub mod serve;
pub mod status;
pub mod tls;
pub mod write;

/// Runs the subcommand named on the command line.
///
/// # Errors
///
/// Whatever the subcommand fails with; `main` prints it as one line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    let global = cli.global;
    crate::logging::set_format(log_format(global.log_format));
    match cli.command {
        Command::Serve(args) => serve::run(args, global),
        Command::Listen(args) => listen::run(args, global),
        Command::Mirror(args) => mirror::run(args, global),
        Command::MirrorSpeed(args) => mirror_speed::run(args, global),
        Command::Break(args) => brk::run(args, global),
        Command::Proxy(args) => proxy::run(args, global),
        Command::Read(args) => read::run(args, global),
        Command::Write(args) => write::run(args, global),
        Command::Acl(args) => acl::run(args, global),
        Command::Status(args) => status::run(args, global),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(&args),
        Command::Generate(args) => generate::run(args),
    }
}

/// Starts the logger at the level `-v`/`-q` ask for; `context` is the file
/// or peer the process works on (see [`crate::logging::init`]).
fn init_logging(global: GlobalArgs, context: &str) {
    crate::logging::init(
        crate::logging::level_for(global.verbose, global.quiet),
        context,
    );
}

/// The one exchange of the control-socket subcommands (`acl`, `break`,
/// `mirror-speed`, `status`): logging, then `command` with `args` to the
/// server at `sock`, waiting up to `timeout` for its reply.
///
/// # Errors
///
/// The control socket cannot be reached or gives no valid reply; a reply
/// with a non-zero code is returned as is.
fn control_request<S: AsRef<str>>(
    global: GlobalArgs,
    sock: &Path,
    command: &str,
    args: &[S],
    timeout: Duration,
) -> Result<Reply> {
    init_logging(global, "");
    Ok(crate::control::client::request(
        sock,
        command,
        args,
        Some(timeout),
    )?)
}

/// The thread that waits for SIGINT, SIGTERM or SIGQUIT in a server or the
/// proxy, so that they stop cleanly.
struct SignalThread {
    handle: signal_hook::iterator::Handle,
    thread: std::thread::JoinHandle<()>,
}

impl SignalThread {
    /// The handlers, installed before anything slow: a signal during
    /// start-up then waits for [`SignalThread::start`]'s thread instead of
    /// killing the process silently.
    ///
    /// # Errors
    ///
    /// The handlers cannot be installed.
    fn install() -> Result<Signals> {
        Signals::new([SIGINT, SIGTERM, SIGQUIT]).context("cannot install signal handlers")
    }

    /// Starts the thread: on the first signal, calls `stop` with its number.
    ///
    /// # Errors
    ///
    /// The thread cannot be started.
    fn start(mut signals: Signals, stop: impl FnOnce(i32) + Send + 'static) -> Result<Self> {
        let handle = signals.handle();
        let thread = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    stop(sig);
                }
            })
            .context("cannot start the signal thread")?;
        Ok(SignalThread { handle, thread })
    }

    /// Ends the thread, whether or not a signal came.
    fn finish(self) {
        self.handle.close();
        let _ = self.thread.join();
    }
}

/// The logger's format for `--log-format`.
fn log_format(format: LogFormat) -> crate::logging::Format {
    use crate::logging::Format;
    match format {
        LogFormat::Auto => Format::Auto,
        LogFormat::Plain => Format::Plain,
        LogFormat::Journal => Format::Journal,
        LogFormat::C => Format::C,
    }
}

/// The start of `read` and `write` (subcommand `name`): logging, then a
/// connection and handshake with the server of `conn` (from `--bind` if
/// given), trying each address of a host name in turn. Returns the client
/// and the server's address, for error messages.
///
/// An IP address without `--port`, or a port with a URI or socket path, is
/// a usage error (exit 2).
///
/// # Errors
///
/// A host name that cannot be looked up, a failed connection or handshake.
pub(crate) fn connect(
    name: &str,
    conn: &ConnectArgs,
    global: GlobalArgs,
) -> Result<(NbdClient, Target)> {
    init_logging(global, "");
    let server = server(conn.addr.clone(), conn.port, ["--addr", "--port"], || {
        subcommand(name)
    });
    let opts = ConnectOptions {
        bind: conn.bind,
        export_name: server.export_name.clone(),
        tls: tls::client(&conn.tls, &server, || subcommand(name)),
        ..ConnectOptions::default()
    };
    let mut last = None;
    for target in targets(&server)? {
        match NbdClient::connect(target.clone(), &opts) {
            Ok(client) => return Ok((client, target)),
            // Another address of the same host may answer.
            Err(e) if e.kind() == ErrorKind::Connect => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no address for {server}"), Into::into))
}

/// The server and export named by an address option and its port option
/// (`flags`: their long names, for the message). A usage error (exit 2,
/// shown with `usage`'s help) when they do not fit together.
pub(crate) fn server(
    addr: ServerAddr,
    port: Option<u16>,
    flags: [&str; 2],
    usage: impl FnOnce() -> clap::Command,
) -> NbdUri {
    let [addr_flag, port_flag] = flags;
    addr.with_port(port).unwrap_or_else(|e| {
        let (kind, message) = match e {
            PortError::Missing => (
                clap::error::ErrorKind::MissingRequiredArgument,
                format!(
                    "{port_flag} is required when {addr_flag} is an IP address (not a URI or a UNIX socket path)"
                ),
            ),
            PortError::Unexpected => (
                clap::error::ErrorKind::ArgumentConflict,
                format!("{port_flag} cannot be used when {addr_flag} is a URI or a UNIX socket path"),
            ),
        };
        usage().error(kind, message).exit()
    })
}

/// `mirror`'s destination as the control protocol's ADDR and PORT: an IP
/// address and a port as flexnbd-c sends them, or (for a UNIX socket or a
/// named export) the URI and 0; and the IP address connected to, if TCP.
/// A host name becomes its first address.
///
/// # Errors
///
/// A host name that cannot be looked up.
pub(crate) fn mirror_destination(
    addr: ServerAddr,
    port: Option<u16>,
    tls: bool,
) -> Result<([String; 2], Option<IpAddr>)> {
    let mut server = server(addr, port, ["--addr", "--port"], || subcommand("mirror"));
    if tls || server.tls.is_some() {
        // The server checks the destination's certificate for the name
        // given here, which it will not see otherwise (it gets an address).
        let mut settings = server.tls.take().unwrap_or_default();
        if let Transport::Tcp {
            host: Host::Name(name),
            ..
        } = &server.transport
        {
            settings.hostname.get_or_insert_with(|| name.clone());
        }
        server.tls = Some(settings);
    }
    let target = targets(&server)?.remove(0);
    let Target::Tcp(addr) = target else {
        return Ok(([server.encode(), "0".to_owned()], None));
    };
    if server.export_name.is_empty() && server.tls.is_none() {
        let lines = [addr.ip().to_string(), addr.port().to_string()];
        return Ok((lines, Some(addr.ip())));
    }
    // The server does not look names up: send the address.
    server.transport = Transport::Tcp {
        host: Host::Ip(addr.ip()),
        port: addr.port(),
    };
    Ok(([server.encode(), "0".to_owned()], Some(addr.ip())))
}

/// The `flexnbd` subcommand `name`, for a usage error of its own.
pub(crate) fn subcommand(name: &str) -> clap::Command {
    let mut cli = Cli::command();
    cli.build();
    cli.find_subcommand(name).cloned().unwrap_or(cli)
}

/// The addresses to try for `server`: a host name's, in the resolver's order.
///
/// # Errors
///
/// The host name cannot be looked up, or has no address.
pub(crate) fn targets(server: &NbdUri) -> Result<Vec<Target>> {
    Ok(match &server.transport {
        Transport::Tcp {
            host: Host::Ip(ip),
            port,
        } => vec![Target::Tcp(SocketAddr::new(*ip, *port))],
        Transport::Tcp {
            host: Host::Name(name),
            port,
        } => {
            let addrs: Vec<Target> = (name.as_str(), *port)
                .to_socket_addrs()
                .with_context(|| format!("cannot look up {name}"))?
                .map(Target::Tcp)
                .collect();
            if addrs.is_empty() {
                bail!("{name} has no address");
            }
            addrs
        }
        Transport::Unix(path) => vec![Target::Unix(path.clone())],
    })
}

/// The copy loop of `read` and `write`: walks `range` in pieces of at most
/// `max_request` bytes, calling `piece(offset, buf)` with one buffer, reused,
/// cut to each piece's length. Pieces go one at a time and in order, so a
/// failure stops the copy where it happened.
///
/// # Errors
///
/// `"{what} chunk too large"` when a piece cannot be held in memory, or
/// whatever `piece` fails with.
pub(crate) fn copy_in_pieces(
    range: RangeArgs,
    max_request: u32,
    what: &str,
    mut piece: impl FnMut(u64, &mut [u8]) -> Result<()>,
) -> Result<()> {
    let (from, size) = (range.from, range.size);
    let chunk = usize::try_from(size.min(u64::from(max_request)))
        .with_context(|| format!("{what} chunk too large"))?;
    let mut buf = vec![0u8; chunk];
    let mut done = 0u64;
    while done < size {
        // A remainder too large for usize is larger than a chunk.
        let n = usize::try_from(size - done).map_or(chunk, |rest| rest.min(chunk));
        piece(from + done, &mut buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Prints a control reply's text as flexnbd-c's clients do and returns its exit code.
///
/// The text goes to stdout for code 0 and to stderr otherwise; the exit
/// code is the reply's code. Shared by the control-socket subcommands.
///
/// # Errors
///
/// Writing to stdout fails (a closed pipe included).
pub(crate) fn report(reply: &Reply) -> Result<ExitCode> {
    if reply.code == 0 {
        writeln!(std::io::stdout().lock(), "{}", reply.text)?;
        Ok(ExitCode::Success)
    } else {
        // As with log lines, a failure to write to stderr has nowhere to be reported.
        let _ = writeln!(std::io::stderr().lock(), "{}", reply.text);
        Ok(ExitCode::Code(reply.code))
    }
}
