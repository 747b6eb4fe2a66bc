//! What operators who know qemu-nbd and nbdkit reach for: export names
//! (`-x`), seen through libnbd and qemu.

use crate::support::{DaemonBuilder, TestEnv, flexnbd, require_tool, text, tool};

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

    let list = tool("nbdinfo")
        .arg("--list")
        .arg(&base)
        .output()
        .expect("nbdinfo");
    assert!(list.status.success(), "{}", text(&list.stderr));
    assert!(
        text(&list.stdout).contains("export=\"disk0\""),
        "{}",
        text(&list.stdout)
    );

    let named = tool("nbdinfo")
        .arg("--size")
        .arg(format!("{base}/disk0"))
        .output()
        .expect("nbdinfo");
    assert!(named.status.success(), "{}", text(&named.stderr));
    assert_eq!(text(&named.stdout).trim(), "1048576");

    let other = tool("nbdinfo")
        .arg("--size")
        .arg(format!("{base}/other"))
        .output()
        .expect("nbdinfo");
    assert!(!other.status.success(), "another name was served");
    assert!(
        text(&other.stderr).contains("other"),
        "{}",
        text(&other.stderr)
    );

    // qemu asks by NBD_OPT_GO with the name.
    let qemu = tool("qemu-img")
        .args(["info", "--output=json"])
        .arg(format!("{base}/disk0"))
        .output()
        .expect("qemu-img");
    assert!(qemu.status.success(), "{}", text(&qemu.stderr));
    assert!(
        text(&qemu.stdout).contains("\"virtual-size\": 1048576"),
        "{}",
        text(&qemu.stdout)
    );
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
