//! The transport to a real device through the kernel's VFIO stack (`vfio-pci` with the type1 IOMMU).
//!
//! Opening follows the sequence every user-space VFIO driver uses (SPDK, DPDK, QEMU's vfio-helpers, ixy): check
//! sysfs (IOMMU on, device bound to vfio-pci, in a group) → container (API version, type1v2 or type1) → group
//! (viable?) → attach group, set the IOMMU type → read the usable IOVA windows → device fd → map BAR0 (sparse-mmap
//! aware) → wire MSI-X/MSI vectors to eventfds → memory space and bus mastering on. Teardown runs the other way:
//! bus mastering off before any DMA unmap, vectors unwired, remaining mappings removed, BAR unmapped, then the
//! device, group and container descriptors closed in that order. Every failure on the way releases what was set
//! up (each piece is an owning value dropped in reverse order) and says what to do ([`advice`]).
//!
//! # Why `vfio-bindings` and not `vfio-ioctls`
//! The kernel structs and constants come from `vfio-bindings` 0.7 (generated from `linux/vfio.h`, no default
//! features, no dependencies). The ioctls are wrapped here ([`ioctl`], one function per ioctl) rather than taken
//! from `vfio-ioctls` 0.10, because for a driver that must report every failure and never panic, that crate:
//! - swallows errors: `VfioDevice::reset()` returns `()` whatever `VFIO_DEVICE_RESET` did, and `region_read` /
//!   `region_write` log and return on failure, so a dead device reads as zeros;
//! - has no BAR mmap helper that honours sparse-mmap areas, and no query of the IOMMU's usable IOVA ranges
//!   (`VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`), both of which ttdrv needs;
//! - can panic in `Drop` (it unwraps while putting the group back), which would abort a process unwinding from
//!   another error.
//!
//! Wrapping fourteen ioctls costs less than working around those, and keeps every `unsafe` block next to the
//! one call it justifies.

pub mod advice;
pub mod host;
pub mod ioctl;
mod irq;
mod region;
pub mod sysfs;

pub use sysfs::{PciAddress, PciDeviceInfo};

use super::{DmaMemory, Transport, TransportError};
use host::HostFacts;
use region::{Bar, CMD_BUS_MASTER, CMD_MEMORY, ConfigSpace};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use ttdrv_contract::Iova;
use ttdrv_contract::regs::BarOffset;
use vfio_bindings::bindings::vfio as sys;

/// The VFIO container device.
const CONTAINER_PATH: &str = "/dev/vfio/vfio";

/// IOVA windows assumed when the kernel predates `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE` (Linux < 5.4): everything
/// below 2^48 except the x86 MSI window, which the IOMMU reserves for interrupt messages.
const LEGACY_IOVA_WINDOWS: [Range<u64>; 2] = [0..0xfee0_0000, 0xff00_0000..1 << 48];

fn open_err(addr: &PciAddress, reason: impl Into<String>) -> TransportError {
    TransportError::Open { device: format!("vfio:{addr}"), reason: reason.into() }
}

fn not_found(addr: &PciAddress, reason: impl Into<String>) -> TransportError {
    TransportError::NotFound { device: format!("vfio:{addr}"), reason: reason.into() }
}

fn os_err(what: String, source: io::Error) -> TransportError {
    TransportError::Os { what, source }
}

/// A device opened through VFIO.
///
/// Field order is teardown order (Rust drops fields in declaration order, after [`Drop::drop`] has turned bus
/// mastering off and removed the DMA mappings): BAR mappings, config access and eventfds first, then the device,
/// group and container descriptors.
pub struct VfioTransport {
    name: String,
    address: PciAddress,
    bar0: Bar,
    config: ConfigSpace,
    vectors: irq::Vectors,
    iova_windows: Vec<Range<u64>>,
    /// `VFIO_TYPE1v2_IOMMU` or `VFIO_TYPE1_IOMMU`.
    iommu_type: u32,
    /// Smallest IOMMU page: mappings must be aligned to it.
    iommu_page: u64,
    /// Live DMA mappings, IOVA -> length.
    mappings: Mutex<BTreeMap<u64, u64>>,
    numa_node: Option<u32>,
    can_reset: bool,
    host: HostFacts,
    /// A register access failed once (reported once, then it reads as all ones).
    io_warned: AtomicBool,
    device: Arc<File>,
    /// Held open for the transport's life: closing it detaches the group from the container.
    _group: OwnedFd,
    container: OwnedFd,
}

impl std::fmt::Debug for VfioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioTransport").field("address", &self.address).finish_non_exhaustive()
    }
}

