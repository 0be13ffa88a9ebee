//! Patching a captured trace from Python: `trace_bindings` / `trace_scalars` list what a trace binds and its named
//! scalars, `trace_rebind` binds other tensors for every later replay, `execute_trace(..., bindings=...)` for one,
//! `trace_set_scalar` changes a scalar, and `trace_file_bindings` / `trace_file_scalars` list a saved file's before
//! `trace_load`. The rules — what is patchable, how patches are ordered on the device, which replays an event must
//! order — are the driver's (src/device/patch.rs).

use super::device::{Device, Event, released};
use super::errors::{IntoPy, invalid};
use super::tensor::Tensor;
use super::types::{DataType, Layout, MemoryConfig};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::path::PathBuf;
use std::sync::Arc;
use ttdrv::device::BufferSpec;
use ttdrv::device::trace_file::{MAX_FILE, TraceFile};
use ttdrv::{Buffer, ScalarKind};

/// The name Python uses for a scalar kind.
fn kind_name(k: ScalarKind) -> &'static str {
    match k {
        ScalarKind::U32 => "u32",
        ScalarKind::F32 => "f32",
        ScalarKind::F32NonNegative => "f32_non_negative",
    }
}

/// A scalar's value as Python sees it: a float for the float kinds, an int for `u32`.
fn scalar_value<'py>(py: Python<'py>, kind: ScalarKind, bits: u32) -> PyResult<Bound<'py, PyAny>> {
    Ok(match kind {
        ScalarKind::U32 => bits.into_pyobject(py)?.into_any(),
        _ => (f32::from_bits(bits) as f64).into_pyobject(py)?.into_any(),
    })
}

#[allow(clippy::too_many_arguments)]
fn binding_dict<'py>(
    py: Python<'py>,
    index: usize,
    name: &str,
    output: bool,
    rebindable: bool,
    words: usize,
    address: u64,
    spec: &BufferSpec,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("index", index)?;
    d.set_item("name", name)?;
    d.set_item("output", output)?;
    d.set_item("rebindable", rebindable)?;
    d.set_item("words", words)?;
    d.set_item("address", address)?;
    d.set_item("shape", (spec.rows, spec.cols))?;
    d.set_item("dtype", DataType::from_dev(spec.dtype))?;
    d.set_item("layout", Layout::from_dev(spec.layout))?;
    d.set_item("memory_config", MemoryConfig::from_dev(spec.mem))?;
    Ok(d)
}

fn scalar_dict<'py>(
    py: Python<'py>,
    name: &str,
    kind: ScalarKind,
    bits: u32,
    words: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", name)?;
    d.set_item("kind", kind_name(kind))?;
    d.set_item("value", scalar_value(py, kind, bits)?)?;
    d.set_item("words", words)?;
    Ok(d)
}

/// The external bindings of trace `trace_id` — the tensors it reads or writes and does not own — as a list of dicts,
/// in the order `trace_rebind` indexes them and `trace_save` writes them: `index`, `name` (`input0`, `output0`,
/// ...), `output` (the trace writes it before reading it), `rebindable` (`trace_rebind` can bind another tensor to
/// it), `words` (runtime words a rebinding rewrites), `address` (of the tensor bound now), and the spec a tensor
/// bound to it must have: `shape`, `dtype`, `layout`, `memory_config`.
#[pyfunction]
#[pyo3(signature = (device, trace_id))]
pub fn trace_bindings<'py>(
    py: Python<'py>,
    device: &Bound<'py, Device>,
    trace_id: u32,
) -> PyResult<Bound<'py, PyList>> {
    let bs = device.get().dev.trace_bindings(trace_id).py_err()?;
    let l = PyList::empty(py);
    for (i, b) in bs.iter().enumerate() {
        l.append(binding_dict(py, i, &b.name, b.output, b.rebindable, b.words as usize, b.address, &b.spec)?)?;
    }
    Ok(l)
}

/// The named scalars of trace `trace_id`, as a list of dicts: `name` (as a program declared it, or
/// `<op>.<parameter>#<k>` for the k-th such parameter of a built-in op: `scale.factor#0`, `softmax.scale#0`,
/// `layer_norm.eps#0`, `fill.value#0`, `bmm.scale#0`), `kind` (`"f32"`, `"f32_non_negative"` or `"u32"`), `value`
/// (now: a float, or an int for `u32`) and `words` (runtime words an update rewrites).
#[pyfunction]
#[pyo3(signature = (device, trace_id))]
pub fn trace_scalars<'py>(py: Python<'py>, device: &Bound<'py, Device>, trace_id: u32) -> PyResult<Bound<'py, PyList>> {
    let ss = device.get().dev.trace_scalars(trace_id).py_err()?;
    let l = PyList::empty(py);
    for s in &ss {
        l.append(scalar_dict(py, &s.name, s.kind, s.value, s.words as usize)?)?;
    }
    Ok(l)
}

