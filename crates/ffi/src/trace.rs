//! Metal Trace: capture, replay, release, query.
//!
//! The ownership rule (docs/architecture.md, "Trace"), stated once in the header by `ttdrv_trace_begin_capture`:
//! ranges a trace writes before it reads them are its intermediates, owned by the trace from the moment they are freed
//! during the capture; everything else it touches stays the caller's and is checked at each replay.

use super::device::{device_checked, ttdrv_device};
use super::versioned::{self, versioned};
use super::{guard, out_ptr, ttdrv_status, write_out};

/// `sizeof(ttdrv_trace_info)` in release 0.1 (frozen: docs/abi.md, "Versions").
pub const TTDRV_TRACE_INFO_SIZE_V0_1: u32 = 32;
/// `sizeof(ttdrv_trace_info)` in release 0.2, which added the event, binding and owned-range counts (frozen).
pub const TTDRV_TRACE_INFO_SIZE_V0_2: u32 = 56;
/// `sizeof(ttdrv_trace_info)` in release 0.3, which added the patchable counts: rebindable bindings, named scalars
/// and patchable words (frozen).
pub const TTDRV_TRACE_INFO_SIZE_V0_3: u32 = 72;

/// What is known about a captured trace (`ttdrv_trace_get_info`). Set `struct_size` first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ttdrv_trace_info {
    /// `sizeof(ttdrv_trace_info)`, set by the caller; the library sets it to the size it wrote.
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
    /// Event records inside the trace (each replay records them again, with fresh ids). Since 0.2.
    pub event_records: u32,
    /// Event waits inside the trace (each replay waits for the events' latest records first). Since 0.2.
    pub event_waits: u32,
    /// External bindings: the buffers it touches and does not own, which must be live at each replay; the number of
    /// buffers `ttdrv_trace_load` takes for the file `ttdrv_trace_save` writes. Since 0.2.
    pub bindings: u32,
    /// Device ranges the trace owns (its intermediates). Since 0.2.
    pub owned_ranges: u32,
    /// Bytes of those ranges (end − start of each, the same offsets in every bank or core). Since 0.2.
    pub owned_bytes: u64,
    /// External bindings that can be rebound (`ttdrv_trace_rebind`): every launch that used them declared where
    /// their addresses are (the built-in operations, and `ttdrv_program_launch_with`). Since 0.3.
    pub rebindable: u32,
    /// Named scalars (`ttdrv_trace_set_scalar`; `ttdrv_trace_get_scalar` lists them). Since 0.3.
    pub scalars: u32,
    /// Runtime-argument words a patch can rewrite: the address words of the rebindable bindings and the scalars'
    /// words. Since 0.3.
    pub patchable_words: u32,
}

versioned!(
    ttdrv_trace_info,
    "sizeof(ttdrv_trace_info)",
    [("0.1", TTDRV_TRACE_INFO_SIZE_V0_1), ("0.2", TTDRV_TRACE_INFO_SIZE_V0_2), ("0.3", TTDRV_TRACE_INFO_SIZE_V0_3)],
    ttdrv_trace_info { struct_size: versioned::today::<ttdrv_trace_info>(), ..Default::default() }
);

/// Starts capturing program dispatches on queue `cq` (`begin_trace_capture`) and writes the new trace's id to
/// `*out_id`. Until `ttdrv_trace_end_capture`, programs and ops dispatched on `cq`, and event records
/// (`ttdrv_event_record`) and waits (`ttdrv_device_wait_for_event`) on `cq`, are recorded instead of sent; host writes,
/// reads, finish, synchronize and blocking calls on `cq` fail with INVALID_STATE naming the call; a program never run
/// before fails with PROGRAM_NOT_CACHED (the capture goes on). Other queues work as usual.
///
/// Events inside a trace (device contract 1.4): an event recorded during the capture belongs to the trace until
/// `ttdrv_trace_release`; every replay records it again with a fresh id, and waits and synchronizes on it refer to the
/// latest replay enqueued, so back-to-back replays can each be waited for. Recording it anywhere else meanwhile fails
/// with INVALID_STATE. A wait captured on an event recorded elsewhere waits, at each replay, for that event's latest
/// record as of the `ttdrv_trace_execute` call (the guide's `write_event` recorded on queue 1 before each replay).
///
/// Which device memory a trace owns: each buffer a captured launch touches is read (an input: every buffer of
/// `ttdrv_program_run`, and the inputs of ops and of `ttdrv_program_run_io`) or overwritten (an output of an op, or of
/// `ttdrv_program_run_io`); inputs count first. A range the trace first touches as an output is an intermediate: freed
/// during the capture (`ttdrv_buffer_free`, or an MLP run freeing its activations), it belongs to the trace from that
/// moment until `ttdrv_trace_release`, so no buffer allocated during or after the capture, on any queue, lands there,
/// and two captures in progress at once never share one. Every other range the trace touches stays the caller's: a
/// range it reads first (its input) may be freed and allocated again during the capture (the guide's "deallocate,
/// re-allocate at the same address" pattern), and an intermediate still alive at the end (its output) stays where it
/// is; at each replay every such range must be held by a live buffer with the spec (`ttdrv_tensor_spec`) and address
/// of the buffer it was captured with, which `ttdrv_trace_execute` checks.
///
/// Ownership: the trace lives on the device until `ttdrv_trace_release` or a reset. Thread: any; dispatches from
/// several threads onto `cq` are captured in the order they are enqueued.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (no such queue), INVALID_STATE
/// (a capture is already in progress on `cq`).
///
/// # Safety
/// `out_id` must be writable.
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

