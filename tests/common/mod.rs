//! Helpers shared by the integration tests: a raw command queue driven directly through `queue::Issuer` and
//! `queue::Completer` (to reach device memory without the device layer, or to stall a queue on purpose), host-side
//! data patterns, `/proc` readers, and re-running one test in a child process.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ttdrv::dma::{IovaAllocator, MemoryOptions};
use ttdrv::emu::EmuConfig;
use ttdrv::hw::Memory;
use ttdrv::hw::records::{self, FIXED_LEN, Linear, PAYLOAD_OFFSET, RecordMeta, RecordSlot};
use ttdrv::hw::regs::{self, Status, global, host};
use ttdrv::queue::{Completer, Issuer, RingSizes, Rings, Scatter};
use ttdrv::transport::Transport;
use ttdrv::transport::emulated::EmulatedTransport;

/// Parameters for a test device: 1 MiB rings (so tests also wrap them) and no hugepages (so tests run anywhere and
/// leave the reserved pages to the tests that check them).
pub fn small_params() -> ttdrv::DeviceParams {
    ttdrv::DeviceParams {
        hugepages: false,
        issue_ring_size: 1 << 20,
        completion_ring_size: 1 << 20,
        ..ttdrv::DeviceParams::default()
    }
}

/// Opens `selector`, failing the test with the driver's message if it cannot.
#[track_caller]
pub fn open(selector: &str, p: &ttdrv::DeviceParams) -> ttdrv::Device {
    ttdrv::Device::open(selector, p).unwrap_or_else(|e| panic!("open {selector}: {e}"))
}

/// How long a helper waits for the emulated device before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// A fresh emulated device, as the concrete type (to inspect it) and as a transport (to open a `Device` on it).
pub fn emulator(cfg: EmuConfig) -> (Arc<EmulatedTransport>, Arc<dyn Transport>) {
    let e = Arc::new(EmulatedTransport::new(cfg).expect("emulated device"));
    let t: Arc<dyn Transport> = e.clone();
    (e, t)
}

/// An IOVA allocator for raw queues that stays clear of the device layer's own allocator, which hands out IOVAs
/// from 1 MiB upwards: ours start at 3 GiB (the emulator's default DMA mask is 32 bits).
#[allow(clippy::single_range_in_vec_init)] // one IOVA window, not a range of indices
pub fn high_iovas() -> Arc<Mutex<IovaAllocator>> {
    Arc::new(Mutex::new(IovaAllocator::new(&[(3u64 << 30)..(4u64 << 30)], 32)))
}

/// The fault registers as text, if the device has faulted.
pub fn device_fault(t: &dyn Transport) -> Option<String> {
    let s = Status::from_bits_truncate(t.read32(global::STATUS));
    if !s.contains(Status::FAULT) {
        return None;
    }
    Some(format!(
        "device fault: code {} addr {:#x}{:08x} queue {} tag {} opcode {}",
        t.read32(global::FAULT_CODE),
        t.read32(global::FAULT_ADDR_HI),
        t.read32(global::FAULT_ADDR_LO),
        t.read32(global::FAULT_QUEUE),
        t.read32(global::FAULT_TAG),
        t.read32(global::FAULT_OPCODE)
    ))
}

/// One command queue driven record by record, bypassing the device layer.
pub struct RawQueue {
    pub t: Arc<dyn Transport>,
    pub rings: Arc<Rings>,
    pub issuer: Issuer,
    pub completer: Completer,
    pub id: u16,
}

impl RawQueue {
    /// Allocates, maps and enables queue `id`'s rings (4 KiB pages, no profile slots).
    pub fn new(t: &Arc<dyn Transport>, iovas: &Arc<Mutex<IovaAllocator>>, id: u16, issue: u32, compl: u32) -> Self {
        let sizes = RingSizes { issue, completion: compl, profile_slots: 0 };
        let opts = MemoryOptions { hugepages: false, ..MemoryOptions::default() };
        let rings = Arc::new(Rings::new(id, t, iovas, sizes, &opts).expect("raw queue rings"));
        rings.enable(t.as_ref());
        RawQueue {
            t: t.clone(),
            issuer: Issuer::new(rings.clone()),
            completer: Completer::new(rings.clone()),
            rings,
            id,
        }
    }

    pub fn issue_size(&self) -> u32 {
        self.rings.sizes().issue
    }

    /// The device-written `ISSUE_RD` word.
    pub fn issue_rd(&self) -> u32 {
        self.rings.device_word(host::ISSUE_RD)
    }

    fn check_fault(&self) {
        if let Some(f) = device_fault(self.t.as_ref()) {
            panic!("queue {}: {f}", self.id);
        }
    }

    /// Drains completions until `done()` holds; fails the test on a device fault or after [`PATIENCE`].
    pub fn wait(&mut self, what: &str, mut done: impl FnMut(&mut Self) -> bool) {
        let t0 = Instant::now();
        loop {
            self.completer.drain(self.t.as_ref()).expect("completion ring protocol");
            if done(self) {
                return;
            }
            self.check_fault();
            assert!(t0.elapsed() < PATIENCE, "queue {}: timed out waiting for {what}", self.id);
            std::thread::yield_now();
        }
    }

