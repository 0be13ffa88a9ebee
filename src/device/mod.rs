//! The device: open/close/reset, per-queue state, waits, and the objects built on them (buffers, events,
//! programs, traces).

pub mod alloc;
pub mod buffer;
pub mod event;
pub mod model;
pub mod nn;
pub mod ops;
mod params;
pub mod patch;
pub mod program;
mod queue;
pub mod registered;
pub mod trace;
pub mod trace_file;
mod transfer;
mod wait;

pub use buffer::{Buffer, BufferSpec, BufferType, Contents, MemoryConfig, ShardSpec};
pub use event::Event;
pub use params::{DeviceInfo, DeviceParams, HUGEPAGE_BYTES, REGISTERED_HOST_ALLOWANCE, memlock_budget};
pub use registered::HostRegistration;
pub use transfer::{OwnedRead, PendingRead};

use crate::dma::{IovaAllocator, LockPolicy, MemoryOptions};
use crate::error::{Error, Result};
use crate::queue::{Completer, Issuer, RingSizes, Rings};
use crate::transport::{self, Transport};
use alloc::{Direction, Owner, RangeAllocator};
use queue::{QueueSlot, QueueState};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use ttdrv_contract::regs::{self, Caps, Status, global};
use ttdrv_contract::{CONTRACT_MAJOR, MAX_QUEUES, RECORD_ALIGN};

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
    pub specs: rustc_hash::FxHashMap<u64, BufferSpec>,
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

    /// The allocator of buffer type `t`, to read.
    pub fn for_type_ref(&self, t: BufferType) -> &RangeAllocator {
        match t {
            BufferType::Dram => &self.dram,
            BufferType::L1 => &self.l1,
            BufferType::L1Small => &self.l1_small,
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
    /// Set when the device broke the contract or was reset behind the driver: every call that needs the device
    /// fails with this until [`Device::reset`].
    pub health: Arc<Health>,
    /// Driver-initiated resets in progress: queues are legitimately unprogrammed meanwhile.
    resetting: AtomicU32,
    /// The IOVA space: the queues' regions and registered host memory.
    pub iovas: Arc<Mutex<IovaAllocator>>,
}

/// Whether the device is usable: shared by the device and its queues' issue side, which meets a bad `ISSUE_RD`.
#[derive(Default)]
pub(crate) struct Health {
    broken: Mutex<Option<Broken>>,
    /// The fast check.
    flag: AtomicBool,
}

impl Health {
    /// Marks the device unusable until reset (`Some`), or usable again (`None`). The first cause is kept: later
    /// ones are usually its consequences.
    pub fn set(&self, b: Option<Broken>) {
        let mut g = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        if b.is_none() || g.is_none() {
            self.flag.store(b.is_some(), Ordering::Release);
            *g = b;
        }
    }

    /// Why the device is unusable, if it is.
    #[inline]
    pub fn get(&self) -> Option<Broken> {
        if !self.flag.load(Ordering::Acquire) {
            return None;
        }
        self.broken.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A protocol violation of device `device`: marks it unusable and returns the error.
    pub fn protocol(&self, device: &str, violation: crate::queue::ProtocolError) -> Error {
        self.set(Some(Broken::Protocol(violation.clone())));
        Error::Protocol { device: device.to_string(), violation }
    }
}

/// Why a device is unusable until reset.
#[derive(Clone, Debug)]
pub(crate) enum Broken {
    /// It wrote a word or entry the contract does not allow.
    Protocol(crate::queue::ProtocolError),
    /// A queue's registers no longer hold what the driver programmed.
    ResetBehind { queue: u16, register: &'static str, value: u32, expected: u32 },
    /// A reset did not complete.
    NotReady { status: u32, emulated: bool },
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
    // Checked as read, before anything is narrowed or computed from them.
    let num_queues = t.read32(global::NUM_QUEUES);
    let bank_size = t.read32(global::DRAM_BANK_SIZE_LO) as u64 | (t.read32(global::DRAM_BANK_SIZE_HI) as u64) << 32;
    let record_align = t.read32(global::RECORD_ALIGN);
    let info = DeviceInfo {
        name: t.name().to_string(),
        version_major: major,
        version_minor: minor,
        caps: Caps::from_bits_truncate(t.read32(global::CAPS)),
        num_queues: num_queues.min(u16::MAX as u32) as u16,
        dram_banks: t.read32(global::DRAM_BANKS),
        bank_size,
        dram_align: t.read32(global::DRAM_ALIGN),
        grid_x: grid & 0xFF,
        grid_y: (grid >> 16) & 0xFF,
        l1_size: t.read32(global::L1_SIZE),
        l1_align: t.read32(global::L1_ALIGN),
        l1_base: t.read32(global::L1_BASE),
        dma_bits: t.read32(global::DMA_BITS),
        kernels: t.read32(global::KERNELS),
    };
    check_probe(&info, num_queues, grid, record_align).map_err(|(register, value, rule)| Error::BadRegister {
        device: t.name().to_string(),
        register,
        value,
        rule,
    })?;
    Ok(info)
}

/// Checks what the device reports against the ranges of docs/device-interface.md §2, in register order, so that
/// nothing later computes with an impossible value (a bank size of 0 would otherwise surface as "the trace region
/// leaves no DRAM", blaming the caller). Returns the first register out of range, its value and the rule.
fn check_probe(
    info: &DeviceInfo,
    num_queues: u32,
    grid: u32,
    record_align: u32,
) -> std::result::Result<(), (&'static str, u64, &'static str)> {
    let pow2_in = |v: u32, lo: u32, hi: u32| v.is_power_of_two() && (lo..=hi).contains(&v);
    let bank = info.bank_size;
    let dram_align = info.dram_align as u64;
    let l1_align = info.l1_align;
    let checks: [(&'static str, u64, bool, &'static str); 11] = [
        ("NUM_QUEUES", num_queues as u64, (1..=MAX_QUEUES as u32).contains(&num_queues), "it must be 1 to 16"),
        ("DRAM_BANKS", info.dram_banks as u64, (1..=64).contains(&info.dram_banks), "it must be 1 to 64"),
        ("DRAM_ALIGN", dram_align, pow2_in(info.dram_align, 32, 4096), "it must be a power of two from 32 to 4096"),
        (
            "DRAM_BANK_SIZE",
            bank,
            (MIN_BANK..=MAX_BANK).contains(&bank) && bank.checked_rem(dram_align) == Some(0),
            "it must be 1 MiB to 4 GiB, a multiple of DRAM_ALIGN",
        ),
        (
            "GRID",
            grid as u64,
            info.grid_x >= 1 && info.grid_y >= 1 && grid & !0x00FF_00FF == 0,
            "x (bits 0-7) and y (bits 16-23) must each be at least 1, other bits 0",
        ),
        ("L1_ALIGN", l1_align as u64, pow2_in(l1_align, 16, 4096), "it must be a power of two from 16 to 4096"),
        (
            "L1_SIZE",
            info.l1_size as u64,
            info.l1_size <= MAX_L1 && info.l1_size.checked_rem(l1_align) == Some(0),
            "it must be at most 16 MiB, a multiple of L1_ALIGN",
        ),
        (
            "L1_BASE",
            info.l1_base as u64,
            info.l1_base < info.l1_size && info.l1_base.checked_rem(l1_align) == Some(0),
            "it must be below L1_SIZE, a multiple of L1_ALIGN",
        ),
        (
            "L1_SIZE - L1_BASE",
            (info.l1_size - info.l1_base.min(info.l1_size)) as u64,
            info.l1_size - info.l1_base.min(info.l1_size) >= MIN_L1_USABLE,
            "at least 16 KiB of L1 per core must be available to software",
        ),
        ("RECORD_ALIGN", record_align as u64, record_align as usize == RECORD_ALIGN, "it must be 64"),
        ("DMA_BITS", info.dma_bits as u64, (32..=64).contains(&info.dma_bits), "it must be 32 to 64"),
    ];
    match checks.iter().find(|c| !c.2) {
        Some(&(register, value, _, rule)) => Err((register, value, rule)),
        None => Ok(()),
    }
}

/// Bytes per DRAM bank the contract allows (docs/device-interface.md §2).
const MIN_BANK: u64 = 1 << 20;
const MAX_BANK: u64 = 1 << 32;
/// Largest L1 per core the contract allows.
const MAX_L1: u32 = 16 << 20;
/// Least L1 per core above `L1_BASE` the contract allows.
const MIN_L1_USABLE: u32 = 16 << 10;

/// How long the driver waits for `STATUS.READY` after a reset: ten times what the contract allows (§7.2).
pub(crate) const READY_WAIT: Duration = Duration::from_secs(1);
/// The longest close drains before abandoning work (also bounded by the device's timeout).
const CLOSE_DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Waits for `STATUS.READY` after a reset (contract §7.2: within 100 ms); `emulated` words the error.
fn wait_ready(t: &dyn Transport, emulated: bool) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let s = Status::from_bits_truncate(t.read32(global::STATUS));
        if s.contains(Status::READY) && !s.contains(Status::RESETTING) {
            return Ok(());
        }
        let after = t0.elapsed();
        if after > READY_WAIT {
            return Err(Error::NotReady { device: t.name().to_string(), status: s.bits(), after, emulated });
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
        // What the driver keeps in every bank whatever the parameters: a device whose banks cannot hold it is
        // unusable, and saying so must not blame trace_region_size.
        let fixed = DRAM_RESERVED_LOW + (1 << 20) + KERNEL_REGION_PER_BANK;
        if info.bank_size <= fixed {
            return Err(Error::Unsupported(format!(
                "{}'s DRAM banks hold {} bytes each, but ttdrv keeps {} bytes of every bank for itself (kernel \
                 images, a guard page and at least 1 MiB of buffers); use a device with larger banks",
                info.name, info.bank_size, fixed
            )));
        }
        let trace_per_bank =
            if p.trace_buffers_on_demand { 0 } else { p.trace_region_size / banks / TRACE_PAGE * TRACE_PAGE };
        let dram_top = info.bank_size.saturating_sub(trace_per_bank.saturating_add(KERNEL_REGION_PER_BANK));
        if dram_top <= DRAM_RESERVED_LOW + (1 << 20) {
            return Err(Error::InvalidParameter {
                parameter: "trace_region_size",
                value: p.trace_region_size,
                reason: format!(
                    "leaves no ordinary DRAM on {} ({} bytes in {} banks, of which the driver keeps {} per bank); \
                     reserve at most {} bytes",
                    info.name,
                    info.dram_size(),
                    banks,
                    fixed,
                    (info.bank_size - fixed - 1) / TRACE_PAGE * TRACE_PAGE * banks
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
            wait_ready(t.as_ref(), t.emulated())?;
        }

        let mem_opts = MemoryOptions {
            hugepages: p.hugepages,
            numa_node: t.numa_node(),
            lock: if t.needs_pinned_memory() { LockPolicy::Required } else { LockPolicy::BestEffort },
            hugepages_wanted: Some(p.hugepages_needed()),
        };
        let iovas = Arc::new(Mutex::new(IovaAllocator::new(&t.iova_ranges(), info.dma_bits)));
        let mut queues = Vec::new();
        let health = Arc::new(Health::default());
        for q in 0..p.num_command_queues {
            let rings = Arc::new(Rings::new(q, &t, &iovas, sizes, &mem_opts)?);
            rings.enable(t.as_ref());
            queues.push(QueueSlot::new(q, rings, t.clone(), &info.name, health.clone()));
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
            health,
            resetting: AtomicU32::new(0),
            iovas,
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

    /// Resets the device after a fault or a protocol violation (or at any time): pending work is dropped and reads
    /// in flight are never delivered — once this returns, whatever its result, no read destination is written
    /// again. Buffer contents, kernel images and traces are lost (buffers keep their addresses): per
    /// docs/device-interface.md §7.2 no buffer survives a reset, so every buffer allocated before it reports
    /// [`Contents::LostInReset`] until written whole again. The queues are re-initialised and the device is usable
    /// again. If the device does not come back within 1 s the error says so ([`Error::NotReady`]) and every call
    /// fails until a reset succeeds.
    pub fn reset(&self) -> Result<()> {
        self.inner.reset()
    }

    /// Drains every queue (all together, up to the timeout or 5 s, whichever is shorter), then releases the
    /// device. Work that does not finish in time is abandoned by resetting the device (waiting at most a further
    /// 1 s for it), and a warning with each queue's state is logged. Whatever the device is doing, close returns
    /// within those bounds, and once it returns no read destination is written again. Later calls on any object of
    /// this device fail with a "closed" error.
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

    /// Reads device timestamps of queue `cq`'s retired records into the profiler. A `RETIRED` word that breaks the
    /// contract marks the device unusable (the next call reports it) and harvests nothing.
    pub(crate) fn harvest_profile(&self, cq: u16) {
        if let Some(p) = &self.profiler {
            let mut c = self.queues[cq as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = c.as_mut() {
                match c.retired() {
                    Ok(retired) => p.harvest(cq, c.rings(), retired),
                    Err(v) => drop(self.protocol(v)),
                }
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
        self.check_broken()?;
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
        // Hold every queue so no thread enqueues or delivers while the device restarts.
        let mut guards: Vec<_> =
            self.queues.iter().map(|q| q.state.lock().unwrap_or_else(|e| e.into_inner())).collect();
        let mut compl: Vec<_> = self.queues.iter().map(|q| q.compl.lock().unwrap_or_else(|e| e.into_inner())).collect();
        self.resetting.fetch_add(1, Ordering::SeqCst);
        t.write32(global::RESET, regs::RESET_MAGIC);
        // Everything enqueued before is dropped, whatever the reset's outcome: no read in flight is delivered from
        // here on (a fresh completer has none pending), and buffers written before report their contents lost.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        let rings: Vec<_> = guards.iter().map(|g| g.issuer.as_ref().map(|is| is.rings().clone())).collect();
        for (c, r) in compl.iter_mut().zip(&rings) {
            if let Some(r) = r {
                **c = Some(Completer::new(r.clone()));
            }
        }
        for g in guards.iter_mut() {
            g.reset_after_device_reset();
        }
        self.programs.lock().unwrap_or_else(|e| e.into_inner()).forget_uploads();
        self.traces.lock().unwrap_or_else(|e| e.into_inner()).invalidate_all(&self.mem);
        if let Some(p) = &self.profiler {
            p.drop_pending();
        }
        let ready = wait_ready(t.as_ref(), t.emulated());
        if ready.is_ok() {
            for (g, r) in guards.iter_mut().zip(&rings) {
                if let Some(rings) = r {
                    rings.enable(t.as_ref());
                    g.issuer = Some(Issuer::new(rings.clone()));
                }
            }
            self.set_broken(None);
        } else {
            // The queues stay unprogrammed; every call fails until a reset succeeds.
            let status = t.read32(global::STATUS);
            self.set_broken(Some(Broken::NotReady { status, emulated: t.emulated() }));
        }
        self.resetting.fetch_sub(1, Ordering::SeqCst);
        drop(guards);
        drop(compl);
        ready?;
        self.correlate_clocks();
        let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        m.kernel_next = m.kernel_end - KERNEL_REGION_PER_BANK;
        Ok(())
    }

    /// Marks the device unusable until reset (`Some`), or usable again (`None`).
    pub(crate) fn set_broken(&self, b: Option<Broken>) {
        self.health.set(b);
    }

    /// The error of a call on a device marked unusable, if it is.
    #[inline]
    pub(crate) fn check_broken(&self) -> Result<()> {
        match self.health.get() {
            None => Ok(()),
            Some(b) => Err(self.broken_error(b)),
        }
    }

    fn broken_error(&self, b: Broken) -> Error {
        let device = self.info.name.clone();
        match b {
            Broken::Protocol(violation) => Error::Protocol { device, violation },
            Broken::ResetBehind { queue, register, value, expected } => {
                Error::ResetBehindDriver { device, queue, register, value, expected }
            }
            Broken::NotReady { status, emulated } => Error::NotReady { device, status, after: READY_WAIT, emulated },
        }
    }

    /// A protocol violation: marks the device unusable until reset and returns the error.
    pub(crate) fn protocol(&self, violation: crate::queue::ProtocolError) -> Error {
        self.health.protocol(&self.info.name, violation)
    }

    /// Whether the driver is resetting the device now, or did since `epoch` was read: a queue found unprogrammed
    /// meanwhile is the driver's own doing.
    pub(crate) fn reset_since(&self, epoch: u32) -> bool {
        self.resetting.load(Ordering::SeqCst) != 0 || self.epoch.load(Ordering::SeqCst) != epoch
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
        // One deadline for the whole drain, every queue together: close's bound does not grow with the queues.
        let budget = self.params.timeout.min(CLOSE_DRAIN_LIMIT);
        let drained = match self.drain_for_close(&t, budget) {
            Ok(()) => true,
            Err(e) => {
                log::warn!(
                    "closing {}: abandoning the work still in flight after {budget:?} (the device is reset; reads \
                     not yet delivered never will be): {e}",
                    self.info.name
                );
                false
            }
        };
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
            if let Err(e) = wait_ready(t.as_ref(), t.emulated()) {
                log::warn!("closing {}: {e}; releasing it anyway", self.info.name);
            }
        }
        for q in 0..self.queues.len() as u16 {
            t.write32(regs::queue_reg(q, regs::queue::CTRL), 0);
        }
        // Bus mastering off before any DMA memory goes: the device can no longer write the rings.
        t.quiesce();
        for slot in &self.queues {
            // Pending reads go with the completer, under its lock: once this returns nothing is delivered.
            *slot.compl.lock().unwrap_or_else(|e| e.into_inner()) = None;
            let mut g = slot.state.lock().unwrap_or_else(|e| e.into_inner());
            g.issuer = None;
            g.transport = None;
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
