//! FFT kernels: n-dimensional complex, real-to-complex and complex-to-real
//! transforms of any length (rustfft's mixed-radix, Rader and Bluestein plans).
//!
//! A transform over several axes runs as one pass per axis over a row-major
//! working buffer. Along the last axis the lines are contiguous and batches of
//! them go straight to rustfft; along another axis tiles of [`TILE`] lines are
//! transposed into a small buffer, transformed and written back, so memory is
//! walked in cache-friendly rows. Real transforms of even length `n` run as a
//! complex transform of length `n / 2` on the packed signal (even samples as
//! real parts, odd samples as imaginary parts) plus a twiddle pass; odd
//! lengths use a full complex transform. Lines are split across threads; each
//! line is computed the same way whatever the batch, so batched and unbatched
//! calls give identical results.

use super::simd::{parallel_for, SendPtr};
use super::strided;
use crate::array::{Array, Data};
use crate::backend::FftKind;
use crate::dtype::{c64, Dtype};
use crate::error::Result;
use crate::primitive::OutSpec;
use rustfft::{Fft, FftDirection, FftPlanner};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Lines per transposed tile for transforms along a non-last axis.
const TILE: usize = 16;

type Plan = Arc<dyn Fft<f32>>;

/// The plan for a complex transform of `n` points (cached by rustfft's planner).
fn plan(n: usize, inverse: bool) -> Plan {
    static PLANNER: OnceLock<Mutex<FftPlanner<f32>>> = OnceLock::new();
    let p = PLANNER.get_or_init(|| Mutex::new(FftPlanner::new()));
    let mut p = p.lock().unwrap_or_else(|e| e.into_inner());
    let dir = if inverse { FftDirection::Inverse } else { FftDirection::Forward };
    p.plan_fft(n, dir)
}

/// `e^{-2 pi i k / n}` for `k < n / 2` (the twiddles of the packed real transform), cached by `n`.
fn real_twiddles(n: usize) -> Arc<Vec<c64>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Vec<c64>>>>> = OnceLock::new();
    let c = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut c = c.lock().unwrap_or_else(|e| e.into_inner());
    c.entry(n)
        .or_insert_with(|| {
            Arc::new(
                (0..n / 2)
                    .map(|k| {
                        let a = -2.0 * std::f64::consts::PI * k as f64 / n as f64;
                        c64::new(a.cos() as f32, a.sin() as f32)
                    })
                    .collect(),
            )
        })
        .clone()
}

/// What a real transform of `n` points needs: the complex plan (of `n / 2`
/// points for even `n`, `n` otherwise) and the twiddles of the packed form.
struct RealPlan {
    plan: Plan,
    tw: Arc<Vec<c64>>,
}

impl RealPlan {
    fn new(n: usize, inverse: bool) -> RealPlan {
        let packed = n.is_multiple_of(2) && n >= 4;
        RealPlan { plan: plan(if packed { n / 2 } else { n }, inverse), tw: real_twiddles(n) }
    }
}

