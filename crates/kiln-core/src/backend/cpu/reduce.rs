//! Reduction kernels: sum, prod, max, min, all, any and argmax/argmin.
//!
//! Elements are lifted into an accumulator type (f32 for f32/f16/bf16, f64,
//! i64 for signed ints and bool, u64 for unsigned, bool for all/any, c64) and
//! combined there; the result is cast to the output dtype. A row-contiguous
//! input's dimensions are grouped into runs of reduced and kept axes, and the
//! runs are removed from the innermost outwards:
//! * a reduced innermost run is a *row reduce*: each row is folded with many
//!   independent SIMD accumulators, rows split across threads (a single long
//!   row is split into parallel partial results instead);
//! * a reduced run followed by a kept run is a *column reduce*: whole rows are
//!   combined into an output row, parallel over output chunks.
//!
//! Other layouts are first copied into row-major order.

use super::simd::{num_threads, parallel_for, SendPtr};
use super::strided::{alloc_out, copy};
use crate::array::{Array, Data};
use crate::backend::{ArgReduceOp, ReduceOp};
use crate::dtype::{bf16, c64, f16, Dtype, Element};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use crate::shape::numel;
use std::marker::PhantomData;

/// An accumulator type: the arithmetic the kernels need.
pub(crate) trait Num: Element {
    const ZERO: Self;
    const ONE: Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn gt(self, o: Self) -> bool;
    fn lt(self, o: Self) -> bool;
    fn nan(self) -> bool;
}

macro_rules! num_float {
    ($t:ty) => {
        impl Num for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                self + o
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                self * o
            }
            #[inline(always)]
            fn gt(self, o: Self) -> bool {
                self > o
            }
            #[inline(always)]
            fn lt(self, o: Self) -> bool {
                self < o
            }
            #[inline(always)]
            fn nan(self) -> bool {
                self.is_nan()
            }
        }
    };
}
num_float!(f32);
num_float!(f64);

macro_rules! num_int {
    ($t:ty) => {
        impl Num for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline(always)]
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            #[inline(always)]
            fn gt(self, o: Self) -> bool {
                self > o
            }
            #[inline(always)]
            fn lt(self, o: Self) -> bool {
                self < o
            }
            #[inline(always)]
            fn nan(self) -> bool {
                false
            }
        }
    };
}
num_int!(i64);
num_int!(u64);

impl Num for bool {
    const ZERO: Self = false;
    const ONE: Self = true;
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self | o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self & o
    }
    #[inline(always)]
    fn gt(self, o: Self) -> bool {
        self & !o
    }
    #[inline(always)]
    fn lt(self, o: Self) -> bool {
        !self & o
    }
    #[inline(always)]
    fn nan(self) -> bool {
        false
    }
}

impl Num for c64 {
    const ZERO: Self = c64::new(0.0, 0.0);
    const ONE: Self = c64::new(1.0, 0.0);
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    #[inline(always)]
    fn gt(self, o: Self) -> bool {
        self.re > o.re || (self.re == o.re && self.im > o.im)
    }
    #[inline(always)]
    fn lt(self, o: Self) -> bool {
        self.re < o.re || (self.re == o.re && self.im < o.im)
    }
    #[inline(always)]
    fn nan(self) -> bool {
        self.re.is_nan() || self.im.is_nan()
    }
}

/// Conversion of an element into accumulator type `A`.
pub(crate) trait Lift<A>: Copy + Send + Sync + 'static {
    fn lift(self) -> A;
}

