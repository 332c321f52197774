//! Winograd F(2×2, 3×3) for f32 2-D convolutions with 3×3 kernels, unit
//! stride and no dilation (the "same" 3×3 layer of most CNNs).
//!
//! The output is cut into 2×2 tiles. Each tile reads a 4×4 input patch `d`
//! (zeros outside the input) and is computed as
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: per tile and channel, 16 products
//! replace the 36 of the direct form. Summed over input channels, the 16
//! element-wise products become 16 independent GEMMs
//! `M_ξ (tiles × C_out) = V_ξ (tiles × C_in) · U_ξ (C_in × C_out)`, so the
//! convolution costs 16/36 of the direct kernel's multiply-adds plus two
//! cheap transforms. The transforms only add and subtract (and halve, for
//! the weight), so the result differs from the direct sum by a few f32
//! roundings.
//!
//! Work is split into chunks of [`tiles_per_chunk`] tiles; a chunk's `V`
//! and `M` stay in the core's caches between the input transform, the GEMMs
//! ([`sgemm::gemm_nn`], the weight `U_ξ` read in place) and the output
//! transform. Both are stored tile-major (a tile's 16 rows together), so the
//! transforms stream one contiguous block per tile and the GEMMs read and
//! write rows 16 apart.

use super::Geometry;
use crate::backend::cpu::sgemm;
use crate::backend::cpu::simd::{parallel_for, SendPtr};
use std::arch::x86_64::*;

/// Bytes of one chunk's transformed input and output. Measured at 64 → 64
/// channels (8×56×56): 24 tiles (192 KiB) 3.96 ms, 12 tiles 4.02, 48 tiles
/// 4.12, 96 tiles 4.40 — the transforms' stores want the chunk near L1.
const CHUNK_BYTES: usize = 192 << 10;
/// Channel counts up to which the transformed weight (16·C_in·C_out f32,
/// 4 MiB at the bound) is read in place by every chunk.
const MAX_CHANNELS: usize = 256;

/// Whether `g` runs here: 2-D, 3×3, unit stride, no dilation, one group,
/// enough channels for the GEMMs to dominate the transforms, and AVX-512.
pub(super) fn applies(g: &Geometry) -> bool {
    g.groups == 1
        && g.k == [3, 3, 1]
        && g.s == [1, 1, 1]
        && g.kd == [1, 1, 1]
        && g.e == [1, 1, 1]
        && g.l[2] == 1
        && g.o[2] == 1
        && g.lo[2] == 0
        && (16..=MAX_CHANNELS).contains(&g.c)
        && (16..=MAX_CHANNELS).contains(&g.cout)
        && g.o[0] >= 2
        && g.o[1] >= 2
        && g.n * g.o[0] * g.o[1] >= 256
        && sgemm::available()
}

/// Tiles per chunk: a multiple of the GEMM's six rows whose `V` and `M`
/// fit [`CHUNK_BYTES`].
fn tiles_per_chunk(c: usize, cout: usize) -> usize {
    (CHUNK_BYTES / (16 * 4 * (c + cout)) / 6 * 6).clamp(12, 96)
}

