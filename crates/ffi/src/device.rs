//! Devices: open, close, info, finish, synchronize, reset.

use super::handles;
use super::versioned::{self, versioned};
use super::{FfiError, FfiResult, c_str, guard, out_ptr, ttdrv_status, write_out};
use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;
use ttdrv::device::{Device, DeviceParams};

/// An open device (opaque). Any thread may use it; each command queue may be driven by its own thread.
pub struct ttdrv_device {
    _private: [u8; 0],
}

/// `ttdrv_device_params.flags`: allocate trace buffers from ordinary DRAM (top-down) instead of a reserved
/// trace region.
pub const TTDRV_DEVICE_FLAG_TRACE_ON_DEMAND: u32 = 1;
/// `ttdrv_device_params.flags`: do not use hugepages for DMA memory.
pub const TTDRV_DEVICE_FLAG_NO_HUGEPAGES: u32 = 2;
/// `ttdrv_device_params.flags`: record host and device spans for timelines.
pub const TTDRV_DEVICE_FLAG_PROFILING: u32 = 4;

/// `sizeof(ttdrv_device_params)` in release 0.1 (frozen: docs/abi.md, "Versions").
pub const TTDRV_DEVICE_PARAMS_SIZE_V0_1: u32 = 40;
/// `sizeof(ttdrv_device_info)` in release 0.1 (frozen).
pub const TTDRV_DEVICE_INFO_SIZE_V0_1: u32 = 128;

/// Parameters of `ttdrv_device_open`. Fill with `ttdrv_device_params_init`, then change fields. `struct_size`
/// lets the struct grow in later releases without breaking callers built against this header: the library reads the
/// fields of the caller's release and gives later ones their defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_device_params {
    /// `sizeof(ttdrv_device_params)` of the caller's header, set by `ttdrv_device_params_init`.
    pub struct_size: u32,
    /// Command queues: 1 (default) up to what the device reports.
    pub num_command_queues: u32,
    /// Bytes of DRAM, device total, reserved for trace buffers; 0 (default) for none.
    pub trace_region_size: u64,
    /// Bytes of L1 per core reserved for L1_SMALL buffers; 0 (default) for none.
    pub l1_small_size: u32,
    /// Issue ring bytes per queue (power of two, 64 KiB to 1 GiB; default 32 MiB).
    pub issue_ring_size: u32,
    /// Completion ring bytes per queue (power of two, 64 KiB to 1 GiB; default 8 MiB).
    pub completion_ring_size: u32,
    /// Longest wait before a timeout error, in milliseconds (default 30000).
    pub timeout_ms: u32,
    /// `TTDRV_DEVICE_FLAG_*` bits.
    pub flags: u32,
    /// Must be 0.
    pub reserved: u32,
}

versioned!(
    ttdrv_device_params,
    "ttdrv_device_params_init()",
    [("0.1", TTDRV_DEVICE_PARAMS_SIZE_V0_1)],
    ttdrv_device_params::defaults()
);

impl ttdrv_device_params {
    fn defaults() -> ttdrv_device_params {
        let d = DeviceParams::default();
        ttdrv_device_params {
            struct_size: versioned::today::<ttdrv_device_params>(),
            num_command_queues: d.num_command_queues as u32,
            trace_region_size: d.trace_region_size,
            l1_small_size: d.l1_small_size,
            issue_ring_size: d.issue_ring_size,
            completion_ring_size: d.completion_ring_size,
            timeout_ms: d.timeout.as_millis() as u32,
            flags: 0,
            reserved: 0,
        }
    }

