//! `Daemon`: a long-running server process owned by one test.
//!
//! [`Daemon::serve`] builds `flexnbd serve -l 127.0.0.1 -p PORT -f FILE [-s SOCK] ARGS...`,
//! starts it and waits until it is ready:
//!
//! ```ignore
//! let env = TestEnv::new();
//! let disk = env.image("disk.img", 1 << 20);
//! let mut d = Daemon::serve(&disk).sock(env.sock_path()).arg("--oldstyle").start();
//! // ... talk to d.uri() / d.addr() / d.sock() ...
//! assert!(d.stop().success());
//! ```
//!
//! Ports: by default the builder picks a free port and, if the daemon exits
//! because another process took the port meanwhile, retries with a new one.
//! `.port(0)` instead lets the server pick and reads the port from its
//! `Bound to <ip> port <p>` log line (`-v` is added for that).
//!
//! Readiness is a control-socket connection when `--sock` is given (the
//! socket appears only after the NBD listener is up), otherwise a TCP
//! connection to the NBD port, always within [`READY_TIMEOUT`]. Every wait
//! fails with the daemon's stderr. Dropping a `Daemon` kills it (SIGKILL, by
//! PID) and reaps it, and prints its stderr if the test is panicking.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(crate) use rustix::process::Signal;

use super::{Style, TestEnv, flexnbd_std, free_port};

/// How long a daemon may take to become ready.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Daemon::stop`] waits for the daemon to exit after SIGTERM.
pub(crate) const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the waits poll.
const POLL: Duration = Duration::from_millis(10);
/// How many free ports [`DaemonBuilder::try_start`] tries when the port is taken under it.
const START_ATTEMPTS: usize = 5;

/// Something [`Daemon::wait_ready`] waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ready {
    /// A UNIX socket at this path accepts a connection. A stale socket file left
    /// from an earlier run refuses connections, so it does not count.
    Sock(PathBuf),
    /// A TCP connection to this address succeeds.
    Tcp(SocketAddr),
    /// The daemon has logged `Bound to <ip> port <p>` (needs `-v`); the address
    /// becomes [`Daemon::addr`].
    LoggedPort,
}

/// Why a daemon did not become ready.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The process ended first.
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// Everything it wrote to stderr.
        stderr: String,
    },
    /// The deadline passed; the process was killed.
    TimedOut {
        /// What was still missing.
        waiting_for: String,
        /// Everything it wrote to stderr.
        stderr: String,
    },
}

impl StartError {
    /// The daemon's stderr.
    pub(crate) fn stderr(&self) -> &str {
        match self {
            StartError::Exited { stderr, .. } | StartError::TimedOut { stderr, .. } => stderr,
        }
    }

    /// Whether the daemon exited because its port was taken.
    pub(crate) fn is_addr_in_use(&self) -> bool {
        matches!(self, StartError::Exited { .. }) && is_addr_in_use(self.stderr())
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Exited { status, stderr } => {
                write!(
                    f,
                    "daemon exited before it was ready ({status}); stderr:\n{stderr}"
                )
            }
            StartError::TimedOut {
                waiting_for,
                stderr,
            } => write!(
                f,
                "daemon not ready within {READY_TIMEOUT:?} (waiting for {waiting_for}); stderr:\n{stderr}"
            ),
        }
    }
}

/// Whether an error message is about a port already bound by someone else.
pub(crate) fn is_addr_in_use(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("address already in use") || s.contains("os error 98") || s.contains("eaddrinuse")
}

