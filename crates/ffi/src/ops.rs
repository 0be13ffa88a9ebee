//! Operations: to_memory_config, reshard, to_layout, matmul, element-wise, fill — each enqueues a program on a queue.
//! Every op takes row-major and tiled operands in any mix (device contract §8.2).

use super::buffer::{
    buffer_arc, insert_buffer, memory_config_from_c, tensor_layout_from_c, ttdrv_buffer, ttdrv_memory_config,
};
use super::{FfiError, FfiResult, guard, nonnull, out_ptr, ttdrv_status, write_out};
use ttdrv::MemoryConfig;
use ttdrv::device::Device;
use ttdrv::device::ops::{BinaryOp, UnaryOp};

/// `ttdrv_eltwise_binary` op: a + b.
pub const TTDRV_BINARY_ADD: u32 = 0;
/// `ttdrv_eltwise_binary` op: a - b.
pub const TTDRV_BINARY_SUB: u32 = 1;
/// `ttdrv_eltwise_binary` op: a * b.
pub const TTDRV_BINARY_MUL: u32 = 2;
/// `ttdrv_eltwise_unary` op: max(x, 0).
pub const TTDRV_UNARY_RELU: u32 = 0;
/// `ttdrv_eltwise_unary` op: GELU (tanh approximation).
pub const TTDRV_UNARY_GELU: u32 = 1;
/// `ttdrv_eltwise_unary` op: e^x.
pub const TTDRV_UNARY_EXP: u32 = 2;
/// `ttdrv_eltwise_unary` op: x * param.
pub const TTDRV_UNARY_SCALE: u32 = 3;
/// `ttdrv_eltwise_unary` op: GELU, the erf form BERT uses (x (1 + erf(x / sqrt 2)) / 2); needs device contract 1.3.
pub const TTDRV_UNARY_GELU_ERF: u32 = 4;

fn mem(p: *const ttdrv_memory_config) -> FfiResult<MemoryConfig> {
    nonnull(p, "mem")?;
    // SAFETY: non-NULL and readable per the contract.
    memory_config_from_c(&unsafe { p.read_unaligned() })
}

/// The device a buffer belongs to, as a handle the ops can use.
fn dev_of(b: &ttdrv::Buffer) -> FfiResult<Device> {
    Ok(b.device()?)
}

/// Copies `input` into a new buffer with memory configuration `*mem` (`to_memory_config`), on queue `cq`: any layout to
/// any layout (interleaved or sharded, DRAM or L1); shape, element type and tensor layout are kept.
///
/// Ownership: the inputs stay the caller's; on success `*out` receives a new buffer handle to release with
/// `ttdrv_buffer_free`. Returns once the op is enqueued (captured, during a trace capture on `cq`); work enqueued later
/// on `cq` sees its result. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no such queue;
/// buffers of different devices; shapes or dtypes that do not fit the op; a memory config as in
/// `ttdrv_buffer_allocate`), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the op's built-in kernel),
/// PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on `cq`), TIMEOUT (no ring
/// space), DEVICE_FAULT.
///
/// # Safety
/// `mem` must point to a readable `ttdrv_memory_config`; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_to_memory_config(
    input: *mut ttdrv_buffer,
    cq: u16,
    mem: *const ttdrv_memory_config,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_to_memory_config", || {
        let a = buffer_arc(input, "input")?;
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let b = dev_of(&a)?.to_memory_config(cq, &a, &m)?;
        write_out(out, insert_buffer(b));
        Ok(())
    })
}

/// Reshards `input` into a new buffer with memory configuration `*mem` (`reshard(input, mem_config)`), on queue `cq`.
/// Same as `ttdrv_to_memory_config`.
///
/// Ownership: the inputs stay the caller's; on success `*out` receives a new buffer handle to release with
/// `ttdrv_buffer_free`. Returns once the op is enqueued (captured, during a trace capture on `cq`); work enqueued later
/// on `cq` sees its result. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no such queue;
/// buffers of different devices; shapes or dtypes that do not fit the op; a memory config as in
/// `ttdrv_buffer_allocate`), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the op's built-in kernel),
/// PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on `cq`), TIMEOUT (no ring
/// space), DEVICE_FAULT.
///
/// # Safety
/// `mem` must point to a readable `ttdrv_memory_config`; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_reshard(
    input: *mut ttdrv_buffer,
    cq: u16,
    mem: *const ttdrv_memory_config,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_reshard", || {
        let a = buffer_arc(input, "input")?;
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let b = dev_of(&a)?.reshard(cq, &a, &m)?;
        write_out(out, insert_buffer(b));
        Ok(())
    })
}

