//! Fused kernels of the `fast` namespace: RMS and layer normalisation (with
//! their backward passes), rotary position embeddings and blocked
//! (online-softmax) scaled dot-product attention.
//!
//! Everything is generic over the stored element type `T` and an accumulator
//! (`f32` for f32/f16/bf16, `f64` for f64). Where MLX rounds an intermediate
//! to the input dtype (its composed CPU graph does), half types round through
//! `T` at the same step, so results match MLX's to the last bit in most cases.
//! Rows are split across threads with `parallel_for`; the inner loops are
//! plain slice loops inside `multiversion!` functions so they vectorise.

use super::gemm::{gemm, GemmScalar, Mat};
use super::math::exp_flush_f32;
use super::reduce::{contiguous, slice_of};
use super::simd::{parallel_for, SendPtr};
use super::strided::alloc_out;
use crate::array::{Array, Data};
use crate::dtype::{bf16, f16, Dtype};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;
use std::sync::Mutex;

const LANES: usize = 16;

/// Accumulator arithmetic (f32 or f64).
pub(crate) trait Acc:
    GemmScalar
    + std::ops::Sub<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + PartialOrd
    + Default
{
    fn from_f32(x: f32) -> Self;
    fn from_f64(x: f64) -> Self;
    fn rsqrt(self) -> Self;
    /// e^x; for f32, results below e^-86 flush to 0 (see `exp_flush_f32`).
    fn exp(self) -> Self;
    const NEG_INF: Self;
}
impl Acc for f32 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn rsqrt(self) -> Self {
        1.0 / self.sqrt()
    }
    #[inline(always)]
    fn exp(self) -> Self {
        exp_flush_f32(self)
    }
    const NEG_INF: Self = f32::NEG_INFINITY;
}
impl Acc for f64 {
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x as f64
    }
    #[inline(always)]
    fn from_f64(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn rsqrt(self) -> Self {
        1.0 / self.sqrt()
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    const NEG_INF: Self = f64::NEG_INFINITY;
}

/// A stored element type and its accumulator.
pub(crate) trait Elt: Copy + Send + Sync + 'static {
    type A: Acc;
    /// The dtype's most negative finite value (MLX's `finfo.min`), as `A`.
    const MIN: f64;
    /// Whether the stored type is the accumulator type (f32, f64).
    const IS_ACC: bool;
    fn ld(self) -> Self::A;
    fn st(a: Self::A) -> Self;
    /// Rounds an accumulator value to this type's precision.
    #[inline(always)]
    fn round(a: Self::A) -> Self::A {
        Self::st(a).ld()
    }
}
impl Elt for f32 {
    type A = f32;
    const MIN: f64 = f32::MIN as f64;
    const IS_ACC: bool = true;
    #[inline(always)]
    fn ld(self) -> f32 {
        self
    }
    #[inline(always)]
    fn st(a: f32) -> Self {
        a
    }
}
impl Elt for f64 {
    type A = f64;
    const MIN: f64 = f64::MIN;
    const IS_ACC: bool = true;
    #[inline(always)]
    fn ld(self) -> f64 {
        self
    }
    #[inline(always)]
    fn st(a: f64) -> Self {
        a
    }
}
impl Elt for f16 {
    type A = f32;
    const MIN: f64 = -65504.0;
    const IS_ACC: bool = false;
    #[inline(always)]
    fn ld(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn st(a: f32) -> Self {
        f16::from_f32(a)
    }
}
impl Elt for bf16 {
    type A = f32;
    const MIN: f64 = -3.389_531_389_251_535_5e38;
    const IS_ACC: bool = false;
    #[inline(always)]
    fn ld(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn st(a: f32) -> Self {
        bf16::from_f32(a)
    }
}

fn unsupported(op: &str, dt: Dtype) -> Error {
    Error::unsupported(op, format!("No CPU kernel for {dt}."))
}

/// Dispatches `$body` with `$t` bound to the element type of a float dtype.
macro_rules! float_dispatch {
    ($op:expr, $dt:expr, $t:ident => $body:expr) => {
        match $dt {
            Dtype::F32 => {
                type $t = f32;
                $body
            }
            Dtype::F64 => {
                type $t = f64;
                $body
            }
            Dtype::F16 => {
                type $t = f16;
                $body
            }
            Dtype::BF16 => {
                type $t = bf16;
                $body
            }
            dt => return Err(unsupported($op, dt)),
        }
    };
}

/// Sums lanes pairwise.
#[inline(always)]
fn tree<A: Acc>(acc: &mut [A; LANES]) -> A {
    let mut w = LANES / 2;
    while w > 0 {
        for k in 0..w {
            let v = acc[k + w];
            acc[k] += v;
        }
        w /= 2;
    }
    acc[0]
}

/// Sum of a row (vectorised lanes).
#[inline(always)]
fn row_sum<A: Acc>(x: &[A]) -> A {
    let mut acc = [A::ZERO; LANES];
    let mut ch = x.chunks_exact(LANES);
    for c in &mut ch {
        for k in 0..LANES {
            acc[k] += c[k];
        }
    }
    let mut s = tree(&mut acc);
    for &v in ch.remainder() {
        s += v;
    }
    s
}

/// Sum of `a[i] * b[i]`.
#[inline(always)]
fn row_dot<A: Acc>(a: &[A], b: &[A]) -> A {
    let mut acc = [A::ZERO; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s = tree(&mut acc);
    for (&x, &y) in ca.remainder().iter().zip(cb.remainder()) {
        s += x * y;
    }
    s
}

fn rows_of(x: &Array) -> (usize, usize) {
    let d = *x.shape().last().unwrap_or(&1);
    (x.size().checked_div(d).unwrap_or(0), d)
}

/// A typed slice of a (row-contiguous) input, or an empty one.
fn input<T>(d: &Option<Data>, n: usize) -> &[T] {
    match d {
        Some(d) => slice_of(d, n),
        None => &[],
    }
}

// ------------------------------------------------------------------ rms / layer norm

crate::multiversion! {
    /// Normalises `rows` consecutive rows of length `d` (RMS when `center` is
    /// false, layer norm otherwise), then applies weight/bias with rounding
    /// through `T` after each step as MLX's graph does.
    fn norm_chunk<T: Elt>(x: &[T], w: &[T], b: &[T], out: &mut [T], d: usize, eps: f32, center: bool) {
        let mut buf = vec![T::A::ZERO; d];
        let inv_d = T::A::ONE / T::A::from_f64(d as f64);
        let eps = T::A::from_f32(eps);
        let wv: Vec<T::A> = w.iter().map(|v| v.ld()).collect();
        let bv: Vec<T::A> = b.iter().map(|v| v.ld()).collect();
        for (xr, o) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            for (t, v) in buf.iter_mut().zip(xr) {
                *t = v.ld();
            }
            let mu = if center { row_sum(&buf) * inv_d } else { T::A::ZERO };
            if center {
                for t in buf.iter_mut() {
                    *t -= mu;
                }
            }
            let r = (row_dot(&buf, &buf) * inv_d + eps).rsqrt();
            match (wv.is_empty(), bv.is_empty()) {
                (true, true) => {
                    for (o, &t) in o.iter_mut().zip(&buf) {
                        *o = T::st(t * r);
                    }
                }
                (false, true) => {
                    for ((o, &t), &w) in o.iter_mut().zip(&buf).zip(&wv) {
                        *o = T::st(T::round(t * r) * w);
                    }
                }
                (true, false) => {
                    for ((o, &t), &b) in o.iter_mut().zip(&buf).zip(&bv) {
                        *o = T::st(T::round(t * r) + b);
                    }
                }
                (false, false) => {
                    for (((o, &t), &w), &b) in o.iter_mut().zip(&buf).zip(&wv).zip(&bv) {
                        *o = T::st(T::round(T::round(t * r) * w) + b);
                    }
                }
            }
        }
    }
}

/// RMS normalisation (`center` false) or layer normalisation over the last
/// axis of `x`, with optional weight and bias of shape `(D,)` (all inputs
/// share `out.dtype`).
pub fn norm(
    x: &Array,
    w: Option<&Array>,
    b: Option<&Array>,
    eps: f32,
    center: bool,
    out: &OutSpec<'_>,
) -> Result<Data> {
    let op = if center { "layer_norm" } else { "rms_norm" };
    let xd = contiguous(x)?;
    let wd = w.map(contiguous).transpose()?;
    let bd = b.map(contiguous).transpose()?;
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    let (rows, d) = rows_of(x);
    if rows == 0 || d == 0 {
        return Ok(data);
    }
    float_dispatch!(op, x.dtype(), T => {
        let xs = slice_of::<T>(&xd, x.size());
        let ws = input::<T>(&wd, d);
        let bs = input::<T>(&bd, d);
        let dst = SendPtr(data.ptr::<T>());
        parallel_for(rows, d * 6, |range| {
            // SAFETY: rows `range` of the output belong to this task only.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(range.start * d), range.len() * d) };
            norm_chunk::<T>(&xs[range.start * d..range.end * d], ws, bs, o, d, eps, center);
        });
    });
    Ok(data)
}

crate::multiversion! {
    /// Backward pass over consecutive rows: writes dx and accumulates the
    /// weight gradient `dw += g * xhat` and bias gradient `db += g`.
    #[allow(clippy::too_many_arguments)]
    fn norm_vjp_chunk<T: Elt>(
        x: &[T], w: &[T], g: &[T], dx: &mut [T], dw: &mut [T::A], db: &mut [T::A], d: usize, eps: f32, center: bool
    ) {
        let mut xb = vec![T::A::ZERO; d];
        let mut gw = vec![T::A::ZERO; d];
        let inv_d = T::A::ONE / T::A::from_f64(d as f64);
        let eps = T::A::from_f32(eps);
        let wv: Vec<T::A> = w.iter().map(|v| v.ld()).collect();
        for ((xr, gr), o) in x.chunks_exact(d).zip(g.chunks_exact(d)).zip(dx.chunks_exact_mut(d)) {
            for (t, v) in xb.iter_mut().zip(xr) {
                *t = v.ld();
            }
            let mu = if center { row_sum(&xb) * inv_d } else { T::A::ZERO };
            if center {
                for t in xb.iter_mut() {
                    *t -= mu;
                }
            }
            let n = (row_dot(&xb, &xb) * inv_d + eps).rsqrt();
            // xb becomes xhat = xc * n.
            for t in xb.iter_mut() {
                *t *= n;
            }
            if wv.is_empty() {
                for (t, v) in gw.iter_mut().zip(gr) {
                    *t = v.ld();
                }
            } else {
                for ((t, v), &w) in gw.iter_mut().zip(gr).zip(&wv) {
                    *t = v.ld() * w;
                }
            }
            let m2 = row_dot(&gw, &xb) * inv_d;
            let m1 = if center { row_sum(&gw) * inv_d } else { T::A::ZERO };
            for ((o, &a), &h) in o.iter_mut().zip(&gw).zip(&xb) {
                *o = T::st(n * (a - m1 - h * m2));
            }
            if !dw.is_empty() {
                for ((acc, v), &h) in dw.iter_mut().zip(gr).zip(&xb) {
                    *acc += v.ld() * h;
                }
            }
            if !db.is_empty() {
                for (acc, v) in db.iter_mut().zip(gr) {
                    *acc += v.ld();
                }
            }
        }
    }
}

/// Gradients of [`norm`] given the output cotangent `g`: `dx`, then `dw`
/// when `outs` has a second entry (`has_weight`), then `db` (layer norm with a bias).
#[allow(clippy::too_many_arguments)]
pub fn norm_vjp(
    x: &Array,
    w: Option<&Array>,
    g: &Array,
    eps: f32,
    center: bool,
    want_dw: bool,
    want_db: bool,
    outs: &[OutSpec<'_>],
) -> Result<Vec<Data>> {
    let op = if center { "layer_norm_vjp" } else { "rms_norm_vjp" };
    let xd = contiguous(x)?;
    let gd = contiguous(g)?;
    let wd = w.map(contiguous).transpose()?;
    let dx = Data::contiguous(alloc_out(&outs[0])?, outs[0].shape);
    let (rows, d) = rows_of(x);
    let mut res = vec![dx.clone()];
    float_dispatch!(op, x.dtype(), T => {
        let xs = slice_of::<T>(&xd, x.size());
        let gs = slice_of::<T>(&gd, g.size());
        let ws = input::<T>(&wd, d);
        let dst = SendPtr(dx.ptr::<T>());
        type A = <T as Elt>::A;
        type Partial = (usize, Vec<A>, Vec<A>);
        let partials: Mutex<Vec<Partial>> = Mutex::new(Vec::new());
        if rows > 0 && d > 0 {
            parallel_for(rows, d * 10, |range| {
                let mut dw = vec![A::ZERO; if want_dw { d } else { 0 }];
                let mut db = vec![A::ZERO; if want_db { d } else { 0 }];
                let (s, e) = (range.start * d, range.end * d);
                // SAFETY: rows `range` of dx belong to this task only.
                let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(s), e - s) };
                norm_vjp_chunk::<T>(&xs[s..e], ws, &gs[s..e], o, &mut dw, &mut db, d, eps, center);
                partials.lock().unwrap_or_else(|p| p.into_inner()).push((range.start, dw, db));
            });
        }
        // Combine the per-task partial sums in row order (deterministic).
        let mut parts = partials.into_inner().unwrap_or_else(|p| p.into_inner());
        parts.sort_by_key(|p| p.0);
        let mut k = 1;
        for (want, sel) in [(want_dw, 0usize), (want_db, 1)] {
            if !want {
                continue;
            }
            let mut acc = vec![A::ZERO; d];
            for p in &parts {
                let v = if sel == 0 { &p.1 } else { &p.2 };
                for (a, &b) in acc.iter_mut().zip(v) {
                    *a += b;
                }
            }
            let spec = &outs[k];
            let buf = alloc_out(spec)?;
            let p = buf.as_ptr() as *mut T;
            for (i, &v) in acc.iter().enumerate() {
                // SAFETY: the buffer holds d elements of T.
                unsafe { *p.add(i) = T::st(v) };
            }
            res.push(Data::contiguous(buf, spec.shape));
            k += 1;
        }
    });
    Ok(res)
}

// ------------------------------------------------------------------ rope

crate::multiversion! {
    /// Rotates rows of length `d` (the first `dims` features, in pairs) with
    /// the cos/sin table of each row's position.
    #[allow(clippy::too_many_arguments)]
    fn rope_chunk<T: Elt>(
        x: &[T], out: &mut [T], tab_c: &[T::A], tab_s: &[T::A], first_row: usize, d: usize, dims: usize,
        t_len: usize, rows_per_b: usize, per_b: bool, traditional: bool, forward: bool
    ) {
        let half = dims / 2;
        for (k, (xr, o)) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
            let r = first_row + k;
            let t = r % t_len;
            let b = if per_b { r / rows_per_b } else { 0 };
            let base = (b * t_len + t) * half;
            let (c, s) = (&tab_c[base..base + half], &tab_s[base..base + half]);
            for i in 0..half {
                let (i1, i2) = if traditional { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (x1, x2) = (xr[i1].ld(), xr[i2].ld());
                let (a, bb, cc, dd) = (T::round(x1 * c[i]), T::round(x2 * s[i]), T::round(x1 * s[i]), T::round(x2 * c[i]));
                if forward {
                    o[i1] = T::st(a - bb);
                    o[i2] = T::st(cc + dd);
                } else {
                    o[i1] = T::st(bb + a);
                    o[i2] = T::st(dd - cc);
                }
            }
            o[dims..].copy_from_slice(&xr[dims..]);
        }
    }
}

/// Rotary embedding of `x` (`(B, ..., T, D)`): `offset` is an int32 scalar
/// or `(B,)` vector of starting positions, `freqs` optional float32 `(dims/2,)`
/// frequencies (otherwise `base^(-i/half)`); `forward` false applies the
/// inverse rotation.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &Array,
    offset: &Array,
    freqs: Option<&Array>,
    dims: usize,
    traditional: bool,
    base: f32,
    scale: f32,
    forward: bool,
    out: &OutSpec<'_>,
) -> Result<Data> {
    let xd = contiguous(x)?;
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    let nd = x.ndim();
    let (rows, d) = rows_of(x);
    if rows == 0 || d == 0 {
        return Ok(data);
    }
    let t_len = x.shape()[nd - 2];
    let rows_per_b = rows / x.shape()[0].max(1);
    let od = contiguous(offset)?;
    let offs: Vec<i64> = match offset.dtype() {
        Dtype::I32 => slice_of::<i32>(&od, offset.size()).iter().map(|&v| v as i64).collect(),
        Dtype::U32 => slice_of::<u32>(&od, offset.size()).iter().map(|&v| v as i64).collect(),
        dt => return Err(Error::invalid("rope", format!("offset must be int32 in the kernel, got {dt}."))),
    };
    let half = dims / 2;
    let inv_freq: Vec<f32> = match freqs {
        Some(f) => {
            let fd = contiguous(f)?;
            slice_of::<f32>(&fd, half).iter().map(|&v| 1.0 / v).collect()
        }
        None => {
            let step = base.ln() / half as f32;
            (0..half).map(|i| (-(i as f32) * step).exp()).collect()
        }
    };
    let per_b = offs.len() > 1;
    float_dispatch!("rope", x.dtype(), T => {
        type A = <T as Elt>::A;
        let mut tc: Vec<A> = Vec::with_capacity(offs.len() * t_len * half);
        let mut ts: Vec<A> = Vec::with_capacity(offs.len() * t_len * half);
        for &o in &offs {
            for t in 0..t_len {
                let pos = (t as f32 + o as f32) * scale;
                for &f in &inv_freq {
                    let th = pos * f;
                    tc.push(T::st(A::from_f32(th.cos())).ld());
                    ts.push(T::st(A::from_f32(th.sin())).ld());
                }
            }
        }
        let xs = slice_of::<T>(&xd, x.size());
        let dst = SendPtr(data.ptr::<T>());
        parallel_for(rows, d * 4, |range| {
            // SAFETY: rows `range` of the output belong to this task only.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(range.start * d), range.len() * d) };
            rope_chunk::<T>(
                &xs[range.start * d..range.end * d], o, &tc, &ts, range.start, d, dims, t_len, rows_per_b, per_b,
                traditional, forward,
            );
        });
    });
    Ok(data)
}

