//! The driver's error type: one variant per thing that can go wrong, carrying what failed (which queue, device,
//! memory, sizes), so a caller can branch on it; every message states the cause once and says what to do.
//!
//! This is the error of the device layer and the public API. The layers below have their own —
//! [`TransportError`], [`DmaError`], [`ProtocolError`] (the completion ring's) — and never see this one; they are
//! converted here, upward only.

use crate::device::{BufferSpec, BufferType, Contents};
use std::fmt;
use std::time::Duration;
use ttdrv_contract::kernel::{DType, ShardGrid};
use ttdrv_contract::records::CoreRect;
use ttdrv_contract::regs::FaultCode;

pub use crate::dma::DmaError;
pub use crate::queue::ProtocolError;
pub use crate::transport::TransportError;

/// Errors returned by ttdrv. [`Error::kind`] gives the class of failure (one per C status code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- ErrorKind::InvalidArgument ----------------------------------------------------------------------------
    /// An argument failed a check that has no variant of its own; the message names it and what is accepted.
    #[error("{0}")]
    InvalidArgument(String),
    /// A command queue id the device was not opened with.
    #[error("{}", queue_out_of_range(*.queue, *.queues, *.device_queues, .device))]
    QueueOutOfRange {
        /// The queue asked for.
        queue: u16,
        /// Queues the device was opened with (`DeviceParams::num_command_queues`): valid ids are `0..queues`.
        queues: u16,
        /// Queues the device has (`DeviceInfo::num_queues`): the most it can be opened with.
        device_queues: u16,
        /// The device.
        device: String,
    },
    /// A field of [`crate::DeviceParams`] the device cannot honour.
    #[error("{parameter}={value}: {reason}")]
    InvalidParameter {
        /// The field (`num_command_queues`, `issue_ring_size`, ...).
        parameter: &'static str,
        /// Its value.
        value: u64,
        /// Why it cannot be used on this device, and what to pass instead.
        reason: String,
    },
    /// The device selector is malformed or names nothing ttdrv knows.
    #[error("device selector `{selector}`: {reason}")]
    InvalidSelector {
        /// The selector as given.
        selector: String,
        /// What is wrong with it, and what to pass instead.
        reason: String,
    },
    /// An object of one device was passed to a call on another.
    #[error(
        "{object} belongs to device {object_device}, not {device}; objects work on their own device only: create \
         the {object} on {device}"
    )]
    WrongDevice {
        /// What was passed (`buffer`, `event`).
        object: &'static str,
        /// The device it belongs to.
        object_device: String,
        /// The device of the call.
        device: String,
    },
    /// A buffer spec the device cannot place (zero dimension, shard shape that does not divide the shape, ...).
    #[error("buffer {spec}: {reason}")]
    InvalidBufferSpec {
        /// The spec.
        spec: BufferSpec,
        /// What is wrong, and what to change.
        reason: String,
    },
    /// A core rectangle or bank range that is reversed, outside the device, or of the wrong kind.
    #[error("{what} {}: {reason}", GridText(.grid))]
    InvalidGrid {
        /// What the grid is for (`shard grid`, `program`).
        what: &'static str,
        /// The grid, as given.
        grid: ShardGrid,
        /// What is wrong with it (reversed, outside the device's grid of so many cores or banks, ...).
        reason: String,
    },
    /// Operand shapes that do not agree.
    #[error("{op}: {} {rule}", ShapesText(.shapes))]
    ShapeMismatch {
        /// The operation (`matmul`, `copy`, `Add`, ...).
        op: String,
        /// The shapes involved, in argument order (inputs, then the output).
        shapes: Vec<[u32; 2]>,
        /// The rule they break.
        rule: String,
    },
    /// Operands of different element types for an op that computes in one.
    #[error(
        "{op}: element types differ ({expected:?} and {found:?}); it takes every operand and its output in one \
         element type. Convert one operand first by copying it into a buffer of the other element type — \
         Device::typecast, or reshard_into (ttdrv_reshard_into) an existing one; the copy converts"
    )]
    DTypeMismatch {
        /// The operation.
        op: String,
        /// The first operand's element type.
        expected: DType,
        /// The element type that differs from it.
        found: DType,
    },
    /// Host data whose length is not the buffer's size.
    #[error(
        "{call} of {given} bytes, but buffer {spec} holds {} bytes ({} x {} elements of {} bytes); pass exactly {} \
         bytes", .spec.host_bytes(), .spec.rows, .spec.cols, .spec.dtype.size(), .spec.host_bytes()
    )]
    HostLength {
        /// The transfer (`write`, `read`).
        call: &'static str,
        /// Bytes given.
        given: usize,
        /// The buffer.
        spec: BufferSpec,
    },
    /// A saved trace that cannot be loaded or saved: the file is unreadable, truncated, corrupt, of another format,
    /// made for another device, holds records or addresses a trace may not, or the bindings given do not match.
    #[error("{call}: {problem}")]
    TraceFile {
        /// The call and the file (`trace_load(/tmp/t.trace)`).
        call: String,
        /// What is wrong, and what to do.
        problem: String,
    },
    /// A program description or dispatch the kernel or the device cannot take (argument counts, circular buffers
    /// larger than L1, a launch larger than the issue ring, ...).
    #[error("program {kernel}: {reason}")]
    InvalidProgram {
        /// The kernel's name.
        kernel: String,
        /// What is wrong, and what to change.
        reason: String,
    },

    // ---- ErrorKind::InvalidHandle ------------------------------------------------------------------------------
    /// A handle is stale (freed, closed, reset) or was never valid (the C ABI's handles; a Rust object cannot be).
    #[error("{0}")]
    InvalidHandle(String),

    // ---- ErrorKind::InvalidState -------------------------------------------------------------------------------
    /// A call a trace cannot hold, made on a queue while a trace is being captured there.
    #[error(
        "{call} on queue {queue} during trace capture (trace {trace} is already being captured there): a trace \
         holds only program dispatches and event records and waits, not host writes, reads, blocking calls, \
         replays of other traces or another capture. Call it before begin_trace_capture or after end_trace_capture"
    )]
    CaptureActive {
        /// The queue.
        queue: u16,
        /// The trace being captured there.
        trace: u32,
        /// The call refused (`host write (copy_host_to_device_tensor)`, `finish`, `execute_trace(3)`, ...).
        call: String,
    },
    /// An event waited on or queried before it was ever recorded.
    #[error(
        "{call} on an event that was never recorded: record it (record_event) on some queue first; waiting for it \
         could never finish"
    )]
    EventNotRecorded {
        /// The call.
        call: &'static str,
    },
    /// The work a call refers to (an event's record, a read) was enqueued before a device reset, which dropped it.
    #[error(
        "{call}: the work it refers to was enqueued on device {device} before the device was reset, and the reset \
         dropped it; enqueue it (record the event) again"
    )]
    DroppedByReset {
        /// The call.
        call: &'static str,
        /// The device.
        device: String,
    },
    /// A trace that does not exist or is not in a state that allows the call.
    #[error("{call}: {}", TraceText(*.trace, .problem, .device))]
    Trace {
        /// The trace id.
        trace: u32,
        /// The call (`execute_trace(3)`, `release_trace(3)`, ...).
        call: String,
        /// What is wrong.
        problem: TraceProblem,
        /// The device.
        device: String,
    },

    // ---- ErrorKind::NotFound -----------------------------------------------------------------------------------
    /// Nothing at the selector's address is a device ttdrv can drive.
    #[error("{reason}")]
    NotFound {
        /// Where ttdrv looked (`vfio:0000:01:00.0`).
        device: String,
        /// What was found there, and how to find ttdrv devices (names the device).
        reason: String,
    },

    // ---- ErrorKind::Unsupported --------------------------------------------------------------------------------
    /// The device or this build lacks a feature that has no variant of its own.
    #[error("{0}")]
    Unsupported(String),
    /// The device speaks a contract major version this driver does not.
    #[error(
        "{device} speaks device contract {major}.{minor}; this ttdrv speaks {}.{}. Install a ttdrv release for \
         contract {major}.x",
        ttdrv_contract::CONTRACT_MAJOR,
        ttdrv_contract::CONTRACT_MINOR
    )]
    ContractVersion {
        /// The device.
        device: String,
        /// Its contract major version.
        major: u16,
        /// Its contract minor version.
        minor: u16,
    },
    /// A built-in kernel (`ttdrv.` name) the device's catalog lacks, or that no device has.
    #[error("{}", kernel_unavailable(.kernel, .device, *.catalog, *.known))]
    KernelUnavailable {
        /// The kernel name.
        kernel: String,
        /// The device.
        device: String,
        /// The device's built-in kernel mask (`KERNELS`, docs/device-interface.md §8.2).
        catalog: u32,
        /// False when no ttdrv device has a built-in kernel of that name.
        known: bool,
    },

    // ---- ErrorKind::OutOfDeviceMemory --------------------------------------------------------------------------
    /// A device memory has no free range large enough.
    #[error(
        "cannot allocate {purpose} on {device}: out of {}: asked {requested} bytes per {unit}; {free} bytes free, \
         largest free block {largest_free} bytes, {owned_by_traces} bytes owned by live traces. Free buffers or \
         release traces first, or allocate less", .memory.name(),
        unit = if *.memory == BufferType::Dram { "bank" } else { "core" }
    )]
    OutOfDeviceMemory {
        /// What was being allocated (a buffer's spec, `trace 3's buffer`).
        purpose: String,
        /// The memory.
        memory: BufferType,
        /// Bytes asked, per bank (DRAM) or per core (L1).
        requested: u64,
        /// Bytes free, per bank or core.
        free: u64,
        /// The largest free block, per bank or core.
        largest_free: u64,
        /// Bytes owned by live traces (released with them), per bank or core.
        owned_by_traces: u64,
        /// The device.
        device: String,
    },
    /// The device DRAM region for kernel images is full.
    #[error(
        "the kernel image region of {device} ({region} bytes) is full: a {requested}-byte image does not fit in the \
         {free} bytes left. Use fewer distinct programs, or reset the device (which empties the region)"
    )]
    KernelRegionFull {
        /// Bytes of the image.
        requested: u64,
        /// Bytes left.
        free: u64,
        /// Bytes of the region.
        region: u64,
        /// The device.
        device: String,
    },

    // ---- ErrorKind::TraceRegion --------------------------------------------------------------------------------
    /// The reserved trace region cannot hold a trace's buffer.
    #[error("{}", trace_region_text(.device, *.trace, *.needed, *.free, *.region, *.owned_by_traces))]
    TraceRegionTooSmall {
        /// The trace.
        trace: u32,
        /// Bytes its buffer needs, device total ([`crate::device::trace::TraceInfo::region_bytes`]).
        needed: u64,
        /// Bytes of the region free, device total.
        free: u64,
        /// Bytes of the region (`trace_region_size`, rounded down to whole pages per bank).
        region: u64,
        /// Bytes of the region owned by other live traces.
        owned_by_traces: u64,
        /// The device.
        device: String,
    },
    /// A replay of a trace that was captured but never stored, because the region was too small.
    #[error(
        "execute_trace({trace}): the trace was captured but never stored, because the trace region was too small \
         ({needed}B needed); release it, and open the device with trace_region_size of at least {needed}B"
    )]
    TraceNotStored {
        /// The trace.
        trace: u32,
        /// Bytes its buffer needs, device total.
        needed: u64,
    },

    // ---- ErrorKind::ProgramNotCached ---------------------------------------------------------------------------
    /// A program dispatched during capture has never run, so its kernel would have to be uploaded in the trace.
    #[error(
        "program {kernel} on cores {} is not in the program cache, so it cannot be captured on queue {queue}: its \
         kernel must be uploaded, which a trace cannot hold. Run it once before begin_trace_capture (the \
         \"compile\" run of tt-metal's guide \"Advanced Performance Optimizations for Models\"), then capture",
        GridText(&cores_grid(*.cores))
    )]
    ProgramNotCached {
        /// The kernel's name.
        kernel: String,
        /// Its cores.
        cores: CoreRect,
        /// The capturing queue.
        queue: u16,
    },

    // ---- ErrorKind::HostMemory ---------------------------------------------------------------------------------
    /// Host (DMA) memory could not be set up.
    #[error(transparent)]
    Dma(#[from] DmaError),

    // ---- ErrorKind::Transport ----------------------------------------------------------------------------------
    /// The bus refused an operation, or the device could not be opened on it.
    #[error(transparent)]
    Transport(TransportError),

    // ---- ErrorKind::Timeout ------------------------------------------------------------------------------------
    /// A wait did not complete within the device's timeout.
    #[error("{}", timeout_text(.waiting_for, .device, *.after, *.device_busy, .report))]
    Timeout {
        /// What was awaited (`finish (queue 0 event 3)`, `blocking read on queue 1`, ...).
        waiting_for: String,
        /// The queue the wait watched.
        queue: u16,
        /// How long it waited (`DeviceParams::timeout`, or the caller's).
        after: Duration,
        /// Whether the device made progress during the wait (a queue retired records or is executing one): then
        /// the work is slow and a longer timeout helps; if not, the wait waits for something that never happens.
        device_busy: bool,
        /// The host and device state of every queue, one line each.
        report: String,
        /// The device.
        device: String,
    },
    /// The device did not come back from a reset.
    #[error("{}", not_ready_text(.device, *.status, *.after, *.emulated))]
    NotReady {
        /// The device.
        device: String,
        /// Its `STATUS` register.
        status: u32,
        /// How long the driver waited.
        after: Duration,
        /// The device is the emulator (a software device in this process), not hardware.
        emulated: bool,
    },

    // ---- ErrorKind::DeviceFault --------------------------------------------------------------------------------
    /// The device reported a fault and stopped.
    #[error("{0}")]
    DeviceFault(FaultReport),
    /// A queue's registers no longer hold what the driver programmed: the device was reset (or the queue
    /// reprogrammed) by something other than this driver, and dropped the work enqueued.
    #[error(
        "device {device} was reset behind the driver: queue {queue}'s {register} register reads {value:#x}, not the \
         {expected:#x} the driver programmed. The work enqueued on the device was dropped and every buffer's \
         contents are lost (docs/device-interface.md §7.2); reads not yet delivered never will be. Reset it \
         (Device::reset, ttdrv_device_reset() in C) to use it again, then write the buffers again"
    )]
    ResetBehindDriver {
        /// The device.
        device: String,
        /// The queue whose register was found changed.
        queue: u16,
        /// The register (`Q_ISSUE_SIZE`).
        register: &'static str,
        /// What it reads.
        value: u32,
        /// What the driver wrote there.
        expected: u32,
    },

    // ---- ErrorKind::Protocol -----------------------------------------------------------------------------------
    /// The device wrote a completion entry the contract does not allow.
    #[error("device {device} broke the contract: {violation}. Reset the device; report it if it happens again")]
    Protocol {
        /// The device.
        device: String,
        /// What it wrote, where.
        violation: ProtocolError,
    },
    /// A register reads a value the contract does not allow.
    #[error(
        "device {device} broke the contract: register {register} reads {value:#x}, but {rule} \
         (docs/device-interface.md §2). Check the device is a ttdrv device in working order"
    )]
    BadRegister {
        /// The device.
        device: String,
        /// The register (`NUM_QUEUES`, `DRAM_ALIGN`, `DRAM_BANK_SIZE` for the two halves together, ...).
        register: &'static str,
        /// What it reads.
        value: u64,
        /// What the contract requires.
        rule: &'static str,
    },

    // ---- ErrorKind::ContentsUndefined ----------------------------------------------------------------------------
    /// A read of a buffer whose contents are undefined ([`crate::Buffer::contents`]): a write to it stopped
    /// part-way, or the device was reset since it was last written.
    #[error("{}", contents_text(.call, .spec, .contents, .device))]
    ContentsUndefined {
        /// The refused call (`read`).
        call: &'static str,
        /// The buffer.
        spec: BufferSpec,
        /// Why its contents are undefined.
        contents: Contents,
        /// The device.
        device: String,
    },

    // ---- the kind of its cause ---------------------------------------------------------------------------------
    /// A host write that stopped before it was complete or confirmed: `cause` says why (its kind is this error's),
    /// the rest says exactly what was enqueued. Records enqueued land unless the device is reset; when only some
    /// were, the buffer's contents are undefined until it is written whole again.
    #[error("{cause}\n{}", write_stopped_text(.spec, *.queue, *.records_enqueued, *.records_total, *.bytes_enqueued, *.bytes_total))]
    WriteStopped {
        /// The buffer written.
        spec: BufferSpec,
        /// The queue.
        queue: u16,
        /// Records of the write enqueued.
        records_enqueued: u32,
        /// Records the whole write takes.
        records_total: u32,
        /// Bytes of the tensor in the records enqueued.
        bytes_enqueued: u64,
        /// Bytes of the whole tensor (whole tiles, padding included, for a tiled buffer).
        bytes_total: u64,
        /// Why it stopped (a timeout, a fault, a protocol violation...).
        cause: Box<Error>,
    },

    // ---- ErrorKind::Forked -------------------------------------------------------------------------------------
    /// The device was opened by the parent of this (forked) process.
    #[error(
        "device {device} belongs to the parent process that opened it: a forked child cannot use it (its DMA memory \
         and device threads are the parent's){}. Open the device again in the child",
        if *.released { "; this handle was released in the child without touching the hardware" } else { "" }
    )]
    Forked {
        /// The device.
        device: String,
        /// The call was a close: the child's handle is gone, the device untouched.
        released: bool,
    },

    // ---- ErrorKind::Closed -------------------------------------------------------------------------------------
    /// The device has been closed.
    #[error("device {device} is closed; open it again to use it")]
    Closed {
        /// The device.
        device: String,
    },
}

