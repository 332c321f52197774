//! Shape and layout ops. Reshape (of contiguous data), transpose and broadcast
//! are views: they share the input buffer with new strides.

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
        if known == 0 || a.size() % known != 0 {
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
        padded.extend(std::iter::repeat_n(1, self.shape.len() - rest.len()));
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
                shape.extend(std::iter::repeat_n(1, rank - (x.ndim() - 1)));
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
