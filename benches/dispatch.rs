//! Host cost of driving the device (criterion), each figure timed in **bounded bursts**: at most
//! [`ttdrv_testkit::timing::BURST`] calls back to back — far fewer records than the 32 MiB issue ring holds — then the
//! device drains the burst, untimed (`finish`), before the next burst. Criterion asks for many more iterations than a
//! ring holds; timing them in one loop would measure the emulated device's consumption rate once the ring filled (what
//! the 0.1 "dispatch" bench reported under a host-cost label). `ttdrv bench` reports that rate on its own row.
//!
//! - `bare 64-byte ring write`: the ring alone (`ttdrv::raw`), the floor of any dispatch;
//! - `cached program dispatch (1 core)`: a cached fill program with prebuilt arguments;
//! - `eltwise add op call (64 cores)`: `Device::binary` over [64, 256] + [1, 256] in L1, arguments and a new output
//!   built per call (outputs freed untimed between bursts of 16);
//! - `execute_trace N programs` vs `eager N programs`, for 10, 100 and 1000 programs;
//! - `event round trip`: record + synchronize on an idle queue, a round trip rather than a host cost (each call waits
//!   for the device, so nothing accumulates in the ring).
//!
//! Targets (issue 14, stated as same-run ratios in `ttdrv bench`, which also measures the C ABI and cold calls): the
//! op call <= 300 ns; a hot event round trip <= 1 µs; replay <= 1 µs and >= 50x under eager at 1000 programs.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::Duration;
use ttdrv::device::ops::BinaryOp;
use ttdrv::*;
use ttdrv_testkit::timing::{BURST, bursts};

fn fill_program(dev: &Device, buf: &Buffer) -> (ttdrv::device::program::Program, Vec<u32>) {
    ttdrv_testkit::fill_program(dev, buf).unwrap()
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));

    // Reference: the bare ring, on an emulated device of its own; `BareRing::write` drains after each burst.
    let mut ring = ttdrv_testkit::BareRing::open().unwrap();
    g.bench_function("bare 64-byte ring write", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            let mut left = n;
            while left > 0 {
                let k = left.min(BURST);
                total += ring.write(k).unwrap();
                left -= k;
            }
            total
        })
    });

    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let buf = dev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).unwrap();
    let (prog, rt) = fill_program(&dev, &buf);
    prog.run(0, &rt, &[&buf]).unwrap();
    dev.finish(0).unwrap();
    g.bench_function("cached program dispatch (1 core)", |b| {
        b.iter_custom(|n| bursts(n, BURST, || prog.run(0, &rt, &[&buf]).unwrap(), || dev.finish(0).unwrap()))
    });

    let a = dev.allocate(&BufferSpec::new(64, 256, DType::Float32, MemoryConfig::L1)).unwrap();
    let row = dev.allocate(&BufferSpec::new(1, 256, DType::Float32, MemoryConfig::L1)).unwrap();
    drop(dev.binary(0, BinaryOp::Add, &a, &row, &MemoryConfig::L1).unwrap());
    dev.finish(0).unwrap();
    g.bench_function("eltwise add op call (64 cores)", |b| {
        b.iter_custom(|n| {
            bursts(
                n,
                16,
                || dev.binary(0, BinaryOp::Add, &a, &row, &MemoryConfig::L1).unwrap(),
                || dev.finish(0).unwrap(),
            )
        })
    });
    g.finish();
}

fn trace(c: &mut Criterion) {
    let mut g = c.benchmark_group("trace");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    let dev = Device::open("emu", &DeviceParams { trace_region_size: 64 << 20, ..Default::default() }).unwrap();
    let buf = dev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).unwrap();
    let (prog, rt) = fill_program(&dev, &buf);
    prog.run(0, &rt, &[&buf]).unwrap();
    for len in [10u64, 100, 1000] {
        let tid = dev.begin_trace_capture(0).unwrap();
        for _ in 0..len {
            prog.run(0, &rt, &[&buf]).unwrap();
        }
        dev.end_trace_capture(tid, 0).unwrap();
        dev.finish(0).unwrap();
        // A replay is one record, but the device runs `len` programs for it: bursts of 50 replays keep the drain
        // between samples short.
        g.bench_function(format!("execute_trace {len} programs"), |b| {
            b.iter_custom(|n| bursts(n, 50, || dev.execute_trace(tid, 0, false).unwrap(), || dev.finish(0).unwrap()))
        });
        // One iteration is `len` dispatches; a burst is one iteration.
        g.bench_function(format!("eager {len} programs"), |b| {
            b.iter_custom(|n| {
                bursts(
                    n,
                    1,
                    || {
                        for _ in 0..len {
                            prog.run(0, &rt, &[&buf]).unwrap();
                        }
                    },
                    || dev.finish(0).unwrap(),
                )
            })
        });
        dev.release_trace(tid).unwrap();
    }
    g.finish();
}

fn event(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    g.sample_size(30).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let ev = dev.create_event().unwrap();
    g.bench_function("event round trip (record + synchronize)", |b| {
        b.iter(|| {
            ev.record(0).unwrap();
            ev.synchronize().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, dispatch, trace, event);
criterion_main!(benches);