/// What is wrong with a trace in [`Error::Trace`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceProblem {
    /// No such trace: never captured, already released, or its capture was dropped by a device reset.
    NotFound,
    /// It is still being captured on `queue`.
    Capturing {
        /// The capturing queue.
        queue: u16,
    },
    /// Its capture already ended.
    AlreadyEnded,
    /// The queue is capturing another trace (`end_trace_capture` with the wrong id).
    OtherCapture {
        /// The queue.
        queue: u16,
        /// The trace being captured there.
        capturing: u32,
    },
    /// The device was reset since the capture, which erased the trace from device memory.
    LostInReset,
    /// The event is recorded inside trace `owner`, whose replays record it again: it cannot be recorded elsewhere
    /// while that trace lives.
    EventOwned {
        /// The trace that owns the event.
        owner: u32,
    },
    /// A wait inside the trace (wait table entry `index`) is for an event that has no record to wait for.
    WaitNeverRecorded {
        /// The wait's index among the trace's waits, in capture order.
        index: u32,
    },
    /// A wait inside the trace (wait table entry `index`) is for an event last recorded before a device reset.
    WaitLostInReset {
        /// The wait's index among the trace's waits, in capture order.
        index: u32,
    },
    /// Events inside a trace need a device of contract 1.`needed`; this one speaks 1.`minor`.
    EventsNeedContract {
        /// The device's contract minor version.
        minor: u16,
        /// The minor version needed.
        needed: u16,
    },
    /// More waits inside one trace than its `EXEC_TRACE` record can carry.
    TooManyWaits {
        /// The most a trace can hold on this device's rings.
        max: u32,
    },
    /// Binding `binding` cannot be rebound: a launch that uses it did not declare which of its runtime words hold
    /// its address (a `Program::run`, or a `launch_with` without an address role for it), so a rebinding could
    /// leave the old address in place.
    NotRebindable {
        /// The binding's name (`input0`).
        binding: String,
        /// Why: its range was also used by another buffer during the capture (freed and allocated again inside
        /// it), rather than an undeclared address word.
        aliased: bool,
    },
    /// A patch would race a replay of the trace still running on queue `queue`: no event recorded there after the
    /// replay was passed, and the replay is not known complete.
    PatchRacesReplay {
        /// The queue of the replay.
        queue: u16,
    },
    /// A patch of the trace stopped after enqueueing part of its writes on `queue` (no ring space in time, or a
    /// device failure), so `words` of its words on the device may hold old or new values.
    PatchIncomplete {
        /// Words whose device value is unknown.
        words: u32,
        /// The queue that holds the rest of that patch's writes (a repairing patch must be enqueued there).
        queue: u16,
    },
    /// A range the trace does not own — one it reads first (an input), or writes and leaves to the caller (its
    /// output, or an intermediate kept alive past the capture) — is held by no live buffer now. At replay each such
    /// range must be held by a buffer of the spec and address it was captured with (docs/architecture.md, "Trace").
    RangeFreed {
        /// The memory.
        memory: BufferType,
        /// Start of the range (unit offset).
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// The spec of the buffer the trace was captured with (boxed: errors stay small).
        expected: Box<BufferSpec>,
        /// That buffer's address.
        address: u64,
        /// The trace writes the range before reading it (its output) rather than reading it first (its input).
        output: bool,
    },
    /// As [`TraceProblem::RangeFreed`], but something else holds (part of) the range now: a buffer of another spec
    /// or address, or another trace.
    RangeReused {
        /// The memory.
        memory: BufferType,
        /// Start of the range (unit offset).
        start: u64,
        /// End of the range (exclusive).
        end: u64,
        /// The spec of the buffer the trace was captured with (boxed: errors stay small).
        expected: Box<BufferSpec>,
        /// That buffer's address.
        address: u64,
        /// The trace writes the range before reading it (its output) rather than reading it first (its input).
        output: bool,
        /// What holds the range now (boxed: errors stay small).
        found: Box<RangeOccupant>,
    },
}

