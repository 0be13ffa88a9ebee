//! Device buffers: 2-D tensors in DRAM, L1 or L1_SMALL, interleaved or sharded.

use super::alloc::Direction;
use super::{Device, DeviceInner};
use crate::error::{Error, GridText, Result};
use std::fmt;
use std::sync::Arc;
use ttdrv_contract::kernel::{Accessor, DType, Layout, ShardGrid, TILE_DIM, TILE_ELEMS};
use ttdrv_contract::{Memory, align_up};

/// Where a buffer lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BufferType {
    /// Device DRAM.
    Dram,
    /// Core L1.
    L1,
    /// The per-core L1 region reserved by `l1_small_size`.
    L1Small,
}

impl BufferType {
    /// Every buffer type.
    pub const ALL: [BufferType; 3] = [BufferType::Dram, BufferType::L1, BufferType::L1Small];

    /// The memory the type lives in.
    pub fn memory(self) -> Memory {
        match self {
            BufferType::Dram => Memory::Dram,
            BufferType::L1 | BufferType::L1Small => Memory::L1,
        }
    }

    /// Name for messages.
    pub fn name(self) -> &'static str {
        match self {
            BufferType::Dram => "DRAM",
            BufferType::L1 => "L1",
            BufferType::L1Small => "L1_SMALL",
        }
    }
}

/// How a sharded buffer is cut and placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ShardSpec {
    /// Cores (L1) or banks (DRAM) holding the shards.
    pub grid: ShardGrid,
    /// Rows and columns of one shard.
    pub shape: [u32; 2],
    /// Assign shards to the grid column by column instead of row by row.
    pub col_major: bool,
}

/// Memory configuration: buffer type, layout and, for sharded layouts, the shard spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryConfig {
    /// Where.
    pub buffer_type: BufferType,
    /// How the pages are spread.
    pub layout: Layout,
    /// Shards, for sharded layouts.
    pub shard: Option<ShardSpec>,
}

impl MemoryConfig {
    /// Interleaved DRAM.
    pub const DRAM: MemoryConfig =
        MemoryConfig { buffer_type: BufferType::Dram, layout: Layout::Interleaved, shard: None };
    /// Interleaved L1.
    pub const L1: MemoryConfig = MemoryConfig { buffer_type: BufferType::L1, layout: Layout::Interleaved, shard: None };

    /// A sharded config.
    pub fn sharded(buffer_type: BufferType, layout: Layout, grid: ShardGrid, shape: [u32; 2]) -> MemoryConfig {
        MemoryConfig { buffer_type, layout, shard: Some(ShardSpec { grid, shape, col_major: false }) }
    }
}

/// How a tensor's elements are arranged in its pages (`ttnn.ROW_MAJOR_LAYOUT`, `ttnn.TILE_LAYOUT`): row-major, or
/// 32×32 tiles of four 16×16 faces with the shape padded up to whole tiles (docs/device-interface.md §8.3.2). Host
/// data is dense row-major of the logical shape either way; transfers tilize and untilize.
pub use ttdrv_contract::kernel::TensorLayout;

/// Everything that defines a buffer except its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BufferSpec {
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// Element type.
    pub dtype: DType,
    /// Element arrangement.
    pub layout: TensorLayout,
    /// Memory configuration.
    pub mem: MemoryConfig,
}

impl BufferSpec {
    /// A row-major spec.
    pub fn new(rows: u32, cols: u32, dtype: DType, mem: MemoryConfig) -> BufferSpec {
        BufferSpec { rows, cols, dtype, layout: TensorLayout::RowMajor, mem }
    }

    /// A tiled spec (`ttnn.TILE_LAYOUT`): 32×32 tiles, the shape padded up to whole tiles on the device
    /// (docs/device-interface.md §8.3.2); host data stays dense row-major of `rows × cols`.
    pub fn tiled(rows: u32, cols: u32, dtype: DType, mem: MemoryConfig) -> BufferSpec {
        BufferSpec { rows, cols, dtype, layout: TensorLayout::Tile, mem }
    }

    /// The same spec with tensor layout `layout`.
    #[must_use]
    pub fn with_layout(self, layout: TensorLayout) -> BufferSpec {
        BufferSpec { layout, ..self }
    }

    /// Rows and columns as stored on the device: the shape rounded up to whole 32×32 tiles when tiled, else the
    /// shape (docs/device-interface.md §8.3.2). In u64, so that no shape overflows.
    pub fn padded_shape(&self) -> [u64; 2] {
        match self.layout {
            TensorLayout::RowMajor => [self.rows as u64, self.cols as u64],
            TensorLayout::Tile => {
                let t = TILE_DIM as u64;
                [(self.rows as u64).div_ceil(t) * t, (self.cols as u64).div_ceil(t) * t]
            }
        }
    }

