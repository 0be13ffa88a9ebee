//! Events inside a trace (docs/device-interface.md §4.2.7-§4.2.9, contract 1.4): each replay records the trace's
//! events again with fresh ids, so host synchronizes and device-side waits on them follow every replay, back-to-back
//! replays in flight included; a wait inside a trace waits for its event's latest record as of each replay; events
//! recorded inside a trace belong to it until it is released. Everything runs under seeded jitter, which also delays
//! the records inside a replay, so a wait that does not hold shows as wrong data.

mod common;
use ttdrv_testkit::{expect_err, hostref};

use common::{open, small_params};
use hostref::*;
use std::time::Duration;
use ttdrv::contract::kernel::DType::Float32;
use ttdrv::device::ops::UnaryOp;
use ttdrv::*;

fn params() -> DeviceParams {
    DeviceParams {
        num_command_queues: 2,
        trace_region_size: 1 << 20,
        timeout: Duration::from_secs(30),
        ..small_params()
    }
}

const ROWS: u32 = 32;
const COLS: u32 = 64;

fn spec() -> BufferSpec {
    BufferSpec::new(ROWS, COLS, Float32, MemoryConfig::L1)
}

fn input(i: u64) -> Vec<f32> {
    random_values(&mut Rng::new(1000 + i), (ROWS * COLS) as usize, -1.0, 1.0, Float32)
}

fn relu(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| x.max(0.0)).collect()
}

/// `x → relu → y`, `y → relu → z`: compiled (run once) on queue 0.
struct Work {
    x: Buffer,
    y: Buffer,
    z: Buffer,
}

impl Work {
    fn new(dev: &Device) -> Work {
        let x = dev.buffer_from_host(&spec(), 0, &encode(&input(0), Float32)).unwrap();
        let y = dev.allocate(&spec()).unwrap();
        let z = dev.allocate(&spec()).unwrap();
        dev.unary_into(0, UnaryOp::Relu, &x, &y).unwrap();
        dev.unary_into(0, UnaryOp::Relu, &y, &z).unwrap();
        dev.finish(0).unwrap();
        Work { x, y, z }
    }
}

/// Host synchronize on an event recorded inside a trace waits for that replay's record: after each replay, the
/// host waits for the event only and then reads the first op's output on the *other* queue, which nothing else
/// orders after the replay. The event's id is fresh on every replay.
#[test]
fn host_synchronize_follows_every_replay() {
    let dev = open("emu:jitter=3,jitter_us=300,jitter_pct=50", &params());
    let w = Work::new(&dev);
    let ev = dev.create_event().unwrap();
    let tid = dev.begin_trace_capture(0).unwrap();
    dev.unary_into(0, UnaryOp::Relu, &w.x, &w.y).unwrap();
    ev.record(0).unwrap();
    dev.unary_into(0, UnaryOp::Relu, &w.y, &w.z).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    assert_eq!(ev.owner_trace(), Some(tid));
    let info = dev.trace_info(tid).unwrap();
    assert_eq!((info.launches, info.event_records, info.event_waits), (2, 1, 0), "{info:?}");

    let mut last = None;
    for i in 1..=60u64 {
        let xv = input(i);
        w.x.write(0, &encode(&xv, Float32), false).unwrap();
        dev.execute_trace(tid, 0, false).unwrap();
        let (q, id) = ev.last_record().unwrap();
        assert_eq!(q, 0);
        if let Some(prev) = last {
            assert!(id.wrapping_sub(prev) as i32 > 0, "replay {i}: event id {id} does not follow {prev}");
        }
        last = Some(id);
        ev.synchronize().unwrap();
        let got = decode(&w.y.read_to_vec(1).unwrap(), Float32);
        assert_eq!(got, relu(&xv), "replay {i}: the event completed before the op recorded before it");
    }
    dev.finish(0).unwrap();
    dev.release_trace(tid).unwrap();
    assert_eq!(ev.owner_trace(), None);
}

