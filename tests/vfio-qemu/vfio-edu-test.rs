//! Drives QEMU's `edu` teaching device (PCI 1234:11e8) through ttdrv's own VFIO transport, inside a QEMU guest
//! with an emulated Intel IOMMU (see `run.sh` beside this file). Prints one `PASS name: detail` or
//! `FAIL name: detail` line per check and a final `vfio-edu-test: N passed, M failed` line; exits non-zero on any
//! failure.
//!
//! `edu` is not a ttdrv device, so it is opened with `VfioTransport::open` (no identity check) rather than
//! through `Device::open`. Its registers (QEMU `hw/misc/edu.c`): 0x00 identity `0x010000ed`, 0x04 liveness
//! (reads back the inverse), 0x08 factorial, 0x20 status, 0x24 interrupt status, 0x60 raise, 0x64 acknowledge,
//! DMA 0x80 source, 0x88 destination, 0x90 count, 0x98 command (bit 0 start, bit 1 device-to-RAM, bit 2 interrupt
//! when done); its DMA buffer is at device address 0x40000. Its DMA engine decodes 28 address bits.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ttdrv::contract::Iova;
use ttdrv::contract::regs::BarOffset;
use ttdrv::raw::{Backing, HostMemory, IovaAllocator, LockPolicy, MemoryOptions};
use ttdrv::transport::vfio::{PciAddress, VfioTransport, sysfs};
use ttdrv::transport::{DmaMemory, Transport, TransportError};

const EDU_VENDOR: u16 = 0x1234;
const EDU_DEVICE: u16 = 0x11e8;
const ID: BarOffset = BarOffset(0x00);
const LIVENESS: BarOffset = BarOffset(0x04);
const FACTORIAL: BarOffset = BarOffset(0x08);
const STATUS: BarOffset = BarOffset(0x20);
const IRQ_STATUS: BarOffset = BarOffset(0x24);
const IRQ_RAISE: BarOffset = BarOffset(0x60);
const IRQ_ACK: BarOffset = BarOffset(0x64);
const DMA_SRC: BarOffset = BarOffset(0x80);
const DMA_DST: BarOffset = BarOffset(0x88);
const DMA_CNT: BarOffset = BarOffset(0x90);
const DMA_CMD: BarOffset = BarOffset(0x98);
const DMA_START: u32 = 1;
const DMA_TO_RAM: u32 = 2;
const DMA_IRQ: u32 = 4;
/// Interrupt status bit edu sets when a DMA finishes.
const DMA_IRQ_BIT: u32 = 0x100;
const EDU_ID: u32 = 0x0100_00ed;
/// Device address of edu's 4 KiB DMA buffer.
const EDU_BUF: u32 = 0x40000;
/// Bytes per transfer: QEMU 7.2's range check aborts on a full 4096-byte transfer.
const XFER: usize = 4032;
/// edu's DMA engine decodes 28 bits.
const EDU_DMA_BITS: u32 = 28;

struct Checks {
    passed: u32,
    failed: u32,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl AsRef<str>) -> bool {
        if ok {
            self.passed += 1;
            println!("PASS {name}: {}", detail.as_ref());
        } else {
            self.failed += 1;
            println!("FAIL {name}: {}", detail.as_ref());
        }
        ok
    }
}

/// A buffer of host memory mapped for the device.
struct Mapped {
    mem: HostMemory,
    iova: Iova,
}

impl Mapped {
    fn desc(&self) -> DmaMemory {
        DmaMemory { vaddr: self.mem.as_ptr(), len: self.mem.len(), fd: self.mem.raw_fd(), fd_offset: 0 }
    }

    fn fill(&self, off: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: callers keep `off + bytes.len()` inside the mapping; only volatile accesses touch memory the
            // device can write.
            unsafe { std::ptr::write_volatile(self.mem.as_ptr().add(off + i), *b) };
        }
    }

    fn read(&self, off: usize, len: usize) -> Vec<u8> {
        // SAFETY: as in `fill`.
        (0..len).map(|i| unsafe { std::ptr::read_volatile(self.mem.as_ptr().add(off + i)) }).collect()
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(131).wrapping_add(seed as u32 * 7 + (i as u32 >> 8)) as u8).collect()
}

