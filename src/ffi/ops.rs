//! Operations: to_memory_config, reshard, matmul, element-wise, fill — each enqueues a program on a queue.

use super::buffer::{buffer_arc, insert_buffer, memory_config_from_c, ttdrv_buffer, ttdrv_memory_config};
use super::{FfiResult, guard, nonnull, out_ptr, ttdrv_status, write_out};
use crate::MemoryConfig;
use crate::device::Device;
use crate::device::ops::{BinaryOp, UnaryOp};
use crate::error::Error;

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

fn mem(p: *const ttdrv_memory_config) -> FfiResult<MemoryConfig> {
    nonnull(p, "mem")?;
    // SAFETY: non-NULL and readable per the contract.
    memory_config_from_c(&unsafe { p.read_unaligned() })
}

/// The device a buffer belongs to, as a handle the ops can use.
fn dev_of(b: &crate::Buffer) -> FfiResult<Device> {
    Ok(b.device()?)
}

/// Copies `input` into a new buffer with memory config `*mem` (`to_memory_config`), on queue `cq`. Any layout to
/// any layout; the element type is kept. Errors: INVALID_ARGUMENT, OUT_OF_DEVICE_MEMORY, UNSUPPORTED (no copy
/// kernel on the device), INVALID_HANDLE.
///
/// # Safety
/// `mem` readable; `out` writable.
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

/// Reshards `input` into a new buffer with memory config `*mem` (`reshard(input, mem_config)`).
///
/// # Safety
/// `mem` readable; `out` writable.
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

/// Reshards `input` into the existing buffer `output`, which keeps its address
/// (`reshard(input, mem_config, output_tensor)`): how the seed feeds a trace's input in place. Shapes must match.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_reshard_into(input: *mut ttdrv_buffer, cq: u16, output: *mut ttdrv_buffer) -> ttdrv_status {
    guard("ttdrv_reshard_into", || {
        let a = buffer_arc(input, "input")?;
        let o = buffer_arc(output, "output")?;
        Ok(dev_of(&a)?.reshard_into(cq, &a, &o)?)
    })
}

/// `a @ b` into a new buffer with memory config `*mem`, on queue `cq`. `a` is [M, K], `b` [K, N]; float32, or
/// bfloat16 with float32 accumulation.
///
/// # Safety
/// `mem` readable; `out` writable.
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

/// Element-wise `a op b` (`TTDRV_BINARY_*`) into a new buffer; `b` may be one row [1, N], broadcast over `a`'s
/// rows.
///
/// # Safety
/// `mem` readable; `out` writable.
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
            v => return Err(Error::InvalidArgument(format!("binary op {v} is not a TTDRV_BINARY_* value")).into()),
        };
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let r = dev_of(&a)?.binary(cq, op, &a, &b, &m)?;
        write_out(out, insert_buffer(r));
        Ok(())
    })
}

/// Element-wise unary op (`TTDRV_UNARY_*`; `param` is the factor of `TTDRV_UNARY_SCALE`) into a new buffer.
///
/// # Safety
/// `mem` readable; `out` writable.
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
            v => return Err(Error::InvalidArgument(format!("unary op {v} is not a TTDRV_UNARY_* value")).into()),
        };
        let m = self::mem(mem)?;
        let out = out_ptr(out, "out")?;
        let r = dev_of(&a)?.unary(cq, op, &a, &m)?;
        write_out(out, insert_buffer(r));
        Ok(())
    })
}

/// Fills the buffer with `value` on queue `cq`.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_fill(buffer: *mut ttdrv_buffer, cq: u16, value: f32) -> ttdrv_status {
    guard("ttdrv_fill", || {
        let b = buffer_arc(buffer, "buffer")?;
        Ok(dev_of(&b)?.fill(cq, &b, value)?)
    })
}
