//! The UNIX control socket: its line protocol and the client used by `status` and `acl`.
//!
//! The protocol is flexnbd-c's (behaviour doc, section 5), byte for byte:
//! a request is a command line and argument lines ended by an empty line
//! (see [`protocol`]), and the reply is one `N: text` line, after which the
//! server closes the connection.

pub mod client;
pub mod protocol;

pub use protocol::{Reply, Request};
