//! Shape arithmetic: broadcasting, strides, axis normalisation, dimension collapsing.

use crate::error::{fmt_shape, Error, Result};

/// Row-major (C order) strides, in elements, for `shape`.
pub fn row_major_strides(shape: &[usize]) -> Vec<isize> {
    let mut strides = vec![0isize; shape.len()];
    let mut acc = 1isize;
    for i in (0..shape.len()).rev() {
        strides[i] = acc;
        acc *= shape[i].max(1) as isize;
    }
    strides
}

/// Number of elements of `shape` (1 for a 0-d shape).
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Element count with overflow checking, for shapes coming from users.
pub fn checked_numel(op: &str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n.checked_mul(16).is_some())
        .ok_or_else(|| Error::invalid(op, format!("Shape {} has too many elements.", fmt_shape(shape))))
}

/// The broadcast of two shapes, NumPy rules.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::invalid(
                "broadcast_shapes",
                format!("Shapes {} and {} cannot be broadcast.", fmt_shape(a), fmt_shape(b)),
            ));
        };
    }
    Ok(out)
}

/// The broadcast of several shapes.
pub fn broadcast_many(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let mut out: Vec<usize> = Vec::new();
    for s in shapes {
        out = broadcast_shapes(&out, s)?;
    }
    Ok(out)
}

/// Normalises a possibly negative axis for an array of rank `ndim`.
pub fn normalize_axis(op: &str, axis: i32, ndim: usize) -> Result<usize> {
    let n = ndim as i64;
    let a = axis as i64;
    if a < -n || a >= n {
        return Err(Error::out_of_range(op, format!("Axis {axis} is out of bounds for array with {ndim} dimensions.")));
    }
    Ok(if a < 0 { (a + n) as usize } else { a as usize })
}

/// Normalises, sorts and de-duplicates-checks a list of axes.
pub fn normalize_axes(op: &str, axes: &[i32], ndim: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let ax = normalize_axis(op, a, ndim)?;
        if out.contains(&ax) {
            return Err(Error::invalid(op, format!("Received duplicate axis {a}.")));
        }
        out.push(ax);
    }
    out.sort_unstable();
    Ok(out)
}

/// Collapses adjacent dimensions that are contiguous in every one of `strides`
/// (all with shape `shape`), so kernels loop over as few dimensions as possible.
/// Size-1 dimensions are dropped. Returns the collapsed shape and strides.
pub fn collapse_dims(shape: &[usize], strides: &[&[isize]]) -> (Vec<usize>, Vec<Vec<isize>>) {
    let mut out_shape: Vec<usize> = Vec::with_capacity(shape.len());
    let mut out_strides: Vec<Vec<isize>> = vec![Vec::with_capacity(shape.len()); strides.len()];
    for d in 0..shape.len() {
        if shape[d] == 1 {
            continue;
        }
        if let Some(&last) = out_shape.last() {
            let mergeable =
                strides.iter().zip(out_strides.iter()).all(|(s, o)| *o.last().unwrap() == s[d] * shape[d] as isize);
            let _ = last;
            if mergeable {
                let k = out_shape.len() - 1;
                out_shape[k] *= shape[d];
                for (o, s) in out_strides.iter_mut().zip(strides) {
                    *o.last_mut().unwrap() = s[d];
                }
                continue;
            }
        }
        out_shape.push(shape[d]);
        for (o, s) in out_strides.iter_mut().zip(strides) {
            o.push(s[d]);
        }
    }
    (out_shape, out_strides)
}

/// Strides of `shape` broadcast from an array with `in_shape` and `in_strides`
/// (0 where a dimension is broadcast or added).
pub fn broadcast_strides(in_shape: &[usize], in_strides: &[isize], out_shape: &[usize]) -> Vec<isize> {
    let off = out_shape.len() - in_shape.len();
    (0..out_shape.len()).map(|i| if i < off || in_shape[i - off] == 1 { 0 } else { in_strides[i - off] }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shapes(&[2, 1], &[1, 3]).unwrap(), vec![2, 3]);
        assert_eq!(broadcast_shapes(&[3], &[4, 1]).unwrap(), vec![4, 3]);
        assert_eq!(broadcast_shapes(&[], &[2]).unwrap(), vec![2]);
        assert_eq!(broadcast_shapes(&[0], &[1]).unwrap(), vec![0]);
        let e = broadcast_shapes(&[2, 3], &[4]).unwrap_err();
        assert_eq!(e.to_string(), "[broadcast_shapes] Shapes (2,3) and (4) cannot be broadcast.");
    }

    #[test]
    fn collapse_merges_contiguous_runs() {
        let s = row_major_strides(&[2, 3, 4]);
        let (sh, st) = collapse_dims(&[2, 3, 4], &[&s]);
        assert_eq!(sh, vec![24]);
        assert_eq!(st[0], vec![1]);
        let t = vec![1isize, 2, 6]; // a transpose
        let (sh, _) = collapse_dims(&[2, 3, 4], &[&s, &t]);
        assert_eq!(sh, vec![2, 3, 4]);
    }

    #[test]
    fn axis_errors() {
        assert_eq!(normalize_axis("sum", -1, 3).unwrap(), 2);
        assert!(normalize_axis("sum", 3, 3).is_err());
        assert!(normalize_axes("sum", &[0, -2], 2).is_err());
    }
}
