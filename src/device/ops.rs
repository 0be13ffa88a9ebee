//! Operations built from the built-in kernels (contract §8.2): each is a program whose cores split the output
//! into blocks the way a Tensix op would — a sharded output is computed shard by shard on the cores that hold it,
//! an interleaved output is split into row bands over the whole grid. A tiled output is split on tile boundaries, as
//! a Tensix core computes whole tiles; operands may be row-major or tiled in any mix (contract §8.2).

use super::buffer::{Buffer, MemoryConfig};
use super::program::{KernelSource, ProgramDesc};
use super::{Device, DeviceInner};
use crate::error::{Error, Result};
use std::sync::Arc;
use ttdrv_contract::kernel::{Block, BuiltinKernel, DType, Layout, ShardGrid, TILE_DIM, TensorLayout};
use ttdrv_contract::records::{CbConfig, CoreRect};

/// Element-wise binary operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum BinaryOp {
    /// a + b
    Add = 0,
    /// a - b
    Sub = 1,
    /// a * b
    Mul = 2,
}

/// Element-wise unary operations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    /// max(x, 0)
    Relu,
    /// GELU, tanh approximation.
    Gelu,
    /// e^x
    Exp,
    /// x * factor
    Scale(f32),
    /// GELU, the exact erf form BERT uses: x (1 + erf(x / √2)) / 2 (contract 1.4).
    GeluErf,
}

impl UnaryOp {
    fn code(self) -> (u32, f32) {
        match self {
            UnaryOp::Relu => (0, 0.0),
            UnaryOp::Gelu => (1, 0.0),
            UnaryOp::Exp => (2, 0.0),
            UnaryOp::Scale(f) => (3, f),
            UnaryOp::GeluErf => (4, 0.0),
        }
    }
}

impl DeviceInner {
    /// The cores that compute `out`, and each core's block, row-major over the rectangle.
    pub(super) fn split(&self, out: &Buffer, square: bool) -> (CoreRect, Vec<Block>) {
        let (gx, gy) = (self.info.grid_x, self.info.grid_y);
        let full = CoreRect { x0: 0, y0: 0, x1: (gx - 1) as u8, y1: (gy - 1) as u8 };
        let s = out.spec();
        // Blocks are cut in units of `unit` rows and columns (a tile when tiled) and end at the last row or column:
        // a tiled output's padding is not computed, the kernels zero it (contract §8.3.2).
        let unit = if s.layout == TensorLayout::Tile { TILE_DIM } else { 1 };
        let (ur, uc) = (s.rows.div_ceil(unit), s.cols.div_ceil(unit));
        // The start of part `i` of `parts` over `n` units, in rows or columns (u64: `i × n` may exceed u32).
        let edge = |i: u32, n: u32, parts: u32, end: u32| {
            ((i as u64 * n as u64 / parts as u64) * unit as u64).min(end as u64) as u32
        };
        match (s.mem.layout, s.mem.shard) {
            (Layout::Interleaved, _) | (_, None) => {
                let (rb, cb) = interleaved_split(ur, uc, unit * unit, gx * gy, square);
                let n = rb * cb;
                // The smallest rectangle of whole grid rows that holds n cores (or one partial row).
                let (w, h) = if n <= gx { (n, 1) } else { (gx, n.div_ceil(gx)) };
                let rect = CoreRect { x0: 0, y0: 0, x1: (w - 1) as u8, y1: (h - 1) as u8 };
                let blocks = (0..w * h)
                    .map(|k| {
                        if k >= n {
                            return Block::default();
                        }
                        let (i, j) = (k / cb, k % cb);
                        Block {
                            r0: edge(i, ur, rb, s.rows),
                            r1: edge(i + 1, ur, rb, s.rows),
                            c0: edge(j, uc, cb, s.cols),
                            c1: edge(j + 1, uc, cb, s.cols),
                        }
                    })
                    .collect();
                (rect, blocks)
            }
            (_, Some(sh)) => {
                let [sr, sc] = sh.shape;
                // Shards divide the padded shape (placement checked it); edge shards of a tiled output hold padding.
                let [pr, pc] = s.padded_shape();
                let (rb, cb) = ((pr / sr as u64) as u32, (pc / sc as u64) as u32);
                let shard_block = |p: u32| -> Block {
                    if p >= rb * cb {
                        return Block::default();
                    }
                    let (i, j) = if sh.col_major { (p % rb, p / rb) } else { (p / cb, p % cb) };
                    Block { r0: i * sr, r1: ((i + 1) * sr).min(s.rows), c0: j * sc, c1: ((j + 1) * sc).min(s.cols) }
                };
                match sh.grid {
                    ShardGrid::Cores { x0, y0, x1, y1 } => {
                        let rect = CoreRect { x0, y0, x1, y1 };
                        let blocks = (0..rect.count() as u32).map(shard_block).collect();
                        (rect, blocks)
                    }
                    ShardGrid::Banks { .. } => {
                        let blocks = (0..full.count() as u32).map(shard_block).collect();
                        (full, blocks)
                    }
                }
            }
        }
    }

