//! Configuration of the emulated device, parsed from the `emu:` device selector.

use super::timing::{JitterParams, PaceParams};
use ttdrv_contract::kernel::BuiltinKernel;

/// Everything that distinguishes one emulated device from another.
#[derive(Clone, Debug, PartialEq)]
pub struct EmuConfig {
    /// Command queues (contract §2 `NUM_QUEUES`).
    pub queues: u16,
    /// DRAM banks.
    pub dram_banks: u32,
    /// Bytes per DRAM bank.
    pub bank_size: u64,
    /// Grid width.
    pub grid_x: u32,
    /// Grid height.
    pub grid_y: u32,
    /// L1 bytes per core.
    pub l1_size: u32,
    /// First software L1 byte.
    pub l1_base: u32,
    /// DRAM alignment.
    pub dram_align: u32,
    /// L1 alignment.
    pub l1_align: u32,
    /// DMA address width.
    pub dma_bits: u32,
    /// Built-in kernel mask.
    pub kernels: u32,
    /// Interrupt vectors wired.
    pub msi: bool,
    /// Paced timing model, if on.
    pub pace: Option<PaceParams>,
    /// Seeded jitter, if on.
    pub jitter: Option<JitterParams>,
    /// Faults injected on purpose, to test a driver against a misbehaving device.
    pub inject: Inject,
}

/// A field of a completion entry (docs/device-interface.md §5.2) the device can be told to corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryField {
    /// `kind`.
    Kind,
    /// `length`.
    Length,
    /// `tag`.
    Tag,
    /// `data_len`.
    DataLen,
}

/// A device-written word of a queue's host region (docs/device-interface.md §5) the device can be told to corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostWord {
    /// `ISSUE_RD`.
    IssueRd,
    /// `COMPL_WR`.
    ComplWr,
    /// `EVENT_DONE`.
    EventDone,
    /// `RETIRED`.
    Retired,
}

/// Faults the device injects on purpose. Counts run from the device's creation over all its queues, not from
/// the last reset, so each fault happens once and a reset afterwards brings back a healthy device.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inject {
    /// `hang=Q`, `hang_after=N`: queue `Q` stops consuming records once it has executed `N`, until the next reset.
    pub hang: Option<(u16, u64)>,
    /// `iommu_fault=N`: the `N`th DMA (a record fetched from an issue ring, or a completion entry written) faults
    /// with `IOMMU` at the IOVA it accesses, as if the mapping were gone.
    pub iommu_fault_at: Option<u64>,
    /// `bad_entry=FIELD@N`: the `N`th completion entry written has `FIELD` replaced (by `bad_value`, or a value
    /// chosen to break the contract).
    pub bad_entry: Option<(EntryField, u64)>,
    /// `bad_word=WORD@N`: from the `N`th record retired until the next reset, its queue's `WORD` is written as
    /// garbage (`bad_value`, or a value chosen to break the contract) instead of the true value.
    pub bad_word: Option<(HostWord, u64)>,
    /// `bad_value=V`: the garbage `bad_entry` and `bad_word` write.
    pub bad_value: Option<u32>,
    /// `surprise_reset=N`: the device resets itself (as a function-level reset by someone else would) right after
    /// the `N`th record retires.
    pub surprise_reset_at: Option<u64>,
    /// `slow_us=N`: every record takes `N` µs more before it retires.
    pub slow_ns: u64,
}

impl Default for EmuConfig {
    fn default() -> Self {
        EmuConfig {
            queues: 2,
            dram_banks: 8,
            bank_size: 128 << 20,
            grid_x: 8,
            grid_y: 8,
            l1_size: 1 << 20,
            l1_base: 64 << 10,
            dram_align: 64,
            l1_align: 16,
            dma_bits: 32,
            kernels: BuiltinKernel::MASK,
            msi: true,
            pace: None,
            jitter: None,
            inject: Inject::default(),
        }
    }
}

