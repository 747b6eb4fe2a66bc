//! A black-box fuzzer: the real `flexnbd serve` over TCP, fed mutated
//! handshakes, odd but well-framed requests and garbage, from a fixed seed.
//!
//! Checked after every input, or every [`CHECK_EVERY`] inputs:
//!
//! - no crash: the process is still running, and exits 0 when stopped;
//! - no hang: every reply arrives, and every connection we end is closed by
//!   the server, within [`DEADLINE`]; a fresh client is served afterwards;
//! - bounded memory: the server's resident set stays under [`MAX_RSS_KIB`];
//! - no stray writes: every READ, a fresh client's read of the whole export
//!   and finally the file itself match a model changed only by the WRITEs,
//!   TRIMs and WRITE_ZEROES the server acknowledged.
//!
//! [`INPUTS`] inputs by default (a few seconds); set `FLEXNBD_FUZZ_INPUTS`
//! for a longer run and `FLEXNBD_FUZZ_SEED` for another sequence. A failure
//! names the input's index and the seed, so it can be replayed.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use flexnbd::proto::consts::NBD_REQUEST_MAGIC;
use flexnbd::proto::types::{ClientFlags, Cmd, CmdFlags, Errno, Opt};
use flexnbd::proto::wire::{NewstyleHello, OptionHeader};

use crate::support::wire::{self, Client, Handshake, tcp_within};
use crate::support::{Daemon, TestEnv};

/// Inputs per run unless `FLEXNBD_FUZZ_INPUTS` says otherwise.
const INPUTS: u64 = 2_000;
/// The default seed.
const SEED: u64 = 0x666c_6578_6e62_6400;
/// The export's size.
const SIZE: u64 = 1 << 20;
/// How long any reply, or the close of a connection we ended, may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// A fresh client reads the whole export, and RSS is sampled, this often.
const CHECK_EVERY: u64 = 250;
/// The most memory the server may hold (KiB): its largest buffers here are a few MiB.
const MAX_RSS_KIB: u64 = 256 * 1024;
/// The largest WRITE payload we send (the server reads every byte of a WRITE's payload).
const MAX_WRITE: u32 = 2 << 20;

