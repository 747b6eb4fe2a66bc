//! The NBD connection layer: the streams NBD runs over and what every
//! server-side connection does with them before and around the commands.
//!
//! - [`stream`]: [`Stream`] (a connected TCP or UNIX socket, or a TLS
//!   session over one) and [`Listener`]; a new transport plugs in here
//!   once, under everything.
//! - [`tls`]: `NBD_OPT_STARTTLS`'s upgrade on either side, the
//!   credentials directory, and the encrypted stream.
//! - [`handshake`]: the server side of the handshake (old-style greeting, or
//!   the fixed-newstyle option loop), used by `serve`, `listen` and the
//!   proxy's client side.
//! - [`frame`]: the request reader (header, bounded payload, discard) and
//!   the reply writer's pieces (one vectored write, `MSG_MORE` before a
//!   `sendfile`).
//!
//! What the bytes mean is `proto`'s business; what to do with a request is
//! the server's or the proxy's. This layer depends only on `proto` and `sys`.

pub mod frame;
pub mod handshake;
pub mod stream;
pub mod tls;

pub use frame::{ReplyWriter, RequestReader, is_disconnect, send_more, write_all_vectored};
pub use handshake::{Handshake, Offer, serve_handshake};
pub use stream::{Listener, Peer, Stream};
