//! `ttdrv bench`: every figure of issue 14 ("Fast where users actually are"), each labelled with what it measures,
//! through the C ABI as well as the Rust API, hot and cold, beside a reference of the same kind measured in the same
//! run, and marked met or MISSED against its target.
//!
//! The report is a list of [`Row`]s with stable ids (`dispatch.c.hot`, `copy.write.rust.1MiB`, ...). Each group of
//! rows is measured by one function in a submodule; improving a figure means changing how its function measures, not
//! the report. The machine's own floors ([`floors`]) are measured first in every run: a 64-byte ping-pong between two
//! threads and the wake-up of a parked thread are what the round-trip targets are stated against.
//!
//! Terms used in the table (docs/performance.md explains each figure):
//! - **host cost**: time the calling thread spends inside the call; the call returns before the device has done the
//!   work. Measured over bursts the issue ring holds, drained (untimed) between bursts (`ttdrv_testkit::timing`).
//! - **round trip**: from the call until the host has observed the device's completion.
//! - **device rate**: how fast the emulated device consumes records when more are queued than it can keep up with.
//! - **hot**: back to back. **cold**: after the device has been idle for [`COLD_IDLE`], long enough for an idle
//!   engine to park (the emulator parks after 100 µs of idle spinning).

mod capi;
mod dispatch;
mod floors;
mod idle;
mod patch;
mod pipelines;
mod python;
mod transfer;

use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Long description of `ttdrv bench`.
pub const LONG_ABOUT: &str = "\
Measures what a model runtime pays on the emulated device — cached dispatch and op calls, trace replay, small and \
large copies, event round trips, two command queues, idle CPU — through the C ABI and the Rust API (and Python with \
--python), hot (back to back) and cold (after 2 ms idle). Each figure says what it measures (host cost of the call, \
round trip, device rate, bandwidth, wall-clock throughput), sits beside a reference of the same kind measured in the \
same run (this machine's own floors: a 64-byte ping-pong between two threads, the wake-up of a parked thread, \
memcpy), and is marked met or MISSED against its target. Medians over repeated samples, with their range; \
docs/performance.md explains every row. The two-queue pipelines are those of tt-metal's guide \"Advanced \
Performance Optimizations for Models\".";

/// Options of `ttdrv bench`.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct BenchArgs {
    /// Print the rows as JSON (units, reference, target and verdict in each) instead of a table
    #[arg(long)]
    pub json: bool,
    /// Fewer samples (a smoke run; medians are noisier)
    #[arg(long)]
    pub quick: bool,
    /// Run only these groups (comma separated or repeated; default all); the machine's floors always run
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub only: Vec<Bench>,
    /// Write an SVG timeline of each paced pipeline run into DIR (TTDRV_BENCH_FULL=1 draws whole runs instead of
    /// a window of four iterations)
    #[arg(long, value_name = "DIR")]
    pub timelines: Option<PathBuf>,
    /// A Python interpreter with the ttdrv package installed (`pip install ./python` into a virtual environment):
    /// adds the per-call costs of the Python layer beside the Rust API, measured by python/bench/bench.py
    #[arg(long, value_name = "PATH")]
    pub python: Option<PathBuf>,
}

/// The groups of rows, in the order they run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bench {
    /// Cached dispatch of a 1-core program, C ABI vs Rust API, hot and cold; the bare ring; the device's rate
    Dispatch,
    /// A 64-core eltwise add op call with its arguments and output built per call, C ABI and Rust API
    OpCall,
    /// execute_trace of 10, 100 and 1000 programs vs eager dispatch of the same programs
    Trace,
    /// Patching a captured trace (rebinding 1, 10, 100 address words of 1000 launches) vs re-capturing it
    TracePatch,
    /// 4 KiB write + finish, hot and cold, against the ping-pong and wake-up floors
    Transfer,
    /// Write + finish and blocking read vs memcpy at 4 KiB, 64 KiB, 1 MiB, 64 MiB and 256 MiB
    Copy,
    /// Event record + synchronize round trip, hot and cold
    Event,
    /// Paced: the guide's two-queue pipelines, 2 queues vs 1 against the ideal, both from wall-clock times
    Pipelines,
    /// Paced: the demo's MLP eager vs traced vs traced with 2 queues (wall-clock throughput, device gaps)
    Model,
    /// CPU used by an opened, idle device with 1, 2 and 16 queues
    Idle,
    /// Per-call cost of the Python layer beside the Rust API (needs --python)
    Python,
}

