//! The dispatch path allocates nothing, proven by counting (issue 14): this test binary installs a global allocator
//! that counts the allocations each thread makes, warms every path up (first dispatches upload kernel images and fill
//! caches), then counts the calling thread's allocations across many calls:
//! - `Program::run`, `Program::run_io` and `Program::launch` of a cached program: none;
//! - the built-in operations into an existing output (`binary_into`, `unary_into`, `matmul_into`, `fill`,
//!   `reshard_into`), 64 cores each: none;
//! - the operations that create their output (`binary`, `unary`, `matmul`, `to_memory_config`, `typecast`,
//!   `to_layout`): no more than creating that output with `Device::allocate` does.
//!
//! Only the calling thread is counted: the emulated device's engine threads are the device, not the dispatch path.
//! The queue is drained (uncounted) between bursts, so no call waits for ring space.

use ttdrv::contract::kernel::{ACCESSOR_WORDS, Block, BuiltinKernel};
use ttdrv::contract::records::CoreRect;
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::device::program::{ArgStep, KernelSource, ProgramDesc, RtArgs};
use ttdrv::*;
use ttdrv_testkit::counting::{Counting, allocations};

#[global_allocator]
static COUNTING: Counting = Counting;

/// An op that creates its output.
type Op<'a> = &'a dyn Fn() -> Result<Buffer>;

/// Calls per burst (the ring holds them all), and bursts.
const CALLS: usize = 100;
const BURSTS: usize = 2;

#[test]
fn the_counter_counts() {
    let (n, v) = allocations(|| vec![1u8; 10]);
    assert_eq!((n, v.len()), (1, 10));
    let (n, ()) = allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(1)).into_boxed_slice()));
    assert!(n >= 1, "{n}");
}

/// Asserts that `CALLS` calls of `call` allocate nothing, in each of `BURSTS` bursts after a warm-up burst.
fn assert_no_allocation(dev: &Device, what: &str, mut call: impl FnMut()) {
    for burst in 0..=BURSTS {
        let (n, ()) = allocations(|| (0..CALLS).for_each(|_| call()));
        dev.finish(0).unwrap();
        if burst > 0 {
            assert_eq!(n, 0, "{what}: {n} allocations in {CALLS} calls");
        }
    }
}

fn l1(rows: u32, cols: u32) -> BufferSpec {
    BufferSpec::new(rows, cols, DType::Float32, MemoryConfig::L1)
}

#[test]
fn a_cached_program_dispatch_allocates_nothing() {
    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let buf = dev.allocate(&l1(16, 32)).unwrap();
    let (prog, rt) = ttdrv_testkit::fill_program(&dev, &buf).unwrap();
    assert_no_allocation(&dev, "Program::run", || prog.run(0, &rt, &[&buf]).unwrap());
    assert_no_allocation(&dev, "Program::run_io", || prog.run_io(0, &rt, &[], &[&buf]).unwrap());

    // The compact form on 64 cores: each core fills one row of a [64, 32] buffer; the accessor and value are common.
    let big = dev.allocate(&l1(64, 32)).unwrap();
    let k = BuiltinKernel::Fill;
    let prog = dev
        .program(ProgramDesc {
            kernel: KernelSource::Builtin(k),
            cores: CoreRect { x0: 0, y0: 0, x1: 7, y1: 7 },
            ct_args: vec![],
            cbs: vec![],
            sems: vec![],
            rt_words: k.rt_words() as u16,
        })
        .unwrap();
    let mut common = big.accessor().to_words().to_vec();
    common.push(2.5f32.to_bits());
    assert_eq!(common.len(), 1 + ACCESSOR_WORDS);
    let steps = [ArgStep::linear(0, 0, 1), ArgStep::linear(1, 1, 1), ArgStep::constant(2, 0), ArgStep::constant(3, 32)];
    let args = RtArgs { common: &common, steps: &steps, per_core: &[] };
    assert_no_allocation(&dev, "Program::launch (64 cores)", || prog.launch(0, &args, &[], &[&big]).unwrap());
    assert_eq!(big.read_to_vec(0).unwrap(), [2.5f32; 64 * 32].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>());
    // The explicit form of the same launch allocates nothing either (its arguments are built once, outside).
    let explicit: Vec<u32> = (0..64u32)
        .flat_map(|r| Block { r0: r, r1: r + 1, c0: 0, c1: 32 }.to_words().into_iter().chain(common.iter().copied()))
        .collect();
    assert_no_allocation(&dev, "Program::run (64 cores)", || prog.run(0, &explicit, &[&big]).unwrap());
}

