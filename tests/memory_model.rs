//! Device memory and programs: the allocator's placement rules, the address assertion of §1.3.2 of the guide
//! "Advanced Performance Optimizations for Models" for MLPs of 1 to 4 layers, the program cache, and buffer specs
//! that cannot fit the device.
//!
//! - Placement is deterministic (the same script of allocations and frees gives the same addresses, on another
//!   device and on the same device later), live buffers never overlap, freeing and re-allocating a spec with the
//!   same buffers live gives the same address, and `deallocate` frees at once while work already enqueued on the
//!   queue still sees the old contents.
//! - An allocation failure names the bytes asked, free, in the largest free block, and owned by live traces.
//! - §1.3.2: compile run, `input = from_host` (address recorded), free the compile output, capture `run(input)`,
//!   re-allocate the input spec inside the capture: same address. Replays with new inputs written in place must
//!   equal an eager run bit for bit and a host reference within a tolerance.
//! - The program cache is keyed by what defines a program, never by buffer addresses.

mod common;
use ttdrv_testkit::{expect_err, hostref};

use common::{assert_bytes_eq, open, pattern, small_params};
use hostref::*;
use ttdrv::contract::kernel::{BuiltinKernel, DType::BFloat16, DType::Float32};
use ttdrv::contract::records::{CbConfig, CoreRect};
use ttdrv::device::model::MlpConfig;
use ttdrv::device::ops::UnaryOp;
use ttdrv::device::program::{CacheStats, KernelSource, ProgramDesc};
use ttdrv::*;

fn params() -> DeviceParams {
    small_params()
}

fn spec(rows: u32, cols: u32, dtype: DType, mem: MemoryConfig) -> BufferSpec {
    BufferSpec::new(rows, cols, dtype, mem)
}

/// Specs of every buffer type and layout, small enough that a few dozen fit at once.
fn script_specs() -> Vec<BufferSpec> {
    use BufferType::*;
    use Layout::*;
    vec![
        spec(100, 37, Float32, MemoryConfig::DRAM),
        spec(3, 5, BFloat16, MemoryConfig::DRAM),
        spec(1000, 1000, Float32, MemoryConfig::DRAM),
        spec(64, 512, BFloat16, MemoryConfig::L1),
        spec(7, 13, Float32, MemoryConfig::L1),
        spec(640, 256, Float32, MemoryConfig::L1),
        spec(64, 24, BFloat16, sharded(L1, HeightSharded, cores(0, 0, 3, 1), [8, 24], false)),
        spec(35, 33, Float32, sharded(L1, BlockSharded, cores(4, 4, 7, 7), [7, 11], true)),
        spec(40, 8, Float32, sharded(Dram, HeightSharded, banks(0, 7), [5, 8], false)),
        spec(33, 17, BFloat16, L1_SMALL),
        spec(32, 20, Float32, sharded(L1Small, HeightSharded, cores(0, 0, 7, 0), [4, 20], false)),
    ]
}

/// Runs a seeded script of allocations (bottom-up and top-down) and frees on `dev`; returns the address of every
/// allocation in order. Checks after every step that no two live buffers overlap in one memory.
fn run_script(dev: &Device, seed: u64, steps: usize) -> Vec<u64> {
    let specs = script_specs();
    let mut rng = Rng::new(seed);
    let mut live: Vec<Buffer> = Vec::new();
    let mut addrs = Vec::new();
    for step in 0..steps {
        if live.is_empty() || rng.chance(60) {
            let s = rng.pick(&specs);
            let b = if rng.chance(25) { dev.allocate_top_down(s) } else { dev.allocate(s) }
                .unwrap_or_else(|e| panic!("step {step}: {e}"));
            addrs.push(b.address());
            live.push(b);
        } else {
            let i = rng.below(live.len() as u64) as usize;
            live.swap_remove(i).deallocate();
        }
        // L1 and L1_SMALL are one offset space per core: compare them with each other too.
        let space = |b: &Buffer| b.spec().mem.buffer_type == BufferType::Dram;
        for (i, a) in live.iter().enumerate() {
            for b in &live[i + 1..] {
                if space(a) == space(b) {
                    let disjoint =
                        a.address() + a.footprint() <= b.address() || b.address() + b.footprint() <= a.address();
                    assert!(
                        disjoint,
                        "step {step}: {a:?} (footprint {}) overlaps {b:?} ({})",
                        a.footprint(),
                        b.footprint()
                    );
                }
            }
        }
    }
    addrs
}

