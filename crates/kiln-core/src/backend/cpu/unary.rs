//! Unary elementwise kernels (placeholder generic version; to be replaced by SIMD kernels).

use super::strided::{alloc_or_donate, Rows};
use crate::array::{Array, Data};
use crate::backend::UnaryOp;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;

pub fn unary(op: UnaryOp, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let xd = x.data();
    let od = alloc_or_donate(out, &[x])?;
    crate::dispatch_dtype!(x.dtype(), T => {
        let f: fn(f64) -> f64 = match op {
            UnaryOp::Exp => f64::exp,
            UnaryOp::Negative => |v| -v,
            _ => return Err(Error::unsupported("unary", format!("{op:?} kernel not implemented"))),
        };
        let rows = Rows::new(x.shape(), [xd.strides()]);
        let src = xd.ptr::<T>();
        let dst = od.ptr::<T>();
        let mut k = 0usize;
        for r in 0..rows.rows {
            let [o] = rows.offsets(r);
            for i in 0..rows.inner as isize {
                // SAFETY: offsets are within the input view; k < numel(out).
                unsafe { *dst.add(k) = T::from_f64(f((*src.offset(o + i * rows.inner_strides[0])).to_f64())) };
                k += 1;
            }
        }
    });
    Ok(od)
}
