//! Record and completion-entry formats (contract §4 and §5.2): one encoder per record type, used by live dispatch
//! and by trace capture alike, and the matching decoders the device side uses.
//!
//! Each record type is declared once: a row of the opcode table ([`Opcode`]: byte, contract name, whether a trace
//! may hold it, how a timing model accounts for it, its body layout) and, for its body, one `wire_struct!` that gives
//! every field's type and offset. Encoders and decoders are generated from those layouts; [`Body`] is matched
//! without a catch-all arm wherever every record type must be handled (the decoder here, the emulated device), so a
//! new record type is a compile error at each of those sites until it is handled.

use super::wire::{FieldError, FieldLayout, Wire, table_enum, wire_struct};
use super::{Memory, RECORD_ALIGN};
use std::fmt;
use std::marker::PhantomData;

/// Byte offset of a write record's payload (contract §4.2.2).
pub const PAYLOAD_OFFSET: usize = 64;
/// Size of the fixed part of every record: header plus body (contract §4).
pub const FIXED_LEN: usize = 64;
/// Bytes of the record header (contract §4.1); bodies start here.
pub const HEADER_LEN: usize = 16;

/// How a device that models time (the emulator's paced mode) accounts for a record's execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecTime {
    /// The record's own work (moving data, running kernels, a barrier, or nothing): a record never takes less
    /// time than its work did.
    Own,
    /// Waiting for another queue's event (`EVENT_WAIT`): the wait is not this queue's work and is not charged.
    Waits,
    /// The records it runs (`EXEC_TRACE`): each of those is accounted for on its own.
    Contained,
}

/// One row of the opcode table.
#[derive(Debug)]
pub struct OpcodeInfo {
    /// The name contract §4.2 gives the record type (`WRITE_LINEAR`).
    pub name: &'static str,
    /// Whether a trace may hold it (contract §4.2.9); anything else inside a trace faults with `BAD_RECORD`.
    pub in_trace: bool,
    /// How a timing model accounts for its execution.
    pub time: ExecTime,
    /// Its body's fields (offsets from the start of the record, after the [`HEADER_LEN`] header bytes).
    pub body: &'static [FieldLayout],
}

table_enum! {
    /// Record opcodes (contract §4.2): the one table of record types.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum Opcode: u8, from_u8, OpcodeInfo {
        /// Skip `length` bytes (§4.2.1).
        Pad = 0x01 => { name: "PAD", in_trace: true, time: ExecTime::Own, body: &[] },
        /// Write a payload to one unit (§4.2.2).
        WriteLinear = 0x02 => { name: "WRITE_LINEAR", in_trace: false, time: ExecTime::Own, body: Linear::FIELDS },
        /// Write pages interleaved over units (§4.2.3).
        WritePaged = 0x03 => { name: "WRITE_PAGED", in_trace: false, time: ExecTime::Own, body: Paged::FIELDS },
        /// Read one unit into a completion entry (§4.2.4).
        ReadLinear = 0x04 => { name: "READ_LINEAR", in_trace: false, time: ExecTime::Own, body: Linear::FIELDS },
        /// Read interleaved pages into a completion entry (§4.2.5).
        ReadPaged = 0x05 => { name: "READ_PAGED", in_trace: false, time: ExecTime::Own, body: Paged::FIELDS },
        /// Run a program (§4.2.6).
        Launch = 0x06 => { name: "LAUNCH", in_trace: true, time: ExecTime::Own, body: LaunchFixed::FIELDS },
        /// Barrier, then publish an event id (§4.2.7).
        EventRecord = 0x07 => {
            name: "EVENT_RECORD", in_trace: true, time: ExecTime::Own, body: EventRecord::FIELDS
        },
        /// Stall until another queue's event slot reaches an id (§4.2.8).
        EventWait = 0x08 => { name: "EVENT_WAIT", in_trace: true, time: ExecTime::Waits, body: EventWait::FIELDS },
        /// Run a trace stored in device DRAM (§4.2.9).
        ExecTrace = 0x09 => {
            name: "EXEC_TRACE", in_trace: false, time: ExecTime::Contained, body: ExecTrace::FIELDS
        },
        /// Copy from host memory at an IOVA into device memory, no payload (§4.2.10).
        WriteHost = 0x0A => { name: "WRITE_HOST", in_trace: false, time: ExecTime::Own, body: HostDma::FIELDS },
        /// Copy device memory into host memory at an IOVA, no completion entry (§4.2.10).
        ReadHost = 0x0B => { name: "READ_HOST", in_trace: false, time: ExecTime::Own, body: HostDma::FIELDS },
    }
}

impl Opcode {
    /// The contract's name for the record type (`WRITE_LINEAR`).
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// Whether a trace may hold this record type (contract §4.2.9).
    pub const fn in_trace(self) -> bool {
        self.info().in_trace
    }

    /// How a timing model accounts for this record type's execution.
    pub const fn exec_time(self) -> ExecTime {
        self.info().time
    }

    /// The name of a raw opcode value (the `FAULT_OPCODE` register, a header byte), or `"unknown opcode"`.
    pub fn name_of(raw: u32) -> &'static str {
        u8::try_from(raw).ok().and_then(Opcode::from_u8).map_or("unknown opcode", Opcode::name)
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
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
        // Most parts of a launch are empty or a few words: no `memcpy` call for those.
        if words.is_empty() {
            return;
        }
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

impl Wire for RecordFlags {
    const SIZE: usize = 1;
    #[inline(always)]
    fn put(self, b: &mut [u8]) {
        b[0] = self.bits();
    }
    /// Reserved flag bits are ignored (contract §4.1).
    #[inline(always)]
    fn get(b: &[u8]) -> Option<Self> {
        Some(RecordFlags::from_bits_truncate(b[0]))
    }
}

/// Rounds a byte count up to the record granule.
#[inline]
pub const fn record_align(n: usize) -> usize {
    (n + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1)
}

wire_struct! {
    /// A record header (contract §4.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Header {
        /// Raw opcode byte (raw, so that a fault report can name an unknown one).
        pub opcode: u8 @ 0,
        /// Flags.
        pub flags: RecordFlags @ 1,
        /// Total length.
        pub length: u32 @ 4,
        /// Host tag.
        pub tag: u32 @ 8,
        /// Profile slot.
        pub profile_slot: u32 @ 12,
    }
}

/// Builds a record's fixed part on the stack — header, then the body `put_body` writes, reserved bytes 0 — and
/// stores it into the slot at once: the encoders run on every dispatch, and one 64-byte store sequence is the
/// cheapest way to write both the ring and a capture buffer.
#[inline(always)]
fn put_fixed(slot: &mut RecordSlot<'_>, op: Opcode, meta: RecordMeta, put_body: impl FnOnce(&mut [u8; FIXED_LEN])) {
    debug_assert!(slot.len() % RECORD_ALIGN == 0 && slot.len() >= FIXED_LEN && slot.len() <= u32::MAX as usize);
    let mut f = [0u8; FIXED_LEN];
    let h = Header {
        opcode: op as u8,
        flags: meta.flags,
        length: slot.len() as u32,
        tag: meta.tag,
        profile_slot: meta.profile_slot,
    };
    h.put(&mut f);
    put_body(&mut f);
    slot.put_array(0, f);
}

wire_struct! {
    /// A transfer to or from one unit: the body of `WRITE_LINEAR` and `READ_LINEAR` (contract §4.2.2, §4.2.4).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Linear {
        /// Memory.
        pub mem: Memory @ 16,
        /// Bank or core.
        pub unit: u16 @ 18,
        /// Offset inside the unit.
        pub offset: u64 @ 24,
        /// Bytes.
        pub len: u64 @ 32,
    }
}

wire_struct! {
    /// A transfer of interleaved pages: the body of `WRITE_PAGED` and `READ_PAGED` (contract §4.2.3, §4.2.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Paged {
        /// Memory.
        pub mem: Memory @ 16,
        /// Payload bytes per page.
        pub page_size: u32 @ 20,
        /// Offset of page 0 in its unit.
        pub base: u64 @ 24,
        /// Distance between consecutive pages in one unit.
        pub page_stride: u32 @ 32,
        /// First page.
        pub start_page: u32 @ 36,
        /// Pages.
        pub num_pages: u32 @ 40,
    }
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
    put_fixed(slot, Opcode::Pad, meta, |_| {});
}

/// Encodes a `WRITE_LINEAR` header; the caller writes `x.len` payload bytes at [`PAYLOAD_OFFSET`] and
/// [`pad_payload`] zeroes the tail.
pub fn encode_write_linear(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &Linear) {
    debug_assert_eq!(slot.len(), write_linear_len(x.len as usize));
    put_fixed(slot, Opcode::WriteLinear, meta, |f| x.put(f));
}

/// Encodes a `WRITE_PAGED` header; the payload follows as for [`encode_write_linear`].
pub fn encode_write_paged(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &Paged) {
    debug_assert_eq!(slot.len(), write_linear_len(x.bytes() as usize));
    put_fixed(slot, Opcode::WritePaged, meta, |f| x.put(f));
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
    put_fixed(slot, Opcode::ReadLinear, meta, |f| x.put(f));
}