    /// Bytes of the tensor in host memory (dense row-major).
    pub fn host_bytes(&self) -> u64 {
        self.rows as u64 * self.cols as u64 * self.dtype.size() as u64
    }

    /// Fails with [`Error::HostLength`] unless `len` is [`BufferSpec::host_bytes`]; `what` names the transfer.
    pub fn check_host_len(&self, len: usize, what: &'static str) -> Result<()> {
        if len as u64 != self.host_bytes() {
            return Err(Error::HostLength { call: what, given: len, spec: *self });
        }
        Ok(())
    }
}

impl fmt::Display for BufferSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tiled = if self.layout == TensorLayout::Tile { " tiled" } else { "" };
        write!(
            f,
            "[{}, {}] {:?}{tiled} {} {:?}",
            self.rows,
            self.cols,
            self.dtype,
            self.mem.buffer_type.name(),
            self.mem.layout
        )
    }
}

/// What a buffer holds, as far as the driver knows ([`Buffer::contents`]; `ttdrv_buffer_contents` in C).
///
/// Only what the driver can know is tracked: host writes and the built-in operations that write a whole output
/// (copies, element-wise, matmul, fill, the model) make a buffer [`Contents::Defined`]; a custom program's dispatch
/// (`Program::run`, or `run_io`, whose outputs a kernel may write only in part) and a trace replay leave its state
/// as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Contents {
    /// The buffer holds what was last written to it whole — or, if nothing wrote it since it was allocated,
    /// whatever the device memory held (`allocate_tensor_on_device` leaves that to the caller).
    Defined,
    /// A host write on `queue` stopped part-way: `bytes_enqueued` of its `bytes_total` bytes were enqueued and
    /// land, the rest never will. Reads fail with [`crate::Error::ContentsUndefined`] until the buffer is written
    /// whole again.
    PartialWrite {
        /// The queue of the write.
        queue: u16,
        /// Bytes of the write that were enqueued.
        bytes_enqueued: u64,
        /// Bytes of the whole write.
        bytes_total: u64,
    },
    /// The device was reset after the buffer was last written, and a reset erases DRAM and L1 (docs/device-
    /// interface.md §7.2): no buffer's contents survive it, whatever the emulator happens to keep. This includes
    /// writes that were enqueued (and returned OK) but had not landed when the device faulted or was reset. Reads
    /// fail with [`crate::Error::ContentsUndefined`] until the buffer is written whole again.
    LostInReset,
}

/// The driver's record of what wrote a buffer last.
#[derive(Debug)]
pub(crate) struct ContentsState {
    inner: std::sync::Mutex<(u32, Option<Contents>)>,
}

impl ContentsState {
    fn new(epoch: u32) -> ContentsState {
        ContentsState { inner: std::sync::Mutex::new((epoch, None)) }
    }

    /// A whole write (or an op writing the whole buffer) enqueued in device epoch `epoch`.
    pub(crate) fn mark_written(&self, epoch: u32) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = (epoch, None);
    }

    /// A write on `queue` that stopped after enqueueing `enqueued` of `total` bytes, in epoch `epoch`.
    pub(crate) fn mark_partial(&self, epoch: u32, queue: u16, enqueued: u64, total: u64) {
        let c = Contents::PartialWrite { queue, bytes_enqueued: enqueued, bytes_total: total };
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = (epoch, Some(c));
    }

    /// The contents, given the device's current epoch (resets so far).
    fn get(&self, epoch_now: u32) -> Contents {
        let (epoch, c) = *self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if epoch != epoch_now {
            return Contents::LostInReset;
        }
        c.unwrap_or(Contents::Defined)
    }
}

/// A buffer in device memory. Dropping it (or [`Buffer::deallocate`]) frees its range at once.
pub struct Buffer {
    pub(crate) dev: Arc<DeviceInner>,
    pub(crate) id: u64,
    pub(crate) spec: BufferSpec,
    pub(crate) addr: u64,
    pub(crate) page_stride: u32,
    pub(crate) footprint: u64,
    pub(crate) contents: ContentsState,
}

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({} at {:#x})", self.spec, self.addr)
    }
}

/// Placement of a checked spec: page stride, footprint per unit, alignment.
pub(crate) struct Placement {
    pub page_stride: u32,
    pub footprint: u64,
    pub align: u64,
}

