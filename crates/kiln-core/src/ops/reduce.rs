//! Reductions over axes.

use super::Axes;
use crate::array::{Array, Data};
use crate::backend::{Backend, ReduceOp};
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive};

/// A reduction over `axes`; the output keeps them as size-1 dimensions (the
/// public ops squeeze them away unless `keepdims`).
#[derive(Debug, PartialEq)]
pub struct Reduce {
    /// Which reduction.
    pub op: ReduceOp,
    /// Reduced axes (sorted, non-negative).
    pub axes: Vec<usize>,
}

impl Primitive for Reduce {
    fn name(&self) -> &'static str {
        match self.op {
            ReduceOp::Sum => "Sum",
            ReduceOp::Prod => "Prod",
            ReduceOp::Max => "Max",
            ReduceOp::Min => "Min",
            ReduceOp::And => "All",
            ReduceOp::Or => "Any",
        }
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.reduce(self.op, &inputs[0], &self.axes, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        match self.op {
            ReduceOp::Sum => Ok(vec![super::shape::broadcast_to(&cotangents[0], primals[0].shape())?]),
            _ => Err(self.missing("vjp")),
        }
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        match self.op {
            ReduceOp::Sum => Ok(vec![reduce_keep(ReduceOp::Sum, &tangents[0], &self.axes)?]),
            _ => Err(self.missing("jvp")),
        }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(ax) = axes[0] else {
            return Ok((vec![reduce_keep(self.op, &inputs[0], &self.axes)?], vec![None]));
        };
        let mapped: Vec<usize> = self.axes.iter().map(|&a| if a >= ax { a + 1 } else { a }).collect();
        Ok((vec![reduce_keep(self.op, &inputs[0], &mapped)?], vec![Some(ax)]))
    }
    crate::prim_common!();
}

/// Records a reduction that keeps the reduced axes as size 1.
pub(crate) fn reduce_keep(op: ReduceOp, a: &Array, axes: &[usize]) -> Result<Array> {
    let out_dtype = match op {
        ReduceOp::And | ReduceOp::Or => Dtype::Bool,
        ReduceOp::Sum | ReduceOp::Prod => sum_dtype(a.dtype()),
        _ => a.dtype(),
    };
    let input =
        super::creation::astype(a, if matches!(op, ReduceOp::Sum | ReduceOp::Prod) { out_dtype } else { a.dtype() })?;
    let mut shape = a.shape().to_vec();
    for &ax in axes {
        shape[ax] = 1;
    }
    Ok(Array::from_op(shape, out_dtype, Reduce { op, axes: axes.to_vec() }, vec![input]))
}

/// The dtype `sum`/`prod` produce: bool and small signed ints → int32, small unsigned → uint32.
pub fn sum_dtype(d: Dtype) -> Dtype {
    match d {
        Dtype::Bool | Dtype::I8 | Dtype::I16 => Dtype::I32,
        Dtype::U8 | Dtype::U16 => Dtype::U32,
        d => d,
    }
}

fn finish(r: Array, a: &Array, axes: &[usize], keepdims: bool) -> Result<Array> {
    if keepdims {
        return Ok(r);
    }
    let shape: Vec<usize> = a.shape().iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect();
    super::shape::reshape_to(&r, &shape)
}

/// Sum over `axes`.
pub fn sum(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = axes.into().resolve("sum", a.ndim())?;
    finish(reduce_keep(ReduceOp::Sum, a, &axes)?, a, &axes, keepdims)
}

/// Sums `g` down to `shape` (undoing broadcasting), for vjp rules.
pub fn sum_to_shape(g: &Array, shape: &[usize]) -> Result<Array> {
    if g.shape() == shape {
        return Ok(g.clone());
    }
    let extra = g.ndim().checked_sub(shape.len()).ok_or_else(|| {
        Error::invalid("sum_to_shape", format!("Cannot reduce rank {} to rank {}.", g.ndim(), shape.len()))
    })?;
    let mut axes: Vec<usize> = (0..extra).collect();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 && g.shape()[extra + i] != 1 {
            axes.push(extra + i);
        }
    }
    let r = if axes.is_empty() { g.clone() } else { reduce_keep(ReduceOp::Sum, g, &axes)? };
    super::shape::reshape_to(&r, shape)
}