#[test]
fn placement_is_deterministic_and_live_buffers_never_overlap() {
    let p = DeviceParams { l1_small_size: 64 << 10, ..params() };
    let (d1, d2) = (open("emu", &p), open("emu", &p));
    for seed in [1, 2, 3] {
        let a = run_script(&d1, seed, 300);
        let b = run_script(&d2, seed, 300);
        assert_eq!(a, b, "seed {seed}: two devices, same script, different addresses");
        // Everything was freed at the end of the script: the same device places the script the same way again.
        assert_eq!(run_script(&d1, seed, 300), a, "seed {seed}: same device, second run");
    }
}

#[test]
fn freeing_and_reallocating_a_spec_with_the_same_buffers_live_gives_the_same_address() {
    let dev = open("emu", &DeviceParams { l1_small_size: 64 << 10, ..params() });
    let other = spec(9, 70, Float32, MemoryConfig::L1);
    for s in script_specs() {
        let first = dev.allocate(&s).unwrap();
        let _between = dev.allocate(&other).unwrap();
        let mid = dev.allocate(&s).unwrap();
        let _last = dev.allocate(&s).unwrap();
        let top = dev.allocate_top_down(&s).unwrap();
        // Free one in the middle: with the same buffers live, the same spec comes back at its address.
        let addr = mid.address();
        mid.deallocate();
        let mid = dev.allocate(&s).unwrap();
        assert_eq!(mid.address(), addr, "{s}: re-allocated elsewhere");
        // The lowest one, and the top-down one likewise.
        let addr = first.address();
        first.deallocate();
        assert_eq!(dev.allocate(&s).unwrap().address(), addr, "{s}: lowest one re-allocated elsewhere");
        let addr = top.address();
        top.deallocate();
        assert_eq!(dev.allocate_top_down(&s).unwrap().address(), addr, "{s}: top-down one re-allocated elsewhere");
    }
}

/// `deallocate` frees at once: a buffer of more than half of L1 is freed and the same spec is allocated again
/// straight away (it could not fit twice), at the same address, without waiting for the device. Work enqueued on
/// the queue before the free still reads the old contents; the write to the new buffer comes after it in queue
/// order.
#[test]
fn deallocate_frees_at_once_and_earlier_work_still_sees_the_old_contents() {
    let dev = open("emu", &params());
    // 150 pages of 4 KiB per core: 600 KiB of the 960 KiB of software L1.
    let big = spec(64 * 150, 1024, Float32, MemoryConfig::L1);
    assert!(u64::from(big.rows / 64 * 4096) > dev.largest_free(BufferType::L1) / 2);
    let old = pattern(big.host_bytes() as usize, 1);
    let new = pattern(big.host_bytes() as usize, 2);
    let x = dev.buffer_from_host(&big, 0, &old).unwrap();
    let addr = x.address();
    let copy = dev.to_memory_config(0, &x, &MemoryConfig::DRAM).unwrap();
    x.deallocate();
    let z = dev.allocate(&big).expect("the freed range is available at once");
    assert_eq!(z.address(), addr);
    z.write(0, &new, false).unwrap();
    assert_bytes_eq(&copy.read_to_vec(0).unwrap(), &old, "copy enqueued before the free");
    assert_bytes_eq(&z.read_to_vec(0).unwrap(), &new, "the new buffer");
}