/// Encodes a `READ_PAGED` record (64 bytes).
pub fn encode_read_paged(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &Paged) {
    put_fixed(slot, Opcode::ReadPaged, meta, |f| x.put(f));
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
        // In usize: a rectangle ending at 255 has 256 columns, which a u8 cannot hold.
        (self.x1 as usize - self.x0 as usize + 1) * (self.y1 as usize - self.y0 as usize + 1)
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

/// `x0, y0, x1, y1`, one byte each (contract §4.2.6).
impl Wire for CoreRect {
    const SIZE: usize = 4;
    #[inline(always)]
    fn put(self, b: &mut [u8]) {
        b.copy_from_slice(&[self.x0, self.y0, self.x1, self.y1]);
    }
    #[inline(always)]
    fn get(b: &[u8]) -> Option<Self> {
        Some(CoreRect { x0: b[0], y0: b[1], x1: b[2], y1: b[3] })
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

impl CbConfig {
    /// Words of one packed configuration.
    pub const WORDS: usize = 4;

    /// The packed words, in contract order.
    #[inline]
    pub fn to_words(&self) -> [u32; CbConfig::WORDS] {
        [self.index, self.page_size, self.num_pages, self.data_format]
    }

    /// Decodes packed words (at least [`CbConfig::WORDS`]).
    #[inline]
    pub fn from_words(w: &[u32]) -> CbConfig {
        CbConfig { index: w[0], page_size: w[1], num_pages: w[2], data_format: w[3] }
    }

    /// L1 bytes the buffer occupies.
    pub fn bytes(&self) -> u64 {
        self.page_size as u64 * self.num_pages as u64
    }
}

/// A per-core runtime word that follows the core's position in the launch rectangle, sent once instead of once per
/// core (contract §4.2.6).
///
/// For the core at row-major position `k` of the rectangle (`k = (y − y0) × width + (x − x0)`, the order of explicit
/// per-core words), the word is `min(base + ⌊k / period⌋ × outer + (k mod period) × inner, limit)`, the products and
/// the sum wrapping modulo 2³²; `period` 0 stands for no period (`⌊k / 0⌋ = 0`, `k mod 0 = k`). With `period` the
/// rectangle's width this is the affine form `base + (y − y0) × outer + (x − x0) × inner`; with another period it
/// follows a split of the cores into groups of `period` (block row `⌊k / period⌋`, block column `k mod period`);
/// `limit` clamps the blocks past a tensor's end. Block bounds that step with the core take one step each.
///
/// `#[repr(C)]`, six `u32` in record order, so a C array of steps can be read as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct ArgStep {
    /// Which per-core word it gives (0-based, below the launch's per-core word count). A launch lists its steps in
    /// increasing `index`.
    pub index: u32,
    /// The value at core 0 of the rectangle.
    pub base: u32,
    /// Cores per group (the rectangle's width for the affine form); 0 for no grouping.
    pub period: u32,
    /// Added per group (per row for the affine form).
    pub outer: u32,
    /// Added per core inside a group (per column for the affine form).
    pub inner: u32,
    /// The largest value (`u32::MAX` for no clamp).
    pub limit: u32,
}

impl ArgStep {
    /// Words of one step in a record.
    pub const WORDS: usize = 6;

    /// The same value on every core.
    pub const fn constant(index: u32, value: u32) -> ArgStep {
        ArgStep { index, base: value, period: 0, outer: 0, inner: 0, limit: u32::MAX }
    }

    /// `base + k × step` for the core at row-major position `k`.
    pub const fn linear(index: u32, base: u32, step: u32) -> ArgStep {
        ArgStep { index, base, period: 0, outer: 0, inner: step, limit: u32::MAX }
    }

    /// `base + (x − x0) × dx + (y − y0) × dy` on a rectangle `width` cores wide.
    pub const fn affine(index: u32, base: u32, dx: u32, dy: u32, width: u32) -> ArgStep {
        ArgStep { index, base, period: width, outer: dy, inner: dx, limit: u32::MAX }
    }

    /// This step with its values clamped to at most `limit`.
    pub const fn clamped(self, limit: u32) -> ArgStep {
        ArgStep { limit, ..self }
    }

    /// The word the core at row-major position `k` receives.
    #[inline]
    pub const fn value(&self, k: u32) -> u32 {
        let (group, pos) = match self.period {
            0 => (0, k),
            p => (k / p, k % p),
        };
        let v = self.base.wrapping_add(group.wrapping_mul(self.outer)).wrapping_add(pos.wrapping_mul(self.inner));
        if v < self.limit { v } else { self.limit }
    }

    /// The step's words, in record order (`index, base, period, outer, inner, limit`).
    #[inline]
    pub const fn to_words(&self) -> [u32; ArgStep::WORDS] {
        [self.index, self.base, self.period, self.outer, self.inner, self.limit]
    }

    /// Decodes a step from at least [`ArgStep::WORDS`] words.
    #[inline]
    pub fn from_words(w: &[u32]) -> ArgStep {
        ArgStep { index: w[0], base: w[1], period: w[2], outer: w[3], inner: w[4], limit: w[5] }
    }
}

/// The contract minor version from which a `LAUNCH` may carry common words and steps (contract §4.2.6, §9); an older
/// device takes every core's words written out ([`encode_launch_expanded`]).
pub const SHARED_ARGS_MINOR: u16 = 2;

/// The runtime arguments of one launch in the compact form of contract §4.2.6. Every core receives its per-core
/// words — each given by a step ([`ArgStep`]), or explicitly with one value per core — followed by the common words:
/// `num_rt_args + common.len()` words in all, where `num_rt_args` is the launch's per-core word count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtArgs<'a> {
    /// Words every core receives after its per-core words (tt-metal's common runtime arguments).
    pub common: &'a [u32],
    /// Per-core words that follow the core's position, in increasing `index`.
    pub steps: &'a [ArgStep],
    /// The per-core words no step gives, core after core in row-major order, in increasing word index: `num_rt_args
    /// − steps.len()` words per core.
    pub per_core: &'a [u32],
}

impl<'a> RtArgs<'a> {
    /// Every core's words explicitly, `num_rt_args` each: the form of contract 1.1.
    pub const fn explicit(per_core: &'a [u32]) -> RtArgs<'a> {
        RtArgs { common: &[], steps: &[], per_core }
    }

    /// Checks the arguments against a launch of `num_rt_args` per-core words on `cores` cores (the rules of contract
    /// §4.2.6 that the encoder relies on).
    pub fn check(&self, num_rt_args: usize, cores: usize) -> Result<(), ArgsError> {
        if num_rt_args + self.common.len() > u16::MAX as usize {
            return Err(ArgsError::TooManyWords { per_core: num_rt_args, common: self.common.len() });
        }
        if self.steps.len() > num_rt_args {
            return Err(ArgsError::TooManySteps { steps: self.steps.len(), per_core: num_rt_args });
        }
        let mut next = 0u64;
        for (i, s) in self.steps.iter().enumerate() {
            if (s.index as u64) < next || s.index as usize >= num_rt_args {
                return Err(ArgsError::StepIndex { step: i, index: s.index, per_core: num_rt_args });
            }
            next = s.index as u64 + 1;
        }
        let expected = (num_rt_args - self.steps.len()).saturating_mul(cores);
        if self.per_core.len() != expected {
            return Err(ArgsError::PerCoreCount { given: self.per_core.len(), expected, cores });
        }
        Ok(())
    }

    /// Words the arguments take in a compact record.
    pub fn words(&self) -> usize {
        self.common.len() + self.steps.len() * ArgStep::WORDS + self.per_core.len()
    }
}

/// Runtime arguments that break a rule of contract §4.2.6 ([`RtArgs::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// More than 65535 runtime words per core, per-core and common together.
    TooManyWords {
        /// Per-core words.
        per_core: usize,
        /// Common words.
        common: usize,
    },
    /// More steps than per-core words.
    TooManySteps {
        /// Steps given.
        steps: usize,
        /// Per-core words.
        per_core: usize,
    },
    /// A step's index is not above the previous step's, or not below the per-core word count.
    StepIndex {
        /// Position of the step in the list.
        step: usize,
        /// Its index.
        index: u32,
        /// Per-core words.
        per_core: usize,
    },
    /// The explicit per-core words are not `(per-core words − steps) × cores`.
    PerCoreCount {
        /// Words given.
        given: usize,
        /// Words expected.
        expected: usize,
        /// Cores of the launch.
        cores: usize,
    },
}

impl fmt::Display for ArgsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ArgsError::TooManyWords { per_core, common } => {
                write!(f, "{per_core} per-core and {common} common words: a core receives at most 65535 runtime words")
            }
            ArgsError::TooManySteps { steps, per_core } => {
                write!(f, "{steps} steps for {per_core} per-core words: each step gives one per-core word")
            }
            ArgsError::StepIndex { step, index, per_core } => write!(
                f,
                "step {step} gives word {index}: steps must name per-core words (below {per_core}) in increasing order"
            ),
            ArgsError::PerCoreCount { given, expected, cores } => write!(
                f,
                "{given} explicit per-core words given; {cores} cores need {expected} (the per-core words no step \
                 gives, for every core)"
            ),
        }
    }
}

