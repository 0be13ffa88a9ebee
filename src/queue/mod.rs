//! Command queues: the issue ring the host fills and the completion ring the device fills (contract §5), in one
//! block of DMA memory per queue.
//!
//! [`Issuer`] is the producer side: it reserves space (explicit flow control against the device-written
//! `ISSUE_RD`), encodes records in place and rings the doorbell. [`Completer`] is the consumer side of the
//! completion ring: it copies read data to where the caller asked and returns space to the device. Waiting is the
//! device layer's business, because a wait must also drain other queues and watch for faults.

use crate::dma::tile::TileScatter;
use crate::dma::{DmaBuffer, DmaError, IovaAllocator, MemoryOptions};
use crate::transport::Transport;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::sync::{Arc, Mutex};
use ttdrv_contract::records::{self, ComplKind, FIXED_LEN, PAYLOAD_OFFSET, RecordMeta, RecordSlot};
use ttdrv_contract::regs::{self, host, queue as qreg};
use ttdrv_contract::{Iova, MAX_RING, MIN_RING, PROFILE_SLOT_BYTES, RECORD_ALIGN, RING_OFFSET};

/// Sizes of one queue's rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSizes {
    /// Issue ring bytes (power of two).
    pub issue: u32,
    /// Completion ring bytes (power of two).
    pub completion: u32,
    /// Profile slots (power of two, or 0 for none).
    pub profile_slots: u32,
}

impl RingSizes {
    /// Checks the sizes against contract §3.
    pub fn validate(&self) -> Result<(), RingSizeError> {
        for (parameter, v) in [("issue_ring_size", self.issue), ("completion_ring_size", self.completion)] {
            if !v.is_power_of_two() || (v as usize) < MIN_RING || v as usize > MAX_RING {
                return Err(RingSizeError {
                    parameter,
                    value: v,
                    rule: format!("must be a power of two between {MIN_RING} and {MAX_RING} bytes"),
                });
            }
        }
        if self.profile_slots != 0 && !self.profile_slots.is_power_of_two() {
            return Err(RingSizeError {
                parameter: "profile slots",
                value: self.profile_slots,
                rule: "must be a power of two".into(),
            });
        }
        Ok(())
    }

    /// Bytes of the host region: control page, rings, then the profile slots.
    pub fn region_len(&self) -> usize {
        RING_OFFSET + self.issue as usize + self.completion as usize + self.profile_slots as usize * PROFILE_SLOT_BYTES
    }

    /// Largest record the issue ring takes (contract §5.1).
    pub fn max_record(&self) -> usize {
        self.issue as usize / 4
    }

    /// Largest read one record may ask for (contract §4.2.4).
    pub fn max_read(&self) -> usize {
        self.completion as usize / 4 - PAYLOAD_OFFSET
    }
}

/// A ring size contract §3 does not allow.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{parameter} {value} {rule}")]
pub struct RingSizeError {
    /// The size (`issue_ring_size`, `completion_ring_size`, `profile slots`).
    pub parameter: &'static str,
    /// Its value.
    pub value: u32,
    /// What the contract requires.
    pub rule: String,
}

/// One queue's DMA memory and its device-written words.
pub struct Rings {
    id: u16,
    region: DmaBuffer,
    sizes: RingSizes,
}

impl Rings {
    /// Allocates and maps the region of queue `id` and programs the device's queue registers (not yet enabled).
    pub fn new(
        id: u16,
        transport: &Arc<dyn Transport>,
        iovas: &Arc<Mutex<IovaAllocator>>,
        sizes: RingSizes,
        mem: &MemoryOptions,
    ) -> Result<Rings, DmaError> {
        let region = DmaBuffer::new(transport, iovas, sizes.region_len(), mem)?;
        Ok(Rings { id, region, sizes })
    }

