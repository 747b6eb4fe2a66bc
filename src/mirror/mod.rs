//! Live migration: copy the served file to another server while clients
//! keep writing, then hand the data over.
//!
//! The source is a running `serve`; the destination is usually a `listen`
//! (ours or the C flexnbd's). The source connects to the destination as an
//! ordinary NBD client and the destination sees only what flexnbd-c sends:
//! WRITEs carrying the handle `.MIRROR.` (of at most 1 MiB; flexnbd-c's go
//! up to 8 MiB), then one DISCONNECT, which tells a `listen` that it now has control. To a newstyle
//! destination that offers it, ranges that read as zero go as WRITE_ZEROES
//! instead, so holes are not sent and the destination stays sparse, and a
//! FLUSH before the handover makes every byte durable there (flexnbd-c's
//! destination, old-style only, syncs every write before its reply, and so
//! does our `listen --oldstyle`). FLUSHes while copying (every 256 MiB or 4096
//! transfers, and in rounds before converging) keep the destination's
//! unsynced data small, so that no single sync stalls its disk for long and
//! the one at the handover, while new clients are refused, is short.
//!
//! ```text
//! operator        source (serve + mirror)                  destination (listen)
//!    | mirror ---->  | connect, check hello and size ---------> |
//!    | <- 0: Mirror started                                     |
//!    |               | [copying] mark every block dirty;        |
//!    |               |   send dirty runs, several in flight --> | WRITE ...
//!    |               |   <------------------------------------- | replies
//!    |               |   client writes re-mark their blocks     |
//!    |               | [converging] dirty set small: client     |
//!    |               |   writes wait until mirrored (write-through)
//!    |               | [handover] refuse new clients, stop the  |
//!    |               |   connected ones (they finish in flight),|
//!    |               |   send what is left, all acknowledged,   |
//!    |               |   close the NBD listener, unlink (--unlink)
//!    |               |   DISCONNECT --------------------------> | has control, exits 0
//!    |               | exit 0                                   |
//! ```
//!
//! States of a migration (shown as `migration_phase` in `status`):
//! `connecting` → `copying` → `converging` → `handover` → done; any failure
//! after the first successful connection goes to `retrying`, which starts a
//! fresh attempt from the beginning a second later, for ever, until it
//! completes or `break` (or a signal) abandons it. A failure of the first
//! attempt before the destination was accepted is reported to the `mirror`
//! command and not retried. With a flexnbd `listen` as the destination
//! (the hash extension, `hashes.rs`), an incremental attempt goes through
//! `comparing` before `copying`, and `--verify` through `verifying` during
//! the handover; a verification that fails is not retried.
//!
//! Every byte is sent at least once after its last write: a writer marks
//! its blocks dirty after its data reached the file, and the mirror clears
//! a block's bit before reading it (see [`crate::server::dirty`]). The
//! handover starts only once no client is connected, so the last cycle
//! leaves nothing dirty, and the DISCONNECT goes out only after every
//! transfer was acknowledged and the listener closed.
//!
//! The control socket drives migrations through [`Controller`]'s methods,
//! which take a parsed [`MirrorRequest`] and answer with typed results
//! ([`StartError`], [`NotMirroring`], [`Broken`]); an attempt's failure is a
//! [`MirrorError`] whose [`ErrorKind`] tells what failed. This module never
//! words a control-socket reply: `control` does.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::client::ClientTls;
use crate::net::AclEntry;
use crate::server::Server;
use crate::server::dirty::Tracker;
use crate::status::{MigrationStatus, Outcome, Phase, Status};
use crate::sys::Trigger;

mod engine;
mod error;
mod handover;
mod hash_pool;
mod hashes;
mod passes;
mod replies;
mod request;
mod send;
mod supervise;

pub use error::{Broken, ErrorKind, MirrorError, NotMirroring, StartError};
pub use request::{
    BpsError, Incremental, MirrorAction, MirrorRequest, NoTlsCredentials, OutgoingTls,
    RequestError, parse_bps,
};

/// Time between attempts (flexnbd-c's MS_RETRY_DELAY_SECS).
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest transfer. flexnbd-c's mirror_longest_write is 8 MiB, but a
/// window of 16 such WRITEs holds 128 MiB at the destination, more than
/// our `listen` keeps pooled buffers for (16 MiB a connection): each then
/// takes fresh memory, and an idle 256 MiB migration took 2-4x as long as
/// with 1 MiB transfers (qemu's mirror sends 1 MiB too).
pub const MAX_TRANSFER: u64 = 1 << 20;
/// The default for `FLEXNBD_MS_REQUEST_LIMIT_SECS`: how long a transfer may make no progress.
pub const DEFAULT_REQUEST_LIMIT: Duration = Duration::from_secs(60);

