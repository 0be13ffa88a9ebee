//! Host cost of a dispatch through the C ABI beside the same dispatch through the Rust API, in the same run
//! (issue 14's targets: C-ABI cached dispatch <= 1.2x the Rust API and <= 60 ns median; a 64-core element-wise op
//! call with its arguments built per call <= 300 ns).
//!
//! What is measured is host cost, not device consumption: calls are timed in bounded bursts of [`BURST`] that the
//! issue ring holds without waiting, and the queue is drained (untimed) between bursts, so no timed call waits for
//! the emulated device to make room. The device runs concurrently and competes for the machine's cores, which is
//! what a caller sees too.
//!
//! - `cached dispatch (1 core)`: `Program::run` vs `ttdrv_program_run` of a cached one-core fill program, the
//!   arguments built once outside the loop;
//! - `64-core launch (shared args)`: `Program::launch` vs `ttdrv_program_launch` of a 64-core fill program, common
//!   words once plus one step per per-core word (contract 1.2);
//! - `eltwise add op call (64 cores)`: `Device::binary_into` (split, accessors and arguments built per call, into an
//!   existing output) vs `ttdrv_fill` (the C ABI's op call into an existing output: same path, one buffer), and
//!   `Device::binary` vs `ttdrv_eltwise_binary` + `ttdrv_buffer_free`, which also create and free the output.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::ptr::null_mut;
use std::time::{Duration, Instant};
use ttdrv::contract::kernel::BuiltinKernel;
use ttdrv::contract::records::CoreRect;
use ttdrv::device::ops::BinaryOp;
use ttdrv::device::program::{ArgStep, KernelSource, ProgramDesc, RtArgs};
use ttdrv::*;
use ttdrv_ffi::buffer::*;
use ttdrv_ffi::device::*;
use ttdrv_ffi::ops::*;
use ttdrv_ffi::program::*;
use ttdrv_ffi::ttdrv_status;

/// Calls per timed burst: far fewer records than the default 32 MiB issue ring holds (a 64-core op call puts a few
/// hundred bytes on it), so a timed call never waits for ring space.
const BURST: u64 = 256;

/// Times `n` calls of `call` in bursts of [`BURST`], calling `drain` untimed after each burst.
fn bursts(n: u64, mut call: impl FnMut(), mut drain: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = n;
    while left > 0 {
        let k = left.min(BURST);
        let t0 = Instant::now();
        for _ in 0..k {
            call();
        }
        total += t0.elapsed();
        drain();
        left -= k;
    }
    total
}

#[track_caller]
fn ok(st: ttdrv_status) {
    assert_eq!(st, ttdrv_status::Ok, "{st:?}");
}

/// A device opened through the C ABI; its buffers and programs are also reachable as Rust objects for the Rust side
/// of each comparison (the same device, so both sides share the emulated engine and its load).
struct CDev(*mut ttdrv_device);

impl CDev {
    fn open() -> CDev {
        let mut dev = null_mut();
        // SAFETY: a NUL-terminated selector, NULL params (the defaults) and a valid output pointer.
        ok(unsafe { ttdrv_device_open(c"emu".as_ptr(), std::ptr::null(), &mut dev) });
        CDev(dev)
    }

    fn finish(&self) {
        ok(ttdrv_device_finish(self.0, 0));
    }

    fn allocate(&self, rows: u32, cols: u32) -> *mut ttdrv_buffer {
        let mut s = ttdrv_tensor_spec::default();
        // SAFETY: valid pointers to locals.
        unsafe {
            ok(ttdrv_tensor_spec_init(&mut s));
            s.rows = rows;
            s.cols = cols;
            s.mem.buffer_type = TTDRV_BUFFER_L1;
            let mut b = null_mut();
            ok(ttdrv_buffer_allocate(self.0, &s, &mut b));
            b
        }
    }

