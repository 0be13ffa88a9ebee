//! The emulated device: a software implementation of `docs/device-interface.md`.
//!
//! It depends only on the hardware contract (`ttdrv-contract`); Cargo enforces that. The driver reaches it through
//! its emulated transport exactly as it would reach silicon through VFIO: 32-bit register accesses, DMA
//! mappings of memfd pages (which the device maps for itself) and interrupt eventfds. Each command queue runs on its
//! own thread, which spins briefly when idle and then parks, so an idle device costs no CPU.

pub mod config;
mod engine;
pub mod iommu;
mod kernels;
pub mod memory;
pub mod timing;

pub use config::EmuConfig;

use iommu::Iommu;
use memory::DeviceMemory;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use timing::{Clock, Pacer};
use ttdrv_contract::kernel::Geometry;
use ttdrv_contract::regs::{self, BarOffset, Caps, FaultCode, QueueStatus, Status, global, host, queue as qreg};
use ttdrv_contract::{CONTRACT_MAJOR, CONTRACT_MINOR, Iova, RECORD_ALIGN};

/// A device fault before it is attributed to a queue and record (contract §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Code.
    pub code: FaultCode,
    /// Address reported in `FAULT_ADDR`.
    pub addr: u64,
}

impl Fault {
    /// A fault with `code` at `addr`.
    pub fn new(code: FaultCode, addr: u64) -> Fault {
        Fault { code, addr }
    }
}

#[derive(Clone, Copy, Debug)]
struct FaultInfo {
    fault: Fault,
    queue: u32,
    tag: u32,
    opcode: u32,
}

/// Register state of one queue plus what its thread needs to be woken.
struct QueueShared {
    base: AtomicU64,
    issue_size: AtomicU32,
    compl_size: AtomicU32,
    ctrl: AtomicU32,
    /// Bumped on every enable; the thread re-initialises when it changes.
    enable_seq: AtomicU32,
    doorbell: AtomicU32,
    compl_rd: AtomicU32,
    irq_armed: AtomicBool,
    /// The vector fired since a host wait last consumed it ([`Emulator::irq_wait_begin`]).
    irq_pending: AtomicBool,
    /// Host threads blocked on the vector's eventfd: only then is raising it a system call.
    irq_waiters: AtomicU32,
    prof_base: AtomicU64,
    prof_slots: AtomicU32,
    status: AtomicU32,
    event: AtomicU32,
    /// Paced mode: (event id, modelled time it completed) of the queue's recent event records, oldest first, so a
    /// wait on another queue starts when *its* event completed, not a later one recorded meanwhile.
    event_times: Mutex<VecDeque<(u32, u64)>>,
    retired: AtomicU32,
    /// What the parked engine waits for (a set of [`Wake`] causes), 0 while it is awake: a state change wakes it
    /// only if it is one of them, so an idle queue sleeps through other queues' events and the host's draining.
    sleeping: AtomicU32,
    /// Times the engine parked, and times a waker unparked it ([`Emulator::wake_counts`]).
    parks: AtomicU64,
    unparks: AtomicU64,
    /// The CPU the last doorbell was written from (-1: unknown). Real hardware runs beside the host's cores; an
    /// engine thread that finds itself on the core of the thread that rang hands the core back instead of spinning
    /// on it (`Engine::idle_wait`), since that thread — likely waiting for this very queue — can run only then.
    doorbell_cpu: AtomicI32,
    thread: OnceLock<Thread>,
    /// (doorbell value, device time it was written), for the paced model.
    doorbell_log: Mutex<VecDeque<(u32, u64)>>,
    /// Last reset generation this queue's thread has acknowledged.
    ack_gen: AtomicU32,
}

/// Event records whose completion times a paced queue remembers for waits on other queues.
const EVENT_HISTORY: usize = 1024;

impl QueueShared {
    /// Paced: remembers that event `id` completed at modelled time `t`.
    fn note_event(&self, id: u32, t: u64) {
        let mut h = self.event_times.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() == EVENT_HISTORY {
            h.pop_front();
        }
        h.push_back((id, t));
    }

