//! Structs that carry their size (`struct_size` first, VFIO's `argsz` pattern): one check and one copy for all of
//! them, in both directions.
//!
//! Each struct lists the size every release gave it ([`Versioned::SIZES`], frozen constants such as
//! `TTDRV_DEVICE_PARAMS_SIZE_V0_1` that are never recomputed from today's declaration), so a program built against an
//! older header keeps working after a field is added:
//! - **inputs** (`ttdrv_device_params`, `ttdrv_tensor_spec`, `ttdrv_program_desc`, `ttdrv_mlp_desc`): `struct_size`
//!   must be one of the listed sizes; that many bytes are read and every later field takes its `_init` default. A
//!   size below the first release's is an uninitialised struct, and one above today's comes from a newer header whose
//!   fields this library would silently ignore: both are refused, with what to do.
//! - **outputs** (`ttdrv_device_info`, `ttdrv_trace_info`): the largest listed size not above the caller's is written
//!   and stored in `struct_size`, so an older caller gets exactly its fields and a newer one learns which it got.
//!
//! Adding a field: append it at the end, at an offset no smaller than the last listed size (the compile-time check in
//! [`versioned!`] refuses a struct whose size is not the last listed one), add a `..._SIZE_V<release>` constant, and
//! give the field a default in `_init` that keeps the old behaviour.

use super::error::{FfiError, FfiResult};
use std::mem::size_of;

/// A `#[repr(C)]` struct C passes with its size in a leading `u32 struct_size`.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with `struct_size: u32`, contain no references, and each listed size is a
/// prefix of the struct made of whole fields (later fields start at or after it), so copying that many bytes over
/// [`Versioned::defaults`] gives a valid value.
pub(crate) unsafe trait Versioned: Copy {
    /// The C type's name.
    const C_NAME: &'static str;
    /// What the caller should do to get a valid size (`ttdrv_device_params_init()`, `sizeof(ttdrv_device_info)`).
    const REMEDY: &'static str;
    /// `(release, size)` for every release that changed the struct, oldest first; the last is today's size.
    const SIZES: &'static [(&'static str, u32)];
    /// Today's struct with every field at its `_init` default.
    fn defaults() -> Self;
}

/// Implements [`Versioned`] and checks at compile time that the last listed size is today's.
macro_rules! versioned {
    ($t:ty, $remedy:literal, [$(($release:literal, $size:expr)),+ $(,)?], $defaults:expr) => {
        // SAFETY: the struct is #[repr(C)] with `struct_size: u32` first and plain-data fields; sizes are prefixes
        // (see the module doc), and the assertion below ties the last one to the declaration.
        unsafe impl $crate::versioned::Versioned for $t {
            const C_NAME: &'static str = stringify!($t);
            const REMEDY: &'static str = $remedy;
            const SIZES: &'static [(&'static str, u32)] = &[$(($release, $size)),+];
            fn defaults() -> Self {
                $defaults
            }
        }
        const _: () = {
            let sizes = <$t as $crate::versioned::Versioned>::SIZES;
            assert!(
                sizes[sizes.len() - 1].1 as usize == std::mem::size_of::<$t>(),
                concat!(
                    stringify!($t),
                    " changed size: add a frozen ..._SIZE_V<release> constant for it (docs/abi.md, \"Versions\")"
                )
            );
        };
    };
}
pub(crate) use versioned;

fn listed<T: Versioned>() -> String {
    T::SIZES.iter().map(|(r, s)| format!("{s} bytes in {r}")).collect::<Vec<_>>().join(", ")
}

/// The caller's `struct_size` of the struct at `p` (non-NULL).
fn caller_size<T: Versioned>(p: *const T) -> u32 {
    // SAFETY: `p` is non-NULL and, per the C contract, points to a struct whose first field is `struct_size`;
    // the read is unaligned because C may pass any address.
    unsafe { (p as *const u32).read_unaligned() }
}

