//! The logic of the `ttdrv` command's `list` and `doctor` subcommands, as library functions that write to any
//! [`std::io::Write`] (the binary passes stdout; tests pass a buffer and a fake sysfs tree).

use std::io::{self, Write};
use std::path::Path;
use ttdrv::transport::vfio::sysfs::SYSFS_ROOT;

/// Prints the devices ttdrv can open: the emulated device (always there) and every PCI device with ttdrv's
/// identity on this host, with the selector that opens it and what keeps it from opening.
pub fn list(out: &mut dyn Write) -> io::Result<()> {
    list_at(Path::new(SYSFS_ROOT), out)
}

/// As [`list`], with sysfs at `sysfs_root`.
pub fn list_at(sysfs_root: &Path, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "emu                  emulated ttdrv device, always available (options: `emu:OPTIONS`)")?;
    let devices = ttdrv::transport::list_devices(sysfs_root);
    for d in &devices {
        let state = if d.bound_to_vfio() {
            "ready".to_string()
        } else {
            format!(
                "not usable: bound to {} instead of vfio-pci (`ttdrv doctor` says how to fix it)",
                d.driver.as_deref().unwrap_or("no driver")
            )
        };
        writeln!(out, "vfio:{d}  {state}")?;
    }
    if devices.is_empty() {
        writeln!(
            out,
            "(no PCI device with ttdrv's identity {:04x}:{:04x} on this host)",
            ttdrv::contract::PCI_VENDOR,
            ttdrv::contract::PCI_DEVICE
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttdrv_testkit::fakesys::FakeSys;

    fn listing(sys: &FakeSys) -> String {
        let mut out = Vec::new();
        list_at(sys.path(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lists_the_emulator_and_ttdrv_devices() {
        let sys = FakeSys::new();
        let s = listing(&sys);
        assert!(s.starts_with("emu "));
        assert!(s.contains("no PCI device with ttdrv's identity 1234:7454"));
        sys.add_device("0000:01:00.0", (0x1234, 0x7454), 0x120000, Some("vfio-pci"), Some(5), 0);
        sys.add_device("0000:02:00.0", (0x1234, 0x7454), 0x120000, None, Some(6), -1);
        sys.add_device("0000:03:00.0", (0x8086, 0x1533), 0x020000, Some("igb"), Some(7), 0);
        let s = listing(&sys);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3, "{s}");
        assert_eq!(lines[1], "vfio:0000:01:00.0  1234:7454  driver vfio-pci  iommu_group 5  numa_node 0  ready");
        assert!(
            lines[2].starts_with("vfio:0000:02:00.0  1234:7454  driver (none)  iommu_group 6  numa_node -  not usable")
        );
        assert!(!s.contains("igb"));
    }
}
