//! The emulated device's built-in kernel catalog (contract §8.2).
//!
//! Each call is one kernel instance on one core: it receives that core's runtime arguments, computes its output
//! block, and reads whatever input elements the block needs through tensor accessors, wherever they live, as a
//! Tensix data-movement kernel would through its address generators. The accessor hides the element layout: a
//! row-major tensor yields runs up to a page long, a tiled one runs up to a face row (contract §8.3.2), so every
//! kernel takes row-major and tiled operands in any mix, and a copy between the two tilizes or untilizes. A
//! [`Launch`] carries what the instances of one launch share — scratch memory and the accessors already checked — so
//! per-core overhead stays small.

use super::memory::DeviceMemory;
use super::timing::Work;
use ttdrv_contract::DevAddr;
use ttdrv_contract::kernel::{
    ACCESSOR_WORDS, Accessor, BLOCK_WORDS, Block, BuiltinKernel, DType, FACE_DIM, bf16_to_f32, f32_to_bf16,
};

type KResult<T> = Result<T, String>;

/// State shared by the kernel instances of one launch.
pub(super) struct Launch<'a> {
    mem: &'a DeviceMemory,
    kernel: BuiltinKernel,
    ct: &'a [u32],
    /// Accessors checked so far: (words, parsed).
    checked: Vec<([u32; ACCESSOR_WORDS], Accessor)>,
    raw: Vec<u8>,
    a: Vec<f32>,
    b: Vec<f32>,
    out: Vec<f32>,
}

