//! The resilient proxy: one NBD client at a time, relayed to an upstream
//! server that may die, time out or be replaced by a migration, without
//! the client ever seeing the break.
//!
//! ```text
//! client ──(newstyle or old-style)──> proxy ──(old-style or newstyle)──> upstream
//!                                      │ every request is kept until its
//!                                      │ reply has been relayed; on any
//!                                      │ upstream failure: reconnect (every
//!                                      │ 3 s) and resend all of them
//! ```
//!
//! Threads: the accept loop runs one session at a time on the caller's
//! thread, reading requests from the client; a reply thread per upstream
//! connection relays replies; a supervisor thread reconnects whenever an
//! upstream connection fails. Requests carry the proxy's own handles
//! upstream, so a late reply on a dead connection can never be taken for
//! an answer to a resent request.
//!
//! Several requests are in flight at once (at most [`MAX_IN_FLIGHT`], and
//! [`MAX_IN_FLIGHT_BYTES`] of writes: then the client is not read until
//! replies come back), except with the read-ahead cache
//! (`--cache`), which works as flexnbd-c's: one request at a time, a READ of
//! at most the cache size fetches twice its length and keeps the second
//! half, a READ inside the kept range is answered locally, and any other
//! request or a reconnection empties the cache.
//!
//! The client's DISCONNECT is not passed upstream: the upstream connection
//! is kept for the next client.

use std::collections::BTreeMap;
use std::io::{self, IoSlice};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::client::{ClientError, ConnectOptions, ErrorKind, NbdClient, ReplyReader};
use crate::nbd::handshake::{HANDSHAKE_TIMEOUT, invalid_data};
use crate::nbd::{
    Handshake, Listener, Offer, RequestReader, Stream, serve_handshake, write_all_vectored,
};
use crate::proto::consts::MAX_REQUEST_LEN;
use crate::proto::handshake::Export;
use crate::proto::types::{Cmd, CmdFlags, Errno, TransmissionFlags};
use crate::proto::wire::{Request, SimpleReply};
use crate::sys::{Trigger, lock};

/// The default for `FLEXNBD_UPSTREAM_TIMEOUT`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause between failed reconnection attempts (flexnbd-c's cooldown).
pub const RECONNECT_COOLDOWN: Duration = Duration::from_secs(3);
/// The largest read-ahead cache: a doubled read must still fit one request.
pub const MAX_CACHE: usize = (MAX_REQUEST_LEN / 2) as usize;
/// At most this many requests are in flight upstream; the client is not
/// read meanwhile (each is kept until answered, to be resent if need be).
pub const MAX_IN_FLIGHT: usize = 64;
/// At most this many bytes of WRITE data are kept in flight (one request
/// of any size is always let through).
pub const MAX_IN_FLIGHT_BYTES: usize = 128 << 20;
/// How long a finished session waits for the replies it still owes.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How often a thread waiting for something else re-checks the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long [`Proxy::run`] waits at its end for the upstream supervisor, which
/// may be in a connection attempt, before leaving it to the process's exit.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(1);

/// The upstream timeout from `FLEXNBD_UPSTREAM_TIMEOUT` (whole seconds > 0), or the default.
pub fn upstream_timeout() -> Duration {
    match std::env::var("FLEXNBD_UPSTREAM_TIMEOUT") {
        Err(_) => DEFAULT_UPSTREAM_TIMEOUT,
        Ok(text) => match text.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => {
                log::info!("upstream timeout is {secs} s from FLEXNBD_UPSTREAM_TIMEOUT");
                Duration::from_secs(secs)
            }
            _ => {
                log::warn!(
                    "ignoring FLEXNBD_UPSTREAM_TIMEOUT='{text}': not a whole number of seconds > 0"
                );
                DEFAULT_UPSTREAM_TIMEOUT
            }
        },
    }
}

