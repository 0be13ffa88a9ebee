//! Buffers (tensors on device): allocate, write, read, free, query.

use super::device::{device_checked, ttdrv_device};
use super::handles;
use super::versioned::{self, versioned};
use super::{FfiError, FfiResult, bytes, guard, out_ptr, ttdrv_status, write_out};
use std::ffi::c_void;
use std::sync::Arc;
use ttdrv::contract::kernel::{DType, Layout, ShardGrid};
use ttdrv::device::{Buffer, BufferSpec, BufferType, Contents, MemoryConfig, ShardSpec, buffer::TensorLayout};

/// A buffer in device memory (opaque). Free it with `ttdrv_buffer_free` (`deallocate(force=True)`).
pub struct ttdrv_buffer {
    _private: [u8; 0],
}

/// Element type: IEEE float32.
pub const TTDRV_DTYPE_FLOAT32: u32 = 0;
/// Element type: bfloat16.
pub const TTDRV_DTYPE_BFLOAT16: u32 = 1;
/// Buffer type: device DRAM.
pub const TTDRV_BUFFER_DRAM: u32 = 0;
/// Buffer type: core L1.
pub const TTDRV_BUFFER_L1: u32 = 1;
/// Buffer type: the per-core L1 region reserved by `l1_small_size`.
pub const TTDRV_BUFFER_L1_SMALL: u32 = 2;
/// Memory layout: pages (rows) round-robin over all banks or cores.
pub const TTDRV_LAYOUT_INTERLEAVED: u32 = 0;
/// Memory layout: shards of whole rows.
pub const TTDRV_LAYOUT_HEIGHT_SHARDED: u32 = 1;
/// Memory layout: shards of whole columns.
pub const TTDRV_LAYOUT_WIDTH_SHARDED: u32 = 2;
/// Memory layout: shards of row and column blocks.
pub const TTDRV_LAYOUT_BLOCK_SHARDED: u32 = 3;
/// Tensor layout (`ttnn.ROW_MAJOR_LAYOUT`): a page is a row (interleaved) or a shard row (sharded). The default.
pub const TTDRV_TENSOR_LAYOUT_ROW_MAJOR: u32 = 0;
/// Tensor layout (`ttnn.TILE_LAYOUT`): a page is a 32x32 tile of four 16x16 faces, each face row-major; the shape is
/// padded up to whole tiles on the device, the padding zero (device contract §8.3.2, docs/device-interface.md). Host
/// data stays dense row-major of `rows x cols`: writes tilize it, reads untilize it. Needs a device of contract 1.1 or
/// later (`ttdrv_device_info.contract_minor >= 1`).
pub const TTDRV_TENSOR_LAYOUT_TILE: u32 = 1;
/// Release 0.1's name of `TTDRV_TENSOR_LAYOUT_ROW_MAJOR`, kept for programs written against it.
pub const TTDRV_TENSOR_ROW_MAJOR: u32 = TTDRV_TENSOR_LAYOUT_ROW_MAJOR;
/// Shard orientation: shards assigned to the grid row by row.
pub const TTDRV_SHARD_ROW_MAJOR: u32 = 0;
/// Shard orientation: shards assigned to the grid column by column.
pub const TTDRV_SHARD_COL_MAJOR: u32 = 1;
/// `ttdrv_buffer_contents`: the buffer holds what was last written to it whole (or, never written since it was
/// allocated, whatever device memory held).
pub const TTDRV_CONTENTS_DEFINED: u32 = 0;
/// `ttdrv_buffer_contents`: a write to the buffer stopped part-way (its TIMEOUT or DEVICE_FAULT message said how much
/// was enqueued); reads fail with CONTENTS_UNDEFINED until it is written whole again.
pub const TTDRV_CONTENTS_PARTIAL_WRITE: u32 = 1;
/// `ttdrv_buffer_contents`: the device was reset since the buffer was last written (a reset erases device memory,
/// including writes still in flight when it faulted); reads fail with CONTENTS_UNDEFINED until it is written whole
/// again.
pub const TTDRV_CONTENTS_LOST_IN_RESET: u32 = 2;

