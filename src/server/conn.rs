//! One client connection: the handshake, then the transmission loop.
//!
//! The connection's thread reads requests (header, then payload for
//! WRITE) and validates them. A valid request goes to a small pool of
//! worker threads belonging to this connection, so several requests are in
//! flight at once and replies may go out in any order; each is answered
//! exactly once. Workers write replies through one lock on the socket's
//! write side, each reply in one vectored write. Invalid requests are
//! answered by the reading thread directly, with the payload of a bad
//! WRITE read and discarded so the connection stays in step.
//!
//! Memory is bounded: buffers come from a per-connection pool, and the
//! reader stops reading while more than [`MAX_INFLIGHT_BYTES`] of payload
//! are queued or being served.
//!
//! Small READs whose data is in the page cache (`RWF_NOWAIT`) are served
//! on the reading thread itself, and their replies are gathered and sent
//! together once no whole request is left in the read buffer: a client at
//! queue depth 16 costs one read and one write for 16 requests, not 16
//! thread hand-offs. Small WRITEs without FUA are written there too (buffered
//! writes to one file queue for its inode lock anyway), each acknowledged
//! only once `pwrite` returned. Large READs of data with no hole go out with
//! `sendfile`, never copied through user space: from the reading thread when
//! their data is in the page cache (no hand-off, no contended writer lock),
//! from a worker when it may have to come from the disk.
//!
//! When the reading side ends (EOF, DISCONNECT, a protocol error, or the
//! server's shutdown calling `shutdown(Read)` on the socket), the queued
//! requests are still served and replied to before the socket is closed.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::backing::{Backing, is_zero};
use crate::net::send_more;
use crate::proto::ProtoError;
use crate::proto::consts::*;
use crate::proto::handshake::{Export, Negotiated, ServerNegotiation, Step};
use crate::proto::types::*;
use crate::proto::wire::*;

use super::Server;

/// How long a client may take over each step of the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Most options a client may send before it must start transmission.
const MAX_OPTIONS: usize = 4096;
/// Worker threads per connection.
const MAX_WORKERS: usize = 8;
/// Most payload bytes queued or in service per connection.
const MAX_INFLIGHT_BYTES: u64 = 64 << 20;
/// Most requests queued or in service per connection.
const MAX_INFLIGHT_REQUESTS: u64 = 256;
/// Pooled buffers kept per connection, in bytes: enough for the window a
/// streaming client keeps in flight (nbdcopy: 64 requests of 256 KiB), so
/// that a sequential copy allocates and faults in its buffers only once.
const MAX_POOLED_BYTES: usize = 16 << 20;
/// The read buffer in front of the socket, so small pipelined requests cost few syscalls.
const READ_BUFFER: usize = 256 << 10;
/// A READ reply is split into hole and data chunks at this granularity.
const ZERO_BLOCK: usize = 4096;
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
/// READs of at least this size over data with no hole go out with sendfile:
/// no copy into and out of user space.
const SENDFILE_MIN: u32 = 64 << 10;
/// A WRITE larger than this always goes to a worker, even alone in flight:
/// its hand-off costs little next to the copy, and receiving the next
/// payload overlaps with writing this one.
const INLINE_SERVE_WRITE_MAX: u32 = 1 << 20;

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The client sent NBD_CMD_DISC.
    Disconnected,
    /// The client closed the connection, or the server stopped it.
    Closed,
    /// The client aborted negotiation.
    Aborted,
    /// The client broke the protocol or the socket failed.
    Failed,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Disconnected => "disconnected",
            Outcome::Closed => "closed",
            Outcome::Aborted => "aborted negotiation",
            Outcome::Failed => "failed",
        })
    }
}

/// The monotonic clock in milliseconds (never 0).
pub(super) fn monotonic_ms() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    (secs * 1000 + nanos / 1_000_000).max(1)
}

