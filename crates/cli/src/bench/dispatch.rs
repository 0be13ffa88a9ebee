//! Host cost of getting work onto the device: a cached 1-core dispatch, a 64-core op call that builds its arguments
//! and output per call, and `execute_trace` against eager dispatch — each through the Rust API and the C ABI, hot and
//! cold. Hot samples alternate between the two APIs, so both see the same machine.
//!
//! Every hot figure is a burst of calls the issue ring holds, timed, then drained untimed (`finish`) before the next
//! burst: it measures the host, never the emulated device's consumption (which has its own row, `device rate`).

use super::capi::{self, CBuffer, CDevice, CProgram};
use super::{Api, Bench, Check, Ctx, Kind, RatioOf, Row, Stat, State, Unit, cold, rounds};
use std::cell::RefCell;
use std::time::Instant;
use ttdrv::device::ops::BinaryOp;
use ttdrv::{BufferSpec, DType, Device, DeviceParams, MemoryConfig};
use ttdrv_ffi::buffer::ttdrv_buffer;
use ttdrv_ffi::ops::{TTDRV_BINARY_ADD, ttdrv_eltwise_binary};
use ttdrv_ffi::program::ttdrv_program_run;
use ttdrv_ffi::trace::{ttdrv_trace_begin_capture, ttdrv_trace_end_capture, ttdrv_trace_execute, ttdrv_trace_release};
use ttdrv_testkit::timing::BURST;
use ttdrv_testkit::{BareRing, fill_program};

/// A driver error as the message the command prints.
fn e(e: ttdrv::Error) -> String {
    e.to_string()
}

/// Mean ns per call over `k` back-to-back calls.
fn burst(k: u64, mut call: impl FnMut() -> Result<(), String>) -> Result<f64, String> {
    let t0 = Instant::now();
    for _ in 0..k {
        call()?;
    }
    Ok(t0.elapsed().as_nanos() as f64 / k as f64)
}

