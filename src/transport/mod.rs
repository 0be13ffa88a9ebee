//! The bus a device sits on: register access, DMA mapping, reset and interrupts.
//!
//! The layers above (DMA memory, command queues, device) see a device only through [`Transport`]; the emulated
//! device and the kernel VFIO stack both implement it.

pub mod emulated;
pub mod vfio;

use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Duration;
use ttdrv_contract::Iova;
use ttdrv_contract::regs::BarOffset;

/// Errors of the transport layer. Each names the device (or selector) and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The device selector is malformed or names no kind of device ttdrv knows.
    #[error("device selector `{selector}`: {reason}")]
    Selector {
        /// The selector as given.
        selector: String,
        /// What is wrong with it, and what to pass instead.
        reason: String,
    },
    /// Nothing at the address is a device ttdrv can drive: no PCI device there, or one of another kind.
    #[error("{reason}")]
    NotFound {
        /// Where ttdrv looked (`vfio:0000:01:00.0`).
        device: String,
        /// What was found there, and how to find ttdrv devices (names the device).
        reason: String,
    },
    /// The device exists but could not be opened: the host is not set up for it, or another process holds it.
    #[error("cannot open {device}: {reason}")]
    Open {
        /// The device (`vfio:0000:01:00.0`, `emu`).
        device: String,
        /// Why, and what to do (names the device).
        reason: String,
    },
    /// A DMA mapping request was refused.
    #[error("DMA map of {len:#x} bytes at IOVA {iova} failed: {reason}")]
    DmaMap {
        /// Requested IOVA.
        iova: Iova,
        /// Requested length.
        len: u64,
        /// Why.
        reason: String,
    },
    /// A DMA unmap request was refused.
    #[error("DMA unmap of {len:#x} bytes at IOVA {iova} failed: {reason}")]
    DmaUnmap {
        /// IOVA.
        iova: Iova,
        /// Length.
        len: u64,
        /// Why.
        reason: String,
    },
    /// The bus-level reset failed or is not available.
    #[error("{device}: bus-level reset failed: {reason}")]
    Reset {
        /// The device.
        device: String,
        /// Why, and what to do instead.
        reason: String,
    },
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Os {
        /// The call and its context.
        what: String,
        /// errno.
        source: std::io::Error,
    },
}

/// Host memory to be made visible to a device.
///
/// Both a virtual address (what the kernel's IOMMU API pins) and a file descriptor with offset (what an
/// out-of-process or emulated device maps for itself) are given, so every transport can use what fits it.
#[derive(Clone, Copy, Debug)]
pub struct DmaMemory {
    /// Start of the memory in this process.
    pub vaddr: *mut u8,
    /// Bytes.
    pub len: usize,
    /// File backing the memory (a memfd).
    pub fd: RawFd,
    /// Offset of `vaddr` inside `fd`.
    pub fd_offset: u64,
}

/// The interface every bus implements. All methods may be called from any thread.
pub trait Transport: Send + Sync {
    /// Where the device is, for messages: `emu#3`, `vfio:0000:01:00.0`.
    fn name(&self) -> &str;

    /// Reads a 32-bit BAR0 register.
    fn read32(&self, off: BarOffset) -> u32;

    /// Writes a 32-bit BAR0 register.
    fn write32(&self, off: BarOffset, val: u32);

    /// The IOVA windows the IOMMU accepts mappings in, sorted, non-overlapping.
    fn iova_ranges(&self) -> Vec<Range<u64>>;

    /// Makes `mem` visible to the device at `iova` (read and write).
    fn dma_map(&self, mem: &DmaMemory, iova: Iova) -> Result<(), TransportError>;

    /// Makes `len` bytes of this process's memory at `vaddr` visible to the device at `iova` (read and write):
    /// memory with no file behind it, a caller's own allocation (`Device::register_host_memory`). VFIO pins the
    /// pages (`VFIO_IOMMU_MAP_DMA` of the address; they count against `RLIMIT_MEMLOCK`); the emulated device's IOMMU
    /// reaches them by address. The default refuses: a transport that maps only files cannot do it.
    ///
    /// # Safety
    /// The memory must stay allocated until [`Transport::dma_unmap`] of the mapping returns; the device may read and
    /// write it at any time until then.
    unsafe fn dma_map_user(&self, vaddr: *mut u8, len: usize, iova: Iova) -> Result<(), TransportError> {
        let _ = vaddr;
        Err(TransportError::DmaMap {
            iova,
            len: len as u64,
            reason: format!("{} cannot map memory that has no file behind it", self.name()),
        })
    }

