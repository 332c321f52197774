//! Binary elementwise kernels.
//!
//! Every dtype computes in its own type: integers with wrapping arithmetic,
//! f32/f64 natively, f16/bf16 through f32 in chunks of [`CHUNK`] elements,
//! complex64 with `num_complex`. A kernel is a plain loop over slices inside
//! [`crate::multiversion!`] so the compiler emits AVX-512/AVX2 code.
//!
//! Layouts: both inputs dense with the output's size (one flat run), one
//! input a single element (scalar-vector / vector-scalar runs), and the
//! general broadcast/strided case walked row by row with [`Rows`], whose inner
//! loop is specialised for strides 1 and 0. Large outputs are split across
//! threads; the output reuses a donatable input buffer when it can, in which
//! case the in-place loop variants run (the output aliases an input).
//!
//! Integer division by zero never traps: `x // 0 = 0` and `x % 0 = x` (so
//! `divmod` keeps `x == q*y + r`). Shifts by a negative amount or by at least
//! the bit width give 0 (`<<`, unsigned `>>`) or the sign fill (signed `>>`).

use super::simd::{parallel_for, SendPtr};
use super::strided::{alloc_or_donate, strides_for, Rows};
use crate::array::{Array, Data};
use crate::backend::BinaryOp;
use crate::dtype::{bf16, c64, f16, Dtype, Element};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use crate::shape::numel;
use half::slice::HalfFloatSliceExt;
use std::marker::PhantomData;

/// Elements converted to f32 at a time for half types.
const CHUNK: usize = 512;

// ---------------------------------------------------------------- loops

crate::multiversion! {
    fn k_vv<T: Copy, U: Copy, F: Fn(T, T) -> U>(a: &[T], b: &[T], o: &mut [U], f: F) {
        for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    }
}
crate::multiversion! {
    fn k_sv<T: Copy, U: Copy, F: Fn(T, T) -> U>(x: T, b: &[T], o: &mut [U], f: F) {
        for (o, &y) in o.iter_mut().zip(b) {
            *o = f(x, y);
        }
    }
}
crate::multiversion! {
    fn k_vs<T: Copy, U: Copy, F: Fn(T, T) -> U>(a: &[T], y: T, o: &mut [U], f: F) {
        for (o, &x) in o.iter_mut().zip(a) {
            *o = f(x, y);
        }
    }
}
crate::multiversion! {
    /// In place over the first operand: `o = f(o, b)`.
    fn k_ia<T: Copy, F: Fn(T, T) -> T>(o: &mut [T], b: &[T], f: F) {
        for (o, &y) in o.iter_mut().zip(b) {
            *o = f(*o, y);
        }
    }
}
crate::multiversion! {
    /// In place over the second operand: `o = f(a, o)`.
    fn k_ib<T: Copy, F: Fn(T, T) -> T>(a: &[T], o: &mut [T], f: F) {
        for (o, &x) in o.iter_mut().zip(a) {
            *o = f(x, *o);
        }
    }
}
crate::multiversion! {
    fn k_isv<T: Copy, F: Fn(T, T) -> T>(x: T, o: &mut [T], f: F) {
        for o in o.iter_mut() {
            *o = f(x, *o);
        }
    }
}
crate::multiversion! {
    fn k_ivs<T: Copy, F: Fn(T, T) -> T>(o: &mut [T], y: T, f: F) {
        for o in o.iter_mut() {
            *o = f(*o, y);
        }
    }
}

/// Generic strided loop through raw pointers (any strides, any aliasing of
/// `po` with an input at the same position).
///
/// # Safety
/// `pa + i*sa`, `pb + i*sb` readable and `po + i` writable for `i < len`.
#[inline]
unsafe fn k_strided<T: Copy, U: Copy>(
    pa: *const T,
    sa: isize,
    pb: *const T,
    sb: isize,
    po: *mut U,
    len: usize,
    f: impl Fn(T, T) -> U,
) {
    for i in 0..len {
        let (x, y) = (*pa.offset(i as isize * sa), *pb.offset(i as isize * sb));
        *po.add(i) = f(x, y);
    }
}

