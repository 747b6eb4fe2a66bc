//! Hashing ahead: a `listen` whose file already holds data hashes it
//! block by block as soon as it starts, before any source asks, and keeps
//! the hashes until the first change, so that an incremental migration's
//! comparison (docs/hash-extension.md) finds them ready and only the
//! source has to read and hash its file. A source migrating with
//! `--verify` does the same while it copies (`mirror::engine`), so that
//! the comparison before the handover finds its side's hashes ready.
//! There the threads only read what the copy has already read
//! ([`HashAhead::follow`]): they add no reads of the disk and keep to the
//! migration's speed limit.
//!
//! A kept hash is only ever answered while it is certain to be the hash of
//! what the file holds:
//!
//! - every write, trim and zeroing through the [`Backing`] bumps its
//!   [`Backing::modifications`] before it touches the file; a hash is
//!   stored only if the count was the one this started with before and
//!   after its block was read, and none is answered once the count moved.
//!   The first change therefore drops all of them for good: a `--verify`
//!   after a migration, which always follows WRITEs, hashes the file anew;
//! - a change behind the server's back (another process writing the file)
//!   is seen by the file's modification and change times and its size,
//!   taken before the first block is read and compared at every hash
//!   request; one that lands within the same tick of the file system's
//!   clock as the start is not seen (docs/hash-extension.md says so).
//!
//! Bounded: at most [`MAX_BLOCKS`] hashes are kept (the file's first
//! 64 GiB with 64 KiB blocks, about 36 MiB), each thread reads through one
//! [`PIECE`]-byte buffer, and the threads stop at the first change, when
//! the server stops, or when they reach the end.

use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::backing::Backing;
use crate::proto::hash::Hash;

/// Most blocks whose hashes are kept.
pub const MAX_BLOCKS: u64 = 1 << 20;
/// A thread claims and reads this many bytes at a time (a multiple of the block size).
pub const PIECE: u64 = 1 << 20;
/// A thread waiting for the copy looks this often whether it should stop.
const STOP_LOOK: Duration = Duration::from_millis(100);

