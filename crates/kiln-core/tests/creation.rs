//! Creation ops: golden values, errors and transform rules of TriMask/View.
// `common` (shared) trips these lints on the current toolchain; test code clones small arrays freely.
#![allow(clippy::cloned_ref_to_slice_refs, clippy::needless_range_loop)]

mod common;

use common::{check_grad, check_vmap, Case, Rng};
use kiln_core::ops;
use kiln_core::{Array, Dtype, ErrorKind, Result, Scalar};
use serde_json::Value;

fn scalar_of(v: &Value) -> Scalar {
    match v {
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) if n.is_i64() => Scalar::Int(n.as_i64().unwrap()),
        v => Scalar::Float(common::json_f64(v)),
    }
}

fn shape_of(c: &Case) -> Vec<usize> {
    c.kw_ints("shape").unwrap_or_default().iter().map(|&d| d as usize).collect()
}

fn one(r: Result<Array>) -> Option<Result<Vec<Array>>> {
    Some(r.map(|a| vec![a]))
}

fn run_creation(c: &Case) -> Option<Result<Vec<Array>>> {
    let x = c.inputs.first();
    let is_float = |k: &str| c.kw(k).is_some_and(|v| v.is_f64());
    match c.op.as_str() {
        "arange" => {
            let start = c.kw_f64("start").unwrap_or(0.0);
            let stop = c.kw_f64("stop").unwrap();
            let step = c.kw_f64("step").unwrap_or(1.0);
            let float = is_float("start") || is_float("stop") || is_float("step");
            let dtype = c.kw_dtype("dtype").unwrap_or(if float { Dtype::F32 } else { Dtype::I32 });
            one(ops::arange(start, stop, step, dtype))
        }
        "linspace" => one(ops::linspace_endpoint(
            c.kw_f64("start").unwrap(),
            c.kw_f64("stop").unwrap(),
            c.kw_i64("num").unwrap_or(50),
            c.kw_bool("endpoint", true),
            c.kw_dtype("dtype").unwrap_or(Dtype::F32),
        )),
        "eye" => one(ops::eye(
            c.kw_i64("n").unwrap(),
            c.kw_i64("m"),
            c.kw_i64("k").unwrap_or(0),
            c.kw_dtype("dtype").unwrap_or(Dtype::F32),
        )),
        "identity" => one(ops::identity(c.kw_i64("n").unwrap(), c.kw_dtype("dtype").unwrap_or(Dtype::F32))),
        "tri" => one(ops::tri(
            c.kw_i64("n").unwrap(),
            c.kw_i64("m"),
            c.kw_i64("k").unwrap_or(0),
            c.kw_dtype("dtype").unwrap_or(Dtype::F32),
        )),
        "tril" => one(ops::tril(x?, c.kw_i64("k").unwrap_or(0))),
        "triu" => one(ops::triu(x?, c.kw_i64("k").unwrap_or(0))),
        "meshgrid" => Some(ops::meshgrid(
            &c.inputs,
            c.kw_bool("sparse", false),
            c.kw("indexing").and_then(|v| v.as_str()).unwrap_or("xy"),
        )),
        "full" => {
            let shape = shape_of(c);
            match c.kw("vals") {
                Some(v) => {
                    let s = scalar_of(v);
                    match c.kw_dtype("dtype") {
                        Some(d) => {
                            // MLX's weak-scalar overflow check applies to the fill value.
                            if let (Scalar::Int(i), true) = (s, d.is_integer()) {
                                let probe = ops::add(ops::zeros(&[1], d).unwrap(), i);
                                if let Err(e) = probe {
                                    return Some(Err(e));
                                }
                            }
                            one(ops::full(&shape, s, d))
                        }
                        None => one(ops::full_default(&shape, s)),
                    }
                }
                None => {
                    let v = x?;
                    one(ops::full_array(&shape, v, c.kw_dtype("dtype").unwrap_or(v.dtype())))
                }
            }
        }
        "zeros" => one(ops::zeros(&shape_of(c), c.kw_dtype("dtype").unwrap_or(Dtype::F32))),
        "ones" => one(ops::ones(&shape_of(c), c.kw_dtype("dtype").unwrap_or(Dtype::F32))),
        "zeros_like" => one(ops::zeros(x?.shape(), c.kw_dtype("dtype").unwrap_or(x?.dtype()))),
        "ones_like" => one(ops::ones(x?.shape(), c.kw_dtype("dtype").unwrap_or(x?.dtype()))),
        "full_like" => {
            let a = x?;
            let d = c.kw_dtype("dtype").unwrap_or(a.dtype());
            match c.kw("vals") {
                Some(v) => one(ops::full(a.shape(), scalar_of(v), d)),
                None => one(ops::full_array(a.shape(), &c.inputs[1], d)),
            }
        }
        "astype" => one(ops::astype(x?, c.kw_dtype("dtype").unwrap())),
        "view" => one(ops::view(x?, c.kw_dtype("dtype").unwrap())),
        _ => None,
    }
}

#[test]
fn golden_creation() {
    let n = common::run_golden("creation.json", run_creation);
    assert!(n >= 200, "only {n} creation cases ran");
}

#[test]
fn golden_errors_for_creation_ops() {
    let mut ran = 0;
    for c in common::load("errors.json") {
        if !c.id.starts_with("err/") || c.op == "astype" || c.op == "full" {
            continue;
        }
        let Some(res) = run_creation(&c) else { continue };
        let e = res.err().unwrap_or_else(|| panic!("{}: expected an error", c.id));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{}: {e}", c.id);
        ran += 1;
    }
    assert!(ran >= 5, "only {ran} creation error cases ran");
}

