//! Reductions, scans, softmax/logsumexp, argmax/argmin, sort/median: golden
//! values from MLX, error cases, transform rules and the parallel/strided paths.

#![allow(clippy::needless_range_loop)]

mod common;

use common::{check_grad, check_vmap, Case, Rng};
use kiln_core::{ops, Array, Axes, Dtype, ErrorKind, Result};

fn axes_kw(c: &Case) -> Axes {
    match c.kw_ints("axis") {
        None => Axes::All,
        Some(v) => Axes::List(v.into_iter().map(|a| a as i32).collect()),
    }
}

fn axis_kw(c: &Case) -> Option<i32> {
    c.kw_i64("axis").map(|a| a as i32)
}

/// Runs one golden case of this file's ops (None for other ops).
fn run_case(c: &Case) -> Option<Result<Vec<Array>>> {
    let a = c.inputs.first()?.clone();
    let kd = c.kw_bool("keepdims", false);
    let ddof = c.kw_i64("ddof").unwrap_or(0) as i32;
    let rev = c.kw_bool("reverse", false);
    let inc = c.kw_bool("inclusive", true);
    let r = match c.op.as_str() {
        "sum" => ops::sum(&a, axes_kw(c), kd),
        "prod" => ops::prod(&a, axes_kw(c), kd),
        "max" => ops::max(&a, axes_kw(c), kd),
        "min" => ops::min(&a, axes_kw(c), kd),
        "mean" => ops::mean(&a, axes_kw(c), kd),
        "var" => ops::var(&a, axes_kw(c), kd, ddof),
        "std" => ops::std(&a, axes_kw(c), kd, ddof),
        "all" => ops::all(&a, axes_kw(c), kd),
        "any" => ops::any(&a, axes_kw(c), kd),
        "logsumexp" => ops::logsumexp(&a, axes_kw(c), kd),
        "median" => ops::median(&a, axes_kw(c), kd),
        "count_nonzero" => ops::count_nonzero(&a, axes_kw(c), kd),
        "argmax" => ops::argmax(&a, axis_kw(c), kd),
        "argmin" => ops::argmin(&a, axis_kw(c), kd),
        "softmax" => ops::softmax(&a, axes_kw(c), c.kw_bool("precise", false)),
        "cumsum" | "cumprod" | "cummax" | "cummin" | "logcumsumexp" => {
            let a = match c.kw_dtype("dtype") {
                Some(d) => ops::astype(&a, d).unwrap(),
                None => a,
            };
            let f = match c.op.as_str() {
                "cumsum" => ops::cumsum,
                "cumprod" => ops::cumprod,
                "cummax" => ops::cummax,
                "cummin" => ops::cummin,
                _ => ops::logcumsumexp,
            };
            f(&a, axis_kw(c), rev, inc)
        }
        _ => return None,
    };
    Some(r.map(|x| vec![x]))
}

#[test]
fn golden_reduction() {
    let n = common::run_golden("reduction.json", run_case);
    assert!(n > 700, "only {n} reduction cases ran");
}

#[test]
fn golden_scan() {
    let n = common::run_golden("scan.json", run_case);
    assert!(n > 170, "only {n} scan cases ran");
}

#[test]
fn golden_errors() {
    let mut ran = 0;
    for c in common::load("errors.json") {
        let Some(res) = run_case(&c) else { continue };
        let (cls, msg) = c.error.clone().expect("errors.json cases carry an error");
        ran += 1;
        let e = match res.and_then(|v| v[0].eval().map(|_| v)) {
            Ok(_) => panic!("{}: expected {cls} ({msg}), got Ok", c.id),
            Err(e) => e,
        };
        let kind = if cls == "IndexError" { ErrorKind::OutOfRange } else { ErrorKind::InvalidArgument };
        assert_eq!(e.kind(), kind, "{}: {e}", c.id);
        assert_eq!(e.op(), c.op, "{}: error names the op", c.id);
    }
    assert!(ran >= 8, "only {ran} error cases ran");
}

