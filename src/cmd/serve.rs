//! `flexnbd serve`: export a file over NBD until told to stop.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::backing::Backing;
use crate::cli::{GlobalArgs, ServeArgs};
use crate::control::ControlServer;
use crate::exit::ExitCode;
use crate::net::Acl;
use crate::server::{KILLSWITCH_TIMEOUT, Server, ServerConfig, bind_listener};

/// Serves the file until SIGINT, SIGTERM or SIGQUIT.
///
/// Start-up order follows flexnbd-c where it matters to scripts: the NBD
/// listener is accepting before the control socket appears. Unlike
/// flexnbd-c the file is opened first, so a missing file fails at once.
///
/// # Errors
///
/// The file cannot be opened, the address cannot be bound, or the control
/// socket cannot be created.
pub fn run(args: ServeArgs, global: GlobalArgs) -> Result<ExitCode> {
    let file_name = args.file.display().to_string();
    crate::logging::init(
        crate::logging::level_for(global.verbose, global.quiet),
        &file_name,
    );
    let backing = Backing::open(&args.file, args.read_only)
        .with_context(|| format!("cannot open {file_name}"))?;
    let addr = SocketAddr::new(args.listen.addr, args.listen.port);
    let listener = bind_listener(addr).with_context(|| format!("cannot bind {addr}"))?;
    let config = ServerConfig {
        oldstyle: args.oldstyle,
        read_only: args.read_only,
        max_clients: usize::try_from(args.max_clients).unwrap_or(usize::MAX),
        killswitch: args.killswitch.then_some(KILLSWITCH_TIMEOUT),
        listen_mode: false,
        acl: Acl::new(args.acl, args.default_deny),
    };
    let server = Server::new(backing, config).context("cannot start the server")?;
    log::info!("Serving file {file_name}");

    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGQUIT]).context("cannot install signal handlers")?;
    let signal_handle = signals.handle();
    let signal_server = server.clone();
    let signal_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig} received, shutting down");
                signal_server.shutdown();
            }
        })
        .context("cannot start the signal thread")?;

    // The control socket appears only once the NBD listener is bound, as in
    // flexnbd-c. Its errors already name the socket, so they get no context.
    let control = match &args.sock {
        Some(path) => Some(ControlServer::start(path, server.clone())?),
        None => None,
    };

    let result = server.run(listener).context("the NBD listener failed");
    if let Some(control) = control {
        control.stop();
    }
    signal_handle.close();
    let _ = signal_thread.join();
    result?;
    Ok(if server.has_control() {
        ExitCode::Success
    } else {
        ExitCode::Failure
    })
}
