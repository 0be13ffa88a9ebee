//! The C ABI: `include/ttdrv.h` is generated from this crate by cbindgen.
//!
//! Conventions (rustls-ffi style): opaque handles created by `_new`/`_open`/`_allocate` and released by
//! `_free`/`_close` (releasing NULL is a no-op); every function returns a [`ttdrv_status`]; the object comes first,
//! inputs before outputs, every buffer is followed by its length; outputs are written only on success; a failed
//! call leaves a per-thread message ([`ttdrv_last_error_message`]); no panic crosses the boundary, and none is
//! printed ([`boundary`]). Handles are checked, not trusted: a stale or forged handle is
//! `TTDRV_STATUS_INVALID_HANDLE`. Read-only queries take `const` handles. Structs that may grow carry their size
//! (`versioned.rs`). The driver's log records reach a C callback ([`logging`]).
//!
//! Driver errors become statuses through their kind only (`ttdrv::Error::kind`), and messages through their text.

#![allow(non_camel_case_types)]

mod argcheck;
pub mod boundary;
pub mod buffer;
pub mod device;
pub mod error;
pub mod event;
pub(crate) mod handles;
pub mod logging;
pub mod model;
pub mod nn;
pub mod ops;
pub mod program;
pub mod registered;
pub mod trace;
pub mod trace_file;
pub mod trace_patch;
pub(crate) mod versioned;

pub(crate) use argcheck::{bytes, c_str, nonnull, out_ptr, slice, write_out};
pub(crate) use boundary::guard;
pub use boundary::ttdrv_debug_panic;
pub(crate) use error::{FfiError, FfiResult};
pub use error::{ttdrv_last_error, ttdrv_last_error_message, ttdrv_status, ttdrv_status_name};

use std::ffi::c_char;

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
