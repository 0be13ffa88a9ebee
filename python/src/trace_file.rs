//! Saved traces: `trace_save`, `trace_load` and `trace_get_info`, on the driver's `Device::trace_save` /
//! `trace_load` / `trace_info` (src/device/trace_file.rs holds the file format and the loader's checks).

use super::device::{Device, released};
use super::errors::{IntoPy, invalid};
use super::tensor::Tensor;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use std::sync::Arc;
use ttdrv::Buffer;
use ttdrv::device::buffer::BufferType;
use ttdrv::device::trace_file::SavedBinding;

/// Saves trace `trace_id` to the file `path` (replacing it): its records, the kernels they run, the trace region
/// size it needs, the device shape it depends on, the memory it owns and its bindings (the tensors it reads or
/// writes and does not own). `trace_load` replays it in another process. A trace that records or waits for events
/// cannot be saved (`InvalidArgumentError`).
#[pyfunction]
#[pyo3(signature = (device, trace_id, path))]
pub fn trace_save(py: Python<'_>, device: &Bound<'_, Device>, trace_id: u32, path: PathBuf) -> PyResult<()> {
    let d = device.get();
    released(py, || d.dev.trace_save(trace_id, &path)).py_err()
}

/// Loads the trace `trace_save` wrote to `path` (in this process or another) for replay on `cq_id`, and returns its
/// id for `execute_trace` and `release_trace`. `bindings` are the device tensors the trace reads and writes
/// (`trace_file_bindings(path)` lists what it needs): a dict `{name or index: tensor}` names each binding's tensor;
/// a list is matched to the bindings by the rule below. A tensor for a rebindable binding may be anywhere (the
/// loader rewrites the trace's address words); one for another binding must sit at the saved address — allocate the
/// tensors as the saving process did (same shapes, dtypes, memory configs, same order, on a device opened with the
/// same parameters) so that they land there. The file is checked entirely first; a file that fails a check, and
/// bindings that do not fit, raise `InvalidArgumentError` naming what is wrong, and nothing is left behind.
///
/// A list is matched as follows: a tensor at a binding's saved address, with its spec, takes that binding; the other
/// tensors take the remaining bindings of their spec in order — bindings in the file's order, tensors by memory
/// (DRAM, L1, L1_SMALL), then address, as the saver's were.
#[pyfunction]
#[pyo3(signature = (device, path, bindings, *, cq_id = 0))]
pub fn trace_load(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    path: PathBuf,
    bindings: &Bound<'_, PyAny>,
    cq_id: i64,
) -> PyResult<u32> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    let tensor = |t: &Bound<'_, PyAny>, what: String| -> PyResult<Arc<Buffer>> {
        let t = t.cast::<Tensor>().map_err(|_| invalid(format!("{what}: pass a device tensor")))?;
        let on = t.get().device_buffer(py, &what)?;
        if !on.device.is(device) {
            return Err(invalid(format!(
                "{what} is a tensor of device {}, not of the device the trace is loaded on ({}); pass tensors \
                 allocated on that device",
                on.device.get().selector,
                d.selector
            )));
        }
        Ok(on.buf)
    };
    let bufs: Vec<Arc<Buffer>> = if let Ok(map) = bindings.cast::<PyDict>() {
        let file = crate::trace_patch::read_trace_file(py, &path)?;
        let saved = &file.bindings;
        let mut slots: Vec<Option<Arc<Buffer>>> = vec![None; saved.len()];
        for (k, v) in map.iter() {
            let i = if let Ok(i) = k.extract::<usize>() {
                i
            } else {
                let n: String = k
                    .extract()
                    .map_err(|_| invalid("bindings: a dict's keys are binding names (\"input0\") or indices"))?;
                saved.iter().position(|b| b.name == n).ok_or_else(|| {
                    let names: Vec<&str> = saved.iter().map(|b| b.name.as_str()).collect();
                    invalid(format!(
                        "{} has no binding named {n:?}; its bindings are [{}] (trace_file_bindings lists them)",
                        path.display(),
                        names.join(", ")
                    ))
                })?
            };
            if i >= saved.len() {
                return Err(invalid(format!(
                    "bindings: index {i}, but {} has {} bindings (0..{})",
                    path.display(),
                    saved.len(),
                    saved.len()
                )));
            }
            slots[i] = Some(tensor(&v, format!("bindings[{}]", k.repr()?))?);
        }
        if let Some(i) = slots.iter().position(Option::is_none) {
            return Err(invalid(format!(
                "bindings: no tensor for binding {} ({}) of {}; pass one tensor per binding (trace_file_bindings \
                 lists them)",
                saved[i].name,
                saved[i].spec,
                path.display()
            )));
        }
        slots.into_iter().flatten().collect()
    } else {
        let list: Vec<Bound<'_, PyAny>> = bindings
            .extract()
            .map_err(|_| invalid("bindings: pass a list of device tensors or a dict {name: tensor}"))?;
        let mut bufs = Vec::with_capacity(list.len());
        for (i, t) in list.iter().enumerate() {
            bufs.push(tensor(t, format!("bindings[{i}]"))?);
        }
        // The saver's order: by memory (DRAM, L1, L1_SMALL), then address.
        let rank = |t: BufferType| BufferType::ALL.iter().position(|&x| x == t).unwrap_or(BufferType::ALL.len());
        bufs.sort_by_key(|b| (rank(b.spec().mem.buffer_type), b.address()));
        // Matched to the file's bindings when they fit; otherwise (an unreadable file, a count or spec that does
        // not fit) in the saver's order as they are, for the loader to say what is wrong.
        match crate::trace_patch::read_trace_file(py, &path) {
            Ok(f) => match_list(&f.bindings, &bufs).unwrap_or(bufs),
            Err(_) => bufs,
        }
    };
    let refs: Vec<&ttdrv::Buffer> = bufs.iter().map(|b| &**b).collect();
    released(py, || d.dev.trace_load(&path, &refs, q)).py_err()
}

