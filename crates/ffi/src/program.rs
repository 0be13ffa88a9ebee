//! Programs: describe a kernel launch once, run it many times with new runtime arguments.

use super::buffer::{buffer_arc, ttdrv_buffer};
use super::device::{device, device_checked, ttdrv_device};
use super::handles;
use super::handles::{Handles, INLINE_HANDLES};
use super::versioned::{self, Versioned, versioned};
use super::{FfiError, FfiResult, c_str, guard, out_ptr, slice, ttdrv_status, write_out};
use smallvec::SmallVec;
use std::ffi::c_char;
use std::sync::Arc;
use ttdrv::ArgRole;
use ttdrv::Buffer;
use ttdrv::contract::kernel::{ACCESSOR_WORDS, BuiltinKernel};
use ttdrv::contract::records::{CbConfig, CoreRect};
use ttdrv::device::program::{ArgStep, KernelSource, Program, ProgramDesc, RtArgs};

/// A program (opaque): a kernel, its cores and configuration, bound to the device's program cache.
pub struct ttdrv_program {
    _private: [u8; 0],
}

/// An inclusive rectangle of worker cores.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ttdrv_core_rect {
    /// Left column.
    pub x0: u32,
    /// Top row.
    pub y0: u32,
    /// Right column (inclusive).
    pub x1: u32,
    /// Bottom row (inclusive).
    pub y1: u32,
}

/// A circular-buffer configuration of a program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ttdrv_cb_config {
    /// CB index the kernel uses.
    pub index: u32,
    /// Bytes per page.
    pub page_size: u32,
    /// Pages.
    pub num_pages: u32,
    /// Data format (a `TTDRV_DTYPE_*` value).
    pub data_format: u32,
}

/// `sizeof(ttdrv_program_desc)` in release 0.1 (frozen: docs/abi.md, "Versions").
pub const TTDRV_PROGRAM_DESC_SIZE_V0_1: u32 = 96;

/// Describes a program. Fill with `ttdrv_program_desc_init`. Everything here is the program-cache key; buffer
/// addresses are runtime arguments and are not.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_program_desc {
    /// `sizeof(ttdrv_program_desc)` of the caller's header, set by `ttdrv_program_desc_init`.
    pub struct_size: u32,
    /// Runtime argument words each core receives.
    pub rt_words_per_core: u32,
    /// Kernel name: a built-in (`"ttdrv.copy"`, `"ttdrv.eltwise_binary"`, `"ttdrv.eltwise_unary"`,
    /// `"ttdrv.matmul"`, `"ttdrv.fill"`) or the name stored in a custom image. Names starting with `ttdrv.` are
    /// reserved for built-ins.
    pub kernel_name: *const c_char,
    /// Code of a custom kernel image (NULL with `code_len == 0` for a built-in).
    pub code: *const u8,
    /// Bytes of `code`.
    pub code_len: usize,
    /// Cores that run the kernel.
    pub cores: ttdrv_core_rect,
    /// Compile-time arguments.
    pub ct_args: *const u32,
    /// Number of compile-time arguments.
    pub num_ct_args: usize,
    /// Circular buffers.
    pub cbs: *const ttdrv_cb_config,
    /// Number of circular buffers.
    pub num_cbs: usize,
    /// Initial semaphore values.
    pub sems: *const u32,
    /// Number of semaphores.
    pub num_sems: usize,
}

versioned!(
    ttdrv_program_desc,
    "ttdrv_program_desc_init()",
    [("0.1", TTDRV_PROGRAM_DESC_SIZE_V0_1)],
    ttdrv_program_desc {
        struct_size: versioned::today::<ttdrv_program_desc>(),
        rt_words_per_core: 0,
        kernel_name: std::ptr::null(),
        code: std::ptr::null(),
        code_len: 0,
        cores: ttdrv_core_rect { x0: 0, y0: 0, x1: 0, y1: 0 },
        ct_args: std::ptr::null(),
        num_ct_args: 0,
        cbs: std::ptr::null(),
        num_cbs: 0,
        sems: std::ptr::null(),
        num_sems: 0,
    }
);

