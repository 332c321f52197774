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
///
/// Deviation from MLX (deliberate): MLX returns float32 for a float `value`
/// with an integer, bool or complex `dtype`, and int32 for an int `value` with
/// dtype bool; Kiln always returns `dtype` (the value is cast, floats truncate).
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
    if step == 0.0 {
        return Err(Error::invalid("arange", "step must be nonzero."));
    }
    if !step.is_finite() || !start.is_finite() || !stop.is_finite() {
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
    // As MLX: integer outputs step by `trunc(start + step) - trunc(start)` from
    // `trunc(start)` (the length still comes from the float arguments).
    let (start, step) =
        if dtype.is_integer() { (start.trunc(), (start + step).trunc() - start.trunc()) } else { (start, step) };
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
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
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

/// `mx.arange(start, stop, step)` with integer arguments: int32.
pub fn arange_int(start: i64, stop: i64, step: i64) -> Result<Array> {
    arange(start as f64, stop as f64, step as f64, Dtype::I32)
}

/// `mx.arange(start, stop, step)` with float arguments: float32.
pub fn arange_float(start: f64, stop: f64, step: f64) -> Result<Array> {
    arange(start, stop, step, Dtype::F32)
}

/// `value` (an array) broadcast to `shape` as `dtype`.
///
/// Deviation from MLX: MLX ignores `dtype` for array values and, for a float
/// scalar with an integer/bool/complex dtype, returns float32. Kiln always
/// honours the requested dtype (see golden `known_deviations.json`).
pub fn full_array(shape: &[usize], value: &Array, dtype: Dtype) -> Result<Array> {
    super::shape::broadcast_to(&astype(value, dtype)?, shape)
}

/// `num` evenly spaced values from `start` to `stop` inclusive, as `dtype`.
pub fn linspace(start: f64, stop: f64, num: i64, dtype: Dtype) -> Result<Array> {
    linspace_endpoint(start, stop, num, true, dtype)
}

/// Like [`linspace`]; with `endpoint == false` the values stop one step short of `stop`.
/// Values are computed in f64 and rounded once to `dtype` (integers truncate).
pub fn linspace_endpoint(start: f64, stop: f64, num: i64, endpoint: bool, dtype: Dtype) -> Result<Array> {
    if num < 0 {
        return Err(Error::invalid("linspace", format!("number of samples, {num}, must be non-negative.")));
    }
    if dtype == Dtype::Bool {
        return Err(Error::invalid("linspace", "Cannot create a linspace of dtype bool."));
    }
    let div = if endpoint { num - 1 } else { num };
    let step = if div > 0 { (stop - start) / div as f64 } else { 0.0 };
    Ok(Array::from_op(vec![num as usize], dtype, Arange { start, step }, vec![]))
}

/// An `n × m` matrix with ones on diagonal `k` and zeros elsewhere.
pub fn eye(n: i64, m: Option<i64>, k: i64, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    if n < 0 || m < 0 {
        return Err(Error::invalid("eye", "N and M must be positive integers."));
    }
    let (n, m) = (n as usize, m as usize);
    checked_numel("eye", &[n, m])?;
    let z = zeros(&[n * m], dtype)?;
    let len = {
        let (a, b) = (n as i64, m as i64);
        (if k >= 0 { a.min(b - k) } else { (a + k).min(b) }).max(0) as usize
    };
    let r = if len == 0 {
        z
    } else {
        let start = if k >= 0 { k as isize } else { -k as isize * m as isize };
        super::slicing::slice_update_raw(&z, &ones(&[len], dtype)?, &[start], &[m as isize + 1])?
    };
    super::shape::reshape_to(&r, &[n, m])
}

/// The `n × n` identity matrix.
pub fn identity(n: i64, dtype: Dtype) -> Result<Array> {
    eye(n, None, 0, dtype)
}

/// Ones at and below diagonal `k` of an `n × m` matrix, zeros above.
pub fn tri(n: i64, m: Option<i64>, k: i64, dtype: Dtype) -> Result<Array> {
    let m = m.unwrap_or(n);
    if n < 0 || m < 0 {
        return Err(Error::invalid("tri", "N and M must be non-negative integers."));
    }
    tril(&ones(&[n as usize, m as usize], dtype)?, k)
}

/// Zeros one triangle of the last two axes: above diagonal `k` (`upper == false`,
/// `tril`) or below it (`triu`).
#[derive(Debug, PartialEq)]
pub struct TriMask {
    k: i64,
    upper: bool,
}

impl Primitive for TriMask {
    fn name(&self) -> &'static str {
        "TriMask"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let x = &inputs[0];
        let out = if x.is_donatable() {
            Data::contiguous_shared(x.data().buffer().clone(), outputs[0].shape)
        } else {
            backend.copy(x, &outputs[0])?
        };
        let nd = x.ndim();
        let (n, m) = (x.shape()[nd - 2], x.shape()[nd - 1]);
        let batch: usize = x.shape()[..nd - 2].iter().product();
        if batch == 0 || n == 0 || m == 0 {
            return Ok(vec![out]);
        }
        let zero = Array::scalar_as(Scalar::Int(0), x.dtype());
        let zd = zero.data();
        for i in 0..n as i64 {
            // Columns to clear in row i.
            let (c0, c1) = if self.upper {
                (0, (i + self.k).clamp(0, m as i64))
            } else {
                ((i + self.k + 1).clamp(0, m as i64), m as i64)
            };
            if c1 <= c0 {
                continue;
            }
            let len = (c1 - c0) as usize;
            let src = Array::from_data(
                vec![batch, len],
                x.dtype(),
                Data::view(zd.buffer().clone(), &[batch, len], zd.offset(), vec![0, 0]),
            );
            let off = i as isize * m as isize + c0 as isize;
            backend.copy_into(&src, &out, x.dtype(), off, &[(n * m) as isize, 1])?;
        }
        Ok(vec![out])
    }
    fn vjp(&self, _: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![tri_mask(&cotangents[0], self.k, self.upper)])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![tri_mask(&tangents[0], self.k, self.upper)])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(ax) = axes[0] else {
            return Ok((vec![tri_mask(&inputs[0], self.k, self.upper)], vec![None]));
        };
        let x = super::shape::moveaxis(&inputs[0], ax as i32, 0)?;
        Ok((vec![tri_mask(&x, self.k, self.upper)], vec![Some(0)]))
    }
    crate::prim_common!();
}

