//! Programs and the program cache.
//!
//! A program is a kernel image, the core rectangle it runs on, compile-time arguments and circular-buffer /
//! semaphore configuration (contract §4.2.6, §8). The cache key is exactly that — never buffer addresses, which are
//! runtime arguments — so running a program on a new input hits the cache. The first dispatch uploads the image
//! into the kernel region of device DRAM on the dispatching queue; every dispatch then sends the full launch record
//! (runtime arguments included), never a diff against what the device last ran, so a captured trace depends on no
//! state that eager work left behind.

use super::buffer::Buffer;
use super::ops::OpKey;
use super::patch::{self, ArgMap, ArgRole, ScalarKind, ScalarName};
use super::queue::{QueueState, push_capture};
use super::wait::EventMark;
use super::{Device, DeviceInner};
use crate::error::{Error, GridText, Result, cores_grid};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use ttdrv_contract::Memory;
use ttdrv_contract::kernel::{self, BuiltinKernel};
use ttdrv_contract::records::{self, CbConfig, CoreRect, Launch, Linear, PAYLOAD_OFFSET, RecordFlags, RecordMeta};
pub use ttdrv_contract::records::{ArgStep, RtArgs};

/// Kernel names starting with this are the built-in catalog's (contract §8.2); any other name is a custom image.
pub const BUILTIN_PREFIX: &str = "ttdrv.";

/// The kernel a program runs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KernelSource {
    /// A kernel of the device's built-in catalog (contract §8.2).
    Builtin(BuiltinKernel),
    /// A kernel image: a name and code for the cores (contract §8.1).
    Image {
        /// Kernel name stored in the image.
        name: String,
        /// Code bytes.
        code: Vec<u8>,
    },
}

impl KernelSource {
    /// The kernel's name.
    pub fn name(&self) -> &str {
        match self {
            KernelSource::Builtin(k) => k.name(),
            KernelSource::Image { name, .. } => name,
        }
    }

    fn image(&self) -> Vec<u8> {
        match self {
            KernelSource::Builtin(k) => kernel::encode_image(k.name(), &[]),
            KernelSource::Image { name, code } => kernel::encode_image(name, code),
        }
    }
}

/// Everything that defines a program: the program cache key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ProgramDesc {
    /// Kernel.
    pub kernel: KernelSource,
    /// Cores that run it.
    pub cores: CoreRect,
    /// Compile-time arguments.
    pub ct_args: Vec<u32>,
    /// Circular buffers.
    pub cbs: Vec<CbConfig>,
    /// Initial semaphore values.
    pub sems: Vec<u32>,
    /// Runtime argument words per core.
    pub rt_words: u16,
}

/// Where an uploaded kernel image lives, and when the upload is done.
#[derive(Clone, Copy, Debug)]
struct Upload {
    epoch: u32,
    offset: u64,
    /// The upload's completion, until some dispatch has seen it done.
    ready: Option<EventMark>,
}

/// One cached program: its image and upload state, shared by every `Program` with the same description.
pub(crate) struct CacheEntry {
    desc: ProgramDesc,
    image: Vec<u8>,
    /// The kernel's name without the `ttdrv.` prefix, for profiles (computed once, not per dispatch).
    label: Arc<str>,
    upload: Mutex<Option<Upload>>,
    /// The fast path of a dispatch: once an upload is known complete, its epoch and offset are published here, so
    /// a cached dispatch takes no lock but its queue's. `offset` is written before `confirmed_epoch`.
    confirmed_epoch: AtomicU32,
    offset: AtomicU64,
    /// Dispatches that found the image uploaded, and that uploaded it (per entry, so counting takes no lock; the
    /// hit count is bumped without a locked instruction and may undercount dispatches racing on two threads).
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The program cache of a device.
#[derive(Default)]
pub(crate) struct ProgramCache {
    entries: HashMap<ProgramDesc, Arc<CacheEntry>>,
    /// The built-in operations' programs by a key that needs no allocation (device/ops.rs), so an op call finds its
    /// program without building a [`ProgramDesc`]; the entries are those of `entries`.
    ops: rustc_hash::FxHashMap<OpKey, Arc<CacheEntry>>,
}

impl ProgramCache {
    /// The cached program of a built-in operation.
    pub fn op(&self, key: &OpKey) -> Option<Arc<CacheEntry>> {
        self.ops.get(key).cloned()
    }

