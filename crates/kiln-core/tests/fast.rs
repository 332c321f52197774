//! `kiln_core::ops::fast` (MLX's `mx.fast`): golden values and gradients
//! against MLX 0.32.4, finite-difference gradient checks (including grad of
//! grad), vmap-versus-loop checks, large and strided inputs against composed
//! references, and error cases.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{check_grad, check_vmap, compare, load, tol, Case, Rng};
use kiln_core::ops::fast::{self, AttentionMask};
use kiln_core::{ops, Array, Dtype, Result};

// ------------------------------------------------------------------ helpers

fn host(a: &Array) -> Vec<f64> {
    ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

fn vjp1(f: impl Fn(&[Array]) -> Result<Array>, primals: &[Array], cot: &Array) -> Result<Vec<Array>> {
    Ok(kiln_core::vjp(|xs: &[Array]| Ok(vec![f(xs)?]), primals, std::slice::from_ref(cot))?.1)
}

/// Splits `ins` as `[x, weight?, bias?]` for a norm case.
fn norm_args(c: &Case, ins: &[Array]) -> (Option<Array>, Option<Array>) {
    let mut k = 1;
    let w = if c.kw_bool("has_weight", false) {
        k += 1;
        Some(ins[k - 1].clone())
    } else {
        None
    };
    let b = if c.kw_bool("has_bias", false) { Some(ins[k].clone()) } else { None };
    (w, b)
}

fn rope_call(c: &Case, x: &Array, ins: &[Array]) -> Result<Array> {
    let dims = c.kw_i64("dims").unwrap() as usize;
    let trad = c.kw_bool("traditional", false);
    let base = c.kw_f64("base").map(|v| v as f32);
    let scale = c.kw_f64("scale").unwrap() as f32;
    let mut k = 1;
    let offa = if c.kw_bool("has_offset_array", false) {
        k += 1;
        Some(ins[k - 1].clone())
    } else {
        None
    };
    let freqs = if c.kw_bool("has_freqs", false) { Some(ins[k].clone()) } else { None };
    match &offa {
        Some(o) => fast::rope(x, dims, trad, base, scale, o, freqs.as_ref()),
        None => fast::rope(x, dims, trad, base, scale, c.kw_i64("offset").unwrap_or(0), freqs.as_ref()),
    }
}

fn sdpa_call(c: &Case, q: &Array, k: &Array, v: &Array, mask: Option<&Array>) -> Result<Array> {
    let scale = c.kw_f64("scale").unwrap() as f32;
    let m = match c.kwargs.get("mask").and_then(|m| m.as_str()) {
        Some("causal") => AttentionMask::Causal,
        Some(_) => AttentionMask::Array(mask.unwrap()),
        None => AttentionMask::None,
    };
    fast::scaled_dot_product_attention(q, k, v, scale, m)
}

fn run_case(c: &Case) -> Result<Vec<Array>> {
    let ins = &c.inputs;
    let eps = c.kw_f64("eps").unwrap_or(1e-5) as f32;
    match c.op.as_str() {
        "fast.rms_norm" => {
            let (w, _) = norm_args(c, ins);
            Ok(vec![fast::rms_norm(&ins[0], w.as_ref(), eps)?])
        }
        "fast.layer_norm" => {
            let (w, b) = norm_args(c, ins);
            Ok(vec![fast::layer_norm(&ins[0], w.as_ref(), b.as_ref(), eps)?])
        }
        "fast.rms_norm_vjp" | "fast.layer_norm_vjp" => {
            let n = ins.len() - 1;
            let (hw, hb) = (c.kw_bool("has_weight", false), c.kw_bool("has_bias", false));
            let rms = c.op == "fast.rms_norm_vjp";
            vjp1(
                |xs| {
                    let w = if hw { Some(&xs[1]) } else { None };
                    let b = if hb { Some(&xs[1 + hw as usize]) } else { None };
                    if rms {
                        fast::rms_norm(&xs[0], w, eps)
                    } else {
                        fast::layer_norm(&xs[0], w, b, eps)
                    }
                },
                &ins[..n],
                &ins[n],
            )
        }
        "fast.rope" => Ok(vec![rope_call(c, &ins[0], ins)?]),
        "fast.rope_vjp" => {
            let n = ins.len() - 1;
            let rest = ins[..n].to_vec();
            vjp1(|xs| rope_call(c, &xs[0], &rest), &ins[..1], &ins[n])
        }
        "fast.scaled_dot_product_attention" => Ok(vec![sdpa_call(c, &ins[0], &ins[1], &ins[2], ins.get(3))?]),
        "fast.scaled_dot_product_attention_vjp" => {
            let n = ins.len() - 1;
            let mask = if n == 4 { Some(ins[3].clone()) } else { None };
            vjp1(|xs| sdpa_call(c, &xs[0], &xs[1], &xs[2], mask.as_ref()), &ins[..3], &ins[n])
        }
        op => panic!("unknown op {op}"),
    }
}

/// Tolerance for a golden case: MLX's CPU path is a composed graph that rounds
/// every intermediate to the input dtype; the fused kernels keep f32 inside,
/// so half-precision results (and gradients, which chain more roundings)
/// differ by a few ulps.
fn case_tol(c: &Case, d: Dtype) -> (f64, f64) {
    let (rt, at) = tol(d);
    let grad = c.op.ends_with("_vjp");
    let sdpa = c.op.contains("attention");
    match d {
        Dtype::F32 if grad || sdpa => (1e-4, 1e-5),
        Dtype::F16 if grad || sdpa => (1e-2, 1e-2),
        Dtype::BF16 if grad || sdpa => (4e-2, 4e-2),
        _ => (rt, at),
    }
}

#[test]
fn golden_values_and_grads_match_mlx() {
    let mut failures = vec![];
    let mut ran = 0;
    for c in load("fast.json") {
        ran += 1;
        let res = run_case(&c);
        match (&c.error, res) {
            (Some(_), Err(_)) => {}
            (Some(e), Ok(_)) => failures.push(format!("{}: expected error {e:?}", c.id)),
            (None, Err(e)) => failures.push(format!("{}: unexpected error {e}", c.id)),
            (None, Ok(outs)) => {
                assert_eq!(outs.len(), c.out.len(), "{}", c.id);
                for (o, e) in outs.iter().zip(&c.out) {
                    let (rt, at) = case_tol(&c, e.dtype());
                    if let Err(m) = compare(o, e, rt, at) {
                        failures.push(format!("{}: {m}", c.id));
                    }
                }
            }
        }
    }
    assert!(ran >= 130, "only {ran} cases");
    assert!(failures.is_empty(), "{} of {ran} failed:\n{}", failures.len(), failures.join("\n"));
}

// ------------------------------------------------------------------ composed references

fn rms_ref(x: &Array, w: &Array, eps: f64) -> Result<Array> {
    let ms = ops::mean(&ops::square(x)?, -1, true)?;
    ops::multiply(&ops::multiply(x, &ops::rsqrt(&ops::add(&ms, eps)?)?)?, w)
}

fn ln_ref(x: &Array, w: &Array, b: &Array, eps: f64) -> Result<Array> {
    let mu = ops::mean(x, -1, true)?;
    let xc = ops::subtract(x, &mu)?;
    let var = ops::mean(&ops::square(&xc)?, -1, true)?;
    ops::add(&ops::multiply(&ops::multiply(&xc, &ops::rsqrt(&ops::add(&var, eps)?)?)?, w)?, b)
}

/// Attention with repeated k/v heads, scores materialised.
fn sdpa_ref(q: &Array, k: &Array, v: &Array, scale: f64, causal: bool) -> Result<Array> {
    let rep = q.shape()[1] / k.shape()[1];
    let k = ops::repeat(k, rep as i64, Some(1))?;
    let v = ops::repeat(v, rep as i64, Some(1))?;
    let mut s = ops::multiply(&ops::matmul(q, &ops::swapaxes(&k, -1, -2)?)?, scale)?;
    if causal {
        let (lq, lk) = (q.shape()[2] as i64, k.shape()[2] as i64);
        let qi = ops::expand_dims(&ops::arange_int(lk - lq, lk, 1)?, 1)?;
        let ki = ops::expand_dims(&ops::arange_int(0, lk, 1)?, 0)?;
        let m = ops::greater_equal(&qi, &ki)?;
        s = ops::where_(&m, &s, f32::MIN as f64)?;
    }
    ops::matmul(&ops::softmax(&s, -1, true)?, &v)
}

fn assert_close(name: &str, a: &Array, b: &Array, rtol: f64, atol: f64) {
    assert_eq!(a.shape(), b.shape(), "{name}: shape");
    let (x, y) = (host(a), host(b));
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!((p - q).abs() <= atol + rtol * q.abs(), "{name}[{i}]: {p} vs {q}");
    }
}

