//! The transformer ops (device contract §8.2, since 1.3) as ttnn-style functions: `layer_norm`, `softmax`,
//! `attention_softmax`, `linear`, `embedding`, `attention_scores`, `attention_context` and `mean_pool`. Each
//! enqueues one program on queue `queue_id` (default 0) and returns at once, with the GIL released while the driver
//! enqueues; outputs are placed as for the other ops (`memory_config`, else the first input's when the shape is
//! its, else interleaved in its memory), or written into `output_tensor`.
//!
//! Tensors are 2-D on the device (every dimension but the last folded into rows), so attention works on
//! `[batch × seq, heads × head_dim]` activations whose heads the device reads and writes in place, and on scores
//! stacked as `[batch × heads × seq, seq]`; `batch` and `num_heads` say how to cut them.

use crate::errors::invalid;
use crate::ops::run;
use crate::tensor::Tensor;
use crate::types::{MemoryConfig, Shape};
use pyo3::prelude::*;
use ttdrv::device::nn::{Activation, Bmm};

fn dev_mem(m: Option<&Bound<'_, MemoryConfig>>) -> Option<ttdrv::MemoryConfig> {
    m.map(|m| m.get().dev)
}

/// Registers the functions on the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(layer_norm, m)?)?;
    m.add_function(wrap_pyfunction!(softmax, m)?)?;
    m.add_function(wrap_pyfunction!(attention_softmax, m)?)?;
    m.add_function(wrap_pyfunction!(linear, m)?)?;
    m.add_function(wrap_pyfunction!(embedding, m)?)?;
    m.add_function(wrap_pyfunction!(attention_scores, m)?)?;
    m.add_function(wrap_pyfunction!(attention_context, m)?)?;
    m.add_function(wrap_pyfunction!(mean_pool, m)?)?;
    Ok(())
}

/// Layer normalization over the last dimension (`ttnn.layer_norm`): `(x − mean) / √(var + epsilon) × weight +
/// bias`, of `input_tensor + residual_input_tensor` when a residual is given; `weight` and `bias` are one row
/// (`[hidden]` or `[1, hidden]`).
#[pyfunction]
#[pyo3(signature = (input_tensor, *, weight, bias, epsilon = 1e-12, residual_input_tensor = None,
    memory_config = None, output_tensor = None, queue_id = 0))]
#[allow(clippy::too_many_arguments)]
pub fn layer_norm(
    input_tensor: &Bound<'_, Tensor>,
    weight: &Bound<'_, Tensor>,
    bias: &Bound<'_, Tensor>,
    epsilon: f32,
    residual_input_tensor: Option<&Bound<'_, Tensor>>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input_tensor.py();
    let t = input_tensor.get();
    let x = t.device_buffer(py, "input_tensor")?;
    let g = weight.get().device_buffer(py, "weight")?.buf;
    let b = bias.get().device_buffer(py, "bias")?.buf;
    let r =
        residual_input_tensor.map(|r| r.get().device_buffer(py, "residual_input_tensor")).transpose()?.map(|r| r.buf);
    let q = x.device.get().queue(queue_id)?;
    let xb = x.buf.clone();
    run(py, &x, &t.shape, t.shape, t.dtype, dev_mem(memory_config), output_tensor, None, move |d, out| {
        d.layer_norm_into(q, &xb, r.as_deref(), &g, &b, epsilon, out)
    })
}

/// Softmax over the last dimension (`ttnn.softmax`); `dim` must be -1 (or the last dimension's index).
#[pyfunction]
#[pyo3(signature = (input_tensor, dim = -1, *, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn softmax(
    input_tensor: &Bound<'_, Tensor>,
    dim: i64,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let nd = input_tensor.get().shape.dims().len() as i64;
    if dim != -1 && dim != nd - 1 {
        return Err(invalid(format!(
            "softmax over dimension {dim}: the device reduces over the last dimension only (dim=-1); transpose first"
        )));
    }
    softmax_impl(input_tensor, None, 1.0, memory_config, output_tensor, queue_id)
}

/// Attention's softmax (ttnn's `transformer.attention_softmax`): `softmax(scale × input_tensor + attention_mask)`
/// over the last dimension. `attention_mask` has the scores' last dimension and one row per group of rows: for
/// scores stacked as `[batch × heads × seq, seq]`, a `[batch, seq]` mask of 0 (attend) and a large negative number
/// (padding), each row applying to its sentence's `heads × seq` rows.
#[pyfunction]
#[pyo3(signature = (input_tensor, *, attention_mask = None, scale = 1.0, memory_config = None, output_tensor = None,
    queue_id = 0))]
