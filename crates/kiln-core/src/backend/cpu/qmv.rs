//! Decode-shaped quantized products on AVX-512: `y (m×n) = x (m×k) @ Wᵀ`
//! for a few rows of f32 x and affine-packed W (1, 2, 4 or 8 bits), read
//! straight from the packed words — the LLM decode step's hot loop.
//!
//! Per 16-word chunk of a row of W (one zmm of u32), code `j` of every word
//! is isolated with a single AND against `mask << bits·j` and converted to
//! f32 *without shifting it down*: the value is `q·2^(bits·j)`, exact in f32.
//! The matching x lanes were scaled by `2^-(bits·j)` once per call (exact
//! too, a power of two), so the FMA adds exactly `x·q`. That makes a code
//! cost three instructions (and, convert, FMA) instead of four.
//!
//! x is permuted once per call so lane `l`, code `j` of chunk `c` reads
//! `x[(16c + l)·per + j]`; a group covers whole lanes, so after the codes of
//! a chunk the per-lane partial sums are multiplied by a vector of their
//! groups' scales (a masked load plus one permute). The bias term
//! `b·Σx` uses per-word sums of x with the same permuted bias vector. A row's
//! last partial chunk uses a masked load, so no row length needs a scalar
//! tail. Scales and biases may be f32 or f16 (converted in-register).

#![cfg(target_arch = "x86_64")]
#![allow(clippy::too_many_arguments)]

use super::simd::{parallel_for, SendPtr};
use crate::dtype::f16;
use std::arch::x86_64::*;
use std::borrow::Cow;

/// Words per chunk (one zmm of u32).
const L: usize = 16;
/// Words ahead of the current chunk to prefetch.
const PREFETCH: usize = 512;
/// Rows of x handled together (they share each decoded code).
const MB: usize = 4;

/// Per-group scales or biases as stored.
pub(crate) enum Groups<'a> {
    /// f32 values.
    F32(Cow<'a, [f32]>),
    /// f16 values (exact for GGUF's block scales), widened in-register.
    F16(Cow<'a, [f16]>),
}

impl Groups<'_> {
    fn len(&self) -> usize {
        match self {
            Groups::F32(v) => v.len(),
            Groups::F16(v) => v.len(),
        }
    }

    /// Value `i`, widened to f32.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> f32 {
        match self {
            Groups::F32(v) => v[i],
            Groups::F16(v) => v[i].to_f32(),
        }
    }

    /// Values `off..off + 16` (lanes past `mask` zero), widened to f32.
    ///
    /// # Safety
    /// AVX-512 must be available and the masked lanes inside the values.
    #[inline(always)]
    unsafe fn load(&self, off: usize, mask: u16) -> __m512 {
        match self {
            Groups::F32(v) => _mm512_maskz_loadu_ps(mask, v.as_ptr().add(off)),
            Groups::F16(v) => _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, v.as_ptr().add(off) as *const i16)),
        }
    }
}

/// Whether this CPU runs the kernel.
pub(crate) fn available() -> bool {
    super::simd::level() == super::simd::Level::Avx512
}

/// Computes `y = x @ Wᵀ` for affine `bits`-bit codes `wq` (`n × kw` words),
/// scales and biases (`n × groups`). Returns false (computing nothing) when
/// the shape or format is not one this kernel handles.
pub(crate) fn qmv(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    wq: &[u32],
    kw: usize,
    bits: u32,
    group_size: usize,
    scales: &Groups<'_>,
    biases: &Groups<'_>,
    y: &mut [f32],
) -> bool {
    let per = match bits {
        1 | 2 | 4 | 8 => 32 / bits as usize,
        _ => return false,
    };
    let wpg = group_size * bits as usize / 32;
    if !available()
        || wpg == 0
        || !(group_size * bits as usize).is_multiple_of(32)
        || kw * per != k
        || !k.is_multiple_of(group_size)
        || x.len() < m * k
        || y.len() < m * n
        || wq.len() < n * kw
        || (wpg < L && !L.is_multiple_of(wpg))
        || (wpg > L && !wpg.is_multiple_of(L))
    {
        return false;
    }
    let groups = k / group_size;
    if scales.len() < n * groups || biases.len() < n * groups {
        return false;
    }
    let chunks = kw.div_ceil(L);
    // Permuted, pre-scaled x (zero past the row's end) and per-group sums of
    // x (the bias term of a row is one dot product with its biases).
    let mut xp = vec![0.0f32; m * chunks * per * L];
    let mut xg = vec![0.0f32; m * groups];
    let pow: Vec<f32> = (0..per).map(|j| f32::from_bits((127 - bits * j as u32) << 23)).collect();
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        // Chunk c of x (16 words of `per` codes) becomes `per` rows of 16 lanes.
        for (xc, dst) in xr.chunks(L * per).zip(xp[i * chunks * per * L..].chunks_exact_mut(per * L)) {
            for (l, word) in xc.chunks_exact(per).enumerate() {
                for (j, (&v, &p)) in word.iter().zip(&pow).enumerate() {
                    dst[j * L + l] = v * p;
                }
            }
        }
        for (g, s) in xg[i * groups..(i + 1) * groups].iter_mut().enumerate() {
            *s = xr[g * group_size..(g + 1) * group_size].iter().sum();
        }
    }
    let yp = SendPtr(y.as_mut_ptr());
    let (xp, xg) = (&xp[..], &xg[..]);
    // Cost per row: its codes (each a few instructions per row of x).
    parallel_for(n, k * m, |range| {
        let job = Job { xp, xg, m, n, chunks, wq, kw, wpg, groups, scales, biases, yp };
        // SAFETY: `available()` checked AVX-512 F/BW/VL/DQ and FMA; the
        // bounds the kernel relies on were checked above.
        unsafe {
            match bits {
                4 => rows::<4, 8>(&job, range.start, range.end),
                8 => rows::<8, 4>(&job, range.start, range.end),
                2 => rows::<2, 16>(&job, range.start, range.end),
                _ => rows::<1, 32>(&job, range.start, range.end),
            }
        }
    });
    true
}

