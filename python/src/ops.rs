//! The ops the device offers, as ttnn functions on tensors: matmul, add, sub, mul, relu, gelu, exp, fill, full,
//! typecast, to_memory_config and reshard. Each enqueues one program on queue `queue_id` (default 0) and returns
//! at once; the GIL is released while the driver enqueues (it may wait for room in the command ring).
//!
//! Output placement: `memory_config` if given; otherwise the first input's memory config when the output has the
//! first input's shape, else interleaved in the first input's kind of memory (DRAM or L1). With `output_tensor`
//! the op writes into that tensor (which keeps its address) and returns it.

use crate::device::{Device, released};
use crate::errors::{IntoPy, invalid};
use crate::tensor::{OnDevice, Tensor};
use crate::types::{DataType, Layout, MemoryConfig, Shape, buffer_spec};
use pyo3::prelude::*;
use ttdrv::BufferSpec;
use ttdrv::device::Buffer;
use ttdrv::device::ops::{BinaryOp, UnaryOp};

/// The default output memory config for an output of `shape` computed from `a`.
fn default_mem(a: &Buffer, a_shape: &Shape, shape: &Shape) -> ttdrv::MemoryConfig {
    let m = a.spec().mem;
    if shape.rows() == a_shape.rows() && shape.cols() == a_shape.cols() {
        m
    } else {
        ttdrv::MemoryConfig {
            buffer_type: m.buffer_type,
            layout: ttdrv::contract::kernel::Layout::Interleaved,
            shard: None,
        }
    }
}

/// The driver's memory config of an optional argument.
fn dev_mem(m: Option<&Bound<'_, MemoryConfig>>) -> Option<ttdrv::MemoryConfig> {
    m.map(|m| m.get().dev)
}

/// Runs `op` into `output_tensor`, or into a new tensor of `shape`/`dtype`/`layout` (default: the first input's)
/// placed by `mem`.
#[allow(clippy::too_many_arguments)]
fn run<'py, F>(
    py: Python<'py>,
    first: &OnDevice<'py>,
    first_shape: &Shape,
    shape: Shape,
    dtype: DataType,
    memory_config: Option<ttdrv::MemoryConfig>,
    output_tensor: Option<&Bound<'py, Tensor>>,
    layout: Option<Layout>,
    op: F,
) -> PyResult<Py<Tensor>>
where
    F: Send + FnOnce(&ttdrv::Device, &Buffer) -> ttdrv::Result<()>,
{
    let dev = &first.device.get().dev;
    if let Some(o) = output_tensor {
        let t = o.get();
        let out = t.device_buffer(py, "output_tensor")?;
        if t.shape.rows() != shape.rows() || t.shape.cols() != shape.cols() {
            return Err(invalid(format!(
                "output_tensor has shape {:?}, the op's output is {:?}",
                t.shape.dims(),
                shape.dims()
            )));
        }
        if let Some(m) = memory_config
            && m != out.buf.spec().mem
        {
            return Err(invalid(format!(
                "output_tensor is stored as {}, not as the memory config given ({}); pass the matching memory config \
                 or none",
                MemoryConfig::from_dev(out.buf.spec().mem).__repr__(),
                MemoryConfig::from_dev(m).__repr__()
            )));
        }
        released(py, move || op(dev, &out.buf)).py_err()?;
        return Ok(o.clone().unbind());
    }
    let mem = memory_config.unwrap_or_else(|| default_mem(&first.buf, first_shape, &shape));
    // A new output has the layout asked for, else the first input's, as in ttnn (a tiled model stays tiled).
    let layout = layout.map_or(first.buf.spec().layout, Layout::dev);
    let spec = BufferSpec::new(shape.rows(), shape.cols(), dtype.dev(), mem).with_layout(layout);
    let out = released(py, || {
        let out = dev.allocate(&spec)?;
        op(dev, &out)?;
        Ok(out)
    })
    .py_err()?;
    Py::new(py, Tensor::on_device(shape, dtype, out, first.device.clone().unbind()))
}

