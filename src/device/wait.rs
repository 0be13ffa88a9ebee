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
use ttdrv_contract::regs::{self, QueueStatus, Status, global, host};
use ttdrv_contract::seq_reached;

/// Spin this long before sleeping: a sleeping thread costs ~20-40 µs to wake on this kind of machine, a spin-wait
/// catches a quick completion in well under a microsecond. Longer than the device's worst usual wake-up (a parked
/// engine thread, ~5-40 µs on a loaded 2-core VM) so a round trip to an idle device still completes while spinning
/// and pays one wake-up, the device's, not two; after the first `PURE_SPIN` the spin yields its core on every turn,
/// so on a busy machine it costs others little.
const SPIN: Duration = Duration::from_micros(100);
/// The first part of the spin, in which the waiting thread does not yield its core: a quick completion (an event
/// round trip is ~0.5 µs when the device runs on another core) is caught without a system call. Short, because
/// while it lasts nothing else runs on this core — and on a 2-core machine that is often where the emulated
/// device's engine thread is waiting to run: each microsecond spun here is then a microsecond added to the round
/// trip (at 20 µs, a hot event round trip took ~50 µs whenever the scheduler placed host and engine on one core).
/// After it the thread yields on every turn (~0.8 µs each on this kind of VM).
const PURE_SPIN: Duration = Duration::from_micros(2);
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
    /// Drains every queue's completion ring that no other thread is draining. On a device marked unusable it
    /// drains nothing and returns why: nothing it wrote is trusted any more.
    pub(crate) fn progress(&self, t: &dyn Transport) -> Result<()> {
        self.check_broken()?;
        for slot in &self.queues {
            if let Ok(mut g) = slot.compl.try_lock()
                && let Some(c) = g.as_mut()
            {
                c.drain(t).map_err(|violation| self.protocol(violation))?;
            }
        }
        Ok(())
    }

    /// The fault error, if the device has faulted or was reset behind the driver (a queue's registers no longer
    /// hold what the driver programmed, contract §7.2).
    pub(crate) fn check_fault(&self, t: &dyn Transport) -> Result<()> {
        let epoch = self.epoch.load(Ordering::SeqCst);
        let s = Status::from_bits_truncate(t.read32(global::STATUS));
        if !s.contains(Status::FAULT) {
            return self.check_programmed(t, epoch);
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

    /// Fails if a queue's `Q_ISSUE_SIZE` no longer reads what the driver programmed, unless the driver itself reset
    /// the device since `epoch` was read; marks the device unusable until reset.
    fn check_programmed(&self, t: &dyn Transport, epoch: u32) -> Result<()> {
        // A device already marked unusable (a reset that did not complete leaves queues unprogrammed) says why.
        self.check_broken()?;
        if self.reset_since(epoch) {
            return Ok(());
        }
        for q in 0..self.queues.len() as u16 {
            let expected = self.params.issue_ring_size;
            let value = t.read32(regs::queue_reg(q, regs::queue::ISSUE_SIZE));
            // Re-checked after the read: a reset by this driver that began meanwhile explains the value.
            if value != expected && !self.reset_since(epoch) {
                let b = super::Broken::ResetBehind { queue: q, register: "Q_ISSUE_SIZE", value, expected };
                self.set_broken(Some(b));
                return self.check_broken();
            }
        }
        Ok(())
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
            self.wait_until(cq, t, self.params.timeout, &what, || issuer.has_room(len).map_err(|v| self.protocol(v)))
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

    /// True once the event has completed and every read enqueued before it has been delivered. `EVENT_DONE` is
    /// checked before use.
    pub(crate) fn event_done(&self, m: &EventMark) -> Result<bool> {
        self.check_broken()?;
        let mut c = self.queues[m.queue as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
        let c = c.as_mut().ok_or_else(|| self.closed_error())?;
        let done = c.event_done().map_err(|v| self.protocol(v))?;
        Ok(seq_reached(done, m.id) && c.delivered() >= m.reads)
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

    /// Blocks until a read's data is in place, for at most `timeout`.
    pub(crate) fn wait_read(&self, r: &ReadTicket, timeout: Duration) -> Result<()> {
        self.check_usable()?;
        self.check_epoch(r.epoch, "read")?;
        let t = self.transport()?;
        let slot = &self.queues[r.queue as usize];
        let desc = || format!("read on queue {}", r.queue);
        self.wait_until(r.queue, &t, timeout, &desc, || {
            let c = slot.compl.lock().unwrap_or_else(|e| e.into_inner());
            let c = c.as_ref().ok_or_else(|| self.closed_error())?;
            // A reset since the read was enqueued dropped it.
            self.check_epoch(r.epoch, "read")?;
            Ok(c.delivered() >= r.last)
        })
    }

    /// True once a read's data is in place (drains completions first, non-blocking).
    pub(crate) fn read_done(&self, r: &ReadTicket) -> Result<bool> {
        self.check_usable()?;
        self.check_epoch(r.epoch, "read")?;
        let t = self.transport()?;
        self.progress(t.as_ref())?;
        let delivered = {
            let c = self.queues[r.queue as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
            let c = c.as_ref().ok_or_else(|| self.closed_error())?;
            self.check_epoch(r.epoch, "read")?;
            c.delivered() >= r.last
        };
        if delivered {
            return Ok(true);
        }
        self.check_fault(t.as_ref())?;
        Ok(false)
    }

    /// Cancels a read that is not delivered yet: once this returns, nothing is written to its destination. The
    /// completion entries are still consumed when they arrive (their ring space returned). A read dropped by a
    /// reset or a close since is already gone.
    pub(crate) fn cancel_read(&self, r: &ReadTicket) {
        let mut c = self.queues[r.queue as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
        // Under the completion lock, which a reset holds while it bumps the epoch and replaces the completer: a
        // completer of the read's epoch is the one it was registered with.
        if let Some(c) = c.as_mut()
            && self.epoch.load(Ordering::Acquire) == r.epoch
        {
            c.cancel(r.first, r.last);
        }
    }

    /// Close path: waits until every queue's device has consumed all it was given and every read has been
    /// delivered, within one `budget` for all queues. Takes no lock it could wait on for long: a queue another
    /// thread is holding counts as not drained yet.
    pub(crate) fn drain_for_close(&self, t: &Arc<dyn Transport>, budget: Duration) -> Result<()> {
        let start = Instant::now();
        let retired = self.retired_counts(t.as_ref());
        for slot in &self.queues {
            // A capture in progress is dropped: its records never reach the ring.
            if let Ok(mut st) = slot.state.try_lock() {
                st.capture = None;
            }
        }
        loop {
            self.progress(t.as_ref())?;
            let mut pending = None;
            for (q, slot) in self.queues.iter().enumerate() {
                let issue_done = match slot.state.try_lock() {
                    Ok(mut st) => match st.issuer.as_mut() {
                        Some(i) => i.drained().map_err(|v| self.protocol(v))?,
                        None => true,
                    },
                    Err(_) => false,
                };
                let reads_done = match slot.compl.try_lock() {
                    Ok(c) => c.as_ref().is_none_or(|c| c.delivered() >= c.expected()),
                    Err(_) => false,
                };
                if !(issue_done && reads_done) {
                    pending.get_or_insert(q as u16);
                }
            }
            let Some(q) = pending else {
                return Ok(());
            };
            self.check_fault(t.as_ref())?;
            let elapsed = start.elapsed();
            if elapsed >= budget {
                let what = "closing: draining every queue".to_string();
                return Err(self.timeout_error(t.as_ref(), q, what, budget, &retired, None));
            }
            t.write32(regs::queue_reg(q, regs::queue::IRQ_ARM), 1);
            t.wait_irq(q as u32, SLICE.min(budget - elapsed))?;
        }
    }
}
