//! The C ABI's handle checks, called through the exported `ttdrv_ffi` functions: freed, closed and forged handles
//! give `TTDRV_STATUS_INVALID_HANDLE` with a message, NULL gives `TTDRV_STATUS_NULL_PARAMETER`, objects of a closed
//! device give `TTDRV_STATUS_CLOSED`, and a panic inside an entry point gives `TTDRV_STATUS_PANIC`. Outputs are left
//! untouched on failure.

use std::ffi::{CStr, c_char};
use std::ptr::{null, null_mut};
use ttdrv_ffi::buffer::*;
use ttdrv_ffi::device::*;
use ttdrv_ffi::event::*;
use ttdrv_ffi::{ttdrv_debug_panic, ttdrv_last_error, ttdrv_last_error_message, ttdrv_status};

fn last_error() -> String {
    // SAFETY: ttdrv_last_error never returns NULL and the string lives until the next call on this thread.
    unsafe { CStr::from_ptr(ttdrv_last_error()) }.to_string_lossy().into_owned()
}

/// Asserts `status == want` and that this thread's last error mentions every needle.
#[track_caller]
fn expect(status: ttdrv_status, want: ttdrv_status, needles: &[&str]) {
    let msg = last_error();
    assert_eq!(status, want, "last error: {msg}");
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
}

#[track_caller]
fn ok(status: ttdrv_status) {
    expect(status, ttdrv_status::Ok, &[]);
    assert_eq!(last_error(), "", "a successful call clears the message");
}

fn open() -> *mut ttdrv_device {
    let mut p = std::mem::MaybeUninit::<ttdrv_device_params>::uninit();
    let mut dev = null_mut();
    // SAFETY: valid pointers to our own locals.
    unsafe {
        ok(ttdrv_device_params_init(p.as_mut_ptr()));
        let mut p = p.assume_init();
        p.flags = TTDRV_DEVICE_FLAG_NO_HUGEPAGES;
        ok(ttdrv_device_open(c"emu".as_ptr(), &p, &mut dev));
    }
    assert!(!dev.is_null());
    dev
}

fn spec(rows: u32, cols: u32) -> ttdrv_tensor_spec {
    let mut s = ttdrv_tensor_spec::default();
    // SAFETY: a valid pointer to our local.
    ok(unsafe { ttdrv_tensor_spec_init(&mut s) });
    s.rows = rows;
    s.cols = cols;
    s.dtype = TTDRV_DTYPE_BFLOAT16;
    s
}

fn allocate(dev: *mut ttdrv_device, s: &ttdrv_tensor_spec) -> *mut ttdrv_buffer {
    let mut b = null_mut();
    // SAFETY: valid pointers.
    ok(unsafe { ttdrv_buffer_allocate(dev, s, &mut b) });
    b
}

fn new_event(dev: *mut ttdrv_device) -> *mut ttdrv_event {
    let mut e = null_mut();
    // SAFETY: valid pointer.
    ok(unsafe { ttdrv_event_new(dev, &mut e) });
    e
}

/// A value of the handle encoding (kind in bits 0-3, index + 1 in bits 4-31, generation above) for a slot the
/// registry never handed out.
const FORGED_BUFFER: usize = (7 << 32) | (0x0FFF_FFFF << 4) | 2;

#[test]
fn live_handles_work() {
    let dev = open();
    let s = spec(3, 5);
    let b = allocate(dev, &s);
    let data: Vec<u8> = (0..30).collect();
    let mut out = vec![0u8; 30];
    let mut size = 0usize;
    // SAFETY: valid handles, buffers of the stated lengths.
    unsafe {
        ok(ttdrv_buffer_write(b, 0, data.as_ptr().cast(), data.len(), true));
        ok(ttdrv_buffer_read(b, 0, true, out.as_mut_ptr().cast(), out.len()));
        ok(ttdrv_buffer_host_size(b, &mut size));
    }
    assert_eq!(out, data);
    assert_eq!(size, 30);
    let e = new_event(dev);
    ok(ttdrv_event_record(e, 0));
    ok(ttdrv_event_synchronize(e));
    ok(ttdrv_device_finish(dev, 0));
    // SAFETY: handles from ttdrv, each released once.
    unsafe {
        ok(ttdrv_event_free(e));
        ok(ttdrv_buffer_free(b));
        ok(ttdrv_device_close(dev));
    }
}