macro_rules! lift {
    ($a:ty; $($t:ty => $f:expr),* $(,)?) => {$(
        impl Lift<$a> for $t {
            #[inline(always)]
            fn lift(self) -> $a {
                ($f)(self)
            }
        }
    )*};
}
lift!(f32; f32 => |x| x, f16 => |x: f16| x.to_f32(), bf16 => |x: bf16| x.to_f32());
lift!(f64; f64 => |x| x);
lift!(i64; i8 => |x| x as i64, i16 => |x| x as i64, i32 => |x| x as i64, i64 => |x| x, bool => |x| x as i64);
lift!(u64; u8 => |x| x as u64, u16 => |x| x as u64, u32 => |x| x as u64, u64 => |x| x);
lift!(c64; c64 => |x| x);
lift!(bool;
    bool => |x| x, u8 => |x| x != 0, u16 => |x| x != 0, u32 => |x| x != 0, u64 => |x| x != 0,
    i8 => |x| x != 0, i16 => |x| x != 0, i32 => |x| x != 0, i64 => |x| x != 0,
    f16 => |x: f16| x.to_f32() != 0.0, bf16 => |x: bf16| x.to_f32() != 0.0,
    f32 => |x| x != 0.0, f64 => |x| x != 0.0, c64 => |x: c64| x.re != 0.0 || x.im != 0.0,
);

/// The smallest and largest value of an element type (±inf for floats).
pub(crate) trait Bounded: Copy {
    fn lowest() -> Self;
    fn highest() -> Self;
}
macro_rules! bounded {
    ($($t:ty => $lo:expr, $hi:expr);* $(;)?) => {$(
        impl Bounded for $t {
            fn lowest() -> Self { $lo }
            fn highest() -> Self { $hi }
        }
    )*};
}
bounded!(
    bool => false, true; u8 => u8::MIN, u8::MAX; u16 => u16::MIN, u16::MAX; u32 => u32::MIN, u32::MAX;
    u64 => u64::MIN, u64::MAX; i8 => i8::MIN, i8::MAX; i16 => i16::MIN, i16::MAX; i32 => i32::MIN, i32::MAX;
    i64 => i64::MIN, i64::MAX; f16 => f16::NEG_INFINITY, f16::INFINITY; bf16 => bf16::NEG_INFINITY, bf16::INFINITY;
    f32 => f32::NEG_INFINITY, f32::INFINITY; f64 => f64::NEG_INFINITY, f64::INFINITY;
    c64 => c64::new(f32::NEG_INFINITY, 0.0), c64::new(f32::INFINITY, 0.0);
);

/// A binary combine rule over accumulator values.
pub(crate) trait Combine<A>: Send + Sync + 'static {
    fn comb(a: A, b: A) -> A;
}
/// Addition (logical or for bool).
pub(crate) struct SumC;
/// Multiplication (logical and for bool).
pub(crate) struct ProdC;
/// Maximum, NaN-propagating, first of equals wins.
pub(crate) struct MaxC;
/// Minimum, NaN-propagating, first of equals wins.
pub(crate) struct MinC;
impl<A: Num> Combine<A> for SumC {
    #[inline(always)]
    fn comb(a: A, b: A) -> A {
        a.add(b)
    }
}
impl<A: Num> Combine<A> for ProdC {
    #[inline(always)]
    fn comb(a: A, b: A) -> A {
        a.mul(b)
    }
}
impl<A: Num> Combine<A> for MaxC {
    #[inline(always)]
    fn comb(a: A, b: A) -> A {
        if b.gt(a) || b.nan() {
            b
        } else {
            a
        }
    }
}
impl<A: Num> Combine<A> for MinC {
    #[inline(always)]
    fn comb(a: A, b: A) -> A {
        if b.lt(a) || b.nan() {
            b
        } else {
            a
        }
    }
}

/// Independent accumulators per row fold (4 AVX-512 registers of f32).
const LANES: usize = 64;

crate::multiversion! {
    fn fold_row<T, A: Num, C: Combine<A>>(src: &[T], id: A, _c: PhantomData<C>) -> A where T: Lift<A> {
        let mut acc = [id; LANES];
        let mut chunks = src.chunks_exact(LANES);
        for c in &mut chunks {
            for k in 0..LANES {
                acc[k] = C::comb(acc[k], c[k].lift());
            }
        }
        // Tree-combine the lanes (log depth, vectorised) instead of a serial chain.
        let mut w = LANES / 2;
        while w > 0 {
            for k in 0..w {
                acc[k] = C::comb(acc[k], acc[k + w]);
            }
            w /= 2;
        }
        let mut r = acc[0];
        for &x in chunks.remainder() {
            r = C::comb(r, x.lift());
        }
        r
    }
}

