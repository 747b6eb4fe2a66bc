//! The proxy's in-flight table: every request the client is owed a reply
//! for, kept until that reply has been relayed, so that it can be resent on
//! a new upstream connection.
//!
//! Pure bookkeeping: no I/O, no threads, no clock (times are arguments).
//! The proxy keeps one table behind a mutex and asks it, under that lock,
//! whether a reply may be relayed.
//!
//! Invariants:
//!
//! - Requests go upstream with the client's own handles, so a handle names
//!   at most one request in flight: a second request with a handle still in
//!   flight is refused ([`Duplicate`]) and never sent.
//! - Every upstream connection has a generation, counted by the table
//!   ([`InFlight::next_generation`]), and every request remembers the
//!   generation it was last sent on. A reply is taken only if it comes on
//!   the current generation for a request sent on it: a reply from a
//!   replaced connection is refused ([`Refused::Stale`]) because its request
//!   has been resent, so each request is answered once even though the same
//!   handle may be in flight on the old connection and on the new one.
//! - [`InFlight::bytes`] is the sum of the WRITE payloads held.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::proto::wire::Request;

/// How much may be in flight at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// At most this many requests.
    pub(super) requests: usize,
    /// At most this many bytes of WRITE payload (one request of any size is
    /// always let through).
    pub(super) bytes: usize,
}

/// A request to put on the upstream wire: its header and a WRITE's data.
#[derive(Debug, Clone)]
pub(super) struct Outgoing {
    /// The header as sent upstream (the client's handle).
    pub(super) req: Request,
    /// A WRITE's data (empty otherwise), shared so that a (re)send clones the
    /// pointer and not up to 32 MiB of data.
    pub(super) payload: Arc<Vec<u8>>,
}

/// What the relay of a reply needs to know about its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Owed {
    /// The request as sent upstream (a READ's length may be doubled by the read-ahead cache).
    pub(super) req: Request,
    /// The length the client asked for.
    pub(super) down_len: u32,
}

/// Why a reply is not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// It came on a connection that has been replaced: its request, if
    /// still owed, has been resent and is answered by the new connection.
    Stale,
    /// The current connection answered a handle it was not sent: the
    /// upstream broke the protocol.
    Unknown,
}

/// A request whose handle is already in flight (the client reused it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Duplicate(pub(super) u64);

#[derive(Debug)]
struct Entry {
    /// The order of arrival, for resending oldest first.
    seq: u64,
    req: Request,
    down_len: u32,
    payload: Arc<Vec<u8>>,
    /// When it was last (re)sent, or recorded if not sent yet.
    sent: Instant,
    /// The generation it was last sent on; `None` while it waits for a connection.
    sent_on: Option<u64>,
}

/// The requests in flight, by the client's handle.
#[derive(Debug)]
pub(super) struct InFlight {
    entries: BTreeMap<u64, Entry>,
    bytes: usize,
    generation: u64,
    next_seq: u64,
    limits: Limits,
}

impl InFlight {
    /// An empty table at generation 0 (no connection yet).
    pub(super) fn new(limits: Limits) -> InFlight {
        InFlight {
            entries: BTreeMap::new(),
            bytes: 0,
            generation: 0,
            next_seq: 0,
            limits,
        }
    }

    /// How many requests are in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is owed.
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The WRITE payload bytes held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the request with `handle` is still owed its reply.
    pub(super) fn contains(&self, handle: u64) -> bool {
        self.entries.contains_key(&handle)
    }

    /// Whether one more request with `len` payload bytes fits within the
    /// limits; a request always fits in an empty table.
    pub(super) fn has_room(&self, len: usize) -> bool {
        self.entries.is_empty()
            || (self.entries.len() < self.limits.requests
                && self.bytes.saturating_add(len) <= self.limits.bytes)
    }

    /// Records `req` (as it goes upstream) for a client that asked for
    /// `down_len` bytes. `sending` says it is about to be sent on the current
    /// connection; otherwise it waits for the next one. Returns what to send.
    ///
    /// # Errors
    ///
    /// [`Duplicate`] if a request with the same handle is in flight; the
    /// table is unchanged.
    pub(super) fn insert(
        &mut self,
        req: Request,
        down_len: u32,
        payload: Vec<u8>,
        sending: bool,
        now: Instant,
    ) -> Result<Outgoing, Duplicate> {
        if self.entries.contains_key(&req.handle) {
            return Err(Duplicate(req.handle));
        }
        let payload = Arc::new(payload);
        self.bytes += payload.len();
        self.next_seq += 1;
        self.entries.insert(
            req.handle,
            Entry {
                seq: self.next_seq,
                req,
                down_len,
                payload: payload.clone(),
                sent: now,
                sent_on: sending.then_some(self.generation),
            },
        );
        Ok(Outgoing { req, payload })
    }

