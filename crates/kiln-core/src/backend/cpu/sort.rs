//! Sorting along one axis (values; NaNs last), parallel over lines.

use super::reduce::{contiguous, slice_of, split_at_axis};
use super::simd::{parallel_for, SendPtr};
use super::strided::alloc_out;
use crate::array::{Array, Data};
use crate::dtype::{Element, Kind};
use crate::error::Result;
use crate::primitive::OutSpec;
use std::cmp::Ordering;

/// Total order used for sorting: numeric, NaN after everything.
fn order<T: Element>(a: &T, b: &T) -> Ordering {
    match T::DTYPE.kind() {
        Kind::Float => {
            let (x, y) = (a.to_f64(), b.to_f64());
            x.partial_cmp(&y).unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
        }
        Kind::Complex => {
            let (x, y) = (a.to_c64(), b.to_c64());
            (x.re, x.im)
                .partial_cmp(&(y.re, y.im))
                .unwrap_or_else(|| (x.re.is_nan() || x.im.is_nan()).cmp(&(y.re.is_nan() || y.im.is_nan())))
        }
        Kind::Unsigned => a.to_u64().cmp(&b.to_u64()),
        Kind::Signed | Kind::Bool => a.to_i64().cmp(&b.to_i64()),
    }
}

fn sort_lines<T: Element>(src: &[T], dst: SendPtr<T>, outer: usize, n: usize, inner: usize) {
    parallel_for(outer * inner, n * 8, |range| {
        let mut line: Vec<T> = Vec::with_capacity(n);
        for t in range {
            let (o, i) = (t / inner, t % inner);
            let base = o * n * inner + i;
            line.clear();
            line.extend((0..n).map(|k| src[base + k * inner]));
            line.sort_by(order::<T>);
            for (k, &v) in line.iter().enumerate() {
                // SAFETY: line (o, i) owns these output positions.
                unsafe { *dst.get().add(base + k * inner) = v };
            }
        }
    });
}

/// `x` sorted along `axis`.
pub fn sort(x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
    let d = contiguous(x)?;
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    if x.size() == 0 {
        return Ok(data);
    }
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    crate::dispatch_dtype!(x.dtype(), T => sort_lines::<T>(slice_of::<T>(&d, x.size()), SendPtr(data.ptr::<T>()), outer, n, inner));
    Ok(data)
}
