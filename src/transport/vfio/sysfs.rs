//! What sysfs says about PCI devices: identity, driver, IOMMU group, NUMA node.
//!
//! Every function takes the sysfs root (`/sys` on a host) as a parameter, so the parsing is tested against a fake
//! tree in a temporary directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The sysfs root of the running system.
pub const SYSFS_ROOT: &str = "/sys";

/// Name of the kernel driver a device must be bound to.
pub const VFIO_PCI_DRIVER: &str = "vfio-pci";

/// A PCI address, `domain:bus:device.function`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI segment (domain).
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0 to 31.
    pub device: u8,
    /// Function number, 0 to 7.
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

impl fmt::Debug for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PciAddress({self})")
    }
}

impl FromStr for PciAddress {
    type Err = String;

    /// Parses `DDDD:BB:DD.F` or `BB:DD.F` (domain 0), hexadecimal as `lspci -D` prints it.
    fn from_str(s: &str) -> Result<PciAddress, String> {
        let bad =
            || format!("`{s}` is not a PCI address: expected DDDD:BB:DD.F as `lspci -D` prints it, e.g. 0000:01:00.0");
        let s = s.trim();
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        let hex = |t: &str, max_len: usize| -> Result<u32, String> {
            if t.is_empty() || t.len() > max_len || !t.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(t, 16).map_err(|_| bad())
        };
        let domain = hex(domain, 4)?;
        let bus = hex(bus, 2)?;
        let device = hex(device, 2)?;
        let function = hex(function, 1)?;
        if device > 31 || function > 7 {
            return Err(bad());
        }
        Ok(PciAddress { domain: domain as u16, bus: bus as u8, device: device as u8, function: function as u8 })
    }
}

/// One PCI device as sysfs describes it (what `ttdrv list` prints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciDeviceInfo {
    /// Where it is.
    pub address: PciAddress,
    /// PCI vendor ID.
    pub vendor: u16,
    /// PCI device ID.
    pub device: u16,
    /// The kernel driver bound to it, if any (`vfio-pci`, `nvme`, ...).
    pub driver: Option<String>,
    /// Its IOMMU group, if the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// The NUMA node it is attached to, if the platform says.
    pub numa_node: Option<u32>,
}

impl PciDeviceInfo {
    /// True when the device carries ttdrv's PCI identity (contract §1).
    pub fn is_ttdrv(&self) -> bool {
        self.vendor == ttdrv_contract::PCI_VENDOR && self.device == ttdrv_contract::PCI_DEVICE
    }

    /// True when bound to vfio-pci.
    pub fn bound_to_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_PCI_DRIVER)
    }
}

impl fmt::Display for PciDeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
        write!(
            f,
            "{}  {:04x}:{:04x}  driver {}  iommu_group {}  numa_node {}",
            self.address,
            self.vendor,
            self.device,
            self.driver.as_deref().unwrap_or("(none)"),
            opt(self.iommu_group),
            opt(self.numa_node)
        )
    }
}

/// A member of an IOMMU group, for viability reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// Its sysfs name (a PCI address for PCI devices).
    pub name: String,
    /// Its driver, if any.
    pub driver: Option<String>,
    /// True for a PCI-to-PCI bridge (class 0x0604), which never blocks a group.
    pub bridge: bool,
}

impl GroupMember {
    /// True when this member lets the group be used through VFIO: bound to a VFIO driver, to a driver that never
    /// does DMA on its own (`pci-stub`, `pcieport`), to no driver, or a bridge (the kernel's rule, in
    /// `iommu_group_dma_owner_claimed` and the drivers' `driver_managed_dma`).
    pub fn allows_vfio(&self) -> bool {
        match self.driver.as_deref() {
            None => true,
            Some(d) => self.bridge || d.starts_with("vfio") || d == "pci-stub" || d == "pcieport",
        }
    }
}

