//! An AVX-512 f32 kernel for `y (m×n) = x (m×k) @ Wᵀ` with the rows of W
//! read where they lie: a dequantized panel of a quantized weight, or a
//! dense weight stored `(out, in)` as linear layers keep it.
//!
//! General GEMMs pack both operands for every call. Here x is packed once
//! (it is small: a prompt's activations) into strips of up to 64 rows,
//! k-major, so a strip's values for one `k` are four contiguous vectors;
//! W is not packed at all. The micro-kernel broadcasts `W[j][k]` for six
//! rows `j` and multiplies it into the four x vectors, keeping a 64×6
//! output tile in 24 zmm accumulators. Six rows of W at a `k` block fit
//! L1 while the x strip streams from L2.

#![cfg(target_arch = "x86_64")]

use super::simd::{parallel_for, SendPtr};
use crate::error::Result;
use crate::memory::Buffer;
use std::arch::x86_64::*;

/// Rows of x per strip (four zmm of f32).
const MS: usize = 64;
/// Rows of W per micro-tile.
const NR: usize = 6;
/// The deepest `k` block: six W rows of it (24 KiB) stay in L1.
pub(crate) const KC: usize = 1024;

/// Whether this CPU runs the kernel.
pub(crate) fn available() -> bool {
    super::simd::level() == super::simd::Level::Avx512
}

/// x packed into strips of [`MS`] rows, `k`-major: strip `s` holds rows
/// `64s..64s + w` (`w` the strip's width, a multiple of 16, rows past `m`
/// zero) as `k` runs of `w` values.
pub(crate) struct PackedX {
    /// From the array allocator, whose cache hands the same pages back call
    /// after call; every value is written by [`PackedX::new`] before it is read.
    data: Buffer,
    m: usize,
    k: usize,
}

impl PackedX {
    /// Packs the `m × k` matrix `x` whose rows start `ld` values apart.
    ///
    /// Fails only when the allocator does.
    ///
    /// # Panics
    /// If `x` is too short for `m` rows, `ld < k`, or AVX-512 is not available.
    pub(crate) fn new(x: &[f32], m: usize, k: usize, ld: usize) -> Result<PackedX> {
        assert!(available() && ld >= k && (m == 0 || x.len() >= (m - 1) * ld + k));
        let strips = m.div_ceil(MS);
        let data = Buffer::alloc(strips * MS * k * 4)?;
        let dp = SendPtr(data.as_ptr() as *mut f32);
        parallel_for(strips, MS * k, |range| {
            for s in range {
                let w = Self::width(m, s);
                for i0 in (0..w).step_by(16) {
                    let r0 = s * MS + i0;
                    let rows = 16.min(m.saturating_sub(r0));
                    // SAFETY: AVX-512 is available (asserted); rows r0..r0+rows
                    // of x exist; strip s owns data[s·MS·k .. s·MS·k + w·k] and
                    // this block writes its rows i0..i0+16 of every k.
                    unsafe { pack16(x.as_ptr().add(r0 * ld), k, ld, rows, dp.get().add(s * MS * k + i0), w) };
                }
            }
        });
        Ok(PackedX { data, m, k })
    }

    /// Width of strip `s`: its rows rounded up to whole vectors.
    fn width(m: usize, s: usize) -> usize {
        (m - s * MS).min(MS).next_multiple_of(16)
    }
}

