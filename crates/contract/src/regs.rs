//! BAR0 register map (contract §2 and §3) and the queue host-region layout (contract §5).

use super::wire::table_enum;

/// A byte offset into BAR0.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct BarOffset(pub u32);

/// `ID` value of every ttdrv device (contract §2).
pub const ID_VALUE: u32 = 0x5454_4456;
/// Value that, written to `RESET`, resets the device (contract §7.2).
pub const RESET_MAGIC: u32 = 0x5253_4554;

/// Global registers (contract §2).
pub mod global {
    use super::BarOffset;
    /// Device identity, [`super::ID_VALUE`].
    pub const ID: BarOffset = BarOffset(0x000);
    /// Contract version, `major << 16 | minor`.
    pub const VERSION: BarOffset = BarOffset(0x004);
    /// Capability bits, [`super::Caps`].
    pub const CAPS: BarOffset = BarOffset(0x008);
    /// Number of command queues.
    pub const NUM_QUEUES: BarOffset = BarOffset(0x00C);
    /// Number of DRAM banks.
    pub const DRAM_BANKS: BarOffset = BarOffset(0x010);
    /// Bytes per DRAM bank, low half.
    pub const DRAM_BANK_SIZE_LO: BarOffset = BarOffset(0x014);
    /// Bytes per DRAM bank, high half.
    pub const DRAM_BANK_SIZE_HI: BarOffset = BarOffset(0x018);
    /// DRAM address alignment.
    pub const DRAM_ALIGN: BarOffset = BarOffset(0x01C);
    /// Core grid, x in bits 0-7, y in bits 16-23.
    pub const GRID: BarOffset = BarOffset(0x020);
    /// L1 bytes per core.
    pub const L1_SIZE: BarOffset = BarOffset(0x024);
    /// L1 address alignment.
    pub const L1_ALIGN: BarOffset = BarOffset(0x028);
    /// First L1 byte available to software.
    pub const L1_BASE: BarOffset = BarOffset(0x02C);
    /// Record alignment (64).
    pub const RECORD_ALIGN: BarOffset = BarOffset(0x030);
    /// Width of the IOVAs the device can generate.
    pub const DMA_BITS: BarOffset = BarOffset(0x034);
    /// Built-in kernel catalog mask (contract §8.2).
    pub const KERNELS: BarOffset = BarOffset(0x038);
    /// Device status, [`super::Status`].
    pub const STATUS: BarOffset = BarOffset(0x040);
    /// Fault code (contract §7.1).
    pub const FAULT_CODE: BarOffset = BarOffset(0x044);
    /// Faulting address, low half.
    pub const FAULT_ADDR_LO: BarOffset = BarOffset(0x048);
    /// Faulting address, high half.
    pub const FAULT_ADDR_HI: BarOffset = BarOffset(0x04C);
    /// Queue whose record faulted.
    pub const FAULT_QUEUE: BarOffset = BarOffset(0x050);
    /// Tag of the record that faulted.
    pub const FAULT_TAG: BarOffset = BarOffset(0x054);
    /// Opcode of the record that faulted.
    pub const FAULT_OPCODE: BarOffset = BarOffset(0x058);
    /// Write [`super::RESET_MAGIC`] to reset.
    pub const RESET: BarOffset = BarOffset(0x060);
    /// Device clock in ns, low half (latches the high half).
    pub const TIME_LO: BarOffset = BarOffset(0x064);
    /// Device clock in ns, high half.
    pub const TIME_HI: BarOffset = BarOffset(0x068);
    /// Scratch register with no effect.
    pub const SCRATCH: BarOffset = BarOffset(0x080);
}

/// Per-queue registers (contract §3), as offsets inside the queue's block.
pub mod queue {
    /// Queue host region IOVA, low half.
    pub const BASE_LO: u32 = 0x00;
    /// Queue host region IOVA, high half.
    pub const BASE_HI: u32 = 0x04;
    /// Issue ring bytes.
    pub const ISSUE_SIZE: u32 = 0x08;
    /// Completion ring bytes.
    pub const COMPL_SIZE: u32 = 0x0C;
    /// Bit 0 enables the queue.
    pub const CTRL: u32 = 0x10;
    /// Issue doorbell: the host's free-running write pointer.
    pub const ISSUE_WR: u32 = 0x14;
    /// Completion doorbell: the host's free-running read pointer.
    pub const COMPL_RD: u32 = 0x18;
    /// Write 1 to arm the queue's interrupt vector.
    pub const IRQ_ARM: u32 = 0x1C;
    /// Profile slots IOVA, low half.
    pub const PROF_BASE_LO: u32 = 0x20;
    /// Profile slots IOVA, high half.
    pub const PROF_BASE_HI: u32 = 0x24;
    /// Number of profile slots (power of two, 0 = off).
    pub const PROF_SLOTS: u32 = 0x28;
    /// Queue status, [`super::QueueStatus`].
    pub const STATUS: u32 = 0x2C;
    /// Last event id completed by this queue.
    pub const EVENT: u32 = 0x30;
    /// Free-running count of retired records.
    pub const RETIRED: u32 = 0x34;
}

/// First queue register block (contract §3).
pub const QUEUE_BLOCK_BASE: u32 = 0x1000;
/// Size of one queue register block (contract §3).
pub const QUEUE_BLOCK_SIZE: u32 = 0x100;

