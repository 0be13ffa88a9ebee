//! Random sequences of C-ABI calls on two emulated devices from two threads at once, with garbage mixed in — NULL,
//! freed, forged and wrong-device handles, zero, huge and wrong lengths, unknown enum values, bad struct sizes,
//! misaligned arrays: no crash, no panic status, and every status a call returns is one its doc comment in
//! include/ttdrv.h lists (its "Errors:" line, following "as `ttdrv_...`" references). A failed call leaves a
//! message; a successful one clears it.
//!
//! Only what the C ABI says a caller must guarantee is kept: every data pointer is NULL or valid for the length
//! given, a non-blocking read's destination stays valid until the devices are closed, and `ttdrv_device_close` and
//! `ttdrv_device_reset` run while no other thread uses a device ("Thread: any, but not while another thread uses the
//! device"): they take a lock the other calls share.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use std::collections::{BTreeSet, HashMap};
use std::ffi::{CStr, c_void};
use std::ptr::{null, null_mut};
use std::sync::{Mutex, OnceLock, RwLock};
use ttdrv_ffi::buffer::*;
use ttdrv_ffi::device::*;
use ttdrv_ffi::event::*;
use ttdrv_ffi::ops::*;
use ttdrv_ffi::program::*;
use ttdrv_ffi::trace::*;
use ttdrv_ffi::trace_file::ttdrv_trace_save;
use ttdrv_ffi::trace_patch::*;
use ttdrv_ffi::{ttdrv_last_error, ttdrv_status, ttdrv_status_name};

/// Statuses each function documents, parsed from the header's doc comments.
fn documented() -> &'static HashMap<String, BTreeSet<String>> {
    static D: OnceLock<HashMap<String, BTreeSet<String>>> = OnceLock::new();
    D.get_or_init(|| {
        let h = include_str!("../../include/ttdrv.h");
        let names: Vec<&str> = h
            .lines()
            .filter_map(|l| l.trim().strip_prefix("TTDRV_STATUS_"))
            .filter_map(|l| l.split(' ').next())
            .filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        let mut raw: HashMap<String, (BTreeSet<String>, Vec<String>)> = HashMap::new();
        let mut rest = h;
        while let Some(i) = rest.find("/**") {
            let after = &rest[i + 3..];
            let end = after.find("*/").expect("doc comment ends");
            let doc = &after[..end];
            let decl = after[end + 2..].trim_start();
            rest = &after[end + 2..];
            let Some(open) = decl.find('(') else { continue };
            let head = &decl[..open];
            if !head.starts_with("ttdrv_status ") || head.contains(';') || head.contains('\n') {
                continue;
            }
            let f = head.trim_start_matches("ttdrv_status ").trim().to_string();
            let errors = doc.find("Errors:").map_or(doc, |e| &doc[e..]);
            let errors = errors.split("# Safety").next().unwrap_or(errors);
            let words: BTreeSet<String> = errors
                .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
                .filter(|w| names.contains(w))
                .map(str::to_string)
                .collect();
            let refs: Vec<String> = errors
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|w| w.starts_with("ttdrv_") && !w.contains(' '))
                .map(str::to_string)
                .collect();
            raw.insert(f, (words, refs));
        }
        // "Errors: as `ttdrv_x`": add the referenced function's statuses (one level is all the header uses).
        let mut out = HashMap::new();
        for (f, (words, refs)) in &raw {
            let mut all = words.clone();
            for r in refs {
                if let Some((w, _)) = raw.get(r) {
                    all.extend(w.iter().cloned());
                }
            }
            out.insert(f.clone(), all);
        }
        out
    })
}

fn status_name(st: ttdrv_status) -> String {
    // SAFETY: ttdrv_status_name returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(ttdrv_status_name(st as u32)) }.to_string_lossy().into_owned()
}

