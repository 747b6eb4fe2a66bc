//! The reading thread: reads each request, validates it, and either
//! answers it here (the fast paths: small cached READs, large cached READs,
//! small WRITEs, a lone request at queue depth 1) or hands it to the
//! workers.

use std::io::{self, IoSlice};
use std::sync::atomic::Ordering;

use crate::nbd::handshake::invalid_data;
use crate::nbd::{RequestReader, is_disconnect};
use crate::proto::ProtoError;
use crate::proto::reply;
use crate::proto::types::{Cmd, CmdFlags, Errno};
use crate::proto::wire::Request;

use super::{Conn, Job, Outcome};
use crate::server::busy_poll::BusyPoll;

/// READs up to this size are served on the reading thread when their data is
/// in the page cache, and their replies go out together (one write for all
/// the requests that arrived in one read).
const INLINE_READ_MAX: u32 = 64 << 10;
/// WRITEs up to this size (without FUA) are written from the reading thread:
/// buffered writes to one file take the inode's lock one at a time anyway, so
/// workers would only queue for it (and for the CPU).
const INLINE_WRITE_MAX: u32 = 64 << 10;
/// Replies gathered on the reading thread are sent once they reach this size.
const PENDING_MAX: usize = 256 << 10;
/// READs of at least this size over data with no hole go out with sendfile
/// (to a client on another machine): no copy into and out of user space.
pub(super) const SENDFILE_MIN: u32 = 64 << 10;
/// A cached READ at least this large goes to a worker when another request
/// waits behind it, so that copying it overlaps sending another; smaller
/// ones are served on the reading thread all the same (nbdcopy's 256 KiB
/// READs: the hand-offs cost more than the overlap gains).
const PARALLEL_READ_MIN: u32 = 512 << 10;
/// A WRITE larger than this always goes to a worker, even alone in flight:
/// its hand-off costs little next to the copy, and receiving the next
/// payload overlaps with writing this one.
const INLINE_SERVE_WRITE_MAX: u32 = 1 << 20;

