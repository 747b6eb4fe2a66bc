//! `flexnbd serve`: export a file over NBD until told to stop (or migrated away).
//!
//! Also the runner shared with `listen`, which is the same server started
//! without control.
//!
//! Under systemd the listener may come from socket activation (see
//! [`crate::sd`]); the server then reports `READY=1` once the control
//! socket exists, the migration's progress as `STATUS=` lines every
//! second while one runs, and `STOPPING=1` as it stops. Every ending logs
//! one line saying why, whatever the verbosity (`-q` silences the
//! successful ones).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use log::Level;

use super::SignalThread;
use crate::backing::Backing;
use crate::cli::{GlobalArgs, LimitArgs, ListenAddr, ListenAddrArgs, ServeArgs};
use crate::control::{ControlServer, DEFAULT_REQUEST_TIMEOUT};
use crate::exit::ExitCode;
use crate::mirror::Controller;
use crate::nbd::Listener;
use crate::nbd::stream::bind_unix;
use crate::net::Acl;
use crate::sd::Activated;
use crate::server::{KILLSWITCH_TIMEOUT, Limits, Server, ServerConfig};
use crate::status::{MigrationStatus, Outcome, Phase};

/// How long a source keeps its control socket after handing a migration
/// over, until a `status` has reported the outcome (for `mirror --wait`).
const LINGER_AFTER_MIGRATION: Duration = Duration::from_millis(500);

/// How often the migration's progress goes to systemd as `STATUS=`.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Where and how a server (`serve` or `listen`) starts.
pub(crate) struct Startup {
    /// The file to serve.
    pub(crate) file: PathBuf,
    /// `-l/-p`, unless systemd passes the listener.
    pub(crate) listen: ListenAddrArgs,
    /// The control socket's path.
    pub(crate) sock: Option<PathBuf>,
    /// The control socket's permission bits (`--control-mode`).
    pub(crate) control_mode: u32,
    /// Where to write the process id once serving.
    pub(crate) pid_file: Option<PathBuf>,
    /// The TLS of the migrations it starts.
    pub(crate) outgoing_tls: crate::mirror::OutgoingTls,
}

/// Serves the file until SIGINT, SIGTERM or SIGQUIT, or a completed migration.
///
/// # Errors
///
/// The file cannot be opened, the address cannot be bound, or the control
/// socket cannot be created.
pub fn run(args: ServeArgs, global: GlobalArgs) -> Result<ExitCode> {
    let config = ServerConfig {
        oldstyle: args.oldstyle,
        read_only: args.read_only,
        max_clients: usize::try_from(args.max_clients).unwrap_or(usize::MAX),
        killswitch: args.killswitch.then_some(KILLSWITCH_TIMEOUT),
        listen_mode: false,
        serve_after_handover: false,
        acl: Acl::new(args.acl, args.server.default_deny),
        limits: limits(&args.server.limits),
        export_name: args.server.export_name,
        sync_writes: false,
        tls: super::tls::server_offer(&args.server.tls, args.oldstyle, || {
            super::subcommand("serve")
        })?,
        hash_ahead: false,
    };
    let startup = Startup {
        file: args.file,
        listen: args.listen,
        sock: args.sock,
        control_mode: args.server.control_mode,
        pid_file: args.server.pid_file,
        outgoing_tls: super::tls::outgoing(&args.server.tls, args.mirror_tls, || {
            super::subcommand("serve")
        }),
    };
    run_server(startup, config, global)
}

/// The server's connection limits from the command line.
pub(crate) fn limits(args: &LimitArgs) -> Limits {
    let count = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    Limits {
        handshake_timeout: args.handshake_timeout,
        max_handshakes: count(args.max_handshakes),
        max_per_address: args.max_clients_per_address.map(count),
        max_inflight: args.max_inflight,
        stall_timeout: args.stall_timeout,
        handover_grace: args.handover_grace,
        busy_poll: args.busy_poll,
    }
}

