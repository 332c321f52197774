//! Unary elementwise kernels.
//!
//! Every op maps one input element to one output element, so a single driver
//! ([`apply`]) handles layout for all of them: contiguous inputs are mapped
//! chunk by chunk with a multiversioned (SIMD) loop, split across threads for
//! large arrays; strided inputs are gathered row by row into a small stack
//! buffer and mapped from there. The output reuses the input's buffer when it
//! is donated (then each chunk is staged through the stack buffer first, so
//! no slice ever aliases another). f32 transcendental functions come from
//! [`super::math`] (branch-free, so they vectorise); f16/bf16 are computed in
//! f32 chunks; f64 uses `std`/`libm`; complex64 uses `num_complex`.

use super::math as m;
use super::simd::{parallel_for, SendPtr};
use super::strided::{alloc_or_donate, Rows};
use crate::array::{Array, Data};
use crate::backend::UnaryOp;
use crate::dtype::{bf16, c64, f16, Dtype, Element};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use crate::shape::numel;
use half::slice::HalfFloatSliceExt;

/// Elements per staged chunk.
const CH: usize = 256;

crate::multiversion! {
    fn map_slice<S: Copy, D: Copy, F: Fn(S) -> D>(src: &[S], dst: &mut [D], f: F) {
        for (o, &x) in dst.iter_mut().zip(src) {
            *o = f(x);
        }
    }
}

crate::multiversion! {
    fn map_f32_inplace<F: Fn(f32) -> f32>(buf: &mut [f32], f: F) {
        for v in buf.iter_mut() {
            *v = f(*v);
        }
    }
}

/// A per-chunk correction applied after the vectorised map (for the rare
/// inputs where the branch-free formula is not accurate enough): called with
/// the source and result of each chunk.
type Fix<S, D> = Option<fn(&[S], &mut [D])>;

#[inline(always)]
fn apply_fix<S: Copy, D: Copy>(fix: Fix<S, D>, src: &[S], dst: &mut [D]) {
    if let Some(fx) = fix {
        fx(src, dst)
    }
}

crate::multiversion! {
    fn count_big(src: &[f32]) -> u32 {
        src.iter().map(|x| (x.abs() > m::TRIG_BIG) as u32).sum()
    }
}

/// Recomputes sin/cos/tan of huge arguments (|x| > 1e6) with `std` in f64.
fn trig_fixup(src: &[f32], dst: &mut [f32], f: fn(f64) -> f64) {
    if count_big(src) == 0 {
        return;
    }
    for (o, &x) in dst.iter_mut().zip(src) {
        if m::trig_needs_fixup(x) {
            *o = f(x as f64) as f32;
        }
    }
}

/// Maps `f` over the elements of `x` (data `xd`, shape `shape`) into the
/// row-major output `od`. `cost` is a rough per-element weight for threading.
fn apply<S: Element, D: Element, F>(xd: &Data, shape: &[usize], od: &Data, cost: usize, f: F, fix: Fix<S, D>)
where
    F: Fn(S) -> D + Copy + Send + Sync,
{
    let n = numel(shape);
    if n == 0 {
        return;
    }
    let src = SendPtr(xd.ptr::<S>());
    let dst = SendPtr(od.ptr::<D>());
    if xd.is_row_contiguous() {
        let alias = std::ptr::eq(src.get() as *const u8, dst.get() as *const u8);
        parallel_for(n, cost, |r| {
            let mut buf = [S::default(); CH];
            let mut i = r.start;
            while i < r.end {
                let len = CH.min(r.end - i);
                if alias {
                    // SAFETY: elements i..i+len lie inside the n-element input; the
                    // source slice is dropped before the (aliasing) output slice is made.
                    unsafe { buf[..len].copy_from_slice(std::slice::from_raw_parts(src.get().add(i), len)) };
                    // SAFETY: i..i+len is inside the n-element output and only this chunk writes it.
                    let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(i), len) };
                    map_slice(&buf[..len], d, f);
                    apply_fix(fix, &buf[..len], d);
                } else {
                    // SAFETY: distinct buffers; ranges are within both and disjoint across chunks.
                    let (s, d) = unsafe {
                        (
                            std::slice::from_raw_parts(src.get().add(i), len),
                            std::slice::from_raw_parts_mut(dst.get().add(i), len),
                        )
                    };
                    map_slice(s, d, f);
                    apply_fix(fix, s, d);
                }
                i += len;
            }
        });
    } else {
        let rows = Rows::new(shape, [xd.strides()]);
        let inner = rows.inner;
        let st = rows.inner_strides[0];
        parallel_for(rows.rows, inner * cost, |range| {
            let mut buf = [S::default(); CH];
            for row in range {
                let [o] = rows.offsets(row);
                let mut c = 0;
                while c < inner {
                    let len = CH.min(inner - c);
                    for (k, b) in buf[..len].iter_mut().enumerate() {
                        // SAFETY: the offset is a position of the input view.
                        *b = unsafe { *src.get().offset(o + (c + k) as isize * st) };
                    }
                    // SAFETY: row-major output positions of this row; rows are disjoint.
                    let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(row * inner + c), len) };
                    map_slice(&buf[..len], d, f);
                    apply_fix(fix, &buf[..len], d);
                    c += len;
                }
            }
        });
    }
}

