//! Per-queue host state: the producer (under the queue lock), the completion consumer (under its own lock, so any
//! waiting thread can drain it), event ids, and where records go (the ring, or a trace being captured).

use super::Health;
use crate::error::{Error, Result};
use crate::queue::{Completer, Delivery, Issuer, Rings};
use crate::transport::Transport;
use std::sync::{Arc, Mutex};
use ttdrv_contract::records::{Opcode, RecordFlags, RecordMeta, RecordSlot};

/// A queue's two locks.
pub(crate) struct QueueSlot {
    pub state: Mutex<QueueState>,
    pub compl: Mutex<Option<Completer>>,
}

impl QueueSlot {
    pub fn new(id: u16, rings: Arc<Rings>, t: Arc<dyn Transport>, device: &str, health: Arc<Health>) -> QueueSlot {
        QueueSlot {
            state: Mutex::new(QueueState {
                id,
                device: device.into(),
                health,
                issuer: Some(Issuer::new(rings.clone())),
                transport: Some(t),
                next_event: 0,
                capture: None,
                last_wait: None,
            }),
            compl: Mutex::new(Some(Completer::new(rings))),
        }
    }
}

/// Host state of one queue's issue side.
pub(crate) struct QueueState {
    pub id: u16,
    /// The device's name, for errors.
    pub device: Arc<str>,
    /// The device's health: a bad `ISSUE_RD` met while enqueueing marks it unusable.
    pub health: Arc<Health>,
    /// `None` once the device is closed.
    pub issuer: Option<Issuer>,
    pub transport: Option<Arc<dyn Transport>>,
    /// The last event id issued on this queue (ids start at 1 and wrap).
    pub next_event: u32,
    /// A trace being captured on this queue: records go there instead of the ring.
    pub capture: Option<Capture>,
    /// The last device-side wait enqueued (queue, event id), for hang reports.
    pub last_wait: Option<(u16, u32)>,
}

impl QueueState {
    /// Forgets what the device dropped in a reset (the caller replaces the issuer once the device is ready).
    pub fn reset_after_device_reset(&mut self) {
        self.next_event = 0;
        self.capture = None;
        self.last_wait = None;
    }

    /// The issuer and transport of a live queue.
    pub fn live(&mut self) -> Result<(&mut Issuer, &Arc<dyn Transport>)> {
        match (self.issuer.as_mut(), self.transport.as_ref()) {
            (Some(i), Some(t)) => Ok((i, t)),
            _ => Err(Error::Closed { device: self.device.to_string() }),
        }
    }

    /// Fails when a trace is being captured on this queue: `what` cannot be captured.
    pub fn forbid_capture(&self, what: &str) -> Result<()> {
        match &self.capture {
            Some(c) => Err(Error::CaptureActive { queue: self.id, trace: c.trace_id, call: what.to_string() }),
            None => Ok(()),
        }
    }
}

/// A trace being captured: the records live dispatch would have sent (what they touch is in its ledger, trace.rs).
#[derive(Default)]
pub(crate) struct Capture {
    pub trace_id: u32,
    pub bytes: Vec<u8>,
    pub launches: u32,
    /// Profile names of the captured records that are profiled (launches, event records and waits), in order
    /// (profiling only): a record's profile slot inside the trace is its index here (contract §4.3).
    pub names: Vec<crate::profile::SpanLabel>,
    /// The events recorded inside, in order.
    pub events: Vec<super::event::TraceEventRecord>,
    /// The events waited for inside: the wait whose `event_id` is `i` waits for `waits[i]`'s latest record at each
    /// replay (contract §4.2.8).
    pub waits: Vec<super::event::EventCell>,
    /// The trace's life token: the events it owns hold it weakly, so they are free again once the trace is gone.
    pub life: Arc<()>,
    /// Its patchable words so far (`patch.rs`).
    pub points: super::patch::CapturePoints,
}

/// Waits until the issuer has room for a record of the given length (the device's wait loop).
pub(crate) type WaitRoom<'a> = dyn Fn(&mut Issuer, &Arc<dyn Transport>, usize) -> Result<()> + 'a;

/// Pushes one record into the live ring, waiting for room; `wait_room` is the device's wait loop. A device-written
/// `ISSUE_RD` that breaks the contract marks the device unusable and is returned.
pub(crate) fn push_live(
    st: &mut QueueState,
    len: usize,
    meta: RecordMeta,
    wait_room: &WaitRoom<'_>,
    encode: impl FnOnce(&mut RecordSlot<'_>, RecordMeta),
) -> Result<u32> {
    let health = st.health.clone();
    let device = st.device.clone();
    let (issuer, t) = st.live()?;
    if !issuer.has_room(len).map_err(|v| health.protocol(&device, v))? {
        // Let the device see what is already written before waiting for it to make room.
        issuer.publish(t.as_ref());
        wait_room(issuer, t, len)?;
    }
    Ok(issuer.push(len, meta, encode))
}

impl super::DeviceInner {
    /// Pushes one record into queue `st`'s ring (waiting for room), with a profile slot when profiling: the one
    /// place where live records are emitted, so every record is accounted for in profiles.
    pub(crate) fn emit(
        &self,
        st: &mut QueueState,
        len: usize,
        flags: RecordFlags,
        name: &str,
        cat: &'static str,
        encode: impl FnOnce(&mut RecordSlot<'_>, RecordMeta),
    ) -> Result<u32> {
        let cq = st.id;
        let Some(p) = &self.profiler else {
            let meta = RecordMeta { flags, ..Default::default() };
            return push_live(st, len, meta, &self.wait_room(cq), encode);
        };
        let slot = p.reserve_slots(cq, 1);
        let meta = RecordMeta { flags: flags | RecordFlags::PROFILE, tag: 0, profile_slot: slot };
        let tag = push_live(st, len, meta, &self.wait_room(cq), encode)?;
        p.expect(cq, tag, slot, vec![(name.into(), cat)]);
        Ok(tag)
    }
}

/// Appends one record to a capture buffer (same encoder, same bytes).
pub(crate) fn push_capture(
    buf: &mut Vec<u8>,
    len: usize,
    meta: RecordMeta,
    encode: impl FnOnce(&mut RecordSlot<'_>, RecordMeta),
) {
    let start = buf.len();
    buf.resize(start + len, 0);
    let mut slot = RecordSlot::from_slice(&mut buf[start..]);
    encode(&mut slot, meta);
    // The callers capture only record types the opcode table allows in a trace (contract §4.2.9); anything else
    // would fault the device at replay.
    debug_assert!(Opcode::from_u8(buf[start]).is_some_and(Opcode::in_trace), "record {:#04x} captured", buf[start]);
}

/// A read registered with a queue's completer: its data is in place once `delivered >= seq`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadTicket {
    pub queue: u16,
    /// Sequence numbers of its records on the queue's completer, first to last.
    pub first: u64,
    pub last: u64,
    pub epoch: u32,
}

/// Registers `scatter` (strided pieces or tiles) for the read record `tag` on the completer of the (locked) queue
/// `st`.
pub(crate) fn expect_read(
    st: &QueueState,
    compl: &Mutex<Option<Completer>>,
    tag: u32,
    scatter: impl Into<Delivery>,
) -> Result<u64> {
    let mut c = compl.lock().unwrap_or_else(|e| e.into_inner());
    let c = c.as_mut().ok_or_else(|| Error::Closed { device: st.device.to_string() })?;
    Ok(c.expect(tag, scatter))
}
