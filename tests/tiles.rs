//! Tiled tensors (`ttnn.TILE_LAYOUT`, docs/device-interface.md §8.3.2) end to end: host data stays dense row-major
//! of the logical shape; on the device a tiled buffer is 32×32 tiles of four 16×16 faces, its shape padded up to
//! whole tiles with zeros.
//!
//! - Transfers round-trip for shapes that are and are not multiples of 32, interleaved and sharded (every sharded
//!   layout, both orientations), DRAM and L1, float32 and bfloat16, through rings small enough that a tensor takes
//!   many records; each buffer's raw device bytes, read through a raw queue at the pages §8.3.2 defines (computed
//!   here from the document, not from the driver's accessor), are compared tile by tile with `hostref::tiles_of`,
//!   the document's in-tile order written out, padding zeros included.
//! - Every op (copy as to_layout/to_memory_config/reshard/typecast, eltwise binary with and without a broadcast row,
//!   unary, matmul, fill) on tiled operands, mixed with row-major ones, against the host references of
//!   `ttdrv_testkit::hostref`, with the tolerances of `tests/kernels.rs` (bit-exact except exp, gelu and matmul); and
//!   the padding of every tiled output is zero afterwards although the test filled the output's memory with garbage
//!   first (contract §8.3.2: kernels zero the padding their blocks border).
//! - Tiled specs the device cannot place are refused with a message naming the padded shape.

mod common;

use common::*;
use std::sync::Arc;
use ttdrv::contract::Memory;
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::transport::Transport;
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::*;
use ttdrv_testkit::expect_err;
use ttdrv_testkit::hostref::*;

const RING: u32 = 64 * 1024;

/// A device on an emulator we keep, plus a raw queue (queue 1, unused by the device) to reach device memory.
struct Rig {
    dev: Device,
    raw: RawQueue,
    _t: Arc<dyn Transport>,
}

impl Rig {
    fn new(issue: u32, compl: u32) -> Rig {
        let p = DeviceParams {
            issue_ring_size: issue,
            completion_ring_size: compl,
            hugepages: false,
            l1_small_size: 64 << 10,
            timeout: std::time::Duration::from_secs(60),
            ..DeviceParams::default()
        };
        let (_e, t) = emulator(EmuConfig::default());
        let dev = Device::open_transport(t.clone(), &p).unwrap();
        let raw = RawQueue::new(&t, 1, RING, RING);
        Rig { dev, raw, _t: t }
    }

    /// Where tile (`i`, `j`) of tiled buffer `b` lives, from §8.3.2: interleaved, tile `t = i × tiles_per_row + j`
    /// is page `t` in unit `t mod U`; sharded, the shard's own tiles, row-major, are its pages.
    fn tile_page(&self, b: &Buffer, i: u32, j: u32) -> (Memory, u16, u64) {
        let s = b.spec();
        let info = self.dev.info();
        let mem = s.mem.buffer_type.memory();
        let stride = b.page_stride() as u64;
        let (tr, tc) = (s.rows.div_ceil(32), s.cols.div_ceil(32));
        match s.mem.shard {
            None => {
                let units = if mem == Memory::Dram { info.dram_banks } else { info.grid_x * info.grid_y };
                let t = i * tc + j;
                (mem, (t % units) as u16, b.address() + (t / units) as u64 * stride)
            }
            Some(sh) => {
                let ([sr, sc], (str_, stc)) = (sh.shape, (sh.shape[0] / 32, sh.shape[1] / 32));
                let (rb, cb) = (tr / str_, tc / stc);
                let (si, sj) = (i / str_, j / stc);
                let pos = if sh.col_major { sj * rb + si } else { si * cb + sj };
                let unit = match sh.grid {
                    ShardGrid::Cores { x0, y0, x1, .. } => {
                        let w = (x1 - x0 + 1) as u32;
                        (y0 as u32 + pos / w) * info.grid_x + x0 as u32 + pos % w
                    }
                    ShardGrid::Banks { first, .. } => first as u32 + pos,
                };
                let page = (i % str_) * (sc / 32) + j % stc;
                assert!(sr % 32 == 0 && sc % 32 == 0);
                (mem, unit as u16, b.address() + page as u64 * stride)
            }
        }
    }

