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
///
/// Besides the memory it holds what the host has issued so far, which bounds what the device may report: the
/// device-written words are checked against it before use ([`Issuer`], [`Completer`]).
pub struct Rings {
    id: u16,
    region: DmaBuffer,
    sizes: RingSizes,
    /// The tag of the last record the host published (rung the doorbell for): `RETIRED` never passes it.
    published_tag: AtomicU32,
    /// The id of the last `EVENT_RECORD` the host published: `EVENT_DONE` never passes it.
    published_event: AtomicU32,
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
        Ok(Rings { id, region, sizes, published_tag: AtomicU32::new(0), published_event: AtomicU32::new(0) })
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
        // A new issuer starts at tag 1 and event id 1: nothing is issued yet.
        self.published_tag.store(0, Ordering::Relaxed);
        self.published_event.store(0, Ordering::Relaxed);
        // Tags restart at 1 with the new issuer, so an entry left in the completion ring from before a reset would
        // carry a tag the next reads use: cleared, such an entry (which a device claiming more than it wrote would
        // expose) has length 0 and is refused instead of being taken for new read data.
        // SAFETY: the completion ring is inside our live mapping; the queue is disabled (CTRL = 0 above), so the
        // device does not access it, and the host reads it only below COMPL_WR, which is 0.
        unsafe { std::ptr::write_bytes(self.compl_ptr(0), 0, self.sizes.completion as usize) };
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

    /// Reads a device-written word with acquire ordering: everything the device wrote before it is visible. The
    /// value is unchecked: use it for diagnostics only; [`Issuer`] and [`Completer`] check the words they act on.
    pub fn device_word(&self, off: usize) -> u32 {
        self.word(off).load(Ordering::Acquire)
    }

    /// Notes that an `EVENT_RECORD` of `id` is about to be published: call it before the doorbell that covers the
    /// record, so that a reader who sees the device report `id` also sees this (the device's write of `EVENT_DONE`
    /// follows the doorbell).
    pub fn note_event_issued(&self, id: u32) {
        self.published_event.store(id, Ordering::Release);
    }

    /// The id of the last event record noted with [`Rings::note_event_issued`].
    pub fn event_issued(&self) -> u32 {
        self.published_event.load(Ordering::Acquire)
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
    /// The last `ISSUE_RD` accepted: checked, so `wr - rd_cache` never exceeds the ring.
    rd_cache: u32,
    published: u32,
    next_tag: u32,
}

impl Issuer {
    /// A producer at the start of an enabled ring.
    pub fn new(rings: Arc<Rings>) -> Issuer {
        Issuer { rings, wr: 0, rd_cache: 0, published: 0, next_tag: 1 }
    }

