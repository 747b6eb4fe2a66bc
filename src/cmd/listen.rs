//! `flexnbd listen`: receive a migration.
//!
//! The same server as `serve`, started without control and for one client
//! at a time. The migration's source writes the data, then sends
//! DISCONNECT: control has arrived, the server stops and the process exits
//! 0. A signal before that exits 1, leaving whatever was written, and logs
//! why (`stopped by SIGTERM before the migration completed ...`): from the
//! migration's point of view the destination was stopped before it got
//! the data, so a systemd unit shows it failed, with that line as reason.
//!
//! With `--serve-after-handover` control arriving does not stop it: the
//! same listener and control socket go on serving the file as `serve`
//! does, so clients (behind `flexnbd proxy`, say) are back without waiting
//! for a `serve` to start.
//!
//! With `--oldstyle` every write is made durable (`fdatasync`) before its
//! reply, as flexnbd-c's destination does: a flexnbd-c source never sends
//! FLUSH, and with `--unlink` deletes its copy before the DISCONNECT.

use anyhow::Result;

use crate::cli::{GlobalArgs, ListenArgs};
use crate::exit::ExitCode;
use crate::net::Acl;
use crate::server::ServerConfig;

/// Runs `listen`.
///
/// # Errors
///
/// As `serve`: the file, the address or the control socket.
pub fn run(args: ListenArgs, global: GlobalArgs) -> Result<ExitCode> {
    let config = ServerConfig {
        oldstyle: args.oldstyle,
        read_only: false,
        // Until control arrives the server takes one client at a time; this
        // is the limit once it serves (--serve-after-handover).
        max_clients: usize::try_from(args.max_clients).unwrap_or(usize::MAX),
        killswitch: None,
        listen_mode: true,
        serve_after_handover: args.serve_after_handover,
        acl: Acl::new(args.acl, args.server.default_deny),
        // An old-style source is flexnbd-c's mirror: plain WRITEs, then (with
        // --unlink) it deletes its file and sends DISCONNECT, and never a
        // FLUSH. Its own destination syncs every write before the reply, so
        // must we. Newstyle sources (ours) FLUSH before the handover.
        limits: super::serve::limits(&args.server.limits),
        export_name: args.server.export_name,
        sync_writes: args.oldstyle,
        tls: super::tls::server_offer(&args.server.tls, args.oldstyle, || {
            super::subcommand("listen")
        })?,
        hash_ahead: !args.no_hash_ahead,
    };
    let startup = super::serve::Startup {
        file: args.file,
        listen: args.listen,
        sock: args.sock,
        control_mode: args.server.control_mode,
        pid_file: args.server.pid_file,
        outgoing_tls: super::tls::outgoing(&args.server.tls, false, || super::subcommand("listen")),
    };
    super::serve::run_server(startup, config, global)
}
