//! Small and large transfers, hot and cold, and idle CPU, against this machine's own floors measured in the same run.
//!
//! Not a criterion benchmark: each figure is the median of many one-shot samples taken in a fixed order, because
//! the cold figures need an idle gap before every sample, which criterion's batching cannot give. Floors, measured
//! first and again last (a loaded machine shows as a difference between the two):
//! - **ping-pong**: a 64-byte line bounced between two threads spinning on it (one round trip), the least any
//!   host → device → host round trip can cost when the device is a thread on the other core;
//! - **wake**: one-way latency of waking a parked thread (`Thread::unpark` → the thread runs), and what the
//!   unpark call itself costs the waker.
//!
//! Then, on the emulated device: an event round trip (`Event::record` + `synchronize`) hot (back to back) and cold
//! (after 2 ms idle); a 4 KiB write + `finish` hot and cold; write + finish and blocking read of 1 MiB and 64 MiB
//! against `memcpy` of the same size (ratio = memcpy time / time: 1.0 is memcpy speed), from ordinary memory and
//! from registered host memory; and the CPU an opened 16-queue device uses while idle (getrusage over 1 s).
//!
//! `cargo bench --bench hotcold` (about a minute). Targets (issue 14) are printed beside each figure, flagged
//! `met` or `MISSED`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use ttdrv::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Median round trip (ns) of a 64-byte line bounced between this thread and a spinning peer.
fn ping_pong() -> f64 {
    #[repr(align(64))]
    struct Line(AtomicU64);
    let ping = Arc::new(Line(AtomicU64::new(0)));
    let pong = Arc::new(Line(AtomicU64::new(0)));
    let (p2, q2) = (ping.clone(), pong.clone());
    const N: u64 = 20_000;
    let peer = std::thread::spawn(move || {
        for i in 1..=N {
            while p2.0.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            q2.0.store(i, Ordering::Release);
        }
    });
    let mut samples = Vec::with_capacity(N as usize);
    for i in 1..=N {
        let t0 = Instant::now();
        ping.0.store(i, Ordering::Release);
        while pong.0.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        samples.push(t0.elapsed().as_nanos() as f64);
    }
    peer.join().unwrap();
    median(samples)
}

/// (median one-way wake latency of a parked thread, median cost of the unpark call to the waker), ns.
fn wake_latency() -> (f64, f64) {
    let woke = Arc::new(AtomicU64::new(0));
    let parked = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let (w2, p2) = (woke.clone(), parked.clone());
    const N: usize = 200;
    let peer = std::thread::spawn(move || {
        for _ in 0..N {
            p2.store(true, Ordering::SeqCst);
            while p2.load(Ordering::SeqCst) {
                std::thread::park();
            }
            w2.store(epoch.elapsed().as_nanos() as u64, Ordering::SeqCst);
        }
    });
    let (mut lat, mut cost) = (Vec::new(), Vec::new());
    for _ in 0..N {
        while !parked.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        // Let the peer really fall asleep.
        std::thread::sleep(Duration::from_micros(500));
        woke.store(0, Ordering::SeqCst);
        let t0 = epoch.elapsed().as_nanos() as u64;
        parked.store(false, Ordering::SeqCst);
        peer.thread().unpark();
        let t1 = epoch.elapsed().as_nanos() as u64;
        let mut w;
        loop {
            w = woke.load(Ordering::SeqCst);
            if w != 0 {
                break;
            }
            std::hint::spin_loop();
        }
        lat.push(w.saturating_sub(t0) as f64);
        cost.push((t1 - t0) as f64);
    }
    peer.join().unwrap();
    (median(lat), median(cost))
}

/// Median ns of `f` over `n` samples, each preceded by `gap` of idleness.
fn sample(n: usize, gap: Duration, mut f: impl FnMut()) -> f64 {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        if !gap.is_zero() {
            std::thread::sleep(gap);
        }
        let t0 = Instant::now();
        f();
        v.push(t0.elapsed().as_nanos() as f64);
    }
    if std::env::var_os("HOTCOLD_SPREAD").is_some() {
        let mut w = v.clone();
        w.sort_by(f64::total_cmp);
        let p = |q: f64| w[((w.len() - 1) as f64 * q) as usize] / 1e3;
        println!("    (µs: min {:.2} p10 {:.2} p50 {:.2} p90 {:.2})", p(0.0), p(0.1), p(0.5), p(0.9));
    }
    median(v)
}

