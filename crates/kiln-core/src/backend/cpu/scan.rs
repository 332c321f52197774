//! Cumulative scan kernels (sum, prod, max, min, logaddexp) along one axis.
//!
//! The input is viewed as (outer, n, inner). With inner = 1 each line is a
//! sequential loop; otherwise a running row of `inner` accumulators is
//! combined with each successive row (vectorised), parallel over outer blocks
//! and column chunks. Values accumulate in the reduction accumulator type and
//! are cast back to the (unchanged) dtype, so integer scans wrap.

use super::reduce::{contiguous, slice_of, Bounded, Combine, Lift, MaxC, MinC, Num, ProdC, SumC};
use super::simd::{parallel_for, SendPtr};
use super::strided::alloc_out;
use crate::array::{Array, Data};
use crate::backend::ScanOp;
use crate::dtype::{bf16, c64, f16, Dtype, Element};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use std::marker::PhantomData;

/// log(e^a + e^b), stable, with -inf as the identity.
pub(crate) struct LogAddExpC;
macro_rules! lae {
    ($t:ty) => {
        impl Combine<$t> for LogAddExpC {
            #[inline(always)]
            fn comb(a: $t, b: $t) -> $t {
                if a.is_nan() || b.is_nan() {
                    return <$t>::NAN;
                }
                let (hi, lo) = if a > b { (a, b) } else { (b, a) };
                if lo == <$t>::NEG_INFINITY || hi == <$t>::INFINITY {
                    return hi;
                }
                hi + (lo - hi).exp().ln_1p()
            }
        }
    };
}
lae!(f32);
lae!(f64);

crate::multiversion! {
    fn scan_cols<T, A: Num, C: Combine<A>, O: Element>(src: &[T], dst: &mut [O], dims: (usize, usize, usize), flags: (bool, bool), id: A, _c: PhantomData<C>) where T: Lift<A> {
        let (n, stride, width) = dims;
        let (rev, incl) = flags;
        let mut acc = vec![id; width];
        for s in 0..n {
            let k = if rev { n - 1 - s } else { s };
            let row = &src[k * stride..k * stride + width];
            let out = &mut dst[k * stride..k * stride + width];
            if incl {
                for ((a, &x), o) in acc.iter_mut().zip(row).zip(out.iter_mut()) {
                    *a = C::comb(*a, x.lift());
                    *o = O::cast_from(*a);
                }
            } else {
                for ((a, &x), o) in acc.iter_mut().zip(row).zip(out.iter_mut()) {
                    *o = O::cast_from(*a);
                    *a = C::comb(*a, x.lift());
                }
            }
        }
    }
}

fn scan_typed<T, A: Num, C: Combine<A>>(
    src: &[T],
    dst: SendPtr<T>,
    shape: (usize, usize, usize),
    rev: bool,
    incl: bool,
    id: A,
) where
    T: Lift<A> + Element,
{
    let (outer, n, inner) = shape;
    const CHUNK: usize = 512;
    let per = inner.div_ceil(CHUNK).max(1);
    parallel_for(outer * per, n * CHUNK.min(inner), |range| {
        for t in range {
            let (o, c) = (t / per, t % per);
            let (c0, c1) = (c * CHUNK, ((c + 1) * CHUNK).min(inner));
            let base = o * n * inner + c0;
            let len = (n - 1) * inner + (c1 - c0);
            // SAFETY: task (o, c) reads and writes only columns c0..c1 of block o.
            let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(base), len) };
            scan_cols::<T, A, C, T>(&src[base..base + len], d, (n, inner, c1 - c0), (rev, incl), id, PhantomData);
        }
    });
}

fn scan_op<T, A: Num>(op: ScanOp, src: &[T], dst: SendPtr<T>, shape: (usize, usize, usize), rev: bool, incl: bool)
where
    T: Lift<A> + Element + Bounded,
{
    match op {
        ScanOp::Sum => scan_typed::<T, A, SumC>(src, dst, shape, rev, incl, A::ZERO),
        ScanOp::Prod => scan_typed::<T, A, ProdC>(src, dst, shape, rev, incl, A::ONE),
        ScanOp::Max => scan_typed::<T, A, MaxC>(src, dst, shape, rev, incl, T::lowest().lift()),
        ScanOp::Min => scan_typed::<T, A, MinC>(src, dst, shape, rev, incl, T::highest().lift()),
        ScanOp::LogAddExp => unreachable!("logaddexp scans are dispatched separately"),
    }
}

/// Cumulative scan of `x` along `axis` into an output of the same dtype.
pub fn scan(op: ScanOp, x: &Array, axis: usize, reverse: bool, inclusive: bool, out: &OutSpec<'_>) -> Result<Data> {
    let d = contiguous(x)?;
    let buf = alloc_out(out)?;
    let data = Data::contiguous(buf, out.shape);
    if x.size() == 0 {
        return Ok(data);
    }
    let shape = super::reduce::split_at_axis(x.shape(), axis);
    let n = x.size();
    macro_rules! go {
        ($t:ty, $a:ty) => {
            scan_op::<$t, $a>(op, slice_of::<$t>(&d, n), SendPtr(data.ptr::<$t>()), shape, reverse, inclusive)
        };
    }
    if op == ScanOp::LogAddExp {
        macro_rules! lse {
            ($t:ty, $a:ty) => {
                scan_typed::<$t, $a, LogAddExpC>(
                    slice_of::<$t>(&d, n),
                    SendPtr(data.ptr::<$t>()),
                    shape,
                    reverse,
                    inclusive,
                    <$a>::NEG_INFINITY,
                )
            };
        }
        match x.dtype() {
            Dtype::F16 => lse!(f16, f32),
            Dtype::BF16 => lse!(bf16, f32),
            Dtype::F32 => lse!(f32, f32),
            Dtype::F64 => lse!(f64, f64),
            d => return Err(Error::unsupported("logcumsumexp", format!("No CPU kernel for {d}."))),
        }
        return Ok(data);
    }
    match x.dtype() {
        Dtype::Bool => go!(bool, i64),
        Dtype::I8 => go!(i8, i64),
        Dtype::I16 => go!(i16, i64),
        Dtype::I32 => go!(i32, i64),
        Dtype::I64 => go!(i64, i64),
        Dtype::U8 => go!(u8, u64),
        Dtype::U16 => go!(u16, u64),
        Dtype::U32 => go!(u32, u64),
        Dtype::U64 => go!(u64, u64),
        Dtype::F16 => go!(f16, f32),
        Dtype::BF16 => go!(bf16, f32),
        Dtype::F32 => go!(f32, f32),
        Dtype::F64 => go!(f64, f64),
        Dtype::C64 => go!(c64, c64),
    }
    Ok(data)
}