/// Runs an f32 function on a half-precision array (in and out of the same type).
fn apply_half<H, F>(xd: &Data, shape: &[usize], od: &Data, cost: usize, f: F, fix: Fix<f32, f32>)
where
    H: Element,
    [H]: HalfFloatSliceExt,
    F: Fn(f32) -> f32 + Copy + Send + Sync,
{
    let n = numel(shape);
    if n == 0 {
        return;
    }
    let src = SendPtr(xd.ptr::<H>());
    let dst = SendPtr(od.ptr::<H>());
    let run = |s: &[H], buf: &mut [f32]| {
        s.convert_to_f32_slice(buf);
        let orig: [f32; CH] =
            if fix.is_some() { std::array::from_fn(|k| buf.get(k).copied().unwrap_or(0.0)) } else { [0.0; CH] };
        map_f32_inplace(buf, f);
        apply_fix(fix, &orig[..buf.len()], buf);
    };
    if xd.is_row_contiguous() {
        parallel_for(n, cost, |r| {
            let mut buf = [0f32; CH];
            let mut i = r.start;
            while i < r.end {
                let len = CH.min(r.end - i);
                {
                    // SAFETY: i..i+len is inside the input; the slice ends before the output slice is made.
                    let s = unsafe { std::slice::from_raw_parts(src.get().add(i), len) };
                    run(s, &mut buf[..len]);
                }
                // SAFETY: i..i+len is inside the output and only this chunk writes it.
                let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(i), len) };
                d.convert_from_f32_slice(&buf[..len]);
                i += len;
            }
        });
    } else {
        let rows = Rows::new(shape, [xd.strides()]);
        let inner = rows.inner;
        let st = rows.inner_strides[0];
        parallel_for(rows.rows, inner * cost, |range| {
            let mut hb = [H::default(); CH];
            let mut buf = [0f32; CH];
            for row in range {
                let [o] = rows.offsets(row);
                let mut c = 0;
                while c < inner {
                    let len = CH.min(inner - c);
                    for (k, b) in hb[..len].iter_mut().enumerate() {
                        // SAFETY: the offset is a position of the input view.
                        *b = unsafe { *src.get().offset(o + (c + k) as isize * st) };
                    }
                    run(&hb[..len], &mut buf[..len]);
                    // SAFETY: row-major output positions of this row; rows are disjoint.
                    let d = unsafe { std::slice::from_raw_parts_mut(dst.get().add(row * inner + c), len) };
                    d.convert_from_f32_slice(&buf[..len]);
                    c += len;
                }
            }
        });
    }
}

