//! Comparing our file with the destination's through the flexnbd hash
//! extension (`proto::hash`, docs/hash-extension.md): before copying
//! (incremental: only blocks that differ are marked dirty) and before the
//! handover (`--verify`: mismatched blocks are resent and checked again).
//!
//! Hash requests go out on the attempt's connection, up to
//! [`HASH_WINDOW`] at once, each for at most [`HASH_REQUEST_BYTES`]; the
//! reply thread stores their hashes in the window. While the destination
//! hashes, we hash the same range of our file, so both sides work at once.
//! No WRITE is in flight while hashes are asked for (NBD does not order
//! requests in flight): before copying none was sent yet, and the handover
//! compares only after its FLUSH was answered.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::proto::hash::{HASH_LEN, Hash, HashParams, NBD_CMD_FLEXNBD_HASH, request_ranges};
use crate::proto::types::CmdFlags;
use crate::proto::wire::Request;

use super::engine::{Stop, Transfer};
use super::error::{ErrorKind as Kind, MirrorError};
use super::hash_pool::{Closing, Failure, Pool};
use super::{Incremental, MirrorRequest, Phase};
use crate::backing::Backing;
use crate::client::NbdClient;
use crate::server::Server;
use crate::server::dirty::DirtyMap;
use crate::server::hash_ahead::HashAhead;

/// Hash requests in flight at once: the destination's workers hash them in parallel.
const HASH_WINDOW: usize = 8;
/// Most bytes one hash request covers.
const HASH_REQUEST_BYTES: u64 = 16 << 20;
/// Our file is read in pieces of this size to be hashed.
const READ_PIECE: u64 = 1 << 20;
/// Our file is hashed by this many threads (the mirror's and helpers,
/// [`Pool`]): hashing is CPU-bound, and one thread would take as long as
/// all the destination's workers together.
const HASH_THREADS: usize = 2;
/// `--verify`: rounds of resending mismatched blocks before giving up.
pub(super) const VERIFY_ROUNDS: u32 = 3;
/// Before the comparison, the source's hashing thread (behind the copy,
/// which may end far quicker than it) is waited for if it has at most this
/// many pieces left: one hash request's range, which the comparison would
/// otherwise hash again whole for a piece missing...
const CATCH_UP_PIECES: usize = (HASH_REQUEST_BYTES / crate::server::hash_ahead::PIECE) as usize;
/// ...for at most this long: 16 MiB hash in about 10 ms of CPU, but the
/// thread runs at nice 19 and a busy machine gives it little. Clients are
/// served meanwhile.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(1);

/// A hash request's range and our hashes of it, computed ahead.
type Kept = (u64, u64, Vec<Hash>);

/// Clears `map`; the runs that were set, in file order.
fn drain(map: &DirtyMap) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let mut cursor = 0;
    while let Some((offset, len)) = map.take_run(cursor, u64::MAX) {
        if offset < cursor {
            // Wrapped round: a block set meanwhile.
            runs.push((offset, len));
            break;
        }
        runs.push((offset, len));
        cursor = offset + len;
    }
    runs
}

/// Whether to compare before copying, from the request and what the destination offers.
pub(super) fn incremental(request: &MirrorRequest, client: &NbdClient) -> Option<HashParams> {
    let params = client.hash_params()?;
    match request.incremental {
        Incremental::Off => None,
        Incremental::On => Some(params),
        Incremental::Auto => params.holds_data().then_some(params),
    }
}

