//! Shared runtime arguments (contract §4.2.6, since 1.2): what a launch puts on the ring, and that every core still
//! receives the words it would with every core's arguments written out.
//!
//! A spy transport wraps the emulated device: it sees every doorbell (so the bytes one launch adds to the issue ring
//! are measured where the device reads them), and it can report contract 1.1, which makes the driver write every
//! core's words out (the record format of 1.1) — the reference every compact launch is compared with.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use ttdrv::contract::kernel::{ACCESSOR_WORDS, BLOCK_WORDS, Block, BuiltinKernel};
use ttdrv::contract::records::{self, CbConfig, CoreRect, Launch};
use ttdrv::contract::regs::{self, BarOffset};
use ttdrv::contract::{CONTRACT_MAJOR, Iova};
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::device::program::{ArgStep, KernelSource, ProgramDesc, RtArgs};
use ttdrv::transport::{DmaMemory, Transport, TransportError};
use ttdrv::*;
use ttdrv_testkit::expect_err;

/// The emulated device, with queue 0's doorbell watched and, optionally, an older contract minor reported.
struct Spy {
    inner: Arc<dyn Transport>,
    minor: Option<u16>,
    issue_wr: AtomicU32,
}

impl Transport for Spy {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn read32(&self, off: BarOffset) -> u32 {
        match self.minor {
            Some(m) if off == regs::global::VERSION => (CONTRACT_MAJOR as u32) << 16 | m as u32,
            _ => self.inner.read32(off),
        }
    }
    fn write32(&self, off: BarOffset, val: u32) {
        if off == regs::queue_reg(0, regs::queue::ISSUE_WR) {
            self.issue_wr.store(val, Ordering::SeqCst);
        }
        self.inner.write32(off, val)
    }
    fn iova_ranges(&self) -> Vec<Range<u64>> {
        self.inner.iova_ranges()
    }
    fn dma_map(&self, mem: &DmaMemory, iova: Iova) -> Result<(), TransportError> {
        self.inner.dma_map(mem, iova)
    }
    fn dma_unmap(&self, iova: Iova, len: u64) -> Result<(), TransportError> {
        self.inner.dma_unmap(iova, len)
    }
    fn reset(&self) -> Result<(), TransportError> {
        self.inner.reset()
    }
    fn irq_vectors(&self) -> u32 {
        self.inner.irq_vectors()
    }
    fn wait_irq(&self, vector: u32, timeout: Duration) -> Result<bool, TransportError> {
        self.inner.wait_irq(vector, timeout)
    }
    fn needs_pinned_memory(&self) -> bool {
        self.inner.needs_pinned_memory()
    }
}

fn open(minor: Option<u16>) -> (Device, Arc<Spy>) {
    let spy = Arc::new(Spy { inner: ttdrv::transport::open("emu", 0).unwrap(), minor, issue_wr: AtomicU32::new(0) });
    let p = DeviceParams { trace_region_size: 1 << 20, ..Default::default() };
    let dev = Device::open_transport(spy.clone(), &p).unwrap();
    assert_eq!(dev.info().version_minor, minor.unwrap_or(ttdrv::contract::CONTRACT_MINOR));
    (dev, spy)
}

/// Bytes `f` adds to queue 0's issue ring (everything it is already done with is published by then).
fn ring_bytes(spy: &Spy, f: impl FnOnce()) -> u32 {
    let before = spy.issue_wr.load(Ordering::SeqCst);
    f();
    spy.issue_wr.load(Ordering::SeqCst).wrapping_sub(before)
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn l1(rows: u32, cols: u32) -> BufferSpec {
    BufferSpec::new(rows, cols, DType::Float32, MemoryConfig::L1)
}

/// Small integers, so sums and products of them are exact in f32 whatever the order.
fn ints(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32).map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 7) % 17) as f32 - 8.0).collect()
}

