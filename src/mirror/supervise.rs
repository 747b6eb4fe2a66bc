//! The mirror's supervisor thread: runs attempts (`engine`) until the
//! migration is done, abandoned, or fails for good, retrying a second
//! after a failure once a first attempt reached the destination.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use crate::status::{Outcome, Phase};

use super::{
    AttemptEnd, ErrorKind, Mirror, MirrorAction, RETRY_DELAY, Shared, Slot, StartError, engine,
    lock,
};

impl Shared {
    /// The supervisor: attempts until done, abandoned, or a first attempt fails before GO.
    pub(super) fn supervise(
        &self,
        mirror: &Arc<Mirror>,
        first: mpsc::Sender<Result<(), StartError>>,
    ) {
        let mut first = Some(first);
        let mut ever_go = false;
        loop {
            *lock(&mirror.started) = Instant::now();
            mirror.acked.store(0, Ordering::SeqCst);
            mirror.set_phase(Phase::Connecting);
            let attempt = || {
                engine::attempt(&self.server, mirror, &mut |commit| {
                    ever_go |= commit.is_ok();
                    if let Some(tx) = first.take() {
                        let _ = tx.send(commit);
                    }
                })
            };
            let Ok(end) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(attempt)) else {
                // A bug: undo what the attempt may have left, and do not retry.
                log::error!("internal error in the mirror; this migration is abandoned");
                if let Some(tracker) = lock(&mirror.tracker).take() {
                    tracker.abort();
                }
                self.server.set_tracker(None);
                if !mirror.committed.load(Ordering::SeqCst) {
                    self.server.set_clients_allowed(true);
                }
                mirror.attempt_over();
                *lock(&self.last) = Some(Outcome::Failed);
                break;
            };
            *lock(&mirror.tracker) = None;
            mirror.attempt_over();
            match end {
                AttemptEnd::Done => {
                    log::info!("Mirror supervisor success, exiting");
                    *lock(&self.last) = Some(Outcome::Done);
                    self.last_verified
                        .store(mirror.verified.load(Ordering::SeqCst), Ordering::SeqCst);
                    mirror.completed.store(true, Ordering::SeqCst);
                    if mirror.request.action != MirrorAction::Nothing {
                        self.migrated.store(true, Ordering::SeqCst);
                    }
                    break;
                }
                AttemptEnd::Abandoned => {
                    log::info!("Mirror abandoned");
                    *lock(&self.last) = Some(Outcome::Stopped);
                    break;
                }
                // A destination that fails verification would fail it again.
                AttemptEnd::Failed(why) if ever_go && why.kind() != ErrorKind::Verify => {
                    log::warn!("Mirror failed, retrying: {why}");
                    mirror.set_phase(Phase::Retrying);
                    mirror.retries.fetch_add(1, Ordering::SeqCst);
                    if mirror.abandon.wait_timeout(RETRY_DELAY) {
                        log::info!("Mirror abandoned");
                        *lock(&self.last) = Some(Outcome::Stopped);
                        break;
                    }
                }
                AttemptEnd::Failed(why) => {
                    log::warn!("Mirror failed, giving up: {why}");
                    *lock(&self.last) = Some(Outcome::Failed);
                    break;
                }
            }
        }
        // Free the slot for the next `mirror`, unless break or shutdown owns it now.
        let mut slot = lock(&self.slot);
        if let Slot::Running(m) = &*slot {
            if Arc::ptr_eq(m, mirror) {
                *slot = Slot::Idle;
            }
        }
    }
}

pub(super) fn spawn_supervisor(
    shared: &Arc<Shared>,
    mirror: Arc<Mirror>,
    first: mpsc::Sender<Result<(), StartError>>,
) -> std::io::Result<()> {
    let shared = shared.clone();
    let thread_mirror = mirror.clone();
    let handle = std::thread::Builder::new()
        .name("mirror".into())
        .spawn(move || shared.supervise(&thread_mirror, first))?;
    *lock(&mirror.thread) = Some(handle);
    Ok(())
}