/// The f32 version of a float op (also used for f16/bf16), with its cost
/// and optional fix-up. Calls `$body` with `$f` bound to the function.
macro_rules! with_f32_fn {
    ($op:expr, $f:ident, $cost:ident, $fix:ident => $body:expr) => {{
        use UnaryOp::*;
        let $fix: Fix<f32, f32> = None;
        match $op {
            Abs => {
                let $cost = 1;
                let $f = |v: f32| v.abs();
                $body
            }
            Negative => {
                let $cost = 1;
                let $f = |v: f32| -v;
                $body
            }
            Sign => {
                let $cost = 1;
                let $f = |v: f32| (v > 0.0) as u8 as f32 - (v < 0.0) as u8 as f32;
                $body
            }
            Floor => {
                let $cost = 1;
                let $f = |v: f32| v.floor();
                $body
            }
            Ceil => {
                let $cost = 1;
                let $f = |v: f32| v.ceil();
                $body
            }
            Round => {
                let $cost = 1;
                let $f = |v: f32| v.round_ties_even();
                $body
            }
            Trunc => {
                let $cost = 1;
                let $f = |v: f32| v.trunc();
                $body
            }
            Sqrt => {
                let $cost = 2;
                let $f = |v: f32| v.sqrt();
                $body
            }
            Rsqrt => {
                let $cost = 2;
                let $f = |v: f32| 1.0 / v.sqrt();
                $body
            }
            Square => {
                let $cost = 1;
                let $f = |v: f32| v * v;
                $body
            }
            Reciprocal => {
                let $cost = 2;
                let $f = |v: f32| 1.0 / v;
                $body
            }
            Exp => {
                let $cost = 4;
                let $f = m::exp_f32;
                $body
            }
            Expm1 => {
                let $cost = 4;
                let $f = m::expm1_f32;
                $body
            }
            Log => {
                let $cost = 4;
                let $f = m::log_f32;
                $body
            }
            Log2 => {
                let $cost = 4;
                let $f = m::log2_f32;
                $body
            }
            Log10 => {
                let $cost = 4;
                let $f = m::log10_f32;
                $body
            }
            Log1p => {
                let $cost = 6;
                let $f = m::log1p_f32;
                $body
            }
            Sin => {
                let $cost = 6;
                let $fix: Fix<f32, f32> = Some(|s, d| trig_fixup(s, d, f64::sin));
                let $f = m::sin_f32;
                $body
            }
            Cos => {
                let $cost = 6;
                let $fix: Fix<f32, f32> = Some(|s, d| trig_fixup(s, d, f64::cos));
                let $f = m::cos_f32;
                $body
            }
            Tan => {
                let $cost = 6;
                let $fix: Fix<f32, f32> = Some(|s, d| trig_fixup(s, d, f64::tan));
                let $f = m::tan_f32;
                $body
            }
            ArcSin => {
                let $cost = 6;
                let $f = m::asin_f32;
                $body
            }
            ArcCos => {
                let $cost = 6;
                let $f = m::acos_f32;
                $body
            }
            ArcTan => {
                let $cost = 6;
                let $f = m::atan_f32;
                $body
            }
            Sinh => {
                let $cost = 6;
                let $f = m::sinh_f32;
                $body
            }
            Cosh => {
                let $cost = 6;
                let $f = m::cosh_f32;
                $body
            }
            Tanh => {
                let $cost = 6;
                let $f = m::tanh_f32;
                $body
            }
            ArcSinh => {
                let $cost = 8;
                let $f = m::asinh_f32;
                $body
            }
            ArcCosh => {
                let $cost = 8;
                let $f = m::acosh_f32;
                $body
            }
            ArcTanh => {
                let $cost = 8;
                let $f = m::atanh_f32;
                $body
            }
            Erf => {
                let $cost = 6;
                let $f = m::erf_f32;
                $body
            }
            ErfInv => {
                let $cost = 8;
                let $f = m::erfinv_f32;
                $body
            }
            Sigmoid => {
                let $cost = 4;
                let $f = m::sigmoid_f32;
                $body
            }
            Conjugate | Real => {
                let $cost = 1;
                let $f = |v: f32| v;
                $body
            }
            Imag => {
                let $cost = 1;
                let $f = |_v: f32| 0.0f32;
                $body
            }
            _ => return Err(bad(op_name($op), Dtype::F32)),
        }
    }};
}

