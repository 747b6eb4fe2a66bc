//! The proxy's request handles on the upstream wire: the client's own, on
//! the first send and on a resend after a reconnection (as flexnbd-c's
//! proxy sends them), and what happens when a client reuses a handle that
//! is still in flight (`EINVAL`, and nothing sent upstream).
//!
//! The proxy runs in-process (`Proxy::run` on a thread, stopped by
//! `Proxy::shutdown`); the upstream is a fake on a thread of the test that
//! records the requests it receives.

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use flexnbd::nbd::Listener;
use flexnbd::proto::types::{Cmd, Errno};
use flexnbd::proto::wire::Request;
use flexnbd::proxy::{Proxy, ProxyConfig};

use crate::support::wire::{
    Client, Handshake, IO_TIMEOUT, accept_within, closed_within, read_request, reply_bytes,
    send_hello,
};

/// The upstream size the fakes announce.
const SIZE: u64 = 16 * 1024;
/// flexnbd-c's transmission flags: HAS_FLAGS | SEND_FLUSH | SEND_FUA.
const FLAGS: u32 = 13;

/// A proxy running on a thread of the test, stopped on drop.
struct InProcessProxy {
    proxy: Arc<Proxy>,
    addr: SocketAddr,
    run: Option<JoinHandle<std::io::Result<()>>>,
}

impl InProcessProxy {
    /// A newstyle proxy to `upstream` (whose fake must be accepting), listening on a port of its own.
    #[track_caller]
    fn start(upstream: SocketAddr) -> InProcessProxy {
        let proxy = Proxy::connect(ProxyConfig {
            upstream: upstream.into(),
            export_name: String::new(),
            bind: None,
            cache: None,
            oldstyle: false,
            timeout: IO_TIMEOUT,
            tls: None,
            upstream_tls: None,
        })
        .expect("the proxy's first upstream connection");
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let running = proxy.clone();
        let run = std::thread::Builder::new()
            .name("proxy".into())
            .spawn(move || running.run(Listener::from(listener)))
            .unwrap();
        InProcessProxy {
            proxy,
            addr,
            run: Some(run),
        }
    }
}

impl Drop for InProcessProxy {
    fn drop(&mut self) {
        self.proxy.shutdown();
        if let Some(run) = self.run.take() {
            let result = run.join();
            if !std::thread::panicking() {
                result.unwrap().unwrap();
            }
        }
    }
}

/// A fake upstream listening on a port of its own.
fn fake_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// The proxy's next upstream connection, greeted with an old-style hello.
#[track_caller]
fn next_connection(listener: &TcpListener, what: &str) -> TcpStream {
    let mut s = accept_within(listener, Duration::from_secs(30), what);
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    send_hello(&mut s, SIZE, FLAGS);
    s
}

/// Answers `req` with success, and zeroes for a READ.
#[track_caller]
fn answer(s: &mut TcpStream, req: &Request) {
    s.write_all(&reply_bytes(Errno::OK, req.handle)).unwrap();
    if req.cmd == Cmd::READ {
        s.write_all(&vec![0; req.len as usize]).unwrap();
    }
}

/// Reads the rest of a successful READ's reply: `len` bytes.
#[track_caller]
fn read_data(c: &mut Client, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    c.s.read_exact(&mut data).unwrap();
    data
}

#[test]
fn the_upstream_sees_the_clients_handles_on_first_send_and_resend() {
    const HANDLES: [u64; 4] = [0x0102_0304_0506_0708, u64::MAX, 0, 1 << 63];
    let (listener, upstream) = fake_listener();
    // The first connection takes three requests and closes without an
    // answer; the second gets them resent, answers them and one more.
    let fake = std::thread::spawn(move || {
        let mut first = next_connection(&listener, "the proxy's first connection");
        let sent: Vec<Request> = (0..3).map(|_| read_request(&mut first).req).collect();
        drop(first);
        let mut second = next_connection(&listener, "the proxy's reconnection");
        let mut resent: Vec<Request> = (0..3).map(|_| read_request(&mut second).req).collect();
        for req in &resent {
            answer(&mut second, req);
        }
        let last = read_request(&mut second).req;
        answer(&mut second, &last);
        resent.push(last);
        assert!(
            closed_within(&mut second, IO_TIMEOUT),
            "the proxy kept its upstream open"
        );
        (sent, resent)
    });
    let proxy = InProcessProxy::start(upstream);
    let mut c = Client::connect(proxy.addr, Handshake::ExportName);
    c.request(Cmd::READ, HANDLES[0], 0, 512);
    c.write(HANDLES[1], 512, &[1; 512]);
    c.request(Cmd::FLUSH, HANDLES[2], 0, 0);
    let answered: Vec<u64> = (0..3)
        .map(|_| {
            let r = c.reply();
            assert_eq!(r.error, Errno::OK);
            if r.handle == HANDLES[0] {
                assert_eq!(read_data(&mut c, 512), vec![0; 512]);
            }
            r.handle
        })
        .collect();
    assert_eq!(
        answered,
        HANDLES[..3],
        "the replies, in the order the upstream sent them"
    );
    assert_eq!(c.read(HANDLES[3], 1024, 512), vec![0; 512]);
    c.disconnect();
    drop(proxy);
    let (sent, resent) = fake.join().unwrap();
    let handles = |reqs: &[Request]| reqs.iter().map(|r| r.handle).collect::<Vec<_>>();
    assert_eq!(handles(&sent), HANDLES[..3], "first send");
    assert_eq!(handles(&resent), HANDLES, "resend, then a new request");
    assert_eq!(sent, resent[..3], "the resent requests differ");
}

#[test]
fn a_handle_reused_while_in_flight_is_refused_and_not_sent_upstream() {
    let (listener, upstream) = fake_listener();
    let (got_first, first_arrived) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    // Holds the first request unanswered until the test says so, then
    // answers and records everything else it receives.
    let fake = std::thread::spawn(move || {
        let mut s = next_connection(&listener, "the proxy's connection");
        let first = read_request(&mut s).req;
        got_first.send(()).unwrap();
        released.recv_timeout(IO_TIMEOUT).unwrap();
        answer(&mut s, &first);
        let mut seen = vec![first];
        let mut head = [0u8; Request::SIZE];
        // Until the proxy closes its upstream at its end.
        while s.read_exact(&mut head).is_ok() {
            let req = Request::decode(&head).unwrap();
            answer(&mut s, &req);
            seen.push(req);
        }
        seen
    });
    let proxy = InProcessProxy::start(upstream);
    let mut c = Client::connect(proxy.addr, Handshake::ExportName);
    c.request(Cmd::READ, 7, 0, 512);
    first_arrived.recv_timeout(IO_TIMEOUT).unwrap();
    // Handle 7 is in flight: a WRITE with it is refused at once, its data
    // skipped, and the session goes on.
    c.write(7, 4096, &[9; 1024]);
    c.expect_reply(7, Errno::EINVAL);
    release.send(()).unwrap();
    c.expect_reply(7, Errno::OK);
    assert_eq!(read_data(&mut c, 512), vec![0; 512]);
    // Answered: the handle may be used again.
    assert_eq!(c.read(7, 512, 512), vec![0; 512]);
    c.disconnect();
    drop(proxy);
    let seen = fake.join().unwrap();
    let seen: Vec<(Cmd, u64, u64)> = seen.iter().map(|r| (r.cmd, r.handle, r.offset)).collect();
    assert_eq!(
        seen,
        vec![(Cmd::READ, 7, 0), (Cmd::READ, 7, 512)],
        "the refused WRITE reached the upstream"
    );
}
