//! Devices: open, close, info, finish, synchronize, reset.

use super::handles::{self, Kind, Obj};
use super::{FfiError, FfiResult, c_str, guard, out_ptr, ttdrv_status, write_out};
use crate::device::{Device, DeviceParams};
use crate::error::Error;
use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

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

/// Parameters of `ttdrv_device_open`. Fill with `ttdrv_device_params_init`, then change fields. `struct_size`
/// lets the struct grow in later releases without breaking callers built against this header.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_device_params {
    /// `sizeof(ttdrv_device_params)`, set by `ttdrv_device_params_init`.
    pub struct_size: u32,
    /// Command queues: 1 (default) up to what the device reports.
    pub num_command_queues: u32,
    /// Bytes of DRAM, device total, reserved for trace buffers; 0 (default) for none.
    pub trace_region_size: u64,
    /// Bytes of L1 per core reserved for L1_SMALL buffers; 0 (default) for none.
    pub l1_small_size: u32,
    /// Issue ring bytes per queue (power of two, 64 KiB to 1 GiB; default 16 MiB).
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

/// Oldest `struct_size` this library accepts (release 0.1).
const PARAMS_V1: u32 = std::mem::size_of::<ttdrv_device_params>() as u32;

impl ttdrv_device_params {
    fn defaults() -> ttdrv_device_params {
        let d = DeviceParams::default();
        ttdrv_device_params {
            struct_size: PARAMS_V1,
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

    fn to_params(&self) -> Result<DeviceParams, Error> {
        if self.struct_size < PARAMS_V1 {
            return Err(Error::InvalidArgument(format!(
                "params->struct_size is {}, expected at least {PARAMS_V1}; initialise the struct with \
                 ttdrv_device_params_init()",
                self.struct_size
            )));
        }
        let known = TTDRV_DEVICE_FLAG_TRACE_ON_DEMAND | TTDRV_DEVICE_FLAG_NO_HUGEPAGES | TTDRV_DEVICE_FLAG_PROFILING;
        if self.flags & !known != 0 || self.reserved != 0 {
            return Err(Error::InvalidArgument(format!(
                "params->flags {:#x} has unknown bits (or reserved is not 0); known flags are {known:#x}",
                self.flags
            )));
        }
        if self.timeout_ms == 0 {
            return Err(Error::InvalidArgument("params->timeout_ms is 0; use at least 1".into()));
        }
        let num_command_queues = u16::try_from(self.num_command_queues).map_err(|_| {
            Error::InvalidArgument(format!(
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
    /// `sizeof(ttdrv_device_info)`, set by the caller.
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

pub(crate) fn device(h: *mut ttdrv_device) -> FfiResult<Arc<Device>> {
    if h.is_null() {
        return Err(FfiError::Null("device"));
    }
    match handles::get(h as usize, Kind::Device) {
        Some(Obj::Device(d)) => Ok(d),
        _ => Err(FfiError::BadHandle(handles::describe_bad(h as usize, Kind::Device))),
    }
}

/// Fills `params` with the defaults (one command queue, no trace region, no L1 small region) and its
/// `struct_size`. Any thread.
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

/// Opens a device. `selector` is `"auto"` (a bound VFIO device, else the emulator; `TTDRV_DEVICE` overrides),
/// `"emu"` or `"emu:OPTIONS"` (the emulated device), or `"vfio:DDDD:BB:DD.F"`. `params` may be NULL for the
/// defaults. On success `*out` receives a handle to release with `ttdrv_device_close`. Several devices may be open
/// at once. Any thread.
///
/// Errors: NULL_PARAMETER, INVALID_ARGUMENT (bad selector or params), NOT_FOUND, UNSUPPORTED, HOST_MEMORY
/// (DMA memory; the message says how to fix memlock/hugepages), TRANSPORT.
///
/// # Safety
/// `selector` must be a NUL-terminated string; `params` NULL or readable; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_open(
    selector: *const c_char,
    params: *const ttdrv_device_params,
    out: *mut *mut ttdrv_device,
) -> ttdrv_status {
    guard("ttdrv_device_open", || {
        let sel = c_str(selector, "selector")?;
        let out = out_ptr(out, "out")?;
        let p = if params.is_null() {
            DeviceParams::default()
        } else {
            // SAFETY: non-NULL and readable per the contract; only the first `struct_size` bytes matter, and we
            // read our own (smaller or equal) struct after checking the size field first.
            let size = unsafe { std::ptr::addr_of!((*params).struct_size).read_unaligned() };
            if size < PARAMS_V1 {
                return Err(Error::InvalidArgument(format!(
                    "params->struct_size is {size}, expected at least {PARAMS_V1}; initialise the struct with \
                     ttdrv_device_params_init()"
                ))
                .into());
            }
            // SAFETY: the caller's struct is at least as large as ours.
            unsafe { params.read_unaligned() }.to_params()?
        };
        let dev = Device::open(sel, &p)?;
        write_out(out, handles::insert(Obj::Device(Arc::new(dev))) as *mut ttdrv_device);
        Ok(())
    })
}

/// Closes a device: drains its queues (waiting at most the timeout, or 5 s), then releases it. Work that does not
/// finish in time is abandoned (the device is reset). Buffers, events and programs of the device stay valid
/// handles but every call on them fails with TTDRV_STATUS_CLOSED; free them as usual. NULL is a no-op. In a
/// forked child it releases the handle without touching the hardware and returns TTDRV_STATUS_FORKED.
///
/// # Safety
/// `device` must be NULL or a value returned by `ttdrv_device_open`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_close(device: *mut ttdrv_device) -> ttdrv_status {
    guard("ttdrv_device_close", || {
        if device.is_null() {
            return Ok(());
        }
        match handles::remove(device as usize, Kind::Device) {
            Some(Obj::Device(d)) => Ok(d.close()?),
            _ => Err(FfiError::BadHandle(handles::describe_bad(device as usize, Kind::Device))),
        }
    })
}

/// Fills `*out` with what the device reports. Set `out->struct_size = sizeof(ttdrv_device_info)` first.
///
/// # Safety
/// `out` must point to a writable struct of at least `out->struct_size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_get_info(device: *mut ttdrv_device, out: *mut ttdrv_device_info) -> ttdrv_status {
    guard("ttdrv_device_get_info", || {
        let d = device_checked(device)?;
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL and readable.
        let size = unsafe { std::ptr::addr_of!((*out).struct_size).read_unaligned() };
        let ours = std::mem::size_of::<ttdrv_device_info>() as u32;
        if size < ours {
            return Err(Error::InvalidArgument(format!(
                "out->struct_size is {size}; set it to sizeof(ttdrv_device_info) ({ours}) before the call"
            ))
            .into());
        }
        let i = d.info();
        let mut name = [0 as c_char; 64];
        for (dst, b) in name.iter_mut().zip(i.name.bytes().take(63)) {
            *dst = b as c_char;
        }
        let info = ttdrv_device_info {
            struct_size: ours,
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
        write_out(out, info);
        Ok(())
    })
}

/// A device handle that is usable (not closed, not from a parent process).
pub(crate) fn device_checked(h: *mut ttdrv_device) -> FfiResult<Arc<Device>> {
    let d = device(h)?;
    d.inner.check_usable()?;
    Ok(d)
}

/// Blocks until command queue `cq` has finished all work enqueued so far, including delivering the data of
/// non-blocking reads. Errors: INVALID_ARGUMENT (no such queue), INVALID_STATE (trace capture on `cq`), TIMEOUT
/// (the message dumps the queue state), DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_device_finish(device: *mut ttdrv_device, cq: u16) -> ttdrv_status {
    guard("ttdrv_device_finish", || Ok(device_checked(device)?.finish(cq)?))
}

/// Blocks until every command queue has finished (`ttnn.synchronize_device`). Errors as `ttdrv_device_finish`.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_device_synchronize(device: *mut ttdrv_device) -> ttdrv_status {
    guard("ttdrv_device_synchronize", || Ok(device_checked(device)?.synchronize()?))
}

/// Resets the device (after a DEVICE_FAULT, or to abandon work): pending work and undelivered reads are dropped,
/// buffer contents, kernel images and traces are lost (buffers keep their addresses and handles). The device is
/// usable again afterwards. Call it while no other thread uses the device.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_device_reset(device: *mut ttdrv_device) -> ttdrv_status {
    guard("ttdrv_device_reset", || Ok(device_checked(device)?.reset()?))
}
