//! The transformer kernels (contract §8.2, since 1.3) through the device's ops, against f64 host references that
//! share no code with the emulator (`hostref`: naive loops, `libm::erf` in f64), for float32 and bfloat16, with
//! row-major DRAM and tiled L1 operands mixed; then the argument checks, which must fail before anything is enqueued.
//!
//! Tolerances, each restated where it is checked (`check_close`: `abs + rel × |ref|`, plus one bfloat16 step of the
//! reference for bfloat16 results, their one rounding):
//! - layer_norm, softmax, mean_pool, gelu (erf form): f32 `1e-5` absolute and relative (a handful of f32 roundings
//!   on values of order 1); bf16 inputs are bfloat16 values, so the reference sees exactly what the device read.
//! - linear, bmm: f32 `K × eps_f32 × Σ|a b|` bounded by `1e-5 × K` here (inputs in [-1, 1]); bf16 the same plus one
//!   step.

mod common;
use ttdrv_testkit::{expect_err, hostref};

use hostref::*;
use ttdrv::contract::kernel::{DType::BFloat16, DType::Float32};
use ttdrv::device::nn::{Activation, Bmm, MatrixLayout};
use ttdrv::device::ops::UnaryOp;
use ttdrv::*;

fn open() -> Device {
    common::open("emu", &common::small_params())
}

/// Where a tensor lives and how its elements are arranged.
type Placement = (MemoryConfig, TensorLayout);

/// The two placements each test mixes: row-major in DRAM, tiled in L1.
fn placements() -> [Placement; 2] {
    [(MemoryConfig::DRAM, TensorLayout::RowMajor), (MemoryConfig::L1, TensorLayout::Tile)]
}

fn spec(rows: u32, cols: u32, dtype: DType, p: Placement) -> BufferSpec {
    BufferSpec::new(rows, cols, dtype, p.0).with_layout(p.1)
}

fn upload(dev: &Device, vals: &[f32], rows: u32, cols: u32, dtype: DType, p: Placement) -> Buffer {
    let s = spec(rows, cols, dtype, p);
    dev.buffer_from_host(&s, 0, &encode(vals, dtype)).unwrap_or_else(|e| panic!("upload {s}: {e}"))
}

fn download(b: &Buffer) -> Vec<f32> {
    decode(&b.read_to_vec(0).unwrap(), b.dtype())
}

/// Every (input placement, output placement, dtype) combination, named for messages.
fn cases() -> Vec<(String, Placement, Placement, DType)> {
    let mut v = Vec::new();
    for dtype in [Float32, BFloat16] {
        for (i, pi) in placements().into_iter().enumerate() {
            for (o, po) in placements().into_iter().enumerate() {
                v.push((format!("{dtype:?} in#{i} out#{o}"), pi, po, dtype));
            }
        }
    }
    v
}

#[test]
fn layer_norm_with_and_without_residual_matches_the_reference() {
    let dev = open();
    let (rows, cols) = (37u32, 72u32);
    for (name, pi, po, dtype) in cases() {
        let mut rng = Rng::new(11);
        let n = (rows * cols) as usize;
        let x = random_values(&mut rng, n, -3.0, 5.0, dtype);
        let res = random_values(&mut rng, n, -1.0, 1.0, dtype);
        let g = random_values(&mut rng, cols as usize, 0.5, 1.5, dtype);
        let b = random_values(&mut rng, cols as usize, -0.5, 0.5, dtype);
        let (bx, br) = (upload(&dev, &x, rows, cols, dtype, pi), upload(&dev, &res, rows, cols, dtype, pi));
        let (bg, bb) = (upload(&dev, &g, 1, cols, dtype, po), upload(&dev, &b, 1, cols, dtype, pi));
        let out = dev.allocate(&spec(rows, cols, dtype, po)).unwrap();
        for residual in [None, Some(&br)] {
            dev.layer_norm_into(0, &bx, residual, &bg, &bb, 1e-12, &out).unwrap();
            let want = layer_norm_ref(&x, residual.map(|_| &res[..]), &g, &b, cols as usize, 1e-12);
            check_close(&download(&out), &want, dtype, 1e-5, 1e-5, cols as usize)
                .unwrap_or_else(|e| panic!("layer_norm {name} residual {}: {e}", residual.is_some()));
        }
    }
}