/// `dst[t·ldd + i] = src[i·lds + t]` for `i < rows`, `t < cols`: a
/// transpose, 16×16 blocks at a time in registers.
///
/// # Panics
/// If AVX-512 is not available, `lds < cols`, `ldd < rows`, or a slice is
/// too short for its rows.
pub(crate) fn transpose(src: &[f32], rows: usize, cols: usize, lds: usize, dst: &mut [f32], ldd: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(available() && lds >= cols && ldd >= rows);
    assert!(src.len() >= (rows - 1) * lds + cols && dst.len() >= (cols - 1) * ldd + rows);
    // pack16 writes 16 values per destination row: a last group of fewer
    // than 16 rows takes it only where the padding exists, else the loop below.
    let padded = rows.next_multiple_of(16);
    let room = ldd >= padded && dst.len() >= (cols - 1) * ldd + padded;
    let groups = if room { rows.div_ceil(16) } else { rows / 16 };
    for g in 0..groups {
        let r0 = 16 * g;
        // SAFETY: AVX-512 is available and rows r0..min(r0 + 16, rows) of src
        // exist (asserted). pack16 writes dst[t·ldd + r0 ..][..16] for t <
        // cols: r0 + 16 ≤ rows ≤ ldd for a full group, ≤ padded ≤ ldd for the
        // last one with `room`, and the last write ends by (cols-1)·ldd + rows
        // (full) or + padded (`room`), both within dst.
        unsafe {
            pack16(src.as_ptr().add(r0 * lds), cols, lds, 16.min(rows - r0), dst.as_mut_ptr().add(r0), ldd);
        }
    }
    for i in 16 * groups..rows {
        for t in 0..cols {
            dst[t * ldd + i] = src[i * lds + t];
        }
    }
}

/// The transpose of `rows × cols` (row stride `lds`) in a new buffer of
/// `cols` rows, `rows` rounded up to 16 apart (the padding is zero), built in
/// parallel over groups of 16 source rows. Returns the buffer and its stride.
///
/// # Panics
/// If AVX-512 is not available, a side is 0, `lds < cols`, or `src` is too
/// short for its rows.
pub(crate) fn transposed_copy(src: &[f32], rows: usize, cols: usize, lds: usize) -> Result<(Buffer, usize)> {
    assert!(available() && rows > 0 && cols > 0 && lds >= cols && src.len() >= (rows - 1) * lds + cols);
    let ld = rows.next_multiple_of(16);
    let buf = Buffer::alloc(cols * ld * 4)?;
    let dp = SendPtr(buf.as_ptr() as *mut f32);
    parallel_for(rows.div_ceil(16), 16 * cols, |range| {
        for g in range {
            let r0 = 16 * g;
            // SAFETY: AVX-512 is available and rows r0..min(r0 + 16, rows) of
            // src exist (asserted). Group g writes 16 values at r0 + t·ld for
            // t < cols: r0 + 16 ≤ ld, so they stay inside the buffer's
            // cols·ld values and apart from every other group's.
            unsafe { pack16(src.as_ptr().add(r0 * lds), cols, lds, 16.min(rows - r0), dp.get().add(r0), ld) };
        }
    });
    Ok((buf, ld))
}

