//! The device: open/close/reset, per-queue state, waits, and the objects built on them (buffers, events,
//! programs, traces).

pub mod alloc;
pub mod buffer;
pub mod event;
pub mod model;
pub mod ops;
mod params;
pub mod program;
mod queue;
pub mod trace;
mod transfer;
mod wait;

pub use buffer::{Buffer, BufferSpec, BufferType, MemoryConfig, ShardSpec};
pub use event::Event;
pub use params::{DeviceInfo, DeviceParams, HUGEPAGE_BYTES, REGISTERED_HOST_ALLOWANCE, memlock_budget};
pub use transfer::PendingRead;

use crate::dma::{IovaAllocator, LockPolicy, MemoryOptions};
use crate::error::{Error, Result};
use crate::queue::{Completer, Issuer, RingSizes, Rings};
use crate::transport::{self, Transport};
use alloc::{Direction, Owner, RangeAllocator};
use queue::{QueueSlot, QueueState};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use ttdrv_contract::CONTRACT_MAJOR;
use ttdrv_contract::regs::{self, Caps, Status, global};

/// Reserved at the bottom of every DRAM bank: keeps offset 0 (which looks like a null address) out of use.
const DRAM_RESERVED_LOW: u64 = 0x1000;
/// Bytes per bank reserved for kernel images.
const KERNEL_REGION_PER_BANK: u64 = 256 << 10;
/// Page size of trace buffers.
pub(crate) const TRACE_PAGE: u64 = 4096;

/// Bumped in a forked child (pthread_atfork), so a device opened by the parent refuses to work there.
static FORK_GEN: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

extern "C" fn on_fork_child() {
    FORK_GEN.fetch_add(1, Ordering::SeqCst);
}

fn fork_gen() -> u32 {
    ATFORK.call_once(|| {
        // SAFETY: registering a child handler that only touches an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(on_fork_child)) };
    });
    FORK_GEN.load(Ordering::Relaxed)
}

/// Device memory bookkeeping, under one lock.
pub(crate) struct Memories {
    pub dram: RangeAllocator,
    pub l1: RangeAllocator,
    pub l1_small: RangeAllocator,
    /// The reserved trace region (empty when none or on demand).
    pub trace: RangeAllocator,
    /// Bump pointer into the kernel-image region of bank 0.
    pub kernel_next: u64,
    pub kernel_end: u64,
    /// What each capture in progress knows about the ranges it touches (trace.rs), by trace id.
    pub captures: std::collections::BTreeMap<u32, trace::Ledger>,
    /// The spec of every live buffer, by id: a replay checks its external ranges are held by the buffers it was
    /// captured with (trace.rs).
    pub specs: std::collections::HashMap<u64, BufferSpec>,
}

impl Memories {
    /// The allocator for a buffer type.
    pub fn for_type(&mut self, t: BufferType) -> &mut RangeAllocator {
        match t {
            BufferType::Dram => &mut self.dram,
            BufferType::L1 => &mut self.l1,
            BufferType::L1Small => &mut self.l1_small,
        }
    }
}

pub(crate) struct DeviceInner {
    pub info: DeviceInfo,
    pub params: DeviceParams,
    /// The bus; `None` once closed. Hot paths use the clone each queue holds.
    transport: Mutex<Option<Arc<dyn Transport>>>,
    pub queues: Vec<QueueSlot>,
    pub mem: Mutex<Memories>,
    pub closed: AtomicBool,
    /// Device resets so far; objects that live in device memory (traces, kernel images) are tied to one epoch.
    pub epoch: AtomicU32,
    fork_gen: u32,
    next_buffer_id: AtomicU64,
    /// Trace region bytes per bank (0 when none).
    pub trace_per_bank: u64,
    /// Live `Device` handles; the last one to drop closes the device.
    handles: AtomicU32,
    pub programs: Mutex<program::ProgramCache>,
    pub traces: Mutex<trace::TraceTable>,
    /// Spans of host calls and device records, when profiling.
    pub profiler: Option<crate::profile::Profiler>,
}

