//! The built-in kernels (contract §8.2) through the device's ops, against host references that share no code with
//! the emulator (naive loops and a bfloat16 round-to-nearest-even written in `hostref`), over every memory
//! configuration as input *and* output; then programs and ops the driver must refuse.
//!
//! Tolerances, each restated where it is checked:
//! - copy (`to_memory_config`, `reshard`, `reshard_into`) within one element type: bit-exact, any bit pattern;
//!   f32 -> bf16: bit-exact against round-to-nearest-even; bf16 -> f32: exact.
//! - eltwise add/sub/mul, relu, scale, fill: one f32 operation per element, so f32 is bit-exact and bf16 is
//!   bit-exact against that f32 result rounded to nearest even.
//! - exp, gelu (tanh form), f32: 1e-6 relative to an f64 reference; gelu also allows 4 f32 epsilons times |x|,
//!   the absolute error an f32 evaluation of `1 + tanh(u)` carries where it cancels (x < 0).
//! - exp, gelu, bf16: within 1 bfloat16 step of the f64 reference rounded to bfloat16.
//! - matmul f32: |got - ref| <= K * eps_f32 * sum_k |a_ik * b_kj|, the worst case of f32 accumulation in any order
//!   (tighter than 1e-5 * K relative).
//! - matmul bf16 (f32 accumulation, rounded once): within 1 bfloat16 ulp of the exact sum, plus the same f32
//!   accumulation bound (which only matters where the sum cancels).

mod common;
use ttdrv_testkit::{expect_err, hostref};

use common::assert_bytes_eq;
use hostref::*;
use ttdrv::contract::kernel::{BuiltinKernel, DType::BFloat16, DType::Float32};
use ttdrv::contract::records::CoreRect;
use ttdrv::device::ops::{BinaryOp, UnaryOp};
use ttdrv::device::program::{KernelSource, ProgramDesc};
use ttdrv::*;

/// The swept tensor shape: divisible the ways every config of `all_configs` needs, rows of 160 (f32) and 80
/// (bf16) bytes, so neither is a multiple of the DRAM alignment and width shards (40 and 20 bytes) need padding.
const ROWS: u32 = 32;
const COLS: u32 = 40;

fn open(selector: &str) -> Device {
    common::open(selector, &DeviceParams { l1_small_size: 64 << 10, ..common::small_params() })
}

fn spec(rows: u32, cols: u32, dtype: DType, mem: MemoryConfig) -> BufferSpec {
    BufferSpec::new(rows, cols, dtype, mem)
}

fn upload(dev: &Device, vals: &[f32], rows: u32, cols: u32, dtype: DType, mem: MemoryConfig) -> Buffer {
    let s = spec(rows, cols, dtype, mem);
    dev.buffer_from_host(&s, 0, &encode(vals, dtype)).unwrap_or_else(|e| panic!("upload {s}: {e}"))
}

fn download(b: &Buffer) -> Vec<f32> {
    decode(&b.read_to_vec(0).unwrap(), b.dtype())
}

