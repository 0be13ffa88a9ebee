//! The C ABI: `include/ttdrv.h` is generated from this module by cbindgen.
//!
//! Conventions (rustls-ffi style): opaque handles created by `_new`/`_open`/`_allocate` and released by
//! `_free`/`_close` (releasing NULL is a no-op); every function returns a [`ttdrv_status`]; the object comes first,
//! inputs before outputs, every buffer is followed by its length; outputs are written only on success; a failed
//! call leaves a per-thread message ([`ttdrv_last_error_message`]); no panic crosses the boundary. Handles are
//! checked, not trusted: a stale or forged handle is `TTDRV_STATUS_INVALID_HANDLE`.

#![allow(non_camel_case_types)]

pub mod buffer;
pub mod device;
pub mod event;
pub(crate) mod handles;
pub mod model;
pub mod ops;
pub mod program;
pub mod trace;

use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use ttdrv::error::Error;

/// Result of every ttdrv call. Values are stable across releases; new values may be added.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ttdrv_status {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullParameter = 7001,
    /// An argument is out of range or inconsistent.
    InvalidArgument = 7002,
    /// A handle is stale (freed, closed) or was never valid.
    InvalidHandle = 7003,
    /// The call is not allowed now (trace capture active, event never recorded, ...).
    InvalidState = 7004,
    /// No device matched the selector.
    NotFound = 7005,
    /// The device or this build lacks the feature.
    Unsupported = 7006,
    /// Device memory (DRAM, L1) is exhausted.
    OutOfDeviceMemory = 7007,
    /// The trace region is missing or too small.
    TraceRegion = 7008,
    /// A program dispatched during trace capture has never run.
    ProgramNotCached = 7009,
    /// Host DMA memory could not be allocated, locked or mapped.
    HostMemory = 7010,
    /// The bus (VFIO, emulator) refused an operation.
    Transport = 7011,
    /// A wait timed out.
    Timeout = 7012,
    /// The device faulted; reset it with `ttdrv_device_reset`.
    DeviceFault = 7013,
    /// The device broke the hardware contract.
    Protocol = 7014,
    /// The device was opened by the parent of this forked process.
    Forked = 7015,
    /// The device was closed.
    Closed = 7016,
    /// An output buffer is too small.
    BufferTooSmall = 7017,
    /// A bug inside ttdrv (a caught panic).
    Panic = 7099,
}

thread_local! {
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What `ttdrv_last_error` gives once the calling thread's message store has been destroyed: a C program may call
/// ttdrv from a thread-exit destructor (`pthread_key_create`), which runs after Rust's thread-locals are gone.
const NO_MESSAGE_STORE: &CStr = c"(no message: ttdrv was called from a thread-exit destructor, after this thread's \
    message store was destroyed; the returned status stands)";

// `try_with`, never `with`: `with` panics once the thread-local is destroyed, and these run outside the panic
// boundary, so a ttdrv call from a thread-exit destructor would abort the process.
fn set_last_error(msg: &str) {
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.extend(msg.bytes().filter(|&b| b != 0));
        e.push(0);
    });
}

fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.push(0);
    });
}

