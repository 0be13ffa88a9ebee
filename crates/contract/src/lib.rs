//! The hardware contract: register map, host-memory layout, record formats and kernel images.
//!
//! Everything here mirrors `docs/device-interface.md` (cited as "contract §N"); nothing here has behaviour beyond
//! encoding and decoding. Both the driver and the emulated device depend on this module and on nothing of each other.
//!
//! Each concept is declared once, as a table (opcodes, fault codes, kernels: `table_enum!`) or a field layout (record
//! bodies and headers: `wire_struct!`), and everything else is derived from it; see [`wire`].

pub mod kernel;
pub mod records;
pub mod regs;
pub mod wire;

use std::fmt;

/// Contract major version this build speaks (contract §0: a device with another major is refused).
pub const CONTRACT_MAJOR: u16 = 1;
/// Contract minor version this build implements.
pub const CONTRACT_MINOR: u16 = 5;

/// PCI vendor ID of a ttdrv device (contract §1).
pub const PCI_VENDOR: u16 = 0x1234;
/// PCI device ID of a ttdrv device (contract §1).
pub const PCI_DEVICE: u16 = 0x7454;
/// Size of BAR0 (contract §1).
pub const BAR0_SIZE: usize = 64 * 1024;

/// Alignment and size granule of records and completion entries (contract §4).
pub const RECORD_ALIGN: usize = 64;
/// Offset of the issue ring inside a queue's host region (contract §5).
pub const RING_OFFSET: usize = 0x1000;
/// Smallest ring the device accepts (contract §3).
pub const MIN_RING: usize = 64 * 1024;
/// Largest ring the device accepts (contract §3).
pub const MAX_RING: usize = 1 << 30;
/// Most command queues a device can have (contract §2).
pub const MAX_QUEUES: usize = 16;
/// Bytes of one profile slot (contract §4.3).
pub const PROFILE_SLOT_BYTES: usize = 16;

/// An I/O virtual address: what the device puts on the bus to reach host memory.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Iova(pub u64);

impl Iova {
    /// The address `bytes` further on, or `None` on overflow.
    pub fn checked_add(self, bytes: u64) -> Option<Iova> {
        self.0.checked_add(bytes).map(Iova)
    }
}

impl fmt::Debug for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iova({:#x})", self.0)
    }
}

impl fmt::Display for Iova {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// One row of the [`Memory`] table.
#[derive(Debug)]
pub struct MemoryInfo {
    /// The name used in messages.
    pub name: &'static str,
}

wire::table_enum! {
    /// Device memory kinds (contract §4.2).
    #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
    pub enum Memory: u8, from_u8, MemoryInfo {
        /// Device DRAM; units are banks.
        Dram = 0 => { name: "DRAM" },
        /// Worker-core L1 SRAM; units are cores, numbered row-major.
        L1 = 1 => { name: "L1" },
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

impl wire::Wire for Memory {
    const SIZE: usize = 1;
    #[inline(always)]
    fn put(self, b: &mut [u8]) {
        b[0] = self as u8;
    }
    #[inline(always)]
    fn get(b: &[u8]) -> Option<Self> {
        Memory::from_u8(b[0])
    }
}

/// A device address: memory, unit (bank or core) and byte offset inside that unit (contract §4.2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevAddr {
    /// Which memory.
    pub mem: Memory,
    /// Bank (DRAM) or row-major core index (L1).
    pub unit: u16,
    /// Byte offset inside the unit.
    pub offset: u64,
}

impl fmt::Debug for DevAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]+{:#x}", self.mem, self.unit, self.offset)
    }
}

/// Rounds `v` up to a multiple of `align` (a power of two).
#[inline]
pub const fn align_up(v: u64, align: u64) -> u64 {
    (v + align - 1) & !(align - 1)
}

/// Wrap-aware "a is at or after b" for free-running u32 ids and pointers (contract §4.2.8).
#[inline]
pub const fn seq_reached(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_reached_is_wrap_aware() {
        assert!(seq_reached(5, 5));
        assert!(seq_reached(6, 5));
        assert!(!seq_reached(4, 5));
        assert!(seq_reached(2, u32::MAX - 3));
        assert!(!seq_reached(u32::MAX - 3, 2));
    }

    #[test]
    fn align_up_rounds() {
        assert_eq!(align_up(0, 64), 0);
        assert_eq!(align_up(1, 64), 64);
        assert_eq!(align_up(64, 64), 64);
        assert_eq!(align_up(65, 64), 128);
    }
}
