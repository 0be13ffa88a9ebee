//! Events: record on one queue, wait on another (on the device), synchronize or query on the host.
//!
//! An event may also be recorded, and waited for, inside a trace capture (contract 1.4, §4.2.7-§4.2.9). An event
//! recorded inside a trace belongs to that trace until it is released: each replay re-records it with fresh ids (the
//! replay's `event_base` plus the id captured), and the event then refers to the latest replay's record, so host
//! synchronizes and device-side waits on it follow every replay, back-to-back replays in flight included. Recording
//! it anywhere else meanwhile is refused: its meaning would depend on which came last, a replay or the record.

use super::wait::EventMark;
use super::{Device, DeviceInner};
use crate::error::{Error, Result, TraceProblem};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use ttdrv_contract::records::{self, RecordFlags};

/// The state of an event, shared with the traces that record or wait for it.
#[derive(Debug, Default)]
pub(crate) struct EventState {
    /// The most recent record issued (by the host, or by a replay of the trace that owns it).
    pub mark: Option<EventMark>,
    /// The trace it was recorded inside, if any: that trace's id and its life token (dead once the trace is
    /// released, or its capture dropped by a reset).
    pub owner: Option<(u32, Weak<()>)>,
}

impl EventState {
    /// The live trace that owns the event, if any.
    pub fn owner(&self) -> Option<u32> {
        self.owner.as_ref().filter(|(_, life)| life.strong_count() > 0).map(|(t, _)| *t)
    }
}

/// An event's shared state (`Event` and the traces that use it hold it).
pub(crate) type EventCell = Arc<Mutex<EventState>>;

/// An event record captured inside a trace.
#[derive(Debug)]
pub(crate) struct TraceEventRecord {
    /// The event.
    pub cell: EventCell,
    /// Its id inside the trace (from 1): a replay publishes `event_base + local` (contract §4.2.7).
    pub local: u32,
    /// Recorded with `NOTIFY`.
    pub notify: bool,
}

/// An event. Recording it again re-arms it: waits and synchronizes refer to the most recent record issued before
/// them. An `Event` may be shared between threads.
pub struct Event {
    pub(crate) dev: Arc<DeviceInner>,
    pub(crate) cell: EventCell,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Event({:?})", self.cell.lock().unwrap_or_else(|e| e.into_inner()).mark)
    }
}

impl Device {
    /// Creates an event (`create_event`). It must be recorded before anyone waits for it.
    pub fn create_event(&self) -> Result<Event> {
        self.inner.check_usable()?;
        Ok(Event { dev: self.inner.clone(), cell: Arc::default() })
    }

    /// Makes queue `cq` wait on the device until `ev`'s most recent record has completed (`wait_for_event`).
    /// Returns at once; later work on `cq` does not start before the event.
    pub fn wait_for_event(&self, cq: u16, ev: &Event) -> Result<()> {
        if !Arc::ptr_eq(&self.inner, &ev.dev) {
            return Err(Error::WrongDevice {
                object: "event",
                object_device: ev.dev.info.name.clone(),
                device: self.inner.info.name.clone(),
            });
        }
        let dev = &self.inner;
        let _s = dev.span("wait_for_event", "api");
        let mut st = dev.lock_queue(cq)?;
        if st.capture.is_some() {
            return dev.capture_event_wait(&mut st, &ev.cell);
        }
        let m = ev.recorded("wait_for_event")?;
        self.inner.check_epoch(m.epoch, "wait_for_event")?;
        dev.emit(&mut st, records::FIXED_LEN, RecordFlags::empty(), "wait_for_event", "event", |slot, meta| {
            records::encode_event_wait(slot, meta, m.queue, m.id)
        })?;
        st.last_wait = Some((m.queue, m.id));
        let (issuer, t) = st.live()?;
        issuer.publish(t.as_ref());
        Ok(())
    }
}