/// `input_tensor_a @ input_tensor_b` (`ttnn.matmul`): `[..., M, K] @ [K, N]` is `[..., M, N]` (a's leading
/// dimensions fold into rows; b's leading dimensions must be 1).
#[pyfunction]
#[pyo3(signature = (input_tensor_a, input_tensor_b, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn matmul(
    input_tensor_a: &Bound<'_, Tensor>,
    input_tensor_b: &Bound<'_, Tensor>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input_tensor_a.py();
    let (ta, tb) = (input_tensor_a.get(), input_tensor_b.get());
    let a = ta.device_buffer(py, "input_tensor_a")?;
    let b = tb.device_buffer(py, "input_tensor_b")?;
    let q = a.device.get().queue(queue_id)?;
    if tb.shape.rows() != ta.shape.cols() {
        return Err(invalid(format!(
            "matmul: {:?} @ {:?}: b must be [K, N] with K = a's last dimension ({}), its leading dimensions 1",
            ta.shape.dims(),
            tb.shape.dims(),
            ta.shape.cols()
        )));
    }
    let shape = ta.shape.with_cols(tb.shape.cols());
    let (ab, bb) = (a.buf.clone(), b.buf.clone());
    run(py, &a, &ta.shape, shape, ta.dtype, dev_mem(memory_config), output_tensor, None, move |d, out| {
        d.matmul_into(q, &ab, &bb, out)
    })
}

fn binary(
    op: BinaryOp,
    a: &Bound<'_, Tensor>,
    b: &Bound<'_, Tensor>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = a.py();
    let (ta, tb) = (a.get(), b.get());
    let da = ta.device_buffer(py, "input_tensor_a")?;
    let db = tb.device_buffer(py, "input_tensor_b")?;
    let q = da.device.get().queue(queue_id)?;
    let (ab, bb) = (da.buf.clone(), db.buf.clone());
    run(py, &da, &ta.shape, ta.shape, ta.dtype, dev_mem(memory_config), output_tensor, None, move |d, out| {
        d.binary_into(q, op, &ab, &bb, out)
    })
}

fn unary(
    op: UnaryOp,
    input: &Bound<'_, Tensor>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input.py();
    let t = input.get();
    let d = t.device_buffer(py, "input_tensor")?;
    let q = d.device.get().queue(queue_id)?;
    let ib = d.buf.clone();
    run(py, &d, &t.shape, t.shape, t.dtype, dev_mem(memory_config), output_tensor, None, move |dev, out| {
        dev.unary_into(q, op, &ib, out)
    })
}

/// Element-wise `input_tensor_a + input_tensor_b` (`ttnn.add`). b has a's shape, or is one row (`[..., 1, N]`
/// folding to one row) broadcast over a's rows.
#[pyfunction]
#[pyo3(signature = (input_tensor_a, input_tensor_b, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn add(
    input_tensor_a: &Bound<'_, Tensor>,
    input_tensor_b: &Bound<'_, Tensor>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    binary(BinaryOp::Add, input_tensor_a, input_tensor_b, memory_config, output_tensor, queue_id)
}

/// Element-wise `input_tensor_a - input_tensor_b` (`ttnn.sub`, also `ttnn.subtract`); b as for `add`.
#[pyfunction]
#[pyo3(signature = (input_tensor_a, input_tensor_b, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn sub(
    input_tensor_a: &Bound<'_, Tensor>,
    input_tensor_b: &Bound<'_, Tensor>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    binary(BinaryOp::Sub, input_tensor_a, input_tensor_b, memory_config, output_tensor, queue_id)
}

/// Element-wise `input_tensor_a * input_tensor_b` (`ttnn.mul`, also `ttnn.multiply`); b as for `add`, or a
/// number (a scale).
#[pyfunction]
#[pyo3(signature = (input_tensor_a, input_tensor_b, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn mul(
    input_tensor_a: &Bound<'_, Tensor>,
    input_tensor_b: &Bound<'_, PyAny>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    match input_tensor_b.cast::<Tensor>() {
        Ok(b) => binary(BinaryOp::Mul, input_tensor_a, b, memory_config, output_tensor, queue_id),
        Err(_) => {
            let f: f32 = input_tensor_b
                .extract()
                .map_err(|_| invalid("mul: input_tensor_b must be a tensor or a number (a scale factor)"))?;
            unary(UnaryOp::Scale(f), input_tensor_a, memory_config, output_tensor, queue_id)
        }
    }
}

