//! The driver's MLP model (`ttdrv::device::model::Mlp`): matmul + bias (+ relu) layers whose weights live on the
//! device, run as one call. (The guide's examples build their `run_model` from the package's ops instead; this is
//! the driver's own model, for comparison and for programs that want one call per run.)

use crate::device::{Device, released};
use crate::errors::{IntoPy, invalid};
use crate::tensor::Tensor;
use crate::types::{DataType, MemoryConfig, Shape};
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use ttdrv::device::model::{Mlp as DevMlp, MlpConfig};

/// An MLP on a device: `y = relu(x W_i + b_i)` for the hidden layers and `x W + b` for the last (relu too with
/// `relu_last=True`). `weights[i]` is a float32 array `[dims[i], dims[i+1]]`, `biases[i]` has `dims[i+1]` values;
/// they are uploaded when the model is made.
#[pyclass(frozen, name = "MLP", module = "ttdrv")]
pub struct Mlp {
    mlp: DevMlp,
    device: Py<Device>,
    batch: u32,
    dtype: DataType,
}

fn floats(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let b = PyBuffer::<f32>::get(obj).map_err(|e| invalid(format!("{what}: give a float32 numpy array ({e})")))?;
    Ok((b.to_vec(obj.py())?, b.shape().to_vec()))
}

#[pymethods]
impl Mlp {
    #[new]
    #[pyo3(signature = (device, weights, biases, *, batch, dtype = DataType::Float32, weights_memory_config = None,
        activation_memory_config = None, output_memory_config = None, relu_last = false, cq_id = 0))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        device: &Bound<'_, Device>,
        weights: Vec<Bound<'_, PyAny>>,
        biases: Vec<Bound<'_, PyAny>>,
        batch: u32,
        dtype: DataType,
        weights_memory_config: Option<MemoryConfig>,
        activation_memory_config: Option<MemoryConfig>,
        output_memory_config: Option<MemoryConfig>,
        relu_last: bool,
        cq_id: i64,
    ) -> PyResult<Mlp> {
        let d = device.get();
        let q = d.queue(cq_id)?;
        let mut ws = Vec::new();
        let mut bs = Vec::new();
        let mut dims = Vec::new();
        for (i, (w, b)) in weights.iter().zip(&biases).enumerate() {
            let (wv, ws_shape) = floats(w, &format!("weights[{i}]"))?;
            let [k, m] = ws_shape[..] else {
                return Err(invalid(format!("weights[{i}] has shape {ws_shape:?}; give a 2-D array [in, out]")));
            };
            if i == 0 {
                dims.push(k as u32);
            }
            dims.push(m as u32);
            ws.push(wv);
            bs.push(floats(b, &format!("biases[{i}]"))?.0);
        }
        if weights.len() != biases.len() {
            return Err(invalid(format!("{} weight arrays but {} bias arrays", weights.len(), biases.len())));
        }
        let l1 = MemoryConfig::from_dev(ttdrv::MemoryConfig::L1);
        let cfg = MlpConfig {
            batch,
            dims,
            dtype: dtype.dev(),
            weights_mem: weights_memory_config.map_or(ttdrv::MemoryConfig::DRAM, |m| m.dev),
            act_mem: activation_memory_config.unwrap_or_else(|| l1.clone()).dev,
            out_mem: output_memory_config.unwrap_or(l1).dev,
            relu_last,
        };
        let wr: Vec<&[f32]> = ws.iter().map(Vec::as_slice).collect();
        let br: Vec<&[f32]> = bs.iter().map(Vec::as_slice).collect();
        let mlp = released(py, || d.dev.mlp(q, &cfg, &wr, &br)).py_err()?;
        Ok(Mlp { mlp, device: device.clone().unbind(), batch, dtype })
    }

    /// Runs the model on `input_tensor` (`[batch, dims[0]]`, any memory config) on queue `queue_id` and returns
    /// the output (`[batch, dims[-1]]`). Like a ttnn model it consumes its input: the input tensor is deallocated.
    #[pyo3(signature = (input_tensor, *, queue_id = 0))]
    fn __call__(&self, py: Python<'_>, input_tensor: &Bound<'_, Tensor>, queue_id: i64) -> PyResult<Tensor> {
        let q = self.device.get().queue(queue_id)?;
        let buf = input_tensor.get().take_device_buffer("input_tensor", |b| self.mlp.check_input(q, b))?;
        let out = released(py, || self.mlp.run_shared(q, buf)).py_err()?;
        let shape = Shape::matrix(self.batch, *self.mlp.config().dims.last().unwrap_or(&1));
        Ok(Tensor::on_device(shape, self.dtype, out, self.device.clone_ref(py)))
    }

    /// Layer widths: inputs, then each layer's outputs.
    #[getter]
    fn dims(&self) -> Vec<u32> {
        self.mlp.config().dims.clone()
    }

    /// Ops one run dispatches.
    #[getter]
    fn ops_per_run(&self) -> usize {
        self.mlp.ops_per_run()
    }
}
