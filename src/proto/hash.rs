//! The flexnbd hash extension, without I/O (docs/hash-extension.md).
//!
//! A flexnbd source asks a flexnbd `listen` for BLAKE3 hashes of its file,
//! one per fixed block, to verify a copy before the handover and to skip
//! what the destination already holds. Negotiated with a private option
//! before `NBD_OPT_GO`; a server that does not know it answers
//! `NBD_REP_ERR_UNSUP` and the source goes on without it.
//!
//! - option [`NBD_OPT_FLEXNBD_HASH`], data: u32 version the client speaks;
//!   reply `NBD_REP_ACK` with [`HashParams`] (16 bytes), or an error;
//! - command [`NBD_CMD_FLEXNBD_HASH`] (flags 0) for `len` bytes at `offset`:
//!   `offset` a multiple of the block size, `len` too unless the range
//!   ends at the end of the export, at most [`HashParams::max_blocks`]
//!   blocks; a simple reply, then (on success only) one [`HASH_LEN`]-byte
//!   hash per block, in order. The last block of the export may be short:
//!   its hash covers the bytes there are.

use byteorder::{BigEndian, ByteOrder};

use super::ProtoError;
use super::types::{Cmd, Opt};
use super::wire::Reader;

/// The option: ASCII "FXH" and 1, far from the spec's small numbers.
pub const NBD_OPT_FLEXNBD_HASH: Opt = Opt(0x4658_4801);
/// The command: ASCII "FH", far from the spec's small numbers.
pub const NBD_CMD_FLEXNBD_HASH: Cmd = Cmd(0x4648);
/// The version of the extension described here.
pub const VERSION: u32 = 1;
/// The algorithm: BLAKE3 with 32-byte output.
pub const ALGORITHM_BLAKE3: u32 = 1;
/// Bytes per hash.
pub const HASH_LEN: usize = 32;
/// The block size our server hashes by: small enough that scattered
/// changes cost little to resend, large enough that hashing runs at memory
/// speed and a 1 GiB file needs 512 KiB of hashes.
pub const BLOCK_SIZE: u32 = 64 << 10;
/// Most blocks per request our server answers: 256 MiB, 128 KiB of hashes.
pub const MAX_BLOCKS: u32 = 4096;
/// Flag in [`HashParams::flags`]: the export may hold data (it is not all
/// holes), so comparing before copying may save sending it.
pub const FLAG_HOLDS_DATA: u32 = 1;

/// A hash of one block.
pub type Hash = [u8; HASH_LEN];

/// What the server's ACK carries: how it hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// The version the server speaks (at most the client's).
    pub version: u32,
    /// The block size, a power of two from 4 KiB to 16 MiB.
    pub block_size: u32,
    /// Most blocks one request may cover, 1 to 65536.
    pub max_blocks: u32,
    /// [`FLAG_HOLDS_DATA`]; unknown bits are ignored.
    pub flags: u32,
}

impl HashParams {
    /// The size of the encoded parameters.
    pub const SIZE: usize = 16;

    /// What our server offers, with `flags`.
    pub fn ours(flags: u32) -> HashParams {
        HashParams {
            version: VERSION,
            block_size: BLOCK_SIZE,
            max_blocks: MAX_BLOCKS,
            flags,
        }
    }

    /// The ACK's payload.
    pub fn encode(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        BigEndian::write_u32(&mut b[0..4], self.version);
        BigEndian::write_u32(&mut b[4..8], self.block_size);
        BigEndian::write_u32(&mut b[8..12], self.max_blocks);
        BigEndian::write_u32(&mut b[12..16], self.flags);
        b
    }

    /// Reads and checks an ACK's payload.
    ///
    /// # Errors
    ///
    /// A wrong length, version 0 or above [`VERSION`], or limits out of range.
    pub fn decode(data: &[u8]) -> Result<HashParams, ProtoError> {
        let mut r = Reader::new(data);
        let p = HashParams {
            version: r.u32()?,
            block_size: r.u32()?,
            max_blocks: r.u32()?,
            flags: r.u32()?,
        };
        r.finish()?;
        if p.version == 0 || p.version > VERSION {
            return Err(ProtoError::Invalid("hash extension version"));
        }
        if !p.block_size.is_power_of_two() || !(4096..=16 << 20).contains(&p.block_size) {
            return Err(ProtoError::Invalid("hash block size"));
        }
        if !(1..=65536).contains(&p.max_blocks) {
            return Err(ProtoError::Invalid("hash blocks per request"));
        }
        Ok(p)
    }

