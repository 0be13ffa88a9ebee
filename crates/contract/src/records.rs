//! Record and completion-entry formats (contract §4 and §5.2): one encoder per record type, used by live dispatch
//! and by trace capture alike, and the matching decoders the device side uses.

use super::{Memory, RECORD_ALIGN};
use std::marker::PhantomData;

/// Byte offset of a write record's payload (contract §4.2.2).
pub const PAYLOAD_OFFSET: usize = 64;
/// Size of the fixed part of every record: header plus body (contract §4).
pub const FIXED_LEN: usize = 64;

/// Record opcodes (contract §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    /// Skip `length` bytes.
    Pad = 0x01,
    /// Write a payload to one unit.
    WriteLinear = 0x02,
    /// Write pages interleaved over units.
    WritePaged = 0x03,
    /// Read one unit into a completion entry.
    ReadLinear = 0x04,
    /// Read interleaved pages into a completion entry.
    ReadPaged = 0x05,
    /// Run a program.
    Launch = 0x06,
    /// Barrier, then publish an event id.
    EventRecord = 0x07,
    /// Stall until another queue's event slot reaches an id.
    EventWait = 0x08,
    /// Run a trace stored in device DRAM.
    ExecTrace = 0x09,
}

impl Opcode {
    /// Decodes an opcode byte.
    pub fn from_u8(v: u8) -> Option<Opcode> {
        Some(match v {
            0x01 => Opcode::Pad,
            0x02 => Opcode::WriteLinear,
            0x03 => Opcode::WritePaged,
            0x04 => Opcode::ReadLinear,
            0x05 => Opcode::ReadPaged,
            0x06 => Opcode::Launch,
            0x07 => Opcode::EventRecord,
            0x08 => Opcode::EventWait,
            0x09 => Opcode::ExecTrace,
            _ => return None,
        })
    }
}

bitflags::bitflags! {
    /// Record header flags (contract §4.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct RecordFlags: u8 {
        /// Write start/end timestamps into the record's profile slot.
        const PROFILE = 1 << 0;
        /// Raise the queue's interrupt vector when the record retires.
        const NOTIFY = 1 << 1;
    }
}

/// The header fields the host chooses for any record (contract §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordMeta {
    /// Header flags.
    pub flags: RecordFlags,
    /// Echoed in completions and fault reports.
    pub tag: u32,
    /// Profile slot, meaningful with [`RecordFlags::PROFILE`].
    pub profile_slot: u32,
}

/// A writable window of exactly one record's bytes.
///
/// The issue ring hands out slots in DMA memory and trace capture hands out slots in a host vector; encoders write
/// through this type only, so the bytes are identical in both cases. Accesses are bounds-checked and unaligned-safe;
/// no Rust reference into the memory is ever created, because in the ring case the device may read it later.
pub struct RecordSlot<'a> {
    ptr: *mut u8,
    len: usize,
    _borrow: PhantomData<&'a mut [u8]>,
}

