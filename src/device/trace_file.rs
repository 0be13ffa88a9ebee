//! Saved traces: the file `trace_save` writes and `trace_load` reads, and every check the loader makes.
//!
//! A saved trace is loaded by another process, possibly from a file someone crafted, so the loader trusts nothing:
//! a checksum only catches accidents. [`TraceFile::decode`] checks the structure (magic, format version, length,
//! checksum, every field and count, no trailing bytes); [`TraceFile::check`] checks it against the device (contract
//! version, geometry, kernels) and decodes every record: only `PAD` and `LAUNCH` may appear (a saved trace holds no
//! events: they would name events of the process that saved it), every launch runs a kernel the file carries with the
//! argument counts that kernel takes, on cores inside the grid, and every tensor accessor in its runtime arguments
//! is valid and lies inside a range the trace owns or an external binding provides. The driver then checks the
//! bindings the caller passes (spec and footprint; a buffer at another address than the saved one is accepted for a
//! rebindable binding, whose address words the loader rewrites, and the records are then checked again against the
//! new addresses), claims the owned ranges — at their saved place when it is free, else (a movable range) wherever
//! the allocator puts a range of that size, rewriting the address words that point into it and checking the records
//! again — and uploads the kernels and the records, rewriting each launch's kernel address to where this process put
//! the image.
//!
//! The patchable words the file lists (each binding's address words, each named scalar's words) are checked too: an
//! address word must be the address word of a tensor accessor of a launch and hold the binding's saved address plus
//! its offset; a scalar word must be a parameter word after the accessors and hold the scalar's saved value. A crafted
//! list can therefore only move a binding's accessors, never rewrite a record's header or another field.
//!
//! # Format (version 2; version 1, without the patchable words, is still read), all integers little-endian
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `TTDRVTRC` |
//! | 8 | 4 | format version (2) |
//! | 12 | 4 | flags (0) |
//! | 16 | 8 | body length in bytes |
//! | 24 | 4 | CRC-32 (IEEE) of the body |
//! | 28 | 4 | reserved (0) |
//! | 32 | body | the sections below, in order |
//!
//! Body: contract `u16 major, u16 minor` needed; device shape (`u32 dram_banks, u64 bank_size, u32 dram_align,
//! u32 grid_x, u32 grid_y, u32 l1_size, u32 l1_align, u32 l1_base`); `u64 region_bytes` (trace region the trace
//! needs, device total); `u32 launches`; kernels (`u32 n`, each `str name, u64 offset at save, bytes image`);
//! bindings (`u32 n`, each `str name, u8 role (0 input, 1 output), spec, u64 address, u64 footprint`, and since
//! version 2 `u8 rebindable, u32 n, n × (u32 record offset, u32 offset into the buffer)` of its address words);
//! since version 2, named scalars (`u32 n`, each `str name, u8 kind (0 u32, 1 f32, 2 f32 >= 0), u32 value, u32 n,
//! n × u32 record offset`); owned ranges
//! (`u32 n`, each `u8 buffer type, u64 start, u64 end`, and since version 2 `u8 movable, u32 n, n × (u32 record
//! offset, u32 offset into the range)` of the address words that point into it); op names (`u32 n`, each `str`); records (`bytes`). A `str`
//! or `bytes` is a `u32` length and that many bytes; a spec is `u32 rows, u32 cols, u32 dtype, u32 tensor layout,
//! u8 buffer type, u32 layout, u8 sharded`, and if sharded `u32 grid kind (0 cores, 1 banks), 4 × u32 grid,
//! u32 shard rows, u32 shard cols, u8 col_major`.

use super::buffer::{BufferSpec, BufferType, MemoryConfig, ShardSpec};
use super::params::DeviceInfo;
use super::patch::ScalarKind;
use std::fmt;
use ttdrv_contract::kernel::{
    ACCESSOR_ADDR_WORD, ACCESSOR_WORDS, Accessor, BLOCK_WORDS, BuiltinKernel, DType, IMAGE_HEADER, Layout, ShardGrid,
    TensorLayout,
};
use ttdrv_contract::records::{self, ArgLocation, Body, FIXED_LEN};
use ttdrv_contract::{CONTRACT_MAJOR, Memory};

