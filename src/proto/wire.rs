//! Fixed-size wire headers and their big-endian encoding.
//!
//! Each structure has `SIZE`, `decode(&[u8; SIZE])` and `encode(&mut [u8; SIZE])`.
//! `decode` checks magics and lengths; callers read exactly `SIZE` bytes
//! with one `read_exact` and hand them over.

use byteorder::{BigEndian, ByteOrder};

use super::ProtoError;
use super::consts::*;
use super::types::*;

/// The old-style greeting: 152 bytes, sent by the server right after accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OldstyleHello {
    /// The export size in bytes.
    pub size: u64,
    /// The 32-bit flags word; the low 16 bits are the transmission flags.
    pub flags: u32,
}

impl OldstyleHello {
    /// The encoded size.
    pub const SIZE: usize = OLDSTYLE_HELLO_SIZE;

    /// Encodes the greeting; the 124 reserved bytes are zero.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u64(&mut buf[0..8], NBD_INIT_PASSWD);
        BigEndian::write_u64(&mut buf[8..16], NBD_OLDSTYLE_MAGIC);
        BigEndian::write_u64(&mut buf[16..24], self.size);
        BigEndian::write_u32(&mut buf[24..28], self.flags);
        buf[28..].fill(0);
    }

    /// Decodes a greeting, checking the password and magic. Reserved bytes are ignored.
    pub fn decode(buf: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        check_passwd(buf)?;
        let magic = BigEndian::read_u64(&buf[8..16]);
        if magic != NBD_OLDSTYLE_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "old-style hello",
                found: magic,
            });
        }
        Ok(OldstyleHello {
            size: BigEndian::read_u64(&buf[16..24]),
            flags: BigEndian::read_u32(&buf[24..28]),
        })
    }

    /// The transmission flags (the low 16 bits of the flags word).
    pub fn transmission_flags(&self) -> TransmissionFlags {
        TransmissionFlags((self.flags & 0xffff) as u16)
    }
}

fn check_passwd(buf: &[u8]) -> Result<(), ProtoError> {
    let passwd = BigEndian::read_u64(&buf[0..8]);
    if passwd != NBD_INIT_PASSWD {
        return Err(ProtoError::BadMagic {
            what: "NBDMAGIC password",
            found: passwd,
        });
    }
    Ok(())
}

/// Which handshake a server's first 16 bytes announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Greeting {
    /// `NBDMAGIC` + `cliserv_magic`: 136 more bytes of old-style hello follow.
    Oldstyle,
    /// `NBDMAGIC` + `IHAVEOPT`: two bytes of handshake flags follow.
    Newstyle,
}

impl Greeting {
    /// Classifies the first 16 bytes a server sends.
    pub fn decode(buf: &[u8; 16]) -> Result<Self, ProtoError> {
        check_passwd(buf)?;
        match BigEndian::read_u64(&buf[8..16]) {
            NBD_OLDSTYLE_MAGIC => Ok(Greeting::Oldstyle),
            NBD_OPTS_MAGIC => Ok(Greeting::Newstyle),
            found => Err(ProtoError::BadMagic {
                what: "hello",
                found,
            }),
        }
    }
}

/// The newstyle greeting: password, `IHAVEOPT`, handshake flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewstyleHello {
    /// The server's handshake flags.
    pub flags: HandshakeFlags,
}

impl NewstyleHello {
    /// The encoded size.
    pub const SIZE: usize = NEWSTYLE_HELLO_SIZE;

    /// Encodes the greeting.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u64(&mut buf[0..8], NBD_INIT_PASSWD);
        BigEndian::write_u64(&mut buf[8..16], NBD_OPTS_MAGIC);
        BigEndian::write_u16(&mut buf[16..18], self.flags.0);
    }

    /// Decodes the greeting, checking the password and magic.
    pub fn decode(buf: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let mut head = [0u8; 16];
        head.copy_from_slice(&buf[..16]);
        match Greeting::decode(&head)? {
            Greeting::Newstyle => Ok(NewstyleHello {
                flags: HandshakeFlags(BigEndian::read_u16(&buf[16..18])),
            }),
            Greeting::Oldstyle => Err(ProtoError::Invalid(
                "old-style hello where newstyle expected",
            )),
        }
    }
}

/// A client's option header: `IHAVEOPT`, option, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionHeader {
    /// The option requested.
    pub opt: Opt,
    /// The length of the payload that follows.
    pub len: u32,
}

impl OptionHeader {
    /// The encoded size.
    pub const SIZE: usize = 16;