/// What holds device memory a trace expected one of its buffers in ([`TraceProblem::RangeReused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RangeOccupant {
    /// A live buffer of another spec or address.
    Buffer {
        /// Its spec.
        spec: BufferSpec,
        /// Its address.
        address: u64,
    },
    /// Memory trace `.0` owns (one of its intermediates, or its trace buffer).
    Trace(u32),
    /// The driver's own memory (kernel images).
    Driver,
}

impl fmt::Display for RangeOccupant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeOccupant::Buffer { spec, address } => write!(f, "a {spec} buffer at {address:#x}"),
            RangeOccupant::Trace(t) => write!(f, "trace {t} (an intermediate it owns)"),
            RangeOccupant::Driver => f.write_str("the driver (kernel images)"),
        }
    }
}

/// A device fault, decoded from the `FAULT_*` registers (docs/device-interface.md §7.1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultReport {
    /// The device.
    pub device: String,
    /// `FAULT_CODE`, raw.
    pub code: u32,
    /// `FAULT_ADDR`: the faulting IOVA or device address, or the core for a kernel-argument fault.
    pub address: u64,
    /// `FAULT_QUEUE`.
    pub queue: u32,
    /// `FAULT_TAG`: the tag of the record that faulted.
    pub tag: u32,
    /// `FAULT_OPCODE`: the opcode of the record that faulted.
    pub opcode: u32,
}

