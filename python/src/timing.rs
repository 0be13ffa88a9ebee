//! Rust-side twins of three Python calls, for python/bench/bench.py: the same driver call in a Rust loop, so the
//! Python layer's own cost per call is the difference between the two in the same run on the same device.

use crate::device::{Device, released};
use crate::errors::IntoPy;
use crate::tensor::Tensor;
use pyo3::prelude::*;
use std::time::Instant;
use ttdrv::device::ops::BinaryOp;

/// Mean nanoseconds per `Device::execute_trace(trace_id, cq_id, blocking=false)` over `n` calls in Rust.
#[pyfunction]
#[pyo3(signature = (device, trace_id, n, cq_id = 0))]
pub fn _rust_execute_trace_ns(
    py: Python<'_>,
    device: &Bound<'_, Device>,
    trace_id: u32,
    n: u32,
    cq_id: i64,
) -> PyResult<f64> {
    let d = device.get();
    let q = d.queue(cq_id)?;
    released(py, || {
        let t0 = Instant::now();
        for _ in 0..n {
            d.dev.execute_trace(trace_id, q, false)?;
        }
        Ok(t0.elapsed().as_nanos() as f64 / n.max(1) as f64)
    })
    .py_err()
}

/// Mean nanoseconds per `Device::binary(Add, a, b)` (a new output each call, dropped at once, as a Python op call
/// followed by dropping its result does) over `n` calls in Rust.
#[pyfunction]
#[pyo3(signature = (a, b, n, queue_id = 0))]
pub fn _rust_add_ns(
    py: Python<'_>,
    a: &Bound<'_, Tensor>,
    b: &Bound<'_, Tensor>,
    n: u32,
    queue_id: i64,
) -> PyResult<f64> {
    let da = a.get().device_buffer(py, "a")?;
    let db = b.get().device_buffer(py, "b")?;
    let d = da.device.get();
    let q = d.queue(queue_id)?;
    let mem = da.buf.spec().mem;
    released(py, || {
        let t0 = Instant::now();
        for _ in 0..n {
            drop(d.dev.binary(q, BinaryOp::Add, &da.buf, &db.buf, &mem)?);
        }
        Ok(t0.elapsed().as_nanos() as f64 / n.max(1) as f64)
    })
    .py_err()
}

/// Mean nanoseconds per non-blocking `Buffer::write` of `host_tensor` into `device_tensor` over `n` calls in Rust.
#[pyfunction]
#[pyo3(signature = (host_tensor, device_tensor, n, cq_id = 0))]
pub fn _rust_write_ns(
    py: Python<'_>,
    host_tensor: &Bound<'_, Tensor>,
    device_tensor: &Bound<'_, Tensor>,
    n: u32,
    cq_id: i64,
) -> PyResult<f64> {
    let data = host_tensor.get().host_data(py, "host_tensor")?;
    let d = device_tensor.get().device_buffer(py, "device_tensor")?;
    let q = d.device.get().queue(cq_id)?;
    // SAFETY: `data` stays alive for the whole loop and holds the buffer's host size (checked by write's length
    // check through the safe slice).
    let bytes = unsafe { data.bytes() };
    released(py, || {
        let t0 = Instant::now();
        for _ in 0..n {
            d.buf.write(q, bytes, false)?;
        }
        Ok(t0.elapsed().as_nanos() as f64 / n.max(1) as f64)
    })
    .py_err()
}
