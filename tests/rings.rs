//! Issue and completion rings: wrap-around and back-pressure in both directions.
//!
//! - `has_room_agrees_with_a_stalled_device`: the real `queue::Issuer` against a model, while the device is held at
//!   a known record by an `EVENT_WAIT` on another queue, so its `ISSUE_RD` is frozen and the model is exact.
//! - `raw_records_survive_wrap_and_backpressure`: random writes and in-flight reads through a 64 KiB issue ring
//!   and a 64 KiB completion ring on a jittery (slow) device, verified against a host model.
//! - `device_transfers_match_a_host_model`: the same through `Device`/`Buffer`, two queues, random ops.
//! - Completion-ring back-pressure: many non-blocking reads, larger in total than the completion ring (and, in the
//!   second test, more records than the issue ring holds), before a single finish.

mod common;

use common::*;
use proptest::collection::vec;
use proptest::prelude::*;
use ttdrv::contract::Memory;
use ttdrv::contract::RECORD_ALIGN;
use ttdrv::contract::records::write_linear_len;
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::*;

/// The smallest ring the contract allows; records are at most a quarter of it, so it wraps every few records.
const RING: u32 = 64 * 1024;
/// Largest `WRITE_LINEAR` payload a 64 KiB issue ring takes in one record.
const MAX_PAYLOAD: usize = RING as usize / 4 - 64;

fn payload_size() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=256, 1usize..=MAX_PAYLOAD, Just(MAX_PAYLOAD)]
}

/// Bytes the issuer needs for a record of `len` at write pointer `wr`: the record plus, if it would cross the end
/// of the ring, the PAD up to the end (contract §5.1).
fn model_need(wr: u32, len: usize) -> u32 {
    let off = wr & (RING - 1);
    let pad = if off as usize + len > RING as usize { RING - off } else { 0 };
    pad + len as u32
}

/// Where the gate record goes: mostly near the start of the ring, so that the records behind it wrap around the
/// end while the ring is nearly full (the case where the PAD to the end decides whether a record fits).
fn gate_offset() -> impl Strategy<Value = u32> {
    prop_oneof![(0u32..64).prop_map(|k| k * 64), (0u32..RING / 64).prop_map(|k| k * 64)]
}

/// Moves queue `q`'s write pointer to ring offset `target` with filler records the device executes (writes to a
/// scratch area, or 64-byte `EVENT_RECORD`s), then waits until the device has consumed them.
fn advance_to(q: &mut RawQueue, target: u32, own_events: &mut u32) {
    let filler = pattern(MAX_PAYLOAD, 99);
    loop {
        let off = q.wr() & (RING - 1);
        let dist = target.wrapping_sub(off) & (RING - 1);
        if dist == 0 {
            break;
        }
        let len = dist.min(RING - off).min(RING / 4) as usize;
        if len >= 128 {
            q.write_linear(Memory::Dram, 7, 0x100_0000, &filler[..len - 64]);
        } else {
            *own_events += 1;
            q.event_record(*own_events);
        }
    }
    q.drain();
}

/// Hands out non-overlapping DRAM ranges, round-robin over the banks.
struct Placer {
    next: [u64; 8],
    n: usize,
}

impl Placer {
    fn new() -> Placer {
        Placer { next: [0x1000; 8], n: 0 }
    }

