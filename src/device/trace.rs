//! Metal Trace: capture the program dispatches of a queue once, store them in a trace buffer in device DRAM, and
//! replay them with one `EXEC_TRACE` record (contract §4.2.9).
//!
//! Capture uses the same encoders as live dispatch, writing into a host vector instead of the ring, so the trace
//! holds exactly the bytes live dispatch would have sent.
//!
//! **Ownership** (tt-metal users hit silent corruption here). While a capture is in progress, a [`Ledger`] records,
//! for every device byte its launches touch, how the trace first touched it and which buffer held it then. A launch
//! reads its inputs before it writes its outputs; a generic `Program::run` reads every buffer it is given, and
//! `Program::run_io` also names the outputs it overwrites. So:
//!
//! - a range the trace **writes before it reads** is an intermediate. When the buffer holding it is freed during the
//!   capture, the range becomes the trace's at that moment (`Owner::Trace`), so no allocation — on any queue,
//!   during or after the capture — can land there until the trace is released. Concurrent captures (one per queue)
//!   therefore never share an intermediate: the first to free it owns it, and for any other capture that also wrote
//!   it first, the range stays external (below), so its replay fails with an error instead of racing;
//! - a range the trace **reads first** is external (the trace's input): it stays the caller's, and may be freed and
//!   allocated again during the capture, as tt-metal's guide "Advanced Performance Optimizations for Models" does
//!   ("Trace with Non-Persistent L1 Input": deallocate the input, re-allocate it at the same address, assert);
//! - an intermediate still alive when the capture ends (the trace's output, or one the model kept) stays the
//!   caller's too.
//!
//! At every replay each external range must be held by a live buffer with the spec (shape, element type, layout,
//! memory configuration) and address of the buffer it was captured with; otherwise the replay fails with
//! [`TraceProblem::RangeFreed`] or [`TraceProblem::RangeReused`], naming the range and the buffer expected. The check
//! is redone only when allocations changed since the last one, so replay stays O(1) in the common case.

use super::alloc::{Direction, Owner, RangeAllocator};
use super::buffer::{Buffer, BufferSpec, BufferType};
use super::event::{Event, EventCell, TraceEventRecord};
use super::patch::{Point, TraceBinding, TraceScalar};
use super::queue::{Capture, QueueState, push_capture, push_live};
use super::trace_file::{DeviceShape, SavedBinding, SavedKernel, SavedScalar, TraceFile};
use super::wait::EventMark;
use super::{Device, DeviceInner, Memories, TRACE_PAGE};
use crate::error::{Error, RangeOccupant, Result, TraceProblem};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use ttdrv_contract::records::{self, ExecTrace, Linear, Paged, RecordFlags, RecordMeta, WaitEntry};
use ttdrv_contract::{Memory, seq_reached};

/// The contract minor version that allows events inside a trace (contract §4.2.9, §9).
const EVENTS_IN_TRACE_MINOR: u16 = 4;

/// The events a trace records and waits for (shared, so a replay takes them without copying).
#[derive(Debug, Default)]
struct TraceEvents {
    records: Vec<TraceEventRecord>,
    waits: Vec<EventCell>,
}

/// A trace's buffer: in the reserved trace region, or (on demand) in ordinary DRAM allocated top-down. Either way
/// its allocator blocks are owned by the trace, so release frees it by owner.
#[derive(Clone, Copy, Debug)]
struct TraceBuffer {
    base: u64,
}

#[derive(Debug)]
struct Captured {
    queue: u16,
    epoch: u32,
    len: u64,
    launches: u32,
    /// Bytes the trace buffer needs, device total.
    buffer_bytes: u64,
    buffer: Option<TraceBuffer>,
    /// The external ranges: each must be held by its binding's buffer (same spec, same address) at replay.
    must_live: Vec<Requirement>,
    /// Its external bindings, in the order `trace_save` names them, and its named scalars (`patch.rs`).
    bindings: Vec<BindingSlot>,
    /// The address words that point into the ranges it owns (record offset, memory, value), so a loader can move
    /// those ranges; `None` if a launch did not declare its address words (then nothing it owns can move).
    owned_words: Option<Vec<(u32, BufferType, u32)>>,
    scalars: Vec<ScalarSlot>,
    /// The last replay on each queue (since the last patch that ordered itself after it): a patch must not race one
    /// still running on another queue.
    replays: Vec<Replay>,
    /// Record offsets of words a patch failed to write whole (it stopped after enqueueing some of its writes): the
    /// device may hold old or new values there. Replays are refused until the next patch rewrites them from `records`.
    torn: Vec<u32>,
    /// The queue whose ring holds the rest of that patch's writes: the repair must follow them there.
    torn_queue: u16,
    /// Allocator generations (DRAM, L1, L1_SMALL) at the last successful check.
    checked: Option<[u64; 3]>,
    /// Profile names of the captured records that are profiled, in order (profiling only).
    names: Vec<crate::profile::SpanLabel>,
    /// The events it records and waits for.
    events: Arc<TraceEvents>,
    /// Its life token: the events it owns are free again once this is dropped (release, or forgotten captures).
    _life: Arc<()>,
    /// Its records, kept on the host for `trace_save`.
    records: Arc<Vec<u8>>,
    /// Completion of the last write into the trace buffer — its upload on the capture queue (which also follows the
    /// uploads of the kernel images the trace launches), or the last patch — until a replay has seen it done.
    uploaded: Option<EventMark>,
}

/// An external binding of a captured trace: the buffer bound now, and the words that hold its address.
#[derive(Clone, Debug)]
struct BindingSlot {
    name: String,
    output: bool,
    buffer: BufferRef,
    points: Vec<Point>,
    rebindable: bool,
    /// Not rebindable because another buffer used its range during the capture.
    aliased: bool,
}

/// A named scalar of a captured trace: its value and the words that hold it.
#[derive(Clone, Debug)]
struct ScalarSlot {
    name: String,
    kind: super::patch::ScalarKind,
    value: u32,
    offs: Vec<u32>,
}

/// A replay enqueued on `queue`: it is complete once an event id after `after` has completed there.
#[derive(Clone, Copy, Debug)]
struct Replay {
    queue: u16,
    after: u32,
    epoch: u32,
}

#[derive(Debug)]
enum State {
    Capturing { queue: u16 },
    Captured(Box<Captured>),
}

/// The traces of a device.
#[derive(Default)]
pub(crate) struct TraceTable {
    next_id: u32,
    traces: HashMap<u32, State>,
}

impl TraceTable {
    /// Device reset: trace buffers in DRAM are gone; replays fail until the traces are captured again. Captures in
    /// progress are dropped with their queues' state (the reset clears it), so they are forgotten here too, with
    /// the ranges they had come to own: left behind, they could be neither ended nor released.
    pub fn invalidate_all(&mut self, mem: &Mutex<Memories>) {
        let mut m = mem.lock().unwrap_or_else(|e| e.into_inner());
        for (&tid, s) in &self.traces {
            if matches!(s, State::Capturing { .. }) {
                m.captures.remove(&tid);
                for ty in BufferType::ALL {
                    m.for_type(ty).free_owner(Owner::Trace(tid));
                }
            }
        }
        drop(m);
        self.traces.retain(|_, s| matches!(s, State::Captured(_)));
        for s in self.traces.values_mut() {
            if let State::Captured(c) = s {
                c.epoch = u32::MAX;
            }
        }
    }
}

/// What is known about a captured trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceInfo {
    /// Bytes of records in the trace.
    pub bytes: u64,
    /// Program launches in the trace.
    pub launches: u32,
    /// Bytes of trace region (device total) the trace needs: size `trace_region_size` at least this.
    pub region_bytes: u64,
    /// The queue it was captured on.
    pub queue: u16,
    /// Whether its buffer is in device DRAM (false when the region was too small).
    pub stored: bool,
    /// Event records inside the trace (each replay records them again, with fresh ids).
    pub event_records: u32,
    /// Event waits inside the trace (each replay waits for the events' latest records before it).
    pub event_waits: u32,
    /// External bindings: the buffers it touches and does not own, which must be live at each replay and which
    /// `trace_load` takes (one per buffer, in the saved file's order).
    pub bindings: u32,
    /// Device ranges it owns (its intermediates, freed during the capture or claimed by `trace_load`).
    pub owned_ranges: u32,
    /// Bytes of those ranges, summed over their banks or cores' offsets (end - start of each range).
    pub owned_bytes: u64,
    /// External bindings that can be rebound ([`Device::trace_rebind`]; [`Device::trace_bindings`] lists them).
    pub rebindable: u32,
    /// Named scalars ([`Device::trace_set_scalar`]; [`Device::trace_scalars`] lists them).
    pub scalars: u32,
    /// Runtime-argument words a patch can rewrite: the address words of the rebindable bindings and the scalars'
    /// words.
    pub patchable_words: u32,
}

/// How a launch touches a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// It may read it (an input; also any buffer of a generic `Program::run`).
    Read,
    /// It overwrites what later launches read from it, without reading it first (an output).
    Write,
}

/// A buffer as a captured launch used it: what must hold its range at replay if the trace does not own it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BufferRef {
    id: u64,
    addr: u64,
    spec: BufferSpec,
    footprint: u64,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    end: u64,
    first: Access,
    buffer: BufferRef,
}

