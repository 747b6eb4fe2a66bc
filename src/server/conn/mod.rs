//! One client connection: the handshake, then the transmission loop.
//!
//! The connection's thread reads requests (header, then payload for
//! WRITE) and validates them. A valid request goes to a small pool of
//! worker threads belonging to this connection, so several requests are in
//! flight at once and replies may go out in any order; each is answered
//! exactly once. Workers write replies through one lock on the socket's
//! write side, each reply in one vectored write. Invalid requests are
//! answered by the reading thread directly, with the payload of a bad
//! WRITE read and discarded so the connection stays in step.
//!
//! Memory is bounded: buffers come from a per-connection pool (all pools
//! together are capped server-wide); the reader stops reading while more
//! than 64 MiB of this connection's payloads or 256 requests are queued or
//! being served, or while the server's memory budget (`--max-inflight`) is
//! spent; a WRITE's payload is charged to that budget piece by piece as it
//! arrives, and a client silent mid-payload is dropped (`--stall-timeout`).
//!
//! Small READs whose data is in the page cache (`RWF_NOWAIT`) are served
//! on the reading thread itself, and their replies are gathered and sent
//! together once no whole request is left in the read buffer: a client at
//! queue depth 16 costs one read and one write for 16 requests, not 16
//! thread hand-offs. Small WRITEs without FUA are written there too (buffered
//! writes to one file queue for its inode lock anyway), each acknowledged
//! only once `pwrite` returned. A large READ is served from the reading
//! thread when its data is in the page cache and no other request waits
//! behind it (no hand-off, no contended writer lock), from a worker when
//! it may have to come from the disk or when more are waiting (so that
//! copying one overlaps sending another); to a
//! client on another machine, those of data with no hole go out with
//! `sendfile`, never copied through user space (see `Stream::sendfile_pays` for why
//! not to one on this machine).
//!
//! When the reading side ends (EOF, DISCONNECT, a protocol error, or the
//! server's shutdown calling `shutdown(Read)` on the socket), the queued
//! requests are still served and replied to before the socket is closed.

//!
//! The pieces: this file holds the connection's state and its life cycle;
//! [`requests`] the reading thread's loop and its fast paths; [`workers`]
//! the worker pool, the in-flight budget and the buffer pool; [`reply`]
//! what goes back to the client. The bytes on the wire are laid out by
//! `proto::reply` and moved by the `nbd` connection layer.

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::backing::Backing;
use crate::nbd::{Handshake, Offer, Peer, ReplyWriter, RequestReader, Stream, serve_handshake};
use crate::proto::consts::MAX_REQUEST_LEN;
use crate::proto::handshake::{Export, Negotiated};
use crate::proto::types::{Cmd, Errno};
use crate::proto::wire::Request;
use crate::sys::{RateLimit, Verdict, monotonic_ms};

use super::Server;

mod hash;
pub(super) use hash::{block_size as hash_block_size, holds_data as offers_hashes_of_data};
mod reply;
mod requests;
mod test_hooks;
mod workers;

use workers::{Budget, BufferPool, Queue};

/// Warnings about one client's requests: this many at once, then one per
/// [`WARN_EVERY`]; the others are counted and reported with the next one.
const WARN_BURST: u32 = 10;
/// See [`WARN_BURST`].
const WARN_EVERY: Duration = Duration::from_secs(1);

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The client sent NBD_CMD_DISC.
    Disconnected,
    /// The client closed the connection, or the server stopped it.
    Closed,
    /// The client aborted negotiation.
    Aborted,
    /// The handshake ended with the server full (or the connection made way
    /// for a newer handshake).
    Refused,
    /// The client broke the protocol or the socket failed.
    Failed,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Disconnected => "disconnected",
            Outcome::Closed => "closed",
            Outcome::Aborted => "aborted negotiation",
            Outcome::Refused => "refused after the handshake: too many clients",
            Outcome::Failed => "failed",
        })
    }
}