#[test]
fn softmax_with_a_grouped_mask_matches_the_reference() {
    let dev = open();
    // 2 sentences x 3 heads x 20 tokens of scores, a mask row per sentence.
    let (groups, per, cols) = (2u32, 60u32, 20u32);
    let rows = groups * per;
    for (name, pi, po, dtype) in cases() {
        let mut rng = Rng::new(12);
        let x = random_values(&mut rng, (rows * cols) as usize, -4.0, 4.0, dtype);
        let mut mask = vec![0f32; (groups * cols) as usize];
        // Sentence 0 has 13 tokens, sentence 1 all 20; padding gets BERT's large negative number.
        mask[13..20].iter_mut().for_each(|m| *m = -10000.0);
        let (bx, bm) = (upload(&dev, &x, rows, cols, dtype, pi), upload(&dev, &mask, groups, cols, dtype, po));
        let out = dev.allocate(&spec(rows, cols, dtype, po)).unwrap();
        for (scale, m) in [(0.25f32, Some(&bm)), (1.0, None)] {
            dev.softmax_into(0, &bx, m, scale, &out).unwrap();
            let want = softmax_ref(&x, m.map(|_| (&mask[..], groups as usize)), scale as f64, cols as usize);
            let got = download(&out);
            check_close(&got, &want, dtype, 1e-6, 1e-5, cols as usize)
                .unwrap_or_else(|e| panic!("softmax {name} masked {}: {e}", m.is_some()));
            if m.is_some() {
                // The padding of sentence 0 gets no weight at all.
                assert!(got[13..20].iter().all(|&p| p == 0.0), "{name}: masked tokens weigh {:?}", &got[13..20]);
            }
        }
    }
}

#[test]
fn attention_products_read_and_write_heads_in_place() {
    let dev = open();
    let (batch, heads, seq, d) = (2usize, 3usize, 20usize, 8usize);
    let hid = heads * d;
    for (name, pi, po, dtype) in cases() {
        let mut rng = Rng::new(13);
        let n = batch * seq * hid;
        let (q, k, v) = (
            random_values(&mut rng, n, -1.0, 1.0, dtype),
            random_values(&mut rng, n, -1.0, 1.0, dtype),
            random_values(&mut rng, n, -1.0, 1.0, dtype),
        );
        let up = |x: &[f32], p| upload(&dev, x, (batch * seq) as u32, hid as u32, dtype, p);
        let (bq, bk, bv) = (up(&q, pi), up(&k, po), up(&v, pi));
        let scores = dev.allocate(&spec((batch * heads * seq) as u32, seq as u32, dtype, po)).unwrap();
        let scale = 1.0 / (d as f32).sqrt();
        dev.bmm_into(0, &bq, &bk, &scores, &Bmm::attention_scores(batch as u32, heads as u32, scale)).unwrap();
        let want = attention_scores_ref(&q, &k, batch, heads, seq, d, scale as f64);
        let got = download(&scores);
        check_close(&got, &want, dtype, 1e-5 * d as f64, 1e-5, seq).unwrap_or_else(|e| panic!("Q Kt {name}: {e}"));
        // P x V with the device's scores as P (values as the device stores them).
        let ctx = dev.allocate(&spec((batch * seq) as u32, hid as u32, dtype, pi)).unwrap();
        dev.bmm_into(0, &scores, &bv, &ctx, &Bmm::attention_context(batch as u32, heads as u32)).unwrap();
        let want = attention_context_ref(&got, &v, batch, heads, seq, d);
        check_close(&download(&ctx), &want, dtype, 1e-5 * seq as f64, 1e-5, hid)
            .unwrap_or_else(|e| panic!("P V {name}: {e}"));
    }
}

