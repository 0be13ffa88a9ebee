//! Host-side references shared by the tests, the benchmarks and the `ttdrv` demo.
//!
//! Nothing here calls the crate's arithmetic: the bfloat16 rounding is written out below (not
//! `ttdrv_contract::kernel::f32_to_bf16`), and no code of the emulator is used. The references are the naive textbook
//! loops, in f64 where the tests compare against a tolerance and in f32 where they compare exactly.

use ttdrv::*;

/// A seeded generator (splitmix64): every test that uses randomness prints or names its seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `percent`%.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Uniform in `[lo, hi)`.
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    /// One element of `v`.
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// The bfloat16 bits nearest to `x`, ties to even (IEEE round-to-nearest-even on the upper 16 bits of the binary32
/// encoding). NaN becomes a quiet NaN.
pub fn bf16_rne(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let upper = bits >> 16;
    let lower = bits & 0xFFFF;
    let round_up = lower > 0x8000 || (lower == 0x8000 && upper & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent (up to infinity).
    (upper + round_up as u32) as u16
}

/// The value of bfloat16 bits (exact).
pub fn bf16_value(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// `x` rounded to the nearest bfloat16, ties to even.
pub fn round_bf16(x: f32) -> f32 {
    bf16_value(bf16_rne(x))
}

/// `x` as the device stores it in `dtype`.
pub fn quantize1(x: f32, dtype: DType) -> f32 {
    match dtype {
        DType::Float32 => x,
        DType::BFloat16 => round_bf16(x),
    }
}

/// `v` as the device stores it in `dtype`.
pub fn quantize(v: &[f32], dtype: DType) -> Vec<f32> {
    v.iter().map(|&x| quantize1(x, dtype)).collect()
}

/// Little-endian bytes of `v` in `dtype` (bfloat16 rounded to nearest even).
pub fn encode(v: &[f32], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::Float32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::BFloat16 => v.iter().flat_map(|&x| bf16_rne(x).to_le_bytes()).collect(),
    }
}

/// Values of little-endian `dtype` bytes.
pub fn decode(b: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::Float32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        DType::BFloat16 => b.chunks_exact(2).map(|c| bf16_value(u16::from_le_bytes([c[0], c[1]]))).collect(),
    }
}

/// `n` random values in `[lo, hi)`, already representable in `dtype`.
pub fn random_values(rng: &mut Rng, n: usize, lo: f32, hi: f32, dtype: DType) -> Vec<f32> {
    (0..n).map(|_| quantize1(rng.f32_in(lo, hi), dtype)).collect()
}

/// Distance in bfloat16 steps between two bfloat16 values (both must be representable, neither NaN).
pub fn bf16_steps(a: f32, b: f32) -> u32 {
    // Map the sign-magnitude encoding onto a line of integers, so that neighbours differ by one.
    let ord = |x: f32| -> i32 {
        let bits = (x.to_bits() >> 16) as i32;
        if bits & 0x8000 != 0 { -(bits & 0x7FFF) } else { bits }
    };
    assert_eq!(round_bf16(a).to_bits(), a.to_bits(), "{a} is not a bfloat16 value");
    assert_eq!(round_bf16(b).to_bits(), b.to_bits(), "{b} is not a bfloat16 value");
    ord(a).abs_diff(ord(b))
}

/// One bfloat16 unit in the last place at magnitude `x` (normal range): 2^(exponent - 7).
pub fn bf16_ulp(x: f64) -> f64 {
    let x = x.abs().max(f64::from(f32::MIN_POSITIVE));
    2f64.powi(x.log2().floor() as i32 - 7)
}

/// A core rectangle.
pub fn cores(x0: u8, y0: u8, x1: u8, y1: u8) -> ShardGrid {
    ShardGrid::Cores { x0, y0, x1, y1 }
}

/// A DRAM bank range.
pub fn banks(first: u16, last: u16) -> ShardGrid {
    ShardGrid::Banks { first, last }
}

/// A sharded memory config.
pub fn sharded(bt: BufferType, layout: Layout, grid: ShardGrid, shape: [u32; 2], col_major: bool) -> MemoryConfig {
    MemoryConfig { buffer_type: bt, layout, shard: Some(ShardSpec { grid, shape, col_major }) }
}

