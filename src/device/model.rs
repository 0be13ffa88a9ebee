//! A small model for examples and benchmarks: an MLP of matmul + bias (+ relu) layers, the `run_model` of tt-metal's
//! guide "Advanced Performance Optimizations for Models".
//!
//! Like a ttnn model it **consumes its input** (frees it right after the first op) and frees every intermediate,
//! returning a new output buffer. Its weights are uploaded when it is created; the buffer it returns is allocated
//! top-down and everything else first-fit bottom-up, so a capture run allocates exactly as the compile run did and
//! an input re-allocated at the end of capture lands where the captured input was (the pattern of the guide's
//! section 1.3.2, "Trace with Non-Persistent L1 Input").

use super::buffer::{Buffer, BufferSpec, MemoryConfig};
use super::ops::{BinaryOp, UnaryOp};
use super::{Device, DeviceInner};
use crate::error::{Error, Result, invalid};
use std::sync::Arc;
use ttdrv_contract::kernel::{DType, f32_to_bf16};

/// How an MLP is built.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpConfig {
    /// Rows of every activation (the batch).
    pub batch: u32,
    /// Layer widths: `dims[0]` inputs, then the output width of each layer.
    pub dims: Vec<u32>,
    /// Element type of weights and activations.
    pub dtype: DType,
    /// Where the weights and biases live.
    pub weights_mem: MemoryConfig,
    /// Where intermediates live.
    pub act_mem: MemoryConfig,
    /// Where the output lives.
    pub out_mem: MemoryConfig,
    /// Apply relu after the last layer's bias too (hidden layers always have it).
    pub relu_last: bool,
}

struct Layer {
    w: Buffer,
    b: Buffer,
    relu: bool,
}

/// An MLP on a device.
pub struct Mlp {
    dev: Arc<DeviceInner>,
    cfg: MlpConfig,
    layers: Vec<Layer>,
}

impl std::fmt::Debug for Mlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mlp({:?}, batch {})", self.cfg.dims, self.cfg.batch)
    }
}

fn to_bytes(v: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::Float32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BFloat16 => v.iter().flat_map(|x| f32_to_bf16(*x).to_le_bytes()).collect(),
    }
}

impl Device {
    /// Creates an MLP and uploads its weights on queue `cq` (blocking). `weights[i]` is `dims[i] x dims[i+1]`
    /// row-major, `biases[i]` has `dims[i+1]` values.
    pub fn mlp(&self, cq: u16, cfg: &MlpConfig, weights: &[&[f32]], biases: &[&[f32]]) -> Result<Mlp> {
        let n = cfg.dims.len().saturating_sub(1);
        if n == 0 || cfg.batch == 0 || cfg.dims.contains(&0) {
            return invalid(format!(
                "an MLP needs a batch >= 1 and at least two non-zero widths (inputs and one layer); got batch {} and \
                 dims {:?}",
                cfg.batch, cfg.dims
            ));
        }
        if weights.len() != n || biases.len() != n {
            return invalid(format!(
                "{n} layers need {n} weight and {n} bias arrays, got {} and {}",
                weights.len(),
                biases.len()
            ));
        }
        let mut layers = Vec::with_capacity(n);
        for i in 0..n {
            let (k, m) = (cfg.dims[i], cfg.dims[i + 1]);
            if weights[i].len() != (k * m) as usize || biases[i].len() != m as usize {
                return invalid(format!(
                    "layer {i}: weights need {} values ({k} x {m}) and biases {m}; got {} and {}",
                    k * m,
                    weights[i].len(),
                    biases[i].len()
                ));
            }
            let w = self.buffer_from_host(
                &BufferSpec::new(k, m, cfg.dtype, cfg.weights_mem),
                cq,
                &to_bytes(weights[i], cfg.dtype),
            )?;
            let b = self.buffer_from_host(
                &BufferSpec::new(1, m, cfg.dtype, cfg.weights_mem),
                cq,
                &to_bytes(biases[i], cfg.dtype),
            )?;
            layers.push(Layer { w, b, relu: i + 1 < n || cfg.relu_last });
        }
        self.finish(cq)?;
        Ok(Mlp { dev: self.inner.clone(), cfg: cfg.clone(), layers })
    }
}