    fn to_params(self) -> FfiResult<DeviceParams> {
        let known = TTDRV_DEVICE_FLAG_TRACE_ON_DEMAND | TTDRV_DEVICE_FLAG_NO_HUGEPAGES | TTDRV_DEVICE_FLAG_PROFILING;
        if self.flags & !known != 0 || self.reserved != 0 {
            return Err(FfiError::invalid(format!(
                "params->flags {:#x} has unknown bits (or reserved is not 0); known flags are {known:#x} \
                 (TTDRV_DEVICE_FLAG_*), and reserved must be 0",
                self.flags
            )));
        }
        if self.timeout_ms == 0 {
            return Err(FfiError::invalid("params->timeout_ms is 0; use at least 1"));
        }
        let num_command_queues = u16::try_from(self.num_command_queues).map_err(|_| {
            FfiError::invalid(format!(
                "params->num_command_queues={} is not a possible queue count; ask for 1 to what the device reports",
                self.num_command_queues
            ))
        })?;
        Ok(DeviceParams {
            num_command_queues,
            trace_region_size: self.trace_region_size,
            l1_small_size: self.l1_small_size,
            trace_buffers_on_demand: self.flags & TTDRV_DEVICE_FLAG_TRACE_ON_DEMAND != 0,
            issue_ring_size: self.issue_ring_size,
            completion_ring_size: self.completion_ring_size,
            hugepages: self.flags & TTDRV_DEVICE_FLAG_NO_HUGEPAGES == 0,
            timeout: Duration::from_millis(self.timeout_ms as u64),
            profiling: self.flags & TTDRV_DEVICE_FLAG_PROFILING != 0,
        })
    }
}

/// What a device reports (`ttdrv_device_get_info`). Set `struct_size` before the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_device_info {
    /// `sizeof(ttdrv_device_info)`, set by the caller; the library sets it to the size it wrote.
    pub struct_size: u32,
    /// Contract major version the device speaks.
    pub contract_major: u32,
    /// Contract minor version.
    pub contract_minor: u32,
    /// Command queues the device has.
    pub device_queues: u32,
    /// Command queues opened.
    pub open_queues: u32,
    /// DRAM banks.
    pub dram_banks: u32,
    /// Bytes per DRAM bank.
    pub dram_bank_size: u64,
    /// Worker grid width.
    pub grid_x: u32,
    /// Worker grid height.
    pub grid_y: u32,
    /// L1 bytes per core.
    pub l1_size: u32,
    /// DRAM alignment in bytes.
    pub dram_alignment: u32,
    /// L1 alignment in bytes.
    pub l1_alignment: u32,
    /// Capability bits (device contract §2.1).
    pub caps: u32,
    /// Trace region bytes (device total) actually reserved.
    pub trace_region_size: u64,
    /// Device name, NUL-terminated (`emu#0`, `vfio:0000:01:00.0`).
    pub name: [c_char; 64],
}

versioned!(
    ttdrv_device_info,
    "sizeof(ttdrv_device_info)",
    [("0.1", TTDRV_DEVICE_INFO_SIZE_V0_1)],
    ttdrv_device_info {
        struct_size: versioned::today::<ttdrv_device_info>(),
        contract_major: 0,
        contract_minor: 0,
        device_queues: 0,
        open_queues: 0,
        dram_banks: 0,
        dram_bank_size: 0,
        grid_x: 0,
        grid_y: 0,
        l1_size: 0,
        dram_alignment: 0,
        l1_alignment: 0,
        caps: 0,
        trace_region_size: 0,
        name: [0; 64],
    }
);

pub(crate) fn device(h: *const ttdrv_device) -> FfiResult<Arc<Device>> {
    handles::lookup(h, "device")
}

/// Fills `*params` with the defaults — one command queue, no trace region, no L1_SMALL region, 32 MiB issue and 8 MiB
/// completion rings, a 30 s timeout, no flags (so DMA memory uses hugepages when there are free ones) — and sets
/// `struct_size`. Change fields afterwards.
///
/// Thread: any. Errors: NULL_PARAMETER.
///
/// # Safety
/// `params` must be NULL or point to a writable `ttdrv_device_params`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_params_init(params: *mut ttdrv_device_params) -> ttdrv_status {
    guard("ttdrv_device_params_init", || {
        write_out(out_ptr(params, "params")?, ttdrv_device_params::defaults());
        Ok(())
    })
}

