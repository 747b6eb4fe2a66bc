//! How a server behaves: [`ServerConfig`], set from the command line.

use std::time::Duration;

use super::Limits;
use crate::nbd::handshake::TlsOffer;
use crate::net::Acl;

/// How a server behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Speak flexnbd-c's old-style handshake instead of fixed newstyle.
    pub oldstyle: bool,
    /// Refuse writes, trims and zeroes with EPERM.
    pub read_only: bool,
    /// Most clients at once; further connections are closed at once.
    pub max_clients: usize,
    /// Drop a client whose request makes no progress for this long.
    pub killswitch: Option<Duration>,
    /// `listen` mode: start without control, serving one client at a time; a
    /// client's DISCONNECT hands control over and stops the server.
    pub listen_mode: bool,
    /// With `listen_mode`: control arriving does not stop the server, which
    /// goes on serving the file on the same listener as `serve` does (up to
    /// `max_clients`, writes no longer synced one by one).
    pub serve_after_handover: bool,
    /// The access control list at start-up.
    pub acl: Acl,
    /// Make every write durable before its reply, as flexnbd-c's server does:
    /// for an old-style `listen`, whose source never sends FLUSH.
    pub sync_writes: bool,
    /// Bounds on what connections may hold before and during transmission.
    pub limits: Limits,
    /// The export's name (newstyle): `None` serves the file under any name.
    pub export_name: Option<String>,
    /// TLS offered or required to clients (newstyle only).
    pub tls: Option<TlsOffer>,
    /// With `listen_mode` (newstyle) over a file that holds data: hash it
    /// from the start, for a source's incremental comparison (`server::hash_ahead`).
    pub hash_ahead: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            oldstyle: false,
            read_only: false,
            max_clients: 1024,
            killswitch: None,
            listen_mode: false,
            serve_after_handover: false,
            acl: Acl::default(),
            sync_writes: false,
            limits: Limits::default(),
            export_name: None,
            tls: None,
            hash_ahead: false,
        }
    }
}