/// The units holding shards: a core rectangle (L1) or a bank range (DRAM), and the shard shape.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ttdrv_shard_spec {
    /// L1: left column of the core rectangle.
    pub core_x0: u32,
    /// L1: top row.
    pub core_y0: u32,
    /// L1: right column, inclusive.
    pub core_x1: u32,
    /// L1: bottom row, inclusive.
    pub core_y1: u32,
    /// DRAM: first bank.
    pub bank_first: u32,
    /// DRAM: last bank, inclusive.
    pub bank_last: u32,
    /// Rows per shard.
    pub shard_rows: u32,
    /// Columns per shard.
    pub shard_cols: u32,
    /// `TTDRV_SHARD_ROW_MAJOR` or `TTDRV_SHARD_COL_MAJOR`.
    pub orientation: u32,
}

/// A memory configuration: buffer type, layout, and for sharded layouts the shard spec.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ttdrv_memory_config {
    /// `TTDRV_BUFFER_*`.
    pub buffer_type: u32,
    /// `TTDRV_LAYOUT_*`.
    pub layout: u32,
    /// Used by sharded layouts only.
    pub shard: ttdrv_shard_spec,
}

/// `sizeof(ttdrv_tensor_spec)` in release 0.1 (frozen: docs/abi.md, "Versions").
pub const TTDRV_TENSOR_SPEC_SIZE_V0_1: u32 = 64;

/// A tensor spec: 2-D shape, element type, tensor layout (row-major or tiled) and memory configuration. Fill with
/// `ttdrv_tensor_spec_init`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ttdrv_tensor_spec {
    /// `sizeof(ttdrv_tensor_spec)` of the caller's header, set by `ttdrv_tensor_spec_init`.
    pub struct_size: u32,
    /// Rows.
    pub rows: u32,
    /// Columns.
    pub cols: u32,
    /// `TTDRV_DTYPE_*`.
    pub dtype: u32,
    /// `TTDRV_TENSOR_LAYOUT_ROW_MAJOR` (the default) or `TTDRV_TENSOR_LAYOUT_TILE`. A tiled buffer's shard shapes are
    /// multiples of 32 that divide the shape padded up to whole tiles (a height shard spans the padded width, a width
    /// shard the padded height).
    pub tensor_layout: u32,
    /// Where and how.
    pub mem: ttdrv_memory_config,
}

versioned!(
    ttdrv_tensor_spec,
    "ttdrv_tensor_spec_init()",
    [("0.1", TTDRV_TENSOR_SPEC_SIZE_V0_1)],
    ttdrv_tensor_spec {
        struct_size: versioned::today::<ttdrv_tensor_spec>(),
        rows: 1,
        cols: 1,
        dtype: TTDRV_DTYPE_FLOAT32,
        tensor_layout: TTDRV_TENSOR_LAYOUT_ROW_MAJOR,
        mem: ttdrv_memory_config {
            buffer_type: TTDRV_BUFFER_DRAM,
            layout: TTDRV_LAYOUT_INTERLEAVED,
            shard: ttdrv_shard_spec {
                core_x0: 0,
                core_y0: 0,
                core_x1: 0,
                core_y1: 0,
                bank_first: 0,
                bank_last: 0,
                shard_rows: 0,
                shard_cols: 0,
                orientation: TTDRV_SHARD_ROW_MAJOR,
            },
        },
    }
);

fn bad(msg: String) -> FfiError {
    FfiError::invalid(msg)
}

pub(crate) fn memory_config_from_c(m: &ttdrv_memory_config) -> FfiResult<MemoryConfig> {
    let buffer_type = match m.buffer_type {
        TTDRV_BUFFER_DRAM => BufferType::Dram,
        TTDRV_BUFFER_L1 => BufferType::L1,
        TTDRV_BUFFER_L1_SMALL => BufferType::L1Small,
        v => {
            return Err(bad(format!("buffer_type {v} is not one of TTDRV_BUFFER_DRAM/L1/L1_SMALL")));
        }
    };
    let layout = Layout::from_u32(m.layout)
        .ok_or_else(|| bad(format!("layout {} is not one of the TTDRV_LAYOUT_* values", m.layout)))?;
    let shard = if layout == Layout::Interleaved {
        None
    } else {
        let s = &m.shard;
        let grid = if buffer_type == BufferType::Dram {
            let (f, l) = (u16::try_from(s.bank_first), u16::try_from(s.bank_last));
            match (f, l) {
                (Ok(first), Ok(last)) => ShardGrid::Banks { first, last },
                _ => {
                    return Err(bad(format!(
                        "bank range {}..={} is out of range; use banks below the device's dram_banks \
                         (ttdrv_device_get_info)",
                        s.bank_first, s.bank_last
                    )));
                }
            }
        } else {
            let c = |v: u32| {
                u8::try_from(v).map_err(|_| bad(format!("core coordinate {v} is out of range; use coordinates inside the device's core grid (ttdrv_device_get_info reports grid_x and grid_y)")))
            };
            ShardGrid::Cores { x0: c(s.core_x0)?, y0: c(s.core_y0)?, x1: c(s.core_x1)?, y1: c(s.core_y1)? }
        };
        let col_major = match s.orientation {
            TTDRV_SHARD_ROW_MAJOR => false,
            TTDRV_SHARD_COL_MAJOR => true,
            v => {
                return Err(bad(format!("shard orientation {v} is not TTDRV_SHARD_ROW_MAJOR/COL_MAJOR")));
            }
        };
        Some(ShardSpec { grid, shape: [s.shard_rows, s.shard_cols], col_major })
    };
    Ok(MemoryConfig { buffer_type, layout, shard })
}

