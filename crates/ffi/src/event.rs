//! Events: create, record, wait on a queue, synchronize and query on the host.

use super::device::{device_checked, ttdrv_device};
use super::handles;
use super::{FfiResult, guard, out_ptr, ttdrv_status, write_out};
use std::sync::Arc;
use std::time::Duration;
use ttdrv::device::Event;

/// An event (opaque). May be shared between threads; recording it again re-arms it.
pub struct ttdrv_event {
    _private: [u8; 0],
}

fn event(h: *const ttdrv_event) -> FfiResult<Arc<Event>> {
    handles::lookup(h, "event")
}

/// Creates an event on the device (`create_event`). It must be recorded (`ttdrv_event_record`) before anything waits
/// for it; recording it again re-arms it.
///
/// Ownership: on success `*out` receives a new handle; release it with `ttdrv_event_free`. Thread: any; an event may be
/// shared between threads. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_event_new(device: *mut ttdrv_device, out: *mut *mut ttdrv_event) -> ttdrv_status {
    guard("ttdrv_event_new", || {
        let d = device_checked(device)?;
        let out = out_ptr(out, "out")?;
        let e = d.create_event()?;
        write_out(out, handles::register::<Event, _>(e));
        Ok(())
    })
}

/// Frees an event. Records and waits already enqueued on the device are unaffected. NULL is a no-op.
///
/// Ownership: the handle is released; using it again is INVALID_HANDLE. Thread: any, but not while another thread is
/// waiting for the event. Errors: INVALID_HANDLE (already freed, or never an event).
///
/// # Safety
/// `event` must be NULL or a value returned by ttdrv.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_event_free(event: *mut ttdrv_event) -> ttdrv_status {
    guard("ttdrv_event_free", || {
        handles::release::<Event, _>(event)?;
        Ok(())
    })
}

/// Records the event on queue `cq` (`record_event(cq, event)`): it completes when all work enqueued on `cq` before it
/// is done and its writes are visible to every queue. Returns at once. Waits and synchronizes refer to the most recent
/// record issued before them.
///
/// During a trace capture on `cq` the record is captured (device contract 1.4): the event then belongs to the trace
/// until `ttdrv_trace_release`, and each replay records it again (`ttdrv_trace_begin_capture` states the rule).
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`event` freed or never returned by ttdrv), CLOSED (its device
/// was closed), FORKED, INVALID_ARGUMENT (no such queue), INVALID_STATE (the event was recorded inside a trace that is
/// still alive: use another event or release the trace; a capture on a device older than contract 1.4), TIMEOUT (no
/// ring space), DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_event_record(event: *mut ttdrv_event, cq: u16) -> ttdrv_status {
    guard("ttdrv_event_record", || Ok(self::event(event)?.record(cq)?))
}

/// As `ttdrv_event_record`, and the device also interrupts the host when the event completes, so a thread sleeping in
/// `ttdrv_event_synchronize` wakes at once instead of polling. Thread and errors: as `ttdrv_event_record`.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_event_record_notify(event: *mut ttdrv_event, cq: u16) -> ttdrv_status {
    guard("ttdrv_event_record_notify", || Ok(self::event(event)?.record_notify(cq)?))
}

/// Makes queue `cq` wait, on the device, until the event's most recent record has completed (`wait_for_event(cq,
/// event)`); work enqueued on `cq` afterwards does not start before it. Returns at once.
///
/// During a trace capture on `cq` the wait is captured: each replay waits for the event's latest record as of that
/// `ttdrv_trace_execute` call (or, for an event recorded earlier in the same capture, for that record).
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device` or `event`), CLOSED, FORKED, INVALID_ARGUMENT (no such
/// queue; an event of another device), INVALID_STATE (the event was never recorded, or was recorded before a reset; a
/// capture on a device older than contract 1.4), TIMEOUT (no ring space), DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_device_wait_for_event(
    device: *mut ttdrv_device,
    cq: u16,
    event: *mut ttdrv_event,
) -> ttdrv_status {
    guard("ttdrv_device_wait_for_event", || {
        let d = device_checked(device)?;
        let e = self::event(event)?;
        Ok(d.wait_for_event(cq, &e)?)
    })
}

/// Blocks the calling thread until the event's most recent record has completed, and the data of non-blocking reads
/// enqueued before it on its queue is in place (`event.synchronize()`).
///
/// Thread: any; several threads may wait for one event. Errors: NULL_PARAMETER, INVALID_HANDLE (`event` freed or never
/// returned by ttdrv), CLOSED (its device was closed), FORKED, INVALID_STATE (never recorded, or recorded before a
/// reset), TIMEOUT (after the device's timeout; the message dumps the queue's state), DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_event_synchronize(event: *mut ttdrv_event) -> ttdrv_status {
    guard("ttdrv_event_synchronize", || Ok(self::event(event)?.synchronize()?))
}

/// As `ttdrv_event_synchronize`, giving up after `timeout_us` microseconds with TTDRV_STATUS_TIMEOUT (0 polls once;
/// UINT64_MAX waits without limit). Thread and other errors: as `ttdrv_event_synchronize`.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_event_synchronize_timeout(event: *mut ttdrv_event, timeout_us: u64) -> ttdrv_status {
    guard("ttdrv_event_synchronize_timeout", || {
        Ok(self::event(event)?.synchronize_within(Duration::from_micros(timeout_us))?)
    })
}

/// Writes to `*out_done` whether the event's most recent record has completed (and the reads before it are delivered),
/// without blocking (`event.query()`).
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`event` freed or never returned by ttdrv), CLOSED (its device
/// was closed), FORKED, INVALID_STATE (never recorded, or recorded before a reset), DEVICE_FAULT.
///
/// # Safety
/// `out_done` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_event_query(event: *const ttdrv_event, out_done: *mut bool) -> ttdrv_status {
    guard("ttdrv_event_query", || {
        let e = self::event(event)?;
        let out = out_ptr(out_done, "out_done")?;
        write_out(out, e.query()?);
        Ok(())
    })
}
