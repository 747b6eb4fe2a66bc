//! The error for a peer that broke the protocol.

use thiserror::Error;

/// The peer sent something the protocol does not allow; the connection should end.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtoError {
    /// Fewer bytes than a fixed-size structure needs.
    #[error("message truncated: needed {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the structure needs.
        needed: usize,
        /// Bytes available.
        got: usize,
    },
    /// A magic number that is not the one expected here.
    #[error("bad {what} magic {found:#x}")]
    BadMagic {
        /// Which magic was being checked.
        what: &'static str,
        /// The value found.
        found: u64,
    },
    /// A length field larger than this side accepts.
    #[error("{what} length {len} exceeds the limit of {max}")]
    TooLong {
        /// Which length was being checked.
        what: &'static str,
        /// The claimed length.
        len: u64,
        /// The largest accepted.
        max: u64,
    },
    /// A structure whose fields contradict each other or the protocol.
    #[error("invalid {0}")]
    Invalid(&'static str),
}
