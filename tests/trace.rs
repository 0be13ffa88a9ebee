//! Metal Trace (the guide "Advanced Performance Optimizations for Models", §1 and §3): errors that must be clear
//! and leave the device usable, traces of 1 to 10 000
//! programs (one 64-byte record per replay whatever the length), many live traces replayed in random order with
//! other work, replays after allocations came and went, trace safety (what a trace uses must stay allocated; what
//! it owns is freed on release), trace buffers allocated on demand, the guide's §3.3.1 two-queue pattern under
//! jitter, and a replay on another queue than the capture's, which must wait for the trace buffer to be written.

mod common;
use ttdrv_testkit::{expect_err, hostref};

use common::{assert_bytes_eq, open, pattern, small_params};
use hostref::*;
use std::time::Duration;
use ttdrv::contract::kernel::DType::Float32;
use ttdrv::contract::regs::{self, QueueStatus};
use ttdrv::device::model::MlpConfig;
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::*;

fn params(trace_region_size: u64) -> DeviceParams {
    DeviceParams { num_command_queues: 2, trace_region_size, timeout: Duration::from_secs(20), ..small_params() }
}

fn f32_spec(rows: u32, cols: u32, mem: MemoryConfig) -> BufferSpec {
    BufferSpec::new(rows, cols, Float32, mem)
}

fn upload(dev: &Device, cq: u16, v: &[f32], s: &BufferSpec) -> Buffer {
    dev.buffer_from_host(s, cq, &encode(v, s.dtype)).unwrap()
}

fn values(b: &Buffer, cq: u16) -> Vec<f32> {
    decode(&b.read_to_vec(cq).unwrap(), b.dtype())
}

/// Writes and reads back a small buffer on `cq`: the device still works.
#[track_caller]
fn round_trip(dev: &Device, cq: u16, seed: u64) {
    let s = f32_spec(5, 33, MemoryConfig::DRAM);
    let data = pattern(s.host_bytes() as usize, seed);
    let b = dev.buffer_from_host(&s, cq, &data).unwrap();
    assert_bytes_eq(&b.read_to_vec(cq).unwrap(), &data, &format!("round trip on queue {cq}"));
}

/// A tiny traced workload: `y = relu(x)` into an existing buffer, compiled (run once) on queue 0.
struct Relu {
    x: Buffer,
    y: Buffer,
    xv: Vec<f32>,
}

impl Relu {
    fn new(dev: &Device, seed: u64) -> Relu {
        let s = f32_spec(32, 64, MemoryConfig::L1);
        let xv: Vec<f32> = random_values(&mut Rng::new(seed), 32 * 64, -1.0, 1.0, Float32);
        let x = upload(dev, 0, &xv, &s);
        let y = dev.allocate(&s).unwrap();
        dev.unary_into(0, UnaryOp::Relu, &x, &y).unwrap();
        Relu { x, y, xv }
    }

    fn dispatch(&self, dev: &Device, cq: u16) -> Result<()> {
        dev.unary_into(cq, UnaryOp::Relu, &self.x, &self.y)
    }

    fn check(&self, cq: u16, what: &str) {
        let want: Vec<f32> = self.xv.iter().map(|v| v.max(0.0)).collect();
        assert_eq!(values(&self.y, cq), want, "{what}");
    }
}

/// No trace region (`trace_region_size: 0`): ending the capture fails with `Error::TraceRegionTooSmall` and
/// tt-metal's message; the trace stays captured, so `trace_info` reports the size to configure, replaying it says it was never
/// stored, and it can be released. The device keeps working throughout.
#[test]
fn without_a_trace_region_end_of_capture_reports_the_size_needed() {
    let dev = open("emu", &params(0));
    assert_eq!(dev.trace_region_bytes(), 0);
    let w = Relu::new(&dev, 1);
    let tid = dev.begin_trace_capture(0).unwrap();
    w.dispatch(&dev, 0).unwrap();
    w.dispatch(&dev, 0).unwrap();
    let r = dev.end_trace_capture(tid, 0);
    let info = dev.trace_info(tid).unwrap();
    assert!(!info.stored && info.launches == 2 && info.region_bytes >= info.bytes && info.bytes > 0, "{info:?}");
    let msg = expect_err!(
        r,
        Error::TraceRegionTooSmall { trace, needed, free: 0, region: 0, owned_by_traces: 0, .. }
            if *trace == tid && *needed == info.region_bytes,
        ["Creating trace buffers of size", "trace_region_size=0B"]
    );
    // tt-metal's first words, then what is true here: there is no region at all.
    let tt_metal = format!(
        "Creating trace buffers of size {}B on device {}, but the device was opened without a trace region",
        info.region_bytes,
        dev.info().name
    );
    assert!(msg.starts_with(&tt_metal), "{msg:?} does not start with {tt_metal:?}");
    assert!(msg.contains(&format!("at least {}B", info.region_bytes)), "{msg}");
    round_trip(&dev, 0, 1);
    expect_err!(
        dev.execute_trace(tid, 0, false),
        Error::TraceNotStored { trace, needed } if *trace == tid && *needed == info.region_bytes,
        ["never stored", &format!("trace_region_size of at least {}B", info.region_bytes)]
    );
    round_trip(&dev, 0, 2);
    dev.release_trace(tid).unwrap();
    expect_err!(dev.trace_info(tid), Error::Trace { problem: TraceProblem::NotFound, .. }, ["does not exist"]);
    round_trip(&dev, 0, 3);
    w.dispatch(&dev, 0).unwrap();
    w.check(0, "eager run after the failed capture");
}

