//! TLS credentials for the tests, made in-process with `rcgen` (nothing to
//! install): a CA, and directories in the GnuTLS layout that flexnbd,
//! nbdkit, qemu and libnbd all read (`--tls-certificates DIR`,
//! `tls-creds-x509,dir=DIR`, `nbds://...?tls-certificates=DIR`).
//!
//! ```ignore
//! let pki = Pki::new();
//! let server = pki.dir(&[Part::Ca, Part::Server]);
//! let client = pki.dir(&[Part::Ca, Part::Client]);
//! ```
//!
//! GnuTLS-based peers are strict about extensions, so every certificate has
//! what they check: the CAs `basicConstraints CA:TRUE` and `keyUsage
//! keyCertSign, cRLSign`; the leaves `keyUsage digitalSignature,
//! keyEncipherment` and `extendedKeyUsage serverAuth` or `clientAuth`, with
//! an authority key identifier. Keys are ECDSA P-256 (PKCS#8 PEM), which
//! `ring` can generate and every peer reads.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, date_time_ymd,
};

/// The host name in every valid server certificate (with the IP address
/// 127.0.0.1 beside it).
pub(crate) const SERVER_NAME: &str = "localhost";
/// The only name in [`Part::OtherHostServer`]'s certificate.
pub(crate) const OTHER_HOST: &str = "other.example.net";

/// One file or pair of files of a credentials directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// `ca-cert.pem`: the test CA.
    Ca,
    /// `ca-cert.pem`: the second, unrelated CA.
    OtherCa,
    /// `server-cert.pem` + `server-key.pem`: valid, for `localhost` and
    /// 127.0.0.1, from the test CA.
    Server,
    /// `client-cert.pem` + `client-key.pem`: valid, from the test CA.
    Client,
    /// `server-cert.pem` + key, from the test CA, expired in 2021.
    ExpiredServer,
    /// `client-cert.pem` + key, from the test CA, expired in 2021.
    ExpiredClient,
    /// `server-cert.pem` + key for `localhost`, from the second CA.
    WrongCaServer,
    /// `client-cert.pem` + key, from the second CA.
    WrongCaClient,
    /// `server-cert.pem` + key, from the test CA, for [`OTHER_HOST`] only.
    OtherHostServer,
}

/// What a [`Part`] holds: the PEM texts and the file names they go to.
struct Pem {
    cert_file: &'static str,
    key_file: &'static str,
    cert: String,
    key: String,
}

/// A CA that signs leaves.
struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// Two CAs and every leaf of [`Part`], in a temporary directory that holds
/// the credentials directories made by [`Pki::dir`].
pub(crate) struct Pki {
    root: tempfile::TempDir,
    ca: Ca,
    other_ca: Ca,
    parts: Vec<(Part, Pem)>,
    made: std::cell::Cell<usize>,
}

impl Pki {
    /// Generates the CAs and every leaf (a few milliseconds).
    pub(crate) fn new() -> Pki {
        let ca = make_ca("flexnbd test CA");
        let other_ca = make_ca("flexnbd other CA");
        let (valid, expired) = (false, true);
        let server_names = [SERVER_NAME, "127.0.0.1"];
        let parts = vec![
            (Part::Server, leaf(&ca, Role::Server, &server_names, valid)),
            (Part::Client, leaf(&ca, Role::Client, &[], valid)),
            (
                Part::ExpiredServer,
                leaf(&ca, Role::Server, &server_names, expired),
            ),
            (Part::ExpiredClient, leaf(&ca, Role::Client, &[], expired)),
            (
                Part::WrongCaServer,
                leaf(&other_ca, Role::Server, &server_names, valid),
            ),
            (
                Part::WrongCaClient,
                leaf(&other_ca, Role::Client, &[], valid),
            ),
            (
                Part::OtherHostServer,
                leaf(&ca, Role::Server, &[OTHER_HOST], valid),
            ),
        ];
        Pki {
            root: tempfile::Builder::new()
                .prefix("flexnbd-tls-")
                .tempdir()
                .expect("cannot create a directory for the test certificates"),
            ca,
            other_ca,
            parts,
            made: std::cell::Cell::new(0),
        }
    }