#[test]
fn view_shares_the_buffer_and_bitcasts() {
    let a = Array::from_slice(&[1.0f32, -2.0], &[2]).unwrap();
    let v = ops::view(&a, Dtype::U32).unwrap();
    assert_eq!(v.to_vec::<u32>().unwrap(), vec![1.0f32.to_bits(), (-2.0f32).to_bits()]);
    assert!(std::sync::Arc::ptr_eq(a.data().buffer(), v.data().buffer()));
    // A strided input is copied first, then reinterpreted.
    let m = Array::from_slice(&[1u8, 2, 3, 4, 5, 6, 7, 8], &[2, 4]).unwrap();
    let t = ops::transpose(&m).unwrap();
    let w = ops::view(&t, Dtype::U16).unwrap();
    assert_eq!(w.shape(), &[4, 1]);
    assert_eq!(w.to_vec::<u16>().unwrap(), vec![u16::from_le_bytes([1, 5]), 0x0602, 0x0703, 0x0804]);
    assert_eq!(ops::view(&Array::scalar(1.0f32), Dtype::I16).unwrap_err().kind(), ErrorKind::InvalidArgument);
    // vmap over a bit-cast that changes the last axis.
    let f = |xs: &[Array]| ops::astype(&ops::view(&ops::astype(&xs[0], Dtype::F32)?, Dtype::U16)?, Dtype::F64);
    check_vmap("view", f, &[Rng::new(3).array(&[3, 4], -1.0, 1.0)], &[Some(1)]);
    assert_eq!(
        kiln_core::grad(
            |xs: &[Array]| Ok(vec![ops::sum(&ops::view(&xs[0], Dtype::I64)?, kiln_core::Axes::All, false)?]),
            &[0]
        )(&[Array::from_slice(&[1.0f64], &[1]).unwrap()])
        .unwrap_err()
        .kind(),
        ErrorKind::Unsupported
    );
}

#[test]
fn arange_and_linspace_variants() {
    assert_eq!(ops::arange_int(2, 10, 3).unwrap().to_vec::<i32>().unwrap(), vec![2, 5, 8]);
    assert_eq!(ops::arange_float(0.0, 1.0, 0.25).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.25, 0.5, 0.75]);
    assert_eq!(ops::arange_int(0, 5, 0).unwrap_err().kind(), ErrorKind::InvalidArgument);
    let l = ops::linspace(0.0, 1.0, 5, Dtype::F64).unwrap().to_vec::<f64>().unwrap();
    assert_eq!(l, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
    assert_eq!(ops::linspace(0.0, 1.0, 0, Dtype::F32).unwrap().shape(), &[0]);
    assert!(ops::linspace(0.0, 1.0, -1, Dtype::F32).is_err());
    assert!(ops::eye(-1, None, 0, Dtype::F32).is_err());
    assert_eq!(ops::eye(0, Some(3), 0, Dtype::F32).unwrap().shape(), &[0, 3]);
    assert!(ops::tril(&Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap(), 0).is_err());
    assert!(ops::meshgrid(&[ops::arange_int(0, 2, 1).unwrap()], false, "yx").is_err());
}

#[test]
fn tril_triu_keep_nan_and_inf_outside_the_mask() {
    let a = Array::from_slice(&[f32::NAN, f32::INFINITY, 1.0, 2.0], &[2, 2]).unwrap();
    let l = ops::tril(&a, 0).unwrap().to_vec::<f32>().unwrap();
    assert!(l[0].is_nan() && l[1] == 0.0 && l[2] == 1.0 && l[3] == 2.0);
    let u = ops::triu(&a, 1).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(u[1..], [f32::INFINITY, 0.0, 0.0]);
    assert_eq!(u[0], 0.0);
}

#[test]
fn tri_mask_rules() {
    let mut rng = Rng::new(11);
    let x = rng.array(&[2, 3, 4], -1.0, 1.0);
    check_grad("tril", |xs| ops::tril(&xs[0], 1), &[x.clone()]);
    check_grad("triu", |xs| ops::triu(&xs[0], -1), &[x.clone()]);
    check_vmap("tril", |xs| ops::tril(&xs[0], 0), &[x.clone()], &[Some(2)]);
    check_vmap("triu", |xs| ops::triu(&xs[0], 1), &[x.clone()], &[Some(0)]);
    // A transposed (strided) input goes through the copy path.
    let t = ops::transpose_axes(&x, &[0, 2, 1]).unwrap();
    let got = ops::tril(&t, 0).unwrap().to_vec::<f64>().unwrap();
    let host = ops::contiguous(&t, false).to_vec::<f64>().unwrap();
    for b in 0..2 {
        for i in 0..4 {
            for j in 0..3 {
                let k = b * 12 + i * 3 + j;
                assert_eq!(got[k], if j <= i { host[k] } else { 0.0 });
            }
        }
    }
}

#[test]
fn eye_is_exact_and_differentiable_through_slice_update() {
    let e = ops::eye(3, Some(4), 1, Dtype::I32).unwrap().to_vec::<i32>().unwrap();
    assert_eq!(e, vec![0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    let mut rng = Rng::new(5);
    let x = rng.array(&[3, 3], -1.0, 1.0);
    check_grad("x*eye", |xs| ops::multiply(&xs[0], &ops::eye(3, None, 0, Dtype::F64)?), &[x]);
}