impl DeviceInner {
    /// Checks a spec against the device and computes its placement.
    pub(crate) fn place(&self, s: &BufferSpec) -> Result<Placement> {
        let info = &self.info;
        let bad = |reason: String| Err(Error::InvalidBufferSpec { spec: *s, reason });
        if s.rows == 0 || s.cols == 0 {
            return bad("the shape has a zero dimension; both must be at least 1".into());
        }
        let align = match s.mem.buffer_type.memory() {
            Memory::Dram => info.dram_align as u64,
            Memory::L1 => info.l1_align as u64,
        };
        if s.mem.buffer_type == BufferType::L1Small && self.params.l1_small_size == 0 {
            return bad(format!(
                "device {} was opened with l1_small_size=0, so it has no L1_SMALL region; open it with \
                 l1_small_size set to the per-core bytes you need",
                info.name
            ));
        }
        let need = s.layout.info().since_minor;
        if info.version_minor < need {
            return Err(Error::Unsupported(format!(
                "buffer {s}: device {} speaks device contract {}.{}, which has no {} tensors (they need {}.{need}, \
                 docs/device-interface.md §8.3.2): allocate it row-major on this device, or use a device of a newer \
                 contract",
                info.name,
                info.version_major,
                info.version_minor,
                s.layout.name(),
                info.version_major
            )));
        }
        let es = s.dtype.size() as u64;
        let units = info.geometry().units(s.mem.buffer_type.memory()) as u64;
        let tiled = s.layout == TensorLayout::Tile;
        let [prows, pcols] = s.padded_shape();
        if prows > u32::MAX as u64 || pcols > u32::MAX as u64 {
            return bad(format!(
                "padded up to whole tiles the shape is [{prows}, {pcols}], beyond the 2^32 - 1 rows and columns a \
                 tensor may have; use a smaller shape"
            ));
        }
        // A page is a row (row-major interleaved), a shard row (row-major sharded) or a tile (tiled).
        let tile_bytes = TILE_ELEMS as u64 * es;
        match (s.mem.layout, s.mem.shard) {
            (Layout::Interleaved, None) => {
                let page = if tiled { tile_bytes } else { s.cols as u64 * es };
                let stride = align_up(page, align);
                let pages = if tiled { (prows / TILE_DIM as u64) * (pcols / TILE_DIM as u64) } else { s.rows as u64 };
                let footprint = pages.div_ceil(units).saturating_mul(stride);
                if stride > u32::MAX as u64 {
                    return bad(format!(
                        "rows of {} bytes are too long: a page (one row) holds at most {} bytes; use fewer columns",
                        s.cols as u64 * es,
                        u32::MAX
                    ));
                }
                Ok(Placement { page_stride: stride as u32, footprint, align })
            }
            (Layout::Interleaved, Some(_)) => {
                bad("an interleaved memory config must not carry a shard spec; use a sharded layout or drop the spec"
                    .into())
            }
            (_, None) => bad(format!("{:?} needs a shard spec (grid and shard shape)", s.mem.layout)),
            (layout, Some(sh)) => {
                let [sr, sc] = sh.shape;
                if sr == 0 || sc == 0 {
                    return bad(format!("shard shape [{sr}, {sc}] has a zero dimension; both must be at least 1"));
                }
                if tiled && (sr % TILE_DIM != 0 || sc % TILE_DIM != 0) {
                    return bad(format!(
                        "shards of a tiled buffer hold whole {TILE_DIM}x{TILE_DIM} tiles: shard shape [{sr}, {sc}] \
                         must be a multiple of {TILE_DIM} in both dimensions; round it up to whole tiles"
                    ));
                }
                // Tiled shapes are padded to whole tiles (§8.3.2); say so where the padded shape is the rule.
                let padded = |v: u64, of: u32, what: &str| {
                    if v == of as u64 {
                        format!("{v} {what}")
                    } else {
                        format!("{v} {what} ({of} padded to whole tiles)")
                    }
                };
                match layout {
                    Layout::HeightSharded if sc as u64 != pcols => {
                        return bad(format!(
                            "height sharding keeps whole rows: shard width {sc} must equal the {}",
                            padded(pcols, s.cols, "columns")
                        ));
                    }
                    Layout::WidthSharded if sr as u64 != prows => {
                        return bad(format!(
                            "width sharding keeps whole columns: shard height {sr} must equal the {}",
                            padded(prows, s.rows, "rows")
                        ));
                    }
                    _ => {}
                }
                if prows % sr as u64 != 0 || pcols % sc as u64 != 0 {
                    let shape = if tiled {
                        format!("[{prows}, {pcols}] (the shape [{}, {}] padded to whole tiles)", s.rows, s.cols)
                    } else {
                        format!("[{}, {}]", s.rows, s.cols)
                    };
                    return bad(format!(
                        "shard shape [{sr}, {sc}] does not divide the buffer shape {shape}; choose a shard shape \
                         whose sides divide the buffer's"
                    ));
                }
                let shards = (prows / sr as u64) as usize * (pcols / sc as u64) as usize;
                self.check_shard_grid(s.mem.buffer_type, &sh.grid)?;
                if shards > sh.grid.len() {
                    return Err(Error::InvalidGrid {
                        what: "shard grid",
                        grid: sh.grid,
                        reason: format!(
                            "{shards} shards of [{sr}, {sc}] do not fit its {} {}; use larger shards or a larger grid",
                            sh.grid.len(),
                            if s.mem.buffer_type.memory() == Memory::L1 { "cores" } else { "banks" }
                        ),
                    });
                }
                let (stride, pages) = if tiled {
                    (align_up(tile_bytes, align), (sr / TILE_DIM) as u64 * (sc / TILE_DIM) as u64)
                } else {
                    (align_up(sc as u64 * es, align), sr as u64)
                };
                if stride > u32::MAX as u64 {
                    return bad(format!(
                        "shard rows of {} bytes are too long: a page holds at most {} bytes; use narrower shards",
                        sc as u64 * es,
                        u32::MAX
                    ));
                }
                Ok(Placement { page_stride: stride as u32, footprint: pages.saturating_mul(stride), align })
            }
        }
    }

