//! Gather and scatter: the `Gather` and `Scatter` primitives (MLX's general
//! forms) and the ops built on them: `take`, `take_along_axis`,
//! `put_along_axis`, dynamic `slice`/`slice_update`, `masked_scatter` and
//! `searchsorted`.
//!
//! Indices may have any integer dtype; negative ones wrap once (as in MLX).
//! Unlike MLX, an index that is still out of range is an error, raised by
//! `eval` (indices are lazy) and naming the op, the index and the axis size.
//! Index inputs are not differentiable (their cotangents are zeros).

use super::creation::{astype, zeros, zeros_like};
use super::shape::{broadcast_to, expand_dims, moveaxis, reshape, reshape_to, transpose_axes};
use super::slicing::{batch_front, batch_size};
use crate::array::{Array, Data};
use crate::backend::{Backend, ScatterOp};
use crate::dtype::Dtype;
use crate::error::{fmt_shape, Error, Result};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};
use crate::shape::{broadcast_many, normalize_axis};

/// General gather: for every position `i` of the (broadcast) index arrays,
/// the block of shape `slice_sizes` starting at `indices[k][i]` along
/// `axes[k]` (and at 0 along the other axes). Inputs: `[a, indices...]`;
/// output shape: index shape followed by `slice_sizes`.
#[derive(Debug, PartialEq)]
pub struct Gather {
    axes: Vec<usize>,
    slice_sizes: Vec<usize>,
}

/// Index cotangents: indices are piecewise constant.
fn index_cotangents(primals: &[Array], i: usize) -> Result<Array> {
    zeros_like(&primals[i])
}

