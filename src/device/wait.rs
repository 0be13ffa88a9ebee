//! Waiting: spin briefly, then sleep on the queue's interrupt; drain every completion ring meanwhile (a device
//! stalled on a full completion ring can only move when the host drains it); report faults and hangs with the
//! queue's state.

use super::DeviceInner;
use super::queue::ReadTicket;
use crate::error::{Error, FaultReport, Result};
use crate::queue::Issuer;
use crate::transport::Transport;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use ttdrv_contract::records::{self, RecordMeta};
use ttdrv_contract::regs::{self, QueueStatus, Status, global, host};
use ttdrv_contract::seq_reached;

/// Spin this long before sleeping: a sleeping thread costs ~20-40 µs to wake on this kind of machine, a spin-wait
/// catches a quick completion in well under a microsecond. Longer than the device's worst wake-up (a parked engine
/// thread, ~20 µs) so a round trip to an idle device still completes while spinning.
const SPIN: Duration = Duration::from_micros(50);
/// The first part of the spin, in which the waiting thread does not yield its core: a quick completion (an event
/// round trip is ~1 µs) is caught without a system call. After it the thread yields on every turn, because with
/// more busy threads than cores a pure spin would hold the core for a whole scheduler slice.
const PURE_SPIN: Duration = Duration::from_micros(20);
/// Longest single sleep: bounds the delay when progress on another queue (not our interrupt) unblocks us.
const SLICE: Duration = Duration::from_millis(1);

/// Where a recorded event completes: on `queue`, when its `EVENT_DONE` reaches `id` and its completer has
/// delivered `reads` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EventMark {
    pub queue: u16,
    pub id: u32,
    pub reads: u64,
    pub epoch: u32,
    /// Recorded with `NOTIFY`: the device raises the queue's vector when this very event retires, so a waiter
    /// sleeps until then without arming (an armed vector fires at every record's progress).
    pub notify: bool,
}

impl DeviceInner {
    /// Drains every queue's completion ring that no other thread is draining.
    pub(crate) fn progress(&self, t: &dyn Transport) -> Result<()> {
        for slot in &self.queues {
            if let Ok(mut g) = slot.compl.try_lock()
                && let Some(c) = g.as_mut()
            {
                c.drain(t).map_err(|violation| Error::Protocol { device: self.info.name.clone(), violation })?;
            }
        }
        Ok(())
    }

    /// The fault error, if the device has faulted.
    pub(crate) fn check_fault(&self, t: &dyn Transport) -> Result<()> {
        let s = Status::from_bits_truncate(t.read32(global::STATUS));
        if !s.contains(Status::FAULT) {
            return Ok(());
        }
        Err(Error::DeviceFault(FaultReport {
            device: self.info.name.clone(),
            code: t.read32(global::FAULT_CODE),
            address: t.read32(global::FAULT_ADDR_LO) as u64 | (t.read32(global::FAULT_ADDR_HI) as u64) << 32,
            queue: t.read32(global::FAULT_QUEUE),
            tag: t.read32(global::FAULT_TAG),
            opcode: t.read32(global::FAULT_OPCODE),
        }))
    }

    /// Records retired so far by each open queue (`RETIRED`, contract §3): two readings tell whether the device
    /// made progress in between.
    fn retired_counts(&self, t: &dyn Transport) -> Vec<u32> {
        (0..self.queues.len() as u16).map(|q| t.read32(regs::queue_reg(q, regs::queue::RETIRED))).collect()
    }

    /// Whether the device is working: a queue retired records since `before` was read, or is executing one now
    /// (a queue stalled in an `EVENT_WAIT` is `BUSY` too, but waits rather than works).
    fn device_busy(&self, t: &dyn Transport, before: &[u32]) -> bool {
        let after = self.retired_counts(t);
        after.iter().zip(before).any(|(a, b)| a != b)
            || (0..self.queues.len() as u16).any(|q| {
                let s = QueueStatus::from_bits_truncate(t.read32(regs::queue_reg(q, regs::queue::STATUS)));
                s.contains(QueueStatus::BUSY) && !s.contains(QueueStatus::WAITING_EVENT)
            })
    }

    /// The timeout error of a wait on `cq` for `what`, after `after`; `retired` is [`Self::retired_counts`] from
    /// early in the wait, `awaited` the event waited for, if any.
    fn timeout_error(
        &self,
        t: &dyn Transport,
        cq: u16,
        what: String,
        after: Duration,
        retired: &[u32],
        awaited: Option<(u16, u32)>,
    ) -> Error {
        let report: Vec<String> =
            (0..self.queues.len() as u16).map(|q| self.queue_report(q, awaited.filter(|a| a.0 == q))).collect();
        Error::Timeout {
            waiting_for: what,
            queue: cq,
            after,
            device_busy: self.device_busy(t, retired),
            report: report.join("\n"),
            device: self.info.name.clone(),
        }
    }

