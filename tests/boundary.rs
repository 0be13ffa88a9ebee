//! A call that fails leaves nothing behind that touches caller memory, and a buffer says when its contents are no
//! longer what was written (issue 12, "the device boundary"):
//!
//! - a blocking read that times out, or fails part-way through being enqueued, is cancelled: data arriving later
//!   goes nowhere the caller owns, while its completion entries are still consumed;
//! - a non-blocking read whose wait times out stays pending and is delivered later; a reset ends every pending read
//!   (even one that does not complete);
//! - the safe non-blocking read owns its destination and gives it back, or cancels on drop;
//! - a write that stops part-way says what was enqueued, and the buffer then reads as undefined until written whole;
//! - after a reset no buffer's contents survive (docs/device-interface.md §7.2), including writes that returned OK
//!   but were queued behind a faulting record: every buffer reports it until written whole again.
//!
//! The slow device is the emulator's `slow_us` option (every record held back before it retires) or its paced model
//! with a tiny PCIe bandwidth.

mod common;

use common::*;
use std::time::{Duration, Instant};
use ttdrv::*;

const RING: u32 = 64 << 10;

fn params(timeout: Duration) -> DeviceParams {
    DeviceParams {
        issue_ring_size: RING,
        completion_ring_size: RING,
        hugepages: false,
        timeout,
        num_command_queues: 2,
        ..DeviceParams::default()
    }
}

fn spec(rows: u32, cols: u32) -> BufferSpec {
    BufferSpec::new(rows, cols, DType::Float32, MemoryConfig::DRAM)
}

#[track_caller]
fn expect_kind<T: std::fmt::Debug>(r: Result<T>, kind: ErrorKind, needles: &[&str]) -> String {
    match r {
        Err(e) if e.kind() == kind => {
            let msg = e.to_string();
            for n in needles {
                assert!(msg.contains(n), "{kind:?} message does not mention {n:?}: {msg}");
            }
            msg
        }
        other => panic!("expected {kind:?} mentioning {needles:?}, got {other:?}"),
    }
}

/// Waits (draining every completion ring) until everything enqueued on `cq` so far has been consumed, however long
/// the slow device takes: an event recorded behind it, waited for with a long timeout of its own.
fn drain_queue(dev: &Device, cq: u16) {
    let ev = dev.create_event().unwrap();
    ev.record(cq).unwrap();
    ev.synchronize_within(Duration::from_secs(60)).unwrap();
}