impl std::error::Error for ArgsError {}

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
    /// Per-core runtime words each core receives before the common ones (stepped and explicit).
    pub num_rt_args: u16,
    /// The runtime arguments.
    pub args: RtArgs<'a>,
}

impl Launch<'_> {
    /// The fixed part of the compact record.
    fn fixed(&self) -> LaunchFixed {
        LaunchFixed {
            kernel_bank: self.kernel_bank,
            num_ct_args: self.ct_args.len() as u16,
            num_rt_args: self.num_rt_args,
            num_cbs: self.cbs.len() as u16,
            kernel_offset: self.kernel_offset,
            rect: self.rect,
            num_sems: self.sems.len() as u16,
            num_common_args: self.args.common.len() as u16,
            num_steps: self.args.steps.len() as u16,
        }
    }

    /// Words of the parts every form shares: compile-time arguments, circular buffers, semaphores.
    fn config_words(&self) -> usize {
        self.ct_args.len() + self.cbs.len() * CbConfig::WORDS + self.sems.len()
    }
}

/// Length of the compact `LAUNCH` record for `l` ([`encode_launch`]).
pub fn launch_len(l: &Launch<'_>) -> usize {
    FIXED_LEN + record_align((l.config_words() + l.args.words()) * 4)
}

/// Length of the `LAUNCH` record for `l` with every core's arguments written out ([`encode_launch_expanded`]).
pub fn launch_len_expanded(l: &Launch<'_>) -> usize {
    let per_core = l.num_rt_args as usize + l.args.common.len();
    FIXED_LEN + record_align((l.config_words() + per_core * l.rect.count()) * 4)
}

wire_struct! {
    /// The fixed part of a `LAUNCH` record (contract §4.2.6); the packed arguments follow it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct LaunchFixed {
        /// DRAM bank of the kernel image.
        pub kernel_bank: u16 @ 16,
        /// Compile-time argument words.
        pub num_ct_args: u16 @ 18,
        /// Per-core runtime argument words (stepped and explicit), before the common ones.
        pub num_rt_args: u16 @ 20,
        /// Circular buffers.
        pub num_cbs: u16 @ 22,
        /// Offset of the kernel image.
        pub kernel_offset: u64 @ 24,
        /// Cores.
        pub rect: CoreRect @ 32,
        /// Semaphores.
        pub num_sems: u16 @ 36,
        /// Common runtime argument words, which every core receives after its per-core words (since 1.2).
        pub num_common_args: u16 @ 38,
        /// Per-core words given by a step rather than per core (since 1.2).
        pub num_steps: u16 @ 40,
    }
}

/// Where each part of a `LAUNCH` record's packed arguments starts, in bytes from the start of the record (contract
/// §4.2.6 order). A runtime-argument word can be found (and patched) in a captured record from these offsets:
/// common word `i` is at `common + 4 i`, step `s` at `steps + 24 s` (its `base` 4 bytes further), and explicit
/// per-core word `e` of the core at position `k` at `per_core + 4 (k × explicit + e)`; [`LaunchWords::locate`] does
/// that arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchLayout {
    /// Compile-time arguments.
    pub ct_args: usize,
    /// Circular-buffer configurations.
    pub cbs: usize,
    /// Semaphore values.
    pub sems: usize,
    /// Common runtime arguments.
    pub common: usize,
    /// Steps.
    pub steps: usize,
    /// Explicit per-core words.
    pub per_core: usize,
    /// The end of the arguments (zero padding follows up to the record's length).
    pub end: usize,
}

/// Where the runtime word a core receives lives in a `LAUNCH` record ([`LaunchWords::locate`]), in bytes from the
/// start of the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgLocation {
    /// A common word: one word every core receives.
    Common(usize),
    /// A stepped word: the step's [`ArgStep::WORDS`] words start here (its `base` 4 bytes further).
    Step(usize),
    /// An explicit word of this core only.
    PerCore(usize),
}

/// The packed arguments of a `LAUNCH`, as words, split by kind (borrowed; see [`LaunchArgs`] for an owned copy).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchWords<'a> {
    /// Compile-time arguments.
    pub ct_args: &'a [u32],
    /// Circular-buffer configurations, [`CbConfig::WORDS`] each.
    pub cbs: &'a [u32],
    /// Initial semaphore values.
    pub sems: &'a [u32],
    /// Common runtime arguments.
    pub common: &'a [u32],
    /// Steps, [`ArgStep::WORDS`] each.
    pub steps: &'a [u32],
    /// Explicit per-core words, core after core in row-major order.
    pub per_core: &'a [u32],
    /// Per-core words each core receives (stepped and explicit).
    num_rt_args: usize,
}

impl LaunchFixed {
    /// Explicit per-core words per core (0 for a malformed record with more steps than per-core words, which
    /// [`decode`] rejects).
    pub fn explicit_words(&self) -> usize {
        (self.num_rt_args as usize).saturating_sub(self.num_steps as usize)
    }

    /// Words of packed arguments after the fixed part.
    pub fn args_words(&self) -> usize {
        self.num_ct_args as usize
            + self.num_cbs as usize * CbConfig::WORDS
            + self.num_sems as usize
            + self.num_common_args as usize
            + self.num_steps as usize * ArgStep::WORDS
            + self.explicit_words() * self.rect.count()
    }

    /// Bytes of packed arguments after the fixed part.
    pub fn args_bytes(&self) -> usize {
        self.args_words() * 4
    }

    /// Runtime words each core's kernel instance receives: its per-core words, then the common words.
    pub fn core_words(&self) -> usize {
        self.num_rt_args as usize + self.num_common_args as usize
    }

    /// Where each part of the packed arguments starts.
    pub fn layout(&self) -> LaunchLayout {
        let ct_args = FIXED_LEN;
        let cbs = ct_args + self.num_ct_args as usize * 4;
        let sems = cbs + self.num_cbs as usize * CbConfig::WORDS * 4;
        let common = sems + self.num_sems as usize * 4;
        let steps = common + self.num_common_args as usize * 4;
        let per_core = steps + self.num_steps as usize * ArgStep::WORDS * 4;
        let end = per_core + self.explicit_words() * self.rect.count() * 4;
        LaunchLayout { ct_args, cbs, sems, common, steps, per_core, end }
    }

    /// Splits the packed argument words (contract §4.2.6 order) into their kinds; `None` if `words` is shorter than
    /// [`LaunchFixed::args_words`].
    pub fn split_words<'a>(&self, words: &'a [u32]) -> Option<LaunchWords<'a>> {
        let words = words.get(..self.args_words())?;
        let (ct_args, rest) = words.split_at(self.num_ct_args as usize);
        let (cbs, rest) = rest.split_at(self.num_cbs as usize * CbConfig::WORDS);
        let (sems, rest) = rest.split_at(self.num_sems as usize);
        let (common, rest) = rest.split_at(self.num_common_args as usize);
        let (steps, per_core) = rest.split_at(self.num_steps as usize * ArgStep::WORDS);
        Some(LaunchWords { ct_args, cbs, sems, common, steps, per_core, num_rt_args: self.num_rt_args as usize })
    }
}

impl LaunchWords<'_> {
    /// Whether the steps name per-core words in strictly increasing order, each below the per-core word count
    /// (contract §4.2.6; a record that breaks it faults with `BAD_RECORD`).
    pub fn steps_valid(&self) -> bool {
        let mut next = 0usize;
        for s in self.steps.chunks_exact(ArgStep::WORDS) {
            let i = s[0] as usize;
            if i < next || i >= self.num_rt_args {
                return false;
            }
            next = i + 1;
        }
        true
    }

    /// Writes the runtime words the core at row-major position `k` receives — its per-core words, then the common
    /// words — into `out` (cleared first). Expects [`LaunchWords::steps_valid`] and `k` inside the rectangle.
    pub fn core_args(&self, k: usize, out: &mut Vec<u32>) {
        let explicit = self.num_rt_args - self.steps.len() / ArgStep::WORDS;
        let mine = &self.per_core[k * explicit..(k + 1) * explicit];
        out.clear();
        let steps = self.steps.chunks_exact(ArgStep::WORDS).map(ArgStep::from_words);
        expand_core(self.num_rt_args, steps, mine, k, |w| out.push(w));
        out.extend_from_slice(self.common);
    }

    /// Where word `word` of the runtime words the core at position `core` receives lives in the record, or `None`
    /// if there is no such core or word. `fixed` is the record's fixed part (whose layout these words follow).
    pub fn locate(&self, fixed: &LaunchFixed, core: usize, word: usize) -> Option<ArgLocation> {
        let lay = fixed.layout();
        if core >= fixed.rect.count() || word >= self.num_rt_args + self.common.len() {
            return None;
        }
        if word >= self.num_rt_args {
            return Some(ArgLocation::Common(lay.common + (word - self.num_rt_args) * 4));
        }
        let steps = self.steps.chunks_exact(ArgStep::WORDS);
        let mut before = 0;
        for (s, w) in steps.enumerate() {
            match (w[0] as usize).cmp(&word) {
                std::cmp::Ordering::Less => before += 1,
                std::cmp::Ordering::Equal => return Some(ArgLocation::Step(lay.steps + s * ArgStep::WORDS * 4)),
                std::cmp::Ordering::Greater => break,
            }
        }
        let explicit = fixed.explicit_words();
        Some(ArgLocation::PerCore(lay.per_core + (core * explicit + word - before) * 4))
    }
}