    fn fill_program(&self, x1: u32, y1: u32) -> *mut ttdrv_program {
        let mut d = std::mem::MaybeUninit::<ttdrv_program_desc>::uninit();
        // SAFETY: _init writes the whole struct; then a valid description and output pointer.
        unsafe {
            ok(ttdrv_program_desc_init(d.as_mut_ptr()));
            let mut d = d.assume_init();
            d.kernel_name = c"ttdrv.fill".as_ptr();
            d.rt_words_per_core = BuiltinKernel::Fill.rt_words() as u32;
            d.cores = ttdrv_core_rect { x0: 0, y0: 0, x1, y1 };
            let mut p = null_mut();
            ok(ttdrv_program_new(self.0, &d, &mut p));
            p
        }
    }
}

impl Drop for CDev {
    fn drop(&mut self) {
        // SAFETY: the handle came from ttdrv_device_open.
        unsafe { ttdrv_device_close(self.0) };
    }
}

fn accessor(b: *mut ttdrv_buffer) -> [u32; 12] {
    let mut w = [0u32; 12];
    // SAFETY: 12 writable words.
    ok(unsafe { ttdrv_buffer_accessor(b, w.as_mut_ptr(), w.len()) });
    w
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("host cost");
    g.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));

    // Rust API and C ABI on one device each, opened the same way.
    let rdev = Device::open("emu", &DeviceParams::default()).unwrap();
    let cdev = CDev::open();

    // A cached one-core program, arguments built once.
    let rbuf = rdev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).unwrap();
    let (rprog, rt) = ttdrv_testkit::fill_program(&rdev, &rbuf).unwrap();
    let cbuf = cdev.allocate(16, 32);
    let cprog = cdev.fill_program(0, 0);
    let mut crt = vec![0u32, 1, 0, 8];
    crt.extend_from_slice(&accessor(cbuf));
    crt.push(1.5f32.to_bits());
    let cbufs = [cbuf];
    g.bench_function("cached dispatch (1 core) / Rust Program::run", |b| {
        b.iter_custom(|n| bursts(n, || rprog.run(0, black_box(&rt), &[&rbuf]).unwrap(), || rdev.finish(0).unwrap()))
    });
    g.bench_function("cached dispatch (1 core) / C ttdrv_program_run", |b| {
        b.iter_custom(|n| {
            bursts(
                n,
                // SAFETY: the arrays outlive the call.
                || ok(unsafe { ttdrv_program_run(cprog, 0, black_box(crt.as_ptr()), crt.len(), cbufs.as_ptr(), 1) }),
                || cdev.finish(),
            )
        })
    });

    // 64 cores, one row each: the accessor and value common, the block as steps.
    let rbig = rdev.allocate(&BufferSpec::new(64, 32, DType::Float32, MemoryConfig::L1)).unwrap();
    let k = BuiltinKernel::Fill;
    let rprog64 = rdev
        .program(ProgramDesc {
            kernel: KernelSource::Builtin(k),
            cores: CoreRect { x0: 0, y0: 0, x1: 7, y1: 7 },
            ct_args: vec![],
            cbs: vec![],
            sems: vec![],
            rt_words: k.rt_words() as u16,
        })
        .unwrap();
    let mut rcommon = rbig.accessor().to_words().to_vec();
    rcommon.push(2.0f32.to_bits());
    let steps = [ArgStep::linear(0, 0, 1), ArgStep::linear(1, 1, 1), ArgStep::constant(2, 0), ArgStep::constant(3, 32)];
    let rargs = RtArgs { common: &rcommon, steps: &steps, per_core: &[] };
    let cbig = cdev.allocate(64, 32);
    let cprog64 = cdev.fill_program(7, 7);
    let mut ccommon = accessor(cbig).to_vec();
    ccommon.push(2.0f32.to_bits());
    let step = |index, base, inner| ttdrv_arg_step { index, base, period: 0, outer: 0, inner, limit: u32::MAX };
    let csteps = [step(0, 0, 1), step(1, 1, 1), step(2, 0, 0), step(3, 32, 0)];
    let mut cargs = std::mem::MaybeUninit::<ttdrv_rt_args>::uninit();
    // SAFETY: _init writes the whole struct.
    let mut cargs = unsafe {
        ok(ttdrv_rt_args_init(cargs.as_mut_ptr()));
        cargs.assume_init()
    };
    cargs.common = ccommon.as_ptr();
    cargs.num_common = ccommon.len();
    cargs.steps = csteps.as_ptr();
    cargs.num_steps = csteps.len();
    let couts = [cbig];
    g.bench_function("64-core launch (shared args) / Rust Program::launch", |b| {
        b.iter_custom(|n| {
            bursts(n, || rprog64.launch(0, black_box(&rargs), &[], &[&rbig]).unwrap(), || rdev.finish(0).unwrap())
        })
    });
    g.bench_function("64-core launch (shared args) / C ttdrv_program_launch", |b| {
        b.iter_custom(|n| {
            bursts(
                n,
                // SAFETY: `cargs` and its arrays outlive the call.
                || ok(unsafe { ttdrv_program_launch(cprog64, 0, black_box(&cargs), null_mut(), 0, couts.as_ptr(), 1) }),
                || cdev.finish(),
            )
        })
    });

    // Op calls over 64 cores ([64, 256] float32 in L1), arguments built per call.
    let spec = BufferSpec::new(64, 256, DType::Float32, MemoryConfig::L1);
    let (a, bb, out) = (
        rdev.allocate(&spec).unwrap(),
        rdev.allocate(&BufferSpec::new(1, 256, DType::Float32, MemoryConfig::L1)).unwrap(),
        rdev.allocate(&spec).unwrap(),
    );
    g.bench_function("eltwise add op call (64 cores) / Rust binary_into", |b| {
        b.iter_custom(|n| {
            bursts(n, || rdev.binary_into(0, BinaryOp::Add, &a, &bb, &out).unwrap(), || rdev.finish(0).unwrap())
        })
    });
    let l1 = MemoryConfig::L1;
    g.bench_function("eltwise add op call (64 cores) / Rust binary (creates its output)", |b| {
        b.iter_custom(|n| {
            bursts(n, || drop(rdev.binary(0, BinaryOp::Add, &a, &bb, &l1).unwrap()), || rdev.finish(0).unwrap())
        })
    });
    let (ca, cb, cout) = (cdev.allocate(64, 256), cdev.allocate(1, 256), cdev.allocate(64, 256));
    g.bench_function("fill op call (64 cores) / C ttdrv_fill", |b| {
        b.iter_custom(|n| bursts(n, || ok(ttdrv_fill(cout, 0, black_box(3.0))), || cdev.finish()))
    });
    g.bench_function("fill op call (64 cores) / Rust fill", |b| {
        b.iter_custom(|n| bursts(n, || rdev.fill(0, &out, black_box(3.0)).unwrap(), || rdev.finish(0).unwrap()))
    });
    let mut cmem = ttdrv_tensor_spec::default();
    // SAFETY: a valid pointer to a local.
    ok(unsafe { ttdrv_tensor_spec_init(&mut cmem) });
    cmem.mem.buffer_type = TTDRV_BUFFER_L1;
    g.bench_function("eltwise add op call (64 cores) / C ttdrv_eltwise_binary (creates its output)", |b| {
        b.iter_custom(|n| {
            bursts(
                n,
                || {
                    let mut o = null_mut();
                    // SAFETY: live handles, a readable memory config and a writable output; the output is freed.
                    unsafe {
                        ok(ttdrv_eltwise_binary(ca, cb, TTDRV_BINARY_ADD, 0, &cmem.mem, &mut o));
                        ok(ttdrv_buffer_free(o));
                    }
                },
                || cdev.finish(),
            )
        })
    });
    g.finish();

    // SAFETY: handles from this bench, freed once.
    unsafe {
        ok(ttdrv_program_free(cprog));
        ok(ttdrv_program_free(cprog64));
        for h in [cbuf, cbig, ca, cb, cout] {
            ok(ttdrv_buffer_free(h));
        }
    }
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
