//! One migration attempt: connect, copy, converge, hand over.
//!
//! The attempt's thread sends; a second thread reads the destination's
//! replies. Up to [`WINDOW`] transfers are in flight at once. Every failure
//! (a reply error, a bad reply, EOF, no progress within the request limit)
//! ends the attempt; the supervisor in `mod.rs` decides about retrying.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crate::backing::Backing;
use crate::client::{ConnectOptions, NbdClient, Style};
use crate::proto::consts::MIRROR_HANDLE;
use crate::proto::hash::HashParams;
use crate::proto::types::{Cmd, CmdFlags, TransmissionFlags};
use crate::proto::wire::Request;
use crate::server::Server;
use crate::server::dirty::Tracker;
use crate::server::hash_ahead::{self, HashAhead};

use super::error::{ErrorKind as Kind, MirrorError, StartError};
use super::passes::{COPY_BUDGET, Passes};
use super::replies::{CloseOnUnwind, Replies, Window, lock_closed, read_replies, reply_reader};
use super::{AttemptEnd, MAX_TRANSFER, Mirror, MirrorAction, Phase, lock, request_limit};

/// Most transfers in flight at once.
pub(super) const WINDOW: usize = 16;
/// Converge once at most this much is dirty. The first write-through cycle
/// sends it while writers wait, and scattered small blocks go much slower
/// than the measured (mostly sequential) rate: 1 MiB of 4 KiB blocks takes a
/// few tens of ms. Writers that keep more dirty than this stop the passes
/// from shrinking it, which converges too (see [`Passes`]).
const CONVERGE_BYTES: u64 = 1 << 20;
/// While copying, a FLUSH goes to the destination after this much was sent
/// since the last one, once every earlier request (that FLUSH included) is
/// answered, so that its page cache never holds much more unsynced data:
/// one huge sync stalls its disk (and writers to the source if it shares the
/// file system) for a long time, and the syncs before converging and at the
/// handover have little left to do. Each FLUSH drains the window and costs
/// the destination a journal commit, so they are rare: the measurements
/// behind this figure are in bench/RESULTS.md.
const FLUSH_EVERY: u64 = 256 << 20;
/// ...or after this many transfers: scattered small blocks cost the
/// destination's disk one write each, so a sync of many is long too.
const FLUSH_EVERY_TRANSFERS: u32 = 4096;
/// Before converging the destination is asked to FLUSH, and what was
/// written meanwhile is sent, until a FLUSH takes at most this long: the
/// handover's FLUSH (new clients refused meanwhile) then has as little to do.
const FLUSH_QUICK: Duration = Duration::from_millis(40);
/// Most such rounds: a destination whose disk cannot keep up with the
/// writers never gets quick, and its handover FLUSH is as long as the last.
const MAX_FLUSH_ROUNDS: u32 = 4;
/// A write-through cycle this long is logged.
const SLOW_CYCLE: Duration = Duration::from_millis(20);

