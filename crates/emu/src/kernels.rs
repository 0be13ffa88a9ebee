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