/// How the proxy behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The upstream server.
    pub upstream: SocketAddr,
    /// The local address to connect to the upstream from.
    pub bind: Option<IpAddr>,
    /// The read-ahead cache size in bytes, if any (capped at [`MAX_CACHE`]).
    pub cache: Option<usize>,
    /// Speak the old-style handshake to the client instead of fixed newstyle.
    pub oldstyle: bool,
    /// How long the upstream may make no progress on a request before it is abandoned and resent.
    pub timeout: Duration,
}

/// A request the client is owed a reply for.
#[derive(Debug)]
struct Entry {
    /// The client's handle.
    down_handle: u64,
    /// The request as sent upstream (our handle; a doubled length for read-ahead).
    req: Request,
    /// The client's length (differs from `req.len` for read-ahead).
    down_len: u32,
    /// A WRITE's data (empty otherwise), shared so that a (re)send clones
    /// the pointer and not up to 32 MiB of data.
    payload: Arc<Vec<u8>>,
    /// When it was (re)sent on the current connection.
    sent: Instant,
}

#[derive(Debug, Default)]
struct Pending {
    entries: BTreeMap<u64, Entry>,
    /// The WRITE payload bytes held in `entries`.
    bytes: usize,
    next_handle: u64,
}

#[derive(Debug, Default)]
struct Up {
    client: Option<NbdClient>,
    generation: u64,
    /// The current connection failed and a reconnection is wanted.
    failed: bool,
}

#[derive(Debug, Default)]
struct Cache {
    from: u64,
    data: Vec<u8>,
}

/// The proxy.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    size: u64,
    flags: TransmissionFlags,
    up: Mutex<Up>,
    up_cv: Condvar,
    /// The current connection's generation, readable without `up` (which a blocked sender may hold).
    generation: AtomicU64,
    pending: Mutex<Pending>,
    pending_cv: Condvar,
    /// The writing side of the current client, if one is connected.
    down: Mutex<Option<Stream>>,
    /// Another handle on the current client's socket, only ever locked
    /// briefly: [`Proxy::shutdown`] closes it even while a reply to a client
    /// that does not read blocks in `down`.
    down_ctl: Mutex<Option<Stream>>,
    /// Another handle on the current upstream socket, likewise: closing it
    /// wakes a sender blocked on an upstream that does not read (which
    /// holds `up`).
    up_ctl: Mutex<Option<ReplyReader>>,
    cache: Mutex<Cache>,
    stop: Trigger,
    sessions: Mutex<u64>,
}

impl Proxy {
    /// Connects to the upstream (once, at start-up: a failure here is an error).
    ///
    /// # Errors
    ///
    /// The upstream cannot be reached or its handshake fails.
    pub fn connect(config: ProxyConfig) -> Result<Arc<Proxy>, ClientError> {
        let client = NbdClient::connect(config.upstream, &connect_options(&config))?;
        let size = client.size();
        let flags = passed_on(client.flags());
        let proxy = Arc::new(Proxy {
            config,
            size,
            flags,
            up: Mutex::new(Up::default()),
            up_cv: Condvar::new(),
            generation: AtomicU64::new(0),
            pending: Mutex::new(Pending {
                next_handle: 1,
                ..Pending::default()
            }),
            pending_cv: Condvar::new(),
            down: Mutex::new(None),
            down_ctl: Mutex::new(None),
            up_ctl: Mutex::new(None),
            cache: Mutex::new(Cache::default()),
            stop: Trigger::new().map_err(|source| ClientError::Io {
                what: "creating a pipe",
                source,
            })?,
            sessions: Mutex::new(0),
        });
        proxy.install(client)?;
        Ok(proxy)
    }

    /// The export size the client sees.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Asks [`Proxy::run`] to stop, at once, even in the middle of a request.
    ///
    /// Takes no lock that is held during I/O. The threads waiting on
    /// `up_cv` and `pending_cv` see the stop within `STOP_CHECK` even if
    /// the notification comes between their check and their wait.
    pub fn shutdown(&self) {
        self.stop.trigger();
        self.up_cv.notify_all();
        self.pending_cv.notify_all();
        if let Some(down) = lock(&self.down_ctl).as_ref() {
            let _ = down.shutdown(Shutdown::Both);
        }
        if let Some(up) = lock(&self.up_ctl).as_ref() {
            up.shutdown();
        }
    }