/// Asserts `got` equals `want` bit for bit, naming the first differing element.
#[track_caller]
fn assert_exact(got: &[f32], want: &[f32], cols: u32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g.to_bits() != w.to_bits()) {
        panic!(
            "{what}: element [{}, {}] is {} ({:#x}), want {} ({:#x})",
            i / cols as usize,
            i % cols as usize,
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}

#[test]
fn host_bf16_reference_rounds_to_nearest_even() {
    // Exactly representable values stay.
    assert_eq!(bf16_rne(1.0), 0x3F80);
    assert_eq!(bf16_rne(-2.5), 0xC020);
    // Ties go to the even neighbour: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7.
    assert_eq!(bf16_rne(f32::from_bits(0x3F80_8000)), 0x3F80);
    assert_eq!(bf16_rne(f32::from_bits(0x3F81_8000)), 0x3F82);
    // Just above and below a tie.
    assert_eq!(bf16_rne(f32::from_bits(0x3F80_8001)), 0x3F81);
    assert_eq!(bf16_rne(f32::from_bits(0x3F80_7FFF)), 0x3F80);
    // Rounding up out of the mantissa bumps the exponent, up to infinity.
    assert_eq!(bf16_rne(f32::from_bits(0x3FFF_FFFF)), 0x4000);
    assert_eq!(bf16_rne(f32::MAX), 0x7F80);
    assert_eq!(bf16_rne(f32::NEG_INFINITY), 0xFF80);
    assert!(bf16_value(bf16_rne(f32::NAN)).is_nan());
    assert_eq!(bf16_steps(1.0, bf16_value(0x3F81)), 1);
    assert_eq!(bf16_steps(bf16_value(0x8001), bf16_value(0x0001)), 2);
    assert_eq!(bf16_ulp(1.0), 1.0 / 128.0);
    assert_eq!(bf16_ulp(-3.0), 2.0 / 128.0);
}

/// Copies between every ordered pair of the twelve memory configurations, in both element types, through all
/// three entry points. Tolerance: bit-exact. The source holds arbitrary bit patterns (NaN payloads, infinities,
/// subnormals included): a copy within one element type moves bits and must not convert them.
#[test]
fn copy_between_every_pair_of_memory_configs_is_bit_exact() {
    let dev = open("emu");
    let cfgs = all_configs(ROWS, COLS);
    for dtype in [Float32, BFloat16] {
        let bytes = common::pattern((ROWS * COLS) as usize * dtype.size(), 100 + dtype as u64);
        let srcs: Vec<Buffer> =
            cfgs.iter().map(|(_, m)| dev.buffer_from_host(&spec(ROWS, COLS, dtype, *m), 0, &bytes).unwrap()).collect();
        for (i, (sname, _)) in cfgs.iter().enumerate() {
            for (j, (dname, dmem)) in cfgs.iter().enumerate() {
                let what = format!("{dtype:?} copy {sname} -> {dname}");
                let out = match (i + j) % 3 {
                    0 => dev.to_memory_config(0, &srcs[i], dmem),
                    1 => dev.reshard(0, &srcs[i], dmem),
                    _ => {
                        let o = dev.allocate(&spec(ROWS, COLS, dtype, *dmem)).unwrap();
                        dev.reshard_into(0, &srcs[i], &o).map(|()| o)
                    }
                }
                .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(out.spec().mem, *dmem, "{what}: memory config of the output");
                assert_bytes_eq(&out.read_to_vec(0).unwrap(), &bytes, &what);
            }
        }
    }
}

/// Values where rounding to bfloat16 is delicate: ties to even and odd, neighbours of ties, overflow to infinity,
/// signed zeros, subnormals; then random values to fill `n`.
fn conversion_values(n: usize, rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = [
        0x3F80_8000u32, // 1 + 2^-8: tie, rounds down to even 1.0
        0x3F81_8000,    // tie, rounds up to even
        0x3F80_8001,    // just above a tie
        0x3F80_7FFF,    // just below a tie
        0xBF81_8000,    // negative tie
        0x3FFF_FFFF,    // rounds up into the next exponent
        0x7F7F_FFFF,    // f32::MAX: rounds to infinity
        0x7F80_0000,    // +inf
        0xFF80_0000,    // -inf
        0x0000_0000,    // +0
        0x8000_0000,    // -0
        0x0000_8000,    // subnormal tie (to even: 0)
        0x0001_8000,    // subnormal tie (to even: up)
        0x8001_7FFF,    // negative subnormal, below a tie
        0x0080_0000,    // smallest normal
        0x4049_0FDB,    // pi
    ]
    .iter()
    .map(|&b| f32::from_bits(b))
    .collect();
    while v.len() < n {
        v.push(rng.f32_in(-1e6, 1e6) * rng.f32_in(0.0, 1.0).powi(8));
    }
    v
}

/// A copy between element types: f32 -> bf16 must round to nearest even (bit-exact against the host rounding),
/// bf16 -> f32 must be exact; over every config as source and as destination.
#[test]
fn copy_converts_f32_to_bf16_to_nearest_even_and_back_exactly() {
    let dev = open("emu");
    let cfgs = all_configs(ROWS, COLS);
    let n = (ROWS * COLS) as usize;
    let mut rng = Rng::new(11);
    let vals = conversion_values(n, &mut rng);
    let as_bf16 = quantize(&vals, BFloat16);
    for i in 0..cfgs.len() {
        let (sname, smem) = cfgs[i];
        let (dname, dmem) = cfgs[(i * 5 + 3) % cfgs.len()];
        let src = upload(&dev, &vals, ROWS, COLS, Float32, smem);
        let dst = dev.allocate(&spec(ROWS, COLS, BFloat16, dmem)).unwrap();
        dev.reshard_into(0, &src, &dst).unwrap();
        let what = format!("f32 {sname} -> bf16 {dname}");
        assert_bytes_eq(&dst.read_to_vec(0).unwrap(), &encode(&vals, BFloat16), &what);
        // And back: every bfloat16 is an f32.
        let back = dev.allocate(&spec(ROWS, COLS, Float32, smem)).unwrap();
        dev.reshard_into(0, &dst, &back).unwrap();
        assert_exact(&download(&back), &as_bf16, COLS, &format!("bf16 {dname} -> f32 {sname}"));
    }
}

/// add, sub, mul with same-shape operands and with a one-row `[1, W]` operand broadcast over the rows. Every config
/// appears as `a`, as `b` and as the output. Tolerance: f32 bit-exact; bf16 bit-exact against the f32 result of
/// the bfloat16 inputs rounded to nearest even.
#[test]
fn eltwise_binary_matches_the_host_exactly() {
    let dev = open("emu");
    let cfgs = all_configs(ROWS, COLS);
    let rows = row_configs(COLS);
    let nc = cfgs.len();
    let n = (ROWS * COLS) as usize;
    let mut rng = Rng::new(21);
    for dtype in [Float32, BFloat16] {
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul] {
            for i in 0..nc {
                let ((an, am), (bn, bm), (on, om)) = (cfgs[i], cfgs[(i + 5) % nc], cfgs[(i + 8) % nc]);
                let a = random_values(&mut rng, n, -8.0, 8.0, dtype);
                let b = random_values(&mut rng, n, -8.0, 8.0, dtype);
                let (ab, bb) = (upload(&dev, &a, ROWS, COLS, dtype, am), upload(&dev, &b, ROWS, COLS, dtype, bm));
                let out = if i % 2 == 0 {
                    dev.binary(0, op, &ab, &bb, &om).unwrap()
                } else {
                    let o = dev.allocate(&spec(ROWS, COLS, dtype, om)).unwrap();
                    dev.binary_into(0, op, &ab, &bb, &o).unwrap();
                    o
                };
                let want: Vec<f32> = a.iter().zip(&b).map(|(&x, &y)| quantize1(binary_ref(op, x, y), dtype)).collect();
                assert_exact(&download(&out), &want, COLS, &format!("{dtype:?} {op:?}: {an} . {bn} -> {on}"));

                // b is one row, broadcast over a's rows.
                let (rn, rm) = rows[i % rows.len()];
                let row = random_values(&mut rng, COLS as usize, -8.0, 8.0, dtype);
                let rb = upload(&dev, &row, 1, COLS, dtype, rm);
                let out = dev.binary(0, op, &ab, &rb, &om).unwrap();
                let want: Vec<f32> = a
                    .iter()
                    .enumerate()
                    .map(|(k, &x)| quantize1(binary_ref(op, x, row[k % COLS as usize]), dtype))
                    .collect();
                assert_exact(&download(&out), &want, COLS, &format!("{dtype:?} {op:?}: {an} . row {rn} -> {on}"));
            }
        }
    }
}

