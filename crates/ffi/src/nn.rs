//! The transformer operations (device contract §8.2, since 1.3): layer norm, softmax with a mask, batched matmul
//! over heads, linear, embedding and mean pooling. Each writes into an output buffer the caller allocated, as a
//! model that keeps its intermediates (and a trace capture) wants; shapes and element types are checked before
//! anything is enqueued.

use super::buffer::{buffer_arc, ttdrv_buffer};
use super::{FfiError, FfiResult, guard, slice, ttdrv_status};
use std::sync::Arc;
use ttdrv::Buffer;
use ttdrv::device::Device;
use ttdrv::device::nn::{Activation, Bmm, MatrixLayout};

/// `ttdrv_linear` activation: none.
pub const TTDRV_ACTIVATION_NONE: u32 = 0;
/// `ttdrv_linear` activation: GELU, erf form.
pub const TTDRV_ACTIVATION_GELU_ERF: u32 = 1;
/// `ttdrv_bmm` views bit: `a` holds its matrices as heads (else stacked in rows).
pub const TTDRV_BMM_A_HEADS: u32 = 1;
/// `ttdrv_bmm` views bit: `b` holds its matrices as heads.
pub const TTDRV_BMM_B_HEADS: u32 = 2;
/// `ttdrv_bmm` views bit: `out` holds its matrices as heads.
pub const TTDRV_BMM_OUT_HEADS: u32 = 4;

fn dev_of(b: &Buffer) -> FfiResult<Device> {
    Ok(b.device()?)
}

/// An optional buffer: NULL is none.
fn optional(h: *mut ttdrv_buffer, name: &'static str) -> FfiResult<Option<Arc<Buffer>>> {
    if h.is_null() { Ok(None) } else { buffer_arc(h, name).map(Some) }
}

/// Layer normalization of each row of `x` (of `x + residual` when `residual` is not NULL) into `out`, on queue `cq`:
/// `(v - mean) / sqrt(var + eps) * gamma + beta` (biased variance), `gamma` and `beta` one row [1, cols]. All buffers
/// of one element type; `out` and `residual` have `x`'s shape; any layouts and tensor layouts.
///
/// Ownership: every buffer stays the caller's. Returns once enqueued (captured, during a trace capture on `cq`).
/// Thread: any.
/// Errors: NULL_PARAMETER (`x`, `gamma`, `beta`, `out`), INVALID_HANDLE (a freed or forged buffer), CLOSED, FORKED,
/// INVALID_ARGUMENT (no such queue; buffers of different devices; shapes or element types that do not fit; `eps`
/// negative or not finite), UNSUPPORTED (a device of contract below 1.3, or without the `ttdrv.layernorm` kernel),
/// PROGRAM_NOT_CACHED (first run during a capture on `cq`), TIMEOUT (no ring space), DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_layer_norm(
    x: *mut ttdrv_buffer,
    residual: *mut ttdrv_buffer,
    gamma: *mut ttdrv_buffer,
    beta: *mut ttdrv_buffer,
    eps: f32,
    cq: u16,
    out: *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_layer_norm", || {
        let x = buffer_arc(x, "x")?;
        let res = optional(residual, "residual")?;
        let (g, b, o) = (buffer_arc(gamma, "gamma")?, buffer_arc(beta, "beta")?, buffer_arc(out, "out")?);
        Ok(dev_of(&x)?.layer_norm_into(cq, &x, res.as_deref(), &g, &b, eps, &o)?)
    })
}

/// Softmax over each row of `scale * x + mask` into `out`, on queue `cq`. `mask` (NULL: none) has `x`'s columns and
/// one row per group of `x.rows / mask.rows` rows: attention scores stacked as [batch * heads * seq, seq] take a
/// [batch, seq] mask of 0 (attend) and a large negative number such as -10000 (padding). One element type.
///
/// Ownership: every buffer stays the caller's. Returns once enqueued. Thread: any.
/// Errors: NULL_PARAMETER (`x`, `out`), INVALID_HANDLE, CLOSED, FORKED, INVALID_ARGUMENT (no such queue; buffers of
/// different devices; shapes or element types that do not fit; `scale` not finite), UNSUPPORTED (contract below 1.3
/// or no `ttdrv.softmax`), PROGRAM_NOT_CACHED, TIMEOUT, DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_softmax(
    x: *mut ttdrv_buffer,
    mask: *mut ttdrv_buffer,
    scale: f32,
    cq: u16,
    out: *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_softmax", || {
        let x = buffer_arc(x, "x")?;
        let m = optional(mask, "mask")?;
        let o = buffer_arc(out, "out")?;
        Ok(dev_of(&x)?.softmax_into(cq, &x, m.as_deref(), scale, &o)?)
    })
}