/// A trace region too small: the error names the size needed and the size available, `trace_info` still reports
/// the trace's size, release works; and a device opened with exactly the reported size holds the trace. A region
/// partly owned by another live trace says so.
#[test]
fn a_trace_region_too_small_reports_needed_and_available_sizes() {
    let small = 8 * 4096; // one 4 KiB page per bank
    let dev = open("emu", &params(small));
    assert_eq!(dev.trace_region_bytes(), small);
    let w = Relu::new(&dev, 2);
    let capture = |n: usize| -> (u32, Result<()>) {
        let tid = dev.begin_trace_capture(0).unwrap();
        for _ in 0..n {
            w.dispatch(&dev, 0).unwrap();
        }
        (tid, dev.end_trace_capture(tid, 0))
    };
    let (tid, r) = capture(200);
    let info = dev.trace_info(tid).unwrap();
    assert!(info.region_bytes > small && !info.stored, "{info:?}");
    let msg = expect_err!(
        r,
        Error::TraceRegionTooSmall { needed, free, region, owned_by_traces: 0, .. }
            if *needed == info.region_bytes && *free == small && *region == small,
        [
            &format!("Creating trace buffers of size {}B on device {}", info.region_bytes, dev.info().name),
            &format!("but only {small}B of the {small}B trace region is free"),
            &format!("trace_region_size={small}B"),
            &format!("at least {}B", info.region_bytes),
        ]
    );
    eprintln!("too small: {msg}");
    round_trip(&dev, 0, 4);
    dev.release_trace(tid).unwrap();
    round_trip(&dev, 0, 5);

    // A small trace fits; then the big one no longer finds even the whole region free.
    let (fits, r) = capture(1);
    r.unwrap();
    let used = dev.trace_info(fits).unwrap().region_bytes;
    let (big, r) = capture(200);
    expect_err!(
        r,
        Error::TraceRegionTooSmall { free, owned_by_traces, .. } if *free == small - used && *owned_by_traces == used,
        [&format!("but only {}B of the {small}B trace region is free", small - used), &format!("{used}B of it owned by live traces")]
    );
    dev.release_trace(big).unwrap();
    dev.execute_trace(fits, 0, true).unwrap();
    w.check(0, "replay of the small trace");

    // The reported size is enough.
    let dev = open("emu", &params(info.region_bytes));
    let w = Relu::new(&dev, 2);
    let tid = dev.begin_trace_capture(0).unwrap();
    for _ in 0..200 {
        w.dispatch(&dev, 0).unwrap();
    }
    dev.end_trace_capture(tid, 0).unwrap();
    assert_eq!(dev.trace_info(tid).unwrap().region_bytes, info.region_bytes);
    dev.execute_trace(tid, 0, false).unwrap();
    w.check(0, "replay with the reported region size");
}

/// Everything a trace cannot hold fails during capture with `InvalidState` naming the call, and leaves both the
/// capture and the device usable: host writes and reads, event records and waits, finish and synchronize, a replay
/// on the capturing queue, a second capture on it, ending on the wrong queue. Queue 1 keeps working meanwhile.
/// A program never run fails with `ProgramNotCached`, saying to run it once; one compiled on the other queue is fine.
#[test]
fn calls_a_trace_cannot_hold_fail_during_capture_and_leave_the_device_usable() {
    let dev = open("emu", &params(1 << 20));
    let w = Relu::new(&dev, 3);
    let b = dev.allocate(&f32_spec(2, 8, MemoryConfig::DRAM)).unwrap();
    let bytes = vec![0u8; 64];
    let ev1 = dev.create_event().unwrap();
    ev1.record(1).unwrap();
    let other = dev.begin_trace_capture(0).unwrap();
    w.dispatch(&dev, 0).unwrap();
    dev.end_trace_capture(other, 0).unwrap();

    let tid = dev.begin_trace_capture(0).unwrap();
    w.dispatch(&dev, 0).unwrap();
    let capture_err = ["on queue 0 during trace capture", "end_trace_capture"];
    // Every refusal names the queue and the trace being captured there.
    let capturing = |e: &Error| matches!(e, Error::CaptureActive { queue: 0, trace, .. } if *trace == tid);
    let mut k = 10;
    let mut after = |what: &str, msg: String| {
        for n in capture_err {
            assert!(msg.contains(n), "{what}: {msg:?} does not mention {n:?}");
        }
        k += 1;
        round_trip(&dev, 1, k);
    };
    after("write", expect_err!(b.write(0, &bytes, false), e if capturing(e), ["host write"]));
    after("blocking write", expect_err!(b.write(0, &bytes, true), e if capturing(e), ["host write"]));
    let s = *b.spec();
    after("from_host", expect_err!(dev.buffer_from_host(&s, 0, &bytes), e if capturing(e), ["host write"]));
    after("read", expect_err!(b.read_to_vec(0), e if capturing(e), ["host read"]));
    let mut dst = vec![0u8; 64];
    // SAFETY: the call fails before anything is enqueued, so nothing writes to `dst`.
    let r = unsafe { b.read_nonblocking(0, dst.as_mut_ptr()) }.map(|_| ());
    after("non-blocking read", expect_err!(r, e if capturing(e), ["host read"]));
    // Event records and waits are captured (contract 1.4; tests/trace_events.rs), not refused.
    let inside = dev.create_event().unwrap();
    inside.record(0).unwrap();
    assert_eq!(inside.owner_trace(), Some(tid));
    dev.wait_for_event(0, &ev1).unwrap();
    after("finish", expect_err!(dev.finish(0), e if capturing(e), ["finish"]));
    expect_err!(
        dev.synchronize(),
        Error::CaptureActive { call, .. } if call == "device synchronize",
        ["device synchronize", "queue 0", "after end_trace_capture"]
    );
    round_trip(&dev, 1, 30);
    expect_err!(
        dev.execute_trace(other, 0, false),
        Error::CaptureActive { call, .. } if *call == format!("execute_trace({other})"),
        ["replays of other traces", "queue 0"]
    );
    round_trip(&dev, 1, 31);
    expect_err!(dev.begin_trace_capture(0), e if capturing(e), ["already being captured", "queue 0"]);
    round_trip(&dev, 1, 32);
    expect_err!(
        dev.end_trace_capture(tid, 1),
        Error::Trace { problem: TraceProblem::Capturing { queue: 0 }, .. },
        ["being captured on queue 0"]
    );
    round_trip(&dev, 1, 33);
    expect_err!(
        dev.trace_info(tid),
        Error::Trace { problem: TraceProblem::Capturing { queue: 0 }, .. },
        ["still being captured"]
    );
    expect_err!(
        dev.release_trace(tid),
        Error::Trace { problem: TraceProblem::Capturing { queue: 0 }, .. },
        ["still being captured"]
    );
    // Replaying another trace on the other queue is fine.
    dev.execute_trace(other, 1, true).unwrap();

    // A program never run cannot be captured; one compiled on queue 1 (no host wait in between) can.
    let z = dev.allocate(&f32_spec(32, 64, MemoryConfig::L1)).unwrap();
    expect_err!(
        dev.unary_into(0, UnaryOp::Exp, &w.x, &z),
        Error::ProgramNotCached { kernel, queue: 0, .. } if kernel == "ttdrv.eltwise_unary",
        ["eltwise_unary", "not in the program cache", "Run it once before begin_trace_capture"]
    );
    dev.unary_into(1, UnaryOp::Gelu, &w.x, &z).unwrap();
    dev.unary_into(0, UnaryOp::Gelu, &w.x, &z).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    assert_eq!(dev.trace_info(tid).unwrap().launches, 2);
    round_trip(&dev, 0, 40);
    // The replay rewrites both outputs: clear them first.
    dev.fill(0, &z, 0.0).unwrap();
    dev.fill(0, &w.y, 0.0).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    w.check(0, "after the capture");
    for (g, &x) in values(&z, 0).iter().zip(&w.xv) {
        let r = 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
        assert!((g - r).abs() <= 1e-5 * (1.0 + x.abs()), "replayed gelu({x}) = {g}, reference {r}");
    }
}