impl Primitive for Gather {
    fn name(&self) -> &'static str {
        "Gather"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.gather(&inputs[0], &inputs[1..], &self.axes, &self.slice_sizes, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        argnums
            .iter()
            .map(|&i| {
                if i == 0 {
                    let z = zeros(primals[0].shape(), g.dtype())?;
                    Ok(scatter_raw(ScatterOp::Sum, &z, &primals[1..], g, &self.axes))
                } else {
                    index_cotangents(primals, i)
                }
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        match argnums.iter().position(|&a| a == 0) {
            Some(p) => Ok(vec![gather_raw(&tangents[p], &primals[1..], &self.axes, &self.slice_sizes)]),
            None => {
                let y = gather_raw(&primals[0], &primals[1..], &self.axes, &self.slice_sizes);
                Ok(vec![zeros(y.shape(), primals[0].dtype())?])
            }
        }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        if axes.iter().all(|a| a.is_none()) {
            return Ok((vec![gather_raw(&inputs[0], &inputs[1..], &self.axes, &self.slice_sizes)], vec![None]));
        }
        let b = batch_size(inputs, axes);
        let ilen = inputs.get(1).map(|x| x.ndim() - axes[1].is_some() as usize).unwrap_or(0);
        let mut idx = batched_indices(&inputs[1..], &axes[1..])?;
        let (mut a, mut ax, mut ss) = (inputs[0].clone(), self.axes.clone(), self.slice_sizes.clone());
        if let Some(a0) = axes[0] {
            a = moveaxis(&a, a0 as i32, 0)?;
            idx.insert(0, batch_arange(b, ilen)?);
            ax = std::iter::once(0).chain(ax.iter().map(|x| x + 1)).collect();
            ss.insert(0, 1);
        }
        let idx = broadcast_all("gather", &idx)?;
        let y = gather_raw(&a, &idx, &ax, &ss);
        let y = if axes[0].is_some() {
            // Drop the size-1 block dim of the batch axis.
            let mut shape = y.shape().to_vec();
            shape.remove(1 + ilen);
            reshape_to(&y, &shape)?
        } else {
            y
        };
        Ok((vec![y], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// Index arrays with their batch axis in front (an unbatched one gets a size-1 axis).
fn batched_indices(idx: &[Array], axes: &[Option<usize>]) -> Result<Vec<Array>> {
    idx.iter()
        .zip(axes)
        .map(|(x, a)| match a {
            Some(a) => moveaxis(x, *a as i32, 0),
            None => expand_dims(x, 0),
        })
        .collect()
}

/// `arange(b)` shaped `[b, 1, …, 1]` (`ilen` ones): the batch coordinate.
fn batch_arange(b: usize, ilen: usize) -> Result<Array> {
    let mut shape = vec![b];
    shape.extend(std::iter::repeat_n(1, ilen));
    reshape_to(&super::creation::arange_int(0, b as i64, 1)?, &shape)
}

/// Broadcasts index arrays to their common shape (views).
fn broadcast_all(op: &str, idx: &[Array]) -> Result<Vec<Array>> {
    let shapes: Vec<&[usize]> = idx.iter().map(|x| x.shape()).collect();
    let shape = broadcast_many(&shapes).map_err(|e| Error::invalid(op, e.message().to_string()))?;
    idx.iter().map(|x| broadcast_to(x, &shape)).collect()
}

/// A gather of validated inputs (indices broadcast to one shape).
pub(crate) fn gather_raw(a: &Array, idx: &[Array], axes: &[usize], slice_sizes: &[usize]) -> Array {
    let mut shape = idx.first().map(|x| x.shape().to_vec()).unwrap_or_default();
    shape.extend_from_slice(slice_sizes);
    let mut inputs = vec![a.clone()];
    inputs.extend_from_slice(idx);
    let p = Gather { axes: axes.to_vec(), slice_sizes: slice_sizes.to_vec() };
    Array::from_op(shape, a.dtype(), p, inputs)
}

/// General scatter: a copy of `a` where, for every index position `i` in
/// order, the block at `indices[k][i]` along `axes[k]` is combined with
/// `updates[i]` (overwrite, sum, product, max or min). Inputs:
/// `[a, indices..., updates]`.
#[derive(Debug, PartialEq)]
pub struct Scatter {
    op: ScatterOp,
    axes: Vec<usize>,
}

impl Primitive for Scatter {
    fn name(&self) -> &'static str {
        match self.op {
            ScatterOp::None => "Scatter",
            ScatterOp::Sum => "ScatterAdd",
            ScatterOp::Prod => "ScatterProd",
            ScatterOp::Max => "ScatterMax",
            ScatterOp::Min => "ScatterMin",
        }
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let n = inputs.len();
        Ok(vec![backend.scatter(self.op, &inputs[0], &inputs[1..n - 1], &inputs[n - 1], &self.axes, &outputs[0])?])
    }
    fn rules(&self) -> Rules {
        if self.op == ScatterOp::Prod {
            const WHY: &str = "scatter_prod has no derivative rule (MLX lacks it too): the product over duplicate indices would need division by possibly zero factors.";
            return Rules { vjp: Rule::No(WHY), jvp: Rule::No(WHY), vmap: Rule::Yes };
        }
        Rules::ALL
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        if self.op == ScatterOp::Prod {
            return Err(self.missing("vjp"));
        }
        let n = primals.len();
        let (a, idx, upd) = (&primals[0], &primals[1..n - 1], &primals[n - 1]);
        let g = &cotangents[0];
        let block = &upd.shape()[upd.ndim() - a.ndim()..];
        let out = &outputs[0];
        argnums
            .iter()
            .map(|&i| {
                if i == 0 {
                    match self.op {
                        ScatterOp::None => {
                            let z = zeros(upd.shape(), g.dtype())?;
                            Ok(scatter_raw(ScatterOp::None, g, idx, &z, &self.axes))
                        }
                        ScatterOp::Sum => Ok(g.clone()),
                        _ => super::compare::where_(&super::binary::equal(out, a)?, g, &zeros_like(g)?),
                    }
                } else if i == n - 1 {
                    let gg = gather_raw(g, idx, &self.axes, block);
                    let gg = reshape_to(&gg, upd.shape())?;
                    match self.op {
                        ScatterOp::None | ScatterOp::Sum => Ok(gg),
                        _ => {
                            let won = super::binary::equal(
                                &reshape_to(&gather_raw(out, idx, &self.axes, block), upd.shape())?,
                                upd,
                            )?;
                            super::compare::where_(&won, &gg, &zeros_like(&gg)?)
                        }
                    }
                } else {
                    index_cotangents(primals, i)
                }
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        if self.op == ScatterOp::Prod {
            return Err(self.missing("jvp"));
        }
        let n = primals.len();
        let (a, idx, upd) = (&primals[0], &primals[1..n - 1], &primals[n - 1]);
        let pick = |k: usize| -> Result<Array> {
            match argnums.iter().position(|&x| x == k) {
                Some(p) => Ok(tangents[p].clone()),
                None => zeros(primals[k].shape(), primals[k].dtype()),
            }
        };
        let (ta, tu) = (pick(0)?, pick(n - 1)?);
        match self.op {
            ScatterOp::None | ScatterOp::Sum => Ok(vec![scatter_raw(self.op, &ta, idx, &tu, &self.axes)]),
            _ => {
                let out = scatter_raw(self.op, a, idx, upd, &self.axes);
                let block = &upd.shape()[upd.ndim() - a.ndim()..];
                let won =
                    super::binary::equal(&reshape_to(&gather_raw(&out, idx, &self.axes, block), upd.shape())?, upd)?;
                let tu = super::compare::where_(&won, &tu, &zeros_like(&tu)?)?;
                let contrib = scatter_raw(ScatterOp::Sum, &zeros_like(&ta)?, idx, &tu, &self.axes);
                Ok(vec![super::compare::where_(&super::binary::equal(&out, a)?, &ta, &contrib)?])
            }
        }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let n = inputs.len();
        if axes.iter().all(|a| a.is_none()) {
            return Ok((
                vec![scatter_raw(self.op, &inputs[0], &inputs[1..n - 1], &inputs[n - 1], &self.axes)],
                vec![None],
            ));
        }
        let b = batch_size(inputs, axes);
        let a = batch_front(&inputs[0], axes[0], b)?;
        let u = batch_front(&inputs[n - 1], axes[n - 1], b)?;
        let ilen = u.ndim() - 1 - (a.ndim() - 1);
        let mut idx = batched_indices(&inputs[1..n - 1], &axes[1..n - 1])?;
        idx.insert(0, batch_arange(b, ilen)?);
        let idx = broadcast_all("scatter", &idx)?;
        let mut ushape = u.shape().to_vec();
        ushape.insert(1 + ilen, 1);
        let u = reshape_to(&u, &ushape)?;
        let ax: Vec<usize> = std::iter::once(0).chain(self.axes.iter().map(|x| x + 1)).collect();
        Ok((vec![scatter_raw(self.op, &a, &idx, &u, &ax)], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// A scatter of validated inputs (indices broadcast to one shape `I`,
/// updates shaped `I ++ block` in `a`'s dtype).
pub(crate) fn scatter_raw(op: ScatterOp, a: &Array, idx: &[Array], updates: &Array, axes: &[usize]) -> Array {
    let mut inputs = vec![a.clone()];
    inputs.extend_from_slice(idx);
    inputs.push(updates.clone());
    Array::from_op(a.shape().to_vec(), a.dtype(), Scatter { op, axes: axes.to_vec() }, inputs)
}

fn check_index_dtype(op: &str, x: &Array) -> Result<()> {
    if !x.dtype().is_integer() {
        return Err(Error::invalid(
            op,
            format!("Got indices with invalid dtype {}. Indices must be integral.", x.dtype()),
        ));
    }
    Ok(())
}

/// Validates index arrays and axes for a gather/scatter of `a`; returns the
/// resolved axes and the indices broadcast to their common shape.
fn prepare(op: &str, a: &Array, indices: &[Array], axes: &[i32]) -> Result<(Vec<usize>, Vec<Array>)> {
    if indices.len() != axes.len() {
        return Err(Error::invalid(
            op,
            format!("{} index arrays for {} axes: give one index array per axis.", indices.len(), axes.len()),
        ));
    }
    let mut ax = Vec::with_capacity(axes.len());
    for &x in axes {
        let v = normalize_axis(op, x, a.ndim())?;
        if ax.contains(&v) {
            return Err(Error::invalid(op, format!("Repeated axis {x} in axes.")));
        }
        ax.push(v);
    }
    for x in indices {
        check_index_dtype(op, x)?;
    }
    Ok((ax, broadcast_all(op, indices)?))
}

/// MLX's general gather: for every position `i` of the broadcast `indices`,
/// the block of `a` of shape `slice_sizes` starting at `indices[k][i]` along
/// `axes[k]` (and at 0 along the other axes). The result has the index shape
/// followed by `slice_sizes`. Out-of-range indices (after wrapping negative
/// ones) are reported by `eval`.
pub fn gather(a: &Array, indices: &[Array], axes: &[i32], slice_sizes: &[usize]) -> Result<Array> {
    let (ax, idx) = prepare("gather", a, indices, axes)?;
    if slice_sizes.len() != a.ndim() {
        return Err(Error::invalid(
            "gather",
            format!("Got {} slice sizes for an array with {} dimensions.", slice_sizes.len(), a.ndim()),
        ));
    }
    if slice_sizes.iter().zip(a.shape()).any(|(s, n)| s > n) {
        return Err(Error::invalid(
            "gather",
            format!("Slice sizes {} must not exceed the array shape {}.", fmt_shape(slice_sizes), fmt_shape(a.shape())),
        ));
    }
    Ok(gather_raw(a, &idx, &ax, slice_sizes))
}

fn scatter_op(op: ScatterOp, name: &str, a: &Array, indices: &[Array], updates: &Array, axes: &[i32]) -> Result<Array> {
    let (ax, idx) = prepare(name, a, indices, axes)?;
    let ishape = idx.first().map(|x| x.shape().to_vec()).unwrap_or_default();
    if updates.ndim() != ishape.len() + a.ndim() {
        return Err(Error::invalid(
            name,
            format!(
                "Updates of shape {} must have the index shape {} followed by one block dimension per array dimension ({}).",
                fmt_shape(updates.shape()),
                fmt_shape(&ishape),
                a.ndim()
            ),
        ));
    }
    let block = &updates.shape()[ishape.len()..];
    if block.iter().zip(a.shape()).any(|(s, n)| s > n) {
        return Err(Error::invalid(
            name,
            format!("Update blocks {} must not exceed the array shape {}.", fmt_shape(block), fmt_shape(a.shape())),
        ));
    }
    let mut ushape = ishape.clone();
    ushape.extend_from_slice(block);
    let u = broadcast_to(updates, &ushape).map_err(|e| Error::invalid(name, e.message().to_string()))?;
    let u = astype(&u, a.dtype())?;
    Ok(scatter_raw(op, a, &idx, &u, &ax))
}

/// MLX's general scatter: a copy of `a` whose block at `indices[k][i]` along
/// `axes[k]` is replaced by `updates[i]` (updates: index shape followed by a
/// block with one dimension per dimension of `a`; cast to `a`'s dtype).
/// With duplicate indices the last update wins.
pub fn scatter(a: &Array, indices: &[Array], updates: &Array, axes: &[i32]) -> Result<Array> {
    scatter_op(ScatterOp::None, "scatter", a, indices, updates, axes)
}
/// [`scatter`] that adds the updates (duplicates accumulate).
pub fn scatter_add(a: &Array, indices: &[Array], updates: &Array, axes: &[i32]) -> Result<Array> {
    scatter_op(ScatterOp::Sum, "scatter_add", a, indices, updates, axes)
}
/// [`scatter`] that multiplies by the updates (duplicates accumulate).
pub fn scatter_prod(a: &Array, indices: &[Array], updates: &Array, axes: &[i32]) -> Result<Array> {
    scatter_op(ScatterOp::Prod, "scatter_prod", a, indices, updates, axes)
}
/// [`scatter`] that keeps the maximum of the element and the updates.
pub fn scatter_max(a: &Array, indices: &[Array], updates: &Array, axes: &[i32]) -> Result<Array> {
    scatter_op(ScatterOp::Max, "scatter_max", a, indices, updates, axes)
}
/// [`scatter`] that keeps the minimum of the element and the updates.
pub fn scatter_min(a: &Array, indices: &[Array], updates: &Array, axes: &[i32]) -> Result<Array> {
    scatter_op(ScatterOp::Min, "scatter_min", a, indices, updates, axes)
}

/// Elements of `a` at `indices`: of the flattened array when `axis` is
/// `None` (result shaped like `indices`), otherwise along `axis` (the index
/// dims replace that axis).
pub fn take(a: &Array, indices: &Array, axis: Option<i32>) -> Result<Array> {
    check_index_dtype("take", indices)?;
    let Some(axis) = axis else {
        let flat = reshape(a, &[-1])?;
        let g = gather_raw(&flat, std::slice::from_ref(indices), &[0], &[1]);
        return reshape_to(&g, indices.shape());
    };
    let ax = normalize_axis("take", axis, a.ndim())?;
    if a.shape()[ax] == 0 && indices.size() > 0 {
        return Err(Error::out_of_range("take", format!("Cannot take from an empty axis {ax}.")));
    }
    let mut ss = a.shape().to_vec();
    ss[ax] = 1;
    let g = gather_raw(a, std::slice::from_ref(indices), &[ax], &ss);
    let il = indices.ndim();
    let mut shape = indices.shape().to_vec();
    shape.extend(a.shape().iter().enumerate().filter(|&(d, _)| d != ax).map(|(_, &n)| n));
    let g = reshape_to(&g, &shape)?;
    if ax == 0 || il == 0 {
        return Ok(g);
    }
    let perm: Vec<i32> = (il..il + ax).chain(0..il).chain(il + ax..shape.len()).map(|d| d as i32).collect();
    transpose_axes(&g, &perm)
}

/// The index arrays that address every element along the other axes of an
/// array of `shape`, with `indices` along `ax`, broadcast together.
fn along_axis_indices(op: &str, shape: &[usize], indices: &Array, ax: usize) -> Result<Vec<Array>> {
    let nd = shape.len();
    let mut idx = Vec::with_capacity(nd);
    for (d, &n) in shape.iter().enumerate() {
        if d == ax {
            idx.push(indices.clone());
        } else {
            let mut s = vec![1usize; nd];
            s[d] = n;
            idx.push(reshape_to(&super::creation::arange_int(0, n as i64, 1)?, &s)?);
        }
    }
    broadcast_all(op, &idx)
}

/// `a`'s elements at `indices` along `axis` (`indices` has `a`'s rank and
/// broadcasts with it off the axis); `None` works on the flattened arrays.
pub fn take_along_axis(a: &Array, indices: &Array, axis: Option<i32>) -> Result<Array> {
    check_index_dtype("take_along_axis", indices)?;
    let Some(axis) = axis else {
        return take_along_axis(&reshape(a, &[-1])?, &reshape(indices, &[-1])?, Some(0));
    };
    let ax = normalize_axis("take_along_axis", axis, a.ndim())?;
    if indices.ndim() != a.ndim() {
        return Err(Error::invalid(
            "take_along_axis",
            format!("Indices of dimension {} does not match array of dimension {}.", indices.ndim(), a.ndim()),
        ));
    }
    let idx = along_axis_indices("take_along_axis", a.shape(), indices, ax)?;
    let bshape = idx[0].shape().to_vec();
    let axes: Vec<usize> = (0..a.ndim()).collect();
    let g = gather_raw(a, &idx, &axes, &vec![1; a.ndim()]);
    reshape_to(&g, &bshape)
}

/// A copy of `a` with `values` written at `indices` along `axis` (the
/// counterpart of [`take_along_axis`]; duplicates: the last write wins).
pub fn put_along_axis(a: &Array, indices: &Array, values: &Array, axis: Option<i32>) -> Result<Array> {
    check_index_dtype("put_along_axis", indices)?;
    let Some(axis) = axis else {
        let r = put_along_axis(&reshape(a, &[-1])?, &reshape(indices, &[-1])?, &reshape(values, &[-1])?, Some(0))?;
        return reshape_to(&r, a.shape());
    };
    let ax = normalize_axis("put_along_axis", axis, a.ndim())?;
    if indices.ndim() != a.ndim() {
        return Err(Error::invalid(
            "put_along_axis",
            format!("Indices of dimension {} does not match array of dimension {}.", indices.ndim(), a.ndim()),
        ));
    }
    let idx = along_axis_indices("put_along_axis", a.shape(), indices, ax)?;
    let mut ushape = idx[0].shape().to_vec();
    let v = broadcast_to(values, &ushape).map_err(|e| Error::invalid("put_along_axis", e.message().to_string()))?;
    ushape.extend(std::iter::repeat_n(1, a.ndim()));
    let v = reshape_to(&astype(&v, a.dtype())?, &ushape)?;
    let axes: Vec<usize> = (0..a.ndim()).collect();
    Ok(scatter_raw(ScatterOp::None, a, &idx, &v, &axes))
}

/// The start indices of a dynamic slice as 0-d index arrays, one per axis.
fn dynamic_starts(op: &str, a: &Array, start: &Array, axes: &[i32]) -> Result<(Vec<usize>, Vec<Array>)> {
    check_index_dtype(op, start)?;
    if start.size() != axes.len() || start.ndim() > 1 {
        return Err(Error::invalid(
            op,
            format!(
                "Start indices of shape {} for {} axes: give one start per axis.",
                fmt_shape(start.shape()),
                axes.len()
            ),
        ));
    }
    let flat = reshape(start, &[-1])?;
    let idx: Vec<Array> = (0..axes.len())
        .map(|k| reshape_to(&super::slicing::slice_axis(&flat, 0, k as isize, 1, 1)?, &[]))
        .collect::<Result<_>>()?;
    prepare(op, a, &idx, axes)
}

/// A slice of `a` of shape `slice_size` whose start along `axes[k]` is the
/// (lazy) `start[k]` (0 along the other axes); MLX's `slice` with an array
/// start. A start that does not leave room for the slice is an error at eval.
pub fn slice_dynamic(a: &Array, start: &Array, axes: &[i32], slice_size: &[usize]) -> Result<Array> {
    let (ax, idx) = dynamic_starts("slice", a, start, axes)?;
    if slice_size.len() != a.ndim() || slice_size.iter().zip(a.shape()).any(|(s, n)| s > n) {
        return Err(Error::invalid(
            "slice",
            format!("Invalid slice size {} for array of shape {}.", fmt_shape(slice_size), fmt_shape(a.shape())),
        ));
    }
    Ok(gather_raw(a, &idx, &ax, slice_size))
}

/// A copy of `a` with `update` written at the (lazy) start `start[k]` along
/// `axes[k]` (0 along the other axes); MLX's `slice_update` with an array start.
pub fn slice_update_dynamic(a: &Array, update: &Array, start: &Array, axes: &[i32]) -> Result<Array> {
    let (ax, idx) = dynamic_starts("slice_update", a, start, axes)?;
    if update.ndim() != a.ndim() || update.shape().iter().zip(a.shape()).any(|(s, n)| s > n) {
        return Err(Error::invalid(
            "slice_update",
            format!(
                "Update of shape {} does not fit array of shape {}.",
                fmt_shape(update.shape()),
                fmt_shape(a.shape())
            ),
        ));
    }
    Ok(scatter_raw(ScatterOp::None, a, &idx, &astype(update, a.dtype())?, &ax))
}

/// A copy of `a` where the positions with `mask` true take successive
/// elements of `values` (flattened, row-major order). `mask` is boolean and
/// covers the leading dimensions of `a` (it broadcasts over the rest); a
/// single value is written everywhere the mask is set. Too few values is an
/// error at eval.
pub fn masked_scatter(a: &Array, mask: &Array, values: &Array) -> Result<Array> {
    if mask.dtype() != Dtype::Bool {
        return Err(Error::invalid("masked_scatter", format!("The mask must be boolean, got {}.", mask.dtype())));
    }
    if mask.ndim() > a.ndim() || mask.shape().iter().zip(a.shape()).any(|(m, n)| m != n && *m != 1) {
        return Err(Error::invalid(
            "masked_scatter",
            format!(
                "Mask of shape {} does not cover array of shape {}.",
                fmt_shape(mask.shape()),
                fmt_shape(a.shape())
            ),
        ));
    }
    let mut ms = mask.shape().to_vec();
    ms.extend(std::iter::repeat_n(1, a.ndim() - mask.ndim()));
    let m = broadcast_to(&reshape_to(mask, &ms)?, a.shape())?;
    let v = astype(values, a.dtype())?;
    if v.size() == 1 {
        return super::compare::where_(&m, &reshape_to(&v, &[])?, a);
    }
    let mflat = reshape(&m, &[-1])?;
    // Position of each set element among the set ones (exclusive cumsum).
    let pos = super::scan::cumsum(&astype(&mflat, Dtype::I64)?, Some(0), false, false)?;
    let pos = super::compare::where_(&mflat, &pos, 0i64)?;
    let picked = if v.size() == 0 {
        // No values: only an all-false mask is valid; report otherwise at eval.
        let z = zeros(&[1], a.dtype())?;
        take(&z, &super::compare::where_(&mflat, 1i64, 0i64)?, None)?
    } else {
        take(&reshape(&v, &[-1])?, &pos, None)?
    };
    let r = super::compare::where_(&mflat, &picked, &reshape(a, &[-1])?)?;
    reshape_to(&r, a.shape())
}

/// Indices (uint32) where `values` would be inserted into the sorted 1-D
/// `sorted` to keep it sorted: `side` `"left"` counts the elements strictly
/// less than each value, `"right"` those less or equal (NaN sorts last).
/// A binary search per value (`O(m log n)`); under `vmap` over `sorted`, the
/// batched form counts comparisons instead (`O(m n)`).
pub fn searchsorted(sorted: &Array, values: &Array, side: &str) -> Result<Array> {
    if sorted.ndim() != 1 {
        return Err(Error::invalid(
            "searchsorted",
            format!("The sorted sequence must be 1-D but has {} dimensions.", sorted.ndim()),
        ));
    }
    let right = match side {
        "left" => false,
        "right" => true,
        s => return Err(Error::invalid("searchsorted", format!("side must be 'left' or 'right', got '{s}'."))),
    };
    let d = crate::dtype::promote_types(sorted.dtype(), values.dtype());
    let (s, v) = (astype(sorted, d)?, astype(values, d)?);
    Ok(Array::from_op(v.shape().to_vec(), Dtype::U32, SearchSorted { right }, vec![s, v]))
}

/// [`searchsorted`] of `s` (shape `[B, n]`) and `v` (shape `[B, ...]`, same
/// dtype) by counting comparisons: the batched form.
fn searchsorted_counts(s: &Array, v: &Array, right: bool) -> Result<Array> {
    let mut shape = vec![s.shape()[0]];
    shape.extend(std::iter::repeat_n(1, v.ndim() - 1));
    shape.push(s.shape()[1]);
    let s = reshape_to(s, &shape)?;
    let v = expand_dims(v, -1)?;
    let inexact = s.dtype().is_inexact();
    let cmp = if right {
        // x <= v, with NaN last: a NaN value is above everything.
        let le = super::binary::less_equal(&s, &v)?;
        if inexact {
            super::binary::logical_or(&le, &super::unary::isnan(&v)?)?
        } else {
            le
        }
    } else {
        let lt = super::binary::less(&s, &v)?;
        if inexact {
            let nan_v = super::unary::isnan(&v)?;
            let not_nan_s = super::unary::logical_not(&super::unary::isnan(&s)?)?;
            super::binary::logical_or(&lt, &super::binary::logical_and(&nan_v, &not_nan_s)?)?
        } else {
            lt
        }
    };
    let count = super::reduce::sum(&astype(&cmp, Dtype::U32)?, -1, false)?;
    astype(&count, Dtype::U32)
}

/// Binary search of every element of `values` in the sorted 1-D `sorted`
/// (same dtype; see [`searchsorted`]). Inputs: `[sorted, values]`; output:
/// uint32 counts shaped like `values`.
#[derive(Debug, PartialEq)]
pub struct SearchSorted {
    right: bool,
}

const SEARCH_NO_GRAD: &str = "searchsorted returns integer positions, piecewise constant in its inputs.";

impl Primitive for SearchSorted {
    fn name(&self) -> &'static str {
        "SearchSorted"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.searchsorted(&inputs[0], &inputs[1], self.right, &outputs[0])?])
    }
    fn rules(&self) -> Rules {
        Rules { vjp: Rule::No(SEARCH_NO_GRAD), jvp: Rule::No(SEARCH_NO_GRAD), vmap: Rule::Yes }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let p = SearchSorted { right: self.right };
        match axes {
            [None, a] => {
                let v = &inputs[1];
                Ok((vec![Array::from_op(v.shape().to_vec(), Dtype::U32, p, inputs.to_vec())], vec![*a]))
            }
            _ => {
                let b = batch_size(inputs, axes);
                let s = batch_front(&inputs[0], axes[0], b)?;
                let v = batch_front(&inputs[1], axes[1], b)?;
                Ok((vec![searchsorted_counts(&s, &v, self.right)?], vec![Some(0)]))
            }
        }
    }
    crate::prim_common!();
}

impl Array {
    /// [`take`] as a method.
    pub fn take(&self, indices: &Array, axis: Option<i32>) -> Result<Array> {
        take(self, indices, axis)
    }
    /// [`take_along_axis`] as a method.
    pub fn take_along_axis(&self, indices: &Array, axis: Option<i32>) -> Result<Array> {
        take_along_axis(self, indices, axis)
    }
}