fn open_dev_node(path: &str) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open(path)
}

/// Checks what sysfs can tell before any descriptor is opened; returns the IOMMU group.
fn precheck(root: &Path, addr: &PciAddress, host: &HostFacts) -> Result<u32, TransportError> {
    if !sysfs::exists(root, addr) {
        return Err(not_found(addr, advice::no_such_device(addr)));
    }
    if sysfs::iommu_group_count(root) == 0 {
        return Err(open_err(addr, advice::iommu_off(host.cpu_vendor.as_deref(), host.in_vm)));
    }
    let driver = sysfs::driver(root, addr);
    if driver.as_deref() != Some(sysfs::VFIO_PCI_DRIVER) {
        return Err(open_err(addr, advice::not_bound(addr, sysfs::ids(root, addr), driver.as_deref())));
    }
    sysfs::iommu_group(root, addr).ok_or_else(|| open_err(addr, advice::no_group(addr)))
}

/// Opens the container and picks the IOMMU type (type1v2, else type1).
fn open_container(addr: &PciAddress) -> Result<(OwnedFd, u32), TransportError> {
    let open_err = |reason: String| open_err(addr, reason);
    let file = open_dev_node(CONTAINER_PATH).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => open_err(advice::no_vfio_dev()),
        io::ErrorKind::PermissionDenied => open_err(advice::no_permission(CONTAINER_PATH)),
        _ => os_err(format!("open {CONTAINER_PATH}"), e),
    })?;
    let fd = OwnedFd::from(file);
    let version = ioctl::api_version(fd.as_fd()).map_err(|e| open_err(format!("{CONTAINER_PATH}: {e}")))?;
    if version != sys::VFIO_API_VERSION as i32 {
        return Err(open_err(format!(
            "{CONTAINER_PATH} speaks VFIO API version {version}; ttdrv needs version {}",
            sys::VFIO_API_VERSION
        )));
    }
    for ty in [sys::VFIO_TYPE1v2_IOMMU, sys::VFIO_TYPE1_IOMMU] {
        if ioctl::check_extension(fd.as_fd(), ty).map_err(|e| open_err(format!("{CONTAINER_PATH}: {e}")))? {
            return Ok((fd, ty));
        }
    }
    Err(open_err(
        "the kernel's VFIO has no type1 IOMMU driver: load it with `modprobe vfio_iommu_type1` (as root); \
         ttdrv needs an x86-style IOMMU (Intel VT-d or AMD-Vi)"
            .into(),
    ))
}

/// Opens the group and checks it is viable.
fn open_group(root: &Path, addr: &PciAddress, group: u32) -> Result<OwnedFd, TransportError> {
    let path = format!("/dev/vfio/{group}");
    let open_err = |reason: String| open_err(addr, reason);
    let file = open_dev_node(&path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => open_err(format!(
            "{path} does not exist although {addr} is bound to vfio-pci: the VFIO group device was not created. Is \
             /dev a devtmpfs (or udev running)? Rebinding the device may recreate it:\n{}",
            advice::bind_commands(addr, Some(sysfs::VFIO_PCI_DRIVER))
        )),
        Some(libc::EACCES) | Some(libc::EPERM) => open_err(advice::no_permission(&path)),
        Some(libc::EBUSY) => open_err(advice::group_busy(&path, addr)),
        _ => os_err(format!("open {path}"), e),
    })?;
    let fd = OwnedFd::from(file);
    let flags = ioctl::group_status(fd.as_fd()).map_err(|e| open_err(format!("{path}: {e}")))?;
    if flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
        return Err(open_err(advice::group_not_viable(addr, group, &sysfs::group_members(root, group))));
    }
    Ok(fd)
}

/// The IOMMU's usable IOVA windows and its smallest page size.
fn iommu_windows(addr: &PciAddress, container: &OwnedFd) -> Result<(Vec<Range<u64>>, u64), TransportError> {
    let r = ioctl::iommu_info(container.as_fd()).map_err(|e| open_err(addr, format!("{CONTAINER_PATH}: {e}")))?;
    let page = if r.info.flags & sys::VFIO_IOMMU_INFO_PGSIZES != 0 && r.info.iova_pgsizes != 0 {
        1u64 << r.info.iova_pgsizes.trailing_zeros()
    } else {
        4096
    };
    let mut windows = Vec::new();
    if r.info.flags & sys::VFIO_IOMMU_INFO_CAPS != 0 {
        for cap in ioctl::caps(&r.bytes, r.info.cap_offset) {
            if cap.id as u32 == sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE {
                windows = ioctl::iova_ranges(&r.bytes, &cap);
            }
        }
    }
    if windows.is_empty() {
        log::debug!("the IOMMU reports no IOVA ranges (Linux < 5.4); assuming all but the MSI window");
        windows = LEGACY_IOVA_WINDOWS.to_vec();
    }
    Ok((windows, page))
}