/// Replaying, releasing or querying a trace that does not exist (never captured, or released) fails; so do ending a
/// capture never begun and ending one that already ended. The device stays usable after each.
#[test]
fn unknown_released_or_ended_traces_are_refused() {
    let dev = open("emu", &params(1 << 20));
    let w = Relu::new(&dev, 4);
    let unknown = |call: &str| {
        let call = call.to_string();
        move |e: &Error| matches!(e, Error::Trace { trace: 999, call: c, problem: TraceProblem::NotFound, .. } if *c == call)
    };
    expect_err!(dev.execute_trace(999, 0, false), e if unknown("execute_trace(999)")(e), ["trace 999 does not exist"]);
    expect_err!(dev.release_trace(999), e if unknown("release_trace(999)")(e), ["trace 999 does not exist"]);
    expect_err!(
        dev.end_trace_capture(999, 0),
        e if unknown("end_trace_capture(999) on queue 0")(e),
        ["trace 999 does not exist"]
    );
    round_trip(&dev, 0, 1);
    let tid = dev.begin_trace_capture(0).unwrap();
    w.dispatch(&dev, 0).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    expect_err!(
        dev.end_trace_capture(tid, 0),
        Error::Trace { problem: TraceProblem::AlreadyEnded, .. },
        ["already ended"]
    );
    expect_err!(
        dev.end_trace_capture(tid, 1),
        Error::Trace { problem: TraceProblem::AlreadyEnded, .. },
        ["already ended"]
    );
    dev.execute_trace(tid, 0, true).unwrap();
    dev.release_trace(tid).unwrap();
    for r in [dev.execute_trace(tid, 0, false), dev.release_trace(tid), dev.trace_info(tid).map(|_| ())] {
        expect_err!(
            r,
            Error::Trace { trace, problem: TraceProblem::NotFound, .. } if *trace == tid,
            [&format!("trace {tid} does not exist"), "released"]
        );
    }
    round_trip(&dev, 0, 2);
    round_trip(&dev, 1, 3);
    w.dispatch(&dev, 0).unwrap();
    w.check(0, "eager run after the refused calls");
}

/// The elementwise program `i` of a long trace (cycling through +a, -b, *c with one-row operands broadcast), applied
/// on the host in f32: exactly what the device computes.
fn step(i: usize, v: f32, a: &[f32], b: &[f32], c: &[f32], col: usize) -> f32 {
    match i % 3 {
        0 => v + a[col],
        1 => v - b[col],
        _ => v * c[col],
    }
}

/// Traces of 1, 10, 100, 1000 and 10 000 programs replay correctly (twice, from new contents of the tensor they
/// update in place, checked exactly against the host running the same f32 operations), and each replay puts
/// exactly one 64-byte record on the issue ring.
#[test]
fn traces_of_1_to_10000_programs_replay_correctly_with_one_64_byte_record() {
    let dev = open("emu", &params(16 << 20));
    let (rows, cols) = (8u32, 32u32);
    let mem = sharded(BufferType::L1, Layout::HeightSharded, cores(2, 3, 3, 3), [4, cols], false);
    let s = f32_spec(rows, cols, mem);
    let row = f32_spec(1, cols, MemoryConfig::L1);
    let mut rng = Rng::new(7);
    let a = random_values(&mut rng, cols as usize, 0.0, 1.0, Float32);
    let b = random_values(&mut rng, cols as usize, 0.0, 1.0, Float32);
    let c: Vec<f32> = (0..cols).map(|i| if i % 2 == 0 { -1.0 } else { 1.0 }).collect();
    let (ab, bb, cb) = (upload(&dev, 0, &a, &row), upload(&dev, 0, &b, &row), upload(&dev, 0, &c, &row));
    let x = dev.allocate(&s).unwrap();
    let dispatch = |i: usize| {
        let (op, operand) = match i % 3 {
            0 => (BinaryOp::Add, &ab),
            1 => (BinaryOp::Sub, &bb),
            _ => (BinaryOp::Mul, &cb),
        };
        dev.binary_into(0, op, &x, operand, &x).unwrap();
    };
    for i in 0..3 {
        dispatch(i); // compile
    }
    for n in [1usize, 10, 100, 1000, 10_000] {
        let tid = dev.begin_trace_capture(0).unwrap();
        for i in 0..n {
            dispatch(i);
        }
        dev.end_trace_capture(tid, 0).unwrap();
        let info = dev.trace_info(tid).unwrap();
        assert_eq!(info.launches as usize, n);
        for replay in 0..2 {
            let x0 = random_values(&mut rng, (rows * cols) as usize, -100.0, 100.0, Float32);
            x.write(0, &encode(&x0, Float32), false).unwrap();
            let before = dev.debug_issue_wr(0).unwrap();
            dev.execute_trace(tid, 0, false).unwrap();
            let after = dev.debug_issue_wr(0).unwrap();
            assert_eq!(after.wrapping_sub(before), 64, "{n} programs ({} bytes of trace)", info.bytes);
            let mut want = x0.clone();
            for (e, v) in want.iter_mut().enumerate() {
                for i in 0..n {
                    *v = step(i, *v, &a, &b, &c, e % cols as usize);
                }
            }
            let got = values(&x, 0);
            assert!(
                got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()),
                "{n} programs, replay {replay}: {:?} vs {:?}",
                &got[..4],
                &want[..4]
            );
        }
        dev.release_trace(tid).unwrap();
    }
}

/// One of many traces: `out = op((x * s) + t)` with `s`, `t` one-row operands, through two intermediates the
/// trace owns.
struct Traced {
    tid: u32,
    x: Buffer,
    out: Buffer,
    s: Vec<f32>,
    t: Vec<f32>,
    op: UnaryOp,
    /// The one-row operands: the trace reads them at every replay.
    _rows: (Buffer, Buffer),
}

const COLS16: u32 = 16;

impl Traced {
    fn reference(&self, x: &[f32]) -> Vec<f32> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| {
                let c = i % COLS16 as usize;
                let z = v * self.s[c] + self.t[c];
                match self.op {
                    UnaryOp::Scale(p) => z * p,
                    _ => z.max(0.0),
                }
            })
            .collect()
    }
}

