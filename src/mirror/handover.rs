//! The handover at the end of an attempt: refuse new clients, stop the
//! connected ones, send what they wrote last, make the destination durable,
//! (with `--verify`) check its hashes, close the listener, DISCONNECT.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::proto::types::{Cmd, CmdFlags};
use crate::proto::wire::Request;

use super::engine::{Stop, Transfer};
use super::error::{ErrorKind as Kind, MirrorError};
use super::replies::lock_closed;
use super::{AttemptEnd, MirrorAction, Phase};

/// How often the handover checks whether the clients have gone.
const HANDOVER_POLL: Duration = Duration::from_millis(2);

impl Transfer<'_> {
    /// Hands the file over once everything is on the destination.
    pub(super) fn hand_over(&mut self) -> Result<AttemptEnd, Stop> {
        // Handover: refuse new clients and stop the connected ones; their
        // last writes are mirrored by the cycles below before they are answered.
        self.mirror.set_phase(Phase::Handover);
        let refused_at = Instant::now();
        self.server.set_clients_allowed(false);
        self.server.stop_clients();
        // Clients finish what they sent within the grace; one that does not
        // read its replies (a paused VM, a half-open connection) would hold
        // its last reply, and the handover, for ever: its socket is shut.
        log::info!(
            "handover: asking clients to stop ({} bytes sent)",
            self.mirror.wire_bytes.load(Ordering::SeqCst)
        );
        let grace = self.server.handover_grace();
        let mut forced = false;
        while self.server.num_clients() > 0 {
            if let Err(stop) = self.check() {
                self.server.set_clients_allowed(true);
                return Err(stop);
            }
            if !forced && refused_at.elapsed() >= grace {
                log::warn!(
                    "handover: {} client(s) still connected {} ms after being asked to stop; closing their connections",
                    self.server.num_clients(),
                    grace.as_millis()
                );
                self.server.close_clients();
                forced = true;
            }
            self.tracker.wait_for_writes(HANDOVER_POLL);
            self.cycle()?;
        }
        // No client is left to write: one last cycle leaves nothing dirty.
        self.cycle()?;
        if !self.tracker.map.is_clean() {
            return Err(Stop::Failed(MirrorError::new(
                Kind::Internal,
                "data left dirty after the last cycle",
            )));
        }
        // Acknowledged is not durable everywhere: flexnbd-c's listen syncs
        // every write before its reply, but a newstyle destination (ours, qemu-nbd,
        // nbdkit) may only have it in memory. Make it durable before the
        // source lets go (and unlinks). Old-style destinations get flexnbd-c's
        // wire unchanged.
        if let Err(stop) = self.flush_destination() {
            self.server.set_clients_allowed(true);
            return Err(stop);
        }
        if let Err(stop) = self.check() {
            self.server.set_clients_allowed(true);
            return Err(stop);
        }
        if self.mirror.request.verify {
            if let Err(stop) = self.verify() {
                self.server.set_clients_allowed(true);
                return Err(stop);
            }
        }
        // Point of no return: close the NBD listener; no source client is served after this.
        self.mirror.committed.store(true, Ordering::SeqCst);
        self.tracker.abort();
        self.server.set_tracker(None);
        self.server.shutdown();
        while !self.server.wait_closed(Duration::from_secs(1)) {
            log::info!("waiting for the NBD listener to close");
        }
        log::info!(
            "handover: new clients refused for {} ms before the listener closed",
            refused_at.elapsed().as_millis()
        );
        if self.mirror.request.action == MirrorAction::Unlink {
            let path = self.server.backing().path().to_owned();
            match std::fs::remove_file(&path) {
                Ok(()) => log::info!("unlinked {}", path.display()),
                // The data is on the destination even if the unlink failed:
                // report it, but the migration is done.
                Err(e) => log::error!(
                    "migration completed, but cannot unlink {} after migrating it: {e}",
                    path.display()
                ),
            }
        }
        // Every byte is acknowledged: hand control over.
        lock_closed(self.replies);
        let handle = self.client.next_handle();
        let disc = Request {
            flags: CmdFlags(0),
            cmd: Cmd::DISC,
            handle,
            offset: 0,
            len: 0,
        };
        match self.client.send_request(&disc, &[]) {
            Ok(()) => log::info!("Mirror sent."),
            Err(e) => log::error!("cannot send DISCONNECT to the destination: {e}"),
        }
        // Queued bytes still go out before the FIN; this also wakes the reply thread.
        let _ = self.client.shutdown();
        log::info!(
            "handover: {} bytes sent for {} bytes of file in {} attempts",
            self.mirror.wire_bytes.load(Ordering::SeqCst),
            self.server.backing().size(),
            self.mirror.retries.load(Ordering::SeqCst) + 1
        );
        log::info!("Server closed, quitting after successful migration");
        Ok(AttemptEnd::Done)
    }
}