#[test]
fn freed_and_forged_handles_are_invalid() {
    let dev = open();
    let s = spec(2, 2);
    let b = allocate(dev, &s);
    let e = new_event(dev);
    let data = [1u8; 8];
    // SAFETY: every pointer is a value ttdrv returned or a forged value, which the ABI must reject, never follow.
    unsafe {
        ok(ttdrv_buffer_free(b));
        expect(
            ttdrv_buffer_write(b, 0, data.as_ptr().cast(), 8, false),
            ttdrv_status::InvalidHandle,
            &["ttdrv_buffer_write", "stale"],
        );
        expect(ttdrv_buffer_free(b), ttdrv_status::InvalidHandle, &["ttdrv_buffer_free", "stale"]);
        // A new buffer may take the freed slot: the old handle must stay dead (generation check).
        let b2 = allocate(dev, &s);
        assert_ne!(b2, b);
        expect(ttdrv_buffer_write(b, 0, data.as_ptr().cast(), 8, false), ttdrv_status::InvalidHandle, &["stale"]);
        ok(ttdrv_buffer_write(b2, 0, data.as_ptr().cast(), 8, true));
        ok(ttdrv_buffer_free(b2));

        ok(ttdrv_event_free(e));
        expect(ttdrv_event_record(e, 0), ttdrv_status::InvalidHandle, &["ttdrv_event_record", "stale"]);
        expect(ttdrv_event_synchronize(e), ttdrv_status::InvalidHandle, &["ttdrv_event"]);
        expect(ttdrv_event_free(e), ttdrv_status::InvalidHandle, &["stale"]);

        // Forged values: junk, a never-issued slot, and handles of the wrong kind.
        let junk = 0x1234_5670 as *mut ttdrv_buffer;
        expect(
            ttdrv_buffer_write(junk, 0, data.as_ptr().cast(), 8, false),
            ttdrv_status::InvalidHandle,
            &["0x12345670", "not a ttdrv_buffer handle"],
        );
        expect(ttdrv_buffer_free(junk), ttdrv_status::InvalidHandle, &["not a ttdrv_buffer handle"]);
        let forged = FORGED_BUFFER as *mut ttdrv_buffer;
        let mut addr = 0u64;
        expect(ttdrv_buffer_address(forged, &mut addr), ttdrv_status::InvalidHandle, &["ttdrv_buffer"]);
        expect(
            ttdrv_device_finish(0x1_0000_0001 as *mut ttdrv_device, 0),
            ttdrv_status::InvalidHandle,
            &["not a ttdrv_device"],
        );
        expect(
            ttdrv_buffer_free(dev as *mut ttdrv_buffer),
            ttdrv_status::InvalidHandle,
            &["is a ttdrv_device", "ttdrv_buffer is required"],
        );
        expect(ttdrv_event_record(dev as *mut ttdrv_event, 0), ttdrv_status::InvalidHandle, &["is a ttdrv_device"]);
        expect(ttdrv_device_close(e as *mut ttdrv_device), ttdrv_status::InvalidHandle, &["ttdrv_device"]);
        // None of that hurt the device.
        ok(ttdrv_device_finish(dev, 0));

        ok(ttdrv_device_close(dev));
        expect(ttdrv_device_finish(dev, 0), ttdrv_status::InvalidHandle, &["ttdrv_device_finish", "stale"]);
        expect(ttdrv_device_close(dev), ttdrv_status::InvalidHandle, &["stale"]);
        let mut out = 0xAAusize as *mut ttdrv_buffer;
        expect(ttdrv_buffer_allocate(dev, &s, &mut out), ttdrv_status::InvalidHandle, &["stale"]);
        assert_eq!(out as usize, 0xAA, "an output was written on failure");
    }
}

