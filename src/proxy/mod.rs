//! The resilient proxy: one NBD client at a time, relayed to an upstream
//! server that may die, time out or be replaced by a migration, without
//! the client ever seeing the break.
//!
//! ```text
//! client ──(newstyle or old-style)──> proxy ──(old-style or newstyle)──> upstream
//!                                      │ every request is kept until its
//!                                      │ reply has been relayed; on any
//!                                      │ upstream failure: reconnect (soon,
//!                                      │ then every 3 s) and resend all of them
//! ```
//!
//! Threads: the accept loop runs one session at a time on the caller's
//! thread, reading requests from the client (`session.rs`); a reply thread
//! per upstream connection relays replies, and a supervisor thread
//! reconnects whenever an upstream connection fails (`upstream.rs`).
//!
//! Requests go upstream with the client's own handles, first send and
//! resend alike, as flexnbd-c's proxy sends them (captures and upstream
//! logs can be read by handle). The in-flight table (`inflight.rs`) keeps
//! each request until its reply has been relayed and numbers the upstream
//! connections: a reply is relayed only from the connection its request
//! was last sent on, so a late reply on a replaced connection is never
//! taken for the answer to a resent request. A client that reuses a handle
//! still in flight gets `EINVAL` for the second request, which is not sent.
//!
//! Several requests are in flight at once (at most [`MAX_IN_FLIGHT`], and
//! [`MAX_IN_FLIGHT_BYTES`] of writes: then the client is not read until
//! replies come back), except with the read-ahead cache
//! (`--cache`, `cache.rs`), which works as flexnbd-c's: one request at a
//! time, a READ of at most the cache size fetches twice its length and keeps
//! the second half, a READ inside the kept range is answered locally, and
//! any other request or a reconnection empties the cache.
//!
//! The client's DISCONNECT is not passed upstream: the upstream connection
//! is kept for the next client.

mod cache;
mod inflight;
mod session;
mod upstream;

use std::io;
use std::net::{IpAddr, Shutdown};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::client::{ClientError, ConnectOptions, NbdClient, ReplyReader, Target};
use crate::nbd::handshake::TlsOffer;
use crate::nbd::tls::ClientTls;
use crate::nbd::{Listener, Stream};
use crate::proto::consts::MAX_REQUEST_LEN;
use crate::proto::types::TransmissionFlags;
use crate::sys::{RateLimit, Trigger, lock};

use cache::Cache;
use inflight::{InFlight, Limits};

/// The default for `FLEXNBD_UPSTREAM_TIMEOUT`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest pause between failed reconnection attempts (flexnbd-c's
/// cooldown, which it always waits).
pub const RECONNECT_COOLDOWN: Duration = Duration::from_secs(3);
/// The shortest pause between failed reconnection attempts.
const RECONNECT_FIRST_PAUSE: Duration = Duration::from_millis(10);

/// The pause after a failed reconnection attempt when attempts have been
/// failing for `failing`: a quarter of that, from [`RECONNECT_FIRST_PAUSE`]
/// up to [`RECONNECT_COOLDOWN`]. A migration's destination that takes over
/// within tens of milliseconds of the source going (`listen
/// --serve-after-handover`) is found within about a quarter more; an
/// upstream that stays down is tried every 3 s, as flexnbd-c does.
fn reconnect_pause(failing: Duration) -> Duration {
    (failing / 4).clamp(RECONNECT_FIRST_PAUSE, RECONNECT_COOLDOWN)
}
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
    pub upstream: Target,
    /// The upstream export to ask for (`""`: the default export).
    pub export_name: String,
    /// The local address to connect to the upstream from.
    pub bind: Option<IpAddr>,
    /// The read-ahead cache size in bytes, if any (capped at [`MAX_CACHE`]).
    pub cache: Option<usize>,
    /// Speak the old-style handshake to the client instead of fixed newstyle.
    pub oldstyle: bool,
    /// How long the upstream may make no progress on a request before it is abandoned and resent.
    pub timeout: Duration,
    /// TLS offered or required to the proxy's clients.
    pub tls: Option<TlsOffer>,
    /// TLS towards the upstream, with these credentials.
    pub upstream_tls: Option<ClientTls>,
}

#[derive(Debug, Default)]
struct Up {
    client: Option<NbdClient>,
    /// The current connection's generation, as the in-flight table numbered it.
    generation: u64,
    /// The current connection failed and a reconnection is wanted.
    failed: bool,
}

/// The proxy.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    size: u64,
    flags: TransmissionFlags,
    up: Mutex<Up>,
    up_cv: Condvar,
    /// The requests owed a reply; its generation is the current
    /// connection's, readable without `up` (which a blocked sender may hold).
    pending: Mutex<InFlight>,
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
    /// Bounds the warnings failed TLS handshakes cause, over all sessions.
    tls_warnings: RateLimit,
}

impl Proxy {
    /// Connects to the upstream (once, at start-up: a failure here is an error).
    ///
    /// # Errors
    ///
    /// The upstream cannot be reached or its handshake fails.
    pub fn connect(config: ProxyConfig) -> Result<Arc<Proxy>, ClientError> {
        let client = NbdClient::connect(config.upstream.clone(), &connect_options(&config))?;
        let size = client.size();
        let flags = passed_on(client.flags());
        let proxy = Arc::new(Proxy {
            config,
            size,
            flags,
            up: Mutex::new(Up::default()),
            up_cv: Condvar::new(),
            pending: Mutex::new(InFlight::new(Limits {
                requests: MAX_IN_FLIGHT,
                bytes: MAX_IN_FLIGHT_BYTES,
            })),
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
            tls_warnings: crate::nbd::handshake::tls_warning_limit(),
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
        export_name: config.export_name.clone(),
        connect_timeout: Duration::from_secs(15).min(config.timeout),
        hello_timeout: Duration::from_secs(15).min(config.timeout),
        reply_timeout: config.timeout,
        hash_extension: false,
        tls: config.upstream_tls.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnection_starts_fast_and_slows_to_the_cooldown() {
        let ms = Duration::from_millis;
        assert_eq!(reconnect_pause(Duration::ZERO), ms(10));
        assert_eq!(reconnect_pause(ms(20)), ms(10));
        assert_eq!(reconnect_pause(ms(200)), ms(50));
        assert_eq!(reconnect_pause(ms(4000)), ms(1000));
        assert_eq!(reconnect_pause(ms(60_000)), RECONNECT_COOLDOWN);
    }
}