/// Transposes `rows ≤ 16` rows of `k` values (row stride `lds`) into `k`
/// vectors of 16 at `dst + t·ld` (rows past `rows` zero), 16×16 blocks at
/// a time in registers.
///
/// # Safety
/// AVX-512; `src` holds `rows` rows of `k` values; `dst + t·ld` is writable
/// for 16 values for every `t < k`.
#[target_feature(enable = "avx512f")]
unsafe fn pack16(src: *const f32, k: usize, lds: usize, rows: usize, dst: *mut f32, ld: usize) {
    let mut k0 = 0;
    while k0 < k {
        let kn = 16.min(k - k0);
        let mask: u16 = if kn == 16 { u16::MAX } else { (1u16 << kn) - 1 };
        let mut r = [_mm512_setzero_ps(); 16];
        for (i, v) in r.iter_mut().enumerate().take(rows) {
            *v = _mm512_maskz_loadu_ps(mask, src.add(i * lds + k0));
        }
        // Pairs of rows interleaved, then quads: b[4q + c] holds, in each
        // 128-bit lane L, column 4L + c of rows 4q..4q+4.
        let mut a = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        let mut b = [_mm512_setzero_ps(); 16];
        for q in 0..4 {
            b[4 * q] = _mm512_shuffle_ps::<0x44>(a[4 * q], a[4 * q + 2]);
            b[4 * q + 1] = _mm512_shuffle_ps::<0xEE>(a[4 * q], a[4 * q + 2]);
            b[4 * q + 2] = _mm512_shuffle_ps::<0x44>(a[4 * q + 1], a[4 * q + 3]);
            b[4 * q + 3] = _mm512_shuffle_ps::<0xEE>(a[4 * q + 1], a[4 * q + 3]);
        }
        // Column 4L + c gathers lane L of b[c], b[4 + c], b[8 + c], b[12 + c].
        for c in 0..4 {
            let lo0 = _mm512_shuffle_f32x4::<0x44>(b[c], b[4 + c]);
            let lo1 = _mm512_shuffle_f32x4::<0x44>(b[8 + c], b[12 + c]);
            let hi0 = _mm512_shuffle_f32x4::<0xEE>(b[c], b[4 + c]);
            let hi1 = _mm512_shuffle_f32x4::<0xEE>(b[8 + c], b[12 + c]);
            let cols = [
                _mm512_shuffle_f32x4::<0x88>(lo0, lo1),
                _mm512_shuffle_f32x4::<0xDD>(lo0, lo1),
                _mm512_shuffle_f32x4::<0x88>(hi0, hi1),
                _mm512_shuffle_f32x4::<0xDD>(hi0, hi1),
            ];
            for (l, v) in cols.into_iter().enumerate() {
                let t = 4 * l + c;
                if t < kn {
                    _mm512_storeu_ps(dst.add((k0 + t) * ld), v);
                }
            }
        }
        k0 += 16;
    }
}

/// `y[i][j] (+)= Σ_{t<kc} x[i][k0+t] · W[j][t]` for `i < m`, `j < nb`, where
/// row `j` of W starts at `w + j·ldw` and row `i` of y at `y + i·ldy`; adds
/// to y when `accumulate`, else overwrites it.
///
/// # Safety
/// AVX-512 must be available ([`available`]); `k0 + kc ≤ x.k`; W must hold
/// `nb` rows of `kc` values at stride `ldw`, and y `m` rows of `nb` values
/// at stride `ldy`, not aliased by anything else during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_bt(
    x: &PackedX,
    k0: usize,
    kc: usize,
    w: *const f32,
    ldw: usize,
    nb: usize,
    y: *mut f32,
    ldy: usize,
    accumulate: bool,
) {
    debug_assert!(k0 + kc <= x.k);
    let strips = x.m.div_ceil(MS);
    let mut j0 = 0;
    while j0 < nb {
        let nr = NR.min(nb - j0);
        for s in 0..strips {
            let width = PackedX::width(x.m, s);
            let xs = (x.data.as_ptr() as *const f32).add(s * MS * x.k + k0 * width);
            let rows = MS.min(x.m - s * MS);
            let yt = y.add(s * MS * ldy + j0);
            let wt = w.add(j0 * ldw);
            macro_rules! go {
                ($($r:literal, $n:literal);*) => {
                    match (width / 16, nr) {
                        $(($r, $n) => tile::<$r, $n>(xs, kc, wt, ldw, yt, ldy, rows, accumulate),)*
                        _ => unreachable!("strip width {width}, {nr} rows"),
                    }
                };
            }
            go!(4, 6; 4, 5; 4, 4; 4, 3; 4, 2; 4, 1;
                3, 6; 3, 5; 3, 4; 3, 3; 3, 2; 3, 1;
                2, 6; 2, 5; 2, 4; 2, 3; 2, 2; 2, 1;
                1, 6; 1, 5; 1, 4; 1, 3; 1, 2; 1, 1);
        }
        j0 += nr;
    }
}