impl<'a> RecordSlot<'a> {
    /// A slot over raw memory.
    ///
    /// # Safety
    /// `ptr` must be valid for writes of `len` bytes for `'a`, and nothing else may access those bytes while the slot
    /// lives (for ring memory: the device does not read them before the doorbell that follows).
    pub unsafe fn from_raw(ptr: *mut u8, len: usize) -> RecordSlot<'a> {
        RecordSlot { ptr, len, _borrow: PhantomData }
    }

    /// A slot over an ordinary byte slice.
    pub fn from_slice(buf: &'a mut [u8]) -> RecordSlot<'a> {
        RecordSlot { ptr: buf.as_mut_ptr(), len: buf.len(), _borrow: PhantomData }
    }

    /// Bytes in the slot.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty slot.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn check(&self, off: usize, n: usize) {
        assert!(off.checked_add(n).is_some_and(|end| end <= self.len), "record write out of bounds");
    }

    /// Writes `bytes` at `off`.
    #[inline]
    pub fn put_bytes(&mut self, off: usize, bytes: &[u8]) {
        self.check(off, bytes.len());
        // SAFETY: `check` keeps the range inside the slot, which `from_raw`'s contract makes writable and exclusive.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len()) }
    }

    /// The slot's bytes `[off, off + len)` as a raw pointer, bounds-checked: for a caller that fills a payload with
    /// its own copy routine (the driver streams large payloads past the cache). The contract has no opinion on how
    /// bytes get there, only where they go.
    ///
    /// # Panics
    /// If the range is not inside the slot.
    #[inline]
    pub fn raw_range(&mut self, off: usize, len: usize) -> *mut u8 {
        self.check(off, len);
        // SAFETY: `check` keeps the range inside the slot.
        unsafe { self.ptr.add(off) }
    }

    /// Zeroes `len` bytes at `off`.
    #[inline]
    pub fn zero(&mut self, off: usize, len: usize) {
        self.check(off, len);
        // SAFETY: range checked as in `put_bytes`.
        unsafe { std::ptr::write_bytes(self.ptr.add(off), 0, len) }
    }

    /// Writes `N` bytes with one fixed-size store (no `memcpy` call for a header field).
    #[inline]
    fn put_array<const N: usize>(&mut self, off: usize, bytes: [u8; N]) {
        self.check(off, N);
        // SAFETY: `check` keeps the N bytes inside the slot; the store is unaligned-safe.
        unsafe { (self.ptr.add(off) as *mut [u8; N]).write_unaligned(bytes) }
    }

    /// Writes a little-endian u8.
    #[inline]
    pub fn put_u8(&mut self, off: usize, v: u8) {
        self.put_array(off, [v]);
    }
    /// Writes a little-endian u16.
    #[inline]
    pub fn put_u16(&mut self, off: usize, v: u16) {
        self.put_array(off, v.to_le_bytes());
    }
    /// Writes a little-endian u32.
    #[inline]
    pub fn put_u32(&mut self, off: usize, v: u32) {
        self.put_array(off, v.to_le_bytes());
    }
    /// Writes a little-endian u64.
    #[inline]
    pub fn put_u64(&mut self, off: usize, v: u64) {
        self.put_array(off, v.to_le_bytes());
    }
    /// Writes u32 words in little-endian order starting at `off`.
    #[inline]
    pub fn put_words(&mut self, off: usize, words: &[u32]) {
        self.check(off, words.len() * 4);
        if cfg!(target_endian = "little") {
            // SAFETY: range checked; on little-endian targets the in-memory bytes of `words` are the encoding.
            unsafe { std::ptr::copy_nonoverlapping(words.as_ptr() as *const u8, self.ptr.add(off), words.len() * 4) }
        } else {
            for (i, w) in words.iter().enumerate() {
                self.put_u32(off + i * 4, *w);
            }
        }
    }
}

/// Rounds a byte count up to the record granule.
#[inline]
pub const fn record_align(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

/// The 16 header bytes of a record of `len` bytes (contract §4.1).
fn header_bytes(op: Opcode, meta: RecordMeta, len: usize) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0] = op as u8;
    h[1] = meta.flags.bits();
    h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
    h[8..12].copy_from_slice(&meta.tag.to_le_bytes());
    h[12..16].copy_from_slice(&meta.profile_slot.to_le_bytes());
    h
}

fn put_header(slot: &mut RecordSlot<'_>, op: Opcode, meta: RecordMeta) {
    debug_assert!(slot.len() % RECORD_ALIGN == 0 && slot.len() >= FIXED_LEN);
    let h = header_bytes(op, meta, slot.len());
    slot.put_array(0, h);
}

/// A transfer to or from one unit (contract §4.2.2, §4.2.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linear {
    /// Memory.
    pub mem: Memory,
    /// Bank or core.
    pub unit: u16,
    /// Offset inside the unit.
    pub offset: u64,
    /// Bytes.
    pub len: u64,
}

/// A transfer of interleaved pages (contract §4.2.3, §4.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paged {
    /// Memory.
    pub mem: Memory,
    /// Payload bytes per page.
    pub page_size: u32,
    /// Offset of page 0 in its unit.
    pub base: u64,
    /// Distance between consecutive pages in one unit.
    pub page_stride: u32,
    /// First page.
    pub start_page: u32,
    /// Pages.
    pub num_pages: u32,
}