impl Mlp {
    /// Whether a run on queue `cq` would accept `input`: the device is usable, the queue exists, and the input is a
    /// buffer of this device with the model's input shape and element type. The C ABI checks this before it takes
    /// the input from the caller, so that a refused input stays the caller's.
    pub fn check_input(&self, cq: u16, input: &Buffer) -> Result<()> {
        let c = &self.cfg;
        self.dev.check_queue(cq)?;
        input.check_device(&self.dev)?;
        if input.shape() != [c.batch, c.dims[0]] {
            return Err(Error::ShapeMismatch {
                op: "MLP input".into(),
                shapes: vec![input.shape()],
                rule: format!("the MLP input must be [{}, {}] (batch x dims[0])", c.batch, c.dims[0]),
            });
        }
        if input.dtype() != c.dtype {
            return Err(Error::DTypeMismatch { op: "MLP input".into(), expected: c.dtype, found: input.dtype() });
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &MlpConfig {
        &self.cfg
    }

    /// The spec of the output buffer [`Mlp::run`] returns.
    pub fn output_spec(&self) -> BufferSpec {
        BufferSpec::new(self.cfg.batch, *self.cfg.dims.last().unwrap_or(&1), self.cfg.dtype, self.cfg.out_mem)
    }

    /// Runs the model on queue `cq`. Consumes `input` (`[batch, dims[0]]`, any memory config): it is freed after
    /// the first op. Returns the output, allocated top-down.
    pub fn run(&self, cq: u16, input: Buffer) -> Result<Buffer> {
        self.run_shared(cq, Arc::new(input))
    }

    /// As [`Mlp::run`] for an input shared with the C ABI's handle table: the model drops its reference after the
    /// first op, which frees the buffer unless another call is using it at that very moment.
    pub fn run_shared(&self, cq: u16, input: Arc<Buffer>) -> Result<Buffer> {
        self.run_with(cq, input, &mut || {})
    }

    /// As [`Mlp::run_shared`], calling `before_op` before each op is dispatched (a framework above the driver
    /// does its own host work there; the demo charges a modelled cost per op this way).
    pub fn run_with(&self, cq: u16, input: Arc<Buffer>, before_op: &mut dyn FnMut()) -> Result<Buffer> {
        let dev = &self.dev;
        let c = &self.cfg;
        self.check_input(cq, &input)?;
        let last = self.layers.len() - 1;
        let mut input = Some(input);
        let mut x: Option<Buffer> = None;
        for (i, l) in self.layers.iter().enumerate() {
            let width = c.dims[i + 1];
            let act = BufferSpec::new(c.batch, width, c.dtype, c.act_mem);
            let out = BufferSpec::new(c.batch, width, c.dtype, c.out_mem);
            let y = dev.allocate_buffer(&act, super::alloc::Direction::BottomUp)?;
            before_op();
            match (&x, &input) {
                (Some(x), _) => dev.matmul_into(cq, x, &l.w, &y)?,
                (None, Some(inp)) => dev.matmul_into(cq, inp, &l.w, &y)?,
                (None, None) => unreachable!("the input is consumed only after the first matmul"),
            }
            // Consumed: the input (and each intermediate) is freed right after the op that reads it.
            drop(input.take());
            drop(x.take());
            let bias_is_last = i == last && !l.relu;
            let z = if bias_is_last {
                dev.allocate_buffer(&out, super::alloc::Direction::TopDown)?
            } else {
                dev.allocate_buffer(&act, super::alloc::Direction::BottomUp)?
            };
            before_op();
            dev.binary_into(cq, BinaryOp::Add, &y, &l.b, &z)?;
            drop(y);
            x = Some(if l.relu {
                let r = if i == last {
                    dev.allocate_buffer(&out, super::alloc::Direction::TopDown)?
                } else {
                    dev.allocate_buffer(&act, super::alloc::Direction::BottomUp)?
                };
                before_op();
                dev.unary_into(cq, UnaryOp::Relu, &z, &r)?;
                r
            } else {
                z
            });
        }
        Ok(x.expect("at least one layer"))
    }

    /// Program dispatches per run.
    pub fn ops_per_run(&self) -> usize {
        self.layers.iter().map(|l| if l.relu { 3 } else { 2 }).sum()
    }
}
