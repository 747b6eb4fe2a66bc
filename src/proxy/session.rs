//! The client's side of the proxy: one session from handshake to close,
//! reading requests, answering what it can by itself (refusals, duplicate
//! handles, read-ahead hits) and handing the rest to the in-flight table
//! and the upstream connection; after the client has gone, waiting a while
//! for the replies still owed.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::sync::PoisonError;
use std::time::Instant;

use super::cache::read_ahead;
use super::inflight::{Duplicate, InFlight};
use super::{DRAIN_LIMIT, Proxy, STOP_CHECK};
use crate::nbd::handshake::{HANDSHAKE_TIMEOUT, invalid_data};
use crate::nbd::{Handshake, Offer, RequestReader, Stream, serve_handshake, write_all_vectored};
use crate::proto::consts::MAX_REQUEST_LEN;
use crate::proto::handshake::Export;
use crate::proto::types::{Cmd, CmdFlags, Errno, TransmissionFlags};
use crate::proto::wire::{Request, SimpleReply};
use crate::sys::lock;

impl Proxy {
    /// One client from handshake to close; returns the requests answered.
    pub(super) fn session(&self, stream: Stream) -> u64 {
        *lock(&self.down_ctl) = stream.try_clone().ok();
        if self.stop.is_triggered() {
            *lock(&self.down_ctl) = None;
            return 0;
        }
        let mut down = stream;
        // After the handshake: it may have turned the stream into a TLS session.
        let reader = match self.handshake(&mut down).and_then(|()| down.try_clone()) {
            Ok(reader) => reader,
            Err(e) => {
                if crate::nbd::handshake::is_tls_failure(&e) {
                    let who = format_args!("client");
                    crate::nbd::handshake::warn_tls_failure(&self.tls_warnings, who, &e);
                } else {
                    log::info!("client handshake ended: {e}");
                }
                let _ = down.shutdown(Shutdown::Both);
                *lock(&self.down_ctl) = None;
                return 0;
            }
        };
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

    fn handshake(&self, down: &mut Stream) -> io::Result<()> {
        let offer = Offer {
            name: None,
            export: Export {
                size: self.size,
                flags: self.flags,
            },
            oldstyle: self.config.oldstyle,
            // Upstream replies are relayed as they come: simple ones only.
            structured_replies: false,
            timeout: HANDSHAKE_TIMEOUT,
            hash: None,
            tls: self.config.tls.clone(),
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
                    lock(&self.cache).clear();
                }
            }
            match self.submit(req, payload) {
                Ok(()) if self.config.cache.is_some() => {
                    // The cache needs one request at a time.
                    self.wait_for(req.handle);
                }
                Ok(()) => {}
                Err(Duplicate(handle)) => {
                    // Its reply could not be told from the first one's.
                    log::warn!(
                        "client reused handle {handle:#x} while a request with it is in flight: \
                         answered EINVAL, not sent upstream"
                    );
                    self.reply_down(handle, Errno::EINVAL, &[]);
                }
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
        match cache.get(req.offset, req.len) {
            Some(data) => {
                self.reply_down(req.handle, Errno::OK, data);
                true
            }
            None => false,
        }
    }

    /// Records a request and sends it upstream if connected (otherwise the
    /// next connection resends it), with the client's handle.
    ///
    /// # Errors
    ///
    /// [`Duplicate`]: a request with the same handle is in flight; nothing
    /// was recorded or sent.
    fn submit(&self, down: Request, payload: Vec<u8>) -> Result<(), Duplicate> {
        let req = read_ahead(&down, self.config.cache, self.size);
        // `up` is held from recording to sending, so that a reconnection
        // (which holds it too) resends the request or sees it sent, not both.
        let mut up = lock(&self.up);
        let sending = !up.failed && up.client.is_some();
        let out = lock(&self.pending).insert(req, down.len, payload, sending, Instant::now())?;
        if sending {
            self.send_up(&mut up, &out);
        }
        Ok(())
    }

    /// Waits until one more request of `len` payload bytes fits in flight
    /// ([`super::MAX_IN_FLIGHT`], [`super::MAX_IN_FLIGHT_BYTES`]), or the proxy stops.
    fn wait_for_room(&self, len: usize) {
        self.wait_while(|pending| !pending.has_room(len));
    }

    /// Waits until the reply to `handle` was relayed (or the proxy stops).
    fn wait_for(&self, handle: u64) {
        self.wait_while(|pending| pending.contains(handle));
    }

    /// Waits while `busy` holds for the in-flight table, or until the proxy stops.
    fn wait_while(&self, busy: impl Fn(&InFlight) -> bool) {
        let mut pending = lock(&self.pending);
        while !self.stop.is_triggered() && busy(&pending) {
            pending = self
                .pending_cv
                .wait_timeout(pending, STOP_CHECK)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// After the client left: wait a while for the replies still owed, then
    /// forget them, and give up the connection that did not answer them: its
    /// late replies carry handles the next client may use again.
    fn drain(&self) {
        let deadline = Instant::now() + DRAIN_LIMIT.min(self.config.timeout * 2);
        let mut pending = lock(&self.pending);
        while !pending.is_empty() && !self.stop.is_triggered() {
            let now = Instant::now();
            if now >= deadline {
                let dropped = pending.clear();
                log::warn!("dropping {dropped} request(s) the upstream did not answer");
                drop(pending);
                let mut up = lock(&self.up);
                let generation = up.generation;
                self.fail(&mut up, generation);
                return;
            }
            pending = self
                .pending_cv
                .wait_timeout(pending, (deadline - now).min(STOP_CHECK))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Sends a reply to the client, if it is still there.
    pub(super) fn reply_down(&self, handle: u64, error: Errno, data: &[u8]) {
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
