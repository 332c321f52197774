//! Shape and layout ops: golden values, errors, views, properties and transform rules.
// `common` (shared) trips these lints on the current toolchain; test code clones small arrays freely.
#![allow(clippy::cloned_ref_to_slice_refs, clippy::needless_range_loop)]

mod common;

use common::{check_grad, check_vmap, Case, Rng};
use kiln_core::ops::{self, PadMode, SplitSpec};
use kiln_core::{Array, Dtype, ErrorKind, Result, Scalar};
use serde_json::Value;
use std::sync::Arc;

fn ints(v: &Value) -> Vec<i64> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_i64().unwrap()).collect(),
        x => vec![x.as_i64().unwrap()],
    }
}

fn scalar_of(v: &Value) -> Scalar {
    match v {
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) if n.is_i64() => Scalar::Int(n.as_i64().unwrap()),
        v => Scalar::Float(common::json_f64(v)),
    }
}

fn pad_widths(v: Option<&Value>) -> Vec<(i64, i64)> {
    match v {
        None => vec![(0, 0)],
        Some(Value::Number(n)) => vec![(n.as_i64().unwrap(), n.as_i64().unwrap())],
        Some(Value::Array(a)) => {
            if a.iter().all(|x| x.is_array()) {
                a.iter().map(ints).map(|p| (p[0], *p.get(1).unwrap_or(&p[0]))).collect()
            } else {
                let p = ints(&Value::Array(a.clone()));
                vec![(p[0], *p.get(1).unwrap_or(&p[0]))]
            }
        }
        _ => panic!("bad pad_width"),
    }
}

fn axis_list(c: &Case, k: &str) -> Option<Vec<i32>> {
    c.kw_ints(k).map(|v| v.iter().map(|&x| x as i32).collect())
}

fn one(r: Result<Array>) -> Option<Result<Vec<Array>>> {
    Some(r.map(|a| vec![a]))
}

