//! Device lifecycle: no leaks over many open/close cycles, independent devices side by side, close drains work in
//! flight, and objects of a closed device are refused with `Error::Closed`.

mod common;

use common::*;
use std::time::{Duration, Instant};
use ttdrv::*;
use ttdrv_testkit::expect_err;

/// Threads that have been joined may linger in `/proc/self/task` for a moment (the kernel wakes the joiner before
/// it has released the task); wait a bounded time for the count to settle.
fn settled_threads(want: usize) -> usize {
    let t0 = Instant::now();
    loop {
        let n = proc_self_entries("task");
        if n == want || t0.elapsed() > Duration::from_secs(2) {
            return n;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn dma_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").unwrap().lines().filter(|l| l.contains("ttdrv-dma")).count()
}

fn cycle(spec: &BufferSpec, data: &[u8]) {
    let dev = Device::open("emu", &DeviceParams::default()).unwrap();
    let b = dev.allocate(spec).unwrap();
    b.write(0, data, false).unwrap();
    assert_eq!(b.read_to_vec(0).unwrap(), data);
    let ev = dev.create_event().unwrap();
    ev.record(0).unwrap();
    ev.synchronize().unwrap();
    dev.close().unwrap();
}

/// 100 open/use/close cycles of a default device (16 + 8 MiB of rings, an emulator with two threads and 1 GiB of
/// sparse DRAM each): threads, file descriptors and DMA mappings return to their baseline after every cycle;
/// resident and virtual memory stay within a bound far below what one leaked device would cost.
#[test]
fn open_close_100_times_leaks_nothing() {
    if !in_child() {
        let out = run_child("open_close_100_times_leaks_nothing", &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if let Some(i) = stdout.find("lifecycle:") {
            eprintln!("{}", stdout[i..].lines().next().unwrap_or(""));
        }
        return;
    }
    let spec = BufferSpec::new(64, 1000, DType::Float32, MemoryConfig::DRAM);
    let data = pattern(spec.host_bytes() as usize, 9);
    for _ in 0..5 {
        cycle(&spec, &data);
    }
    let threads0 = settled_threads(0);
    let fds0 = proc_self_entries("fd");
    let rss0 = proc_status_kb("VmRSS");
    let vm0 = proc_status_kb("VmSize");
    assert_eq!(dma_mappings(), 0, "DMA memory still mapped after close");
    for i in 0..100 {
        cycle(&spec, &data);
        assert_eq!(settled_threads(threads0), threads0, "cycle {i}: thread count");
        assert_eq!(proc_self_entries("fd"), fds0, "cycle {i}: open file descriptors");
        assert_eq!(dma_mappings(), 0, "cycle {i}: DMA memory still mapped after close");
    }
    let rss1 = proc_status_kb("VmRSS");
    let vm1 = proc_status_kb("VmSize");
    println!("lifecycle: VmRSS {rss0} -> {rss1} kB, VmSize {vm0} -> {vm1} kB, {threads0} threads, {fds0} fds");
    // One leaked device would add 24 MiB of locked rings to VmRSS and 1 GiB of DRAM reservation to VmSize.
    assert!(rss1 <= rss0 + 16 * 1024, "VmRSS grew from {rss0} to {rss1} kB over 100 cycles");
    assert!(vm1 <= vm0 + 512 * 1024, "VmSize grew from {vm0} to {vm1} kB over 100 cycles");
}

#[test]
fn two_devices_stay_independent() {
    let params = |n| DeviceParams { num_command_queues: n, hugepages: false, ..DeviceParams::default() };
    let a = Device::open("emu:queues=2", &params(2)).unwrap();
    let b = Device::open("emu:queues=4", &params(3)).unwrap();
    assert_ne!(a.info().name, b.info().name);
    assert_eq!((a.num_queues(), a.info().num_queues), (2, 2));
    assert_eq!((b.num_queues(), b.info().num_queues), (3, 4));

    let spec = BufferSpec::new(40, 333, DType::BFloat16, MemoryConfig::DRAM);
    let ba = a.allocate(&spec).unwrap();
    let bb = b.allocate(&spec).unwrap();
    // Same device address on both: a write that leaked across would land exactly on the other buffer.
    assert_eq!(ba.address(), bb.address());
    let n = spec.host_bytes() as usize;
    let (pa, pb) = (pattern(n, 1), pattern(n, 2));
    // Queues are ordered only within themselves: each read goes on the queue of the write before it (or after a
    // blocking write).
    ba.write(1, &pa, false).unwrap();
    bb.write(2, &pb, false).unwrap();
    assert_bytes_eq(&ba.read_to_vec(1).unwrap(), &pa, "device a");
    assert_bytes_eq(&bb.read_to_vec(2).unwrap(), &pb, "device b");
    let pa2 = pattern(n, 3);
    ba.write(0, &pa2, true).unwrap();
    assert_bytes_eq(&bb.read_to_vec(1).unwrap(), &pb, "device b after writing a");
    assert_bytes_eq(&ba.read_to_vec(1).unwrap(), &pa2, "device a after rewriting it");

    // Queue 2 exists on b only.
    assert!(matches!(
        ba.write(2, &pa, false),
        Err(Error::QueueOutOfRange { queue: 2, queues: 2, device, .. }) if device == a.info().name
    ));
    // An event of one device cannot be waited for on the other.
    let ev = a.create_event().unwrap();
    ev.record(0).unwrap();
    assert!(matches!(
        b.wait_for_event(0, &ev),
        Err(Error::WrongDevice { object: "event", object_device, device })
            if object_device == a.info().name && device == b.info().name
    ));

    // Closing one leaves the other working.
    a.close().unwrap();
    assert!(matches!(ba.read_to_vec(0), Err(Error::Closed { device }) if device == a.info().name));
    assert_bytes_eq(&bb.read_to_vec(0).unwrap(), &pb, "device b after closing a");
}

/// Close with writes and non-blocking reads still queued on a slow (jittery) device: close drains them, so the
/// reads' data is in place when it returns.
#[test]
fn close_drains_work_in_flight() {
    let params = DeviceParams {
        issue_ring_size: 2 << 20,
        completion_ring_size: 64 << 10,
        hugepages: false,
        ..DeviceParams::default()
    };
    let dev = Device::open("emu:jitter=3,jitter_us=500,jitter_pct=100", &params).unwrap();
    let spec = BufferSpec::new(256, 1024, DType::Float32, MemoryConfig::DRAM);
    let n = spec.host_bytes() as usize;
    let bufs: Vec<Buffer> = (0..3).map(|_| dev.allocate(&spec).unwrap()).collect();
    let datas: Vec<Vec<u8>> = (0..3).map(|i| pattern(n, 50 + i)).collect();
    let mut dsts: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; n]).collect();
    for ((b, d), dst) in bufs.iter().zip(&datas).zip(dsts.iter_mut()) {
        b.write(0, d, false).unwrap();
        // SAFETY: `dsts` is not touched until after close, which delivers the data.
        unsafe { b.read_nonblocking(0, dst.as_mut_ptr()).unwrap() };
    }
    let ev = dev.create_event().unwrap();
    ev.record(0).unwrap();
    let in_flight = !ev.query().unwrap();
    dev.close().unwrap();
    eprintln!("close_drains_work_in_flight: work was {}in flight at close", if in_flight { "" } else { "NOT " });
    for (i, (got, want)) in dsts.iter().zip(&datas).enumerate() {
        assert_bytes_eq(got, want, &format!("read {i} after close"));
    }
}

/// Selectors that name no device are refused with what to pass instead: an empty one is not taken for `auto`, an
/// unknown kind lists the kinds, and a bad emulator option says what the option takes.
#[test]
fn bad_selectors_say_what_to_pass() {
    let p = DeviceParams { hugepages: false, ..DeviceParams::default() };
    for sel in ["", "   "] {
        expect_err!(
            Device::open(sel, &p),
            Error::InvalidSelector { selector, .. } if selector == sel,
            ["the selector is empty", "pass \"auto\""]
        );
    }
    expect_err!(
        Device::open("pcie:0", &p),
        Error::InvalidSelector { .. },
        ["device selector `pcie:0`", "use `auto`, `emu[:options]` or `vfio:DDDD:BB:DD.F`"]
    );
    expect_err!(
        Device::open("emu:queues=99", &p),
        Error::InvalidSelector { .. },
        ["emu:queues=99", "1 to 16 command queues", "e.g. queues=4"]
    );
    expect_err!(
        Device::open("emu:dram=lots", &p),
        Error::InvalidSelector { .. },
        ["dram=lots", "K, M or G", "e.g. dram=2G"]
    );
    let e = Device::open("vfio:0000:01:00", &p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

#[track_caller]
fn expect_closed<T: std::fmt::Debug>(r: Result<T>, what: &str) {
    match r {
        Err(e @ Error::Closed { .. }) => assert!(e.to_string().contains("is closed"), "{what}: {e}"),
        other => panic!("{what}: expected Error::Closed, got {other:?}"),
    }
}

#[test]
fn objects_of_a_closed_device_are_refused() {
    let dev = Device::open("emu", &DeviceParams { hugepages: false, ..DeviceParams::default() }).unwrap();
    let other_handle = dev.clone();
    let spec = BufferSpec::new(8, 8, DType::Float32, MemoryConfig::L1);
    let b = dev.allocate(&spec).unwrap();
    let ev = dev.create_event().unwrap();
    ev.record(0).unwrap();
    let never = dev.create_event().unwrap();
    dev.close().unwrap();
    dev.close().unwrap();

    expect_closed(b.write(0, &[0u8; 256], false), "Buffer::write");
    expect_closed(b.write(0, &[0u8; 256], true), "blocking Buffer::write");
    expect_closed(b.read_to_vec(0), "Buffer::read_to_vec");
    expect_closed(ev.record(0), "Event::record");
    expect_closed(ev.synchronize(), "Event::synchronize");
    expect_closed(ev.query(), "Event::query");
    expect_closed(dev.finish(0), "Device::finish");
    expect_closed(dev.synchronize(), "Device::synchronize");
    expect_closed(dev.allocate(&spec), "Device::allocate");
    expect_closed(dev.create_event(), "Device::create_event");
    expect_closed(dev.reset(), "Device::reset");
    expect_closed(other_handle.finish(0), "another handle's finish");
    expect_closed(other_handle.wait_for_event(0, &ev), "wait_for_event");
    // Never recorded: the state error wins, which is still an error.
    assert!(never.synchronize().is_err());
    drop(b);

    // Dropping the last handle closes too.
    let dev = Device::open("emu", &DeviceParams { hugepages: false, ..DeviceParams::default() }).unwrap();
    let b = dev.allocate(&spec).unwrap();
    drop(dev);
    expect_closed(b.write(0, &[0u8; 256], false), "write after the last Device handle was dropped");
}
