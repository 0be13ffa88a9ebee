//! Patching a captured trace from C: list its external bindings and named scalars, rebind bindings to other
//! buffers (for every later replay, or for one), set scalars, and list what a saved trace file binds before loading
//! it. What is patchable, how a patch reaches the device and the ordering rules are the Rust API's
//! (`ttdrv::device::patch`); this module checks the C arguments, resolves the handles and copies the listings out.
//!
//! The listing structs (`ttdrv_trace_binding`, `ttdrv_trace_scalar`) are outputs that may grow: the caller sets
//! `struct_size` (docs/abi.md, "Versions"). Names are copied into a fixed array (`TTDRV_TRACE_NAME_CAPACITY` bytes,
//! NUL included): every name the driver makes or accepts fits (bindings are `input<k>` / `output<k>`, a declared
//! scalar has at most 64 characters, a built-in operation's is `<op>.<parameter>#<k>`), so a C caller needs no
//! second call to size a buffer.

use super::buffer::{spec_to_c, ttdrv_buffer, ttdrv_tensor_spec};
use super::device::{device_checked, ttdrv_device};
use super::event::ttdrv_event;
use super::handles;
use super::versioned::{self, versioned};
use super::{FfiError, FfiResult, c_str, guard, out_ptr, slice, ttdrv_status, write_out};
use std::ffi::c_char;
use std::sync::Arc;
use ttdrv::device::BufferSpec;
use ttdrv::device::trace_file::{MAX_FILE, SavedBinding, SavedScalar, TraceFile};
use ttdrv::{Buffer, Event, ScalarKind};

/// Bytes of the `name` arrays of `ttdrv_trace_binding` and `ttdrv_trace_scalar`, the terminating NUL included.
pub const TTDRV_TRACE_NAME_CAPACITY: usize = 80;

/// `ttdrv_trace_scalar.kind`: any 32-bit word (a scalar a program declared with `ttdrv_program_launch_with`; its
/// kernel validates the value).
pub const TTDRV_SCALAR_U32: u32 = 0;
/// `ttdrv_trace_scalar.kind`: an IEEE-754 single that must be finite (a built-in operation's factor or scale).
pub const TTDRV_SCALAR_F32: u32 = 1;
/// `ttdrv_trace_scalar.kind`: an IEEE-754 single that must be finite and not negative (an epsilon).
pub const TTDRV_SCALAR_F32_NON_NEGATIVE: u32 = 2;

/// `sizeof(ttdrv_trace_binding)` in release 0.3, which added it (frozen: docs/abi.md, "Versions").
pub const TTDRV_TRACE_BINDING_SIZE_V0_3: u32 = 168;
/// `sizeof(ttdrv_trace_scalar)` in release 0.3, which added it (frozen).
pub const TTDRV_TRACE_SCALAR_SIZE_V0_3: u32 = 96;

/// An external binding of a trace — a buffer it uses and does not own — as `ttdrv_trace_get_binding` and
/// `ttdrv_trace_file_get_binding` list it. Set `struct_size = sizeof(ttdrv_trace_binding)` before the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_trace_binding {
    /// `sizeof(ttdrv_trace_binding)`, set by the caller; the library sets it to the size it wrote.
    pub struct_size: u32,
    /// The trace writes the buffer before reading it (its output) rather than reading it first (its input).
    pub output: bool,
    /// It can be rebound (`ttdrv_trace_rebind`), and `ttdrv_trace_load` takes a buffer anywhere for it: every launch
    /// that used it declared where its address is (the built-in operations do, and `ttdrv_program_launch_with`).
    /// Otherwise the buffer bound must be at `address`.
    pub rebindable: bool,
    /// Runtime-argument words a rebinding rewrites.
    pub words: u32,
    /// Address of the buffer bound now (for a saved file: of the buffer at save).
    pub address: u64,
    /// `input<k>` or `output<k>`, NUL-terminated: the names `ttdrv_trace_find_binding` and the Python package take.
    pub name: [c_char; TTDRV_TRACE_NAME_CAPACITY],
    /// The spec a buffer bound to it must have (the 0.1 struct, `struct_size` set).
    pub spec: ttdrv_tensor_spec,
}

