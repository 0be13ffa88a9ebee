//! The MLP model (`run_model` in the seed).

use super::buffer::{buffer_arc, insert_buffer, memory_config_from_c, ttdrv_buffer, ttdrv_memory_config};
use super::device::{device_checked, ttdrv_device};
use super::handles::{self, Kind};
use super::{FfiResult, guard, nonnull, out_ptr, slice, ttdrv_status, write_out};
use std::sync::Arc;
use ttdrv::contract::kernel::DType;
use ttdrv::device::model::{Mlp, MlpConfig};
use ttdrv::error::Error;

/// An MLP model on a device (opaque).
pub struct ttdrv_mlp {
    _private: [u8; 0],
}

/// Describes an MLP: `num_dims - 1` layers of matmul + bias (+ relu). Fill with `ttdrv_mlp_desc_init`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ttdrv_mlp_desc {
    /// `sizeof(ttdrv_mlp_desc)`.
    pub struct_size: u32,
    /// Rows of every activation.
    pub batch: u32,
    /// Widths: inputs, then each layer's outputs.
    pub dims: *const u32,
    /// Number of widths (layers + 1).
    pub num_dims: usize,
    /// `TTDRV_DTYPE_*` of weights and activations.
    pub dtype: u32,
    /// Apply relu after the last layer too.
    pub relu_last: bool,
    /// Where weights and biases live.
    pub weights_mem: ttdrv_memory_config,
    /// Where intermediates live.
    pub act_mem: ttdrv_memory_config,
    /// Where the output lives.
    pub out_mem: ttdrv_memory_config,
    /// `num_dims - 1` pointers: layer i's weights, `dims[i] x dims[i+1]` floats, row-major.
    pub weights: *const *const f32,
    /// `num_dims - 1` pointers: layer i's biases, `dims[i+1]` floats.
    pub biases: *const *const f32,
}

const DESC_V1: u32 = std::mem::size_of::<ttdrv_mlp_desc>() as u32;

fn mlp(h: *mut ttdrv_mlp) -> FfiResult<Arc<Mlp>> {
    handles::lookup(h, "mlp")
}

/// Fills `*desc` with its `struct_size`, float32, relu after hidden layers only, and interleaved DRAM for weights,
/// activations and output; no dims, weights or biases (set `batch`, `dims`, `num_dims`, `weights`, `biases`).
///
/// Thread: any. Errors: NULL_PARAMETER.
///
/// # Safety
/// `desc` must be NULL or point to a writable `ttdrv_mlp_desc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_mlp_desc_init(desc: *mut ttdrv_mlp_desc) -> ttdrv_status {
    guard("ttdrv_mlp_desc_init", || {
        let d = ttdrv_mlp_desc {
            struct_size: DESC_V1,
            batch: 0,
            dims: std::ptr::null(),
            num_dims: 0,
            dtype: 0,
            relu_last: false,
            weights_mem: ttdrv_memory_config::default(),
            act_mem: ttdrv_memory_config::default(),
            out_mem: ttdrv_memory_config::default(),
            weights: std::ptr::null(),
            biases: std::ptr::null(),
        };
        write_out(out_ptr(desc, "desc")?, d);
        Ok(())
    })
}

