//! The code that uses `unsafe`, at sizes small enough for valgrind's memcheck (`scripts/test.d/40-valgrind.sh`
//! runs this binary under it; `cargo test` runs it as usual):
//! - DMA memory: memfd allocation, pre-faulting, locking, unmapping; the streaming (non-temporal) copy;
//!   DMA buffers mapped for the emulated device and unmapped on drop;
//! - the emulated IOMMU: mappings of the driver's memfd, translation, device-side writes, faults outside a window,
//!   windows that outlive an unmap;
//! - the rings: a device with the smallest rings, so records wrap the issue ring many times, read data is
//!   scattered (or untilized, for tiled buffers) from a wrapping completion ring, and events cross queues;
//! - reads that own their destination (returned, cancelled, dropped and leaked in flight) and cancelled raw reads,
//!   whose entries are consumed into nothing after the destination is freed.
//!
//! Miri and Rust's sanitizers need a nightly toolchain, which this project cannot install; memcheck sees the same
//! class of bug (reads of freed or unmapped memory, uninitialised bytes reaching a branch or a syscall, overruns
//! of heap blocks) in these paths. `TTDRV_TEST_TIMEOUT_S` scales the device's wait timeout (valgrind is ~50x slower).

use std::time::Duration;
use ttdrv::contract::Iova;
use ttdrv::raw::{Backing, HostMemory, LockPolicy, MemoryOptions};
use ttdrv::raw::{NT_THRESHOLD, copy_to_dma};
use ttdrv::transport::emulated::Iommu;
use ttdrv::{BufferSpec, BufferType, DType, Device, DeviceParams, Layout, MemoryConfig, ShardGrid};

fn timeout() -> Duration {
    let s = std::env::var("TTDRV_TEST_TIMEOUT_S").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    Duration::from_secs(s)
}

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
fn host_memory_is_zeroed_writable_and_rounded_to_pages() {
    let m = HostMemory::allocate(10_000, &small_pages()).unwrap();
    assert_eq!((m.len(), m.backing()), (12_288, Backing::Small));
    assert!(read_dma(m.as_ptr(), m.len()).iter().all(|&b| b == 0), "new DMA memory must read as zeros");
    let data = pattern(m.len(), 1);
    // SAFETY: `data` and the mapping are distinct, both m.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), m.as_ptr(), data.len()) };
    assert_eq!(read_dma(m.as_ptr(), m.len()), data);
    // With hugepages asked for: 2 MiB pages if the host has them reserved, otherwise the 4 KiB fallback.
    let h = HostMemory::allocate(1 << 20, &MemoryOptions::default()).unwrap();
    assert!(h.len() >= 1 << 20 && h.len() % h.page_size() == 0);
    // SAFETY: both ends are inside the mapping.
    unsafe {
        std::ptr::write_volatile(h.as_ptr(), 0xA5);
        std::ptr::write_volatile(h.as_ptr().add(h.len() - 1), 0x5A);
    }
    assert_eq!(read_dma(h.as_ptr(), 1), [0xA5]);
    assert!(HostMemory::allocate(0, &small_pages()).is_err());
}

#[test]
fn streaming_copy_into_dma_memory_at_every_alignment() {
    let m = HostMemory::allocate(NT_THRESHOLD * 2 + 4096, &small_pages()).unwrap();
    let src = pattern(NT_THRESHOLD + 300, 7);
    for &len in &[0usize, 1, 31, 33, 129, 4096, NT_THRESHOLD - 1, NT_THRESHOLD, NT_THRESHOLD + 77] {
        for off in [0usize, 1, 17, 32] {
            // SAFETY: off + len <= NT_THRESHOLD + 109 fits the mapping; src holds len + 5 bytes; distinct.
            unsafe {
                std::ptr::write_bytes(m.as_ptr(), 0, off + len + 64);
                copy_to_dma(m.as_ptr().add(off), src.as_ptr().add(5), len);
            }
            let got = read_dma(m.as_ptr(), off + len + 64);
            assert_eq!(&got[off..off + len], &src[5..5 + len], "len {len} at offset {off}");
            assert!(got[..off].iter().chain(&got[off + len..]).all(|&b| b == 0), "bytes outside len {len} at {off}");
        }
    }
}