/// The sysfs directory of a PCI device.
pub fn device_dir(root: &Path, addr: &PciAddress) -> PathBuf {
    root.join("bus/pci/devices").join(addr.to_string())
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

fn parse_hex(s: &str) -> Option<u32> {
    let t = s.trim();
    let t = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    u32::from_str_radix(t, 16).ok()
}

/// The last component of a symlink's target (`driver` -> `.../drivers/vfio-pci` gives `vfio-pci`).
fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// True when sysfs has a directory for the device.
pub fn exists(root: &Path, addr: &PciAddress) -> bool {
    device_dir(root, addr).is_dir()
}

/// Vendor and device ID, from the `vendor` and `device` files.
pub fn ids(root: &Path, addr: &PciAddress) -> Option<(u16, u16)> {
    let dir = device_dir(root, addr);
    let vendor = parse_hex(&read_trimmed(&dir.join("vendor"))?)?;
    let device = parse_hex(&read_trimmed(&dir.join("device"))?)?;
    Some((u16::try_from(vendor).ok()?, u16::try_from(device).ok()?))
}

/// The PCI class code (24 bits), from the `class` file.
pub fn class(root: &Path, addr: &PciAddress) -> Option<u32> {
    parse_hex(&read_trimmed(&device_dir(root, addr).join("class"))?)
}

/// The bound driver's name, if any.
pub fn driver(root: &Path, addr: &PciAddress) -> Option<String> {
    link_name(&device_dir(root, addr).join("driver"))
}

/// The device's IOMMU group number, if it is in one.
pub fn iommu_group(root: &Path, addr: &PciAddress) -> Option<u32> {
    link_name(&device_dir(root, addr).join("iommu_group"))?.parse().ok()
}

/// The device's NUMA node; `None` when the platform does not say (`-1`).
pub fn numa_node(root: &Path, addr: &PciAddress) -> Option<u32> {
    read_trimmed(&device_dir(root, addr).join("numa_node"))?.parse::<i64>().ok().and_then(|n| u32::try_from(n).ok())
}

/// Everything `ttdrv list` shows about one device; `None` if sysfs has no such device.
pub fn device_info(root: &Path, addr: &PciAddress) -> Option<PciDeviceInfo> {
    let (vendor, device) = ids(root, addr)?;
    Some(PciDeviceInfo {
        address: *addr,
        vendor,
        device,
        driver: driver(root, addr),
        iommu_group: iommu_group(root, addr),
        numa_node: numa_node(root, addr),
    })
}

/// Every PCI device sysfs lists, sorted by address.
pub fn scan(root: &Path) -> Vec<PciDeviceInfo> {
    let Ok(entries) = std::fs::read_dir(root.join("bus/pci/devices")) else {
        return Vec::new();
    };
    let mut out: Vec<PciDeviceInfo> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<PciAddress>().ok())
        .filter_map(|a| device_info(root, &a))
        .collect();
    out.sort_by_key(|d| d.address);
    out
}

/// The devices with the given vendor and device ID, sorted by address.
pub fn find(root: &Path, vendor: u16, device: u16) -> Vec<PciDeviceInfo> {
    scan(root).into_iter().filter(|d| d.vendor == vendor && d.device == device).collect()
}

/// Number of IOMMU groups; 0 means the IOMMU is off or absent.
pub fn iommu_group_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("kernel/iommu_groups")).map(|d| d.filter_map(|e| e.ok()).count()).unwrap_or(0)
}

/// The members of IOMMU group `group`, sorted by name.
pub fn group_members(root: &Path, group: u32) -> Vec<GroupMember> {
    let dir = root.join("kernel/iommu_groups").join(group.to_string()).join("devices");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<GroupMember> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            // The entry links to the device's own directory, which has `driver` and `class`.
            let path = e.path();
            let driver = link_name(&path.join("driver"));
            let bridge =
                read_trimmed(&path.join("class")).and_then(|c| parse_hex(&c)).is_some_and(|c| c >> 8 == 0x0604);
            GroupMember { name, driver, bridge }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// True when the vfio-pci driver is available (loaded as a module or built in).
pub fn vfio_pci_available(root: &Path) -> bool {
    root.join("bus/pci/drivers").join(VFIO_PCI_DRIVER).is_dir() || root.join("module/vfio_pci").is_dir()
}

/// Hugepage counts of one size on one NUMA node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HugepageCount {
    /// NUMA node, or `None` for the system-wide counters (kernels without NUMA).
    pub node: Option<u32>,
    /// Page size in KiB (2048 or 1048576).
    pub size_kib: u64,
    /// Reserved pages.
    pub total: u64,
    /// Pages not in use.
    pub free: u64,
}

fn hugepage_dir(dir: &Path, node: Option<u32>) -> Vec<HugepageCount> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<HugepageCount> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let size_kib = name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse().ok()?;
            let total = read_trimmed(&e.path().join("nr_hugepages"))?.parse().ok()?;
            let free = read_trimmed(&e.path().join("free_hugepages"))?.parse().ok()?;
            Some(HugepageCount { node, size_kib, total, free })
        })
        .collect();
    out.sort_by_key(|h| h.size_kib);
    out
}

