//! This machine's floors, measured at the start of every run without ttdrv: what the round-trip targets of issue 14
//! are stated against.
//!
//! - A 64-byte ping-pong between two threads through shared memory: thread A writes a cache line and spins until
//!   thread B has written one back. Its round trip is the fastest a host thread can hand work to another thread (the
//!   emulated device's engine) and see the answer; a 4 KiB write + finish is held to three of them.
//! - The wake-up of a parked thread: from the moment a thread decides to wake a parked one (`Thread::unpark`, a futex
//!   wake) until the woken thread runs. A cold event round trip — the device's engine has parked — is held to two.
//!   The waker's own cost (the `unpark` call) is reported too: it is what a doorbell to a parked engine costs the host.
//!
//! Hand-written rather than from a crate: each is a few lines of `std` atomics and `park`, and what matters is
//! exactly what is timed.

use super::{Api, Bench, COLD_IDLE, Kind, Row, Stat, State, Unit};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The floors of this run.
pub struct Floors {
    /// Round trip of a 64-byte ping-pong, ns.
    pub pingpong_ns: Stat,
    /// One-way wake-up of a parked thread, ns.
    pub wake_ns: Stat,
    /// The waker's cost of that wake-up (the `unpark` call), ns.
    pub unpark_ns: Stat,
}

/// Measures the floors (about half a second; less with `quick`).
pub fn measure(quick: bool) -> Result<Floors, String> {
    let pingpong_ns = pingpong(if quick { 7 } else { 21 }, 2000)?;
    let (wake_ns, unpark_ns) = wake(if quick { 40 } else { 150 })?;
    Ok(Floors { pingpong_ns, wake_ns, unpark_ns })
}

/// The floors as rows.
pub fn rows(f: &Floors) -> Vec<Row> {
    // The floors belong to no group; they head the report under the first group's header.
    vec![
        Row::new(
            "floor.pingpong",
            Bench::Dispatch,
            "64-B ping-pong between 2 threads (spin), round trip",
            Api::Machine,
            State::Hot,
            Kind::Floor,
        )
        .stat(f.pingpong_ns, Unit::Ns),
        Row::new(
            "floor.wake",
            Bench::Dispatch,
            "wake-up of a parked thread (park/unpark), one way",
            Api::Machine,
            State::Cold,
            Kind::Floor,
        )
        .stat(f.wake_ns.scaled(1e3), Unit::Us),
        Row::new(
            "floor.unpark",
            Bench::Dispatch,
            "unpark of a parked thread, waker's cost",
            Api::Machine,
            State::Cold,
            Kind::Floor,
        )
        .stat(f.unpark_ns.scaled(1e3), Unit::Us),
    ]
}

/// One cache line: seven payload words and the sequence number, written last.
#[repr(C, align(64))]
#[derive(Default)]
struct Line([AtomicU64; 8]);

impl Line {
    /// Writes a 64-byte message whose sequence number is `seq`; the payload is visible before the sequence.
    fn send(&self, seq: u64) {
        for (i, w) in self.0[..7].iter().enumerate() {
            w.store(seq.wrapping_mul(i as u64 + 1), Ordering::Relaxed);
        }
        self.0[7].store(seq, Ordering::Release);
    }

    /// Spins until the sequence number is at least `seq`, then reads the payload; returns its sum (so it is read).
    fn receive(&self, seq: u64) -> u64 {
        let t0 = Instant::now();
        let mut spins = 0u32;
        while self.0[7].load(Ordering::Acquire) < seq {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            // Pure spinning is the floor; but when the partner is not running (both threads on one core of a loaded
            // machine), give the core away instead of burning the scheduler slice.
            if spins % 1024 == 0 && t0.elapsed() > Duration::from_micros(50) {
                std::thread::yield_now();
            }
        }
        self.0[..7].iter().fold(0u64, |a, w| a.wrapping_add(w.load(Ordering::Relaxed)))
    }
}

#[derive(Default)]
struct PingPong {
    ping: Line,
    pong: Line,
}

/// Mean round trip, ns, over `rounds` ping-pongs, for each of `samples` bursts.
fn pingpong(samples: usize, rounds: u64) -> Result<Stat, String> {
    let pp = Arc::new(PingPong::default());
    let total = samples as u64 * (rounds + 100);
    let b = {
        let pp = pp.clone();
        std::thread::Builder::new()
            .name("pingpong".into())
            .spawn(move || {
                let mut sink = 0u64;
                for seq in 1..=total {
                    sink = sink.wrapping_add(pp.ping.receive(seq));
                    pp.pong.send(seq);
                }
                sink
            })
            .map_err(|e| format!("cannot start the ping-pong thread: {e}"))?
    };
    let mut seq = 0u64;
    let mut v = Vec::with_capacity(samples);
    let mut sink = 0u64;
    for _ in 0..samples {
        // 100 warm-up rounds bring both threads onto their cores.
        for _ in 0..100 {
            seq += 1;
            pp.ping.send(seq);
            sink = sink.wrapping_add(pp.pong.receive(seq));
        }
        let t0 = Instant::now();
        for _ in 0..rounds {
            seq += 1;
            pp.ping.send(seq);
            sink = sink.wrapping_add(pp.pong.receive(seq));
        }
        v.push(t0.elapsed().as_nanos() as f64 / rounds as f64);
    }
    std::hint::black_box(sink);
    b.join().map_err(|_| "the ping-pong thread panicked".to_string())?;
    Ok(Stat::of(v))
}

/// One-way wake-up latency and the waker's cost, ns, over `samples` wake-ups of a thread parked for [`COLD_IDLE`].
fn wake(samples: usize) -> Result<(Stat, Stat), String> {
    let base = Instant::now();
    let go = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let t_send = Arc::new(AtomicU64::new(0));
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let waiter = {
        let (go, stop, t_send) = (go.clone(), stop.clone(), t_send.clone());
        std::thread::Builder::new()
            .name("parked".into())
            .spawn(move || {
                loop {
                    while !go.load(Ordering::Acquire) {
                        if stop.load(Ordering::Acquire) {
                            return;
                        }
                        std::thread::park();
                    }
                    let woke = base.elapsed().as_nanos() as u64;
                    go.store(false, Ordering::Release);
                    if tx.send(woke.saturating_sub(t_send.load(Ordering::Acquire))).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| format!("cannot start the parked thread: {e}"))?
    };
    let (mut one_way, mut waker) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for _ in 0..samples {
        // Long enough for the waiter to be asleep in the kernel, not spinning or just parking.
        std::thread::sleep(COLD_IDLE);
        t_send.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        go.store(true, Ordering::Release);
        let u0 = Instant::now();
        waiter.thread().unpark();
        waker.push(u0.elapsed().as_nanos() as f64);
        let ns = rx.recv_timeout(Duration::from_secs(5)).map_err(|_| "the parked thread did not wake".to_string())?;
        one_way.push(ns as f64);
    }
    stop.store(true, Ordering::Release);
    waiter.thread().unpark();
    waiter.join().map_err(|_| "the parked thread panicked".to_string())?;
    Ok((Stat::of(one_way), Stat::of(waker)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_positive_and_ordered() {
        let pp = pingpong(3, 200).unwrap();
        assert!(pp.median > 0.0 && pp.min <= pp.median && pp.median <= pp.max, "{pp:?}");
        let (w, u) = wake(5).unwrap();
        assert_eq!(w.n, 5);
        assert!(w.median > 0.0 && u.median > 0.0, "{w:?} {u:?}");
    }
}
