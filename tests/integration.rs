//! Integration tests: one binary, one module per feature.
//!
//! Shared helpers (the binary, temp dirs, daemons, interop tools) live in
//! `support`; see its module docs. Add one `mod` line per feature file.

mod support;

/// ACL entries on the IPv4 and IPv6 wildcards: IPv4 and IPv4-mapped clients and entries.
mod acl;
/// The command line: help, version, usage errors, flexnbd-c's option forms.
mod cli;
/// The NBD client library and the `read`/`write` subcommands against real servers.
mod client;
/// The control socket's mode: 0600 whatever the umask, or `--control-mode`.
mod control_mode;
/// The real `flexnbd serve` process: status, acl, control socket, signals, read/write, start-up errors.
mod daemon;
/// The same scenarios against the C flexnbd 0.5.0 and ours, side by side: what matches, what differs on purpose.
mod differential;
/// The committed fuzz corpora, replayed through the fuzz targets' entry points (stable).
mod fuzz_corpus;
/// A black-box fuzzer: the real server fed mutated handshakes and requests from a fixed seed.
mod fuzz_server;
/// Committed man pages and completions match `flexnbd generate`.
mod generated;
/// Real NBD clients (nbdinfo, nbdcopy, nbdsh, qemu, fio) against the server.
mod interop;
/// Live migrations end to end: fio writers, --unlink, break, mirror-speed, sparse files,
/// killed peers, `mirror --wait`.
mod migration;
/// Migrations that go wrong (fake destinations and sources), and with the C flexnbd.
mod mirror_faults;
/// The proxy (`flexnbd proxy`, `flexnbd-proxy`): relaying, resending across upstream failures and migrations.
mod proxy;
/// The server in-process, byte by byte: handshakes, commands, bad input, limits.
mod serve;
