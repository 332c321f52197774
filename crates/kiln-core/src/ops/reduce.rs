//! Reductions over axes: sum, prod, max, min, all, any (the `Reduce`
//! primitive), argmax/argmin (`ArgReduce`), the fused `Softmax` and
//! `LogSumExp` primitives, and the composites mean, var,
//! std, median and count_nonzero.

use super::binary::{add, divide, equal, multiply, subtract};
use super::creation::astype;
use super::shape::{broadcast_to, moveaxis, reshape_to, transpose_perm};
use super::sort::sort_axis;
use super::Axes;
use crate::array::{Array, Data};
use crate::backend::{ArgReduceOp, Backend, ReduceOp};
use crate::dtype::{to_inexact, Dtype};
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};

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
    fn rules(&self) -> Rules {
        match self.op {
            ReduceOp::And | ReduceOp::Or => Rules {
                vjp: Rule::No("boolean output has no gradient"),
                jvp: Rule::No("boolean output has no gradient"),
                vmap: Rule::Yes,
            },
            _ => Rules::ALL,
        }
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let (x, g) = (&primals[0], &cotangents[0]);
        let gb = broadcast_to(g, x.shape())?;
        Ok(vec![match self.op {
            ReduceOp::Sum => gb,
            ReduceOp::Prod => multiply(&gb, &prod_weights(x, &self.axes)?)?,
            ReduceOp::Max | ReduceOp::Min => multiply(&gb, &arg_weights(x, &outputs[0], &self.axes)?)?,
            _ => return Err(self.missing("vjp")),
        }])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let (x, t) = (&primals[0], &tangents[0]);
        let w = match self.op {
            ReduceOp::Sum => return Ok(vec![reduce_keep(ReduceOp::Sum, t, &self.axes)?]),
            ReduceOp::Prod => prod_weights(x, &self.axes)?,
            ReduceOp::Max | ReduceOp::Min => {
                let y = reduce_keep(self.op, x, &self.axes)?;
                arg_weights(x, &y, &self.axes)?
            }
            _ => return Err(self.missing("jvp")),
        };
        Ok(vec![reduce_keep(ReduceOp::Sum, &multiply(t, &w)?, &self.axes)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(ax) = axes[0] else {
            return Ok((vec![reduce_keep(self.op, &inputs[0], &self.axes)?], vec![None]));
        };
        Ok((vec![reduce_keep(self.op, &inputs[0], &shift_axes(&self.axes, ax))?], vec![Some(ax)]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let mut s = inputs[0].shape().to_vec();
        for &ax in &self.axes {
            *s.get_mut(ax).ok_or_else(|| Error::out_of_range(self.name(), format!("Axis {ax} is out of range.")))? = 1;
        }
        Ok(vec![s])
    }
    crate::prim_common!();
}

/// Axes of an unbatched op renumbered for an input with a batch axis at `ax`.
fn shift_axes(axes: &[usize], ax: usize) -> Vec<usize> {
    axes.iter().map(|&a| if a >= ax { a + 1 } else { a }).collect()
}

/// d prod / dx, exact also where x has zeros: with P' the product of the
/// non-zero entries and z the zero count, the weight is P'/x when z = 0, P'
/// at the single zero when z = 1, and 0 otherwise.
fn prod_weights(x: &Array, axes: &[usize]) -> Result<Array> {
    let z = astype(&equal(x, 0.0)?, x.dtype())?;
    let nz = reduce_keep(ReduceOp::Sum, &z, axes)?;
    let p = reduce_keep(ReduceOp::Prod, &add(x, &z)?, axes)?;
    let none = astype(&equal(&nz, 0.0)?, x.dtype())?;
    let one = astype(&equal(&nz, 1.0)?, x.dtype())?;
    let w = add(&divide(&none, &add(x, &z)?)?, &multiply(&one, &z)?)?;
    multiply(&w, &p)
}

/// Max/min weights: the positions equal to the result share the gradient equally (as MLX does).
fn arg_weights(x: &Array, y: &Array, axes: &[usize]) -> Result<Array> {
    let mask = astype(&equal(x, y)?, x.dtype())?;
    let count = reduce_keep(ReduceOp::Sum, &mask, axes)?;
    divide(&mask, &count)
}

/// Records a reduction that keeps the reduced axes as size 1.
pub(crate) fn reduce_keep(op: ReduceOp, a: &Array, axes: &[usize]) -> Result<Array> {
    let out_dtype = match op {
        ReduceOp::And | ReduceOp::Or => Dtype::Bool,
        ReduceOp::Sum | ReduceOp::Prod => sum_dtype(a.dtype()),
        _ => a.dtype(),
    };
    let mut shape = a.shape().to_vec();
    for &ax in axes {
        shape[ax] = 1;
    }
    Ok(Array::from_op(shape, out_dtype, Reduce { op, axes: axes.to_vec() }, vec![a.clone()]))
}

/// The dtype `sum`/`prod` produce: bool and small signed ints → int32, small unsigned → uint32.
pub fn sum_dtype(d: Dtype) -> Dtype {
    match d {
        Dtype::Bool | Dtype::I8 | Dtype::I16 => Dtype::I32,
        Dtype::U8 | Dtype::U16 => Dtype::U32,
        d => d,
    }
}

/// Resolves reduction axes with MLX's messages (out of range → `OutOfRange`, duplicates → invalid).
pub(crate) fn reduce_axes(op: &str, axes: Axes, ndim: usize) -> Result<Vec<usize>> {
    let list = match axes {
        Axes::All => return Ok((0..ndim).collect()),
        Axes::List(v) => v,
    };
    let mut out = Vec::with_capacity(list.len());
    for &a in &list {
        let n = ndim as i64;
        if (a as i64) < -n || (a as i64) >= n {
            return Err(Error::out_of_range(op, format!("Invalid axis {a} for array with {ndim} dimensions.")));
        }
        let ax = if a < 0 { (a as i64 + n) as usize } else { a as usize };
        if out.contains(&ax) {
            return Err(Error::invalid(op, format!("Duplicate axes detected in reduction (axis {a}).")));
        }
        out.push(ax);
    }
    out.sort_unstable();
    Ok(out)
}

fn squeezed_shape(shape: &[usize], axes: &[usize]) -> Vec<usize> {
    shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).collect()
}

fn finish(r: Array, a: &Array, axes: &[usize], keepdims: bool) -> Result<Array> {
    if keepdims {
        return Ok(r);
    }
    reshape_to(&r, &squeezed_shape(a.shape(), axes))
}

fn reduce_public(name: &str, op: ReduceOp, a: &Array, axes: Axes, keepdims: bool) -> Result<Array> {
    let axes = reduce_axes(name, axes, a.ndim())?;
    if axes.is_empty() {
        return match op {
            ReduceOp::And | ReduceOp::Or => astype(a, Dtype::Bool),
            _ => Ok(a.clone()),
        };
    }
    if matches!(op, ReduceOp::Max | ReduceOp::Min) {
        if let Some(&ax) = axes.iter().find(|&&ax| a.shape()[ax] == 0) {
            if squeezed_shape(a.shape(), &axes).iter().product::<usize>() > 0 {
                return Err(Error::invalid(name, format!("Cannot {name} reduce over axis {ax} with size 0.")));
            }
        }
    }
    finish(reduce_keep(op, a, &axes)?, a, &axes, keepdims)
}

/// Sum over `axes` (bool/int8/int16 → int32, uint8/uint16 → uint32; half types accumulate in f32).
pub fn sum(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_public("sum", ReduceOp::Sum, a, axes.into(), keepdims)
}

/// Product over `axes` (same output dtypes as [`sum`]).
pub fn prod(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_public("prod", ReduceOp::Prod, a, axes.into(), keepdims)
}

/// Maximum over `axes` (NaN propagates; an empty reduced axis is an error).
pub fn max(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_public("max", ReduceOp::Max, a, axes.into(), keepdims)
}

/// Minimum over `axes` (NaN propagates; an empty reduced axis is an error).
pub fn min(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_public("min", ReduceOp::Min, a, axes.into(), keepdims)
}

/// Whether every element over `axes` is non-zero (NaN counts as true).
pub fn all(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_public("all", ReduceOp::And, a, axes.into(), keepdims)
}

/// Whether any element over `axes` is non-zero (NaN counts as true).
pub fn any(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    reduce_public("any", ReduceOp::Or, a, axes.into(), keepdims)
}

/// Number of non-zero elements over `axes`, as int32.
pub fn count_nonzero(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = reduce_axes("count_nonzero", axes.into(), a.ndim())?;
    let b = astype(a, Dtype::Bool)?;
    if axes.is_empty() {
        return astype(&b, Dtype::I32);
    }
    finish(reduce_keep(ReduceOp::Sum, &b, &axes)?, a, &axes, keepdims)
}

fn count_of(a: &Array, axes: &[usize]) -> usize {
    axes.iter().map(|&ax| a.shape()[ax]).product()
}

/// Arithmetic mean over `axes` (integers and bool → float32).
pub fn mean(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = reduce_axes("mean", axes.into(), a.ndim())?;
    let x = astype(a, to_inexact(a.dtype()))?;
    if axes.is_empty() {
        return Ok(x);
    }
    let n = count_of(a, &axes) as f64;
    let s = reduce_keep(ReduceOp::Sum, &x, &axes)?;
    finish(multiply(&s, 1.0 / n)?, a, &axes, keepdims)
}

/// Variance over `axes` with `ddof` delta degrees of freedom (inf when `ddof >= n`).
pub fn var(a: &Array, axes: impl Into<Axes>, keepdims: bool, ddof: i32) -> Result<Array> {
    let axes = reduce_axes("var", axes.into(), a.ndim())?;
    let x = astype(a, to_inexact(a.dtype()))?;
    let n = count_of(a, &axes) as f64;
    let m = if axes.is_empty() { x.clone() } else { multiply(&reduce_keep(ReduceOp::Sum, &x, &axes)?, 1.0 / n)? };
    let d = subtract(&x, &m)?;
    let sq = multiply(&d, &d)?;
    let s = if axes.is_empty() { sq } else { reduce_keep(ReduceOp::Sum, &sq, &axes)? };
    let denom = n - ddof as f64;
    let scale = if denom > 0.0 { 1.0 / denom } else { f64::INFINITY };
    finish(multiply(&s, scale)?, a, &axes, keepdims)
}

/// Standard deviation over `axes` with `ddof` delta degrees of freedom.
pub fn std(a: &Array, axes: impl Into<Axes>, keepdims: bool, ddof: i32) -> Result<Array> {
    super::unary::sqrt(&var(a, axes, keepdims, ddof)?)
}

/// Moves `axes` of `a` to the end and flattens them into one axis. Returns
/// the moved array and the shape of the kept axes.
fn flatten_axes_last(a: &Array, axes: &[usize]) -> Result<(Array, Vec<usize>)> {
    let kept: Vec<usize> = (0..a.ndim()).filter(|i| !axes.contains(i)).collect();
    let mut perm = kept.clone();
    perm.extend_from_slice(axes);
    let t = transpose_perm(a, &perm)?;
    let kept_shape: Vec<usize> = kept.iter().map(|&i| a.shape()[i]).collect();
    let mut shape = kept_shape.clone();
    shape.push(count_of(a, axes));
    Ok((reshape_to(&t, &shape)?, kept_shape))
}

/// The shape a reduction over `axes` produces.
fn reduced_shape(a: &Array, axes: &[usize], keepdims: bool) -> Vec<usize> {
    if keepdims {
        a.shape().iter().enumerate().map(|(i, &d)| if axes.contains(&i) { 1 } else { d }).collect()
    } else {
        squeezed_shape(a.shape(), axes)
    }
}

/// log(sum(exp(a))) over `axes`, computed stably (integers → float32).
pub fn logsumexp(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = reduce_axes("logsumexp", axes.into(), a.ndim())?;
    let x = astype(a, to_inexact(a.dtype()))?;
    let (f, _) = flatten_axes_last(&x, &axes)?;
    reshape_to(&logsumexp_last(&f)?, &reduced_shape(a, &axes, keepdims))
}

/// The fused log-sum-exp over the last axis, keeping it as size 1.
fn logsumexp_last(x: &Array) -> Result<Array> {
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = 1;
    Ok(Array::from_op(shape, x.dtype(), LogSumExp, vec![x.clone()]))
}

/// Softmax over `axes` (`precise` is accepted for MLX compatibility: half
/// types always accumulate in f32 here). Integers → float32.
pub fn softmax(a: &Array, axes: impl Into<Axes>, precise: bool) -> Result<Array> {
    let axes = reduce_axes("softmax", axes.into(), a.ndim())?;
    let x = astype(a, to_inexact(a.dtype()))?;
    if a.ndim() == 0 {
        let r = reshape_to(&x, &[1])?;
        return reshape_to(&softmax_last(&r, precise)?, &[]);
    }
    let last_only = axes.len() == 1 && axes[0] == a.ndim() - 1;
    if last_only {
        return softmax_last(&x, precise);
    }
    let (f, _) = flatten_axes_last(&x, &axes)?;
    let s = softmax_last(&f, precise)?;
    // Undo the flatten and the move.
    let kept: Vec<usize> = (0..a.ndim()).filter(|i| !axes.contains(i)).collect();
    let mut perm = kept.clone();
    perm.extend_from_slice(&axes);
    let moved_shape: Vec<usize> = perm.iter().map(|&p| a.shape()[p]).collect();
    let s = reshape_to(&s, &moved_shape)?;
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    transpose_perm(&s, &inv)
}

fn softmax_last(x: &Array, precise: bool) -> Result<Array> {
    Ok(Array::from_op(x.shape().to_vec(), x.dtype(), Softmax { precise }, vec![x.clone()]))
}

/// Softmax over the last axis, fused (max, exp-and-sum, scale).
#[derive(Debug, PartialEq)]
pub struct Softmax {
    /// Accumulate half types in f32 (always the case on the CPU).
    pub precise: bool,
}

impl Primitive for Softmax {
    fn name(&self) -> &'static str {
        "Softmax"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.softmax(&inputs[0], self.precise, &outputs[0])?])
    }
    fn vjp(&self, _: &[Array], cotangents: &[Array], _: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let (g, y) = (&cotangents[0], &outputs[0]);
        let last = y.ndim() - 1;
        let s = reduce_keep(ReduceOp::Sum, &multiply(g, y)?, &[last])?;
        Ok(vec![multiply(y, &subtract(g, &s)?)?])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let y = softmax_last(&primals[0], self.precise)?;
        let t = &tangents[0];
        let last = y.ndim() - 1;
        let s = reduce_keep(ReduceOp::Sum, &multiply(t, &y)?, &[last])?;
        Ok(vec![multiply(&y, &subtract(t, &s)?)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let x = &inputs[0];
        match axes[0] {
            Some(ax) if ax == x.ndim() - 1 => {
                Ok((vec![softmax_last(&moveaxis(x, ax as i32, 0)?, self.precise)?], vec![Some(0)]))
            }
            ax => Ok((vec![softmax_last(x, self.precise)?], vec![ax])),
        }
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        Ok(vec![inputs[0].shape().to_vec()])
    }
    crate::prim_common!();
}

/// log(sum(exp(x))) over the last axis, fused; the output keeps it as size 1.
#[derive(Debug, PartialEq)]
pub struct LogSumExp;

impl Primitive for LogSumExp {
    fn name(&self) -> &'static str {
        "LogSumExp"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.logsumexp(&inputs[0], &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let p = super::unary::exp(&subtract(&primals[0], &outputs[0])?)?;
        Ok(vec![multiply(&cotangents[0], &p)?])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let x = &primals[0];
        let y = logsumexp_last(x)?;
        let p = super::unary::exp(&subtract(x, &y)?)?;
        Ok(vec![reduce_keep(ReduceOp::Sum, &multiply(&tangents[0], &p)?, &[x.ndim() - 1])?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let x = &inputs[0];
        match axes[0] {
            Some(ax) if ax == x.ndim() - 1 => Ok((vec![logsumexp_last(&moveaxis(x, ax as i32, 0)?)?], vec![Some(0)])),
            ax => Ok((vec![logsumexp_last(x)?], vec![ax])),
        }
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let mut s = inputs[0].shape().to_vec();
        if let Some(last) = s.last_mut() {
            *last = 1;
        }
        Ok(vec![s])
    }
    crate::prim_common!();
}

/// Index of the max/min along `axis`; the output keeps it as size 1 (uint32).
#[derive(Debug, PartialEq)]
pub struct ArgReduce {
    /// Which reduction.
    pub op: ArgReduceOp,
    /// The reduced axis.
    pub axis: usize,
}

impl Primitive for ArgReduce {
    fn name(&self) -> &'static str {
        match self.op {
            ArgReduceOp::ArgMax => "ArgMax",
            ArgReduceOp::ArgMin => "ArgMin",
        }
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.arg_reduce(self.op, &inputs[0], self.axis, &outputs[0])?])
    }
    fn rules(&self) -> Rules {
        Rules { vjp: Rule::No("integer output"), jvp: Rule::No("integer output"), vmap: Rule::Yes }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let axis = match axes[0] {
            Some(ax) if ax <= self.axis => self.axis + 1,
            _ => self.axis,
        };
        Ok((vec![arg_reduce_keep(self.op, &inputs[0], axis)], vec![axes[0]]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let mut s = inputs[0].shape().to_vec();
        *s.get_mut(self.axis).ok_or_else(|| Error::out_of_range(self.name(), "Axis is out of range."))? = 1;
        Ok(vec![s])
    }
    crate::prim_common!();
}

fn arg_reduce_keep(op: ArgReduceOp, a: &Array, axis: usize) -> Array {
    let mut shape = a.shape().to_vec();
    shape[axis] = 1;
    Array::from_op(shape, Dtype::U32, ArgReduce { op, axis }, vec![a.clone()])
}

fn arg_reduce_public(name: &str, op: ArgReduceOp, a: &Array, axis: Option<i32>, keepdims: bool) -> Result<Array> {
    if a.size() == 0 {
        return Err(Error::invalid(name, format!("Cannot {name} reduce zero size array.")));
    }
    match axis {
        None => {
            let f = reshape_to(a, &[a.size()])?;
            let r = arg_reduce_keep(op, &f, 0);
            reshape_to(&r, &if keepdims { vec![1; a.ndim()] } else { vec![] })
        }
        Some(ax) => {
            let axes = reduce_axes(name, Axes::List(vec![ax]), a.ndim())?;
            let r = arg_reduce_keep(op, a, axes[0]);
            finish(r, a, &axes, keepdims)
        }
    }
}

/// Index of the maximum (first on ties, first NaN if any) along `axis`, or of the flattened array; uint32.
pub fn argmax(a: &Array, axis: Option<i32>, keepdims: bool) -> Result<Array> {
    arg_reduce_public("argmax", ArgReduceOp::ArgMax, a, axis, keepdims)
}

/// Index of the minimum (first on ties, first NaN if any) along `axis`, or of the flattened array; uint32.
pub fn argmin(a: &Array, axis: Option<i32>, keepdims: bool) -> Result<Array> {
    arg_reduce_public("argmin", ArgReduceOp::ArgMin, a, axis, keepdims)
}

/// Element `k` of the last axis, kept as size 1 (a view).
#[derive(Debug, PartialEq)]
pub struct TakeLast {
    /// The index along the last axis.
    pub k: usize,
}

impl Primitive for TakeLast {
    fn name(&self) -> &'static str {
        "TakeLast"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let d = inputs[0].data();
        let last = *d.strides().last().expect("rank >= 1");
        let off = d.offset() + self.k as isize * last;
        Ok(vec![Data::view(d.buffer().clone(), outputs[0].shape, off, d.strides().to_vec())])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let x = &primals[0];
        let n = *x.shape().last().expect("rank >= 1");
        let mut w = vec![0.0f64; n];
        w[self.k] = 1.0;
        let w = astype(&Array::from_vec(w, &[n])?, x.dtype())?;
        Ok(vec![multiply(&broadcast_to(&cotangents[0], x.shape())?, &w)?])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![take_last(&tangents[0], self.k)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let x = &inputs[0];
        match axes[0] {
            Some(ax) if ax == x.ndim() - 1 => {
                Ok((vec![take_last(&moveaxis(x, ax as i32, 0)?, self.k)?], vec![Some(0)]))
            }
            ax => Ok((vec![take_last(x, self.k)?], vec![ax])),
        }
    }
    crate::prim_common!();
}

fn take_last(x: &Array, k: usize) -> Result<Array> {
    let mut shape = x.shape().to_vec();
    *shape.last_mut().expect("rank >= 1") = 1;
    Ok(Array::from_op(shape, x.dtype(), TakeLast { k }, vec![x.clone()]))
}

/// Median over `axes`: the middle of the sorted values (NaNs sort last), or
/// the mean of the two middle ones for even counts. Integers and bool → float32.
pub fn median(a: &Array, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
    let axes = reduce_axes("median", axes.into(), a.ndim())?;
    let x = astype(a, to_inexact(a.dtype()))?;
    let (f, _) = flatten_axes_last(&x, &axes)?;
    let n = *f.shape().last().expect("rank >= 1");
    let m = if n == 0 {
        multiply(&reduce_keep(ReduceOp::Sum, &f, &[f.ndim() - 1])?, f64::NAN)?
    } else {
        let s = sort_axis(&f, f.ndim() - 1)?;
        let mid = if n % 2 == 1 {
            take_last(&s, n / 2)?
        } else {
            multiply(&add(&take_last(&s, n / 2 - 1)?, &take_last(&s, n / 2)?)?, 0.5)?
        };
        // Any NaN (sorted last) makes the median NaN, as in MLX: add 0/(last == last).
        let last = crate::transforms::stop_gradient(&take_last(&s, n - 1)?);
        add(&mid, &divide(0.0, &astype(&equal(&last, &last)?, x.dtype())?)?)?
    };
    reshape_to(&m, &reduced_shape(a, &axes, keepdims))
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
    reshape_to(&r, shape)
}

impl Array {
    /// See [`sum`].
    pub fn sum(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        sum(self, axes, keepdims)
    }
    /// See [`prod`].
    pub fn prod(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        prod(self, axes, keepdims)
    }
    /// See [`max`].
    pub fn max(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        max(self, axes, keepdims)
    }
    /// See [`min`].
    pub fn min(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        min(self, axes, keepdims)
    }
    /// See [`mean`].
    pub fn mean(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        mean(self, axes, keepdims)
    }
    /// See [`var`].
    pub fn var(&self, axes: impl Into<Axes>, keepdims: bool, ddof: i32) -> Result<Array> {
        var(self, axes, keepdims, ddof)
    }
    /// See [`std`].
    pub fn std(&self, axes: impl Into<Axes>, keepdims: bool, ddof: i32) -> Result<Array> {
        std(self, axes, keepdims, ddof)
    }
    /// See [`all`].
    pub fn all(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        all(self, axes, keepdims)
    }
    /// See [`any`].
    pub fn any(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        any(self, axes, keepdims)
    }
    /// See [`logsumexp`].
    pub fn logsumexp(&self, axes: impl Into<Axes>, keepdims: bool) -> Result<Array> {
        logsumexp(self, axes, keepdims)
    }
    /// See [`argmax`].
    pub fn argmax(&self, axis: Option<i32>, keepdims: bool) -> Result<Array> {
        argmax(self, axis, keepdims)
    }
    /// See [`argmin`].
    pub fn argmin(&self, axis: Option<i32>, keepdims: bool) -> Result<Array> {
        argmin(self, axis, keepdims)
    }
}