/// Sixteen live traces (each with its own input, output and owned intermediates, some height-sharded), replayed
/// 300 times in random order on queue 0, mixed with eager ops, allocations, inputs written on queue 1 behind event
/// waits, and non-blocking reads; every output is checked exactly against the host.
#[test]
fn sixteen_live_traces_replayed_in_random_order_with_other_work() {
    let dev = open("emu:jitter=13,jitter_us=20,jitter_pct=20", &params(1 << 20));
    let mut rng = Rng::new(16);
    let rows = 8u32;
    let row = f32_spec(1, COLS16, MemoryConfig::DRAM);
    let mut traces = Vec::new();
    for i in 0..16u64 {
        let mem = if i % 2 == 0 {
            MemoryConfig::L1
        } else {
            sharded(BufferType::L1, Layout::HeightSharded, cores(i as u8 % 8, 4, i as u8 % 8, 5), [4, COLS16], false)
        };
        let s = f32_spec(rows, COLS16, mem);
        let sv = random_values(&mut rng, COLS16 as usize, -2.0, 2.0, Float32);
        let tv = random_values(&mut rng, COLS16 as usize, -1.0, 1.0, Float32);
        let (sb, tb) = (upload(&dev, 0, &sv, &row), upload(&dev, 0, &tv, &row));
        let op = if i % 3 == 0 { UnaryOp::Scale(0.5 + i as f32) } else { UnaryOp::Relu };
        let x = dev.allocate(&s).unwrap();
        let out = dev.allocate(&s).unwrap();
        let run = || {
            let y = dev.binary(0, BinaryOp::Mul, &x, &sb, &mem).unwrap();
            let z = dev.binary(0, BinaryOp::Add, &y, &tb, &MemoryConfig::L1).unwrap();
            drop(y);
            dev.unary_into(0, op, &z, &out).unwrap();
        };
        run();
        let tid = dev.begin_trace_capture(0).unwrap();
        run();
        dev.end_trace_capture(tid, 0).unwrap();
        traces.push(Traced { tid, x, out, s: sv, t: tv, op, _rows: (sb, tb) });
    }
    let written = dev.create_event().unwrap();
    let consumed = dev.create_event().unwrap();
    consumed.record(0).unwrap();
    let scratch_spec = f32_spec(64, 64, MemoryConfig::L1);
    let mut checks: Vec<(Box<[u8]>, Vec<f32>, String)> = Vec::new();
    let mut pending = Vec::new();
    for it in 0..300 {
        let k = rng.below(16) as usize;
        let tr = &traces[k];
        let xv = random_values(&mut rng, (rows * COLS16) as usize, -3.0, 3.0, Float32);
        if rng.chance(50) {
            // Written on queue 1, after queue 0 is done with the previous input (the guide's §2.3.1).
            dev.wait_for_event(1, &consumed).unwrap();
            tr.x.write(1, &encode(&xv, Float32), false).unwrap();
            written.record(1).unwrap();
            dev.wait_for_event(0, &written).unwrap();
        } else {
            tr.x.write(0, &encode(&xv, Float32), false).unwrap();
        }
        if rng.chance(30) {
            // Other work between replays: an eager op on a fresh allocation.
            let scratch = dev.allocate(&scratch_spec).unwrap();
            dev.fill(0, &scratch, it as f32).unwrap();
            let r = dev.unary(0, UnaryOp::Relu, &scratch, &MemoryConfig::DRAM).unwrap();
            assert_eq!(values(&r, 0), vec![it as f32; 64 * 64]);
        }
        dev.execute_trace(tr.tid, 0, false).unwrap();
        consumed.record(0).unwrap();
        let mut host = vec![0u8; (rows * COLS16 * 4) as usize].into_boxed_slice();
        // SAFETY: the box's memory stays put and untouched until the device has synchronized, below.
        pending.push(unsafe { tr.out.read_nonblocking(0, host.as_mut_ptr()) }.unwrap());
        checks.push((host, tr.reference(&xv), format!("iteration {it}: trace {k}")));
        if pending.len() >= 40 {
            dev.synchronize().unwrap();
            pending.clear();
        }
    }
    dev.synchronize().unwrap();
    drop(pending);
    for (host, want, what) in checks {
        assert_eq!(decode(&host, Float32), want, "{what}");
    }
    for t in traces {
        dev.release_trace(t.tid).unwrap();
    }
}

/// After capture the trace owns its intermediates: buffers allocated and freed between replays — some as large as
/// the intermediates, which first-fit would put exactly there — never overlap them, keep their data across
/// replays, and the trace's output stays right. Eager runs of the same programs on other buffers in between do not
/// disturb the replays either.
#[test]
fn replays_stay_right_while_other_buffers_come_and_go() {
    let dev = open("emu", &params(1 << 20));
    let l1 = MemoryConfig::L1;
    let s = f32_spec(256, 256, l1); // 4 pages of 1 KiB per core
    let mut rng = Rng::new(5);
    let x = dev.allocate(&s).unwrap();
    let model = |input: &Buffer, keep: &mut Vec<(u64, u64)>| -> Buffer {
        let y = dev.unary(0, UnaryOp::Scale(2.0), input, &l1).unwrap();
        let z = dev.binary(0, BinaryOp::Add, &y, input, &l1).unwrap();
        keep.push((y.address(), y.address() + y.footprint()));
        keep.push((z.address(), z.address() + z.footprint()));
        drop(y);
        let out = dev.unary(0, UnaryOp::Relu, &z, &l1).unwrap();
        drop(z);
        out
    };
    let reference = |v: &[f32]| -> Vec<f32> { v.iter().map(|&a| (a * 2.0 + a).max(0.0)).collect() };
    drop(model(&x, &mut Vec::new()));
    let mut owned = Vec::new();
    let tid = dev.begin_trace_capture(0).unwrap();
    let out = model(&x, &mut owned);
    dev.end_trace_capture(tid, 0).unwrap();
    let lowest_owned = owned.iter().map(|r| r.0).min().unwrap();

    let mut others: Vec<(Buffer, Vec<u8>)> = Vec::new();
    for it in 0..12u64 {
        // Allocate some, free some: in L1 (where the intermediates are) and in DRAM.
        for _ in 0..3 {
            let rows = 64 * (1 + rng.below(8) as u32);
            let mem = if rng.chance(70) { l1 } else { MemoryConfig::DRAM };
            let b = dev.allocate(&f32_spec(rows, 256, mem)).unwrap();
            let data = pattern(b.spec().host_bytes() as usize, it * 10 + others.len() as u64);
            b.write(0, &data, false).unwrap();
            others.push((b, data));
        }
        while others.len() > 4 {
            let i = rng.below(others.len() as u64) as usize;
            others.swap_remove(i);
        }
        for (b, _) in &others {
            if b.spec().mem.buffer_type == BufferType::L1 {
                let (s0, e0) = (b.address(), b.address() + b.footprint());
                for &(s1, e1) in &owned {
                    assert!(e0 <= s1 || e1 <= s0, "{b:?} [{s0:#x}, {e0:#x}) overlaps a trace-owned [{s1:#x}, {e1:#x})");
                }
            }
        }
        if it == 0 {
            // The first L1 buffer would have landed on the lowest intermediate.
            let first = others.iter().find(|(b, _)| b.spec().mem.buffer_type == BufferType::L1);
            if let Some((b, _)) = first {
                assert_ne!(b.address(), lowest_owned);
            }
        }
        if it % 3 == 1 {
            // Eager runs of the same programs, on other buffers.
            let x2 = upload(&dev, 0, &random_values(&mut rng, 256 * 256, -1.0, 1.0, Float32), &s);
            let x2v = values(&x2, 0);
            let o2 = model(&x2, &mut Vec::new());
            assert_eq!(values(&o2, 0), reference(&x2v), "eager run {it}");
        }
        let xv = random_values(&mut rng, 256 * 256, -1.0, 1.0, Float32);
        x.write(0, &encode(&xv, Float32), false).unwrap();
        dev.execute_trace(tid, 0, false).unwrap();
        assert_eq!(values(&out, 0), reference(&xv), "replay {it}");
        for (b, data) in &others {
            assert_bytes_eq(&b.read_to_vec(0).unwrap(), data, &format!("replay {it}: {b:?} kept its data"));
        }
    }
    dev.release_trace(tid).unwrap();
}