pub(crate) fn memory_config_to_c(m: &MemoryConfig) -> ttdrv_memory_config {
    let mut out = ttdrv_memory_config {
        buffer_type: match m.buffer_type {
            BufferType::Dram => TTDRV_BUFFER_DRAM,
            BufferType::L1 => TTDRV_BUFFER_L1,
            BufferType::L1Small => TTDRV_BUFFER_L1_SMALL,
        },
        layout: m.layout as u32,
        shard: ttdrv_shard_spec::default(),
    };
    if let Some(s) = m.shard {
        match s.grid {
            ShardGrid::Cores { x0, y0, x1, y1 } => {
                (out.shard.core_x0, out.shard.core_y0, out.shard.core_x1, out.shard.core_y1) =
                    (x0 as u32, y0 as u32, x1 as u32, y1 as u32)
            }
            ShardGrid::Banks { first, last } => {
                (out.shard.bank_first, out.shard.bank_last) = (first as u32, last as u32)
            }
        }
        out.shard.shard_rows = s.shape[0];
        out.shard.shard_cols = s.shape[1];
        out.shard.orientation = s.col_major as u32;
    }
    out
}

/// A spec as C sees it: the 0.1 struct (`ttdrv_buffer_get_spec` explains why it stays that size).
pub(crate) fn spec_to_c(s: &BufferSpec) -> ttdrv_tensor_spec {
    ttdrv_tensor_spec {
        struct_size: TTDRV_TENSOR_SPEC_SIZE_V0_1,
        rows: s.rows,
        cols: s.cols,
        dtype: s.dtype as u32,
        tensor_layout: s.layout as u32,
        mem: memory_config_to_c(&s.mem),
    }
}

pub(crate) fn spec_from_c(p: *const ttdrv_tensor_spec) -> FfiResult<BufferSpec> {
    let s = versioned::read(p, "spec")?;
    let dtype =
        DType::from_u32(s.dtype).ok_or_else(|| bad(format!("dtype {} is not a TTDRV_DTYPE_* value", s.dtype)))?;
    let layout = tensor_layout_from_c(s.tensor_layout)?;
    Ok(BufferSpec { rows: s.rows, cols: s.cols, dtype, layout, mem: memory_config_from_c(&s.mem)? })
}

/// A `TTDRV_TENSOR_LAYOUT_*` value; the C values are the contract's (§8.3 word 11).
pub(crate) fn tensor_layout_from_c(v: u32) -> FfiResult<TensorLayout> {
    const _: () = assert!(
        TensorLayout::RowMajor as u32 == TTDRV_TENSOR_LAYOUT_ROW_MAJOR
            && TensorLayout::Tile as u32 == TTDRV_TENSOR_LAYOUT_TILE
    );
    TensorLayout::from_u32(v).ok_or_else(|| {
        bad(format!(
            "tensor_layout {v} is not a TTDRV_TENSOR_LAYOUT_* value; use TTDRV_TENSOR_LAYOUT_ROW_MAJOR or \
             TTDRV_TENSOR_LAYOUT_TILE"
        ))
    })
}

/// The buffer behind handle argument `name`.
pub(crate) fn buffer_arc(h: *const ttdrv_buffer, name: &'static str) -> FfiResult<Arc<Buffer>> {
    handles::lookup(h, name)
}

pub(crate) fn insert_buffer(b: Buffer) -> *mut ttdrv_buffer {
    handles::register(b)
}

