//! Gathering a writer's slices into records' worth of plaintext.

use std::io::IoSlice;

/// The plaintext of the next record, gathered from a writer's slices.
pub(super) struct Record<'a> {
    /// The slices not yet taken, the first one less `skip` bytes.
    bufs: &'a [IoSlice<'a>],
    skip: usize,
    /// The pieces of the record being gathered.
    pieces: Vec<IoSlice<'a>>,
}

impl<'a> Record<'a> {
    pub(super) fn new(bufs: &'a [IoSlice<'a>]) -> Self {
        Record {
            bufs,
            skip: 0,
            pieces: Vec::new(),
        }
    }

    /// Up to `max` bytes from the slices, as pieces (none at the end).
    pub(super) fn next(&mut self, max: usize) -> &[IoSlice<'a>] {
        self.pieces.clear();
        let mut len = 0;
        let mut skip = self.skip;
        for buf in self.bufs {
            let buf: &'a [u8] = buf;
            let piece = &buf[skip..];
            skip = 0;
            let piece = &piece[..piece.len().min(max - len)];
            if !piece.is_empty() {
                self.pieces.push(IoSlice::new(piece));
                len += piece.len();
            }
            if len == max {
                break;
            }
        }
        &self.pieces
    }

    /// Drops the first `n` bytes from the slices.
    pub(super) fn advance(&mut self, mut n: usize) {
        while let Some((first, rest)) = self.bufs.split_first() {
            let left = first.len() - self.skip;
            if n < left {
                self.skip += n;
                return;
            }
            n -= left;
            self.bufs = rest;
            self.skip = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_gather_slices_up_to_the_size_asked() {
        let (a, b, c) = ([1u8; 3], [2u8; 10], [3u8; 4]);
        let bufs = [
            IoSlice::new(&a),
            IoSlice::new(&[]),
            IoSlice::new(&b),
            IoSlice::new(&c),
        ];
        let mut record = Record::new(&bufs);
        let mut got = Vec::new();
        loop {
            let pieces = record.next(5);
            if pieces.is_empty() {
                break;
            }
            let bytes: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            assert!(bytes.len() <= 5);
            // Take less than offered, as a writer may.
            let n = bytes.len().min(4);
            got.extend_from_slice(&bytes[..n]);
            record.advance(n);
        }
        let want: Vec<u8> = [&a[..], &b[..], &c[..]].concat();
        assert_eq!(got, want);
    }
}