impl Paged {
    /// Payload bytes the transfer moves.
    pub fn bytes(&self) -> u64 {
        self.page_size as u64 * self.num_pages as u64
    }
}

/// Length of a `WRITE_LINEAR` record carrying `len` bytes.
pub const fn write_linear_len(len: usize) -> usize {
    PAYLOAD_OFFSET + record_align(len)
}

/// Encodes a `PAD` record filling the whole slot (contract §4.2.1).
pub fn encode_pad(slot: &mut RecordSlot<'_>, meta: RecordMeta) {
    put_header(slot, Opcode::Pad, meta);
}

fn put_linear(slot: &mut RecordSlot<'_>, x: &Linear) {
    slot.put_u8(16, x.mem as u8);
    slot.put_u8(17, 0);
    slot.put_u16(18, x.unit);
    slot.put_u32(20, 0);
    slot.put_u64(24, x.offset);
    slot.put_u64(32, x.len);
    slot.zero(40, FIXED_LEN - 40);
}

fn put_paged(slot: &mut RecordSlot<'_>, x: &Paged) {
    slot.put_u8(16, x.mem as u8);
    slot.zero(17, 3);
    slot.put_u32(20, x.page_size);
    slot.put_u64(24, x.base);
    slot.put_u32(32, x.page_stride);
    slot.put_u32(36, x.start_page);
    slot.put_u32(40, x.num_pages);
    slot.zero(44, FIXED_LEN - 44);
}

/// Encodes a `WRITE_LINEAR` header; the caller writes `x.len` payload bytes at [`PAYLOAD_OFFSET`] and
/// [`pad_payload`] zeroes the tail.
pub fn encode_write_linear(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &Linear) {
    debug_assert_eq!(slot.len(), write_linear_len(x.len as usize));
    put_header(slot, Opcode::WriteLinear, meta);
    put_linear(slot, x);
}

/// Encodes a `WRITE_PAGED` header; the payload follows as for [`encode_write_linear`].
pub fn encode_write_paged(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &Paged) {
    debug_assert_eq!(slot.len(), write_linear_len(x.bytes() as usize));
    put_header(slot, Opcode::WritePaged, meta);
    put_paged(slot, x);
}

/// Zeroes the bytes between the end of a `payload_len` payload and the end of the record, so that no stale ring
/// bytes are ever handed to the device.
pub fn pad_payload(slot: &mut RecordSlot<'_>, payload_len: usize) {
    let end = PAYLOAD_OFFSET + payload_len;
    let len = slot.len();
    slot.zero(end, len - end);
}

/// Encodes a `READ_LINEAR` record (64 bytes).
pub fn encode_read_linear(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &Linear) {
    put_header(slot, Opcode::ReadLinear, meta);
    put_linear(slot, x);
}

/// Encodes a `READ_PAGED` record (64 bytes).
pub fn encode_read_paged(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &Paged) {
    put_header(slot, Opcode::ReadPaged, meta);
    put_paged(slot, x);
}

/// An inclusive rectangle of worker cores (contract §4.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CoreRect {
    /// Left column.
    pub x0: u8,
    /// Top row.
    pub y0: u8,
    /// Right column, inclusive.
    pub x1: u8,
    /// Bottom row, inclusive.
    pub y1: u8,
}

impl CoreRect {
    /// Number of cores in the rectangle (0 if malformed).
    pub fn count(&self) -> usize {
        if self.x1 < self.x0 || self.y1 < self.y0 {
            return 0;
        }
        (self.x1 - self.x0 + 1) as usize * (self.y1 - self.y0 + 1) as usize
    }

    /// Width in cores.
    pub fn width(&self) -> usize {
        (self.x1 as usize + 1).saturating_sub(self.x0 as usize)
    }

    /// The cores in row-major order (the order of per-core runtime arguments).
    pub fn cores(&self) -> impl Iterator<Item = (u8, u8)> + '_ {
        (self.y0..=self.y1).flat_map(move |y| (self.x0..=self.x1).map(move |x| (x, y)))
    }
}

/// A circular-buffer configuration (contract §4.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CbConfig {
    /// CB index the kernel uses.
    pub index: u32,
    /// Bytes per page.
    pub page_size: u32,
    /// Pages.
    pub num_pages: u32,
    /// Data format code.
    pub data_format: u32,
}