    /// Whether the server said its export may hold data.
    pub fn holds_data(&self) -> bool {
        self.flags & FLAG_HOLDS_DATA != 0
    }

    /// The longest range one request may cover, in bytes.
    pub fn max_request_bytes(&self) -> u64 {
        u64::from(self.block_size) * u64::from(self.max_blocks)
    }

    /// Checks a request for `len` bytes at `offset` of an export of `size`
    /// bytes and returns how many hashes answer it.
    ///
    /// # Errors
    ///
    /// An empty range, one past the end, one not on block boundaries (the
    /// end may be the export's end), or more than [`HashParams::max_blocks`] blocks.
    pub fn check_request(&self, size: u64, offset: u64, len: u32) -> Result<usize, ProtoError> {
        let block = u64::from(self.block_size);
        let len = u64::from(len);
        let end = offset
            .checked_add(len)
            .ok_or(ProtoError::Invalid("hash range overflows"))?;
        if len == 0 {
            return Err(ProtoError::Invalid("empty hash range"));
        }
        if end > size {
            return Err(ProtoError::Invalid("hash range past the end"));
        }
        if offset % block != 0 || (len % block != 0 && end != size) {
            return Err(ProtoError::Invalid("hash range not on block boundaries"));
        }
        let blocks = len.div_ceil(block);
        if blocks > u64::from(self.max_blocks) {
            return Err(ProtoError::TooLong {
                what: "hash range",
                len: blocks,
                max: self.max_blocks.into(),
            });
        }
        // At most 65536.
        Ok(usize::try_from(blocks).unwrap_or(usize::MAX))
    }
}

/// The option request's data: the version the client speaks.
pub fn option_data() -> [u8; 4] {
    VERSION.to_be_bytes()
}

/// The version in an option request's data.
///
/// # Errors
///
/// Data that is not one u32, or version 0.
pub fn decode_option_data(data: &[u8]) -> Result<u32, ProtoError> {
    let mut r = Reader::new(data);
    let version = r.u32()?;
    r.finish()?;
    if version == 0 {
        return Err(ProtoError::Invalid("hash extension version 0"));
    }
    Ok(version)
}

/// The hash of one block's bytes.
pub fn hash_block(data: &[u8]) -> Hash {
    *blake3::hash(data).as_bytes()
}

/// Appends the hash of each `block`-byte piece of `data` (the last may be short) to `out`.
pub fn hash_blocks(data: &[u8], block: usize, out: &mut Vec<Hash>) {
    out.extend(data.chunks(block.max(1)).map(hash_block));
}

/// Splits a reply's payload into `count` hashes.
///
/// # Errors
///
/// A payload that is not `count` hashes long.
pub fn decode_hashes(payload: &[u8], count: usize) -> Result<Vec<Hash>, ProtoError> {
    if payload.len() != count.saturating_mul(HASH_LEN) {
        return Err(ProtoError::Truncated {
            needed: count.saturating_mul(HASH_LEN),
            got: payload.len(),
        });
    }
    Ok(payload
        .chunks_exact(HASH_LEN)
        .map(|c| {
            let mut h = [0u8; HASH_LEN];
            h.copy_from_slice(c);
            h
        })
        .collect())
}