impl Conn<'_> {
    /// Reads and dispatches requests until the client stops; `spawn` may add a worker.
    pub(super) fn read_requests(
        &self,
        reader: &mut RequestReader<'_>,
        spawn: impl FnMut(),
    ) -> io::Result<Outcome> {
        let mut pending = Vec::new();
        // Under TLS the socket does not tell whether a request is waiting.
        let poll_for = match reader.readable_now() {
            Some(_) => self.server.config.limits.busy_poll,
            None => std::time::Duration::ZERO,
        };
        let mut busy_poll = BusyPoll::new(poll_for);
        let outcome = self.read_requests_into(reader, spawn, &mut pending, &mut busy_poll);
        self.flush_pending(&mut pending);
        if busy_poll.polls > 0 {
            log::debug!(
                "polled for the next request {} times, {} found it",
                busy_poll.polls,
                busy_poll.caught
            );
        }
        outcome
    }

    /// Sends the replies gathered on the reading thread.
    fn flush_pending(&self, pending: &mut Vec<u8>) {
        if !pending.is_empty() {
            self.writer.send(&mut [IoSlice::new(pending)]);
            pending.clear();
        }
    }

    /// The body of [`Conn::read_requests`]: replies to READs served here go
    /// to `pending`, which is flushed before anything that may block.
    fn read_requests_into(
        &self,
        reader: &mut RequestReader<'_>,
        mut spawn: impl FnMut(),
        pending: &mut Vec<u8>,
        busy_poll: &mut BusyPoll,
    ) -> io::Result<Outcome> {
        let mut scratch = Vec::new();
        loop {
            // Never wait for the client while holding its replies.
            if reader.buffered() < Request::SIZE || pending.len() >= PENDING_MAX {
                self.flush_pending(pending);
            }
            if self.stopping() {
                // Asked to stop: what is left in the read buffer is not served.
                return Ok(Outcome::Closed);
            }
            if reader.buffered() == 0 {
                busy_poll.wait(&self.server.poll_slots, || {
                    reader.readable_now() != Some(false)
                });
            }
            let head = match reader.read_header() {
                Ok(head) => head,
                Err(e) if is_disconnect(&e) => return Ok(Outcome::Closed),
                Err(e) => return Err(e),
            };
            busy_poll.arrived();
            let req = match Request::decode(&head) {
                Ok(req) => req,
                Err(ProtoError::BadMagic { found, .. }) => {
                    // flexnbd-c answers EBADMSG with the handle, then closes.
                    log::warn!("Bad magic {found:#010X} from client");
                    let handle = Request::decode_fields(&head).handle;
                    self.reply_simple(handle, Errno::EBADMSG);
                    return Ok(Outcome::Failed);
                }
                Err(e) => return Err(invalid_data(e)),
            };
            log::debug!(
                "request {} flags {:?} handle {:#x} offset {} len {}",
                req.cmd,
                req.flags,
                req.handle,
                req.offset,
                req.len
            );
            if req.cmd == Cmd::DISC {
                return Ok(Outcome::Disconnected);
            }
            // Only READ and WRITE move their length in bytes (a TRIM's or a
            // BLOCK_STATUS's is a range on the file): only they can be large.
            let moved = if matches!(req.cmd, Cmd::READ | Cmd::WRITE) {
                req.len
            } else {
                0
            };
            busy_poll.request(moved);
            if let Err(errno) = self.validate(&req) {
                self.flush_pending(pending);
                if req.cmd == Cmd::WRITE {
                    reader.discard(u64::from(req.len))?;
                }
                self.reply_error(&req, errno);
                continue;
            }
            if req.cmd == Cmd::READ
                && req.len <= INLINE_READ_MAX
                && self.read_inline(&req, &mut scratch, pending)
            {
                continue;
            }
            if req.cmd == Cmd::READ
                && req.len > INLINE_READ_MAX
                && (req.len < PARALLEL_READ_MIN || reader.buffered() < Request::SIZE)
                && self.large_read_inline(&req, pending)
            {
                if self.writer.is_broken() {
                    return Ok(Outcome::Failed);
                }
                continue;
            }
            // A write that must be durable before its reply (FUA, or every
            // write in `listen --oldstyle`) goes to a worker, which syncs.
            if req.cmd == Cmd::WRITE
                && req.len <= INLINE_WRITE_MAX
                && !req.flags.contains(CmdFlags::FUA)
                && !self.server.sync_writes()
            {
                let len = req.len as usize;
                if reader.buffered() < len {
                    self.flush_pending(pending);
                }
                if scratch.len() < len {
                    scratch.resize(len, 0);
                }
                // The killswitch's clock runs from the header: a payload that
                // never comes is a stalled request too.
                self.begin_request();
                if let Err(e) = reader.read_exact(&mut scratch[..len]) {
                    self.end_request();
                    return if is_disconnect(&e) {
                        Ok(Outcome::Closed)
                    } else {
                        Err(e)
                    };
                }
                self.write_inline(&req, &scratch[..len], pending);
                continue;
            }
            self.flush_pending(pending);
            let hashing = req.cmd == crate::proto::hash::NBD_CMD_FLEXNBD_HASH;
            let cost = match req.cmd {
                Cmd::READ | Cmd::WRITE => u64::from(req.len),
                _ if hashing => super::hash::cost(&req),
                _ => 0,
            };
            self.budget.acquire(cost);
            self.begin_request();
            let mut buf = Vec::new();
            // READ buffers are charged whole (their data comes from our file);
            // WRITE payloads as their bytes arrive.
            let mut charged = 0u64;
            if req.cmd == Cmd::READ || hashing {
                charged = cost;
                self.server.memory.acquire(charged);
            }
            if req.cmd == Cmd::WRITE {
                buf = self.pool.take_empty(req.len as usize);
                let memory = &self.server.memory;
                let stall = self.server.config.limits.stall_timeout;
                let read = reader.read_payload_charged(&mut buf, req.len as usize, stall, |n| {
                    let n = n as u64;
                    memory.acquire(n);
                    charged += n;
                });
                if let Err(e) = read {
                    self.server.memory.release(charged);
                    self.budget.release(cost);
                    self.end_request();
                    return if is_disconnect(&e) {
                        Ok(Outcome::Closed)
                    } else {
                        Err(e)
                    };
                }
            }
            let job = Job {
                req,
                buf,
                cost,
                charged,
            };
            // Alone in flight with nothing more to read yet (a client at queue
            // depth 1): serving it here saves two thread hand-offs of latency.
            // Not a large WRITE: its payload was read straight from the socket,
            // so the buffer is empty even when the client has the next one on
            // the way (a migration source streams 8 MiB WRITEs), and a worker
            // writing it lets this thread receive the next one meanwhile.
            if self.in_flight.load(Ordering::SeqCst) == 1
                && reader.buffered() == 0
                && !(req.cmd == Cmd::WRITE && req.len > INLINE_SERVE_WRITE_MAX)
                && !hashing
            {
                self.serve_job(job);
            } else {
                self.queue.push(job);
                spawn();
            }
            if self.writer.is_broken() {
                return Ok(Outcome::Failed);
            }
        }
    }

    /// Serves a small READ here if its data is in the page cache, adding the
    /// reply to `pending`; false if it must go to a worker.
    fn read_inline(&self, req: &Request, scratch: &mut Vec<u8>, pending: &mut Vec<u8>) -> bool {
        let len = req.len as usize;
        if scratch.len() < len {
            scratch.resize(len, 0);
        }
        let data = &mut scratch[..len];
        if !matches!(self.backing.read_cached(data, req.offset), Ok(true)) {
            return false;
        }
        reply::encode_read(req, self.negotiated.structured, data, pending);
        true
    }

    /// Serves a large READ of cached data from here (after the replies in
    /// `pending`); false if it must go to a worker. The caller asks only
    /// when no other request is waiting in the read buffer, or when it is
    /// under [`PARALLEL_READ_MIN`]: then handing it
    /// over would cost two thread switches and a contended writer lock,
    /// and the worker would send it under the same lock anyway. With
    /// another request waiting (a client with several large READs in
    /// flight), workers serve them: one copies its data from the page
    /// cache while another sends, on two CPUs, where this thread alone
    /// would do both for each in turn (fio, 1 MiB reads at queue depth 4,
    /// `bench/run` A/B: 1,761 → 1,982 MiB/s). Data not
    /// yet in the page cache goes to the workers, so this thread does not
    /// wait for the disk and keeps reading requests. Behind a worker's READ
    /// (perhaps waiting for the disk while it holds the writer lock), this
    /// thread would only queue for the lock instead of reading the next
    /// requests: then it is left to the workers too.
    fn large_read_inline(&self, req: &Request, pending: &mut Vec<u8>) -> bool {
        if self.in_flight.load(Ordering::SeqCst) != 0 {
            return false;
        }
        if self.sendfile_fits(req) {
            if !self.backing.looks_cached(req.offset, u64::from(req.len)) {
                return false;
            }
            self.flush_pending(pending);
            self.begin_request();
            self.reply_read_sendfile(req);
            self.end_request();
            return true;
        }
        // Copied through a pooled buffer, charged to the memory budget
        // while it is held, as a worker's would be.
        let len = req.len as usize;
        let cost = u64::from(req.len);
        self.server.memory.acquire(cost);
        let mut buf = self.pool.take(len);
        let data = &mut buf[..len];
        self.begin_request();
        let cached = matches!(self.backing.read_cached(data, req.offset), Ok(true));
        if cached {
            self.flush_pending(pending);
            self.reply_read(req, data);
        }
        self.end_request();
        self.pool.give(buf);
        self.server.memory.release(cost);
        cached
    }

    /// Whether a READ goes out with `sendfile`: to a client on another
    /// machine and not under TLS (see `Stream::sendfile_pays`), large enough, and
    /// over data with no hole. Holes
    /// matter only to structured replies, which send them as hole chunks
    /// unless DF asks for one chunk: only they look.
    pub(super) fn sendfile_fits(&self, req: &Request) -> bool {
        let holes_matter = self.negotiated.structured && !req.flags.contains(CmdFlags::DF);
        self.sendfile
            && req.len >= SENDFILE_MIN
            && (!holes_matter || self.backing.is_all_data(req.offset, u64::from(req.len)))
    }

    /// Serves a small WRITE here (its payload already read), adding the reply
    /// to `pending`. The reply is only sent after the data reached the file.
    /// The caller has called [`Conn::begin_request`]; this ends it.
    fn write_inline(&self, req: &Request, data: &[u8], pending: &mut Vec<u8>) {
        let errno = match self.backing.write_at(data, req.offset) {
            Ok(()) => {
                self.server.note_write(req.offset, u64::from(req.len));
                Errno::OK
            }
            Err(e) => {
                self.warn(format_args!(
                    "{} at {}+{} failed: {e}",
                    req.cmd, req.offset, req.len
                ));
                super::reply::errno_for(&e)
            }
        };
        self.end_request();
        pending.extend_from_slice(reply::simple(req.handle, errno).as_bytes());
    }
}