    /// Dispatches `kernel` over `out`'s blocks; `per_core` appends one core's words after its block.
    fn launch_op(
        self: &Arc<Self>,
        cq: u16,
        kernel: BuiltinKernel,
        ct_args: Vec<u32>,
        out: &Buffer,
        inputs: &[&Buffer],
        per_core: impl Fn(&mut Vec<u32>),
    ) -> Result<()> {
        for b in inputs {
            b.check_device(self)?;
        }
        out.check_device(self)?;
        // A matmul core reads its rows of `a` and its columns of `b`: square blocks read the least. Element-wise
        // kernels read nothing twice, and whole rows are the longest contiguous runs.
        let (rect, blocks) = self.split(out, kernel == BuiltinKernel::Matmul);
        let page = |b: &Buffer| b.accessor().page_bytes() as u32;
        // Double-buffered input and output pages, as a Tensix op would configure; part of the cache key (shapes),
        // never addresses.
        let mut cbs: Vec<CbConfig> = inputs
            .iter()
            .enumerate()
            .map(|(i, b)| CbConfig { index: i as u32, page_size: page(b), num_pages: 2, data_format: b.dtype() as u32 })
            .collect();
        cbs.push(CbConfig { index: 16, page_size: page(out), num_pages: 2, data_format: out.dtype() as u32 });
        let desc = ProgramDesc {
            kernel: KernelSource::Builtin(kernel),
            cores: rect,
            ct_args,
            cbs,
            sems: Vec::new(),
            rt_words: kernel.rt_words() as u16,
        };
        let prog = self.program(desc)?;
        let mut rt = Vec::with_capacity(blocks.len() * kernel.rt_words());
        for blk in &blocks {
            rt.extend_from_slice(&blk.to_words());
            per_core(&mut rt);
        }
        // Read before the dispatch: if a reset slips in between, the output is reported lost (a false alarm at
        // worst), never defined when it is not.
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        // Every op writes each byte of its output it computes, block by block over the whole output, without
        // reading it first (an in-place op lists the buffer as an input too, and then it counts as one).
        prog.run_io(cq, &rt, inputs, &[out])?;
        // The blocks cover the whole output: it is written whole (at replay, when this dispatch was captured).
        out.contents.mark_written(epoch);
        Ok(())
    }

    /// Copies `input` into `out`, converting the element type if they differ (the copy kernel converts, contract
    /// §8.2).
    pub(crate) fn copy_into(self: &Arc<Self>, cq: u16, input: &Buffer, out: &Buffer) -> Result<()> {
        if input.shape() != out.shape() {
            return Err(Error::ShapeMismatch {
                op: "copy".into(),
                shapes: vec![input.shape(), out.shape()],
                rule: "a copy (to_memory_config, reshard, typecast) keeps the shape: input and output shapes differ"
                    .into(),
            });
        }
        let (a, o) = (input.accessor().to_words(), out.accessor().to_words());
        self.launch_op(cq, BuiltinKernel::Copy, vec![], out, &[input], |rt| {
            rt.extend_from_slice(&a);
            rt.extend_from_slice(&o);
        })
    }