/// Fills `*spec` with a `[1, 1]` float32, row-major (`TTDRV_TENSOR_LAYOUT_ROW_MAJOR`), interleaved-DRAM tensor and sets
/// `struct_size`. Change fields afterwards.
///
/// Thread: any. Errors: NULL_PARAMETER.
///
/// # Safety
/// `spec` must be NULL or point to a writable `ttdrv_tensor_spec`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_tensor_spec_init(spec: *mut ttdrv_tensor_spec) -> ttdrv_status {
    guard("ttdrv_tensor_spec_init", || {
        write_out(out_ptr(spec, "spec")?, <ttdrv_tensor_spec as versioned::Versioned>::defaults());
        Ok(())
    })
}

/// Allocates a buffer in device memory without writing it (`allocate_tensor_on_device`); its contents are undefined
/// until written. Placement is deterministic: the same sequence of allocations and frees gives the same addresses.
///
/// Ownership: on success `*out` receives a new handle; release it with `ttdrv_buffer_free`. `spec` is only read.
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), FORKED, INVALID_ARGUMENT (`spec->struct_size`
/// not the size of any release's struct (docs/abi.md); a zero or too large shape; an unknown dtype, buffer type, layout or orientation; a shard spec that does not
/// divide the shape, does not fit its grid, or lies outside the device's cores (coordinates above 255 included) or
/// banks; L1_SMALL on a device opened with `l1_small_size` 0; an unknown tensor layout; tiled shards that are not whole
/// tiles), UNSUPPORTED (`TTDRV_TENSOR_LAYOUT_TILE` on a device of contract 1.0), OUT_OF_DEVICE_MEMORY (the message
/// gives the free bytes and the largest free block).
///
/// # Safety
/// `spec` must point to an initialised `ttdrv_tensor_spec` (at least `spec->struct_size` readable bytes); `out` must be
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_allocate(
    device: *mut ttdrv_device,
    spec: *const ttdrv_tensor_spec,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_buffer_allocate", || {
        let d = device_checked(device)?;
        let s = spec_from_c(spec)?;
        let out = out_ptr(out, "out")?;
        let b = d.allocate(&s)?;
        write_out(out, insert_buffer(b));
        Ok(())
    })
}

/// Allocates a buffer and writes `data` into it on queue `cq` (`host_tensor.to(device, mem_config)`). `data` is the
/// dense row-major tensor (a `float *` for float32, a `uint16_t *` for bfloat16, or any bytes), exactly rows x cols x
/// element size bytes (tiled or not: a tiled buffer is tilized on the way, its padding written as zeros); it is copied
/// before the call returns and may be reused at once. On failure nothing stays allocated.
///
/// Ownership: on success `*out` receives a new handle; release it with `ttdrv_buffer_free`. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), FORKED, INVALID_ARGUMENT (`spec->struct_size` not the size of
/// any release's struct; a zero or too large shape; an unknown dtype, buffer type, layout or orientation; a shard spec that does not divide the
/// shape, does not fit its grid, or lies outside the device's cores (coordinates above 255 included) or banks; L1_SMALL
/// on a device opened with `l1_small_size` 0; an unknown tensor layout; tiled shards that are not whole tiles),
/// UNSUPPORTED (`TTDRV_TENSOR_LAYOUT_TILE` on a device of contract 1.0), OUT_OF_DEVICE_MEMORY
/// (the message gives the free bytes and the largest free block), INVALID_ARGUMENT (`len` is not the tensor's size),
/// INVALID_ARGUMENT (no such queue), INVALID_STATE (trace capture in progress on `cq`), TIMEOUT, DEVICE_FAULT.
///
/// # Safety
/// `spec` initialised; `data` readable for `len` bytes; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_from_host(
    device: *mut ttdrv_device,
    spec: *const ttdrv_tensor_spec,
    cq: u16,
    data: *const c_void,
    len: usize,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_buffer_from_host", || {
        let d = device_checked(device)?;
        let s = spec_from_c(spec)?;
        // The length is checked before a slice is built on it: a wrong length is an error, not a slice over memory
        // the caller does not have.
        s.check_host_len(len, "data")?;
        let data = bytes(data, len, "data")?;
        let out = out_ptr(out, "out")?;
        let b = d.buffer_from_host(&s, cq, data)?;
        write_out(out, insert_buffer(b));
        Ok(())
    })
}

