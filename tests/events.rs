//! Command queues and events (the guide "Advanced Performance Optimizations for Models", §2): how many queues a
//! device opens with, queues running concurrently on the
//! device, events ordering work across queues, host waits and queries, randomized stress under emulator jitter,
//! events shared between threads, and the diagnostics of a wait that can never complete.
//!
//! A wait can never complete only if something outside the driver stops a queue: through the API a
//! `wait_for_event` always names a record that was issued before it (the most recent one), so waits cannot form a
//! cycle — `a_wait_refers_to_the_most_recent_record_issued_before_it` builds the would-be deadlock and checks that
//! it resolves. The hang test therefore stops queue 1's fetching behind the driver's back (as a hung or lost
//! queue would look to the host).

mod common;
use ttdrv_testkit::{expect_err, hostref};

use common::{assert_bytes_eq, open, pattern, small_params};
use hostref::*;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use ttdrv::contract::regs;
use ttdrv::profile::{Lane, Span};
use ttdrv::*;

fn params(queues: u16) -> DeviceParams {
    DeviceParams { num_command_queues: queues, ..small_params() }
}

fn f32_spec(rows: u32, cols: u32, mem: MemoryConfig) -> BufferSpec {
    BufferSpec::new(rows, cols, DType::Float32, mem)
}

/// Writes `data` on `cq` and reads it back on `cq`.
#[track_caller]
fn round_trip(dev: &Device, cq: u16, seed: u64) {
    let s = f32_spec(17, 33, MemoryConfig::L1);
    let data = pattern(s.host_bytes() as usize, seed);
    let b = dev.buffer_from_host(&s, cq, &data).unwrap();
    assert_bytes_eq(&b.read_to_vec(cq).unwrap(), &data, &format!("round trip on queue {cq}"));
}

/// A read in flight into host memory the test owns until it is checked. (`Buffer::read_nonblocking` returns a
/// `PendingRead`, which the crate does not export by name, so the test keeps it behind closures.)
struct Inflight {
    host: Box<[u8]>,
    wait: Box<dyn Fn() -> Result<()>>,
    done: Box<dyn Fn() -> Result<bool>>,
    want: Vec<u8>,
    what: String,
}

impl Inflight {
    /// Enqueues a non-blocking read of `b` on `cq`, to be compared with `want`.
    fn start(b: &Buffer, cq: u16, want: Vec<u8>, what: String) -> Inflight {
        let mut host = vec![0u8; want.len()].into_boxed_slice();
        // SAFETY: the box's heap memory does not move when the box does, and it is neither read nor written until
        // `check`, which first waits for delivery (or the device is closed, which never delivers).
        let read = std::rc::Rc::new(unsafe { b.read_nonblocking(cq, host.as_mut_ptr()) }.unwrap());
        let r = read.clone();
        Inflight { host, wait: Box::new(move || read.wait()), done: Box::new(move || r.is_done()), want, what }
    }

    /// True once the data is in place.
    fn is_done(&self) -> bool {
        (self.done)().unwrap()
    }

    fn check(self) {
        (self.wait)().unwrap();
        assert_bytes_eq(&self.host, &self.want, &self.what);
    }
}

