//! Direct f32 convolution with an AVX-512 register-tile micro-kernel.
//!
//! Applies to one-group convolutions without input dilation (any stride,
//! kernel dilation, padding, flip, 1-3 spatial axes) whose output rows are
//! long enough to fill a tile. The weight is repacked once per call into
//! blocks of 64 output channels, `[block][tap][C_in][64]` (taps in
//! cross-correlation order, the flip applied, zero lanes past `C_out`).
//!
//! An output "row" is one `(n, p0, p1)` position; a tile is `R` consecutive
//! outputs of a row along the last spatial axis times one block of `16 * NV`
//! output channels, accumulated in `R * NV` zmm registers over every valid
//! tap and input channel — each step loads `NV` weight vectors, broadcasts
//! `R` input elements and issues `R * NV` FMAs — and stored once. Taps
//! along the outer axes that fall into padding are skipped; a tile whose
//! window along the last axis leaves the input (an edge tile) reads a small
//! zero-padded copy of its window instead of the input. Rows are split
//! across threads.

use super::Geometry;
use crate::backend::cpu::simd::{parallel_for, SendPtr};

/// Output channels per weight block (four zmm vectors).
const BLOCK: usize = 64;

/// Whether the direct kernel runs `g` on this CPU.
pub(super) fn applies(g: &Geometry) -> bool {
    let ntaps = g.k[0] * g.k[1] * g.k[2];
    let ok = g.groups == 1
        && g.e == [1, 1, 1]
        && !g.pointwise
        && g.o[2] >= 4
        && g.c > 0
        && g.cout > 0
        // A weight block stays in the L2 cache.
        && ntaps * g.c <= 6144;
    ok && has_avx512()
}

fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Repacks `w` (`C_out x K0 x K1 x K2 x C`) into `[block][tap][C][64]`,
/// flipping the taps when `g.flip`. Returns the buffer and the element
/// offset at which the (64-byte aligned) packed data starts.
fn pack_weight(g: &Geometry, w: &[f32]) -> (Vec<f32>, usize) {
    let [k0, k1, k2] = g.k;
    let ntaps = k0 * k1 * k2;
    let c = g.c;
    let nb = g.cout.div_ceil(BLOCK);
    let len = nb * ntaps * c * BLOCK;
    let mut buf = vec![0f32; len + 16];
    let start = buf.as_ptr().align_offset(64).min(16);
    let wp = &mut buf[start..start + len];
    for co in 0..g.cout {
        let (b, lane) = (co / BLOCK, co % BLOCK);
        for t in 0..ntaps {
            let (a0, a1, a2) = (t / (k1 * k2), (t / k2) % k1, t % k2);
            let src_t = if g.flip { ((k0 - 1 - a0) * k1 + (k1 - 1 - a1)) * k2 + (k2 - 1 - a2) } else { t };
            let src = &w[(co * ntaps + src_t) * c..(co * ntaps + src_t + 1) * c];
            let dst = (b * ntaps + t) * c * BLOCK + lane;
            for (ci, &v) in src.iter().enumerate() {
                wp[dst + ci * BLOCK] = v;
            }
        }
    }
    (buf, start)
}

