//! Direct f32 convolution with an AVX-512 register-tile micro-kernel.
//!
//! Applies to one-group convolutions without input dilation (any stride,
//! kernel dilation, padding, flip, 1-3 spatial axes) whose output rows are
//! long enough to fill a tile.
//!
//! An output "row" is one `(n, p0, p1)` position; rows are cut into strips
//! of at most [`STRIP`] outputs along the last spatial axis, and the strips
//! of all rows are handed to the threads in small groups on demand (a
//! thread that is descheduled on a busy machine does not hold up the rest). A strip is cut into tiles of up
//! to `R` consecutive outputs (balanced widths); a tile times one block of
//! `16 * NV` output channels is accumulated in `R * NV` zmm registers (6 x 4
//! for 64 channels) — each step loads `NV` weight vectors, broadcasts `R`
//! input elements and issues `R * NV` FMAs.
//!
//! The 6 x 64 tile's inner loop (one tap, every input channel) is written in
//! assembly so that no address arithmetic competes with the FMAs; the other
//! tile shapes use intrinsics.
//!
//! The input channels are split into blocks when the weights of one block of
//! output channels (every tap) would not stay in the L2 cache: per block of
//! output channels and block of input channels, every tile of the strip
//! accumulates into its output (loaded back after the first input block).
//! The weight is repacked once per call as
//! `[out block][in block][tap][in channel][64]` (taps in cross-correlation
//! order, the flip applied, zero lanes past `C_out`), so one pass reads one
//! contiguous slice.
//!
//! Taps along the outer axes that fall into padding are skipped; a tile
//! whose window along the last axis leaves the input (an edge tile) is
//! zeroed and then accumulated by one call per run of taps along that axis
//! whose outputs read the same range inside the input, so nothing is copied
//! and padding is never read.

use super::Geometry;
use crate::backend::cpu::simd::{num_threads, SendPtr, PAR_THRESHOLD};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Output channels per weight block (four zmm vectors).
const BLOCK: usize = 64;
/// Bytes of packed weights one pass over a strip reads (they stay in the L2
/// cache). Finer input blocks, whose weights fit the L1 cache, were measured
/// slower (about 125 against 140 GFLOP/s per core for 3x3, 64 -> 64
/// channels): every pass reloads and stores the strip's outputs.
const W_PASS: usize = 1 << 20;
/// Longest strip of outputs (its output block stays in the L1 cache).
const STRIP: usize = 64;

/// The spatial sizes of a [`Geometry`] with its trailing trivial axes (the
/// padding of 1-D and 2-D convolutions to three axes: length, kernel and
/// output 1, no padding) moved to the front, so that the last axis — the
/// one tiles run along — is the innermost real one. Size-1 axes do not
/// change the row-major layout of the input, weight or output.
struct Dims {
    l: [usize; 3],
    k: [usize; 3],
    o: [usize; 3],
    s: [usize; 3],
    kd: [usize; 3],
    lo: [i64; 3],
}

impl Dims {
    fn new(g: &Geometry) -> Dims {
        let trivial = |i: usize| g.l[i] == 1 && g.k[i] == 1 && g.o[i] == 1 && g.lo[i] == 0;
        let shift = if trivial(2) {
            if trivial(1) {
                2
            } else {
                1
            }
        } else {
            0
        };
        // Axis i of the result is axis (i + 3 - shift) % 3 of `g`.
        let p = |i: usize| (i + 3 - shift) % 3;
        Dims {
            l: [g.l[p(0)], g.l[p(1)], g.l[p(2)]],
            k: [g.k[p(0)], g.k[p(1)], g.k[p(2)]],
            o: [g.o[p(0)], g.o[p(1)], g.o[p(2)]],
            s: [g.s[p(0)], g.s[p(1)], g.s[p(2)]],
            kd: [g.kd[p(0)], g.kd[p(1)], g.kd[p(2)]],
            lo: [g.lo[p(0)], g.lo[p(1)], g.lo[p(2)]],
        }
    }
}

