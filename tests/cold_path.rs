//! The cold path, checked by counting rather than timing (timing is in `benches/hotcold.rs`): an idle emulated
//! device does not poll, however many queues it has, and a doorbell to a parked engine costs the host at most one
//! wake — the doorbells that follow while the engine is still waking up cost no system call.

mod common;

use common::*;
use std::time::Duration;
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::*;

fn config16() -> EmuConfig {
    EmuConfig::parse("queues=16").expect("config")
}

#[test]
fn idle_engines_park_and_stay_parked() {
    let (emu, t) = emulator(config16());
    // Half the queues opened, half never enabled: neither kind may poll.
    let params = DeviceParams { num_command_queues: 8, hugepages: false, ..DeviceParams::default() };
    let dev = Device::open_transport(t, &params).expect("device");
    for q in 0..8 {
        dev.finish(q).expect("finish");
    }
    // Long enough for every engine to finish its spin (100 µs) and park, even on a loaded machine.
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<(u64, u64)> = (0..16).map(|q| emu.device().wake_counts(q).expect("queue")).collect();
    std::thread::sleep(Duration::from_millis(600));
    for (q, b) in before.iter().enumerate() {
        let a = emu.device().wake_counts(q).expect("queue");
        // The safety-net timeout is 1 s: in 600 ms an idle engine parks again at most once (it may have been just
        // about to time out when `before` was read). Polling would show as hundreds.
        assert!(a.0 - b.0 <= 1, "queue {q} parked {} times in 600 ms while idle: it polls", a.0 - b.0);
        assert_eq!(a.1, b.1, "queue {q}: nothing rang, yet its engine was unparked");
    }
    assert!(emu.device().wake_counts(16).is_none());
    dev.close().expect("close");
}

#[test]
fn a_doorbell_to_a_parked_engine_costs_at_most_one_wake() {
    let (emu, t) = emulator(EmuConfig::default());
    let dev = Device::open_transport(t, &DeviceParams { hugepages: false, ..DeviceParams::default() }).expect("dev");
    let buf = dev.allocate(&BufferSpec::new(64, 256, DType::Float32, MemoryConfig::DRAM)).expect("buffer");
    let data = vec![7u8; buf.spec().host_bytes() as usize];
    for round in 0..20 {
        // Idle long enough for the engine to park, then a burst: many records, each with its own doorbell.
        std::thread::sleep(Duration::from_millis(2));
        let (p0, u0) = emu.device().wake_counts(0).expect("queue 0");
        for _ in 0..8 {
            buf.write(0, &data, false).expect("write");
        }
        dev.finish(0).expect("finish");
        let (p1, u1) = emu.device().wake_counts(0).expect("queue 0");
        // Each wake pairs with a park before it: a burst that found the engine parked (counted before `p0`) wakes
        // it once, however many doorbells it rang; an engine that parks again mid-burst on a loaded machine is
        // woken again, and counted as parked again.
        assert!(u1 - u0 <= p1 - p0 + 1, "round {round}: {} wakes for {} parks", u1 - u0, p1 - p0);
        assert!(u1 <= p1, "round {round}: more wakes ({u1}) than parks ({p1})");
    }
    assert_eq!(buf.read_to_vec(0).expect("read"), data);
    dev.close().expect("close");
}

#[test]
fn events_on_one_queue_leave_the_other_engines_asleep() {
    let (emu, t) = emulator(config16());
    // Two queues opened (one of them idle), fourteen never enabled.
    let params = DeviceParams { num_command_queues: 2, hugepages: false, ..DeviceParams::default() };
    let dev = Device::open_transport(t, &params).expect("device");
    dev.finish(1).expect("finish");
    // Long enough for every idle engine to finish its spin (100 µs) and park, even on a loaded machine.
    std::thread::sleep(Duration::from_millis(300));
    let before: Vec<(u64, u64)> = (1..16).map(|q| emu.device().wake_counts(q).expect("queue")).collect();
    let ev = dev.create_event().expect("event");
    for _ in 0..200 {
        // Every event published on queue 0 could satisfy an EVENT_WAIT elsewhere; only an engine stalled in one
        // needs waking.
        ev.record(0).expect("record");
        ev.synchronize().expect("synchronize");
    }
    for (i, b) in before.iter().enumerate() {
        let q = i + 1;
        let a = emu.device().wake_counts(q).expect("queue");
        assert_eq!(a.1, b.1, "queue {q}: 200 events on queue 0 unparked its idle engine {} times", a.1 - b.1);
    }
    // A queue stalled in an EVENT_WAIT is still woken by the event, not by its 1 s safety-net timeout: queue 1 waits
    // for an event queue 0 records behind a 32 MiB write (long enough for queue 1's engine to park in the wait).
    let buf = dev.allocate(&BufferSpec::new(512, 16384, DType::Float32, MemoryConfig::DRAM)).expect("buffer");
    let data = vec![5u8; buf.spec().host_bytes() as usize];
    for _ in 0..3 {
        let (p0, u0) = emu.device().wake_counts(1).expect("queue 1");
        let gate = dev.create_event().expect("event");
        buf.write(0, &data, false).expect("write");
        gate.record(0).expect("record");
        dev.wait_for_event(1, &gate).expect("wait_for_event");
        let t0 = std::time::Instant::now();
        dev.finish(1).expect("finish");
        let waited = t0.elapsed();
        let (p1, u1) = emu.device().wake_counts(1).expect("queue 1");
        // If queue 1's engine parked in the wait, the event woke it: a wake per park, none left to the timeout.
        assert!(
            u1 - u0 >= (p1 - p0).saturating_sub(1),
            "queue 1 parked {} times in its wait but was woken {} times",
            p1 - p0,
            u1 - u0
        );
        assert!(waited < Duration::from_millis(900), "queue 1's wait ended only after {waited:?}");
    }
    dev.close().expect("close");
}
