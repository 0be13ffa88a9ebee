//! The transport to the emulated device: the same operations as VFIO, carried out by [`ttdrv_emu::Emulator`].

use super::{DmaMemory, Transport, TransportError};
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use ttdrv_contract::Iova;
use ttdrv_contract::regs::BarOffset;
/// The emulated device's IOMMU (tests exercise its mappings directly).
pub use ttdrv_emu::iommu::Iommu;
/// The emulated device's configuration and the device itself (the `ttdrv-emu` crate), for callers that build one
/// with options of their own or inspect it (tests inject faults through it).
pub use ttdrv_emu::{EmuConfig, Emulator};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A bus with one emulated device on it.
pub struct EmulatedTransport {
    dev: Emulator,
    name: String,
}

impl EmulatedTransport {
    /// Builds an emulated device from `cfg`.
    pub fn new(cfg: EmuConfig) -> Result<EmulatedTransport, TransportError> {
        let dev = Emulator::new(cfg).map_err(|reason| TransportError::Open { device: "emu".into(), reason })?;
        let name = format!("emu#{}", NEXT_ID.fetch_add(1, Ordering::Relaxed));
        Ok(EmulatedTransport { dev, name })
    }

    /// The device behind the transport (tests inspect it).
    pub fn device(&self) -> &Emulator {
        &self.dev
    }
}

impl Transport for EmulatedTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn read32(&self, off: BarOffset) -> u32 {
        self.dev.read32(off)
    }

    fn write32(&self, off: BarOffset, val: u32) {
        self.dev.write32(off, val)
    }

    fn iova_ranges(&self) -> Vec<Range<u64>> {
        // The emulated IOMMU has no reserved windows; the DMA mask limits it.
        std::iter::once(0..u64::MAX).collect()
    }

    fn dma_map(&self, mem: &DmaMemory, iova: Iova) -> Result<(), TransportError> {
        self.dev.dma_map(mem.fd, mem.fd_offset, mem.len as u64, iova).map_err(|reason| TransportError::DmaMap {
            iova,
            len: mem.len as u64,
            reason,
        })
    }

    unsafe fn dma_map_user(&self, vaddr: *mut u8, len: usize, iova: Iova) -> Result<(), TransportError> {
        // SAFETY: forwarded contract (the memory stays allocated until the unmap returns).
        unsafe { self.dev.dma_map_user(vaddr, len as u64, iova) }.map_err(|reason| TransportError::DmaMap {
            iova,
            len: len as u64,
            reason,
        })
    }

    fn dma_unmap(&self, iova: Iova, len: u64) -> Result<(), TransportError> {
        self.dev.dma_unmap(iova, len).map_err(|reason| TransportError::DmaUnmap { iova, len, reason })
    }

    fn reset(&self) -> Result<(), TransportError> {
        self.dev.reset();
        Ok(())
    }

    fn irq_vectors(&self) -> u32 {
        if self.dev.config().msi { self.dev.config().queues as u32 } else { 0 }
    }

    fn wait_irq(&self, vector: u32, timeout: Duration) -> Result<bool, TransportError> {
        let Some(fd) = self.dev.irq_fd(vector) else {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            return Ok(false);
        };
        // The emulator signals the eventfd only while a waiter is registered (a raise costs it a system call);
        // a raise made while none was is pending, and this wait returns at once.
        if self.dev.irq_wait_begin(vector) {
            self.dev.irq_wait_end(vector, false);
            return Ok(true);
        }
        // SAFETY: the emulator owns the eventfd and keeps it open for its whole life, which spans this call (it is
        // borrowed through `self`).
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let r = wait_eventfd(fd, timeout);
        self.dev.irq_wait_end(vector, matches!(r, Ok(true)));
        r
    }

    fn needs_pinned_memory(&self) -> bool {
        false
    }

    fn emulated(&self) -> bool {
        true
    }
}

/// Waits for an eventfd to become readable, then drains it. Shared with the VFIO transport, whose MSI vectors are
/// eventfds too.
pub fn wait_eventfd(fd: BorrowedFd<'_>, timeout: Duration) -> Result<bool, TransportError> {
    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut [PollFd::new(fd, PollFlags::POLLIN)], ms) {
        Ok(0) | Err(Errno::EINTR) => return Ok(false),
        Ok(_) => {}
        Err(e) => {
            return Err(TransportError::Os { what: "poll(interrupt eventfd)".into(), source: std::io::Error::from(e) });
        }
    }
    // The eventfd is non-blocking: EAGAIN means another waiter drained it first, which is fine.
    let _ = nix::unistd::read(fd, &mut [0u8; 8]);
    Ok(true)
}
