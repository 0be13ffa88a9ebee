//! The emulated IOMMU: the only way the emulated device reaches host memory.
//!
//! A mapping is the device's own `mmap` of the memfd the driver handed over, so the device shares pages with the
//! driver, never Rust objects. Any access outside a mapping is an `IOMMU` fault naming the IOVA.

use super::Fault;
use memmap2::{MmapOptions, MmapRaw};
use std::collections::BTreeMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use ttdrv_contract::Iova;
use ttdrv_contract::regs::FaultCode;

/// One IOVA window and the device's view of its pages.
pub struct Mapping {
    iova: u64,
    len: u64,
    map: Backing,
}

/// How the device reaches a mapping's pages.
enum Backing {
    /// Its own `mmap` of the driver's memfd.
    File(MmapRaw),
    /// Memory of this process at an address, as a real IOMMU maps a process's pinned user pages (VFIO's
    /// `VFIO_IOMMU_MAP_DMA` of a `vaddr`): the host's registered memory, which has no file behind it.
    User(*mut u8),
}

// SAFETY: a `User` mapping is memory the mapper promised stays valid until `Iommu::unmap` returns
// (`Iommu::map_user`), and `unmap` waits until no `Window` holds the mapping; the device accesses it only through
// raw pointers, as it does a file mapping.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn base(&self) -> *mut u8 {
        match &self.map {
            Backing::File(m) => m.as_mut_ptr(),
            Backing::User(p) => *p,
        }
    }
}

/// A translated window: valid while the `Arc` lives, even if the driver unmaps the IOVA meanwhile (a real IOTLB
/// entry would be invalidated; the engine re-translates when [`Iommu::generation`] changes).
#[derive(Clone)]
pub struct Window {
    map: Arc<Mapping>,
}

impl Window {
    /// Pointer to `len` bytes at `iova`, or an `IOMMU` fault if they leave the window.
    pub fn at(&self, iova: u64, len: u64) -> Result<*mut u8, Fault> {
        let m = &self.map;
        if iova < m.iova || iova.checked_add(len).is_none_or(|e| e > m.iova + m.len) {
            return Err(Fault::new(FaultCode::Iommu, iova));
        }
        // SAFETY: the range is inside the mapping.
        Ok(unsafe { m.base().add((iova - m.iova) as usize) })
    }
}

/// The IOMMU's mapping table.
#[derive(Default)]
pub struct Iommu {
    maps: RwLock<BTreeMap<u64, Arc<Mapping>>>,
    generation: AtomicU64,
}

impl Iommu {
    /// Maps `len` bytes of `fd` at `fd_offset` for the device at `iova`.
    pub fn map(&self, fd: RawFd, fd_offset: u64, len: u64, iova: Iova) -> Result<(), String> {
        if fd_offset % 4096 != 0 {
            return Err("IOVA, length and offset must be non-zero multiples of 4 KiB".into());
        }
        self.insert(len, iova, || {
            let len_usize = usize::try_from(len).map_err(|_| "mapping larger than the address space")?;
            // The device's own view of the driver's pages, shared (MAP_SHARED) like a device's DMA access.
            let map = MmapOptions::new()
                .offset(fd_offset)
                .len(len_usize)
                .map_raw(fd)
                .map_err(|e| format!("device-side mmap failed: {e}"))?;
            Ok(Backing::File(map))
        })
    }

    /// Maps `len` bytes of this process at `vaddr` for the device at `iova` (no file behind them: the host's
    /// registered memory).
    ///
    /// # Safety
    /// The memory must stay allocated (readable and writable) until [`Iommu::unmap`] of this mapping returns; the
    /// device may read and write it at any time until then.
    pub unsafe fn map_user(&self, vaddr: *mut u8, len: u64, iova: Iova) -> Result<(), String> {
        if vaddr.is_null() || vaddr as usize % 4096 != 0 {
            return Err(format!("address {vaddr:p} must be a non-null multiple of 4 KiB"));
        }
        self.insert(len, iova, || Ok(Backing::User(vaddr)))
    }

    fn insert(&self, len: u64, iova: Iova, backing: impl FnOnce() -> Result<Backing, String>) -> Result<(), String> {
        if len == 0 || iova.0 % 4096 != 0 || len % 4096 != 0 {
            return Err("IOVA, length and offset must be non-zero multiples of 4 KiB".into());
        }
        let end = iova.0.checked_add(len).ok_or("IOVA range overflows")?;
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        let overlaps = maps.range(..end).next_back().is_some_and(|(_, m)| m.iova + m.len > iova.0);
        if overlaps {
            return Err(format!("IOVA range {iova}..{end:#x} overlaps an existing mapping"));
        }
        let map = backing()?;
        maps.insert(iova.0, Arc::new(Mapping { iova: iova.0, len, map }));
        Ok(())
    }

    /// Removes the mapping that starts at `iova` and is `len` bytes long.
    pub fn unmap(&self, iova: Iova, len: u64) -> Result<(), String> {
        let mut maps = self.maps.write().unwrap_or_else(|e| e.into_inner());
        match maps.get(&iova.0) {
            Some(m) if m.len == len => {
                let m = maps.remove(&iova.0).expect("mapping found above");
                self.generation.fetch_add(1, Ordering::Release);
                drop(maps);
                // Memory of the process (not the device's own mmap) goes back to its owner when this returns: wait,
                // as a real IOMMU's unmap waits for the IOTLB invalidation, until no engine holds a window on it.
                // Engines hold such a window only while executing one WRITE_HOST/READ_HOST record.
                if matches!(m.map, Backing::User(_)) {
                    while Arc::strong_count(&m) > 1 {
                        std::thread::yield_now();
                    }
                }
                Ok(())
            }
            Some(m) => Err(format!("mapping at {iova} is {:#x} bytes, not {len:#x}", m.len)),
            None => Err(format!("no mapping starts at {iova}")),
        }
    }

    /// Bumped by every unmap; holders of a [`Window`] re-translate when it changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The window holding `len` bytes at `iova`, or an `IOMMU` fault.
    pub fn translate(&self, iova: u64, len: u64) -> Result<Window, Fault> {
        let maps = self.maps.read().unwrap_or_else(|e| e.into_inner());
        let m = maps.range(..=iova).next_back().map(|(_, m)| m.clone());
        match m {
            Some(map) if iova.checked_add(len).is_some_and(|e| e <= map.iova + map.len) => Ok(Window { map }),
            _ => Err(Fault::new(FaultCode::Iommu, iova)),
        }
    }

    /// Copies `data` to host memory at `iova`.
    pub fn write(&self, iova: u64, data: &[u8]) -> Result<(), Fault> {
        let w = self.translate(iova, data.len() as u64)?;
        let p = w.at(iova, data.len() as u64)?;
        // SAFETY: `at` checked the range; `data` is device-local.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }

    /// Number of live mappings.
    pub fn len(&self) -> usize {
        self.maps.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True without mappings.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