/// Runs one shape-family golden case (None for ops of other families).
fn run_shape(c: &Case) -> Option<Result<Vec<Array>>> {
    let x = c.inputs.first();
    let ax = |k: &str, d: i64| c.kw_i64(k).unwrap_or(d) as i32;
    match c.op.as_str() {
        "reshape" => one(ops::reshape(x?, &c.kw_ints("shape").unwrap_or_default())),
        "flatten" => one(ops::flatten(x?, ax("start_axis", 0), ax("end_axis", -1))),
        "unflatten" => one(ops::unflatten(x?, ax("axis", 0), &c.kw_ints("shape").unwrap())),
        "squeeze" => one(match axis_list(c, "axis") {
            Some(a) => ops::squeeze_axes(x?, &a),
            None => ops::squeeze(x?),
        }),
        "expand_dims" => one(ops::expand_dims_axes(x?, &axis_list(c, "axis").unwrap())),
        "transpose" => one(match axis_list(c, "axes") {
            Some(a) => ops::transpose_axes(x?, &a),
            None => ops::transpose(x?),
        }),
        "swapaxes" => one(ops::swapaxes(x?, ax("axis1", 0), ax("axis2", 0))),
        "moveaxis" => one(ops::moveaxis(x?, ax("source", 0), ax("destination", 0))),
        "broadcast_to" => {
            let s: Vec<usize> = c.kw_ints("shape").unwrap().iter().map(|&d| d as usize).collect();
            one(ops::broadcast_to(x?, &s))
        }
        "broadcast_arrays" => Some(ops::broadcast_arrays(&c.inputs)),
        "concatenate" => {
            let axis = if c.kwargs.get("axis").is_some_and(|v| v.is_null()) { None } else { Some(ax("axis", 0)) };
            one(ops::concatenate(&c.inputs, axis))
        }
        "stack" => one(ops::stack(&c.inputs, ax("axis", 0))),
        "unstack" => Some(ops::unstack(x?, ax("axis", 0))),
        "split" => {
            let spec = match c.kw("indices_or_sections").unwrap() {
                Value::Array(a) => SplitSpec::Indices(a.iter().map(|v| v.as_i64().unwrap()).collect()),
                v => SplitSpec::Sections(v.as_i64().unwrap()),
            };
            Some(ops::split(x?, spec, ax("axis", 0)))
        }
        "repeat" => one(ops::repeat(x?, c.kw_i64("repeats").unwrap(), c.kw_i64("axis").map(|a| a as i32))),
        "tile" => one(ops::tile(x?, &c.kw_ints("reps").unwrap())),
        "pad" => {
            let mode = match c.kw("mode").and_then(|m| m.as_str()) {
                Some(m) => match PadMode::from_name(m) {
                    Ok(m) => m,
                    Err(e) => return Some(Err(e)),
                },
                None => PadMode::Constant,
            };
            let v = c.kw("constant_values").map(scalar_of).unwrap_or(Scalar::Int(0));
            one(ops::pad(x?, &pad_widths(c.kw("pad_width")), mode, v))
        }
        "flip" => one(ops::flip(x?, axis_list(c, "axis").as_deref())),
        "roll" => one(ops::roll(x?, &c.kw_ints("shift").unwrap(), axis_list(c, "axis").as_deref())),
        "atleast_1d" => one(ops::atleast_1d(x?)),
        "atleast_2d" => one(ops::atleast_2d(x?)),
        "atleast_3d" => one(ops::atleast_3d(x?)),
        "diag" => one(ops::diag(x?, c.kw_i64("k").unwrap_or(0))),
        "diagonal" => one(ops::diagonal(x?, c.kw_i64("offset").unwrap_or(0), ax("axis1", 0), ax("axis2", 1))),
        "trace" => {
            one(ops::trace(x?, c.kw_i64("offset").unwrap_or(0), ax("axis1", 0), ax("axis2", 1), c.kw_dtype("dtype")))
        }
        "as_strided" => {
            let a = x?;
            let shape: Vec<usize> = c
                .kw_ints("shape")
                .map(|v| v.iter().map(|&d| d as usize).collect())
                .unwrap_or_else(|| a.shape().to_vec());
            let strides = c
                .kw_ints("strides")
                .unwrap_or_else(|| kiln_core::shape::row_major_strides(&shape).iter().map(|&s| s as i64).collect());
            one(ops::as_strided(a, &shape, &strides, c.kw_i64("offset").unwrap_or(0)))
        }
        "contiguous" => one(Ok(ops::contiguous(x?, c.kw_bool("allow_col_major", false)))),
        _ => None,
    }
}

#[test]
fn golden_shape() {
    let n = common::run_golden("shape.json", run_shape);
    assert_eq!(n, 155, "every shape.json case must run");
}

#[test]
fn golden_errors_for_shape_ops() {
    let mut kinds = 0;
    for c in common::load("errors.json") {
        let Some((cls, _)) = &c.error else { continue };
        let Some(res) = run_shape(&c) else { continue };
        let e = res.err().unwrap_or_else(|| panic!("{}: expected {cls}", c.id));
        let want = if cls == "IndexError" { ErrorKind::OutOfRange } else { ErrorKind::InvalidArgument };
        assert_eq!(e.kind(), want, "{}: {e}", c.id);
        kinds += 1;
    }
    assert!(kinds >= 25, "only {kinds} shape error cases ran");
}

fn host(a: &Array) -> Vec<f64> {
    ops::astype(a, Dtype::F64).unwrap().to_vec::<f64>().unwrap()
}

fn iota(shape: &[usize]) -> Array {
    let n: usize = shape.iter().product();
    Array::from_vec((0..n).map(|i| i as f64).collect(), shape).unwrap()
}

fn same_buffer(a: &Array, b: &Array) -> bool {
    a.eval().unwrap();
    b.eval().unwrap();
    Arc::ptr_eq(a.data().buffer(), b.data().buffer())
}