/// The contents of a `LAUNCH` record (contract §4.2.6).
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    /// DRAM bank of the kernel image.
    pub kernel_bank: u16,
    /// Offset of the kernel image in that bank.
    pub kernel_offset: u64,
    /// Cores that run the kernel.
    pub rect: CoreRect,
    /// Compile-time arguments.
    pub ct_args: &'a [u32],
    /// Circular buffers.
    pub cbs: &'a [CbConfig],
    /// Initial semaphore values.
    pub sems: &'a [u32],
    /// Runtime argument words per core.
    pub num_rt_args: u16,
    /// Runtime arguments of every core, row-major over `rect`, `num_rt_args` each.
    pub rt_args: &'a [u32],
}

/// Length of the `LAUNCH` record for `l`.
pub fn launch_len(l: &Launch<'_>) -> usize {
    let words = l.ct_args.len() + l.cbs.len() * 4 + l.sems.len() + l.rt_args.len();
    FIXED_LEN + record_align(words * 4)
}

/// Encodes a `LAUNCH` record into a slot of [`launch_len`] bytes.
pub fn encode_launch(slot: &mut RecordSlot<'_>, meta: RecordMeta, l: &Launch<'_>) {
    debug_assert_eq!(slot.len(), launch_len(l));
    debug_assert_eq!(l.rt_args.len(), l.num_rt_args as usize * l.rect.count());
    // The fixed part is built on the stack and stored at once: this encoder runs on every dispatch.
    let mut f = [0u8; FIXED_LEN];
    f[..16].copy_from_slice(&header_bytes(Opcode::Launch, meta, slot.len()));
    f[16..18].copy_from_slice(&l.kernel_bank.to_le_bytes());
    f[18..20].copy_from_slice(&(l.ct_args.len() as u16).to_le_bytes());
    f[20..22].copy_from_slice(&l.num_rt_args.to_le_bytes());
    f[22..24].copy_from_slice(&(l.cbs.len() as u16).to_le_bytes());
    f[24..32].copy_from_slice(&l.kernel_offset.to_le_bytes());
    f[32..36].copy_from_slice(&[l.rect.x0, l.rect.y0, l.rect.x1, l.rect.y1]);
    f[36..38].copy_from_slice(&(l.sems.len() as u16).to_le_bytes());
    slot.put_array(0, f);
    let mut off = FIXED_LEN;
    slot.put_words(off, l.ct_args);
    off += l.ct_args.len() * 4;
    for cb in l.cbs {
        slot.put_words(off, &[cb.index, cb.page_size, cb.num_pages, cb.data_format]);
        off += 16;
    }
    slot.put_words(off, l.sems);
    off += l.sems.len() * 4;
    slot.put_words(off, l.rt_args);
    off += l.rt_args.len() * 4;
    let len = slot.len();
    slot.zero(off, len - off);
}

/// Encodes an `EVENT_RECORD` record (64 bytes).
pub fn encode_event_record(slot: &mut RecordSlot<'_>, meta: RecordMeta, event_id: u32) {
    put_header(slot, Opcode::EventRecord, meta);
    slot.put_u32(16, event_id);
    slot.zero(20, FIXED_LEN - 20);
}

/// Encodes an `EVENT_WAIT` record (64 bytes).
pub fn encode_event_wait(slot: &mut RecordSlot<'_>, meta: RecordMeta, queue: u16, event_id: u32) {
    put_header(slot, Opcode::EventWait, meta);
    slot.put_u16(16, queue);
    slot.put_u16(18, 0);
    slot.put_u32(20, event_id);
    slot.zero(24, FIXED_LEN - 24);
}

/// An `EXEC_TRACE` record's body (contract §4.2.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecTrace {
    /// Bytes per page of the interleaved trace buffer.
    pub page_size: u32,
    /// DRAM offset of the trace buffer in every bank.
    pub base: u64,
    /// Bytes of records.
    pub trace_len: u64,
}