#[test]
fn error_messages_name_axis_and_rank() {
    let a = Array::from_slice(&[1.0f32; 6], &[2, 3]).unwrap();
    let e = ops::sum(&a, 2, false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
    assert!(e.to_string().contains("sum") && e.to_string().contains('2'), "{e}");
    let e = ops::max(&a, [1, -1], false).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("Duplicate"), "{e}");
    let empty = ops::zeros(&[0, 3], Dtype::F32).unwrap();
    let e = ops::max(&empty, 0, false).unwrap_err();
    assert!(e.to_string().contains("size 0"), "{e}");
    assert_eq!(ops::max(&empty, 1, false).unwrap().shape(), &[0]);
    assert!(ops::argmax(&empty, Some(0), false).is_err());
    assert_eq!(ops::sum(&empty, 0, false).unwrap().to_vec::<f32>().unwrap(), vec![0.0; 3]);
    assert_eq!(ops::prod(&empty, 0, false).unwrap().to_vec::<f32>().unwrap(), vec![1.0; 3]);
    assert!(ops::cumsum(&a, Some(2), false, true).is_err());
    assert!(ops::softmax(&a, -3, false).is_err());
}

#[test]
fn methods_and_semantics() {
    let a = Array::from_slice(&[1.0f32, f32::NAN, 3.0, 3.0, 0.0, -1.0], &[2, 3]).unwrap();
    assert!(a.max(1, false).unwrap().to_vec::<f32>().unwrap()[0].is_nan());
    assert_eq!(a.argmax(Some(1), false).unwrap().to_vec::<u32>().unwrap(), vec![1, 0]);
    assert_eq!(a.argmin(None, false).unwrap().item::<u32>().unwrap(), 1);
    assert_eq!(a.sum(0, true).unwrap().shape(), &[1, 3]);
    assert_eq!(a.mean(Axes::All, false).unwrap().dtype(), Dtype::F32);
    let b = Array::from_slice(&[-0.0f32, 0.0], &[2]).unwrap();
    assert!(b.max(0, false).unwrap().item::<f32>().unwrap().is_sign_negative());
    let i = Array::from_slice(&[100i8, 100, 100], &[3]).unwrap();
    assert_eq!(ops::sum(&i, 0, false).unwrap().item::<i32>().unwrap(), 300);
    assert_eq!(ops::cumsum(&i, None, false, true).unwrap().to_vec::<i8>().unwrap(), vec![100, -56, 44]);
}

fn host(a: &Array) -> Vec<f64> {
    ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

/// Reference reduction over one axis of a row-major (outer, n, inner) host array.
fn ref_reduce(v: &[f64], outer: usize, n: usize, inner: usize, f: impl Fn(f64, f64) -> f64, id: f64) -> Vec<f64> {
    let mut out = vec![id; outer * inner];
    for o in 0..outer {
        for k in 0..n {
            for i in 0..inner {
                out[o * inner + i] = f(out[o * inner + i], v[(o * n + k) * inner + i]);
            }
        }
    }
    out
}

fn close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{what}[{i}]: {x} vs {y}");
    }
}