/// Serves one client from handshake to close.
pub(super) fn serve(
    server: &Server,
    id: u64,
    peer: &Peer,
    stream: &mut Stream,
    shared: &Shared,
) -> Outcome {
    let offer = Offer {
        name: server.config.export_name.clone(),
        export: Export {
            size: server.backing.size(),
            flags: server.transmission_flags(),
        },
        oldstyle: server.config.oldstyle,
        structured_replies: true,
        timeout: server.config.limits.handshake_timeout,
        hash: server
            .config
            .listen_mode
            .then(|| hash::offer_flags(&server.backing)),
        tls: server.config.tls.clone(),
    };
    let admit = || server.start_transmission(id);
    let result = serve_handshake(stream, &offer, admit).and_then(|end| match end {
        Handshake::Aborted => Ok(Outcome::Aborted),
        Handshake::Refused => Ok(Outcome::Refused),
        Handshake::Transmit(negotiated) => {
            let stream = &*stream;
            let conn = Conn::new(server, stream, negotiated, shared);
            let outcome = conn.run(stream);
            conn.log_suppressed();
            outcome
        }
    });
    let _ = stream.shutdown(Shutdown::Both);
    result.unwrap_or_else(|e| {
        if crate::nbd::handshake::is_tls_failure(&e) {
            let who = format_args!("client {id} at {peer}");
            crate::nbd::handshake::warn_tls_failure(&server.tls_warnings, who, &e);
        } else {
            log::info!("connection error: {e}");
        }
        Outcome::Failed
    })
}

/// What a connection's threads share with the server, which holds it in the
/// client table.
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Monotonic milliseconds since a request started without finishing,
    /// or 0 when idle: the killswitch's clock.
    pub(super) busy_since: AtomicU64,
    /// The server asked the client to stop: read no more requests, and
    /// drop those read but not started.
    pub(super) stopping: AtomicBool,
}

impl Conn<'_> {
    /// Whether the server asked this client to stop.
    fn stopping(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

/// A request that passed validation, with its payload for WRITE.
#[derive(Debug)]
struct Job {
    req: Request,
    buf: Vec<u8>,
    /// The share of the connection's budget it holds (`workers::Budget`).
    cost: u64,
    /// The share of the server's memory budget it holds.
    charged: u64,
}

/// State shared by the reading thread and the workers of one connection.
struct Conn<'a> {
    server: &'a Server,
    backing: &'a Backing,
    negotiated: Negotiated,
    oldstyle: bool,
    read_only: bool,
    writer: ReplyWriter<&'a Stream>,
    queue: Queue,
    budget: Budget,
    pool: BufferPool<'a>,
    idle_workers: AtomicUsize,
    /// Bounds the warnings this client's requests can cause.
    warnings: RateLimit,
    /// What the server sees of this connection.
    shared: &'a Shared,
    in_flight: AtomicU64,
    /// Large READs of data with no hole go out with `sendfile` ([`Stream::sendfile_pays`]).
    sendfile: bool,
}

impl<'a> Conn<'a> {
    fn new(
        server: &'a Server,
        stream: &'a Stream,
        negotiated: Negotiated,
        shared: &'a Shared,
    ) -> Self {
        Conn {
            server,
            backing: &server.backing,
            negotiated,
            oldstyle: server.config.oldstyle,
            read_only: server.config.read_only,
            writer: ReplyWriter::new(stream),
            queue: Queue::default(),
            budget: Budget::default(),
            pool: BufferPool::new(&server.pooled, super::MAX_POOLED_TOTAL),
            idle_workers: AtomicUsize::new(0),
            warnings: RateLimit::new(WARN_BURST, WARN_EVERY),
            shared,
            in_flight: AtomicU64::new(0),
            sendfile: stream.sendfile_pays(),
        }
    }