crate::multiversion! {
    fn fold_cols<T, A: Num, C: Combine<A>>(src: &[T], rows: usize, stride: usize, acc: &mut [A], _c: PhantomData<C>) where T: Lift<A> {
        let w = acc.len();
        for r in 0..rows {
            let row = &src[r * stride..r * stride + w];
            for (a, &x) in acc.iter_mut().zip(row) {
                *a = C::comb(*a, x.lift());
            }
        }
    }
}

/// [`fold_row`], with a hand-vectorised f32 sum (the most common reduction):
/// eight independent AVX-512 accumulators keep both add ports busy, which the
/// auto-vectorised generic loop does not.
#[inline]
fn fold_row_fast<T, A: Num, C: Combine<A>>(src: &[T], id: A) -> A
where
    T: Lift<A>,
{
    use std::any::TypeId;
    if TypeId::of::<T>() == TypeId::of::<f32>()
        && TypeId::of::<A>() == TypeId::of::<f32>()
        && TypeId::of::<C>() == TypeId::of::<SumC>()
    {
        // SAFETY: T is f32 (checked above), so the slice reinterprets as itself.
        let s = unsafe { std::slice::from_raw_parts(src.as_ptr() as *const f32, src.len()) };
        let r = sum_f32(s);
        // SAFETY: A is f32 (checked above).
        let r: A = unsafe { std::mem::transmute_copy(&r) };
        return C::comb(id, r);
    }
    fold_row::<T, A, C>(src, id, PhantomData)
}

/// Sum of an f32 slice.
pub(crate) fn sum_f32(s: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::simd::level() == super::simd::Level::Avx512 {
        // SAFETY: the CPU supports AVX-512F (checked by level()).
        return unsafe { sum_f32_avx512(s) };
    }
    fold_row::<f32, f32, SumC>(s, 0.0, PhantomData)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_f32_avx512(s: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = s.len();
    let p = s.as_ptr();
    let mut acc = [_mm512_setzero_ps(); 8];
    let blocks = n / 128;
    for b in 0..blocks {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: b * 128 + k * 16 + 16 <= blocks * 128 <= n.
            *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(p.add(b * 128 + k * 16)) });
        }
    }
    let mut i = blocks * 128;
    let mut v = _mm512_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])),
        _mm512_add_ps(_mm512_add_ps(acc[4], acc[5]), _mm512_add_ps(acc[6], acc[7])),
    );
    while i + 16 <= n {
        // SAFETY: i + 16 <= n.
        v = _mm512_add_ps(v, unsafe { _mm512_loadu_ps(p.add(i)) });
        i += 16;
    }
    let mut r = _mm512_reduce_add_ps(v);
    while i < n {
        // SAFETY: i < n.
        r += unsafe { *p.add(i) };
        i += 1;
    }
    r
}

/// Folds `rows` rows of length `len` of `src` into `out` (one value each).
fn row_pass<T, A: Num, C: Combine<A>>(src: &[T], rows: usize, len: usize, id: A) -> Vec<A>
where
    T: Lift<A>,
{
    let mut out = vec![id; rows];
    if rows < num_threads() && len >= 1 << 16 {
        // Few long rows: parallel partial results per row.
        let chunks = num_threads() * 4;
        let per = len.div_ceil(chunks);
        for (r, o) in out.iter_mut().enumerate() {
            let row = &src[r * len..(r + 1) * len];
            let mut partial = vec![id; chunks];
            let pp = SendPtr(partial.as_mut_ptr());
            parallel_for(chunks, per, |range| {
                for c in range {
                    let s = (c * per).min(len);
                    let e = ((c + 1) * per).min(len);
                    // SAFETY: each chunk index writes its own slot of `partial`.
                    unsafe { *pp.get().add(c) = fold_row_fast::<T, A, C>(&row[s..e], id) };
                }
            });
            *o = partial.into_iter().fold(id, C::comb);
        }
        return out;
    }
    let op = SendPtr(out.as_mut_ptr());
    parallel_for(rows, len, |range| {
        for r in range {
            // SAFETY: each row index writes its own slot of `out`.
            unsafe { *op.get().add(r) = fold_row_fast::<T, A, C>(&src[r * len..(r + 1) * len], id) };
        }
    });
    out
}

