//! Host memory for DMA: memfd-backed, hugepages when available, pre-faulted and locked.
//!
//! The system calls go through `nix` (memfd_create, ftruncate, getrlimit) and `memmap2` (mmap, mlock), which
//! own the descriptors and check the results; the one call neither wraps, `mbind`, stays a raw system call.

use super::DmaError;
use memmap2::{MmapOptions, MmapRaw};
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::resource::{Resource, getrlimit};
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// What backs a block of DMA memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing {
    /// 1 GiB hugetlb pages.
    Huge1G,
    /// 2 MiB hugetlb pages.
    Huge2M,
    /// Ordinary 4 KiB pages (the fallback).
    Small,
}

impl Backing {
    /// Page size in bytes.
    pub fn page_size(self) -> usize {
        match self {
            Backing::Huge1G => GIB,
            Backing::Huge2M => 2 * MIB,
            Backing::Small => 4096,
        }
    }
}

/// How strictly memory must be locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockPolicy {
    /// Lock, and fail with an actionable error if the memlock limit forbids it (a real IOMMU pins anyway).
    Required,
    /// Lock if allowed; otherwise pre-fault, warn once and go on (the emulated device needs no pinning).
    BestEffort,
}

/// How to allocate DMA memory.
#[derive(Clone, Copy, Debug)]
pub struct MemoryOptions {
    /// Try hugepages first.
    pub hugepages: bool,
    /// Place the pages on this NUMA node.
    pub numa_node: Option<u32>,
    /// Locking policy.
    pub lock: LockPolicy,
    /// 2 MiB hugepages the caller needs in all (a device passes `DeviceParams::hugepages_needed()`), quoted by the
    /// warning when hugepages run out; `None` quotes what the failing allocation itself needed.
    pub hugepages_wanted: Option<u64>,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions { hugepages: true, numa_node: None, lock: LockPolicy::BestEffort, hugepages_wanted: None }
    }
}

/// A mapping of a memfd in this process; unmapped on drop.
pub struct HostMemory {
    /// Unmapped on drop unless leaked ([`HostMemory::leak`]).
    map: ManuallyDrop<MmapRaw>,
    leaked: bool,
    fd: OwnedFd,
    backing: Backing,
}

static FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);
static LOCK_WARNED: AtomicBool = AtomicBool::new(false);

/// The warning logged (once per process) when hugepages run out: `len` bytes were asked, `wanted` 2 MiB pages are
/// what the caller needs in all, if it said.
fn fallback_warning(len: usize, wanted: Option<u64>) -> String {
    let pages = wanted.unwrap_or(len.div_ceil(2 * MIB) as u64);
    format!(
        "no free 2 MiB hugepages for {} MiB of DMA memory; using locked 4 KiB pages, which cost IOMMU entries and \
         page faults. Reserve the {pages} hugepages needed with `echo {pages} | sudo tee /proc/sys/vm/nr_hugepages` \
         (plus what other programs use), or install udev/ttdrv-hugepages.conf",
        len.div_ceil(MIB),
    )
}

/// Why one way of allocating failed, for the message of [`DmaError::Alloc`] once every way has.
enum AttemptError {
    /// This backing could not be had; the text says which call failed and why.
    Failed(String),
    /// The memory was allocated but could not be locked, and the policy requires it: nothing else will do better.
    Lock(DmaError),
}

