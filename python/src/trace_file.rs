//! Saved traces: `trace_save`, `trace_load` and `trace_get_info`, on the driver's `Device::trace_save` /
//! `trace_load` / `trace_info` (src/device/trace_file.rs holds the file format and the loader's checks).

use super::device::{Device, released};
use super::errors::{IntoPy, invalid};
use super::tensor::Tensor;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;
use ttdrv::device::buffer::BufferType;

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
/// id for `execute_trace` and `release_trace`. `bindings` are the device tensors the trace reads and writes, in any
/// order (they are matched to the file's bindings by memory, then address): allocate them as the saving process did
/// — same shapes, dtypes, memory configs, same order, on a device opened with the same parameters — so that they
/// land at the addresses the saved trace uses. The file is checked entirely first; a file that fails a check, and
/// bindings that do not fit, raise `InvalidArgumentError` naming what is wrong, and nothing is left behind.
#[pyfunction]
#[pyo3(signature = (device, path, bindings, *, cq_id = 0))]
pub fn trace_load(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    path: PathBuf,
    bindings: Vec<Bound<'_, Tensor>>,
    cq_id: i64,
) -> PyResult<u32> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    let mut bufs = Vec::with_capacity(bindings.len());
    for (i, t) in bindings.iter().enumerate() {
        let on = t.get().device_buffer(py, &format!("bindings[{i}]"))?;
        if !on.device.is(device) {
            return Err(invalid(format!(
                "bindings[{i}] is a tensor of device {}, not of the device the trace is loaded on ({}); pass \
                 tensors allocated on that device",
                on.device.get().selector,
                d.selector
            )));
        }
        bufs.push(on.buf);
    }
    // The file lists its bindings by memory (DRAM, L1, L1_SMALL), then address.
    let rank = |t: BufferType| BufferType::ALL.iter().position(|&x| x == t).unwrap_or(BufferType::ALL.len());
    bufs.sort_by_key(|b| (rank(b.spec().mem.buffer_type), b.address()));
    let refs: Vec<&ttdrv::Buffer> = bufs.iter().map(|b| &**b).collect();
    released(py, || d.dev.trace_load(&path, &refs, q)).py_err()
}

/// What is known about trace `trace_id`, as a dict: `queue`, `bytes` (of records), `launches`, `region_bytes` (the
/// `trace_region_size` it needs), `stored`, `event_records`, `event_waits`, `bindings` (tensors `trace_load` takes),
/// `owned_ranges` and `owned_bytes` (the device memory it owns: its intermediates).
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
    Ok(d)
}
