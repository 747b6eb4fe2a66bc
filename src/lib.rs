//! flexnbd: an NBD server that serves a file and can live-migrate it.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Layers, from
//! the bottom up (each depends only on those before it; the `layering`
//! test enforces this table):
//!
//! - [`proto`]: the NBD protocol as pure functions over bytes: constants,
//!   wire headers, the server's option negotiation. No I/O.
//! - [`sys`]: operating-system helpers any layer may use: the stop
//!   [`sys::Trigger`], a poison-tolerant lock, the monotonic clock.
//! - [`sd`]: systemd's socket activation and service notifications.
//! - [`nbd`]: the connection layer: the stream NBD runs over (TCP or UNIX),
//!   listeners, the server side of the handshake, the request reader and
//!   the reply writer, shared by the server, the proxy and the clients.
//! - [`status`]: the status snapshot that `status` reports, as plain data.
//! - [`net`]: address and ACL parsing.
//! - [`backing`]: the served file: positioned reads and writes, hole
//!   punching, zeroing, allocation queries and durable syncs.
//! - [`client`]: a blocking NBD client (old-style and newstyle) used by
//!   `read`, `write`, `mirror` and `proxy`.
//! - [`server`]: the NBD server: accept loop, ACL, per-connection
//!   transmission with several requests in flight, shutdown.
//! - [`mirror`]: live migration to another server: the copy engine, its
//!   supervisor with retries, the `mirror` command's request and its typed
//!   outcomes.
//! - [`proxy`]: the resilient proxy that hides upstream failures and
//!   migrations from its one client.
//! - [`control`]: the UNIX control socket: its line protocol, the listener
//!   thread, the commands and their reply texts, and the client used by
//!   `status`, `acl`, `mirror` and `break`.
//! - [`cli`], [`cmd`]: the command line and one module per subcommand; only
//!   these print to stdout.
//! - [`uri`]: NBD URIs and the other spellings of a server to connect to.
//! - [`logging`], [`exit`]: the stderr logger and exit codes.
//! - `fuzzing` (hidden): the entry points of the fuzz targets in `fuzz/`,
//!   replayed over the committed corpora by `tests/fuzz_corpus.rs`.

#![cfg_attr(test, allow(clippy::cast_possible_truncation))]

pub mod backing;
pub mod cli;
pub mod client;
pub mod cmd;
pub mod control;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod layering;
pub mod logging;
pub mod mirror;
pub mod nbd;
pub mod net;
pub mod proto;
pub mod proxy;
pub mod sd;
pub mod server;
pub mod status;
pub mod sys;
pub mod uri;