impl<'a> Launch<'a> {
    /// Prepares a launch of `kernel` with compile-time args `ct`.
    pub fn new(mem: &'a DeviceMemory, kernel: BuiltinKernel, ct: &'a [u32]) -> KResult<Launch<'a>> {
        if ct.len() < kernel.ct_words() {
            return Err(format!("{} needs {} compile-time words, got {}", kernel.name(), kernel.ct_words(), ct.len()));
        }
        Ok(Launch {
            mem,
            kernel,
            ct,
            checked: Vec::new(),
            raw: Vec::new(),
            a: Vec::new(),
            b: Vec::new(),
            out: Vec::new(),
        })
    }

    fn accessor(&mut self, w: &[u32]) -> KResult<Accessor> {
        let words: [u32; ACCESSOR_WORDS] = w.try_into().map_err(|_| "short accessor")?;
        if let Some((_, a)) = self.checked.iter().find(|(k, _)| *k == words) {
            return Ok(*a);
        }
        let a = Accessor::from_words(&words).ok_or("malformed accessor")?;
        a.validate(self.mem.geometry())?;
        self.checked.push((words, a));
        Ok(a)
    }

    /// Runs one instance with this core's runtime args `rt`.
    pub fn run_core(&mut self, rt: &[u32]) -> KResult<Work> {
        let k = self.kernel;
        if rt.len() < k.rt_words() {
            return Err(format!("{} needs {} runtime words, got {}", k.name(), k.rt_words(), rt.len()));
        }
        let block = Block::from_words(&rt[..BLOCK_WORDS]);
        if block.is_empty() {
            return Ok(Work::default());
        }
        let acc_words = |i: usize| &rt[BLOCK_WORDS + i * ACCESSOR_WORDS..BLOCK_WORDS + (i + 1) * ACCESSOR_WORDS];
        let param = |i: usize| f32::from_bits(rt[BLOCK_WORDS + i * ACCESSOR_WORDS]);
        match k {
            BuiltinKernel::Copy => {
                let (s, d) = (self.accessor(acc_words(0))?, self.accessor(acc_words(1))?);
                self.copy(block, &s, &d)
            }
            BuiltinKernel::EltwiseBinary => {
                let (a, b, o) =
                    (self.accessor(acc_words(0))?, self.accessor(acc_words(1))?, self.accessor(acc_words(2))?);
                let (op, bc) = (self.ct[0], self.ct[1]);
                self.binary(block, op, bc, &a, &b, &o)
            }
            BuiltinKernel::EltwiseUnary => {
                let (a, o) = (self.accessor(acc_words(0))?, self.accessor(acc_words(1))?);
                self.unary(block, self.ct[0], &a, &o, param(2))
            }
            BuiltinKernel::Matmul => {
                let (a, b, o) =
                    (self.accessor(acc_words(0))?, self.accessor(acc_words(1))?, self.accessor(acc_words(2))?);
                self.matmul(block, &a, &b, &o)
            }
            BuiltinKernel::Fill => {
                let o = self.accessor(acc_words(0))?;
                self.fill(block, &o, param(1))
            }
            BuiltinKernel::LayerNorm => {
                let residual = flag(self.ct[0], "residual")?;
                let x = self.accessor(acc_words(0))?;
                let res = if residual { Some(self.accessor(acc_words(1))?) } else { None };
                let (g, b, o) =
                    (self.accessor(acc_words(2))?, self.accessor(acc_words(3))?, self.accessor(acc_words(4))?);
                self.layernorm(block, &x, res.as_ref(), &g, &b, &o, param(5))
            }
            BuiltinKernel::Softmax => {
                let masked = flag(self.ct[0], "masked")?;
                let x = self.accessor(acc_words(0))?;
                let mask = if masked { Some(self.accessor(acc_words(1))?) } else { None };
                let o = self.accessor(acc_words(2))?;
                self.softmax(block, &x, mask.as_ref(), &o, param(3))
            }
            BuiltinKernel::Bmm => {
                let (a, b, o) =
                    (self.accessor(acc_words(0))?, self.accessor(acc_words(1))?, self.accessor(acc_words(2))?);
                let shape = BmmShape {
                    batch: self.ct[0],
                    heads: self.ct[1],
                    views: self.ct[2],
                    transpose_b: flag(self.ct[3], "transpose_b")?,
                };
                self.bmm(block, shape, &a, &b, &o, param(3))
            }
            BuiltinKernel::Linear => {
                let has_bias = flag(self.ct[0], "bias")?;
                let gelu = flag(self.ct[1], "act")?;
                let (a, b) = (self.accessor(acc_words(0))?, self.accessor(acc_words(1))?);
                let bias = if has_bias { Some(self.accessor(acc_words(2))?) } else { None };
                let o = self.accessor(acc_words(3))?;
                self.linear(block, &a, &b, bias.as_ref(), &o, gelu)
            }
            BuiltinKernel::Embedding => {
                let n = self.ct[0] as usize;
                if !(1..=3).contains(&n) {
                    return Err(format!("embedding takes 1 to 3 tables, not {n}"));
                }
                let ids = self.accessor(acc_words(0))?;
                let mut tables = [ids; 3];
                for (t, slot) in tables.iter_mut().enumerate().take(n) {
                    *slot = self.accessor(acc_words(1 + t))?;
                }
                let o = self.accessor(acc_words(4))?;
                self.embedding(block, &ids, &tables[..n], &o)
            }
            BuiltinKernel::MeanPool => {
                let normalize = flag(self.ct[0], "normalize")?;
                let (x, m, o) =
                    (self.accessor(acc_words(0))?, self.accessor(acc_words(1))?, self.accessor(acc_words(2))?);
                self.mean_pool(block, &x, &m, &o, normalize)
            }
        }
    }

    fn copy(&mut self, b: Block, src: &Accessor, dst: &Accessor) -> KResult<Work> {
        if (src.rows, src.cols) != (dst.rows, dst.cols) {
            return Err("copy between different shapes".into());
        }
        check_block(b, dst)?;
        let n = elems(b);
        if src.dtype == dst.dtype {
            // Same element type: move bytes run by run, no conversion.
            copy_raw(self.mem, b, src, dst, &mut self.raw)?;
        } else {
            let mut v = std::mem::take(&mut self.a);
            read_block(self.mem, src, Block { r0: b.r0, r1: b.r1, c0: b.c0, c1: b.c1 }, &mut v, &mut self.raw)?;
            write_block(self.mem, dst, b, &v, &mut self.raw)?;
            self.a = v;
        }
        zero_padding(self.mem, dst, b, &mut self.raw)?;
        Ok(Work { flops: 0, bytes: n * (src.dtype.size() + dst.dtype.size()) as u64 })
    }

    fn binary(&mut self, blk: Block, op: u32, bcast: u32, a: &Accessor, b: &Accessor, out: &Accessor) -> KResult<Work> {
        if a.dtype != b.dtype || a.dtype != out.dtype {
            return Err("eltwise_binary needs one element type".into());
        }
        if (a.rows, a.cols) != (out.rows, out.cols) {
            return Err("eltwise_binary output shape differs from a".into());
        }
        let row_bcast = match bcast {
            0 if (b.rows, b.cols) == (a.rows, a.cols) => false,
            1 if b.rows == 1 && b.cols == a.cols => true,
            _ => return Err("eltwise_binary operand b has the wrong shape for the broadcast mode".into()),
        };
        if op > 2 {
            return Err(format!("unknown binary op {op}"));
        }
        check_block(blk, out)?;
        let (mut va, mut vb) = (std::mem::take(&mut self.a), std::mem::take(&mut self.b));
        read_block(self.mem, a, Block { r0: blk.r0, r1: blk.r1, c0: blk.c0, c1: blk.c1 }, &mut va, &mut self.raw)?;
        let w = (blk.c1 - blk.c0) as usize;
        if row_bcast {
            read_block(self.mem, b, Block { r0: 0, r1: 1, c0: blk.c0, c1: blk.c1 }, &mut vb, &mut self.raw)?;
        } else {
            read_block(self.mem, b, Block { r0: blk.r0, r1: blk.r1, c0: blk.c0, c1: blk.c1 }, &mut vb, &mut self.raw)?;
        }
        // With a broadcast row, every row of `a` pairs with the one row of `b`; otherwise row with row.
        for (i, row) in va.chunks_exact_mut(w).enumerate() {
            let brow = if row_bcast { &vb[..w] } else { &vb[i * w..(i + 1) * w] };
            match op {
                0 => row.iter_mut().zip(brow).for_each(|(x, y)| *x += y),
                1 => row.iter_mut().zip(brow).for_each(|(x, y)| *x -= y),
                _ => row.iter_mut().zip(brow).for_each(|(x, y)| *x *= y),
            }
        }
        write_block(self.mem, out, blk, &va, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b) = (va, vb);
        let n = elems(blk);
        Ok(Work { flops: n, bytes: 3 * n * a.dtype.size() as u64 })
    }

    fn unary(&mut self, blk: Block, op: u32, a: &Accessor, out: &Accessor, param: f32) -> KResult<Work> {
        if a.dtype != out.dtype || (a.rows, a.cols) != (out.rows, out.cols) {
            return Err("eltwise_unary needs equal shapes and element types".into());
        }
        check_block(blk, out)?;
        let mut v = std::mem::take(&mut self.a);
        read_block(self.mem, a, Block { r0: blk.r0, r1: blk.r1, c0: blk.c0, c1: blk.c1 }, &mut v, &mut self.raw)?;
        // Modelled cost per element: relu and scale are one op, exp and gelu a short polynomial each. Each arm is
        // its own loop, so the compiler vectorises it instead of calling through a pointer per element.
        let cost = match op {
            0 => {
                v.iter_mut().for_each(|x| *x = x.max(0.0));
                1
            }
            1 => {
                v.iter_mut().for_each(|x| *x = gelu(*x));
                12
            }
            2 => {
                v.iter_mut().for_each(|x| *x = x.exp());
                8
            }
            3 => {
                v.iter_mut().for_each(|x| *x *= param);
                1
            }
            4 => {
                v.iter_mut().for_each(|x| *x = gelu_erf(*x));
                16
            }
            _ => return Err(format!("unknown unary op {op}")),
        };
        write_block(self.mem, out, blk, &v, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        self.a = v;
        let n = elems(blk);
        Ok(Work { flops: cost * n, bytes: 2 * n * a.dtype.size() as u64 })
    }

    fn matmul(&mut self, blk: Block, a: &Accessor, b: &Accessor, out: &Accessor) -> KResult<Work> {
        if a.dtype != b.dtype || a.dtype != out.dtype {
            return Err("matmul needs one element type".into());
        }
        if a.cols != b.rows || out.rows != a.rows || out.cols != b.cols {
            return Err(format!(
                "matmul shapes do not agree: [{}, {}] x [{}, {}] -> [{}, {}]",
                a.rows, a.cols, b.rows, b.cols, out.rows, out.cols
            ));
        }
        check_block(blk, out)?;
        let k = a.cols as usize;
        let (m, n) = ((blk.r1 - blk.r0) as usize, (blk.c1 - blk.c0) as usize);
        let (mut va, mut vb, mut acc) =
            (std::mem::take(&mut self.a), std::mem::take(&mut self.b), std::mem::take(&mut self.out));
        read_block(self.mem, a, Block { r0: blk.r0, r1: blk.r1, c0: 0, c1: a.cols }, &mut va, &mut self.raw)?;
        read_block(self.mem, b, Block { r0: 0, r1: b.rows, c0: blk.c0, c1: blk.c1 }, &mut vb, &mut self.raw)?;
        acc.clear();
        acc.resize(m * n, 0.0);
        for i in 0..m {
            let out_row = &mut acc[i * n..(i + 1) * n];
            for kk in 0..k {
                let x = va[i * k + kk];
                let b_row = &vb[kk * n..(kk + 1) * n];
                for (o, y) in out_row.iter_mut().zip(b_row) {
                    *o += x * y;
                }
            }
        }
        write_block(self.mem, out, blk, &acc, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b, self.out) = (va, vb, acc);
        let es = a.dtype.size() as u64;
        Ok(Work { flops: 2 * (m * n * k) as u64, bytes: ((m * k + k * n + m * n) as u64) * es })
    }

    fn fill(&mut self, blk: Block, out: &Accessor, value: f32) -> KResult<Work> {
        check_block(blk, out)?;
        let mut v = std::mem::take(&mut self.a);
        v.clear();
        v.resize(elems(blk) as usize, value);
        write_block(self.mem, out, blk, &v, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        self.a = v;
        Ok(Work { flops: 0, bytes: elems(blk) * out.dtype.size() as u64 })
    }
}

fn check_block(b: Block, out: &Accessor) -> KResult<()> {
    if b.r1 > out.rows || b.c1 > out.cols {
        return Err(format!("block {b:?} outside the [{}, {}] output", out.rows, out.cols));
    }
    Ok(())
}

fn elems(b: Block) -> u64 {
    if b.is_empty() { 0 } else { (b.r1 - b.r0) as u64 * (b.c1 - b.c0) as u64 }
}

fn fault_msg(f: super::Fault) -> String {
    format!("{f:?}")
}

/// Reads block `blk` of `a` as f32, row-major, into `out`.
fn read_block(mem: &DeviceMemory, a: &Accessor, blk: Block, out: &mut Vec<f32>, raw: &mut Vec<u8>) -> KResult<()> {
    let Block { r0, r1, c0, c1 } = blk;
    out.clear();
    let geo = *mem.geometry();
    let es = a.dtype.size();
    let w = (c1 - c0) as usize;
    if a.dtype == DType::Float32 && cfg!(target_endian = "little") {
        // Device memory holds little-endian f32 (contract §8.3): read it straight into the output, no conversion.
        out.resize((r1 - r0) as usize * w, 0.0);
        for (i, r) in (r0..r1).enumerate() {
            let row = &mut out[i * w..(i + 1) * w];
            // SAFETY: the byte view covers exactly `row`; every bit pattern is a valid f32.
            let bytes = unsafe { std::slice::from_raw_parts_mut(row.as_mut_ptr() as *mut u8, w * 4) };
            let mut c = c0;
            while c < c1 {
                let run = a.locate(&geo, r, c);
                let n = run.len.min(c1 - c) as usize;
                let off = (c - c0) as usize * 4;
                mem.read(DevAddr { mem: a.mem, unit: run.unit, offset: run.offset }, &mut bytes[off..off + n * 4])
                    .map_err(fault_msg)?;
                c += n as u32;
            }
        }
        return Ok(());
    }
    out.reserve((r1 - r0) as usize * w);
    raw.resize(w * es, 0);
    for r in r0..r1 {
        let mut c = c0;
        while c < c1 {
            let run = a.locate(&geo, r, c);
            let n = run.len.min(c1 - c) as usize;
            let off = (c - c0) as usize * es;
            mem.read(DevAddr { mem: a.mem, unit: run.unit, offset: run.offset }, &mut raw[off..off + n * es])
                .map_err(fault_msg)?;
            c += n as u32;
        }
        match a.dtype {
            DType::Float32 => out.extend(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
            DType::BFloat16 => out.extend(raw.chunks_exact(2).map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        }
    }
    Ok(())
}

/// Writes `vals` (row-major, `(r1 - r0) × (c1 - c0)`) into block `b` of `a`.
fn write_block(mem: &DeviceMemory, a: &Accessor, b: Block, vals: &[f32], raw: &mut Vec<u8>) -> KResult<()> {
    let geo = *mem.geometry();
    let es = a.dtype.size();
    let w = (b.c1 - b.c0) as usize;
    raw.resize(w * es, 0);
    for (i, r) in (b.r0..b.r1).enumerate() {
        let row = &vals[i * w..(i + 1) * w];
        if a.dtype == DType::Float32 && cfg!(target_endian = "little") {
            // SAFETY: the byte view covers exactly `row`, which stays borrowed while the view lives.
            let bytes = unsafe { std::slice::from_raw_parts(row.as_ptr() as *const u8, w * 4) };
            let mut c = b.c0;
            while c < b.c1 {
                let run = a.locate(&geo, r, c);
                let n = run.len.min(b.c1 - c) as usize;
                let off = (c - b.c0) as usize * 4;
                mem.write(DevAddr { mem: a.mem, unit: run.unit, offset: run.offset }, &bytes[off..off + n * 4])
                    .map_err(fault_msg)?;
                c += n as u32;
            }
            continue;
        }
        match a.dtype {
            DType::Float32 => {
                for (d, v) in raw.chunks_exact_mut(4).zip(row) {
                    d.copy_from_slice(&v.to_le_bytes());
                }
            }
            DType::BFloat16 => {
                for (d, v) in raw.chunks_exact_mut(2).zip(row) {
                    d.copy_from_slice(&f32_to_bf16(*v).to_le_bytes());
                }
            }
        }
        let mut c = b.c0;
        while c < b.c1 {
            let run = a.locate(&geo, r, c);
            let n = run.len.min(b.c1 - c) as usize;
            let off = (c - b.c0) as usize * es;
            mem.write(DevAddr { mem: a.mem, unit: run.unit, offset: run.offset }, &raw[off..off + n * es])
                .map_err(fault_msg)?;
            c += n as u32;
        }
    }
    Ok(())
}

/// Writes zeros to the padding that block `b` of the tiled output `a` borders (contract §8.3.2): the padding columns
/// right of the block when it ends at the last column, the padding rows below it when it ends at the last row, and
/// the corner when both. Every block of a launch does this for its own edge, so each padding element is written once.
/// A row-major output has no padding.
fn zero_padding(mem: &DeviceMemory, a: &Accessor, b: Block, raw: &mut Vec<u8>) -> KResult<()> {
    if !a.is_tiled() {
        return Ok(());
    }
    let geo = *mem.geometry();
    let es = a.dtype.size();
    let (pr, pc) = a.padded_shape();
    let fits = |v: u64| u32::try_from(v).map_err(|_| format!("padded shape {pr} x {pc} is beyond the device"));
    let r_end = if b.r1 == a.rows { fits(pr)? } else { b.r1 };
    let c_end = if b.c1 == a.cols { fits(pc)? } else { b.c1 };
    raw.clear();
    raw.resize(FACE_DIM as usize * es, 0);
    for r in b.r0..r_end {
        // In a row of data the padding starts after the last column; below the data the whole row is padding.
        let mut c = if r < a.rows { a.cols.max(b.c0) } else { b.c0 };
        while c < c_end {
            let run = a.locate_padded(&geo, r, c);
            let n = run.len.min(c_end - c) as usize;
            mem.write(DevAddr { mem: a.mem, unit: run.unit, offset: run.offset }, &raw[..n * es]).map_err(fault_msg)?;
            c += n as u32;
        }
    }
    Ok(())
}

/// Copies block `b` between two tensors of one element type, run by run, without conversion.
fn copy_raw(mem: &DeviceMemory, b: Block, src: &Accessor, dst: &Accessor, raw: &mut Vec<u8>) -> KResult<()> {
    let geo = *mem.geometry();
    let es = src.dtype.size();
    raw.resize((b.c1 - b.c0) as usize * es, 0);
    for r in b.r0..b.r1 {
        let mut c = b.c0;
        while c < b.c1 {
            let (s, d) = (src.locate(&geo, r, c), dst.locate(&geo, r, c));
            let n = s.len.min(d.len).min(b.c1 - c) as usize;
            let buf = &mut raw[..n * es];
            mem.read(DevAddr { mem: src.mem, unit: s.unit, offset: s.offset }, buf).map_err(fault_msg)?;
            mem.write(DevAddr { mem: dst.mem, unit: d.unit, offset: d.offset }, buf).map_err(fault_msg)?;
            c += n as u32;
        }
    }
    Ok(())
}

fn gelu(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + (K * (x + 0.044_715 * x * x * x)).tanh())
}

fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// A 0/1 compile-time flag.
fn flag(v: u32, name: &str) -> KResult<bool> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(format!("compile-time word `{name}` must be 0 or 1, not {v}")),
    }
}

