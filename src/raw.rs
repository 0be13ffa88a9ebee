//! One command queue driven record by record, below the device layer.
//!
//! This is the whole surface the ring layer exposes outside the driver, kept deliberately small: benchmarks use it
//! to measure the ring's own cost (the "bare 64-byte ring write" reference of `ttdrv bench`), and tests use it to
//! exercise the ring protocol and the emulated device directly (stall a queue on purpose, reach device memory
//! without the device layer). It checks nothing about device state, owns no buffers, and is not how programs
//! should drive a device: use [`crate::Device`].
//!
//! The DMA layer's host memory ([`HostMemory`], [`MemoryOptions`]), IOVA allocator and streaming copy are here for
//! the same users: the VFIO bring-up test (`tests/vfio-qemu`) maps them for a real kernel's IOMMU, and the transfer
//! benchmarks compare against the copy.

pub use crate::dma::copy::{NT_THRESHOLD, copy_to_dma};
pub use crate::dma::{Backing, HostMemory, IovaAllocator, LockPolicy, MemoryOptions};
use crate::queue::{Completer, Issuer, RingSizes, Rings, Scatter};
use crate::transport::Transport;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ttdrv_contract::records::{self, FIXED_LEN, Linear, PAYLOAD_OFFSET, RecordMeta, RecordSlot};
use ttdrv_contract::regs::{self, Status, global, host};
use ttdrv_contract::{Iova, Memory};

/// Errors of a raw queue: what went wrong, in words (a raw queue is a test and benchmark tool).
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct RawError {
    /// The queue.
    pub queue: u16,
    /// What went wrong, naming the queue.
    pub what: String,
}

impl RawError {
    fn new(queue: u16, what: impl std::fmt::Display) -> RawError {
        RawError { queue, what: format!("raw queue {queue}: {what}") }
    }
}

/// One queue's rings, producer and consumer, on a transport, with no device layer above them.
pub struct RawQueue {
    t: Arc<dyn Transport>,
    rings: Arc<Rings>,
    issuer: Issuer,
    completer: Completer,
    id: u16,
    patience: Duration,
}

impl RawQueue {
    /// Allocates (4 KiB pages), maps and enables queue `id`'s rings, with IOVAs taken from `iova_window` (keep it
    /// clear of any `Device` opened on the same transport, whose IOVAs start at 1 MiB), without profile slots.
    pub fn new(
        t: &Arc<dyn Transport>,
        iova_window: Range<u64>,
        id: u16,
        issue: u32,
        completion: u32,
    ) -> Result<RawQueue, RawError> {
        let opts = MemoryOptions { hugepages: false, ..MemoryOptions::default() };
        RawQueue::with_memory(t, iova_window, id, issue, completion, &opts)
    }

    /// As [`RawQueue::new`], with the host region's memory chosen by `opts` (hugepages or not, locking).
    pub fn with_memory(
        t: &Arc<dyn Transport>,
        iova_window: Range<u64>,
        id: u16,
        issue: u32,
        completion: u32,
        opts: &MemoryOptions,
    ) -> Result<RawQueue, RawError> {
        let sizes = RingSizes { issue, completion, profile_slots: 0 };
        sizes.validate().map_err(|e| RawError::new(id, e))?;
        let dma_bits = t.read32(global::DMA_BITS).min(64);
        let iovas = Arc::new(Mutex::new(IovaAllocator::new(&[iova_window], dma_bits)));
        let rings = Arc::new(Rings::new(id, t, &iovas, sizes, opts).map_err(|e| RawError::new(id, e))?);
        rings.enable(t.as_ref());
        Ok(RawQueue {
            t: t.clone(),
            issuer: Issuer::new(rings.clone()),
            completer: Completer::new(rings.clone()),
            rings,
            id,
            patience: Duration::from_secs(20),
        })
    }

    /// How long [`RawQueue::wait`] waits before giving up (default 20 s).
    pub fn set_patience(&mut self, d: Duration) {
        self.patience = d;
    }