/// Program cache statistics (`ttdrv_device_program_cache_stats`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ttdrv_program_cache_stats {
    /// Distinct programs cached.
    pub entries: u64,
    /// Dispatches whose kernel image was already on the device.
    pub hits: u64,
    /// Dispatches that uploaded their kernel image.
    pub misses: u64,
}

#[inline]
fn words<'a>(p: *const u32, n: usize, name: &'static str) -> FfiResult<&'a [u32]> {
    slice(p, n, name)
}

/// Fills `*desc` with an empty description — no kernel name, core (0,0), no arguments, circular buffers or semaphores —
/// and its `struct_size`. Set `kernel_name` at least.
///
/// Thread: any. Errors: NULL_PARAMETER.
///
/// # Safety
/// `desc` must be NULL or point to a writable `ttdrv_program_desc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_program_desc_init(desc: *mut ttdrv_program_desc) -> ttdrv_status {
    guard("ttdrv_program_desc_init", || {
        write_out(out_ptr(desc, "desc")?, ttdrv_program_desc::defaults());
        Ok(())
    })
}

/// Creates a program — a kernel on a rectangle of cores with its compile-time arguments, circular buffers and
/// semaphores — looking it up in (or adding it to) the device's program cache; everything in `*desc` is the cache key.
/// The first run uploads the kernel image; later runs with any runtime arguments reuse it. A built-in kernel is named
/// `ttdrv.*` with no code; names starting with `ttdrv.` are reserved for built-ins, so an unknown one (or one with
/// code) fails here, at creation, with UNSUPPORTED. Any other name is a custom image of `code` (the emulated device
/// runs custom images by name, so a name it does not implement faults with DEVICE_FAULT when the program runs).
///
/// Ownership: `desc` and its arrays are copied; on success `*out` receives a new handle to release with
/// `ttdrv_program_free` (the program stays cached). Thread: any.
/// Errors: NULL_PARAMETER (`desc`, `out`, `desc->kernel_name`, or an array with a non-zero count), INVALID_HANDLE
/// (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`struct_size` not the size of any release's struct (docs/abi.md); kernel name empty, too long or not UTF-8;
/// cores outside the grid or coordinates above 255; argument counts that do not match a built-in kernel; a count too
/// large for memory; circular buffers larger than L1; a launch too large for the issue ring), UNSUPPORTED (an unknown
/// `ttdrv.` name; the device's catalog lacks the built-in kernel).
///
/// # Safety
/// `desc` must be initialised, `kernel_name` a NUL-terminated string, and `code`, `ct_args`, `cbs` and `sems` readable
/// for their counts; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_program_new(
    device: *mut ttdrv_device,
    desc: *const ttdrv_program_desc,
    out: *mut *mut ttdrv_program,
) -> ttdrv_status {
    guard("ttdrv_program_new", || {
        let d = device_checked(device)?;
        let c = versioned::read(desc, "desc")?;
        let out = out_ptr(out, "out")?;
        let name = c_str(c.kernel_name, "desc->kernel_name")?;
        let code = slice(c.code, c.code_len, "desc->code")?;
        let kernel = match BuiltinKernel::from_name(name) {
            Some(k) if code.is_empty() => KernelSource::Builtin(k),
            _ => KernelSource::Image { name: name.to_string(), code: code.to_vec() },
        };
        let coord = |v: u32| {
            u8::try_from(v).map_err(|_| {
                FfiError::invalid(format!(
                    "core coordinate {v} is out of range; use coordinates inside the device's core grid \
                     (ttdrv_device_get_info reports grid_x and grid_y)"
                ))
            })
        };
        let cores =
            CoreRect { x0: coord(c.cores.x0)?, y0: coord(c.cores.y0)?, x1: coord(c.cores.x1)?, y1: coord(c.cores.y1)? };
        let cbs: Vec<CbConfig> = slice(c.cbs, c.num_cbs, "desc->cbs")?
            .iter()
            .map(|b| CbConfig {
                index: b.index,
                page_size: b.page_size,
                num_pages: b.num_pages,
                data_format: b.data_format,
            })
            .collect();
        let rt_words = u16::try_from(c.rt_words_per_core).map_err(|_| {
            FfiError::invalid(format!(
                "rt_words_per_core {} is too large; a launch carries at most 65535 words per core",
                c.rt_words_per_core
            ))
        })?;
        let p = d.program(ProgramDesc {
            kernel,
            cores,
            ct_args: words(c.ct_args, c.num_ct_args, "desc->ct_args")?.to_vec(),
            cbs,
            sems: words(c.sems, c.num_sems, "desc->sems")?.to_vec(),
            rt_words,
        })?;
        write_out(out, handles::register::<Program, _>(p));
        Ok(())
    })
}