/// Checks one call's status against its documentation and the message convention.
#[track_caller]
fn check(f: &str, st: ttdrv_status) -> bool {
    // SAFETY: never NULL; valid until the next call on this thread.
    let msg = unsafe { CStr::from_ptr(ttdrv_last_error()) }.to_string_lossy().into_owned();
    let name = status_name(st);
    if st == ttdrv_status::Ok {
        assert!(msg.is_empty(), "{f} succeeded and left the message {msg:?}");
        return true;
    }
    assert!(!msg.is_empty(), "{f} returned {name} with an empty message");
    let short = name.trim_start_matches("TTDRV_STATUS_");
    let docs = documented().get(f).unwrap_or_else(|| panic!("{f} is not in include/ttdrv.h"));
    assert!(docs.contains(short), "{f} returned {name}, which its documentation does not list ({docs:?}): {msg}");
    false
}

/// A handle argument: one from the table (live or already released), NULL, or a forged value.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum H {
    Pick(u8),
    Null,
    Forged(u64),
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Mem {
    buffer_type: u8,
    layout: u8,
    shard: [u8; 6],
    shard_rows: u8,
    shard_cols: u8,
}

/// A byte count: right for the buffer, near it, zero, or huge.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Len {
    Exact,
    Off(i8),
    Zero,
    Huge,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open { slot: bool, queues: u8, flags: u8, trace_kib: u8, bad_size: bool },
    Close { dev: H },
    Reset { dev: H },
    Info { dev: H },
    Alloc { dev: H, rows: u8, cols: u8, dtype: u8, mem: Mem },
    FromHost { dev: H, rows: u8, cols: u8, cq: u8, len: Len },
    Write { buf: H, cq: u8, len: Len, blocking: bool, misaligned: bool },
    Read { buf: H, cq: u8, len: Len, blocking: bool },
    Free { buf: H },
    Address { buf: H },
    Spec { buf: H },
    Finish { dev: H, cq: u8 },
    Sync { dev: H },
    EventNew { dev: H },
    EventRecord { ev: H, cq: u8, notify: bool },
    EventWait { dev: H, cq: u8, ev: H },
    EventSync { ev: H, timeout_us: u16 },
    EventQuery { ev: H },
    EventFree { ev: H },
    Fill { buf: H, cq: u8, value: f32 },
    Unary { buf: H, op: u8, cq: u8, mem: Mem },
    Binary { a: H, b: H, op: u8, cq: u8, mem: Mem },
    ToMem { buf: H, cq: u8, mem: Mem },
    ReshardInto { a: H, b: H, cq: u8 },
    ProgramNew { dev: H, kernel: u8, rect: [u8; 4], rt_words: u8, cbs: u8 },
    ProgramRun { prog: H, cq: u8, rt_len: u8, inputs: Vec<H>, outputs: Vec<H>, io: bool },
    ProgramFree { prog: H },
    TraceBegin { dev: H, cq: u8 },
    TraceEnd { dev: H, tid: u8, cq: u8 },
    TraceExec { dev: H, tid: u8, cq: u8, blocking: bool },
    TraceRelease { dev: H, tid: u8 },
    TraceInfo { dev: H, tid: u8, size: u8 },
    TraceBindings { dev: H, tid: u8, index: u8, size: u8, name: u8 },
    TraceScalars { dev: H, tid: u8, index: u8, size: u8 },
    TraceRebind { dev: H, tid: u8, cq: u8, pairs: Vec<(u8, H)>, after: Vec<H>, once: bool, blocking: bool },
    TraceSetScalar { dev: H, tid: u8, cq: u8, name: u8, bits: u32, float: bool, after: Vec<H> },
    ProgramLaunchWith { prog: H, cq: u8, outputs: Vec<H>, roles: Vec<(u8, u8, u8, u8)> },
    TraceFile { dev: H, tid: u8, index: u8, size: u8, corrupt: Option<(u16, u8)> },
}

/// Names a patch call may be given: the scalars the built-in ops and `ProgramLaunchWith` make, binding names, and
/// names no trace has (empty, too long, not printable).
const NAMES: [&CStr; 8] =
    [c"scale.factor#0", c"fill.value#0", c"fill", c"input0", c"output0", c"", c"no such scalar", c"\xff\x01"];

/// A struct size for an output struct: today's, an older release's, too small, or larger than today's.
fn out_size(today: usize, older: &[u32], k: u8) -> u32 {
    match k % 4 {
        0 => today as u32,
        1 => older.get(k as usize / 4 % older.len().max(1)).copied().unwrap_or(today as u32),
        2 => k as u32 / 4,
        _ => today as u32 + 8,
    }
}