    /// Serves clients one at a time until [`Proxy::shutdown`].
    ///
    /// # Errors
    ///
    /// Only errors of the listener itself.
    pub fn run(self: &Arc<Self>, listener: Listener) -> io::Result<()> {
        // The supervisor's end drops `done_tx`, which wakes the wait below.
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let supervisor = {
            let proxy = self.clone();
            std::thread::Builder::new()
                .name("upstream".into())
                .spawn(move || {
                    let _done = done_tx;
                    proxy.supervise();
                })?
        };
        let result = self.accept_loop(&listener);
        self.shutdown();
        listener.remove_path();
        // The supervisor may be in the middle of a connection attempt (up to
        // 15 s): wait for it a little, then leave it to the process's exit.
        // It never sends, so the wait ends when it drops `done_tx` (it has
        // returned, or panicked) or after the second.
        if done_rx.recv_timeout(SUPERVISOR_GRACE) != Err(RecvTimeoutError::Timeout) {
            let _ = supervisor.join();
        }
        if let Some(client) = self.up.try_lock().ok().and_then(|mut up| up.client.take()) {
            let _ = client.shutdown();
        }
        result
    }

    fn accept_loop(self: &Arc<Self>, listener: &Listener) -> io::Result<()> {
        listener.set_nonblocking(true)?;
        let fd = rustix::fd::AsFd::as_fd(listener);
        let stop_fd = self.stop.fd();
        loop {
            let mut fds = [
                rustix::event::PollFd::new(&fd, rustix::event::PollFlags::IN),
                rustix::event::PollFd::new(&stop_fd, rustix::event::PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
            if self.stop.is_triggered() {
                return Ok(());
            }
            let accepted = listener.accept();
            match accepted {
                Ok((stream, peer)) => {
                    let n = {
                        let mut sessions = lock(&self.sessions);
                        *sessions += 1;
                        *sessions
                    };
                    log::info!("proxy session {n} from {peer}");
                    let served = self.session(stream);
                    log::info!("Finished proxy session {n} after {served} successful request(s)");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    self.stop.wait_timeout(Duration::from_millis(100));
                }
            }
        }
    }

    /// One client from handshake to close; returns the requests answered.
    fn session(&self, stream: Stream) -> u64 {
        let reader = match stream.try_clone() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("cannot clone the client socket: {e}");
                return 0;
            }
        };
        *lock(&self.down_ctl) = stream.try_clone().ok();
        if self.stop.is_triggered() {
            *lock(&self.down_ctl) = None;
            return 0;
        }
        let down = stream;
        if let Err(e) = self.handshake(&down) {
            log::info!("client handshake ended: {e}");
            let _ = down.shutdown(Shutdown::Both);
            *lock(&self.down_ctl) = None;
            return 0;
        }
        *lock(&self.down) = Some(down);
        let mut reader = RequestReader::new(&reader);
        let mut answered = 0u64;
        let end = self.relay_requests(&mut reader, &mut answered);
        match end {
            Ok(()) => log::info!("Received disconnect request from client"),
            Err(e) => log::info!("client connection ended: {e}"),
        }
        self.drain();
        if let Some(down) = lock(&self.down_ctl).take() {
            let _ = down.shutdown(Shutdown::Both);
        }
        *lock(&self.down) = None;
        answered
    }

    fn handshake(&self, down: &Stream) -> io::Result<()> {
        let offer = Offer {
            export: Export {
                size: self.size,
                flags: self.flags,
            },
            oldstyle: self.config.oldstyle,
            // Upstream replies are relayed as they come: simple ones only.
            structured_replies: false,
            timeout: HANDSHAKE_TIMEOUT,
        };
        match serve_handshake(down, &offer, || true)? {
            Handshake::Transmit(_) => Ok(()),
            Handshake::Aborted | Handshake::Refused => {
                Err(io::Error::other("client aborted negotiation"))
            }
        }
    }