/// Produces the `num_rt_args` per-core words of the core at position `k`, in order, through `put`: word `j` is the
/// value of the step whose index is `j`, or else the next of `mine` (the core's explicit words) — the expansion every
/// reader of a compact record performs (contract §4.2.6).
fn expand_core(
    num_rt_args: usize,
    steps: impl Iterator<Item = ArgStep>,
    mine: &[u32],
    k: usize,
    mut put: impl FnMut(u32),
) {
    let mut steps = steps.peekable();
    let mut explicit = mine.iter();
    for j in 0..num_rt_args {
        let w = match steps.next_if(|s| s.index as usize == j) {
            Some(s) => s.value(k as u32),
            None => explicit.next().copied().unwrap_or(0),
        };
        put(w);
    }
}

/// Where the parts of `l`'s compact record ([`encode_launch`]) start: the encoder's own offsets, so a caller that
/// captured the record can find (and patch) any runtime-argument word in it.
pub fn launch_layout(l: &Launch<'_>) -> LaunchLayout {
    l.fixed().layout()
}

/// Encodes the compact `LAUNCH` record of `l` (contract §4.2.6, since 1.2) into a slot of [`launch_len`] bytes, its
/// parts where [`launch_layout`] says. Live dispatch and trace capture both write launches with this function.
pub fn encode_launch(slot: &mut RecordSlot<'_>, meta: RecordMeta, l: &Launch<'_>) {
    debug_assert_eq!(slot.len(), launch_len(l));
    debug_assert_eq!(l.args.check(l.num_rt_args as usize, l.rect.count()), Ok(()));
    let fixed = l.fixed();
    let lay = fixed.layout();
    put_fixed(slot, Opcode::Launch, meta, |f| fixed.put(f));
    slot.put_words(lay.ct_args, l.ct_args);
    for (i, cb) in l.cbs.iter().enumerate() {
        slot.put_words(lay.cbs + i * CbConfig::WORDS * 4, &cb.to_words());
    }
    slot.put_words(lay.sems, l.sems);
    slot.put_words(lay.common, l.args.common);
    for (i, s) in l.args.steps.iter().enumerate() {
        slot.put_words(lay.steps + i * ArgStep::WORDS * 4, &s.to_words());
    }
    slot.put_words(lay.per_core, l.args.per_core);
    let len = slot.len();
    slot.zero(lay.end, len - lay.end);
}

/// Encodes `l` as a `LAUNCH` record with every core's runtime words written out and no common words or steps — the
/// form of contract 1.1, for a device older than 1.2 — into a slot of [`launch_len_expanded`] bytes. Its cores receive
/// exactly the words [`encode_launch`]'s would.
pub fn encode_launch_expanded(slot: &mut RecordSlot<'_>, meta: RecordMeta, l: &Launch<'_>) {
    debug_assert_eq!(slot.len(), launch_len_expanded(l));
    debug_assert_eq!(l.args.check(l.num_rt_args as usize, l.rect.count()), Ok(()));
    let per_core = l.num_rt_args as usize + l.args.common.len();
    let fixed = LaunchFixed { num_rt_args: per_core as u16, num_common_args: 0, num_steps: 0, ..l.fixed() };
    let lay = fixed.layout();
    put_fixed(slot, Opcode::Launch, meta, |f| fixed.put(f));
    slot.put_words(lay.ct_args, l.ct_args);
    for (i, cb) in l.cbs.iter().enumerate() {
        slot.put_words(lay.cbs + i * CbConfig::WORDS * 4, &cb.to_words());
    }
    slot.put_words(lay.sems, l.sems);
    let explicit = l.num_rt_args as usize - l.args.steps.len();
    let mut off = lay.per_core;
    for k in 0..l.rect.count() {
        let mine = &l.args.per_core[k * explicit..(k + 1) * explicit];
        expand_core(l.num_rt_args as usize, l.args.steps.iter().copied(), mine, k, |w| {
            slot.put_u32(off, w);
            off += 4;
        });
        slot.put_words(off, l.args.common);
        off += l.args.common.len() * 4;
    }
    let len = slot.len();
    slot.zero(lay.end, len - lay.end);
}

wire_struct! {
    /// The body of an `EVENT_RECORD` record (contract §4.2.7).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EventRecord {
        /// Id to publish.
        pub event_id: u32 @ 16,
    }
}

wire_struct! {
    /// The body of an `EVENT_WAIT` record (contract §4.2.8).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct EventWait {
        /// Watched queue.
        pub queue: u16 @ 16,
        /// Awaited id.
        pub event_id: u32 @ 20,
    }
}

/// Encodes an `EVENT_RECORD` record (64 bytes).
pub fn encode_event_record(slot: &mut RecordSlot<'_>, meta: RecordMeta, event_id: u32) {
    put_fixed(slot, Opcode::EventRecord, meta, |f| EventRecord { event_id }.put(f));
}

/// Encodes an `EVENT_WAIT` record (64 bytes).
pub fn encode_event_wait(slot: &mut RecordSlot<'_>, meta: RecordMeta, queue: u16, event_id: u32) {
    put_fixed(slot, Opcode::EventWait, meta, |f| EventWait { queue, event_id }.put(f));
}

wire_struct! {
    /// The body of an `EXEC_TRACE` record (contract §4.2.9).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
    pub struct ExecTrace {
        /// Bytes per page of the interleaved trace buffer.
        pub page_size: u32 @ 16,
        /// Entries of the wait table that follows the fixed part (since 1.4).
        pub num_waits: u16 @ 20,
        /// DRAM offset of the trace buffer in every bank.
        pub base: u64 @ 24,
        /// Bytes of records.
        pub trace_len: u64 @ 32,
        /// Added to the id of every `EVENT_RECORD` inside the trace (since 1.4): each replay publishes fresh ids.
        pub event_base: u32 @ 40,
    }
}

wire_struct! {
    /// The body of `WRITE_HOST` and `READ_HOST` (contract §4.2.10): `count` pieces of `piece` bytes moved between
    /// host memory (piece `k` at IOVA `iova + k × host_stride`) and device memory (linear: unit `unit` at
    /// `base + k × dev_stride`; paged: page `start_page + k` of the interleaved layout with `dev_stride` as the page
    /// stride).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct HostDma {
        /// Memory.
        pub mem: Memory @ 16,
        /// 0: linear (one unit), 1: paged (interleaved pages); anything else faults with `BAD_RECORD`.
        pub mode: u8 @ 17,
        /// Bank or core (linear mode).
        pub unit: u16 @ 18,
        /// Bytes per piece.
        pub piece: u32 @ 20,
        /// Linear: offset of piece 0 in the unit; paged: offset of page 0 in its unit.
        pub base: u64 @ 24,
        /// Device distance between consecutive pieces (linear) or pages of one unit (paged).
        pub dev_stride: u32 @ 32,
        /// First page (paged mode).
        pub start_page: u32 @ 36,
        /// Pieces.
        pub count: u32 @ 40,
        /// Host distance between consecutive pieces.
        pub host_stride: u32 @ 44,
        /// IOVA of piece 0 in host memory.
        pub iova: u64 @ 48,
    }
}

/// [`HostDma::mode`] values.
pub mod host_dma_mode {
    /// One unit, pieces `dev_stride` apart.
    pub const LINEAR: u8 = 0;
    /// Interleaved pages (contract §4.2).
    pub const PAGED: u8 = 1;
}

impl HostDma {
    /// Bytes moved.
    pub fn bytes(&self) -> u64 {
        self.piece as u64 * self.count as u64
    }

    /// The host IOVA range the record touches, `[iova, iova + span)`; `None` if it would pass 2⁶⁴ (the device
    /// faults with `IOMMU` at `iova`).
    pub fn host_span(&self) -> Option<u64> {
        if self.count == 0 || self.piece == 0 {
            return Some(0);
        }
        (self.count as u64 - 1).checked_mul(self.host_stride as u64)?.checked_add(self.piece as u64)
    }
}

/// Encodes a `WRITE_HOST` record (64 bytes).
pub fn encode_write_host(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &HostDma) {
    put_fixed(slot, Opcode::WriteHost, meta, |f| x.put(f));
}