#[test]
fn parallel_paths_match_host_reference() {
    let mut rng = Rng::new(3);
    // Row reduce (many rows), column reduce, middle axis, and a full reduce (partials).
    let (p, q, r) = (37, 515, 129);
    let x64 = rng.array(&[p, q, r], -1.0, 1.0);
    let x = ops::astype(&x64, Dtype::F32).unwrap();
    let v = host(&x);
    let add = |a: f64, b: f64| a + b;
    close(&host(&ops::sum(&x, 2, false).unwrap()), &ref_reduce(&v, p * q, r, 1, add, 0.0), 1e-5, "row");
    close(&host(&ops::sum(&x, 0, false).unwrap()), &ref_reduce(&v, 1, p, q * r, add, 0.0), 1e-5, "col");
    close(&host(&ops::sum(&x, 1, false).unwrap()), &ref_reduce(&v, p, q, r, add, 0.0), 1e-5, "mid");
    let total: f64 = v.iter().sum();
    close(&host(&ops::sum(&x, Axes::All, false).unwrap()), &[total], 1e-4, "full");
    let mx = |a: f64, b: f64| a.max(b);
    close(
        &host(&ops::max(&x, [0, 2], false).unwrap()),
        &{
            let t = ref_reduce(&v, p * q, r, 1, mx, f64::NEG_INFINITY);
            ref_reduce(&t, 1, p, q, mx, f64::NEG_INFINITY)
        },
        0.0,
        "max02",
    );
    // Transposed (strided) input.
    let t = ops::transpose(&x).unwrap(); // (r, q, p)
    close(
        &host(&ops::sum(&t, 2, false).unwrap()),
        &{
            let s = ref_reduce(&v, 1, p, q * r, add, 0.0); // (q, r)
            (0..r).flat_map(|k| (0..q).map(move |j| (k, j))).map(|(k, j)| s[j * r + k]).collect::<Vec<_>>()
        },
        1e-5,
        "transposed",
    );
    // f16/bf16 accumulate in f32.
    for d in [Dtype::F16, Dtype::BF16] {
        let h = ops::astype(&x, d).unwrap();
        let hv = host(&h);
        let s = ops::sum(&h, 2, false).unwrap();
        assert_eq!(s.dtype(), d);
        let tol = if d == Dtype::F16 { 2e-3 } else { 1e-2 };
        close(&host(&s), &ref_reduce(&hv, p * q, r, 1, add, 0.0), tol, "half sum");
    }
    // argmax over a long axis and over a middle axis.
    let am = host(&ops::argmax(&x, Some(1), false).unwrap());
    for o in 0..p {
        for i in 0..r {
            let col: Vec<f64> = (0..q).map(|k| v[(o * q + k) * r + i]).collect();
            let best = (0..q).fold(0, |b, k| if col[k] > col[b] { k } else { b });
            assert_eq!(am[o * r + i] as usize, best);
        }
    }
    // Large softmax / logsumexp rows split across threads.
    let sm = host(&ops::softmax(&x, -1, false).unwrap());
    let lse = host(&ops::logsumexp(&x, -1, false).unwrap());
    for row in 0..p * q {
        let xs = &v[row * r..(row + 1) * r];
        let m = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = xs.iter().map(|a| (a - m).exp()).sum();
        assert!((lse[row] - (m + s.ln())).abs() < 1e-5);
        for k in 0..r {
            assert!((sm[row * r + k] - (xs[k] - m).exp() / s).abs() < 1e-6);
        }
    }
    // Large scans.
    let cs = host(&ops::cumsum(&x, Some(1), false, true).unwrap());
    let mut acc = vec![0.0; r];
    for k in 0..q {
        for i in 0..r {
            acc[i] += v[k * r + i];
            assert!((cs[k * r + i] - acc[i]).abs() < 1e-4);
        }
    }
}

// ------------------------------------------------------------------ transforms

fn inputs(shape: &[usize], seed: u64) -> Vec<Array> {
    vec![Rng::new(seed).array(shape, 0.5, 2.0)]
}

#[test]
fn grads_of_reductions() {
    let x = inputs(&[3, 4, 2], 1);
    check_grad("sum1", |a| ops::sum(&a[0], 1, false), &x);
    check_grad("sum_all", |a| ops::sum(&a[0], Axes::All, true), &x);
    check_grad("prod02", |a| ops::prod(&a[0], [0, 2], false), &x);
    check_grad("max1", |a| ops::max(&a[0], 1, true), &x);
    check_grad("min_all", |a| ops::min(&a[0], Axes::All, false), &x);
    check_grad("mean", |a| ops::mean(&a[0], -1, false), &x);
    check_grad("var", |a| ops::var(&a[0], [0, 1], true, 1), &x);
    check_grad("logsumexp", |a| ops::logsumexp(&a[0], 1, false), &x);
    check_grad("logsumexp_all", |a| ops::logsumexp(&a[0], Axes::All, false), &x);
    check_grad("softmax", |a| ops::softmax(&a[0], -1, false), &x);
    check_grad("softmax0", |a| ops::softmax(&a[0], 0, false), &x);
    check_grad("softmax02", |a| ops::softmax(&a[0], [0, 2], true), &x);
    check_grad("median", |a| ops::median(&a[0], 1, false), &x);
    check_grad("median_all", |a| ops::median(&a[0], Axes::All, false), &x);
}

#[test]
fn std_grad_when_sqrt_has_rules() {
    // std = sqrt(var): its gradient needs the Sqrt primitive's rules (unary family).
    let x = inputs(&[3, 4], 2);
    let probe = kiln_core::vjp(|a: &[Array]| Ok(vec![ops::sqrt(&a[0])?]), &x, &[x[0].clone()]);
    match probe {
        Err(e) if e.kind() == ErrorKind::Unsupported => eprintln!("skipping std grad: {e}"),
        _ => check_grad("std", |a| ops::std(&a[0], 1, false, 0), &x),
    }
}

