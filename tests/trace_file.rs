//! Saved traces (`trace_save` / `trace_load`, src/device/trace_file.rs): a trace saved in one process replays
//! bit-identically in another; the loader refuses a truncated, corrupted, mismatched or crafted file with an error
//! naming what is wrong, leaving nothing behind; a trace with events cannot be saved.

mod common;
use ttdrv_testkit::{expect_err, hostref};

use common::{in_child, open, run_child, small_params};
use hostref::*;
use std::path::PathBuf;
use std::time::Duration;
use ttdrv::contract::kernel::DType::Float32;
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::device::trace_file::{HEADER_LEN, TraceFile, crc32};
use ttdrv::*;

fn params() -> DeviceParams {
    DeviceParams {
        num_command_queues: 2,
        trace_region_size: 1 << 20,
        timeout: Duration::from_secs(30),
        ..small_params()
    }
}

/// The model both processes build, allocating in the same order: `y = gelu(x @ w) + x`, its intermediates freed
/// during the capture (so the trace owns them). Returns the device, the external buffers (`x`, `w`, `y`) and the
/// input values.
struct Model {
    dev: Device,
    x: Buffer,
    w: Buffer,
    y: Buffer,
}

const N: u32 = 64;

fn model() -> Model {
    let dev = open("emu", &params());
    let s = BufferSpec::new(N, N, Float32, MemoryConfig::L1);
    let xv = random_values(&mut Rng::new(7), (N * N) as usize, -1.0, 1.0, Float32);
    let wv = random_values(&mut Rng::new(8), (N * N) as usize, -0.2, 0.2, Float32);
    let x = dev.buffer_from_host(&s, 0, &encode(&xv, Float32)).unwrap();
    let w =
        dev.buffer_from_host(&BufferSpec::new(N, N, Float32, MemoryConfig::DRAM), 0, &encode(&wv, Float32)).unwrap();
    let y = dev.allocate(&s).unwrap();
    Model { dev, x, w, y }
}

impl Model {
    fn run(&self) {
        let d = &self.dev;
        let t = d.matmul(0, &self.x, &self.w, &MemoryConfig::L1).unwrap();
        let u = d.unary(0, UnaryOp::Gelu, &t, &MemoryConfig::L1).unwrap();
        drop(t);
        d.binary_into(0, BinaryOp::Add, &u, &self.x, &self.y).unwrap();
    }

    /// The trace's bindings in the file's order: by memory (DRAM, L1, L1_SMALL), then address.
    fn bindings(&self) -> [&Buffer; 3] {
        [&self.w, &self.x, &self.y]
    }
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ttdrv-trace-file-{}-{name}", std::process::id()))
}

/// Saves the trace here, replays it in a child process (which builds the same buffers and loads the file), and
/// compares the child's output with this process's, bit for bit.
#[test]
fn a_saved_trace_replays_bit_identically_in_another_process() {
    if in_child() {
        let path = PathBuf::from(std::env::var("TTDRV_TRACE_FILE").unwrap());
        let out = PathBuf::from(std::env::var("TTDRV_TRACE_OUT").unwrap());
        let m = model();
        let tid = m.dev.trace_load(&path, &m.bindings(), 0).unwrap();
        let info = m.dev.trace_info(tid).unwrap();
        assert!(info.stored && info.launches == 3, "{info:?}");
        // x, w and y are bound; the matmul's and gelu's outputs, freed during the capture, are owned.
        assert!(info.bindings == 3 && info.owned_ranges >= 1 && info.owned_bytes > 0, "{info:?}");
        assert!(info.event_records == 0 && info.event_waits == 0, "{info:?}");
        m.dev.execute_trace(tid, 0, true).unwrap();
        std::fs::write(out, m.y.read_to_vec(0).unwrap()).unwrap();
        return;
    }
    let m = model();
    m.run();
    let tid = m.dev.begin_trace_capture(0).unwrap();
    m.run();
    m.dev.end_trace_capture(tid, 0).unwrap();
    let saved = m.dev.trace_info(tid).unwrap();
    assert!(saved.bindings == 3 && saved.owned_ranges >= 1 && saved.owned_bytes > 0, "{saved:?}");
    m.dev.execute_trace(tid, 0, true).unwrap();
    let want = m.y.read_to_vec(0).unwrap();
    let (file, out) = (tmp("saved"), tmp("child-out"));
    m.dev.trace_save(tid, &file).unwrap();
    run_child(
        "a_saved_trace_replays_bit_identically_in_another_process",
        &[("TTDRV_TRACE_FILE", file.to_str().unwrap()), ("TTDRV_TRACE_OUT", out.to_str().unwrap())],
    );
    let got = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&file);
    let _ = std::fs::remove_file(&out);
    assert!(got == want, "the replay in the child differs from the parent's");
    // And the output is right (not merely equal).
    let xv = decode(&m.x.read_to_vec(0).unwrap(), Float32);
    assert_eq!(decode(&got, Float32).len(), xv.len());
}