/// Opens a device. `selector` is `"auto"` (a bound VFIO device with ttdrv's PCI identity if there is one, else the
/// emulator; the `TTDRV_DEVICE` environment variable overrides it), `"emu"` or `"emu:OPTIONS"` (the emulated device;
/// `ttdrv help devices` lists the options), or `"vfio:DDDD:BB:DD.F"`. The empty string is not a selector (pass
/// `"auto"`). `params` may be NULL for the defaults (`ttdrv_device_params_init`). Several devices may be open at once.
/// With hugepages requested (the default) and none free, DMA memory falls back to 4 KiB pages and a warning is logged
/// once per process (see `ttdrv_set_log_callback`).
///
/// Ownership: on success `*out` receives a new handle; the caller releases it with `ttdrv_device_close`. `selector` and
/// `params` are only read during the call. Thread: any; the handle may then be used from any thread.
/// Errors: NULL_PARAMETER (`selector`, `out`); INVALID_ARGUMENT (empty or unknown selector, unknown emulator option,
/// selector not UTF-8, `params->struct_size` not the size of any release's struct (docs/abi.md), unknown flag bits, `reserved` not 0, `timeout_ms`
/// 0, a queue count the device does not have, ring sizes that are not powers of two from 64 KiB to 1 GiB, a trace
/// region that leaves no ordinary DRAM, `l1_small_size` above half of L1); NOT_FOUND (no device at the address);
/// UNSUPPORTED (device contract or transport this build lacks); HOST_MEMORY (DMA memory could not be allocated or
/// locked: the message says how to raise the memlock limit or reserve hugepages); TRANSPORT; TIMEOUT (the device did
/// not come out of reset); PROTOCOL (the device reports an impossible configuration).
///
/// # Safety
/// `selector` must be a NUL-terminated string; `params` NULL or pointing to at least `params->struct_size` readable
/// bytes; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_open(
    selector: *const c_char,
    params: *const ttdrv_device_params,
    out: *mut *mut ttdrv_device,
) -> ttdrv_status {
    guard("ttdrv_device_open", || {
        let sel = c_str(selector, "selector")?;
        let out = out_ptr(out, "out")?;
        let p =
            if params.is_null() { DeviceParams::default() } else { versioned::read(params, "params")?.to_params()? };
        let dev = Device::open(sel, &p)?;
        write_out(out, handles::register::<Device, _>(dev));
        Ok(())
    })
}

/// Closes a device: drains every queue (all together, waiting at most the device's timeout and at most 5 s in all),
/// delivers the data of non-blocking reads enqueued before, then releases the queues, DMA memory and the device. Work
/// that does not finish in time is abandoned: the device is reset (waiting at most a further 1 s for it), reads not yet
/// delivered are dropped, and a warning naming each queue's state is logged (see `ttdrv_set_log_callback`; nothing is
/// printed). The call still returns OK. Whatever the device is doing, close returns within those bounds; once it
/// returns, the device writes no host memory and no read destination is written again. NULL is a no-op.
///
/// Ownership: `device` is released whatever the result; do not use it again (a second close is INVALID_HANDLE).
/// Buffers, events, programs and models of the device stay valid handles: calls that need the device fail with
/// TTDRV_STATUS_CLOSED, queries of what the handle itself knows (`ttdrv_buffer_address`, `_get_spec`, `_host_size`,
/// `_contents`, `ttdrv_mlp_ops_per_run`) still answer, and each must still be freed.
/// Thread: any, but not while another thread is using the device (its calls would fail with CLOSED).
/// Errors: INVALID_HANDLE; FORKED (in a forked child: the child's handle is released without touching the parent's
/// device).
///
/// # Safety
/// `device` must be NULL or a value returned by `ttdrv_device_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_close(device: *mut ttdrv_device) -> ttdrv_status {
    guard("ttdrv_device_close", || match handles::release::<Device, _>(device)? {
        Some(d) => Ok(d.close()?),
        None => Ok(()),
    })
}

