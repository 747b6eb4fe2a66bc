//! The read-ahead cache (`--cache`), as flexnbd-c's: a READ of at most the
//! cache size goes upstream with twice its length if that still lies within
//! the export; the second half of the data is kept, and a later READ inside
//! the kept range is answered from it.
//!
//! Pure: no I/O. The proxy empties the cache on every other request and on
//! every new upstream connection, and sends one request at a time while it
//! is on.

use crate::proto::types::Cmd;
use crate::proto::wire::Request;

/// The data kept from the last doubled READ.
#[derive(Debug, Default)]
pub(super) struct Cache {
    from: u64,
    data: Vec<u8>,
}

impl Cache {
    /// Forgets what is kept.
    pub(super) fn clear(&mut self) {
        self.data.clear();
    }

    /// Keeps `data`, which starts at byte `from` of the export.
    pub(super) fn keep(&mut self, from: u64, data: &[u8]) {
        self.from = from;
        self.data.clear();
        self.data.extend_from_slice(data);
    }

    /// The data for a READ of `len` bytes at `offset`, if it lies wholly in what is kept.
    pub(super) fn get(&self, offset: u64, len: u32) -> Option<&[u8]> {
        let end = offset.checked_add(u64::from(len))?;
        let cached_end = self.from + self.data.len() as u64;
        if self.data.is_empty() || offset < self.from || end > cached_end {
            return None;
        }
        let start = usize::try_from(offset - self.from).ok()?;
        self.data.get(start..start + len as usize)
    }
}

/// The request to send upstream for the client's `down`: a non-empty READ of
/// at most `cache` bytes whose doubled range still ends within `size` is
/// sent with its length doubled; anything else as it is.
pub(super) fn read_ahead(down: &Request, cache: Option<usize>, size: u64) -> Request {
    let Some(cache) = cache else { return *down };
    let doubled = down.len.checked_mul(2);
    let fits = doubled.is_some_and(|d| {
        down.offset
            .checked_add(u64::from(d))
            .is_some_and(|end| end <= size)
    });
    match doubled {
        Some(len)
            if down.cmd == Cmd::READ && down.len > 0 && down.len as usize <= cache && fits =>
        {
            Request { len, ..*down }
        }
        _ => *down,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::types::CmdFlags;

    fn read(offset: u64, len: u32) -> Request {
        Request {
            flags: CmdFlags(0),
            cmd: Cmd::READ,
            handle: 1,
            offset,
            len,
        }
    }

    #[test]
    fn a_read_within_the_cache_size_is_doubled() {
        assert_eq!(read_ahead(&read(0, 4096), Some(8192), 16384).len, 8192);
        assert_eq!(read_ahead(&read(0, 8192), Some(8192), 16384).len, 16384);
    }

    #[test]
    fn what_is_not_doubled() {
        let size = 16 * 1024;
        let cases = [
            (read(0, 4096), None, "no cache"),
            (read(0, 8193), Some(8192), "longer than the cache"),
            (
                read(12 * 1024, 4096),
                Some(8192),
                "the doubled read passes the end",
            ),
            (read(0, 0), Some(8192), "empty"),
            (read(u64::MAX - 10, 8), Some(8192), "the end overflows"),
            (read(0, u32::MAX), Some(usize::MAX), "the length overflows"),
            (
                Request {
                    cmd: Cmd::WRITE,
                    ..read(0, 512)
                },
                Some(8192),
                "not a read",
            ),
        ];
        for (req, cache, what) in cases {
            assert_eq!(read_ahead(&req, cache, size), req, "{what}");
        }
    }

    #[test]
    fn reads_inside_the_kept_range_are_answered() {
        let mut cache = Cache::default();
        assert_eq!(cache.get(0, 0), None, "nothing kept");
        let data: Vec<u8> = (0..=255).collect();
        cache.keep(1000, &data);
        assert_eq!(cache.get(1000, 256), Some(&data[..]));
        assert_eq!(cache.get(1010, 10), Some(&data[10..20]));
        assert_eq!(cache.get(999, 10), None, "starts before");
        assert_eq!(cache.get(1250, 10), None, "ends after");
        assert_eq!(cache.get(u64::MAX, 10), None, "overflows");
        cache.keep(0, &data[..16]);
        assert_eq!(cache.get(1010, 10), None, "replaced");
        assert_eq!(cache.get(0, 16), Some(&data[..16]));
        cache.clear();
        assert_eq!(cache.get(0, 16), None);
    }
}
