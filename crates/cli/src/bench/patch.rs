//! Patching a captured trace against capturing it again (issue 15: "a patch costs O(patched words)"): a trace of
//! 1000 op launches in which one input is used by 1, another by 10 and a third by 100 launches, so rebinding each
//! rewrites 1, 10 or 100 address words; beside it, in the same run, a re-capture of the same 1000 launches (what a
//! tt-metal user does to change an address), both measured to the device's completion.

use super::capi::{self, CBuffer, CDevice};
use super::{Api, Bench, Check, Ctx, Kind, RatioOf, Row, Stat, State, Unit, time_ns};
use ttdrv::device::ops::UnaryOp;
use ttdrv::{Buffer, BufferSpec, DType, Device, DeviceParams, MemoryConfig};
use ttdrv_ffi::buffer::ttdrv_buffer;
use ttdrv_ffi::ops::{TTDRV_UNARY_SCALE, ttdrv_eltwise_unary};
use ttdrv_ffi::trace::{ttdrv_trace_begin_capture, ttdrv_trace_end_capture, ttdrv_trace_release};
use ttdrv_ffi::trace_patch::{
    ttdrv_trace_binding, ttdrv_trace_binding_count, ttdrv_trace_get_binding, ttdrv_trace_rebind, ttdrv_trace_rebinding,
};

fn e(e: ttdrv::Error) -> String {
    e.to_string()
}

const LAUNCHES: usize = 1000;
const WORDS: [usize; 3] = [1, 10, 100];

/// Enqueues the 1000 launches: input `ins[k]` is read by `WORDS[k]` launches, `rest` by the others; every launch
/// writes `y`.
fn launches(dev: &Device, ins: &[&Buffer; 3], rest: &Buffer, y: &Buffer) -> Result<(), String> {
    let mut n = 0;
    for (k, &w) in WORDS.iter().enumerate() {
        for _ in 0..w {
            dev.unary_into(0, UnaryOp::Scale(1.0), ins[k], y).map_err(e)?;
            n += 1;
        }
    }
    while n < LAUNCHES {
        dev.unary_into(0, UnaryOp::Scale(1.0), rest, y).map_err(e)?;
        n += 1;
    }
    Ok(())
}

/// The same 1000 launches through the C ABI: each op call creates its output, freed at once (so the trace owns it).
fn c_launches(ins: &[&CBuffer; 3], rest: &CBuffer) -> Result<(), String> {
    let mem = capi::memory(true);
    let one = |input: &CBuffer| -> Result<(), String> {
        let mut out: *mut ttdrv_buffer = std::ptr::null_mut();
        // SAFETY: live handles, `mem` and `out` valid for the call.
        let st = unsafe { ttdrv_eltwise_unary(input.raw(), TTDRV_UNARY_SCALE, 1.0, 0, &mem, &mut out) };
        capi::ok(st, "ttdrv_eltwise_unary")?;
        drop(CBuffer::adopt(out));
        Ok(())
    };
    let mut n = 0;
    for (k, &w) in WORDS.iter().enumerate() {
        for _ in 0..w {
            one(ins[k])?;
            n += 1;
        }
    }
    while n < LAUNCHES {
        one(rest)?;
        n += 1;
    }
    Ok(())
}

/// Rebinding 1, 10 and 100 address words of a 1000-launch trace through the C ABI, against re-capturing it there.
fn c_rows(samples: usize) -> Result<Vec<Row>, String> {
    let dev = CDevice::open("emu", 1, 16 << 20)?;
    let alloc = || CBuffer::allocate(&dev, 32, 32, true);
    let (a, b, c, rest) = (alloc()?, alloc()?, alloc()?, alloc()?);
    let alt = [alloc()?, alloc()?, alloc()?];
    let ins = [&a, &b, &c];
    c_launches(&ins, &rest)?;
    dev.finish(0)?;
    let capture = || -> Result<u32, String> {
        let mut id = 0u32;
        // SAFETY: a live device and a writable id.
        capi::ok(unsafe { ttdrv_trace_begin_capture(dev.raw(), 0, &mut id) }, "ttdrv_trace_begin_capture")?;
        c_launches(&ins, &rest)?;
        capi::ok(ttdrv_trace_end_capture(dev.raw(), id, 0), "ttdrv_trace_end_capture")?;
        dev.finish(0)?;
        Ok(id)
    };
    let id = capture()?;
    let mut count = 0usize;
    // SAFETY: a live device and a writable count.
    capi::ok(unsafe { ttdrv_trace_binding_count(dev.raw(), id, &mut count) }, "ttdrv_trace_binding_count")?;
    let mut idx = [usize::MAX; 3];
    for i in 0..count {
        let mut bd = ttdrv_trace_binding::default();
        // SAFETY: a live device and an initialised out-struct.
        capi::ok(unsafe { ttdrv_trace_get_binding(dev.raw(), id, i, &mut bd) }, "ttdrv_trace_get_binding")?;
        for (k, buf) in ins.iter().enumerate() {
            if bd.address == buf.accessor()?[3] as u64 && bd.words as usize == WORDS[k] {
                idx[k] = i;
            }
        }
    }
    if idx.contains(&usize::MAX) {
        return Err(format!("the C trace's bindings do not list the three inputs: {idx:?}"));
    }
    let mut round: [Vec<f64>; 3] = Default::default();
    let mut recapture = Vec::with_capacity(samples);
    for i in 0..samples {
        for j in 0..3 {
            let k = (i + j) % 3;
            let to = if (i / 3) % 2 == 0 { &alt[k] } else { ins[k] };
            let r = [ttdrv_trace_rebinding { binding: idx[k], buffer: to.raw() }];
            let (st, h) = time_ns(|| {
                // SAFETY: one live pair, no events.
                unsafe { ttdrv_trace_rebind(dev.raw(), id, 0, r.as_ptr(), 1, std::ptr::null(), 0) }
            });
            capi::ok(st, "ttdrv_trace_rebind")?;
            let (fr, f) = time_ns(|| dev.finish(0));
            fr?;
            round[k].push(h + f);
        }
    }
    for _ in 0..samples {
        let (r, ns) = time_ns(capture);
        capi::ok(ttdrv_trace_release(dev.raw(), r?), "ttdrv_trace_release")?;
        recapture.push(ns);
    }
    Ok(round_trip_rows(Api::C, "ttdrv_trace_rebind", recapture, &round))
}