#[test]
fn views_share_buffers_and_read_correctly() {
    let a = iota(&[2, 3, 4]);
    a.eval().unwrap();
    let t = ops::transpose(&a).unwrap();
    assert!(same_buffer(&a, &t));
    let r = ops::reshape(&a, &[6, 4]).unwrap();
    assert!(same_buffer(&a, &r));
    let sw = ops::swapaxes(&a, 0, 2).unwrap();
    assert!(same_buffer(&a, &sw));
    let m = ops::moveaxis(&a, 0, -1).unwrap();
    assert!(same_buffer(&a, &m));
    let b = ops::broadcast_to(&ops::reshape(&a, &[2, 1, 3, 4]).unwrap(), &[2, 5, 3, 4]).unwrap();
    assert!(same_buffer(&a, &b));
    // squeeze / expand_dims of a transposed view stay views (no copy).
    let e = ops::expand_dims_axes(&t, &[0, 2]).unwrap();
    assert!(same_buffer(&a, &e));
    assert_eq!(host(&e), host(&ops::contiguous(&t, false)));
    let sq = ops::squeeze(&e).unwrap();
    assert!(same_buffer(&a, &sq));
    // Slices with negative steps, flip, split and unstack are views.
    let f = ops::flip(&a, Some(&[0, 2])).unwrap();
    assert!(same_buffer(&a, &f));
    assert_eq!(host(&f)[..4], [15.0, 14.0, 13.0, 12.0]);
    let s = ops::slice(&a, &[1, -1, 3], &[-3, 0, -5], &[-1, -2, -2]).unwrap();
    assert!(same_buffer(&a, &s));
    assert_eq!(s.shape(), &[2, 1, 2]);
    assert_eq!(host(&s), vec![23.0, 21.0, 11.0, 9.0]);
    for p in ops::split(&a, SplitSpec::Indices(vec![1, 3]), 1).unwrap() {
        assert!(same_buffer(&a, &p));
    }
    for p in ops::unstack(&a, 2).unwrap() {
        assert!(same_buffer(&a, &p));
    }
    let d = ops::diagonal(&a, 1, 1, 2).unwrap();
    assert!(same_buffer(&a, &d));
    assert_eq!(host(&d), vec![1.0, 6.0, 11.0, 13.0, 18.0, 23.0]);
    let w = ops::as_strided(&a, &[5, 4], &[2, 1], 3).unwrap();
    assert!(same_buffer(&a, &w));
    assert_eq!(host(&w)[4..8], [5.0, 6.0, 7.0, 8.0]);
    let c = ops::contiguous(&a, false);
    assert!(same_buffer(&a, &c));
    // A reshape that merges non-contiguous axes copies, with correct values.
    let tr = ops::reshape(&t, &[-1]).unwrap();
    assert!(!same_buffer(&a, &tr));
    let hv = host(&a);
    let expect: Vec<f64> = (0..4)
        .flat_map(|k| (0..3).flat_map(move |j| (0..2).map(move |i| (i, j, k))))
        .map(|(i, j, k)| hv[i * 12 + j * 4 + k])
        .collect();
    assert_eq!(host(&tr), expect);
    // Copies of negative-stride views read the right elements.
    assert_eq!(host(&ops::contiguous(&f, false)), host(&f));
}

#[test]
fn as_strided_rejects_out_of_bounds_views() {
    let a = iota(&[12]);
    for (shape, strides, off) in
        [(vec![5usize, 4], vec![2i64, 1], 5i64), (vec![3], vec![-1], 1), (vec![2], vec![1], -1)]
    {
        let e = ops::as_strided(&a, &shape, &strides, off).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfRange, "{e}");
    }
    assert!(ops::as_strided(&a, &[2, 2], &[1], 0).is_err());
    let rev = ops::as_strided(&a, &[3], &[-2], 11).unwrap();
    assert_eq!(host(&rev), vec![11.0, 9.0, 7.0]);
    // An empty view may start anywhere.
    assert_eq!(ops::as_strided(&a, &[0, 3], &[100, 100], 0).unwrap().shape(), &[0, 3]);
    // A non-contiguous input is made row-major first.
    let t = ops::transpose(&iota(&[3, 4])).unwrap();
    assert_eq!(host(&ops::as_strided(&t, &[2], &[1], 1).unwrap()), vec![4.0, 8.0]);
}