/// What a capture in progress knows about the device ranges its launches touch, per memory: for each byte, how the
/// trace first touched it and the buffer that held it then (disjoint ranges, keyed by start).
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    ranges: [BTreeMap<u64, Entry>; 3],
    /// Buffers whose ranges overlap a range another buffer touched first (one freed and another allocated over it
    /// during the capture): their address words are mixed with the other's, so neither can be rebound alone.
    aliased: Vec<u64>,
}

fn slot(ty: BufferType) -> usize {
    match ty {
        BufferType::Dram => 0,
        BufferType::L1 => 1,
        BufferType::L1Small => 2,
    }
}

impl Ledger {
    /// Records that a launch touches `b` by `access`: the parts of its range the trace has not touched before get
    /// this as their first access.
    fn note(&mut self, b: &Buffer, access: Access) {
        let (ty, s, e) = b.range();
        let map = &mut self.ranges[slot(ty)];
        let mut gaps = Vec::new();
        let mut cur = s;
        let first = map.range(..=s).next_back().map(|(&k, v)| (k, v.end, v.buffer.id));
        let later = map.range(s.saturating_add(1)..e).map(|(&k, v)| (k, v.end, v.buffer.id));
        for (ks, ke, id) in first.into_iter().chain(later) {
            if ke <= cur || ks >= e {
                continue;
            }
            if id != b.id {
                self.aliased.extend([id, b.id]);
            }
            if ks > cur {
                gaps.push((cur, ks));
            }
            cur = cur.max(ke);
        }
        if cur < e {
            gaps.push((cur, e));
        }
        let buffer = BufferRef { id: b.id, addr: b.addr, spec: b.spec, footprint: b.footprint };
        for (gs, ge) in gaps {
            map.insert(gs, Entry { end: ge, first: access, buffer });
        }
    }
}

/// An external range of a captured trace: at replay, `buffer`'s spec must hold it at `buffer`'s address.
#[derive(Clone, Copy, Debug)]
struct Requirement {
    memory: BufferType,
    start: u64,
    end: u64,
    buffer: BufferRef,
    /// Its binding (index into `Captured::bindings`).
    binding: usize,
    /// The trace writes it before reading it (its output, or an intermediate kept alive), rather than reading it.
    output: bool,
}

impl Memories {
    /// The allocator of `ty` and the ledgers of the captures in progress, borrowed together.
    fn parts(&mut self, ty: BufferType) -> (&mut RangeAllocator, &mut BTreeMap<u32, Ledger>) {
        let a = match ty {
            BufferType::Dram => &mut self.dram,
            BufferType::L1 => &mut self.l1,
            BufferType::L1Small => &mut self.l1_small,
        };
        (a, &mut self.captures)
    }

    /// Frees buffer `id`'s range `[s, e)` of memory `ty`. The parts a capture in progress wrote before reading (its
    /// intermediates) become that trace's now, so nothing allocated later can land there.
    pub(crate) fn free_buffer(&mut self, ty: BufferType, s: u64, e: u64, id: u64) {
        self.specs.remove(&id);
        let (alloc, captures) = self.parts(ty);
        if !alloc.free(s, Owner::Buffer(id)) {
            return;
        }
        for (&tid, ledger) in captures.iter_mut() {
            let map = &mut ledger.ranges[slot(ty)];
            for (&k, en) in map.range_mut(s..e) {
                if en.first != Access::Write || en.buffer.id != id {
                    continue;
                }
                if alloc.classify(k, en.end).iter().all(|p| p.2.is_none()) {
                    alloc.claim(k, en.end, Owner::Trace(tid));
                } else {
                    // Another capture in progress wrote it first too and already owns it: this trace must not share
                    // it, so for this one it stays external, and its replay fails naming the range and the buffer.
                    en.first = Access::Read;
                }
            }
        }
    }

    /// Records a captured launch of trace `tid` that reads `inputs` and overwrites `outputs`.
    pub(crate) fn note_launch(&mut self, tid: u32, inputs: &[&Buffer], outputs: &[&Buffer]) {
        if let Some(l) = self.captures.get_mut(&tid) {
            // A launch reads before it writes: a buffer in both lists is read first.
            for b in inputs {
                l.note(b, Access::Read);
            }
            for b in outputs {
                l.note(b, Access::Write);
            }
        }
    }

    /// What holds `r`'s range now, if it is not the buffer the trace was captured with (same spec, same address).
    fn check(&self, r: &Requirement) -> Option<Option<RangeOccupant>> {
        let specs = &self.specs;
        let holds = |bs: u64, id: u64| bs == r.buffer.addr && specs.get(&id) == Some(&r.buffer.spec);
        let a = match r.memory {
            BufferType::Dram => &self.dram,
            BufferType::L1 => &self.l1,
            BufferType::L1Small => &self.l1_small,
        };
        if let Some((bs, be, Owner::Buffer(id))) = a.block_at(r.start)
            && be >= r.end
            && holds(bs, id)
        {
            return None;
        }
        // The first piece of the range held by anything else names the problem; `None` inside is "nothing".
        for (ps, _, owner) in a.classify(r.start, r.end) {
            let occupant = match owner {
                None => None,
                Some(Owner::Buffer(id)) => {
                    let (bs, _, _) = a.block_at(ps).unwrap_or((ps, ps, Owner::Buffer(id)));
                    if holds(bs, id) {
                        continue;
                    }
                    specs.get(&id).map(|spec| RangeOccupant::Buffer { spec: *spec, address: bs })
                }
                Some(Owner::Trace(t)) => Some(RangeOccupant::Trace(t)),
                Some(Owner::Driver) => Some(RangeOccupant::Driver),
            };
            return Some(occupant);
        }
        Some(None)
    }
}

fn gens(m: &Memories) -> [u64; 3] {
    [m.dram.generation(), m.l1.generation(), m.l1_small.generation()]
}

impl DeviceInner {
    fn trace_error(&self, tid: u32, call: impl Into<String>, problem: TraceProblem) -> Error {
        Error::Trace { trace: tid, call: call.into(), problem, device: self.info.name.clone() }
    }

    fn trace_unknown(&self, tid: u32, call: impl Into<String>) -> Error {
        self.trace_error(tid, call, TraceProblem::NotFound)
    }

    pub(crate) fn begin_trace_capture(&self, cq: u16) -> Result<u32> {
        let mut st = self.lock_queue(cq)?;
        st.forbid_capture("begin_trace_capture")?;
        let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        t.next_id = t.next_id.wrapping_add(1).max(1);
        while t.traces.contains_key(&t.next_id) {
            t.next_id = t.next_id.wrapping_add(1).max(1);
        }
        let tid = t.next_id;
        t.traces.insert(tid, State::Capturing { queue: cq });
        self.mem.lock().unwrap_or_else(|e| e.into_inner()).captures.insert(tid, Ledger::default());
        st.capture = Some(Capture { trace_id: tid, ..Default::default() });
        Ok(tid)
    }