fn f32a(rng: &mut Rng, shape: &[usize], lo: f64, hi: f64) -> Array {
    ops::astype(&rng.array(shape, lo, hi), Dtype::F32).unwrap()
}

#[test]
fn large_norms_match_composed_reference_and_run_in_parallel() {
    let mut rng = Rng::new(3);
    // 96 × 1000 rows crosses the threading threshold; D not a multiple of the SIMD width.
    let x = f32a(&mut rng, &[4, 24, 1000], -3.0, 3.0);
    let w = f32a(&mut rng, &[1000], 0.5, 1.5);
    let b = f32a(&mut rng, &[1000], -1.0, 1.0);
    assert_close("rms", &fast::rms_norm(&x, Some(&w), 1e-5).unwrap(), &rms_ref(&x, &w, 1e-5).unwrap(), 1e-5, 1e-5);
    assert_close(
        "ln",
        &fast::layer_norm(&x, Some(&w), Some(&b), 1e-5).unwrap(),
        &ln_ref(&x, &w, &b, 1e-5).unwrap(),
        1e-4,
        1e-5,
    );
    // Gradients (weight/bias reduced across threads) against the composed graph's.
    let g = f32a(&mut rng, &[4, 24, 1000], -1.0, 1.0);
    let fused =
        vjp1(|a| fast::layer_norm(&a[0], Some(&a[1]), Some(&a[2]), 1e-5), &[x.clone(), w.clone(), b.clone()], &g)
            .unwrap();
    let comp = vjp1(|a| ln_ref(&a[0], &a[1], &a[2], 1e-5), &[x.clone(), w.clone(), b.clone()], &g).unwrap();
    for (i, (p, q)) in fused.iter().zip(&comp).enumerate() {
        assert_close(&format!("ln grad {i}"), p, q, 1e-3, 1e-3);
    }
    let fused = vjp1(|a| fast::rms_norm(&a[0], Some(&a[1]), 1e-5), &[x.clone(), w.clone()], &g).unwrap();
    let comp = vjp1(|a| rms_ref(&a[0], &a[1], 1e-5), &[x.clone(), w.clone()], &g).unwrap();
    for (i, (p, q)) in fused.iter().zip(&comp).enumerate() {
        assert_close(&format!("rms grad {i}"), p, q, 1e-3, 1e-3);
    }
}