    /// The raw bytes of every tile of `b`, in row-major tile order.
    fn raw_tiles(&mut self, b: &Buffer) -> Vec<Vec<u8>> {
        let (tr, tc) = (b.shape()[0].div_ceil(32), b.shape()[1].div_ceil(32));
        let bytes = 1024 * b.dtype().size();
        let mut v = Vec::new();
        for i in 0..tr {
            for j in 0..tc {
                let (mem, unit, off) = self.tile_page(b, i, j);
                v.push(self.raw.read(mem, unit, off, bytes));
            }
        }
        v
    }

    /// Checks `b`'s device bytes against the tiles of the dense row-major `host`, padding zeros included.
    #[track_caller]
    fn check_tiles(&mut self, b: &Buffer, host: &[u8], what: &str) {
        let [rows, cols] = b.shape();
        let want = tiles_of(host, rows, cols, b.dtype().size());
        let tc = cols.div_ceil(32) as usize;
        for (t, (got, want)) in self.raw_tiles(b).iter().zip(&want).enumerate() {
            assert_bytes_eq(got, want, &format!("{what}: raw tile ({}, {})", t / tc, t % tc));
        }
    }

    /// Overwrites every tile of `b` on the device with garbage (padding included), through the raw queue.
    fn scribble(&mut self, b: &Buffer, seed: u64) {
        let (tr, tc) = (b.shape()[0].div_ceil(32), b.shape()[1].div_ceil(32));
        let bytes = pattern(1024 * b.dtype().size(), seed);
        for i in 0..tr {
            for j in 0..tc {
                let (mem, unit, off) = self.tile_page(b, i, j);
                self.raw.write_linear(mem, unit, off, &bytes);
            }
        }
        self.raw.drain();
    }

    fn roundtrip(&mut self, spec: &BufferSpec, seed: u64) {
        assert_eq!(spec.layout, TensorLayout::Tile);
        let b = self.dev.allocate(spec).unwrap_or_else(|e| panic!("allocate {spec}: {e}"));
        let data = pattern(spec.host_bytes() as usize, seed);
        b.write(0, &data, false).unwrap();
        assert_bytes_eq(&b.read_to_vec(0).unwrap(), &data, &format!("{spec}: read back"));
        // The non-blocking read delivers through the same untilize.
        let mut out = vec![0u8; data.len()];
        // SAFETY: `out` is neither read nor moved until finish() has returned.
        let _pending = unsafe { b.read_nonblocking(0, out.as_mut_ptr()).unwrap() };
        self.dev.finish(0).unwrap();
        assert_bytes_eq(&out, &data, &format!("{spec}: non-blocking read"));
        self.check_tiles(&b, &data, &spec.to_string());
    }
}

fn sharded_mem(bt: BufferType, layout: Layout, grid: ShardGrid, shape: [u32; 2], col_major: bool) -> MemoryConfig {
    sharded(bt, layout, grid, shape, col_major)
}

#[test]
fn tiled_buffers_round_trip_interleaved_in_dram_and_l1() {
    use DType::*;
    let mut rig = Rig::new(RING, RING);
    let shapes = [
        (32, 32, Float32),
        (64, 96, BFloat16),
        // One element: a tile of padding around it.
        (1, 1, BFloat16),
        (50, 70, Float32),
        (33, 17, BFloat16),
        // Larger than the 64 KiB rings: many records each way.
        (257, 1031, Float32),
        // One tile row of 282 tiles.
        (3, 9001, Float32),
    ];
    for (k, mem) in [MemoryConfig::DRAM, MemoryConfig::L1].into_iter().enumerate() {
        for (i, &(r, c, d)) in shapes.iter().enumerate() {
            rig.roundtrip(&BufferSpec::tiled(r, c, d, mem), 10 * k as u64 + i as u64);
        }
    }
}