fn op_name(op: UnaryOp) -> &'static str {
    crate::ops::unary::unary_name(op)
}

fn bad(name: &str, d: Dtype) -> Error {
    Error::unsupported(name, format!("No CPU kernel for {d} inputs."))
}

/// The f64 version of a float op.
fn f64_fn(op: UnaryOp) -> Option<fn(f64) -> f64> {
    use UnaryOp::*;
    Some(match op {
        Abs => f64::abs,
        Negative => |v| -v,
        Sign => |v| (v > 0.0) as u8 as f64 - (v < 0.0) as u8 as f64,
        Floor => f64::floor,
        Ceil => f64::ceil,
        Round => f64::round_ties_even,
        Trunc => f64::trunc,
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
        Erf => libm::erf,
        ErfInv => erfinv_f64,
        Sigmoid => |v| {
            let e = (-v.abs()).exp();
            let r = 1.0 / (1.0 + e);
            if v >= 0.0 {
                r
            } else {
                e * r
            }
        },
        Conjugate | Real => |v| v,
        Imag => |_| 0.0,
        _ => return None,
    })
}

/// Inverse error function in f64: a rough closed-form start refined by
/// Halley steps on `erf`.
pub fn erfinv_f64(x: f64) -> f64 {
    if x.is_nan() || x.abs() > 1.0 {
        return f64::NAN;
    }
    if x.abs() == 1.0 {
        return f64::INFINITY.copysign(x);
    }
    if x == 0.0 {
        return x;
    }
    let mut y = if x.abs() < 1e-3 {
        x * std::f64::consts::PI.sqrt() / 2.0 * (1.0 + std::f64::consts::PI * x * x / 12.0)
    } else {
        let a = 0.147;
        let l = ((1.0 - x) * (1.0 + x)).ln();
        let t = 2.0 / (std::f64::consts::PI * a) + l / 2.0;
        ((t * t - l / a).sqrt() - t).sqrt().copysign(x)
    };
    let k = 2.0 / std::f64::consts::PI.sqrt();
    for _ in 0..4 {
        let err = libm::erf(y) - x;
        let d = k * (-y * y).exp();
        if d == 0.0 {
            break;
        }
        y -= err / (d + y * err);
    }
    y
}

fn pred<T: Copy>(
    op: UnaryOp,
    nan: fn(T) -> bool,
    inf: fn(T) -> bool,
    pos: fn(T) -> bool,
    neg: fn(T) -> bool,
    zero: fn(T) -> bool,
) -> Option<fn(T) -> bool> {
    let _ = (nan, inf, pos, neg, zero);
    None.or(match op {
        UnaryOp::IsNan => Some(nan),
        UnaryOp::IsInf => Some(inf),
        UnaryOp::IsPosInf => Some(pos),
        UnaryOp::IsNegInf => Some(neg),
        UnaryOp::LogicalNot => Some(zero),
        _ => None,
    })
}

