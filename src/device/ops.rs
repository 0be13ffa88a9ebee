//! Operations built from the built-in kernels (contract §8.2): each is a program whose cores split the output
//! into blocks the way a Tensix op would — a sharded output is computed shard by shard on the cores that hold it,
//! an interleaved output is split into row bands over the whole grid. A tiled output is split on tile boundaries, as
//! a Tensix core computes whole tiles; operands may be row-major or tiled in any mix (contract §8.2).

use super::buffer::{Buffer, MemoryConfig};
use super::patch::{ArgMap, ScalarKind, ScalarName};
use super::program::{ArgStep, KernelSource, ProgramDesc, RtArgs};
use super::{Device, DeviceInner};
use crate::error::{Error, Result};
use std::sync::Arc;
use ttdrv_contract::kernel::{
    ACCESSOR_ADDR_WORD, ACCESSOR_WORDS, Accessor, BLOCK_WORDS, BuiltinKernel, DType, Layout, ShardGrid, TILE_DIM,
    TensorLayout,
};
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
    /// GELU, the exact erf form BERT uses: x (1 + erf(x / √2)) / 2 (contract 1.3).
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

/// How an op's output is split over cores: the rectangle of cores and the steps that give each core its block
/// (contract §4.2.6: `r0, r1, c0, c1` follow the core's position, so the launch carries four steps instead of four
/// words per core).
pub(super) struct Split {
    pub(super) rect: CoreRect,
    pub(super) block: [ArgStep; BLOCK_WORDS],
}

impl Split {
    /// Blocks of `rs` rows and `cs` columns on a grid of `period` block columns: the core at position `k` computes
    /// block row `⌊k / period⌋`, block column `k mod period` when `row_major`, and the transpose (block row
    /// `k mod period`, block column `⌊k / period⌋`) otherwise; bounds past `rows` or `cols` are clamped, so cores
    /// beyond the last block get empty blocks.
    pub(super) fn blocks(
        rect: CoreRect,
        period: u32,
        rs: u32,
        cs: u32,
        rows: u32,
        cols: u32,
        row_major: bool,
    ) -> Split {
        // (outer, inner) strides of the row and column bounds.
        let (r, c) = if row_major { ((rs, 0), (0, cs)) } else { ((0, rs), (cs, 0)) };
        let bound = |index: u32, base: u32, (outer, inner): (u32, u32), limit: u32| ArgStep {
            index,
            base,
            period,
            outer,
            inner,
            limit,
        };
        Split {
            rect,
            block: [bound(0, 0, r, rows), bound(1, rs, r, rows), bound(2, 0, c, cols), bound(3, cs, c, cols)],
        }
    }
}

/// What identifies a built-in operation's program (its [`ProgramDesc`]) without allocating: the op cache key, so
/// that an op call finds its cached program with one hash lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct OpKey {
    kernel: BuiltinKernel,
    rect: CoreRect,
    ct: [u32; MAX_OP_CT],
    /// `(page_size, data_format)` of each input's circular buffer, then the output's.
    cbs: [(u32, u32); MAX_OP_BUFFERS],
}

/// Most compile-time words of a built-in kernel.
const MAX_OP_CT: usize = 2;
/// Most buffers of a built-in operation (two inputs and the output).
const MAX_OP_BUFFERS: usize = 3;
/// Most common runtime words of a built-in operation: three accessors and a parameter.
const MAX_OP_COMMON: usize = 3 * ACCESSOR_WORDS + 1;

/// An op's common runtime words, built on the stack.
struct Common {
    words: [u32; MAX_OP_COMMON],
    len: usize,
}

impl Common {
    fn push(&mut self, words: &[u32]) {
        self.words[self.len..self.len + words.len()].copy_from_slice(words);
        self.len += words.len();
    }

    fn as_slice(&self) -> &[u32] {
        &self.words[..self.len]
    }
}

