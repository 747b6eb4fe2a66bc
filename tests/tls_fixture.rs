//! The test PKI of `support::tls` itself: the layout, and what GnuTLS
//! (`certtool`, the library qemu, nbdkit and libnbd use) makes of it.

use std::path::Path;

use crate::support::tls::{OTHER_HOST, Part, Pki, SERVER_NAME};
use crate::support::{require_tool, stdout_ok, text, tool};

#[test]
fn directories_hold_the_gnutls_file_names() {
    let pki = Pki::new();
    let full = pki.full();
    for name in [
        "ca-cert.pem",
        "server-cert.pem",
        "server-key.pem",
        "client-cert.pem",
        "client-key.pem",
    ] {
        let pem = std::fs::read_to_string(full.join(name)).expect(name);
        assert!(pem.starts_with("-----BEGIN "), "{name}: {pem}");
    }
    let ca = pki.ca_only();
    assert_eq!(std::fs::read_dir(&ca).expect("ca dir").count(), 1);
    assert_eq!(
        std::fs::read_to_string(ca.join("ca-cert.pem")).expect("ca"),
        pki.ca_pem()
    );
    // Every leaf is a different key.
    let keys: Vec<String> = [Part::Server, Part::WrongCaServer, Part::ExpiredServer]
        .iter()
        .map(|&p| std::fs::read_to_string(pki.dir(&[p]).join("server-key.pem")).expect("key"))
        .collect();
    assert!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
}

/// `certtool -i` on `file`.
fn certtool_info(file: &Path) -> String {
    let out = stdout_ok(
        &format!("certtool -i {}", file.display()),
        tool("certtool").arg("-i").arg("--infile").arg(file),
    );
    text(&out)
}

/// `certtool --verify` of `cert` against `ca`: whether GnuTLS accepts it, and what it said.
fn certtool_verify(ca: &Path, cert: &Path, purpose: &str, host: Option<&str>) -> (bool, String) {
    let mut cmd = tool("certtool");
    cmd.arg("--verify")
        .arg("--load-ca-certificate")
        .arg(ca)
        .arg("--infile")
        .arg(cert)
        .arg(format!("--verify-purpose={purpose}"));
    if let Some(host) = host {
        cmd.arg(format!("--verify-hostname={host}"));
    }
    let out = cmd.output().expect("certtool");
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn gnutls_reads_every_certificate_with_the_extensions_peers_check() {
    if !require_tool("certtool") {
        return;
    }
    let pki = Pki::new();
    let full = pki.full();
    let ca = certtool_info(&full.join("ca-cert.pem"));
    for needle in [
        "Basic Constraints (critical):",
        "Certificate Authority (CA): TRUE",
        "Certificate signing.",
        "CRL signing.",
    ] {
        assert!(ca.contains(needle), "CA lacks {needle:?}:\n{ca}");
    }
    let server = certtool_info(&full.join("server-cert.pem"));
    for needle in [
        "Digital signature.",
        "Key encipherment.",
        "TLS WWW Server.",
        &format!("DNSname: {SERVER_NAME}"),
        "IPAddress: 127.0.0.1",
        "Certificate Authority (CA): FALSE",
        "Authority Key Identifier",
    ] {
        assert!(
            server.contains(needle),
            "server certificate lacks {needle:?}:\n{server}"
        );
    }
    let client = certtool_info(&full.join("client-cert.pem"));
    for needle in ["Digital signature.", "Key encipherment.", "TLS WWW Client."] {
        assert!(
            client.contains(needle),
            "client certificate lacks {needle:?}:\n{client}"
        );
    }
    for key in ["server-key.pem", "client-key.pem"] {
        stdout_ok(
            &format!("certtool -k {key}"),
            tool("certtool")
                .args(["-k", "--infile"])
                .arg(full.join(key)),
        );
    }
}

#[test]
fn gnutls_accepts_the_valid_leaves_and_refuses_each_bad_one() {
    if !require_tool("certtool") {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca_only().join("ca-cert.pem");
    let server_oid = "1.3.6.1.5.5.7.3.1";
    let client_oid = "1.3.6.1.5.5.7.3.2";
    let check = |part: Part, file: &str, purpose: &str, host: Option<&str>| {
        certtool_verify(&ca, &pki.dir(&[part]).join(file), purpose, host)
    };
    let (ok, said) = check(
        Part::Server,
        "server-cert.pem",
        server_oid,
        Some(SERVER_NAME),
    );
    assert!(ok, "valid server certificate refused:\n{said}");
    let (ok, said) = check(
        Part::Server,
        "server-cert.pem",
        server_oid,
        Some("127.0.0.1"),
    );
    assert!(
        ok,
        "valid server certificate refused for 127.0.0.1:\n{said}"
    );
    let (ok, said) = check(Part::Client, "client-cert.pem", client_oid, None);
    assert!(ok, "valid client certificate refused:\n{said}");
    for (part, file, purpose, host, why) in [
        (
            Part::ExpiredServer,
            "server-cert.pem",
            server_oid,
            Some(SERVER_NAME),
            "expired",
        ),
        (
            Part::ExpiredClient,
            "client-cert.pem",
            client_oid,
            None,
            "expired",
        ),
        (
            Part::WrongCaServer,
            "server-cert.pem",
            server_oid,
            Some(SERVER_NAME),
            "issuer",
        ),
        (
            Part::WrongCaClient,
            "client-cert.pem",
            client_oid,
            None,
            "issuer",
        ),
        (
            Part::OtherHostServer,
            "server-cert.pem",
            server_oid,
            Some(SERVER_NAME),
            "does not match",
        ),
    ] {
        let (ok, said) = check(part, file, purpose, host);
        assert!(!ok, "{part:?} accepted:\n{said}");
        assert!(
            said.contains(why) || said.contains("not trusted"),
            "{part:?}: {said}"
        );
    }
    let (ok, said) = check(
        Part::OtherHostServer,
        "server-cert.pem",
        server_oid,
        Some(OTHER_HOST),
    );
    assert!(
        ok,
        "the other host's certificate refused for its own name:\n{said}"
    );
}