/// Reshards `input` into the existing buffer `output`, which keeps its address and memory configuration
/// (`reshard(input, mem_config, output_tensor)`), on queue `cq`: how the programs of tt-metal's guide "Advanced
/// Performance Optimizations for Models" feed a trace's persistent input in place (c-examples/trace_l1_input.c). The
/// shapes must match; the element types may differ (the copy kernel converts float32 and bfloat16 either way).
///
/// Ownership: both buffers stay the caller's. Returns once enqueued. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no such queue;
/// buffers of different devices; shapes or dtypes that do not fit the op; a memory config as in
/// `ttdrv_buffer_allocate`), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the op's built-in kernel),
/// PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on `cq`), TIMEOUT (no ring
/// space), DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_reshard_into(input: *mut ttdrv_buffer, cq: u16, output: *mut ttdrv_buffer) -> ttdrv_status {
    guard("ttdrv_reshard_into", || {
        let a = buffer_arc(input, "input")?;
        let o = buffer_arc(output, "output")?;
        Ok(dev_of(&a)?.reshard_into(cq, &a, &o)?)
    })
}

/// Copies `input` into a new buffer of tensor layout `tensor_layout` (a `TTDRV_TENSOR_LAYOUT_*` value) with memory
/// configuration `*mem` (`ttnn.to_layout`), on queue `cq`: tilize (row-major to tiled) or untilize on the device, by
/// the copy kernel; shape and element type are kept. A tiled output's shard shapes must be whole tiles (see
/// `ttdrv_tensor_spec.tensor_layout`).
///
/// Ownership: the input stays the caller's; on success `*out` receives a new buffer handle to release with
/// `ttdrv_buffer_free`. Returns once the op is enqueued (captured, during a trace capture on `cq`); work enqueued later
/// on `cq` sees its result. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no such queue;
/// an unknown `tensor_layout`; a memory config as in `ttdrv_buffer_allocate`, tiled shards that are not whole tiles
/// included), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the copy kernel; `TTDRV_TENSOR_LAYOUT_TILE` on a
/// device of contract 1.0), PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on
/// `cq`), TIMEOUT (no ring space), DEVICE_FAULT.
///
/// # Safety
/// `mem` must point to a readable `ttdrv_memory_config`; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_to_layout(
    input: *mut ttdrv_buffer,
    cq: u16,
    tensor_layout: u32,
    mem: *const ttdrv_memory_config,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_to_layout", || {
        let a = buffer_arc(input, "input")?;
        let layout = tensor_layout_from_c(tensor_layout)?;
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let b = dev_of(&a)?.to_layout(cq, &a, layout, &m)?;
        write_out(out, insert_buffer(b));
        Ok(())
    })
}

/// `a @ b` into a new buffer with memory configuration `*mem`, on queue `cq`. `a` is [M, K] and `b` [K, N], both
/// float32, or both bfloat16 (accumulated in float32, rounded once). The output has `a`'s tensor layout.
///
/// Ownership: the inputs stay the caller's; on success `*out` receives a new buffer handle to release with
/// `ttdrv_buffer_free`. Returns once the op is enqueued (captured, during a trace capture on `cq`); work enqueued later
/// on `cq` sees its result. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no such queue;
/// buffers of different devices; shapes or dtypes that do not fit the op; a memory config as in
/// `ttdrv_buffer_allocate`), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the op's built-in kernel),
/// PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on `cq`), TIMEOUT (no ring
/// space), DEVICE_FAULT.
///
/// # Safety
/// `mem` must point to a readable `ttdrv_memory_config`; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_matmul(
    a: *mut ttdrv_buffer,
    b: *mut ttdrv_buffer,
    cq: u16,
    mem: *const ttdrv_memory_config,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_matmul", || {
        let (a, b) = (buffer_arc(a, "a")?, buffer_arc(b, "b")?);
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let r = dev_of(&a)?.matmul(cq, &a, &b, &m)?;
        write_out(out, insert_buffer(r));
        Ok(())
    })
}