/// Element-wise `max(x, 0)` (`ttnn.relu`).
#[pyfunction]
#[pyo3(signature = (input_tensor, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn relu(
    input_tensor: &Bound<'_, Tensor>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    unary(UnaryOp::Relu, input_tensor, memory_config, output_tensor, queue_id)
}

/// Element-wise GELU (`ttnn.gelu`). The device computes the tanh approximation in both modes;
/// `fast_and_approximate_mode` is accepted for ttnn's signature.
#[pyfunction]
#[pyo3(signature = (input_tensor, *, fast_and_approximate_mode = true, memory_config = None, output_tensor = None,
    queue_id = 0))]
pub fn gelu(
    input_tensor: &Bound<'_, Tensor>,
    fast_and_approximate_mode: bool,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let _ = fast_and_approximate_mode;
    unary(UnaryOp::Gelu, input_tensor, memory_config, output_tensor, queue_id)
}

/// Element-wise `e^x` (`ttnn.exp`); `fast_and_approximate_mode` is accepted for ttnn's signature.
#[pyfunction]
#[pyo3(signature = (input_tensor, *, fast_and_approximate_mode = false, memory_config = None, output_tensor = None,
    queue_id = 0))]
pub fn exp(
    input_tensor: &Bound<'_, Tensor>,
    fast_and_approximate_mode: bool,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let _ = fast_and_approximate_mode;
    unary(UnaryOp::Exp, input_tensor, memory_config, output_tensor, queue_id)
}

/// A tensor of `input_tensor`'s shape and dtype filled with `fill_value` (`ttnn.fill`); with `output_tensor`,
/// fills that tensor.
#[pyfunction]
#[pyo3(signature = (input_tensor, fill_value, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn fill(
    input_tensor: &Bound<'_, Tensor>,
    fill_value: f32,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input_tensor.py();
    let t = input_tensor.get();
    let d = t.device_buffer(py, "input_tensor")?;
    let q = d.device.get().queue(queue_id)?;
    run(py, &d, &t.shape, t.shape, t.dtype, dev_mem(memory_config), output_tensor, None, move |dev, out| {
        dev.fill(q, out, fill_value)
    })
}

/// A new device tensor of `shape` filled with `fill_value` (`ttnn.full` with a device), computed on the device.
#[pyfunction]
#[pyo3(signature = (shape, fill_value, dtype = DataType::Float32, layout = Layout::RowMajor, device = None,
    memory_config = None, *, queue_id = 0))]
#[allow(clippy::too_many_arguments)]
pub fn _full_on_device(
    py: Python<'_>,
    shape: &Bound<'_, PyAny>,
    fill_value: f32,
    dtype: DataType,
    layout: Layout,
    device: Option<&Bound<'_, Device>>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    queue_id: i64,
) -> PyResult<Tensor> {
    let Some(device) = device else {
        return Err(invalid("full on the device needs device="));
    };
    let shape = Shape::from_py(shape)?;
    let mem = memory_config.map_or_else(|| MemoryConfig::from_dev(ttdrv::MemoryConfig::DRAM), |m| m.get().clone());
    let spec = buffer_spec(&shape, dtype, layout, &mem)?;
    let d = device.get();
    let q = d.queue(queue_id)?;
    let out = released(py, || {
        let out = d.dev.allocate(&spec)?;
        d.dev.fill(q, &out, fill_value)?;
        Ok(out)
    })
    .py_err()?;
    Ok(Tensor::on_device(shape, dtype, out, device.clone().unbind()))
}

/// Copies `input` into a new tensor (memory config `mem`, default the input's; dtype `dtype`) or into `output`
/// (whose memory config must be `mem` when given); with `layout`, a new tensor has that tensor layout (default the
/// input's). The copy kernel converts dtypes and tilizes or untilizes.
pub fn copy_to(
    py: Python<'_>,
    input: &Tensor,
    mem: Option<ttdrv::MemoryConfig>,
    dtype: Option<DataType>,
    output: Option<&Bound<'_, Tensor>>,
    layout: Option<Layout>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let d = input.device_buffer(py, "input_tensor")?;
    let q = d.device.get().queue(queue_id)?;
    let ib = d.buf.clone();
    let mem = match (mem, output) {
        (Some(m), _) => Some(m),
        (None, Some(_)) => None,
        (None, None) => Some(d.buf.spec().mem),
    };
    let dtype = match (dtype, output) {
        (Some(t), _) => t,
        (None, Some(o)) => o.get().dtype,
        (None, None) => input.dtype,
    };
    run(py, &d, &input.shape, input.shape, dtype, mem, output, layout, move |dev, out| dev.reshard_into(q, &ib, out))
}

