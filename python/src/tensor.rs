//! Tensors (`ttnn.Tensor`): on the host (ttdrv's memory or a numpy array used in place), on the way back from the
//! device (a non-blocking `cpu()`), or in device memory.

use crate::device::{Device, released};
use crate::errors::{IntoPy, invalid, invalid_state, new_err};
use crate::host::{HostBytes, HostStorage, SendPtr, bf16_to_f32_bytes, f32_to_bf16_bytes};
use crate::reads::{self, Pending};
use crate::types::{DataType, Layout, MemoryConfig, Shape, buffer_spec, padded_dims};
use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyTuple;
use std::ffi::{CStr, c_int, c_void};
use std::sync::{Arc, Mutex, MutexGuard};
use ttdrv::device::Buffer;

/// Where a tensor's data is.
pub enum Storage {
    /// On the host.
    Host(Arc<HostStorage>),
    /// Coming back from the device (`cpu(blocking=False)`).
    Pending(Arc<Pending>),
    /// In device memory.
    Device {
        /// The buffer; ops in flight hold clones, so deallocating frees it once they have enqueued their work.
        buf: Arc<Buffer>,
        /// Its device.
        device: Py<Device>,
    },
    /// Freed by `deallocate`.
    Deallocated,
}

/// A tensor (`ttnn.Tensor`) of 1 to 4 dimensions; the device stores it as `rows x columns`, every dimension but
/// the last folded into rows. Host tensors come from `from_numpy` or `cpu()`; device tensors from
/// `allocate_tensor_on_device`, `Tensor.to`, `from_numpy(..., device=...)` and the ops.
///
/// A host tensor supports the buffer protocol (`numpy.asarray(t)` is a view of it, no copy); for bfloat16 the
/// view holds the raw bits as uint16, while `to_numpy()` converts to float32.
// A freelist: op calls make a tensor each, and most die soon after (intermediates of a model).
#[pyclass(frozen, freelist = 64, module = "ttdrv")]
pub struct Tensor {
    pub(crate) shape: Shape,
    pub(crate) dtype: DataType,
    pub(crate) layout: Layout,
    state: Mutex<Storage>,
}

/// What a device tensor's op needs: its buffer and its device.
pub struct OnDevice<'py> {
    pub buf: Arc<Buffer>,
    pub device: Bound<'py, Device>,
}

impl Tensor {
    fn lock(&self) -> MutexGuard<'_, Storage> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A device tensor; its layout is the buffer's.
    pub fn on_device(shape: Shape, dtype: DataType, buf: Buffer, device: Py<Device>) -> Tensor {
        Tensor {
            shape,
            dtype,
            layout: Layout::from_dev(buf.spec().layout),
            state: Mutex::new(Storage::Device { buf: Arc::new(buf), device }),
        }
    }

    /// A host tensor.
    pub fn on_host(shape: Shape, dtype: DataType, layout: Layout, data: HostStorage) -> Tensor {
        Tensor { shape, dtype, layout, state: Mutex::new(Storage::Host(Arc::new(data))) }
    }

