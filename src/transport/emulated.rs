//! The transport to the emulated device: the same operations as VFIO, carried out by [`ttdrv_emu::Emulator`].

use super::{DmaMemory, Transport, TransportError};
use std::ops::Range;
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
        let dev = Emulator::new(cfg).map_err(TransportError::Open)?;
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
        wait_eventfd(fd, timeout)
    }

    fn needs_pinned_memory(&self) -> bool {
        false
    }
}

/// Waits for an eventfd to become readable, then drains it. Shared with the VFIO transport, whose MSI vectors are
/// eventfds too.
pub fn wait_eventfd(fd: std::os::fd::RawFd, timeout: Duration) -> Result<bool, TransportError> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().clamp(0, i32::MAX as u128) as i32;
    // SAFETY: poll on one valid pollfd we own.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(TransportError::Os { what: "poll(interrupt eventfd)".into(), source: e });
    }
    if rc == 0 {
        return Ok(false);
    }
    let mut v: u64 = 0;
    // SAFETY: reading 8 bytes into a local from a non-blocking eventfd; EAGAIN (another waiter drained it) is fine.
    unsafe { libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8) };
    Ok(true)
}