/// One `16R × N` tile: `R` vectors of x rows times `N` rows of W over `kc`.
///
/// # Safety
/// As [`gemm_bt`], for `rows ≤ 16R` rows of y and `N` rows of W.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const N: usize>(
    x: *const f32,
    kc: usize,
    w: *const f32,
    ldw: usize,
    y: *mut f32,
    ldy: usize,
    rows: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); R]; N];
    let mut wr = [w; N];
    for (j, p) in wr.iter_mut().enumerate() {
        *p = w.add(j * ldw);
    }
    for t in 0..kc {
        let mut xv = [_mm512_setzero_ps(); R];
        for (v, xv) in xv.iter_mut().enumerate() {
            *xv = _mm512_loadu_ps(x.add(t * 16 * R + 16 * v));
        }
        for j in 0..N {
            let b = _mm512_set1_ps(*wr[j].add(t));
            for (a, &x) in acc[j].iter_mut().zip(&xv) {
                *a = _mm512_fmadd_ps(x, b, *a);
            }
        }
    }
    // The tile is a column block of y: transpose it through the stack.
    let mut tmp = [[0.0f32; 64]; N];
    for (col, acc) in tmp.iter_mut().zip(&acc) {
        for (v, &a) in acc.iter().enumerate() {
            _mm512_storeu_ps(col.as_mut_ptr().add(16 * v), a);
        }
    }
    for i in 0..rows {
        let yr = y.add(i * ldy);
        for (j, col) in tmp.iter().enumerate() {
            let v = col[i];
            *yr.add(j) = if accumulate { *yr.add(j) + v } else { v };
        }
    }
}

/// `y (m×n) (+)= x (m×k) · b (k×n)` with every operand row-major (row
/// strides `ldx`, `ldb`, `ldy`) and nothing packed: six rows of x are
/// broadcast against up to 64 contiguous columns of b held in four zmm.
/// Suits short products whose `b` rows are contiguous, such as attention's
/// `p·v` and `q·kᵀ` with k stored transposed; the output tile is stored
/// row by row, so short `k` costs no transposition.
///
/// # Safety
/// AVX-512 must be available ([`available`]); x must hold `m` rows of `k`,
/// b `k` rows of `n`, y `m` rows of `n` (at their strides), y not aliased.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_nn(
    m: usize,
    n: usize,
    k: usize,
    x: *const f32,
    ldx: usize,
    b: *const f32,
    ldb: usize,
    y: *mut f32,
    ldy: usize,
    accumulate: bool,
) {
    let mut j0 = 0;
    while j0 < n {
        let nn = 64.min(n - j0);
        let mask: u16 = if nn % 16 == 0 { u16::MAX } else { (1u16 << (nn % 16)) - 1 };
        let mut i0 = 0;
        while i0 < m {
            let mr = 6.min(m - i0);
            let (xt, bt, yt) = (x.add(i0 * ldx), b.add(j0), y.add(i0 * ldy + j0));
            macro_rules! go {
                ($($r:literal, $v:literal);*) => {
                    match (mr, nn.div_ceil(16)) {
                        $(($r, $v) => tile_nn::<$r, $v>(k, xt, ldx, bt, ldb, yt, ldy, mask, accumulate),)*
                        _ => unreachable!("{mr} rows, {nn} columns"),
                    }
                };
            }
            go!(6, 4; 6, 3; 6, 2; 6, 1; 5, 4; 5, 3; 5, 2; 5, 1; 4, 4; 4, 3; 4, 2; 4, 1;
                3, 4; 3, 3; 3, 2; 3, 1; 2, 4; 2, 3; 2, 2; 2, 1; 1, 4; 1, 3; 1, 2; 1, 1);
            i0 += mr;
        }
        j0 += nn;
    }
}

