//! Registered host memory (tt-metal's pinned memory, CUDA's `cudaHostRegister`): a caller's own allocation, mapped
//! for the device once, which writes read from and reads write into directly (`WRITE_HOST` / `READ_HOST`,
//! docs/device-interface.md §4.2.10), with no copy through the rings.
//!
//! Rules: the region starts on a host page boundary and is a whole number of pages (4 KiB on x86-64; the rule is
//! the IOMMU's, which maps pages); it is pinned for as long as it is registered (through VFIO the kernel pins it and
//! counts it against `RLIMIT_MEMLOCK`, which `memlock_budget` allows `REGISTERED_HOST_ALLOWANCE` for; the
//! emulated device reaches it by address and pins nothing). While registered, the region belongs to the device:
//! a transfer may read or write it at any time until it completes, and [`HostRegistration::unregister`] waits for
//! every transfer that touches it (or, after a reset, for nothing: the reset dropped them), so once it returns
//! nothing touches the memory again. Freeing the memory while it is registered is the caller's bug, as it is with
//! CUDA: the Rust API makes registration `unsafe` for that reason.

use super::{Device, DeviceInner};
use crate::error::{Error, Result};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use ttdrv_contract::Iova;

/// Host page size the registration rules are stated in.
pub const HOST_PAGE: usize = 4096;

/// Where the last transfer touching a registration on one queue ends: its epoch and the issue-ring write position
/// after its last record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct UseMark {
    pub epoch: u32,
    pub wr: u32,
}

/// Registration state, under one lock: transfers record their use here while holding it, so `unregister` (which
/// takes it to close the registration) sees every transfer that will ever touch the memory.
#[derive(Debug)]
pub(crate) struct Uses {
    pub open: bool,
    pub per_queue: Vec<Option<UseMark>>,
}

/// A caller's host memory registered with a device ([`Device::register_host_memory`]). Unregistered by
/// [`HostRegistration::unregister`] or on drop (which logs what `unregister` would have returned).
pub struct HostRegistration {
    pub(crate) dev: Arc<DeviceInner>,
    ptr: *mut u8,
    len: usize,
    pub(crate) iova: Iova,
    pub(crate) uses: Mutex<Uses>,
}

// SAFETY: the registration refers to memory the caller keeps valid while it is registered (register's contract);
// the driver never creates references to it, the device reaches it through its IOMMU; all state is under a lock.
unsafe impl Send for HostRegistration {}
// SAFETY: as above.
unsafe impl Sync for HostRegistration {}

impl std::fmt::Debug for HostRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HostRegistration({:p}, {:#x} bytes at IOVA {})", self.ptr, self.len, self.iova)
    }
}

impl Device {
    /// Registers `len` bytes at `ptr`, the caller's own allocation, with the device: maps them for its DMA (pinned
    /// through VFIO), so that [`super::Buffer::write_from`] and [`super::Buffer::read_into`] move data between the
    /// buffer and this memory with no staging copy. `ptr` and `len` must be multiples of 4 KiB (a host page),
    /// `len` non-zero. A region may be registered once per device at a time; distinct regions may not overlap.
    ///
    /// # Safety
    /// The memory must stay allocated, and must not be given back to the system (freed, unmapped), until
    /// [`HostRegistration::unregister`] returns or the registration is dropped: until then the device may read or
    /// write it, whenever a transfer using it runs. Reading or writing it while a transfer that uses it is in flight
    /// gives unspecified data (never unsafety in the driver).
    pub unsafe fn register_host_memory(&self, ptr: *mut u8, len: usize) -> Result<HostRegistration> {
        let dev = &self.inner;
        dev.check_usable()?;
        if ptr.is_null() || ptr as usize % HOST_PAGE != 0 || len == 0 || len % HOST_PAGE != 0 {
            return Err(Error::InvalidArgument(format!(
                "register_host_memory: address {ptr:p} and length {len:#x} must be non-zero multiples of the host page \
                 ({HOST_PAGE} bytes); allocate with posix_memalign/aligned_alloc (or mmap) and round the length up"
            )));
        }
        if (ptr as usize).checked_add(len).is_none() {
            return Err(Error::InvalidArgument(format!(
                "register_host_memory: {len:#x} bytes at {ptr:p} pass the end of the address space"
            )));
        }
        let t = dev.transport()?;
        let iova = dev.iovas.lock().unwrap_or_else(|e| e.into_inner()).alloc(len as u64, HOST_PAGE as u64)?;
        // SAFETY: the caller keeps the memory allocated until unregister (this function's contract), which unmaps
        // it before returning.
        if let Err(e) = unsafe { t.dma_map_user(ptr, len, iova) } {
            dev.iovas.lock().unwrap_or_else(|e| e.into_inner()).free(iova, len as u64);
            return Err(e.into());
        }
        log::debug!("{}: registered {len:#x} bytes of host memory at {ptr:p} as IOVA {iova}", dev.info.name);
        Ok(HostRegistration {
            dev: dev.clone(),
            ptr,
            len,
            iova,
            uses: Mutex::new(Uses { open: true, per_queue: vec![None; dev.queues.len()] }),
        })
    }
}