/// `num_command_queues` of 0 or more than the device has is refused naming both numbers; `emu:queues=4` opened with
/// four queues gives four usable queues, and events order work along a chain through all of them.
#[test]
fn the_number_of_queues_is_checked_and_four_queues_all_work() {
    for n in [0u16, 5, 16] {
        expect_err!(
            Device::open("emu:queues=4", &params(n)),
            Error::InvalidParameter { parameter: "num_command_queues", value, .. } if *value == n as u64,
            [&format!("num_command_queues={n}"), "has 4 command queue(s)", "ask for 1 to 4"]
        );
    }
    let dev = open("emu:queues=4", &params(4));
    assert_eq!(dev.num_queues(), 4);
    for q in 0..4 {
        round_trip(&dev, q, q as u64 + 1);
    }
    expect_err!(
        dev.finish(4),
        Error::QueueOutOfRange { queue: 4, queues: 4, device_queues: 4, .. },
        ["command queue 4 does not exist", "4 queue(s) (ids 0 to 3)", "pass one of those"]
    );

    // A chain: written on queue 0, copied by 1 into L1, by 2 into DRAM, by 3 into L1 again, read on 3.
    let s = f32_spec(64, 96, MemoryConfig::DRAM);
    let data = pattern(s.host_bytes() as usize, 9);
    let bufs: Vec<Buffer> = [MemoryConfig::DRAM, MemoryConfig::L1, MemoryConfig::DRAM, MemoryConfig::L1]
        .iter()
        .map(|m| dev.allocate(&f32_spec(64, 96, *m)).unwrap())
        .collect();
    let evs: Vec<Event> = (0..4).map(|_| dev.create_event().unwrap()).collect();
    bufs[0].write(0, &data, false).unwrap();
    evs[0].record(0).unwrap();
    for q in 1..4u16 {
        dev.wait_for_event(q, &evs[q as usize - 1]).unwrap();
        dev.reshard_into(q, &bufs[q as usize - 1], &bufs[q as usize]).unwrap();
        evs[q as usize].record(q).unwrap();
    }
    assert_bytes_eq(&bufs[3].read_to_vec(3).unwrap(), &data, "after the chain through four queues");
}

fn device_spans(spans: &[Span], q: u16, name: &str) -> Vec<Span> {
    spans.iter().filter(|s| s.lane == Lane::Queue(q) && &*s.name == name).cloned().collect()
}

/// In paced mode the device runs queues concurrently: a write on queue 1 is not held back by a long program on
/// queue 0. Queue 0 runs two 250 ms fills A and B with an event between them; once the event has completed (A is
/// done, B is running) the host writes on queue 1. The write's device span must lie inside B's. (The device
/// spans are modelled times; the host only has to issue its write within B's 250 ms.)
#[test]
fn a_long_program_on_queue_0_does_not_hold_back_a_write_on_queue_1() {
    let p = DeviceParams { profiling: true, ..params(2) };
    let dev = open("emu:paced,launch_ns=250000000", &p);
    let target = dev.allocate(&f32_spec(8, 8, MemoryConfig::L1)).unwrap();
    let small = f32_spec(16, 16, MemoryConfig::DRAM);
    let w = dev.allocate(&small).unwrap();
    let a_done = dev.create_event().unwrap();
    dev.fill(0, &target, 1.0).unwrap();
    a_done.record(0).unwrap();
    dev.fill(0, &target, 2.0).unwrap();
    while !a_done.query().unwrap() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let data = pattern(small.host_bytes() as usize, 4);
    w.write(1, &data, false).unwrap();
    dev.finish(1).unwrap();
    dev.finish(0).unwrap();
    assert_bytes_eq(&w.read_to_vec(1).unwrap(), &data, "the write on queue 1");
    let spans = dev.profile_spans();
    let fills = device_spans(&spans, 0, "fill");
    let writes = device_spans(&spans, 1, "write");
    assert_eq!(fills.len(), 2, "{spans:#?}");
    let (b, wr) = (&fills[1], writes.last().expect("a device span of the write on queue 1"));
    assert!(
        b.start_ns <= wr.start_ns && wr.end_ns <= b.end_ns,
        "the write on queue 1 ({}..{} ns) should run inside fill B on queue 0 ({}..{} ns)",
        wr.start_ns,
        wr.end_ns,
        b.start_ns,
        b.end_ns
    );
}