/// An open device. Cloning gives another handle to the same device; it closes when [`Device::close`] is called
/// or the last `Device` handle is dropped. Buffers and events keep only bookkeeping alive: once the device is
/// closed, calls on them fail with a "closed" error.
pub struct Device {
    pub(crate) inner: Arc<DeviceInner>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("name", &self.inner.info.name).finish()
    }
}

fn read_info(t: &dyn Transport) -> Result<DeviceInfo> {
    let id = t.read32(global::ID);
    if id != regs::ID_VALUE {
        return Err(Error::NotFound {
            device: t.name().to_string(),
            reason: format!(
                "{} is not a ttdrv device: its ID register reads {id:#010x}, not {:#010x}; `ttdrv list` shows the \
                 ttdrv devices of this host",
                t.name(),
                regs::ID_VALUE
            ),
        });
    }
    let v = t.read32(global::VERSION);
    let (major, minor) = ((v >> 16) as u16, v as u16);
    if major != CONTRACT_MAJOR {
        return Err(Error::ContractVersion { device: t.name().to_string(), major, minor });
    }
    let grid = t.read32(global::GRID);
    // Checked as read, before it is narrowed to the u16 DeviceInfo keeps.
    let num_queues = t.read32(global::NUM_QUEUES);
    let info = DeviceInfo {
        name: t.name().to_string(),
        version_major: major,
        version_minor: minor,
        caps: Caps::from_bits_truncate(t.read32(global::CAPS)),
        num_queues: num_queues.min(u16::MAX as u32) as u16,
        dram_banks: t.read32(global::DRAM_BANKS),
        bank_size: t.read32(global::DRAM_BANK_SIZE_LO) as u64 | (t.read32(global::DRAM_BANK_SIZE_HI) as u64) << 32,
        dram_align: t.read32(global::DRAM_ALIGN),
        grid_x: grid & 0xFF,
        grid_y: (grid >> 16) & 0xFF,
        l1_size: t.read32(global::L1_SIZE),
        l1_align: t.read32(global::L1_ALIGN),
        l1_base: t.read32(global::L1_BASE),
        dma_bits: t.read32(global::DMA_BITS),
        kernels: t.read32(global::KERNELS),
    };
    let max_queues = ttdrv_contract::MAX_QUEUES as u32;
    let checks: [(&'static str, u32, bool, &'static str); 6] = [
        ("NUM_QUEUES", num_queues, (1..=max_queues).contains(&num_queues), "it must be 1 to 16"),
        ("DRAM_BANKS", info.dram_banks, info.dram_banks >= 1, "a device has at least one DRAM bank"),
        ("DRAM_ALIGN", info.dram_align, info.dram_align.is_power_of_two(), "it must be a power of two"),
        ("L1_ALIGN", info.l1_align, info.l1_align.is_power_of_two(), "it must be a power of two"),
        ("GRID", grid, info.grid_x >= 1 && info.grid_y >= 1, "both dimensions must be at least 1"),
        ("L1_BASE", info.l1_base, info.l1_base < info.l1_size, "it must be below L1_SIZE"),
    ];
    if let Some(&(register, value, _, rule)) = checks.iter().find(|c| !c.2) {
        return Err(Error::BadRegister { device: t.name().to_string(), register, value, rule });
    }
    Ok(info)
}