/// Predicates producing bool (IsNan, IsInf, IsPosInf, IsNegInf, IsFinite, LogicalNot).
fn predicate(op: UnaryOp, x: &Array, xd: &Data, od: &Data) -> Result<()> {
    let sh = x.shape();
    macro_rules! floaty {
        ($T:ty, $z:expr) => {{
            if op == UnaryOp::IsFinite {
                apply::<$T, bool, _>(xd, sh, od, 1, |v: $T| v.is_finite(), None);
            } else {
                let f = pred::<$T>(
                    op,
                    |v| v.is_nan(),
                    |v| v.is_infinite(),
                    |v| v.is_infinite() && v.is_sign_positive(),
                    |v| v.is_infinite() && v.is_sign_negative(),
                    |v| v == $z,
                )
                .ok_or_else(|| bad(op_name(op), x.dtype()))?;
                apply::<$T, bool, _>(xd, sh, od, 1, f, None);
            }
        }};
    }
    match x.dtype() {
        Dtype::F32 => floaty!(f32, 0.0),
        Dtype::F64 => floaty!(f64, 0.0),
        Dtype::F16 => floaty!(f16, f16::ZERO),
        Dtype::BF16 => floaty!(bf16, bf16::ZERO),
        Dtype::C64 => {
            let f: fn(c64) -> bool = match op {
                UnaryOp::IsNan => |v| v.re.is_nan() || v.im.is_nan(),
                UnaryOp::IsInf => |v| v.re.is_infinite() || v.im.is_infinite(),
                UnaryOp::IsPosInf => |v| v.re == f32::INFINITY,
                UnaryOp::IsNegInf => |v| v.re == f32::NEG_INFINITY,
                UnaryOp::IsFinite => |v| v.re.is_finite() && v.im.is_finite(),
                _ => |v| v.re == 0.0 && v.im == 0.0,
            };
            apply::<c64, bool, _>(xd, sh, od, 1, f, None);
        }
        d => crate::dispatch_dtype!(d, T => {
            let zero = T::default();
            match op {
                UnaryOp::IsFinite => apply::<T, bool, _>(xd, sh, od, 1, |_v: T| true, None),
                UnaryOp::LogicalNot => apply::<T, bool, _>(xd, sh, od, 1, move |v: T| v == zero, None),
                _ => apply::<T, bool, _>(xd, sh, od, 1, |_v: T| false, None),
            }
        }),
    }
    Ok(())
}

/// Integer element operations with MLX's wrapping semantics.
trait Int: Element {
    fn wneg(self) -> Self;
    fn wabs(self) -> Self;
    fn sgn(self) -> Self;
    fn wsq(self) -> Self;
    fn inv(self) -> Self;
}
macro_rules! int_impl {
    (signed $($t:ty),*) => {$(
        impl Int for $t {
            #[inline(always)] fn wneg(self) -> Self { self.wrapping_neg() }
            #[inline(always)] fn wabs(self) -> Self { self.wrapping_abs() }
            #[inline(always)] fn sgn(self) -> Self { self.signum() }
            #[inline(always)] fn wsq(self) -> Self { self.wrapping_mul(self) }
            #[inline(always)] fn inv(self) -> Self { !self }
        }
    )*};
    (unsigned $($t:ty),*) => {$(
        impl Int for $t {
            #[inline(always)] fn wneg(self) -> Self { self.wrapping_neg() }
            #[inline(always)] fn wabs(self) -> Self { self }
            #[inline(always)] fn sgn(self) -> Self { (self > 0) as $t }
            #[inline(always)] fn wsq(self) -> Self { self.wrapping_mul(self) }
            #[inline(always)] fn inv(self) -> Self { !self }
        }
    )*};
}
int_impl!(signed i8, i16, i32, i64);
int_impl!(unsigned u8, u16, u32, u64);

fn int_op<T: Int>(op: UnaryOp, x: &Array, xd: &Data, od: &Data) -> Result<()> {
    use UnaryOp::*;
    let sh = x.shape();
    match op {
        Abs => apply::<T, T, _>(xd, sh, od, 1, T::wabs, None),
        Negative => apply::<T, T, _>(xd, sh, od, 1, T::wneg, None),
        Sign => apply::<T, T, _>(xd, sh, od, 1, T::sgn, None),
        Square => apply::<T, T, _>(xd, sh, od, 1, T::wsq, None),
        BitwiseInvert => apply::<T, T, _>(xd, sh, od, 1, T::inv, None),
        Floor | Ceil | Round | Trunc | Conjugate | Real => apply::<T, T, _>(xd, sh, od, 1, |v: T| v, None),
        Imag => apply::<T, T, _>(xd, sh, od, 1, |_v: T| T::default(), None),
        _ => return Err(bad(op_name(op), x.dtype())),
    }
    Ok(())
}