/// Whether the direct kernel runs `g` on this CPU.
pub(super) fn applies(g: &Geometry) -> bool {
    let ntaps = g.k[0] * g.k[1] * g.k[2];
    let ok = g.groups == 1
        && g.e == [1, 1, 1]
        && !g.pointwise
        && Dims::new(g).o[2] >= 4
        && g.c > 0
        && g.cout > 0
        // A block of 64 output channels' weights (repacked per call) stays
        // within 1.5 MB.
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

/// Input channels per block: `(channels per block, blocks)`.
fn in_blocks(ntaps: usize, c: usize) -> (usize, usize) {
    let per = (W_PASS / (ntaps * BLOCK * 4)).clamp(1, c);
    let nblk = c.div_ceil(per);
    (c.div_ceil(nblk), nblk)
}

/// Repacks `w` (`C_out x K0 x K1 x K2 x C`) into
/// `[out block][in block][tap][in channel][64]` (see the module docs),
/// flipping the taps when `g.flip`. Returns the buffer and the element
/// offset at which the (64-byte aligned) packed data starts.
fn pack_weight(g: &Geometry, w: &[f32]) -> (Vec<f32>, usize) {
    let [k0, k1, k2] = Dims::new(g).k;
    let ntaps = k0 * k1 * k2;
    let c = g.c;
    let (cb, _) = in_blocks(ntaps, c);
    let nb = g.cout.div_ceil(BLOCK);
    let len = nb * ntaps * c * BLOCK;
    let mut buf = vec![0f32; len + 16];
    let start = buf.as_ptr().align_offset(64).min(16);
    let wp = &mut buf[start..start + len];
    for co in 0..g.cout {
        let (b, lane) = (co / BLOCK, co % BLOCK);
        let wb = b * ntaps * c * BLOCK;
        for t in 0..ntaps {
            let (a0, a1, a2) = (t / (k1 * k2), (t / k2) % k1, t % k2);
            let src_t = if g.flip { ((k0 - 1 - a0) * k1 + (k1 - 1 - a1)) * k2 + (k2 - 1 - a2) } else { t };
            let src = &w[(co * ntaps + src_t) * c..(co * ntaps + src_t + 1) * c];
            for (ib, blk) in src.chunks(cb).enumerate() {
                let dst = wb + ib * ntaps * cb * BLOCK + t * blk.len() * BLOCK + lane;
                for (i, &v) in blk.iter().enumerate() {
                    wp[dst + i * BLOCK] = v;
                }
            }
        }
    }
    (buf, start)
}

/// One tile's operands (see [`avx512::tile`]).
struct Tile<'a> {
    /// Per valid tap row: the input element read by the tile's first output
    /// and its first tap (channel 0), and the index of that tap.
    rows: &'a [(*const f32, usize)],
    /// Packed weights of this (output block, input block) pair.
    w: *const f32,
    /// First input channel of the block.
    c0: usize,
    /// Input channels in the block.
    cb: usize,
    /// Consecutive taps along the last axis.
    k2: usize,
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
    /// Add to the output instead of overwriting it.
    acc: bool,
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, BLOCK};
    use std::arch::x86_64::*;

    /// Computes one `R x 16 NV` output tile over one block of input
    /// channels.
    ///
    /// # Safety
    /// The CPU supports AVX-512F; every row pointer addresses, for each of
    /// `R` outputs (stride `ps`), `k2` taps (stride `ts`) of `c0 + cb`
    /// readable elements; `w` addresses `(tap + k2) * cb * BLOCK` readable
    /// elements for every row's first tap; `out` addresses `R` readable and
    /// writable positions (stride `os`) of `16 * (NV - 1)` elements plus the
    /// lanes of `mask`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile<const R: usize, const NV: usize>(t: &Tile<'_>) {
        // Pointer steps use wrapping arithmetic: every address formed lies
        // in bounds per the contract, and the inner loop stays free of
        // debug-build overflow checks.
        let mut offs = [0usize; R];
        for (j, o) in offs.iter_mut().enumerate() {
            *o = j.wrapping_mul(t.ps);
        }
        let mut acc = [[_mm512_setzero_ps(); NV]; R];
        if t.acc {
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: output position j of the tile, per the contract.
                unsafe {
                    let o = t.out.add(j * t.os);
                    for (v, av) in a.iter_mut().enumerate().take(NV - 1) {
                        *av = _mm512_loadu_ps(o.add(v * 16));
                    }
                    a[NV - 1] = _mm512_maskz_loadu_ps(t.mask, o.add((NV - 1) * 16));
                }
            }
        }
        let wstep = t.cb.wrapping_mul(BLOCK);
        for &(xb, tap) in t.rows {
            let mut xt = xb.wrapping_add(t.c0);
            let mut wt = t.w.wrapping_add(tap.wrapping_mul(wstep));
            for _ in 0..t.k2 {
                if R == 6 && NV == 4 {
                    // SAFETY: `acc` is a `[[__m512; 4]; 6]` (R == 6, NV == 4).
                    let a = unsafe { &mut *(&mut acc as *mut [[__m512; NV]; R] as *mut [[__m512; 4]; 6]) };
                    // SAFETY: the elements the loop below reads, per the
                    // contract; the packed weights are 64-byte aligned.
                    unsafe { steps_6x4(a, xt, wt, t.cb, t.ps) };
                    xt = xt.wrapping_add(t.ts);
                    wt = wt.wrapping_add(wstep);
                    continue;
                }
                let (mut xp, mut wp) = (xt, wt);
                for _ in 0..t.cb {
                    let mut wv = [_mm512_setzero_ps(); NV];
                    for (v, w) in wv.iter_mut().enumerate() {
                        // SAFETY: lanes v*16.. of this channel's weight row.
                        *w = unsafe { _mm512_load_ps(wp.wrapping_add(v * 16)) };
                    }
                    for (a, &o) in acc.iter_mut().zip(&offs) {
                        // SAFETY: this channel of one output's tap input.
                        let b = _mm512_set1_ps(unsafe { *xp.wrapping_add(o) });
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

    /// The inner loop of the `6 x 64` tile for one tap over `n` input
    /// channels (two per iteration): each channel loads four weight vectors,
    /// broadcasts six inputs and issues 24 FMAs. Written in assembly to keep
    /// the address arithmetic out of the loop (it competes with the FMAs for
    /// execution ports).
    ///
    /// # Safety
    /// The CPU supports AVX-512F; `xp + j * ps + i` (`j < 6`, `i < n`) are
    /// readable; `wp` is 64-byte aligned with `n * BLOCK` readable elements.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn steps_6x4(acc: &mut [[__m512; 4]; 6], xp: *const f32, wp: *const f32, n: usize, ps: usize) {
        // SAFETY: reads only the elements named in the contract; every
        // register it writes is declared.
        unsafe {
            std::arch::asm!(
                "test {n2}, {n2}",
                "jz 3f",
                "2:",
                "vmovaps {w0}, zmmword ptr [{wp}]",
                "vmovaps {w1}, zmmword ptr [{wp} + 64]",
                "vmovaps {w2}, zmmword ptr [{wp} + 128]",
                "vmovaps {w3}, zmmword ptr [{wp} + 192]",
                "vbroadcastss {b0}, dword ptr [{x}]",
                "vfmadd231ps {a00}, {w0}, {b0}",
                "vfmadd231ps {a01}, {w1}, {b0}",
                "vfmadd231ps {a02}, {w2}, {b0}",
                "vfmadd231ps {a03}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s}]",
                "vfmadd231ps {a10}, {w0}, {b1}",
                "vfmadd231ps {a11}, {w1}, {b1}",
                "vfmadd231ps {a12}, {w2}, {b1}",
                "vfmadd231ps {a13}, {w3}, {b1}",
                "vbroadcastss {b0}, dword ptr [{x} + {s}*2]",
                "vfmadd231ps {a20}, {w0}, {b0}",
                "vfmadd231ps {a21}, {w1}, {b0}",
                "vfmadd231ps {a22}, {w2}, {b0}",
                "vfmadd231ps {a23}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s3}]",
                "vfmadd231ps {a30}, {w0}, {b1}",
                "vfmadd231ps {a31}, {w1}, {b1}",
                "vfmadd231ps {a32}, {w2}, {b1}",
                "vfmadd231ps {a33}, {w3}, {b1}",
                "vbroadcastss {b0}, dword ptr [{x} + {s}*4]",
                "vfmadd231ps {a40}, {w0}, {b0}",
                "vfmadd231ps {a41}, {w1}, {b0}",
                "vfmadd231ps {a42}, {w2}, {b0}",
                "vfmadd231ps {a43}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s5}]",
                "vfmadd231ps {a50}, {w0}, {b1}",
                "vfmadd231ps {a51}, {w1}, {b1}",
                "vfmadd231ps {a52}, {w2}, {b1}",
                "vfmadd231ps {a53}, {w3}, {b1}",
                "vmovaps {w0}, zmmword ptr [{wp} + 256]",
                "vmovaps {w1}, zmmword ptr [{wp} + 320]",
                "vmovaps {w2}, zmmword ptr [{wp} + 384]",
                "vmovaps {w3}, zmmword ptr [{wp} + 448]",
                "vbroadcastss {b0}, dword ptr [{x} + 4]",
                "vfmadd231ps {a00}, {w0}, {b0}",
                "vfmadd231ps {a01}, {w1}, {b0}",
                "vfmadd231ps {a02}, {w2}, {b0}",
                "vfmadd231ps {a03}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s} + 4]",
                "vfmadd231ps {a10}, {w0}, {b1}",
                "vfmadd231ps {a11}, {w1}, {b1}",
                "vfmadd231ps {a12}, {w2}, {b1}",
                "vfmadd231ps {a13}, {w3}, {b1}",
                "vbroadcastss {b0}, dword ptr [{x} + {s}*2 + 4]",
                "vfmadd231ps {a20}, {w0}, {b0}",
                "vfmadd231ps {a21}, {w1}, {b0}",
                "vfmadd231ps {a22}, {w2}, {b0}",
                "vfmadd231ps {a23}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s3} + 4]",
                "vfmadd231ps {a30}, {w0}, {b1}",
                "vfmadd231ps {a31}, {w1}, {b1}",
                "vfmadd231ps {a32}, {w2}, {b1}",
                "vfmadd231ps {a33}, {w3}, {b1}",
                "vbroadcastss {b0}, dword ptr [{x} + {s}*4 + 4]",
                "vfmadd231ps {a40}, {w0}, {b0}",
                "vfmadd231ps {a41}, {w1}, {b0}",
                "vfmadd231ps {a42}, {w2}, {b0}",
                "vfmadd231ps {a43}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s5} + 4]",
                "vfmadd231ps {a50}, {w0}, {b1}",
                "vfmadd231ps {a51}, {w1}, {b1}",
                "vfmadd231ps {a52}, {w2}, {b1}",
                "vfmadd231ps {a53}, {w3}, {b1}",
                "add {x}, 8",
                "add {wp}, 512",
                "dec {n2}",
                "jnz 2b",
                "3:",
                "test {odd}, {odd}",
                "jz 4f",
                "vmovaps {w0}, zmmword ptr [{wp}]",
                "vmovaps {w1}, zmmword ptr [{wp} + 64]",
                "vmovaps {w2}, zmmword ptr [{wp} + 128]",
                "vmovaps {w3}, zmmword ptr [{wp} + 192]",
                "vbroadcastss {b0}, dword ptr [{x}]",
                "vfmadd231ps {a00}, {w0}, {b0}",
                "vfmadd231ps {a01}, {w1}, {b0}",
                "vfmadd231ps {a02}, {w2}, {b0}",
                "vfmadd231ps {a03}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s}]",
                "vfmadd231ps {a10}, {w0}, {b1}",
                "vfmadd231ps {a11}, {w1}, {b1}",
                "vfmadd231ps {a12}, {w2}, {b1}",
                "vfmadd231ps {a13}, {w3}, {b1}",
                "vbroadcastss {b0}, dword ptr [{x} + {s}*2]",
                "vfmadd231ps {a20}, {w0}, {b0}",
                "vfmadd231ps {a21}, {w1}, {b0}",
                "vfmadd231ps {a22}, {w2}, {b0}",
                "vfmadd231ps {a23}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s3}]",
                "vfmadd231ps {a30}, {w0}, {b1}",
                "vfmadd231ps {a31}, {w1}, {b1}",
                "vfmadd231ps {a32}, {w2}, {b1}",
                "vfmadd231ps {a33}, {w3}, {b1}",
                "vbroadcastss {b0}, dword ptr [{x} + {s}*4]",
                "vfmadd231ps {a40}, {w0}, {b0}",
                "vfmadd231ps {a41}, {w1}, {b0}",
                "vfmadd231ps {a42}, {w2}, {b0}",
                "vfmadd231ps {a43}, {w3}, {b0}",
                "vbroadcastss {b1}, dword ptr [{x} + {s5}]",
                "vfmadd231ps {a50}, {w0}, {b1}",
                "vfmadd231ps {a51}, {w1}, {b1}",
                "vfmadd231ps {a52}, {w2}, {b1}",
                "vfmadd231ps {a53}, {w3}, {b1}",
                "4:",
                x = inout(reg) xp => _,
                wp = inout(reg) wp => _,
                n2 = inout(reg) n / 2 => _,
                odd = in(reg) n % 2,
                s = in(reg) ps * 4,
                s3 = in(reg) ps * 12,
                s5 = in(reg) ps * 20,
                w0 = out(zmm_reg) _,
                w1 = out(zmm_reg) _,
                w2 = out(zmm_reg) _,
                w3 = out(zmm_reg) _,
                b0 = out(zmm_reg) _,
                b1 = out(zmm_reg) _,
                a00 = inout(zmm_reg) acc[0][0],
                a01 = inout(zmm_reg) acc[0][1],
                a02 = inout(zmm_reg) acc[0][2],
                a03 = inout(zmm_reg) acc[0][3],
                a10 = inout(zmm_reg) acc[1][0],
                a11 = inout(zmm_reg) acc[1][1],
                a12 = inout(zmm_reg) acc[1][2],
                a13 = inout(zmm_reg) acc[1][3],
                a20 = inout(zmm_reg) acc[2][0],
                a21 = inout(zmm_reg) acc[2][1],
                a22 = inout(zmm_reg) acc[2][2],
                a23 = inout(zmm_reg) acc[2][3],
                a30 = inout(zmm_reg) acc[3][0],
                a31 = inout(zmm_reg) acc[3][1],
                a32 = inout(zmm_reg) acc[3][2],
                a33 = inout(zmm_reg) acc[3][3],
                a40 = inout(zmm_reg) acc[4][0],
                a41 = inout(zmm_reg) acc[4][1],
                a42 = inout(zmm_reg) acc[4][2],
                a43 = inout(zmm_reg) acc[4][3],
                a50 = inout(zmm_reg) acc[5][0],
                a51 = inout(zmm_reg) acc[5][1],
                a52 = inout(zmm_reg) acc[5][2],
                a53 = inout(zmm_reg) acc[5][3],
                options(nostack, readonly),
            )
        };
    }

    /// The widest tile for `nv` vectors per output.
    pub(super) fn max_r(nv: usize) -> usize {
        match nv {
            4 => 6,
            3 => 9,
            _ => 14,
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
            3 => pick!(3; 1 2 3 4 5 6 7 8 9),
            2 => pick!(2; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
            _ => pick!(1; 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
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
    let dims = Dims::new(g);
    let [l0, l1, l2] = dims.l;
    let [k0, k1, k2] = dims.k;
    let [o0, o1, o2] = dims.o;
    let [s0, s1, s2] = dims.s;
    let [d0, d1, d2] = dims.kd;
    let [lo0, lo1, _] = dims.lo;
    let (c, cout) = (g.c, g.cout);
    let ntaps = k0 * k1 * k2;
    let (cb, ncb) = in_blocks(ntaps, c);
    let (wbuf, wstart) = pack_weight(g, w);
    let wp = &wbuf[wstart..];
    let nb = cout.div_ceil(BLOCK);
    // Strips along the last axis, cut into tiles of balanced widths.
    let nstrip = o2.div_ceil(STRIP);
    let units = g.n * o0 * o1 * nstrip;
    let yp = SendPtr(y.as_mut_ptr());
    let cost = o2.div_ceil(nstrip) * cout * ntaps * c;
    dynamic_for(units, cost, |range| {
        let mut taps: Vec<(usize, usize)> = Vec::with_capacity(k0 * k1);
        let mut calls: Vec<Call> = Vec::new();
        let mut ptrs: Vec<(*const f32, usize)> = Vec::new();
        let mut zero: Vec<(usize, usize)> = Vec::new();
        for u in range {
            let strip = u % nstrip;
            let r = u / nstrip;
            let p1 = r % o1;
            let p0 = (r / o1) % o0;
            let n = r / (o1 * o0);
            // The strip's outputs along the last axis.
            let (sa, sb) = (strip * o2 / nstrip, (strip + 1) * o2 / nstrip);
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
            let nt = taps.len();
            let mut cur_nv = 0;
            let out_row = r * o2 * cout;
            for b in 0..nb {
                let width = (cout - b * BLOCK).min(BLOCK);
                let nv = width.div_ceil(16);
                let mask = (((1u32 << (width - (nv - 1) * 16)) - 1) & 0xffff) as u16;
                if nv != cur_nv {
                    cur_nv = nv;
                    plan_strip(&dims, sa, sb, avx512::max_r(nv), &mut calls, &mut zero);
                    ptrs.clear();
                    for call in &calls {
                        for &(xo, tr) in &taps {
                            ptrs.push((x[xo + call.q * c..].as_ptr(), tr * k2 + call.ka));
                        }
                    }
                }
                // Edge tiles accumulate over several calls into zeroed outputs.
                for &(p, len) in &zero {
                    for q in p..p + len {
                        let o = out_row + q * cout + b * BLOCK;
                        y_zero(yp, o, width);
                    }
                }
                for ib in 0..ncb {
                    let c0 = ib * cb;
                    let cbk = cb.min(c - c0);
                    let wblock =
                        &wp[(b * ntaps * c + c0 * ntaps) * BLOCK..(b * ntaps * c + (c0 + cbk) * ntaps) * BLOCK];
                    for (i, call) in calls.iter().enumerate() {
                        let t = Tile {
                            rows: &ptrs[i * nt..(i + 1) * nt],
                            w: wblock.as_ptr(),
                            c0,
                            cb: cbk,
                            k2: call.nk,
                            ps: s2 * c,
                            ts: d2 * c,
                            // SAFETY: positions pos .. pos + r <= o2 of output
                            // row r, block b's channels, lie inside `y`.
                            out: unsafe { yp.get().add(out_row + call.pos * cout + b * BLOCK) },
                            os: cout,
                            mask,
                            acc: call.edge || ib > 0,
                        };
                        // SAFETY: AVX-512F was detected (`applies`). The call
                        // reads input positions q + j * s2 + t * d2 < l2 (j <
                        // r, t < nk, see `plan_strip`) of input rows in `x`,
                        // channels c0 .. c0 + cbk; `wblock` holds the
                        // `ntaps * cbk * BLOCK` weights of this block pair and
                        // the call's taps are ka .. ka + nk of a tap row; it
                        // reads and writes r positions of its own output strip
                        // (strips are disjoint across tasks), `width` channels.
                        unsafe { avx512::run_tile(call.r, nv, &t) };
                    }
                }
            }
        }
    });
}

/// Runs `f` over `0..n` in ranges of a few items that every thread takes
/// from a shared counter until none are left (inline when `n * cost` is
/// small or there is one thread).
fn dynamic_for(n: usize, cost: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let threads = num_threads();
    if threads <= 1 || n < 2 || n.saturating_mul(cost.max(1)) < PAR_THRESHOLD {
        f(0..n);
        return;
    }
    let grain = (n / (threads * 16)).max(1);
    let next = AtomicUsize::new(0);
    let work = || loop {
        let start = next.fetch_add(grain, Ordering::Relaxed);
        if start >= n {
            break;
        }
        f(start..(start + grain).min(n));
    };
    rayon::scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| work());
        }
        work();
    });
}

/// Zeroes `width` outputs from element `o` of `y`.
fn y_zero(yp: SendPtr<f32>, o: usize, width: usize) {
    // SAFETY: the caller's output position lies in `y` and belongs to the
    // calling task's strip.
    unsafe { std::ptr::write_bytes(yp.get().add(o), 0, width) };
}

/// One kernel call of a strip: outputs `pos .. pos + r` along the last axis,
/// taps `ka .. ka + nk` along it, reading from input position `q`.
struct Call {
    pos: usize,
    r: usize,
    ka: usize,
    nk: usize,
    q: usize,
    /// Part of an edge tile: accumulates into zeroed outputs.
    edge: bool,
}

/// Plans the calls for outputs `sa .. sb` of a row with tiles of at most
/// `rmax` outputs (balanced widths). An interior tile is one call over every
/// tap; an edge tile, whose window leaves the input, gets one call per run
/// of taps with the same range of outputs that read inside the input (so
/// padding is never read), and is listed in `zero` (first output, width).
fn plan_strip(g: &Dims, sa: usize, sb: usize, rmax: usize, calls: &mut Vec<Call>, zero: &mut Vec<(usize, usize)>) {
    let (k2, s2, d2, l2, lo2) = (g.k[2], g.s[2] as i64, g.kd[2] as i64, g.l[2] as i64, g.lo[2]);
    calls.clear();
    zero.clear();
    let (len, ntile) = (sb - sa, (sb - sa).div_ceil(rmax));
    let mut t0 = sa;
    for i in 0..ntile {
        let rt = len / ntile + usize::from(i < len % ntile);
        let q0 = t0 as i64 * s2 - lo2;
        let last = q0 + (rt as i64 - 1) * s2 + (k2 as i64 - 1) * d2;
        if q0 >= 0 && last < l2 {
            calls.push(Call { pos: t0, r: rt, ka: 0, nk: k2, q: q0 as usize, edge: false });
        } else {
            zero.push((t0, rt));
            // Outputs j of the tile reading inside the input at tap t.
            let range = |t: usize| {
                let q = q0 + t as i64 * d2;
                let lo = if q < 0 { (-q + s2 - 1) / s2 } else { 0 };
                let hi = if l2 - q <= 0 { 0 } else { (l2 - q + s2 - 1) / s2 };
                (lo.min(rt as i64) as usize, hi.min(rt as i64) as usize)
            };
            let mut t = 0;
            while t < k2 {
                let (ja, jb) = range(t);
                let mut te = t + 1;
                while te < k2 && range(te) == (ja, jb) {
                    te += 1;
                }
                if ja < jb {
                    let q = q0 + ja as i64 * s2 + t as i64 * d2;
                    calls.push(Call { pos: t0 + ja, r: jb - ja, ka: t, nk: te - t, q: q as usize, edge: true });
                }
                t = te;
            }
        }
        t0 += rt;
    }
}