/// The events of an `after` argument, each of `device`.
fn after_events<'py>(
    device: &Bound<'py, Device>,
    after: Option<Vec<Bound<'py, Event>>>,
) -> PyResult<Vec<Bound<'py, Event>>> {
    let evs = after.unwrap_or_default();
    for (i, e) in evs.iter().enumerate() {
        if !e.get().device.bind(device.py()).is(device) {
            return Err(invalid(format!(
                "after[{i}] is an event of another device; pass events recorded on this device's queues"
            )));
        }
    }
    Ok(evs)
}

/// `{name or index: tensor}` as (binding index, buffer) pairs of trace `trace_id`.
fn binding_pairs(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    trace_id: u32,
    bindings: &Bound<'_, PyDict>,
) -> PyResult<Vec<(usize, Arc<Buffer>)>> {
    let d = device.get();
    let names: Vec<String> = d.dev.trace_bindings(trace_id).py_err()?.into_iter().map(|b| b.name).collect();
    let mut out = Vec::with_capacity(bindings.len());
    for (k, v) in bindings.iter() {
        let index = if let Ok(i) = k.extract::<usize>() {
            i
        } else if let Ok(n) = k.extract::<String>() {
            names.iter().position(|x| *x == n).ok_or_else(|| {
                invalid(format!(
                    "trace {trace_id} has no binding named {n:?}; its bindings are [{}] (trace_bindings lists them)",
                    names.join(", ")
                ))
            })?
        } else {
            return Err(invalid(format!(
                "bindings: key {} is neither a binding name (\"input0\") nor an index",
                k.repr()?
            )));
        };
        let t = v.cast::<Tensor>().map_err(|_| {
            invalid(format!(
                "bindings[{}]: pass a device tensor, not {}",
                k.repr().map(|r| r.to_string()).unwrap_or_default(),
                v.get_type().name().map(|n| n.to_string()).unwrap_or_default()
            ))
        })?;
        let on = t.get().device_buffer(py, &format!("bindings[{}]", k.repr()?))?;
        if !on.device.is(device) {
            return Err(invalid(format!(
                "bindings[{}] is a tensor of another device; pass tensors of the trace's device",
                k.repr()?
            )));
        }
        out.push((index, on.buf));
    }
    Ok(out)
}

/// Binds other tensors to external bindings of trace `trace_id` for every later replay, without capturing it
/// again: `bindings` maps a binding's name (`"input0"`) or index (`trace_bindings` lists them) to a device tensor of
/// its spec. The trace's words holding the old addresses are rewritten on the device on queue `cq_id` — only those
/// words: a replay enqueued on `cq_id` before runs with the old tensors, the next with the new. A replay that may
/// still run on another queue must be ordered first by an event recorded there after it, passed in `after`; without
/// one the call raises `InvalidStateError` naming the queue and changes nothing. With it, the guide's "deallocate,
/// re-allocate at the same address and assert" step is optional: rebind the trace's input to the new tensor.
#[pyfunction]
#[pyo3(signature = (device, trace_id, bindings, *, cq_id = 0, after = None))]
pub fn trace_rebind(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    trace_id: u32,
    bindings: &Bound<'_, PyDict>,
    cq_id: i64,
    after: Option<Vec<Bound<'_, Event>>>,
) -> PyResult<()> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    let evs = after_events(device, after)?;
    let pairs = binding_pairs(py, device, trace_id, bindings)?;
    let evs: Vec<&ttdrv::Event> = evs.iter().map(|e| &e.get().ev).collect();
    let refs: Vec<(usize, &Buffer)> = pairs.iter().map(|(i, b)| (*i, &**b)).collect();
    released(py, || d.dev.trace_rebind(trace_id, q, &refs, &evs)).py_err()
}

