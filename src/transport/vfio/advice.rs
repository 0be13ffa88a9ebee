//! Messages for what users hit when opening a device through VFIO, each saying what to do.
//!
//! Pure functions of what was found, so the wording is unit tested; `ttdrv doctor` prints the same texts.
//! Commands name the real `/sys` and `/dev` paths (not a test's fake root): they are for the user to run.

use super::sysfs::{GroupMember, PciAddress, VFIO_PCI_DRIVER};
use std::fmt::Write as _;

/// Where the host set-up is documented.
pub const HOST_SETUP_DOC: &str = "docs/host-setup.md";
/// The udev rule that grants access and binds devices to vfio-pci.
pub const UDEV_RULE: &str = "udev/70-ttdrv.rules";
/// The limits.d drop-in that raises RLIMIT_MEMLOCK for the `ttdrv` group.
pub const MEMLOCK_CONF: &str = "udev/99-ttdrv-memlock.conf";
/// The group whose members may open ttdrv devices.
pub const ACCESS_GROUP: &str = "ttdrv";

/// The commands that bind `addr` to vfio-pci (as root), unbinding `current` first if there is one.
pub fn bind_commands(addr: &PciAddress, current: Option<&str>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "  modprobe vfio-pci");
    if current.is_some() {
        let _ = writeln!(s, "  echo {addr} > /sys/bus/pci/devices/{addr}/driver/unbind");
    }
    let _ = writeln!(s, "  echo {VFIO_PCI_DRIVER} > /sys/bus/pci/devices/{addr}/driver_override");
    let _ = write!(s, "  echo {addr} > /sys/bus/pci/drivers/{VFIO_PCI_DRIVER}/bind");
    s
}

/// The device is bound to another driver, or to none.
pub fn not_bound(addr: &PciAddress, ids: Option<(u16, u16)>, current: Option<&str>) -> String {
    let what = match ids {
        Some((v, d)) => format!("PCI device {addr} ({v:04x}:{d:04x})"),
        None => format!("PCI device {addr}"),
    };
    let bound = match current {
        Some(d) => format!("is bound to the `{d}` driver"),
        None => "is bound to no driver".to_string(),
    };
    format!(
        "{what} {bound}, not to {VFIO_PCI_DRIVER}, so it cannot be used from user space. As root, run:\n{}\n\
         or install {UDEV_RULE} and opt in with `touch /etc/ttdrv/vfio-autobind`, so that udev does this for ttdrv \
         devices whenever they appear (see {HOST_SETUP_DOC})",
        bind_commands(addr, current)
    )
}

/// The device's IOMMU group has members that keep it from being used.
pub fn group_not_viable(addr: &PciAddress, group: u32, members: &[GroupMember]) -> String {
    let mut s = format!(
        "IOMMU group {group} of {addr} is not viable: the IOMMU isolates whole groups, so every device in group \
         {group} must be bound to {VFIO_PCI_DRIVER} (or pci-stub, or to no driver) before any of them can be used. \
         Devices in group {group}:\n"
    );
    let mut blockers = Vec::new();
    for m in members {
        let driver = m.driver.as_deref().unwrap_or("(no driver)");
        let note = if m.allows_vfio() {
            ""
        } else {
            blockers.push(m);
            "   <- blocks the group"
        };
        let _ = writeln!(s, "  {}  {driver}{note}", m.name);
    }
    if members.is_empty() {
        let _ = writeln!(s, "  (sysfs lists none: see /sys/kernel/iommu_groups/{group}/devices)");
    }
    for b in blockers {
        if let Ok(a) = b.name.parse::<PciAddress>() {
            let _ = writeln!(s, "Unbind {} from `{}` (as root):", b.name, b.driver.as_deref().unwrap_or(""));
            let _ = writeln!(s, "{}", bind_commands(&a, b.driver.as_deref()));
        }
    }
    s.push_str(
        "or move the card to a slot whose IOMMU group holds nothing else (a slot below a port with ACS; `ttdrv \
         doctor` shows the groups)",
    );
    s
}