/// Batched matmul into `out`, on queue `cq`: `out_z = scale * a_z * b_z` (`b_z` transposed when `transpose_b` is 1)
/// for the `batch * heads` matrices `z`. `views` (`TTDRV_BMM_*_HEADS` bits) says which tensors hold their matrices
/// as heads — matrix (b, h) is rows [b R, (b + 1) R) and columns [h C, (h + 1) C) of a [batch * R, heads * C]
/// tensor — and which stacked in rows (matrix z is rows [z R, (z + 1) R) of a [batch * heads * R, C] tensor).
/// Attention's scores are `views = A_HEADS | B_HEADS`, `transpose_b = 1`, `scale = 1 / sqrt(d)`; its context (the
/// heads merged in place) `views = B_HEADS | OUT_HEADS`, `transpose_b = 0`, `scale = 1`.
///
/// Ownership: every buffer stays the caller's. Returns once enqueued. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE, CLOSED, FORKED, INVALID_ARGUMENT (no such queue; `batch` or `heads` 0;
/// unknown `views` bits; `transpose_b` not 0 or 1; `scale` not finite; shapes that do not divide into the matrices
/// or whose products do not agree; element types that differ), UNSUPPORTED (contract below 1.3 or no `ttdrv.bmm`),
/// PROGRAM_NOT_CACHED, TIMEOUT, DEVICE_FAULT.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn ttdrv_bmm(
    a: *mut ttdrv_buffer,
    b: *mut ttdrv_buffer,
    batch: u32,
    heads: u32,
    views: u32,
    transpose_b: u32,
    scale: f32,
    cq: u16,
    out: *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_bmm", || {
        let (a, b, o) = (buffer_arc(a, "a")?, buffer_arc(b, "b")?, buffer_arc(out, "out")?);
        if views & !(TTDRV_BMM_A_HEADS | TTDRV_BMM_B_HEADS | TTDRV_BMM_OUT_HEADS) != 0 {
            return Err(FfiError::invalid(format!(
                "views {views:#x} has bits other than TTDRV_BMM_A_HEADS, TTDRV_BMM_B_HEADS and TTDRV_BMM_OUT_HEADS"
            )));
        }
        if transpose_b > 1 {
            return Err(FfiError::invalid(format!("transpose_b is {transpose_b}; pass 0 or 1")));
        }
        let view = |bit: u32| if views & bit != 0 { MatrixLayout::Heads } else { MatrixLayout::Stacked };
        let desc = Bmm {
            batch,
            heads,
            a: view(TTDRV_BMM_A_HEADS),
            b: view(TTDRV_BMM_B_HEADS),
            out: view(TTDRV_BMM_OUT_HEADS),
            transpose_b: transpose_b == 1,
            scale,
        };
        Ok(dev_of(&a)?.bmm_into(cq, &a, &b, &o, &desc)?)
    })
}