    /// Remembers the program of a built-in operation.
    pub fn insert_op(&mut self, key: OpKey, entry: Arc<CacheEntry>) {
        self.ops.insert(key, entry);
    }

    /// Device reset: kernel images in DRAM are gone.
    pub fn forget_uploads(&mut self) {
        for e in self.entries.values() {
            *e.upload.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// Program cache statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Distinct programs cached.
    pub entries: usize,
    /// Dispatches that found their image already uploaded.
    pub hits: u64,
    /// Dispatches that had to upload their image.
    pub misses: u64,
}

/// A program handle: a description bound to its program-cache entry.
pub struct Program {
    dev: Arc<DeviceInner>,
    entry: Arc<CacheEntry>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} on {:?})", self.entry.desc.kernel.name(), self.entry.desc.cores)
    }
}

impl DeviceInner {
    /// Looks `desc` up in the program cache (inserting it), after checking it against the device.
    pub(crate) fn program(self: &Arc<Self>, desc: ProgramDesc) -> Result<Program> {
        self.check_usable()?;
        let info = &self.info;
        let r = desc.cores;
        let label = match desc.kernel.name() {
            "" => "(unnamed)".to_string(),
            n => n.to_string(),
        };
        let bad = |reason: String| Err(Error::InvalidProgram { kernel: label.clone(), reason });
        if r.x1 < r.x0 || r.y1 < r.y0 {
            let fixed = CoreRect { x0: r.x0.min(r.x1), y0: r.y0.min(r.y1), x1: r.x0.max(r.x1), y1: r.y0.max(r.y1) };
            return Err(Error::InvalidGrid {
                what: "program",
                grid: cores_grid(r),
                reason: format!(
                    "the rectangle is reversed: give the top-left core first, then the bottom-right one ({})",
                    GridText(&cores_grid(fixed))
                ),
            });
        }
        if r.x1 as u32 >= info.grid_x || r.y1 as u32 >= info.grid_y {
            return Err(Error::InvalidGrid {
                what: "program",
                grid: cores_grid(r),
                reason: format!(
                    "they are not a rectangle inside device {}, whose cores are (0,0)-({},{}) ({}x{} grid)",
                    info.name,
                    info.grid_x - 1,
                    info.grid_y - 1,
                    info.grid_x,
                    info.grid_y
                ),
            });
        }
        // A name in the built-in namespace must be a built-in kernel, checked as one: otherwise the device would
        // only fault when the program runs.
        let builtin = match &desc.kernel {
            KernelSource::Builtin(k) => Some(*k),
            KernelSource::Image { name, .. } if name.starts_with(BUILTIN_PREFIX) => {
                match BuiltinKernel::from_name(name) {
                    Some(k) => Some(k),
                    None => {
                        return Err(Error::KernelUnavailable {
                            kernel: name.clone(),
                            device: info.name.clone(),
                            catalog: info.kernels,
                            known: false,
                        });
                    }
                }
            }
            KernelSource::Image { .. } => None,
        };
        if let Some(k) = builtin {
            if info.kernels & k.bit() == 0 {
                return Err(Error::KernelUnavailable {
                    kernel: k.name().to_string(),
                    device: info.name.clone(),
                    catalog: info.kernels,
                    known: true,
                });
            }
            if desc.rt_words as usize != k.rt_words() || desc.ct_args.len() != k.ct_words() {
                return bad(format!(
                    "{} takes {} runtime and {} compile-time words, not {} and {}",
                    k.name(),
                    k.rt_words(),
                    k.ct_words(),
                    desc.rt_words,
                    desc.ct_args.len()
                ));
            }
        }
        if let KernelSource::Image { name, .. } = &desc.kernel
            && (name.is_empty() || name.len() >= kernel::NAME_LEN)
        {
            return bad(format!("the kernel name must be 1 to {} bytes, not {}", kernel::NAME_LEN - 1, name.len()));
        }
        let cb_bytes: u64 = desc.cbs.iter().map(|c| c.page_size as u64 * c.num_pages as u64).sum();
        if cb_bytes > (info.l1_size - info.l1_base) as u64 {
            return bad(format!(
                "circular buffers need {cb_bytes} bytes of L1 per core; {} has {}: use fewer or smaller pages",
                info.name,
                info.l1_size - info.l1_base
            ));
        }
        let words = desc.ct_args.len() + desc.cbs.len() * 4 + desc.sems.len() + desc.rt_words as usize * r.count();
        let mut cache = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        let entry = match cache.entries.get(&desc) {
            Some(e) => e.clone(),
            None => {
                let max = self.queues[0]
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .issuer
                    .as_ref()
                    .map_or(0, |i| i.rings().sizes().max_record());
                if records::FIXED_LEN + words * 4 > max {
                    return bad(format!(
                        "its launch record ({} bytes) exceeds the issue ring's record limit ({max} bytes, a quarter \
                         of issue_ring_size); use fewer cores or arguments, or a larger issue_ring_size",
                        records::FIXED_LEN + words * 4
                    ));
                }
                let image = desc.kernel.image();
                let e = Arc::new(CacheEntry {
                    label: desc.kernel.name().trim_start_matches(BUILTIN_PREFIX).into(),
                    desc: desc.clone(),
                    image,
                    upload: Mutex::new(None),
                    confirmed_epoch: AtomicU32::new(u32::MAX),
                    offset: AtomicU64::new(0),
                    hits: AtomicU64::new(0),
                    misses: AtomicU64::new(0),
                });
                cache.entries.insert(desc, e.clone());
                e
            }
        };
        Ok(Program { dev: self.clone(), entry })
    }