/// One tile's operands (see [`avx512::tile`]).
struct Tile<'a> {
    /// Per valid tap row: the input element read by the tile's first output
    /// and the row's first tap, and the row's packed weights (first tap,
    /// first channel, first lane of the block).
    rows: &'a [(*const f32, *const f32)],
    /// Taps along the last axis.
    k2: usize,
    /// Input channels.
    c: usize,
    /// Input elements between consecutive outputs (`stride * C`).
    ps: usize,
    /// Input elements between consecutive taps (`dilation * C`).
    ts: usize,
    /// Output of the first position, first channel of the block.
    out: *mut f32,
    /// Output elements between consecutive positions (`C_out`).
    os: usize,
    /// Lanes of the last vector that are stored.
    mask: u16,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, BLOCK};
    use std::arch::x86_64::*;

    /// Computes one `R x 16 NV` output tile.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; every row pointer addresses, for each of
    /// `R` outputs (stride `ps`), `k2` taps (stride `ts`) of `c` readable
    /// elements; every weight pointer addresses `k2 * c * BLOCK` readable
    /// elements; `out` addresses `R` writable positions (stride `os`) of
    /// `16 * (NV - 1)` elements plus the lanes of `mask`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const R: usize, const NV: usize>(t: &Tile<'_>) {
        // Pointer steps use wrapping arithmetic: every address formed lies
        // in bounds per the contract, and the inner loop stays free of
        // debug-build overflow checks.
        let mut offs = [0usize; R];
        for (j, o) in offs.iter_mut().enumerate() {
            *o = j.wrapping_mul(t.ps);
        }
        let wstep = t.c.wrapping_mul(BLOCK);
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        for &(xb, wb) in t.rows {
            let (mut xt, mut wt) = (xb, wb);
            for _ in 0..t.k2 {
                let (mut xp, mut wp) = (xt, wt);
                for _ in 0..t.c {
                    let mut wv = [_mm512_setzero_ps(); NV];
                    for (v, w) in wv.iter_mut().enumerate() {
                        // SAFETY: lanes v*16.. of this channel's weight row.
                        *w = unsafe { _mm512_loadu_ps(wp.wrapping_add(v * 16)) };
                    }
                    for (a, &o) in acc.iter_mut().zip(&offs) {
                        // SAFETY: this channel of one output's tap input.
                        let b = unsafe { _mm512_broadcastss_ps(_mm_load_ss(xp.wrapping_add(o))) };
                        for (av, &w) in a.iter_mut().zip(&wv) {
                            *av = _mm512_fmadd_ps(w, b, *av);
                        }
                    }
                    xp = xp.wrapping_add(1);
                    wp = wp.wrapping_add(BLOCK);
                }
                xt = xt.wrapping_add(t.ts);
                wt = wt.wrapping_add(wstep);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: output position j of the tile, per the contract.
            unsafe {
                let o = t.out.add(j * t.os);
                for (v, &val) in a.iter().enumerate().take(NV - 1) {
                    _mm512_storeu_ps(o.add(v * 16), val);
                }
                _mm512_mask_storeu_ps(o.add((NV - 1) * 16), t.mask, a[NV - 1]);
            }
        }
    }

    /// The widest tile for `nv` vectors per output.
    pub(super) fn max_r(nv: usize) -> usize {
        match nv {
            4 => 6,
            3 => 8,
            _ => 12,
        }
    }

    /// Runs the `r x nv` tile kernel.
    ///
    /// # Safety
    /// As [`tile`], with `1 <= nv <= 4` and `1 <= r <= max_r(nv)`.
    pub(super) unsafe fn run_tile(r: usize, nv: usize, t: &Tile<'_>) {
        macro_rules! pick {
            ($nv:literal; $($r:literal)*) => {
                match r {
                    $($r => tile::<$r, $nv>,)*
                    _ => unreachable!("tile width {r}"),
                }
            };
        }
        let f: unsafe fn(&Tile<'_>) = match nv {
            4 => pick!(4; 1 2 3 4 5 6),
            3 => pick!(3; 1 2 3 4 5 6 7 8),
            2 => pick!(2; 1 2 3 4 5 6 7 8 9 10 11 12),
            _ => pick!(1; 1 2 3 4 5 6 7 8 9 10 11 12),
        };
        // SAFETY: the caller upholds `tile`'s contract.
        unsafe { f(t) }
    }
}

/// Runs the convolution `g` (for which [`applies`] holds) on dense f32 data.
pub(super) fn run(g: &Geometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    run_avx512(g, x, w, y);
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct convolution without AVX-512 ({} {} {})", g.c, x.len() + w.len(), y.len());
}

