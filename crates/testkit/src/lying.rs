//! A device that lies, and the driver run against it: the fuzz target `fuzz/fuzz_targets/device_words.rs` and the
//! replay of its committed corpus (`tests/fuzz_corpus.rs`).
//!
//! [`LyingDevice`] is a [`Transport`] that implements the hardware contract (docs/device-interface.md) itself, in
//! the calling thread: the records up to a doorbell run when the doorbell is written, so a run is deterministic. It
//! keeps device memory honestly (what is written is what is read), but every value it reports passes through a
//! [`Script`] of bytes that may replace it: the registers read at open, `STATUS`, the fault registers and the queue
//! registers the driver reads back, every device-written word of a queue's host region (`ISSUE_RD`, `COMPL_WR`,
//! `EVENT_DONE`, `RETIRED`, `LAST_TAG`) and every field of every completion entry header. It can also stop
//! consuming a queue (a hang). It never writes outside the memory the driver mapped for it, and only where the
//! contract lets it (the completion ring's free space, the words): what it lies about is values. It behaves as
//! the geometry it reported (banks, grid, memory sizes), and the one lie it does not tell is an `ISSUE_RD` between
//! its true read pointer and the doorbell: no host can tell either from the truth, and they only corrupt the
//! device's own results.
//!
//! [`run`] opens a [`Device`] on one, then lets the same script choose a sequence of calls (writes, blocking and
//! owned reads, finishes, events, fills, resets) and checks the driver's promises: no panic (the fuzzer's check),
//! every error of a kind the contract allows for a lying device, a read that succeeds returns exactly what was
//! written, and close returns OK. It is not how a device behaves; it is everything a broken one could report.
//!
//! Hand-written rather than an emulator option: the emulator injects one chosen fault at a time, a fuzzer needs
//! every value of every word under its control and a run that does not depend on thread timing.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ttdrv::contract::records::{self, Body, ComplKind, FIXED_LEN, PAYLOAD_OFFSET, RecordSlot};
use ttdrv::contract::regs::{self, BarOffset, Caps, QueueStatus, Status, global, host, queue as qreg};
use ttdrv::contract::{CONTRACT_MAJOR, CONTRACT_MINOR, Iova, MAX_RING, MIN_RING, Memory, RECORD_ALIGN, RING_OFFSET};
use ttdrv::error::ErrorKind;
use ttdrv::transport::{DmaMemory, Transport, TransportError};
use ttdrv::{Buffer, BufferSpec, DType, Device, DeviceParams, MemoryConfig};

/// The bytes that decide what the device reports and what the driver is asked to do. Once they run out, everything
/// is honest and no more calls are made.
pub struct Script {
    data: Vec<u8>,
    pos: usize,
}

impl Script {
    /// A script over `data`.
    pub fn new(data: &[u8]) -> Script {
        Script { data: data.to_vec(), pos: 0 }
    }

    /// The next byte, if any.
    pub fn byte(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied();
        self.pos += b.is_some() as usize;
        b
    }

    fn u32(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for i in 0..4 {
            v |= (self.byte()? as u32) << (8 * i);
        }
        Some(v)
    }

    /// What the device reports where the truth is `honest`: one byte decides — mostly the truth; a flipped bit; the
    /// truth moved by a few records (or a few bytes); or any value at all.
    pub fn word(&mut self, honest: u32) -> u32 {
        match self.byte() {
            None => honest,
            Some(b) if b < 0xE0 => honest,
            Some(b) if b < 0xF0 => honest ^ (1 << (self.byte().unwrap_or(0) % 32)),
            Some(b) if b < 0xF8 => {
                let d = self.byte().unwrap_or(1) as i8 as i32;
                let scale = if b & 1 == 0 { RECORD_ALIGN as i32 } else { 1 };
                honest.wrapping_add(d.wrapping_mul(scale) as u32)
            }
            Some(_) => self.u32().unwrap_or(honest),
        }
    }

