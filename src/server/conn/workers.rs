//! The workers of one connection and what bounds them: a queue of
//! validated requests, a budget of requests and payload bytes in flight
//! (the reading thread stops reading while it is spent), and a pool of
//! payload buffers reused across requests.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

use crate::proto::types::{Cmd, CmdFlags, Errno};
use crate::proto::wire::Request;
use crate::sys::lock;

use super::{Conn, Job};

/// Worker threads per connection.
pub(super) const MAX_WORKERS: usize = 8;
/// Most payload bytes queued or in service per connection.
const MAX_INFLIGHT_BYTES: u64 = 64 << 20;
/// Most requests queued or in service per connection.
const MAX_INFLIGHT_REQUESTS: u64 = 256;
/// Pooled buffers kept per connection, in bytes: enough for the window a
/// streaming client keeps in flight (nbdcopy: 64 requests of 256 KiB), so
/// that a sequential copy allocates and faults in its buffers only once.
/// All connections together keep at most the server's own limit.
const MAX_POOLED_BYTES: usize = 16 << 20;

/// Validated requests waiting for a worker.
#[derive(Debug, Default)]
pub(super) struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct QueueState {
    jobs: VecDeque<Job>,
    /// No more jobs will come: workers exit once it is empty.
    closed: bool,
}

impl Queue {
    pub(super) fn push(&self, job: Job) {
        lock(&self.state).jobs.push_back(job);
        self.ready.notify_one();
    }

    pub(super) fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }

    /// The next job, waiting for one; `None` once closed and empty.
    /// `idle` counts the workers waiting here.
    fn pop(&self, idle: &std::sync::atomic::AtomicUsize) -> Option<Job> {
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.jobs.pop_front() {
                return Some(job);
            }
            if state.closed {
                return None;
            }
            idle.fetch_add(1, Ordering::SeqCst);
            state = self
                .ready
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            idle.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// What one connection has in flight, against its limits.
#[derive(Debug, Default)]
pub(super) struct Budget {
    used: Mutex<InFlight>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct InFlight {
    bytes: u64,
    requests: u64,
}

impl Budget {
    /// Waits until a request of `cost` payload bytes fits, then takes it.
    /// A single request larger than the budget still goes through alone.
    pub(super) fn acquire(&self, cost: u64) {
        let mut used = lock(&self.used);
        while used.requests > 0
            && (used.bytes + cost > MAX_INFLIGHT_BYTES || used.requests >= MAX_INFLIGHT_REQUESTS)
        {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        used.bytes += cost;
        used.requests += 1;
    }

    /// Gives back what [`Budget::acquire`] took.
    pub(super) fn release(&self, cost: u64) {
        let mut used = lock(&self.used);
        used.bytes -= cost;
        used.requests -= 1;
        self.freed.notify_one();
    }
}

/// Payload buffers kept for reuse, at most [`MAX_POOLED_BYTES`] of them per
/// connection and `total_max` over all the server's connections.
#[derive(Debug)]
pub(super) struct BufferPool<'a> {
    kept: Mutex<Pooled>,
    /// The bytes kept by every connection's pool.
    total: &'a AtomicU64,
    total_max: u64,
}

#[derive(Debug, Default)]
struct Pooled {
    bufs: Vec<Vec<u8>>,
    bytes: usize,
}

impl<'a> BufferPool<'a> {
    /// An empty pool counting its bytes in `total` (shared by the server's
    /// connections), which it keeps at most `total_max`.
    pub(super) fn new(total: &'a AtomicU64, total_max: u64) -> Self {
        BufferPool {
            kept: Mutex::new(Pooled::default()),
            total,
            total_max,
        }
    }

    /// A kept buffer whose capacity is at least `len`, if there is one.
    fn take_kept(&self, len: usize) -> Option<Vec<u8>> {
        let mut kept = lock(&self.kept);
        let i = kept.bufs.iter().position(|b| b.capacity() >= len)?;
        let b = kept.bufs.swap_remove(i);
        kept.bytes -= b.capacity();
        self.total.fetch_sub(b.capacity() as u64, Ordering::SeqCst);
        Some(b)
    }

    /// A buffer of `len` initialized bytes (their content is not cleared).
    pub(super) fn take(&self, len: usize) -> Vec<u8> {
        match self.take_kept(len) {
            Some(mut b) => {
                // Within the capacity: no allocation. Only the part beyond
                // the kept length is zeroed.
                b.resize(len, 0);
                b
            }
            None => vec![0; len],
        }
    }

    /// An empty buffer with room for `len` bytes, for a payload to be read
    /// into: a kept one, or a new one whose pages are only made resident as
    /// bytes are written into them.
    pub(super) fn take_empty(&self, len: usize) -> Vec<u8> {
        self.take_kept(len).unwrap_or_default()
    }

    /// Keeps `buf` for reuse if this pool and all pools together have room.
    pub(super) fn give(&self, buf: Vec<u8>) {
        let size = buf.capacity();
        if size == 0 {
            return;
        }
        let mut kept = lock(&self.kept);
        if kept.bytes + size > MAX_POOLED_BYTES {
            return;
        }
        let total = self.total.fetch_add(size as u64, Ordering::SeqCst);
        if total + size as u64 > self.total_max {
            self.total.fetch_sub(size as u64, Ordering::SeqCst);
            return;
        }
        kept.bytes += size;
        kept.bufs.push(buf);
    }
}

impl Drop for BufferPool<'_> {
    fn drop(&mut self) {
        let kept = lock(&self.kept);
        self.total.fetch_sub(kept.bytes as u64, Ordering::SeqCst);
    }
}

/// Closes a queue when dropped (see `Conn::run`).
pub(super) struct CloseOnDrop<'q>(pub(super) &'q Queue);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Gives a job's budgets back and ends its request when dropped, so that a
/// panic while serving it frees what it held.
struct Held<'c, 'a> {
    conn: &'c Conn<'a>,
    cost: u64,
    charged: u64,
}