    /// Encodes the header.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u64(&mut buf[0..8], NBD_OPTS_MAGIC);
        BigEndian::write_u32(&mut buf[8..12], self.opt.0);
        BigEndian::write_u32(&mut buf[12..16], self.len);
    }

    /// Decodes the header. The payload length is checked against [`MAX_OPTION_LEN`]
    /// except for `EXPORT_NAME`, whose name is checked against [`MAX_NAME_LEN`].
    pub fn decode(buf: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let magic = BigEndian::read_u64(&buf[0..8]);
        if magic != NBD_OPTS_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "option",
                found: magic,
            });
        }
        let opt = Opt(BigEndian::read_u32(&buf[8..12]));
        let len = BigEndian::read_u32(&buf[12..16]);
        let max = if opt == Opt::EXPORT_NAME {
            MAX_NAME_LEN
        } else {
            MAX_OPTION_LEN
        };
        if len > max {
            return Err(ProtoError::TooLong {
                what: "option",
                len: len.into(),
                max: max.into(),
            });
        }
        Ok(OptionHeader { opt, len })
    }
}

/// A server's option reply header, followed by `len` bytes of payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    /// The option being answered.
    pub opt: Opt,
    /// The reply type.
    pub rep: Rep,
    /// The length of the payload that follows.
    pub len: u32,
}

impl OptionReplyHeader {
    /// The encoded size.
    pub const SIZE: usize = 20;

    /// Encodes the header.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u64(&mut buf[0..8], NBD_REP_MAGIC);
        BigEndian::write_u32(&mut buf[8..12], self.opt.0);
        BigEndian::write_u32(&mut buf[12..16], self.rep.0);
        BigEndian::write_u32(&mut buf[16..20], self.len);
    }

    /// Decodes the header, checking the magic and bounding the payload length.
    pub fn decode(buf: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let magic = BigEndian::read_u64(&buf[0..8]);
        if magic != NBD_REP_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "option reply",
                found: magic,
            });
        }
        let len = BigEndian::read_u32(&buf[16..20]);
        if len > MAX_OPTION_LEN {
            return Err(ProtoError::TooLong {
                what: "option reply",
                len: len.into(),
                max: MAX_OPTION_LEN.into(),
            });
        }
        Ok(OptionReplyHeader {
            opt: Opt(BigEndian::read_u32(&buf[8..12])),
            rep: Rep(BigEndian::read_u32(&buf[12..16])),
            len,
        })
    }
}

/// The reply to `NBD_OPT_EXPORT_NAME` (without its optional 124 zero bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportNameReply {
    /// The export size.
    pub size: u64,
    /// The transmission flags.
    pub flags: TransmissionFlags,
}

impl ExportNameReply {
    /// The encoded size without padding.
    pub const SIZE: usize = 10;

    /// Encodes the reply.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u64(&mut buf[0..8], self.size);
        BigEndian::write_u16(&mut buf[8..10], self.flags.0);
    }

    /// Decodes the reply.
    pub fn decode(buf: &[u8; Self::SIZE]) -> Self {
        ExportNameReply {
            size: BigEndian::read_u64(&buf[0..8]),
            flags: TransmissionFlags(BigEndian::read_u16(&buf[8..10])),
        }
    }
}

/// A compact request header (28 bytes), followed by `len` bytes for WRITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: CmdFlags,
    /// The command.
    pub cmd: Cmd,
    /// The opaque cookie echoed in the reply.
    pub handle: u64,
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub len: u32,
}

impl Request {
    /// The encoded size.
    pub const SIZE: usize = 28;

    /// Encodes the header.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u32(&mut buf[0..4], NBD_REQUEST_MAGIC);
        BigEndian::write_u16(&mut buf[4..6], self.flags.0);
        BigEndian::write_u16(&mut buf[6..8], self.cmd.0);
        BigEndian::write_u64(&mut buf[8..16], self.handle);
        BigEndian::write_u64(&mut buf[16..24], self.offset);
        BigEndian::write_u32(&mut buf[24..28], self.len);
    }

    /// Decodes the header, checking the magic. Lengths are checked by the
    /// server against its export and limits, since the right answer depends on the command.
    pub fn decode(buf: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let magic = BigEndian::read_u32(&buf[0..4]);
        if magic != NBD_REQUEST_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "request",
                found: magic.into(),
            });
        }
        Ok(Self::decode_fields(buf))
    }

    /// Decodes every field but the magic, which is not checked. Used to echo
    /// the handle of a request whose magic was wrong.
    pub fn decode_fields(buf: &[u8; Self::SIZE]) -> Self {
        Request {
            flags: CmdFlags(BigEndian::read_u16(&buf[4..6])),
            cmd: Cmd(BigEndian::read_u16(&buf[6..8])),
            handle: BigEndian::read_u64(&buf[8..16]),
            offset: BigEndian::read_u64(&buf[16..24]),
            len: BigEndian::read_u32(&buf[24..28]),
        }
    }

    /// The end of the range, or `None` if `offset + len` overflows.
    pub fn end(&self) -> Option<u64> {
        self.offset.checked_add(u64::from(self.len))
    }
}