impl Default for ttdrv_trace_binding {
    fn default() -> Self {
        ttdrv_trace_binding {
            struct_size: versioned::today::<ttdrv_trace_binding>(),
            output: false,
            rebindable: false,
            words: 0,
            address: 0,
            name: [0; TTDRV_TRACE_NAME_CAPACITY],
            spec: ttdrv_tensor_spec::default(),
        }
    }
}

versioned!(
    ttdrv_trace_binding,
    "sizeof(ttdrv_trace_binding)",
    [("0.3", TTDRV_TRACE_BINDING_SIZE_V0_3)],
    ttdrv_trace_binding::default()
);

/// A named scalar of a trace, as `ttdrv_trace_get_scalar` and `ttdrv_trace_file_get_scalar` list it. Set
/// `struct_size = sizeof(ttdrv_trace_scalar)` before the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_trace_scalar {
    /// `sizeof(ttdrv_trace_scalar)`, set by the caller; the library sets it to the size it wrote.
    pub struct_size: u32,
    /// `TTDRV_SCALAR_U32`, `TTDRV_SCALAR_F32` or `TTDRV_SCALAR_F32_NON_NEGATIVE`: what values it takes.
    pub kind: u32,
    /// Its value now (for a saved file: at save), as raw bits (a float's bits for the float kinds).
    pub value_bits: u32,
    /// Runtime-argument words an update rewrites.
    pub words: u32,
    /// Its name, NUL-terminated: as the program declared it, or `<op>.<parameter>#<k>` for the k-th such parameter
    /// of a built-in operation in the trace (`scale.factor#0`, `softmax.scale#1`, `layer_norm.eps#0`,
    /// `fill.value#0`, `bmm.scale#0`).
    pub name: [c_char; TTDRV_TRACE_NAME_CAPACITY],
}

impl Default for ttdrv_trace_scalar {
    fn default() -> Self {
        ttdrv_trace_scalar {
            struct_size: versioned::today::<ttdrv_trace_scalar>(),
            kind: TTDRV_SCALAR_U32,
            value_bits: 0,
            words: 0,
            name: [0; TTDRV_TRACE_NAME_CAPACITY],
        }
    }
}

versioned!(
    ttdrv_trace_scalar,
    "sizeof(ttdrv_trace_scalar)",
    [("0.3", TTDRV_TRACE_SCALAR_SIZE_V0_3)],
    ttdrv_trace_scalar::default()
);

/// One binding for `ttdrv_trace_rebind` and `ttdrv_trace_execute_with`: bind `buffer` to the trace's external
/// binding number `binding` (its index in `ttdrv_trace_get_binding`'s order). This element struct is frozen: it
/// will never grow (arrays of it are indexed by the caller's `sizeof`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_trace_rebinding {
    /// The binding's index (`0 .. ttdrv_trace_binding_count`).
    pub binding: usize,
    /// A live buffer of the binding's spec, on the trace's device.
    pub buffer: *const ttdrv_buffer,
}

/// The bindings and scalars of a saved trace file (opaque), opened with `ttdrv_trace_file_open`.
pub struct ttdrv_trace_file {
    _private: [u8; 0],
}

/// What `ttdrv_trace_file_open` keeps of a saved trace: what a loader must bind, and the scalars it may set.
#[derive(Debug)]
pub(crate) struct SavedListing {
    bindings: Vec<SavedBinding>,
    scalars: Vec<SavedScalar>,
}

/// The error of handle element `elem` of an array argument, with the element named (the handle table's messages
/// name the handle, not the argument).
fn element(e: FfiError, elem: &str, remedy: &str) -> FfiError {
    match e {
        FfiError::Null(_) => FfiError::Status(ttdrv_status::NullParameter, format!("`{elem}` is NULL; {remedy}")),
        FfiError::Status(s, m) => FfiError::Status(s, format!("`{elem}`: {m}")),
        e => e,
    }
}