impl VfioTransport {
    /// Opens the PCI device at `address` through VFIO, whatever its identity (the QEMU test opens the `edu`
    /// device this way). [`open_ttdrv`] is the checked entry point for ttdrv devices.
    pub fn open(address: &PciAddress) -> Result<VfioTransport, TransportError> {
        Self::open_at(Path::new(sysfs::SYSFS_ROOT), address)
    }

    /// As [`VfioTransport::open`], with sysfs at `sysfs_root` (the `/dev/vfio` nodes are always the real ones).
    pub fn open_at(sysfs_root: &Path, address: &PciAddress) -> Result<VfioTransport, TransportError> {
        let host = HostFacts::current();
        let group_no = precheck(sysfs_root, address, &host)?;
        // Locals drop in reverse order on any error below: device, then group, then container.
        let (container, iommu_type) = open_container(address)?;
        let open_err = |reason: String| open_err(address, reason);
        let group = open_group(sysfs_root, address, group_no)?;
        ioctl::group_set_container(group.as_fd(), container.as_fd())
            .map_err(|e| open_err(format!("attaching IOMMU group {group_no} to a container: {e}")))?;
        ioctl::set_iommu(container.as_fd(), iommu_type)
            .map_err(|e| open_err(format!("selecting the type1 IOMMU: {e}")))?;
        let (iova_windows, iommu_page) = iommu_windows(address, &container)?;

        let name = CString::new(address.to_string()).map_err(|e| open_err(e.to_string()))?;
        let device = ioctl::group_device_fd(group.as_fd(), &name).map_err(|e| match e.errno() {
            Some(libc::EBUSY) => open_err(advice::group_busy(&format!("/dev/vfio/{group_no}"), address)),
            _ => open_err(format!("getting a VFIO descriptor for the device: {e}")),
        })?;
        let device = Arc::new(File::from(device));
        let info = ioctl::device_info(device.as_fd()).map_err(|e| open_err(e.to_string()))?;
        if info.flags & sys::VFIO_DEVICE_FLAGS_PCI == 0 || info.num_regions <= sys::VFIO_PCI_CONFIG_REGION_INDEX {
            return Err(open_err(format!(
                "VFIO does not present it as a PCI device (flags {:#x}, {} regions)",
                info.flags, info.num_regions
            )));
        }
        let bar0 = Bar::new(&device, sys::VFIO_PCI_BAR0_REGION_INDEX).map_err(|e| open_err(format!("BAR0: {e}")))?;
        let config = ConfigSpace::new(&device).map_err(|e| open_err(format!("configuration space: {e}")))?;
        let vectors = match irq::Vectors::enable(device.as_fd()) {
            Ok(v) => v,
            Err(e) => {
                log::warn!("{address}: no interrupts ({e}); waits will poll");
                irq::Vectors::none()
            }
        };
        let t = VfioTransport {
            name: format!("vfio:{address}"),
            address: *address,
            bar0,
            config,
            vectors,
            iova_windows,
            iommu_type,
            iommu_page,
            mappings: Mutex::new(BTreeMap::new()),
            numa_node: sysfs::numa_node(sysfs_root, address),
            can_reset: info.flags & sys::VFIO_DEVICE_FLAGS_RESET != 0,
            host,
            io_warned: AtomicBool::new(false),
            device,
            _group: group,
            container,
        };
        // Last step, so nothing after it can fail with the device able to master the bus. On failure `t` drops,
        // which runs the full teardown.
        t.config
            .update_command(CMD_MEMORY | CMD_BUS_MASTER, true)
            .map_err(|e| os_err(format!("{address}: enabling memory space and bus mastering"), e))?;
        log::debug!(
            "{address}: opened (BAR0 {:#x} bytes, {}; {} vector(s); IOVA windows {:x?})",
            t.bar0.size(),
            if t.bar0.is_mapped() { "mmap'd" } else { "pread/pwrite" },
            t.vectors.len(),
            t.iova_windows
        );
        Ok(t)
    }

    /// The device's PCI address.
    pub fn address(&self) -> PciAddress {
        self.address
    }

    /// Size of BAR0 in bytes.
    pub fn bar0_size(&self) -> u64 {
        self.bar0.size()
    }