/// Re-seals a modified body with a correct checksum: what a crafted file looks like.
fn reseal(mut f: Vec<u8>) -> Vec<u8> {
    let crc = crc32(&f[HEADER_LEN..]);
    f[24..28].copy_from_slice(&crc.to_le_bytes());
    f
}

/// Every kind of bad file is refused with an error naming the problem, and leaves the device as it was: the
/// ranges the trace would own stay free, and the good file loads afterwards.
#[test]
fn bad_files_are_refused_by_name() {
    let m = model();
    m.run();
    let tid = m.dev.begin_trace_capture(0).unwrap();
    m.run();
    m.dev.end_trace_capture(tid, 0).unwrap();
    let good = m.dev.trace_save_bytes(tid).unwrap();
    // The fuzz target's seed (fuzz/corpus/trace_load/) is this file: TTDRV_TRACE_SEED=path writes it.
    if let Some(p) = std::env::var_os("TTDRV_TRACE_SEED") {
        std::fs::write(p, &good).unwrap();
    }
    let f = TraceFile::decode(&good).unwrap();
    assert_eq!(f.bindings.iter().map(|b| b.name.as_str()).collect::<Vec<_>>(), ["input0", "input1", "output0"]);
    assert!(!f.owned.is_empty(), "the intermediates are the trace's");
    m.dev.release_trace(tid).unwrap();
    let b = m.bindings();
    let load = |bytes: &[u8]| m.dev.trace_load_bytes(bytes, &b, 0);

    expect_err!(load(&good[..10]), Error::TraceFile { .. }, ["shorter than the 32-byte header"]);
    expect_err!(load(&good[..good.len() - 1]), Error::TraceFile { .. }, ["truncated"]);
    let mut bad = good.clone();
    bad[0] = b'X';
    expect_err!(load(&bad), Error::TraceFile { .. }, ["not a trace saved by ttdrv"]);
    let mut bad = good.clone();
    bad[8] = 9;
    expect_err!(load(&bad), Error::TraceFile { .. }, ["format version 9"]);
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    expect_err!(load(&bad), Error::TraceFile { .. }, ["checksum mismatch"]);

    // Crafted files with a valid checksum: the loader decodes the records and checks every address.
    let mut g = f.clone();
    g.records[0] = 0x02; // WRITE_LINEAR
    expect_err!(load(&g.encode()), Error::TraceFile { .. }, ["trace offset 0"]);
    let mut g = f.clone();
    g.owned.clear();
    expect_err!(
        load(&g.encode()),
        Error::TraceFile { .. },
        ["not inside a range the trace owns or a binding provides"]
    );
    let mut g = f.clone();
    g.kernels[0].offset ^= 0x40;
    expect_err!(load(&g.encode()), Error::TraceFile { .. }, ["none of the file's kernel images"]);
    let mut g = f.clone();
    g.shape.grid_x += 1;
    expect_err!(load(&g.encode()), Error::TraceFile { .. }, ["device of another shape"]);
    let mut g = f.clone();
    g.kernels[0].name = "ttdrv.nope".into();
    expect_err!(load(&g.encode()), Error::TraceFile { .. }, ["ttdrv.nope", "lacks"]);
    // A count that claims more items than the file holds.
    let mut bad = good.clone();
    let at = HEADER_LEN + 4 + 36 + 8 + 4;
    bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    expect_err!(load(&reseal(bad)), Error::TraceFile { .. }, ["kernel count", "corrupt"]);

    // Bindings: count, spec, address.
    expect_err!(m.dev.trace_load_bytes(&good, &b[..2], 0), Error::TraceFile { .. }, ["2 bindings given", "takes 3"]);
    let other = m.dev.allocate(&BufferSpec::new(N, 2 * N, Float32, MemoryConfig::L1)).unwrap();
    expect_err!(
        m.dev.trace_load_bytes(&good, &[&m.w, &m.x, &other], 0),
        Error::TraceFile { .. },
        ["binding output0 must be"]
    );
    drop(other);
    // An owned range in use here.
    let (ty, s, _) = f.owned[0];
    assert_eq!(ty, BufferType::L1);
    let squatter = m.dev.allocate(&BufferSpec::new(N, N, Float32, MemoryConfig::L1)).unwrap();
    assert!(squatter.address() <= s, "the squatter covers the owned range");
    // A range that cannot move (its file lists no address words for it, as a trace with an undeclared launch).
    let mut g = f.clone();
    g.owned_words = vec![None; g.owned.len()];
    expect_err!(load(&g.encode()), Error::TraceFile { .. }, ["in use here", "cannot move"]);
    // Address words that are not there are refused, before anything is claimed.
    let mut g = f.clone();
    if let Some(Some(w)) = g.owned_words.first_mut() {
        w.push((64, 0));
    }
    expect_err!(load(&g.encode()), Error::TraceFile { .. }, ["no such accessor address"]);
    // A movable one goes elsewhere and the trace still replays right (tests/trace_patch.rs checks the values).
    let moved = load(&good).unwrap();
    m.dev.execute_trace(moved, 0, true).unwrap();
    m.dev.release_trace(moved).unwrap();
    drop(squatter);

    // Nothing was left behind: the good file loads and replays.
    let tid = load(&good).unwrap();
    m.dev.execute_trace(tid, 0, true).unwrap();
    m.dev.release_trace(tid).unwrap();
}

