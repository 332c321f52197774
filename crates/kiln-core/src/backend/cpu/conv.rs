//! Convolution kernels (channels-last, see [`crate::ops::conv`]).
//!
//! Every convolution is computed as GEMMs over tiles of output positions:
//! a tile's rows of the (implicit) im2col matrix are gathered into a small,
//! cache-sized buffer — one contiguous run of `C_in / groups` channels per
//! kernel tap, zeros where the tap falls into padding or between dilated
//! input elements — and multiplied by the weight, viewed as a
//! `(taps * C_in/groups) x C_out/groups` matrix without a copy. The output
//! tile is written in place (row stride `C_out`). Taps are split into chunks
//! when a row would not fit the cache (large kernels, e.g. weight gradients),
//! accumulating into the output. Pointwise (1x1, unit stride, no padding)
//! convolutions skip the gather and multiply the input directly.
//!
//! Unit-stride convolutions without input dilation or groups (the common
//! "same" 3x3 case) take a shifted-GEMM path instead: the input is padded
//! once, the output is computed over the padded width (the extra columns are
//! dropped when a tile is stored), and for each tap row `(k0, k1)` one GEMM
//! reads the padded input in place — a row of `K2 * C_in` consecutive
//! elements per output position, overlapping its neighbours — so nothing is
//! gathered.
//!
//! f32 (and f16/bf16, computed in f32) convolutions with one group, no input
//! dilation and long enough output rows run on the direct AVX-512 kernel of
//! [`direct`] instead when the CPU has it; 2-D 3×3 unit-stride ones with
//! 16–256 channels run as Winograd F(2×2, 3×3) ([`winograd`]).
//!
//! Tiles run in parallel, each with a single-threaded GEMM; a convolution with
//! fewer tiles than threads lets the GEMM itself use the threads.
//! f16/bf16 are computed in f32; f64 in f64.

mod direct;
#[cfg(target_arch = "x86_64")]
mod winograd;

use super::simd::{num_threads, parallel_for, SendPtr};
use super::strided::{alloc_out, gather_to_vec};
use crate::array::{Array, Data};
use crate::dtype::{bf16, f16, Dtype, Element};
use crate::error::{Error, Result};
use crate::ops::conv::ConvParams;
use crate::primitive::OutSpec;
use crate::shape::numel;
use half::slice::HalfFloatSliceExt;
use std::borrow::Cow;

/// Element types the GEMM runs in.
trait Real: Element + Copy + Send + Sync + 'static {
    const ZERO: Self;
    const ONE: Self;
}
impl Real for f32 {
    const ZERO: f32 = 0.0;
    const ONE: f32 = 1.0;
}
impl Real for f64 {
    const ZERO: f64 = 0.0;
    const ONE: f64 = 1.0;
}

/// Strided GEMM `dst = (accumulate ? dst : 0) + lhs * rhs` (`m x k` times `k x n`),
/// strides in elements. This is the only place the convolution calls the
/// `gemm` crate.
///
/// # Safety
/// Every pointer must address the whole matrix its strides describe, and
/// `dst` must not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strided<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    dst_cs: isize,
    lhs: *const T,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const T,
    rhs_rs: isize,
    rhs_cs: isize,
    accumulate: bool,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    // SAFETY: the caller guarantees the matrices are in bounds and disjoint.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            accumulate,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            par,
        )
    }
}

/// The elements of an evaluated array as a dense row-major slice (borrowed
/// when already dense).
fn dense<'a, T: Element>(a: &Array, d: &'a Data) -> Cow<'a, [T]> {
    let n = a.size();
    if d.is_row_contiguous() && n > 0 {
        // SAFETY: a row-contiguous view holds `n` elements of T from its
        // offset, kept alive by `d` for the slice's lifetime.
        Cow::Borrowed(unsafe { std::slice::from_raw_parts(d.ptr::<T>() as *const T, n) })
    } else {
        Cow::Owned(gather_to_vec::<T>(d, a.shape()))
    }
}

/// An array's elements as dense f32 (converting f16/bf16).
fn dense_f32<'a>(a: &Array, d: &'a Data) -> Cow<'a, [f32]> {
    match a.dtype() {
        Dtype::F16 => {
            let h = dense::<f16>(a, d);
            let mut v = vec![0f32; h.len()];
            h.convert_to_f32_slice(&mut v);
            Cow::Owned(v)
        }
        Dtype::BF16 => {
            let h = dense::<bf16>(a, d);
            let mut v = vec![0f32; h.len()];
            h.convert_to_f32_slice(&mut v);
            Cow::Owned(v)
        }
        _ => dense::<f32>(a, d),
    }
}