    pub(crate) fn matmul_into(self: &Arc<Self>, cq: u16, a: &Buffer, b: &Buffer, out: &Buffer) -> Result<()> {
        let ([m, k], [k2, n]) = (a.shape(), b.shape());
        if k != k2 || out.shape() != [m, n] {
            return Err(Error::ShapeMismatch {
                op: "matmul".into(),
                shapes: vec![a.shape(), b.shape(), out.shape()],
                rule: "a [M, K] x [K, N] product is [M, N]".into(),
            });
        }
        same_dtype("matmul", &[a, b, out])?;
        let (wa, wb, wo) = (a.accessor().to_words(), b.accessor().to_words(), out.accessor().to_words());
        self.launch_op(cq, BuiltinKernel::Matmul, vec![], out, &[a, b], |rt| {
            rt.extend_from_slice(&wa);
            rt.extend_from_slice(&wb);
            rt.extend_from_slice(&wo);
        })
    }

    pub(crate) fn binary_into(
        self: &Arc<Self>,
        cq: u16,
        op: BinaryOp,
        a: &Buffer,
        b: &Buffer,
        out: &Buffer,
    ) -> Result<()> {
        let bcast = if b.shape() == a.shape() {
            0
        } else if b.shape() == [1, a.shape()[1]] {
            1
        } else {
            return Err(Error::ShapeMismatch {
                op: format!("{op:?}"),
                shapes: vec![a.shape(), b.shape()],
                rule: format!(
                    "b must have a's shape, or be one row [1, {}] to broadcast over a's rows; it is not one row",
                    a.shape()[1]
                ),
            });
        };
        if out.shape() != a.shape() {
            return Err(Error::ShapeMismatch {
                op: format!("{op:?}"),
                shapes: vec![a.shape(), b.shape(), out.shape()],
                rule: format!("the output shape {:?} must be a's", out.shape()),
            });
        }
        same_dtype(&format!("{op:?}"), &[a, b, out])?;
        let (wa, wb, wo) = (a.accessor().to_words(), b.accessor().to_words(), out.accessor().to_words());
        self.launch_op(cq, BuiltinKernel::EltwiseBinary, vec![op as u32, bcast], out, &[a, b], |rt| {
            rt.extend_from_slice(&wa);
            rt.extend_from_slice(&wb);
            rt.extend_from_slice(&wo);
        })
    }

    pub(crate) fn unary_into(self: &Arc<Self>, cq: u16, op: UnaryOp, a: &Buffer, out: &Buffer) -> Result<()> {
        if out.shape() != a.shape() {
            return Err(Error::ShapeMismatch {
                op: format!("{op:?}"),
                shapes: vec![a.shape(), out.shape()],
                rule: format!("the output shape {:?} must be the input's", out.shape()),
            });
        }
        same_dtype(&format!("{op:?}"), &[a, out])?;
        if op == UnaryOp::GeluErf {
            self.need_transformer("gelu (erf form)")?;
        }
        let (code, param) = op.code();
        let (wa, wo) = (a.accessor().to_words(), out.accessor().to_words());
        self.launch_op(cq, BuiltinKernel::EltwiseUnary, vec![code], out, &[a], |rt| {
            rt.extend_from_slice(&wa);
            rt.extend_from_slice(&wo);
            rt.push(param.to_bits());
        })
    }

    pub(crate) fn fill(self: &Arc<Self>, cq: u16, out: &Buffer, value: f32) -> Result<()> {
        let wo = out.accessor().to_words();
        self.launch_op(cq, BuiltinKernel::Fill, vec![], out, &[], |rt| {
            rt.extend_from_slice(&wo);
            rt.push(value.to_bits());
        })
    }
}

/// Fewest elements worth a core of its own: below this, launch overhead outweighs the parallelism.
const MIN_ELEMS_PER_CORE: u32 = 256;

