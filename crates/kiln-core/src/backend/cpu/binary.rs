//! Binary elementwise kernels (placeholder generic version; to be replaced by SIMD kernels).

use super::strided::{alloc_or_donate, strides_for, Rows};
use crate::array::{Array, Data};
use crate::backend::BinaryOp;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;

pub fn binary(op: BinaryOp, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let (ad, bd) = (a.data(), b.data());
    let od = alloc_or_donate(out, &[a, b])?;
    let sa = strides_for(a, &ad, out.shape);
    let sb = strides_for(b, &bd, out.shape);
    crate::dispatch_dtype!(a.dtype(), T => {
        let f: fn(f64, f64) -> f64 = match op {
            BinaryOp::Add => |x, y| x + y,
            BinaryOp::Subtract => |x, y| x - y,
            BinaryOp::Multiply => |x, y| x * y,
            _ => return Err(Error::unsupported("binary", format!("{op:?} kernel not implemented"))),
        };
        let rows = Rows::new(out.shape, [&sa, &sb]);
        let (pa, pb) = (ad.ptr::<T>(), bd.ptr::<T>());
        let dst = od.ptr::<T>();
        let [ia, ib] = rows.inner_strides;
        let mut k = 0usize;
        for r in 0..rows.rows {
            let [oa, ob] = rows.offsets(r);
            for i in 0..rows.inner as isize {
                // SAFETY: offsets are within the input views; k < numel(out).
                unsafe {
                    let x = (*pa.offset(oa + i * ia)).to_f64();
                    let y = (*pb.offset(ob + i * ib)).to_f64();
                    *dst.add(k) = T::from_f64(f(x, y));
                }
                k += 1;
            }
        }
    });
    Ok(od)
}
