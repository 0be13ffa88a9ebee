//! DMA buffers against the emulated device (valgrind runs these too: `scripts/test.d/40-valgrind.sh`).

use super::*;
use crate::transport::emulated::{EmuConfig, EmulatedTransport};

fn small_pages() -> MemoryOptions {
    MemoryOptions { hugepages: false, numa_node: None, lock: LockPolicy::BestEffort, hugepages_wanted: None }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len).map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8).collect()
}

/// Reads `len` bytes of DMA memory at `p` (volatile: the device may write it).
fn read_dma(p: *const u8, len: usize) -> Vec<u8> {
    // SAFETY: every caller passes a range inside a live mapping it owns.
    (0..len).map(|i| unsafe { std::ptr::read_volatile(p.add(i)) }).collect()
}

#[test]
fn dma_buffers_are_mapped_for_the_device_and_unmapped_on_drop() {
    let emu = Arc::new(EmulatedTransport::new(EmuConfig::default()).unwrap());
    let t: Arc<dyn Transport> = emu.clone();
    let iovas = Arc::new(Mutex::new(IovaAllocator::new(&t.iova_ranges(), 32)));
    let free = iovas.lock().unwrap().free_bytes();
    let before = emu.device().mappings();
    let bufs: Vec<DmaBuffer> =
        [10_000usize, 4096, 65_536].iter().map(|&n| DmaBuffer::new(&t, &iovas, n, &small_pages()).unwrap()).collect();
    assert_eq!(emu.device().mappings(), before + 3);
    for (i, b) in bufs.iter().enumerate() {
        assert!(b.iova().0 % 4096 == 0 && b.iova().0 + b.len() as u64 <= 1 << 32, "IOVA {} outside the mask", b.iova());
        let data = pattern(b.len(), i as u32);
        // SAFETY: the buffer holds b.len() bytes; data is distinct.
        unsafe { copy::copy_to_dma(b.ptr(), data.as_ptr(), data.len()) };
        assert_eq!(read_dma(b.ptr(), b.len()), data);
    }
    drop(bufs);
    assert_eq!(emu.device().mappings(), before, "dropped DMA buffers are still mapped for the device");
    assert_eq!(iovas.lock().unwrap().free_bytes(), free, "IOVA space leaked");
}