/// A write on queue 1, an event recorded behind it, a wait for the event on queue 0 and a copy on queue 0: the copy
/// sees the data, every time, with records delayed at random on both queues. The event is recorded again every
/// iteration (re-arming it).
#[test]
fn an_event_orders_a_copy_on_queue_0_after_a_write_on_queue_1() {
    let dev = open("emu:jitter=5,jitter_us=300,jitter_pct=100", &params(2));
    let s = f32_spec(128, 128, MemoryConfig::DRAM);
    let src = dev.allocate(&s).unwrap();
    let dst = dev.allocate(&f32_spec(128, 128, MemoryConfig::L1)).unwrap();
    let written = dev.create_event().unwrap();
    for it in 0..20 {
        let data = pattern(s.host_bytes() as usize, 100 + it);
        src.write(1, &data, false).unwrap();
        written.record(1).unwrap();
        dev.wait_for_event(0, &written).unwrap();
        dev.reshard_into(0, &src, &dst).unwrap();
        // Blocking: the copy is done before the next iteration's write is enqueued.
        assert_bytes_eq(&dst.read_to_vec(0).unwrap(), &data, &format!("iteration {it}"));
    }
}

/// The would-be deadlock: queue 0 waits for event A; queue 1 waits for event G, recorded on queue 0 after that
/// wait; then A is recorded again on queue 1. Queue 0's wait refers to A's record issued before it, so everything
/// completes; were it to refer to A's later record, neither queue could move (the short device timeout turns that
/// into an error instead of a hang). The later synchronize of A refers to A's second record.
#[test]
fn a_wait_refers_to_the_most_recent_record_issued_before_it() {
    let dev = open("emu:jitter=3,jitter_us=100", &DeviceParams { timeout: Duration::from_secs(2), ..params(2) });
    let (a, g) = (dev.create_event().unwrap(), dev.create_event().unwrap());
    let s = f32_spec(32, 32, MemoryConfig::DRAM);
    let (first, second) = (pattern(4096, 1), pattern(4096, 2));
    let src = dev.buffer_from_host(&s, 1, &first).unwrap();
    a.record(1).unwrap();
    let a1 = a.last_record().unwrap();
    dev.wait_for_event(0, &a).unwrap();
    let copy0 = dev.to_memory_config(0, &src, &MemoryConfig::L1).unwrap();
    g.record(0).unwrap();
    dev.wait_for_event(1, &g).unwrap();
    src.write(1, &second, false).unwrap();
    a.record(1).unwrap();
    let a2 = a.last_record().unwrap();
    assert_eq!((a1.0, a2.0), (1, 1));
    assert_ne!(a1.1, a2.1, "a record gets a new id");
    a.synchronize().unwrap();
    // Queue 0's copy ran after the first write and before the second (queue 1 waited for G, behind the copy).
    assert_bytes_eq(&copy0.read_to_vec(0).unwrap(), &first, "copy on queue 0");
    assert_bytes_eq(&src.read_to_vec(0).unwrap(), &second, "after A's second record");
    dev.synchronize().unwrap();
}

/// `synchronize_timeout` returns `Ok(false)` while the event cannot complete and `Ok(true)` once it has; `query` is
/// false, then true. Queue 1 runs a 300 ms fill (paced) and records E behind it; queue 0 waits for E and records F.
/// (A false result needs the device to be slower than the host's short timeout, which the pacing guarantees: a
/// record's completion is held back until wall time reaches its modelled end.)
#[test]
fn synchronize_timeout_and_query_before_and_after_completion() {
    let dev = open("emu:paced,launch_ns=300000000", &params(2));
    let out = dev.allocate(&f32_spec(16, 16, MemoryConfig::L1)).unwrap();
    let (e, f) = (dev.create_event().unwrap(), dev.create_event().unwrap());
    dev.fill(1, &out, 7.0).unwrap();
    e.record(1).unwrap();
    dev.wait_for_event(0, &e).unwrap();
    let copy = dev.allocate(&f32_spec(16, 16, MemoryConfig::DRAM)).unwrap();
    dev.reshard_into(0, &out, &copy).unwrap();
    f.record(0).unwrap();
    assert!(!e.query().unwrap(), "E completed before its 300 ms fill");
    assert!(!f.query().unwrap(), "F completed before E");
    assert!(!f.synchronize_timeout(Duration::from_millis(10)).unwrap(), "F completed within 10 ms");
    assert!(f.synchronize_timeout(Duration::from_secs(20)).unwrap());
    assert!(e.query().unwrap() && f.query().unwrap());
    assert_eq!(decode(&copy.read_to_vec(0).unwrap(), DType::Float32), vec![7.0; 256]);
    // A completed event stays complete, and synchronizing it again returns at once.
    f.synchronize().unwrap();
    assert!(f.synchronize_timeout(Duration::ZERO).unwrap());
}

