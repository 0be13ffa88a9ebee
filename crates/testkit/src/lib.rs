//! Fixtures shared by ttdrv's tests, its benchmarks and the `ttdrv` command's `demo` and `bench`: host references
//! computed independently of the device ([`hostref`]), the bare-ring reference measurement ([`BareRing`]), a
//! device that lies about everything it reports, for the fuzz target ([`lying`]), and the timing fixtures of the
//! benchmarks ([`timing`]: bounded bursts, aligned memory for the `memcpy` reference).
//!
//! Not shipped as part of the driver: nothing here is API a model runtime needs.

pub mod counting;
pub mod fakesys;
pub mod feeder;
pub mod hostref;
pub mod logcapture;
pub mod lying;
pub mod timing;

use std::sync::Arc;
use std::time::{Duration, Instant};
use ttdrv::contract::kernel::{Block, BuiltinKernel};
use ttdrv::contract::records::CoreRect;
use ttdrv::device::program::{KernelSource, Program, ProgramDesc};
use ttdrv::raw::RawQueue;
use ttdrv::transport::Transport;
use ttdrv::{Buffer, Device};

/// The floor every dispatch figure is compared with: one queue of a fresh emulated device, written with 64-byte
/// `PAD` records and nothing above the ring (no device state, no arguments, no locks).
pub struct BareRing {
    queue: RawQueue,
}

impl BareRing {
    /// Opens an emulated device and enables queue 0's rings on it (16 MiB issue ring), bypassing everything above
    /// the ring.
    pub fn open() -> Result<BareRing, String> {
        let t: Arc<dyn Transport> = ttdrv::transport::open("emu", 0).map_err(|e| e.to_string())?;
        let queue = RawQueue::new(&t, (1 << 20)..(1 << 31), 0, 16 << 20, 1 << 20).map_err(|e| e.to_string())?;
        Ok(BareRing { queue })
    }

    /// Writes `n` 64-byte records, each with its room check, encoding and doorbell, and returns the time that took;
    /// then waits, untimed, until the device has consumed them. Keep `n` below what the ring holds (262 144 records
    /// of 16 MiB) to measure the host's cost rather than the device's consumption rate. Fails if the device breaks
    /// the ring protocol (a bad `ISSUE_RD`).
    pub fn write(&mut self, n: u64) -> Result<Duration, String> {
        let t0 = Instant::now();
        for _ in 0..n {
            while !self.queue.try_push_pad().map_err(|e| e.to_string())? {
                std::hint::spin_loop();
            }
            self.queue.publish();
        }
        let d = t0.elapsed();
        while !self.queue.drained().map_err(|e| e.to_string())? {
            std::thread::yield_now();
        }
        Ok(d)
    }
}

/// A 1-core fill program and its runtime arguments, ready to dispatch: the cached program whose dispatch cost the
/// benchmarks measure (`ttdrv bench` and `benches/dispatch.rs`).
pub fn fill_program(dev: &Device, buf: &Buffer) -> Result<(Program, Vec<u32>), String> {
    let k = BuiltinKernel::Fill;
    let prog = dev
        .program(ProgramDesc {
            kernel: KernelSource::Builtin(k),
            cores: CoreRect { x0: 0, y0: 0, x1: 0, y1: 0 },
            ct_args: vec![],
            cbs: vec![],
            sems: vec![],
            rt_words: k.rt_words() as u16,
        })
        .map_err(|e| e.to_string())?;
    let mut rt = Block { r0: 0, r1: 1, c0: 0, c1: 8 }.to_words().to_vec();
    rt.extend_from_slice(&buf.accessor().to_words());
    rt.push(1.5f32.to_bits());
    Ok((prog, rt))
}
