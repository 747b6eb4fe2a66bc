//! The layout of the server's transmission replies, as pure functions:
//! simple replies, structured error chunks, a READ's data and hole chunks,
//! the header that goes before data sent straight from the file, and
//! BLOCK_STATUS. The server decides which to send and writes them; nothing
//! here touches a socket.

use std::ops::Range;

use super::consts::BASE_ALLOCATION_ID;
use super::types::{ChunkFlags, ChunkType, CmdFlags, Errno, ExtentFlags};
use super::wire::{ChunkHeader, Request, SimpleReply};

/// A READ reply is split into hole and data chunks at this granularity.
pub const ZERO_BLOCK: usize = 4096;
/// The longest reply header: a hole chunk (chunk header, offset, length).
pub const HEAD_MAX: usize = ChunkHeader::SIZE + 12;

/// A reply header laid out on the stack (no allocation per reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    bytes: [u8; HEAD_MAX],
    len: usize,
}

impl Head {
    fn new(parts: &[&[u8]]) -> Head {
        let mut head = Head {
            bytes: [0; HEAD_MAX],
            len: 0,
        };
        for part in parts {
            head.bytes[head.len..head.len + part.len()].copy_from_slice(part);
            head.len += part.len();
        }
        head
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn chunk(flags: ChunkFlags, ty: ChunkType, handle: u64, len: u32) -> [u8; ChunkHeader::SIZE] {
    let mut buf = [0u8; ChunkHeader::SIZE];
    ChunkHeader {
        flags,
        ty,
        handle,
        len,
    }
    .encode(&mut buf);
    buf
}

/// A simple reply: `error` (OK for success) for `handle`, no payload.
pub fn simple(handle: u64, error: Errno) -> Head {
    let mut buf = [0u8; SimpleReply::SIZE];
    SimpleReply { error, handle }.encode(&mut buf);
    Head::new(&[&buf])
}

/// The reply to a failed request: a structured ERROR chunk (with an empty
/// message) for READ and BLOCK_STATUS once structured replies are on, a
/// simple reply otherwise.
pub fn error(req: &Request, error: Errno, structured: bool) -> Head {
    use super::types::Cmd;
    if structured && matches!(req.cmd, Cmd::READ | Cmd::BLOCK_STATUS) {
        let head = chunk(ChunkFlags::DONE, ChunkType::ERROR, req.handle, 6);
        Head::new(&[&head, &error.0.to_be_bytes(), &[0, 0]])
    } else {
        simple(req.handle, error)
    }
}

/// The header of a successful READ whose data follows whole, as it is in
/// the file (sent with `sendfile`): a simple reply, or one DONE data chunk.
pub fn read_data_head(req: &Request, structured: bool) -> Head {
    if structured {
        let head = chunk(
            ChunkFlags::DONE,
            ChunkType::OFFSET_DATA,
            req.handle,
            req.len.saturating_add(8),
        );
        Head::new(&[&head, &req.offset.to_be_bytes()])
    } else {
        simple(req.handle, Errno::OK)
    }
}

/// Lays out a successful READ's reply, calling `piece(head, data)` for each
/// piece in order: a simple reply and all of the data, or structured chunks
/// where runs of zero blocks are holes (all of it one chunk with DF), and an
/// empty read is one NONE chunk carrying DONE.
pub fn read(
    req: &Request,
    structured: bool,
    data: &[u8],
    mut piece: impl FnMut(Head, Option<Range<usize>>),
) {
    if !structured {
        piece(simple(req.handle, Errno::OK), Some(0..data.len()));
        return;
    }
    let runs = if req.flags.contains(CmdFlags::DF) {
        vec![(0, data.len(), is_zero(data))]
    } else {
        zero_runs(data)
    };
    if runs.is_empty() {
        let head = chunk(ChunkFlags::DONE, ChunkType::NONE, req.handle, 0);
        piece(Head::new(&[&head]), None);
        return;
    }
    for (i, &(start, len, hole)) in runs.iter().enumerate() {
        let flags = if i + 1 == runs.len() {
            ChunkFlags::DONE
        } else {
            ChunkFlags(0)
        };
        // Runs lie inside one request, so their lengths fit the wire's u32.
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        let offset = (req.offset + start as u64).to_be_bytes();
        if hole {
            let head = chunk(flags, ChunkType::OFFSET_HOLE, req.handle, 12);
            piece(Head::new(&[&head, &offset, &len32.to_be_bytes()]), None);
        } else {
            let head = chunk(flags, ChunkType::OFFSET_DATA, req.handle, 8 + len32);
            piece(Head::new(&[&head, &offset]), Some(start..start + len));
        }
    }
}

/// Appends a successful READ's whole reply (headers and data) to `out`.
pub fn encode_read(req: &Request, structured: bool, data: &[u8], out: &mut Vec<u8>) {
    read(req, structured, data, |head, range| {
        out.extend_from_slice(head.as_bytes());
        if let Some(range) = range {
            out.extend_from_slice(&data[range]);
        }
    });
}

/// The whole reply to a BLOCK_STATUS for `base:allocation`: one DONE chunk
/// with an extent `(length, is_hole)` per run (holes read as zeroes).
pub fn block_status(handle: u64, extents: impl IntoIterator<Item = (u32, bool)>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&BASE_ALLOCATION_ID.to_be_bytes());
    for (len, hole) in extents {
        let flags = if hole {
            ExtentFlags::HOLE.0 | ExtentFlags::ZERO.0
        } else {
            0
        };
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(&flags.to_be_bytes());
    }
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = chunk(ChunkFlags::DONE, ChunkType::BLOCK_STATUS, handle, len).to_vec();
    out.extend_from_slice(&body);
    out
}

/// Splits a READ's data into runs `(start, len, is_hole)`: aligned 4 KiB
/// blocks (relative to the start) that are all zero become holes.
pub fn zero_runs(data: &[u8]) -> Vec<(usize, usize, bool)> {
    let mut runs: Vec<(usize, usize, bool)> = Vec::new();
    for (i, block) in data.chunks(ZERO_BLOCK).enumerate() {
        let hole = is_zero(block);
        match runs.last_mut() {
            Some(last) if last.2 == hole => last.1 += block.len(),
            _ => runs.push((i * ZERO_BLOCK, block.len(), hole)),
        }
    }
    runs
}

/// Whether every byte of `buf` is zero (vectorisable: no early exit inside a chunk).
pub fn is_zero(buf: &[u8]) -> bool {
    buf.chunks(256)
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::types::Cmd;

    fn req(cmd: Cmd, flags: CmdFlags, offset: u64, len: u32) -> Request {
        Request {
            flags,
            cmd,
            handle: 0x0102_0304_0506_0708,
            offset,
            len,
        }
    }

    const SIMPLE: [u8; 4] = [0x67, 0x44, 0x66, 0x98];
    const STRUCTURED: [u8; 4] = [0x66, 0x8e, 0x33, 0xef];
    const HANDLE: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn bytes(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn simple_reply_golden_bytes() {
        let got = simple(0x0102_0304_0506_0708, Errno::EIO);
        assert_eq!(got.as_bytes(), bytes(&[&SIMPLE, &[0, 0, 0, 5], &HANDLE]));
    }

    #[test]
    fn error_reply_is_a_chunk_only_for_structured_reads_and_block_status() {
        let read = req(Cmd::READ, CmdFlags(0), 0, 512);
        assert_eq!(
            error(&read, Errno::EINVAL, true).as_bytes(),
            bytes(&[
                &STRUCTURED,
                &[0, 1],       // DONE
                &[0x80, 0x01], // ERROR (2^15 + 1)
                &HANDLE,
                &[0, 0, 0, 6],
                &[0, 0, 0, 22],
                &[0, 0],
            ])
        );
        assert_eq!(
            error(&read, Errno::EINVAL, false).as_bytes(),
            simple(read.handle, Errno::EINVAL).as_bytes()
        );
        let write = req(Cmd::WRITE, CmdFlags(0), 0, 512);
        assert_eq!(
            error(&write, Errno::ENOSPC, true).as_bytes(),
            simple(write.handle, Errno::ENOSPC).as_bytes()
        );
    }

    #[test]
    fn read_data_head_golden_bytes() {
        let r = req(Cmd::READ, CmdFlags(0), 0x1000, 0x2_0000);
        assert_eq!(
            read_data_head(&r, true).as_bytes(),
            bytes(&[
                &STRUCTURED,
                &[0, 1], // DONE
                &[0, 1], // OFFSET_DATA
                &HANDLE,
                &[0, 2, 0, 8],
                &[0, 0, 0, 0, 0, 0, 0x10, 0],
            ])
        );
        assert_eq!(
            read_data_head(&r, false).as_bytes(),
            bytes(&[&SIMPLE, &[0; 4], &HANDLE])
        );
    }

    #[test]
    fn structured_read_splits_holes_and_data() {
        let mut data = vec![0u8; 3 * ZERO_BLOCK];
        data[ZERO_BLOCK] = 0xAA;
        let r = req(
            Cmd::READ,
            CmdFlags(0),
            0x10,
            u32::try_from(data.len()).unwrap(),
        );
        let mut out = Vec::new();
        encode_read(&r, true, &data, &mut out);
        let mut want = Vec::new();
        // hole 0..4096
        want.extend(bytes(&[
            &STRUCTURED,
            &[0, 0],
            &[0, 2],
            &HANDLE,
            &[0, 0, 0, 12],
        ]));
        want.extend(0x10u64.to_be_bytes());
        want.extend(4096u32.to_be_bytes());
        // data 4096..8192
        want.extend(bytes(&[&STRUCTURED, &[0, 0], &[0, 1], &HANDLE]));
        want.extend((8 + 4096u32).to_be_bytes());
        want.extend((0x10u64 + 4096).to_be_bytes());
        want.extend(&data[4096..8192]);
        // hole 8192..12288, DONE
        want.extend(bytes(&[
            &STRUCTURED,
            &[0, 1],
            &[0, 2],
            &HANDLE,
            &[0, 0, 0, 12],
        ]));
        want.extend((0x10u64 + 8192).to_be_bytes());
        want.extend(4096u32.to_be_bytes());
        assert_eq!(out, want);
    }

    #[test]
    fn df_empty_and_simple_reads() {
        let data = vec![0u8; 2 * ZERO_BLOCK];
        let df = req(Cmd::READ, CmdFlags::DF, 0, 8192);
        let mut out = Vec::new();
        encode_read(&df, true, &data, &mut out);
        // One chunk, a hole (all zero), DONE.
        assert_eq!(out.len(), HEAD_MAX);
        assert_eq!(&out[4..8], &[0, 1, 0, 2]);

        let empty = req(Cmd::READ, CmdFlags(0), 0, 0);
        out.clear();
        encode_read(&empty, true, &[], &mut out);
        assert_eq!(
            out,
            bytes(&[&STRUCTURED, &[0, 1], &[0, 0], &HANDLE, &[0; 4]])
        );

        out.clear();
        encode_read(&empty, false, b"xyz", &mut out);
        assert_eq!(out, bytes(&[&SIMPLE, &[0; 4], &HANDLE, b"xyz"]));
    }

    #[test]
    fn block_status_golden_bytes() {
        let got = block_status(0x0102_0304_0506_0708, [(4096, true), (512, false)]);
        assert_eq!(
            got,
            bytes(&[
                &STRUCTURED,
                &[0, 1], // DONE
                &[0, 5], // BLOCK_STATUS
                &HANDLE,
                &[0, 0, 0, 20],
                &[0, 0, 0, 1], // base:allocation
                &[0, 0, 0x10, 0],
                &[0, 0, 0, 3],
                &[0, 0, 2, 0],
                &[0, 0, 0, 0],
            ])
        );
    }

    #[test]
    fn zero_runs_split_on_block_boundaries() {
        let mut data = vec![0u8; 5 * 4096 + 100];
        data[4096 * 2 + 5] = 1;
        data[5 * 4096 + 99] = 1;
        assert_eq!(
            zero_runs(&data),
            vec![
                (0, 8192, true),
                (8192, 4096, false),
                (12288, 8192, true),
                (20480, 100, false)
            ]
        );
        assert!(zero_runs(&[]).is_empty());
    }

    #[test]
    fn is_zero_checks_every_byte() {
        let mut buf = vec![0u8; 1000];
        assert!(is_zero(&buf));
        buf[999] = 1;
        assert!(!is_zero(&buf));
        assert!(is_zero(&[]));
    }
}
