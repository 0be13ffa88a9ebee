//! Device faults surface as errors, never as hangs or crashes, and `Device::reset` recovers.
//!
//! - An IOMMU fault on the device's own queue: its ring region is unmapped behind the driver's back. The next
//!   wait fails with `Error::DeviceFault` naming the IOVA. That queue cannot come back (its mapping is gone, and
//!   only the driver's DMA layer holds the memory), so the test checks that every later call keeps failing
//!   cleanly, including after a reset, and that close still completes.
//! - The recovery case: an IOMMU fault on a queue whose memory the test owns (so it can unmap *and re-map* it);
//!   the driver's waits fail with the fault, a reset brings both the driver's queue and the re-mapped one back.
//! - A record the device rejects (unknown opcode) and a bad doorbell value, each followed by a reset.
//! - A thread blocked in a wait that can only end by a fault is woken by it.

mod common;

use common::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use ttdrv::contract::records::{self, FIXED_LEN, RecordMeta, RecordSlot};
use ttdrv::contract::regs::{self, FaultCode, host, queue as qreg};
use ttdrv::contract::{Iova, RING_OFFSET};
use ttdrv::raw::{HostMemory, MemoryOptions};
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::transport::{DmaMemory, Transport};
use ttdrv::*;

const RING: u32 = 64 * 1024;

fn params() -> DeviceParams {
    DeviceParams {
        issue_ring_size: RING,
        completion_ring_size: RING,
        hugepages: false,
        timeout: Duration::from_secs(20),
        ..DeviceParams::default()
    }
}

/// The IOVA queue `q`'s host region is programmed at, read back from its `Q_BASE` registers (contract §3).
fn queue_base(t: &dyn Transport, q: u16) -> u64 {
    t.read32(regs::queue_reg(q, qreg::BASE_LO)) as u64 | (t.read32(regs::queue_reg(q, qreg::BASE_HI)) as u64) << 32
}

/// Waits until the device reports a fault. Queues run on their own threads, so a fault caused through one queue
/// is only certain to be visible on another once `STATUS.FAULT` is set; before that, the other queue's work may
/// legitimately complete.
fn wait_for_fault(t: &dyn Transport) {
    let t0 = std::time::Instant::now();
    while device_fault(t).is_none() {
        assert!(t0.elapsed() < PATIENCE, "the device never faulted");
        std::thread::yield_now();
    }
}

#[track_caller]
fn expect_fault<T: std::fmt::Debug>(r: Result<T>, needles: &[&str]) -> String {
    match r {
        Err(Error::DeviceFault(report)) => {
            let msg = report.to_string();
            for n in needles {
                assert!(msg.contains(n), "fault message {msg:?} does not mention {n:?}");
            }
            msg
        }
        other => panic!("expected a DeviceFault mentioning {needles:?}, got {other:?}"),
    }
}