/// `act(a @ b + bias)` into `out`, on queue `cq` (ttnn's `linear`): `a` [M, K], `b` [K, N], `bias` (NULL: none) one
/// row [1, N] added to every row, `activation` a `TTDRV_ACTIVATION_*` value; accumulated in float32, one element
/// type.
///
/// Ownership: every buffer stays the caller's. Returns once enqueued. Thread: any.
/// Errors: NULL_PARAMETER (`a`, `b`, `out`), INVALID_HANDLE, CLOSED, FORKED, INVALID_ARGUMENT (no such queue; an
/// unknown `activation`; shapes or element types that do not fit), UNSUPPORTED (contract below 1.3 or no
/// `ttdrv.linear`), PROGRAM_NOT_CACHED, TIMEOUT, DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_linear(
    a: *mut ttdrv_buffer,
    b: *mut ttdrv_buffer,
    bias: *mut ttdrv_buffer,
    activation: u32,
    cq: u16,
    out: *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_linear", || {
        let (a, b) = (buffer_arc(a, "a")?, buffer_arc(b, "b")?);
        let bias = optional(bias, "bias")?;
        let o = buffer_arc(out, "out")?;
        let act = match activation {
            TTDRV_ACTIVATION_NONE => Activation::None,
            TTDRV_ACTIVATION_GELU_ERF => Activation::GeluErf,
            v => return Err(FfiError::invalid(format!("activation {v} is not a TTDRV_ACTIVATION_* value"))),
        };
        Ok(dev_of(&a)?.linear_into(cq, &a, &b, bias.as_deref(), act, &o)?)
    })
}

/// Embedding lookup into `out`, on queue `cq`: `out[r] = sum over t of tables[t][ids[r][t]]` for `n_tables` (1 to 3)
/// tables — BERT's word, position and token-type embeddings in one pass. `ids` holds integer-valued elements (float32
/// holds every index below 2^24 exactly), column t indexing table t; every table has `out`'s columns and element type.
/// An id that is not a row of its table makes the device fault (DEVICE_FAULT, then reset): the driver cannot see the
/// values.
///
/// Ownership: every buffer stays the caller's; `tables` is read during the call only. Returns once enqueued.
/// Thread: any.
/// Errors: NULL_PARAMETER (`ids`, `tables`, an element of `tables`, `out`), INVALID_HANDLE, CLOSED, FORKED,
/// INVALID_ARGUMENT (no such queue; `n_tables` not 1 to 3; shapes or element types that do not fit), UNSUPPORTED
/// (contract below 1.3 or no `ttdrv.embedding`), PROGRAM_NOT_CACHED, TIMEOUT, DEVICE_FAULT.
///
/// # Safety
/// `tables` must point to `n_tables` readable handles.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_embedding(
    ids: *mut ttdrv_buffer,
    tables: *const *mut ttdrv_buffer,
    n_tables: usize,
    cq: u16,
    out: *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_embedding", || {
        let ids = buffer_arc(ids, "ids")?;
        if !(1..=3).contains(&n_tables) {
            return Err(FfiError::invalid(format!("n_tables is {n_tables}; pass 1 to 3 tables")));
        }
        let hs = slice(tables, n_tables, "tables")?;
        let ts = hs.iter().map(|&h| buffer_arc(h, "tables[i]")).collect::<FfiResult<Vec<_>>>()?;
        let o = buffer_arc(out, "out")?;
        let refs: Vec<&Buffer> = ts.iter().map(|t| &**t).collect();
        Ok(dev_of(&ids)?.embedding_into(cq, &ids, &refs, &o)?)
    })
}

/// Masked mean pooling into `out`, on queue `cq` (sentence-transformers' mean pooling): `x` [B * S, D], `mask` [B, S]
/// (1 a token, 0 padding), `out` [B, D]: `out[b] = sum_s mask[b][s] x[b S + s] / max(sum_s mask[b][s], 1e-9)`, then
/// with `normalize` non-zero divided by its L2 norm. One element type.
///
/// Ownership: every buffer stays the caller's. Returns once enqueued. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE, CLOSED, FORKED, INVALID_ARGUMENT (no such queue; shapes or element types
/// that do not fit), UNSUPPORTED (contract below 1.3 or no `ttdrv.mean_pool`), PROGRAM_NOT_CACHED, TIMEOUT,
/// DEVICE_FAULT.
#[unsafe(no_mangle)]
pub extern "C" fn ttdrv_mean_pool(
    x: *mut ttdrv_buffer,
    mask: *mut ttdrv_buffer,
    normalize: bool,
    cq: u16,
    out: *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_mean_pool", || {
        let (x, m, o) = (buffer_arc(x, "x")?, buffer_arc(mask, "mask")?, buffer_arc(out, "out")?);
        Ok(dev_of(&x)?.mean_pool_into(cq, &x, &m, normalize, &o)?)
    })
}
