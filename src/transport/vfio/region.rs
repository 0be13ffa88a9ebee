//! Device regions: BAR0 (mapped where the kernel allows, read and written through the device file elsewhere) and
//! PCI configuration space.

use super::ioctl;
use memmap2::{MmapOptions, MmapRaw};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use vfio_bindings::bindings::vfio as sys;

/// Offset of the PCI command register in configuration space.
const PCI_COMMAND: u64 = 0x04;
/// Command register: memory space decoding.
pub const CMD_MEMORY: u16 = 1 << 1;
/// Command register: bus mastering (the device may issue DMA).
pub const CMD_BUS_MASTER: u16 = 1 << 2;

/// Where a region sits in the device file.
#[derive(Clone, Copy, Debug)]
struct RegionInfo {
    /// Region size in bytes.
    size: u64,
    /// Offset of the region in the device file.
    offset: u64,
}

/// One `mmap` of part of a region, unmapped on drop.
struct Mapping {
    /// Offset of the mapping inside the region.
    start: u64,
    map: MmapRaw,
}

/// A BAR: mmap'd areas for fast access, the device file for the rest.
pub struct Bar {
    file: Arc<File>,
    info: RegionInfo,
    maps: Vec<Mapping>,
}

/// Why a region could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    /// The region-info ioctl failed.
    #[error(transparent)]
    Ioctl(#[from] ioctl::IoctlError),
    /// The region exists but is empty or unusable.
    #[error("{0}")]
    Unusable(String),
}

impl Bar {
    /// Sets up region `index` (`VFIO_PCI_BAR0_REGION_INDEX`, ...) of `file`: every area the kernel allows to be
    /// mapped (the whole region, or the areas of its sparse-mmap capability) is mapped; other offsets go through
    /// `pread`/`pwrite`. A failed `mmap` is not fatal: those offsets use the file too.
    pub fn new(file: &Arc<File>, index: u32) -> Result<Bar, RegionError> {
        let r = ioctl::region_info(file.as_fd(), index)?;
        let info = RegionInfo { size: r.info.size, offset: r.info.offset };
        if info.size == 0 {
            return Err(RegionError::Unusable(format!("region {index} is not implemented by the device (size 0)")));
        }
        let rw = sys::VFIO_REGION_INFO_FLAG_READ | sys::VFIO_REGION_INFO_FLAG_WRITE;
        if r.info.flags & rw != rw {
            return Err(RegionError::Unusable(format!(
                "region {index} is not readable and writable (flags {:#x})",
                r.info.flags
            )));
        }
        let mut bar = Bar { file: file.clone(), info, maps: Vec::new() };
        if r.info.flags & sys::VFIO_REGION_INFO_FLAG_MMAP == 0 {
            log::debug!("region {index} cannot be mmap'd; using pread/pwrite");
            return Ok(bar);
        }
        let mut areas = vec![(0, info.size)];
        if r.info.flags & sys::VFIO_REGION_INFO_FLAG_CAPS != 0 {
            for cap in ioctl::caps(&r.bytes, r.info.cap_offset) {
                if cap.id as u32 == sys::VFIO_REGION_INFO_CAP_SPARSE_MMAP {
                    areas = ioctl::sparse_areas(&r.bytes, &cap);
                }
            }
        }
        for (start, len) in areas {
            let end = start.checked_add(len);
            if len == 0 || end.is_none_or(|e| e > info.size) {
                continue;
            }
            match bar.map(start, len) {
                Ok(m) => bar.maps.push(m),
                Err(e) => log::warn!(
                    "cannot mmap {len:#x} bytes at {start:#x} of region {index} ({e}); using pread/pwrite there"
                ),
            }
        }
        Ok(bar)
    }

    fn map(&self, start: u64, len: u64) -> io::Result<Mapping> {
        let file_off = self.info.offset.checked_add(start).ok_or_else(|| io::Error::other("offset overflows"))?;
        let size = usize::try_from(len).map_err(|_| io::Error::other("size out of range"))?;
        let map =
            MmapOptions::new().offset(file_off).len(size).map_raw(std::os::fd::AsRawFd::as_raw_fd(&*self.file))?;
        Ok(Mapping { start, map })
    }

    /// Size of the region.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// True when at least part of the region is mmap'd.
    pub fn is_mapped(&self) -> bool {
        !self.maps.is_empty()
    }

    fn check(&self, off: u64) -> io::Result<()> {
        if off % 4 != 0 || off.checked_add(4).is_none_or(|e| e > self.info.size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {off:#x} is unaligned or outside the {:#x}-byte BAR", self.info.size),
            ));
        }
        Ok(())
    }

    /// The mapped address of the 4 bytes at `off`, if they are in a mapped area.
    fn mapped(&self, off: u64) -> Option<*mut u32> {
        let m = self.maps.iter().find(|m| off >= m.start && off + 4 <= m.start + m.map.len() as u64)?;
        // SAFETY: `off - m.start + 4 <= m.map.len()`, so the result is inside the mapping.
        Some(unsafe { m.map.as_mut_ptr().add((off - m.start) as usize) } as *mut u32)
    }

    /// Reads the aligned 32-bit register at `off` (one volatile load, or one 4-byte `pread`).
    pub fn read32(&self, off: u64) -> io::Result<u32> {
        self.check(off)?;
        if let Some(p) = self.mapped(off) {
            // SAFETY: `p` is 4-byte aligned (`off` is, and mappings start on page boundaries) and inside a live
            // mapping of the BAR; device memory is only accessed volatilely.
            return Ok(unsafe { std::ptr::read_volatile(p) });
        }
        let mut b = [0u8; 4];
        self.file.read_exact_at(&mut b, self.info.offset + off)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes the aligned 32-bit register at `off` (one volatile store, or one 4-byte `pwrite`).
    pub fn write32(&self, off: u64, val: u32) -> io::Result<()> {
        self.check(off)?;
        if let Some(p) = self.mapped(off) {
            // SAFETY: as in `read32`.
            unsafe { std::ptr::write_volatile(p, val) };
            return Ok(());
        }
        self.file.write_all_at(&val.to_le_bytes(), self.info.offset + off)
    }
}

/// PCI configuration space, read and written through the device file (the kernel filters what may change).
pub struct ConfigSpace {
    file: Arc<File>,
    offset: u64,
}

impl ConfigSpace {
    /// The configuration region of `file`.
    pub fn new(file: &Arc<File>) -> Result<ConfigSpace, RegionError> {
        let r = ioctl::region_info(file.as_fd(), sys::VFIO_PCI_CONFIG_REGION_INDEX)?;
        if r.info.size < 0x40 {
            return Err(RegionError::Unusable(format!("the PCI configuration region has only {} bytes", r.info.size)));
        }
        Ok(ConfigSpace { file: file.clone(), offset: r.info.offset })
    }

    /// The command register.
    pub fn command(&self) -> io::Result<u16> {
        let mut b = [0u8; 2];
        self.file.read_exact_at(&mut b, self.offset + PCI_COMMAND)?;
        Ok(u16::from_le_bytes(b))
    }

    /// Writes the command register.
    pub fn set_command(&self, v: u16) -> io::Result<()> {
        self.file.write_all_at(&v.to_le_bytes(), self.offset + PCI_COMMAND)
    }

    /// Sets or clears `bits` of the command register; returns the value written.
    pub fn update_command(&self, bits: u16, on: bool) -> io::Result<u16> {
        let cur = self.command()?;
        let new = if on { cur | bits } else { cur & !bits };
        if new != cur {
            self.set_command(new)?;
        }
        Ok(new)
    }
}
