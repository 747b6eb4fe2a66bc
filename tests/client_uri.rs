//! NBD URIs, UNIX sockets and export names wherever a client target is
//! named: `read` and `write` (against our `serve` and nbdkit), the proxy's
//! upstream, and `mirror`; with the usage errors of `-l`/`-p` that do not
//! fit together.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::commands::{assert_success, mirror_wait_ok, one_error_line, run};
use crate::support::daemon::serve_image;
use crate::support::{
    Daemon, DaemonBuilder, Ready, Style, TestEnv, flexnbd_std, pattern, require_tool, text,
};
use crate::support::{MIB, unix_uri};

/// `flexnbd read -l ADDR -F from -S size`.
fn read(addr: &str, from: u64, size: u64) -> Output {
    run(
        &[
            "read",
            "-l",
            addr,
            "-F",
            &from.to_string(),
            "-S",
            &size.to_string(),
        ],
        &[],
    )
}

/// `flexnbd write -l ADDR -F from -S len` with `data` on stdin.
fn write(addr: &str, from: u64, data: &[u8]) -> Output {
    let (from, size) = (from.to_string(), data.len().to_string());
    run(&["write", "-l", addr, "-F", &from, "-S", &size], data)
}

/// Writes `data` at `from` through `waddr`, reads it back through `raddr`.
#[track_caller]
fn round_trip(waddr: &str, raddr: &str, from: u64, data: &[u8]) {
    assert_success(&format!("write to {waddr}"), &write(waddr, from, data));
    let out = read(raddr, from, data.len() as u64);
    assert_success(&format!("read from {raddr}"), &out);
    assert!(out.stdout == data, "read back from {raddr} differs");
}

/// `nbdkit` on a UNIX socket `nbd.sock` in `env`, serving `args`; `None` if not installed.
fn nbdkit_unix(env: &TestEnv, args: &[&str]) -> Option<(Daemon, PathBuf)> {
    if !require_tool("nbdkit") {
        return None;
    }
    let sock = env.child("nbd.sock");
    let mut cmd = Command::new("nbdkit");
    cmd.args(["-f", "--exit-with-parent", "-U"])
        .arg(&sock)
        .args(args);
    let mut d = Daemon::spawn(cmd, vec![Ready::Sock(sock.clone())]);
    d.wait_ready();
    Some((d, sock))
}

/// nbdkit serving 1 MiB of memory on a UNIX socket, and the two ways to
/// name it: the socket's path and an NBD URI.
struct NbdkitMemory {
    _nbdkit: Daemon,
    path: String,
    uri: String,
}

/// [`NbdkitMemory`] in `env`; `None` (the test skips) without nbdkit.
fn nbdkit_memory(env: &TestEnv) -> Option<NbdkitMemory> {
    let (nbdkit, sock) = nbdkit_unix(env, &["memory", "1M"])?;
    Some(NbdkitMemory {
        _nbdkit: nbdkit,
        path: path_str(&sock).to_owned(),
        uri: unix_uri("", &sock),
    })
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn read_and_write_take_nbd_uris_to_our_serve() {
    let (_env, _disk, d) = serve_image(MIB, Style::Newstyle, &[]);
    let port = d.port();
    let data = pattern(100_000, 1);
    round_trip(
        &format!("nbd://127.0.0.1:{port}/"),
        &format!("nbd://127.0.0.1:{port}"),
        4096,
        &data,
    );
    // A host name: every address is tried (::1 may come first and refuse).
    let out = read(&format!("nbd://localhost:{port}/"), 4096, 100);
    assert_success("read from localhost", &out);
    assert_eq!(out.stdout, &data[..100]);
}

#[test]
fn named_exports_of_our_serve() {
    let (_env, _disk, d) = serve_image(MIB, Style::Newstyle, &["-x", "disk one"]);
    let port = d.port();
    let uri = format!("nbd://127.0.0.1:{port}/disk%20one");
    round_trip(&uri, &uri, 0, &pattern(5000, 2));
    let line = one_error_line(
        "another name",
        &read(&format!("nbd://127.0.0.1:{port}/other"), 0, 1),
    );
    assert!(line.contains("ERR_UNKNOWN"), "{line}");
}

#[test]
fn an_export_name_is_ignored_by_an_oldstyle_server() {
    let (_env, _disk, d) = serve_image(MIB, Style::Oldstyle, &[]);
    let out = read(&format!("nbd://127.0.0.1:{}/name", d.port()), 0, 10);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout, vec![0; 10]);
    assert!(text(&out.stderr).contains("no export names"));
}

