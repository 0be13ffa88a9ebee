//! Patching a captured trace (src/device/patch.rs): rebinding its external buffers for all later replays or for one,
//! updating its named scalars, each as ordered device-side writes of only the patched words on the replay's queue;
//! a patch racing a replay on another queue is refused unless an event orders it; loaded traces rebind instead of
//! requiring the saved addresses.

mod common;
use common::{open, small_params};
use std::time::Duration;
use ttdrv::contract::kernel::DType::Float32;
use ttdrv::contract::kernel::{ACCESSOR_ADDR_WORD, ACCESSOR_WORDS, BLOCK_WORDS, BuiltinKernel};
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::device::program::{KernelSource, ProgramDesc, RtArgs};
use ttdrv::*;
use ttdrv_testkit::expect_err;
use ttdrv_testkit::hostref::*;

const R: u32 = 32;
const C: u32 = 64;

fn params() -> DeviceParams {
    DeviceParams {
        num_command_queues: 2,
        trace_region_size: 4 << 20,
        timeout: Duration::from_secs(30),
        ..small_params()
    }
}

fn spec() -> BufferSpec {
    BufferSpec::new(R, C, Float32, MemoryConfig::L1)
}

fn values(seed: u64) -> Vec<f32> {
    random_values(&mut Rng::new(seed), (R * C) as usize, -2.0, 2.0, Float32)
}

fn upload(dev: &Device, v: &[f32]) -> Buffer {
    dev.buffer_from_host(&spec(), 0, &encode(v, Float32)).unwrap()
}

fn read(dev: &Device, b: &Buffer) -> Vec<f32> {
    let _ = dev;
    decode(&b.read_to_vec(0).unwrap(), Float32)
}

/// The host reference of the captured model: `(x + b) × factor`.
fn reference(x: &[f32], b: &[f32], factor: f32) -> Vec<f32> {
    x.iter().zip(b).map(|(x, b)| (x + b) * factor).collect()
}

/// Captures `y = scale(x + b, factor)` on queue `cq`, its intermediate freed during the capture (so the trace owns
/// it); returns the trace id.
fn capture(dev: &Device, cq: u16, x: &Buffer, b: &Buffer, y: &Buffer, factor: f32) -> u32 {
    // Warm the program cache: a capture can only launch cached programs.
    let t = dev.binary(cq, BinaryOp::Add, x, b, &MemoryConfig::L1).unwrap();
    dev.unary_into(cq, UnaryOp::Scale(factor), &t, y).unwrap();
    drop(t);
    dev.finish(cq).unwrap();
    let tid = dev.begin_trace_capture(cq).unwrap();
    let t = dev.binary(cq, BinaryOp::Add, x, b, &MemoryConfig::L1).unwrap();
    dev.unary_into(cq, UnaryOp::Scale(factor), &t, y).unwrap();
    drop(t);
    dev.end_trace_capture(tid, cq).unwrap();
    tid
}

/// The index of the binding bound to `buf` now.
fn index_of(dev: &Device, tid: u32, buf: &Buffer) -> usize {
    dev.trace_bindings(tid).unwrap().iter().position(|b| b.address == buf.address()).expect("bound")
}