    /// Paced: the modelled time at which this queue's event slot reached `id` (0 if that is older than the
    /// history, i.e. long ago).
    fn event_time(&self, id: u32) -> u64 {
        let h = self.event_times.lock().unwrap_or_else(|e| e.into_inner());
        h.iter().find(|(e, _)| ttdrv_contract::seq_reached(*e, id)).map_or(0, |&(_, t)| t)
    }

    fn new() -> QueueShared {
        QueueShared {
            base: AtomicU64::new(0),
            issue_size: AtomicU32::new(0),
            compl_size: AtomicU32::new(0),
            ctrl: AtomicU32::new(0),
            enable_seq: AtomicU32::new(0),
            doorbell: AtomicU32::new(0),
            compl_rd: AtomicU32::new(0),
            irq_armed: AtomicBool::new(false),
            irq_pending: AtomicBool::new(false),
            irq_waiters: AtomicU32::new(0),
            prof_base: AtomicU64::new(0),
            prof_slots: AtomicU32::new(0),
            status: AtomicU32::new(0),
            event: AtomicU32::new(0),
            event_times: Mutex::new(VecDeque::new()),
            retired: AtomicU32::new(0),
            sleeping: AtomicU32::new(0),
            parks: AtomicU64::new(0),
            unparks: AtomicU64::new(0),
            doorbell_cpu: AtomicI32::new(-1),
            thread: OnceLock::new(),
            doorbell_log: Mutex::new(VecDeque::new()),
            ack_gen: AtomicU32::new(0),
        }
    }

    /// Wakes the queue's engine if it is parked waiting for `cause` (or for any of several causes, a [`Wake`] set).
    /// Costs the caller one futex wake at most once per park: the first waker takes the `sleeping` word, so the
    /// doorbells that follow while the engine is still waking up (a parked thread takes ~5-40 µs to run again on a
    /// loaded 2-core VM) cost a fence and a load each, not another system call (docs/architecture.md, Threads). A
    /// change the engine does not wait for (an event on another queue while this one waits for its doorbell, the
    /// host returning completion space nobody waits for) costs no wake at all: an unpark is a system call on the
    /// waker's path, and the engine would only park again.
    fn wake(&self, cause: u32) {
        // Dekker handshake with the engine's idle wait (store `sleeping`, fence, re-check the condition): the fence
        // orders the caller's preceding store (doorbell, pointer, event slot) before our access to `sleeping`, which
        // a release store alone does not (x86 reorders a store with a later load). Either the engine sees our
        // update before it sleeps, or we see it sleeping and unpark it. The cheap load first keeps a hot doorbell
        // (engine awake) free of a locked read-modify-write.
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::SeqCst) & cause != 0
            && self.sleeping.swap(0, Ordering::SeqCst) != 0
            && let Some(t) = self.thread.get()
        {
            self.unparks.fetch_add(1, Ordering::Relaxed);
            t.unpark();
        }
    }
}

/// What a parked engine waits for: the causes of [`QueueShared::wake`], as bits.
struct Wake;

impl Wake {
    /// The host rang the queue's doorbell (`Q_ISSUE_WR`).
    const DOORBELL: u32 = 1;
    /// The host enabled or disabled the queue (`Q_CTRL`).
    const CTRL: u32 = 2;
    /// The host returned completion-ring space (`Q_COMPL_RD`).
    const COMPL_SPACE: u32 = 4;
    /// Another queue published an event (an `EVENT_WAIT` may be satisfied).
    const EVENT: u32 = 8;
    /// Reset, shutdown or a fault: every wait ends on it.
    const STOP: u32 = 16;
    /// Any cause.
    const ALL: u32 = 31;
}