#[test]
fn strided_inputs_are_handled() {
    let mut rng = Rng::new(5);
    let x = f32a(&mut rng, &[16, 8], -2.0, 2.0);
    let xt = ops::transpose(&x).unwrap(); // (8, 16), non-contiguous
    let xc = ops::contiguous(&xt, false);
    let w = f32a(&mut rng, &[16], 0.5, 1.5);
    assert_close(
        "rms strided",
        &fast::rms_norm(&xt, Some(&w), 1e-5).unwrap(),
        &fast::rms_norm(&xc, Some(&w), 1e-5).unwrap(),
        0.0,
        0.0,
    );
    let q = f32a(&mut rng, &[1, 6, 2, 8], -1.0, 1.0);
    let qt = ops::swapaxes(&q, 1, 2).unwrap(); // (1, 2, 6, 8) strided
    let qc = ops::contiguous(&qt, false);
    let k = f32a(&mut rng, &[1, 2, 5, 8], -1.0, 1.0);
    let v = f32a(&mut rng, &[1, 2, 5, 8], -1.0, 1.0);
    let a = fast::scaled_dot_product_attention(&qt, &k, &v, 0.3, AttentionMask::Causal).unwrap();
    let b = fast::scaled_dot_product_attention(&qc, &k, &v, 0.3, AttentionMask::Causal).unwrap();
    assert_close("sdpa strided", &a, &b, 0.0, 0.0);
    let r1 = fast::rope(&qt, 8, false, Some(10000.0), 1.0, 2, None).unwrap();
    let r2 = fast::rope(&qc, 8, false, Some(10000.0), 1.0, 2, None).unwrap();
    assert_close("rope strided", &r1, &r2, 0.0, 0.0);
}