/// Element-wise `a op b` (`op` is a `TTDRV_BINARY_*` value) into a new buffer with memory configuration `*mem`, on
/// queue `cq`. `b` has `a`'s shape, or is one row [1, N] broadcast over `a`'s rows; same element type. The output has
/// `a`'s tensor layout.
///
/// Ownership: the inputs stay the caller's; on success `*out` receives a new buffer handle to release with
/// `ttdrv_buffer_free`. Returns once the op is enqueued (captured, during a trace capture on `cq`); work enqueued later
/// on `cq` sees its result. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no such queue;
/// buffers of different devices; shapes or dtypes that do not fit the op; a memory config as in
/// `ttdrv_buffer_allocate`), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the op's built-in kernel),
/// PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on `cq`), TIMEOUT (no ring
/// space), DEVICE_FAULT; INVALID_ARGUMENT for an unknown `op`.
///
/// # Safety
/// `mem` must point to a readable `ttdrv_memory_config`; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_eltwise_binary(
    a: *mut ttdrv_buffer,
    b: *mut ttdrv_buffer,
    op: u32,
    cq: u16,
    mem: *const ttdrv_memory_config,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_eltwise_binary", || {
        let (a, b) = (buffer_arc(a, "a")?, buffer_arc(b, "b")?);
        let op = match op {
            TTDRV_BINARY_ADD => BinaryOp::Add,
            TTDRV_BINARY_SUB => BinaryOp::Sub,
            TTDRV_BINARY_MUL => BinaryOp::Mul,
            v => return Err(FfiError::invalid(format!("binary op {v} is not a TTDRV_BINARY_* value"))),
        };
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let r = dev_of(&a)?.binary(cq, op, &a, &b, &m)?;
        write_out(out, insert_buffer(r));
        Ok(())
    })
}

/// Element-wise `op(a)` (`op` is a `TTDRV_UNARY_*` value; `param` is the factor of `TTDRV_UNARY_SCALE`, ignored
/// otherwise) into a new buffer with memory configuration `*mem`, on queue `cq`. The output has `a`'s tensor layout.
///
/// Ownership: the inputs stay the caller's; on success `*out` receives a new buffer handle to release with
/// `ttdrv_buffer_free`. Returns once the op is enqueued (captured, during a trace capture on `cq`); work enqueued later
/// on `cq` sees its result. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no such queue;
/// buffers of different devices; shapes or dtypes that do not fit the op; a memory config as in
/// `ttdrv_buffer_allocate`), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the op's built-in kernel),
/// PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on `cq`), TIMEOUT (no ring
/// space), DEVICE_FAULT; INVALID_ARGUMENT for an unknown `op`.
///
/// # Safety
/// `mem` must point to a readable `ttdrv_memory_config`; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_eltwise_unary(
    a: *mut ttdrv_buffer,
    op: u32,
    param: f32,
    cq: u16,
    mem: *const ttdrv_memory_config,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_eltwise_unary", || {
        let a = buffer_arc(a, "a")?;
        let op = match op {
            TTDRV_UNARY_RELU => UnaryOp::Relu,
            TTDRV_UNARY_GELU => UnaryOp::Gelu,
            TTDRV_UNARY_EXP => UnaryOp::Exp,
            TTDRV_UNARY_SCALE => UnaryOp::Scale(param),
            TTDRV_UNARY_GELU_ERF => UnaryOp::GeluErf,
            v => return Err(FfiError::invalid(format!("unary op {v} is not a TTDRV_UNARY_* value"))),
        };
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let r = dev_of(&a)?.unary(cq, op, &a, &m)?;
        write_out(out, insert_buffer(r));
        Ok(())
    })
}

/// Fills every element of the buffer with `value` on queue `cq` (converted to the buffer's element type; a tiled
/// buffer's padding stays zero). Returns once enqueued.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED, INVALID_ARGUMENT (no
/// such queue; buffers of different devices; shapes or dtypes that do not fit the op; a memory config as in
/// `ttdrv_buffer_allocate`), OUT_OF_DEVICE_MEMORY, UNSUPPORTED (the device lacks the op's built-in kernel),
/// PROGRAM_NOT_CACHED (the op's program has not run before and a capture is in progress on `cq`), TIMEOUT (no ring
/// space), DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_fill(buffer: *mut ttdrv_buffer, cq: u16, value: f32) -> ttdrv_status {
    guard("ttdrv_fill", || {
        let b = buffer_arc(buffer, "buffer")?;
        Ok(dev_of(&b)?.fill(cq, &b, value)?)
    })
}