/// Starts a DMA and waits until edu clears the start bit.
fn dma(t: &dyn Transport, src: u64, dst: u64, len: usize, cmd: u32) -> Result<Duration, String> {
    // edu's address registers are 64 bits; a 32-bit write sets the whole register, and every address here is
    // below 2^28.
    t.write32(DMA_SRC, src as u32);
    t.write32(DMA_DST, dst as u32);
    t.write32(DMA_CNT, len as u32);
    let t0 = Instant::now();
    t.write32(DMA_CMD, cmd | DMA_START);
    while t.read32(DMA_CMD) & DMA_START != 0 {
        if t0.elapsed() > Duration::from_secs(10) {
            return Err(format!("DMA {src:#x} -> {dst:#x} ({len} bytes) did not finish in 10 s"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(t0.elapsed())
}

fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("first difference at byte {i}: {:#04x} != {:#04x}", a[i], b[i]),
        None if a.len() != b.len() => format!("lengths differ: {} != {}", a.len(), b.len()),
        None => "identical".into(),
    }
}

fn write_sysfs(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("echo {value} > {path}: {e}"))
}

/// Binds the device to vfio-pci as an administrator (or the udev rule) would.
fn bind_to_vfio(addr: &PciAddress) -> Result<(), String> {
    let dev = format!("/sys/bus/pci/devices/{addr}");
    if Path::new(&format!("{dev}/driver")).exists() {
        write_sysfs(&format!("{dev}/driver/unbind"), &addr.to_string())?;
    }
    write_sysfs(&format!("{dev}/driver_override"), "vfio-pci")?;
    write_sysfs("/sys/bus/pci/drivers/vfio-pci/bind", &addr.to_string())
}

/// Maps `mem` at a fresh IOVA.
fn map(t: &VfioTransport, iovas: &mut IovaAllocator, mem: HostMemory) -> Result<Mapped, String> {
    let iova = iovas.alloc(mem.len() as u64, mem.page_size() as u64).map_err(|e| e.to_string())?;
    let m = Mapped { mem, iova };
    t.dma_map(&m.desc(), iova).map_err(|e| e.to_string())?;
    Ok(m)
}

fn unmap(t: &VfioTransport, iovas: &mut IovaAllocator, m: &Mapped) -> Result<(), TransportError> {
    t.dma_unmap(m.iova, m.mem.len() as u64)?;
    iovas.free(m.iova, m.mem.len() as u64);
    Ok(())
}

/// A round trip RAM -> edu -> RAM through `m`, verified byte for byte in both directions.
fn round_trip(c: &mut Checks, t: &VfioTransport, m: &Mapped, name: &str, seed: u8) {
    let len = m.mem.len();
    let (src_off, dst_off) = (len / 2 - XFER - 512, len - XFER - 4096 + 64);
    let data = pattern(seed, XFER);
    m.fill(src_off, &data);
    m.fill(dst_off - 64, &[0xEE; XFER + 128]);
    let src = m.iova.0 + src_off as u64;
    let dst = m.iova.0 + dst_off as u64;
    match dma(t, src, EDU_BUF as u64, XFER, 0) {
        Ok(d) => {
            // Read edu's buffer back through a second transfer, and compare in RAM.
            match dma(t, EDU_BUF as u64, dst, XFER, DMA_TO_RAM) {
                Ok(d2) => {
                    let got = m.read(dst_off, XFER);
                    c.check(
                        &format!("{name} RAM->device->RAM"),
                        got == data,
                        format!(
                            "{XFER} bytes IOVA {src:#x} -> edu -> IOVA {dst:#x} ({:?} + {:?}): {}",
                            d,
                            d2,
                            first_difference(&got, &data)
                        ),
                    );
                    let guard_lo = m.read(dst_off - 64, 64);
                    let guard_hi = m.read(dst_off + XFER, 64);
                    c.check(
                        &format!("{name} DMA stays in bounds"),
                        guard_lo.iter().chain(&guard_hi).all(|&b| b == 0xEE),
                        "the 64 bytes on either side of the destination are untouched",
                    );
                }
                Err(e) => {
                    c.check(&format!("{name} RAM->device->RAM"), false, e);
                }
            }
        }
        Err(e) => {
            c.check(&format!("{name} RAM->device->RAM"), false, e);
        }
    }
}

fn run(c: &mut Checks) -> Result<(), String> {
    let root = Path::new(sysfs::SYSFS_ROOT);
    let found = sysfs::find(root, EDU_VENDOR, EDU_DEVICE);
    let Some(edu) = found.first() else {
        c.check("edu present", false, "no 1234:11e8 device in /sys/bus/pci/devices");
        return Err("nothing to test".into());
    };
    let addr = edu.address;
    c.check("edu present", true, format!("{edu}"));

    // Unbound, the transport must refuse with the commands that fix it.
    if !edu.bound_to_vfio() {
        match VfioTransport::open(&addr) {
            Err(TransportError::Open { reason: msg, .. }) => {
                let ok = msg.contains(&format!("echo vfio-pci > /sys/bus/pci/devices/{addr}/driver_override"))
                    && msg.contains(&format!("echo {addr} > /sys/bus/pci/drivers/vfio-pci/bind"));
                c.check("unbound device: actionable error", ok, msg.lines().next().unwrap_or(""));
            }
            Err(e) => {
                c.check("unbound device: actionable error", false, format!("wrong error: {e}"));
            }
            Ok(_) => {
                c.check("unbound device: actionable error", false, "opened a device not bound to vfio-pci");
            }
        }
        bind_to_vfio(&addr)?;
    }
    let bound = sysfs::driver(root, &addr);
    c.check("bound to vfio-pci", bound.as_deref() == Some("vfio-pci"), format!("driver {bound:?}"));

    let t = match VfioTransport::open(&addr) {
        Ok(t) => t,
        Err(e) => {
            c.check("open through VFIO", false, e.to_string());
            return Err("cannot go on without the device".into());
        }
    };
    let ranges = t.iova_ranges();
    c.check(
        "open through VFIO",
        !ranges.is_empty(),
        format!(
            "{}: {} IOMMU, BAR0 {:#x} bytes, {} interrupt vector(s), NUMA node {:?}, IOVA windows {:x?}",
            t.name(),
            t.iommu_type(),
            t.bar0_size(),
            t.irq_vectors(),
            t.numa_node(),
            ranges
        ),
    );
    c.check("BAR0 mmap'd", t.bar0_mmapped(), "register accesses are volatile loads and stores, not pread/pwrite");
    c.check("needs pinned memory", t.needs_pinned_memory(), "true for VFIO");

    let id = t.read32(ID);
    c.check("identity register", id == EDU_ID, format!("{id:#010x}"));
    let probe = 0x1234_5678;
    t.write32(LIVENESS, probe);
    let live = t.read32(LIVENESS);
    c.check("liveness register", live == !probe, format!("wrote {probe:#010x}, read {live:#010x}"));
    t.write32(FACTORIAL, 10);
    let t0 = Instant::now();
    while t.read32(STATUS) & 1 != 0 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let f = t.read32(FACTORIAL);
    c.check("factorial register", f == 3_628_800, format!("10! = {f}"));

    let mut iovas = IovaAllocator::new(&ranges, EDU_DMA_BITS);
    let huge_opts = MemoryOptions { hugepages: true, lock: LockPolicy::Required, ..MemoryOptions::default() };
    let small_opts = MemoryOptions { hugepages: false, lock: LockPolicy::Required, ..MemoryOptions::default() };

    // 2 MiB hugepage buffer.
    let huge = HostMemory::allocate(2 << 20, &huge_opts).map_err(|e| e.to_string())?;
    c.check(
        "hugepage buffer",
        huge.backing() == Backing::Huge2M,
        format!("{:?}, {} bytes", huge.backing(), huge.len()),
    );
    let huge = map(&t, &mut iovas, huge)?;
    c.check(
        "map 2 MiB hugepage",
        huge.iova.0 + huge.mem.len() as u64 <= 1 << EDU_DMA_BITS,
        format!("IOVA {} (below 2^28)", huge.iova),
    );
    round_trip(c, &t, &huge, "hugepage", 1);

    // 4 KiB-page buffer (four pages, so the transfers cross page boundaries).
    let small = HostMemory::allocate(16 << 10, &small_opts).map_err(|e| e.to_string())?;
    c.check(
        "4 KiB-page buffer",
        small.backing() == Backing::Small,
        format!("{:?}, {} bytes", small.backing(), small.len()),
    );
    let small = map(&t, &mut iovas, small)?;
    c.check("map 4 KiB pages", true, format!("IOVA {}", small.iova));
    round_trip(c, &t, &small, "4 KiB pages", 2);

    // DMA to an IOVA that was mapped and is no longer: the IOMMU must block it.
    let victim = HostMemory::allocate(4096, &small_opts).map_err(|e| e.to_string())?;
    let victim = map(&t, &mut iovas, victim)?;
    victim.fill(0, &[0x5A; 4096]);
    let stale = victim.iova;
    unmap(&t, &mut iovas, &victim).map_err(|e| e.to_string())?;
    let before = t.mapped_bytes();
    match dma(&t, EDU_BUF as u64, stale.0, XFER, DMA_TO_RAM) {
        Ok(_) => {
            let untouched = victim.read(0, 4096).iter().all(|&b| b == 0x5A);
            c.check("DMA to unmapped IOVA blocked", untouched, format!("IOVA {stale} after unmap: buffer untouched"));
        }
        Err(e) => {
            c.check("DMA to unmapped IOVA blocked", false, e);
        }
    }
    c.check(
        "unmap bookkeeping",
        before == (huge.mem.len() + small.mem.len()) as u64,
        format!("{before:#x} bytes mapped"),
    );

    // MSI: a raised interrupt and a DMA-completion interrupt, both through wait_irq.
    if t.irq_vectors() == 0 {
        c.check("MSI wired", false, "no interrupt vectors");
    } else {
        let _ = t.wait_irq(0, Duration::ZERO);
        t.write32(IRQ_RAISE, 0x1);
        let fired = t.wait_irq(0, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let st = t.read32(IRQ_STATUS);
        t.write32(IRQ_ACK, st);
        c.check("MSI via wait_irq (raise)", fired && st & 1 != 0, format!("fired {fired}, interrupt status {st:#x}"));
        let fired_early = t.wait_irq(0, Duration::from_millis(50)).map_err(|e| e.to_string())?;
        c.check("no spurious MSI", !fired_early, "nothing pending after acknowledge");
        let r = dma(&t, small.iova.0, EDU_BUF as u64, 64, DMA_IRQ);
        let fired = t.wait_irq(0, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let st = t.read32(IRQ_STATUS);
        t.write32(IRQ_ACK, st);
        c.check(
            "MSI via wait_irq (DMA done)",
            r.is_ok() && fired && st & DMA_IRQ_BIT != 0,
            format!("fired {fired}, interrupt status {st:#x}"),
        );
    }

    // Reset, then the device must still answer and DMA.
    if !t.can_reset() {
        c.check("reset", false, "the kernel offers no reset for this device");
    } else {
        match t.reset() {
            Ok(()) => {
                let id = t.read32(ID);
                t.write32(LIVENESS, 0xA5A5_0F0F);
                let live = t.read32(LIVENESS);
                c.check(
                    "reset",
                    id == EDU_ID && live == !0xA5A5_0F0F,
                    format!("after reset: identity {id:#010x}, liveness {live:#010x}"),
                );
                round_trip(c, &t, &small, "after reset", 3);
            }
            Err(e) => {
                c.check("reset", false, e.to_string());
            }
        }
    }

    // Teardown: unmap, drop (bus mastering off, vectors unwired, device/group/container closed), and prove it by
    // opening the device again.
    let r1 = unmap(&t, &mut iovas, &huge);
    let r2 = unmap(&t, &mut iovas, &small);
    c.check(
        "unmap all",
        r1.is_ok() && r2.is_ok() && t.mapped_bytes() == 0,
        format!("{r1:?} {r2:?}, {} bytes left mapped", t.mapped_bytes()),
    );
    let t = Arc::new(t);
    let weak = Arc::downgrade(&t);
    drop(t);
    c.check("transport dropped", weak.upgrade().is_none(), "no reference left");
    match VfioTransport::open(&addr) {
        Ok(t2) => {
            let id = t2.read32(ID);
            c.check("clean teardown", id == EDU_ID, format!("reopened after drop, identity {id:#010x}"));
        }
        Err(e) => {
            c.check("clean teardown", false, format!("reopen failed: {e}"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let mut c = Checks { passed: 0, failed: 0 };
    if let Err(e) = run(&mut c) {
        c.check("test ran to the end", false, e);
    }
    println!("vfio-edu-test: {} passed, {} failed", c.passed, c.failed);
    if c.failed == 0 && c.passed > 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