    /// The device buffer, for an op or a transfer; `what` names the argument in messages.
    pub fn device_buffer<'py>(&self, py: Python<'py>, what: &str) -> PyResult<OnDevice<'py>> {
        match &*self.lock() {
            Storage::Device { buf, device } => Ok(OnDevice { buf: buf.clone(), device: device.bind(py).clone() }),
            Storage::Host(_) | Storage::Pending(_) => Err(invalid(format!(
                "{what} is a host tensor; this call takes a device tensor: move it with .to(device) or \
                 copy_host_to_device_tensor first"
            ))),
            Storage::Deallocated => Err(invalid_state(format!("{what} was deallocated; it holds no data any more"))),
        }
    }

    /// The host data, waiting (without the GIL) for a non-blocking read to land first.
    pub fn host_data(&self, py: Python<'_>, what: &str) -> PyResult<Arc<HostStorage>> {
        let pending = match &*self.lock() {
            Storage::Host(h) => return Ok(h.clone()),
            Storage::Pending(p) => p.clone(),
            Storage::Device { .. } => {
                return Err(invalid(format!("{what} is a device tensor; bring it to the host with .cpu() first")));
            }
            Storage::Deallocated => {
                return Err(invalid_state(format!("{what} was deallocated; it holds no data any more")));
            }
        };
        let data = released(py, || pending.wait()).map_err(|(kind, msg)| new_err(kind, msg))?;
        let mut st = self.lock();
        if matches!(&*st, Storage::Pending(p) if Arc::ptr_eq(p, &pending)) {
            *st = Storage::Host(data.clone());
        }
        Ok(data)
    }

    /// This host tensor as `layout` and `dtype` (`to_layout` on the host): host data is dense row-major whatever
    /// the layout, so the new tensor shares this one's memory unless the element type changes, when it is
    /// converted (float32 to bfloat16 rounds to nearest even; the other way is exact).
    pub fn host_as(&self, py: Python<'_>, layout: Layout, dtype: DataType) -> PyResult<Tensor> {
        let data = self.host_data(py, "the tensor")?;
        let data = match (self.dtype, dtype) {
            (a, b) if a == b => data,
            (from, to) => {
                let mut out = HostBytes::zeroed(self.shape.volume() as usize * to.size());
                // SAFETY: the data has arrived (host_data waited) and nobody writes it while we convert (borrowed
                // arrays: the user does not write them during the call, as for every read of them).
                let src = unsafe { data.bytes() };
                match from {
                    DataType::Float32 => f32_to_bf16_bytes(src, out.as_mut_slice()),
                    DataType::BFloat16 => bf16_to_f32_bytes(src, out.as_mut_slice()),
                }
                Arc::new(HostStorage::Owned(out))
            }
        };
        Ok(Tensor { shape: self.shape, dtype, layout, state: Mutex::new(Storage::Host(data)) })
    }

    /// Bytes of the dense host form.
    pub fn host_bytes(&self) -> usize {
        self.shape.volume() as usize * self.dtype.size()
    }

    /// The device tensor's memory config.
    fn mem_config(&self, py: Python<'_>) -> PyResult<MemoryConfig> {
        let d = self.device_buffer(py, "the tensor")?;
        Ok(MemoryConfig::from_dev(d.buf.spec().mem))
    }
}

static ASARRAY: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn numpy_attr<'py>(py: Python<'py>, cell: &'static PyOnceLock<Py<PyAny>>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    Ok(cell.get_or_try_init(py, || py.import("numpy")?.getattr(name).map(Bound::unbind))?.bind(py).clone())
}

/// Writes `src` (dense host data of `buf`'s size) into `buf` on `cq`, without the GIL (the copy into the ring
/// may be long, and a full ring makes the driver wait for the device).
pub fn write_host(py: Python<'_>, buf: &Buffer, cq: u16, src: &HostStorage) -> PyResult<()> {
    let p = SendPtr(src.ptr() as *mut u8);
    let len = src.len();
    if len as u64 != buf.spec().host_bytes() {
        return Err(invalid(format!("host data of {len} bytes for device buffer {}", buf.spec())));
    }
    // SAFETY: `src` is alive for the whole call (borrowed by the caller) and holds `len` bytes, the buffer's host
    // size (checked above); the driver only reads it.
    released(py, move || unsafe { buf.write_raw(cq, p.get(), false) }).py_err()
}