impl Bench {
    /// Its name on the command line.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }
}

/// How long a device is left idle before a cold sample: well past the 100 µs an idle emulator engine spins before
/// it parks, and the 2 ms of issue 14's cold figures.
pub const COLD_IDLE: Duration = Duration::from_millis(2);

/// What every measurement gets.
pub struct Ctx {
    /// Smoke run: fewer samples.
    pub quick: bool,
    /// Where pipeline pictures go.
    pub timelines: Option<PathBuf>,
    /// The Python interpreter, if any.
    pub python: Option<PathBuf>,
    /// The machine's floors, measured at the start of the run.
    pub floors: floors::Floors,
}

impl Ctx {
    /// `full` samples, or `quick` in a smoke run.
    pub fn n(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// Which API a figure goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Api {
    /// The Rust API (`ttdrv::Device`).
    #[serde(rename = "Rust API")]
    Rust,
    /// The C ABI (`ttdrv_*` functions, called as a C program calls them).
    #[serde(rename = "C ABI")]
    C,
    /// The Python package.
    #[serde(rename = "Python")]
    Python,
    /// Below the device layer (the bare ring), or the device itself.
    #[serde(rename = "device")]
    Device,
    /// The machine, without ttdrv.
    #[serde(rename = "machine")]
    Machine,
}

impl Api {
    fn short(self) -> &'static str {
        match self {
            Api::Rust => "Rust",
            Api::C => "C",
            Api::Python => "Python",
            Api::Device => "device",
            Api::Machine => "machine",
        }
    }
}

/// Hot (back to back), cold (after [`COLD_IDLE`]) or neither (a steady-state rate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Back to back.
    Hot,
    /// After the device has been idle for [`COLD_IDLE`].
    Cold,
    /// A rate or a steady state.
    #[serde(rename = "-")]
    Steady,
}

/// What a figure measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// Time the calling thread spends in the call (it returns before the device is done).
    #[serde(rename = "host cost")]
    HostCost,
    /// From the call until the host has observed the device's completion.
    #[serde(rename = "round trip")]
    RoundTrip,
    /// The device's consumption of records, host not the limit.
    #[serde(rename = "device rate")]
    DeviceRate,
    /// Bytes over the round-trip time of the transfer.
    #[serde(rename = "bandwidth")]
    Bandwidth,
    /// Work per second of wall-clock time.
    #[serde(rename = "throughput")]
    Throughput,
    /// A wall-clock speedup.
    #[serde(rename = "speedup")]
    Speedup,
    /// Idle time of the device between ops, from its own timestamps.
    #[serde(rename = "device gap")]
    DeviceGap,
    /// CPU time over wall time.
    #[serde(rename = "CPU")]
    Cpu,
    /// A property of the machine, measured without ttdrv.
    #[serde(rename = "floor")]
    Floor,
}

impl Kind {
    fn short(self) -> &'static str {
        match self {
            Kind::HostCost => "host cost",
            Kind::RoundTrip => "round trip",
            Kind::DeviceRate => "device rate",
            Kind::Bandwidth => "bandwidth",
            Kind::Throughput => "throughput",
            Kind::Speedup => "speedup",
            Kind::DeviceGap => "device gap",
            Kind::Cpu => "CPU",
            Kind::Floor => "floor",
        }
    }
}

/// Units of values and references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// Nanoseconds.
    #[serde(rename = "ns")]
    Ns,
    /// Microseconds.
    #[serde(rename = "us")]
    Us,
    /// Gigabytes (10^9 bytes) per second.
    #[serde(rename = "GB/s")]
    GBps,
    /// Inferences (or iterations) per second.
    #[serde(rename = "/s")]
    PerSec,
    /// Percent of one core.
    #[serde(rename = "% of a core")]
    PercentCore,
    /// A ratio of two wall-clock times.
    #[serde(rename = "x")]
    Times,
}