    /// Checks that a shard grid is of the kind the memory needs (cores for L1, banks for DRAM), runs forwards and
    /// lies inside the device.
    fn check_shard_grid(&self, t: BufferType, grid: &ShardGrid) -> Result<()> {
        let info = &self.info;
        let bad = |reason: String| Err(Error::InvalidGrid { what: "shard grid", grid: *grid, reason });
        match (t.memory(), *grid) {
            (Memory::L1, ShardGrid::Cores { x0, y0, x1, y1 }) => {
                if x1 < x0 || y1 < y0 {
                    let fixed = ShardGrid::Cores { x0: x0.min(x1), y0: y0.min(y1), x1: x0.max(x1), y1: y0.max(y1) };
                    return bad(format!(
                        "the rectangle is reversed: give the top-left core first, then the bottom-right one ({})",
                        GridText(&fixed)
                    ));
                }
                if x1 as u32 >= info.grid_x || y1 as u32 >= info.grid_y {
                    return bad(format!(
                        "it is outside device {}, whose cores are (0,0)-({},{}) ({}x{})",
                        info.name,
                        info.grid_x - 1,
                        info.grid_y - 1,
                        info.grid_x,
                        info.grid_y
                    ));
                }
                Ok(())
            }
            (Memory::Dram, ShardGrid::Banks { first, last }) => {
                if last < first {
                    return bad(format!(
                        "the range is reversed: give the first bank, then the last one (banks {last}-{first})"
                    ));
                }
                if last as u32 >= info.dram_banks {
                    return bad(format!(
                        "it is outside device {}, whose DRAM banks are 0-{}",
                        info.name,
                        info.dram_banks - 1
                    ));
                }
                Ok(())
            }
            (Memory::L1, _) => bad(format!("{} buffers are sharded over a rectangle of cores, not banks", t.name())),
            (Memory::Dram, _) => bad("DRAM buffers are sharded over a range of banks, not cores".into()),
        }
    }

    pub(crate) fn allocate_buffer(self: &Arc<Self>, spec: &BufferSpec, dir: Direction) -> Result<Buffer> {
        self.check_usable()?;
        let p = self.place(spec)?;
        let id = self.next_buffer_id();
        let addr = self.alloc_buffer_range(spec.mem.buffer_type, p.footprint, p.align, dir, id, spec)?;
        let contents = ContentsState::new(self.epoch.load(std::sync::atomic::Ordering::Acquire));
        Ok(Buffer {
            dev: self.clone(),
            id,
            spec: *spec,
            addr,
            page_stride: p.page_stride,
            footprint: p.footprint,
            contents,
        })
    }
}

impl Device {
    /// Allocates a buffer without writing it (`allocate_tensor_on_device`): its contents are undefined.
    pub fn allocate(&self, spec: &BufferSpec) -> Result<Buffer> {
        self.inner.allocate_buffer(spec, Direction::BottomUp)
    }