    pub(crate) fn end_trace_capture(&self, tid: u32, cq: u16) -> Result<()> {
        let mut st = self.lock_queue(cq)?;
        match &st.capture {
            Some(c) if c.trace_id == tid => {}
            Some(c) => {
                let problem = TraceProblem::OtherCapture { queue: cq, capturing: c.trace_id };
                return Err(self.trace_error(tid, format!("end_trace_capture({tid}) on queue {cq}"), problem));
            }
            None => {
                let call = format!("end_trace_capture({tid}) on queue {cq}");
                let t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
                return Err(match t.traces.get(&tid) {
                    Some(State::Capturing { queue }) => {
                        self.trace_error(tid, call, TraceProblem::Capturing { queue: *queue })
                    }
                    Some(State::Captured(_)) => self.trace_error(tid, call, TraceProblem::AlreadyEnded),
                    None => self.trace_unknown(tid, call),
                });
            }
        }
        let cap = st.capture.take().expect("checked above");
        // Pin the trace's dependencies and find it a buffer, under the memory lock: the intermediates it owns by
        // now stay its own; everything else it touched is external and must be there at each replay.
        let aliased;
        let (buffer, mut must_live, alloc_err, buffer_bytes) = {
            let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
            let ledger = m.captures.remove(&tid).unwrap_or_default();
            aliased = ledger.aliased.clone();
            let mut must_live: Vec<Requirement> = Vec::new();
            for ty in BufferType::ALL {
                for (&s, en) in &ledger.ranges[slot(ty)] {
                    let output = en.first == Access::Write;
                    if output && m.for_type(ty).classify(s, en.end).iter().all(|p| p.2 == Some(Owner::Trace(tid))) {
                        continue;
                    }
                    match must_live.last_mut() {
                        Some(l)
                            if l.memory == ty && l.end == s && l.buffer.id == en.buffer.id && l.output == output =>
                        {
                            l.end = en.end
                        }
                        _ => must_live.push(Requirement {
                            memory: ty,
                            start: s,
                            end: en.end,
                            buffer: en.buffer,
                            binding: 0,
                            output,
                        }),
                    }
                }
            }
            let (buffer, err, bytes) = self.alloc_trace_buffer(&mut m, tid, cap.bytes.len() as u64);
            (buffer, must_live, err, bytes)
        };
        let points = cap.points;
        let owned_words = (!points.any_opaque).then(|| {
            let external: Vec<u64> = must_live.iter().map(|r| r.buffer.id).collect();
            points.addrs.iter().filter(|a| !external.contains(&a.0)).map(|a| (a.1.off, a.2, a.3)).collect()
        });
        let (bindings, scalars) = patch_slots(&mut must_live, points, &aliased);
        let records = Arc::new(cap.bytes);
        let uploaded = match buffer {
            Some(b) => Some(self.upload_trace(&mut st, b, &records)?),
            None => None,
        };
        let captured = Captured {
            queue: cq,
            epoch: self.epoch.load(Ordering::Acquire),
            len: records.len() as u64,
            launches: cap.launches,
            buffer_bytes,
            buffer,
            must_live,
            bindings,
            owned_words,
            scalars,
            replays: Vec::new(),
            torn: Vec::new(),
            torn_queue: 0,
            // External ranges may already be held by something else (an input freed during the capture and not
            // allocated again): the first replay checks.
            checked: None,
            names: cap.names,
            events: Arc::new(TraceEvents { records: cap.events, waits: cap.waits }),
            _life: cap.life,
            records,
            uploaded,
        };
        self.traces.lock().unwrap_or_else(|e| e.into_inner()).traces.insert(tid, State::Captured(Box::new(captured)));
        match alloc_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Finds trace `tid` a buffer for `len` bytes of records, in the trace region or (on demand) in DRAM; returns
    /// it, or the error saying why not, and the bytes (device total) it needs.
    fn alloc_trace_buffer(&self, m: &mut Memories, tid: u32, len: u64) -> (Option<TraceBuffer>, Option<Error>, u64) {
        let banks = self.info.dram_banks as u64;
        let pages = len.div_ceil(TRACE_PAGE);
        let per_bank = pages.div_ceil(banks).max(1) * TRACE_PAGE;
        let buffer_bytes = per_bank * banks;
        let (buffer, err) = if self.params.trace_buffers_on_demand {
            match m.dram.alloc(per_bank, TRACE_PAGE, Direction::TopDown, Owner::Trace(tid)) {
                Ok(base) => (Some(TraceBuffer { base }), None),
                Err(f) => (
                    None,
                    Some(Error::OutOfDeviceMemory {
                        purpose: format!(
                            "trace {tid}'s {buffer_bytes}B buffer (trace_buffers_on_demand; the trace stays \
                             captured: query its size, or release it)"
                        ),
                        memory: BufferType::Dram,
                        requested: f.asked,
                        free: f.free,
                        largest_free: f.largest,
                        owned_by_traces: f.traced,
                        device: self.info.name.clone(),
                    }),
                ),
            }
        } else {
            match m.trace.alloc(per_bank, TRACE_PAGE, Direction::BottomUp, Owner::Trace(tid)) {
                Ok(base) => (Some(TraceBuffer { base }), None),
                Err(f) => {
                    let region = self.trace_per_bank * banks;
                    // The free space in whole per-bank blocks: what one more buffer could use.
                    let free = f.largest * banks;
                    (
                        None,
                        Some(Error::TraceRegionTooSmall {
                            trace: tid,
                            needed: buffer_bytes,
                            free,
                            region,
                            owned_by_traces: region - f.free * banks,
                            device: self.info.name.clone(),
                        }),
                    )
                }
            }
        };
        (buffer, err, buffer_bytes)
    }

    /// Writes `records` into trace buffer `b` on queue `st` (interleaved pages over all banks, contract §4.2.9);
    /// returns the event after the writes, which a replay on another queue must wait for.
    fn upload_trace(&self, st: &mut QueueState, b: TraceBuffer, records: &[u8]) -> Result<EventMark> {
        let pages = (records.len() as u64).div_ceil(TRACE_PAGE);
        let mut bytes = records.to_vec();
        bytes.resize((pages * TRACE_PAGE) as usize, 0);
        let max_pages = ((st.issuer.as_ref().map_or(0, |i| i.rings().sizes().max_record()) - records::PAYLOAD_OFFSET)
            as u64
            / TRACE_PAGE)
            .max(1);
        let mut p = 0u64;
        while p < pages {
            let n = max_pages.min(pages - p);
            let x = Paged {
                mem: Memory::Dram,
                page_size: TRACE_PAGE as u32,
                base: b.base,
                page_stride: TRACE_PAGE as u32,
                start_page: p as u32,
                num_pages: n as u32,
            };
            let chunk = &bytes[(p * TRACE_PAGE) as usize..((p + n) * TRACE_PAGE) as usize];
            self.emit(
                st,
                records::write_linear_len(chunk.len()),
                RecordFlags::empty(),
                "trace upload",
                "transfer",
                |slot, m| {
                    records::encode_write_paged(slot, m, &x);
                    slot.put_bytes(records::PAYLOAD_OFFSET, chunk);
                    records::pad_payload(slot, chunk.len());
                },
            )?;
            let (issuer, t) = st.live()?;
            issuer.publish(t.as_ref());
            p += n;
        }
        // A replay on another queue must not fetch the trace before these writes have landed.
        self.record_event_locked(st, "trace upload")
    }

    pub(crate) fn execute_trace(&self, tid: u32, cq: u16, blocking: bool) -> Result<()> {
        let _s = self.span("execute_trace", "api");
        let call = || format!("execute_trace({tid})");
        let mut st = self.lock_queue(cq)?;
        if st.capture.is_some() {
            st.forbid_capture(&call())?;
        }
        let plan = {
            let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
            let c = self.captured_mut(&mut t, tid, &call)?;
            self.plan_replay(&st, c, tid, cq)?
        };
        self.push_replay(&mut st, tid, cq, plan)?;
        if blocking {
            let ev = self.record_event_flags(&mut st, true, "blocking execute_trace")?;
            drop(st);
            self.wait_event(&ev, self.params.timeout, "blocking execute_trace")?;
        }
        Ok(())
    }

    /// The captured trace `tid` of the table `t`, or the error saying why there is none.
    fn captured_mut<'a>(&self, t: &'a mut TraceTable, tid: u32, call: &dyn Fn() -> String) -> Result<&'a mut Captured> {
        match t.traces.get_mut(&tid) {
            Some(State::Captured(c)) => {
                if c.epoch != self.epoch.load(Ordering::Acquire) {
                    return Err(self.trace_error(tid, call(), TraceProblem::LostInReset));
                }
                Ok(c)
            }
            Some(State::Capturing { queue }) => {
                let problem = TraceProblem::Capturing { queue: *queue };
                Err(self.trace_error(tid, call(), problem))
            }
            None => Err(self.trace_unknown(tid, call())),
        }
    }

    /// Checks that trace `c` can be replayed on queue `st` now and prepares the replay: its `EXEC_TRACE` record,
    /// wait table and event base. Notes the replay, so that a patch on another queue orders itself after it (the
    /// caller pushes the plan next, holding the queue: the events the replay will publish are already counted).
    fn plan_replay(&self, st: &QueueState, c: &mut Captured, tid: u32, cq: u16) -> Result<ReplayPlan> {
        let call = || format!("execute_trace({tid})");
        let Some(b) = c.buffer else {
            return Err(Error::TraceNotStored { trace: tid, needed: c.buffer_bytes });
        };
        if !c.torn.is_empty() {
            let problem = TraceProblem::PatchIncomplete { words: c.torn.len() as u32, queue: c.torn_queue };
            return Err(self.trace_error(tid, call(), problem));
        }
        // Re-check the trace's dependencies only when allocations changed since the last check: replay stays O(1) in
        // the common case.
        {
            let m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
            let now = gens(&m);
            if c.checked != Some(now) {
                for r in &c.must_live {
                    let Some(found) = m.check(r) else { continue };
                    let (memory, start, end, output) = (r.memory, r.start, r.end, r.output);
                    let (expected, address) = (Box::new(r.buffer.spec), r.buffer.addr);
                    let problem = match found {
                        None => TraceProblem::RangeFreed { memory, start, end, expected, address, output },
                        Some(found) => {
                            let found = Box::new(found);
                            TraceProblem::RangeReused { memory, start, end, expected, address, output, found }
                        }
                    };
                    return Err(self.trace_error(tid, call(), problem));
                }
                c.checked = Some(now);
            }
        }
        // The trace buffer was last written on some queue (its upload, or a patch): a replay there follows it in queue
        // order, a replay on another queue must wait for it on the device until it is known done.
        if let Some(u) = c.uploaded
            && self.event_done(&u)?
        {
            c.uploaded = None;
        }
        let wait = c.uploaded.filter(|u| u.queue != cq);
        // The waits inside the trace wait for their events' latest records, as of this call (contract §4.2.8).
        let mut table = Vec::with_capacity(c.events.waits.len());
        for (i, cell) in c.events.waits.iter().enumerate() {
            let m = cell.lock().unwrap_or_else(|e| e.into_inner()).mark;
            let problem = match m {
                None => TraceProblem::WaitNeverRecorded { index: i as u32 },
                Some(m) if m.epoch != self.epoch.load(Ordering::Acquire) => {
                    TraceProblem::WaitLostInReset { index: i as u32 }
                }
                Some(m) => {
                    table.push(WaitEntry { queue: m.queue, event_id: m.id });
                    continue;
                }
            };
            return Err(self.trace_error(tid, call(), problem));
        }
        // Fresh ids for the events recorded inside: this replay publishes `base + local` (contract §4.2.7).
        let event_base = st.next_event;
        let n_events = c.events.records.len() as u32;
        let x = ExecTrace {
            page_size: TRACE_PAGE as u32,
            base: b.base,
            trace_len: c.len,
            event_base,
            ..Default::default()
        };
        let after = if n_events > 0 { event_base.wrapping_add(n_events) } else { event_base };
        let epoch = self.epoch.load(Ordering::Acquire);
        match c.replays.iter_mut().find(|r| r.queue == cq) {
            Some(r) => *r = Replay { queue: cq, after, epoch },
            None => c.replays.push(Replay { queue: cq, after, epoch }),
        }
        Ok(ReplayPlan { x, table, wait, names: c.names.clone(), events: c.events.clone() })
    }

    /// Pushes a planned replay of trace `tid` onto queue `st` and rings the doorbell.
    fn push_replay(&self, st: &mut QueueState, tid: u32, cq: u16, plan: ReplayPlan) -> Result<()> {
        let ReplayPlan { x, table, wait, names: inner_names, events } = plan;
        let n_events = events.records.len() as u32;
        let len = records::exec_trace_len(table.len());
        if let Some(u) = wait {
            self.emit(st, records::FIXED_LEN, RecordFlags::empty(), "wait (trace write)", "event", |slot, m| {
                records::encode_event_wait(slot, m, u.queue, u.id)
            })?;
        }
        let encode = |slot: &mut records::RecordSlot<'_>, m| records::encode_exec_trace(slot, m, &x, &table);
        match &self.profiler {
            // One slot for the replay, then one per profiled record inside (contract §4.3).
            Some(p) => {
                let mut names = vec![(std::sync::Arc::<str>::from(format!("trace {tid}")), "trace")];
                names.extend(inner_names);
                let base = p.reserve_slots(cq, names.len() as u32);
                let meta = RecordMeta { flags: RecordFlags::PROFILE, tag: 0, profile_slot: base };
                let tag = push_live(st, len, meta, &self.wait_room(cq), encode)?;
                p.expect(cq, tag, base, names);
            }
            None => {
                push_live(st, len, RecordMeta::default(), &self.wait_room(cq), encode)?;
            }
        }
        if n_events > 0 {
            let event_base = x.event_base;
            st.next_event = event_base.wrapping_add(n_events);
            let reads = {
                let c = self.queues[cq as usize].compl.lock().unwrap_or_else(|e| e.into_inner());
                c.as_ref().map_or(0, |c| c.expected())
            };
            let epoch = self.epoch.load(Ordering::Acquire);
            // The events now refer to this replay's records; in capture order, so the last record of an event
            // recorded twice wins. Before the doorbell, as for any event record (EVENT_DONE is checked against it).
            for r in &events.records {
                let id = event_base.wrapping_add(r.local);
                let mark = EventMark { queue: cq, id, reads, epoch, notify: r.notify };
                r.cell.lock().unwrap_or_else(|e| e.into_inner()).mark = Some(mark);
            }
            let last = st.next_event;
            st.live()?.0.rings().note_event_issued(last);
        }
        let (issuer, t) = st.live()?;
        issuer.publish(t.as_ref());
        Ok(())
    }

    pub(crate) fn release_trace(&self, tid: u32) -> Result<()> {
        let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        match t.traces.get(&tid) {
            Some(State::Captured(_)) => {}
            Some(State::Capturing { queue }) => {
                let problem = TraceProblem::Capturing { queue: *queue };
                return Err(self.trace_error(tid, format!("release_trace({tid})"), problem));
            }
            None => return Err(self.trace_unknown(tid, format!("release_trace({tid})"))),
        }
        t.traces.remove(&tid);
        let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        for ty in BufferType::ALL {
            m.for_type(ty).free_owner(Owner::Trace(tid));
        }
        m.trace.free_owner(Owner::Trace(tid));
        Ok(())
    }

    pub(crate) fn trace_info(&self, tid: u32) -> Result<TraceInfo> {
        let t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        match t.traces.get(&tid) {
            Some(State::Captured(c)) => {
                let mut ids: Vec<u64> = c.must_live.iter().map(|r| r.buffer.id).collect();
                ids.sort_unstable();
                ids.dedup();
                let owned = self.owned_ranges(tid, c);
                Ok(TraceInfo {
                    bytes: c.len,
                    launches: c.launches,
                    region_bytes: c.buffer_bytes,
                    queue: c.queue,
                    stored: c.buffer.is_some(),
                    event_records: c.events.records.len() as u32,
                    event_waits: c.events.waits.len() as u32,
                    bindings: ids.len() as u32,
                    owned_ranges: owned.len() as u32,
                    owned_bytes: owned.iter().map(|&(_, s, e)| e - s).sum(),
                    rebindable: c.bindings.iter().filter(|b| b.rebindable).count() as u32,
                    scalars: c.scalars.len() as u32,
                    patchable_words: (c.bindings.iter().filter(|b| b.rebindable).map(|b| b.points.len()).sum::<usize>()
                        + c.scalars.iter().map(|s| s.offs.len()).sum::<usize>())
                        as u32,
                })
            }
            Some(State::Capturing { queue }) => {
                Err(self.trace_error(tid, format!("trace_info({tid})"), TraceProblem::Capturing { queue: *queue }))
            }
            None => Err(self.trace_unknown(tid, format!("trace_info({tid})"))),
        }
    }
}