/// The request limit from `FLEXNBD_MS_REQUEST_LIMIT_SECS` (seconds, may be
/// fractional; 0 disables it), or the default.
pub fn request_limit() -> Option<Duration> {
    match std::env::var("FLEXNBD_MS_REQUEST_LIMIT_SECS") {
        Err(_) => Some(DEFAULT_REQUEST_LIMIT),
        Ok(text) => match text.trim().parse::<f64>() {
            Ok(0.0) => None,
            Ok(secs) if secs > 0.0 && secs.is_finite() => {
                log::info!("mirror request limit is {secs} s from FLEXNBD_MS_REQUEST_LIMIT_SECS");
                Some(Duration::from_secs_f64(secs))
            }
            _ => {
                log::warn!(
                    "ignoring FLEXNBD_MS_REQUEST_LIMIT_SECS='{text}': not a number of seconds"
                );
                Some(DEFAULT_REQUEST_LIMIT)
            }
        },
    }
}

/// The phase stored in [`Mirror`]'s atomic as `phase as u8`, back from that number.
fn phase_from_u8(v: u8) -> Phase {
    Phase::ALL
        .get(usize::from(v))
        .copied()
        .unwrap_or(Phase::Connecting)
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AttemptEnd {
    /// Handed over (or, with action `nothing`, fully copied).
    Done,
    /// `break` or a signal.
    Abandoned,
    /// Anything else.
    Failed(MirrorError),
}

/// One migration: its parameters, progress counters and supervisor thread.
#[derive(Debug)]
pub struct Mirror {
    request: MirrorRequest,
    /// TLS towards the destination, if the migration uses it.
    tls: Option<ClientTls>,
    abandon: Trigger,
    max_bps: AtomicU64,
    phase: AtomicU8,
    retries: AtomicU64,
    /// Bytes acknowledged by the destination in the current attempt.
    acked: AtomicU64,
    /// Payload and header bytes sent over all attempts.
    wire_bytes: AtomicU64,
    /// Bytes taken from the dirty map (sent, or held by the speed limit) but not acknowledged yet.
    in_flight: AtomicU64,
    /// Bytes an incremental migration has still to compare with the
    /// destination's: until compared, they may have to be sent.
    uncompared: AtomicU64,
    started: Mutex<Instant>,
    tracker: Mutex<Option<Arc<Tracker>>>,
    /// Set when the listener was closed for the handover: past this point it cannot be abandoned.
    committed: AtomicBool,
    /// `--verify`: the destination's hashes matched ours in this attempt.
    verified: AtomicBool,
    completed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Mirror {
    fn new(request: MirrorRequest, tls: Option<ClientTls>) -> std::io::Result<Mirror> {
        Ok(Mirror {
            tls,
            max_bps: AtomicU64::new(request.max_bps.unwrap_or(u64::MAX)),
            request,
            abandon: Trigger::new()?,
            phase: AtomicU8::new(Phase::Connecting as u8),
            retries: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            wire_bytes: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            uncompared: AtomicU64::new(0),
            started: Mutex::new(Instant::now()),
            tracker: Mutex::new(None),
            committed: AtomicBool::new(false),
            verified: AtomicBool::new(false),
            completed: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Once an attempt is over: nothing it held counts as left to send any more.
    fn attempt_over(&self) {
        self.in_flight.store(0, Ordering::SeqCst);
        self.uncompared.store(0, Ordering::SeqCst);
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        phase_from_u8(self.phase.load(Ordering::SeqCst))
    }

    /// Progress for `status`, with flexnbd-c's definitions where it has them.
    fn progress(&self, size: u64) -> MigrationStatus {
        let elapsed = lock(&self.started).elapsed();
        let acked = self.acked.load(Ordering::SeqCst);
        // Whole seconds, as flexnbd-c: the speed of an attempt under a second old is its bytes.
        let speed = acked / elapsed.as_secs().max(1);
        let dirty = lock(&self.tracker)
            .as_ref()
            .map_or(size, |t| t.map.dirty_bytes());
        let bytes_left =
            dirty + self.in_flight.load(Ordering::SeqCst) + self.uncompared.load(Ordering::SeqCst);
        let limit = self.max_bps.load(Ordering::SeqCst);
        MigrationStatus {
            speed,
            duration: elapsed.as_secs(),
            seconds_left: bytes_left / (speed + 1),
            bytes_left,
            speed_limit: (limit != u64::MAX).then_some(limit),
            bytes_sent: Some(self.wire_bytes.load(Ordering::SeqCst)),
            retries: Some(self.retries.load(Ordering::SeqCst)),
            phase: Some(self.phase()),
            bytes_copied: Some(acked),
            verified: self
                .request
                .verify
                .then(|| self.verified.load(Ordering::SeqCst)),
        }
    }

    fn join(&self) {
        let thread = lock(&self.thread).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

/// What the control socket's migration commands act on: the server plus at most one migration.
#[derive(Debug)]
pub struct Controller {
    shared: Arc<Shared>,
}

/// The controller's state, shared with the supervisor thread.
#[derive(Debug)]
struct Shared {
    server: Arc<Server>,
    slot: Mutex<Slot>,
    /// A signal arrived while a migration was running (serve then exits 1).
    signalled_while_mirroring: AtomicBool,
    /// A migration handed over: the server's file now lives on the destination.
    migrated: AtomicBool,
    /// Shutting down: no new migrations.
    closed: AtomicBool,
    /// How the last migration ended, for `status` (`last_migration`).
    last: Mutex<Option<Outcome>>,
    /// The last migration handed over verified (`last_migration_verified`).
    last_verified: AtomicBool,
    /// A `status` reported the completed migration (ends the linger early).
    completion_reported: (Mutex<bool>, std::sync::Condvar),
    /// When a `status` was last asked for, and a migration last started:
    /// whether anyone follows the migration, so is worth lingering for.
    followed: Mutex<Followed>,
    /// The TLS settings of this server's migrations.
    outgoing_tls: OutgoingTls,
}

/// When a `status` was last asked for, and when a migration last started.
#[derive(Debug, Default, Clone, Copy)]
struct Followed {
    last_status: Option<Instant>,
    last_start: Option<Instant>,
}

impl Followed {
    /// Whether a `status` came at most [`FOLLOWER_WITHIN`] before the last start.
    fn is_followed(self) -> bool {
        match (self.last_status, self.last_start) {
            (Some(status), Some(started)) => status + FOLLOWER_WITHIN >= started,
            _ => false,
        }
    }
}

/// `mirror --wait` asks for `status` just before it starts the migration
/// and every 100 ms while it runs: after a handover the source lingers only
/// if a `status` was asked for since this long before the migration
/// started, so a migration nobody follows ends at once.
const FOLLOWER_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug)]
enum Slot {
    Idle,
    Running(Arc<Mirror>),
}

impl Controller {
    /// A controller for `server` with no migration running.
    pub fn new(server: Arc<Server>) -> Arc<Controller> {
        Self::with_tls(server, OutgoingTls::default())
    }

    /// A controller whose migrations use TLS as `outgoing_tls` says.
    pub fn with_tls(server: Arc<Server>, outgoing_tls: OutgoingTls) -> Arc<Controller> {
        Arc::new(Controller {
            shared: Arc::new(Shared {
                server,
                slot: Mutex::new(Slot::Idle),
                signalled_while_mirroring: AtomicBool::new(false),
                migrated: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                last: Mutex::new(None),
                last_verified: AtomicBool::new(false),
                completion_reported: (Mutex::new(false), std::sync::Condvar::new()),
                followed: Mutex::new(Followed::default()),
                outgoing_tls,
            }),
        })
    }

    /// The server.
    pub fn server(&self) -> &Arc<Server> {
        &self.shared.server
    }

    /// A termination signal: abandon any migration, refuse new ones, stop the server.
    pub fn signal(&self) {
        self.shared.signal();
    }

    /// A snapshot for `status`: the server's, with the migration's progress and last outcome.
    pub fn status(&self) -> Status {
        self.shared.status()
    }

    /// Replaces the server's access control list.
    pub fn set_acl(&self, entries: Vec<AclEntry>) {
        self.shared.server.set_acl(entries);
    }

    /// Starts a migration and waits for its first connection attempt (about 20 s at most).
    ///
    /// # Errors
    ///
    /// Why no migration is running now: one already was, the server is
    /// stopping, or the first attempt failed (it is not retried).
    pub fn start_mirror(&self, request: MirrorRequest) -> Result<(), StartError> {
        self.shared.start_mirror(request, &self.shared)
    }

    /// Changes the running migration's bandwidth limit (bytes per second; 0 pauses it).
    ///
    /// # Errors
    ///
    /// [`NotMirroring`] when no migration is running.
    pub fn set_mirror_max_bps(&self, max_bps: u64) -> Result<(), NotMirroring> {
        self.shared.set_mirror_max_bps(max_bps)
    }

    /// Stops the running migration, waits until it has stopped, and tells how it had ended.
    ///
    /// # Errors
    ///
    /// [`NotMirroring`] when no migration is running.
    pub fn break_mirror(&self) -> Result<Broken, NotMirroring> {
        self.shared.break_mirror()
    }

    /// Waits for a migration thread that is still running (after the server stopped).
    pub fn wait(&self) {
        self.shared.wait();
    }

    /// The process exit status rule of flexnbd-c: success after a completed
    /// migration, failure if a signal interrupted one, else whether we have control.
    pub fn success(&self) -> bool {
        self.shared.success()
    }

    /// After a completed migration, keeps the caller (and so the control
    /// socket) up to `limit` until one `status` has reported the outcome, so
    /// that `mirror --wait` learns it for sure; not when nobody follows the
    /// migration (no `status` since `FOLLOWER_WITHIN` before it started).
    pub fn linger_after_migration(&self, limit: Duration) {
        let followed = lock(&self.shared.followed).is_followed();
        if !self.shared.migrated.load(Ordering::SeqCst) || !followed {
            return;
        }
        let (reported, cv) = &self.shared.completion_reported;
        let guard = lock(reported);
        let _ = cv.wait_timeout_while(guard, limit, |r| !*r);
    }
}

impl Shared {
    fn signal(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(mirror) = self.running() {
            log::warn!("Stop signal received while mirroring.");
            self.signalled_while_mirroring.store(true, Ordering::SeqCst);
            mirror.abandon.trigger();
        }
        self.server.shutdown();
    }

    fn wait(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(mirror) = self.running() {
            mirror.join();
        }
    }

    fn success(&self) -> bool {
        if self.migrated.load(Ordering::SeqCst) {
            return true;
        }
        !self.signalled_while_mirroring.load(Ordering::SeqCst) && self.server.has_control()
    }

    fn running(&self) -> Option<Arc<Mirror>> {
        match &*lock(&self.slot) {
            Slot::Running(m) => Some(m.clone()),
            Slot::Idle => None,
        }
    }
}

impl Shared {
    fn status(&self) -> Status {
        lock(&self.followed).last_status = Some(Instant::now());
        let mut status = self.server.status();
        if let Some(mirror) = self.running() {
            status.migration = Some(mirror.progress(status.size));
        }
        status.last_migration = *lock(&self.last);
        status.last_verified = self.last_verified.load(Ordering::SeqCst);
        if status.migration.is_none() && status.last_migration == Some(Outcome::Done) {
            let (reported, cv) = &self.completion_reported;
            *lock(reported) = true;
            cv.notify_all();
        }
        status
    }

    fn start_mirror(&self, request: MirrorRequest, me: &Arc<Shared>) -> Result<(), StartError> {
        let mirror = {
            let mut slot = lock(&self.slot);
            match &*slot {
                Slot::Running(_) => {
                    log::warn!("Tried to start a second mirror run");
                    return Err(StartError::AlreadyRunning);
                }
                Slot::Idle => {}
            }
            if self.closed.load(Ordering::SeqCst) || self.server.is_shutting_down() {
                return Err(StartError::ShuttingDown);
            }
            log::info!(
                "Starting mirror to {} ({})",
                request.target,
                request.action.as_str()
            );
            let tls = self
                .outgoing_tls
                .for_request(&request)
                .map_err(StartError::NoTlsCredentials)?;
            let mirror = Arc::new(Mirror::new(request, tls).map_err(StartError::Setup)?);
            self.last_verified.store(false, Ordering::SeqCst);
            *slot = Slot::Running(mirror.clone());
            lock(&self.followed).last_start = Some(Instant::now());
            mirror
        };
        let (tx, rx) = mpsc::channel();
        let spawned = supervise::spawn_supervisor(me, mirror.clone(), tx);
        if let Err(e) = spawned {
            *lock(&self.slot) = Slot::Idle;
            return Err(StartError::Setup(e));
        }
        let first = rx.recv().unwrap_or(Err(StartError::NoOutcome));
        if first.is_err() {
            // The supervisor gives up after a failed first attempt; wait so
            // that a new `mirror` can start at once (flexnbd-c bug 14.3.4 fixed).
            mirror.join();
        }
        first
    }

    fn set_mirror_max_bps(&self, max_bps: u64) -> Result<(), NotMirroring> {
        let mirror = self.running().ok_or(NotMirroring)?;
        mirror.max_bps.store(max_bps, Ordering::SeqCst);
        log::info!("mirror speed limit set to {max_bps} bytes/s");
        Ok(())
    }

    fn break_mirror(&self) -> Result<Broken, NotMirroring> {
        let Some(mirror) = self.running() else {
            log::info!("Not mirroring.");
            return Err(NotMirroring);
        };
        mirror.abandon.trigger();
        mirror.join();
        if mirror.completed.load(Ordering::SeqCst) && mirror.request.action != MirrorAction::Nothing
        {
            Ok(Broken::Completed)
        } else {
            Ok(Broken::Stopped)
        }
    }
}

#[cfg(test)]
mod tests;