/// Splits an output of `rows x cols` units (elements, or tiles of `unit_elems` elements) into `rb x cb` blocks for at
/// most `cores` cores: as many blocks as the data warrants, shaped as square as possible when `square` (each core
/// then reads little redundant input), else in bands of whole rows as far as the rows go.
fn interleaved_split(rows: u32, cols: u32, unit_elems: u32, cores: u32, square: bool) -> (u32, u32) {
    let elems = (rows as u64 * cols as u64).saturating_mul(unit_elems as u64);
    let want = (elems / MIN_ELEMS_PER_CORE as u64).clamp(1, cores.max(1) as u64) as u32;
    if !square {
        let rb = rows.min(want).max(1);
        return (rb, (want / rb).clamp(1, cols));
    }
    let mut best = (1, 1);
    let mut best_key = (0u32, u32::MAX);
    for rb in 1..=rows.min(want) {
        let cb = (want / rb).min(cols).max(1);
        // Most blocks first, then the least input per block.
        let key = (rb * cb, rows.div_ceil(rb) + cols.div_ceil(cb));
        if key.0 > best_key.0 || (key.0 == best_key.0 && key.1 < best_key.1) {
            best = (rb, cb);
            best_key = key;
        }
    }
    best
}

/// Fails unless every buffer has the first one's element type (every kernel but copy computes in one).
fn same_dtype(op: &str, bs: &[&Buffer]) -> Result<()> {
    let d = bs[0].dtype();
    if let Some(b) = bs.iter().find(|b| b.dtype() != d) {
        return Err(Error::DTypeMismatch { op: op.to_string(), expected: d, found: b.dtype() });
    }
    Ok(())
}

impl Device {
    /// Copies `input` into a new buffer with memory config `mem` (`to_memory_config`): any layout to any layout.
    pub fn to_memory_config(&self, cq: u16, input: &Buffer, mem: &MemoryConfig) -> Result<Buffer> {
        let mut spec = *input.spec();
        spec.mem = *mem;
        let out = self.allocate(&spec)?;
        self.inner.copy_into(cq, input, &out)?;
        Ok(out)
    }

    /// Reshards `input` into a new buffer with memory config `mem` (`reshard` without an output tensor).
    pub fn reshard(&self, cq: u16, input: &Buffer, mem: &MemoryConfig) -> Result<Buffer> {
        self.to_memory_config(cq, input, mem)
    }

    /// Copies `input` into a new buffer of element type `dtype` with memory config `mem` (`typecast`): the copy
    /// kernel converts (float32 to bfloat16 rounds to nearest even; bfloat16 to float32 is exact).
    pub fn typecast(&self, cq: u16, input: &Buffer, dtype: DType, mem: &MemoryConfig) -> Result<Buffer> {
        let mut spec = *input.spec();
        spec.dtype = dtype;
        spec.mem = *mem;
        let out = self.allocate(&spec)?;
        self.inner.copy_into(cq, input, &out)?;
        Ok(out)
    }

    /// Reshards `input` into the existing buffer `output` (`reshard(input, mem_config, output_tensor)`), which keeps
    /// its address: the pattern tt-metal's guide "Advanced Performance Optimizations for Models" uses to feed a
    /// trace's input in place. The shapes must agree; the element types may differ, and the copy converts them.
    pub fn reshard_into(&self, cq: u16, input: &Buffer, output: &Buffer) -> Result<()> {
        self.inner.copy_into(cq, input, output)
    }

    /// Copies `input` into a new buffer of tensor layout `layout` with memory config `mem` (`ttnn.to_layout`):
    /// tilize (row-major to tiled) or untilize on the device, by the copy kernel (contract §8.2); shape and element
    /// type are kept. Pass `&input.spec().mem` to keep the memory configuration; a sharded tiled output needs shard
    /// shapes of whole tiles.
    pub fn to_layout(&self, cq: u16, input: &Buffer, layout: TensorLayout, mem: &MemoryConfig) -> Result<Buffer> {
        let spec = crate::BufferSpec { layout, mem: *mem, ..*input.spec() };
        let out = self.allocate(&spec)?;
        self.inner.copy_into(cq, input, &out)?;
        Ok(out)
    }