    /// The kernel image offset for a dispatch of `entry` on the locked queue `st`, uploading it first if needed.
    fn ensure_uploaded(&self, entry: &CacheEntry, st: &mut QueueState, capturing: bool) -> Result<u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if entry.confirmed_epoch.load(Ordering::Acquire) == epoch {
            entry.hits.store(entry.hits.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            return Ok(entry.offset.load(Ordering::Relaxed));
        }
        let mut up = entry.upload.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(u) = up.as_mut().filter(|u| u.epoch == epoch) {
            entry.hits.fetch_add(1, Ordering::Relaxed);
            if let Some(ready) = u.ready {
                if self.event_done(&ready)? {
                    u.ready = None;
                    entry.offset.store(u.offset, Ordering::Relaxed);
                    entry.confirmed_epoch.store(epoch, Ordering::Release);
                } else if ready.queue != st.id {
                    // Uploaded on another queue and not known to be done: order this queue after it. A trace may
                    // hold only launches, so during capture the host waits instead.
                    if capturing {
                        drop(up);
                        self.wait_event(&ready, self.params.timeout, "kernel upload")?;
                        return self.ensure_uploaded(entry, st, capturing);
                    }
                    self.emit(
                        st,
                        records::FIXED_LEN,
                        RecordFlags::empty(),
                        "wait (kernel upload)",
                        "event",
                        |slot, m| records::encode_event_wait(slot, m, ready.queue, ready.id),
                    )?;
                }
            }
            return Ok(u.offset);
        }
        if capturing {
            return Err(Error::ProgramNotCached {
                kernel: entry.desc.kernel.name().to_string(),
                cores: entry.desc.cores,
                queue: st.id,
            });
        }
        entry.misses.fetch_add(1, Ordering::Relaxed);
        let len = entry.image.len();
        let offset = self.alloc_kernel_image(len as u64)?;
        let x = Linear { mem: Memory::Dram, unit: 0, offset, len: len as u64 };
        self.emit(st, records::write_linear_len(len), RecordFlags::empty(), "kernel upload", "transfer", |slot, m| {
            records::encode_write_linear(slot, m, &x);
            slot.put_bytes(PAYLOAD_OFFSET, &entry.image);
            records::pad_payload(slot, len);
        })?;
        // Other queues must not launch before the image has landed: remember when it has.
        drop(up);
        let (issuer, t) = st.live()?;
        issuer.publish(t.as_ref());
        let ready = self.record_event_locked(st, "kernel upload")?;
        *entry.upload.lock().unwrap_or_else(|e| e.into_inner()) = Some(Upload { epoch, offset, ready: Some(ready) });
        Ok(offset)
    }
}