/// Trace safety: freeing a buffer the trace uses (live at the end of capture: its output, or its input) makes the
/// replay fail with an error naming the range and memory; re-allocating the same spec at the same address makes it
/// work again. Releasing the trace frees what it owned: an allocation that needed that range now succeeds.
#[test]
fn freeing_what_a_trace_uses_blocks_replay_and_release_frees_what_it_owns() {
    let dev = open("emu", &params(1 << 20));
    let l1 = MemoryConfig::L1;
    let s = f32_spec(64, 256, l1); // one 1 KiB page per core
    let xv = random_values(&mut Rng::new(9), 64 * 256, -1.0, 1.0, Float32);
    let x = upload(&dev, 0, &xv, &s);
    let run = |x: &Buffer| {
        let y = dev.unary(0, UnaryOp::Exp, x, &l1).unwrap();
        let out = dev.unary(0, UnaryOp::Relu, &y, &l1).unwrap();
        (y.address(), y.footprint(), out)
    };
    drop(run(&x));
    let tid = dev.begin_trace_capture(0).unwrap();
    let (y_addr, y_len, out) = run(&x);
    dev.end_trace_capture(tid, 0).unwrap();
    dev.execute_trace(tid, 0, false).unwrap();
    let want = values(&out, 0);

    let (mut x, mut out) = (Some(x), Some(out));
    for which in ["output", "input"] {
        let slot = if which == "output" { &mut out } else { &mut x };
        let b = slot.take().unwrap();
        let (addr, end, spec) = (b.address(), b.address() + b.footprint(), *b.spec());
        let data = b.read_to_vec(0).unwrap();
        b.deallocate();
        expect_err!(
            dev.execute_trace(tid, 0, false),
            Error::Trace { problem: TraceProblem::RangeFreed { memory: BufferType::L1, start, end: e, .. }, .. }
                if *start == addr && *e == end,
            [&format!("L1 range [{addr:#x}, {end:#x})"), "no live buffer holds", "execute_trace"]
        );
        round_trip(&dev, 0, 1);
        let again = dev.allocate(&spec).unwrap();
        assert_eq!(again.address(), addr, "{which}: the same spec lands at the same address");
        again.write(0, &data, false).unwrap();
        *slot = Some(again);
        dev.execute_trace(tid, 0, false).unwrap();
    }
    assert_eq!(values(out.as_ref().unwrap(), 0), want);

    // Fill the rest of L1 exactly, so that only the trace's range could hold another intermediate.
    let largest = dev.largest_free(BufferType::L1);
    let one_core = sharded(BufferType::L1, Layout::HeightSharded, cores(0, 0, 0, 0), [largest as u32 / 16, 4], false);
    let filler = dev.allocate(&f32_spec(largest as u32 / 16, 4, one_core)).unwrap();
    assert_eq!(dev.largest_free(BufferType::L1), 0);
    expect_err!(
        dev.allocate(&s),
        Error::OutOfDeviceMemory { memory: BufferType::L1, owned_by_traces, .. } if *owned_by_traces == y_len,
        [&format!("{y_len} bytes owned by live traces")]
    );
    dev.release_trace(tid).unwrap();
    let b = dev.allocate(&s).expect("the range the trace owned is free after release");
    assert_eq!(b.address(), y_addr);
    drop(filler);
}

/// `trace_buffers_on_demand` with no region: traces are stored, replay correctly, and trace buffers come from the
/// top of ordinary DRAM, so bottom-up DRAM allocations land exactly where they would on a device without traces.
#[test]
fn trace_buffers_on_demand_leave_ordinary_dram_addresses_alone() {
    let p = DeviceParams { trace_buffers_on_demand: true, ..params(0) };
    let (dev, plain) = (open("emu", &p), open("emu", &p));
    assert_eq!(dev.trace_region_bytes(), 0);
    let mut rng = Rng::new(3);
    let dram_specs: Vec<BufferSpec> =
        (0..6).map(|i| f32_spec(8 + rng.below(200) as u32, 16 + 8 * i, MemoryConfig::DRAM)).collect();
    let w = Relu::new(&dev, 6);
    let mut kept = Vec::new();
    let mut tids = Vec::new();
    for (i, s) in dram_specs.iter().enumerate() {
        let (a, b) = (dev.allocate(s).unwrap(), plain.allocate(s).unwrap());
        assert_eq!(a.address(), b.address(), "allocation {i}: {s}");
        kept.push((a, b));
        let tid = dev.begin_trace_capture(0).unwrap();
        for _ in 0..(1 + 50 * i) {
            w.dispatch(&dev, 0).unwrap();
        }
        dev.end_trace_capture(tid, 0).unwrap();
        assert!(dev.trace_info(tid).unwrap().stored);
        tids.push(tid);
    }
    // The trace buffers took the top of DRAM.
    let top_spec = f32_spec(1, 16, MemoryConfig::DRAM);
    let (t1, t2) = (dev.allocate_top_down(&top_spec).unwrap(), plain.allocate_top_down(&top_spec).unwrap());
    assert!(t1.address() < t2.address(), "{t1:?} vs {t2:?}");
    for &tid in &tids {
        dev.execute_trace(tid, 0, false).unwrap();
    }
    w.check(0, "replays of on-demand traces");
    drop((t1, t2));
    for tid in tids {
        dev.release_trace(tid).unwrap();
    }
    let (t1, t2) = (dev.allocate_top_down(&top_spec).unwrap(), plain.allocate_top_down(&top_spec).unwrap());
    assert_eq!(t1.address(), t2.address(), "released trace buffers return the top of DRAM");
}