/// Finds the port in a `Bound to <ip> port <p>` log line.
pub(crate) fn logged_addr(stderr: &str) -> Option<SocketAddr> {
    stderr.lines().find_map(|line| {
        let rest = &line[line.find("Bound to ")? + "Bound to ".len()..];
        let mut words = rest.split_whitespace();
        let ip = words.next()?;
        let ip: IpAddr = ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .ok()?;
        (words.next()? == "port").then_some(())?;
        let port = words.next()?.trim_end_matches(['.', ',']).parse().ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

/// A running server process; killed and reaped on drop.
pub(crate) struct Daemon {
    /// For messages: the program and subcommand.
    name: String,
    child: Child,
    /// Set once the child has been reaped; its PID may then belong to someone else.
    exited: Option<ExitStatus>,
    /// Holds `stdout.log` and `stderr.log`.
    logs: tempfile::TempDir,
    ready: Vec<Ready>,
    addr: Option<SocketAddr>,
    sock: Option<PathBuf>,
}

impl Daemon {
    /// A builder for `flexnbd serve` on `file`.
    pub(crate) fn serve(file: impl AsRef<Path>) -> DaemonBuilder {
        DaemonBuilder::new("serve", file)
    }

    /// `flexnbd serve` on `disk`, started, with `env`'s control socket
    /// ([`TestEnv::sock_path`]), in `style`, plus `args`.
    #[track_caller]
    pub(crate) fn serve_in(env: &TestEnv, disk: &Path, style: Style, args: &[&str]) -> Daemon {
        Daemon::serve(disk)
            .sock(env.sock_path())
            .args(style.args())
            .args(args)
            .start()
    }

    /// Spawns `cmd`, a server listening on `-p 0 -v` (a proxy, say), and waits
    /// until it has logged the port it bound.
    #[track_caller]
    pub(crate) fn start_logged_port(cmd: Command) -> Daemon {
        let mut daemon = Daemon::spawn(cmd, vec![Ready::LoggedPort]);
        daemon.wait_ready();
        daemon
    }

    /// Spawns `cmd` (stdin from `/dev/null`, stdout and stderr to files) without
    /// waiting; [`Daemon::wait_ready`] then waits for every condition in `ready`.
    #[track_caller]
    pub(crate) fn spawn(mut cmd: Command, ready: Vec<Ready>) -> Daemon {
        let program = Path::new(cmd.get_program());
        let name = std::iter::once(program.file_name().unwrap_or(program.as_os_str()))
            .chain(cmd.get_args().take(1))
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        let logs = tempfile::Builder::new()
            .prefix("flexnbd-daemon-")
            .tempdir()
            .expect("cannot create a log directory");
        let out = File::create(logs.path().join("stdout.log")).expect("cannot create stdout.log");
        let err = File::create(logs.path().join("stderr.log")).expect("cannot create stderr.log");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let sock = ready.iter().find_map(|r| match r {
            Ready::Sock(p) => Some(p.clone()),
            _ => None,
        });
        let addr = ready.iter().find_map(|r| match r {
            Ready::Tcp(a) => Some(*a),
            _ => None,
        });
        Daemon {
            name,
            child,
            exited: None,
            logs,
            ready,
            addr,
            sock,
        }
    }

    /// Waits until every readiness condition holds; panics with the daemon's stderr if it
    /// exits first or [`READY_TIMEOUT`] passes.
    #[track_caller]
    pub(crate) fn wait_ready(&mut self) {
        if let Err(e) = self.try_wait_ready(READY_TIMEOUT) {
            panic!("{}: {e}", self.name);
        }
    }

    /// Waits until every readiness condition holds. On timeout the daemon is killed.
    pub(crate) fn try_wait_ready(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        let mut pending = self.ready.clone();
        loop {
            if let Some(status) = self.poll_exit() {
                return Err(StartError::Exited {
                    status,
                    stderr: self.stderr(),
                });
            }
            pending.retain(|r| !self.check(r));
            if pending.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(StartError::TimedOut {
                    waiting_for: format!("{pending:?}"),
                    stderr: self.stderr(),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Whether one readiness condition holds now.
    fn check(&mut self, ready: &Ready) -> bool {
        match ready {
            Ready::Sock(path) => match UnixStream::connect(path) {
                Ok(mut s) => {
                    // Make it a well-formed request rather than an abandoned
                    // connection, so the server has nothing to complain about.
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.write_all(b"status\n\n");
                    let _ = s.read_to_end(&mut Vec::new());
                    true
                }
                Err(_) => false,
            },
            Ready::Tcp(addr) => TcpStream::connect_timeout(addr, Duration::from_secs(1)).is_ok(),
            Ready::LoggedPort => match logged_addr(&self.stderr()) {
                Some(addr) => {
                    self.addr = Some(SocketAddr::new(connectable(addr.ip()), addr.port()));
                    true
                }
                None => false,
            },
        }
    }

    /// The daemon's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The NBD address: the one it was started on, or the one it logged.
    #[track_caller]
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| panic!("{}: NBD address not known", self.name))
    }

    /// The NBD port.
    #[track_caller]
    pub(crate) fn port(&self) -> u16 {
        self.addr().port()
    }

    /// `nbd://127.0.0.1:PORT`, for qemu and libnbd.
    #[track_caller]
    pub(crate) fn uri(&self) -> String {
        match self.addr() {
            SocketAddr::V4(a) => format!("nbd://{}:{}", a.ip(), a.port()),
            SocketAddr::V6(a) => format!("nbd://[{}]:{}", a.ip(), a.port()),
        }
    }

    /// `-l ADDR -p PORT`, for `flexnbd read` and `write`.
    #[track_caller]
    pub(crate) fn addr_args(&self) -> [String; 4] {
        let addr = self.addr();
        [
            "-l".to_owned(),
            addr.ip().to_string(),
            "-p".to_owned(),
            addr.port().to_string(),
        ]
    }

    /// The control socket path.
    #[track_caller]
    pub(crate) fn sock(&self) -> &Path {
        self.sock
            .as_deref()
            .unwrap_or_else(|| panic!("{}: started without a control socket", self.name))
    }

    /// Everything the daemon has written to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.log("stderr.log")
    }

    /// Everything the daemon has written to stdout so far (a server writes nothing).
    pub(crate) fn stdout(&self) -> String {
        self.log("stdout.log")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read(self.logs.path().join(name))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Sends `sig` (e.g. `Signal::TERM`, `Signal::INT`) to the daemon.
    #[track_caller]
    pub(crate) fn signal(&mut self, sig: Signal) {
        if let Some(status) = self.poll_exit() {
            panic!(
                "{}: cannot signal, it already exited ({status}); stderr:\n{}",
                self.name,
                self.stderr()
            );
        }
        // Not reaped yet, so the PID is still ours (at worst a zombie).
        rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), sig)
            .unwrap_or_else(|e| panic!("{}: kill({sig:?}) failed: {e}", self.name));
    }

    /// Whether the process is still running (reaps it if it has exited).
    pub(crate) fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Waits up to `timeout` for the daemon to exit.
    pub(crate) fn try_wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits up to `timeout` for the daemon to exit; panics with its stderr if it does not.
    #[track_caller]
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        self.try_wait_exit(timeout).unwrap_or_else(|| {
            panic!(
                "{}: still running after {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// SIGTERM, then [`Daemon::wait_exit`] with [`EXIT_TIMEOUT`].
    #[track_caller]
    pub(crate) fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.wait_exit(EXIT_TIMEOUT)
    }

    /// The exit status if the process has ended (reaping it).
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// SIGKILL and reap, unless already reaped.
    fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "--- {} (pid {}) stderr ---\n{}--- end of stderr ---",
                self.name,
                self.child.id(),
                self.stderr()
            );
        }
    }
}

/// A fresh [`TestEnv`] holding a sparse `disk.img` of `size` bytes, served
/// as [`Daemon::serve_in`] does. Keep the `TestEnv` (as `_env` if unused):
/// dropping it removes the directory.
#[track_caller]
pub(crate) fn serve_image(size: u64, style: Style, args: &[&str]) -> (TestEnv, PathBuf, Daemon) {
    let env = TestEnv::new();
    let disk = env.image("disk.img", size);
    let d = Daemon::serve_in(&env, &disk, style, args);
    (env, disk, d)
}

/// How the builder chooses the NBD port.
#[derive(Debug, Clone, Copy)]
enum PortChoice {
    /// Pick a free port; retry with another if it is taken meanwhile.
    Free,
    /// Exactly this port; no retry.
    Fixed(u16),
    /// `-p 0`; the port is read from the `Bound to` log line.
    Logged,
}

/// Builds and starts a `flexnbd` server subcommand.
#[must_use]
pub(crate) struct DaemonBuilder {
    mode: String,
    file: PathBuf,
    addr: IpAddr,
    port: PortChoice,
    sock: Option<PathBuf>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
}

impl DaemonBuilder {
    /// `flexnbd <mode> -l 127.0.0.1 -p <free port> -f <file>`.
    pub(crate) fn new(mode: &str, file: impl AsRef<Path>) -> DaemonBuilder {
        DaemonBuilder {
            mode: mode.to_owned(),
            file: file.as_ref().to_owned(),
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: PortChoice::Free,
            sock: None,
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// Listen on `addr` instead of 127.0.0.1.
    pub(crate) fn addr(mut self, addr: IpAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Listen on exactly `port`; 0 lets the server choose and reads the port from its
    /// log (adding `-v`).
    pub(crate) fn port(mut self, port: u16) -> Self {
        self.port = match port {
            0 => PortChoice::Logged,
            p => PortChoice::Fixed(p),
        };
        self
    }

    /// `-s <path>`; readiness then waits for the control socket.
    pub(crate) fn sock(mut self, path: impl AsRef<Path>) -> Self {
        self.sock = Some(path.as_ref().to_owned());
        self
    }

    /// One more argument after the standard ones (an option or an ACL entry).
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// More arguments after the standard ones.
    pub(crate) fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets the environment variable `key` (e.g. `FLEXNBD_MS_REQUEST_LIMIT_SECS`).
    pub(crate) fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// The command line for `port` (for messages, or to spawn by hand).
    pub(crate) fn command(&self, port: u16) -> Command {
        let mut cmd = flexnbd_std();
        cmd.arg(&self.mode)
            .arg("-l")
            .arg(self.addr.to_string())
            .arg("-p")
            .arg(port.to_string())
            .arg("-f")
            .arg(&self.file);
        if let Some(sock) = &self.sock {
            cmd.arg("-s").arg(sock);
        }
        if matches!(self.port, PortChoice::Logged) && !self.has_verbose() {
            cmd.arg("-v");
        }
        cmd.args(&self.args);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd
    }

    fn has_verbose(&self) -> bool {
        self.args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == "--verbose" || (a.starts_with("-v") && a[1..].chars().all(|c| c == 'v'))
        })
    }

    /// Starts the daemon and waits until it is ready; panics with its stderr otherwise.
    #[track_caller]
    pub(crate) fn start(self) -> Daemon {
        let mode = self.mode.clone();
        self.try_start()
            .unwrap_or_else(|e| panic!("flexnbd {mode}: {e}"))
    }

    /// Starts the daemon and waits until it is ready.
    ///
    /// With a port picked by the builder, a daemon that exits because the port was
    /// taken meanwhile is retried on a new port, a few times.
    pub(crate) fn try_start(self) -> Result<Daemon, StartError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = match self.port {
                PortChoice::Free => free_port(),
                PortChoice::Fixed(p) => p,
                PortChoice::Logged => 0,
            };
            let mut ready = Vec::new();
            match self.port {
                PortChoice::Logged => ready.push(Ready::LoggedPort),
                // The control socket appears only once the NBD listener is up, so
                // without one we must probe the NBD port itself.
                _ if self.sock.is_none() => {
                    ready.push(Ready::Tcp(SocketAddr::new(connectable(self.addr), port)));
                }
                _ => {}
            }
            if let Some(sock) = &self.sock {
                ready.push(Ready::Sock(sock.clone()));
            }
            let mut daemon = Daemon::spawn(self.command(port), ready);
            if port != 0 {
                daemon.addr = Some(SocketAddr::new(connectable(self.addr), port));
            }
            match daemon.try_wait_ready(READY_TIMEOUT) {
                Ok(()) => return Ok(daemon),
                Err(e)
                    if e.is_addr_in_use()
                        && matches!(self.port, PortChoice::Free)
                        && attempt < START_ATTEMPTS =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The address to connect to for a server listening on `addr` (the wildcard
/// addresses mean loopback).
fn connectable(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        a => a,
    }
}

/// Spawns `cmd_for(port)` on free ports until one is not taken meanwhile,
/// and waits until it is ready: its control socket `sock` accepts a
/// connection if given, else the port does. Its [`Daemon::addr`] is
/// 127.0.0.1 and the port.
///
/// For servers the builder cannot describe: other programs (nbdkit, the C
/// flexnbd) or an environment of their own.
#[track_caller]
pub(crate) fn start_on_free_port(sock: Option<&Path>, cmd_for: impl Fn(u16) -> Command) -> Daemon {
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let ready = match sock {
            Some(sock) => Ready::Sock(sock.to_owned()),
            None => Ready::Tcp(addr),
        };
        let mut daemon = Daemon::spawn(cmd_for(port), vec![ready]);
        daemon.addr = Some(addr);
        match daemon.try_wait_ready(READY_TIMEOUT) {
            Ok(()) => return daemon,
            Err(e) if e.is_addr_in_use() => continue,
            Err(e) => panic!("{}: {e}", daemon.name),
        }
    }
    panic!("no free port after {START_ATTEMPTS} attempts");
}

/// [`start_on_free_port`] waiting for the control socket `sock`; the daemon
/// and its port.
#[track_caller]
pub(crate) fn spawn_on_free_port(sock: &Path, cmd_for: impl Fn(u16) -> Command) -> (Daemon, u16) {
    let daemon = start_on_free_port(Some(sock), cmd_for);
    let port = daemon.port();
    (daemon, port)
}

/// `flexnbd proxy -l 127.0.0.1 -p 0 -v -C 127.0.0.1 -P UPSTREAM_PORT EXTRA...`:
/// a proxy to 127.0.0.1 that picks its own port; start it with
/// [`Daemon::start_logged_port`].
pub(crate) fn proxy_command(upstream_port: u16, extra: &[&str]) -> Command {
    let mut cmd = flexnbd_std();
    cmd.args(["proxy", "-l", "127.0.0.1", "-p", "0", "-v"])
        .args(["-C", "127.0.0.1", "-P"])
        .arg(upstream_port.to_string())
        .args(extra);
    cmd
}