#[test]
fn a_trace_lists_its_bindings_and_the_scalars_of_its_ops() {
    let dev = open("emu", &params());
    let (xv, bv) = (values(1), values(2));
    let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
    let tid = capture(&dev, 0, &x, &b, &y, 0.5);
    let bs = dev.trace_bindings(tid).unwrap();
    assert_eq!(bs.len(), 3, "{bs:?}");
    for (buf, output) in [(&x, false), (&b, false), (&y, true)] {
        let bd = &bs[index_of(&dev, tid, buf)];
        assert_eq!(bd.output, output, "{bd:?}");
        assert!(bd.rebindable && bd.words >= 1, "{bd:?}");
        assert_eq!(&bd.spec, buf.spec());
    }
    let names: Vec<&str> = bs.iter().map(|b| b.name.as_str()).collect();
    assert!(names.contains(&"input0") && names.contains(&"input1") && names.contains(&"output0"), "{names:?}");
    let sc = dev.trace_scalars(tid).unwrap();
    assert_eq!(sc.len(), 1, "{sc:?}");
    assert_eq!(sc[0].name, "scale.factor#0");
    assert_eq!(sc[0].kind, ScalarKind::F32);
    assert_eq!(f32::from_bits(sc[0].value), 0.5);
    let info = dev.trace_info(tid).unwrap();
    assert_eq!((info.bindings, info.rebindable, info.scalars), (3, 3, 1));
    assert_eq!(info.patchable_words, bs.iter().map(|b| b.words).sum::<u32>() + sc[0].words);
}

/// The guide's §1.3.2 input pattern without its address assertion: the new input lands anywhere, the trace is
/// rebound to it, and every replay's output is checked; the old replay enqueued before the rebinding (on a slow
/// device, so it is still queued) still computes with the old buffers.
#[test]
fn rebinding_is_ordered_on_the_replay_queue_and_holds_for_later_replays() {
    let dev = open("emu:slow_us=300", &params());
    let (xv, bv) = (values(3), values(4));
    let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
    let tid = capture(&dev, 0, &x, &b, &y, 2.0);
    let (ix, iy) = (index_of(&dev, tid, &x), index_of(&dev, tid, &y));
    let mut prev_y = y;
    let mut prev_ref = reference(&xv, &bv, 2.0);
    let mut kept = Vec::new();
    dev.execute_trace(tid, 0, false).unwrap();
    for i in 0..6u64 {
        // A new input and output allocated while other buffers are live: not at the captured addresses.
        let pad = dev.allocate(&BufferSpec::new(8, 8 + i as u32 * 8, Float32, MemoryConfig::L1)).unwrap();
        let xv2 = values(100 + i);
        let x2 = upload(&dev, &xv2);
        let y2 = dev.allocate(&spec()).unwrap();
        assert_ne!(x2.address(), x.address());
        // Enqueued behind the replay above, which still reads the old input and writes the old output.
        dev.trace_rebind(tid, 0, &[(ix, &x2), (iy, &y2)], &[]).unwrap();
        dev.execute_trace(tid, 0, false).unwrap();
        assert_eq!(read(&dev, &prev_y), prev_ref, "replay before rebinding {i}");
        prev_ref = reference(&xv2, &bv, 2.0);
        assert_eq!(read(&dev, &y2), prev_ref, "replay after rebinding {i}");
        dev.execute_trace(tid, 0, false).unwrap();
        prev_y = y2;
        drop(pad);
        // Kept until the replays that read it are done (the next iteration's reads wait for them).
        kept.push(x2);
    }
    dev.finish(0).unwrap();
    assert_eq!(read(&dev, &prev_y), prev_ref);
}

#[test]
fn a_binding_for_one_replay_leaves_the_others_alone() {
    let dev = open("emu", &params());
    let (xv, bv, xv2) = (values(5), values(6), values(7));
    let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
    let tid = capture(&dev, 0, &x, &b, &y, 1.5);
    let (ix, iy) = (index_of(&dev, tid, &x), index_of(&dev, tid, &y));
    let x2 = upload(&dev, &xv2);
    let y2 = dev.allocate(&spec()).unwrap();
    for _ in 0..100 {
        dev.execute_trace_with(tid, 0, false, &[(ix, &x2), (iy, &y2)], &[]).unwrap();
        dev.execute_trace(tid, 0, false).unwrap();
    }
    dev.finish(0).unwrap();
    assert_eq!(read(&dev, &y2), reference(&xv2, &bv, 1.5));
    assert_eq!(read(&dev, &y), reference(&xv, &bv, 1.5));
    // The bindings listed are the ones of before.
    assert_eq!(dev.trace_bindings(tid).unwrap()[ix].address, x.address());
    // A failed one-replay binding changes nothing.
    let wrong = dev.allocate(&BufferSpec::new(R, C * 2, Float32, MemoryConfig::L1)).unwrap();
    expect_err!(dev.execute_trace_with(tid, 0, true, &[(ix, &wrong)], &[]), Error::InvalidArgument(_), ["takes a"]);
    expect_err!(
        dev.execute_trace_with(tid, 0, true, &[(ix, &x2), (ix, &x2)], &[]),
        Error::InvalidArgument(_),
        ["twice"]
    );
    dev.execute_trace(tid, 0, true).unwrap();
    assert_eq!(read(&dev, &y), reference(&xv, &bv, 1.5));
}