/// Computes one FFT primitive. `x` is complex64 for [`FftKind::Forward`],
/// [`FftKind::Inverse`] and [`FftKind::Irfft`], float32 for [`FftKind::Rfft`];
/// `n_real` is the real length along the last listed axis of a real transform.
pub fn fft(x: &Array, axes: &[usize], kind: FftKind, n_real: usize, scale: f32, out: &OutSpec<'_>) -> Result<Data> {
    let last = *axes.last().expect("an FFT has at least one axis");
    let others = &axes[..axes.len() - 1];
    match kind {
        FftKind::Forward | FftKind::Inverse => {
            let w = if x.is_donatable() && x.dtype() == Dtype::C64 && x.shape() == out.shape {
                // The input is used by nobody else: transform its buffer in place.
                let d = x.data();
                Data::contiguous_shared(d.buffer().clone(), out.shape)
            } else {
                strided::copy(x, &OutSpec { shape: out.shape, dtype: Dtype::C64 })?
            };
            if x.size() > 0 {
                let p = SendPtr(w.ptr::<c64>());
                for (i, &ax) in axes.iter().enumerate() {
                    let s = if i + 1 == axes.len() { scale } else { 1.0 };
                    c2c_pass(p, out.shape, ax, kind == FftKind::Inverse, s);
                }
            }
            Ok(w)
        }
        FftKind::Rfft => {
            let xd = x.data();
            let src = if xd.is_row_contiguous() && x.dtype() == Dtype::F32 {
                xd
            } else {
                strided::copy(x, &OutSpec { shape: x.shape(), dtype: Dtype::F32 })?
            };
            let dst = Data::contiguous(strided::alloc_out(out)?, out.shape);
            if out.shape.iter().product::<usize>() > 0 {
                let p = SendPtr(dst.ptr::<c64>());
                let s_last = if others.is_empty() { scale } else { 1.0 };
                let rp = RealPlan::new(n_real, false);
                real_pass::<f32, c64>(
                    SendPtr(src.ptr::<f32>()),
                    p,
                    x.shape(),
                    last,
                    n_real,
                    n_real / 2 + 1,
                    |src, dst, scratch| rfft_line(&rp, src, dst, scratch, s_last),
                    n_real,
                );
                for (i, &ax) in others.iter().enumerate() {
                    let s = if i + 1 == others.len() { scale } else { 1.0 };
                    c2c_pass(p, out.shape, ax, false, s);
                }
            }
            Ok(dst)
        }
        FftKind::Irfft => {
            let xd = x.data();
            // The complex passes over the other axes need a private copy; the final pass only reads.
            let w = if others.is_empty() && xd.is_row_contiguous() && x.dtype() == Dtype::C64 {
                xd
            } else {
                strided::copy(x, &OutSpec { shape: x.shape(), dtype: Dtype::C64 })?
            };
            let dst = Data::contiguous(strided::alloc_out(out)?, out.shape);
            if out.shape.iter().product::<usize>() > 0 {
                let p = SendPtr(w.ptr::<c64>());
                for &ax in others {
                    c2c_pass(p, x.shape(), ax, true, 1.0);
                }
                let rp = RealPlan::new(n_real, true);
                real_pass::<c64, f32>(
                    p,
                    SendPtr(dst.ptr::<f32>()),
                    x.shape(),
                    last,
                    n_real / 2 + 1,
                    n_real,
                    |src, dst, scratch| irfft_line(&rp, src, dst, scratch, scale),
                    n_real,
                );
            }
            Ok(dst)
        }
    }
}

