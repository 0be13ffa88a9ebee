//! Device time: the clock, the paced timing model and seeded jitter.
//!
//! Unpaced (the default), the device runs as fast as the host machine lets it and timestamps are wall-clock.
//! Paced, every record gets a modelled start and end — PCIe latency and bandwidth (full duplex, shared by all
//! queues), DRAM bandwidth for trace fetches, a fixed launch cost and per-core kernel time, one compute grid shared
//! by all queues — and the engine holds each record's completion back until the wall clock reaches its modelled
//! end. Host code is never slowed; only the device's answers arrive when the model says they would.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The device clock: nanoseconds since the last reset.
pub struct Clock {
    base: Instant,
    epoch_ns: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock { base: Instant::now(), epoch_ns: AtomicU64::new(0) }
    }
}

impl Clock {
    /// Device time now.
    pub fn now(&self) -> u64 {
        (self.base.elapsed().as_nanos() as u64).saturating_sub(self.epoch_ns.load(Ordering::Relaxed))
    }

    /// Restarts the clock at zero.
    pub fn reset(&self) {
        self.epoch_ns.store(self.base.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    /// Waits until device time reaches `t`, or until `stop()` holds; returns false if it stopped early. Sleeps
    /// while far away, in slices of at most [`STOP_SLICE`] so that a reset or shutdown never waits out modelled
    /// time (contract §7.2: `READY` within 100 ms), and spins the last stretch, because a sleeping thread wakes tens
    /// of microseconds late on this kind of machine.
    pub fn wait_until(&self, t: u64, stop: impl Fn() -> bool) -> bool {
        loop {
            if stop() {
                return false;
            }
            let now = self.now();
            if now >= t {
                return true;
            }
            let left = t - now;
            if left > 2_000_000 {
                std::thread::sleep(Duration::from_nanos(left - 1_000_000).min(STOP_SLICE));
            } else if left > 2_000 {
                // Yield rather than spin: the host or another queue may need this core.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// The longest a modelled delay sleeps before it looks for a reset or shutdown again.
pub const STOP_SLICE: Duration = Duration::from_millis(2);

/// Parameters of the paced model. Rates are per direction (PCIe) or per core (compute).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaceParams {
    /// One-way PCIe latency, ns.
    pub pcie_latency_ns: u64,
    /// PCIe bandwidth per direction, bytes per ns (= GB/s).
    pub pcie_gbps: f64,
    /// DRAM bandwidth seen by the trace prefetcher, GB/s.
    pub dram_gbps: f64,
    /// Fixed device cost of launching a program, ns.
    pub launch_ns: u64,
    /// Arithmetic rate of one core, GFLOP/s.
    pub core_gflops: f64,
    /// Data-movement rate of one core, GB/s.
    pub core_gbps: f64,
    /// Fixed cost of an event record or wait, ns.
    pub event_ns: u64,
    /// Bytes of a record the prefetcher fetches ahead of execution; a larger record (a big write) streams in
    /// while its queue executes it.
    pub prefetch_bytes: u64,
}

impl Default for PaceParams {
    fn default() -> Self {
        PaceParams {
            pcie_latency_ns: 1_000,
            pcie_gbps: 12.0,
            dram_gbps: 100.0,
            launch_ns: 2_000,
            core_gflops: 0.5,
            core_gbps: 2.0,
            event_ns: 200,
            prefetch_bytes: 64 * 1024,
        }
    }
}

/// Work one kernel instance did, for the model.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    /// Floating-point operations.
    pub flops: u64,
    /// Bytes read and written.
    pub bytes: u64,
}

impl PaceParams {
    /// Modelled time of one kernel instance.
    pub fn kernel_ns(&self, w: Work) -> u64 {
        let a = w.flops as f64 / self.core_gflops.max(1e-9);
        let b = w.bytes as f64 / self.core_gbps.max(1e-9);
        a.max(b) as u64
    }

    /// Modelled time of moving `bytes` over PCIe (one direction), without latency.
    pub fn pcie_ns(&self, bytes: u64) -> u64 {
        (bytes as f64 / self.pcie_gbps.max(1e-9)) as u64
    }

    /// Modelled time of fetching `bytes` of trace from DRAM.
    pub fn dram_ns(&self, bytes: u64) -> u64 {
        (bytes as f64 / self.dram_gbps.max(1e-9)) as u64
    }
}

/// Resources shared by all queues in the paced model.
#[derive(Default, Debug)]
pub struct SharedLinks {
    /// Host-to-device link free from this device time on.
    pub h2d_free: u64,
    /// Device-to-host link free from this device time on.
    pub d2h_free: u64,
    /// Compute grid free from this device time on.
    pub grid_free: u64,
}

/// The paced model's shared state.
#[derive(Default)]
pub struct Pacer {
    /// Shared link and grid clocks.
    pub links: Mutex<SharedLinks>,
}

impl Pacer {
    /// Reserves `dur` ns of a shared resource no earlier than `at`; returns (start, end).
    pub fn reserve(&self, pick: impl FnOnce(&mut SharedLinks) -> &mut u64, at: u64, dur: u64) -> (u64, u64) {
        let mut l = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let slot = pick(&mut l);
        // Saturating: the model's parameters are the user's (`launch_ns=` may be huge) and work is the record's.
        let start = at.max(*slot);
        *slot = start.saturating_add(dur);
        (start, *slot)
    }

    /// Forgets all reservations (device reset).
    pub fn reset(&self) {
        *self.links.lock().unwrap_or_else(|e| e.into_inner()) = SharedLinks::default();
    }
}

/// Seeded random delays per queue: a missing wait then produces wrong data instead of passing by luck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JitterParams {
    /// Seed; queue `q` uses `seed + q`.
    pub seed: u64,
    /// Largest delay, ns.
    pub max_ns: u64,
    /// Percentage of records delayed.
    pub percent: u32,
    /// Bit mask of the queues that are delayed (all by default).
    pub queues: u32,
}

/// xorshift64* generator: small, seedable, good enough for delays.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Delay to apply before the next record, ns.
    pub fn jitter_ns(&mut self, p: &JitterParams) -> u64 {
        if self.next_u64() % 100 < p.percent as u64 { self.next_u64() % (p.max_ns + 1) } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_serialise_a_resource() {
        let p = Pacer::default();
        assert_eq!(p.reserve(|l| &mut l.h2d_free, 100, 50), (100, 150));
        assert_eq!(p.reserve(|l| &mut l.h2d_free, 120, 50), (150, 200));
        // The other direction is independent (full duplex).
        assert_eq!(p.reserve(|l| &mut l.d2h_free, 120, 50), (120, 170));
    }

    #[test]
    fn jitter_is_reproducible() {
        let j = JitterParams { seed: 7, max_ns: 1000, percent: 50, queues: u32::MAX };
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..20).map(|_| r.jitter_ns(&j)).collect()
        };
        let mut r = Rng::new(7);
        let b: Vec<u64> = (0..20).map(|_| r.jitter_ns(&j)).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&d| d <= 1000));
        assert!(a.iter().any(|&d| d > 0));
    }
}