/// The events of an `after, num_after` argument pair.
fn events(after: *const *const ttdrv_event, num_after: usize) -> FfiResult<Vec<Arc<Event>>> {
    let hs = slice(after, num_after, "after")?;
    let r = handles::resolver();
    hs.iter()
        .enumerate()
        .map(|(i, &h)| {
            r.get::<Event, _>(h, "after[i]").map_err(|e| {
                element(e, &format!("after[{i}]"), "pass events recorded after the replays the patch must follow")
            })
        })
        .collect()
}

/// The (binding index, buffer) pairs of a `bindings, num_bindings` argument pair.
fn rebindings(p: *const ttdrv_trace_rebinding, n: usize) -> FfiResult<Vec<(usize, Arc<Buffer>)>> {
    let pairs = slice(p, n, "bindings")?;
    let r = handles::resolver();
    pairs
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let buf = r.get::<Buffer, _>(b.buffer, "bindings[i].buffer").map_err(|e| {
                element(e, &format!("bindings[{i}].buffer"), "pass a live buffer of the binding's spec")
            })?;
            Ok((b.binding, buf))
        })
        .collect()
}

/// `name` as a fixed C array; a name that does not fit is an error (never truncated).
fn name_to_c(name: &str, what: &str) -> FfiResult<[c_char; TTDRV_TRACE_NAME_CAPACITY]> {
    let b = name.as_bytes();
    if b.len() >= TTDRV_TRACE_NAME_CAPACITY || b.contains(&0) {
        return Err(FfiError::invalid(format!(
            "{what} has a name of {} bytes ({name:?}), which does not fit TTDRV_TRACE_NAME_CAPACITY ({}) with its \
             NUL; the trace file was not written by ttdrv_trace_save: save the trace again",
            b.len(),
            TTDRV_TRACE_NAME_CAPACITY
        )));
    }
    let mut out = [0 as c_char; TTDRV_TRACE_NAME_CAPACITY];
    for (o, &c) in out.iter_mut().zip(b) {
        *o = c as c_char;
    }
    Ok(out)
}

fn kind_to_c(k: ScalarKind) -> u32 {
    match k {
        ScalarKind::U32 => TTDRV_SCALAR_U32,
        ScalarKind::F32 => TTDRV_SCALAR_F32,
        ScalarKind::F32NonNegative => TTDRV_SCALAR_F32_NON_NEGATIVE,
    }
}

fn count_u32(n: usize, what: &str) -> FfiResult<u32> {
    u32::try_from(n).map_err(|_| FfiError::invalid(format!("{what} counts {n} words, more than 32 bits can hold")))
}

fn binding_to_c(
    name: &str,
    output: bool,
    rebindable: bool,
    words: usize,
    address: u64,
    spec: &BufferSpec,
) -> FfiResult<ttdrv_trace_binding> {
    Ok(ttdrv_trace_binding {
        struct_size: versioned::today::<ttdrv_trace_binding>(),
        output,
        rebindable,
        words: count_u32(words, &format!("binding {name}"))?,
        address,
        name: name_to_c(name, "a binding")?,
        spec: spec_to_c(spec),
    })
}

fn scalar_to_c(name: &str, kind: ScalarKind, value: u32, words: usize) -> FfiResult<ttdrv_trace_scalar> {
    Ok(ttdrv_trace_scalar {
        struct_size: versioned::today::<ttdrv_trace_scalar>(),
        kind: kind_to_c(kind),
        value_bits: value,
        words: count_u32(words, &format!("scalar {name}"))?,
        name: name_to_c(name, "a scalar")?,
    })
}

/// Element `index` of a listing of `n` things, or an error giving the count.
fn at<T>(v: &[T], index: usize, what: &str, count_fn: &str) -> FfiResult<usize> {
    if index < v.len() {
        Ok(index)
    } else {
        Err(FfiError::invalid(format!(
            "`index` is {index}, but there are {} {what} (0..{}); {count_fn} gives the count",
            v.len(),
            v.len()
        )))
    }
}

