//! CPU an opened but idle device costs: the process's CPU time (user + system, all threads) over a stretch of wall
//! time in which nothing is enqueued. The device layer makes no calls meanwhile, so the API it was opened through
//! does not matter.

use super::{Api, Bench, Check, Ctx, Kind, Row, Stat, State, Unit};
use std::time::{Duration, Instant};
use ttdrv::{Device, DeviceParams};

/// CPU time (user + system) this process has used.
fn cpu_time() -> Result<Duration, String> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) };
    if rc != 0 {
        return Err(format!("getrusage: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: getrusage succeeded, so it wrote the struct.
    let ru = unsafe { ru.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.clamp(0, 999_999) * 1000) as u32);
    Ok(tv(ru.ru_utime) + tv(ru.ru_stime))
}

/// Idle CPU of devices with 1, 2 and 16 queues, all opened, and of a 16-queue device with one queue opened.
pub fn idle(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let span = if ctx.quick { Duration::from_millis(400) } else { Duration::from_millis(1500) };
    let samples = ctx.n(3, 1);
    let mut out = Vec::new();
    for (id, selector, queues, figure) in [
        ("idle.q1", "emu:queues=1", 1u16, "CPU of an opened idle device, 1 queue"),
        ("idle.q2", "emu:queues=2", 2, "CPU of an opened idle device, 2 queues"),
        ("idle.q16", "emu:queues=16", 16, "CPU of an opened idle device, 16 queues"),
        ("idle.q16_1", "emu:queues=16", 1, "CPU of a 16-queue device, 1 queue opened"),
    ] {
        // Small rings: their size does not change what an idle device costs, and 16 default-sized queues would lock
        // 640 MiB of host memory.
        let params = DeviceParams {
            num_command_queues: queues,
            issue_ring_size: 1 << 20,
            completion_ring_size: 1 << 20,
            ..Default::default()
        };
        let dev = Device::open(selector, &params).map_err(|e| e.to_string())?;
        dev.synchronize().map_err(|e| e.to_string())?;
        // Past every engine's idle spin (100 µs) and any start-up work.
        std::thread::sleep(Duration::from_millis(50));
        let mut v = Vec::with_capacity(samples);
        for _ in 0..samples {
            let (c0, t0) = (cpu_time()?, Instant::now());
            std::thread::sleep(span);
            v.push((cpu_time()? - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0);
        }
        drop(dev);
        out.push(
            Row::new(id, Bench::Idle, figure, Api::Device, State::Steady, Kind::Cpu)
                .stat(Stat::of(v), Unit::PercentCore)
                .target("< 0.5% of a core", vec![Check::ValueAtMost(0.5)]),
        );
    }
    if let Some(first) = out.first_mut() {
        first.note = format!(
            "process CPU time (all threads) over {:.1} s of wall time per sample with nothing enqueued",
            span.as_secs_f64()
        );
    }
    Ok(out)
}
