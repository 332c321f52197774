//! Array creation and dtype conversion: `full`, `zeros`, `ones`, `arange`, `astype`, ….

use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::{Dtype, Scalar};
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive, Rules};
use crate::shape::checked_numel;

/// Fills an output with a constant.
#[derive(Debug, PartialEq)]
pub struct Full {
    value: Scalar,
}

impl Primitive for Full {
    fn name(&self) -> &'static str {
        "Full"
    }
    fn eval(&self, backend: &dyn Backend, _inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.fill(self.value, &outputs[0])?])
    }
    fn rules(&self) -> Rules {
        Rules::ALL // no inputs: every rule is trivially empty
    }
    fn vjp(&self, _: &[Array], _: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![])
    }
    fn jvp(&self, _: &[Array], _: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Err(Error::invalid("Full", "jvp of a constant has no inputs to differentiate."))
    }
    fn vmap(&self, _: &[Array], _: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Err(Error::invalid("Full", "vmap of a constant has no batched inputs."))
    }
    crate::prim_common!();
}

/// An array of `shape` filled with `value` as `dtype`.
pub fn full(shape: &[usize], value: impl Into<Scalar>, dtype: Dtype) -> Result<Array> {
    checked_numel("full", shape)?;
    Ok(Array::from_op(shape.to_vec(), dtype, Full { value: value.into() }, vec![]))
}

/// An array of `shape` filled with `value`, in the dtype MLX gives that scalar.
pub fn full_default(shape: &[usize], value: impl Into<Scalar>) -> Result<Array> {
    let v = value.into();
    full(shape, v, v.default_dtype())
}

/// Zeros of `shape` and `dtype`.
pub fn zeros(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 0, dtype)
}

/// Ones of `shape` and `dtype`.
pub fn ones(shape: &[usize], dtype: Dtype) -> Result<Array> {
    full(shape, 1, dtype)
}

/// Zeros shaped like `a`.
pub fn zeros_like(a: &Array) -> Result<Array> {
    zeros(a.shape(), a.dtype())
}

/// Ones shaped like `a`.
pub fn ones_like(a: &Array) -> Result<Array> {
    ones(a.shape(), a.dtype())
}

/// `value` broadcast to `a`'s shape and dtype.
pub fn full_like(a: &Array, value: impl Into<Scalar>) -> Result<Array> {
    full(a.shape(), value, a.dtype())
}

/// Evenly spaced values `start, start+step, …` below `stop`.
#[derive(Debug, PartialEq)]
pub struct Arange {
    start: f64,
    step: f64,
}

impl Primitive for Arange {
    fn name(&self) -> &'static str {
        "Arange"
    }
    fn eval(&self, backend: &dyn Backend, _inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.arange(self.start, self.step, &outputs[0])?])
    }
    fn vjp(&self, _: &[Array], _: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![])
    }
    crate::prim_common!();
}

/// `[start, stop)` in steps of `step`, as `dtype`.
pub fn arange(start: f64, stop: f64, step: f64, dtype: Dtype) -> Result<Array> {
    if step == 0.0 || !step.is_finite() || !start.is_finite() || !stop.is_finite() {
        return Err(Error::invalid(
            "arange",
            format!("Cannot compute length with start={start}, stop={stop}, step={step}."),
        ));
    }
    if dtype == Dtype::Bool {
        return Err(Error::invalid("arange", "Cannot create an arange of dtype bool."));
    }
    let n = ((stop - start) / step).ceil().max(0.0);
    if n > i32::MAX as f64 {
        return Err(Error::invalid(
            "arange",
            format!("Maximum size exceeded for start={start}, stop={stop}, step={step}."),
        ));
    }
    Ok(Array::from_op(vec![n as usize], dtype, Arange { start, step }, vec![]))
}

/// `[0, stop)` in the dtype of an integer `stop` (int32), as `mx.arange(stop)`.
pub fn arange_n(stop: i64) -> Result<Array> {
    arange(0.0, stop as f64, 1.0, Dtype::I32)
}

/// Converts the dtype of its input (C-style casts).
#[derive(Debug, PartialEq)]
pub struct AsType {
    dtype: Dtype,
}

impl Primitive for AsType {
    fn name(&self) -> &'static str {
        "AsType"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.copy(&inputs[0], &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![astype(&cotangents[0], primals[0].dtype())?])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![astype(&tangents[0], self.dtype)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![astype(&inputs[0], self.dtype)?], vec![axes[0]]))
    }
    crate::prim_common!();
}

/// `a` converted to `dtype` (returns `a` itself when the dtype already matches).
pub fn astype(a: &Array, dtype: Dtype) -> Result<Array> {
    if a.dtype() == dtype {
        return Ok(a.clone());
    }
    Ok(Array::from_op(a.shape().to_vec(), dtype, AsType { dtype }, vec![a.clone()]))
}

impl Array {
    /// This array converted to `dtype`.
    pub fn astype(&self, dtype: Dtype) -> Result<Array> {
        astype(self, dtype)
    }
}