impl DeviceInner {
    /// The kernel name and image uploaded at DRAM offset `offset` (bank 0) in the current epoch, if any.
    pub(crate) fn kernel_image_at(&self, offset: u64) -> Option<(String, Vec<u8>)> {
        let epoch = self.epoch.load(Ordering::Acquire);
        let c = self.programs.lock().unwrap_or_else(|e| e.into_inner());
        c.entries.values().find_map(|e| {
            let up = e.upload.lock().unwrap_or_else(|e| e.into_inner());
            up.as_ref()
                .filter(|u| u.epoch == epoch && u.offset == offset)
                .map(|_| (e.desc.kernel.name().to_string(), e.image.clone()))
        })
    }

    /// Uploads a kernel image on the locked queue `st` (a saved trace's, at load); returns its DRAM offset (bank 0).
    pub(crate) fn upload_image(&self, st: &mut QueueState, image: &[u8]) -> Result<u64> {
        let len = image.len();
        let offset = self.alloc_kernel_image(len as u64)?;
        let x = Linear { mem: Memory::Dram, unit: 0, offset, len: len as u64 };
        self.emit(st, records::write_linear_len(len), RecordFlags::empty(), "kernel upload", "transfer", |slot, m| {
            records::encode_write_linear(slot, m, &x);
            slot.put_bytes(PAYLOAD_OFFSET, image);
            records::pad_payload(slot, len);
        })?;
        let (issuer, t) = st.live()?;
        issuer.publish(t.as_ref());
        Ok(offset)
    }
}

impl Device {
    /// Looks a program up in (or adds it to) the program cache.
    pub fn program(&self, desc: ProgramDesc) -> Result<Program> {
        self.inner.program(desc)
    }

    /// Program cache statistics.
    pub fn program_cache_stats(&self) -> CacheStats {
        let c = self.inner.programs.lock().unwrap_or_else(|e| e.into_inner());
        CacheStats {
            entries: c.entries.len(),
            hits: c.entries.values().map(|e| e.hits.load(Ordering::Relaxed)).sum(),
            misses: c.entries.values().map(|e| e.misses.load(Ordering::Relaxed)).sum(),
        }
    }
}

impl Program {
    /// The program's cache entry.
    pub(crate) fn into_entry(self) -> Arc<CacheEntry> {
        self.entry
    }

    /// The description.
    pub fn desc(&self) -> &ProgramDesc {
        &self.entry.desc
    }