impl Transfer<'_> {
    /// Incremental: marks dirty only the blocks whose hashes differ from
    /// the destination's. Client writes meanwhile mark their blocks too.
    pub(super) fn mark_differences(&mut self, params: HashParams) -> Result<(), Stop> {
        self.mirror.set_phase(Phase::Comparing);
        let size = self.server.backing().size();
        // Until compared, every byte may have to be sent: `status` (and the
        // progress bar) count them as left, and each compared piece that
        // matches leaves the count.
        self.mirror.uncompared.store(size, Ordering::SeqCst);
        let started = Instant::now();
        let differ = self.compare(params, &[(0, size)], false)?;
        let took = started.elapsed();
        let bytes: u64 = differ.iter().map(|(_, len)| len).sum();
        for &(offset, len) in &differ {
            self.tracker.map.mark(offset, len);
        }
        self.mirror.uncompared.store(0, Ordering::SeqCst);
        log::info!(
            "incremental: {bytes} of {size} bytes differ from the destination's copy ({} runs); compared in {} ms ({} MiB/s)",
            differ.len(),
            took.as_millis(),
            mib_per_sec(size, took)
        );
        self.mirror.set_phase(Phase::Copying);
        Ok(())
    }

    /// `--verify` before converging, while clients are served and nothing
    /// is in flight: compares the whole file; what differs is marked to be
    /// sent again. Blocks written from here on are `touched`, and they and
    /// those that differed are what [`Transfer::verify`] checks again.
    /// With `flush`, the destination is asked to FLUSH meanwhile; this
    /// returns once that FLUSH is answered too.
    pub(super) fn pre_verify(&mut self, flush: bool) -> Result<(), Stop> {
        let params = self.hash_params()?;
        // Hashes see only answered WRITEs.
        self.wait_window(0)?;
        self.mirror.set_phase(Phase::Verifying);
        drain(&self.tracker.touched);
        // What is still to send is sent after the comparison: check it again too.
        for (offset, len) in drain(&self.tracker.map) {
            self.tracker.map.mark(offset, len);
            self.tracker.touched.mark(offset, len);
        }
        let size = self.server.backing().size();
        let started = Instant::now();
        if let Some(ahead) = self.ahead {
            // It follows the copy, perhaps some pieces behind: let it
            // finish rather than hash the last request's range again here.
            ahead.catch_up(CATCH_UP_PIECES, CATCH_UP_WITHIN);
        }
        let differ = self.compare(params, &[(0, size)], flush)?;
        let took = started.elapsed();
        let bytes: u64 = differ.iter().map(|(_, len)| len).sum();
        for &(offset, len) in &differ {
            self.tracker.map.mark(offset, len);
            self.tracker.touched.mark(offset, len);
        }
        log::info!(
            "verify: {bytes} bytes in {} runs differ before the handover; {} bytes written meanwhile; compared in {} ms ({} MiB/s); {} bytes of ours hashed during the copy",
            differ.len(),
            self.tracker.touched.dirty_bytes().saturating_sub(bytes),
            took.as_millis(),
            mib_per_sec(size, took),
            self.ahead.map_or(0, HashAhead::answered)
        );
        self.pre_verified = true;
        self.wait_window(0)
    }

    fn hash_params(&self) -> Result<HashParams, Stop> {
        self.client.hash_params().ok_or_else(|| {
            Stop::Failed(MirrorError::new(
                Kind::Verify,
                "the destination does not offer the hash extension",
            ))
        })
    }

    /// `--verify`, once every byte is acknowledged and durable and no client
    /// is left: compares what [`Transfer::pre_verify`] left to check (or
    /// the whole file), resends what differs and checks it again, up to
    /// [`VERIFY_ROUNDS`] times.
    pub(super) fn verify(&mut self) -> Result<(), Stop> {
        let params = self.hash_params()?;
        self.mirror.set_phase(Phase::Verifying);
        let size = self.server.backing().size();
        let mut ranges = if self.pre_verified {
            drain(&self.tracker.touched)
        } else {
            vec![(0, size)]
        };
        for round in 0..=VERIFY_ROUNDS {
            let differ = self.compare(params, &ranges, false)?;
            if differ.is_empty() {
                log::info!("verified: the destination's hashes match ours");
                self.mirror.verified.store(true, Ordering::SeqCst);
                self.mirror.set_phase(Phase::Handover);
                return Ok(());
            }
            let bytes: u64 = differ.iter().map(|(_, len)| len).sum();
            log::warn!(
                "verify: {bytes} bytes in {} runs differ from the destination's copy{}",
                differ.len(),
                if round < VERIFY_ROUNDS {
                    "; sending them again"
                } else {
                    ""
                }
            );
            if round == VERIFY_ROUNDS {
                break;
            }
            for &(offset, len) in &differ {
                self.tracker.map.mark(offset, len);
            }
            self.cycle()?;
            self.flush_destination()?;
            ranges = differ;
        }
        Err(Stop::Failed(MirrorError::new(
            Kind::Verify,
            format!("the destination's copy still differs after {VERIFY_ROUNDS} repairs"),
        )))
    }

    /// Compares hashes over `ranges` (widened to whole blocks); returns the
    /// blocks that differ, adjacent ones merged. With `flush`, a FLUSH goes
    /// out behind the first hash requests, so that the destination syncs
    /// while both sides hash (its reply is left in the window).
    fn compare(
        &mut self,
        params: HashParams,
        ranges: &[(u64, u64)],
        flush: bool,
    ) -> Result<Vec<(u64, u64)>, Stop> {
        let size = self.server.backing().size();
        let per_request = HashParams {
            max_blocks: params
                .max_blocks
                .min(u32::try_from(HASH_REQUEST_BYTES / u64::from(params.block_size)).unwrap_or(1))
                .max(1),
            ..params
        };
        let requests: Vec<(u64, u64)> = ranges
            .iter()
            .flat_map(|&(offset, len)| request_ranges(&per_request, size, offset, len))
            .collect();
        let block = u64::from(params.block_size);
        let server: &Arc<Server> = self.server;
        let backing = server.backing();
        let pool = Pool::new(block, READ_PIECE);
        std::thread::scope(|scope| {
            // Closes the pool however this ends, so the helpers return.
            let _closing = Closing(&pool);
            for _ in 1..HASH_THREADS {
                std::thread::Builder::new()
                    .name("mirror-hash".into())
                    .spawn_scoped(scope, || pool.work(backing))
                    .map_err(|e| {
                        Stop::Failed(MirrorError::new(
                            Kind::Internal,
                            format!("cannot start a hashing thread: {e}"),
                        ))
                    })?;
            }
            self.compare_with(&pool, &requests, block, flush)
        })
    }

    /// [`Transfer::compare`]'s loop: sends the hash requests, a window at
    /// a time, and compares each answer with our hashes from `pool`.
    fn compare_with(
        &mut self,
        pool: &Pool,
        requests: &[(u64, u64)],
        block: u64,
        mut flush: bool,
    ) -> Result<Vec<(u64, u64)>, Stop> {
        let size = self.server.backing().size();
        // Each request's handle, and our hashes if they were computed
        // ahead (else the pool hashes its range).
        let mut sent: VecDeque<(u64, Option<Kept>)> = VecDeque::new();
        let mut next = requests.iter();
        let mut differ: Vec<(u64, u64)> = Vec::new();
        let mut ours = Vec::new();
        loop {
            while sent.len() < HASH_WINDOW {
                let Some(&(offset, len)) = next.next() else {
                    break;
                };
                let handle = self.send_hash_request(offset, len, block)?;
                let mut kept = Vec::new();
                let backing = self.server.backing();
                if self
                    .ahead
                    .is_some_and(|ahead| ahead.kept_hashes(backing, offset, len, &mut kept))
                {
                    sent.push_back((handle, Some((offset, len, kept))));
                } else {
                    sent.push_back((handle, None));
                    pool.push(offset, len);
                }
            }
            if flush {
                // Not alone in flight: the destination syncs on a worker
                // while others hash.
                self.send_flush()?;
                flush = false;
            }
            let Some((handle, kept)) = sent.pop_front() else {
                break;
            };
            ours.clear();
            let backing = self.server.backing();
            let taken = match kept {
                Some((offset, len, hashes)) => {
                    ours = hashes;
                    Some(Ok((offset, len)))
                }
                None => pool.take(backing, &mut self.buf, &mut ours),
            };
            let (offset, len) = match taken {
                Some(Ok(range)) => range,
                Some(Err(Failure::Read(e))) => return Err(local_read_error(backing, &e)),
                Some(Err(Failure::Panicked)) | None => {
                    return Err(Stop::Failed(MirrorError::new(
                        Kind::Internal,
                        "a hashing thread panicked",
                    )));
                }
            };
            let theirs = self.take_hashes(handle)?;
            let mut matched = len;
            for (i, mine) in ours.iter().enumerate() {
                let at = i * HASH_LEN;
                if theirs.get(at..at + HASH_LEN) != Some(&mine[..]) {
                    let start = offset + i as u64 * block;
                    let end = (start + block).min(size);
                    matched = matched.saturating_sub(end - start);
                    match differ.last_mut() {
                        Some((o, l)) if *o + *l == start => *l += end - start,
                        _ => differ.push((start, end - start)),
                    }
                }
            }
            // Only an incremental comparison counts (the count is 0 otherwise).
            let _ =
                self.mirror
                    .uncompared
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                        Some(left.saturating_sub(matched))
                    });
        }
        Ok(differ)
    }

    /// Sends a hash request for `len` bytes at `offset`; returns its handle.
    fn send_hash_request(&mut self, offset: u64, len: u64, block: u64) -> Result<u64, Stop> {
        self.check()?;
        let handle = self.client.next_handle();
        let count = usize::try_from(len.div_ceil(block)).unwrap_or(usize::MAX);
        let req = Request {
            flags: CmdFlags(0),
            cmd: NBD_CMD_FLEXNBD_HASH,
            handle,
            offset,
            len: u32::try_from(len).map_err(|_| {
                Stop::Failed(MirrorError::new(Kind::Internal, "hash range too long"))
            })?,
        };
        {
            let mut w = self.replies.lock();
            if w.lens.is_empty() && w.hash_pending.is_empty() {
                self.replies.progressed();
            }
            w.hash_pending.insert(handle, count);
        }
        if let Err(e) = self.client.send_request(&req, &[]) {
            return Err(Stop::Failed(MirrorError::new(
                Kind::Connection,
                format!("Couldn't write to listener: {e}"),
            )));
        }
        self.mirror
            .wire_bytes
            .fetch_add(Request::SIZE as u64, Ordering::SeqCst);
        Ok(handle)
    }

    /// Waits for the hashes answering `handle`.
    fn take_hashes(&self, handle: u64) -> Result<Vec<u8>, Stop> {
        self.wait_for(|w| w.hash_done.remove(&handle))
    }
}

/// `bytes` in `took`, in whole MiB per second (for a log line).
fn mib_per_sec(bytes: u64, took: Duration) -> u128 {
    (u128::from(bytes) * 1000 / took.as_millis().max(1)) >> 20
}

/// Reads `buf.len()` bytes of our file at `offset`; a failure ends the attempt.
pub(super) fn read_local(backing: &Backing, buf: &mut [u8], offset: u64) -> Result<(), Stop> {
    backing
        .read_at(buf, offset)
        .map_err(|e| local_read_error(backing, &e))
}

fn local_read_error(backing: &Backing, e: &std::io::Error) -> Stop {
    Stop::Failed(MirrorError::new(
        Kind::Local,
        format!("cannot read {}: {e}", backing.path().display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_mib_per_second_and_survive_an_instant() {
        assert_eq!(mib_per_sec(1 << 30, Duration::from_millis(500)), 2048);
        assert_eq!(mib_per_sec(3 << 20, Duration::from_secs(2)), 1);
        // Under a millisecond counts as one: no division by zero.
        assert_eq!(mib_per_sec(1 << 20, Duration::ZERO), 1000);
    }
}