/// One `M × 16V` tile of [`gemm_nn`]; the last vector's columns are `mask`.
///
/// # Safety
/// As [`gemm_nn`], for `M` rows and `16(V-1) + popcount(mask)` columns.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_nn<const M: usize, const V: usize>(
    k: usize,
    x: *const f32,
    ldx: usize,
    b: *const f32,
    ldb: usize,
    y: *mut f32,
    ldy: usize,
    mask: u16,
    accumulate: bool,
) {
    let lane_mask = |v: usize| if v + 1 == V { mask } else { u16::MAX };
    let mut acc = [[_mm512_setzero_ps(); V]; M];
    for t in 0..k {
        let mut bv = [_mm512_setzero_ps(); V];
        for (v, bv) in bv.iter_mut().enumerate() {
            *bv = _mm512_maskz_loadu_ps(lane_mask(v), b.add(t * ldb + 16 * v));
        }
        for (i, acc) in acc.iter_mut().enumerate() {
            let s = _mm512_set1_ps(*x.add(i * ldx + t));
            for (a, &b) in acc.iter_mut().zip(&bv) {
                *a = _mm512_fmadd_ps(b, s, *a);
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        for (v, &a) in acc.iter().enumerate() {
            let p = y.add(i * ldy + 16 * v);
            let val = if accumulate { _mm512_add_ps(_mm512_maskz_loadu_ps(lane_mask(v), p), a) } else { a };
            _mm512_mask_storeu_ps(p, lane_mask(v), val);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-0.5, 0.5).
    fn uniform(mut seed: u32) -> impl FnMut() -> f32 {
        move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        }
    }

    fn reference(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                y[i * n + j] = (0..k).map(|t| x[i * k + t] as f64 * w[j * k + t] as f64).sum::<f64>() as f32;
            }
        }
        y
    }

    /// gemm_nn against the reference for every tile shape and ragged
    /// column tails, overwriting and accumulating, with padded strides.
    #[test]
    fn gemm_nn_matches_reference() {
        if !available() {
            return;
        }
        let mut r = uniform(11);
        for &(m, n, k) in &[(1, 1, 1), (7, 17, 3), (13, 64, 64), (6, 130, 20), (20, 47, 1), (64, 128, 64)] {
            let (ldx, ldb, ldy) = (k + 2, n + 3, n + 1);
            let x: Vec<f32> = (0..m * ldx).map(|_| r()).collect();
            let b: Vec<f32> = (0..k * ldb).map(|_| r()).collect();
            let y0: Vec<f32> = (0..m * ldy).map(|_| r()).collect();
            for accumulate in [false, true] {
                let mut y = y0.clone();
                // SAFETY: AVX-512 is available; the buffers hold the rows at their strides.
                unsafe { gemm_nn(m, n, k, x.as_ptr(), ldx, b.as_ptr(), ldb, y.as_mut_ptr(), ldy, accumulate) };
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k).map(|t| x[i * ldx + t] as f64 * b[t * ldb + j] as f64).sum();
                        let want = dot + if accumulate { y0[i * ldy + j] as f64 } else { 0.0 };
                        let got = y[i * ldy + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "m{m} n{n} k{k} ({i},{j}): {got} vs {want}"
                        );
                    }
                    assert_eq!(y[i * ldy + n], y0[i * ldy + n], "wrote past the product's columns");
                }
            }
        }
    }

    /// Every tile shape (strip widths 1–4 vectors, 1–6 W rows), ragged m,
    /// k blocks that accumulate, and a y wider than the product.
    #[test]
    fn matches_reference_for_every_tile_shape() {
        if !available() {
            return;
        }
        let mut r = uniform(7);
        for &(m, n, k) in &[(1, 1, 1), (17, 7, 33), (64, 6, 16), (100, 13, 70), (130, 25, 129), (48, 11, 5)] {
            let x: Vec<f32> = (0..m * k).map(|_| r()).collect();
            let w: Vec<f32> = (0..n * k).map(|_| r()).collect();
            let want = reference(&x, &w, m, n, k);
            let px = PackedX::new(&x, m, k, k).unwrap();
            // The same x with rows 5 values apart further on packs the same.
            let ld = k + 5;
            let mut xs = vec![f32::NAN; m * ld];
            for i in 0..m {
                xs[i * ld..i * ld + k].copy_from_slice(&x[i * k..(i + 1) * k]);
            }
            let pxs = PackedX::new(&xs[..(m - 1) * ld + k], m, k, ld).unwrap();
            let bytes = |p: &PackedX| {
                let mut v = Vec::new();
                for s in 0..m.div_ceil(MS) {
                    // SAFETY: new() writes the first width·k values of every strip.
                    let strip = unsafe {
                        std::slice::from_raw_parts(
                            (p.data.as_ptr() as *const f32).add(s * MS * k),
                            PackedX::width(m, s) * k,
                        )
                    };
                    v.extend_from_slice(strip);
                }
                v
            };
            assert_eq!(bytes(&px), bytes(&pxs), "m{m} k{k}: strided rows pack differently");
            let ldy = n + 3;
            let mut y = vec![f32::NAN; m * ldy];
            let kb = k.div_ceil(2).max(1);
            let mut k0 = 0;
            while k0 < k {
                let kc = kb.min(k - k0);
                // SAFETY: the CPU has AVX-512; W rows hold k values from k0
                // at stride k, y holds m rows of n at stride ldy.
                unsafe { gemm_bt(&px, k0, kc, w.as_ptr().add(k0), k, n, y.as_mut_ptr(), ldy, k0 > 0) };
                k0 += kc;
            }
            for i in 0..m {
                for j in 0..n {
                    let (a, b) = (y[i * ldy + j], want[i * n + j]);
                    assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "m{m} n{n} k{k} ({i},{j}): {a} vs {b}");
                }
                assert!(y[i * ldy + n].is_nan(), "wrote past the product's columns");
            }
        }
    }
}

