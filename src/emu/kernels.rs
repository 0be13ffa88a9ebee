//! The emulated device's built-in kernel catalog (contract §8.2).
//!
//! Each function is one kernel instance on one core: it receives that core's runtime arguments, computes its output
//! block, and reads whatever input elements the block needs through tensor accessors, wherever they live, as a
//! Tensix data-movement kernel would through its address generators.

use super::memory::DeviceMemory;
use super::timing::Work;
use crate::hw::DevAddr;
use crate::hw::kernel::{ACCESSOR_WORDS, Accessor, Block, BuiltinKernel, DType, bf16_to_f32, f32_to_bf16};

type KResult<T> = Result<T, String>;

/// Runs one instance of `kernel` with compile-time args `ct` and this core's runtime args `rt`.
pub(super) fn run(kernel: BuiltinKernel, ct: &[u32], rt: &[u32], mem: &DeviceMemory) -> KResult<Work> {
    if rt.len() < kernel.rt_words() || ct.len() < kernel.ct_words() {
        return Err(format!("{} needs {} runtime words, got {}", kernel.name(), kernel.rt_words(), rt.len()));
    }
    let block = Block::from_words(&rt[0..4]);
    let acc = |i: usize| -> KResult<Accessor> {
        let w = &rt[4 + i * ACCESSOR_WORDS..4 + (i + 1) * ACCESSOR_WORDS];
        let a = Accessor::from_words(w).ok_or("malformed accessor")?;
        a.validate(mem.geometry())?;
        Ok(a)
    };
    let param = |i: usize| f32::from_bits(rt[4 + i * ACCESSOR_WORDS]);
    match kernel {
        BuiltinKernel::Copy => copy(mem, block, &acc(0)?, &acc(1)?),
        BuiltinKernel::EltwiseBinary => binary(mem, block, ct[0], ct[1], &acc(0)?, &acc(1)?, &acc(2)?),
        BuiltinKernel::EltwiseUnary => unary(mem, block, ct[0], &acc(0)?, &acc(1)?, param(2)),
        BuiltinKernel::Matmul => matmul(mem, block, &acc(0)?, &acc(1)?, &acc(2)?),
        BuiltinKernel::Fill => fill(mem, block, &acc(0)?, param(1)),
    }
}

fn check_block(b: Block, out: &Accessor) -> KResult<()> {
    if b.is_empty() {
        return Ok(());
    }
    if b.r1 > out.rows || b.c1 > out.cols {
        return Err(format!("block {b:?} outside the [{}, {}] output", out.rows, out.cols));
    }
    Ok(())
}

/// Reads rows `[r0, r1)`, columns `[c0, c1)` of `a` as f32, row-major.
fn read_block(mem: &DeviceMemory, a: &Accessor, r0: u32, r1: u32, c0: u32, c1: u32, out: &mut Vec<f32>) -> KResult<()> {
    out.clear();
    let geo = *mem.geometry();
    let es = a.dtype.size();
    let mut raw = vec![0u8; (c1 - c0) as usize * es];
    for r in r0..r1 {
        let mut c = c0;
        while c < c1 {
            let run = a.locate(&geo, r, c);
            let n = run.len.min(c1 - c) as usize;
            let dst = &mut raw[(c - c0) as usize * es..(c - c0) as usize * es + n * es];
            mem.read(DevAddr { mem: a.mem, unit: run.unit, offset: run.offset }, dst).map_err(|f| format!("{f:?}"))?;
            c += n as u32;
        }
        match a.dtype {
            DType::Float32 => out.extend(raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()))),
            DType::BFloat16 => out.extend(raw.chunks_exact(2).map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))),
        }
    }
    Ok(())
}

/// Writes `vals` (row-major, `(r1 - r0) × (c1 - c0)`) into block `b` of `a`.
fn write_block(mem: &DeviceMemory, a: &Accessor, b: Block, vals: &[f32]) -> KResult<()> {
    let geo = *mem.geometry();
    let es = a.dtype.size();
    let w = (b.c1 - b.c0) as usize;
    let mut raw = vec![0u8; w * es];
    for (i, r) in (b.r0..b.r1).enumerate() {
        let row = &vals[i * w..(i + 1) * w];
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
                .map_err(|f| format!("{f:?}"))?;
            c += n as u32;
        }
    }
    Ok(())
}

fn elems(b: Block) -> u64 {
    if b.is_empty() { 0 } else { (b.r1 - b.r0) as u64 * (b.c1 - b.c0) as u64 }
}

fn copy(mem: &DeviceMemory, b: Block, src: &Accessor, dst: &Accessor) -> KResult<Work> {
    if (src.rows, src.cols) != (dst.rows, dst.cols) {
        return Err("copy between different shapes".into());
    }
    check_block(b, dst)?;
    if b.is_empty() {
        return Ok(Work::default());
    }
    let mut v = Vec::new();
    read_block(mem, src, b.r0, b.r1, b.c0, b.c1, &mut v)?;
    write_block(mem, dst, b, &v)?;
    let n = elems(b);
    Ok(Work { flops: 0, bytes: n * (src.dtype.size() + dst.dtype.size()) as u64 })
}

