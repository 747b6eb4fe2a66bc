//! The flexnbd hash extension's command (`proto::hash`, offered by
//! `listen` only): BLAKE3 hashes of the file's blocks, for a migration
//! source that verifies its copy or skips what is already here.
//!
//! A request is checked by the reading thread (negotiated, on block
//! boundaries, bounded), charged to the connection's in-flight budget and
//! the server's memory budget for its read buffer and its reply, and served
//! by a worker: the file is read with `pread` in [`READ_CHUNK`] pieces and
//! each block hashed, so a request costs a bounded amount of memory
//! whatever it covers.

use std::io::IoSlice;

use crate::backing::Backing;
use crate::proto::hash::{FLAG_HOLDS_DATA, HASH_LEN, HashParams};
use crate::proto::reply;
use crate::proto::types::Errno;
use crate::proto::wire::Request;

use super::Conn;

/// The file is read in pieces of this size (a multiple of the block size).
const READ_CHUNK: u64 = 1 << 20;

/// The hash extension's flags for `backing`: whether it holds any data.
pub(in crate::server) fn offer_flags(backing: &Backing) -> u32 {
    if holds_data(backing) {
        FLAG_HOLDS_DATA
    } else {
        0
    }
}

/// Whether `backing` may hold data: not empty, not all holes.
pub(in crate::server) fn holds_data(backing: &Backing) -> bool {
    let size = backing.size();
    size > 0
        && backing
            .extents(0, size)
            .map_or(true, |extents| extents.iter().any(|e| !e.hole))
}

/// The parameters our server hashes with.
fn params() -> HashParams {
    HashParams::ours(0)
}

/// The block size our server hashes.
pub(in crate::server) fn block_size() -> u32 {
    params().block_size
}

/// The bytes a valid hash request holds while served: its read buffer and its reply.
pub(super) fn cost(req: &Request) -> u64 {
    let len = u64::from(req.len);
    let blocks = len.div_ceil(u64::from(params().block_size));
    len.min(READ_CHUNK) + blocks * HASH_LEN as u64
}

impl Conn<'_> {
    /// Checks a hash request: negotiated, and a range [`HashParams::check_request`] accepts.
    pub(super) fn validate_hash(&self, req: &Request) -> Result<(), Errno> {
        if !self.negotiated.hash {
            self.warn(format_args!("Unknown request {:#010X}", req.cmd.0));
            return Err(Errno::EINVAL);
        }
        if req.flags.0 != 0 {
            return Err(Errno::EINVAL);
        }
        match params().check_request(self.backing.size(), req.offset, req.len) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.warn(format_args!(
                    "hash request {}+{} refused: {e}",
                    req.offset, req.len
                ));
                Err(Errno::EINVAL)
            }
        }
    }

    /// Hashes the request's blocks and replies: a simple reply, then the hashes.
    pub(super) fn reply_hashes(&self, req: &Request) {
        let params = params();
        let block = u64::from(params.block_size);
        let len = u64::from(req.len);
        let count = len.div_ceil(block);
        let mut hashes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        // READ_CHUNK and len are small enough for usize.
        let mut buf = self
            .pool
            .take(usize::try_from(len.min(READ_CHUNK)).unwrap_or(0));
        let hashed = match &self.server.hash_ahead {
            Some(ahead) => ahead.hashes(self.backing, req.offset, len, &mut buf, &mut hashes),
            None => {
                self.backing
                    .read_hashed(req.offset, len, block, READ_CHUNK, &mut buf, &mut hashes)
            }
        };
        if let Err(e) = hashed {
            self.warn(format_args!(
                "hashing {}+{} failed: {e}",
                req.offset, req.len
            ));
            self.pool.give(buf);
            self.reply_error(req, super::reply::errno_for(&e));
            return;
        }
        self.pool.give(buf);
        let head = reply::simple(req.handle, Errno::OK);
        self.writer.send(&mut [
            IoSlice::new(head.as_bytes()),
            IoSlice::new(hashes.as_flattened()),
        ]);
    }
}