/// Writes the number of external bindings of trace `id` — the buffers it uses and does not own — to `*out_count`:
/// `ttdrv_trace_get_binding` lists them with indices `0 .. *out_count`, the indices `ttdrv_trace_rebind` takes, in
/// the order `ttdrv_trace_load` takes buffers for the file `ttdrv_trace_save` writes.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_STATE (unknown or
/// released trace; still being captured; lost in a reset).
///
/// # Safety
/// `out_count` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_binding_count(
    device: *const ttdrv_device,
    id: u32,
    out_count: *mut usize,
) -> ttdrv_status {
    guard("ttdrv_trace_binding_count", || {
        let d = device_checked(device)?;
        let out = out_ptr(out_count, "out_count")?;
        write_out(out, d.trace_bindings(id)?.len());
        Ok(())
    })
}

/// Writes external binding `index` of trace `id` to `*out`: its name (`input<k>`, `output<k>`), whether the trace
/// reads or writes it, the spec a buffer bound to it must have, the address of the buffer bound now, whether it can
/// be rebound and the runtime words a rebinding rewrites. Set `out->struct_size = sizeof(ttdrv_trace_binding)` first.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`index` not
/// below `ttdrv_trace_binding_count`; `struct_size` smaller than any release's struct), INVALID_STATE (unknown or
/// released trace; still being captured; lost in a reset).
///
/// # Safety
/// `out` must point to at least `out->struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_get_binding(
    device: *const ttdrv_device,
    id: u32,
    index: usize,
    out: *mut ttdrv_trace_binding,
) -> ttdrv_status {
    guard("ttdrv_trace_get_binding", || {
        let d = device_checked(device)?;
        versioned::check_output(out, "out")?;
        let v = d.trace_bindings(id)?;
        let b = &v[at(&v, index, "bindings", "ttdrv_trace_binding_count")?];
        let c = binding_to_c(&b.name, b.output, b.rebindable, b.words as usize, b.address, &b.spec)?;
        versioned::write(out, "out", c)
    })
}

/// Writes the index of the external binding of trace `id` named `name` (`input0`, `output1`, ...) to `*out_index`.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`name` not
/// UTF-8, or no binding has that name — the message lists the names), INVALID_STATE (unknown or released trace;
/// still being captured; lost in a reset).
///
/// # Safety
/// `name` must be a NUL-terminated string; `out_index` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_find_binding(
    device: *const ttdrv_device,
    id: u32,
    name: *const c_char,
    out_index: *mut usize,
) -> ttdrv_status {
    guard("ttdrv_trace_find_binding", || {
        let d = device_checked(device)?;
        let name = c_str(name, "name")?;
        let out = out_ptr(out_index, "out_index")?;
        let v = d.trace_bindings(id)?;
        let names: Vec<&str> = v.iter().map(|b| b.name.as_str()).collect();
        write_out(out, find(&names, name, &format!("trace {id}"), "binding")?);
        Ok(())
    })
}

/// The index of `name` in `names`, or an error listing them.
fn find(names: &[&str], name: &str, owner: &str, what: &str) -> FfiResult<usize> {
    names.iter().position(|&n| n == name).ok_or_else(|| {
        FfiError::invalid(format!(
            "{owner} has no {what} named {name:?}; its {what}s are [{}]: pass one of those names",
            names.join(", ")
        ))
    })
}

/// Writes the number of named scalars of trace `id` to `*out_count`: `ttdrv_trace_get_scalar` lists them with
/// indices `0 .. *out_count`.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_STATE (unknown or
/// released trace; still being captured; lost in a reset).
///
/// # Safety
/// `out_count` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_scalar_count(
    device: *const ttdrv_device,
    id: u32,
    out_count: *mut usize,
) -> ttdrv_status {
    guard("ttdrv_trace_scalar_count", || {
        let d = device_checked(device)?;
        let out = out_ptr(out_count, "out_count")?;
        write_out(out, d.trace_scalars(id)?.len());
        Ok(())
    })
}