#[test]
fn large_attention_matches_composed_reference() {
    let mut rng = Rng::new(9);
    // Several query and key blocks, GQA, lengths not multiples of the block sizes.
    let q = f32a(&mut rng, &[2, 4, 70, 32], -1.0, 1.0);
    let k = f32a(&mut rng, &[2, 2, 300, 32], -1.0, 1.0);
    let v = f32a(&mut rng, &[2, 2, 300, 24], -1.0, 1.0);
    for causal in [false, true] {
        let m = if causal { AttentionMask::Causal } else { AttentionMask::None };
        let got = fast::scaled_dot_product_attention(&q, &k, &v, 0.2, m).unwrap();
        let want = sdpa_ref(&q, &k, &v, 0.2, causal).unwrap();
        assert_close(&format!("sdpa causal={causal}"), &got, &want, 1e-4, 1e-5);
    }
    // f64 as well (the accumulator is f64 there).
    let q64 = ops::astype(&q, Dtype::F64).unwrap();
    let k64 = ops::astype(&k, Dtype::F64).unwrap();
    let v64 = ops::astype(&v, Dtype::F64).unwrap();
    // (0.25 is exact in f32, the type of the scale parameter.)
    let got = fast::scaled_dot_product_attention(&q64, &k64, &v64, 0.25, AttentionMask::Causal).unwrap();
    assert_eq!(got.dtype(), Dtype::F64);
    assert_close("sdpa f64", &got, &sdpa_ref(&q64, &k64, &v64, 0.25, true).unwrap(), 1e-12, 1e-12);
}

/// Attention with repeated k/v heads and an optional boolean or additive
/// mask broadcast to the scores, materialised.
fn sdpa_ref_masked(q: &Array, k: &Array, v: &Array, scale: f64, mask: Option<&Array>) -> Result<Array> {
    let rep = q.shape()[1] / k.shape()[1];
    let k = ops::repeat(k, rep as i64, Some(1))?;
    let v = ops::repeat(v, rep as i64, Some(1))?;
    let mut s = ops::matmul(&ops::multiply(q, scale)?, &ops::swapaxes(&k, -1, -2)?)?;
    if let Some(m) = mask {
        s = if m.dtype() == Dtype::Bool { ops::where_(m, &s, f32::MIN as f64)? } else { ops::add(&s, m)? };
    }
    ops::matmul(&ops::softmax(&s, -1, true)?, &v)
}

/// The fused backward kernel against the composed graph's gradients: several
/// query and key blocks, grouped-query heads, every mask kind, rows that see
/// no key (causal with more queries than keys), f32, f64 and half precision.
#[test]
fn fused_attention_gradients_match_composed_reference() {
    let mut rng = Rng::new(21);
    let shapes =
        [([2, 4, 70, 32], [2, 2, 300, 32], [2, 2, 300, 24]), ([1, 2, 130, 16], [1, 1, 100, 16], [1, 1, 100, 8])];
    for (qs, ks, vs) in shapes {
        let (lq, lk) = (qs[2], ks[2]);
        let q = f32a(&mut rng, &qs, -1.0, 1.0);
        let k = f32a(&mut rng, &ks, -1.0, 1.0);
        let v = f32a(&mut rng, &vs, -1.0, 1.0);
        let g = f32a(&mut rng, &[qs[0], qs[1], lq, vs[3]], -1.0, 1.0);
        let causal = {
            let qi = ops::expand_dims(&ops::arange_int(lk as i64 - lq as i64, lk as i64, 1).unwrap(), 1).unwrap();
            ops::greater_equal(&qi, &ops::expand_dims(&ops::arange_int(0, lk as i64, 1).unwrap(), 0).unwrap()).unwrap()
        };
        let bm = ops::less(&rng.array(&[qs[1], lq, lk], 0.0, 1.0), 0.7).unwrap();
        let add = f32a(&mut rng, &[lq, lk], -3.0, 0.0);
        let cases: [(&str, AttentionMask, Option<&Array>); 4] = [
            ("none", AttentionMask::None, None),
            ("causal", AttentionMask::Causal, Some(&causal)),
            ("bool", AttentionMask::Array(&bm), Some(&bm)),
            ("additive", AttentionMask::Array(&add), Some(&add)),
        ];
        for (name, m, rm) in cases {
            let ins = [q.clone(), k.clone(), v.clone()];
            let fused = vjp1(|a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.3, m), &ins, &g).unwrap();
            let want = vjp1(|a| sdpa_ref_masked(&a[0], &a[1], &a[2], 0.3, rm), &ins, &g).unwrap();
            for (i, (p, w)) in fused.iter().zip(&want).enumerate() {
                assert_close(&format!("{qs:?} {name} grad {i}"), p, w, 1e-3, 1e-5);
            }
            for dt in [Dtype::F64, Dtype::F16, Dtype::BF16] {
                let cast = |x: &Array| ops::astype(x, dt).unwrap();
                let ins: Vec<Array> = ins.iter().map(cast).collect();
                let fm;
                let mm = match m {
                    AttentionMask::Array(a) if a.dtype() != Dtype::Bool => {
                        fm = cast(a);
                        AttentionMask::Array(&fm)
                    }
                    m => m,
                };
                let got = vjp1(|a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.3, mm), &ins, &cast(&g))
                    .unwrap();
                let (rt, at) = match dt {
                    Dtype::F64 => (1e-3, 1e-5),
                    Dtype::F16 => (3e-2, 3e-3),
                    _ => (1e-1, 2e-2),
                };
                for (i, (p, w)) in got.iter().zip(&want).enumerate() {
                    assert_eq!(p.dtype(), dt);
                    assert_close(&format!("{qs:?} {name} {dt} grad {i}"), p, w, rt, at);
                }
            }
        }
    }
}