    /// True once every byte is used.
    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// Device memory is kept in pages of this many bytes, allocated when first written.
const PAGE: u64 = 4096;
/// Honest probe values: a small device.
const BANKS: u32 = 2;
const BANK_SIZE: u64 = 64 << 20;
const GRID: u32 = 2 | 2 << 16;

/// One queue's device state.
#[derive(Default)]
struct Queue {
    base: u64,
    issue_size: u32,
    compl_size: u32,
    enabled: bool,
    prof_base: u64,
    prof_slots: u32,
    /// The host region, while enabled and mapped: start and length in this process.
    region: Option<(usize, usize)>,
    doorbell: u32,
    compl_rd: u32,
    rd: u32,
    compl_wr: u32,
    retired: u32,
    event: u32,
    /// Stopped consuming (a hang the script chose), until reset or re-enable.
    hung: bool,
    /// What the queue registers read back: decided when records retire.
    shown_issue_size: u32,
    shown_status: u32,
    shown_retired: u32,
}

struct Model {
    script: Script,
    /// Probe registers: decided at their first read, then stable.
    probe: HashMap<u32, u32>,
    status: u32,
    fault: [u32; 6],
    faulted: bool,
    /// IOVA -> (address in this process, length) of each mapping.
    maps: Vec<(u64, usize, usize)>,
    queues: Vec<Queue>,
    /// (memory, unit, page) -> bytes.
    mem: HashMap<(u8, u16, u64), Box<[u8; PAGE as usize]>>,
    time: u64,
}

/// A device whose every reported value comes from a [`Script`] (module doc).
pub struct LyingDevice {
    model: Mutex<Model>,
}

// SAFETY: the addresses the model keeps are those of memory the driver mapped for the device (dma_map) and are
// forgotten when it is unmapped; they are only dereferenced under the model's lock, inside their mapping.
unsafe impl Send for LyingDevice {}
// SAFETY: as above; every access goes through the mutex.
unsafe impl Sync for LyingDevice {}

impl LyingDevice {
    /// A device following `script`.
    pub fn new(script: Script) -> LyingDevice {
        let queues = (0..2).map(|_| Queue::default()).collect();
        LyingDevice {
            model: Mutex::new(Model {
                script,
                probe: HashMap::new(),
                status: Status::READY.bits(),
                fault: [0; 6],
                faulted: false,
                maps: Vec::new(),
                queues,
                mem: HashMap::new(),
                time: 0,
            }),
        }
    }

    /// Takes the next byte of the script (the driver's calls are chosen from the same bytes).
    pub fn choice(&self) -> Option<u8> {
        self.lock().script.byte()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Model {
    fn honest_probe(off: BarOffset) -> u32 {
        match off {
            global::ID => regs::ID_VALUE,
            global::VERSION => (CONTRACT_MAJOR as u32) << 16 | CONTRACT_MINOR as u32,
            global::CAPS => (Caps::PROFILING | Caps::TRACE).bits(),
            global::NUM_QUEUES => 2,
            global::DRAM_BANKS => BANKS,
            global::DRAM_BANK_SIZE_LO => BANK_SIZE as u32,
            global::DRAM_BANK_SIZE_HI => (BANK_SIZE >> 32) as u32,
            global::DRAM_ALIGN => 64,
            global::GRID => GRID,
            global::L1_SIZE => 1 << 20,
            global::L1_ALIGN => 16,
            global::L1_BASE => 64 << 10,
            global::RECORD_ALIGN => RECORD_ALIGN as u32,
            global::DMA_BITS => 48,
            global::KERNELS => ttdrv::contract::kernel::BuiltinKernel::MASK,
            _ => 0,
        }
    }

    /// The address in this process of `len` bytes at `iova`, if one mapping holds them.
    fn host(&self, iova: u64, len: usize) -> Option<(usize, usize)> {
        self.maps.iter().find_map(|&(start, addr, mlen)| {
            let off = iova.checked_sub(start)?;
            (off.checked_add(len as u64)? <= mlen as u64).then_some((addr + off as usize, len))
        })
    }

    /// Writes a device-written word of queue `q`'s host region.
    fn put_word(&self, q: usize, off: usize, v: u32) {
        if let Some((addr, len)) = self.queues[q].region
            && off + 4 <= len
        {
            // SAFETY: the word is inside the mapped region (checked above), 4-byte aligned (the region is 4 KiB
            // aligned, the contract's offsets are multiples of 64); the driver only reads it atomically.
            unsafe { AtomicU32::from_ptr((addr + off) as *mut u32) }.store(v, Ordering::Release);
        }
    }

    fn fault(&mut self, code: u32, addr: u64, q: usize, tag: u32, opcode: u32) {
        if !self.faulted {
            self.fault = [code, addr as u32, (addr >> 32) as u32, q as u32, tag, opcode];
        }
        self.faulted = true;
        self.status |= Status::FAULT.bits();
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            *q = Queue::default();
        }
        self.faulted = false;
        self.fault = [0; 6];
        // Always ready again (a never-ready device only costs the driver's 1 s wait); the other bits are the
        // script's.
        self.status = (self.script.word(Status::READY.bits()) | Status::READY.bits()) & !Status::RESETTING.bits();
        if self.status & Status::FAULT.bits() != 0 {
            self.fault = [self.script.word(0), self.script.word(0), 0, self.script.word(0), self.script.word(0), 0];
        }
    }

    fn enable(&mut self, q: usize) {
        let ok = |s: u32| s.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&(s as usize));
        let (base, issue, compl) = (self.queues[q].base, self.queues[q].issue_size, self.queues[q].compl_size);
        if !ok(issue) || !ok(compl) || base % 4096 != 0 {
            self.fault(6, base, q, 0, 0);
            return;
        }
        let region = self.host(base, RING_OFFSET + issue as usize + compl as usize);
        let qs = &mut self.queues[q];
        *qs = Queue {
            base,
            issue_size: issue,
            compl_size: compl,
            prof_base: qs.prof_base,
            prof_slots: qs.prof_slots,
            enabled: true,
            region,
            shown_issue_size: issue,
            shown_status: QueueStatus::ENABLED.bits(),
            ..Queue::default()
        };
        if region.is_none() {
            self.fault(1, base, q, 0, 0);
            return;
        }
        for off in [host::ISSUE_RD, host::COMPL_WR, host::EVENT_DONE, host::RETIRED, host::LAST_TAG] {
            let v = self.script.word(0);
            self.put_word(q, off, v);
        }
    }

