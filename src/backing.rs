//! The served file: positioned reads and writes, holes, zeroes and syncs.
//!
//! One [`Backing`] is shared by every connection (`Arc<Backing>`); all
//! operations are positioned (`pread`/`pwrite`/`fallocate`), so no lock is
//! needed and a `fdatasync` on the one descriptor covers the writes of
//! every connection (what makes multi-conn honest).
//!
//! Writes are sparse-aware like the C flexnbd's: an all-zero 4 KiB piece
//! that lands in a hole is not written, so sparse files stay sparse. Unlike
//! the C flexnbd nothing is mapped and nothing is synced per write: data is
//! made durable by [`Backing::sync`], which FLUSH and FUA call.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSliceMut};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::{FallocateFlags, SeekFrom};

use crate::proto::hash::{Hash, hash_block, hash_blocks};
pub use crate::proto::reply::is_zero;

/// The granularity of sparse-aware writes, as flexnbd-c's allocation map.
pub const BLOCK: u64 = 4096;

/// The export is the file size rounded down to this, as flexnbd-c.
pub const SECTOR: u64 = 512;

/// One run of `base:allocation` state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Length in bytes.
    pub len: u64,
    /// Whether the run is unallocated (and so reads as zero).
    pub hole: bool,
}

/// A change of the file under way: bumps [`Backing::modifications`] again
/// when it ends (dropped), however it ends.
#[must_use]
struct Modifying<'a>(&'a AtomicU64);

impl Drop for Modifying<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// The file behind the export.
#[derive(Debug)]
pub struct Backing {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
    /// Bumped before and after every write, trim or zeroing: see [`Backing::modifications`].
    modifications: AtomicU64,
}

