//! Round trips and copies: a 4 KiB write + finish (hot and cold) against the ping-pong and wake-up floors, writes and
//! reads of 4 KiB to 256 MiB against memcpy of the same size, and the event round trip — through the Rust API and the
//! C ABI, samples alternating between them.

use super::capi::{self, CBuffer, CDevice, CEvent, CHostMemory};
use super::{Api, Bench, Check, Ctx, Kind, RatioOf, Row, State, Unit, cold, rounds, timed};
use std::hint::black_box;
use ttdrv::{Buffer, BufferSpec, DType, Device, DeviceParams, MemoryConfig};
use ttdrv_ffi::buffer::{ttdrv_buffer_read, ttdrv_buffer_write};
use ttdrv_ffi::device::ttdrv_device_finish;
use ttdrv_ffi::event::{ttdrv_event_record, ttdrv_event_synchronize};
use ttdrv_ffi::registered::{ttdrv_buffer_read_registered, ttdrv_buffer_write_registered};
use ttdrv_testkit::timing::{Aligned, pattern};

fn e(e: ttdrv::Error) -> String {
    e.to_string()
}

/// `api` as the middle of a row id.
fn tag(api: Api) -> &'static str {
    if api == Api::C { "c" } else { "rust" }
}

/// A float32 DRAM buffer spec of exactly `bytes` (a multiple of 4 KiB): rows of up to 64 KiB.
fn spec(bytes: usize) -> BufferSpec {
    let cols = (bytes.min(64 << 10) / 4) as u32;
    BufferSpec::new((bytes / (cols as usize * 4)) as u32, cols, DType::Float32, MemoryConfig::DRAM)
}

/// A 4 KiB write followed by `finish`, hot (back to back) and cold (after the device idled).
pub fn small(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let hot_n = ctx.n(2000, 300);
    let cold_n = ctx.n(120, 30);
    let size = 4096;
    let src = pattern(size);
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let buf = dev.allocate(&spec(size)).map_err(e)?;
    let cdev = CDevice::open("emu", 1, 0)?;
    let (rows, cols) = (spec(size).rows, spec(size).cols);
    let cbuf = CBuffer::allocate(&cdev, rows, cols, false)?;
    let rust = || -> Result<(), String> {
        buf.write(0, src.bytes(), false).map_err(e)?;
        dev.finish(0).map_err(e)
    };
    let c = || -> Result<(), String> {
        // SAFETY: `src` is readable for `size` bytes.
        let st = unsafe { ttdrv_buffer_write(cbuf.raw(), 0, src.bytes().as_ptr().cast(), size, false) };
        capi::ok(st, "ttdrv_buffer_write")?;
        capi::ok(ttdrv_device_finish(cdev.raw(), 0), "ttdrv_device_finish")
    };
    rust()?;
    c()?;
    let [hr, hc] = rounds(10, hot_n / 10, [&mut timed(rust), &mut timed(c)])?.map(|s| s.scaled(1e3));
    let cr = cold(cold_n, rust, || Ok(()))?.scaled(1e3);
    let cc = cold(cold_n, c, || Ok(()))?.scaled(1e3);
    let pp = ctx.floors.pingpong_ns.median / 1e3;
    let wake = ctx.floors.wake_ns.median / 1e3;
    let fig = "4 KiB write + finish";
    let mut out = Vec::new();
    for (api, hot, cold) in [(Api::Rust, hr, cr), (Api::C, hc, cc)] {
        out.push(
            Row::new(
                format!("transfer.write4k.{}.hot", tag(api)),
                Bench::Transfer,
                fig,
                api,
                State::Hot,
                Kind::RoundTrip,
            )
            .stat(hot, Unit::Us)
            .against("ping-pong round trip", pp, RatioOf::FigureOverReference, "/ ping-pong")
            .target("<= 3x ping-pong", vec![Check::RatioAtMost(3.0)]),
        );
        out.push(
            Row::new(
                format!("transfer.write4k.{}.cold", tag(api)),
                Bench::Transfer,
                fig,
                api,
                State::Cold,
                Kind::RoundTrip,
            )
            .stat(cold, Unit::Us)
            .against("wake-up, one way", wake, RatioOf::FigureOverReference, "/ wake-up"),
        );
    }
    Ok(out)
}