#[test]
fn bmm_of_stacked_matrices_without_transpose() {
    let dev = open();
    // Four stacked [5, 7] x [7, 6] products, scaled.
    let (z, m, k, n) = (4usize, 5usize, 7usize, 6usize);
    let mut rng = Rng::new(14);
    let a = random_values(&mut rng, z * m * k, -1.0, 1.0, Float32);
    let b = random_values(&mut rng, z * k * n, -1.0, 1.0, Float32);
    let p = placements()[0];
    let (ba, bb) = (
        upload(&dev, &a, (z * m) as u32, k as u32, Float32, p),
        upload(&dev, &b, (z * k) as u32, n as u32, Float32, p),
    );
    let out = dev.allocate(&spec((z * m) as u32, n as u32, Float32, placements()[1])).unwrap();
    let desc = Bmm {
        batch: 2,
        heads: 2,
        a: MatrixLayout::Stacked,
        b: MatrixLayout::Stacked,
        out: MatrixLayout::Stacked,
        transpose_b: false,
        scale: 0.5,
    };
    dev.bmm_into(0, &ba, &bb, &out, &desc).unwrap();
    let mut want = Vec::new();
    for i in 0..z {
        let r = linear_ref(&a[i * m * k..(i + 1) * m * k], &b[i * k * n..(i + 1) * k * n], None, [m, k, n], false);
        want.extend(r.iter().map(|x| 0.5 * x));
    }
    check_close(&download(&out), &want, Float32, 1e-5 * k as f64, 1e-5, n).unwrap();
}

#[test]
fn linear_with_bias_and_gelu_matches_the_reference() {
    let dev = open();
    let (m, k, n) = (37usize, 48usize, 70usize);
    for (name, pi, po, dtype) in cases() {
        let mut rng = Rng::new(15);
        let a = random_values(&mut rng, m * k, -1.0, 1.0, dtype);
        let b = random_values(&mut rng, k * n, -1.0, 1.0, dtype);
        let bias = random_values(&mut rng, n, -2.0, 2.0, dtype);
        let (ba, bb) =
            (upload(&dev, &a, m as u32, k as u32, dtype, pi), upload(&dev, &b, k as u32, n as u32, dtype, po));
        let bbias = upload(&dev, &bias, 1, n as u32, dtype, pi);
        let out = dev.allocate(&spec(m as u32, n as u32, dtype, po)).unwrap();
        for (bias_arg, act) in
            [(Some(&bbias), Activation::GeluErf), (Some(&bbias), Activation::None), (None, Activation::None)]
        {
            dev.linear_into(0, &ba, &bb, bias_arg, act, &out).unwrap();
            let want = linear_ref(&a, &b, bias_arg.map(|_| &bias[..]), [m, k, n], act == Activation::GeluErf);
            check_close(&download(&out), &want, dtype, 1e-5 * k as f64, 1e-5, n)
                .unwrap_or_else(|e| panic!("linear {name} bias {} {act:?}: {e}", bias_arg.is_some()));
        }
    }
}

#[test]
fn gelu_erf_form_differs_from_the_tanh_form_and_matches_erf() {
    let dev = open();
    let x: Vec<f32> = (0..400).map(|i| -6.0 + i as f32 * 0.03).collect();
    let p = placements()[0];
    let bx = upload(&dev, &x, 10, 40, Float32, p);
    let erf = download(&dev.unary(0, UnaryOp::GeluErf, &bx, &MemoryConfig::DRAM).unwrap());
    let tanh = download(&dev.unary(0, UnaryOp::Gelu, &bx, &MemoryConfig::DRAM).unwrap());
    let want: Vec<f64> = x.iter().map(|&v| gelu_erf_f64(v as f64)).collect();
    check_close(&erf, &want, Float32, 1e-6, 1e-5, 40).unwrap();
    // The two forms differ by up to ~5e-4 near |x| = 2: a device computing tanh for erf would fail the check above.
    let diff = erf.iter().zip(&tanh).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 1e-4, "the erf and tanh forms should differ, max difference {diff}");
}