/// Writes named scalar `index` of trace `id` to `*out`: its name, kind, value now and the runtime words an update
/// rewrites. Set `out->struct_size = sizeof(ttdrv_trace_scalar)` first.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`index` not
/// below `ttdrv_trace_scalar_count`; `struct_size` smaller than any release's struct), INVALID_STATE (unknown or
/// released trace; still being captured; lost in a reset).
///
/// # Safety
/// `out` must point to at least `out->struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_get_scalar(
    device: *const ttdrv_device,
    id: u32,
    index: usize,
    out: *mut ttdrv_trace_scalar,
) -> ttdrv_status {
    guard("ttdrv_trace_get_scalar", || {
        let d = device_checked(device)?;
        versioned::check_output(out, "out")?;
        let v = d.trace_scalars(id)?;
        let s = &v[at(&v, index, "scalars", "ttdrv_trace_scalar_count")?];
        versioned::write(out, "out", scalar_to_c(&s.name, s.kind, s.value, s.words as usize)?)
    })
}

/// Rebinds external bindings of trace `id` for every later replay: `bindings` holds `num_bindings` pairs (binding
/// index, buffer), each buffer live, on the trace's device and of the binding's spec (`ttdrv_trace_get_binding`),
/// and each binding rebindable. The trace's runtime words holding the old addresses are rewritten by device-side
/// writes enqueued on queue `cq` — only those words, so the cost is O(words rewritten), never O(trace): a replay
/// enqueued on `cq` before runs with the old buffers, the next one with the new. From then on, the buffers bound
/// must hold their ranges at every replay, as the captured ones had to (`ttdrv_trace_execute`).
///
/// A replay of the trace that may still run on another queue would race the writes: pass in `after` an event
/// recorded on that queue after it (`ttdrv_event_record`), and `cq` waits for it on the device; a replay known
/// complete needs none. Without one the call fails with INVALID_STATE naming the queue, and nothing changes.
/// Nothing changes either when any pair fails a check.
///
/// This replaces the "deallocate, re-allocate at the same address and assert" step of tt-metal's guide "Advanced
/// Performance Optimizations for Models" (§1.3.2): allocate the new input anywhere and rebind the trace to it.
///
/// Thread: any. Errors: NULL_PARAMETER (`bindings` or `after` with a non-zero count, a NULL `.buffer` or event),
/// INVALID_HANDLE (`device`, a buffer or an event freed or never returned by ttdrv), CLOSED, FORKED,
/// INVALID_ARGUMENT (no such queue; a binding index out of range or given twice; a buffer of another spec or another
/// device; an event of another device; a buffer whose address words would pass 32 bits), INVALID_STATE (unknown or
/// released trace; still being captured; lost in a reset; a capture in progress on `cq`; a binding that is not
/// rebindable — a launch that used it did not declare its address words; a replay still running on another queue and
/// no event in `after` recorded there after it), TIMEOUT (no ring space), DEVICE_FAULT.
///
/// # Safety
/// `bindings` must be readable for `num_bindings` elements and `after` for `num_after` handles (each may be NULL
/// with a count of 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_rebind(
    device: *mut ttdrv_device,
    id: u32,
    cq: u16,
    bindings: *const ttdrv_trace_rebinding,
    num_bindings: usize,
    after: *const *const ttdrv_event,
    num_after: usize,
) -> ttdrv_status {
    guard("ttdrv_trace_rebind", || {
        let d = device_checked(device)?;
        let pairs = rebindings(bindings, num_bindings)?;
        let evs = events(after, num_after)?;
        let pairs: Vec<(usize, &Buffer)> = pairs.iter().map(|(i, b)| (*i, &**b)).collect();
        let evs: Vec<&Event> = evs.iter().map(|e| &**e).collect();
        Ok(d.trace_rebind(id, cq, &pairs, &evs)?)
    })
}