#[test]
fn read_and_write_over_a_unix_socket_to_nbdkit() {
    let env = TestEnv::new();
    let Some(nbdkit) = nbdkit_memory(&env) else {
        return;
    };
    let data = pattern(70_000, 3);
    round_trip(&nbdkit.uri, &nbdkit.path, 12_345, &data);
    round_trip(&nbdkit.path, &nbdkit.uri, 500_000, &data);
}

#[test]
fn the_export_name_reaches_nbdkit() {
    let env = TestEnv::new();
    // The info plugin serves the export name it was asked for as the data.
    let Some((_nbdkit, sock)) = nbdkit_unix(&env, &["info", "mode=exportname"]) else {
        return;
    };
    let out = read(&unix_uri("hello%20world", &sock), 0, 11);
    assert_success("read of the name", &out);
    assert_eq!(text(&out.stdout), "hello world");
}

#[test]
fn a_named_export_of_qemu_nbd_on_a_unix_socket() {
    if !require_tool("qemu-nbd") {
        return;
    }
    let env = TestEnv::new();
    let disk = env.image("disk.img", MIB);
    let sock = env.child("qemu.sock");
    let mut cmd = Command::new("qemu-nbd");
    cmd.args(["-t", "-f", "raw", "-x", "my disk", "-k"])
        .arg(&sock)
        .arg(&disk);
    let mut qemu = Daemon::spawn(cmd, vec![Ready::Sock(sock.clone())]);
    qemu.wait_ready();
    let uri = unix_uri("my%20disk", &sock);
    let data = pattern(30_000, 8);
    round_trip(&uri, &uri, 1000, &data);
    assert!(
        env.read(&disk)[1000..31_000] == data[..],
        "the file differs"
    );
    let other = unix_uri("other", &sock);
    let line = one_error_line("another name", &read(&other, 0, 1));
    assert!(line.contains("ERR_UNKNOWN"), "{line}");
}

#[test]
fn the_proxy_upstream_may_be_a_uri_or_a_socket_path() {
    let env = TestEnv::new();
    let Some(nbdkit) = nbdkit_memory(&env) else {
        return;
    };
    let mut first = None;
    for upstream in [&nbdkit.uri, &nbdkit.path] {
        let mut cmd = flexnbd_std();
        cmd.args(["proxy", "-l", "127.0.0.1", "-p", "0", "-v", "-C", upstream]);
        let proxy = Daemon::start_logged_port(cmd);
        let addr = format!("nbd://127.0.0.1:{}/", proxy.port());
        let data = pattern(40_000, 4);
        if first.is_none() {
            round_trip(&addr, &addr, 8192, &data);
            first = Some(data);
        } else {
            // The same nbdkit behind the second proxy: the first's data is there.
            let out = read(&addr, 8192, 40_000);
            assert_success("read through the second proxy", &out);
            assert!(Some(out.stdout) == first, "data differs through {upstream}");
        }
    }
}

#[test]
fn the_proxy_asks_upstream_for_the_uris_export() {
    let env = TestEnv::new();
    let Some((_nbdkit, sock)) = nbdkit_unix(&env, &["info", "mode=exportname"]) else {
        return;
    };
    let mut cmd = flexnbd_std();
    cmd.args(["proxy", "-l", "127.0.0.1", "-p", "0", "-v", "-C"])
        .arg(unix_uri("via%2Fproxy", &sock));
    let proxy = Daemon::start_logged_port(cmd);
    let out = read(&format!("nbd://127.0.0.1:{}", proxy.port()), 0, 9);
    assert_success("read through the proxy", &out);
    assert_eq!(text(&out.stdout), "via/proxy");
}

