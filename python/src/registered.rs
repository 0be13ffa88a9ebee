//! Registered host memory from Python (`ttdrv.register_host_memory`, on the driver's `Device::register_host_memory`):
//! a numpy array whose memory the device reads and writes directly, with no staging copy through the rings
//! (`WRITE_HOST` / `READ_HOST`, docs/device-interface.md §4.2.10-11).
//!
//! The array's memory must stay allocated while it is registered: the registration holds the array and a buffer
//! export of it (so numpy refuses to resize it) until the memory is unregistered, and when unregistering fails (a
//! hung device) it keeps both for good rather than let the memory go while the device may still write it.

use crate::device::{Device, released};
use crate::errors::{IntoPy, invalid};
use crate::tensor::Tensor;
use pyo3::buffer::PyUntypedBuffer;
use pyo3::prelude::*;
use std::sync::{Arc, Mutex};
use ttdrv::HostRegistration;
use ttdrv::device::registered::HOST_PAGE;

/// What keeps the registered memory where it is: a buffer export of the array (it holds the array too).
struct Held {
    _buffer: PyUntypedBuffer,
}

/// A numpy array registered with a device (`ttdrv.register_host_memory`).
#[pyclass(frozen, module = "ttdrv")]
pub struct HostMemory {
    reg: Arc<HostRegistration>,
    held: Mutex<Option<Held>>,
    array: Py<PyAny>,
}

impl HostMemory {
    fn unregister_inner(&self, py: Python<'_>) -> PyResult<()> {
        let reg = self.reg.clone();
        released(py, move || reg.unregister()).py_err()?;
        // The device never touches the memory again: numpy may have it back.
        drop(self.held.lock().unwrap_or_else(|e| e.into_inner()).take());
        Ok(())
    }
}

#[pymethods]
impl HostMemory {
    /// Unregisters the memory: waits (without the GIL) until every transfer that uses it has completed, then unmaps
    /// it. Afterwards transfers naming it raise `InvalidArgumentError`, and the array is an ordinary array again.
    /// Calling it again does nothing. A hung device raises `WaitTimeoutError`: reset it and call again.
    fn unregister(&self, py: Python<'_>) -> PyResult<()> {
        self.unregister_inner(py)
    }

    /// True until `unregister()`.
    #[getter]
    fn is_registered(&self) -> bool {
        self.reg.is_registered()
    }

    /// Bytes registered (the array's `nbytes`).
    #[getter]
    fn nbytes(&self) -> usize {
        self.reg.len()
    }

    /// The registered array.
    #[getter]
    fn array(&self, py: Python<'_>) -> Py<PyAny> {
        self.array.clone_ref(py)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        self.unregister_inner(py)?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        format!(
            "HostMemory({} bytes at {:p}{})",
            self.reg.len(),
            self.reg.as_ptr(),
            if self.reg.is_registered() { "" } else { ", unregistered" }
        )
    }
}

impl Drop for HostMemory {
    fn drop(&mut self) {
        if let Err(e) = self.reg.unregister() {
            // The device may still write the memory: keep the array (and its export) alive for good.
            log::error!("dropping registered host memory: {e}; its array is kept alive");
            if let Some(h) = self.held.get_mut().unwrap_or_else(|e| e.into_inner()).take() {
                std::mem::forget(h);
            }
        }
    }
}