pub fn attention_softmax(
    input_tensor: &Bound<'_, Tensor>,
    attention_mask: Option<&Bound<'_, Tensor>>,
    scale: f32,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    softmax_impl(input_tensor, attention_mask, scale, memory_config, output_tensor, queue_id)
}

fn softmax_impl(
    input_tensor: &Bound<'_, Tensor>,
    mask: Option<&Bound<'_, Tensor>>,
    scale: f32,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input_tensor.py();
    let t = input_tensor.get();
    let x = t.device_buffer(py, "input_tensor")?;
    let m = mask.map(|m| m.get().device_buffer(py, "attention_mask")).transpose()?.map(|m| m.buf);
    let q = x.device.get().queue(queue_id)?;
    let xb = x.buf.clone();
    run(py, &x, &t.shape, t.shape, t.dtype, dev_mem(memory_config), output_tensor, None, move |d, out| {
        d.softmax_into(q, &xb, m.as_deref(), scale, out)
    })
}

/// `input_tensor_a @ input_tensor_b + bias` (`ttnn.linear`): `[..., M, K] @ [K, N]` is `[..., M, N]`; `bias` is
/// one row (`[N]` or `[1, N]`); `activation` None or `"gelu"` (the erf form BERT uses), applied on the device in
/// the same pass.
#[pyfunction]
#[pyo3(signature = (input_tensor_a, input_tensor_b, *, bias = None, activation = None, memory_config = None,
    output_tensor = None, queue_id = 0))]
#[allow(clippy::too_many_arguments)]
pub fn linear(
    input_tensor_a: &Bound<'_, Tensor>,
    input_tensor_b: &Bound<'_, Tensor>,
    bias: Option<&Bound<'_, Tensor>>,
    activation: Option<&str>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input_tensor_a.py();
    let (ta, tb) = (input_tensor_a.get(), input_tensor_b.get());
    let a = ta.device_buffer(py, "input_tensor_a")?;
    let b = tb.device_buffer(py, "input_tensor_b")?.buf;
    let bias = bias.map(|b| b.get().device_buffer(py, "bias")).transpose()?.map(|b| b.buf);
    let act = match activation {
        None => Activation::None,
        Some("gelu") => Activation::GeluErf,
        Some(other) => {
            return Err(invalid(format!("linear: activation {other:?} is not supported; pass None or \"gelu\"")));
        }
    };
    if tb.shape.rows() != ta.shape.cols() {
        return Err(invalid(format!(
            "linear: {:?} @ {:?}: b must be [K, N] with K = a's last dimension ({})",
            ta.shape.dims(),
            tb.shape.dims(),
            ta.shape.cols()
        )));
    }
    let shape = ta.shape.with_cols(tb.shape.cols());
    let q = a.device.get().queue(queue_id)?;
    let ab = a.buf.clone();
    run(py, &a, &ta.shape, shape, ta.dtype, dev_mem(memory_config), output_tensor, None, move |d, out| {
        d.linear_into(q, &ab, &b, bias.as_deref(), act, out)
    })
}

/// Embedding lookup (`ttnn.embedding`): row `r` of the output is `weight[ids[r][0]]`, plus
/// `position_weight[ids[r][1]]` and `token_type_weight[ids[r][2]]` when given — BERT's three embeddings summed in
/// one pass. `input_tensor` holds the ids as numbers (float32 holds every index below 2^24 exactly), one row per
/// token and one column per table; the output is `[tokens, hidden]` of the tables' dtype. An id outside its table
/// makes the device fault (`DeviceFaultError`, after which the device is reset and its tensors lost).
#[pyfunction]
#[pyo3(signature = (input_tensor, weight, *, position_weight = None, token_type_weight = None, memory_config = None,
    output_tensor = None, queue_id = 0))]
#[allow(clippy::too_many_arguments)]
pub fn embedding(
    input_tensor: &Bound<'_, Tensor>,
    weight: &Bound<'_, Tensor>,
    position_weight: Option<&Bound<'_, Tensor>>,
    token_type_weight: Option<&Bound<'_, Tensor>>,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input_tensor.py();
    let ti = input_tensor.get();
    let ids = ti.device_buffer(py, "input_tensor")?;
    let tw = weight.get();
    let mut tables = vec![tw.device_buffer(py, "weight")?.buf];
    match (position_weight, token_type_weight) {
        (None, Some(_)) => {
            return Err(invalid("embedding: token_type_weight needs position_weight (ids columns 0, 1, 2)"));
        }
        (p, t) => {
            for (w, name) in [(p, "position_weight"), (t, "token_type_weight")] {
                if let Some(w) = w {
                    tables.push(w.get().device_buffer(py, name)?.buf);
                }
            }
        }
    }
    let shape = Shape::matrix(ti.shape.rows(), tw.shape.cols());
    let q = ids.device.get().queue(queue_id)?;
    let ib = ids.buf.clone();
    let mem = dev_mem(memory_config).or(Some(tables[0].spec().mem));
    run(py, &ids, &ti.shape, shape, tw.dtype, mem, output_tensor, None, move |d, out| {
        let refs: Vec<&ttdrv::Buffer> = tables.iter().map(|t| &**t).collect();
        d.embedding_into(q, &ib, &refs, out)
    })
}

