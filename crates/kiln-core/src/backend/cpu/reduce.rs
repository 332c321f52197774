//! Reduction kernels (placeholder generic version; to be replaced by SIMD kernels).

use super::strided::alloc_out;
use crate::array::{Array, Data};
use crate::backend::ReduceOp;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use crate::shape::numel;

pub fn reduce(op: ReduceOp, x: &Array, axes: &[usize], out: &OutSpec<'_>) -> Result<Data> {
    if op != ReduceOp::Sum {
        return Err(Error::unsupported("reduce", format!("{op:?} kernel not implemented")));
    }
    let v = crate::dispatch_dtype!(x.dtype(), T => {
        x.to_vec::<T>()?.into_iter().map(|e| e.to_f64()).collect::<Vec<f64>>()
    });
    let shape = x.shape();
    let n_out = numel(out.shape);
    let mut acc = vec![0f64; n_out];
    let ostrides = crate::shape::row_major_strides(out.shape);
    for (i, val) in v.iter().enumerate() {
        let mut rem = i;
        let mut o = 0isize;
        for d in (0..shape.len()).rev() {
            let idx = rem % shape[d];
            rem /= shape[d];
            if !axes.contains(&d) {
                o += idx as isize * ostrides[d];
            }
        }
        acc[o as usize] += val;
    }
    let buf = alloc_out(out)?;
    crate::dispatch_dtype!(out.dtype, T => {
        let p = buf.as_ptr() as *mut T;
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: i < n_out elements.
            unsafe { *p.add(i) = T::from_f64(*a) };
        }
    });
    Ok(Data::contiguous(buf, out.shape))
}