/// relu, scale, exp, gelu. Tolerances: relu and scale are one f32 operation, so exact (bf16: of the f32 result
/// rounded to nearest even). exp and gelu, f32: within 1e-6 relative of an f64 reference, gelu plus 4 f32
/// epsilons times |x| (cancellation in `1 + tanh(u)` for negative x). exp and gelu, bf16: within 1 bfloat16 step of
/// the f64 reference rounded to bfloat16.
#[test]
fn eltwise_unary_matches_the_host_within_stated_tolerances() {
    let dev = open("emu");
    let cfgs = all_configs(ROWS, COLS);
    let nc = cfgs.len();
    let n = (ROWS * COLS) as usize;
    let mut rng = Rng::new(31);
    let ops = [UnaryOp::Relu, UnaryOp::Scale(0.37), UnaryOp::Scale(-3.0), UnaryOp::Exp, UnaryOp::Gelu];
    for dtype in [Float32, BFloat16] {
        for (k, &op) in ops.iter().enumerate() {
            for i in 0..nc {
                let ((an, am), (on, om)) = (cfgs[i], cfgs[(i + 3 + k) % nc]);
                let (lo, hi) = if op == UnaryOp::Exp { (-10.0, 10.0) } else { (-4.0, 4.0) };
                let x = random_values(&mut rng, n, lo, hi, dtype);
                let xb = upload(&dev, &x, ROWS, COLS, dtype, am);
                let out = if i % 2 == 0 {
                    dev.unary(0, op, &xb, &om).unwrap()
                } else {
                    let o = dev.allocate(&spec(ROWS, COLS, dtype, om)).unwrap();
                    dev.unary_into(0, op, &xb, &o).unwrap();
                    o
                };
                let got = download(&out);
                let what = format!("{dtype:?} {op:?}: {an} -> {on}");
                match op {
                    UnaryOp::Relu | UnaryOp::Scale(_) => {
                        let f = |v: f32| match op {
                            UnaryOp::Scale(p) => v * p,
                            _ => v.max(0.0),
                        };
                        let want: Vec<f32> = x.iter().map(|&v| quantize1(f(v), dtype)).collect();
                        assert_exact(&got, &want, COLS, &what);
                    }
                    _ => {
                        for (e, (&g, &v)) in got.iter().zip(&x).enumerate() {
                            let r = if op == UnaryOp::Exp { (v as f64).exp() } else { gelu_f64(v as f64) };
                            let ok = match dtype {
                                Float32 => {
                                    let cancel = if op == UnaryOp::Gelu {
                                        4.0 * f32::EPSILON as f64 * (v as f64).abs()
                                    } else {
                                        0.0
                                    };
                                    (g as f64 - r).abs() <= 1e-6 * r.abs() + cancel
                                }
                                BFloat16 => bf16_steps(g, round_bf16(r as f32)) <= 1,
                            };
                            assert!(ok, "{what}: element {e}: f({v}) = {g}, reference {r}");
                        }
                    }
                }
            }
        }
    }
}