/// Converts `tensor` to `layout` (`ttnn.to_layout`): `TILE_LAYOUT` tilizes, `ROW_MAJOR_LAYOUT` untilizes; with
/// `dtype`, also converts the element type; with `memory_config`, places the result there (default: the input's).
/// A device tensor is converted on the device by the copy kernel (docs/device-interface.md §8.2) into a new tensor;
/// a host tensor keeps its dense row-major data (the transfer to the device tilizes), so it comes back with the new
/// layout sharing the same memory, or converted when `dtype` differs. The shape stays the logical one; padding to
/// whole tiles happens on the device and is zero (`pad_value` must be 0). `sub_core_grids` must be None.
#[pyfunction]
#[pyo3(signature = (tensor, layout, dtype = None, memory_config = None, sub_core_grids = None, pad_value = 0.0,
    *, queue_id = 0))]
#[allow(clippy::too_many_arguments)]
pub fn to_layout(
    tensor: &Bound<'_, Tensor>,
    layout: Layout,
    dtype: Option<DataType>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    sub_core_grids: Option<&Bound<'_, PyAny>>,
    pad_value: f32,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = tensor.py();
    if sub_core_grids.is_some_and(|g| !g.is_none()) {
        return Err(invalid(
            "to_layout: sub_core_grids is not supported: the driver splits the work over the whole grid (or the \
             output's shard grid); pass None",
        ));
    }
    if pad_value != 0.0 {
        return Err(invalid(format!(
            "to_layout: pad_value={pad_value}: the device pads tiles with zeros (docs/device-interface.md §8.3.2); \
             pass 0.0. Padding is never visible through the tensor's data"
        )));
    }
    let t = tensor.get();
    if t.device_buffer(py, "tensor").is_ok() {
        return copy_to(py, t, dev_mem(memory_config), dtype, None, Some(layout), queue_id);
    }
    if memory_config.is_some() {
        return Err(invalid(
            "to_layout: memory_config applies to device tensors; this one is on the host. Move it with \
             .to(device, memory_config) (which tilizes a TILE_LAYOUT tensor on the way)",
        ));
    }
    Py::new(py, t.host_as(py, layout, dtype.unwrap_or(t.dtype))?)
}

/// Copies `tensor` into memory config `memory_config` (`ttnn.to_memory_config`): any layout to any layout,
/// interleaved or sharded, DRAM or L1; with `dtype`, converts; with `output_tensor`, writes into it in place.
#[pyfunction]
#[pyo3(signature = (tensor, memory_config, dtype = None, output_tensor = None, *, queue_id = 0))]
pub fn to_memory_config(
    tensor: &Bound<'_, Tensor>,
    memory_config: &Bound<'_, MemoryConfig>,
    dtype: Option<DataType>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    copy_to(tensor.py(), tensor.get(), Some(memory_config.get().dev), dtype, output_tensor, None, queue_id)
}

/// Reshards `input_tensor` into `output_memory_config` (`ttnn.reshard`). With `output_tensor` (stored with that
/// memory config) the data is written into it in place — it keeps its address, which is how the guide feeds a
/// trace's input — and it is returned.
#[pyfunction]
#[pyo3(signature = (input_tensor, output_memory_config, output_tensor = None, *, queue_id = 0))]
pub fn reshard(
    input_tensor: &Bound<'_, Tensor>,
    output_memory_config: &Bound<'_, MemoryConfig>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    copy_to(
        input_tensor.py(),
        input_tensor.get(),
        Some(output_memory_config.get().dev),
        None,
        output_tensor,
        None,
        queue_id,
    )
}

/// Converts `input_tensor` to `dtype` (`ttnn.typecast`): float32 to bfloat16 rounds to nearest even, bfloat16 to
/// float32 is exact.
#[pyfunction]
#[pyo3(signature = (input_tensor, dtype, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn typecast(
    input_tensor: &Bound<'_, Tensor>,
    dtype: DataType,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    copy_to(input_tensor.py(), input_tensor.get(), dev_mem(memory_config), Some(dtype), output_tensor, None, queue_id)
}