    /// Reads `ISSUE_RD` and checks it (docs/device-interface.md §5.1): 64-byte aligned, not behind what the device
    /// reported before, and not ahead of the doorbell the host rang (the device only consumes published records).
    fn refresh_rd(&mut self) -> Result<u32, ProtocolError> {
        let rd = self.rings.device_word(host::ISSUE_RD);
        // Distances back from the doorbell: the device may only shrink it. A value ahead of the doorbell, or behind
        // the previous one, makes it larger (free-running arithmetic wraps).
        let outstanding = self.published.wrapping_sub(rd);
        let before = self.published.wrapping_sub(self.rd_cache);
        if rd as usize % RECORD_ALIGN != 0 || outstanding > before {
            return Err(ProtocolError::IssueRd {
                queue: self.rings.id,
                value: rd,
                previous: self.rd_cache,
                published: self.published,
            });
        }
        self.rd_cache = rd;
        Ok(rd)
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

    /// Free bytes against the last checked read pointer. `wr - rd_cache` is at most the ring's size: the host
    /// writes only into free space and `rd_cache` only ever holds a checked value at or behind the doorbell.
    fn free(&self) -> u32 {
        self.rings.sizes.issue.saturating_sub(self.wr.wrapping_sub(self.rd_cache))
    }

    /// True if a record of `len` bytes fits now; refreshes the device's read pointer when it seems not to. Fails if
    /// the device wrote an `ISSUE_RD` the contract does not allow.
    pub fn has_room(&mut self, len: usize) -> Result<bool, ProtocolError> {
        let need = self.needed(len);
        if self.free() >= need {
            return Ok(true);
        }
        self.refresh_rd()?;
        Ok(self.free() >= need)
    }

    /// True once the device has consumed (and retired) every record before write position `pos` (a value
    /// [`Issuer::wr`] returned after publishing). Fails as [`Issuer::has_room`].
    pub fn reached(&mut self, pos: u32) -> Result<bool, ProtocolError> {
        let rd = self.refresh_rd()?;
        // Distances back from the doorbell: `rd` is at or past `pos` when it is at most as far back.
        Ok(self.published.wrapping_sub(rd) <= self.published.wrapping_sub(pos))
    }

    /// True once the device has consumed (and retired) every record published. Fails as [`Issuer::has_room`].
    pub fn drained(&mut self) -> Result<bool, ProtocolError> {
        Ok(self.refresh_rd()? == self.published)
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
            self.rings.published_tag.store(self.next_tag.wrapping_sub(1), Ordering::Release);
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
    /// Its sequence number ([`Completer::expect`]).
    seq: u64,
    /// Where its data goes; `None` once cancelled: the entry is still consumed, its data dropped.
    scatter: Option<Delivery>,
}

/// Consumer state of the completion ring.
pub struct Completer {
    rings: Arc<Rings>,
    rd: u32,
    published: u32,
    /// The last `COMPL_WR` accepted: the device may only move it forward, at most a ring ahead of `rd`.
    wr_seen: u32,
    /// The last `EVENT_DONE` accepted.
    event_seen: u32,
    /// The last `RETIRED` accepted.
    retired_seen: u32,
    pending: VecDeque<PendingRead>,
    /// Reads whose entry has been consumed, delivered or (cancelled) dropped (free-running).
    delivered: u64,
    /// Reads enqueued (free-running).
    expected: u64,
}

/// A device-written word or completion entry the contract does not allow (docs/device-interface.md §5); each
/// variant names the queue, the word or where in the ring the entry is, and what it held.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// An entry's length is zero, not a multiple of 64, past the bytes written, or past the end of the ring.
    #[error(
        "queue {queue}'s completion entry at ring offset {offset:#x} has length {length}, which is not a non-zero \
         multiple of 64 inside the ring and the {written} bytes written (docs/device-interface.md §5.2)"
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
    /// A `READ_DATA` entry claims more payload than the entry holds.
    #[error(
        "queue {queue}'s completion entry at ring offset {offset:#x} (tag {tag}) has data_len {data_len}, more \
         than the {} payload bytes its length {length} leaves (docs/device-interface.md §5.2)",
        length.saturating_sub(PAYLOAD_OFFSET as u32)
    )]
    EntryData {
        /// The queue.
        queue: u16,
        /// Ring offset of the entry.
        offset: u32,
        /// Its tag.
        tag: u32,
        /// Its data_len field.
        data_len: u32,
        /// Its length field.
        length: u32,
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
    /// `ISSUE_RD` is misaligned, behind what the device reported before, or ahead of the host's doorbell.
    #[error(
        "queue {queue}'s device-written ISSUE_RD reads {value:#x}, which is not a 64-byte aligned pointer between \
         the {previous:#x} the device reported before and the {published:#x} the host published \
         (docs/device-interface.md §5.1)"
    )]
    IssueRd {
        /// The queue.
        queue: u16,
        /// What the word held.
        value: u32,
        /// The last value accepted.
        previous: u32,
        /// The host's doorbell value.
        published: u32,
    },
    /// `COMPL_WR` is misaligned, behind what the device reported before, or more than a ring ahead of the host.
    #[error(
        "queue {queue}'s device-written COMPL_WR reads {value:#x}, which is not a 64-byte aligned pointer between \
         the {previous:#x} the device reported before and one ring ({size:#x} bytes) past the host's read pointer \
         {host_rd:#x} (docs/device-interface.md §5.2)"
    )]
    ComplWr {
        /// The queue.
        queue: u16,
        /// What the word held.
        value: u32,
        /// The last value accepted.
        previous: u32,
        /// The host's read pointer.
        host_rd: u32,
        /// Bytes of the completion ring.
        size: u32,
    },
    /// `EVENT_DONE` went backwards or names an event the host never issued.
    #[error(
        "queue {queue}'s device-written EVENT_DONE reads {value}, which is not an event id between the {previous} \
         the device reported before and the {issued} the host issued last (docs/device-interface.md §4.2.7)"
    )]
    EventDone {
        /// The queue.
        queue: u16,
        /// What the word held.
        value: u32,
        /// The last value accepted.
        previous: u32,
        /// The last event id the host published.
        issued: u32,
    },
    /// `RETIRED` went backwards or counts more records than the host published.
    #[error(
        "queue {queue}'s device-written RETIRED reads {value}, which is not a record count between the {previous} \
         the device reported before and the {published} records the host published (docs/device-interface.md §5)"
    )]
    Retired {
        /// The queue.
        queue: u16,
        /// What the word held.
        value: u32,
        /// The last value accepted.
        previous: u32,
        /// Records published.
        published: u32,
    },
}