/// Reduces the middle axis of an (outer, rows, width) block into (outer, width).
fn col_pass<T, A: Num, C: Combine<A>>(src: &[T], outer: usize, rows: usize, width: usize, id: A) -> Vec<A>
where
    T: Lift<A>,
{
    const CHUNK: usize = 1024;
    let mut out = vec![id; outer * width];
    let per_outer = width.div_ceil(CHUNK);
    let op = SendPtr(out.as_mut_ptr());
    parallel_for(outer * per_outer, rows * CHUNK.min(width), |range| {
        for t in range {
            let (o, c) = (t / per_outer, t % per_outer);
            let (c0, c1) = (c * CHUNK, ((c + 1) * CHUNK).min(width));
            // SAFETY: task (o, c) owns output columns c0..c1 of block o.
            let acc = unsafe { std::slice::from_raw_parts_mut(op.get().add(o * width + c0), c1 - c0) };
            let base = o * rows * width + c0;
            if rows > 0 {
                fold_cols::<T, A, C>(&src[base..base + (rows - 1) * width + (c1 - c0)], rows, width, acc, PhantomData);
            }
        }
    });
    out
}

/// One pass: removes the innermost reduced run of `groups` (len, reduced).
fn pass<T, A: Num, C: Combine<A>>(src: &[T], groups: &mut Vec<(usize, bool)>, id: A) -> Vec<A>
where
    T: Lift<A>,
{
    let n = groups.len();
    let total: usize = groups.iter().map(|g| g.0).product();
    if groups[n - 1].1 {
        let len = groups[n - 1].0;
        groups.pop();
        return row_pass::<T, A, C>(src, total / len.max(1), len, id);
    }
    let width = groups[n - 1].0;
    let rows = groups[n - 2].0;
    let outer = total / (width * rows).max(1);
    groups.remove(n - 2);
    // Merge the kept run into a kept run before it.
    if n >= 3 && !groups[n - 3].1 {
        groups[n - 3].0 *= width;
        groups.pop();
    }
    col_pass::<T, A, C>(src, outer, rows, width, id)
}

fn reduce_contig<T, A, C: Combine<A>>(src: &[T], shape: &[usize], axes: &[usize], id: A) -> Vec<A>
where
    T: Lift<A>,
    A: Num + Lift<A>,
{
    let out_n: usize = shape.iter().enumerate().filter(|(i, _)| !axes.contains(i)).map(|(_, &d)| d).product();
    if src.is_empty() {
        return vec![id; out_n];
    }
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (i, &d) in shape.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let red = axes.contains(&i);
        match groups.last_mut() {
            Some(g) if g.1 == red => g.0 *= d,
            _ => groups.push((d, red)),
        }
    }
    if !groups.iter().any(|g| g.1) {
        return src.iter().map(|&x| C::comb(id, x.lift())).collect();
    }
    let mut cur = pass::<T, A, C>(src, &mut groups, id);
    while groups.iter().any(|g| g.1) {
        cur = pass::<A, A, C>(&cur, &mut groups, id);
    }
    cur
}

/// The evaluated data of `x` in row-major order (copied if it is strided).
pub(crate) fn contiguous(x: &Array) -> Result<Data> {
    let d = x.data();
    if d.is_row_contiguous() {
        return Ok(d);
    }
    copy(x, &OutSpec { shape: x.shape(), dtype: x.dtype() })
}