/// In µs, from samples in ns.
fn us(v: &[f64]) -> Stat {
    let s = Stat::of(v.to_vec());
    Stat { median: s.median / 1e3, min: s.min / 1e3, max: s.max / 1e3, n: s.n }
}

/// The rows of one API: its re-capture, and each patch's round trip against that re-capture.
fn round_trip_rows(api: Api, call: &str, recapture: Vec<f64>, round: &[Vec<f64>; 3]) -> Vec<Row> {
    let prefix = if api == Api::C { "c" } else { "rust" };
    let re = us(&recapture);
    let mut rows = vec![
        Row::new(
            format!("patch.{prefix}.recapture"),
            Bench::TracePatch,
            format!("re-capture of the {LAUNCHES}-launch trace + finish"),
            api,
            State::Hot,
            Kind::RoundTrip,
        )
        .stat(re, Unit::Us)
        .note("what changing an address costs without patching: begin, 1000 op calls, end (upload), finish"),
    ];
    for (k, &w) in WORDS.iter().enumerate() {
        rows.push(
            Row::new(
                format!("patch.{prefix}.{w}"),
                Bench::TracePatch,
                format!("{call} of {w} address words + finish, {LAUNCHES}-launch trace"),
                api,
                State::Hot,
                Kind::RoundTrip,
            )
            .stat(us(&round[k]), Unit::Us)
            .against("re-capture + finish, same run", re.median, RatioOf::ReferenceOverFigure, "re-capture / patch")
            .target(">= 10x under re-capture", vec![Check::RatioAtLeast(10.0)]),
        );
    }
    rows
}

/// Rebinding 1, 10 and 100 address words of a 1000-launch trace (host cost, and round trip to the device's
/// completion), against re-capturing the trace (round trip), Rust API and C ABI.
pub fn patch(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let samples = ctx.n(41, 7);
    let p = DeviceParams { trace_region_size: 16 << 20, ..Default::default() };
    let dev = Device::open("emu", &p).map_err(e)?;
    let spec = BufferSpec::new(32, 32, DType::Float32, MemoryConfig::L1);
    let alloc = || dev.allocate(&spec).map_err(e);
    let (a, b, c, rest, y) = (alloc()?, alloc()?, alloc()?, alloc()?, alloc()?);
    let alt = [alloc()?, alloc()?, alloc()?];
    let ins = [&a, &b, &c];
    // Warm the program cache.
    launches(&dev, &ins, &rest, &y)?;
    dev.finish(0).map_err(e)?;
    let capture = || -> Result<u32, String> {
        let tid = dev.begin_trace_capture(0).map_err(e)?;
        launches(&dev, &ins, &rest, &y)?;
        dev.end_trace_capture(tid, 0).map_err(e)?;
        dev.finish(0).map_err(e)?;
        Ok(tid)
    };
    let tid = capture()?;
    let bindings = dev.trace_bindings(tid).map_err(e)?;
    let index = |buf: &Buffer| bindings.iter().position(|x| x.address == buf.address()).ok_or("binding not found");
    let idx = [index(&a)?, index(&b)?, index(&c)?];
    for (k, &w) in WORDS.iter().enumerate() {
        if bindings[idx[k]].words as usize != w {
            return Err(format!("input {k} has {} address words, expected {w}", bindings[idx[k]].words));
        }
    }
    let mut host: [Vec<f64>; 3] = Default::default();
    let mut round: [Vec<f64>; 3] = Default::default();
    let mut recapture = Vec::with_capacity(samples);
    // The patches first, in rotating order (none always follows another), then the re-captures: a re-capture
    // sweeps the caches, which would otherwise land on whichever patch came next.
    for i in 0..samples {
        for j in 0..3 {
            let k = (i + j) % 3;
            let to = if (i / 3) % 2 == 0 { &alt[k] } else { ins[k] };
            let (r, h) = time_ns(|| dev.trace_rebind(tid, 0, &[(idx[k], to)], &[]));
            r.map_err(e)?;
            let (r, f) = time_ns(|| dev.finish(0));
            r.map_err(e)?;
            host[k].push(h);
            round[k].push(h + f);
        }
    }
    for _ in 0..samples {
        let (r, ns) = time_ns(capture);
        dev.release_trace(r?).map_err(e)?;
        recapture.push(ns);
    }
    let mut rows = round_trip_rows(Api::Rust, "trace_rebind", recapture, &round);
    for (k, &w) in WORDS.iter().enumerate() {
        rows.push(
            Row::new(
                format!("patch.rust.{w}.host"),
                Bench::TracePatch,
                format!("trace_rebind of {w} address words (call only)"),
                Api::Rust,
                State::Hot,
                Kind::HostCost,
            )
            .stat(us(&host[k]), Unit::Us),
        );
    }
    rows.extend(c_rows(samples)?);
    Ok(rows)
}