#[test]
fn prod_grad_with_zeros() {
    let x = Array::from_slice(&[0.0f64, 2.0, 3.0, 0.0, 0.0, 5.0, 1.0, 4.0, 2.0], &[3, 3]).unwrap();
    let (_, g) = kiln_core::vjp(
        |a: &[Array]| Ok(vec![ops::prod(&a[0], 1, false)?]),
        std::slice::from_ref(&x),
        &[Array::from_slice(&[1.0f64, 1.0, 1.0], &[3]).unwrap()],
    )
    .unwrap();
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![6.0, 0.0, 0.0, 0.0, 0.0, 0.0, 8.0, 2.0, 4.0]);
    let (_, g) = kiln_core::vjp(
        |a: &[Array]| Ok(vec![ops::cumprod(&a[0], Some(0), false, true)?.sum(0, false)?]),
        &[Array::from_slice(&[1.0f64, 0.0, 3.0, 2.0], &[4]).unwrap()],
        &[Array::scalar(1.0f64)],
    )
    .unwrap();
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![1.0, 10.0, 0.0, 0.0]);
}

#[test]
fn max_grad_splits_ties_like_mlx() {
    let x = Array::from_slice(&[1.0f64, 3.0, 3.0, 2.0], &[4]).unwrap();
    let (_, g) = kiln_core::vjp(
        |a: &[Array]| Ok(vec![ops::max(&a[0], 0, false)?]),
        std::slice::from_ref(&x),
        &[Array::scalar(1.0f64)],
    )
    .unwrap();
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![0.0, 0.5, 0.5, 0.0]);
    let (_, g) = kiln_core::vjp(
        |a: &[Array]| Ok(vec![ops::cummax(&a[0], Some(0), false, true)?.sum(0, false)?]),
        &[x],
        &[Array::scalar(1.0f64)],
    )
    .unwrap();
    assert_eq!(g[0].to_vec::<f64>().unwrap(), vec![1.0, 1.0, 2.0, 0.0]);
}

type ScanFn = fn(&Array, Option<i32>, bool, bool) -> Result<Array>;

#[test]
fn grads_of_scans() {
    let x = inputs(&[3, 5], 4);
    for (rev, inc) in [(false, true), (true, true), (false, false), (true, false)] {
        let tag = format!("rev={rev} inc={inc}");
        check_grad(&format!("cumsum {tag}"), |a| ops::cumsum(&a[0], Some(1), rev, inc), &x);
        check_grad(&format!("cumprod {tag}"), |a| ops::cumprod(&a[0], Some(1), rev, inc), &x);
    }
    for rev in [false, true] {
        check_grad("cummax", |a| ops::cummax(&a[0], Some(0), rev, true), &x);
        check_grad("cummin", |a| ops::cummin(&a[0], Some(1), rev, true), &x);
        check_grad("logcumsumexp", |a| ops::logcumsumexp(&a[0], Some(1), rev, true), &x);
    }
    check_grad("cumsum flat", |a| ops::cumsum(&a[0], None, false, true), &x);
    check_grad("cumprod axis0", |a| ops::cumprod(&a[0], Some(0), true, true), &x);
    // Exclusive cummax/cummin/logcumsumexp start at ±inf, where finite
    // differences are NaN: check them against the inclusive rule with the
    // cotangent shifted by one position instead.
    let scans: [(&str, ScanFn); 3] =
        [("cummax", ops::cummax), ("cummin", ops::cummin), ("logcumsumexp", ops::logcumsumexp)];
    let n = 6;
    let xv = Rng::new(9).array(&[n], 0.5, 2.0);
    let g = Rng::new(10).vec(n, -1.0, 1.0);
    for (name, f) in scans {
        for rev in [false, true] {
            let ex = kiln_core::vjp(
                |a: &[Array]| Ok(vec![f(&a[0], Some(0), rev, false)?]),
                std::slice::from_ref(&xv),
                &[Array::from_slice(&g, &[n]).unwrap()],
            )
            .unwrap()
            .1[0]
                .to_vec::<f64>()
                .unwrap();
            // Exclusive y_i equals inclusive y_{i-1} (y_{i+1} when reversed).
            let mut shifted = vec![0.0; n];
            for i in 0..n {
                let src = if rev { i.checked_sub(1) } else { (i + 1 < n).then_some(i + 1) };
                if let Some(s) = src {
                    shifted[i] = g[s];
                }
            }
            let inc = kiln_core::vjp(
                |a: &[Array]| Ok(vec![f(&a[0], Some(0), rev, true)?]),
                std::slice::from_ref(&xv),
                &[Array::from_slice(&shifted, &[n]).unwrap()],
            )
            .unwrap()
            .1[0]
                .to_vec::<f64>()
                .unwrap();
            close(&ex, &inc, 1e-12, &format!("{name} exclusive rev={rev}"));
            let tv = Rng::new(11).array(&[n], -1.0, 1.0);
            let jex = kiln_core::jvp(
                |a: &[Array]| Ok(vec![f(&a[0], Some(0), rev, false)?]),
                std::slice::from_ref(&xv),
                std::slice::from_ref(&tv),
            )
            .unwrap()
            .1[0]
                .to_vec::<f64>()
                .unwrap();
            let jin =
                kiln_core::jvp(|a: &[Array]| Ok(vec![f(&a[0], Some(0), rev, true)?]), std::slice::from_ref(&xv), &[tv])
                    .unwrap()
                    .1[0]
                    .to_vec::<f64>()
                    .unwrap();
            for i in 0..n {
                let src = if rev { (i + 1 < n).then_some(i + 1) } else { i.checked_sub(1) };
                let want = src.map_or(0.0, |s| jin[s]);
                assert!((jex[i] - want).abs() < 1e-12, "{name} exclusive jvp rev={rev} [{i}]: {} vs {want}", jex[i]);
            }
        }
    }
}