/// The few-query (decode) path: K and V read in place from a strided cache
/// view, grouped-query heads, causal rows that see every key, some keys or
/// (more queries than keys) none.
#[test]
fn few_query_attention_reads_cache_views() {
    let mut rng = Rng::new(10);
    let cache_k = f32a(&mut rng, &[2, 2, 64, 40], -1.0, 1.0);
    let cache_v = f32a(&mut rng, &[2, 2, 64, 24], -1.0, 1.0);
    for lk in [1usize, 3, 37] {
        let k = ops::slice(&cache_k, &[0, 0, 0, 0], &[2, 2, lk as i64, 40], &[1, 1, 1, 1]).unwrap();
        let v = ops::slice(&cache_v, &[0, 0, 0, 0], &[2, 2, lk as i64, 24], &[1, 1, 1, 1]).unwrap();
        kiln_core::eval(&[&k, &v]).unwrap();
        for lq in [1usize, 2, 4] {
            let q = f32a(&mut rng, &[2, 6, lq, 40], -1.0, 1.0);
            for causal in [false, true] {
                let m = if causal { AttentionMask::Causal } else { AttentionMask::None };
                let got = fast::scaled_dot_product_attention(&q, &k, &v, 0.3, m).unwrap();
                let want = sdpa_ref(&q, &k, &v, 0.3, causal).unwrap();
                assert_close(&format!("lk={lk} lq={lq} causal={causal}"), &got, &want, 1e-4, 1e-5);
            }
        }
    }
}

#[test]
fn fully_masked_rows_follow_mlx() {
    // Additive -inf everywhere in a row gives NaN (as softmax does); a
    // boolean mask that hides every key averages all values (MLX uses finfo.min).
    let q = Array::from_vec(vec![0.5f32; 8], &[1, 1, 2, 4]).unwrap();
    let k = Array::from_vec((0..12).map(|i| i as f32 * 0.1).collect::<Vec<_>>(), &[1, 1, 3, 4]).unwrap();
    let v = Array::from_vec((0..12).map(|i| i as f32).collect::<Vec<_>>(), &[1, 1, 3, 4]).unwrap();
    let add =
        Array::from_vec(vec![f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, 0.0, 0.0], &[2, 3]).unwrap();
    let y = host(&fast::scaled_dot_product_attention(&q, &k, &v, 1.0, AttentionMask::Array(&add)).unwrap());
    assert!(y[..4].iter().all(|v| v.is_nan()), "{y:?}");
    assert!(y[4..].iter().all(|v| v.is_finite()));
    let bm = Array::from_vec(vec![false, false, false, true, false, false], &[2, 3]).unwrap();
    let y = host(&fast::scaled_dot_product_attention(&q, &k, &v, 1.0, AttentionMask::Array(&bm)).unwrap());
    assert_eq!(&y[..4], &[4.0, 5.0, 6.0, 7.0]);
    assert_eq!(&y[4..], &[0.0, 1.0, 2.0, 3.0]);
}

// ------------------------------------------------------------------ gradients and vmap