/// Runs one attempt. `commit` is told the outcome of connecting: `Ok`
/// once the destination is accepted.
pub(super) fn attempt(
    server: &Arc<Server>,
    mirror: &Mirror,
    commit: &mut dyn FnMut(Result<(), StartError>),
) -> AttemptEnd {
    let limit = request_limit();
    let opts = ConnectOptions {
        bind: mirror.request.bind,
        export_name: mirror.request.export_name.clone(),
        tls: mirror.tls.clone(),
        reply_timeout: limit.unwrap_or(Duration::ZERO),
        hash_extension: true,
        ..ConnectOptions::default()
    };
    log::info!("Connecting to mirror {}", mirror.request.target);
    let client = match NbdClient::connect(mirror.request.target.clone(), &opts) {
        Ok(client) => client,
        Err(e) => {
            let e = MirrorError::from(e);
            match e.kind() {
                Kind::Connect => log::warn!("Mirror failed to connect: {e}"),
                Kind::NoHello => log::warn!("No NBD Hello received: {e}"),
                _ => log::warn!("Mirror attempt rejected: {e}"),
            }
            commit(Err(StartError::Failed(e.clone())));
            return AttemptEnd::Failed(e);
        }
    };
    if mirror.abandon.is_triggered() {
        commit(Err(StartError::Abandoned));
        return AttemptEnd::Abandoned;
    }
    let local = server.backing().size();
    if client.size() != local {
        log::warn!(
            "Remote size ({}) doesn't match local ({local})",
            client.size()
        );
        let _ = client.shutdown();
        let e = MirrorError::new(
            Kind::SizeMismatch,
            format!("remote size {} is not local size {local}", client.size()),
        );
        commit(Err(StartError::Failed(e.clone())));
        return AttemptEnd::Failed(e);
    }
    if mirror.request.verify && client.hash_params().is_none() {
        log::warn!(
            "Mirror rejected: --verify needs a flexnbd listen (the destination has no hash extension)"
        );
        let _ = client.shutdown();
        let e = MirrorError::new(
            Kind::Verify,
            "the destination does not offer the flexnbd hash extension that --verify needs",
        );
        commit(Err(StartError::Failed(e.clone())));
        return AttemptEnd::Failed(e);
    }
    commit(Ok(()));
    let incremental = super::hashes::incremental(&mirror.request, &client);
    log::info!(
        "Starting mirror: {} bytes to {}",
        local,
        mirror.request.target
    );

    let tracker = Arc::new(Tracker::new(local));
    server.set_tracker(Some(tracker.clone()));
    // Everything written before this point is in the file: send all of it
    // (incremental: what differs from the destination's copy, marked once
    // the reply thread runs).
    if incremental.is_none() {
        tracker.map.mark_all();
    }
    *lock(&mirror.tracker) = Some(tracker.clone());
    mirror.set_phase(Phase::Copying);

    let replies = Arc::new(Replies::new(limit));
    let ahead = hash_ahead(mirror, &client, server.backing(), incremental.is_some());
    let stop_ahead = AtomicBool::new(false);
    let end = match reply_reader(&client, limit) {
        Err(e) => AttemptEnd::Failed(e),
        Ok(reader) => std::thread::scope(|scope| {
            // A panic below must still end the reply thread, or the scope
            // would wait for it for ever.
            let _unwind = match client.reply_reader() {
                Ok(socket) => Some(CloseOnUnwind {
                    replies: &replies,
                    socket,
                }),
                Err(e) => {
                    log::warn!("no second handle on the destination's socket: {e}");
                    None
                }
            };
            let reader_replies = replies.clone();
            scope.spawn(move || read_replies(reader, &reader_replies, mirror));
            // Stops the hashing thread however the attempt ends, before the
            // scope waits for it.
            let _stop_ahead = ahead.as_ref().map(|ahead| {
                let backing = server.backing();
                let stop = &stop_ahead;
                scope.spawn(move || {
                    // Only what the copy leaves of the CPU: nice 19 (on
                    // Linux a thread's own).
                    let _ = rustix::process::setpriority_process(None, 19);
                    ahead.run(backing, || stop.load(Ordering::SeqCst));
                });
                StopAhead { stop, ahead }
            });
            let sendfile = client.sendfile_pays();
            let mut transfer = Transfer {
                server,
                mirror,
                tracker: &tracker,
                replies: &replies,
                client,
                buf: Vec::new(),
                sendfile,
                next_send: Instant::now(),
                pre_verified: false,
                ahead: ahead.as_ref(),
            };
            let end = transfer.run(incremental);
            if end != AttemptEnd::Done {
                // Wake the reply thread: the connection is finished.
                lock_closed(&replies);
                let _ = transfer.client.shutdown();
            }
            end
        }),
    };
    if end != AttemptEnd::Done {
        tracker.abort();
        server.set_tracker(None);
        server.set_clients_allowed(true);
        if let AttemptEnd::Failed(why) = &end {
            log::error!("Event loop exited, but mirroring is not complete: {why}");
        }
    }
    end
}

