//! What operators who know qemu-nbd and nbdkit reach for: export names
//! (`-x`), seen through libnbd and qemu.

use crate::support::{DaemonBuilder, TestEnv, flexnbd, require_tool, run_ok, text, tool, unix_uri};

#[test]
fn a_named_export_is_listed_and_other_names_are_refused() {
    if !require_tool("nbdinfo") || !require_tool("qemu-img") {
        return;
    }
    let t = TestEnv::new();
    let file = t.image("disk.img", 1 << 20);
    let d = DaemonBuilder::new("serve", &file)
        .args(["-x", "disk0"])
        .start();
    let base = format!("nbd://127.0.0.1:{}", d.port());

    let list = run_ok(tool("nbdinfo").arg("--list").arg(&base));
    assert!(list.contains("export=\"disk0\""), "{list}");
    let size = run_ok(tool("nbdinfo").arg("--size").arg(format!("{base}/disk0")));
    assert_eq!(size.trim(), "1048576");

    let other = tool("nbdinfo")
        .arg("--size")
        .arg(format!("{base}/other"))
        .output()
        .expect("nbdinfo");
    assert!(!other.status.success(), "another name was served");
    let why = text(&other.stderr);
    assert!(why.contains("other"), "{why}");

    // qemu asks by NBD_OPT_GO with the name.
    let qemu = run_ok(
        tool("qemu-img")
            .args(["info", "--output=json"])
            .arg(format!("{base}/disk0")),
    );
    assert!(qemu.contains("\"virtual-size\": 1048576"), "{qemu}");
}

#[test]
fn an_export_name_needs_the_newstyle_handshake() {
    let t = TestEnv::new();
    let file = t.image("disk.img", 1 << 20);
    let out = flexnbd()
        .args([
            "serve",
            "-l",
            "127.0.0.1",
            "-p",
            "1",
            "--oldstyle",
            "-x",
            "a",
            "-f",
        ])
        .arg(&file)
        .output()
        .expect("flexnbd");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--oldstyle"),
        "{}",
        text(&out.stderr)
    );
}

/// `flexnbd MODE -l SOCKET -f FILE -s CTL [args]`, ready once its control socket is.
fn on_unix_socket(
    mode: &str,
    socket: &std::path::Path,
    file: &std::path::Path,
    ctl: &std::path::Path,
    args: &[&str],
) -> crate::support::Daemon {
    let mut cmd = crate::support::flexnbd_std();
    cmd.arg(mode)
        .arg("-l")
        .arg(socket)
        .arg("-f")
        .arg(file)
        .arg("-s")
        .arg(ctl)
        .args(args);
    let mut d =
        crate::support::Daemon::spawn(cmd, vec![crate::support::Ready::Sock(ctl.to_owned())]);
    d.wait_ready();
    d
}

#[test]
fn serve_listens_on_a_unix_socket_owner_only_and_removes_it() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestEnv::new();
    let file = t.image_with("disk.img", &crate::support::pattern(1 << 20, 9));
    let socket = t.child("disk.sock");
    let ctl = t.sock_path();
    let mut d = on_unix_socket("serve", &socket, &file, &ctl, &[]);
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    // Our own client by path and by URI.
    for target in [socket.display().to_string(), unix_uri("", &socket)] {
        let out = flexnbd()
            .args(["read", "-l", &target, "-F", "4096", "-S", "4096"])
            .output()
            .expect("read");
        assert!(out.status.success(), "{target}: {}", text(&out.stderr));
        assert_eq!(
            out.stdout,
            crate::support::pattern(1 << 20, 9)[4096..8192].to_vec()
        );
    }
    if require_tool("nbdinfo") {
        let out = tool("nbdinfo")
            .arg("--size")
            .arg(unix_uri("", &socket))
            .output()
            .expect("nbdinfo");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "1048576");
    }
    d.signal(crate::support::Signal::TERM);
    assert!(d.wait_exit(std::time::Duration::from_secs(10)).success());
    assert!(!socket.exists(), "the socket file is left behind");
}

#[test]
fn a_migration_between_two_servers_on_unix_sockets() {
    let t = TestEnv::new();
    let src = t.image_with("src.img", &crate::support::pattern(8 << 20, 5));
    let dst = t.image("dst.img", 8 << 20);
    let (ssock, dsock) = (t.child("src.sock"), t.child("dst.sock"));
    let (sctl, dctl) = (t.sock_path_named("src.ctl"), t.sock_path_named("dst.ctl"));
    let mut source = on_unix_socket("serve", &ssock, &src, &sctl, &[]);
    let mut dest = on_unix_socket("listen", &dsock, &dst, &dctl, &[]);
    let out = flexnbd()
        .args(["mirror", "--wait", "--no-progress", "-s"])
        .arg(&sctl)
        .arg("-l")
        .arg(&dsock)
        .output()
        .expect("mirror");
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stderr),
        source.stderr()
    );
    assert!(
        source
            .wait_exit(std::time::Duration::from_secs(30))
            .success()
    );
    assert!(dest.wait_exit(std::time::Duration::from_secs(30)).success());
    crate::support::assert_same_bytes(
        "destination",
        &std::fs::read(&dst).expect("dst"),
        &std::fs::read(&src).expect("src"),
    );
}

#[test]
fn a_socket_path_takes_no_port_and_an_address_needs_one() {
    let t = TestEnv::new();
    let file = t.image("disk.img", 1 << 20);
    for args in [
        vec!["serve", "-l", "/tmp/x.sock", "-p", "1"],
        vec!["serve", "-l", "127.0.0.1"],
        vec!["listen", "-l", "::1"],
    ] {
        let out = flexnbd()
            .args(&args)
            .arg("-f")
            .arg(&file)
            .output()
            .expect("flexnbd");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("--port"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