/// One run of a kernel: `out[i] = f(a[i*sa], b[i*sb])` for `i < len`, the
/// output contiguous.
trait Run: Sync {
    type A: Copy;
    type O: Copy;
    /// # Safety
    /// `pa`/`pb` readable for `len` elements at strides `sa`/`sb`; `po`
    /// writable for `len` elements. `po` may alias `pa` (when `sa == 1`) or
    /// `pb` (when `sb == 1`) element for element, and overlaps nothing else.
    unsafe fn run(&self, pa: *const Self::A, sa: isize, pb: *const Self::A, sb: isize, po: *mut Self::O, len: usize);
}

/// Ops whose output type is the input type (donation-friendly).
struct Same<T, F>(F, PhantomData<fn(T)>);

impl<T: Copy, F: Fn(T, T) -> T + Copy + Sync> Run for Same<T, F> {
    type A = T;
    type O = T;
    unsafe fn run(&self, pa: *const T, sa: isize, pb: *const T, sb: isize, po: *mut T, len: usize) {
        let f = self.0;
        let (alias_a, alias_b) = (std::ptr::eq(po, pa), std::ptr::eq(po, pb));
        let rd = |p: *const T| std::slice::from_raw_parts(p, len);
        let wr = || std::slice::from_raw_parts_mut(po, len);
        // SAFETY (all arms): the caller guarantees the ranges; an aliased
        // input is never viewed as a shared slice next to the mutable one.
        match (sa, sb) {
            (1, 1) if alias_a && alias_b => k_strided(pa, 1, pb, 1, po, len, f),
            (1, 1) if alias_a => k_ia(wr(), rd(pb), f),
            (1, 1) if alias_b => k_ib(rd(pa), wr(), f),
            (1, 1) => k_vv(rd(pa), rd(pb), wr(), f),
            (0, 1) if alias_b => k_isv(*pa, wr(), f),
            (0, 1) => k_sv(*pa, rd(pb), wr(), f),
            (1, 0) if alias_a => k_ivs(wr(), *pb, f),
            (1, 0) => k_vs(rd(pa), *pb, wr(), f),
            (0, 0) => {
                let v = f(*pa, *pb);
                wr().fill(v);
            }
            _ => k_strided(pa, sa, pb, sb, po, len, f),
        }
    }
}

/// Ops with a bool output (comparisons).
struct Cmp<T, F>(F, PhantomData<fn(T)>);

impl<T: Copy, F: Fn(T, T) -> bool + Copy + Sync> Run for Cmp<T, F> {
    type A = T;
    type O = bool;
    unsafe fn run(&self, pa: *const T, sa: isize, pb: *const T, sb: isize, po: *mut bool, len: usize) {
        let f = self.0;
        let aliased = po as *const u8 == pa as *const u8 || po as *const u8 == pb as *const u8;
        let rd = |p: *const T| std::slice::from_raw_parts(p, len);
        let wr = || std::slice::from_raw_parts_mut(po, len);
        // SAFETY (all arms): as in `Same::run`; aliased runs use raw pointers.
        match (sa, sb) {
            _ if aliased => k_strided(pa, sa, pb, sb, po, len, f),
            (1, 1) => k_vv(rd(pa), rd(pb), wr(), f),
            (0, 1) => k_sv(*pa, rd(pb), wr(), f),
            (1, 0) => k_vs(rd(pa), *pb, wr(), f),
            (0, 0) => {
                let v = f(*pa, *pb);
                wr().fill(v);
            }
            _ => k_strided(pa, sa, pb, sb, po, len, f),
        }
    }
}

/// f16 and bf16: loaded to f32 in chunks, computed in f32.
trait HalfT: Copy + Send + Sync + 'static {
    /// # Safety
    /// `p + i*stride` readable for `i < dst.len()`.
    unsafe fn load(p: *const Self, stride: isize, dst: &mut [f32]);
    /// # Safety
    /// `dst` writable for `src.len()` elements.
    unsafe fn store(src: &[f32], dst: *mut Self);
    /// One element as f32.
    fn load1(self) -> f32;
}

macro_rules! half_t {
    ($t:ty) => {
        impl HalfT for $t {
            #[inline]
            unsafe fn load(p: *const Self, stride: isize, dst: &mut [f32]) {
                let n = dst.len();
                match stride {
                    1 => std::slice::from_raw_parts(p, n).convert_to_f32_slice(dst),
                    0 => dst.fill((*p).to_f32()),
                    _ => {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = (*p.offset(i as isize * stride)).to_f32();
                        }
                    }
                }
            }
            #[inline]
            unsafe fn store(src: &[f32], dst: *mut Self) {
                std::slice::from_raw_parts_mut(dst, src.len()).convert_from_f32_slice(src);
            }
            #[inline]
            fn load1(self) -> f32 {
                self.to_f32()
            }
        }
    };
}
half_t!(f16);
half_t!(bf16);