impl FaultReport {
    /// The fault code, if this driver knows it.
    pub fn fault_code(&self) -> Option<FaultCode> {
        FaultCode::from_u32(self.code)
    }
}

impl fmt::Display for FaultReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.address;
        let (what, hint) = match self.fault_code() {
            Some(FaultCode::Iommu) => (
                format!("IOMMU fault: the device accessed IOVA {addr:#x}, which is not mapped"),
                "DMA memory was unmapped while the device still used it",
            ),
            Some(FaultCode::Address) => (
                format!("device address {addr:#x} is out of range"),
                "a buffer or kernel argument points outside device memory",
            ),
            Some(FaultCode::BadKernel) => (
                format!("invalid kernel image at DRAM offset {addr:#x}"),
                "the kernel image is corrupt or names a kernel this device does not implement",
            ),
            Some(FaultCode::KernelArgs) => (
                format!("a kernel rejected its arguments (core #{addr} of the launch)"),
                "a program's runtime arguments do not match its kernel",
            ),
            Some(c) => (format!("{} (address {addr:#x})", c.describe()), "a driver or device bug; please report it"),
            None => {
                (format!("unknown fault code {} (address {addr:#x})", self.code), "a device newer than this driver")
            }
        };
        write!(
            f,
            "device {} faulted: {what}; queue {}, record tag {} ({}). Likely cause: {hint}. The device has stopped: \
             reset it (Device::reset, ttdrv_device_reset() in C) to recover it, or close it",
            self.device,
            self.queue,
            self.tag,
            ttdrv_contract::records::Opcode::name_of(self.opcode)
        )
    }
}

