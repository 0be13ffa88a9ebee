//! Profiling: host API spans per thread and device spans per command queue, exported as Chrome trace-event JSON
//! (Perfetto, chrome://tracing) and rendered as an SVG timeline.
//!
//! Opt-in (`DeviceParams::profiling`, or `TTDRV_PROFILE=path` which also writes the JSON when the device closes);
//! when off, every hook is one branch on an `Option`. Device spans come from the timestamps the device writes back
//! (contract §4.3): each record gets the `PROFILE` flag and a slot in a per-queue ring of slots; the host remembers
//! which record owns which slot and reads the slot once the record has retired (its tag <= the queue's `RETIRED`).

use crate::queue::Rings;
use serde::Serialize;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use ttdrv_contract::seq_reached;

/// Profile slots per queue (16 bytes each): a power of two.
pub const PROFILE_SLOTS: u32 = 1 << 16;

/// Environment variable that turns profiling on for every device and names the JSON file written at close.
pub const PROFILE_ENV: &str = "TTDRV_PROFILE";

/// A span's name and category, as recorded before its timestamps are known.
pub type SpanLabel = (Arc<str>, &'static str);

/// Where a span is drawn.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lane {
    /// A host thread.
    Host {
        /// Small per-process thread number.
        thread: u64,
        /// Thread name.
        name: Arc<str>,
    },
    /// A command queue of the device.
    Queue(u16),
}

/// One span on a timeline, in nanoseconds of the profiler's clock.
#[derive(Clone, Debug, PartialEq)]
pub struct Span {
    /// Lane.
    pub lane: Lane,
    /// What ran ("write", "matmul", "execute_trace", ...).
    pub name: Arc<str>,
    /// Category: "api", "framework", "transfer", "compute", "event", "trace".
    pub cat: &'static str,
    /// Start.
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
}

struct PendingRecord {
    tag: u32,
    slot: u32,
    /// The record's name, then (for a trace replay) the names of the records inside.
    names: Vec<SpanLabel>,
}

#[derive(Default)]
struct QueuePending {
    next_slot: u32,
    entries: VecDeque<PendingRecord>,
}

/// Collects spans for one device.
pub struct Profiler {
    t0: Instant,
    /// host ns - device ns.
    offset: AtomicI64,
    spans: Mutex<Vec<Span>>,
    pending: Vec<Mutex<QueuePending>>,
    lost: AtomicU64,
    /// Where to write the JSON at close (from `TTDRV_PROFILE`).
    pub(crate) out_path: Option<std::path::PathBuf>,
}

thread_local! {
    static THREAD: (u64, Arc<str>) = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = std::thread::current().name().map_or_else(|| format!("thread {id}").into(), Into::into);
        (id, name)
    };
}

fn host_lane() -> Lane {
    THREAD.with(|(id, name)| Lane::Host { thread: *id, name: name.clone() })
}

/// Records a host span when dropped.
pub struct HostSpan<'a> {
    p: &'a Profiler,
    name: &'static str,
    cat: &'static str,
    start: u64,
}

impl Drop for HostSpan<'_> {
    fn drop(&mut self) {
        let end = self.p.now_ns();
        self.p.push(Span {
            lane: host_lane(),
            name: self.name.into(),
            cat: self.cat,
            start_ns: self.start,
            end_ns: end,
        });
    }
}

impl Profiler {
    /// A profiler for a device with `queues` command queues.
    pub fn new(queues: u16, out_path: Option<std::path::PathBuf>) -> Profiler {
        Profiler {
            t0: Instant::now(),
            offset: AtomicI64::new(0),
            spans: Mutex::new(Vec::new()),
            pending: (0..queues).map(|_| Mutex::new(QueuePending::default())).collect(),
            lost: AtomicU64::new(0),
            out_path,
        }
    }

    /// The profiler's clock, ns.
    pub fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// Maps device time onto the profiler's clock: `dev_now` was read from the device's `TIME` register now.
    pub fn correlate(&self, dev_now: u64) {
        // Device time is device data: a garbage clock gives garbage timestamps, never an overflow.
        self.offset.store((self.now_ns() as i64).wrapping_sub(dev_now as i64), Ordering::Relaxed);
    }

    fn push(&self, s: Span) {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// Starts a host span on the calling thread, recorded when the guard drops.
    pub fn host_span(&self, name: &'static str, cat: &'static str) -> HostSpan<'_> {
        HostSpan { p: self, name, cat, start: self.now_ns() }
    }

    /// Records a finished host span on the calling thread.
    pub fn record_host(&self, name: &'static str, cat: &'static str, start_ns: u64, end_ns: u64) {
        self.push(Span { lane: host_lane(), name: name.into(), cat, start_ns, end_ns });
    }

