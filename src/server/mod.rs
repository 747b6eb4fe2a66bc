//! The NBD server: the accept loop, access control, client bookkeeping and shutdown.
//!
//! [`Server::run`] takes a listener bound by the caller (so tests bind port
//! 0) and serves until [`Server::shutdown`] is called: it then stops
//! accepting, closes the listener, asks every client to stop reading (each
//! finishes the requests it already has, replies, and closes) and returns
//! once all clients are gone. Each client runs on its own thread
//! (`conn.rs`), with a few worker threads of its own for requests in flight.
//!
//! The server is controlled from other threads through `&self` methods
//! ([`Server::status`], [`Server::set_acl`], [`Server::shutdown`]); shared
//! state is the ACL behind a lock, the client table, and atomics.

use std::collections::HashMap;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::backing::Backing;
use crate::nbd::{Listener, Peer, Stream};
use crate::net::{Acl, AclEntry};
use crate::proto::types::TransmissionFlags;
use crate::sys::{ByteBudget, RateLimit, Trigger, monotonic_ms};

mod busy_poll;
mod config;
mod conn;
pub mod dirty;
pub mod hash_ahead;
mod limits;

pub use config::ServerConfig;
pub use limits::*;

use crate::status::Status;
use dirty::Tracker;

/// How long a request may take before the killswitch drops its client (flexnbd-c: 120 s).
pub const KILLSWITCH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopping server waits for its clients to finish the requests
/// they have sent before it closes their connections.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A connected client, as the server keeps track of it.
#[derive(Debug)]
struct ClientSlot {
    peer: Peer,
    /// A handle on the socket, used to stop the client from another thread.
    socket: Stream,
    /// What the connection's threads and the server share.
    shared: Arc<conn::Shared>,
    /// When the connection was accepted, if it is still in its handshake.
    handshaking_since: Option<Instant>,
    /// Closed to make room for a newer handshake.
    evicted: AtomicBool,
}

/// An NBD server over one backing file.
#[derive(Debug)]
pub struct Server {
    backing: Arc<Backing>,
    config: ServerConfig,
    acl: RwLock<Acl>,
    clients: Mutex<HashMap<u64, ClientSlot>>,
    clients_changed: Condvar,
    next_client: AtomicU64,
    clients_allowed: AtomicBool,
    has_control: AtomicBool,
    stop: Trigger,
    /// Set once the listener is closed: no client can be served after it.
    closed: Trigger,
    /// Dirty tracking of a running migration, told about every completed write.
    tracker: RwLock<Option<Arc<Tracker>>>,
    /// Payload and reply bytes held for all clients ([`Limits::max_inflight`]).
    memory: ByteBudget,
    /// Bytes of idle buffers kept by all connections' pools.
    pooled: AtomicU64,
    /// Bounds the warnings failed TLS handshakes cause, over all
    /// connections: each is a new connection, so a per-client limit
    /// would not stop a scanner from flooding the log.
    tls_warnings: RateLimit,
    /// `listen` over a file that holds data: its hashes, computed ahead
    /// by [`Server::run`]'s threads for the hash extension's requests.
    hash_ahead: Option<Arc<hash_ahead::HashAhead>>,
    /// How many connections' threads may busy-poll at once.
    poll_slots: busy_poll::PollSlots,
}

impl Server {
    /// A server for `backing`; nothing happens until [`Server::run`].
    ///
    /// # Errors
    ///
    /// The shutdown trigger's pipe could not be created.
    pub fn new(backing: Backing, config: ServerConfig) -> io::Result<Arc<Self>> {
        let hash_ahead = (config.hash_ahead
            && config.listen_mode
            && !config.oldstyle
            && conn::offers_hashes_of_data(&backing))
        .then(|| hash_ahead::HashAhead::new(&backing, conn::hash_block_size()))
        .flatten()
        .map(Arc::new);
        Ok(Arc::new(Server {
            backing: Arc::new(backing),
            acl: RwLock::new(config.acl.clone()),
            has_control: AtomicBool::new(!config.listen_mode),
            clients: Mutex::new(HashMap::new()),
            clients_changed: Condvar::new(),
            next_client: AtomicU64::new(1),
            clients_allowed: AtomicBool::new(true),
            stop: Trigger::new()?,
            closed: Trigger::new()?,
            tracker: RwLock::new(None),
            memory: ByteBudget::new(config.limits.max_inflight),
            pooled: AtomicU64::new(0),
            tls_warnings: crate::nbd::handshake::tls_warning_limit(),
            hash_ahead,
            poll_slots: busy_poll::PollSlots::for_this_machine(),
            config,
        }))
    }

    /// The backing file.
    pub fn backing(&self) -> &Arc<Backing> {
        &self.backing
    }