/// What kind of failure an [`Error`] is: one value per C status code (`ttdrv_status` in `include/ttdrv.h` maps
/// these one to one), so callers that only need the class of failure (retry, reset, give up) can branch on it
/// whatever detail the error carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument is out of range or inconsistent.
    InvalidArgument,
    /// A handle is stale or was never valid.
    InvalidHandle,
    /// The call is not allowed in the current state.
    InvalidState,
    /// No device matched the selector.
    NotFound,
    /// The device or this build lacks a feature.
    Unsupported,
    /// Device memory is exhausted.
    OutOfDeviceMemory,
    /// The trace region is missing or too small.
    TraceRegion,
    /// A program dispatched during capture has never run.
    ProgramNotCached,
    /// Host DMA memory could not be set up.
    HostMemory,
    /// The bus refused an operation.
    Transport,
    /// A wait did not complete in time.
    Timeout,
    /// The device reported a fault.
    DeviceFault,
    /// The device broke the contract.
    Protocol,
    /// The device was opened in a parent process.
    Forked,
    /// A buffer's contents are undefined (a write stopped part-way, or a reset erased them).
    ContentsUndefined,
    /// The device has been closed.
    Closed,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::InvalidArgument(_)
            | Error::QueueOutOfRange { .. }
            | Error::InvalidParameter { .. }
            | Error::InvalidSelector { .. }
            | Error::WrongDevice { .. }
            | Error::InvalidBufferSpec { .. }
            | Error::InvalidGrid { .. }
            | Error::ShapeMismatch { .. }
            | Error::DTypeMismatch { .. }
            | Error::HostLength { .. }
            | Error::InvalidProgram { .. }
            | Error::TraceFile { .. } => K::InvalidArgument,
            Error::InvalidHandle(_) => K::InvalidHandle,
            Error::CaptureActive { .. }
            | Error::EventNotRecorded { .. }
            | Error::DroppedByReset { .. }
            | Error::Trace { .. } => K::InvalidState,
            Error::NotFound { .. } => K::NotFound,
            Error::Unsupported(_) | Error::ContractVersion { .. } | Error::KernelUnavailable { .. } => K::Unsupported,
            Error::OutOfDeviceMemory { .. } | Error::KernelRegionFull { .. } => K::OutOfDeviceMemory,
            Error::TraceRegionTooSmall { .. } | Error::TraceNotStored { .. } => K::TraceRegion,
            Error::ProgramNotCached { .. } => K::ProgramNotCached,
            Error::Dma(_) => K::HostMemory,
            Error::Transport(_) => K::Transport,
            Error::Timeout { .. } | Error::NotReady { .. } => K::Timeout,
            Error::DeviceFault(_) | Error::ResetBehindDriver { .. } => K::DeviceFault,
            Error::Protocol { .. } | Error::BadRegister { .. } => K::Protocol,
            Error::Forked { .. } => K::Forked,
            Error::ContentsUndefined { .. } => K::ContentsUndefined,
            Error::WriteStopped { cause, .. } => cause.kind(),
            Error::Closed { .. } => K::Closed,
        }
    }
}

