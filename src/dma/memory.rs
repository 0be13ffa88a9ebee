//! Host memory for DMA: memfd-backed, hugepages when available, pre-faulted and locked.

use super::DmaError;
use memmap2::{MmapOptions, MmapRaw};
use std::ffi::CStr;
use std::mem::ManuallyDrop;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
}

impl Default for MemoryOptions {
    fn default() -> Self {
        MemoryOptions { hugepages: true, numa_node: None, lock: LockPolicy::BestEffort }
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

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

impl HostMemory {
    /// Allocates at least `len` bytes.
    pub fn allocate(len: usize, opts: &MemoryOptions) -> Result<HostMemory, DmaError> {
        if len == 0 {
            return Err(DmaError::Alloc { len, reason: "zero bytes requested".into() });
        }
        let mut tried = Vec::new();
        if opts.hugepages {
            let mut kinds = Vec::new();
            if len >= GIB {
                kinds.push(Backing::Huge1G);
            }
            kinds.push(Backing::Huge2M);
            for kind in kinds {
                match Self::try_allocate(len, kind, opts) {
                    Ok(m) => return Ok(m),
                    Err(e) => tried.push(e),
                }
            }
            if !FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
                let pages = len.div_ceil(2 * MIB);
                log::warn!(
                    "no free 2 MiB hugepages for {} MiB of DMA memory; using locked 4 KiB pages, which cost \
                     IOMMU entries and page faults. Reserve hugepages with `echo {pages} | sudo tee \
                     /proc/sys/vm/nr_hugepages` (or install udev/ttdrv-hugepages.conf)",
                    len.div_ceil(MIB),
                );
            }
        }
        Self::try_allocate(len, Backing::Small, opts).map_err(|reason| {
            tried.push(reason);
            DmaError::Alloc { len, reason: tried.join("; ") }
        })
    }

    fn try_allocate(len: usize, backing: Backing, opts: &MemoryOptions) -> Result<HostMemory, String> {
        let page = backing.page_size();
        let len = len.div_ceil(page) * page;
        let flags = libc::MFD_CLOEXEC
            | match backing {
                Backing::Huge1G => libc::MFD_HUGETLB | libc::MFD_HUGE_1GB,
                Backing::Huge2M => libc::MFD_HUGETLB | libc::MFD_HUGE_2MB,
                Backing::Small => 0,
            };
        const NAME: &CStr = c"ttdrv-dma";
        // SAFETY: memfd_create with a valid NUL-terminated name; the result is checked.
        let raw = unsafe { libc::memfd_create(NAME.as_ptr(), flags) };
        if raw < 0 {
            return Err(os_err(&format!("memfd_create({backing:?})")));
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on the descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
            return Err(os_err(&format!("ftruncate({backing:?}, {len})")));
        }
        // A shared hugetlb mapping reserves its pages at mmap time, so a shortage fails here rather than with
        // SIGBUS on first touch.
        let map = MmapOptions::new()
            .len(len)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| format!("mmap({backing:?}, {len}): {e}"))?;
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
        // SAFETY: mbind on our own mapping with a one-word node mask; failure only loses locality.
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

    fn lock_and_fault(&self, policy: LockPolicy) -> Result<(), String> {
        // SAFETY: mlock on our own mapping; faults every page in.
        if unsafe { libc::mlock(self.as_ptr() as *const libc::c_void, self.len()) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if policy == LockPolicy::Required {
            let e = DmaError::Lock {
                len: self.len(),
                limit: memlock_limit_text(),
                need_kib: self.len().div_ceil(1024),
                source: err,
            };
            return Err(e.to_string());
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

/// The soft RLIMIT_MEMLOCK as text ("unlimited" or bytes).
pub fn memlock_limit_text() -> String {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return "unknown".into();
    }
    if lim.rlim_cur == libc::RLIM_INFINITY { "unlimited".into() } else { format!("{} bytes", lim.rlim_cur) }
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
    fn zero_length_is_refused() {
        assert!(HostMemory::allocate(0, &MemoryOptions::default()).is_err());
    }
}