impl ProtocolError {
    /// The queue whose ring or word broke the contract.
    pub fn queue(&self) -> u16 {
        match *self {
            ProtocolError::EntryLength { queue, .. }
            | ProtocolError::EntryData { queue, .. }
            | ProtocolError::UnexpectedReadData { queue, .. }
            | ProtocolError::ReadMismatch { queue, .. }
            | ProtocolError::UnknownEntryKind { queue, .. }
            | ProtocolError::IssueRd { queue, .. }
            | ProtocolError::ComplWr { queue, .. }
            | ProtocolError::EventDone { queue, .. }
            | ProtocolError::Retired { queue, .. } => queue,
        }
    }
}

/// Whether free-running `value` lies in `[previous, limit]` (wrapping): it moved forward from `previous` and did
/// not pass `limit`. `previous` itself must lie at or behind `limit`.
fn between(previous: u32, value: u32, limit: u32) -> bool {
    limit.wrapping_sub(value) <= limit.wrapping_sub(previous)
}

impl Completer {
    /// A consumer at the start of an enabled ring.
    pub fn new(rings: Arc<Rings>) -> Completer {
        Completer {
            rings,
            rd: 0,
            published: 0,
            wr_seen: 0,
            event_seen: 0,
            retired_seen: 0,
            pending: VecDeque::new(),
            delivered: 0,
            expected: 0,
        }
    }

    /// Registers the read record `tag` and where its data goes. Returns the read's sequence number, which
    /// [`Completer::delivered`] reaches once the data is in place (or dropped, if cancelled).
    pub fn expect(&mut self, tag: u32, scatter: impl Into<Delivery>) -> u64 {
        self.expected += 1;
        self.pending.push_back(PendingRead { tag, seq: self.expected, scatter: Some(scatter.into()) });
        self.expected
    }

    /// Cancels the pending reads with sequence numbers `first..=last`: their entries are still consumed (and their
    /// ring space returned), but their data goes nowhere. Once this returns, nothing is written to their
    /// destinations: delivery happens only under the caller's `&mut`, i.e. the completion lock. Returns how many
    /// were still pending.
    pub fn cancel(&mut self, first: u64, last: u64) -> usize {
        let mut n = 0;
        for r in self.pending.iter_mut().filter(|r| (first..=last).contains(&r.seq)) {
            if r.scatter.take().is_some() {
                n += 1;
            }
        }
        n
    }

    /// Reads whose entries have been consumed so far (delivered, or dropped if cancelled).
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

    /// Reads `EVENT_DONE` and checks it (docs/device-interface.md §4.2.7): event ids grow (wrapping), so the word
    /// may only move forward from what it reported before, and never past the last id the host published.
    pub fn event_done(&mut self) -> Result<u32, ProtocolError> {
        let v = self.rings.device_word(host::EVENT_DONE);
        // Loaded after the word: the device writes an id only after its record's doorbell, which follows the note.
        let issued = self.rings.event_issued();
        if !between(self.event_seen, v, issued) {
            return Err(ProtocolError::EventDone { queue: self.rings.id, value: v, previous: self.event_seen, issued });
        }
        self.event_seen = v;
        Ok(v)
    }

