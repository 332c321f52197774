//! Unary elementwise kernels (placeholder generic version through f64; to be replaced by SIMD kernels).

use super::strided::{alloc_or_donate, Rows};
use crate::array::{Array, Data};
use crate::backend::UnaryOp;
use crate::dtype::Element;
use crate::error::{Error, Result};
use crate::primitive::OutSpec;

fn f64_op(op: UnaryOp) -> Option<fn(f64) -> f64> {
    use UnaryOp::*;
    Some(match op {
        Abs => f64::abs,
        Negative => |v| -v,
        Sign => |v| {
            if v > 0.0 {
                1.0
            } else if v < 0.0 {
                -1.0
            } else {
                0.0
            }
        },
        Floor => f64::floor,
        Ceil => f64::ceil,
        Round => f64::round_ties_even,
        Sqrt => f64::sqrt,
        Rsqrt => |v| 1.0 / v.sqrt(),
        Square => |v| v * v,
        Reciprocal => |v| 1.0 / v,
        Exp => f64::exp,
        Expm1 => f64::exp_m1,
        Log => f64::ln,
        Log2 => f64::log2,
        Log10 => f64::log10,
        Log1p => f64::ln_1p,
        Sin => f64::sin,
        Cos => f64::cos,
        Tan => f64::tan,
        ArcSin => f64::asin,
        ArcCos => f64::acos,
        ArcTan => f64::atan,
        Sinh => f64::sinh,
        Cosh => f64::cosh,
        Tanh => f64::tanh,
        ArcSinh => f64::asinh,
        ArcCosh => f64::acosh,
        ArcTanh => f64::atanh,
        Sigmoid => |v| 1.0 / (1.0 + (-v).exp()),
        Conjugate | Real => |v| v,
        Imag => |_| 0.0,
        IsNan => |v| v.is_nan() as u8 as f64,
        IsInf => |v| v.is_infinite() as u8 as f64,
        IsPosInf => |v| (v == f64::INFINITY) as u8 as f64,
        IsNegInf => |v| (v == f64::NEG_INFINITY) as u8 as f64,
        IsFinite => |v| v.is_finite() as u8 as f64,
        LogicalNot => |v| (v == 0.0) as u8 as f64,
        _ => return None,
    })
}

pub fn unary(op: UnaryOp, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let f = f64_op(op).ok_or_else(|| Error::unsupported("unary", format!("{op:?} kernel not implemented")))?;
    let xd = x.data();
    let od = alloc_or_donate(out, &[x])?;
    crate::dispatch_dtype!(x.dtype(), T => {
        crate::dispatch_dtype!(out.dtype, U => {
            let rows = Rows::new(x.shape(), [xd.strides()]);
            let src = xd.ptr::<T>();
            let dst = od.ptr::<U>();
            let mut k = 0usize;
            for r in 0..rows.rows {
                let [o] = rows.offsets(r);
                for i in 0..rows.inner as isize {
                    // SAFETY: offsets are within the input view; k < numel(out).
                    unsafe { *dst.add(k) = U::from_f64(f((*src.offset(o + i * rows.inner_strides[0])).to_f64())) };
                    k += 1;
                }
            }
        })
    });
    Ok(od)
}