/// Runs `g` (for which [`applies`] holds) on dense f32 data: `x` is
/// `(n, H, W, C)`, `w` is `(C_out, 3, 3, C)`, `y` is `(n, H', W', C_out)`.
pub(super) fn run(g: &Geometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    let (c, cout) = (g.c, g.cout);
    let [l0, l1, _] = g.l;
    let [o0, o1, _] = g.o;
    assert!(x.len() >= g.n * l0 * l1 * c && w.len() >= cout * 9 * c && y.len() >= g.n * o0 * o1 * cout);
    let u = transform_weight(w, c, cout, g.flip);
    let (t0, t1) = (o0.div_ceil(2), o1.div_ceil(2));
    let tiles = g.n * t0 * t1;
    let tb = tiles_per_chunk(c, cout);
    let chunks = tiles.div_ceil(tb);
    let yp = SendPtr(y.as_mut_ptr());
    let zeros = vec![0f32; c];
    // Tile t's (image, tile row, tile column).
    let coords = |t: usize| (t / (t0 * t1), (t / t1) % t0, t % t1);
    parallel_for(chunks, tb * 16 * c * cout * 2, |range| {
        let mut v = vec![0f32; 16 * tb * c];
        let mut m = vec![0f32; 16 * tb * cout];
        for chunk in range {
            let first = chunk * tb;
            let count = tb.min(tiles - first);
            for i in 0..count {
                let t = first + i;
                let (img, th, tw) = coords(t);
                // The 4×4 patch's rows of C channels; zeros outside the input.
                let mut rows = [zeros.as_ptr(); 16];
                for (r, s) in (0..4).flat_map(|r| (0..4).map(move |s| (r, s))) {
                    let (i0, i1) = ((2 * th + r) as i64 - g.lo[0], (2 * tw + s) as i64 - g.lo[1]);
                    if (0..l0 as i64).contains(&i0) && (0..l1 as i64).contains(&i1) {
                        rows[r * 4 + s] = x[((img * l0 + i0 as usize) * l1 + i1 as usize) * c..].as_ptr();
                    }
                }
                // SAFETY: each row holds c readable f32 (an input pixel or `zeros`); v holds tb
                // tiles of 16 rows of c; AVX-512 was checked by `applies`.
                unsafe { input_tile(&rows, c, v.as_mut_ptr().add(i * 16 * c), c) };
            }
            for xi in 0..16 {
                // SAFETY: V_ξ is count×c (row stride 16c), U_ξ c×cout, M_ξ count×cout (row
                // stride 16·cout); AVX-512 checked.
                unsafe {
                    sgemm::gemm_nn(
                        count,
                        cout,
                        c,
                        v.as_ptr().add(xi * c),
                        16 * c,
                        u.as_ptr().add(xi * c * cout),
                        cout,
                        m.as_mut_ptr().add(xi * cout),
                        16 * cout,
                        false,
                    )
                };
            }
            for i in 0..count {
                let t = first + i;
                let (img, th, tw) = coords(t);
                let (r0, c0) = (2 * th, 2 * tw);
                let mut out = [std::ptr::null_mut(); 4];
                for (q, o) in out.iter_mut().enumerate() {
                    let (r, col) = (r0 + q / 2, c0 + q % 2);
                    if r < o0 && col < o1 {
                        *o = yp.get().wrapping_add(((img * o0 + r) * o1 + col) * cout);
                    }
                }
                // SAFETY: m holds tb tiles of 16 rows of cout; each non-null output points to
                // cout writable f32 of this tile's own pixel; AVX-512 checked.
                unsafe { output_tile(m.as_ptr().add(i * 16 * cout), cout, cout, &out) };
            }
        }
    });
}

/// `U_ξ[ci][co] = (G g Gᵀ)_ξ` for `g = w[co, :, :, ci]` (flipped when `flip`),
/// with `G = [[1,0,0], [½,½,½], [½,-½,½], [0,0,1]]`; laid out as 16
/// row-major `C × C_out` matrices.
fn transform_weight(w: &[f32], c: usize, cout: usize, flip: bool) -> Vec<f32> {
    let mut u = vec![0f32; 16 * c * cout];
    let up = SendPtr(u.as_mut_ptr());
    let g_rows = |g: [f32; 3]| [g[0], 0.5 * (g[0] + g[1] + g[2]), 0.5 * (g[0] - g[1] + g[2]), g[2]];
    parallel_for(c, 16 * 12 * cout, |range| {
        for ci in range {
            for co in 0..cout {
                let tap = |a: usize, b: usize| {
                    let (a, b) = if flip { (2 - a, 2 - b) } else { (a, b) };
                    w[((co * 3 + a) * 3 + b) * c + ci]
                };
                // G g: four rows of three; then each row times Gᵀ.
                let cols: [[f32; 4]; 3] = std::array::from_fn(|b| g_rows([tap(0, b), tap(1, b), tap(2, b)]));
                for (r, ((&a, &b), &e)) in cols[0].iter().zip(&cols[1]).zip(&cols[2]).enumerate() {
                    let row = g_rows([a, b, e]);
                    for (s, &val) in row.iter().enumerate() {
                        // SAFETY: the index is inside u (ξ < 16, ci < c, co < cout), and row ci
                        // of every U_ξ is written by this range's task only.
                        unsafe { *up.get().add(((r * 4 + s) * c + ci) * cout + co) = val };
                    }
                }
            }
        }
    });
    u
}

/// Lane mask for the last `n % 16` lanes of a row (all lanes when `n` is a multiple of 16).
fn tail_mask(n: usize) -> __mmask16 {
    if n.is_multiple_of(16) {
        u16::MAX
    } else {
        (1u16 << (n % 16)) - 1
    }
}

