//! Helpers shared by the integration tests: a raw command queue (`ttdrv::raw`, to reach device memory without the
//! device layer, or to stall a queue on purpose), host-side data patterns, `/proc` readers, and re-running one test
//! in a child process.
//!
//! Not every test file uses every helper.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;
use ttdrv::contract::Memory;
use ttdrv::contract::records::{RecordMeta, RecordSlot};
use ttdrv::transport::Transport;
use ttdrv::transport::emulated::{EmuConfig, EmulatedTransport};

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

/// The IOVA window for raw queue `id`: clear of the device layer's own allocator, which hands out IOVAs from 1 MiB
/// upwards, and of the other raw queues' windows (the emulator's default DMA mask is 32 bits).
pub fn high_iovas(id: u16) -> std::ops::Range<u64> {
    let base = (3u64 << 30) + id as u64 * (64 << 20);
    base..base + (64 << 20)
}

/// The fault registers as text, if the device has faulted.
pub fn device_fault(t: &dyn Transport) -> Option<String> {
    ttdrv::raw::fault_report(t)
}

/// [`ttdrv::raw::RawQueue`] for tests: every error fails the test.
pub struct RawQueue(pub ttdrv::raw::RawQueue);

impl RawQueue {
    /// Allocates, maps and enables queue `id`'s rings (4 KiB pages, no profile slots).
    pub fn new(t: &Arc<dyn Transport>, id: u16, issue: u32, compl: u32) -> Self {
        let mut q = ttdrv::raw::RawQueue::new(t, high_iovas(id), id, issue, compl).expect("raw queue rings");
        q.set_patience(PATIENCE);
        RawQueue(q)
    }

    pub fn issue_size(&self) -> u32 {
        self.0.issue_size()
    }

    pub fn issue_rd(&self) -> u32 {
        self.0.issue_rd()
    }

    pub fn wr(&self) -> u32 {
        self.0.wr()
    }

    pub fn has_room(&mut self, len: usize) -> bool {
        self.0.has_room(len).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn delivered(&self) -> u64 {
        self.0.delivered()
    }

    /// Drains completions until `done()` holds; fails the test on a device fault or after [`PATIENCE`].
    #[track_caller]
    pub fn wait(&mut self, what: &str, mut done: impl FnMut(&mut ttdrv::raw::RawQueue) -> bool) {
        self.0.wait(what, |q| done(q)).unwrap_or_else(|e| panic!("{e}"));
    }

    #[track_caller]
    pub fn push(&mut self, len: usize, encode: impl FnOnce(&mut RecordSlot<'_>, RecordMeta)) -> u32 {
        self.0.push(len, encode).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn publish(&mut self) {
        self.0.publish();
    }

    #[track_caller]
    pub fn write_linear(&mut self, mem: Memory, unit: u16, offset: u64, data: &[u8]) -> u32 {
        self.0.write_linear(mem, unit, offset, data).unwrap_or_else(|e| panic!("{e}"))
    }

    /// # Safety
    /// As [`ttdrv::raw::RawQueue::read_linear_into`].
    #[track_caller]
    pub unsafe fn read_linear_into(&mut self, mem: Memory, unit: u16, offset: u64, dst: *mut u8, len: usize) -> u64 {
        // SAFETY: the caller's contract is the raw queue's.
        unsafe { self.0.read_linear_into(mem, unit, offset, dst, len) }.unwrap_or_else(|e| panic!("{e}"))
    }

    #[track_caller]
    pub fn read(&mut self, mem: Memory, unit: u16, offset: u64, len: usize) -> Vec<u8> {
        self.0.read(mem, unit, offset, len).unwrap_or_else(|e| panic!("{e}"))
    }

    #[track_caller]
    pub fn event_record(&mut self, id: u32) -> u32 {
        self.0.event_record(id).unwrap_or_else(|e| panic!("{e}"))
    }

    #[track_caller]
    pub fn event_wait(&mut self, queue: u16, id: u32) -> u32 {
        self.0.event_wait(queue, id).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Publishes and waits until the device has consumed every record written.
    #[track_caller]
    pub fn drain(&mut self) {
        self.0.drain().unwrap_or_else(|e| panic!("{e}"));
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