#[test]
fn iommu_maps_the_drivers_pages_and_faults_outside_them() {
    let mem = HostMemory::allocate(64 << 10, &small_pages()).unwrap();
    let len = mem.len() as u64;
    let base = 0x10_0000u64;
    let data = pattern(mem.len(), 3);
    // SAFETY: the mapping holds len bytes; data is distinct.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), mem.as_ptr(), data.len()) };

    let mmu = Iommu::default();
    mmu.map(mem.raw_fd(), 0, len, Iova(base)).unwrap();
    assert!(mmu.map(mem.raw_fd(), 0, 4096, Iova(base + 4096)).is_err(), "overlapping map accepted");
    assert!(mmu.map(mem.raw_fd(), 0, 100, Iova(base + len)).is_err(), "unaligned length accepted");
    assert_eq!(mmu.len(), 1);

    // The device sees the driver's bytes, and the driver sees the device's writes: one set of pages.
    let w = mmu.translate(base + 100, 64).unwrap();
    let p = w.at(base + 100, 64).unwrap();
    assert_eq!(read_dma(p, 64), &data[100..164]);
    mmu.write(base + len - 5, b"tail!").unwrap();
    assert_eq!(read_dma(mem.as_ptr().wrapping_add(mem.len() - 5), 5), b"tail!");

    // Anything outside the window faults.
    assert!(mmu.translate(base + len - 8, 16).is_err(), "a range leaving the window translated");
    assert!(mmu.translate(base - 1, 1).is_err());
    assert!(mmu.translate(u64::MAX - 2, 8).is_err(), "an overflowing range translated");
    assert!(w.at(base + len - 4, 8).is_err());
    assert!(w.at(base - 64, 8).is_err());
    assert!(mmu.write(base + len, b"x").is_err());

    // Unmap: wrong length refused; afterwards translation faults, and a window taken before stays readable (it
    // holds the device's own mapping, as an IOTLB entry would until invalidated).
    let generation = mmu.generation();
    assert!(mmu.unmap(Iova(base), len - 4096).is_err());
    mmu.unmap(Iova(base), len).unwrap();
    assert!(mmu.generation() > generation);
    assert!(mmu.translate(base, 4).is_err());
    assert!(mmu.is_empty());
    assert_eq!(read_dma(p, 64), &data[100..164]);
}

/// A device with the smallest rings the contract allows (64 KiB): a 16 KiB record limit, so every transfer below
/// is split into many records and both rings wrap many times.
fn small_ring_device(queues: u16) -> Device {
    let params = DeviceParams {
        num_command_queues: queues,
        issue_ring_size: 64 << 10,
        completion_ring_size: 64 << 10,
        hugepages: false,
        timeout: timeout(),
        ..DeviceParams::default()
    };
    Device::open("emu:dram=256M", &params).unwrap()
}

