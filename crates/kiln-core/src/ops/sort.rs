//! Sorting and selection: `sort`, `argsort`, `partition`, `argpartition`,
//! `topk`, and the internal `PermuteAlong` gather their gradients use.
//!
//! Order (as MLX): numeric; `-0.0` and `0.0` are equal; NaNs are equal to
//! each other and after everything else; complex numbers order by real then
//! imaginary part, any NaN last. `sort`/`argsort` are stable (ties keep
//! their input order), as MLX's are.
//!
//! Gradients go through the permutation: with `p = argsort(x)` the sorted
//! values are `x[p]`, so the vjp scatters the cotangent back with the
//! inverse permutation (itself `argsort(p)`) and the jvp gathers the tangent
//! with `p`: O(n log n) per line. `partition` does the same with
//! `argpartition`, whose kernel yields exactly the permutation `partition`
//! applies.

use super::shape::reshape_to;
use super::slicing::{batch_front, batch_size, slice_axis};
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::Dtype;
use crate::error::{Error, Result};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};

/// Why index outputs have no derivative.
const INDEX_NO_GRAD: &str = "the output is integer indices, piecewise constant in the input";

/// The axis a vmapped single-input op works on once the batch axis `b` is inserted.
fn shifted(axis: usize, b: Option<usize>) -> usize {
    match b {
        Some(b) if b <= axis => axis + 1,
        _ => axis,
    }
}

/// Values sorted along `axis` (stable; NaNs last).
#[derive(Debug, PartialEq)]
pub struct Sort {
    /// The sorted axis.
    pub axis: usize,
}

impl Primitive for Sort {
    fn name(&self) -> &'static str {
        "Sort"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.sort(&inputs[0], self.axis, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let p = argsort_axis(&primals[0], self.axis);
        let inv = argsort_axis(&p, self.axis);
        Ok(vec![permute_along(&cotangents[0], &inv, self.axis)?])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let p = argsort_axis(&primals[0], self.axis);
        Ok(vec![permute_along(&tangents[0], &p, self.axis)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![sort_axis(&inputs[0], shifted(self.axis, axes[0]))?], vec![axes[0]]))
    }
    crate::prim_common!();
}

/// The stable sorting permutation along `axis` (uint32).
#[derive(Debug, PartialEq)]
pub struct ArgSort {
    /// The sorted axis.
    pub axis: usize,
}

impl Primitive for ArgSort {
    fn name(&self) -> &'static str {
        "ArgSort"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.argsort(&inputs[0], self.axis, &outputs[0])?])
    }
    fn rules(&self) -> Rules {
        Rules { vjp: Rule::No(INDEX_NO_GRAD), jvp: Rule::No(INDEX_NO_GRAD), vmap: Rule::Yes }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![argsort_axis(&inputs[0], shifted(self.axis, axes[0]))], vec![axes[0]]))
    }
    crate::prim_common!();
}

/// Values partitioned along `axis`: element `kth` is where a full sort would
/// put it, smaller-or-equal ones before it, greater-or-equal ones after.
#[derive(Debug, PartialEq)]
pub struct Partition {
    /// The pivot position (non-negative).
    pub kth: usize,
    /// The partitioned axis.
    pub axis: usize,
}

impl Primitive for Partition {
    fn name(&self) -> &'static str {
        "Partition"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.partition(&inputs[0], self.kth, self.axis, false, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let p = argpartition_axis(&primals[0], self.kth, self.axis);
        let inv = argsort_axis(&p, self.axis);
        Ok(vec![permute_along(&cotangents[0], &inv, self.axis)?])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let p = argpartition_axis(&primals[0], self.kth, self.axis);
        Ok(vec![permute_along(&tangents[0], &p, self.axis)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![partition_axis(&inputs[0], self.kth, shifted(self.axis, axes[0]))], vec![axes[0]]))
    }
    crate::prim_common!();
}

/// Indices that partition along `axis` (uint32); the same permutation
/// [`Partition`] applies.
#[derive(Debug, PartialEq)]
pub struct ArgPartition {
    /// The pivot position (non-negative).
    pub kth: usize,
    /// The partitioned axis.
    pub axis: usize,
}

impl Primitive for ArgPartition {
    fn name(&self) -> &'static str {
        "ArgPartition"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.partition(&inputs[0], self.kth, self.axis, true, &outputs[0])?])
    }
    fn rules(&self) -> Rules {
        Rules { vjp: Rule::No(INDEX_NO_GRAD), jvp: Rule::No(INDEX_NO_GRAD), vmap: Rule::Yes }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![argpartition_axis(&inputs[0], self.kth, shifted(self.axis, axes[0]))], vec![axes[0]]))
    }
    crate::prim_common!();
}

/// `x` reordered along `axis` by a permutation `idx` (uint32, shaped like
/// `x`): `out[.., k, ..] = x[.., idx[.., k, ..], ..]`.
///
/// Internal to sorting and `random::permutation`: its vjp (gather with the
/// inverse permutation) is only valid because `idx` is a permutation of
/// `0..n` along `axis` in every line, which those callers guarantee.
#[derive(Debug, PartialEq)]
pub struct PermuteAlong {
    /// The permuted axis.
    pub axis: usize,
}