/// State shared by the register interface and the queue threads.
struct Shared {
    cfg: EmuConfig,
    mem: DeviceMemory,
    iommu: Iommu,
    queues: Vec<QueueShared>,
    status: AtomicU32,
    fault: Mutex<Option<FaultInfo>>,
    faulted: AtomicBool,
    scratch: AtomicU32,
    time_hi_latch: AtomicU32,
    reset_gen: AtomicU32,
    shutdown: AtomicBool,
    /// Panics a queue thread caught and reported as a fault (an emulator bug; see [`Emulator::engine_panics`]).
    panics: AtomicU64,
    clock: Clock,
    pacer: Pacer,
    irqs: Vec<OwnedFd>,
    /// Events counted for injected faults (`EmuConfig::inject`), over all queues since creation.
    injected: InjectCounts,
}

/// What the injected faults count (config.rs, `Inject`): each fires once, when its count reaches the option's.
#[derive(Default)]
struct InjectCounts {
    /// DMA accesses: records fetched, completion entries written.
    dma: AtomicU64,
    /// Completion entries written.
    entries: AtomicU64,
    /// Records retired.
    retired: AtomicU64,
}

impl Shared {
    fn geometry(&self) -> Geometry {
        *self.mem.geometry()
    }

    /// Raises vector `q`. Real hardware sends an MSI, which costs the device nothing; here the eventfd write is a
    /// system call on the engine thread (~0.3-1 µs, on the path of the queue's next record), so it is made only when
    /// a host thread is blocked on the eventfd. Otherwise the raise is left pending for the next wait, which then
    /// returns at once (`Emulator::irq_wait_begin`), as a poll of the signalled eventfd would.
    fn raise_irq(&self, q: usize) {
        let Some(qs) = self.queues.get(q) else {
            return;
        };
        qs.irq_pending.store(true, Ordering::SeqCst);
        // Dekker handshake with `irq_wait_begin` (count the waiter, then look for a pending raise): either the
        // waiter sees the pending raise, or we see the waiter and signal its eventfd.
        std::sync::atomic::fence(Ordering::SeqCst);
        if qs.irq_waiters.load(Ordering::SeqCst) == 0 {
            return;
        }
        if let Some(fd) = self.irqs.get(q) {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a local to our own eventfd; an error (counter overflow) is harmless.
            unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
        }
    }

    /// Raises queue `q`'s vector if the host armed it (contract §6).
    fn progress_irq(&self, q: usize) {
        let qs = &self.queues[q];
        // Orders the device-written word just published before the load of the arm flag; pairs with the fence
        // after the arm store (the host re-checks the word after arming).
        std::sync::atomic::fence(Ordering::SeqCst);
        if qs.irq_armed.load(Ordering::Acquire) && qs.irq_armed.swap(false, Ordering::AcqRel) {
            self.raise_irq(q);
        }
    }

    fn record_fault(&self, info: FaultInfo) {
        {
            let mut f = self.fault.lock().unwrap_or_else(|e| e.into_inner());
            if f.is_none() {
                *f = Some(info);
            }
        }
        self.faulted.store(true, Ordering::Release);
        self.status.fetch_or(Status::FAULT.bits(), Ordering::AcqRel);
        for q in 0..self.queues.len() {
            self.progress_irq(q);
            self.queues[q].wake(Wake::STOP);
        }
    }

    /// Writes zero to the device-written words of the host region at `base` (contract §3, §5), as the register
    /// write that enables a queue returns: the host may read them at once, and must not see the previous enable's
    /// values. A region the IOMMU cannot reach is left alone; the queue faults when it starts.
    fn zero_host_words(&self, base: u64) {
        if base % 4096 != 0 {
            return;
        }
        let Ok(w) = self.iommu.translate(base, host::LAST_TAG as u64 + 4) else {
            return;
        };
        for off in [host::ISSUE_RD, host::COMPL_WR, host::EVENT_DONE, host::RETIRED, host::LAST_TAG] {
            if let Ok(p) = w.at(base + off as u64, 4) {
                // SAFETY: the word is inside the mapping and 4-byte aligned (the region is 4 KiB aligned, checked
                // above, and the contract's offsets are multiples of 64); the host reads it only with atomic loads.
                unsafe { AtomicU32::from_ptr(p as *mut u32) }.store(0, Ordering::Release);
            }
        }
    }

    fn wake_all(&self) {
        for q in &self.queues {
            q.wake(Wake::ALL);
        }
    }