/// Dispatches the program on queue `cq`. `rt_args` holds `rt_words_per_core` words for each core of the rectangle, row
/// by row. `buffers` lists every buffer the arguments refer to (their words come from `ttdrv_buffer_accessor`): each
/// must be alive. Returns once the launch is enqueued (or captured, during a capture on `cq`).
///
/// During a trace capture every buffer listed here counts as read by the launch (ttdrv cannot see which ones a kernel
/// writes): the trace does not own its range, so a buffer passed here and freed before the capture ends makes
/// `ttdrv_trace_execute` fail (naming the range and the buffer) until a buffer of its spec is allocated at its address
/// again. To let the trace own an intermediate, dispatch with `ttdrv_program_run_io` and list it as an output
/// (`ttdrv_trace_begin_capture` states the rule).
///
/// Ownership: `rt_args` and `buffers` are only read during the call; the buffers stay the caller's. Thread: any.
/// Errors: NULL_PARAMETER (`program`, or an array with a non-zero count, or a NULL entry of `buffers`), INVALID_HANDLE
/// (`program`, or a freed buffer), CLOSED, FORKED, INVALID_ARGUMENT (the number of runtime words; a buffer of another
/// device; a count too large for memory; no such queue), PROGRAM_NOT_CACHED (the program has never run and a capture is
/// in progress on `cq`: run it once before `ttdrv_trace_begin_capture`), OUT_OF_DEVICE_MEMORY (the first run finds the
/// kernel image region full), TIMEOUT (no ring space), DEVICE_FAULT.
///
/// # Safety
/// `rt_args` must be readable for `num_rt_args` words and `buffers` for `num_buffers` handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_program_run(
    program: *mut ttdrv_program,
    cq: u16,
    rt_args: *const u32,
    num_rt_args: usize,
    buffers: *const *mut ttdrv_buffer,
    num_buffers: usize,
) -> ttdrv_status {
    guard("ttdrv_program_run", || {
        // One registry lock for every handle, and no allocation (up to INLINE_HANDLES buffers): the C path of a
        // cached dispatch costs what the Rust one does, plus this.
        let r = handles::resolver();
        let p: Arc<Program> = r.get(program, "program")?;
        let rt = words(rt_args, num_rt_args, "rt_args")?;
        let bufs = r.all::<Buffer, _>(slice(buffers, num_buffers, "buffers")?, "buffers[i]")?;
        drop(r);
        Ok(p.run(cq, rt, &refs(&bufs))?)
    })
}

/// As `ttdrv_program_run`, with the buffers the launch may read (`inputs`) apart from the buffers it overwrites
/// (`outputs`): the launch writes every byte that any later launch reads from an output, without reading it first. A
/// buffer in both lists counts as an input. Outside a trace capture this is exactly `ttdrv_program_run` with both lists.
///
/// During a trace capture on `cq`, a range the trace first touches as an output is one of its intermediates: freed
/// before the capture ends, it belongs to the trace from that moment until `ttdrv_trace_release`, and no buffer can be
/// allocated over it; still alive at the end (the trace's output), it stays the caller's and must be held by a buffer
/// of the same spec at the same address at each replay (`ttdrv_trace_begin_capture` states the rule). Naming a buffer
/// the kernel also reads as an output makes replays read whatever the trace left there last.
///
/// Ownership: `rt_args`, `inputs` and `outputs` are only read during the call; the buffers stay the caller's.
/// Thread: any. Errors: as `ttdrv_program_run`, with `inputs`, `outputs`, `inputs[i]` and `outputs[i]` named.
///
/// # Safety
/// `rt_args` must be readable for `num_rt_args` words, `inputs` for `num_inputs` handles and `outputs` for
/// `num_outputs` handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_program_run_io(
    program: *mut ttdrv_program,
    cq: u16,
    rt_args: *const u32,
    num_rt_args: usize,
    inputs: *const *mut ttdrv_buffer,
    num_inputs: usize,
    outputs: *const *mut ttdrv_buffer,
    num_outputs: usize,
) -> ttdrv_status {
    guard("ttdrv_program_run_io", || {
        let r = handles::resolver();
        let p: Arc<Program> = r.get(program, "program")?;
        let rt = words(rt_args, num_rt_args, "rt_args")?;
        let ins = r.all::<Buffer, _>(slice(inputs, num_inputs, "inputs")?, "inputs[i]")?;
        let outs = r.all::<Buffer, _>(slice(outputs, num_outputs, "outputs")?, "outputs[i]")?;
        drop(r);
        Ok(p.run_io(cq, rt, &refs(&ins), &refs(&outs))?)
    })
}

