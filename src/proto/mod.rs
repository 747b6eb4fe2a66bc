//! The NBD protocol without I/O: constants, wire structures, the
//! server-side option negotiation and the layout of transmission replies.
//!
//! Follows the upstream NBD protocol document (`doc/proto.md`, 2026-05
//! snapshot) with compact (not extended) headers. Supported:
//!
//! - handshakes: old-style (byte for byte what the C flexnbd sends) and fixed
//!   newstyle with `NBD_OPT_EXPORT_NAME`, `GO`, `INFO`, `LIST`, `ABORT`,
//!   `STRUCTURED_REPLY`, `LIST_META_CONTEXT` and `SET_META_CONTEXT` (only
//!   `base:allocation`); every other option gets `NBD_REP_ERR_UNSUP`;
//! - commands: `READ`, `WRITE`, `DISC`, `FLUSH`, `TRIM`, `CACHE`,
//!   `WRITE_ZEROES` and `BLOCK_STATUS`, with the `FUA`, `NO_HOLE`, `DF`,
//!   `REQ_ONE` and `FAST_ZERO` flags;
//! - the flexnbd hash extension between our migration source and `listen`
//!   ([`hash`], docs/hash-extension.md).
//!
//! Nothing here reads a socket, a file or a clock: every function turns
//! bytes into values or values into bytes, and rejects short or malformed
//! input with a [`ProtoError`]. Lengths claimed by a peer are checked here,
//! before anyone allocates for them.

pub mod consts;
pub mod handshake;
pub mod hash;
pub mod reply;
pub mod types;
pub mod wire;

mod error;

pub use error::ProtoError;
