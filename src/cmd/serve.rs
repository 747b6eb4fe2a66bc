//! `flexnbd serve`: export a file over NBD until told to stop (or migrated away).
//!
//! Also the runner shared with `listen`, which is the same server started
//! without control.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::backing::Backing;
use crate::cli::{GlobalArgs, ServeArgs};
use crate::control::{ControlServer, DEFAULT_REQUEST_TIMEOUT};
use crate::exit::ExitCode;
use crate::mirror::Controller;
use crate::net::Acl;
use crate::server::{KILLSWITCH_TIMEOUT, Server, ServerConfig, bind_listener};

/// How long a source keeps its control socket after handing a migration
/// over, until a `status` has reported the outcome (for `mirror --wait`).
const LINGER_AFTER_MIGRATION: Duration = Duration::from_millis(500);

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
        acl: Acl::new(args.acl, args.default_deny),
        sync_writes: false,
    };
    let addr = SocketAddr::new(args.listen.addr, args.listen.port);
    let control = args.sock.map(|path| (path, args.control_mode));
    run_server(&args.file, addr, control, config, global)
}

/// Runs a server (`serve` or `listen`) to the end and returns its exit status.
///
/// Start-up order follows flexnbd-c where it matters to scripts: the NBD
/// listener is bound before the control socket appears. Unlike flexnbd-c
/// the file is opened first, so a missing file fails at once.
///
/// # Errors
///
/// As [`run`].
pub(crate) fn run_server(
    file: &Path,
    addr: SocketAddr,
    sock: Option<(PathBuf, u32)>,
    config: ServerConfig,
    global: GlobalArgs,
) -> Result<ExitCode> {
    let file_name = file.display().to_string();
    crate::logging::init(
        crate::logging::level_for(global.verbose, global.quiet),
        &file_name,
    );
    let listen_mode = config.listen_mode;
    let backing = Backing::open(file, config.read_only)
        .with_context(|| format!("cannot open {file_name}"))?;
    let listener = bind_listener(addr).with_context(|| format!("cannot bind {addr}"))?;
    let server = Server::new(backing, config).context("cannot start the server")?;
    let controller = Controller::new(server.clone());
    if !listen_mode {
        log::info!("Serving file {file_name}");
    }

    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGQUIT]).context("cannot install signal handlers")?;
    let signal_handle = signals.handle();
    let signal_controller = controller.clone();
    let signal_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig} received, shutting down");
                signal_controller.signal();
            }
        })
        .context("cannot start the signal thread")?;

    // The control socket appears only once the NBD listener is bound, as in
    // flexnbd-c. Its errors already name the socket, so they get no context.
    // `mode` is its permission bits (--control-mode).
    let control = match &sock {
        Some((path, mode)) => Some(ControlServer::start_with_options(
            path,
            controller.clone(),
            DEFAULT_REQUEST_TIMEOUT,
            *mode,
        )?),
        None => None,
    };

    let mut result = server.run(listener).context("the NBD listener failed");
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
    signal_handle.close();
    let _ = signal_thread.join();
    result?;
    Ok(if controller.success() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