#[test]
fn a_named_scalar_is_updated_for_later_replays() {
    let dev = open("emu:slow_us=200", &params());
    let (xv, bv) = (values(8), values(9));
    let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
    let tid = capture(&dev, 0, &x, &b, &y, 1.0);
    let iy = index_of(&dev, tid, &y);
    let mut outs = Vec::new();
    for i in 0..8 {
        let f = 0.25 * (i + 1) as f32;
        let out = dev.allocate(&spec()).unwrap();
        dev.trace_rebind(tid, 0, &[(iy, &out)], &[]).unwrap();
        dev.trace_set_scalar(tid, 0, "scale.factor#0", f.to_bits(), &[]).unwrap();
        dev.execute_trace(tid, 0, false).unwrap();
        outs.push((out, f));
    }
    for (out, f) in &outs {
        assert_eq!(read(&dev, out), reference(&xv, &bv, *f), "factor {f}");
    }
    assert_eq!(f32::from_bits(dev.trace_scalars(tid).unwrap()[0].value), 2.0);
    expect_err!(
        dev.trace_set_scalar(tid, 0, "scale.factor#0", f32::NAN.to_bits(), &[]),
        Error::InvalidArgument(_),
        ["finite"]
    );
    expect_err!(dev.trace_set_scalar(tid, 0, "scale.factor", 1, &[]), Error::InvalidArgument(_), ["scale.factor#0"]);
    // Refused patches left the trace as it was.
    dev.trace_rebind(tid, 0, &[(iy, &y)], &[]).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    assert_eq!(read(&dev, &y), reference(&xv, &bv, 2.0));
}

#[test]
fn a_patch_racing_a_replay_on_another_queue_is_refused_or_ordered_by_an_event() {
    let dev = open("emu:slow_us=2000", &params());
    let (xv, bv, xv2) = (values(10), values(11), values(12));
    let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
    let tid = capture(&dev, 0, &x, &b, &y, 3.0);
    let ix = index_of(&dev, tid, &x);
    let x2 = upload(&dev, &xv2);
    // A replay on queue 1, still running (each record takes 2 ms).
    dev.execute_trace(tid, 1, false).unwrap();
    let e = expect_err!(
        dev.trace_rebind(tid, 0, &[(ix, &x2)], &[]),
        Error::Trace { problem: TraceProblem::PatchRacesReplay { queue: 1 }, .. },
        []
    );
    assert!(e.to_string().contains("record an event on queue 1"), "{e}");
    expect_err!(
        dev.trace_set_scalar(tid, 0, "scale.factor#0", 1f32.to_bits(), &[]),
        Error::Trace { problem: TraceProblem::PatchRacesReplay { queue: 1 }, .. },
        []
    );
    // An event recorded on queue 1 before the replay does not order it.
    let early = dev.create_event().unwrap();
    early.record(0).unwrap();
    expect_err!(
        dev.trace_rebind(tid, 0, &[(ix, &x2)], &[&early]),
        Error::Trace { problem: TraceProblem::PatchRacesReplay { .. }, .. },
        []
    );
    // One recorded after it does: queue 0 waits for it on the device.
    let ev = dev.create_event().unwrap();
    ev.record(1).unwrap();
    dev.trace_rebind(tid, 0, &[(ix, &x2)], &[&ev]).unwrap();
    // The replay on queue 1 computed with the old input.
    ev.synchronize().unwrap();
    assert_eq!(read(&dev, &y), reference(&xv, &bv, 3.0));
    // A replay on queue 1 now waits for the patch's writes made on queue 0.
    dev.execute_trace(tid, 1, false).unwrap();
    dev.finish(1).unwrap();
    assert_eq!(read(&dev, &y), reference(&xv2, &bv, 3.0));
    // Once that replay is known done, no event is needed.
    dev.trace_rebind(tid, 0, &[(ix, &x)], &[]).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    assert_eq!(read(&dev, &y), reference(&xv, &bv, 3.0));
}