    /// Reads the client's requests until DISCONNECT (Ok) or the connection ends (Err).
    fn relay_requests(&self, reader: &mut RequestReader<'_>, answered: &mut u64) -> io::Result<()> {
        loop {
            let head = reader.read_header()?;
            let req = Request::decode(&head).map_err(invalid_data)?;
            if req.cmd == Cmd::DISC {
                return Ok(());
            }
            if let Err(errno) = self.validate(&req) {
                if req.cmd == Cmd::WRITE {
                    reader.discard(u64::from(req.len))?;
                }
                self.reply_down(req.handle, errno, &[]);
                *answered += 1;
                continue;
            }
            // Back-pressure: stop reading the client while too much is in flight.
            let len = if req.cmd == Cmd::WRITE {
                req.len as usize
            } else {
                0
            };
            self.wait_for_room(len);
            let mut payload = Vec::new();
            if req.cmd == Cmd::WRITE {
                payload.resize(len, 0);
                reader.read_payload(&mut payload)?;
            }
            if self.config.cache.is_some() {
                if req.cmd == Cmd::READ && self.answer_from_cache(&req) {
                    *answered += 1;
                    continue;
                }
                if req.cmd != Cmd::READ {
                    lock(&self.cache).data.clear();
                }
            }
            let handle = self.submit(req, payload);
            if self.config.cache.is_some() {
                // The cache needs one request at a time.
                self.wait_for(handle);
            }
            *answered += 1;
            if self.stop.is_triggered() {
                return Err(io::Error::other("proxy stopping"));
            }
        }
    }

