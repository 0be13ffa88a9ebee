//! Events: record on one queue, wait on another (on the device), synchronize or query on the host.

use super::wait::EventMark;
use super::{Device, DeviceInner};
use crate::error::{Error, Result};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ttdrv_contract::records::{self, RecordFlags};

/// An event. Recording it again re-arms it: waits and synchronizes refer to the most recent record issued before
/// them. An `Event` may be shared between threads.
pub struct Event {
    dev: Arc<DeviceInner>,
    mark: Mutex<Option<EventMark>>,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Event({:?})", self.mark.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Device {
    /// Creates an event (`create_event`). It must be recorded before anyone waits for it.
    pub fn create_event(&self) -> Result<Event> {
        self.inner.check_usable()?;
        Ok(Event { dev: self.inner.clone(), mark: Mutex::new(None) })
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
        let m = ev.recorded("wait_for_event")?;
        self.inner.check_epoch(m.epoch, "wait_for_event")?;
        let dev = &self.inner;
        let _s = dev.span("wait_for_event", "api");
        let mut st = dev.lock_queue(cq)?;
        st.forbid_capture("wait_for_event")?;
        dev.emit(&mut st, records::FIXED_LEN, RecordFlags::empty(), "wait_for_event", "event", |slot, meta| {
            records::encode_event_wait(slot, meta, m.queue, m.id)
        })?;
        st.last_wait = Some((m.queue, m.id));
        let (issuer, t) = st.live()?;
        issuer.publish(t.as_ref());
        Ok(())
    }
}

impl Event {
    fn recorded(&self, what: &'static str) -> Result<EventMark> {
        self.mark.lock().unwrap_or_else(|e| e.into_inner()).ok_or(Error::EventNotRecorded { call: what })
    }

    /// Records the event on queue `cq` (`record_event`): it completes when all work enqueued on `cq` before it is
    /// done and its writes are visible to every queue.
    pub fn record(&self, cq: u16) -> Result<()> {
        let _s = self.dev.span("record_event", "api");
        let m = self.dev.record_event(cq, false, "record_event")?;
        *self.mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
        Ok(())
    }

    /// As [`Event::record`], and the device also raises the queue's interrupt when the event completes, so a host
    /// thread sleeping in [`Event::synchronize`] wakes without the arm/re-check round trip.
    pub fn record_notify(&self, cq: u16) -> Result<()> {
        let m = self.dev.record_event(cq, true, "record_event")?;
        *self.mark.lock().unwrap_or_else(|e| e.into_inner()) = Some(m);
        Ok(())
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
        self.mark.lock().unwrap_or_else(|e| e.into_inner()).map(|m| (m.queue, m.id))
    }
}
