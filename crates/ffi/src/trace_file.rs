//! Saved traces: `ttdrv_trace_save` writes a captured trace to a file, `ttdrv_trace_load` loads it (in this process or
//! another) for replay. The file format and every check the loader makes are the Rust API's
//! (`ttdrv::device::trace_file`); this module only checks the C arguments and maps the buffers.

use super::buffer::{buffer_arc, ttdrv_buffer};
use super::device::{device_checked, ttdrv_device};
use super::{FfiError, c_str, guard, out_ptr, slice, ttdrv_status, write_out};
use std::path::Path;

/// A path argument: a non-empty UTF-8 C string.
fn path_arg<'a>(p: *const std::ffi::c_char, name: &'static str) -> Result<&'a Path, FfiError> {
    let s = c_str(p, name)?;
    if s.is_empty() {
        return Err(FfiError::invalid(format!("`{name}` is empty; pass the path of the trace file")));
    }
    Ok(Path::new(s))
}

/// Saves trace `id` to the file `path` (`trace_save`), replacing it: a versioned, checksummed file holding the
/// trace's records, the kernel images they run, the trace region size it needs, the device shape it depends on, the
/// ranges it owns and its external bindings (one per buffer it touches and does not own, with its spec and whether
/// the trace reads or writes it). `ttdrv_trace_load` replays it in another process.
///
/// A trace that records or waits for events cannot be saved: its events belong to this process.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`path` empty or
/// not UTF-8; the trace holds events; the file cannot be written — the message gives the system's reason),
/// INVALID_STATE (unknown or released trace; still being captured; lost in a reset).
///
/// # Safety
/// `path` must be a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_save(
    device: *const ttdrv_device,
    id: u32,
    path: *const std::ffi::c_char,
) -> ttdrv_status {
    guard("ttdrv_trace_save", || {
        let d = device_checked(device)?;
        let path = path_arg(path, "path")?;
        Ok(d.trace_save(id, path)?)
    })
}

/// Loads the trace saved in the file `path` by `ttdrv_trace_save` (in this process or another) for replay on queue
/// `cq` (`trace_load`), and writes its id to `*out_id`; replay it with `ttdrv_trace_execute` and release it with
/// `ttdrv_trace_release` as a captured trace.
///
/// `bindings` holds `num_bindings` live buffers for the trace's external bindings, in the file's order: by memory
/// (DRAM, then L1, then L1_SMALL), then by address — the order the capture's buffers sort in (`ttdrv_trace_get_info`
/// counts them as `bindings`). Each must have the saved spec and, as the records hold the capture's addresses, the
/// saved address: allocate the buffers as the saving process did (same specs, same order, on a device opened with the
/// same parameters) so that they land there. The ranges the trace owns (its intermediates) must be free.
///
/// The file is checked entirely before anything happens (format, checksum, every field, the device's contract version
/// and geometry, every record and the kernels they run); a file that fails a check, and bindings that do not fit,
/// are refused with INVALID_ARGUMENT naming what is wrong, and nothing is left behind.
///
/// Thread: any. Errors: NULL_PARAMETER (`device`, `path`, `out_id`, `bindings` with `num_bindings` > 0, an element of
/// `bindings`), INVALID_HANDLE (`device` or a binding), CLOSED, FORKED, INVALID_ARGUMENT (a binding of another device;
/// no such queue; the file cannot be read or fails a check; a binding count or spec that does not fit, or a
/// non-rebindable binding away from its saved address; an owned range in use that cannot move), INVALID_STATE (a capture in progress on `cq`), TRACE_REGION (the trace
/// region is too small: the message gives the `trace_region_size` to open the device with), OUT_OF_DEVICE_MEMORY,
/// TIMEOUT, DEVICE_FAULT.
///
/// # Safety
/// `path` must be a NUL-terminated string; `bindings` must point to `num_bindings` readable handles (or be NULL with
/// `num_bindings` 0); `out_id` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_load(
    device: *mut ttdrv_device,
    path: *const std::ffi::c_char,
    bindings: *const *const ttdrv_buffer,
    num_bindings: usize,
    cq: u16,
    out_id: *mut u32,
) -> ttdrv_status {
    guard("ttdrv_trace_load", || {
        let d = device_checked(device)?;
        let path = path_arg(path, "path")?;
        let out = out_ptr(out_id, "out_id")?;
        let handles = slice(bindings, num_bindings, "bindings")?;
        let bufs = handles
            .iter()
            .enumerate()
            .map(|(i, &h)| {
                buffer_arc(h, "bindings[i]").map_err(|e| match e {
                    FfiError::Null(_) => FfiError::Status(
                        ttdrv_status::NullParameter,
                        format!("`bindings[{i}]` is NULL; pass a live buffer for every binding of the trace"),
                    ),
                    // The handle table names the argument; name the element.
                    FfiError::Status(s, m) => FfiError::Status(s, m.replace("bindings[i]", &format!("bindings[{i}]"))),
                    e => e,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&ttdrv::Buffer> = bufs.iter().map(|b| &**b).collect();
        write_out(out, d.trace_load(path, &refs, cq)?);
        Ok(())
    })
}
