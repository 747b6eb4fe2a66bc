//! `TestEnv`: one temporary directory per test, with images and socket paths in it.

use std::fs::File;
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};

/// The longest path a UNIX socket address can hold (`sun_path`, with its NUL).
const SUN_PATH_MAX: usize = 107;

/// A temporary directory owned by one test, removed when dropped.
pub(crate) struct TestEnv {
    dir: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh empty directory under the system's temporary directory.
    #[track_caller]
    pub(crate) fn new() -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("flexnbd-test-")
            .tempdir()
            .expect("cannot create a temporary directory");
        TestEnv { dir }
    }

    /// The directory itself.
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the directory (nothing is created).
    pub(crate) fn child(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A sparse file of `size` bytes that reads as zeroes.
    #[track_caller]
    pub(crate) fn image(&self, name: &str, size: u64) -> PathBuf {
        let path = self.child(name);
        let file = File::create(&path).expect("cannot create image");
        file.set_len(size).expect("cannot size image");
        path
    }

    /// A file holding exactly `bytes`.
    #[track_caller]
    pub(crate) fn image_with(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.child(name);
        File::create(&path)
            .and_then(|mut f| f.write_all(bytes))
            .expect("cannot write image");
        path
    }

    /// The path for a control socket, `ctl.sock` in the directory.
    #[track_caller]
    pub(crate) fn sock_path(&self) -> PathBuf {
        self.sock_path_named("ctl.sock")
    }

    /// The path for another UNIX socket in the directory. Panics if the path is too
    /// long for a socket address (a long `TMPDIR`).
    #[track_caller]
    pub(crate) fn sock_path_named(&self, name: &str) -> PathBuf {
        let path = self.child(name);
        let len = path.as_os_str().len();
        assert!(
            len <= SUN_PATH_MAX,
            "socket path {} is {len} bytes, longer than a UNIX socket allows ({SUN_PATH_MAX}); \
             set TMPDIR to a shorter directory",
            path.display()
        );
        path
    }

    /// The whole contents of `path` (an image after a test wrote to it).
    #[track_caller]
    pub(crate) fn read(&self, path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    /// [`pattern`], for convenience.
    pub(crate) fn pattern(&self, size: usize, seed: u64) -> Vec<u8> {
        pattern(size, seed)
    }

    /// [`free_port`], for convenience.
    pub(crate) fn free_port(&self) -> u16 {
        free_port()
    }
}

/// `size` deterministic pseudo-random bytes: the same `(size, seed)` always gives the
/// same bytes, and different seeds give different bytes (splitmix64).
pub(crate) fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(size);
    out
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process may take it before the daemon binds it; [`super::DaemonBuilder`]
/// retries with a new port when that happens.
#[track_caller]
pub(crate) fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// A TCP port on 127.0.0.1 that refuses connections, and that nobody else
/// can take while the socket returned is kept: bound, never listening.
/// (A port from [`free_port`] may be taken by a server started meanwhile.)
#[track_caller]
pub(crate) fn refusing_port() -> (socket2::Socket, u16) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    socket
        .bind(&std::net::SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
        .expect("cannot bind 127.0.0.1:0");
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the bound address")
        .port();
    (socket, port)
}

/// The bytes allocated on disk for `path`.
#[track_caller]
pub(crate) fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("cannot stat {}: {e}", path.display()))
        .blocks()
        * 512
}

/// `len` bytes of the file at `path`, from `offset`.
#[track_caller]
pub(crate) fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut buf = vec![0u8; usize::try_from(len).expect("range fits in memory")];
    file.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    buf
}