/// Writes `data` — the dense row-major tensor (a `float *`, `uint16_t *` or any bytes), exactly the buffer's host size
/// (`ttdrv_buffer_host_size`) — into the buffer on queue `cq` (`copy_host_to_device_tensor`). The bytes are copied
/// before the call returns, so `data` may be reused at once; with `blocking` the call also waits until the device has
/// written them. Work enqueued later on `cq` sees the new contents; other queues must order themselves with events. A
/// tiled buffer's data is tilized into the records as it is copied, its padding written as zeros (device contract
/// §8.3.2).
///
/// A write that fails either was not started (the buffer is as it was), or its message says exactly how many of its
/// records and bytes were enqueued — those land unless the device is reset — and, if only some were, that the buffer's
/// contents are now undefined: `ttdrv_buffer_contents` then reports `TTDRV_CONTENTS_PARTIAL_WRITE` and reads fail with
/// CONTENTS_UNDEFINED until the buffer is written whole again. A write that returned OK but had not landed when the
/// device faulted is dropped by the reset that follows; the buffer then reports `TTDRV_CONTENTS_LOST_IN_RESET`.
///
/// Thread: any; concurrent writes to one buffer on different queues land in an unspecified order.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (`buffer` freed or never returned by ttdrv), CLOSED (its device was closed),
/// FORKED, INVALID_ARGUMENT (`len` is not the buffer's size), INVALID_ARGUMENT (no such queue), INVALID_STATE (trace
/// capture in progress on `cq`), TIMEOUT (waiting for ring space or, with `blocking`, for the device), DEVICE_FAULT,
/// PROTOCOL.
///
/// # Safety
/// `data` must be readable for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_write(
    buffer: *mut ttdrv_buffer,
    cq: u16,
    data: *const c_void,
    len: usize,
    blocking: bool,
) -> ttdrv_status {
    guard("ttdrv_buffer_write", || {
        let b = buffer_arc(buffer, "buffer")?;
        // Checked before a slice is built on it, as in ttdrv_buffer_from_host.
        b.spec().check_host_len(len, "write")?;
        let data = bytes(data, len, "data")?;
        Ok(b.write(cq, data, blocking)?)
    })
}

/// Reads the buffer into `out` (dense row-major, exactly the buffer's host size; a `float *`, `uint16_t *` or any
/// bytes; a tiled buffer is untilized as its data arrives, its padding left out) on queue `cq`. With `blocking` it
/// returns when the data is in `out`. Without (`cpu(blocking=False)`) it returns once the read is enqueued; the data is
/// in place after `ttdrv_device_finish(cq)`, after an event recorded on `cq` behind the read completes, or after the
/// device is closed.
///
/// A call that fails leaves nothing behind: a blocking read that times out (or fails part-way through being
/// enqueued) is cancelled before it returns, so `out` is the caller's again at once — data arriving later goes
/// nowhere. A non-blocking read stays pending until its data is delivered, even when a `ttdrv_device_finish` or event
/// wait for it times out (wait again); `ttdrv_device_reset` and `ttdrv_device_close` end every pending read: once they
/// return, no destination is ever written again.
///
/// Ownership: `out` stays the caller's, but until the data is in place (or the read ends as above) ttdrv writes it:
/// keep it valid and do not touch it. Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`buffer` freed or never
/// returned by ttdrv), CLOSED (its device was closed), FORKED, INVALID_ARGUMENT (`len` is not the buffer's size),
/// INVALID_ARGUMENT (no such queue), INVALID_STATE (trace capture in progress on `cq`), CONTENTS_UNDEFINED (a write to
/// the buffer stopped part-way, or the device was reset since it was written: see `ttdrv_buffer_contents`; nothing is
/// read), TIMEOUT, DEVICE_FAULT, PROTOCOL.
///
/// # Safety
/// `out` must be writable for `len` bytes until the data is in place (blocking: until the call returns).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_read(
    buffer: *mut ttdrv_buffer,
    cq: u16,
    blocking: bool,
    out: *mut c_void,
    len: usize,
) -> ttdrv_status {
    guard("ttdrv_buffer_read", || {
        let b = buffer_arc(buffer, "buffer")?;
        let want = b.spec().host_bytes();
        if len as u64 != want {
            return Err(bad(format!(
                "read into {len} bytes, but buffer {} holds {want} bytes; pass exactly {want}",
                b.spec()
            )));
        }
        let out = out_ptr(out as *mut u8, "out")?;
        // SAFETY: `out` holds `len` == host size bytes and stays valid until delivery (caller contract); a blocking
        // read that fails is cancelled below before the caller gets `out` back.
        let pending = unsafe { b.read_nonblocking(cq, out)? };
        if blocking && let Err(e) = pending.wait() {
            pending.cancel();
            return Err(e.into());
        }
        Ok(())
    })
}