    /// Removes the mapping made at `iova`.
    fn dma_unmap(&self, iova: Iova, len: u64) -> Result<(), TransportError>;

    /// Resets the device at the bus level (function-level reset); contract §7.2 describes the result.
    fn reset(&self) -> Result<(), TransportError>;

    /// Number of interrupt vectors wired to this process; 0 means the caller must poll.
    fn irq_vectors(&self) -> u32;

    /// Blocks until vector `vector` fires or `timeout` passes; true if it fired. Spurious wake-ups are allowed.
    fn wait_irq(&self, vector: u32, timeout: Duration) -> Result<bool, TransportError>;

    /// True when DMA memory must be pinned by the host (real IOMMU); the emulated device reads the memory through
    /// its own mapping and does not need it.
    fn needs_pinned_memory(&self) -> bool;

    /// The NUMA node the device is attached to, if known, so DMA memory can be placed near it.
    fn numa_node(&self) -> Option<u32> {
        None
    }

    /// Stops the device from issuing DMA (bus mastering off). Called before DMA memory is unmapped at teardown.
    fn quiesce(&self) {}

    /// True for a device implemented in software in this process (the emulator): messages then name it as such
    /// and never advise host-level recovery (rebooting, re-binding).
    fn emulated(&self) -> bool {
        false
    }
}

/// The options of the `emu:OPTIONS` selector, for help texts.
pub const EMU_OPTIONS_HELP: &str = ttdrv_emu::config::OPTIONS_HELP;

/// Environment variable that overrides the `auto` selector.
pub const DEVICE_ENV: &str = "TTDRV_DEVICE";

/// Opens the transport a device selector names.
///
/// - `emu` or `emu:OPTIONS`: a new emulated device (options: [`EMU_OPTIONS_HELP`]);
/// - `vfio:DDDD:BB:DD.F`: the device at that PCI address, bound to vfio-pci;
/// - `auto`: `$TTDRV_DEVICE` if set, else the first bound VFIO device with ttdrv's PCI identity, else the emulated
///   device. A bound device that fails to open is reported, not silently replaced by the emulator.
///
/// `pinned_bytes` is the host memory the caller will pin for DMA once the device is open (a device passes
/// `DeviceParams::pinned_bytes()`): a VFIO device is refused before it is touched when `RLIMIT_MEMLOCK` cannot
/// cover it. An empty selector is refused: pass `auto` to let ttdrv choose.
pub fn open(selector: &str, pinned_bytes: u64) -> Result<std::sync::Arc<dyn Transport>, TransportError> {
    let sel = selector.trim();
    let bad = |reason: String| TransportError::Selector { selector: selector.to_string(), reason };
    if sel.is_empty() {
        return Err(bad("the selector is empty; pass \"auto\" to let ttdrv choose a device, \"emu\" for the \
                        emulated device or \"vfio:DDDD:BB:DD.F\" for a bound one"
            .into()));
    }
    if sel == "auto" {
        if let Ok(env) = std::env::var(DEVICE_ENV)
            && !env.trim().is_empty()
            && env.trim() != "auto"
        {
            return open(&env, pinned_bytes).map_err(|e| match e {
                TransportError::Selector { selector, reason } => TransportError::Selector {
                    selector,
                    reason: format!("{reason} (the selector comes from ${DEVICE_ENV})"),
                },
                e => e,
            });
        }
        let root = std::path::Path::new(vfio::sysfs::SYSFS_ROOT);
        if let Some(addr) = auto_device(root) {
            return Ok(std::sync::Arc::new(vfio::open_ttdrv(root, &addr, pinned_bytes)?));
        }
        return open("emu", pinned_bytes);
    }
    if sel == "emu" || sel.starts_with("emu:") {
        let opts = sel.strip_prefix("emu").unwrap_or("").trim_start_matches(':');
        let cfg = ttdrv_emu::EmuConfig::parse(opts).map_err(bad)?;
        return Ok(std::sync::Arc::new(emulated::EmulatedTransport::new(cfg)?));
    }
    if let Some(addr) = sel.strip_prefix("vfio:") {
        let addr: vfio::PciAddress = addr.parse().map_err(bad)?;
        let root = std::path::Path::new(vfio::sysfs::SYSFS_ROOT);
        return Ok(std::sync::Arc::new(vfio::open_ttdrv(root, &addr, pinned_bytes)?));
    }
    Err(bad("unknown kind of device; use `auto`, `emu[:options]` or `vfio:DDDD:BB:DD.F`".into()))
}