/// An allocation that cannot be placed fails with `OutOfDeviceMemory` naming the spec, the memory and four numbers
/// (per core): bytes asked, bytes free, the largest free block, and bytes owned by live traces (here a trace owns
/// an intermediate it freed during capture).
#[test]
fn allocation_failure_names_asked_free_largest_and_traced_bytes() {
    let dev = open("emu", &DeviceParams { trace_region_size: 1 << 20, ..params() });
    let l1 = MemoryConfig::L1;
    // 8 pages of 4 KiB per core.
    let s = spec(512, 1024, Float32, l1);
    let page = 4096u64;
    let x = dev.buffer_from_host(&s, 0, &pattern(s.host_bytes() as usize, 3)).unwrap();
    let (y, z) = {
        let y = dev.unary(0, UnaryOp::Relu, &x, &l1).unwrap();
        let z = dev.unary(0, UnaryOp::Relu, &y, &l1).unwrap();
        (y, z)
    };
    let footprint = y.footprint();
    assert_eq!(footprint, 8 * page);
    drop((y, z));
    let tid = dev.begin_trace_capture(0).unwrap();
    let y = dev.unary(0, UnaryOp::Relu, &x, &l1).unwrap();
    let z = dev.unary(0, UnaryOp::Relu, &y, &l1).unwrap();
    drop(y); // freed during capture: the trace owns its range from the end of capture on
    dev.end_trace_capture(tid, 0).unwrap();
    // A one-page hole above z, so that "free" and "largest free block" differ.
    let hole = dev.allocate(&spec(64, 1024, Float32, l1)).unwrap();
    let _above = dev.allocate(&spec(64, 1024, Float32, l1)).unwrap();
    drop(hole);

    let info = dev.info();
    let usable = (info.l1_size - info.l1_base) as u64;
    let live = 2 * footprint + page; // x, z, the buffer above the hole; and the trace owns y's range
    let free = usable - live - footprint;
    let largest = dev.largest_free(BufferType::L1);
    assert_eq!(largest, free - page);
    // One page more than the free total (and two more than the largest block), so the three numbers differ.
    let pages = largest / page + 2;
    let too_big = spec(64 * pages as u32, 1024, Float32, l1);
    let msg = expect_err!(
        dev.allocate(&too_big),
        Error::OutOfDeviceMemory { memory: BufferType::L1, requested, free: f, largest_free, owned_by_traces, device, .. }
            if *requested == pages * page && *f == free && *largest_free == largest && *owned_by_traces == footprint
                && *device == info.name,
        [
            "cannot allocate",
            &too_big.to_string(),
            "out of L1",
            &info.name,
            &format!("asked {} bytes per core", pages * page),
            &format!("{free} bytes free"),
            &format!("largest free block {largest} bytes"),
            &format!("{footprint} bytes owned by live traces"),
        ]
    );
    eprintln!("allocation failure: {msg}");
    // Released, the trace owns nothing, and its range is free again.
    dev.release_trace(tid).unwrap();
    expect_err!(
        dev.allocate(&spec(64 * (pages as u32 + 20), 1024, Float32, l1)),
        Error::OutOfDeviceMemory { owned_by_traces: 0, .. },
        [&format!("{} bytes free", free + footprint), "0 bytes owned by live traces"]
    );
    drop((x, z));
}

