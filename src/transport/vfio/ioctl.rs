//! One small function per VFIO ioctl: borrowed descriptor in, plain values or an owned descriptor out, errno
//! captured in a typed error naming the call.
//!
//! Structs and constants come from `vfio-bindings` (generated from the kernel's `linux/vfio.h`); the request numbers
//! are built here with the kernel's `_IO(VFIO_TYPE, VFIO_BASE + n)` encoding. Variable-length replies (region info
//! and IOMMU info with capability chains) are read into an 8-byte aligned buffer and their capabilities are parsed
//! from bytes with bounds checks, never by casting into the buffer.
//!
//! # Why not `nix`'s ioctl macros
//! The rest of the transport uses `nix` where it removes `unsafe` (eventfd, poll, read). Its `ioctl_*!` macros would
//! not: the functions they generate are `unsafe` to call all the same, and VFIO's requests are `_IO` numbers that
//! nevertheless pass pointers to variable-length structs, which only the untyped `ioctl_*_bad!` forms can express.
//! Calling `libc::ioctl` directly keeps one `unsafe` block per ioctl, each next to the struct it passes.

use std::ffi::CStr;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use vfio_bindings::bindings::vfio as sys;

/// `_IO(VFIO_TYPE, VFIO_BASE + nr)`: VFIO's requests carry no size or direction bits (`linux/vfio.h`).
const fn io(nr: u32) -> libc::Ioctl {
    (((sys::VFIO_TYPE as u32) << 8) | (sys::VFIO_BASE + nr)) as libc::Ioctl
}

const GET_API_VERSION: libc::Ioctl = io(0);
const CHECK_EXTENSION: libc::Ioctl = io(1);
const SET_IOMMU: libc::Ioctl = io(2);
const GROUP_GET_STATUS: libc::Ioctl = io(3);
const GROUP_SET_CONTAINER: libc::Ioctl = io(4);
const GROUP_GET_DEVICE_FD: libc::Ioctl = io(6);
const DEVICE_GET_INFO: libc::Ioctl = io(7);
const DEVICE_GET_REGION_INFO: libc::Ioctl = io(8);
const DEVICE_GET_IRQ_INFO: libc::Ioctl = io(9);
const DEVICE_SET_IRQS: libc::Ioctl = io(10);
const DEVICE_RESET: libc::Ioctl = io(11);
const IOMMU_GET_INFO: libc::Ioctl = io(12);
const IOMMU_MAP_DMA: libc::Ioctl = io(13);
const IOMMU_UNMAP_DMA: libc::Ioctl = io(14);

// The kernel ABI these wrappers rely on; a bindings update that changed it would fail to build.
const _: () = assert!(GET_API_VERSION == 0x3b64 && IOMMU_UNMAP_DMA == 0x3b72);
const _: () = assert!(std::mem::size_of::<sys::vfio_irq_set>() == 20);
const _: () = assert!(std::mem::size_of::<sys::vfio_region_info>() == 32);
const _: () = assert!(std::mem::size_of::<sys::vfio_iommu_type1_info>() == 24);
const _: () = assert!(std::mem::size_of::<sys::vfio_iommu_type1_dma_map>() == 32);
const _: () = assert!(std::mem::size_of::<sys::vfio_iommu_type1_dma_unmap>() == 24);

/// A failed VFIO ioctl.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct IoctlError {
    /// The ioctl, e.g. `VFIO_IOMMU_MAP_DMA`.
    pub call: &'static str,
    /// errno.
    #[source]
    pub source: io::Error,
}

impl IoctlError {
    fn last(call: &'static str) -> IoctlError {
        IoctlError { call, source: io::Error::last_os_error() }
    }

