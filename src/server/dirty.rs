//! What a running migration needs from client writes: a map of the blocks
//! still to send, and write-through once the migration is converging.
//!
//! [`DirtyMap`] has one bit per [`DIRTY_BLOCK`] bytes, in `AtomicU64`
//! words, so client writers mark ranges without a lock while the mirror
//! takes runs of set bits. Ordering is what makes it correct: a writer
//! marks its range *after* its data reached the file, and the mirror
//! clears bits *before* it reads the data, so a write that lands during a
//! transfer is always sent again.
//!
//! [`Tracker`] wraps the map for one migration attempt. In write-through
//! mode a writer, after marking, waits until the mirror has completed a
//! full send cycle that began after its mark, so its data is on the
//! destination before the client gets its reply; the dirty set cannot grow
//! faster than the mirror sends, and the migration converges.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The longest a writer waits for write-through; after it the write is
/// acknowledged anyway (it stays dirty and will be sent: only the pacing is lost).
const WRITE_THROUGH_WAIT: Duration = Duration::from_secs(10);

/// Dirty tracking for one migration attempt, shared by client writers and the mirror.
#[derive(Debug)]
pub struct Tracker {
    /// The blocks still to send.
    pub map: DirtyMap,
    /// Every block written since the mirror last drained it (`mirror
    /// --verify` checks these again at the handover).
    pub touched: DirtyMap,
    write_through: AtomicBool,
    cycles: Mutex<Cycles>,
    cv: Condvar,
}

#[derive(Debug, Default)]
struct Cycles {
    started: u64,
    done: u64,
    /// A write was marked since the mirror last looked.
    pending: bool,
    aborted: bool,
}

impl Tracker {
    /// A tracker for `size` bytes with nothing dirty and write-through off.
    pub fn new(size: u64) -> Self {
        Tracker {
            map: DirtyMap::new(size),
            touched: DirtyMap::new(size),
            write_through: AtomicBool::new(false),
            cycles: Mutex::new(Cycles::default()),
            cv: Condvar::new(),
        }
    }

    /// Records a client write whose data is already in the file; in
    /// write-through mode, waits until the mirror has sent it.
    pub fn note_write(&self, offset: u64, len: u64) {
        self.map.mark(offset, len);
        self.touched.mark(offset, len);
        if !self.write_through.load(Ordering::SeqCst) {
            return;
        }
        let mut cycles = self.cycles.lock().unwrap_or_else(PoisonError::into_inner);
        // The cycle after the one running now is sure to see our mark.
        let target = cycles.started + 1;
        cycles.pending = true;
        self.cv.notify_all();
        let (cycles, timeout) = self
            .cv
            .wait_timeout_while(cycles, WRITE_THROUGH_WAIT, |c| {
                c.done < target && !c.aborted
            })
            .unwrap_or_else(PoisonError::into_inner);
        if timeout.timed_out() && !cycles.aborted {
            log::warn!(
                "write-through wait timed out; acknowledging a write the mirror has not sent yet"
            );
        }
    }

    /// Turns write-through on or off.
    pub fn set_write_through(&self, on: bool) {
        self.write_through.store(on, Ordering::SeqCst);
    }

    /// Whether write-through is on.
    pub fn write_through(&self) -> bool {
        self.write_through.load(Ordering::SeqCst)
    }

    /// The mirror starts a send cycle; returns its number for [`Tracker::end_cycle`].
    pub fn begin_cycle(&self) -> u64 {
        let mut cycles = self.cycles.lock().unwrap_or_else(PoisonError::into_inner);
        cycles.started += 1;
        cycles.pending = false;
        cycles.started
    }

    /// The mirror finished cycle `n`: everything dirty when it began is acknowledged.
    pub fn end_cycle(&self, n: u64) {
        let mut cycles = self.cycles.lock().unwrap_or_else(PoisonError::into_inner);
        cycles.done = cycles.done.max(n);
        self.cv.notify_all();
    }

    /// The mirror waits up to `timeout` for a write-through writer; returns whether one is waiting.
    pub fn wait_for_writes(&self, timeout: Duration) -> bool {
        let cycles = self.cycles.lock().unwrap_or_else(PoisonError::into_inner);
        let (cycles, _) = self
            .cv
            .wait_timeout_while(cycles, timeout, |c| !c.pending && !c.aborted)
            .unwrap_or_else(PoisonError::into_inner);
        cycles.pending
    }