#[test]
fn a_64_core_eltwise_launch_puts_384_bytes_on_the_ring_instead_of_10368() {
    let mut got = Vec::new();
    for minor in [None, Some(1)] {
        let (dev, spy) = open(minor);
        let (a, b) = (ints(64 * 256, 1), ints(256, 2));
        let da = dev.buffer_from_host(&l1(64, 256), 0, &f32s(&a)).unwrap();
        let db = dev.buffer_from_host(&l1(1, 256), 0, &f32s(&b)).unwrap();
        let out = dev.allocate(&l1(64, 256)).unwrap();
        // The first call uploads the kernel image; the second is the op call a model makes every step.
        dev.binary_into(0, BinaryOp::Add, &da, &db, &out).unwrap();
        dev.finish(0).unwrap();
        let bytes = ring_bytes(&spy, || dev.binary_into(0, BinaryOp::Add, &da, &db, &out).unwrap());
        let want: Vec<f32> = a.iter().enumerate().map(|(i, x)| x + b[i % 256]).collect();
        assert_eq!(out.read_to_vec(0).unwrap(), f32s(&want), "contract 1.{}", minor.unwrap_or(2));
        got.push(bytes);

        // Trace capture stores the same record.
        let tid = dev.begin_trace_capture(0).unwrap();
        dev.binary_into(0, BinaryOp::Add, &da, &db, &out).unwrap();
        dev.end_trace_capture(tid, 0).unwrap();
        assert_eq!(dev.trace_info(tid).unwrap().bytes, bytes as u64, "a captured launch is the live one");
        dev.execute_trace(tid, 0, true).unwrap();
        assert_eq!(out.read_to_vec(0).unwrap(), f32s(&want), "replayed");
    }
    // The eltwise launch: 2 compile-time words, 3 circular buffers, and on each of 64 cores a block (4 words) and
    // three accessors (36 words). Written out per core (contract 1.1) that is 64 + 4 x (2 + 12 + 64 x 40) bytes, padded;
    // compact, the accessors go once and the block is 4 steps of 6 words: 64 + 4 x (2 + 12 + 36 + 24), padded.
    let steps = [ArgStep::constant(0, 0); BLOCK_WORDS];
    let l = Launch {
        kernel_bank: 0,
        kernel_offset: 0,
        rect: CoreRect { x0: 0, y0: 0, x1: 7, y1: 7 },
        ct_args: &[0, 1],
        cbs: &[CbConfig::default(); 3],
        sems: &[],
        num_rt_args: BLOCK_WORDS as u16,
        args: RtArgs { common: &[0; 3 * ACCESSOR_WORDS], steps: &steps, per_core: &[] },
    };
    assert_eq!((records::launch_len(&l), records::launch_len_expanded(&l)), (384, 10368));
    assert_eq!(got, [384, 10368], "bytes on the ring: compact (1.2), then written out (1.1)");
}

/// A fill program on a 3 x 2 rectangle away from the grid's origin.
fn fill_on_3x2(dev: &Device) -> ttdrv::device::program::Program {
    let k = BuiltinKernel::Fill;
    dev.program(ProgramDesc {
        kernel: KernelSource::Builtin(k),
        cores: CoreRect { x0: 2, y0: 1, x1: 4, y1: 2 },
        ct_args: vec![],
        cbs: vec![],
        sems: vec![],
        rt_words: k.rt_words() as u16,
    })
    .unwrap()
}

#[test]
fn program_launch_gives_every_core_what_run_would() {
    for minor in [None, Some(1)] {
        let (dev, _) = open(minor);
        let prog = fill_on_3x2(&dev);
        // Six cores, one row each of a [6, 40] buffer; each core's column range is its own (explicit) and its row
        // follows its position (affine over the 3-wide rectangle: row = x - x0 + 3 (y - y0)).
        let cols = |k: u32| (k * 5, 40 - k * 2);
        let (a, b) = (dev.allocate(&l1(6, 40)).unwrap(), dev.allocate(&l1(6, 40)).unwrap());
        for buf in [&a, &b] {
            dev.fill(0, buf, -1.0).unwrap();
        }
        let explicit: Vec<u32> = (0..6u32)
            .flat_map(|k| {
                let (c0, c1) = cols(k);
                let mut w = Block { r0: k, r1: k + 1, c0, c1 }.to_words().to_vec();
                w.extend_from_slice(&a.accessor().to_words());
                w.push((k as f32 + 0.5).to_bits());
                w
            })
            .collect();
        prog.run(0, &explicit, &[&a]).unwrap();
        // The same launch compact: rows by two affine steps, columns explicit, the accessor common. The value is the
        // last word, so it is common too, and a per-core value would have to be written out: here it is the same for
        // every core, and the explicit run gave each core its own, so fill a second time per value.
        let steps = [ArgStep::affine(0, 0, 1, 3, 3), ArgStep::affine(1, 1, 1, 3, 3)];
        let per_core: Vec<u32> = (0..6).flat_map(|k| <[u32; 2]>::from(cols(k))).collect();
        for k in 0..6u32 {
            // Only core k's block is non-empty in launch k: its columns as given, the others' empty.
            let per_core: Vec<u32> = per_core
                .chunks(2)
                .enumerate()
                .flat_map(|(j, c)| if j as u32 == k { c.to_vec() } else { vec![0, 0] })
                .collect();
            let mut common = b.accessor().to_words().to_vec();
            common.push((k as f32 + 0.5).to_bits());
            let args = RtArgs { common: &common, steps: &steps, per_core: &per_core };
            prog.launch(0, &args, &[], &[&b]).unwrap();
        }
        assert_eq!(a.read_to_vec(0).unwrap(), b.read_to_vec(0).unwrap(), "contract 1.{}", minor.unwrap_or(2));
        let want: Vec<f32> = (0..6 * 40)
            .map(|i| {
                let (r, c) = (i / 40, i % 40);
                let (c0, c1) = cols(r);
                if (c0..c1).contains(&c) { r as f32 + 0.5 } else { -1.0 }
            })
            .collect();
        assert_eq!(a.read_to_vec(0).unwrap(), f32s(&want));
    }
}