#[pymethods]
impl Tensor {
    /// The shape as given (1 to 4 dimensions).
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.shape.py_tuple(py)
    }

    /// ttnn's padded shape: for `TILE_LAYOUT` the last two dimensions rounded up to multiples of 32, else the
    /// shape. Host data and `shape` are always the logical (unpadded) shape; docs/python.md says how the device
    /// pads.
    #[getter]
    fn padded_shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, padded_dims(&self.shape, self.layout))
    }

    /// The element type.
    #[getter]
    fn dtype(&self) -> DataType {
        self.dtype
    }

    /// The element arrangement.
    #[getter]
    fn layout(&self) -> Layout {
        self.layout
    }

    /// Elements.
    fn volume(&self) -> u64 {
        self.shape.volume()
    }

    /// The memory config of a device tensor.
    fn memory_config(&self, py: Python<'_>) -> PyResult<MemoryConfig> {
        self.mem_config(py)
    }

    /// The device of a device tensor; None for a host tensor.
    fn device(&self, py: Python<'_>) -> Option<Py<Device>> {
        match &*self.lock() {
            Storage::Device { device, .. } => Some(device.clone_ref(py)),
            _ => None,
        }
    }

    /// "DEVICE", "HOST" or "DEALLOCATED".
    fn storage_type(&self) -> &'static str {
        match &*self.lock() {
            Storage::Device { .. } => "DEVICE",
            Storage::Host(_) | Storage::Pending(_) => "HOST",
            Storage::Deallocated => "DEALLOCATED",
        }
    }

    /// Whether the tensor holds data (it was not deallocated).
    fn is_allocated(&self) -> bool {
        !matches!(&*self.lock(), Storage::Deallocated)
    }

    /// Whether a device tensor is sharded.
    fn is_sharded(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.mem_config(py)?.dev.shard.is_some())
    }

    /// The device address of a device tensor: the same offset in every bank or core it uses
    /// (`Tensor.buffer_address()`).
    fn buffer_address(&self, py: Python<'_>) -> PyResult<u64> {
        Ok(self.device_buffer(py, "the tensor")?.buf.address())
    }

    /// Copies a host tensor to `device` with `mem_config` (default DRAM interleaved) on queue `cq_id` and returns
    /// the device tensor (`Tensor.to`). `memory_config=` is accepted as another name for `mem_config`. A device
    /// tensor already on `device` is returned as it is when no other memory config is asked for.
    #[pyo3(signature = (device, mem_config = None, cq_id = 0, *, memory_config = None))]
    fn to(
        slf: &Bound<'_, Self>,
        device: &Bound<'_, Device>,
        mem_config: Option<MemoryConfig>,
        cq_id: i64,
        memory_config: Option<MemoryConfig>,
    ) -> PyResult<Py<Tensor>> {
        let py = slf.py();
        let mem = match (mem_config, memory_config) {
            (Some(_), Some(_)) => return Err(invalid("Tensor.to: give mem_config or memory_config, not both")),
            (m, None) | (None, m) => m,
        };
        let this = slf.get();
        if let Storage::Device { buf, device: d } = &*this.lock() {
            if !d.bind(py).is(device) {
                return Err(invalid("Tensor.to: the tensor is on another device; bring it to the host first"));
            }
            if mem.as_ref().is_none_or(|m| m.dev == buf.spec().mem) {
                return Ok(slf.clone().unbind());
            }
        }
        if matches!(&*this.lock(), Storage::Device { .. }) {
            let mem = mem.expect("checked above");
            return crate::ops::copy_to(py, this, Some(mem.dev), None, None, None, cq_id);
        }
        let mem = mem.unwrap_or_else(|| MemoryConfig::from_dev(ttdrv::MemoryConfig::DRAM));
        let data = this.host_data(py, "the tensor")?;
        let d = device.get();
        let q = d.queue(cq_id)?;
        let spec = buffer_spec(&this.shape, this.dtype, this.layout, &mem)?;
        let buf = d.dev.allocate(&spec);
        crate::logging::flush(py);
        let buf = buf.py_err()?;
        write_host(py, &buf, q, &data)?;
        Py::new(py, Tensor::on_device(this.shape, this.dtype, buf, device.clone().unbind()))
    }

    /// Copies a device tensor to the host on queue `cq_id` (`Tensor.cpu`). With `blocking=True` waits (without
    /// the GIL) for the data. With `blocking=False` returns at once a host tensor that owns its memory; the data
    /// lands there when the read completes, and `to_numpy()` (or the buffer protocol) waits for it first. A host
    /// tensor is returned as it is.
    #[pyo3(signature = (blocking = true, cq_id = 0))]
    fn cpu(slf: &Bound<'_, Self>, blocking: bool, cq_id: i64) -> PyResult<Py<Tensor>> {
        let py = slf.py();
        let this = slf.get();
        let d = match this.device_buffer(py, "the tensor") {
            Ok(d) => d,
            Err(_) if !matches!(&*this.lock(), Storage::Device { .. } | Storage::Deallocated) => {
                return Ok(slf.clone().unbind());
            }
            Err(e) => return Err(e),
        };
        let q = d.device.get().queue(cq_id)?;
        let state = if blocking {
            let mut bytes = HostBytes::zeroed(d.buf.spec().host_bytes() as usize);
            let out = bytes.as_mut_slice();
            released(py, || d.buf.read(q, out)).py_err()?;
            Storage::Host(Arc::new(HostStorage::Owned(bytes)))
        } else {
            Storage::Pending(Arc::new(reads::start(&d.buf, q).py_err()?))
        };
        Py::new(py, Tensor { shape: this.shape, dtype: this.dtype, layout: this.layout, state: Mutex::new(state) })
    }

    /// Whether the data of a host tensor has arrived (False while a non-blocking `cpu()` is in flight).
    fn is_ready(&self) -> PyResult<bool> {
        match &*self.lock() {
            Storage::Pending(p) => p.is_done().map_err(|(kind, msg)| new_err(kind, msg)),
            _ => Ok(true),
        }
    }

    /// Frees the tensor's device memory (or host data) now (`Tensor.deallocate`). Work already enqueued that uses
    /// it still runs first on its queue; on other queues, order reuse with events. ttdrv tensors never share a
    /// buffer, so `force` makes no difference; it is accepted for ttnn's signature.
    #[pyo3(signature = (force = false))]
    fn deallocate(&self, force: bool) {
        let _ = force;
        let old = std::mem::replace(&mut *self.lock(), Storage::Deallocated);
        drop(old);
    }

    /// The data as a numpy array (`Tensor.to_numpy`), of the tensor's shape: float32 for both element types
    /// (bfloat16 is widened exactly). A host tensor made by `from_numpy` returns its array as it is; one made by
    /// `cpu()` returns a view of its memory (no copy), after waiting (without the GIL) for a non-blocking read. A
    /// device tensor is read back first (blocking, queue 0).
    fn to_numpy<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if matches!(&*this.lock(), Storage::Device { .. }) {
            let host = Tensor::cpu(slf, true, 0)?;
            return Tensor::to_numpy(host.bind(py));
        }
        let data = this.host_data(py, "the tensor")?;
        match (this.dtype, &*data) {
            (DataType::Float32, HostStorage::Borrowed { object, .. }) => Ok(object.bind(py).clone()),
            (DataType::Float32, HostStorage::Owned(_)) => numpy_attr(py, &ASARRAY, "asarray")?.call1((slf,)),
            (DataType::BFloat16, _) => {
                let mut out = HostBytes::zeroed(this.shape.volume() as usize * 4);
                // SAFETY: the data has arrived (host_data waited) and nobody writes it while we convert.
                bf16_to_f32_bytes(unsafe { data.bytes() }, out.as_mut_slice());
                let t =
                    Py::new(py, Tensor::on_host(this.shape, DataType::Float32, this.layout, HostStorage::Owned(out)))?;
                numpy_attr(py, &ASARRAY, "asarray")?.call1((t,))
            }
        }
    }

    fn __repr__(&self) -> String {
        let where_ = match &*self.lock() {
            Storage::Host(_) => "host".to_string(),
            Storage::Pending(_) => "host, read in flight".to_string(),
            Storage::Device { buf, .. } => {
                let m = buf.spec().mem;
                format!("{} {:?} at {:#x}", m.buffer_type.name(), m.layout, buf.address())
            }
            Storage::Deallocated => "deallocated".to_string(),
        };
        format!(
            "Tensor(shape={:?}, dtype={}, layout={:?}, {where_})",
            self.shape.dims(),
            self.dtype.name(),
            self.layout
        )
    }

    /// `a @ b`: `ttdrv.matmul(a, b)`.
    fn __matmul__(slf: &Bound<'_, Self>, other: &Bound<'_, Tensor>) -> PyResult<Py<Tensor>> {
        crate::ops::matmul(slf, other, None, None, 0)
    }

    /// `a + b`: `ttdrv.add(a, b)`.
    fn __add__(slf: &Bound<'_, Self>, other: &Bound<'_, Tensor>) -> PyResult<Py<Tensor>> {
        crate::ops::add(slf, other, None, None, 0)
    }

    /// `a - b`: `ttdrv.sub(a, b)`.
    fn __sub__(slf: &Bound<'_, Self>, other: &Bound<'_, Tensor>) -> PyResult<Py<Tensor>> {
        crate::ops::sub(slf, other, None, None, 0)
    }

    /// `a * b`: `ttdrv.mul(a, b)` (b a tensor or a number).
    fn __mul__(slf: &Bound<'_, Self>, other: &Bound<'_, PyAny>) -> PyResult<Py<Tensor>> {
        crate::ops::mul(slf, other, None, None, 0)
    }

    /// DLPack export (`numpy.from_dlpack(t)`, `torch.from_dlpack(t)`): a host tensor's memory, shaped, no copy
    /// (with `copy=True`, a copy). float32 and bfloat16 (DLPack's `kDLBfloat`) on the CPU device. Waits for a
    /// non-blocking read first; a device tensor must be brought to the host with `cpu()`.
    #[pyo3(signature = (*, stream = None, max_version = None, dl_device = None, copy = None))]
    fn __dlpack__(
        &self,
        py: Python<'_>,
        stream: Option<&Bound<'_, PyAny>>,
        max_version: Option<&Bound<'_, PyAny>>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let _ = (stream, max_version);
        if let Some(d) = dl_device
            && d != (1, 0)
        {
            return Err(PyBufferError::new_err(format!("dl_device={d:?}: ttdrv host tensors are on the CPU, (1, 0)")));
        }
        let mut data = self.host_data(py, "the tensor").map_err(|e| PyBufferError::new_err(e.value(py).to_string()))?;
        if copy == Some(true) {
            let mut out = HostBytes::zeroed(data.len());
            // SAFETY: the data has arrived (host_data waited) and nobody writes it while we copy.
            out.as_mut_slice().copy_from_slice(unsafe { data.bytes() });
            data = Arc::new(HostStorage::Owned(out));
        }
        crate::dlpack::capsule(py, data, self.shape.dims(), self.dtype)
    }

    /// `(kDLCPU, 0)`: host tensors live in CPU memory.
    fn __dlpack_device__(&self) -> (i32, i32) {
        (1, 0)
    }

    /// The buffer protocol: a host tensor's memory, shaped, without a copy (float32 as `f`, bfloat16 bits as `H`).
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let data = this.host_data(py, "the tensor").map_err(|e| PyBufferError::new_err(e.value(py).to_string()))?;
        if flags & ffi::PyBUF_WRITABLE != 0 && data.readonly() {
            return Err(PyBufferError::new_err("the tensor's memory is read-only (its numpy array is)"));
        }
        let nd = this.shape.dims().len();
        let item = this.dtype.size();
        let mut meta: Box<[isize; 8]> = Box::new([0; 8]);
        for (i, &d) in this.shape.dims().iter().enumerate() {
            meta[i] = d as isize;
        }
        let mut stride = item as isize;
        for i in (0..nd).rev() {
            meta[4 + i] = stride;
            stride *= meta[i];
        }
        let format: &'static CStr = match this.dtype {
            DataType::Float32 => c"f",
            DataType::BFloat16 => c"H",
        };
        let internal = Box::new((data, meta));
        let ptr = internal.0.ptr();
        let readonly = internal.0.readonly();
        let meta_ptr = internal.1.as_ptr() as *mut isize;
        // SAFETY: `view` is the caller's Py_buffer to fill (the buffer protocol's contract). Every pointer stored in
        // it stays valid until __releasebuffer__: the data and the shape/strides array live in `internal`, leaked
        // into `view.internal` and freed there; the format is a static string; `obj` holds a reference to the
        // tensor.
        unsafe {
            (*view).buf = ptr as *mut c_void;
            (*view).len = this.host_bytes() as isize;
            (*view).readonly = readonly as c_int;
            (*view).itemsize = item as isize;
            (*view).format =
                if flags & ffi::PyBUF_FORMAT != 0 { format.as_ptr() as *mut _ } else { std::ptr::null_mut() };
            (*view).ndim = nd as c_int;
            (*view).shape = if flags & ffi::PyBUF_ND != 0 { meta_ptr } else { std::ptr::null_mut() };
            (*view).strides =
                if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES { meta_ptr.add(4) } else { std::ptr::null_mut() };
            (*view).suboffsets = std::ptr::null_mut();
            (*view).internal = Box::into_raw(internal) as *mut c_void;
            (*view).obj = slf.into_any().into_ptr();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&self, view: *mut ffi::Py_buffer) {
        // SAFETY: `internal` was made by __getbuffer__ from this Box type and is released exactly once, here.
        drop(unsafe { Box::from_raw((*view).internal as *mut (Arc<HostStorage>, Box<[isize; 8]>)) });
    }
}