// ------------------------------------------------------------------ attention

/// Query rows per block: small enough that a causal mask leaves little of a
/// block's strip of scores masked out (and computed for nothing).
const BQ: usize = 32;
const BK: usize = 128;

/// A row-major copy of `x` in the accumulator type; with `scale`, each value
/// is multiplied by it and rounded through `T` first (MLX scales q in its dtype).
fn load_acc<T: Elt>(x: &Array, scale: Option<f32>) -> Result<Vec<T::A>> {
    let d = contiguous(x)?;
    let s = slice_of::<T>(&d, x.size());
    Ok(match scale {
        Some(sc) => {
            let sc = T::round(T::A::from_f32(sc));
            s.iter().map(|v| T::round(v.ld() * sc)).collect()
        }
        None => s.iter().map(|v| v.ld()).collect(),
    })
}

/// How the attention mask is given to the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskKind {
    /// No mask.
    None,
    /// Bottom-right aligned causal mask.
    Causal,
    /// An additive mask of the attention dtype, broadcast to `(B, Hq, Lq, Lk)`.
    Additive,
    /// A boolean mask (true = attend), broadcast to `(B, Hq, Lq, Lk)`.
    Bool,
}

/// Softmax attention `softmax(q·kᵀ·scale + mask)·v` over `(B, H, L, D)`
/// inputs, `k`/`v` with `Hq / Hkv`-fold fewer heads (grouped-query), computed
/// blockwise with an online softmax so the score matrix is never materialised.
pub fn sdpa(
    q: &Array,
    k: &Array,
    v: &Array,
    mask: Option<&Array>,
    kind: MaskKind,
    scale: f32,
    out: &OutSpec<'_>,
) -> Result<Data> {
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    if crate::shape::numel(out.shape) == 0 {
        return Ok(data);
    }
    if sdpa_few_queries(q, k, v, kind, scale, &data) {
        return Ok(data);
    }
    float_dispatch!("scaled_dot_product_attention", q.dtype(), T => {
        sdpa_typed::<T>(q, k, v, mask, kind, scale, &data)?;
    });
    Ok(data)
}