impl Unit {
    fn text(self) -> &'static str {
        match self {
            Unit::Ns => "ns",
            Unit::Us => "µs",
            Unit::GBps => "GB/s",
            Unit::PerSec => "/s",
            Unit::PercentCore => "% core",
            Unit::Times => "x",
        }
    }

    /// `v` with enough digits for this unit.
    fn fmt(self, v: f64) -> String {
        let digits = match self {
            Unit::Ns | Unit::PerSec => {
                if v.abs() >= 100.0 {
                    0
                } else {
                    1
                }
            }
            Unit::Us | Unit::GBps => {
                if v.abs() >= 100.0 {
                    1
                } else {
                    2
                }
            }
            Unit::PercentCore => 3,
            Unit::Times => 3,
        };
        format!("{v:.digits$} {}", self.text())
    }
}

/// Median and range of the samples of one figure.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// Median.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Samples.
    pub n: usize,
}

impl Stat {
    /// The statistics of `v` (at least one sample).
    pub fn of(mut v: Vec<f64>) -> Stat {
        assert!(!v.is_empty(), "a figure needs at least one sample");
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Stat { median, min: v[0], max: v[n - 1], n }
    }

    /// Every value divided by `d` (ns to µs, say).
    pub fn scaled(self, d: f64) -> Stat {
        Stat { median: self.median / d, min: self.min / d, max: self.max / d, n: self.n }
    }

    /// `k / x` for every value (time per byte to bytes per time, say); min and max swap.
    pub fn inverted(self, k: f64) -> Stat {
        Stat { median: k / self.median, min: k / self.max, max: k / self.min, n: self.n }
    }

    /// A single value (a figure measured once, or computed).
    pub fn one(v: f64) -> Stat {
        Stat { median: v, min: v, max: v, n: 1 }
    }
}

/// A reference of the same kind and unit as the figure, measured in the same run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reference {
    /// What it is.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit (the figure's).
    pub unit: Unit,
}

/// Which way the ratio is taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatioOf {
    /// figure / reference.
    FigureOverReference,
    /// reference / figure (how many times faster the figure is).
    ReferenceOverFigure,
}

/// What a target checks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// The median is at most this (in the figure's unit).
    ValueAtMost(f64),
    /// The ratio is at most this.
    RatioAtMost(f64),
    /// The ratio is at least this.
    RatioAtLeast(f64),
}

/// A target and where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Target {
    /// The checks; all must hold.
    pub checks: Vec<Check>,
    /// As the table prints it, e.g. "<= 1.2x Rust, <= 60 ns".
    pub text: String,
}

/// Whether a figure meets its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every check holds.
    Met,
    /// Some check fails.
    Missed,
    /// The figure could not be measured (what it needs does not exist yet, or was not asked for); a target it has
    /// is not met.
    NotAvailable,
    /// No target.
    NoTarget,
}

/// One figure of the report (one object of `ttdrv bench --json`).
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Stable id, e.g. `dispatch.c.hot`.
    pub id: String,
    /// Group (`--only` name).
    pub group: &'static str,
    /// What is measured.
    pub figure: String,
    /// Through which API.
    pub api: Api,
    /// Hot, cold or steady.
    pub state: State,
    /// What kind of quantity.
    pub measures: Kind,
    /// Median; `null` when not available.
    pub value: Option<f64>,
    /// Smallest and largest sample.
    pub min: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
    /// Samples behind the median.
    pub samples: usize,
    /// Unit of `value`, `min`, `max`.
    pub unit: Unit,
    /// A reference of the same kind measured in the same run.
    pub reference: Option<Reference>,
    /// The ratio of figure and reference (see `ratio_of`).
    pub ratio: Option<f64>,
    /// How the ratio is taken, e.g. "C / Rust".
    pub ratio_of: Option<String>,
    /// Target, if the figure has one.
    pub target: Option<Target>,
    /// Met, missed, not available, or no target.
    pub verdict: Verdict,
    /// Anything needed to read the figure.
    pub note: String,
}