impl Captured {
    /// Binds `buffer` to binding `i` in the driver's books: its external ranges move with it (same spec, so the same
    /// layout at another address), and the next replay checks them again. The words are the caller's to write.
    fn bind(&mut self, i: usize, buffer: BufferRef) {
        let old = std::mem::replace(&mut self.bindings[i].buffer, buffer);
        for r in self.must_live.iter_mut().filter(|r| r.binding == i) {
            r.start = r.start - old.addr + buffer.addr;
            r.end = r.end - old.addr + buffer.addr;
            r.buffer = buffer;
        }
        self.checked = None;
    }
}

/// A replay checked and ready to push.
struct ReplayPlan {
    x: ExecTrace,
    table: Vec<WaitEntry>,
    wait: Option<EventMark>,
    names: Vec<crate::profile::SpanLabel>,
    events: Arc<TraceEvents>,
}

/// Groups a finished capture's external ranges into bindings (one per buffer, in range order: by memory, then
/// address — the order `trace_save` writes), pointing each range at its binding, and its named scalar words into
/// scalars (by name, in capture order).
fn patch_slots(
    must_live: &mut [Requirement],
    points: super::patch::CapturePoints,
    aliased: &[u64],
) -> (Vec<BindingSlot>, Vec<ScalarSlot>) {
    let mut bindings: Vec<BindingSlot> = Vec::new();
    for r in must_live.iter_mut() {
        match bindings.iter().position(|b| b.buffer.id == r.buffer.id) {
            Some(i) => {
                bindings[i].output &= r.output;
                r.binding = i;
            }
            None => {
                r.binding = bindings.len();
                bindings.push(BindingSlot {
                    name: String::new(),
                    output: r.output,
                    buffer: r.buffer,
                    points: Vec::new(),
                    rebindable: !points.opaque.contains(&r.buffer.id) && !aliased.contains(&r.buffer.id),
                    aliased: aliased.contains(&r.buffer.id),
                });
            }
        }
    }
    let (mut inputs, mut outputs) = (0, 0);
    for b in &mut bindings {
        let n = if b.output { &mut outputs } else { &mut inputs };
        b.name = format!("{}{n}", if b.output { "output" } else { "input" });
        *n += 1;
        b.points = points.addrs.iter().filter(|a| a.0 == b.buffer.id).map(|a| a.1).collect();
    }
    let mut scalars: Vec<ScalarSlot> = Vec::new();
    for (name, kind, value, off) in points.scalars {
        match scalars.iter_mut().find(|s| s.name == name) {
            Some(s) => s.offs.push(off),
            None => scalars.push(ScalarSlot { name, kind, value, offs: vec![off] }),
        }
    }
    (bindings, scalars)
}

