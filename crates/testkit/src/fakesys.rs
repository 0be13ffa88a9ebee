//! A fake sysfs tree in a temporary directory, for tests of device discovery and `ttdrv doctor`.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use ttdrv::transport::vfio::PciAddress;

/// A temporary directory removed on drop.
pub struct FakeSys {
    /// The root of the tree.
    pub root: PathBuf,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl FakeSys {
    /// An empty tree.
    pub fn new() -> FakeSys {
        let root = std::env::temp_dir().join(format!(
            "ttdrv-fakesys-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bus/pci/devices")).unwrap();
        std::fs::create_dir_all(root.join("kernel/iommu_groups")).unwrap();
        FakeSys { root }
    }

    /// Root path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Adds a PCI device; `driver` and `group` are optional.
    pub fn add_device(
        &self,
        addr: &str,
        (vendor, device): (u16, u16),
        class: u32,
        driver: Option<&str>,
        group: Option<u32>,
        numa: i32,
    ) {
        let a: PciAddress = addr.parse().unwrap();
        let dev = self.root.join("devices/pci0000:00").join(a.to_string());
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("vendor"), format!("{vendor:#06x}\n")).unwrap();
        std::fs::write(dev.join("device"), format!("{device:#06x}\n")).unwrap();
        std::fs::write(dev.join("class"), format!("{class:#08x}\n")).unwrap();
        std::fs::write(dev.join("numa_node"), format!("{numa}\n")).unwrap();
        symlink(&dev, self.root.join("bus/pci/devices").join(a.to_string())).unwrap();
        if let Some(d) = driver {
            let ddir = self.root.join("bus/pci/drivers").join(d);
            std::fs::create_dir_all(&ddir).unwrap();
            symlink(&ddir, dev.join("driver")).unwrap();
        }
        if let Some(g) = group {
            let gdir = self.root.join("kernel/iommu_groups").join(g.to_string());
            std::fs::create_dir_all(gdir.join("devices")).unwrap();
            symlink(&gdir, dev.join("iommu_group")).unwrap();
            symlink(&dev, gdir.join("devices").join(a.to_string())).unwrap();
        }
    }

    /// Writes a file (creating directories).
    pub fn write(&self, rel: &str, content: &str) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// Creates a directory.
    pub fn mkdir(&self, rel: &str) {
        std::fs::create_dir_all(self.root.join(rel)).unwrap();
    }
}

impl Default for FakeSys {
    fn default() -> Self {
        FakeSys::new()
    }
}

impl Drop for FakeSys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
