//! The destination's replies: the window of transfers awaiting one, and
//! the thread that reads them and measures the request limit.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::client::{ErrorKind, NbdClient, ReplyReader};
use crate::proto::consts::MIRROR_HANDLE;
use crate::proto::hash::HASH_LEN;
use crate::proto::types::Errno;

use super::Mirror;
use super::error::{ErrorKind as Kind, MirrorError};

/// Replies outstanding, and the first failure seen by the reply thread.
#[derive(Debug, Default)]
pub(super) struct Window {
    /// Lengths of the transfers awaiting a reply, oldest first.
    pub(super) lens: VecDeque<u64>,
    pub(super) failed: Option<MirrorError>,
    pub(super) closed: bool,
    /// Hash requests awaiting a reply: handle, number of hashes.
    pub(super) hash_pending: HashMap<u64, usize>,
    /// Hash replies not taken yet: handle, the hashes' bytes.
    pub(super) hash_done: HashMap<u64, Vec<u8>>,
}

#[derive(Debug)]
pub(super) struct Replies {
    window: Mutex<Window>,
    pub(super) cv: Condvar,
    /// The request limit: how long outstanding transfers may see no progress.
    pub(super) limit: Option<Duration>,
    /// The last send or reply; the limit counts from here, as flexnbd-c's timer.
    progress: Mutex<Instant>,
}

impl Replies {
    pub(super) fn new(limit: Option<Duration>) -> Replies {
        Replies {
            window: Mutex::new(Window::default()),
            cv: Condvar::new(),
            limit,
            progress: Mutex::new(Instant::now()),
        }
    }

    pub(super) fn progressed(&self) {
        *self.progress.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    pub(super) fn since_progress(&self) -> Duration {
        self.progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .elapsed()
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn fail(&self, why: MirrorError) {
        let mut w = self.lock();
        if w.failed.is_none() {
            w.failed = Some(why);
        }
        self.cv.notify_all();
    }
}

/// A reply reader that wakes often enough to measure the request limit
/// from the last progress rather than from the start of its read.
pub(super) fn reply_reader(
    client: &NbdClient,
    limit: Option<Duration>,
) -> Result<ReplyReader, MirrorError> {
    let mut reader = client.reply_reader()?;
    let tick = limit.map(|l| (l / 4).max(Duration::from_millis(50)));
    reader
        .set_read_timeout(tick)
        .map_err(|e| MirrorError::new(Kind::Connection, format!("cannot set a timeout: {e}")))?;
    Ok(reader)
}

pub(super) fn lock_closed(replies: &Replies) {
    replies.lock().closed = true;
    replies.cv.notify_all();
}

/// On a panic, closes the reply window and the destination's socket, which
/// ends the reply thread.
pub(super) struct CloseOnUnwind<'r> {
    pub(super) replies: &'r Replies,
    pub(super) socket: ReplyReader,
}

impl Drop for CloseOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock_closed(self.replies);
            self.socket.shutdown();
        }
    }
}

/// Reads replies until the connection ends; every reply must be a success for `.MIRROR.`.
pub(super) fn read_replies(mut reader: ReplyReader, replies: &Replies, mirror: &Mirror) {
    loop {
        match reader.read_reply() {
            Ok(reply) => {
                let hashes = replies.lock().hash_pending.get(&reply.handle).copied();
                if let Some(count) = hashes {
                    if !read_hashes(&mut reader, replies, &reply, count) {
                        return;
                    }
                    continue;
                }
                if reply.error != Errno::OK {
                    replies.fail(MirrorError::new(
                        Kind::Reply,
                        format!("Error returned from listener: {}", reply.error),
                    ));
                    return;
                }
                if reply.handle != MIRROR_HANDLE {
                    replies.fail(MirrorError::new(
                        Kind::Reply,
                        "Bad handle returned from listener",
                    ));
                    return;
                }
                replies.progressed();
                let mut w = replies.lock();
                let Some(len) = w.lens.pop_front() else {
                    drop(w);
                    replies.fail(MirrorError::new(
                        Kind::Reply,
                        "reply from listener without a request",
                    ));
                    return;
                };
                mirror.acked.fetch_add(len, Ordering::SeqCst);
                mirror.in_flight.fetch_sub(len, Ordering::SeqCst);
                replies.cv.notify_all();
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {
                let w = replies.lock();
                if w.closed {
                    return;
                }
                let expired = replies.limit.is_some_and(|l| replies.since_progress() >= l);
                let waiting = !w.lens.is_empty() || !w.hash_pending.is_empty();
                if waiting && expired {
                    drop(w);
                    log::warn!("Mirror timeout signalled");
                    replies.fail(MirrorError::new(
                        Kind::Timeout,
                        format!("no reply from listener within the request limit: {e}"),
                    ));
                    return;
                }
                // Idle, or still within the limit: keep waiting.
            }
            Err(e) => {
                if !replies.lock().closed {
                    replies.fail(MirrorError::new(
                        Kind::Connection,
                        format!("EOF or error reading response from listener: {e}"),
                    ));
                }
                return;
            }
        }
    }
}

/// Reads the hashes that follow a hash request's reply into the window;
/// false (the failure recorded) if the connection cannot go on.
fn read_hashes(
    reader: &mut ReplyReader,
    replies: &Replies,
    reply: &crate::proto::wire::SimpleReply,
    count: usize,
) -> bool {
    if reply.error != Errno::OK {
        replies.fail(MirrorError::new(
            Kind::Reply,
            format!("hash request refused by listener: {}", reply.error),
        ));
        return false;
    }
    let mut payload = vec![0u8; count * HASH_LEN];
    if let Err(e) = reader.read_payload(&mut payload) {
        replies.fail(MirrorError::new(
            Kind::Connection,
            format!("cannot read hashes from listener: {e}"),
        ));
        return false;
    }
    replies.progressed();
    let mut w = replies.lock();
    w.hash_pending.remove(&reply.handle);
    w.hash_done.insert(reply.handle, payload);
    replies.cv.notify_all();
    true
}
