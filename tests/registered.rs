//! Registered host memory (`Device::register_host_memory`, docs/device-interface.md §4.2.10): data moves between a
//! buffer and the caller's registered allocation through `WRITE_HOST` / `READ_HOST`, for every buffer layout the
//! planner produces; the argument rules are enforced; unregister waits for the transfers that use the memory, and
//! after a reset drops them it returns without them.

mod common;

use common::*;
use std::alloc::{Layout as AllocLayout, alloc_zeroed, dealloc};
use std::time::Duration;
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::*;

/// A page-aligned, zeroed allocation, freed on drop.
struct Pages {
    ptr: *mut u8,
    layout: AllocLayout,
}

impl Pages {
    fn new(len: usize) -> Pages {
        let layout = AllocLayout::from_size_align(len, 4096).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Pages { ptr, layout }
    }
    fn bytes(&self) -> &[u8] {
        // SAFETY: the allocation is `layout.size()` bytes, initialised (zeroed); callers read it only when no
        // transfer that uses it is in flight.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed as u32) as u8).collect()
}

fn params() -> DeviceParams {
    DeviceParams { hugepages: false, timeout: Duration::from_secs(20), ..DeviceParams::default() }
}

#[test]
fn write_from_and_read_into_every_layout() {
    let (emu, t) = emulator(EmuConfig::default());
    let dev = Device::open_transport(t, &params()).expect("device");
    let before = emu.device().mappings();
    let mut host = Pages::new(16 << 20);
    // SAFETY: `host` outlives the registration (unregistered below, before it is dropped).
    let reg = unsafe { dev.register_host_memory(host.ptr, 16 << 20) }.expect("register");
    assert_eq!(emu.device().mappings(), before + 1);
    let grid = ShardGrid::Cores { x0: 0, y0: 0, x1: 3, y1: 1 };
    let sharded = MemoryConfig::sharded(BufferType::L1, Layout::HeightSharded, grid, [16, 96]);
    let block = MemoryConfig::sharded(BufferType::L1, Layout::BlockSharded, grid, [32, 32]);
    let specs = [
        BufferSpec::new(64, 256, DType::Float32, MemoryConfig::DRAM),
        // Rows longer than a record piece, and a partial last piece.
        BufferSpec::new(3, 400_000, DType::Float32, MemoryConfig::DRAM),
        BufferSpec::new(128, 96, DType::BFloat16, sharded),
        BufferSpec::new(7, 33, DType::Float32, MemoryConfig::L1),
        BufferSpec::new(64, 128, DType::Float32, block),
    ];
    for (i, spec) in specs.iter().enumerate() {
        let n = spec.host_bytes() as usize;
        let offset = 4096 * (i + 1);
        let data = pattern(n, i as u8);
        host.bytes_mut()[offset..offset + n].copy_from_slice(&data);
        let buf = dev.allocate(spec).expect("buffer");
        buf.write_from(0, &reg, offset, true).expect("write_from");
        assert_eq!(buf.read_to_vec(0).expect("read"), data, "{spec}: write_from then read");
        // The other direction, into a zeroed range, non-blocking then finish.
        let back = offset + n.next_multiple_of(4096);
        host.bytes_mut()[back..back + n].fill(0);
        buf.read_into(0, &reg, back, false).expect("read_into");
        dev.finish(0).expect("finish");
        assert_eq!(&host.bytes()[back..back + n], &data[..], "{spec}: read_into");
        // And through the rings, unchanged: a registered write followed by an ordinary one.
        let other = pattern(n, 99);
        buf.write(0, &other, true).expect("write");
        buf.read_into(0, &reg, offset, true).expect("read_into blocking");
        assert_eq!(&host.bytes()[offset..offset + n], &other[..], "{spec}: read_into blocking");
    }
    reg.unregister().expect("unregister");
    assert_eq!(emu.device().mappings(), before);
    assert!(!reg.is_registered());
    reg.unregister().expect("a second unregister does nothing");
    dev.close().expect("close");
}

#[test]
fn the_rules_are_enforced_with_what_to_do() {
    let dev = Device::open("emu", &params()).expect("device");
    let host = Pages::new(64 << 10);
    let arg = |r: Result<HostRegistration>| match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    // SAFETY (all registrations below): `host` outlives them; the failing ones map nothing.
    let m = arg(unsafe { dev.register_host_memory(host.ptr.wrapping_add(64), 4096) });
    assert!(m.contains("multiples of the host page") && m.contains("posix_memalign"), "{m}");
    arg(unsafe { dev.register_host_memory(host.ptr, 100) });
    arg(unsafe { dev.register_host_memory(host.ptr, 0) });
    arg(unsafe { dev.register_host_memory(std::ptr::null_mut(), 4096) });
    let reg = unsafe { dev.register_host_memory(host.ptr, 64 << 10) }.expect("register");
    // Registering an overlapping range again is refused by nothing in the IOMMU (distinct IOVAs) but is allowed:
    // two mappings of the same pages are legal for an IOMMU. Ranges past the end are not.
    let buf = dev.allocate(&BufferSpec::new(16, 256, DType::Float32, MemoryConfig::DRAM)).expect("buffer");
    let n = buf.spec().host_bytes() as usize;
    match buf.write_from(0, &reg, (64 << 10) - n + 4, true) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("do not fit") && m.contains("offset at most"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match buf.read_into(0, &reg, usize::MAX, true) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("do not fit"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let tiled = dev.allocate(&BufferSpec::tiled(32, 32, DType::Float32, MemoryConfig::DRAM)).expect("tiled");
    match tiled.write_from(0, &reg, 0, true) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("tiled") && m.contains("Buffer::write"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    // A registration of another device.
    let dev2 = Device::open("emu", &params()).expect("second device");
    let buf2 = dev2.allocate(buf.spec()).expect("buffer");
    assert!(matches!(buf2.write_from(0, &reg, 0, true), Err(Error::WrongDevice { .. })));
    reg.unregister().expect("unregister");
    match buf.write_from(0, &reg, 0, true) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("no longer registered"), "{m}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    dev2.close().expect("close");
    dev.close().expect("close");
}

#[test]
fn unregister_waits_for_transfers_that_use_the_memory() {
    let dev = Device::open("emu", &params()).expect("device");
    let mut host = Pages::new(16 << 20);
    // SAFETY: `host` outlives the registration.
    let reg = unsafe { dev.register_host_memory(host.ptr, 16 << 20) }.expect("register");
    let spec = BufferSpec::new(256, 4096, DType::Float32, MemoryConfig::DRAM);
    let n = spec.host_bytes() as usize;
    let data = pattern(n, 3);
    let buf = dev.allocate(&spec).expect("buffer");
    buf.write(0, &data, true).expect("write");
    // Several large reads in flight, none waited for: unregister must wait for all of them.
    for k in 0..4 {
        buf.read_into(0, &reg, k * n, false).expect("read_into");
    }
    reg.unregister().expect("unregister");
    for k in 0..4 {
        assert_eq!(&host.bytes()[k * n..(k + 1) * n], &data[..], "read {k} had completed when unregister returned");
    }
    host.bytes_mut().fill(0);
    dev.close().expect("close");
}

#[test]
fn unregister_after_a_reset_drops_the_transfers() {
    // Queue 0 stops consuming after the write that fills the buffer: the registered read behind it never runs.
    let (_emu, t) = emulator(EmuConfig::parse("hang=0,hang_after=3").expect("config"));
    let p = DeviceParams { timeout: Duration::from_millis(300), ..params() };
    let dev = Device::open_transport(t, &p).expect("device");
    let host = Pages::new(1 << 20);
    // SAFETY: `host` outlives the registration.
    let reg = unsafe { dev.register_host_memory(host.ptr, 1 << 20) }.expect("register");
    let buf = dev.allocate(&BufferSpec::new(16, 256, DType::Float32, MemoryConfig::DRAM)).expect("buffer");
    for _ in 0..4 {
        let _ = buf.write(0, &pattern(buf.spec().host_bytes() as usize, 1), false);
    }
    buf.read_into(0, &reg, 0, false).expect("read_into enqueued");
    match reg.unregister() {
        Err(e @ Error::Timeout { .. }) => assert!(e.to_string().contains("unregistering host memory"), "{e}"),
        other => panic!("a hung queue must time unregister out, got {other:?}"),
    }
    dev.reset().expect("reset");
    reg.unregister().expect("after a reset nothing uses the memory");
    assert!(host.bytes().iter().all(|&b| b == 0), "the dropped read never wrote the memory");
    dev.close().expect("close");
}
