//! Registered host memory from C (`cudaHostRegister`-style; the Rust API is `Device::register_host_memory`): the
//! caller's own page-aligned allocation, mapped for the device once, which `ttdrv_buffer_write_registered` reads and
//! `ttdrv_buffer_read_registered` writes directly (`WRITE_HOST` / `READ_HOST`, docs/device-interface.md §4.2.10-11),
//! with no copy through the rings.
//!
//! The registration is a checked handle like every other object; its memory stays the caller's allocation, which the
//! caller keeps valid until `ttdrv_host_memory_unregister` (or `ttdrv_host_memory_free`) has returned OK.

use super::buffer::{buffer_arc, ttdrv_buffer};
use super::device::{device_checked, ttdrv_device};
use super::handles;
use super::{FfiError, FfiResult, guard, nonnull, out_ptr, ttdrv_status, write_out};
use std::ffi::c_void;
use std::sync::Arc;
use ttdrv::HostRegistration;

/// Host memory registered with a device (opaque): see `ttdrv_host_memory_register`. Release it with
/// `ttdrv_host_memory_free`.
pub struct ttdrv_host_memory {
    _private: [u8; 0],
}

/// Host page size: a registered region's address and length are multiples of it (4096).
pub const TTDRV_HOST_PAGE_SIZE: usize = 4096;
// A literal above so that cbindgen exports it; the driver's rule is the authority.
const _: () = assert!(TTDRV_HOST_PAGE_SIZE == ttdrv::device::registered::HOST_PAGE);

fn registration(h: *const ttdrv_host_memory) -> FfiResult<Arc<HostRegistration>> {
    handles::lookup(h, "host_memory")
}

/// Registers `len` bytes at `ptr`, the caller's own allocation, with the device (pinned memory in tt-metal,
/// `cudaHostRegister` in CUDA): maps them for the device's DMA once, so that `ttdrv_buffer_write_registered` and
/// `ttdrv_buffer_read_registered` move data between a buffer and this memory with no staging copy. `ptr` and `len`
/// must be non-zero multiples of `TTDRV_HOST_PAGE_SIZE` (allocate with `aligned_alloc(4096, len)`, `posix_memalign` or
/// `mmap`, and round the length up). A region may be registered once per device at a time; regions may not overlap.
/// Through VFIO the pages are pinned and count against `RLIMIT_MEMLOCK`.
///
/// Caller's contract: the memory must stay allocated (not freed, not unmapped) until `ttdrv_host_memory_unregister`
/// or `ttdrv_host_memory_free` returns OK for it: until then the device may read or write it whenever a transfer
/// that uses it runs. Touching it while such a transfer is in flight gives unspecified data.
///
/// Ownership: on success `*out` receives a new handle; release it with `ttdrv_host_memory_free`. The memory stays the
/// caller's. Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`ptr`
/// or `len` not a multiple of the page size, `len` 0, a region passing the end of the address space), HOST_MEMORY (no
/// device address space left for it), TRANSPORT (the device could not map it; the message says why, e.g. VFIO's
/// memlock limit).
///
/// # Safety
/// `ptr` must point to `len` bytes the caller owns and keeps allocated as above; `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_host_memory_register(
    device: *mut ttdrv_device,
    ptr: *mut c_void,
    len: usize,
    out: *mut *mut ttdrv_host_memory,
) -> ttdrv_status {
    guard("ttdrv_host_memory_register", || {
        let d = device_checked(device)?;
        nonnull(ptr as *const c_void, "ptr")?;
        let out = out_ptr(out, "out")?;
        // SAFETY: the caller keeps the memory allocated until unregister returns (this function's contract), which
        // is the Rust API's contract; the driver checks alignment, length and overlap itself.
        let reg = unsafe { d.register_host_memory(ptr as *mut u8, len)? };
        write_out(out, handles::register(reg));
        Ok(())
    })
}

/// Unregisters the memory: refuses new transfers at once, waits until every transfer that uses it has completed (a
/// device reset drops them instead: they never run afterwards), then unmaps it from the device. Once this returns OK
/// the device never touches the memory again, and the caller may free it. The handle stays valid (transfers naming it
/// fail with INVALID_ARGUMENT) until `ttdrv_host_memory_free`; calling this again does nothing.
///
/// A transfer that does not complete within the device's timeout (a hung device) fails the call with TIMEOUT: the
/// memory then stays registered and must stay allocated; recover with `ttdrv_device_reset` and call again.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (freed or never a registration), TIMEOUT, DEVICE_FAULT,
/// PROTOCOL.
///
/// # Safety
/// `host_memory` must be NULL or a value returned by ttdrv.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_host_memory_unregister(host_memory: *mut ttdrv_host_memory) -> ttdrv_status {
    guard("ttdrv_host_memory_unregister", || Ok(registration(host_memory)?.unregister()?))
}

