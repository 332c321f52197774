//! Quantization: quantize / dequantize bit-exact against MLX 0.32.4 goldens
//! (every mode, group size and bit width), quantized_matmul and gather_qmm
//! against MLX to float tolerance, the fast (threaded, SIMD, panel) kernels
//! against dequantize + matmul on larger seeded inputs, transform rules, and
//! errors for bad inputs.

mod common;

use common::{check_grad, check_vmap, Case, Rng};
use kiln_core::ops::{self, QuantMode, QuantSpec};
use kiln_core::{Array, Dtype, Result};

fn spec_of(c: &Case) -> QuantSpec {
    let mode = match c.kwargs["mode"].as_str().unwrap() {
        "affine" => QuantMode::Affine,
        "mxfp4" => QuantMode::Mxfp4,
        "nvfp4" => QuantMode::Nvfp4,
        "mxfp8" => QuantMode::Mxfp8,
        m => panic!("mode {m}"),
    };
    QuantSpec { group_size: c.kw_i64("group_size").unwrap() as usize, bits: c.kw_i64("bits").unwrap() as u32, mode }
}

fn f64s(a: &Array) -> Vec<f64> {
    ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

/// Exact equality of dtype, shape and values (NaN equals NaN).
fn exact(got: &Array, want: &Array) -> std::result::Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("{}{:?} != expected {}{:?}", got.dtype(), got.shape(), want.dtype(), want.shape()));
    }
    for (i, (a, b)) in f64s(got).iter().zip(f64s(want)).enumerate() {
        if !(a == &b || (a.is_nan() && b.is_nan())) {
            return Err(format!("element {i}: {a} != expected {b}"));
        }
    }
    Ok(())
}

/// Closeness relative to the largest expected magnitude (MLX accumulates in
/// the input dtype and in another order).
fn close(got: &Array, want: &Array, rtol: f64) -> std::result::Result<(), String> {
    if got.dtype() != want.dtype() || got.shape() != want.shape() {
        return Err(format!("{}{:?} != expected {}{:?}", got.dtype(), got.shape(), want.dtype(), want.shape()));
    }
    let (g, w) = (f64s(got), f64s(want));
    let scale = w.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        if (a - b).abs() > rtol * scale {
            return Err(format!("element {i}: {a} != expected {b} (scale {scale})"));
        }
    }
    Ok(())
}

fn rtol_for(d: Dtype) -> f64 {
    match d {
        Dtype::F16 => 4e-3,
        Dtype::BF16 => 2e-2,
        _ => 2e-5,
    }
}

/// Runs one golden case; `None` for ops of another test (nn layers).
fn run_case(c: &Case) -> Option<std::result::Result<(), String>> {
    let spec = spec_of(c);
    let affine = spec.mode == QuantMode::Affine;
    let i = &c.inputs;
    let res: Result<Vec<Array>> = match c.op.as_str() {
        "quantize" => ops::quantize(&i[0], spec).map(|(q, s, b)| {
            let mut v = vec![q, s];
            v.extend(b);
            v
        }),
        "dequantize" => ops::dequantize(&i[0], &i[1], i.get(2), spec).map(|d| vec![d]),
        "quantized_matmul" => ops::quantized_matmul(
            &i[0],
            &i[1],
            &i[2],
            if affine { i.get(3) } else { None },
            c.kw_bool("transpose", true),
            spec,
        )
        .map(|y| vec![y]),
        "gather_qmm" => {
            let nq = if affine { 4 } else { 3 };
            let mut rest = i[nq..].iter();
            let lhs = if c.kw_bool("has_lhs", false) { rest.next() } else { None };
            let rhs = if c.kw_bool("has_rhs", false) { rest.next() } else { None };
            ops::gather_qmm(
                &i[0],
                &i[1],
                &i[2],
                if affine { i.get(3) } else { None },
                lhs,
                rhs,
                c.kw_bool("transpose", true),
                spec,
            )
            .map(|y| vec![y])
        }
        _ => return None,
    };
    Some(match (&c.error, res) {
        (Some(_), Err(_)) => Ok(()),
        (Some((cls, msg)), Ok(_)) => Err(format!("expected {cls}: {msg}")),
        (None, Err(e)) => Err(format!("unexpected error {e}")),
        (None, Ok(outs)) => {
            if outs.len() != c.out.len() {
                return Some(Err(format!("{} outputs, expected {}", outs.len(), c.out.len())));
            }
            outs.iter().zip(&c.out).try_for_each(|(o, e)| match c.op.as_str() {
                // Quantize and dequantize are bit-exact.
                "quantize" | "dequantize" => exact(o, e),
                _ => close(o, e, rtol_for(e.dtype())),
            })
        }
    })
}

