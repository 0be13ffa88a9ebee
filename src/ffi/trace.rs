//! Metal Trace: capture, replay, release, query.

use super::device::{device_checked, ttdrv_device};
use super::{guard, out_ptr, ttdrv_status, write_out};

/// What is known about a captured trace (`ttdrv_trace_get_info`). Set `struct_size` first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ttdrv_trace_info {
    /// `sizeof(ttdrv_trace_info)`, set by the caller.
    pub struct_size: u32,
    /// Queue it was captured on.
    pub queue: u32,
    /// Bytes of records.
    pub bytes: u64,
    /// Trace region bytes (device total) it needs: open the device with at least this `trace_region_size`.
    pub region_bytes: u64,
    /// Program launches captured.
    pub launches: u32,
    /// Whether it is stored in device DRAM (false if the trace region was too small at end of capture).
    pub stored: bool,
}

/// Starts capturing program dispatches on queue `cq` (`begin_trace_capture`) and writes the trace id to `*out_id`.
/// Until `ttdrv_trace_end_capture`, programs dispatched on `cq` are recorded instead of sent; host writes, reads,
/// event records and waits, and blocking calls on `cq` fail with INVALID_STATE naming the call; a program never run
/// before fails with PROGRAM_NOT_CACHED. Errors: INVALID_STATE (capture already in progress on `cq`).
///
/// # Safety
/// `out_id` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_begin_capture(
    device: *mut ttdrv_device,
    cq: u16,
    out_id: *mut u32,
) -> ttdrv_status {
    guard("ttdrv_trace_begin_capture", || {
        let d = device_checked(device)?;
        let out = out_ptr(out_id, "out_id")?;
        write_out(out, d.begin_trace_capture(cq)?);
        Ok(())
    })
}

/// Ends the capture of trace `id` on queue `cq` (`end_trace_capture`) and stores it in the trace region. Errors:
/// TRACE_REGION (no region, or too small: the message gives the size needed and available, and the trace stays
/// captured so `ttdrv_trace_get_info` can report its size), INVALID_STATE (not capturing `id` on `cq`).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_trace_end_capture(device: *mut ttdrv_device, id: u32, cq: u16) -> ttdrv_status {
    guard("ttdrv_trace_end_capture", || Ok(device_checked(device)?.end_trace_capture(id, cq)?))
}

/// Replays trace `id` on queue `cq` with one command (`execute_trace`); with `blocking`, waits for it. Errors:
/// INVALID_STATE (unknown or released trace; a buffer the trace uses was freed and its range is not held by a live
/// buffer again — the message names the range), TRACE_REGION (never stored).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_trace_execute(device: *mut ttdrv_device, id: u32, cq: u16, blocking: bool) -> ttdrv_status {
    guard("ttdrv_trace_execute", || Ok(device_checked(device)?.execute_trace(id, cq, blocking)?))
}

/// Releases trace `id`: its buffer and the device ranges it owned are freed. Errors: INVALID_STATE (unknown or
/// already released).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_trace_release(device: *mut ttdrv_device, id: u32) -> ttdrv_status {
    guard("ttdrv_trace_release", || Ok(device_checked(device)?.release_trace(id)?))
}

/// Writes what is known about trace `id`. Set `out->struct_size = sizeof(ttdrv_trace_info)` first.
///
/// # Safety
/// `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_get_info(
    device: *mut ttdrv_device,
    id: u32,
    out: *mut ttdrv_trace_info,
) -> ttdrv_status {
    guard("ttdrv_trace_get_info", || {
        let d = device_checked(device)?;
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL and readable.
        let size = unsafe { std::ptr::addr_of!((*out).struct_size).read_unaligned() };
        let ours = std::mem::size_of::<ttdrv_trace_info>() as u32;
        if size < ours {
            return Err(crate::Error::InvalidArgument(format!(
                "out->struct_size is {size}; set it to sizeof(ttdrv_trace_info) ({ours}) before the call"
            ))
            .into());
        }
        let i = d.trace_info(id)?;
        write_out(
            out,
            ttdrv_trace_info {
                struct_size: ours,
                queue: i.queue as u32,
                bytes: i.bytes,
                region_bytes: i.region_bytes,
                launches: i.launches,
                stored: i.stored,
            },
        );
        Ok(())
    })
}