/// Seed §3.3.1: input writes on queue 1, ops, trace replays and output reads on queue 0, a persistent DRAM input
/// resharded in place into the trace's L1 input, under jitter. Fifty iterations, each output equal bit for bit to
/// an eager run of the same input, and close to the host reference.
#[test]
fn guide_3_3_1_trace_with_two_queues_under_jitter() {
    let dev = open("emu:jitter=17,jitter_us=50,jitter_pct=30", &params(1 << 20));
    let (batch, dims) = (32u32, vec![64u32, 96, 32]);
    let mut rng = Rng::new(331);
    let w: Vec<Vec<f32>> =
        (0..2).map(|l| random_values(&mut rng, (dims[l] * dims[l + 1]) as usize, -0.125, 0.125, Float32)).collect();
    let b: Vec<Vec<f32>> = (0..2).map(|l| random_values(&mut rng, dims[l + 1] as usize, -0.1, 0.1, Float32)).collect();
    let cfg = MlpConfig {
        batch,
        dims: dims.clone(),
        dtype: Float32,
        weights_mem: MemoryConfig::DRAM,
        act_mem: MemoryConfig::L1,
        out_mem: MemoryConfig::L1,
        relu_last: false,
    };
    let wr: Vec<&[f32]> = w.iter().map(Vec::as_slice).collect();
    let br: Vec<&[f32]> = b.iter().map(Vec::as_slice).collect();
    let mlp = dev.mlp(0, &cfg, &wr, &br).unwrap();
    let dram_mem = sharded(BufferType::Dram, Layout::HeightSharded, banks(0, 7), [4, 64], false);
    let l1_mem = sharded(BufferType::L1, Layout::HeightSharded, cores(0, 0, 7, 0), [4, 64], false);
    let in_dram = dev.allocate(&f32_spec(batch, 64, dram_mem)).unwrap();
    let (op_event, write_event) = (dev.create_event().unwrap(), dev.create_event().unwrap());
    let n_in = (batch * 64) as usize;
    let write_input = |x: &[f32]| {
        dev.wait_for_event(1, &op_event).unwrap();
        in_dram.write(1, &encode(x, Float32), false).unwrap();
        write_event.record(1).unwrap();
        dev.wait_for_event(0, &write_event).unwrap();
    };
    op_event.record(0).unwrap();

    // Compile run.
    let x0 = random_values(&mut rng, n_in, -1.0, 1.0, Float32);
    write_input(&x0);
    let input_l1 = dev.to_memory_config(0, &in_dram, &l1_mem).unwrap();
    op_event.record(0).unwrap();
    let output = mlp.run(0, input_l1).unwrap();

    // Capture.
    write_input(&x0);
    let input_l1 = dev.to_memory_config(0, &in_dram, &l1_mem).unwrap();
    op_event.record(0).unwrap();
    let input_trace_addr = input_l1.address();
    let in_l1_spec = *input_l1.spec();
    output.deallocate();
    let tid = dev.begin_trace_capture(0).unwrap();
    let output = mlp.run(0, input_l1).unwrap();
    let input_l1 = dev.allocate(&in_l1_spec).unwrap();
    assert_eq!(input_l1.address(), input_trace_addr);
    dev.end_trace_capture(tid, 0).unwrap();

    let out_bytes = (batch * dims[2] * 4) as usize;
    let mut results: Vec<(Vec<f32>, Box<[u8]>)> = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..50 {
        let x = random_values(&mut rng, n_in, -1.0, 1.0, Float32);
        write_input(&x);
        dev.reshard_into(0, &in_dram, &input_l1).unwrap();
        op_event.record(0).unwrap();
        dev.execute_trace(tid, 0, false).unwrap();
        let mut host = vec![0u8; out_bytes].into_boxed_slice();
        // SAFETY: the box's memory stays put and untouched until the device has synchronized, below.
        pending.push(unsafe { output.read_nonblocking(0, host.as_mut_ptr()) }.unwrap());
        results.push((x, host));
    }
    dev.synchronize().unwrap();
    drop(pending);
    for (it, (x, host)) in results.iter().enumerate() {
        let eager = mlp.run(0, upload(&dev, 0, x, &in_l1_spec)).unwrap();
        assert_bytes_eq(host, &eager.read_to_vec(0).unwrap(), &format!("iteration {it}: replay vs eager"));
        let got = decode(host, Float32);
        for (g, r) in got.iter().zip(mlp_reference(&cfg, &w, &b, x)) {
            assert!((g - r).abs() <= 1e-4 * (1.0 + r.abs()), "iteration {it}: {g} vs reference {r}");
        }
    }
    dev.release_trace(tid).unwrap();
}