/// Operands shared by the row ranges.
struct Job<'a> {
    xp: &'a [f32],
    /// Per-group sums of x, `m × groups`.
    xg: &'a [f32],
    m: usize,
    n: usize,
    chunks: usize,
    wq: &'a [u32],
    kw: usize,
    wpg: usize,
    groups: usize,
    scales: &'a Groups<'a>,
    biases: &'a Groups<'a>,
    yp: SendPtr<f32>,
}

/// Loads the group values of chunk `c` of a row (values `g..`), one per lane.
///
/// # Safety
/// AVX-512 must be available; `v` must hold the row's `groups` values.
#[inline(always)]
unsafe fn lane_groups(v: &Groups<'_>, row_off: usize, groups: usize, c: usize, wpg: usize, idx: __m512i) -> __m512 {
    if wpg >= L {
        let g = row_off + c * L / wpg;
        return match v {
            Groups::F32(s) => _mm512_set1_ps(*s.get_unchecked(g)),
            Groups::F16(s) => _mm512_set1_ps(s.get_unchecked(g).to_f32()),
        };
    }
    let per_chunk = L / wpg;
    let g0 = c * per_chunk;
    let cnt = per_chunk.min(groups - g0);
    _mm512_permutexvar_ps(idx, v.load(row_off + g0, ((1u32 << cnt) - 1) as u16))
}

/// Rows `r0..r1` of y for `BITS`-bit codes, `PER` codes per word.
///
/// # Safety
/// AVX-512 F/BW/VL/DQ and FMA must be available, and the job's slices must
/// have the sizes [`qmv`] checked.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn rows<const BITS: u32, const PER: usize>(job: &Job<'_>, r0: usize, r1: usize) {
    let mut i0 = 0;
    while i0 < job.m {
        let mb = (job.m - i0).min(MB);
        match mb {
            1 => block::<BITS, PER, 1>(job, i0, r0, r1),
            2 => block::<BITS, PER, 2>(job, i0, r0, r1),
            3 => block::<BITS, PER, 3>(job, i0, r0, r1),
            _ => block::<BITS, PER, 4>(job, i0, r0, r1),
        }
        i0 += mb;
    }
}

/// Rows `r0..r1` of y for the `M` rows of x from `i0`.
///
/// # Safety
/// As [`rows`].
#[inline(always)]
unsafe fn block<const BITS: u32, const PER: usize, const M: usize>(job: &Job<'_>, i0: usize, r0: usize, r1: usize) {
    let code_mask = (1u32 << BITS) - 1;
    let wpg = job.wpg;
    // Lane l belongs to group l / wpg of the chunk's groups.
    let mut lanes = [0i32; L];
    for (l, v) in lanes.iter_mut().enumerate() {
        *v = (l / wpg.clamp(1, L)) as i32;
    }
    let idx = _mm512_loadu_si512(lanes.as_ptr() as *const _);
    let tail = job.kw % L;
    let tail_mask: u16 = if tail == 0 { 0xFFFF } else { ((1u32 << tail) - 1) as u16 };
    let (chunks, groups) = (job.chunks, job.groups);
    let xp = job.xp.as_ptr().add(i0 * chunks * PER * L);
    let xg = job.xg.as_ptr().add(i0 * groups);
    for r in r0..r1 {
        let wrow = job.wq.as_ptr().add(r * job.kw);
        let goff = r * groups;
        let mut tot = [_mm512_setzero_ps(); M];
        let mut tb = [_mm512_setzero_ps(); M];
        for c in 0..chunks {
            let wmask = if c + 1 == chunks { tail_mask } else { 0xFFFF };
            let w = _mm512_maskz_loadu_epi32(wmask, wrow.add(c * L) as *const i32);
            // Rows are consecutive, so this runs ahead into the next rows
            // (and, unlike the hardware prefetcher, across 4 KiB pages).
            _mm_prefetch::<_MM_HINT_T0>(wrow.add(c * L).wrapping_add(PREFETCH) as *const i8);
            let mut acc = [[_mm512_setzero_ps(); 2]; M];
            for j in 0..PER {
                let bits = _mm512_and_si512(w, _mm512_set1_epi32((code_mask << (BITS as usize * j)) as i32));
                let q = _mm512_cvtepu32_ps(bits);
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = _mm512_loadu_ps(xp.add(((i * chunks + c) * PER + j) * L));
                    a[j & 1] = _mm512_fmadd_ps(xv, q, a[j & 1]);
                }
            }
            let s = lane_groups(job.scales, goff, groups, c, wpg, idx);
            for i in 0..M {
                tot[i] = _mm512_fmadd_ps(_mm512_add_ps(acc[i][0], acc[i][1]), s, tot[i]);
            }
        }
        // Σ_g bias_g · Σx_g, 16 groups at a time.
        let mut g0 = 0;
        while g0 < groups {
            let mask = ((1u32 << (groups - g0).min(L)) - 1) as u16;
            let b = job.biases.load(goff + g0, mask);
            for (i, t) in tb.iter_mut().enumerate() {
                *t = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(mask, xg.add(i * groups + g0)), *t);
            }
            g0 += L;
        }
        for i in 0..M {
            let v = _mm512_reduce_add_ps(_mm512_add_ps(tot[i], tb[i]));
            // SAFETY: y element (i0 + i, r) belongs to this range of rows only.
            *job.yp.get().add((i0 + i) * job.n + r) = v;
        }
    }
}