fn binary(
    mem: &DeviceMemory,
    blk: Block,
    op: u32,
    bcast: u32,
    a: &Accessor,
    b: &Accessor,
    out: &Accessor,
) -> KResult<Work> {
    if a.dtype != b.dtype || a.dtype != out.dtype {
        return Err("eltwise_binary needs one element type".into());
    }
    if (a.rows, a.cols) != (out.rows, out.cols) {
        return Err("eltwise_binary output shape differs from a".into());
    }
    let row_bcast = match bcast {
        0 if (b.rows, b.cols) == (a.rows, a.cols) => false,
        1 if b.rows == 1 && b.cols == a.cols => true,
        _ => {
            return Err("eltwise_binary operand b has the wrong shape for the broadcast mode".into());
        }
    };
    let f: fn(f32, f32) -> f32 = match op {
        0 => |x, y| x + y,
        1 => |x, y| x - y,
        2 => |x, y| x * y,
        _ => return Err(format!("unknown binary op {op}")),
    };
    check_block(blk, out)?;
    if blk.is_empty() {
        return Ok(Work::default());
    }
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    read_block(mem, a, blk.r0, blk.r1, blk.c0, blk.c1, &mut va)?;
    if row_bcast {
        read_block(mem, b, 0, 1, blk.c0, blk.c1, &mut vb)?;
        let w = (blk.c1 - blk.c0) as usize;
        for (i, x) in va.iter_mut().enumerate() {
            *x = f(*x, vb[i % w]);
        }
    } else {
        read_block(mem, b, blk.r0, blk.r1, blk.c0, blk.c1, &mut vb)?;
        for (x, y) in va.iter_mut().zip(&vb) {
            *x = f(*x, *y);
        }
    }
    write_block(mem, out, blk, &va)?;
    let n = elems(blk);
    Ok(Work { flops: n, bytes: 3 * n * a.dtype.size() as u64 })
}

fn gelu(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2 / pi)
    0.5 * x * (1.0 + (K * (x + 0.044_715 * x * x * x)).tanh())
}

fn unary(mem: &DeviceMemory, blk: Block, op: u32, a: &Accessor, out: &Accessor, param: f32) -> KResult<Work> {
    if a.dtype != out.dtype || (a.rows, a.cols) != (out.rows, out.cols) {
        return Err("eltwise_unary needs equal shapes and element types".into());
    }
    check_block(blk, out)?;
    let (cost, f): (u64, Box<dyn Fn(f32) -> f32>) = match op {
        0 => (1, Box::new(|x: f32| x.max(0.0))),
        1 => (12, Box::new(gelu)),
        2 => (8, Box::new(f32::exp)),
        3 => (1, Box::new(move |x: f32| x * param)),
        _ => return Err(format!("unknown unary op {op}")),
    };
    if blk.is_empty() {
        return Ok(Work::default());
    }
    let mut v = Vec::new();
    read_block(mem, a, blk.r0, blk.r1, blk.c0, blk.c1, &mut v)?;
    for x in v.iter_mut() {
        *x = f(*x);
    }
    write_block(mem, out, blk, &v)?;
    let n = elems(blk);
    Ok(Work { flops: cost * n, bytes: 2 * n * a.dtype.size() as u64 })
}

fn matmul(mem: &DeviceMemory, blk: Block, a: &Accessor, b: &Accessor, out: &Accessor) -> KResult<Work> {
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
    if blk.is_empty() {
        return Ok(Work::default());
    }
    let k = a.cols as usize;
    let (m, n) = ((blk.r1 - blk.r0) as usize, (blk.c1 - blk.c0) as usize);
    let (mut va, mut vb) = (Vec::new(), Vec::new());
    read_block(mem, a, blk.r0, blk.r1, 0, a.cols, &mut va)?;
    read_block(mem, b, 0, b.rows, blk.c0, blk.c1, &mut vb)?;
    let mut acc = vec![0f32; m * n];
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
    write_block(mem, out, blk, &acc)?;
    let es = a.dtype.size() as u64;
    Ok(Work { flops: 2 * (m * n * k) as u64, bytes: ((m * k + k * n + m * n) as u64) * es })
}

fn fill(mem: &DeviceMemory, blk: Block, out: &Accessor, value: f32) -> KResult<Work> {
    check_block(blk, out)?;
    if blk.is_empty() {
        return Ok(Work::default());
    }
    let v = vec![value; elems(blk) as usize];
    write_block(mem, out, blk, &v)?;
    Ok(Work { flops: 0, bytes: elems(blk) * out.dtype.size() as u64 })
}