/// Unregisters the memory if it still is (as `ttdrv_host_memory_unregister`, waiting for the transfers that use it)
/// and releases the handle. NULL is a no-op. If the wait fails (TIMEOUT on a hung device) the handle is kept and the
/// memory stays registered: keep it allocated, reset the device and call again.
///
/// Ownership: on OK the handle is released; using it again is INVALID_HANDLE, and the memory is the caller's alone.
/// Thread: any (free a handle once). Errors: INVALID_HANDLE (already freed, or never a registration), TIMEOUT,
/// DEVICE_FAULT, PROTOCOL.
///
/// # Safety
/// `host_memory` must be NULL or a value returned by ttdrv.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_host_memory_free(host_memory: *mut ttdrv_host_memory) -> ttdrv_status {
    guard("ttdrv_host_memory_free", || {
        if host_memory.is_null() {
            return Ok(());
        }
        // Unregistered before the handle goes, so that a failed wait leaves a handle to retry with.
        registration(host_memory)?.unregister()?;
        handles::release::<HostRegistration, _>(host_memory)?;
        Ok(())
    })
}

/// Writes `*out` with the registered region's length in bytes.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_host_memory_size(
    host_memory: *const ttdrv_host_memory,
    out: *mut usize,
) -> ttdrv_status {
    guard("ttdrv_host_memory_size", || {
        let r = registration(host_memory)?;
        write_out(out_ptr(out, "out")?, r.len());
        Ok(())
    })
}

/// The checks both transfers share: the handles, and `len` against the buffer's host size.
fn transfer_args(
    buffer: *mut ttdrv_buffer,
    host_memory: *mut ttdrv_host_memory,
    len: usize,
    what: &str,
) -> FfiResult<(Arc<ttdrv::Buffer>, Arc<HostRegistration>)> {
    let b = buffer_arc(buffer, "buffer")?;
    let r = registration(host_memory)?;
    let want = b.spec().host_bytes();
    if len as u64 != want {
        return Err(FfiError::invalid(format!(
            "{what} of {len} bytes, but buffer {} holds {want} bytes; pass exactly {want} (ttdrv_buffer_host_size)",
            b.spec()
        )));
    }
    Ok((b, r))
}

/// Writes the buffer from registered host memory on queue `cq`: the dense row-major tensor of `len` bytes (exactly
/// the buffer's host size, `ttdrv_buffer_host_size`) at `offset` in `host_memory`, which the device reads directly
/// (`WRITE_HOST`, docs/device-interface.md §4.2.10) with no copy through the issue ring. The bytes must not change
/// until the write has completed: with `blocking` this call waits for that; otherwise it has completed once
/// `ttdrv_device_finish(cq)` returns, or an event recorded on `cq` after it completes. Work enqueued later on `cq`
/// sees the new contents. Tiled buffers need the host to tilize and are refused: use `ttdrv_buffer_write`. Failures
/// are as `ttdrv_buffer_write`'s (a write stopped part-way says how much was enqueued and leaves the buffer
/// `TTDRV_CONTENTS_PARTIAL_WRITE`).
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`buffer` or `host_memory` freed or never returned by ttdrv),
/// CLOSED, FORKED, INVALID_ARGUMENT (`len` not the buffer's size; `offset + len` past the registered region; the
/// memory unregistered or registered with another device; a tiled buffer; no such queue), INVALID_STATE (trace
/// capture in progress on `cq`), TIMEOUT, DEVICE_FAULT, PROTOCOL.
///
/// # Safety
/// `buffer` and `host_memory` must be values returned by ttdrv (checked; NULL and stale handles are errors).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_write_registered(
    buffer: *mut ttdrv_buffer,
    cq: u16,
    host_memory: *mut ttdrv_host_memory,
    offset: usize,
    len: usize,
    blocking: bool,
) -> ttdrv_status {
    guard("ttdrv_buffer_write_registered", || {
        let (b, r) = transfer_args(buffer, host_memory, len, "write")?;
        Ok(b.write_from(cq, &r, offset, blocking)?)
    })
}

/// Reads the buffer on queue `cq` into registered host memory: `len` bytes (exactly the buffer's host size), dense
/// row-major, at `offset` in `host_memory`, which the device writes directly (`READ_HOST`, docs/device-interface.md
/// §4.2.11) with no copy through the completion ring. With `blocking` the data is in place when this returns;
/// otherwise once `ttdrv_device_finish(cq)` returns, or an event recorded on `cq` after it completes (until then do
/// not touch those bytes). Tiled buffers are refused: use `ttdrv_buffer_read`. Nothing is read from a buffer whose
/// contents are undefined (`ttdrv_buffer_contents`).
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`buffer` or `host_memory`), CLOSED, FORKED, INVALID_ARGUMENT
/// (`len` not the buffer's size; `offset + len` past the registered region; the memory unregistered; a tiled buffer;
/// no such queue; memory registered with another device), INVALID_STATE (trace capture in progress on `cq`),
/// CONTENTS_UNDEFINED, TIMEOUT, DEVICE_FAULT, PROTOCOL.
///
/// # Safety
/// `buffer` and `host_memory` must be values returned by ttdrv (checked; NULL and stale handles are errors).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_read_registered(
    buffer: *mut ttdrv_buffer,
    cq: u16,
    host_memory: *mut ttdrv_host_memory,
    offset: usize,
    len: usize,
    blocking: bool,
) -> ttdrv_status {
    guard("ttdrv_buffer_read_registered", || {
        let (b, r) = transfer_args(buffer, host_memory, len, "read")?;
        Ok(b.read_into(cq, &r, offset, blocking)?)
    })
}