    /// The state of queue `cq`, for hang reports.
    pub(crate) fn queue_report(&self, cq: u16, awaited: Option<(u16, u32)>) -> String {
        let mut s = String::new();
        let Ok(t) = self.transport() else {
            return format!("queue {cq}: device closed");
        };
        let slot = &self.queues[cq as usize];
        let (wr, next_tag, issued_event, last_wait) = match slot.state.try_lock() {
            Ok(g) => (
                g.issuer.as_ref().map(|i| i.wr()),
                g.issuer.as_ref().map(|i| i.next_tag()),
                Some(g.next_event),
                g.last_wait,
            ),
            Err(_) => (None, None, None, None),
        };
        let c = slot.compl.lock().unwrap_or_else(|e| e.into_inner());
        let Some(c) = c.as_ref() else {
            return format!("queue {cq}: closed");
        };
        let r = c.rings();
        let qs = QueueStatus::from_bits_truncate(t.read32(regs::queue_reg(cq, regs::queue::STATUS)));
        let opt = |v: Option<u32>| v.map_or("(busy)".to_string(), |v| format!("{v:#x}"));
        let _ = write!(
            s,
            "queue {cq}: issue ring host wr={} device ISSUE_RD={:#x}; records retired {} (last tag {}, next tag {}); \
             events: device EVENT_DONE={} host issued up to {}; completion ring device COMPL_WR={:#x} host rd={:#x}, \
             reads delivered {}/{}; status {:?}",
            opt(wr),
            r.device_word(host::ISSUE_RD),
            r.device_word(host::RETIRED),
            r.device_word(host::LAST_TAG),
            opt(next_tag),
            r.device_word(host::EVENT_DONE),
            opt(issued_event),
            r.device_word(host::COMPL_WR),
            c.rd(),
            c.delivered(),
            c.expected(),
            qs
        );
        if let Some((wq, id)) = last_wait {
            let _ = write!(s, "; last device-side wait enqueued: queue {wq} event {id}");
        }
        if let Some((aq, id)) = awaited {
            let _ = write!(s, "; awaited: queue {aq} event {id}");
        }
        s
    }

    /// Waits until `cond` holds, for at most `timeout`. `cq` is the queue whose interrupt wakes us; `what` names
    /// the wait in errors.
    pub(crate) fn wait_until(
        &self,
        cq: u16,
        t: &Arc<dyn Transport>,
        timeout: Duration,
        what: &dyn Fn() -> String,
        cond: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        self.wait_until_with(cq, t, timeout, true, None, what, cond)
    }