#[test]
fn op_calls_allocate_nothing_beyond_their_output() {
    // The counter counts: a budget of 0 below must mean "no allocation", not "nothing counted".
    let (n, v) = allocations(|| Vec::<u8>::with_capacity(64));
    assert_eq!((n, v.capacity() >= 64), (1, true), "the counting allocator sees a Vec's allocation");
    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    // [64, 256] float32 in L1: the element-wise ops split it over all 64 cores.
    let spec = l1(64, 256);
    let a = dev.allocate(&spec).unwrap();
    let b = dev.allocate(&l1(1, 256)).unwrap();
    let out = dev.allocate(&spec).unwrap();
    let w = dev.allocate(&l1(256, 64)).unwrap();
    let mm = dev.allocate(&l1(64, 64)).unwrap();
    let dram = MemoryConfig::DRAM;
    let moved = dev.allocate(&BufferSpec::new(64, 256, DType::Float32, dram)).unwrap();
    assert_no_allocation(&dev, "binary_into", || dev.binary_into(0, BinaryOp::Add, &a, &b, &out).unwrap());
    assert_no_allocation(&dev, "unary_into", || dev.unary_into(0, UnaryOp::Gelu, &a, &out).unwrap());
    assert_no_allocation(&dev, "matmul_into", || dev.matmul_into(0, &a, &w, &mm).unwrap());
    assert_no_allocation(&dev, "fill", || dev.fill(0, &out, 1.0).unwrap());
    assert_no_allocation(&dev, "reshard_into", || dev.reshard_into(0, &a, &moved).unwrap());

    // Ops that create their output: at most what creating it costs. Outputs are dropped outside the count.
    let creating = |s: &BufferSpec| {
        let (n, b) = allocations(|| dev.allocate(s).unwrap());
        drop(b);
        n
    };
    let l1_mem = MemoryConfig::L1;
    let bf16 = BufferSpec::new(64, 256, DType::BFloat16, dram);
    let tiled = BufferSpec::tiled(64, 256, DType::Float32, l1_mem);
    let cases: [(&str, BufferSpec, Op); 6] = [
        ("binary", spec, &|| dev.binary(0, BinaryOp::Mul, &a, &b, &l1_mem)),
        ("unary", spec, &|| dev.unary(0, UnaryOp::Relu, &a, &l1_mem)),
        ("matmul", l1(64, 64), &|| dev.matmul(0, &a, &w, &l1_mem)),
        ("to_memory_config", BufferSpec::new(64, 256, DType::Float32, dram), &|| dev.to_memory_config(0, &a, &dram)),
        ("typecast", bf16, &|| dev.typecast(0, &a, DType::BFloat16, &dram)),
        ("to_layout", tiled, &|| dev.to_layout(0, &a, TensorLayout::Tile, &l1_mem)),
    ];
    for (what, out_spec, call) in cases {
        for burst in 0..=BURSTS {
            let budget = creating(&out_spec);
            let (n, r) = allocations(call);
            let made = r.unwrap();
            assert_eq!(made.spec(), &out_spec, "{what}: the output");
            drop(made);
            dev.finish(0).unwrap();
            if burst > 0 {
                // Creating an output may itself allocate nothing (the allocator's block list and the spec table
                // have room): then neither may the op.
                assert!(n <= budget, "{what}: {n} allocations; creating its output takes {budget}");
            }
        }
    }
}