/// Convolution kernel entry point: `input` and `weight` share `out.dtype`.
pub fn conv(input: &Array, weight: &Array, p: &ConvParams, out: &OutSpec<'_>) -> Result<Data> {
    let (xd, wd) = (input.data(), weight.data());
    let n_out = numel(out.shape);
    let buf = alloc_out(out)?;
    let geo = Geometry::new(input.shape(), weight.shape(), out.shape, p);
    match out.dtype {
        Dtype::F32 => {
            let (x, w) = (dense::<f32>(input, &xd), dense::<f32>(weight, &wd));
            // SAFETY: the buffer was allocated for `n_out` f32 elements.
            let y = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut f32, n_out) };
            run_f32(&geo, &x, &w, y);
        }
        Dtype::F64 => {
            let (x, w) = (dense::<f64>(input, &xd), dense::<f64>(weight, &wd));
            // SAFETY: the buffer was allocated for `n_out` f64 elements.
            let y = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut f64, n_out) };
            run(&geo, &x, &w, y);
        }
        Dtype::F16 | Dtype::BF16 => {
            let (x, w) = (dense_f32(input, &xd), dense_f32(weight, &wd));
            let mut y = vec![0f32; n_out];
            run_f32(&geo, &x, &w, &mut y);
            if out.dtype == Dtype::F16 {
                // SAFETY: the buffer was allocated for `n_out` f16 elements.
                let o = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut f16, n_out) };
                o.convert_from_f32_slice(&y);
            } else {
                // SAFETY: the buffer was allocated for `n_out` bf16 elements.
                let o = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut bf16, n_out) };
                o.convert_from_f32_slice(&y);
            }
        }
        d => return Err(Error::invalid("conv", format!("No CPU convolution for dtype {d}."))),
    }
    Ok(Data::contiguous(buf, out.shape))
}

/// An f32 convolution: Winograd for 3×3 unit-stride 2-D layers, else the direct kernel
/// where it applies, else [`run`].
fn run_f32(g: &Geometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if winograd::applies(g) {
        winograd::run(g, x, w, y);
        return;
    }
    if direct::applies(g) && numel(&[g.n, g.o[0], g.o[1], g.o[2], g.cout]) > 0 {
        direct::run(g, x, w, y);
    } else {
        run(g, x, w, y);
    }
}

/// Sizes of a convolution, with the spatial axes padded to three (missing
/// axes have length 1 and trivial parameters).
struct Geometry {
    n: usize,
    l: [usize; 3],
    c: usize,
    k: [usize; 3],
    cg: usize,
    o: [usize; 3],
    cout: usize,
    groups: usize,
    /// Per axis, for each (output position, tap) pair: the input index, or -1
    /// where the tap reads padding or a dilation hole. Indexed `o * K + k`
    /// with the tap already flipped when `flip`.
    taps: [Vec<i64>; 3],
    /// Whether the im2col matrix is the input itself (1x1 kernel, unit
    /// stride, no padding, no input dilation).
    pointwise: bool,
    /// Unit stride and input dilation on every axis and one group: the
    /// shifted-GEMM path applies.
    shiftable: bool,
    kd: [usize; 3],
    lo: [i64; 3],
    /// Strides.
    s: [usize; 3],
    /// Input dilations.
    e: [usize; 3],
    flip: bool,
}