/// Errors of the FFI layer on top of the driver's.
pub(crate) enum FfiError {
    Null(&'static str),
    BadHandle(String),
    Driver(Error),
}

impl From<Error> for FfiError {
    fn from(e: Error) -> Self {
        FfiError::Driver(e)
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, FfiError>;

fn status_of(e: &Error) -> ttdrv_status {
    use ttdrv::error::ErrorKind as K;
    match e.kind() {
        K::InvalidArgument => ttdrv_status::InvalidArgument,
        K::InvalidHandle => ttdrv_status::InvalidHandle,
        K::InvalidState => ttdrv_status::InvalidState,
        K::NotFound => ttdrv_status::NotFound,
        K::Unsupported => ttdrv_status::Unsupported,
        K::OutOfDeviceMemory => ttdrv_status::OutOfDeviceMemory,
        K::TraceRegion => ttdrv_status::TraceRegion,
        K::ProgramNotCached => ttdrv_status::ProgramNotCached,
        K::HostMemory => ttdrv_status::HostMemory,
        K::Transport => ttdrv_status::Transport,
        K::Timeout => ttdrv_status::Timeout,
        K::DeviceFault => ttdrv_status::DeviceFault,
        K::Protocol => ttdrv_status::Protocol,
        K::Forked => ttdrv_status::Forked,
        K::Closed => ttdrv_status::Closed,
        // A kind added to the driver before the C ABI learns it: the closest general status.
        _ => ttdrv_status::InvalidState,
    }
}

/// Runs an entry point: catches panics, maps errors to a status and records the message.
pub(crate) fn guard(name: &str, f: impl FnOnce() -> FfiResult) -> ttdrv_status {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => {
            clear_last_error();
            ttdrv_status::Ok
        }
        Ok(Err(e)) => {
            let (status, msg) = match e {
                FfiError::Null(p) => {
                    (ttdrv_status::NullParameter, format!("{name}: argument `{p}` is NULL; pass a valid pointer"))
                }
                FfiError::BadHandle(m) => (ttdrv_status::InvalidHandle, format!("{name}: {m}")),
                FfiError::Driver(e) => (status_of(&e), format!("{name}: {e}")),
            };
            set_last_error(&msg);
            status
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!(
                "{name}: internal error in ttdrv (a panic: {what}); the call had no effect on your data that you can \
                 rely on. Please report it with this message"
            ));
            ttdrv_status::Panic
        }
    }
}

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
    s.to_str().map_err(|_| FfiError::Driver(Error::InvalidArgument(format!("`{name}` is not valid UTF-8"))))
}

/// A slice argument of `n` elements; `n == 0` allows NULL. A count whose byte size no allocation can have
/// (more than `isize::MAX` bytes) or a pointer not aligned for `T` is an error, never a slice built on it:
/// `slice::from_raw_parts` with either would be undefined behaviour (a huge count used to wrap the end pointer).
pub(crate) fn slice<'a, T>(p: *const T, n: usize, name: &'static str) -> FfiResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    nonnull(p, name)?;
    let size = std::mem::size_of::<T>().max(1);
    if n > isize::MAX as usize / size {
        return Err(FfiError::Driver(Error::InvalidArgument(format!(
            "`{name}` count {n} is impossible: {n} elements of {size} bytes exceed the address space"
        ))));
    }
    if !p.is_aligned() {
        return Err(FfiError::Driver(Error::InvalidArgument(format!(
            "`{name}` ({p:p}) is not aligned to {} bytes",
            std::mem::align_of::<T>()
        ))));
    }
    // SAFETY: non-NULL, aligned, and `n` elements fit in isize::MAX bytes (checked above); the C contract says `p`
    // points to `n` readable elements for the duration of the call.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A byte slice argument; `len == 0` allows NULL.
pub(crate) fn bytes<'a>(p: *const u8, len: usize, name: &'static str) -> FfiResult<&'a [u8]> {
    slice(p, len, name)
}