/// Sizes of the copy rows, with samples (full, quick).
const SIZES: [(usize, &str, usize, usize); 5] = [
    (4 << 10, "4KiB", 201, 51),
    (64 << 10, "64KiB", 101, 31),
    (1 << 20, "1MiB", 41, 11),
    (64 << 20, "64MiB", 7, 3),
    (256 << 20, "256MiB", 5, 3),
];

/// Write + finish and blocking read against memcpy of the same size into pre-faulted, page-aligned memory.
pub fn copies(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let cdev = CDevice::open("emu", 1, 0)?;
    let mut out = Vec::new();
    for (size, label, full, quick) in SIZES {
        let n = ctx.n(full, quick);
        let src = pattern(size);
        let mut dst = Aligned::new(size, 64);
        let s = spec(size);
        let buf = dev.allocate(&s).map_err(e)?;
        let cbuf = CBuffer::allocate(&cdev, s.rows, s.cols, false)?;
        // What is read back is what was written, through both APIs (and it pre-faults the device's pages).
        buf.write(0, src.bytes(), true).map_err(e)?;
        buf.read(0, dst.bytes_mut()).map_err(e)?;
        if dst.bytes() != src.bytes() {
            return Err(format!("{label}: the Rust API read back other bytes than it wrote"));
        }
        dst.bytes_mut().fill(0);
        let c_write = |d: &[u8]| -> Result<(), String> {
            // SAFETY: `d` is readable for `size` bytes.
            let st = unsafe { ttdrv_buffer_write(cbuf.raw(), 0, d.as_ptr().cast(), size, false) };
            capi::ok(st, "ttdrv_buffer_write")?;
            capi::ok(ttdrv_device_finish(cdev.raw(), 0), "ttdrv_device_finish")
        };
        let c_read = |d: &mut [u8]| -> Result<(), String> {
            // SAFETY: `d` is writable for `size` bytes, and the read is blocking.
            let st = unsafe { ttdrv_buffer_read(cbuf.raw(), 0, true, d.as_mut_ptr().cast(), size) };
            capi::ok(st, "ttdrv_buffer_read")
        };
        c_write(src.bytes())?;
        c_read(dst.bytes_mut())?;
        if dst.bytes() != src.bytes() {
            return Err(format!("{label}: the C ABI read back other bytes than it wrote"));
        }
        // Small sizes in blocks (see `rounds`), large ones one sample per turn: a sample outlasts any idle spin.
        let (r, block) = if n >= 30 { (n / 10, 10) } else { (n, 1) };
        let dst = std::cell::RefCell::new(dst);
        let stats = rounds(
            r,
            block,
            [
                &mut timed(|| {
                    dst.borrow_mut().bytes_mut().copy_from_slice(black_box(src.bytes()));
                    black_box(dst.borrow_mut().bytes_mut());
                    Ok(())
                }),
                &mut timed(|| {
                    buf.write(0, src.bytes(), false).map_err(e)?;
                    dev.finish(0).map_err(e)
                }),
                &mut timed(|| buf.read(0, dst.borrow_mut().bytes_mut()).map_err(e)),
                &mut timed(|| c_write(src.bytes())),
                &mut timed(|| c_read(dst.borrow_mut().bytes_mut())),
            ],
        )?;
        // Bytes per ns = GB/s.
        let [m, wr, rr, wc, rc] = stats.map(|s| s.inverted(size as f64));
        for (what, api, s) in
            [("write", Api::Rust, wr), ("write", Api::C, wc), ("read", Api::Rust, rr), ("read", Api::C, rc)]
        {
            let figure =
                if what == "write" { format!("write + finish, {label}") } else { format!("read (blocking), {label}") };
            let mut row = Row::new(
                format!("copy.{what}.{}.{label}", tag(api)),
                Bench::Copy,
                figure,
                api,
                State::Hot,
                Kind::Bandwidth,
            )
            .stat(s, Unit::GBps)
            .against("memcpy, same size", m.median, RatioOf::FigureOverReference, "/ memcpy");
            if size == 1 << 20 {
                row = row.target(">= 0.5x memcpy", vec![Check::RatioAtLeast(0.5)]);
            }
            out.push(row);
        }
        if size == 64 << 20 {
            out.extend(registered(n, &src, &buf, &dev, &cbuf, &cdev)?);
        }
    }
    Ok(out)
}