/// A blocking read that times out is cancelled: once it returns, the destination is the caller's again. The data
/// arrives later (the device holds each record 400 ms) and its entry is consumed, but nothing reaches the
/// destination, which the test has meanwhile refilled; the ring keeps working.
#[test]
fn a_blocking_read_that_times_out_is_cancelled() {
    let dev = open("emu:slow_us=400000", &params(Duration::from_millis(150)));
    let s = spec(16, 64);
    let data = pattern(s.host_bytes() as usize, 1);
    let b = dev.allocate(&s).unwrap();
    b.write(0, &data, false).unwrap();

    let mut out = vec![0u8; s.host_bytes() as usize];
    let t0 = Instant::now();
    expect_kind(b.read(0, &mut out), ErrorKind::Timeout, &["read on queue 0", "did not complete within 150ms"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "the timeout took {:?}", t0.elapsed());
    // The caller reuses its memory at once.
    out.fill(0x5A);
    drain_queue(&dev, 0);
    assert!(out.iter().all(|&x| x == 0x5A), "the cancelled read wrote its destination after it returned");
    // The same for read_to_vec, whose vector is freed on the error path.
    expect_kind(b.read_to_vec(0), ErrorKind::Timeout, &["read on queue 0"]);
    drain_queue(&dev, 0);
    // The entries were consumed and the ring works: a read given time delivers.
    assert_bytes_eq(&slow_round_trip(&dev, &b), &data, "after the cancelled reads");
}

/// Reads `b` on queue 0 of a slow device, waiting as long as it takes.
fn slow_round_trip(dev: &Device, b: &Buffer) -> Vec<u8> {
    let mut out = vec![0u8; b.spec().host_bytes() as usize];
    // SAFETY: `out` outlives the read, which is delivered (drain_queue waits for it) before `out` is used.
    let _r = unsafe { b.read_nonblocking(0, out.as_mut_ptr()) }.unwrap();
    drain_queue(dev, 0);
    out
}

/// A read that fails part-way through being enqueued is cancelled too. The read needs more records than the issue
/// ring holds (one row of 8 KiB per record, 64 KiB completion ring); the device holds each record 400 ms, so the
/// wait for ring room times out after 1024 records are enqueued. Those records go on executing: their data must go
/// nowhere.
#[test]
fn a_read_that_fails_part_way_through_being_enqueued_is_cancelled() {
    let dev = open("emu:slow_us=400000", &params(Duration::from_millis(300)));
    let s = spec(1200, 2048);
    let b = dev.allocate(&s).unwrap();
    let mut out = vec![0u8; s.host_bytes() as usize];
    expect_kind(b.read(0, &mut out), ErrorKind::Timeout, &["room in queue 0's issue ring"]);
    out.fill(0xC3);
    // Let the device retire a few of the enqueued reads, and drain completions (a wait on the other queue drains
    // every ring).
    std::thread::sleep(Duration::from_millis(900));
    drain_queue(&dev, 1);
    assert!(out.iter().all(|&x| x == 0xC3), "a read that failed while being enqueued wrote its destination later");
    // The queue works after a reset drops the rest.
    dev.reset().unwrap();
    let small = spec(4, 64);
    let data = pattern(small.host_bytes() as usize, 2);
    let sb = dev.allocate(&small).unwrap();
    sb.write(0, &data, false).unwrap();
    assert_bytes_eq(&slow_round_trip(&dev, &sb), &data, "after the reset");
}

/// The safe non-blocking read: it owns its destination until `wait` gives it back filled; `cancel` gives it back
/// at once (and nothing writes it afterwards); dropping or leaking the read in flight is safe.
#[test]
fn an_owned_read_gives_its_destination_back_or_cancels() {
    let dev = open("emu:slow_us=200000", &params(Duration::from_secs(20)));
    let s = spec(8, 32);
    let data = pattern(s.host_bytes() as usize, 3);
    let b = dev.buffer_from_host(&s, 0, &data).unwrap();
    let r = b.read_owned(0, vec![0; data.len()]).unwrap();
    assert_bytes_eq(&r.wait().unwrap(), &data, "owned read");

    let r = b.read_owned(1, vec![0x11; data.len()]).unwrap();
    let mut v = r.cancel();
    v.fill(0x77);
    drain_queue(&dev, 1);
    assert!(v.iter().all(|&x| x == 0x77), "a cancelled owned read wrote its destination");

    // Dropped in flight: cancelled, then freed; the entry is consumed when it arrives.
    drop(b.read_owned(0, vec![0; data.len()]).unwrap());
    // Leaked in flight: the destination leaks with it (the device may still write it; nobody else owns it).
    std::mem::forget(b.read_owned(0, vec![0; data.len()]).unwrap());
    drain_queue(&dev, 0);
    assert_bytes_eq(&b.read_to_vec(0).unwrap(), &data, "after dropped and leaked reads");
    // A wrong length is refused before anything is enqueued.
    expect_kind(b.read_owned(0, vec![0; 3]), ErrorKind::InvalidArgument, &["read of 3 bytes"]);
}

/// A non-blocking read whose wait times out stays pending, as the header says: the data is delivered by a later
/// wait.
#[test]
fn a_non_blocking_read_whose_wait_times_out_stays_pending() {
    let dev = open("emu:slow_us=300000", &params(Duration::from_millis(100)));
    let s = spec(8, 32);
    let data = pattern(s.host_bytes() as usize, 4);
    let b = dev.allocate(&s).unwrap();
    b.write(0, &data, false).unwrap();
    let mut out = vec![0u8; data.len()];
    // SAFETY: `out` outlives the read, which is delivered (waited for below) before `out` is touched.
    let r = unsafe { b.read_nonblocking(0, out.as_mut_ptr()) }.unwrap();
    expect_kind(dev.finish(0), ErrorKind::Timeout, &["finish (queue 0"]);
    expect_kind(r.wait(), ErrorKind::Timeout, &["read on queue 0"]);
    drain_queue(&dev, 0);
    assert!(r.is_done().unwrap());
    assert_bytes_eq(&out, &data, "delivered after the timed-out waits");
}

/// `Device::reset` ends every pending read, whatever its outcome: once it returns, nothing is written to a
/// destination. The paced device below is inside one 2.6 s read when the reset comes; on an emulator that sleeps out
/// a modelled delay the reset fails (the device is not ready within 1 s) and the read's entry is written later —
/// which must reach no destination. On one that honours the reset at once, the reset succeeds.
#[test]
fn a_reset_ends_every_pending_read() {
    // A 1 MiB completion ring takes the whole 250 KB read in one record, which the paced device spends 2.6 s on.
    let p = DeviceParams { completion_ring_size: 1 << 20, ..params(Duration::from_secs(20)) };
    let dev = open("emu:paced,pcie_gbps=0.0001", &p);
    let s = spec(64, 1000);
    let b = dev.allocate(&s).unwrap();
    let mut out = vec![0u8; s.host_bytes() as usize];
    // SAFETY: `out` lives to the end of the test; the reset below ends the read before `out` is touched.
    let _r = unsafe { b.read_nonblocking(0, out.as_mut_ptr()) }.unwrap();
    std::thread::sleep(Duration::from_millis(50));
    match dev.reset() {
        Ok(()) => {}
        Err(e) => {
            let msg = e.to_string();
            assert_eq!(e.kind(), ErrorKind::Timeout, "{msg}");
            assert!(msg.contains("the emulated device") && !msg.contains("reboot"), "{msg}");
        }
    }
    out.fill(0x3C);
    std::thread::sleep(Duration::from_millis(3000));
    // Whatever the first reset did, a second one works, and nothing reached `out` meanwhile or during it.
    let _ = dev.finish(0);
    dev.reset().unwrap();
    assert!(out.iter().all(|&x| x == 0x3C), "a read pending at a reset was delivered after the reset returned");
    let small = spec(2, 16);
    let data = pattern(small.host_bytes() as usize, 5);
    let sb = dev.buffer_from_host(&small, 0, &data).unwrap();
    assert_bytes_eq(&sb.read_to_vec(0).unwrap(), &data, "after the resets");
}

/// A write that cannot be enqueued whole (the slow device never frees ring room within the timeout) stops and says
/// exactly what was enqueued; the buffer then reads as undefined until written whole again. A write refused before
/// anything was enqueued leaves the buffer as it was.
#[test]
fn a_write_that_stops_part_way_says_what_was_enqueued_and_the_buffer_reads_as_undefined() {
    // Each record takes 2 s: nothing retires during the two 300 ms waits below.
    let dev = open("emu:slow_us=2000000", &params(Duration::from_millis(300)));
    // 1 MiB in records of at most 16 KiB (a quarter of the 64 KiB ring), each 3 rows of 4 KiB: 86 records, of which
    // the ring holds 5.
    let s = spec(256, 1024);
    let b = dev.allocate(&s).unwrap();
    assert_eq!(b.contents(), Contents::Defined);
    let data = pattern(s.host_bytes() as usize, 6);
    let err = b.write(0, &data, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let Error::WriteStopped { records_enqueued, records_total, bytes_enqueued, bytes_total, queue, .. } = &err else {
        panic!("expected WriteStopped, got {err:?}");
    };
    assert!(*records_enqueued >= 1 && records_enqueued < records_total, "{err}");
    assert_eq!((*bytes_total, *queue), (s.host_bytes(), 0));
    assert_eq!(*bytes_enqueued, *records_enqueued as u64 * 3 * 4096, "{err}");
    let msg = err.to_string();
    for n in [
        "did not complete within 300ms",
        &format!("{records_enqueued} of its {records_total} records"),
        &format!("({bytes_enqueued} of {} bytes) were enqueued", s.host_bytes()),
        "contents are now undefined",
        "written whole again",
    ] {
        assert!(msg.contains(n), "message does not mention {n:?}: {msg}");
    }
    assert_eq!(
        b.contents(),
        Contents::PartialWrite { queue: 0, bytes_enqueued: *bytes_enqueued, bytes_total: s.host_bytes() }
    );
    let mut out = vec![0u8; data.len()];
    expect_kind(b.read(0, &mut out), ErrorKind::ContentsUndefined, &["stopped part-way", "Write the whole buffer"]);
    expect_kind(b.read_owned(0, vec![0; data.len()]), ErrorKind::ContentsUndefined, &["stopped part-way"]);
    assert!(out.iter().all(|&x| x == 0), "a refused read wrote its destination");

    // A write refused before anything was enqueued (its first record does not fit the ring, still full) leaves the
    // buffer as it was: a plain timeout, nothing to report.
    let other = dev.allocate(&s).unwrap();
    let e = expect_kind(other.write(0, &data, false), ErrorKind::Timeout, &["room in queue 0's issue ring"]);
    assert!(!e.contains("enqueued"), "{e}");
    assert_eq!(other.contents(), Contents::Defined);

    // Reset (dropping the slow work) and write whole: defined again, and the data reads back.
    dev.reset().unwrap();
    assert_eq!(b.contents(), Contents::LostInReset);
    let patient = open("emu", &params(Duration::from_secs(20)));
    let pb = patient.allocate(&s).unwrap();
    pb.write(0, &data, true).unwrap();
    assert_eq!(pb.contents(), Contents::Defined);
    assert_bytes_eq(&pb.read_to_vec(0).unwrap(), &data, "whole write");
}

/// Item 10 of the issue: writes queued behind a faulting record return OK and are dropped by the reset that
/// follows. After the reset every buffer — those, and one written long before — reports its contents lost (none
/// survive a reset, docs/device-interface.md §7.2) and cannot be read until written whole again; an operation
/// writing the whole buffer (fill) makes it defined too.
#[test]
fn writes_dropped_by_a_reset_after_a_fault_are_reported_lost() {
    let dev = open("emu", &params(Duration::from_secs(20)));
    let s = spec(32, 64);
    let old = dev.buffer_from_host(&s, 0, &pattern(s.host_bytes() as usize, 8)).unwrap();
    dev.finish(0).unwrap();
    // A kernel the device does not implement faults when it runs (contract §8.1); the writes behind it on the same
    // queue are accepted (the driver cannot know yet) but never executed.
    let prog = dev
        .program(ttdrv::device::program::ProgramDesc {
            kernel: ttdrv::device::program::KernelSource::Image { name: "no.such.kernel".into(), code: vec![] },
            cores: ttdrv::contract::records::CoreRect { x0: 0, y0: 0, x1: 0, y1: 0 },
            ct_args: vec![],
            cbs: vec![],
            sems: vec![],
            rt_words: 0,
        })
        .unwrap();
    prog.run(0, &[], &[]).unwrap();
    let queued = dev.allocate(&s).unwrap();
    let data = pattern(s.host_bytes() as usize, 9);
    queued.write(0, &data, false).unwrap();
    assert_eq!(queued.contents(), Contents::Defined, "the write returned OK");
    expect_kind(dev.finish(0), ErrorKind::DeviceFault, &["invalid kernel image"]);
    dev.reset().unwrap();
    for (name, b) in [("queued write", &queued), ("old buffer", &old)] {
        assert_eq!(b.contents(), Contents::LostInReset, "{name}");
        expect_kind(b.read_to_vec(0), ErrorKind::ContentsUndefined, &["was reset since it was last written"]);
    }
    queued.write(0, &data, true).unwrap();
    assert_eq!(queued.contents(), Contents::Defined);
    assert_bytes_eq(&queued.read_to_vec(0).unwrap(), &data, "rewritten after the reset");
    dev.fill(0, &old, 2.5).unwrap();
    assert_eq!(old.contents(), Contents::Defined, "fill writes the whole buffer");
    let filled = old.read_to_vec(0).unwrap();
    assert!(filled.chunks_exact(4).all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 2.5));
    // A buffer allocated after the reset is not reported: nothing of it was lost.
    assert_eq!(dev.allocate(&s).unwrap().contents(), Contents::Defined);
}