    /// The transmission flags this server advertises.
    pub fn transmission_flags(&self) -> TransmissionFlags {
        use TransmissionFlags as F;
        let mut flags = if self.config.oldstyle {
            // Byte-compatible with flexnbd-c (13); the other commands still work if sent.
            F::FLEXNBD_C
        } else {
            F::HAS_FLAGS
                | F::SEND_FLUSH
                | F::SEND_FUA
                | F::SEND_DF
                | F::CAN_MULTI_CONN
                | F::SEND_CACHE
        };
        if self.config.read_only {
            flags |= F::READ_ONLY;
        } else if !self.config.oldstyle {
            flags |= F::SEND_TRIM | F::SEND_WRITE_ZEROES | F::SEND_FAST_ZERO;
        }
        flags
    }

    /// Whether the server has control of the data (false in `listen` mode before the handover).
    pub fn has_control(&self) -> bool {
        self.has_control.load(Ordering::SeqCst)
    }

    /// A snapshot for the `status` control command.
    pub fn status(&self) -> Status {
        Status {
            pid: std::process::id(),
            size: self.backing.size(),
            clients_allowed: self.clients_allowed.load(Ordering::SeqCst),
            num_clients: self.lock_clients().len() as u64,
            has_control: self.has_control(),
            migration: None,
            last_migration: None,
            last_verified: false,
        }
    }

    /// Replaces the ACL (keeping the start-up default-deny) and disconnects
    /// clients it no longer allows, once their request in progress is done.
    pub fn set_acl(&self, entries: Vec<AclEntry>) {
        let acl = {
            let mut guard = self.acl.write().unwrap_or_else(PoisonError::into_inner);
            *guard = guard.with_entries(entries);
            guard.clone()
        };
        log::info!("ACL set");
        for (id, slot) in self.lock_clients().iter() {
            if slot.peer.ip().is_some_and(|ip| !acl.allows(ip)) {
                log::info!(
                    "client {id} at {} is no longer allowed by the ACL",
                    slot.peer
                );
                // Stop reading: the client finishes what it has, replies, and closes.
                let _ = slot.socket.shutdown(Shutdown::Read);
            }
        }
    }

    /// Asks [`Server::run`] to stop; returns at once.
    pub fn shutdown(&self) {
        self.stop.trigger();
    }