/// `V_ξ[row] = (Bᵀ d B)_ξ` for the patch whose 16 pixel rows are `d`, with
/// `Bᵀ = [[1,0,-1,0], [0,1,1,0], [0,-1,1,0], [0,1,0,-1]]`; `V_ξ`'s row
/// starts at `v + ξ·stride`.
///
/// # Safety
/// AVX-512 F; every `d[k]` holds `c` readable f32; `v + ξ·stride` holds `c`
/// writable f32 for every `ξ < 16`.
#[target_feature(enable = "avx512f")]
unsafe fn input_tile(d: &[*const f32; 16], c: usize, v: *mut f32, stride: usize) {
    let mut j = 0;
    while j < c {
        let k = if j + 16 <= c { u16::MAX } else { tail_mask(c) };
        // SAFETY: lanes j..j+16 of k are inside each row (the contract).
        let ld = |p: *const f32| unsafe { _mm512_maskz_loadu_ps(k, p.add(j)) };
        let x: [__m512; 16] = std::array::from_fn(|q| ld(d[q]));
        // Bᵀ along columns within each row, then along rows.
        let mut t = [_mm512_setzero_ps(); 16];
        for r in 0..4 {
            let (a, b, cc, e) = (x[r * 4], x[r * 4 + 1], x[r * 4 + 2], x[r * 4 + 3]);
            t[r * 4] = _mm512_sub_ps(a, cc);
            t[r * 4 + 1] = _mm512_add_ps(b, cc);
            t[r * 4 + 2] = _mm512_sub_ps(cc, b);
            t[r * 4 + 3] = _mm512_sub_ps(b, e);
        }
        for s in 0..4 {
            let (a, b, cc, e) = (t[s], t[4 + s], t[8 + s], t[12 + s]);
            let out = [_mm512_sub_ps(a, cc), _mm512_add_ps(b, cc), _mm512_sub_ps(cc, b), _mm512_sub_ps(b, e)];
            for (r, val) in out.into_iter().enumerate() {
                // SAFETY: row ξ = 4r + s of V has c writable f32 (the contract).
                unsafe { _mm512_mask_storeu_ps(v.add((r * 4 + s) * stride + j), k, val) };
            }
        }
        j += 16;
    }
}

/// Writes the tile's 2×2 outputs `Aᵀ M A`, `Aᵀ = [[1,1,1,0], [0,1,-1,-1]]`,
/// where `M_ξ`'s row starts at `m + ξ·stride`; `out[2u + v]` is output
/// pixel `(u, v)` of the tile, or null where it lies past the output's edge.
///
/// # Safety
/// AVX-512 F; `m + ξ·stride` holds `cout` readable f32 for every `ξ < 16`;
/// each non-null `out` entry holds `cout` writable f32.
#[target_feature(enable = "avx512f")]
unsafe fn output_tile(m: *const f32, stride: usize, cout: usize, out: &[*mut f32; 4]) {
    let mut j = 0;
    while j < cout {
        let k = if j + 16 <= cout { u16::MAX } else { tail_mask(cout) };
        // SAFETY: lanes j..j+16 of k are inside each row of M (the contract).
        let x: [__m512; 16] = std::array::from_fn(|q| unsafe { _mm512_maskz_loadu_ps(k, m.add(q * stride + j)) });
        // Aᵀ along rows: two rows of four.
        let mut s = [_mm512_setzero_ps(); 8];
        for col in 0..4 {
            let (a, b, cc, e) = (x[col], x[4 + col], x[8 + col], x[12 + col]);
            s[col] = _mm512_add_ps(_mm512_add_ps(a, b), cc);
            s[4 + col] = _mm512_sub_ps(_mm512_sub_ps(b, cc), e);
        }
        for u in 0..2 {
            let (a, b, cc, e) = (s[u * 4], s[u * 4 + 1], s[u * 4 + 2], s[u * 4 + 3]);
            let vals = [_mm512_add_ps(_mm512_add_ps(a, b), cc), _mm512_sub_ps(_mm512_sub_ps(b, cc), e)];
            for (vv, val) in vals.into_iter().enumerate() {
                let p = out[u * 2 + vv];
                if !p.is_null() {
                    // SAFETY: a non-null output row has cout writable f32 (the contract).
                    unsafe { _mm512_mask_storeu_ps(p.add(j), k, val) };
                }
            }
        }
        j += 16;
    }
}
