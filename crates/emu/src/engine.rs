//! One command queue of the emulated device: fetch records from the issue ring, execute them, write completions
//! and the device-written words, exactly as contract §4-§6 describe.

use super::config::{EntryField, HostWord};
use super::iommu::Window;
use super::kernels;
use super::timing::{Rng, Work};
use super::{Fault, FaultInfo, QueueShared, Shared, Wake};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use ttdrv_contract::kernel::{self, BuiltinKernel, IMAGE_HEADER};
use ttdrv_contract::records::{
    self, Body, CbConfig, ComplKind, ExecTime, FIXED_LEN, Header, PAYLOAD_OFFSET, RecordFlags, RecordSlot,
};
use ttdrv_contract::regs::{FaultCode, QueueStatus, host};
use ttdrv_contract::{DevAddr, MAX_RING, MIN_RING, Memory, PROFILE_SLOT_BYTES, RING_OFFSET, seq_reached};

/// How long an idle engine spins before parking. It must outlast the host's own wake-up (a host thread sleeping on
/// the interrupt eventfd takes ~40 µs to run again on this kind of machine): otherwise each round trip parks both
/// sides and pays two wake-ups. An idle device spins this long once after its last record, then costs nothing.
const SPIN: Duration = Duration::from_micros(100);
/// Round trips that must find the engine on the host's core back to back, each within `SHARED_GAP` of the last,
/// before it moves off (`Engine::leave_core`). Only a hot loop moves it: a round trip after an idle gap is better
/// served where it is (the host yields its core to the engine; the other core may be busy with other work, where a
/// moved engine would wait for a scheduler slice).
const SHARED_STREAK: u32 = 8;
const SHARED_GAP: Duration = Duration::from_micros(200);
/// The least time between two moves of an engine off the host's core (`Engine::leave_core`): a move costs two
/// system calls and a migration, tens of µs, and a loaded machine may put the thread back at once.
const MOVE_EVERY: Duration = Duration::from_millis(20);
/// The idle spin in paced mode.
const PACED_SPIN: Duration = Duration::from_micros(5);
/// The first part of the spin, in which the engine does not yield the core: it catches the next record of a burst
/// without a system call (a yield costs ~0.8 µs on this kind of VM, and a doorbell that lands during one waits for
/// it). Long enough to span the host's own work between two records (an op call, a Python call: ~1-3 µs), short,
/// because while it lasts a host thread on the same core cannot run; an engine on the core of the thread that rang
/// last skips it altogether (`Engine::idle_wait`).
const PURE_SPIN: Duration = Duration::from_micros(5);
/// Park timeout: a safety net only, every state change the engine waits for also unparks it (`QueueShared::wake`).
/// An engine woken by the timeout with nothing to do parks again at once without spinning, so an idle device costs
/// one wake-up per queue per timeout: 16 idle queues, ~16 short wake-ups a second.
const PARK: Duration = Duration::from_secs(1);

/// Why execution stopped early.
enum Stop {
    Fault(Fault),
    /// Reset, shutdown or another queue's fault: drop the record without reporting.
    Abort,
}

impl From<Fault> for Stop {
    fn from(f: Fault) -> Stop {
        Stop::Fault(f)
    }
}

/// The state of an enabled queue.
struct Active {
    base: u64,
    issue_size: u32,
    compl_size: u32,
    window: Window,
    iommu_gen: u64,
    rd: u32,
    compl_wr: u32,
    retired: u32,
    prof_base: u64,
    prof_slots: u32,
}

/// Modelled or measured span of one record.
#[derive(Clone, Copy, Default)]
struct Span {
    start: u64,
    end: u64,
}

pub(super) fn run(sh: Arc<Shared>, q: usize) {
    let mut e = Engine {
        sh: &sh,
        q,
        qs: &sh.queues[q],
        reset_seen: u32::MAX,
        enable_seq: 0,
        active: None,
        rng: sh.cfg.jitter.filter(|j| j.queues & (1 << q) != 0).map(|j| Rng::new(j.seed.wrapping_add(q as u64))),
        args: Vec::new(),
        words: Vec::new(),
        core: Vec::new(),
        free_at: 0,
        trace: None,
        waits: Vec::new(),
        executed: 0,
        hanging: false,
        hang_over: false,
        garbage: None,
        fresh: std::cell::Cell::new(true),
        moved_at: std::cell::Cell::new(None),
        shared_core: std::cell::Cell::new((0, None)),
    };
    e.main_loop();
}

struct Engine<'a> {
    sh: &'a Shared,
    q: usize,
    qs: &'a QueueShared,
    reset_seen: u32,
    enable_seq: u32,
    active: Option<Active>,
    rng: Option<Rng>,
    args: Vec<u8>,
    /// `args` as words.
    words: Vec<u32>,
    /// One core's runtime words, expanded from a launch's compact form (contract §4.2.6).
    core: Vec<u32>,
    /// Paced: device time at which this queue finished its last record.
    free_at: u64,
    /// The trace being executed, if any.
    trace: Option<TraceCursor>,
    /// The wait table of the `EXEC_TRACE` record being executed (contract §4.2.9).
    waits: Vec<records::WaitEntry>,
    /// Injected faults (config.rs `Inject`): records this queue executed since creation; whether its injected hang
    /// began and whether a reset ended it; a device-written word this queue reports as garbage until the next reset.
    executed: u64,
    hanging: bool,
    hang_over: bool,
    garbage: Option<(HostWord, u32)>,
    /// The queue executed a record (or was enabled) since it last parked: an idle wait spins before parking only
    /// then.
    fresh: std::cell::Cell<bool>,
    /// When the engine last moved off the host's core ([`Engine::leave_core`]).
    moved_at: std::cell::Cell<Option<Instant>>,
    /// Back-to-back round trips that found the engine on the host's core: how many, and when the last one did.
    shared_core: std::cell::Cell<(u32, Option<Instant>)>,
}

