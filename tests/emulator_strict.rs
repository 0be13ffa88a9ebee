//! The emulated device is as strict as hardware (docs/device-interface.md):
//!
//! - page-address arithmetic is checked: a paged write past the end of a unit's memory, whether its offset or its
//!   page number overflows, is an `ADDRESS` fault and writes nothing (it used to wrap into range in release builds
//!   and panic the queue thread in debug builds, leaving the device `RESETTING` for good);
//! - a `LAUNCH` on a core rectangle ending at 255 is a `BAD_RECORD` fault (it used to overflow `u8` while decoding);
//! - no record bytes make a queue thread panic, in any build: thousands of mutated records only execute or fault;
//! - enabling a queue zeroes the device's doorbell copies (contract §3): nothing rung before a disable runs again
//!   after the enable, and a second `Device` opens on a transport whose first one closed cleanly;
//! - a reset or shutdown does not wait out modelled time (contract §7.2: `READY` within 100 ms): `Device::reset` of a
//!   paced or jittered device with seconds of queued work succeeds at once, and closing one is prompt.

mod common;

use common::{pattern, small_params};
use std::time::{Duration, Instant};
use ttdrv::contract::kernel::{self, BuiltinKernel, DType};
use ttdrv::contract::records::{self, CoreRect, FIXED_LEN, Launch, Paged, RecordMeta, RecordSlot};
use ttdrv::contract::regs::{FaultCode, host, queue as qreg};
use ttdrv::contract::{Memory, regs};
use ttdrv::transport::Transport;
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::*;
use ttdrv_testkit::feeder::{Outcome, RecordFeeder};

fn feeder() -> RecordFeeder {
    RecordFeeder::new(EmuConfig::parse("dram=8M,l1=256K").unwrap()).unwrap()
}