#[test]
fn rebinding_checks_the_buffer_and_the_replay_checks_it_stays_live() {
    let dev = open("emu", &params());
    let (xv, bv) = (values(13), values(14));
    let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
    let tid = capture(&dev, 0, &x, &b, &y, 1.0);
    let ix = index_of(&dev, tid, &x);
    let other = dev.allocate(&BufferSpec::new(R, C, Float32, MemoryConfig::DRAM)).unwrap();
    expect_err!(dev.trace_rebind(tid, 0, &[(ix, &other)], &[]), Error::InvalidArgument(_), ["takes a"]);
    expect_err!(dev.trace_rebind(tid, 0, &[(7, &x)], &[]), Error::InvalidArgument(_), ["binding 7 does not exist"]);
    expect_err!(
        dev.trace_rebind(tid + 1, 0, &[(ix, &x)], &[]),
        Error::Trace { problem: TraceProblem::NotFound, .. },
        []
    );
    let other_dev = open("emu", &params());
    let foreign = other_dev.allocate(&spec()).unwrap();
    expect_err!(dev.trace_rebind(tid, 0, &[(ix, &foreign)], &[]), Error::WrongDevice { .. }, []);
    // A rebound buffer is held to the same rule as the captured one: freed, the replay refuses to run.
    let x2 = upload(&dev, &values(15));
    let addr = x2.address();
    dev.trace_rebind(tid, 0, &[(ix, &x2)], &[]).unwrap();
    drop(x2);
    let e =
        expect_err!(dev.execute_trace(tid, 0, true), Error::Trace { problem: TraceProblem::RangeFreed { .. }, .. }, []);
    assert!(e.to_string().contains(&format!("{addr:#x}")), "{e}");
    // The original input is still live and can be bound again.
    dev.trace_rebind(tid, 0, &[(ix, &x)], &[]).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    assert_eq!(read(&dev, &y), reference(&xv, &bv, 1.0));
    // During a capture on the patch's queue, patching is refused.
    let t2 = dev.begin_trace_capture(0).unwrap();
    expect_err!(dev.trace_rebind(tid, 0, &[(ix, &x)], &[]), Error::CaptureActive { .. }, []);
    dev.end_trace_capture(t2, 0).unwrap();
}