/// `[m, k] x [k, n]` with every config as `a`, `b` and output. Tolerances: f32 within K * eps_f32 * sum|a*b| of the
/// f64 reference (any f32 summation order stays inside it); bf16 (exact products, f32 accumulation, one rounding)
/// within 1 bfloat16 ulp of the exact sum plus that accumulation bound.
#[test]
fn matmul_matches_the_host_within_stated_tolerances() {
    let dev = open("emu");
    let (m, k, n) = (32u32, 48u32, 40u32);
    let (ca, cb, co) = (all_configs(m, k), all_configs(k, n), all_configs(m, n));
    let nc = ca.len();
    let mut rng = Rng::new(41);
    for dtype in [Float32, BFloat16] {
        for i in 0..nc {
            let ((an, am), (bn, bm), (on, om)) = (ca[i], cb[(i + 4) % nc], co[(i + 9) % nc]);
            let a = random_values(&mut rng, (m * k) as usize, -1.0, 1.0, dtype);
            let b = random_values(&mut rng, (k * n) as usize, -1.0, 1.0, dtype);
            let (ab, bb) = (upload(&dev, &a, m, k, dtype, am), upload(&dev, &b, k, n, dtype, bm));
            let out = if i % 2 == 0 {
                dev.matmul(0, &ab, &bb, &om).unwrap()
            } else {
                let o = dev.allocate(&spec(m, n, dtype, om)).unwrap();
                dev.matmul_into(0, &ab, &bb, &o).unwrap();
                o
            };
            let got = download(&out);
            let what = format!("{dtype:?} matmul: {an} x {bn} -> {on}");
            let acc_bound = |abs_sum: f64| k as f64 * f32::EPSILON as f64 * abs_sum;
            for r in 0..m as usize {
                for c in 0..n as usize {
                    let (mut sum, mut abs_sum) = (0f64, 0f64);
                    for kk in 0..k as usize {
                        let p = a[r * k as usize + kk] as f64 * b[kk * n as usize + c] as f64;
                        sum += p;
                        abs_sum += p.abs();
                    }
                    let g = got[r * n as usize + c] as f64;
                    let tol = match dtype {
                        Float32 => acc_bound(abs_sum),
                        BFloat16 => bf16_ulp(sum) + acc_bound(abs_sum),
                    };
                    assert!((g - sum).abs() <= tol, "{what}: [{r}, {c}] = {g}, reference {sum}, tolerance {tol}");
                }
            }
        }
    }
}