    /// A new credentials directory holding `parts` (later parts overwrite
    /// files of earlier ones).
    #[track_caller]
    pub(crate) fn dir(&self, parts: &[Part]) -> PathBuf {
        let n = self.made.get();
        self.made.set(n + 1);
        let dir = self.root.path().join(format!("creds{n}"));
        std::fs::create_dir(&dir).expect("cannot create a credentials directory");
        self.write(&dir, parts);
        dir
    }

    /// Writes `parts` into `dir` (each file replaced by a rename, so a
    /// server reading the directory meanwhile sees the old or the new file,
    /// never half of one).
    #[track_caller]
    pub(crate) fn write(&self, dir: &Path, parts: &[Part]) {
        for &part in parts {
            match part {
                Part::Ca => write_file(dir, "ca-cert.pem", &self.ca.cert_pem),
                Part::OtherCa => write_file(dir, "ca-cert.pem", &self.other_ca.cert_pem),
                _ => {
                    let pem = self
                        .parts
                        .iter()
                        .find_map(|(p, pem)| (*p == part).then_some(pem))
                        .expect("every leaf is generated in Pki::new");
                    write_file(dir, pem.cert_file, &pem.cert);
                    write_file(dir, pem.key_file, &pem.key);
                }
            }
        }
    }

    /// The usual server directory: CA (to verify clients), server certificate and key.
    pub(crate) fn server(&self) -> PathBuf {
        self.dir(&[Part::Ca, Part::Server])
    }

    /// The usual client directory: CA (to verify the server), client certificate and key.
    pub(crate) fn client(&self) -> PathBuf {
        self.dir(&[Part::Ca, Part::Client])
    }

    /// A client directory without a certificate of its own: the CA only.
    pub(crate) fn ca_only(&self) -> PathBuf {
        self.dir(&[Part::Ca])
    }

    /// Everything valid: CA, server and client certificates (a process that
    /// serves and also connects out: a migration source, a proxy).
    pub(crate) fn full(&self) -> PathBuf {
        self.dir(&[Part::Ca, Part::Server, Part::Client])
    }

    /// The test CA's certificate, PEM.
    pub(crate) fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }
}

#[track_caller]
fn write_file(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, dir.join(name))
        .unwrap_or_else(|e| panic!("cannot rename {} into place: {e}", tmp.display()));
}

#[track_caller]
fn make_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "flexnbd tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
    let key = KeyPair::generate().expect("a CA key");
    let cert = params.self_signed(&key).expect("the CA certificate");
    Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

#[derive(Clone, Copy)]
enum Role {
    Server,
    Client,
}

#[track_caller]
fn leaf(ca: &Ca, role: Role, names: &[&str], expired: bool) -> Pem {
    let names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf parameters");
    let (cn, eku, cert_file, key_file) = match role {
        Role::Server => (
            names.first().cloned().unwrap_or_default(),
            ExtendedKeyUsagePurpose::ServerAuth,
            "server-cert.pem",
            "server-key.pem",
        ),
        Role::Client => (
            "flexnbd test client".to_owned(),
            ExtendedKeyUsagePurpose::ClientAuth,
            "client-cert.pem",
            "client-key.pem",
        ),
    };
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "flexnbd tests");
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = if expired {
        (date_time_ymd(2019, 1, 1), date_time_ymd(2021, 1, 1))
    } else {
        (date_time_ymd(2000, 1, 1), date_time_ymd(2099, 12, 31))
    };
    let key = KeyPair::generate().expect("a leaf key");
    let cert = params
        .signed_by(&key, &ca.issuer)
        .expect("a leaf certificate");
    Pem {
        cert_file,
        key_file,
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}
