//! What goes back to the client: each reply laid out by `proto::reply` and
//! written whole through the connection's [`crate::nbd::ReplyWriter`], and
//! the NBD error for a failed file operation.

use std::io::{self, IoSlice};

use crate::proto::reply::{self, Head};
use crate::proto::types::{CmdFlags, Errno};
use crate::proto::wire::Request;

use super::Conn;

impl Conn<'_> {
    pub(super) fn reply_simple(&self, handle: u64, error: Errno) {
        self.writer
            .send(&mut [IoSlice::new(reply::simple(handle, error).as_bytes())]);
    }

    /// An error reply: structured for READ and BLOCK_STATUS once structured replies are on.
    pub(super) fn reply_error(&self, req: &Request, error: Errno) {
        let head = reply::error(req, error, self.negotiated.structured);
        self.writer.send(&mut [IoSlice::new(head.as_bytes())]);
    }

    /// A successful READ, laid out by [`reply::read`], in one vectored write.
    pub(super) fn reply_read(&self, req: &Request, data: &[u8]) {
        let mut pieces: Vec<(Head, Option<std::ops::Range<usize>>)> = Vec::new();
        reply::read(req, self.negotiated.structured, data, |head, range| {
            pieces.push((head, range));
        });
        let mut parts = Vec::with_capacity(pieces.len() * 2);
        for (head, range) in &pieces {
            parts.push(IoSlice::new(head.as_bytes()));
            if let Some(range) = range {
                parts.push(IoSlice::new(&data[range.clone()]));
            }
        }
        self.writer.send(&mut parts);
    }

    /// A successful READ of data with no hole: one header, then the bytes
    /// straight from the file with `sendfile`.
    pub(super) fn reply_read_sendfile(&self, req: &Request) {
        let head = reply::read_data_head(req, self.negotiated.structured);
        self.writer.send_then(head.as_bytes(), |stream| {
            self.backing.send_to(stream, req.offset, req.len as usize)
        });
    }

    pub(super) fn reply_block_status(&self, req: &Request, extents: &[crate::backing::Extent]) {
        let extents = if req.flags.contains(CmdFlags::REQ_ONE) {
            &extents[..1.min(extents.len())]
        } else {
            extents
        };
        // Extents come from a request of at most u32::MAX bytes.
        let out = reply::block_status(
            req.handle,
            extents
                .iter()
                .map(|e| (u32::try_from(e.len).unwrap_or(u32::MAX), e.hole)),
        );
        self.writer.send(&mut [IoSlice::new(&out)]);
    }
}

/// The NBD error for a failed file operation.
pub(super) fn errno_for(e: &io::Error) -> Errno {
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