/// A typed slice over a row-contiguous `Data` of `n` elements.
pub(crate) fn slice_of<T>(d: &Data, n: usize) -> &[T] {
    if n == 0 {
        return &[];
    }
    // SAFETY: a row-contiguous view holds n elements of T from its offset.
    unsafe { std::slice::from_raw_parts(d.ptr::<T>(), n) }
}

/// Writes accumulator values into a fresh output of `out.dtype`.
pub(crate) fn write_out<A: Element>(vals: &[A], out: &OutSpec<'_>) -> Result<Data> {
    let buf = alloc_out(out)?;
    crate::dispatch_dtype!(out.dtype, O => {
        let p = buf.as_ptr() as *mut O;
        for (i, &v) in vals.iter().enumerate() {
            // SAFETY: the buffer holds numel(out.shape) == vals.len() elements.
            unsafe { *p.add(i) = O::cast_from(v) };
        }
    });
    Ok(Data::contiguous(buf, out.shape))
}

fn run<T, A>(op: ReduceOp, src: &[T], shape: &[usize], axes: &[usize]) -> Vec<A>
where
    T: Lift<A> + Bounded,
    A: Num + Lift<A>,
{
    match op {
        ReduceOp::Sum | ReduceOp::Or => reduce_contig::<T, A, SumC>(src, shape, axes, A::ZERO),
        ReduceOp::Prod | ReduceOp::And => reduce_contig::<T, A, ProdC>(src, shape, axes, A::ONE),
        ReduceOp::Max => reduce_contig::<T, A, MaxC>(src, shape, axes, T::lowest().lift()),
        ReduceOp::Min => reduce_contig::<T, A, MinC>(src, shape, axes, T::highest().lift()),
    }
}

fn finish<T, A>(op: ReduceOp, d: &Data, x: &Array, axes: &[usize], out: &OutSpec<'_>) -> Result<Data>
where
    T: Lift<A> + Bounded,
    A: Num + Lift<A>,
{
    let v = run::<T, A>(op, slice_of::<T>(d, x.size()), x.shape(), axes);
    write_out(&v, out)
}

/// Reduction of `x` over `axes` into `out` (whose dtype may differ from `x`'s).
pub fn reduce(op: ReduceOp, x: &Array, axes: &[usize], out: &OutSpec<'_>) -> Result<Data> {
    let d = contiguous(x)?;
    if matches!(op, ReduceOp::And | ReduceOp::Or) {
        return crate::dispatch_dtype!(x.dtype(), T => finish::<T, bool>(op, &d, x, axes, out));
    }
    match x.dtype() {
        Dtype::Bool => finish::<bool, i64>(op, &d, x, axes, out),
        Dtype::I8 => finish::<i8, i64>(op, &d, x, axes, out),
        Dtype::I16 => finish::<i16, i64>(op, &d, x, axes, out),
        Dtype::I32 => finish::<i32, i64>(op, &d, x, axes, out),
        Dtype::I64 => finish::<i64, i64>(op, &d, x, axes, out),
        Dtype::U8 => finish::<u8, u64>(op, &d, x, axes, out),
        Dtype::U16 => finish::<u16, u64>(op, &d, x, axes, out),
        Dtype::U32 => finish::<u32, u64>(op, &d, x, axes, out),
        Dtype::U64 => finish::<u64, u64>(op, &d, x, axes, out),
        Dtype::F16 => finish::<f16, f32>(op, &d, x, axes, out),
        Dtype::BF16 => finish::<bf16, f32>(op, &d, x, axes, out),
        Dtype::F32 => finish::<f32, f32>(op, &d, x, axes, out),
        Dtype::F64 => finish::<f64, f64>(op, &d, x, axes, out),
        Dtype::C64 => finish::<c64, c64>(op, &d, x, axes, out),
    }
}

/// (outer, n, inner) of a contiguous array around `axis`.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (numel(&shape[..axis]), shape[axis], numel(&shape[axis + 1..]))
}