/// The PCI devices with ttdrv's identity (contract §1) that sysfs at `sysfs_root` (`/sys` on a host) lists, sorted
/// by address, bound to vfio-pci or not: what `ttdrv list` shows. Empty when there are none or sysfs is unreadable.
pub fn list_devices(sysfs_root: &std::path::Path) -> Vec<vfio::PciDeviceInfo> {
    vfio::sysfs::find(sysfs_root, ttdrv_contract::PCI_VENDOR, ttdrv_contract::PCI_DEVICE)
}

/// The device `auto` picks: the first one with ttdrv's identity that is bound to vfio-pci.
fn auto_device(sysfs_root: &std::path::Path) -> Option<vfio::PciAddress> {
    list_devices(sysfs_root).into_iter().find(|d| d.bound_to_vfio()).map(|d| d.address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttdrv_testkit::fakesys::FakeSys;

    #[test]
    fn auto_picks_the_first_bound_ttdrv_device() {
        let sys = FakeSys::new();
        assert_eq!(auto_device(sys.path()), None);
        sys.add_device("0000:01:00.0", (0x1234, 0x7454), 0x120000, None, Some(1), 0);
        sys.add_device("0000:02:00.0", (0x1234, 0x11e8), 0x00ff00, Some("vfio-pci"), Some(2), 0);
        assert_eq!(auto_device(sys.path()), None, "unbound ttdrv devices and other bound devices are skipped");
        sys.add_device("0000:04:00.0", (0x1234, 0x7454), 0x120000, Some("vfio-pci"), Some(4), 0);
        sys.add_device("0000:03:00.0", (0x1234, 0x7454), 0x120000, Some("vfio-pci"), Some(3), 1);
        assert_eq!(auto_device(sys.path()).map(|a| a.to_string()).as_deref(), Some("0000:03:00.0"));
        let all = list_devices(sys.path());
        let names: Vec<String> = all.iter().map(|d| d.address.to_string()).collect();
        assert_eq!(names, ["0000:01:00.0", "0000:03:00.0", "0000:04:00.0"]);
        assert_eq!(all[1].numa_node, Some(1));
    }

    #[test]
    fn vfio_selectors_are_checked() {
        let e = open("vfio:0000:01:00", 0).err();
        assert!(
            matches!(&e, Some(TransportError::Selector { selector, .. }) if selector == "vfio:0000:01:00"),
            "{e:?}"
        );
        assert!(e.is_some_and(|e| e.to_string().contains("DDDD:BB:DD.F")));
        // This machine has no such device: the error says how to find one.
        match open("vfio:0000:7f:1f.7", 0).err() {
            Some(e @ TransportError::NotFound { .. }) => {
                let m = e.to_string();
                assert!(m.contains("no PCI device at 0000:7f:1f.7") || m.contains("not a ttdrv device"), "{m}");
            }
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_unknown_selectors_are_refused_with_what_to_pass() {
        for sel in ["", "  "] {
            match open(sel, 0).err() {
                Some(e @ TransportError::Selector { .. }) => assert!(e.to_string().contains("pass \"auto\""), "{e}"),
                other => panic!("{sel:?}: expected a selector error, got {other:?}"),
            }
        }
        match open("pcie:3", 0).err() {
            Some(e @ TransportError::Selector { .. }) => {
                let m = e.to_string();
                assert!(m.starts_with("device selector `pcie:3`: unknown kind of device; use `auto`"), "{m}");
            }
            other => panic!("expected a selector error, got {other:?}"),
        }
    }
}
