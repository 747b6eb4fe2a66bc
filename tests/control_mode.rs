//! The control socket's permission bits: owner only (0600) whatever the
//! umask, or exactly what `--control-mode` asks for, on `serve` and `listen`.
//!
//! Regression: issue 10 item 5 (under umask 000 the socket was 0777, so any
//! local user could replace the ACL or start a mirror).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::daemon::{Daemon, Ready};
use crate::support::{TestEnv, flexnbd_path};

/// `flexnbd <mode> ... -s <sock> <extra>` started by a shell under umask 000.
fn start_under_umask_000(mode: &str, disk: &Path, sock: &Path, extra: &[&str]) -> Daemon {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(flexnbd_path())
        .args([mode, "-l", "127.0.0.1", "-p", "0", "-f"])
        .arg(disk)
        .arg("-s")
        .arg(sock)
        .args(extra);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let mut d = Daemon::spawn(cmd, vec![Ready::Sock(sock.to_owned())]);
    d.wait_ready();
    d
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_control_socket_is_0600_under_umask_000() {
    for mode in ["serve", "listen"] {
        let env = TestEnv::new();
        let disk = env.image("disk.img", 1 << 20);
        let sock = env.sock_path();
        let mut d = start_under_umask_000(mode, &disk, &sock, &[]);
        assert_eq!(mode_of(&sock), 0o600, "{mode}: control socket mode");
        // The shell really ran it under umask 000: a file it creates is 0666.
        let probe = env.child("probe");
        let made = Command::new("sh")
            .arg("-c")
            .arg("umask 000; : > \"$1\"")
            .arg("sh")
            .arg(&probe)
            .status()
            .expect("sh");
        assert!(made.success());
        assert_eq!(mode_of(&probe), 0o666);
        d.stop();
    }
}

#[test]
fn control_mode_sets_exactly_the_bits_asked_for() {
    for (mode, flag, want) in [
        ("serve", "0660", 0o660),
        ("serve", "0o640", 0o640),
        ("listen", "660", 0o660),
    ] {
        let env = TestEnv::new();
        let disk = env.image("disk.img", 1 << 20);
        let sock = env.sock_path();
        let mut d = start_under_umask_000(mode, &disk, &sock, &["--control-mode", flag]);
        assert_eq!(mode_of(&sock), want, "{mode} --control-mode {flag}");
        d.stop();
    }
}