fn record(len: usize, encode: impl FnOnce(&mut RecordSlot<'_>)) -> Vec<u8> {
    let mut v = vec![0u8; len];
    encode(&mut RecordSlot::from_slice(&mut v));
    v
}

fn write_paged(x: &Paged, payload: &[u8]) -> Vec<u8> {
    record(records::write_linear_len(payload.len()), |s| {
        records::encode_write_paged(s, RecordMeta::default(), x);
        s.put_bytes(records::PAYLOAD_OFFSET, payload);
        records::pad_payload(s, payload.len());
    })
}

#[track_caller]
fn expect_fault(o: Outcome, code: FaultCode, what: &str) {
    match o {
        Outcome::Fault { code: c, .. } if c == code as u32 => {}
        other => panic!("{what}: expected a {code:?} fault, got {other:?}"),
    }
}

/// A paged write whose page offset passes the end of the address space, or whose page number passes 2³², lands
/// nowhere: an `ADDRESS` fault, the memory it would have wrapped onto unchanged, the device back after a reset.
#[test]
fn a_paged_write_past_the_memory_is_an_address_fault_and_writes_nothing() {
    let mut f = feeder();
    let banks = 8u64;
    let old = pattern(64, 1);
    // Page 2³² - 8 of 8 banks is in bank 0, 2²⁹ - 1 pages of 2 GiB stride up: the product wraps past 2⁶⁴.
    let far_page = u32::MAX - 7;
    let far = (far_page as u64 / banks) * (1 << 31);
    for (name, x, wraps_to) in [
        (
            "offset overflow",
            Paged {
                mem: Memory::Dram,
                page_size: 64,
                base: 0x1000u64.wrapping_sub(far),
                page_stride: 1 << 31,
                start_page: far_page,
                num_pages: 1,
            },
            0x1000,
        ),
        (
            "offset overflow, high base",
            Paged {
                mem: Memory::Dram,
                page_size: 64,
                base: u64::MAX - 63,
                page_stride: 64,
                start_page: 8,
                num_pages: 1,
            },
            0,
        ),
        // Pages u32::MAX and 2³²: the second one's number wraps to page 0 (bank 0 at base) in u32.
        (
            "page number past 2^32",
            Paged {
                mem: Memory::Dram,
                page_size: 64,
                base: 0x1000,
                page_stride: 64,
                start_page: u32::MAX,
                num_pages: 2,
            },
            0x1000,
        ),
    ] {
        assert_eq!(f.write(Memory::Dram, 0, wraps_to, &old), Outcome::Consumed, "{name}: setup");
        let o = f.feed(&write_paged(&x, &pattern(64 * x.num_pages as usize, 2)));
        expect_fault(o, FaultCode::Address, name);
        f.reset().unwrap_or_else(|e| panic!("{name}: {e}"));
        let now = f.read(Memory::Dram, 0, wraps_to, 64).unwrap_or_else(|o| panic!("{name}: read back: {o:?}"));
        assert_eq!(now, old, "{name}: the write wrapped onto bank 0 offset {wraps_to:#x}");
        // And a read of the same pages faults the same way.
        let mut rec = [0u8; FIXED_LEN];
        records::encode_read_paged(&mut RecordSlot::from_slice(&mut rec), RecordMeta::default(), &x);
        expect_fault(f.feed(&rec), FaultCode::Address, &format!("{name} (read)"));
        f.reset().unwrap();
    }
    assert_eq!(f.engine_panics(), 0);
}

/// Core rectangles reaching column or row 255 (256 cores wide, which a `u8` cannot count) decode and fault with
/// `BAD_RECORD` as any rectangle outside the grid does (contract §4.2.6).
#[test]
fn a_launch_on_cores_up_to_255_is_a_bad_record() {
    assert_eq!(CoreRect { x0: 0, y0: 0, x1: 255, y1: 255 }.count(), 65536);
    assert_eq!(kernel::ShardGrid::Cores { x0: 0, y0: 0, x1: 255, y1: 0 }.len(), 256);
    assert_eq!(kernel::ShardGrid::Banks { first: 0, last: u16::MAX }.len(), 65536);
    let mut f = feeder();
    for rect in [
        CoreRect { x0: 0, y0: 0, x1: 255, y1: 255 },
        CoreRect { x0: 0, y0: 0, x1: 255, y1: 0 },
        CoreRect { x0: 255, y0: 255, x1: 255, y1: 255 },
        CoreRect { x0: 0, y0: 0, x1: 0, y1: 255 },
    ] {
        let l = Launch {
            kernel_bank: 0,
            kernel_offset: 0,
            rect,
            ct_args: &[],
            cbs: &[],
            sems: &[],
            num_rt_args: 0,
            args: records::RtArgs::default(),
        };
        let rec = record(records::launch_len(&l), |s| records::encode_launch(s, RecordMeta::default(), &l));
        expect_fault(f.feed(&rec), FaultCode::BadRecord, &format!("{rect:?}"));
        f.reset().unwrap();
    }
    assert_eq!(f.engine_panics(), 0);
}

/// One valid record of each type (and a kernel image to launch), for mutation.
fn samples() -> Vec<Vec<u8>> {
    let img = kernel::encode_image(BuiltinKernel::Fill.name(), &[]);
    let lin = records::Linear { mem: Memory::Dram, unit: 0, offset: 0x8000, len: img.len() as u64 };
    let mut v = vec![record(records::write_linear_len(img.len()), |s| {
        records::encode_write_linear(s, RecordMeta::default(), &lin);
        s.put_bytes(records::PAYLOAD_OFFSET, &img);
        records::pad_payload(s, img.len());
    })];
    let acc = kernel::Accessor {
        mem: Memory::L1,
        layout: kernel::Layout::Interleaved,
        dtype: DType::Float32,
        addr: 0x20000,
        rows: 4,
        cols: 16,
        page_stride: 64,
        shard_rows: 0,
        shard_cols: 0,
        grid: kernel::ShardGrid::Cores { x0: 0, y0: 0, x1: 0, y1: 0 },
        col_major: false,
        tensor_layout: kernel::TensorLayout::RowMajor,
    };
    let mut rt = kernel::Block { r0: 0, r1: 4, c0: 0, c1: 16 }.to_words().to_vec();
    rt.extend_from_slice(&acc.to_words());
    rt.push(1.5f32.to_bits());
    let l = Launch {
        kernel_bank: 0,
        kernel_offset: 0x8000,
        rect: CoreRect { x0: 0, y0: 0, x1: 0, y1: 0 },
        ct_args: &[],
        cbs: &[records::CbConfig { index: 16, page_size: 64, num_pages: 2, data_format: 0 }],
        sems: &[],
        num_rt_args: rt.len() as u16,
        args: records::RtArgs::explicit(&rt),
    };
    v.push(record(records::launch_len(&l), |s| records::encode_launch(s, RecordMeta::default(), &l)));
    let paged = Paged { mem: Memory::L1, page_size: 64, base: 0x20000, page_stride: 64, start_page: 0, num_pages: 4 };
    v.push(write_paged(&paged, &pattern(256, 3)));
    let meta = RecordMeta { flags: records::RecordFlags::PROFILE, tag: 7, profile_slot: 3 };
    v.push(record(FIXED_LEN, |s| records::encode_read_paged(s, meta, &paged)));
    let rl = records::Linear { mem: Memory::L1, unit: 3, offset: 0x20000, len: 100 };
    v.push(record(FIXED_LEN, |s| records::encode_read_linear(s, meta, &rl)));
    v.push(record(FIXED_LEN, |s| records::encode_event_record(s, meta, 1)));
    v.push(record(FIXED_LEN, |s| records::encode_event_wait(s, meta, 0, 1)));
    let x = records::ExecTrace { page_size: 4096, base: 0x8000, trace_len: 128, ..Default::default() };
    v.push(record(FIXED_LEN, |s| records::encode_exec_trace(s, meta, &x, &[])));
    v.push(record(128, |s| records::encode_pad(s, meta)));
    v
}

/// Thousands of records mutated from valid ones — random bytes, and the fields' extreme values — only ever execute
/// or fault; the queue thread never panics (debug builds check every overflow), and every reset brings the device
/// back.
#[test]
fn no_record_bytes_make_the_queue_thread_panic() {
    let mut f = feeder();
    f.set_patience(Duration::from_secs(5));
    let base = samples();
    let mut rng = ttdrv_testkit::hostref::Rng::new(12);
    let extremes: [u64; 6] = [0, 1, 255, 0xFFFF, u32::MAX as u64, u64::MAX];
    let (mut faults, mut consumed) = (0, 0);
    for i in 0..3000 {
        let mut rec = rng.pick(&base).clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(FIXED_LEN.min(rec.len()) as u64) as usize;
            if rng.chance(50) {
                rec[at] = rng.next_u64() as u8;
            } else {
                // A whole field-sized run set to an extreme value.
                let v = *rng.pick(&extremes);
                let n = *rng.pick(&[1usize, 2, 4, 8]);
                let at = at.min(rec.len() - n);
                rec[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
            }
        }
        // Keep the image and a launch's arguments in place sometimes, so launches reach the kernels.
        if i % 7 == 0 {
            assert_eq!(f.feed(&base[0]), Outcome::Consumed);
        }
        match f.feed(&rec) {
            Outcome::Consumed => consumed += 1,
            Outcome::Fault { .. } | Outcome::Stalled => {
                faults += 1;
                f.reset().unwrap_or_else(|e| panic!("record {i} {rec:02x?}: {e}"));
            }
        }
        assert_eq!(f.engine_panics(), 0, "record {i} made a queue thread panic: {rec:02x?}");
    }
    assert!(
        consumed > 100 && faults > 100,
        "{consumed} consumed, {faults} faulted: the mutations are too mild or too wild"
    );
}

/// Contract §3: enabling a queue zeroes the device's copies of the doorbells. After disable → enable, records rung
/// before the disable are not executed again (the read pointer stays 0), and the ring works from its start.
#[test]
fn enabling_a_queue_forgets_the_doorbells_rung_before() {
    let mut f = feeder();
    let t = f.transport().clone();
    for i in 0..3u8 {
        assert_eq!(f.write(Memory::Dram, 1, 0x2000 + 64 * i as u64, &[i; 64]), Outcome::Consumed);
    }
    assert_eq!(f.word(host::ISSUE_RD), 3 * 128);
    f.enable(); // CTRL = 0, then the registers, then CTRL = 1
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(f.word(host::ISSUE_RD), 0, "records rung before the disable were executed again");
    assert_eq!(t.read32(regs::queue_reg(0, qreg::RETIRED)), 0);
    assert_eq!(f.fault(), None);
    assert_eq!(f.write(Memory::Dram, 1, 0x3000, &[9; 64]), Outcome::Consumed);
    assert_eq!(f.read(Memory::Dram, 1, 0x3000, 64).unwrap(), vec![9; 64]);
    assert_eq!(f.read(Memory::Dram, 1, 0x2000, 64).unwrap(), vec![0; 64]);
}

/// A clean close leaves the queues disabled; a second `Device` on the same transport enables them again and works
/// (it used to fault with "record tag 0 (unknown)": the device ran what the first device had rung).
#[test]
fn a_second_device_opens_on_the_same_transport_after_a_clean_close() {
    let (_emu, t) = common::emulator(EmuConfig::default());
    for round in 0..3 {
        let dev = Device::open_transport(t.clone(), &small_params()).unwrap();
        // Give the queue threads time to act on the enable before the first doorbell of this device.
        std::thread::sleep(Duration::from_millis(100));
        let spec = BufferSpec::new(16, 64, DType::Float32, MemoryConfig::DRAM);
        let data = pattern(spec.host_bytes() as usize, round);
        let b = dev.buffer_from_host(&spec, 0, &data).unwrap();
        assert_eq!(b.read_to_vec(0).unwrap(), data, "device {round}");
        drop(b);
        dev.close().unwrap();
    }
}

/// Seconds of modelled work queued (program launches of `launch_s` seconds each) on `selector`.
fn busy_device(selector: &str, timeout: Duration) -> (Device, Buffer) {
    let p = DeviceParams { timeout, ..small_params() };
    let dev = Device::open(selector, &p).unwrap();
    let b = dev.allocate(&BufferSpec::new(32, 32, DType::Float32, MemoryConfig::L1)).unwrap();
    for i in 0..4 {
        dev.fill(0, &b, i as f32).unwrap();
    }
    // Let the device start on the work.
    std::thread::sleep(Duration::from_millis(100));
    (dev, b)
}

#[track_caller]
fn reset_is_prompt(dev: &Device, b: &Buffer, what: &str) {
    let t0 = Instant::now();
    dev.reset().unwrap_or_else(|e| panic!("{what}: reset failed after {:?}: {e}", t0.elapsed()));
    // The contract gives READY within 100 ms; allow for a loaded machine.
    assert!(t0.elapsed() < Duration::from_millis(900), "{what}: reset took {:?}", t0.elapsed());
    let data = pattern(b.spec().host_bytes() as usize, 5);
    b.write(0, &data, false).unwrap();
}

/// A paced device in the middle of a launch modelled at 3 s, with three more queued, resets at once.
#[test]
fn reset_of_a_busy_paced_device_is_ready_within_the_contract() {
    let (dev, b) = busy_device("emu:paced,launch_ns=3000000000", Duration::from_secs(20));
    reset_is_prompt(&dev, &b, "paced");
    dev.close().unwrap();
}

/// A jittered device sleeping up to 3 s before every record resets at once.
#[test]
fn reset_of_a_jittered_device_is_ready_within_the_contract() {
    let (dev, b) = busy_device("emu:jitter=5,jitter_us=3000000,jitter_pct=100", Duration::from_secs(20));
    reset_is_prompt(&dev, &b, "jittered");
    dev.close().unwrap();
}

/// Closing a device whose queue holds a launch modelled at 20 s: close drains for its budget (the 1 s timeout
/// here), resets, and the emulator shuts down without sleeping out the rest of the launch.
#[test]
fn close_of_a_device_with_seconds_of_paced_work_is_prompt() {
    let (dev, b) = busy_device("emu:paced,launch_ns=20000000000", Duration::from_secs(1));
    let t0 = Instant::now();
    drop(b);
    dev.close().unwrap();
    drop(dev);
    assert!(t0.elapsed() < Duration::from_secs(4), "close took {:?}", t0.elapsed());
}
