//! When the copy's passes over the dirty map stop paying: the dirty set no
//! longer shrinks, or they have sent their budget. Pure bookkeeping.

/// Most passes over the file before converging whatever is left dirty.
pub(super) const MAX_PASSES: u32 = 8;
/// The passes send at most this many times the file's size before
/// converging whatever is left dirty (with write-through, which holds each
/// writer only for the cycle that sends its write).
pub(super) const COPY_BUDGET: u64 = 2;

/// Passes over the dirty map while copying, to notice that they stop converging.
#[derive(Debug, Default)]
pub(super) struct Passes {
    /// Passes completed.
    pub(super) done: u32,
    /// What was dirty when the last pass ended.
    pub(super) last_dirty: Option<u64>,
    /// Bytes sent in the pass under way.
    pub(super) sent: u64,
    /// Bytes sent in all passes.
    pub(super) total: u64,
    /// Converge once the passes have sent this much, however they shrink:
    /// writers that keep redirtying the file are then paced by
    /// write-through instead of being chased pass after pass.
    pub(super) limit: Option<u64>,
}

impl Passes {
    /// A pass ended with `dirty` bytes left: whether to stop copying and
    /// converge, because the dirty set no longer shrinks by a tenth per pass
    /// (the writers dirty blocks as fast as they are sent), or after
    /// [`MAX_PASSES`]. The first pass is measured against what it sent: if
    /// the writers dirtied nine tenths of that meanwhile, another pass would
    /// only send it all again. Past [`Passes::limit`] bytes sent, too.
    pub(super) fn stalled(&mut self, dirty: u64) -> bool {
        self.done += 1;
        self.total += self.sent;
        let before = self.last_dirty.unwrap_or(self.sent);
        let stalled = before > 0 && dirty.saturating_mul(10) >= before.saturating_mul(9);
        self.last_dirty = Some(dirty);
        self.sent = 0;
        stalled || self.done >= MAX_PASSES || self.limit.is_some_and(|l| self.total >= l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_stall_when_the_dirty_set_stops_shrinking() {
        let mut p = Passes::default();
        assert!(
            !p.stalled(1000),
            "the first pass has nothing to compare with"
        );
        assert!(!p.stalled(800), "shrank by a fifth");
        assert!(p.stalled(750), "shrank by less than a tenth");
        let mut p = Passes::default();
        assert!(!p.stalled(100));
        assert!(p.stalled(200), "grew");
    }

    #[test]
    fn a_first_pass_whose_bytes_were_all_dirtied_again_stalls() {
        let mut p = Passes {
            sent: 20 << 20,
            ..Passes::default()
        };
        assert!(p.stalled(19 << 20), "writers redirtied 95% of the pass");
        let mut p = Passes {
            sent: 1 << 30,
            ..Passes::default()
        };
        assert!(
            !p.stalled(100 << 20),
            "a writer dirtied a tenth of the pass"
        );
        assert_eq!(p.sent, 0, "each pass counts its own bytes");
    }

    #[test]
    fn passes_end_once_they_sent_their_budget() {
        let mut p = Passes {
            limit: Some(2000),
            ..Passes::default()
        };
        // Shrinking by a fifth each time, which alone would go on.
        for (sent, dirty) in [(1000, 800), (800, 640)] {
            p.sent = sent;
            assert!(!p.stalled(dirty));
        }
        p.sent = 640;
        assert!(p.stalled(500), "2440 bytes sent of a 2000-byte budget");
    }

    #[test]
    fn passes_end_after_the_most_passes() {
        let mut p = Passes::default();
        let mut dirty = 1 << 30;
        for _ in 1..MAX_PASSES {
            assert!(!p.stalled(dirty));
            dirty /= 2;
        }
        assert!(p.stalled(dirty));
    }
}