/// Stores f32 results into a half output or bool results into a bool output.
trait StoreFrom<V>: Copy {
    /// # Safety
    /// `dst` writable for `src.len()` elements.
    unsafe fn put(src: &[V], dst: *mut Self);
}
impl<H: HalfT> StoreFrom<f32> for H {
    unsafe fn put(src: &[f32], dst: *mut Self) {
        H::store(src, dst)
    }
}
impl StoreFrom<bool> for bool {
    unsafe fn put(src: &[bool], dst: *mut Self) {
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len())
    }
}

struct Half<H, O, F>(F, PhantomData<fn(H, O)>);

impl<H: HalfT, V: Copy + Default, O: StoreFrom<V>, F: Fn(f32, f32) -> V + Copy + Sync> Run for Half<H, O, F> {
    type A = H;
    type O = O;
    unsafe fn run(&self, pa: *const H, sa: isize, pb: *const H, sb: isize, po: *mut O, len: usize) {
        let f = self.0;
        let mut xa = [0f32; CHUNK];
        let mut xb = [0f32; CHUNK];
        let mut xo = [V::default(); CHUNK];
        let (a0, b0) = (if sa == 0 { (*pa).load1() } else { 0.0 }, if sb == 0 { (*pb).load1() } else { 0.0 });
        let mut i = 0usize;
        while i < len {
            let n = (len - i).min(CHUNK);
            let off = i as isize;
            // SAFETY: chunk `i..i+n` lies inside the run; inputs are fully
            // read into the buffers before the output chunk is written, so an
            // aliased (donated) input is safe.
            match (sa, sb) {
                (0, _) => {
                    H::load(pb.offset(off * sb), sb, &mut xb[..n]);
                    k_sv(a0, &xb[..n], &mut xo[..n], f);
                }
                (_, 0) => {
                    H::load(pa.offset(off * sa), sa, &mut xa[..n]);
                    k_vs(&xa[..n], b0, &mut xo[..n], f);
                }
                _ => {
                    H::load(pa.offset(off * sa), sa, &mut xa[..n]);
                    H::load(pb.offset(off * sb), sb, &mut xb[..n]);
                    k_vv(&xa[..n], &xb[..n], &mut xo[..n], f);
                }
            }
            O::put(&xo[..n], po.add(i));
            i += n;
        }
    }
}

// ---------------------------------------------------------------- driver

/// Pointer to element 0 of an evaluated input and whether it is dense,
/// without cloning its `Data` (the small-op path stays allocation-free). The
/// buffer outlives the kernel: `a` keeps its node alive, and a node's data is
/// never replaced once set.
fn peek<T>(a: &Array) -> (*mut T, bool) {
    let st = a.0.lock();
    let d = st.data.as_ref().expect("kernel inputs are evaluated");
    (d.ptr::<T>(), d.is_row_contiguous())
}

/// Runs kernel `k` over the broadcast of `a` and `b` into the dense output
/// `od` of `shape`. `cost` is a rough per-element weight for threading.
fn drive<K: Run>(k: &K, a: &Array, b: &Array, shape: &[usize], od: &Data, cost: usize) {
    let n = numel(shape);
    if n == 0 {
        return;
    }
    let (pa, a_dense) = peek::<K::A>(a);
    let (pb, b_dense) = peek::<K::A>(b);
    let (pa, pb) = (SendPtr(pa), SendPtr(pb));
    let po = SendPtr(od.ptr::<K::O>());
    let a_full = a.size() == n && a_dense;
    let b_full = b.size() == n && b_dense;
    let (a_one, b_one) = (a.size() == 1, b.size() == 1);
    let flat = match (a_full, b_full) {
        (true, true) => Some((1, 1)),
        (_, true) if a_one => Some((0, 1)),
        (true, _) if b_one => Some((1, 0)),
        _ if a_one && b_one => Some((0, 0)),
        _ => None,
    };
    if let Some((sa, sb)) = flat {
        parallel_for(n, cost, |r| {
            let s = r.start as isize;
            // SAFETY: a dense input holds n elements, a size-1 input is read
            // with stride 0; parallel ranges write disjoint output elements.
            unsafe { k.run(pa.get().offset(s * sa), sa, pb.get().offset(s * sb), sb, po.get().add(r.start), r.len()) }
        });
        return;
    }
    let (ad, bd) = (a.data(), b.data());
    let sa_v = strides_for(a, &ad, shape);
    let sb_v = strides_for(b, &bd, shape);
    let rows = Rows::new(shape, [&sa_v, &sb_v]);
    let inner = rows.inner;
    let [ia, ib] = rows.inner_strides;
    parallel_for(rows.rows, inner.saturating_mul(cost), |r| {
        for row in r {
            let [oa, ob] = rows.offsets(row);
            // SAFETY: row offsets and inner strides come from the inputs' own
            // views; row `row` owns output elements row*inner..(row+1)*inner.
            unsafe { k.run(pa.get().offset(oa), ia, pb.get().offset(ob), ib, po.get().add(row * inner), inner) }
        }
    });
}