#[test]
fn error_kinds_for_bad_arguments() {
    let a = iota(&[2, 3]);
    let oor = |r: Result<Array>| assert_eq!(r.unwrap_err().kind(), ErrorKind::OutOfRange);
    let inv = |r: Result<Array>| assert_eq!(r.unwrap_err().kind(), ErrorKind::InvalidArgument);
    inv(ops::reshape(&a, &[4]));
    inv(ops::squeeze_axes(&a, &[0]));
    oor(ops::squeeze_axes(&a, &[2]));
    oor(ops::swapaxes(&a, 0, 2));
    oor(ops::flatten(&a, 0, 5));
    oor(ops::diagonal(&a, 0, 0, 3));
    oor(ops::roll(&a, &[1], Some(&[-3])));
    oor(ops::flip(&a, Some(&[2])));
    oor(ops::concatenate(&[a.clone(), a.clone()], Some(2)));
    inv(ops::concatenate(&[a.clone(), iota(&[2, 2])], Some(0)));
    inv(ops::concatenate(&[], Some(0)));
    inv(ops::stack(&[a.clone(), iota(&[3, 2])], 0));
    inv(ops::tile(&a, &[2, -1]));
    inv(ops::repeat(&a, -2, None));
    inv(ops::pad(&a, &[(1, -1)], PadMode::Edge, 0));
    inv(ops::pad(&iota(&[0, 2]), &[(1, 1)], PadMode::Reflect, 0));
    inv(ops::unflatten(&a, 1, &[-1, -1]));
    inv(ops::slice(&a, &[0, 0], &[1, 1], &[1, 0]));
    inv(ops::slice(&a, &[0], &[1], &[1]));
    inv(ops::diag(&iota(&[2, 2, 2]), 0));
    inv(ops::trace(&a, 0, 1, -1, None));
    assert!(ops::split(&a, SplitSpec::Sections(0), 0).is_err());
    assert!(ops::roll(&a, &[1, 2, 3], Some(&[0, 1])).is_err());
    assert!(ops::broadcast_arrays(&[a.clone(), iota(&[2])]).is_err());
}

fn perm(rng: &mut Rng, n: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    p
}

fn random_shape(rng: &mut Rng, max_nd: usize) -> Vec<usize> {
    let nd = 1 + (rng.next_u64() % max_nd as u64) as usize;
    (0..nd).map(|_| 1 + (rng.next_u64() % 4) as usize).collect()
}