/// The options `emu:` accepts, for `--help` and error messages.
pub const OPTIONS_HELP: &str = "\
emu options (comma separated, e.g. emu:queues=4,dram=2G,paced,jitter=7):
  queues=N            command queues (1-16, default 2)
  banks=N             DRAM banks (default 8)
  dram=SIZE           total DRAM, split evenly over the banks (default 1G)
  grid=XxY            worker core grid (default 8x8)
  l1=SIZE             L1 per core (default 1M)
  dma_bits=N          device DMA address width (default 32)
  kernels=a+b+...     built-in kernels present (copy, eltwise_binary, eltwise_unary, matmul, fill, layernorm,
                      softmax, bmm, linear, embedding, mean_pool; default all)
  no_msi              wire no interrupt vectors (the driver polls)
  paced               model device time (PCIe, launch and kernel costs) and tie it to wall time
  pcie_latency_ns=N   paced: one-way PCIe latency (default 1000)
  pcie_gbps=X         paced: PCIe bandwidth per direction, GB/s (default 12)
  dram_gbps=X         paced: DRAM bandwidth for trace fetches, GB/s (default 100)
  launch_ns=N         paced: device cost of a program launch (default 2000)
  core_gflops=X       paced: arithmetic rate per core (default 0.5)
  core_gbps=X         paced: data movement per core, GB/s (default 2)
  prefetch=SIZE       paced: records up to SIZE are fetched ahead of execution (default 64K)
  jitter[=SEED]       random per-queue delays before records (seed default 1)
  jitter_us=N         jitter: largest delay in microseconds (default 200)
  jitter_pct=N        jitter: percentage of records delayed (default 30)
  jitter_queues=a+b   jitter: delay only these queues (default all), to provoke one specific race
fault injection (each fault happens once; counts run over all queues from the device's creation, so a reset
afterwards brings back a healthy device):
  hang=Q              queue Q stops consuming records (a hung queue) until the next reset
  hang_after=N        hang: after queue Q has executed N records (default 0)
  iommu_fault=N       the Nth DMA (record fetch or completion entry write) faults with IOMMU
  bad_entry=FIELD@N   the Nth completion entry has FIELD (kind, length, tag, data_len) corrupted; e.g. data_len@1
  bad_word=WORD@N     from the Nth record retired until the next reset, its queue's WORD (issue_rd, compl_wr,
                      event_done, retired) is written as garbage instead; e.g. issue_rd@3
  bad_value=V         the garbage bad_entry and bad_word write (default: a value chosen to break the contract)
  surprise_reset=N    the device resets itself right after the Nth record retires
  slow_us=N           every record takes N microseconds more before it retires (a device slow enough to time out;
                      or paced with a tiny pcie_gbps)";

/// Why `item` (`key=value`) is not a valid value for option `key`: what the option takes, with an example.
fn bad_value(item: &str, key: &str) -> String {
    let takes = match key {
        "queues" => "a number of command queues, 1 to 16; e.g. queues=4",
        "banks" => "a number of DRAM banks, 1 to 64; e.g. banks=8",
        "dram" | "l1" | "prefetch" => "a size: bytes, or a number with K, M or G; e.g. dram=2G, l1=1M, prefetch=64K",
        "grid" => "columns x rows; e.g. grid=8x8",
        "dma_bits" => "a number of address bits, 20 to 64; e.g. dma_bits=32",
        "kernels" => {
            "built-in kernel names joined by +, from copy, eltwise_binary, eltwise_unary, matmul, fill, \
                      layernorm, softmax, bmm, linear, embedding and mean_pool; e.g. kernels=copy+fill"
        }
        "pcie_gbps" | "dram_gbps" | "core_gflops" | "core_gbps" => "a number above 0; e.g. pcie_gbps=12",
        "jitter_queues" => "queue numbers below 16 joined by +; e.g. jitter_queues=0+2",
        "hang" => "a queue number below 16; e.g. hang=1",
        "iommu_fault" | "surprise_reset" => "a count from 1; e.g. iommu_fault=3",
        "bad_entry" => "a field (kind, length, tag, data_len), @ and a count from 1; e.g. bad_entry=data_len@1",
        "bad_word" => {
            "a word (issue_rd, compl_wr, event_done, retired), @ and a count from 1; e.g. bad_word=issue_rd@3"
        }
        "bad_value" => "a 32-bit value, decimal or 0x hex; e.g. bad_value=0xdeadbeef",
        _ => "a whole number; e.g. launch_ns=2000",
    };
    format!("emu option `{item}`: {key} takes {takes}")
}