impl Row {
    /// A row of group `group` with id `id`, not measured yet.
    pub fn new(
        id: impl Into<String>,
        group: Bench,
        figure: impl Into<String>,
        api: Api,
        state: State,
        measures: Kind,
    ) -> Row {
        let group = match group {
            Bench::Dispatch => "dispatch",
            Bench::OpCall => "op-call",
            Bench::Trace => "trace",
            Bench::TracePatch => "trace-patch",
            Bench::Transfer => "transfer",
            Bench::Copy => "copy",
            Bench::Event => "event",
            Bench::Pipelines => "pipelines",
            Bench::Model => "model",
            Bench::Idle => "idle",
            Bench::Python => "python",
        };
        Row {
            id: id.into(),
            group,
            figure: figure.into(),
            api,
            state,
            measures,
            value: None,
            min: None,
            max: None,
            samples: 0,
            unit: Unit::Ns,
            reference: None,
            ratio: None,
            ratio_of: None,
            target: None,
            verdict: Verdict::NoTarget,
            note: String::new(),
        }
    }

    /// The figure's samples, in `unit`.
    pub fn stat(mut self, s: Stat, unit: Unit) -> Row {
        self.value = Some(s.median);
        self.min = Some(s.min);
        self.max = Some(s.max);
        self.samples = s.n;
        self.unit = unit;
        self
    }

    /// The unit of a figure that is not available.
    pub fn unit(mut self, unit: Unit) -> Row {
        self.unit = unit;
        self
    }

    /// The reference (same unit as the figure, measured in the same run) and the ratio `how`, labelled `ratio_of`.
    pub fn against(mut self, name: impl Into<String>, value: f64, how: RatioOf, ratio_of: &str) -> Row {
        self.reference = Some(Reference { name: name.into(), value, unit: self.unit });
        self.ratio_of = Some(ratio_of.to_string());
        self.ratio = self.value.map(|v| match how {
            RatioOf::FigureOverReference => v / value,
            RatioOf::ReferenceOverFigure => value / v,
        });
        self
    }

    /// The target.
    pub fn target(mut self, text: impl Into<String>, checks: Vec<Check>) -> Row {
        self.target = Some(Target { checks, text: text.into() });
        self
    }

    /// A note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// Marks the figure as not available, saying why.
    pub fn not_available(mut self, why: impl Into<String>) -> Row {
        self.value = None;
        self.note = why.into();
        self
    }

    /// Computes the verdict from the value, the ratio and the target.
    fn judge(mut self) -> Row {
        self.verdict = match (&self.target, self.value) {
            (None, _) => Verdict::NoTarget,
            (Some(_), None) => Verdict::NotAvailable,
            (Some(t), Some(v)) => {
                let ok = t.checks.iter().all(|c| match *c {
                    Check::ValueAtMost(x) => v <= x,
                    Check::RatioAtMost(x) => self.ratio.is_some_and(|r| r <= x),
                    Check::RatioAtLeast(x) => self.ratio.is_some_and(|r| r >= x),
                });
                if ok { Verdict::Met } else { Verdict::Missed }
            }
        };
        self
    }
}

/// The whole report (`ttdrv bench --json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// ttdrv's version.
    pub version: &'static str,
    /// A smoke run (`--quick`).
    pub quick: bool,
    /// Idle time before each cold sample, µs.
    pub cold_idle_us: u64,
    /// Online CPUs.
    pub cpus: usize,
    /// The rows, in the order measured.
    pub rows: Vec<Row>,
}

/// Runs the benchmark; returns the process exit code (0 whether or not targets are met: it measures, it does not
/// test).
pub fn run(args: &BenchArgs) -> u8 {
    match report(args) {
        Ok(r) => {
            if args.json {
                match serde_json::to_string_pretty(&r) {
                    Ok(s) => println!("{s}"),
                    Err(err) => {
                        eprintln!("ttdrv bench: cannot write the results as JSON: {err}");
                        return 1;
                    }
                }
            } else {
                print!("{}", table(&r));
            }
            0
        }
        Err(err) => {
            eprintln!("ttdrv bench: {err}");
            1
        }
    }
}