/// The bytes of an output struct of `size` bytes (at least today's, so the library may write that much).
fn out_struct<T>(size: u32) -> Vec<u64> {
    let n = (size as usize).max(std::mem::size_of::<T>()).div_ceil(8);
    let mut v = vec![0u64; n];
    // SAFETY: `v` holds at least 4 bytes.
    unsafe { (v.as_mut_ptr() as *mut u32).write(size) };
    v
}

/// Every handle value the sequence has seen, live or released (stale ones must be refused, never used).
#[derive(Default)]
struct Table {
    devs: Vec<usize>,
    bufs: Vec<usize>,
    events: Vec<usize>,
    progs: Vec<usize>,
    tids: Vec<u32>,
    /// Non-blocking read destinations: kept until every device is closed.
    dests: Vec<Vec<u8>>,
}

fn pick(v: &[usize], h: H) -> usize {
    match h {
        H::Pick(i) if !v.is_empty() => v[i as usize % v.len()],
        H::Pick(_) | H::Null => 0,
        H::Forged(x) => x as usize,
    }
}

fn mem_config(m: Mem) -> ttdrv_memory_config {
    let mut c = ttdrv_memory_config::default();
    c.buffer_type = (m.buffer_type % 4) as u32;
    c.layout = (m.layout % 5) as u32;
    c.shard.core_x0 = (m.shard[0] % 5) as u32;
    c.shard.core_y0 = (m.shard[1] % 5) as u32;
    c.shard.core_x1 = (m.shard[2] % 9) as u32;
    c.shard.core_y1 = (m.shard[3] % 9) as u32;
    c.shard.bank_first = (m.shard[4] % 9) as u32;
    c.shard.bank_last = (m.shard[5] % 9) as u32;
    c.shard.shard_rows = m.shard_rows as u32;
    c.shard.shard_cols = m.shard_cols as u32;
    c
}

fn bytes_of(len: Len, exact: usize) -> usize {
    match len {
        Len::Exact => exact,
        Len::Off(d) => exact.saturating_add_signed(d as isize),
        Len::Zero => 0,
        Len::Huge => usize::MAX / 2,
    }
}

/// The host size of a buffer handle, if it is live.
fn host_size(b: usize) -> usize {
    let mut n = 0usize;
    // SAFETY: `b` is any value: the library checks handles; `n` is our local.
    if unsafe { ttdrv_buffer_host_size(b as *const ttdrv_buffer, &mut n) } != ttdrv_status::Ok {
        return 0;
    }
    n
}

fn out_buf(t: &Mutex<Table>, f: &str, st: ttdrv_status, out: *mut ttdrv_buffer) {
    if check(f, st) {
        t.lock().unwrap().bufs.push(out as usize);
    }
}