impl Engine<'_> {
    fn stopped(&self) -> bool {
        self.sh.shutdown.load(Ordering::Acquire)
            || self.sh.reset_gen.load(Ordering::Acquire) != self.reset_seen
            || self.sh.faulted.load(Ordering::Acquire)
    }

    /// Spins briefly, then parks, until `ready()` or a stop condition holds (or the park's safety-net timeout).
    /// `cause` is what makes `ready()` true (a set of [`Wake`] causes): only those state changes, and a stop, unpark
    /// the engine. Spins only when the queue has just been working (`self.fresh`): a queue that is disabled, hung,
    /// faulted or has already parked idle once since its last record parks at once, so idle engines (of unopened
    /// queues too) never poll.
    fn idle_wait(&self, cause: u32, ready: impl Fn() -> bool) {
        let t0 = Instant::now();
        // Paced, the timing model already decides when records start and end, so a late wake-up costs nothing
        // visible: spin only a little and leave the cores to the host.
        let spin = match (self.fresh.get(), self.sh.cfg.pace.is_some()) {
            (false, _) => Duration::ZERO,
            (true, true) => PACED_SPIN,
            (true, false) => SPIN,
        };
        // On the core of the thread that rang last, that thread (likely waiting for this queue's completion) runs
        // only when we stop: give the core away from the first turn, as a device on its own silicon never holds it.
        // With two cores and more runnable threads, the scheduler often puts a woken engine there.
        // SAFETY: sched_getcpu has no preconditions (glibc reads the CPU from the thread's rseq area).
        let mut cpu = unsafe { libc::sched_getcpu() };
        let host_cpu = self.qs.doorbell_cpu.load(Ordering::Relaxed);
        if cpu == host_cpu && spin == SPIN && self.sharing_core() && self.leave_core(cpu) {
            // SAFETY: as above.
            cpu = unsafe { libc::sched_getcpu() };
        }
        let pure = if cpu == host_cpu { Duration::ZERO } else { PURE_SPIN.min(spin) };
        loop {
            if ready() || self.stopped() {
                return;
            }
            let waited = t0.elapsed();
            if waited >= spin {
                break;
            }
            // After the pure spin, give the core away on every turn, so that on a machine with fewer cores than
            // busy threads (host + one engine per queue) the host is not preempted for a whole scheduler slice.
            // With nobody else runnable, yielding returns at once and this is still a spin.
            if waited < pure {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        self.fresh.set(false);
        // Counted before the flag is raised, so a waker that takes the flag always finds its park counted.
        self.qs.parks.fetch_add(1, Ordering::Relaxed);
        self.qs.sleeping.store(cause | Wake::STOP, Ordering::SeqCst);
        // Pairs with the fence in `QueueShared::wake`: the re-check below cannot be satisfied from before the store.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !ready() && !self.stopped() {
            std::thread::park_timeout(PARK);
        }
        // A waker that saw the flag has cleared it already; after a timeout (or a spurious return) we clear it.
        self.qs.sleeping.store(0, Ordering::SeqCst);
    }

    /// Counts a round trip that found the engine on the host's core; true once several came back to back (each
    /// within [`SHARED_GAP`] of the last): the host is driving this queue hard from the engine's own core.
    fn sharing_core(&self) -> bool {
        let now = Instant::now();
        let (n, last) = self.shared_core.get();
        let n = if last.is_some_and(|t| now.duration_since(t) < SHARED_GAP) { n + 1 } else { 1 };
        self.shared_core.set((n, Some(now)));
        n >= SHARED_STREAK
    }

    /// Moves the engine thread off CPU `cpu` (where the thread that rang it runs), if the process may run on
    /// another, at most once per [`MOVE_EVERY`]. Two busy threads on one core take turns (each round trip then
    /// costs two context switches, ~5-8 µs here), and the kernel's load balancer leaves both where they are while
    /// they keep running (each counts as cache-hot), even with another core idle. Narrowing the thread's affinity
    /// to the other CPUs moves it at once; restoring it right after keeps it where it landed. True if it moved.
    fn leave_core(&self, cpu: i32) -> bool {
        if cpu < 0 || self.moved_at.get().is_some_and(|t| t.elapsed() < MOVE_EVERY) {
            return false;
        }
        self.moved_at.set(Some(Instant::now()));
        // SAFETY: an all-zero cpu_set_t is a valid empty set; the calls get and set this thread's own mask with the
        // set's true size; CPU_* index inside the set (CPU_SETSIZE bounds `cpu`, checked below).
        unsafe {
            let mut all: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if cpu as usize >= libc::CPU_SETSIZE as usize
                || libc::sched_getaffinity(0, size, &mut all) != 0
                || libc::CPU_COUNT(&all) < 2
                || !libc::CPU_ISSET(cpu as usize, &all)
            {
                return false;
            }
            let mut others = all;
            libc::CPU_CLR(cpu as usize, &mut others);
            let moved = libc::sched_setaffinity(0, size, &others) == 0;
            libc::sched_setaffinity(0, size, &all);
            moved
        }
    }

    fn main_loop(&mut self) {
        loop {
            let sh = self.sh;
            if sh.shutdown.load(Ordering::Acquire) {
                return;
            }
            let g = sh.reset_gen.load(Ordering::Acquire);
            if g != self.reset_seen {
                self.reset_seen = g;
                self.active = None;
                self.free_at = 0;
                self.hang_over |= self.hanging;
                self.garbage = None;
                self.enable_seq = self.qs.enable_seq.load(Ordering::Acquire);
                self.qs.ack_gen.store(g, Ordering::Release);
            }
            if sh.faulted.load(Ordering::Acquire) {
                // Stopped until a reset: nothing to catch quickly, park at once.
                self.fresh.set(false);
                self.idle_wait(Wake::STOP, || sh.reset_gen.load(Ordering::Acquire) != g);
                continue;
            }
            if self.qs.ctrl.load(Ordering::Acquire) & 1 == 0 {
                // A disabled (never opened, or closed) queue parks without spinning.
                self.active = None;
                self.fresh.set(false);
                self.idle_wait(Wake::CTRL, || self.qs.ctrl.load(Ordering::Acquire) & 1 == 1);
                continue;
            }
            let seq = self.qs.enable_seq.load(Ordering::Acquire);
            if self.active.is_none() || seq != self.enable_seq {
                self.enable_seq = seq;
                self.free_at = 0;
                match self.activate() {
                    Ok(a) => self.active = Some(a),
                    Err(f) => {
                        self.fault(f, 0, 0);
                        continue;
                    }
                }
            }
            if self.hung() {
                // An injected hang: consume nothing until a reset (or shutdown, or a fault elsewhere).
                self.fresh.set(false);
                self.idle_wait(Wake::STOP, || false);
                continue;
            }
            let rd = self.active.as_ref().map_or(0, |a| a.rd);
            let wr = self.qs.doorbell.load(Ordering::Acquire);
            if wr == rd {
                self.idle_wait(Wake::DOORBELL | Wake::CTRL, || self.qs.doorbell.load(Ordering::Acquire) != rd);
                continue;
            }
            // The host may have disabled the queue after the check above and then rung this doorbell: no record may
            // start after `Q_CTRL = 0` (contract §3). The Acquire load of the doorbell makes that earlier write
            // visible here. Likewise a disable → enable since `seq` was read: the doorbell may already be the new
            // enable's (or its zeroing), which `rd` does not belong to.
            if self.qs.ctrl.load(Ordering::Acquire) & 1 == 0 || self.qs.enable_seq.load(Ordering::Acquire) != seq {
                continue;
            }
            self.qs.status.fetch_or(QueueStatus::BUSY.bits(), Ordering::AcqRel);
            // Working: the idle wait after this record spins before parking, to catch the next one cheaply.
            self.fresh.set(true);
            if let Err((f, tag, op)) = self.step_guarded(wr) {
                self.fault(f, tag, op);
            }
            self.qs.status.fetch_and(!QueueStatus::BUSY.bits(), Ordering::AcqRel);
        }
    }

    /// Whether the injected hang (`hang=Q`) holds this queue now.
    fn hung(&mut self) -> bool {
        match self.sh.cfg.inject.hang {
            Some((q, after)) if q as usize == self.q && !self.hang_over && self.executed >= after => {
                self.hanging = true;
                true
            }
            _ => false,
        }
    }

    /// Counts one DMA access at `iova`: the injected IOMMU fault (`iommu_fault=N`) fires on the `N`th.
    fn dma(&self, iova: u64) -> Result<(), Fault> {
        if let Some(n) = self.sh.cfg.inject.iommu_fault_at
            && self.sh.injected.dma.fetch_add(1, Ordering::AcqRel) + 1 == n
        {
            return Err(Fault::new(FaultCode::Iommu, iova));
        }
        Ok(())
    }

    /// The injected slowness (`slow_us=N`): waits, but not past a reset or shutdown. False if one came.
    fn slow_down(&self) -> bool {
        let ns = self.sh.cfg.inject.slow_ns;
        if ns == 0 {
            return true;
        }
        let until = Instant::now() + Duration::from_nanos(ns);
        while !self.stopped() {
            let now = Instant::now();
            if now >= until {
                return true;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(1)));
        }
        false
    }

    /// [`Engine::step`], with a panic (a bug in the emulator: no record bytes may cause one) turned into a
    /// `BAD_RECORD` fault, so that the queue thread lives on and a reset brings the device back instead of leaving it
    /// `RESETTING` for good. Fuzzing builds let the panic through, so that the fuzzer reports it.
    fn step_guarded(&mut self, wr: u32) -> Result<(), (Fault, u32, u32)> {
        if cfg!(fuzzing) {
            return self.step(wr);
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.step(wr))) {
            Ok(r) => r,
            Err(_) => {
                self.sh.panics.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // The record's state is unknown: drop the queue's, as a reset would, once the fault is reported.
                self.active = None;
                let off = wr as u64;
                Err((Fault::new(FaultCode::BadRecord, off), 0, 0))
            }
        }
    }

    fn fault(&mut self, f: Fault, tag: u32, opcode: u32) {
        self.sh.record_fault(FaultInfo { fault: f, queue: self.q as u32, tag, opcode });
    }

    fn activate(&self) -> Result<Active, Fault> {
        let qs = self.qs;
        let base = qs.base.load(Ordering::Acquire);
        let issue = qs.issue_size.load(Ordering::Acquire);
        let compl = qs.compl_size.load(Ordering::Acquire);
        let ok = |s: u32| s.is_power_of_two() && (MIN_RING..=MAX_RING).contains(&(s as usize));
        if !ok(issue) || !ok(compl) || base % 4096 != 0 {
            return Err(Fault::new(FaultCode::Ring, base));
        }
        let len = RING_OFFSET as u64 + issue as u64 + compl as u64;
        let iommu_gen = self.sh.iommu.generation();
        let window = self.sh.iommu.translate(base, len)?;
        let a = Active {
            base,
            issue_size: issue,
            compl_size: compl,
            window,
            iommu_gen,
            rd: 0,
            compl_wr: 0,
            retired: 0,
            prof_base: qs.prof_base.load(Ordering::Acquire),
            prof_slots: qs.prof_slots.load(Ordering::Acquire),
        };
        for off in [host::ISSUE_RD, host::COMPL_WR, host::EVENT_DONE, host::RETIRED, host::LAST_TAG] {
            put_word(&a, off, 0)?;
        }
        qs.event.store(0, Ordering::Release);
        qs.retired.store(0, Ordering::Release);
        Ok(a)
    }

    /// Re-translates the queue's host region if the IOMMU changed since the last record.
    fn refresh_window(&mut self) -> Result<(), Fault> {
        let g = self.sh.iommu.generation();
        let a = self.active.as_mut().expect("active queue");
        if g != a.iommu_gen {
            let len = RING_OFFSET as u64 + a.issue_size as u64 + a.compl_size as u64;
            a.window = self.sh.iommu.translate(a.base, len)?;
            a.iommu_gen = g;
        }
        Ok(())
    }

    /// Fetches and executes one record from the issue ring.
    fn step(&mut self, wr: u32) -> Result<(), (Fault, u32, u32)> {
        let (rd, size, base) = {
            let a = self.active.as_ref().expect("active queue");
            (a.rd, a.issue_size, a.base)
        };
        let avail = wr.wrapping_sub(rd);
        if avail % 64 != 0 || avail > size {
            return Err((Fault::new(FaultCode::Ring, wr as u64), 0, 0));
        }
        self.refresh_window().map_err(|f| (f, 0, 0))?;
        let off = rd & (size - 1);
        let rec_iova = base + RING_OFFSET as u64 + off as u64;
        let a = self.active.as_ref().expect("active queue");
        let rec_ptr = a.window.at(rec_iova, FIXED_LEN as u64).map_err(|f| (f, 0, 0))?;
        let mut fixed = [0u8; FIXED_LEN];
        // SAFETY: `at` checked the 64 bytes are inside the mapped ring; the host wrote them before the doorbell we
        // loaded with Acquire.
        unsafe { std::ptr::copy_nonoverlapping(rec_ptr, fixed.as_mut_ptr(), FIXED_LEN) };
        let bad = |h: &Header| (Fault::new(FaultCode::BadRecord, off as u64), h.tag, h.opcode as u32);
        let hdr = records::decode_header(&fixed);
        let (hdr, body) = records::decode(&fixed).map_err(|_| bad(&hdr))?;
        let len = hdr.length;
        if len > avail || off as u64 + len as u64 > size as u64 {
            return Err(bad(&hdr));
        }
        let rec_ptr = a.window.at(rec_iova, len as u64).map_err(|f| (f, hdr.tag, hdr.opcode as u32))?;
        self.dma(rec_iova).map_err(|f| (f, hdr.tag, hdr.opcode as u32))?;
        self.executed += 1;
        if !self.jitter() {
            // Reset or shutdown during the delay: the record is dropped, as any record in flight at a reset is.
            return Ok(());
        }
        let arrival = self.arrival(rd.wrapping_add(len));
        let span = match self.execute(&hdr, &body, RecordBytes::Ring(rec_ptr), arrival) {
            Ok(s) => s,
            Err(Stop::Fault(f)) => return Err((f, hdr.tag, hdr.opcode as u32)),
            Err(Stop::Abort) => return Ok(()),
        };
        let event = match body {
            Body::EventRecord(e) => Some(e.event_id),
            Body::Pad
            | Body::WriteLinear(_)
            | Body::WritePaged(_)
            | Body::ReadLinear(_)
            | Body::ReadPaged(_)
            | Body::Launch(_)
            | Body::EventWait(_)
            | Body::ExecTrace(_)
            | Body::WriteHost(_)
            | Body::ReadHost(_) => None,
        };
        match self.retire(&hdr, span, len, event) {
            Ok(()) | Err(Stop::Abort) => Ok(()),
            Err(Stop::Fault(f)) => Err((f, hdr.tag, hdr.opcode as u32)),
        }
    }

    /// Delays the next record by a seeded random time, if jitter is on. Returns false if a reset or shutdown came
    /// meanwhile: a modelled delay never holds those up.
    fn jitter(&mut self) -> bool {
        if let (Some(rng), Some(j)) = (self.rng.as_mut(), self.sh.cfg.jitter) {
            let ns = rng.jitter_ns(&j);
            if ns > 0 {
                let until = self.sh.clock.now().saturating_add(ns);
                return self.sh.clock.wait_until(until, || self.stopped());
            }
        }
        true
    }

    /// Paced: the device time at which the doorbell covering `end` rang.
    fn arrival(&self, end: u32) -> u64 {
        if self.sh.cfg.pace.is_none() {
            return 0;
        }
        let mut log = self.qs.doorbell_log.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(ptr, t)) = log.front() {
            if seq_reached(ptr, end) {
                return t;
            }
            log.pop_front();
        }
        self.sh.clock.now()
    }

    /// Executes one record, from the ring or from a trace (whose reader has checked the opcode may be there).
    /// Returns its span.
    fn execute(&mut self, hdr: &Header, body: &Body, bytes: RecordBytes, arrival: u64) -> Result<Span, Stop> {
        debug_assert!(matches!(bytes, RecordBytes::Ring(_)) || body.opcode().in_trace());
        let pace = self.sh.cfg.pace;
        let now = self.sh.clock.now();
        let exec_start = now;
        let len = hdr.length as u64;
        // When the record is ready to run; and, for a write, the span of its payload crossing the link (a small
        // record is prefetched while earlier ones run, a large one streams in while the queue executes it).
        let (ready, stream) = match (pace, bytes) {
            (None, _) => (now, Span { start: now, end: now }),
            (Some(p), RecordBytes::Ring(_)) => {
                // Saturating throughout: the model's parameters are the user's, the lengths the record's.
                let lat = arrival.saturating_add(p.pcie_latency_ns);
                // A command (within the prefetch window) is fetched ahead and interleaves with bulk traffic on the
                // link, as PCIe packets do; a bulk payload streams while its queue executes it and holds the link,
                // so two bulk transfers in one direction share its bandwidth by taking turns.
                let (fs, fe) = if len <= p.prefetch_bytes {
                    (lat, lat.saturating_add(p.pcie_ns(len)))
                } else {
                    self.sh.pacer.reserve(|l| &mut l.h2d_free, lat.max(self.free_at), p.pcie_ns(len))
                };
                let start = fs.max(self.free_at);
                (fe.max(self.free_at), Span { start, end: fe.max(start) })
            }
            (Some(_), RecordBytes::Trace { ready }) => {
                let r = ready.max(self.free_at);
                (r, Span { start: r, end: r })
            }
        };
        let mut span = Span { start: ready, end: ready };
        match *body {
            Body::Pad => {}
            Body::WriteLinear(x) => {
                let RecordBytes::Ring(p) = bytes else {
                    return Err(bad_record(0));
                };
                let dst = self.sh.mem.ptr(DevAddr { mem: x.mem, unit: x.unit, offset: x.offset }, x.len)?;
                // SAFETY: the payload lies inside the record (decode checked `len <= length - 64`), which lies
                // inside the mapped ring; `dst` was bounds-checked by the device memory.
                unsafe { std::ptr::copy_nonoverlapping(p.add(PAYLOAD_OFFSET), dst, x.len as usize) };
                span = stream;
            }
            Body::WritePaged(x) => {
                let RecordBytes::Ring(p) = bytes else {
                    return Err(bad_record(0));
                };
                if x.page_size > x.page_stride {
                    return Err(bad_record(0));
                }
                // Pages of no bytes move nothing and touch no memory.
                let pages = if x.page_size == 0 { 0 } else { x.num_pages };
                for i in 0..pages {
                    let at = page_addr(self.sh, &x, i);
                    let dst = self.sh.mem.ptr(at, x.page_size as u64)?;
                    // SAFETY: page `i` of the payload is inside the record (decode checked the total); `dst` is
                    // bounds-checked.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            p.add(PAYLOAD_OFFSET + i as usize * x.page_size as usize),
                            dst,
                            x.page_size as usize,
                        )
                    };
                }
                span = stream;
            }
            Body::ReadLinear(x) => {
                let src = self.sh.mem.ptr(DevAddr { mem: x.mem, unit: x.unit, offset: x.offset }, x.len)?;
                self.complete_read(hdr.tag, x.len, |dst| {
                    // SAFETY: `src` is bounds-checked for `x.len` bytes; `dst` is a completion payload of that size.
                    unsafe { std::ptr::copy_nonoverlapping(src, dst, x.len as usize) };
                    Ok(())
                })?;
                span.end = self.model_read(ready, x.len);
            }
            Body::ReadPaged(x) => {
                if x.page_size > x.page_stride {
                    return Err(bad_record(0));
                }
                let total = x.bytes();
                let sh = self.sh;
                let pages = if x.page_size == 0 { 0 } else { x.num_pages };
                self.complete_read(hdr.tag, total, |dst| {
                    for i in 0..pages {
                        let at = page_addr(sh, &x, i);
                        let src = sh.mem.ptr(at, x.page_size as u64)?;
                        // SAFETY: both ranges are checked: `src` by device memory, `dst` is `total` bytes long.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                src,
                                dst.add(i as usize * x.page_size as usize),
                                x.page_size as usize,
                            )
                        };
                    }
                    Ok(())
                })?;
                span.end = self.model_read(ready, total);
            }
            Body::Launch(l) => {
                // A core outside the grid faults before anything else (contract §4.2.6); this also bounds the
                // arguments read below to what the grid's cores can take.
                let geo = self.sh.geometry();
                if l.rect.x1 as u32 >= geo.grid_x || l.rect.y1 as u32 >= geo.grid_y {
                    return Err(bad_record(0));
                }
                let nargs = l.args_bytes();
                self.args.clear();
                self.args.resize(nargs, 0);
                match bytes {
                    // SAFETY: decode checked `64 + args_bytes <= length`; the record is inside the mapped ring.
                    RecordBytes::Ring(p) => unsafe {
                        std::ptr::copy_nonoverlapping(p.add(FIXED_LEN), self.args.as_mut_ptr(), nargs)
                    },
                    RecordBytes::Trace { .. } => {
                        let mut args: Vec<u8> = std::mem::take(&mut self.args);
                        let r = self.read_trace_into(&mut args);
                        self.args = args;
                        r?;
                    }
                }
                let work = self.launch(&l)?;
                if let Some(p) = pace {
                    let busy = p.launch_ns.saturating_add(p.kernel_ns(work));
                    let (s, e) = self.sh.pacer.reserve(|l| &mut l.grid_free, ready, busy);
                    span = Span { start: s, end: e };
                }
            }
            Body::EventRecord(_) => {
                if let Some(p) = pace {
                    span.end = ready.saturating_add(p.event_ns);
                }
            }
            Body::EventWait(records::EventWait { queue, event_id }) => {
                if queue as usize >= self.sh.queues.len() {
                    return Err(bad_record(0));
                }
                let other = &self.sh.queues[queue as usize];
                if !seq_reached(other.event.load(Ordering::Acquire), event_id) {
                    self.qs.status.fetch_or(QueueStatus::WAITING_EVENT.bits(), Ordering::AcqRel);
                    while !seq_reached(other.event.load(Ordering::Acquire), event_id) {
                        if self.stopped() {
                            self.qs.status.fetch_and(!QueueStatus::WAITING_EVENT.bits(), Ordering::AcqRel);
                            return Err(Stop::Abort);
                        }
                        self.idle_wait(Wake::EVENT, || seq_reached(other.event.load(Ordering::Acquire), event_id));
                    }
                    self.qs.status.fetch_and(!QueueStatus::WAITING_EVENT.bits(), Ordering::AcqRel);
                }
                if let Some(p) = pace {
                    let start = ready.max(other.event_time(event_id));
                    span = Span { start, end: start.saturating_add(p.event_ns) };
                }
            }
            Body::ExecTrace(x) => {
                if x.page_size == 0 || x.page_size % 64 != 0 {
                    return Err(bad_record(0));
                }
                // The wait table follows the fixed part (decode checked it lies inside the record).
                let RecordBytes::Ring(p) = bytes else {
                    return Err(bad_record(0));
                };
                let mut waits = std::mem::take(&mut self.waits);
                waits.clear();
                for i in 0..x.num_waits as usize {
                    let mut e = [0u8; records::WAIT_ENTRY_LEN];
                    // SAFETY: decode checked `64 + num_waits × 8 <= length`; the record is inside the mapped ring.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            p.add(FIXED_LEN + i * records::WAIT_ENTRY_LEN),
                            e.as_mut_ptr(),
                            records::WAIT_ENTRY_LEN,
                        )
                    };
                    waits.push(records::WaitEntry::from_bytes(&e));
                }
                self.waits = waits;
                span.end = self.exec_trace(hdr, &x, ready)?;
            }
            Body::WriteHost(x) => {
                self.host_dma(&x, true)?;
                if let Some(p) = pace {
                    span.end = self.sh.pacer.reserve(|l| &mut l.h2d_free, ready, p.pcie_ns(x.bytes())).1;
                }
            }
            Body::ReadHost(x) => {
                self.host_dma(&x, false)?;
                span.end = self.model_read(ready, x.bytes());
            }
        }
        let now = self.sh.clock.now();
        match (pace, body.opcode().exec_time()) {
            // Unpaced, the span is what happened.
            (None, _) => span.end = now,
            // Paced, it is the model's, but never shorter than the work took to emulate: if this machine computes
            // slower than the modelled device, that shows in the timestamps and carries over to later records.
            // (A reset restarts the clock, so `now` may be below `exec_start`.)
            (Some(_), ExecTime::Own) => {
                span.end = span.end.max(span.start.saturating_add(now.saturating_sub(exec_start)))
            }
            // Time spent waiting (an event wait, a thread woken late) is the emulator's, not the device's, and is
            // not charged. Trace replays account for their records one by one.
            (Some(_), ExecTime::Waits | ExecTime::Contained) => {}
        }
        Ok(span)
    }

    /// Executes a `WRITE_HOST` (`to_device`) or `READ_HOST` (contract §4.2.10): checks the record's fields and the
    /// whole host range against the IOMMU before moving any byte, then copies piece by piece. The window on the
    /// host memory is dropped when this returns, so the record touches the host memory only while it executes (an
    /// unmap of it waits for that).
    fn host_dma(&self, x: &records::HostDma, to_device: bool) -> Result<(), Stop> {
        use records::host_dma_mode::{LINEAR, PAGED};
        if x.mode != LINEAR && x.mode != PAGED {
            return Err(bad_record(0));
        }
        if x.count > 1 && (x.host_stride < x.piece || x.dev_stride < x.piece) {
            return Err(bad_record(0));
        }
        if x.count == 0 || x.piece == 0 {
            return Ok(());
        }
        let span = x.host_span().ok_or(Fault::new(FaultCode::Iommu, x.iova))?;
        let window = self.sh.iommu.translate(x.iova, span)?;
        self.dma(x.iova)?;
        let paged = records::Paged {
            mem: x.mem,
            page_size: x.piece,
            base: x.base,
            page_stride: x.dev_stride,
            start_page: x.start_page,
            num_pages: x.count,
        };
        for k in 0..x.count {
            if k % 64 == 0 && self.stopped() {
                // A reset or shutdown mid-record: the record is dropped, as any record in flight at a reset is.
                return Err(Stop::Abort);
            }
            let at = if x.mode == PAGED {
                page_addr(self.sh, &paged, k)
            } else {
                let offset = x.base.saturating_add((k as u64).saturating_mul(x.dev_stride as u64));
                DevAddr { mem: x.mem, unit: x.unit, offset }
            };
            let dev = self.sh.mem.ptr(at, x.piece as u64)?;
            // In range: k × host_stride + piece ≤ span, which `translate` checked is inside the mapping.
            let host = window.at(x.iova + k as u64 * x.host_stride as u64, x.piece as u64)?;
            // SAFETY: both ranges are bounds-checked (`dev` by device memory, `host` by the IOMMU window, which the
            // mapper keeps valid while the window lives); host memory and device memory never overlap.
            unsafe {
                if to_device {
                    std::ptr::copy_nonoverlapping(host, dev, x.piece as usize)
                } else {
                    std::ptr::copy_nonoverlapping(dev, host, x.piece as usize)
                }
            }
        }
        Ok(())
    }

    /// Paced: the end of a read of `bytes` that became ready at `ready`.
    fn model_read(&self, ready: u64, bytes: u64) -> u64 {
        match self.sh.cfg.pace {
            Some(p) => {
                self.sh.pacer.reserve(|l| &mut l.d2h_free, ready, p.pcie_ns(bytes)).1.saturating_add(p.pcie_latency_ns)
            }
            None => ready,
        }
    }

    /// Writes one `READ_DATA` completion entry of `data_len` bytes, whose payload `fill` produces in place.
    fn complete_read(
        &mut self,
        tag: u32,
        data_len: u64,
        fill: impl FnOnce(*mut u8) -> Result<(), Fault>,
    ) -> Result<(), Stop> {
        let a = self.active.as_ref().expect("active queue");
        let size = a.compl_size as u64;
        // The length check comes first: the entry's size is only computed for a length the format can carry.
        if data_len > u32::MAX as u64 {
            return Err(bad_record(0));
        }
        let entry = records::compl_len(data_len as usize) as u64;
        if entry > size / 4 {
            return Err(bad_record(0));
        }
        let compl_base = a.base + RING_OFFSET as u64 + a.issue_size as u64;
        // Pad to the end of the ring if the entry would wrap.
        let off = a.compl_wr as u64 & (size - 1);
        let pad = if off + entry > size { size - off } else { 0 };
        self.wait_compl_space((pad + entry) as u32)?;
        let a = self.active.as_mut().expect("active queue");
        if pad > 0 {
            let p = a.window.at(compl_base + off, pad)?;
            // SAFETY: `at` checked the range is in the mapped completion ring; the host does not read it before
            // COMPL_WR covers it.
            let mut slot = unsafe { RecordSlot::from_raw(p, pad as usize) };
            records::encode_compl(&mut slot, ComplKind::Pad, 0, 0);
            a.compl_wr = a.compl_wr.wrapping_add(pad as u32);
        }
        let off = a.compl_wr as u64 & (size - 1);
        self.dma(compl_base + off)?;
        let a = self.active.as_ref().expect("active queue");
        let p = a.window.at(compl_base + off, entry)?;
        // SAFETY: as above, for the entry's range.
        let mut slot = unsafe { RecordSlot::from_raw(p, entry as usize) };
        records::encode_compl(&mut slot, ComplKind::ReadData, tag, data_len as u32);
        if let Some((field, n)) = self.sh.cfg.inject.bad_entry
            && self.sh.injected.entries.fetch_add(1, Ordering::AcqRel) + 1 == n
        {
            // An injected corrupt entry: by default a value that breaks the contract in the way the field can.
            let v = self.sh.cfg.inject.bad_value;
            match field {
                EntryField::Kind => slot.put_u8(0, v.map_or(0x7f, |v| v as u8)),
                // A multiple of 64 that wraps `offset + length` in 32 bits.
                EntryField::Length => slot.put_u32(4, v.unwrap_or(0xFFFF_FFC0)),
                EntryField::Tag => slot.put_u32(8, v.unwrap_or(tag ^ 0x8000_0000)),
                // A page more than the entry holds: a driver that trusts it copies past the entry.
                EntryField::DataLen => slot.put_u32(12, v.unwrap_or((data_len as u32).wrapping_add(4096))),
            }
        }
        // SAFETY: the payload starts inside the checked entry range.
        fill(unsafe { p.add(PAYLOAD_OFFSET) })?;
        // COMPL_WR is published when the record retires: in paced mode, not before its modelled end.
        let a = self.active.as_mut().expect("active queue");
        a.compl_wr = a.compl_wr.wrapping_add(entry as u32);
        Ok(())
    }

    /// Waits until the completion ring has `need` free bytes (contract §5.2: the host drains it).
    fn wait_compl_space(&self, need: u32) -> Result<(), Stop> {
        let a = self.active.as_ref().expect("active queue");
        let free = || a.compl_size.wrapping_sub(a.compl_wr.wrapping_sub(self.qs.compl_rd.load(Ordering::Acquire)));
        while free() < need {
            if self.stopped() {
                return Err(Stop::Abort);
            }
            self.idle_wait(Wake::COMPL_SPACE, || free() >= need);
        }
        Ok(())
    }

    /// Runs a `LAUNCH` whose packed arguments are in `self.args`. Returns the work of the busiest core.
    fn launch(&mut self, l: &records::LaunchFixed) -> Result<Work, Fault> {
        let geo = self.sh.geometry();
        let mut hdr = [0u8; IMAGE_HEADER];
        let img_at = DevAddr { mem: Memory::Dram, unit: l.kernel_bank, offset: l.kernel_offset };
        self.sh.mem.read(img_at, &mut hdr).map_err(|_| Fault::new(FaultCode::BadKernel, l.kernel_offset))?;
        let kern = kernel::decode_image(&hdr)
            .and_then(|h| BuiltinKernel::from_name(&h.name))
            .filter(|k| self.sh.cfg.kernels & k.bit() != 0)
            .ok_or(Fault::new(FaultCode::BadKernel, l.kernel_offset))?;
        // The packed arguments as words, without per-launch allocations (contract §4.2.6 layout).
        self.words.clear();
        self.words.extend(self.args.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        let args = l.split_words(&self.words).ok_or(Fault::new(FaultCode::BadRecord, 0))?;
        if !args.steps_valid() {
            return Err(Fault::new(FaultCode::BadRecord, 0));
        }
        let ct = args.ct_args;
        let cb_bytes = args
            .cbs
            .chunks_exact(CbConfig::WORDS)
            .fold(0u64, |sum, c| sum.saturating_add(CbConfig::from_words(c).bytes()));
        if cb_bytes > geo.l1_size - self.sh.cfg.l1_base as u64 {
            return Err(Fault::new(FaultCode::KernelArgs, 0));
        }
        let mut launch =
            kernels::Launch::new(&self.sh.mem, kern, ct).map_err(|_| Fault::new(FaultCode::KernelArgs, 0))?;
        let mut busiest = Work::default();
        for i in 0..l.rect.count() {
            // Each instance gets its per-core words (steps evaluated, explicit words copied), then the common words.
            args.core_args(i, &mut self.core);
            let w = launch.run_core(&self.core).map_err(|_| Fault::new(FaultCode::KernelArgs, i as u64))?;
            if w.flops + w.bytes > busiest.flops + busiest.bytes {
                busiest = w;
            }
        }
        Ok(busiest)
    }

    /// Executes a trace stored in DRAM (contract §4.2.9). Returns the end time of its last record.
    fn exec_trace(&mut self, exec: &Header, x: &records::ExecTrace, ready: u64) -> Result<u64, Stop> {
        let pace = self.sh.cfg.pace;
        let mut toff = 0u64;
        let mut fetch_at = ready;
        let mut prev_end = ready;
        self.trace = Some(TraceCursor { base: x.base, page_size: x.page_size as u64, off: 0 });
        while toff < x.trace_len {
            if self.stopped() {
                return Err(Stop::Abort);
            }
            let mut fixed = [0u8; FIXED_LEN];
            self.set_trace_off(toff);
            self.read_trace_into(&mut fixed)?;
            let bad = Fault::new(FaultCode::BadRecord, toff);
            let (h, mut body) = records::decode(&fixed).map_err(|_| bad)?;
            // Only the record types the opcode table allows in a trace (contract §4.2.9).
            if toff.saturating_add(h.length as u64) > x.trace_len || !body.opcode().in_trace() {
                return Err(bad.into());
            }
            // Inside a trace a wait names an entry of the replay's wait table (contract §4.2.8).
            if let Body::EventWait(w) = body {
                let e = self.waits.get(w.event_id as usize).ok_or(bad)?;
                body = Body::EventWait(records::EventWait { queue: e.queue, event_id: e.event_id });
            }
            if let Some(p) = pace {
                fetch_at = fetch_at.saturating_add(p.dram_ns(h.length as u64));
            }
            // Records inside a trace are delayed like any other (jitter): races with other queues show up inside a
            // replay too, not only at its start.
            if !self.jitter() {
                return Err(Stop::Abort);
            }
            // The trace cursor now points at the arguments that follow the fixed part.
            let span = self.execute(&h, &body, RecordBytes::Trace { ready: fetch_at.max(prev_end) }, 0)?;
            prev_end = span.end;
            if pace.is_some() {
                self.free_at = span.end;
            }
            // An event inside a trace is published when it executes, with the replay's base (contract §4.2.7).
            if let Body::EventRecord(e) = body {
                if pace.is_some() && !self.sh.clock.wait_until(span.end, || self.stopped()) {
                    return Err(Stop::Abort);
                }
                self.publish_event(x.event_base.wrapping_add(e.event_id), span.end)?;
                if h.flags.contains(RecordFlags::NOTIFY) {
                    self.sh.raise_irq(self.q);
                }
                self.sh.progress_irq(self.q);
            }
            if h.flags.contains(RecordFlags::PROFILE) && exec.flags.contains(RecordFlags::PROFILE) {
                let slot = exec.profile_slot.wrapping_add(1).wrapping_add(h.profile_slot);
                self.write_profile(slot, span)?;
            }
            toff += h.length as u64;
        }
        self.trace = None;
        Ok(prev_end)
    }

    /// Completes a record: waits for its modelled end, publishes the device-written words, timestamps, interrupts.
    /// A reset or shutdown during the wait for the modelled end drops the record (`Stop::Abort`): the device does not
    /// make the host wait out modelled time to reset it (contract §7.2).
    fn retire(&mut self, hdr: &Header, span: Span, len: u32, event: Option<u32>) -> Result<(), Stop> {
        if self.sh.cfg.pace.is_some() {
            if !self.sh.clock.wait_until(span.end, || self.stopped()) {
                return Err(Stop::Abort);
            }
            self.free_at = span.end;
        }
        if !self.slow_down() {
            // Reset or shut down while held back: the record never retires.
            return Ok(());
        }
        if hdr.flags.contains(RecordFlags::PROFILE) {
            self.write_profile(hdr.profile_slot, span)?;
        }
        let inject = &self.sh.cfg.inject;
        let nth = if inject.bad_word.is_some() || inject.surprise_reset_at.is_some() {
            self.sh.injected.retired.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            0
        };
        let a = self.active.as_mut().expect("active queue");
        a.rd = a.rd.wrapping_add(len);
        a.retired = a.retired.wrapping_add(1);
        if let Some((word, n)) = inject.bad_word
            && n == nth
        {
            // An injected garbage word, reported until the next reset: by default far ahead of the true value
            // (aligned, so only the bounds a driver checks can catch it).
            let truth = match word {
                HostWord::IssueRd => a.rd,
                HostWord::ComplWr => a.compl_wr,
                HostWord::EventDone => self.qs.event.load(Ordering::Acquire),
                HostWord::Retired => a.retired,
            };
            self.garbage = Some((word, inject.bad_value.unwrap_or(truth.wrapping_add(0x1000_0000))));
        }
        let shown = |w: HostWord, v: u32| match self.garbage {
            Some((g, bad)) if g == w => bad,
            _ => v,
        };
        put_word(a, host::COMPL_WR, shown(HostWord::ComplWr, a.compl_wr))?;
        put_word(a, host::ISSUE_RD, shown(HostWord::IssueRd, a.rd))?;
        if let Some(id) = event {
            self.publish_event(id, span.end)?;
        } else if let Some((HostWord::EventDone, bad)) = self.garbage {
            put_word(a, host::EVENT_DONE, bad)?;
        }
        let a = self.active.as_mut().expect("active queue");
        put_word(a, host::LAST_TAG, hdr.tag)?;
        put_word(a, host::RETIRED, shown(HostWord::Retired, a.retired))?;
        self.qs.retired.store(a.retired, Ordering::Release);
        if hdr.flags.contains(RecordFlags::NOTIFY) {
            self.sh.raise_irq(self.q);
        }
        self.sh.progress_irq(self.q);
        if inject.surprise_reset_at == Some(nth) {
            // An injected surprise reset: as if someone else reset the function (contract §7.2).
            self.sh.reset();
        }
        Ok(())
    }

    /// Publishes event `id` (contract §4.2.7): the queue's event slot, then its `EVENT_DONE` word; wakes the queues
    /// that may be stalled in `EVENT_WAIT` on it.
    fn publish_event(&self, id: u32, end: u64) -> Result<(), Fault> {
        if self.sh.cfg.pace.is_some() {
            self.qs.note_event(id, end);
        }
        self.qs.event.store(id, Ordering::Release);
        let shown = match self.garbage {
            Some((HostWord::EventDone, bad)) => bad,
            _ => id,
        };
        let a = self.active.as_ref().expect("active queue");
        put_word(a, host::EVENT_DONE, shown)?;
        for (i, other) in self.sh.queues.iter().enumerate() {
            if i != self.q {
                other.wake(Wake::EVENT);
            }
        }
        Ok(())
    }

    fn write_profile(&self, slot: u32, span: Span) -> Result<(), Fault> {
        let a = self.active.as_ref().expect("active queue");
        if a.prof_slots == 0 {
            return Ok(());
        }
        // `Q_PROF_BASE` is whatever the host wrote: an address past the end of the IOVA space is an IOMMU fault.
        let at = (slot % a.prof_slots) as u64 * PROFILE_SLOT_BYTES as u64;
        let at = a.prof_base.checked_add(at).ok_or(Fault::new(FaultCode::Iommu, a.prof_base))?;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&span.start.to_le_bytes());
        b[8..].copy_from_slice(&span.end.to_le_bytes());
        self.sh.iommu.write(at, &b)
    }
}

