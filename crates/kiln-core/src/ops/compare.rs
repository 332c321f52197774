//! Selection and closeness tests: `where_` (the `Select` primitive), `clip`,
//! `isclose`, `allclose` and `array_equal`. The comparisons themselves are
//! binary ops (see [`super::binary`]).

use super::binary::{binary_same, equal, less_equal, logical_and, logical_or, maximum, minimum, multiply, subtract};
use super::creation::astype;
use super::reduce::{sum, sum_to_shape};
use super::shape::{expand_dims, moveaxis, reshape_to};
use super::unary::{abs, isfinite, isnan, logical_not};
use super::{promote_operands, Operand};
use crate::array::{Array, Data};
use crate::backend::{Backend, BinaryOp};
use crate::dtype::{promote_types, to_inexact, Dtype, Scalar};
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive};
use crate::shape::broadcast_shapes;

/// `cond ? x : y` elementwise; `cond` is bool, `x` and `y` share the output
/// dtype, and all three broadcast to the output shape.
#[derive(Debug, PartialEq)]
pub struct Select;

fn zero_of(d: Dtype) -> Array {
    Array::scalar_as(Scalar::Int(0), d)
}

impl Primitive for Select {
    fn name(&self) -> &'static str {
        "Select"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.select(&inputs[0], &inputs[1], &inputs[2], &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let (c, g) = (&primals[0], &cotangents[0]);
        let z = zero_of(g.dtype());
        argnums
            .iter()
            .map(|&i| match i {
                // The condition is piecewise constant: no gradient.
                0 => super::creation::zeros_like(c),
                1 => sum_to_shape(&select_same(c, g, &z)?, primals[1].shape()),
                _ => sum_to_shape(&select_same(c, &z, g)?, primals[2].shape()),
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let d = primals[1].dtype();
        let (mut tx, mut ty) = (zero_of(d), zero_of(d));
        for (t, &i) in tangents.iter().zip(argnums) {
            match i {
                1 => tx = t.clone(),
                2 => ty = t.clone(),
                _ => {}
            }
        }
        let shape = select_shape(&primals[0], &primals[1], &primals[2])?;
        let r = select_same(&primals[0], &tx, &ty)?;
        Ok(vec![super::shape::broadcast_to(&r, &shape)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        if axes.iter().all(|a| a.is_none()) {
            return Ok((vec![select_same(&inputs[0], &inputs[1], &inputs[2])?], vec![None]));
        }
        // Batch axes to the front (an unbatched input gets a size-1 axis),
        // the remaining dims padded on the left to a common rank.
        let rank = inputs.iter().zip(axes).map(|(x, a)| x.ndim() - a.is_some() as usize).max().unwrap_or(0);
        let mut v = Vec::with_capacity(3);
        for (x, ax) in inputs.iter().zip(axes) {
            let x = match ax {
                Some(ax) => moveaxis(x, *ax as i32, 0)?,
                None => expand_dims(x, 0)?,
            };
            let mut shape = vec![x.shape()[0]];
            shape.extend(std::iter::repeat_n(1, rank - (x.ndim() - 1)));
            shape.extend_from_slice(&x.shape()[1..]);
            v.push(reshape_to(&x, &shape)?);
        }
        Ok((vec![select_same(&v[0], &v[1], &v[2])?], vec![Some(0)]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let s = crate::shape::broadcast_shapes(inputs[0].shape(), inputs[1].shape())?;
        Ok(vec![crate::shape::broadcast_shapes(&s, inputs[2].shape())?])
    }
    crate::prim_common!();
}

fn select_shape(c: &Array, x: &Array, y: &Array) -> Result<Vec<usize>> {
    let bad = |e: Error| Error::invalid("where", e.message().to_string());
    if c.shape() == x.shape() && x.shape() == y.shape() {
        return Ok(x.shape().to_vec());
    }
    let s = broadcast_shapes(c.shape(), x.shape()).map_err(bad)?;
    broadcast_shapes(&s, y.shape()).map_err(bad)
}

/// Records a select of a bool `cond` and same-dtype `x`, `y`.
pub(crate) fn select_same(cond: &Array, x: &Array, y: &Array) -> Result<Array> {
    let shape = select_shape(cond, x, y)?;
    Ok(Array::from_op(shape, x.dtype(), Select, vec![cond.clone(), x.clone(), y.clone()]))
}

/// Elementwise `cond ? x : y` with broadcasting of all three. `x` and `y`
/// promote to a common dtype (weak scalars adopt the other's dtype); a
/// non-bool `cond` is tested for non-zero (NaN is true).
pub fn where_(cond: impl Into<Operand>, x: impl Into<Operand>, y: impl Into<Operand>) -> Result<Array> {
    let c = astype(&cond.into().into_array(), Dtype::Bool)?;
    let (x, y) = promote_operands("where", x.into(), y.into())?;
    select_same(&c, &x, &y)
}

/// `a` limited to `[a_min, a_max]` (either bound may be `None`, not both):
/// `minimum(maximum(a, a_min), a_max)`, so NaN propagates and inverted bounds
/// give `a_max`. Bounds promote with `a` (float bounds on ints give float32).
pub fn clip(a: &Array, a_min: Option<Operand>, a_max: Option<Operand>) -> Result<Array> {
    if a_min.is_none() && a_max.is_none() {
        return Err(Error::invalid("clip", "At most one of a_min and a_max may be None"));
    }
    let mut r = a.clone();
    if let Some(lo) = a_min {
        r = maximum(&r, lo)?;
    }
    if let Some(hi) = a_max {
        r = minimum(&r, hi)?;
    }
    Ok(r)
}

/// Elementwise `|a - b| <= atol + rtol * |b|` (bool), computed in the
/// promoted float dtype. Equal values (including equal infinities) are
/// close; an infinity is never close to a finite value; NaNs are close to
/// each other only with `equal_nan`.
pub fn isclose(a: &Array, b: &Array, rtol: f64, atol: f64, equal_nan: bool) -> Result<Array> {
    let d = to_inexact(promote_types(a.dtype(), b.dtype()));
    let (a, b) = (astype(a, d)?, astype(b, d)?);
    let lhs = abs(&subtract(&a, &b)?)?;
    let rhs = super::binary::add(atol, &multiply(rtol, &abs(&b)?)?)?;
    let close = logical_and(&less_equal(&lhs, &rhs)?, &isfinite(&b)?)?;
    let mut out = logical_or(&close, &equal(&a, &b)?)?;
    if equal_nan {
        out = logical_or(&out, &logical_and(&isnan(&a)?, &isnan(&b)?)?)?;
    }
    Ok(out)
}

/// Whether every element of `a` is close to `b` (see [`isclose`]); a 0-d bool.
pub fn allclose(a: &Array, b: &Array, rtol: f64, atol: f64, equal_nan: bool) -> Result<Array> {
    all_true(&isclose(a, b, rtol, atol, equal_nan)?)
}

/// Whether `a` and `b` have the same shape and equal values (dtypes may
/// differ); a 0-d bool. Different shapes give `false`, not an error.
pub fn array_equal(a: &Array, b: &Array, equal_nan: bool) -> Result<Array> {
    if a.shape() != b.shape() {
        return Ok(Array::scalar(false));
    }
    let (a, b) = promote_operands("array_equal", a.into(), b.into())?;
    let op = if equal_nan { BinaryOp::EqualNan } else { BinaryOp::Equal };
    all_true(&binary_same(op, &a, &b, Dtype::Bool)?)
}

/// A 0-d bool: no element of the bool array `m` is false.
fn all_true(m: &Array) -> Result<Array> {
    let misses = sum(&logical_not(m)?, super::Axes::All, false)?;
    equal(&misses, 0)
}