fn unsupported(op: BinaryOp, d: Dtype) -> Error {
    Error::unsupported("binary", format!("No CPU kernel for {op:?} on {d}."))
}

// ---------------------------------------------------------------- per dtype

/// Float helpers shared by f32 and f64 kernels.
trait Flt: Copy + PartialOrd + std::ops::Rem<Output = Self> + std::ops::Add<Output = Self> {
    const ZERO: Self;
    const NEG_INF: Self;
    fn nan(self) -> bool;
}
impl Flt for f32 {
    const ZERO: f32 = 0.0;
    const NEG_INF: f32 = f32::NEG_INFINITY;
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}
impl Flt for f64 {
    const ZERO: f64 = 0.0;
    const NEG_INF: f64 = f64::NEG_INFINITY;
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}

/// Python-style float remainder: the sign follows the divisor.
#[inline(always)]
fn rem_py<T: Flt>(x: T, y: T) -> T {
    let r = x % y;
    if r != T::ZERO && ((r < T::ZERO) != (y < T::ZERO)) {
        r + y
    } else {
        r
    }
}
#[inline(always)]
fn max_nan<T: Flt>(x: T, y: T) -> T {
    if x > y || x.nan() {
        x
    } else {
        y
    }
}
#[inline(always)]
fn min_nan<T: Flt>(x: T, y: T) -> T {
    if x < y || x.nan() {
        x
    } else {
        y
    }
}

/// The match over every float op; `$s!`/`$c!` wrap a same-type or a
/// bool-valued closure into a kernel and run it.
macro_rules! float_ops {
    ($T:ident, $op:expr, $s:ident, $c:ident, $d:expr) => {{
        use BinaryOp::*;
        match $op {
            Add => $s!(1, |x: $T, y: $T| x + y),
            Subtract => $s!(1, |x: $T, y: $T| x - y),
            Multiply => $s!(1, |x: $T, y: $T| x * y),
            Divide => $s!(1, |x: $T, y: $T| x / y),
            FloorDivide => $s!(2, |x: $T, y: $T| (x / y).floor()),
            Remainder => $s!(2, |x: $T, y: $T| rem_py(x, y)),
            Power => $s!(16, |x: $T, y: $T| x.powf(y)),
            Maximum => $s!(1, |x: $T, y: $T| max_nan(x, y)),
            Minimum => $s!(1, |x: $T, y: $T| min_nan(x, y)),
            LogAddExp => $s!(16, |x: $T, y: $T| {
                let m = max_nan(x, y);
                if m.is_nan() || m == <$T as Flt>::NEG_INF || m.is_infinite() {
                    m
                } else {
                    m + (-(x - y).abs()).exp().ln_1p()
                }
            }),
            ArcTan2 => $s!(16, |x: $T, y: $T| x.atan2(y)),
            Equal => $c!(|x: $T, y: $T| x == y),
            EqualNan => $c!(|x: $T, y: $T| x == y || (x.is_nan() && y.is_nan())),
            NotEqual => $c!(|x: $T, y: $T| x != y),
            Greater => $c!(|x: $T, y: $T| x > y),
            GreaterEqual => $c!(|x: $T, y: $T| x >= y),
            Less => $c!(|x: $T, y: $T| x < y),
            LessEqual => $c!(|x: $T, y: $T| x <= y),
            LogicalAnd => $c!(|x: $T, y: $T| (x != 0.0) & (y != 0.0)),
            LogicalOr => $c!(|x: $T, y: $T| (x != 0.0) | (y != 0.0)),
            op => return Err(unsupported(op, $d)),
        }
    }};
}