/// Where a record's bytes come from.
#[derive(Clone, Copy)]
enum RecordBytes {
    /// Mapped issue-ring memory, starting at the record.
    Ring(*const u8),
    /// The trace stream in DRAM (cursor in `Engine::trace`); `ready` is when the prefetcher has it.
    Trace { ready: u64 },
}

/// Position in a trace being executed.
struct TraceCursor {
    base: u64,
    page_size: u64,
    off: u64,
}

impl Engine<'_> {
    fn set_trace_off(&mut self, off: u64) {
        if let Some(t) = self.trace.as_mut() {
            t.off = off;
        }
    }

    /// Reads `out.len()` bytes of the trace stream at the cursor and advances it.
    fn read_trace_into(&mut self, out: &mut [u8]) -> Result<(), Fault> {
        let banks = self.sh.geometry().dram_banks as u64;
        let t = self.trace.as_mut().ok_or(Fault::new(FaultCode::BadRecord, 0))?;
        let mut done = 0usize;
        while done < out.len() {
            let page = t.off / t.page_size;
            let within = t.off % t.page_size;
            let n = ((t.page_size - within) as usize).min(out.len() - done);
            // Saturating: `base` is the record's; an offset past the bank is an ADDRESS fault, never a wrap.
            let at = DevAddr {
                mem: Memory::Dram,
                unit: (page % banks) as u16,
                offset: t.base.saturating_add((page / banks).saturating_mul(t.page_size)).saturating_add(within),
            };
            self.sh.mem.read(at, &mut out[done..done + n])?;
            done += n;
            t.off += n as u64;
        }
        Ok(())
    }
}