/// A host tensor from a Python buffer (`from_numpy`, after the Python side made it C-contiguous): float32 arrays
/// for float32 tensors and uint16 arrays (bfloat16 bits) for bfloat16 tensors are used in place; float32 arrays for
/// bfloat16 tensors are converted into ttdrv's memory.
#[pyfunction]
#[pyo3(signature = (array, shape, dtype, layout))]
pub fn _host_tensor(
    array: &Bound<'_, PyAny>,
    shape: &Bound<'_, PyAny>,
    dtype: DataType,
    layout: Layout,
) -> PyResult<Tensor> {
    let shape = Shape::from_py(shape)?;
    let buffer = PyUntypedBuffer::get(array)?;
    if !buffer.is_c_contiguous() {
        return Err(invalid("the array is not C-contiguous; pass numpy.ascontiguousarray(array)"));
    }
    let format = buffer.format().to_bytes();
    let base = format.first().filter(|c| matches!(c, b'@' | b'=' | b'<')).map_or(format, |_| &format[1..]);
    let elements = shape.volume() as usize;
    let what = match (dtype, base, buffer.item_size()) {
        (DataType::Float32, b"f", 4) | (DataType::BFloat16, b"H", 2) => "in place",
        (DataType::BFloat16, b"f", 4) => "convert",
        _ => {
            return Err(invalid(format!(
                "an array of format {:?} cannot back a {} tensor: give float32 data (or, for bfloat16, uint16 \
                 bfloat16 bits)",
                String::from_utf8_lossy(format),
                dtype.name()
            )));
        }
    };
    if buffer.item_count() != elements {
        return Err(invalid(format!(
            "the array has {} elements, the shape {:?} needs {elements}",
            buffer.item_count(),
            shape.dims()
        )));
    }
    let data = if what == "in place" {
        HostStorage::Borrowed { buffer, object: array.clone().unbind() }
    } else {
        let mut out = HostBytes::zeroed(elements * 2);
        // SAFETY: the buffer holds `elements` float32 values (checked above) and stays pinned while `buffer` lives.
        let src = unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, elements * 4) };
        f32_to_bf16_bytes(src, out.as_mut_slice());
        HostStorage::Owned(out)
    };
    Ok(Tensor::on_host(shape, dtype, layout, data))
}

