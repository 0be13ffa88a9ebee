//! A record feeder: hands arbitrary record bytes to an emulated device's queue 0 and reports what the device did
//! with them, with none of the driver's rings, checks or completion parsing in between.
//!
//! The emulator-strictness tests (`tests/emulator_strict.rs`) and the `record_decode` fuzz target (`fuzz/`) use it
//! to check that no record bytes make the device do anything but execute or fault (contract §4, §7.1). It plays the
//! host side of the contract as plainly as possible: one host region (control page, 64 KiB issue and completion
//! rings, 16 profile slots) in memory it owns, records copied in at the write pointer (with a `PAD` before a record
//! that would cross the end of the ring, contract §5.1), and every completion entry consumed unread by storing the
//! device's `COMPL_WR` back into `Q_COMPL_RD` (contract §5.2).

use std::sync::Arc;
use std::time::{Duration, Instant};
use ttdrv::contract::Memory;
use ttdrv::contract::records::{self, FIXED_LEN, Linear, RecordMeta, RecordSlot};
use ttdrv::contract::regs::{self, QueueStatus, Status, global, host, queue as qreg};
use ttdrv::contract::{Iova, RECORD_ALIGN, RING_OFFSET};
use ttdrv::raw::{HostMemory, MemoryOptions};
use ttdrv::transport::emulated::{EmuConfig, EmulatedTransport};
use ttdrv::transport::{DmaMemory, Transport};

/// Bytes of each ring.
pub const RING: u32 = 64 * 1024;
/// The largest record the feeder copies in: a quarter of the issue ring (contract §5.1).
pub const MAX_RECORD: usize = RING as usize / 4;
/// Profile slots the feeder programs, so records with `PROFILE` set have somewhere to write.
const PROFILE_SLOTS: u32 = 16;
/// Where the host region is mapped for the device.
const IOVA: u64 = 1 << 20;

/// What the device did with a fed record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It consumed the record (`ISSUE_RD` reached the doorbell).
    Consumed,
    /// It faulted; the `FAULT_*` registers, as (code, address, tag, opcode).
    Fault {
        /// `FAULT_CODE`.
        code: u32,
        /// `FAULT_ADDR`.
        addr: u64,
        /// `FAULT_TAG`.
        tag: u32,
        /// `FAULT_OPCODE`.
        opcode: u32,
    },
    /// It is stalled in an `EVENT_WAIT` nothing will satisfy, or still busy after the patience.
    Stalled,
}

/// Queue 0 of an emulated device, fed by hand.
pub struct RecordFeeder {
    emu: Arc<EmulatedTransport>,
    mem: HostMemory,
    wr: u32,
    patience: Duration,
}

impl RecordFeeder {
    /// A fresh emulated device of `cfg` with queue 0 enabled on the feeder's host region.
    pub fn new(cfg: EmuConfig) -> Result<RecordFeeder, String> {
        let emu = Arc::new(EmulatedTransport::new(cfg).map_err(|e| e.to_string())?);
        let len = RING_OFFSET + 2 * RING as usize + PROFILE_SLOTS as usize * 16;
        let len = len.next_multiple_of(4096);
        let mem = HostMemory::allocate(len, &MemoryOptions { hugepages: false, ..MemoryOptions::default() })
            .map_err(|e| e.to_string())?;
        let desc = DmaMemory { vaddr: mem.as_ptr(), len: mem.len(), fd: mem.raw_fd(), fd_offset: 0 };
        emu.dma_map(&desc, Iova(IOVA)).map_err(|e| e.to_string())?;
        let mut f = RecordFeeder { emu, mem, wr: 0, patience: Duration::from_secs(2) };
        f.enable();
        Ok(f)
    }

    /// How long [`RecordFeeder::feed`] waits for a busy device before calling it stalled (default 2 s).
    pub fn set_patience(&mut self, d: Duration) {
        self.patience = d;
    }

    /// The transport (registers, and the emulator behind it).
    pub fn transport(&self) -> &Arc<EmulatedTransport> {
        &self.emu
    }

    fn reg(&self, r: u32) -> regs::BarOffset {
        regs::queue_reg(0, r)
    }