/// A trace replayed on another queue than the one it was captured on must not run before its trace buffer (written
/// on the capture queue at the end of capture) has landed. Queue 0 is held up deterministically: non-blocking reads
/// larger than its completion ring stall it until the host drains the ring, which it does only when it waits.
/// Trace 1 (fill 1.0) is replayed and released; trace 2 (fill 2.0) takes its place in the trace region, its upload
/// stuck behind the reads on queue 0, and is replayed on queue 1 at once. Queue 1 must wait for the upload rather
/// than run what the trace buffer held before (trace 1's records: a silent 1.0).
#[test]
fn a_replay_on_another_queue_waits_for_the_trace_buffer_upload() {
    let p = DeviceParams { completion_ring_size: 64 << 10, ..params(1 << 20) };
    let dev = open("emu", &p);
    let t = dev.transport().unwrap();
    let out = dev.allocate(&f32_spec(8, 32, MemoryConfig::L1)).unwrap();
    dev.fill(0, &out, 0.5).unwrap();
    let t1 = dev.begin_trace_capture(0).unwrap();
    dev.fill(0, &out, 1.0).unwrap();
    dev.end_trace_capture(t1, 0).unwrap();
    dev.execute_trace(t1, 0, true).unwrap();
    assert_eq!(values(&out, 0), vec![1.0; 256]);
    dev.release_trace(t1).unwrap();

    // Stall queue 0: 512 KiB of reads through a 64 KiB completion ring, and no host wait to drain it.
    let s = f32_spec(512, 256, MemoryConfig::DRAM);
    let data = pattern(s.host_bytes() as usize, 1);
    let big = dev.buffer_from_host(&s, 0, &data).unwrap();
    dev.finish(0).unwrap();
    let mut host = vec![0u8; data.len()];
    // SAFETY: `host` is not touched until after `dev.synchronize()` below has delivered the read.
    let read = unsafe { big.read_nonblocking(0, host.as_mut_ptr()) }.unwrap();

    let t2 = dev.begin_trace_capture(0).unwrap();
    dev.fill(0, &out, 2.0).unwrap();
    dev.end_trace_capture(t2, 0).unwrap();
    dev.execute_trace(t2, 1, false).unwrap();
    let done = dev.create_event().unwrap();
    done.record(1).unwrap();
    let (_, id) = done.last_record().unwrap();
    // Without draining anything: either queue 1 ran the replay (its event slot reaches `id`), or it waits.
    let t0 = std::time::Instant::now();
    loop {
        let ran = t.read32(regs::queue_reg(1, regs::queue::EVENT)) == id;
        let waits = t.read32(regs::queue_reg(1, regs::queue::STATUS)) & QueueStatus::WAITING_EVENT.bits() != 0;
        if ran || waits {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "queue 1 neither ran nor waited");
        std::thread::sleep(Duration::from_micros(100));
    }
    dev.synchronize().unwrap();
    drop(read);
    assert_bytes_eq(&host, &data, "the reads that held queue 0 up");
    let v = values(&out, 0);
    assert!(v.iter().all(|&x| x == 2.0), "the replay on queue 1 ran before trace 2's buffer was written: got {}", v[0]);
    // Once the upload is known done, a replay on queue 1 is the single 64-byte record again.
    dev.fill(1, &out, 0.0).unwrap();
    let before = dev.debug_issue_wr(1).unwrap();
    dev.execute_trace(t2, 1, false).unwrap();
    assert_eq!(dev.debug_issue_wr(1).unwrap().wrapping_sub(before), 64);
    assert_eq!(values(&out, 1), vec![2.0; 256]);
}

