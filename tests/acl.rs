//! ACL entries against the real `flexnbd serve` on the IPv4 and IPv6
//! wildcards: an IPv4 client reaches a `-l ::` listener as
//! `::ffff:a.b.c.d`, and must be judged by the IPv4 entries all the same.
//!
//! Regression: issue 10 item 4 (`serve -l :: ... 127.0.0.1` refused 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};

use crate::control::assert_refused;
use crate::support::wire::{Client, Handshake};
use crate::support::{Daemon, TestEnv, control, in_ci};

/// Whether this machine can listen on `::` (IPv6 may be disabled in a container).
fn have_ipv6() -> bool {
    match TcpListener::bind((Ipv6Addr::UNSPECIFIED, 0)) {
        Ok(_) => true,
        Err(e) => {
            assert!(!in_ci(), "CI=true but cannot listen on [::]: {e}");
            eprintln!("skipping the -l :: cases: cannot listen on [::]: {e}");
            false
        }
    }
}

/// For each way to write 127.0.0.1 in an ACL: a server on `listen` whose ACL
/// holds only the other loopback address 127.0.0.2 (in the same form)
/// refuses a client on 127.0.0.1; after `acl` sets 127.0.0.1 it serves it.
fn check_listener(listen: IpAddr) {
    for (other, ours) in [
        ("127.0.0.2", "127.0.0.1"),
        ("::ffff:127.0.0.2", "::ffff:127.0.0.1"),
    ] {
        let what = format!("-l {listen} with ACL {ours}");
        let env = TestEnv::new();
        let disk = env.image("disk.img", 1 << 20);
        let sock = env.sock_path();
        let d = Daemon::serve(&disk)
            .addr(listen)
            .port(0)
            .sock(&sock)
            .arg(other)
            .start();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), d.port());
        assert_refused(addr);
        assert_eq!(control(&sock, "acl", &[ours]), "0: updated\n", "{what}");
        let data = Client::connect(addr, Handshake::Go).read(7, 0, 512);
        assert_eq!(data.len(), 512, "{what}");
    }
}

#[test]
fn ipv4_clients_match_ipv4_and_mapped_entries_on_the_ipv6_wildcard() {
    if have_ipv6() {
        check_listener(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
    }
}

#[test]
fn ipv4_clients_match_ipv4_and_mapped_entries_on_the_ipv4_wildcard() {
    check_listener(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
}
