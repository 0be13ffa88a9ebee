//! Hugepage-backed DMA memory, and the fallback when there are none.
//!
//! - With 2 MiB hugepages free, ring memory really is hugetlb-backed: `/proc/self/smaps` shows
//!   `KernelPageSize: 2048 kB` for the ring mapping. Without free hugepages this test cannot check anything: it
//!   says so loudly and passes, unless `TTDRV_REQUIRE_HUGEPAGES=1` is set (CI reserves pages with
//!   `scripts/hugepages.sh reserve 64` and sets it), in which case it fails.
//! - With no free hugepages, DMA memory falls back to 4 KiB pages and one warning is logged (never printed to stderr)
//!   however many allocations fall back. This runs in a child process that first takes every free hugepage for itself, so it
//!   checks the fallback whether or not the machine has hugepages reserved.

mod common;

use common::*;
use std::sync::Mutex;
use ttdrv::raw::{Backing, LockPolicy, MemoryOptions, RawQueue};
use ttdrv::transport::emulated::EmuConfig;
use ttdrv::*;

/// The two tests move hugepages around: never at the same time.
static HUGEPAGES: Mutex<()> = Mutex::new(());

const REQUIRE_ENV: &str = "TTDRV_REQUIRE_HUGEPAGES";
const HUGE_KB: u64 = 2048;

fn meminfo(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// 2 MiB hugepages that a new mapping can still reserve (free and not promised to an existing mapping).
fn hugepages_available() -> u64 {
    if meminfo("Hugepagesize") != HUGE_KB {
        return 0;
    }
    meminfo("HugePages_Free").saturating_sub(meminfo("HugePages_Rsvd"))
}

/// One mapping of `/proc/self/smaps`.
#[derive(Debug)]
struct Smap {
    start: u64,
    end: u64,
    name: String,
    kernel_page_kb: u64,
}

fn smaps() -> Vec<Smap> {
    let s = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
    let mut out: Vec<Smap> = Vec::new();
    for line in s.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16))
        {
            let name = f.nth(4).map(str::to_string).unwrap_or_default();
            out.push(Smap { start, end, name, kernel_page_kb: 0 });
        } else if let Some(v) = line.strip_prefix("KernelPageSize:")
            && let Some(m) = out.last_mut()
        {
            m.kernel_page_kb = v.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    out
}

fn smap_at(addr: *const u8) -> Smap {
    let a = addr as u64;
    smaps().into_iter().find(|m| m.start <= a && a < m.end).unwrap_or_else(|| panic!("{a:#x} is not mapped"))
}

/// Every mapping of ttdrv DMA memory in this process: the driver's and the emulated device's own view of it.
fn dma_smaps() -> Vec<Smap> {
    smaps().into_iter().filter(|m| m.name.contains("ttdrv-dma")).collect()
}

fn roundtrip(dev: &Device) {
    let spec = BufferSpec::new(300, 700, DType::Float32, MemoryConfig::DRAM);
    let b = dev.allocate(&spec).unwrap();
    let data = pattern(spec.host_bytes() as usize, 42);
    b.write(0, &data, false).unwrap();
    assert_bytes_eq(&b.read_to_vec(0).unwrap(), &data, "round trip");
}

fn hugepage_params(queues: u16) -> DeviceParams {
    DeviceParams {
        num_command_queues: queues,
        issue_ring_size: 4 << 20,
        completion_ring_size: 2 << 20,
        hugepages: true,
        ..DeviceParams::default()
    }
}

#[test]
fn dma_memory_is_hugetlb_backed_when_hugepages_are_reserved() {
    let _g = HUGEPAGES.lock().unwrap_or_else(|e| e.into_inner());
    // One 132 KiB region below (1 page) and one queue of 4 + 2 MiB rings (4 pages).
    let need = 5;
    let have = hugepages_available();
    if have < need {
        let msg = format!(
            "{have} free 2 MiB hugepages, {need} needed: reserve some with `scripts/hugepages.sh reserve 64` (as root)"
        );
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE_ENV}=1 but hugepage backing cannot be checked: {msg}");
        }
        eprintln!("NOT CHECKED: hugepage backing of DMA memory: {msg}. Set {REQUIRE_ENV}=1 to make this a failure.");
        return;
    }

    let (_e, t) = emulator(EmuConfig::default());
    let opts = MemoryOptions { hugepages: true, lock: LockPolicy::BestEffort, ..MemoryOptions::default() };
    let rings = RawQueue::with_memory(&t, high_iovas(0), 0, 64 << 10, 64 << 10, &opts).unwrap();
    assert_eq!(rings.backing(), Backing::Huge2M);
    assert_eq!(rings.region_len(), 2 << 20, "a 132 KiB region takes one 2 MiB page");
    let m = smap_at(rings.region_ptr());
    assert!(m.name.contains("ttdrv-dma"), "{m:?}");
    assert_eq!(m.kernel_page_kb, HUGE_KB, "the ring mapping is not hugetlb-backed: {m:?}");

    let dev = Device::open("emu", &hugepage_params(1)).unwrap();
    roundtrip(&dev);
    let maps = dma_smaps();
    // Driver and device mappings of both regions.
    assert!(maps.len() >= 4, "{maps:#?}");
    for m in &maps {
        assert_eq!(m.kernel_page_kb, HUGE_KB, "DMA memory not on hugepages: {m:?}");
    }
}