fn bool_op(op: UnaryOp, x: &Array, xd: &Data, od: &Data) -> Result<()> {
    use UnaryOp::*;
    let sh = x.shape();
    match op {
        Abs | Sign | Square | Floor | Ceil | Round | Trunc | Conjugate | Real => {
            apply::<bool, bool, _>(xd, sh, od, 1, |v: bool| v, None)
        }
        Imag => apply::<bool, bool, _>(xd, sh, od, 1, |_v: bool| false, None),
        BitwiseInvert => apply::<bool, bool, _>(xd, sh, od, 1, |v: bool| !v, None),
        _ => return Err(bad(op_name(op), Dtype::Bool)),
    }
    Ok(())
}

fn complex_op(op: UnaryOp, x: &Array, xd: &Data, od: &Data) -> Result<()> {
    use UnaryOp::*;
    let sh = x.shape();
    match op {
        Abs => {
            apply::<c64, f32, _>(xd, sh, od, 2, |v: c64| v.norm(), None);
            return Ok(());
        }
        Real => {
            apply::<c64, f32, _>(xd, sh, od, 1, |v: c64| v.re, None);
            return Ok(());
        }
        Imag => {
            apply::<c64, f32, _>(xd, sh, od, 1, |v: c64| v.im, None);
            return Ok(());
        }
        _ => {}
    }
    let f: fn(c64) -> c64 = match op {
        Negative => |v| -v,
        Sign => |v| {
            let n = v.norm();
            if n == 0.0 {
                c64::new(0.0, 0.0)
            } else {
                v / n
            }
        },
        Round => |v| c64::new(v.re.round_ties_even(), v.im.round_ties_even()),
        Sqrt => |v| v.sqrt(),
        Rsqrt => |v| complex_recip(v.sqrt()),
        Square => |v| v * v,
        Reciprocal => complex_recip,
        Exp => |v| v.exp(),
        Log => |v| v.ln(),
        Log2 => |v| v.ln() / std::f32::consts::LN_2,
        Log10 => |v| v.ln() / std::f32::consts::LN_10,
        Log1p => |v| (v + 1.0).ln(),
        Sin => |v| v.sin(),
        Cos => |v| v.cos(),
        Tan => |v| v.tan(),
        // On the branch cuts (real |x| > 1) the sign of a zero imaginary part
        // picks the side, as in C99.
        ArcSin => |v| on_cut(v, v.asin(), 1.0),
        ArcCos => |v| on_cut(v, v.acos(), -1.0),
        ArcTan => |v| v.atan(),
        Sinh => |v| v.sinh(),
        Cosh => |v| v.cosh(),
        Tanh => |v| v.tanh(),
        ArcSinh => |v| v.asinh(),
        ArcCosh => |v| v.acosh(),
        ArcTanh => |v| on_cut(v, v.atanh(), 1.0),
        Conjugate => |v| v.conj(),
        _ => return Err(bad(op_name(op), Dtype::C64)),
    };
    apply::<c64, c64, _>(xd, sh, od, 8, f, None);
    Ok(())
}

/// 1 / z, with 1 / 0 = inf + nan i (as MLX).
fn complex_recip(v: c64) -> c64 {
    if v.re == 0.0 && v.im == 0.0 {
        c64::new(f32::INFINITY, f32::NAN)
    } else {
        c64::new(1.0, 0.0) / v
    }
}

/// Fixes the imaginary sign of `r = f(z)` for `z` on a real branch cut.
fn on_cut(z: c64, r: c64, sign: f32) -> c64 {
    if z.im == 0.0 && z.re.abs() > 1.0 {
        c64::new(r.re, r.im.copysign(sign * z.im.signum()))
    } else {
        r
    }
}

fn is_predicate(op: UnaryOp) -> bool {
    use UnaryOp::*;
    matches!(op, IsNan | IsInf | IsPosInf | IsNegInf | IsFinite | LogicalNot)
}