#[test]
fn tiled_buffers_round_trip_sharded_in_l1_and_dram_in_both_orientations() {
    use BufferType::{Dram, L1};
    use DType::*;
    use Layout::*;
    let mut rig = Rig::new(RING, RING);
    let cases = [
        (96, 70, Float32, L1, HeightSharded, cores(0, 0, 2, 0), [32, 96]),
        (50, 200, BFloat16, L1, WidthSharded, cores(0, 1, 6, 1), [64, 32]),
        // [128, 160] padded: 2 x 5 shards of 2 x 1 tiles.
        (100, 130, Float32, L1, BlockSharded, cores(0, 0, 4, 1), [64, 32]),
        // 768 KiB, larger than the ring; 16 shards of 4 x 3 tiles.
        (512, 384, Float32, L1, BlockSharded, cores(1, 1, 4, 4), [128, 96]),
        (70, 64, BFloat16, Dram, BlockSharded, banks(0, 5), [32, 32]),
        (128, 40, Float32, Dram, HeightSharded, banks(0, 3), [32, 64]),
        (40, 300, Float32, Dram, WidthSharded, banks(2, 6), [64, 64]),
    ];
    for (i, &(r, c, d, bt, layout, grid, shape)) in cases.iter().enumerate() {
        for col_major in [false, true] {
            let spec = BufferSpec::tiled(r, c, d, sharded_mem(bt, layout, grid, shape, col_major));
            rig.roundtrip(&spec, 100 + 2 * i as u64 + col_major as u64);
        }
    }
}

/// The raw bytes of a small tiled tensor, checked at hand-computed positions of the documented order (§8.3.2): four
/// 16×16 faces, top-left, top-right, bottom-left, bottom-right, each row-major; padding zero.
#[test]
fn raw_device_bytes_follow_the_documented_face_order() {
    let mut rig = Rig::new(RING, RING);
    let (rows, cols) = (33u32, 17u32);
    // Element (r, c) holds r * 1000 + c + 1, so no data element is 0.
    let vals: Vec<f32> = (0..rows * cols).map(|i| ((i / cols) * 1000 + i % cols + 1) as f32).collect();
    let b = rig
        .dev
        .buffer_from_host(
            &BufferSpec::tiled(rows, cols, DType::Float32, MemoryConfig::DRAM),
            0,
            &encode(&vals, DType::Float32),
        )
        .unwrap();
    rig.dev.finish(0).unwrap();
    let tiles: Vec<Vec<f32>> = rig.raw_tiles(&b).iter().map(|t| decode(t, DType::Float32)).collect();
    assert_eq!(tiles.len(), 2, "[33, 17] is 2 x 1 tiles");
    let v = |r: u32, c: u32| (r * 1000 + c + 1) as f32;
    let t0 = &tiles[0];
    // Face 0 (rows 0-15, columns 0-15), row-major.
    assert_eq!((t0[0], t0[1], t0[15], t0[16], t0[255]), (v(0, 0), v(0, 1), v(0, 15), v(1, 0), v(15, 15)));
    // Face 1 starts at element 256 with (0, 16), the last data column; (0, 17) beyond it is padding.
    assert_eq!((t0[256], t0[257], t0[256 + 16]), (v(0, 16), 0.0, v(1, 16)));
    // Face 2 starts at element 512 with (16, 0); face 3 at 768 with (16, 16).
    assert_eq!((t0[512], t0[512 + 15], t0[768], t0[768 + 1]), (v(16, 0), v(16, 15), v(16, 16), 0.0));
    // Tile (1, 0) holds row 32 only: its first face row, then zeros.
    let t1 = &tiles[1];
    assert_eq!(&t1[..16], &(0..16).map(|c| v(32, c)).collect::<Vec<_>>()[..]);
    assert_eq!((t1[256], t1[16]), (v(32, 16), 0.0));
    let data = [(0..16).collect::<Vec<usize>>(), vec![256]].concat();
    assert!(t1.iter().enumerate().all(|(k, &x)| data.contains(&k) || x == 0.0), "tile (1, 0) padding is not zero");
    // Bank placement: tile t is page t, in bank t mod 8.
    assert_eq!((rig.tile_page(&b, 0, 0).1, rig.tile_page(&b, 1, 0).1), (0, 1));
}