/// Takes every hugepage a new mapping could get; they stay reserved while the returned mappings live.
fn take_all_hugepages() -> Vec<Grab> {
    let mut grabs = Vec::new();
    loop {
        let n = hugepages_available();
        if n == 0 {
            break;
        }
        match Grab::new(n) {
            Some(g) => grabs.push(g),
            // Someone else took some meanwhile: go page by page.
            None => match Grab::new(1) {
                Some(g) => grabs.push(g),
                None => break,
            },
        }
        assert!(grabs.len() < 10_000, "cannot exhaust the hugepage pool (overcommit?)");
    }
    grabs
}

/// A shared hugetlb mapping: the kernel reserves its pages at mmap time.
struct Grab {
    ptr: *mut libc::c_void,
    len: usize,
    _fd: std::os::fd::OwnedFd,
}

impl Grab {
    fn new(pages: u64) -> Option<Grab> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let len = pages as usize * (HUGE_KB as usize * 1024);
        // SAFETY: plain memfd creation with a static name; checked.
        let fd = unsafe { libc::memfd_create(c"grab".as_ptr(), libc::MFD_HUGETLB | libc::MFD_HUGE_2MB) };
        assert!(fd >= 0, "memfd_create(MFD_HUGETLB): {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: ftruncate and mmap of our own descriptor; results checked.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
                return None;
            }
            let ptr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            );
            (ptr != libc::MAP_FAILED).then_some(Grab { ptr, len, _fd: fd })
        }
    }
}

impl Drop for Grab {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

const FALLBACK_WARNING: &str = "no free 2 MiB hugepages";

#[test]
fn fallback_to_small_pages_warns_once() {
    if in_child() {
        fallback_child();
        return;
    }
    let _g = HUGEPAGES.lock().unwrap_or_else(|e| e.into_inner());
    let out = run_child("fallback_to_small_pages_warns_once", &[("TTDRV_LOG", "warn")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("fallback checked"), "{stdout}");
    // A library logs; it does not write to the host application's stderr (even with TTDRV_LOG set).
    assert!(!stderr.contains(FALLBACK_WARNING), "the warning went to stderr:\n{stderr}");
}

fn fallback_child() {
    ttdrv_testkit::logcapture::install();
    let grabs = take_all_hugepages();
    assert_eq!(hugepages_available(), 0, "hugepages are still available");
    // Five ring regions on two devices, plus one direct allocation: all fall back, one warning in all.
    let a = Device::open("emu", &hugepage_params(2)).unwrap();
    let b = Device::open("emu", &hugepage_params(2)).unwrap();
    let (_e, t) = emulator(EmuConfig::default());
    let opts = MemoryOptions { hugepages: true, ..MemoryOptions::default() };
    let rings = RawQueue::with_memory(&t, high_iovas(0), 0, 64 << 10, 64 << 10, &opts).unwrap();
    assert_eq!(rings.backing(), Backing::Small);
    assert_eq!(smap_at(rings.region_ptr()).kernel_page_kb, 4);
    for m in dma_smaps() {
        assert_eq!(m.kernel_page_kb, 4, "fallback memory should be 4 KiB pages: {m:?}");
    }
    roundtrip(&a);
    roundtrip(&b);
    drop(grabs);
    let warnings: Vec<_> = ttdrv_testkit::logcapture::records(log::Level::Warn)
        .into_iter()
        .filter(|r| r.message.contains(FALLBACK_WARNING))
        .collect();
    assert_eq!(warnings.len(), 1, "expected exactly one hugepage fallback warning in the log: {warnings:?}");
    // The number to reserve is what the first device asked for (DeviceParams::hugepages_needed), as `ttdrv doctor`
    // and docs/host-setup.md quote it.
    let need = hugepage_params(2).hugepages_needed();
    assert!(
        warnings[0].message.contains(&format!("echo {need} | sudo tee /proc/sys/vm/nr_hugepages")),
        "the warning must say how to reserve hugepages: {warnings:?}"
    );
    println!("fallback checked");
}