    /// Runs queue `q`'s records up to its doorbell, until one cannot complete (no completion space) or the queue
    /// stops.
    fn process(&mut self, q: usize) {
        loop {
            let qs = &self.queues[q];
            if self.faulted || !qs.enabled || qs.hung || qs.region.is_none() || qs.rd == qs.doorbell {
                return;
            }
            if self.script.byte() == Some(0xFF) {
                // The script hangs this queue: it stops consuming.
                self.queues[q].hung = true;
                return;
            }
            match self.step(q) {
                Ok(true) => {}
                Ok(false) => return,
                Err((code, addr, tag, opcode)) => {
                    self.fault(code, addr, q, tag, opcode);
                    return;
                }
            }
        }
    }

    /// One record: `Ok(false)` if it waits for completion space.
    fn step(&mut self, q: usize) -> Result<bool, (u32, u64, u32, u32)> {
        let qs = &self.queues[q];
        let (addr, _) = qs.region.expect("checked by the caller");
        let size = qs.issue_size;
        let avail = qs.doorbell.wrapping_sub(qs.rd);
        if avail % RECORD_ALIGN as u32 != 0 || avail > size {
            return Err((6, qs.doorbell as u64, 0, 0));
        }
        let off = (qs.rd & (size - 1)) as usize;
        let rec = addr + RING_OFFSET + off;
        let mut fixed = [0u8; FIXED_LEN];
        // SAFETY: `off` is inside the issue ring (masked), which holds at least FIXED_LEN bytes past any 64-byte
        // aligned offset; the host wrote them before the doorbell.
        unsafe { std::ptr::copy_nonoverlapping(rec as *const u8, fixed.as_mut_ptr(), FIXED_LEN) };
        let (h, body) = records::decode(&fixed).map_err(|_| (2, off as u64, 0, fixed[0] as u32))?;
        let len = h.length as usize;
        if len as u32 > avail || off + len > size as usize {
            return Err((2, off as u64, h.tag, h.opcode as u32));
        }
        let bad = |code: u32, a: u64| (code, a, h.tag, h.opcode as u32);
        match body {
            Body::WriteLinear(x) => {
                // SAFETY: decode checked the payload (x.len bytes) lies inside the record, inside the ring.
                let data = unsafe { std::slice::from_raw_parts((rec + PAYLOAD_OFFSET) as *const u8, x.len as usize) };
                self.mem_write(x.mem, x.unit, x.offset, data).map_err(|a| bad(3, a))?;
            }
            Body::WritePaged(x) => {
                for i in 0..x.num_pages {
                    let (unit, at) = self.page(x.mem, x.base, x.page_stride, x.start_page.wrapping_add(i));
                    let from = rec + PAYLOAD_OFFSET + i as usize * x.page_size as usize;
                    // SAFETY: decode checked every page's payload lies inside the record, inside the ring.
                    let data = unsafe { std::slice::from_raw_parts(from as *const u8, x.page_size as usize) };
                    self.mem_write(x.mem, unit, at, data).map_err(|a| bad(3, a))?;
                }
            }
            Body::ReadLinear(x) => {
                let data = self.mem_read(x.mem, x.unit, x.offset, x.len).map_err(|a| bad(3, a))?;
                if !self.complete(q, h.tag, &data).map_err(|()| bad(2, off as u64))? {
                    return Ok(false);
                }
            }
            Body::ReadPaged(x) => {
                let mut data = Vec::new();
                for i in 0..x.num_pages {
                    let (unit, at) = self.page(x.mem, x.base, x.page_stride, x.start_page.wrapping_add(i));
                    data.extend(self.mem_read(x.mem, unit, at, x.page_size as u64).map_err(|a| bad(3, a))?);
                }
                if !self.complete(q, h.tag, &data).map_err(|()| bad(2, off as u64))? {
                    return Ok(false);
                }
            }
            Body::EventRecord(e) => self.queues[q].event = e.event_id,
            // Kernels, waits and traces do nothing here: this device lies about what it did, and the checks in
            // `run` do not depend on results computed on the device.
            Body::Pad | Body::Launch(_) | Body::EventWait(_) | Body::ExecTrace(_) => {}
            // This device maps no memory but the queue regions (its transport refuses registered memory), so a
            // transfer to or from host memory at any IOVA is an IOMMU fault (contract §4.2.10).
            Body::WriteHost(x) | Body::ReadHost(x) => return Err(bad(1, x.iova)),
        }
        self.retire(q, h.tag, len as u32, matches!(body, Body::EventRecord(_)));
        Ok(true)
    }