/// Most queries per head the direct path takes (decode steps).
const FEW_QUERIES: usize = 4;

/// Attention for a few f32 queries (LLM decoding), reading K and V in place
/// through their strides: a KV cache is a view of a larger pre-allocated
/// buffer, and copying (and transposing) it on every step would cost more
/// than the attention itself. Per query: scores `q·k_j`, softmax, `Σ p_j v_j`.
/// Returns false (doing nothing) for other shapes, dtypes or masks.
fn sdpa_few_queries(q: &Array, k: &Array, v: &Array, kind: MaskKind, scale: f32, out: &Data) -> bool {
    let (b_n, hq, lq, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, lk, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    if lq > FEW_QUERIES
        || lk == 0
        || hkv == 0
        || !matches!(kind, MaskKind::None | MaskKind::Causal)
        || [q, k, v].iter().any(|a| a.dtype() != Dtype::F32)
    {
        return false;
    }
    let (kd, vd) = (k.data(), v.data());
    if (dk > 1 && kd.strides()[3] != 1) || (dv > 1 && vd.strides()[3] != 1) {
        return false;
    }
    let Ok(qs) = load_acc::<f32>(q, Some(scale)) else { return false };
    let (ks, vs) = (kd.strides(), vd.strides());
    if ks[2] < dk as isize || vs[2] < dv as isize {
        // Overlapping or reversed rows (broadcast keys): the general path.
        return false;
    }
    let (kp, vp) = (SendPtr(kd.ptr::<f32>()), SendPtr(vd.ptr::<f32>()));
    let rep = hq / hkv;
    let coff = lk as isize - lq as isize;
    let dst = SendPtr(out.ptr::<f32>());
    parallel_for(b_n * hq, lq * lk * (dk + dv), |range| {
        let mut p = vec![0.0f32; lk];
        let mut o = vec![0.0f32; dv];
        for task in range {
            let (b, h) = (task / hq, task % hq);
            let kb = b as isize * ks[0] + (h / rep) as isize * ks[1];
            let vb = b as isize * vs[0] + (h / rep) as isize * vs[1];
            for i in 0..lq {
                let qrow = &qs[((b * hq + h) * lq + i) * dk..][..dk];
                // Causal: keys past the query's position are skipped (a row
                // that sees none attends to every key, as MLX does).
                let lim = i as isize + coff;
                let sees_none = kind == MaskKind::Causal && lim < 0;
                let kend = if kind == MaskKind::Causal && !sees_none { (lim as usize + 1).min(lk) } else { lk };
                // SAFETY: rows 0..kend of head (b, h/rep) lie inside K's and
                // V's views, whose row strides are at least a row long and
                // whose last axis is contiguous (both checked above).
                let (krows, vrows) = unsafe {
                    (rows_slice(kp.get().offset(kb), ks[2], kend, dk), rows_slice(vp.get().offset(vb), vs[2], kend, dv))
                };
                if sees_none {
                    // Every score of a row that sees no key is the same (uniform weights).
                    p[..kend].fill(0.0);
                } else if !fast_rows::scores(qrow, krows, ks[2] as usize, &mut p[..kend]) {
                    scores_f32(qrow, krows, ks[2] as usize, &mut p[..kend]);
                }
                let (mut m, mut l) = (f32::NEG_INFINITY, 0.0f32);
                o.fill(0.0);
                online_row::<f32>(&mut p[..kend], &mut m, &mut l, &mut o);
                if !fast_rows::weighted_sum(&p[..kend], vrows, vs[2] as usize, &mut o) {
                    weighted_sum_f32(&p[..kend], vrows, vs[2] as usize, &mut o);
                }
                let inv = 1.0 / l;
                // SAFETY: output row (b, h, i) belongs to this task only.
                let drow = unsafe { std::slice::from_raw_parts_mut(dst.get().add(((b * hq + h) * lq + i) * dv), dv) };
                for (d, &x) in drow.iter_mut().zip(&o) {
                    *d = x * inv;
                }
            }
        }
    });
    true
}

/// AVX-512 versions of [`scores_f32`] and [`weighted_sum_f32`] for head
/// sizes of 16, 32, 64 or 128: the query (or the output row) stays in
/// registers across all keys, so a key costs `d/16` FMAs plus one
/// horizontal sum. They return false when they do not apply.
mod fast_rows {
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    fn applies(d: usize) -> bool {
        cfg!(target_arch = "x86_64")
            && matches!(d, 16 | 32 | 64 | 128)
            && super::super::simd::level() == super::super::simd::Level::Avx512
    }

    /// `p[j] = q · k_j`, rows of `k` `stride` apart.
    pub(super) fn scores(q: &[f32], k: &[f32], stride: usize, p: &mut [f32]) -> bool {
        let d = q.len();
        if !applies(d) || (!p.is_empty() && k.len() < (p.len() - 1) * stride + d) {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512 is available (checked) and every row read lies in `k` (checked).
        unsafe {
            match d / 16 {
                1 => scores_c::<1>(q, k, stride, p),
                2 => scores_c::<2>(q, k, stride, p),
                4 => scores_c::<4>(q, k, stride, p),
                _ => scores_c::<8>(q, k, stride, p),
            }
        }
        true
    }

    /// `o += Σ_j p[j]·v_j`, rows of `v` `stride` apart.
    pub(super) fn weighted_sum(p: &[f32], v: &[f32], stride: usize, o: &mut [f32]) -> bool {
        let d = o.len();
        if !applies(d) || (!p.is_empty() && v.len() < (p.len() - 1) * stride + d) {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `scores`.
        unsafe {
            match d / 16 {
                1 => wsum_c::<1>(p, v, stride, o),
                2 => wsum_c::<2>(p, v, stride, o),
                4 => wsum_c::<4>(p, v, stride, o),
                _ => wsum_c::<8>(p, v, stride, o),
            }
        }
        true
    }

    /// # Safety
    /// AVX-512 must be available; `q` holds `16·C` values and `k` every row read.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
    unsafe fn scores_c<const C: usize>(q: &[f32], k: &[f32], stride: usize, p: &mut [f32]) {
        let mut qv = [_mm512_setzero_ps(); C];
        for (c, v) in qv.iter_mut().enumerate() {
            *v = _mm512_loadu_ps(q.as_ptr().add(16 * c));
        }
        let kp = k.as_ptr();
        for (j, pj) in p.iter_mut().enumerate() {
            let row = kp.add(j * stride);
            let mut acc = _mm512_mul_ps(qv[0], _mm512_loadu_ps(row));
            for (c, v) in qv.iter().enumerate().skip(1) {
                acc = _mm512_fmadd_ps(*v, _mm512_loadu_ps(row.add(16 * c)), acc);
            }
            *pj = _mm512_reduce_add_ps(acc);
        }
    }

    /// # Safety
    /// AVX-512 must be available; `o` holds `16·C` values and `v` every row read.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,fma")]
    unsafe fn wsum_c<const C: usize>(p: &[f32], v: &[f32], stride: usize, o: &mut [f32]) {
        let mut ov = [_mm512_setzero_ps(); C];
        for (c, x) in ov.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(o.as_ptr().add(16 * c));
        }
        let vp = v.as_ptr();
        for (j, &pj) in p.iter().enumerate() {
            let row = vp.add(j * stride);
            let w = _mm512_set1_ps(pj);
            for (c, x) in ov.iter_mut().enumerate() {
                *x = _mm512_fmadd_ps(w, _mm512_loadu_ps(row.add(16 * c)), *x);
            }
        }
        for (c, x) in ov.iter().enumerate() {
            _mm512_storeu_ps(o.as_mut_ptr().add(16 * c), *x);
        }
    }
}

/// `n` rows of `len` values, `stride` apart, as one slice.
///
/// # Safety
/// The rows must lie inside one live allocation.
unsafe fn rows_slice<'a, A>(p: *const A, stride: isize, n: usize, len: usize) -> &'a [A] {
    if n == 0 {
        return &[];
    }
    std::slice::from_raw_parts(p, (n - 1) * stride as usize + len)
}

crate::multiversion! {
    /// `p[j] = q · k_j` for rows `k_j = k[j·stride..][..q.len()]`.
    fn scores_f32(q: &[f32], k: &[f32], stride: usize, p: &mut [f32]) {
        let d = q.len();
        for (j, pj) in p.iter_mut().enumerate() {
            let kr = &k[j * stride..j * stride + d];
            let mut acc = [0.0f32; LANES];
            let mut cq = q.chunks_exact(LANES);
            let mut ck = kr.chunks_exact(LANES);
            for (x, y) in (&mut cq).zip(&mut ck) {
                for l in 0..LANES {
                    acc[l] += x[l] * y[l];
                }
            }
            let mut s = tree(&mut acc);
            for (x, y) in cq.remainder().iter().zip(ck.remainder()) {
                s += x * y;
            }
            *pj = s;
        }
    }
}

crate::multiversion! {
    /// `o += Σ_j p[j]·v_j` for rows `v_j = v[j·stride..][..o.len()]`.
    fn weighted_sum_f32(p: &[f32], v: &[f32], stride: usize, o: &mut [f32]) {
        let d = o.len();
        for (j, &pj) in p.iter().enumerate() {
            for (ov, &x) in o.iter_mut().zip(&v[j * stride..j * stride + d]) {
                *ov += pj * x;
            }
        }
    }
}

/// The mask of one attention problem, applied to rows of scores the same way
/// by the forward and the backward kernels: causal positions past a query's
/// last visible key, and `false` entries of a boolean mask, become the
/// dtype's lowest value; an additive mask is added.
struct ScoreMask<A> {
    kind: MaskKind,
    /// `L_k - L_q`: the causal diagonal's offset.
    coff: isize,
    minv: A,
    /// The mask array's data and strides (`Additive`/`Bool` only).
    data: Option<Data>,
    strides: Vec<isize>,
}

impl<A: Acc> ScoreMask<A> {
    fn new<T: Elt<A = A>>(mask: Option<&Array>, kind: MaskKind, lq: usize, lk: usize) -> Self {
        let data = mask.map(|m| m.data());
        let strides = data.as_ref().map(|d| d.strides().to_vec()).unwrap_or_default();
        ScoreMask { kind, coff: lk as isize - lq as isize, minv: A::from_f64(T::MIN), data, strides }
    }

    /// How many keys a block of queries `i0..i0 + bq` has to look at: with a
    /// causal mask, keys past the block's last visible one are skipped —
    /// unless some row sees no key at all (MLX then averages over every key).
    fn key_end(&self, i0: usize, bq: usize, lk: usize) -> usize {
        if self.kind == MaskKind::Causal && i0 as isize + self.coff >= 0 {
            ((i0 + bq) as isize + self.coff).clamp(0, lk as isize) as usize
        } else {
            lk
        }
    }

    /// Masks `row`, the scores of query `gi` of head `(b, h)` against keys `j0..`.
    fn apply<T: Elt<A = A>>(&self, row: &mut [A], b: usize, h: usize, gi: usize, j0: usize) {
        self.visit::<T>(row, b, h, gi, j0, self.minv, true);
    }

    /// Zeroes the score gradients of `row` (as [`ScoreMask::apply`]'s) that
    /// the mask replaced: they do not reach q·kᵀ. (Elsewhere P is 0 there
    /// anyway, but not in a row that sees no key.)
    fn clear<T: Elt<A = A>>(&self, row: &mut [A], b: usize, h: usize, gi: usize, j0: usize) {
        self.visit::<T>(row, b, h, gi, j0, A::ZERO, false);
    }

    /// Sets the masked-out entries of `row` to `to`; adds an additive mask when `add`.
    #[allow(clippy::too_many_arguments)]
    fn visit<T: Elt<A = A>>(&self, row: &mut [A], b: usize, h: usize, gi: usize, j0: usize, to: A, add: bool) {
        match self.kind {
            MaskKind::None => {}
            MaskKind::Causal => {
                let first = (gi as isize + self.coff + 1 - j0 as isize).clamp(0, row.len() as isize) as usize;
                row[first..].fill(to);
            }
            MaskKind::Additive if !add => {}
            MaskKind::Additive | MaskKind::Bool => {
                let (d, st) = (self.data.as_ref().expect("mask data"), &self.strides);
                let ro = b as isize * st[0] + h as isize * st[1] + gi as isize * st[2];
                for (j, x) in row.iter_mut().enumerate() {
                    let off = ro + (j0 + j) as isize * st[3];
                    if self.kind == MaskKind::Bool {
                        // SAFETY: (b, h, gi, j0 + j) is inside the mask's broadcast view.
                        if !unsafe { *d.ptr::<bool>().offset(off) } {
                            *x = to;
                        }
                    } else {
                        // SAFETY: as above; the additive mask has dtype T.
                        *x += unsafe { *d.ptr::<T>().offset(off) }.ld();
                    }
                }
            }
        }
    }
}

/// `dst[t·ldd + i] = src[i·lds + t]` for `i < rows`, `t < cols`: through
/// AVX-512 register blocks for f32, else a plain loop.
fn transpose_into<A: Acc>(src: &[A], rows: usize, cols: usize, lds: usize, dst: &mut [A], ldd: usize) {
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<A>() == 4 && super::sgemm::available() {
        // SAFETY: A is f32 (the only 4-byte Acc): the casts are identities.
        let (s, d) = unsafe {
            (
                std::slice::from_raw_parts(src.as_ptr() as *const f32, src.len()),
                std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut f32, dst.len()),
            )
        };
        super::sgemm::transpose(s, rows, cols, lds, d, ldd);
        return;
    }
    for (i, row) in src.chunks(lds).take(rows).enumerate() {
        for (t, &x) in row[..cols].iter().enumerate() {
            dst[t * ldd + i] = x;
        }
    }
}

/// The `(L, D)` matrices of a `(B, H, L, D)` attention input as rows of
/// accumulators, read in place when the array is stored in the accumulator
/// type with contiguous, non-overlapping rows (such as the head-split,
/// transposed view of a projection), otherwise from a converted copy.
struct HeadRows<A> {
    /// Keep the memory `ptr` points into alive: the array's, or the copy's.
    _data: Data,
    _copy: Vec<A>,
    ptr: SendPtr<A>,
    /// Batch, head and row strides.
    strides: [isize; 3],
    rows: usize,
    d: usize,
}

impl<A: Acc> HeadRows<A> {
    fn new<T: Elt<A = A>>(x: &Array) -> Result<Self> {
        let (h, rows, d) = (x.shape()[1], x.shape()[2], x.shape()[3]);
        let data = x.data();
        let st = data.strides().to_vec();
        let in_place =
            T::IS_ACC && (d <= 1 || st[3] == 1) && st[2] >= d as isize && st[0] >= 0 && st[1] >= 0 && x.size() > 0;
        if in_place {
            return Ok(HeadRows {
                ptr: SendPtr(data.ptr::<A>()),
                _data: data,
                _copy: Vec::new(),
                strides: [st[0], st[1], st[2]],
                rows,
                d,
            });
        }
        let copy = load_acc::<T>(x, None)?;
        let (rows_i, d_i) = (rows as isize, d as isize);
        Ok(HeadRows {
            ptr: SendPtr(copy.as_ptr() as *mut A),
            _data: data,
            _copy: copy,
            strides: [h as isize * rows_i * d_i, rows_i * d_i, d_i],
            rows,
            d,
        })
    }

    /// Rows `r0..r0 + n` of head `(b, h)` and their stride.
    fn rows(&self, b: usize, h: usize, r0: usize, n: usize) -> (&[A], usize) {
        assert!(r0 + n <= self.rows, "rows {r0}+{n} of {}", self.rows);
        let [sb, sh, sr] = self.strides;
        let off = b as isize * sb + h as isize * sh + r0 as isize * sr;
        // SAFETY: (b, h) is a head of the array (callers index within its
        // shape) and the rows r0..r0+n exist (asserted); strides are
        // non-negative and rows at least `d` apart (checked in `new`, or
        // the row-major copy), so the span lies inside the array's buffer
        // (or `copy`), which `self` keeps alive.
        let s = unsafe { rows_slice(self.ptr.get().offset(off) as *const A, sr, n, self.d) };
        (s, sr as usize)
    }
}

/// `dst (rows × d, row-major) = T(src · scale)` for `rows` rows of `src`
/// `ld` apart: q scaled as MLX scales it, in its dtype.
fn scale_rows<T: Elt>(src: &[T::A], ld: usize, rows: usize, d: usize, scale: T::A, dst: &mut [T::A]) {
    for (dst, src) in dst.chunks_exact_mut(d.max(1)).zip(src.chunks(ld)).take(rows) {
        for (o, &x) in dst.iter_mut().zip(src) {
            *o = T::round(x * scale);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn sdpa_typed<T: Elt>(
    q: &Array,
    k: &Array,
    v: &Array,
    mask: Option<&Array>,
    kind: MaskKind,
    scale: f32,
    out: &Data,
) -> Result<()> {
    let (b_n, hq, lq, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, lk, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    let rep = hq / hkv.max(1);
    let (qr, kr, vr) = (HeadRows::new::<T>(q)?, HeadRows::new::<T>(k)?, HeadRows::new::<T>(v)?);
    // MLX scales q in its dtype.
    let sc = T::round(T::A::from_f32(scale));
    let sm = ScoreMask::new::<T>(mask, kind, lq, lk);
    let nqb = lq.div_ceil(BQ);
    let tasks = b_n * hq * nqb;
    let dst = SendPtr(out.ptr::<T>());
    // kᵀ blocks are padded to whole vectors (the transpose writes 16 at a time).
    let ldt = BK.next_multiple_of(16);
    parallel_for(tasks, BQ * lk * (dk + dv) / 8, |range| {
        let mut s = vec![T::A::ZERO; BQ * BK];
        let mut o = vec![T::A::ZERO; BQ * dv];
        let mut qb = vec![T::A::ZERO; BQ * dk];
        let mut kt = vec![T::A::ZERO; dk * ldt];
        let mut m = [T::A::NEG_INF; BQ];
        let mut l = [T::A::ZERO; BQ];
        for task in range {
            let qi = task % nqb;
            let h = (task / nqb) % hq;
            let b = task / (nqb * hq);
            let hk = h / rep;
            let i0 = qi * BQ;
            let bq = BQ.min(lq - i0);
            let (qrows, ldq) = qr.rows(b, h, i0, bq);
            scale_rows::<T>(qrows, ldq, bq, dk, sc, &mut qb);
            o[..bq * dv].fill(T::A::ZERO);
            m.fill(T::A::NEG_INF);
            l.fill(T::A::ZERO);
            let kend = sm.key_end(i0, bq, lk);
            let mut j0 = 0;
            while j0 < kend {
                let bk = BK.min(kend - j0);
                let (krows, ldk) = kr.rows(b, hk, j0, bk);
                transpose_into(krows, bk, dk, ldk, &mut kt, ldt);
                mm(bq, bk, dk, &qb, dk, &kt, ldt, &mut s, BK, false);
                for i in 0..bq {
                    let row = &mut s[i * BK..i * BK + bk];
                    sm.apply::<T>(row, b, h, i0 + i, j0);
                    online_row::<T::A>(row, &mut m[i], &mut l[i], &mut o[i * dv..(i + 1) * dv]);
                }
                let (vrows, ldv) = vr.rows(b, hk, j0, bk);
                mm(bq, dv, bk, &s, BK, vrows, ldv, &mut o, dv, true);
                j0 += bk;
            }
            let obase = ((b * hq + h) * lq + i0) * dv;
            // SAFETY: output rows i0..i0+bq of head (b, h) belong to this task only.
            let dstrow = unsafe { std::slice::from_raw_parts_mut(dst.get().add(obase), bq * dv) };
            for i in 0..bq {
                let inv = T::A::ONE / l[i];
                for (d, &x) in dstrow[i * dv..(i + 1) * dv].iter_mut().zip(&o[i * dv..(i + 1) * dv]) {
                    *d = T::st(x * inv);
                }
            }
        }
    });
    Ok(())
}

/// Gradients of [`sdpa`] with respect to `q`, `k` and `v` for the cotangent
/// `g` of its output, fused (FlashAttention's backward pass, one key/value
/// head per task). Each block of queries recomputes its strip of scores `S`
/// and their exact softmax `P` — as the forward pass does, so the same keys
/// are masked and skipped — then `dP = g·vᵀ`, `dS = P∘(dP − rowsum(P∘dP))`,
/// `dq = scale·dS·k`, `dkᵀ += (scale·q)ᵀ·dS` and `dvᵀ += gᵀ·P`. The strips
/// stay in cache; only q, k, v, g and the three gradients touch memory, and
/// with a causal mask the blocks past the diagonal are never computed.
#[allow(clippy::too_many_arguments)]
pub fn sdpa_vjp(
    q: &Array,
    k: &Array,
    v: &Array,
    mask: Option<&Array>,
    g: &Array,
    kind: MaskKind,
    scale: f32,
    outs: &[OutSpec<'_>],
) -> Result<Vec<Data>> {
    let datas: Vec<Data> = outs.iter().map(|o| Ok(Data::contiguous(alloc_out(o)?, o.shape))).collect::<Result<_>>()?;
    float_dispatch!("scaled_dot_product_attention_vjp", q.dtype(), T => {
        sdpa_vjp_typed::<T>(q, k, v, mask, g, kind, scale, &datas)?;
    });
    Ok(datas)
}

#[allow(clippy::too_many_arguments)]
fn sdpa_vjp_typed<T: Elt>(
    q: &Array,
    k: &Array,
    v: &Array,
    mask: Option<&Array>,
    g: &Array,
    kind: MaskKind,
    scale: f32,
    outs: &[Data],
) -> Result<()> {
    let (b_n, hq, lq, dk) = (q.shape()[0], q.shape()[1], q.shape()[2], q.shape()[3]);
    let (hkv, lk, dv) = (k.shape()[1], k.shape()[2], v.shape()[3]);
    if b_n * hkv == 0 {
        return Ok(());
    }
    let rep = hq / hkv;
    let (qr, kr, vr, gr) =
        (HeadRows::new::<T>(q)?, HeadRows::new::<T>(k)?, HeadRows::new::<T>(v)?, HeadRows::new::<T>(g)?);
    let sm = ScoreMask::new::<T>(mask, kind, lq, lk);
    // The forward pass multiplies q by the scale rounded to T, and rounds the product.
    let sc = T::round(T::A::from_f32(scale));
    let (dq, dkp, dvp) = (SendPtr(outs[0].ptr::<T>()), SendPtr(outs[1].ptr::<T>()), SendPtr(outs[2].ptr::<T>()));
    // Transposed matrices keep rows of whole vectors (the transpose writes 16 at a time).
    let (lkp, lqp) = (lk.next_multiple_of(16), lq.next_multiple_of(16));
    parallel_for(b_n * hkv, rep * lq * lk * (dk + dv) / 2, |range| {
        let z = T::A::ZERO;
        let (mut kt, mut vt) = (vec![z; dk * lkp], vec![z; dv * lkp]);
        let (mut qs, mut qt, mut gt) = (vec![z; lq * dk], vec![z; dk * lqp], vec![z; dv * lqp]);
        let (mut dkt, mut dvt) = (vec![z; dk * lkp], vec![z; dv * lkp]);
        let (mut p, mut ds) = (vec![z; BQ * lk], vec![z; BQ * lk]);
        let mut blk = vec![z; (BQ * dk).max(lk * dk.max(dv))];
        for task in range {
            let (b, hk) = (task / hkv, task % hkv);
            let (krows, ldk) = kr.rows(b, hk, 0, lk);
            let (vrows, ldv) = vr.rows(b, hk, 0, lk);
            transpose_into(krows, lk, dk, ldk, &mut kt, lkp);
            transpose_into(vrows, lk, dv, ldv, &mut vt, lkp);
            dkt.fill(z);
            dvt.fill(z);
            for h in hk * rep..(hk + 1) * rep {
                let (qrows, ldq) = qr.rows(b, h, 0, lq);
                let (grows, ldg) = gr.rows(b, h, 0, lq);
                scale_rows::<T>(qrows, ldq, lq, dk, sc, &mut qs);
                transpose_into(&qs, lq, dk, dk, &mut qt, lqp);
                transpose_into(grows, lq, dv, ldg, &mut gt, lqp);
                for i0 in (0..lq).step_by(BQ) {
                    let bq = BQ.min(lq - i0);
                    let kend = sm.key_end(i0, bq, lk);
                    // S, then P in place: every row's exact softmax.
                    mm(bq, kend, dk, &qs[i0 * dk..], dk, &kt, lkp, &mut p, kend, false);
                    for (i, row) in p.chunks_exact_mut(kend.max(1)).take(bq).enumerate() {
                        sm.apply::<T>(row, b, h, i0 + i, 0);
                    }
                    softmax_rows(&mut p, kend, bq);
                    // dP, then dS in place; entries the mask replaced get no gradient.
                    mm(bq, kend, dv, &grows[i0 * ldg..], ldg, &vt, lkp, &mut ds, kend, false);
                    softmax_grad_rows(&p, &mut ds, kend, bq);
                    if kind != MaskKind::None {
                        for (i, row) in ds.chunks_exact_mut(kend.max(1)).take(bq).enumerate() {
                            sm.clear::<T>(row, b, h, i0 + i, 0);
                        }
                    }
                    mm(dv, kend, bq, &gt[i0..], lqp, &p, kend, &mut dvt, lkp, true);
                    mm(dk, kend, bq, &qt[i0..], lqp, &ds, kend, &mut dkt, lkp, true);
                    mm(bq, dk, kend, &ds, kend, krows, ldk, &mut blk, dk, false);
                    // SAFETY: rows i0..i0+bq of query head (b, h) belong to this task only.
                    let dst =
                        unsafe { std::slice::from_raw_parts_mut(dq.get().add(((b * hq + h) * lq + i0) * dk), bq * dk) };
                    store_scaled(&blk[..bq * dk], sc, dst);
                }
            }
            for (grad, t, d) in [(dkp, &dkt, dk), (dvp, &dvt, dv)] {
                transpose_into(t, d, lk, lkp, &mut blk, d);
                // SAFETY: key/value head (b, hk)'s gradients belong to this task only.
                let dst = unsafe { std::slice::from_raw_parts_mut(grad.get().add(task * lk * d), lk * d) };
                store_scaled(&blk[..lk * d], T::A::ONE, dst);
            }
        }
    });
    Ok(())
}

/// `y (m×n) (+)= x (m×k) · b (k×n)`, every operand row-major with row strides
/// `ldx`, `ldb` and `ldy`: the small products of an attention block, through
/// [`super::sgemm::gemm_nn`] for f32 on AVX-512, otherwise the GEMM.
#[allow(clippy::too_many_arguments)]
fn mm<A: Acc>(
    m: usize,
    n: usize,
    k: usize,
    x: &[A],
    ldx: usize,
    b: &[A],
    ldb: usize,
    y: &mut [A],
    ldy: usize,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let extent = |rows: usize, ld: usize, cols: usize| if rows == 0 { 0 } else { (rows - 1) * ld + cols };
    assert!(
        ldx >= k
            && ldb >= n
            && ldy >= n
            && x.len() >= extent(m, ldx, k)
            && b.len() >= extent(k, ldb, n)
            && y.len() >= extent(m, ldy, n),
        "attention product {m}×{n}×{k} out of bounds"
    );
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<A>() == 4 && super::sgemm::available() {
        // SAFETY: A is f32 (the only 4-byte Acc), so the casts are
        // identities; sgemm is available and the operands hold the rows
        // asserted above; y is a distinct &mut slice.
        unsafe {
            super::sgemm::gemm_nn(
                m,
                n,
                k,
                x.as_ptr() as *const f32,
                ldx,
                b.as_ptr() as *const f32,
                ldb,
                y.as_mut_ptr() as *mut f32,
                ldy,
                accumulate,
            );
        }
        return;
    }
    // SAFETY: the extents are asserted above.
    unsafe {
        gemm(
            m,
            n,
            k,
            y.as_mut_ptr(),
            ldy as isize,
            1,
            Mat { ptr: x.as_ptr(), rs: ldx as isize, cs: 1 },
            Mat { ptr: b.as_ptr(), rs: ldb as isize, cs: 1 },
            A::ONE,
            accumulate.then_some(A::ONE),
            1,
        );
    }
}

crate::multiversion! {
    /// Exact softmax in place of the first `rows` rows of `n` values of `x`
    /// (the backward pass sees whole rows).
    fn softmax_rows<A: Acc>(x: &mut [A], n: usize, rows: usize) {
        for row in x.chunks_exact_mut(n.max(1)).take(rows) {
            let mut lanes = [A::NEG_INF; LANES];
            let mut ch = row.chunks_exact(LANES);
            for c in &mut ch {
                for k in 0..LANES {
                    lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
                }
            }
            let mut mx = A::NEG_INF;
            for &x in lanes.iter().chain(ch.remainder()) {
                mx = if x > mx { x } else { mx };
            }
            let mut acc = [A::ZERO; LANES];
            let mut ch = row.chunks_exact_mut(LANES);
            for c in &mut ch {
                for k in 0..LANES {
                    c[k] = (c[k] - mx).exp();
                    acc[k] += c[k];
                }
            }
            let mut sum = tree(&mut acc);
            for x in ch.into_remainder() {
                *x = (*x - mx).exp();
                sum += *x;
            }
            let inv = A::ONE / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    }
}

crate::multiversion! {
    /// Softmax's backward pass in place on the first `rows` rows of `n`
    /// values: `dp ← p∘(dp − rowsum(p∘dp))`.
    fn softmax_grad_rows<A: Acc>(p: &[A], dp: &mut [A], n: usize, rows: usize) {
        for (pr, dr) in p.chunks_exact(n.max(1)).zip(dp.chunks_exact_mut(n.max(1))).take(rows) {
            let d = row_dot(pr, dr);
            for (x, &pj) in dr.iter_mut().zip(pr) {
                *x = pj * (*x - d);
            }
        }
    }
}

crate::multiversion! {
    /// `dst[i] = T(src[i] · scale)`.
    fn store_scaled<T: Elt>(src: &[T::A], scale: T::A, dst: &mut [T]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = T::st(x * scale);
        }
    }
}

crate::multiversion! {
    /// One online-softmax step for a score row: updates the running max `m`
    /// and sum `l`, rescales the accumulated output row, and turns the row
    /// into `exp(s - m)`.
    fn online_row<A: Acc>(row: &mut [A], m: &mut A, l: &mut A, o: &mut [A]) {
        let mut lanes = [*m; LANES];
        let mut mc = row.chunks_exact(LANES);
        for c in &mut mc {
            for k in 0..LANES {
                lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
            }
        }
        let mut mx = *m;
        for &x in lanes.iter().chain(mc.remainder()) {
            mx = if x > mx { x } else { mx };
        }
        if mx == A::NEG_INF {
            // Every score so far is -inf: nothing to add (the row ends as 0/0 = NaN, as MLX).
            row.fill(A::ZERO);
            return;
        }
        let corr = (*m - mx).exp();
        let mut acc = [A::ZERO; LANES];
        let mut ch = row.chunks_exact_mut(LANES);
        for c in &mut ch {
            for k in 0..LANES {
                let e = (c[k] - mx).exp();
                c[k] = e;
                acc[k] += e;
            }
        }
        let mut sum = tree(&mut acc);
        for x in ch.into_remainder() {
            let e = (*x - mx).exp();
            *x = e;
            sum += e;
        }
        if corr != A::ONE {
            for v in o.iter_mut() {
                *v *= corr;
            }
        }
        *l = *l * corr + sum;
        *m = mx;
    }
}