/// Creates an MLP of `num_dims - 1` layers (matmul + bias, relu between layers) and uploads its weights and biases on
/// queue `cq`, blocking until they are on the device.
///
/// Ownership: the weights and biases are copied; `desc` and its arrays are only read during the call. On success `*out`
/// receives a new handle; release it with `ttdrv_mlp_free`. Thread: any.
/// Errors: NULL_PARAMETER (`desc`, `out`, `desc->dims`, `desc->weights`, `desc->biases` or one of their entries),
/// INVALID_HANDLE (`device`), CLOSED, FORKED, INVALID_ARGUMENT (`struct_size` too small; `num_dims` outside 2..64; a
/// batch or width of 0 or a layer above 2^28 elements; an unknown dtype; a memory config as in `ttdrv_buffer_allocate`;
/// no such queue), INVALID_STATE (trace capture in progress on `cq`), OUT_OF_DEVICE_MEMORY, TIMEOUT, DEVICE_FAULT.
///
/// # Safety
/// `desc` initialised, with `dims` readable for `num_dims` values and `weights` and `biases` for `num_dims - 1`
/// pointers each, layer i's weights `dims[i] x dims[i+1]` floats (row-major) and biases `dims[i+1]` floats; `out`
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_mlp_new(
    device: *mut ttdrv_device,
    cq: u16,
    desc: *const ttdrv_mlp_desc,
    out: *mut *mut ttdrv_mlp,
) -> ttdrv_status {
    guard("ttdrv_mlp_new", || {
        let d = device_checked(device)?;
        nonnull(desc, "desc")?;
        let out = out_ptr(out, "out")?;
        // SAFETY: non-NULL; the size field comes first.
        let size = unsafe { std::ptr::addr_of!((*desc).struct_size).read_unaligned() };
        if size < DESC_V1 {
            return Err(Error::InvalidArgument(format!(
                "desc->struct_size is {size}; initialise the description with ttdrv_mlp_desc_init()"
            ))
            .into());
        }
        // SAFETY: at least as large as ours.
        let c = unsafe { desc.read_unaligned() };
        if c.num_dims < 2 || c.num_dims > 64 {
            return Err(Error::InvalidArgument(format!("num_dims is {}; an MLP has 2 to 64 widths", c.num_dims)).into());
        }
        let dims = slice(c.dims, c.num_dims, "desc->dims")?.to_vec();
        let layers = c.num_dims - 1;
        let wp = slice(c.weights, layers, "desc->weights")?;
        let bp = slice(c.biases, layers, "desc->biases")?;
        let mut ws = Vec::with_capacity(layers);
        let mut bs = Vec::with_capacity(layers);
        for i in 0..layers {
            nonnull(wp[i], "desc->weights[i]")?;
            nonnull(bp[i], "desc->biases[i]")?;
            let (k, m) = (dims[i] as usize, dims[i + 1] as usize);
            if k == 0 || m == 0 || k.checked_mul(m).is_none_or(|n| n > 1 << 28) {
                return Err(Error::InvalidArgument(format!("layer {i} is {k} x {m}; widths must be 1 to 16384")).into());
            }
            // The C contract makes layer i's arrays k*m and m floats long.
            ws.push(slice(wp[i], k * m, "desc->weights[i]")?);
            bs.push(slice(bp[i], m, "desc->biases[i]")?);
        }
        let cfg = MlpConfig {
            batch: c.batch,
            dims,
            dtype: DType::from_u32(c.dtype)
                .ok_or_else(|| Error::InvalidArgument(format!("dtype {} is not a TTDRV_DTYPE_* value", c.dtype)))?,
            weights_mem: memory_config_from_c(&c.weights_mem)?,
            act_mem: memory_config_from_c(&c.act_mem)?,
            out_mem: memory_config_from_c(&c.out_mem)?,
            relu_last: c.relu_last,
        };
        let m = d.mlp(cq, &cfg, &ws, &bs)?;
        write_out(out, handles::register::<Mlp, _>(m));
        Ok(())
    })
}

/// Runs the model on queue `cq` (`output = run_model(input)`): enqueues its ops and returns; read the output (or wait
/// for an event) to get the result. During a trace capture on `cq` the ops are captured instead.
///
/// Ownership: **`input` is consumed** once accepted — it is a live buffer of the model's device with the model's input
/// shape and dtype, `cq` exists and the device is usable: its handle is released and the buffer is freed right after
/// the first op, as a ttnn model does; do not free it yourself. Every error listed here except OUT_OF_DEVICE_MEMORY,
/// PROGRAM_NOT_CACHED, TIMEOUT and DEVICE_FAULT is returned before that, and leaves `input` with the caller. `*out`
/// receives the output buffer, allocated top-down so that a capture run allocates exactly as the compile run did;
/// release it with `ttdrv_buffer_free`. Thread: any.
/// Errors: NULL_PARAMETER, INVALID_HANDLE (`mlp` or `input`), CLOSED, FORKED, INVALID_ARGUMENT (input of another
/// device, shape or dtype; no such queue), OUT_OF_DEVICE_MEMORY, PROGRAM_NOT_CACHED (first run inside a capture),
/// TIMEOUT, DEVICE_FAULT.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_mlp_run(
    mlp: *mut ttdrv_mlp,
    cq: u16,
    input: *mut ttdrv_buffer,
    out: *mut *mut ttdrv_buffer,
) -> ttdrv_status {
    guard("ttdrv_mlp_run", || {
        let m = self::mlp(mlp)?;
        let out = out_ptr(out, "out")?;
        let inp = buffer_arc(input, "input")?;
        m.check_input(cq, &inp).map_err(|e| match e.kind() {
            ttdrv::ErrorKind::InvalidArgument => {
                Error::InvalidArgument(format!("{e}; the input handle is still yours"))
            }
            _ => e,
        })?;
        // Accepted: the model owns the input from here on.
        handles::remove(input as usize, Kind::Buffer);
        let r = m.run_shared(cq, inp)?;
        write_out(out, insert_buffer(r));
        Ok(())
    })
}

/// Frees the model and its weights. Runs already enqueued still complete. NULL is a no-op.
///
/// Ownership: the handle is released; using it again is INVALID_HANDLE. Outputs of earlier runs stay valid. Thread:
/// any. Errors: INVALID_HANDLE.
///
/// # Safety
/// `mlp` must be NULL or a value returned by ttdrv.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_mlp_free(mlp: *mut ttdrv_mlp) -> ttdrv_status {
    guard("ttdrv_mlp_free", || {
        handles::release::<Mlp, _>(mlp)?;
        Ok(())
    })
}

/// Writes the number of program dispatches one run of the model makes to `*out`. Answers after its device is closed
/// too.
///
/// Thread: any. Errors: NULL_PARAMETER, INVALID_HANDLE.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ttdrv_mlp_ops_per_run(mlp: *mut ttdrv_mlp, out: *mut u32) -> ttdrv_status {
    guard("ttdrv_mlp_ops_per_run", || {
        let m = self::mlp(mlp)?;
        write_out(out_ptr(out, "out")?, m.ops_per_run() as u32);
        Ok(())
    })
}