/// A change to a captured trace ([`DeviceInner::patch_trace`]).
pub(crate) enum PatchOp<'a> {
    /// Bind buffer `.1` to binding `.0`.
    Rebind(usize, &'a Buffer),
    /// Set the scalar named `.0` to `.1`.
    Scalar(&'a str, u32),
}

impl DeviceInner {
    /// The words of `c` that `op` rewrites, with their new values, after checking it. Changes nothing.
    fn patch_words(&self, c: &Captured, tid: u32, op: &PatchOp<'_>) -> Result<Vec<(u32, u32)>> {
        match *op {
            PatchOp::Rebind(i, buf) => {
                let n = c.bindings.len();
                let Some(b) = c.bindings.get(i) else {
                    return Err(Error::InvalidArgument(format!(
                        "trace {tid} has {n} external bindings (0..{n}); binding {i} does not exist. List them with \
                         trace_bindings"
                    )));
                };
                buf.check_device(self)?;
                if buf.spec != b.buffer.spec || buf.footprint != b.buffer.footprint {
                    return Err(Error::InvalidArgument(format!(
                        "binding {} of trace {tid} takes a {} buffer; the one given is {}. Rebind it to a buffer of \
                         the captured spec (shape, element type, layout, memory configuration)",
                        b.name, b.buffer.spec, buf.spec
                    )));
                }
                if !b.rebindable {
                    let problem = TraceProblem::NotRebindable { binding: b.name.clone(), aliased: b.aliased };
                    return Err(self.trace_error(tid, format!("trace_rebind({tid}, {})", b.name), problem));
                }
                let mut words = Vec::with_capacity(b.points.len());
                for p in &b.points {
                    let v = u32::try_from(buf.addr).ok().and_then(|a| a.checked_add(p.delta));
                    let Some(v) = v else {
                        return Err(Error::InvalidArgument(format!(
                            "binding {} of trace {tid}: the buffer at {:#x} puts an address word past 32 bits; \
                             rebind it to a buffer at a lower address",
                            b.name, buf.addr
                        )));
                    };
                    words.push((p.off, v));
                }
                Ok(words)
            }
            PatchOp::Scalar(name, value) => {
                let Some(s) = c.scalars.iter().find(|s| s.name == name) else {
                    let names: Vec<&str> = c.scalars.iter().map(|s| s.name.as_str()).collect();
                    return Err(Error::InvalidArgument(format!(
                        "trace {tid} has no scalar named {name:?}; its scalars are [{}] (trace_scalars lists them \
                         with their values)",
                        names.join(", ")
                    )));
                };
                s.kind.check(value).map_err(|m| {
                    Error::InvalidArgument(format!("scalar {name} of trace {tid} cannot be set to that value: {m}"))
                })?;
                Ok(s.offs.iter().map(|&o| (o, value)).collect())
            }
        }
    }

    /// Applies `ops` to trace `c` on queue `st`: checks every op first (nothing changes when one fails), orders the
    /// writes after every replay still running on another queue (by an event of `after`, or refuses), writes the
    /// patched words into the trace buffer with device-side writes on `st`, and updates the driver's copy.
    fn patch_locked(
        &self,
        st: &mut QueueState,
        c: &mut Captured,
        tid: u32,
        ops: &[PatchOp<'_>],
        after: &[&Event],
        call: &str,
    ) -> Result<()> {
        let cq = st.id;
        st.forbid_capture(call)?;
        let mut words = Vec::new();
        for (k, op) in ops.iter().enumerate() {
            if let PatchOp::Rebind(i, _) = *op
                && ops[..k].iter().any(|o| matches!(*o, PatchOp::Rebind(j, _) if j == i))
            {
                return Err(Error::InvalidArgument(format!("{call}: binding {i} is given twice; give it once")));
            }
            words.extend(self.patch_words(c, tid, op)?);
        }
        for e in after {
            if !std::ptr::eq(Arc::as_ptr(&e.dev), self) {
                return Err(Error::WrongDevice {
                    object: "event",
                    object_device: e.dev.info.name.clone(),
                    device: self.info.name.clone(),
                });
            }
        }
        // Order after the replays on other queues: done ones need nothing, running ones an event recorded after them.
        let epoch = self.epoch.load(Ordering::Acquire);
        let mut waits: Vec<(u16, u32)> = Vec::new();
        for r in c.replays.iter().filter(|r| r.queue != cq && r.epoch == epoch) {
            let next = r.after.wrapping_add(1);
            let m = EventMark { queue: r.queue, id: next, reads: 0, epoch, notify: false };
            if self.event_done(&m)? {
                continue;
            }
            let ordered = after.iter().find_map(|e| {
                let m = e.cell.lock().unwrap_or_else(|e| e.into_inner()).mark?;
                (m.queue == r.queue && m.epoch == epoch && seq_reached(m.id, next)).then_some((m.queue, m.id))
            });
            match ordered {
                Some(w) => waits.push(w),
                None => {
                    return Err(self.trace_error(tid, call, TraceProblem::PatchRacesReplay { queue: r.queue }));
                }
            }
        }
        if let Some(u) = c.uploaded
            && u.queue != cq
            && !self.event_done(&u)?
        {
            waits.push((u.queue, u.id));
        }
        for &(q, id) in &waits {
            self.emit(st, records::FIXED_LEN, RecordFlags::empty(), "wait (trace patch)", "event", |slot, m| {
                records::encode_event_wait(slot, m, q, id)
            })?;
        }
        self.write_trace_words(st, c, tid, &words)?;
        // The replays on other queues are done or ordered before these writes, and whatever comes next on another
        // queue orders itself after the writes: only this queue's replays still matter.
        c.replays.retain(|r| r.queue == cq);
        for op in ops {
            match *op {
                PatchOp::Rebind(i, buf) => {
                    c.bind(i, BufferRef { id: buf.id, addr: buf.addr, spec: buf.spec, footprint: buf.footprint })
                }
                PatchOp::Scalar(name, v) => {
                    if let Some(s) = c.scalars.iter_mut().find(|s| s.name == name) {
                        s.value = v;
                    }
                }
            }
        }
        Ok(())
    }

    /// Patches trace `tid` on queue `cq` (`trace_rebind`, `trace_set_scalar`).
    pub(crate) fn patch_trace(
        &self,
        tid: u32,
        cq: u16,
        ops: &[PatchOp<'_>],
        after: &[&Event],
        call: &str,
    ) -> Result<()> {
        let _s = self.span("trace_patch", "api");
        let mut st = self.lock_queue(cq)?;
        let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.captured_mut(&mut t, tid, &|| call.to_string())?;
        self.patch_locked(&mut st, c, tid, ops, after, call)
    }

    /// Replays trace `tid` on queue `cq` with `bindings` for this replay only: rebinds, replays, and rebinds back, on
    /// `cq`, holding the trace so no replay elsewhere can see the temporary bindings.
    pub(crate) fn execute_trace_with(
        &self,
        tid: u32,
        cq: u16,
        blocking: bool,
        bindings: &[(usize, &Buffer)],
        after: &[&Event],
    ) -> Result<()> {
        let _s = self.span("execute_trace", "api");
        let call = format!("execute_trace({tid}) with {} bindings", bindings.len());
        let mut st = self.lock_queue(cq)?;
        {
            let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
            let c = self.captured_mut(&mut t, tid, &|| call.clone())?;
            let ops: Vec<PatchOp<'_>> = bindings.iter().map(|&(i, b)| PatchOp::Rebind(i, b)).collect();
            let saved: Vec<BufferRef> =
                bindings.iter().filter_map(|&(i, _)| c.bindings.get(i).map(|b| b.buffer)).collect();
            self.patch_locked(&mut st, c, tid, &ops, after, &call)?;
            let replay = self.plan_replay(&st, c, tid, cq).and_then(|plan| self.push_replay(&mut st, tid, cq, plan));
            // Back to the bindings of before, whether the replay was pushed or refused: the live buffers they name
            // are the ones the caller bound for all replays.
            let back: Vec<(usize, BufferRef)> = bindings.iter().map(|&(i, _)| i).zip(saved).collect();
            self.unpatch_locked(&mut st, c, tid, &back)?;
            replay?;
        }
        if blocking {
            let ev = self.record_event_flags(&mut st, true, "blocking execute_trace")?;
            drop(st);
            self.wait_event(&ev, self.params.timeout, "blocking execute_trace")?;
        }
        Ok(())
    }

    /// Restores bindings `back` of trace `c` (index, buffer bound before) on queue `st`, after a one-replay rebinding.
    /// The buffers need not be checked again: they were bound, and the replay check catches a freed one.
    fn unpatch_locked(
        &self,
        st: &mut QueueState,
        c: &mut Captured,
        tid: u32,
        back: &[(usize, BufferRef)],
    ) -> Result<()> {
        let mut words = Vec::new();
        for &(i, old) in back {
            for p in &c.bindings[i].points {
                // It was bound, so its address words fitted 32 bits then.
                words.push((p.off, (old.addr as u32).wrapping_add(p.delta)));
            }
        }
        self.write_trace_words(st, c, tid, &words)?;
        for &(i, old) in back {
            c.bind(i, old);
        }
        Ok(())
    }

    /// Writes `words` (byte offset in the records, new value) into trace `c`'s buffer with device-side writes on
    /// `st` — one `WRITE_LINEAR` per run of consecutive words inside a trace page (interleaved pages, contract §4.2)
    /// — and into the driver's copy; the next write or replay on another queue waits for them.
    ///
    /// Words an earlier patch left torn are written again too, with the driver's values. If this write stops part-way
    /// (no ring space in time, a broken device), the words it covers are torn in turn, and the driver's copy keeps
    /// the values of before: replays are refused until a patch completes.
    fn write_trace_words(&self, st: &mut QueueState, c: &mut Captured, tid: u32, words: &[(u32, u32)]) -> Result<()> {
        if let Some(b) = c.buffer {
            // The interrupted patch's other writes may still be queued on its queue: a repair elsewhere could land
            // before them and be overwritten.
            if !c.torn.is_empty() && c.torn_queue != st.id {
                let problem = TraceProblem::PatchIncomplete { words: c.torn.len() as u32, queue: c.torn_queue };
                return Err(self.trace_error(tid, format!("a patch on queue {}", st.id), problem));
            }
            let mut all = words.to_vec();
            for &off in &c.torn {
                if !words.iter().any(|w| w.0 == off) {
                    let o = off as usize;
                    all.push((off, u32::from_le_bytes(c.records[o..o + 4].try_into().expect("4 bytes"))));
                }
            }
            let r = self.emit_trace_words(st, b, &all);
            if r.is_err() {
                c.torn_queue = st.id;
                for &(off, _) in words {
                    if !c.torn.contains(&off) {
                        c.torn.push(off);
                    }
                }
                return r;
            }
            c.torn.clear();
            c.uploaded = Some(self.record_event_locked(st, "trace patch")?);
        }
        let recs = Arc::make_mut(&mut c.records);
        for &(off, v) in words {
            recs[off as usize..off as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// Enqueues `words` into the trace buffer at `b` on `st` and rings the doorbell.
    fn emit_trace_words(&self, st: &mut QueueState, b: TraceBuffer, words: &[(u32, u32)]) -> Result<()> {
        {
            let banks = self.info.dram_banks as u64;
            for (off, bytes) in super::patch::runs(words.to_vec(), TRACE_PAGE as u32) {
                let page = off as u64 / TRACE_PAGE;
                let x = Linear {
                    mem: Memory::Dram,
                    unit: (page % banks) as u16,
                    offset: b.base + page / banks * TRACE_PAGE + off as u64 % TRACE_PAGE,
                    len: bytes.len() as u64,
                };
                let len = records::write_linear_len(bytes.len());
                self.emit(st, len, RecordFlags::empty(), "trace patch", "transfer", |slot, m| {
                    records::encode_write_linear(slot, m, &x);
                    slot.put_bytes(records::PAYLOAD_OFFSET, &bytes);
                    records::pad_payload(slot, bytes.len());
                })?;
            }
            let (issuer, t) = st.live()?;
            issuer.publish(t.as_ref());
        }
        Ok(())
    }

    /// The external bindings of trace `tid` (`trace_bindings`).
    pub(crate) fn trace_bindings(&self, tid: u32) -> Result<Vec<TraceBinding>> {
        let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.captured_mut(&mut t, tid, &|| format!("trace_bindings({tid})"))?;
        Ok(c.bindings
            .iter()
            .map(|b| TraceBinding {
                name: b.name.clone(),
                output: b.output,
                spec: b.buffer.spec,
                address: b.buffer.addr,
                words: b.points.len() as u32,
                rebindable: b.rebindable,
            })
            .collect())
    }

    /// The named scalars of trace `tid` (`trace_scalars`).
    pub(crate) fn trace_scalars(&self, tid: u32) -> Result<Vec<TraceScalar>> {
        let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        let c = self.captured_mut(&mut t, tid, &|| format!("trace_scalars({tid})"))?;
        Ok(c.scalars
            .iter()
            .map(|s| TraceScalar { name: s.name.clone(), kind: s.kind, value: s.value, words: s.offs.len() as u32 })
            .collect())
    }
}

impl DeviceInner {
    /// The device ranges trace `tid` owns (its intermediates), by memory then address. Takes the memory lock: the
    /// caller holds the trace table's, which always comes first.
    fn owned_ranges(&self, tid: u32, c: &Captured) -> Vec<(BufferType, u64, u64)> {
        let m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        let mut owned = Vec::new();
        for ty in BufferType::ALL {
            for (s, e) in m.for_type_ref(ty).blocks_of(Owner::Trace(tid)) {
                // An on-demand trace buffer lives in DRAM under the trace's name too; it is not an intermediate.
                if ty == BufferType::Dram
                    && c.buffer.is_some_and(|b| b.base == s)
                    && self.params.trace_buffers_on_demand
                {
                    continue;
                }
                owned.push((ty, s, e));
            }
        }
        owned
    }

    /// The file of trace `tid` (`trace_save`): its records, the kernel images they run, its bindings and owned
    /// ranges (docs: `trace_file.rs`).
    pub(crate) fn save_trace(&self, tid: u32) -> Result<Vec<u8>> {
        let call = format!("trace_save({tid})");
        let t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        let c = match t.traces.get(&tid) {
            Some(State::Captured(c)) => c,
            Some(State::Capturing { queue }) => {
                return Err(self.trace_error(tid, call, TraceProblem::Capturing { queue: *queue }));
            }
            None => return Err(self.trace_unknown(tid, call)),
        };
        if c.epoch != self.epoch.load(Ordering::Acquire) {
            return Err(self.trace_error(tid, call, TraceProblem::LostInReset));
        }
        let file_err = |problem: String| Error::TraceFile { call: call.clone(), problem };
        if !c.events.records.is_empty() || !c.events.waits.is_empty() {
            return Err(file_err(format!(
                "trace {tid} records or waits for events ({} records, {} waits), which belong to this process; a \
                 saved trace holds only launches. Capture the trace to save without its events",
                c.events.records.len(),
                c.events.waits.len()
            )));
        }
        // The kernel images the launches run, by the offset they are at here.
        let mut kernels: Vec<SavedKernel> = Vec::new();
        let mut off = 0usize;
        while off + records::FIXED_LEN <= c.records.len() {
            let fixed: &[u8; records::FIXED_LEN] = c.records[off..off + records::FIXED_LEN].try_into().expect("64");
            let (h, body) = records::decode(fixed).map_err(|e| file_err(format!("own record: {e}")))?;
            if let records::Body::Launch(l) = body
                && !kernels.iter().any(|k| k.offset == l.kernel_offset)
            {
                let (name, image) = self.kernel_image_at(l.kernel_offset).ok_or_else(|| {
                    file_err(format!("the kernel at {:#x} is no longer in the program cache", l.kernel_offset))
                })?;
                kernels.push(SavedKernel { name, offset: l.kernel_offset, image });
            }
            off += h.length.max(records::FIXED_LEN as u32) as usize;
        }
        // One binding per buffer the trace does not own, by memory (DRAM, L1, L1_SMALL) then address: input if any
        // part is read first.
        let bindings: Vec<SavedBinding> = c
            .bindings
            .iter()
            .map(|b| SavedBinding {
                name: b.name.clone(),
                output: b.output,
                spec: b.buffer.spec,
                address: b.buffer.addr,
                footprint: b.buffer.footprint,
                rebindable: b.rebindable,
                points: b.points.iter().map(|p| (p.off, p.delta)).collect(),
            })
            .collect();
        let scalars = c
            .scalars
            .iter()
            .map(|s| SavedScalar { name: s.name.clone(), kind: s.kind, value: s.value, offsets: s.offs.clone() })
            .collect();
        let owned = self.owned_ranges(tid, c);
        let owned_words = owned
            .iter()
            .map(|&(ty, s, e)| {
                c.owned_words.as_ref().map(|w| {
                    w.iter()
                        .filter(|&&(_, t, v)| t == ty && (s..e).contains(&(v as u64)))
                        .map(|&(o, _, v)| (o, (v as u64 - s) as u32))
                        .collect()
                })
            })
            .collect();
        let f = TraceFile {
            contract: (ttdrv_contract::CONTRACT_MAJOR, self.info.version_minor.min(ttdrv_contract::CONTRACT_MINOR)),
            shape: DeviceShape::of(&self.info),
            region_bytes: c.buffer_bytes,
            launches: c.launches,
            kernels,
            bindings,
            scalars,
            owned,
            owned_words,
            names: c.names.iter().map(|n| n.0.to_string()).collect(),
            records: c.records.to_vec(),
        };
        Ok(f.encode())
    }

    /// Loads a saved trace onto queue `cq` with `bindings` for its external buffers, in the file's order
    /// (`trace_load`); returns the new trace's id. Every check of `trace_file.rs` runs first, and nothing is left
    /// behind when one fails.
    pub(crate) fn load_trace(&self, bytes: &[u8], bindings: &[&Buffer], cq: u16, source: &str) -> Result<u32> {
        let call = format!("trace_load({source})");
        let file_err = |problem: String| Error::TraceFile { call: call.clone(), problem };
        let f = TraceFile::decode(bytes).map_err(|e| file_err(e.0))?;
        f.check(self.info.version_minor, &DeviceShape::of(&self.info), self.info.kernels).map_err(|e| file_err(e.0))?;
        if bindings.len() != f.bindings.len() {
            let want: Vec<String> = f.bindings.iter().map(|b| format!("{} ({})", b.name, b.spec)).collect();
            return Err(file_err(format!(
                "{} bindings given; the trace takes {}: {}",
                bindings.len(),
                f.bindings.len(),
                want.join(", ")
            )));
        }
        for (b, sb) in bindings.iter().zip(&f.bindings) {
            if !std::ptr::eq(Arc::as_ptr(&b.dev), self) {
                return Err(Error::WrongDevice {
                    object: "buffer",
                    object_device: b.dev.info.name.clone(),
                    device: self.info.name.clone(),
                });
            }
            if b.spec != sb.spec || b.footprint != sb.footprint {
                return Err(file_err(format!(
                    "binding {} must be a {} buffer; the one given is {}",
                    sb.name, sb.spec, b.spec
                )));
            }
            if b.addr != sb.address && !sb.rebindable {
                return Err(file_err(format!(
                    "binding {} is at {:#x}; the saved records address it at {:#x}, and it is not rebindable (a launch \
                     using it did not declare its address words). Allocate the trace's buffers as the saving process \
                     did (same specs, same order) so they land there",
                    sb.name, b.addr, sb.address
                )));
            }
        }
        // Rebind: point each binding's address words at the buffer given, then check the records again against the
        // addresses they now hold (a crafted accessor must not reach past a moved binding).
        let mut f = f;
        if bindings.iter().zip(&f.bindings).any(|(b, sb)| b.addr != sb.address) {
            for (b, sb) in bindings.iter().zip(f.bindings.iter_mut()) {
                if b.addr == sb.address {
                    continue;
                }
                for &(o, delta) in &sb.points {
                    let v = u32::try_from(b.addr).ok().and_then(|a| a.checked_add(delta)).ok_or_else(|| {
                        file_err(format!("binding {} at {:#x} puts an address word past 32 bits", sb.name, b.addr))
                    })?;
                    f.records[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes());
                }
                sb.address = b.addr;
            }
            f.check(self.info.version_minor, &DeviceShape::of(&self.info), self.info.kernels)
                .map_err(|e| file_err(format!("after rebinding: {}", e.0)))?;
        }
        let mut st = self.lock_queue(cq)?;
        st.forbid_capture(&call)?;
        let tid = {
            let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
            t.next_id = t.next_id.wrapping_add(1).max(1);
            while t.traces.contains_key(&t.next_id) {
                t.next_id = t.next_id.wrapping_add(1).max(1);
            }
            // Reserved while loading: a call on it meanwhile is told it is not ready.
            let id = t.next_id;
            t.traces.insert(id, State::Capturing { queue: cq });
            id
        };
        let r = self.load_into(&mut st, tid, cq, f, bindings, &file_err);
        let mut t = self.traces.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(c) => {
                t.traces.insert(tid, State::Captured(Box::new(c)));
                Ok(tid)
            }
            Err(e) => {
                t.traces.remove(&tid);
                drop(t);
                let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
                for ty in BufferType::ALL {
                    m.for_type(ty).free_owner(Owner::Trace(tid));
                }
                m.trace.free_owner(Owner::Trace(tid));
                Err(e)
            }
        }
    }

    fn load_into(
        &self,
        st: &mut QueueState,
        tid: u32,
        cq: u16,
        mut f: TraceFile,
        bindings: &[&Buffer],
        file_err: &dyn Fn(String) -> Error,
    ) -> Result<Captured> {
        let (buffer, buffer_bytes) = {
            let mut m = self.mem.lock().unwrap_or_else(|e| e.into_inner());
            let mut moved_owned = false;
            for i in 0..f.owned.len() {
                let (ty, s, e) = f.owned[i];
                let (lo, hi) = m.for_type_ref(ty).range();
                if s < lo || e > hi {
                    return Err(file_err(format!(
                        "the trace owns {} range [{s:#x}, {e:#x}), outside this device's [{lo:#x}, {hi:#x})",
                        ty.name()
                    )));
                }
                let busy = m.for_type_ref(ty).classify(s, e).into_iter().find(|p| p.2.is_some());
                match (busy, f.owned_words.get(i).and_then(|w| w.as_ref())) {
                    (None, _) => m.for_type(ty).claim(s, e, Owner::Trace(tid)),
                    // Its saved place is taken: put it elsewhere and point the words that address it there.
                    (Some(_), Some(points)) => {
                        let align = match ty.memory() {
                            Memory::Dram => self.info.dram_align,
                            Memory::L1 => self.info.l1_align,
                        } as u64;
                        let ns = m.for_type(ty).alloc(e - s, align, Direction::BottomUp, Owner::Trace(tid)).map_err(
                            |fail| {
                                file_err(format!(
                                    "the trace owns {} range [{s:#x}, {e:#x}), which is in use here, and there is no \
                                     room to move it: {fail}",
                                    ty.name()
                                ))
                            },
                        )?;
                        for &(o, d) in points {
                            let v = u32::try_from(ns).ok().and_then(|a| a.checked_add(d)).ok_or_else(|| {
                                file_err(format!("moving owned range [{s:#x}, {e:#x}) puts a word past 32 bits"))
                            })?;
                            f.records[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes());
                        }
                        f.owned[i] = (ty, ns, ns + (e - s));
                        moved_owned = true;
                    }
                    (Some(p), None) => {
                        return Err(file_err(format!(
                            "the trace owns {} range [{s:#x}, {e:#x}), but [{:#x}, {:#x}) of it is in use here, and \
                             the range cannot move (a launch of the trace did not declare its address words): load \
                             the trace before allocating anything beyond its bindings",
                            ty.name(),
                            p.0,
                            p.1
                        )));
                    }
                }
            }
            if moved_owned {
                f.check(self.info.version_minor, &DeviceShape::of(&self.info), self.info.kernels)
                    .map_err(|e| file_err(format!("after moving the ranges the trace owns: {}", e.0)))?;
            }
            match self.alloc_trace_buffer(&mut m, tid, f.records.len() as u64) {
                (Some(b), _, bytes) => (b, bytes),
                (None, Some(e), _) => return Err(e),
                (None, None, _) => return Err(file_err("no trace buffer".into())),
            }
        };
        let mut records = std::mem::take(&mut f.records);
        // The kernels go where this process puts them; each launch is pointed there (LAUNCH `kernel_offset`).
        let mut moved = Vec::with_capacity(f.kernels.len());
        for k in &f.kernels {
            moved.push((k.offset, self.upload_image(st, &k.image)?));
        }
        let mut off = 0usize;
        while off < records.len() {
            let fixed: [u8; records::FIXED_LEN] = records[off..off + records::FIXED_LEN].try_into().expect("64");
            let (h, body) = records::decode(&fixed).map_err(|e| file_err(e.to_string()))?;
            if let records::Body::Launch(l) = body
                && let Some(&(_, new)) = moved.iter().find(|(old, _)| *old == l.kernel_offset)
            {
                records[off + 24..off + 32].copy_from_slice(&new.to_le_bytes());
            }
            off += h.length as usize;
        }
        let records = Arc::new(records);
        let uploaded = self.upload_trace(st, buffer, &records)?;
        let refs: Vec<BufferRef> = bindings
            .iter()
            .map(|b| BufferRef { id: b.id, addr: b.addr, spec: b.spec, footprint: b.footprint })
            .collect();
        let must_live = refs
            .iter()
            .zip(&f.bindings)
            .enumerate()
            .map(|(i, (b, sb))| Requirement {
                memory: b.spec.mem.buffer_type,
                start: b.addr,
                end: b.addr + b.footprint,
                buffer: *b,
                binding: i,
                output: sb.output,
            })
            .collect();
        let slots = refs
            .iter()
            .zip(&f.bindings)
            .map(|(b, sb)| BindingSlot {
                name: sb.name.clone(),
                output: sb.output,
                buffer: *b,
                points: sb.points.iter().map(|&(off, delta)| Point { off, delta }).collect(),
                rebindable: sb.rebindable,
                aliased: false,
            })
            .collect();
        // The words that point into its owned ranges, for a later save: movable again if every range was.
        let owned_words = f.owned_words.iter().all(|w| w.is_some()).then(|| {
            f.owned
                .iter()
                .zip(&f.owned_words)
                .flat_map(|(&(ty, s, _), w)| w.iter().flatten().map(move |&(o, d)| (o, ty, s as u32 + d)))
                .collect()
        });
        let scalars = f
            .scalars
            .iter()
            .map(|s| ScalarSlot { name: s.name.clone(), kind: s.kind, value: s.value, offs: s.offsets.clone() })
            .collect();
        Ok(Captured {
            queue: cq,
            epoch: self.epoch.load(Ordering::Acquire),
            len: records.len() as u64,
            launches: f.launches,
            buffer_bytes,
            buffer: Some(buffer),
            must_live,
            bindings: slots,
            owned_words,
            scalars,
            replays: Vec::new(),
            torn: Vec::new(),
            torn_queue: 0,
            checked: None,
            names: f.names.into_iter().map(|n| (Arc::<str>::from(n), "compute")).collect(),
            events: Arc::default(),
            _life: Arc::new(()),
            records,
            uploaded: Some(uploaded),
        })
    }

    /// Fails unless the device runs events inside traces (contract 1.4).
    fn require_trace_events(&self, tid: u32, call: &str) -> Result<()> {
        if self.info.version_minor >= EVENTS_IN_TRACE_MINOR {
            return Ok(());
        }
        let problem =
            TraceProblem::EventsNeedContract { minor: self.info.version_minor, needed: EVENTS_IN_TRACE_MINOR };
        Err(self.trace_error(tid, call, problem))
    }

    /// Captures a record of the user event `cell` into the capture in progress on `st` (contract §4.2.7): the event
    /// becomes the trace's.
    pub(crate) fn capture_event_record(&self, st: &mut QueueState, cell: &EventCell, notify: bool) -> Result<()> {
        let cq = st.id;
        let Some(cap) = st.capture.as_mut() else {
            return Err(Error::Closed { device: self.info.name.clone() });
        };
        let tid = cap.trace_id;
        self.require_trace_events(tid, &format!("record_event on queue {cq} during the capture of trace {tid}"))?;
        let mut e = cell.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owner) = e.owner().filter(|&o| o != tid) {
            let call = format!("record_event on queue {cq} during the capture of trace {tid}");
            return Err(self.trace_error(owner, call, TraceProblem::EventOwned { owner }));
        }
        let local = cap.events.len() as u32 + 1;
        let flags = if notify { RecordFlags::NOTIFY } else { RecordFlags::empty() };
        let meta = capture_meta(self, cap, flags, "event_record");
        push_capture(&mut cap.bytes, records::FIXED_LEN, meta, |slot, m| records::encode_event_record(slot, m, local));
        cap.events.push(TraceEventRecord { cell: cell.clone(), local, notify });
        e.owner = Some((tid, Arc::downgrade(&cap.life)));
        Ok(())
    }

    /// Captures a wait for the user event `cell` into the capture in progress on `st` (contract §4.2.8): each replay
    /// waits for the event's latest record as of that replay.
    pub(crate) fn capture_event_wait(&self, st: &mut QueueState, cell: &EventCell) -> Result<()> {
        let cq = st.id;
        // The wait table travels in the EXEC_TRACE record, which must fit the ring (contract §5.1).
        let max_waits = st
            .issuer
            .as_ref()
            .map_or(0, |i| (i.rings().sizes().max_record() - records::FIXED_LEN) / records::WAIT_ENTRY_LEN);
        let Some(cap) = st.capture.as_mut() else {
            return Err(Error::Closed { device: self.info.name.clone() });
        };
        let tid = cap.trace_id;
        let call = || format!("wait_for_event on queue {cq} during the capture of trace {tid}");
        self.require_trace_events(tid, &call())?;
        let e = cell.lock().unwrap_or_else(|e| e.into_inner());
        let owner = e.owner();
        if owner == Some(tid) {
            // Recorded earlier in this capture, so earlier on the replay's own queue: queue order already holds.
            return Ok(());
        }
        match e.mark {
            None if owner.is_none() => return Err(Error::EventNotRecorded { call: "wait_for_event" }),
            Some(m) if owner.is_none() => self.check_epoch(m.epoch, "wait_for_event")?,
            // Owned by another trace: its replays record it.
            _ => {}
        }
        if cap.waits.len() >= max_waits {
            return Err(self.trace_error(tid, call(), TraceProblem::TooManyWaits { max: max_waits as u32 }));
        }
        let index = cap.waits.len() as u32;
        let meta = capture_meta(self, cap, RecordFlags::empty(), "wait_for_event");
        push_capture(&mut cap.bytes, records::FIXED_LEN, meta, |slot, m| records::encode_event_wait(slot, m, 0, index));
        cap.waits.push(cell.clone());
        Ok(())
    }
}

/// The header of a record captured into `cap`: profiled (its slot the next one inside the trace, named `name`) when
/// the device profiles.
fn capture_meta(dev: &DeviceInner, cap: &mut Capture, flags: RecordFlags, name: &'static str) -> RecordMeta {
    match &dev.profiler {
        Some(_) => {
            let profile_slot = cap.names.len() as u32;
            cap.names.push((name.into(), "event"));
            RecordMeta { flags: flags | RecordFlags::PROFILE, tag: 0, profile_slot }
        }
        None => RecordMeta { flags, ..Default::default() },
    }
}

impl Device {
    /// Starts capturing program dispatches on queue `cq` (`begin_trace_capture`); returns the trace id. Until
    /// [`Device::end_trace_capture`], dispatches on `cq` are recorded instead of sent; host writes, reads, event
    /// records and waits, and blocking calls on `cq` fail; programs not yet in the program cache fail.
    pub fn begin_trace_capture(&self, cq: u16) -> Result<u32> {
        self.inner.begin_trace_capture(cq)
    }

    /// Ends the capture of `tid` on `cq` and stores the trace in device DRAM (`end_trace_capture`). If the trace
    /// region is too small this fails with the size needed; the trace stays captured (query it with
    /// [`Device::trace_info`], then release it).
    pub fn end_trace_capture(&self, tid: u32, cq: u16) -> Result<()> {
        self.inner.end_trace_capture(tid, cq)
    }

    /// Replays trace `tid` on queue `cq` with one record (`execute_trace`); with `blocking`, waits for it.
    pub fn execute_trace(&self, tid: u32, cq: u16, blocking: bool) -> Result<()> {
        self.inner.execute_trace(tid, cq, blocking)
    }

    /// Releases trace `tid`: its buffer and the ranges it owned are freed. A replay already enqueued still runs;
    /// order later reuse on other queues with events.
    pub fn release_trace(&self, tid: u32) -> Result<()> {
        self.inner.release_trace(tid)
    }

    /// Size and state of a captured trace.
    pub fn trace_info(&self, tid: u32) -> Result<TraceInfo> {
        self.inner.trace_info(tid)
    }

    /// The external bindings of trace `tid` — the buffers it uses and does not own — in the order `trace_save`
    /// writes them and [`Device::trace_rebind`] indexes them, with the buffer bound now and whether each can be
    /// rebound.
    pub fn trace_bindings(&self, tid: u32) -> Result<Vec<TraceBinding>> {
        self.inner.trace_bindings(tid)
    }

    /// The named scalars of trace `tid` and their values now ([`Device::trace_set_scalar`] changes them).
    pub fn trace_scalars(&self, tid: u32) -> Result<Vec<TraceScalar>> {
        self.inner.trace_scalars(tid)
    }

    /// Rebinds external bindings of trace `tid` — `(binding index, buffer)` pairs — for every later replay
    /// (`patch.rs`): each buffer must be live, on this device and of the binding's spec, and the binding
    /// rebindable. The trace's words that hold the old addresses are rewritten on the device by writes enqueued
    /// on queue `cq`: a replay enqueued on `cq` before runs with the old buffers, the next one with the new. A
    /// replay of the trace that may still run on another queue must be ordered before the writes by an event
    /// recorded there after it, passed in `after` (or the call fails, changing nothing). Costs O(rewritten words).
    pub fn trace_rebind(&self, tid: u32, cq: u16, bindings: &[(usize, &Buffer)], after: &[&Event]) -> Result<()> {
        let ops: Vec<PatchOp<'_>> = bindings.iter().map(|&(i, b)| PatchOp::Rebind(i, b)).collect();
        self.inner.patch_trace(tid, cq, &ops, after, &format!("trace_rebind({tid})"))
    }

    /// Sets the named scalar `name` of trace `tid` to the 32-bit word `value` (a float's `to_bits` for a float
    /// scalar, which must then be finite — and not negative for an epsilon) for every later replay, ordered as
    /// [`Device::trace_rebind`] is.
    pub fn trace_set_scalar(&self, tid: u32, cq: u16, name: &str, value: u32, after: &[&Event]) -> Result<()> {
        self.inner.patch_trace(tid, cq, &[PatchOp::Scalar(name, value)], after, &format!("trace_set_scalar({tid})"))
    }

    /// As [`Device::execute_trace`], with `bindings` — `(binding index, buffer)` pairs — bound for this replay only:
    /// the rebinding, the replay and the return to the previous bindings are enqueued on `cq` in that order, so the
    /// replay costs O(rewritten words) more. `after` orders the rebinding after replays on other queues, as for
    /// [`Device::trace_rebind`].
    pub fn execute_trace_with(
        &self,
        tid: u32,
        cq: u16,
        blocking: bool,
        bindings: &[(usize, &Buffer)],
        after: &[&Event],
    ) -> Result<()> {
        self.inner.execute_trace_with(tid, cq, blocking, bindings, after)
    }

    /// Saves trace `tid` to the file `path` (`trace_save`): a versioned, checksummed file with its records, the
    /// kernel images they run, the trace region size it needs, the device shape it depends on, the ranges it owns
    /// and its external bindings (name, spec, role). A trace that records or waits for events cannot be saved.
    pub fn trace_save(&self, tid: u32, path: &std::path::Path) -> Result<()> {
        let bytes = self.inner.save_trace(tid)?;
        std::fs::write(path, bytes).map_err(|e| Error::TraceFile {
            call: format!("trace_save({tid}, {})", path.display()),
            problem: format!("cannot write the file: {e}"),
        })
    }

    /// The bytes [`Device::trace_save`] would write.
    pub fn trace_save_bytes(&self, tid: u32) -> Result<Vec<u8>> {
        self.inner.save_trace(tid)
    }

    /// Loads a trace saved by [`Device::trace_save`] (in this process or another) for replay on queue `cq`
    /// (`trace_load`); returns its id. `bindings` are live buffers for the trace's external bindings, in the file's
    /// order — by memory (DRAM, L1, L1_SMALL), then address; [`TraceFile::decode`] lists them — each of the saved
    /// spec, anywhere for a rebindable binding (the loader rewrites its address words), else at the saved address.
    /// The file is checked entirely first (`trace_file.rs`); the ranges the trace owns must be free.
    pub fn trace_load(&self, path: &std::path::Path, bindings: &[&Buffer], cq: u16) -> Result<u32> {
        let bytes = std::fs::read(path).map_err(|e| Error::TraceFile {
            call: format!("trace_load({})", path.display()),
            problem: format!("cannot read the file: {e}"),
        })?;
        self.inner.load_trace(&bytes, bindings, cq, &path.display().to_string())
    }

    /// As [`Device::trace_load`], from bytes.
    pub fn trace_load_bytes(&self, bytes: &[u8], bindings: &[&Buffer], cq: u16) -> Result<u32> {
        self.inner.load_trace(bytes, bindings, cq, "bytes")
    }
}