/// Specs the device cannot hold: larger than its DRAM, a shard larger than a core's L1, larger than the reserved
/// L1_SMALL region, rows too long to address; and MLPs with a zero size or wrong lengths. Each fails with a message
/// naming the spec or the size.
#[test]
fn buffer_specs_that_do_not_fit_the_device_are_refused() {
    let dev = open("emu", &DeviceParams { l1_small_size: 64 << 10, ..params() });
    let free = |d: &Device| [BufferType::Dram, BufferType::L1, BufferType::L1Small].map(|t| d.largest_free(t));
    let before = free(&dev);
    let name = dev.info().name.clone();
    // 4 GiB of DRAM on a 1 GiB device.
    let s = spec(1 << 20, 1024, Float32, MemoryConfig::DRAM);
    expect_err!(
        dev.allocate(&s),
        Error::OutOfDeviceMemory { memory: BufferType::Dram, .. },
        ["cannot allocate", &s.to_string(), "out of DRAM", &name, "per bank"]
    );
    // One 4 MiB shard on a 1 MiB core.
    let one_core = sharded(BufferType::L1, Layout::HeightSharded, cores(2, 2, 2, 2), [4096, 256], false);
    let s = spec(4096, 256, Float32, one_core);
    expect_err!(
        dev.allocate(&s),
        Error::OutOfDeviceMemory { memory: BufferType::L1, requested, .. } if *requested == 4 << 20,
        ["out of L1", &format!("asked {} bytes", 4 << 20)]
    );
    // 128 KiB per core of interleaved L1_SMALL in a 64 KiB region.
    let s = spec(64 * 32, 1024, Float32, L1_SMALL);
    expect_err!(
        dev.allocate(&s),
        Error::OutOfDeviceMemory { memory: BufferType::L1Small, requested: 131072, .. },
        ["out of L1_SMALL", "asked 131072 bytes"]
    );
    // A row of 16 GiB.
    let s = spec(1, u32::MAX, Float32, MemoryConfig::DRAM);
    expect_err!(
        dev.allocate(&s),
        Error::InvalidBufferSpec { spec: bad, .. } if *bad == s,
        ["too long", &(u32::MAX as u64 * 4).to_string()]
    );
    // Models with no batch or a zero width, or weights of the wrong length, are refused before anything is
    // allocated.
    let cfg = |batch: u32, dims: Vec<u32>| MlpConfig {
        batch,
        dims,
        dtype: Float32,
        weights_mem: MemoryConfig::DRAM,
        act_mem: MemoryConfig::L1,
        out_mem: MemoryConfig::L1,
        relu_last: false,
    };
    let (w, b) = (vec![0.5f32; 8 * 4], vec![0.0f32; 4]);
    let ok = dev.mlp(0, &cfg(2, vec![8, 4]), &[&w], &[&b]).unwrap();
    assert_eq!(ok.ops_per_run(), 2);
    expect_err!(dev.mlp(0, &cfg(0, vec![8, 4]), &[&w], &[&b]), Error::InvalidArgument(_), ["batch 0"]);
    expect_err!(dev.mlp(0, &cfg(2, vec![8, 0]), &[&w], &[&b]), Error::InvalidArgument(_), ["[8, 0]"]);
    expect_err!(dev.mlp(0, &cfg(2, vec![8]), &[], &[]), Error::InvalidArgument(_), ["two non-zero widths"]);
    expect_err!(
        dev.mlp(0, &cfg(2, vec![8, 4]), &[&w[1..]], &[&b]),
        Error::InvalidArgument(_),
        ["layer 0", "32 values (8 x 4)", "got 31"]
    );
    let wrong_input = dev.allocate(&spec(2, 9, Float32, MemoryConfig::L1)).unwrap();
    expect_err!(
        ok.run(0, wrong_input),
        Error::ShapeMismatch { shapes, .. } if *shapes == [[2, 9]],
        ["MLP input must be [2, 8]", "[2, 9]"]
    );
    let wrong_type = dev.allocate(&spec(2, 8, BFloat16, MemoryConfig::L1)).unwrap();
    expect_err!(
        ok.run(0, wrong_type),
        Error::DTypeMismatch { expected: Float32, found: BFloat16, .. },
        ["MLP input", "Float32 and BFloat16", "typecast"]
    );
    // Nothing refused left anything allocated.
    drop(ok);
    assert_eq!(free(&dev), before);
}

/// A way of dispatching a program, and its name.
type Case<'a> = (&'static str, Box<dyn Fn() -> Buffer + 'a>);

fn stats(dev: &Device) -> CacheStats {
    dev.program_cache_stats()
}