    /// Programs and enables queue 0 (contract §3): the device zeroes its pointers and words.
    pub fn enable(&mut self) {
        let t = &self.emu;
        t.write32(self.reg(qreg::CTRL), 0);
        t.write32(self.reg(qreg::BASE_LO), IOVA as u32);
        t.write32(self.reg(qreg::BASE_HI), (IOVA >> 32) as u32);
        t.write32(self.reg(qreg::ISSUE_SIZE), RING);
        t.write32(self.reg(qreg::COMPL_SIZE), RING);
        let prof = IOVA + (RING_OFFSET + 2 * RING as usize) as u64;
        t.write32(self.reg(qreg::PROF_BASE_LO), prof as u32);
        t.write32(self.reg(qreg::PROF_BASE_HI), (prof >> 32) as u32);
        t.write32(self.reg(qreg::PROF_SLOTS), PROFILE_SLOTS);
        t.write32(self.reg(qreg::CTRL), 1);
        self.wr = 0;
    }

    /// Resets the device (contract §7.2), waits for `READY` (failing after 1 s: the contract gives 100 ms) and
    /// enables queue 0 again.
    pub fn reset(&mut self) -> Result<(), String> {
        self.emu.write32(global::RESET, regs::RESET_MAGIC);
        let t0 = Instant::now();
        loop {
            let s = Status::from_bits_truncate(self.emu.read32(global::STATUS));
            if s.contains(Status::READY) && !s.contains(Status::RESETTING) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(1) {
                return Err(format!("the device is not READY {:?} after a reset (status {s:?})", t0.elapsed()));
            }
            std::thread::yield_now();
        }
        self.enable();
        Ok(())
    }

    /// A device-written word of the host region (contract §5).
    pub fn word(&self, off: usize) -> u32 {
        // SAFETY: `off` is one of the contract's word offsets inside the first page of the region we own; the
        // device writes the word with release stores, so an atomic load of it is sound.
        unsafe { std::sync::atomic::AtomicU32::from_ptr(self.mem.as_ptr().add(off) as *mut u32) }
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The fault registers, if the device has faulted.
    pub fn fault(&self) -> Option<Outcome> {
        let t = &self.emu;
        let s = Status::from_bits_truncate(t.read32(global::STATUS));
        s.contains(Status::FAULT).then(|| Outcome::Fault {
            code: t.read32(global::FAULT_CODE),
            addr: t.read32(global::FAULT_ADDR_LO) as u64 | (t.read32(global::FAULT_ADDR_HI) as u64) << 32,
            tag: t.read32(global::FAULT_TAG),
            opcode: t.read32(global::FAULT_OPCODE),
        })
    }

    /// Copies `bytes` into the issue ring as one record (zero padded to a multiple of 64; at most
    /// [`MAX_RECORD`] bytes are taken) whatever they hold, rings the doorbell and waits for the device to consume
    /// it, fault or stall. Completion entries are consumed as they come.
    pub fn feed(&mut self, bytes: &[u8]) -> Outcome {
        let bytes = &bytes[..bytes.len().min(MAX_RECORD)];
        let len = bytes.len().max(1).next_multiple_of(RECORD_ALIGN);
        let left = RING as usize - (self.wr as usize % RING as usize);
        if left < len {
            self.put(left, records::encode_pad);
        }
        self.put(len, |s, _| {
            s.put_bytes(0, bytes);
            s.zero(bytes.len(), len - bytes.len());
        });
        self.emu.write32(self.reg(qreg::ISSUE_WR), self.wr);
        self.settle()
    }

    /// Writes one record of `len` bytes at the write pointer. The ring is empty whenever this is called (every
    /// feed waits for its record to be consumed, and a fault or stall is followed by a reset).
    fn put(&mut self, len: usize, fill: impl FnOnce(&mut RecordSlot<'_>, RecordMeta)) {
        let off = RING_OFFSET + (self.wr as usize % RING as usize);
        // SAFETY: `off + len` stays inside the issue ring (the caller pads before a record that would cross its
        // end), which lies inside the region we own; the device reads only below the doorbell, which we ring after.
        let mut slot = unsafe { RecordSlot::from_raw(self.mem.as_ptr().add(off), len) };
        fill(&mut slot, RecordMeta::default());
        self.wr = self.wr.wrapping_add(len as u32);
    }

    /// Waits until the device has consumed everything rung, faulted or stalled, consuming completions meanwhile.
    fn settle(&mut self) -> Outcome {
        let t0 = Instant::now();
        loop {
            if let Some(f) = self.fault() {
                return f;
            }
            // Consume every completion entry the device has written, unread.
            let cw = self.word(host::COMPL_WR);
            self.emu.write32(self.reg(qreg::COMPL_RD), cw);
            if self.word(host::ISSUE_RD) == self.wr {
                return Outcome::Consumed;
            }
            let qs = QueueStatus::from_bits_truncate(self.emu.read32(self.reg(qreg::STATUS)));
            if qs.contains(QueueStatus::WAITING_EVENT) || t0.elapsed() > self.patience {
                return Outcome::Stalled;
            }
            std::thread::yield_now();
        }
    }

    /// Feeds a byte stream as consecutive records: each record's length is its header's `length` field, clamped to
    /// 64..[`MAX_RECORD`] and to what is left (the fuzz input format). Resets the device after a fault or a stall
    /// and carries on. Returns the outcomes.
    pub fn feed_stream(&mut self, mut data: &[u8]) -> Result<Vec<Outcome>, String> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let claimed = if data.len() >= 8 {
                u32::from_le_bytes([data[4], data[5], data[6], data[7]]) as usize
            } else {
                FIXED_LEN
            };
            let n = claimed.clamp(FIXED_LEN, MAX_RECORD).min(data.len());
            let o = self.feed(&data[..n]);
            if o != Outcome::Consumed {
                self.reset()?;
            }
            out.push(o);
            data = &data[n..];
        }
        Ok(out)
    }

