#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/record_decode: one record stream per file (the first byte picks the
emulated device: even unpaced, odd paced), built from the layouts of docs/device-interface.md §4 and §8. The fuzzer
starts from these (and from whatever else is committed in the corpus directory) and mutates them."""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "record_decode")
PAD, WL, WP, RL, RP, LAUNCH, EREC, EWAIT, EXEC = range(1, 10)
DRAM, L1 = 0, 1


def rec(op, body, payload=b"", flags=0, tag=0, slot=0):
    fixed = bytearray(64)
    for off, fmt, v in body:
        struct.pack_into("<" + fmt, fixed, off, v)
    data = bytes(fixed) + payload
    data += b"\0" * (-len(data) % 64)
    struct.pack_into("<BBxxIII", fixed, 0, op, flags, len(data), tag, slot)
    return bytes(fixed) + data[64:]


def linear(mem, unit, offset, n):
    return [(16, "B", mem), (18, "H", unit), (24, "Q", offset), (32, "Q", n)]


def paged(mem, page, base, stride, start, count):
    return [(16, "B", mem), (20, "I", page), (24, "Q", base), (32, "I", stride), (36, "I", start), (40, "I", count)]


def image(name):
    n = name.encode()
    return struct.pack("<IHHII", 0x494B5454, 1, 0, 64, 0) + n + b"\0" * (48 - len(n))


def upload(name, off):
    img = image(name)
    return rec(WL, linear(DRAM, 0, off, len(img)), img)


def acc(mem, addr, rows, cols, stride, layout=0, dtype=0, srows=0, scols=0, grid=0):
    return [mem, layout, dtype, addr, rows, cols, stride, srows, scols, grid, 0, 0]


def launch(koff, rect, ct, rt_per_core, cbs=(), flags=0):
    words = list(ct) + [w for cb in cbs for w in cb] + [w for core in rt_per_core for w in core]
    nrt = len(rt_per_core[0])
    body = [(16, "H", 0), (18, "H", len(ct)), (20, "H", nrt), (22, "H", len(cbs)), (24, "Q", koff),
            (32, "B", rect[0]), (33, "B", rect[1]), (34, "B", rect[2]), (35, "B", rect[3]), (36, "H", 0)]
    return rec(LAUNCH, body, struct.pack("<%dI" % len(words), *words), flags=flags, tag=9, slot=2)


def f32(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def save(name, pick, *records):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(bytes([pick]) + b"".join(records))


os.makedirs(OUT, exist_ok=True)
a = acc(L1, 0x20000, 4, 16, 64)
b = acc(L1, 0x21000, 4, 16, 64)
o = acc(L1, 0x22000, 4, 16, 64)
blk = [0, 4, 0, 16]
save("write_read_linear", 0, rec(WL, linear(DRAM, 3, 0x4000, 100), bytes(range(100))),
     rec(RL, linear(DRAM, 3, 0x4000, 100), tag=5))
save("write_read_paged", 1, rec(WP, paged(L1, 48, 0x20000, 64, 3, 4), bytes(range(192))),
     rec(RP, paged(L1, 48, 0x20000, 64, 3, 4), flags=1, tag=6, slot=1))
save("fill", 0, upload("ttdrv.fill", 0x8000), launch(0x8000, (0, 0, 0, 0), [], [blk + a + [f32(1.5)]]),
     rec(RP, paged(L1, 64, 0x20000, 64, 0, 4)))
save("unary_binary_copy", 0, upload("ttdrv.fill", 0x8000), upload("ttdrv.eltwise_unary", 0x8040),
     upload("ttdrv.eltwise_binary", 0x8080), upload("ttdrv.copy", 0x80c0),
     launch(0x8000, (0, 0, 0, 0), [], [blk + a + [f32(-2.0)]]),
     launch(0x8040, (0, 0, 1, 0), [3], [[0, 2, 0, 16] + a + b + [f32(0.5)], [2, 4, 0, 16] + a + b + [f32(0.5)]]),
     launch(0x8080, (0, 0, 0, 0), [0, 0], [blk + a + b + o]),
     launch(0x80c0, (0, 0, 0, 0), [], [blk + o + acc(DRAM, 0x10000, 4, 16, 64, layout=1, srows=1, scols=16,
                                                       grid=0 | (3 << 16))]))
save("matmul", 1, upload("ttdrv.matmul", 0x8000),
     launch(0x8000, (0, 0, 0, 0), [], [[0, 4, 0, 4] + acc(L1, 0x20000, 4, 16, 64) + acc(L1, 0x21000, 16, 4, 16)
                                       + acc(L1, 0x22000, 4, 4, 16)], cbs=[(0, 64, 2, 0)], flags=1))
save("sharded_l1", 0, upload("ttdrv.fill", 0x8000),
     launch(0x8000, (1, 1, 2, 1), [], [[0, 2, 0, 16] + acc(L1, 0x20000, 4, 16, 64, layout=1, srows=2, scols=16,
                                                           grid=0x01020101) + [f32(3.0)],
                                       [2, 4, 0, 16] + acc(L1, 0x20000, 4, 16, 64, layout=1, srows=2, scols=16,
                                                           grid=0x01020101) + [f32(3.0)]]))
trace = rec(PAD, []) + launch(0x8000, (0, 0, 0, 0), [], [blk + a + [f32(7.0)]], flags=1)
save("exec_trace", 1, upload("ttdrv.fill", 0x8000), rec(WL, linear(DRAM, 0, 0x10000, len(trace)), trace),
     rec(EXEC, [(16, "I", 4096), (24, "Q", 0x10000), (32, "Q", len(trace))], flags=1, slot=4))
save("events", 0, rec(EREC, [(16, "I", 1)], flags=2), rec(EWAIT, [(16, "H", 0), (20, "I", 1)]),
     rec(EREC, [(16, "I", 2)]), rec(PAD, [], b"\0" * 64))
save("bad", 0, rec(0x7f, []), rec(WL, linear(L1, 999, 0, 64), b"x" * 64),
     rec(WP, paged(DRAM, 64, (1 << 64) - 64, 64, 8, 1), b"y" * 64))