#[test]
fn norm_gradients_match_finite_differences() {
    let mut rng = Rng::new(11);
    let x = rng.array(&[3, 5], -2.0, 2.0);
    let w = rng.array(&[5], 0.5, 1.5);
    let b = rng.array(&[5], -1.0, 1.0);
    check_grad("rms_norm", |a| fast::rms_norm(&a[0], Some(&a[1]), 1e-3), &[x.clone(), w.clone()]);
    check_grad("rms_norm no weight", |a| fast::rms_norm(&a[0], None, 1e-3), std::slice::from_ref(&x));
    check_grad(
        "layer_norm",
        |a| fast::layer_norm(&a[0], Some(&a[1]), Some(&a[2]), 1e-3),
        &[x.clone(), w.clone(), b.clone()],
    );
    check_grad("layer_norm bias only", |a| fast::layer_norm(&a[0], None, Some(&a[1]), 1e-3), &[x.clone(), b.clone()]);
    check_grad("layer_norm plain", |a| fast::layer_norm(&a[0], None, None, 1e-3), std::slice::from_ref(&x));
    // Grad of grad: the backward primitives differentiate their fallback graph.
    let g = rng.array(&[3, 5], -1.0, 1.0);
    check_grad(
        "rms_norm vjp",
        |a| {
            let gr = vjp1(|xs| fast::rms_norm(&xs[0], Some(&xs[1]), 1e-3), &a[..2], &a[2])?;
            ops::add(&ops::sum(&gr[0], 0, false)?, &gr[1])
        },
        &[x.clone(), w.clone(), g.clone()],
    );
    check_grad(
        "layer_norm vjp",
        |a| {
            let gr = vjp1(|xs| fast::layer_norm(&xs[0], Some(&xs[1]), Some(&xs[2]), 1e-3), &a[..3], &a[3])?;
            ops::add(&ops::add(&ops::sum(&gr[0], 0, false)?, &gr[1])?, &gr[2])
        },
        &[x, w, b, g],
    );
}

#[test]
fn rope_gradients_match_finite_differences() {
    let mut rng = Rng::new(12);
    let x = rng.array(&[2, 3, 6], -2.0, 2.0);
    check_grad("rope", |a| fast::rope(&a[0], 6, false, Some(10000.0), 1.0, 3, None), std::slice::from_ref(&x));
    check_grad(
        "rope trad partial",
        |a| fast::rope(&a[0], 4, true, Some(100.0), 0.5, 0, None),
        std::slice::from_ref(&x),
    );
    let off = Array::from_vec(vec![2i32, 7], &[2]).unwrap();
    check_grad("rope offsets", |a| fast::rope(&a[0], 6, false, Some(10.0), 1.0, &off, None), std::slice::from_ref(&x));
    let freqs = Array::from_vec(vec![1.0f32, 3.0, 9.0], &[3]).unwrap();
    check_grad("rope freqs", |a| fast::rope(&a[0], 6, true, None, 1.0, 1, Some(&freqs)), &[x]);
}

#[test]
fn attention_gradients_match_finite_differences() {
    let mut rng = Rng::new(13);
    let q = rng.array(&[1, 4, 3, 4], -1.0, 1.0);
    let k = rng.array(&[1, 2, 5, 4], -1.0, 1.0);
    let v = rng.array(&[1, 2, 5, 3], -1.0, 1.0);
    let ins = [q, k, v];
    check_grad("sdpa", |a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.5, AttentionMask::None), &ins);
    check_grad(
        "sdpa causal",
        |a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.5, AttentionMask::Causal),
        &ins,
    );
    let add = rng.array(&[3, 5], -2.0, 0.0);
    check_grad(
        "sdpa additive",
        |a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.5, AttentionMask::Array(&add)),
        &ins,
    );
    let bm = Array::from_vec((0..60).map(|i| (i * 7) % 5 != 0).collect::<Vec<bool>>(), &[1, 4, 3, 5]).unwrap();
    check_grad(
        "sdpa bool",
        |a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.5, AttentionMask::Array(&bm)),
        &ins,
    );
}