/// splitmix64: small, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// `min` to `min + spread - 1` random bytes.
    fn some_bytes(&mut self, min: usize, spread: u64) -> Vec<u8> {
        let n = min + self.below(spread) as usize;
        self.bytes(n)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What the export must hold: each byte is `data[i]`, or 0 if `trimmed[i]`
/// (a TRIM may or may not zero what it covers).
struct Model {
    data: Vec<u8>,
    trimmed: Vec<bool>,
}

impl Model {
    fn set(&mut self, offset: u64, bytes: &[u8]) {
        let range = offset as usize..offset as usize + bytes.len();
        self.data[range.clone()].copy_from_slice(bytes);
        self.trimmed[range].fill(false);
    }

    /// Checks `actual` against bytes from `offset`, settling trimmed bytes.
    #[track_caller]
    fn check(&mut self, offset: u64, actual: &[u8], what: &str) {
        let range = offset as usize..offset as usize + actual.len();
        if self.data[range] == *actual {
            return;
        }
        for (i, &byte) in actual.iter().enumerate() {
            let at = offset as usize + i;
            if byte == self.data[at] {
                continue;
            }
            assert!(
                self.trimmed[at] && byte == 0,
                "{what}: byte {at} is {byte:#04x}, the model says {:#04x}",
                self.data[at]
            );
            self.data[at] = 0;
            self.trimmed[at] = false;
        }
    }
}

#[test]
fn the_server_survives_mutated_handshakes_and_requests() {
    let inputs = std::env::var("FLEXNBD_FUZZ_INPUTS")
        .ok()
        .map_or(INPUTS, |v| v.parse().expect("FLEXNBD_FUZZ_INPUTS"));
    let seed = std::env::var("FLEXNBD_FUZZ_SEED")
        .ok()
        .map_or(SEED, |v| v.parse().expect("FLEXNBD_FUZZ_SEED"));
    let env = TestEnv::new();
    let initial = env.pattern(SIZE as usize, 7);
    let disk = env.image_with("disk.img", &initial);
    let mut d = Daemon::serve(&disk).port(0).sock(env.sock_path()).start();
    let addr = d.addr();
    let mut model = Model {
        data: initial,
        trimmed: vec![false; SIZE as usize],
    };
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut peak_rss = 0;
    let (mut requests, mut acknowledged) = (0u64, 0u64);
    // Time spent in handshakes, garbage and request sessions.
    let mut spent = [Duration::ZERO; 3];
    for input in 0..inputs {
        let what = format!("input {input} of seed {seed}");
        let t = Instant::now();
        let kind = match rng.below(100) {
            0..25 => {
                mutated_handshake(addr, &mut rng, &what);
                0
            }
            25..35 => {
                garbage_after_requests(addr, &mut rng, &mut model, &what);
                1
            }
            _ => {
                let (sent, ok) = requests_session(addr, &mut rng, &mut model, &what);
                requests += sent;
                acknowledged += ok;
                2
            }
        };
        spent[kind] += t.elapsed();
        if (input + 1) % CHECK_EVERY == 0 || input + 1 == inputs {
            assert!(d.is_running(), "{what}: the server died:\n{}", d.stderr());
            peak_rss = peak_rss.max(rss_kib(d.pid()));
            assert!(peak_rss < MAX_RSS_KIB, "{what}: server RSS {peak_rss} KiB");
            read_everything(addr, &mut model, &format!("fresh client after {what}"));
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(d.stop().code(), Some(0), "stderr:\n{}", d.stderr());
    model.check(0, &env.read(&disk), "the file after the run");
    eprintln!(
        "{inputs} inputs ({requests} requests, {acknowledged} acknowledged) in {elapsed:.1?}, \
         peak RSS {peak_rss} KiB; handshakes {:.1?}, garbage {:.1?}, requests {:.1?}",
        spent[0], spent[1], spent[2]
    );
}

/// The server's resident set in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

/// Ends our side of `s` and asserts the server closes its side within [`DEADLINE`].
#[track_caller]
fn assert_closes(mut s: TcpStream, what: &str) {
    let _ = s.shutdown(Shutdown::Write);
    assert!(
        wire::closed_within(&mut s, DEADLINE),
        "{what}: the server did not close within {DEADLINE:?}"
    );
}

/// A client's handshake bytes after the greeting: flags and a few options.
fn handshake_bytes(rng: &mut Rng) -> Vec<u8> {
    let flags = if rng.chance(80) {
        ClientFlags::FIXED_NEWSTYLE.0 | rng.pick(&[0, ClientFlags::NO_ZEROES.0])
    } else {
        rng.next() as u32
    };
    let mut out = flags.to_be_bytes().to_vec();
    for _ in 0..=rng.below(5) {
        let unknown = Opt(rng.next() as u32);
        let opt = rng.pick(&[
            Opt::GO,
            Opt::INFO,
            Opt::LIST,
            Opt::STRUCTURED_REPLY,
            Opt::SET_META_CONTEXT,
            Opt::LIST_META_CONTEXT,
            Opt::EXPORT_NAME,
            Opt::ABORT,
            Opt(5), // STARTTLS
            unknown,
        ]);
        let data = match opt {
            Opt::GO | Opt::INFO => {
                let name = rng.some_bytes(0, 3);
                let mut d = (name.len() as u32).to_be_bytes().to_vec();
                d.extend_from_slice(&name);
                let n = rng.below(4) as u16;
                d.extend_from_slice(&n.to_be_bytes());
                for _ in 0..n {
                    d.extend_from_slice(&(rng.below(5) as u16).to_be_bytes());
                }
                d
            }
            Opt::SET_META_CONTEXT | Opt::LIST_META_CONTEXT => {
                let query = rng.pick(&[&b"base:allocation"[..], b"base:", b"qemu:dirty"]);
                let mut d = 0u32.to_be_bytes().to_vec();
                d.extend_from_slice(&1u32.to_be_bytes());
                d.extend_from_slice(&(query.len() as u32).to_be_bytes());
                d.extend_from_slice(query);
                d
            }
            _ if rng.chance(70) => Vec::new(),
            _ => rng.some_bytes(0, 40),
        };
        let mut head = [0u8; OptionHeader::SIZE];
        OptionHeader {
            opt,
            len: data.len() as u32,
        }
        .encode(&mut head);
        out.extend_from_slice(&head);
        out.extend_from_slice(&data);
    }
    out
}

/// A few byte-level mutations: flips, interesting values, inserts, deletes, truncation.
fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        if bytes.is_empty() {
            bytes.extend(rng.bytes(4));
        }
        let at = rng.below(bytes.len() as u64) as usize;
        match rng.below(6) {
            0 => bytes[at] ^= 1 << rng.below(8),
            1 => bytes[at] = rng.pick(&[0, 1, 0x7f, 0x80, 0xff]),
            2 => {
                let extra = rng.some_bytes(1, 16);
                bytes.splice(at..at, extra);
            }
            3 => {
                let end = (at + rng.below(16) as usize + 1).min(bytes.len());
                bytes.drain(at..end);
            }
            4 => bytes.truncate(at),
            _ => {
                let end = (at + 4).min(bytes.len());
                let len = rng.pick(&[0u32, 1, 0xffff, 0x1_0000, 0x1000_0000, u32::MAX]);
                bytes.splice(at..end, len.to_be_bytes());
            }
        }
    }
}

/// Whether `bytes` hold a request magic anywhere: after a mutated handshake
/// ended in transmission, the rest must not be read as a request.
fn has_request_magic(bytes: &[u8]) -> bool {
    bytes
        .windows(4)
        .any(|w| w == NBD_REQUEST_MAGIC.to_be_bytes())
}

/// A mutated handshake: the server answers or drops us, and closes once we stop.
fn mutated_handshake(addr: SocketAddr, rng: &mut Rng, what: &str) {
    let mut bytes = handshake_bytes(rng);
    mutate(rng, &mut bytes);
    while has_request_magic(&bytes) {
        mutate(rng, &mut bytes);
    }
    let mut s = tcp_within(addr, DEADLINE);
    let mut hello = [0u8; NewstyleHello::SIZE];
    s.read_exact(&mut hello)
        .unwrap_or_else(|e| panic!("{what}: no greeting: {e}"));
    NewstyleHello::decode(&hello).unwrap_or_else(|e| panic!("{what}: bad greeting: {e}"));
    // The server may drop us part-way: a failed send is an answer too.
    let _ = s.write_all(&bytes);
    assert_closes(s, what);
}

/// A request: odd fields but exact framing (a WRITE's payload is always sent).
struct Req {
    cmd: Cmd,
    flags: CmdFlags,
    offset: u64,
    len: u32,
    payload: Vec<u8>,
}

fn random_request(rng: &mut Rng) -> Req {
    let cmd = match rng.below(100) {
        0..30 => Cmd::READ,
        30..60 => Cmd::WRITE,
        60..65 => Cmd::FLUSH,
        65..75 => Cmd::TRIM,
        75..85 => Cmd::WRITE_ZEROES,
        85..90 => Cmd::CACHE,
        90..95 => Cmd::BLOCK_STATUS,
        _ => Cmd(rng.below(0x1_0000) as u16),
    };
    let flags = if rng.chance(85) {
        CmdFlags(rng.pick(&[0, 0, 0, 1, 2, 4, 16]))
    } else {
        CmdFlags(rng.next() as u16)
    };
    let offset = match rng.below(10) {
        0 => rng.pick(&[SIZE, SIZE + 1, SIZE - 1, u64::MAX, u64::MAX - 511, 1 << 63]),
        1 => rng.next(),
        2..5 => rng.below(SIZE),
        _ => rng.below(SIZE / 512) * 512,
    };
    let room = SIZE.saturating_sub(offset);
    let len = match rng.below(10) {
        0 => rng.pick(&[0, 1, u32::MAX, 0x0200_0001, 0x0200_0000, (SIZE + 1) as u32]),
        1 => (room + 1).min(u64::from(MAX_WRITE)) as u32,
        2..5 => rng.below(room.min(65536) + 1) as u32,
        _ => (rng.below(room.min(131_072) / 512 + 1) * 512) as u32,
    };
    // Only a WRITE has a payload, which we must send whole: keep it small.
    let len = if cmd == Cmd::WRITE {
        len.min(MAX_WRITE)
    } else {
        len
    };
    let payload = if cmd == Cmd::WRITE {
        rng.bytes(len as usize)
    } else {
        Vec::new()
    };
    Req {
        cmd,
        flags,
        offset,
        len,
        payload,
    }
}

/// Sends `req`, reads its reply (and a READ's data), and keeps the model in
/// step. Returns whether the server acknowledged it.
fn exchange(c: &mut Client, handle: u64, req: &Req, model: &mut Model, what: &str) -> bool {
    c.send(
        req.cmd,
        req.flags,
        handle,
        req.offset,
        req.len,
        &req.payload,
    );
    let reply = c.reply();
    assert_eq!(reply.handle, handle, "{what}: reply to another request");
    if reply.error != Errno::OK {
        return false;
    }
    let what = format!(
        "{what}: {} {:?} at {}+{}",
        req.cmd, req.flags, req.offset, req.len
    );
    let end = req.offset.checked_add(u64::from(req.len));
    let in_range = end.is_some_and(|e| e <= SIZE);
    match req.cmd {
        Cmd::READ => {
            assert!(in_range, "{what}: acknowledged out of range");
            let mut data = vec![0u8; req.len as usize];
            c.s.read_exact(&mut data)
                .unwrap_or_else(|e| panic!("{what}: data: {e}"));
            model.check(req.offset, &data, &what);
        }
        Cmd::WRITE => {
            assert!(in_range, "{what}: acknowledged out of range");
            model.set(req.offset, &req.payload);
        }
        Cmd::WRITE_ZEROES => {
            assert!(in_range, "{what}: acknowledged out of range");
            model.set(req.offset, &vec![0; req.len as usize]);
        }
        Cmd::TRIM => {
            assert!(in_range, "{what}: acknowledged out of range");
            let range = req.offset as usize..end.unwrap_or(0) as usize;
            model.trimmed[range].fill(true);
        }
        Cmd::FLUSH | Cmd::CACHE => {}
        other => panic!("{what}: {other} acknowledged"),
    }
    true
}

/// A clean handshake, then 1 to 12 requests, each waiting for its reply,
/// then DISCONNECT or just a close. Returns (sent, acknowledged).
fn requests_session(addr: SocketAddr, rng: &mut Rng, model: &mut Model, what: &str) -> (u64, u64) {
    let handshake = rng.pick(&[Handshake::Go, Handshake::ExportName]);
    let mut c = Client::connect_within(addr, handshake, DEADLINE);
    // A header and its payload go in two writes: do not let Nagle hold the second.
    c.s.set_nodelay(true).unwrap();
    let count = rng.below(12) + 1;
    let mut ok = 0;
    for handle in 1..=count {
        let req = random_request(rng);
        ok += u64::from(exchange(&mut c, handle, &req, model, what));
    }
    if rng.chance(50) {
        c.request(Cmd::DISC, count + 1, 0, 0);
    }
    assert_closes(c.s, what);
    (count, ok)
}

/// A clean handshake and a few requests, then bytes that are not a request:
/// the server answers EBADMSG or waits for more, and closes either way.
fn garbage_after_requests(addr: SocketAddr, rng: &mut Rng, model: &mut Model, what: &str) {
    let mut c = Client::connect_within(addr, Handshake::Go, DEADLINE);
    c.s.set_nodelay(true).unwrap();
    for handle in 1..=rng.below(3) {
        let req = random_request(rng);
        exchange(&mut c, handle, &req, model, what);
    }
    let mut junk = rng.some_bytes(1, 100);
    while has_request_magic(&junk) {
        junk = rng.bytes(junk.len());
    }
    let _ = c.s.write_all(&junk);
    assert_closes(c.s, what);
}

/// A fresh client reads the whole export in 64 KiB pieces and checks it.
fn read_everything(addr: SocketAddr, model: &mut Model, what: &str) {
    let mut c = Client::connect_within(addr, Handshake::Go, DEADLINE);
    assert_eq!(c.size, SIZE, "{what}: export size");
    for (i, offset) in (0..SIZE).step_by(65536).enumerate() {
        let data = c.read(i as u64 + 1, offset, 65536);
        model.check(offset, &data, what);
    }
    c.disconnect();
}