    /// The errno value.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// Result of a VFIO ioctl.
pub type Result<T> = std::result::Result<T, IoctlError>;

fn check(call: &'static str, rc: libc::c_int) -> Result<libc::c_int> {
    if rc < 0 { Err(IoctlError::last(call)) } else { Ok(rc) }
}

/// `VFIO_GET_API_VERSION` on a container.
pub fn api_version(container: BorrowedFd<'_>) -> Result<i32> {
    // SAFETY: this request takes no argument; the descriptor is valid for the borrow.
    check("VFIO_GET_API_VERSION", unsafe { libc::ioctl(container.as_raw_fd(), GET_API_VERSION) })
}

/// `VFIO_CHECK_EXTENSION`: whether the container supports `ext` (an IOMMU type such as `VFIO_TYPE1v2_IOMMU`).
pub fn check_extension(container: BorrowedFd<'_>, ext: u32) -> Result<bool> {
    // SAFETY: the argument is passed by value; the descriptor is valid for the borrow.
    let rc = check("VFIO_CHECK_EXTENSION", unsafe {
        libc::ioctl(container.as_raw_fd(), CHECK_EXTENSION, ext as libc::c_ulong)
    })?;
    Ok(rc > 0)
}

/// `VFIO_SET_IOMMU`: selects the IOMMU model once a group is attached.
pub fn set_iommu(container: BorrowedFd<'_>, iommu_type: u32) -> Result<()> {
    // SAFETY: the argument is passed by value; the descriptor is valid for the borrow.
    check("VFIO_SET_IOMMU", unsafe { libc::ioctl(container.as_raw_fd(), SET_IOMMU, iommu_type as libc::c_ulong) })?;
    Ok(())
}

/// `VFIO_GROUP_GET_STATUS`: the group's flags (`VFIO_GROUP_FLAGS_VIABLE`, `..._CONTAINER_SET`).
pub fn group_status(group: BorrowedFd<'_>) -> Result<u32> {
    let mut st = sys::vfio_group_status { argsz: std::mem::size_of::<sys::vfio_group_status>() as u32, flags: 0 };
    // SAFETY: the kernel writes at most `argsz` bytes into `st`, which lives across the call.
    check("VFIO_GROUP_GET_STATUS", unsafe { libc::ioctl(group.as_raw_fd(), GROUP_GET_STATUS, &mut st) })?;
    Ok(st.flags)
}

/// `VFIO_GROUP_SET_CONTAINER`.
pub fn group_set_container(group: BorrowedFd<'_>, container: BorrowedFd<'_>) -> Result<()> {
    let fd: RawFd = container.as_raw_fd();
    // SAFETY: the kernel reads one int (the container descriptor) from `fd`, which lives across the call.
    check("VFIO_GROUP_SET_CONTAINER", unsafe { libc::ioctl(group.as_raw_fd(), GROUP_SET_CONTAINER, &fd) })?;
    Ok(())
}

/// `VFIO_GROUP_GET_DEVICE_FD`: a descriptor for the device named `name` (its PCI address) in the group.
pub fn group_device_fd(group: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    // SAFETY: the kernel reads a NUL-terminated string from `name`, which lives across the call.
    let fd = check("VFIO_GROUP_GET_DEVICE_FD", unsafe {
        libc::ioctl(group.as_raw_fd(), GROUP_GET_DEVICE_FD, name.as_ptr())
    })?;
    // SAFETY: on success the ioctl returns a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `VFIO_DEVICE_GET_INFO`.
pub fn device_info(device: BorrowedFd<'_>) -> Result<sys::vfio_device_info> {
    let mut info =
        sys::vfio_device_info { argsz: std::mem::size_of::<sys::vfio_device_info>() as u32, ..Default::default() };
    // SAFETY: the kernel writes at most `argsz` bytes into `info`, which lives across the call.
    check("VFIO_DEVICE_GET_INFO", unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_GET_INFO, &mut info) })?;
    Ok(info)
}

/// A reply that may carry a capability chain: the fixed struct and the whole reply as bytes (capability offsets
/// count from the start of the reply).
pub struct WithCaps<T> {
    /// The fixed part.
    pub info: T,
    /// The reply, fixed part included.
    pub bytes: Vec<u8>,
}