    /// Starts the next generation (a new upstream connection): everything
    /// still owed counts as sent on it at `now`. Returns the new generation
    /// and what to resend, oldest first. From now on, replies from earlier
    /// generations are [`Refused::Stale`].
    pub(super) fn next_generation(&mut self, now: Instant) -> (u64, Vec<Outgoing>) {
        self.generation += 1;
        let mut owed: Vec<&mut Entry> = self.entries.values_mut().collect();
        owed.sort_by_key(|e| e.seq);
        let resend = owed
            .into_iter()
            .map(|e| {
                e.sent = now;
                e.sent_on = Some(self.generation);
                Outgoing {
                    req: e.req,
                    payload: e.payload.clone(),
                }
            })
            .collect();
        (self.generation, resend)
    }

    /// Whether a reply to `handle` on connection `generation` would be
    /// taken, and what was asked (to read a READ's data before taking it).
    ///
    /// # Errors
    ///
    /// [`Refused`]: the reply is not to be relayed.
    pub(super) fn check(&self, generation: u64, handle: u64) -> Result<Owed, Refused> {
        if generation != self.generation {
            return Err(Refused::Stale);
        }
        match self.entries.get(&handle) {
            Some(e) if e.sent_on == Some(generation) => Ok(Owed {
                req: e.req,
                down_len: e.down_len,
            }),
            _ => Err(Refused::Unknown),
        }
    }

    /// Takes the request a reply to `handle` on connection `generation`
    /// answers: it is no longer owed, and the reply is to be relayed.
    ///
    /// # Errors
    ///
    /// [`Refused`], as [`InFlight::check`]; the table is unchanged.
    pub(super) fn take(&mut self, generation: u64, handle: u64) -> Result<Owed, Refused> {
        let owed = self.check(generation, handle)?;
        if let Some(e) = self.entries.remove(&handle) {
            self.bytes -= e.payload.len();
        }
        Ok(owed)
    }