/// Opening a `/dev/vfio` node was refused.
pub fn no_permission(path: &str) -> String {
    format!(
        "no permission to open {path}. Give the `{ACCESS_GROUP}` group access with {UDEV_RULE} and join it (as \
         root):\n  groupadd -f {ACCESS_GROUP}\n  usermod -aG {ACCESS_GROUP} $USER\n  install -m 0755 \
         udev/ttdrv-iommu-group /usr/lib/udev/\n  cp {UDEV_RULE} /etc/udev/rules.d/\n  udevadm control --reload\n  \
         udevadm trigger --action=add --subsystem-match=vfio\nthen log in again so the new group applies. The rule \
         opens the node only when every device in the IOMMU group is a ttdrv device or is listed in \
         /etc/ttdrv/iommu-group-allow (`ttdrv doctor` names the others; see {HOST_SETUP_DOC})"
    )
}

/// Another process holds the group.
pub fn group_busy(path: &str, addr: &PciAddress) -> String {
    format!(
        "{path} (the IOMMU group of {addr}) is in use by another process: another ttdrv program or a virtual \
         machine has the device open. Close it first (`fuser -v {path}` shows which process)"
    )
}

/// The kernel has no IOMMU groups: the IOMMU is off, or this is a virtual machine without one.
pub fn iommu_off(cpu_vendor: Option<&str>, in_vm: bool) -> String {
    let param = match cpu_vendor {
        Some("GenuineIntel") => "`intel_iommu=on iommu=pt`".to_string(),
        Some("AuthenticAMD") | Some("HygonGenuine") => "`amd_iommu=on iommu=pt`".to_string(),
        _ => "`intel_iommu=on iommu=pt` (Intel) or `amd_iommu=on iommu=pt` (AMD)".to_string(),
    };
    let host_fix = format!(
        "enable VT-d / AMD-Vi in the firmware set-up, add {param} to the kernel command line (GRUB_CMDLINE_LINUX \
         in /etc/default/grub, then `update-grub` and reboot), and check that /sys/kernel/iommu_groups is populated"
    );
    let mut s = "the IOMMU is not enabled (/sys/kernel/iommu_groups is empty), and VFIO needs it to give a device \
                 to user space safely. "
        .to_string();
    if in_vm {
        s.push_str(
            "This machine is a virtual machine (the CPU reports a hypervisor): VFIO works in it only if the \
             hypervisor gives it a virtual IOMMU and passes the device through (QEMU: `-device \
             intel-iommu,intremap=on,caching-mode=on -device vfio-pci,host=...`); otherwise run ttdrv on the host \
             that has the device. On that host, ",
        );
        s.push_str(&host_fix);
    } else {
        let mut chars = host_fix.chars();
        s.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        s.push_str(chars.as_str());
    }
    s.push_str(". Without a device, use the emulated one (`emu`)");
    s
}

/// `/dev/vfio/vfio` does not exist.
pub fn no_vfio_dev() -> String {
    "/dev/vfio/vfio does not exist: the VFIO modules are not loaded. Run `modprobe vfio-pci` as root (and add \
     `vfio-pci` to /etc/modules-load.d/ttdrv.conf to load it at boot)"
        .to_string()
}

/// The vfio-pci driver is neither loaded nor built in.
pub fn no_vfio_pci() -> String {
    "the vfio-pci driver is not loaded: run `modprobe vfio-pci` as root (and add `vfio-pci` to \
     /etc/modules-load.d/ttdrv.conf to load it at boot)"
        .to_string()
}

/// sysfs has no device at `addr`.
pub fn no_such_device(addr: &PciAddress) -> String {
    format!(
        "there is no PCI device at {addr}: `ttdrv list` or `lspci -Dnn -d {:04x}:{:04x}` shows where ttdrv \
         devices are",
        ttdrv_contract::PCI_VENDOR,
        ttdrv_contract::PCI_DEVICE
    )
}

/// The device is in no IOMMU group although the IOMMU is on.
pub fn no_group(addr: &PciAddress) -> String {
    format!(
        "PCI device {addr} is in no IOMMU group (it has no /sys/bus/pci/devices/{addr}/iommu_group), so VFIO cannot \
         use it: the IOMMU does not cover the slot it sits in. Check the firmware's VT-d / AMD-Vi settings"
    )
}