/// Dequantizes groups `g0..g1` of one packed row (affine, 4 or 8 bits,
/// f32 scales and biases) into `out`, 16 values per step: the words are
/// spread over the lanes with one permute, each lane shifts out its own code.
/// Returns false (writing nothing) when the format is not one it handles.
pub(crate) fn dequant_row(
    row: &[u32],
    bits: u32,
    group_size: usize,
    sc: &Groups<'_>,
    bi: &Groups<'_>,
    g0: usize,
    g1: usize,
    out: &mut [f32],
) -> bool {
    if !available()
        || !matches!(bits, 4 | 8)
        || !group_size.is_multiple_of(L)
        || g1 > sc.len()
        || g1 > bi.len()
        || out.len() < (g1 - g0) * group_size
        || row.len() * 32 < g1 * group_size * bits as usize
    {
        return false;
    }
    // SAFETY: AVX-512 is available and every index used is inside the
    // slices (checked above).
    unsafe {
        if bits == 4 {
            dequant4(row, group_size, sc, bi, g0, g1, out)
        } else {
            dequant8(row, group_size, sc, bi, g0, g1, out)
        }
    }
    true
}

/// # Safety
/// As [`dequant_row`] checked.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn dequant4(row: &[u32], gs: usize, sc: &Groups<'_>, bi: &Groups<'_>, g0: usize, g1: usize, out: &mut [f32]) {
    // Lane i takes word i / 8 of the pair and shifts by 4·(i % 8).
    let mut idx = [0i32; L];
    let mut sh = [0i32; L];
    for i in 0..L {
        idx[i] = (i / 8) as i32;
        sh[i] = (4 * (i % 8)) as i32;
    }
    let idx = _mm512_loadu_si512(idx.as_ptr() as *const _);
    let sh = _mm512_loadu_si512(sh.as_ptr() as *const _);
    let mask = _mm512_set1_epi32(0xF);
    let mut o = out.as_mut_ptr();
    for g in g0..g1 {
        let (s, b) = (_mm512_set1_ps(sc.get(g)), _mm512_set1_ps(bi.get(g)));
        let w0 = row.as_ptr().add(g * gs / 8);
        for v in 0..gs / L {
            // Two words (16 codes) per vector.
            let pair = _mm512_castsi128_si512(_mm_loadl_epi64(w0.add(2 * v) as *const __m128i));
            let codes = _mm512_and_si512(_mm512_srlv_epi32(_mm512_permutexvar_epi32(idx, pair), sh), mask);
            _mm512_storeu_ps(o, _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(codes), b));
            o = o.add(L);
        }
    }
}

/// # Safety
/// As [`dequant_row`] checked.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn dequant8(row: &[u32], gs: usize, sc: &Groups<'_>, bi: &Groups<'_>, g0: usize, g1: usize, out: &mut [f32]) {
    let bytes = row.as_ptr() as *const u8;
    let mut o = out.as_mut_ptr();
    for g in g0..g1 {
        let (s, b) = (_mm512_set1_ps(sc.get(g)), _mm512_set1_ps(bi.get(g)));
        for v in 0..gs / L {
            // Codes are LSB-first bytes, so 16 consecutive bytes are 16 consecutive codes.
            let c = _mm512_cvtepu8_epi32(_mm_loadu_si128(bytes.add(g * gs + v * L) as *const __m128i));
            _mm512_storeu_ps(o, _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(c), b));
            o = o.add(L);
        }
    }
}