/// Waiting on, synchronizing or querying an event that was never recorded is `InvalidState` (it could never
/// complete), not a hang; an event of another device is refused.
#[test]
fn a_never_recorded_event_is_invalid_state_not_a_hang() {
    let dev = open("emu", &params(2));
    let never = dev.create_event().unwrap();
    assert_eq!(never.last_record(), None);
    expect_err!(
        dev.wait_for_event(0, &never),
        Error::EventNotRecorded { call: "wait_for_event" },
        ["wait_for_event", "never recorded"]
    );
    expect_err!(
        never.synchronize(),
        Error::EventNotRecorded { call: "event_synchronize" },
        ["event_synchronize", "never recorded"]
    );
    expect_err!(never.synchronize_timeout(Duration::from_secs(60)), Error::EventNotRecorded { .. }, ["never recorded"]);
    expect_err!(never.query(), Error::EventNotRecorded { call: "event_query" }, ["event_query", "never recorded"]);
    let other = open("emu", &params(1));
    let theirs = other.create_event().unwrap();
    theirs.record(0).unwrap();
    expect_err!(
        dev.wait_for_event(0, &theirs),
        Error::WrongDevice { object: "event", object_device, device } if *object_device == other.info().name && *device == dev.info().name,
        ["event belongs to device", &other.info().name]
    );
    round_trip(&dev, 0, 1);
    round_trip(&dev, 1, 2);
}

/// `finish(q)` waits for queue q only: with queue 1 unable to move, `finish(0)` returns and queue 0's non-blocking
/// reads are in place. Queue 1 is stopped behind the driver's back (contract §3: `Q_CTRL = 0` stops fetching), so
/// this does not depend on timing; a reset brings it back. Then, under jitter, `finish(q)` delivers each queue's
/// reads, and `Device::synchronize` everything on both queues.
#[test]
fn finish_waits_for_its_own_queue_and_synchronize_for_all() {
    let dev = open("emu:jitter=9,jitter_us=200,jitter_pct=50", &params(2));
    let t = dev.transport().unwrap();
    let s = f32_spec(64, 64, MemoryConfig::DRAM);
    t.write32(regs::queue_reg(1, regs::queue::CTRL), 0);
    let stuck = dev.create_event().unwrap();
    stuck.record(1).unwrap();
    let b0 = dev.allocate(&s).unwrap();
    let data = pattern(s.host_bytes() as usize, 1);
    b0.write(0, &data, false).unwrap();
    let r = Inflight::start(&b0, 0, data, "queue 0 read, queue 1 stopped".into());
    dev.finish(0).unwrap();
    assert!(r.is_done(), "finish(0) returned before queue 0's read was delivered");
    assert!(!stuck.query().unwrap());
    r.check();
    dev.reset().unwrap();

    for round in 0..5u64 {
        let bufs: Vec<Buffer> = (0..4).map(|_| dev.allocate(&s).unwrap()).collect();
        let mut reads: Vec<(u16, Inflight)> = Vec::new();
        for (i, b) in bufs.iter().enumerate() {
            let q = (i % 2) as u16;
            let data = pattern(s.host_bytes() as usize, round * 10 + i as u64);
            b.write(q, &data, false).unwrap();
            reads.push((q, Inflight::start(b, q, data, format!("round {round} buffer {i} on queue {q}"))));
        }
        if round % 2 == 0 {
            let q = (round / 2 % 2) as u16;
            dev.finish(q).unwrap();
            for (rq, r) in &reads {
                if *rq == q {
                    assert!(r.is_done(), "round {round}: finish({q}) left a read of queue {q} undelivered");
                }
            }
        } else {
            dev.synchronize().unwrap();
            assert!(reads.iter().all(|(_, r)| r.is_done()), "round {round}: synchronize left a read");
        }
        dev.synchronize().unwrap();
        reads.into_iter().for_each(|(_, r)| r.check());
    }
}