/// Cached dispatch of the 1-core fill program with prebuilt arguments; the bare ring below it; the device's rate.
pub fn dispatch(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let samples = ctx.n(7, 3);
    let cold_n = ctx.n(120, 30);
    let mut ring = BareRing::open()?;
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let buf = dev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let (prog, rt) = fill_program(&dev, &buf)?;
    let cdev = CDevice::open("emu", 1, 0)?;
    let cbuf = CBuffer::allocate(&cdev, 16, 32, true)?;
    let (cprog, crt) = CProgram::fill(&cdev, &cbuf)?;
    let cbufs: [*mut ttdrv_buffer; 1] = [cbuf.raw()];
    let rust_run = || prog.run(0, &rt, &[&buf]).map_err(e);
    let c_run = || {
        // SAFETY: `crt` and `cbufs` are live arrays of the lengths passed.
        let st = unsafe { ttdrv_program_run(cprog.raw(), 0, crt.as_ptr(), crt.len(), cbufs.as_ptr(), cbufs.len()) };
        capi::ok(st, "ttdrv_program_run")
    };
    // The first run uploads the kernel image: not a cached dispatch.
    rust_run()?;
    c_run()?;
    dev.finish(0).map_err(e)?;
    cdev.finish(0)?;
    let [bare, rust, c] = rounds(
        3,
        samples,
        [
            &mut || Ok(ring.write(BURST)?.as_nanos() as f64 / BURST as f64),
            &mut || {
                let ns = burst(BURST, rust_run)?;
                dev.finish(0).map_err(e)?;
                Ok(ns)
            },
            &mut || {
                let ns = burst(BURST, c_run)?;
                cdev.finish(0)?;
                Ok(ns)
            },
        ],
    )?;
    let rust_cold = cold(cold_n, rust_run, || dev.finish(0).map_err(e))?;
    let c_cold = cold(cold_n, c_run, || cdev.finish(0))?;
    // The device's rate: far more launches than the device keeps up with, timed until it has run them all.
    let n = ctx.n(20_000, 5_000) as u64;
    let mut rate = Vec::new();
    for _ in 0..ctx.n(5, 3) {
        let t0 = Instant::now();
        for _ in 0..n {
            rust_run()?;
        }
        dev.finish(0).map_err(e)?;
        rate.push(t0.elapsed().as_nanos() as f64 / n as f64);
    }
    let rate = Stat::of(rate);
    let unpark = ctx.floors.unpark_ns.median;
    let fig = "cached dispatch, 1-core fill, args prebuilt";
    Ok(vec![
        Row::new(
            "dispatch.ring",
            Bench::Dispatch,
            "bare ring: 64-B record + doorbell (ttdrv::raw)",
            Api::Rust,
            State::Hot,
            Kind::HostCost,
        )
        .stat(bare, Unit::Ns)
        .note("the ring alone, no device layer: the floor of any dispatch"),
        Row::new("dispatch.rust.hot", Bench::Dispatch, fig, Api::Rust, State::Hot, Kind::HostCost)
            .stat(rust, Unit::Ns)
            .against("bare ring", bare.median, RatioOf::FigureOverReference, "/ ring"),
        Row::new("dispatch.c.hot", Bench::Dispatch, fig, Api::C, State::Hot, Kind::HostCost)
            .stat(c, Unit::Ns)
            .against("Rust API, hot", rust.median, RatioOf::FigureOverReference, "C / Rust")
            .target("<= 1.2x Rust, <= 60 ns", vec![Check::RatioAtMost(1.2), Check::ValueAtMost(60.0)]),
        Row::new("dispatch.rust.cold", Bench::Dispatch, fig, Api::Rust, State::Cold, Kind::HostCost)
            .stat(rust_cold, Unit::Ns)
            .against("hot + 1 unpark", rust.median + unpark, RatioOf::FigureOverReference, "/ (hot+wake)")
            .target("<= hot + one wake", vec![Check::RatioAtMost(1.0)]),
        Row::new("dispatch.c.cold", Bench::Dispatch, fig, Api::C, State::Cold, Kind::HostCost)
            .stat(c_cold, Unit::Ns)
            .against("hot + 1 unpark", c.median + unpark, RatioOf::FigureOverReference, "/ (hot+wake)")
            .target("<= hot + one wake", vec![Check::RatioAtMost(1.0)]),
        Row::new(
            "dispatch.device_rate",
            Bench::Dispatch,
            "emulated device consuming fill launches",
            Api::Device,
            State::Steady,
            Kind::DeviceRate,
        )
        .stat(rate, Unit::Ns)
        .note(format!(
            "{n} launches queued at once, timed until finish returns: the emulator's consumption per launch, \
                 not a host cost (the figure the 0.1 criterion \"dispatch\" bench reported under a host-cost label)"
        )),
    ])
}