#[test]
fn tiled_specs_the_device_cannot_place_are_refused() {
    let rig = Rig::new(RING, RING);
    let dev = &rig.dev;
    let l1 = |layout, grid, shape| {
        BufferSpec::tiled(50, 70, DType::Float32, sharded_mem(BufferType::L1, layout, grid, shape, false))
    };
    let bad = |spec: BufferSpec, needles: &[&str]| {
        expect_err!(dev.allocate(&spec), Error::InvalidBufferSpec { .. }, needles);
    };
    bad(l1(Layout::BlockSharded, cores(0, 0, 7, 7), [32, 30]), &["[32, 30]", "whole 32x32 tiles", "multiple of 32"]);
    bad(l1(Layout::BlockSharded, cores(0, 0, 7, 7), [16, 32]), &["whole 32x32 tiles"]);
    bad(
        l1(Layout::HeightSharded, cores(0, 0, 7, 7), [32, 64]),
        &["height sharding", "shard width 64", "96 columns (70 padded to whole tiles)"],
    );
    bad(
        l1(Layout::WidthSharded, cores(0, 0, 7, 7), [32, 32]),
        &["shard height 32", "64 rows (50 padded to whole tiles)"],
    );
    bad(
        l1(Layout::BlockSharded, cores(0, 0, 7, 7), [64, 64]),
        &["[64, 64] does not divide", "[64, 96] (the shape [50, 70] padded to whole tiles)"],
    );
    // Shapes whose padding overflows, or that no device memory holds, fail cleanly.
    bad(
        BufferSpec::tiled(u32::MAX, 1, DType::Float32, MemoryConfig::DRAM),
        &["padded up to whole tiles", "4294967296"],
    );
    expect_err!(
        dev.allocate(&BufferSpec::tiled(1 << 30, 1 << 30, DType::Float32, MemoryConfig::L1)),
        Error::OutOfDeviceMemory { .. },
        ["L1"]
    );
    // Host data is the logical shape, not the padded one.
    let b = dev.allocate(&BufferSpec::tiled(50, 70, DType::Float32, MemoryConfig::DRAM)).unwrap();
    expect_err!(b.write(0, &vec![0u8; 64 * 96 * 4], false), Error::HostLength { .. }, ["pass exactly 14000 bytes"]);
    assert_eq!(b.spec().padded_shape(), [64, 96]);
    assert!(b.spec().to_string().contains("Float32 tiled DRAM"), "{}", b.spec());
}