#[cfg(test)]
mod transpose_tests {
    use super::*;

    #[test]
    fn transposed_copy_pads_rows_to_16() {
        if !available() {
            return;
        }
        // Enough 16-row groups for the pool to split them across threads.
        for (rows, cols) in [(1usize, 1usize), (17, 40), (784, 512), (1000, 33)] {
            let lds = cols + 3;
            let src: Vec<f32> = (0..rows * lds).map(|i| i as f32).collect();
            let (buf, ld) = transposed_copy(&src[..(rows - 1) * lds + cols], rows, cols, lds).unwrap();
            assert_eq!(ld, rows.next_multiple_of(16));
            // SAFETY: transposed_copy writes every one of the cols·ld values.
            let dst = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const f32, cols * ld) };
            for t in 0..cols {
                for i in 0..ld {
                    let want = if i < rows { src[i * lds + t] } else { 0.0 };
                    assert_eq!(dst[t * ld + i], want, "{rows}×{cols} at ({t}, {i})");
                }
            }
        }
    }

    #[test]
    fn transposes_every_shape_and_stride() {
        if !available() {
            return;
        }
        for (rows, cols) in [(1usize, 1usize), (5, 3), (16, 16), (17, 40), (33, 7), (64, 64), (70, 24), (128, 65)] {
            let lds = cols + 2;
            let src: Vec<f32> = (0..rows * lds).map(|i| i as f32).collect();
            // Exact, unpadded and padded destination strides, and a buffer
            // that ends right after the last value.
            for ldd in [rows, rows + 1, rows.next_multiple_of(16), rows.next_multiple_of(16) + 16] {
                let mut dst = vec![f32::NAN; (cols - 1) * ldd + rows];
                transpose(&src, rows, cols, lds, &mut dst, ldd);
                for t in 0..cols {
                    for i in 0..rows {
                        assert_eq!(dst[t * ldd + i], src[i * lds + t], "{rows}×{cols} ldd {ldd} at ({t}, {i})");
                    }
                }
            }
        }
    }
}