/// Held shared by every call but close and reset, which hold it alone (their documented thread rule).
static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Runs one call. Tables are locked only to pick arguments and record results, so the two threads' calls overlap.
fn run(t: &Mutex<Table>, op: &Op) {
    let _g = match op {
        Op::Close { .. } | Op::Reset { .. } => (None, Some(EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner()))),
        _ => (Some(EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())), None),
    };
    let (d, b, e, p) = {
        let g = t.lock().unwrap();
        (g.devs.clone(), g.bufs.clone(), g.events.clone(), g.progs.clone())
    };
    let dev = |h: H| pick(&d, h) as *mut ttdrv_device;
    let buf = |h: H| pick(&b, h) as *mut ttdrv_buffer;
    let ev = |h: H| pick(&e, h) as *mut ttdrv_event;
    let tid = |i: u8| {
        let g = t.lock().unwrap();
        if g.tids.is_empty() || i >= 250 { i as u32 } else { g.tids[i as usize % g.tids.len()] }
    };
    // SAFETY (for every call below): handles are any value (the library checks them); every data pointer is NULL
    // or valid for the length passed; outputs point to our locals.
    unsafe {
        match *op {
            Op::Open { slot, queues, flags, trace_kib, bad_size } => {
                if d.len() >= 4 {
                    return;
                }
                let mut p = std::mem::MaybeUninit::<ttdrv_device_params>::uninit();
                if !check("ttdrv_device_params_init", ttdrv_device_params_init(p.as_mut_ptr())) {
                    return;
                }
                let mut p = p.assume_init();
                p.num_command_queues = (queues % 4) as u32;
                p.flags = (flags as u32 & 7) | TTDRV_DEVICE_FLAG_NO_HUGEPAGES;
                p.trace_region_size = (trace_kib as u64) << 12;
                p.issue_ring_size = 64 << 10;
                p.completion_ring_size = 64 << 10;
                p.timeout_ms = 3000;
                if bad_size {
                    p.struct_size = 12;
                }
                let sel = if slot { c"emu:queues=2" } else { c"emu:queues=1,grid=4x4" };
                let mut out = null_mut();
                if check("ttdrv_device_open", ttdrv_device_open(sel.as_ptr(), &p, &mut out)) {
                    t.lock().unwrap().devs.push(out as usize);
                }
            }
            Op::Close { dev: h } => {
                check("ttdrv_device_close", ttdrv_device_close(dev(h)));
            }
            Op::Reset { dev: h } => {
                check("ttdrv_device_reset", ttdrv_device_reset(dev(h)));
            }
            Op::Info { dev: h } => {
                // A zeroed struct with its size set, as a C caller would write `ttdrv_device_info i = {sizeof i};`.
                let mut i = std::mem::MaybeUninit::<ttdrv_device_info>::zeroed();
                (*i.as_mut_ptr()).struct_size = std::mem::size_of::<ttdrv_device_info>() as u32;
                check("ttdrv_device_get_info", ttdrv_device_get_info(dev(h), i.as_mut_ptr()));
            }
            Op::Alloc { dev: h, rows, cols, dtype, mem } => {
                let mut s = ttdrv_tensor_spec::default();
                check("ttdrv_tensor_spec_init", ttdrv_tensor_spec_init(&mut s));
                (s.rows, s.cols, s.dtype, s.mem) = (rows as u32, cols as u32 * 4, (dtype % 3) as u32, mem_config(mem));
                let mut out = null_mut();
                out_buf(t, "ttdrv_buffer_allocate", ttdrv_buffer_allocate(dev(h), &s, &mut out), out);
            }
            Op::FromHost { dev: h, rows, cols, cq, len } => {
                let mut s = ttdrv_tensor_spec::default();
                check("ttdrv_tensor_spec_init", ttdrv_tensor_spec_init(&mut s));
                (s.rows, s.cols) = (rows as u32 % 64 + 1, cols as u32 % 64 + 1);
                let exact = (s.rows * s.cols * 4) as usize;
                let n = bytes_of(len, exact).min(exact + 64);
                let data = vec![0x3fu8; n];
                let mut out = null_mut();
                let st = ttdrv_buffer_from_host(dev(h), &s, cq as u16 % 3, data.as_ptr() as *const c_void, n, &mut out);
                out_buf(t, "ttdrv_buffer_from_host", st, out);
            }
            Op::Write { buf: h, cq, len, blocking, misaligned } => {
                let bh = buf(h);
                let exact = host_size(bh as usize);
                let n = bytes_of(len, exact);
                let cap = n.min(exact + 64);
                let data = vec![0x41u8; cap + 8];
                let ptr = if misaligned { data.as_ptr().wrapping_add(1) } else { data.as_ptr() };
                // A length beyond what we own is passed only with NULL data (the library must refuse it first).
                let (ptr, n) = if n > cap { (null(), n) } else { (ptr, n) };
                check("ttdrv_buffer_write", ttdrv_buffer_write(bh, cq as u16 % 3, ptr as *const c_void, n, blocking));
            }
            Op::Read { buf: h, cq, len, blocking } => {
                let bh = buf(h);
                let exact = host_size(bh as usize);
                let n = bytes_of(len, exact);
                let cap = n.min(exact + 64);
                let mut dst = vec![0u8; cap.max(1)];
                let ptr = if n > cap { null_mut() } else { dst.as_mut_ptr() };
                check("ttdrv_buffer_read", ttdrv_buffer_read(bh, cq as u16 % 3, blocking, ptr as *mut c_void, n));
                // The device may still deliver into a non-blocking read's destination: keep it.
                t.lock().unwrap().dests.push(dst);
            }
            Op::Free { buf: h } => {
                check("ttdrv_buffer_free", ttdrv_buffer_free(buf(h)));
            }
            Op::Address { buf: h } => {
                let mut a = 0u64;
                check("ttdrv_buffer_address", ttdrv_buffer_address(buf(h), &mut a));
            }
            Op::Spec { buf: h } => {
                let mut s = ttdrv_tensor_spec { struct_size: 64, ..Default::default() };
                check("ttdrv_buffer_get_spec", ttdrv_buffer_get_spec(buf(h), &mut s));
            }
            Op::Finish { dev: h, cq } => {
                check("ttdrv_device_finish", ttdrv_device_finish(dev(h), cq as u16 % 3));
            }
            Op::Sync { dev: h } => {
                check("ttdrv_device_synchronize", ttdrv_device_synchronize(dev(h)));
            }
            Op::EventNew { dev: h } => {
                let mut out = null_mut();
                if check("ttdrv_event_new", ttdrv_event_new(dev(h), &mut out)) {
                    t.lock().unwrap().events.push(out as usize);
                }
            }
            Op::EventRecord { ev: h, cq, notify } => {
                if notify {
                    check("ttdrv_event_record_notify", ttdrv_event_record_notify(ev(h), cq as u16 % 3));
                } else {
                    check("ttdrv_event_record", ttdrv_event_record(ev(h), cq as u16 % 3));
                }
            }
            Op::EventWait { dev: hd, cq, ev: he } => {
                check("ttdrv_device_wait_for_event", ttdrv_device_wait_for_event(dev(hd), cq as u16 % 3, ev(he)));
            }
            Op::EventSync { ev: h, timeout_us } => {
                let st = ttdrv_event_synchronize_timeout(ev(h), timeout_us as u64 * 16);
                check("ttdrv_event_synchronize_timeout", st);
            }
            Op::EventQuery { ev: h } => {
                let mut done = false;
                check("ttdrv_event_query", ttdrv_event_query(ev(h), &mut done));
            }
            Op::EventFree { ev: h } => {
                check("ttdrv_event_free", ttdrv_event_free(ev(h)));
            }
            Op::Fill { buf: h, cq, value } => {
                check("ttdrv_fill", ttdrv_fill(buf(h), cq as u16 % 3, value));
            }
            Op::Unary { buf: h, op, cq, mem } => {
                let (m, mut out) = (mem_config(mem), null_mut());
                let st = ttdrv_eltwise_unary(buf(h), (op % 5) as u32, 0.5, cq as u16 % 3, &m, &mut out);
                out_buf(t, "ttdrv_eltwise_unary", st, out);
            }
            Op::Binary { a, b: bb, op, cq, mem } => {
                let (m, mut out) = (mem_config(mem), null_mut());
                let st = ttdrv_eltwise_binary(buf(a), buf(bb), (op % 4) as u32, cq as u16 % 3, &m, &mut out);
                out_buf(t, "ttdrv_eltwise_binary", st, out);
            }
            Op::ToMem { buf: h, cq, mem } => {
                let (m, mut out) = (mem_config(mem), null_mut());
                out_buf(t, "ttdrv_to_memory_config", ttdrv_to_memory_config(buf(h), cq as u16 % 3, &m, &mut out), out);
            }
            Op::ReshardInto { a, b: bb, cq } => {
                check("ttdrv_reshard_into", ttdrv_reshard_into(buf(a), cq as u16 % 3, buf(bb)));
            }
            Op::ProgramNew { dev: h, kernel, rect, rt_words, cbs } => {
                let mut pd = std::mem::MaybeUninit::<ttdrv_program_desc>::uninit();
                if !check("ttdrv_program_desc_init", ttdrv_program_desc_init(pd.as_mut_ptr())) {
                    return;
                }
                let mut pd = pd.assume_init();
                let names = [c"ttdrv.fill", c"ttdrv.copy", c"ttdrv.eltwise_unary", c"ttdrv.bogus", c"custom.kernel"];
                pd.kernel_name = names[kernel as usize % names.len()].as_ptr();
                pd.rt_words_per_core = rt_words as u32 % 40;
                pd.cores = ttdrv_core_rect {
                    x0: rect[0] as u32 % 10,
                    y0: rect[1] as u32 % 10,
                    x1: rect[2] as u32 % 10,
                    y1: rect[3] as u32 % 10,
                };
                let cb = [ttdrv_cb_config { index: 0, page_size: 1 << (cbs % 24), num_pages: 2, data_format: 0 }];
                if cbs % 2 == 1 {
                    (pd.cbs, pd.num_cbs) = (cb.as_ptr(), 1);
                }
                let mut out = null_mut();
                if check("ttdrv_program_new", ttdrv_program_new(dev(h), &pd, &mut out)) {
                    t.lock().unwrap().progs.push(out as usize);
                }
            }
            Op::ProgramRun { prog, cq, rt_len, ref inputs, ref outputs, io } => {
                let ph = pick(&p, prog) as *mut ttdrv_program;
                // Runtime words: zeros except a fill's block and accessor, taken from a live buffer if any.
                let mut rt = vec![0u32; rt_len as usize];
                if let Some(&first) = b.first()
                    && rt.len() >= 17
                {
                    rt[..4].copy_from_slice(&[0, 1, 0, 4]);
                    check(
                        "ttdrv_buffer_accessor",
                        ttdrv_buffer_accessor(first as *const ttdrv_buffer, rt.as_mut_ptr().add(4), 12),
                    );
                }
                let ins: Vec<*mut ttdrv_buffer> = inputs.iter().take(4).map(|&h| buf(h)).collect();
                let outs: Vec<*mut ttdrv_buffer> = outputs.iter().take(4).map(|&h| buf(h)).collect();
                if io {
                    let st = ttdrv_program_run_io(
                        ph,
                        cq as u16 % 3,
                        rt.as_ptr(),
                        rt.len(),
                        ins.as_ptr(),
                        ins.len(),
                        outs.as_ptr(),
                        outs.len(),
                    );
                    check("ttdrv_program_run_io", st);
                } else {
                    let st = ttdrv_program_run(ph, cq as u16 % 3, rt.as_ptr(), rt.len(), ins.as_ptr(), ins.len());
                    check("ttdrv_program_run", st);
                }
            }
            Op::ProgramFree { prog } => {
                check("ttdrv_program_free", ttdrv_program_free(pick(&p, prog) as *mut ttdrv_program));
            }
            Op::TraceBegin { dev: h, cq } => {
                let mut id = 0u32;
                if check("ttdrv_trace_begin_capture", ttdrv_trace_begin_capture(dev(h), cq as u16 % 3, &mut id)) {
                    t.lock().unwrap().tids.push(id);
                }
            }
            Op::TraceEnd { dev: h, tid: i, cq } => {
                check("ttdrv_trace_end_capture", ttdrv_trace_end_capture(dev(h), tid(i), cq as u16 % 3));
            }
            Op::TraceExec { dev: h, tid: i, cq, blocking } => {
                check("ttdrv_trace_execute", ttdrv_trace_execute(dev(h), tid(i), cq as u16 % 3, blocking));
            }
            Op::TraceRelease { dev: h, tid: i } => {
                check("ttdrv_trace_release", ttdrv_trace_release(dev(h), tid(i)));
            }
            Op::TraceInfo { dev: h, tid: i, size } => {
                let sizes = [TTDRV_TRACE_INFO_SIZE_V0_1, TTDRV_TRACE_INFO_SIZE_V0_2];
                let mut ti = out_struct::<ttdrv_trace_info>(out_size(size_of::<ttdrv_trace_info>(), &sizes, size));
                let p = ti.as_mut_ptr() as *mut ttdrv_trace_info;
                check("ttdrv_trace_get_info", ttdrv_trace_get_info(dev(h), tid(i), p));
            }
            Op::TraceBindings { dev: h, tid: i, index, size, name } => {
                let (dh, id) = (dev(h), tid(i));
                let mut n = 0usize;
                check("ttdrv_trace_binding_count", ttdrv_trace_binding_count(dh, id, &mut n));
                let mut tb = out_struct::<ttdrv_trace_binding>(out_size(size_of::<ttdrv_trace_binding>(), &[], size));
                let p = tb.as_mut_ptr() as *mut ttdrv_trace_binding;
                let st = ttdrv_trace_get_binding(dh, id, index as usize % (n + 2), p);
                let mut at = 0usize;
                if check("ttdrv_trace_get_binding", st) && name % 2 == 0 {
                    // The name just listed: found at the index it was listed at, unless the trace changed since.
                    check("ttdrv_trace_find_binding", ttdrv_trace_find_binding(dh, id, (*p).name.as_ptr(), &mut at));
                } else {
                    let nm = NAMES[name as usize % NAMES.len()];
                    check("ttdrv_trace_find_binding", ttdrv_trace_find_binding(dh, id, nm.as_ptr(), &mut at));
                }
            }
            Op::TraceScalars { dev: h, tid: i, index, size } => {
                let (dh, id) = (dev(h), tid(i));
                let mut n = 0usize;
                check("ttdrv_trace_scalar_count", ttdrv_trace_scalar_count(dh, id, &mut n));
                let mut sc = out_struct::<ttdrv_trace_scalar>(out_size(size_of::<ttdrv_trace_scalar>(), &[], size));
                let p = sc.as_mut_ptr() as *mut ttdrv_trace_scalar;
                check("ttdrv_trace_get_scalar", ttdrv_trace_get_scalar(dh, id, index as usize % (n + 2), p));
            }
            Op::TraceRebind { dev: h, tid: i, cq, ref pairs, ref after, once, blocking } => {
                let rb: Vec<ttdrv_trace_rebinding> = pairs
                    .iter()
                    .take(4)
                    .map(|&(k, hb)| ttdrv_trace_rebinding { binding: k as usize % 12, buffer: buf(hb) })
                    .collect();
                let evs: Vec<*const ttdrv_event> = after.iter().take(3).map(|&x| ev(x) as *const _).collect();
                let (dh, id, q) = (dev(h), tid(i), cq as u16 % 3);
                if once {
                    let st =
                        ttdrv_trace_execute_with(dh, id, q, blocking, rb.as_ptr(), rb.len(), evs.as_ptr(), evs.len());
                    check("ttdrv_trace_execute_with", st);
                } else {
                    let st = ttdrv_trace_rebind(dh, id, q, rb.as_ptr(), rb.len(), evs.as_ptr(), evs.len());
                    check("ttdrv_trace_rebind", st);
                }
            }
            Op::TraceSetScalar { dev: h, tid: i, cq, name, bits, float, ref after } => {
                let nm = NAMES[name as usize % NAMES.len()].as_ptr();
                let evs: Vec<*const ttdrv_event> = after.iter().take(3).map(|&x| ev(x) as *const _).collect();
                let (dh, id, q) = (dev(h), tid(i), cq as u16 % 3);
                if float {
                    let st = ttdrv_trace_set_scalar_f32(dh, id, q, nm, f32::from_bits(bits), evs.as_ptr(), evs.len());
                    check("ttdrv_trace_set_scalar_f32", st);
                } else {
                    let st = ttdrv_trace_set_scalar(dh, id, q, nm, bits, evs.as_ptr(), evs.len());
                    check("ttdrv_trace_set_scalar", st);
                }
            }
            Op::ProgramLaunchWith { prog, cq, ref outputs, ref roles } => {
                let ph = pick(&p, prog) as *mut ttdrv_program;
                let outs: Vec<*mut ttdrv_buffer> = outputs.iter().take(3).map(|&h| buf(h)).collect();
                // A fill's words (block, then the first output's accessor, then the value) when there is an output.
                let mut rt = vec![0u32; 17];
                rt[..4].copy_from_slice(&[0, 1, 0, 4]);
                if let Some(&o) = outs.first() {
                    check("ttdrv_buffer_accessor", ttdrv_buffer_accessor(o, rt.as_mut_ptr().add(4), 12));
                }
                let mut a = std::mem::MaybeUninit::<ttdrv_rt_args>::uninit();
                if !check("ttdrv_rt_args_init", ttdrv_rt_args_init(a.as_mut_ptr())) {
                    return;
                }
                let mut a = a.assume_init();
                (a.per_core, a.num_per_core) = (rt.as_ptr(), rt.len());
                let rs: Vec<ttdrv_arg_role> = roles
                    .iter()
                    .take(4)
                    .map(|&(kind, word, bufi, name)| ttdrv_arg_role {
                        kind: (kind % 3) as u32,
                        word: if word == 255 { 70_000 } else { word as u32 % 20 },
                        buffer: bufi as usize % 4,
                        name: if name % 4 == 0 { null() } else { NAMES[name as usize % NAMES.len()].as_ptr() },
                    })
                    .collect();
                let st = ttdrv_program_launch_with(
                    ph,
                    cq as u16 % 3,
                    &a,
                    null(),
                    0,
                    outs.as_ptr(),
                    outs.len(),
                    rs.as_ptr(),
                    rs.len(),
                );
                check("ttdrv_program_launch_with", st);
            }
            Op::TraceFile { dev: h, tid: i, index, size, corrupt } => {
                // One file per thread: the two threads' sequences may save at the same time.
                let path = std::env::temp_dir().join(format!(
                    "ttdrv-fuzz-{}-{:?}.trace",
                    std::process::id(),
                    std::thread::current().id()
                ));
                let cpath = std::ffi::CString::new(path.to_string_lossy().as_bytes()).unwrap();
                if !check("ttdrv_trace_save", ttdrv_trace_save(dev(h), tid(i), cpath.as_ptr())) {
                    return;
                }
                if let Some((at, x)) = corrupt
                    && let Ok(mut bytes) = std::fs::read(&path)
                    && !bytes.is_empty()
                {
                    let at = at as usize % bytes.len();
                    bytes[at] ^= x | 1;
                    let _ = std::fs::write(&path, bytes);
                }
                let mut f = null_mut();
                let opened = check("ttdrv_trace_file_open", ttdrv_trace_file_open(cpath.as_ptr(), &mut f));
                let _ = std::fs::remove_file(&path);
                if !opened {
                    return;
                }
                let (mut nb, mut ns) = (0usize, 0usize);
                check("ttdrv_trace_file_binding_count", ttdrv_trace_file_binding_count(f, &mut nb));
                check("ttdrv_trace_file_scalar_count", ttdrv_trace_file_scalar_count(f, &mut ns));
                let mut tb = out_struct::<ttdrv_trace_binding>(out_size(size_of::<ttdrv_trace_binding>(), &[], size));
                let st = ttdrv_trace_file_get_binding(f, index as usize % (nb + 2), tb.as_mut_ptr() as *mut _);
                check("ttdrv_trace_file_get_binding", st);
                let mut sc = out_struct::<ttdrv_trace_scalar>(out_size(size_of::<ttdrv_trace_scalar>(), &[], size));
                let st = ttdrv_trace_file_get_scalar(f, index as usize % (ns + 2), sc.as_mut_ptr() as *mut _);
                check("ttdrv_trace_file_get_scalar", st);
                check("ttdrv_trace_file_free", ttdrv_trace_file_free(f));
                // Stale now: refused.
                check("ttdrv_trace_file_binding_count", ttdrv_trace_file_binding_count(f, &mut nb));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else { return };
    if ops.is_empty() {
        return;
    }
    let ops = &ops[..ops.len().min(64)];
    let t = Mutex::new(Table::default());
    // One device before anything else, so most inputs reach past "no device".
    run(&t, &Op::Open { slot: true, queues: 2, flags: 0, trace_kib: 64, bad_size: false });
    // Two threads: ops at even positions on one, odd on the other.
    std::thread::scope(|s| {
        for parity in 0..2 {
            let t = &t;
            s.spawn(move || {
                for op in ops.iter().skip(parity).step_by(2) {
                    run(t, op);
                }
            });
        }
    });
    // Release everything the sequence left (stale handles are refused, which `check` accepts), then close the
    // devices: after that no destination may be written, so the kept ones can go.
    let g = t.into_inner().unwrap();
    // SAFETY: handles are any value; the library checks them.
    unsafe {
        for &b in &g.bufs {
            check("ttdrv_buffer_free", ttdrv_buffer_free(b as *mut ttdrv_buffer));
        }
        for &e in &g.events {
            check("ttdrv_event_free", ttdrv_event_free(e as *mut ttdrv_event));
        }
        for &p in &g.progs {
            check("ttdrv_program_free", ttdrv_program_free(p as *mut ttdrv_program));
        }
        for &d in &g.devs {
            check("ttdrv_device_close", ttdrv_device_close(d as *mut ttdrv_device));
        }
    }
    drop(g.dests);
});