#[test]
fn property_transpose_reshape_split_broadcast() {
    let mut rng = Rng::new(42);
    for _ in 0..60 {
        let shape = random_shape(&mut rng, 4);
        let x = rng.array(&shape, -5.0, 5.0);
        let hx = host(&x);
        // transpose ∘ inverse transpose = id
        let p = perm(&mut rng, shape.len());
        let axes: Vec<i32> = p.iter().map(|&q| q as i32).collect();
        let mut inv = vec![0i32; p.len()];
        for (i, &q) in p.iter().enumerate() {
            inv[q] = i as i32;
        }
        let y = ops::transpose_axes(&ops::transpose_axes(&x, &axes).unwrap(), &inv).unwrap();
        assert_eq!(host(&y), hx);
        // reshape round trip through a permuted view (forces copies)
        let t = ops::transpose_axes(&x, &axes).unwrap();
        let back = ops::transpose_axes(
            &ops::reshape(&ops::reshape(&t, &[-1]).unwrap(), &t.shape().iter().map(|&d| d as i64).collect::<Vec<_>>())
                .unwrap(),
            &inv,
        )
        .unwrap();
        assert_eq!(host(&back), hx);
        // concatenate ∘ split = id along a random axis, at random indices
        let ax = (rng.next_u64() % shape.len() as u64) as usize;
        let k = 1 + rng.next_u64() % 3;
        let idx: Vec<i64> = (0..k).map(|_| (rng.next_u64() % (shape[ax] as u64 + 1)) as i64).collect();
        let mut sorted = idx.clone();
        sorted.sort();
        let parts = ops::split(&x, SplitSpec::Indices(sorted), ax as i32).unwrap();
        assert_eq!(host(&ops::concatenate(&parts, Some(ax as i32)).unwrap()), hx);
        let parts = ops::split(&t, SplitSpec::Sections(1), -1).unwrap();
        assert_eq!(host(&ops::concatenate(&parts, Some(-1)).unwrap()), host(&t));
        // stack ∘ unstack = id
        assert_eq!(host(&ops::stack(&ops::unstack(&t, ax as i32).unwrap(), ax as i32).unwrap()), host(&t));
        // broadcast_to: size-1 dims and new leading dims broadcast, others must match
        let mut target: Vec<usize> =
            shape.iter().map(|&d| if d == 1 { 1 + (rng.next_u64() % 3) as usize } else { d }).collect();
        target.insert(0, 2);
        let b = ops::broadcast_to(&x, &target).unwrap();
        assert_eq!(b.shape(), &target[..]);
        assert_eq!(host(&ops::sum_to_shape(&b, &shape).unwrap()).len(), hx.len());
        if let Some(d) = shape.iter().position(|&d| d > 1) {
            let mut bad = shape.clone();
            bad[d] += 1;
            assert!(ops::broadcast_to(&x, &bad).is_err());
        }
        // flip twice = id; roll by n = id
        assert_eq!(host(&ops::flip(&ops::flip(&t, None).unwrap(), None).unwrap()), host(&t));
        let n = t.shape()[ax] as i64;
        assert_eq!(host(&ops::roll(&t, &[n], Some(&[ax as i32])).unwrap()), host(&t));
    }
}

#[test]
fn slice_matches_python_semantics() {
    let a = iota(&[7]);
    let py = |s: i64, e: i64, st: i64| -> Vec<f64> {
        // reference: Python's slice.indices
        let n = 7i64;
        let (lo, hi) = if st > 0 { (0, n) } else { (-1, n - 1) };
        let fix = |v: i64| (if v < 0 { v + n } else { v }).clamp(lo, hi);
        let (mut i, e) = (fix(s), fix(e));
        let mut out = vec![];
        while (st > 0 && i < e) || (st < 0 && i > e) {
            out.push(i as f64);
            i += st;
        }
        out
    };
    for s in -9..9 {
        for e in -9..9 {
            for st in [-3, -2, -1, 1, 2, 3] {
                let got = host(&ops::slice(&a, &[s], &[e], &[st]).unwrap());
                assert_eq!(got, py(s, e, st), "{s}:{e}:{st}");
            }
        }
    }
}

#[test]
fn slice_update_writes_regions() {
    let a = iota(&[3, 4]);
    let u = Array::from_slice(&[-1.0f64, -2.0], &[2, 1]).unwrap();
    let r = ops::slice_update(&a, &u, &[2, 3], &[-4, 4], &[-2, 1]).unwrap();
    let v = host(&r);
    assert_eq!(v[11], -1.0);
    assert_eq!(v[3], -2.0);
    assert_eq!(v.iter().filter(|&&x| x < 0.0).count(), 2);
    assert_eq!(host(&a)[11], 11.0, "the input is not modified");
}

fn f64s(rng: &mut Rng, shape: &[usize]) -> Array {
    rng.array(shape, -1.0, 1.0)
}