impl HostRegistration {
    /// The registered memory's address.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes registered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a registration has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True while the registration can carry transfers (not unregistered).
    pub fn is_registered(&self) -> bool {
        self.uses.lock().unwrap_or_else(|e| e.into_inner()).open
    }

    /// Unregisters the memory: refuses new transfers at once, waits until every transfer that touches it has
    /// completed (a device reset drops them instead; they never run afterwards), then unmaps it from the device.
    /// Once this returns `Ok`, the device never touches the memory again and the caller may free it.
    ///
    /// A transfer that does not complete within the device's timeout (a hung device) fails the call with
    /// [`Error::Timeout`]: the memory then stays registered and must stay allocated; reset the device
    /// ([`Device::reset`]) and call again. Calling it again after success does nothing.
    pub fn unregister(&self) -> Result<()> {
        let marks = {
            let mut u = self.uses.lock().unwrap_or_else(|e| e.into_inner());
            if !u.open && u.per_queue.is_empty() {
                return Ok(());
            }
            u.open = false;
            u.per_queue.clone()
        };
        let dev = &self.dev;
        let t = match dev.transport() {
            Ok(t) => t,
            // Closed: close stopped the device and dropped the transport, and with it every mapping.
            Err(_) => return self.forget(),
        };
        for (q, m) in marks.iter().enumerate() {
            let Some(m) = *m else { continue };
            let slot = &dev.queues[q];
            let what = || format!("unregistering host memory: transfers on queue {q} that use it to complete");
            dev.wait_until(q as u16, &t, dev.params.timeout, &what, || {
                if dev.epoch.load(Ordering::Acquire) != m.epoch {
                    // A reset since dropped the transfer: the device will never run it.
                    return Ok(true);
                }
                let mut st = slot.state.lock().unwrap_or_else(|e| e.into_inner());
                match st.issuer.as_mut() {
                    Some(i) => i.reached(m.wr).map_err(|v| dev.protocol(v)),
                    // Closed meanwhile: the close stopped the device.
                    None => Ok(true),
                }
            })?;
            self.uses.lock().unwrap_or_else(|e| e.into_inner()).per_queue[q] = None;
        }
        t.dma_unmap(self.iova, self.len as u64)?;
        dev.iovas.lock().unwrap_or_else(|e| e.into_inner()).free(self.iova, self.len as u64);
        log::debug!("{}: unregistered host memory at {:p}", dev.info.name, self.ptr);
        self.forget()
    }

    /// Marks the registration gone for good.
    fn forget(&self) -> Result<()> {
        let mut u = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        u.open = false;
        u.per_queue.clear();
        Ok(())
    }

    /// Starts a transfer using `[offset, offset + bytes)` of the registration: checks the device and the range,
    /// and returns the lock under which the transfer enqueues its records and records its use.
    pub(crate) fn begin(
        &self,
        dev: &Arc<DeviceInner>,
        offset: usize,
        bytes: u64,
        what: &'static str,
    ) -> Result<std::sync::MutexGuard<'_, Uses>> {
        if !Arc::ptr_eq(&self.dev, dev) {
            return Err(Error::WrongDevice {
                object: "registered host memory",
                object_device: self.dev.info.name.clone(),
                device: dev.info.name.clone(),
            });
        }
        let u = self.uses.lock().unwrap_or_else(|e| e.into_inner());
        if !u.open {
            return Err(Error::InvalidArgument(format!(
                "{what}: the host memory at {:p} is no longer registered; register it again",
                self.ptr
            )));
        }
        if (offset as u64).checked_add(bytes).is_none_or(|end| end > self.len as u64) {
            return Err(Error::InvalidArgument(format!(
                "{what}: {bytes} bytes at offset {offset:#x} do not fit the {:#x} registered bytes; pass an offset \
                 at most {:#x}",
                self.len,
                (self.len as u64).saturating_sub(bytes)
            )));
        }
        Ok(u)
    }
}

impl Drop for HostRegistration {
    fn drop(&mut self) {
        if let Err(e) = self.unregister() {
            // The memory may still be reached by a hung device; nothing better can be done from a destructor.
            log::error!("dropping registered host memory at {:p}: {e}", self.ptr);
        }
    }
}