    /// Pushes one record of `len` bytes, waiting for room (and draining completions meanwhile).
    pub fn push(&mut self, len: usize, encode: impl FnOnce(&mut RecordSlot<'_>, RecordMeta)) -> u32 {
        if !self.issuer.has_room(len) {
            self.publish();
            self.wait("issue ring room", |q| q.issuer.has_room(len));
        }
        self.issuer.push(len, RecordMeta::default(), encode)
    }

    pub fn publish(&mut self) {
        self.issuer.publish(self.t.as_ref());
    }

    /// Queues a `WRITE_LINEAR` of `data` to (`mem`, `unit`, `offset`). `data.len()` must fit one record.
    pub fn write_linear(&mut self, mem: Memory, unit: u16, offset: u64, data: &[u8]) -> u32 {
        let x = Linear { mem, unit, offset, len: data.len() as u64 };
        self.push(records::write_linear_len(data.len()), |slot, m| {
            records::encode_write_linear(slot, m, &x);
            slot.put_bytes(PAYLOAD_OFFSET, data);
            records::pad_payload(slot, data.len());
        })
    }

    /// Queues a `READ_LINEAR` of `len` bytes whose data goes to `dst` (which must stay valid until delivered).
    /// Returns the read's sequence number for [`Completer::delivered`].
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes until the completer has delivered the read.
    pub unsafe fn read_linear_into(&mut self, mem: Memory, unit: u16, offset: u64, dst: *mut u8, len: usize) -> u64 {
        let x = Linear { mem, unit, offset, len: len as u64 };
        let tag = self.push(FIXED_LEN, |slot, m| records::encode_read_linear(slot, m, &x));
        let scatter = Scatter { dst, count: 1, piece: len as u32, src_stride: len as u32, dst_stride: 0 };
        self.completer.expect(tag, scatter)
    }

    /// Reads `len` bytes of device memory, blocking (split into reads the completion ring takes).
    pub fn read(&mut self, mem: Memory, unit: u16, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let max = self.rings.sizes().max_read();
        let mut last = self.completer.delivered();
        let mut at = 0;
        while at < len {
            let n = (len - at).min(max);
            // SAFETY: `out` outlives the wait below, which returns only once every read has been delivered.
            last = unsafe { self.read_linear_into(mem, unit, offset + at as u64, out.as_mut_ptr().add(at), n) };
            at += n;
        }
        self.publish();
        self.wait("read data", |q| q.completer.delivered() >= last);
        out
    }

    pub fn event_record(&mut self, id: u32) -> u32 {
        self.push(FIXED_LEN, |slot, m| records::encode_event_record(slot, m, id))
    }

    pub fn event_wait(&mut self, queue: u16, id: u32) -> u32 {
        self.push(FIXED_LEN, |slot, m| records::encode_event_wait(slot, m, queue, id))
    }

    /// Publishes and waits until the device has consumed every record written.
    pub fn drain(&mut self) {
        self.publish();
        let wr = self.issuer.wr();
        self.wait("the issue ring to drain", |q| q.issue_rd() == wr);
    }
}

impl Drop for RawQueue {
    fn drop(&mut self) {
        // Stop the queue before its rings are unmapped.
        self.t.write32(regs::queue_reg(self.id, regs::queue::CTRL), 0);
    }
}

/// A deterministic, position-dependent byte pattern (differs per `seed`, never all-equal).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill_pattern(&mut out, seed);
    out
}

/// Fills `buf` with [`pattern`] bytes, eight at a time.
pub fn fill_pattern(buf: &mut [u8], seed: u64) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    for b in chunks.into_remainder() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Index of the first differing byte, for assertion messages that do not print megabytes.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Asserts `got == want` byte for byte, reporting the first difference only.
#[track_caller]
pub fn assert_bytes_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: first difference at byte {i} of {} (got {:?}, want {:?}; lengths {} and {})",
            want.len(),
            got.get(i),
            want.get(i),
            got.len(),
            want.len()
        );
    }
}

/// A value of `/proc/self/status` in kB (`VmRSS`, `VmSize`, ...).
pub fn proc_status_kb(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} missing from /proc/self/status"))
}

/// Entries of a `/proc/self` directory (`task`, `fd`).
pub fn proc_self_entries(dir: &str) -> usize {
    std::fs::read_dir(format!("/proc/self/{dir}")).expect("/proc/self").count()
}

/// Environment variable that tells a re-executed test binary it is the child.
pub const CHILD_ENV: &str = "TTDRV_TEST_CHILD";

/// True in the child process started by [`run_child`].
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Re-runs the test `name` of this binary alone, in a child process (fresh `/proc/self` counts, its own stderr),
/// and returns its output after asserting it succeeded.
pub fn run_child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD_ENV, "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawning the test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child `{name}` failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(stdout.contains("1 passed"), "child `{name}` did not run the test:\n{stdout}");
    out
}