#[test]
fn compact_arguments_that_break_the_rules_are_refused() {
    let (dev, spy) = open(None);
    let prog = fill_on_3x2(&dev);
    let b = dev.allocate(&l1(6, 40)).unwrap();
    let acc = b.accessor().to_words();
    let st = |i| ArgStep::constant(i, 0);
    let cases: [(RtArgs, &[&str]); 5] = [
        (RtArgs { common: &[0; 18], steps: &[], per_core: &[] }, &["18 common", "17 runtime words", "at most"]),
        (RtArgs { common: &acc, steps: &[st(0), st(0), st(1)], per_core: &[] }, &["step 1", "increasing"]),
        (RtArgs { common: &acc, steps: &[st(5)], per_core: &[] }, &["step 0 gives word 5", "below 5"]),
        (RtArgs { common: &acc, steps: &[st(0)], per_core: &[0; 5] }, &["5 explicit", "6 cores need 24"]),
        (RtArgs { common: &acc, steps: &[st(0); 6], per_core: &[] }, &["6 steps for 5 per-core words"]),
    ];
    dev.finish(0).unwrap();
    for (args, needles) in cases {
        let bytes = ring_bytes(&spy, || {
            let needles: Vec<String> = needles.iter().chain(&["ttdrv.fill"]).map(|n| n.to_string()).collect();
            expect_err!(prog.launch(0, &args, &[], &[&b]), Error::InvalidProgram { .. }, @list needles);
        });
        assert_eq!(bytes, 0, "a refused launch sends nothing");
    }
}

/// Element-wise ops and matmul on shapes whose equal blocks leave cores of the rectangle idle (their blocks are
/// clamped empty), row-major and tiled, against exact host results.
#[test]
fn ops_whose_blocks_leave_cores_idle_are_exact() {
    let (dev, _) = open(None);
    for layout in [TensorLayout::RowMajor, TensorLayout::Tile] {
        let spec = |r, c| BufferSpec::new(r, c, DType::Float32, MemoryConfig::L1).with_layout(layout);
        let (a, b) = (ints(100 * 300, 3), ints(100 * 300, 4));
        let da = dev.buffer_from_host(&spec(100, 300), 0, &f32s(&a)).unwrap();
        let db = dev.buffer_from_host(&spec(100, 300), 0, &f32s(&b)).unwrap();
        let sum = dev.binary(0, BinaryOp::Sub, &da, &db, &MemoryConfig::L1).unwrap();
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        assert_eq!(sum.read_to_vec(0).unwrap(), f32s(&want), "{layout:?} sub");
        let relu = dev.unary(0, UnaryOp::Relu, &da, &MemoryConfig::DRAM).unwrap();
        let want: Vec<f32> = a.iter().map(|x| x.max(0.0)).collect();
        assert_eq!(relu.read_to_vec(0).unwrap(), f32s(&want), "{layout:?} relu");

        let (m, k, n) = (100, 70, 90);
        let (x, w) = (ints(m * k, 5), ints(k * n, 6));
        let dx = dev.buffer_from_host(&spec(m as u32, k as u32), 0, &f32s(&x)).unwrap();
        let dw = dev.buffer_from_host(&spec(k as u32, n as u32), 0, &f32s(&w)).unwrap();
        let y = dev.matmul(0, &dx, &dw, &MemoryConfig::L1).unwrap();
        let want: Vec<f32> =
            (0..m * n).map(|i| (0..k).map(|j| x[i / n * k + j] * w[j * n + i % n]).sum::<f32>()).collect();
        assert_eq!(y.read_to_vec(0).unwrap(), f32s(&want), "{layout:?} matmul");
    }
}