/// Computes `op(x)` into a fresh or donated output.
pub fn unary(op: UnaryOp, x: &Array, out: &OutSpec<'_>) -> Result<Data> {
    // Donation first: holding `x.data()` would count as a second owner of the buffer.
    let od = alloc_or_donate(out, &[x])?;
    let xd = x.data();
    let sh = x.shape();
    if is_predicate(op) {
        predicate(op, x, &xd, &od)?;
        return Ok(od);
    }
    match x.dtype() {
        Dtype::F32 => with_f32_fn!(op, f, cost, fix => apply::<f32, f32, _>(&xd, sh, &od, cost, f, fix)),
        Dtype::F16 => with_f32_fn!(op, f, cost, fix => apply_half::<f16, _>(&xd, sh, &od, cost, f, fix)),
        Dtype::BF16 => with_f32_fn!(op, f, cost, fix => apply_half::<bf16, _>(&xd, sh, &od, cost, f, fix)),
        Dtype::F64 => {
            let f = f64_fn(op).ok_or_else(|| bad(op_name(op), Dtype::F64))?;
            apply::<f64, f64, _>(&xd, sh, &od, 8, f, None)
        }
        Dtype::C64 => complex_op(op, x, &xd, &od)?,
        Dtype::Bool => bool_op(op, x, &xd, &od)?,
        Dtype::I8 => int_op::<i8>(op, x, &xd, &od)?,
        Dtype::I16 => int_op::<i16>(op, x, &xd, &od)?,
        Dtype::I32 => int_op::<i32>(op, x, &xd, &od)?,
        Dtype::I64 => int_op::<i64>(op, x, &xd, &od)?,
        Dtype::U8 => int_op::<u8>(op, x, &xd, &od)?,
        Dtype::U16 => int_op::<u16>(op, x, &xd, &od)?,
        Dtype::U32 => int_op::<u32>(op, x, &xd, &od)?,
        Dtype::U64 => int_op::<u64>(op, x, &xd, &od)?,
    }
    Ok(od)
}

/// Replaces NaN, +inf and -inf in a float array (other dtypes are copied).
pub fn nan_to_num(x: &Array, nan: f64, posinf: f64, neginf: f64, out: &OutSpec<'_>) -> Result<Data> {
    // Donation first: holding `x.data()` would count as a second owner of the buffer.
    let od = alloc_or_donate(out, &[x])?;
    let xd = x.data();
    let sh = x.shape();
    match x.dtype() {
        Dtype::F32 => {
            let (a, b, c) = (nan as f32, posinf as f32, neginf as f32);
            apply::<f32, f32, _>(
                &xd,
                sh,
                &od,
                1,
                move |v: f32| {
                    let v = if v.is_nan() { a } else { v };
                    let v = if v == f32::INFINITY { b } else { v };
                    if v == f32::NEG_INFINITY {
                        c
                    } else {
                        v
                    }
                },
                None,
            )
        }
        Dtype::F64 => apply::<f64, f64, _>(
            &xd,
            sh,
            &od,
            1,
            move |v: f64| {
                if v.is_nan() {
                    nan
                } else if v == f64::INFINITY {
                    posinf
                } else if v == f64::NEG_INFINITY {
                    neginf
                } else {
                    v
                }
            },
            None,
        ),
        d @ (Dtype::F16 | Dtype::BF16) => {
            // Replacement values are rounded to the half type, as MLX does.
            let (a, b, c) = if d == Dtype::F16 {
                (f16::from_f64(nan).to_f32(), f16::from_f64(posinf).to_f32(), f16::from_f64(neginf).to_f32())
            } else {
                (bf16::from_f64(nan).to_f32(), bf16::from_f64(posinf).to_f32(), bf16::from_f64(neginf).to_f32())
            };
            let f = move |v: f32| {
                let v = if v.is_nan() { a } else { v };
                let v = if v == f32::INFINITY { b } else { v };
                if v == f32::NEG_INFINITY {
                    c
                } else {
                    v
                }
            };
            if d == Dtype::F16 {
                apply_half::<f16, _>(&xd, sh, &od, 1, f, None)
            } else {
                apply_half::<bf16, _>(&xd, sh, &od, 1, f, None)
            }
        }
        d => crate::dispatch_dtype!(d, T => apply::<T, T, _>(&xd, sh, &od, 1, |v: T| v, None)),
    }
    Ok(od)
}
