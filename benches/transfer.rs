//! Host -> device write bandwidth against `memcpy`, on the emulated device.
//!
//! For 64 KiB, 1, 4, 16, 64 and 256 MiB, in one run: (a) `copy_from_slice` into a pre-faulted `Vec` of the same
//! size; (b) the host time inside a non-blocking `Buffer::write` call only (the finish that follows is outside the
//! timed region); (c) write followed by `finish`, end to end; and, as a reference for (b), (d) the driver's own copy
//! routine (`dma::copy::copy_to_dma`, non-temporal from 256 KiB) into a pre-faulted buffer, without any device.
//! At the end it prints a table of medians and the bandwidth ratios (b)/(a), (c)/(a) and (b)/(d) per size (a
//! ratio of 1.0 means the same speed).
//!
//! Every write is finished before the next one starts (in (b) the finish is untimed), so never more than one write is
//! in flight: the figures are the host's copy and the round trip, not a backlog in the ring.
//!
//! `cargo bench --bench transfer` (about two minutes); `cargo bench --bench transfer -- 16MiB` for one size.
//! `TTDRV_BENCH_ISSUE_RING=<bytes>` changes the issue ring size (default 16 MiB), to see how much of a large
//! write the ring absorbs; `TTDRV_BENCH_DEVICE=emu:<options>` changes the emulated device (default `emu`).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ttdrv::*;
use ttdrv_testkit::timing::{Aligned, pattern};

const SIZES: [(usize, &str); 6] = [
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (4 << 20, "4MiB"),
    (16 << 20, "16MiB"),
    (64 << 20, "64MiB"),
    (256 << 20, "256MiB"),
];
const KINDS: [&str; 4] = ["memcpy", "write_call", "write_finish", "dma_copy"];
const SAMPLES: usize = 10;

/// Per (size, kind), the per-iteration time of every call criterion made, in order; the last `SAMPLES` are the
/// measurement (earlier ones are warm-up).
static TIMES: Mutex<BTreeMap<(usize, &'static str), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(size: usize, kind: &'static str, total: Duration, iters: u64) -> Duration {
    let per = total.as_secs_f64() / iters.max(1) as f64;
    TIMES.lock().unwrap().entry((size, kind)).or_default().push(per);
    total
}

fn bench(c: &mut Criterion, dev: &Device) {
    for &(size, label) in &SIZES {
        let src = pattern(size);
        let src = src.bytes();
        // Pre-faulted: every page written before timing.
        let mut dst = Aligned::new(size, 64);
        let dst = dst.bytes_mut();
        // Rows of 64 KiB: interleaved pages of one row each, up to 63 rows per 4 MiB record.
        let cols = (size.min(64 << 10) / 4) as u32;
        let spec = BufferSpec::new((size / (cols as usize * 4)) as u32, cols, DType::Float32, MemoryConfig::DRAM);
        assert_eq!(spec.host_bytes() as usize, size);
        let buf = dev.allocate(&spec).expect("buffer");

        let mut g = c.benchmark_group("transfer");
        g.throughput(Throughput::Bytes(size as u64)).sample_size(SAMPLES);
        if size >= 16 << 20 {
            g.sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_millis(1500))
                .measurement_time(Duration::from_secs(3));
        } else {
            g.warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
        }
        g.bench_function(BenchmarkId::new("memcpy", label), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    dst.copy_from_slice(black_box(src));
                    black_box(&mut *dst);
                }
                record(size, "memcpy", t0.elapsed(), iters)
            })
        });
        g.bench_function(BenchmarkId::new("dma_copy", label), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    // SAFETY: `dst` and `src` are distinct live slices of `size` bytes.
                    unsafe { ttdrv::raw::copy_to_dma(dst.as_mut_ptr(), black_box(src).as_ptr(), size) };
                    black_box(&mut *dst);
                }
                record(size, "dma_copy", t0.elapsed(), iters)
            })
        });
        g.bench_function(BenchmarkId::new("write_call", label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    buf.write(0, black_box(src), false).expect("write");
                    total += t0.elapsed();
                    dev.finish(0).expect("finish");
                }
                record(size, "write_call", total, iters)
            })
        });
        g.bench_function(BenchmarkId::new("write_finish", label), |b| {
            b.iter_custom(|iters| {
                let t0 = Instant::now();
                for _ in 0..iters {
                    buf.write(0, black_box(src), false).expect("write");
                    dev.finish(0).expect("finish");
                }
                record(size, "write_finish", t0.elapsed(), iters)
            })
        });
        g.finish();
    }
}

