//! The driver against a device that misbehaves on purpose: the emulator's fault-injection options (`ttdrv help
//! devices`). For each — a corrupted completion entry, a garbage device-written word, a hung queue, an IOMMU fault at
//! the n-th DMA, a surprise reset — the host gets a clear error naming the queue, record or word within the timeout,
//! no host memory outside the buffers involved changes (reads land in the middle of guarded memory), every later
//! call fails the same way until a reset, and after `Device::reset` the device gives correct results again.
//!
//! Which contents survive: none. A reset erases DRAM and L1 (docs/device-interface.md §7.2), so after each recovery
//! every buffer allocated before it reports `Contents::LostInReset` and is written again before it is read.
//! (A slow device that times out is in tests/boundary.rs, with what it means for reads and writes.)

mod common;

use common::*;
use std::time::{Duration, Instant};
use ttdrv::*;

const RING: u32 = 64 << 10;
/// Guard bytes around every read destination.
const GUARD: usize = 4096;

fn params(timeout: Duration) -> DeviceParams {
    DeviceParams {
        issue_ring_size: RING,
        completion_ring_size: RING,
        hugepages: false,
        timeout,
        ..DeviceParams::default()
    }
}

fn spec(rows: u32, cols: u32) -> BufferSpec {
    BufferSpec::new(rows, cols, DType::Float32, MemoryConfig::DRAM)
}

/// Host memory with a read destination in the middle: guard bytes on both sides must never change.
struct Guarded {
    mem: Vec<u8>,
    len: usize,
}

impl Guarded {
    fn new(len: usize) -> Guarded {
        Guarded { mem: vec![0xE7; len + 2 * GUARD], len }
    }

    fn dst(&mut self) -> &mut [u8] {
        &mut self.mem[GUARD..GUARD + self.len]
    }

    #[track_caller]
    fn check_guards(&self, what: &str) {
        let (before, rest) = self.mem.split_at(GUARD);
        let after = &rest[self.len..];
        assert!(before.iter().chain(after).all(|&x| x == 0xE7), "{what}: memory around the destination changed");
    }

