//! Every decoder of the contract (`ttdrv-contract`) on arbitrary bytes, then the emulated device executing the same
//! bytes as a record stream against its memories: nothing may panic (debug assertions and overflow checks are on in
//! fuzz builds), the device only executes or faults, and every reset brings it back (docs/device-interface.md §4,
//! §7). The input is a stream of records, each as long as its header's `length` says (see
//! `ttdrv_testkit::feeder::RecordFeeder::feed_stream`); its first byte also picks the emulated device: unpaced, or
//! paced (the timing model's arithmetic on record-chosen sizes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use ttdrv::contract::kernel::{self, ACCESSOR_WORDS, Accessor, BLOCK_WORDS, Block, Geometry, ShardGrid};
use ttdrv::contract::records::{self, COMPL_HEADER_LEN, CoreRect, FIXED_LEN, Opcode};
use ttdrv::contract::{Memory, regs};
use ttdrv::transport::emulated::EmuConfig;
use ttdrv_testkit::feeder::{Outcome, RecordFeeder};

/// Small memories keep what a kernel may legitimately allocate (a tensor filling a unit) far below the fuzzer's
/// memory limit.
const DEVICES: [&str; 2] = [
    "dram=8M,l1=256K,grid=4x4",
    "dram=8M,l1=256K,grid=4x4,paced,core_gflops=100000,core_gbps=100000,pcie_gbps=10000,dram_gbps=10000",
];

fn feeder(i: usize) -> &'static Mutex<RecordFeeder> {
    static F: [OnceLock<Mutex<RecordFeeder>>; 2] = [OnceLock::new(), OnceLock::new()];
    F[i].get_or_init(|| {
        let mut f = RecordFeeder::new(EmuConfig::parse(DEVICES[i]).expect("fuzz device")).expect("emulated device");
        f.set_patience(Duration::from_secs(2));
        Mutex::new(f)
    })
}

fn words(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The contract's pure decoders and the arithmetic built on them.
fn decoders(data: &[u8]) {
    let mut fixed = [0u8; FIXED_LEN];
    let n = data.len().min(FIXED_LEN);
    fixed[..n].copy_from_slice(&data[..n]);
    let h = records::decode_header(&fixed);
    let _ = Opcode::name_of(h.opcode as u32);
    match records::decode(&fixed) {
        Ok((_, body)) => {
            let _ = body.opcode().name();
            if let records::Body::Launch(l) = body {
                let rest = data.get(FIXED_LEN..).unwrap_or(&[]);
                if let Some(args) = records::decode_launch_args(&l, rest) {
                    assert_eq!(args.per_core.len(), l.explicit_words() * l.rect.count());
                    assert_eq!(args.steps.len(), l.num_steps as usize);
                    let _ = args.rt().check(l.num_rt_args as usize, l.rect.count());
                }
                let _ = l.rect.cores().take(1024).count();
                let _ = l.rect.width();
            }
            if let records::Body::WritePaged(p) | records::Body::ReadPaged(p) = body {
                let _ = p.bytes();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let mut ch = [0u8; COMPL_HEADER_LEN];
    ch.copy_from_slice(&fixed[..COMPL_HEADER_LEN]);
    let c = records::decode_compl(&ch);
    let _ = records::ComplKind::from_u8(c.kind);
    let mut img = [0u8; kernel::IMAGE_HEADER];
    let n = data.len().min(kernel::IMAGE_HEADER);
    img[..n].copy_from_slice(&data[..n]);
    if let Some(i) = kernel::decode_image(&img) {
        let _ = kernel::BuiltinKernel::from_name(&i.name);
    }
    let w = words(data);
    let _ = CoreRect { x0: fixed[0], y0: fixed[1], x1: fixed[2], y1: fixed[3] }.count();
    let _ = ShardGrid::Banks { first: h.tag as u16, last: (h.tag >> 16) as u16 }.len();
    let _ = regs::decode_queue_reg(regs::BarOffset(h.tag));
    let _ = kernel::bf16_to_f32(h.tag as u16);
    let _ = kernel::f32_to_bf16(f32::from_bits(h.tag));
    // Accessors: decoded, validated against small and large devices, and located at corners of their shape.
    for acc in w.windows(ACCESSOR_WORDS).step_by(ACCESSOR_WORDS).take(4) {
        let Some(a) = Accessor::from_words(acc) else { continue };
        let _ = a.to_words();
        let _ = a.page_bytes();
        let _ = a.shard_blocks();
        let _ = a.grid.len();
        for geo in [
            Geometry { dram_banks: 8, grid_x: 4, grid_y: 4, bank_size: 1 << 20, l1_size: 256 << 10 },
            Geometry { dram_banks: 64, grid_x: 16, grid_y: 16, bank_size: 1 << 32, l1_size: 16 << 20 },
        ] {
            let _ = a.footprint(&geo);
            if a.validate(&geo).is_ok() {
                for (r, c) in [(0, 0), (a.rows - 1, a.cols - 1), (a.rows / 2, a.cols / 3), (a.rows - 1, 0)] {
                    let run = a.locate(&geo, r, c);
                    assert!(run.len >= 1 && run.len <= a.cols - c, "{a:?} at ({r}, {c}): {run:?}");
                    assert!((run.unit as u32) < geo.units(a.mem), "{a:?} at ({r}, {c}): unit {}", run.unit);
                }
            }
        }
    }
    if w.len() >= BLOCK_WORDS {
        let _ = Block::from_words(&w[..BLOCK_WORDS]).is_empty();
    }
    let _ = Memory::from_u8(fixed[16]);
    // The emulator's option parser: arbitrary text.
    if let Ok(s) = std::str::from_utf8(data)
        && s.len() < 256
    {
        let _ = EmuConfig::parse(s);
    }
}

fuzz_target!(|data: &[u8]| {
    decoders(data);
    let Some((&pick, stream)) = data.split_first() else { return };
    let mut f = feeder((pick & 1) as usize).lock().unwrap_or_else(|e| e.into_inner());
    let outcomes = f.feed_stream(stream).unwrap_or_else(|e| panic!("the device did not come back: {e}"));
    assert_eq!(f.engine_panics(), 0, "a queue thread panicked");
    // Leave the device clean for the next input.
    if outcomes.last().is_some_and(|o| *o != Outcome::Consumed) || f.fault().is_some() {
        f.reset().unwrap_or_else(|e| panic!("the device did not come back: {e}"));
    }
});
