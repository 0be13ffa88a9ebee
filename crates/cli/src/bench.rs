//! `ttdrv bench`: the headline measurements, each next to its reference measured in the same process, as medians
//! over repeated runs (this kind of machine is shared and noisy: only side-by-side ratios mean anything).

use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::{Buffer, BufferSpec, BufferType, DType, Device, DeviceParams, Layout, MemoryConfig, ShardGrid};
use ttdrv_testkit::{BareRing, fill_program};

/// Long description of `ttdrv bench`.
pub const LONG_ABOUT: &str = "\
Headline measurements on the emulated device, each beside its reference measured in the same run, as medians over \
repeated runs. The two-queue pipelines are those of tt-metal's guide \"Advanced Performance Optimizations for \
Models\" (section \"Multiple Command Queues\").";

/// Options of `ttdrv bench`.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct BenchArgs {
    /// Print the results as JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Fewer repetitions (for smoke tests)
    #[arg(long)]
    pub quick: bool,
    /// Run only these measurements (comma separated or repeated; default all)
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub only: Vec<Bench>,
    /// Write an SVG timeline of each paced pipeline run into DIR (TTDRV_BENCH_FULL=1 draws whole runs instead of
    /// a window of four iterations)
    #[arg(long, value_name = "DIR")]
    pub timelines: Option<PathBuf>,
}

/// The measurements, in the order they run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    /// Host time of one cached program dispatch vs a bare 64-byte record written into the ring
    Dispatch,
    /// Host time of execute_trace for traces of 10, 100 and 1000 programs vs eager dispatch of the same
    Trace,
    /// Bandwidth inside a non-blocking 16/64 MiB write call vs memcpy of the same size
    Copy,
    /// Event record -> host observes it (record + synchronize on an idle queue)
    Event,
    /// Paced: the guide's two-queue pipelines, 2 queues vs 1, against the ideal the model allows
    Pipelines,
    /// Paced: the demo's MLP eager vs traced vs traced with 2 queues (throughput, device gap between ops)
    Model,
    /// CPU used by an opened, idle device (percent of one core)
    Idle,
}

/// What every measurement gets: how many repetitions, and where pictures go.
struct Opts {
    reps: usize,
    timelines: Option<PathBuf>,
}

impl Bench {
    /// Its name on the command line.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    fn measure(self, o: &Opts) -> Result<Vec<Measurement>, String> {
        match self {
            Bench::Dispatch => dispatch(o.reps),
            Bench::Trace => trace(o.reps),
            Bench::Copy => copy(o.reps),
            Bench::Event => event(o.reps),
            Bench::Pipelines => pipelines(o),
            Bench::Model => model(o.reps),
            Bench::Idle => idle(o.reps),
        }
    }
}

/// One measurement and its reference (one object of `ttdrv bench --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Short name.
    pub name: String,
    /// What was measured.
    pub value: f64,
    /// Unit of `value`.
    pub unit: &'static str,
    /// The reference, in the same unit (or a ratio target).
    pub reference: f64,
    /// What the reference is.
    pub reference_name: String,
    /// `value / reference` or the ratio that matters (stated in `note`).
    pub ratio: f64,
    /// How to read the ratio.
    pub note: String,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// A driver error as the message the command prints.
fn e(e: ttdrv::Error) -> String {
    e.to_string()
}

/// Runs the benchmark; returns the process exit code.
pub fn run(args: &BenchArgs) -> u8 {
    use clap::ValueEnum;
    let opts = Opts { reps: if args.quick { 3 } else { 9 }, timelines: args.timelines.clone() };
    let mut out: Vec<Measurement> = Vec::new();
    for &b in Bench::value_variants() {
        if !args.only.is_empty() && !args.only.contains(&b) {
            continue;
        }
        if !args.json {
            eprintln!("measuring {} ...", b.name());
        }
        match b.measure(&opts) {
            Ok(ms) => out.extend(ms),
            Err(err) => {
                eprintln!("ttdrv bench: {}: {err}", b.name());
                return 1;
            }
        }
    }
    if args.json {
        match to_json(&out) {
            Ok(s) => println!("{s}"),
            Err(err) => {
                eprintln!("ttdrv bench: cannot write the results as JSON: {err}");
                return 1;
            }
        }
    } else {
        print_table(&out);
    }
    0
}

