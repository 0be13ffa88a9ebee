//! The registers a device reports at open are checked against docs/device-interface.md §2 before anything is computed
//! from them: a value out of range is `ErrorKind::Protocol` naming the register and its value, never a panic, an
//! overflow, or an error that blames the caller's parameters (a bank size of 0 used to be reported as a
//! `trace_region_size` that "leaves no ordinary DRAM").

mod common;

use common::*;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use ttdrv::contract::Iova;
use ttdrv::contract::regs::{BarOffset, global};
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::transport::{DmaMemory, Transport, TransportError};
use ttdrv::*;

/// The emulated device, except that some registers read what the test says.
struct Lying {
    inner: Arc<dyn Transport>,
    regs: HashMap<u32, u32>,
}

impl Transport for Lying {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn read32(&self, off: BarOffset) -> u32 {
        self.regs.get(&off.0).copied().unwrap_or_else(|| self.inner.read32(off))
    }
    fn write32(&self, off: BarOffset, val: u32) {
        self.inner.write32(off, val)
    }
    fn iova_ranges(&self) -> Vec<Range<u64>> {
        self.inner.iova_ranges()
    }
    fn dma_map(&self, mem: &DmaMemory, iova: Iova) -> std::result::Result<(), TransportError> {
        self.inner.dma_map(mem, iova)
    }
    fn dma_unmap(&self, iova: Iova, len: u64) -> std::result::Result<(), TransportError> {
        self.inner.dma_unmap(iova, len)
    }
    fn reset(&self) -> std::result::Result<(), TransportError> {
        self.inner.reset()
    }
    fn irq_vectors(&self) -> u32 {
        self.inner.irq_vectors()
    }
    fn wait_irq(&self, vector: u32, timeout: Duration) -> std::result::Result<bool, TransportError> {
        self.inner.wait_irq(vector, timeout)
    }
    fn needs_pinned_memory(&self) -> bool {
        false
    }
}

fn open_lying(regs: &[(BarOffset, u32)], p: &DeviceParams) -> Result<Device> {
    let (_, inner) = emulator(EmuConfig::default());
    let t = Lying { inner, regs: regs.iter().map(|(o, v)| (o.0, *v)).collect() };
    Device::open_transport(Arc::new(t), p)
}

#[test]
fn probe_registers_outside_the_contract_are_refused_naming_them() {
    let p = DeviceParams { hugepages: false, trace_region_size: 1 << 20, ..small_params() };
    for (regs, register, value) in [
        (&[(global::DRAM_BANK_SIZE_LO, 0), (global::DRAM_BANK_SIZE_HI, 0)][..], "DRAM_BANK_SIZE", "0x0"),
        (&[(global::DRAM_BANK_SIZE_LO, 0x1000_0020)], "DRAM_BANK_SIZE", "0x10000020"),
        (&[(global::DRAM_BANK_SIZE_HI, 7)], "DRAM_BANK_SIZE", "0x708000000"),
        (&[(global::NUM_QUEUES, 0)], "NUM_QUEUES", "0x0"),
        (&[(global::NUM_QUEUES, 0x1_0001)], "NUM_QUEUES", "0x10001"),
        (&[(global::DRAM_BANKS, 0)], "DRAM_BANKS", "0x0"),
        (&[(global::DRAM_BANKS, 65)], "DRAM_BANKS", "0x41"),
        (&[(global::DRAM_ALIGN, 48)], "DRAM_ALIGN", "0x30"),
        (&[(global::DRAM_ALIGN, 0)], "DRAM_ALIGN", "0x0"),
        (&[(global::GRID, 0x0008_0000)], "GRID", "0x80000"),
        (&[(global::GRID, 0xFF08_0008)], "GRID", "0xff080008"),
        (&[(global::L1_ALIGN, 0)], "L1_ALIGN", "0x0"),
        (&[(global::L1_SIZE, 0)], "L1_BASE", "0x10000"),
        (&[(global::L1_SIZE, 64 << 20)], "L1_SIZE", "0x4000000"),
        (&[(global::L1_BASE, 0xFFFF_FFF0)], "L1_BASE", "0xfffffff0"),
        (&[(global::L1_BASE, (1 << 20) - 16)], "L1_SIZE - L1_BASE", "0x10"),
        (&[(global::RECORD_ALIGN, 32)], "RECORD_ALIGN", "0x20"),
        (&[(global::DMA_BITS, 0)], "DMA_BITS", "0x0"),
        (&[(global::DMA_BITS, 200)], "DMA_BITS", "0xc8"),
    ] {
        let e = open_lying(regs, &p).expect_err(register);
        let msg = e.to_string();
        assert_eq!(e.kind(), ErrorKind::Protocol, "{register}: {msg}");
        assert!(msg.contains(&format!("register {register} reads {value}")) && msg.contains("§2"), "{register}: {msg}");
        assert!(!msg.contains("trace_region_size"), "the caller's parameter is blamed: {msg}");
    }
    // Banks in range but too small for what the driver keeps in each: the device's fault, not the parameter's.
    let e = open_lying(&[(global::DRAM_BANK_SIZE_LO, 1 << 20)], &p).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("DRAM banks hold 1048576 bytes each"), "{e}");
    // A trace region that is too large is the caller's, and the message says how much fits.
    let big = DeviceParams { trace_region_size: u64::MAX, ..p.clone() };
    let e = open_lying(&[], &big).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("trace_region_size") && e.to_string().contains("reserve at most"), "{e}");
    // And the honest device opens.
    open_lying(&[], &p).unwrap().close().unwrap();
}