/// Interleaved L1_SMALL (the device must be opened with `l1_small_size`).
pub const L1_SMALL: MemoryConfig =
    MemoryConfig { buffer_type: BufferType::L1Small, layout: Layout::Interleaved, shard: None };

/// Every memory configuration the tests sweep, for a `[rows, cols]` tensor with `rows % 8 == 0` and
/// `cols % 4 == 0`: interleaved DRAM, L1 and L1_SMALL; height-, width- and block-sharded L1 in row- and
/// column-major orientation (on grids that do not start at core (0, 0), so unit numbering matters); DRAM height-
/// and block-sharded over banks; height-sharded L1_SMALL. Needs `l1_small_size` of a few KiB.
pub fn all_configs(rows: u32, cols: u32) -> Vec<(&'static str, MemoryConfig)> {
    assert!(rows % 8 == 0 && cols % 4 == 0, "[{rows}, {cols}] does not suit the config sweep");
    use BufferType::{Dram, L1, L1Small};
    use Layout::*;
    let (h, w) = ([rows / 8, cols], [rows, cols / 4]);
    let block = [rows / 2, cols / 4];
    vec![
        ("DRAM interleaved", MemoryConfig::DRAM),
        ("L1 interleaved", MemoryConfig::L1),
        ("L1 height row-major", sharded(L1, HeightSharded, cores(1, 2, 4, 3), h, false)),
        ("L1 height col-major", sharded(L1, HeightSharded, cores(3, 4, 4, 7), h, true)),
        ("L1 width row-major", sharded(L1, WidthSharded, cores(3, 5, 6, 5), w, false)),
        ("L1 width col-major", sharded(L1, WidthSharded, cores(2, 0, 2, 3), w, true)),
        ("L1 block row-major", sharded(L1, BlockSharded, cores(0, 0, 3, 1), block, false)),
        ("L1 block col-major", sharded(L1, BlockSharded, cores(4, 4, 5, 7), block, true)),
        ("DRAM height over banks", sharded(Dram, HeightSharded, banks(0, 7), h, false)),
        ("DRAM block over banks col-major", sharded(Dram, BlockSharded, banks(0, 7), block, true)),
        ("L1_SMALL interleaved", L1_SMALL),
        ("L1_SMALL height", sharded(L1Small, HeightSharded, cores(0, 7, 7, 7), h, false)),
    ]
}

/// The memory configurations a one-row `[1, cols]` tensor (a broadcast operand) can take, `cols % 4 == 0`.
pub fn row_configs(cols: u32) -> Vec<(&'static str, MemoryConfig)> {
    use Layout::WidthSharded;
    vec![
        ("DRAM interleaved", MemoryConfig::DRAM),
        ("L1 interleaved", MemoryConfig::L1),
        ("L1 width row-major", sharded(BufferType::L1, WidthSharded, cores(4, 6, 7, 6), [1, cols / 4], false)),
        ("DRAM width over banks", sharded(BufferType::Dram, WidthSharded, banks(2, 5), [1, cols / 4], false)),
        ("L1_SMALL interleaved", L1_SMALL),
    ]
}