    /// True when BAR0 (or part of it) is mmap'd; false when every access goes through `pread`/`pwrite`.
    pub fn bar0_mmapped(&self) -> bool {
        self.bar0.is_mapped()
    }

    /// The IOMMU model in use: `type1v2`, or `type1` on kernels without v2.
    pub fn iommu_type(&self) -> &'static str {
        if self.iommu_type == sys::VFIO_TYPE1v2_IOMMU { "type1v2" } else { "type1" }
    }

    /// True when the kernel offers a reset for this device (`VFIO_DEVICE_FLAGS_RESET`).
    pub fn can_reset(&self) -> bool {
        self.can_reset
    }

    /// Bytes currently mapped for DMA.
    pub fn mapped_bytes(&self) -> u64 {
        self.mappings.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    fn io_failed(&self, what: &str, off: BarOffset, e: io::Error) {
        if !self.io_warned.swap(true, Ordering::Relaxed) {
            log::warn!(
                "{}: {what} of BAR0 offset {:#x} failed ({e}); reads return 0xffffffff like a device that fell off \
                 the bus (further failures are not reported)",
                self.name,
                off.0
            );
        }
    }

    /// Why a DMA map failed; `needed` is what would be pinned had it succeeded.
    fn map_reason(&self, e: &ioctl::IoctlError, needed: u64) -> String {
        match e.errno() {
            Some(libc::ENOMEM) if !self.host.cap_ipc_lock => {
                format!(
                    "{e}: the kernel could not pin the pages. {} (4 KiB pages locked with mlock count against the \
                     limit once more; hugepages do not)",
                    advice::memlock_too_low(host::memlock_limit(), needed)
                )
            }
            Some(libc::EEXIST) => format!("{e}: the range overlaps an existing mapping"),
            Some(libc::ENOSPC) => format!(
                "{e}: the IOMMU driver's mapping limit is reached (vfio_iommu_type1 dma_entry_limit, 65535 by \
                 default): use hugepages or fewer, larger buffers"
            ),
            _ => e.to_string(),
        }
    }
}

/// Opens a ttdrv device at `address`: checks its PCI identity and that this process may pin `pinned_bytes` of DMA
/// memory (what the caller's device parameters need, `DeviceParams::pinned_bytes()`), then opens it. Used by the
/// `vfio:` and `auto` selectors.
pub fn open_ttdrv(sysfs_root: &Path, address: &PciAddress, pinned_bytes: u64) -> Result<VfioTransport, TransportError> {
    if !sysfs::exists(sysfs_root, address) {
        return Err(not_found(address, advice::no_such_device(address)));
    }
    if let Some((v, d)) = sysfs::ids(sysfs_root, address)
        && (v, d) != (ttdrv_contract::PCI_VENDOR, ttdrv_contract::PCI_DEVICE)
    {
        return Err(not_found(
            address,
            format!(
                "PCI device {address} is {v:04x}:{d:04x}, not a ttdrv device ({:04x}:{:04x}); `ttdrv list` shows the \
                 ttdrv devices of this host",
                ttdrv_contract::PCI_VENDOR,
                ttdrv_contract::PCI_DEVICE
            ),
        ));
    }
    if let Some(msg) = HostFacts::current().memlock_shortfall(pinned_bytes) {
        return Err(open_err(address, msg));
    }
    VfioTransport::open_at(sysfs_root, address)
}