/// A simple reply (16 bytes), followed by data for a successful READ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    /// Zero for success.
    pub error: Errno,
    /// The request's cookie.
    pub handle: u64,
}

impl SimpleReply {
    /// The encoded size.
    pub const SIZE: usize = 16;

    /// Encodes the reply.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u32(&mut buf[0..4], NBD_SIMPLE_REPLY_MAGIC);
        BigEndian::write_u32(&mut buf[4..8], self.error.0);
        BigEndian::write_u64(&mut buf[8..16], self.handle);
    }

    /// Decodes the reply, checking the magic.
    pub fn decode(buf: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let magic = BigEndian::read_u32(&buf[0..4]);
        if magic != NBD_SIMPLE_REPLY_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "reply",
                found: magic.into(),
            });
        }
        Ok(SimpleReply {
            error: Errno(BigEndian::read_u32(&buf[4..8])),
            handle: BigEndian::read_u64(&buf[8..16]),
        })
    }
}

/// A structured reply chunk header (20 bytes), followed by `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// Chunk flags (`DONE`).
    pub flags: ChunkFlags,
    /// The chunk type.
    pub ty: ChunkType,
    /// The request's cookie.
    pub handle: u64,
    /// The payload length.
    pub len: u32,
}

impl ChunkHeader {
    /// The encoded size.
    pub const SIZE: usize = 20;

    /// Encodes the header.
    pub fn encode(&self, buf: &mut [u8; Self::SIZE]) {
        BigEndian::write_u32(&mut buf[0..4], NBD_STRUCTURED_REPLY_MAGIC);
        BigEndian::write_u16(&mut buf[4..6], self.flags.0);
        BigEndian::write_u16(&mut buf[6..8], self.ty.0);
        BigEndian::write_u64(&mut buf[8..16], self.handle);
        BigEndian::write_u32(&mut buf[16..20], self.len);
    }

    /// Decodes the header, checking the magic.
    pub fn decode(buf: &[u8; Self::SIZE]) -> Result<Self, ProtoError> {
        let magic = BigEndian::read_u32(&buf[0..4]);
        if magic != NBD_STRUCTURED_REPLY_MAGIC {
            return Err(ProtoError::BadMagic {
                what: "structured reply",
                found: magic.into(),
            });
        }
        Ok(ChunkHeader {
            flags: ChunkFlags(BigEndian::read_u16(&buf[4..6])),
            ty: ChunkType(BigEndian::read_u16(&buf[6..8])),
            handle: BigEndian::read_u64(&buf[8..16]),
            len: BigEndian::read_u32(&buf[16..20]),
        })
    }
}