    /// A probe register as the device reported it (its lie, if it told one): the device behaves as it claims to
    /// be — a device that reports one geometry and uses another computes wrong addresses, which no host can see.
    fn reported(&self, off: BarOffset) -> u32 {
        self.probe.get(&off.0).copied().unwrap_or_else(|| Model::honest_probe(off))
    }

    /// The unit and offset of interleaved page `page` (contract §4.2), in the geometry the device reported.
    fn page(&self, mem: Memory, base: u64, stride: u32, page: u32) -> (u16, u64) {
        let grid = self.reported(global::GRID);
        let units = match mem {
            Memory::Dram => self.reported(global::DRAM_BANKS),
            Memory::L1 => (grid & 0xFF) * ((grid >> 16) & 0xFF),
        }
        .max(1);
        ((page % units) as u16, base.wrapping_add((page / units) as u64 * stride as u64))
    }

    /// Bytes of one unit of `mem`, as the device reported.
    fn unit_size(&self, mem: Memory) -> u64 {
        match mem {
            Memory::Dram => {
                self.reported(global::DRAM_BANK_SIZE_LO) as u64
                    | (self.reported(global::DRAM_BANK_SIZE_HI) as u64) << 32
            }
            Memory::L1 => self.reported(global::L1_SIZE) as u64,
        }
    }