pub(super) struct Transfer<'a> {
    pub(super) server: &'a Arc<Server>,
    pub(super) mirror: &'a Mirror,
    pub(super) tracker: &'a Arc<Tracker>,
    pub(super) replies: &'a Replies,
    pub(super) client: NbdClient,
    pub(super) buf: Vec<u8>,
    /// WRITE payloads go with `sendfile` (else through `buf`).
    pub(super) sendfile: bool,
    pub(super) next_send: Instant,
    /// `--verify` compared the whole file before converging.
    pub(super) pre_verified: bool,
    /// `--verify`: our file's hashes, computed while the copy runs.
    pub(super) ahead: Option<&'a HashAhead>,
}

/// `--verify` without an incremental comparison: our side's hashes for the
/// comparison before the handover, to be computed while the copy runs (a
/// thread at the lowest priority hashes the file once, just behind the copy,
/// from the page cache the copy filled; a client write drops them all, as
/// on a `listen`). `None` when the destination's
/// blocks are larger than the thread's pieces.
fn hash_ahead(
    mirror: &Mirror,
    client: &NbdClient,
    backing: &Backing,
    incremental: bool,
) -> Option<HashAhead> {
    if !mirror.request.verify || incremental {
        return None;
    }
    let params = client.hash_params()?;
    if u64::from(params.block_size) > hash_ahead::PIECE {
        return None;
    }
    let ahead = HashAhead::new(backing, params.block_size)?;
    // Behind the copy ([`Transfer::send_range`] raises the ceiling).
    ahead.follow();
    Some(ahead)
}

/// Stops the hashing thread when dropped: sets its flag, and wakes it if
/// it waits for the copy.
struct StopAhead<'a> {
    stop: &'a AtomicBool,
    ahead: &'a HashAhead,
}

impl Drop for StopAhead<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.ahead.allow(u64::MAX);
    }
}

/// Why the sender must stop.
pub(super) enum Stop {
    Abandoned,
    Failed(MirrorError),
}

impl From<Stop> for AttemptEnd {
    fn from(stop: Stop) -> AttemptEnd {
        match stop {
            Stop::Abandoned => AttemptEnd::Abandoned,
            Stop::Failed(why) => AttemptEnd::Failed(why),
        }
    }
}

