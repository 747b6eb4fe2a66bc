//! The NBD server in-process on port 0, driven byte by byte: handshakes,
//! every command, pipelining, bad input, ACLs, limits and shutdown.

// Test helpers panic on purpose when something is off.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flexnbd::backing::Backing;
use flexnbd::net::{Acl, AclEntry};
use flexnbd::proto::consts::*;
use flexnbd::proto::types::*;
use flexnbd::proto::wire::*;
use flexnbd::server::{Server, ServerConfig};

use crate::support::wire::{self, Client, Handshake};

const TIMEOUT: Duration = Duration::from_secs(10);

/// A server on 127.0.0.1:0 over a fresh sparse file, stopped on drop.
pub(crate) struct Harness {
    server: Arc<Server>,
    addr: SocketAddr,
    path: PathBuf,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub(crate) fn start(size: u64, config: ServerConfig) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        let server = Server::new(Backing::open(&path, config.read_only).unwrap(), config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let s = server.clone();
        let thread = std::thread::spawn(move || s.run(listener));
        Harness {
            server,
            addr,
            path,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub(crate) fn new(size: u64) -> Harness {
        Harness::start(size, ServerConfig::default())
    }

    /// A server speaking the old-style handshake, as flexnbd-c.
    pub(crate) fn start_oldstyle(size: u64) -> Harness {
        Harness::with(size, |c| c.oldstyle = true)
    }

    /// A server with the default configuration as `configure` changes it.
    pub(crate) fn with(size: u64, configure: impl FnOnce(&mut ServerConfig)) -> Harness {
        let mut config = ServerConfig::default();
        configure(&mut config);
        Harness::start(size, config)
    }

    /// The server's NBD URI.
    pub(crate) fn uri(&self) -> String {
        format!("nbd://{}", self.addr)
    }

    fn tcp(&self) -> TcpStream {
        wire::tcp(self.addr)
    }

    /// Fixed newstyle with GO; optionally structured replies and base:allocation.
    pub(crate) fn client(&self, structured: bool) -> Client {
        let mut c = Client::new(self.tcp());
        c.newstyle_hello();
        c.go(structured);
        c
    }

    pub(crate) fn oldstyle(&self) -> Client {
        Client::connect(self.addr, Handshake::Oldstyle)
    }

    pub(crate) fn file(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    fn allocated(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&self.path).unwrap().blocks() * 512
    }

    /// Waits until the server reports `n` clients (bounded).
    fn wait_clients(&self, n: u64) {
        let deadline = Instant::now() + TIMEOUT;
        while self.server.status().num_clients != n {
            assert!(
                Instant::now() < deadline,
                "num_clients stuck at {}",
                self.server.status().num_clients
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(&mut self) -> std::io::Result<()> {
        self.server.shutdown();
        self.thread.take().map_or(Ok(()), |t| t.join().unwrap())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_then_read_back() {
    let h = Harness::new(1 << 20);
    let mut c = h.client(false);
    let data = pattern(10000, 1);
    c.write(1, 4097, &data);
    c.expect_reply(1, Errno::OK);
    assert_eq!(c.read(2, 4097, 10000), data);
    assert_eq!(&h.file()[4097..14097], &data[..]);
}

#[test]
fn long_write_on_top_of_short_write_is_respected() {
    let h = Harness::start_oldstyle(1024);
    let mut c = h.oldstyle();
    c.write(1, 0, &[0xff]);
    c.expect_reply(1, Errno::OK);
    c.write(2, 0, &[0xff, 0xff]);
    c.expect_reply(2, Errno::OK);
    assert_eq!(&h.file()[..3], &[0xff, 0xff, 0]);
}

#[test]
fn oldstyle_hello_is_flexnbd_c_byte_for_byte() {
    let h = Harness::start_oldstyle(1535);
    let mut s = h.tcp();
    let mut hello = [0u8; OldstyleHello::SIZE];
    s.read_exact(&mut hello).unwrap();
    let mut expected = b"NBDMAGIC".to_vec();
    expected.extend_from_slice(&0x0000_4202_8186_1253_u64.to_be_bytes());
    expected.extend_from_slice(&1024u64.to_be_bytes()); // rounded down to 512
    expected.extend_from_slice(&13u32.to_be_bytes());
    expected.extend_from_slice(&[0u8; 124]);
    assert_eq!(hello.to_vec(), expected);
}

#[test]
fn flush_and_fua_are_accepted() {
    let h = Harness::new(40960);
    let mut c = h.client(false);
    c.send(Cmd::WRITE, CmdFlags::FUA, 1, 3 * 4096 + 100, 33, &[7u8; 33]);
    c.expect_reply(1, Errno::OK);
    c.request(Cmd::FLUSH, 2, 0, 0);
    c.expect_reply(2, Errno::OK);
}

#[test]
fn many_requests_in_flight_are_each_answered_once() {
    let h = Harness::new(4 << 20);
    let mut c = h.client(false);
    let blocks = 64u64;
    for i in 0..blocks {
        c.write(i, i * 65536, &pattern(65536, i as u8));
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..blocks {
        let r = c.reply();
        assert_eq!(r.error, Errno::OK);
        assert!(seen.insert(r.handle), "handle {} answered twice", r.handle);
    }
    for i in 0..blocks {
        c.request(Cmd::READ, 1000 + i, i * 65536, 65536);
    }
    for _ in 0..blocks {
        let r = c.reply();
        let i = r.handle - 1000;
        let mut data = vec![0u8; 65536];
        c.s.read_exact(&mut data).unwrap();
        assert_eq!(data, pattern(65536, i as u8), "block {i}");
    }
}

#[test]
fn large_reads_pipelined_with_small_ones_each_get_their_own_data() {
    // Several large READs waiting at once go to the workers (one copies
    // while another sends), the small ones between them are served on the
    // reading thread: replies come in any order, each with its data. The
    // last 2 MiB are a hole.
    let h = Harness::new(8 << 20);
    let mut c = h.client(false);
    for i in 0..6u64 {
        assert_eq!(
            c.write_reply(i, i << 20, &pattern(1 << 20, i as u8)),
            Errno::OK
        );
    }
    let file = h.file();
    let mut stream = Vec::new();
    let mut lens = std::collections::HashMap::new();
    for i in 0..15u64 {
        let (big, small) = (100 + 2 * i, 101 + 2 * i);
        stream.extend_from_slice(&wire::header(Cmd::READ, CmdFlags(0), big, i << 19, 1 << 20));
        stream.extend_from_slice(&wire::header(
            Cmd::READ,
            CmdFlags(0),
            small,
            i * 4096 + 7,
            4096,
        ));
        lens.insert(big, (i << 19, 1usize << 20));
        lens.insert(small, (i * 4096 + 7, 4096));
    }
    c.s.write_all(&stream).unwrap();
    for _ in 0..lens.len() {
        let r = c.reply();
        assert_eq!(r.error, Errno::OK, "handle {}", r.handle);
        let (offset, len) = lens
            .remove(&r.handle)
            .expect("an unknown or repeated handle");
        let mut data = vec![0u8; len];
        c.s.read_exact(&mut data).unwrap();
        let offset = offset as usize;
        assert!(
            data == file[offset..offset + len],
            "handle {} at {offset}+{len}",
            r.handle
        );
    }
}

#[test]
fn large_writes_pipelined_with_small_requests_stay_in_step() {
    // Large WRITEs bypass the read buffer (payload and the header after it
    // come straight from the socket); small requests behind them go through
    // the buffer again.
    let h = Harness::new(24 << 20);
    let mut c = h.client(false);
    let big = pattern(1 << 20, 3);
    let mut stream = Vec::new();
    let mut req = |cmd: Cmd, flags: CmdFlags, handle: u64, offset: u64, data: &[u8], len: u32| {
        stream.extend_from_slice(&wire::header(cmd, flags, handle, offset, len));
        stream.extend_from_slice(data);
    };
    let small = pattern(4096, 9);
    let mut expect = vec![0u8; 24 << 20];
    let mut handles = Vec::new();
    for i in 0..16u64 {
        // Each large write followed by a small one in the next 4 KiB.
        let off = (7 << 20) + i * ((1 << 20) + 4096);
        req(Cmd::WRITE, CmdFlags(0), 2 * i, off, &big, big.len() as u32);
        expect[off as usize..off as usize + big.len()].copy_from_slice(&big);
        let off = off + (1 << 20);
        req(Cmd::WRITE, CmdFlags(0), 2 * i + 1, off, &small, 4096);
        expect[off as usize..off as usize + 4096].copy_from_slice(&small);
        handles.extend([2 * i, 2 * i + 1]);
    }
    req(Cmd::WRITE, CmdFlags::FUA, 100, 0, &big, big.len() as u32);
    expect[..big.len()].copy_from_slice(&big);
    req(Cmd::FLUSH, CmdFlags(0), 101, 0, &[], 0);
    handles.extend([100, 101]);
    let mut tx = c.s.try_clone().unwrap();
    let sender = std::thread::spawn(move || tx.write_all(&stream).unwrap());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..handles.len() {
        let r = c.reply();
        assert_eq!(r.error, Errno::OK, "handle {}", r.handle);
        assert!(seen.insert(r.handle), "handle {} answered twice", r.handle);
    }
    sender.join().unwrap();
    assert_eq!(seen, handles.into_iter().collect());
    // Still in step: a READ right after.
    assert_eq!(c.read(200, (7 << 20) + (1 << 20), 4096), small);
    assert!(h.file() == expect, "file differs from what was written");
}

#[test]
fn bad_request_magic_gets_ebadmsg_then_close_and_server_keeps_serving() {
    let h = Harness::new(1024);
    let mut c = h.client(false);
    let mut head = [0u8; Request::SIZE];
    Request {
        flags: CmdFlags(0),
        cmd: Cmd::READ,
        handle: u64::from_be_bytes(*b"myhandle"),
        offset: 0,
        len: 8,
    }
    .encode(&mut head);
    head[..4].copy_from_slice(&[0, 0, 0, 0]);
    c.s.write_all(&head).unwrap();
    c.expect_reply(u64::from_be_bytes(*b"myhandle"), Errno::EBADMSG);
    assert!(c.rest().is_empty());
    let mut d = h.client(false);
    assert_eq!(d.read(1, 0, 8), vec![0u8; 8]);
}

#[test]
fn out_of_range_requests_get_errors_and_the_connection_survives() {
    let h = Harness::new(1024);
    let mut c = h.client(false);
    c.request(Cmd::READ, 1, 1024, 1);
    c.expect_reply(1, Errno::EINVAL);
    c.write(2, 1024, &[1u8; 4096]);
    c.expect_reply(2, Errno::ENOSPC);
    c.request(Cmd::READ, 3, u64::MAX, 2);
    c.expect_reply(3, Errno::EINVAL);
    c.request(Cmd::TRIM, 4, 1000, 100);
    c.expect_reply(4, Errno::EINVAL);
    assert_eq!(c.read(5, 0, 4), vec![0u8; 4]);
}

#[test]
fn oldstyle_out_of_range_is_enospc_like_flexnbd_c() {
    let h = Harness::start_oldstyle(1024);
    let mut c = h.oldstyle();
    c.request(Cmd::READ, 1, 1024, 1);
    c.expect_reply(1, Errno::ENOSPC);
    c.write(2, 1024, &[1u8; 4096]);
    c.expect_reply(2, Errno::ENOSPC);
    c.write(3, 0, &[1u8; 16]);
    c.expect_reply(3, Errno::OK);
}

#[test]
fn unknown_commands_and_flags_get_einval() {
    let h = Harness::new(1024);
    let mut c = h.client(false);
    c.request(Cmd(123), 1, 0, 0);
    c.expect_reply(1, Errno::EINVAL);
    c.send(Cmd::READ, CmdFlags(0x8000), 2, 0, 8, &[]);
    c.expect_reply(2, Errno::EINVAL);
    assert_eq!(c.read(3, 0, 1), vec![0]);
}

#[test]
fn oversized_requests_are_refused_without_allocating() {
    let h = Harness::new(64 << 20);
    let mut c = h.client(false);
    c.request(Cmd::READ, 1, 0, MAX_REQUEST_LEN + 1);
    c.expect_reply(1, Errno::EINVAL);
    // A write over the limit has its payload read and dropped, then the connection goes on.
    let big = vec![0x55u8; MAX_REQUEST_LEN as usize + 512];
    c.write(2, 0, &big);
    c.expect_reply(2, Errno::EINVAL);
    assert_eq!(c.read(3, 0, 4), vec![0u8; 4]);
    // Exactly the limit is accepted.
    let max = vec![0x66u8; MAX_REQUEST_LEN as usize];
    c.write(4, 0, &max);
    c.expect_reply(4, Errno::OK);
}

#[test]
fn client_vanishing_mid_write_does_not_disturb_others() {
    let h = Harness::new(1 << 20);
    let mut other = h.client(false);
    let mut c = h.client(false);
    c.request(Cmd::WRITE, 1, 0, 65536);
    c.s.write_all(&[1u8; 1000]).unwrap();
    drop(c);
    other.write(7, 8192, &[9u8; 512]);
    other.expect_reply(7, Errno::OK);
    h.wait_clients(1);
}

#[test]
fn garbage_and_truncated_handshakes_are_dropped() {
    let h = Harness::new(1024);
    // Truncated client flags.
    let mut s = h.tcp();
    let mut hello = [0u8; NewstyleHello::SIZE];
    s.read_exact(&mut hello).unwrap();
    s.write_all(&[0, 0]).unwrap();
    drop(s);
    // Unknown client flags: dropped at once.
    let mut s = h.tcp();
    s.read_exact(&mut hello).unwrap();
    s.write_all(&0xffu32.to_be_bytes()).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty());
    // A bad option magic: dropped.
    let mut r = Client::new(h.tcp());
    r.newstyle_hello();
    r.s.write_all(&[0xee; 16]).unwrap();
    assert!(r.rest().is_empty());
    // An option length over the limit: dropped before anything is allocated.
    let mut r = Client::new(h.tcp());
    r.newstyle_hello();
    r.s.write_all(&wire::option_header(Opt::GO, u32::MAX))
        .unwrap();
    assert!(r.rest().is_empty());
    // Everyone else is still served.
    let mut c = h.client(false);
    assert_eq!(c.read(1, 0, 2), vec![0, 0]);
    h.wait_clients(1);
}

#[test]
fn unknown_options_get_unsup_and_negotiation_goes_on() {
    let h = Harness::new(4096);
    let mut r = Client::new(h.tcp());
    r.newstyle_hello();
    r.send_option(Opt(0x1234), b"whatever");
    assert_eq!(r.option_reply().0, Rep::ERR_UNSUP);
    r.send_option(Opt::LIST, &[]);
    assert_eq!(r.option_reply().0, Rep::SERVER);
    assert_eq!(r.option_reply().0, Rep::ACK);
    r.send_option(Opt::EXPORT_NAME, b"");
    let mut reply = [0u8; ExportNameReply::SIZE];
    r.s.read_exact(&mut reply).unwrap(); // NO_ZEROES was agreed: no padding
    assert_eq!(ExportNameReply::decode(&reply).size, 4096);
    assert_eq!(r.read(1, 0, 4), vec![0u8; 4]);
}

#[test]
fn abort_ends_negotiation_cleanly() {
    let h = Harness::new(4096);
    let mut r = Client::new(h.tcp());
    r.newstyle_hello();
    r.send_option(Opt::ABORT, &[]);
    assert_eq!(r.option_reply().0, Rep::ACK);
    assert!(r.rest().is_empty());
}

#[test]
fn structured_reads_send_holes_as_hole_chunks() {
    let h = Harness::new(1 << 20);
    let mut c = h.client(true);
    c.write(1, 8192, &[5u8; 4096]);
    c.expect_reply(1, Errno::OK);
    c.request(Cmd::READ, 2, 0, 16384);
    let (h1, b1) = c.chunk();
    assert_eq!(
        (h1.ty, h1.handle, h1.flags),
        (ChunkType::OFFSET_HOLE, 2, ChunkFlags(0))
    );
    assert_eq!(
        b1,
        [0u64.to_be_bytes().as_slice(), &8192u32.to_be_bytes()].concat()
    );
    let (h2, b2) = c.chunk();
    assert_eq!(h2.ty, ChunkType::OFFSET_DATA);
    assert_eq!(&b2[..8], &8192u64.to_be_bytes());
    assert_eq!(&b2[8..], &[5u8; 4096][..]);
    let (h3, b3) = c.chunk();
    assert_eq!(
        (h3.ty, h3.flags),
        (ChunkType::OFFSET_HOLE, ChunkFlags::DONE)
    );
    assert_eq!(&b3[8..], &4096u32.to_be_bytes());
    // Out of range with structured replies: an error chunk.
    c.request(Cmd::READ, 3, 1 << 20, 1);
    let (e, body) = c.chunk();
    assert_eq!((e.ty, e.flags), (ChunkType::ERROR, ChunkFlags::DONE));
    assert_eq!(&body[..4], &Errno::EINVAL.0.to_be_bytes());
}

#[test]
fn large_pipelined_reads_come_whole_with_holes_still_as_hole_chunks() {
    // 1 MiB of data (in the page cache after the write, so large READs are
    // sent from the reading thread), then a hole from 1 MiB on.
    let h = Harness::new(2 << 20);
    let data = pattern(1 << 20, 9);
    let mut c = h.client(true);
    c.write(1, 0, &data);
    c.expect_reply(1, Errno::OK);
    // The first READ (a hole) goes to a worker; while it is in flight, the
    // next ones may follow it there, then the rest is sent from the reading thread.
    let reads: [(u64, u64, u32); 6] = [
        (15, 1 << 20, 256 << 10), // all hole
        (10, 0, 256 << 10),
        (11, 4096, 4096),
        (12, 256 << 10, 512 << 10),
        (13, 100, 64 << 10),
        (14, (768 << 10) + 1, (256 << 10) - 1),
    ];
    for &(handle, offset, len) in &reads {
        c.request(Cmd::READ, handle, offset, len);
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..reads.len() {
        let (head, body) = c.chunk();
        assert!(seen.insert(head.handle), "handle {} twice", head.handle);
        let &(_, offset, len) = reads.iter().find(|r| r.0 == head.handle).unwrap();
        assert_eq!(
            head.flags,
            ChunkFlags::DONE,
            "one chunk for {}",
            head.handle
        );
        assert_eq!(&body[..8], &offset.to_be_bytes());
        if offset >= 1 << 20 {
            assert_eq!(head.ty, ChunkType::OFFSET_HOLE);
            assert_eq!(&body[8..], &len.to_be_bytes());
        } else {
            assert_eq!(head.ty, ChunkType::OFFSET_DATA);
            let range = offset as usize..offset as usize + len as usize;
            assert!(body[8..] == data[range], "data of {}", head.handle);
        }
    }
    // A large READ over data and a hole: the hole is still a hole chunk.
    c.request(Cmd::READ, 16, (1 << 20) - (64 << 10), 128 << 10);
    let (h1, b1) = c.chunk();
    assert_eq!((h1.ty, h1.flags), (ChunkType::OFFSET_DATA, ChunkFlags(0)));
    assert!(b1[8..] == data[(1 << 20) - (64 << 10)..]);
    let (h2, b2) = c.chunk();
    assert_eq!(
        (h2.ty, h2.flags),
        (ChunkType::OFFSET_HOLE, ChunkFlags::DONE)
    );
    assert_eq!(&b2[8..], &(64u32 << 10).to_be_bytes());
    // Simple replies send large READs whole too, holes as zeroes.
    let mut c = h.client(false);
    c.request(Cmd::READ, 20, 512 << 10, 1 << 20);
    c.expect_reply(20, Errno::OK);
    let mut got = vec![0u8; 1 << 20];
    c.s.read_exact(&mut got).unwrap();
    assert!(got[..512 << 10] == data[512 << 10..]);
    assert!(got[512 << 10..].iter().all(|&b| b == 0));
}

#[test]
fn block_status_trim_and_write_zeroes() {
    let h = Harness::new(1 << 20);
    let mut c = h.client(true);
    c.write(1, 0, &[1u8; 65536]);
    c.expect_reply(1, Errno::OK);
    c.request(Cmd::BLOCK_STATUS, 2, 0, 1 << 20);
    let (bs, body) = c.chunk();
    assert_eq!(
        (bs.ty, bs.flags),
        (ChunkType::BLOCK_STATUS, ChunkFlags::DONE)
    );
    let words: Vec<u32> = body
        .chunks(4)
        .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
        .collect();
    assert_eq!(
        words,
        vec![BASE_ALLOCATION_ID, 65536, 0, (1 << 20) - 65536, 3]
    );

    c.request(Cmd::TRIM, 3, 0, 32768);
    c.expect_reply(3, Errno::OK);
    c.send(Cmd::WRITE_ZEROES, CmdFlags::NO_HOLE, 4, 32768, 4096, &[]);
    c.expect_reply(4, Errno::OK);
    c.send(Cmd::WRITE_ZEROES, CmdFlags::FAST_ZERO, 5, 36864, 4096, &[]);
    c.expect_reply(5, Errno::OK);
    let file = h.file();
    assert!(file[..40960].iter().all(|&b| b == 0));
    assert!(file[40960..65536].iter().all(|&b| b == 1));
    c.send(Cmd::BLOCK_STATUS, CmdFlags::REQ_ONE, 6, 0, 65536, &[]);
    let (_, body) = c.chunk();
    assert_eq!(body.len(), 12);
    assert_eq!(&body[4..8], &32768u32.to_be_bytes());
    assert_eq!(&body[8..12], &3u32.to_be_bytes());
    c.request(Cmd::CACHE, 7, 0, 4096);
    c.expect_reply(7, Errno::OK);
}

#[test]
fn block_status_without_meta_context_is_einval() {
    let h = Harness::new(4096);
    let mut c = h.client(false);
    c.request(Cmd::BLOCK_STATUS, 1, 0, 4096);
    c.expect_reply(1, Errno::EINVAL);
}

#[test]
fn zero_writes_into_holes_keep_the_file_sparse() {
    let h = Harness::new(8 << 20);
    let mut c = h.client(false);
    c.write(1, 0, &vec![0u8; 4 << 20]);
    c.expect_reply(1, Errno::OK);
    assert_eq!(h.allocated(), 0);
}

#[test]
fn read_only_refuses_writes_with_eperm() {
    let h = Harness::with(4096, |c| c.read_only = true);
    let mut c = h.client(false);
    c.write(1, 0, &[1u8; 100]);
    c.expect_reply(1, Errno::EPERM);
    c.request(Cmd::TRIM, 2, 0, 100);
    c.expect_reply(2, Errno::EPERM);
    assert_eq!(c.read(3, 0, 2), vec![0, 0]);
    assert!(
        h.server
            .transmission_flags()
            .contains(TransmissionFlags::READ_ONLY)
    );
}

#[test]
fn acl_denies_without_a_byte_and_runtime_change_disconnects() {
    let allow_other: AclEntry = "10.0.0.1".parse().unwrap();
    let h = Harness::with(4096, |c| c.acl = Acl::new(vec![allow_other], false));
    let mut s = h.tcp();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty(), "denied client got {} bytes", buf.len());

    h.server.set_acl(vec!["127.0.0.1".parse().unwrap()]);
    let mut c = h.client(false);
    assert_eq!(c.read(1, 0, 1), vec![0]);
    h.server.set_acl(vec![allow_other]);
    assert!(c.rest().is_empty());
    h.wait_clients(0);
}

#[test]
fn default_deny_with_empty_acl_denies_everyone() {
    let h = Harness::with(4096, |c| c.acl = Acl::new(vec![], true));
    let mut s = h.tcp();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty());
}

#[test]
fn clients_over_the_limit_are_closed_at_once() {
    let h = Harness::with(4096, |c| c.max_clients = 2);
    let _a = h.client(false);
    let _b = h.client(false);
    h.wait_clients(2);
    let mut s = h.tcp();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    assert!(buf.is_empty());
}

#[test]
fn thousands_of_connects_and_disconnects() {
    let h = Harness::new(4096);
    for i in 0..2000 {
        let s = h.tcp();
        if i % 2 == 0 {
            s.shutdown(Shutdown::Both).unwrap();
        }
    }
    let mut c = h.client(false);
    assert_eq!(c.read(1, 0, 1), vec![0]);
    drop(c);
    h.wait_clients(0);
}

#[test]
fn status_counts_clients() {
    let h = Harness::new(4096);
    assert_eq!(h.server.status().num_clients, 0);
    let a = h.client(false);
    h.wait_clients(1);
    let b = h.client(false);
    h.wait_clients(2);
    drop(a);
    drop(b);
    h.wait_clients(0);
    let st = h.server.status();
    assert!(st.has_control && st.clients_allowed && st.migration.is_none());
    assert_eq!(st.size, 4096);
}

#[test]
fn shutdown_answers_requests_in_flight_then_closes() {
    let mut h = Harness::new(16 << 20);
    let mut c = h.client(false);
    for i in 0..32u64 {
        c.write(i, i * 65536, &[3u8; 65536]);
    }
    // Make sure the server has read them all before stopping it: requests
    // are read in order, so once the FLUSH is answered every write has been
    // read. (Shutdown stops reading at the end of what has reached the
    // socket; without this wait, writes still in transit were cut off.)
    c.request(Cmd::FLUSH, 99, 0, 0);
    let mut handles = Vec::new();
    while handles.last() != Some(&99) {
        let r = c.reply();
        assert_eq!(r.error, Errno::OK);
        handles.push(r.handle);
    }
    h.stop().unwrap();
    while handles.len() < 33 {
        let r = c.reply();
        assert_eq!(r.error, Errno::OK);
        handles.push(r.handle);
    }
    handles.sort_unstable();
    assert_eq!(handles, (0..32).chain([99]).collect::<Vec<_>>());
    assert!(c.rest().is_empty());
    assert!(
        TcpStream::connect(h.addr).is_err(),
        "listener still open after shutdown"
    );
}

#[test]
fn disconnect_in_listen_mode_hands_control_over() {
    let mut h = Harness::with(4096, |c| c.listen_mode = true);
    assert!(!h.server.has_control());
    let mut c = h.client(false);
    c.write(1, 0, &[1u8; 8]);
    c.expect_reply(1, Errno::OK);
    c.request(Cmd::DISC, 2, 0, 0);
    h.thread.take().unwrap().join().unwrap().unwrap();
    assert!(h.server.has_control());
}

#[test]
fn bad_magic_in_listen_mode_does_not_hand_control_over() {
    let h = Harness::with(4096, |c| c.listen_mode = true);
    let mut c = h.client(false);
    c.s.write_all(&[0u8; Request::SIZE]).unwrap();
    c.expect_reply(0, Errno::EBADMSG);
    assert!(c.rest().is_empty());
    h.wait_clients(0);
    assert!(!h.server.has_control());
    let mut d = h.client(false);
    assert_eq!(d.read(1, 0, 1), vec![0]);
}

#[test]
fn killswitch_drops_a_stalled_request() {
    let h = Harness::with(1 << 20, |c| c.killswitch = Some(Duration::from_millis(300)));
    let mut idle = h.client(false);
    let mut c = h.client(false);
    c.request(Cmd::WRITE, 1, 0, 4096); // the payload never comes
    let started = Instant::now();
    assert!(c.rest().is_empty());
    assert!(started.elapsed() < TIMEOUT);
    // An idle client is never timed out.
    assert_eq!(idle.read(1, 0, 1), vec![0]);
}