/// Writes what the device reports — contract version, queues, DRAM banks and sizes, grid, L1, alignments, capabilities,
/// the trace region reserved and the device's name — to `*out`. Set `out->struct_size = sizeof(ttdrv_device_info)`
/// first: the fields of the caller's release are written (a struct from a newer header gets this release's fields)
/// and `out->struct_size` is set to the size written.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_ARGUMENT (`struct_size` smaller than any release's struct),
/// INVALID_HANDLE (`device` freed, closed or never returned by ttdrv), FORKED (opened by the parent of this process).
///
/// # Safety
/// `out` must be NULL or point to at least `out->struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_get_info(
    device: *const ttdrv_device,
    out: *mut ttdrv_device_info,
) -> ttdrv_status {
    guard("ttdrv_device_get_info", || {
        let d = device_checked(device)?;
        versioned::check_output(out, "out")?;
        let i = d.info();
        let mut name = [0 as c_char; 64];
        for (dst, b) in name.iter_mut().zip(i.name.bytes().take(63)) {
            *dst = b as c_char;
        }
        let info = ttdrv_device_info {
            struct_size: versioned::today::<ttdrv_device_info>(),
            contract_major: i.version_major as u32,
            contract_minor: i.version_minor as u32,
            device_queues: i.num_queues as u32,
            open_queues: d.num_queues() as u32,
            dram_banks: i.dram_banks,
            dram_bank_size: i.bank_size,
            grid_x: i.grid_x,
            grid_y: i.grid_y,
            l1_size: i.l1_size,
            dram_alignment: i.dram_align,
            l1_alignment: i.l1_align,
            caps: i.caps.bits(),
            trace_region_size: d.trace_region_bytes(),
            name,
        };
        versioned::write(out, "out", info)
    })
}

/// A device handle that is usable (not closed, not from a parent process).
pub(crate) fn device_checked(h: *const ttdrv_device) -> FfiResult<Arc<Device>> {
    let d = device(h)?;
    d.check_usable()?;
    Ok(d)
}

/// Blocks until command queue `cq` has finished all work enqueued so far, including delivering the data of non-blocking
/// reads (`ttnn.synchronize_device` for one queue, `Finish` in tt-metal). If it times out, the work and the non-blocking
/// reads stay pending (their destinations stay registered): wait again, or end them with `ttdrv_device_reset` or
/// `ttdrv_device_close`.
///
/// Thread: any; other threads may keep enqueuing meanwhile (their work is not waited for).
/// Errors: NULL_PARAMETER, INVALID_HANDLE (`device` freed, closed or never returned by ttdrv), FORKED (opened by the
/// parent of this process), INVALID_ARGUMENT (no such queue), INVALID_STATE (trace capture in progress on `cq`),
/// TIMEOUT (after the device's timeout; the message dumps the queue's state), DEVICE_FAULT (the message gives the fault
/// and its cause, or says the device was reset behind the driver; recover with `ttdrv_device_reset`), PROTOCOL (the
/// device wrote a word or completion entry the contract does not allow; the message names it and its value; every
/// later call fails the same way until `ttdrv_device_reset`).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_device_finish(device: *mut ttdrv_device, cq: u16) -> ttdrv_status {
    guard("ttdrv_device_finish", || Ok(device_checked(device)?.finish(cq)?))
}

/// Blocks until every command queue has finished all work enqueued so far (`ttnn.synchronize_device`).
///
/// Thread: any. Errors: as `ttdrv_device_finish`; INVALID_STATE if a capture is in progress on any queue.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_device_synchronize(device: *mut ttdrv_device) -> ttdrv_status {
    guard("ttdrv_device_synchronize", || Ok(device_checked(device)?.synchronize()?))
}

/// Resets the device (after a DEVICE_FAULT or PROTOCOL error, or to abandon work): pending work and undelivered reads
/// are dropped — once this returns, no read destination is ever written again, whatever the result — buffer contents,
/// kernel images and captured traces are lost (buffers keep their addresses and handles; traces must be captured
/// again, and captures in progress are dropped), and events recorded before the reset can no longer be waited for.
/// Per docs/device-interface.md §7.2 no buffer's contents survive a reset: every buffer allocated before it reports
/// `TTDRV_CONTENTS_LOST_IN_RESET` (`ttdrv_buffer_contents`) and cannot be read until written whole again, including
/// buffers whose writes returned OK but had not landed. The device is usable again afterwards.
///
/// Thread: any, but while no other thread uses the device. Errors: NULL_PARAMETER, INVALID_HANDLE (`device` freed,
/// closed or never returned by ttdrv), FORKED (opened by the parent of this process), TIMEOUT (the device did not
/// come back within 1 s: call it again; the message says whether a host-level reset could help — never for the
/// emulated device), TRANSPORT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_device_reset(device: *mut ttdrv_device) -> ttdrv_status {
    guard("ttdrv_device_reset", || Ok(device_checked(device)?.reset()?))
}