/// Copies the calling thread's last error message into `buf` (NUL-terminated, truncated to fit `len` bytes) and writes
/// the message's full length (without the NUL) to `*out_len` when `out_len` is not NULL. Call it with `buf = NULL, len
/// = 0` to learn the length first. The message describes the most recent failed ttdrv call on this thread; a successful
/// call clears it. This call does not change it.
///
/// Ownership: `buf` stays the caller's; nothing is allocated. Thread: any; each thread has its own message.
/// Returns: OK (the whole message, possibly empty, was copied), BUFFER_TOO_SMALL (it was truncated, or `buf` is NULL /
/// `len` is 0 and the message is not empty).
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `out_len` must be NULL or point to a writable `size_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_last_error_message(buf: *mut c_char, len: usize, out_len: *mut usize) -> ttdrv_status {
    let copy = |e: &[u8]| {
        let msg_len = e.len().saturating_sub(1);
        if !out_len.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { out_len.write(msg_len) };
        }
        if buf.is_null() || len == 0 {
            return if msg_len == 0 { ttdrv_status::Ok } else { ttdrv_status::BufferTooSmall };
        }
        let n = msg_len.min(len - 1);
        // SAFETY: `buf` holds `len` bytes and we write `n + 1 <= len`.
        unsafe {
            std::ptr::copy_nonoverlapping(e.as_ptr() as *const c_char, buf, n);
            buf.add(n).write(0);
        }
        if n < msg_len { ttdrv_status::BufferTooSmall } else { ttdrv_status::Ok }
    };
    LAST_ERROR.try_with(|e| copy(&e.borrow())).unwrap_or_else(|_| copy(NO_MESSAGE_STORE.to_bytes_with_nul()))
}

/// The calling thread's last error message as a NUL-terminated string: what the most recent failed ttdrv call on this
/// thread found wrong and what to do about it; "" after a successful call. Never NULL.
///
/// Ownership: the string belongs to ttdrv; it stays valid until the next ttdrv call on this thread (copy it with
/// `ttdrv_last_error_message` to keep it). Thread: any; each thread has its own message. Messages are for people: match
/// on the returned status, never on the text (docs/abi.md).
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| {
            let mut e = e.borrow_mut();
            if e.is_empty() {
                e.push(0);
            }
            e.as_ptr() as *const c_char
        })
        .unwrap_or(NO_MESSAGE_STORE.as_ptr())
}

/// The name of a status value as a static NUL-terminated string, e.g. "TTDRV_STATUS_TIMEOUT"; values this library does
/// not know give "TTDRV_STATUS_UNKNOWN". Never NULL; never freed. Thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_status_name(status: u32) -> *const c_char {
    let s: &CStr = match status {
        0 => c"TTDRV_STATUS_OK",
        7001 => c"TTDRV_STATUS_NULL_PARAMETER",
        7002 => c"TTDRV_STATUS_INVALID_ARGUMENT",
        7003 => c"TTDRV_STATUS_INVALID_HANDLE",
        7004 => c"TTDRV_STATUS_INVALID_STATE",
        7005 => c"TTDRV_STATUS_NOT_FOUND",
        7006 => c"TTDRV_STATUS_UNSUPPORTED",
        7007 => c"TTDRV_STATUS_OUT_OF_DEVICE_MEMORY",
        7008 => c"TTDRV_STATUS_TRACE_REGION",
        7009 => c"TTDRV_STATUS_PROGRAM_NOT_CACHED",
        7010 => c"TTDRV_STATUS_HOST_MEMORY",
        7011 => c"TTDRV_STATUS_TRANSPORT",
        7012 => c"TTDRV_STATUS_TIMEOUT",
        7013 => c"TTDRV_STATUS_DEVICE_FAULT",
        7014 => c"TTDRV_STATUS_PROTOCOL",
        7015 => c"TTDRV_STATUS_FORKED",
        7016 => c"TTDRV_STATUS_CLOSED",
        7017 => c"TTDRV_STATUS_BUFFER_TOO_SMALL",
        7099 => c"TTDRV_STATUS_PANIC",
        _ => c"TTDRV_STATUS_UNKNOWN",
    };
    s.as_ptr()
}

/// The library's version as a static NUL-terminated string, e.g. "0.1.0". Compare it with `TTDRV_VERSION_STRING` (or
/// `ttdrv_version_number()` with `TTDRV_VERSION_NUMBER`) to detect a program built against another header than the
/// library it runs with. Never NULL; never freed. Thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_version() -> *const c_char {
    static V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr() as *const c_char
}

/// The library's version as `major << 16 | minor << 8 | patch` (0.1.0 is 0x000100). A program built against header
/// `TTDRV_VERSION_NUMBER` runs correctly with any library whose major version is the same and whose number is at least
/// as high (docs/abi.md). Thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_version_number() -> u32 {
    let p = |s: &str| s.parse::<u32>().unwrap_or(0);
    p(env!("CARGO_PKG_VERSION_MAJOR")) << 16
        | p(env!("CARGO_PKG_VERSION_MINOR")) << 8
        | p(env!("CARGO_PKG_VERSION_PATCH"))
}

/// Panics inside an entry point on purpose, to prove the panic boundary: returns TTDRV_STATUS_PANIC with a message
/// naming the panic, and ttdrv stays usable. For tests; it changes nothing else. Thread: any.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_debug_panic() -> ttdrv_status {
    guard("ttdrv_debug_panic", || panic!("ttdrv_debug_panic was called"))
}
