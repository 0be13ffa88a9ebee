//! The operations a transformer encoder needs, on the transformer kernels of contract §8.2 (since 1.3): layer
//! normalization (with an optional residual), softmax with an additive mask, batched matmul over heads (attention's
//! `Q × Kᵀ` and `P × V` reading and writing heads in place), linear (matmul + bias row + optional GELU), embedding
//! lookup and masked mean pooling with L2 normalization.
//!
//! Each writes into an output buffer the caller allocated (the trace-friendly form: a model allocates its
//! intermediates once). The shapes, element types and flags are checked here, before anything is enqueued, so a
//! mistake is an `InvalidArgument` error naming the rule and never a device fault; the one thing the driver cannot
//! check is the *values* of an embedding's ids, which the device checks (an index out of its table faults with
//! `KERNEL_ARGS`, docs/device-interface.md §8.2).

use super::buffer::Buffer;
use super::ops::{Split, op_desc};
use super::patch::{ArgMap, ScalarKind, ScalarName};
use super::program::RtArgs;
use super::{Device, DeviceInner};
use crate::error::{Error, Result};
use std::sync::Arc;
use ttdrv_contract::kernel::{ACCESSOR_ADDR_WORD, ACCESSOR_WORDS, BLOCK_WORDS, BuiltinKernel, TILE_DIM, TensorLayout};
use ttdrv_contract::records::CoreRect;

/// The activation [`Device::linear_into`] applies to `a × b + bias`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    /// None.
    #[default]
    None,
    /// GELU, the erf form (BERT's).
    GeluErf,
}

/// How one operand of [`Device::bmm_into`] holds its `batch × heads` matrices (docs/device-interface.md §8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatrixLayout {
    /// Matrix `z` is rows `[z R, (z + 1) R)`, every column: `[batch × heads × R, C]`.
    Stacked,
    /// Matrix `(b, h)` is rows `[b R, (b + 1) R)`, columns `[h C, (h + 1) C)`: `[batch × R, heads × C]`, the layout
    /// of a `[batch × seq, hidden]` activation whose columns are the heads.
    Heads,
}

/// A batched matmul: `out_z = scale × a_z × b_z` (or `b_zᵀ`) for `batch × heads` matrices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bmm {
    /// Batch size (sentences).
    pub batch: u32,
    /// Heads per batch element.
    pub heads: u32,
    /// How `a` holds its matrices.
    pub a: MatrixLayout,
    /// How `b` holds its matrices.
    pub b: MatrixLayout,
    /// How `out` holds its matrices.
    pub out: MatrixLayout,
    /// Multiply by `b_zᵀ` instead of `b_z`.
    pub transpose_b: bool,
    /// Factor applied to every product.
    pub scale: f32,
}

impl Bmm {
    /// Attention scores: `scale × Q_z × K_zᵀ` from `[batch × seq, heads × d]` `Q` and `K` into stacked
    /// `[batch × heads × seq, seq]` scores.
    pub fn attention_scores(batch: u32, heads: u32, scale: f32) -> Bmm {
        Bmm {
            batch,
            heads,
            a: MatrixLayout::Heads,
            b: MatrixLayout::Heads,
            out: MatrixLayout::Stacked,
            transpose_b: true,
            scale,
        }
    }

    /// Attention context: stacked `[batch × heads × seq, seq]` probabilities times the heads of a `[batch × seq,
    /// heads × d]` `V`, written as heads into `[batch × seq, heads × d]` (the heads merged in place).
    pub fn attention_context(batch: u32, heads: u32) -> Bmm {
        Bmm {
            batch,
            heads,
            a: MatrixLayout::Stacked,
            b: MatrixLayout::Heads,
            out: MatrixLayout::Heads,
            transpose_b: false,
            scale: 1.0,
        }
    }
}

/// The contract minor version that introduced the transformer kernels and `eltwise_unary` op 4 (GELU, erf form).
pub const TRANSFORMER_SINCE_MINOR: u16 = 3;

