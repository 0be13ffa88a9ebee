//! The C dispatch path allocates nothing, proven by counting (issue 14): this test binary installs a global allocator
//! that counts the allocations each thread makes, warms every path up, then counts the calling thread's allocations
//! across many calls of the exported functions:
//! - `ttdrv_program_run`, `ttdrv_program_run_io` and `ttdrv_program_launch` of a cached program: none;
//! - `ttdrv_fill` and `ttdrv_reshard_into` (64 cores, into an existing buffer): none;
//! - the op calls that create their output (`ttdrv_eltwise_binary`, `ttdrv_eltwise_unary`, `ttdrv_matmul`,
//!   `ttdrv_to_memory_config`, `ttdrv_reshard`, `ttdrv_to_layout`): no more than `ttdrv_buffer_allocate` takes to
//!   create that output (the buffer and its handle).
//!
//! Only the calling thread is counted: the emulated device's engine threads are the device, not the dispatch path.
//! The queue is drained (uncounted) between bursts, so no call waits for ring space.

use std::ptr::null_mut;
use ttdrv_ffi::buffer::*;
use ttdrv_ffi::device::*;
use ttdrv_ffi::ops::*;
use ttdrv_ffi::program::*;
use ttdrv_ffi::ttdrv_status;
use ttdrv_testkit::counting::{Counting, allocations};

#[global_allocator]
static COUNTING: Counting = Counting;

const CALLS: usize = 200;
const BURSTS: usize = 2;

#[track_caller]
fn ok(st: ttdrv_status) {
    if st != ttdrv_status::Ok {
        // SAFETY: ttdrv_last_error never returns NULL and the string lives until the next call on this thread.
        let msg = unsafe { std::ffi::CStr::from_ptr(ttdrv_ffi::ttdrv_last_error()) };
        panic!("{st:?}: {}", msg.to_string_lossy());
    }
}

/// An op that creates its output, writing the handle to the pointer it is given.
type Op<'a> = &'a dyn Fn(*mut *mut ttdrv_buffer) -> ttdrv_status;

struct Dev(*mut ttdrv_device);

impl Dev {
    fn open() -> Dev {
        let mut dev = null_mut();
        // SAFETY: a NUL-terminated selector, NULL params (the defaults) and a valid output pointer.
        ok(unsafe { ttdrv_device_open(c"emu".as_ptr(), std::ptr::null(), &mut dev) });
        Dev(dev)
    }

    fn finish(&self) {
        ok(ttdrv_device_finish(self.0, 0));
    }

    fn allocate(&self, s: &ttdrv_tensor_spec) -> *mut ttdrv_buffer {
        let mut b = null_mut();
        // SAFETY: valid pointers.
        ok(unsafe { ttdrv_buffer_allocate(self.0, s, &mut b) });
        b
    }

