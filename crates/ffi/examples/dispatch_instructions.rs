//! Instructions per cached dispatch, Rust API beside C ABI, for a counter that sees every instruction: run it under
//! callgrind (`scripts/count-dispatch-instructions.sh` does, and prints the per-call counts). Timings on a shared
//! machine are noise; instruction counts are not, so this is how the C ABI's premium over `Program::run` is judged
//! (issue 14's target for it is 1.2x).
//!
//! Each path runs `CALLS` calls in bursts the issue ring holds, the queue drained between bursts (outside the counted
//! functions), so no counted call waits for ring space. `rust_calls`, `c_run_calls` and `c_launch_calls` are the
//! functions whose inclusive cost the script divides by `CALLS`; `c_boundary_calls` is the part every entry point
//! pays, handles or not.

use std::hint::black_box;
use std::ptr::null_mut;
use ttdrv::contract::kernel::BuiltinKernel;
use ttdrv::{BufferSpec, DType, Device, DeviceParams, MemoryConfig};
use ttdrv_ffi::buffer::*;
use ttdrv_ffi::device::*;
use ttdrv_ffi::program::*;
use ttdrv_ffi::ttdrv_status;

/// Calls counted per path.
const CALLS: usize = 2000;
/// Calls between drains: far fewer records than the issue ring holds.
const BURST: usize = 200;

#[track_caller]
fn ok(st: ttdrv_status) {
    assert_eq!(st, ttdrv_status::Ok, "{st:?}");
}

#[inline(never)]
fn rust_calls(prog: &ttdrv::device::program::Program, rt: &[u32], buf: &ttdrv::Buffer) {
    for _ in 0..BURST {
        prog.run(0, black_box(rt), &[buf]).unwrap();
    }
}

#[inline(never)]
fn c_run_calls(prog: *mut ttdrv_program, rt: &[u32], bufs: &[*mut ttdrv_buffer]) {
    for _ in 0..BURST {
        // SAFETY: the arrays outlive the call.
        ok(unsafe { ttdrv_program_run(prog, 0, black_box(rt.as_ptr()), rt.len(), bufs.as_ptr(), bufs.len()) });
    }
}

#[inline(never)]
fn c_launch_calls(prog: *mut ttdrv_program, args: &ttdrv_rt_args, outs: &[*mut ttdrv_buffer]) {
    for _ in 0..BURST {
        // SAFETY: `args` and its arrays outlive the call.
        ok(unsafe { ttdrv_program_launch(prog, 0, black_box(args), null_mut(), 0, outs.as_ptr(), outs.len()) });
    }
}

/// The boundary every entry point pays (panic guard, the thread's error message and log queue), with no handle:
/// `ttdrv_rt_args_init`, which only writes a struct.
#[inline(never)]
fn c_boundary_calls(args: &mut std::mem::MaybeUninit<ttdrv_rt_args>) {
    for _ in 0..BURST {
        // SAFETY: `args` is writable.
        ok(unsafe { ttdrv_rt_args_init(black_box(args.as_mut_ptr())) });
    }
}

