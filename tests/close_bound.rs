//! `Device::close` returns within its documented bound whatever the device is doing: it drains every queue against
//! one deadline (the device's timeout, at most 5 s), then abandons what is left by resetting the device, and says
//! so through the log (never on stderr). Here both queues of a slow device hold seconds of work — queue 0 about 4 s,
//! queue 1 about 8 s — so a close that drained the queues one after the other, each with its own 5 s, would take
//! about 9 s.
//!
//! The device holds each record 20 ms (`slow_us`) and honours the reset between records, so the test measures the
//! driver's bound, not how fast the emulator stops a modelled delay.

mod common;

use common::*;
use std::time::{Duration, Instant};
use ttdrv::*;

#[test]
fn close_returns_within_its_bound_whatever_the_device_is_doing() {
    ttdrv_testkit::logcapture::install();
    let p = DeviceParams {
        issue_ring_size: 64 << 10,
        completion_ring_size: 64 << 10,
        hugepages: false,
        num_command_queues: 2,
        ..DeviceParams::default()
    };
    assert!(p.timeout >= Duration::from_secs(5), "the default timeout is above close's 5 s cap");
    let dev = open("emu:slow_us=20000", &p);
    let s = BufferSpec::new(1, 16, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&s).unwrap();
    let data = pattern(s.host_bytes() as usize, 1);
    for (cq, records) in [(0u16, 200), (1, 400)] {
        for _ in 0..records {
            b.write(cq, &data, false).unwrap();
        }
    }
    let t0 = Instant::now();
    dev.close().unwrap();
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(6500), "close took {took:?}; its bound is 5 s of draining plus the reset");
    assert!(took >= Duration::from_secs(4), "close returned after {took:?}, before draining what it could");
    let warnings: Vec<String> = ttdrv_testkit::logcapture::records(log::Level::Warn)
        .into_iter()
        .map(|r| r.message)
        .filter(|m| m.contains(&dev.info().name))
        .collect();
    assert!(
        warnings.iter().any(|m| m.contains("abandoning the work still in flight after 5s") && m.contains("queue 1:")),
        "close did not log the work it abandoned: {warnings:?}"
    );
    assert!(matches!(dev.finish(0), Err(Error::Closed { .. })));
}
