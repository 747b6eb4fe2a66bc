//! `flexnbd listen`: receive a migration.
//!
//! The same server as `serve`, started without control and for one client
//! at a time. The migration's source writes the data, then sends
//! DISCONNECT: control has arrived, the server stops and the process exits
//! 0. A signal before that exits 1, leaving whatever was written.

use std::net::SocketAddr;

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
        max_clients: 1,
        killswitch: None,
        listen_mode: true,
        acl: Acl::new(args.acl, args.default_deny),
    };
    let addr = SocketAddr::new(args.listen.addr, args.listen.port);
    super::serve::run_server(&args.file, addr, args.sock, config, global)
}