#[test]
fn grad_rules() {
    let mut rng = Rng::new(9);
    let x = f64s(&mut rng, &[3, 4]);
    let y = f64s(&mut rng, &[3, 2]);
    let x3 = f64s(&mut rng, &[2, 3, 4]);
    check_grad("slice", |xs| ops::slice(&xs[0], &[2, 0], &[-4, 4], &[-1, 2]), &[x.clone()]);
    check_grad("flip", |xs| ops::flip(&xs[0], None), &[x.clone()]);
    check_grad("concatenate", |xs| ops::concatenate(&[xs[0].clone(), xs[1].clone()], Some(1)), &[x.clone(), y.clone()]);
    check_grad(
        "concatenate_none",
        |xs| ops::concatenate(&[xs[0].clone(), xs[1].clone()], None),
        &[x.clone(), y.clone()],
    );
    check_grad("stack", |xs| ops::stack(&[xs[0].clone(), xs[0].clone()], 1), &[x.clone()]);
    check_grad(
        "split",
        |xs| {
            let p = ops::split(&xs[0], SplitSpec::Indices(vec![1, 3]), 1)?;
            ops::concatenate(&[ops::multiply(&p[2], 3.0)?, p[0].clone()], Some(1))
        },
        &[x.clone()],
    );
    check_grad("unstack", |xs| ops::multiply(&ops::unstack(&xs[0], 1)?[2], &ops::unstack(&xs[0], 1)?[0]), &[x.clone()]);
    check_grad(
        "slice_update",
        |xs| ops::slice_update(&xs[0], &xs[1], &[0, 1], &[3, 4], &[1, 2]),
        &[x.clone(), y.clone()],
    );
    for mode in [PadMode::Constant, PadMode::Edge, PadMode::Reflect, PadMode::Symmetric] {
        check_grad("pad", |xs| ops::pad(&xs[0], &[(2, 1), (3, 5)], mode, 1.5), &[x.clone()]);
    }
    check_grad("tile", |xs| ops::tile(&xs[0], &[2, 1, 2]), &[x.clone()]);
    check_grad("repeat", |xs| ops::repeat(&xs[0], 2, Some(0)), &[x.clone()]);
    check_grad("repeat_none", |xs| ops::repeat(&xs[0], 3, None), &[x.clone()]);
    check_grad("roll", |xs| ops::roll(&xs[0], &[1, -3], Some(&[0, 1])), &[x.clone()]);
    check_grad("diagonal", |xs| ops::diagonal(&xs[0], 1, 2, 0), &[x3.clone()]);
    check_grad("diagonal_neg", |xs| ops::diagonal(&xs[0], -1, 0, 1), &[x.clone()]);
    check_grad("diag_1d", |xs| ops::diag(&xs[0], -1), &[f64s(&mut rng, &[3])]);
    check_grad("trace", |xs| ops::trace(&xs[0], 0, 1, 2, None), &[x3.clone()]);
    check_grad("squeeze", |xs| ops::squeeze(&ops::expand_dims_axes(&xs[0], &[0, -1])?), &[x.clone()]);
    check_grad("swapaxes", |xs| ops::swapaxes(&xs[0], 0, 2), &[x3.clone()]);
    check_grad("flatten", |xs| ops::flatten(&ops::transpose(&xs[0])?, 0, 1), &[x3.clone()]);
    check_grad("unflatten", |xs| ops::unflatten(&xs[0], 1, &[2, -1]), &[x.clone()]);
    check_grad("contiguous", |xs| Ok(ops::contiguous(&ops::transpose(&xs[0])?, false)), &[x.clone()]);
    check_grad(
        "broadcast_arrays",
        |xs| {
            let b = ops::broadcast_arrays(&[xs[0].clone(), xs[1].clone()])?;
            ops::multiply(&b[0], &b[1])
        },
        &[f64s(&mut rng, &[3, 1]), f64s(&mut rng, &[4])],
    );
    // as_strided: forward mode only (MLX defines no vjp).
    let strided = |xs: &[Array]| ops::as_strided(&xs[0], &[4, 4], &[2, 1], 1);
    let (_, t) =
        kiln_core::jvp(|xs: &[Array]| Ok(vec![strided(xs)?]), &[x.clone()], &[ops::ones(&[3, 4], Dtype::F64).unwrap()])
            .unwrap();
    assert!(host(&t[0]).iter().all(|&v| v == 1.0));
    let e =
        kiln_core::vjp(|xs: &[Array]| Ok(vec![strided(xs)?]), &[x.clone()], &[ops::ones(&[4, 4], Dtype::F64).unwrap()])
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
}