#[test]
fn golden_quantized_ops() {
    let mut failures = Vec::new();
    let mut ran = 0;
    let mut per_op = std::collections::BTreeMap::new();
    for c in common::load("quantized.json") {
        if let Some(r) = run_case(&c) {
            ran += 1;
            *per_op.entry(c.op.clone()).or_insert(0) += 1;
            if let Err(m) = r {
                failures.push(format!("{}: {m}", c.id));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {ran} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(ran > 120, "only {ran} cases ran");
    println!("{per_op:?}");
}

// ---------------------------------------------------------------- larger seeded inputs

fn rand_f32(rng: &mut Rng, shape: &[usize]) -> Array {
    ops::astype(&rng.array(shape, -1.0, 1.0), Dtype::F32).unwrap()
}

/// `x @ dequantize(W)ᵀ` (or `x @ dequantize(W)`) in f64 as the reference.
fn reference(x: &Array, q: &(Array, Array, Option<Array>), transpose: bool, spec: QuantSpec) -> Array {
    // Affine scales and biases widened to f64 first, so the reference is not
    // rounded to the scales' dtype.
    let f = |a: &Array| ops::astype(a, Dtype::F64).unwrap();
    let w = match spec.mode {
        QuantMode::Affine => ops::dequantize(&q.0, &f(&q.1), Some(&f(q.2.as_ref().unwrap())), spec).unwrap(),
        _ => f(&ops::dequantize(&q.0, &q.1, None, spec).unwrap()),
    };
    let w = if transpose { ops::swapaxes(&w, -1, -2).unwrap() } else { w };
    ops::matmul(&ops::astype(x, Dtype::F64).unwrap(), &w).unwrap()
}

#[test]
fn fast_kernels_match_dequantized_matmul() {
    let mut rng = Rng::new(11);
    let specs = [
        QuantSpec::affine(64, 4),
        QuantSpec::affine(32, 4),
        QuantSpec::affine(128, 4),
        QuantSpec::affine(32, 8),
        QuantSpec::affine(64, 8),
        QuantSpec::affine(128, 2),
        QuantSpec::affine(64, 3),
        QuantSpec::affine(32, 6),
        QuantSpec::affine(64, 1),
        QuantSpec::default_for(QuantMode::Mxfp4),
        QuantSpec::default_for(QuantMode::Nvfp4),
        QuantSpec::default_for(QuantMode::Mxfp8),
    ];
    // K = 576 is not a multiple of 128-word chunks; N = 1030 splits across threads.
    let (n, k) = (1030usize, 576usize);
    for spec in specs {
        if k % spec.group_size != 0 {
            continue;
        }
        let w = rand_f32(&mut rng, &[n, k]);
        let q = ops::quantize(&w, spec).unwrap();
        for m in [1usize, 3, 8, 9, 33] {
            let x = rand_f32(&mut rng, &[m, k]);
            let y = ops::quantized_matmul(&x, &q.0, &q.1, q.2.as_ref(), true, spec).unwrap();
            let r = reference(&x, &q, true, spec);
            close(&ops::astype(&y, Dtype::F64).unwrap(), &r, 1e-5).unwrap_or_else(|e| panic!("{spec:?} m={m}: {e}"));
        }
        // x @ W with W (k2 × n2) packed along n2.
        let (k2, n2) = (70usize, 384usize);
        let w2 = rand_f32(&mut rng, &[k2, n2]);
        let q2 = ops::quantize(&w2, spec).unwrap();
        for m in [1usize, 12] {
            let x = rand_f32(&mut rng, &[m, k2]);
            let y = ops::quantized_matmul(&x, &q2.0, &q2.1, q2.2.as_ref(), false, spec).unwrap();
            let r = reference(&x, &q2, false, spec);
            close(&ops::astype(&y, Dtype::F64).unwrap(), &r, 1e-5).unwrap_or_else(|e| panic!("{spec:?} n m={m}: {e}"));
        }
    }
}

/// The decode kernel reads f16 scales and biases in place (f32 x): every
/// width and group size, row counts around its 4-row blocks, and rows whose
/// last chunk of 16 words is partial or the only one.
#[test]
fn decode_kernel_with_half_scales() {
    let mut rng = Rng::new(15);
    for bits in [1u32, 2, 4, 8] {
        for gs in [32usize, 64, 128] {
            let spec = QuantSpec::affine(gs, bits);
            for (n, k) in [(77usize, 640usize), (40, 128), (300, 384)] {
                let w = ops::astype(&rng.array(&[n, k], -1.0, 1.0), Dtype::F16).unwrap();
                let q = ops::quantize(&w, spec).unwrap();
                assert_eq!(q.1.dtype(), Dtype::F16);
                for m in [1usize, 2, 4, 5, 8] {
                    let x = rand_f32(&mut rng, &[m, k]);
                    let y = ops::quantized_matmul(&x, &q.0, &q.1, q.2.as_ref(), true, spec).unwrap();
                    assert_eq!(y.dtype(), Dtype::F32);
                    let r = reference(&x, &q, true, spec);
                    close(&ops::astype(&y, Dtype::F64).unwrap(), &r, 1e-5)
                        .unwrap_or_else(|e| panic!("{spec:?} n={n} k={k} m={m}: {e}"));
                }
            }
        }
    }
}

/// The decode kernel's integer path (4 and 8 bits) holds each word's 8 or 4
/// values of x as 24-bit fixed point scaled to their largest: values spanning eight
/// decades inside a word, all-zero words, and row lengths whose last chunk
/// is full, half (256-bit) or wider must stay within a dot product's f32
/// rounding of the f64 reference, |y − r| ≤ 4e-6·Σ|x||w|. Non-finite x takes
/// the float kernel and propagates.
#[test]
fn decode_kernel_keeps_f32_accuracy_over_wide_x_ranges() {
    let mut rng = Rng::new(21);
    for (gs, bits) in [(32usize, 4u32), (64, 4), (128, 4), (32, 8), (64, 8), (128, 8)] {
        let spec = QuantSpec::affine(gs, bits);
        for k in [512usize, 576, 640, 768 + 96] {
            if k % gs != 0 {
                continue;
            }
            let n = 67;
            let w = ops::astype(&rng.array(&[n, k], -1.0, 1.0), Dtype::F16).unwrap();
            let q = ops::quantize(&w, spec).unwrap();
            let mut xs = Vec::with_capacity(3 * k);
            for i in 0..k {
                // Row 0: magnitudes 1e-4 ..= 1e4 cycling inside every word.
                let mag = 10f64.powi((i % 9) as i32 - 4);
                xs.push((mag * rng.uniform(0.5, 1.0) * if rng.uniform(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 }) as f32);
            }
            for i in 0..k {
                // Row 1: whole zero words (and a zero first chunk) between ordinary values.
                xs.push(if i < 128 || (i / 8) % 3 == 0 { 0.0 } else { rng.uniform(-1.0, 1.0) as f32 });
            }
            xs.extend((0..k).map(|_| rng.uniform(-1.0, 1.0) as f32));
            let x = Array::from_slice(&xs, &[3, k]).unwrap();
            let y = ops::astype(&ops::quantized_matmul(&x, &q.0, &q.1, q.2.as_ref(), true, spec).unwrap(), Dtype::F64)
                .unwrap();
            let r = reference(&x, &q, true, spec);
            // Σ|x||w| per output: the size of a dot product's rounding.
            let f = |a: &Array| ops::abs(&ops::astype(a, Dtype::F64).unwrap()).unwrap();
            let deq =
                ops::dequantize(&q.0, &f(&q.1), Some(&ops::astype(q.2.as_ref().unwrap(), Dtype::F64).unwrap()), spec)
                    .unwrap();
            let bound = ops::matmul(&f(&x), &ops::swapaxes(&ops::abs(&deq).unwrap(), -1, -2).unwrap()).unwrap();
            let (y, r, bound) = (f64s(&y), f64s(&r), f64s(&bound));
            for i in 0..y.len() {
                assert!(
                    (y[i] - r[i]).abs() <= 4e-6 * bound[i] + 1e-30,
                    "gs={gs} bits={bits} k={k} element {i}: {} != {} (Σ|x||w| = {})",
                    y[i],
                    r[i],
                    bound[i]
                );
            }
        }
    }
    // A NaN or an infinity anywhere in x: that row is NaN or infinite
    // throughout, the other rows are still right.
    for (bad, bits) in [(f32::NAN, 4), (f32::INFINITY, 4), (f32::NAN, 8), (f32::NEG_INFINITY, 8)] {
        let spec = QuantSpec::affine(32, bits);
        let (n, k) = (40usize, 576usize);
        let q = ops::quantize(&rand_f32(&mut rng, &[n, k]), spec).unwrap();
        let mut xs: Vec<f32> = (0..2 * k).map(|_| rng.uniform(-1.0, 1.0) as f32).collect();
        xs[300] = bad;
        let x = Array::from_slice(&xs, &[2, k]).unwrap();
        let y = f64s(&ops::quantized_matmul(&x, &q.0, &q.1, q.2.as_ref(), true, spec).unwrap());
        assert!(y[..n].iter().all(|v| !v.is_finite()), "{bad}: {:?}", &y[..4]);
        let r = f64s(&reference(&x, &q, true, spec));
        for j in n..2 * n {
            assert!((y[j] - r[j]).abs() < 1e-4, "{bad}: element {j}: {} != {}", y[j], r[j]);
        }
    }
}

/// The prompt-shaped kernel (more rows of x than the decode kernel takes):
/// f16 and f32 scales, widths it expands directly (4, 8) and through the
/// generic decoder (3), k deeper than one panel block, ragged row counts.
#[test]
fn prompt_kernel_with_half_scales_and_deep_k() {
    let mut rng = Rng::new(21);
    for bits in [3u32, 4, 8] {
        for gs in [32usize, 128] {
            let spec = QuantSpec::affine(gs, bits);
            for half in [false, true] {
                let (n, k) = (67usize, 1536usize);
                let w = rng.array(&[n, k], -1.0, 1.0);
                let w = if half { ops::astype(&w, Dtype::F16).unwrap() } else { ops::astype(&w, Dtype::F32).unwrap() };
                let q = ops::quantize(&w, spec).unwrap();
                for m in [9usize, 70, 129] {
                    let x = rand_f32(&mut rng, &[m, k]);
                    let y = ops::quantized_matmul(&x, &q.0, &q.1, q.2.as_ref(), true, spec).unwrap();
                    let r = reference(&x, &q, true, spec);
                    close(&ops::astype(&y, Dtype::F64).unwrap(), &r, 1e-5)
                        .unwrap_or_else(|e| panic!("{spec:?} half={half} m={m}: {e}"));
                }
            }
        }
    }
}

/// f16 scales and biases under f32 x: the product is f32, the scales are
/// not widened into the graph, and their gradients come back in f16 with
/// the values of the all-f32 computation.
#[test]
fn half_scales_keep_their_dtype_in_gradients() {
    let mut rng = Rng::new(16);
    let spec = QuantSpec::affine(32, 4);
    let w = ops::astype(&rng.array(&[24, 64], -1.0, 1.0), Dtype::F16).unwrap();
    let (wq, sc, bi) = ops::quantize(&w, spec).unwrap();
    let bi = bi.unwrap();
    let x = rand_f32(&mut rng, &[3, 64]);
    let f = |a: &[Array]| -> Result<Vec<Array>> {
        Ok(vec![ops::sum(&ops::quantized_matmul(&a[0], &wq, &a[1], Some(&a[2]), true, spec)?, None, false)?])
    };
    let g16 = kiln_core::grad(f, &[1, 2])(&[x.clone(), sc.clone(), bi.clone()]).unwrap();
    let f32s = |a: &Array| ops::astype(a, Dtype::F32).unwrap();
    let g32 = kiln_core::grad(f, &[1, 2])(&[x.clone(), f32s(&sc), f32s(&bi)]).unwrap();
    for (a, b) in g16.iter().zip(&g32) {
        assert_eq!(a.dtype(), Dtype::F16);
        close(&ops::astype(a, Dtype::F64).unwrap(), &ops::astype(b, Dtype::F64).unwrap(), 2e-3).unwrap();
    }
}

#[test]
fn half_precision_x_and_strided_inputs() {
    let mut rng = Rng::new(12);
    let spec = QuantSpec::affine(64, 4);
    let w = ops::astype(&rng.array(&[300, 256], -1.0, 1.0), Dtype::BF16).unwrap();
    let q = ops::quantize(&w, spec).unwrap();
    assert_eq!(q.1.dtype(), Dtype::BF16);
    for d in [Dtype::F16, Dtype::BF16] {
        let x = ops::astype(&rng.array(&[2, 256], -1.0, 1.0), d).unwrap();
        let y = ops::quantized_matmul(&x, &q.0, &q.1, q.2.as_ref(), true, spec).unwrap();
        assert_eq!(y.dtype(), if d == Dtype::BF16 { Dtype::BF16 } else { Dtype::F32 });
        let r = reference(&x, &q, true, spec);
        close(&ops::astype(&y, Dtype::F64).unwrap(), &r, rtol_for(y.dtype())).unwrap();
    }
    // A transposed (non-contiguous) x and a sliced weight matrix.
    let xt = ops::transpose(&rand_f32(&mut rng, &[256, 3])).unwrap();
    let wq = ops::slice(&q.0, &[0, 0], &[300, 32], &[2, 1]).unwrap();
    let sc = ops::slice(&q.1, &[0, 0], &[300, 4], &[2, 1]).unwrap();
    let bi = ops::slice(q.2.as_ref().unwrap(), &[0, 0], &[300, 4], &[2, 1]).unwrap();
    let y = ops::quantized_matmul(&xt, &wq, &sc, Some(&bi), true, spec).unwrap();
    let r = reference(&xt, &(wq.clone(), sc.clone(), Some(bi.clone())), true, spec);
    close(&ops::astype(&y, Dtype::F64).unwrap(), &r, 2e-2).unwrap();
}

#[test]
fn roundtrip_error_is_bounded() {
    let mut rng = Rng::new(13);
    let w = rand_f32(&mut rng, &[8, 256]);
    let wv = f64s(&w);
    for bits in [2u32, 3, 4, 5, 6, 8] {
        let spec = QuantSpec::affine(64, bits);
        let (q, s, b) = ops::quantize(&w, spec).unwrap();
        let d = f64s(&ops::dequantize(&q, &s, b.as_ref(), spec).unwrap());
        // Each value is within one step (its group's scale) of the original:
        // MLX represents the larger-magnitude edge exactly and rounds the
        // step so it divides it, which may clip the other edge.
        let sv = f64s(&s);
        for (i, (a, e)) in d.iter().zip(&wv).enumerate() {
            let step = sv[i / 64].abs();
            assert!((a - e).abs() <= step + 1e-6, "bits {bits}: {a} vs {e} (step {step})");
        }
    }
}

// ---------------------------------------------------------------- transform rules

fn fixed_q(spec: QuantSpec, n: usize, k: usize) -> (Array, Array, Option<Array>) {
    let mut rng = Rng::new(99);
    ops::quantize(&rand_f32(&mut rng, &[n, k]), spec).unwrap()
}

#[test]
fn quantized_matmul_grads_and_vmap() {
    let spec = QuantSpec::affine(32, 4);
    let mut rng = Rng::new(5);
    // d/dx, d/dscales, d/dbiases (f64 scales and biases make the product f64).
    let f = |a: &[Array]| {
        let (q, _, _) = fixed_q(QuantSpec::affine(32, 4), 5, 64);
        ops::quantized_matmul(&a[0], &q, &a[1], Some(&a[2]), true, QuantSpec::affine(32, 4))
    };
    let ins = [rng.array(&[3, 64], -1.0, 1.0), rng.array(&[5, 2], 0.1, 1.0), rng.array(&[5, 2], -1.0, 1.0)];
    check_grad("qmm_t", f, &ins);
    let fnt = |a: &[Array]| {
        let (q, _, _) = fixed_q(QuantSpec::affine(32, 4), 6, 64);
        ops::quantized_matmul(&a[0], &q, &a[1], Some(&a[2]), false, QuantSpec::affine(32, 4))
    };
    let ins_n = [rng.array(&[2, 3, 6], -1.0, 1.0), rng.array(&[6, 2], 0.1, 1.0), rng.array(&[6, 2], -1.0, 1.0)];
    check_grad("qmm_n", fnt, &ins_n);
    // Only x: fp modes (uint8 scales).
    let fx = |a: &[Array]| {
        let s = QuantSpec::default_for(QuantMode::Mxfp4);
        let (q, sc, _) = fixed_q(s, 4, 64);
        ops::quantized_matmul(&a[0], &q, &sc, None, true, s)
    };
    check_grad("qmm_mxfp4", fx, &[rng.array(&[2, 64], -1.0, 1.0)]);
    // vmap over x (any axis), and over scales/biases (batched weights).
    check_vmap(
        "qmm_vmap_x",
        f,
        &[rng.array(&[3, 64, 4], -1.0, 1.0), ins[1].clone(), ins[2].clone()],
        &[Some(2), None, None],
    );
    check_vmap(
        "qmm_vmap_all",
        f,
        &[rng.array(&[3, 2, 64], -1.0, 1.0), rng.array(&[3, 5, 2], 0.1, 1.0), rng.array(&[3, 5, 2], -1.0, 1.0)],
        &[Some(0), Some(0), Some(0)],
    );
    let fv = |a: &[Array]| {
        let (q, _, _) = fixed_q(QuantSpec::affine(32, 4), 5, 64);
        ops::quantized_matmul(&a[0], &q, &a[1], Some(&a[2]), true, QuantSpec::affine(32, 4))
    };
    check_vmap(
        "qmm_vmap_vector_x",
        fv,
        &[rng.array(&[64, 3], -1.0, 1.0), rng.array(&[3, 5, 2], 0.1, 1.0), ins[2].clone()],
        &[Some(1), Some(0), None],
    );
    // No gradient with respect to the packed codes.
    let (q, s, b) = fixed_q(spec, 5, 64);
    let x = rand_f32(&mut rng, &[1, 64]);
    let g = kiln_core::vjp(
        |a: &[Array]| Ok(vec![ops::quantized_matmul(&a[0], &a[1], &a[2], Some(&a[3]), true, spec)?]),
        &[x, q, s, b.unwrap()],
        &[ops::ones(&[1, 5], Dtype::F32).unwrap()],
    );
    assert!(g.is_err());
}

#[test]
fn dequantize_grads_and_vmap() {
    let mut rng = Rng::new(6);
    let f = |a: &[Array]| {
        let (q, _, _) = fixed_q(QuantSpec::affine(32, 3), 3, 64);
        ops::dequantize(&q, &a[0], Some(&a[1]), QuantSpec::affine(32, 3))
    };
    let ins = [rng.array(&[3, 2], 0.1, 1.0), rng.array(&[3, 2], -1.0, 1.0)];
    check_grad("dequantize", f, &ins);
    check_vmap("dequantize_vmap", f, &[rng.array(&[3, 2, 4], 0.1, 1.0), ins[1].clone()], &[Some(2), None]);
}

#[test]
fn quantize_vmap() {
    let mut rng = Rng::new(7);
    for (i, spec) in [QuantSpec::affine(32, 5), QuantSpec::default_for(QuantMode::Nvfp4)].into_iter().enumerate() {
        let fq = move |a: &[Array]| ops::quantize(&ops::astype(&a[0], Dtype::F32)?, spec).map(|t| t.0);
        let fs = move |a: &[Array]| ops::quantize(&ops::astype(&a[0], Dtype::F32)?, spec).map(|t| t.1);
        let x = rng.array(&[2, 3, 64], -1.0, 1.0);
        check_vmap(&format!("quantize_vmap_codes{i}"), fq, &[x.clone()], &[Some(1)]);
        check_vmap(&format!("quantize_vmap_scales{i}"), fs, &[x], &[Some(0)]);
    }
}

#[test]
fn gather_qmm_grads_and_vmap() {
    let mut rng = Rng::new(8);
    let f = |a: &[Array]| {
        let spec = QuantSpec::affine(32, 4);
        let mut r = Rng::new(3);
        let (q, s, b) = ops::quantize(&rand_f32(&mut r, &[3, 4, 64]), spec)?;
        let li = Array::from_slice(&[1u32, 0, 1], &[3])?;
        let ri = Array::from_slice(&[2u32, 2, 0], &[3])?;
        ops::gather_qmm(&a[0], &q, &s, b.as_ref(), Some(&li), Some(&ri), true, spec)
    };
    check_grad("gather_qmm", f, &[rng.array(&[2, 2, 64], -1.0, 1.0)]);
    check_vmap("gather_qmm_vmap", f, &[rng.array(&[2, 2, 2, 64], -1.0, 1.0)], &[Some(1)]);
}

// ---------------------------------------------------------------- errors

#[test]
fn bad_inputs_are_errors() {
    let mut rng = Rng::new(9);
    let w = rand_f32(&mut rng, &[4, 64]);
    let a = QuantSpec::affine(32, 4);
    let (q, s, b) = ops::quantize(&w, a).unwrap();
    let b = b.unwrap();
    let x = rand_f32(&mut rng, &[2, 64]);
    let msg = |r: Result<Array>| r.err().map(|e| e.to_string()).expect("expected an error");
    // Spec errors.
    assert!(msg(ops::quantize(&w, QuantSpec::affine(16, 4)).map(|t| t.0)).contains("group size"));
    assert!(msg(ops::quantize(&w, QuantSpec::affine(32, 7)).map(|t| t.0)).contains("bits"));
    let bad_fp = QuantSpec { group_size: 64, bits: 4, mode: QuantMode::Mxfp4 };
    assert!(msg(ops::quantize(&w, bad_fp).map(|t| t.0)).contains("mxfp4"));
    let bad_fp8 = QuantSpec { group_size: 32, bits: 4, mode: QuantMode::Mxfp8 };
    assert!(ops::quantize(&w, bad_fp8).is_err());
    // Shape and dtype errors of quantize.
    let e = msg(ops::quantize(&rand_f32(&mut rng, &[4, 48]), a).map(|t| t.0));
    assert!(e.contains("quantize") && e.contains("48"), "{e}");
    assert!(ops::quantize(&rand_f32(&mut rng, &[64]), a).is_err());
    assert!(msg(ops::quantize(&ops::astype(&w, Dtype::I32).unwrap(), a).map(|t| t.0)).contains("int32"));
    // Biases given / missing for the mode.
    assert!(msg(ops::dequantize(&q, &s, None, a)).contains("Biases"));
    let (fq, fs, _) = ops::quantize(&w, QuantSpec::default_for(QuantMode::Mxfp4)).unwrap();
    assert!(ops::dequantize(&fq, &fs, Some(&b), QuantSpec::default_for(QuantMode::Mxfp4)).is_err());
    // Scales of the wrong dtype for the mode.
    assert!(ops::dequantize(
        &fq,
        &ops::astype(&fs, Dtype::F32).unwrap(),
        None,
        QuantSpec::default_for(QuantMode::Mxfp4)
    )
    .is_err());
    assert!(ops::dequantize(&q, &ops::astype(&s, Dtype::U8).unwrap(), Some(&b), a).is_err());
    // Packed weights not uint32, scales/biases shapes.
    assert!(msg(ops::dequantize(&ops::astype(&q, Dtype::I32).unwrap(), &s, Some(&b), a)).contains("uint32"));
    let s1 = ops::slice(&s, &[0, 0], &[4, 1], &[1, 1]).unwrap();
    let e = msg(ops::dequantize(&q, &s1, Some(&s1), a));
    assert!(e.contains("dequantize") && e.contains("group_size=32"), "{e}");
    assert!(ops::dequantize(&q, &s, Some(&s1), a).is_err());
    // Wrong bits for the packed width.
    assert!(ops::quantized_matmul(&x, &q, &s, Some(&b), true, QuantSpec::affine(32, 8)).is_err());
    // x: inner dimension, dtype, rank.
    let e = msg(ops::quantized_matmul(&rand_f32(&mut rng, &[2, 48]), &q, &s, Some(&b), true, a));
    assert!(e.contains("quantized_matmul") && e.contains("48"), "{e}");
    assert!(ops::quantized_matmul(&ops::astype(&x, Dtype::I32).unwrap(), &q, &s, Some(&b), true, a).is_err());
    assert!(ops::quantized_matmul(
        &ops::astype(&x, Dtype::I32).unwrap(),
        &fq,
        &fs,
        None,
        true,
        QuantSpec::default_for(QuantMode::Mxfp4)
    )
    .is_err());
    assert!(ops::quantized_matmul(&x, &q, &s, Some(&b), false, a).is_err());
    // Batched weights need batched x; batch dims must broadcast.
    let (q3, s3, b3) = ops::quantize(&rand_f32(&mut rng, &[3, 4, 64]), a).unwrap();
    assert!(ops::quantized_matmul(&x, &q3, &s3, b3.as_ref(), true, a).is_err());
    assert!(ops::quantized_matmul(&rand_f32(&mut rng, &[2, 1, 64]), &q3, &s3, b3.as_ref(), true, a).is_err());
    // gather_qmm: index dtype and range.
    let x3 = rand_f32(&mut rng, &[2, 1, 64]);
    let fidx = Array::from_slice(&[0.0f32], &[1]).unwrap();
    assert!(ops::gather_qmm(&x3, &q3, &s3, b3.as_ref(), None, Some(&fidx), true, a).is_err());
    let big = Array::from_slice(&[5u32], &[1]).unwrap();
    assert!(ops::gather_qmm(&x3, &q3, &s3, b3.as_ref(), None, Some(&big), true, a).is_err());
    // Lazy out-of-range indices are caught by the kernel.
    let lazy =
        ops::add(&Array::from_slice(&[1u32], &[1]).unwrap(), &Array::from_slice(&[4u32], &[1]).unwrap()).unwrap();
    let y = ops::gather_qmm(&x3, &q3, &s3, b3.as_ref(), None, Some(&lazy), true, a).unwrap();
    assert!(y.eval().is_err());
}

/// Measures decode (x = [1, K]) throughput in GB/s of packed weights and
/// prompt-size products in GFLOP/s. Run with
/// `cargo test --release -p kiln-core --test quantized -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_quantized_matmul() {
    use std::time::Instant;
    let mut rng = Rng::new(1);
    // Reference: a plain f32 sum over a 256 MiB array.
    let big = ops::ones(&[64 << 20], Dtype::F32).unwrap();
    big.eval().unwrap();
    let t = Instant::now();
    for _ in 0..5 {
        ops::sum(&big, kiln_core::Axes::All, false).unwrap().eval().unwrap();
    }
    println!("f32 sum: {:.1} GB/s", 5.0 * 256.0 * 1.048576e6 / t.elapsed().as_secs_f64() / 1e9);
    for spec in [QuantSpec::affine(64, 4), QuantSpec::affine(32, 4), QuantSpec::affine(32, 8)] {
        for (n, k) in [(1536usize, 576usize), (4096, 1536), (49152, 576), (8960, 1536)] {
            let w = rand_f32(&mut rng, &[n, k]);
            let (q, s, b) = ops::quantize(&w, spec).unwrap();
            kiln_core::eval(&[&q, &s, b.as_ref().unwrap()]).unwrap();
            let x = rand_f32(&mut rng, &[1, k]);
            x.eval().unwrap();
            let iters = (2_000_000_000 / (n * k)).clamp(3, 200);
            let t = Instant::now();
            for _ in 0..iters {
                ops::quantized_matmul(&x, &q, &s, b.as_ref(), true, spec).unwrap().eval().unwrap();
            }
            let dt = t.elapsed().as_secs_f64() / iters as f64;
            let bytes = (q.nbytes() + s.nbytes() + b.as_ref().unwrap().nbytes()) as f64;
            println!(
                "decode g{} b{} N={n} K={k}: {:.1} us, {:.1} GB/s packed weights+scales",
                spec.group_size,
                spec.bits,
                dt * 1e6,
                bytes / dt / 1e9
            );
        }
    }
    let spec = QuantSpec::affine(64, 4);
    for (m, n, k) in [(128usize, 1536usize, 576usize), (256, 4096, 1536)] {
        let w = rand_f32(&mut rng, &[n, k]);
        let (q, s, b) = ops::quantize(&w, spec).unwrap();
        let x = rand_f32(&mut rng, &[m, k]);
        kiln_core::eval(&[&q, &s, b.as_ref().unwrap(), &x, &w]).unwrap();
        let t = Instant::now();
        for _ in 0..5 {
            ops::quantized_matmul(&x, &q, &s, b.as_ref(), true, spec).unwrap().eval().unwrap();
        }
        let dt = t.elapsed().as_secs_f64() / 5.0;
        let wt = ops::transpose(&w).unwrap();
        let t2 = Instant::now();
        for _ in 0..5 {
            ops::matmul(&x, &wt).unwrap().eval().unwrap();
        }
        let dt2 = t2.elapsed().as_secs_f64() / 5.0;
        let fl = 2.0 * (m * n * k) as f64;
        println!(
            "prompt M={m} N={n} K={k}: qmm {:.1} GFLOP/s, f32 matmul {:.1} GFLOP/s",
            fl / dt / 1e9,
            fl / dt2 / 1e9
        );
    }
}