    fn reset(&self) {
        self.status.store(Status::RESETTING.bits(), Ordering::Release);
        for q in &self.queues {
            q.ctrl.store(0, Ordering::Release);
            q.base.store(0, Ordering::Relaxed);
            q.issue_size.store(0, Ordering::Relaxed);
            q.compl_size.store(0, Ordering::Relaxed);
            q.prof_base.store(0, Ordering::Relaxed);
            q.prof_slots.store(0, Ordering::Relaxed);
            q.event.store(0, Ordering::Relaxed);
            q.event_times.lock().unwrap_or_else(|e| e.into_inner()).clear();
            q.retired.store(0, Ordering::Relaxed);
            q.doorbell.store(0, Ordering::Relaxed);
            q.compl_rd.store(0, Ordering::Relaxed);
            q.status.store(0, Ordering::Relaxed);
            q.doorbell_log.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        *self.fault.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.faulted.store(false, Ordering::Release);
        self.clock.reset();
        self.pacer.reset();
        self.reset_gen.fetch_add(1, Ordering::AcqRel);
        self.wake_all();
    }

    fn status(&self) -> u32 {
        let s = self.status.load(Ordering::Acquire);
        if s & Status::RESETTING.bits() != 0 {
            // Ready once every queue thread has dropped its pre-reset state.
            let gen_now = self.reset_gen.load(Ordering::Acquire);
            if self.queues.iter().all(|q| q.ack_gen.load(Ordering::Acquire) == gen_now) {
                let _ = self.status.compare_exchange(s, Status::READY.bits(), Ordering::AcqRel, Ordering::Acquire);
                return self.status.load(Ordering::Acquire);
            }
        }
        s
    }
}

/// An emulated device: registers, memories, IOMMU and one engine thread per command queue.
pub struct Emulator {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Emulator {
    /// Builds the device described by `cfg` and starts its queue threads.
    pub fn new(cfg: EmuConfig) -> Result<Emulator, String> {
        cfg.validate()?;
        let geo = Geometry {
            dram_banks: cfg.dram_banks,
            grid_x: cfg.grid_x,
            grid_y: cfg.grid_y,
            bank_size: cfg.bank_size,
            l1_size: cfg.l1_size as u64,
        };
        let mem = DeviceMemory::new(geo).map_err(|e| format!("cannot reserve emulated device memory: {e}"))?;
        let mut irqs = Vec::new();
        if cfg.msi {
            for _ in 0..cfg.queues {
                // SAFETY: plain eventfd creation; checked below.
                let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
                if fd < 0 {
                    return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
                }
                // SAFETY: fresh descriptor we own.
                irqs.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
        let shared = Arc::new(Shared {
            queues: (0..cfg.queues).map(|_| QueueShared::new()).collect(),
            cfg,
            mem,
            iommu: Iommu::default(),
            status: AtomicU32::new(Status::READY.bits()),
            fault: Mutex::new(None),
            faulted: AtomicBool::new(false),
            scratch: AtomicU32::new(0),
            time_hi_latch: AtomicU32::new(0),
            reset_gen: AtomicU32::new(0),
            shutdown: AtomicBool::new(false),
            panics: AtomicU64::new(0),
            clock: Clock::default(),
            pacer: Pacer::default(),
            irqs,
            injected: InjectCounts::default(),
        });
        let mut threads = Vec::new();
        for q in 0..shared.queues.len() {
            let sh = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ttdrv-emu-q{q}"))
                .spawn(move || engine::run(sh, q))
                .map_err(|e| format!("cannot start emulator thread: {e}"))?;
            let _ = shared.queues[q].thread.set(handle.thread().clone());
            threads.push(handle);
        }
        Ok(Emulator { shared, threads: Mutex::new(threads) })
    }

    /// The configuration the device was built with.
    pub fn config(&self) -> &EmuConfig {
        &self.shared.cfg
    }

    /// Reads a BAR0 register (contract §2, §3). Unknown offsets read as 0.
    pub fn read32(&self, off: BarOffset) -> u32 {
        let sh = &self.shared;
        let c = &sh.cfg;
        if let Some((q, reg)) = regs::decode_queue_reg(off) {
            let Some(qs) = sh.queues.get(q as usize) else {
                return 0;
            };
            return match reg {
                qreg::BASE_LO => qs.base.load(Ordering::Acquire) as u32,
                qreg::BASE_HI => (qs.base.load(Ordering::Acquire) >> 32) as u32,
                qreg::ISSUE_SIZE => qs.issue_size.load(Ordering::Acquire),
                qreg::COMPL_SIZE => qs.compl_size.load(Ordering::Acquire),
                qreg::CTRL => qs.ctrl.load(Ordering::Acquire),
                qreg::PROF_BASE_LO => qs.prof_base.load(Ordering::Acquire) as u32,
                qreg::PROF_BASE_HI => (qs.prof_base.load(Ordering::Acquire) >> 32) as u32,
                qreg::PROF_SLOTS => qs.prof_slots.load(Ordering::Acquire),
                qreg::STATUS => {
                    let mut s = qs.status.load(Ordering::Acquire);
                    if qs.ctrl.load(Ordering::Acquire) & 1 != 0 {
                        s |= QueueStatus::ENABLED.bits();
                    }
                    s
                }
                qreg::EVENT => qs.event.load(Ordering::Acquire),
                qreg::RETIRED => qs.retired.load(Ordering::Acquire),
                _ => 0,
            };
        }
        let fault = || *sh.fault.lock().unwrap_or_else(|e| e.into_inner());
        match off {
            global::ID => regs::ID_VALUE,
            global::VERSION => (CONTRACT_MAJOR as u32) << 16 | CONTRACT_MINOR as u32,
            global::CAPS => {
                let mut caps = Caps::PROFILING | Caps::TRACE;
                if c.msi {
                    caps |= Caps::MSI;
                }
                if c.pace.is_some() {
                    caps |= Caps::MODELLED_TIME;
                }
                caps.bits()
            }
            global::NUM_QUEUES => c.queues as u32,
            global::DRAM_BANKS => c.dram_banks,
            global::DRAM_BANK_SIZE_LO => c.bank_size as u32,
            global::DRAM_BANK_SIZE_HI => (c.bank_size >> 32) as u32,
            global::DRAM_ALIGN => c.dram_align,
            global::GRID => c.grid_x | c.grid_y << 16,
            global::L1_SIZE => c.l1_size,
            global::L1_ALIGN => c.l1_align,
            global::L1_BASE => c.l1_base,
            global::RECORD_ALIGN => RECORD_ALIGN as u32,
            global::DMA_BITS => c.dma_bits,
            global::KERNELS => c.kernels,
            global::STATUS => sh.status(),
            global::FAULT_CODE => fault().map_or(0, |f| f.fault.code as u32),
            global::FAULT_ADDR_LO => fault().map_or(0, |f| f.fault.addr as u32),
            global::FAULT_ADDR_HI => fault().map_or(0, |f| (f.fault.addr >> 32) as u32),
            global::FAULT_QUEUE => fault().map_or(0, |f| f.queue),
            global::FAULT_TAG => fault().map_or(0, |f| f.tag),
            global::FAULT_OPCODE => fault().map_or(0, |f| f.opcode),
            global::TIME_LO => {
                let t = sh.clock.now();
                sh.time_hi_latch.store((t >> 32) as u32, Ordering::Relaxed);
                t as u32
            }
            global::TIME_HI => sh.time_hi_latch.load(Ordering::Relaxed),
            global::SCRATCH => sh.scratch.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Writes a BAR0 register (contract §2, §3). Writes to read-only or unknown offsets are ignored.
    pub fn write32(&self, off: BarOffset, val: u32) {
        let sh = &self.shared;
        if let Some((q, reg)) = regs::decode_queue_reg(off) {
            let Some(qs) = sh.queues.get(q as usize) else {
                return;
            };
            let set_lo = |a: &AtomicU64| {
                let old = a.load(Ordering::Acquire);
                a.store((old & !0xFFFF_FFFF) | val as u64, Ordering::Release);
            };
            let set_hi = |a: &AtomicU64| {
                let old = a.load(Ordering::Acquire);
                a.store((old & 0xFFFF_FFFF) | (val as u64) << 32, Ordering::Release);
            };
            match reg {
                qreg::BASE_LO => set_lo(&qs.base),
                qreg::BASE_HI => set_hi(&qs.base),
                qreg::ISSUE_SIZE => qs.issue_size.store(val, Ordering::Release),
                qreg::COMPL_SIZE => qs.compl_size.store(val, Ordering::Release),
                qreg::CTRL => {
                    // Every transition bumps `enable_seq`; the queue thread re-checks it after loading a doorbell,
                    // so a disable → enable it did not see in between can never pair its old pointers with the new
                    // doorbell values.
                    if val & 1 == 1 {
                        if qs.ctrl.load(Ordering::Acquire) & 1 == 0 {
                            // The transition to enabled zeroes the doorbell copies and the event slot (contract §3)
                            // before the queue can run: nothing rung before the disable is executed again, and the
                            // first doorbell after this write is the new enable's. The queue thread zeroes its
                            // internal pointers and the device-written words when it sees `enable_seq` change.
                            qs.doorbell.store(0, Ordering::Release);
                            qs.compl_rd.store(0, Ordering::Release);
                            qs.doorbell_log.lock().unwrap_or_else(|e| e.into_inner()).clear();
                            qs.event.store(0, Ordering::Release);
                            qs.event_times.lock().unwrap_or_else(|e| e.into_inner()).clear();
                            sh.zero_host_words(qs.base.load(Ordering::Acquire));
                            qs.enable_seq.fetch_add(1, Ordering::AcqRel);
                        }
                        qs.ctrl.store(1, Ordering::Release);
                    } else if qs.ctrl.swap(0, Ordering::AcqRel) & 1 == 1 {
                        qs.enable_seq.fetch_add(1, Ordering::AcqRel);
                    }
                    qs.wake(Wake::CTRL);
                }
                qreg::ISSUE_WR => {
                    if sh.cfg.pace.is_some() {
                        qs.doorbell_log.lock().unwrap_or_else(|e| e.into_inner()).push_back((val, sh.clock.now()));
                    }
                    // SAFETY: sched_getcpu has no preconditions (glibc reads it from the thread's rseq area).
                    qs.doorbell_cpu.store(unsafe { libc::sched_getcpu() }, Ordering::Relaxed);
                    qs.doorbell.store(val, Ordering::Release);
                    qs.wake(Wake::DOORBELL);
                }
                qreg::COMPL_RD => {
                    qs.compl_rd.store(val, Ordering::Release);
                    qs.wake(Wake::COMPL_SPACE);
                }
                qreg::IRQ_ARM if val & 1 == 1 => {
                    qs.irq_armed.store(true, Ordering::Release);
                    // The host re-reads the word it waits for after this write returns (contract §6); the fence
                    // keeps that load from passing the arm.
                    std::sync::atomic::fence(Ordering::SeqCst);
                    // A fault stays pending: an arm after it fires at once.
                    if sh.faulted.load(Ordering::Acquire) {
                        sh.progress_irq(q as usize);
                    }
                }
                qreg::PROF_BASE_LO => set_lo(&qs.prof_base),
                qreg::PROF_BASE_HI => set_hi(&qs.prof_base),
                qreg::PROF_SLOTS => qs.prof_slots.store(val, Ordering::Release),
                _ => {}
            }
            return;
        }
        match off {
            global::RESET if val == regs::RESET_MAGIC => sh.reset(),
            global::SCRATCH => sh.scratch.store(val, Ordering::Relaxed),
            _ => {}
        }
    }

    /// Maps `len` bytes of `fd` at `fd_offset` at `iova` in the device's IOMMU.
    pub fn dma_map(&self, fd: RawFd, fd_offset: u64, len: u64, iova: Iova) -> Result<(), String> {
        if iova.0.checked_add(len).is_none_or(|e| self.shared.cfg.dma_bits < 64 && e > 1u64 << self.shared.cfg.dma_bits)
        {
            return Err(format!("IOVA range ends beyond the device's {}-bit DMA mask", self.shared.cfg.dma_bits));
        }
        self.shared.iommu.map(fd, fd_offset, len, iova)
    }

    /// Maps `len` bytes of this process's memory at `vaddr` at `iova` in the device's IOMMU: memory with no file
    /// behind it (a caller's own allocation), which the in-process device reaches by address, as an IOMMU reaches
    /// pinned user pages.
    ///
    /// # Safety
    /// The memory must stay allocated until [`Emulator::dma_unmap`] of this mapping returns (which waits until no
    /// engine is using it); the device may read and write it until then.
    pub unsafe fn dma_map_user(&self, vaddr: *mut u8, len: u64, iova: Iova) -> Result<(), String> {
        if iova.0.checked_add(len).is_none_or(|e| self.shared.cfg.dma_bits < 64 && e > 1u64 << self.shared.cfg.dma_bits)
        {
            return Err(format!("IOVA range ends beyond the device's {}-bit DMA mask", self.shared.cfg.dma_bits));
        }
        // SAFETY: forwarded contract.
        unsafe { self.shared.iommu.map_user(vaddr, len, iova) }
    }

    /// Removes an IOMMU mapping.
    pub fn dma_unmap(&self, iova: Iova, len: u64) -> Result<(), String> {
        self.shared.iommu.unmap(iova, len)
    }

    /// Number of live IOMMU mappings.
    pub fn mappings(&self) -> usize {
        self.shared.iommu.len()
    }

    /// A host thread is about to block on vector `v`'s eventfd ([`Emulator::irq_fd`]): true if the vector fired
    /// since the last wait consumed it — the caller then does not block (and calls [`Emulator::irq_wait_end`] at
    /// once). Each call must be paired with `irq_wait_end`. A thread that polls the eventfd without this pair may
    /// miss raises made while no one was registered.
    pub fn irq_wait_begin(&self, v: u32) -> bool {
        let Some(qs) = self.shared.queues.get(v as usize) else {
            return false;
        };
        qs.irq_waiters.fetch_add(1, Ordering::SeqCst);
        qs.irq_pending.swap(false, Ordering::SeqCst)
    }

    /// The wait that [`Emulator::irq_wait_begin`] began is over; `fired`: it consumed a raise from the eventfd
    /// (so the pending flag the same raise set is cleared too; a raise after it only costs a spurious wake-up).
    pub fn irq_wait_end(&self, v: u32, fired: bool) {
        if let Some(qs) = self.shared.queues.get(v as usize) {
            if fired {
                qs.irq_pending.store(false, Ordering::SeqCst);
            }
            qs.irq_waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// The eventfd of interrupt vector `v`, if wired.
    pub fn irq_fd(&self, v: u32) -> Option<RawFd> {
        self.shared.irqs.get(v as usize).map(|f| f.as_raw_fd())
    }

    /// How many times a queue thread caught a panic while executing a record and reported it as a `BAD_RECORD`
    /// fault instead. No record bytes may cause one, so this is 0 unless the emulator has a bug; tests and the fuzz
    /// targets check it.
    pub fn engine_panics(&self) -> u64 {
        self.shared.panics.load(Ordering::Relaxed)
    }

    /// (parks, unparks) of queue `q`'s engine since the device was created: how often it went to sleep, and how
    /// often a doorbell or another state change woke it. A woken engine costs its waker one system call, and
    /// `unparks <= parks` always (at most one wake per park, however many doorbells ring meanwhile); an idle
    /// engine parks about once a second (the safety-net timeout), never polls. `None` for a queue the device lacks.
    pub fn wake_counts(&self, q: usize) -> Option<(u64, u64)> {
        let qs = self.shared.queues.get(q)?;
        Some((qs.parks.load(Ordering::Relaxed), qs.unparks.load(Ordering::Relaxed)))
    }

    /// Function-level reset (same effect as the `RESET` register).
    pub fn reset(&self) {
        self.shared.reset();
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.wake_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}
