//! Device DRAM and per-core L1, backed sparsely: untouched memory costs nothing.

use super::Fault;
use memmap2::{MmapOptions, MmapRaw};
use ttdrv_contract::kernel::Geometry;
use ttdrv_contract::regs::FaultCode;
use ttdrv_contract::{DevAddr, Memory};

/// The device's memories. Accesses are raw copies: like real device memory, concurrent accesses from different
/// queues are not synchronised by the memory itself (events order them), so an incorrectly synchronised program
/// sees stale or mixed data, never a crash.
pub struct DeviceMemory {
    dram: MmapRaw,
    l1: MmapRaw,
    geo: Geometry,
}

impl DeviceMemory {
    /// Reserves address space for `geo`'s DRAM and L1.
    pub fn new(geo: Geometry) -> std::io::Result<DeviceMemory> {
        let dram = sparse(geo.dram_banks as u64 * geo.bank_size)?;
        let l1 = sparse(geo.grid_x as u64 * geo.grid_y as u64 * geo.l1_size)?;
        Ok(DeviceMemory { dram, l1, geo })
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// A pointer to `len` bytes at `at`, or an `ADDRESS` fault if the range leaves its unit.
    pub fn ptr(&self, at: DevAddr, len: u64) -> Result<*mut u8, Fault> {
        let (base, units, unit_size) = match at.mem {
            Memory::Dram => (self.dram.as_mut_ptr(), self.geo.dram_banks as u64, self.geo.bank_size),
            Memory::L1 => (self.l1.as_mut_ptr(), self.geo.grid_x as u64 * self.geo.grid_y as u64, self.geo.l1_size),
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

/// Address space for `len` bytes of device memory that costs nothing until touched (`MAP_NORESERVE`): a 1 GiB
/// emulated DRAM is free until used.
fn sparse(len: u64) -> std::io::Result<MmapRaw> {
    let len = usize::try_from(len.max(1))
        .map_err(|_| std::io::Error::other("device memory larger than the address space"))?;
    MmapOptions::new().len(len).no_reserve_swap().map_anon().map(MmapRaw::from)
}