/// Allocates a device tensor without writing it (`ttnn.allocate_tensor_on_device`): its contents are undefined
/// until written. Allocation is first-fit from the bottom of the memory, so freeing a tensor and allocating one
/// of the same spec gives the same address when nothing else took it meanwhile (the guide's section 1.3.2
/// "Trace with Non-Persistent L1 Input" relies on that).
#[pyfunction]
#[pyo3(signature = (shape, dtype, layout, device, memory_config = None))]
pub fn allocate_tensor_on_device(
    py: Python<'_>,
    shape: &Bound<'_, PyAny>,
    dtype: DataType,
    layout: Layout,
    device: &Bound<'_, Device>,
    memory_config: Option<MemoryConfig>,
) -> PyResult<Tensor> {
    let shape = Shape::from_py(shape)?;
    let mem = memory_config.unwrap_or_else(|| MemoryConfig::from_dev(ttdrv::MemoryConfig::DRAM));
    let spec = buffer_spec(&shape, dtype, layout, &mem)?;
    let buf = device.get().dev.allocate(&spec);
    crate::logging::flush(py);
    Ok(Tensor::on_device(shape, dtype, buf.py_err()?, device.clone().unbind()))
}

/// Writes `host_tensor` into `device_tensor` on queue `cq_id` (`ttnn.copy_host_to_device_tensor`). The data is
/// read in place from the host tensor (or from a C-contiguous numpy array passed directly) and copied once, into
/// the command ring; it may be reused as soon as the call returns. Shapes (after folding) and dtypes must match.
#[pyfunction]
#[pyo3(signature = (host_tensor, device_tensor, cq_id = 0))]
pub fn copy_host_to_device_tensor(
    host_tensor: &Bound<'_, PyAny>,
    device_tensor: &Bound<'_, Tensor>,
    cq_id: i64,
) -> PyResult<()> {
    let py = host_tensor.py();
    let dst = device_tensor.get();
    let d = dst.device_buffer(py, "device_tensor")?;
    let q = d.device.get().queue(cq_id)?;
    let (data, shape, dtype) = match host_tensor.cast::<Tensor>() {
        Ok(t) => {
            let t = t.get();
            (t.host_data(py, "host_tensor")?, t.shape, t.dtype)
        }
        Err(_) => {
            let t = _host_tensor(host_tensor, dst.shape.py_tuple(py)?.as_any(), dst.dtype, dst.layout)?;
            let data = t.host_data(py, "host_tensor")?;
            (data, t.shape, t.dtype)
        }
    };
    if dtype != dst.dtype || shape.rows() != dst.shape.rows() || shape.cols() != dst.shape.cols() {
        return Err(invalid(format!(
            "copy_host_to_device_tensor: the host tensor is {:?} {}, the device tensor {:?} {}; they must have the \
             same shape and dtype",
            shape.dims(),
            dtype.name(),
            dst.shape.dims(),
            dst.dtype.name()
        )));
    }
    write_host(py, &d.buf, q, &data)
}

