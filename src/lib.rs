//! flexnbd: an NBD server that serves a file and can live-migrate it.
//!
//! The crate is a library with a thin binary (`src/main.rs`). Layers, from
//! the bottom up (each depends only on those before it):
//!
//! - [`proto`]: the NBD protocol as pure functions over bytes: constants,
//!   wire headers, the server's option negotiation. No I/O.
//! - [`net`]: address and ACL parsing, also pure.
//! - [`backing`]: the served file: positioned reads and writes, hole
//!   punching, zeroing, allocation queries and durable syncs.
//! - [`client`]: a blocking NBD client (old-style and newstyle) used by
//!   `read`, `write` and, later, `mirror` and `proxy`.
//! - [`server`]: the NBD server: accept loop, ACL, per-connection
//!   transmission with several requests in flight, shutdown.
//! - [`mirror`]: live migration to another server: the copy engine, its
//!   supervisor with retries, and the control commands that drive it.
//! - [`proxy`]: the resilient proxy that hides upstream failures and
//!   migrations from its one client.
//! - [`control`]: the UNIX control socket: its line protocol, the listener
//!   thread, and the client used by `status` and `acl`.
//! - [`cli`], [`cmd`]: the command line and one module per subcommand; only
//!   these print to stdout.
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
pub mod logging;
pub mod mirror;
pub mod net;
pub mod proto;
pub mod proxy;
pub mod server;