/// The BAR0 offset of register `reg` (one of [`queue`]) of queue `q`.
#[inline]
pub const fn queue_reg(q: u16, reg: u32) -> BarOffset {
    BarOffset(QUEUE_BLOCK_BASE + q as u32 * QUEUE_BLOCK_SIZE + reg)
}

/// Splits a BAR0 offset inside the queue blocks into (queue, register), if it is one.
#[inline]
pub const fn decode_queue_reg(off: BarOffset) -> Option<(u16, u32)> {
    if off.0 < QUEUE_BLOCK_BASE || off.0 >= QUEUE_BLOCK_BASE + 16 * QUEUE_BLOCK_SIZE {
        return None;
    }
    let rel = off.0 - QUEUE_BLOCK_BASE;
    Some(((rel / QUEUE_BLOCK_SIZE) as u16, rel % QUEUE_BLOCK_SIZE))
}

bitflags::bitflags! {
    /// `CAPS` bits (contract §2.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Caps: u32 {
        /// Timestamps are written back for `PROFILE` records.
        const PROFILING = 1 << 0;
        /// Per-queue interrupt vectors are wired.
        const MSI = 1 << 1;
        /// `EXEC_TRACE` is supported.
        const TRACE = 1 << 2;
        /// The device clock is modelled (emulator, paced mode).
        const MODELLED_TIME = 1 << 3;
    }
}

bitflags::bitflags! {
    /// `STATUS` bits (contract §2).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Status: u32 {
        /// The device accepts work.
        const READY = 1 << 0;
        /// A fault stopped the device; see the `FAULT_*` registers.
        const FAULT = 1 << 1;
        /// A reset is in progress.
        const RESETTING = 1 << 2;
    }
}

bitflags::bitflags! {
    /// `Q_STATUS` bits (contract §3).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct QueueStatus: u32 {
        /// The queue is enabled.
        const ENABLED = 1 << 0;
        /// The queue is stalled in an `EVENT_WAIT`.
        const WAITING_EVENT = 1 << 1;
        /// The queue is executing a record.
        const BUSY = 1 << 2;
    }
}

/// One row of the fault-code table.
#[derive(Debug)]
pub struct FaultCodeInfo {
    /// The contract's name (`BAD_RECORD`).
    pub name: &'static str,
    /// What the code means, for error messages.
    pub describe: &'static str,
}

table_enum! {
    /// Fault codes (contract §7.1): the one table of them. `FAULT_CODE` 0 means no fault and is not in it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub enum FaultCode: u32, from_u32, FaultCodeInfo {
        /// DMA to an IOVA with no mapping.
        Iommu = 1 => { name: "IOMMU", describe: "IOMMU fault: the device accessed an IOVA with no mapping" },
        /// Malformed record.
        BadRecord = 2 => { name: "BAD_RECORD", describe: "malformed record" },
        /// Device address out of range.
        Address = 3 => { name: "ADDRESS", describe: "device address out of range" },
        /// Kernel image invalid or unknown.
        BadKernel = 4 => { name: "BAD_KERNEL", describe: "invalid or unknown kernel image" },
        /// A kernel rejected its arguments.
        KernelArgs = 5 => { name: "KERNEL_ARGS", describe: "a kernel rejected its arguments" },
        /// Bad doorbell value.
        Ring = 6 => { name: "RING", describe: "bad doorbell value" },
    }
}

impl FaultCode {
    /// The contract's name (`BAD_RECORD`).
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// What the code means, for error messages.
    pub const fn describe(self) -> &'static str {
        self.info().describe
    }
}

impl std::fmt::Display for FaultCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Offsets of the device-written words in a queue's host region (contract §5).
pub mod host {
    /// Bytes consumed from the issue ring.
    pub const ISSUE_RD: usize = 0x000;
    /// Bytes written into the completion ring.
    pub const COMPL_WR: usize = 0x040;
    /// Last event id retired.
    pub const EVENT_DONE: usize = 0x080;
    /// Records retired.
    pub const RETIRED: usize = 0x0C0;
    /// Tag of the last record retired.
    pub const LAST_TAG: usize = 0x100;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_regs_round_trip() {
        for q in 0..16u16 {
            for reg in [queue::BASE_LO, queue::ISSUE_WR, queue::RETIRED] {
                assert_eq!(decode_queue_reg(queue_reg(q, reg)), Some((q, reg)));
            }
        }
        assert_eq!(decode_queue_reg(global::STATUS), None);
        assert_eq!(decode_queue_reg(BarOffset(0x2000)), None);
    }

    #[test]
    fn fault_codes_round_trip() {
        for c in FaultCode::ALL {
            assert_eq!(FaultCode::from_u32(c as u32), Some(c));
            assert_eq!(c.to_string(), c.name());
            assert!(!c.describe().is_empty());
        }
        // 0 is "no fault"; every other value outside the table is unknown.
        let known: Vec<u32> = FaultCode::ALL.iter().map(|c| *c as u32).collect();
        for v in (0..=64).chain([u32::MAX, 1 << 31, 0x100 | 1]) {
            assert_eq!(FaultCode::from_u32(v).is_some(), known.contains(&v), "value {v:#x}");
        }
    }
}