/// outer, length and inner extents of `shape` around `axis`.
fn split(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

/// Rough cost of transforming one line of `n` points.
fn line_cost(n: usize) -> usize {
    n * (usize::BITS - n.leading_zeros()).max(1) as usize
}

/// In-place complex transform of every line along `axis` of the row-major buffer `p` of `shape`.
fn c2c_pass(p: SendPtr<c64>, shape: &[usize], axis: usize, inverse: bool, scale: f32) {
    let (outer, n, inner) = split(shape, axis);
    if n == 0 || outer * inner == 0 {
        return;
    }
    let f = plan(n, inverse);
    let scratch_len = f.get_inplace_scratch_len();
    if inner == 1 {
        parallel_for(outer, line_cost(n), |r| {
            let mut scratch = vec![c64::new(0.0, 0.0); scratch_len];
            // SAFETY: rows r are disjoint ranges of the buffer of outer * n elements.
            let rows = unsafe { std::slice::from_raw_parts_mut(p.get().add(r.start * n), r.len() * n) };
            // Batches of rows keep the working set in cache and let rustfft loop internally.
            let batch = (4096 / n).max(1) * n;
            for chunk in rows.chunks_mut(batch) {
                f.process_with_scratch(chunk, &mut scratch);
                scale_in_place(chunk, scale);
            }
        });
        return;
    }
    let tiles = inner.div_ceil(TILE);
    parallel_for(outer * tiles, line_cost(n) * TILE, |r| {
        let mut scratch = vec![c64::new(0.0, 0.0); scratch_len];
        let mut lines = vec![c64::new(0.0, 0.0); TILE * n];
        for t in r {
            let (o, c0) = (t / tiles, (t % tiles) * TILE);
            let cols = TILE.min(inner - c0);
            let base = o * n * inner + c0;
            // SAFETY: tile t covers columns c0..c0+cols of block o, disjoint from other tiles.
            unsafe {
                for i in 0..n {
                    let row = p.get().add(base + i * inner);
                    for c in 0..cols {
                        lines[c * n + i] = *row.add(c);
                    }
                }
            }
            let l = &mut lines[..cols * n];
            f.process_with_scratch(l, &mut scratch);
            // SAFETY: as above.
            unsafe {
                for i in 0..n {
                    let row = p.get().add(base + i * inner);
                    for c in 0..cols {
                        *row.add(c) = lines[c * n + i] * scale;
                    }
                }
            }
        }
    });
}

fn scale_in_place(v: &mut [c64], s: f32) {
    if s != 1.0 {
        for z in v {
            *z *= s;
        }
    }
}

/// Applies `line(src_line, dst_line, scratch)` to every line along `axis`
/// (`n_src` elements in the source of `src_shape`, `n_dst` in the destination,
/// which has the same shape except along `axis`).
#[allow(clippy::too_many_arguments)]
fn real_pass<S: Copy + Default + Send + Sync, D: Copy + Default + Send + Sync>(
    src: SendPtr<S>,
    dst: SendPtr<D>,
    src_shape: &[usize],
    axis: usize,
    n_src: usize,
    n_dst: usize,
    line: impl Fn(&[S], &mut [D], &mut Vec<c64>) + Sync,
    n_fft: usize,
) {
    let (outer, n, inner) = split(src_shape, axis);
    debug_assert_eq!(n, n_src);
    if outer * inner == 0 {
        return;
    }
    if inner == 1 {
        parallel_for(outer, line_cost(n_fft), |r| {
            let mut scratch = Vec::new();
            for o in r {
                // SAFETY: line o occupies its own n_src / n_dst elements of each buffer.
                let (s, d) = unsafe {
                    (
                        std::slice::from_raw_parts(src.get().add(o * n_src), n_src),
                        std::slice::from_raw_parts_mut(dst.get().add(o * n_dst), n_dst),
                    )
                };
                line(s, d, &mut scratch);
            }
        });
        return;
    }
    let tiles = inner.div_ceil(TILE);
    parallel_for(outer * tiles, line_cost(n_fft) * TILE, |r| {
        let mut scratch = Vec::new();
        let mut s_lines = vec![S::default(); TILE * n_src];
        let mut d_lines = vec![D::default(); TILE * n_dst];
        for t in r {
            let (o, c0) = (t / tiles, (t % tiles) * TILE);
            let cols = TILE.min(inner - c0);
            // SAFETY: tile t reads columns c0..c0+cols of source block o and writes the
            // same columns of destination block o; tiles are disjoint.
            unsafe {
                let sb = src.get().add(o * n_src * inner + c0);
                for i in 0..n_src {
                    for c in 0..cols {
                        s_lines[c * n_src + i] = *sb.add(i * inner + c);
                    }
                }
            }
            for c in 0..cols {
                line(&s_lines[c * n_src..(c + 1) * n_src], &mut d_lines[c * n_dst..(c + 1) * n_dst], &mut scratch);
            }
            // SAFETY: as above.
            unsafe {
                let db = dst.get().add(o * n_dst * inner + c0);
                for i in 0..n_dst {
                    for c in 0..cols {
                        *db.add(i * inner + c) = d_lines[c * n_dst + i];
                    }
                }
            }
        }
    });
}

/// Real-to-complex transform of one line: `dst[k] = scale * sum_t src[t] e^{-2 pi i k t / n}`
/// for `k <= n / 2`.
fn rfft_line(rp: &RealPlan, src: &[f32], dst: &mut [c64], scratch: &mut Vec<c64>, scale: f32) {
    let n = src.len();
    let f = &rp.plan;
    if n % 2 == 1 || n < 4 {
        // Odd lengths: a full complex transform of the zero-imaginary signal.
        scratch.clear();
        scratch.extend(src.iter().map(|&v| c64::new(v, 0.0)));
        scratch.resize(n + f.get_inplace_scratch_len(), c64::new(0.0, 0.0));
        let (buf, s) = scratch.split_at_mut(n);
        f.process_with_scratch(buf, s);
        for (d, z) in dst.iter_mut().zip(buf.iter()) {
            *d = *z * scale;
        }
        return;
    }
    let h = n / 2;
    let tw = &rp.tw;
    scratch.clear();
    scratch.extend(src.chunks_exact(2).map(|p| c64::new(p[0], p[1])));
    scratch.resize(h + f.get_inplace_scratch_len(), c64::new(0.0, 0.0));
    let (z, s) = scratch.split_at_mut(h);
    f.process_with_scratch(z, s);
    // X[k] = E[k] + w^k O[k] with E[k] = (Z[k] + conj Z[h-k]) / 2, O[k] = (Z[k] - conj Z[h-k]) / 2i.
    let half = 0.5 * scale;
    let z0 = z[0];
    dst[0] = c64::new((z0.re + z0.im) * scale, 0.0);
    dst[h] = c64::new((z0.re - z0.im) * scale, 0.0);
    for k in 1..h {
        let a = z[k];
        let b = z[h - k].conj();
        let e = a + b;
        let o = (a - b) * c64::new(0.0, -1.0);
        dst[k] = (e + tw[k] * o) * half;
    }
}

/// Complex-to-real transform of one line of `n / 2 + 1` bins into `n` samples:
/// `dst[t] = scale * sum_k Y[k] e^{+2 pi i k t / n}` over the Hermitian
/// completion `Y` of `src` (the imaginary parts of the bins that must be real
/// are ignored, as NumPy and MLX do).
fn irfft_line(rp: &RealPlan, src: &[c64], dst: &mut [f32], scratch: &mut Vec<c64>, scale: f32) {
    let n = dst.len();
    let f = &rp.plan;
    if n % 2 == 1 || n < 4 {
        scratch.clear();
        scratch.resize(n + f.get_inplace_scratch_len(), c64::new(0.0, 0.0));
        let (buf, s) = scratch.split_at_mut(n);
        buf[0] = c64::new(src[0].re, 0.0);
        for k in 1..src.len() {
            let v = if 2 * k == n { c64::new(src[k].re, 0.0) } else { src[k] };
            buf[k] = v;
            buf[n - k] = v.conj();
        }
        f.process_with_scratch(buf, s);
        for (d, z) in dst.iter_mut().zip(buf.iter()) {
            *d = z.re * scale;
        }
        return;
    }
    let h = n / 2;
    let tw = &rp.tw;
    scratch.clear();
    scratch.resize(h + f.get_inplace_scratch_len(), c64::new(0.0, 0.0));
    let (z, s) = scratch.split_at_mut(h);
    // Z[k] = 2E[k] + 2i O[k], E[k] = (X[k] + conj X[h-k]) / 2, O[k] = (X[k] - conj X[h-k]) / (2 w^k).
    let x0 = src[0].re;
    let xh = src[h].re;
    z[0] = c64::new(x0 + xh, x0 - xh);
    for k in 1..h {
        let a = src[k];
        let b = src[h - k].conj();
        let e = a + b;
        let o = (a - b) * tw[k].conj();
        z[k] = e + c64::new(-o.im, o.re);
    }
    f.process_with_scratch(z, s);
    for (t, v) in z.iter().enumerate() {
        dst[2 * t] = v.re * scale;
        dst[2 * t + 1] = v.im * scale;
    }
}