impl DeviceInner {
    /// The cores that compute `out` and the block of each.
    ///
    /// Blocks are cut in units of `unit` rows and columns (a tile when tiled) and end at the last row or column: a
    /// tiled output's padding is not computed, the kernels zero it (contract §8.3.2). An interleaved output is cut
    /// into equal blocks of whole units (the last ones clamped), as tt-metal's `split_work_to_cores` does, so that the
    /// bounds follow the core's position; a sharded output is computed shard by shard on the units that hold it.
    pub(super) fn split(&self, out: &Buffer, square: bool) -> Split {
        let (gx, gy) = (self.info.grid_x, self.info.grid_y);
        let full = CoreRect { x0: 0, y0: 0, x1: (gx - 1) as u8, y1: (gy - 1) as u8 };
        let s = out.spec();
        let unit = if s.layout == TensorLayout::Tile { TILE_DIM } else { 1 };
        match (s.mem.layout, s.mem.shard) {
            (Layout::Interleaved, _) | (_, None) => {
                let (ur, uc) = (s.rows.div_ceil(unit), s.cols.div_ceil(unit));
                let (rb, cb) = interleaved_split(ur, uc, unit * unit, gx * gy, square);
                // Equal blocks of `rs × cs` units; as many blocks as that takes (no more than asked for).
                let (rs, cs) = (ur.div_ceil(rb), uc.div_ceil(cb));
                let (rb, cb) = (ur.div_ceil(rs), uc.div_ceil(cs));
                let n = rb * cb;
                // The smallest rectangle of whole grid rows that holds n cores (or one partial row).
                let (w, h) = if n <= gx { (n, 1) } else { (gx, n.div_ceil(gx)) };
                let rect = CoreRect { x0: 0, y0: 0, x1: (w - 1) as u8, y1: (h - 1) as u8 };
                // Every bound the cores compute fits u32 (a buffer's rows and columns fit device memory).
                debug_assert!(((rb + 1) as u64 * rs as u64 * unit as u64) < u32::MAX as u64);
                Split::blocks(rect, cb, rs * unit, cs * unit, s.rows, s.cols, true)
            }
            (_, Some(sh)) => {
                let [sr, sc] = sh.shape;
                // Shards divide the padded shape (placement checked it); edge shards of a tiled output hold padding.
                let [pr, pc] = s.padded_shape();
                let (rb, cb) = ((pr / sr as u64) as u32, (pc / sc as u64) as u32);
                let rect = match sh.grid {
                    ShardGrid::Cores { x0, y0, x1, y1 } => CoreRect { x0, y0, x1, y1 },
                    // DRAM shards: the whole grid computes them, shard p on the core at position p.
                    ShardGrid::Banks { .. } => full,
                };
                // Shard p is (p / cb, p % cb) row-major, (p % rb, p / rb) column-major.
                let period = if sh.col_major { rb } else { cb };
                Split::blocks(rect, period, sr, sc, s.rows, s.cols, !sh.col_major)
            }
        }
    }