/// One step of `ttdrv_rt_args`: a per-core runtime word that follows the core's position in the program's rectangle,
/// sent once instead of once per core (device contract §4.2.6, docs/device-interface.md). The core at row-major
/// position `k` of the rectangle (`k = (y - y0) * width + (x - x0)`) receives word `index` =
/// `min(base + (k / period) * outer + (k % period) * inner, limit)`, computed modulo 2^32; `period` 0 means no period
/// (`k / 0 = 0`, `k % 0 = k`). With `period` = the rectangle's width that is `base + (x - x0) * inner + (y - y0) *
/// outer`; `limit` = `UINT32_MAX` means no clamp.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ttdrv_arg_step {
    /// Which per-core word it gives (0-based); a launch lists its steps in increasing `index`.
    pub index: u32,
    /// The value at the rectangle's first core.
    pub base: u32,
    /// Cores per group (the rectangle's width for the affine form); 0 for none.
    pub period: u32,
    /// Added per group (per row for the affine form).
    pub outer: u32,
    /// Added per core inside a group (per column for the affine form).
    pub inner: u32,
    /// The largest value; `UINT32_MAX` for no clamp.
    pub limit: u32,
}

/// `sizeof(ttdrv_rt_args)` in release 0.2 (frozen: docs/abi.md, "Versions").
pub const TTDRV_RT_ARGS_SIZE_V0_2: u32 = 56;

/// The runtime arguments of one `ttdrv_program_launch`, in the compact form of device contract §4.2.6. Fill with
/// `ttdrv_rt_args_init`. Each core's kernel instance receives `rt_words_per_core` words: its per-core words, then the
/// `num_common` common words. Per-core word `j` (`j < rt_words_per_core - num_common`) is given by the step whose
/// `index` is `j`, or else explicitly: `per_core` holds, core after core in row-major order, each core's per-core
/// words that no step gives, in increasing `j`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_rt_args {
    /// `sizeof(ttdrv_rt_args)` of the caller's header, set by `ttdrv_rt_args_init`.
    pub struct_size: u32,
    /// Words every core receives after its per-core words (tt-metal's common runtime arguments), sent once.
    pub common: *const u32,
    /// Number of common words.
    pub num_common: usize,
    /// Steps, in increasing `index`.
    pub steps: *const ttdrv_arg_step,
    /// Number of steps.
    pub num_steps: usize,
    /// Explicit per-core words: `(rt_words_per_core - num_common - num_steps)` for each core.
    pub per_core: *const u32,
    /// Number of explicit per-core words in all.
    pub num_per_core: usize,
}

versioned!(
    ttdrv_rt_args,
    "ttdrv_rt_args_init()",
    [("0.2", TTDRV_RT_ARGS_SIZE_V0_2)],
    ttdrv_rt_args {
        struct_size: versioned::today::<ttdrv_rt_args>(),
        common: std::ptr::null(),
        num_common: 0,
        steps: std::ptr::null(),
        num_steps: 0,
        per_core: std::ptr::null(),
        num_per_core: 0,
    }
);