#[test]
fn rings_wrap_and_scatter_reads_with_the_smallest_rings() {
    let dev = small_ring_device(2);
    // Interleaved DRAM, 200 KiB: ~13 write records and as many read completions per transfer.
    let spec = BufferSpec::new(100, 512, DType::Float32, MemoryConfig::DRAM);
    let a = dev.allocate(&spec).unwrap();
    for round in 0..3u32 {
        let data = pattern(spec.host_bytes() as usize, round);
        a.write((round % 2) as u16, &data, false).unwrap();
        dev.finish((round % 2) as u16).unwrap();
        assert_eq!(a.read_to_vec(((round + 1) % 2) as u16).unwrap(), data, "round {round}");
    }
    // Height-sharded L1 (strided pieces per core) and width-sharded DRAM (column pieces): scattered reads.
    let l1 = MemoryConfig::sharded(
        BufferType::L1,
        Layout::HeightSharded,
        ShardGrid::Cores { x0: 0, y0: 0, x1: 3, y1: 1 },
        [8, 96],
    );
    let dram_w =
        MemoryConfig::sharded(BufferType::Dram, Layout::WidthSharded, ShardGrid::Banks { first: 0, last: 3 }, [64, 24]);
    // Tiled (tilized into the records, untilized out of the completion ring, dma::tile): interleaved pages, and a
    // shard's pages with the L1 page stride, both with padding.
    let l1_tiles = MemoryConfig::sharded(
        BufferType::L1,
        Layout::BlockSharded,
        ShardGrid::Cores { x0: 0, y0: 0, x1: 3, y1: 1 },
        [32, 32],
    );
    let cases = [
        (64u32, 96u32, l1, false),
        (64, 96, dram_w, false),
        (50, 70, MemoryConfig::DRAM, true),
        (40, 100, l1_tiles, true),
    ];
    for (i, (rows, cols, mem, tiled)) in cases.into_iter().enumerate() {
        let s = BufferSpec::new(rows, cols, DType::Float32, mem);
        let s = if tiled { s.with_layout(ttdrv::TensorLayout::Tile) } else { s };
        let b = dev.allocate(&s).unwrap();
        let data = pattern(s.host_bytes() as usize, 10 + i as u32);
        b.write(0, &data, true).unwrap();
        let mut out = vec![0u8; data.len()];
        // SAFETY: `out` holds the buffer's host size and is not touched until finish() below.
        let pending = unsafe { b.read_nonblocking(1, out.as_mut_ptr()) };
        pending.unwrap();
        dev.finish(1).unwrap();
        assert_eq!(out, data, "sharded layout {i}");
    }
    // Events across queues, and an op (a launch record) between them.
    let ev = dev.create_event().unwrap();
    let f = dev.allocate(&BufferSpec::new(16, 64, DType::Float32, MemoryConfig::DRAM)).unwrap();
    dev.fill(0, &f, 2.5).unwrap();
    ev.record(0).unwrap();
    dev.wait_for_event(1, &ev).unwrap();
    let got = f.read_to_vec(1).unwrap();
    assert!(got.chunks(4).all(|c| f32::from_le_bytes(c.try_into().unwrap()) == 2.5), "fill not visible on queue 1");
    ev.synchronize().unwrap();
    dev.close().unwrap();
}

#[test]
fn closing_with_reads_in_flight_delivers_them() {
    let dev = small_ring_device(1);
    let spec = BufferSpec::new(64, 256, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    let data = pattern(spec.host_bytes() as usize, 99);
    b.write(0, &data, false).unwrap();
    let mut out = vec![0u8; data.len()];
    // SAFETY: `out` stays alive and untouched until close() has drained the queue.
    unsafe { b.read_nonblocking(0, out.as_mut_ptr()) }.unwrap();
    dev.close().unwrap();
    assert_eq!(out, data);
    drop(b);
}

/// The owned read's raw parts and the cancellation of reads in flight: a destination freed after its read was
/// cancelled (or dropped) is never written, which memcheck would report as an invalid write.
#[test]
fn owned_and_cancelled_reads_never_touch_freed_destinations() {
    let dev = small_ring_device(1);
    let spec = BufferSpec::new(48, 256, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    let data = pattern(spec.host_bytes() as usize, 7);
    b.write(0, &data, false).unwrap();
    let r = b.read_owned(0, vec![0; data.len()]).unwrap();
    assert_eq!(r.wait().unwrap(), data);
    // Dropped in flight: cancelled, then freed; the completion entries arrive afterwards.
    drop(b.read_owned(0, vec![0; data.len()]).unwrap());
    let v = b.read_owned(0, vec![0; data.len()]).unwrap().cancel();
    drop(v);
    // A raw read cancelled, then its destination freed.
    let mut out = vec![0u8; data.len()];
    // SAFETY: `out` is freed only after the read is cancelled, which ends every write to it.
    let pending = unsafe { b.read_nonblocking(0, out.as_mut_ptr()) }.unwrap();
    pending.cancel();
    drop(out);
    dev.finish(0).unwrap();
    assert_eq!(b.read_to_vec(0).unwrap(), data);
    dev.close().unwrap();
}