#[test]
fn no_grad_for_arg_and_bool_reductions() {
    let x = inputs(&[3, 4], 5);
    for f in [
        (|a: &[Array]| Ok(vec![ops::astype(&ops::argmax(&a[0], Some(1), false)?, Dtype::F64)?])) as fn(&[Array]) -> _,
        |a: &[Array]| Ok(vec![ops::astype(&ops::all(&a[0], 1, false)?, Dtype::F64)?]),
    ] {
        let e = kiln_core::vjp(f, &x, &[Array::from_slice(&[1.0f64; 3], &[3]).unwrap()]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    }
}

#[test]
fn vmaps() {
    let x = inputs(&[3, 4, 5], 6);
    for ax in [Some(0), Some(1), Some(2)] {
        let ia = [ax];
        check_vmap("sum", |a| ops::sum(&a[0], 1, false), &x, &ia);
        check_vmap("prod", |a| ops::prod(&a[0], -1, true), &x, &ia);
        check_vmap("max", |a| ops::max(&a[0], 0, false), &x, &ia);
        check_vmap("min", |a| ops::min(&a[0], Axes::All, false), &x, &ia);
        check_vmap("mean", |a| ops::mean(&a[0], 0, false), &x, &ia);
        check_vmap("var", |a| ops::var(&a[0], 1, false, 0), &x, &ia);
        check_vmap("all", |a| ops::astype(&ops::all(&ops::greater(&a[0], 1.0)?, 1, false)?, Dtype::F64), &x, &ia);
        check_vmap("argmax", |a| ops::astype(&ops::argmax(&a[0], Some(0), false)?, Dtype::F64), &x, &ia);
        check_vmap("argmin", |a| ops::astype(&ops::argmin(&a[0], Some(-1), true)?, Dtype::F64), &x, &ia);
        check_vmap("logsumexp", |a| ops::logsumexp(&a[0], -1, false), &x, &ia);
        check_vmap("logsumexp0", |a| ops::logsumexp(&a[0], 0, false), &x, &ia);
        check_vmap("softmax", |a| ops::softmax(&a[0], -1, false), &x, &ia);
        check_vmap("softmax0", |a| ops::softmax(&a[0], 0, false), &x, &ia);
        check_vmap("median", |a| ops::median(&a[0], 1, false), &x, &ia);
        check_vmap("cumsum", |a| ops::cumsum(&a[0], Some(0), true, false), &x, &ia);
        check_vmap("cumprod", |a| ops::cumprod(&a[0], Some(1), false, true), &x, &ia);
        check_vmap("cummax", |a| ops::cummax(&a[0], Some(-1), false, true), &x, &ia);
        check_vmap("cummin", |a| ops::cummin(&a[0], Some(0), true, true), &x, &ia);
        check_vmap("logcumsumexp", |a| ops::logcumsumexp(&a[0], Some(1), true, true), &x, &ia);
    }
    // vmap of a gradient (rules nest).
    let g = |a: &[Array]| {
        let f = |b: &[Array]| ops::softmax(&b[0], -1, false)?.max(Axes::All, false);
        Ok(kiln_core::grad(move |b: &[Array]| Ok(vec![f(b)?]), &[0])(a)?[0].clone())
    };
    check_vmap("grad softmax", g, &inputs(&[3, 4], 8), &[Some(0)]);
}

// ------------------------------------------------------------------ speed

fn median_time(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = std::time::Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("  (min {:.3} ms, median {:.3} ms)", t[0] * 1e3, t[reps / 2] * 1e3);
    t[reps / 2]
}

#[test]
#[ignore]
fn bench_sum_and_softmax_4096() {
    let n = 4096;
    let x = ops::astype(&Rng::new(1).array(&[n, n], -1.0, 1.0), Dtype::F32).unwrap();
    x.eval().unwrap();
    let bytes = (n * n * 4) as f64;
    let t = median_time(21, || ops::sum(&x, Axes::All, false).unwrap().eval().unwrap());
    println!("sum all: {:.3} ms, {:.1} GB/s", t * 1e3, bytes / t / 1e9);
    for shape in [[16usize, 1 << 20], [256, 1 << 16], [1 << 16, 256]] {
        let y = ops::reshape(&x, &[shape[0] as i64, shape[1] as i64]).unwrap();
        let t = median_time(21, || ops::sum(&y, -1, false).unwrap().eval().unwrap());
        println!("sum last axis {shape:?}: {:.3} ms, {:.1} GB/s", t * 1e3, bytes / t / 1e9);
    }
    let t = median_time(21, || ops::sum(&x, -1, false).unwrap().eval().unwrap());
    println!("sum last axis: {:.3} ms, {:.1} GB/s", t * 1e3, bytes / t / 1e9);
    let t = median_time(21, || ops::sum(&x, 0, false).unwrap().eval().unwrap());
    println!("sum axis 0: {:.3} ms, {:.1} GB/s", t * 1e3, bytes / t / 1e9);
    let t = median_time(21, || ops::sum(&x, Axes::All, false).unwrap().eval().unwrap());
    println!("sum all: {:.3} ms, {:.1} GB/s", t * 1e3, bytes / t / 1e9);
    let t = median_time(11, || ops::softmax(&x, -1, false).unwrap().eval().unwrap());
    println!("softmax last axis: {:.3} ms, {:.1} GB/s (in+out)", t * 1e3, 2.0 * bytes / t / 1e9);
    let t = median_time(11, || ops::logsumexp(&x, -1, false).unwrap().eval().unwrap());
    println!("logsumexp last axis: {:.3} ms, {:.1} GB/s", t * 1e3, bytes / t / 1e9);
}

/// The vectorised f32 argmax/argmin over contiguous lines: first of tied
/// extremes, first NaN, lengths around the 16-lane chunks, several lines.
#[test]
fn f32_arg_lines_match_a_scalar_scan() {
    let reference = |xs: &[f32], max: bool| -> u32 {
        let mut bi = 0;
        for (i, &x) in xs.iter().enumerate().skip(1) {
            let b = xs[bi];
            let better = if max { x > b } else { x < b };
            if better || (x.is_nan() && !b.is_nan()) {
                bi = i;
            }
        }
        bi as u32
    };
    let mut rng = Rng::new(5);
    for n in [1usize, 15, 16, 17, 33, 49152] {
        for case in 0..4 {
            let lines = 3;
            let mut v: Vec<f32> = (0..lines * n).map(|_| rng.uniform(-4.0, 4.0).floor() as f32).collect();
            if case == 1 {
                // A NaN in the middle of each line.
                for l in 0..lines {
                    v[l * n + n / 2] = f32::NAN;
                }
            }
            if case == 2 {
                v.iter_mut().for_each(|x| *x = if *x == 0.0 { -0.0 } else { 0.0 });
            }
            let a = Array::from_slice(&v, &[lines, n]).unwrap();
            for max in [true, false] {
                let got = if max { a.argmax(Some(1), false) } else { a.argmin(Some(1), false) };
                let got = got.unwrap().to_vec::<u32>().unwrap();
                let want: Vec<u32> = (0..lines).map(|l| reference(&v[l * n..(l + 1) * n], max)).collect();
                assert_eq!(got, want, "n={n} case={case} max={max}");
            }
        }
    }
}