/// Encodes an `EXEC_TRACE` record (64 bytes).
pub fn encode_exec_trace(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &ExecTrace) {
    put_header(slot, Opcode::ExecTrace, meta);
    slot.put_u32(16, x.page_size);
    slot.put_u32(20, 0);
    slot.put_u64(24, x.base);
    slot.put_u64(32, x.trace_len);
    slot.zero(40, FIXED_LEN - 40);
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding (device side, and tests on the host side).

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A decoded record header (contract §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Raw opcode byte.
    pub opcode: u8,
    /// Flags.
    pub flags: RecordFlags,
    /// Total length.
    pub length: u32,
    /// Host tag.
    pub tag: u32,
    /// Profile slot.
    pub profile_slot: u32,
}

/// Decodes the header at the start of `fixed`.
pub fn decode_header(fixed: &[u8; FIXED_LEN]) -> Header {
    Header {
        opcode: fixed[0],
        flags: RecordFlags::from_bits_truncate(fixed[1]),
        length: u32_at(fixed, 4),
        tag: u32_at(fixed, 8),
        profile_slot: u32_at(fixed, 12),
    }
}

/// The fixed part of a `LAUNCH` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchFixed {
    /// DRAM bank of the kernel image.
    pub kernel_bank: u16,
    /// Compile-time argument words.
    pub num_ct_args: u16,
    /// Runtime argument words per core.
    pub num_rt_args: u16,
    /// Circular buffers.
    pub num_cbs: u16,
    /// Offset of the kernel image.
    pub kernel_offset: u64,
    /// Cores.
    pub rect: CoreRect,
    /// Semaphores.
    pub num_sems: u16,
}

impl LaunchFixed {
    /// Bytes of packed arguments after the fixed part.
    pub fn args_bytes(&self) -> usize {
        (self.num_ct_args as usize
            + self.num_cbs as usize * 4
            + self.num_sems as usize
            + self.num_rt_args as usize * self.rect.count())
            * 4
    }
}

/// A decoded record body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// `PAD`.
    Pad,
    /// `WRITE_LINEAR`.
    WriteLinear(Linear),
    /// `WRITE_PAGED`.
    WritePaged(Paged),
    /// `READ_LINEAR`.
    ReadLinear(Linear),
    /// `READ_PAGED`.
    ReadPaged(Paged),
    /// `LAUNCH` (arguments follow the fixed part).
    Launch(LaunchFixed),
    /// `EVENT_RECORD`.
    EventRecord {
        /// Id to publish.
        event_id: u32,
    },
    /// `EVENT_WAIT`.
    EventWait {
        /// Watched queue.
        queue: u16,
        /// Awaited id.
        event_id: u32,
    },
    /// `EXEC_TRACE`.
    ExecTrace(ExecTrace),
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Unknown opcode byte.
    Opcode(u8),
    /// Bad memory byte.
    Memory(u8),
    /// Length not a multiple of 64, too short for the body, or inconsistent with the body.
    Length(u32),
}

fn decode_linear(b: &[u8; FIXED_LEN]) -> Result<Linear, DecodeError> {
    Ok(Linear {
        mem: Memory::from_u8(b[16]).ok_or(DecodeError::Memory(b[16]))?,
        unit: u16_at(b, 18),
        offset: u64_at(b, 24),
        len: u64_at(b, 32),
    })
}

fn decode_paged(b: &[u8; FIXED_LEN]) -> Result<Paged, DecodeError> {
    Ok(Paged {
        mem: Memory::from_u8(b[16]).ok_or(DecodeError::Memory(b[16]))?,
        page_size: u32_at(b, 20),
        base: u64_at(b, 24),
        page_stride: u32_at(b, 32),
        start_page: u32_at(b, 36),
        num_pages: u32_at(b, 40),
    })
}

