//! Host <-> device transfers: every size class (tiny, odd, exactly the issue ring, larger than it, 256 MiB) and
//! every layout (interleaved DRAM and L1; height, width and block sharding in L1 and over DRAM banks, in both shard
//! orientations), verified byte for byte; placement is checked independently of the driver by reading device
//! memory through a raw queue at the addresses the contract's tensor accessor (`Accessor::locate`, which kernels
//! use) computes. Then misuse: each returns an `InvalidArgument` error whose message names the problem.
//!
//! The smallest possible transfer is 2 bytes (one bfloat16); element sizes are 2 and 4 bytes, so no tensor has an
//! odd byte count. "Odd" sizes here are odd element counts and row lengths that are not multiples of the
//! alignment ([3, 5] bf16 = 30 bytes, [7, 13] f32 = 364 bytes).

mod common;

use common::*;
use std::sync::Arc;
use ttdrv::transport::Transport;
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::*;
use ttdrv_testkit::expect_err;

const RING: u32 = 64 * 1024;

fn params(issue: u32, compl: u32) -> DeviceParams {
    DeviceParams {
        issue_ring_size: issue,
        completion_ring_size: compl,
        hugepages: false,
        timeout: std::time::Duration::from_secs(60),
        ..DeviceParams::default()
    }
}

/// A device on an emulator we keep, plus a raw queue (queue 1, unused by the device) to inspect device memory.
struct Rig {
    dev: Device,
    raw: RawQueue,
    _t: Arc<dyn Transport>,
}

impl Rig {
    fn new(p: &DeviceParams) -> Rig {
        let (_e, t) = emulator(EmuConfig::default());
        let dev = Device::open_transport(t.clone(), p).unwrap();
        let raw = RawQueue::new(&t, 1, RING, RING);
        Rig { dev, raw, _t: t }
    }

    /// Writes a pattern, reads it back through the driver and compares; then checks where the bytes are in
    /// device memory (every row up to 64 rows, else a sample of rows).
    fn roundtrip(&mut self, spec: &BufferSpec, seed: u64) {
        let b = self.dev.allocate(spec).unwrap_or_else(|e| panic!("allocate {spec}: {e}"));
        let data = pattern(spec.host_bytes() as usize, seed);
        b.write(0, &data, false).unwrap();
        let got = b.read_to_vec(0).unwrap();
        assert_bytes_eq(&got, &data, &format!("{spec}: read back"));
        self.check_placement(&b, &data);
    }

    fn check_placement(&mut self, b: &Buffer, data: &[u8]) {
        let acc = b.accessor();
        let geo = self.dev.info().geometry();
        let es = b.dtype().size();
        let [rows, cols] = b.shape();
        let sample: Vec<u32> = if rows <= 64 {
            (0..rows).collect()
        } else {
            let mut v: Vec<u32> = (0..rows).step_by((rows / 29) as usize).collect();
            v.extend([1, rows / 2, rows - 2, rows - 1]);
            v
        };
        for r in sample {
            let mut c = 0;
            while c < cols {
                let run = acc.locate(&geo, r, c);
                let n = (run.len as usize).min(4096 / es).max(1);
                let bytes = self.raw.read(acc.mem, run.unit, run.offset, n * es);
                let at = (r as usize * cols as usize + c as usize) * es;
                assert_bytes_eq(
                    &bytes,
                    &data[at..at + n * es],
                    &format!("{}: element [{r}, {c}] at unit {} offset {:#x}", b.spec(), run.unit, run.offset),
                );
                c += n as u32;
            }
        }
    }
}