/// Encodes a `READ_HOST` record (64 bytes).
pub fn encode_read_host(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &HostDma) {
    put_fixed(slot, Opcode::ReadHost, meta, |f| x.put(f));
}

/// Bytes of one entry of an `EXEC_TRACE` record's wait table (contract §4.2.9).
pub const WAIT_ENTRY_LEN: usize = 8;

/// One entry of an `EXEC_TRACE` record's wait table (contract §4.2.9): what an `EVENT_WAIT` inside the trace whose
/// `event_id` is this entry's index waits for, in this replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct WaitEntry {
    /// The queue whose event slot is watched.
    pub queue: u16,
    /// The awaited id.
    pub event_id: u32,
}

impl WaitEntry {
    /// The entry's 8 bytes: `u16 queue`, `u16` reserved, `u32 event_id`.
    pub fn to_bytes(self) -> [u8; WAIT_ENTRY_LEN] {
        let mut b = [0u8; WAIT_ENTRY_LEN];
        b[..2].copy_from_slice(&self.queue.to_le_bytes());
        b[4..].copy_from_slice(&self.event_id.to_le_bytes());
        b
    }

    /// Decodes an entry from its 8 bytes (reserved bytes ignored).
    pub fn from_bytes(b: &[u8; WAIT_ENTRY_LEN]) -> WaitEntry {
        WaitEntry { queue: u16::from_le_bytes([b[0], b[1]]), event_id: u32::from_le_bytes([b[4], b[5], b[6], b[7]]) }
    }
}

/// Length of an `EXEC_TRACE` record with a wait table of `num_waits` entries.
pub const fn exec_trace_len(num_waits: usize) -> usize {
    FIXED_LEN + record_align(num_waits * WAIT_ENTRY_LEN)
}

/// Encodes an `EXEC_TRACE` record with its wait table into a slot of [`exec_trace_len`]`(waits.len())` bytes;
/// `x.num_waits` is taken from `waits`.
pub fn encode_exec_trace(slot: &mut RecordSlot<'_>, meta: RecordMeta, x: &ExecTrace, waits: &[WaitEntry]) {
    debug_assert_eq!(slot.len(), exec_trace_len(waits.len()));
    let x = ExecTrace { num_waits: waits.len() as u16, ..*x };
    put_fixed(slot, Opcode::ExecTrace, meta, |f| x.put(f));
    let mut off = FIXED_LEN;
    for w in waits {
        slot.put_bytes(off, &w.to_bytes());
        off += WAIT_ENTRY_LEN;
    }
    let len = slot.len();
    slot.zero(off, len - off);
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding (device side, and tests on the host side).

/// Decodes the header at the start of `fixed`, whatever its values (the device reports a bad record's tag and
/// opcode from it).
pub fn decode_header(fixed: &[u8; FIXED_LEN]) -> Header {
    match Header::get(fixed) {
        Ok(h) => h,
        Err(e) => unreachable!("{e}: every header field type accepts any bytes"),
    }
}

/// A decoded record body: one variant per [`Opcode`].
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
    EventRecord(EventRecord),
    /// `EVENT_WAIT`.
    EventWait(EventWait),
    /// `EXEC_TRACE`.
    ExecTrace(ExecTrace),
    /// `WRITE_HOST`.
    WriteHost(HostDma),
    /// `READ_HOST`.
    ReadHost(HostDma),
}

impl Body {
    /// The record type.
    pub const fn opcode(&self) -> Opcode {
        match self {
            Body::Pad => Opcode::Pad,
            Body::WriteLinear(_) => Opcode::WriteLinear,
            Body::WritePaged(_) => Opcode::WritePaged,
            Body::ReadLinear(_) => Opcode::ReadLinear,
            Body::ReadPaged(_) => Opcode::ReadPaged,
            Body::Launch(_) => Opcode::Launch,
            Body::EventRecord(_) => Opcode::EventRecord,
            Body::EventWait(_) => Opcode::EventWait,
            Body::ExecTrace(_) => Opcode::ExecTrace,
            Body::WriteHost(_) => Opcode::WriteHost,
            Body::ReadHost(_) => Opcode::ReadHost,
        }
    }

    /// Whether a record of `length` bytes (a multiple of 64, at least 64) holds this body and what follows it.
    fn fits(&self, length: usize) -> bool {
        let payload = (length - PAYLOAD_OFFSET) as u64;
        match self {
            Body::WriteLinear(x) => x.len <= payload,
            Body::WritePaged(x) => x.bytes() <= payload,
            Body::Launch(l) => {
                l.rect.count() != 0 && l.num_steps <= l.num_rt_args && FIXED_LEN + l.args_bytes() <= length
            }
            Body::ExecTrace(x) => FIXED_LEN + x.num_waits as usize * WAIT_ENTRY_LEN <= length,
            Body::Pad
            | Body::ReadLinear(_)
            | Body::ReadPaged(_)
            | Body::EventRecord(_)
            | Body::EventWait(_)
            | Body::WriteHost(_)
            | Body::ReadHost(_) => true,
        }
    }
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Unknown opcode byte.
    Opcode(u8),
    /// A field held a value outside its type (a memory byte other than DRAM or L1).
    Field(FieldError),
    /// Length not a multiple of 64, too short for the body, or inconsistent with the body.
    Length(u32),
}