    /// When the longest-owed request was (re)sent, if any is owed.
    pub(super) fn oldest_sent(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.sent).min()
    }

    /// Forgets everything owed; returns how many requests that was.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.bytes = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::proto::types::{Cmd, CmdFlags};

    const LIMITS: Limits = Limits {
        requests: 3,
        bytes: 1000,
    };

    fn req(cmd: Cmd, handle: u64, len: u32) -> Request {
        Request {
            flags: CmdFlags(0),
            cmd,
            handle,
            offset: 0,
            len,
        }
    }

    fn write(handle: u64, len: u32) -> (Request, Vec<u8>) {
        (req(Cmd::WRITE, handle, len), vec![0; len as usize])
    }

    /// A table on its first connection.
    fn connected() -> (InFlight, Instant) {
        let mut t = InFlight::new(LIMITS);
        let now = Instant::now();
        let (generation, resend) = t.next_generation(now);
        assert_eq!((generation, resend.len()), (1, 0));
        (t, now)
    }

    #[track_caller]
    fn send(t: &mut InFlight, r: Request, payload: Vec<u8>, now: Instant) -> Outgoing {
        t.insert(r, r.len, payload, true, now).unwrap()
    }

    #[test]
    fn a_reply_on_the_current_connection_is_taken_once() {
        let (mut t, now) = connected();
        let out = send(&mut t, req(Cmd::READ, 7, 512), Vec::new(), now);
        assert_eq!(out.req.handle, 7, "the client's handle goes upstream");
        assert_eq!(t.check(1, 7).unwrap().req, out.req);
        assert_eq!(
            t.take(1, 7),
            Ok(Owed {
                req: out.req,
                down_len: 512
            })
        );
        assert!(t.is_empty());
        assert_eq!(t.take(1, 7), Err(Refused::Unknown), "answered twice");
    }

    #[test]
    fn a_resent_request_is_answered_once() {
        let (mut t, now) = connected();
        let (w, data) = write(7, 100);
        send(&mut t, w, data, now);
        // The connection fails; the next one resends the write.
        let later = now + Duration::from_secs(3);
        let (generation, resend) = t.next_generation(later);
        assert_eq!(generation, 2);
        assert_eq!(resend.len(), 1);
        assert_eq!(resend[0].req, w);
        assert_eq!(resend[0].payload.len(), 100);
        assert_eq!(t.oldest_sent(), Some(later), "the timeout restarts");
        // Both connections answer: only the new one's reply is taken.
        assert_eq!(t.take(1, 7), Err(Refused::Stale));
        assert_eq!(t.take(2, 7).map(|o| o.req), Ok(w));
        assert_eq!(t.take(2, 7), Err(Refused::Unknown));
        assert_eq!(t.take(1, 7), Err(Refused::Stale));
        assert_eq!((t.len(), t.bytes()), (0, 0));
    }

    #[test]
    fn a_reply_from_the_old_upstream_after_a_reconnect_is_dropped() {
        let (mut t, now) = connected();
        send(&mut t, req(Cmd::READ, 1, 512), Vec::new(), now);
        t.next_generation(now);
        // The old connection's reply arrives after the reconnection: refused
        // even before its data is read, and the request is still owed.
        assert_eq!(t.check(1, 1), Err(Refused::Stale));
        assert_eq!(t.take(1, 1), Err(Refused::Stale));
        assert!(t.contains(1));
        // Once the new connection has answered, the client may reuse the
        // handle: a late reply from the old connection must not answer that.
        t.take(2, 1).unwrap();
        send(&mut t, req(Cmd::READ, 1, 4096), Vec::new(), now);
        assert_eq!(t.take(1, 1), Err(Refused::Stale));
        assert_eq!(t.take(2, 1).map(|o| o.req.len), Ok(4096));
    }

    #[test]
    fn a_request_not_sent_on_a_connection_is_not_answered_by_it() {
        // Recorded while the connection is down: a late reply from that
        // connection to a request with the same handle is not for it.
        let (mut t, now) = connected();
        t.insert(req(Cmd::READ, 5, 512), 512, Vec::new(), false, now)
            .unwrap();
        assert_eq!(t.check(1, 5), Err(Refused::Unknown));
        let (generation, resend) = t.next_generation(now);
        assert_eq!(resend.len(), 1);
        assert!(t.take(generation, 5).is_ok());
    }

    #[test]
    fn a_reply_to_an_unknown_handle_is_reported() {
        let (mut t, now) = connected();
        send(&mut t, req(Cmd::READ, 1, 512), Vec::new(), now);
        assert_eq!(t.check(1, 2), Err(Refused::Unknown));
        assert_eq!(t.take(1, 2), Err(Refused::Unknown));
        assert_eq!(t.len(), 1, "the table is unchanged");
    }

    #[test]
    fn a_handle_in_flight_cannot_be_used_again() {
        let (mut t, now) = connected();
        let (w, data) = write(9, 100);
        send(&mut t, w, data, now);
        let (again, data) = write(9, 200);
        assert_eq!(
            t.insert(again, 200, data, true, now).map(|o| o.req),
            Err(Duplicate(9))
        );
        assert_eq!((t.len(), t.bytes()), (1, 100), "the table is unchanged");
        assert_eq!(t.take(1, 9).map(|o| o.req.len), Ok(100));
        // Answered: the handle is free again.
        send(&mut t, again, vec![0; 200], now);
        assert_eq!(t.bytes(), 200);
    }

    #[test]
    fn requests_are_resent_oldest_first_whatever_their_handles() {
        let (mut t, now) = connected();
        for handle in [30, 10, 20] {
            send(&mut t, req(Cmd::READ, handle, 512), Vec::new(), now);
        }
        t.take(1, 10).unwrap();
        let (_, resend) = t.next_generation(now);
        let handles: Vec<u64> = resend.iter().map(|o| o.req.handle).collect();
        assert_eq!(handles, vec![30, 20]);
    }

    #[test]
    fn room_counts_requests_and_write_bytes() {
        let (mut t, now) = connected();
        assert!(
            t.has_room(5000),
            "one request of any size fits an empty table"
        );
        let (w, data) = write(1, 600);
        send(&mut t, w, data, now);
        assert_eq!(t.bytes(), 600);
        assert!(t.has_room(400));
        assert!(!t.has_room(401), "over the byte limit");
        send(&mut t, req(Cmd::READ, 2, 1 << 20), Vec::new(), now);
        assert_eq!(t.bytes(), 600, "a READ holds no payload");
        assert!(t.has_room(0));
        send(&mut t, req(Cmd::FLUSH, 3, 0), Vec::new(), now);
        assert!(!t.has_room(0), "over the request limit");
        t.take(1, 1).unwrap();
        assert_eq!(t.bytes(), 0);
        assert!(t.has_room(1000));
        assert_eq!(t.clear(), 2);
        assert!(t.is_empty() && t.bytes() == 0);
    }

    #[test]
    fn oldest_sent_is_the_longest_owed() {
        let (mut t, now) = connected();
        assert_eq!(t.oldest_sent(), None);
        let later = now + Duration::from_secs(1);
        send(&mut t, req(Cmd::READ, 1, 512), Vec::new(), later);
        send(&mut t, req(Cmd::READ, 2, 512), Vec::new(), now);
        assert_eq!(t.oldest_sent(), Some(now));
        t.take(1, 2).unwrap();
        assert_eq!(t.oldest_sent(), Some(later));
    }
}