/// Copies between row-major and tiled tensors (to_layout: tilize and untilize on the device), between tiled tensors
/// of different memory configs (to_memory_config, reshard, reshard_into) and across element types (typecast), all
/// bit-exact within one element type and round-to-nearest-even to bfloat16; tiled outputs end with zero padding.
#[test]
fn copies_tilize_untilize_and_reshard_tiled_tensors() {
    let mut rig = Rig::new(1 << 20, 1 << 20);
    let (rows, cols) = (50, 70);
    let tiled = tile_configs(rows, cols);
    let row_major = [
        ("DRAM", MemoryConfig::DRAM),
        ("L1", MemoryConfig::L1),
        ("L1 height [10, 70]", sharded(BufferType::L1, Layout::HeightSharded, cores(2, 2, 6, 2), [10, 70], false)),
    ];
    for dtype in [DType::Float32, DType::BFloat16] {
        let bytes = pattern((rows * cols) as usize * dtype.size(), 7 + dtype as u64);
        for (i, (tn, tm)) in tiled.iter().enumerate() {
            let (rn, rm) = row_major[i % row_major.len()];
            let what = |s: &str| format!("{dtype:?} {s} ({tn}, {rn})");
            let src = rig.dev.buffer_from_host(&BufferSpec::new(rows, cols, dtype, rm), 0, &bytes).unwrap();
            // Tilize on the device.
            let t = rig.dev.to_layout(0, &src, TensorLayout::Tile, tm).unwrap();
            assert_eq!((t.spec().layout, t.spec().mem), (TensorLayout::Tile, *tm));
            assert_bytes_eq(&t.read_to_vec(0).unwrap(), &bytes, &what("tilize"));
            rig.check_tiles(&t, &bytes, &what("tilize"));
            // Tiled to tiled, into an output full of garbage: the copy writes the data and zeroes the padding.
            let (_, other) = tiled[(i + 3) % tiled.len()];
            let o = rig.dev.allocate(&BufferSpec::tiled(rows, cols, dtype, other)).unwrap();
            rig.scribble(&o, i as u64);
            rig.dev.reshard_into(0, &t, &o).unwrap();
            rig.dev.finish(0).unwrap();
            rig.check_tiles(&o, &bytes, &what("reshard_into"));
            let m = rig.dev.to_memory_config(0, &o, &other).unwrap();
            assert_eq!(m.spec().layout, TensorLayout::Tile, "to_memory_config keeps the tensor layout");
            assert_bytes_eq(&m.read_to_vec(0).unwrap(), &bytes, &what("to_memory_config"));
            // Untilize on the device, into a row-major buffer of another config.
            let (_, rm2) = row_major[(i + 1) % row_major.len()];
            let u = rig.dev.to_layout(0, &o, TensorLayout::RowMajor, &rm2).unwrap();
            assert_eq!(u.spec().layout, TensorLayout::RowMajor);
            assert_bytes_eq(&u.read_to_vec(0).unwrap(), &bytes, &what("untilize"));
        }
    }
    // Typecast of a tiled tensor converts its elements and keeps it tiled.
    let mut rng = Rng::new(5);
    let vals: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-100.0, 100.0) * 1.001).collect();
    let (_, tm) = tiled[5];
    let src = rig
        .dev
        .buffer_from_host(&BufferSpec::tiled(rows, cols, DType::Float32, tm), 0, &encode(&vals, DType::Float32))
        .unwrap();
    let narrow = rig.dev.typecast(0, &src, DType::BFloat16, &MemoryConfig::L1).unwrap();
    assert_eq!(narrow.spec().layout, TensorLayout::Tile);
    let want = encode(&vals, DType::BFloat16);
    assert_bytes_eq(&narrow.read_to_vec(0).unwrap(), &want, "typecast tiled f32 -> bf16");
    rig.check_tiles(&narrow, &want, "typecast tiled f32 -> bf16");
}

/// Asserts `got` equals `want` bit for bit, naming the first differing element.
#[track_caller]
fn assert_exact(got: &[f32], want: &[f32], cols: u32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits()) {
        panic!("{what}: element [{}, {}] is {}, want {}", i / cols as usize, i % cols as usize, got[i], want[i]);
    }
}

fn upload(rig: &Rig, vals: &[f32], spec: BufferSpec) -> Buffer {
    rig.dev.buffer_from_host(&spec, 0, &encode(vals, spec.dtype)).unwrap_or_else(|e| panic!("upload {spec}: {e}"))
}

fn download(b: &Buffer) -> Vec<f32> {
    decode(&b.read_to_vec(0).unwrap(), b.dtype())
}

/// A fresh output of `spec` whose device memory (padding included) holds garbage.
fn dirty_output(rig: &mut Rig, spec: BufferSpec, seed: u64) -> Buffer {
    let o = rig.dev.allocate(&spec).unwrap();
    if spec.layout == TensorLayout::Tile {
        rig.scribble(&o, seed);
    }
    o
}

/// Checks that a tiled output's padding is zero (its data was checked through a read).
#[track_caller]
fn check_padding(rig: &mut Rig, b: &Buffer, what: &str) {
    if b.spec().layout != TensorLayout::Tile {
        return;
    }
    let got = b.read_to_vec(0).unwrap();
    rig.check_tiles(b, &got, &format!("{what}: padding"));
}