#[test]
fn vmap_matches_loops() {
    let mut rng = Rng::new(14);
    let x = rng.array(&[3, 2, 5], -2.0, 2.0);
    let w = rng.array(&[5], 0.5, 1.5);
    let wb = rng.array(&[3, 5], 0.5, 1.5);
    let b = rng.array(&[5], -1.0, 1.0);
    check_vmap("rms x", |a| fast::rms_norm(&a[0], Some(&a[1]), 1e-5), &[x.clone(), w.clone()], &[Some(0), None]);
    let xl = rng.array(&[2, 5, 3], -2.0, 2.0);
    check_vmap("rms x last", |a| fast::rms_norm(&a[0], Some(&a[1]), 1e-5), &[xl, w.clone()], &[Some(2), None]);
    check_vmap("rms w", |a| fast::rms_norm(&a[0], Some(&a[1]), 1e-5), &[x.clone(), wb.clone()], &[Some(0), Some(0)]);
    check_vmap(
        "ln wb",
        |a| fast::layer_norm(&a[0], Some(&a[1]), Some(&a[2]), 1e-5),
        &[rng.array(&[2, 3, 5], -2.0, 2.0), wb.clone(), b.clone()],
        &[Some(1), Some(0), None],
    );
    // rope: x batched; offsets batched; both.
    let xr = rng.array(&[3, 2, 4, 6], -2.0, 2.0);
    check_vmap("rope x", |a| fast::rope(&a[0], 6, false, Some(10000.0), 1.0, 2, None), &[xr.clone()], &[Some(0)]);
    let offb = Array::from_vec(vec![0i32, 3, 5, 1, 2, 9], &[3, 2]).unwrap();
    let x2 = rng.array(&[2, 4, 6], -2.0, 2.0);
    check_vmap(
        "rope offsets batched",
        |a| fast::rope(&a[0], 4, true, Some(10000.0), 1.0, &a[1], None),
        &[x2.clone(), offb.clone()],
        &[None, Some(0)],
    );
    let off = Array::from_vec(vec![4i32, 1], &[2]).unwrap();
    check_vmap(
        "rope per-row offsets",
        |a| fast::rope(&a[0], 6, false, Some(10000.0), 1.0, &a[1], None),
        &[rng.array(&[2, 3, 4, 6], -2.0, 2.0), off],
        &[Some(1), None],
    );
    // attention with a mask and GQA, batch on different axes.
    let q = rng.array(&[1, 4, 3, 4, 3], -1.0, 1.0);
    let k = rng.array(&[1, 2, 5, 4], -1.0, 1.0);
    let v = rng.array(&[3, 1, 2, 5, 4], -1.0, 1.0);
    let m = rng.array(&[3, 5], -1.0, 0.0);
    check_vmap(
        "sdpa",
        |a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.7, AttentionMask::Array(&a[3])),
        &[q.clone(), k.clone(), v.clone(), m],
        &[Some(4), None, Some(0), None],
    );
    check_vmap(
        "sdpa causal",
        |a| fast::scaled_dot_product_attention(&a[0], &a[1], &a[2], 0.7, AttentionMask::Causal),
        &[q, k, v],
        &[Some(4), None, Some(0)],
    );
}

// ------------------------------------------------------------------ errors