/// Sets the named scalar `name` of trace `id` to the 32-bit word `value_bits` for every later replay, ordered as
/// `ttdrv_trace_rebind` is (device-side writes of its words on `cq`; `after` orders them after replays on other
/// queues). For a float scalar (`TTDRV_SCALAR_F32`, `TTDRV_SCALAR_F32_NON_NEGATIVE`) pass the float's bits — or use
/// `ttdrv_trace_set_scalar_f32` — which must be finite (and not negative for the second kind).
///
/// Thread: any. Errors: NULL_PARAMETER (`name`; `after` with a non-zero count, or a NULL event), INVALID_HANDLE
/// (`device`, an event), CLOSED, FORKED, INVALID_ARGUMENT (no such queue; `name` not UTF-8 or not a scalar of the
/// trace — the message lists them; a value its kind refuses: NaN, an infinity, a negative epsilon; an event of
/// another device), INVALID_STATE (unknown or released trace; still being captured; lost in a reset; a capture in
/// progress on `cq`; a replay still running on another queue and no event in `after` recorded there after it),
/// TIMEOUT (no ring space), DEVICE_FAULT.
///
/// # Safety
/// `name` must be a NUL-terminated string; `after` readable for `num_after` handles (or NULL with 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_set_scalar(
    device: *mut ttdrv_device,
    id: u32,
    cq: u16,
    name: *const c_char,
    value_bits: u32,
    after: *const *const ttdrv_event,
    num_after: usize,
) -> ttdrv_status {
    guard("ttdrv_trace_set_scalar", || {
        let d = device_checked(device)?;
        let name = c_str(name, "name")?;
        let evs = events(after, num_after)?;
        let evs: Vec<&Event> = evs.iter().map(|e| &**e).collect();
        Ok(d.trace_set_scalar(id, cq, name, value_bits, &evs)?)
    })
}

/// As `ttdrv_trace_set_scalar` with a float: the scalar must be a float one (`TTDRV_SCALAR_F32` or
/// `TTDRV_SCALAR_F32_NON_NEGATIVE`), so that a float is never written into a word a kernel reads as an integer.
///
/// Thread: any. Errors: as `ttdrv_trace_set_scalar`; INVALID_ARGUMENT also for a `TTDRV_SCALAR_U32` scalar.
///
/// # Safety
/// As `ttdrv_trace_set_scalar`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_set_scalar_f32(
    device: *mut ttdrv_device,
    id: u32,
    cq: u16,
    name: *const c_char,
    value: f32,
    after: *const *const ttdrv_event,
    num_after: usize,
) -> ttdrv_status {
    guard("ttdrv_trace_set_scalar_f32", || {
        let d = device_checked(device)?;
        let name = c_str(name, "name")?;
        let evs = events(after, num_after)?;
        let evs: Vec<&Event> = evs.iter().map(|e| &**e).collect();
        // A name the trace lacks falls through to the driver's message, which lists the names.
        if let Some(s) = d.trace_scalars(id)?.iter().find(|s| s.name == name)
            && s.kind == ScalarKind::U32
        {
            return Err(FfiError::invalid(format!(
                "scalar {name} of trace {id} holds a 32-bit integer, not a float; set it with ttdrv_trace_set_scalar"
            )));
        }
        Ok(d.trace_set_scalar(id, cq, name, value.to_bits(), &evs)?)
    })
}