/// Brings a device tensor to the host as a numpy array (blocking), or converts a host tensor
/// (`ttnn.to_torch`'s numpy counterpart). See `Tensor.to_numpy`.
#[pyfunction]
#[pyo3(signature = (tensor))]
pub fn to_numpy<'py>(tensor: &Bound<'py, Tensor>) -> PyResult<Bound<'py, PyAny>> {
    Tensor::to_numpy(tensor)
}

/// Deallocates `tensor` (`ttnn.deallocate`; ttnn's default `force=True`). See `Tensor.deallocate`.
#[pyfunction]
#[pyo3(signature = (tensor, force = true))]
pub fn deallocate(tensor: &Bound<'_, Tensor>, force: bool) {
    tensor.get().deallocate(force)
}

impl Tensor {
    /// Takes the device buffer out of the tensor, which becomes deallocated (for calls that consume their input,
    /// as `MLP.__call__` does). `check` runs first; if it fails the tensor keeps its buffer.
    pub fn take_device_buffer(
        &self,
        what: &str,
        check: impl FnOnce(&Buffer) -> ttdrv::Result<()>,
    ) -> PyResult<Arc<Buffer>> {
        let mut st = self.lock();
        match &*st {
            Storage::Device { buf, .. } => check(buf).py_err()?,
            Storage::Host(_) | Storage::Pending(_) => {
                return Err(invalid(format!("{what} is a host tensor; move it to the device first")));
            }
            Storage::Deallocated => return Err(invalid_state(format!("{what} was deallocated"))),
        }
        match std::mem::replace(&mut *st, Storage::Deallocated) {
            Storage::Device { buf, .. } => Ok(buf),
            _ => unreachable!("matched above"),
        }
    }
}