fn shapes_interleaved(mem: MemoryConfig) -> Vec<BufferSpec> {
    vec![
        // 2 bytes: the smallest transfer there is.
        BufferSpec::new(1, 1, DType::BFloat16, mem),
        BufferSpec::new(3, 5, DType::BFloat16, mem),
        BufferSpec::new(7, 13, DType::Float32, mem),
        BufferSpec::new(1, 3, DType::Float32, mem),
        // Exactly the 64 KiB issue ring.
        BufferSpec::new(64, 512, DType::BFloat16, mem),
        // Larger than the ring, odd rows and columns.
        BufferSpec::new(257, 1031, DType::Float32, mem),
        // Rows longer than the largest record (16 KiB with a 64 KiB ring): split into column pieces.
        BufferSpec::new(3, 9001, DType::Float32, mem),
    ]
}

#[test]
fn interleaved_dram_every_size_class() {
    let mut rig = Rig::new(&params(RING, RING));
    for (i, s) in shapes_interleaved(MemoryConfig::DRAM).iter().enumerate() {
        rig.roundtrip(s, i as u64 + 1);
    }
}

#[test]
fn interleaved_l1_every_size_class() {
    let mut rig = Rig::new(&params(RING, RING));
    for (i, s) in shapes_interleaved(MemoryConfig::L1).iter().enumerate() {
        rig.roundtrip(s, i as u64 + 100);
    }
}

/// With the default issue ring: a transfer of exactly the ring size, and one larger, in DRAM and L1.
#[test]
fn exactly_and_beyond_the_default_ring() {
    let p = DeviceParams { hugepages: false, ..DeviceParams::default() };
    let mut rig = Rig::new(&p);
    let ring = p.issue_ring_size as u64;
    let rows = (ring / (2048 * 4)) as u32;
    let exact = BufferSpec::new(rows, 2048, DType::Float32, MemoryConfig::DRAM);
    assert_eq!(exact.host_bytes(), ring);
    rig.roundtrip(&exact, 5);
    rig.roundtrip(&BufferSpec::new(rows, 2048, DType::Float32, MemoryConfig::L1), 6);
    // Odd sizes, and more than the ring.
    let beyond = BufferSpec::new(rows + 7, 2047, DType::Float32, MemoryConfig::DRAM);
    assert!(beyond.host_bytes() > ring);
    rig.roundtrip(&beyond, 7);
}

/// 256 MiB, a quarter of the emulator's default 1 GiB DRAM, through the default rings.
#[test]
fn interleaved_dram_256_mib() {
    let dev = Device::open("emu", &DeviceParams { hugepages: false, ..DeviceParams::default() }).unwrap();
    let spec = BufferSpec::new(8192, 8192, DType::Float32, MemoryConfig::DRAM);
    assert_eq!(spec.host_bytes(), 256 << 20);
    let b = dev.allocate(&spec).unwrap();
    let data = pattern(spec.host_bytes() as usize, 256);
    b.write(0, &data, false).unwrap();
    let got = b.read_to_vec(0).unwrap();
    assert_bytes_eq(&got, &data, "256 MiB");
}

fn cores(x0: u8, y0: u8, x1: u8, y1: u8) -> ShardGrid {
    ShardGrid::Cores { x0, y0, x1, y1 }
}

fn banks(first: u16, last: u16) -> ShardGrid {
    ShardGrid::Banks { first, last }
}

fn sharded(bt: BufferType, layout: Layout, grid: ShardGrid, shape: [u32; 2], col_major: bool) -> MemoryConfig {
    MemoryConfig { buffer_type: bt, layout, shard: Some(ShardSpec { grid, shape, col_major }) }
}

/// (rows, cols, dtype, layout, grid, shard shape) for each buffer type.
type Case = (u32, u32, DType, Layout, ShardGrid, [u32; 2]);