/// Checks an input struct's `struct_size` and returns it.
fn input_size<T: Versioned>(size: u32, arg: &str) -> FfiResult<usize> {
    let (first_release, first) = T::SIZES[0];
    let (_, today) = T::SIZES[T::SIZES.len() - 1];
    if size < first {
        return Err(FfiError::invalid(format!(
            "`{arg}->struct_size` is {size}, smaller than {} has ever been ({first} bytes in {first_release}): the \
             struct is not initialised; call {} before setting its fields",
            T::C_NAME,
            T::REMEDY
        )));
    }
    if size > today {
        return Err(FfiError::invalid(format!(
            "`{arg}->struct_size` is {size}, larger than this library's {} ({today} bytes, ttdrv {}): the program \
             was built against a newer ttdrv.h than the libttdrv it runs with, and this library would ignore the \
             newer fields; run it with that release's libttdrv or a later one (compare TTDRV_VERSION_STRING with \
             ttdrv_version())",
            T::C_NAME,
            env!("CARGO_PKG_VERSION")
        )));
    }
    if !T::SIZES.iter().any(|&(_, s)| s == size) {
        return Err(FfiError::invalid(format!(
            "`{arg}->struct_size` is {size}, which no release's {} had ({}): the struct is corrupt or not \
             initialised; call {} before setting its fields",
            T::C_NAME,
            listed::<T>(),
            T::REMEDY
        )));
    }
    Ok(size as usize)
}

/// Reads input struct argument `arg`: `struct_size` bytes from the caller, every later field at its default.
pub(crate) fn read<T: Versioned>(p: *const T, arg: &'static str) -> FfiResult<T> {
    super::argcheck::nonnull(p, arg)?;
    let n = input_size::<T>(caller_size(p), arg)?;
    let mut v = T::defaults();
    // SAFETY: the caller's struct holds `struct_size` = n readable bytes (C contract), n <= size_of::<T>() (checked:
    // no listed size exceeds today's), and the first n bytes of T are whole fields of plain data (Versioned's
    // contract), so the result is a valid T. Byte copies need no alignment.
    unsafe { std::ptr::copy_nonoverlapping(p as *const u8, (&raw mut v) as *mut u8, n) };
    Ok(v)
}

/// The number of bytes to write into output struct argument `arg`, whose caller set `struct_size` to `size`.
fn output_size<T: Versioned>(size: u32, arg: &str) -> FfiResult<u32> {
    T::SIZES.iter().rev().map(|&(_, s)| s).find(|&s| s <= size).ok_or_else(|| {
        FfiError::invalid(format!(
            "`{arg}->struct_size` is {size}, smaller than {} has ever been ({}); set it to {} before the call",
            T::C_NAME,
            listed::<T>(),
            T::REMEDY
        ))
    })
}

/// Checks output struct argument `arg` before the call does anything: non-NULL, with a `struct_size` some release's
/// struct fits in.
pub(crate) fn check_output<T: Versioned>(p: *mut T, arg: &'static str) -> FfiResult {
    let p = super::argcheck::out_ptr(p, arg)?;
    output_size::<T>(caller_size(p), arg).map(drop)
}

/// Writes `v` into output struct argument `arg`: as many bytes as the largest release's struct that fits the caller's
/// `struct_size`, which is then set to that size. Fields beyond it stay the caller's.
pub(crate) fn write<T: Versioned>(p: *mut T, arg: &'static str, v: T) -> FfiResult {
    let p = super::argcheck::out_ptr(p, arg)?;
    let n = output_size::<T>(caller_size(p), arg)?;
    // SAFETY: the caller's struct holds at least `struct_size` >= n writable bytes (C contract), n <= size_of::<T>()
    // (a listed size), and the copy is byte-wise, so it needs no alignment.
    unsafe {
        std::ptr::copy_nonoverlapping((&raw const v) as *const u8, p as *mut u8, n as usize);
        (p as *mut u32).write_unaligned(n);
    }
    Ok(())
}