    /// Dispatches the program on queue `cq` with `rt_args` (`rt_words` words for each core, row-major over the core
    /// rectangle). `buffers` lists every buffer the arguments refer to; they must be alive. Returns once the launch
    /// is enqueued (or captured).
    ///
    /// During a trace capture every buffer listed here counts as read by the launch (the conservative rule: the
    /// driver cannot see which ones a kernel writes). A range the trace reads first stays the caller's: at each
    /// replay a live buffer of the same spec must hold it at the same address, so a buffer passed here and freed
    /// before the capture ends makes replays fail (naming the range and the buffer) until one is allocated there
    /// again. To let the trace own an intermediate, name the buffers the launch overwrites with
    /// [`Program::run_io`]. [`Program::launch`] sends arguments shared by every core once.
    pub fn run(&self, cq: u16, rt_args: &[u32], buffers: &[&Buffer]) -> Result<()> {
        self.dev.dispatch(&self.entry, cq, &RtArgs::explicit(rt_args), buffers, &[], &ArgMap::OPAQUE)
    }

    /// As [`Program::run`], with the buffers the launch may read (`inputs`) apart from those it overwrites
    /// (`outputs`: the launch writes every byte that any later launch reads from them, without reading them first;
    /// a buffer in both lists counts as an input).
    ///
    /// During a trace capture, a range whose first touch is as an output is an intermediate of the trace: when its
    /// buffer is freed before the capture ends, the range becomes the trace's at once, and no allocation can land
    /// there until the trace is released; if the buffer is still alive when the capture ends (the trace's output),
    /// it stays the caller's and must be held by a buffer of the same spec at the same address at each replay.
    pub fn run_io(&self, cq: u16, rt_args: &[u32], inputs: &[&Buffer], outputs: &[&Buffer]) -> Result<()> {
        self.dev.dispatch(&self.entry, cq, &RtArgs::explicit(rt_args), inputs, outputs, &ArgMap::OPAQUE)
    }

    /// As [`Program::run_io`], with the runtime arguments in the compact form of contract §4.2.6: `args.common`
    /// holds the words every core receives (tt-metal's common runtime arguments, e.g. the tensor accessors), sent
    /// once; each of the other `rt_words − args.common.len()` per-core words is given either by a step
    /// ([`ArgStep`]: a value that follows the core's position, e.g. block bounds) or explicitly for every core
    /// (`args.per_core`, core after core in row-major order). Each core's kernel instance receives its per-core
    /// words, then the common words — what [`Program::run`] would give it with those words written out per core.
    /// The built-in operations dispatch this way; a launch record then costs a few hundred bytes whatever the
    /// number of cores.
    ///
    /// # Errors
    /// [`Error::InvalidProgram`] when the arguments break a rule of [`RtArgs::check`] (more common words than the
    /// program takes, steps out of order, the wrong number of explicit words), as well as the errors of
    /// [`Program::run`].
    pub fn launch(&self, cq: u16, args: &RtArgs<'_>, inputs: &[&Buffer], outputs: &[&Buffer]) -> Result<()> {
        self.dev.dispatch(&self.entry, cq, args, inputs, outputs, &ArgMap::OPAQUE)
    }