fn sharded_cases(bt: BufferType) -> Vec<Case> {
    use DType::*;
    use Layout::*;
    match bt {
        BufferType::Dram => vec![
            (40, 7, Float32, HeightSharded, banks(0, 7), [5, 7]),
            (9, 64, BFloat16, WidthSharded, banks(2, 5), [9, 16]),
            (24, 30, Float32, BlockSharded, banks(1, 6), [12, 10]),
            (6, 10, BFloat16, BlockSharded, banks(0, 3), [3, 5]),
            // 4 MiB, larger than the ring.
            (1024, 2048, BFloat16, BlockSharded, banks(0, 7), [512, 512]),
            // Shard rows of 40000 bytes, longer than the largest record.
            (4, 40_000, Float32, WidthSharded, banks(0, 3), [4, 10_000]),
        ],
        _ => vec![
            (64, 24, BFloat16, HeightSharded, cores(0, 0, 3, 1), [8, 24]),
            (10, 120, Float32, WidthSharded, cores(2, 3, 6, 3), [10, 24]),
            (6, 10, BFloat16, BlockSharded, cores(0, 0, 1, 1), [3, 5]),
            (35, 33, Float32, BlockSharded, cores(4, 4, 7, 7), [7, 11]),
            // 768 KiB, larger than the ring.
            (512, 384, Float32, BlockSharded, cores(1, 1, 4, 4), [128, 96]),
            // Shard rows of 20000 bytes, longer than the largest record.
            (2, 40_000, BFloat16, WidthSharded, cores(0, 7, 3, 7), [2, 10_000]),
        ],
    }
}

fn run_sharded(bt: BufferType, l1_small: u32) {
    let mut rig = Rig::new(&DeviceParams { l1_small_size: l1_small, ..params(RING, RING) });
    for (i, (rows, cols, dtype, layout, grid, shape)) in sharded_cases(bt).into_iter().enumerate() {
        for col_major in [false, true] {
            let spec = BufferSpec::new(rows, cols, dtype, sharded(bt, layout, grid, shape, col_major));
            rig.roundtrip(&spec, 1000 + 2 * i as u64 + col_major as u64);
        }
    }
}

#[test]
fn sharded_l1_every_layout_and_orientation() {
    run_sharded(BufferType::L1, 0);
}

#[test]
fn sharded_dram_every_layout_and_orientation() {
    run_sharded(BufferType::Dram, 0);
}

/// Orientation must matter where it can: a block-sharded tensor's shards land on different units.
#[test]
fn shard_orientation_changes_placement() {
    let mut rig = Rig::new(&params(RING, RING));
    let mk = |col_major| {
        BufferSpec::new(
            4,
            4,
            DType::Float32,
            sharded(BufferType::L1, Layout::BlockSharded, cores(0, 0, 1, 1), [2, 2], col_major),
        )
    };
    let geo = rig.dev.info().geometry();
    let row = rig.dev.allocate(&mk(false)).unwrap();
    let col = rig.dev.allocate(&mk(true)).unwrap();
    // Shard (0, 1) (rows 0-1, columns 2-3) is unit 1 in row-major order and unit 8 (core (0, 1)) in column-major.
    assert_eq!(row.accessor().locate(&geo, 0, 2).unit, 1);
    assert_eq!(col.accessor().locate(&geo, 0, 2).unit, 8);
    let data = pattern(64, 3);
    col.write(0, &data, true).unwrap();
    rig.check_placement(&col, &data);
    let at = col.accessor().locate(&geo, 0, 2);
    assert_eq!(rig.raw.read(ttdrv::contract::Memory::L1, at.unit, at.offset, 8), &data[8..16]);
}

#[test]
fn l1_small_works_when_reserved() {
    let mut rig = Rig::new(&DeviceParams { l1_small_size: 128 << 10, ..params(RING, RING) });
    let small = MemoryConfig { buffer_type: BufferType::L1Small, layout: Layout::Interleaved, shard: None };
    rig.roundtrip(&BufferSpec::new(33, 17, DType::BFloat16, small), 9);
    rig.roundtrip(&BufferSpec::new(64, 100, DType::Float32, small), 10);
    let sh = sharded(BufferType::L1Small, Layout::HeightSharded, cores(0, 0, 7, 0), [4, 20], false);
    rig.roundtrip(&BufferSpec::new(32, 20, DType::Float32, sh), 11);
}