/// One producer slot of the stress test: a buffer, the event recorded after each write to it, and the event its
/// last consumer recorded once done with it.
struct Slot {
    buf: Buffer,
    written: Event,
    consumed: Event,
    has_consumer: bool,
}

/// A copy destination and the event recorded after the read of its last copy.
struct Dest {
    buf: Buffer,
    read: Event,
    used: bool,
}

/// Seeded random orderings of writes, records, waits, copies and non-blocking reads across two queues on a device
/// with jitter. A producer (on a random queue) waits until the slot's last consumer is done with it, writes data
/// unique to the step, records `written`; a consumer (on a random queue) waits for `written`, then either copies
/// the slot into a destination (waiting until that destination's previous read is done) and reads the copy, or
/// reads the slot directly, all non-blocking, and records `consumed`. Spare events are recorded and waited on at
/// random. Every read must see exactly the data of the step that produced it: no stale or torn data.
#[test]
fn randomized_records_waits_and_dependencies_never_show_stale_data() {
    use BufferType::{Dram, L1};
    use Layout::*;
    let specs = [
        f32_spec(1, 8, MemoryConfig::DRAM),
        BufferSpec::new(16, 100, DType::BFloat16, MemoryConfig::L1),
        f32_spec(64, 256, MemoryConfig::DRAM),
        f32_spec(32, 40, sharded(L1, HeightSharded, cores(1, 2, 4, 3), [4, 40], false)),
        BufferSpec::new(40, 64, DType::BFloat16, sharded(Dram, BlockSharded, banks(0, 7), [10, 32], true)),
    ];
    let mut steps_done = 0;
    for seed in [1u64, 2, 3, 4] {
        let sel = format!("emu:jitter={seed},jitter_us=20,jitter_pct=30");
        let dev = open(&sel, &params(2));
        let mut rng = Rng::new(seed);
        let mut slots: Vec<Slot> = specs
            .iter()
            .map(|s| Slot {
                buf: dev.allocate(s).unwrap(),
                written: dev.create_event().unwrap(),
                consumed: dev.create_event().unwrap(),
                has_consumer: false,
            })
            .collect();
        // Two destinations per slot, one in DRAM and one in L1, same shape and type.
        let mut dests: Vec<[Dest; 2]> = specs
            .iter()
            .map(|s| {
                [MemoryConfig::DRAM, MemoryConfig::L1].map(|m| Dest {
                    buf: dev.allocate(&BufferSpec { mem: m, ..*s }).unwrap(),
                    read: dev.create_event().unwrap(),
                    used: false,
                })
            })
            .collect();
        let spare = [dev.create_event().unwrap(), dev.create_event().unwrap()];
        let mut spare_recorded = [false; 2];
        let mut inflight: Vec<Inflight> = Vec::new();
        for step in 0..700u64 {
            let (p, c) = (rng.below(2) as u16, rng.below(2) as u16);
            let i = rng.below(slots.len() as u64) as usize;
            let slot = &mut slots[i];
            if slot.has_consumer {
                dev.wait_for_event(p, &slot.consumed).unwrap();
            }
            let data = pattern(slot.buf.spec().host_bytes() as usize, seed << 32 | step);
            slot.buf.write(p, &data, false).unwrap();
            slot.written.record(p).unwrap();
            for (k, ev) in spare.iter().enumerate() {
                if rng.chance(15) {
                    ev.record(rng.below(2) as u16).unwrap();
                    spare_recorded[k] = true;
                }
                if spare_recorded[k] && rng.chance(10) {
                    dev.wait_for_event(rng.below(2) as u16, ev).unwrap();
                }
            }
            dev.wait_for_event(c, &slot.written).unwrap();
            let what = format!("{sel} step {step}: slot {i} written on queue {p}, consumed on queue {c}");
            if rng.chance(70) {
                let d = &mut dests[i][rng.below(2) as usize];
                if d.used {
                    dev.wait_for_event(c, &d.read).unwrap();
                }
                dev.reshard_into(c, &slot.buf, &d.buf).unwrap();
                slot.consumed.record(c).unwrap();
                // The copy may be read on either queue: on the other one, after waiting for the copy.
                let rq = if rng.chance(30) { 1 - c } else { c };
                if rq != c {
                    dev.wait_for_event(rq, &slot.consumed).unwrap();
                }
                inflight.push(Inflight::start(&d.buf, rq, data, format!("{what}, copy read on queue {rq}")));
                d.read.record(rq).unwrap();
                d.used = true;
            } else {
                inflight.push(Inflight::start(&slot.buf, c, data, format!("{what}, read directly")));
                slot.consumed.record(c).unwrap();
            }
            slot.has_consumer = true;
            if rng.chance(3) || inflight.len() > 64 {
                dev.synchronize().unwrap();
                inflight.drain(..).for_each(Inflight::check);
            }
            steps_done += 1;
        }
        dev.synchronize().unwrap();
        inflight.drain(..).for_each(Inflight::check);
    }
    assert_eq!(steps_done, 2800);
}