/// The ranges of at most `max` bytes, on block boundaries, that cover
/// `[offset, offset + len)` of an export of `size` bytes once widened to
/// whole blocks (the last block may end at `size`).
pub fn request_ranges(
    params: &HashParams,
    size: u64,
    offset: u64,
    len: u64,
) -> impl Iterator<Item = (u64, u64)> {
    let block = u64::from(params.block_size);
    let start = offset / block * block;
    let end = offset.saturating_add(len).min(size).div_ceil(block) * block;
    let end = if len == 0 { start } else { end.min(size) };
    // A request's length is a u32.
    let step = params
        .max_request_bytes()
        .min(u64::from(u32::MAX) / block * block);
    let mut at = start;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let n = (end - at).min(step);
        let r = (at, n);
        at += n;
        Some(r)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: HashParams = HashParams {
        version: 1,
        block_size: 65536,
        max_blocks: 4,
        flags: 0,
    };

    #[test]
    fn params_round_trip_and_bad_ones_are_refused() {
        let p = HashParams::ours(FLAG_HOLDS_DATA);
        assert_eq!(HashParams::decode(&p.encode()), Ok(p));
        assert!(p.holds_data());
        assert!(HashParams::decode(&p.encode()[..15]).is_err());
        let mut long = p.encode().to_vec();
        long.push(0);
        assert!(HashParams::decode(&long).is_err());
        for bad in [
            HashParams { version: 0, ..p },
            HashParams { version: 2, ..p },
            HashParams {
                block_size: 4095,
                ..p
            },
            HashParams {
                block_size: 1 << 30,
                ..p
            },
            HashParams {
                block_size: 3 << 12,
                ..p
            },
            HashParams { max_blocks: 0, ..p },
            HashParams {
                max_blocks: 65537,
                ..p
            },
        ] {
            assert!(HashParams::decode(&bad.encode()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn option_data_is_a_version() {
        assert_eq!(decode_option_data(&option_data()), Ok(VERSION));
        assert_eq!(decode_option_data(&7u32.to_be_bytes()), Ok(7));
        assert!(decode_option_data(&[0, 0, 0, 0]).is_err());
        assert!(decode_option_data(&[0, 0, 1]).is_err());
        assert!(decode_option_data(&[0, 0, 0, 1, 0]).is_err());
    }

    #[test]
    fn requests_must_be_whole_blocks_in_range_and_bounded() {
        let size = 10 * 65536 + 512;
        assert_eq!(P.check_request(size, 0, 65536), Ok(1));
        assert_eq!(P.check_request(size, 65536, 4 * 65536), Ok(4));
        // The short last block.
        assert_eq!(P.check_request(size, 10 * 65536, 512), Ok(1));
        assert_eq!(P.check_request(size, 8 * 65536, 2 * 65536 + 512), Ok(3));
        assert!(P.check_request(size, 0, 0).is_err());
        assert!(P.check_request(size, 1, 65536).is_err());
        assert!(P.check_request(size, 0, 65535).is_err());
        assert!(P.check_request(size, 0, 5 * 65536).is_err());
        assert!(P.check_request(size, 10 * 65536, 1024).is_err());
        assert!(P.check_request(size, u64::MAX - 10, 65536).is_err());
    }

    #[test]
    fn hashes_split_and_decode() {
        let data = vec![7u8; 3 * 4096 + 5];
        let mut out = Vec::new();
        hash_blocks(&data, 4096, &mut out);
        assert_eq!(out.len(), 4);
        assert_eq!(out[0], out[1]);
        assert_ne!(out[2], out[3]);
        assert_eq!(out[3], hash_block(&[7u8; 5]));
        let payload: Vec<u8> = out.iter().flatten().copied().collect();
        assert_eq!(decode_hashes(&payload, 4).unwrap(), out);
        assert!(decode_hashes(&payload, 3).is_err());
        assert!(decode_hashes(&payload[1..], 4).is_err());
    }

    #[test]
    fn ranges_cover_whole_blocks_in_bounded_requests() {
        let size = 10 * 65536 + 512;
        let all: Vec<_> = request_ranges(&P, size, 0, size).collect();
        assert_eq!(
            all,
            vec![
                (0, 4 * 65536),
                (4 * 65536, 4 * 65536),
                (8 * 65536, 2 * 65536 + 512)
            ]
        );
        for (o, l) in &all {
            P.check_request(size, *o, u32::try_from(*l).unwrap())
                .unwrap();
        }
        let one: Vec<_> = request_ranges(&P, size, 65536 + 10, 20).collect();
        assert_eq!(one, vec![(65536, 65536)]);
        assert_eq!(request_ranges(&P, size, size, 0).count(), 0);
    }
}