/// The memory configurations the tiled sweeps use for a `[rows, cols]` tensor (any shape whose padded tile grid,
/// `⌈rows / 32⌉ × ⌈cols / 32⌉` tiles, has at most 8 tile rows and 8 tile columns): interleaved DRAM, L1 and
/// L1_SMALL; height-, width- and block-sharded L1 (shards of whole tiles: a tile row, a tile column, one tile), the
/// block shards in both orientations on a grid that does not start at core (0, 0); DRAM height-sharded over banks.
pub fn tile_configs(rows: u32, cols: u32) -> Vec<(&'static str, MemoryConfig)> {
    use BufferType::{Dram, L1};
    use Layout::*;
    let (tr, tc) = (rows.div_ceil(32), cols.div_ceil(32));
    assert!(tr <= 8 && tc <= 8, "[{rows}, {cols}] has too many tiles for the tiled config sweep");
    let (pr, pc) = (tr * 32, tc * 32);
    // `n` units starting at core (x0, y0), as full rows of the 8-wide grid (or one partial row).
    let rect = |x0: u8, y0: u8, n: u32| {
        if n <= 8 - x0 as u32 {
            cores(x0, y0, x0 + n as u8 - 1, y0)
        } else {
            cores(0, y0, 7, y0 + (n as u8).div_ceil(8) - 1)
        }
    };
    vec![
        ("tiled DRAM interleaved", MemoryConfig::DRAM),
        ("tiled L1 interleaved", MemoryConfig::L1),
        ("tiled L1_SMALL interleaved", L1_SMALL),
        ("tiled L1 height", sharded(L1, HeightSharded, rect(0, 6, tr), [32, pc], false)),
        ("tiled L1 width", sharded(L1, WidthSharded, rect(0, 5, tc), [pr, 32], false)),
        ("tiled L1 block row-major", sharded(L1, BlockSharded, rect(1, 0, tr * tc), [32, 32], false)),
        ("tiled L1 block col-major", sharded(L1, BlockSharded, rect(0, 0, tr * tc), [32, 32], true)),
        ("tiled DRAM height over banks", sharded(Dram, HeightSharded, banks(0, tr as u16 - 1), [32, pc], false)),
    ]
}

/// The bytes a tiled tensor holds on the device (docs/device-interface.md §8.3.2), written out from the document
/// without the driver's or the contract's code: for each tile `(i, j)` in row-major order over the tile grid, 1024
/// elements of `elem` bytes — the four 16×16 faces top-left, top-right, bottom-left, bottom-right, each row-major —
/// with zeros where the tile reaches past the `rows × cols` data `host` holds (dense row-major).
pub fn tiles_of(host: &[u8], rows: u32, cols: u32, elem: usize) -> Vec<Vec<u8>> {
    let (rows, cols) = (rows as usize, cols as usize);
    assert_eq!(host.len(), rows * cols * elem);
    let mut tiles = Vec::new();
    for i in 0..rows.div_ceil(32) {
        for j in 0..cols.div_ceil(32) {
            let mut t = vec![0u8; 1024 * elem];
            for y in 0..32 {
                for x in 0..32 {
                    let (r, c) = (i * 32 + y, j * 32 + x);
                    if r < rows && c < cols {
                        let face = 2 * (y / 16) + x / 16;
                        let at = (face * 256 + (y % 16) * 16 + x % 16) * elem;
                        t[at..at + elem].copy_from_slice(&host[(r * cols + c) * elem..][..elem]);
                    }
                }
            }
            tiles.push(t);
        }
    }
    tiles
}

/// Element-wise binary op on f32: one f32 operation, as the device defines it.
pub fn binary_ref(op: ttdrv::device::ops::BinaryOp, x: f32, y: f32) -> f32 {
    use ttdrv::device::ops::BinaryOp;
    match op {
        BinaryOp::Add => x + y,
        BinaryOp::Sub => x - y,
        BinaryOp::Mul => x * y,
    }
}

/// gelu, tanh form, in f64.
pub fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// Checks a `[m, n]` matmul result `got` of `[m, k] × [k, n]` operands against an f64 reference: f32 within
/// `K × eps_f32 × Σ|a × b|` (any f32 summation order stays inside it); bfloat16 (exact products, f32 accumulation,
/// one rounding) within 1 bfloat16 ulp of the exact sum plus that accumulation bound. The message names the first
/// element outside.
pub fn check_matmul(a: &[f32], b: &[f32], got: &[f32], [m, k, n]: [usize; 3], dtype: DType) -> Result<(), String> {
    let acc_bound = |abs_sum: f64| k as f64 * f32::EPSILON as f64 * abs_sum;
    for r in 0..m {
        for c in 0..n {
            let (mut sum, mut abs_sum) = (0f64, 0f64);
            for kk in 0..k {
                let p = a[r * k + kk] as f64 * b[kk * n + c] as f64;
                sum += p;
                abs_sum += p.abs();
            }
            let g = got[r * n + c] as f64;
            let tol = match dtype {
                DType::Float32 => acc_bound(abs_sum),
                DType::BFloat16 => bf16_ulp(sum) + acc_bound(abs_sum),
            };
            if (g - sum).abs() > tol {
                return Err(format!("[{r}, {c}] = {g}, reference {sum}, tolerance {tol}"));
            }
        }
    }
    Ok(())
}