    /// As [`Program::launch`], declaring the `roles` of some runtime words so that a trace capturing this launch
    /// can be patched (`patch.rs`): which words hold the address of which buffer (the trace can then rebind that
    /// buffer, [`crate::Device::trace_rebind`]) and which hold named scalars ([`crate::Device::trace_set_scalar`]).
    /// Every word that holds an address of one of `inputs` or `outputs` must be declared: a buffer whose address
    /// sits in an undeclared word would keep its old address after a rebinding, so the trace refuses to rebind the
    /// buffers of a launch that declares no address at all. Outside a capture the roles are checked and otherwise
    /// change nothing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a role names a word the cores do not receive, a stepped word, a buffer not
    /// in the lists, an address word whose value is not inside its buffer, an invalid scalar name, or a word twice;
    /// as well as the errors of [`Program::launch`].
    pub fn launch_with(
        &self,
        cq: u16,
        args: &RtArgs<'_>,
        inputs: &[&Buffer],
        outputs: &[&Buffer],
        roles: &[ArgRole<'_>],
    ) -> Result<()> {
        let num_rt_args = DeviceInner::check_args(&self.entry, args)?;
        let buffers: Vec<&Buffer> = inputs.iter().chain(outputs).copied().collect();
        patch::check_roles(roles, args, num_rt_args as usize, self.entry.desc.cores.count(), &buffers)?;
        let mut addrs = Vec::new();
        let mut scalars = Vec::new();
        for r in roles {
            match *r {
                ArgRole::Address { word, buffer } => addrs.push((word, buffer as u8)),
                ArgRole::Scalar { word, name } => scalars.push((word, ScalarName::User(name), ScalarKind::U32)),
            }
        }
        // Every buffer named has an address word declared, or the caller says none is needed by naming none: a
        // launch that declares addresses for only some of its buffers cannot vouch for the others.
        let covered = |i: usize| addrs.iter().any(|&(_, b)| b as usize == i);
        let complete = (0..buffers.len()).all(covered);
        let map = ArgMap { addrs: &addrs, scalars: &scalars, complete };
        self.dev.dispatch(&self.entry, cq, args, inputs, outputs, &map)
    }
}

impl DeviceInner {
    /// Checks `args` against the program of `entry` and returns its per-core word count.
    fn check_args(entry: &CacheEntry, args: &RtArgs<'_>) -> Result<u16> {
        let d = &entry.desc;
        let cores = d.cores.count();
        let bad = |reason: String| Err(Error::InvalidProgram { kernel: d.kernel.name().to_string(), reason });
        if args.common.is_empty() && args.steps.is_empty() {
            if args.per_core.len() != d.rt_words as usize * cores {
                return bad(format!(
                    "{} runtime words given; the program takes {} per core on {} cores ({} in all)",
                    args.per_core.len(),
                    d.rt_words,
                    cores,
                    d.rt_words as usize * cores
                ));
            }
            return Ok(d.rt_words);
        }
        let Some(per_core) = (d.rt_words as usize).checked_sub(args.common.len()) else {
            return bad(format!(
                "{} common runtime words given; the program takes {} runtime words per core in all: pass at most that                  many",
                args.common.len(),
                d.rt_words
            ));
        };
        if let Err(e) = args.check(per_core, cores) {
            return bad(format!(
                "its runtime arguments ({} per core: {per_core} per-core, then {} common) do not fit the rules of \
                 docs/device-interface.md §4.2.6: {e}",
                d.rt_words,
                args.common.len()
            ));
        }
        Ok(per_core as u16)
    }

    /// Dispatches the program of `entry` on queue `cq`: the one path of [`Program::run`], [`Program::run_io`],
    /// [`Program::launch`] and the built-in operations. It allocates nothing once the kernel image is on the device
    /// (outside profiling and trace capture).
    pub(crate) fn dispatch(
        &self,
        entry: &CacheEntry,
        cq: u16,
        args: &RtArgs<'_>,
        inputs: &[&Buffer],
        outputs: &[&Buffer],
        map: &ArgMap<'_>,
    ) -> Result<()> {
        let num_rt_args = Self::check_args(entry, args)?;
        for b in inputs.iter().chain(outputs) {
            b.check_device(self)?;
        }
        self.dispatch_checked(entry, cq, args, num_rt_args, inputs, outputs, map)
    }