impl Transfer<'_> {
    fn run(&mut self, incremental: Option<HashParams>) -> AttemptEnd {
        if let Some(params) = incremental {
            if let Err(stop) = self.mark_differences(params) {
                return stop.into();
            }
        }
        match self.copy_and_hand_over() {
            Ok(end) => end,
            Err(stop) => stop.into(),
        }
    }

    fn copy_and_hand_over(&mut self) -> Result<AttemptEnd, Stop> {
        crate::sys::fault::panic_point("MIRROR", "copy");
        // Copying: send dirty runs in file order, pass after pass, until
        // little is left or the passes stop shrinking what is dirty.
        let mut cursor = 0u64;
        let mut passes = Passes {
            limit: Some(COPY_BUDGET * self.server.backing().size()),
            ..Passes::default()
        };
        let converged = self.copy(&mut cursor, &mut passes, true)?;
        // Most of the file is on the destination: have it made durable now,
        // while clients are served without waiting, so that the FLUSH at the
        // handover (when new clients are refused) has little left to sync.
        // What is written during a FLUSH is sent after it, again without
        // write-through, and flushed in turn, until a FLUSH is quick.
        if self.mirror.request.action != MirrorAction::Nothing && self.can_flush() {
            // These copies go at the network's pace, not the destination
            // disk's: passes paced by FLUSHes may stop shrinking what is
            // dirty (a 4 KiB random writer dirties blocks about as fast as
            // the disk syncs them), and the first write-through cycle, which
            // writers wait for, would be that long.
            // Writers that kept the passes from converging would be chased
            // again by these copies: one FLUSH, and write-through from there.
            for round in 0..MAX_FLUSH_ROUNDS {
                let took = if round == 0 && self.mirror.request.verify {
                    // --verify's first check, while the destination syncs:
                    // a round that says nothing about how quick a FLUSH is.
                    self.pre_verify(true)?;
                    Duration::MAX
                } else {
                    self.flush_destination()?
                };
                if !converged {
                    break;
                }
                let converged = self.copy(&mut cursor, &mut Passes::default(), false)?;
                if !converged || took <= FLUSH_QUICK {
                    break;
                }
            }
        }
        // The cycles below resend ranges the copy may still have in flight
        // (a FLUSH waits for them too, but only a newstyle destination gets one).
        self.wait_window(0)?;
        if self.mirror.request.verify
            && !self.pre_verified
            && self.mirror.request.action != MirrorAction::Nothing
        {
            // Most of the checking while clients are still served: the
            // handover then checks only what was written since.
            self.pre_verify(false)?;
        }
        // Converging: client writes now wait for the cycle that sends them.
        self.mirror.set_phase(Phase::Converging);
        self.tracker.set_write_through(true);
        log::info!(
            "Closing clients to allow mirroring to converge ({} bytes dirty, {} bytes sent)",
            self.tracker.map.dirty_bytes(),
            self.mirror.wire_bytes.load(Ordering::SeqCst)
        );
        self.cycle()?;
        if self.mirror.request.action == MirrorAction::Nothing {
            // flexnbd-c's `nothing`: everything is on the destination; keep serving, no handover.
            self.tracker.abort();
            self.server.set_tracker(None);
            log::info!("Mirror complete; action 'nothing' keeps serving");
            return Ok(AttemptEnd::Done);
        }

        self.hand_over()
    }

    /// Sends dirty runs until [`Transfer::converged`], or until the passes
    /// stop shrinking what is dirty; returns whether it converged. With
    /// `flushes`, a FLUSH follows every [`FLUSH_EVERY`] bytes sent.
    fn copy(&mut self, cursor: &mut u64, passes: &mut Passes, flushes: bool) -> Result<bool, Stop> {
        let (mut since_flush, mut transfers) = (0u64, 0u32);
        while !self.converged() {
            self.check()?;
            let Some((offset, len)) = self.tracker.map.take_run(*cursor, self.max_transfer())
            else {
                break;
            };
            if offset < *cursor && passes.stalled(self.tracker.map.dirty_bytes() + len) {
                // Writers dirty blocks as fast as we send them:
                // write-through paces them from here on.
                log::info!(
                    "after {} passes {} bytes are still dirty: converging",
                    passes.done,
                    self.tracker.map.dirty_bytes() + len
                );
                self.tracker.map.mark(offset, len);
                return Ok(false);
            }
            if offset < *cursor {
                // A new pass may resend a range still in flight.
                self.wait_window(0)?;
            }
            self.send_range(offset, len)?;
            *cursor = offset + len;
            passes.sent += len;
            since_flush += len;
            transfers += 1;
            let due = since_flush >= FLUSH_EVERY || transfers >= FLUSH_EVERY_TRANSFERS;
            if flushes && due && self.can_flush() {
                // The last FLUSH (and all before it) must have finished: the
                // copy goes no faster than the destination's disk.
                self.wait_window(0)?;
                self.send_flush()?;
                (since_flush, transfers) = (0, 0);
            }
        }
        Ok(true)
    }

    /// Whether the destination takes FLUSH: newstyle, and it offers it.
    fn can_flush(&self) -> bool {
        self.client.style() == Style::Newstyle
            && self.client.flags().contains(TransmissionFlags::SEND_FLUSH)
    }

    /// A FLUSH to a newstyle destination that offers it, and its reply
    /// (with every reply before it).
    /// Returns how long it took.
    pub(super) fn flush_destination(&mut self) -> Result<Duration, Stop> {
        if !self.can_flush() {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        self.send_flush()?;
        self.wait_window(0)?;
        log::info!(
            "the destination has made every byte durable (FLUSH took {} ms)",
            started.elapsed().as_millis()
        );
        Ok(started.elapsed())
    }

    /// Sends a FLUSH without waiting for its reply; it takes a place in the
    /// window like a transfer of no bytes.
    pub(super) fn send_flush(&mut self) -> Result<(), Stop> {
        self.wait_window(WINDOW - 1)?;
        let req = Request {
            flags: CmdFlags(0),
            cmd: Cmd::FLUSH,
            handle: MIRROR_HANDLE,
            offset: 0,
            len: 0,
        };
        self.send_request(&req, 0)
    }

    /// Whether the dirty data is small enough to start write-through.
    fn converged(&self) -> bool {
        self.tracker.map.dirty_bytes() <= CONVERGE_BYTES
    }

    fn max_transfer(&self) -> u64 {
        MAX_TRANSFER.min(u64::from(self.client.max_request()))
    }

    /// Fails if the attempt was abandoned or the reply thread saw an error.
    pub(super) fn check(&self) -> Result<(), Stop> {
        if self.mirror.abandon.is_triggered() {
            return Err(Stop::Abandoned);
        }
        if let Some(why) = self.replies.lock().failed.clone() {
            return Err(Stop::Failed(why));
        }
        Ok(())
    }

    /// One write-through cycle: send everything dirty, wait for every reply.
    pub(super) fn cycle(&mut self) -> Result<(), Stop> {
        let n = self.tracker.begin_cycle();
        let started = Instant::now();
        let (mut cursor, mut bytes, mut transfers) = (0, 0, 0);
        while let Some((offset, len)) = self.tracker.map.take_run(cursor, self.max_transfer()) {
            self.check()?;
            if offset < cursor {
                // Wrapped round to blocks written meanwhile: one may still be in flight.
                self.wait_window(0)?;
            }
            self.send_range(offset, len)?;
            cursor = offset + len;
            bytes += len;
            transfers += 1;
        }
        self.wait_window(0)?;
        self.tracker.end_cycle(n);
        // Writers wait for up to two cycles: a slow one is worth knowing about.
        if started.elapsed() >= SLOW_CYCLE {
            log::info!(
                "a write-through cycle took {} ms for {bytes} bytes in {transfers} transfers",
                started.elapsed().as_millis()
            );
        }
        Ok(())
    }

    /// Waits until at most `most` transfers are in flight.
    ///
    /// Two overlapping WRITEs must never be in flight together: NBD does not
    /// order requests in flight, and a destination that serves them in
    /// parallel (ours does) may apply a stale copy of a block after a fresh
    /// one. Ranges taken in one sweep of the dirty map are disjoint; before
    /// a sweep wraps round, and before the cycles start, everything in
    /// flight is waited for.
    pub(super) fn wait_window(&self, most: usize) -> Result<(), Stop> {
        self.wait_for(|w| (w.lens.len() <= most).then_some(()))
    }

    /// Waits until `ready` finds what it wants in the window; fails when
    /// the reply thread saw an error or the attempt was abandoned.
    pub(super) fn wait_for<T>(
        &self,
        mut ready: impl FnMut(&mut Window) -> Option<T>,
    ) -> Result<T, Stop> {
        let mut w = self.replies.lock();
        loop {
            if let Some(why) = w.failed.clone() {
                return Err(Stop::Failed(why));
            }
            if let Some(got) = ready(&mut w) {
                return Ok(got);
            }
            if self.mirror.abandon.is_triggered() {
                return Err(Stop::Abandoned);
            }
            let (guard, _) = self
                .replies
                .cv
                .wait_timeout(w, Duration::from_millis(100))
                .unwrap_or_else(PoisonError::into_inner);
            w = guard;
        }
    }
}
