//! Strided slices (views; steps may be negative), slice updates and
//! concatenation, plus the ops built on them: `slice`, `split`, `unstack`,
//! `flip`, `roll`.

use super::shape::{moveaxis, reshape, reshape_to, squeeze_axes};
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::Dtype;
use crate::error::{fmt_shape, Error, Result};
use crate::primitive::{OutSpec, Primitive};
use crate::shape::{normalize_axis, numel, row_major_strides};

/// A strided view: output element `i` along axis `d` is input element
/// `starts[d] + i * steps[d]` for `i < lens[d]`. Steps may be negative
/// (the view then has negative strides).
#[derive(Debug, PartialEq)]
pub struct Slice {
    starts: Vec<isize>,
    steps: Vec<isize>,
    lens: Vec<usize>,
}

/// Element offset and strides of the region `starts`/`steps` inside a layout with `strides`.
fn region(starts: &[isize], steps: &[isize], strides: &[isize]) -> (isize, Vec<isize>) {
    let off = starts.iter().zip(strides).map(|(s, t)| s * t).sum();
    (off, steps.iter().zip(strides).map(|(s, t)| s * t).collect())
}

fn prepend_full(starts: &[isize], steps: &[isize], lens: &[usize], b: usize) -> (Vec<isize>, Vec<isize>, Vec<usize>) {
    let mut s = vec![0];
    s.extend_from_slice(starts);
    let mut t = vec![1];
    t.extend_from_slice(steps);
    let mut l = vec![b];
    l.extend_from_slice(lens);
    (s, t, l)
}