    /// Allocates at the highest address that fits (the model allocates its outputs this way, so intermediates
    /// below do not move them).
    pub fn allocate_top_down(&self, spec: &BufferSpec) -> Result<Buffer> {
        self.inner.allocate_buffer(spec, Direction::TopDown)
    }

    /// Allocates a buffer and writes `data` into it on queue `cq` (`host_tensor.to(device, mem_config)`).
    pub fn buffer_from_host(&self, spec: &BufferSpec, cq: u16, data: &[u8]) -> Result<Buffer> {
        let b = self.allocate(spec)?;
        b.write(cq, data, false)?;
        Ok(b)
    }
}

impl Buffer {
    /// Its spec.
    pub fn spec(&self) -> &BufferSpec {
        &self.spec
    }

    /// What the buffer holds, as far as the driver knows: [`Contents::Defined`] unless a write stopped part-way or
    /// the device was reset since it was last written whole.
    pub fn contents(&self) -> Contents {
        self.contents.get(self.dev.epoch.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Fails with [`Error::ContentsUndefined`] unless [`Buffer::contents`] is [`Contents::Defined`]; `call` names
    /// the refused call.
    pub(crate) fn check_contents(&self, call: &'static str) -> Result<()> {
        match self.contents() {
            Contents::Defined => Ok(()),
            contents => {
                Err(Error::ContentsUndefined { call, spec: self.spec, contents, device: self.dev.info.name.clone() })
            }
        }
    }

    /// The address: the same offset in every bank or core it uses (`buffer_address()`).
    pub fn address(&self) -> u64 {
        self.addr
    }

    /// Rows and columns.
    pub fn shape(&self) -> [u32; 2] {
        [self.spec.rows, self.spec.cols]
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        self.spec.dtype
    }

    /// Bytes the buffer occupies in each bank or core it uses.
    pub fn footprint(&self) -> u64 {
        self.footprint
    }

    /// Distance between consecutive pages in one unit.
    pub fn page_stride(&self) -> u32 {
        self.page_stride
    }

    /// The tensor accessor kernels use to find it (contract §8.3).
    pub fn accessor(&self) -> Accessor {
        let (shard_rows, shard_cols, grid, col_major) = match self.spec.mem.shard {
            Some(s) => (s.shape[0], s.shape[1], s.grid, s.col_major),
            None => (0, 0, ShardGrid::Banks { first: 0, last: 0 }, false),
        };
        let grid = match (self.spec.mem.shard, self.spec.mem.buffer_type.memory()) {
            (None, Memory::L1) => ShardGrid::Cores { x0: 0, y0: 0, x1: 0, y1: 0 },
            _ => grid,
        };
        Accessor {
            mem: self.spec.mem.buffer_type.memory(),
            layout: self.spec.mem.layout,
            dtype: self.spec.dtype,
            addr: self.addr as u32,
            rows: self.spec.rows,
            cols: self.spec.cols,
            page_stride: self.page_stride,
            shard_rows,
            shard_cols,
            grid,
            col_major,
            tensor_layout: self.spec.layout,
        }
    }

    /// The device's unit-offset range `[addr, addr + footprint)` and its memory type.
    pub(crate) fn range(&self) -> (BufferType, u64, u64) {
        (self.spec.mem.buffer_type, self.addr, self.addr + self.footprint)
    }

    /// A handle to the device the buffer belongs to.
    pub fn device(&self) -> Result<Device> {
        self.dev.check_usable()?;
        Ok(Device::from_inner(self.dev.clone()))
    }

    /// Frees the buffer now (`deallocate(force=True)`): work already enqueued that uses it still runs first on
    /// its queue; on other queues, order reuse with events.
    pub fn deallocate(self) {
        drop(self)
    }

    /// The device the buffer belongs to, if it is the same as `dev`.
    pub(crate) fn check_device(&self, dev: &DeviceInner) -> Result<()> {
        if !std::ptr::eq(Arc::as_ptr(&self.dev), dev) {
            return Err(Error::WrongDevice {
                object: "buffer",
                object_device: self.dev.info.name.clone(),
                device: dev.info.name.clone(),
            });
        }
        Ok(())
    }
}

impl Drop for Buffer {
    /// Frees the range; what a trace capture in progress wrote there before reading it becomes the trace's
    /// (device/trace.rs).
    fn drop(&mut self) {
        let mut m = self.dev.mem.lock().unwrap_or_else(|e| e.into_inner());
        let (ty, s, e) = self.range();
        m.free_buffer(ty, s, e, self.id);
    }
}