/// add, sub, mul (same shape and with a one-row operand broadcast over the rows), relu, scale, exp, gelu and fill on
/// tiled operands in every tiled config, mixed with row-major ones. Tolerances as `tests/kernels.rs`: exact for
/// add/sub/mul/relu/scale/fill (bf16: of the f32 result rounded to nearest even); exp and gelu within 1e-6
/// relative (f32, gelu plus 4 eps × |x|) or 1 bfloat16 step.
#[test]
fn eltwise_and_fill_on_tiled_and_mixed_operands_match_the_host() {
    let mut rig = Rig::new(1 << 20, 1 << 20);
    let (rows, cols) = (50u32, 70u32);
    let n = (rows * cols) as usize;
    let cfgs = tile_configs(rows, cols);
    let nc = cfgs.len();
    let mut rng = Rng::new(17);
    let layouts = [TensorLayout::Tile, TensorLayout::RowMajor];
    let spec_of = |layout: TensorLayout, dtype, cfg: MemoryConfig, r, c| {
        // Row-major operands take the interleaved configs of the sweep; sharded ones would need other shard shapes.
        let mem = if layout == TensorLayout::RowMajor && cfg.shard.is_some() { MemoryConfig::L1 } else { cfg };
        BufferSpec::new(r, c, dtype, mem).with_layout(layout)
    };
    for dtype in [DType::Float32, DType::BFloat16] {
        for (i, op) in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul].into_iter().cycle().take(nc).enumerate() {
            let ((an, am), (bn, bm), (on, om)) = (cfgs[i], cfgs[(i + 2) % nc], cfgs[(i + 5) % nc]);
            // a tiled; b and out tiled or row-major by turns.
            let (bl, ol) = (layouts[i % 2], layouts[(i / 2) % 2]);
            let a = random_values(&mut rng, n, -8.0, 8.0, dtype);
            let b = random_values(&mut rng, n, -8.0, 8.0, dtype);
            let ab = upload(&rig, &a, spec_of(TensorLayout::Tile, dtype, am, rows, cols));
            let bb = upload(&rig, &b, spec_of(bl, dtype, bm, rows, cols));
            let o = dirty_output(&mut rig, spec_of(ol, dtype, om, rows, cols), i as u64);
            rig.dev.binary_into(0, op, &ab, &bb, &o).unwrap();
            let what = format!("{dtype:?} {op:?}: tiled {an} . {bl:?} {bn} -> {ol:?} {on}");
            let want: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| quantize1(binary_ref(op, x, y), dtype)).collect();
            assert_exact(&download(&o), &want, cols, &what);
            check_padding(&mut rig, &o, &what);
            // b is one tiled row ([1, 70], one tile row of padding), broadcast; the new output is tiled like a.
            let row = random_values(&mut rng, cols as usize, -8.0, 8.0, dtype);
            let rb = upload(&rig, &row, spec_of(layouts[i % 2], dtype, MemoryConfig::DRAM, 1, cols));
            let out = rig.dev.binary(0, op, &ab, &rb, &om).unwrap();
            assert_eq!(out.spec().layout, TensorLayout::Tile, "the output takes a's layout");
            let want: Vec<f32> = a
                .iter()
                .enumerate()
                .map(|(k, &x)| quantize1(binary_ref(op, x, row[k % cols as usize]), dtype))
                .collect();
            assert_exact(&download(&out), &want, cols, &format!("{what} (row broadcast)"));
            check_padding(&mut rig, &out, &what);
        }
        let ops = [UnaryOp::Relu, UnaryOp::Scale(-0.37), UnaryOp::Exp, UnaryOp::Gelu];
        for (i, (name, mem)) in cfgs.iter().enumerate() {
            let op = ops[i % ops.len()];
            let (lo, hi) = if op == UnaryOp::Exp { (-10.0, 10.0) } else { (-4.0, 4.0) };
            let x = random_values(&mut rng, n, lo, hi, dtype);
            // Row-major input by turns, tiled output: the unary kernel tilizes as it goes.
            let xb = upload(&rig, &x, spec_of(layouts[i % 2], dtype, *mem, rows, cols));
            let o = dirty_output(&mut rig, BufferSpec::tiled(rows, cols, dtype, cfgs[(i + 1) % nc].1), i as u64);
            rig.dev.unary_into(0, op, &xb, &o).unwrap();
            let got = download(&o);
            let what = format!("{dtype:?} {op:?}: {name}");
            for (e, (&g, &v)) in got.iter().zip(&x).enumerate() {
                let ok = match op {
                    UnaryOp::Relu => g.to_bits() == quantize1(v.max(0.0), dtype).to_bits(),
                    UnaryOp::Scale(p) => g.to_bits() == quantize1(v * p, dtype).to_bits(),
                    _ => {
                        let r = if op == UnaryOp::Exp { (v as f64).exp() } else { gelu_f64(v as f64) };
                        match dtype {
                            DType::Float32 => {
                                let cancel = if op == UnaryOp::Gelu {
                                    4.0 * f32::EPSILON as f64 * (v as f64).abs()
                                } else {
                                    0.0
                                };
                                (g as f64 - r).abs() <= 1e-6 * r.abs() + cancel
                            }
                            DType::BFloat16 => bf16_steps(g, round_bf16(r as f32)) <= 1,
                        }
                    }
                };
                assert!(ok, "{what}: element {e}: f({v}) = {g}");
            }
            check_padding(&mut rig, &o, &what);
            // fill overwrites every data element and zeroes the padding.
            let f = dirty_output(&mut rig, BufferSpec::tiled(rows, cols, dtype, *mem), 50 + i as u64);
            rig.dev.fill(0, &f, -3.75).unwrap();
            assert_exact(&download(&f), &vec![quantize1(-3.75, dtype); n], cols, &format!("{dtype:?} fill {name}"));
            check_padding(&mut rig, &f, &format!("{dtype:?} fill {name}"));
        }
    }
}

