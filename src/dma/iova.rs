//! IOVA allocation: first fit inside the IOMMU's usable windows, below the device's DMA mask.

use super::DmaError;
use std::collections::BTreeMap;
use std::ops::Range;
use ttdrv_contract::Iova;

/// IOVAs below this are never handed out: a zero or tiny IOVA in a fault report is then always a bug, not a
/// mapping.
pub const IOVA_FLOOR: u64 = 1 << 20;

/// Free-list allocator of IOVA ranges.
#[derive(Debug, Clone)]
pub struct IovaAllocator {
    /// Free ranges, start -> end (exclusive), coalesced.
    free: BTreeMap<u64, u64>,
    dma_bits: u32,
}

impl IovaAllocator {
    /// An allocator over `windows` clipped to `[IOVA_FLOOR, 1 << dma_bits)`.
    pub fn new(windows: &[Range<u64>], dma_bits: u32) -> IovaAllocator {
        let limit = if dma_bits >= 64 { u64::MAX } else { 1u64 << dma_bits };
        let mut free = BTreeMap::new();
        for w in windows {
            let start = w.start.max(IOVA_FLOOR);
            let end = w.end.min(limit);
            if start < end {
                free.insert(start, end);
            }
        }
        let mut a = IovaAllocator { free, dma_bits };
        a.coalesce();
        a
    }

    fn coalesce(&mut self) {
        let mut merged: BTreeMap<u64, u64> = BTreeMap::new();
        for (&s, &e) in &self.free {
            if let Some((_, last_end)) = merged.iter_mut().next_back()
                && *last_end >= s
            {
                *last_end = (*last_end).max(e);
                continue;
            }
            merged.insert(s, e);
        }
        self.free = merged;
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }

    /// Reserves `len` bytes aligned to `align` (a power of two).
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<Iova, DmaError> {
        debug_assert!(align.is_power_of_two());
        let found = self.free.iter().find_map(|(&s, &e)| {
            let start = s.checked_add(align - 1)? & !(align - 1);
            let end = start.checked_add(len)?;
            (end <= e).then_some((s, e, start, end))
        });
        let Some((s, e, start, end)) = found else {
            return Err(DmaError::IovaExhausted { len, align, bits: self.dma_bits, free: self.free_bytes() });
        };
        self.free.remove(&s);
        if s < start {
            self.free.insert(s, start);
        }
        if end < e {
            self.free.insert(end, e);
        }
        Ok(Iova(start))
    }

    /// Returns a range obtained from [`IovaAllocator::alloc`].
    pub fn free(&mut self, iova: Iova, len: u64) {
        self.free.insert(iova.0, iova.0 + len);
        self.coalesce();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn honours_mask_windows_and_alignment() {
        let mut a = IovaAllocator::new(&[0..0x4000_0000, 0x8000_0000..u64::MAX], 32);
        assert_eq!(a.free_bytes(), (0x4000_0000 - IOVA_FLOOR) + 0x8000_0000);
        let x = a.alloc(0x1000, 0x20_0000).unwrap();
        assert_eq!(x.0 % 0x20_0000, 0);
        assert!(x.0 >= IOVA_FLOOR);
        // Larger than the first window: must come from the second and stay below 4 GiB.
        let y = a.alloc(0x5000_0000, 0x1000).unwrap();
        assert!(y.0 >= 0x8000_0000 && y.0 + 0x5000_0000 <= 1 << 32);
        assert!(a.alloc(0x8000_0000, 0x1000).is_err());
        a.free(y, 0x5000_0000);
        a.free(x, 0x1000);
        assert_eq!(a.free_bytes(), (0x4000_0000 - IOVA_FLOOR) + 0x8000_0000);
    }

    #[test]
    fn exhaustion_names_the_numbers() {
        let window = 0..0x20_0000;
        let mut a = IovaAllocator::new(std::slice::from_ref(&window), 48);
        let e = a.alloc(0x20_0000, 0x1000).unwrap_err().to_string();
        assert!(e.contains("0x200000") && e.contains("48-bit"), "{e}");
    }
}
