//! Binary elementwise kernels (placeholder generic version through f64; to be replaced by SIMD kernels).

use super::strided::{alloc_or_donate, strides_for, Rows};
use crate::array::{Array, Data};
use crate::backend::BinaryOp;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;

fn f64_op(op: BinaryOp) -> Option<fn(f64, f64) -> f64> {
    use BinaryOp::*;
    let b = |c: bool| c as u8 as f64;
    let _ = b;
    Some(match op {
        Add => |x, y| x + y,
        Subtract => |x, y| x - y,
        Multiply => |x, y| x * y,
        Divide => |x, y| x / y,
        FloorDivide => |x, y| (x / y).floor(),
        Remainder => |x, y| x - y * (x / y).floor(),
        Power => f64::powf,
        Maximum => |x, y| if x.is_nan() || x > y { x } else { y },
        Minimum => |x, y| if x.is_nan() || x < y { x } else { y },
        LogAddExp => |x, y| {
            let m = x.max(y);
            if m == f64::NEG_INFINITY {
                m
            } else {
                m + ((x - m).exp() + (y - m).exp()).ln()
            }
        },
        ArcTan2 => f64::atan2,
        Equal => |x, y| (x == y) as u8 as f64,
        EqualNan => |x, y| (x == y || (x.is_nan() && y.is_nan())) as u8 as f64,
        NotEqual => |x, y| (x != y) as u8 as f64,
        Greater => |x, y| (x > y) as u8 as f64,
        GreaterEqual => |x, y| (x >= y) as u8 as f64,
        Less => |x, y| (x < y) as u8 as f64,
        LessEqual => |x, y| (x <= y) as u8 as f64,
        LogicalAnd => |x, y| (x != 0.0 && y != 0.0) as u8 as f64,
        LogicalOr => |x, y| (x != 0.0 || y != 0.0) as u8 as f64,
        _ => return None,
    })
}

pub fn binary(op: BinaryOp, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let f = f64_op(op).ok_or_else(|| Error::unsupported("binary", format!("{op:?} kernel not implemented")))?;
    let (ad, bd) = (a.data(), b.data());
    let od = alloc_or_donate(out, &[a, b])?;
    let sa = strides_for(a, &ad, out.shape);
    let sb = strides_for(b, &bd, out.shape);
    crate::dispatch_dtype!(a.dtype(), T => {
        crate::dispatch_dtype!(out.dtype, U => {
            let rows = Rows::new(out.shape, [&sa, &sb]);
            let (pa, pb) = (ad.ptr::<T>(), bd.ptr::<T>());
            let dst = od.ptr::<U>();
            let [ia, ib] = rows.inner_strides;
            let mut k = 0usize;
            for r in 0..rows.rows {
                let [oa, ob] = rows.offsets(r);
                for i in 0..rows.inner as isize {
                    // SAFETY: offsets are within the input views; k < numel(out).
                    unsafe {
                        let x = (*pa.offset(oa + i * ia)).to_f64();
                        let y = (*pb.offset(ob + i * ib)).to_f64();
                        *dst.add(k) = U::from_f64(f(x, y));
                    }
                    k += 1;
                }
            }
        })
    });
    Ok(od)
}