    /// The transmission phase: reads requests on this thread, serves them
    /// here or on workers started as needed, and returns once the reading
    /// side ended and every request read was answered.
    fn run(&self, stream: &Stream) -> io::Result<Outcome> {
        // A client that stops reading its replies would hold the thread
        // writing to it, and whatever that request holds (budgets, a
        // buffer), for ever: a reply that makes no progress for the stall
        // timeout fails and ends the connection.
        stream.set_write_timeout(Some(self.server.config.limits.stall_timeout))?;
        let mut reader = RequestReader::new(stream);
        std::thread::scope(|scope| {
            // Closes the queue however this closure ends, a panic included,
            // so the workers exit and the scope can return.
            let _closer = workers::CloseOnDrop(&self.queue);
            let mut workers = 0usize;
            let outcome = self.read_requests(&mut reader, || {
                if self.idle_workers.load(Ordering::SeqCst) == 0 && workers < workers::MAX_WORKERS {
                    workers += 1;
                    let spawned = std::thread::Builder::new()
                        .name(format!(
                            "{}-w{workers}",
                            std::thread::current().name().unwrap_or("client")
                        ))
                        .spawn_scoped(scope, || self.work());
                    if let Err(e) = spawned {
                        log::warn!("cannot start a worker thread: {e}");
                        workers -= 1;
                    }
                }
            });
            // Let the workers drain the queue and exit; the scope joins them.
            self.queue.close();
            // Without any worker (none could start), serve what is queued here.
            if workers == 0 {
                self.work();
            }
            outcome
        })
    }

    /// Checks a request against the export and what was negotiated.
    fn validate(&self, req: &Request) -> Result<(), Errno> {
        test_hooks::maybe_panic(test_hooks::Site::Reader, req.offset);
        if req.flags.unknown() != 0 {
            self.warn(format_args!(
                "request {} has unknown flags {:?}",
                req.cmd, req.flags
            ));
            return Err(Errno::EINVAL);
        }
        let writes = matches!(req.cmd, Cmd::WRITE | Cmd::TRIM | Cmd::WRITE_ZEROES);
        match req.cmd {
            Cmd::READ | Cmd::WRITE => {
                if req.len > MAX_REQUEST_LEN {
                    self.warn(format_args!(
                        "{} of {} bytes is over the {MAX_REQUEST_LEN}-byte limit",
                        req.cmd, req.len
                    ));
                    return Err(Errno::EINVAL);
                }
            }
            Cmd::FLUSH => return Ok(()),
            Cmd::TRIM | Cmd::WRITE_ZEROES | Cmd::CACHE => {}
            Cmd::BLOCK_STATUS => {
                if !self.negotiated.base_allocation || req.len == 0 {
                    return Err(Errno::EINVAL);
                }
            }
            crate::proto::hash::NBD_CMD_FLEXNBD_HASH => return self.validate_hash(req),
            _ => {
                self.warn(format_args!("Unknown request {:#010X}", req.cmd.0));
                return Err(Errno::EINVAL);
            }
        }
        if writes && self.read_only {
            return Err(Errno::EPERM);
        }
        if req.end().is_none_or(|end| end > self.backing.size()) {
            self.warn(format_args!(
                "write request {}+{} out of range",
                req.offset, req.len
            ));
            // The spec wants ENOSPC for writes and EINVAL otherwise; flexnbd-c (old-style) says ENOSPC to all.
            let enospc = matches!(req.cmd, Cmd::WRITE | Cmd::WRITE_ZEROES) || self.oldstyle;
            return Err(if enospc { Errno::ENOSPC } else { Errno::EINVAL });
        }
        Ok(())
    }

    /// Logs a warning caused by the client's requests, rate-limited
    /// ([`WARN_BURST`], [`WARN_EVERY`]) so a client cannot flood the log.
    fn warn(&self, message: std::fmt::Arguments<'_>) {
        match self.warnings.check() {
            Verdict::Allow { suppressed: 0 } => log::warn!("{message}"),
            Verdict::Allow { suppressed } => {
                log::warn!("{message} ({suppressed} similar warning(s) not logged)");
            }
            Verdict::Suppress => {}
        }
    }

    /// Reports the warnings the rate limit dropped since the last one logged.
    fn log_suppressed(&self) {
        let n = self.warnings.pending_suppressed();
        if n > 0 {
            log::warn!("{n} more warning(s) about this client's requests were not logged");
        }
    }

    fn begin_request(&self) {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.shared
                .busy_since
                .store(monotonic_ms(), Ordering::SeqCst);
        }
    }

    fn end_request(&self) {
        // Progress: restart the killswitch clock, or stop it when idle.
        let left = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.shared
            .busy_since
            .store(if left == 0 { 0 } else { monotonic_ms() }, Ordering::SeqCst);
    }
}
