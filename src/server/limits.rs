//! The bounds a server keeps on its clients, and their defaults.

use std::time::Duration;

/// Bounds that keep one client, or many silent ones, from locking others out.
#[derive(Debug, Clone)]
pub struct Limits {
    /// How long a client may take over each step of the handshake.
    pub handshake_timeout: Duration,
    /// Most connections still in their handshake at once. When full, a new
    /// connection closes the one that has been in its handshake longest, so
    /// silent connections cannot keep a real client out.
    pub max_handshakes: usize,
    /// Most connections from one address at once (handshake and
    /// transmission); `None` for no limit.
    pub max_per_address: Option<usize>,
    /// Most bytes of request payloads and reply buffers the whole server
    /// holds at once; a connection that would go over waits, not reading.
    pub max_inflight: u64,
    /// How long a client may pause in the middle of sending a payload, or
    /// leave a reply unread, before its connection is closed (and what it
    /// held freed).
    pub stall_timeout: Duration,
    /// At a migration's handover, how long connected clients have to finish
    /// the requests they sent before their connections are closed.
    pub handover_grace: Duration,
    /// How long a connection's thread polls for the next request of a
    /// client at queue depth 1 before it sleeps (zero: never); see
    /// `server::busy_poll`.
    pub busy_poll: Duration,
}

/// The default for [`Limits::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default for [`Limits::max_handshakes`].
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;
/// The default for [`Limits::max_inflight`].
pub const DEFAULT_MAX_INFLIGHT: u64 = 256 << 20;
/// The default for [`Limits::handover_grace`].
pub const DEFAULT_HANDOVER_GRACE: Duration = Duration::from_secs(1);
/// The default for [`Limits::busy_poll`].
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(100);
/// The default for [`Limits::stall_timeout`].
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_per_address: None,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            handover_grace: DEFAULT_HANDOVER_GRACE,
            busy_poll: DEFAULT_BUSY_POLL,
        }
    }
}

/// Most bytes of idle payload buffers all connections keep for reuse.
pub(crate) const MAX_POOLED_TOTAL: u64 = 64 << 20;