/// Sets the named scalar `name` of trace `trace_id` (`trace_scalars` lists them) to `value` for every later replay,
/// ordered as `trace_rebind` is: a float for the float kinds (finite; not negative for `"f32_non_negative"`), an int
/// from 0 to 2**32 - 1 for `"u32"`.
#[pyfunction]
#[pyo3(signature = (device, trace_id, name, value, *, cq_id = 0, after = None))]
pub fn trace_set_scalar(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    trace_id: u32,
    name: &str,
    value: &Bound<'_, PyAny>,
    cq_id: i64,
    after: Option<Vec<Bound<'_, Event>>>,
) -> PyResult<()> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    let evs = after_events(device, after)?;
    let scalars = d.dev.trace_scalars(trace_id).py_err()?;
    let Some(s) = scalars.iter().find(|s| s.name == name) else {
        let names: Vec<&str> = scalars.iter().map(|s| s.name.as_str()).collect();
        return Err(invalid(format!(
            "trace {trace_id} has no scalar named {name:?}; its scalars are [{}] (trace_scalars lists them)",
            names.join(", ")
        )));
    };
    let bits = match s.kind {
        ScalarKind::U32 => {
            if value.is_instance_of::<pyo3::types::PyFloat>() || value.is_instance_of::<pyo3::types::PyBool>() {
                return Err(invalid(format!(
                    "scalar {name} holds a 32-bit unsigned integer; pass an int, not {}",
                    value.repr()?
                )));
            }
            value.extract::<u32>().map_err(|_| {
                invalid(format!(
                    "scalar {name} holds a 32-bit unsigned integer; {} is not an int from 0 to 4294967295",
                    value.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?
        }
        _ => {
            let v = value.extract::<f64>().map_err(|_| {
                invalid(format!(
                    "scalar {name} holds a float; pass a float, not {}",
                    value.repr().map(|r| r.to_string()).unwrap_or_default()
                ))
            })?;
            // The driver checks the kind's rule (finite, not negative) on the f32 value.
            (v as f32).to_bits()
        }
    };
    let evs: Vec<&ttdrv::Event> = evs.iter().map(|e| &e.get().ev).collect();
    released(py, || d.dev.trace_set_scalar(trace_id, q, name, bits, &evs)).py_err()
}

/// `execute_trace` with bindings for this replay only, or an `after` list: see `execute_trace` (device.rs).
pub fn execute_trace_with(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    trace_id: u32,
    q: u16,
    blocking: bool,
    bindings: Option<&Bound<'_, PyDict>>,
    after: Option<Vec<Bound<'_, Event>>>,
) -> PyResult<()> {
    let d = device.get();
    let evs = after_events(device, after)?;
    let pairs = match bindings {
        Some(b) => binding_pairs(py, device, trace_id, b)?,
        None => Vec::new(),
    };
    let evs: Vec<&ttdrv::Event> = evs.iter().map(|e| &e.get().ev).collect();
    let refs: Vec<(usize, &Buffer)> = pairs.iter().map(|(i, b)| (*i, &**b)).collect();
    released(py, || d.dev.execute_trace_with(trace_id, q, blocking, &refs, &evs)).py_err()
}

/// Reads and checks a saved trace file (its structure: format, checksum, every field; whether it fits a device is
/// `trace_load`'s check).
pub fn read_trace_file(py: Python<'_>, path: &PathBuf) -> PyResult<TraceFile> {
    let p = path.display().to_string();
    released(py, || {
        let cannot = |e: std::io::Error| format!("cannot read the file {p}: {e}");
        let len = std::fs::metadata(path).map_err(cannot)?.len();
        if len > MAX_FILE {
            return Err(format!("{p} is {len} bytes, more than any saved trace; pass a file trace_save wrote"));
        }
        let bytes = std::fs::read(path).map_err(cannot)?;
        TraceFile::decode(&bytes).map_err(|e| format!("{p} is not a valid trace file: {e}; save the trace again"))
    })
    .map_err(invalid)
}

/// The external bindings of the trace saved in `path`, as `trace_bindings` lists a trace's (`address` is the
/// tensor's at save): what `trace_load` takes — a tensor of each binding's spec, anywhere when `rebindable`, else at
/// `address`.
#[pyfunction]
#[pyo3(signature = (path))]
pub fn trace_file_bindings(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyList>> {
    let f = read_trace_file(py, &path)?;
    let l = PyList::empty(py);
    for (i, b) in f.bindings.iter().enumerate() {
        l.append(binding_dict(py, i, &b.name, b.output, b.rebindable, b.points.len(), b.address, &b.spec)?)?;
    }
    Ok(l)
}

/// The named scalars of the trace saved in `path`, as `trace_scalars` lists a trace's (`value` is the one at save).
#[pyfunction]
#[pyo3(signature = (path))]
pub fn trace_file_scalars(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyList>> {
    let f = read_trace_file(py, &path)?;
    let l = PyList::empty(py);
    for s in &f.scalars {
        l.append(scalar_dict(py, &s.name, s.kind, s.value, s.offsets.len())?)?;
    }
    Ok(l)
}