    /// Writes `data` at `at` in a unit; `Err(at)` (an `ADDRESS` fault) if it leaves the unit.
    fn mem_write(&mut self, mem: Memory, unit: u16, at: u64, data: &[u8]) -> Result<(), u64> {
        at.checked_add(data.len() as u64).filter(|e| *e <= self.unit_size(mem)).ok_or(at)?;
        let mut done = 0;
        while done < data.len() {
            let a = at + done as u64;
            let within = (a % PAGE) as usize;
            let n = (PAGE as usize - within).min(data.len() - done);
            let page = self.mem.entry((mem as u8, unit, a / PAGE)).or_insert_with(|| Box::new([0; PAGE as usize]));
            page[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }

    /// Reads `len` bytes at `at` in a unit (never-written bytes are 0); `Err(at)` if they leave the unit.
    fn mem_read(&self, mem: Memory, unit: u16, at: u64, len: u64) -> Result<Vec<u8>, u64> {
        at.checked_add(len).filter(|e| *e <= self.unit_size(mem)).ok_or(at)?;
        let mut out = vec![0u8; len as usize];
        let mut done = 0;
        while done < out.len() {
            let a = at + done as u64;
            let within = (a % PAGE) as usize;
            let n = (PAGE as usize - within).min(out.len() - done);
            if let Some(p) = self.mem.get(&(mem as u8, unit, a / PAGE)) {
                out[done..done + n].copy_from_slice(&p[within..within + n]);
            }
            done += n;
        }
        Ok(out)
    }

    /// Writes one `READ_DATA` entry (after a `PAD` to the ring's end if it would wrap) into free completion
    /// space, its header fields as the script says. `Ok(false)` when there is no space yet.
    fn complete(&mut self, q: usize, tag: u32, data: &[u8]) -> Result<bool, ()> {
        let qs = &self.queues[q];
        let (addr, _) = qs.region.expect("enabled");
        let size = qs.compl_size as u64;
        let entry = records::compl_len(data.len()) as u64;
        let off = qs.compl_wr as u64 & (size - 1);
        let pad = if off + entry > size { size - off } else { 0 };
        let used = qs.compl_wr.wrapping_sub(qs.compl_rd) as u64;
        if entry > size / 4 {
            // The host asked for more than one entry may hold (contract §4.2.4).
            return Err(());
        }
        if used + pad + entry > size {
            return Ok(false);
        }
        let ring = addr + RING_OFFSET + qs.issue_size as usize;
        if pad > 0 {
            // SAFETY: [off, size) is inside the completion ring and free (checked above).
            let mut slot = unsafe { RecordSlot::from_raw((ring + off as usize) as *mut u8, pad as usize) };
            records::encode_compl(&mut slot, ComplKind::Pad, 0, 0);
            let (kind, length) = (self.script.word(ComplKind::Pad as u32), self.script.word(pad as u32));
            slot.put_u8(0, kind as u8);
            slot.put_u32(4, length);
            self.queues[q].compl_wr = self.queues[q].compl_wr.wrapping_add(pad as u32);
        }
        let off = self.queues[q].compl_wr as u64 & (size - 1);
        let (kind, length) = (self.script.word(ComplKind::ReadData as u32), self.script.word(entry as u32));
        let (tag, data_len) = (self.script.word(tag), self.script.word(data.len() as u32));
        // A shorter length that is a whole number of 64-byte lines is a real short entry: the device writes only
        // that much (the data truncated) and the next entry follows it. Any other length is a lie in the header of
        // an entry of the true size.
        let short = length as u64 >= FIXED_LEN as u64 && (length as u64) < entry && length as usize % RECORD_ALIGN == 0;
        let phys = if short { length as u64 } else { entry };
        // SAFETY: the entry is inside the completion ring (no wrap, after the pad; `phys` <= `entry`) and free.
        let mut slot = unsafe { RecordSlot::from_raw((ring + off as usize) as *mut u8, phys as usize) };
        records::encode_compl(&mut slot, ComplKind::ReadData, tag, data_len);
        let keep = data.len().min(phys as usize - PAYLOAD_OFFSET);
        slot.put_bytes(PAYLOAD_OFFSET, &data[..keep]);
        slot.put_u8(0, kind as u8);
        slot.put_u32(4, length);
        self.queues[q].compl_wr = self.queues[q].compl_wr.wrapping_add(phys as u32);
        Ok(true)
    }

    /// Retires a record: publishes the words (as the script says), and decides what the registers read back.
    fn retire(&mut self, q: usize, tag: u32, len: u32, event: bool) {
        let qs = &mut self.queues[q];
        qs.rd = qs.rd.wrapping_add(len);
        qs.retired = qs.retired.wrapping_add(1);
        let (rd, compl_wr, retired, ev, doorbell) = (qs.rd, qs.compl_wr, qs.retired, qs.event, qs.doorbell);
        let words = [(host::COMPL_WR, compl_wr), (host::ISSUE_RD, rd), (host::LAST_TAG, tag), (host::RETIRED, retired)];
        for (off, v) in words {
            let mut shown = self.script.word(v);
            // Never claim records consumed that are not: a read pointer between the truth and the doorbell is a lie
            // no host can tell from the truth, and it only corrupts the device's own input (the host may then
            // overwrite records the device has yet to read). Every other value is fair game.
            if off == host::ISSUE_RD && shown != rd && doorbell.wrapping_sub(shown) < doorbell.wrapping_sub(rd) {
                shown = rd;
            }
            self.put_word(q, off, shown);
        }
        if event {
            let v = self.script.word(ev);
            self.put_word(q, host::EVENT_DONE, v);
        }
        // The RETIRED register follows the truth; then one byte decides whether a register changes now, and which
        // (a changed STATUS, fault register or queue register stays changed until a reset or re-enable).
        self.queues[q].shown_retired = retired;
        if let Some(b) = self.script.byte()
            && b >= 0xF0
        {
            match b & 7 {
                0 => self.status = self.script.word(Status::READY.bits()) | Status::READY.bits(),
                1 => {
                    let v = self.script.word(self.queues[q].issue_size);
                    self.queues[q].shown_issue_size = v;
                }
                2 => self.queues[q].shown_retired = self.script.word(retired),
                3 => self.queues[q].shown_status = self.script.word(QueueStatus::ENABLED.bits()),
                k => self.fault[(k - 4) as usize] = self.script.word(0),
            }
        }
    }
}

impl Transport for LyingDevice {
    fn name(&self) -> &str {
        "lying"
    }

    fn read32(&self, off: BarOffset) -> u32 {
        let mut m = self.lock();
        if let Some((q, reg)) = regs::decode_queue_reg(off) {
            let Some(qs) = m.queues.get(q as usize) else {
                return 0;
            };
            return match reg {
                qreg::BASE_LO => qs.base as u32,
                qreg::BASE_HI => (qs.base >> 32) as u32,
                qreg::ISSUE_SIZE => qs.shown_issue_size,
                qreg::COMPL_SIZE => qs.compl_size,
                qreg::CTRL => qs.enabled as u32,
                qreg::STATUS => qs.shown_status,
                qreg::EVENT => qs.event,
                qreg::RETIRED => qs.shown_retired,
                _ => 0,
            };
        }
        match off {
            global::STATUS => m.status,
            global::FAULT_CODE => m.fault[0],
            global::FAULT_ADDR_LO => m.fault[1],
            global::FAULT_ADDR_HI => m.fault[2],
            global::FAULT_QUEUE => m.fault[3],
            global::FAULT_TAG => m.fault[4],
            global::FAULT_OPCODE => m.fault[5],
            global::TIME_LO => {
                m.time += 1000;
                m.time as u32
            }
            global::TIME_HI => (m.time >> 32) as u32,
            global::SCRATCH | global::RESET => 0,
            off => {
                if let Some(&v) = m.probe.get(&off.0) {
                    return v;
                }
                let v = m.script.word(Model::honest_probe(off));
                m.probe.insert(off.0, v);
                v
            }
        }
    }

    fn write32(&self, off: BarOffset, val: u32) {
        let mut m = self.lock();
        if let Some((q, reg)) = regs::decode_queue_reg(off) {
            let q = q as usize;
            if q >= m.queues.len() {
                return;
            }
            let qs = &mut m.queues[q];
            match reg {
                qreg::BASE_LO => qs.base = (qs.base & !0xFFFF_FFFF) | val as u64,
                qreg::BASE_HI => qs.base = (qs.base & 0xFFFF_FFFF) | (val as u64) << 32,
                qreg::ISSUE_SIZE => qs.issue_size = val,
                qreg::COMPL_SIZE => qs.compl_size = val,
                qreg::PROF_BASE_LO => qs.prof_base = (qs.prof_base & !0xFFFF_FFFF) | val as u64,
                qreg::PROF_BASE_HI => qs.prof_base = (qs.prof_base & 0xFFFF_FFFF) | (val as u64) << 32,
                qreg::PROF_SLOTS => qs.prof_slots = val,
                qreg::CTRL => {
                    let was = qs.enabled;
                    if val & 1 == 0 {
                        qs.enabled = false;
                        qs.shown_status = 0;
                    } else if !was {
                        m.enable(q);
                    }
                }
                qreg::ISSUE_WR => {
                    qs.doorbell = val;
                    m.process(q);
                }
                qreg::COMPL_RD => {
                    qs.compl_rd = val;
                    m.process(q);
                }
                _ => {}
            }
            return;
        }
        if off == global::RESET && val == regs::RESET_MAGIC {
            m.reset();
        }
    }

    fn iova_ranges(&self) -> Vec<Range<u64>> {
        std::iter::once(0..u64::MAX).collect()
    }

    fn dma_map(&self, mem: &DmaMemory, iova: Iova) -> Result<(), TransportError> {
        self.lock().maps.push((iova.0, mem.vaddr as usize, mem.len));
        Ok(())
    }

    fn dma_unmap(&self, iova: Iova, _len: u64) -> Result<(), TransportError> {
        let mut m = self.lock();
        let Some(i) = m.maps.iter().position(|&(s, ..)| s == iova.0) else {
            return Ok(());
        };
        let (start, _, len) = m.maps.remove(i);
        // Never touch it again: forget every queue region inside it.
        for q in &mut m.queues {
            if (start..start + len as u64).contains(&q.base) {
                q.region = None;
                q.enabled = false;
            }
        }
        Ok(())
    }

    fn reset(&self) -> Result<(), TransportError> {
        self.lock().reset();
        Ok(())
    }

    fn irq_vectors(&self) -> u32 {
        0
    }

    fn wait_irq(&self, _vector: u32, _timeout: Duration) -> Result<bool, TransportError> {
        // Nothing happens between calls: the device only acts when the driver writes a register.
        Ok(false)
    }

    fn needs_pinned_memory(&self) -> bool {
        false
    }
}

/// Error kinds a call may return when the device lies: it broke the contract, did not finish in time, faulted (or
/// was reset behind the driver); or, as consequences, a buffer's contents were lost or a write stopped part-way.
const ALLOWED: [ErrorKind; 4] =
    [ErrorKind::Protocol, ErrorKind::Timeout, ErrorKind::DeviceFault, ErrorKind::ContentsUndefined];
/// At open also: not a ttdrv device, or one this driver cannot use.
const ALLOWED_AT_OPEN: [ErrorKind; 5] =
    [ErrorKind::Protocol, ErrorKind::Timeout, ErrorKind::NotFound, ErrorKind::Unsupported, ErrorKind::DeviceFault];

/// The value of a call that succeeded; `None` (and a count in `refused`) for an allowed error; a panic for any other.
#[track_caller]
fn check<T>(r: ttdrv::Result<T>, what: &str, refused: &mut u32) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.kind() == ErrorKind::ContentsUndefined => {
            *refused += 1;
            None
        }
        Err(e) if ALLOWED.contains(&e.kind()) => None,
        Err(e) => panic!("{what}: an error of kind {:?} from a lying device: {e}", e.kind()),
    }
}

/// What a [`run`] did: calls that succeeded and failed, and reads whose data was checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The device opened.
    pub opened: bool,
    /// Calls that returned OK.
    pub ok: u32,
    /// Calls that failed because of what the device did: a protocol violation, a timeout or a fault.
    pub failed: u32,
    /// Reads refused because the buffer's contents were lost (a reset, a write stopped part-way): a consequence of
    /// the script's resets, not of a lie.
    pub refused: u32,
    /// Successful reads whose data was compared with what was written.
    pub reads_checked: u32,
}