impl Primitive for Slice {
    fn name(&self) -> &'static str {
        "Slice"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let d = inputs[0].data();
        let (off, strides) = region(&self.starts, &self.steps, d.strides());
        // An empty view keeps the input's offset so its pointer stays in bounds.
        let off = if outputs[0].shape.contains(&0) { d.offset() } else { d.offset() + off };
        Ok(vec![Data::view(d.buffer().clone(), outputs[0].shape, off, strides)])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let z = super::creation::zeros(primals[0].shape(), cotangents[0].dtype())?;
        Ok(vec![slice_update_raw(&z, &cotangents[0], &self.starts, &self.steps)?])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![slice_raw(&tangents[0], &self.starts, &self.steps, &self.lens)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(ax) = axes[0] else {
            return Ok((vec![slice_raw(&inputs[0], &self.starts, &self.steps, &self.lens)?], vec![None]));
        };
        let x = moveaxis(&inputs[0], ax as i32, 0)?;
        let (s, t, l) = prepend_full(&self.starts, &self.steps, &self.lens, x.shape()[0]);
        Ok((vec![slice_raw(&x, &s, &t, &l)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// A slice view with resolved starts, steps and lengths (already validated).
pub(crate) fn slice_raw(a: &Array, starts: &[isize], steps: &[isize], lens: &[usize]) -> Result<Array> {
    if lens == a.shape() && starts.iter().all(|&s| s == 0) && steps.iter().all(|&s| s == 1) {
        return Ok(a.clone());
    }
    let p = Slice { starts: starts.to_vec(), steps: steps.to_vec(), lens: lens.to_vec() };
    Ok(Array::from_op(lens.to_vec(), a.dtype(), p, vec![a.clone()]))
}

/// Resolves a Python-style `start:stop:step` for an axis of length `n` to
/// `(start, len)` (NumPy clamping rules).
pub fn resolve_slice(n: usize, start: Option<i64>, stop: Option<i64>, step: i64) -> (isize, usize) {
    let n = n as i64;
    let (lo, hi) = if step > 0 { (0, n) } else { (-1, n - 1) };
    let fix = |v: i64| {
        let v = if v < 0 { v + n } else { v };
        v.clamp(lo, hi)
    };
    let s = start.map(fix).unwrap_or(if step > 0 { 0 } else { n - 1 });
    let e = stop.map(fix).unwrap_or(if step > 0 { n } else { -1 });
    let len = if step > 0 { (e - s + step - 1).div_euclid(step) } else { (s - e + (-step) - 1).div_euclid(-step) };
    (s as isize, len.max(0) as usize)
}

/// `a[start:stop:step, …]` with NumPy semantics per axis (negative indices
/// count from the end, out-of-range bounds clamp, negative steps reverse).
/// `starts`, `stops` and `steps` have one entry per axis. The result is a view.
pub fn slice(a: &Array, starts: &[i64], stops: &[i64], steps: &[i64]) -> Result<Array> {
    let n = a.ndim();
    if starts.len() != n || stops.len() != n || steps.len() != n {
        return Err(Error::invalid(
            "slice",
            format!(
                "Invalid number of indices or strides for array with dimension {n} (got {}, {}, {}).",
                starts.len(),
                stops.len(),
                steps.len()
            ),
        ));
    }
    if let Some(z) = steps.iter().position(|&s| s == 0) {
        return Err(Error::invalid("slice", format!("Slice step cannot be zero (axis {z}).")));
    }
    let mut s = Vec::with_capacity(n);
    let mut l = Vec::with_capacity(n);
    for d in 0..n {
        let (st, len) = resolve_slice(a.shape()[d], Some(starts[d]), Some(stops[d]), steps[d]);
        s.push(st);
        l.push(len);
    }
    let t: Vec<isize> = steps.iter().map(|&x| x as isize).collect();
    slice_raw(a, &s, &t, &l)
}

/// `a` sliced along one axis only (`start..start+len*step` by `step`, resolved).
pub(crate) fn slice_axis(a: &Array, axis: usize, start: isize, len: usize, step: isize) -> Result<Array> {
    let mut s = vec![0; a.ndim()];
    let mut t = vec![1; a.ndim()];
    let mut l = a.shape().to_vec();
    s[axis] = start;
    t[axis] = step;
    l[axis] = len;
    slice_raw(a, &s, &t, &l)
}

/// Writes `update` into a copy of `base` at a strided region.
#[derive(Debug, PartialEq)]
pub struct SliceUpdate {
    starts: Vec<isize>,
    steps: Vec<isize>,
}

impl Primitive for SliceUpdate {
    fn name(&self) -> &'static str {
        "SliceUpdate"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let (base, upd) = (&inputs[0], &inputs[1]);
        let out = if base.is_donatable() {
            let d = base.data();
            Data::contiguous_shared(d.buffer().clone(), outputs[0].shape)
        } else {
            backend.copy(base, &outputs[0])?
        };
        if upd.size() > 0 {
            let rm = row_major_strides(outputs[0].shape);
            let (off, strides) = region(&self.starts, &self.steps, &rm);
            backend.copy_into(upd, &out, outputs[0].dtype, off, &strides)?;
        }
        Ok(vec![out])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        let mut out = Vec::new();
        for &i in argnums {
            if i == 0 {
                let z = super::creation::zeros(primals[1].shape(), g.dtype())?;
                out.push(slice_update_raw(g, &z, &self.starts, &self.steps)?);
            } else {
                out.push(slice_raw(g, &self.starts, &self.steps, primals[1].shape())?);
            }
        }
        Ok(out)
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let pick = |k: usize| -> Result<Array> {
            match argnums.iter().position(|&a| a == k) {
                Some(p) => Ok(tangents[p].clone()),
                None => super::creation::zeros(primals[k].shape(), primals[k].dtype()),
            }
        };
        Ok(vec![slice_update_raw(&pick(0)?, &pick(1)?, &self.starts, &self.steps)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let b = batch_size(inputs, axes);
        let x = batch_front(&inputs[0], axes[0], b)?;
        let u = batch_front(&inputs[1], axes[1], b)?;
        let (s, t, _) = prepend_full(&self.starts, &self.steps, &[], b);
        Ok((vec![slice_update_raw(&x, &u, &s, &t)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// The batch size of a vmap call (from the first batched input).
pub(crate) fn batch_size(inputs: &[Array], axes: &[Option<usize>]) -> usize {
    inputs.iter().zip(axes).find_map(|(x, a)| a.map(|a| x.shape()[a])).unwrap_or(1)
}

/// `x` with its batch axis moved to the front, or broadcast to batch size `b` if unbatched.
pub(crate) fn batch_front(x: &Array, ax: Option<usize>, b: usize) -> Result<Array> {
    match ax {
        Some(a) => moveaxis(x, a as i32, 0),
        None => {
            let mut shape = vec![b];
            shape.extend_from_slice(x.shape());
            let e = super::shape::expand_dims(x, 0)?;
            super::shape::broadcast_to(&e, &shape)
        }
    }
}

/// `base` with the region `starts`/`steps` (shaped like `update`) replaced by `update`.
pub(crate) fn slice_update_raw(base: &Array, update: &Array, starts: &[isize], steps: &[isize]) -> Result<Array> {
    let update = super::creation::astype(update, base.dtype())?;
    let p = SliceUpdate { starts: starts.to_vec(), steps: steps.to_vec() };
    Ok(Array::from_op(base.shape().to_vec(), base.dtype(), p, vec![base.clone(), update]))
}

/// A copy of `a` whose slice `start:stop:step` (NumPy rules per axis) is
/// replaced by `update` (broadcast to the slice's shape and cast to `a`'s dtype).
pub fn slice_update(a: &Array, update: &Array, starts: &[i64], stops: &[i64], steps: &[i64]) -> Result<Array> {
    let view = slice(a, starts, stops, steps)?;
    let u = super::shape::broadcast_to(update, view.shape())?;
    let mut s = Vec::new();
    for d in 0..a.ndim() {
        s.push(resolve_slice(a.shape()[d], Some(starts[d]), Some(stops[d]), steps[d]).0);
    }
    let t: Vec<isize> = steps.iter().map(|&x| x as isize).collect();
    slice_update_raw(a, &u, &s, &t)
}

/// Joins arrays along an existing axis (a fresh output assembled with `copy_into`).
#[derive(Debug, PartialEq)]
pub struct Concatenate {
    axis: usize,
}

impl Primitive for Concatenate {
    fn name(&self) -> &'static str {
        "Concatenate"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let out = outputs[0];
        let buf = crate::memory::Buffer::alloc(numel(out.shape) * out.dtype.size())?;
        let data = Data::contiguous(buf, out.shape);
        let strides = row_major_strides(out.shape);
        let mut pos = 0isize;
        for x in inputs {
            backend.copy_into(x, &data, out.dtype, pos * strides[self.axis], &strides)?;
            pos += x.shape()[self.axis] as isize;
        }
        Ok(vec![data])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let mut starts = vec![0isize];
        for p in primals {
            starts.push(starts.last().unwrap() + p.shape()[self.axis] as isize);
        }
        argnums
            .iter()
            .map(|&i| slice_axis(&cotangents[0], self.axis, starts[i], primals[i].shape()[self.axis], 1))
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let ts: Vec<Array> = (0..primals.len())
            .map(|k| match argnums.iter().position(|&a| a == k) {
                Some(p) => Ok(tangents[p].clone()),
                None => super::creation::zeros(primals[k].shape(), primals[k].dtype()),
            })
            .collect::<Result<_>>()?;
        Ok(vec![concat_raw(&ts, self.axis)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let b = batch_size(inputs, axes);
        let xs: Vec<Array> = inputs.iter().zip(axes).map(|(x, &a)| batch_front(x, a, b)).collect::<Result<_>>()?;
        Ok((vec![concat_raw(&xs, self.axis + 1)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// Concatenation of same-dtype arrays that agree off `axis` (validated).
pub(crate) fn concat_raw(arrays: &[Array], axis: usize) -> Result<Array> {
    if arrays.len() == 1 {
        return Ok(arrays[0].clone());
    }
    let mut shape = arrays[0].shape().to_vec();
    shape[axis] = arrays.iter().map(|a| a.shape()[axis]).sum();
    let dtype = arrays[0].dtype();
    let inputs: Vec<Array> = arrays.iter().map(|a| super::creation::astype(a, dtype)).collect::<Result<_>>()?;
    Ok(Array::from_op(shape, dtype, Concatenate { axis }, inputs))
}

/// Joins `arrays` along `axis`; `None` flattens every array first. Dtypes promote.
pub fn concatenate(arrays: &[Array], axis: Option<i32>) -> Result<Array> {
    if arrays.is_empty() {
        return Err(Error::invalid("concatenate", "No arrays provided for concatenation."));
    }
    let dtype = common_dtype(arrays);
    let arrays: Vec<Array> = arrays.iter().map(|a| super::creation::astype(a, dtype)).collect::<Result<_>>()?;
    let Some(axis) = axis else {
        let flat: Vec<Array> = arrays.iter().map(|a| reshape(a, &[-1])).collect::<Result<_>>()?;
        return concat_raw(&flat, 0);
    };
    let nd = arrays[0].ndim();
    if nd == 0 {
        return Err(Error::invalid("concatenate", "Cannot concatenate zero-dimensional arrays."));
    }
    let ax = normalize_axis("concatenate", axis, nd)?;
    for a in &arrays[1..] {
        let ok = a.ndim() == nd && (0..nd).all(|d| d == ax || a.shape()[d] == arrays[0].shape()[d]);
        if !ok {
            return Err(Error::invalid(
                "concatenate",
                format!(
                    "All the input array dimensions must match exactly except for the concatenation axis. \
                     However, the provided shapes are {} and {}, and the concatenation axis is {axis}.",
                    fmt_shape(arrays[0].shape()),
                    fmt_shape(a.shape())
                ),
            ));
        }
    }
    concat_raw(&arrays, ax)
}

pub(crate) fn common_dtype(arrays: &[Array]) -> Dtype {
    arrays.iter().skip(1).fold(arrays[0].dtype(), |d, a| crate::dtype::promote_types(d, a.dtype()))
}

/// How `split` divides an axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitSpec {
    /// Into this many equal sections.
    Sections(i64),
    /// At these indices (NumPy rules: unsorted, negative and out-of-range indices allowed).
    Indices(Vec<i64>),
}

/// Splits `a` along `axis` into views.
pub fn split(a: &Array, spec: SplitSpec, axis: i32) -> Result<Vec<Array>> {
    let ax = normalize_axis("split", axis, a.ndim())?;
    let n = a.shape()[ax];
    let idx: Vec<i64> = match spec {
        SplitSpec::Sections(k) => {
            if k <= 0 || n as i64 % k != 0 {
                return Err(Error::invalid(
                    "split",
                    format!(
                        "Array split does not result in sub arrays with equal size: attempting {k} splits along axis {ax} for shape {}.",
                        fmt_shape(a.shape())
                    ),
                ));
            }
            let step = n as i64 / k;
            (1..k).map(|i| i * step).collect()
        }
        SplitSpec::Indices(v) => v,
    };
    let mut out = Vec::with_capacity(idx.len() + 1);
    let mut prev: Option<i64> = None;
    for i in idx.iter().copied().map(Some).chain(std::iter::once(None)) {
        let (s, len) = resolve_slice(n, Some(prev.unwrap_or(0)), i, 1);
        out.push(slice_axis(a, ax, s, len, 1)?);
        prev = i;
    }
    Ok(out)
}

/// The slices of `a` along `axis`, each without that axis.
pub fn unstack(a: &Array, axis: i32) -> Result<Vec<Array>> {
    let ax = normalize_axis("unstack", axis, a.ndim())?;
    (0..a.shape()[ax]).map(|i| squeeze_axes(&slice_axis(a, ax, i as isize, 1, 1)?, &[ax as i32])).collect()
}

/// `a` reversed along `axes` (all axes when `None`): a view with negative strides.
pub fn flip(a: &Array, axes: Option<&[i32]>) -> Result<Array> {
    let axes = match axes {
        Some(v) => crate::shape::normalize_axes("flip", v, a.ndim())?,
        None => (0..a.ndim()).collect(),
    };
    let mut s = vec![0isize; a.ndim()];
    let mut t = vec![1isize; a.ndim()];
    for &ax in &axes {
        if a.shape()[ax] > 0 {
            s[ax] = a.shape()[ax] as isize - 1;
            t[ax] = -1;
        }
    }
    slice_raw(a, &s, &t, a.shape())
}

/// Rolls elements by `shifts` along `axes` (`None`: over the flattened array,
/// then restores the shape). A single shift applies to every listed axis.
pub fn roll(a: &Array, shifts: &[i64], axes: Option<&[i32]>) -> Result<Array> {
    let Some(axes) = axes else {
        if shifts.len() != 1 {
            return Err(Error::invalid("roll", "Rolling a flattened array takes exactly one shift."));
        }
        let flat = reshape(a, &[-1])?;
        return reshape_to(&roll(&flat, shifts, Some(&[0]))?, a.shape());
    };
    if shifts.len() != 1 && shifts.len() != axes.len() {
        return Err(Error::invalid(
            "roll",
            format!("{} shifts and {} axes: give one shift or one per axis.", shifts.len(), axes.len()),
        ));
    }
    let mut x = a.clone();
    for (i, &axis) in axes.iter().enumerate() {
        let ax = normalize_axis("roll", axis, a.ndim())?;
        let n = a.shape()[ax] as i64;
        if n == 0 {
            continue;
        }
        let s = shifts[if shifts.len() == 1 { 0 } else { i }].rem_euclid(n);
        if s == 0 {
            continue;
        }
        let head = slice_axis(&x, ax, (n - s) as isize, s as usize, 1)?;
        let tail = slice_axis(&x, ax, 0, (n - s) as usize, 1)?;
        x = concat_raw(&[head, tail], ax)?;
    }
    Ok(x)
}