/// Formats a byte count for messages: MiB, rounded up.
fn mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// RLIMIT_MEMLOCK is below what the device needs pinned. `limit` is `None` for unlimited.
pub fn memlock_too_low(limit: Option<u64>, needed: u64) -> String {
    let limit = match limit {
        Some(l) => format!("{l} bytes ({} KiB)", l / 1024),
        None => "unlimited".to_string(),
    };
    format!(
        "RLIMIT_MEMLOCK is {limit}, but the IOMMU must pin at least {needed} bytes ({} MiB) of DMA memory for this \
         device. Raise it to at least {} KiB: `ulimit -l {}` in the shell that starts the program, or for good \
         with the memlock lines of {MEMLOCK_CONF} in /etc/security/limits.d/ (for members of the `{ACCESS_GROUP}` \
         group; log in again afterwards), or `LimitMEMLOCK=` in a systemd unit",
        mib(needed),
        needed.div_ceil(1024),
        needed.div_ceil(1024)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    #[test]
    fn not_bound_prints_the_exact_commands() {
        let m = not_bound(&addr("0000:01:00.0"), Some((0x1234, 0x7454)), Some("nvme"));
        assert!(m.starts_with("PCI device 0000:01:00.0 (1234:7454) is bound to the `nvme` driver, not to vfio-pci"));
        assert!(m.contains("  echo 0000:01:00.0 > /sys/bus/pci/devices/0000:01:00.0/driver/unbind\n"));
        assert!(m.contains("  echo vfio-pci > /sys/bus/pci/devices/0000:01:00.0/driver_override\n"));
        assert!(m.contains("  echo 0000:01:00.0 > /sys/bus/pci/drivers/vfio-pci/bind\n"));
        assert!(m.contains("udev/70-ttdrv.rules"));
        let m = not_bound(&addr("0000:01:00.0"), None, None);
        assert!(m.contains("is bound to no driver"));
        assert!(!m.contains("unbind"));
        assert!(m.contains("driver_override"));
    }

    #[test]
    fn group_report_lists_members_and_blockers() {
        let members = vec![
            GroupMember { name: "0000:00:01.0".into(), driver: Some("pcieport".into()), bridge: true },
            GroupMember { name: "0000:01:00.0".into(), driver: Some("vfio-pci".into()), bridge: false },
            GroupMember { name: "0000:01:00.1".into(), driver: Some("snd_hda_intel".into()), bridge: false },
        ];
        let m = group_not_viable(&addr("0000:01:00.0"), 12, &members);
        assert!(m.starts_with("IOMMU group 12 of 0000:01:00.0 is not viable"));
        assert!(m.contains("  0000:00:01.0  pcieport\n"));
        assert!(m.contains("  0000:01:00.0  vfio-pci\n"));
        assert!(m.contains("  0000:01:00.1  snd_hda_intel   <- blocks the group\n"));
        assert!(m.contains("Unbind 0000:01:00.1 from `snd_hda_intel`"));
        assert!(m.contains("echo 0000:01:00.1 > /sys/bus/pci/devices/0000:01:00.1/driver/unbind"));
        assert!(!m.contains("echo 0000:00:01.0"));
        let m = group_not_viable(&addr("0000:01:00.0"), 3, &[]);
        assert!(m.contains("/sys/kernel/iommu_groups/3/devices"));
    }

    #[test]
    fn permission_memlock_and_iommu_messages() {
        let m = no_permission("/dev/vfio/7");
        assert!(m.contains("/dev/vfio/7") && m.contains("udev/70-ttdrv.rules") && m.contains("usermod -aG ttdrv"));
        assert!(m.contains("\n  udevadm trigger --action=add --subsystem-match=vfio\n"), "{m}");
        let m = memlock_too_low(Some(8 << 20), 26 << 20);
        assert!(m.contains("RLIMIT_MEMLOCK is 8388608 bytes (8192 KiB)"));
        assert!(m.contains("at least 27262976 bytes (26 MiB)"));
        assert!(m.contains("ulimit -l 26624") && m.contains("udev/99-ttdrv-memlock.conf"));
        assert!(iommu_off(Some("GenuineIntel"), false).contains("`intel_iommu=on iommu=pt`"));
        let m = iommu_off(Some("AuthenticAMD"), true);
        assert!(m.contains("`amd_iommu=on iommu=pt`") && m.contains("virtual machine") && m.contains("`emu`"));
        let m = iommu_off(None, false);
        assert!(m.contains("intel_iommu=on") && m.contains("amd_iommu=on") && !m.contains("virtual machine"));
        assert!(no_vfio_dev().contains("modprobe vfio-pci"));
        assert!(group_busy("/dev/vfio/3", &addr("0000:01:00.0")).contains("fuser -v /dev/vfio/3"));
        assert!(no_such_device(&addr("0000:05:00.0")).contains("lspci -Dnn -d 1234:7454"));
    }
}