/// Issues `req` with `init` at the start of an 8-byte aligned buffer; when the kernel reports (through `argsz`)
/// that the reply needs more room, retries once with a buffer that large.
///
/// # Safety
/// `req` must be an ioctl that reads and writes a `T` whose first field is `argsz` (a `u32` giving the bytes the
/// caller provides), possibly followed by a capability area; `T` must be plain old data with alignment ≤ 8.
unsafe fn call_with_caps<T: Copy>(
    fd: BorrowedFd<'_>,
    req: libc::Ioctl,
    call: &'static str,
    init: T,
    argsz: fn(&T) -> u32,
    set_argsz: fn(&mut T, u32),
) -> Result<WithCaps<T>> {
    let base = std::mem::size_of::<T>();
    let mut want = base;
    for _ in 0..2 {
        let mut buf = vec![0u64; want.div_ceil(8)];
        let mut head = init;
        set_argsz(&mut head, want as u32);
        // SAFETY: `buf` holds at least `size_of::<T>()` bytes and is 8-byte aligned, which suffices for `T`.
        unsafe { std::ptr::write(buf.as_mut_ptr() as *mut T, head) };
        // SAFETY: the kernel writes at most `argsz` (= `want` ≤ the buffer's size) bytes into `buf` (caller's
        // contract on `req`); the buffer lives across the call.
        check(call, unsafe { libc::ioctl(fd.as_raw_fd(), req, buf.as_mut_ptr()) })?;
        // SAFETY: as for the write above; the kernel filled a valid `T` (plain old data).
        let info: T = unsafe { std::ptr::read(buf.as_ptr() as *const T) };
        let needed = argsz(&info) as usize;
        if needed > want && want == base {
            want = needed;
            continue;
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).take(needed.min(want).max(base)).collect();
        return Ok(WithCaps { info, bytes });
    }
    Err(IoctlError { call, source: io::Error::other("the reply kept growing") })
}

/// `VFIO_DEVICE_GET_REGION_INFO` for region `index`, with its capability chain.
pub fn region_info(device: BorrowedFd<'_>, index: u32) -> Result<WithCaps<sys::vfio_region_info>> {
    let init = sys::vfio_region_info { index, ..Default::default() };
    // SAFETY: VFIO_DEVICE_GET_REGION_INFO reads and writes a `vfio_region_info` (argsz first, alignment 8) plus
    // its capability area.
    unsafe {
        call_with_caps(
            device,
            DEVICE_GET_REGION_INFO,
            "VFIO_DEVICE_GET_REGION_INFO",
            init,
            |i| i.argsz,
            |i, n| i.argsz = n,
        )
    }
}

/// `VFIO_IOMMU_GET_INFO` on a container whose IOMMU type is set, with its capability chain.
pub fn iommu_info(container: BorrowedFd<'_>) -> Result<WithCaps<sys::vfio_iommu_type1_info>> {
    let init = sys::vfio_iommu_type1_info::default();
    // SAFETY: VFIO_IOMMU_GET_INFO reads and writes a `vfio_iommu_type1_info` (argsz first, alignment 8) plus its
    // capability area.
    unsafe { call_with_caps(container, IOMMU_GET_INFO, "VFIO_IOMMU_GET_INFO", init, |i| i.argsz, |i, n| i.argsz = n) }
}

/// `VFIO_DEVICE_GET_IRQ_INFO` for interrupt index `index` (`VFIO_PCI_MSIX_IRQ_INDEX`, ...).
pub fn irq_info(device: BorrowedFd<'_>, index: u32) -> Result<sys::vfio_irq_info> {
    let mut info =
        sys::vfio_irq_info { argsz: std::mem::size_of::<sys::vfio_irq_info>() as u32, index, ..Default::default() };
    // SAFETY: the kernel writes at most `argsz` bytes into `info`, which lives across the call.
    check("VFIO_DEVICE_GET_IRQ_INFO", unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_GET_IRQ_INFO, &mut info) })?;
    Ok(info)
}