/// `[50, 40] x [40, 70]` with tiled operands in every tiled config, mixed with row-major ones, against the f64
/// reference (tolerances of `hostref::check_matmul`); the tiled output's padding is zero.
#[test]
fn matmul_on_tiled_and_mixed_operands_matches_the_host() {
    let mut rig = Rig::new(1 << 20, 1 << 20);
    let (m, k, n) = (50u32, 40u32, 70u32);
    let (ca, cb, co) = (tile_configs(m, k), tile_configs(k, n), tile_configs(m, n));
    let nc = ca.len();
    let mut rng = Rng::new(23);
    for dtype in [DType::Float32, DType::BFloat16] {
        for i in 0..nc {
            let ((an, am), (bn, bm), (on, om)) = (ca[i], cb[(i + 3) % nc], co[(i + 6) % nc]);
            // b row-major (interleaved) every third case.
            let b_spec = if i % 3 == 2 {
                BufferSpec::new(k, n, dtype, MemoryConfig::DRAM)
            } else {
                BufferSpec::tiled(k, n, dtype, bm)
            };
            let a = random_values(&mut rng, (m * k) as usize, -1.0, 1.0, dtype);
            let b = random_values(&mut rng, (k * n) as usize, -1.0, 1.0, dtype);
            let ab = upload(&rig, &a, BufferSpec::tiled(m, k, dtype, am));
            let bb = upload(&rig, &b, b_spec);
            let what = format!("{dtype:?} matmul: tiled {an} x {} {bn} -> {on}", b_spec.layout.name());
            let out = if i % 2 == 0 {
                let o = rig.dev.matmul(0, &ab, &bb, &om).unwrap();
                assert_eq!(o.spec().layout, TensorLayout::Tile, "{what}: the output takes a's layout");
                o
            } else {
                let o = dirty_output(&mut rig, BufferSpec::tiled(m, n, dtype, om), i as u64);
                rig.dev.matmul_into(0, &ab, &bb, &o).unwrap();
                o
            };
            check_matmul(&a, &b, &download(&out), [m as usize, k as usize, n as usize], dtype)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            check_padding(&mut rig, &out, &what);
        }
    }
}

/// A device of contract 1.0: the emulator with its `VERSION` register reading 1.0, everything else passed through.
struct Contract10(Arc<dyn Transport>);

impl Transport for Contract10 {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn read32(&self, off: ttdrv::contract::regs::BarOffset) -> u32 {
        if off == ttdrv::contract::regs::global::VERSION { 1 << 16 } else { self.0.read32(off) }
    }
    fn write32(&self, off: ttdrv::contract::regs::BarOffset, val: u32) {
        self.0.write32(off, val)
    }
    fn iova_ranges(&self) -> Vec<std::ops::Range<u64>> {
        self.0.iova_ranges()
    }
    fn dma_map(
        &self,
        mem: &ttdrv::transport::DmaMemory,
        iova: ttdrv::contract::Iova,
    ) -> Result<(), ttdrv::transport::TransportError> {
        self.0.dma_map(mem, iova)
    }
    fn dma_unmap(&self, iova: ttdrv::contract::Iova, len: u64) -> Result<(), ttdrv::transport::TransportError> {
        self.0.dma_unmap(iova, len)
    }
    fn reset(&self) -> Result<(), ttdrv::transport::TransportError> {
        self.0.reset()
    }
    fn irq_vectors(&self) -> u32 {
        self.0.irq_vectors()
    }
    fn wait_irq(&self, vector: u32, timeout: std::time::Duration) -> Result<bool, ttdrv::transport::TransportError> {
        self.0.wait_irq(vector, timeout)
    }
    fn needs_pinned_memory(&self) -> bool {
        self.0.needs_pinned_memory()
    }
}

