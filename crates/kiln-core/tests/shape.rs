//! Shape and layout ops: golden values, errors, views, properties and transform rules.

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
                a.iter().map(|p| ints(p)).map(|p| (p[0], *p.get(1).unwrap_or(&p[0]))).collect()
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
        "trace" => one(ops::trace(
            x?,
            c.kw_i64("offset").unwrap_or(0),
            ax("axis1", 0),
            ax("axis2", 1),
            c.kw_dtype("dtype"),
        )),
        "as_strided" => {
            let a = x?;
            let shape: Vec<usize> = c
                .kw_ints("shape")
                .map(|v| v.iter().map(|&d| d as usize).collect())
                .unwrap_or_else(|| a.shape().to_vec());
            let strides = c.kw_ints("strides").unwrap_or_else(|| {
                kiln_core::shape::row_major_strides(&shape).iter().map(|&s| s as i64).collect()
            });
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