    /// As [`DeviceInner::wait_until`]; with `arm` false the caller knows the device will raise `cq`'s vector by
    /// itself (a `NOTIFY` record), so the wait does not arm it and is not woken by unrelated progress. `awaited`
    /// (queue, event id) is marked in the hang report.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn wait_until_with(
        &self,
        cq: u16,
        t: &Arc<dyn Transport>,
        timeout: Duration,
        arm: bool,
        awaited: Option<(u16, u32)>,
        what: &dyn Fn() -> String,
        mut cond: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let start = Instant::now();
        // Read once the wait outlasts the spin (off the fast path), to tell a slow device from an idle one.
        let mut retired: Option<Vec<u32>> = None;
        loop {
            self.progress(t.as_ref())?;
            if cond()? {
                return Ok(());
            }
            let waited = start.elapsed();
            if waited < SPIN {
                if waited < PURE_SPIN {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
                continue;
            }
            self.check_usable()?;
            self.check_fault(t.as_ref())?;
            let retired = retired.get_or_insert_with(|| self.retired_counts(t.as_ref()));
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                return Err(self.timeout_error(t.as_ref(), cq, what(), timeout, retired, awaited));
            }
            if arm {
                t.write32(regs::queue_reg(cq, regs::queue::IRQ_ARM), 1);
            }
            self.progress(t.as_ref())?;
            if cond()? {
                return Ok(());
            }
            t.wait_irq(cq as u32, SLICE.min(timeout - elapsed))?;
        }
    }

    /// The wait used when the issue ring is full.
    pub(crate) fn wait_room(&self, cq: u16) -> impl Fn(&mut Issuer, &Arc<dyn Transport>, usize) -> Result<()> + '_ {
        move |issuer, t, len| {
            let what = || format!("waiting for {len} bytes of room in queue {cq}'s issue ring");
            self.wait_until(cq, t, self.params.timeout, &what, || Ok(issuer.has_room(len)))
        }
    }

    /// Records an event on `cq` (contract §4.2.7) and returns where it completes.
    pub(crate) fn record_event(&self, cq: u16, notify: bool, what: &str) -> Result<EventMark> {
        let mut st = self.lock_queue(cq)?;
        self.record_event_flags(&mut st, notify, what)
    }

    /// Records an event for the driver's own use (finish).
    pub(crate) fn record_internal(&self, cq: u16, what: &str) -> Result<EventMark> {
        // NOTIFY: the waiter that follows sleeps until this event, not until the next record.
        self.record_event(cq, true, what)
    }

    /// True once the event has completed and every read enqueued before it has been delivered.
    pub(crate) fn event_done(&self, m: &EventMark) -> Result<bool> {
        let c = self.queues[m.queue as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
        let c = c.as_ref().ok_or_else(|| self.closed_error())?;
        Ok(seq_reached(c.rings().device_word(host::EVENT_DONE), m.id) && c.delivered() >= m.reads)
    }

    /// Fails if the work recorded in `epoch` was dropped by a reset since.
    pub(crate) fn check_epoch(&self, epoch: u32, what: &'static str) -> Result<()> {
        if epoch != self.epoch.load(Ordering::Acquire) {
            return Err(Error::DroppedByReset { call: what, device: self.info.name.clone() });
        }
        Ok(())
    }

    /// Blocks until the event completes.
    pub(crate) fn wait_event(&self, m: &EventMark, timeout: Duration, what: &'static str) -> Result<()> {
        // A forked child must not wait on the parent's device: its DMA memory is still mapped here, but the work
        // and the device threads belong to the parent.
        self.check_usable()?;
        self.check_epoch(m.epoch, what)?;
        let t = self.transport()?;
        let desc = || format!("{what} (queue {} event {})", m.queue, m.id);
        self.wait_until_with(m.queue, &t, timeout, !m.notify, Some((m.queue, m.id)), &desc, || self.event_done(m))
    }

    /// Blocks until a read's data is in place.
    pub(crate) fn wait_read(&self, r: &ReadTicket) -> Result<()> {
        self.check_usable()?;
        self.check_epoch(r.epoch, "read")?;
        let t = self.transport()?;
        let slot = &self.queues[r.queue as usize];
        let desc = || format!("blocking read on queue {}", r.queue);
        self.wait_until(r.queue, &t, self.params.timeout, &desc, || {
            let c = slot.compl.lock().unwrap_or_else(|e| e.into_inner());
            Ok(c.as_ref().is_some_and(|c| c.delivered() >= r.seq))
        })
    }

    /// Close path: waits for queue `q`'s enqueued work to finish.
    pub(crate) fn drain_for_close(&self, q: u16, budget: Duration) -> Result<()> {
        let m = {
            let mut st = self.queues[q as usize].state.lock().unwrap_or_else(|e| e.into_inner());
            st.capture = None;
            drop(st);
            // Bypass the "closed" check: the flag is already set so no new work arrives.
            self.record_event_unchecked(q)?
        };
        let t = self.transport()?;
        let start = Instant::now();
        let retired = self.retired_counts(t.as_ref());
        loop {
            self.progress(t.as_ref())?;
            if self.event_done(&m)? {
                return Ok(());
            }
            self.check_fault(t.as_ref())?;
            if start.elapsed() > budget {
                let what = format!("closing: draining queue {q}");
                return Err(self.timeout_error(t.as_ref(), q, what, budget, &retired, Some((q, m.id))));
            }
            t.write32(regs::queue_reg(q, regs::queue::IRQ_ARM), 1);
            t.wait_irq(q as u32, SLICE)?;
        }
    }

    fn record_event_unchecked(&self, cq: u16) -> Result<EventMark> {
        let mut st = self.queues[cq as usize].state.lock().unwrap_or_else(|e| e.into_inner());
        st.next_event = st.next_event.wrapping_add(1);
        let id = st.next_event;
        let t = st.transport.clone().ok_or_else(|| self.closed_error())?;
        let issuer = st.issuer.as_mut().ok_or_else(|| self.closed_error())?;
        let start = Instant::now();
        let retired = self.retired_counts(t.as_ref());
        while !issuer.has_room(records::FIXED_LEN) {
            issuer.publish(t.as_ref());
            self.progress(t.as_ref())?;
            self.check_fault(t.as_ref())?;
            let budget = self.params.timeout.min(Duration::from_secs(5));
            if start.elapsed() > budget {
                let what = format!("closing: room for an event record in queue {cq}'s full issue ring");
                return Err(self.timeout_error(t.as_ref(), cq, what, budget, &retired, None));
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        issuer.push(records::FIXED_LEN, RecordMeta::default(), |slot, m| records::encode_event_record(slot, m, id));
        issuer.publish(t.as_ref());
        let reads = {
            let c = self.queues[cq as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
            c.as_ref().map_or(0, |c| c.expected())
        };
        Ok(EventMark { queue: cq, id, reads, epoch: self.epoch.load(Ordering::Acquire), notify: false })
    }
}
