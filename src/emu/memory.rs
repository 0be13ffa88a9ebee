//! Device DRAM and per-core L1, backed sparsely: untouched memory costs nothing.

use super::Fault;
use crate::hw::kernel::Geometry;
use crate::hw::regs::FaultCode;
use crate::hw::{DevAddr, Memory};
use crate::mmap::Mmap;

/// The device's memories. Accesses are raw copies: like real device memory, concurrent accesses from different
/// queues are not synchronised by the memory itself (events order them), so an incorrectly synchronised program
/// sees stale or mixed data, never a crash.
pub struct DeviceMemory {
    dram: Mmap,
    l1: Mmap,
    geo: Geometry,
}

impl DeviceMemory {
    /// Reserves address space for `geo`'s DRAM and L1.
    pub fn new(geo: Geometry) -> std::io::Result<DeviceMemory> {
        let dram = Mmap::sparse(((geo.dram_banks as u64 * geo.bank_size) as usize).max(1))?;
        let l1 = Mmap::sparse(((geo.grid_x as u64 * geo.grid_y as u64 * geo.l1_size) as usize).max(1))?;
        Ok(DeviceMemory { dram, l1, geo })
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// A pointer to `len` bytes at `at`, or an `ADDRESS` fault if the range leaves its unit.
    pub fn ptr(&self, at: DevAddr, len: u64) -> Result<*mut u8, Fault> {
        let (base, units, unit_size) = match at.mem {
            Memory::Dram => (self.dram.as_ptr(), self.geo.dram_banks as u64, self.geo.bank_size),
            Memory::L1 => (self.l1.as_ptr(), self.geo.grid_x as u64 * self.geo.grid_y as u64, self.geo.l1_size),
        };
        let end = at.offset.checked_add(len);
        if (at.unit as u64) >= units || end.is_none_or(|e| e > unit_size) {
            return Err(Fault::new(FaultCode::Address, at.offset));
        }
        // SAFETY: unit < units and offset + len <= unit_size keep the pointer inside the mapping.
        Ok(unsafe { base.add((at.unit as u64 * unit_size + at.offset) as usize) })
    }

    /// Copies device memory into `out`.
    pub fn read(&self, at: DevAddr, out: &mut [u8]) -> Result<(), Fault> {
        let p = self.ptr(at, out.len() as u64)?;
        // SAFETY: `ptr` checked the range; `out` is a distinct host buffer.
        unsafe { std::ptr::copy_nonoverlapping(p, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` into device memory.
    pub fn write(&self, at: DevAddr, data: &[u8]) -> Result<(), Fault> {
        let p = self.ptr(at, data.len() as u64)?;
        // SAFETY: `ptr` checked the range; `data` is a distinct host buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
        Ok(())
    }
}