/// Serves one client from handshake to close.
pub(super) fn serve(server: &Server, stream: TcpStream, busy_since: &AtomicU64) -> Outcome {
    let result = handshake(server, &stream).and_then(|negotiated| match negotiated {
        None => Ok(Outcome::Aborted),
        Some(negotiated) => {
            stream.set_read_timeout(None)?;
            stream.set_write_timeout(None)?;
            transmit(server, &stream, negotiated, busy_since)
        }
    });
    let _ = stream.shutdown(Shutdown::Both);
    result.unwrap_or_else(|e| {
        log::info!("connection error: {e}");
        Outcome::Failed
    })
}

fn proto_err(e: ProtoError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the handshake; `None` means the client aborted.
fn handshake(server: &Server, stream: &TcpStream) -> io::Result<Option<Negotiated>> {
    stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut stream = stream;
    let export = Export {
        size: server.backing.size(),
        flags: server.transmission_flags(),
    };
    if server.config.oldstyle {
        let mut hello = [0u8; OldstyleHello::SIZE];
        OldstyleHello {
            size: export.size,
            flags: u32::from(export.flags.0),
        }
        .encode(&mut hello);
        stream.write_all(&hello)?;
        return Ok(Some(Negotiated::default()));
    }
    let mut hello = [0u8; NewstyleHello::SIZE];
    NewstyleHello {
        flags: ServerNegotiation::HANDSHAKE_FLAGS,
    }
    .encode(&mut hello);
    stream.write_all(&hello)?;
    let mut flags = [0u8; 4];
    stream.read_exact(&mut flags)?;
    let mut negotiation = ServerNegotiation::new(export, ClientFlags(u32::from_be_bytes(flags)))
        .map_err(proto_err)?;
    let mut payload = Vec::new();
    let mut out = Vec::new();
    for _ in 0..MAX_OPTIONS {
        let mut head = [0u8; OptionHeader::SIZE];
        stream.read_exact(&mut head)?;
        let header = OptionHeader::decode(&head).map_err(proto_err)?;
        // The length was bounded by decode, so this allocation is bounded too.
        payload.resize(header.len as usize, 0);
        stream.read_exact(&mut payload)?;
        log::debug!("option {} with {} bytes", header.opt, header.len);
        out.clear();
        let step = negotiation.handle(header.opt, &payload, &mut out);
        stream.write_all(&out)?;
        match step {
            Step::Continue => {}
            Step::Abort => return Ok(None),
            Step::Transmit => return Ok(Some(negotiation.negotiated())),
        }
    }
    Err(proto_err(ProtoError::Invalid("too many options")))
}

/// A request that passed validation, with its payload for WRITE.
struct Job {
    req: Request,
    buf: Vec<u8>,
    cost: u64,
}

/// State shared by the reading thread and the workers of one connection.
struct Conn<'a> {
    server: &'a Server,
    backing: &'a Backing,
    negotiated: Negotiated,
    oldstyle: bool,
    read_only: bool,
    writer: Mutex<&'a TcpStream>,
    broken: AtomicBool,
    queue: Mutex<Queue>,
    queue_cv: Condvar,
    budget: Mutex<(u64, u64)>,
    budget_cv: Condvar,
    pool: Mutex<(Vec<Vec<u8>>, usize)>,
    idle_workers: AtomicUsize,
    busy_since: &'a AtomicU64,
    in_flight: AtomicU64,
}