    /// Reads `RETIRED` and checks it: a count of retired records only grows, and never past the records published
    /// (tags count records from 1, so the last published tag is the count).
    pub fn retired(&mut self) -> Result<u32, ProtocolError> {
        let v = self.rings.device_word(host::RETIRED);
        let published = self.rings.published_tag.load(Ordering::Acquire);
        if !between(self.retired_seen, v, published) {
            return Err(ProtocolError::Retired {
                queue: self.rings.id,
                value: v,
                previous: self.retired_seen,
                published,
            });
        }
        self.retired_seen = v;
        Ok(v)
    }

    /// Reads `COMPL_WR` and checks it (docs/device-interface.md §5.2): 64-byte aligned, not behind what the device
    /// reported before, at most one ring ahead of the host's read pointer.
    fn compl_wr(&mut self) -> Result<u32, ProtocolError> {
        let size = self.rings.sizes.completion;
        let wr = self.rings.device_word(host::COMPL_WR);
        let written = wr.wrapping_sub(self.rd);
        let before = self.wr_seen.wrapping_sub(self.rd);
        if wr as usize % RECORD_ALIGN != 0 || written > size || written < before {
            return Err(ProtocolError::ComplWr {
                queue: self.rings.id,
                value: wr,
                previous: self.wr_seen,
                host_rd: self.rd,
                size,
            });
        }
        self.wr_seen = wr;
        Ok(wr)
    }

    /// Consumes every complete entry, delivering read data, then returns the space to the device. Returns the
    /// number of reads delivered (cancelled ones included). Every word and entry field is checked before it is
    /// used: a violation is returned and nothing outside the ring and the pending reads' destinations is touched.
    pub fn drain(&mut self, t: &dyn Transport) -> Result<usize, ProtocolError> {
        let size = self.rings.sizes.completion;
        let wr = self.compl_wr()?;
        let queue = self.rings.id;
        let mut n = 0;
        while self.rd != wr {
            // 64-byte aligned (every accepted length is a multiple of 64), so the 64-byte header fits in the ring.
            let off = self.rd & (size - 1);
            let p = self.rings.compl_ptr(off);
            let mut h = [0u8; 16];
            // SAFETY: the entry is below COMPL_WR (loaded with acquire), inside the completion ring.
            unsafe { std::ptr::copy_nonoverlapping(p, h.as_mut_ptr(), 16) };
            let e = records::decode_compl(&h);
            let written = wr.wrapping_sub(self.rd);
            // In u64: `off + length` must not wrap.
            if e.length == 0
                || e.length as usize % RECORD_ALIGN != 0
                || e.length > written
                || off as u64 + e.length as u64 > size as u64
            {
                return Err(ProtocolError::EntryLength { queue, offset: off, length: e.length, written });
            }
            match ComplKind::from_u8(e.kind) {
                Some(ComplKind::Pad) => {}
                Some(ComplKind::ReadData) => {
                    if PAYLOAD_OFFSET as u64 + e.data_len as u64 > e.length as u64 {
                        return Err(ProtocolError::EntryData {
                            queue,
                            offset: off,
                            tag: e.tag,
                            data_len: e.data_len,
                            length: e.length,
                        });
                    }
                    let r = self.pending.front().ok_or(ProtocolError::UnexpectedReadData {
                        queue,
                        offset: off,
                        tag: e.tag,
                    })?;
                    if let Some(s) = &r.scatter {
                        let need = s.need();
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
                        // SAFETY: the bytes delivered are inside the payload, which is inside the entry (both
                        // checked above against data_len and length), inside the ring; the destination is the
                        // caller's buffer, which the read API requires to be valid for the pattern and untouched
                        // until delivery or cancellation (which takes this completer's lock).
                        unsafe { s.deliver(p.add(PAYLOAD_OFFSET)) };
                    } else if r.tag != e.tag {
                        // A cancelled read's entry: its data is dropped, but it must still be the entry expected.
                        return Err(ProtocolError::ReadMismatch {
                            queue,
                            offset: off,
                            tag: e.tag,
                            len: e.data_len,
                            expected_tag: r.tag,
                            expected_len: 0,
                        });
                    }
                    self.pending.pop_front();
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
