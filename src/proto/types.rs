//! Open-ended wire values (options, commands, reply types, errors) and flag sets.
//!
//! Values a peer controls are newtypes over the integer with named
//! constants, so unknown values survive decoding and can be answered (with
//! `NBD_REP_ERR_UNSUP` or `EINVAL`) instead of failing to parse.

use std::fmt;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident($int:ty) { $($(#[$cmeta:meta])* $cname:ident = $val:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $int);

        impl $name {
            $($(#[$cmeta])* pub const $cname: $name = $name($val);)*

            /// The spec's name for this value, if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$cname => Some(stringify!($cname)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_enum! {
    /// An option sent by the client during newstyle negotiation.
    Opt(u32) {
        /// `NBD_OPT_EXPORT_NAME`
        EXPORT_NAME = 1,
        /// `NBD_OPT_ABORT`
        ABORT = 2,
        /// `NBD_OPT_LIST`
        LIST = 3,
        /// `NBD_OPT_STARTTLS`
        STARTTLS = 5,
        /// `NBD_OPT_INFO`
        INFO = 6,
        /// `NBD_OPT_GO`
        GO = 7,
        /// `NBD_OPT_STRUCTURED_REPLY`
        STRUCTURED_REPLY = 8,
        /// `NBD_OPT_LIST_META_CONTEXT`
        LIST_META_CONTEXT = 9,
        /// `NBD_OPT_SET_META_CONTEXT`
        SET_META_CONTEXT = 10,
        /// `NBD_OPT_EXTENDED_HEADERS`
        EXTENDED_HEADERS = 11,
    }
}

wire_enum! {
    /// The type of an option reply.
    Rep(u32) {
        /// `NBD_REP_ACK`
        ACK = 1,
        /// `NBD_REP_SERVER`
        SERVER = 2,
        /// `NBD_REP_INFO`
        INFO = 3,
        /// `NBD_REP_META_CONTEXT`
        META_CONTEXT = 4,
        /// `NBD_REP_ERR_UNSUP`
        ERR_UNSUP = 0x8000_0001,
        /// `NBD_REP_ERR_POLICY`
        ERR_POLICY = 0x8000_0002,
        /// `NBD_REP_ERR_INVALID`
        ERR_INVALID = 0x8000_0003,
        /// `NBD_REP_ERR_PLATFORM`
        ERR_PLATFORM = 0x8000_0004,
        /// `NBD_REP_ERR_TLS_REQD`
        ERR_TLS_REQD = 0x8000_0005,
        /// `NBD_REP_ERR_UNKNOWN`
        ERR_UNKNOWN = 0x8000_0006,
        /// `NBD_REP_ERR_SHUTDOWN`
        ERR_SHUTDOWN = 0x8000_0007,
        /// `NBD_REP_ERR_BLOCK_SIZE_REQD`
        ERR_BLOCK_SIZE_REQD = 0x8000_0008,
        /// `NBD_REP_ERR_TOO_BIG`
        ERR_TOO_BIG = 0x8000_0009,
    }
}

impl Rep {
    /// Whether this reply type reports an error (bit 31 set).
    pub fn is_error(self) -> bool {
        self.0 & 0x8000_0000 != 0
    }
}

wire_enum! {
    /// An information item in `NBD_OPT_INFO` / `NBD_OPT_GO`.
    Info(u16) {
        /// `NBD_INFO_EXPORT`
        EXPORT = 0,
        /// `NBD_INFO_NAME`
        NAME = 1,
        /// `NBD_INFO_DESCRIPTION`
        DESCRIPTION = 2,
        /// `NBD_INFO_BLOCK_SIZE`
        BLOCK_SIZE = 3,
    }
}

wire_enum! {
    /// A transmission-phase command.
    Cmd(u16) {
        /// `NBD_CMD_READ`
        READ = 0,
        /// `NBD_CMD_WRITE`
        WRITE = 1,
        /// `NBD_CMD_DISC`
        DISC = 2,
        /// `NBD_CMD_FLUSH`
        FLUSH = 3,
        /// `NBD_CMD_TRIM`
        TRIM = 4,
        /// `NBD_CMD_CACHE`
        CACHE = 5,
        /// `NBD_CMD_WRITE_ZEROES`
        WRITE_ZEROES = 6,
        /// `NBD_CMD_BLOCK_STATUS`
        BLOCK_STATUS = 7,
    }
}

wire_enum! {
    /// An error value in a reply (the spec's `NBD_E*`; Linux numbering).
    Errno(u32) {
        /// No error.
        OK = 0,
        /// `NBD_EPERM`
        EPERM = 1,
        /// `NBD_EIO`
        EIO = 5,
        /// `NBD_ENOMEM`
        ENOMEM = 12,
        /// `NBD_EINVAL`
        EINVAL = 22,
        /// `NBD_ENOSPC`
        ENOSPC = 28,
        /// `EBADMSG`, sent by flexnbd-c for a bad request magic.
        EBADMSG = 74,
        /// `NBD_EOVERFLOW`
        EOVERFLOW = 75,
        /// `NBD_ENOTSUP`
        ENOTSUP = 95,
        /// `NBD_ESHUTDOWN`
        ESHUTDOWN = 108,
    }
}

wire_enum! {
    /// The type of a structured reply chunk.
    ChunkType(u16) {
        /// `NBD_REPLY_TYPE_NONE`
        NONE = 0,
        /// `NBD_REPLY_TYPE_OFFSET_DATA`
        OFFSET_DATA = 1,
        /// `NBD_REPLY_TYPE_OFFSET_HOLE`
        OFFSET_HOLE = 2,
        /// `NBD_REPLY_TYPE_BLOCK_STATUS`
        BLOCK_STATUS = 5,
        /// `NBD_REPLY_TYPE_ERROR`
        ERROR = 0x8001,
        /// `NBD_REPLY_TYPE_ERROR_OFFSET`
        ERROR_OFFSET = 0x8002,
    }
}

macro_rules! flags {
    ($(#[$meta:meta])* $name:ident($int:ty) { $($(#[$cmeta:meta])* $cname:ident = $val:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
        pub struct $name(pub $int);

        impl $name {
            $($(#[$cmeta])* pub const $cname: $name = $name($val);)*
            /// Every flag this type names.
            pub const KNOWN: $name = $name(0 $(| $val)*);

            /// Whether every bit of `other` is set here.
            pub fn contains(self, other: $name) -> bool {
                self.0 & other.0 == other.0
            }

            /// Bits set here that this type does not name.
            pub fn unknown(self) -> $int {
                self.0 & !Self::KNOWN.0
            }
        }

        impl std::ops::BitOr for $name {
            type Output = $name;
            fn bitor(self, rhs: $name) -> $name {
                $name(self.0 | rhs.0)
            }
        }

        impl std::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: $name) {
                self.0 |= rhs.0;
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut first = true;
                $(if self.contains($name::$cname) && $val != 0 {
                    if !first { f.write_str("|")?; }
                    f.write_str(stringify!($cname))?;
                    first = false;
                })*
                let unknown = self.unknown();
                if unknown != 0 {
                    if !first { f.write_str("|")?; }
                    write!(f, "{unknown:#x}")?;
                    first = false;
                }
                if first { f.write_str("0")?; }
                Ok(())
            }
        }
    };
}

flags! {
    /// Handshake flags sent by a newstyle server.
    HandshakeFlags(u16) {
        /// `NBD_FLAG_FIXED_NEWSTYLE`
        FIXED_NEWSTYLE = 1,
        /// `NBD_FLAG_NO_ZEROES`
        NO_ZEROES = 2,
    }
}

flags! {
    /// Flags sent by a newstyle client after the greeting.
    ClientFlags(u32) {
        /// `NBD_FLAG_C_FIXED_NEWSTYLE`
        FIXED_NEWSTYLE = 1,
        /// `NBD_FLAG_C_NO_ZEROES`
        NO_ZEROES = 2,
    }
}

flags! {
    /// Transmission flags describing an export.
    TransmissionFlags(u16) {
        /// `NBD_FLAG_HAS_FLAGS`
        HAS_FLAGS = 1,
        /// `NBD_FLAG_READ_ONLY`
        READ_ONLY = 1 << 1,
        /// `NBD_FLAG_SEND_FLUSH`
        SEND_FLUSH = 1 << 2,
        /// `NBD_FLAG_SEND_FUA`
        SEND_FUA = 1 << 3,
        /// `NBD_FLAG_ROTATIONAL`
        ROTATIONAL = 1 << 4,
        /// `NBD_FLAG_SEND_TRIM`
        SEND_TRIM = 1 << 5,
        /// `NBD_FLAG_SEND_WRITE_ZEROES`
        SEND_WRITE_ZEROES = 1 << 6,
        /// `NBD_FLAG_SEND_DF`
        SEND_DF = 1 << 7,
        /// `NBD_FLAG_CAN_MULTI_CONN`
        CAN_MULTI_CONN = 1 << 8,
        /// `NBD_FLAG_SEND_RESIZE`
        SEND_RESIZE = 1 << 9,
        /// `NBD_FLAG_SEND_CACHE`
        SEND_CACHE = 1 << 10,
        /// `NBD_FLAG_SEND_FAST_ZERO`
        SEND_FAST_ZERO = 1 << 11,
    }
}

impl TransmissionFlags {
    /// The flags the C flexnbd advertises: HAS_FLAGS | SEND_FLUSH | SEND_FUA (13).
    pub const FLEXNBD_C: TransmissionFlags = TransmissionFlags(13);
}

flags! {
    /// Flags on a request.
    CmdFlags(u16) {
        /// `NBD_CMD_FLAG_FUA`
        FUA = 1,
        /// `NBD_CMD_FLAG_NO_HOLE`
        NO_HOLE = 1 << 1,
        /// `NBD_CMD_FLAG_DF`
        DF = 1 << 2,
        /// `NBD_CMD_FLAG_REQ_ONE`
        REQ_ONE = 1 << 3,
        /// `NBD_CMD_FLAG_FAST_ZERO`
        FAST_ZERO = 1 << 4,
    }
}

flags! {
    /// Flags on a structured reply chunk.
    ChunkFlags(u16) {
        /// `NBD_REPLY_FLAG_DONE`
        DONE = 1,
    }
}

flags! {
    /// `base:allocation` extent flags.
    ExtentFlags(u32) {
        /// `NBD_STATE_HOLE`
        HOLE = 1,
        /// `NBD_STATE_ZERO`
        ZERO = 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_survive_and_print_in_hex() {
        assert_eq!(format!("{:?}", Cmd(123)), "Cmd(0x7b)");
        assert_eq!(format!("{:?}", Cmd::WRITE_ZEROES), "WRITE_ZEROES");
        assert_eq!(format!("{:?}", Opt(99)), "Opt(0x63)");
        assert!(Rep::ERR_UNSUP.is_error() && !Rep::ACK.is_error());
    }

    #[test]
    fn flags_report_unknown_bits() {
        let f = CmdFlags(CmdFlags::FUA.0 | 0x100);
        assert!(f.contains(CmdFlags::FUA));
        assert_eq!(f.unknown(), 0x100);
        assert_eq!(format!("{f:?}"), "FUA|0x100");
        assert_eq!(
            TransmissionFlags::FLEXNBD_C,
            TransmissionFlags::HAS_FLAGS
                | TransmissionFlags::SEND_FLUSH
                | TransmissionFlags::SEND_FUA
        );
    }
}