/// The program cache is keyed by kernel, cores, compile-time args and CB configs: running an op on buffers at new
/// addresses hits it (entries unchanged, hits grow, no upload), while a new shape, element type, op or core grid is
/// a new entry. Results stay right whichever way the program was found, including a first dispatch on the other
/// queue right after the upload on queue 0.
#[test]
fn program_cache_hits_across_addresses_and_separates_what_defines_a_program() {
    let dev = open("emu", &DeviceParams { num_command_queues: 2, ..params() });
    assert_eq!(stats(&dev), CacheStats::default());
    let l1 = MemoryConfig::L1;
    let relu = |v: &[f32]| -> Vec<f32> { v.iter().map(|x| x.max(0.0)).collect() };
    let mut rng = Rng::new(5);
    let s = spec(32, 40, Float32, l1);
    let mut inputs = Vec::new();
    let mut outputs = Vec::new();
    for i in 0..10 {
        let v = random_values(&mut rng, 32 * 40, -1.0, 1.0, Float32);
        let x = dev.buffer_from_host(&s, 0, &encode(&v, Float32)).unwrap();
        let y = dev.unary(0, UnaryOp::Relu, &x, &l1).unwrap();
        assert_eq!(stats(&dev), CacheStats { entries: 1, misses: 1, hits: i }, "dispatch {i}");
        assert_eq!(decode(&y.read_to_vec(0).unwrap(), Float32), relu(&v));
        inputs.push(x);
        outputs.push(y);
    }
    let mut addrs: Vec<u64> = inputs.iter().chain(&outputs).map(|b| b.address()).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20, "the dispatches above must have used distinct addresses");

    // The same program on queue 1, which never uploaded it: a hit, ordered after queue 0's upload on the device.
    let fresh = spec(32, 40, BFloat16, MemoryConfig::DRAM);
    let v = random_values(&mut rng, 32 * 40, -1.0, 1.0, BFloat16);
    let xb = dev.buffer_from_host(&fresh, 0, &encode(&v, BFloat16)).unwrap();
    let yb = dev.unary(0, UnaryOp::Exp, &xb, &MemoryConfig::DRAM).unwrap(); // uploads on queue 0
    let zb = dev.unary(1, UnaryOp::Exp, &xb, &MemoryConfig::DRAM).unwrap(); // hit on queue 1, no host wait
    assert_eq!(stats(&dev), CacheStats { entries: 2, misses: 2, hits: 10 });
    dev.finish(0).unwrap(); // xb was written on queue 0
    assert_bytes_eq(&zb.read_to_vec(1).unwrap(), &yb.read_to_vec(0).unwrap(), "exp on queue 1 vs queue 0");

    // What defines a program: each of these is a new entry.
    let x = &inputs[0];
    let base = stats(&dev);
    let cases: Vec<Case<'_>> = vec![
        (
            "another shape",
            Box::new(|| dev.unary(0, UnaryOp::Relu, &dev.allocate(&spec(16, 40, Float32, l1)).unwrap(), &l1).unwrap()),
        ),
        (
            "another element type",
            Box::new(|| dev.unary(0, UnaryOp::Relu, &dev.allocate(&spec(32, 40, BFloat16, l1)).unwrap(), &l1).unwrap()),
        ),
        ("another op", Box::new(|| dev.unary(0, UnaryOp::Gelu, x, &l1).unwrap())),
        (
            "another core grid",
            Box::new(|| {
                let m = sharded(BufferType::L1, Layout::HeightSharded, cores(1, 2, 4, 3), [4, 40], false);
                dev.unary(0, UnaryOp::Relu, x, &m).unwrap()
            }),
        ),
    ];
    for (k, (what, run)) in cases.iter().enumerate() {
        let k = k as u64 + 1;
        let _out = run();
        // One new entry and one upload per case; the second dispatch of each earlier case was a hit.
        let want = CacheStats { entries: base.entries + k as usize, misses: base.misses + k, hits: base.hits + k - 1 };
        assert_eq!(stats(&dev), want, "{what}");
        // Again, on other buffers: a hit.
        let _again = run();
        assert_eq!(stats(&dev), CacheStats { hits: want.hits + 1, ..want }, "{what}, second dispatch");
    }

    // Hand-built descriptions: looking one up twice makes one entry; a CB config that differs only in its number
    // of pages makes another. Looking up uploads nothing.
    let before = stats(&dev);
    let desc = |pages: u32| ProgramDesc {
        kernel: KernelSource::Builtin(BuiltinKernel::Fill),
        cores: CoreRect { x0: 0, y0: 0, x1: 1, y1: 1 },
        ct_args: vec![],
        cbs: vec![CbConfig { index: 16, page_size: 160, num_pages: pages, data_format: 0 }],
        sems: vec![],
        rt_words: BuiltinKernel::Fill.rt_words() as u16,
    };
    let p1 = dev.program(desc(2)).unwrap();
    let p2 = dev.program(desc(2)).unwrap();
    assert_eq!(p1.desc(), p2.desc());
    assert_eq!(stats(&dev), CacheStats { entries: before.entries + 1, ..before });
    dev.program(desc(4)).unwrap();
    assert_eq!(stats(&dev), CacheStats { entries: before.entries + 2, ..before });
}