/// Fails unless every tensor has the first one's element type.
fn one_dtype(kernel: &str, ts: &[&Accessor]) -> KResult<()> {
    if ts.iter().any(|t| t.dtype != ts[0].dtype) {
        return Err(format!("{kernel} needs one element type"));
    }
    Ok(())
}

/// Fails unless the block spans whole rows of `out` (a row reduction needs every column of its row).
fn whole_rows(kernel: &str, b: Block, out: &Accessor) -> KResult<()> {
    check_block(b, out)?;
    if b.c0 != 0 || b.c1 != out.cols {
        return Err(format!("{kernel} blocks span whole rows: columns [0, {}), not [{}, {})", out.cols, b.c0, b.c1));
    }
    Ok(())
}

/// `c = alpha × a × b` for an `m × k` matrix `a` and a `k × n` matrix `b` given by their row and column strides
/// (elements), `c` dense row-major `m × n`.
#[allow(clippy::too_many_arguments)]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    sa: (usize, usize),
    b: &[f32],
    sb: (usize, usize),
    c: &mut [f32],
) {
    let last = |rows: usize, cols: usize, (rs, cs): (usize, usize)| (rows - 1) * rs + (cols - 1) * cs;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    // The strides must keep every element inside its slice: matrixmultiply takes raw pointers.
    assert!(last(m, k, sa) < a.len() && last(k, n, sb) < b.len() && m * n <= c.len(), "gemm operands out of bounds");
    // SAFETY: the assert above bounds every element sgemm reads through `a` and `b` and writes through `c`; `c` is
    // borrowed mutably and does not alias `a` or `b`; strides fit isize because the slices' lengths do.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            sa.0 as isize,
            sa.1 as isize,
            b.as_ptr(),
            sb.0 as isize,
            sb.1 as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

/// The compile-time words of `bmm` (contract §8.2).
#[derive(Clone, Copy, Debug)]
struct BmmShape {
    batch: u32,
    heads: u32,
    views: u32,
    transpose_b: bool,
}

/// Where the matrices of one `bmm` operand live: matrix `z` is `rows × cols` at (`r0(z)`, `c0(z)`).
#[derive(Clone, Copy, Debug)]
struct MatrixView {
    heads_view: bool,
    heads: u32,
    rows: u32,
    cols: u32,
}

impl MatrixView {
    fn new(t: &Accessor, heads_view: bool, s: BmmShape, name: &str) -> KResult<MatrixView> {
        let z = s.batch * s.heads;
        let (rd, cd) = if heads_view { (s.batch, s.heads) } else { (z, 1) };
        if t.rows % rd != 0 || t.cols % cd != 0 {
            return Err(format!(
                "bmm: `{name}` [{}, {}] does not divide into {} matrices ({} view)",
                t.rows,
                t.cols,
                z,
                if heads_view { "heads" } else { "stacked" }
            ));
        }
        Ok(MatrixView { heads_view, heads: s.heads, rows: t.rows / rd, cols: t.cols / cd })
    }

    /// First row and column of matrix `z`.
    fn origin(&self, z: u32) -> (u32, u32) {
        if self.heads_view { ((z / self.heads) * self.rows, (z % self.heads) * self.cols) } else { (z * self.rows, 0) }
    }
}

/// The transformer kernels (contract §8.2, since 1.3).
impl Launch<'_> {
    #[allow(clippy::too_many_arguments)]
    fn layernorm(
        &mut self,
        blk: Block,
        x: &Accessor,
        res: Option<&Accessor>,
        gamma: &Accessor,
        beta: &Accessor,
        out: &Accessor,
        eps: f32,
    ) -> KResult<Work> {
        one_dtype("layernorm", &[x, gamma, beta, out])?;
        if (x.rows, x.cols) != (out.rows, out.cols) || res.is_some_and(|r| (r.rows, r.cols) != (x.rows, x.cols)) {
            return Err("layernorm: in, res and out need one shape".into());
        }
        if let Some(r) = res {
            one_dtype("layernorm", &[x, r])?;
        }
        if (gamma.rows, gamma.cols) != (1, x.cols) || (beta.rows, beta.cols) != (1, x.cols) {
            return Err(format!("layernorm: gamma and beta are one row [1, {}]", x.cols));
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            return Err(format!("layernorm: eps {eps} is not a finite non-negative number"));
        }
        whole_rows("layernorm", blk, out)?;
        let w = x.cols as usize;
        let (mut v, mut r, mut gb) =
            (std::mem::take(&mut self.a), std::mem::take(&mut self.b), std::mem::take(&mut self.out));
        read_block(self.mem, x, blk, &mut v, &mut self.raw)?;
        if let Some(res) = res {
            read_block(self.mem, res, blk, &mut r, &mut self.raw)?;
            v.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
        }
        let row = Block { r0: 0, r1: 1, c0: 0, c1: x.cols };
        read_block(self.mem, gamma, row, &mut r, &mut self.raw)?;
        read_block(self.mem, beta, row, &mut gb, &mut self.raw)?;
        for xs in v.chunks_exact_mut(w) {
            let mean = xs.iter().sum::<f32>() / w as f32;
            let var = xs.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / w as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for ((a, g), b) in xs.iter_mut().zip(&r).zip(&gb) {
                *a = (*a - mean) * inv * g + b;
            }
        }
        write_block(self.mem, out, blk, &v, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b, self.out) = (v, r, gb);
        let n = elems(blk);
        let inputs = if res.is_some() { 3 } else { 2 };
        Ok(Work { flops: 8 * n, bytes: inputs * n * x.dtype.size() as u64 })
    }

    fn softmax(
        &mut self,
        blk: Block,
        x: &Accessor,
        mask: Option<&Accessor>,
        out: &Accessor,
        scale: f32,
    ) -> KResult<Work> {
        one_dtype("softmax", &[x, out])?;
        if (x.rows, x.cols) != (out.rows, out.cols) {
            return Err("softmax: in and out need one shape".into());
        }
        if let Some(m) = mask {
            one_dtype("softmax", &[x, m])?;
            if m.cols != x.cols || m.rows == 0 || x.rows % m.rows != 0 {
                return Err(format!(
                    "softmax: mask [{}, {}] must have in's {} columns and a number of rows dividing in's {}",
                    m.rows, m.cols, x.cols, x.rows
                ));
            }
        }
        whole_rows("softmax", blk, out)?;
        let w = x.cols as usize;
        let (mut v, mut mv) = (std::mem::take(&mut self.a), std::mem::take(&mut self.b));
        read_block(self.mem, x, blk, &mut v, &mut self.raw)?;
        // The mask rows the block's rows use: row r takes mask row r / g.
        let g = mask.map_or(1, |m| x.rows / m.rows);
        let m0 = blk.r0 / g;
        if let Some(m) = mask {
            let mb = Block { r0: m0, r1: (blk.r1 - 1) / g + 1, c0: 0, c1: m.cols };
            read_block(self.mem, m, mb, &mut mv, &mut self.raw)?;
        }
        for (i, xs) in v.chunks_exact_mut(w).enumerate() {
            let r = blk.r0 + i as u32;
            xs.iter_mut().for_each(|a| *a *= scale);
            if mask.is_some() {
                let k = (r / g - m0) as usize;
                xs.iter_mut().zip(&mv[k * w..(k + 1) * w]).for_each(|(a, m)| *a += m);
            }
            let max = xs.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            let mut sum = 0.0;
            for a in xs.iter_mut() {
                *a = (*a - max).exp();
                sum += *a;
            }
            let inv = 1.0 / sum;
            xs.iter_mut().for_each(|a| *a *= inv);
        }
        write_block(self.mem, out, blk, &v, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b) = (v, mv);
        let n = elems(blk);
        Ok(Work { flops: 12 * n, bytes: 2 * n * x.dtype.size() as u64 })
    }

    fn bmm(
        &mut self,
        blk: Block,
        s: BmmShape,
        a: &Accessor,
        b: &Accessor,
        out: &Accessor,
        scale: f32,
    ) -> KResult<Work> {
        one_dtype("bmm", &[a, b, out])?;
        if s.batch == 0 || s.heads == 0 || s.batch.checked_mul(s.heads).is_none() || s.views > 7 {
            return Err(format!("bmm: batch {} x heads {}, views {:#b} are not valid", s.batch, s.heads, s.views));
        }
        let z_count = s.batch * s.heads;
        let va = MatrixView::new(a, s.views & 1 != 0, s, "a")?;
        let vb = MatrixView::new(b, s.views & 2 != 0, s, "b")?;
        let vo = MatrixView::new(out, s.views & 4 != 0, s, "out")?;
        let (m, k) = (va.rows, va.cols);
        let (kb, n) = if s.transpose_b { (vb.cols, vb.rows) } else { (vb.rows, vb.cols) };
        if kb != k || (vo.rows, vo.cols) != (m, n) {
            return Err(format!(
                "bmm: matrix shapes do not agree: [{m}, {k}] x [{kb}, {n}] -> [{}, {}]",
                vo.rows, vo.cols
            ));
        }
        check_block(blk, out)?;
        let (mut ta, mut tb, mut acc) =
            (std::mem::take(&mut self.a), std::mem::take(&mut self.b), std::mem::take(&mut self.out));
        let mut flops = 0u64;
        let mut bytes = 0u64;
        for z in 0..z_count {
            // The part of matrix z's output inside the block, in matrix coordinates.
            let (or, oc) = vo.origin(z);
            let (i0, i1) = (blk.r0.max(or), blk.r1.min(or + m));
            let (j0, j1) = (blk.c0.max(oc), blk.c1.min(oc + n));
            if i0 >= i1 || j0 >= j1 {
                continue;
            }
            let (i0, i1, j0, j1) = (i0 - or, i1 - or, j0 - oc, j1 - oc);
            let (ar, ac) = va.origin(z);
            let (br, bc) = vb.origin(z);
            read_block(self.mem, a, Block { r0: ar + i0, r1: ar + i1, c0: ac, c1: ac + k }, &mut ta, &mut self.raw)?;
            let (mm, nn, kk) = ((i1 - i0) as usize, (j1 - j0) as usize, k as usize);
            let sb = if s.transpose_b {
                // bᵀ's columns j0..j1 are b's rows: read them, then walk them as columns.
                read_block(
                    self.mem,
                    b,
                    Block { r0: br + j0, r1: br + j1, c0: bc, c1: bc + k },
                    &mut tb,
                    &mut self.raw,
                )?;
                (1, kk)
            } else {
                read_block(
                    self.mem,
                    b,
                    Block { r0: br, r1: br + k, c0: bc + j0, c1: bc + j1 },
                    &mut tb,
                    &mut self.raw,
                )?;
                (nn, 1)
            };
            acc.clear();
            acc.resize(mm * nn, 0.0);
            gemm(mm, kk, nn, scale, &ta, (kk, 1), &tb, sb, &mut acc);
            let ob = Block { r0: or + i0, r1: or + i1, c0: oc + j0, c1: oc + j1 };
            write_block(self.mem, out, ob, &acc, &mut self.raw)?;
            flops += 2 * (mm * nn * kk) as u64;
            bytes += ((mm * kk + kk * nn + mm * nn) * a.dtype.size()) as u64;
        }
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b, self.out) = (ta, tb, acc);
        Ok(Work { flops, bytes })
    }

    fn linear(
        &mut self,
        blk: Block,
        a: &Accessor,
        b: &Accessor,
        bias: Option<&Accessor>,
        out: &Accessor,
        gelu: bool,
    ) -> KResult<Work> {
        one_dtype("linear", &[a, b, out])?;
        if a.cols != b.rows || out.rows != a.rows || out.cols != b.cols {
            return Err(format!(
                "linear shapes do not agree: [{}, {}] x [{}, {}] -> [{}, {}]",
                a.rows, a.cols, b.rows, b.cols, out.rows, out.cols
            ));
        }
        if let Some(bias) = bias {
            one_dtype("linear", &[a, bias])?;
            if (bias.rows, bias.cols) != (1, out.cols) {
                return Err(format!("linear: bias is one row [1, {}]", out.cols));
            }
        }
        check_block(blk, out)?;
        let k = a.cols as usize;
        let (m, n) = ((blk.r1 - blk.r0) as usize, (blk.c1 - blk.c0) as usize);
        let (mut va, mut vb, mut acc) =
            (std::mem::take(&mut self.a), std::mem::take(&mut self.b), std::mem::take(&mut self.out));
        read_block(self.mem, a, Block { r0: blk.r0, r1: blk.r1, c0: 0, c1: a.cols }, &mut va, &mut self.raw)?;
        read_block(self.mem, b, Block { r0: 0, r1: b.rows, c0: blk.c0, c1: blk.c1 }, &mut vb, &mut self.raw)?;
        acc.clear();
        acc.resize(m * n, 0.0);
        gemm(m, k, n, 1.0, &va, (k, 1), &vb, (n, 1), &mut acc);
        if let Some(bias) = bias {
            read_block(self.mem, bias, Block { r0: 0, r1: 1, c0: blk.c0, c1: blk.c1 }, &mut vb, &mut self.raw)?;
            for row in acc.chunks_exact_mut(n) {
                row.iter_mut().zip(&vb).for_each(|(o, b)| *o += b);
            }
        }
        if gelu {
            acc.iter_mut().for_each(|x| *x = gelu_erf(*x));
        }
        write_block(self.mem, out, blk, &acc, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b, self.out) = (va, vb, acc);
        let es = a.dtype.size() as u64;
        Ok(Work {
            flops: 2 * (m * n * k) as u64 + if gelu { 16 } else { 1 } * (m * n) as u64,
            bytes: ((m * k + k * n + m * n) as u64) * es,
        })
    }

    fn embedding(&mut self, blk: Block, ids: &Accessor, tables: &[Accessor], out: &Accessor) -> KResult<Work> {
        if ids.rows != out.rows || (ids.cols as usize) < tables.len() {
            return Err(format!(
                "embedding: ids [{}, {}] needs out's {} rows and a column per table ({})",
                ids.rows,
                ids.cols,
                out.rows,
                tables.len()
            ));
        }
        for t in tables {
            one_dtype("embedding", &[out, t])?;
            if t.cols != out.cols {
                return Err(format!("embedding: a table has {} columns, out {}", t.cols, out.cols));
            }
        }
        check_block(blk, out)?;
        let w = (blk.c1 - blk.c0) as usize;
        let nt = tables.len() as u32;
        let (mut iv, mut row, mut acc) =
            (std::mem::take(&mut self.a), std::mem::take(&mut self.b), std::mem::take(&mut self.out));
        read_block(self.mem, ids, Block { r0: blk.r0, r1: blk.r1, c0: 0, c1: nt }, &mut iv, &mut self.raw)?;
        acc.clear();
        acc.resize((blk.r1 - blk.r0) as usize * w, 0.0);
        for (i, idx) in iv.chunks_exact(nt as usize).enumerate() {
            for (t, (&v, table)) in idx.iter().zip(tables).enumerate() {
                if !(v >= 0.0 && v < table.rows as f32 && v.fract() == 0.0) {
                    return Err(format!(
                        "embedding: ids[{}][{t}] = {v} is not a row index of table {t} (0 to {})",
                        blk.r0 as usize + i,
                        table.rows - 1
                    ));
                }
                let tb = Block { r0: v as u32, r1: v as u32 + 1, c0: blk.c0, c1: blk.c1 };
                read_block(self.mem, table, tb, &mut row, &mut self.raw)?;
                acc[i * w..(i + 1) * w].iter_mut().zip(&row).for_each(|(o, x)| *o += x);
            }
        }
        write_block(self.mem, out, blk, &acc, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b, self.out) = (iv, row, acc);
        let n = elems(blk);
        Ok(Work { flops: nt as u64 * n, bytes: (nt as u64 + 1) * n * out.dtype.size() as u64 })
    }

    fn mean_pool(
        &mut self,
        blk: Block,
        x: &Accessor,
        mask: &Accessor,
        out: &Accessor,
        normalize: bool,
    ) -> KResult<Work> {
        one_dtype("mean_pool", &[x, mask, out])?;
        if out.rows != mask.rows || x.rows as u64 != mask.rows as u64 * mask.cols as u64 || out.cols != x.cols {
            return Err(format!(
                "mean_pool: in [{}, {}], mask [{}, {}], out [{}, {}]: in must be [B x S, D], mask [B, S], out [B, D]",
                x.rows, x.cols, mask.rows, mask.cols, out.rows, out.cols
            ));
        }
        if normalize {
            whole_rows("mean_pool", blk, out)?;
        } else {
            check_block(blk, out)?;
        }
        let (s, w) = (mask.cols, (blk.c1 - blk.c0) as usize);
        let (mut mv, mut xv, mut acc) =
            (std::mem::take(&mut self.a), std::mem::take(&mut self.b), std::mem::take(&mut self.out));
        read_block(self.mem, mask, Block { r0: blk.r0, r1: blk.r1, c0: 0, c1: s }, &mut mv, &mut self.raw)?;
        acc.clear();
        acc.resize((blk.r1 - blk.r0) as usize * w, 0.0);
        for (i, b) in (blk.r0..blk.r1).enumerate() {
            read_block(
                self.mem,
                x,
                Block { r0: b * s, r1: (b + 1) * s, c0: blk.c0, c1: blk.c1 },
                &mut xv,
                &mut self.raw,
            )?;
            let ms = &mv[i * s as usize..(i + 1) * s as usize];
            let o = &mut acc[i * w..(i + 1) * w];
            for (xs, &m) in xv.chunks_exact(w).zip(ms) {
                o.iter_mut().zip(xs).for_each(|(a, x)| *a += m * x);
            }
            let count = ms.iter().sum::<f32>().max(1e-9);
            o.iter_mut().for_each(|a| *a /= count);
            if normalize {
                let norm = o.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                o.iter_mut().for_each(|a| *a /= norm);
            }
        }
        write_block(self.mem, out, blk, &acc, &mut self.raw)?;
        zero_padding(self.mem, out, blk, &mut self.raw)?;
        (self.a, self.b, self.out) = (mv, xv, acc);
        let n = elems(blk) * s as u64;
        Ok(Work { flops: 2 * n, bytes: n * x.dtype.size() as u64 })
    }
}