impl Geometry {
    fn new(xs: &[usize], ws: &[usize], ys: &[usize], p: &ConvParams) -> Geometry {
        let nsp = xs.len() - 2;
        let mut l = [1; 3];
        let mut k = [1; 3];
        let mut o = [1; 3];
        let mut taps: [Vec<i64>; 3] = [vec![0], vec![0], vec![0]];
        let mut pointwise = true;
        let mut shiftable = p.groups == 1;
        let mut kd = [1; 3];
        let mut lo3 = [0; 3];
        let mut s3 = [1; 3];
        let mut e3 = [1; 3];
        for i in 0..nsp {
            s3[i] = p.stride[i];
            e3[i] = p.input_dilation[i];
            kd[i] = p.kernel_dilation[i];
            lo3[i] = p.padding_lo[i];
            shiftable &= p.stride[i] == 1 && p.input_dilation[i] == 1;
            l[i] = xs[i + 1];
            k[i] = ws[i + 1];
            o[i] = ys[i + 1];
            let (s, d, e, lo) =
                (p.stride[i] as i64, p.kernel_dilation[i] as i64, p.input_dilation[i] as i64, p.padding_lo[i]);
            pointwise &= k[i] == 1 && s == 1 && e == 1 && lo == 0 && o[i] == l[i];
            let mut t = Vec::with_capacity(o[i] * k[i]);
            for oi in 0..o[i] as i64 {
                for ki in 0..k[i] as i64 {
                    let kk = if p.flip { k[i] as i64 - 1 - ki } else { ki };
                    let q = oi * s + kk * d - lo;
                    let valid = q >= 0 && q % e == 0 && q / e < l[i] as i64;
                    t.push(if valid { q / e } else { -1 });
                }
            }
            taps[i] = t;
        }
        Geometry {
            n: xs[0],
            l,
            c: xs[nsp + 1],
            k,
            cg: ws[nsp + 1],
            o,
            cout: ws[0],
            groups: p.groups,
            taps,
            pointwise,
            shiftable,
            kd,
            lo: lo3,
            s: s3,
            e: e3,
            flip: p.flip,
        }
    }
}

/// Bytes of im2col tile a task gathers at once (fits the L2 cache).
const TILE_BYTES: usize = 640 * 1024;
/// Output rows per tile.
const TILE_ROWS: usize = 256;

fn run<T: Real>(g: &Geometry, x: &[T], w: &[T], y: &mut [T]) {
    let m = g.n * g.o[0] * g.o[1] * g.o[2];
    if m == 0 || g.cout == 0 {
        return;
    }
    let ntaps = g.k[0] * g.k[1] * g.k[2];
    let kt = ntaps * g.cg;
    if kt == 0 {
        y.fill(T::ZERO);
        return;
    }
    let og = g.cout / g.groups;
    let yp = SendPtr(y.as_mut_ptr());
    let threads = num_threads();
    let tile = TILE_ROWS;
    if g.pointwise {
        // The input rows are the im2col rows: one GEMM per group.
        let inner = if m >= 4 * tile { 1 } else { threads };
        let tiles = m.div_ceil(tile);
        parallel_for(tiles, tile * kt * g.cout, |range| {
            for t in range {
                let (r0, r1) = (t * tile, ((t + 1) * tile).min(m));
                for gi in 0..g.groups {
                    // SAFETY: rows r0..r1 of the input (stride c), the group's
                    // weight block and output columns are in bounds; tiles
                    // write disjoint output rows.
                    unsafe {
                        gemm_strided(
                            r1 - r0,
                            og,
                            kt,
                            yp.get().add(r0 * g.cout + gi * og),
                            g.cout as isize,
                            1,
                            x.as_ptr().add(r0 * g.c + gi * g.cg),
                            g.c as isize,
                            1,
                            w.as_ptr().add(gi * og * kt),
                            1,
                            kt as isize,
                            false,
                            inner,
                        )
                    };
                }
            }
        });
        return;
    }
    if use_shifted(g) {
        shifted(g, x, w, y);
        return;
    }
    let esize = std::mem::size_of::<T>();
    // Taps per chunk so a tile's gathered rows fit the cache.
    let taps_per_chunk = (TILE_BYTES / (tile * g.cg * esize)).clamp(1, ntaps);
    let chunks = ntaps.div_ceil(taps_per_chunk);
    let tiles = m.div_ceil(tile);
    let inner = if tiles >= 2 * threads { 1 } else { threads };
    let cost = tile * kt * g.cout;
    parallel_for(tiles, cost, |range| {
        let kc_max = taps_per_chunk * g.cg;
        let mut col: Vec<T> = vec![T::ZERO; tile * kc_max];
        for t in range {
            let (r0, r1) = (t * tile, ((t + 1) * tile).min(m));
            for gi in 0..g.groups {
                for ch in 0..chunks {
                    let (t0, t1) = (ch * taps_per_chunk, ((ch + 1) * taps_per_chunk).min(ntaps));
                    let kc = (t1 - t0) * g.cg;
                    gather(g, x, gi, r0, r1, t0, t1, &mut col[..(r1 - r0) * kc]);
                    // SAFETY: `col` holds (r1 - r0) rows of kc elements; the
                    // weight block of group gi, taps t0..t1 spans rows
                    // gi*og.. (stride kt) and columns t0*cg..t1*cg; output
                    // rows r0..r1 of this group's columns are written only
                    // by this tile.
                    unsafe {
                        gemm_strided(
                            r1 - r0,
                            og,
                            kc,
                            yp.get().add(r0 * g.cout + gi * og),
                            g.cout as isize,
                            1,
                            col.as_ptr(),
                            kc as isize,
                            1,
                            w.as_ptr().add(gi * og * kt + t0 * g.cg),
                            1,
                            kt as isize,
                            ch > 0,
                            inner,
                        )
                    };
                }
            }
        }
    });
}