/// `VFIO_DEVICE_SET_IRQS` with `DATA_EVENTFD | ACTION_TRIGGER`: vector `i` of `index` signals `fds[i]`. An empty
/// `fds` disables the index.
pub fn set_irq_eventfds(device: BorrowedFd<'_>, index: u32, fds: &[RawFd]) -> Result<()> {
    // struct vfio_irq_set { u32 argsz, flags, index, start, count; u8 data[] }: five words, then one s32 per
    // vector. Built as words so the buffer is aligned for the header (size asserted above).
    let (flags, count) = if fds.is_empty() {
        (sys::VFIO_IRQ_SET_DATA_NONE | sys::VFIO_IRQ_SET_ACTION_TRIGGER, 0)
    } else {
        (sys::VFIO_IRQ_SET_DATA_EVENTFD | sys::VFIO_IRQ_SET_ACTION_TRIGGER, fds.len() as u32)
    };
    let mut words: Vec<u32> = vec![0, flags, index, 0, count];
    words.extend(fds.iter().map(|&fd| fd as u32));
    words[0] = (words.len() * 4) as u32;
    // SAFETY: the kernel reads `argsz` bytes from `words`, which holds exactly that many and lives across the call.
    check("VFIO_DEVICE_SET_IRQS", unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_SET_IRQS, words.as_ptr()) })?;
    Ok(())
}

/// `VFIO_DEVICE_RESET`: function-level (or bus-level) reset of the device.
pub fn reset(device: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: this request takes no argument; the descriptor is valid for the borrow.
    check("VFIO_DEVICE_RESET", unsafe { libc::ioctl(device.as_raw_fd(), DEVICE_RESET) })?;
    Ok(())
}

/// `VFIO_IOMMU_MAP_DMA`: maps `size` bytes of this process at `vaddr` for the device at `iova`, read and write.
/// The kernel pins the pages.
pub fn map_dma(container: BorrowedFd<'_>, vaddr: u64, iova: u64, size: u64) -> Result<()> {
    let map = sys::vfio_iommu_type1_dma_map {
        argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_map>() as u32,
        flags: sys::VFIO_DMA_MAP_FLAG_READ | sys::VFIO_DMA_MAP_FLAG_WRITE,
        vaddr,
        iova,
        size,
    };
    // SAFETY: the kernel reads `argsz` bytes from `map`, which lives across the call. It does not dereference
    // `vaddr` in this process: it pins the pages behind it, failing if they are not mapped.
    check("VFIO_IOMMU_MAP_DMA", unsafe { libc::ioctl(container.as_raw_fd(), IOMMU_MAP_DMA, &map) })?;
    Ok(())
}

/// `VFIO_IOMMU_UNMAP_DMA`: removes the mappings in `[iova, iova + size)`; returns the bytes unmapped.
pub fn unmap_dma(container: BorrowedFd<'_>, iova: u64, size: u64) -> Result<u64> {
    let mut unmap = sys::vfio_iommu_type1_dma_unmap {
        argsz: std::mem::size_of::<sys::vfio_iommu_type1_dma_unmap>() as u32,
        flags: 0,
        iova,
        size,
        ..Default::default()
    };
    // SAFETY: the kernel reads and writes back `argsz` bytes of `unmap`, which lives across the call.
    check("VFIO_IOMMU_UNMAP_DMA", unsafe { libc::ioctl(container.as_raw_fd(), IOMMU_UNMAP_DMA, &mut unmap) })?;
    Ok(unmap.size)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

/// One entry of a capability chain (`struct vfio_info_cap_header`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap {
    /// Capability id.
    pub id: u16,
    /// Its version.
    pub version: u16,
    /// Byte offset of its header in the reply.
    pub offset: usize,
}

/// Walks the capability chain starting at `first` (0: none). Stops at the end, at an offset outside the reply,
/// and at a link that does not move forward (so a corrupt chain cannot loop).
pub fn caps(bytes: &[u8], first: u32) -> Vec<Cap> {
    let mut out = Vec::new();
    let mut off = first as usize;
    while off != 0 {
        let (Some(idv), Some(next)) = (u32_at(bytes, off), u32_at(bytes, off + 4)) else {
            break;
        };
        out.push(Cap { id: (idv & 0xFFFF) as u16, version: (idv >> 16) as u16, offset: off });
        let next = next as usize;
        if next <= off {
            break;
        }
        off = next;
    }
    out
}

