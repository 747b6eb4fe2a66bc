#!/usr/bin/env python3
"""Writes the hand-made seed inputs of each fuzz target into corpus/<target>/.

Run once before fuzzing from scratch (docs/fuzzing.md); the committed
corpora are these seeds plus what the fuzzer found, minimised with
`cargo fuzz cmin`.
"""
import hashlib
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
PASSWD = b"NBDMAGIC"
OPTS_MAGIC = 0x49484156454F5054
OLDSTYLE_MAGIC = 0x00420281861253
REP_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF
EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED, LIST_META, SET_META = 1, 2, 3, 6, 7, 8, 9, 10
ACK, SERVER, REP_INFO, ERR_UNSUP, ERR_POLICY = 1, 2, 3, 0x80000001, 0x80000002
READ, WRITE, DISC, FLUSH, TRIM, CACHE, ZEROES, BLOCK_STATUS = range(8)


def opt(o, data=b""):
    return struct.pack(">QII", OPTS_MAGIC, o, len(data)) + data


def name_and_infos(name=b"", infos=(3,)):
    return struct.pack(">I", len(name)) + name + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def meta(queries, name=b""):
    out = struct.pack(">I", len(name)) + name + struct.pack(">I", len(queries))
    return out + b"".join(struct.pack(">I", len(q)) + q for q in queries)


def rep(o, r, data=b""):
    return struct.pack(">QIII", REP_MAGIC, o, r, len(data)) + data


def req(cmd, handle, offset, length, flags=0, magic=REQUEST_MAGIC):
    return struct.pack(">IHHQQI", magic, flags, cmd, handle, offset, length)


def simple(err, handle, magic=SIMPLE_MAGIC):
    return struct.pack(">IIQ", magic, err, handle)


def chunk(flags, ty, handle, data):
    return struct.pack(">IHHQI", STRUCTURED_MAGIC, flags, ty, handle, len(data)) + data


FLAGS = struct.pack(">I", 3)
SEEDS = {
    "negotiation": [
        b"\0" + FLAGS + opt(GO, name_and_infos()),
        b"\0" + FLAGS + opt(INFO, name_and_infos(b"x", (0, 3, 9))) + opt(GO, name_and_infos(infos=())),
        b"\0" + FLAGS + opt(LIST) + opt(STRUCTURED) + opt(SET_META, meta([b"base:allocation"])) + opt(GO, name_and_infos()),
        b"\1" + FLAGS + opt(STRUCTURED) + opt(LIST_META, meta([b"base:"])) + opt(EXPORT_NAME),
        b"\0" + struct.pack(">I", 1) + opt(LIST_META, meta([])) + opt(99, b"junk") + opt(EXPORT_NAME, b"name"),
        b"\0" + FLAGS + opt(5) + opt(ABORT),
    ],
    "request": [
        req(READ, 1, 0, 4096) + req(FLUSH, 2, 0, 0) + req(DISC, 3, 0, 0),
        req(WRITE, 1, 512, 8, flags=1) + b"abcdefgh" + req(TRIM, 2, 0, 4096) + req(ZEROES, 3, 0, 4096, flags=2),
        req(BLOCK_STATUS, 1, 0, 1 << 20, flags=8) + req(CACHE, 2, 0, 512),
        req(READ, 1, (1 << 64) - 1, 1) + req(WRITE, 2, 0, 0x2000001),
        req(READ, 1, 0, 512, magic=0x12345678),
    ],
    "client_handshake": [
        PASSWD + struct.pack(">QQI", OLDSTYLE_MAGIC, 1 << 20, 13) + bytes(124),
        PASSWD + struct.pack(">QH", OPTS_MAGIC, 3)
        + rep(GO, REP_INFO, struct.pack(">HQH", 0, 1 << 20, 13))
        + rep(GO, REP_INFO, struct.pack(">HIII", 3, 1, 4096, 1 << 25)) + rep(GO, ACK),
        PASSWD + struct.pack(">QH", OPTS_MAGIC, 1) + rep(GO, ERR_UNSUP, b"no") + struct.pack(">QH", 1 << 20, 13) + bytes(124),
        PASSWD + struct.pack(">QH", OPTS_MAGIC, 0) + struct.pack(">QH", 4096, 1) + bytes(124),
        PASSWD + struct.pack(">QH", OPTS_MAGIC, 3) + rep(GO, ERR_POLICY, b"go away"),
        PASSWD + struct.pack(">QH", OPTS_MAGIC, 3) + rep(GO, REP_INFO, struct.pack(">H", 7) + b"ignored") + rep(GO, ACK),
    ],
    "client_reply": [
        simple(0, 1) + bytes(512) + simple(0, 2) + bytes(512),
        simple(5, 1) + simple(28, 2) + simple(0, 9),
        chunk(1, 1, 1, struct.pack(">Q", 0) + bytes(16)) + simple(0, 1),
        simple(0, 1, magic=0xDEADBEEF),
    ],
    "control": [
        b"status\n\n",
        b"acl\n127.0.0.1\n10.0.0.0/8\n::ffff:127.0.0.1\nfe80::/10\n\n",
        b"acl\nbad\n\n",
        b"mirror\n127.0.0.1\n4777\nexit\n127.0.0.2\n1000000\n\n",
        b"mirror\n::1\n99999\n\n",
        b"mirror_max_bps\n100\n\n",
        b"break\n\n",
        b"\n",
        b"0: updated",
        b"1: bad spec: x",
    ],
    "status": [
        b"pid=29537 size=67108864 is_mirroring=false clients_allowed=true num_clients=0 has_control=true ",
        b"pid=1 size=1048576 is_mirroring=true clients_allowed=false num_clients=3 has_control=true "
        b"migration_speed=2796202 migration_duration=2 migration_seconds_left=17 migration_bytes_left=50331648 "
        b"migration_speed_limit=1000000 migration_bytes_sent=123 migration_retries=1 migration_phase=handover ",
        b"pid=2 size=0 is_mirroring=false clients_allowed=true num_clients=0 has_control=false last_migration=done new_key=x ",
        b"pid=3 size=4096 is_mirroring=true clients_allowed=false num_clients=0 has_control=true "
        b"migration_speed=1 migration_duration=0 migration_seconds_left=0 migration_bytes_left=0 "
        b"migration_phase=verifying migration_verified=false ",
        b"pid=4 size=0 is_mirroring=false clients_allowed=true num_clients=0 has_control=true last_migration=done last_migration_verified=true ",
    ],
    # Parameters (version, block size, blocks per request, flags), then
    # requests (u64 size, u64 offset, u32 length).
    "hash": [
        struct.pack(">IIII", 1, 65536, 4096, 1),
        struct.pack(">I", 1),
        struct.pack(">IIII", 1, 65536, 4096, 0) + struct.pack(">QQI", 1 << 30, 0, 256 << 20)
        + struct.pack(">QQI", (1 << 20) + 512, 1 << 20, 512),
        struct.pack(">IIII", 2, 65536, 4096, 0) + struct.pack(">QQI", 1 << 20, 1, 65536),
        struct.pack(">IIII", 1, 1 << 24, 65536, 0) + struct.pack(">QQI", 1 << 62, 0, 0xFFFFFFFF),
        struct.pack(">IIII", 1, 4096, 1, 0) + struct.pack(">QQI", 8192, 4096, 4096) + b"\x00" * 64,
    ],
}

for target, seeds in SEEDS.items():
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        with open(os.path.join(d, hashlib.sha1(s).hexdigest()), "wb") as f:
            f.write(s)
    print(f"{target}: {len(seeds)} seeds")