/// The device address of page `start_page + i` of a paged transfer (contract §4.2: page `p` in unit `p mod U` at
/// `base + ⌊p / U⌋ × page_stride`). The page number is not reduced modulo 2³², and the offset saturates instead of
/// wrapping, so a page beyond the memory is an `ADDRESS` fault when it is accessed, never an access somewhere else.
fn page_addr(sh: &Shared, x: &records::Paged, i: u32) -> DevAddr {
    let units = sh.geometry().units(x.mem).max(1) as u64;
    let page = x.start_page as u64 + i as u64;
    let offset = x.base.saturating_add((page / units).saturating_mul(x.page_stride as u64));
    DevAddr { mem: x.mem, unit: (page % units) as u16, offset }
}

fn bad_record(addr: u64) -> Stop {
    Stop::Fault(Fault::new(FaultCode::BadRecord, addr))
}

/// Publishes a device-written word of the queue's host region (contract §5) with release ordering, so the host,
/// which loads it with acquire, sees everything the device wrote before it.
fn put_word(a: &Active, off: usize, v: u32) -> Result<(), Fault> {
    let p = a.window.at(a.base + off as u64, 4)?;
    // SAFETY: the word is inside the mapped region and 4-byte aligned (the region is 4 KiB aligned and the contract's
    // offsets are multiples of 64); the host only reads it with atomic loads.
    unsafe { AtomicU32::from_ptr(p as *mut u32) }.store(v, Ordering::Release);
    Ok(())
}