impl Drop for Held<'_, '_> {
    fn drop(&mut self) {
        self.conn.server.memory.release(self.charged);
        self.conn.budget.release(self.cost);
        self.conn.end_request();
    }
}

impl Conn<'_> {
    /// Worker loop: serve queued jobs until the queue is closed and empty.
    pub(super) fn work(&self) {
        while let Some(job) = self.queue.pop(&self.idle_workers) {
            if self.stopping() {
                self.drop_job(job);
            } else {
                self.serve_job(job);
            }
        }
    }

    /// Drops a job read but not started (the server asked the client to
    /// stop): no reply, nothing done, its budgets freed.
    fn drop_job(&self, job: Job) {
        log::debug!(
            "dropping {} at {}+{}: the client was asked to stop",
            job.req.cmd,
            job.req.offset,
            job.req.len
        );
        let _held = Held {
            conn: self,
            cost: job.cost,
            charged: job.charged,
        };
        self.pool.give(job.buf);
    }

    /// Performs a job, replies, and returns its resources. A panic while
    /// serving it is logged and ends the connection (its reply will never
    /// come, so the client must not wait for it); the budget and the
    /// request count are given back all the same.
    pub(super) fn serve_job(&self, job: Job) {
        let Job {
            req,
            buf,
            cost,
            charged,
        } = job;
        let held = Held {
            conn: self,
            cost,
            charged,
        };
        match catch_unwind(AssertUnwindSafe(|| self.execute(req, buf))) {
            Ok(buf) => self.pool.give(buf),
            Err(_) => {
                log::error!(
                    "internal error serving {} at {}+{}: closing the connection",
                    req.cmd,
                    req.offset,
                    req.len
                );
                self.writer.break_connection();
            }
        }
        drop(held);
    }

    /// Performs one request and sends its reply; returns the buffer for reuse.
    fn execute(&self, req: Request, mut buf: Vec<u8>) -> Vec<u8> {
        super::test_hooks::maybe_panic(super::test_hooks::Site::Worker, req.offset);
        let fua = req.flags.contains(CmdFlags::FUA) || self.server.config.sync_writes;
        let result = match req.cmd {
            Cmd::READ => {
                if self.sendfile_fits(&req) {
                    self.reply_read_sendfile(&req);
                    return buf;
                }
                buf = self.pool.take(req.len as usize);
                let data = &mut buf[..req.len as usize];
                match self.backing.read_at(data, req.offset) {
                    Ok(()) => {
                        self.reply_read(&req, data);
                        return buf;
                    }
                    Err(e) => Err(e),
                }
            }
            Cmd::WRITE => self.backing.write_at(&buf[..req.len as usize], req.offset),
            Cmd::FLUSH => self.backing.sync(),
            Cmd::TRIM => self
                .backing
                .punch_hole(req.offset, u64::from(req.len))
                .or_else(|e| {
                    // TRIM is a hint: a file system that cannot punch holes is not an error.
                    if e.kind() == io::ErrorKind::Unsupported {
                        Ok(())
                    } else {
                        Err(e)
                    }
                }),
            Cmd::WRITE_ZEROES => self.backing.write_zeroes(
                req.offset,
                u64::from(req.len),
                !req.flags.contains(CmdFlags::NO_HOLE),
                req.flags.contains(CmdFlags::FAST_ZERO),
            ),
            Cmd::CACHE => self.backing.cache(req.offset, u64::from(req.len)),
            Cmd::BLOCK_STATUS => match self.backing.extents(req.offset, u64::from(req.len)) {
                Ok(extents) => {
                    self.reply_block_status(&req, &extents);
                    return buf;
                }
                Err(e) => Err(e),
            },
            crate::proto::hash::NBD_CMD_FLEXNBD_HASH => {
                self.reply_hashes(&req);
                return buf;
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unknown command",
            )),
        };
        let result = result.and_then(|()| {
            if fua && matches!(req.cmd, Cmd::WRITE | Cmd::TRIM | Cmd::WRITE_ZEROES) {
                self.backing.sync()
            } else {
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                if matches!(req.cmd, Cmd::WRITE | Cmd::TRIM | Cmd::WRITE_ZEROES) {
                    self.server.note_write(req.offset, u64::from(req.len));
                }
                self.reply_simple(req.handle, Errno::OK);
            }
            Err(e) => {
                let errno = super::reply::errno_for(&e);
                if errno != Errno::ENOTSUP {
                    self.warn(format_args!(
                        "{} at {}+{} failed: {e}",
                        req.cmd, req.offset, req.len
                    ));
                }
                self.reply_error(&req, errno);
            }
        }
        buf
    }
}