/// A page-aligned, pre-faulted pattern of `n` bytes, as a `Vec` over-allocated to align.
struct Aligned {
    v: Vec<u8>,
    at: usize,
    n: usize,
}

impl Aligned {
    fn new(n: usize) -> Aligned {
        let mut v = vec![0u8; n + 8192];
        let at = (4096 - v.as_ptr() as usize % 4096) % 4096;
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for c in v[at..at + n].chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes());
        }
        Aligned { v, at, n }
    }
    fn bytes(&self) -> &[u8] {
        &self.v[self.at..self.at + self.n]
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.v[self.at..self.at + self.n]
    }
}

struct Row {
    what: String,
    value: String,
    target: String,
    met: Option<bool>,
}

fn row(rows: &mut Vec<Row>, what: impl Into<String>, value: String, target: impl Into<String>, met: Option<bool>) {
    let r = Row { what: what.into(), value, target: target.into(), met };
    println!(
        "{:<52} {:>16}   {:<34} {}",
        r.what,
        r.value,
        r.target,
        match r.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "",
        }
    );
    rows.push(r);
}

fn us(ns: f64) -> String {
    format!("{:.2} µs", ns / 1e3)
}

/// CPU time (user + system) of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn transfer_rows(rows: &mut Vec<Row>, dev: &Device, size: usize, label: &str) {
    let src = Aligned::new(size);
    let mut dst = Aligned::new(size);
    let mut out = Aligned::new(size);
    let cols = (size.min(64 << 10) / 4) as u32;
    let spec = BufferSpec::new((size / (cols as usize * 4)) as u32, cols, DType::Float32, MemoryConfig::DRAM);
    let buf = dev.allocate(&spec).expect("buffer");
    let n = if size >= 16 << 20 { 7 } else { 101 };
    // memcpy into memory written before (pre-faulted), 64 bytes past a page like a record payload.
    let memcpy = sample(n, Duration::ZERO, || {
        let d = &mut dst.v[dst.at + 64..dst.at + 64 + size - 64];
        d.copy_from_slice(black_box(&src.bytes()[..size - 64]));
        black_box(d);
    });
    buf.write(0, src.bytes(), true).expect("warm-up write");
    let write = sample(n, Duration::ZERO, || {
        buf.write(0, black_box(src.bytes()), false).expect("write");
        dev.finish(0).expect("finish");
    });
    let read = sample(n, Duration::ZERO, || {
        buf.read(0, black_box(out.bytes_mut())).expect("read");
    });
    assert_eq!(out.bytes(), src.bytes(), "read back what was written");
    let target_w = if size == 1 << 20 { Some(0.5) } else { None };
    let rw = memcpy / write;
    row(
        rows,
        format!("{label} write + finish (memcpy {})", us(memcpy)),
        format!("{} = {rw:.2}×", us(write)),
        target_w.map_or(String::new(), |t| format!("≥ {t}× memcpy")),
        target_w.map(|t| rw >= t),
    );
    let rr = memcpy / read;
    row(rows, format!("{label} read (blocking)"), format!("{} = {rr:.2}×", us(read)), "", None);
    // From and into registered host memory: the device moves the bytes itself (WRITE_HOST / READ_HOST).
    // SAFETY: `src` and `out` outlive the registrations (unregistered at the end of this function).
    let rsrc = unsafe { dev.register_host_memory(src.v.as_ptr().add(src.at) as *mut u8, size) }.expect("register");
    let rout = unsafe { dev.register_host_memory(out.v.as_mut_ptr().add(out.at), size) }.expect("register");
    let wreg = sample(n, Duration::ZERO, || {
        buf.write_from(0, &rsrc, 0, true).expect("write_from");
    });
    let rreg = sample(n, Duration::ZERO, || {
        buf.read_into(0, &rout, 0, true).expect("read_into");
    });
    rsrc.unregister().expect("unregister");
    rout.unregister().expect("unregister");
    assert_eq!(out.bytes(), src.bytes(), "read_into returned what write_from wrote");
    let target_r = if size == 64 << 20 { Some(0.9) } else { None };
    let ratio = memcpy / wreg;
    row(
        rows,
        format!("{label} write from registered memory (blocking)"),
        format!("{} = {ratio:.2}×", us(wreg)),
        target_r.map_or(String::new(), |t| format!("≥ {t}× memcpy")),
        target_r.map(|t| ratio >= t),
    );
    let ratio = memcpy / rreg;
    row(
        rows,
        format!("{label} read into registered memory (blocking)"),
        format!("{} = {ratio:.2}×", us(rreg)),
        "",
        None,
    );
}