    #[track_caller]
    fn check_untouched(&self, what: &str) {
        self.check_guards(what);
        assert!(self.mem.iter().all(|&x| x == 0xE7), "{what}: the destination of a failed read changed");
    }
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

/// After a recovery: every buffer from before reports its contents lost, and the device computes correctly again
/// (a write, a read into guarded memory, and an operation on the device).
#[track_caller]
fn check_recovered(dev: &Device, before: &[&Buffer]) {
    for b in before {
        assert_eq!(b.contents(), Contents::LostInReset, "a buffer's contents survived a reset");
        expect_kind(b.read_to_vec(0), ErrorKind::ContentsUndefined, &["reset since it was last written"]);
    }
    let s = spec(24, 40);
    let data = pattern(s.host_bytes() as usize, 77);
    let b = dev.buffer_from_host(&s, 0, &data).unwrap();
    let mut g = Guarded::new(data.len());
    b.read(0, g.dst()).unwrap();
    g.check_guards("read after recovery");
    assert_bytes_eq(&g.mem[GUARD..GUARD + data.len()], &data, "read after recovery");
    let out = dev.unary(0, ttdrv::device::ops::UnaryOp::Relu, &b, &MemoryConfig::DRAM).unwrap();
    let want: Vec<u8> =
        data.chunks_exact(4).flat_map(|c| f32::from_le_bytes(c.try_into().unwrap()).max(0.0).to_le_bytes()).collect();
    let got = out.read_to_vec(0).unwrap();
    let same = got.chunks_exact(4).zip(want.chunks_exact(4)).all(|(a, b)| {
        let (a, b) = (f32::from_le_bytes(a.try_into().unwrap()), f32::from_le_bytes(b.try_into().unwrap()));
        a == b || (a.is_nan() && b.is_nan())
    });
    assert!(same, "relu after recovery computed wrong values");
}

/// A corrupted completion entry (`bad_entry=FIELD@1`) makes the read fail with a protocol error naming the queue,
/// the entry and the bad value; nothing is copied anywhere; the device stays refused until reset.
#[test]
fn a_corrupted_completion_entry_is_a_protocol_error_and_nothing_is_copied() {
    for (option, needles) in [
        // A data length beyond the entry: a driver trusting it would copy past the entry.
        ("bad_entry=data_len@1", &["queue 0's completion entry at ring offset 0x0", "data_len 6208"][..]),
        // An entry shorter than the data it claims: a driver trusting it copies past the entry, and past its DMA
        // region when the entry is last in the ring.
        ("bad_entry=length@1,bad_value=128", &["data_len 2112, more than the 64 payload bytes its length 128"]),
        // A length that wraps `offset + length` in 32 bits.
        ("bad_entry=length@1", &["has length 4294967232", "inside the ring"]),
        ("bad_entry=kind@1", &["has unknown kind 127"]),
        ("bad_entry=tag@1", &["carries read data for tag", "but the oldest pending read is tag"]),
    ] {
        let dev = open(&format!("emu:{option}"), &params(Duration::from_secs(20)));
        let s = spec(11, 48);
        let data = pattern(s.host_bytes() as usize, 1);
        let b = dev.buffer_from_host(&s, 0, &data).unwrap();
        let mut g = Guarded::new(data.len());
        let t0 = Instant::now();
        let mut all = vec!["device emu#", "broke the contract"];
        all.extend_from_slice(needles);
        let msg = expect_kind(b.read(0, g.dst()), ErrorKind::Protocol, &all);
        assert!(t0.elapsed() < Duration::from_secs(5), "{option}: took {:?}", t0.elapsed());
        g.check_untouched(option);
        // Every later call that needs the device fails the same way until a reset.
        assert_eq!(expect_kind(dev.finish(0), ErrorKind::Protocol, &[]), msg, "{option}");
        expect_kind(b.write(0, &data, false), ErrorKind::Protocol, needles);
        g.check_untouched(option);
        dev.reset().unwrap();
        check_recovered(&dev, &[&b]);
    }
}

/// A garbage device-written word (`bad_word=WORD@N`) is a protocol error naming the word and its value, met where
/// the driver reads the word; the device stays refused until reset. Before 0.2 a garbage `ISSUE_RD` panicked in a
/// debug build (and let the host overwrite unconsumed records in release), a garbage `EVENT_DONE` let `finish`
/// return before the work was done, and a garbage `RETIRED` went unnoticed.
#[test]
fn a_garbage_device_written_word_is_a_protocol_error_naming_it() {
    // ISSUE_RD: read when the ring seems full, so the write below (86 records of a 64 KiB ring) meets it.
    let dev = open("emu:bad_word=issue_rd@1", &params(Duration::from_secs(20)));
    let s = spec(256, 1024);
    let b = dev.allocate(&s).unwrap();
    let data = pattern(s.host_bytes() as usize, 2);
    let e = b.write(0, &data, false).unwrap_err();
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{msg}");
    assert!(msg.contains("queue 0's device-written ISSUE_RD reads 0x1000"), "{msg}");
    assert!(matches!(b.contents(), Contents::PartialWrite { .. }), "the write stopped part-way: {msg}");
    expect_kind(dev.finish(0), ErrorKind::Protocol, &["ISSUE_RD"]);
    dev.reset().unwrap();
    check_recovered(&dev, &[&b]);

    // COMPL_WR: read when draining the completion ring.
    let dev = open("emu:bad_word=compl_wr@1", &params(Duration::from_secs(20)));
    let s = spec(8, 16);
    let b = dev.buffer_from_host(&s, 0, &pattern(s.host_bytes() as usize, 3)).unwrap();
    let mut g = Guarded::new(s.host_bytes() as usize);
    expect_kind(b.read(0, g.dst()), ErrorKind::Protocol, &["queue 0's device-written COMPL_WR reads 0x10000000"]);
    g.check_untouched("COMPL_WR");
    dev.reset().unwrap();
    check_recovered(&dev, &[&b]);

    // EVENT_DONE: an id the host never issued must not complete a wait.
    let dev = open("emu:bad_word=event_done@1", &params(Duration::from_secs(20)));
    let b = dev.buffer_from_host(&s, 0, &pattern(s.host_bytes() as usize, 4)).unwrap();
    let ev = dev.create_event().unwrap();
    ev.record(0).unwrap();
    expect_kind(
        ev.synchronize(),
        ErrorKind::Protocol,
        &["queue 0's device-written EVENT_DONE reads 268435456", "the 1 the host issued last"],
    );
    expect_kind(dev.finish(0), ErrorKind::Protocol, &["EVENT_DONE"]);
    dev.reset().unwrap();
    check_recovered(&dev, &[&b]);

    // RETIRED: read when profile timestamps are harvested; the next call reports it.
    let p = DeviceParams { profiling: true, ..params(Duration::from_secs(20)) };
    let dev = open("emu:bad_word=retired@1", &p);
    let b = dev.buffer_from_host(&s, 0, &pattern(s.host_bytes() as usize, 5)).unwrap();
    let _ = dev.finish(0);
    expect_kind(dev.finish(0), ErrorKind::Protocol, &["queue 0's device-written RETIRED reads 268435457"]);
    dev.reset().unwrap();
    check_recovered(&dev, &[&b]);
}

/// A queue that stops consuming (`hang=0,hang_after=1`: after the write that fills the buffer): a wait on it times
/// out after the device's timeout with the queue's state, saying the device was idle; a blocking read on it is
/// cancelled; a reset recovers.
#[test]
fn a_hung_queue_times_out_naming_it_and_a_reset_recovers() {
    let dev = open("emu:hang=0,hang_after=1", &params(Duration::from_millis(400)));
    let s = spec(8, 16);
    let data = pattern(s.host_bytes() as usize, 6);
    let b = dev.buffer_from_host(&s, 0, &data).unwrap();
    // The write must have retired before the read is issued: a record retiring during the read's wait would make the
    // device "busy" in the diagnosis, which is right then but not what this test is about.
    let settled = Instant::now() + Duration::from_secs(10);
    while !dev.queue_report(0).unwrap().contains("records retired 1 ") {
        assert!(Instant::now() < settled, "the write never retired: {}", dev.queue_report(0).unwrap());
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut g = Guarded::new(data.len());
    let t0 = Instant::now();
    let msg = expect_kind(
        b.read(0, g.dst()),
        ErrorKind::Timeout,
        &["read on queue 0", "within 400ms", "The device was idle", "queue 0: issue ring"],
    );
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}: {msg}", t0.elapsed());
    g.check_untouched("hung queue");
    expect_kind(dev.finish(0), ErrorKind::Timeout, &["finish (queue 0"]);
    dev.reset().unwrap();
    check_recovered(&dev, &[&b]);
}

/// An IOMMU fault at the n-th DMA (`iommu_fault=3`: the third record the device fetches): the next wait fails with
/// the fault naming the queue, the record's tag and opcode and the IOVA; a reset recovers.
#[test]
fn an_iommu_fault_at_the_nth_dma_names_the_record_and_a_reset_recovers() {
    let dev = open("emu:iommu_fault=3", &params(Duration::from_secs(20)));
    let s = spec(8, 16);
    let data = pattern(s.host_bytes() as usize, 7);
    let a = dev.buffer_from_host(&s, 0, &data).unwrap(); // record 1
    let b = dev.buffer_from_host(&s, 0, &data).unwrap(); // record 2
    let mut g = Guarded::new(data.len());
    // Record 3 (the read) faults when the device fetches it.
    let f = match b.read(0, g.dst()) {
        Err(Error::DeviceFault(f)) => f,
        other => panic!("expected an IOMMU fault, got {other:?}"),
    };
    assert_eq!(
        (f.fault_code(), f.queue, f.tag, f.opcode),
        (Some(ttdrv::contract::regs::FaultCode::Iommu), 0, 3, ttdrv::contract::records::Opcode::ReadPaged as u32),
        "{f}"
    );
    let msg = f.to_string();
    assert!(msg.contains("IOMMU fault") && msg.contains("queue 0, record tag 3 (READ_PAGED)"), "{msg}");
    g.check_untouched("IOMMU fault");
    expect_kind(dev.finish(0), ErrorKind::DeviceFault, &["IOMMU"]);
    dev.reset().unwrap();
    check_recovered(&dev, &[&a, &b]);
}

/// A surprise reset (`surprise_reset=2`: the device resets itself after its second record, as a function-level reset
/// by someone else would): the next wait fails at once — not after its timeout — saying the device was reset behind
/// the driver and naming the queue and register; everything fails the same way until the driver resets it.
#[test]
fn a_surprise_reset_is_reported_at_once_and_a_reset_recovers() {
    let dev = open("emu:surprise_reset=2", &params(Duration::from_secs(10)));
    let s = spec(8, 16);
    let data = pattern(s.host_bytes() as usize, 8);
    let a = dev.buffer_from_host(&s, 0, &data).unwrap();
    let b = dev.buffer_from_host(&s, 0, &data).unwrap();
    let mut g = Guarded::new(data.len());
    let t0 = Instant::now();
    let needles = ["reset behind the driver", "queue 0's Q_ISSUE_SIZE register reads 0x0", "not the 0x10000"];
    expect_kind(b.read(0, g.dst()), ErrorKind::DeviceFault, &needles);
    assert!(t0.elapsed() < Duration::from_secs(2), "reported after {:?}", t0.elapsed());
    g.check_untouched("surprise reset");
    expect_kind(dev.finish(0), ErrorKind::DeviceFault, &needles);
    expect_kind(a.write(0, &data, false), ErrorKind::DeviceFault, &needles);
    dev.reset().unwrap();
    check_recovered(&dev, &[&a, &b]);
}