    /// Programs the queue registers and enables the queue (contract §3). The device zeroes its words.
    pub fn enable(&self, t: &dyn Transport) {
        let q = self.id;
        let base = self.region.iova().0;
        t.write32(regs::queue_reg(q, qreg::CTRL), 0);
        t.write32(regs::queue_reg(q, qreg::BASE_LO), base as u32);
        t.write32(regs::queue_reg(q, qreg::BASE_HI), (base >> 32) as u32);
        t.write32(regs::queue_reg(q, qreg::ISSUE_SIZE), self.sizes.issue);
        t.write32(regs::queue_reg(q, qreg::COMPL_SIZE), self.sizes.completion);
        let prof = self.profile_iova().0;
        t.write32(regs::queue_reg(q, qreg::PROF_BASE_LO), prof as u32);
        t.write32(regs::queue_reg(q, qreg::PROF_BASE_HI), (prof >> 32) as u32);
        t.write32(regs::queue_reg(q, qreg::PROF_SLOTS), self.sizes.profile_slots);
        // Host-side words start from zero too, before the device can write them.
        for off in [host::ISSUE_RD, host::COMPL_WR, host::EVENT_DONE, host::RETIRED, host::LAST_TAG] {
            self.word(off).store(0, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        t.write32(regs::queue_reg(q, qreg::CTRL), 1);
    }

    /// Sizes.
    pub fn sizes(&self) -> RingSizes {
        self.sizes
    }

    /// IOVA of the region.
    pub fn iova(&self) -> Iova {
        self.region.iova()
    }

    /// The DMA buffer (tests and diagnostics).
    pub fn region(&self) -> &DmaBuffer {
        &self.region
    }

    fn word(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off % 64 == 0 && off < RING_OFFSET);
        // SAFETY: `off` is inside the control page of our live mapping and 4-byte aligned; the device writes the
        // word atomically through its own mapping, so it is only ever accessed atomically here.
        unsafe { AtomicU32::from_ptr(self.region.ptr().add(off) as *mut u32) }
    }

    /// Reads a device-written word with acquire ordering: everything the device wrote before it is visible.
    pub fn device_word(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Acquire)
    }

    fn issue_ptr(&self, off: u32) -> *mut u8 {
        // SAFETY: callers mask `off` with the ring size, keeping it inside the issue ring.
        unsafe { self.region.ptr().add(RING_OFFSET + off as usize) }
    }

    fn compl_ptr(&self, off: u32) -> *mut u8 {
        // SAFETY: callers mask `off` with the ring size, keeping it inside the completion ring.
        unsafe { self.region.ptr().add(RING_OFFSET + self.sizes.issue as usize + off as usize) }
    }

    /// IOVA of the profile slots.
    pub fn profile_iova(&self) -> Iova {
        Iova(self.region.iova().0 + (RING_OFFSET + self.sizes.issue as usize + self.sizes.completion as usize) as u64)
    }

    /// Reads profile slot `slot`: (start, end) device ns.
    pub fn profile_slot(&self, slot: u32) -> Option<(u64, u64)> {
        if self.sizes.profile_slots == 0 {
            return None;
        }
        let off = RING_OFFSET
            + self.sizes.issue as usize
            + self.sizes.completion as usize
            + (slot % self.sizes.profile_slots) as usize * PROFILE_SLOT_BYTES;
        let mut b = [0u8; 16];
        // SAFETY: the slot is inside the mapped region; a torn read of a slot being rewritten only yields a bad
        // timestamp, which the caller discards when end < start.
        unsafe { std::ptr::copy_nonoverlapping(self.region.ptr().add(off), b.as_mut_ptr(), 16) };
        Some((u64::from_le_bytes(b[..8].try_into().unwrap()), u64::from_le_bytes(b[8..].try_into().unwrap())))
    }
}

/// Producer state of the issue ring. One thread at a time (the device layer's queue lock).
pub struct Issuer {
    rings: Arc<Rings>,
    wr: u32,
    rd_cache: u32,
    published: u32,
    next_tag: u32,
}

impl Issuer {
    /// A producer at the start of an enabled ring.
    pub fn new(rings: Arc<Rings>) -> Issuer {
        Issuer { rings, wr: 0, rd_cache: 0, published: 0, next_tag: 1 }
    }

    /// The host's write pointer.
    pub fn wr(&self) -> u32 {
        self.wr
    }