impl DeviceInner {
    /// Records the user event `cell` on `cq`: live, or into the capture in progress there.
    fn record_user_event(&self, cq: u16, cell: &EventCell, notify: bool) -> Result<()> {
        let mut st = self.lock_queue(cq)?;
        if st.capture.is_some() {
            return self.capture_event_record(&mut st, cell, notify);
        }
        // Queue lock, then the event's: the order every path takes.
        let mut e = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owner) = e.owner() {
            return Err(Error::Trace {
                trace: owner,
                call: format!("record_event on queue {cq}"),
                problem: TraceProblem::EventOwned { owner },
                device: self.info.name.clone(),
            });
        }
        e.owner = None;
        e.mark = Some(self.record_event_flags(&mut st, notify, "record_event")?);
        Ok(())
    }
}

impl Event {
    fn recorded(&self, what: &'static str) -> Result<EventMark> {
        self.cell.lock().unwrap_or_else(|e| e.into_inner()).mark.ok_or(Error::EventNotRecorded { call: what })
    }

    /// Records the event on queue `cq` (`record_event`): it completes when all work enqueued on `cq` before it is
    /// done and its writes are visible to every queue.
    ///
    /// During a trace capture on `cq` the record is captured instead (the device must speak contract 1.4): the
    /// event then belongs to that trace until it is released, each replay records it again with a fresh id, and
    /// waits and synchronizes refer to the latest replay's record. Recording an event that a live trace owns
    /// anywhere else fails.
    pub fn record(&self, cq: u16) -> Result<()> {
        let _s = self.dev.span("record_event", "api");
        self.dev.record_user_event(cq, &self.cell, false)
    }

    /// As [`Event::record`], and the device also raises the queue's interrupt when the event completes, so a host
    /// thread sleeping in [`Event::synchronize`] wakes without the arm/re-check round trip.
    pub fn record_notify(&self, cq: u16) -> Result<()> {
        self.dev.record_user_event(cq, &self.cell, true)
    }

    /// The live trace this event was recorded inside, if any (it re-records the event at each replay).
    pub fn owner_trace(&self) -> Option<u32> {
        self.cell.lock().unwrap_or_else(|e| e.into_inner()).owner()
    }

    /// Blocks until the event's most recent record has completed (and reads enqueued before it on its queue have
    /// been delivered). Fails with a timeout error, holding the queue's state, after the device's timeout.
    pub fn synchronize(&self) -> Result<()> {
        let _s = self.dev.span("event_synchronize", "wait");
        let m = self.recorded("event_synchronize")?;
        self.dev.wait_event(&m, self.dev.params.timeout, "event_synchronize")
    }

    /// As [`Event::synchronize`] with a timeout: `Ok(false)` if it passed first.
    pub fn synchronize_timeout(&self, timeout: Duration) -> Result<bool> {
        match self.synchronize_within(timeout) {
            Ok(()) => Ok(true),
            Err(Error::Timeout { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// As [`Event::synchronize`], failing with [`Error::Timeout`] (which holds the queues' state) after `timeout`
    /// instead of the device's.
    pub fn synchronize_within(&self, timeout: Duration) -> Result<()> {
        let m = self.recorded("event_synchronize")?;
        self.dev.wait_event(&m, timeout, "event_synchronize")
    }

    /// True if the event's most recent record has completed (non-blocking).
    pub fn query(&self) -> Result<bool> {
        let m = self.recorded("event_query")?;
        self.dev.check_usable()?;
        self.dev.check_epoch(m.epoch, "event_query")?;
        let t = self.dev.transport()?;
        self.dev.progress(t.as_ref())?;
        if self.dev.event_done(&m)? {
            return Ok(true);
        }
        self.dev.check_fault(t.as_ref())?;
        Ok(false)
    }

    /// The queue and id of the most recent record, if any (diagnostics).
    pub fn last_record(&self) -> Option<(u16, u32)> {
        self.cell.lock().unwrap_or_else(|e| e.into_inner()).mark.map(|m| (m.queue, m.id))
    }
}