/// A barrier that a panicking thread breaks, so that the others fail too instead of waiting for it forever.
struct Rendezvous {
    /// (threads arrived, generation, broken)
    state: Mutex<(usize, u64, bool)>,
    cv: Condvar,
    n: usize,
}

impl Rendezvous {
    fn new(n: usize) -> Rendezvous {
        Rendezvous { state: Mutex::new((0, 0, false)), cv: Condvar::new(), n }
    }

    fn wait(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        assert!(!g.2, "another thread failed");
        let generation = g.1;
        g.0 += 1;
        if g.0 == self.n {
            (g.0, g.1) = (0, g.1 + 1);
            self.cv.notify_all();
            return;
        }
        while g.1 == generation && !g.2 {
            g = self.cv.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        assert!(!g.2, "another thread failed");
    }
}

/// Breaks the rendezvous when its thread unwinds.
struct BreakOnPanic(Arc<Rendezvous>);

impl Drop for BreakOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.state.lock().unwrap_or_else(|e| e.into_inner()).2 = true;
            self.0.cv.notify_all();
        }
    }
}

/// Events shared between threads: four threads each drive their own queue of an `emu:queues=4` device. In each
/// round every thread writes its buffer and records its `written` event (and a shared `ticker` event all threads
/// re-record); after a barrier each thread waits on its queue for its neighbour's event, copies the neighbour's
/// buffer and checks it, synchronizes a third thread's event from the host and reads that thread's buffer, and
/// queries and synchronizes the ticker whoever recorded it last.
#[test]
fn events_shared_between_threads_each_driving_its_own_queue() {
    const Q: usize = 4;
    const ROUNDS: u64 = 120;
    let dev = open("emu:queues=4,jitter=11,jitter_us=30,jitter_pct=20", &params(Q as u16));
    let s = f32_spec(32, 64, MemoryConfig::DRAM);
    let src: Arc<Vec<Buffer>> = Arc::new((0..Q).map(|_| dev.allocate(&s).unwrap()).collect());
    let dst: Arc<Vec<Buffer>> =
        Arc::new((0..Q).map(|_| dev.allocate(&f32_spec(32, 64, MemoryConfig::L1)).unwrap()).collect());
    let written: Arc<Vec<Event>> = Arc::new((0..Q).map(|_| dev.create_event().unwrap()).collect());
    let ticker = Arc::new(dev.create_event().unwrap());
    let barrier = Arc::new(Rendezvous::new(Q));
    let value = move |q: usize, r: u64| pattern(s.host_bytes() as usize, (q as u64) << 32 | r);
    let threads: Vec<_> = (0..Q)
        .map(|me| {
            let (dev, src, dst, written, ticker, barrier) =
                (dev.clone(), src.clone(), dst.clone(), written.clone(), ticker.clone(), barrier.clone());
            std::thread::spawn(move || {
                let _break = BreakOnPanic(barrier.clone());
                let q = me as u16;
                for r in 0..ROUNDS {
                    src[me].write(q, &value(me, r), false).unwrap();
                    written[me].record(q).unwrap();
                    ticker.record(q).unwrap();
                    barrier.wait();
                    let next = (me + 1) % Q;
                    dev.wait_for_event(q, &written[next]).unwrap();
                    dev.reshard_into(q, &src[next], &dst[me]).unwrap();
                    let what = format!("thread {me} round {r}");
                    assert_bytes_eq(&dst[me].read_to_vec(q).unwrap(), &value(next, r), &format!("{what}: copy"));
                    let far = (me + 2) % Q;
                    written[far].synchronize().unwrap();
                    assert_bytes_eq(&src[far].read_to_vec(q).unwrap(), &value(far, r), &format!("{what}: far"));
                    ticker.query().unwrap();
                    ticker.synchronize().unwrap();
                    // Nobody overwrites a buffer before every thread has read it.
                    barrier.wait();
                }
            })
        })
        .collect();
    // Join them all, then report the first thread's own failure (not the "another thread failed" of the rest).
    let results: Vec<_> = threads.into_iter().map(|t| t.join()).collect();
    let mut failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
        .collect();
    failures.sort_by_key(|m| m.contains("another thread failed"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    dev.synchronize().unwrap();
}

/// The hang and `finish` tests stop a queue behind the driver's back; this checks that doing so is reliable
/// (contract §3: no record starts after `Q_CTRL = 0`), right after the device opened, when the queue's engine may
/// still be setting itself up. A race there once let about one record in 75 through.
#[test]
fn a_queue_stopped_behind_the_driver_starts_no_later_record() {
    let p = DeviceParams { issue_ring_size: 64 << 10, completion_ring_size: 64 << 10, ..params(2) };
    let dev = open("emu", &p);
    let t = dev.transport().unwrap();
    let e = dev.create_event().unwrap();
    for cycle in 0..300 {
        t.write32(regs::queue_reg(1, regs::queue::CTRL), 0);
        e.record(1).unwrap();
        // Give the engine time to (wrongly) run it; the check does not depend on how long this takes.
        std::thread::sleep(Duration::from_micros(100));
        assert!(!e.query().unwrap(), "cycle {cycle}: queue 1 ran a record after Q_CTRL = 0");
        // The reset re-enables the queue from scratch, which is when the engine is most likely to be mid-loop.
        dev.reset().unwrap();
    }
    round_trip(&dev, 1, 1);
}

/// A wait that can never complete ends in `Error::Timeout` after the device's (short) timeout, with a message that
/// names the wait and dumps every queue's state: ring pointers, records retired and the last tag, events done and
/// issued, the last device-side wait and the awaited event. Queue 1 stops fetching (behind the driver's back), so
/// queue 0's wait for an event recorded on queue 1 never ends. Then `Device::reset` makes the device usable again;
/// a second device in the same state closes cleanly instead.
#[test]
fn a_wait_that_can_never_complete_times_out_with_the_queue_state_then_reset_recovers() {
    let p = DeviceParams { timeout: Duration::from_millis(300), ..params(2) };
    for recover in ["reset", "close"] {
        let dev = open("emu", &p);
        round_trip(&dev, 0, 1);
        let t = dev.transport().unwrap();
        t.write32(regs::queue_reg(1, regs::queue::CTRL), 0);
        let (a, b) = (dev.create_event().unwrap(), dev.create_event().unwrap());
        a.record(1).unwrap();
        let (_, a_id) = a.last_record().unwrap();
        dev.wait_for_event(0, &a).unwrap();
        b.record(0).unwrap();
        let (_, b_id) = b.last_record().unwrap();
        // Nothing retires while queue 0 waits for an event queue 1 will never record: the device is idle, and
        // the message says so rather than only advising a longer timeout.
        let msg = expect_err!(
            b.synchronize(),
            Error::Timeout { queue: 0, device_busy: false, after, .. } if *after == Duration::from_millis(300),
            [
                &format!("event_synchronize (queue 0 event {b_id})"),
                "did not complete within 300ms",
                "The device was idle",
                "raising DeviceParams::timeout (timeout_ms in C) will not help",
                "queue 0: issue ring host wr=",
                "device ISSUE_RD=",
                "records retired",
                "last tag",
                "EVENT_DONE=",
                &format!("last device-side wait enqueued: queue 1 event {a_id}"),
                "WAITING_EVENT",
                "queue 1: issue ring host wr=",
                &format!("awaited: queue 0 event {b_id}"),
            ]
        );
        eprintln!("hang report:\n{msg}");
        // The device has not consumed queue 0's records past the wait: its read pointer is behind the host's.
        let q0 = msg.lines().find(|l| l.trim_start().starts_with("queue 0:")).unwrap();
        let hex = |key: &str| {
            let v = q0.split(key).nth(1).unwrap().split(|c: char| !c.is_ascii_hexdigit() && c != 'x').next().unwrap();
            u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
        };
        assert!(hex("device ISSUE_RD=") < hex("issue ring host wr="), "{q0}");
        expect_err!(
            dev.finish(0),
            Error::Timeout { queue: 0, device_busy: false, .. },
            ["finish", "did not complete within 300ms"]
        );
        assert!(!a.query().unwrap());
        if recover == "close" {
            dev.close().unwrap();
            expect_err!(dev.finish(0), Error::Closed { device } if *device == dev.info().name, ["is closed"]);
            continue;
        }
        dev.reset().unwrap();
        // Records from before the reset were dropped: their events must be recorded again.
        expect_err!(
            b.synchronize(),
            Error::DroppedByReset { call: "event_synchronize", .. },
            ["before the device was reset"]
        );
        for q in 0..2 {
            round_trip(&dev, q, 10 + q as u64);
        }
        a.record(1).unwrap();
        dev.wait_for_event(0, &a).unwrap();
        b.record(0).unwrap();
        b.synchronize().unwrap();
        let x = dev.allocate(&f32_spec(8, 8, MemoryConfig::L1)).unwrap();
        dev.fill(0, &x, 3.0).unwrap();
        assert_eq!(decode(&x.read_to_vec(0).unwrap(), DType::Float32), vec![3.0; 64]);
    }
}

/// A wait that times out while the device works through a long queue (each launch takes 40 ms of modelled time)
/// says the device was busy and advises a longer timeout; the work was only slow, and completes given time.
#[test]
fn a_timeout_while_the_device_is_busy_says_so_and_advises_a_longer_timeout() {
    let p = DeviceParams { timeout: Duration::from_millis(200), ..params(1) };
    let dev = open("emu:paced,launch_ns=40000000", &p);
    let x = dev.allocate(&f32_spec(8, 8, MemoryConfig::L1)).unwrap();
    for i in 0..20 {
        dev.fill(0, &x, i as f32).unwrap();
    }
    expect_err!(
        dev.finish(0),
        Error::Timeout { queue: 0, device_busy: true, .. },
        [
            "finish (queue 0 event",
            "did not complete within 200ms",
            "The device was busy",
            "Raise DeviceParams::timeout (timeout_ms in C)",
            "queue 0: issue ring host wr=",
        ]
    );
    let done = dev.create_event().unwrap();
    done.record(0).unwrap();
    done.synchronize_within(Duration::from_secs(30)).unwrap();
    assert_eq!(decode(&x.read_to_vec(0).unwrap(), DType::Float32), vec![19.0; 64]);
}