fn print_table(ms: &[Measurement]) {
    println!("{:<44} {:>14} {:>34} {:>10}  note", "measurement", "median", "reference (same run)", "ratio");
    for m in ms {
        println!(
            "{:<44} {:>10.3} {:<3} {:>24.3} {:<9} {:>10.3}  {}",
            m.name, m.value, m.unit, m.reference, m.reference_name, m.ratio, m.note
        );
    }
}

/// The results as a JSON array of [`Measurement`] objects (a value that is not finite becomes `null`).
fn to_json(ms: &[Measurement]) -> serde_json::Result<String> {
    serde_json::to_string_pretty(ms)
}

/// ns per bare 64-byte record: the median over `reps` runs of `n` records.
fn bare_ring_write(n: u64, reps: usize) -> Result<f64, String> {
    let mut ring = BareRing::open()?;
    let mut samples: Vec<f64> =
        (0..reps).map(|_| ring.write(n).map(|d| d.as_nanos() as f64 / n as f64)).collect::<Result<_, _>>()?;
    Ok(median(&mut samples))
}

fn dispatch(reps: usize) -> Result<Vec<Measurement>, String> {
    let n = 10_000;
    let ring = bare_ring_write(n, reps)?;
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let buf = dev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let (prog, rt) = fill_program(&dev, &buf)?;
    prog.run(0, &rt, &[&buf]).map_err(e)?;
    dev.finish(0).map_err(e)?;
    let mut samples = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        for _ in 0..n {
            prog.run(0, &rt, &[&buf]).map_err(e)?;
        }
        samples.push(t0.elapsed().as_nanos() as f64 / n as f64);
        dev.finish(0).map_err(e)?;
    }
    let disp = median(&mut samples);
    // A ttnn-style op call: builds its arguments and output every call (the program cache still hits).
    let a = dev.allocate(&BufferSpec::new(64, 256, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let b = dev.allocate(&BufferSpec::new(1, 256, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let out = dev.allocate(&BufferSpec::new(64, 256, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let m = 2_000;
    let mut op_samples = Vec::new();
    for _ in 0..reps {
        let t0 = Instant::now();
        for _ in 0..m {
            dev.binary_into(0, BinaryOp::Add, &a, &b, &out).map_err(e)?;
        }
        op_samples.push(t0.elapsed().as_nanos() as f64 / m as f64);
        dev.finish(0).map_err(e)?;
    }
    let op = median(&mut op_samples);
    Ok(vec![
        Measurement {
            name: "dispatch of a cached program (1 core)".into(),
            value: disp,
            unit: "ns",
            reference: ring,
            reference_name: "bare 64-B ring write".into(),
            ratio: disp / ring,
            note: format!("target <= 100 ns; tt-metal ~21 us per enqueue ({:.0}x ours)", 21_000.0 / disp),
        },
        Measurement {
            name: "eltwise add op call (16 cores, args built)".into(),
            value: op,
            unit: "ns",
            reference: ring,
            reference_name: "bare 64-B ring write".into(),
            ratio: op / ring,
            note: "a ttnn-style call: split, accessors, launch".into(),
        },
    ])
}

fn trace(reps: usize) -> Result<Vec<Measurement>, String> {
    let p = DeviceParams { trace_region_size: 64 << 20, ..Default::default() };
    let dev = Device::open("emu", &p).map_err(e)?;
    let buf = dev.allocate(&BufferSpec::new(16, 32, DType::Float32, MemoryConfig::L1)).map_err(e)?;
    let (prog, rt) = fill_program(&dev, &buf)?;
    prog.run(0, &rt, &[&buf]).map_err(e)?;
    dev.finish(0).map_err(e)?;
    let mut out = Vec::new();
    for len in [10usize, 100, 1000] {
        let tid = dev.begin_trace_capture(0).map_err(e)?;
        for _ in 0..len {
            prog.run(0, &rt, &[&buf]).map_err(e)?;
        }
        dev.end_trace_capture(tid, 0).map_err(e)?;
        dev.finish(0).map_err(e)?;
        let replays = 200;
        let mut tr = Vec::new();
        let mut eager = Vec::new();
        for _ in 0..reps {
            let t0 = Instant::now();
            for _ in 0..replays {
                dev.execute_trace(tid, 0, false).map_err(e)?;
            }
            tr.push(t0.elapsed().as_nanos() as f64 / replays as f64);
            dev.finish(0).map_err(e)?;
            let t0 = Instant::now();
            for _ in 0..len {
                prog.run(0, &rt, &[&buf]).map_err(e)?;
            }
            eager.push(t0.elapsed().as_nanos() as f64);
            dev.finish(0).map_err(e)?;
        }
        let (t, ea) = (median(&mut tr), median(&mut eager));
        out.push(Measurement {
            name: format!("execute_trace, {len} programs"),
            value: t,
            unit: "ns",
            reference: ea,
            reference_name: format!("eager x{len}"),
            ratio: ea / t,
            note: format!("eager / replay; target: flat and <= 1 us{}", if len == 1000 { ", >= 50x" } else { "" }),
        });
        dev.release_trace(tid).map_err(e)?;
    }
    Ok(out)
}

fn copy(reps: usize) -> Result<Vec<Measurement>, String> {
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let mut out = Vec::new();
    for mib in [16u32, 64] {
        let spec = BufferSpec::new(mib * 256, 1024, DType::Float32, MemoryConfig::DRAM);
        let bytes = spec.host_bytes() as usize;
        let src: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
        let mut dst = vec![1u8; bytes];
        let b = dev.allocate(&spec).map_err(e)?;
        b.write(0, &src, true).map_err(e)?;
        let (mut w, mut m, mut wf) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let t0 = Instant::now();
            dst.copy_from_slice(&src);
            m.push(bytes as f64 / t0.elapsed().as_secs_f64() / 1e9);
            std::hint::black_box(&dst);
            let t0 = Instant::now();
            b.write(0, &src, false).map_err(e)?;
            w.push(bytes as f64 / t0.elapsed().as_secs_f64() / 1e9);
            dev.finish(0).map_err(e)?;
            wf.push(bytes as f64 / t0.elapsed().as_secs_f64() / 1e9);
        }
        let (w, m, wf) = (median(&mut w), median(&mut m), median(&mut wf));
        out.push(Measurement {
            name: format!("non-blocking write call, {mib} MiB"),
            value: w,
            unit: "GB/s",
            reference: m,
            reference_name: "memcpy".into(),
            ratio: w / m,
            note: "target >= 0.9 from 16 MiB".into(),
        });
        out.push(Measurement {
            name: format!("write + finish, {mib} MiB"),
            value: wf,
            unit: "GB/s",
            reference: m,
            reference_name: "memcpy".into(),
            ratio: wf / m,
            note: "the emulator adds a second copy".into(),
        });
    }
    Ok(out)
}

fn event(reps: usize) -> Result<Vec<Measurement>, String> {
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let ev = dev.create_event().map_err(e)?;
    let n = 2000;
    let mut samples = Vec::with_capacity(n);
    let mut finish = Vec::new();
    for _ in 0..n {
        let t0 = Instant::now();
        ev.record(0).map_err(e)?;
        ev.synchronize().map_err(e)?;
        samples.push(t0.elapsed().as_nanos() as f64);
    }
    for _ in 0..reps * 50 {
        let t0 = Instant::now();
        dev.finish(0).map_err(e)?;
        finish.push(t0.elapsed().as_nanos() as f64);
    }
    let (lat, fin) = (median(&mut samples), median(&mut finish));
    Ok(vec![Measurement {
        name: "event record -> host observes".into(),
        value: lat / 1e3,
        unit: "us",
        reference: 2.0,
        reference_name: "target".into(),
        ratio: lat / 1e3 / 2.0,
        note: format!("target ratio <= 1; finish on an idle queue {:.2} us", fin / 1e3),
    }])
}

/// Modelled and measured times of the guide's two-queue pipelines on the paced emulator.
fn pipelines(o: &Opts) -> Result<Vec<Measurement>, String> {
    let reps = o.reps;
    const SEL: &str = "emu:paced,queues=2,pcie_gbps=1,core_gbps=0.05,launch_ns=2000,prefetch=16K";
    let iters = if reps <= 3 { 12 } else { 40 };
    let shape = [128u32, 256];
    let in_dram = MemoryConfig::sharded(
        BufferType::Dram,
        Layout::HeightSharded,
        ShardGrid::Banks { first: 0, last: 7 },
        [16, 256],
    );
    let in_l1 = MemoryConfig::L1;
    let data = vec![0x3Fu8; (shape[0] * shape[1] * 4) as usize];
    let mut outbuf = vec![0u8; data.len()];
    // One iteration: write the input, copy it to L1, `ops` relus, read the output.
    let ops = 3;
    let run =
        |pipeline: u8, iters: usize, outbuf: &mut Vec<u8>| -> Result<(Duration, Vec<ttdrv::profile::Span>), String> {
            let dev = Device::open(SEL, &DeviceParams { num_command_queues: 2, profiling: true, ..Default::default() })
                .map_err(e)?;
            let input = dev.allocate(&BufferSpec::new(shape[0], shape[1], DType::Float32, in_dram)).map_err(e)?;
            // Interleaved, so the reshard into it runs on as many cores as the copy into L1 (a DRAM-sharded output
            // would be written by one core per bank).
            let output_dram =
                dev.allocate(&BufferSpec::new(shape[0], shape[1], DType::Float32, MemoryConfig::DRAM)).map_err(e)?;
            let (first_op, write_ev, last_op, read_ev) = (
                dev.create_event().map_err(e)?,
                dev.create_event().map_err(e)?,
                dev.create_event().map_err(e)?,
                dev.create_event().map_err(e)?,
            );
            let model = |x: &Buffer| -> Result<Buffer, String> {
                let mut y = dev.unary(0, UnaryOp::Relu, x, &in_l1).map_err(e)?;
                for _ in 1..ops {
                    y = dev.unary(0, UnaryOp::Relu, &y, &in_l1).map_err(e)?;
                }
                Ok(y)
            };
            // Compile run, untimed.
            input.write(0, &data, false).map_err(e)?;
            let l1 = dev.to_memory_config(0, &input, &in_l1).map_err(e)?;
            let y = model(&l1)?;
            dev.reshard_into(0, &y, &output_dram).map_err(e)?;
            dev.synchronize().map_err(e)?;
            if let Some(p) = dev.profiler() {
                p.clear();
            }
            first_op.record(0).map_err(e)?;
            read_ev.record(1).map_err(e)?;
            let t0 = Instant::now();
            if pipeline == 2 {
                // "Ops on CQ 0, Input Writes and Output Readback on CQ 1" writes the first input before the loop,
                // and each iteration writes the next input before reading the current output, so CQ 1's read
                // overlaps the next run of the model.
                dev.wait_for_event(1, &first_op).map_err(e)?;
                input.write(1, &data, false).map_err(e)?;
                write_ev.record(1).map_err(e)?;
            }
            for it in 0..iters {
                match pipeline {
                    // One queue: everything in order on CQ 0.
                    0 => {
                        input.write(0, &data, false).map_err(e)?;
                        let l1 = dev.to_memory_config(0, &input, &in_l1).map_err(e)?;
                        let y = model(&l1)?;
                        y.read(0, outbuf).map_err(e)?;
                    }
                    // "Ops and Output Readback on CQ 0, Input Writes on CQ 1".
                    1 => {
                        dev.wait_for_event(1, &first_op).map_err(e)?;
                        input.write(1, &data, false).map_err(e)?;
                        write_ev.record(1).map_err(e)?;
                        dev.wait_for_event(0, &write_ev).map_err(e)?;
                        let l1 = dev.to_memory_config(0, &input, &in_l1).map_err(e)?;
                        first_op.record(0).map_err(e)?;
                        let y = model(&l1)?;
                        // SAFETY: `outbuf` outlives the synchronize below and is not touched meanwhile.
                        drop(unsafe { y.read_nonblocking(0, outbuf.as_mut_ptr()) }.map_err(e)?);
                    }
                    // "Ops on CQ 0, Input Writes and Output Readback on CQ 1", persistent output in DRAM.
                    _ => {
                        dev.wait_for_event(0, &write_ev).map_err(e)?;
                        let l1 = dev.to_memory_config(0, &input, &in_l1).map_err(e)?;
                        first_op.record(0).map_err(e)?;
                        let y = model(&l1)?;
                        dev.wait_for_event(0, &read_ev).map_err(e)?;
                        dev.reshard_into(0, &y, &output_dram).map_err(e)?;
                        last_op.record(0).map_err(e)?;
                        if it + 1 < iters {
                            dev.wait_for_event(1, &first_op).map_err(e)?;
                            input.write(1, &data, false).map_err(e)?;
                            write_ev.record(1).map_err(e)?;
                        }
                        dev.wait_for_event(1, &last_op).map_err(e)?;
                        // SAFETY: as above.
                        drop(unsafe { output_dram.read_nonblocking(1, outbuf.as_mut_ptr()) }.map_err(e)?);
                        read_ev.record(1).map_err(e)?;
                    }
                }
            }
            dev.synchronize().map_err(e)?;
            let elapsed = t0.elapsed();
            let spans = dev.profile_spans();
            if let Some(dir) = &o.timelines {
                std::fs::create_dir_all(dir).map_err(|x| format!("cannot create {}: {x}", dir.display()))?;
                let (a, b) =
                    (spans.first().map_or(0, |s| s.start_ns), spans.iter().map(|s| s.end_ns).max().unwrap_or(0));
                let mid = a + (b - a) / 2;
                let per = (b - a) / iters.max(1) as u64;
                crate::svg::render(
                    &crate::svg::Timeline {
                        title: format!(
                            "pipeline {}",
                            ["1 CQ", "writes on CQ 1", "writes and reads on CQ 1"][pipeline as usize]
                        ),
                        subtitle: format!("{iters} iterations in {:.1} ms", elapsed.as_secs_f64() * 1e3),
                        spans: &spans,
                        window: if std::env::var_os("TTDRV_BENCH_FULL").is_some() {
                            (a, b)
                        } else {
                            (mid.saturating_sub(per * 2), mid + per * 2)
                        },
                        queues: 2,
                    },
                    &dir.join(format!("pipeline-{pipeline}.svg")),
                )?;
            }
            Ok((elapsed, spans))
        };
    // Modelled per-iteration times, read from the device's own timestamps of the one-queue run.
    let (t1, spans) = run(0, iters, &mut outbuf)?;
    let sum = |f: &dyn Fn(&ttdrv::profile::Span) -> bool| -> f64 {
        spans.iter().filter(|s| f(s)).map(|s| (s.end_ns - s.start_ns) as f64).sum::<f64>() / iters as f64 / 1e3
    };
    let is_dev = |s: &ttdrv::profile::Span| matches!(s.lane, ttdrv::profile::Lane::Queue(_));
    let w = sum(&|s| is_dev(s) && &*s.name == "write");
    let r = sum(&|s| is_dev(s) && &*s.name == "read");
    let f = sum(&|s| is_dev(s) && &*s.name == "copy");
    let c = sum(&|s| is_dev(s) && s.cat == "compute" && &*s.name != "copy");
    let serial = w + f + c + r;
    let mut out = Vec::new();
    // Per-iteration cycle the dependencies allow, against the one-queue run (serial).
    for (p, label, cycle) in [
        // CQ 1 writes the next input once the copy into L1 has consumed the last one; CQ 0 reads on its own.
        (1u8, "writes on CQ 1", f + w.max(c + r)),
        // CQ 0 adds the reshard into the persistent output (a copy costing about f); CQ 1 carries both transfers.
        (2u8, "writes and reads on CQ 1", (f + c + f).max(w + r)),
    ] {
        let ideal = serial / cycle;
        let mut sp = Vec::new();
        for _ in 0..reps.min(3) {
            let (t1b, _) = run(0, iters, &mut outbuf)?;
            let (t2, _) = run(p, iters, &mut outbuf)?;
            sp.push(t1b.as_secs_f64() / t2.as_secs_f64());
        }
        let measured = median(&mut sp);
        out.push(Measurement {
            name: format!("2 CQs vs 1, {label}"),
            value: measured,
            unit: "x",
            reference: ideal,
            reference_name: "ideal".into(),
            ratio: measured / ideal,
            note: format!(
                "modelled per iteration: write {w:.0} us, to-L1 copy {f:.0} us, compute {c:.0} us, read {r:.0} us; target >= 0.9"
            ),
        });
    }
    let _ = t1;
    Ok(out)
}

/// The demo's model (paced) in its configurations: end-to-end throughput and the device-side gap between ops.
fn model(reps: usize) -> Result<Vec<Measurement>, String> {
    use super::demo::{Config, DEFAULT_DEVICE, run_config};
    let dir = std::env::temp_dir().join(format!("ttdrv-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|x| x.to_string())?;
    let iters = if reps <= 3 { 60 } else { 200 };
    let mut out = Vec::new();
    for cost in [21.0, 0.0] {
        let mut res = Vec::new();
        for cfg in [Config::Eager1, Config::Traced1, Config::Traced2] {
            let mut runs: Vec<_> = (0..reps.min(3))
                .map(|_| run_config(DEFAULT_DEVICE, cfg, cost, iters, &dir))
                .collect::<Result<_, _>>()?;
            runs.sort_by(|a, b| a.throughput().partial_cmp(&b.throughput()).unwrap_or(std::cmp::Ordering::Equal));
            res.push(runs.swap_remove(runs.len() / 2));
        }
        let (eager, traced, traced2) = (&res[0], &res[1], &res[2]);
        let what = if cost > 0.0 { format!("{cost} us/op framework") } else { "driver alone".to_string() };
        out.push(Measurement {
            name: format!("MLP traced vs eager ({what})"),
            value: traced.throughput(),
            unit: "/s",
            reference: eager.throughput(),
            reference_name: "eager".into(),
            ratio: traced.throughput() / eager.throughput(),
            note: "inferences per second, paced emulator (the demo's device)".into(),
        });
        out.push(Measurement {
            name: format!("MLP traced+2CQ vs eager ({what})"),
            value: traced2.throughput(),
            unit: "/s",
            reference: eager.throughput(),
            reference_name: "eager".into(),
            ratio: traced2.throughput() / eager.throughput(),
            note: "inferences per second".into(),
        });
        out.push(Measurement {
            name: format!("device gap between ops, traced ({what})"),
            value: traced.gap_us,
            unit: "us",
            reference: eager.gap_us,
            reference_name: "eager gap".into(),
            ratio: traced.gap_us / eager.gap_us.max(1e-9),
            note: "median idle time between consecutive programs on the device".into(),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(out)
}

/// CPU time (user + system) this process has used.
fn cpu_time() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct we pass; RUSAGE_SELF is always valid.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn idle(reps: usize) -> Result<Vec<Measurement>, String> {
    let dev = Device::open("emu:queues=2", &DeviceParams { num_command_queues: 2, ..Default::default() }).map_err(e)?;
    dev.finish(0).map_err(e)?;
    let span = if reps <= 3 { Duration::from_millis(500) } else { Duration::from_secs(2) };
    std::thread::sleep(Duration::from_millis(50));
    let (c0, t0) = (cpu_time(), Instant::now());
    std::thread::sleep(span);
    let pct = (cpu_time() - c0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    drop(dev);
    Ok(vec![Measurement {
        name: "CPU of an opened idle device (2 queues)".into(),
        value: pct,
        unit: "%",
        reference: 1.0,
        reference_name: "target".into(),
        ratio: pct / 1.0,
        note: "percent of one core; target ratio < 1".into(),
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_parses_back_with_every_field() {
        let ms = vec![
            Measurement {
                name: "a \"quoted\" \\ name".into(),
                value: 12.5,
                unit: "ns",
                reference: 3.0,
                reference_name: "bare 64-B ring write".into(),
                ratio: 12.5 / 3.0,
                note: "line one\nline two".into(),
            },
            Measurement {
                name: "nothing measured".into(),
                value: 0.0,
                unit: "x",
                reference: 0.0,
                reference_name: "ideal".into(),
                ratio: f64::NAN,
                note: String::new(),
            },
        ];
        let v: serde_json::Value = serde_json::from_str(&to_json(&ms).unwrap()).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 2);
        assert_eq!(arr[0]["name"], "a \"quoted\" \\ name");
        assert_eq!(arr[0]["value"], 12.5);
        assert_eq!(arr[0]["unit"], "ns");
        assert_eq!(arr[0]["reference"], 3.0);
        assert_eq!(arr[0]["reference_name"], "bare 64-B ring write");
        assert_eq!(arr[0]["ratio"].as_f64().unwrap(), 12.5 / 3.0);
        assert_eq!(arr[0]["note"], "line one\nline two");
        assert!(arr[1]["ratio"].is_null(), "a ratio that is not a number is null, not invalid JSON");
    }

    #[test]
    fn names_on_the_command_line() {
        use clap::ValueEnum;
        let names: Vec<String> = Bench::value_variants().iter().map(|b| b.name()).collect();
        assert_eq!(names, ["dispatch", "trace", "copy", "event", "pipelines", "model", "idle"]);
    }
}