/// Hugepages per NUMA node (`devices/system/node/node*/hugepages`), or the system-wide counters
/// (`kernel/mm/hugepages`) when the kernel has no NUMA nodes.
pub fn hugepages(root: &Path) -> Vec<HugepageCount> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(root.join("devices/system/node")) {
        let mut nodes: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
            .collect();
        nodes.sort_unstable();
        for n in nodes {
            out.extend(hugepage_dir(
                &root.join("devices/system/node").join(format!("node{n}")).join("hugepages"),
                Some(n),
            ));
        }
    }
    if out.is_empty() {
        out = hugepage_dir(&root.join("kernel/mm/hugepages"), None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttdrv_testkit::fakesys::FakeSys;

    #[test]
    fn parses_and_prints_pci_addresses() {
        let a: PciAddress = "0000:01:00.0".parse().unwrap();
        assert_eq!(a, PciAddress { domain: 0, bus: 1, device: 0, function: 0 });
        assert_eq!(a.to_string(), "0000:01:00.0");
        let b: PciAddress = "3a:1f.7".parse().unwrap();
        assert_eq!(b.to_string(), "0000:3a:1f.7");
        for bad in
            ["", "10000:ff:1f.7", "0000:01:00", "0000:01:20.0", "0000:01:00.8", "zz:00.0", "0:0:0:0.0", "0000:001:00.0"]
        {
            let e = bad.parse::<PciAddress>().unwrap_err();
            assert!(e.contains("DDDD:BB:DD.F"), "{bad}: {e}");
        }
    }

    #[test]
    fn reads_devices_from_a_fake_tree() {
        let sys = FakeSys::new();
        sys.add_device("0000:02:00.0", (0x1234, 0x7454), 0x120000, Some("vfio-pci"), Some(7), 1);
        sys.add_device("0000:01:00.0", (0x8086, 0x1533), 0x020000, Some("igb"), Some(3), -1);
        sys.add_device("0000:03:00.0", (0x1234, 0x7454), 0x120000, None, None, 0);
        let all = scan(sys.path());
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].address.to_string(), "0000:01:00.0");
        assert_eq!(all[0].driver.as_deref(), Some("igb"));
        assert_eq!(all[0].numa_node, None);
        let tt = find(sys.path(), 0x1234, 0x7454);
        assert_eq!(tt.len(), 2);
        assert!(tt[0].is_ttdrv() && tt[0].bound_to_vfio());
        assert_eq!(tt[0].iommu_group, Some(7));
        assert_eq!(tt[0].numa_node, Some(1));
        assert_eq!(tt[1].driver, None);
        assert_eq!(tt[1].iommu_group, None);
        assert_eq!(tt[0].to_string(), "0000:02:00.0  1234:7454  driver vfio-pci  iommu_group 7  numa_node 1");
        assert_eq!(iommu_group_count(sys.path()), 2);
        assert!(vfio_pci_available(sys.path()));
        let missing: PciAddress = "0000:09:00.0".parse().unwrap();
        assert!(!exists(sys.path(), &missing));
        assert_eq!(device_info(sys.path(), &missing), None);
    }

    #[test]
    fn group_members_and_viability() {
        let sys = FakeSys::new();
        sys.add_device("0000:00:01.0", (0x8086, 0x1901), 0x060400, Some("pcieport"), Some(1), 0);
        sys.add_device("0000:01:00.0", (0x1234, 0x7454), 0x120000, Some("vfio-pci"), Some(1), 0);
        sys.add_device("0000:01:00.1", (0x10de, 0x10f0), 0x040300, Some("snd_hda_intel"), Some(1), 0);
        sys.add_device("0000:01:00.2", (0x10de, 0x10f1), 0x0c0330, None, Some(1), 0);
        let m = group_members(sys.path(), 1);
        assert_eq!(m.len(), 4);
        assert!(m[0].bridge && m[0].allows_vfio());
        assert!(m[1].allows_vfio());
        assert_eq!(m[2].driver.as_deref(), Some("snd_hda_intel"));
        assert!(!m[2].allows_vfio());
        assert!(m[3].allows_vfio());
        assert!(group_members(sys.path(), 99).is_empty());
    }

    #[test]
    fn hugepages_per_node_and_fallback() {
        let sys = FakeSys::new();
        sys.write("kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "8\n");
        sys.write("kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "6\n");
        assert_eq!(hugepages(sys.path()), vec![HugepageCount { node: None, size_kib: 2048, total: 8, free: 6 }]);
        for (n, free) in [(1, 0), (0, 30)] {
            for (size, total) in [(2048, 64), (1048576, 0)] {
                let d = format!("devices/system/node/node{n}/hugepages/hugepages-{size}kB");
                sys.write(&format!("{d}/nr_hugepages"), &format!("{total}\n"));
                sys.write(&format!("{d}/free_hugepages"), &format!("{}\n", if size == 2048 { free } else { 0 }));
            }
        }
        sys.mkdir("devices/system/node/possible_not_a_node");
        let h = hugepages(sys.path());
        assert_eq!(h.len(), 4);
        assert_eq!(h[0], HugepageCount { node: Some(0), size_kib: 2048, total: 64, free: 30 });
        assert_eq!(h[2], HugepageCount { node: Some(1), size_kib: 2048, total: 64, free: 0 });
    }
}