/// The eltwise add op call of a ttnn-style model: [64, 256] + a broadcast [1, 256] row into a new L1 output, one
/// row of the output per core of the 8x8 grid, arguments built per call.
pub fn op_call(ctx: &Ctx) -> Result<Vec<Row>, String> {
    // Outputs kept per burst (each is 1 KiB per core of L1), freed untimed after it, so the allocator sees a few
    // live outputs as in a model.
    const K: usize = 16;
    let samples = ctx.n(7, 3);
    let bursts = 8;
    let cold_n = ctx.n(120, 30);
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let a = dev.allocate(&BufferSpec::new(64, 256, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let b = dev.allocate(&BufferSpec::new(1, 256, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let cdev = CDevice::open("emu", 1, 0)?;
    let (ca, cb) = (CBuffer::allocate(&cdev, 64, 256, true)?, CBuffer::allocate(&cdev, 1, 256, true)?);
    let cmem = capi::memory(true);
    // The outputs of a burst, dropped (freed) after it, untimed.
    let outs = RefCell::new(Vec::with_capacity(K));
    let couts: RefCell<Vec<CBuffer>> = RefCell::new(Vec::with_capacity(K));
    let rust_op = || -> Result<(), String> {
        let o = dev.binary(0, BinaryOp::Add, &a, &b, &MemoryConfig::L1).map_err(e)?;
        outs.borrow_mut().push(o);
        Ok(())
    };
    let c_op = || -> Result<(), String> {
        let mut o = std::ptr::null_mut();
        // SAFETY: `cmem` is a live memory config and `o` writable.
        let st = unsafe { ttdrv_eltwise_binary(ca.raw(), cb.raw(), TTDRV_BINARY_ADD, 0, &cmem, &mut o) };
        capi::ok(st, "ttdrv_eltwise_binary")?;
        couts.borrow_mut().push(CBuffer::adopt(o));
        Ok(())
    };
    let rust_drain = || {
        outs.borrow_mut().clear();
        dev.finish(0).map_err(e)
    };
    let c_drain = || {
        couts.borrow_mut().clear();
        cdev.finish(0)
    };
    // Compile runs.
    rust_op()?;
    c_op()?;
    rust_drain()?;
    c_drain()?;
    // One sample: the mean of `bursts` bursts of K calls, each drained before the next.
    let sample = |op: &dyn Fn() -> Result<(), String>, drain: &dyn Fn() -> Result<(), String>| {
        let mut t = 0.0;
        for _ in 0..bursts {
            t += burst(K as u64, op)?;
            drain()?;
        }
        Ok(t / bursts as f64)
    };
    let [rust, c] = rounds(3, samples, [&mut || sample(&rust_op, &rust_drain), &mut || sample(&c_op, &c_drain)])?;
    let rust_cold = cold(cold_n, rust_op, rust_drain)?;
    let c_cold = cold(cold_n, c_op, c_drain)?;
    let fig = "eltwise add op call, 64 cores, args+output per call";
    let tt_metal = |ns: f64| {
        format!(
            "like for like with tt-metal's op call, whose host cost is ~21 µs per enqueue (published in tt-metal \
             PR #53590, not measured here): {:.0}x this figure. [64, 256] + [1, 256] float32 in L1, one output row \
             per core of the 8x8 grid",
            21_000.0 / ns
        )
    };
    Ok(vec![
        Row::new("opcall.rust.hot", Bench::OpCall, fig, Api::Rust, State::Hot, Kind::HostCost)
            .stat(rust, Unit::Ns)
            .target("<= 300 ns", vec![Check::ValueAtMost(300.0)])
            .note(tt_metal(rust.median)),
        Row::new("opcall.c.hot", Bench::OpCall, fig, Api::C, State::Hot, Kind::HostCost)
            .stat(c, Unit::Ns)
            .against("Rust API, hot", rust.median, RatioOf::FigureOverReference, "C / Rust")
            .target("<= 300 ns", vec![Check::ValueAtMost(300.0)])
            .note(tt_metal(c.median)),
        Row::new("opcall.rust.cold", Bench::OpCall, fig, Api::Rust, State::Cold, Kind::HostCost)
            .stat(rust_cold, Unit::Ns)
            .against("Rust API, hot", rust.median, RatioOf::FigureOverReference, "cold / hot"),
        Row::new("opcall.c.cold", Bench::OpCall, fig, Api::C, State::Cold, Kind::HostCost)
            .stat(c_cold, Unit::Ns)
            .against("C ABI, hot", c.median, RatioOf::FigureOverReference, "cold / hot"),
    ])
}

/// Host cost of one `execute_trace` (non-blocking) of traces of 10, 100 and 1000 cached fill programs, against
/// dispatching the same programs eagerly through the same API.
pub fn trace(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let samples = ctx.n(5, 2);
    let cold_n = ctx.n(80, 20);
    let region = 64 << 20;
    let dev = Device::open("emu", &DeviceParams { trace_region_size: region, ..Default::default() }).map_err(e)?;
    let buf = dev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let (prog, rt) = fill_program(&dev, &buf)?;
    let cdev = CDevice::open("emu", 1, region)?;
    let cbuf = CBuffer::allocate(&cdev, 16, 32, true)?;
    let (cprog, crt) = CProgram::fill(&cdev, &cbuf)?;
    let cbufs: [*mut ttdrv_buffer; 1] = [cbuf.raw()];
    let rust_run = || prog.run(0, &rt, &[&buf]).map_err(e);
    let c_run = || {
        // SAFETY: `crt` and `cbufs` are live arrays of the lengths passed.
        let st = unsafe { ttdrv_program_run(cprog.raw(), 0, crt.as_ptr(), crt.len(), cbufs.as_ptr(), cbufs.len()) };
        capi::ok(st, "ttdrv_program_run")
    };
    rust_run()?;
    c_run()?;
    let mut rows = Vec::new();
    let mut hot100 = (0.0, 0.0);
    let mut ids = Vec::new();
    for len in [10usize, 100, 1000] {
        let tid = dev.begin_trace_capture(0).map_err(e)?;
        for _ in 0..len {
            rust_run()?;
        }
        dev.end_trace_capture(tid, 0).map_err(e)?;
        let mut ctid = 0u32;
        // SAFETY: `ctid` is writable.
        let st = unsafe { ttdrv_trace_begin_capture(cdev.raw(), 0, &mut ctid) };
        capi::ok(st, "ttdrv_trace_begin_capture")?;
        for _ in 0..len {
            c_run()?;
        }
        capi::ok(ttdrv_trace_end_capture(cdev.raw(), ctid, 0), "ttdrv_trace_end_capture")?;
        dev.finish(0).map_err(e)?;
        cdev.finish(0)?;
        // Replays per burst: the device runs len x replays launches while the next sample waits, untimed.
        let replays = if len >= 1000 { 20 } else { 50 };
        let c_replay = || capi::ok(ttdrv_trace_execute(cdev.raw(), ctid, 0, false), "ttdrv_trace_execute");
        let [tr, te, cr, ce] = rounds(
            3,
            samples,
            [
                &mut || {
                    let ns = burst(replays, || dev.execute_trace(tid, 0, false).map_err(e))?;
                    dev.finish(0).map_err(e)?;
                    Ok(ns)
                },
                &mut || {
                    let ns = burst(len as u64, rust_run)? * len as f64;
                    dev.finish(0).map_err(e)?;
                    Ok(ns)
                },
                &mut || {
                    let ns = burst(replays, c_replay)?;
                    cdev.finish(0)?;
                    Ok(ns)
                },
                &mut || {
                    let ns = burst(len as u64, c_run)? * len as f64;
                    cdev.finish(0)?;
                    Ok(ns)
                },
            ],
        )?;
        if len == 100 {
            hot100 = (tr.median, cr.median);
            ids = vec![(tid, ctid)];
        }
        for (api, replay, eager) in [(Api::Rust, tr, te), (Api::C, cr, ce)] {
            let mut target = vec![Check::ValueAtMost(1000.0)];
            let mut text = "<= 1 µs".to_string();
            if len == 1000 {
                target.push(Check::RatioAtLeast(50.0));
                text.push_str(", >= 50x eager");
            }
            rows.push(
                Row::new(
                    format!("trace.{}.{len}", if api == Api::C { "c" } else { "rust" }),
                    Bench::Trace,
                    format!("execute_trace of {len} programs"),
                    api,
                    State::Hot,
                    Kind::HostCost,
                )
                .stat(replay, Unit::Ns)
                .against(
                    format!("eager x{len}, same API"),
                    eager.median,
                    RatioOf::ReferenceOverFigure,
                    "eager / replay",
                )
                .target(text, target),
            );
        }
        if len != 100 {
            dev.release_trace(tid).map_err(e)?;
            capi::ok(ttdrv_trace_release(cdev.raw(), ctid), "ttdrv_trace_release")?;
        }
    }
    let (tid, ctid) = ids[0];
    let rust_cold = cold(cold_n, || dev.execute_trace(tid, 0, false).map_err(e), || dev.finish(0).map_err(e))?;
    let c_cold = cold(
        cold_n,
        || capi::ok(ttdrv_trace_execute(cdev.raw(), ctid, 0, false), "ttdrv_trace_execute"),
        || cdev.finish(0),
    )?;
    for (api, s, hot) in [(Api::Rust, rust_cold, hot100.0), (Api::C, c_cold, hot100.1)] {
        rows.push(
            Row::new(
                format!("trace.{}.cold", if api == Api::C { "c" } else { "rust" }),
                Bench::Trace,
                "execute_trace of 100 programs",
                api,
                State::Cold,
                Kind::HostCost,
            )
            .stat(s, Unit::Ns)
            .against("same API, hot", hot, RatioOf::FigureOverReference, "cold / hot"),
        );
    }
    dev.release_trace(tid).map_err(e)?;
    capi::ok(ttdrv_trace_release(cdev.raw(), ctid), "ttdrv_trace_release")?;
    Ok(rows)
}