/// Waits for `STATUS.READY` after a reset (contract §7.2: within 100 ms).
fn wait_ready(t: &dyn Transport) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let s = Status::from_bits_truncate(t.read32(global::STATUS));
        if s.contains(Status::READY) && !s.contains(Status::RESETTING) {
            return Ok(());
        }
        let after = t0.elapsed();
        if after > Duration::from_secs(1) {
            return Err(Error::NotReady { device: t.name().to_string(), status: s.bits(), after });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Device {
    /// Opens the device named by `selector` (`auto`, `emu[:options]`, `vfio:DDDD:BB:DD.F`).
    pub fn open(selector: &str, params: &DeviceParams) -> Result<Device> {
        let t = transport::open(selector, params.pinned_bytes())?;
        Device::open_transport(t, params)
    }

    /// Opens a device on an existing transport (tests keep a handle to inject faults).
    pub fn open_transport(t: Arc<dyn Transport>, params: &DeviceParams) -> Result<Device> {
        let info = read_info(t.as_ref())?;
        let p = params;
        if p.num_command_queues == 0 || p.num_command_queues > info.num_queues {
            return Err(Error::InvalidParameter {
                parameter: "num_command_queues",
                value: p.num_command_queues as u64,
                reason: format!(
                    "device {} has {} command queue(s); ask for 1 to {}",
                    info.name, info.num_queues, info.num_queues
                ),
            });
        }
        let profile_path =
            std::env::var_os(crate::profile::PROFILE_ENV).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
        let profiling = p.profiling || profile_path.is_some();
        let sizes = RingSizes {
            issue: p.issue_ring_size,
            completion: p.completion_ring_size,
            profile_slots: if profiling { crate::profile::PROFILE_SLOTS } else { 0 },
        };
        sizes.validate().map_err(|e| Error::InvalidParameter {
            parameter: e.parameter,
            value: e.value as u64,
            reason: format!("the size {}", e.rule),
        })?;
        let usable_l1 = (info.l1_size - info.l1_base) as u64;
        if p.l1_small_size as u64 > usable_l1 / 2 {
            return Err(Error::InvalidParameter {
                parameter: "l1_small_size",
                value: p.l1_small_size as u64,
                reason: format!(
                    "bytes per core is more than half of the {usable_l1} usable L1 bytes per core on {}; ask for at \
                     most {}",
                    info.name,
                    usable_l1 / 2
                ),
            });
        }
        let banks = info.dram_banks as u64;
        let trace_per_bank =
            if p.trace_buffers_on_demand { 0 } else { p.trace_region_size / banks / TRACE_PAGE * TRACE_PAGE };
        let dram_top = info.bank_size.saturating_sub(trace_per_bank + KERNEL_REGION_PER_BANK);
        if dram_top <= DRAM_RESERVED_LOW + (1 << 20) {
            return Err(Error::InvalidParameter {
                parameter: "trace_region_size",
                value: p.trace_region_size,
                reason: format!(
                    "leaves no ordinary DRAM on {} ({} bytes in {} banks, of which the driver keeps {} per bank); \
                     reserve less",
                    info.name,
                    info.dram_size(),
                    banks,
                    DRAM_RESERVED_LOW + (1 << 20) + KERNEL_REGION_PER_BANK
                ),
            });
        }

        // Put the device in a known state: a previous user may have left it faulted or running.
        let s = Status::from_bits_truncate(t.read32(global::STATUS));
        if s.contains(Status::FAULT)
            || !s.contains(Status::READY)
            || (0..info.num_queues).any(|q| t.read32(regs::queue_reg(q, regs::queue::CTRL)) & 1 != 0)
        {
            t.write32(global::RESET, regs::RESET_MAGIC);
            wait_ready(t.as_ref())?;
        }

        let mem_opts = MemoryOptions {
            hugepages: p.hugepages,
            numa_node: t.numa_node(),
            lock: if t.needs_pinned_memory() { LockPolicy::Required } else { LockPolicy::BestEffort },
            hugepages_wanted: Some(p.hugepages_needed()),
        };
        let iovas = Arc::new(Mutex::new(IovaAllocator::new(&t.iova_ranges(), info.dma_bits)));
        let mut queues = Vec::new();
        for q in 0..p.num_command_queues {
            let rings = Arc::new(Rings::new(q, &t, &iovas, sizes, &mem_opts)?);
            rings.enable(t.as_ref());
            queues.push(QueueSlot::new(q, rings, t.clone(), &info.name));
        }
        let l1_lo = info.l1_base as u64;
        let mem = Memories {
            dram: RangeAllocator::new(DRAM_RESERVED_LOW, dram_top),
            l1: RangeAllocator::new(l1_lo + p.l1_small_size as u64, info.l1_size as u64),
            l1_small: RangeAllocator::new(l1_lo, l1_lo + p.l1_small_size as u64),
            trace: RangeAllocator::new(info.bank_size - trace_per_bank, info.bank_size),
            kernel_next: dram_top,
            kernel_end: dram_top + KERNEL_REGION_PER_BANK,
            captures: Default::default(),
            specs: Default::default(),
        };
        let inner = Arc::new(DeviceInner {
            info,
            params: p.clone(),
            transport: Mutex::new(Some(t)),
            queues,
            mem: Mutex::new(mem),
            closed: AtomicBool::new(false),
            epoch: AtomicU32::new(0),
            fork_gen: fork_gen(),
            next_buffer_id: AtomicU64::new(1),
            trace_per_bank,
            handles: AtomicU32::new(1),
            programs: Mutex::new(program::ProgramCache::default()),
            traces: Mutex::new(trace::TraceTable::default()),
            profiler: profiling.then(|| crate::profile::Profiler::new(p.num_command_queues, profile_path)),
        });
        inner.correlate_clocks();
        Ok(Device { inner })
    }

    /// Fails if the device is closed or was opened by the parent of this (forked) process; the checks every call
    /// makes first, for callers (such as the C ABI) that want them before doing work of their own.
    pub fn check_usable(&self) -> Result<()> {
        self.inner.check_usable()
    }

    /// What the device reports.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// The parameters it was opened with.
    pub fn params(&self) -> &DeviceParams {
        &self.inner.params
    }

    /// Bytes of the reserved trace region, device total (0 when none or on demand).
    pub fn trace_region_bytes(&self) -> u64 {
        self.inner.trace_per_bank * self.inner.info.dram_banks as u64
    }

    /// Command queues opened.
    pub fn num_queues(&self) -> u16 {
        self.inner.queues.len() as u16
    }

    /// Waits until every command queue has finished all work enqueued so far (and delivered its reads).
    pub fn synchronize(&self) -> Result<()> {
        self.inner.check_usable()?;
        for q in 0..self.num_queues() {
            let st = self.inner.queues[q as usize].state.lock().unwrap_or_else(|e| e.into_inner());
            st.forbid_capture("device synchronize")?;
        }
        for q in 0..self.num_queues() {
            self.finish(q)?;
        }
        Ok(())
    }

    /// Waits until queue `cq` has finished all work enqueued on it so far, including delivering read data.
    pub fn finish(&self, cq: u16) -> Result<()> {
        let _s = self.inner.span("finish", "wait");
        let ev = self.inner.record_internal(cq, "finish")?;
        self.inner.wait_event(&ev, self.inner.params.timeout, "finish")?;
        self.inner.harvest_profile(cq);
        Ok(())
    }

    /// The profiler, when the device was opened with profiling (or `TTDRV_PROFILE` set).
    pub fn profiler(&self) -> Option<&crate::profile::Profiler> {
        self.inner.profiler.as_ref()
    }

    /// Every span collected so far (device spans of retired records included), sorted by start.
    pub fn profile_spans(&self) -> Vec<crate::profile::Span> {
        for q in 0..self.num_queues() {
            self.inner.harvest_profile(q);
        }
        self.inner.profiler.as_ref().map_or_else(Vec::new, |p| p.spans())
    }

    /// Resets the device after a fault (or at any time): pending work is dropped, reads in flight are never
    /// delivered, buffer contents, kernel images and traces are lost (buffers keep their addresses). The queues
    /// are re-initialised and the device is usable again.
    pub fn reset(&self) -> Result<()> {
        self.inner.reset()
    }

    /// Drains every queue (up to the timeout, or 5 s if shorter), then releases the device. Work that does not
    /// finish in time is abandoned by resetting the device first. Later calls on any object of this device fail
    /// with a "closed" error.
    pub fn close(&self) -> Result<()> {
        self.inner.close()
    }

    /// Device status register (diagnostics).
    pub fn status(&self) -> Result<Status> {
        let t = self.inner.transport()?;
        Ok(Status::from_bits_truncate(t.read32(global::STATUS)))
    }

    /// The transport (tests inject faults through it).
    pub fn transport(&self) -> Result<Arc<dyn Transport>> {
        self.inner.transport()
    }

    /// Bytes free in the largest block of a memory, per bank or core (diagnostics and tests).
    pub fn largest_free(&self, t: BufferType) -> u64 {
        let mut m = self.inner.mem.lock().unwrap_or_else(|e| e.into_inner());
        m.for_type(t).failure(0).largest
    }

    /// Host-side state of queue `cq`, as printed in hang reports.
    pub fn queue_report(&self, cq: u16) -> Result<String> {
        self.inner.check_queue(cq)?;
        Ok(self.inner.queue_report(cq, None))
    }

    /// The host's free-running write pointer into queue `cq`'s issue ring: bytes of records written so far (tests
    /// measure what one call puts on the ring, e.g. that a trace replay is one 64-byte record).
    #[doc(hidden)]
    pub fn debug_issue_wr(&self, cq: u16) -> Result<u32> {
        let st = self.inner.lock_queue(cq)?;
        st.issuer.as_ref().map(|i| i.wr()).ok_or_else(|| self.inner.closed_error())
    }
}

impl DeviceInner {
    /// A host span for the calling thread, when profiling.
    #[inline]
    pub(crate) fn span(&self, name: &'static str, cat: &'static str) -> Option<crate::profile::HostSpan<'_>> {
        self.profiler.as_ref().map(|p| p.host_span(name, cat))
    }

    /// Reads device timestamps of queue `cq`'s retired records into the profiler.
    pub(crate) fn harvest_profile(&self, cq: u16) {
        if let Some(p) = &self.profiler {
            let c = self.queues[cq as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = c.as_ref() {
                p.harvest(cq, c.rings());
            }
        }
    }

    /// Maps the device clock onto the profiler's (at open and after a reset).
    fn correlate_clocks(&self) {
        if let (Some(p), Ok(t)) = (&self.profiler, self.transport()) {
            let lo = t.read32(global::TIME_LO) as u64;
            let hi = t.read32(global::TIME_HI) as u64;
            p.correlate(hi << 32 | lo);
        }
    }

    pub(crate) fn transport(&self) -> Result<Arc<dyn Transport>> {
        self.transport.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(|| self.closed_error())
    }

    /// The error of a call on the closed device.
    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed { device: self.info.name.clone() }
    }

    /// Fails if the device is closed or this is a forked child.
    #[inline]
    pub(crate) fn check_usable(&self) -> Result<()> {
        if FORK_GEN.load(Ordering::Relaxed) != self.fork_gen {
            return Err(Error::Forked { device: self.info.name.clone(), released: false });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        Ok(())
    }

    /// True in a forked child of the process that opened the device.
    pub(crate) fn in_forked_child(&self) -> bool {
        FORK_GEN.load(Ordering::Relaxed) != self.fork_gen
    }

    #[inline]
    pub(crate) fn check_queue(&self, cq: u16) -> Result<()> {
        self.check_usable()?;
        if cq as usize >= self.queues.len() {
            return Err(Error::QueueOutOfRange {
                queue: cq,
                queues: self.queues.len() as u16,
                device_queues: self.info.num_queues,
                device: self.info.name.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn next_buffer_id(&self) -> u64 {
        self.next_buffer_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn lock_queue(&self, cq: u16) -> Result<std::sync::MutexGuard<'_, QueueState>> {
        self.check_queue(cq)?;
        let g = self.queues[cq as usize].state.lock().unwrap_or_else(|e| e.into_inner());
        if g.issuer.is_none() {
            return Err(self.closed_error());
        }
        Ok(g)
    }

    /// Allocates `len` bytes for a kernel image in the kernel region; the image lives in bank 0.
    pub(crate) fn alloc_kernel_image(&self, len: u64) -> Result<u64> {
        let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        let align = self.info.dram_align as u64;
        let at = ttdrv_contract::align_up(m.kernel_next, align);
        if at + len > m.kernel_end {
            return Err(Error::KernelRegionFull {
                requested: len,
                free: m.kernel_end.saturating_sub(at),
                region: KERNEL_REGION_PER_BANK,
                device: self.info.name.clone(),
            });
        }
        m.kernel_next = at + len;
        Ok(at)
    }

    fn reset(&self) -> Result<()> {
        if self.in_forked_child() {
            return self.check_usable();
        }
        let t = self.transport()?;
        // Hold every queue so no thread enqueues while the device restarts.
        let mut guards: Vec<_> =
            self.queues.iter().map(|q| q.state.lock().unwrap_or_else(|e| e.into_inner())).collect();
        let mut compl: Vec<_> = self.queues.iter().map(|q| q.compl.lock().unwrap_or_else(|e| e.into_inner())).collect();
        t.write32(global::RESET, regs::RESET_MAGIC);
        wait_ready(t.as_ref())?;
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for (i, g) in guards.iter_mut().enumerate() {
            let Some(rings) = g.issuer.as_ref().map(|is| is.rings().clone()) else {
                continue;
            };
            rings.enable(t.as_ref());
            g.reset_after_device_reset(Issuer::new(rings.clone()));
            *compl[i] = Some(Completer::new(rings));
        }
        self.programs.lock().unwrap_or_else(|e| e.into_inner()).forget_uploads();
        self.traces.lock().unwrap_or_else(|e| e.into_inner()).invalidate_all(&self.mem);
        if let Some(p) = &self.profiler {
            p.drop_pending();
        }
        drop(guards);
        drop(compl);
        self.correlate_clocks();
        let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        m.kernel_next = m.kernel_end - KERNEL_REGION_PER_BANK;
        Ok(())
    }

    fn close(&self) -> Result<()> {
        if self.in_forked_child() {
            // The parent owns the device; tearing anything down here would disturb it, and the emulator's threads
            // do not exist in this process. Leave everything to the parent.
            self.closed.store(true, Ordering::Release);
            return self.check_usable_for_fork_message();
        }
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let Ok(t) = self.transport() else {
            return Ok(());
        };
        let budget = self.params.timeout.min(Duration::from_secs(5));
        let mut drained = true;
        for q in 0..self.queues.len() as u16 {
            if let Err(e) = self.drain_for_close(q, budget) {
                log::warn!("closing {} with work in flight: {e}", self.info.name);
                drained = false;
                break;
            }
        }
        if let Some(p) = &self.profiler {
            for q in 0..self.queues.len() as u16 {
                self.harvest_profile(q);
            }
            if let Some(path) = &p.out_path {
                let r = std::fs::File::create(path).and_then(|mut f| p.write_chrome_json(&mut f, &self.info.name));
                if let Err(e) = r {
                    log::warn!("cannot write the profile to {}: {e}", path.display());
                }
            }
        }
        if !drained {
            t.write32(global::RESET, regs::RESET_MAGIC);
            let _ = wait_ready(t.as_ref());
        }
        for q in 0..self.queues.len() as u16 {
            t.write32(regs::queue_reg(q, regs::queue::CTRL), 0);
        }
        t.quiesce();
        for slot in &self.queues {
            let mut g = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            g.issuer = None;
            g.transport = None;
            *slot.compl.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        // Rings (DMA memory) are unmapped when the last reference goes: the queue slots' own references are
        // dropped with the device object; the transport goes with this one.
        *self.transport.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    fn check_usable_for_fork_message(&self) -> Result<()> {
        Err(Error::Forked { device: self.info.name.clone(), released: true })
    }

    /// Allocates `size` bytes per unit of memory `t` for buffer `id` of `spec`, and registers the spec.
    pub(crate) fn alloc_buffer_range(
        &self,
        t: BufferType,
        size: u64,
        align: u64,
        dir: Direction,
        id: u64,
        spec: &BufferSpec,
    ) -> Result<u64> {
        let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        let at = m.for_type(t).alloc(size, align, dir, Owner::Buffer(id)).map_err(|f| Error::OutOfDeviceMemory {
            purpose: format!("buffer {spec}"),
            memory: t,
            requested: f.asked,
            free: f.free,
            largest_free: f.largest,
            owned_by_traces: f.traced,
            device: self.info.name.clone(),
        })?;
        m.specs.insert(id, *spec);
        Ok(at)
    }
}

impl Drop for DeviceInner {
    fn drop(&mut self) {
        if self.in_forked_child() {
            return;
        }
        let _ = self.close();
    }
}

impl Device {
    /// Another user-facing handle on a device some object belongs to.
    pub(crate) fn from_inner(inner: Arc<DeviceInner>) -> Device {
        inner.handles.fetch_add(1, Ordering::AcqRel);
        Device { inner }
    }
}

impl Clone for Device {
    fn clone(&self) -> Device {
        self.inner.handles.fetch_add(1, Ordering::AcqRel);
        Device { inner: self.inner.clone() }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 && !self.inner.in_forked_child() {
            let _ = self.inner.close();
        }
    }
}