/// Fills `*args` with no arguments — no common words, steps or explicit words — and its `struct_size`.
///
/// Thread: any. Errors: NULL_PARAMETER.
///
/// # Safety
/// `args` must be NULL or point to a writable `ttdrv_rt_args`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_rt_args_init(args: *mut ttdrv_rt_args) -> ttdrv_status {
    guard("ttdrv_rt_args_init", || {
        write_out(out_ptr(args, "args")?, ttdrv_rt_args::defaults());
        Ok(())
    })
}

/// As `ttdrv_program_run_io`, with the runtime arguments in the compact form `*args` describes (device contract
/// §4.2.6): words every core shares (such as the accessors of the buffers, from `ttdrv_buffer_accessor`) are sent once,
/// words that follow the core's position (such as the bounds of the block a core computes) as one step each, and only
/// the rest per core. Each core's kernel receives exactly the words `ttdrv_program_run` would give it with them
/// written out per core; the launch record shrinks from `4 * rt_words_per_core` bytes per core to a few hundred bytes
/// for the built-in operations' arguments on any number of cores. On a device of contract 1.1 the driver writes the
/// words out itself.
///
/// Ownership: `args`, its arrays, `inputs` and `outputs` are only read during the call; the buffers stay the caller's.
/// Thread: any. Errors: as `ttdrv_program_run_io`; NULL_PARAMETER also for `args` and an array of `*args` with a
/// non-zero count; INVALID_ARGUMENT also for `args->struct_size` not the size of any release's struct, more common
/// words than `rt_words_per_core`, steps out of order or naming a word that is not per-core, and a number of explicit
/// words other than `(rt_words_per_core - num_common - num_steps)` per core.
///
/// # Safety
/// `args` must point to an initialised `ttdrv_rt_args` whose arrays are readable for their counts; `inputs` must be
/// readable for `num_inputs` handles and `outputs` for `num_outputs` handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_program_launch(
    program: *mut ttdrv_program,
    cq: u16,
    args: *const ttdrv_rt_args,
    inputs: *const *mut ttdrv_buffer,
    num_inputs: usize,
    outputs: *const *mut ttdrv_buffer,
    num_outputs: usize,
) -> ttdrv_status {
    guard("ttdrv_program_launch", || {
        let r = handles::resolver();
        let p: Arc<Program> = r.get(program, "program")?;
        let a = versioned::read(args, "args")?;
        let rt = rt_args(&a)?;
        let ins = r.all::<Buffer, _>(slice(inputs, num_inputs, "inputs")?, "inputs[i]")?;
        let outs = r.all::<Buffer, _>(slice(outputs, num_outputs, "outputs")?, "outputs[i]")?;
        drop(r);
        Ok(p.launch(cq, &rt, &refs(&ins), &refs(&outs))?)
    })
}

/// `ttdrv_arg_role.kind`: the word holds an address inside a buffer of the launch.
pub const TTDRV_ARG_ROLE_ADDRESS: u32 = 0;
/// `ttdrv_arg_role.kind`: the word is a named scalar.
pub const TTDRV_ARG_ROLE_SCALAR: u32 = 1;

/// The role of one runtime word of a `ttdrv_program_launch_with`, declared so that a trace capturing the launch can
/// be patched. `word` counts the runtime words each core's kernel receives: its per-core words, then the common words
/// (device contract §4.2.6); a stepped word cannot have a role. This element struct is frozen: it will never grow.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_arg_role {
    /// `TTDRV_ARG_ROLE_ADDRESS` or `TTDRV_ARG_ROLE_SCALAR`.
    pub kind: u32,
    /// The runtime word (below `rt_words_per_core`).
    pub word: u32,
    /// For an address: the buffer, as an index into `inputs` then `outputs` (input `k` is `k`, output `k` is
    /// `num_inputs + k`). The word's value must lie inside that buffer (from its address to its end); a rebinding
    /// moves it by the same offset into the new buffer. 0 for a scalar.
    pub buffer: usize,
    /// For a scalar: its name, 1 to 64 printable ASCII characters without spaces (`ttdrv_trace_set_scalar` takes
    /// it; every word declared with one name changes together). NULL for an address.
    pub name: *const c_char,
}

