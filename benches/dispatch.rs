//! Host cost of driving the device, each beside its reference in the same run:
//! - a cached program dispatch vs a bare 64-byte record written into the ring (issue ring + doorbell only);
//! - `execute_trace` of 10, 100 and 1000 programs vs eager dispatch of the same programs;
//! - event record -> host observes (record + synchronize on an idle queue).
//!
//! Targets (issues 3-5): dispatch <= 100 ns; replay flat and <= 1 us, >= 50x under eager at 1000 programs;
//! event latency <= 2 us median.

use criterion::{Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use ttdrv::*;

fn fill_program(dev: &Device, buf: &Buffer) -> (ttdrv::device::program::Program, Vec<u32>) {
    ttdrv_testkit::fill_program(dev, buf).unwrap()
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("dispatch");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));

    // Reference: the bare ring, on an emulated device of its own.
    let mut ring = ttdrv_testkit::BareRing::open().unwrap();
    g.bench_function("bare 64-byte ring write", |b| b.iter_custom(|n| ring.write(n).unwrap()));

    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let buf = dev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).unwrap();
    let (prog, rt) = fill_program(&dev, &buf);
    prog.run(0, &rt, &[&buf]).unwrap();
    dev.finish(0).unwrap();
    g.bench_function("cached program dispatch (1 core)", |b| {
        b.iter_custom(|n| {
            let t0 = Instant::now();
            for _ in 0..n {
                prog.run(0, &rt, &[&buf]).unwrap();
            }
            let d = t0.elapsed();
            dev.finish(0).unwrap();
            d
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
    for len in [10usize, 100, 1000] {
        let tid = dev.begin_trace_capture(0).unwrap();
        for _ in 0..len {
            prog.run(0, &rt, &[&buf]).unwrap();
        }
        dev.end_trace_capture(tid, 0).unwrap();
        dev.finish(0).unwrap();
        g.bench_function(format!("execute_trace {len} programs"), |b| {
            b.iter_custom(|n| {
                let t0 = Instant::now();
                for _ in 0..n {
                    dev.execute_trace(tid, 0, false).unwrap();
                }
                let d = t0.elapsed();
                dev.finish(0).unwrap();
                d
            })
        });
        g.bench_function(format!("eager {len} programs"), |b| {
            b.iter_custom(|n| {
                let mut total = Duration::ZERO;
                for _ in 0..n {
                    let t0 = Instant::now();
                    for _ in 0..len {
                        prog.run(0, &rt, &[&buf]).unwrap();
                    }
                    total += t0.elapsed();
                    dev.finish(0).unwrap();
                }
                total
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
    g.bench_function("record -> host observes", |b| {
        b.iter(|| {
            ev.record(0).unwrap();
            ev.synchronize().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, dispatch, trace, event);
criterion_main!(benches);