    /// Whether [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.stop.is_triggered()
    }

    /// Whether the listener has been closed (the server is stopping or stopped).
    pub fn is_closed(&self) -> bool {
        self.closed.is_triggered()
    }

    /// Waits up to `timeout` for the listener to be closed; returns whether it is.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        self.closed.wait_timeout(timeout)
    }

    /// Allows or refuses new connections (refused during a migration's handover).
    pub fn set_clients_allowed(&self, allowed: bool) {
        self.clients_allowed.store(allowed, Ordering::SeqCst);
    }

    /// Asks every connected client to stop: each finishes the requests
    /// being served, replies to them, and closes; requests read but not yet
    /// started are dropped unanswered (as flexnbd-c, which reads one request
    /// at a time, never has any), so a stop waits for a handful of requests,
    /// not for a queue. Returns at once.
    pub fn stop_clients(&self) {
        for slot in self.lock_clients().values() {
            slot.shared.stopping.store(true, Ordering::SeqCst);
            let _ = slot.socket.shutdown(Shutdown::Read);
        }
    }

    /// Closes every client's connection both ways, now: a reply being sent
    /// to a client that does not read fails, and the client ends.
    pub fn close_clients(&self) {
        for slot in self.lock_clients().values() {
            let _ = slot.socket.shutdown(Shutdown::Both);
        }
    }

    /// How long clients get to finish at a migration's handover ([`Limits::handover_grace`]).
    pub fn handover_grace(&self) -> Duration {
        self.config.limits.handover_grace
    }

    /// The number of connected clients.
    pub fn num_clients(&self) -> usize {
        self.lock_clients().len()
    }

    /// Starts (or, with `None`, stops) telling a migration about every completed write.
    pub fn set_tracker(&self, tracker: Option<Arc<Tracker>>) {
        *self.tracker.write().unwrap_or_else(PoisonError::into_inner) = tracker;
    }

    /// Called after a write, trim or zero reached the file, before its reply.
    fn note_write(&self, offset: u64, len: u64) {
        let tracker = self
            .tracker
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(tracker) = tracker {
            tracker.note_write(offset, len);
        }
    }

    /// Serves clients from `listener` until [`Server::shutdown`], then stops
    /// every client, waits for them, and returns. The listener is closed on return.
    ///
    /// # Errors
    ///
    /// Only errors of the listener itself; a failing client is logged and dropped.
    pub fn run(self: &Arc<Self>, listener: impl Into<Listener>) -> io::Result<()> {
        let listener = listener.into();
        listener.set_nonblocking(true)?;
        std::thread::scope(|scope| {
            if let Some(limit) = self.config.killswitch {
                scope.spawn(move || self.killswitch(limit));
            }
            if let Some(ahead) = &self.hash_ahead {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
                for _ in 0..threads {
                    let work = move || ahead.run(&self.backing, || self.stop.is_triggered());
                    if let Err(e) = std::thread::Builder::new()
                        .name("hash-ahead".into())
                        .spawn_scoped(scope, work)
                    {
                        log::warn!("cannot start hashing ahead: {e}");
                        break;
                    }
                }
            }
            let result = self.accept_loop(&listener);
            listener.remove_path();
            drop(listener);
            self.closed.trigger();
            self.stop.trigger(); // also ends the killswitch thread
            self.stop_all_clients();
            result
        })
    }

    fn accept_loop(self: &Arc<Self>, listener: &Listener) -> io::Result<()> {
        let stop_fd = self.stop.fd();
        loop {
            let mut fds = [
                PollFd::new(listener, PollFlags::IN),
                PollFd::new(&stop_fd, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            if self.stop.is_triggered() {
                return Ok(());
            }
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if is_transient_accept_error(&e) => {
                    log::warn!("accept failed: {e}");
                    // Out of descriptors or memory: back off briefly rather than spin.
                    self.stop.wait_timeout(Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Decides whether a new connection is served, and starts its thread.
    fn admit(self: &Arc<Self>, stream: Stream, peer: Peer) {
        if !self.clients_allowed.load(Ordering::SeqCst) {
            log::info!(
                "Rejecting client {}: new clients are not allowed now",
                words(&peer)
            );
            return;
        }
        let acl = self.acl.read().unwrap_or_else(PoisonError::into_inner);
        if peer.ip().is_some_and(|ip| !acl.allows(ip)) {
            log::warn!("Rejecting client {}: Access control error", words(&peer));
            return;
        }
        drop(acl);
        let socket = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("cannot clone socket for {peer}: {e}");
                return;
            }
        };
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(conn::Shared::default());
        {
            let mut clients = self.lock_clients();
            if let Some(max) = self.config.limits.max_per_address {
                let ip = peer.ip();
                let from_peer = clients
                    .values()
                    .filter(|c| ip.is_some() && c.peer.ip() == ip)
                    .count();
                if from_peer >= max {
                    log::warn!(
                        "Rejecting client {}: {max} connection(s) from that address already",
                        words(&peer)
                    );
                    return;
                }
            }
            let transmitting = clients
                .values()
                .filter(|c| c.handshaking_since.is_none())
                .count();
            if transmitting >= self.client_limit() {
                log::warn!("too many clients to accept connection from {peer}");
                return;
            }
            self.make_room_for_a_handshake(&clients);
            clients.insert(
                id,
                ClientSlot {
                    peer: peer.clone(),
                    socket,
                    shared: shared.clone(),
                    handshaking_since: Some(Instant::now()),
                    evicted: AtomicBool::new(false),
                },
            );
        }
        log::info!("Client {} accepted as client {id}", words(&peer));
        // Frees the slot however the thread ends, a panic included (which
        // the thread's panic message already reports on stderr).
        let slot = SlotGuard {
            server: Arc::clone(self),
            id,
        };
        let spawned = std::thread::Builder::new()
            .name(format!("client-{id}"))
            .spawn(move || {
                let server = &slot.server;
                let mut stream = stream;
                let outcome = conn::serve(server, id, &peer, &mut stream, &shared);
                log::info!("client {id} at {peer} finished: {outcome}");
                if outcome == conn::Outcome::Disconnected && server.config.listen_mode {
                    server.control_arrived();
                }
                drop(slot);
            });
        if let Err(e) = spawned {
            // The closure, and the guard in it, were dropped: the slot is free.
            log::error!("cannot start a thread for a client: {e}");
        }
    }

    /// Most clients in transmission at once: one for `listen` until it has control.
    fn client_limit(&self) -> usize {
        if self.config.listen_mode && !self.has_control() {
            1
        } else {
            self.config.max_clients
        }
    }

    /// When [`Limits::max_handshakes`] connections are in their handshake,
    /// closes the one that has been there longest (it ends and frees its
    /// slot on its own thread).
    fn make_room_for_a_handshake(&self, clients: &HashMap<u64, ClientSlot>) {
        let handshaking = clients
            .values()
            .filter_map(|c| c.handshaking_since.map(|t| (t, c)));
        if handshaking.clone().count() < self.config.limits.max_handshakes {
            return;
        }
        if let Some((_, oldest)) = handshaking
            .filter(|(_, c)| !c.evicted.load(Ordering::SeqCst))
            .min_by_key(|(t, _)| *t)
        {
            log::info!(
                "closing the connection from {} that is longest in its handshake, to make room",
                oldest.peer
            );
            oldest.evicted.store(true, Ordering::SeqCst);
            let _ = oldest.socket.shutdown(Shutdown::Both);
        }
    }

    /// Moves client `id` from its handshake to transmission; false if the
    /// server already serves as many clients as it may (the connection is
    /// then closed).
    fn start_transmission(&self, id: u64) -> bool {
        let mut clients = self.lock_clients();
        let transmitting = clients
            .values()
            .filter(|c| c.handshaking_since.is_none())
            .count();
        let limit = self.client_limit();
        match clients.get_mut(&id) {
            Some(slot) if transmitting < limit && !slot.evicted.load(Ordering::SeqCst) => {
                slot.handshaking_since = None;
                true
            }
            Some(slot) => {
                log::warn!(
                    "too many clients to serve {} after its handshake",
                    slot.peer
                );
                false
            }
            None => false,
        }
    }

    /// `listen` mode's handover: a client's DISCONNECT gives us control, and
    /// the server stops, or with `serve_after_handover` serves on as `serve`.
    fn control_arrived(&self) {
        if self.has_control.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Some(ahead) = &self.hash_ahead {
            log::info!(
                "{} bytes of hash requests were answered from hashes computed ahead",
                ahead.answered()
            );
        }
        if !self.config.serve_after_handover {
            log::info!("control arrived: the migration is complete");
            self.shutdown();
            return;
        }
        // New clients are admitted from here on; the sync below (the data
        // is ours alone now, and an old-style source never FLUSHes) runs
        // on the finished migration's thread without holding them up.
        log::info!("control arrived: the migration is complete, serving the file");
        if let Err(e) = self.backing.sync() {
            log::error!("cannot sync the file after the migration: {e}");
        }
    }

    /// Whether every write is made durable before its reply: an old-style
    /// `listen` until it has control (its C source never sends FLUSH).
    pub(crate) fn sync_writes(&self) -> bool {
        self.config.sync_writes && !(self.config.serve_after_handover && self.has_control())
    }

    fn remove_client(&self, id: u64) {
        self.lock_clients().remove(&id);
        self.clients_changed.notify_all();
    }

    fn lock_clients(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ClientSlot>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks every client to stop reading requests, then waits for all of
    /// them to finish. A client still there after [`SHUTDOWN_GRACE`] (one
    /// that does not read its replies, so a reply cannot be sent) has its
    /// socket shut down both ways, which fails the blocked write and ends it.
    fn stop_all_clients(&self) {
        self.stop_clients();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        let mut clients = self.lock_clients();
        let mut forced = false;
        while !clients.is_empty() {
            let now = Instant::now();
            if !forced && now >= deadline {
                for (id, slot) in clients.iter() {
                    log::warn!(
                        "client {id} at {} did not finish within {SHUTDOWN_GRACE:?} of shutdown; closing its connection",
                        slot.peer
                    );
                    let _ = slot.socket.shutdown(Shutdown::Both);
                }
                forced = true;
            }
            let wait = if forced {
                Duration::from_secs(1)
            } else {
                deadline - now
            };
            clients = self
                .clients_changed
                .wait_timeout(clients, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Drops clients whose request has made no progress for `limit` (flexnbd-c's killswitch).
    fn killswitch(&self, limit: Duration) {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            if self.stop.wait_timeout(Duration::from_secs(1)) {
                return;
            }
            let now = monotonic_ms();
            for (id, slot) in self.lock_clients().iter() {
                let since = slot.shared.busy_since.load(Ordering::SeqCst);
                if since != 0 && now.saturating_sub(since) > limit_ms {
                    log::warn!("Killswitch for client {id} activated, calling shutdown on socket");
                    let _ = slot.socket.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_errno) if [
            rustix::io::Errno::MFILE.raw_os_error(),
            rustix::io::Errno::NFILE.raw_os_error(),
            rustix::io::Errno::NOBUFS.raw_os_error(),
            rustix::io::Errno::NOMEM.raw_os_error(),
            rustix::io::Errno::CONNABORTED.raw_os_error(),
            rustix::io::Errno::PROTO.raw_os_error(),
            rustix::io::Errno::PERM.raw_os_error(),
            rustix::io::Errno::INTR.raw_os_error(),
        ].contains(&libc_errno)
    )
}

/// A peer in flexnbd-c's log wording: `ADDRESS port PORT`, or the socket path.
fn words(peer: &Peer) -> String {
    match peer {
        Peer::Tcp(addr) => format!("{} port {}", addr.ip(), addr.port()),
        Peer::Unix(path) => path.display().to_string(),
    }
}

/// Removes a client from the table when dropped.
struct SlotGuard {
    server: Arc<Server>,
    id: u64,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.server.remove_client(self.id);
    }
}