/// The MLP's host reference: each op as the device defines it (matmul accumulated exactly and rounded once, bias
/// add in f32 then rounded, relu), in `dtype`.
pub fn mlp_reference(cfg: &ttdrv::device::model::MlpConfig, w: &[Vec<f32>], b: &[Vec<f32>], x: &[f32]) -> Vec<f32> {
    let batch = cfg.batch as usize;
    let layers = cfg.dims.len() - 1;
    let mut a = x.to_vec();
    for l in 0..layers {
        let (k, m) = (cfg.dims[l] as usize, cfg.dims[l + 1] as usize);
        let mut out = vec![0f32; batch * m];
        for i in 0..batch {
            for j in 0..m {
                let dot: f64 = (0..k).map(|kk| a[i * k + kk] as f64 * w[l][kk * m + j] as f64).sum();
                let y = quantize1(dot as f32, cfg.dtype);
                let z = quantize1(y + b[l][j], cfg.dtype);
                out[i * m + j] = if l + 1 < layers || cfg.relu_last { z.max(0.0) } else { z };
            }
        }
        a = out;
    }
    a
}

/// Checks that `$r` is an `Err` whose error matches the pattern `$p` (a structured variant, e.g.
/// `Error::QueueOutOfRange { queue: 4, queues: 2, .. }`, optionally with an `if` guard over its bindings) and whose
/// message mentions every needle (a bracketed list of string expressions, or an expression that iterates over
/// `&str`s); evaluates to the message.
#[macro_export]
macro_rules! expect_err {
    ($r:expr, $p:pat $(if $guard:expr)?, [$($needle:expr),* $(,)?]) => {
        expect_err!($r, $p $(if $guard)?, @list vec![$(String::from(&*$needle)),*])
    };
    ($r:expr, $p:pat $(if $guard:expr)?, @list $needles:expr) => {{
        let needles: Vec<String> = $needles;
        let what = concat!(stringify!($p) $(, " if ", stringify!($guard))?);
        match $r {
            Err(e) => {
                #[allow(unused_variables)]
                let matched = matches!(&e, $p $(if $guard)?);
                assert!(matched, "expected {what}, got {e:?}: {e}");
                let msg = e.to_string();
                for n in &needles {
                    assert!(msg.contains(n.as_str()), "{what}: message {msg:?} does not mention {n:?}");
                }
                msg
            }
            Ok(v) => panic!("expected {what} mentioning {needles:?}, got Ok({v:?})"),
        }
    }};
    ($r:expr, $p:pat $(if $guard:expr)?, $needles:expr) => {
        expect_err!($r, $p $(if $guard)?, @list $needles.iter().map(|s| s.to_string()).collect())
    };
}

/// GELU, erf form, in f64: `x (1 + erf(x / √2)) / 2`.
pub fn gelu_erf_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// Layer normalization of each `cols`-wide row of `x` (plus `res`), in f64: `(v − mean) / √(var + eps) × g + b`.
pub fn layer_norm_ref(x: &[f32], res: Option<&[f32]>, g: &[f32], b: &[f32], cols: usize, eps: f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(cols).enumerate() {
        let v: Vec<f64> = (0..cols).map(|c| row[c] as f64 + res.map_or(0.0, |s| s[r * cols + c] as f64)).collect();
        let mean = v.iter().sum::<f64>() / cols as f64;
        let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / cols as f64;
        out.extend((0..cols).map(|c| (v[c] - mean) / (var + eps).sqrt() * g[c] as f64 + b[c] as f64));
    }
    out
}

/// Softmax of each row of `scale × x + mask[r / (rows / mask_rows)]`, in f64.
pub fn softmax_ref(x: &[f32], mask: Option<(&[f32], usize)>, scale: f64, cols: usize) -> Vec<f64> {
    let rows = x.len() / cols;
    let mut out = Vec::with_capacity(x.len());
    for r in 0..rows {
        let v: Vec<f64> = (0..cols)
            .map(|c| {
                let m = mask.map_or(0.0, |(m, mr)| m[(r / (rows / mr)) * cols + c] as f64);
                scale * x[r * cols + c] as f64 + m
            })
            .collect();
        let max = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = v.iter().map(|a| (a - max).exp()).sum();
        out.extend(v.iter().map(|a| (a - max).exp() / sum));
    }
    out
}