/// Gathers im2col rows `r0..r1` for group `gi` and taps `t0..t1` into `col`
/// (row-major, `(t1 - t0) * cg` columns).
#[allow(clippy::too_many_arguments)]
fn gather<T: Real>(g: &Geometry, x: &[T], gi: usize, r0: usize, r1: usize, t0: usize, t1: usize, col: &mut [T]) {
    let cg = g.cg;
    let kc = (t1 - t0) * cg;
    let [o0, o1, o2] = g.o;
    let [k0, k1, k2] = g.k;
    let [l0, l1, l2] = g.l;
    for (ri, r) in (r0..r1).enumerate() {
        let row = &mut col[ri * kc..(ri + 1) * kc];
        let p2 = r % o2;
        let p1 = (r / o2) % o1;
        let p0 = (r / (o2 * o1)) % o0;
        let n = r / (o2 * o1 * o0);
        let base_n = n * l0 * l1 * l2;
        for (j, tap) in (t0..t1).enumerate() {
            let a2 = tap % k2;
            let a1 = (tap / k2) % k1;
            let a0 = tap / (k2 * k1);
            let i0 = g.taps[0][p0 * k0 + a0];
            let i1 = g.taps[1][p1 * k1 + a1];
            let i2 = g.taps[2][p2 * k2 + a2];
            let dst = &mut row[j * cg..(j + 1) * cg];
            if i0 < 0 || i1 < 0 || i2 < 0 {
                dst.fill(T::ZERO);
            } else {
                let pos = base_n + (i0 as usize * l1 + i1 as usize) * l2 + i2 as usize;
                let src = pos * g.c + gi * cg;
                dst.copy_from_slice(&x[src..src + cg]);
            }
        }
    }
}

/// Whether the shifted-GEMM path suits `g`: it needs unit strides, no input
/// dilation, one group and no dilation along the last axis, and pays off
/// when a tap row is long enough for an efficient GEMM and the padded width
/// does not waste more than half the rows.
fn use_shifted(g: &Geometry) -> bool {
    let lp2 = g.o[2] + (g.k[2] - 1) * g.kd[2];
    g.shiftable && g.kd[2] == 1 && g.k[2] * g.c >= 32 && 2 * g.o[2] >= lp2
}