/// 64 MiB from and into registered host memory, through the Rust API (`Device::register_host_memory`,
/// `Buffer::write_from` + `finish`, blocking `Buffer::read_into`) and the C ABI (`ttdrv_host_memory_register`,
/// `ttdrv_buffer_write_registered` + `ttdrv_device_finish`, blocking `ttdrv_buffer_read_registered`): the device moves
/// the bytes itself (`WRITE_HOST` / `READ_HOST`), no staging copy. Against memcpy of the same size, in the same turns.
fn registered(
    n: usize,
    src: &Aligned,
    buf: &Buffer,
    dev: &Device,
    cbuf: &CBuffer,
    cdev: &CDevice,
) -> Result<Vec<Row>, String> {
    const SIZE: usize = 64 << 20;
    let mut rsrc = pattern(SIZE);
    let mut rdst = Aligned::new(SIZE, 0);
    let mut csrc = pattern(SIZE);
    let mut cdst = Aligned::new(SIZE, 0);
    // SAFETY (the four registrations): the allocations are page-aligned, `SIZE` (a multiple of 4 KiB) long, and
    // outlive their registrations: each is unregistered before its memory is dropped, or the memory is leaked if
    // unregistering fails.
    let (reg_src, reg_dst) = unsafe {
        (
            dev.register_host_memory(rsrc.bytes_mut().as_mut_ptr(), SIZE).map_err(e)?,
            dev.register_host_memory(rdst.bytes_mut().as_mut_ptr(), SIZE).map_err(e)?,
        )
    };
    // SAFETY: as above.
    let creg_src = unsafe { CHostMemory::register(cdev, csrc.bytes_mut().as_mut_ptr(), SIZE)? };
    // SAFETY: as above.
    let creg_dst = match unsafe { CHostMemory::register(cdev, cdst.bytes_mut().as_mut_ptr(), SIZE) } {
        Ok(h) => h,
        Err(x) => {
            if creg_src.free().is_err() {
                std::mem::forget(csrc);
            }
            return Err(x);
        }
    };
    let c_write = || -> Result<(), String> {
        // SAFETY: both handles are live (freed only below, after the measurement).
        let st = unsafe { ttdrv_buffer_write_registered(cbuf.raw(), 0, creg_src.raw(), 0, SIZE, false) };
        capi::ok(st, "ttdrv_buffer_write_registered")?;
        capi::ok(ttdrv_device_finish(cdev.raw(), 0), "ttdrv_device_finish")
    };
    let c_read = || -> Result<(), String> {
        // SAFETY: as above; the read is blocking, so the registered memory is written when the call returns.
        let st = unsafe { ttdrv_buffer_read_registered(cbuf.raw(), 0, creg_dst.raw(), 0, SIZE, true) };
        capi::ok(st, "ttdrv_buffer_read_registered")
    };
    let mut scratch = Aligned::new(SIZE, 64);
    let stats = rounds(
        n,
        1,
        [
            &mut timed(|| {
                scratch.bytes_mut().copy_from_slice(black_box(src.bytes()));
                black_box(scratch.bytes_mut());
                Ok(())
            }),
            &mut timed(|| buf.write_from(0, &reg_src, 0, false).and_then(|()| dev.finish(0)).map_err(e)),
            &mut timed(|| buf.read_into(0, &reg_dst, 0, true).map_err(e)),
            &mut timed(c_write),
            &mut timed(c_read),
        ],
    );
    let rust_end = reg_src.unregister().and_then(|()| reg_dst.unregister()).map_err(e);
    let c_end = creg_src.free().and_then(|()| creg_dst.free());
    if let Err(x) = rust_end.and(c_end) {
        // Still registered: the device may yet touch the memory, so it must never be freed.
        std::mem::forget((rsrc, rdst, csrc, cdst));
        return Err(x);
    }
    let stats = stats?;
    if rdst.bytes() != rsrc.bytes() {
        return Err("64MiB: read_into registered memory returned other bytes than write_from wrote".into());
    }
    if cdst.bytes() != csrc.bytes() {
        return Err(
            "64MiB: ttdrv_buffer_read_registered returned other bytes than ttdrv_buffer_write_registered wrote".into(),
        );
    }
    let [m, wr, rr, wc, rc] = stats.map(|s| s.inverted(SIZE as f64));
    let mut out = Vec::new();
    for (what, api, s) in
        [("write", Api::Rust, wr), ("write", Api::C, wc), ("read", Api::Rust, rr), ("read", Api::C, rc)]
    {
        let figure = if what == "write" {
            "write + finish from registered memory, 64MiB"
        } else {
            "read into registered memory (blocking), 64MiB"
        };
        out.push(
            Row::new(
                format!("copy.{what}.registered.{}.64MiB", tag(api)),
                Bench::Copy,
                figure,
                api,
                State::Hot,
                Kind::Bandwidth,
            )
            .stat(s, Unit::GBps)
            .against("memcpy, same size", m.median, RatioOf::FigureOverReference, "/ memcpy")
            .target(">= 0.9x memcpy", vec![Check::RatioAtLeast(0.9)]),
        );
    }
    Ok(out)
}