/// fill overwrites every element, in every config; bf16 stores the value rounded to nearest even. Exact.
#[test]
fn fill_writes_the_value_everywhere() {
    let dev = open("emu");
    let n = (ROWS * COLS) as usize;
    for dtype in [Float32, BFloat16] {
        for (i, (name, mem)) in all_configs(ROWS, COLS).into_iter().enumerate() {
            let garbage = common::pattern(n * dtype.size(), i as u64 + 7);
            let b = dev.buffer_from_host(&spec(ROWS, COLS, dtype, mem), 0, &garbage).unwrap();
            for v in [0.1f32, -3.75, 1e-40, 65504.5] {
                dev.fill(0, &b, v).unwrap();
                assert_exact(
                    &download(&b),
                    &vec![quantize1(v, dtype); n],
                    COLS,
                    &format!("{dtype:?} fill {v} in {name}"),
                );
            }
        }
    }
}

fn rect(x0: u8, y0: u8, x1: u8, y1: u8) -> CoreRect {
    CoreRect { x0, y0, x1, y1 }
}

fn fill_desc(cores: CoreRect, rt_words: u16, ct_args: Vec<u32>) -> ProgramDesc {
    ProgramDesc {
        kernel: KernelSource::Builtin(BuiltinKernel::Fill),
        cores,
        ct_args,
        cbs: vec![],
        sems: vec![],
        rt_words,
    }
}

/// Programs over cores the device does not have, and runtime or compile-time argument counts that do not match
/// the kernel, are refused with `InvalidArgument` naming the numbers; a well-formed hand-built program runs with
/// each core's own arguments.
#[test]
fn programs_over_missing_cores_or_with_wrong_argument_counts_are_refused() {
    let dev = open("emu");
    let words = BuiltinKernel::Fill.rt_words() as u16;
    let cores_err = |x0, y0, x1, y1| {
        move |e: &Error| {
            matches!(e, Error::InvalidGrid { what: "program", grid, .. }
                if *grid == ShardGrid::Cores { x0, y0, x1, y1 })
        }
    };
    expect_err!(
        dev.program(fill_desc(rect(0, 0, 8, 0), words, vec![])),
        e if cores_err(0, 0, 8, 0)(e),
        ["program cores (0,0)-(8,0)", "not a rectangle inside", "(0,0)-(7,7)", "8x8 grid"]
    );
    expect_err!(
        dev.program(fill_desc(rect(2, 5, 3, 8), words, vec![])),
        e if cores_err(2, 5, 3, 8)(e),
        ["cores (2,5)-(3,8)", "8x8 grid"]
    );
    expect_err!(
        dev.program(fill_desc(rect(3, 0, 2, 0), words, vec![])),
        e if cores_err(3, 0, 2, 0)(e),
        ["cores (3,0)-(2,0)", "reversed", "(2,0)-(3,0)"]
    );
    expect_err!(
        dev.program(fill_desc(rect(0, 0, 0, 0), words + 1, vec![])),
        Error::InvalidProgram { kernel, .. } if kernel == "ttdrv.fill",
        ["ttdrv.fill", &format!("takes {words} runtime"), &format!("not {}", words + 1)]
    );
    expect_err!(
        dev.program(fill_desc(rect(0, 0, 0, 0), words, vec![7])),
        Error::InvalidProgram { kernel, .. } if kernel == "ttdrv.fill",
        ["ttdrv.fill", "0 compile-time", "and 1"]
    );

    // Two cores, each with its own block and value.
    let prog = dev.program(fill_desc(rect(5, 6, 6, 6), words, vec![])).unwrap();
    let out = dev.allocate(&spec(8, 16, Float32, MemoryConfig::L1)).unwrap();
    let acc = out.accessor().to_words();
    let core_args = |r0: u32, r1: u32, v: f32| -> Vec<u32> {
        let mut w = vec![r0, r1, 0, 16];
        w.extend_from_slice(&acc);
        w.push(v.to_bits());
        w
    };
    let one_core = core_args(0, 4, 1.5);
    expect_err!(
        prog.run(0, &one_core, &[&out]),
        Error::InvalidProgram { .. },
        [&format!("{words} runtime words given"), &format!("{words} per core on 2 cores")]
    );
    let mut both = one_core.clone();
    both.extend(core_args(4, 8, -2.0));
    both.push(0);
    expect_err!(
        prog.run(0, &both, &[&out]),
        Error::InvalidProgram { .. },
        [&format!("{} runtime words given", 2 * words + 1)]
    );
    both.pop();
    prog.run(0, &both, &[&out]).unwrap();
    let want: Vec<f32> = (0..128).map(|i| if i < 64 { 1.5 } else { -2.0 }).collect();
    assert_exact(&download(&out), &want, 16, "hand-built two-core fill");
}