    /// `a @ b` into a new buffer with memory config `mem`; it has `a`'s tensor layout.
    pub fn matmul(&self, cq: u16, a: &Buffer, b: &Buffer, mem: &MemoryConfig) -> Result<Buffer> {
        let spec = crate::BufferSpec::new(a.shape()[0], b.shape()[1], a.dtype(), *mem).with_layout(a.spec().layout);
        let out = self.allocate(&spec)?;
        self.inner.matmul_into(cq, a, b, &out)?;
        Ok(out)
    }

    /// `a @ b` into `out`.
    pub fn matmul_into(&self, cq: u16, a: &Buffer, b: &Buffer, out: &Buffer) -> Result<()> {
        self.inner.matmul_into(cq, a, b, out)
    }

    /// Element-wise `a op b` (b may be one row, broadcast over a's rows) into a new buffer of `a`'s tensor layout.
    pub fn binary(&self, cq: u16, op: BinaryOp, a: &Buffer, b: &Buffer, mem: &MemoryConfig) -> Result<Buffer> {
        let spec = crate::BufferSpec::new(a.shape()[0], a.shape()[1], a.dtype(), *mem).with_layout(a.spec().layout);
        let out = self.allocate(&spec)?;
        self.inner.binary_into(cq, op, a, b, &out)?;
        Ok(out)
    }

    /// Element-wise `a op b` into `out`.
    pub fn binary_into(&self, cq: u16, op: BinaryOp, a: &Buffer, b: &Buffer, out: &Buffer) -> Result<()> {
        self.inner.binary_into(cq, op, a, b, out)
    }

    /// Element-wise unary op into a new buffer of `a`'s tensor layout.
    pub fn unary(&self, cq: u16, op: UnaryOp, a: &Buffer, mem: &MemoryConfig) -> Result<Buffer> {
        let spec = crate::BufferSpec::new(a.shape()[0], a.shape()[1], a.dtype(), *mem).with_layout(a.spec().layout);
        let out = self.allocate(&spec)?;
        self.inner.unary_into(cq, op, a, &out)?;
        Ok(out)
    }

    /// Element-wise unary op into `out`.
    pub fn unary_into(&self, cq: u16, op: UnaryOp, a: &Buffer, out: &Buffer) -> Result<()> {
        self.inner.unary_into(cq, op, a, out)
    }

    /// Fills `out` with `value`.
    pub fn fill(&self, cq: u16, out: &Buffer, value: f32) -> Result<()> {
        self.inner.fill(cq, out, value)
    }
}

#[cfg(test)]
mod tests {
    use super::interleaved_split;

    #[test]
    fn split_is_bounded_and_square_ish() {
        assert_eq!(interleaved_split(32, 32, 1, 64, true), (2, 2));
        assert_eq!(interleaved_split(1, 1, 1, 64, true), (1, 1));
        let (rb, cb) = interleaved_split(32, 128, 1, 64, true);
        assert_eq!(rb * cb, 16);
        let (rb, cb) = interleaved_split(4096, 4096, 1, 64, true);
        assert_eq!((rb, cb), (8, 8));
        let (rb, cb) = interleaved_split(1, 100_000, 1, 64, true);
        assert_eq!((rb, cb), (1, 64));
        // Element-wise: whole rows first.
        assert_eq!(interleaved_split(128, 256, 1, 64, false), (64, 1));
        assert_eq!(interleaved_split(4, 4096, 1, 64, false), (4, 16));
        let (rb, cb) = interleaved_split(1, 100_000, 1, 64, false);
        assert_eq!((rb, cb), (1, 64));
        // Tiles count their 1024 elements: a [64, 64] tiled output (2 x 2 tiles) is worth 4 cores, not 1.
        assert_eq!(interleaved_split(2, 2, 1024, 64, true), (2, 2));
        assert_eq!(interleaved_split(2, 2, 1024, 64, false), (2, 2));
    }
}