/// The shifted-GEMM convolution (see the module docs).
fn shifted<T: Real>(g: &Geometry, x: &[T], w: &[T], y: &mut [T]) {
    let c = g.c;
    let [o0, o1, o2] = g.o;
    let [k0, k1, k2] = g.k;
    let [l0, l1, l2] = g.l;
    let lp = [o0 + (k0 - 1) * g.kd[0], o1 + (k1 - 1) * g.kd[1], o2 + (k2 - 1) * g.kd[2]];
    let img = lp[0] * lp[1] * lp[2];
    let kt = k0 * k1 * k2 * c;
    // A flipped kernel is reversed once so each tap row is contiguous.
    let wf: Cow<'_, [T]> = if g.flip {
        let mut v = Vec::with_capacity(w.len());
        for co in 0..g.cout {
            for a0 in (0..k0).rev() {
                for a1 in (0..k1).rev() {
                    for a2 in (0..k2).rev() {
                        let s = co * kt + ((a0 * k1 + a1) * k2 + a2) * c;
                        v.extend_from_slice(&w[s..s + c]);
                    }
                }
            }
        }
        Cow::Owned(v)
    } else {
        Cow::Borrowed(w)
    };
    // Pad (or crop) the input once: xp[n, p0, p1, p2] = x[n, p - lo] or 0.
    let mut xp: Vec<T> = vec![T::ZERO; g.n * img * c];
    let xpp = SendPtr(xp.as_mut_ptr());
    let prow = g.n * lp[0] * lp[1];
    parallel_for(prow, lp[2] * c, |range| {
        for r in range {
            let p1 = r % lp[1];
            let p0 = (r / lp[1]) % lp[0];
            let n = r / (lp[1] * lp[0]);
            let (i0, i1) = (p0 as i64 - g.lo[0], p1 as i64 - g.lo[1]);
            if i0 < 0 || i0 >= l0 as i64 || i1 < 0 || i1 >= l1 as i64 {
                continue;
            }
            // Valid p2 range: 0 <= p2 - lo2 < l2.
            let a = g.lo[2].max(0) as usize;
            let b = ((l2 as i64 + g.lo[2]).min(lp[2] as i64)).max(0) as usize;
            if a >= b {
                continue;
            }
            let src = ((n * l0 + i0 as usize) * l1 + i1 as usize) * l2 + (a as i64 - g.lo[2]) as usize;
            // SAFETY: row r of xp spans lp2 * c elements; columns a..b lie in
            // it and source positions src..src + (b - a) lie in row (n, i0,
            // i1) of x. Rows are disjoint across tasks.
            unsafe {
                std::ptr::copy_nonoverlapping(x.as_ptr().add(src * c), xpp.get().add((r * lp[2] + a) * c), (b - a) * c)
            };
        }
    });
    // Output rows over the padded width, per image.
    let f = ((o0 - 1) * lp[1] + (o1 - 1)) * lp[2] + o2;
    // Whole images per GEMM, threaded inside the GEMM, measured faster than
    // row tiles with one thread each (about 12 ms against 19 ms for the
    // 3x3 target in release).
    let whole = f * kt * g.cout >= 1 << 20;
    let tile = if whole { f } else { TILE_ROWS };
    let tiles_per = f.div_ceil(tile);
    let tiles = g.n * tiles_per;
    let threads = num_threads();
    let inner = if !whole && tiles >= 2 * threads { 1 } else { threads };
    let cout = g.cout;
    let yp = SendPtr(y.as_mut_ptr());
    let (xp, wf) = (&xp[..], &wf[..]);
    let body = |range: std::ops::Range<usize>| {
        let mut tmp: Vec<T> = vec![T::ZERO; tile * cout];
        for t in range {
            let n = t / tiles_per;
            let f0 = (t % tiles_per) * tile;
            let f1 = (f0 + tile).min(f);
            let mut first = true;
            for a0 in 0..k0 {
                for a1 in 0..k1 {
                    let off = (a0 * g.kd[0] * lp[1] + a1 * g.kd[1]) * lp[2];
                    // SAFETY: rows f0..f1 shifted by `off` plus k2 - 1 stay
                    // inside image n of xp (the last row ends at its last
                    // element); the weight tap row (a0, a1) holds k2 * c
                    // elements per output channel (stride kt); tmp holds
                    // (f1 - f0) rows of cout.
                    unsafe {
                        gemm_strided(
                            f1 - f0,
                            cout,
                            k2 * c,
                            tmp.as_mut_ptr(),
                            cout as isize,
                            1,
                            xp.as_ptr().add((n * img + f0 + off) * c),
                            c as isize,
                            1,
                            wf.as_ptr().add((a0 * k1 + a1) * k2 * c),
                            1,
                            kt as isize,
                            !first,
                            inner,
                        )
                    };
                    first = false;
                }
            }
            // Store the rows that are real output positions.
            for (i, fr) in (f0..f1).enumerate() {
                let q2 = fr % lp[2];
                let q1 = (fr / lp[2]) % lp[1];
                let q0 = fr / (lp[2] * lp[1]);
                if q2 >= o2 || q1 >= o1 {
                    continue;
                }
                let dst = (((n * o0 + q0) * o1 + q1) * o2 + q2) * cout;
                // SAFETY: output row (n, q0, q1, q2) is in bounds and
                // written by this tile only.
                unsafe { std::ptr::copy_nonoverlapping(tmp.as_ptr().add(i * cout), yp.get().add(dst), cout) };
            }
        }
    };
    if inner > 1 {
        body(0..tiles);
    } else {
        parallel_for(tiles, tile * kt * cout, body);
    }
}