fn report(args: &BenchArgs) -> Result<Report, String> {
    use clap::ValueEnum;
    let say = |what: &str| {
        if !args.json {
            eprintln!("measuring {what} ...");
        }
    };
    say("the machine's floors");
    let floors = floors::measure(args.quick)?;
    let ctx = Ctx { quick: args.quick, timelines: args.timelines.clone(), python: args.python.clone(), floors };
    let mut rows = floors::rows(&ctx.floors);
    for &b in Bench::value_variants() {
        if !args.only.is_empty() && !args.only.contains(&b) {
            continue;
        }
        say(&b.name());
        let got = match b {
            Bench::Dispatch => dispatch::dispatch(&ctx),
            Bench::OpCall => dispatch::op_call(&ctx),
            Bench::Trace => dispatch::trace(&ctx),
            Bench::TracePatch => patch::patch(&ctx),
            Bench::Transfer => transfer::small(&ctx),
            Bench::Copy => transfer::copies(&ctx),
            Bench::Event => transfer::event(&ctx),
            Bench::Pipelines => pipelines::pipelines(&ctx),
            Bench::Model => pipelines::model(&ctx),
            Bench::Idle => idle::idle(&ctx),
            Bench::Python => python::python(&ctx),
        };
        rows.extend(got.map_err(|e| format!("{}: {e}", b.name()))?);
    }
    Ok(Report {
        version: env!("CARGO_PKG_VERSION"),
        quick: args.quick,
        cold_idle_us: COLD_IDLE.as_micros() as u64,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rows: rows.into_iter().map(Row::judge).collect(),
    })
}

/// The report as the table `ttdrv bench` prints: one line per figure, grouped, every value with its unit, then the
/// notes and a summary of the targets.
fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "ttdrv {} bench{} on {} CPUs; medians [min-max] of the samples; cold = after {} µs idle; every reference is \
         of the same kind and measured in this run",
        r.version,
        if r.quick { " --quick" } else { "" },
        r.cpus,
        r.cold_idle_us
    );
    let head = format!(
        "{:<58} {:<7} {:<5} {:<11} {:>12} {:>23}  {:<36} {:>24}  {:<24} {}",
        "figure",
        "API",
        "state",
        "measures",
        "median",
        "[min-max]",
        "reference (same run)",
        "ratio",
        "target",
        "verdict"
    );
    let mut group = "";
    let mut notes: Vec<(usize, &Row)> = Vec::new();
    for row in &r.rows {
        if row.group != group {
            group = row.group;
            let _ = writeln!(s, "\n{head}");
        }
        let value = row.value.map_or_else(|| "n/a".to_string(), |v| row.unit.fmt(v));
        let range = match (row.min, row.max) {
            (Some(a), Some(b)) if row.samples > 1 => format!("[{}-{}]", trim(row.unit.fmt(a)), row.unit.fmt(b)),
            _ => String::new(),
        };
        let reference =
            row.reference.as_ref().map_or_else(String::new, |x| format!("{} {}", x.unit.fmt(x.value), x.name));
        let ratio = match (&row.ratio, &row.ratio_of) {
            (Some(q), Some(of)) => format!("{q:.3} x ({of})"),
            _ => String::new(),
        };
        let verdict = match row.verdict {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotAvailable => "n/a: NOT MET",
            // Said, not left blank: every row has a verdict, and a figure without a target is one by choice.
            Verdict::NoTarget => "- (no target)",
        };
        let mut mark = String::new();
        if !row.note.is_empty() {
            notes.push((notes.len() + 1, row));
            mark = format!(" [{}]", notes.len());
        }
        let _ = writeln!(
            s,
            "{:<58} {:<7} {:<5} {:<11} {:>12} {:>23}  {:<36} {:>24}  {:<24} {}",
            format!("{}{mark}", row.figure),
            row.api.short(),
            match row.state {
                State::Hot => "hot",
                State::Cold => "cold",
                State::Steady => "-",
            },
            row.measures.short(),
            value,
            range,
            reference,
            ratio,
            row.target.as_ref().map_or("", |t| t.text.as_str()),
            verdict
        );
    }
    if !notes.is_empty() {
        let _ = writeln!(s);
        for (i, row) in notes {
            let _ = writeln!(s, "[{i}] {}: {}", row.id, row.note);
        }
    }
    let count = |v: Verdict| r.rows.iter().filter(|x| x.verdict == v).count();
    let missed: Vec<&str> = r.rows.iter().filter(|x| x.verdict == Verdict::Missed).map(|x| x.id.as_str()).collect();
    let na: Vec<&str> = r.rows.iter().filter(|x| x.verdict == Verdict::NotAvailable).map(|x| x.id.as_str()).collect();
    let _ = writeln!(
        s,
        "\ntargets: {} met, {} MISSED{}, {} not available{}",
        count(Verdict::Met),
        missed.len(),
        if missed.is_empty() { String::new() } else { format!(" ({})", missed.join(", ")) },
        na.len(),
        if na.is_empty() { String::new() } else { format!(" ({})", na.join(", ")) },
    );
    s
}