#[test]
fn bad_inputs_are_errors() {
    let x = Array::from_vec(vec![1.0f32; 24], &[2, 3, 4]).unwrap();
    let w3 = Array::from_vec(vec![1.0f32; 3], &[3]).unwrap();
    let w22 = Array::from_vec(vec![1.0f32; 4], &[2, 2]).unwrap();
    let w4 = Array::from_vec(vec![1.0f32; 4], &[4]).unwrap();
    let s = Array::scalar(1.0f32);
    let xi = Array::from_vec(vec![1i32; 24], &[2, 3, 4]).unwrap();
    assert!(fast::rms_norm(&x, Some(&w3), 1e-5).is_err(), "weight size");
    assert!(fast::rms_norm(&x, Some(&w22), 1e-5).is_err(), "weight rank");
    assert!(fast::rms_norm(&s, None, 1e-5).is_err(), "0-d x");
    assert!(fast::rms_norm(&xi, None, 1e-5).is_err(), "int x");
    assert!(fast::layer_norm(&x, Some(&w4), Some(&w3), 1e-5).is_err(), "bias size");
    assert!(fast::layer_norm(&x, None, Some(&w22), 1e-5).is_err(), "bias rank");
    assert!(fast::layer_norm(&x, Some(&w4), Some(&w4), 1e-5).is_ok());
    // rope
    let e = fast::rope(&x, 3, false, Some(1e4), 1.0, 0, None).unwrap_err();
    assert!(e.message().contains("even"), "{e}");
    assert!(fast::rope(&x, 0, false, Some(1e4), 1.0, 0, None).is_err(), "dims 0");
    assert!(fast::rope(&x, 6, false, Some(1e4), 1.0, 0, None).is_err(), "dims > D");
    let x2 = Array::from_vec(vec![1.0f32; 8], &[2, 4]).unwrap();
    assert!(fast::rope(&x2, 4, false, Some(1e4), 1.0, 0, None).is_err(), "rank 2");
    assert!(fast::rope(&xi, 4, false, Some(1e4), 1.0, 0, None).is_err(), "int x");
    assert!(fast::rope(&x, 4, false, None, 1.0, 0, None).is_err(), "no base nor freqs");
    let fr = Array::from_vec(vec![1.0f32; 2], &[2]).unwrap();
    assert!(fast::rope(&x, 4, false, Some(1e4), 1.0, 0, Some(&fr)).is_err(), "base and freqs");
    assert!(fast::rope(&x, 4, false, None, 1.0, 0, Some(&w3)).is_err(), "freqs size");
    assert!(fast::rope(&x, 4, false, None, 1.0, 0, Some(&fr)).is_ok());
    let off3 = Array::from_vec(vec![1i32; 3], &[3]).unwrap();
    assert!(fast::rope(&x, 4, false, Some(1e4), 1.0, &off3, None).is_err(), "offset size");
    let offf = Array::scalar(1.0f32);
    assert!(fast::rope(&x, 4, false, Some(1e4), 1.0, &offf, None).is_err(), "float offset");
    let off2d = Array::from_vec(vec![1i32; 2], &[1, 2]).unwrap();
    assert!(fast::rope(&x, 4, false, Some(1e4), 1.0, &off2d, None).is_err(), "2-d offset");
    // attention
    let q = Array::from_vec(vec![0.1f32; 48], &[1, 3, 4, 4]).unwrap();
    let k = Array::from_vec(vec![0.1f32; 32], &[1, 2, 4, 4]).unwrap();
    let e = fast::scaled_dot_product_attention(&q, &k, &k, 1.0, AttentionMask::None).unwrap_err();
    assert!(e.message().contains("multiple"), "{e}");
    assert!(fast::scaled_dot_product_attention(&x, &x, &x, 1.0, AttentionMask::None).is_err(), "rank 3");
    let k5 = Array::from_vec(vec![0.1f32; 40], &[1, 2, 4, 5]).unwrap();
    let q2 = Array::from_vec(vec![0.1f32; 32], &[1, 2, 4, 4]).unwrap();
    assert!(fast::scaled_dot_product_attention(&q2, &k5, &k5, 1.0, AttentionMask::None).is_err(), "D mismatch");
    let kb = Array::from_vec(vec![0.1f32; 64], &[2, 2, 4, 4]).unwrap();
    assert!(fast::scaled_dot_product_attention(&q2, &kb, &kb, 1.0, AttentionMask::None).is_err(), "batch");
    let vshort = Array::from_vec(vec![0.1f32; 24], &[1, 2, 3, 4]).unwrap();
    assert!(fast::scaled_dot_product_attention(&q2, &k, &vshort, 1.0, AttentionMask::None).is_err(), "L_k vs L_v");
    let m5 = Array::from_vec(vec![0.0f32; 16], &[1, 1, 1, 4, 4]).unwrap();
    assert!(fast::scaled_dot_product_attention(&q2, &k, &k, 1.0, AttentionMask::Array(&m5)).is_err(), "mask rank");
    let mbad = Array::from_vec(vec![0.0f32; 3], &[3]).unwrap();
    assert!(fast::scaled_dot_product_attention(&q2, &k, &k, 1.0, AttentionMask::Array(&mbad)).is_err(), "mask shape");
    let qh = ops::astype(&q2, Dtype::F16).unwrap();
    let kh = ops::astype(&k, Dtype::F16).unwrap();
    let m32 = Array::from_vec(vec![0.0f32; 16], &[4, 4]).unwrap();
    assert!(
        fast::scaled_dot_product_attention(&qh, &kh, &kh, 1.0, AttentionMask::Array(&m32)).is_err(),
        "f32 mask with f16 attention"
    );
    let qi = Array::from_vec(vec![1i32; 32], &[1, 2, 4, 4]).unwrap();
    assert!(fast::scaled_dot_product_attention(&qi, &qi, &qi, 1.0, AttentionMask::None).is_err(), "int");
}