/// The roles as the Rust API's, checked for what only C can get wrong (the driver checks the rest).
fn roles_from_c(roles: &[ttdrv_arg_role]) -> FfiResult<Vec<ArgRole<'_>>> {
    roles
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let word = u16::try_from(r.word).map_err(|_| {
                FfiError::invalid(format!(
                    "`roles[{i}].word` is {}; a core receives at most 65535 runtime words: pass a word below \
                     rt_words_per_core",
                    r.word
                ))
            })?;
            match r.kind {
                TTDRV_ARG_ROLE_ADDRESS if r.name.is_null() => Ok(ArgRole::Address { word, buffer: r.buffer }),
                TTDRV_ARG_ROLE_ADDRESS => Err(FfiError::invalid(format!(
                    "`roles[{i}]` is an address role with a name; an address has no name: set `name` to NULL (or \
                     make it a TTDRV_ARG_ROLE_SCALAR)"
                ))),
                TTDRV_ARG_ROLE_SCALAR if r.buffer == 0 => {
                    let name = c_str(r.name, "roles[i].name").map_err(|e| match e {
                        FfiError::Null(_) => FfiError::Status(
                            ttdrv_status::NullParameter,
                            format!("`roles[{i}].name` is NULL; a scalar role needs its name"),
                        ),
                        FfiError::Status(s, m) => FfiError::Status(s, m.replace("roles[i]", &format!("roles[{i}]"))),
                        e => e,
                    })?;
                    Ok(ArgRole::Scalar { word, name })
                }
                TTDRV_ARG_ROLE_SCALAR => Err(FfiError::invalid(format!(
                    "`roles[{i}]` is a scalar role with buffer {}; a scalar names no buffer: set `buffer` to 0",
                    r.buffer
                ))),
                k => Err(FfiError::invalid(format!(
                    "`roles[{i}].kind` is {k}, not a TTDRV_ARG_ROLE_* value; use TTDRV_ARG_ROLE_ADDRESS or \
                     TTDRV_ARG_ROLE_SCALAR"
                ))),
            }
        })
        .collect()
}

/// As `ttdrv_program_launch`, declaring the roles of some runtime words so that a trace capturing this launch can be
/// patched: which words hold the address of which buffer (the trace can then rebind that buffer,
/// `ttdrv_trace_rebind`) and which hold named scalars (`ttdrv_trace_set_scalar`). Every word that holds an address of
/// one of `inputs` or `outputs` must be declared: a buffer whose address sits in an undeclared word would keep its
/// old address after a rebinding, so a trace does not rebind the buffers of a launch that leaves one of its buffers
/// without an address role. Outside a capture the roles are checked and change nothing else.
///
/// Ownership: `args`, its arrays, `inputs`, `outputs`, `roles` and the role names are only read during the call.
/// Thread: any. Errors: as `ttdrv_program_launch` and `ttdrv_program_run`; NULL_PARAMETER also for `roles` with a
/// non-zero count and a scalar role's NULL `name`; INVALID_ARGUMENT also for a role of an unknown kind, a word the
/// cores do not receive or a stepped word, a word given two roles, an address role naming no buffer of the launch or
/// whose word's value is not inside its buffer, an address role with a name, a scalar role with a buffer, and a
/// scalar name that is not 1 to 64 printable ASCII characters.
///
/// # Safety
/// As `ttdrv_program_launch`; `roles` must be readable for `num_roles` elements and each scalar role's `name` a
/// NUL-terminated string.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn ttdrv_program_launch_with(
    program: *mut ttdrv_program,
    cq: u16,
    args: *const ttdrv_rt_args,
    inputs: *const *mut ttdrv_buffer,
    num_inputs: usize,
    outputs: *const *mut ttdrv_buffer,
    num_outputs: usize,
    roles: *const ttdrv_arg_role,
    num_roles: usize,
) -> ttdrv_status {
    guard("ttdrv_program_launch_with", || {
        let r = handles::resolver();
        let p: Arc<Program> = r.get(program, "program")?;
        let a = versioned::read(args, "args")?;
        let rt = rt_args(&a)?;
        let ins = r.all::<Buffer, _>(slice(inputs, num_inputs, "inputs")?, "inputs[i]")?;
        let outs = r.all::<Buffer, _>(slice(outputs, num_outputs, "outputs")?, "outputs[i]")?;
        drop(r);
        let roles = roles_from_c(slice(roles, num_roles, "roles")?)?;
        Ok(p.launch_with(cq, &rt, &refs(&ins), &refs(&outs), &roles)?)
    })
}