    /// The ring.
    pub fn rings(&self) -> &Arc<Rings> {
        &self.rings
    }

    /// Bytes `len` needs right now, including the pad to the ring's end if it would wrap.
    fn needed(&self, len: usize) -> u32 {
        let size = self.rings.sizes.issue;
        let off = self.wr & (size - 1);
        let pad = if off as usize + len > size as usize { size - off } else { 0 };
        pad + len as u32
    }

    /// True if a record of `len` bytes fits now; refreshes the device's read pointer when it seems not to.
    pub fn has_room(&mut self, len: usize) -> bool {
        let need = self.needed(len);
        let size = self.rings.sizes.issue;
        if size - self.wr.wrapping_sub(self.rd_cache) >= need {
            return true;
        }
        self.rd_cache = self.rings.device_word(host::ISSUE_RD);
        size - self.wr.wrapping_sub(self.rd_cache) >= need
    }

    /// True once the device has consumed everything written.
    pub fn drained(&mut self) -> bool {
        self.rd_cache = self.rings.device_word(host::ISSUE_RD);
        self.rd_cache == self.wr
    }

    /// Writes one record of `len` bytes (a multiple of 64, at most [`RingSizes::max_record`]) whose bytes `encode`
    /// fills. The caller has checked [`Issuer::has_room`]. Returns the record's tag.
    pub fn push(
        &mut self,
        len: usize,
        mut meta: RecordMeta,
        encode: impl FnOnce(&mut RecordSlot<'_>, RecordMeta),
    ) -> u32 {
        debug_assert!(len % RECORD_ALIGN == 0 && len >= FIXED_LEN && len <= self.rings.sizes.max_record());
        let size = self.rings.sizes.issue;
        let off = self.wr & (size - 1);
        if off as usize + len > size as usize {
            let pad = (size - off) as usize;
            // SAFETY: [off, size) is inside the issue ring and free (has_room counted the pad); the device reads it
            // only after the doorbell.
            let mut slot = unsafe { RecordSlot::from_raw(self.rings.issue_ptr(off), pad) };
            records::encode_pad(&mut slot, RecordMeta { tag: self.next_tag, ..RecordMeta::default() });
            self.next_tag = self.next_tag.wrapping_add(1);
            self.wr = self.wr.wrapping_add(pad as u32);
        }
        let off = self.wr & (size - 1);
        meta.tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        // SAFETY: the record's bytes are inside the ring (no wrap, checked above) and free.
        let mut slot = unsafe { RecordSlot::from_raw(self.rings.issue_ptr(off), len) };
        encode(&mut slot, meta);
        self.wr = self.wr.wrapping_add(len as u32);
        self.prefetch_next();
        meta.tag
    }

    /// Asks for the ring's next lines in exclusive state, so the next record's stores do not each wait for a
    /// read-for-ownership from memory: the ring sweeps through memory far larger than the cache.
    #[inline]
    fn prefetch_next(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_ET0, _mm_prefetch};
            let size = self.rings.sizes.issue;
            for ahead in [256u32, 320, 384, 448] {
                let off = self.wr.wrapping_add(ahead) & (size - 1);
                // SAFETY: a prefetch is only a hint and never faults; the address is inside the mapped ring.
                unsafe { _mm_prefetch::<_MM_HINT_ET0>(self.rings.issue_ptr(off) as *const i8) };
            }
        }
    }

    /// Rings the doorbell if anything was written since the last one.
    pub fn publish(&mut self, t: &dyn Transport) {
        if self.published != self.wr {
            // Record bytes (including streamed copies, which end with a store fence) before the doorbell.
            fence(Ordering::Release);
            t.write32(regs::queue_reg(self.rings.id, qreg::ISSUE_WR), self.wr);
            self.published = self.wr;
        }
    }

    /// The tag the next record will get.
    pub fn next_tag(&self) -> u32 {
        self.next_tag
    }
}