/// Parses `1G`, `512M`, `64K` or a plain byte count.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1u64 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

impl EmuConfig {
    /// Parses the part of a selector after `emu:` (may be empty).
    pub fn parse(opts: &str) -> Result<EmuConfig, String> {
        let mut c = EmuConfig::default();
        let mut dram_total: Option<u64> = None;
        let mut pace = PaceParams::default();
        let mut paced = false;
        let mut jitter = JitterParams { seed: 1, max_ns: 200_000, percent: 30, queues: u32::MAX };
        let mut jittered = false;
        let (mut hang_queue, mut hang_after) = (None, None);
        for item in opts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, val) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item, None),
            };
            // What a value of this option looks like, for the message when it is not one.
            let bad = || bad_value(item, key);
            let num = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
            let float = |v: Option<&str>| v.and_then(|v| v.parse::<f64>().ok()).filter(|f| *f > 0.0).ok_or_else(bad);
            let size = |v: Option<&str>| v.and_then(parse_size).ok_or_else(bad);
            let count = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok()).filter(|n| *n > 0).ok_or_else(bad);
            match key {
                "queues" => c.queues = u16::try_from(num(val)?).map_err(|_| bad())?,
                "banks" => c.dram_banks = u32::try_from(num(val)?).map_err(|_| bad())?,
                "dram" => dram_total = Some(size(val)?),
                "grid" => {
                    let (x, y) = val.and_then(|v| v.split_once(['x', 'X'])).ok_or_else(bad)?;
                    c.grid_x = x.parse().map_err(|_| bad())?;
                    c.grid_y = y.parse().map_err(|_| bad())?;
                }
                "l1" => c.l1_size = u32::try_from(size(val)?).map_err(|_| bad())?,
                "dma_bits" => c.dma_bits = u32::try_from(num(val)?).map_err(|_| bad())?,
                "kernels" => {
                    let mut mask = 0;
                    for name in val.ok_or_else(bad)?.split('+').filter(|s| !s.is_empty()) {
                        let k = BuiltinKernel::from_name(&format!("ttdrv.{name}")).ok_or_else(bad)?;
                        mask |= k.bit();
                    }
                    c.kernels = mask;
                }
                "no_msi" => c.msi = false,
                "paced" => paced = true,
                "pcie_latency_ns" => pace.pcie_latency_ns = num(val)?,
                "pcie_gbps" => pace.pcie_gbps = float(val)?,
                "dram_gbps" => pace.dram_gbps = float(val)?,
                "launch_ns" => pace.launch_ns = num(val)?,
                "core_gflops" => pace.core_gflops = float(val)?,
                "core_gbps" => pace.core_gbps = float(val)?,
                "prefetch" => pace.prefetch_bytes = size(val)?,
                "jitter" => {
                    jittered = true;
                    if val.is_some() {
                        jitter.seed = num(val)?;
                    }
                }
                "jitter_us" => jitter.max_ns = num(val)?.saturating_mul(1000),
                "jitter_pct" => jitter.percent = u32::try_from(num(val)?.min(100)).map_err(|_| bad())?,
                "jitter_queues" => {
                    let mut mask = 0u32;
                    for q in val.ok_or_else(bad)?.split('+').filter(|s| !s.is_empty()) {
                        let q: u32 = q.parse().map_err(|_| bad())?;
                        if q >= ttdrv_contract::MAX_QUEUES as u32 {
                            return Err(bad());
                        }
                        mask |= 1 << q;
                    }
                    jitter.queues = mask;
                }
                "hang" => {
                    let q = u16::try_from(num(val)?).ok().filter(|q| (*q as usize) < ttdrv_contract::MAX_QUEUES);
                    hang_queue = Some(q.ok_or_else(bad)?);
                }
                "hang_after" => hang_after = Some(num(val)?),
                "iommu_fault" => c.inject.iommu_fault_at = Some(count(val)?),
                "surprise_reset" => c.inject.surprise_reset_at = Some(count(val)?),
                "bad_entry" => {
                    let (f, n) = val.and_then(|v| v.split_once('@')).ok_or_else(bad)?;
                    let field = match f.trim() {
                        "kind" => EntryField::Kind,
                        "length" => EntryField::Length,
                        "tag" => EntryField::Tag,
                        "data_len" => EntryField::DataLen,
                        _ => return Err(bad()),
                    };
                    let n = n.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad)?;
                    c.inject.bad_entry = Some((field, n));
                }
                "bad_word" => {
                    let (w, n) = val.and_then(|v| v.split_once('@')).ok_or_else(bad)?;
                    let word = match w.trim() {
                        "issue_rd" => HostWord::IssueRd,
                        "compl_wr" => HostWord::ComplWr,
                        "event_done" => HostWord::EventDone,
                        "retired" => HostWord::Retired,
                        _ => return Err(bad()),
                    };
                    let n = n.trim().parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(bad)?;
                    c.inject.bad_word = Some((word, n));
                }
                "bad_value" => {
                    let v = val.ok_or_else(bad)?;
                    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => v.parse::<u32>().ok(),
                    };
                    c.inject.bad_value = Some(parsed.ok_or_else(bad)?);
                }
                "slow_us" => c.inject.slow_ns = num(val)?.saturating_mul(1000),
                _ => return Err(format!("unknown emu option `{key}` (in `{item}`)\n{OPTIONS_HELP}")),
            }
        }
        c.inject.hang = match (hang_queue, hang_after) {
            (Some(q), after) => Some((q, after.unwrap_or(0))),
            (None, Some(_)) => {
                return Err(
                    "emu option hang_after needs hang=Q (the queue that hangs); e.g. hang=1,hang_after=5".into()
                );
            }
            (None, None) => None,
        };
        if let Some(total) = dram_total {
            c.bank_size = total / c.dram_banks.max(1) as u64;
        }
        c.pace = paced.then_some(pace);
        c.jitter = jittered.then_some(jitter);
        c.validate()?;
        Ok(c)
    }

    /// Checks the configuration describes a device the contract allows. Each message names the option, the range
    /// it takes and an example.
    pub fn validate(&self) -> Result<(), String> {
        if self.queues == 0 || self.queues as usize > ttdrv_contract::MAX_QUEUES {
            return Err(format!(
                "emu option queues={}: the emulated device has 1 to {} command queues; e.g. queues=4",
                self.queues,
                ttdrv_contract::MAX_QUEUES
            ));
        }
        if self.dram_banks == 0 || self.dram_banks > 64 {
            return Err(format!(
                "emu option banks={}: the emulated device has 1 to 64 DRAM banks; e.g. banks=8",
                self.dram_banks
            ));
        }
        if self.bank_size < 1 << 20 || self.bank_size > 1 << 32 || self.bank_size % self.dram_align as u64 != 0 {
            return Err(format!(
                "emu DRAM of {} bytes per bank ({} banks): each bank must hold 1M to 4G, a multiple of {} bytes; set \
                 dram= to the total, e.g. dram=1G with {} banks",
                self.bank_size, self.dram_banks, self.dram_align, self.dram_banks
            ));
        }
        if self.grid_x == 0 || self.grid_y == 0 || self.grid_x > 16 || self.grid_y > 16 {
            return Err(format!(
                "emu option grid={}x{}: each side of the core grid is 1 to 16; e.g. grid=8x8",
                self.grid_x, self.grid_y
            ));
        }
        if self.l1_size < 2 * self.l1_base || self.l1_size > 16 << 20 {
            return Err(format!(
                "emu option l1={}: L1 per core is {} to 16M bytes; e.g. l1=1M",
                self.l1_size,
                2 * self.l1_base
            ));
        }
        // docs/device-interface.md §2: DMA_BITS is 32 to 64.
        if !(32..=64).contains(&self.dma_bits) {
            return Err(format!(
                "emu option dma_bits={}: the DMA address width is 32 to 64 bits; e.g. dma_bits=32",
                self.dma_bits
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let c = EmuConfig::parse("queues=4, dram=2G,banks=4,grid=4x2,paced,pcie_gbps=6,jitter=9,jitter_us=50").unwrap();
        assert_eq!(c.queues, 4);
        assert_eq!(c.bank_size, 512 << 20);
        assert_eq!((c.grid_x, c.grid_y), (4, 2));
        assert_eq!(c.pace.unwrap().pcie_gbps, 6.0);
        assert_eq!(c.jitter.unwrap(), JitterParams { seed: 9, max_ns: 50_000, percent: 30, queues: u32::MAX });
        assert_eq!(EmuConfig::parse("jitter,jitter_queues=1").unwrap().jitter.unwrap().queues, 0b10);
        assert_eq!(EmuConfig::parse("").unwrap(), EmuConfig::default());
        assert_eq!(EmuConfig::parse("kernels=copy+fill").unwrap().kernels, 0b10001);
        let i = EmuConfig::parse("hang=1,hang_after=5,iommu_fault=3,bad_entry=data_len@2,bad_word=issue_rd@7").unwrap();
        assert_eq!(i.inject.hang, Some((1, 5)));
        assert_eq!(i.inject.iommu_fault_at, Some(3));
        assert_eq!(i.inject.bad_entry, Some((EntryField::DataLen, 2)));
        assert_eq!(i.inject.bad_word, Some((HostWord::IssueRd, 7)));
        let i = EmuConfig::parse("surprise_reset=4,slow_us=250,bad_value=0x41,bad_word=event_done@1").unwrap();
        assert_eq!((i.inject.surprise_reset_at, i.inject.slow_ns, i.inject.bad_value), (Some(4), 250_000, Some(0x41)));
        assert_eq!(EmuConfig::parse("hang=0").unwrap().inject.hang, Some((0, 0)));
    }

    #[test]
    fn rejects_bad_options_saying_what_they_take() {
        // Each message names the option, says what it takes in words (no Rust range syntax) and shows an example.
        for (bad, needles) in [
            ("queues=0", &["queues=0", "1 to 16 command queues", "e.g. queues=4"][..]),
            ("queues=99", &["queues=99", "1 to 16 command queues", "e.g. queues=4"]),
            ("queues=70000", &["queues=70000", "1 to 16", "e.g. queues=4"]),
            ("grid=3", &["grid=3", "columns x rows", "e.g. grid=8x8"]),
            ("grid=17x2", &["grid=17x2", "1 to 16", "e.g. grid=8x8"]),
            ("dram=lots", &["dram=lots", "a size", "K, M or G", "e.g. dram=2G"]),
            ("dram=1K", &["128 bytes per bank (8 banks)", "1M to 4G", "e.g. dram=1G"]),
            ("kernels=conv", &["kernels=conv", "copy, eltwise_binary", "e.g. kernels=copy+fill"]),
            ("pcie_gbps=-1", &["pcie_gbps=-1", "above 0"]),
            ("dma_bits=8", &["dma_bits=8", "32 to 64 bits"]),
            ("hang=16", &["hang=16", "a queue number below 16", "e.g. hang=1"]),
            ("hang_after=3", &["hang_after needs hang=Q", "e.g. hang=1,hang_after=5"]),
            ("iommu_fault=0", &["iommu_fault=0", "a count from 1"]),
            ("bad_entry=size@1", &["bad_entry=size@1", "kind, length, tag, data_len", "e.g. bad_entry=data_len@1"]),
            ("bad_word=issue_rd", &["bad_word=issue_rd", "@ and a count from 1"]),
            ("bad_value=0xfffffffff", &["bad_value=0xfffffffff", "a 32-bit value"]),
        ] {
            let e = EmuConfig::parse(bad).unwrap_err();
            for n in needles {
                assert!(e.contains(n), "{bad}: {e:?} does not mention {n:?}");
            }
            assert!(!e.contains("..="), "{bad}: Rust range syntax in {e:?}");
        }
        // An unknown option lists them all.
        let e = EmuConfig::parse("bogus").unwrap_err();
        assert!(e.starts_with("unknown emu option `bogus`") && e.contains("emu options"), "{e}");
    }
}