impl From<FieldError> for DecodeError {
    fn from(e: FieldError) -> DecodeError {
        DecodeError::Field(e)
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Opcode(op) => write!(f, "unknown opcode {op:#04x} (contract §4.2)"),
            DecodeError::Field(e) => write!(f, "{e} (contract §4.2)"),
            DecodeError::Length(len) => {
                write!(f, "record length {len} is not a multiple of 64, or too short for its body (contract §4.1)")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes and validates the fixed part of a record: opcode known, fields valid, length consistent with the body.
pub fn decode(fixed: &[u8; FIXED_LEN]) -> Result<(Header, Body), DecodeError> {
    let h = decode_header(fixed);
    let len = h.length as usize;
    if len < FIXED_LEN || len % RECORD_ALIGN != 0 {
        return Err(DecodeError::Length(h.length));
    }
    let op = Opcode::from_u8(h.opcode).ok_or(DecodeError::Opcode(h.opcode))?;
    let body = match op {
        Opcode::Pad => Body::Pad,
        Opcode::WriteLinear => Body::WriteLinear(Linear::get(fixed)?),
        Opcode::WritePaged => Body::WritePaged(Paged::get(fixed)?),
        Opcode::ReadLinear => Body::ReadLinear(Linear::get(fixed)?),
        Opcode::ReadPaged => Body::ReadPaged(Paged::get(fixed)?),
        Opcode::Launch => Body::Launch(LaunchFixed::get(fixed)?),
        Opcode::EventRecord => Body::EventRecord(EventRecord::get(fixed)?),
        Opcode::EventWait => Body::EventWait(EventWait::get(fixed)?),
        Opcode::ExecTrace => Body::ExecTrace(ExecTrace::get(fixed)?),
        Opcode::WriteHost => Body::WriteHost(HostDma::get(fixed)?),
        Opcode::ReadHost => Body::ReadHost(HostDma::get(fixed)?),
    };
    if !body.fits(len) {
        return Err(DecodeError::Length(h.length));
    }
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
    /// Common runtime arguments.
    pub common: Vec<u32>,
    /// Steps.
    pub steps: Vec<ArgStep>,
    /// Explicit per-core words, core after core in row-major order.
    pub per_core: Vec<u32>,
}

impl LaunchArgs {
    /// The runtime arguments, borrowed.
    pub fn rt(&self) -> RtArgs<'_> {
        RtArgs { common: &self.common, steps: &self.steps, per_core: &self.per_core }
    }
}

impl RtArgs<'_> {
    /// The runtime words the core at row-major position `k` receives in a launch of `num_rt_args` per-core words: its
    /// per-core words, then the common words. Expects arguments that pass [`RtArgs::check`].
    pub fn core_args(&self, num_rt_args: usize, k: usize) -> Vec<u32> {
        let explicit = num_rt_args - self.steps.len();
        let mut out = Vec::with_capacity(num_rt_args + self.common.len());
        expand_core(
            num_rt_args,
            self.steps.iter().copied(),
            &self.per_core[k * explicit..(k + 1) * explicit],
            k,
            |w| out.push(w),
        );
        out.extend_from_slice(self.common);
        out
    }
}

/// Decodes the packed arguments of `l` from `args`; `None` if `args` is shorter than `l.args_bytes()`.
pub fn decode_launch_args(l: &LaunchFixed, args: &[u8]) -> Option<LaunchArgs> {
    let words: Vec<u32> =
        args.get(..l.args_bytes())?.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let w = l.split_words(&words)?;
    Some(LaunchArgs {
        ct_args: w.ct_args.to_vec(),
        cbs: w.cbs.chunks_exact(CbConfig::WORDS).map(CbConfig::from_words).collect(),
        sems: w.sems.to_vec(),
        common: w.common.to_vec(),
        steps: w.steps.chunks_exact(ArgStep::WORDS).map(ArgStep::from_words).collect(),
        per_core: w.per_core.to_vec(),
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Completion entries (contract §5.2).

/// One row of the completion-kind table.
#[derive(Debug)]
pub struct ComplKindInfo {
    /// The contract's name (`READ_DATA`).
    pub name: &'static str,
}

table_enum! {
    /// Completion entry kinds (contract §5.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum ComplKind: u8, from_u8, ComplKindInfo {
        /// Skip to the end of the ring.
        Pad = 1 => { name: "PAD" },
        /// Data of a read record.
        ReadData = 2 => { name: "READ_DATA" },
    }
}

wire_struct! {
    /// A completion entry header (contract §5.2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct ComplHeader {
        /// Raw kind byte (raw, so that the host can report an unknown one).
        pub kind: u8 @ 0,
        /// Total bytes of the entry.
        pub length: u32 @ 4,
        /// Tag of the producing record.
        pub tag: u32 @ 8,
        /// Payload bytes.
        pub data_len: u32 @ 12,
    }
}

/// Bytes of a completion entry header.
pub const COMPL_HEADER_LEN: usize = 16;

/// Length of the completion entry carrying `data_len` bytes.
pub const fn compl_len(data_len: usize) -> usize {
    PAYLOAD_OFFSET + record_align(data_len)
}

/// Encodes a completion entry header into the first 16 bytes of `slot`; the rest of the first 64 bytes is zeroed.
pub fn encode_compl(slot: &mut RecordSlot<'_>, kind: ComplKind, tag: u32, data_len: u32) {
    debug_assert!(slot.len() >= FIXED_LEN && slot.len() <= u32::MAX as usize);
    let mut f = [0u8; FIXED_LEN];
    ComplHeader { kind: kind as u8, length: slot.len() as u32, tag, data_len }.put(&mut f);
    slot.put_array(0, f);
}

/// Decodes a completion entry header from its first 16 bytes.
pub fn decode_compl(b: &[u8; COMPL_HEADER_LEN]) -> ComplHeader {
    match ComplHeader::get(b) {
        Ok(h) => h,
        Err(e) => unreachable!("{e}: every completion header field type accepts any bytes"),
    }
}

// Every layout fits where it must: headers in their 16 bytes, bodies between the header and the payload.
const _: () = {
    assert!(Header::END <= HEADER_LEN && ComplHeader::END <= COMPL_HEADER_LEN);
    let mut i = 0;
    while i < Opcode::ALL.len() {
        let body = Opcode::ALL[i].info().body;
        let mut j = 0;
        while j < body.len() {
            assert!(body[j].offset >= HEADER_LEN && body[j].offset + body[j].size <= FIXED_LEN);
            j += 1;
        }
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixed(buf: &[u8]) -> [u8; FIXED_LEN] {
        buf[..FIXED_LEN].try_into().unwrap()
    }

    /// Encodes `n` bytes through `encode` into a buffer pre-filled with garbage, as a reused ring slot would be.
    fn encoded(n: usize, encode: impl FnOnce(&mut RecordSlot<'_>)) -> Vec<u8> {
        let mut buf = vec![0xA5u8; n];
        encode(&mut RecordSlot::from_slice(&mut buf));
        buf
    }

    /// One record of each type, through its encoder, and the body it must decode to. The match names every opcode:
    /// a new record type must add its sample here.
    fn sample(op: Opcode, meta: RecordMeta) -> (Vec<u8>, Body) {
        let lin = Linear { mem: Memory::L1, unit: 9, offset: 0x1234_5678_9abc, len: 100 };
        let paged =
            Paged { mem: Memory::Dram, page_size: 48, base: 0x4000, page_stride: 64, start_page: 3, num_pages: 2 };
        match op {
            Opcode::Pad => (encoded(128, |s| encode_pad(s, meta)), Body::Pad),
            Opcode::WriteLinear => {
                let buf = encoded(write_linear_len(100), |s| {
                    encode_write_linear(s, meta, &lin);
                    s.put_bytes(PAYLOAD_OFFSET, &[7; 100]);
                    pad_payload(s, 100);
                });
                (buf, Body::WriteLinear(lin))
            }
            Opcode::WritePaged => {
                let buf = encoded(write_linear_len(96), |s| {
                    encode_write_paged(s, meta, &paged);
                    s.put_bytes(PAYLOAD_OFFSET, &[7; 96]);
                    pad_payload(s, 96);
                });
                (buf, Body::WritePaged(paged))
            }
            Opcode::ReadLinear => (encoded(FIXED_LEN, |s| encode_read_linear(s, meta, &lin)), Body::ReadLinear(lin)),
            Opcode::ReadPaged => (encoded(FIXED_LEN, |s| encode_read_paged(s, meta, &paged)), Body::ReadPaged(paged)),
            Opcode::Launch => {
                let cbs = [CbConfig { index: 1, page_size: 2048, num_pages: 2, data_format: 0 }];
                let rect = CoreRect { x0: 1, y0: 0, x1: 2, y1: 0 };
                // Three per-core words, the middle one stepped, and two common words.
                let steps = [ArgStep::linear(1, 100, 7)];
                let per_core: Vec<u32> = (0..4).collect();
                let l = Launch {
                    kernel_bank: 2,
                    kernel_offset: 0x8000,
                    rect,
                    ct_args: &[5],
                    cbs: &cbs,
                    sems: &[0, 1],
                    num_rt_args: 3,
                    args: RtArgs { common: &[40, 41], steps: &steps, per_core: &per_core },
                };
                let f = LaunchFixed {
                    kernel_bank: 2,
                    num_ct_args: 1,
                    num_rt_args: 3,
                    num_cbs: 1,
                    kernel_offset: 0x8000,
                    rect,
                    num_sems: 2,
                    num_common_args: 2,
                    num_steps: 1,
                };
                (encoded(launch_len(&l), |s| encode_launch(s, meta, &l)), Body::Launch(f))
            }
            Opcode::EventRecord => (
                encoded(FIXED_LEN, |s| encode_event_record(s, meta, 0xDEAD_BEEF)),
                Body::EventRecord(EventRecord { event_id: 0xDEAD_BEEF }),
            ),
            Opcode::EventWait => (
                encoded(FIXED_LEN, |s| encode_event_wait(s, meta, 3, 77)),
                Body::EventWait(EventWait { queue: 3, event_id: 77 }),
            ),
            Opcode::ExecTrace => {
                let waits = [WaitEntry { queue: 1, event_id: 9 }, WaitEntry { queue: 0, event_id: u32::MAX }];
                let x = ExecTrace {
                    page_size: 4096,
                    num_waits: waits.len() as u16,
                    base: 0x100_0000,
                    trace_len: 123 * 64,
                    event_base: 0x8000_0001,
                };
                (encoded(exec_trace_len(waits.len()), |s| encode_exec_trace(s, meta, &x, &waits)), Body::ExecTrace(x))
            }
            Opcode::WriteHost => {
                let x = host_dma();
                (encoded(FIXED_LEN, |s| encode_write_host(s, meta, &x)), Body::WriteHost(x))
            }
            Opcode::ReadHost => {
                let x = HostDma { mode: host_dma_mode::LINEAR, ..host_dma() };
                (encoded(FIXED_LEN, |s| encode_read_host(s, meta, &x)), Body::ReadHost(x))
            }
        }
    }

    fn host_dma() -> HostDma {
        HostDma {
            mem: Memory::Dram,
            mode: host_dma_mode::PAGED,
            unit: 5,
            piece: 4096,
            base: 0x2_0000,
            dev_stride: 4096,
            start_page: 7,
            count: 3,
            host_stride: 8192,
            iova: 0x1_2345_6000,
        }
    }

    #[test]
    fn host_dma_span_never_wraps() {
        assert_eq!(host_dma().host_span(), Some(2 * 8192 + 4096));
        assert_eq!(HostDma { count: 0, ..host_dma() }.host_span(), Some(0));
        let huge = HostDma { count: u32::MAX, host_stride: u32::MAX, piece: u32::MAX, ..host_dma() };
        assert_eq!(huge.host_span(), Some((u32::MAX as u64 - 1) * u32::MAX as u64 + u32::MAX as u64));
        assert_eq!(huge.bytes(), u32::MAX as u64 * u32::MAX as u64);
    }

    #[test]
    fn every_opcode_encodes_decodes_and_names_the_same() {
        let meta = RecordMeta { flags: RecordFlags::PROFILE | RecordFlags::NOTIFY, tag: 0x0102_0304, profile_slot: 9 };
        for op in Opcode::ALL {
            let (buf, want) = sample(op, meta);
            let (h, body) = decode(&fixed(&buf)).unwrap_or_else(|e| panic!("{op}: {e}"));
            assert_eq!(body, want, "{op}");
            assert_eq!(body.opcode(), op);
            assert_eq!(Opcode::from_u8(h.opcode), Some(op));
            assert_eq!(Opcode::name_of(h.opcode as u32), op.name());
            assert_eq!(op.to_string(), op.name());
            assert_eq!(h.length as usize, buf.len(), "{op}");
            assert_eq!((h.flags, h.tag, h.profile_slot), (meta.flags, meta.tag, meta.profile_slot), "{op}");
            // Every byte of the fixed part that no declared field covers is reserved, and written as 0 (§4.1)
            // even over a dirty slot.
            let mut covered = [false; FIXED_LEN];
            for f in Header::FIELDS.iter().chain(op.info().body) {
                covered[f.offset..f.offset + f.size].iter_mut().for_each(|c| *c = true);
            }
            for (i, &b) in buf[..FIXED_LEN].iter().enumerate() {
                assert!(covered[i] || b == 0, "{op}: reserved byte {i} is {b:#x}");
            }
        }
    }

    #[test]
    fn from_u8_accepts_exactly_the_table() {
        for b in 0..=u8::MAX {
            let listed = Opcode::ALL.iter().find(|op| **op as u8 == b).copied();
            assert_eq!(Opcode::from_u8(b), listed, "byte {b:#04x}");
            if listed.is_none() {
                let mut rec = [0u8; FIXED_LEN];
                rec[0] = b;
                rec[4] = 64;
                assert_eq!(decode(&rec), Err(DecodeError::Opcode(b)));
                assert_eq!(Opcode::name_of(b as u32), "unknown opcode");
            }
        }
        assert_eq!(Opcode::name_of(0x100 | Opcode::Launch as u32), "unknown opcode");
    }

    #[test]
    fn layouts_do_not_overlap() {
        for op in Opcode::ALL {
            let mut fields: Vec<FieldLayout> = Header::FIELDS.iter().chain(op.info().body).copied().collect();
            fields.sort_by_key(|f| f.offset);
            for w in fields.windows(2) {
                assert!(w[0].offset + w[0].size <= w[1].offset, "{op}: {:?} overlaps {:?}", w[0], w[1]);
            }
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        let mut buf = [0u8; FIXED_LEN];
        buf[0] = Opcode::Pad as u8;
        buf[4] = 63;
        assert_eq!(decode(&buf), Err(DecodeError::Length(63)));
        // A write whose payload length exceeds the record.
        let x = Linear { mem: Memory::L1, unit: 0, offset: 0, len: 64 };
        let mut buf = encoded(128, |s| encode_write_linear(s, RecordMeta::default(), &x));
        buf[32] = 65;
        assert_eq!(decode(&fixed(&buf)), Err(DecodeError::Length(128)));
        // A memory byte outside the table.
        buf[32] = 64;
        buf[16] = 2;
        assert_eq!(decode(&fixed(&buf)), Err(DecodeError::Field(FieldError { field: "mem", offset: 16, value: 2 })));
        // A launch on no core, one whose arguments reach past the record, and one with more steps than per-core
        // words.
        let (mut buf, _) = sample(Opcode::Launch, RecordMeta::default());
        buf[34] = 0; // x1 < x0
        assert!(matches!(decode(&fixed(&buf)), Err(DecodeError::Length(_))));
        let (mut buf, _) = sample(Opcode::Launch, RecordMeta::default());
        buf[20] = 200; // num_rt_args
        assert!(matches!(decode(&fixed(&buf)), Err(DecodeError::Length(_))));
        let (mut buf, _) = sample(Opcode::Launch, RecordMeta::default());
        buf[40] = 4; // num_steps > num_rt_args (3)
        assert!(matches!(decode(&fixed(&buf)), Err(DecodeError::Length(_))));
    }

    #[test]
    fn steps_follow_the_core_position() {
        // The affine form over a 5-wide rectangle: base + x dx + y dy.
        let s = ArgStep::affine(0, 1000, 3, 100, 5);
        let rect = CoreRect { x0: 2, y0: 1, x1: 6, y1: 3 };
        for (k, (x, y)) in rect.cores().enumerate() {
            let (x, y) = ((x - 2) as u32, (y - 1) as u32);
            assert_eq!(s.value(k as u32), 1000 + x * 3 + y * 100, "core {k}");
        }
        // Grouped: block row k / 4 steps by 32 rows, block column k % 4 by 64 columns, clamped at the tensor's end.
        let rows = ArgStep { index: 0, base: 0, period: 4, outer: 32, inner: 0, limit: 100 };
        let cols = ArgStep { index: 2, base: 0, period: 4, outer: 0, inner: 64, limit: 200 };
        let got: Vec<(u32, u32)> = (0..16).map(|k| (rows.value(k), cols.value(k))).collect();
        assert_eq!(&got[..6], &[(0, 0), (0, 64), (0, 128), (0, 192), (32, 0), (32, 64)]);
        assert_eq!(got[15], (96, 192));
        assert_eq!(rows.value(17), 100, "past the end: clamped");
        // No period: linear in k; constants; wrapping arithmetic (a negative stride in two's complement).
        assert_eq!(ArgStep::linear(0, 7, 2).value(1000), 2007);
        assert_eq!(ArgStep::constant(0, 9).value(12345), 9);
        assert_eq!(ArgStep::linear(0, 10, u32::MAX).value(3), 7);
        assert_eq!(ArgStep::linear(0, 10, 1).clamped(11).value(5), 11);
        assert_eq!(ArgStep::from_words(&s.to_words()), s);
    }

    #[test]
    fn runtime_arguments_are_checked() {
        let st = |index| ArgStep::constant(index, 0);
        let ok = RtArgs { common: &[1, 2], steps: &[st(0), st(2)], per_core: &[5, 6, 7] };
        assert_eq!(ok.check(3, 3), Ok(()));
        assert_eq!(ok.words(), 2 + 2 * ArgStep::WORDS + 3);
        assert_eq!(ok.core_args(3, 1), vec![0, 6, 0, 1, 2]);
        assert_eq!(RtArgs::explicit(&[1, 2, 3, 4]).check(2, 2), Ok(()));
        let cases = [
            (RtArgs { steps: &[st(0), st(1)], ..ok }, 1, ArgsError::TooManySteps { steps: 2, per_core: 1 }),
            (RtArgs { steps: &[st(2), st(2)], ..ok }, 3, ArgsError::StepIndex { step: 1, index: 2, per_core: 3 }),
            (RtArgs { steps: &[st(1), st(0)], ..ok }, 3, ArgsError::StepIndex { step: 1, index: 0, per_core: 3 }),
            (RtArgs { steps: &[st(3)], ..ok }, 3, ArgsError::StepIndex { step: 0, index: 3, per_core: 3 }),
            (RtArgs { per_core: &[1], ..ok }, 3, ArgsError::PerCoreCount { given: 1, expected: 3, cores: 3 }),
            (RtArgs { steps: &[], per_core: &[], ..ok }, 65534, ArgsError::TooManyWords { per_core: 65534, common: 2 }),
        ];
        for (args, per_core, want) in cases {
            assert_eq!(args.check(per_core, 3), Err(want));
            assert!(!want.to_string().is_empty());
        }
    }

    #[test]
    fn completion_kinds_round_trip() {
        for k in ComplKind::ALL {
            assert_eq!(ComplKind::from_u8(k as u8), Some(k));
            let mut buf = vec![0xA5u8; compl_len(10)];
            encode_compl(&mut RecordSlot::from_slice(&mut buf), k, 42, 10);
            let h = decode_compl(buf[..COMPL_HEADER_LEN].try_into().unwrap());
            assert_eq!(h, ComplHeader { kind: k as u8, length: 128, tag: 42, data_len: 10 });
            assert!(buf[COMPL_HEADER_LEN..FIXED_LEN].iter().all(|&b| b == 0), "reserved bytes zeroed");
            assert_eq!(buf[1..4], [0, 0, 0]);
        }
        let unknown = (0..=u8::MAX).filter(|b| ComplKind::from_u8(*b).is_none()).count();
        assert_eq!(unknown, 256 - ComplKind::ALL.len());
    }

    fn memory() -> impl Strategy<Value = Memory> {
        prop::sample::select(Memory::ALL.to_vec())
    }

    fn meta() -> impl Strategy<Value = RecordMeta> {
        (any::<u8>(), any::<u32>(), any::<u32>()).prop_map(|(f, tag, profile_slot)| RecordMeta {
            flags: RecordFlags::from_bits_truncate(f),
            tag,
            profile_slot,
        })
    }

    fn linear(max_len: u64) -> impl Strategy<Value = Linear> {
        (memory(), any::<u16>(), any::<u64>(), 0..=max_len).prop_map(|(mem, unit, offset, len)| Linear {
            mem,
            unit,
            offset,
            len,
        })
    }

    fn paged(max_page: u32, max_pages: u32) -> impl Strategy<Value = Paged> {
        (memory(), 0..=max_page, any::<u64>(), any::<u32>(), any::<u32>(), 0..=max_pages).prop_map(
            |(mem, page_size, base, page_stride, start_page, num_pages)| Paged {
                mem,
                page_size,
                base,
                page_stride,
                start_page,
                num_pages,
            },
        )
    }

    fn decoded(buf: &[u8]) -> (Header, Body) {
        decode(&fixed(buf)).expect("an encoded record decodes")
    }

    proptest! {
        #[test]
        fn linear_records_round_trip(m in meta(), w in linear(300), r in linear(u64::MAX)) {
            let n = w.len as usize;
            let buf = encoded(write_linear_len(n), |s| {
                encode_write_linear(s, m, &w);
                s.put_bytes(PAYLOAD_OFFSET, &vec![1; n]);
                pad_payload(s, n);
            });
            let (h, b) = decoded(&buf);
            prop_assert_eq!((h.flags, h.tag, h.profile_slot), (m.flags, m.tag, m.profile_slot));
            prop_assert_eq!(h.length as usize, buf.len());
            prop_assert_eq!(b, Body::WriteLinear(w));
            prop_assert!(buf[PAYLOAD_OFFSET + n..].iter().all(|&v| v == 0), "payload tail zeroed");
            let buf = encoded(FIXED_LEN, |s| encode_read_linear(s, m, &r));
            prop_assert_eq!(decoded(&buf).1, Body::ReadLinear(r));
        }

        #[test]
        fn paged_records_round_trip(m in meta(), w in paged(64, 8), r in paged(u32::MAX, u32::MAX)) {
            let n = w.bytes() as usize;
            let buf = encoded(write_linear_len(n), |s| {
                encode_write_paged(s, m, &w);
                s.put_bytes(PAYLOAD_OFFSET, &vec![1; n]);
                pad_payload(s, n);
            });
            prop_assert_eq!(decoded(&buf).1, Body::WritePaged(w));
            let buf = encoded(FIXED_LEN, |s| encode_read_paged(s, m, &r));
            prop_assert_eq!(decoded(&buf).1, Body::ReadPaged(r));
        }

        #[test]
        fn launch_records_round_trip(
            m in meta(),
            bank in any::<u16>(),
            koff in any::<u64>(),
            (x0, y0, w, h) in (any::<u8>(), any::<u8>(), 0u8..4, 0u8..4),
            ct in prop::collection::vec(any::<u32>(), 0..6),
            cbs in prop::collection::vec(any::<(u32, u32, u32, u32)>(), 0..4),
            sems in prop::collection::vec(any::<u32>(), 0..4),
            nrt in 0u16..8,
            stepped in any::<u8>(),
            step_words in prop::collection::vec(any::<[u32; 5]>(), 8),
            common in prop::collection::vec(any::<u32>(), 0..5),
            seed in any::<u32>(),
        ) {
            let rect = CoreRect { x0, y0, x1: x0.saturating_add(w), y1: y0.saturating_add(h) };
            let cores = rect.count();
            let cbs: Vec<CbConfig> = cbs
                .into_iter()
                .map(|(index, page_size, num_pages, data_format)| CbConfig { index, page_size, num_pages, data_format })
                .collect();
            // Bit j of `stepped` makes per-core word j a step; the others are explicit.
            let steps: Vec<ArgStep> = (0..nrt as u32)
                .filter(|j| stepped >> j & 1 == 1)
                .map(|j| {
                    let [base, period, outer, inner, limit] = step_words[j as usize];
                    ArgStep { index: j, base, period: period % 5, outer, inner, limit }
                })
                .collect();
            let explicit = nrt as usize - steps.len();
            let per_core: Vec<u32> = (0..(explicit * cores) as u32).map(|i| i.wrapping_mul(seed)).collect();
            let args = RtArgs { common: &common, steps: &steps, per_core: &per_core };
            prop_assert_eq!(args.check(nrt as usize, cores), Ok(()));
            let l = Launch {
                kernel_bank: bank,
                kernel_offset: koff,
                rect,
                ct_args: &ct,
                cbs: &cbs,
                sems: &sems,
                num_rt_args: nrt,
                args,
            };
            let buf = encoded(launch_len(&l), |s| encode_launch(s, m, &l));
            let (hd, b) = decoded(&buf);
            prop_assert_eq!(hd.length as usize, buf.len());
            let Body::Launch(f) = b else { panic!("not a launch: {b:?}") };
            prop_assert_eq!((f.kernel_bank, f.kernel_offset, f.rect, f.num_rt_args), (bank, koff, rect, nrt));
            prop_assert_eq!(f.layout(), launch_layout(&l), "the encoder's layout is the one the decoder computes");
            let got = decode_launch_args(&f, &buf[FIXED_LEN..]).expect("arguments inside the record");
            prop_assert_eq!(
                &got,
                &LaunchArgs { ct_args: ct.clone(), cbs: cbs.clone(), sems: sems.clone(), common: common.clone(),
                    steps: steps.clone(), per_core: per_core.clone() }
            );
            let end = FIXED_LEN + f.args_bytes();
            prop_assert_eq!(end, f.layout().end);
            prop_assert!(buf[end..].iter().all(|&v| v == 0), "argument tail zeroed");

            // What each core receives, three ways: from the borrowed decoder, from the caller's arguments, and from
            // the expanded (contract 1.1) form of the same launch, which must be the same words.
            let words: Vec<u32> = buf[FIXED_LEN..end].chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
            let lw = f.split_words(&words).unwrap();
            prop_assert!(lw.steps_valid());
            let ex = encoded(launch_len_expanded(&l), |s| encode_launch_expanded(s, m, &l));
            let Body::Launch(fx) = decoded(&ex).1 else { panic!("not a launch") };
            prop_assert_eq!((fx.num_common_args, fx.num_steps), (0, 0));
            prop_assert_eq!(fx.num_rt_args as usize, nrt as usize + common.len());
            let xargs = decode_launch_args(&fx, &ex[FIXED_LEN..]).unwrap();
            let mut mine = Vec::new();
            for k in 0..cores {
                lw.core_args(k, &mut mine);
                prop_assert_eq!(&mine, &args.core_args(nrt as usize, k));
                prop_assert_eq!(&mine, &xargs.rt().core_args(fx.num_rt_args as usize, k));
                // Every word is where `locate` says it is.
                for (j, &want) in mine.iter().enumerate() {
                    let at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
                    let v = match lw.locate(&f, k, j).expect("a word of a core") {
                        ArgLocation::Common(o) | ArgLocation::PerCore(o) => at(o),
                        ArgLocation::Step(o) => {
                            let s = ArgStep::from_words(&(0..6).map(|i| at(o + 4 * i)).collect::<Vec<_>>());
                            prop_assert_eq!(s.index as usize, j);
                            s.value(k as u32)
                        }
                    };
                    prop_assert_eq!(v, want, "core {} word {}", k, j);
                }
                prop_assert_eq!(lw.locate(&f, k, mine.len()), None);
            }
            prop_assert_eq!(lw.locate(&f, cores, 0), None);
        }

        #[test]
        fn event_and_trace_records_round_trip(
            m in meta(),
            id in any::<u32>(),
            q in any::<u16>(),
            x in (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()),
            waits in proptest::collection::vec((any::<u16>(), any::<u32>()), 0..20),
        ) {
            let buf = encoded(FIXED_LEN, |s| encode_event_record(s, m, id));
            prop_assert_eq!(decoded(&buf).1, Body::EventRecord(EventRecord { event_id: id }));
            let buf = encoded(FIXED_LEN, |s| encode_event_wait(s, m, q, id));
            prop_assert_eq!(decoded(&buf).1, Body::EventWait(EventWait { queue: q, event_id: id }));
            let waits: Vec<WaitEntry> = waits.into_iter().map(|(queue, event_id)| WaitEntry { queue, event_id }).collect();
            let x = ExecTrace {
                page_size: x.0, num_waits: waits.len() as u16, base: x.1, trace_len: x.2, event_base: x.3,
            };
            let buf = encoded(exec_trace_len(waits.len()), |s| encode_exec_trace(s, m, &x, &waits));
            prop_assert_eq!(decoded(&buf).1, Body::ExecTrace(x));
            for (i, w) in waits.iter().enumerate() {
                let at = FIXED_LEN + i * WAIT_ENTRY_LEN;
                prop_assert_eq!(WaitEntry::from_bytes(buf[at..at + WAIT_ENTRY_LEN].try_into().unwrap()), *w);
            }
        }

        #[test]
        fn completion_headers_round_trip(
            tag in any::<u32>(),
            data_len in 0u32..4096,
            kind in prop::sample::select(ComplKind::ALL.to_vec()),
        ) {
            let mut buf = vec![0xA5u8; compl_len(data_len as usize)];
            encode_compl(&mut RecordSlot::from_slice(&mut buf), kind, tag, data_len);
            let h = decode_compl(buf[..COMPL_HEADER_LEN].try_into().unwrap());
            prop_assert_eq!(h, ComplHeader { kind: kind as u8, length: buf.len() as u32, tag, data_len });
        }
    }
}
