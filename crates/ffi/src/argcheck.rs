//! Argument checks shared by every entry point: NULL checks, outputs written only on success, C strings, and slices
//! built only on counts and pointers that can be valid.

use super::error::{FfiError, FfiResult};
use std::ffi::{CStr, c_char};

/// NULL-checks a pointer argument.
pub(crate) fn nonnull<T>(p: *const T, name: &'static str) -> FfiResult<*const T> {
    if p.is_null() { Err(FfiError::Null(name)) } else { Ok(p) }
}

/// NULL-checks an output pointer.
pub(crate) fn out_ptr<T>(p: *mut T, name: &'static str) -> FfiResult<*mut T> {
    if p.is_null() { Err(FfiError::Null(name)) } else { Ok(p) }
}

/// Writes an output (only called on success).
pub(crate) fn write_out<T>(p: *mut T, v: T) {
    // SAFETY: every caller has NULL-checked `p` with `out_ptr`; the C contract says it points to a writable T.
    unsafe { p.write(v) }
}

/// Reads a C string argument.
pub(crate) fn c_str<'a>(p: *const c_char, name: &'static str) -> FfiResult<&'a str> {
    nonnull(p, name)?;
    // SAFETY: non-NULL, and the C contract says it is a NUL-terminated string that outlives the call.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| FfiError::invalid(format!("`{name}` is not valid UTF-8; pass a UTF-8 string")))
}

/// A slice argument of `n` elements; `n == 0` allows NULL. A count whose byte size no allocation can have
/// (more than `isize::MAX` bytes) or a pointer not aligned for `T` is an error, never a slice built on it:
/// `slice::from_raw_parts` with either would be undefined behaviour (a huge count used to wrap the end pointer).
///
/// Inlined, with the messages built out of line: every dispatch takes several slices, and the checks themselves are a
/// few instructions.
#[inline]
pub(crate) fn slice<'a, T>(p: *const T, n: usize, name: &'static str) -> FfiResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    nonnull(p, name)?;
    let size = std::mem::size_of::<T>().max(1);
    if n > isize::MAX as usize / size {
        return Err(too_many(name, n, size));
    }
    if !p.is_aligned() {
        return Err(misaligned(name, p as *const u8, std::mem::align_of::<T>()));
    }
    // SAFETY: non-NULL, aligned, and `n` elements fit in isize::MAX bytes (checked above); the C contract says `p`
    // points to `n` readable elements for the duration of the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

#[cold]
fn too_many(name: &str, n: usize, size: usize) -> FfiError {
    FfiError::invalid(format!(
        "`{name}` count {n} is impossible: {n} elements of {size} bytes exceed the address space; pass the number of \
         elements the array holds"
    ))
}

#[cold]
fn misaligned(name: &str, p: *const u8, align: usize) -> FfiError {
    FfiError::invalid(format!("`{name}` ({p:p}) is not aligned to {align} bytes; pass an array of its element type"))
}

/// A byte slice argument (host data is `const void *` in C: any element type); `len == 0` allows NULL.
pub(crate) fn bytes<'a>(p: *const std::ffi::c_void, len: usize, name: &'static str) -> FfiResult<&'a [u8]> {
    slice(p as *const u8, len, name)
}