/// The runtime arguments `a` describes, its arrays borrowed from the caller for the call (checked: NULL with a
/// non-zero count, and counts past the address space, are refused).
fn rt_args<'a>(a: &ttdrv_rt_args) -> FfiResult<RtArgs<'a>> {
    let steps: &[ttdrv_arg_step] = slice(a.steps, a.num_steps, "args->steps")?;
    Ok(RtArgs {
        common: words(a.common, a.num_common, "args->common")?,
        steps: step_slice(steps),
        per_core: words(a.per_core, a.num_per_core, "args->per_core")?,
    })
}

/// The C steps as the contract's: the same six `u32` fields in the same order.
fn step_slice(s: &[ttdrv_arg_step]) -> &[ArgStep] {
    const {
        assert!(std::mem::size_of::<ttdrv_arg_step>() == std::mem::size_of::<ArgStep>());
        assert!(std::mem::align_of::<ttdrv_arg_step>() == std::mem::align_of::<ArgStep>());
    }
    // SAFETY: ArgStep is #[repr(C)] with the same six u32 fields in the same order as ttdrv_arg_step (asserted above
    // in size and alignment; the field order is the contract's, §4.2.6), every bit pattern is valid for both, and the
    // slice keeps the caller's lifetime.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const ArgStep, s.len()) }
}

/// The buffers of a dispatch as the references the Rust API takes, without allocating.
fn refs(bufs: &Handles<Buffer>) -> SmallVec<[&Buffer; INLINE_HANDLES]> {
    let mut v = SmallVec::new();
    for b in bufs {
        v.push(&**b);
    }
    v
}

/// Frees a program handle; the program stays in the device's cache and launches already enqueued still run. NULL is a
/// no-op.
///
/// Ownership: the handle is released; using it again is INVALID_HANDLE. Thread: any. Errors: INVALID_HANDLE.
///
/// # Safety
/// `program` must be NULL or a value returned by ttdrv.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_program_free(program: *mut ttdrv_program) -> ttdrv_status {
    guard("ttdrv_program_free", || {
        handles::release::<Program, _>(program)?;
        Ok(())
    })
}

/// Writes the buffer's 12-word tensor accessor (device contract §8.3) — what a kernel's runtime arguments use to find
/// the buffer: memory, layout, dtype, address, shape, page stride and shard grid — to `out`, which holds `len >= 12`
/// words. Answers after its device is closed too.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE, INVALID_ARGUMENT (`len` below 12).
///
/// # Safety
/// `out` must be writable for `len` words.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_buffer_accessor(buffer: *const ttdrv_buffer, out: *mut u32, len: usize) -> ttdrv_status {
    guard("ttdrv_buffer_accessor", || {
        let b = buffer_arc(buffer, "buffer")?;
        let out = out_ptr(out, "out")?;
        if len < ACCESSOR_WORDS {
            return Err(FfiError::invalid(format!(
                "an accessor is {ACCESSOR_WORDS} words; `out` holds only {len}: pass an array of {ACCESSOR_WORDS}"
            )));
        }
        let w = b.accessor().to_words();
        // SAFETY: `out` holds at least 12 writable words.
        unsafe { std::ptr::copy_nonoverlapping(w.as_ptr(), out, ACCESSOR_WORDS) };
        Ok(())
    })
}

/// Writes the device's program cache statistics — distinct programs cached, dispatches that found their kernel image on
/// the device (hits) and dispatches that uploaded it (misses) — to `*out`.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE (`device`).
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_device_program_cache_stats(
    device: *const ttdrv_device,
    out: *mut ttdrv_program_cache_stats,
) -> ttdrv_status {
    guard("ttdrv_device_program_cache_stats", || {
        let d = self::device(device)?;
        let s = d.program_cache_stats();
        write_out(
            out_ptr(out, "out")?,
            ttdrv_program_cache_stats { entries: s.entries as u64, hits: s.hits, misses: s.misses },
        );
        Ok(())
    })
}
