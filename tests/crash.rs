//! Crash consistency: `serve` killed with SIGKILL while clients write with
//! FUA and FLUSH, restarted on the same file, port and control socket, loses
//! no write it acknowledged as durable.
//!
//! CI runs a few cycles; `scripts/crash-consistency` runs 50 or more
//! (`FLEXNBD_CRASH_CYCLES`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flexnbd::proto::types::{Cmd, CmdFlags, Errno};

use crate::support::wire::{Client, Handshake, header};
use crate::support::{Daemon, DaemonBuilder, Signal, TestEnv};

const SIZE: u64 = 4 << 20;
const BLOCK: u32 = 4096;
const BLOCKS: u64 = SIZE / BLOCK as u64;

/// The content of block `n` as written in `cycle` by `writer`, sequence `seq`.
fn block_data(cycle: u32, writer: u8, seq: u32, n: u64) -> Vec<u8> {
    let mut b = vec![writer; BLOCK as usize];
    b[..4].copy_from_slice(&cycle.to_be_bytes());
    b[4..8].copy_from_slice(&seq.to_be_bytes());
    b[8..16].copy_from_slice(&n.to_be_bytes());
    b
}

/// One write to a block, in the order sent, and whether it was acknowledged
/// as durable (by FUA, or by a FLUSH acknowledged after it).
struct Sent {
    block: u64,
    data: Vec<u8>,
    durable: bool,
}

/// Writes blocks until the connection dies; returns every write sent, in order.
fn write_until_killed(
    addr: std::net::SocketAddr,
    cycle: u32,
    writer: u8,
    stop: &AtomicBool,
) -> Vec<Sent> {
    let mut sent: Vec<Sent> = Vec::new();
    let Ok(s) = std::net::TcpStream::connect(addr) else {
        return sent;
    };
    let mut c = Client::new(s);
    c.s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.handshake(Handshake::Go);
    // Writes acknowledged but not yet flushed: indexes into `sent`.
    let mut unflushed = Vec::new();
    let mut seq = 0u32;
    // Each writer owns every 4th block, so no two writers race on one.
    while !stop.load(Ordering::SeqCst) {
        seq += 1;
        let block = (u64::from(seq) * 7 * 4 + u64::from(writer)) % BLOCKS;
        let data = block_data(cycle, writer, seq, block);
        let fua = seq % 2 == 0;
        let flags = if fua { CmdFlags::FUA } else { CmdFlags(0) };
        let h = header(
            Cmd::WRITE,
            flags,
            u64::from(seq),
            block * u64::from(BLOCK),
            BLOCK,
        );
        // Recorded before it is sent: a write sent may reach the file even
        // if its reply never comes.
        sent.push(Sent {
            block,
            data: data.clone(),
            durable: false,
        });
        if std::io::Write::write_all(&mut c.s, &h)
            .and_then(|()| std::io::Write::write_all(&mut c.s, &data))
            .is_err()
        {
            break;
        }
        match c.try_reply() {
            Some(r) if r.error == Errno::OK => {}
            _ => break,
        }
        let last = sent.len() - 1;
        if fua {
            sent[last].durable = true;
        } else {
            unflushed.push(last);
        }
        if seq % 8 == 0 {
            let h = header(Cmd::FLUSH, CmdFlags(0), u64::from(seq) | 1 << 63, 0, 0);
            if std::io::Write::write_all(&mut c.s, &h).is_err() {
                break;
            }
            match c.try_reply() {
                Some(r) if r.error == Errno::OK => {
                    for i in unflushed.drain(..) {
                        sent[i].durable = true;
                    }
                }
                _ => break,
            }
        }
    }
    sent
}

fn cycles() -> u32 {
    std::env::var("FLEXNBD_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

#[test]
fn sigkill_during_fua_and_flushed_writes_loses_nothing_acknowledged() {
    let t = TestEnv::new();
    let file = t.image("disk.img", SIZE);
    let sock = t.sock_path();
    let first = DaemonBuilder::new("serve", &file).sock(&sock).start();
    let port = first.port();
    let mut daemon: Option<Daemon> = Some(first);
    // For each block, what it may hold: its last durable content (or the
    // original zeroes) and anything sent to it after that.
    let mut allowed: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let total = cycles();
    let mut acknowledged = 0usize;
    for cycle in 0..total {
        let d = match daemon.take() {
            Some(d) => d,
            // Restarted on the same port and control socket (left behind by the kill).
            None => DaemonBuilder::new("serve", &file)
                .sock(&sock)
                .port(port)
                .start(),
        };
        let addr = d.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..4u8)
            .map(|w| {
                let stop = stop.clone();
                std::thread::spawn(move || write_until_killed(addr, cycle, w, &stop))
            })
            .collect();
        // Kill at a different moment each cycle, while the writers run.
        let after = Duration::from_millis(300 + u64::from(cycle * 137 % 500));
        let started = Instant::now();
        while started.elapsed() < after {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut d = d;
        d.signal(Signal::KILL);
        d.wait_exit(Duration::from_secs(10));
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            for write in w.join().expect("writer") {
                let options = allowed
                    .entry(write.block)
                    .or_insert_with(|| vec![vec![0u8; BLOCK as usize]]);
                if write.durable {
                    acknowledged += 1;
                    options.clear();
                }
                options.push(write.data);
            }
        }
        let on_disk = std::fs::read(&file).expect("image");
        for (n, options) in &allowed {
            let start = usize::try_from(*n * u64::from(BLOCK)).expect("block");
            let now = &on_disk[start..start + BLOCK as usize];
            assert!(
                options.iter().any(|o| o.as_slice() == now),
                "cycle {cycle}: block {n} lost a write acknowledged as durable"
            );
        }
    }
    eprintln!("{total} SIGKILL cycles: {acknowledged} durable writes acknowledged, 0 lost");
}