/// The tensors of a list matched to a file's bindings: a tensor at a binding's saved address, with its spec, takes
/// that binding; the others take the remaining bindings of their spec in order. None when they do not fit.
fn match_list(saved: &[SavedBinding], bufs: &[Arc<Buffer>]) -> Option<Vec<Arc<Buffer>>> {
    if saved.len() != bufs.len() {
        return None;
    }
    let mut slots: Vec<Option<Arc<Buffer>>> = vec![None; saved.len()];
    let mut rest = Vec::new();
    for b in bufs {
        let at = saved
            .iter()
            .enumerate()
            .position(|(i, s)| slots[i].is_none() && s.address == b.address() && s.spec == *b.spec());
        match at {
            Some(i) => slots[i] = Some(b.clone()),
            None => rest.push(b),
        }
    }
    for b in rest {
        let i = saved.iter().enumerate().position(|(i, s)| slots[i].is_none() && s.spec == *b.spec())?;
        slots[i] = Some(b.clone());
    }
    slots.into_iter().collect()
}

/// What is known about trace `trace_id`, as a dict: `queue`, `bytes` (of records), `launches`, `region_bytes` (the
/// `trace_region_size` it needs), `stored`, `event_records`, `event_waits`, `bindings` (tensors `trace_load` takes),
/// `owned_ranges` and `owned_bytes` (the device memory it owns: its intermediates), `rebindable` (bindings
/// `trace_rebind` can rebind), `scalars` (named scalars `trace_set_scalar` can set) and `patchable_words`.
#[pyfunction]
#[pyo3(signature = (device, trace_id))]
pub fn trace_get_info<'py>(
    py: Python<'py>,
    device: &Bound<'py, Device>,
    trace_id: u32,
) -> PyResult<Bound<'py, PyDict>> {
    let i = device.get().dev.trace_info(trace_id).py_err()?;
    let d = PyDict::new(py);
    d.set_item("queue", i.queue)?;
    d.set_item("bytes", i.bytes)?;
    d.set_item("launches", i.launches)?;
    d.set_item("region_bytes", i.region_bytes)?;
    d.set_item("stored", i.stored)?;
    d.set_item("event_records", i.event_records)?;
    d.set_item("event_waits", i.event_waits)?;
    d.set_item("bindings", i.bindings)?;
    d.set_item("owned_ranges", i.owned_ranges)?;
    d.set_item("owned_bytes", i.owned_bytes)?;
    d.set_item("rebindable", i.rebindable)?;
    d.set_item("scalars", i.scalars)?;
    d.set_item("patchable_words", i.patchable_words)?;
    Ok(d)
}