    /// Asserts that `CALLS` calls of `call` allocate nothing, in each of `BURSTS` bursts after a warm-up burst.
    fn assert_no_allocation(&self, what: &str, mut call: impl FnMut() -> ttdrv_status) {
        for burst in 0..=BURSTS {
            let (n, ()) = allocations(|| (0..CALLS).for_each(|_| ok(call())));
            self.finish();
            if burst > 0 {
                assert_eq!(n, 0, "{what}: {n} allocations in {CALLS} calls");
            }
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // SAFETY: the handle came from ttdrv_device_open.
        unsafe { ttdrv_device_close(self.0) };
    }
}

fn spec(rows: u32, cols: u32, buffer_type: u32) -> ttdrv_tensor_spec {
    let mut s = ttdrv_tensor_spec::default();
    // SAFETY: a valid pointer to our local.
    ok(unsafe { ttdrv_tensor_spec_init(&mut s) });
    s.rows = rows;
    s.cols = cols;
    s.mem.buffer_type = buffer_type;
    s
}

fn accessor(b: *mut ttdrv_buffer) -> [u32; 12] {
    let mut w = [0u32; 12];
    // SAFETY: 12 writable words.
    ok(unsafe { ttdrv_buffer_accessor(b, w.as_mut_ptr(), w.len()) });
    w
}

fn fill_program(dev: &Dev, x1: u32, y1: u32) -> *mut ttdrv_program {
    let mut d = std::mem::MaybeUninit::<ttdrv_program_desc>::uninit();
    // SAFETY: _init writes the whole struct.
    let mut d = unsafe {
        ok(ttdrv_program_desc_init(d.as_mut_ptr()));
        d.assume_init()
    };
    d.kernel_name = c"ttdrv.fill".as_ptr();
    d.rt_words_per_core = 17;
    d.cores = ttdrv_core_rect { x0: 0, y0: 0, x1, y1 };
    let mut p = null_mut();
    // SAFETY: an initialised description and a valid output pointer.
    ok(unsafe { ttdrv_program_new(dev.0, &d, &mut p) });
    p
}

#[test]
fn the_counter_counts() {
    let (n, v) = allocations(|| vec![1u8; 10]);
    assert_eq!((n, v.len()), (1, 10));
}

#[test]
fn program_runs_through_the_c_abi_allocate_nothing() {
    let dev = Dev::open();
    let buf = dev.allocate(&spec(16, 32, TTDRV_BUFFER_L1));
    let prog = fill_program(&dev, 0, 0);
    let mut rt = vec![0u32, 1, 0, 8];
    rt.extend_from_slice(&accessor(buf));
    rt.push(1.5f32.to_bits());
    let bufs = [buf];
    dev.assert_no_allocation("ttdrv_program_run", || {
        // SAFETY: the arrays outlive the call.
        unsafe { ttdrv_program_run(prog, 0, rt.as_ptr(), rt.len(), bufs.as_ptr(), bufs.len()) }
    });
    dev.assert_no_allocation("ttdrv_program_run_io", || {
        // SAFETY: the arrays outlive the call.
        unsafe { ttdrv_program_run_io(prog, 0, rt.as_ptr(), rt.len(), null_mut(), 0, bufs.as_ptr(), 1) }
    });
    // Eight buffers: the most a dispatch keeps inline.
    let many = [buf; 8];
    dev.assert_no_allocation("ttdrv_program_run with 8 buffers", || {
        // SAFETY: the arrays outlive the call.
        unsafe { ttdrv_program_run(prog, 0, rt.as_ptr(), rt.len(), many.as_ptr(), many.len()) }
    });

    // The compact form on 64 cores: one row each; the accessor and value are common.
    let big = dev.allocate(&spec(64, 32, TTDRV_BUFFER_L1));
    let prog64 = fill_program(&dev, 7, 7);
    let mut common = accessor(big).to_vec();
    common.push(2.0f32.to_bits());
    let unclamped = |index, base, inner| ttdrv_arg_step { index, base, period: 0, outer: 0, inner, limit: u32::MAX };
    let steps = [unclamped(0, 0, 1), unclamped(1, 1, 1), unclamped(2, 0, 0), unclamped(3, 32, 0)];
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
    let outs = [big];
    dev.assert_no_allocation("ttdrv_program_launch (64 cores)", || {
        // SAFETY: `args` and its arrays outlive the call.
        unsafe { ttdrv_program_launch(prog64, 0, &args, null_mut(), 0, outs.as_ptr(), 1) }
    });
    let mut back = vec![0f32; 64 * 32];
    // SAFETY: `back` holds the buffer's bytes.
    ok(unsafe { ttdrv_buffer_read(big, 0, true, back.as_mut_ptr() as *mut std::ffi::c_void, back.len() * 4) });
    assert!(back.iter().all(|&v| v == 2.0), "every row filled by its core");
    // SAFETY: handles from this test.
    unsafe {
        ok(ttdrv_program_free(prog));
        ok(ttdrv_program_free(prog64));
        ok(ttdrv_buffer_free(buf));
        ok(ttdrv_buffer_free(big));
    }
}

#[test]
fn op_calls_through_the_c_abi_allocate_nothing_beyond_their_output() {
    let dev = Dev::open();
    let s = spec(64, 256, TTDRV_BUFFER_L1);
    let (a, out) = (dev.allocate(&s), dev.allocate(&s));
    let b = dev.allocate(&spec(1, 256, TTDRV_BUFFER_L1));
    let w = dev.allocate(&spec(256, 64, TTDRV_BUFFER_L1));
    let dram = spec(64, 256, TTDRV_BUFFER_DRAM);
    let moved = dev.allocate(&dram);
    dev.assert_no_allocation("ttdrv_fill", || ttdrv_fill(out, 0, 3.0));
    dev.assert_no_allocation("ttdrv_reshard_into", || ttdrv_reshard_into(a, 0, moved));

    let l1 = s.mem;
    // SAFETY (each closure): live handles, a readable memory config and a writable output.
    let cases: [(&str, ttdrv_tensor_spec, Op); 6] = [
        ("ttdrv_eltwise_binary", s, &|o| unsafe { ttdrv_eltwise_binary(a, b, TTDRV_BINARY_ADD, 0, &l1, o) }),
        ("ttdrv_eltwise_unary", s, &|o| unsafe { ttdrv_eltwise_unary(a, TTDRV_UNARY_GELU, 0.0, 0, &l1, o) }),
        ("ttdrv_matmul", spec(64, 64, TTDRV_BUFFER_L1), &|o| unsafe { ttdrv_matmul(a, w, 0, &l1, o) }),
        ("ttdrv_to_memory_config", dram, &|o| unsafe { ttdrv_to_memory_config(a, 0, &dram.mem, o) }),
        ("ttdrv_reshard", dram, &|o| unsafe { ttdrv_reshard(a, 0, &dram.mem, o) }),
        ("ttdrv_to_layout", ttdrv_tensor_spec { tensor_layout: TTDRV_TENSOR_LAYOUT_TILE, ..s }, &|o| unsafe {
            ttdrv_to_layout(a, 0, TTDRV_TENSOR_LAYOUT_TILE, &l1, o)
        }),
    ];
    for (what, out_spec, call) in cases {
        for burst in 0..=BURSTS {
            let (budget, made) = allocations(|| dev.allocate(&out_spec));
            // SAFETY: a handle from ttdrv_buffer_allocate.
            ok(unsafe { ttdrv_buffer_free(made) });
            let mut o = null_mut();
            let (n, st) = allocations(|| call(&mut o));
            ok(st);
            // SAFETY: the op's output handle.
            ok(unsafe { ttdrv_buffer_free(o) });
            dev.finish();
            if burst > 0 {
                assert!(budget > 0 && n <= budget, "{what}: {n} allocations; creating its output takes {budget}");
            }
        }
    }
    for h in [a, out, b, w, moved] {
        // SAFETY: handles from this test.
        ok(unsafe { ttdrv_buffer_free(h) });
    }
}