/// As `ttdrv_trace_execute`, with `bindings` — `num_bindings` pairs (binding index, buffer), checked as
/// `ttdrv_trace_rebind` checks them — bound for this replay only: the rebinding, the replay and the return to the
/// bindings of before are enqueued on `cq` in that order, so the replay costs O(words rewritten) more and no other
/// replay sees these buffers. `after` orders the rebinding after replays on other queues, as for
/// `ttdrv_trace_rebind`. With `blocking`, waits for the replay to finish. A refused replay leaves the bindings as
/// they were.
///
/// Thread: any. Errors: as `ttdrv_trace_execute` and `ttdrv_trace_rebind`.
///
/// # Safety
/// As `ttdrv_trace_rebind`.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ttdrv_trace_execute_with(
    device: *mut ttdrv_device,
    id: u32,
    cq: u16,
    blocking: bool,
    bindings: *const ttdrv_trace_rebinding,
    num_bindings: usize,
    after: *const *const ttdrv_event,
    num_after: usize,
) -> ttdrv_status {
    guard("ttdrv_trace_execute_with", || {
        let d = device_checked(device)?;
        let pairs = rebindings(bindings, num_bindings)?;
        let evs = events(after, num_after)?;
        let pairs: Vec<(usize, &Buffer)> = pairs.iter().map(|(i, b)| (*i, &**b)).collect();
        let evs: Vec<&Event> = evs.iter().map(|e| &**e).collect();
        Ok(d.execute_trace_with(id, cq, blocking, &pairs, &evs)?)
    })
}

/// Opens the trace file `path` written by `ttdrv_trace_save` and checks its structure (format, checksum, every
/// field), without a device, so that a loader learns what to bind before `ttdrv_trace_load`: its bindings
/// (`ttdrv_trace_file_binding_count`, `ttdrv_trace_file_get_binding`: name, role, spec, saved address, whether a
/// buffer anywhere may be bound) and its scalars. Whether the trace fits a device is checked by `ttdrv_trace_load`.
///
/// Ownership: on success `*out` receives a new handle holding the listing (not the file, which may then change);
/// release it with `ttdrv_trace_file_free`. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_ARGUMENT (`path` empty or not UTF-8; the file cannot be read — the message gives
/// the system's reason — or is not a valid trace file, naming what is wrong).
///
/// # Safety
/// `path` must be a NUL-terminated string; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_file_open(path: *const c_char, out: *mut *mut ttdrv_trace_file) -> ttdrv_status {
    guard("ttdrv_trace_file_open", || {
        let p = c_str(path, "path")?;
        if p.is_empty() {
            return Err(FfiError::invalid("`path` is empty; pass the path of the trace file"));
        }
        let out = out_ptr(out, "out")?;
        let cannot = |e: std::io::Error| FfiError::invalid(format!("cannot read the file {p}: {e}"));
        let len = std::fs::metadata(p).map_err(cannot)?.len();
        if len > MAX_FILE {
            return Err(FfiError::invalid(format!(
                "{p} is {len} bytes, more than any saved trace ({MAX_FILE}); pass a file ttdrv_trace_save wrote"
            )));
        }
        let bytes = std::fs::read(p).map_err(cannot)?;
        let f = TraceFile::decode(&bytes)
            .map_err(|e| FfiError::invalid(format!("{p} is not a valid trace file: {e}; save the trace again")))?;
        write_out(out, handles::register::<SavedListing, _>(SavedListing { bindings: f.bindings, scalars: f.scalars }));
        Ok(())
    })
}

/// Frees a trace file listing. NULL is a no-op.
///
/// Ownership: the handle is released; using it again is INVALID_HANDLE. Thread: any. Errors: INVALID_HANDLE.
///
/// # Safety
/// `file` must be NULL or a value returned by ttdrv.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_file_free(file: *mut ttdrv_trace_file) -> ttdrv_status {
    guard("ttdrv_trace_file_free", || {
        handles::release::<SavedListing, _>(file)?;
        Ok(())
    })
}

fn listing(file: *const ttdrv_trace_file) -> FfiResult<Arc<SavedListing>> {
    handles::lookup(file, "file")
}

/// Writes the number of external bindings of the saved trace to `*out_count`: `ttdrv_trace_load` takes that many
/// buffers, in the order `ttdrv_trace_file_get_binding` lists them.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`file`).
///
/// # Safety
/// `out_count` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_file_binding_count(
    file: *const ttdrv_trace_file,
    out_count: *mut usize,
) -> ttdrv_status {
    guard("ttdrv_trace_file_binding_count", || {
        let f = listing(file)?;
        write_out(out_ptr(out_count, "out_count")?, f.bindings.len());
        Ok(())
    })
}