/// Where one read's data goes: `count` pieces of `piece` bytes; piece `i` comes from payload offset
/// `i × src_stride` and goes to `dst + i × dst_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Scatter {
    /// Destination of piece 0.
    pub dst: *mut u8,
    /// Pieces.
    pub count: u32,
    /// Bytes per piece.
    pub piece: u32,
    /// Payload distance between pieces.
    pub src_stride: u32,
    /// Destination distance between pieces.
    pub dst_stride: usize,
}

// SAFETY: the pointer is the caller's destination, which the read API obliges them to keep valid and untouched
// until the read completes; the completer is the only writer.
unsafe impl Send for Scatter {}

/// Where one read's data goes: pieces copied as they are, or tiles untilized into a row-major tensor (contract §8.3.2).
#[derive(Clone, Copy, Debug)]
pub enum Delivery {
    /// Strided pieces.
    Scatter(Scatter),
    /// Tiles of a tiled buffer.
    Tiles(TileScatter),
}

impl From<Scatter> for Delivery {
    fn from(s: Scatter) -> Delivery {
        Delivery::Scatter(s)
    }
}

impl From<TileScatter> for Delivery {
    fn from(s: TileScatter) -> Delivery {
        Delivery::Tiles(s)
    }
}

impl Delivery {
    /// Payload bytes the delivery reads.
    fn need(&self) -> u64 {
        match self {
            Delivery::Scatter(s) if s.count == 0 => 0,
            Delivery::Scatter(s) => (s.count - 1) as u64 * s.src_stride as u64 + s.piece as u64,
            Delivery::Tiles(t) => t.need(),
        }
    }

    /// Copies the payload at `src` into place.
    ///
    /// # Safety
    /// `src` must be readable for [`Delivery::need`] bytes; the destination must be valid for the pattern and
    /// untouched until delivery, as the read API requires.
    unsafe fn deliver(&self, src: *const u8) {
        match self {
            Delivery::Scatter(s) => {
                for i in 0..s.count as usize {
                    // SAFETY: the source piece is inside the payload (caller contract); the destination as above.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            src.add(i * s.src_stride as usize),
                            s.dst.add(i * s.dst_stride),
                            s.piece as usize,
                        )
                    };
                }
            }
            // SAFETY: forwarded.
            Delivery::Tiles(t) => unsafe { t.deliver(src) },
        }
    }
}

/// A read whose completion entry has not been consumed.
struct PendingRead {
    tag: u32,
    scatter: Delivery,
}

/// Consumer state of the completion ring.
pub struct Completer {
    rings: Arc<Rings>,
    rd: u32,
    published: u32,
    pending: VecDeque<PendingRead>,
    /// Reads whose data has been delivered (free-running).
    delivered: u64,
    /// Reads enqueued (free-running).
    expected: u64,
}

/// The completion ring held an entry the contract does not allow (docs/device-interface.md §5.2); each variant
/// names the queue, where in the ring the entry is, and what it held.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An entry's length is zero, not a multiple of 64, past the bytes written, or past the end of the ring.
    #[error(
        "queue {queue}'s completion entry at ring offset {offset:#x} has length {length}, which is not a non-zero \
         multiple of 64 inside the ring and the {written} bytes written"
    )]
    EntryLength {
        /// The queue.
        queue: u16,
        /// Ring offset of the entry.
        offset: u32,
        /// Its length field.
        length: u32,
        /// Bytes the device had written past the host's read pointer.
        written: u32,
    },
    /// Read data arrived while no read was pending.
    #[error(
        "queue {queue}'s completion entry at ring offset {offset:#x} carries read data for tag {tag}, but no read is pending"
    )]
    UnexpectedReadData {
        /// The queue.
        queue: u16,
        /// Ring offset of the entry.
        offset: u32,
        /// Its tag.
        tag: u32,
    },
    /// Read data for another read than the oldest pending one, or shorter than it asked for.
    #[error(
        "queue {queue}'s completion entry at ring offset {offset:#x} carries read data for tag {tag} ({len} bytes), \
         but the oldest pending read is tag {expected_tag} ({expected_len} bytes)"
    )]
    ReadMismatch {
        /// The queue.
        queue: u16,
        /// Ring offset of the entry.
        offset: u32,
        /// Its tag.
        tag: u32,
        /// Its data length.
        len: u32,
        /// The tag of the oldest pending read.
        expected_tag: u32,
        /// Bytes that read needs.
        expected_len: u64,
    },
    /// An entry of a kind the contract does not define.
    #[error("queue {queue}'s completion entry at ring offset {offset:#x} has unknown kind {kind}")]
    UnknownEntryKind {
        /// The queue.
        queue: u16,
        /// Ring offset of the entry.
        offset: u32,
        /// Its kind field.
        kind: u8,
    },
}