/// The file's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"TTDRVTRC";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Bytes of the file header.
pub const HEADER_LEN: usize = 32;
/// Largest file the loader reads: a trace is at most what a trace region holds, far below this.
pub const MAX_FILE: u64 = 1 << 32;

/// Why a saved trace was refused: what is wrong, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError(pub String);

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FileError {}

fn err<T>(msg: impl Into<String>) -> Result<T, FileError> {
    Err(FileError(msg.into()))
}

/// The device properties a saved trace depends on: its addresses and accessors assume this shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceShape {
    /// DRAM banks.
    pub dram_banks: u32,
    /// Bytes per bank.
    pub bank_size: u64,
    /// DRAM alignment.
    pub dram_align: u32,
    /// Grid width.
    pub grid_x: u32,
    /// Grid height.
    pub grid_y: u32,
    /// L1 bytes per core.
    pub l1_size: u32,
    /// L1 alignment.
    pub l1_align: u32,
    /// First software L1 byte.
    pub l1_base: u32,
}

impl DeviceShape {
    /// The shape of a device.
    pub fn of(i: &DeviceInfo) -> DeviceShape {
        DeviceShape {
            dram_banks: i.dram_banks,
            bank_size: i.bank_size,
            dram_align: i.dram_align,
            grid_x: i.grid_x,
            grid_y: i.grid_y,
            l1_size: i.l1_size,
            l1_align: i.l1_align,
            l1_base: i.l1_base,
        }
    }

    fn geometry(&self) -> ttdrv_contract::kernel::Geometry {
        ttdrv_contract::kernel::Geometry {
            dram_banks: self.dram_banks,
            grid_x: self.grid_x,
            grid_y: self.grid_y,
            bank_size: self.bank_size,
            l1_size: self.l1_size as u64,
        }
    }
}

/// A kernel image a saved trace launches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedKernel {
    /// Its catalog name (`ttdrv.copy`).
    pub name: String,
    /// Its DRAM offset in the saving process: the launches that name this offset run this image.
    pub offset: u64,
    /// The image (contract §8.1).
    pub image: Vec<u8>,
}

/// A buffer the trace uses and does not own: the loader binds a live buffer of this spec to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedBinding {
    /// `input0`, `output1`, ...: the role and the order of first use.
    pub name: String,
    /// The trace writes it before reading it (its output) rather than reading it first.
    pub output: bool,
    /// The spec a bound buffer must have.
    pub spec: BufferSpec,
    /// Its address at capture.
    pub address: u64,
    /// Bytes per unit it occupies.
    pub footprint: u64,
    /// Whether a buffer at another address may be bound (its address words are all listed in `points`).
    pub rebindable: bool,
    /// Its address words: (byte offset in the records, offset of the word's value into the buffer).
    pub points: Vec<(u32, u32)>,
}

/// A named scalar of a saved trace: the loaded trace can update it (`trace_set_scalar`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedScalar {
    /// Its name.
    pub name: String,
    /// What it holds.
    pub kind: ScalarKind,
    /// Its value at save.
    pub value: u32,
    /// The byte offsets in the records of the words that hold it.
    pub offsets: Vec<u32>,
}

/// A saved trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFile {
    /// Contract version needed (major, minor).
    pub contract: (u16, u16),
    /// The device shape it was captured on.
    pub shape: DeviceShape,
    /// Trace region bytes (device total) it needs.
    pub region_bytes: u64,
    /// Program launches.
    pub launches: u32,
    /// The kernel images it runs.
    pub kernels: Vec<SavedKernel>,
    /// Its external bindings, in order.
    pub bindings: Vec<SavedBinding>,
    /// Its named scalars.
    pub scalars: Vec<SavedScalar>,
    /// The device ranges it owns (its intermediates).
    pub owned: Vec<(BufferType, u64, u64)>,
    /// For each owned range (same order), the address words that point into it, as (record offset, offset into the
    /// range) — the loader moves the range elsewhere when its saved place is taken — or `None` if it cannot move (a
    /// launch did not declare its address words; format 1).
    pub owned_words: Vec<Option<Vec<(u32, u32)>>>,
    /// The names of its profiled records, in order.
    pub names: Vec<String>,
    /// The records.
    pub records: Vec<u8>,
}