fn shape_err(op: &str, bufs: &[&Buffer], rule: String) -> Error {
    Error::ShapeMismatch { op: op.into(), shapes: bufs.iter().map(|b| b.shape()).collect(), rule }
}

fn same_dtype(op: &str, bs: &[&Buffer]) -> Result<()> {
    let d = bs[0].dtype();
    if let Some(b) = bs.iter().find(|b| b.dtype() != d) {
        return Err(Error::DTypeMismatch { op: op.to_string(), expected: d, found: b.dtype() });
    }
    Ok(())
}

/// Rows and columns of one matrix of `buf` held as `layout` by a `bmm` of `batch × heads` matrices.
fn matrix_shape(buf: &Buffer, layout: MatrixLayout, batch: u32, heads: u32, name: &str) -> Result<(u32, u32)> {
    let [r, c] = buf.shape();
    let (rd, cd) = match layout {
        MatrixLayout::Stacked => (batch * heads, 1),
        MatrixLayout::Heads => (batch, heads),
    };
    if r % rd != 0 || c % cd != 0 {
        return Err(shape_err(
            "bmm",
            &[buf],
            format!(
                "{name} holds {batch} x {heads} matrices {}: its rows must be a multiple of {rd} and its columns of \
                 {cd}",
                match layout {
                    MatrixLayout::Stacked => "stacked in rows",
                    MatrixLayout::Heads => "as heads",
                }
            ),
        ));
    }
    Ok((r / rd, c / cd))
}

impl DeviceInner {
    /// Fails unless the device speaks the contract version of the transformer kernels.
    pub(crate) fn need_transformer(&self, op: &str) -> Result<()> {
        let info = &self.info;
        if info.version_minor < TRANSFORMER_SINCE_MINOR {
            return Err(Error::Unsupported(format!(
                "{op}: device {} speaks device contract {}.{}, which has no transformer kernels (they need \
                 {}.{TRANSFORMER_SINCE_MINOR}, docs/device-interface.md §8.2); use a device of a newer contract",
                info.name, info.version_major, info.version_minor, info.version_major
            )));
        }
        Ok(())
    }

    /// Row bands of whole rows over up to every core (a tiled output's bands are whole tile rows): what a row
    /// reduction (layernorm, softmax, pooling) needs. Bands of equal height, so that each core's bounds follow its
    /// position (contract §4.2.6 steps); cores past the last band get empty blocks.
    fn row_bands(&self, out: &Buffer) -> Split {
        let (gx, gy) = (self.info.grid_x, self.info.grid_y);
        let s = out.spec();
        let unit = if s.layout == TensorLayout::Tile { TILE_DIM } else { 1 };
        let units = s.rows.div_ceil(unit).max(1);
        // Fewest elements worth a core of its own, as the element-wise ops split.
        let elems = s.rows as u64 * s.cols as u64;
        let want = (elems / 256).clamp(1, (gx * gy) as u64).min(units as u64) as u32;
        let per = units.div_ceil(want);
        let n = units.div_ceil(per);
        let (w, h) = if n <= gx { (n, 1) } else { (gx, n.div_ceil(gx)) };
        let rect = CoreRect { x0: 0, y0: 0, x1: (w - 1) as u8, y1: (h - 1) as u8 };
        // One block column (period 1): core k computes rows [k·per, (k+1)·per) units, clamped to the rows.
        Split::blocks(rect, 1, per * unit, s.cols, s.rows, s.cols, true)
    }