fn idle_cpu(rows: &mut Vec<Row>) {
    let params = DeviceParams { num_command_queues: 16, ..DeviceParams::default() };
    let dev = Device::open("emu:queues=16", &params).expect("16-queue device");
    // Touch every queue once, then let it settle.
    for q in 0..16 {
        dev.finish(q).expect("finish");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (c0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let pct = (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    row(
        rows,
        "idle CPU, opened device, 16 queues (1 s)",
        format!("{pct:.3} % core"),
        "< 0.5 % of a core",
        Some(pct < 0.5),
    );
    let dev1 = Device::open("emu:queues=16", &DeviceParams::default()).expect("device");
    dev1.finish(0).expect("finish");
    drop(dev);
    std::thread::sleep(Duration::from_millis(300));
    let (c0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let pct = (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    row(
        rows,
        "idle CPU, 16-queue device, 1 queue opened (1 s)",
        format!("{pct:.3} % core"),
        "< 0.5 % of a core",
        Some(pct < 0.5),
    );
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let want = |k: &str| filter.is_empty() || filter.iter().any(|f| k.contains(f.as_str()));
    let mut rows = Vec::new();
    let pp = ping_pong();
    let (wake, wake_cost) = wake_latency();
    row(&mut rows, "floor: 64-byte ping-pong round trip", us(pp), "", None);
    row(&mut rows, "floor: one-way wake of a parked thread", us(wake), "", None);
    row(&mut rows, "floor: unpark call, cost to the waker", us(wake_cost), "", None);

    let dev = Device::open("emu", &DeviceParams::default()).expect("emulated device");
    if want("event") {
        let ev = dev.create_event().expect("event");
        let mut rt = || {
            ev.record(0).expect("record");
            ev.synchronize().expect("synchronize");
        };
        for _ in 0..100 {
            rt();
        }
        let hot = sample(2001, Duration::ZERO, &mut rt);
        row(&mut rows, "event round trip, hot", us(hot), "≤ 1 µs", Some(hot <= 1000.0));
        let cold = sample(101, Duration::from_millis(2), &mut rt);
        row(
            &mut rows,
            "event round trip, cold (2 ms idle before)",
            format!("{} = {:.2}× wake", us(cold), cold / wake),
            "≤ 2× one-way wake",
            Some(cold <= 2.0 * wake),
        );
    }
    if want("4k") {
        let src = Aligned::new(4096);
        let buf = dev.allocate(&BufferSpec::new(1, 1024, DType::Float32, MemoryConfig::DRAM)).expect("buffer");
        let mut wf = || {
            buf.write(0, black_box(src.bytes()), false).expect("write");
            dev.finish(0).expect("finish");
        };
        for _ in 0..100 {
            wf();
        }
        let hot = sample(2001, Duration::ZERO, &mut wf);
        row(
            &mut rows,
            "4 KiB write + finish, hot",
            format!("{} = {:.2}× ping-pong", us(hot), hot / pp),
            "≤ 3× ping-pong",
            Some(hot <= 3.0 * pp),
        );
        let cold = sample(101, Duration::from_millis(2), &mut wf);
        row(
            &mut rows,
            "4 KiB write + finish, cold (2 ms idle)",
            format!("{} = {:.2}× wake", us(cold), cold / wake),
            "",
            None,
        );
    }
    if want("1m") {
        transfer_rows(&mut rows, &dev, 1 << 20, "1 MiB");
    }
    if want("64m") {
        transfer_rows(&mut rows, &dev, 64 << 20, "64 MiB");
    }
    dev.close().expect("close");
    if want("idle") {
        idle_cpu(&mut rows);
    }
    let pp2 = ping_pong();
    let (wake2, _) = wake_latency();
    row(&mut rows, "floor again at the end: ping-pong / wake", format!("{} / {}", us(pp2), us(wake2)), "", None);
    let missed: Vec<&str> = rows.iter().filter(|r| r.met == Some(false)).map(|r| r.what.as_str()).collect();
    println!("\ntargets missed: {}", if missed.is_empty() { "none".to_string() } else { missed.join("; ") });
}