impl Backing {
    /// Opens `path` for serving; the export size is its length rounded down to 512 bytes.
    ///
    /// # Errors
    ///
    /// Fails if the file cannot be opened or is not a regular file.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        let len = meta.len();
        let size = len & !(SECTOR - 1);
        if size != len {
            log::warn!(
                "file does not fit into 512-byte sectors; the end of the file will be ignored"
            );
        }
        Ok(Backing {
            file,
            path: path.to_owned(),
            size,
            read_only,
            modifications: AtomicU64::new(0),
        })
    }

    /// The export size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file was opened read-only.
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// Counts the writes, trims and zeroings through this `Backing`: each
    /// bumps it before it touches the file and again once it returns, so
    /// what was read while the count stayed the same was read with no
    /// change of ours in between, nor one under way that could land later
    /// (`server::hash_ahead` relies on that, on a migration's source too).
    pub fn modifications(&self) -> u64 {
        self.modifications.load(Ordering::SeqCst)
    }

    fn modifying(&self) -> Modifying<'_> {
        self.modifications.fetch_add(1, Ordering::SeqCst);
        Modifying(&self.modifications)
    }

    /// The underlying file, for zero-copy paths.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    ///
    /// # Errors
    ///
    /// Any I/O error; a file shrunk underneath us gives `UnexpectedEof`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Reads `len` bytes at `offset` into `buf` (grown as needed), at most
    /// `piece` bytes at a time (whole blocks, at least one), and appends
    /// the hash of each `block`-byte block (the last may be short) to
    /// `out`: the flexnbd hash extension's hashes of the range, on either side.
    ///
    /// # Errors
    ///
    /// As [`Backing::read_at`].
    pub fn read_hashed(
        &self,
        offset: u64,
        len: u64,
        block: u64,
        piece: u64,
        buf: &mut Vec<u8>,
        out: &mut Vec<Hash>,
    ) -> io::Result<()> {
        let block = block.max(1);
        let piece = (piece / block).max(1) * block;
        let block_len = usize::try_from(block).unwrap_or(usize::MAX);
        // The hash of a block of zeroes, once a hole needs it.
        let mut zero: Option<Hash> = None;
        let mut done = 0u64;
        while done < len {
            let n = usize::try_from((len - done).min(piece)).unwrap_or(usize::MAX);
            if buf.len() < n {
                buf.resize(n, 0);
            }
            let at = offset + done;
            if self.holds_no_data(at, n as u64) {
                // A hole reads as zeroes: their hashes, without reading
                // (a sparse destination's unwritten half, a thin image).
                let whole = n / block_len;
                if whole > 0 {
                    let zero = *zero.get_or_insert_with(|| {
                        let zeroes = &mut buf[..block_len];
                        zeroes.fill(0);
                        hash_block(zeroes)
                    });
                    out.extend(std::iter::repeat_n(zero, whole));
                }
                let rest = n % block_len;
                if rest > 0 {
                    // The file's last, short block.
                    let zeroes = &mut buf[..rest];
                    zeroes.fill(0);
                    out.push(hash_block(zeroes));
                }
            } else {
                self.read_at(&mut buf[..n], at)?;
                hash_blocks(&buf[..n], block_len, out);
            }
            done += n as u64;
        }
        Ok(())
    }

    /// Whether `[offset, offset + len)` is inside the file and holds no
    /// data on disk (a file system that cannot tell says no).
    fn holds_no_data(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        match rustix::fs::seek(&self.file, SeekFrom::Data(offset)) {
            Ok(data) => data >= end,
            // No data from `offset` to the end: a hole only if the range
            // does not run past the end (that is a short read, an error).
            Err(rustix::io::Errno::NXIO) => self.file.metadata().is_ok_and(|m| m.len() >= end),
            Err(_) => false,
        }
    }

    /// Reads `buf` at `offset` only if it is all in the page cache.
    ///
    /// `Ok(false)` means it would have waited for the disk (or the kernel
    /// cannot tell): use [`Backing::read_at`] on a thread that may block.
    ///
    /// # Errors
    ///
    /// Any I/O error other than "would block".
    pub fn read_cached(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let want = buf.len();
        let flags = rustix::io::ReadWriteFlags::NOWAIT;
        match rustix::io::preadv2(&self.file, &mut [IoSliceMut::new(buf)], offset, flags) {
            Ok(n) => Ok(n == want),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::OPNOTSUPP) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the first and the last page of `[offset, offset + len)` are
    /// in the page cache: a cheap guess that a `sendfile` of the range will
    /// not wait for the disk (sequential readers have the pages between read
    /// ahead together). Reads one byte of each page with `RWF_NOWAIT`.
    pub fn looks_cached(&self, offset: u64, len: u64) -> bool {
        let last = offset.saturating_add(len.saturating_sub(1));
        let mut byte = [0u8; 1];
        [offset, last]
            .iter()
            .all(|&at| matches!(self.read_cached(&mut byte, at), Ok(true)))
    }

    /// Whether `[offset, offset + len)` is data on disk from end to end (no hole inside).
    ///
    /// A file system that cannot say reports no holes.
    pub fn is_all_data(&self, offset: u64, len: u64) -> bool {
        match rustix::fs::seek(&self.file, SeekFrom::Hole(offset)) {
            Ok(hole) => hole >= offset.saturating_add(len),
            Err(_) => false,
        }
    }

    /// Sends `len` bytes at `offset` from the file to `out` with `sendfile`,
    /// so the data never passes through user space.
    ///
    /// # Errors
    ///
    /// Any I/O error; a file shrunk underneath us gives `UnexpectedEof`.
    /// Some bytes may have been sent already.
    pub fn send_to(&self, out: impl AsFd, offset: u64, len: usize) -> io::Result<()> {
        let mut pos = offset;
        let mut left = len;
        while left > 0 {
            match rustix::fs::sendfile(&out, &self.file, Some(&mut pos), left) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => left -= n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Writes `buf` at `offset`, skipping all-zero 4 KiB pieces that land in holes.
    ///
    /// # Errors
    ///
    /// Any I/O error from `pwrite` or `lseek`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let _changing = self.modifying();
        let mut run_start = 0usize; // start in `buf` of bytes not yet written
        let mut pos = 0usize;
        while pos < buf.len() {
            let abs = offset + pos as u64;
            let to_boundary = usize::try_from(BLOCK - abs % BLOCK).unwrap_or(usize::MAX);
            let piece_end = usize::min(buf.len(), pos.saturating_add(to_boundary));
            let piece = &buf[pos..piece_end];
            if is_zero(piece) && self.is_hole(abs, piece.len() as u64)? {
                if run_start < pos {
                    self.file
                        .write_all_at(&buf[run_start..pos], offset + run_start as u64)?;
                }
                run_start = piece_end;
            }
            pos = piece_end;
        }
        if run_start < buf.len() {
            self.file
                .write_all_at(&buf[run_start..], offset + run_start as u64)?;
        }
        Ok(())
    }

    /// Writes `buf` at `offset` as it is, zeroes included.
    ///
    /// # Errors
    ///
    /// Any I/O error from `pwrite`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let _changing = self.modifying();
        self.file.write_all_at(buf, offset)
    }

    /// Whether `[offset, offset + len)` holds no data on disk.
    fn is_hole(&self, offset: u64, len: u64) -> io::Result<bool> {
        match rustix::fs::seek(&self.file, SeekFrom::Data(offset)) {
            Ok(data) => Ok(data >= offset + len),
            Err(rustix::io::Errno::NXIO) => Ok(true),
            // A file system without SEEK_DATA reports everything as data.
            Err(rustix::io::Errno::INVAL) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Makes every completed write durable (`fdatasync`).
    ///
    /// # Errors
    ///
    /// The sync failed: the data may not be on stable storage.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.file)?;
        Ok(())
    }

    /// Deallocates `[offset, offset + len)`; it reads back as zeroes.
    ///
    /// # Errors
    ///
    /// `Unsupported` where the file system cannot punch holes.
    pub fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let _changing = self.modifying();
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        rustix::fs::fallocate(&self.file, flags, offset, len).map_err(unsupported)
    }

    /// Zeroes `[offset, offset + len)`.
    ///
    /// With `may_punch` the range may become a hole; otherwise it stays
    /// allocated. With `fast` only a cheap method is tried and `Unsupported`
    /// is returned if there is none (NBD's FAST_ZERO).
    ///
    /// # Errors
    ///
    /// Any I/O error; `Unsupported` as above.
    pub fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        may_punch: bool,
        fast: bool,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let _changing = self.modifying();
        if may_punch {
            match self.punch_hole(offset, len) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => {}
                other => return other,
            }
        }
        let flags = FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(&self.file, flags, offset, len).map_err(unsupported) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported && !fast => {}
            other => return other,
        }
        static ZEROES: [u8; 64 << 10] = [0; 64 << 10];
        let mut done = 0u64;
        while done < len {
            let n =
                usize::try_from(u64::min(len - done, ZEROES.len() as u64)).unwrap_or(ZEROES.len());
            self.file.write_all_at(&ZEROES[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Hints that `[offset, offset + len)` will be read soon.
    ///
    /// # Errors
    ///
    /// The hint could not be given.
    pub fn cache(&self, offset: u64, len: u64) -> io::Result<()> {
        let len = std::num::NonZeroU64::new(len);
        rustix::fs::fadvise(&self.file, offset, len, rustix::fs::Advice::WillNeed)?;
        Ok(())
    }

    /// The allocation of `[offset, offset + len)` as runs of data and holes,
    /// from SEEK_DATA/SEEK_HOLE. Adjacent runs always differ.
    ///
    /// # Errors
    ///
    /// Any error from `lseek` other than "no more data".
    pub fn extents(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = offset.saturating_add(len);
        let mut out: Vec<Extent> = Vec::new();
        let mut push = |len: u64, hole: bool| {
            if len == 0 {
                return;
            }
            match out.last_mut() {
                Some(last) if last.hole == hole => last.len += len,
                _ => out.push(Extent { len, hole }),
            }
        };
        let mut pos = offset;
        while pos < end {
            let data = match rustix::fs::seek(&self.file, SeekFrom::Data(pos)) {
                Ok(d) => d,
                Err(rustix::io::Errno::NXIO) => end,
                Err(rustix::io::Errno::INVAL) => pos,
                Err(e) => return Err(e.into()),
            };
            if data > pos {
                let stop = data.min(end);
                push(stop - pos, true);
                pos = stop;
                continue;
            }
            let hole = match rustix::fs::seek(&self.file, SeekFrom::Hole(pos)) {
                Ok(h) => h,
                Err(rustix::io::Errno::NXIO | rustix::io::Errno::INVAL) => end,
                Err(e) => return Err(e.into()),
            };
            let stop = hole.clamp(pos + 1, end);
            push(stop - pos, false);
            pos = stop;
        }
        Ok(out)
    }
}

fn unsupported(e: rustix::io::Errno) -> io::Error {
    if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS {
        io::Error::new(io::ErrorKind::Unsupported, e)
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(len: u64) -> (tempfile::TempDir, Backing) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        File::create(&path).unwrap().set_len(len).unwrap();
        let b = Backing::open(&path, false).unwrap();
        (dir, b)
    }

    #[test]
    fn cached_reads_holes_and_sendfile() {
        let (_dir, b) = sparse(1 << 20);
        b.write_all_at(&[7u8; 8192], 65536).unwrap();
        // Just written, so in the page cache.
        let mut buf = [0u8; 8192];
        assert!(b.read_cached(&mut buf, 65536).unwrap());
        assert_eq!(buf, [7u8; 8192]);
        assert!(b.is_all_data(65536, 8192));
        assert!(!b.is_all_data(0, 65536 + 8192));
        let (mut rx, tx) = std::os::unix::net::UnixStream::pair().unwrap();
        b.send_to(&tx, 65536 + 4096, 4096).unwrap();
        drop(tx);
        let mut got = Vec::new();
        std::io::Read::read_to_end(&mut rx, &mut got).unwrap();
        assert_eq!(got, vec![7u8; 4096]);
        // Past the end of the file there is nothing to send.
        let (_rx, tx) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(b.send_to(&tx, (1 << 20) - 10, 20).is_err());
    }

    fn allocated(b: &Backing) -> u64 {
        use std::os::unix::fs::MetadataExt;
        b.file.metadata().unwrap().blocks() * 512
    }

    #[test]
    fn hashes_over_holes_are_those_of_the_zeroes_read() {
        // Holes around a little data, and a short last block.
        let len = (4u64 << 20) + 4096 + 512;
        let (_d, b) = sparse(len);
        b.write_at(&[9u8; 100], (1 << 20) + 5).unwrap();
        let mut all = vec![0u8; len as usize];
        b.read_at(&mut all, 0).unwrap();
        let mut want = Vec::new();
        hash_blocks(&all, 64 << 10, &mut want);
        for piece in [64 << 10, 1 << 20, 8 << 20] {
            let mut out = Vec::new();
            b.read_hashed(0, len, 64 << 10, piece, &mut Vec::new(), &mut out)
                .unwrap();
            assert_eq!(out, want, "pieces of {piece}");
        }
        // A range running past the end is an error, hole or not.
        let past = b.read_hashed(
            len - 512,
            4096,
            4096,
            4096,
            &mut Vec::new(),
            &mut Vec::new(),
        );
        assert_eq!(past.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn size_rounds_down_to_512() {
        let (_d, b) = sparse(1535);
        assert_eq!(b.size(), 1024);
    }

    #[test]
    fn zero_writes_into_holes_allocate_nothing() {
        let (_d, b) = sparse(1 << 20);
        b.write_at(&vec![0u8; 256 << 10], 4096).unwrap();
        assert_eq!(allocated(&b), 0);
        let mut data = vec![0u8; 3 * 4096];
        data[4096] = 7; // only the middle block has data
        b.write_at(&data, 0).unwrap();
        assert_eq!(allocated(&b), 4096);
        let mut back = vec![1u8; 3 * 4096];
        b.read_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn zero_writes_over_data_are_written() {
        let (_d, b) = sparse(64 << 10);
        b.write_at(&[0xffu8; 8192], 0).unwrap();
        b.write_at(&[0u8; 8192], 0).unwrap();
        let mut back = [1u8; 8192];
        b.read_at(&mut back, 0).unwrap();
        assert!(is_zero(&back));
    }

    #[test]
    fn unaligned_writes_land_exactly() {
        let (_d, b) = sparse(64 << 10);
        b.write_at(&[0xab; 5000], 4000).unwrap();
        let mut back = vec![0u8; 10000];
        b.read_at(&mut back, 0).unwrap();
        assert!(is_zero(&back[..4000]));
        assert!(back[4000..9000].iter().all(|&x| x == 0xab));
        assert!(is_zero(&back[9000..]));
    }

    #[test]
    fn extents_follow_holes_and_data() {
        let (_d, b) = sparse(1 << 20);
        b.write_at(&[1u8; 8192], 64 << 10).unwrap();
        let ext = b.extents(0, 1 << 20).unwrap();
        assert_eq!(
            ext,
            vec![
                Extent {
                    len: 64 << 10,
                    hole: true
                },
                Extent {
                    len: 8192,
                    hole: false
                },
                Extent {
                    len: (1 << 20) - (64 << 10) - 8192,
                    hole: true
                },
            ]
        );
        assert_eq!(
            b.extents(65536, 100).unwrap(),
            vec![Extent {
                len: 100,
                hole: false
            }]
        );
    }

    #[test]
    fn punch_and_zero() {
        let (_d, b) = sparse(1 << 20);
        b.write_at(&[9u8; 65536], 0).unwrap();
        b.punch_hole(0, 32768).unwrap();
        b.write_zeroes(32768, 4096, false, false).unwrap();
        let mut back = vec![1u8; 65536];
        b.read_at(&mut back, 0).unwrap();
        assert!(is_zero(&back[..36864]));
        assert!(back[36864..].iter().all(|&x| x == 9));
        assert!(b.extents(0, 32768).unwrap()[0].hole);
        b.sync().unwrap();
        b.cache(0, 4096).unwrap();
    }

    #[test]
    fn every_change_counts_when_it_begins_and_when_it_ends() {
        let (_dir, b) = sparse(1 << 20);
        assert_eq!(b.modifications(), 0);
        b.write_at(&[1; 4096], 0).unwrap();
        assert_eq!(b.modifications(), 2);
        b.write_all_at(&[2; 4096], 4096).unwrap();
        assert_eq!(b.modifications(), 4);
        {
            let _changing = b.modifying();
            // Under way: a reader that took the count before it began sees it moved.
            assert_eq!(b.modifications(), 5);
        }
        assert_eq!(b.modifications(), 6);
        // A failed change counts too (past the largest file offset: EFBIG).
        let too_far = u64::try_from(i64::MAX).unwrap() - 100;
        assert!(b.write_at(&[3; 4096], too_far).is_err());
        assert_eq!(b.modifications(), 8);
    }
}