/// The guide's two-queue loop with both events inside the trace and no host synchronization: the trace waits for
/// the previous iteration's read (an event recorded outside, on queue 1, whose id changes every iteration), runs,
/// and records `op_event`, which queue 1 waits for before reading. Replays are enqueued back to back; 300
/// iterations under jitter, every output checked.
#[test]
fn cross_queue_waits_follow_back_to_back_replays() {
    const N: u64 = 300;
    for seed in [5, 6] {
        let dev = open(&format!("emu:jitter={seed},jitter_us=200,jitter_pct=40"), &params());
        let w = Work::new(&dev);
        let (op_event, read_event) = (dev.create_event().unwrap(), dev.create_event().unwrap());
        read_event.record(1).unwrap();
        let tid = dev.begin_trace_capture(0).unwrap();
        dev.wait_for_event(0, &read_event).unwrap();
        dev.unary_into(0, UnaryOp::Relu, &w.x, &w.y).unwrap();
        op_event.record(0).unwrap();
        dev.end_trace_capture(tid, 0).unwrap();
        let info = dev.trace_info(tid).unwrap();
        assert_eq!((info.event_records, info.event_waits), (1, 1), "{info:?}");

        let mut reads = Vec::new();
        for i in 0..N {
            w.x.write(0, &encode(&input(i), Float32), false).unwrap();
            dev.execute_trace(tid, 0, false).unwrap();
            dev.wait_for_event(1, &op_event).unwrap();
            reads.push(w.y.read_owned(1, vec![0u8; spec().host_bytes() as usize]).unwrap());
            read_event.record(1).unwrap();
        }
        for (i, r) in reads.into_iter().enumerate() {
            let got = decode(&r.wait().unwrap(), Float32);
            assert_eq!(got, relu(&input(i as u64)), "seed {seed}, iteration {i}");
        }
        dev.release_trace(tid).unwrap();
    }
}

/// An event recorded inside a trace is the trace's until it is released: recording it outside, or inside another
/// capture, fails naming the trace and leaves nothing enqueued; waiting for it works. Waiting inside a capture for an
/// event never recorded fails at once; a trace that waits for an event owned by a trace never replayed (and never
/// recorded) fails at replay naming the wait, and runs once that event has a record.
#[test]
fn events_inside_a_trace_follow_the_ownership_rules() {
    let dev = open("emu", &params());
    let w = Work::new(&dev);
    let (ev, never) = (dev.create_event().unwrap(), dev.create_event().unwrap());
    let tid = dev.begin_trace_capture(0).unwrap();
    dev.unary_into(0, UnaryOp::Relu, &w.x, &w.y).unwrap();
    ev.record(0).unwrap();
    expect_err!(dev.wait_for_event(0, &never), Error::EventNotRecorded { .. }, ["never recorded"]);
    dev.end_trace_capture(tid, 0).unwrap();

    for cq in [0, 1] {
        expect_err!(
            ev.record(cq),
            Error::Trace { trace, problem: TraceProblem::EventOwned { owner }, .. } if *trace == tid && *owner == tid,
            ["recorded inside trace", "release trace"]
        );
    }
    // A second trace that waits for the first one's event: before the first ever replays, the event has no record.
    let other = dev.begin_trace_capture(1).unwrap();
    dev.wait_for_event(1, &ev).unwrap();
    dev.unary_into(1, UnaryOp::Relu, &w.y, &w.z).unwrap();
    expect_err!(ev.record(1), Error::Trace { problem: TraceProblem::EventOwned { .. }, .. }, ["inside trace"]);
    dev.end_trace_capture(other, 1).unwrap();
    expect_err!(
        dev.execute_trace(other, 1, true),
        Error::Trace { problem: TraceProblem::WaitNeverRecorded { index: 0 }, .. },
        ["wait 0 inside trace", "never been recorded"]
    );
    dev.execute_trace(tid, 0, false).unwrap();
    dev.execute_trace(other, 1, true).unwrap();
    assert_eq!(decode(&w.z.read_to_vec(1).unwrap(), Float32), relu(&input(0)));

    dev.wait_for_event(1, &ev).unwrap();
    ev.synchronize().unwrap();
    dev.release_trace(tid).unwrap();
    ev.record(1).unwrap();
    ev.synchronize().unwrap();
    dev.release_trace(other).unwrap();
}

/// Replays of one trace on two queues at once: each queue's replay publishes ids of its own queue, and the event
/// follows whichever replay was enqueued last.
#[test]
fn replays_on_two_queues_record_on_their_own_queue() {
    let dev = open("emu:jitter=9,jitter_us=100", &params());
    let w = Work::new(&dev);
    let ev = dev.create_event().unwrap();
    let tid = dev.begin_trace_capture(0).unwrap();
    dev.unary_into(0, UnaryOp::Relu, &w.x, &w.y).unwrap();
    ev.record(0).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    for i in 0..20u16 {
        let cq = i % 2;
        dev.execute_trace(tid, cq, false).unwrap();
        assert_eq!(ev.last_record().map(|r| r.0), Some(cq));
        ev.synchronize().unwrap();
    }
    dev.finish(0).unwrap();
    dev.finish(1).unwrap();
    dev.release_trace(tid).unwrap();
}