    /// [`DeviceInner::dispatch`] of arguments already checked: `args` passes [`RtArgs::check`] for `num_rt_args`
    /// per-core words and the program's cores, and the buffers belong to this device (the built-in operations build
    /// them so). `map` says which runtime words hold buffer addresses and named scalars; it is read only during a
    /// trace capture (`patch.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn dispatch_checked(
        &self,
        entry: &CacheEntry,
        cq: u16,
        args: &RtArgs<'_>,
        num_rt_args: u16,
        inputs: &[&Buffer],
        outputs: &[&Buffer],
        map: &ArgMap<'_>,
    ) -> Result<()> {
        let d = &entry.desc;
        debug_assert_eq!(args.check(num_rt_args as usize, d.cores.count()), Ok(()));
        debug_assert_eq!(num_rt_args as usize + args.common.len(), d.rt_words as usize);
        let _s = self.span("dispatch", "api");
        let mut st = self.lock_queue(cq)?;
        let capturing = st.capture.is_some();
        let offset = self.ensure_uploaded(entry, &mut st, capturing)?;
        let l = Launch {
            kernel_bank: 0,
            kernel_offset: offset,
            rect: d.cores,
            ct_args: &d.ct_args,
            cbs: &d.cbs,
            sems: &d.sems,
            num_rt_args,
            args: *args,
        };
        // A device older than contract 1.2 takes every core's words written out (the cores receive the same words).
        let compact = self.info.version_minor >= records::SHARED_ARGS_MINOR;
        let len = if compact { records::launch_len(&l) } else { records::launch_len_expanded(&l) };
        let encode = |slot: &mut records::RecordSlot<'_>, m: RecordMeta| {
            if compact { records::encode_launch(slot, m, &l) } else { records::encode_launch_expanded(slot, m, &l) }
        };
        let max = st.issuer.as_ref().map_or(0, |i| i.rings().sizes().max_record());
        if len > max {
            return Err(Error::InvalidProgram {
                kernel: d.kernel.name().to_string(),
                reason: format!(
                    "its launch record ({len} bytes) exceeds the issue ring's record limit ({max} bytes, a quarter of \
                     issue_ring_size); send fewer steps or arguments, or use a larger issue_ring_size"
                ),
            });
        }
        let name = &*entry.label;
        if let Some(cap) = st.capture.as_mut() {
            // Inside a trace, profile slots are relative to the replay's (contract §4.3).
            let meta = match &self.profiler {
                Some(_) => {
                    let profile_slot = cap.names.len() as u32;
                    cap.names.push((name.into(), "compute"));
                    RecordMeta { flags: RecordFlags::PROFILE, tag: 0, profile_slot }
                }
                None => RecordMeta::default(),
            };
            let start = cap.bytes.len();
            push_capture(&mut cap.bytes, len, meta, encode);
            cap.launches += 1;
            let buffers: Vec<&Buffer> = inputs.iter().chain(outputs).copied().collect();
            cap.points.note(&cap.bytes, start, map, &buffers);
            let tid = cap.trace_id;
            self.mem.lock().unwrap_or_else(|e| e.into_inner()).note_launch(tid, inputs, outputs);
            return Ok(());
        }
        self.emit(&mut st, len, RecordFlags::empty(), name, "compute", encode)?;
        let (issuer, t) = st.live()?;
        issuer.publish(t.as_ref());
        Ok(())
    }
}

impl DeviceInner {
    /// Records an event on an already locked queue.
    pub(crate) fn record_event_locked(&self, st: &mut QueueState, what: &str) -> Result<EventMark> {
        self.record_event_flags(st, false, what)
    }

    /// Records an event (with `NOTIFY` if asked) on an already locked queue.
    pub(crate) fn record_event_flags(&self, st: &mut QueueState, notify: bool, what: &str) -> Result<EventMark> {
        st.forbid_capture(what)?;
        st.next_event = st.next_event.wrapping_add(1);
        let id = st.next_event;
        let cq = st.id;
        let flags = if notify { RecordFlags::NOTIFY } else { RecordFlags::empty() };
        self.emit(st, records::FIXED_LEN, flags, "event_record", "event", |slot, m| {
            records::encode_event_record(slot, m, id)
        })?;
        let reads = {
            let c = self.queues[cq as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
            c.as_ref().map_or(0, |c| c.expected())
        };
        let (issuer, t) = st.live()?;
        // Before the doorbell: the device may report this id as soon as it has it (EVENT_DONE is checked against it).
        issuer.rings().note_event_issued(id);
        issuer.publish(t.as_ref());
        Ok(EventMark { queue: cq, id, reads, epoch: self.epoch.load(Ordering::Acquire), notify })
    }
}