/// Opens a device on a [`LyingDevice`] following `data` and makes the calls the same bytes choose, checking the
/// driver's promises (module doc). Panics when one is broken.
pub fn run(data: &[u8]) -> Summary {
    let mut sum = Summary::default();
    let dev_model = Arc::new(LyingDevice::new(Script::new(data)));
    let profiling = data.first().is_some_and(|b| b & 1 == 1);
    let p = DeviceParams {
        num_command_queues: 2,
        issue_ring_size: MIN_RING as u32,
        completion_ring_size: MIN_RING as u32,
        hugepages: false,
        timeout: Duration::from_millis(2),
        profiling,
        ..DeviceParams::default()
    };
    let t: Arc<dyn Transport> = dev_model.clone();
    let dev = match Device::open_transport(t, &p) {
        Ok(d) => d,
        Err(e) if ALLOWED_AT_OPEN.contains(&e.kind()) => return sum,
        Err(e) => panic!("open: an error of kind {:?} from a lying device: {e}", e.kind()),
    };
    // Buffer i lives on queue i % 2, so a read that succeeds follows that buffer's last write on the same queue.
    let shapes = [(3u32, 17u32), (40, 96), (5, 1000)];
    let mut bufs: Vec<(Buffer, Option<Vec<u8>>)> = Vec::new();
    for (rows, cols) in shapes {
        let b = dev.allocate(&BufferSpec::new(rows, cols, DType::Float32, MemoryConfig::DRAM)).expect("allocate");
        bufs.push((b, None));
    }
    sum.opened = true;
    let mut seed = 1u8;
    // Counts a call's outcome (allowed errors only: `check` panics on the others).
    let (mut ok_calls, mut failed_calls, mut checked, mut refused) = (0u32, 0u32, 0u32, 0u32);
    let mut tally = |ok: bool| {
        if ok { ok_calls += 1 } else { failed_calls += 1 }
    };
    for _ in 0..64 {
        let Some(op) = dev_model.choice() else { break };
        let i = (op >> 4) as usize % bufs.len();
        let cq = (i % 2) as u16;
        let (b, expected) = &mut bufs[i];
        let n = b.spec().host_bytes() as usize;
        match op % 8 {
            0 | 1 => {
                seed = seed.wrapping_add(1);
                let data: Vec<u8> = (0..n).map(|k| (k as u8).wrapping_mul(31) ^ seed).collect();
                *expected = check(b.write(cq, &data, op % 8 == 1), "write", &mut refused).map(|()| data);
                tally(expected.is_some());
            }
            2 => {
                let mut out = vec![0u8; n];
                let ok = check(b.read(cq, &mut out), "read", &mut refused).is_some();
                tally(ok);
                if ok && let Some(want) = expected {
                    assert!(out == *want, "a read that succeeded returned other data than was written");
                    checked += 1;
                }
            }
            3 => {
                let r = check(b.read_owned(cq, vec![0; n]), "read_owned", &mut refused);
                tally(r.is_some());
                if let Some(r) = r {
                    if op & 8 != 0 {
                        drop(r);
                    } else {
                        let out = check(r.wait(), "owned read wait", &mut refused);
                        tally(out.is_some());
                        if let (Some(out), Some(want)) = (out, expected) {
                            assert!(out == *want, "an owned read that succeeded returned other data than was written");
                            checked += 1;
                        }
                    }
                }
            }
            4 => tally(check(dev.finish(cq), "finish", &mut refused).is_some()),
            5 => {
                let ev = dev.create_event().expect("create_event");
                let recorded = check(ev.record(cq), "record", &mut refused).is_some();
                tally(recorded);
                if recorded {
                    let done = if op & 8 != 0 {
                        check(ev.query(), "query", &mut refused).is_some()
                    } else {
                        check(ev.synchronize(), "synchronize", &mut refused).is_some()
                    };
                    tally(done);
                }
            }
            6 => {
                // The model runs no kernels: the buffer's data is unknown afterwards. A KERNELS register that
                // lacks fill makes it unsupported, which is the register's meaning, not a lie to catch.
                match dev.fill(cq, b, 1.0) {
                    Err(e) if e.kind() == ErrorKind::Unsupported => tally(false),
                    r => tally(check(r, "fill", &mut refused).is_some()),
                }
                *expected = None;
            }
            _ => {
                match dev.reset() {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::Timeout => {}
                    Err(e) => panic!("reset: {e}"),
                }
                for (_, e) in &mut bufs {
                    *e = None;
                }
            }
        }
    }
    drop(bufs);
    dev.close().expect("close returns OK whatever the device did");
    sum.reads_checked = checked;
    (sum.ok, sum.failed, sum.refused) = (ok_calls, failed_calls - refused, refused);
    sum
}