    /// Writes `data` to device memory with one `WRITE_LINEAR` (at most [`MAX_RECORD`] - 64 bytes).
    pub fn write(&mut self, mem: Memory, unit: u16, offset: u64, data: &[u8]) -> Outcome {
        let x = Linear { mem, unit, offset, len: data.len() as u64 };
        let mut rec = vec![0u8; records::write_linear_len(data.len())];
        let mut slot = RecordSlot::from_slice(&mut rec);
        records::encode_write_linear(&mut slot, RecordMeta::default(), &x);
        slot.put_bytes(records::PAYLOAD_OFFSET, data);
        records::pad_payload(&mut slot, data.len());
        self.feed(&rec)
    }

    /// Reads `len` bytes of device memory with one `READ_LINEAR` (at most a quarter of the completion ring less
    /// 64), taking the data from its `READ_DATA` entry (contract §5.2).
    pub fn read(&mut self, mem: Memory, unit: u16, offset: u64, len: usize) -> Result<Vec<u8>, Outcome> {
        let x = Linear { mem, unit, offset, len: len as u64 };
        let mut rec = [0u8; FIXED_LEN];
        records::encode_read_linear(&mut RecordSlot::from_slice(&mut rec), RecordMeta::default(), &x);
        let mut at = self.word(host::COMPL_WR);
        match self.feed(&rec) {
            Outcome::Consumed => {}
            other => return Err(other),
        }
        let end = self.word(host::COMPL_WR);
        let base = RING_OFFSET + RING as usize;
        while at != end {
            let off = base + (at % RING) as usize;
            let mut h = [0u8; records::COMPL_HEADER_LEN];
            // SAFETY: the entry header lies inside the completion ring of the region we own, below COMPL_WR.
            unsafe { std::ptr::copy_nonoverlapping(self.mem.as_ptr().add(off), h.as_mut_ptr(), h.len()) };
            let e = records::decode_compl(&h);
            if e.kind == records::ComplKind::ReadData as u8 && e.data_len as usize == len {
                let mut out = vec![0u8; len];
                // SAFETY: the payload follows the header inside the entry, which the device wrote whole.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.mem.as_ptr().add(off + records::PAYLOAD_OFFSET),
                        out.as_mut_ptr(),
                        len,
                    )
                };
                return Ok(out);
            }
            at = at.wrapping_add(e.length.max(FIXED_LEN as u32));
        }
        Err(Outcome::Stalled)
    }

    /// Panics the emulator's queue threads caught and turned into faults: always 0 unless the emulator has a bug.
    pub fn engine_panics(&self) -> u64 {
        self.emu.device().engine_panics()
    }
}