impl Primitive for PermuteAlong {
    fn name(&self) -> &'static str {
        "PermuteAlong"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.take_along_u32(&inputs[0], &inputs[1], self.axis, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let mut out = Vec::with_capacity(argnums.len());
        for &a in argnums {
            if a == 0 {
                let inv = argsort_axis(&primals[1], self.axis);
                out.push(permute_along(&cotangents[0], &inv, self.axis)?);
            } else {
                out.push(super::creation::zeros_like(&primals[1])?);
            }
        }
        Ok(out)
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let mut t = super::creation::zeros_like(&primals[0])?;
        for (tan, &a) in tangents.iter().zip(argnums) {
            if a == 0 {
                t = permute_along(tan, &primals[1], self.axis)?;
            }
        }
        Ok(vec![t])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let b = batch_size(inputs, axes);
        let x = batch_front(&inputs[0], axes[0], b)?;
        let i = batch_front(&inputs[1], axes[1], b)?;
        Ok((vec![permute_along(&x, &i, self.axis + 1)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

pub(crate) fn sort_axis(a: &Array, axis: usize) -> Result<Array> {
    Ok(Array::from_op(a.shape().to_vec(), a.dtype(), Sort { axis }, vec![a.clone()]))
}

fn argsort_axis(a: &Array, axis: usize) -> Array {
    Array::from_op(a.shape().to_vec(), Dtype::U32, ArgSort { axis }, vec![a.clone()])
}

fn partition_axis(a: &Array, kth: usize, axis: usize) -> Array {
    Array::from_op(a.shape().to_vec(), a.dtype(), Partition { kth, axis }, vec![a.clone()])
}

fn argpartition_axis(a: &Array, kth: usize, axis: usize) -> Array {
    Array::from_op(a.shape().to_vec(), Dtype::U32, ArgPartition { kth, axis }, vec![a.clone()])
}

/// Gathers `x` along `axis` with the permutation `idx` (see [`PermuteAlong`]).
pub(crate) fn permute_along(x: &Array, idx: &Array, axis: usize) -> Result<Array> {
    if x.shape() != idx.shape() || idx.dtype() != Dtype::U32 || axis >= x.ndim().max(1) {
        return Err(Error::invalid(
            "permute_along",
            format!("Expected uint32 indices shaped like {:?}, got {:?} {}.", x.shape(), idx.shape(), idx.dtype()),
        ));
    }
    Ok(Array::from_op(x.shape().to_vec(), x.dtype(), PermuteAlong { axis }, vec![x.clone(), idx.clone()]))
}

/// `a` flattened (axis `None`) or with `axis` resolved; errors name `op`.
fn prepare(op: &str, a: &Array, axis: Option<i32>) -> Result<(Array, usize)> {
    match axis {
        None => Ok((reshape_to(a, &[a.size()])?, 0)),
        Some(ax) => Ok((a.clone(), crate::shape::normalize_axis(op, ax, a.ndim())?)),
    }
}

/// `a` sorted along `axis` (`None`: the flattened array), stably, NaNs last.
pub fn sort(a: &Array, axis: Option<i32>) -> Result<Array> {
    let (a, ax) = prepare("sort", a, axis)?;
    sort_axis(&a, ax)
}

/// The indices that sort `a` along `axis` (`None`: flattened), uint32; ties keep input order.
pub fn argsort(a: &Array, axis: Option<i32>) -> Result<Array> {
    let (a, ax) = prepare("argsort", a, axis)?;
    Ok(argsort_axis(&a, ax))
}

fn resolve_kth(op: &str, a: &Array, kth: i32, ax: usize, axis: Option<i32>) -> Result<usize> {
    let n = a.shape()[ax] as i64;
    let k = if kth < 0 { kth as i64 + n } else { kth as i64 };
    if k < 0 || k >= n {
        return Err(Error::invalid(
            op,
            format!(
                "Received invalid kth {kth} along axis {} for array with shape: {}.",
                axis.unwrap_or(0),
                crate::error::fmt_shape(a.shape())
            ),
        ));
    }
    Ok(k as usize)
}

/// A copy of `a` partitioned along `axis` (`None`: flattened): element
/// `kth` (negative counts from the end) is in sorted position, no element
/// before it is greater and none after it is smaller. The order within each
/// side is unspecified (it differs from MLX's).
pub fn partition(a: &Array, kth: i32, axis: Option<i32>) -> Result<Array> {
    let (a, ax) = prepare("partition", a, axis)?;
    let k = resolve_kth("partition", &a, kth, ax, axis)?;
    Ok(partition_axis(&a, k, ax))
}

/// The indices that partition `a` along `axis` (see [`partition`]), uint32.
pub fn argpartition(a: &Array, kth: i32, axis: Option<i32>) -> Result<Array> {
    let (a, ax) = prepare("argpartition", a, axis)?;
    let k = resolve_kth("argpartition", &a, kth, ax, axis)?;
    Ok(argpartition_axis(&a, k, ax))
}

/// The `k` largest elements along `axis` (`None`: flattened), in
/// unspecified order (MLX's order is an artefact of its selection algorithm).
pub fn topk(a: &Array, k: i32, axis: Option<i32>) -> Result<Array> {
    let (a, ax) = prepare("topk", a, axis)?;
    let n = a.shape()[ax];
    if k < 0 || k as usize > n {
        return Err(Error::invalid(
            "topk",
            format!(
                "Received invalid k={k} along axis {} for array with shape: {}.",
                axis.unwrap_or(0),
                crate::error::fmt_shape(a.shape())
            ),
        ));
    }
    let k = k as usize;
    if k == n {
        return Ok(a);
    }
    if k == 0 {
        return slice_axis(&a, ax, n as isize, 0, 1);
    }
    let p = partition_axis(&a, n - k, ax);
    slice_axis(&p, ax, (n - k) as isize, k, 1)
}