/// A bounded reader over an option payload: every read checks what is left.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Truncated {
                needed: n,
                got: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Takes a big-endian u16.
    pub fn u16(&mut self) -> Result<u16, ProtoError> {
        Ok(BigEndian::read_u16(self.take(2)?))
    }

    /// Takes a big-endian u32.
    pub fn u32(&mut self) -> Result<u32, ProtoError> {
        Ok(BigEndian::read_u32(self.take(4)?))
    }

    /// Takes a u32 length followed by that many bytes of UTF-8 text.
    pub fn string(&mut self) -> Result<&'a str, ProtoError> {
        let len = self.u32()?;
        if len > MAX_NAME_LEN {
            return Err(ProtoError::TooLong {
                what: "name",
                len: len.into(),
                max: MAX_NAME_LEN.into(),
            });
        }
        let bytes = self.take(len as usize)?;
        std::str::from_utf8(bytes).map_err(|_| ProtoError::Invalid("name is not UTF-8"))
    }

    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), ProtoError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Invalid("trailing data in option"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldstyle_hello_is_flexnbd_c_bytes() {
        let mut buf = [0xaau8; OldstyleHello::SIZE];
        OldstyleHello {
            size: 1024,
            flags: 13,
        }
        .encode(&mut buf);
        assert_eq!(&buf[0..8], b"NBDMAGIC");
        assert_eq!(&buf[8..16], &[0, 0, 0x42, 0x02, 0x81, 0x86, 0x12, 0x53]);
        assert_eq!(&buf[16..24], &1024u64.to_be_bytes());
        assert_eq!(&buf[24..28], &13u32.to_be_bytes());
        assert!(buf[28..].iter().all(|&b| b == 0));
        let back = OldstyleHello::decode(&buf).unwrap();
        assert_eq!(back.size, 1024);
        assert_eq!(back.transmission_flags(), TransmissionFlags::FLEXNBD_C);
    }

    #[test]
    fn oldstyle_hello_rejects_bad_password_and_magic() {
        let mut buf = [0u8; OldstyleHello::SIZE];
        OldstyleHello { size: 1, flags: 0 }.encode(&mut buf);
        let mut bad = buf;
        bad[0] = b'X';
        assert!(matches!(
            OldstyleHello::decode(&bad),
            Err(ProtoError::BadMagic { .. })
        ));
        let mut bad = buf;
        bad[15] ^= 1;
        assert!(matches!(
            OldstyleHello::decode(&bad),
            Err(ProtoError::BadMagic { .. })
        ));
    }

    #[test]
    fn greeting_tells_styles_apart() {
        let mut old = [0u8; OldstyleHello::SIZE];
        OldstyleHello { size: 1, flags: 0 }.encode(&mut old);
        let mut head = [0u8; 16];
        head.copy_from_slice(&old[..16]);
        assert_eq!(Greeting::decode(&head).unwrap(), Greeting::Oldstyle);
        let mut new = [0u8; NewstyleHello::SIZE];
        NewstyleHello {
            flags: HandshakeFlags::FIXED_NEWSTYLE,
        }
        .encode(&mut new);
        head.copy_from_slice(&new[..16]);
        assert_eq!(Greeting::decode(&head).unwrap(), Greeting::Newstyle);
        assert_eq!(
            NewstyleHello::decode(&new).unwrap().flags,
            HandshakeFlags::FIXED_NEWSTYLE
        );
        head[9] = 0;
        assert!(Greeting::decode(&head).is_err());
    }

    #[test]
    fn request_round_trip_and_bad_magic() {
        let req = Request {
            flags: CmdFlags::FUA,
            cmd: Cmd::WRITE,
            handle: 0x0102_0304_0506_0708,
            offset: 1 << 40,
            len: 4096,
        };
        let mut buf = [0u8; Request::SIZE];
        req.encode(&mut buf);
        assert_eq!(&buf[0..4], &[0x25, 0x60, 0x95, 0x13]);
        assert_eq!(Request::decode(&buf).unwrap(), req);
        buf[0] = 0;
        assert!(matches!(
            Request::decode(&buf),
            Err(ProtoError::BadMagic { .. })
        ));
        assert_eq!(Request::decode_fields(&buf).handle, req.handle);
        let wrap = Request {
            offset: u64::MAX,
            len: 1,
            ..req
        };
        assert_eq!(wrap.end(), None);
    }

    #[test]
    fn replies_round_trip() {
        let mut buf = [0u8; SimpleReply::SIZE];
        SimpleReply {
            error: Errno::ENOSPC,
            handle: 7,
        }
        .encode(&mut buf);
        assert_eq!(&buf[0..8], &[0x67, 0x44, 0x66, 0x98, 0, 0, 0, 28]);
        assert_eq!(SimpleReply::decode(&buf).unwrap().error, Errno::ENOSPC);
        buf[3] = 0;
        assert!(SimpleReply::decode(&buf).is_err());

        let chunk = ChunkHeader {
            flags: ChunkFlags::DONE,
            ty: ChunkType::OFFSET_HOLE,
            handle: 9,
            len: 12,
        };
        let mut cbuf = [0u8; ChunkHeader::SIZE];
        chunk.encode(&mut cbuf);
        assert_eq!(ChunkHeader::decode(&cbuf).unwrap(), chunk);
    }

    #[test]
    fn option_headers_bound_lengths() {
        let mut buf = [0u8; OptionHeader::SIZE];
        OptionHeader {
            opt: Opt::GO,
            len: MAX_OPTION_LEN + 1,
        }
        .encode(&mut buf);
        assert!(matches!(
            OptionHeader::decode(&buf),
            Err(ProtoError::TooLong { .. })
        ));
        OptionHeader {
            opt: Opt(1234),
            len: 3,
        }
        .encode(&mut buf);
        assert_eq!(OptionHeader::decode(&buf).unwrap().opt, Opt(1234));
        buf[0] = 0;
        assert!(OptionHeader::decode(&buf).is_err());

        let mut rbuf = [0u8; OptionReplyHeader::SIZE];
        let rep = OptionReplyHeader {
            opt: Opt::LIST,
            rep: Rep::SERVER,
            len: 4,
        };
        rep.encode(&mut rbuf);
        assert_eq!(OptionReplyHeader::decode(&rbuf).unwrap(), rep);
    }

    #[test]
    fn reader_checks_every_length() {
        let mut r = Reader::new(&[0, 0, 0, 5, b'a']);
        assert!(matches!(r.string(), Err(ProtoError::Truncated { .. })));
        let mut r = Reader::new(&[0, 0, 0, 1, b'a', 0, 2]);
        assert_eq!(r.string().unwrap(), "a");
        assert_eq!(r.u16().unwrap(), 2);
        r.finish().unwrap();
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(r.string(), Err(ProtoError::TooLong { .. })));
        let r = Reader::new(&[1]);
        assert!(r.finish().is_err());
    }
}