#[test]
fn unmapped_ring_faults_with_its_iova_and_nothing_crashes() {
    let (emu, t) = emulator(EmuConfig::default());
    let dev = Device::open_transport(t.clone(), &params()).unwrap();
    let spec = BufferSpec::new(16, 100, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    let data = pattern(spec.host_bytes() as usize, 1);
    b.write(0, &data, true).unwrap();

    let iova = queue_base(t.as_ref(), 0);
    // 4 KiB pages (hugepages: false): the region is exactly the control page and both rings.
    let len = (RING_OFFSET + 2 * RING as usize) as u64;
    let before = emu.device().mappings();
    t.dma_unmap(Iova(iova), len).expect("unmapping the queue's region");
    assert_eq!(emu.device().mappings(), before - 1);

    // The write only touches host memory; the device faults when it fetches from the unmapped ring.
    b.write(0, &data, false).unwrap();
    let iova_text = format!("{iova:#x}");
    let report = match dev.finish(0) {
        Err(Error::DeviceFault(f)) => f,
        other => panic!("expected a device fault, got {other:?}"),
    };
    assert_eq!((report.fault_code(), report.queue), (Some(FaultCode::Iommu), 0), "{report:?}");
    assert!((iova..iova + len).contains(&report.address), "{report:?}");
    assert_eq!(report.device, dev.info().name);
    let msg = report.to_string();
    for n in ["IOMMU", &iova_text, "queue 0", "Device::reset", "ttdrv_device_reset"] {
        assert!(msg.contains(n), "fault message {msg:?} does not mention {n:?}");
    }
    // Later calls fail the same way instead of hanging.
    expect_fault(b.read_to_vec(0), &[&iova_text]);
    let ev = dev.create_event().unwrap();
    ev.record(0).unwrap();
    expect_fault(ev.synchronize(), &[&iova_text]);

    // A reset cannot bring this queue back: re-enabling it makes the device fetch from the unmapped IOVA again.
    dev.reset().unwrap();
    expect_fault(dev.finish(0), &["IOMMU", &iova_text]);
    // Close gives up draining, resets the device and releases everything (it warns that it leaks the ring pages
    // it cannot unmap, rather than crash).
    dev.close().unwrap();
    assert!(matches!(dev.finish(0), Err(Error::Closed { device }) if device == dev.info().name));
}

/// A queue the test drives by hand, on host memory the test owns, so that it can unmap and re-map it.
struct ManualQueue {
    t: Arc<dyn Transport>,
    mem: HostMemory,
    iova: Iova,
    q: u16,
    wr: u32,
}

impl ManualQueue {
    fn new(t: &Arc<dyn Transport>, q: u16, iova: Iova) -> ManualQueue {
        let len = RING_OFFSET + 2 * RING as usize;
        let mem = HostMemory::allocate(len, &MemoryOptions { hugepages: false, ..MemoryOptions::default() }).unwrap();
        let mq = ManualQueue { t: t.clone(), mem, iova, q, wr: 0 };
        mq.map();
        mq
    }

    fn desc(&self) -> DmaMemory {
        DmaMemory { vaddr: self.mem.as_ptr(), len: self.mem.len(), fd: self.mem.raw_fd(), fd_offset: 0 }
    }

    fn map(&self) {
        self.t.dma_map(&self.desc(), self.iova).unwrap();
    }

    fn unmap(&self) {
        self.t.dma_unmap(self.iova, self.mem.len() as u64).unwrap();
    }

    /// Programs and enables the queue (contract §3); the device zeroes its words.
    fn enable(&mut self) {
        let r = |reg| regs::queue_reg(self.q, reg);
        self.t.write32(r(qreg::CTRL), 0);
        self.t.write32(r(qreg::BASE_LO), self.iova.0 as u32);
        self.t.write32(r(qreg::BASE_HI), (self.iova.0 >> 32) as u32);
        self.t.write32(r(qreg::ISSUE_SIZE), RING);
        self.t.write32(r(qreg::COMPL_SIZE), RING);
        self.t.write32(r(qreg::PROF_SLOTS), 0);
        self.t.write32(r(qreg::CTRL), 1);
        self.wr = 0;
    }

    fn disable(&self) {
        self.t.write32(regs::queue_reg(self.q, qreg::CTRL), 0);
    }

    fn word(&self, off: usize) -> u32 {
        // SAFETY: `off` is one of the contract's device-written words inside our mapping, 4-byte aligned; the
        // device writes it atomically, so it is only read atomically here.
        unsafe { AtomicU32::from_ptr(self.mem.as_ptr().add(off) as *mut u32) }.load(Ordering::Acquire)
    }

    /// Writes one 64-byte record at the write pointer (never wrapping: these tests write a handful) and rings the
    /// doorbell.
    fn push(&mut self, encode: impl FnOnce(&mut RecordSlot<'_>)) {
        assert!(self.wr as usize + FIXED_LEN <= RING as usize);
        // SAFETY: the 64 bytes are inside the issue ring of our mapping; the device reads them only after the
        // doorbell below.
        let mut slot = unsafe { RecordSlot::from_raw(self.mem.as_ptr().add(RING_OFFSET + self.wr as usize), 64) };
        encode(&mut slot);
        self.wr += FIXED_LEN as u32;
        std::sync::atomic::fence(Ordering::Release);
        self.t.write32(regs::queue_reg(self.q, qreg::ISSUE_WR), self.wr);
    }

    fn event_record(&mut self, id: u32) {
        self.push(|s| records::encode_event_record(s, RecordMeta { tag: id, ..RecordMeta::default() }, id));
    }

    fn wait_event_done(&self, id: u32) {
        let t0 = std::time::Instant::now();
        while self.word(host::EVENT_DONE) != id {
            assert!(device_fault(self.t.as_ref()).is_none(), "{:?}", device_fault(self.t.as_ref()));
            assert!(t0.elapsed() < PATIENCE, "queue {} never completed event {id}", self.q);
            std::thread::yield_now();
        }
    }
}

impl Drop for ManualQueue {
    fn drop(&mut self) {
        self.disable();
        let _ = self.t.dma_unmap(self.iova, self.mem.len() as u64);
    }
}

#[test]
fn iommu_fault_then_remap_and_reset_recovers() {
    let (_emu, t) = emulator(EmuConfig::default());
    let dev = Device::open_transport(t.clone(), &params()).unwrap();
    let spec = BufferSpec::new(33, 65, DType::BFloat16, MemoryConfig::L1);
    let b = dev.allocate(&spec).unwrap();
    b.write(0, &pattern(spec.host_bytes() as usize, 2), true).unwrap();

    let iova = Iova(0xC000_0000);
    let mut mq = ManualQueue::new(&t, 1, iova);
    mq.enable();
    mq.event_record(1);
    mq.wait_event_done(1);

    mq.unmap();
    mq.event_record(2);
    wait_for_fault(t.as_ref());
    // The device stops every queue on a fault: the driver's queue 0 reports it.
    let msg = expect_fault(dev.finish(0), &["IOMMU", "0xc0000000", "queue 1"]);
    assert!(msg.contains("ttdrv_device_reset"), "the message must say how to recover: {msg}");
    expect_fault(b.read_to_vec(0), &["0xc0000000"]);
    let ev = dev.create_event().unwrap();
    ev.record(0).unwrap();
    expect_fault(ev.query(), &["0xc0000000"]);

    mq.map();
    dev.reset().unwrap();
    // The driver's queue works again (contents are undefined after a reset, so write first).
    let data = pattern(spec.host_bytes() as usize, 3);
    b.write(0, &data, true).unwrap();
    assert_bytes_eq(&b.read_to_vec(0).unwrap(), &data, "after reset");
    dev.finish(0).unwrap();
    // An event recorded before the reset is refused, not waited for forever.
    assert!(matches!(ev.synchronize(), Err(Error::DroppedByReset { call: "event_synchronize", .. })));
    // And the re-mapped queue works again once re-enabled.
    mq.enable();
    mq.event_record(7);
    mq.wait_event_done(7);
}

#[test]
fn rejected_record_faults_and_reset_recovers() {
    let (_emu, t) = emulator(EmuConfig::default());
    let dev = Device::open_transport(t.clone(), &params()).unwrap();
    let spec = BufferSpec::new(5, 7, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    let mut mq = ManualQueue::new(&t, 1, Iova(0xC000_0000));
    mq.enable();
    // Opcode 0x7f does not exist (contract §4.2): BAD_RECORD, FAULT_ADDR = the record's ring offset.
    mq.push(|s| {
        records::encode_event_record(s, RecordMeta { tag: 0x55, ..RecordMeta::default() }, 1);
        s.put_u8(0, 0x7f);
    });
    wait_for_fault(t.as_ref());
    expect_fault(dev.finish(0), &["malformed record", "queue 1", "record tag 85"]);
    dev.reset().unwrap();
    let data = pattern(spec.host_bytes() as usize, 4);
    b.write(0, &data, true).unwrap();
    assert_eq!(b.read_to_vec(0).unwrap(), data);
}

#[test]
fn bad_doorbell_faults_and_reset_recovers() {
    let (_emu, t) = emulator(EmuConfig::default());
    let dev = Device::open_transport(t.clone(), &params()).unwrap();
    let mut mq = ManualQueue::new(&t, 1, Iova(0xC000_0000));
    mq.enable();
    // Not 64-byte aligned (contract §5.1): a RING fault whose address is the doorbell value.
    t.write32(regs::queue_reg(1, qreg::ISSUE_WR), 0x7b);
    wait_for_fault(t.as_ref());
    expect_fault(dev.finish(0), &["bad doorbell value", "0x7b"]);
    dev.reset().unwrap();
    dev.finish(0).unwrap();
    drop(mq);
    dev.finish(0).unwrap();
}

/// A thread blocked in `finish` on a queue that cannot progress (disabled behind the driver's back) is woken by a
/// fault on another queue and returns it, instead of waiting for its timeout.
#[test]
fn a_blocked_wait_returns_the_fault() {
    let (_emu, t) = emulator(EmuConfig::default());
    let dev = Device::open_transport(t.clone(), &params()).unwrap();
    let spec = BufferSpec::new(5, 7, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    t.write32(regs::queue_reg(0, qreg::CTRL), 0);
    b.write(0, &pattern(spec.host_bytes() as usize, 5), false).unwrap();
    let waiter = {
        let dev = dev.clone();
        std::thread::spawn(move || dev.finish(0))
    };
    // Give the waiter time to block (not needed for correctness: it sees the fault either way).
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiter.is_finished(), "finish returned although queue 0 is disabled");
    let mut mq = ManualQueue::new(&t, 1, Iova(0xC000_0000));
    mq.enable();
    t.write32(regs::queue_reg(1, qreg::ISSUE_WR), 0x41);
    expect_fault(waiter.join().unwrap(), &["bad doorbell value", "0x41"]);
    dev.reset().unwrap();
    dev.finish(0).unwrap();
}