impl From<TransportError> for Error {
    /// A malformed selector is the caller's argument and nothing at an address is "not found"; everything else the
    /// bus refused stays a transport error.
    fn from(e: TransportError) -> Error {
        match e {
            TransportError::Selector { selector, reason } => Error::InvalidSelector { selector, reason },
            TransportError::NotFound { device, reason } => Error::NotFound { device, reason },
            e => Error::Transport(e),
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for the generic invalid-argument error.
pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T> {
    Err(Error::InvalidArgument(msg.into()))
}

/// A grid as a user writes it: `cores (0,0)-(3,1)`, `banks 2-5`.
pub(crate) struct GridText<'a>(pub &'a ShardGrid);

impl fmt::Display for GridText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self.0 {
            ShardGrid::Cores { x0, y0, x1, y1 } => write!(f, "cores ({x0},{y0})-({x1},{y1})"),
            ShardGrid::Banks { first, last } => write!(f, "banks {first}-{last}"),
        }
    }
}

/// A core rectangle as a grid of cores.
pub(crate) fn cores_grid(r: CoreRect) -> ShardGrid {
    ShardGrid::Cores { x0: r.x0, y0: r.y0, x1: r.x1, y1: r.y1 }
}

struct ShapesText<'a>(&'a [[u32; 2]]);

impl fmt::Display for ShapesText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.len() == 1 { "shape " } else { "shapes " })?;
        for (i, [r, c]) in self.0.iter().enumerate() {
            write!(f, "{}[{r}, {c}]", if i == 0 { "" } else { ", " })?;
        }
        f.write_str(if self.0.len() == 1 { " is not allowed:" } else { " do not agree:" })
    }
}

struct TraceText<'a>(u32, &'a TraceProblem, &'a str);