/// `y = 2x` into an intermediate, `out = relu(y)`, the intermediate freed: the shape of a model's layer. Returns the
/// output and the intermediate's range.
fn scale_relu(dev: &Device, cq: u16, x: &Buffer, factor: f32) -> (Buffer, (u64, u64)) {
    let l1 = MemoryConfig::L1;
    let y = dev.unary(cq, UnaryOp::Scale(factor), x, &l1).unwrap();
    let out = dev.unary(cq, UnaryOp::Relu, &y, &l1).unwrap();
    let r = (y.address(), y.address() + y.footprint());
    drop(y);
    (out, r)
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// Issue 12, item 4: during a capture on queue 0 the model frees an intermediate; a buffer the user allocates then
/// (first fit would put it exactly there) and writes on queue 1 does not land on it, and no replay overwrites it.
#[test]
fn an_intermediate_freed_during_capture_is_the_traces_and_a_buffer_written_on_cq1_keeps_its_data() {
    let dev = open("emu", &params(1 << 20));
    let s = f32_spec(64, 256, MemoryConfig::L1);
    let xv = random_values(&mut Rng::new(41), 64 * 256, -1.0, 1.0, Float32);
    let x = upload(&dev, 0, &xv, &s);
    drop(scale_relu(&dev, 0, &x, 2.0));
    dev.finish(0).unwrap();
    let tid = dev.begin_trace_capture(0).unwrap();
    let (out, y) = scale_relu(&dev, 0, &x, 2.0);
    let user = dev.allocate(&s).unwrap();
    let mine = (user.address(), user.address() + user.footprint());
    assert!(!overlaps(mine, y), "the user's buffer {mine:x?} landed on the trace's intermediate {y:x?}");
    let data = pattern(s.host_bytes() as usize, 44);
    user.write(1, &data, false).unwrap();
    dev.finish(1).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    let want: Vec<f32> = xv.iter().map(|v| (v * 2.0).max(0.0)).collect();
    for i in 0..5 {
        dev.execute_trace(tid, 0, false).unwrap();
        assert_eq!(values(&out, 0), want, "replay {i}");
        assert_bytes_eq(&user.read_to_vec(1).unwrap(), &data, &format!("the user's buffer after replay {i}"));
    }
    // Allocated after the capture, it does not land there either.
    let later = dev.allocate(&s).unwrap();
    assert!(!overlaps((later.address(), later.address() + later.footprint()), y));
    dev.release_trace(tid).unwrap();
}

/// Issue 12, item 5: two captures in progress at once, one per queue, each with an intermediate freed while the
/// other is capturing: they never share one, and replaying both at once on their queues, under jitter, gives each
/// its own right output.
#[test]
fn two_captures_in_progress_at_once_never_share_an_intermediate() {
    let dev = open("emu:jitter=12,jitter_us=100,jitter_pct=40", &params(1 << 20));
    let s = f32_spec(64, 256, MemoryConfig::L1);
    let mut rng = Rng::new(55);
    let x: Vec<Buffer> = (0..2).map(|_| dev.allocate(&s).unwrap()).collect();
    let factor = [2.0f32, -3.0];
    for q in 0..2u16 {
        drop(scale_relu(&dev, q, &x[q as usize], factor[q as usize]));
        dev.finish(q).unwrap();
    }
    let tids = [dev.begin_trace_capture(0).unwrap(), dev.begin_trace_capture(1).unwrap()];
    // Interleaved: queue 1's intermediate is allocated after queue 0's was freed.
    let (out0, y0) = scale_relu(&dev, 0, &x[0], factor[0]);
    let (out1, y1) = scale_relu(&dev, 1, &x[1], factor[1]);
    assert!(!overlaps(y0, y1), "the two captures share intermediate memory: {y0:x?} and {y1:x?}");
    for (q, tid) in tids.iter().enumerate() {
        dev.end_trace_capture(*tid, q as u16).unwrap();
    }
    for it in 0..20 {
        let xv: Vec<Vec<f32>> = (0..2).map(|_| random_values(&mut rng, 64 * 256, -1.0, 1.0, Float32)).collect();
        for q in 0..2u16 {
            x[q as usize].write(q, &encode(&xv[q as usize], Float32), false).unwrap();
            dev.execute_trace(tids[q as usize], q, false).unwrap();
        }
        for (q, out) in [&out0, &out1].into_iter().enumerate() {
            let want: Vec<f32> = xv[q].iter().map(|v| (v * factor[q]).max(0.0)).collect();
            assert_eq!(values(out, q as u16), want, "iteration {it}, trace on queue {q}");
        }
    }
    for tid in tids {
        dev.release_trace(tid).unwrap();
    }
}

/// Issue 12, item 6: once the traced output (or an intermediate kept past the capture) is freed, a smaller, a
/// larger or a differently shaped buffer allocated over its range makes the replay fail — naming the range and the
/// buffer expected — and leaves that buffer's data alone; nothing there at all fails too; the captured spec at the
/// captured address replays again.
#[test]
fn a_buffer_of_another_spec_over_a_freed_output_makes_replay_fail() {
    let dev = open("emu", &params(1 << 20));
    let l1 = MemoryConfig::L1;
    let s = f32_spec(64, 256, l1);
    let xv = random_values(&mut Rng::new(61), 64 * 256, -1.0, 1.0, Float32);
    let x = upload(&dev, 0, &xv, &s);
    // The output at the top of L1 (as the MLP allocates its output), the intermediate right above the input: then
    // a larger buffer allocated from the same end can cover either range.
    let run = || {
        let y = dev.unary(0, UnaryOp::Scale(2.0), &x, &l1).unwrap();
        let out = dev.allocate_top_down(&s).unwrap();
        dev.unary_into(0, UnaryOp::Relu, &y, &out).unwrap();
        (out, y)
    };
    drop(run());
    let tid = dev.begin_trace_capture(0).unwrap();
    let (out, kept) = run();
    dev.end_trace_capture(tid, 0).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    let want: Vec<f32> = xv.iter().map(|v| (v * 2.0).max(0.0)).collect();
    assert_eq!(values(&out, 0), want);

    let mut slots = [Some(out), Some(kept)];
    for (which, slot) in ["output", "kept intermediate"].into_iter().zip(slots.iter_mut()) {
        let alloc = |spec: &BufferSpec| {
            if which == "output" { dev.allocate_top_down(spec).unwrap() } else { dev.allocate(spec).unwrap() }
        };
        let b = slot.take().unwrap();
        let (addr, end, spec) = (b.address(), b.address() + b.footprint(), *b.spec());
        b.deallocate();
        for (name, other) in [
            ("smaller", f32_spec(32, 256, l1)),
            ("larger", f32_spec(128, 256, l1)),
            ("differently shaped", f32_spec(128, 128, l1)),
            ("bfloat16", BufferSpec::new(64, 512, DType::BFloat16, l1)),
        ] {
            let o = alloc(&other);
            assert!(o.address() < end && addr < o.address() + o.footprint(), "{which}/{name}: {o:?} missed the range");
            let data = pattern(other.host_bytes() as usize, 7);
            o.write(0, &data, false).unwrap();
            expect_err!(
                dev.execute_trace(tid, 0, false),
                Error::Trace {
                    problem: TraceProblem::RangeReused {
                        memory: BufferType::L1, start, end: e, expected, address, output: true,
                        found,
                        ..
                    },
                    ..
                } if *start == addr && *e == end && **expected == spec && *address == addr
                    && matches!(**found, RangeOccupant::Buffer { spec: f, .. } if f == other),
                [&format!("L1 range [{addr:#x}, {end:#x})"), &format!("the {spec} buffer at {addr:#x}"),
                 &format!("a {other} buffer at"), "writes (its output"]
            );
            dev.finish(0).unwrap();
            assert_bytes_eq(&o.read_to_vec(0).unwrap(), &data, &format!("{which}/{name}: its data after the refusal"));
        }
        expect_err!(
            dev.execute_trace(tid, 0, false),
            Error::Trace { problem: TraceProblem::RangeFreed { start, expected, .. }, .. }
                if *start == addr && **expected == spec,
            ["no live buffer holds that range"]
        );
        let again = alloc(&spec);
        assert_eq!(again.address(), addr, "{which}: the captured spec lands at the captured address");
        *slot = Some(again);
        dev.execute_trace(tid, 0, true).unwrap();
    }
    assert_eq!(values(slots[0].as_ref().unwrap(), 0), want);
    dev.release_trace(tid).unwrap();
}

/// The rule for generic programs: `Program::run` reads every buffer it is given, so a buffer it filled and the
/// model freed during capture stays external — the replay fails, naming it, rather than let anything allocated
/// there be overwritten — while `Program::run_io` naming it as an output makes it an intermediate the trace owns.
#[test]
fn generic_programs_own_intermediates_only_when_outputs_are_named() {
    let dev = open("emu", &params(1 << 20));
    let l1 = MemoryConfig::L1;
    let s = f32_spec(1, 8, l1);
    for name_outputs in [false, true] {
        let y = dev.allocate(&s).unwrap();
        let (prog, rt) = ttdrv_testkit::fill_program(&dev, &y).unwrap();
        let fill = |y: &Buffer| if name_outputs { prog.run_io(0, &rt, &[], &[y]) } else { prog.run(0, &rt, &[y]) };
        fill(&y).unwrap();
        drop(dev.unary(0, UnaryOp::Relu, &y, &l1).unwrap());
        dev.finish(0).unwrap();
        let tid = dev.begin_trace_capture(0).unwrap();
        fill(&y).unwrap();
        let out = dev.unary(0, UnaryOp::Relu, &y, &l1).unwrap();
        let (ya, ye) = (y.address(), y.address() + y.footprint());
        drop(y);
        let other = dev.allocate(&f32_spec(2, 8, l1)).unwrap();
        dev.end_trace_capture(tid, 0).unwrap();
        let landed = other.address() < ye && ya < other.address() + other.footprint();
        if name_outputs {
            assert!(!landed, "an intermediate named as an output is the trace's");
            dev.execute_trace(tid, 0, true).unwrap();
            assert_eq!(values(&out, 0), vec![1.5; 8]);
        } else {
            assert!(landed, "run() keeps the buffer external, so the allocation may land there");
            expect_err!(
                dev.execute_trace(tid, 0, false),
                Error::Trace { problem: TraceProblem::RangeReused { start, output: false, .. }, .. } if *start == ya,
                ["reads (its input"]
            );
        }
        dev.release_trace(tid).unwrap();
    }
}