fn run_f32(op: BinaryOp, a: &Array, b: &Array, shape: &[usize], od: &Data) -> Result<()> {
    macro_rules! s {
        ($cost:expr, $f:expr) => {
            drive(&Same::<f32, _>($f, PhantomData), a, b, shape, od, $cost)
        };
    }
    macro_rules! c {
        ($f:expr) => {
            drive(&Cmp::<f32, _>($f, PhantomData), a, b, shape, od, 1)
        };
    }
    float_ops!(f32, op, s, c, Dtype::F32);
    Ok(())
}

fn run_f64(op: BinaryOp, a: &Array, b: &Array, shape: &[usize], od: &Data) -> Result<()> {
    macro_rules! s {
        ($cost:expr, $f:expr) => {
            drive(&Same::<f64, _>($f, PhantomData), a, b, shape, od, $cost)
        };
    }
    macro_rules! c {
        ($f:expr) => {
            drive(&Cmp::<f64, _>($f, PhantomData), a, b, shape, od, 1)
        };
    }
    float_ops!(f64, op, s, c, Dtype::F64);
    Ok(())
}

fn run_half<H: HalfT + StoreFrom<f32>>(
    op: BinaryOp,
    a: &Array,
    b: &Array,
    shape: &[usize],
    od: &Data,
    d: Dtype,
) -> Result<()> {
    macro_rules! s {
        ($cost:expr, $f:expr) => {
            drive(&Half::<H, H, _>($f, PhantomData), a, b, shape, od, $cost)
        };
    }
    macro_rules! c {
        ($f:expr) => {
            drive(&Half::<H, bool, _>($f, PhantomData), a, b, shape, od, 1)
        };
    }
    float_ops!(f32, op, s, c, d);
    Ok(())
}

/// Integer helpers with wrapping and Python floor semantics.
trait IntT:
    Element + Ord + std::ops::BitAnd<Output = Self> + std::ops::BitOr<Output = Self> + std::ops::BitXor<Output = Self>
{
    const ZERO: Self;
    fn w_add(self, y: Self) -> Self;
    fn w_sub(self, y: Self) -> Self;
    fn w_mul(self, y: Self) -> Self;
    fn floordiv(self, y: Self) -> Self;
    fn rem_py(self, y: Self) -> Self;
    fn ipow(self, y: Self) -> Self;
    fn shl(self, y: Self) -> Self;
    fn shr(self, y: Self) -> Self;
}