/// Attention scores `scale × Q_z @ K_zᵀ` for every sentence and head: `query` and `key` are `[batch × seq, heads ×
/// head_dim]` (the heads read in place, no split), the result `[batch × heads × seq, seq]`, one score matrix per
/// (sentence, head) stacked in rows.
#[pyfunction]
#[pyo3(signature = (query, key, *, batch, num_heads, scale, memory_config = None, output_tensor = None,
    queue_id = 0))]
#[allow(clippy::too_many_arguments)]
pub fn attention_scores(
    query: &Bound<'_, Tensor>,
    key: &Bound<'_, Tensor>,
    batch: u32,
    num_heads: u32,
    scale: f32,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let tq = query.get();
    if batch == 0 || num_heads == 0 || tq.shape.rows() % batch != 0 {
        return Err(invalid(format!(
            "attention_scores: query {:?} does not hold {batch} sentences of equal length with {num_heads} heads",
            tq.shape.dims()
        )));
    }
    let seq = tq.shape.rows() / batch;
    let shape = Shape::matrix(batch * num_heads * seq, seq);
    bmm(query, key, Bmm::attention_scores(batch, num_heads, scale), shape, memory_config, output_tensor, queue_id)
}

/// Attention context `P_z @ V_z` for every sentence and head: `probs` is `[batch × heads × seq, seq]` (as
/// `attention_scores` returns, after the softmax), `value` `[batch × seq, heads × head_dim]`; the result has
/// `value`'s shape, the heads merged in place (no concatenate).
#[pyfunction]
#[pyo3(signature = (probs, value, *, batch, num_heads, memory_config = None, output_tensor = None, queue_id = 0))]
pub fn attention_context(
    probs: &Bound<'_, Tensor>,
    value: &Bound<'_, Tensor>,
    batch: u32,
    num_heads: u32,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let shape = Shape::matrix(value.get().shape.rows(), value.get().shape.cols());
    bmm(probs, value, Bmm::attention_context(batch, num_heads), shape, memory_config, output_tensor, queue_id)
}

fn bmm(
    a: &Bound<'_, Tensor>,
    b: &Bound<'_, Tensor>,
    desc: Bmm,
    shape: Shape,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = a.py();
    let ta = a.get();
    let da = ta.device_buffer(py, "first input")?;
    let bb = b.get().device_buffer(py, "second input")?.buf;
    let q = da.device.get().queue(queue_id)?;
    let ab = da.buf.clone();
    run(py, &da, &ta.shape, shape, ta.dtype, dev_mem(memory_config), output_tensor, None, move |d, out| {
        d.bmm_into(q, &ab, &bb, out, &desc)
    })
}

/// Masked mean pooling (sentence-transformers' mean pooling): `input_tensor` is `[batch × seq, hidden]`,
/// `attention_mask` `[batch, seq]` (1 a token, 0 padding); the result `[batch, hidden]` is each sentence's mean
/// over its tokens, L2-normalized when `normalize` (sentence-transformers' `Normalize`).
#[pyfunction]
#[pyo3(signature = (input_tensor, attention_mask, *, normalize = true, memory_config = None, output_tensor = None,
    queue_id = 0))]
pub fn mean_pool(
    input_tensor: &Bound<'_, Tensor>,
    attention_mask: &Bound<'_, Tensor>,
    normalize: bool,
    memory_config: Option<&Bound<'_, MemoryConfig>>,
    output_tensor: Option<&Bound<'_, Tensor>>,
    queue_id: i64,
) -> PyResult<Py<Tensor>> {
    let py = input_tensor.py();
    let t = input_tensor.get();
    let x = t.device_buffer(py, "input_tensor")?;
    let tm = attention_mask.get();
    let m = tm.device_buffer(py, "attention_mask")?.buf;
    let shape = Shape::matrix(tm.shape.rows(), t.shape.cols());
    let q = x.device.get().queue(queue_id)?;
    let xb = x.buf.clone();
    run(py, &x, &t.shape, shape, t.dtype, dev_mem(memory_config), output_tensor, None, move |d, out| {
        d.mean_pool_into(q, &xb, &m, normalize, out)
    })
}