/// A device of contract 1.0 reads accessor word 11 as reserved and would place a tiled tensor's elements row-major:
/// the driver refuses tiled buffers on it, naming the contract versions and §8.3.2, and row-major ones still work.
#[test]
fn a_contract_1_0_device_refuses_tiled_buffers() {
    let (_e, t) = emulator(EmuConfig::default());
    let t: Arc<dyn Transport> = Arc::new(Contract10(t));
    let dev = Device::open_transport(t, &DeviceParams { hugepages: false, ..DeviceParams::default() }).unwrap();
    assert_eq!((dev.info().version_major, dev.info().version_minor), (1, 0));
    let spec = BufferSpec::tiled(32, 32, DType::Float32, MemoryConfig::DRAM);
    expect_err!(
        dev.allocate(&spec),
        Error::Unsupported(_),
        ["device contract 1.0", "no tiled tensors", "they need 1.1", "§8.3.2", "row-major"]
    );
    let data = pattern(32 * 32 * 4, 1);
    let b = dev.buffer_from_host(&BufferSpec::new(32, 32, DType::Float32, MemoryConfig::DRAM), 0, &data).unwrap();
    expect_err!(dev.to_layout(0, &b, TensorLayout::Tile, &MemoryConfig::DRAM), Error::Unsupported(_), ["no tiled"]);
    assert_eq!(b.read_to_vec(0).unwrap(), data);
}

/// The padding rule holds for any blocks, not only the tile-aligned ones the ops use: a hand-built fill over four
/// cores whose blocks cut tiles ([0, 20) and [20, 50) rows by [0, 33) and [33, 70) columns) leaves every padding
/// element zero, whichever core's block borders it (contract §8.3.2).
#[test]
fn padding_is_zeroed_whatever_the_blocks() {
    use ttdrv::contract::kernel::{Block, BuiltinKernel};
    use ttdrv::contract::records::CoreRect;
    use ttdrv::device::program::{KernelSource, ProgramDesc};
    let mut rig = Rig::new(RING, RING);
    for dtype in [DType::Float32, DType::BFloat16] {
        let out = rig.dev.allocate(&BufferSpec::tiled(50, 70, dtype, MemoryConfig::L1)).unwrap();
        rig.scribble(&out, 3);
        let k = BuiltinKernel::Fill;
        let prog = rig
            .dev
            .program(ProgramDesc {
                kernel: KernelSource::Builtin(k),
                cores: CoreRect { x0: 0, y0: 0, x1: 1, y1: 1 },
                ct_args: vec![],
                cbs: vec![],
                sems: vec![],
                rt_words: k.rt_words() as u16,
            })
            .unwrap();
        let acc = out.accessor().to_words();
        let mut rt = Vec::new();
        for (r0, r1, c0, c1) in [(0, 20, 0, 33), (0, 20, 33, 70), (20, 50, 0, 33), (20, 50, 33, 70)] {
            rt.extend_from_slice(&Block { r0, r1, c0, c1 }.to_words());
            rt.extend_from_slice(&acc);
            rt.push(1.5f32.to_bits());
        }
        prog.run(0, &rt, &[&out]).unwrap();
        let want = encode(&[1.5; 50 * 70], dtype);
        assert_bytes_eq(&out.read_to_vec(0).unwrap(), &want, &format!("{dtype:?} fill"));
        rig.check_tiles(&out, &want, &format!("{dtype:?} fill over tile-cutting blocks"));
    }
}