#[test]
fn mirror_takes_an_nbd_uri_with_an_ip_and_port() {
    let env = TestEnv::new();
    let src = env.image_with("source.img", &pattern(2 << 20, 5));
    let dst = env.image("dest.img", 2 * MIB);
    let mut dest = DaemonBuilder::new("listen", &dst)
        .sock(env.sock_path_named("dest.sock"))
        .start();
    mirror_wait(&env, &src, &format!("nbd://127.0.0.1:{}", dest.port()));
    assert!(dest.wait_exit(Duration::from_secs(30)).success());
    assert!(env.read(&dst) == env.read(&src), "the destination differs");
}

/// `flexnbd mirror --wait` from a new `serve` of `src` (control socket in `env`) to `dest`.
#[track_caller]
fn mirror_wait(env: &TestEnv, src: &Path, dest: &str) -> Daemon {
    let sock = env.sock_path_named("source.sock");
    let mut source = DaemonBuilder::new("serve", src).sock(&sock).start();
    mirror_wait_ok(&mut source, dest);
    source
}

#[test]
fn mirror_to_a_named_export() {
    let env = TestEnv::new();
    let src = env.image_with("source.img", &pattern(1 << 20, 6));
    let dst = env.image("dest.img", MIB);
    let mut dest = DaemonBuilder::new("listen", &dst)
        .sock(env.sock_path_named("dest.sock"))
        .args(["-x", "the disk"])
        .start();
    mirror_wait(
        &env,
        &src,
        &format!("nbd://127.0.0.1:{}/the%20disk", dest.port()),
    );
    assert!(dest.wait_exit(Duration::from_secs(30)).success());
    assert!(env.read(&dst) == env.read(&src), "the destination differs");
}

#[test]
fn mirror_to_nbdkit_on_a_unix_socket() {
    let env = TestEnv::new();
    let Some(nbdkit) = nbdkit_memory(&env) else {
        return;
    };
    let data = pattern(1 << 20, 7);
    let src = env.image_with("source.img", &data);
    mirror_wait(&env, &src, &nbdkit.uri);
    let out = read(&nbdkit.path, 0, MIB);
    assert_success("read back from nbdkit", &out);
    assert!(out.stdout == data, "nbdkit's data differs");
}

#[test]
fn ports_and_uris_that_do_not_fit_are_usage_errors() {
    let cases = [
        ("read -l 127.0.0.1 -F 0 -S 1", "--port is required"),
        (
            "write -l nbd://127.0.0.1:1/ -p 1 -F 0 -S 1",
            "--port cannot be used",
        ),
        ("read -l /x.sock -p 1 -F 0 -S 1", "--port cannot be used"),
        (
            "read -l nbds://h/ -F 0 -S 1",
            "TLS needs --tls-certificates DIR",
        ),
        (
            "read -l 127.0.0.1 -p 1 --tls -F 0 -S 1",
            "TLS needs --tls-certificates DIR",
        ),
        (
            "read -l nbds://h/?tls-verify-peer=false -F 0 -S 1",
            "tls-verify-peer cannot be turned off",
        ),
        ("read -l nbd+unix:/// -F 0 -S 1", "?socket=PATH"),
        ("read -l nbd://h:99999/ -F 0 -S 1", "bad port"),
        ("read -l http://h/ -F 0 -S 1", "unknown URI scheme"),
        ("mirror -s /nonexistent -l 127.0.0.1", "--port is required"),
        (
            "proxy -l 127.0.0.1 -p 1 -C 127.0.0.1",
            "--conn-port is required",
        ),
        (
            "proxy -l 127.0.0.1 -p 1 -C nbd://h/ -P 1",
            "--conn-port cannot be used",
        ),
    ];
    for (line, expected) in cases {
        let args: Vec<&str> = line.split_whitespace().collect();
        let out = run(&args, &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{line}: {stderr}"
        );
    }
}
