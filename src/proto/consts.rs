//! Magic numbers, fixed sizes and limits, spelled as in the NBD spec.

/// `NBDMAGIC`, the first 8 bytes of every handshake.
pub const NBD_INIT_PASSWD: u64 = 0x4e42_444d_4147_4943;
/// The old-style handshake's second word (`cliserv_magic`).
pub const NBD_OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
/// `IHAVEOPT`: the newstyle handshake's second word and every option's prefix.
pub const NBD_OPTS_MAGIC: u64 = 0x4948_4156_454F_5054;
/// The magic of every fixed-newstyle option reply.
pub const NBD_REP_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// The magic of a compact request header.
pub const NBD_REQUEST_MAGIC: u32 = 0x2560_9513;
/// The magic of a simple reply.
pub const NBD_SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// The magic of a structured reply chunk.
pub const NBD_STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// The size of the old-style greeting.
pub const OLDSTYLE_HELLO_SIZE: usize = 152;
/// The size of the newstyle greeting (password, magic, handshake flags).
pub const NEWSTYLE_HELLO_SIZE: usize = 18;
/// The zero padding at the end of the old-style greeting and the EXPORT_NAME reply.
pub const HELLO_PADDING: usize = 124;

/// The largest payload we accept or send in one request: 32 MiB, as flexnbd-c and qemu.
pub const MAX_REQUEST_LEN: u32 = 32 << 20;
/// The largest option payload we accept during negotiation.
pub const MAX_OPTION_LEN: u32 = 64 << 10;
/// The longest export or context name we accept (the spec's limit).
pub const MAX_NAME_LEN: u32 = 4096;

/// The minimum block size we advertise.
pub const MIN_BLOCK_SIZE: u32 = 1;
/// The preferred block size we advertise.
pub const PREFERRED_BLOCK_SIZE: u32 = 4096;

/// The meta context we support for BLOCK_STATUS.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// The context id we give `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// The handle flexnbd-c's mirror puts on every write.
pub const MIRROR_HANDLE: u64 = u64::from_be_bytes(*b".MIRROR.");

/// The IANA port for NBD.
pub const NBD_DEFAULT_PORT: u16 = 10809;