#[test]
fn null_arguments_are_null_parameter() {
    let dev = open();
    let s = spec(2, 2);
    let b = allocate(dev, &s);
    let data = [0u8; 8];
    // SAFETY: NULL where the ABI must check for it; everything else valid.
    unsafe {
        expect(
            ttdrv_buffer_write(null_mut(), 0, data.as_ptr().cast(), 8, false),
            ttdrv_status::NullParameter,
            &["ttdrv_buffer_write", "`buffer` is NULL"],
        );
        expect(ttdrv_buffer_write(b, 0, null(), 8, false), ttdrv_status::NullParameter, &["`data` is NULL"]);
        expect(ttdrv_buffer_read(b, 0, true, null_mut(), 8), ttdrv_status::NullParameter, &["`out` is NULL"]);
        expect(ttdrv_device_finish(null_mut(), 0), ttdrv_status::NullParameter, &["`device` is NULL"]);
        expect(ttdrv_event_record(null_mut(), 0), ttdrv_status::NullParameter, &["`event` is NULL"]);
        expect(ttdrv_event_synchronize(null_mut()), ttdrv_status::NullParameter, &["`event` is NULL"]);
        expect(ttdrv_device_wait_for_event(dev, 0, null_mut()), ttdrv_status::NullParameter, &["`event`"]);
        let mut out = 0xBBusize as *mut ttdrv_buffer;
        expect(ttdrv_buffer_allocate(dev, null(), &mut out), ttdrv_status::NullParameter, &["`spec` is NULL"]);
        assert_eq!(out as usize, 0xBB, "an output was written on failure");
        expect(ttdrv_buffer_allocate(dev, &s, null_mut()), ttdrv_status::NullParameter, &["`out` is NULL"]);
        expect(ttdrv_buffer_allocate(null_mut(), &s, &mut out), ttdrv_status::NullParameter, &["`device` is NULL"]);
        let mut d = null_mut();
        expect(ttdrv_device_open(null(), null(), &mut d), ttdrv_status::NullParameter, &["`selector` is NULL"]);
        assert!(d.is_null());
        expect(ttdrv_device_open(c"emu".as_ptr(), null(), null_mut()), ttdrv_status::NullParameter, &["`out`"]);
        expect(ttdrv_tensor_spec_init(null_mut()), ttdrv_status::NullParameter, &["`spec`"]);
        // Releasing NULL is a no-op.
        ok(ttdrv_buffer_free(null_mut()));
        ok(ttdrv_event_free(null_mut()));
        ok(ttdrv_device_close(null_mut()));
        ok(ttdrv_buffer_free(b));
        ok(ttdrv_device_close(dev));
    }
}

#[test]
fn objects_of_a_closed_device_report_closed() {
    let dev = open();
    let s = spec(4, 4);
    let b = allocate(dev, &s);
    let e = new_event(dev);
    ok(ttdrv_event_record(e, 0));
    let data = [0u8; 32];
    let mut out = [0u8; 32];
    // SAFETY: live handles of a closed device, valid buffers.
    unsafe {
        ok(ttdrv_device_close(dev));
        expect(ttdrv_buffer_write(b, 0, data.as_ptr().cast(), 32, false), ttdrv_status::Closed, &["closed"]);
        expect(ttdrv_buffer_read(b, 0, true, out.as_mut_ptr().cast(), 32), ttdrv_status::Closed, &["closed"]);
        expect(ttdrv_event_record(e, 0), ttdrv_status::Closed, &["closed"]);
        expect(ttdrv_event_synchronize(e), ttdrv_status::Closed, &["closed"]);
        // Their handles are still released normally.
        ok(ttdrv_buffer_free(b));
        ok(ttdrv_event_free(e));
    }
}

#[test]
fn a_panic_is_caught_at_the_boundary() {
    expect(ttdrv_debug_panic(), ttdrv_status::Panic, &["ttdrv_debug_panic", "panic", "report"]);
    // The library is still usable afterwards.
    let dev = open();
    // SAFETY: a handle from ttdrv.
    ok(unsafe { ttdrv_device_close(dev) });
}