fn arg_lines<T, A: Num>(op: ArgReduceOp, src: &[T], outer: usize, n: usize, inner: usize) -> Vec<u32>
where
    T: Lift<A>,
{
    let better = move |x: A, best: A| -> bool {
        let cmp = match op {
            ArgReduceOp::ArgMax => x.gt(best),
            ArgReduceOp::ArgMin => x.lt(best),
        };
        cmp || (x.nan() && !best.nan())
    };
    let mut out = vec![0u32; outer * inner];
    let op_ = SendPtr(out.as_mut_ptr());
    parallel_for(outer * inner, n, |range| {
        for t in range {
            let (o, i) = (t / inner, t % inner);
            let base = o * n * inner + i;
            let mut best = src[base].lift();
            let mut bi = 0u32;
            for k in 1..n {
                let x = src[base + k * inner].lift();
                if better(x, best) {
                    best = x;
                    bi = k as u32;
                }
            }
            // SAFETY: each (outer, inner) position writes its own slot.
            unsafe { *op_.get().add(t) = bi };
        }
    });
    out
}

crate::multiversion! {
    /// [`arg_lines`] for one contiguous f32 line, in two vectorisable
    /// passes: the extreme value (and whether a NaN occurs), then the first
    /// index holding it (or the first NaN).
    fn arg_line_f32(xs: &[f32], max: bool) -> u32 {
        const W: usize = 16;
        let mut lanes = [xs[0]; W];
        let mut nan = [false; W];
        let mut chunks = xs.chunks_exact(W);
        for c in &mut chunks {
            for k in 0..W {
                let x = c[k];
                nan[k] |= x.is_nan();
                let better = if max { x > lanes[k] } else { x < lanes[k] };
                lanes[k] = if better { x } else { lanes[k] };
            }
        }
        let mut best = xs[0];
        let mut any_nan = nan.iter().any(|&b| b);
        for &x in lanes.iter().chain(chunks.remainder()) {
            any_nan |= x.is_nan();
            if (max && x > best) || (!max && x < best) {
                best = x;
            }
        }
        let hit = |x: f32| if any_nan { x.is_nan() } else { x == best };
        for (ci, c) in xs.chunks(W).enumerate() {
            if c.iter().fold(false, |a, &x| a | hit(x)) {
                let k = c.iter().position(|&x| hit(x)).unwrap_or(0);
                return (ci * W + k) as u32;
            }
        }
        0
    }
}

/// Index of the max/min along `axis` (first occurrence, first NaN wins).
pub fn arg_reduce(op: ArgReduceOp, x: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
    let d = contiguous(x)?;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    if n == 0 && outer * inner > 0 {
        return Err(Error::invalid("arg_reduce", "Cannot reduce over an empty axis."));
    }
    let sz = x.size();
    if x.dtype() == Dtype::F32 && inner == 1 && n > 0 {
        let src: &[f32] = slice_of(&d, sz);
        let mut v = vec![0u32; outer];
        let vp = SendPtr(v.as_mut_ptr());
        parallel_for(outer, n, |range| {
            for o in range {
                let r = arg_line_f32(&src[o * n..(o + 1) * n], op == ArgReduceOp::ArgMax);
                // SAFETY: each line writes its own slot.
                unsafe { *vp.get().add(o) = r };
            }
        });
        return write_out(&v, out);
    }
    let v = match x.dtype() {
        Dtype::Bool => arg_lines::<bool, i64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::I8 => arg_lines::<i8, i64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::I16 => arg_lines::<i16, i64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::I32 => arg_lines::<i32, i64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::I64 => arg_lines::<i64, i64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::U8 => arg_lines::<u8, u64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::U16 => arg_lines::<u16, u64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::U32 => arg_lines::<u32, u64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::U64 => arg_lines::<u64, u64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::F16 => arg_lines::<f16, f32>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::BF16 => arg_lines::<bf16, f32>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::F32 => arg_lines::<f32, f32>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::F64 => arg_lines::<f64, f64>(op, slice_of(&d, sz), outer, n, inner),
        Dtype::C64 => arg_lines::<c64, c64>(op, slice_of(&d, sz), outer, n, inner),
    };
    write_out(&v, out)
}