impl fmt::Display for TraceText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let TraceText(tid, problem, device) = *self;
        match problem {
            TraceProblem::NotFound => write!(
                f,
                "trace {tid} does not exist on device {device} (never captured, already released, or its capture \
                 was dropped by a device reset); capture it first"
            ),
            TraceProblem::Capturing { queue } => write!(
                f,
                "trace {tid} is still being captured on queue {queue}; end the capture (end_trace_capture on queue \
                 {queue}) first"
            ),
            TraceProblem::AlreadyEnded => write!(f, "the capture of trace {tid} already ended; replay or release it"),
            TraceProblem::OtherCapture { queue, capturing } => write!(
                f,
                "the capture in progress there is trace {capturing}, not {tid}; end trace {capturing} on queue \
                 {queue}"
            ),
            TraceProblem::LostInReset => write!(
                f,
                "the trace was lost when device {device} was reset (the reset erases device memory); release it and \
                 capture again"
            ),
            TraceProblem::EventOwned { owner } => write!(
                f,
                "the event is recorded inside trace {owner}, whose every replay records it again with a fresh id; \
                 recording it elsewhere too would make waits on it ambiguous. Use another event, or release trace \
                 {owner} first"
            ),
            TraceProblem::WaitNeverRecorded { index } => write!(
                f,
                "wait {index} inside trace {tid} (captured with wait_for_event) is for an event that has never been \
                 recorded, so the replay could never proceed past it; record the event (or replay the trace that \
                 records it) before execute_trace"
            ),
            TraceProblem::WaitLostInReset { index } => write!(
                f,
                "wait {index} inside trace {tid} is for an event last recorded before device {device} was reset, \
                 which dropped that record; record the event again before execute_trace"
            ),
            TraceProblem::EventsNeedContract { minor, needed } => write!(
                f,
                "device {device} speaks device contract 1.{minor}, and events inside a trace need 1.{needed} \
                 (docs/device-interface.md §4.2.9); record and wait for the event outside the capture, or use a \
                 device of contract 1.{needed}"
            ),
            TraceProblem::TooManyWaits { max } => write!(
                f,
                "trace {tid} already holds {max} waits, the most one replay record can carry on this device's issue \
                 ring; open the device with a larger issue ring, or split the trace"
            ),
            TraceProblem::NotRebindable { binding, aliased: false } => write!(
                f,
                "binding {binding} of trace {tid} is used by a launch that did not declare which runtime words hold \
                 its address (Program::run, or launch_with without an address role for it), so rebinding it could \
                 leave the old address in place; capture the trace with launch_with roles, or with the built-in \
                 operations, to rebind it"
            ),
            TraceProblem::NotRebindable { binding, aliased: true } => write!(
                f,
                "binding {binding} of trace {tid} cannot be rebound: its range was used by another buffer during the \
                 capture (it was freed inside the capture and something, e.g. an intermediate, was allocated there), \
                 so the trace's words for both point at that range and moving one would leave the other writing the \
                 old one; keep the buffer alive until end_trace_capture to rebind it"
            ),
            TraceProblem::PatchRacesReplay { queue } => write!(
                f,
                "a replay of trace {tid} on queue {queue} may still be running, and patching the trace now would \
                 change it under that replay; record an event on queue {queue} after the replay and pass it to the \
                 patch (the patch's queue then waits for it on the device), or synchronize queue {queue} first"
            ),
            TraceProblem::PatchIncomplete { words, queue } => write!(
                f,
                "a patch of trace {tid} stopped after enqueueing part of its writes on queue {queue}, so {words} of its \
                 words on the device may hold old or new values and a replay could run a mix; patch the trace again \
                 on queue {queue} once it has room (a patch that completes rewrites those words from the driver's \
                 copy, which kept the values of before), or release it"
            ),
            TraceProblem::RangeFreed { memory, start, end, expected, address, output } => write!(
                f,
                "the trace {} {} range [{start:#x}, {end:#x}) of the {expected} buffer at {address:#x} it was \
                 captured with, and no live buffer holds that range now. Replaying would read or write memory that \
                 may belong to something else. Keep that buffer alive, or allocate a buffer of the same spec at \
                 {address:#x} again, before execute_trace",
                role(*output),
                memory.name()
            ),
            TraceProblem::RangeReused { memory, start, end, expected, address, output, found } => write!(
                f,
                "the trace {} {} range [{start:#x}, {end:#x}) of the {expected} buffer at {address:#x} it was \
                 captured with, but {found} holds that range now. Replaying would overwrite or misread it. Free that \
                 and allocate a buffer of the captured spec at {address:#x} (or capture the trace again) before \
                 execute_trace",
                role(*output),
                memory.name()
            ),
        }
    }
}

/// How a trace uses a range it does not own, for messages.
fn role(output: bool) -> &'static str {
    if output { "writes (its output, left to the caller)" } else { "reads (its input, from outside the trace)" }
}

fn queue_out_of_range(queue: u16, queues: u16, device_queues: u16, device: &str) -> String {
    let ids = match queues {
        0 => "no queue ids".to_string(),
        1 => "id 0".to_string(),
        n => format!("ids 0 to {}", n - 1),
    };
    let mut s = format!(
        "command queue {queue} does not exist: device {device} was opened with {queues} queue(s) ({ids}); pass one \
         of those"
    );
    if queue < device_queues {
        s.push_str(&format!(
            ", or open the device with num_command_queues={} or more (it has {device_queues})",
            queue as u32 + 1
        ));
    } else if device_queues > queues {
        s.push_str(&format!(
            ", or open the device with up to num_command_queues={device_queues} (all it has) for more"
        ));
    }
    s
}

