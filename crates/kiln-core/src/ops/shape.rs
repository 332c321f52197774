//! Shape and layout ops. Reshape (whenever the merged dimensions are
//! contiguous with each other), transpose/swapaxes/moveaxis, broadcast,
//! squeeze/expand_dims, diagonal and as_strided are views: they share the
//! input buffer with new strides. Pad, tile, repeat and stack assemble copies
//! from slices ([`super::slicing`]) and concatenation; their transform rules
//! follow from those primitives.

use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::error::{fmt_shape, Error, Result};
use crate::primitive::{OutSpec, Primitive};
use crate::shape::{broadcast_shapes, broadcast_strides, normalize_axis, numel, row_major_strides};

/// Reshape: a view when the input is row-contiguous, a copy otherwise.
#[derive(Debug, PartialEq)]
pub struct Reshape {
    shape: Vec<usize>,
}

impl Primitive for Reshape {
    fn name(&self) -> &'static str {
        "Reshape"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let d = inputs[0].data();
        if d.is_row_contiguous() {
            return Ok(vec![Data::view(
                d.buffer().clone(),
                outputs[0].shape,
                d.offset(),
                row_major_strides(outputs[0].shape),
            )]);
        }
        // Non-contiguous input: still a view when the new shape only splits or
        // merges dimensions that are contiguous with each other (e.g. squeeze
        // or expand_dims of a transpose); otherwise a row-major copy.
        if let Some(strides) = reshape_view_strides(inputs[0].shape(), d.strides(), outputs[0].shape) {
            return Ok(vec![Data::view(d.buffer().clone(), outputs[0].shape, d.offset(), strides)]);
        }
        let c = backend.copy(&inputs[0], &OutSpec { shape: inputs[0].shape(), dtype: outputs[0].dtype })?;
        Ok(vec![Data::view(c.buffer().clone(), outputs[0].shape, 0, row_major_strides(outputs[0].shape))])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![reshape_to(&cotangents[0], primals[0].shape())?])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![reshape_to(&tangents[0], &self.shape)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let x = match axes[0] {
            Some(ax) => moveaxis(&inputs[0], ax as i32, 0)?,
            None => return Ok((vec![reshape_to(&inputs[0], &self.shape)?], vec![None])),
        };
        let mut shape = vec![x.shape()[0]];
        shape.extend_from_slice(&self.shape);
        Ok((vec![reshape_to(&x, &shape)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// `a` reshaped to the exact `shape` (no -1 inference).
pub fn reshape_to(a: &Array, shape: &[usize]) -> Result<Array> {
    if numel(shape) != a.size() {
        return Err(Error::invalid(
            "reshape",
            format!("Cannot reshape array of size {} into shape {}.", a.size(), fmt_shape(shape)),
        ));
    }
    if shape == a.shape() {
        return Ok(a.clone());
    }
    Ok(Array::from_op(shape.to_vec(), a.dtype(), Reshape { shape: shape.to_vec() }, vec![a.clone()]))
}

/// `a` reshaped to `shape`; one entry may be -1 and is inferred.
pub fn reshape(a: &Array, shape: &[i64]) -> Result<Array> {
    let show = || format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","));
    let mut infer = None;
    let mut known = 1usize;
    for (i, &d) in shape.iter().enumerate() {
        if d == -1 {
            if infer.is_some() {
                return Err(Error::invalid("reshape", "Reshape can only infer one dimension."));
            }
            infer = Some(i);
        } else if d < 0 {
            return Err(Error::invalid("reshape", format!("Invalid dimension {d} in shape {}.", show())));
        } else {
            known = known.checked_mul(d as usize).ok_or_else(|| Error::invalid("reshape", "Shape too large."))?;
        }
    }
    let mut out: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
    if let Some(i) = infer {
        if known == 0 || !a.size().is_multiple_of(known) {
            return Err(Error::invalid(
                "reshape",
                format!(
                    "Cannot infer the shape of an empty array or reshape array of size {} into shape {}.",
                    a.size(),
                    show()
                ),
            ));
        }
        out[i] = a.size() / known;
    }
    if numel(&out) != a.size() {
        return Err(Error::invalid(
            "reshape",
            format!("Cannot reshape array of size {} into shape {}.", a.size(), show()),
        ));
    }
    reshape_to(a, &out)
}

/// Broadcast view of the input to a larger shape.
#[derive(Debug, PartialEq)]
pub struct Broadcast {
    shape: Vec<usize>,
}

impl Primitive for Broadcast {
    fn name(&self) -> &'static str {
        "Broadcast"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let d = inputs[0].data();
        let strides = broadcast_strides(inputs[0].shape(), d.strides(), outputs[0].shape);
        Ok(vec![Data::view(d.buffer().clone(), outputs[0].shape, d.offset(), strides)])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![super::reduce::sum_to_shape(&cotangents[0], primals[0].shape())?])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![broadcast_to(&tangents[0], &self.shape)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(ax) = axes[0] else {
            return Ok((vec![broadcast_to(&inputs[0], &self.shape)?], vec![None]));
        };
        // Put the batch axis first, pad the rest to the target rank, then broadcast.
        let x = moveaxis(&inputs[0], ax as i32, 0)?;
        let b = x.shape()[0];
        let rest = &x.shape()[1..];
        let mut padded = vec![b];
        padded.resize(1 + self.shape.len() - rest.len(), 1);
        padded.extend_from_slice(rest);
        let x = reshape_to(&x, &padded)?;
        let mut target = vec![b];
        target.extend_from_slice(&self.shape);
        Ok((vec![broadcast_to(&x, &target)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// `a` broadcast to `shape` (a view).
pub fn broadcast_to(a: &Array, shape: &[usize]) -> Result<Array> {
    if a.shape() == shape {
        return Ok(a.clone());
    }
    let b = broadcast_shapes(a.shape(), shape).map_err(|_| {
        Error::invalid(
            "broadcast_to",
            format!("Cannot broadcast array of shape {} to shape {}.", fmt_shape(a.shape()), fmt_shape(shape)),
        )
    })?;
    if b != shape {
        return Err(Error::invalid(
            "broadcast_to",
            format!("Cannot broadcast array of shape {} to shape {}.", fmt_shape(a.shape()), fmt_shape(shape)),
        ));
    }
    Ok(Array::from_op(shape.to_vec(), a.dtype(), Broadcast { shape: shape.to_vec() }, vec![a.clone()]))
}

/// Permutes the axes (a view).
#[derive(Debug, PartialEq)]
pub struct Transpose {
    perm: Vec<usize>,
}

impl Transpose {
    /// The permutation: output axis `i` is input axis `perm[i]`.
    pub(crate) fn perm(&self) -> &[usize] {
        &self.perm
    }
}

impl Primitive for Transpose {
    fn name(&self) -> &'static str {
        "Transpose"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let d = inputs[0].data();
        let strides = self.perm.iter().map(|&p| d.strides()[p]).collect();
        Ok(vec![Data::view(d.buffer().clone(), outputs[0].shape, d.offset(), strides)])
    }
    fn vjp(&self, _: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let mut inv = vec![0; self.perm.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(vec![transpose_perm(&cotangents[0], &inv)?])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![transpose_perm(&tangents[0], &self.perm)?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(ax) = axes[0] else {
            return Ok((vec![transpose_perm(&inputs[0], &self.perm)?], vec![None]));
        };
        let x = moveaxis(&inputs[0], ax as i32, 0)?;
        let mut perm = vec![0];
        perm.extend(self.perm.iter().map(|p| p + 1));
        Ok((vec![transpose_perm(&x, &perm)?], vec![Some(0)]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let s = inputs[0].shape();
        if s.len() != self.perm.len() {
            return Err(Error::invalid(self.name(), "The permutation does not match the input's rank."));
        }
        Ok(vec![self.perm.iter().map(|&p| s[p]).collect()])
    }
    crate::prim_common!();
}

/// `a` with axes permuted by `perm` (already validated, non-negative).
pub(crate) fn transpose_perm(a: &Array, perm: &[usize]) -> Result<Array> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(a.clone());
    }
    let shape = perm.iter().map(|&p| a.shape()[p]).collect();
    Ok(Array::from_op(shape, a.dtype(), Transpose { perm: perm.to_vec() }, vec![a.clone()]))
}

/// `a` with axes permuted (`axes` may be negative); validates a full permutation.
pub fn transpose_axes(a: &Array, axes: &[i32]) -> Result<Array> {
    if axes.len() != a.ndim() {
        return Err(Error::invalid(
            "transpose",
            format!("Recived {} axes for array with {} dimensions.", axes.len(), a.ndim()),
        ));
    }
    let mut perm = Vec::with_capacity(axes.len());
    for &ax in axes {
        let p = normalize_axis("transpose", ax, a.ndim())?;
        if perm.contains(&p) {
            return Err(Error::invalid("transpose", format!("Repeated axis {ax} in transpose.")));
        }
        perm.push(p);
    }
    transpose_perm(a, &perm)
}

/// `a` with its axes reversed.
pub fn transpose(a: &Array) -> Result<Array> {
    let perm: Vec<usize> = (0..a.ndim()).rev().collect();
    transpose_perm(a, &perm)
}

/// Moves axis `source` to position `destination`.
pub fn moveaxis(a: &Array, source: i32, destination: i32) -> Result<Array> {
    let s = normalize_axis("moveaxis", source, a.ndim())?;
    let d = normalize_axis("moveaxis", destination, a.ndim())?;
    let mut perm: Vec<usize> = (0..a.ndim()).filter(|&i| i != s).collect();
    perm.insert(d, s);
    transpose_perm(a, &perm)
}

/// Inserts a size-1 axis at `axis` (negative counts in the output rank).
pub fn expand_dims(a: &Array, axis: i32) -> Result<Array> {
    let ax = normalize_axis("expand_dims", axis, a.ndim() + 1)?;
    let mut shape = a.shape().to_vec();
    shape.insert(ax, 1);
    reshape_to(a, &shape)
}

/// Brings two operands' batch axes into line for a binary vmap rule: pads
/// ranks so both have the batch axis at the same position. Returns the
/// aligned arrays and the output batch axis.
pub(crate) fn align_batch_axes(
    a: &Array,
    aa: Option<usize>,
    b: &Array,
    bb: Option<usize>,
) -> Result<(Array, Array, Option<usize>)> {
    match (aa, bb) {
        (None, None) => Ok((a.clone(), b.clone(), None)),
        _ => {
            // Move batch axes to the front; an unbatched operand gets a leading 1.
            let prep = |x: &Array, ax: Option<usize>, rank: usize| -> Result<Array> {
                let x = match ax {
                    Some(ax) => moveaxis(x, ax as i32, 0)?,
                    None => expand_dims(x, 0)?,
                };
                // Pad the non-batch dims on the left to `rank`.
                let mut shape = vec![x.shape()[0]];
                shape.resize(1 + rank - (x.ndim() - 1), 1);
                shape.extend_from_slice(&x.shape()[1..]);
                reshape_to(&x, &shape)
            };
            let ra = a.ndim() - aa.is_some() as usize;
            let rb = b.ndim() - bb.is_some() as usize;
            let rank = ra.max(rb);
            Ok((prep(a, aa, rank)?, prep(b, bb, rank)?, Some(0)))
        }
    }
}

/// Strides that let a view of `shape`/`strides` be read as `new_shape` without
/// copying, or `None` when the dimensions being merged are not contiguous
/// with each other.
pub fn reshape_view_strides(shape: &[usize], strides: &[isize], new_shape: &[usize]) -> Option<Vec<isize>> {
    if numel(shape) == 0 {
        return Some(row_major_strides(new_shape));
    }
    let (os, ost): (Vec<usize>, Vec<isize>) =
        shape.iter().zip(strides).filter(|(&d, _)| d != 1).map(|(&d, &s)| (d, s)).unzip();
    let mut ns = vec![1isize; new_shape.len()];
    let (mut oi, mut ni) = (0, 0);
    while oi < os.len() && ni < new_shape.len() {
        let (mut np, mut op) = (new_shape[ni], os[oi]);
        let (mut nj, mut oj) = (ni + 1, oi + 1);
        while np != op {
            if np < op {
                np *= *new_shape.get(nj)?;
                nj += 1;
            } else {
                op *= *os.get(oj)?;
                oj += 1;
            }
        }
        for k in oi..oj - 1 {
            if ost[k] != ost[k + 1] * os[k + 1] as isize {
                return None;
            }
        }
        ns[nj - 1] = ost[oj - 1];
        for k in (ni..nj - 1).rev() {
            ns[k] = ns[k + 1] * new_shape[k + 1] as isize;
        }
        ni = nj;
        oi = oj;
    }
    Some(ns)
}

/// Merges axes `start_axis..=end_axis` into one (a 0-d array becomes shape `[1]`).
pub fn flatten(a: &Array, start_axis: i32, end_axis: i32) -> Result<Array> {
    if a.ndim() == 0 {
        return reshape_to(a, &[1]);
    }
    let s = normalize_axis("flatten", start_axis, a.ndim())?;
    let e = normalize_axis("flatten", end_axis, a.ndim())?;
    if s > e {
        return Err(Error::invalid("flatten", "start_axis must be less than or equal to end_axis"));
    }
    let mut shape = a.shape()[..s].to_vec();
    shape.push(numel(&a.shape()[s..=e]));
    shape.extend_from_slice(&a.shape()[e + 1..]);
    reshape_to(a, &shape)
}

/// Splits axis `axis` into `shape` (one entry may be -1).
pub fn unflatten(a: &Array, axis: i32, shape: &[i64]) -> Result<Array> {
    let ax = normalize_axis("unflatten", axis, a.ndim())?;
    let n = a.shape()[ax];
    let bad = |s: &[usize]| {
        Error::invalid("Unflatten", format!("Cannot unflatten axis {axis} with size {n} into shape {}.", fmt_shape(s)))
    };
    if shape.is_empty() {
        return Err(Error::invalid("Unflatten", "Shape to unflatten to cannot be empty."));
    }
    if shape.iter().filter(|&&d| d == -1).count() > 1 {
        return Err(Error::invalid("Unflatten", "Can only infer one dimension."));
    }
    if shape.iter().any(|&d| d < -1) {
        return Err(Error::invalid("Unflatten", "Dimensions must be non-negative or -1."));
    }
    let known: usize = shape.iter().filter(|&&d| d != -1).map(|&d| d as usize).product();
    let mut dims: Vec<usize> = shape.iter().map(|&d| if d == -1 { 1 } else { d as usize }).collect();
    if let Some(i) = shape.iter().position(|&d| d == -1) {
        if known == 0 || !n.is_multiple_of(known) {
            return Err(bad(&dims));
        }
        dims[i] = n / known;
    }
    if numel(&dims) != n {
        return Err(bad(&dims));
    }
    let mut out = a.shape()[..ax].to_vec();
    out.extend_from_slice(&dims);
    out.extend_from_slice(&a.shape()[ax + 1..]);
    reshape_to(a, &out)
}

/// Removes the listed size-1 axes (a view).
pub fn squeeze_axes(a: &Array, axes: &[i32]) -> Result<Array> {
    let mut drop = Vec::with_capacity(axes.len());
    for &ax in axes {
        let d = normalize_axis("squeeze", ax, a.ndim())?;
        if drop.contains(&d) {
            return Err(Error::invalid("squeeze", "Received duplicate axes."));
        }
        if a.shape()[d] != 1 {
            return Err(Error::invalid(
                "squeeze",
                format!("Cannot squeeze axis {ax} with size {} which is not equal to 1.", a.shape()[d]),
            ));
        }
        drop.push(d);
    }
    let shape: Vec<usize> = a.shape().iter().enumerate().filter(|(i, _)| !drop.contains(i)).map(|(_, &d)| d).collect();
    reshape_to(a, &shape)
}

/// Removes every size-1 axis (a view).
pub fn squeeze(a: &Array) -> Result<Array> {
    let shape: Vec<usize> = a.shape().iter().copied().filter(|&d| d != 1).collect();
    reshape_to(a, &shape)
}

/// Inserts size-1 axes at `axes` (positions in the output; negative allowed). A view.
pub fn expand_dims_axes(a: &Array, axes: &[i32]) -> Result<Array> {
    let out_nd = a.ndim() + axes.len();
    let mut pos = Vec::with_capacity(axes.len());
    for &ax in axes {
        let p = normalize_axis("expand_dims", ax, out_nd)?;
        if pos.contains(&p) {
            return Err(Error::invalid("expand_dims", "Received duplicate axes."));
        }
        pos.push(p);
    }
    let mut it = a.shape().iter();
    let shape: Vec<usize> =
        (0..out_nd).map(|i| if pos.contains(&i) { 1 } else { *it.next().expect("rank adds up") }).collect();
    reshape_to(a, &shape)
}

/// Swaps two axes (a view).
pub fn swapaxes(a: &Array, axis1: i32, axis2: i32) -> Result<Array> {
    let i = normalize_axis("swapaxes", axis1, a.ndim())?;
    let j = normalize_axis("swapaxes", axis2, a.ndim())?;
    let mut perm: Vec<usize> = (0..a.ndim()).collect();
    perm.swap(i, j);
    transpose_perm(a, &perm)
}

/// Broadcasts every array to their common shape (views).
pub fn broadcast_arrays(arrays: &[Array]) -> Result<Vec<Array>> {
    let shapes: Vec<&[usize]> = arrays.iter().map(|a| a.shape()).collect();
    let shape = crate::shape::broadcast_many(&shapes)?;
    arrays.iter().map(|a| broadcast_to(a, &shape)).collect()
}

/// Stacks same-shaped arrays along a new axis `axis` (dtypes promote).
pub fn stack(arrays: &[Array], axis: i32) -> Result<Array> {
    if arrays.is_empty() {
        return Err(Error::invalid("stack", "No arrays provided for stacking."));
    }
    if arrays.iter().any(|a| a.shape() != arrays[0].shape()) {
        return Err(Error::invalid("stack", "All arrays must have the same shape and dtype."));
    }
    let ax = normalize_axis("stack", axis, arrays[0].ndim() + 1)?;
    let dtype = super::slicing::common_dtype(arrays);
    let xs: Vec<Array> =
        arrays.iter().map(|a| expand_dims(&super::creation::astype(a, dtype)?, ax as i32)).collect::<Result<_>>()?;
    super::slicing::concat_raw(&xs, ax)
}

/// Repeats each element `repeats` times along `axis` (`None`: over the flattened array).
pub fn repeat(a: &Array, repeats: i64, axis: Option<i32>) -> Result<Array> {
    if repeats < 0 {
        return Err(Error::invalid("repeat", "Number of repeats cannot be negative"));
    }
    let Some(axis) = axis else {
        return repeat(&reshape(a, &[-1])?, repeats, Some(0));
    };
    let ax = normalize_axis("repeat", axis, a.ndim())?;
    let e = expand_dims(a, ax as i32 + 1)?;
    let mut shape = e.shape().to_vec();
    shape[ax + 1] = repeats as usize;
    let b = broadcast_to(&e, &shape)?;
    let mut out = a.shape().to_vec();
    out[ax] *= repeats as usize;
    reshape_to(&b, &out)
}

/// Tiles `a` by `reps` per axis (aligned to the trailing axes, as NumPy).
pub fn tile(a: &Array, reps: &[i64]) -> Result<Array> {
    if reps.iter().any(|&r| r < 0) {
        return Err(Error::invalid("broadcast_to", "Negative dimensions not allowed."));
    }
    let nd = a.ndim().max(reps.len());
    let mut shape = vec![1usize; nd - a.ndim()];
    shape.extend_from_slice(a.shape());
    let mut r = vec![1usize; nd - reps.len()];
    r.extend(reps.iter().map(|&x| x as usize));
    let inter: Vec<usize> = shape.iter().flat_map(|&d| [1, d]).collect();
    let target: Vec<usize> = shape.iter().zip(&r).flat_map(|(&d, &k)| [k, d]).collect();
    let x = reshape_to(a, &inter)?;
    let x = broadcast_to(&x, &target)?;
    let out: Vec<usize> = shape.iter().zip(&r).map(|(&d, &k)| d * k).collect();
    reshape_to(&x, &out)
}

/// How `pad` fills the new elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PadMode {
    /// A constant value.
    Constant,
    /// The nearest edge element.
    Edge,
    /// Mirror without repeating the edge (`reflect` in NumPy).
    Reflect,
    /// Mirror repeating the edge (`symmetric` in NumPy).
    Symmetric,
}

impl PadMode {
    /// Parses MLX's mode names.
    pub fn from_name(name: &str) -> Result<PadMode> {
        Ok(match name {
            "constant" => PadMode::Constant,
            "edge" => PadMode::Edge,
            "reflect" => PadMode::Reflect,
            "symmetric" => PadMode::Symmetric,
            other => return Err(Error::invalid("pad", format!("Invalid padding mode ({other}) passed to pad"))),
        })
    }
}

/// Pads `a` with `widths` (one `(before, after)` per axis, or a single pair
/// for every axis). Constant padding writes `a` into a filled output (the
/// value is cast to `a`'s dtype); the mirror modes assemble runs of slices.
pub fn pad(a: &Array, widths: &[(i64, i64)], mode: PadMode, value: impl Into<crate::dtype::Scalar>) -> Result<Array> {
    let nd = a.ndim();
    let widths: Vec<(i64, i64)> = match widths.len() {
        1 => vec![widths[0]; nd],
        n if n == nd => widths.to_vec(),
        _ => {
            return Err(Error::invalid(
                "pad",
                format!("Invalid number of padding sizes passed to pad with axes of size {nd}"),
            ))
        }
    };
    for (ax, &(lo, hi)) in widths.iter().enumerate() {
        if lo < 0 {
            return Err(Error::invalid(
                "pad",
                format!(
                    "Invalid low padding size ({lo}) passed to pad for axis {ax}. Padding sizes must be non-negative"
                ),
            ));
        }
        if hi < 0 {
            return Err(Error::invalid(
                "pad",
                format!(
                    "Invalid high padding size ({hi}) passed to pad for axis {ax}. Padding sizes must be non-negative"
                ),
            ));
        }
    }
    if widths.iter().all(|&(lo, hi)| lo == 0 && hi == 0) {
        return Ok(a.clone());
    }
    if mode == PadMode::Constant {
        let out: Vec<usize> = a.shape().iter().zip(&widths).map(|(&d, &(lo, hi))| d + (lo + hi) as usize).collect();
        let base = super::creation::full(&out, value, a.dtype())?;
        let starts: Vec<isize> = widths.iter().map(|&(lo, _)| lo as isize).collect();
        return super::slicing::slice_update_raw(&base, a, &starts, &vec![1; nd]);
    }
    let mut x = a.clone();
    for (ax, &(lo, hi)) in widths.iter().enumerate() {
        if lo == 0 && hi == 0 {
            continue;
        }
        let n = a.shape()[ax] as i64;
        if n == 0 {
            return Err(Error::invalid("pad", format!("Cannot pad empty axis {ax} with mode {mode:?}.")));
        }
        let src = |p: i64| -> i64 {
            let i = p - lo;
            match mode {
                PadMode::Edge => i.clamp(0, n - 1),
                PadMode::Reflect if n == 1 => 0,
                PadMode::Reflect => {
                    let per = 2 * (n - 1);
                    let m = i.rem_euclid(per);
                    if m >= n {
                        per - m
                    } else {
                        m
                    }
                }
                _ => {
                    let m = i.rem_euclid(2 * n);
                    if m >= n {
                        2 * n - 1 - m
                    } else {
                        m
                    }
                }
            }
        };
        // Group output positions into runs of step +1, -1 or 0 (a repeated element).
        let total = n + lo + hi;
        let mut pieces = Vec::new();
        let mut p = 0;
        while p < total {
            let s0 = src(p);
            let step = if p + 1 < total { src(p + 1) - s0 } else { 1 };
            let step = if step.abs() <= 1 { step } else { 1 };
            let mut len = 1;
            while p + len < total && src(p + len) == s0 + step * len {
                len += 1;
            }
            let piece = if step == 0 {
                let one = super::slicing::slice_axis(&x, ax, s0 as isize, 1, 1)?;
                let mut shape = one.shape().to_vec();
                shape[ax] = len as usize;
                broadcast_to(&one, &shape)?
            } else {
                super::slicing::slice_axis(&x, ax, s0 as isize, len as usize, step as isize)?
            };
            pieces.push(piece);
            p += len;
        }
        x = super::slicing::concat_raw(&pieces, ax)?;
    }
    Ok(x)
}

/// `a` with at least one dimension (0-d → `[1]`).
pub fn atleast_1d(a: &Array) -> Result<Array> {
    if a.ndim() == 0 {
        reshape_to(a, &[1])
    } else {
        Ok(a.clone())
    }
}

/// `a` with at least two dimensions (`[n]` → `[1, n]`).
pub fn atleast_2d(a: &Array) -> Result<Array> {
    match a.ndim() {
        0 => reshape_to(a, &[1, 1]),
        1 => reshape_to(a, &[1, a.shape()[0]]),
        _ => Ok(a.clone()),
    }
}

/// `a` with at least three dimensions (`[n]` → `[1, n, 1]`, `[m, n]` → `[m, n, 1]`).
pub fn atleast_3d(a: &Array) -> Result<Array> {
    match a.ndim() {
        0 => reshape_to(a, &[1, 1, 1]),
        1 => reshape_to(a, &[1, a.shape()[0], 1]),
        2 => reshape_to(a, &[a.shape()[0], a.shape()[1], 1]),
        _ => Ok(a.clone()),
    }
}

/// The diagonal of the `axis1`/`axis2` planes (a strided view; the diagonal
/// becomes the last axis).
#[derive(Debug, PartialEq)]
pub struct Diagonal {
    offset: i64,
    axis1: usize,
    axis2: usize,
}

fn diag_len(n1: usize, n2: usize, k: i64) -> usize {
    let (n1, n2) = (n1 as i64, n2 as i64);
    let l = if k >= 0 { n1.min(n2 - k) } else { (n1 + k).min(n2) };
    l.max(0) as usize
}

impl Primitive for Diagonal {
    fn name(&self) -> &'static str {
        "Diagonal"
    }
    fn eval(&self, _: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let d = inputs[0].data();
        let st = d.strides();
        let (s1, s2) = (st[self.axis1], st[self.axis2]);
        let mut strides: Vec<isize> =
            (0..st.len()).filter(|&i| i != self.axis1 && i != self.axis2).map(|i| st[i]).collect();
        strides.push(s1 + s2);
        let k = self.offset as isize;
        let shift = if k >= 0 { k * s2 } else { -k * s1 };
        let off = if outputs[0].shape.contains(&0) { d.offset() } else { d.offset() + shift };
        Ok(vec![Data::view(d.buffer().clone(), outputs[0].shape, off, strides)])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let x = &primals[0];
        let g = &cotangents[0];
        let (n1, n2) = (x.shape()[self.axis1], x.shape()[self.axis2]);
        let others: Vec<usize> = (0..x.ndim()).filter(|&i| i != self.axis1 && i != self.axis2).collect();
        let mut flat: Vec<usize> = others.iter().map(|&i| x.shape()[i]).collect();
        flat.push(n1 * n2);
        let z = super::creation::zeros(&flat, g.dtype())?;
        let k = self.offset as isize;
        let mut starts = vec![0isize; flat.len()];
        let mut steps = vec![1isize; flat.len()];
        *starts.last_mut().unwrap() = if k >= 0 { k } else { -k * n2 as isize };
        *steps.last_mut().unwrap() = n2 as isize + 1;
        let full = if g.size() == 0 { z } else { super::slicing::slice_update_raw(&z, g, &starts, &steps)? };
        let mut planes: Vec<usize> = others.iter().map(|&i| x.shape()[i]).collect();
        planes.extend([n1, n2]);
        let r = reshape_to(&full, &planes)?;
        let mut perm = others.clone();
        perm.extend([self.axis1, self.axis2]);
        let mut inv = vec![0; perm.len()];
        for (i, &p) in perm.iter().enumerate() {
            inv[p] = i;
        }
        Ok(vec![transpose_perm(&r, &inv)?])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![diagonal_raw(&tangents[0], self.offset, self.axis1, self.axis2)])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let Some(ax) = axes[0] else {
            return Ok((vec![diagonal_raw(&inputs[0], self.offset, self.axis1, self.axis2)], vec![None]));
        };
        let x = moveaxis(&inputs[0], ax as i32, 0)?;
        Ok((vec![diagonal_raw(&x, self.offset, self.axis1 + 1, self.axis2 + 1)], vec![Some(0)]))
    }
    crate::prim_common!();
}

fn diagonal_raw(a: &Array, offset: i64, axis1: usize, axis2: usize) -> Array {
    let mut shape: Vec<usize> = (0..a.ndim()).filter(|&i| i != axis1 && i != axis2).map(|i| a.shape()[i]).collect();
    shape.push(diag_len(a.shape()[axis1], a.shape()[axis2], offset));
    Array::from_op(shape, a.dtype(), Diagonal { offset, axis1, axis2 }, vec![a.clone()])
}

fn diag_axes(op: &str, a: &Array, axis1: i32, axis2: i32) -> Result<(usize, usize)> {
    if a.ndim() < 2 {
        return Err(Error::invalid(
            op,
            format!("Array must have at least two dimensions, but got {} dimensions.", a.ndim()),
        ));
    }
    let i = normalize_axis(op, axis1, a.ndim())?;
    let j = normalize_axis(op, axis2, a.ndim())?;
    if i == j {
        return Err(Error::invalid(op, "axis1 and axis2 cannot be the same axis"));
    }
    Ok((i, j))
}

/// The `offset` diagonal of the planes spanned by `axis1` and `axis2`, as the
/// last axis of the result (a view).
pub fn diagonal(a: &Array, offset: i64, axis1: i32, axis2: i32) -> Result<Array> {
    let (i, j) = diag_axes("diagonal", a, axis1, axis2)?;
    Ok(diagonal_raw(a, offset, i, j))
}

/// 1-d input: a square matrix with `a` on diagonal `k`. 2-d input: diagonal `k`.
pub fn diag(a: &Array, k: i64) -> Result<Array> {
    match a.ndim() {
        1 => {
            let len = a.shape()[0];
            let n = len + k.unsigned_abs() as usize;
            let z = super::creation::zeros(&[n * n], a.dtype())?;
            let start = if k >= 0 { k as isize } else { -k as isize * n as isize };
            let r = if len == 0 { z } else { super::slicing::slice_update_raw(&z, a, &[start], &[n as isize + 1])? };
            reshape_to(&r, &[n, n])
        }
        2 => diagonal(a, k, 0, 1),
        d => Err(Error::invalid("diag", format!("array must be 1-D or 2-D, got array with {d} dimensions."))),
    }
}

/// Sum of the `offset` diagonal over `axis1`/`axis2` (dtype as `sum`, or `dtype`).
pub fn trace(a: &Array, offset: i64, axis1: i32, axis2: i32, dtype: Option<crate::dtype::Dtype>) -> Result<Array> {
    let (i, j) = diag_axes("trace", a, axis1, axis2)?;
    let d = diagonal_raw(a, offset, i, j);
    let d = match dtype {
        Some(t) => super::creation::astype(&d, t)?,
        None => d,
    };
    super::reduce::sum(&d, -1, false)
}

/// A view of the row-major elements of the input with explicit shape,
/// strides and offset (validated to stay inside the input).
#[derive(Debug, PartialEq)]
pub struct AsStrided {
    shape: Vec<usize>,
    strides: Vec<isize>,
    offset: isize,
}

impl Primitive for AsStrided {
    fn name(&self) -> &'static str {
        "AsStrided"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let mut d = inputs[0].data();
        if !d.is_row_contiguous() {
            d = backend.copy(&inputs[0], &OutSpec { shape: inputs[0].shape(), dtype: inputs[0].dtype() })?;
        }
        let off = if numel(outputs[0].shape) == 0 { d.offset() } else { d.offset() + self.offset };
        Ok(vec![Data::view(d.buffer().clone(), outputs[0].shape, off, self.strides.clone())])
    }
    fn rules(&self) -> crate::primitive::Rules {
        crate::primitive::Rules {
            vjp: crate::primitive::Rule::No(
                "MLX defines none; overlapping windows would need a scatter-add of the cotangent",
            ),
            jvp: crate::primitive::Rule::Yes,
            vmap: crate::primitive::Rule::Yes,
        }
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let t = &tangents[0];
        let p = AsStrided { shape: self.shape.clone(), strides: self.strides.clone(), offset: self.offset };
        Ok(vec![Array::from_op(self.shape.clone(), t.dtype(), p, vec![t.clone()])])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let x = &inputs[0];
        let Some(ax) = axes[0] else {
            let p = AsStrided { shape: self.shape.clone(), strides: self.strides.clone(), offset: self.offset };
            return Ok((vec![Array::from_op(self.shape.clone(), x.dtype(), p, vec![x.clone()])], vec![None]));
        };
        let x = moveaxis(x, ax as i32, 0)?;
        let b = x.shape()[0];
        let per = (x.size() / b.max(1)) as isize;
        let mut shape = vec![b];
        shape.extend_from_slice(&self.shape);
        let mut strides = vec![per];
        strides.extend_from_slice(&self.strides);
        let p = AsStrided { shape: shape.clone(), strides, offset: self.offset };
        Ok((vec![Array::from_op(shape, x.dtype(), p, vec![x])], vec![Some(0)]))
    }
    fn is_equivalent(&self, other: &dyn Primitive) -> bool {
        other.as_any().downcast_ref::<Self>().is_some_and(|o| o == self)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A view of `a`'s row-major elements with `shape`, `strides` (elements, may be
/// negative or zero) and `offset`. Unlike MLX, every reachable element must lie
/// inside `a`: an out-of-bounds view is an error, never a read past the buffer.
pub fn as_strided(a: &Array, shape: &[usize], strides: &[i64], offset: i64) -> Result<Array> {
    if shape.len() != strides.len() {
        return Err(Error::invalid(
            "as_strided",
            format!("Shape {} needs {} strides, got {}.", fmt_shape(shape), shape.len(), strides.len()),
        ));
    }
    crate::shape::checked_numel("as_strided", shape)?;
    if numel(shape) > 0 {
        let (mut lo, mut hi) = (offset as i128, offset as i128);
        for (&d, &s) in shape.iter().zip(strides) {
            let span = (d as i128 - 1) * s as i128;
            if span < 0 {
                lo += span;
            } else {
                hi += span;
            }
        }
        if lo < 0 || hi >= a.size() as i128 {
            return Err(Error::out_of_range(
                "as_strided",
                format!(
                    "The view (shape {}, strides {:?}, offset {offset}) reaches elements {lo}..={hi} of an array of size {}.",
                    fmt_shape(shape),
                    strides,
                    a.size()
                ),
            ));
        }
    }
    let p = AsStrided {
        shape: shape.to_vec(),
        strides: strides.iter().map(|&s| s as isize).collect(),
        offset: offset as isize,
    };
    Ok(Array::from_op(shape.to_vec(), a.dtype(), p, vec![a.clone()]))
}

/// The row-major (or, with `allow_col_major`, column-major) layout of `a`: a copy
/// only when `a` is not laid out that way already.
#[derive(Debug, PartialEq)]
pub struct Contiguous {
    allow_col_major: bool,
}

impl Primitive for Contiguous {
    fn name(&self) -> &'static str {
        "Contiguous"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        let d = inputs[0].data();
        let x = &inputs[0];
        let col = self.allow_col_major && {
            let rev_shape: Vec<usize> = x.shape().iter().rev().copied().collect();
            let rev_strides: Vec<isize> = d.strides().iter().rev().copied().collect();
            crate::array::is_row_contiguous(&rev_shape, &rev_strides)
        };
        if d.is_row_contiguous() || col {
            return Ok(vec![d]);
        }
        Ok(vec![backend.copy(x, &outputs[0])?])
    }
    fn vjp(&self, _: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![cotangents[0].clone()])
    }
    fn jvp(&self, _: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        Ok(vec![tangents[0].clone()])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        Ok((vec![contiguous(&inputs[0], self.allow_col_major)], vec![axes[0]]))
    }
    crate::prim_common!();
}

/// `a` in a dense layout (row-major, or column-major when allowed).
pub fn contiguous(a: &Array, allow_col_major: bool) -> Array {
    Array::from_op(a.shape().to_vec(), a.dtype(), Contiguous { allow_col_major }, vec![a.clone()])
}

/// Shape and layout methods, as on MLX's array.
impl Array {
    /// Reshaped to `shape` (one entry may be -1).
    pub fn reshape(&self, shape: &[i64]) -> Result<Array> {
        reshape(self, shape)
    }
    /// Axes `start_axis..=end_axis` merged into one.
    pub fn flatten(&self, start_axis: i32, end_axis: i32) -> Result<Array> {
        flatten(self, start_axis, end_axis)
    }
    /// All size-1 axes removed.
    pub fn squeeze(&self) -> Result<Array> {
        squeeze(self)
    }
    /// The given size-1 axes removed.
    pub fn squeeze_axes(&self, axes: &[i32]) -> Result<Array> {
        squeeze_axes(self, axes)
    }
    /// A size-1 axis inserted at `axis`.
    pub fn expand_dims(&self, axis: i32) -> Result<Array> {
        expand_dims(self, axis)
    }
    /// Axes reversed (MLX's `a.T`).
    pub fn t(&self) -> Result<Array> {
        transpose(self)
    }
    /// Axes permuted by `axes`.
    pub fn transpose(&self, axes: &[i32]) -> Result<Array> {
        transpose_axes(self, axes)
    }
    /// Two axes swapped.
    pub fn swapaxes(&self, axis1: i32, axis2: i32) -> Result<Array> {
        swapaxes(self, axis1, axis2)
    }
    /// Axis `source` moved to `destination`.
    pub fn moveaxis(&self, source: i32, destination: i32) -> Result<Array> {
        moveaxis(self, source, destination)
    }
    /// Broadcast to `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Array> {
        broadcast_to(self, shape)
    }
    /// The diagonal of a 2-d array, or a 2-d array with this 1-d array on its `k`-th diagonal.
    pub fn diag(&self, k: i64) -> Result<Array> {
        diag(self, k)
    }
    /// The `offset` diagonal over `axis1` and `axis2` (a view).
    pub fn diagonal(&self, offset: i64, axis1: i32, axis2: i32) -> Result<Array> {
        diagonal(self, offset, axis1, axis2)
    }
    /// Split along `axis` into equal sections or at indices.
    pub fn split(&self, spec: super::SplitSpec, axis: i32) -> Result<Vec<Array>> {
        super::split(self, spec, axis)
    }
}