    /// The queue number.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The transport.
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.t
    }

    /// Issue ring bytes.
    pub fn issue_size(&self) -> u32 {
        self.rings.sizes().issue
    }

    /// Largest read one record may ask for (contract §4.2.4).
    pub fn max_read(&self) -> usize {
        self.rings.sizes().max_read()
    }

    /// IOVA of the queue's host region (contract §5).
    pub fn region_iova(&self) -> Iova {
        self.rings.iova()
    }

    /// Start of the queue's host region in this process. The device writes parts of it at any time: access it
    /// only with volatile or atomic operations.
    pub fn region_ptr(&self) -> *mut u8 {
        self.rings.region().ptr()
    }

    /// Bytes of the host region.
    pub fn region_len(&self) -> usize {
        self.rings.region().len()
    }

    /// What backs the host region (hugepages or 4 KiB pages).
    pub fn backing(&self) -> Backing {
        self.rings.region().backing()
    }

    /// A device-written word of the host region (contract §5), read with acquire ordering.
    pub fn device_word(&self, off: usize) -> u32 {
        self.rings.device_word(off)
    }

    /// The device-written `ISSUE_RD` word.
    pub fn issue_rd(&self) -> u32 {
        self.device_word(host::ISSUE_RD)
    }

    /// The host's free-running issue write pointer.
    pub fn wr(&self) -> u32 {
        self.issuer.wr()
    }

    /// True if a record of `len` bytes fits in the issue ring now; fails if the device wrote an `ISSUE_RD` the
    /// contract does not allow.
    pub fn has_room(&mut self, len: usize) -> Result<bool, RawError> {
        self.issuer.has_room(len).map_err(|e| RawError::new(self.id, e))
    }

    /// Reads delivered into their destinations so far.
    pub fn delivered(&self) -> u64 {
        self.completer.delivered()
    }

    /// The fault registers as text, if the device has faulted.
    pub fn device_fault(&self) -> Option<String> {
        fault_report(self.t.as_ref())
    }

    /// Consumes completion entries, delivering read data. Errors are completion-ring protocol violations.
    pub fn drain_completions(&mut self) -> Result<usize, RawError> {
        // The protocol error names the queue itself.
        self.completer.drain(self.t.as_ref()).map_err(|e| RawError { queue: self.id, what: e.to_string() })
    }

    /// Drains completions until `done()` holds; fails on a device fault, a protocol violation or after the
    /// patience (default 20 s).
    pub fn wait(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) -> Result<(), RawError> {
        let t0 = Instant::now();
        loop {
            self.drain_completions()?;
            if done(self) {
                return Ok(());
            }
            if let Some(f) = self.device_fault() {
                return Err(RawError::new(self.id, format!("{f} while waiting for {what}")));
            }
            if t0.elapsed() > self.patience {
                return Err(RawError::new(self.id, format!("timed out after {:?} waiting for {what}", self.patience)));
            }
            std::thread::yield_now();
        }
    }

    /// Writes one record of `len` bytes (a multiple of 64, at most a quarter of the issue ring) that `encode`
    /// fills, waiting for room (and draining completions meanwhile). Returns the record's tag. The device sees it
    /// after the next [`RawQueue::publish`].
    pub fn push(&mut self, len: usize, encode: impl FnOnce(&mut RecordSlot<'_>, RecordMeta)) -> Result<u32, RawError> {
        if len % FIXED_LEN != 0 || len == 0 || len > self.rings.sizes().max_record() {
            return Err(RawError::new(
                self.id,
                format!("a {len}-byte record is not a multiple of 64 between 64 and a quarter of the ring"),
            ));
        }
        if !self.has_room(len)? {
            self.publish();
            let mut violation = None;
            self.wait("issue ring room", |q| match q.has_room(len) {
                Ok(room) => room,
                Err(e) => violation.replace(e).is_none(),
            })?;
            if let Some(e) = violation {
                return Err(e);
            }
        }
        Ok(self.issuer.push(len, RecordMeta::default(), encode))
    }

    /// Writes one 64-byte `PAD` record if it fits now, without waiting: the cheapest record, for measuring the
    /// ring itself. Returns false when the ring is full; fails as [`RawQueue::has_room`].
    #[inline]
    pub fn try_push_pad(&mut self) -> Result<bool, RawError> {
        if !self.has_room(FIXED_LEN)? {
            return Ok(false);
        }
        self.issuer.push(FIXED_LEN, RecordMeta::default(), records::encode_pad);
        Ok(true)
    }

    /// Rings the doorbell for everything written so far.
    #[inline]
    pub fn publish(&mut self) {
        self.issuer.publish(self.t.as_ref());
    }

    /// Queues a `WRITE_LINEAR` of `data` to (`mem`, `unit`, `offset`). `data` must fit one record.
    pub fn write_linear(&mut self, mem: Memory, unit: u16, offset: u64, data: &[u8]) -> Result<u32, RawError> {
        let x = Linear { mem, unit, offset, len: data.len() as u64 };
        self.push(records::write_linear_len(data.len()), |slot, m| {
            records::encode_write_linear(slot, m, &x);
            slot.put_bytes(PAYLOAD_OFFSET, data);
            records::pad_payload(slot, data.len());
        })
    }

    /// Queues a `READ_LINEAR` of `len` bytes whose data goes to `dst`. Returns the value [`RawQueue::delivered`]
    /// reaches once the data is there.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes, and not otherwise accessed, until the read is delivered (or
    /// this queue is dropped).
    pub unsafe fn read_linear_into(
        &mut self,
        mem: Memory,
        unit: u16,
        offset: u64,
        dst: *mut u8,
        len: usize,
    ) -> Result<u64, RawError> {
        if len > self.max_read() {
            return Err(RawError::new(
                self.id,
                format!("a {len}-byte read exceeds the {} bytes one record may ask for", self.max_read()),
            ));
        }
        let x = Linear { mem, unit, offset, len: len as u64 };
        let tag = self.push(FIXED_LEN, |slot, m| records::encode_read_linear(slot, m, &x))?;
        let scatter = Scatter { dst, count: 1, piece: len as u32, src_stride: len as u32, dst_stride: 0 };
        Ok(self.completer.expect(tag, scatter))
    }

    /// Reads `len` bytes of device memory, blocking (split into reads the completion ring takes).
    pub fn read(&mut self, mem: Memory, unit: u16, offset: u64, len: usize) -> Result<Vec<u8>, RawError> {
        let mut out = vec![0u8; len];
        let max = self.max_read();
        let mut last = self.completer.delivered();
        let mut at = 0;
        while at < len {
            let n = (len - at).min(max);
            // SAFETY: `out` outlives the wait below, which returns only once every read has been delivered; if the
            // wait fails, `out` is leaked rather than freed, since the device may still deliver into it.
            last = unsafe { self.read_linear_into(mem, unit, offset + at as u64, out.as_mut_ptr().add(at), n)? };
            at += n;
        }
        self.publish();
        if let Err(e) = self.wait("read data", |q| q.completer.delivered() >= last) {
            std::mem::forget(out);
            return Err(e);
        }
        Ok(out)
    }

    /// Queues an `EVENT_RECORD` of `id`.
    pub fn event_record(&mut self, id: u32) -> Result<u32, RawError> {
        self.push(FIXED_LEN, |slot, m| records::encode_event_record(slot, m, id))
    }

    /// Queues an `EVENT_WAIT` for `queue`'s event slot to reach `id`.
    pub fn event_wait(&mut self, queue: u16, id: u32) -> Result<u32, RawError> {
        self.push(FIXED_LEN, |slot, m| records::encode_event_wait(slot, m, queue, id))
    }

    /// Publishes and waits until the device has consumed every record written.
    pub fn drain(&mut self) -> Result<(), RawError> {
        self.publish();
        let wr = self.issuer.wr();
        self.wait("the issue ring to drain", |q| q.issue_rd() == wr)
    }

    /// True once the device has consumed everything published (refreshes the device's read pointer); fails as
    /// [`RawQueue::has_room`].
    pub fn drained(&mut self) -> Result<bool, RawError> {
        self.issuer.drained().map_err(|e| RawError::new(self.id, e))
    }
}

impl Drop for RawQueue {
    fn drop(&mut self) {
        // Stop the queue before its rings are unmapped.
        self.t.write32(regs::queue_reg(self.id, regs::queue::CTRL), 0);
    }
}

/// The fault registers of the device behind `t` as text, if it has faulted.
pub fn fault_report(t: &dyn Transport) -> Option<String> {
    let s = Status::from_bits_truncate(t.read32(global::STATUS));
    if !s.contains(Status::FAULT) {
        return None;
    }
    Some(format!(
        "device fault: code {} addr {:#x}{:08x} queue {} tag {} opcode {}",
        t.read32(global::FAULT_CODE),
        t.read32(global::FAULT_ADDR_HI),
        t.read32(global::FAULT_ADDR_LO),
        t.read32(global::FAULT_QUEUE),
        t.read32(global::FAULT_TAG),
        t.read32(global::FAULT_OPCODE)
    ))
}
