//! Integration tests: one binary, one module per feature.
//!
//! Shared helpers (the binary, temp dirs, daemons, interop tools) live in
//! `support`; see its module docs. Add one `mod` line per feature file.

mod support;

/// ACL entries on the IPv4 and IPv6 wildcards: IPv4 and IPv4-mapped clients and entries.
mod acl;
/// The command line: help, version, usage errors, flexnbd-c's option forms.
mod cli;
/// The NBD client library and the `read`/`write` subcommands against nbdkit, the C flexnbd and fakes.
mod client;
/// NBD URIs, UNIX sockets and export names for `read`, `write`, `mirror` and the proxy's upstream.
mod client_uri;
/// The control socket of a real `flexnbd serve`: status, acl, the socket's lifecycle, bad requests.
mod control;
/// The control socket's mode: 0600 whatever the umask, or `--control-mode`.
mod control_mode;
/// SIGKILL of `serve` during FUA and FLUSHed writes loses no acknowledged write.
mod crash;
/// The same scenarios against the C flexnbd 0.5.0 and ours, side by side: what matches, what differs on purpose.
mod differential;
/// The committed fuzz corpora, replayed through the fuzz targets' entry points (stable).
mod fuzz_corpus;
/// A black-box fuzzer: the real server fed mutated handshakes and requests from a fixed seed.
mod fuzz_server;
/// Committed man pages and completions match `flexnbd generate`.
mod generated;
/// `listen --serve-after-handover`: the destination serves on after the handover, a client
/// behind the proxy carries on with it.
mod handover;
/// What a hostile or broken client cannot do: panics, log floods.
mod hardening;
/// The flexnbd hash extension: `mirror --verify` repairs or refuses a bad copy, incremental copies send what differs.
mod hash_migration;
/// Real NBD clients (nbdinfo, nbdcopy, nbdsh, qemu, fio) against the server.
mod interop;
/// Live migrations end to end: fio writers, --unlink, break, mirror-speed, sparse files,
/// killed peers, `mirror --wait`.
mod migration;
/// Migrations that go wrong (fake destinations and sources), and with the C flexnbd.
mod mirror_faults;
/// What operators reach for: export names, seen through libnbd and qemu.
mod operator;
/// What `mirror --wait` prints while a migration runs at a limit, paused, resumed and broken.
mod progress;
/// The proxy (`flexnbd proxy`, `flexnbd-proxy`): relaying, resending across upstream failures and migrations.
mod proxy;
/// The proxy's request handles upstream: the client's own, on first send and resend; a reused one is refused.
mod proxy_handles;
/// `flexnbd read` and `write` against our own `serve`: round trips, errors, signals, pipes.
mod read_write;
/// The README's command blocks, run as written.
mod readme;
/// The server in-process, byte by byte: handshakes, commands, bad input, limits.
mod serve;
/// The `flexnbd serve` process: signals, start-up errors, read-only, its log, its bytes to tools.
mod serve_process;
/// systemd: socket activation, notifications, --pid-file, journald log lines.
mod systemd;
/// TLS, our binary against itself: serve/listen --tls, read/write --tls, bad peers,
/// rotation, usage errors, migrations over TLS.
mod tls;
/// The test PKI of `support::tls`: its layout, checked with GnuTLS's certtool.
mod tls_fixture;
/// TLS with nbdinfo, nbdcopy, qemu-img, nbdkit and qemu-nbd, both ways.
mod tls_interop;