/// On a device whose kernel catalog lacks a kernel (`emu:kernels=copy+fill`), the ops that need it fail with
/// `Error::Unsupported` naming the kernel and the device, and nothing else is disturbed.
#[test]
fn an_op_whose_kernel_the_device_lacks_is_unsupported() {
    let dev = open("emu:kernels=copy+fill");
    assert_eq!(dev.info().kernels, BuiltinKernel::Copy.bit() | BuiltinKernel::Fill.bit());
    let name = dev.info().name.clone();
    let x: Vec<f32> = (0..64).map(|i| i as f32).collect();
    let a = upload(&dev, &x, 8, 8, Float32, MemoryConfig::L1);
    let b = upload(&dev, &x, 8, 8, Float32, MemoryConfig::DRAM);
    let l1 = MemoryConfig::L1;
    let lacks = |k: &'static str| move |e: &Error| matches!(e, Error::KernelUnavailable { kernel, catalog: 0x11, known: true, .. } if kernel == k);
    expect_err!(
        dev.matmul(0, &a, &b, &l1),
        e if lacks("ttdrv.matmul")(e),
        ["ttdrv.matmul", &name, "0x11", "ttdrv.copy, ttdrv.fill"]
    );
    expect_err!(dev.binary(0, BinaryOp::Add, &a, &b, &l1), e if lacks("ttdrv.eltwise_binary")(e), ["ttdrv.eltwise_binary", &name]);
    expect_err!(dev.unary(0, UnaryOp::Relu, &a, &l1), e if lacks("ttdrv.eltwise_unary")(e), ["ttdrv.eltwise_unary", &name]);
    // The kernels it has still work.
    let c = dev.to_memory_config(0, &b, &l1).unwrap();
    assert_exact(&download(&c), &x, 8, "copy on a copy+fill device");
    dev.fill(0, &c, 2.0).unwrap();
    assert_exact(&download(&c), &[2.0; 64], 8, "fill on a copy+fill device");
}

