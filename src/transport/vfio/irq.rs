//! Interrupt vectors: MSI-X (or MSI) wired to one eventfd per vector with `VFIO_DEVICE_SET_IRQS`.

use super::ioctl;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use vfio_bindings::bindings::vfio as sys;

/// Most vectors ttdrv wires: one per command queue (contract §6).
const MAX_VECTORS: u32 = ttdrv_contract::MAX_QUEUES as u32;

/// The vectors wired to this process.
pub struct Vectors {
    /// `VFIO_PCI_MSIX_IRQ_INDEX` or `VFIO_PCI_MSI_IRQ_INDEX`; meaningless when `fds` is empty.
    index: u32,
    fds: Vec<EventFd>,
}

fn eventfd() -> nix::Result<EventFd> {
    EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
}

impl Vectors {
    /// No vectors: the caller polls.
    pub fn none() -> Vectors {
        Vectors { index: sys::VFIO_PCI_MSIX_IRQ_INDEX, fds: Vec::new() }
    }

    /// Wires up to [`MAX_VECTORS`] vectors, preferring MSI-X over MSI. `Ok(none)` when the device has neither.
    pub fn enable(device: BorrowedFd<'_>) -> Result<Vectors, String> {
        let mut chosen = None;
        for (index, kind) in [(sys::VFIO_PCI_MSIX_IRQ_INDEX, "MSI-X"), (sys::VFIO_PCI_MSI_IRQ_INDEX, "MSI")] {
            match ioctl::irq_info(device, index) {
                Ok(i) if i.count > 0 && i.flags & sys::VFIO_IRQ_INFO_EVENTFD != 0 => {
                    chosen = Some((index, kind, i.count));
                    break;
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{kind}: {e}")),
            }
        }
        let Some((index, kind, count)) = chosen else {
            return Ok(Vectors::none());
        };
        let mut n = count.min(MAX_VECTORS);
        if index == sys::VFIO_PCI_MSI_IRQ_INDEX {
            // MSI allocates vectors in powers of two.
            n = 1 << (31 - n.leading_zeros());
        }
        let fds = (0..n).map(|_| eventfd()).collect::<nix::Result<Vec<_>>>().map_err(|e| format!("eventfd: {e}"))?;
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        ioctl::set_irq_eventfds(device, index, &raw).map_err(|e| format!("enabling {n} {kind} vector(s): {e}"))?;
        log::debug!("wired {n} {kind} vector(s) of {count}");
        Ok(Vectors { index, fds })
    }

    /// Number of vectors wired.
    pub fn len(&self) -> u32 {
        self.fds.len() as u32
    }

    /// True when none are wired.
    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The eventfd of vector `v`.
    pub fn fd(&self, v: u32) -> Option<BorrowedFd<'_>> {
        self.fds.get(v as usize).map(|f| f.as_fd())
    }

    /// Unwires every vector (the eventfds stay open until `self` drops).
    pub fn disable(&self, device: BorrowedFd<'_>) -> Result<(), ioctl::IoctlError> {
        if self.fds.is_empty() {
            return Ok(());
        }
        ioctl::set_irq_eventfds(device, self.index, &[])
    }
}
