//! The upstream side of the proxy: sending requests, installing a new
//! connection (and resending everything owed on it), reconnecting after a
//! failure, and the reply thread that relays one connection's replies.
//!
//! Which replies are relayed is the in-flight table's decision
//! ([`super::inflight`]), taken under its lock: a reply on a replaced
//! connection is dropped, a reply to a handle the connection was not sent
//! gives the connection up.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::inflight::{Outgoing, Refused};
use super::{Proxy, STOP_CHECK, Up, connect_options, passed_on, reconnect_pause};
use crate::client::{ClientError, ErrorKind, NbdClient, ReplyReader};
use crate::proto::types::{Cmd, Errno};
use crate::sys::lock;

impl Proxy {
    /// Sends `out` on the current connection, which must not have failed;
    /// a failure asks for a reconnection (which resends it).
    pub(super) fn send_up(&self, up: &mut Up, out: &Outgoing) {
        let generation = up.generation;
        let result = match up.client.as_mut() {
            Some(client) => client.send_request(&out.req, &out.payload),
            None => Ok(()),
        };
        if let Err(e) = result {
            log::warn!("sending to upstream failed: {e}");
            self.fail(up, generation);
        }
    }

    /// Gives up connection `generation`, if it is the current one, and wakes the supervisor.
    pub(super) fn fail(&self, up: &mut Up, generation: u64) {
        if up.generation == generation && !up.failed {
            up.failed = true;
            if let Some(client) = up.client.as_ref() {
                let _ = client.shutdown();
            }
            self.up_cv.notify_all();
        }
    }

    /// Makes `client` the current upstream connection, starts its reply
    /// thread and resends everything still owed on it.
    pub(super) fn install(self: &Arc<Self>, client: NbdClient) -> Result<(), ClientError> {
        let reader = client.reply_reader()?;
        *lock(&self.up_ctl) = Some(client.reply_reader()?);
        if self.stop.is_triggered() {
            if let Some(up) = lock(&self.up_ctl).as_ref() {
                up.shutdown();
            }
        }
        let mut up = lock(&self.up);
        // The new generation and what to resend come from one step under the
        // table's lock, the one a reply thread holds while it checks its
        // generation and takes a request: each request is then either
        // answered by the old connection or resent on this one, never both
        // (a resent write executing after a later write of the client would
        // undo it).
        let (generation, resend) = lock(&self.pending).next_generation(Instant::now());
        up.generation = generation;
        up.failed = false;
        up.client = Some(client);
        lock(&self.cache).clear();
        let proxy = self.clone();
        std::thread::Builder::new()
            .name(format!("upstream-{generation}"))
            .spawn(move || proxy.read_replies(reader, generation))
            .map_err(|source| ClientError::Io {
                what: "starting the reply thread",
                source,
            })?;
        // Oldest first, on the new connection.
        if !resend.is_empty() {
            log::info!(
                "resending {} request(s) to the new upstream connection",
                resend.len()
            );
        }
        for out in &resend {
            self.send_up(&mut up, out);
            if up.failed {
                break;
            }
        }
        Ok(())
    }

    /// Reconnects whenever the current upstream connection has failed.
    pub(super) fn supervise(self: Arc<Self>) {
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
            let failed_at = Instant::now();
            loop {
                if self.stop.is_triggered() {
                    return;
                }
                match NbdClient::connect(
                    self.config.upstream.clone(),
                    &connect_options(&self.config),
                ) {
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
                        if self.stop.wait_timeout(reconnect_pause(failed_at.elapsed())) {
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
            // Checked before reading any data: the length to read is the request's.
            let req = match lock(&self.pending).check(generation, reply.handle) {
                Ok(owed) => owed.req,
                // Replaced: its requests are being resent (see `install`).
                Err(Refused::Stale) => return,
                Err(Refused::Unknown) => {
                    log::warn!("upstream replied to unknown handle {:#x}", reply.handle);
                    self.reader_failed(&reader, generation);
                    return;
                }
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
            // Checked again: the connection may have been replaced, or the
            // request dropped (see `drain`), while the data was read.
            let owed = match lock(&self.pending).take(generation, reply.handle) {
                Ok(owed) => owed,
                Err(Refused::Stale) => return,
                Err(Refused::Unknown) => continue,
            };
            let down_len = owed.down_len as usize;
            if with_data && req.len as usize > down_len {
                let from = req.offset + u64::from(owed.down_len);
                lock(&self.cache).keep(from, &buf[down_len..]);
            }
            let data = if with_data { &buf[..down_len] } else { &[][..] };
            self.reply_down(reply.handle, reply.error, data);
            self.pending_cv.notify_all();
        }
    }

    /// When the longest-owed request was sent, if any is owed.
    fn oldest_sent(&self) -> Option<Instant> {
        lock(&self.pending).oldest_sent()
    }

    /// The reply thread gave up on its connection: shut the socket (waking a
    /// sender blocked on it, which holds `up`) before asking for a reconnection.
    fn reader_failed(&self, reader: &ReplyReader, generation: u64) {
        reader.shutdown();
        self.fail(&mut lock(&self.up), generation);
    }
}