/// Decodes and validates the fixed part of a record: opcode known, length consistent with the body.
pub fn decode(fixed: &[u8; FIXED_LEN]) -> Result<(Header, Body), DecodeError> {
    let h = decode_header(fixed);
    let len = h.length as usize;
    if len < FIXED_LEN || len % RECORD_ALIGN != 0 {
        return Err(DecodeError::Length(h.length));
    }
    let op = Opcode::from_u8(h.opcode).ok_or(DecodeError::Opcode(h.opcode))?;
    let body = match op {
        Opcode::Pad => Body::Pad,
        Opcode::WriteLinear => {
            let x = decode_linear(fixed)?;
            if x.len > (len - PAYLOAD_OFFSET) as u64 {
                return Err(DecodeError::Length(h.length));
            }
            Body::WriteLinear(x)
        }
        Opcode::WritePaged => {
            let x = decode_paged(fixed)?;
            if x.bytes() > (len - PAYLOAD_OFFSET) as u64 {
                return Err(DecodeError::Length(h.length));
            }
            Body::WritePaged(x)
        }
        Opcode::ReadLinear => Body::ReadLinear(decode_linear(fixed)?),
        Opcode::ReadPaged => Body::ReadPaged(decode_paged(fixed)?),
        Opcode::Launch => {
            let l = LaunchFixed {
                kernel_bank: u16_at(fixed, 16),
                num_ct_args: u16_at(fixed, 18),
                num_rt_args: u16_at(fixed, 20),
                num_cbs: u16_at(fixed, 22),
                kernel_offset: u64_at(fixed, 24),
                rect: CoreRect { x0: fixed[32], y0: fixed[33], x1: fixed[34], y1: fixed[35] },
                num_sems: u16_at(fixed, 36),
            };
            if l.rect.count() == 0 || FIXED_LEN + l.args_bytes() > len {
                return Err(DecodeError::Length(h.length));
            }
            Body::Launch(l)
        }
        Opcode::EventRecord => Body::EventRecord { event_id: u32_at(fixed, 16) },
        Opcode::EventWait => Body::EventWait { queue: u16_at(fixed, 16), event_id: u32_at(fixed, 20) },
        Opcode::ExecTrace => Body::ExecTrace(ExecTrace {
            page_size: u32_at(fixed, 16),
            base: u64_at(fixed, 24),
            trace_len: u64_at(fixed, 32),
        }),
    };
    Ok((h, body))
}

/// The packed arguments of a `LAUNCH`, decoded from the bytes after its fixed part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchArgs {
    /// Compile-time arguments.
    pub ct_args: Vec<u32>,
    /// Circular buffers.
    pub cbs: Vec<CbConfig>,
    /// Initial semaphore values.
    pub sems: Vec<u32>,
    /// Runtime arguments, `num_rt_args` per core, row-major.
    pub rt_args: Vec<u32>,
}

/// Decodes the packed arguments of `l` from `args` (at least `l.args_bytes()` bytes).
pub fn decode_launch_args(l: &LaunchFixed, args: &[u8]) -> LaunchArgs {
    let words: Vec<u32> =
        args[..l.args_bytes()].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let (ct, rest) = words.split_at(l.num_ct_args as usize);
    let (cbw, rest) = rest.split_at(l.num_cbs as usize * 4);
    let (sems, rt) = rest.split_at(l.num_sems as usize);
    LaunchArgs {
        ct_args: ct.to_vec(),
        cbs: cbw
            .chunks_exact(4)
            .map(|c| CbConfig { index: c[0], page_size: c[1], num_pages: c[2], data_format: c[3] })
            .collect(),
        sems: sems.to_vec(),
        rt_args: rt.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Completion entries (contract §5.2).

/// Completion entry kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ComplKind {
    /// Skip to the end of the ring.
    Pad = 1,
    /// Data of a read record.
    ReadData = 2,
}

/// A decoded completion entry header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComplHeader {
    /// Raw kind byte.
    pub kind: u8,
    /// Total bytes of the entry.
    pub length: u32,
    /// Tag of the producing record.
    pub tag: u32,
    /// Payload bytes.
    pub data_len: u32,
}

/// Length of the completion entry carrying `data_len` bytes.
pub const fn compl_len(data_len: usize) -> usize {
    PAYLOAD_OFFSET + record_align(data_len)
}

/// Encodes a completion entry header into the first 16 bytes of `slot`; the rest of the first 64 bytes is zeroed.
pub fn encode_compl(slot: &mut RecordSlot<'_>, kind: ComplKind, tag: u32, data_len: u32) {
    slot.put_u8(0, kind as u8);
    slot.zero(1, 3);
    slot.put_u32(4, slot.len() as u32);
    slot.put_u32(8, tag);
    slot.put_u32(12, data_len);
    slot.zero(16, FIXED_LEN - 16);
}