    /// Dispatches `kernel` over `out`'s blocks: the accessors and parameters are the same for every core
    /// and go into the launch once; each core's block follows its position. Allocates nothing once the op's program
    /// is cached.
    ///
    /// `accessors` are those of `inputs`, then `out`'s; `params` follow them in the common words, the first one
    /// patchable in a trace under the name `param` when given. The accessors are passed in rather than read from
    /// the buffers again, so each is built once per call.
    #[allow(clippy::too_many_arguments)]
    fn launch_op(
        self: &Arc<Self>,
        cq: u16,
        kernel: BuiltinKernel,
        ct_args: &[u32],
        out: &Buffer,
        inputs: &[&Buffer],
        accessors: &[Accessor],
        params: &[u32],
        param: Option<(&'static str, ScalarKind)>,
    ) -> Result<()> {
        debug_assert_eq!(accessors.len(), inputs.len() + 1);
        for b in inputs {
            b.check_device(self)?;
        }
        out.check_device(self)?;
        // A matmul core reads its rows of `a` and its columns of `b`: square blocks read the least. Element-wise
        // kernels read nothing twice, and whole rows are the longest contiguous runs.
        let split = self.split(out, kernel == BuiltinKernel::Matmul);
        let page = |a: &Accessor| a.page_bytes() as u32;
        let mut key = OpKey { kernel, rect: split.rect, ct: [0; MAX_OP_CT], cbs: [(0, u32::MAX); MAX_OP_BUFFERS] };
        key.ct[..ct_args.len()].copy_from_slice(ct_args);
        for (i, a) in accessors.iter().enumerate() {
            key.cbs[i] = (page(a), a.dtype as u32);
        }
        let mut common = Common { words: [0; MAX_OP_COMMON], len: 0 };
        for a in accessors {
            common.push(&a.to_words());
        }
        common.push(params);
        let cached = self.programs.lock().unwrap_or_else(|e| e.into_inner()).op(&key);
        let entry = match cached {
            Some(e) => e,
            None => {
                let (ins, o) = accessors.split_at(inputs.len());
                let desc = op_desc(kernel, split.rect, ct_args.to_vec(), ins, &o[0]);
                let entry = self.program(desc)?.into_entry();
                self.programs.lock().unwrap_or_else(|e| e.into_inner()).insert_op(key, entry.clone());
                entry
            }
        };
        let args = RtArgs { common: common.as_slice(), steps: &split.block, per_core: &[] };
        // Every op writes each byte of its output it computes, block by block over the whole output, without
        // reading it first (an in-place op lists the buffer as an input too, and then it counts as one). The
        // arguments are right by construction and the buffers were checked above.
        // Read before the dispatch: if a reset slips in between, the output is reported lost (a false alarm at
        // worst), never defined when it is not.
        let epoch = self.epoch.load(std::sync::atomic::Ordering::Acquire);
        // What a trace capturing this launch may patch (`patch.rs`): accessor i's address word is buffer i's address
        // (inputs, then the output), and the first parameter may be named. Built on the stack: a live dispatch
        // ignores it.
        let mut addrs = [(0u16, 0u8); MAX_OP_BUFFERS];
        for (i, a) in addrs.iter_mut().enumerate().take(accessors.len()) {
            *a = ((BLOCK_WORDS + i * ACCESSOR_WORDS + ACCESSOR_ADDR_WORD) as u16, i as u8);
        }
        let scalar = param
            .map(|(name, kind)| ((BLOCK_WORDS + accessors.len() * ACCESSOR_WORDS) as u16, ScalarName::Op(name), kind));
        let map = ArgMap { addrs: &addrs[..accessors.len()], scalars: scalar.as_slice(), complete: true };
        self.dispatch_checked(&entry, cq, &args, BLOCK_WORDS as u16, inputs, &[out], &map)?;
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
        self.launch_op(cq, BuiltinKernel::Copy, &[], out, &[input], &[input.accessor(), out.accessor()], &[], None)
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
        same_dtype(|| "matmul".into(), &[a, b, out])?;
        let acc = [a.accessor(), b.accessor(), out.accessor()];
        self.launch_op(cq, BuiltinKernel::Matmul, &[], out, &[a, b], &acc, &[], None)
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
        same_dtype(|| format!("{op:?}"), &[a, b, out])?;
        let acc = [a.accessor(), b.accessor(), out.accessor()];
        self.launch_op(cq, BuiltinKernel::EltwiseBinary, &[op as u32, bcast], out, &[a, b], &acc, &[], None)
    }

    pub(crate) fn unary_into(self: &Arc<Self>, cq: u16, op: UnaryOp, a: &Buffer, out: &Buffer) -> Result<()> {
        if out.shape() != a.shape() {
            return Err(Error::ShapeMismatch {
                op: format!("{op:?}"),
                shapes: vec![a.shape(), out.shape()],
                rule: format!("the output shape {:?} must be the input's", out.shape()),
            });
        }
        same_dtype(|| format!("{op:?}"), &[a, out])?;
        if op == UnaryOp::GeluErf {
            self.need_transformer("gelu (erf form)")?;
        }
        let (code, param) = op.code();
        let acc = [a.accessor(), out.accessor()];
        // Only the scale's factor means something to patch; the other ops ignore their parameter.
        let name = matches!(op, UnaryOp::Scale(_)).then_some(("scale.factor", ScalarKind::F32));
        self.launch_op(cq, BuiltinKernel::EltwiseUnary, &[code], out, &[a], &acc, &[param.to_bits()], name)
    }

    pub(crate) fn fill(self: &Arc<Self>, cq: u16, out: &Buffer, value: f32) -> Result<()> {
        let name = Some(("fill.value", ScalarKind::F32));
        self.launch_op(cq, BuiltinKernel::Fill, &[], out, &[], &[out.accessor()], &[value.to_bits()], name)
    }
}

/// The program of a built-in operation: `kernel` on `rect` with double-buffered input and output pages, as a Tensix
/// op would configure (circular buffers 0.. for the inputs, 16 for the output). Shapes only, never addresses: the
/// description is a cache key.
pub(super) fn op_desc(
    kernel: BuiltinKernel,
    rect: CoreRect,
    ct_args: Vec<u32>,
    inputs: &[Accessor],
    out: &Accessor,
) -> ProgramDesc {
    let cb = |index: u32, a: &Accessor| CbConfig {
        index,
        page_size: a.page_bytes() as u32,
        num_pages: 2,
        data_format: a.dtype as u32,
    };
    let mut cbs: Vec<CbConfig> = inputs.iter().enumerate().map(|(i, a)| cb(i as u32, a)).collect();
    cbs.push(cb(16, out));
    ProgramDesc {
        kernel: KernelSource::Builtin(kernel),
        cores: rect,
        ct_args,
        cbs,
        sems: Vec::new(),
        rt_words: kernel.rt_words() as u16,
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

/// Fails unless every buffer has the first one's element type (every kernel but copy computes in one). The op's
/// name is made only for the error.
fn same_dtype(op: impl FnOnce() -> String, bs: &[&Buffer]) -> Result<()> {
    let d = bs[0].dtype();
    if let Some(b) = bs.iter().find(|b| b.dtype() != d) {
        return Err(Error::DTypeMismatch { op: op(), expected: d, found: b.dtype() });
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