/// A value without its unit (the first of a range).
fn trim(v: String) -> String {
    v.split(' ').next().unwrap_or("").to_string()
}

/// Times one call of `f`, in ns.
pub fn time_ns<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t0 = Instant::now();
    let r = f();
    (r, t0.elapsed().as_nanos() as f64)
}

/// Samples of `N` figures taken in turns: `rounds` rounds, each taking `block` samples of every figure in order. The
/// figures see the same machine, and each block is long enough that the engine of the previous figure's device (an
/// idle emulator engine spins 100 µs before it parks) disturbs only its start.
pub fn rounds<const N: usize>(
    rounds: usize,
    block: usize,
    mut fs: [&mut dyn FnMut() -> Result<f64, String>; N],
) -> Result<[Stat; N], String> {
    let mut v: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(rounds * block));
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            for _ in 0..block {
                v[i].push(f()?);
            }
        }
    }
    Ok(v.map(Stat::of))
}

/// A sampler that times one call of `f` and returns its ns.
pub fn timed(mut f: impl FnMut() -> Result<(), String>) -> impl FnMut() -> Result<f64, String> {
    move || {
        let (r, ns) = time_ns(&mut f);
        r.map(|()| ns)
    }
}

/// Per-call ns of `n` samples of a cold call: the device idles for [`COLD_IDLE`], then one call is timed, then
/// `settle` (untimed) lets the device finish.
pub fn cold(
    n: usize,
    mut call: impl FnMut() -> Result<(), String>,
    mut settle: impl FnMut() -> Result<(), String>,
) -> Result<Stat, String> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        std::thread::sleep(COLD_IDLE);
        let (r, ns) = time_ns(&mut call);
        r?;
        v.push(ns);
        settle()?;
    }
    Ok(Stat::of(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: f64, reference: f64, checks: Vec<Check>) -> Row {
        Row::new("t.x", Bench::Dispatch, "t", Api::C, State::Hot, Kind::HostCost)
            .stat(Stat::one(value), Unit::Ns)
            .against("Rust API", reference, RatioOf::FigureOverReference, "C / Rust")
            .target("t", checks)
            .judge()
    }

    #[test]
    fn verdicts_follow_every_check() {
        assert_eq!(row(50.0, 45.0, vec![Check::ValueAtMost(60.0), Check::RatioAtMost(1.2)]).verdict, Verdict::Met);
        assert_eq!(row(70.0, 65.0, vec![Check::ValueAtMost(60.0), Check::RatioAtMost(1.2)]).verdict, Verdict::Missed);
        assert_eq!(row(50.0, 30.0, vec![Check::ValueAtMost(60.0), Check::RatioAtMost(1.2)]).verdict, Verdict::Missed);
        assert_eq!(row(2.0, 4.0, vec![Check::RatioAtLeast(0.5)]).verdict, Verdict::Met);
        assert_eq!(row(1.0, 4.0, vec![Check::RatioAtLeast(0.5)]).verdict, Verdict::Missed);
        let na = Row::new("t.na", Bench::Copy, "t", Api::Rust, State::Steady, Kind::Bandwidth)
            .unit(Unit::GBps)
            .target(">= 0.9x memcpy", vec![Check::RatioAtLeast(0.9)])
            .not_available("not built")
            .judge();
        assert_eq!(na.verdict, Verdict::NotAvailable);
        let none = Row::new("t.none", Bench::Copy, "t", Api::Rust, State::Steady, Kind::Bandwidth)
            .stat(Stat::one(1.0), Unit::GBps)
            .judge();
        assert_eq!(none.verdict, Verdict::NoTarget);
    }

    #[test]
    fn ratios_take_the_stated_direction() {
        let r = Row::new("t", Bench::Trace, "t", Api::Rust, State::Hot, Kind::HostCost)
            .stat(Stat::one(100.0), Unit::Ns)
            .against("eager", 5000.0, RatioOf::ReferenceOverFigure, "eager / replay");
        assert_eq!(r.ratio, Some(50.0));
        assert_eq!(r.reference.as_ref().unwrap().unit, Unit::Ns, "a reference has the figure's unit");
    }

    #[test]
    fn stats_are_medians_and_ranges() {
        let s = Stat::of(vec![5.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 5.0, 4));
        let g = Stat::of(vec![1.0, 2.0, 4.0]).inverted(8.0);
        assert_eq!((g.median, g.min, g.max), (4.0, 2.0, 8.0));
    }

    #[test]
    fn json_has_units_targets_and_verdicts() {
        let r = Report {
            version: "0",
            quick: true,
            cold_idle_us: 2000,
            cpus: 2,
            rows: vec![
                row(70.0, 50.0, vec![Check::ValueAtMost(60.0)]),
                Row::new("t.na", Bench::Copy, "t", Api::Rust, State::Steady, Kind::Bandwidth)
                    .unit(Unit::GBps)
                    .target(">= 0.9x memcpy", vec![Check::RatioAtLeast(0.9)])
                    .not_available("registered memory is not built")
                    .judge(),
            ],
        };
        let v: serde_json::Value = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        let rows = v["rows"].as_array().unwrap();
        assert_eq!(rows[0]["unit"], "ns");
        assert_eq!(rows[0]["api"], "C ABI");
        assert_eq!(rows[0]["state"], "hot");
        assert_eq!(rows[0]["measures"], "host cost");
        assert_eq!(rows[0]["verdict"], "missed");
        assert_eq!(rows[0]["reference"]["unit"], "ns");
        assert_eq!(rows[0]["target"]["checks"][0]["value_at_most"], 60.0);
        assert_eq!(rows[1]["value"], serde_json::Value::Null);
        assert_eq!(rows[1]["verdict"], "not_available");
        let t = table(&r);
        assert!(t.contains("MISSED") && t.contains("n/a: NOT MET"), "{t}");
        assert!(t.contains("1 MISSED (t.x)") && t.contains("1 not available (t.na)"), "{t}");
        // A figure without a target says so in the verdict column instead of leaving it blank.
        let untargeted = Row::new("t.free", Bench::Copy, "t", Api::Rust, State::Hot, Kind::Bandwidth)
            .stat(Stat::one(1.0), Unit::GBps)
            .judge();
        let t = table(&Report { rows: vec![untargeted], ..r });
        assert!(t.lines().any(|l| l.starts_with("t ") && l.ends_with("- (no target)")), "{t}");
    }

    #[test]
    fn names_on_the_command_line() {
        use clap::ValueEnum;
        let names: Vec<String> = Bench::value_variants().iter().map(|b| b.name()).collect();
        assert_eq!(
            names,
            [
                "dispatch",
                "op-call",
                "trace",
                "trace-patch",
                "transfer",
                "copy",
                "event",
                "pipelines",
                "model",
                "idle",
                "python"
            ]
        );
        for b in Bench::value_variants() {
            let r = Row::new("x", *b, "x", Api::Rust, State::Hot, Kind::HostCost);
            assert_eq!(r.group, b.name(), "a row's group is its --only name");
        }
    }
}