#[test]
fn embedding_sums_word_position_and_type_rows() {
    let dev = open();
    let (vocab, maxpos, types, cols, rows) = (50usize, 16usize, 2usize, 24usize, 12usize);
    for (name, pi, po, dtype) in cases() {
        let mut rng = Rng::new(16);
        let word = random_values(&mut rng, vocab * cols, -1.0, 1.0, dtype);
        let pos = random_values(&mut rng, maxpos * cols, -1.0, 1.0, dtype);
        let typ = random_values(&mut rng, types * cols, -1.0, 1.0, dtype);
        let mut ids = Vec::new();
        for r in 0..rows {
            ids.extend([rng.below(vocab as u64) as f32, (r % maxpos) as f32, (r % types) as f32]);
        }
        let bids = upload(&dev, &ids, rows as u32, 3, Float32, pi);
        let (bw, bp) = (
            upload(&dev, &word, vocab as u32, cols as u32, dtype, po),
            upload(&dev, &pos, maxpos as u32, cols as u32, dtype, pi),
        );
        let bt = upload(&dev, &typ, types as u32, cols as u32, dtype, po);
        let out = dev.allocate(&spec(rows as u32, cols as u32, dtype, po)).unwrap();
        dev.embedding_into(0, &bids, &[&bw, &bp, &bt], &out).unwrap();
        let mut want = Vec::new();
        for r in 0..rows {
            let (w, p, t) = (ids[3 * r] as usize, ids[3 * r + 1] as usize, ids[3 * r + 2] as usize);
            want.extend(
                (0..cols).map(|c| word[w * cols + c] as f64 + pos[p * cols + c] as f64 + typ[t * cols + c] as f64),
            );
        }
        check_close(&download(&out), &want, dtype, 1e-6, 1e-6, cols)
            .unwrap_or_else(|e| panic!("embedding {name}: {e}"));
        // One table: a plain gather.
        dev.embedding_into(0, &bids, &[&bw], &out).unwrap();
        let want: Vec<f64> = (0..rows)
            .flat_map(|r| (0..cols).map(move |c| (r, c)))
            .map(|(r, c)| word[ids[3 * r] as usize * cols + c] as f64)
            .collect();
        check_close(&download(&out), &want, dtype, 0.0, 0.0, cols).unwrap_or_else(|e| panic!("gather {name}: {e}"));
    }
}

#[test]
fn mean_pool_ignores_padding_and_normalizes() {
    let dev = open();
    let (b, s, d) = (3usize, 10usize, 40usize);
    for (name, pi, po, dtype) in cases() {
        let mut rng = Rng::new(17);
        let x = random_values(&mut rng, b * s * d, -2.0, 2.0, dtype);
        let mut mask = vec![1f32; b * s];
        // Sentences of 10, 4 and 7 tokens.
        mask[s + 4..2 * s].iter_mut().for_each(|m| *m = 0.0);
        mask[2 * s + 7..].iter_mut().for_each(|m| *m = 0.0);
        let (bx, bm) =
            (upload(&dev, &x, (b * s) as u32, d as u32, dtype, pi), upload(&dev, &mask, b as u32, s as u32, dtype, po));
        let out = dev.allocate(&spec(b as u32, d as u32, dtype, po)).unwrap();
        for normalize in [true, false] {
            dev.mean_pool_into(0, &bx, &bm, normalize, &out).unwrap();
            let want = mean_pool_ref(&x, &mask, [b, s, d], normalize);
            let got = download(&out);
            check_close(&got, &want, dtype, 1e-6, 1e-5, d)
                .unwrap_or_else(|e| panic!("mean_pool {name} {normalize}: {e}"));
            if normalize && dtype == Float32 {
                for row in got.chunks(d) {
                    let norm: f32 = row.iter().map(|a| a * a).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-5, "{name}: norm {norm}");
                }
            }
        }
    }
}