/// CRC-32 (IEEE 802.3, reflected, as zlib's): a few lines, where a crate would add a dependency for one function.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
        }
    }
    !c
}

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn ty(&mut self, t: BufferType) {
        self.u8(match t {
            BufferType::Dram => 0,
            BufferType::L1 => 1,
            BufferType::L1Small => 2,
        });
    }
    fn spec(&mut self, s: &BufferSpec) {
        self.u32(s.rows);
        self.u32(s.cols);
        self.u32(s.dtype as u32);
        self.u32(s.layout as u32);
        self.ty(s.mem.buffer_type);
        self.u32(s.mem.layout as u32);
        match s.mem.shard {
            None => self.u8(0),
            Some(sh) => {
                self.u8(1);
                let (kind, g) = match sh.grid {
                    ShardGrid::Cores { x0, y0, x1, y1 } => (0, [x0 as u32, y0 as u32, x1 as u32, y1 as u32]),
                    ShardGrid::Banks { first, last } => (1, [first as u32, last as u32, 0, 0]),
                };
                self.u32(kind);
                for v in g {
                    self.u32(v);
                }
                self.u32(sh.shape[0]);
                self.u32(sh.shape[1]);
                self.u8(sh.col_major as u8);
            }
        }
    }
}

/// A cursor over the body that names the field it could not read.
struct R<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FileError> {
        match self.at.checked_add(n).filter(|&e| e <= self.b.len()) {
            Some(e) => {
                let s = &self.b[self.at..e];
                self.at = e;
                Ok(s)
            }
            None => err(format!(
                "the file ends inside {what} (body byte {} of {}): it is truncated or corrupt",
                self.at,
                self.b.len()
            )),
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, FileError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, FileError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, what: &str) -> Result<u32, FileError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, what: &str) -> Result<u64, FileError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }
    fn bytes(&mut self, what: &str) -> Result<&'a [u8], FileError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn str(&mut self, what: &str) -> Result<String, FileError> {
        let b = self.bytes(what)?;
        match std::str::from_utf8(b) {
            Ok(s) => Ok(s.to_string()),
            Err(_) => err(format!("{what} is not UTF-8")),
        }
    }
    /// A count of items of at least `min_item` bytes each: never more than the bytes left could hold, so a corrupt
    /// count cannot make the loader allocate without bound.
    fn count(&mut self, what: &str, min_item: usize) -> Result<usize, FileError> {
        let n = self.u32(what)? as usize;
        if n.saturating_mul(min_item) > self.b.len() - self.at {
            return err(format!("{what} is {n}, more than the rest of the file can hold: it is corrupt"));
        }
        Ok(n)
    }
    fn ty(&mut self, what: &str) -> Result<BufferType, FileError> {
        match self.u8(what)? {
            0 => Ok(BufferType::Dram),
            1 => Ok(BufferType::L1),
            2 => Ok(BufferType::L1Small),
            v => err(format!("{what} is {v}, not a buffer type (0 DRAM, 1 L1, 2 L1_SMALL)")),
        }
    }
    fn spec(&mut self, what: &str) -> Result<BufferSpec, FileError> {
        let rows = self.u32(what)?;
        let cols = self.u32(what)?;
        let dtype = self.u32(what)?;
        let dtype = DType::from_u32(dtype).ok_or_else(|| FileError(format!("{what}: element type {dtype} unknown")))?;
        let tl = self.u32(what)?;
        let layout =
            TensorLayout::from_u32(tl).ok_or_else(|| FileError(format!("{what}: tensor layout {tl} unknown")))?;
        let buffer_type = self.ty(what)?;
        let ml = self.u32(what)?;
        let mem_layout =
            Layout::from_u32(ml).ok_or_else(|| FileError(format!("{what}: memory layout {ml} unknown")))?;
        let shard = match self.u8(what)? {
            0 => None,
            1 => {
                let kind = self.u32(what)?;
                let mut g = [0u32; 4];
                for v in &mut g {
                    *v = self.u32(what)?;
                }
                let grid = match kind {
                    0 if g.iter().all(|&v| v <= u8::MAX as u32) => {
                        ShardGrid::Cores { x0: g[0] as u8, y0: g[1] as u8, x1: g[2] as u8, y1: g[3] as u8 }
                    }
                    1 if g[0] <= u16::MAX as u32 && g[1] <= u16::MAX as u32 => {
                        ShardGrid::Banks { first: g[0] as u16, last: g[1] as u16 }
                    }
                    _ => return err(format!("{what}: shard grid {kind} {g:?} is not a core or bank range")),
                };
                let shape = [self.u32(what)?, self.u32(what)?];
                let col_major = self.u8(what)? != 0;
                Some(ShardSpec { grid, shape, col_major })
            }
            v => return err(format!("{what}: sharded flag {v} is neither 0 nor 1")),
        };
        Ok(BufferSpec { rows, cols, dtype, layout, mem: MemoryConfig { buffer_type, layout: mem_layout, shard } })
    }
}