/// Attention in f64 from `[batch × seq, heads × d]` Q, K, V: the stacked scores `scale × Q_z K_zᵀ`
/// (`[batch × heads × seq, seq]`) and, from given probabilities P (stacked), the merged context `P_z V_z`
/// (`[batch × seq, heads × d]`).
pub fn attention_scores_ref(
    q: &[f32],
    k: &[f32],
    batch: usize,
    heads: usize,
    seq: usize,
    d: usize,
    scale: f64,
) -> Vec<f64> {
    let hid = heads * d;
    let mut out = vec![0f64; batch * heads * seq * seq];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..seq {
                for j in 0..seq {
                    let dot: f64 = (0..d)
                        .map(|t| q[(b * seq + i) * hid + h * d + t] as f64 * k[(b * seq + j) * hid + h * d + t] as f64)
                        .sum();
                    out[((b * heads + h) * seq + i) * seq + j] = scale * dot;
                }
            }
        }
    }
    out
}

/// See [`attention_scores_ref`]: the context `P_z V_z` merged into `[batch × seq, heads × d]`.
pub fn attention_context_ref(p: &[f32], v: &[f32], batch: usize, heads: usize, seq: usize, d: usize) -> Vec<f64> {
    let hid = heads * d;
    let mut out = vec![0f64; batch * seq * hid];
    for b in 0..batch {
        for h in 0..heads {
            for i in 0..seq {
                for t in 0..d {
                    let dot: f64 = (0..seq)
                        .map(|j| {
                            p[((b * heads + h) * seq + i) * seq + j] as f64 * v[(b * seq + j) * hid + h * d + t] as f64
                        })
                        .sum();
                    out[(b * seq + i) * hid + h * d + t] = dot;
                }
            }
        }
    }
    out
}

/// `act(a × b + bias)` in f64 for `[m, k] × [k, n]`; `gelu` applies the erf form.
pub fn linear_ref(a: &[f32], b: &[f32], bias: Option<&[f32]>, [m, k, n]: [usize; 3], gelu: bool) -> Vec<f64> {
    let mut out = Vec::with_capacity(m * n);
    for r in 0..m {
        for c in 0..n {
            let v = (0..k).map(|t| a[r * k + t] as f64 * b[t * n + c] as f64).sum::<f64>()
                + bias.map_or(0.0, |s| s[c] as f64);
            out.push(if gelu { gelu_erf_f64(v) } else { v });
        }
    }
    out
}

/// Masked mean pooling of `[B × S, D]` rows with a `[B, S]` mask, optionally L2-normalized, in f64.
pub fn mean_pool_ref(x: &[f32], mask: &[f32], [b, s, d]: [usize; 3], normalize: bool) -> Vec<f64> {
    let mut out = Vec::with_capacity(b * d);
    for i in 0..b {
        let count = (0..s).map(|j| mask[i * s + j] as f64).sum::<f64>().max(1e-9);
        let mut v: Vec<f64> = (0..d)
            .map(|c| (0..s).map(|j| mask[i * s + j] as f64 * x[(i * s + j) * d + c] as f64).sum::<f64>() / count)
            .collect();
        if normalize {
            let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
        }
        out.extend(v);
    }
    out
}

/// Checks `got` against an f64 reference: within `abs + rel × |ref|`, plus one bfloat16 step of the reference for
/// bfloat16 results (the one rounding of the result). Names the first element outside.
pub fn check_close(got: &[f32], want: &[f64], dtype: DType, abs: f64, rel: f64, cols: usize) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!("{} elements, reference {}", got.len(), want.len()));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = abs + rel * w.abs() + if dtype == DType::BFloat16 { bf16_ulp(w) } else { 0.0 };
        // NaN fails too: `<=` with a NaN is false.
        let within = (g as f64 - w).abs() <= tol;
        if !within {
            return Err(format!("[{}, {}] = {g}, reference {w}, tolerance {tol}", i / cols, i % cols));
        }
    }
    Ok(())
}
