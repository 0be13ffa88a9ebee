//! Timing fixtures shared by `ttdrv bench` and the criterion benches (`benches/`): host memory laid out so that
//! `memcpy` is a fair reference, and bounded bursts, so that a figure labelled "host cost" measures the host and not
//! the device's consumption rate.
//!
//! Why bursts: a loop of N dispatches that runs far past what the issue ring holds stops measuring the host as soon
//! as the ring is full — from then on each call waits for the device to retire a record, and the loop reports the
//! emulator's consumption rate under a host-cost label. Every host-cost figure is therefore timed over bursts small
//! enough for the ring, and the device drains the burst, untimed, before the next one starts.

use std::time::{Duration, Instant};

/// Calls per burst of a host-cost measurement: a dispatch record of the benchmarks is a few hundred bytes, so a burst
/// fills well under 1 MiB of the 32 MiB issue ring (`DeviceParams::default`) and no call waits for ring space.
pub const BURST: u64 = 1000;

/// Times `iters` calls of `call` in bursts of at most `burst`, and returns the time spent inside the calls only.
///
/// What each call returns (an op's output buffer, for instance) is kept until its burst ends and dropped untimed,
/// then `drain` runs, untimed, to let the device finish the burst (`Device::finish`), so no burst starts with records
/// of the previous one in flight. Keep `burst` x the record size below the issue ring's size.
pub fn bursts<T>(iters: u64, burst: u64, mut call: impl FnMut() -> T, mut drain: impl FnMut()) -> Duration {
    let burst = burst.max(1);
    let mut kept: Vec<T> = Vec::with_capacity(burst.min(iters) as usize);
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let k = left.min(burst);
        let t0 = Instant::now();
        for _ in 0..k {
            kept.push(call());
        }
        total += t0.elapsed();
        kept.clear();
        drain();
        left -= k;
    }
    total
}

/// `n` pre-faulted bytes starting `offset` bytes past a 4 KiB boundary.
///
/// Alignment matters for the `memcpy` reference: on the AMD Zen 3 VMs this project runs on, glibc's `rep movsb` copy
/// runs at ~1.5 GB/s instead of ~45 GB/s for 64 KiB when the destination is 16 bytes past the source modulo 4 KiB,
/// which is what two `Vec`s from malloc give. Sources are page-aligned and destinations 64 bytes past a page, like a
/// record payload in the ring.
pub struct Aligned {
    v: Vec<u8>,
    at: usize,
    n: usize,
}

impl Aligned {
    /// `n` bytes (all 1, so every page is touched) at `offset` past a page boundary; `offset` below 4096.
    pub fn new(n: usize, offset: usize) -> Aligned {
        let offset = offset % 4096;
        let v = vec![1u8; n + 8192];
        let at = (4096 - v.as_ptr() as usize % 4096) % 4096 + offset;
        Aligned { v, at, n }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.v[self.at..self.at + self.n]
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.at..self.at + self.n]
    }
}

/// A dense byte pattern (not zeros, so nothing can shortcut a copy of it), page-aligned.
pub fn pattern(n: usize) -> Aligned {
    let mut a = Aligned::new(n, 0);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for c in a.bytes_mut().chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = x.to_le_bytes();
        c.copy_from_slice(&w[..c.len()]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_run_every_call_and_drain_between_bursts() {
        let calls = std::cell::Cell::new(0u64);
        let in_flight = std::cell::Cell::new(0u64);
        let peak = std::cell::Cell::new(0u64);
        let mut drains = 0;
        let t = bursts(
            2500,
            1000,
            || {
                calls.set(calls.get() + 1);
                in_flight.set(in_flight.get() + 1);
                peak.set(peak.get().max(in_flight.get()));
            },
            || {
                drains += 1;
                in_flight.set(0);
            },
        );
        assert_eq!(calls.get(), 2500);
        assert_eq!(drains, 3, "2500 calls in bursts of 1000 drain three times");
        assert_eq!(peak.get(), 1000, "never more than a burst in flight");
        assert!(t > Duration::ZERO);
    }

    #[test]
    fn outputs_are_dropped_outside_the_timed_calls() {
        use std::rc::Rc;
        let live = Rc::new(());
        let most = std::cell::Cell::new(0usize);
        bursts(
            10,
            4,
            || {
                most.set(most.get().max(Rc::strong_count(&live)));
                live.clone()
            },
            || assert_eq!(Rc::strong_count(&live), 1, "a burst's outputs are dropped before the drain"),
        );
        assert_eq!(most.get(), 4, "outputs live until their burst ends");
    }

    #[test]
    fn aligned_memory_is_where_it_says() {
        let a = Aligned::new(10_000, 64);
        assert_eq!(a.bytes().as_ptr() as usize % 4096, 64);
        assert_eq!(a.bytes().len(), 10_000);
        let p = pattern(4099);
        assert_eq!(p.bytes().as_ptr() as usize % 4096, 0);
        assert!(p.bytes().iter().any(|&b| b != p.bytes()[0]), "a pattern, not a constant");
    }
}