/// A buffer of another device passed to any op is refused with `InvalidArgument` naming both devices; the op
/// enqueues nothing.
#[test]
fn buffers_of_another_device_are_refused() {
    let (d1, d2) = (open("emu"), open("emu"));
    let (n1, n2) = (d1.info().name.clone(), d2.info().name.clone());
    assert_ne!(n1, n2);
    let x: Vec<f32> = (0..64).map(|i| i as f32 - 20.0).collect();
    let a1 = upload(&d1, &x, 8, 8, Float32, MemoryConfig::L1);
    let a2 = upload(&d2, &x, 8, 8, Float32, MemoryConfig::L1);
    let l1 = MemoryConfig::L1;
    let needles = ["belongs to device", n2.as_str(), n1.as_str()];
    let foreign = |e: &Error| matches!(e, Error::WrongDevice { object: "buffer", object_device, device } if *object_device == n2 && *device == n1);
    expect_err!(d1.binary(0, BinaryOp::Add, &a1, &a2, &l1), e if foreign(e), needles);
    expect_err!(d1.binary(0, BinaryOp::Add, &a2, &a1, &l1), e if foreign(e), needles);
    expect_err!(d1.matmul(0, &a1, &a2, &l1), e if foreign(e), needles);
    expect_err!(d1.unary(0, UnaryOp::Exp, &a2, &l1), e if foreign(e), needles);
    expect_err!(d1.to_memory_config(0, &a2, &l1), e if foreign(e), needles);
    expect_err!(d1.reshard_into(0, &a1, &a2), e if foreign(e), needles);
    expect_err!(d1.fill(0, &a2, 1.0), e if foreign(e), needles);
    let prog = d1.program(fill_desc(rect(0, 0, 0, 0), BuiltinKernel::Fill.rt_words() as u16, vec![])).unwrap();
    let mut rt = vec![0, 8, 0, 8];
    rt.extend_from_slice(&a2.accessor().to_words());
    rt.push(9f32.to_bits());
    expect_err!(prog.run(0, &rt, &[&a2]), e if foreign(e), needles);
    // Neither device's data was touched.
    assert_exact(&download(&a1), &x, 8, "d1's buffer");
    assert_exact(&download(&a2), &x, 8, "d2's buffer");
}

/// Ops whose operands disagree in shape or element type are refused with `InvalidArgument` naming the shapes or
/// types.
#[test]
fn ops_on_disagreeing_shapes_or_types_are_refused() {
    let dev = open("emu");
    let l1 = MemoryConfig::L1;
    let mk = |r, c, dtype| dev.allocate(&spec(r, c, dtype, l1)).unwrap();
    let (a, t) = (mk(32, 40, Float32), mk(40, 32, Float32));
    let shapes = |op: &'static str, want: Vec<[u32; 2]>| move |e: &Error| matches!(e, Error::ShapeMismatch { op: o, shapes, .. } if o == op && *shapes == want);
    expect_err!(
        dev.reshard_into(0, &a, &t),
        e if shapes("copy", vec![[32, 40], [40, 32]])(e),
        ["[32, 40]", "[40, 32]", "shapes differ"]
    );
    let b = mk(48, 40, Float32);
    expect_err!(
        dev.matmul(0, &a, &b, &l1),
        e if shapes("matmul", vec![[32, 40], [48, 40], [32, 40]])(e),
        ["do not agree", "[32, 40]", "[48, 40]", "[M, K] x [K, N] product is [M, N]"]
    );
    let (w, o) = (mk(40, 8, Float32), mk(32, 9, Float32));
    expect_err!(
        dev.matmul_into(0, &a, &w, &o),
        e if shapes("matmul", vec![[32, 40], [40, 8], [32, 9]])(e),
        ["do not agree", "[32, 9]"]
    );
    expect_err!(
        dev.binary(0, BinaryOp::Mul, &a, &mk(2, 40, Float32), &l1),
        e if shapes("Mul", vec![[32, 40], [2, 40]])(e),
        ["[32, 40]", "[2, 40]", "not one row"]
    );
    expect_err!(
        dev.binary(0, BinaryOp::Add, &a, &mk(32, 40, BFloat16), &l1),
        Error::DTypeMismatch { op, expected: Float32, found: BFloat16 } if op == "Add",
        ["element types differ", "BFloat16", "typecast", "reshard_into", "converts"]
    );
    expect_err!(
        dev.binary_into(0, BinaryOp::Sub, &a, &a, &t),
        e if shapes("Sub", vec![[32, 40], [32, 40], [40, 32]])(e),
        ["output shape [40, 32]"]
    );
    expect_err!(
        dev.unary_into(0, UnaryOp::Relu, &a, &t),
        e if shapes("Relu", vec![[32, 40], [40, 32]])(e),
        ["output shape [40, 32]"]
    );
    expect_err!(
        dev.unary_into(0, UnaryOp::Relu, &a, &mk(32, 40, BFloat16)),
        Error::DTypeMismatch { expected: Float32, found: BFloat16, .. },
        ["element types differ"]
    );
}

