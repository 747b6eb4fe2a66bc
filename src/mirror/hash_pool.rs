//! Our side of a hash comparison ([`super::hashes`]): the ranges of the
//! hash requests in the window, cut into pieces that whichever thread is
//! free claims.
//!
//! The mirror's thread queues a job for each hash request it sends and
//! takes the jobs back in order, helping with the one it takes; helper
//! threads hash pieces of the queued jobs, first job first. Claiming pieces
//! rather than splitting each request into fixed shares keeps every thread
//! busy to the end of each request (a share's thread that the scheduler
//! left waiting held up the whole request), and lets the helpers hash the
//! next requests while the mirror's thread waits for the destination's
//! hashes.
//!
//! Bounded: only queued jobs are hashed (the mirror queues one per hash
//! request in flight), each thread reads through one buffer of a piece,
//! and a job's hashes are held only until it is taken.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use crate::backing::Backing;
use crate::proto::hash::Hash;

/// Why a piece has no hashes.
#[derive(Debug)]
pub(super) enum Failure {
    /// Reading our file failed.
    Read(io::Error),
    /// The helper hashing it panicked.
    Panicked,
}

/// The queued jobs and the threads that hash them; see the module documentation.
#[derive(Debug)]
pub(super) struct Pool {
    state: Mutex<State>,
    /// Signalled when a piece is hashed, a job queued, or the pool closes.
    cv: Condvar,
    /// Bytes per piece: a whole number of blocks.
    piece: u64,
    block: u64,
}

#[derive(Debug, Default)]
struct State {
    jobs: VecDeque<Job>,
    /// The number of the first queued job (jobs are numbered in queue order).
    first: u64,
    closing: bool,
}

#[derive(Debug)]
struct Job {
    offset: u64,
    len: u64,
    /// Pieces claimed and pieces hashed, from the start.
    claimed: usize,
    done: usize,
    results: Vec<Option<Result<Vec<Hash>, Failure>>>,
}

/// A claimed piece: its job's number, its index in the job, and its range.
struct Claim {
    job: u64,
    index: usize,
    offset: u64,
    len: u64,
}