    /// Reserves `n` consecutive profile slots on queue `q`; returns the first.
    pub(crate) fn reserve_slots(&self, q: u16, n: u32) -> u32 {
        let mut p = self.pending[q as usize].lock().unwrap_or_else(|e| e.into_inner());
        // Slots wrap: a pending record whose slots are about to be reused can no longer be read reliably.
        while let Some(front) = p.entries.front() {
            let used = p.next_slot.wrapping_sub(front.slot).wrapping_add(n);
            if used <= PROFILE_SLOTS {
                break;
            }
            let dropped = p.entries.pop_front().map_or(0, |e| e.names.len());
            self.lost.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        let s = p.next_slot;
        p.next_slot = p.next_slot.wrapping_add(n);
        s
    }

    /// Remembers that the record `tag` on queue `q` owns the slots from `slot`, one per name.
    pub(crate) fn expect(&self, q: u16, tag: u32, slot: u32, names: Vec<SpanLabel>) {
        let mut p = self.pending[q as usize].lock().unwrap_or_else(|e| e.into_inner());
        p.entries.push_back(PendingRecord { tag, slot, names });
    }

    /// Reads the slots of every retired record of queue `q`, given its (checked) `RETIRED` count.
    pub(crate) fn harvest(&self, q: u16, rings: &Rings, retired: u32) {
        let offset = self.offset.load(Ordering::Relaxed);
        let mut out = Vec::new();
        {
            let mut p = self.pending[q as usize].lock().unwrap_or_else(|e| e.into_inner());
            while let Some(front) = p.entries.front() {
                if !seq_reached(retired, front.tag) {
                    break;
                }
                let e = p.entries.pop_front().expect("front exists");
                for (i, (name, cat)) in e.names.into_iter().enumerate() {
                    let Some((s, t)) = rings.profile_slot(e.slot.wrapping_add(i as u32)) else { continue };
                    if t < s || t == 0 {
                        self.lost.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Slots are device-written: saturating, so a garbage timestamp cannot overflow.
                    let map = |d: u64| (d as i64).saturating_add(offset).max(0) as u64;
                    out.push(Span { lane: Lane::Queue(q), name, cat, start_ns: map(s), end_ns: map(t) });
                }
            }
        }
        if !out.is_empty() {
            self.spans.lock().unwrap_or_else(|e| e.into_inner()).extend(out);
        }
    }

    /// Forgets pending records (device reset: their slots will never be written).
    pub(crate) fn drop_pending(&self) {
        for p in &self.pending {
            let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
            let n: usize = p.entries.iter().map(|e| e.names.len()).sum();
            self.lost.fetch_add(n as u64, Ordering::Relaxed);
            p.entries.clear();
        }
    }

    /// Every span collected so far, sorted by start.
    pub fn spans(&self) -> Vec<Span> {
        let mut v = self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by_key(|s| (s.start_ns, s.end_ns));
        v
    }

    /// Spans that could not be read (slots overwritten before harvest, or a reset).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Drops every collected span.
    pub fn clear(&self) {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Writes the spans as Chrome trace-event JSON.
    pub fn write_chrome_json(&self, out: &mut dyn Write, device: &str) -> std::io::Result<()> {
        write_chrome_json(&self.spans(), out, device)
    }
}

/// One Chrome trace event: a metadata event (`ph` "M": a process or thread name) or a complete event (`ph` "X": a
/// span with its start and duration). Fields a kind of event does not have are left out.
#[derive(Serialize)]
struct TraceEvent<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'a str>,
    ph: &'static str,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tid: Option<u64>,
    /// Start, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    /// Duration, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<NameArgs>,
}

/// The `args` of a metadata event.
#[derive(Serialize)]
struct NameArgs {
    name: String,
}

/// The whole file: the JSON Object Format of the trace-event format.
#[derive(Serialize)]
struct TraceFile<'a> {
    #[serde(rename = "displayTimeUnit")]
    display_time_unit: &'static str,
    #[serde(rename = "traceEvents")]
    trace_events: Vec<TraceEvent<'a>>,
}

/// Process id of the host's lanes in the trace.
const HOST_PID: u32 = 1;
/// Process id of the device's lanes (one thread per command queue).
const DEVICE_PID: u32 = 2;

impl<'a> TraceEvent<'a> {
    fn metadata(kind: &'a str, pid: u32, tid: Option<u64>, name: String) -> TraceEvent<'a> {
        TraceEvent { name: kind, cat: None, ph: "M", pid, tid, ts: None, dur: None, args: Some(NameArgs { name }) }
    }
}

fn pid_tid(lane: &Lane) -> (u32, u64) {
    match lane {
        Lane::Host { thread, .. } => (HOST_PID, *thread),
        Lane::Queue(q) => (DEVICE_PID, *q as u64),
    }
}

/// Writes `spans` as Chrome trace-event JSON: process 1 is the host (one thread per host thread), process 2 the
/// device (one thread per command queue). Times are microseconds.
pub fn write_chrome_json(spans: &[Span], out: &mut dyn Write, device: &str) -> std::io::Result<()> {
    let mut lanes: Vec<&Lane> = spans.iter().map(|s| &s.lane).collect();
    lanes.sort();
    lanes.dedup();
    let mut events = Vec::with_capacity(2 + lanes.len() + spans.len());
    events.push(TraceEvent::metadata("process_name", HOST_PID, None, "host".into()));
    events.push(TraceEvent::metadata("process_name", DEVICE_PID, None, format!("device {device}")));
    for l in &lanes {
        let (pid, tid) = pid_tid(l);
        let name = match l {
            Lane::Host { name, .. } => name.to_string(),
            Lane::Queue(q) => format!("CQ {q}"),
        };
        events.push(TraceEvent::metadata("thread_name", pid, Some(tid), name));
    }
    for s in spans {
        let (pid, tid) = pid_tid(&s.lane);
        events.push(TraceEvent {
            name: &s.name,
            cat: Some(s.cat),
            ph: "X",
            pid,
            tid: Some(tid),
            ts: Some(s.start_ns as f64 / 1e3),
            dur: Some(s.end_ns.saturating_sub(s.start_ns) as f64 / 1e3),
            args: None,
        });
    }
    let file = TraceFile { display_time_unit: "ns", trace_events: events };
    serde_json::to_writer(&mut *out, &file)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_parses_back_into_the_same_events() {
        let spans = vec![
            Span {
                lane: Lane::Host { thread: 1, name: "main".into() },
                name: "write".into(),
                cat: "api",
                start_ns: 0,
                end_ns: 500,
            },
            Span { lane: Lane::Queue(0), name: "mat\"mul\n".into(), cat: "compute", start_ns: 1000, end_ns: 3500 },
            Span { lane: Lane::Queue(1), name: "read".into(), cat: "transfer", start_ns: 1_234_567, end_ns: 1_234_999 },
        ];
        let mut out = Vec::new();
        write_chrome_json(&spans, &mut out, "emu#\"0").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["displayTimeUnit"], "ns");
        let ev = v["traceEvents"].as_array().unwrap();
        // Two process names, one thread name per lane, one complete event per span.
        assert_eq!(ev.len(), 2 + 3 + 3, "{v}");
        let meta = |name: &str, pid: u64, tid: Option<u64>| {
            ev.iter()
                .find(|e| e["ph"] == "M" && e["name"] == name && e["pid"] == pid && e["tid"].as_u64() == tid)
                .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        };
        assert_eq!(meta("process_name", 1, None).as_deref(), Some("host"));
        assert_eq!(meta("process_name", 2, None).as_deref(), Some("device emu#\"0"));
        assert_eq!(meta("thread_name", 1, Some(1)).as_deref(), Some("main"));
        assert_eq!(meta("thread_name", 2, Some(0)).as_deref(), Some("CQ 0"));
        assert_eq!(meta("thread_name", 2, Some(1)).as_deref(), Some("CQ 1"));
        let x: Vec<&serde_json::Value> = ev.iter().filter(|e| e["ph"] == "X").collect();
        assert_eq!(x.len(), 3);
        for (e, s) in x.iter().zip(&spans) {
            let (pid, tid) = pid_tid(&s.lane);
            assert_eq!(e["name"], &*s.name);
            assert_eq!(e["cat"], s.cat);
            assert_eq!((e["pid"].as_u64(), e["tid"].as_u64()), (Some(pid as u64), Some(tid)));
            assert_eq!(e["ts"].as_f64().unwrap(), s.start_ns as f64 / 1e3);
            assert_eq!(e["dur"].as_f64().unwrap(), (s.end_ns - s.start_ns) as f64 / 1e3);
            assert!(e.get("args").is_none());
        }
        assert_eq!(x[1]["ts"].as_f64(), Some(1.0));
        assert_eq!(x[1]["dur"].as_f64(), Some(2.5));
    }

    #[test]
    fn slots_wrap_and_drop_the_oldest() {
        let p = Profiler::new(1, None);
        let a = p.reserve_slots(0, PROFILE_SLOTS - 10);
        p.expect(0, 1, a, vec![("x".into(), "compute")]);
        let b = p.reserve_slots(0, 20);
        assert_eq!(b, PROFILE_SLOTS - 10);
        assert_eq!(p.lost(), 1, "the first record's slot range was about to be reused");
    }
}
