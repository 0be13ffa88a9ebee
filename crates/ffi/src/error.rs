//! Statuses and messages: the one `ttdrv_status` enum, how driver errors map onto it, and the per-thread message
//! store behind `ttdrv_last_error`.
//!
//! The enum is declared once, as a literal `#[repr(u32)]` enum, because cbindgen writes the header from it and cannot
//! see inside macros. Everything else about a status is derived from that declaration: its C name
//! (`TTDRV_STATUS_...`, by strum's `IntoStaticStr` with the header's own prefix), the value-to-status lookup
//! (`FromRepr`) and the list tests iterate (`EnumIter`); `tests/header.rs` checks the derived names against the
//! generated header.

use std::cell::RefCell;
use std::ffi::{CStr, c_char};
use strum::{EnumIter, FromRepr, IntoStaticStr};

/// Result of every ttdrv call. Values are stable across releases; new values may be added.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, EnumIter, FromRepr, IntoStaticStr)]
#[strum(serialize_all = "SCREAMING_SNAKE_CASE", prefix = "TTDRV_STATUS_", suffix = "\0")]
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
    /// A buffer's contents are undefined: a write to it stopped part-way, or the device was reset since it was last
    /// written (`ttdrv_buffer_contents` says which). Write it whole again before reading it.
    ContentsUndefined = 7018,
    /// A bug inside ttdrv (a caught panic).
    Panic = 7099,
}

/// What `ttdrv_status_name` gives for a value this library does not know.
const UNKNOWN_STATUS: &CStr = c"TTDRV_STATUS_UNKNOWN";

impl ttdrv_status {
    /// The status's C name, e.g. `TTDRV_STATUS_TIMEOUT`, as the header spells it.
    pub fn name(self) -> &'static CStr {
        let s: &'static str = self.into();
        // The derive appends the NUL (`suffix` above); a name without one would be a bug the unit test catches.
        CStr::from_bytes_with_nul(s.as_bytes()).unwrap_or(UNKNOWN_STATUS)
    }
}

/// The status a driver error is reported as. Only the error's kind decides it: the kind list is the driver's stable
/// classification, whatever detail each error carries.
pub(crate) fn status_of(e: &ttdrv::Error) -> ttdrv_status {
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
        K::ContentsUndefined => ttdrv_status::ContentsUndefined,
        // A kind added to the driver before the C ABI learns it: the closest general status.
        _ => ttdrv_status::InvalidState,
    }
}

/// Why an entry point failed. The C layer's own findings carry their status; driver errors are mapped by
/// [`status_of`] when reported, and their text is the driver's `Display`.
pub(crate) enum FfiError {
    /// A required pointer argument (named) was NULL.
    Null(&'static str),
    /// A failure the C layer found itself: its status and message.
    Status(ttdrv_status, String),
    /// A failure the driver reported.
    Driver(ttdrv::Error),
}

impl FfiError {
    /// An argument the C layer refuses (INVALID_ARGUMENT); the message says what was wrong and what to do.
    pub(crate) fn invalid(msg: impl Into<String>) -> FfiError {
        FfiError::Status(ttdrv_status::InvalidArgument, msg.into())
    }

    /// The status and message `name` (the entry point) reports for this error.
    pub(crate) fn report(&self, name: &str) -> (ttdrv_status, String) {
        match self {
            FfiError::Null(p) => {
                (ttdrv_status::NullParameter, format!("{name}: argument `{p}` is NULL; pass a valid pointer"))
            }
            FfiError::Status(s, m) => (*s, format!("{name}: {m}")),
            FfiError::Driver(e) => (status_of(e), format!("{name}: {e}")),
        }
    }
}

impl From<ttdrv::Error> for FfiError {
    fn from(e: ttdrv::Error) -> Self {
        FfiError::Driver(e)
    }
}

/// What entry points return inside the boundary.
pub(crate) type FfiResult<T = ()> = Result<T, FfiError>;

thread_local! {
    static LAST_ERROR: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What `ttdrv_last_error` gives once the calling thread's message store has been destroyed: a C program may call
/// ttdrv from a thread-exit destructor (`pthread_key_create`), which runs after Rust's thread-locals are gone.
const NO_MESSAGE_STORE: &CStr = c"(no message: ttdrv was called from a thread-exit destructor, after this thread's \
    message store was destroyed; the returned status stands)";

// `try_with`, never `with`: `with` panics once the thread-local is destroyed, and these run outside the panic
// boundary, so a ttdrv call from a thread-exit destructor would abort the process.
pub(crate) fn set_last_error(msg: &str) {
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        e.clear();
        e.extend(msg.bytes().filter(|&b| b != 0));
        e.push(0);
    });
}

pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| {
        let mut e = e.borrow_mut();
        // Already empty (the common case: the previous call succeeded too): nothing to write.
        if e.as_slice() != [0] {
            e.clear();
            e.push(0);
        }
    });
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
    ttdrv_status::from_repr(status).map_or(UNKNOWN_STATUS, ttdrv_status::name).as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use strum::IntoEnumIterator;

    #[test]
    fn every_status_has_a_name_and_a_distinct_value() {
        let mut values = HashSet::new();
        let mut names = HashSet::new();
        for s in ttdrv_status::iter() {
            let name = s.name().to_str().unwrap();
            assert!(name.starts_with("TTDRV_STATUS_") && name.len() > "TTDRV_STATUS_".len(), "{s:?}: {name}");
            assert_ne!(s.name(), UNKNOWN_STATUS, "{s:?} has no name of its own");
            assert!(values.insert(s as u32), "{s:?} repeats the value {}", s as u32);
            assert!(names.insert(name), "{s:?} repeats the name {name}");
            assert_eq!(ttdrv_status::from_repr(s as u32), Some(s), "{s:?} does not round-trip through its value");
            // SAFETY: ttdrv_status_name returns a static NUL-terminated string.
            let via_c = unsafe { CStr::from_ptr(ttdrv_status_name(s as u32)) };
            assert_eq!(via_c, s.name());
        }
        assert_eq!(ttdrv_status::Ok as u32, 0, "success is 0 in every release");
        assert_eq!(ttdrv_status::NullParameter.name(), c"TTDRV_STATUS_NULL_PARAMETER");
        assert_eq!(ttdrv_status::OutOfDeviceMemory.name(), c"TTDRV_STATUS_OUT_OF_DEVICE_MEMORY");
    }

    #[test]
    fn unknown_values_have_the_unknown_name() {
        for v in [1, 7000, 7019, 7098, 7100, u32::MAX] {
            assert!(ttdrv_status::from_repr(v).is_none(), "{v} should not be a status");
            // SAFETY: as above.
            assert_eq!(unsafe { CStr::from_ptr(ttdrv_status_name(v)) }, UNKNOWN_STATUS);
        }
    }
}
