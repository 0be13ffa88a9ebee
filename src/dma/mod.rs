//! DMA memory: host memory the device reaches through the IOMMU.
//!
//! Memory comes from a memfd (so an out-of-process device could map the same pages), backed by 1 GiB or 2 MiB
//! hugepages when the host has them reserved and by locked 4 KiB pages otherwise, pre-faulted before the device
//! ever sees it. IOVAs come from [`iova::IovaAllocator`], which honours the transport's usable windows and the
//! device's DMA mask.

pub mod copy;
pub mod iova;
mod memory;
pub mod tile;

pub use iova::IovaAllocator;
pub use memory::{Backing, HostMemory, LockPolicy, MemoryOptions};

use crate::transport::{DmaMemory, Transport, TransportError};
use std::sync::{Arc, Mutex};
use ttdrv_contract::Iova;

/// Errors of the DMA layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DmaError {
    /// Host memory could not be allocated.
    #[error("cannot allocate {len} bytes of DMA memory: {reason}")]
    Alloc {
        /// Requested bytes.
        len: usize,
        /// Why, and what to do.
        reason: String,
    },
    /// Host memory could not be locked (pinned) although the device needs it pinned.
    #[error(
        "cannot lock {len} bytes of DMA memory ({source}); RLIMIT_MEMLOCK allows {allowed}. Raise it to at least \
         {need_kib} KiB (`ulimit -l {need_kib}`, or the memlock line of udev/99-ttdrv-memlock.conf in \
         /etc/security/limits.d/)",
        allowed = .limit.map_or_else(|| "unlimited".to_string(), |l| format!("{l} bytes")),
        need_kib = .len.div_ceil(1024)
    )]
    Lock {
        /// Bytes that could not be locked.
        len: usize,
        /// The soft RLIMIT_MEMLOCK in bytes when the lock failed; `None` when unlimited.
        limit: Option<u64>,
        /// What mlock reported.
        source: std::io::Error,
    },
    /// No IOVA window can hold the mapping.
    #[error(
        "no IOVA space for {len:#x} bytes aligned to {align:#x} below the device's {bits}-bit DMA mask \
         ({free:#x} bytes free in total); close other devices or use smaller rings"
    )]
    IovaExhausted {
        /// Bytes.
        len: u64,
        /// Alignment.
        align: u64,
        /// DMA mask width.
        bits: u32,
        /// Free bytes in all windows.
        free: u64,
    },
    /// The transport refused the mapping.
    #[error(transparent)]
    Transport(#[from] TransportError),
}

/// A block of host memory mapped for the device at an IOVA; unmapped and freed on drop.
///
/// Never hands out Rust references to its bytes: the device may write them at any time. Use [`DmaBuffer::ptr`]
/// with volatile or atomic accesses, or the copy helpers.
pub struct DmaBuffer {
    mem: HostMemory,
    iova: Iova,
    transport: Arc<dyn Transport>,
    iovas: Arc<Mutex<IovaAllocator>>,
}

// SAFETY: the buffer owns its mapping; all access goes through raw pointers whose users synchronise explicitly.
unsafe impl Send for DmaBuffer {}
// SAFETY: as above; `&DmaBuffer` only exposes the pointer and metadata.
unsafe impl Sync for DmaBuffer {}

impl DmaBuffer {
    /// Allocates `len` bytes (rounded up to the page size), reserves an IOVA and maps it for the device.
    pub fn new(
        transport: &Arc<dyn Transport>,
        iovas: &Arc<Mutex<IovaAllocator>>,
        len: usize,
        opts: &MemoryOptions,
    ) -> Result<DmaBuffer, DmaError> {
        let mem = HostMemory::allocate(len, opts)?;
        let align = mem.page_size() as u64;
        let iova = iovas.lock().unwrap_or_else(|e| e.into_inner()).alloc(mem.len() as u64, align)?;
        let desc = DmaMemory { vaddr: mem.as_ptr(), len: mem.len(), fd: mem.raw_fd(), fd_offset: 0 };
        if let Err(e) = transport.dma_map(&desc, iova) {
            iovas.lock().unwrap_or_else(|e| e.into_inner()).free(iova, mem.len() as u64);
            return Err(e.into());
        }
        Ok(DmaBuffer { mem, iova, transport: transport.clone(), iovas: iovas.clone() })
    }

    /// The device-visible address of byte 0.
    pub fn iova(&self) -> Iova {
        self.iova
    }

    /// Bytes (a multiple of the page size).
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// Start of the memory in this process.
    pub fn ptr(&self) -> *mut u8 {
        self.mem.as_ptr()
    }

    /// What backs the memory.
    pub fn backing(&self) -> Backing {
        self.mem.backing()
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        // Unmap before the pages go back to the kernel, so the device can never reach freed memory.
        if let Err(e) = self.transport.dma_unmap(self.iova, self.mem.len() as u64) {
            log::warn!("{e}; leaking the pages so the device cannot reach reused memory");
            self.mem.leak();
        }
        self.iovas.lock().unwrap_or_else(|e| e.into_inner()).free(self.iova, self.mem.len() as u64);
    }
}

#[cfg(test)]
mod tests;