    /// The attempt is over: release every waiting writer for good.
    pub fn abort(&self) {
        let mut cycles = self.cycles.lock().unwrap_or_else(PoisonError::into_inner);
        cycles.aborted = true;
        self.write_through.store(false, Ordering::SeqCst);
        self.cv.notify_all();
    }
}

/// Bytes per bit: the granularity of re-sending.
pub const DIRTY_BLOCK: u64 = 4096;

/// The set of blocks still to send.
#[derive(Debug)]
pub struct DirtyMap {
    words: Vec<AtomicU64>,
    size: u64,
    /// Set bits, kept so `dirty_bytes` needs no scan.
    count: AtomicU64,
}

impl DirtyMap {
    /// A map for `size` bytes with nothing dirty.
    pub fn new(size: u64) -> Self {
        let blocks = size.div_ceil(DIRTY_BLOCK);
        let words = usize::try_from(blocks.div_ceil(64)).unwrap_or(usize::MAX);
        DirtyMap {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            size,
            count: AtomicU64::new(0),
        }
    }

    /// The bytes covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Marks every block dirty (the start of a full copy).
    pub fn mark_all(&self) {
        self.mark(0, self.size);
    }

    /// Marks the blocks overlapping `[offset, offset + len)`.
    pub fn mark(&self, offset: u64, len: u64) {
        if len == 0 || offset >= self.size {
            return;
        }
        let end = offset.saturating_add(len).min(self.size);
        let first = offset / DIRTY_BLOCK;
        let last = (end - 1) / DIRTY_BLOCK;
        self.update_bits(
            first,
            last,
            |word, mask| {
                let old = word.fetch_or(mask, Ordering::SeqCst);
                u64::from((mask & !old).count_ones())
            },
            true,
        );
    }

    /// Clears blocks `first..=last` (block numbers), counting how many were set.
    fn update_bits(&self, first: u64, last: u64, f: impl Fn(&AtomicU64, u64) -> u64, add: bool) {
        let mut block = first;
        let mut changed = 0;
        while block <= last {
            let word = usize::try_from(block / 64).unwrap_or(usize::MAX);
            let bit = block % 64;
            let span = (64 - bit).min(last - block + 1);
            let mask = if span == 64 {
                u64::MAX
            } else {
                ((1u64 << span) - 1) << bit
            };
            if let Some(w) = self.words.get(word) {
                changed += f(w, mask);
            }
            block += span;
        }
        if add {
            self.count.fetch_add(changed, Ordering::SeqCst);
        } else {
            self.count.fetch_sub(changed, Ordering::SeqCst);
        }
    }

    /// Bytes currently marked (whole blocks; the last one may be short).
    pub fn dirty_bytes(&self) -> u64 {
        (self.count.load(Ordering::SeqCst) * DIRTY_BLOCK).min(self.size)
    }

    /// Whether nothing is dirty.
    pub fn is_clean(&self) -> bool {
        self.count.load(Ordering::SeqCst) == 0
    }

    /// Finds the first run of dirty blocks at or after byte `from` (wrapping
    /// to the start once), at most `max` bytes long, clears it and returns
    /// it as `(offset, len)`. The caller must then send that range.
    pub fn take_run(&self, from: u64, max: u64) -> Option<(u64, u64)> {
        if self.is_clean() || self.size == 0 {
            return None;
        }
        let start_block = (from / DIRTY_BLOCK) % self.size.div_ceil(DIRTY_BLOCK);
        let first = self.find_set(start_block).or_else(|| self.find_set(0))?;
        let max_blocks = (max / DIRTY_BLOCK).max(1);
        let total = self.size.div_ceil(DIRTY_BLOCK);
        let mut last = first;
        while last + 1 < total && last + 1 - first < max_blocks && self.is_set(last + 1) {
            last += 1;
        }
        self.update_bits(
            first,
            last,
            |word, mask| {
                let old = word.fetch_and(!mask, Ordering::SeqCst);
                u64::from((old & mask).count_ones())
            },
            false,
        );
        let offset = first * DIRTY_BLOCK;
        let end = ((last + 1) * DIRTY_BLOCK).min(self.size);
        Some((offset, end - offset))
    }

    fn is_set(&self, block: u64) -> bool {
        let word = usize::try_from(block / 64).unwrap_or(usize::MAX);
        self.words
            .get(word)
            .is_some_and(|w| w.load(Ordering::SeqCst) & (1 << (block % 64)) != 0)
    }