#[test]
fn grad_of_grad_through_slices() {
    // d/dx sum(flip(x)^3) = 3 x^2 ; second derivative of its sum = 6 x.
    let x = Array::from_slice(&[1.0f64, -2.0, 0.5], &[3]).unwrap();
    let f = |xs: &[Array]| {
        let y = ops::flip(&xs[0], None)?;
        Ok(vec![ops::sum(&ops::multiply(&ops::multiply(&y, &y)?, &y)?, kiln_core::Axes::All, false)?])
    };
    let g = kiln_core::grad(f, &[0]);
    let gs = move |xs: &[Array]| Ok(vec![ops::sum(&g(xs)?[0], kiln_core::Axes::All, false)?]);
    let h = kiln_core::grad(gs, &[0])(&[x]).unwrap();
    assert_eq!(host(&h[0]), vec![6.0, -12.0, 3.0]);
}

#[test]
fn vmap_rules() {
    let mut rng = Rng::new(21);
    let x = f64s(&mut rng, &[3, 4, 5]);
    let y = f64s(&mut rng, &[4, 2]);
    check_vmap("slice", |xs| ops::slice(&xs[0], &[3, 0], &[0, 5], &[-1, 2]), &[x.clone()], &[Some(1)]);
    check_vmap("flip", |xs| ops::flip(&xs[0], Some(&[0])), &[x.clone()], &[Some(2)]);
    check_vmap(
        "concatenate",
        |xs| ops::concatenate(&[xs[0].clone(), xs[1].clone()], Some(-1)),
        &[x.clone(), y.clone()],
        &[Some(0), None],
    );
    check_vmap(
        "concatenate_both",
        |xs| ops::concatenate(&[xs[0].clone(), xs[1].clone()], Some(0)),
        &[x.clone(), f64s(&mut rng, &[5, 2, 4])],
        &[Some(2), Some(0)],
    );
    check_vmap(
        "slice_update",
        |xs| ops::slice_update(&xs[0], &xs[1], &[0, 1], &[4, 5], &[1, 2]),
        &[x.clone(), y.clone()],
        &[Some(0), None],
    );
    check_vmap(
        "slice_update_upd",
        |xs| ops::slice_update(&xs[0], &xs[1], &[3, 0], &[-5, 2], &[-2, 1]),
        &[y.clone(), f64s(&mut rng, &[2, 2, 3])],
        &[None, Some(2)],
    );
    check_vmap("pad", |xs| ops::pad(&xs[0], &[(1, 2)], PadMode::Reflect, 0), &[x.clone()], &[Some(1)]);
    check_vmap(
        "pad_const",
        |xs| ops::pad(&xs[0], &[(1, 0), (0, 2)], PadMode::Constant, -1.0),
        &[x.clone()],
        &[Some(0)],
    );
    check_vmap("diagonal", |xs| ops::diagonal(&xs[0], -1, 1, 0), &[x.clone()], &[Some(1)]);
    check_vmap("trace", |xs| ops::trace(&xs[0], 1, 0, 1, None), &[x.clone()], &[Some(2)]);
    check_vmap("as_strided", |xs| ops::as_strided(&xs[0], &[3, 2], &[2, 3], 1), &[x.clone()], &[Some(1)]);
    check_vmap("contiguous", |xs| Ok(ops::contiguous(&ops::transpose(&xs[0])?, false)), &[x.clone()], &[Some(2)]);
    check_vmap("tile", |xs| ops::tile(&xs[0], &[2, 3]), &[x.clone()], &[Some(0)]);
    check_vmap("repeat", |xs| ops::repeat(&xs[0], 2, None), &[x.clone()], &[Some(1)]);
    check_vmap("roll", |xs| ops::roll(&xs[0], &[2], None), &[x.clone()], &[Some(2)]);
    check_vmap("split", |xs| Ok(ops::split(&xs[0], SplitSpec::Sections(2), 1)?[1].clone()), &[x.clone()], &[Some(2)]);
    check_vmap("unstack", |xs| Ok(ops::unstack(&xs[0], 1)?[1].clone()), &[x.clone()], &[Some(0)]);
    check_vmap(
        "stack",
        |xs| ops::stack(&[xs[0].clone(), xs[1].clone()], 2),
        &[x.clone(), f64s(&mut rng, &[4, 3, 5])],
        &[Some(0), Some(1)],
    );
    check_vmap("squeeze", |xs| ops::squeeze(&xs[0]), &[f64s(&mut rng, &[3, 1, 2, 1])], &[Some(0)]);
    check_vmap("expand_dims", |xs| ops::expand_dims_axes(&xs[0], &[0, 2]), &[x.clone()], &[Some(1)]);
    check_vmap("diag", |xs| ops::diag(&xs[0], 1), &[y.clone()], &[Some(1)]);
}