/// Runs a server (`serve` or `listen`) to the end and returns its exit status.
///
/// Start-up order follows flexnbd-c where it matters to scripts: the NBD
/// listener is bound before the control socket appears. Unlike flexnbd-c
/// the file is opened first, so a missing file fails at once. The pid file
/// and systemd's `READY=1` come last, once everything is up.
///
/// # Errors
///
/// As [`run`], and a socket-activation or pid-file failure.
pub(crate) fn run_server(
    startup: Startup,
    config: ServerConfig,
    global: GlobalArgs,
) -> Result<ExitCode> {
    // First, before any thread starts: taking the listener unsets LISTEN_FDS.
    let activated = crate::sd::take_listener()?;
    // Handlers before anything slow (a bind retried at boot): a SIGTERM
    // during start-up waits for the signal thread instead of killing us
    // silently.
    let signals = SignalThread::install()?;
    let file_name = startup.file.display().to_string();
    super::init_logging(global, &file_name);
    let listen_mode = config.listen_mode;
    let serve_after_handover = config.serve_after_handover;
    let backing = Backing::open(&startup.file, config.read_only)
        .with_context(|| format!("cannot open {file_name}"))?;
    if activated.is_some() {
        log::info!("Using the socket-activated listener on fd 3");
    }
    let listener = match activated {
        Some(Activated::Tcp(l)) => Listener::Tcp(l),
        // systemd owns the socket file: an empty path is never removed
        // (`Server::run` removes the path of the UNIX listeners it is given).
        Some(Activated::Unix(l)) => Listener::Unix(l, PathBuf::new()),
        None => match listen_on(&startup.listen)? {
            Listen::Tcp(addr) => {
                let l = Listener::bind_tcp(addr).with_context(|| format!("cannot bind {addr}"))?;
                Listener::Tcp(l)
            }
            // Errors name the socket.
            Listen::Unix(path) => {
                let l = bind_unix(&path, startup.listen.socket_mode, 128, "NBD socket")?;
                log::info!("Listening on UNIX socket {}", path.display());
                Listener::Unix(l, path)
            }
        },
    };
    let server = Server::new(backing, config).context("cannot start the server")?;
    let controller = Controller::with_tls(server.clone(), startup.outgoing_tls.clone());
    if !listen_mode {
        log::info!("Serving file {file_name}");
    }

    let stop_signal: Arc<OnceLock<i32>> = Arc::default();
    let signal_controller = controller.clone();
    let signal_seen = stop_signal.clone();
    let signal_thread = SignalThread::start(signals, move |sig| {
        log::info!("signal {sig} received, shutting down");
        let _ = signal_seen.set(sig);
        signal_controller.signal();
    })?;

    // The control socket appears only once the NBD listener is bound, as in
    // flexnbd-c. Its errors already name the socket, so they get no context.
    let control = match &startup.sock {
        Some(path) => Some(ControlServer::start_with_options(
            path,
            controller.clone(),
            DEFAULT_REQUEST_TIMEOUT,
            startup.control_mode,
        )?),
        None => None,
    };
    let pid_file = startup
        .pid_file
        .as_deref()
        .map(PidFile::write)
        .transpose()?;
    let serving = if listen_mode {
        format!("waiting for a migration into {file_name}")
    } else {
        format!("serving {file_name}")
    };
    crate::sd::ready(&serving);
    // Once a migration arrives, `listen --serve-after-handover` serves.
    let served = serve_after_handover.then(|| format!("serving {file_name}"));
    let (stop_status, status_thread) = if crate::sd::notifying() {
        let (tx, rx) = mpsc::channel::<()>();
        let status_controller = controller.clone();
        let thread = std::thread::Builder::new()
            .name("sd-status".into())
            .spawn(move || report_progress(&status_controller, serving, served, &rx))
            .context("cannot start the status thread")?;
        (Some(tx), Some(thread))
    } else {
        (None, None)
    };

    let mut result = server.run(listener).context("the NBD listener failed");
    crate::sd::stopping("stopping");
    drop(stop_status);
    if let Some(thread) = status_thread {
        let _ = thread.join();
    }
    if listen_mode && server.has_control() && result.is_ok() {
        // A migration arrived: the data is ours alone now, so make it durable
        // before exiting 0 (flexnbd-c synced every write; an old-style source
        // sends no FLUSH).
        result = server
            .backing()
            .sync()
            .with_context(|| format!("cannot sync {file_name} after the migration"));
    }
    // A migration that closed the listener finishes its handover before we go.
    controller.wait();
    controller.linger_after_migration(LINGER_AFTER_MIGRATION);
    if let Some(control) = control {
        control.stop();
    }
    signal_thread.finish();
    drop(pid_file);
    result?;
    let success = controller.success();
    let ending = Ending {
        // A destination that served on after the handover ended as a `serve`.
        listen_mode: listen_mode && !(serve_after_handover && server.has_control()),
        has_control: server.has_control(),
        migrated_away: controller.status().last_migration == Some(Outcome::Done),
        signal: stop_signal.get().copied(),
        success,
    };
    let level = if success { Level::Info } else { Level::Error };
    crate::logging::exit_reason(level, format_args!("{}", ending.reason(&file_name)));
    Ok(if success {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}

/// Where `-l/-p` say to listen.
enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Where to listen, from `-l/-p`. An IP address needs `--port`; a socket
/// path takes none (usage errors, exit 2, as clap's own).
fn listen_on(listen: &ListenAddrArgs) -> Result<Listen> {
    let usage = |message: &str| -> ! {
        let mut cmd = <crate::cli::Cli as clap::CommandFactory>::command();
        cmd.error(clap::error::ErrorKind::MissingRequiredArgument, message)
            .exit()
    };
    match (&listen.addr, listen.port) {
        (Some(ListenAddr::Ip(addr)), Some(port)) => Ok(Listen::Tcp(SocketAddr::new(*addr, port))),
        (Some(ListenAddr::Ip(_)), None) => {
            usage("--port is required when --addr is an IP address (not a UNIX socket path)")
        }
        (Some(ListenAddr::Unix(path)), None) => Ok(Listen::Unix(path.clone())),
        (Some(ListenAddr::Unix(_)), Some(_)) => {
            usage("--port cannot be used when --addr is a UNIX socket path")
        }
        // clap lets it out only when LISTEN_FDS is set, but it was not ours.
        (None, _) => {
            bail!("--addr is required: LISTEN_FDS is set but LISTEN_PID is not this process")
        }
    }
}

/// The pid file, removed when dropped.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &Path) -> Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", path.display()))?;
        Ok(PidFile(path.to_owned()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            log::warn!("cannot remove pid file {}: {e}", self.0.display());
        }
    }
}

/// Sends the migration's progress to systemd every [`STATUS_EVERY`] while
/// one runs, and `idle` when none does, until `stop` is dropped. A
/// `listen --serve-after-handover` that gains control says `served` once,
/// and from then on it is the idle line.
fn report_progress(
    controller: &Controller,
    mut idle: String,
    served: Option<String>,
    stop: &mpsc::Receiver<()>,
) {
    let mut was_migrating = false;
    let mut served = served.filter(|_| !controller.status().has_control);
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(STATUS_EVERY) {
        let status = controller.status();
        if status.has_control
            && let Some(line) = served.take()
        {
            crate::sd::status(&line);
            idle = line;
        }
        match &status.migration {
            Some(m) => crate::sd::status(&progress_line(status.size, m)),
            None if was_migrating => {
                let last = status.last_migration.map_or("", Outcome::as_str);
                crate::sd::status(&format!("{idle}; last migration {last}"));
            }
            None => {}
        }
        was_migrating = status.migration.is_some();
    }
}

/// A migration's progress in one line, for `systemctl status`.
fn progress_line(size: u64, m: &MigrationStatus) -> String {
    use indicatif::HumanBytes;
    let phase = m.phase.map_or("running", Phase::as_str);
    let done = size.saturating_sub(m.bytes_left);
    format!(
        "migrating ({phase}): {}/{} done, {} left, {}/s, {} sent, {} retries",
        HumanBytes(done),
        HumanBytes(size),
        HumanBytes(m.bytes_left),
        HumanBytes(m.speed),
        HumanBytes(m.bytes_sent.unwrap_or(0)),
        m.retries.unwrap_or(0)
    )
}

/// How a server's run ended, for its last log line.
#[derive(Debug, Clone, Copy)]
struct Ending {
    listen_mode: bool,
    has_control: bool,
    migrated_away: bool,
    signal: Option<i32>,
    success: bool,
}

impl Ending {
    /// One line saying why the server stopped.
    fn reason(self, file: &str) -> String {
        let by = match self.signal {
            Some(sig) => format!(
                "stopped by {}",
                signal_hook::low_level::signal_name(sig).unwrap_or("a signal")
            ),
            None => "stopped".to_owned(),
        };
        match self {
            Ending {
                listen_mode: true,
                has_control: true,
                ..
            } => format!("the migration into {file} completed: it has control, exiting"),
            Ending {
                listen_mode: true, ..
            } => format!(
                "{by} before the migration completed: {file} holds an incomplete copy (exit 1)"
            ),
            Ending {
                migrated_away: true,
                ..
            } => format!("{file} was migrated away: the destination has control, exiting"),
            Ending { success: false, .. } => {
                format!("{by} while mirroring: the migration was abandoned (exit 1)")
            }
            Ending { .. } => by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal_hook::consts::{SIGINT, SIGTERM};

    fn ending(listen_mode: bool, has_control: bool, signal: Option<i32>) -> Ending {
        Ending {
            listen_mode,
            has_control,
            migrated_away: false,
            signal,
            success: has_control,
        }
    }

    #[test]
    fn every_ending_says_why() {
        let file = "disk.img";
        assert_eq!(
            ending(true, false, Some(SIGTERM)).reason(file),
            "stopped by SIGTERM before the migration completed: disk.img holds an incomplete copy (exit 1)"
        );
        assert_eq!(
            ending(true, true, None).reason(file),
            "the migration into disk.img completed: it has control, exiting"
        );
        assert_eq!(
            ending(false, true, Some(SIGINT)).reason(file),
            "stopped by SIGINT"
        );
        let abandoned = Ending {
            success: false,
            ..ending(false, true, Some(SIGTERM))
        };
        assert_eq!(
            abandoned.reason(file),
            "stopped by SIGTERM while mirroring: the migration was abandoned (exit 1)"
        );
        let migrated = Ending {
            migrated_away: true,
            ..ending(false, false, None)
        };
        assert_eq!(
            migrated.reason(file),
            "disk.img was migrated away: the destination has control, exiting"
        );
    }

    #[test]
    fn progress_fits_one_status_line() {
        let m = MigrationStatus {
            speed: 5 << 20,
            bytes_left: 16 << 20,
            bytes_sent: Some(48 << 20),
            retries: Some(1),
            phase: Some(Phase::Copying),
            ..MigrationStatus::default()
        };
        assert_eq!(
            progress_line(64 << 20, &m),
            "migrating (copying): 48.00 MiB/64.00 MiB done, 16.00 MiB left, 5.00 MiB/s, 48.00 MiB sent, 1 retries"
        );
    }
}