fn kernel_unavailable(kernel: &str, device: &str, catalog: u32, known: bool) -> String {
    use ttdrv_contract::kernel::BuiltinKernel;
    let names = |mask: u32| -> String {
        let v: Vec<&str> = BuiltinKernel::ALL.iter().filter(|k| mask & k.bit() != 0).map(|k| k.name()).collect();
        if v.is_empty() { "none".into() } else { v.join(", ") }
    };
    if known {
        format!(
            "device {device} has no built-in kernel {kernel} (its catalog mask is {catalog:#x}: {}); this operation \
             needs it: use a device whose catalog has it",
            names(catalog)
        )
    } else {
        format!(
            "{kernel} is not a built-in kernel: the built-in kernels are {} (device {device} has {}). Names outside \
             the `ttdrv.` prefix are custom kernel images",
            names(u32::MAX),
            names(catalog)
        )
    }
}

fn trace_region_text(device: &str, trace: u32, needed: u64, free: u64, region: u64, owned: u64) -> String {
    // The first sentence is tt-metal's, so users searching for it find the same advice.
    let have = if region == 0 {
        "the device was opened without a trace region".to_string()
    } else {
        format!("only {free}B of the {region}B trace region is free ({owned}B of it owned by live traces)")
    };
    let release = if owned > 0 { ", or release other traces" } else { "" };
    format!(
        "Creating trace buffers of size {needed}B on device {device}, but {have} (trace_region_size={region}B). Open \
         the device with trace_region_size of at least {}B{release}. Trace {trace} stays captured: query its size, \
         or release it",
        region - free + needed
    )
}

fn contents_text(call: &str, spec: &BufferSpec, contents: &Contents, device: &str) -> String {
    let why = match *contents {
        Contents::PartialWrite { queue, bytes_enqueued, bytes_total } => format!(
            "a write to it on queue {queue} stopped part-way ({bytes_enqueued} of its {bytes_total} bytes were \
             enqueued, the rest never will be)"
        ),
        Contents::LostInReset => format!(
            "device {device} was reset since it was last written, and a reset erases device memory \
             (docs/device-interface.md §7.2); writes still in flight when the device faulted or was reset were \
             dropped with it"
        ),
        Contents::Defined => "they are defined".to_string(),
    };
    format!(
        "{call} of buffer {spec}: its contents are undefined: {why}. Write the whole buffer again \
         (copy_host_to_device_tensor: Buffer::write, ttdrv_buffer_write) before reading it"
    )
}

fn write_stopped_text(
    spec: &BufferSpec,
    queue: u16,
    records_enqueued: u32,
    records_total: u32,
    bytes_enqueued: u64,
    bytes_total: u64,
) -> String {
    if records_enqueued == records_total {
        format!(
            "The write to buffer {spec} on queue {queue} was enqueued whole ({records_total} records, {bytes_total} \
             bytes) and lands unless the device is reset; only the wait for it failed, so the buffer's contents are \
             what was written once queue {queue} reaches those records."
        )
    } else {
        format!(
            "The write to buffer {spec} on queue {queue} stopped part-way: {records_enqueued} of its \
             {records_total} records ({bytes_enqueued} of {bytes_total} bytes) were enqueued and land unless the \
             device is reset; the rest never will. The buffer's contents are now undefined: reads of it fail with \
             CONTENTS_UNDEFINED (Buffer::contents, ttdrv_buffer_contents) until it is written whole again."
        )
    }
}

fn not_ready_text(device: &str, status: u32, after: Duration, emulated: bool) -> String {
    let what = format!(
        "did not become ready within {after:?} of a reset (STATUS {status:#x}; the contract allows 100 ms, \
         docs/device-interface.md §7.2)"
    );
    if emulated {
        format!(
            "the emulated device {device} {what}: one of its queue threads is still finishing modelled work. No host \
             action is needed: reset it again (Device::reset, ttdrv_device_reset() in C), or close it and open a new \
             emulated device"
        )
    } else {
        format!(
            "{device} {what}. Reset it again; if it stays unready, reset it at the bus (a PCI function-level reset, \
             echo 1 > /sys/bus/pci/devices/<address>/reset) and, failing that, the device may need a host reboot"
        )
    }
}

fn timeout_text(waiting_for: &str, device: &str, after: Duration, busy: bool, report: &str) -> String {
    let why = if busy {
        "The device was busy: queues retired records during the wait or are executing one, so the work is \
         progressing but slowly. Raise DeviceParams::timeout (timeout_ms in C) if it needs longer"
    } else {
        "The device was idle: no queue retired a record during the wait, so the wait waits for something that \
         never happens (an event recorded after the wait, a queue nobody drives, a queue stalled in an EVENT_WAIT \
         below); raising DeviceParams::timeout (timeout_ms in C) will not help until that is fixed"
    };
    let mut s = format!("{waiting_for} on device {device} did not complete within {after:?}. {why}.");
    for line in report.lines() {
        s.push_str("\n  ");
        s.push_str(line);
    }
    s
}