/// The guide's §1.3.2 (trace with non-persistent L1 input) for MLPs of 1 to 4 layers and mixed widths, f32 and bf16,
/// the input height-sharded in L1. The address assertion must hold; replays with new inputs written in place equal
/// an eager run bit for bit, and the host reference within 1e-4 (f32) or one 2^-6 per layer (bf16, where the
/// device and the reference may each round an op's result to a different neighbour), relative to 1 + |ref|.
#[test]
fn guide_1_3_2_input_reallocated_in_capture_lands_at_the_captured_address() {
    let dims_cases: [&[u32]; 4] = [&[64, 128], &[64, 32, 96], &[64, 96, 32, 128], &[64, 128, 64, 32, 96]];
    let batch = 32u32;
    for (case, dims) in dims_cases.iter().enumerate() {
        for dtype in [Float32, BFloat16] {
            let what = format!("dims {dims:?} {dtype:?}");
            let dev = open("emu", &DeviceParams { trace_region_size: 1 << 20, ..params() });
            let mut rng = Rng::new(case as u64 * 2 + dtype as u64);
            let layers = dims.len() - 1;
            let w: Vec<Vec<f32>> = (0..layers)
                .map(|l| {
                    let s = 1.0 / (dims[l] as f32).sqrt();
                    random_values(&mut rng, (dims[l] * dims[l + 1]) as usize, -s, s, dtype)
                })
                .collect();
            let b: Vec<Vec<f32>> =
                (0..layers).map(|l| random_values(&mut rng, dims[l + 1] as usize, -0.1, 0.1, dtype)).collect();
            let cfg = MlpConfig {
                batch,
                dims: dims.to_vec(),
                dtype,
                weights_mem: MemoryConfig::DRAM,
                act_mem: MemoryConfig::L1,
                out_mem: MemoryConfig::L1,
                relu_last: case % 2 == 0,
            };
            let wr: Vec<&[f32]> = w.iter().map(Vec::as_slice).collect();
            let br: Vec<&[f32]> = b.iter().map(Vec::as_slice).collect();
            let mlp = dev.mlp(0, &cfg, &wr, &br).unwrap();
            let in_mem = sharded(BufferType::L1, Layout::HeightSharded, cores(0, 0, 7, 0), [4, dims[0]], false);
            let in_spec = spec(batch, dims[0], dtype, in_mem);
            let n_in = (batch * dims[0]) as usize;
            let tol = |r: f32| match dtype {
                Float32 => 1e-4 * (1.0 + r.abs()),
                BFloat16 => layers as f32 / 64.0 * (1.0 + r.abs()),
            };
            let check = |got: &[f32], x: &[f32], it: &str| {
                for (i, (&g, r)) in got.iter().zip(mlp_reference(&cfg, &w, &b, x)).enumerate() {
                    assert!((g - r).abs() <= tol(r), "{what} {it}: element {i} = {g}, reference {r}");
                }
            };

            // First run to compile the model.
            let x0 = random_values(&mut rng, n_in, -1.0, 1.0, dtype);
            let input = dev.buffer_from_host(&in_spec, 0, &encode(&x0, dtype)).unwrap();
            let output = mlp.run(0, input).unwrap();
            check(&decode(&output.read_to_vec(0).unwrap(), dtype), &x0, "compile run");

            // Capture.
            let input = dev.buffer_from_host(&in_spec, 0, &encode(&x0, dtype)).unwrap();
            let input_trace_addr = input.address();
            output.deallocate();
            let tid = dev.begin_trace_capture(0).unwrap();
            let output = mlp.run(0, input).unwrap();
            let input = dev.allocate(&in_spec).unwrap();
            assert_eq!(input.address(), input_trace_addr, "{what}: the re-allocated input moved");
            dev.end_trace_capture(tid, 0).unwrap();
            assert_eq!(dev.trace_info(tid).unwrap().launches as usize, mlp.ops_per_run(), "{what}");

            // Replays with new inputs written in place; an eager run of the same input for comparison.
            for it in 0..3 {
                let x = random_values(&mut rng, n_in, -1.0, 1.0, dtype);
                input.write(0, &encode(&x, dtype), false).unwrap();
                dev.execute_trace(tid, 0, false).unwrap();
                let got = output.read_to_vec(0).unwrap();
                let eager = mlp.run(0, dev.buffer_from_host(&in_spec, 0, &encode(&x, dtype)).unwrap()).unwrap();
                assert_bytes_eq(&got, &eager.read_to_vec(0).unwrap(), &format!("{what} replay {it} vs eager"));
                check(&decode(&got, dtype), &x, &format!("replay {it}"));
            }
            dev.release_trace(tid).unwrap();
        }
    }
}
