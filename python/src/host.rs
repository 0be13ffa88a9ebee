//! Host memory of host tensors: memory ttdrv owns (results of `cpu()`, converted data), or a Python object's
//! buffer used in place (`from_numpy` of a C-contiguous array of the tensor's element type).

use pyo3::buffer::PyUntypedBuffer;
use pyo3::prelude::*;
use std::alloc::{Layout as AllocLayout, alloc_zeroed, dealloc};
use std::ptr::NonNull;

/// Alignment of owned host memory: a cache line, more than any element type needs.
const ALIGN: usize = 64;

/// Zero-initialised host memory owned by ttdrv.
///
/// Who writes it: the code that creates it, before it is shared; the driver, while a non-blocking read into it is
/// in flight (the tensor that holds it exposes it to nobody until the read is complete, see `reads.rs`); and, like
/// any numpy array, whoever holds a writable view of it.
pub struct HostBytes {
    ptr: NonNull<u8>,
    len: usize,
    /// Allocated as a `Box<[u8]>` (from a vector a read filled) rather than by [`HostBytes::zeroed`].
    boxed: bool,
}

// SAFETY: HostBytes is a plain heap allocation with no thread affinity; concurrent access is governed by the rules
// in its doc comment (the tensor state machine for driver writes; the user's own synchronisation for views).
unsafe impl Send for HostBytes {}
// SAFETY: as above; shared references only hand out raw pointers.
unsafe impl Sync for HostBytes {}

impl HostBytes {
    /// `len` zero bytes (`len` >= 1: every tensor has at least one element).
    pub fn zeroed(len: usize) -> HostBytes {
        let layout = AllocLayout::from_size_align(len.max(1), ALIGN).expect("host tensor sizes fit in isize");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(p) else { std::alloc::handle_alloc_error(layout) };
        HostBytes { ptr, len, boxed: false }
    }

    /// Takes over the memory of a vector (the destination of a completed read), without copying it. Its alignment
    /// is the allocator's (16 bytes on the platforms ttdrv supports), enough for every element type.
    pub fn from_vec(v: Vec<u8>) -> HostBytes {
        let len = v.len();
        // into_boxed_slice reallocates only when capacity exceeds length; the read's vector has no spare capacity.
        let raw = Box::into_raw(v.into_boxed_slice()) as *mut u8;
        let Some(ptr) = NonNull::new(raw) else { unreachable!("Box pointers are never null") };
        HostBytes { ptr, len, boxed: true }
    }

    /// Start of the memory.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The memory, writable: only while nobody else can see it (the creator, before sharing it).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` is valid for `len` bytes for the lifetime of self, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for HostBytes {
    fn drop(&mut self) {
        if self.boxed {
            // SAFETY: made by `from_vec` from a Box<[u8]> of `len` bytes, freed once, here.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len)) });
            return;
        }
        let layout = AllocLayout::from_size_align(self.len.max(1), ALIGN).expect("checked at allocation");
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout) };
    }
}

/// The memory behind a host tensor.
pub enum HostStorage {
    /// Memory ttdrv owns.
    Owned(HostBytes),
    /// A Python object's buffer, used in place; the buffer pins the object's memory until it is released.
    Borrowed {
        /// The buffer (C-contiguous, of the tensor's size and element type: checked when the tensor was made).
        buffer: PyUntypedBuffer,
        /// The object, returned by `to_numpy()` as it is.
        object: Py<PyAny>,
    },
}

impl HostStorage {
    /// Start of the tensor's bytes.
    pub fn ptr(&self) -> *const u8 {
        match self {
            HostStorage::Owned(b) => b.ptr(),
            HostStorage::Borrowed { buffer, .. } => buffer.buf_ptr() as *const u8,
        }
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        match self {
            HostStorage::Owned(b) => b.len(),
            HostStorage::Borrowed { buffer, .. } => buffer.len_bytes(),
        }
    }

    /// Whether views of it may be written.
    pub fn readonly(&self) -> bool {
        match self {
            HostStorage::Owned(_) => false,
            HostStorage::Borrowed { buffer, .. } => buffer.readonly(),
        }
    }

    /// The bytes, for reading (conversions, checks).
    ///
    /// # Safety
    /// Nobody may write the memory while the slice lives (owned memory: no read is in flight into it, which the
    /// tensor state machine guarantees; borrowed memory: the user does not write the array meanwhile).
    pub unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: ptr is valid for len bytes while self lives; the caller excludes writers.
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len()) }
    }
}

/// A raw pointer that may cross into a closure run without the GIL (`Python::detach`).
#[derive(Clone, Copy)]
pub struct SendPtr<T>(pub *mut T);
// SAFETY: the pointer is only dereferenced under the rules of the memory it points to (HostBytes, HostStorage),
// which keep it valid for the duration of the detached call that receives it.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole `SendPtr`, not its non-`Send` field).
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// bfloat16 bits of each float32 in `src` (round to nearest even, the copy kernel's rule).
pub fn f32_to_bf16_bytes(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(2)) {
        let v = f32::from_ne_bytes([s[0], s[1], s[2], s[3]]);
        d.copy_from_slice(&ttdrv::contract::kernel::f32_to_bf16(v).to_ne_bytes());
    }
}

/// float32 values of bfloat16 bits (exact).
pub fn bf16_to_f32_bytes(src: &[u8], dst: &mut [u8]) {
    for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
        let v = ttdrv::contract::kernel::bf16_to_f32(u16::from_ne_bytes([s[0], s[1]]));
        d.copy_from_slice(&v.to_ne_bytes());
    }
}