    /// Refuses what the upstream cannot do (and what no client may send).
    fn validate(&self, req: &Request) -> Result<(), Errno> {
        use TransmissionFlags as F;
        if req.flags.unknown() != 0 {
            return Err(Errno::EINVAL);
        }
        if req.flags.contains(CmdFlags::FUA) && !self.flags.contains(F::SEND_FUA) {
            return Err(Errno::EINVAL);
        }
        let supported = match req.cmd {
            Cmd::READ => true,
            Cmd::WRITE => !self.flags.contains(F::READ_ONLY),
            Cmd::FLUSH => self.flags.contains(F::SEND_FLUSH),
            Cmd::TRIM => self.flags.contains(F::SEND_TRIM),
            Cmd::WRITE_ZEROES => self.flags.contains(F::SEND_WRITE_ZEROES),
            Cmd::CACHE => self.flags.contains(F::SEND_CACHE),
            _ => false,
        };
        if !supported {
            return Err(if req.cmd == Cmd::WRITE {
                Errno::EPERM
            } else {
                Errno::EINVAL
            });
        }
        if matches!(req.cmd, Cmd::READ | Cmd::WRITE) && req.len > MAX_REQUEST_LEN {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    fn answer_from_cache(&self, req: &Request) -> bool {
        let cache = lock(&self.cache);
        let Some(end) = req.end() else { return false };
        let cached_end = cache.from + cache.data.len() as u64;
        if cache.data.is_empty() || req.offset < cache.from || end > cached_end {
            return false;
        }
        let start = usize::try_from(req.offset - cache.from).unwrap_or(usize::MAX);
        let data = &cache.data[start..start + req.len as usize];
        self.reply_down(req.handle, Errno::OK, data);
        true
    }

    /// Records a request and sends it upstream if connected; returns our handle.
    fn submit(&self, down: Request, payload: Vec<u8>) -> u64 {
        let mut req = down;
        if let (Some(cache), Cmd::READ) = (self.config.cache, down.cmd) {
            let len = u64::from(down.len);
            let doubled_fits = down
                .offset
                .checked_add(2 * len)
                .is_some_and(|e| e <= self.size);
            if len > 0 && (down.len as usize) <= cache && doubled_fits {
                req.len = down.len * 2;
            }
        }
        let up = lock(&self.up);
        let handle = {
            let mut pending = lock(&self.pending);
            let handle = pending.next_handle;
            pending.next_handle += 1;
            req.handle = handle;
            let payload = Arc::new(payload);
            pending.bytes += payload.len();
            pending.entries.insert(
                handle,
                Entry {
                    down_handle: down.handle,
                    req,
                    down_len: down.len,
                    payload,
                    sent: Instant::now(),
                },
            );
            handle
        };
        self.send_up(up, handle);
        handle
    }

    /// Sends entry `handle` on the current connection (if any); a failure asks for a reconnection.
    fn send_up(&self, mut up: MutexGuard<'_, Up>, handle: u64) {
        if up.failed {
            return; // resent after the reconnection
        }
        let generation = up.generation;
        // Never hold `pending` while sending: the reply thread needs it to make progress.
        let entry = lock(&self.pending)
            .entries
            .get(&handle)
            .map(|e| (e.req, e.payload.clone()));
        let result = match (up.client.as_mut(), entry) {
            (Some(client), Some((req, payload))) => client.send_request(&req, &payload),
            _ => Ok(()),
        };
        if let Err(e) = result {
            log::warn!("sending to upstream failed: {e}");
            self.fail(&mut up, generation);
        }
    }

    fn fail(&self, up: &mut Up, generation: u64) {
        if up.generation == generation && !up.failed {
            up.failed = true;
            if let Some(client) = up.client.as_ref() {
                let _ = client.shutdown();
            }
            self.up_cv.notify_all();
        }
    }

    /// Waits until one more request of `len` payload bytes fits in flight
    /// ([`MAX_IN_FLIGHT`], [`MAX_IN_FLIGHT_BYTES`]), or the proxy stops.
    fn wait_for_room(&self, len: usize) {
        let mut pending = lock(&self.pending);
        while !self.stop.is_triggered()
            && !pending.entries.is_empty()
            && (pending.entries.len() >= MAX_IN_FLIGHT || pending.bytes + len > MAX_IN_FLIGHT_BYTES)
        {
            pending = self
                .pending_cv
                .wait_timeout(pending, STOP_CHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until the reply to `handle` was relayed (or the proxy stops).
    fn wait_for(&self, handle: u64) {
        let mut pending = lock(&self.pending);
        while pending.entries.contains_key(&handle) && !self.stop.is_triggered() {
            pending = self
                .pending_cv
                .wait_timeout(pending, STOP_CHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// After the client left: wait a while for the replies still owed, then forget them.
    fn drain(&self) {
        let deadline = Instant::now() + DRAIN_LIMIT.min(self.config.timeout * 2);
        let mut pending = lock(&self.pending);
        while !pending.entries.is_empty() && !self.stop.is_triggered() {
            let now = Instant::now();
            if now >= deadline {
                log::warn!(
                    "dropping {} request(s) the upstream did not answer",
                    pending.entries.len()
                );
                pending.entries.clear();
                pending.bytes = 0;
                break;
            }
            pending = self
                .pending_cv
                .wait_timeout(pending, (deadline - now).min(STOP_CHECK))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Makes `client` the current upstream connection and starts its reply thread.
    fn install(self: &Arc<Self>, client: NbdClient) -> Result<(), ClientError> {
        let reader = client.reply_reader()?;
        *lock(&self.up_ctl) = Some(client.reply_reader()?);
        if self.stop.is_triggered() {
            if let Some(up) = lock(&self.up_ctl).as_ref() {
                up.shutdown();
            }
        }
        let mut up = lock(&self.up);
        up.generation += 1;
        up.failed = false;
        up.client = Some(client);
        let generation = up.generation;
        // Publish the generation and take what to resend under one lock, the
        // one a reply thread holds while it checks its generation and takes
        // an entry: each request is then either answered by the old
        // connection or resent on this one, never both (a resent write
        // executing after a later write of the client would undo it).
        let handles: Vec<u64> = {
            let pending = lock(&self.pending);
            self.generation.store(generation, Ordering::SeqCst);
            pending.entries.keys().copied().collect()
        };
        lock(&self.cache).data.clear();
        let proxy = self.clone();
        std::thread::Builder::new()
            .name(format!("upstream-{generation}"))
            .spawn(move || proxy.read_replies(reader, generation))
            .map_err(|source| ClientError::Io {
                what: "starting the reply thread",
                source,
            })?;
        // Resend everything still owed, oldest first, on the new connection.
        if !handles.is_empty() {
            log::info!(
                "resending {} request(s) to the new upstream connection",
                handles.len()
            );
        }
        for handle in handles {
            let entry = lock(&self.pending).entries.get_mut(&handle).map(|e| {
                e.sent = Instant::now();
                (e.req, e.payload.clone())
            });
            let result = match (up.client.as_mut(), entry) {
                (Some(client), Some((req, payload))) => client.send_request(&req, &payload),
                _ => Ok(()),
            };
            if let Err(e) = result {
                log::warn!("resending to upstream failed: {e}");
                self.fail(&mut up, generation);
                break;
            }
        }
        Ok(())
    }

    /// Reconnects whenever the current upstream connection has failed.
    fn supervise(self: Arc<Self>) {
        loop {
            {
                let mut up = lock(&self.up);
                while !up.failed && !self.stop.is_triggered() {
                    up = self
                        .up_cv
                        .wait_timeout(up, STOP_CHECK)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                if self.stop.is_triggered() {
                    return;
                }
                if let Some(old) = up.client.take() {
                    let _ = old.shutdown();
                }
            }
            loop {
                if self.stop.is_triggered() {
                    return;
                }
                match NbdClient::connect(self.config.upstream, &connect_options(&self.config)) {
                    Ok(client) => {
                        if client.size() != self.size {
                            log::warn!(
                                "Size changed from {} to {} bytes",
                                self.size,
                                client.size()
                            );
                        }
                        if passed_on(client.flags()) != self.flags {
                            log::warn!(
                                "Upstream transmission flags changed from {:?} to {:?}",
                                self.flags,
                                passed_on(client.flags())
                            );
                        }
                        log::info!("reconnected to upstream {}", self.config.upstream);
                        if let Err(e) = self.install(client) {
                            log::warn!("cannot use the new upstream connection: {e}");
                            continue;
                        }
                        break;
                    }
                    Err(e) => {
                        log::info!("cannot reconnect to upstream {}: {e}", self.config.upstream);
                        if self.stop.wait_timeout(RECONNECT_COOLDOWN) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Relays replies from one upstream connection to the client.
    ///
    /// The upstream timeout runs while a request is owed, from the later of
    /// the last reply and the oldest owed request's sending: an idle
    /// connection never times out, and a request sent just before an idle
    /// wait would have ended gets the whole timeout.
    fn read_replies(self: Arc<Self>, mut reader: ReplyReader, generation: u64) {
        let timeout = self.config.timeout;
        let mut buf = Vec::new();
        let mut last_reply = Instant::now();
        loop {
            let waiting_since = self.oldest_sent().map(|sent| sent.max(last_reply));
            let wait = waiting_since.map_or(timeout, |since| {
                timeout
                    .saturating_sub(since.elapsed())
                    .max(Duration::from_millis(10))
            });
            let _ = reader.set_read_timeout(Some(wait));
            let reply = match reader.read_reply() {
                Ok(reply) => reply,
                Err(e) if e.kind() == ErrorKind::Timeout => {
                    let since = self.oldest_sent().map(|sent| sent.max(last_reply));
                    if since.is_none_or(|since| since.elapsed() < timeout) {
                        continue; // idle, or not long enough
                    }
                    log::warn!(
                        "Timed out waiting for upstream: no reply for {} s",
                        timeout.as_secs()
                    );
                    self.reader_failed(&reader, generation);
                    return;
                }
                Err(e) => {
                    if !self.stop.is_triggered() {
                        log::info!("upstream connection {generation} ended: {e}");
                    }
                    self.reader_failed(&reader, generation);
                    return;
                }
            };
            let entry_req = lock(&self.pending)
                .entries
                .get(&reply.handle)
                .map(|e| e.req);
            let Some(req) = entry_req else {
                log::warn!("upstream replied to unknown handle {:#x}", reply.handle);
                self.reader_failed(&reader, generation);
                return;
            };
            last_reply = Instant::now();
            let with_data = req.cmd == Cmd::READ && reply.error == Errno::OK;
            if with_data {
                // The data follows at once; the whole timeout for each read of it.
                let _ = reader.set_read_timeout(Some(timeout));
                buf.resize(req.len as usize, 0);
                if let Err(e) = reader.read_payload(&mut buf) {
                    log::info!("upstream connection {generation} ended mid-reply: {e}");
                    self.reader_failed(&reader, generation);
                    return;
                }
            }
            let Some(entry) = ({
                let mut pending = lock(&self.pending);
                // Still current? A reply on a connection that was replaced is
                // not relayed: its request is being resent (see `install`).
                if self.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
                let entry = pending.entries.remove(&reply.handle);
                if let Some(e) = &entry {
                    pending.bytes -= e.payload.len();
                }
                entry
            }) else {
                continue;
            };
            let down_len = entry.down_len as usize;
            if with_data && req.len as usize > down_len {
                let mut cache = lock(&self.cache);
                cache.from = req.offset + u64::from(entry.down_len);
                cache.data.clear();
                cache.data.extend_from_slice(&buf[down_len..]);
            }
            let data = if with_data { &buf[..down_len] } else { &[][..] };
            self.reply_down(entry.down_handle, reply.error, data);
            self.pending_cv.notify_all();
        }
    }

    /// When the longest-owed request was sent, if any is owed.
    fn oldest_sent(&self) -> Option<Instant> {
        lock(&self.pending).entries.values().map(|e| e.sent).min()
    }

    /// The reply thread gave up on its connection: shut the socket (waking a
    /// sender blocked on it, which holds `up`) before asking for a reconnection.
    fn reader_failed(&self, reader: &ReplyReader, generation: u64) {
        reader.shutdown();
        self.fail(&mut lock(&self.up), generation);
    }

    fn reply_down(&self, handle: u64, error: Errno, data: &[u8]) {
        let mut head = [0u8; SimpleReply::SIZE];
        SimpleReply { error, handle }.encode(&mut head);
        let mut down = lock(&self.down);
        if let Some(stream) = down.as_mut() {
            let mut parts = [IoSlice::new(&head), IoSlice::new(data)];
            if let Err(e) = write_all_vectored(stream, &mut parts) {
                log::info!("cannot reply to the client: {e}");
                let _ = stream.shutdown(Shutdown::Both);
                *down = None;
            }
        }
    }
}

/// The upstream's transmission flags as the proxy passes them on: no
/// structured replies (so no DF or block status), and one client at a time
/// (so no multi-conn).
fn passed_on(upstream: TransmissionFlags) -> TransmissionFlags {
    let keep = TransmissionFlags::HAS_FLAGS.0
        | TransmissionFlags::READ_ONLY.0
        | TransmissionFlags::SEND_FLUSH.0
        | TransmissionFlags::SEND_FUA.0
        | TransmissionFlags::ROTATIONAL.0
        | TransmissionFlags::SEND_TRIM.0
        | TransmissionFlags::SEND_WRITE_ZEROES.0
        | TransmissionFlags::SEND_CACHE.0
        | TransmissionFlags::SEND_FAST_ZERO.0;
    TransmissionFlags((upstream.0 & keep) | TransmissionFlags::HAS_FLAGS.0)
}

fn connect_options(config: &ProxyConfig) -> ConnectOptions {
    ConnectOptions {
        bind: config.bind,
        connect_timeout: Duration::from_secs(15).min(config.timeout),
        hello_timeout: Duration::from_secs(15).min(config.timeout),
        reply_timeout: config.timeout,
    }
}