/// Decodes a completion entry header from its first 16 bytes.
pub fn decode_compl(b: &[u8; 16]) -> ComplHeader {
    ComplHeader { kind: b[0], length: u32_at(b, 4), tag: u32_at(b, 8), data_len: u32_at(b, 12) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(buf: &[u8]) -> [u8; FIXED_LEN] {
        buf[..FIXED_LEN].try_into().unwrap()
    }

    #[test]
    fn write_linear_round_trips() {
        let x = Linear { mem: Memory::Dram, unit: 3, offset: 0x1234_5678, len: 100 };
        let mut buf = vec![0xAAu8; write_linear_len(100)];
        let meta = RecordMeta { flags: RecordFlags::PROFILE, tag: 7, profile_slot: 9 };
        let mut slot = RecordSlot::from_slice(&mut buf);
        encode_write_linear(&mut slot, meta, &x);
        slot.put_bytes(PAYLOAD_OFFSET, &[1u8; 100]);
        pad_payload(&mut slot, 100);
        let (h, b) = decode(&fixed(&buf)).unwrap();
        assert_eq!(h.length as usize, 64 + 128);
        assert_eq!(h.tag, 7);
        assert_eq!(h.profile_slot, 9);
        assert_eq!(h.flags, RecordFlags::PROFILE);
        assert_eq!(b, Body::WriteLinear(x));
        assert!(buf[164..].iter().all(|&v| v == 0), "tail must be zeroed");
    }

    #[test]
    fn launch_round_trips() {
        let rect = CoreRect { x0: 1, y0: 0, x1: 2, y1: 1 };
        let rt: Vec<u32> = (0..12).collect();
        let cbs = [CbConfig { index: 0, page_size: 2048, num_pages: 2, data_format: 0 }];
        let l = Launch {
            kernel_bank: 0,
            kernel_offset: 0x4000,
            rect,
            ct_args: &[5, 6],
            cbs: &cbs,
            sems: &[0],
            num_rt_args: 3,
            rt_args: &rt,
        };
        let mut buf = vec![0xFFu8; launch_len(&l)];
        encode_launch(&mut RecordSlot::from_slice(&mut buf), RecordMeta::default(), &l);
        let (_, body) = decode(&fixed(&buf)).unwrap();
        let Body::Launch(f) = body else { panic!("not a launch") };
        assert_eq!(f.rect, rect);
        let args = decode_launch_args(&f, &buf[FIXED_LEN..]);
        assert_eq!(args.ct_args, vec![5, 6]);
        assert_eq!(args.cbs, cbs.to_vec());
        assert_eq!(args.sems, vec![0]);
        assert_eq!(args.rt_args, rt);
    }

    #[test]
    fn decode_rejects_garbage() {
        let mut buf = [0u8; FIXED_LEN];
        buf[0] = 0x7F;
        buf[4] = 64;
        assert_eq!(decode(&buf), Err(DecodeError::Opcode(0x7F)));
        buf[0] = Opcode::Pad as u8;
        buf[4] = 63;
        assert_eq!(decode(&buf), Err(DecodeError::Length(63)));
        // A write whose payload length exceeds the record.
        let mut buf = vec![0u8; 128];
        let x = Linear { mem: Memory::L1, unit: 0, offset: 0, len: 64 };
        encode_write_linear(&mut RecordSlot::from_slice(&mut buf), RecordMeta::default(), &x);
        buf[32] = 65;
        assert_eq!(decode(&fixed(&buf)), Err(DecodeError::Length(128)));
    }

    #[test]
    fn events_and_trace_round_trip() {
        let mut buf = [0u8; 64];
        encode_event_wait(&mut RecordSlot::from_slice(&mut buf), RecordMeta::default(), 1, u32::MAX);
        assert_eq!(decode(&buf).unwrap().1, Body::EventWait { queue: 1, event_id: u32::MAX });
        let x = ExecTrace { page_size: 4096, base: 0x100_0000, trace_len: 123 * 64 };
        encode_exec_trace(&mut RecordSlot::from_slice(&mut buf), RecordMeta::default(), &x);
        assert_eq!(decode(&buf).unwrap().1, Body::ExecTrace(x));
    }
}