impl Transport for VfioTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn read32(&self, off: BarOffset) -> u32 {
        self.bar0.read32(off.0 as u64).unwrap_or_else(|e| {
            self.io_failed("read", off, e);
            u32::MAX
        })
    }

    fn write32(&self, off: BarOffset, val: u32) {
        if let Err(e) = self.bar0.write32(off.0 as u64, val) {
            self.io_failed("write", off, e);
        }
    }

    fn iova_ranges(&self) -> Vec<Range<u64>> {
        self.iova_windows.clone()
    }

    fn dma_map(&self, mem: &DmaMemory, iova: Iova) -> Result<(), TransportError> {
        let len = mem.len as u64;
        let fail = |reason: String| TransportError::DmaMap { iova, len, reason };
        let page = self.iommu_page;
        if len == 0 || len % page != 0 || iova.0 % page != 0 || (mem.vaddr as u64) % page != 0 {
            return Err(fail(format!(
                "address {:p}, IOVA and length must be multiples of the IOMMU page ({page:#x} bytes)",
                mem.vaddr
            )));
        }
        let end = iova.0.checked_add(len).ok_or_else(|| fail("the range wraps around".into()))?;
        if !self.iova_windows.iter().any(|w| w.start <= iova.0 && end <= w.end) {
            return Err(fail(format!("the range is outside the IOMMU's usable IOVA windows {:x?}", self.iova_windows)));
        }
        let mut maps = self.mappings.lock().unwrap_or_else(|e| e.into_inner());
        ioctl::map_dma(self.container.as_fd(), mem.vaddr as u64, iova.0, len)
            .map_err(|e| fail(self.map_reason(&e, maps.values().sum::<u64>() + len)))?;
        maps.insert(iova.0, len);
        Ok(())
    }

    unsafe fn dma_map_user(&self, vaddr: *mut u8, len: usize, iova: Iova) -> Result<(), TransportError> {
        // VFIO maps by address: the kernel pins the pages behind `vaddr` (a file behind them is not needed).
        self.dma_map(&DmaMemory { vaddr, len, fd: -1, fd_offset: 0 }, iova)
    }

    fn dma_unmap(&self, iova: Iova, len: u64) -> Result<(), TransportError> {
        let fail = |reason: String| TransportError::DmaUnmap { iova, len, reason };
        let mut maps = self.mappings.lock().unwrap_or_else(|e| e.into_inner());
        let done = ioctl::unmap_dma(self.container.as_fd(), iova.0, len).map_err(|e| fail(e.to_string()))?;
        if maps.get(&iova.0) == Some(&len) || done > 0 {
            maps.remove(&iova.0);
        }
        if done != len {
            return Err(fail(format!(
                "the kernel unmapped {done:#x} of the {len:#x} bytes: no mapping matches the range"
            )));
        }
        Ok(())
    }

    fn reset(&self) -> Result<(), TransportError> {
        if !self.can_reset {
            return Err(TransportError::Reset {
                device: self.name.clone(),
                reason: "the kernel offers no reset for this device (no function-level, power-management or bus \
                         reset is available in its slot); reset it through its own RESET register, or put it in a \
                         slot below a bridge port"
                    .into(),
            });
        }
        let before =
            self.config.command().map_err(|e| os_err(format!("{}: reading the command register", self.name), e))?;
        ioctl::reset(self.device.as_fd())
            .map_err(|e| TransportError::Reset { device: self.name.clone(), reason: e.to_string() })?;
        // The kernel saves and restores the configuration around the reset; put back memory space and bus
        // mastering if the restore did not.
        let keep = before & (CMD_MEMORY | CMD_BUS_MASTER);
        let after =
            self.config.command().map_err(|e| os_err(format!("{}: reading the command register", self.name), e))?;
        if after & keep != keep {
            self.config
                .set_command(after | keep)
                .map_err(|e| os_err(format!("{}: restoring the command register after reset", self.name), e))?;
        }
        Ok(())
    }

    fn irq_vectors(&self) -> u32 {
        self.vectors.len()
    }

    fn wait_irq(&self, vector: u32, timeout: Duration) -> Result<bool, TransportError> {
        if self.vectors.is_empty() {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            return Ok(false);
        }
        let Some(fd) = self.vectors.fd(vector) else {
            return Err(os_err(
                format!("{}: waiting on interrupt vector {vector} of {}", self.name, self.vectors.len()),
                io::Error::from(io::ErrorKind::InvalidInput),
            ));
        };
        super::emulated::wait_eventfd(fd, timeout)
    }

    fn needs_pinned_memory(&self) -> bool {
        true
    }

    fn numa_node(&self) -> Option<u32> {
        self.numa_node
    }

    fn quiesce(&self) {
        if let Err(e) = self.config.update_command(CMD_BUS_MASTER, false) {
            log::warn!("{}: could not turn bus mastering off: {e}", self.name);
        }
    }
}

impl Drop for VfioTransport {
    fn drop(&mut self) {
        // 1. The device stops issuing DMA before any memory it could reach is unmapped.
        self.quiesce();
        // 2. No more interrupts into eventfds about to close.
        if let Err(e) = self.vectors.disable(self.device.as_fd()) {
            log::warn!("{}: unwiring interrupts: {e}", self.name);
        }
        // 3. Mappings the users left behind (closing the container would drop them too; doing it here reports
        //    failures).
        let maps = std::mem::take(self.mappings.get_mut().unwrap_or_else(|e| e.into_inner()));
        for (iova, len) in maps {
            if let Err(e) = ioctl::unmap_dma(self.container.as_fd(), iova, len) {
                log::warn!("{}: unmapping IOVA {iova:#x}: {e}", self.name);
            }
        }
        // 4. The fields drop in declaration order: BAR mappings, eventfds, device, group, container.
    }
}