/// Event record + synchronize on an otherwise idle queue: the host observes the device's completion.
pub fn event(ctx: &Ctx) -> Result<Vec<Row>, String> {
    let hot_n = ctx.n(2000, 300);
    let cold_n = ctx.n(120, 30);
    let dev = Device::open("emu", &DeviceParams::default()).map_err(e)?;
    let ev = dev.create_event().map_err(e)?;
    let cdev = CDevice::open("emu", 1, 0)?;
    let cev = CEvent::new(&cdev)?;
    let rust = || -> Result<(), String> {
        ev.record(0).map_err(e)?;
        ev.synchronize().map_err(e)
    };
    let c = || -> Result<(), String> {
        capi::ok(ttdrv_event_record(cev.raw(), 0), "ttdrv_event_record")?;
        capi::ok(ttdrv_event_synchronize(cev.raw()), "ttdrv_event_synchronize")
    };
    rust()?;
    c()?;
    let [hr, hc] = rounds(10, hot_n / 10, [&mut timed(rust), &mut timed(c)])?.map(|s| s.scaled(1e3));
    let cr = cold(cold_n, rust, || Ok(()))?.scaled(1e3);
    let cc = cold(cold_n, c, || Ok(()))?.scaled(1e3);
    let pp = ctx.floors.pingpong_ns.median / 1e3;
    let wake = ctx.floors.wake_ns.median / 1e3;
    let fig = "event record + synchronize, idle queue";
    let mut out = Vec::new();
    for (api, hot, cold) in [(Api::Rust, hr, cr), (Api::C, hc, cc)] {
        out.push(
            Row::new(format!("event.{}.hot", tag(api)), Bench::Event, fig, api, State::Hot, Kind::RoundTrip)
                .stat(hot, Unit::Us)
                .against("ping-pong round trip", pp, RatioOf::FigureOverReference, "/ ping-pong")
                .target("<= 1 µs", vec![Check::ValueAtMost(1.0)]),
        );
        out.push(
            Row::new(format!("event.{}.cold", tag(api)), Bench::Event, fig, api, State::Cold, Kind::RoundTrip)
                .stat(cold, Unit::Us)
                .against("wake-up, one way", wake, RatioOf::FigureOverReference, "/ wake-up")
                .target("<= 2x wake-up", vec![Check::RatioAtMost(2.0)]),
        );
    }
    Ok(out)
}