/// One-shot (not a criterion benchmark, so only indicative): the first write of 256 MiB into emulated DRAM pages
/// nobody has touched yet (the emulator's DRAM is a sparse mapping, so the device takes a page fault per 4 KiB),
/// against the same write into pages touched before.
fn first_touch(dev: &Device) {
    let size = 256usize << 20;
    let src = pattern(size);
    let spec = BufferSpec::new((size / (64 << 10)) as u32, 16 << 10, DType::Float32, MemoryConfig::DRAM);
    let once = |b: &Buffer| {
        let t0 = Instant::now();
        b.write(0, src.bytes(), false).expect("write");
        let call = t0.elapsed();
        dev.finish(0).expect("finish");
        (call.as_secs_f64() * 1e3, t0.elapsed().as_secs_f64() * 1e3)
    };
    // `touched` lies where the benchmarks' buffers were; `fresh` above it, where nothing was ever written.
    let touched = dev.allocate(&spec).expect("buffer");
    let fresh = dev.allocate(&spec).expect("buffer");
    let (fc, ff) = once(&fresh);
    let (tc, tf) = once(&touched);
    println!(
        "256 MiB into untouched emulated DRAM: write call {fc:.1} ms, write+finish {ff:.1} ms; into touched DRAM: \
         {tc:.1} ms, {tf:.1} ms (one shot each)"
    );
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// Page size of the driver's DMA memory, from /proc/self/smaps.
fn dma_page_size() -> String {
    let s = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut in_dma = false;
    for line in s.lines() {
        if line.contains(" ttdrv-dma") || line.contains("/memfd:ttdrv-dma") {
            in_dma = true;
        } else if in_dma && let Some(v) = line.strip_prefix("KernelPageSize:") {
            return v.trim().to_string();
        }
    }
    "unknown".into()
}

fn print_table(pages: &str, ring: u32) {
    let times = TIMES.lock().unwrap();
    println!();
    println!(
        "Medians of the last {SAMPLES} samples (ms), bandwidth in GB/s; ratio = memcpy time / time (1.0 = memcpy speed)."
    );
    println!("Ring memory: {pages} pages. Issue ring {} MiB (records up to {} KiB).", ring >> 20, (ring / 4) >> 10);
    println!(
        "{:>8} | {:>15} | {:>15} | {:>15} | {:>15} | {:>9} | {:>8} | {:>9}",
        "size", "(a) memcpy", "(b) write call", "(c) write+fin", "(d) dma copy", "(b)/(a)", "(c)/(a)", "(b)/(d)"
    );
    for &(size, label) in &SIZES {
        let med: Vec<Option<f64>> = KINDS
            .iter()
            .map(|k| times.get(&(size, *k)).filter(|v| v.len() >= SAMPLES).map(|v| median(&v[v.len() - SAMPLES..])))
            .collect();
        if med.iter().all(Option::is_none) {
            continue;
        }
        let cell = |m: Option<f64>| match m {
            Some(t) => format!("{:7.3} {:6.1}", t * 1e3, size as f64 / t / 1e9),
            None => "-".into(),
        };
        let ratio = |base: Option<f64>, m: Option<f64>| match (base, m) {
            (Some(a), Some(b)) => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "{:>8} | {:>15} | {:>15} | {:>15} | {:>15} | {:>9} | {:>8} | {:>9}",
            label,
            cell(med[0]),
            cell(med[1]),
            cell(med[2]),
            cell(med[3]),
            ratio(med[0], med[1]),
            ratio(med[0], med[2]),
            ratio(med[3], med[1])
        );
    }
}

fn main() {
    let mut c = Criterion::default().sample_size(SAMPLES).configure_from_args();
    let mut params = DeviceParams::default();
    if let Some(v) = std::env::var("TTDRV_BENCH_ISSUE_RING").ok().and_then(|v| v.parse().ok()) {
        params.issue_ring_size = v;
    }
    let sel = std::env::var("TTDRV_BENCH_DEVICE").unwrap_or_else(|_| "emu".into());
    assert!(sel == "emu" || sel.starts_with("emu:"), "TTDRV_BENCH_DEVICE must select the emulated device");
    let dev = Device::open(&sel, &params).expect("emulated device");
    println!("device {sel}");
    bench(&mut c, &dev);
    c.final_summary();
    print_table(&dma_page_size(), params.issue_ring_size);
    if TIMES.lock().unwrap().contains_key(&(256 << 20, "write_call")) {
        first_touch(&dev);
    }
    dev.close().expect("close");
}