#[test]
fn error_message_is_copied_and_truncated() {
    expect(ttdrv_device_finish(null_mut(), 0), ttdrv_status::NullParameter, &[]);
    let full = last_error();
    let mut buf = [0x55 as c_char; 8];
    let mut len = 0usize;
    // SAFETY: `buf` holds 8 bytes; `len` is writable.
    let st = unsafe { ttdrv_last_error_message(buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(st, ttdrv_status::BufferTooSmall);
    assert_eq!(len, full.len());
    // SAFETY: the function NUL-terminated `buf`.
    let got = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(got, &full[..7]);
    let mut big = vec![0 as c_char; full.len() + 1];
    // SAFETY: `big` holds the message and its NUL.
    let st = unsafe { ttdrv_last_error_message(big.as_mut_ptr(), big.len(), null_mut()) };
    assert_eq!(st, ttdrv_status::Ok);
    // SAFETY: NUL-terminated by the call.
    assert_eq!(unsafe { CStr::from_ptr(big.as_ptr()) }.to_str().unwrap(), full);
}

/// Programs and buffers freed and created again while other threads dispatch them through `ttdrv_program_run`
/// (crates/ffi/src/handles.rs keeps an object alive while a call uses it): every call returns OK or, for a handle
/// freed before the call resolved it, INVALID_HANDLE naming it stale; the device works afterwards. Everything runs on
/// queue 0, so a freed buffer's range is reused only after the launches queued before the free. (Valgrind runs the C
/// version of this race, c-tests/bad_input.c.)
#[test]
fn handles_freed_while_other_threads_dispatch_them() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use ttdrv_ffi::program::*;

    let dev = open();
    let s = spec(16, 32);
    let fill = |dev: *mut ttdrv_device| {
        let mut d = std::mem::MaybeUninit::<ttdrv_program_desc>::uninit();
        let mut p = null_mut();
        // SAFETY: _init writes the whole struct; then a valid description and output pointer.
        unsafe {
            ok(ttdrv_program_desc_init(d.as_mut_ptr()));
            let mut d = d.assume_init();
            d.kernel_name = c"ttdrv.fill".as_ptr();
            d.rt_words_per_core = 17;
            ok(ttdrv_program_new(dev, &d, &mut p));
        }
        p as usize
    };
    const SLOTS: usize = 4;
    let bufs: Arc<Vec<AtomicUsize>> =
        Arc::new((0..SLOTS).map(|_| AtomicUsize::new(allocate(dev, &s) as usize)).collect());
    let progs: Arc<Vec<AtomicUsize>> = Arc::new((0..SLOTS).map(|_| AtomicUsize::new(fill(dev))).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let dev_addr = dev as usize;
    let mut threads = Vec::new();
    for t in 0..3usize {
        let (bufs, progs, stop) = (bufs.clone(), progs.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let (mut runs, mut i) = (0u32, t);
            while !stop.load(Ordering::Relaxed) || runs == 0 {
                i = i.wrapping_mul(7).wrapping_add(3);
                let p = progs[i % SLOTS].load(Ordering::SeqCst) as *mut ttdrv_program;
                let b = [bufs[(i / 4) % SLOTS].load(Ordering::SeqCst) as *mut ttdrv_buffer];
                // The accessor of the buffer this call names, read through the C ABI like any caller would; a
                // buffer freed since is INVALID_HANDLE here too.
                let mut rt = [0u32, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1.5f32.to_bits()];
                // SAFETY: 12 writable words.
                if unsafe { ttdrv_ffi::program::ttdrv_buffer_accessor(b[0], rt[4..].as_mut_ptr(), 12) }
                    != ttdrv_status::Ok
                {
                    continue;
                }
                // SAFETY: the arrays outlive the call; the handles may be freed by another thread at any moment.
                let st = unsafe { ttdrv_program_run(p, 0, rt.as_ptr(), rt.len(), b.as_ptr(), 1) };
                match st {
                    ttdrv_status::Ok => runs += 1,
                    ttdrv_status::InvalidHandle => {
                        let m = last_error();
                        assert!(m.contains("stale"), "{m}");
                    }
                    other => panic!("ttdrv_program_run of handles being freed: {other:?}: {}", last_error()),
                }
            }
            runs
        }));
    }
    for n in 0..300usize {
        let i = n % SLOTS;
        let dev = dev_addr as *mut ttdrv_device;
        let old_b = bufs[i].swap(allocate(dev, &s) as usize, Ordering::SeqCst);
        let old_p = progs[(n / 2) % SLOTS].swap(fill(dev), Ordering::SeqCst);
        // SAFETY: handles this test made, each freed once; other threads may be using them.
        unsafe {
            ok(ttdrv_buffer_free(old_b as *mut ttdrv_buffer));
            ok(ttdrv_program_free(old_p as *mut ttdrv_program));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let runs: u32 = threads.into_iter().map(|t| t.join().expect("a dispatching thread failed")).sum();
    assert!(runs > 0);
    ok(ttdrv_device_finish(dev, 0));
    for i in 0..SLOTS {
        // SAFETY: the handles left in the lists, each freed once.
        unsafe {
            ok(ttdrv_buffer_free(bufs[i].load(Ordering::SeqCst) as *mut ttdrv_buffer));
            ok(ttdrv_program_free(progs[i].load(Ordering::SeqCst) as *mut ttdrv_program));
        }
    }
    // SAFETY: the device's handle, closed once.
    ok(unsafe { ttdrv_device_close(dev) });
}