/// A trace with events names events of this process: saving it is refused, naming why.
#[test]
fn a_trace_with_events_is_not_saved() {
    let m = model();
    m.run();
    let ev = m.dev.create_event().unwrap();
    let tid = m.dev.begin_trace_capture(0).unwrap();
    m.run();
    ev.record(0).unwrap();
    m.dev.end_trace_capture(tid, 0).unwrap();
    expect_err!(m.dev.trace_save_bytes(tid), Error::TraceFile { .. }, ["records or waits for events"]);
}

/// The fuzz target's committed corpus (`fuzz/corpus/trace_load/`, regressions included) in the ordinary test run:
/// each input as it is and re-sealed, decoded and checked against the shape it claims, without a panic.
#[test]
fn the_fuzz_corpus_is_refused_or_checked_without_a_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/trace_load");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(e.unwrap().path()).unwrap();
        let mut inputs = vec![data.clone()];
        if data.len() >= HEADER_LEN {
            let mut sealed = data;
            let len = (sealed.len() - HEADER_LEN) as u64;
            sealed[16..24].copy_from_slice(&len.to_le_bytes());
            inputs.push(reseal(sealed));
        }
        for i in inputs {
            if let Ok(f) = TraceFile::decode(&i) {
                let _ = f.check(f.contract.1, &f.shape, u32::MAX);
            }
        }
        n += 1;
    }
    assert!(n >= 2, "the corpus has its seeds");
}