/// The areas of a `VFIO_REGION_INFO_CAP_SPARSE_MMAP` capability at `cap`: `(offset, size)` inside the region.
pub fn sparse_areas(bytes: &[u8], cap: &Cap) -> Vec<(u64, u64)> {
    // header (8), u32 nr_areas, u32 reserved, then { u64 offset; u64 size } per area.
    let Some(n) = u32_at(bytes, cap.offset + 8) else {
        return Vec::new();
    };
    (0..n as usize)
        .map_while(|i| {
            let at = cap.offset + 16 + i * 16;
            Some((u64_at(bytes, at)?, u64_at(bytes, at + 8)?))
        })
        .collect()
}

/// The windows of a `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE` capability at `cap`, as half-open ranges.
pub fn iova_ranges(bytes: &[u8], cap: &Cap) -> Vec<Range<u64>> {
    // header (8), u32 nr_iovas, u32 reserved, then { u64 start; u64 end } per window, `end` inclusive.
    let Some(n) = u32_at(bytes, cap.offset + 8) else {
        return Vec::new();
    };
    let mut out: Vec<Range<u64>> = (0..n as usize)
        .map_while(|i| {
            let at = cap.offset + 16 + i * 16;
            Some(u64_at(bytes, at)?..u64_at(bytes, at + 8)?.saturating_add(1))
        })
        .filter(|r| r.start < r.end)
        .collect();
    out.sort_by_key(|r| r.start);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put32(b: &mut Vec<u8>, at: usize, v: u32) {
        if b.len() < at + 4 {
            b.resize(at + 4, 0);
        }
        b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put64(b: &mut Vec<u8>, at: usize, v: u64) {
        if b.len() < at + 8 {
            b.resize(at + 8, 0);
        }
        b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    #[test]
    fn request_numbers_match_the_kernel() {
        // From linux/vfio.h: ';' << 8 | (100 + n).
        assert_eq!(SET_IOMMU, 0x3b66);
        assert_eq!(GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(DEVICE_RESET, 0x3b6f);
        assert_eq!(IOMMU_MAP_DMA, 0x3b71);
    }

    #[test]
    fn parses_a_capability_chain() {
        // A 32-byte fixed part, an unrelated cap at 32 linking to an IOVA-range cap at 48.
        let mut b = vec![0u8; 32];
        put32(&mut b, 32, 2 | 1 << 16);
        put32(&mut b, 36, 48);
        put32(&mut b, 48, sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE);
        put32(&mut b, 52, 0);
        put32(&mut b, 56, 2);
        put64(&mut b, 64, 0);
        put64(&mut b, 72, 0xfedf_ffff);
        put64(&mut b, 80, 0xfef0_0000);
        put64(&mut b, 88, u64::MAX);
        let c = caps(&b, 32);
        assert_eq!(c, vec![Cap { id: 2, version: 1, offset: 32 }, Cap { id: 1, version: 0, offset: 48 }]);
        assert_eq!(iova_ranges(&b, &c[1]), vec![0..0xfee0_0000, 0xfef0_0000..u64::MAX]);
        // A truncated reply yields the windows that fit.
        assert_eq!(iova_ranges(&b[..88], &c[1]), vec![0..0xfee0_0000]);
        assert!(caps(&b, 0).is_empty());
        assert!(caps(&b, 400).is_empty());
    }

    #[test]
    fn a_looping_chain_stops() {
        let mut b = vec![0u8; 16];
        put32(&mut b, 8, 1);
        put32(&mut b, 12, 8);
        assert_eq!(caps(&b, 8).len(), 1);
    }

    #[test]
    fn parses_sparse_areas() {
        let mut b = vec![0u8; 32];
        put32(&mut b, 32, sys::VFIO_REGION_INFO_CAP_SPARSE_MMAP);
        put32(&mut b, 40, 2);
        put64(&mut b, 48, 0);
        put64(&mut b, 56, 0x2000);
        put64(&mut b, 64, 0x3000);
        put64(&mut b, 72, 0xd000);
        let c = caps(&b, 32);
        assert_eq!(sparse_areas(&b, &c[0]), vec![(0, 0x2000), (0x3000, 0xd000)]);
    }
}
