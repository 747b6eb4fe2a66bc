//! TLS with the NBD tools operators use, both ways: libnbd (`nbdinfo`,
//! `nbdcopy` with `nbds://` URIs and `tls-certificates=DIR`) and qemu
//! (`qemu-img` with a `tls-creds-x509` object) against `serve --tls
//! require`, with and without client certificates and `--tls-verify-peer`;
//! our `read`/`write --tls` against `nbdkit --tls=require` and `qemu-nbd
//! --tls-creds`. The credentials come from `support::tls`; the same
//! directory works for every program (the GnuTLS layout).
//!
//! A missing tool skips its test with a printed reason, except with
//! CI=true, where it fails (`support::require_tool`).

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::commands::{
    self, assert_exit_0, assert_success, mirror_wait_ok, one_error_line,
};
use crate::support::daemon::start_on_free_port;
use crate::support::tls::{Part, Pki};
use crate::support::{
    Daemon, DaemonBuilder, TestEnv, assert_same_bytes, pattern, require_tool, text, wait_until,
};

const MIB: u64 = 1 << 20;

/// Runs `cmd` to its end: its output, and whether it succeeded.
fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, which must succeed; its stdout.
#[track_caller]
fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert_exit_0(&format!("{cmd:?}"), &out);
    text(&out.stdout)
}

