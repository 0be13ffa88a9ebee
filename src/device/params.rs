//! Parameters of `Device::open` and the device's reported properties.

use std::time::Duration;
use ttdrv_contract::kernel::Geometry;
use ttdrv_contract::regs::Caps;

/// How to open a device. Defaults match tt-metal's: one command queue, no trace region, no L1 small region.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceParams {
    /// Command queues to create: 1 up to the number the device reports.
    pub num_command_queues: u16,
    /// Bytes of device DRAM (device total, over all banks) reserved for trace buffers; 0 for none.
    pub trace_region_size: u64,
    /// Bytes of L1 per core reserved for `L1_SMALL` buffers.
    pub l1_small_size: u32,
    /// Allocate trace buffers from ordinary DRAM (top-down) instead of a reserved region.
    pub trace_buffers_on_demand: bool,
    /// Issue ring bytes per queue (power of two).
    pub issue_ring_size: u32,
    /// Completion ring bytes per queue (power of two).
    pub completion_ring_size: u32,
    /// Use hugepages for DMA memory when the host has them.
    pub hugepages: bool,
    /// How long a wait may take before it fails with the queue's state.
    pub timeout: Duration,
    /// Record host and device spans (see `ttdrv::profile`).
    pub profiling: bool,
}

impl Default for DeviceParams {
    fn default() -> Self {
        DeviceParams {
            num_command_queues: 1,
            trace_region_size: 0,
            l1_small_size: 0,
            trace_buffers_on_demand: false,
            issue_ring_size: 32 << 20,
            completion_ring_size: 8 << 20,
            hugepages: true,
            timeout: Duration::from_secs(30),
            profiling: false,
        }
    }
}

/// Bytes of a 2 MiB hugepage, the unit DMA memory is allocated in when the host has hugepages.
pub const HUGEPAGE_BYTES: u64 = 2 << 20;

impl DeviceParams {
    /// Bytes of one command queue's host region (docs/device-interface.md §5): the control page, both rings and,
    /// when profiling, the timestamp slots.
    pub fn queue_region_bytes(&self) -> u64 {
        let profile = if self.profiling {
            crate::profile::PROFILE_SLOTS as u64 * ttdrv_contract::PROFILE_SLOT_BYTES as u64
        } else {
            0
        };
        ttdrv_contract::RING_OFFSET as u64 + self.issue_ring_size as u64 + self.completion_ring_size as u64 + profile
    }

    /// 2 MiB hugepages a device opened with these parameters takes for its command queues (each queue's region is
    /// rounded up to whole pages): what to reserve in `/proc/sys/vm/nr_hugepages` per device. The hugepage warning,
    /// `ttdrv doctor` and docs/host-setup.md all quote this number.
    pub fn hugepages_needed(&self) -> u64 {
        self.num_command_queues.max(1) as u64 * self.queue_region_bytes().div_ceil(HUGEPAGE_BYTES)
    }

    /// Bytes of host memory such a device pins (locks) for its command queues, counted against `RLIMIT_MEMLOCK`
    /// when the device sits behind a real IOMMU.
    pub fn pinned_bytes(&self) -> u64 {
        self.hugepages_needed() * HUGEPAGE_BYTES
    }
}

/// Host memory besides the command queues that the memlock limit of one process allows for per device: DMA memory a
/// caller registers or the driver maps for transfers, and the rounding of each mapping to whole pages.
pub const REGISTERED_HOST_ALLOWANCE: u64 = 256 << 20;

/// The most host memory one process pins for one device opened with the default ring sizes: every command queue a
/// device may have (`MAX_QUEUES` of docs/device-interface.md §2), each with profiling on, plus
/// [`REGISTERED_HOST_ALLOWANCE`]. This is the number the memlock limit of `udev/99-ttdrv-memlock.conf` is sized to
/// (a process that drives several devices needs it once per device); `ttdrv doctor` computes and checks it.
pub fn memlock_budget() -> u64 {
    let every_queue = DeviceParams {
        num_command_queues: ttdrv_contract::MAX_QUEUES as u16,
        profiling: true,
        ..DeviceParams::default()
    };
    every_queue.pinned_bytes() + REGISTERED_HOST_ALLOWANCE
}

/// What the device reports about itself (contract §2), read once at open.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// Transport name: `emu#0`, `vfio:0000:01:00.0`.
    pub name: String,
    /// Contract version, major.
    pub version_major: u16,
    /// Contract version, minor.
    pub version_minor: u16,
    /// Capabilities.
    pub caps: Caps,
    /// Command queues the device has.
    pub num_queues: u16,
    /// DRAM banks.
    pub dram_banks: u32,
    /// Bytes per bank.
    pub bank_size: u64,
    /// DRAM alignment.
    pub dram_align: u32,
    /// Grid width.
    pub grid_x: u32,
    /// Grid height.
    pub grid_y: u32,
    /// L1 bytes per core.
    pub l1_size: u32,
    /// L1 alignment.
    pub l1_align: u32,
    /// First software L1 byte.
    pub l1_base: u32,
    /// DMA address width.
    pub dma_bits: u32,
    /// Built-in kernel mask.
    pub kernels: u32,
}

impl DeviceInfo {
    /// The addressing geometry.
    pub fn geometry(&self) -> Geometry {
        Geometry {
            dram_banks: self.dram_banks,
            grid_x: self.grid_x,
            grid_y: self.grid_y,
            bank_size: self.bank_size,
            l1_size: self.l1_size as u64,
        }
    }

    /// Total DRAM bytes.
    pub fn dram_size(&self) -> u64 {
        self.bank_size * self.dram_banks as u64
    }

    /// Worker cores.
    pub fn cores(&self) -> u32 {
        self.grid_x * self.grid_y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_memory_needs_follow_the_parameters() {
        let p = DeviceParams::default();
        // 4 KiB control page + 32 MiB issue ring + 8 MiB completion ring: 21 pages of 2 MiB.
        assert_eq!(p.hugepages_needed(), 21);
        assert_eq!(p.pinned_bytes(), 42 << 20);
        let two = DeviceParams { num_command_queues: 2, ..p.clone() };
        assert_eq!(two.hugepages_needed(), 42);
        let small = DeviceParams { issue_ring_size: 1 << 20, completion_ring_size: 1 << 20, ..p };
        assert_eq!(small.hugepages_needed(), 2);
    }

    #[test]
    fn the_memlock_budget_is_every_queue_plus_the_allowance() {
        // 16 queues of 21 hugepages (the profile slots fit in the last page), plus 256 MiB.
        assert_eq!(memlock_budget(), 16 * (42 << 20) + (256 << 20));
        assert_eq!(memlock_budget() / 1024, 950_272);
    }
}