/// A copy converts element types (contract §8.2): `reshard_into` a buffer of the other type and `typecast` both
/// accept operands of different types, round float32 to the nearest bfloat16 (ties to even) and widen bfloat16
/// exactly, whatever the layouts on each side.
#[test]
fn copies_between_element_types_convert() {
    let dev = open("emu");
    // Values that need rounding, ties included, and some that bfloat16 holds exactly.
    let x: Vec<f32> = (0..32 * 40).map(|i| (i as f32 - 600.0) * 1.003_906_3 + 1.0 / 3.0).collect();
    let want_bf16: Vec<f32> = x.iter().map(|&v| round_bf16(v)).collect();
    let src = upload(&dev, &x, 32, 40, Float32, MemoryConfig::DRAM);
    let l1_sharded = sharded(BufferType::L1, Layout::HeightSharded, cores(0, 0, 3, 0), [8, 40], false);
    for mem in [MemoryConfig::L1, MemoryConfig::DRAM, l1_sharded] {
        let narrow = dev.allocate(&spec(32, 40, BFloat16, mem)).unwrap();
        dev.reshard_into(0, &src, &narrow).unwrap();
        assert_exact(&download(&narrow), &want_bf16, 40, "float32 -> bfloat16 by reshard_into");
        let wide = dev.allocate(&spec(32, 40, Float32, MemoryConfig::L1)).unwrap();
        dev.reshard_into(0, &narrow, &wide).unwrap();
        assert_exact(&download(&wide), &want_bf16, 40, "bfloat16 -> float32 by reshard_into");
        let t = dev.typecast(0, &src, BFloat16, &mem).unwrap();
        assert_eq!((t.dtype(), t.spec().mem), (BFloat16, mem));
        assert_exact(&download(&t), &want_bf16, 40, "typecast to bfloat16");
    }
    // The shapes still have to agree.
    let other = dev.allocate(&spec(40, 32, BFloat16, MemoryConfig::L1)).unwrap();
    expect_err!(dev.reshard_into(0, &src, &other), Error::ShapeMismatch { .. }, ["shapes differ"]);
}

/// A kernel name in the built-in namespace (`ttdrv.`) that is no built-in kernel is refused when the program is
/// created, naming the built-in kernels, instead of faulting the device when it runs; names outside the namespace
/// stay custom images, which this device cannot run (it faults, and a reset recovers it).
#[test]
fn an_unknown_built_in_kernel_name_is_refused_at_creation() {
    let dev = open("emu:kernels=copy+fill");
    let image = |name: &str| ProgramDesc {
        kernel: KernelSource::Image { name: name.into(), code: vec![] },
        cores: rect(0, 0, 0, 0),
        ct_args: vec![],
        cbs: vec![],
        sems: vec![],
        rt_words: 0,
    };
    expect_err!(
        dev.program(image("ttdrv.conv2d")),
        Error::KernelUnavailable { kernel, known: false, .. } if kernel == "ttdrv.conv2d",
        [
            "ttdrv.conv2d is not a built-in kernel",
            "ttdrv.copy, ttdrv.eltwise_binary, ttdrv.eltwise_unary, ttdrv.matmul, ttdrv.fill",
            "has ttdrv.copy, ttdrv.fill",
        ]
    );
    // A built-in name the catalog lacks is refused as the built-in itself would be.
    expect_err!(
        dev.program(image("ttdrv.matmul")),
        Error::KernelUnavailable { kernel, known: true, catalog: 0x11, .. } if kernel == "ttdrv.matmul",
        ["has no built-in kernel ttdrv.matmul"]
    );
    // A built-in name carries the built-in's argument counts.
    expect_err!(dev.program(image("ttdrv.fill")), Error::InvalidProgram { .. }, ["ttdrv.fill takes"]);
    // A custom image is the device's business: created, then refused by the device when it runs.
    let p = dev.program(image("my.kernel")).unwrap();
    p.run(0, &[], &[]).unwrap();
    expect_err!(dev.finish(0), Error::DeviceFault(f) if f.fault_code() == Some(ttdrv::contract::regs::FaultCode::BadKernel), ["invalid kernel image"]);
    dev.reset().unwrap();
    dev.finish(0).unwrap();
}