impl Pool {
    /// A pool hashing `block`-byte blocks, reading about `piece` bytes at a time.
    pub(super) fn new(block: u64, piece: u64) -> Pool {
        let block = block.max(1);
        Pool {
            state: Mutex::new(State::default()),
            cv: Condvar::new(),
            piece: (piece / block).max(1) * block,
            block,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the `len` bytes at `offset` (a whole number of blocks but
    /// perhaps the file's last) to be hashed.
    pub(super) fn push(&self, offset: u64, len: u64) {
        let pieces = usize::try_from(len.div_ceil(self.piece)).unwrap_or(usize::MAX);
        let mut state = self.lock();
        state.jobs.push_back(Job {
            offset,
            len,
            claimed: 0,
            done: 0,
            results: (0..pieces).map(|_| None).collect(),
        });
        drop(state);
        self.cv.notify_all();
    }

    /// A helper thread's work: hashes pieces of the queued jobs until the
    /// pool closes.
    pub(super) fn work(&self, backing: &Backing) {
        let mut buf = Vec::new();
        let mut state = self.lock();
        loop {
            if state.closing {
                return;
            }
            let Some(claim) = self.claim(&mut state, false) else {
                state = self.cv.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            drop(state);
            let hashed = catch_unwind(AssertUnwindSafe(|| self.hash(backing, &claim, &mut buf)))
                .unwrap_or(Err(Failure::Panicked));
            state = self.finish(&claim, hashed);
        }
    }

    /// Takes the first queued job once all of it is hashed, helping with
    /// it meanwhile: its range, and its hashes appended to `out`. `None`
    /// when no job is queued.
    ///
    /// # Errors
    ///
    /// The first of its pieces that failed.
    pub(super) fn take(
        &self,
        backing: &Backing,
        buf: &mut Vec<u8>,
        out: &mut Vec<Hash>,
    ) -> Option<Result<(u64, u64), Failure>> {
        let mut state = self.lock();
        loop {
            let job = state.jobs.front()?;
            if job.done == job.results.len() {
                break;
            }
            if let Some(claim) = self.claim(&mut state, true) {
                drop(state);
                // A panic here is the mirror thread's own, as it always was.
                let hashed = self.hash(backing, &claim, buf);
                state = self.finish(&claim, hashed);
            } else {
                state = self.cv.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
        }
        let job = state.jobs.pop_front()?;
        state.first += 1;
        drop(state);
        for result in job.results {
            match result {
                Some(Ok(hashes)) => out.extend(hashes),
                Some(Err(failure)) => return Some(Err(failure)),
                None => return Some(Err(Failure::Panicked)),
            }
        }
        Some(Ok((job.offset, job.len)))
    }

    /// Stops the helpers (once they finish the piece they hold).
    pub(super) fn close(&self) {
        self.lock().closing = true;
        self.cv.notify_all();
    }

    /// The next unclaimed piece: of the first job only, or of the first
    /// job that has one.
    fn claim(&self, state: &mut State, first_only: bool) -> Option<Claim> {
        let first = state.first;
        let take = if first_only { 1 } else { state.jobs.len() };
        let (i, job) = state
            .jobs
            .iter_mut()
            .take(take)
            .enumerate()
            .find(|(_, job)| job.claimed < job.results.len())?;
        let index = job.claimed;
        job.claimed += 1;
        let start = index as u64 * self.piece;
        Some(Claim {
            job: first + i as u64,
            index,
            offset: job.offset + start,
            len: self.piece.min(job.len - start),
        })
    }

    fn hash(
        &self,
        backing: &Backing,
        claim: &Claim,
        buf: &mut Vec<u8>,
    ) -> Result<Vec<Hash>, Failure> {
        let mut hashes = Vec::new();
        backing
            .read_hashed(
                claim.offset,
                claim.len,
                self.block,
                self.piece,
                buf,
                &mut hashes,
            )
            .map_err(Failure::Read)?;
        Ok(hashes)
    }

    /// Stores a claimed piece's hashes and wakes whoever waits for them.
    fn finish(&self, claim: &Claim, hashed: Result<Vec<Hash>, Failure>) -> MutexGuard<'_, State> {
        let mut state = self.lock();
        // A claimed piece's job stays queued until the piece is done.
        let i = usize::try_from(claim.job - state.first).unwrap_or(usize::MAX);
        if let Some(job) = state.jobs.get_mut(i) {
            job.results[claim.index] = Some(hashed);
            job.done += 1;
        }
        self.cv.notify_all();
        state
    }
}

/// Closes a [`Pool`] when dropped: however the comparison ends (an error,
/// a panic), the helpers return and the scope holding them can end.
pub(super) struct Closing<'a>(pub(super) &'a Pool);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::hash::hash_blocks;
    use std::io::Write;

    fn file(len: usize) -> (tempfile::NamedTempFile, Backing, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        let backing = Backing::open(f.path(), true).unwrap();
        (f, backing, data)
    }

    #[test]
    fn jobs_come_back_in_order_with_the_hashes_of_their_ranges() {
        let block = 4096u64;
        // The last job ends in a short block, as a file's end may.
        let (_f, backing, data) = file(10 * 16384 + 100);
        let jobs = [
            (0u64, 16384u64),
            (16384, 3 * 16384),
            (4 * 16384, 6 * 16384 + 100),
        ];
        let pool = Pool::new(block, 8192);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| pool.work(&backing));
            }
            for &(offset, len) in &jobs {
                pool.push(offset, len);
            }
            let mut buf = Vec::new();
            for &(offset, len) in &jobs {
                let mut out = Vec::new();
                let got = pool.take(&backing, &mut buf, &mut out).unwrap().unwrap();
                assert_eq!(got, (offset, len));
                let mut want = Vec::new();
                let range = offset as usize..(offset + len) as usize;
                hash_blocks(&data[range], block as usize, &mut want);
                assert_eq!(out, want);
            }
            assert!(
                pool.take(&backing, &mut buf, &mut out_of_nothing())
                    .is_none()
            );
            pool.close();
        });
    }

    fn out_of_nothing() -> Vec<Hash> {
        Vec::new()
    }

    #[test]
    fn without_helpers_the_taker_hashes_alone() {
        let (_f, backing, _) = file(3 * 4096);
        let pool = Pool::new(4096, 4096);
        pool.push(0, 3 * 4096);
        let mut out = Vec::new();
        let got = pool
            .take(&backing, &mut Vec::new(), &mut out)
            .unwrap()
            .unwrap();
        assert_eq!((got, out.len()), ((0, 3 * 4096), 3));
    }

    #[test]
    fn a_read_past_the_end_is_a_failure_and_closing_stops_helpers_with_work_queued() {
        let (_f, backing, _) = file(4096);
        let pool = Pool::new(4096, 4096);
        pool.push(0, 2 * 4096);
        let got = pool
            .take(&backing, &mut Vec::new(), &mut Vec::new())
            .unwrap();
        assert!(matches!(got, Err(Failure::Read(_))), "{got:?}");
        // Queued but never taken: the helper returns once the pool closes.
        for _ in 0..8 {
            pool.push(0, 4096);
        }
        std::thread::scope(|scope| {
            let helper = scope.spawn(|| pool.work(&backing));
            pool.close();
            helper.join().unwrap();
        });
    }
}