/// A program launched with `Program::run` declares nothing: its buffers cannot be rebound. With `launch_with` and
/// address roles they can, and a named scalar of a user kernel is patched like an op's.
#[test]
fn programs_declare_their_address_and_scalar_words_with_launch_with() {
    let dev = open("emu", &params());
    let xv = values(16);
    let (x, y) = (upload(&dev, &xv), dev.allocate(&spec()).unwrap());
    // The fill kernel over one core: block words, then y's accessor, then the value.
    let desc = ProgramDesc {
        kernel: KernelSource::Builtin(BuiltinKernel::Fill),
        cores: ttdrv::contract::records::CoreRect { x0: 0, y0: 0, x1: 0, y1: 0 },
        ct_args: vec![],
        cbs: vec![ttdrv::contract::records::CbConfig {
            index: 16,
            page_size: y.accessor().page_bytes() as u32,
            num_pages: 2,
            data_format: Float32 as u32,
        }],
        sems: vec![],
        rt_words: BuiltinKernel::Fill.rt_words() as u16,
    };
    let prog = dev.program(desc).unwrap();
    let mut words = vec![0, R, 0, C];
    words.extend_from_slice(&y.accessor().to_words());
    words.push(7.0f32.to_bits());
    assert_eq!(words.len(), BLOCK_WORDS + ACCESSOR_WORDS + 1);
    prog.run(0, &words, &[&y]).unwrap();
    dev.finish(0).unwrap();
    let opaque = dev.begin_trace_capture(0).unwrap();
    prog.run(0, &words, &[&y]).unwrap();
    dev.end_trace_capture(opaque, 0).unwrap();
    let bs = dev.trace_bindings(opaque).unwrap();
    assert!(!bs[0].rebindable, "{bs:?}");
    let y2 = dev.allocate(&spec()).unwrap();
    let e = expect_err!(
        dev.trace_rebind(opaque, 0, &[(0, &y2)], &[]),
        Error::Trace { problem: TraceProblem::NotRebindable { .. }, .. },
        []
    );
    assert!(e.to_string().contains("launch_with"), "{e}");

    let addr_word = (BLOCK_WORDS + ACCESSOR_ADDR_WORD) as u16;
    let value_word = (BLOCK_WORDS + ACCESSOR_WORDS) as u16;
    let roles = [ArgRole::Address { word: addr_word, buffer: 0 }, ArgRole::Scalar { word: value_word, name: "fill" }];
    // Wrong roles are refused before anything is enqueued.
    let bad = [ArgRole::Address { word: value_word, buffer: 0 }];
    expect_err!(
        prog.launch_with(0, &RtArgs::explicit(&words), &[], &[&y], &bad),
        Error::InvalidArgument(_),
        ["not an address inside"]
    );
    let bad = [ArgRole::Scalar { word: 99, name: "x" }];
    expect_err!(
        prog.launch_with(0, &RtArgs::explicit(&words), &[], &[&y], &bad),
        Error::InvalidArgument(_),
        ["runtime word 99"]
    );
    let bad = [ArgRole::Scalar { word: 0, name: "has space" }];
    expect_err!(
        prog.launch_with(0, &RtArgs::explicit(&words), &[], &[&y], &bad),
        Error::InvalidArgument(_),
        ["printable"]
    );
    let tid = dev.begin_trace_capture(0).unwrap();
    prog.launch_with(0, &RtArgs::explicit(&words), &[], &[&y], &roles).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    assert!(dev.trace_bindings(tid).unwrap()[0].rebindable);
    dev.trace_rebind(tid, 0, &[(0, &y2)], &[]).unwrap();
    dev.trace_set_scalar(tid, 0, "fill", (-1.25f32).to_bits(), &[]).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    assert!(read(&dev, &y2).iter().all(|&v| v == -1.25));
    assert!(read(&dev, &y).iter().all(|&v| v == 7.0), "the first binding keeps its data");
    drop(x);
}