/// The error of `r`, which must be an invalid buffer spec whose message mentions every one of `needles`.
#[track_caller]
fn expect_bad_spec<T: std::fmt::Debug>(r: Result<T>, needles: &[&str]) {
    expect_err!(r, Error::InvalidBufferSpec { .. }, needles);
}

/// The error of `r`, which must be an invalid shard grid whose message mentions every one of `needles`.
#[track_caller]
fn expect_bad_grid<T: std::fmt::Debug>(r: Result<T>, needles: &[&str]) {
    let msg = expect_err!(r, Error::InvalidGrid { what: "shard grid", .. }, needles);
    assert!(!msg.contains("x0:") && !msg.contains("first:"), "a grid printed in Rust syntax: {msg}");
}

#[test]
fn misuse_is_rejected_with_a_message_naming_the_problem() {
    let dev = Device::open("emu", &params(RING, RING)).unwrap();
    let spec = BufferSpec::new(3, 5, DType::BFloat16, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();

    // Wrong lengths.
    let len = |call: &'static str, given: usize| move |e: &Error| matches!(e, Error::HostLength { call: c, given: g, spec: s } if *c == call && *g == given && *s == spec);
    expect_err!(b.write(0, &[0u8; 29], false), e if len("write", 29)(e), ["29 bytes", "30 bytes", "pass exactly 30"]);
    expect_err!(b.write(0, &[0u8; 31], true), e if len("write", 31)(e), ["31 bytes", "pass exactly 30"]);
    expect_err!(b.write(0, &[], false), e if len("write", 0)(e), ["0 bytes"]);
    expect_err!(b.read(0, &mut [0u8; 28]), e if len("read", 28)(e), ["28 bytes", "30 bytes"]);

    // Bad queue ids: the message says which ids exist, and how to get more when the device has them.
    expect_err!(
        b.write(1, &[0u8; 30], false),
        Error::QueueOutOfRange { queue: 1, queues: 1, device_queues: 2, .. },
        ["command queue 1 does not exist", "1 queue(s) (id 0)", "num_command_queues=2 or more (it has 2)"]
    );
    let msg = expect_err!(
        b.read_to_vec(7),
        Error::QueueOutOfRange { queue: 7, queues: 1, device_queues: 2, .. },
        ["command queue 7 does not exist", "pass one of those", "up to num_command_queues=2 (all it has)"]
    );
    assert!(!msg.contains("num_command_queues=8"), "a queue the device does not have: {msg}");
    // Ids no device has are not met with advice to open more queues than exist.
    let msg = expect_err!(b.read_to_vec(65535), Error::QueueOutOfRange { queue: 65535, .. }, ["queue 65535"]);
    assert!(!msg.contains("65535 or more") && !msg.contains("num_command_queues=65536"), "{msg}");
    expect_err!(dev.finish(9), Error::QueueOutOfRange { queue: 9, .. }, ["command queue 9"]);
    expect_err!(dev.create_event().unwrap().record(3), Error::QueueOutOfRange { queue: 3, .. }, ["command queue 3"]);
    expect_err!(
        Device::open("emu", &DeviceParams { num_command_queues: 3, ..params(RING, RING) }),
        Error::InvalidParameter { parameter: "num_command_queues", value: 3, .. },
        ["num_command_queues=3", "2 command queue"]
    );

    // Zero dimensions.
    for (r, c) in [(0, 5), (5, 0), (0, 0)] {
        expect_bad_spec(
            dev.allocate(&BufferSpec::new(r, c, DType::Float32, MemoryConfig::L1)),
            &["zero dimension", &format!("[{r}, {c}]")],
        );
    }

    let l1 = |layout, grid, shape| {
        BufferSpec::new(16, 16, DType::Float32, sharded(BufferType::L1, layout, grid, shape, false))
    };
    // Shard shapes that do not divide the tensor.
    expect_bad_spec(
        dev.allocate(&l1(Layout::BlockSharded, cores(0, 0, 3, 3), [3, 4])),
        &["[3, 4]", "does not divide", "[16, 16]"],
    );
    expect_bad_spec(dev.allocate(&l1(Layout::HeightSharded, cores(0, 0, 3, 3), [5, 16])), &["does not divide"]);
    expect_bad_spec(dev.allocate(&l1(Layout::BlockSharded, cores(0, 0, 3, 3), [0, 4])), &["zero dimension"]);
    // Shapes that contradict the layout.
    expect_bad_spec(
        dev.allocate(&l1(Layout::HeightSharded, cores(0, 0, 3, 3), [4, 8])),
        &["height sharding", "16 columns"],
    );
    expect_bad_spec(dev.allocate(&l1(Layout::WidthSharded, cores(0, 0, 3, 3), [8, 4])), &["width sharding", "16 rows"]);
    // Grids outside the device (8x8 cores, 8 banks), reversed, or too small; printed as a user writes them.
    expect_bad_grid(
        dev.allocate(&l1(Layout::BlockSharded, cores(0, 0, 8, 0), [4, 4])),
        &["shard grid cores (0,0)-(8,0)", "outside device", "(0,0)-(7,7)", "8x8"],
    );
    expect_bad_grid(dev.allocate(&l1(Layout::BlockSharded, cores(0, 5, 0, 9), [4, 4])), &["outside device"]);
    expect_bad_grid(
        dev.allocate(&l1(Layout::BlockSharded, cores(3, 0, 2, 0), [4, 4])),
        &["cores (3,0)-(2,0)", "reversed", "(2,0)-(3,0)"],
    );
    expect_bad_grid(
        dev.allocate(&l1(Layout::BlockSharded, cores(0, 0, 1, 1), [4, 4])),
        &["16 shards", "do not fit", "its 4 cores"],
    );
    let dram = |grid, shape| {
        BufferSpec::new(16, 16, DType::Float32, sharded(BufferType::Dram, Layout::HeightSharded, grid, shape, false))
    };
    expect_bad_grid(dev.allocate(&dram(banks(0, 8), [2, 16])), &["banks 0-8", "outside device", "DRAM banks are 0-7"]);
    expect_bad_grid(dev.allocate(&dram(banks(5, 2), [2, 16])), &["banks 5-2", "reversed", "(banks 2-5)"]);
    expect_bad_grid(dev.allocate(&dram(banks(0, 1), [2, 16])), &["8 shards", "do not fit", "its 2 banks"]);
    // A grid of the wrong kind.
    expect_bad_grid(dev.allocate(&dram(cores(0, 0, 7, 0), [2, 16])), &["DRAM", "range of banks"]);
    expect_bad_grid(dev.allocate(&l1(Layout::HeightSharded, banks(0, 3), [4, 16])), &["L1", "rectangle of cores"]);
    // Layout and shard spec that do not go together.
    let interleaved_with_spec = sharded(BufferType::L1, Layout::Interleaved, cores(0, 0, 0, 0), [1, 1], false);
    expect_bad_spec(
        dev.allocate(&BufferSpec::new(4, 4, DType::Float32, interleaved_with_spec)),
        &["must not carry a shard spec"],
    );
    let sharded_without_spec = MemoryConfig { buffer_type: BufferType::L1, layout: Layout::BlockSharded, shard: None };
    expect_bad_spec(
        dev.allocate(&BufferSpec::new(4, 4, DType::Float32, sharded_without_spec)),
        &["BlockSharded", "needs a shard spec"],
    );

    // L1_SMALL without l1_small_size.
    let small = MemoryConfig { buffer_type: BufferType::L1Small, layout: Layout::Interleaved, shard: None };
    expect_bad_spec(dev.allocate(&BufferSpec::new(4, 4, DType::Float32, small)), &["L1_SMALL", "l1_small_size=0"]);

    // None of this broke the device.
    let data = pattern(30, 8);
    b.write(0, &data, true).unwrap();
    assert_eq!(b.read_to_vec(0).unwrap(), data);
}