#[test]
fn large_copies_and_pads_are_correct() {
    // Exercises the multi-threaded copy paths (> 64K elements).
    let n = 512;
    let a = iota(&[n, n]);
    let t = ops::contiguous(&ops::transpose(&a).unwrap(), false);
    let v = host(&t);
    assert_eq!(v[1], n as f64);
    assert_eq!(v[n * n - 2], (n * n - 1 - n) as f64);
    // Transposing copy with a cast (tiled path), batched and with ragged tiles.
    let b = iota(&[3, 70, 45]);
    let bt = ops::astype(&ops::swapaxes(&b, 1, 2).unwrap(), Dtype::F32).unwrap();
    let bv = bt.to_vec::<f32>().unwrap();
    let hb = host(&b);
    for (idx, &x) in bv.iter().enumerate() {
        let (k, j, i) = (idx / (45 * 70), (idx / 70) % 45, idx % 70);
        assert_eq!(x as f64, hb[k * 70 * 45 + i * 45 + j], "at {idx}");
    }
    let p = ops::pad(&a, &[(1, 1)], PadMode::Constant, 0).unwrap();
    let pv = host(&p);
    assert_eq!(pv[(n + 2) + 1], 0.0);
    assert_eq!(pv[(n + 2) * 2 + 2], n as f64 + 1.0);
    let c = ops::concatenate(&[a.clone(), ops::flip(&a, None).unwrap()], Some(1)).unwrap();
    let cv = host(&c);
    assert_eq!(cv[n], (n * n - 1) as f64);
}

/// Timing probe (run with `--ignored --nocapture`): copy/pad/concat throughput.
#[test]
#[ignore]
fn bench_copies() {
    let n = 4096;
    let a = ops::astype(&iota(&[n, n]), Dtype::F32).unwrap();
    a.eval().unwrap();
    let gb = (n * n * 4 * 2) as f64 / 1e9; // read + write
    let time = |name: &str, f: &dyn Fn() -> Array| {
        let r = f();
        r.eval().unwrap();
        let t = std::time::Instant::now();
        let reps = 5;
        for _ in 0..reps {
            let r = f();
            r.eval().unwrap();
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        println!("{name}: {:.2} ms, {:.1} GB/s", s * 1e3, gb / s);
    };
    time("baseline: contiguous astype f32->i32", &|| ops::astype(&a, Dtype::I32).unwrap());
    time("contiguous copy (flip rows)", &|| ops::contiguous(&ops::flip(&a, Some(&[0])).unwrap(), false));
    time("transpose copy", &|| ops::contiguous(&ops::transpose(&a).unwrap(), false));
    time("flip last axis copy", &|| ops::contiguous(&ops::flip(&a, Some(&[1])).unwrap(), false));
    time("pad constant 1", &|| ops::pad(&a, &[(1, 1)], PadMode::Constant, 0).unwrap());
    time("concat axis 1", &|| {
        let h = ops::split(&a, SplitSpec::Sections(2), 1).unwrap();
        ops::concatenate(&[h[1].clone(), h[0].clone()], Some(1)).unwrap()
    });
}