/// Runs `cmd`, which must fail; its stderr.
#[track_caller]
fn run_fails(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        !out.status.success(),
        "{cmd:?} succeeded\nstdout:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// A temporary directory and a fresh [`Pki`] for a test that needs `tools`;
/// `None` (the test skips) if one is missing ([`require_tool`]).
fn with_tools(tools: &[&str]) -> Option<(TestEnv, Pki)> {
    tools
        .iter()
        .all(|tool| require_tool(tool))
        .then(|| (TestEnv::new(), Pki::new()))
}

/// Asserts the file `copy` holds what `src` does.
#[track_caller]
fn assert_same_file(copy: &Path, src: &Path) {
    let read = |path: &Path| std::fs::read(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    assert_same_bytes(&format!("{copy:?}"), &read(copy), &read(src));
}

/// `nbds://127.0.0.1:PORT/?tls-certificates=CERTS` for libnbd.
fn nbds(d: &Daemon, certs: &Path) -> String {
    format!(
        "nbds://127.0.0.1:{}/?tls-certificates={}",
        d.port(),
        certs.display()
    )
}

/// `flexnbd serve --tls require --tls-certificates CERTS EXTRA...` on a fresh
/// image of `size` bytes in `env`.
#[track_caller]
fn serve_tls(env: &TestEnv, size: u64, certs: &Path, extra: &[&str]) -> (PathBuf, Daemon) {
    let disk = env.image("disk.img", size);
    let d = DaemonBuilder::new("serve", &disk)
        .sock(env.sock_path())
        .arg("-v")
        .args(["--tls", "require", "--tls-certificates"])
        .arg(certs)
        .args(extra)
        .start();
    (disk, d)
}

/// The `--object` of a qemu program: x509 credentials from `dir` for
/// `endpoint`. qemu's `verify-peer` is on by default, for a server too
/// (it then requires a client certificate): always say which.
fn qemu_creds(dir: &Path, endpoint: &str, verify_peer: bool) -> String {
    format!(
        "tls-creds-x509,id=tls0,dir={},endpoint={endpoint},verify-peer={}",
        dir.display(),
        if verify_peer { "on" } else { "off" }
    )
}

/// The `--image-opts` string for qemu's NBD client over TLS to `d`.
fn qemu_image_opts(d: &Daemon) -> String {
    format!("driver=nbd,host=127.0.0.1,port={},tls-creds=tls0", d.port())
}

/// `nbdkit --tls=require --tls-certificates=DIR [--tls-verify-peer] memory 4M`.
fn nbdkit_tls(certs: &Path, verify_peer: bool) -> Daemon {
    start_on_free_port(None, |port| {
        let mut cmd = Command::new("nbdkit");
        cmd.args(["-f", "--exit-with-parent", "-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("--tls=require")
            .arg(format!("--tls-certificates={}", certs.display()));
        if verify_peer {
            cmd.arg("--tls-verify-peer");
        }
        cmd.args(["memory", "4M"]);
        cmd
    })
}

/// `qemu-nbd` serving `file` (raw) over TLS with the credentials in `dir`.
fn qemu_nbd_tls(dir: &Path, file: &Path, verify_peer: bool) -> Daemon {
    start_on_free_port(None, |port| {
        let mut cmd = Command::new("qemu-nbd");
        cmd.arg("--object")
            .arg(qemu_creds(dir, "server", verify_peer))
            .args([
                "--tls-creds",
                "tls0",
                "-f",
                "raw",
                "-t",
                "-b",
                "127.0.0.1",
                "-p",
            ])
            .arg(port.to_string())
            .arg(file);
        cmd
    })
}

/// `flexnbd read`/`write --tls` to `d` (with `stdin` for `write`).
fn our_client(
    d: &Daemon,
    command: &str,
    certs: &Path,
    from: u64,
    size: u64,
    stdin: &[u8],
) -> Output {
    let [l, addr, p, port] = d.addr_args();
    commands::run(
        &[
            command,
            &l,
            &addr,
            &p,
            &port,
            "-F",
            &from.to_string(),
            "-S",
            &size.to_string(),
            "--tls",
            "--tls-certificates",
            certs.to_str().unwrap(),
        ],
        stdin,
    )
}

/// Our `write --tls` then `read --tls` of `data` at `from` through `d`.
#[track_caller]
fn our_round_trip(d: &Daemon, certs: &Path, from: u64, data: &[u8]) {
    let n = data.len() as u64;
    assert_success("write --tls", &our_client(d, "write", certs, from, n, data));
    let out = our_client(d, "read", certs, from, n, &[]);
    assert_success("read --tls", &out);
    assert!(out.stdout == data, "read --tls returned other bytes");
}

/// `d` (`what`) requires a client certificate: our round trip of `data` at 0
/// with one succeeds, our read with the CA alone fails with one line.
#[track_caller]
fn needs_a_client_certificate(d: &Daemon, pki: &Pki, data: &[u8], what: &str) {
    our_round_trip(d, &pki.client(), 0, data);
    let out = our_client(d, "read", &pki.ca_only(), 0, 512, &[]);
    one_error_line(&format!("read --tls without a certificate, {what}"), &out);
}

// ---------------------------------------------------------------------------
// The fixture itself, between GnuTLS programs (no flexnbd involved): if
// these fail, the certificates are wrong, not our TLS.

#[test]
fn gnutls_peers_accept_the_test_certificates() {
    let Some((env, pki)) = with_tools(&["qemu-nbd", "nbdinfo", "qemu-img"]) else {
        return;
    };
    let file = env.image("peer.img", MIB);
    let server = qemu_nbd_tls(&pki.server(), &file, true);
    let info = run_ok(Command::new("nbdinfo").arg(nbds(&server, &pki.client())));
    assert!(info.contains("export-size: 1048576"), "{info}");
    let info = run_ok(
        Command::new("qemu-img")
            .args(["info", "--object"])
            .arg(qemu_creds(&pki.client(), "client", true))
            .args(["--image-opts", &qemu_image_opts(&server)]),
    );
    assert!(info.contains("1 MiB"), "{info}");
}

// ---------------------------------------------------------------------------
// libnbd and qemu against our serve.

#[test]
fn nbdinfo_over_tls_with_and_without_a_client_certificate() {
    let Some((env, pki)) = with_tools(&["nbdinfo"]) else {
        return;
    };
    let (_disk, d) = serve_tls(&env, 4 * MIB, &pki.server(), &[]);
    for certs in [pki.client(), pki.ca_only()] {
        let info = run_ok(Command::new("nbdinfo").arg("--json").arg(nbds(&d, &certs)));
        assert!(info.contains("\"export-size\": 4194304"), "{info}");
        assert!(info.contains("\"TLS\": true"), "{info}");
    }
    // libnbd refuses a server whose certificate its CA did not sign.
    run_fails(Command::new("nbdinfo").arg(nbds(&d, &pki.dir(&[Part::OtherCa]))));
    // A plaintext nbdinfo is refused: libnbd turns NBD_REP_ERR_TLS_REQD
    // into ENOTSUP ("Operation not supported for the default export").
    let said = run_fails(Command::new("nbdinfo").arg(format!("nbd://127.0.0.1:{}/", d.port())));
    assert!(
        said.contains("not supported") || said.to_lowercase().contains("tls"),
        "{said}"
    );
}

#[test]
fn nbdinfo_and_nbdcopy_with_verify_peer() {
    let Some((env, pki)) = with_tools(&["nbdinfo", "nbdcopy"]) else {
        return;
    };
    let (disk, d) = serve_tls(&env, 4 * MIB, &pki.server(), &["--tls-verify-peer"]);
    let client = pki.client();
    run_ok(Command::new("nbdinfo").arg(nbds(&d, &client)));
    // Without a certificate, or with one from another CA: refused.
    run_fails(Command::new("nbdinfo").arg(nbds(&d, &pki.ca_only())));
    run_fails(Command::new("nbdinfo").arg(nbds(&d, &pki.dir(&[Part::Ca, Part::WrongCaClient]))));
    let src = env.image_with("src.img", &pattern(4 * MIB as usize, 21));
    run_ok(Command::new("nbdcopy").arg(&src).arg(nbds(&d, &client)));
    assert_same_file(&disk, &src);
}

#[test]
fn a_gnutls_client_that_puts_aes_256_first_gets_aes_128_gcm() {
    let Some((env, pki)) = with_tools(&["nbdinfo"]) else {
        return;
    };
    // -v twice: the session's suite is logged at debug level.
    let (_disk, d) = serve_tls(&env, MIB, &pki.server(), &["-v"]);
    run_ok(Command::new("nbdinfo").arg(nbds(&d, &pki.ca_only())));
    wait_until("the TLS session logged", Duration::from_secs(10), || {
        d.stderr().contains("TLS session started: ")
    });
    let log = d.stderr();
    assert!(
        log.contains("TLS session started: TLSv1_3 TLS13_AES_128_GCM_SHA256"),
        "{log}"
    );
}

#[test]
fn nbdcopy_both_ways_over_tls() {
    let Some((env, pki)) = with_tools(&["nbdcopy"]) else {
        return;
    };
    let (disk, d) = serve_tls(&env, 16 * MIB, &pki.server(), &[]);
    let src = env.image_with("src.img", &pattern(16 * MIB as usize, 22));
    let certs = pki.ca_only();
    run_ok(
        Command::new("nbdcopy")
            .arg("--flush")
            .arg(&src)
            .arg(nbds(&d, &certs)),
    );
    assert_same_file(&disk, &src);
    let back = env.child("back.img");
    run_ok(
        Command::new("nbdcopy")
            .args(["-C", "4"])
            .arg(nbds(&d, &pki.client()))
            .arg(&back),
    );
    assert_same_file(&back, &src);
}

#[test]
fn qemu_img_info_and_convert_over_tls() {
    let Some((env, pki)) = with_tools(&["qemu-img"]) else {
        return;
    };
    for (verify_peer, certs) in [(false, pki.ca_only()), (true, pki.client())] {
        let sub = TestEnv::new();
        let extra: &[&str] = if verify_peer {
            &["--tls-verify-peer"]
        } else {
            &[]
        };
        let (disk, d) = serve_tls(&sub, 8 * MIB, &pki.server(), extra);
        let object = qemu_creds(&certs, "client", true);
        let info = run_ok(Command::new("qemu-img").args([
            "info",
            "--object",
            &object,
            "--image-opts",
            &qemu_image_opts(&d),
        ]));
        assert!(info.contains("8 MiB"), "{info}");
        let src = env.image_with("src.img", &pattern(8 * MIB as usize, 23));
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-n", "-f", "raw", "--object", &object])
                .args(["--target-image-opts"])
                .arg(&src)
                .arg(qemu_image_opts(&d)),
        );
        assert_same_file(&disk, &src);
        let back = env.child("back.img");
        run_ok(
            Command::new("qemu-img")
                .args(["convert", "-O", "raw", "--object", &object, "--image-opts"])
                .arg(qemu_image_opts(&d))
                .arg(&back),
        );
        assert_same_file(&back, &src);
    }
    // With verify-peer, qemu without a client certificate is refused.
    let (_disk, d) = serve_tls(&env, MIB, &pki.server(), &["--tls-verify-peer"]);
    run_fails(Command::new("qemu-img").args([
        "info",
        "--object",
        &qemu_creds(&pki.ca_only(), "client", true),
        "--image-opts",
        &qemu_image_opts(&d),
    ]));
}

// ---------------------------------------------------------------------------
// Our clients against nbdkit and qemu-nbd.

#[test]
fn our_read_and_write_against_nbdkit_over_tls() {
    let Some((_env, pki)) = with_tools(&["nbdkit"]) else {
        return;
    };
    let server = nbdkit_tls(&pki.server(), false);
    our_round_trip(&server, &pki.ca_only(), 4096, &pattern(100_000, 24));
    our_round_trip(&server, &pki.client(), 0, &pattern(4096, 25));
    // A server certificate from another CA is refused, with one line.
    let out = our_client(&server, "read", &pki.dir(&[Part::OtherCa]), 0, 512, &[]);
    one_error_line("read --tls trusting another CA", &out);

    let server = nbdkit_tls(&pki.server(), true);
    needs_a_client_certificate(
        &server,
        &pki,
        &pattern(8192, 26),
        "nbdkit --tls-verify-peer",
    );
}

#[test]
fn our_read_and_write_against_qemu_nbd_over_tls() {
    let Some((env, pki)) = with_tools(&["qemu-nbd"]) else {
        return;
    };
    let file = env.image("qemu.img", 4 * MIB);
    {
        let server = qemu_nbd_tls(&pki.server(), &file, false);
        our_round_trip(&server, &pki.ca_only(), 65536, &pattern(200_000, 27));
    }
    let data = pattern(200_000, 27);
    assert!(std::fs::read(&file).unwrap()[65536..65536 + data.len()] == data[..]);
    let server = qemu_nbd_tls(&pki.server(), &file, true);
    needs_a_client_certificate(&server, &pki, &pattern(4096, 28), "qemu-nbd verify-peer=on");
}

#[test]
fn a_tls_migration_into_nbdkit_requiring_client_certificates() {
    let Some((env, pki)) = with_tools(&["nbdkit"]) else {
        return;
    };
    let server = nbdkit_tls(&pki.server(), true);
    let data = pattern(4 * MIB as usize, 29);
    let src = env.image_with("source.img", &data);
    let sock = env.sock_path_named("source.sock");
    let mut source = DaemonBuilder::new("serve", &src)
        .sock(&sock)
        .arg("--tls-certificates")
        .arg(pki.full())
        .start();
    mirror_wait_ok(&mut source, &format!("nbds://127.0.0.1:{}/", server.port()));
    let out = our_client(&server, "read", &pki.client(), 0, 4 * MIB, &[]);
    assert_success("read back from nbdkit", &out);
    assert!(out.stdout == data, "nbdkit's data differs");
}
