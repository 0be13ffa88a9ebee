//! An owned `mmap`: the one place ttdrv maps and unmaps memory. DMA memory, the VFIO transport's BARs and the
//! emulated device's memories and IOMMU all hold one, so each needs no `munmap` (or `Send`/`Sync` reasoning) of its
//! own. It is an OS helper, not a layer: the emulator may use it and still share nothing with the driver.

use std::io;
use std::os::fd::RawFd;

/// A mapping unmapped on drop (unless leaked). It hands out a raw pointer only: whoever reads or writes through it
/// synchronises by its own protocol (the contract's rings, volatile register accesses), as with memory a device
/// shares.
#[derive(Debug)]
pub struct Mmap {
    ptr: *mut u8,
    len: usize,
    leaked: bool,
}

// SAFETY: the mapping is plain memory owned by this value, valid until drop on any thread; it is reached only through
// raw pointers whose users provide their own synchronisation (see the type's docs), never through Rust references.
unsafe impl Send for Mmap {}
// SAFETY: as above; `&Mmap` only yields the pointer and length.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// A shared, read-write mapping of `len` bytes of `fd` from `offset` (a memfd, or a VFIO device region).
    pub fn shared(fd: RawFd, offset: u64, len: usize) -> io::Result<Mmap> {
        let off = libc::off_t::try_from(offset).map_err(|_| io::Error::other("mmap offset out of range"))?;
        Self::new(len, libc::MAP_SHARED, fd, off)
    }

    /// A private anonymous mapping that only reserves address space (`MAP_NORESERVE`): a page costs memory once it
    /// is touched, so a 1 GiB emulated DRAM is free until used.
    pub fn sparse(len: usize) -> io::Result<Mmap> {
        Self::new(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE, -1, 0)
    }

    fn new(len: usize, flags: libc::c_int, fd: RawFd, off: libc::off_t) -> io::Result<Mmap> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot map 0 bytes"));
        }
        // SAFETY: a new mapping at an address the kernel chooses, so no existing memory is affected; the result is
        // checked before use.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, flags, fd, off) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mmap { ptr: ptr as *mut u8, len, leaked: false })
    }

    /// Start of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if empty (never: empty mappings are refused).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps the pages mapped for the rest of the process: for memory a device may still reach because it could not
    /// be made to forget it.
    pub fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        if !self.leaked {
            // SAFETY: unmapping this value's own mapping exactly once; users only hold raw pointers into it, which
            // they may not use past this value's life.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_maps_writes_and_refuses_empty() {
        let m = Mmap::sparse(1 << 30).expect("1 GiB of address space");
        // SAFETY: both offsets are inside the mapping.
        unsafe {
            m.as_ptr().write(1);
            m.as_ptr().add(m.len() - 1).write(2);
            assert_eq!(m.as_ptr().read() + m.as_ptr().add(m.len() - 1).read(), 3);
        }
        assert_eq!(Mmap::sparse(0).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert!(Mmap::shared(-1, 0, 4096).is_err(), "a bad descriptor is an error, not a mapping");
    }
}