fn tri_mask(a: &Array, k: i64, upper: bool) -> Array {
    Array::from_op(a.shape().to_vec(), a.dtype(), TriMask { k, upper }, vec![a.clone()])
}

fn check_matrix(op: &str, a: &Array) -> Result<()> {
    if a.ndim() < 2 {
        return Err(Error::invalid(op, format!("Arguments must be at least 2-D, got {} dimensions.", a.ndim())));
    }
    Ok(())
}

/// `a` with the elements above diagonal `k` of its last two axes set to zero.
pub fn tril(a: &Array, k: i64) -> Result<Array> {
    check_matrix("tril", a)?;
    Ok(tri_mask(a, k, false))
}

/// `a` with the elements below diagonal `k` of its last two axes set to zero.
pub fn triu(a: &Array, k: i64) -> Result<Array> {
    check_matrix("triu", a)?;
    Ok(tri_mask(a, k, true))
}

/// Coordinate grids from 1-d arrays (`indexing` "xy": Cartesian, "ij": matrix).
/// With `sparse`, each output keeps size 1 on the other axes (views either way).
pub fn meshgrid(arrays: &[Array], sparse: bool, indexing: &str) -> Result<Vec<Array>> {
    if indexing != "xy" && indexing != "ij" {
        return Err(Error::invalid("meshgrid", format!("Invalid indexing value {indexing}; use \"xy\" or \"ij\".")));
    }
    let n = arrays.len();
    let flat: Vec<Array> = arrays.iter().map(|a| super::shape::reshape(a, &[-1])).collect::<Result<_>>()?;
    let mut sizes: Vec<usize> = flat.iter().map(|a| a.size()).collect();
    let swap = indexing == "xy" && n >= 2;
    if swap {
        sizes.swap(0, 1);
    }
    flat.iter()
        .enumerate()
        .map(|(i, a)| {
            let pos = if swap && i < 2 { 1 - i } else { i };
            let mut shape = vec![1usize; n];
            shape[pos] = a.size();
            let r = super::shape::reshape_to(a, &shape)?;
            if sparse {
                Ok(r)
            } else {
                super::shape::broadcast_to(&r, &sizes)
            }
        })
        .collect()
}

/// Reinterprets the bytes of its input as another dtype (a view when possible).
#[derive(Debug, PartialEq)]
pub struct View {
    dtype: Dtype,
}

impl Primitive for View {
    fn name(&self) -> &'static str {
        "View"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let x = &inputs[0];
        let (isz, osz) = (x.dtype().size() as isize, self.dtype.size() as isize);
        let mut d = x.data();
        if !d.is_row_contiguous() || (d.offset() * isz) % osz != 0 {
            d = backend.copy(x, &OutSpec { shape: x.shape(), dtype: x.dtype() })?;
        }
        let off = d.offset() * isz / osz;
        let shape = outputs[0].shape;
        Ok(vec![Data::view(d.buffer().clone(), shape, off, crate::shape::row_major_strides(shape))])
    }
    fn rules(&self) -> Rules {
        Rules {
            vjp: crate::primitive::Rule::No("a bit-cast is not differentiable"),
            jvp: crate::primitive::Rule::No("a bit-cast is not differentiable"),
            vmap: crate::primitive::Rule::Yes,
        }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        match axes[0] {
            None => Ok((vec![view(&inputs[0], self.dtype)?], vec![None])),
            Some(ax) => {
                let x = super::shape::moveaxis(&inputs[0], ax as i32, 0)?;
                Ok((vec![view(&x, self.dtype)?], vec![Some(0)]))
            }
        }
    }
    crate::prim_common!();
}

/// The bytes of `a` read as `dtype`. With a different element size the last
/// axis is rescaled (its size in bytes must divide by the new size).
pub fn view(a: &Array, dtype: Dtype) -> Result<Array> {
    if a.dtype() == dtype {
        return Ok(a.clone());
    }
    let (isz, osz) = (a.dtype().size(), dtype.size());
    let mut shape = a.shape().to_vec();
    if isz != osz {
        let Some(last) = shape.last_mut() else {
            return Err(Error::invalid(
                "view",
                "Changing the type of a scalar is only allowed for types with the same size.",
            ));
        };
        if (*last * isz) % osz != 0 {
            return Err(Error::invalid(
                "view",
                "When viewing as a larger dtype, the size in bytes of the last axis must be a multiple of the requested type size.",
            ));
        }
        *last = *last * isz / osz;
    }
    Ok(Array::from_op(shape, dtype, View { dtype }, vec![a.clone()]))
}
