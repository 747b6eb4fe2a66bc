//! How the attempt's thread sends a range: paced by the speed limit, as
//! WRITE_ZEROES when it reads as zero, else as a WRITE whose payload goes
//! with `sendfile` or from the attempt's buffer.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::backing::is_zero;
use crate::proto::consts::MIRROR_HANDLE;
use crate::proto::types::{Cmd, CmdFlags, TransmissionFlags};
use crate::proto::wire::Request;

use super::engine::{Stop, Transfer, WINDOW};
use super::error::{ErrorKind as Kind, MirrorError};
use super::hashes::read_local;

/// To a destination on another machine, a range is checked for zeroes in
/// pieces of this size, read into a buffer this small (it stays in the
/// CPU's cache), up to the first piece with data; the WRITE's payload then
/// goes from the file to the socket with `sendfile`, never copied through
/// user space. To one on this machine (and under TLS) the range is read
/// into the buffer whole, checked there and sent from it: see
/// `Stream::sendfile_pays` for why.
const ZERO_CHECK_PIECE: usize = 64 << 10;

impl Transfer<'_> {
    /// Waits as the speed limit requires before sending `len` bytes.
    fn pace(&mut self, len: u64) -> Result<(), Stop> {
        loop {
            let bps = self.mirror.max_bps.load(Ordering::SeqCst);
            if bps == u64::MAX {
                return Ok(());
            }
            let now = Instant::now();
            if bps > 0 && now >= self.next_send {
                let start = self.next_send.max(now - Duration::from_millis(100));
                self.next_send = start + Duration::from_secs_f64(len as f64 / bps as f64);
                return Ok(());
            }
            // A limit of 0 pauses the migration until the limit is raised.
            let wait = if bps == 0 {
                Duration::from_millis(200)
            } else {
                self.next_send - now
            };
            if self
                .mirror
                .abandon
                .wait_timeout(wait.min(Duration::from_millis(200)))
            {
                return Err(Stop::Abandoned);
            }
            self.check()?;
        }
    }

    /// Sends `[offset, offset + len)` as it is in the file now: WRITE_ZEROES
    /// if it reads as zero and the destination takes that, else a WRITE.
    pub(super) fn send_range(&mut self, offset: u64, len: u64) -> Result<(), Stop> {
        // The range left the dirty map: it counts as left to send from now
        // on, also while the speed limit holds it back.
        self.mirror.in_flight.fetch_add(len, Ordering::SeqCst);
        self.pace(len)?;
        self.wait_window(WINDOW - 1)?;
        let zeroes_ok = self
            .client
            .flags()
            .contains(TransmissionFlags::SEND_WRITE_ZEROES);
        let len32 = u32::try_from(len)
            .map_err(|_| Stop::Failed(MirrorError::new(Kind::Internal, "transfer too long")))?;
        let zero = if self.sendfile {
            zeroes_ok && self.reads_as_zero(offset, len)?
        } else {
            // The whole range is read here and sent from the buffer.
            let len = len32 as usize;
            if self.buf.len() < len {
                self.buf.resize(len, 0);
            }
            read_local(self.server.backing(), &mut self.buf[..len], offset)?;
            zeroes_ok && is_zero(&self.buf[..len])
        };
        let req = Request {
            flags: CmdFlags(0),
            cmd: if zero { Cmd::WRITE_ZEROES } else { Cmd::WRITE },
            handle: MIRROR_HANDLE,
            offset,
            len: len32,
        };
        self.send_request(&req, len)?;
        if let Some(ahead) = self.ahead {
            // The range was read (or found to be a hole): the hashing
            // thread finds it in the page cache.
            ahead.allow(offset + len);
        }
        Ok(())
    }

    /// Whether `[offset, offset + len)` reads as zero, read piece by piece
    /// up to the first with data ([`ZERO_CHECK_PIECE`]).
    ///
    /// Holes are found by reading them (the kernel fills them with zeroes
    /// without touching the disk), not with SEEK_DATA: that takes the
    /// file's inode lock, which every client write to it waits for.
    fn reads_as_zero(&mut self, offset: u64, len: u64) -> Result<bool, Stop> {
        let backing = self.server.backing();
        if self.buf.len() < ZERO_CHECK_PIECE {
            self.buf.resize(ZERO_CHECK_PIECE, 0);
        }
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from(len - done)
                .map_or(ZERO_CHECK_PIECE, |left| left.min(ZERO_CHECK_PIECE));
            let piece = &mut self.buf[..n];
            read_local(backing, piece, offset + done)?;
            if !is_zero(piece) {
                return Ok(false);
            }
            done += n as u64;
        }
        Ok(true)
    }

    /// Records `req` in the window (its reply acknowledges `acked` bytes)
    /// and sends it. A WRITE's payload goes from the file with `sendfile`,
    /// or from `buf`, where [`Transfer::send_range`] read it.
    ///
    /// What the payload carries is the file as it is while it is read (the
    /// kernel may even send a page changed after `sendfile` returned): a
    /// client write meanwhile marked its blocks dirty again after it reached
    /// the file, so they are sent again, later on the same connection.
    pub(super) fn send_request(&mut self, req: &Request, acked: u64) -> Result<(), Stop> {
        {
            let mut w = self.replies.lock();
            if w.lens.is_empty() {
                // The limit applies to outstanding transfers: it starts with the first.
                self.replies.progressed();
            }
            w.lens.push_back(acked);
        }
        let payload_len = if req.cmd == Cmd::WRITE {
            req.len as usize
        } else {
            0
        };
        let sent = if req.cmd == Cmd::WRITE && self.sendfile {
            let backing = self.server.backing();
            let (offset, len) = (req.offset, payload_len);
            self.client
                .send_write_with(req, |socket| backing.send_to(socket, offset, len))
        } else {
            self.client.send_request(req, &self.buf[..payload_len])
        };
        if let Err(e) = sent {
            log::warn!("Couldn't write to listener: {e}");
            return Err(Stop::Failed(MirrorError::new(
                Kind::Connection,
                format!("Couldn't write to listener: {e}"),
            )));
        }
        self.replies.progressed();
        self.mirror
            .wire_bytes
            .fetch_add((Request::SIZE + payload_len) as u64, Ordering::SeqCst);
        Ok(())
    }
}