macro_rules! int_t {
    ($t:ty, $signed:expr) => {
        impl IntT for $t {
            const ZERO: Self = 0;
            #[inline(always)]
            fn w_add(self, y: Self) -> Self {
                self.wrapping_add(y)
            }
            #[inline(always)]
            fn w_sub(self, y: Self) -> Self {
                self.wrapping_sub(y)
            }
            #[inline(always)]
            fn w_mul(self, y: Self) -> Self {
                self.wrapping_mul(y)
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn floordiv(self, y: Self) -> Self {
                if y == 0 {
                    return 0;
                }
                let q = self.wrapping_div(y);
                let r = self.wrapping_rem(y);
                if $signed && r != 0 && ((r < 0) != (y < 0)) {
                    q.wrapping_sub(1)
                } else {
                    q
                }
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn rem_py(self, y: Self) -> Self {
                if y == 0 {
                    return self;
                }
                let r = self.wrapping_rem(y);
                if $signed && r != 0 && ((r < 0) != (y < 0)) {
                    r.wrapping_add(y)
                } else {
                    r
                }
            }
            #[inline(always)]
            #[allow(unused_comparisons)]
            fn ipow(self, y: Self) -> Self {
                if y < 0 {
                    return 0;
                }
                let (mut base, mut e, mut r) = (self, y as u64, 1 as $t);
                while e > 0 {
                    if e & 1 == 1 {
                        r = r.wrapping_mul(base);
                    }
                    base = base.wrapping_mul(base);
                    e >>= 1;
                }
                r
            }
            #[inline(always)]
            fn shl(self, y: Self) -> Self {
                if (y as u64) < <$t>::BITS as u64 {
                    self.wrapping_shl(y as u32)
                } else {
                    0
                }
            }
            #[inline(always)]
            fn shr(self, y: Self) -> Self {
                if (y as u64) < <$t>::BITS as u64 {
                    self.wrapping_shr(y as u32)
                } else if $signed {
                    self.wrapping_shr(<$t>::BITS - 1)
                } else {
                    0
                }
            }
        }
    };
}
int_t!(u8, false);
int_t!(u16, false);
int_t!(u32, false);
int_t!(u64, false);
int_t!(i8, true);
int_t!(i16, true);
int_t!(i32, true);
int_t!(i64, true);

fn run_int<T: IntT>(op: BinaryOp, a: &Array, b: &Array, shape: &[usize], od: &Data) -> Result<()> {
    macro_rules! s {
        ($cost:expr, $f:expr) => {
            drive(&Same::<T, _>($f, PhantomData), a, b, shape, od, $cost)
        };
    }
    macro_rules! c {
        ($f:expr) => {
            drive(&Cmp::<T, _>($f, PhantomData), a, b, shape, od, 1)
        };
    }
    use BinaryOp::*;
    match op {
        Add => s!(1, |x: T, y: T| x.w_add(y)),
        Subtract => s!(1, |x: T, y: T| x.w_sub(y)),
        Multiply => s!(1, |x: T, y: T| x.w_mul(y)),
        FloorDivide => s!(4, |x: T, y: T| x.floordiv(y)),
        Remainder => s!(4, |x: T, y: T| x.rem_py(y)),
        Power => s!(8, |x: T, y: T| x.ipow(y)),
        Maximum => s!(1, |x: T, y: T| if x > y { x } else { y }),
        Minimum => s!(1, |x: T, y: T| if x < y { x } else { y }),
        BitwiseAnd => s!(1, |x: T, y: T| x & y),
        BitwiseOr => s!(1, |x: T, y: T| x | y),
        BitwiseXor => s!(1, |x: T, y: T| x ^ y),
        LeftShift => s!(1, |x: T, y: T| x.shl(y)),
        RightShift => s!(1, |x: T, y: T| x.shr(y)),
        Equal | EqualNan => c!(|x: T, y: T| x == y),
        NotEqual => c!(|x: T, y: T| x != y),
        Greater => c!(|x: T, y: T| x > y),
        GreaterEqual => c!(|x: T, y: T| x >= y),
        Less => c!(|x: T, y: T| x < y),
        LessEqual => c!(|x: T, y: T| x <= y),
        LogicalAnd => c!(|x: T, y: T| (x != T::ZERO) & (y != T::ZERO)),
        LogicalOr => c!(|x: T, y: T| (x != T::ZERO) | (y != T::ZERO)),
        op => return Err(unsupported(op, T::DTYPE)),
    }
    Ok(())
}

/// Bools: add is or, subtract xor, multiply and (MLX); division-like ops
/// follow the integer rules on 0/1 with `x // 0 = 0` and `x % 0 = x`.
fn run_bool(op: BinaryOp, a: &Array, b: &Array, shape: &[usize], od: &Data) -> Result<()> {
    macro_rules! s {
        ($f:expr) => {
            drive(&Same::<bool, _>($f, PhantomData), a, b, shape, od, 1)
        };
    }
    use BinaryOp::*;
    match op {
        Add | Maximum | LogicalOr | BitwiseOr => s!(|x: bool, y: bool| x | y),
        Subtract | BitwiseXor | NotEqual => s!(|x: bool, y: bool| x ^ y),
        Multiply | FloorDivide | Minimum | LogicalAnd | BitwiseAnd => s!(|x: bool, y: bool| x & y),
        Remainder => s!(|x: bool, y: bool| x & !y),
        Power => s!(|x: bool, y: bool| x | !y),
        Equal | EqualNan => s!(|x: bool, y: bool| x == y),
        Greater => s!(|x: bool, y: bool| x & !y),
        GreaterEqual => s!(|x: bool, y: bool| x | !y),
        Less => s!(|x: bool, y: bool| !x & y),
        LessEqual => s!(|x: bool, y: bool| !x | y),
        op => return Err(unsupported(op, Dtype::Bool)),
    }
    Ok(())
}

#[inline(always)]
fn c_gt(x: c64, y: c64) -> bool {
    x.re > y.re || (x.re == y.re && x.im > y.im)
}
#[inline(always)]
fn c_nan(x: c64) -> bool {
    x.re.is_nan() || x.im.is_nan()
}

/// complex64: comparisons order lexicographically (real, then imaginary);
/// `floor_divide` is plain division, as in MLX.
fn run_complex(op: BinaryOp, a: &Array, b: &Array, shape: &[usize], od: &Data) -> Result<()> {
    macro_rules! s {
        ($cost:expr, $f:expr) => {
            drive(&Same::<c64, _>($f, PhantomData), a, b, shape, od, $cost)
        };
    }
    macro_rules! c {
        ($f:expr) => {
            drive(&Cmp::<c64, _>($f, PhantomData), a, b, shape, od, 1)
        };
    }
    use BinaryOp::*;
    match op {
        Add => s!(1, |x: c64, y: c64| x + y),
        Subtract => s!(1, |x: c64, y: c64| x - y),
        Multiply => s!(1, |x: c64, y: c64| x * y),
        Divide | FloorDivide => s!(4, |x: c64, y: c64| x / y),
        Power => s!(32, |x: c64, y: c64| x.powc(y)),
        Maximum => s!(1, |x: c64, y: c64| if c_gt(x, y) || c_nan(x) { x } else { y }),
        Minimum => s!(1, |x: c64, y: c64| if c_gt(y, x) || c_nan(x) { x } else { y }),
        LogAddExp => s!(32, |x: c64, y: c64| {
            let (m, o) = if x.re >= y.re { (x, y) } else { (y, x) };
            if m.re.is_infinite() {
                m
            } else {
                m + ((o - m).exp() + 1.0).ln()
            }
        }),
        Equal => c!(|x: c64, y: c64| x == y),
        EqualNan => c!(|x: c64, y: c64| x == y || (c_nan(x) && c_nan(y))),
        NotEqual => c!(|x: c64, y: c64| x != y),
        Greater => c!(c_gt),
        GreaterEqual => c!(|x: c64, y: c64| !c_gt(y, x) && !c_nan(x) && !c_nan(y)),
        Less => c!(|x: c64, y: c64| c_gt(y, x)),
        LessEqual => c!(|x: c64, y: c64| !c_gt(x, y) && !c_nan(x) && !c_nan(y)),
        LogicalAnd => c!(|x: c64, y: c64| (x != c64::new(0.0, 0.0)) & (y != c64::new(0.0, 0.0))),
        LogicalOr => c!(|x: c64, y: c64| (x != c64::new(0.0, 0.0)) | (y != c64::new(0.0, 0.0))),
        op => return Err(unsupported(op, Dtype::C64)),
    }
    Ok(())
}

/// `op(a, b)` broadcast to `out.shape`; `a` and `b` share a dtype.
pub fn binary(op: BinaryOp, a: &Array, b: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let od = alloc_or_donate(out, &[a, b])?;
    let shape = out.shape;
    match a.dtype() {
        Dtype::F32 => run_f32(op, a, b, shape, &od)?,
        Dtype::F64 => run_f64(op, a, b, shape, &od)?,
        Dtype::F16 => run_half::<f16>(op, a, b, shape, &od, Dtype::F16)?,
        Dtype::BF16 => run_half::<bf16>(op, a, b, shape, &od, Dtype::BF16)?,
        Dtype::Bool => run_bool(op, a, b, shape, &od)?,
        Dtype::C64 => run_complex(op, a, b, shape, &od)?,
        Dtype::U8 => run_int::<u8>(op, a, b, shape, &od)?,
        Dtype::U16 => run_int::<u16>(op, a, b, shape, &od)?,
        Dtype::U32 => run_int::<u32>(op, a, b, shape, &od)?,
        Dtype::U64 => run_int::<u64>(op, a, b, shape, &od)?,
        Dtype::I8 => run_int::<i8>(op, a, b, shape, &od)?,
        Dtype::I16 => run_int::<i16>(op, a, b, shape, &od)?,
        Dtype::I32 => run_int::<i32>(op, a, b, shape, &od)?,
        Dtype::I64 => run_int::<i64>(op, a, b, shape, &od)?,
    }
    Ok(od)
}