impl HostMemory {
    /// Allocates at least `len` bytes.
    pub fn allocate(len: usize, opts: &MemoryOptions) -> Result<HostMemory, DmaError> {
        if len == 0 {
            return Err(DmaError::Alloc { len, reason: "zero bytes requested; ask for at least one byte".into() });
        }
        let mut tried = Vec::new();
        let attempt = |backing: Backing, tried: &mut Vec<String>| match Self::try_allocate(len, backing, opts) {
            Ok(m) => Ok(Some(m)),
            Err(AttemptError::Failed(why)) => {
                tried.push(why);
                Ok(None)
            }
            Err(AttemptError::Lock(e)) => Err(e),
        };
        if opts.hugepages {
            let mut kinds = Vec::new();
            if len >= GIB {
                kinds.push(Backing::Huge1G);
            }
            kinds.push(Backing::Huge2M);
            for kind in kinds {
                if let Some(m) = attempt(kind, &mut tried)? {
                    return Ok(m);
                }
            }
            log::debug!("no hugepage backing for {len} bytes of DMA memory: {}", tried.join("; "));
            if !FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                log::warn!("{}", fallback_warning(len, opts.hugepages_wanted));
            }
        }
        match attempt(Backing::Small, &mut tried)? {
            Some(m) => Ok(m),
            None => Err(DmaError::Alloc {
                len,
                reason: format!(
                    "{}. The host is short of memory: free some, or open the device with smaller rings \
                     (issue_ring_size, completion_ring_size)",
                    tried.join("; ")
                ),
            }),
        }
    }

    fn try_allocate(len: usize, backing: Backing, opts: &MemoryOptions) -> Result<HostMemory, AttemptError> {
        let page = backing.page_size();
        let len = len.div_ceil(page) * page;
        let flags = MFdFlags::MFD_CLOEXEC
            | match backing {
                Backing::Huge1G => MFdFlags::MFD_HUGETLB | MFdFlags::MFD_HUGE_1GB,
                Backing::Huge2M => MFdFlags::MFD_HUGETLB | MFdFlags::MFD_HUGE_2MB,
                Backing::Small => MFdFlags::empty(),
            };
        let failed = |call: String, e: &dyn std::fmt::Display| AttemptError::Failed(format!("{call}: {e}"));
        let fd = memfd_create(c"ttdrv-dma", flags).map_err(|e| failed(format!("memfd_create({backing:?})"), &e))?;
        let size = libc::off_t::try_from(len).map_err(|e| failed(format!("ftruncate({backing:?}, {len})"), &e))?;
        nix::unistd::ftruncate(&fd, size).map_err(|e| failed(format!("ftruncate({backing:?}, {len})"), &e))?;
        // A shared hugetlb mapping reserves its pages at mmap time, so a shortage fails here rather than with
        // SIGBUS on first touch.
        let map = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| failed(format!("mmap({backing:?}, {len})"), &e))?;
        let mem = HostMemory { map: ManuallyDrop::new(map), leaked: false, fd, backing };
        if let Some(node) = opts.numa_node {
            mem.bind_to_node(node);
        }
        mem.lock_and_fault(opts.lock)?;
        Ok(mem)
    }

    fn bind_to_node(&self, node: u32) {
        if node >= 64 {
            return;
        }
        let mask: u64 = 1 << node;
        const MPOL_PREFERRED: libc::c_long = 1;
        // SAFETY: mbind (which neither nix nor libc wraps) on our own live mapping, with a one-word node mask that
        // outlives the call; it changes only where pages are placed, and failure only loses locality.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                self.as_ptr(),
                self.len(),
                MPOL_PREFERRED,
                &mask as *const u64,
                64usize,
                0u32,
            )
        };
        if rc != 0 {
            log::warn!("could not place DMA memory on NUMA node {node}: {}", std::io::Error::last_os_error());
        }
    }

    fn lock_and_fault(&self, policy: LockPolicy) -> Result<(), AttemptError> {
        // mlock faults every page in.
        let err = match self.map.lock() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if policy == LockPolicy::Required {
            return Err(AttemptError::Lock(DmaError::Lock { len: self.len(), limit: memlock_limit(), source: err }));
        }
        if !LOCK_WARNED.swap(true, Ordering::Relaxed) {
            log::warn!(
                "could not lock {} KiB of DMA memory ({err}; RLIMIT_MEMLOCK {}); continuing unlocked because the \
                 emulated device does not pin memory",
                self.len() / 1024,
                memlock_limit_text()
            );
        }
        // Pre-fault anyway so the copy path never takes a page fault. The kernel zero-fills new pages, so writing
        // zeros changes nothing the device could see.
        for off in (0..self.len()).step_by(self.backing.page_size()) {
            // SAFETY: `off` is inside our mapping.
            unsafe { std::ptr::write_volatile(self.as_ptr().add(off), 0) };
        }
        Ok(())
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Bytes mapped (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True if empty (never).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Page size of the backing.
    pub fn page_size(&self) -> usize {
        self.backing.page_size()
    }

    /// What backs the memory.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// The memfd.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Keeps the pages mapped forever (used when the device could not be made to forget them).
    pub fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: dropped exactly once, here; users only hold raw pointers into the mapping, which they may not
            // use past this value's life.
            unsafe { ManuallyDrop::drop(&mut self.map) };
        }
    }
}

/// The soft RLIMIT_MEMLOCK in bytes; `None` when unlimited or unreadable.
pub fn memlock_limit() -> Option<u64> {
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft != nix::sys::resource::RLIM_INFINITY => Some(soft),
        _ => None,
    }
}

/// The soft RLIMIT_MEMLOCK as text ("unlimited" or bytes).
pub fn memlock_limit_text() -> String {
    memlock_limit().map_or_else(|| "unlimited".into(), |l| format!("{l} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_pages_are_zeroed_and_writable() {
        let opts = MemoryOptions { hugepages: false, ..Default::default() };
        let m = HostMemory::allocate(10_000, &opts).unwrap();
        assert_eq!(m.len(), 12_288);
        assert_eq!(m.backing(), Backing::Small);
        for off in (0..m.len()).step_by(512) {
            // SAFETY: inside the mapping.
            assert_eq!(unsafe { std::ptr::read_volatile(m.as_ptr().add(off)) }, 0);
        }
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(m.as_ptr().add(m.len() - 1), 7) };
    }

    #[test]
    fn the_fallback_warning_quotes_what_the_caller_needs() {
        let w = fallback_warning(5 << 20, Some(42));
        assert!(
            w.contains("for 5 MiB of DMA memory") && w.contains("echo 42 | sudo tee /proc/sys/vm/nr_hugepages"),
            "{w}"
        );
        // Without the caller's number, the allocation's own pages.
        assert!(fallback_warning(5 << 20, None).contains("echo 3 | sudo tee"));
    }

    #[test]
    fn zero_length_is_refused() {
        assert!(HostMemory::allocate(0, &MemoryOptions::default()).is_err());
    }
}