    fn place(&mut self, len: usize) -> (u16, u64) {
        let unit = self.n % 8;
        self.n += 1;
        let at = self.next[unit];
        self.next[unit] += len.div_ceil(RECORD_ALIGN) as u64 * RECORD_ALIGN as u64;
        (unit as u16, at)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// While the device is stalled, `has_room` must report room exactly when the model has it: never room the
    /// device has not freed (that would overwrite an unconsumed record), and no false "full" either.
    #[test]
    fn has_room_agrees_with_a_stalled_device(rounds in vec((gate_offset(), vec(payload_size(), 1..48)), 1..6)) {
        let (_emu, t) = emulator(EmuConfig::default());
        let mut q0 = RawQueue::new(&t, 0, RING, RING);
        let mut q1 = RawQueue::new(&t, 1, RING, RING);
        let mut placer = Placer::new();
        let mut written: Vec<(u16, u64, Vec<u8>)> = Vec::new();
        let mut own_events = 0;
        for (r, (gate_at, sizes)) in rounds.iter().enumerate() {
            let gate_id = r as u32 + 1;
            advance_to(&mut q0, *gate_at, &mut own_events);
            // Queue 0 stops at this record until queue 1 records event `gate_id`.
            q0.event_wait(1, gate_id);
            q0.publish();
            let frozen = q0.wr().wrapping_sub(64);
            q0.wait("the device to reach the gate", |q| q.issue_rd() == frozen);
            for (k, &s) in sizes.iter().enumerate() {
                let len = write_linear_len(s);
                let wr = q0.wr();
                let model = RING - wr.wrapping_sub(frozen) >= model_need(wr, len);
                prop_assert_eq!(
                    q0.has_room(len), model,
                    "round {}, record {}: {} bytes at wr {:#x}, device stalled at {:#x}", r, k, len, wr, frozen
                );
                if model {
                    let data = pattern(s, (r * 1000 + k) as u64);
                    let (unit, off) = placer.place(s);
                    q0.write_linear(Memory::Dram, unit, off, &data);
                    written.push((unit, off, data));
                }
                prop_assert!(q0.wr().wrapping_sub(frozen) <= RING, "the host overran the device");
                if k % 3 == 0 {
                    q0.publish();
                }
                prop_assert_eq!(q0.issue_rd(), frozen, "the device got past the gate: the test is not valid");
            }
            q0.publish();
            q1.event_record(gate_id);
            q1.publish();
            q0.drain();
        }
        // What the device executed is what the host wrote: no record was overwritten before it was consumed.
        for (i, (unit, off, data)) in written.iter().enumerate() {
            let got = q0.read(Memory::Dram, *unit, *off, data.len());
            prop_assert!(got == *data, "write {} ({} bytes at bank {} + {:#x}) came back different", i, data.len(), unit, off);
        }
    }

    /// A free-running, jittery device; random writes, rewrites and batches of in-flight reads of random sizes.
    /// Every read returns exactly what the model says the device held when the read was issued.
    #[test]
    fn raw_records_survive_wrap_and_backpressure(
        seed in 1u64..1000,
        ops in vec((0u8..10, payload_size(), any::<u16>()), 1..120),
    ) {
        let cfg = EmuConfig::parse(&format!("jitter={seed},jitter_us=20,jitter_pct=25")).unwrap();
        let (_emu, t) = emulator(cfg);
        let mut q = RawQueue::new(&t, 0, RING, RING);
        let mut placer = Placer::new();
        // Regions: (unit, offset, current contents).
        let mut regions: Vec<(u16, u64, Vec<u8>)> = Vec::new();
        // Reads in flight: destination, expected bytes, sequence number.
        let mut inflight: Vec<(Vec<u8>, Vec<u8>, u64)> = Vec::new();
        for (i, &(kind, size, pick)) in ops.iter().enumerate() {
            match kind {
                // New region.
                0..=3 => {
                    let data = pattern(size, seed * 10_000 + i as u64);
                    let (unit, off) = placer.place(size);
                    q.write_linear(Memory::Dram, unit, off, &data);
                    regions.push((unit, off, data));
                }
                // Rewrite an existing region.
                4 | 5 if !regions.is_empty() => {
                    let r = pick as usize % regions.len();
                    let data = pattern(regions[r].2.len(), seed * 20_000 + i as u64);
                    q.write_linear(Memory::Dram, regions[r].0, regions[r].1, &data);
                    regions[r].2 = data;
                }
                // Read a region (or part of it), not waiting for the data.
                6..=8 if !regions.is_empty() => {
                    let (unit, off, data) = &regions[pick as usize % regions.len()];
                    let n = 1 + size % data.len();
                    let mut dst = vec![0u8; n];
                    // SAFETY: the vector is kept in `inflight` until its read is delivered below.
                    let seq = unsafe { q.read_linear_into(Memory::Dram, *unit, *off, dst.as_mut_ptr(), n) };
                    inflight.push((dst, data[..n].to_vec(), seq));
                }
                _ => q.publish(),
            }
            if kind == 9 || i + 1 == ops.len() {
                q.publish();
                let last = inflight.last().map_or(0, |r| r.2);
                q.wait("read data", |q| q.delivered() >= last);
                for (k, (got, want, _)) in inflight.drain(..).enumerate() {
                    prop_assert!(*got == *want, "op {}: in-flight read {} returned other bytes", i, k);
                }
            }
        }
        q.drain();
        prop_assert!(device_fault(t.as_ref()).is_none());
    }
}

/// Buffers of every kind the device layer splits differently: tiny, odd, rows longer than a record, sharded,
/// larger than the ring.
fn model_specs() -> Vec<BufferSpec> {
    let block = MemoryConfig::sharded(
        BufferType::L1,
        Layout::BlockSharded,
        ShardGrid::Cores { x0: 0, y0: 0, x1: 3, y1: 1 },
        [48, 40],
    );
    vec![
        BufferSpec::new(1, 1, DType::BFloat16, MemoryConfig::DRAM),
        BufferSpec::new(7, 13, DType::Float32, MemoryConfig::DRAM),
        BufferSpec::new(33, 517, DType::BFloat16, MemoryConfig::L1),
        BufferSpec::new(2, 10_000, DType::Float32, MemoryConfig::DRAM),
        BufferSpec::new(96, 160, DType::Float32, block),
        BufferSpec::new(64, 1024, DType::Float32, MemoryConfig::DRAM),
    ]
}

fn small_ring_params(queues: u16) -> DeviceParams {
    DeviceParams {
        num_command_queues: queues,
        issue_ring_size: RING,
        completion_ring_size: RING,
        hugepages: false,
        timeout: std::time::Duration::from_secs(20),
        ..DeviceParams::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Write { buf: usize, blocking: bool },
    Read { buf: usize },
    ReadNonBlocking { buf: usize },
    Synchronize,
}

fn op() -> impl Strategy<Value = Op> {
    let n = model_specs().len();
    prop_oneof![
        4 => (0..n, any::<bool>()).prop_map(|(buf, blocking)| Op::Write { buf, blocking }),
        2 => (0..n).prop_map(|buf| Op::Read { buf }),
        4 => (0..n).prop_map(|buf| Op::ReadNonBlocking { buf }),
        1 => Just(Op::Synchronize),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random writes and reads (blocking and not) of several buffers through 64 KiB rings on two queues of a
    /// jittery device. Buffer `i` always uses queue `i % 2`, so per-buffer order is queue order.
    #[test]
    fn device_transfers_match_a_host_model(seed in 1u64..1000, ops in vec(op(), 1..40)) {
        let sel = format!("emu:jitter={seed},jitter_us=20,jitter_pct=20");
        let dev = Device::open(&sel, &small_ring_params(2)).unwrap();
        let specs = model_specs();
        let bufs: Vec<Buffer> = specs.iter().map(|s| dev.allocate(s).unwrap()).collect();
        let mut model: Vec<Vec<u8>> = Vec::new();
        for (i, b) in bufs.iter().enumerate() {
            let data = pattern(b.spec().host_bytes() as usize, seed + i as u64);
            b.write((i % 2) as u16, &data, false).unwrap();
            model.push(data);
        }
        let mut pending: Vec<(Vec<u8>, Vec<u8>, usize)> = Vec::new();
        for (k, op) in ops.iter().chain([Op::Synchronize].iter()).enumerate() {
            match *op {
                Op::Write { buf, blocking } => {
                    let data = pattern(model[buf].len(), seed * 1000 + k as u64);
                    bufs[buf].write((buf % 2) as u16, &data, blocking).unwrap();
                    model[buf] = data;
                }
                Op::Read { buf } => {
                    let got = bufs[buf].read_to_vec((buf % 2) as u16).unwrap();
                    prop_assert!(got == model[buf], "op {}: blocking read of buffer {} ({})", k, buf, specs[buf]);
                }
                Op::ReadNonBlocking { buf } => {
                    let mut dst = vec![0u8; model[buf].len()];
                    // SAFETY: `dst` lives in `pending` until the synchronize below delivered every read.
                    unsafe { bufs[buf].read_nonblocking((buf % 2) as u16, dst.as_mut_ptr()).unwrap() };
                    pending.push((dst, model[buf].clone(), buf));
                }
                Op::Synchronize => {
                    dev.synchronize().unwrap();
                    for (got, want, buf) in pending.drain(..) {
                        prop_assert!(*got == *want, "op {}: non-blocking read of buffer {} ({})", k, buf, specs[buf]);
                    }
                }
            }
        }
    }
}

/// Non-blocking reads totalling 32 times the completion ring, issued before one finish: the device stalls on the
/// full completion ring and only the host's draining inside `finish` lets it go on.
#[test]
fn nonblocking_reads_larger_than_the_completion_ring_before_one_finish() {
    let dev = Device::open("emu", &small_ring_params(1)).unwrap();
    let spec = BufferSpec::new(64, 1000, DType::Float32, MemoryConfig::DRAM);
    let bufs: Vec<Buffer> = (0..8).map(|_| dev.allocate(&spec).unwrap()).collect();
    let datas: Vec<Vec<u8>> = (0..8).map(|i| pattern(spec.host_bytes() as usize, 77 + i)).collect();
    for (b, d) in bufs.iter().zip(&datas) {
        b.write(0, d, false).unwrap();
    }
    let mut dsts: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; spec.host_bytes() as usize]).collect();
    for (b, dst) in bufs.iter().zip(dsts.iter_mut()) {
        // SAFETY: `dsts` outlives the finish below and is not touched before it.
        unsafe { b.read_nonblocking(0, dst.as_mut_ptr()).unwrap() };
    }
    let total: u64 = dsts.iter().map(|d| d.len() as u64).sum();
    assert!(total > 16 * RING as u64, "the reads must not fit the completion ring");
    dev.finish(0).unwrap();
    for (i, (got, want)) in dsts.iter().zip(&datas).enumerate() {
        assert_bytes_eq(got, want, &format!("buffer {i}"));
    }
}

/// 3000 tiny non-blocking reads, interleaved with rewrites: more read records than the issue ring holds (so the
/// host waits for issue room while the device waits for completion room) and more completion entries than the
/// completion ring holds. Each read must see the write enqueued just before it.
#[test]
fn more_reads_than_either_ring_holds() {
    let dev = Device::open("emu", &small_ring_params(1)).unwrap();
    let spec = BufferSpec::new(1, 1, DType::BFloat16, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    let n = 3000usize;
    assert!(n * 64 > 2 * RING as usize, "read records must overflow the issue ring");
    let mut dsts = vec![0u8; 2 * n];
    let base = dsts.as_mut_ptr();
    let mut want = Vec::with_capacity(2 * n);
    let mut value = [0u8; 2];
    for i in 0..n {
        if i % 7 == 0 {
            value = (i as u16).to_le_bytes();
            b.write(0, &value, false).unwrap();
        }
        // SAFETY: `dsts` is neither moved nor accessed before the finish below delivers every read.
        unsafe { b.read_nonblocking(0, base.add(2 * i)).unwrap() };
        want.extend_from_slice(&value);
    }
    dev.finish(0).unwrap();
    assert_bytes_eq(&dsts, &want, "3000 reads");
}

/// Deterministic companion of the property test: with the device held at a gate, the ring fills up exactly to
/// the device's read pointer, then refuses; once the device moves, the refused record fits.
#[test]
fn issue_ring_fills_to_the_device_read_pointer_and_no_further() {
    let (_emu, t) = emulator(EmuConfig::default());
    let mut q0 = RawQueue::new(&t, 0, RING, RING);
    let mut q1 = RawQueue::new(&t, 1, RING, RING);
    // Move the write pointer off zero so the records straddle the end of the ring.
    q0.write_linear(Memory::Dram, 0, 0x1000, &pattern(1000, 1));
    q0.drain();
    q0.event_wait(1, 1);
    q0.publish();
    let frozen = q0.wr().wrapping_sub(64);
    q0.wait("the device to reach the gate", |q| q.issue_rd() == frozen);
    let data = pattern(MAX_PAYLOAD, 2);
    let len = write_linear_len(MAX_PAYLOAD);
    let mut pushed = 0;
    while q0.has_room(len) {
        assert!(q0.wr().wrapping_sub(frozen) + model_need(q0.wr(), len) <= RING);
        q0.write_linear(Memory::Dram, 1, 0x1000 + pushed * 0x10000, &data);
        pushed += 1;
        assert!(pushed <= 4, "more than a ring's worth of records accepted");
    }
    let wr = q0.wr();
    assert!(RING - wr.wrapping_sub(frozen) < model_need(wr, len), "refused although there was room");
    assert!(pushed >= 2, "a 64 KiB ring holds at least two 16 KiB records");
    // Small records still fit in what is left, up to the last byte before the gate.
    let small = 64usize;
    while q0.has_room(write_linear_len(small)) {
        q0.write_linear(Memory::Dram, 2, 0x1000 + pushed * 0x100, &data[..small]);
        pushed += 1;
    }
    let wr = q0.wr();
    assert!(RING - wr.wrapping_sub(frozen) < model_need(wr, write_linear_len(small)));
    assert!(RING - wr.wrapping_sub(frozen) <= 2 * 64, "small records must fill the ring up to the gate");
    assert_eq!(q0.issue_rd(), frozen, "the device must still be at the gate");
    q0.publish();
    q1.event_record(1);
    q1.publish();
    q0.wait("room after the device moved", |q| q.has_room(len).unwrap());
    q0.drain();
    assert_bytes_eq(&q0.read(Memory::Dram, 1, 0x1000, MAX_PAYLOAD), &data, "first large record");
}