/// Ends the capture of trace `id` on queue `cq` (`end_trace_capture`) and stores the trace in the trace region (or,
/// with `TTDRV_DEVICE_FLAG_TRACE_ON_DEMAND`, in ordinary DRAM). The intermediates freed during the capture stay the
/// trace's until it is released; the other ranges it touches are checked at each replay (`ttdrv_trace_begin_capture`
/// states the rule).
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (no such queue),
/// INVALID_STATE (no capture of `id` in progress on `cq`: never begun, begun on another queue, already ended, or
/// dropped by a reset), TRACE_REGION (no region, or too small: the message gives the bytes needed and available and the
/// `trace_region_size` to open the device with; the trace stays captured but unstored, so `ttdrv_trace_get_info`
/// reports its size and `ttdrv_trace_release` frees it), OUT_OF_DEVICE_MEMORY (on demand, DRAM is full), TIMEOUT,
/// DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_trace_end_capture(device: *mut ttdrv_device, id: u32, cq: u16) -> ttdrv_status {
    guard("ttdrv_trace_end_capture", || Ok(device_checked(device)?.end_trace_capture(id, cq)?))
}

/// Replays trace `id` on queue `cq` with one command (`execute_trace`); with `blocking`, waits for it to finish.
/// Replays read the inputs and write the outputs the capture used, at the same addresses: every device range the trace
/// touches and does not own (`ttdrv_trace_begin_capture`) must be held, when this is called, by a live buffer with the
/// spec and address of the buffer it was captured with — the same buffer, or one allocated again with the same spec
/// that landed at the same address. Otherwise nothing is enqueued and the call fails, naming the range, the buffer
/// expected and what holds the range instead; the buffers there keep their data.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (no such queue),
/// INVALID_STATE (unknown or released trace; still being captured; lost in a reset; a capture in progress on `cq`; a
/// range the trace does not own is held by no buffer, or by a buffer of another spec or address, or by another trace —
/// the message names the range and the buffer expected; a wait inside the trace is for an event with no record yet, or
/// one from before a reset — the message names the wait), TRACE_REGION (the trace was never stored), TIMEOUT,
/// DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_trace_execute(device: *mut ttdrv_device, id: u32, cq: u16, blocking: bool) -> ttdrv_status {
    guard("ttdrv_trace_execute", || Ok(device_checked(device)?.execute_trace(id, cq, blocking)?))
}

/// Releases trace `id` (`release_trace`): its trace buffer and the device ranges it owned are freed. A replay already
/// enqueued still runs; order later reuse of those ranges on other queues with events.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_STATE (unknown or already
/// released; still being captured: end the capture first).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_trace_release(device: *mut ttdrv_device, id: u32) -> ttdrv_status {
    guard("ttdrv_trace_release", || Ok(device_checked(device)?.release_trace(id)?))
}

/// Writes what is known about trace `id` — its queue, bytes, program launches, whether it is stored, the
/// `trace_region_size` it needs, (since 0.2) its event records and waits, external bindings and owned ranges, and
/// (since 0.3) its rebindable bindings, named scalars and patchable words — to `*out`. Set
/// `out->struct_size = sizeof(ttdrv_trace_info)` first: the fields of the caller's release are written (a struct from
/// a newer header gets this release's fields) and `struct_size` is set to the size written.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`struct_size`
/// smaller than any release's struct), INVALID_STATE (unknown or released trace; still being captured).
///
/// # Safety
/// `out` must point to at least `out->struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_get_info(
    device: *const ttdrv_device,
    id: u32,
    out: *mut ttdrv_trace_info,
) -> ttdrv_status {
    guard("ttdrv_trace_get_info", || {
        let d = device_checked(device)?;
        versioned::check_output(out, "out")?;
        let i = d.trace_info(id)?;
        versioned::write(
            out,
            "out",
            ttdrv_trace_info {
                struct_size: versioned::today::<ttdrv_trace_info>(),
                queue: i.queue as u32,
                bytes: i.bytes,
                region_bytes: i.region_bytes,
                launches: i.launches,
                stored: i.stored,
                event_records: i.event_records,
                event_waits: i.event_waits,
                bindings: i.bindings,
                owned_ranges: i.owned_ranges,
                owned_bytes: i.owned_bytes,
                rebindable: i.rebindable,
                scalars: i.scalars,
                patchable_words: i.patchable_words,
            },
        )
    })
}