impl ProtocolError {
    /// The queue whose completion ring held the entry.
    pub fn queue(&self) -> u16 {
        match *self {
            ProtocolError::EntryLength { queue, .. }
            | ProtocolError::UnexpectedReadData { queue, .. }
            | ProtocolError::ReadMismatch { queue, .. }
            | ProtocolError::UnknownEntryKind { queue, .. } => queue,
        }
    }
}

impl Completer {
    /// A consumer at the start of an enabled ring.
    pub fn new(rings: Arc<Rings>) -> Completer {
        Completer { rings, rd: 0, published: 0, pending: VecDeque::new(), delivered: 0, expected: 0 }
    }

    /// Registers the read record `tag` and where its data goes. Returns the read's sequence number, which
    /// [`Completer::delivered`] reaches once the data is in place.
    pub fn expect(&mut self, tag: u32, scatter: impl Into<Delivery>) -> u64 {
        self.pending.push_back(PendingRead { tag, scatter: scatter.into() });
        self.expected += 1;
        self.expected
    }

    /// Reads delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Reads registered so far.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// The host's read pointer (diagnostics).
    pub fn rd(&self) -> u32 {
        self.rd
    }

    /// The ring.
    pub fn rings(&self) -> &Arc<Rings> {
        &self.rings
    }

    /// Consumes every complete entry, delivering read data, then returns the space to the device. Returns the
    /// number of reads delivered.
    pub fn drain(&mut self, t: &dyn Transport) -> Result<usize, ProtocolError> {
        let size = self.rings.sizes.completion;
        let wr = self.rings.device_word(host::COMPL_WR);
        let mut n = 0;
        while self.rd != wr {
            let off = self.rd & (size - 1);
            let p = self.rings.compl_ptr(off);
            let mut h = [0u8; 16];
            // SAFETY: the entry is below COMPL_WR (loaded with acquire), inside the completion ring.
            unsafe { std::ptr::copy_nonoverlapping(p, h.as_mut_ptr(), 16) };
            let e = records::decode_compl(&h);
            let queue = self.rings.id;
            let written = wr.wrapping_sub(self.rd);
            if e.length == 0 || e.length % 64 != 0 || e.length > written || off + e.length > size {
                return Err(ProtocolError::EntryLength { queue, offset: off, length: e.length, written });
            }
            match ComplKind::from_u8(e.kind) {
                Some(ComplKind::Pad) => {}
                Some(ComplKind::ReadData) => {
                    let r = self.pending.pop_front().ok_or(ProtocolError::UnexpectedReadData {
                        queue,
                        offset: off,
                        tag: e.tag,
                    })?;
                    let need = r.scatter.need();
                    if r.tag != e.tag || need > e.data_len as u64 {
                        return Err(ProtocolError::ReadMismatch {
                            queue,
                            offset: off,
                            tag: e.tag,
                            len: e.data_len,
                            expected_tag: r.tag,
                            expected_len: need,
                        });
                    }
                    // SAFETY: the bytes delivered are inside the payload (checked against data_len above); the
                    // destination is the caller's buffer, which the read API requires to be valid for the pattern
                    // and untouched until delivery.
                    unsafe { r.scatter.deliver(p.add(PAYLOAD_OFFSET)) };
                    self.delivered += 1;
                    n += 1;
                }
                None => return Err(ProtocolError::UnknownEntryKind { queue, offset: off, kind: e.kind }),
            }
            self.rd = self.rd.wrapping_add(e.length);
        }
        if self.published != self.rd {
            t.write32(regs::queue_reg(self.rings.id, qreg::COMPL_RD), self.rd);
            self.published = self.rd;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