impl TraceFile {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::new());
        w.u16(self.contract.0);
        w.u16(self.contract.1);
        let s = &self.shape;
        w.u32(s.dram_banks);
        w.u64(s.bank_size);
        w.u32(s.dram_align);
        w.u32(s.grid_x);
        w.u32(s.grid_y);
        w.u32(s.l1_size);
        w.u32(s.l1_align);
        w.u32(s.l1_base);
        w.u64(self.region_bytes);
        w.u32(self.launches);
        w.u32(self.kernels.len() as u32);
        for k in &self.kernels {
            w.bytes(k.name.as_bytes());
            w.u64(k.offset);
            w.bytes(&k.image);
        }
        w.u32(self.bindings.len() as u32);
        for b in &self.bindings {
            w.bytes(b.name.as_bytes());
            w.u8(b.output as u8);
            w.spec(&b.spec);
            w.u64(b.address);
            w.u64(b.footprint);
            w.u8(b.rebindable as u8);
            w.u32(b.points.len() as u32);
            for &(o, d) in &b.points {
                w.u32(o);
                w.u32(d);
            }
        }
        w.u32(self.scalars.len() as u32);
        for sc in &self.scalars {
            w.bytes(sc.name.as_bytes());
            w.u8(match sc.kind {
                ScalarKind::U32 => 0,
                ScalarKind::F32 => 1,
                ScalarKind::F32NonNegative => 2,
            });
            w.u32(sc.value);
            w.u32(sc.offsets.len() as u32);
            for &o in &sc.offsets {
                w.u32(o);
            }
        }
        w.u32(self.owned.len() as u32);
        for (i, &(t, s, e)) in self.owned.iter().enumerate() {
            w.ty(t);
            w.u64(s);
            w.u64(e);
            match self.owned_words.get(i).and_then(|o| o.as_ref()) {
                None => {
                    w.u8(0);
                    w.u32(0);
                }
                Some(points) => {
                    w.u8(1);
                    w.u32(points.len() as u32);
                    for &(o, d) in points {
                        w.u32(o);
                        w.u32(d);
                    }
                }
            }
        }
        w.u32(self.names.len() as u32);
        for n in &self.names {
            w.bytes(n.as_bytes());
        }
        w.bytes(&self.records);
        let body = w.0;
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&crc32(&body).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a file, checking its structure: magic, version, length, checksum, every field.
    pub fn decode(bytes: &[u8]) -> Result<TraceFile, FileError> {
        if bytes.len() < HEADER_LEN {
            return err(format!(
                "the file is {} bytes, shorter than the {HEADER_LEN}-byte header of a saved trace: truncated, or not \
                 a trace file",
                bytes.len()
            ));
        }
        if bytes[..8] != MAGIC {
            return err("the file does not start with TTDRVTRC: it is not a trace saved by ttdrv (trace_save)");
        }
        let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        let version = u32_at(8);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return err(format!(
                "the file is trace format version {version}; this ttdrv reads versions {OLDEST_FORMAT_VERSION} to \
                 {FORMAT_VERSION}. Save the trace again with this ttdrv, or load it with the ttdrv that saved it"
            ));
        }
        if u32_at(12) != 0 || u32_at(28) != 0 {
            return err("the header's flags or reserved word is not 0: the file is corrupt or from a newer format");
        }
        let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let have = (bytes.len() - HEADER_LEN) as u64;
        if len != have {
            return err(format!(
                "the header says the body is {len} bytes, but the file holds {have}: it is truncated or has bytes \
                 appended"
            ));
        }
        let body = &bytes[HEADER_LEN..];
        let (want, got) = (u32_at(24), crc32(body));
        if want != got {
            return err(format!(
                "checksum mismatch (header {want:#010x}, body {got:#010x}): the file was corrupted after it was saved"
            ));
        }
        let mut r = R { b: body, at: 0 };
        let contract = (r.u16("the contract version")?, r.u16("the contract version")?);
        let shape = DeviceShape {
            dram_banks: r.u32("the device shape")?,
            bank_size: r.u64("the device shape")?,
            dram_align: r.u32("the device shape")?,
            grid_x: r.u32("the device shape")?,
            grid_y: r.u32("the device shape")?,
            l1_size: r.u32("the device shape")?,
            l1_align: r.u32("the device shape")?,
            l1_base: r.u32("the device shape")?,
        };
        // The ranges docs/device-interface.md §2 allows: a shape outside them is no device's, and the checks below
        // compute with it.
        let ok = (1..=64).contains(&shape.dram_banks)
            && (1 << 20..=1 << 32).contains(&shape.bank_size)
            && (1..=255).contains(&shape.grid_x)
            && (1..=255).contains(&shape.grid_y)
            && shape.l1_size <= 16 << 20
            && shape.l1_base < shape.l1_size
            && shape.dram_align.is_power_of_two()
            && shape.l1_align.is_power_of_two();
        if !ok {
            return err(format!(
                "the device shape in the file ({shape:?}) is outside what docs/device-interface.md §2 allows: the \
                 file is corrupt"
            ));
        }
        let region_bytes = r.u64("the trace region size")?;
        let launches = r.u32("the launch count")?;
        let n = r.count("the kernel count", 16)?;
        let mut kernels = Vec::with_capacity(n);
        for i in 0..n {
            let what = format!("kernel {i}");
            let name = r.str(&what)?;
            let offset = r.u64(&what)?;
            let image = r.bytes(&what)?.to_vec();
            kernels.push(SavedKernel { name, offset, image });
        }
        let n = r.count("the binding count", 30)?;
        let mut bindings = Vec::with_capacity(n);
        for i in 0..n {
            let what = format!("binding {i}");
            let name = r.str(&what)?;
            let output = match r.u8(&what)? {
                0 => false,
                1 => true,
                v => return err(format!("{what}: role {v} is neither 0 (input) nor 1 (output)")),
            };
            let spec = r.spec(&what)?;
            let address = r.u64(&what)?;
            let footprint = r.u64(&what)?;
            let (mut rebindable, mut points) = (false, Vec::new());
            if version >= 2 {
                rebindable = match r.u8(&what)? {
                    0 => false,
                    1 => true,
                    v => return err(format!("{what}: rebindable flag {v} is neither 0 nor 1")),
                };
                let n = r.count(&format!("{what}'s address word count"), 8)?;
                points.reserve(n);
                for _ in 0..n {
                    points.push((r.u32(&what)?, r.u32(&what)?));
                }
            }
            bindings.push(SavedBinding { name, output, spec, address, footprint, rebindable, points });
        }
        let mut scalars = Vec::new();
        if version >= 2 {
            let n = r.count("the scalar count", 13)?;
            for i in 0..n {
                let what = format!("scalar {i}");
                let name = r.str(&what)?;
                super::patch::check_scalar_name(&name).map_err(|m| FileError(format!("{what}: {m}")))?;
                let kind = match r.u8(&what)? {
                    0 => ScalarKind::U32,
                    1 => ScalarKind::F32,
                    2 => ScalarKind::F32NonNegative,
                    v => return err(format!("{what}: kind {v} is none of 0 (u32), 1 (f32), 2 (f32 >= 0)")),
                };
                let value = r.u32(&what)?;
                let m = r.count(&format!("{what}'s word count"), 4)?;
                let mut offsets = Vec::with_capacity(m);
                for _ in 0..m {
                    offsets.push(r.u32(&what)?);
                }
                scalars.push(SavedScalar { name, kind, value, offsets });
            }
        }
        let n = r.count("the owned range count", 17)?;
        let mut owned = Vec::with_capacity(n);
        let mut owned_words = Vec::with_capacity(n);
        for i in 0..n {
            let what = format!("owned range {i}");
            let t = r.ty(&what)?;
            let (s, e) = (r.u64(&what)?, r.u64(&what)?);
            if s >= e {
                return err(format!("{what} [{s:#x}, {e:#x}) is empty or reversed"));
            }
            owned.push((t, s, e));
            if version >= 2 {
                let movable = match r.u8(&what)? {
                    0 => false,
                    1 => true,
                    v => return err(format!("{what}: movable flag {v} is neither 0 nor 1")),
                };
                let n = r.count(&format!("{what}'s address word count"), 8)?;
                let mut points = Vec::with_capacity(n);
                for _ in 0..n {
                    points.push((r.u32(&what)?, r.u32(&what)?));
                }
                owned_words.push(movable.then_some(points));
            } else {
                owned_words.push(None);
            }
        }
        let n = r.count("the op name count", 4)?;
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            names.push(r.str(&format!("op name {i}"))?);
        }
        let records = r.bytes("the records")?.to_vec();
        if r.at != body.len() {
            return err(format!("{} bytes follow the records: the file is corrupt", body.len() - r.at));
        }
        Ok(TraceFile {
            contract,
            shape,
            region_bytes,
            launches,
            kernels,
            bindings,
            scalars,
            owned,
            owned_words,
            names,
            records,
        })
    }

    /// Checks the trace against a device of contract `minor` with shape `shape` and kernel mask `kernels`, and
    /// decodes every record (the module doc lists the rules).
    pub fn check(&self, minor: u16, shape: &DeviceShape, kernels: u32) -> Result<(), FileError> {
        if self.contract.0 != CONTRACT_MAJOR || self.contract.1 > minor {
            return err(format!(
                "the trace needs device contract {}.{}; the device speaks {CONTRACT_MAJOR}.{minor}",
                self.contract.0, self.contract.1
            ));
        }
        if self.shape != *shape {
            return err(format!(
                "the trace was saved on a device of another shape ({:?}); this device is {shape:?}. A trace's \
                 addresses and accessors hold only on the shape it was captured on",
                self.shape
            ));
        }
        let mut images = Vec::with_capacity(self.kernels.len());
        for k in &self.kernels {
            let b = BuiltinKernel::from_name(&k.name)
                .filter(|b| kernels & b.bit() != 0)
                .ok_or_else(|| FileError(format!("the trace runs kernel {:?}, which this device lacks", k.name)))?;
            let hdr: Option<&[u8; IMAGE_HEADER]> = k.image.get(..IMAGE_HEADER).and_then(|h| h.try_into().ok());
            let ok = hdr
                .and_then(ttdrv_contract::kernel::decode_image)
                .is_some_and(|h| h.name == k.name && (h.total_len as usize) == k.image.len());
            if !ok {
                return err(format!(
                    "the image of kernel {:?} is not a valid kernel image of that name (§8.1)",
                    k.name
                ));
            }
            images.push((k.offset, b));
        }
        let geo = self.shape.geometry();
        let rec = &self.records;
        if rec.len() % FIXED_LEN != 0 {
            return err(format!("the records are {} bytes, not a multiple of 64 (§4.1)", rec.len()));
        }
        let mut off = 0usize;
        let mut launches = 0u32;
        // Record offsets of every accessor's address word, and of every parameter word after the accessors.
        let mut addr_words: Vec<u32> = Vec::new();
        let mut param_words: Vec<u32> = Vec::new();
        while off < rec.len() {
            let fixed: &[u8; FIXED_LEN] = rec[off..off + FIXED_LEN].try_into().expect("64 bytes");
            let (h, body) =
                records::decode(fixed).map_err(|e| FileError(format!("record at trace offset {off}: {e}")))?;
            let len = h.length as usize;
            if len > rec.len() - off {
                return err(format!("record at trace offset {off} is {len} bytes, past the end of the trace"));
            }
            match body {
                Body::Pad => {}
                Body::Launch(l) => {
                    launches += 1;
                    let k = images
                        .iter()
                        .find(|(o, _)| *o == l.kernel_offset && l.kernel_bank == 0)
                        .map(|x| x.1)
                        .ok_or_else(|| {
                            FileError(format!(
                                "launch at trace offset {off} runs a kernel at bank {} offset {:#x}, which is none of \
                                 the file's kernel images",
                                l.kernel_bank, l.kernel_offset
                            ))
                        })?;
                    if l.rect.x1 as u32 >= self.shape.grid_x || l.rect.y1 as u32 >= self.shape.grid_y {
                        return err(format!("launch at trace offset {off} uses cores outside the grid"));
                    }
                    if l.num_ct_args as usize != k.ct_words() || l.core_words() != k.rt_words() {
                        return err(format!(
                            "launch at trace offset {off} gives {} {} compile-time and {} runtime words; it takes {} \
                             and {}",
                            k.name(),
                            l.num_ct_args,
                            l.core_words(),
                            k.ct_words(),
                            k.rt_words()
                        ));
                    }
                    let args = records::decode_launch_args(&l, &rec[off + FIXED_LEN..off + len])
                        .ok_or_else(|| FileError(format!("launch at trace offset {off}: arguments truncated")))?;
                    let n = l.num_rt_args as usize;
                    let cores = l.rect.count();
                    args.rt().check(n, cores).map_err(|e| {
                        FileError(format!("launch at trace offset {off} ({}): runtime arguments: {e}", k.name()))
                    })?;
                    // Each core's words are its block, then the tensor accessors (contract §8.2), whether the
                    // launch carries them per core or once as common words (§4.2.6).
                    let accessors = k.rt_words().saturating_sub(BLOCK_WORDS) / ACCESSOR_WORDS;
                    let words: Vec<u32> = rec[off + FIXED_LEN..off + FIXED_LEN + l.args_bytes()]
                        .chunks_exact(4)
                        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        .collect();
                    if let Some(lw) = l.split_words(&words) {
                        let params = BLOCK_WORDS + accessors * ACCESSOR_WORDS..k.rt_words();
                        let addrs = (0..accessors).map(|a| BLOCK_WORDS + a * ACCESSOR_WORDS + ACCESSOR_ADDR_WORD);
                        for (word, is_addr) in addrs.map(|w| (w, true)).chain(params.map(|w| (w, false))) {
                            let list = if is_addr { &mut addr_words } else { &mut param_words };
                            for core in 0..cores {
                                if let Some(ArgLocation::Common(o) | ArgLocation::PerCore(o)) =
                                    lw.locate(&l, core, word)
                                {
                                    list.push((off + o) as u32)
                                }
                            }
                        }
                    }
                    for core in 0..cores {
                        let words = args.rt().core_args(n, core);
                        for a in 0..accessors {
                            let at = BLOCK_WORDS + a * ACCESSOR_WORDS;
                            self.check_accessor(&geo, &words[at..at + ACCESSOR_WORDS]).map_err(|m| {
                                FileError(format!(
                                    "launch at trace offset {off} ({}), core {core}, tensor {a}: {m}",
                                    k.name()
                                ))
                            })?;
                        }
                    }
                }
                other => {
                    return err(format!(
                        "record at trace offset {off} is {}, which a saved trace may not hold (only PAD and LAUNCH)",
                        other.opcode()
                    ));
                }
            }
            off += len;
        }
        if launches != self.launches {
            return err(format!("the header counts {} launches, the records hold {launches}", self.launches));
        }
        addr_words.sort_unstable();
        param_words.sort_unstable();
        let word = |o: u32| u32::from_le_bytes(rec[o as usize..o as usize + 4].try_into().expect("4 bytes"));
        for b in &self.bindings {
            for &(o, delta) in &b.points {
                if addr_words.binary_search(&o).is_err() {
                    return err(format!(
                        "binding {} lists record offset {o} as an address word; it is no tensor accessor's address",
                        b.name
                    ));
                }
                let want = u32::try_from(b.address).ok().and_then(|a| a.checked_add(delta));
                if want != Some(word(o)) || delta as u64 > b.footprint {
                    return err(format!(
                        "binding {}'s address word at record offset {o} holds {:#x}, not its address {:#x} plus \
                         {delta:#x} (inside its {} bytes)",
                        b.name,
                        word(o),
                        b.address,
                        b.footprint
                    ));
                }
            }
        }
        for (&(_, s, e), words) in self.owned.iter().zip(&self.owned_words) {
            for &(o, delta) in words.iter().flatten() {
                let want = u32::try_from(s).ok().and_then(|a| a.checked_add(delta));
                if addr_words.binary_search(&o).is_err() || want != Some(word(o)) || delta as u64 >= e - s {
                    return err(format!(
                        "owned range [{s:#x}, {e:#x}) lists record offset {o} as an address word {delta:#x} into it;                          the record holds no such accessor address there"
                    ));
                }
            }
        }
        for sc in &self.scalars {
            for &o in &sc.offsets {
                if param_words.binary_search(&o).is_err() || word(o) != sc.value {
                    return err(format!(
                        "scalar {} lists record offset {o}, which is not a parameter word holding its value {:#x}",
                        sc.name, sc.value
                    ));
                }
            }
            sc.kind.check(sc.value).map_err(|m| FileError(format!("scalar {}: {m}", sc.name)))?;
        }
        Ok(())
    }

    /// An accessor of a launch: valid on the device, and inside ranges the trace owns or its bindings provide.
    fn check_accessor(&self, geo: &ttdrv_contract::kernel::Geometry, w: &[u32]) -> Result<(), String> {
        let a = Accessor::from_words(w).ok_or("not a valid tensor accessor (§8.3)")?;
        a.validate(geo)?;
        let (s, e) = (a.addr as u64, a.addr as u64 + a.footprint(geo));
        let same = |t: BufferType| t.memory() == a.mem;
        let mut pieces: Vec<(u64, u64)> = self.owned.iter().filter(|r| same(r.0)).map(|r| (r.1, r.2)).collect();
        pieces.extend(
            self.bindings
                .iter()
                .filter(|b| same(b.spec.mem.buffer_type))
                .map(|b| (b.address, b.address.saturating_add(b.footprint))),
        );
        pieces.sort_unstable();
        let mut cur = s;
        for (ps, pe) in pieces {
            if ps <= cur && pe > cur {
                cur = pe;
            }
            if cur >= e {
                return Ok(());
            }
        }
        let mem = if a.mem == Memory::Dram { "DRAM" } else { "L1" };
        Err(format!(
            "{mem} range [{s:#x}, {e:#x}) is not inside a range the trace owns or a binding provides (first \
             uncovered byte {cur:#x})"
        ))
    }
}