    /// Dispatches `kernel` over `out`: whole-row bands when `whole_rows`, else the matmul split. The common words
    /// every core shares after its block are the accessors of `accessors` (each operand slot's buffer: an operand
    /// the kernel does not read repeats the first, its flag being 0), then `param` if any — a float parameter that a
    /// trace may patch under its name (`patch.rs`). They travel once in the launch as common arguments, and each
    /// core's block as steps (contract §4.2.6), as `launch_op` in `ops.rs` does.
    #[allow(clippy::too_many_arguments)]
    fn launch_nn(
        self: &Arc<Self>,
        cq: u16,
        kernel: BuiltinKernel,
        ct_args: Vec<u32>,
        out: &Buffer,
        inputs: &[&Buffer],
        whole_rows: bool,
        accessors: &[&Buffer],
        param: Option<(f32, &'static str, ScalarKind)>,
    ) -> Result<()> {
        for b in inputs {
            b.check_device(self)?;
        }
        out.check_device(self)?;
        self.need_transformer(kernel.name())?;
        let split = if whole_rows { self.row_bands(out) } else { self.split(out, true) };
        let ins: Vec<_> = inputs.iter().map(|b| b.accessor()).collect();
        let desc = op_desc(kernel, split.rect, ct_args, &ins, &out.accessor());
        let entry = self.program(desc)?.into_entry();
        let mut words = Vec::with_capacity(kernel.rt_words());
        for b in accessors {
            words.extend_from_slice(&b.accessor().to_words());
        }
        words.extend(param.map(|p| p.0.to_bits()));
        debug_assert_eq!(BLOCK_WORDS + words.len(), kernel.rt_words());
        let args = RtArgs { common: &words, steps: &split.block, per_core: &[] };
        // What a trace may patch: each accessor's address word is its buffer's address (indexed among the inputs,
        // then the output), and the parameter may be named.
        let buffers: Vec<&Buffer> = inputs.iter().copied().chain([out]).collect();
        let addrs: Vec<(u16, u8)> = accessors
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let at = buffers.iter().position(|x| std::ptr::eq(*x, *b))?;
                Some(((BLOCK_WORDS + i * ACCESSOR_WORDS + ACCESSOR_ADDR_WORD) as u16, at as u8))
            })
            .collect();
        debug_assert_eq!(addrs.len(), accessors.len(), "every accessor is one of the launch's buffers");
        let word = (BLOCK_WORDS + accessors.len() * ACCESSOR_WORDS) as u16;
        let scalar = param.map(|(_, name, kind)| (word, ScalarName::Op(name), kind));
        let map = ArgMap { addrs: &addrs, scalars: scalar.as_slice(), complete: addrs.len() == accessors.len() };
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        // Every one of these kernels computes each element of its output without reading it first.
        self.dispatch(&entry, cq, &args, inputs, &[out], &map)?;
        out.contents.mark_written(epoch);
        Ok(())
    }
}