/// Writes what the driver knows of the buffer's contents to `*out`: `TTDRV_CONTENTS_DEFINED`,
/// `TTDRV_CONTENTS_PARTIAL_WRITE` (a write stopped part-way) or `TTDRV_CONTENTS_LOST_IN_RESET` (the device was reset
/// since the buffer was last written; per docs/device-interface.md §7.2 a reset erases every buffer in DRAM and L1).
/// A whole write (`ttdrv_buffer_write`, `ttdrv_buffer_from_host`) or a built-in operation that writes the whole buffer
/// as its output (`ttdrv_fill`, the copies, element-wise ops, matmul, the model) makes it DEFINED again; a custom
/// program run or a trace replay leaves the state as it was. Answers after its device is closed too.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_contents(buffer: *const ttdrv_buffer, out: *mut u32) -> ttdrv_status {
    guard("ttdrv_buffer_contents", || {
        let b = buffer_arc(buffer, "buffer")?;
        let out = out_ptr(out, "out")?;
        let v = match b.contents() {
            Contents::Defined => TTDRV_CONTENTS_DEFINED,
            Contents::PartialWrite { .. } => TTDRV_CONTENTS_PARTIAL_WRITE,
            Contents::LostInReset => TTDRV_CONTENTS_LOST_IN_RESET,
            // A state added to the driver before the C ABI learns it is at least not defined.
            _ => TTDRV_CONTENTS_PARTIAL_WRITE,
        };
        write_out(out, v);
        Ok(())
    })
}

/// Frees the buffer now (`deallocate(force=True)`): its device range can be reused at once. Work already enqueued on a
/// queue that uses the buffer still runs before anything enqueued later on that queue; across queues, order the reuse
/// with events. A trace that used the buffer keeps what it needs (see `ttdrv_trace_execute`). NULL is a no-op.
///
/// Ownership: the handle is released; using it again is INVALID_HANDLE. Thread: any.
/// Errors: INVALID_HANDLE (already freed, or never a buffer).
///
/// # Safety
/// `buffer` must be NULL or a value returned by ttdrv.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_free(buffer: *mut ttdrv_buffer) -> ttdrv_status {
    guard("ttdrv_buffer_free", || {
        handles::release::<Buffer, _>(buffer)?;
        Ok(())
    })
}

/// Writes the buffer's device address (`buffer_address()`) to `*out`: the same offset in every bank or core the buffer
/// uses. Answers after its device is closed too.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_address(buffer: *const ttdrv_buffer, out: *mut u64) -> ttdrv_status {
    guard("ttdrv_buffer_address", || {
        let b = buffer_arc(buffer, "buffer")?;
        write_out(out_ptr(out, "out")?, b.address());
        Ok(())
    })
}

/// Writes the buffer's spec — shape, dtype, tensor layout and memory configuration (`.shape`, `.dtype`, `.layout`,
/// `.memory_config()`) — to `*out`, with `struct_size` set. Answers after its device is closed too.
///
/// Callers of release 0.1 did not set `out->struct_size` before this call, so it is not read: this function writes
/// the 0.1 struct (`TTDRV_TENSOR_SPEC_SIZE_V0_1` bytes) in every 0.x release; if the spec grows, a new function will
/// return the larger one (docs/abi.md, "Versions").
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE.
///
/// # Safety
/// `out` must point to a writable `ttdrv_tensor_spec`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_get_spec(
    buffer: *const ttdrv_buffer,
    out: *mut ttdrv_tensor_spec,
) -> ttdrv_status {
    guard("ttdrv_buffer_get_spec", || {
        let b = buffer_arc(buffer, "buffer")?;
        let out = out_ptr(out, "out")?;
        // Frozen at the 0.1 layout (above): the compile-time check in `versioned!` fails if the struct grows, and
        // this write must then become a copy of TTDRV_TENSOR_SPEC_SIZE_V0_1 bytes.
        write_out(out, spec_to_c(b.spec()));
        Ok(())
    })
}

/// Writes the buffer's size in host memory (rows x cols x element size: what `ttdrv_buffer_write` and
/// `ttdrv_buffer_read` take; for a tiled buffer too, whose padding stays on the device) to `*out`. Answers after its
/// device is closed too.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_host_size(buffer: *const ttdrv_buffer, out: *mut usize) -> ttdrv_status {
    guard("ttdrv_buffer_host_size", || {
        let b = buffer_arc(buffer, "buffer")?;
        write_out(out_ptr(out, "out")?, b.spec().host_bytes() as usize);
        Ok(())
    })
}