#[cfg(target_arch = "x86_64")]
fn run_avx512(g: &Geometry, x: &[f32], w: &[f32], y: &mut [f32]) {
    let [l0, l1, l2] = g.l;
    let [k0, k1, k2] = g.k;
    let [o0, o1, o2] = g.o;
    let [s0, s1, s2] = g.s;
    let [d0, d1, d2] = g.kd;
    let [lo0, lo1, lo2] = g.lo;
    let (c, cout) = (g.c, g.cout);
    let ntaps = k0 * k1 * k2;
    let (wbuf, wstart) = pack_weight(g, w);
    let wp = &wbuf[wstart..];
    let nb = cout.div_ceil(BLOCK);
    // Input positions one tile's window spans along the last axis.
    let rmax = avx512::max_r(4).max(avx512::max_r(1));
    let seg_max = (rmax - 1) * s2 + (k2 - 1) * d2 + 1;
    let rows = g.n * o0 * o1;
    let yp = SendPtr(y.as_mut_ptr());
    let cost = o2 * cout * ntaps * c;
    parallel_for(rows, cost, |range| {
        let mut taps: Vec<(usize, usize)> = Vec::with_capacity(k0 * k1);
        let mut ptrs: Vec<(*const f32, *const f32)> = Vec::with_capacity(k0 * k1);
        let mut scratch = vec![0f32; k0 * k1 * seg_max * c];
        for r in range {
            let p1 = r % o1;
            let p0 = (r / o1) % o0;
            let n = r / (o1 * o0);
            // Valid tap rows: (input row offset, tap-row index).
            taps.clear();
            for a0 in 0..k0 {
                let i0 = (p0 * s0 + a0 * d0) as i64 - lo0;
                if i0 < 0 || i0 >= l0 as i64 {
                    continue;
                }
                for a1 in 0..k1 {
                    let i1 = (p1 * s1 + a1 * d1) as i64 - lo1;
                    if i1 < 0 || i1 >= l1 as i64 {
                        continue;
                    }
                    taps.push((((n * l0 + i0 as usize) * l1 + i1 as usize) * l2 * c, a0 * k1 + a1));
                }
            }
            let out_row = r * o2 * cout;
            for b in 0..nb {
                let width = (cout - b * BLOCK).min(BLOCK);
                let nv = width.div_ceil(16);
                let mask = (((1u32 << (width - (nv - 1) * 16)) - 1) & 0xffff) as u16;
                let rw = avx512::max_r(nv);
                let wblock = &wp[b * ntaps * c * BLOCK..(b + 1) * ntaps * c * BLOCK];
                let mut t0 = 0;
                while t0 < o2 {
                    let rt = rw.min(o2 - t0);
                    let q0 = (t0 * s2) as i64 - lo2;
                    let seg = (rt - 1) * s2 + (k2 - 1) * d2 + 1;
                    ptrs.clear();
                    if q0 >= 0 && q0 as usize + seg <= l2 {
                        for &(xo, tr) in &taps {
                            ptrs.push((x[xo + q0 as usize * c..].as_ptr(), wblock[tr * k2 * c * BLOCK..].as_ptr()));
                        }
                    } else {
                        // Edge tile: copy the window with zeros outside the input.
                        for (ri, &(xo, tr)) in taps.iter().enumerate() {
                            let dst = &mut scratch[ri * seg * c..(ri + 1) * seg * c];
                            for q in 0..seg {
                                let iq = q0 + q as i64;
                                let d = &mut dst[q * c..(q + 1) * c];
                                if iq < 0 || iq >= l2 as i64 {
                                    d.fill(0.0);
                                } else {
                                    let s = xo + iq as usize * c;
                                    d.copy_from_slice(&x[s..s + c]);
                                }
                            }
                            ptrs.push((scratch[ri * seg * c..].as_ptr(), wblock[tr * k2 * c * BLOCK..].as_ptr()));
                        }
                    }
                    let t = Tile {
                        rows: &ptrs,
                        k2,
                        c,
                        ps: s2 * c,
                        ts: d2 * c,
                        // SAFETY: (t0 + rt) <= o2 positions of output row r,
                        // block b's channels, lie inside `y`.
                        out: unsafe { yp.get().add(out_row + t0 * cout + b * BLOCK) },
                        os: cout,
                        mask,
                    };
                    // SAFETY: AVX-512F was detected (`applies`). Interior rows
                    // read input positions q0 .. q0 + seg <= l2 of an input
                    // row in `x`; edge rows read `seg` positions of scratch;
                    // each weight row holds k2 * c * BLOCK elements of the
                    // block; the tile writes rt positions of its own output
                    // row (rows are disjoint across tasks), `width` channels.
                    unsafe { avx512::run_tile(rt, nv, &t) };
                    t0 += rt;
                }
            }
        }
    });
}