/// What identifies the file's content from outside: size, modification
/// and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(backing: &Backing) -> Option<Stamp> {
        let meta = backing.file().metadata().ok()?;
        Some(Stamp {
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

/// The hashes computed ahead for one file.
#[derive(Debug)]
pub struct HashAhead {
    block: u64,
    /// The file's size, and the bytes at its start that hashes are kept for.
    size: u64,
    covered: u64,
    /// [`Backing::modifications`] when hashing began.
    generation: u64,
    stamp: Stamp,
    /// One per block from the start; emptied (its memory freed) once dropped.
    hashes: RwLock<Vec<OnceLock<Hash>>>,
    /// Per [`PIECE`]: whether a hashing thread took it.
    claimed: Vec<AtomicBool>,
    /// Set for good once a hash may no longer be answered.
    dropped: AtomicBool,
    /// Pieces hashed (or found kept) by the threads, bytes they hashed,
    /// and bytes of hash requests answered from kept hashes.
    pieces_done: AtomicUsize,
    hashed: AtomicU64,
    answered: AtomicU64,
    /// How far into the file the threads may read: all of it, or, once
    /// [`HashAhead::follow`] was called, what a copy has read so far.
    ceiling: Mutex<u64>,
    raised: Condvar,
    /// Whether a thread has waited for the copy yet (logged once).
    caught_up: AtomicBool,
}

impl HashAhead {
    /// Hashes of `block`-byte blocks for `backing`, nothing computed yet.
    /// `None` if the file's attributes cannot be read.
    pub fn new(backing: &Backing, block: u32) -> Option<HashAhead> {
        let block = u64::from(block).max(1);
        debug_assert_eq!(PIECE % block, 0);
        let generation = backing.modifications();
        let stamp = Stamp::of(backing)?;
        let size = backing.size();
        let blocks = size.div_ceil(block).min(MAX_BLOCKS);
        let covered = (blocks * block).min(size);
        let pieces = covered.div_ceil(PIECE);
        Some(HashAhead {
            block,
            size,
            covered,
            generation,
            stamp,
            hashes: RwLock::new((0..blocks).map(|_| OnceLock::new()).collect()),
            claimed: (0..pieces).map(|_| AtomicBool::new(false)).collect(),
            dropped: AtomicBool::new(false),
            pieces_done: AtomicUsize::new(0),
            hashed: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            ceiling: Mutex::new(u64::MAX),
            raised: Condvar::new(),
            caught_up: AtomicBool::new(false),
        })
    }

    /// From now on the threads read only below what [`HashAhead::allow`]
    /// allowed: behind a copy that reads the file (a migration's source),
    /// so that they find it in the page cache instead of reading the disk
    /// a second time, and go no faster than a speed limit lets the copy.
    pub fn follow(&self) {
        *self.ceiling.lock().unwrap_or_else(PoisonError::into_inner) = 0;
    }

    /// The copy has read the file up to `end`: the threads may hash up to
    /// there (never lowered). `u64::MAX` lets them go to the end, or see
    /// at once that they were asked to stop.
    pub fn allow(&self, end: u64) {
        let mut ceiling = self.ceiling.lock().unwrap_or_else(PoisonError::into_inner);
        if end > *ceiling {
            *ceiling = end;
            self.raised.notify_all();
        }
    }

    /// Lets the threads read to the end and, if at most `pieces` are left
    /// to hash, waits up to `within` for them: a copy that has finished may
    /// leave them behind it (a few pieces when the machine is idle, more
    /// when it is busy: they run at nice 19), and whatever they have not
    /// hashed when a comparison asks is hashed again in its place.
    pub fn catch_up(&self, pieces: usize, within: Duration) {
        self.allow(u64::MAX);
        let deadline = Instant::now() + within;
        let mut ceiling = self.ceiling.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let left = self
                .claimed
                .len()
                .saturating_sub(self.pieces_done.load(Ordering::SeqCst));
            let now = Instant::now();
            if left == 0 || left > pieces || now >= deadline || self.dropped.load(Ordering::SeqCst)
            {
                return;
            }
            ceiling = self
                .raised
                .wait_timeout(ceiling, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until the threads may read up to `end`; false if `stop()`
    /// said so first. A stop comes with [`HashAhead::allow`]`(u64::MAX)`
    /// (see `mirror::engine`); the wait also looks every
    /// [`STOP_LOOK`] in case it does not.
    fn wait_allowed(&self, end: u64, stop: &impl Fn() -> bool) -> bool {
        let mut ceiling = self.ceiling.lock().unwrap_or_else(PoisonError::into_inner);
        if *ceiling >= end {
            // Not following a copy, or already allowed: the caller looks
            // at `stop()` itself once per piece.
            return true;
        }
        while *ceiling < end {
            if stop() {
                return false;
            }
            // Once, not at the start (before the copy read anything).
            if *ceiling > 0 && !self.caught_up.swap(true, Ordering::Relaxed) {
                log::info!(
                    "hashing ahead caught up with the copy at {} bytes: it follows the copy",
                    *ceiling
                );
            }
            ceiling = self
                .raised
                .wait_timeout(ceiling, STOP_LOOK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // Raised to let it see a stop, perhaps.
        !stop()
    }

    /// Whether kept hashes may still be answered: no change of ours since
    /// hashing began (and, with `look`, none from outside either, by the
    /// file's attributes). Once not, never again.
    fn usable(&self, backing: &Backing, look: bool) -> bool {
        if self.dropped.load(Ordering::SeqCst) {
            return false;
        }
        let ours = backing.modifications() != self.generation;
        let theirs = look && Stamp::of(backing) != Some(self.stamp);
        if ours || theirs {
            if theirs && !ours {
                self.drop_all(
                    "the file changed behind the server's back",
                    log::Level::Warn,
                );
            } else {
                self.drop_all("the file was written", log::Level::Debug);
            }
            return false;
        }
        true
    }

    /// Drops every kept hash for good and frees their memory, logging
    /// `why` the first time.
    fn drop_all(&self, why: &str, level: log::Level) {
        if !self.dropped.swap(true, Ordering::SeqCst) {
            log::log!(level, "{why}: the hashes computed ahead are dropped");
            *self.hashes.write().unwrap_or_else(PoisonError::into_inner) = Vec::new();
        }
    }

    fn kept(&self) -> RwLockReadGuard<'_, Vec<OnceLock<Hash>>> {
        self.hashes.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// One hashing thread: claims pieces in file order, reads and hashes
    /// them, until all are done, the file changes or `stop()` says so.
    pub fn run(&self, backing: &Backing, stop: impl Fn() -> bool) {
        let started = Instant::now();
        let mut buf = Vec::new();
        let mut hashes = Vec::new();
        for (i, claim) in self.claimed.iter().enumerate() {
            if stop() || !self.usable(backing, false) {
                return;
            }
            if claim.swap(true, Ordering::SeqCst) {
                continue;
            }
            hashes.clear();
            let offset = i as u64 * PIECE;
            let len = PIECE.min(self.covered - offset);
            if !self.wait_allowed(offset + len, &|| stop() || !self.usable(backing, false)) {
                return;
            }
            // A hash request may have hashed (and kept) it already.
            if !self.all_kept(offset, len) {
                if let Err(e) = self.hash_into(backing, offset, len, &mut buf, &mut hashes) {
                    self.drop_all(
                        &format!("reading at {offset} failed: {e}"),
                        log::Level::Warn,
                    );
                    return;
                }
                self.hashed.fetch_add(len, Ordering::SeqCst);
            }
            let done = self.pieces_done.fetch_add(1, Ordering::SeqCst) + 1;
            // Under the lock: a [`HashAhead::catch_up`] between its look and its wait hears it.
            drop(self.ceiling.lock().unwrap_or_else(PoisonError::into_inner));
            self.raised.notify_all();
            if done == self.claimed.len() {
                let ms = started.elapsed().as_millis().max(1);
                let hashed = self.hashed.load(Ordering::SeqCst);
                log::info!(
                    "hashed {hashed} bytes ahead in {ms} ms ({} MiB/s)",
                    u128::from(hashed >> 20) * 1000 / ms
                );
            }
        }
    }

    /// Reads and hashes `len` bytes at `offset` (on block boundaries),
    /// appending to `out` and keeping each hash if nothing changed meanwhile.
    fn hash_into(
        &self,
        backing: &Backing,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
        out: &mut Vec<Hash>,
    ) -> std::io::Result<()> {
        let first = out.len();
        backing.read_hashed(offset, len, self.block, PIECE, buf, out)?;
        if offset < self.covered && self.usable(backing, false) {
            let at = usize::try_from(offset / self.block).unwrap_or(usize::MAX);
            for (slot, hash) in self.kept().iter().skip(at).zip(&out[first..]) {
                let _ = slot.set(*hash);
            }
        }
        Ok(())
    }

    fn all_kept(&self, offset: u64, len: u64) -> bool {
        let first = offset / self.block;
        let last = (offset + len).div_ceil(self.block);
        let kept = self.kept();
        (first..last).all(|b| {
            usize::try_from(b)
                .ok()
                .and_then(|b| kept.get(b))
                .is_some_and(|h| h.get().is_some())
        })
    }

    /// Appends the kept hashes of the blocks of `len` bytes at `offset` to
    /// `out` if all of them are kept (under one look at them: they may be
    /// dropped meanwhile); whether they were.
    fn take_kept(&self, offset: u64, len: u64, out: &mut Vec<Hash>) -> bool {
        let kept = self.kept();
        let first = usize::try_from(offset / self.block).unwrap_or(usize::MAX);
        let count = usize::try_from(len.div_ceil(self.block)).unwrap_or(usize::MAX);
        let Some(slots) = first
            .checked_add(count)
            .and_then(|last| kept.get(first..last))
        else {
            return false;
        };
        if slots.iter().any(|h| h.get().is_none()) {
            return false;
        }
        out.extend(slots.iter().filter_map(OnceLock::get));
        true
    }

    /// The hashes of the blocks of `len` bytes at `offset` (on block
    /// boundaries, within the file), appended to `out`: kept ones where
    /// they may be answered, the others read into `buf`, hashed and kept.
    ///
    /// # Errors
    ///
    /// Reading the file failed.
    pub fn hashes(
        &self,
        backing: &Backing,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
        out: &mut Vec<Hash>,
    ) -> std::io::Result<()> {
        let usable = self.usable(backing, true);
        let end = (offset + len).min(self.size);
        let mut at = offset;
        while at < end {
            let n = (end - at).min(PIECE);
            if usable && self.take_kept(at, n, out) {
                self.answered.fetch_add(n, Ordering::Relaxed);
            } else {
                self.hash_into(backing, at, n, buf, out)?;
            }
            at += n;
        }
        Ok(())
    }

    /// Appends the hashes of the blocks of `len` bytes at `offset` (on
    /// block boundaries, within the file) to `out` and says so if every one
    /// is kept and may be answered; else leaves `out` as it was and
    /// returns false, reading nothing (a migration's source, whose
    /// comparison hashes what is not kept on its own threads).
    pub fn kept_hashes(
        &self,
        backing: &Backing,
        offset: u64,
        len: u64,
        out: &mut Vec<Hash>,
    ) -> bool {
        if !self.usable(backing, true) {
            return false;
        }
        let first = out.len();
        let end = (offset + len).min(self.size);
        let mut at = offset;
        while at < end {
            let n = (end - at).min(PIECE);
            if !self.take_kept(at, n, out) {
                out.truncate(first);
                return false;
            }
            at += n;
        }
        self.answered
            .fetch_add(end.saturating_sub(offset), Ordering::Relaxed);
        true
    }

    /// Bytes of hash requests answered from kept hashes so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hash::hash_block;
    use std::io::Write;

    const BLOCK: u32 = 64 << 10;

    fn file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        f.write_all(&data).unwrap();
        f.flush().unwrap();
        (f, data)
    }

    fn expected(data: &[u8], offset: usize, len: usize) -> Vec<Hash> {
        data[offset..offset + len]
            .chunks(BLOCK as usize)
            .map(hash_block)
            .collect()
    }

    /// Asks `ahead` for the hashes of `len` bytes at `offset` and checks
    /// they are those of `data`, the file's content.
    #[track_caller]
    fn assert_answers(
        ahead: &HashAhead,
        backing: &Backing,
        data: &[u8],
        offset: usize,
        len: usize,
    ) {
        let (mut buf, mut out) = (Vec::new(), Vec::new());
        ahead
            .hashes(backing, offset as u64, len as u64, &mut buf, &mut out)
            .unwrap();
        assert_eq!(out, expected(data, offset, len));
    }

    #[test]
    fn hashes_kept_ahead_are_the_files_and_are_answered() {
        // 3.5 MiB: a short last piece and a short last block.
        let len = 3 * (1 << 20) + (1 << 19) + 4096;
        let (f, data) = file(len);
        let backing = Backing::open(f.path(), false).unwrap();
        let size = backing.size() as usize;
        let ahead = HashAhead::new(&backing, BLOCK).unwrap();
        ahead.run(&backing, || false);
        assert_eq!(ahead.hashed.load(Ordering::SeqCst), size as u64);
        assert_answers(&ahead, &backing, &data, 0, size);
        assert_eq!(ahead.answered(), size as u64);
        let at = 2 * BLOCK as usize;
        assert_answers(&ahead, &backing, &data, at, size - at);
    }

    #[test]
    fn a_write_drops_every_kept_hash() {
        let (f, mut data) = file(4 << 20);
        let backing = Backing::open(f.path(), false).unwrap();
        let ahead = HashAhead::new(&backing, BLOCK).unwrap();
        ahead.run(&backing, || false);
        backing.write_at(b"changed", 5 << 20 >> 1).unwrap();
        data[(5 << 20 >> 1)..(5 << 20 >> 1) + 7].copy_from_slice(b"changed");
        assert_answers(&ahead, &backing, &data, 0, 4 << 20);
        assert_eq!(ahead.answered(), 0);
        assert!(ahead.kept().is_empty(), "dropped hashes keep their memory");
        // Hashed again, not kept: the write moved the count for good.
        assert_answers(&ahead, &backing, &data, 0, 1 << 20);
        assert_eq!(ahead.answered(), 0);
    }

    #[test]
    fn a_change_behind_the_servers_back_drops_them() {
        let (f, mut data) = file(2 << 20);
        let backing = Backing::open(f.path(), false).unwrap();
        let ahead = HashAhead::new(&backing, BLOCK).unwrap();
        ahead.run(&backing, || false);
        // Another process's write, seen by the file's times: set them apart
        // from the start's explicitly, as a later tick of the clock would.
        let other = std::fs::OpenOptions::new()
            .write(true)
            .open(f.path())
            .unwrap();
        std::os::unix::fs::FileExt::write_all_at(&other, b"outside", 4096).unwrap();
        data[4096..4103].copy_from_slice(b"outside");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        other.set_modified(later).unwrap();
        assert_answers(&ahead, &backing, &data, 0, 2 << 20);
        assert_eq!(ahead.answered(), 0);
    }

    #[test]
    fn a_stopped_thread_leaves_the_rest_to_the_requests() {
        let (f, data) = file(3 << 20);
        let backing = Backing::open(f.path(), false).unwrap();
        let ahead = HashAhead::new(&backing, BLOCK).unwrap();
        let calls = std::cell::Cell::new(0);
        ahead.run(&backing, || {
            calls.set(calls.get() + 1);
            calls.get() > 1
        });
        assert_eq!(ahead.hashed.load(Ordering::SeqCst), 1 << 20);
        assert_answers(&ahead, &backing, &data, 0, 3 << 20);
        // The first piece was kept ahead; the others were hashed on request and kept.
        assert_eq!(ahead.answered(), 1 << 20);
        assert_answers(&ahead, &backing, &data, 0, 3 << 20);
        assert_eq!(ahead.answered(), 4 << 20);
    }

    /// Polls `what` until it holds, for at most 10 s.
    #[track_caller]
    fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "not within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn following_a_copy_it_hashes_only_what_the_copy_read_and_stops_when_told() {
        let (f, data) = file(4 << 20);
        let backing = Backing::open(f.path(), false).unwrap();
        let ahead = HashAhead::new(&backing, BLOCK).unwrap();
        ahead.follow();
        let stop = AtomicBool::new(false);
        let hashed = || ahead.hashed.load(Ordering::SeqCst);
        std::thread::scope(|s| {
            let thread = s.spawn(|| ahead.run(&backing, || stop.load(Ordering::SeqCst)));
            ahead.allow(2 << 20);
            wait_for(|| hashed() == 2 << 20);
            ahead.allow(1 << 20);
            ahead.allow((3 << 20) - 1);
            assert!(
                !ahead.all_kept(2 << 20, 1 << 20),
                "it read a piece the copy had not finished reading"
            );
            ahead.allow(3 << 20);
            wait_for(|| hashed() == 3 << 20);
            // Waiting for the last piece: woken to stop.
            stop.store(true, Ordering::SeqCst);
            ahead.allow(u64::MAX);
            thread.join().unwrap();
        });
        assert_eq!(hashed(), 3 << 20, "it hashed on after it was told to stop");
        assert_answers(&ahead, &backing, &data, 0, 4 << 20);
        assert_eq!(ahead.answered(), 3 << 20);
    }

    #[test]
    fn kept_hashes_answers_only_what_is_all_kept_and_reads_nothing() {
        // 2.5 MiB: the second request's last piece is short.
        let len = 2 * (1 << 20) + (1 << 19);
        let (f, data) = file(len);
        let backing = Backing::open(f.path(), false).unwrap();
        let ahead = HashAhead::new(&backing, BLOCK).unwrap();
        let mut out = vec![[7u8; 32]];
        assert!(
            !ahead.kept_hashes(&backing, 0, 1 << 20, &mut out),
            "nothing is kept yet"
        );
        assert_eq!(out.len(), 1, "a refusal leaves out as it was");
        // Only the first piece hashed: a range reaching into the second is refused.
        let calls = std::cell::Cell::new(0);
        ahead.run(&backing, || {
            calls.set(calls.get() + 1);
            calls.get() > 1
        });
        assert!(!ahead.kept_hashes(&backing, 0, 2 << 20, &mut out));
        assert_eq!(out.len(), 1);
        assert!(ahead.kept_hashes(&backing, 0, 1 << 20, &mut out));
        assert_eq!(out[1..], expected(&data, 0, 1 << 20)[..]);
        ahead.run(&backing, || false);
        out.clear();
        assert!(ahead.kept_hashes(&backing, 1 << 20, (len - (1 << 20)) as u64, &mut out));
        assert_eq!(out, expected(&data, 1 << 20, len - (1 << 20)));
        assert_eq!(ahead.answered(), len as u64);
        // A write of ours: none is answered any more.
        backing.write_at(b"x", 0).unwrap();
        out.clear();
        assert!(!ahead.kept_hashes(&backing, 1 << 20, 1 << 20, &mut out));
        assert!(out.is_empty());
    }
}