fn main() {
    let rdev = Device::open("emu", &DeviceParams::default()).unwrap();
    let rbuf = rdev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).unwrap();
    let (rprog, rt) = ttdrv_testkit::fill_program(&rdev, &rbuf).unwrap();

    let mut cdev = null_mut();
    // SAFETY: a NUL-terminated selector, NULL params (the defaults) and a valid output pointer.
    ok(unsafe { ttdrv_device_open(c"emu".as_ptr(), std::ptr::null(), &mut cdev) });
    let mut s = ttdrv_tensor_spec::default();
    let mut cbuf = null_mut();
    // SAFETY: valid pointers to locals.
    unsafe {
        ok(ttdrv_tensor_spec_init(&mut s));
        s.rows = 16;
        s.cols = 32;
        s.mem.buffer_type = TTDRV_BUFFER_L1;
        ok(ttdrv_buffer_allocate(cdev, &s, &mut cbuf));
    }
    let mut d = std::mem::MaybeUninit::<ttdrv_program_desc>::uninit();
    let mut cprog = null_mut();
    // SAFETY: _init writes the whole struct; then a valid description and output pointer.
    unsafe {
        ok(ttdrv_program_desc_init(d.as_mut_ptr()));
        let mut d = d.assume_init();
        d.kernel_name = c"ttdrv.fill".as_ptr();
        d.rt_words_per_core = BuiltinKernel::Fill.rt_words() as u32;
        ok(ttdrv_program_new(cdev, &d, &mut cprog));
    }
    let mut crt = vec![0u32, 1, 0, 8];
    let mut acc = [0u32; 12];
    // SAFETY: 12 writable words.
    ok(unsafe { ttdrv_buffer_accessor(cbuf, acc.as_mut_ptr(), acc.len()) });
    crt.extend_from_slice(&acc);
    crt.push(1.5f32.to_bits());
    let cbufs = [cbuf];
    // The launch form: everything common, the block as constant steps.
    let constant = |index, base| ttdrv_arg_step { index, base, period: 0, outer: 0, inner: 0, limit: u32::MAX };
    let steps = [constant(0, 0), constant(1, 1), constant(2, 0), constant(3, 8)];
    let common = &crt[4..];
    let mut args = std::mem::MaybeUninit::<ttdrv_rt_args>::uninit();
    // SAFETY: _init writes the whole struct.
    let mut args = unsafe {
        ok(ttdrv_rt_args_init(args.as_mut_ptr()));
        args.assume_init()
    };
    args.common = common.as_ptr();
    args.num_common = common.len();
    args.steps = steps.as_ptr();
    args.num_steps = steps.len();

    // Warm-up: the first run uploads the kernel image, and every lazily initialised path is taken once.
    rprog.run(0, &rt, &[&rbuf]).unwrap();
    // SAFETY: as in the counted functions.
    unsafe {
        ok(ttdrv_program_run(cprog, 0, crt.as_ptr(), crt.len(), cbufs.as_ptr(), 1));
        ok(ttdrv_program_launch(cprog, 0, &args, null_mut(), 0, cbufs.as_ptr(), 1));
    }
    rdev.finish(0).unwrap();
    ok(ttdrv_device_finish(cdev, 0));
    for _ in 0..CALLS / BURST {
        rust_calls(&rprog, &rt, &rbuf);
        rdev.finish(0).unwrap();
        c_run_calls(cprog, &crt, &cbufs);
        ok(ttdrv_device_finish(cdev, 0));
        c_launch_calls(cprog, &args, &cbufs);
        ok(ttdrv_device_finish(cdev, 0));
        c_boundary_calls(&mut std::mem::MaybeUninit::uninit());
    }
    println!("calls per path: {CALLS}");
    // `--time N`: N alternating timed bursts of each path (A/B in one process), then each path's median and fastest
    // burst in ns per call. Under callgrind leave it out.
    let rounds: usize = std::env::args().skip_while(|a| a != "--time").nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
    if rounds > 0 {
        let mut t: [Vec<f64>; 3] = Default::default();
        for _ in 0..rounds {
            let t0 = std::time::Instant::now();
            rust_calls(&rprog, &rt, &rbuf);
            t[0].push(t0.elapsed().as_nanos() as f64 / BURST as f64);
            rdev.finish(0).unwrap();
            let t0 = std::time::Instant::now();
            c_run_calls(cprog, &crt, &cbufs);
            t[1].push(t0.elapsed().as_nanos() as f64 / BURST as f64);
            ok(ttdrv_device_finish(cdev, 0));
            let t0 = std::time::Instant::now();
            c_launch_calls(cprog, &args, &cbufs);
            t[2].push(t0.elapsed().as_nanos() as f64 / BURST as f64);
            ok(ttdrv_device_finish(cdev, 0));
        }
        for v in &mut t {
            v.sort_by(f64::total_cmp);
        }
        let med = |v: &Vec<f64>| v[v.len() / 2];
        println!(
            "ns per call, median (fastest) of {rounds} bursts: Rust run {:.1} ({:.1}), C run {:.1} ({:.1}), C launch {:.1} \
             ({:.1}); C run / Rust {:.2} ({:.2})",
            med(&t[0]),
            t[0][0],
            med(&t[1]),
            t[1][0],
            med(&t[2]),
            t[2][0],
            med(&t[1]) / med(&t[0]),
            t[1][0] / t[0][0]
        );
    }
    // SAFETY: handles from this program, each released once.
    unsafe {
        ok(ttdrv_program_free(cprog));
        ok(ttdrv_buffer_free(cbuf));
        ok(ttdrv_device_close(cdev));
    }
}