/// Writes binding `index` of the saved trace to `*out` (`ttdrv_trace_get_binding`'s fields; `address` is the
/// buffer's at save): `ttdrv_trace_load` takes, at position `index`, a live buffer of `spec` — anywhere when
/// `rebindable`, else at `address`. Set `out->struct_size = sizeof(ttdrv_trace_binding)` first.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`file`), INVALID_ARGUMENT (`index` not below
/// `ttdrv_trace_file_binding_count`; `struct_size` smaller than any release's struct).
///
/// # Safety
/// `out` must point to at least `out->struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_file_get_binding(
    file: *const ttdrv_trace_file,
    index: usize,
    out: *mut ttdrv_trace_binding,
) -> ttdrv_status {
    guard("ttdrv_trace_file_get_binding", || {
        let f = listing(file)?;
        versioned::check_output(out, "out")?;
        let b = &f.bindings[at(&f.bindings, index, "bindings", "ttdrv_trace_file_binding_count")?];
        versioned::write(out, "out", binding_to_c(&b.name, b.output, b.rebindable, b.points.len(), b.address, &b.spec)?)
    })
}

/// Writes the number of named scalars of the saved trace to `*out_count`.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`file`).
///
/// # Safety
/// `out_count` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_file_scalar_count(
    file: *const ttdrv_trace_file,
    out_count: *mut usize,
) -> ttdrv_status {
    guard("ttdrv_trace_file_scalar_count", || {
        let f = listing(file)?;
        write_out(out_ptr(out_count, "out_count")?, f.scalars.len());
        Ok(())
    })
}

/// Writes named scalar `index` of the saved trace to `*out` (`value_bits` is its value at save). Set
/// `out->struct_size = sizeof(ttdrv_trace_scalar)` first.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`file`), INVALID_ARGUMENT (`index` not below
/// `ttdrv_trace_file_scalar_count`; `struct_size` smaller than any release's struct).
///
/// # Safety
/// `out` must point to at least `out->struct_size` writable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_trace_file_get_scalar(
    file: *const ttdrv_trace_file,
    index: usize,
    out: *mut ttdrv_trace_scalar,
) -> ttdrv_status {
    guard("ttdrv_trace_file_get_scalar", || {
        let f = listing(file)?;
        versioned::check_output(out, "out")?;
        let s = &f.scalars[at(&f.scalars, index, "scalars", "ttdrv_trace_file_scalar_count")?];
        versioned::write(out, "out", scalar_to_c(&s.name, s.kind, s.value, s.offsets.len())?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_or_are_refused_never_truncated() {
        let long = "x".repeat(TTDRV_TRACE_NAME_CAPACITY);
        assert!(name_to_c(&long[..TTDRV_TRACE_NAME_CAPACITY - 1], "a scalar").is_ok(), "79 bytes and the NUL fit");
        let e = name_to_c(&long, "a scalar").err().map(|e| e.report("t").1);
        assert!(e.is_some_and(|m| m.contains("TTDRV_TRACE_NAME_CAPACITY")));
        let c = name_to_c("scale.factor#0", "a scalar").ok();
        assert_eq!(c.map(|c| c[..15].iter().map(|&b| b as u8).collect::<Vec<_>>()), Some(b"scale.factor#0\0".to_vec()));
    }

    #[test]
    fn every_name_the_driver_makes_fits() {
        // The longest built-in parameter name with the largest index, and a declared scalar of 64 characters.
        assert!(name_to_c(&format!("layer_norm.eps#{}", u32::MAX), "a scalar").is_ok());
        assert!(name_to_c(&"s".repeat(64), "a scalar").is_ok());
        assert!(name_to_c(&format!("output{}", u64::MAX), "a binding").is_ok());
    }
}