/// A saved trace loads with its bindings anywhere: the loader rewrites their address words and checks the records
/// again; the outputs are those of the original trace.
#[test]
fn a_loaded_trace_takes_its_bindings_at_any_address() {
    let (xv, bv) = (values(17), values(18));
    let bytes = {
        let dev = open("emu", &params());
        let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
        let tid = capture(&dev, 0, &x, &b, &y, 0.75);
        dev.trace_set_scalar(tid, 0, "scale.factor#0", 1.25f32.to_bits(), &[]).unwrap();
        dev.trace_save_bytes(tid).unwrap()
    };
    let f = ttdrv::device::trace_file::TraceFile::decode(&bytes).unwrap();
    assert!(f.bindings.iter().all(|b| b.rebindable && !b.points.is_empty()), "{:?}", f.bindings);
    assert_eq!(f.scalars.len(), 1);
    let dev = open("emu", &params());
    // Other allocations first, so nothing lands where the saving process had it: the bindings are elsewhere, and
    // the range the trace owns (its intermediate) is taken, so the loader moves it too.
    let pad_spec = BufferSpec::new(R * 8, C, Float32, MemoryConfig::L1);
    let pad_v = random_values(&mut Rng::new(21), (R * 8 * C) as usize, -1.0, 1.0, Float32);
    let pad = dev.buffer_from_host(&pad_spec, 0, &encode(&pad_v, Float32)).unwrap();
    let y = dev.allocate(&spec()).unwrap();
    let b = upload(&dev, &bv);
    let x = upload(&dev, &xv);
    let by_name = |n: &str| -> &Buffer {
        let i = f.bindings.iter().position(|b| b.name == n).unwrap();
        let saved = &f.bindings[i];
        // input0 is the lower address of the two inputs in the saving process: x was allocated first there.
        match (saved.output, n) {
            (true, _) => &y,
            (false, "input0") => &x,
            _ => &b,
        }
    };
    let binds: Vec<&Buffer> = f.bindings.iter().map(|sb| by_name(&sb.name)).collect();
    assert!(binds.iter().zip(&f.bindings).any(|(b, sb)| b.address() != sb.address));
    let (_, s0, e0) = f.owned[0];
    assert!(
        pad.address() < e0 && s0 < pad.address() + pad.footprint(),
        "the pad covers the saved owned range: pad {:#x}+{:#x}, owned {:?}, bindings {:?}",
        pad.address(),
        pad.footprint(),
        f.owned,
        f.bindings.iter().map(|b| (b.address, b.footprint)).collect::<Vec<_>>()
    );
    let tid = dev.trace_load_bytes(&bytes, &binds, 0).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    assert_eq!(read(&dev, &y), reference(&xv, &bv, 1.25));
    // The pad kept its data: the moved intermediate went elsewhere.
    assert_eq!(read(&dev, &pad), pad_v);
    let info = dev.trace_info(tid).unwrap();
    assert_eq!(info.owned_ranges, 1);
    // A second load of the same file in the same device moves its intermediate again, beside the first.
    let y3 = dev.allocate(&spec()).unwrap();
    let binds3: Vec<&Buffer> = binds.iter().map(|b| if std::ptr::eq(*b, &y) { &y3 } else { *b }).collect();
    let t3 = dev.trace_load_bytes(&bytes, &binds3, 0).unwrap();
    dev.execute_trace(t3, 0, true).unwrap();
    assert_eq!(read(&dev, &y3), reference(&xv, &bv, 1.25));
    dev.release_trace(t3).unwrap();
    assert_eq!(f32::from_bits(dev.trace_scalars(tid).unwrap()[0].value), 1.25);
    // And it can be rebound again after loading.
    let y2 = dev.allocate(&spec()).unwrap();
    let iy = index_of(&dev, tid, &y);
    dev.trace_rebind(tid, 0, &[(iy, &y2)], &[]).unwrap();
    dev.execute_trace(tid, 0, true).unwrap();
    assert_eq!(read(&dev, &y2), reference(&xv, &bv, 1.25));
}