/// Today's size of `T`, for `_init` functions.
pub(crate) fn today<T: Versioned>() -> u32 {
    size_of::<T>() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{TTDRV_DEVICE_PARAMS_SIZE_V0_1, ttdrv_device_info, ttdrv_device_params};
    use crate::error::ttdrv_status;

    /// What `ttdrv_device_params` would be after a release adds a field: the 0.1 fields, then a new one.
    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    struct ParamsNext {
        old: ttdrv_device_params,
        added: u64,
    }
    const NEXT_SIZE: u32 = size_of::<ParamsNext>() as u32;
    const ADDED_DEFAULT: u64 = 0x0dd_ba11;
    versioned!(
        ParamsNext,
        "ttdrv_device_params_init()",
        [("0.1", TTDRV_DEVICE_PARAMS_SIZE_V0_1), ("next", NEXT_SIZE)],
        ParamsNext { old: <ttdrv_device_params as Versioned>::defaults(), added: ADDED_DEFAULT }
    );

    fn message(e: FfiError) -> (ttdrv_status, String) {
        e.report("test")
    }

    /// An old caller's struct in memory it owns exactly, followed by bytes a read past its end would pick up.
    fn old_caller_bytes(timeout_ms: u32) -> Vec<u8> {
        let mut old = <ttdrv_device_params as Versioned>::defaults();
        old.struct_size = TTDRV_DEVICE_PARAMS_SIZE_V0_1;
        old.timeout_ms = timeout_ms;
        let mut v = vec![0xAB; NEXT_SIZE as usize + 16];
        // SAFETY: `old` is plain data of TTDRV_DEVICE_PARAMS_SIZE_V0_1 bytes; `v` is larger.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&raw const old) as *const u8,
                v.as_mut_ptr(),
                TTDRV_DEVICE_PARAMS_SIZE_V0_1 as usize,
            )
        };
        v
    }

    #[test]
    fn an_old_size_input_is_accepted_after_a_field_is_added_and_the_new_field_takes_its_default() {
        let bytes = old_caller_bytes(1234);
        let got = read::<ParamsNext>(bytes.as_ptr() as *const ParamsNext, "params").unwrap_or_else(|e| {
            panic!("{:?}", message(e));
        });
        assert_eq!(got.old.timeout_ms, 1234, "the caller's field");
        assert_eq!(got.added, ADDED_DEFAULT, "the field the caller's release did not have must take its default");
        // Today's size is accepted too.
        let mut next = ParamsNext::defaults();
        next.old.struct_size = NEXT_SIZE;
        next.added = 5;
        assert_eq!(read::<ParamsNext>(&next, "params").ok().map(|p| p.added), Some(5));
    }

    #[test]
    fn sizes_outside_the_releases_are_refused_with_what_to_do() {
        let mut bytes = old_caller_bytes(1);
        for (size, needles) in [
            (0, &["smaller", "ttdrv_device_params_init()"][..]),
            (TTDRV_DEVICE_PARAMS_SIZE_V0_1 - 1, &["smaller", "ttdrv_device_params_init()"]),
            (TTDRV_DEVICE_PARAMS_SIZE_V0_1 + 4, &["no release", "ttdrv_device_params_init()"]),
            (NEXT_SIZE + 8, &["newer ttdrv.h", "run it with"]),
            (u32::MAX, &["newer ttdrv.h", "ttdrv_version()"]),
        ] {
            bytes[..4].copy_from_slice(&size.to_ne_bytes());
            let e = read::<ParamsNext>(bytes.as_ptr() as *const ParamsNext, "params").err();
            let (status, msg) = message(e.unwrap_or_else(|| panic!("struct_size {size} was accepted")));
            assert_eq!(status, ttdrv_status::InvalidArgument, "{msg}");
            assert!(msg.contains("params->struct_size"), "{msg}");
            for n in needles {
                assert!(msg.contains(n), "size {size}: {msg:?} does not say {n:?}");
            }
        }
    }

    #[test]
    fn an_old_size_output_gets_exactly_its_fields() {
        let mut bytes = vec![0xA5u8; NEXT_SIZE as usize + 8];
        bytes[..4].copy_from_slice(&TTDRV_DEVICE_PARAMS_SIZE_V0_1.to_ne_bytes());
        let mut v = ParamsNext::defaults();
        v.old.timeout_ms = 77;
        v.added = 99;
        assert!(write::<ParamsNext>(bytes.as_mut_ptr() as *mut ParamsNext, "out", v).is_ok());
        let n = TTDRV_DEVICE_PARAMS_SIZE_V0_1 as usize;
        assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), TTDRV_DEVICE_PARAMS_SIZE_V0_1);
        assert!(bytes[n..].iter().all(|&b| b == 0xA5), "bytes past the caller's struct were written");
        // A newer caller (larger struct) gets today's fields and learns today's size.
        let mut big = vec![0xA5u8; NEXT_SIZE as usize + 8];
        big[..4].copy_from_slice(&(NEXT_SIZE + 8).to_ne_bytes());
        assert!(write::<ParamsNext>(big.as_mut_ptr() as *mut ParamsNext, "out", v).is_ok());
        assert_eq!(u32::from_ne_bytes(big[..4].try_into().unwrap()), NEXT_SIZE);
        assert!(big[NEXT_SIZE as usize..].iter().all(|&b| b == 0xA5));
        // Smaller than the first release: refused, nothing written.
        let mut small = vec![0u8; 64];
        small[..4].copy_from_slice(&3u32.to_ne_bytes());
        let e = write::<ParamsNext>(small.as_mut_ptr() as *mut ParamsNext, "out", v).err().map(message);
        assert!(e.is_some_and(|(_, m)| m.contains("smaller") && m.contains("ttdrv_device_params_init()")));
        assert!(small[4..].iter().all(|&b| b == 0));
    }

    #[test]
    fn todays_sizes_are_the_last_release_sizes() {
        fn check<T: Versioned>() {
            assert_eq!(T::SIZES.last().map(|s| s.1), Some(today::<T>()), "{}", T::C_NAME);
            assert!(T::SIZES.windows(2).all(|w| w[0].1 < w[1].1), "{}: sizes must grow", T::C_NAME);
        }
        check::<ttdrv_device_params>();
        check::<ttdrv_device_info>();
        check::<crate::buffer::ttdrv_tensor_spec>();
        check::<crate::program::ttdrv_program_desc>();
        check::<crate::model::ttdrv_mlp_desc>();
        check::<crate::trace::ttdrv_trace_info>();
        check::<crate::trace_patch::ttdrv_trace_binding>();
        check::<crate::trace_patch::ttdrv_trace_scalar>();
    }

    /// `ttdrv_trace_info` grew in 0.2 and in 0.3: a caller of each release gets exactly its release's fields, and
    /// the frozen sizes are the offsets where each release's fields begin.
    #[test]
    fn trace_info_callers_of_every_release_get_their_fields() {
        use crate::trace::*;
        use std::mem::offset_of;
        assert_eq!(offset_of!(ttdrv_trace_info, event_records), TTDRV_TRACE_INFO_SIZE_V0_1 as usize);
        assert_eq!(offset_of!(ttdrv_trace_info, rebindable), TTDRV_TRACE_INFO_SIZE_V0_2 as usize);
        assert_eq!(size_of::<ttdrv_trace_info>(), TTDRV_TRACE_INFO_SIZE_V0_3 as usize);
        let full = ttdrv_trace_info {
            struct_size: TTDRV_TRACE_INFO_SIZE_V0_3,
            bindings: 7,
            owned_bytes: 9,
            rebindable: 3,
            scalars: 2,
            patchable_words: 11,
            ..Default::default()
        };
        for size in [TTDRV_TRACE_INFO_SIZE_V0_1, TTDRV_TRACE_INFO_SIZE_V0_2, TTDRV_TRACE_INFO_SIZE_V0_3] {
            let mut bytes = vec![0xA5u8; TTDRV_TRACE_INFO_SIZE_V0_3 as usize + 8];
            bytes[..4].copy_from_slice(&size.to_ne_bytes());
            assert!(write::<ttdrv_trace_info>(bytes.as_mut_ptr() as *mut ttdrv_trace_info, "out", full).is_ok());
            assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), size, "struct_size written back");
            assert!(bytes[size as usize..].iter().all(|&b| b == 0xA5), "{size}: bytes past the caller's struct");
            assert!(bytes[4..size as usize].iter().any(|&b| b != 0xA5), "{size}: the caller's fields were written");
        }
    }
}
