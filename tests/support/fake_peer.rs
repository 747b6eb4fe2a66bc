//! Fake NBD peers on 127.0.0.1: a test thread that accepts connections and
//! runs a script on each, standing in for an upstream of the proxy or for a
//! migration's destination.
//!
//! ```ignore
//! // A destination that says hello, then closes; every retry is closed at once.
//! let fake = FakePeer::first_only(|mut s| send_hello(&mut s, 4096, 0));
//! // ... point a mirror at fake.addr() ...
//! fake.first_result(Duration::from_secs(15));
//! assert!(fake.reconnected_within(Duration::from_secs(10)).is_some(), "no retry");
//! ```
//!
//! Every connection's script runs on a thread of its own, with read and
//! write timeouts of [`PEER_IO_TIMEOUT`]; a script that panics fails the test
//! when its result is asked for. The peer stops accepting when dropped, after
//! [`MAX_CONNECTIONS`] connections, or after [`LIFETIME`].

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wire::try_accept_within;

/// The read and write timeouts on every connection a fake peer accepts.
pub(crate) const PEER_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How many connections a fake peer accepts at most.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// How long a fake peer accepts connections at most.
pub(crate) const LIFETIME: Duration = Duration::from_secs(120);
/// How often the accepting thread looks at its stop flag.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// A fake peer: a listener whose n-th connection (from 0) is handed to
/// `script(n, stream)`.
pub(crate) struct FakePeer<R> {
    addr: SocketAddr,
    /// Each connection's number and when it was accepted.
    accepted: mpsc::Receiver<(usize, Instant)>,
    /// Each script's outcome, in the order they finish.
    results: mpsc::Receiver<(usize, std::thread::Result<R>)>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl<R: Send + 'static> FakePeer<R> {
    /// Runs `script(n, stream)` on the n-th connection.
    pub(crate) fn start(
        script: impl Fn(usize, TcpStream) -> R + Send + Sync + 'static,
    ) -> FakePeer<R> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the fake peer's address");
        let (accepted_tx, accepted) = mpsc::channel();
        let (results_tx, results) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let script = Arc::new(script);
        let accept = std::thread::spawn(move || {
            let deadline = Instant::now() + LIFETIME;
            let mut n = 0;
            while !stopping.load(Ordering::SeqCst)
                && Instant::now() < deadline
                && n < MAX_CONNECTIONS
            {
                let Some(stream) = try_accept_within(&listener, STOP_CHECK) else {
                    continue;
                };
                let _ = accepted_tx.send((n, Instant::now()));
                stream
                    .set_read_timeout(Some(PEER_IO_TIMEOUT))
                    .and_then(|()| stream.set_write_timeout(Some(PEER_IO_TIMEOUT)))
                    .expect("timeouts on a fake peer's connection");
                let script = script.clone();
                let results_tx = results_tx.clone();
                std::thread::spawn(move || {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        script(n, stream)
                    }));
                    let _ = results_tx.send((n, r));
                });
                n += 1;
            }
        });
        FakePeer {
            addr,
            accepted,
            results,
            stop,
            accept: Some(accept),
        }
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// When connection `n` was accepted, if it was within `within`.
    ///
    /// Connections numbered below `n` that were not asked for are passed over.
    pub(crate) fn try_accepted(&self, n: usize, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.accepted.recv_timeout(left) {
                Ok((i, at)) if i == n => return Some(at),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// When connection `n` was accepted; panics if not within `within`.
    #[track_caller]
    pub(crate) fn accepted(&self, n: usize, within: Duration) -> Instant {
        self.try_accepted(n, within)
            .unwrap_or_else(|| panic!("the fake peer got no connection {n} within {within:?}"))
    }

    /// The result of connection `n`'s script, which must have been accepted and
    /// have finished within `within`; a panic in the script is raised here.
    #[track_caller]
    pub(crate) fn result(&self, n: usize, within: Duration) -> R {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.results.recv_timeout(left) {
                Ok((i, r)) if i == n => match r {
                    Ok(r) => return r,
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Ok(_) => {}
                Err(_) => panic!(
                    "the fake peer's connection {n} was not made, or its script did not finish, \
                     within {within:?}"
                ),
            }
        }
    }
}

impl<R: Send + 'static> FakePeer<Option<R>> {
    /// Runs `script` on the first connection; every later one (a retry) is
    /// closed at once, before any hello, as flexnbd-c's fake destinations do.
    pub(crate) fn first_only(script: impl FnOnce(TcpStream) -> R + Send + 'static) -> Self {
        let script = Mutex::new(Some(script));
        FakePeer::start(move |_, stream| {
            let first = script.lock().unwrap_or_else(PoisonError::into_inner).take();
            first.map(|script| script(stream))
        })
    }

    /// The first connection's result (see [`FakePeer::result`]).
    #[track_caller]
    pub(crate) fn first_result(&self, within: Duration) -> R {
        self.result(0, within)
            .expect("the first connection runs the script")
    }

    /// When the peer was connected to again, if it was within `within`.
    pub(crate) fn reconnected_within(&self, within: Duration) -> Option<Instant> {
        self.try_accepted(1, within)
    }
}

impl<R> Drop for FakePeer<R> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