impl Device {
    /// Layer normalization of each row of `x` (of `x + residual` when given) into `out`: `(v − mean) / √(var + eps)
    /// × gamma + beta`, with `gamma` and `beta` one row `[1, cols]` (ttnn's `layer_norm` with
    /// `residual_input_tensor`). All of one element type; `out` has `x`'s shape.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_norm_into(
        &self,
        cq: u16,
        x: &Buffer,
        residual: Option<&Buffer>,
        gamma: &Buffer,
        beta: &Buffer,
        eps: f32,
        out: &Buffer,
    ) -> Result<()> {
        let op = "layer_norm";
        let [_, cols] = x.shape();
        if out.shape() != x.shape() || residual.is_some_and(|r| r.shape() != x.shape()) {
            let mut bs = vec![x, out];
            bs.extend(residual);
            return Err(shape_err(op, &bs, "x, the residual and the output need one shape".into()));
        }
        if gamma.shape() != [1, cols] || beta.shape() != [1, cols] {
            return Err(shape_err(op, &[x, gamma, beta], format!("gamma and beta must be one row [1, {cols}]")));
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "{op}: epsilon {eps} is not a finite number >= 0; pass e.g. 1e-12 (BERT's)"
            )));
        }
        let mut bs = vec![x, gamma, beta, out];
        bs.extend(residual);
        same_dtype(op, &bs)?;
        let mut inputs = vec![x, gamma, beta];
        inputs.extend(residual);
        let acc = [x, residual.unwrap_or(x), gamma, beta, out];
        let eps = Some((eps, "layer_norm.eps", ScalarKind::F32NonNegative));
        let ct = vec![residual.is_some() as u32];
        self.inner.launch_nn(cq, BuiltinKernel::LayerNorm, ct, out, &inputs, true, &acc, eps)
    }

    /// Softmax over each row of `scale × x + mask` into `out` (ttnn's `attention_softmax`): `mask` (optional) has
    /// `x`'s columns and one row per group of `x.rows / mask.rows` rows — for attention scores stacked as `[batch ×
    /// heads × seq, seq]`, a `[batch, seq]` mask of 0 (attend) and a large negative number (padding).
    pub fn softmax_into(&self, cq: u16, x: &Buffer, mask: Option<&Buffer>, scale: f32, out: &Buffer) -> Result<()> {
        let op = "softmax";
        let [rows, cols] = x.shape();
        if out.shape() != x.shape() {
            return Err(shape_err(op, &[x, out], "the output needs x's shape".into()));
        }
        if let Some(m) = mask {
            let [mr, mc] = m.shape();
            if mc != cols || mr == 0 || rows % mr != 0 {
                return Err(shape_err(
                    op,
                    &[x, m],
                    format!("the mask needs x's {cols} columns and a number of rows that divides x's {rows}"),
                ));
            }
        }
        if !scale.is_finite() {
            return Err(Error::InvalidArgument(format!("{op}: scale {scale} is not a finite number")));
        }
        let mut bs = vec![x, out];
        bs.extend(mask);
        same_dtype(op, &bs)?;
        let mut inputs = vec![x];
        inputs.extend(mask);
        let acc = [x, mask.unwrap_or(x), out];
        let scale = Some((scale, "softmax.scale", ScalarKind::F32));
        self.inner.launch_nn(cq, BuiltinKernel::Softmax, vec![mask.is_some() as u32], out, &inputs, true, &acc, scale)
    }

    /// The batched matmul `desc` of `a` and `b` into `out` (see [`Bmm`]; [`Bmm::attention_scores`] and
    /// [`Bmm::attention_context`] are attention's two products).
    pub fn bmm_into(&self, cq: u16, a: &Buffer, b: &Buffer, out: &Buffer, desc: &Bmm) -> Result<()> {
        let op = "bmm";
        let (batch, heads) = (desc.batch, desc.heads);
        if batch == 0 || heads == 0 || batch.checked_mul(heads).is_none() {
            return Err(Error::InvalidArgument(format!(
                "{op}: batch {batch} x heads {heads} is not a number of matrices; both must be at least 1"
            )));
        }
        if !desc.scale.is_finite() {
            return Err(Error::InvalidArgument(format!("{op}: scale {} is not a finite number", desc.scale)));
        }
        let (m, k) = matrix_shape(a, desc.a, batch, heads, "a")?;
        let (br, bc) = matrix_shape(b, desc.b, batch, heads, "b")?;
        let (kb, n) = if desc.transpose_b { (bc, br) } else { (br, bc) };
        let (om, on) = matrix_shape(out, desc.out, batch, heads, "out")?;
        if kb != k || (om, on) != (m, n) {
            return Err(shape_err(
                op,
                &[a, b, out],
                format!(
                    "each of the {} products is [{m}, {k}] x [{kb}, {n}]{} -> [{om}, {on}]: the inner sizes and the \
                     output must agree",
                    batch * heads,
                    if desc.transpose_b { " (b transposed)" } else { "" }
                ),
            ));
        }
        same_dtype(op, &[a, b, out])?;
        let bit = |l: MatrixLayout, i: u32| if l == MatrixLayout::Heads { 1 << i } else { 0 };
        let views = bit(desc.a, 0) | bit(desc.b, 1) | bit(desc.out, 2);
        let ct = vec![batch, heads, views, desc.transpose_b as u32];
        let scale = Some((desc.scale, "bmm.scale", ScalarKind::F32));
        self.inner.launch_nn(cq, BuiltinKernel::Bmm, ct, out, &[a, b], false, &[a, b, out], scale)
    }

    /// `act(a × b + bias)` into `out` (ttnn's `linear`): `a` is [M, K], `b` [K, N], `bias` (optional) one row [1, N]
    /// added to every row; accumulated in f32.
    pub fn linear_into(
        &self,
        cq: u16,
        a: &Buffer,
        b: &Buffer,
        bias: Option<&Buffer>,
        act: Activation,
        out: &Buffer,
    ) -> Result<()> {
        let op = "linear";
        let ([m, k], [k2, n]) = (a.shape(), b.shape());
        if k != k2 || out.shape() != [m, n] {
            return Err(shape_err(op, &[a, b, out], "a [M, K] x [K, N] product is [M, N]".into()));
        }
        if let Some(bias) = bias
            && bias.shape() != [1, n]
        {
            return Err(shape_err(op, &[b, bias], format!("the bias must be one row [1, {n}]")));
        }
        let mut bs = vec![a, b, out];
        bs.extend(bias);
        same_dtype(op, &bs)?;
        let mut inputs = vec![a, b];
        inputs.extend(bias);
        let ct = vec![bias.is_some() as u32, (act == Activation::GeluErf) as u32];
        let acc = [a, b, bias.unwrap_or(a), out];
        self.inner.launch_nn(cq, BuiltinKernel::Linear, ct, out, &inputs, false, &acc, None)
    }

    /// Embedding lookup into `out`: `out[r] = Σ_t tables[t][ids[r][t]]` for one to three tables (BERT's word,
    /// position and token-type embeddings summed in one pass). `ids` holds integer-valued elements, column `t`
    /// indexing table `t` (float32 ids are exact below 2^24); every table has `out`'s columns and element type. An
    /// id outside its table faults the device (`KERNEL_ARGS`): the driver cannot see the values.
    pub fn embedding_into(&self, cq: u16, ids: &Buffer, tables: &[&Buffer], out: &Buffer) -> Result<()> {
        let op = "embedding";
        if tables.is_empty() || tables.len() > 3 {
            return Err(Error::InvalidArgument(format!(
                "{op}: takes 1 to 3 tables (summed), not {}; sum more in a second pass",
                tables.len()
            )));
        }
        let [rows, cols] = out.shape();
        let [ir, ic] = ids.shape();
        if ir != rows || (ic as usize) < tables.len() {
            return Err(shape_err(
                op,
                &[ids, out],
                format!("ids needs the output's {rows} rows and one column per table ({})", tables.len()),
            ));
        }
        if let Some(t) = tables.iter().find(|t| t.shape()[1] != cols) {
            return Err(shape_err(op, &[t, out], format!("every table needs the output's {cols} columns")));
        }
        let mut bs = vec![out];
        bs.extend_from_slice(tables);
        same_dtype(op, &bs)?;
        let mut inputs = vec![ids];
        inputs.extend_from_slice(tables);
        let table = |t: usize| tables.get(t).copied().unwrap_or(ids);
        let acc = [ids, table(0), table(1), table(2), out];
        self.inner.launch_nn(cq, BuiltinKernel::Embedding, vec![tables.len() as u32], out, &inputs, false, &acc, None)
    }

    /// Masked mean pooling into `out` (sentence-transformers' mean pooling): `x` is `[B × S, D]`, `mask` `[B, S]`
    /// (1 for a token, 0 for padding), `out` `[B, D]`: `out[b] = Σ_s mask[b][s] x[bS + s] / Σ_s mask[b][s]`, then,
    /// with `normalize`, divided by its L2 norm (sentence-transformers' `Normalize`).
    pub fn mean_pool_into(&self, cq: u16, x: &Buffer, mask: &Buffer, normalize: bool, out: &Buffer) -> Result<()> {
        let op = "mean_pool";
        let ([xr, xc], [b, s], [or, oc]) = (x.shape(), mask.shape(), out.shape());
        if xr as u64 != b as u64 * s as u64 || or != b || oc != xc {
            return Err(shape_err(
                op,
                &[x, mask, out],
                "x must be [B x S, D], the mask [B, S] and the output [B, D]".into(),
            ));
        }
        same_dtype(op, &[x, mask, out])?;
        let ct = vec![normalize as u32];
        self.inner.launch_nn(cq, BuiltinKernel::MeanPool, ct, out, &[x, mask], normalize, &[x, mask, out], None)
    }
}