/// Registers `array`'s memory with `device` (pinned memory in tt-metal, `cudaHostRegister` in CUDA), so that
/// `copy_registered_to_device_tensor` and `copy_device_tensor_to_registered` move data between device tensors and it
/// with no staging copy. The array must be writable and C-contiguous, its data must start on a 4096-byte boundary
/// and its size must be a non-zero multiple of 4096 bytes: `ttdrv.aligned_empty` makes such arrays.
#[pyfunction]
#[pyo3(signature = (device, array))]
pub fn register_host_memory(device: &Bound<'_, Device>, array: &Bound<'_, PyAny>) -> PyResult<HostMemory> {
    let buffer = PyUntypedBuffer::get(array)?;
    if !buffer.is_c_contiguous() {
        return Err(invalid("register_host_memory: the array is not C-contiguous; use ttdrv.aligned_empty"));
    }
    if buffer.readonly() {
        return Err(invalid(
            "register_host_memory: the array is read-only, and reads write into registered memory; pass a writable \
             array (ttdrv.aligned_empty)",
        ));
    }
    let (ptr, len) = (buffer.buf_ptr() as *mut u8, buffer.len_bytes());
    if ptr as usize % HOST_PAGE != 0 || len == 0 || len % HOST_PAGE != 0 {
        return Err(invalid(format!(
            "register_host_memory: the array's data at {ptr:p} ({len} bytes) must start on a {HOST_PAGE}-byte \
             boundary and be a non-zero multiple of {HOST_PAGE} bytes; make it with ttdrv.aligned_empty"
        )));
    }
    // SAFETY: `held` keeps the array and its buffer export alive (numpy does not move or free exported memory) until
    // unregister has returned OK; when it fails, `Drop` keeps them alive for good.
    let reg = unsafe { device.get().dev.register_host_memory(ptr, len) }.py_err()?;
    Ok(HostMemory {
        reg: Arc::new(reg),
        held: Mutex::new(Some(Held { _buffer: buffer })),
        array: array.clone().unbind(),
    })
}

/// The device tensor's buffer, queue and registration for a registered transfer.
fn transfer_args(
    tensor: &Bound<'_, Tensor>,
    host_memory: &Bound<'_, HostMemory>,
    cq_id: i64,
) -> PyResult<(Arc<ttdrv::Buffer>, u16, Arc<HostRegistration>)> {
    let d = tensor.get().device_buffer(tensor.py(), "device_tensor")?;
    let q = d.device.get().queue(cq_id)?;
    Ok((d.buf, q, host_memory.get().reg.clone()))
}

/// Writes `device_tensor` from registered host memory: its dense row-major bytes at byte `offset` of `host_memory`,
/// which the device reads directly. With `blocking` (the default) the call waits until the write has completed;
/// otherwise the memory must not change until `synchronize_device` on `cq_id` returns (or an event recorded after
/// it completes). Tiled tensors are refused (their data needs the host to tilize): use `copy_host_to_device_tensor`.
#[pyfunction]
#[pyo3(signature = (host_memory, device_tensor, offset = 0, cq_id = 0, blocking = true))]
pub fn copy_registered_to_device_tensor(
    host_memory: &Bound<'_, HostMemory>,
    device_tensor: &Bound<'_, Tensor>,
    offset: usize,
    cq_id: i64,
    blocking: bool,
) -> PyResult<()> {
    let (buf, q, reg) = transfer_args(device_tensor, host_memory, cq_id)?;
    released(device_tensor.py(), move || buf.write_from(q, &reg, offset, blocking)).py_err()
}

/// Reads `device_tensor` into registered host memory at byte `offset` (dense row-major), which the device writes
/// directly. With `blocking` (the default) the data is in place when the call returns; otherwise once
/// `synchronize_device` on `cq_id` returns (or an event recorded after it completes). Tiled tensors are refused:
/// use `to_numpy`.
#[pyfunction]
#[pyo3(signature = (device_tensor, host_memory, offset = 0, cq_id = 0, blocking = true))]
pub fn copy_device_tensor_to_registered(
    device_tensor: &Bound<'_, Tensor>,
    host_memory: &Bound<'_, HostMemory>,
    offset: usize,
    cq_id: i64,
    blocking: bool,
) -> PyResult<()> {
    let (buf, q, reg) = transfer_args(device_tensor, host_memory, cq_id)?;
    released(device_tensor.py(), move || buf.read_into(q, &reg, offset, blocking)).py_err()
}