    /// The first set block at or after `block`.
    fn find_set(&self, block: u64) -> Option<u64> {
        let total = self.size.div_ceil(DIRTY_BLOCK);
        let mut word = usize::try_from(block / 64).ok()?;
        let mut mask = u64::MAX << (block % 64);
        while word < self.words.len() {
            let bits = self.words[word].load(Ordering::SeqCst) & mask;
            if bits != 0 {
                let found = word as u64 * 64 + u64::from(bits.trailing_zeros());
                return (found < total).then_some(found);
            }
            word += 1;
            mask = u64::MAX;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_takes_runs() {
        let map = DirtyMap::new(1 << 20);
        assert!(map.is_clean());
        map.mark(4095, 2); // touches blocks 0 and 1
        map.mark(40960, 100);
        assert_eq!(map.dirty_bytes(), 3 * 4096);
        assert_eq!(map.take_run(0, 1 << 20), Some((0, 8192)));
        assert_eq!(map.take_run(0, 1 << 20), Some((40960, 4096)));
        assert_eq!(map.take_run(0, 1 << 20), None);
        assert!(map.is_clean());
    }

    #[test]
    fn runs_are_bounded_and_wrap() {
        let map = DirtyMap::new(64 << 20);
        map.mark_all();
        assert_eq!(map.dirty_bytes(), 64 << 20);
        assert_eq!(map.take_run(0, 8 << 20), Some((0, 8 << 20)));
        assert_eq!(map.take_run(60 << 20, 8 << 20), Some((60 << 20, 4 << 20)));
        // Nothing left after 60 MiB: wraps to the lowest dirty block.
        assert_eq!(map.take_run(62 << 20, 8 << 20), Some((8 << 20, 8 << 20)));
        assert_eq!(map.dirty_bytes(), (64 - 20) << 20);
    }

    #[test]
    fn odd_sizes_end_exactly() {
        let map = DirtyMap::new(10_000);
        map.mark_all();
        assert_eq!(map.dirty_bytes(), 10_000);
        assert_eq!(map.take_run(0, 1 << 30), Some((0, 10_000)));
        map.mark(9_999, 10);
        assert_eq!(map.take_run(0, 1 << 30), Some((8192, 1808)));
        map.mark(20_000, 5);
        assert!(map.is_clean());
    }

    #[test]
    fn remarking_counts_once() {
        let map = DirtyMap::new(1 << 20);
        map.mark(0, 8192);
        map.mark(0, 8192);
        assert_eq!(map.dirty_bytes(), 8192);
    }

    #[test]
    fn write_through_waits_for_the_next_full_cycle() {
        let t = std::sync::Arc::new(Tracker::new(1 << 20));
        t.set_write_through(true);
        let first = t.begin_cycle(); // a cycle already running when the write lands
        let writer = {
            let t = t.clone();
            std::thread::spawn(move || t.note_write(0, 4096))
        };
        assert!(t.wait_for_writes(Duration::from_secs(10)));
        t.end_cycle(first);
        let second = t.begin_cycle();
        assert_eq!(t.map.take_run(0, 1 << 20), Some((0, 4096)));
        assert!(!writer.is_finished());
        t.end_cycle(second);
        writer.join().unwrap();
    }

    #[test]
    fn abort_releases_writers_and_stops_write_through() {
        let t = std::sync::Arc::new(Tracker::new(1 << 20));
        t.set_write_through(true);
        let writer = {
            let t = t.clone();
            std::thread::spawn(move || t.note_write(0, 1))
        };
        assert!(t.wait_for_writes(Duration::from_secs(10)));
        t.abort();
        writer.join().unwrap();
        assert!(!t.write_through());
        t.note_write(8192, 1); // returns at once
        assert_eq!(t.map.dirty_bytes(), 8192);
    }

    #[test]
    fn concurrent_marks_are_never_lost() {
        let map = std::sync::Arc::new(DirtyMap::new(256 << 20));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let map = map.clone();
                std::thread::spawn(move || {
                    for i in 0..1000u64 {
                        map.mark((i * 4 + t) * 4096 * 7 % (256 << 20), 4096);
                    }
                })
            })
            .collect();
        let mut taken = 0u64;
        for t in threads {
            t.join().unwrap();
        }
        while let Some((_, len)) = map.take_run(0, 8 << 20) {
            taken += len;
        }
        assert!(taken > 0 && map.is_clean());
    }
}