#[test]
fn wrong_shapes_and_types_fail_before_anything_is_enqueued() {
    let dev = open();
    let p = placements()[0];
    let buf = |r: u32, c: u32, t: DType| dev.allocate(&spec(r, c, t, p)).unwrap();
    let (x, g, out) = (buf(8, 16, Float32), buf(1, 16, Float32), buf(8, 16, Float32));
    expect_err!(
        dev.layer_norm_into(0, &x, None, &buf(1, 15, Float32), &g, 1e-5, &out),
        Error::ShapeMismatch { .. },
        ["layer_norm", "gamma and beta must be one row [1, 16]"]
    );
    expect_err!(dev.layer_norm_into(0, &x, None, &g, &g, -1.0, &out), Error::InvalidArgument(_), ["epsilon -1"]);
    expect_err!(
        dev.layer_norm_into(0, &x, None, &g, &g, 1e-5, &buf(8, 16, BFloat16)),
        Error::DTypeMismatch { .. },
        ["layer_norm"]
    );
    expect_err!(
        dev.softmax_into(0, &x, Some(&buf(3, 16, Float32)), 1.0, &out),
        Error::ShapeMismatch { .. },
        ["number of rows that divides x's 8"]
    );
    expect_err!(
        dev.bmm_into(0, &x, &x, &out, &Bmm::attention_scores(2, 3, 1.0)),
        Error::ShapeMismatch { .. },
        ["a holds 2 x 3 matrices as heads", "columns of 3"]
    );
    expect_err!(
        dev.bmm_into(0, &x, &x, &out, &Bmm::attention_scores(0, 3, 1.0)),
        Error::InvalidArgument(_),
        ["at least 1"]
    );
    // [4, 8] x [4, 8]ᵀ per head is [4, 4]: an [8, 16] output stacks [2, 16] matrices, which does not fit.
    expect_err!(
        dev.bmm_into(0, &x, &x, &out, &Bmm::attention_scores(2, 2, 1.0)),
        Error::ShapeMismatch { .. },
        ["[4, 8] x [8, 4] (b transposed) -> [2, 16]"]
    );
    expect_err!(
        dev.linear_into(0, &x, &buf(16, 4, Float32), Some(&g), Activation::None, &buf(8, 4, Float32)),
        Error::ShapeMismatch { .. },
        ["bias must be one row [1, 4]"]
    );
    expect_err!(dev.embedding_into(0, &buf(8, 1, Float32), &[], &out), Error::InvalidArgument(_), ["1 to 3 tables"]);
    expect_err!(
        dev.embedding_into(0, &buf(8, 1, Float32), &[&x, &x], &out),
        Error::ShapeMismatch { .. },
        ["one column per table (2)"]
    );
    expect_err!(
        dev.mean_pool_into(0, &x, &buf(2, 3, Float32), true, &buf(2, 16, Float32)),
        Error::ShapeMismatch { .. },
        ["[B x S, D]"]
    );
    // Nothing failed on the device: it still computes.
    dev.layer_norm_into(0, &x, None, &g, &g, 1e-5, &out).unwrap();
    dev.finish(0).unwrap();
}

#[test]
fn an_embedding_id_outside_its_table_is_a_device_fault_not_a_wild_read() {
    let dev = open();
    let p = placements()[0];
    let table = upload(&dev, &[1.0; 4 * 8], 4, 8, Float32, p);
    let out = dev.allocate(&spec(2, 8, Float32, p)).unwrap();
    for bad in [4.0f32, -1.0, 1.5] {
        let ids = upload(&dev, &[0.0, bad], 2, 1, Float32, p);
        dev.embedding_into(0, &ids, &[&table], &out).unwrap();
        let e = dev.finish(0).expect_err("an id outside the table must fault");
        assert_eq!(e.kind(), ErrorKind::DeviceFault, "id {bad}: {e}");
        dev.reset().unwrap();
    }
}