/// A buffer freed during the capture and another allocated over it (the guide's re-allocation, done inside the
/// capture): the launches hold both buffers' addresses in words the ledger files under the first, so rebinding one
/// alone would leave the other's words pointing at the old range. Neither can be rebound.
#[test]
fn buffers_that_shared_a_range_during_the_capture_cannot_be_rebound() {
    let dev = open("emu", &params());
    let (xv, bv) = (values(19), values(20));
    let (x, b, y) = (upload(&dev, &xv), upload(&dev, &bv), dev.allocate(&spec()).unwrap());
    capture(&dev, 0, &x, &b, &y, 1.0);
    let addr = x.address();
    let tid = dev.begin_trace_capture(0).unwrap();
    dev.binary_into(0, BinaryOp::Add, &x, &b, &y).unwrap();
    drop(x);
    let x2 = dev.allocate(&spec()).unwrap();
    assert_eq!(x2.address(), addr, "first fit puts it where x was");
    dev.binary_into(0, BinaryOp::Add, &x2, &b, &y).unwrap();
    dev.end_trace_capture(tid, 0).unwrap();
    let bs = dev.trace_bindings(tid).unwrap();
    let ix = bs.iter().position(|bd| bd.address == addr).unwrap();
    assert!(!bs[ix].rebindable, "{bs:?}");
    assert!(bs.iter().filter(|bd| bd.address != addr).all(|bd| bd.rebindable), "{bs:?}");
    let x3 = upload(&dev, &xv);
    expect_err!(
        dev.trace_rebind(tid, 0, &[(ix, &x3)], &[]),
        Error::Trace { problem: TraceProblem::NotRebindable { aliased: true, .. }, .. },
        ["used by another buffer during the capture", "keep the buffer alive until end_trace_capture"]
    );
    // The replay still runs against the buffer now at the captured address.
    dev.execute_trace(tid, 0, true).unwrap();
}

/// A patch that stops part-way (here: its queue is hung, so its writes fill the ring and the wait for room times out)
/// leaves some words written and some not. The driver keeps the values of before, refuses every replay (naming the
/// queue that holds the rest of the writes) and any patch elsewhere, until a patch on that queue completes.
#[test]
fn a_patch_that_stops_part_way_refuses_replays_until_repaired() {
    let p = DeviceParams { issue_ring_size: 64 << 10, timeout: Duration::from_millis(300), ..params() };
    let dev = open("emu:hang=1", &p);
    let xv = values(22);
    let (x, y) = (upload(&dev, &xv), dev.allocate(&spec()).unwrap());
    // 600 launches that read x: rebinding x rewrites 600 words, one write record each — more than a 64 KiB ring holds.
    dev.unary_into(0, UnaryOp::Scale(2.0), &x, &y).unwrap();
    dev.finish(0).unwrap();
    let tid = dev.begin_trace_capture(0).unwrap();
    for _ in 0..600 {
        dev.unary_into(0, UnaryOp::Scale(2.0), &x, &y).unwrap();
    }
    dev.end_trace_capture(tid, 0).unwrap();
    dev.finish(0).unwrap();
    let ix = index_of(&dev, tid, &x);
    assert_eq!(dev.trace_bindings(tid).unwrap()[ix].words, 600);
    let x2 = upload(&dev, &values(23));
    expect_err!(dev.trace_rebind(tid, 1, &[(ix, &x2)], &[]), Error::Timeout { .. }, []);
    // Nothing changed in the driver's books, and no replay may run a mix of old and new words.
    assert_eq!(dev.trace_bindings(tid).unwrap()[ix].address, x.address());
    expect_err!(
        dev.execute_trace(tid, 0, true),
        Error::Trace { problem: TraceProblem::PatchIncomplete { queue: 1, .. }, .. },
        ["stopped after enqueueing part of its writes on queue 1", "patch the trace again on queue 1"]
    );
    // A repair on another queue could land before the writes still queued on queue 1.
    expect_err!(
        dev.trace_rebind(tid, 0, &[(ix, &x)], &[]),
        Error::Trace { problem: TraceProblem::PatchIncomplete { queue: 1, .. }, .. },
        []
    );
    dev.release_trace(tid).unwrap();
    // The rest of the device works.
    let z = dev.unary(0, UnaryOp::Scale(2.0), &x, &MemoryConfig::L1).unwrap();
    assert_eq!(read(&dev, &z), xv.iter().map(|v| v * 2.0).collect::<Vec<_>>());
}