struct Queue {
    jobs: VecDeque<Job>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn transmit(
    server: &Server,
    stream: &TcpStream,
    negotiated: Negotiated,
    busy_since: &AtomicU64,
) -> io::Result<Outcome> {
    let conn = Conn {
        server,
        backing: &server.backing,
        negotiated,
        oldstyle: server.config.oldstyle,
        read_only: server.config.read_only,
        writer: Mutex::new(stream),
        broken: AtomicBool::new(false),
        queue: Mutex::new(Queue {
            jobs: VecDeque::new(),
            closed: false,
        }),
        queue_cv: Condvar::new(),
        budget: Mutex::new((0, 0)),
        budget_cv: Condvar::new(),
        pool: Mutex::new((Vec::new(), 0)),
        idle_workers: AtomicUsize::new(0),
        busy_since,
        in_flight: AtomicU64::new(0),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    let conn = &conn;
    std::thread::scope(|scope| {
        let mut workers = 0usize;
        let outcome = conn.read_requests(&mut reader, || {
            if conn.idle_workers.load(Ordering::SeqCst) == 0 && workers < MAX_WORKERS {
                workers += 1;
                let spawned = std::thread::Builder::new()
                    .name(format!(
                        "{}-w{workers}",
                        std::thread::current().name().unwrap_or("client")
                    ))
                    .spawn_scoped(scope, || conn.work());
                if let Err(e) = spawned {
                    log::warn!("cannot start a worker thread: {e}");
                    workers -= 1;
                }
            }
        });
        // Let the workers drain the queue and exit; the scope joins them.
        lock(&conn.queue).closed = true;
        conn.queue_cv.notify_all();
        // Without any worker (none could start), serve what is queued here.
        if workers == 0 {
            conn.work();
        }
        outcome
    })
}

impl Conn<'_> {
    /// Reads and dispatches requests until the client stops; `spawn` may add a worker.
    fn read_requests(
        &self,
        reader: &mut BufReader<&TcpStream>,
        spawn: impl FnMut(),
    ) -> io::Result<Outcome> {
        let mut pending = Vec::new();
        let outcome = self.read_requests_into(reader, spawn, &mut pending);
        self.flush_pending(&mut pending);
        outcome
    }

    /// Sends the replies gathered on the reading thread.
    fn flush_pending(&self, pending: &mut Vec<u8>) {
        if !pending.is_empty() {
            self.send(&mut [IoSlice::new(pending)]);
            pending.clear();
        }
    }

    /// The body of [`Conn::read_requests`]: replies to READs served here go
    /// to `pending`, which is flushed before anything that may block.
    fn read_requests_into(
        &self,
        reader: &mut BufReader<&TcpStream>,
        mut spawn: impl FnMut(),
        pending: &mut Vec<u8>,
    ) -> io::Result<Outcome> {
        let mut scratch = Vec::new();
        // Set after a large WRITE's payload: see `read_header`.
        let mut streaming = false;
        loop {
            // Never wait for the client while holding its replies.
            if reader.buffer().len() < Request::SIZE || pending.len() >= PENDING_MAX {
                self.flush_pending(pending);
            }
            let mut head = [0u8; Request::SIZE];
            match read_header(reader, &mut head, std::mem::take(&mut streaming)) {
                Ok(()) => {}
                Err(e) if is_disconnect(&e) => return Ok(Outcome::Closed),
                Err(e) => return Err(e),
            }
            let req = match Request::decode(&head) {
                Ok(req) => req,
                Err(ProtoError::BadMagic { found, .. }) => {
                    // flexnbd-c answers EBADMSG with the handle, then closes.
                    log::warn!("Bad magic {found:#010X} from client");
                    let handle = Request::decode_fields(&head).handle;
                    self.reply_simple(handle, Errno::EBADMSG);
                    return Ok(Outcome::Failed);
                }
                Err(e) => return Err(proto_err(e)),
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
            if let Err(errno) = self.validate(&req) {
                self.flush_pending(pending);
                if req.cmd == Cmd::WRITE {
                    discard(reader, u64::from(req.len))?;
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
                && req.len >= SENDFILE_MIN
                && self.sendfile_inline(&req, pending)
            {
                if self.broken.load(Ordering::SeqCst) {
                    return Ok(Outcome::Failed);
                }
                continue;
            }
            // A write that must be durable before its reply (FUA, or every
            // write in `listen --oldstyle`) goes to a worker, which syncs.
            if req.cmd == Cmd::WRITE
                && req.len <= INLINE_WRITE_MAX
                && !req.flags.contains(CmdFlags::FUA)
                && !self.server.config.sync_writes
            {
                let len = req.len as usize;
                if reader.buffer().len() < len {
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
            let cost = match req.cmd {
                Cmd::READ | Cmd::WRITE => u64::from(req.len),
                _ => 0,
            };
            self.acquire(cost);
            self.begin_request();
            let mut buf = Vec::new();
            if req.cmd == Cmd::WRITE {
                buf = self.take_buffer(req.len as usize);
                streaming = true;
                if let Err(e) = read_payload(reader, &mut buf[..req.len as usize]) {
                    self.release(cost);
                    self.end_request();
                    return if is_disconnect(&e) {
                        Ok(Outcome::Closed)
                    } else {
                        Err(e)
                    };
                }
            }
            // Alone in flight with nothing more to read yet (a client at queue
            // depth 1): serving it here saves two thread hand-offs of latency.
            // Not a large WRITE: its payload was read straight from the socket,
            // so the buffer is empty even when the client has the next one on
            // the way (a migration source streams 8 MiB WRITEs), and a worker
            // writing it lets this thread receive the next one meanwhile.
            if self.in_flight.load(Ordering::SeqCst) == 1
                && reader.buffer().is_empty()
                && !(req.cmd == Cmd::WRITE && req.len > INLINE_SERVE_WRITE_MAX)
            {
                self.serve_job(Job { req, buf, cost });
            } else {
                {
                    let mut queue = lock(&self.queue);
                    queue.jobs.push_back(Job { req, buf, cost });
                }
                self.queue_cv.notify_one();
                spawn();
            }
            if self.broken.load(Ordering::SeqCst) {
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
        self.encode_read(req, data, pending);
        true
    }

    /// Sends a large READ of cached data with no hole from here, with
    /// `sendfile` (after the replies in `pending`); false if it must go to a
    /// worker. Handing it over would cost two thread switches and a contended
    /// writer lock per request, and the worker would send it under the same
    /// lock anyway. Data not yet in the page cache goes to the workers, so
    /// this thread does not wait for the disk and keeps reading requests.
    fn sendfile_inline(&self, req: &Request, pending: &mut Vec<u8>) -> bool {
        let len = u64::from(req.len);
        // Behind a worker's READ (perhaps waiting for the disk while it
        // holds the writer lock), this thread would only queue for the lock
        // instead of reading the next requests: leave it to the workers.
        let cached = self.in_flight.load(Ordering::SeqCst) == 0
            && self.backing.looks_cached(req.offset, len);
        if !cached || !self.sendfile_fits(req) {
            return false;
        }
        self.flush_pending(pending);
        self.begin_request();
        self.reply_read_sendfile(req);
        self.end_request();
        true
    }

    /// Whether a READ goes out with `sendfile`: large enough, and over data
    /// with no hole. Holes matter only to structured replies, which send them
    /// as hole chunks unless DF asks for one chunk: only they look.
    fn sendfile_fits(&self, req: &Request) -> bool {
        let holes_matter = self.negotiated.structured && !req.flags.contains(CmdFlags::DF);
        req.len >= SENDFILE_MIN
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
                log::warn!("{} at {}+{} failed: {e}", req.cmd, req.offset, req.len);
                errno_for(&e)
            }
        };
        self.end_request();
        let mut head = [0u8; SimpleReply::SIZE];
        SimpleReply {
            error: errno,
            handle: req.handle,
        }
        .encode(&mut head);
        pending.extend_from_slice(&head);
    }

    /// Checks a request against the export and what was negotiated.
    fn validate(&self, req: &Request) -> Result<(), Errno> {
        if req.flags.unknown() != 0 {
            log::warn!("request {} has unknown flags {:?}", req.cmd, req.flags);
            return Err(Errno::EINVAL);
        }
        let writes = matches!(req.cmd, Cmd::WRITE | Cmd::TRIM | Cmd::WRITE_ZEROES);
        match req.cmd {
            Cmd::READ | Cmd::WRITE => {
                if req.len > MAX_REQUEST_LEN {
                    log::warn!(
                        "{} of {} bytes is over the {MAX_REQUEST_LEN}-byte limit",
                        req.cmd,
                        req.len
                    );
                    return Err(Errno::EINVAL);
                }
            }
            Cmd::FLUSH => return Ok(()),
            Cmd::TRIM | Cmd::WRITE_ZEROES | Cmd::CACHE => {}
            Cmd::BLOCK_STATUS => {
                if !self.negotiated.base_allocation || req.len == 0 {
                    return Err(Errno::EINVAL);
                }
            }
            _ => {
                log::warn!("Unknown request {:#010X}", req.cmd.0);
                return Err(Errno::EINVAL);
            }
        }
        if writes && self.read_only {
            return Err(Errno::EPERM);
        }
        if req.end().is_none_or(|end| end > self.backing.size()) {
            log::warn!("write request {}+{} out of range", req.offset, req.len);
            // The spec wants ENOSPC for writes and EINVAL otherwise; flexnbd-c (old-style) says ENOSPC to all.
            let enospc = matches!(req.cmd, Cmd::WRITE | Cmd::WRITE_ZEROES) || self.oldstyle;
            return Err(if enospc { Errno::ENOSPC } else { Errno::EINVAL });
        }
        Ok(())
    }

    /// Worker loop: serve queued jobs until the queue is closed and empty.
    fn work(&self) {
        loop {
            let job = {
                let mut queue = lock(&self.queue);
                loop {
                    if let Some(job) = queue.jobs.pop_front() {
                        break Some(job);
                    }
                    if queue.closed {
                        break None;
                    }
                    self.idle_workers.fetch_add(1, Ordering::SeqCst);
                    queue = self
                        .queue_cv
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                    self.idle_workers.fetch_sub(1, Ordering::SeqCst);
                }
            };
            let Some(job) = job else { return };
            self.serve_job(job);
        }
    }

    /// Performs a job, replies, and returns its resources.
    fn serve_job(&self, job: Job) {
        let Job { req, buf, cost } = job;
        let buf = self.execute(req, buf);
        self.give_buffer(buf);
        self.release(cost);
        self.end_request();
    }

    /// Performs one request and sends its reply; returns the buffer for reuse.
    fn execute(&self, req: Request, mut buf: Vec<u8>) -> Vec<u8> {
        let fua = req.flags.contains(CmdFlags::FUA) || self.server.config.sync_writes;
        let result = match req.cmd {
            Cmd::READ => {
                if self.sendfile_fits(&req) {
                    self.reply_read_sendfile(&req);
                    return buf;
                }
                buf = self.take_buffer(req.len as usize);
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
                let errno = errno_for(&e);
                if errno != Errno::ENOTSUP {
                    log::warn!("{} at {}+{} failed: {e}", req.cmd, req.offset, req.len);
                }
                self.reply_error(&req, errno);
            }
        }
        buf
    }

    fn begin_request(&self) {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.busy_since.store(monotonic_ms(), Ordering::SeqCst);
        }
    }

    fn end_request(&self) {
        // Progress: restart the killswitch clock, or stop it when idle.
        let left = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        self.busy_since
            .store(if left == 0 { 0 } else { monotonic_ms() }, Ordering::SeqCst);
    }

    fn acquire(&self, cost: u64) {
        let mut budget = lock(&self.budget);
        // A single request larger than the budget still goes through alone.
        while budget.1 > 0
            && (budget.0 + cost > MAX_INFLIGHT_BYTES || budget.1 >= MAX_INFLIGHT_REQUESTS)
        {
            budget = self
                .budget_cv
                .wait(budget)
                .unwrap_or_else(PoisonError::into_inner);
        }
        budget.0 += cost;
        budget.1 += 1;
    }

    fn release(&self, cost: u64) {
        let mut budget = lock(&self.budget);
        budget.0 -= cost;
        budget.1 -= 1;
        self.budget_cv.notify_one();
    }

    fn take_buffer(&self, len: usize) -> Vec<u8> {
        let mut buf = {
            let mut pool = lock(&self.pool);
            match pool.0.iter().position(|b| b.len() >= len) {
                Some(i) => {
                    let b = pool.0.swap_remove(i);
                    pool.1 -= b.len();
                    b
                }
                None => Vec::new(),
            }
        };
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    fn give_buffer(&self, buf: Vec<u8>) {
        if buf.is_empty() {
            return;
        }
        let mut pool = lock(&self.pool);
        if pool.1 + buf.len() <= MAX_POOLED_BYTES {
            pool.1 += buf.len();
            pool.0.push(buf);
        }
    }

    /// Sends a reply made of several slices in one locked, vectored write.
    fn send(&self, parts: &mut [IoSlice<'_>]) {
        if self.broken.load(Ordering::SeqCst) {
            return;
        }
        let writer = lock(&self.writer);
        if let Err(e) = write_all_vectored(*writer, parts) {
            log::info!("cannot send reply: {e}");
            self.broken.store(true, Ordering::SeqCst);
            // Wake the reading thread so the connection ends.
            let _ = writer.shutdown(Shutdown::Both);
        }
    }

    fn reply_simple(&self, handle: u64, error: Errno) {
        let mut head = [0u8; SimpleReply::SIZE];
        SimpleReply { error, handle }.encode(&mut head);
        self.send(&mut [IoSlice::new(&head)]);
    }

    /// An error reply: structured for READ and BLOCK_STATUS once structured replies are on.
    fn reply_error(&self, req: &Request, error: Errno) {
        if self.negotiated.structured && matches!(req.cmd, Cmd::READ | Cmd::BLOCK_STATUS) {
            let mut head = [0u8; ChunkHeader::SIZE];
            ChunkHeader {
                flags: ChunkFlags::DONE,
                ty: ChunkType::ERROR,
                handle: req.handle,
                len: 6,
            }
            .encode(&mut head);
            let mut body = [0u8; 6];
            body[..4].copy_from_slice(&error.0.to_be_bytes());
            self.send(&mut [IoSlice::new(&head), IoSlice::new(&body)]);
        } else {
            self.reply_simple(req.handle, error);
        }
    }

    /// A successful READ, laid out by [`read_reply`], in one vectored write.
    fn reply_read(&self, req: &Request, data: &[u8]) {
        let mut heads: Vec<([u8; READ_HEAD_MAX], usize, Option<Range<usize>>)> = Vec::new();
        read_reply(req, self.negotiated.structured, data, |head, range| {
            let mut h = [0u8; READ_HEAD_MAX];
            h[..head.len()].copy_from_slice(head);
            heads.push((h, head.len(), range));
        });
        let mut parts = Vec::with_capacity(heads.len() * 2);
        for (head, n, range) in &heads {
            parts.push(IoSlice::new(&head[..*n]));
            if let Some(range) = range {
                parts.push(IoSlice::new(&data[range.clone()]));
            }
        }
        self.send(&mut parts);
    }

    /// A successful READ of data with no hole: one header, then the bytes
    /// straight from the file. A failure half way leaves the reply torn, so
    /// it closes the connection (the spec's answer to an error mid-payload).
    fn reply_read_sendfile(&self, req: &Request) {
        let mut head = [0u8; ChunkHeader::SIZE + 8];
        let head: &[u8] = if self.negotiated.structured {
            let mut h = [0u8; ChunkHeader::SIZE];
            ChunkHeader {
                flags: ChunkFlags::DONE,
                ty: ChunkType::OFFSET_DATA,
                handle: req.handle,
                len: req.len.saturating_add(8),
            }
            .encode(&mut h);
            head[..ChunkHeader::SIZE].copy_from_slice(&h);
            head[ChunkHeader::SIZE..].copy_from_slice(&req.offset.to_be_bytes());
            &head
        } else {
            let mut h = [0u8; SimpleReply::SIZE];
            SimpleReply {
                error: Errno::OK,
                handle: req.handle,
            }
            .encode(&mut h);
            head[..SimpleReply::SIZE].copy_from_slice(&h);
            &head[..SimpleReply::SIZE]
        };
        if self.broken.load(Ordering::SeqCst) {
            return;
        }
        let writer = lock(&self.writer);
        let sent = send_more(*writer, head)
            .and_then(|()| self.backing.send_to(*writer, req.offset, req.len as usize));
        if let Err(e) = sent {
            log::info!(
                "cannot send a READ reply at {}+{}: {e}",
                req.offset,
                req.len
            );
            self.broken.store(true, Ordering::SeqCst);
            let _ = writer.shutdown(Shutdown::Both);
        }
    }

    /// Appends a successful READ's reply to `out`, as [`Conn::reply_read`] sends it.
    fn encode_read(&self, req: &Request, data: &[u8], out: &mut Vec<u8>) {
        read_reply(req, self.negotiated.structured, data, |head, range| {
            out.extend_from_slice(head);
            if let Some(range) = range {
                out.extend_from_slice(&data[range]);
            }
        });
    }

    fn reply_block_status(&self, req: &Request, extents: &[crate::backing::Extent]) {
        let extents = if req.flags.contains(CmdFlags::REQ_ONE) {
            &extents[..1.min(extents.len())]
        } else {
            extents
        };
        let mut body = Vec::with_capacity(4 + 8 * extents.len());
        body.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
        for e in extents {
            // Extents come from a request of at most u32::MAX bytes.
            let len = u32::try_from(e.len).unwrap_or(u32::MAX);
            let flags = if e.hole {
                ExtentFlags::HOLE.0 | ExtentFlags::ZERO.0
            } else {
                0
            };
            body.extend_from_slice(&len.to_be_bytes());
            body.extend_from_slice(&flags.to_be_bytes());
        }
        let mut head = [0u8; ChunkHeader::SIZE];
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        ChunkHeader {
            flags: ChunkFlags::DONE,
            ty: ChunkType::BLOCK_STATUS,
            handle: req.handle,
            len,
        }
        .encode(&mut head);
        self.send(&mut [IoSlice::new(&head), IoSlice::new(&body)]);
    }
}

/// The longest header piece of a READ reply: a hole chunk (header, offset, length).
const READ_HEAD_MAX: usize = ChunkHeader::SIZE + 12;

/// Lays out a successful READ's reply, calling `piece(head, data)` for each
/// piece in order: a simple reply and all of the data, or structured chunks
/// where runs of zero blocks are holes (all of it one chunk with DF), and an
/// empty read is one NONE chunk carrying DONE.
fn read_reply(
    req: &Request,
    structured: bool,
    data: &[u8],
    mut piece: impl FnMut(&[u8], Option<Range<usize>>),
) {
    if !structured {
        let mut head = [0u8; SimpleReply::SIZE];
        SimpleReply {
            error: Errno::OK,
            handle: req.handle,
        }
        .encode(&mut head);
        piece(&head, Some(0..data.len()));
        return;
    }
    let runs = if req.flags.contains(CmdFlags::DF) {
        vec![(0, data.len(), is_zero(data))]
    } else {
        zero_runs(data)
    };
    if runs.is_empty() {
        let mut head = [0u8; ChunkHeader::SIZE];
        ChunkHeader {
            flags: ChunkFlags::DONE,
            ty: ChunkType::NONE,
            handle: req.handle,
            len: 0,
        }
        .encode(&mut head);
        piece(&head, None);
        return;
    }
    for (i, &(start, len, hole)) in runs.iter().enumerate() {
        let flags = if i + 1 == runs.len() {
            ChunkFlags::DONE
        } else {
            ChunkFlags(0)
        };
        // Runs lie inside one request, so their lengths fit the wire's u32.
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        let (ty, chunk_len) = if hole {
            (ChunkType::OFFSET_HOLE, 12)
        } else {
            (ChunkType::OFFSET_DATA, 8 + len32)
        };
        let mut chunk = [0u8; ChunkHeader::SIZE];
        ChunkHeader {
            flags,
            ty,
            handle: req.handle,
            len: chunk_len,
        }
        .encode(&mut chunk);
        let mut head = [0u8; READ_HEAD_MAX];
        head[..ChunkHeader::SIZE].copy_from_slice(&chunk);
        head[ChunkHeader::SIZE..ChunkHeader::SIZE + 8]
            .copy_from_slice(&(req.offset + start as u64).to_be_bytes());
        if hole {
            head[ChunkHeader::SIZE + 8..].copy_from_slice(&len32.to_be_bytes());
            piece(&head, None);
        } else {
            piece(&head[..ChunkHeader::SIZE + 8], Some(start..start + len));
        }
    }
}

/// Splits a READ's data into runs `(start, len, is_hole)`: aligned 4 KiB
/// blocks (relative to the start) that are all zero become holes.
fn zero_runs(data: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for (i, block) in data.chunks(ZERO_BLOCK).enumerate() {
        let hole = is_zero(block);
        match runs.last_mut() {
            Some(last) if last.2 == hole => last.1 += block.len(),
            _ => runs.push((i * ZERO_BLOCK, block.len(), hole)),
        }
    }
    runs
}

fn write_all_vectored(mut w: &TcpStream, parts: &mut [IoSlice<'_>]) -> io::Result<()> {
    let mut parts = parts;
    // Skip empty leading slices so advance_slices never sees them as progress.
    while !parts.is_empty() {
        match w.write_vectored(parts) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut parts, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads a large WRITE's payload into `buf`: what is already buffered is
/// copied, the rest comes straight from the socket. Through the read buffer
/// every byte would be copied twice (socket to buffer, buffer to `buf`).
fn read_payload(reader: &mut BufReader<&TcpStream>, buf: &mut [u8]) -> io::Result<()> {
    use std::io::BufRead as _;
    let buffered = reader.buffer().len().min(buf.len());
    buf[..buffered].copy_from_slice(&reader.buffer()[..buffered]);
    reader.consume(buffered);
    let mut socket = *reader.get_ref();
    socket.read_exact(&mut buf[buffered..])
}

/// Reads a request header. With `streaming` (the last request was a large
/// WRITE whose payload bypassed the read buffer) and an empty read buffer,
/// only the header is read from the socket: filling the buffer would pull in
/// the next payload, to be copied once more by [`read_payload`]. A client
/// sending small requests instead pays one extra read before they are
/// batched again.
fn read_header(
    reader: &mut BufReader<&TcpStream>,
    head: &mut [u8; Request::SIZE],
    streaming: bool,
) -> io::Result<()> {
    if streaming && reader.buffer().is_empty() {
        let mut socket = *reader.get_ref();
        socket.read_exact(head)
    } else {
        reader.read_exact(head)
    }
}

/// Reads and drops `len` bytes (the payload of a refused WRITE) without allocating for it.
fn discard(reader: &mut impl Read, len: u64) -> io::Result<()> {
    let copied = io::copy(&mut reader.take(len), &mut io::sink())?;
    if copied < len {
        Err(io::ErrorKind::UnexpectedEof.into())
    } else {
        Ok(())
    }
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::TimedOut
    )
}

/// The NBD error for a failed file operation.
fn errno_for(e: &io::Error) -> Errno {
    use rustix::io::Errno as E;
    if e.kind() == io::ErrorKind::Unsupported {
        return Errno::ENOTSUP;
    }
    match e.raw_os_error() {
        Some(n)
            if [E::NOSPC, E::DQUOT, E::FBIG]
                .iter()
                .any(|x| x.raw_os_error() == n) =>
        {
            Errno::ENOSPC
        }
        Some(n)
            if [E::ROFS, E::PERM, E::ACCESS]
                .iter()
                .any(|x| x.raw_os_error() == n) =>
        {
            Errno::EPERM
        }
        Some(n) if n == E::NOMEM.raw_os_error() => Errno::ENOMEM,
        Some(n)
            if [E::OPNOTSUPP, E::NOSYS]
                .iter()
                .any(|x| x.raw_os_error() == n) =>
        {
            Errno::ENOTSUP
        }
        _ => Errno::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_split_on_block_boundaries() {
        let mut data = vec![0u8; 5 * 4096 + 100];
        data[4096 * 2 + 5] = 1;
        data[5 * 4096 + 99] = 1;
        assert_eq!(
            zero_runs(&data),
            vec![
                (0, 8192, true),
                (8192, 4096, false),
                (12288, 8192, true),
                (20480, 100, false)
            ]
        );
        assert!(zero_runs(&[]).is_empty());
    }

    #[test]
    fn errnos_follow_the_spec() {
        let e = |n: rustix::io::Errno| io::Error::from_raw_os_error(n.raw_os_error());
        assert_eq!(errno_for(&e(rustix::io::Errno::NOSPC)), Errno::ENOSPC);
        assert_eq!(errno_for(&e(rustix::io::Errno::DQUOT)), Errno::ENOSPC);
        assert_eq!(errno_for(&e(rustix::io::Errno::ROFS)), Errno::EPERM);
        assert_eq!(errno_for(&e(rustix::io::Errno::IO)), Errno::EIO);
        assert_eq!(
            errno_for(&io::Error::from(io::ErrorKind::Unsupported)),
            Errno::ENOTSUP
        );
    }
}
