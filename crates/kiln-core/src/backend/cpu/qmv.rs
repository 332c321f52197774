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
//! `Σ_g b_g·Σx_g` is one dot product per row with per-group sums of x,
//! 16 groups at a time. A row's last partial chunk uses a masked load (the
//! integer path below runs it in 256-bit registers when it is at most half
//! a chunk), so no row length needs a scalar tail. Scales and biases may be f32 or f16 (converted
//! in-register); the loops are specialised on the scale format.
//!
//! 4- and 8-bit codes take an integer path when the CPU has AVX-512 VNNI
//! ([`IntX`]): x is split once per call into three signed bytes of 24-bit
//! fixed point per word of codes, and `vpdpbusd` multiplies 64 code bytes by
//! x bytes per instruction (a 4-bit chunk costs about 15 instructions
//! instead of 27). The fixed point rounds x by at most an f32 rounding of
//! its word's largest value, so results keep f32 accuracy (the SmolLM2
//! golden ids still match); non-finite x falls back to the float loop above.

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
        || !wpg.is_power_of_two()
    {
        return false;
    }
    let groups = k / group_size;
    if scales.len() < n * groups || biases.len() < n * groups {
        return false;
    }
    let chunks = kw.div_ceil(L);
    // Per-group sums of x: the bias term of a row is one dot product with
    // its biases.
    let mut xg = vec![0.0f32; m * groups];
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for (g, s) in xg[i * groups..(i + 1) * groups].iter_mut().enumerate() {
            *s = xr[g * group_size..(g + 1) * group_size].iter().sum();
        }
    }
    let yp = SendPtr(y.as_mut_ptr());
    if matches!(bits, 4 | 8) && vnni() {
        if let Some(xi) = IntX::split(&x[..m * k], m, k, chunks, bits) {
            let xg = &xg[..];
            parallel_for(n, k * m, |range| {
                let job = Job { xp: &[], xg, m, n, chunks, wq, kw, wpg, groups, scales, biases, yp };
                // SAFETY: `vnni()` checked AVX-512 F/BW/VL/DQ/VNNI and FMA;
                // the bounds the kernel relies on were checked above.
                unsafe {
                    if bits == 4 {
                        int_rows::<4>(&job, &xi, range.start, range.end)
                    } else {
                        int_rows::<8>(&job, &xi, range.start, range.end)
                    }
                }
            });
            return true;
        }
    }
    // Permuted, pre-scaled x (zero past the row's end).
    let mut xp = vec![0.0f32; m * chunks * per * L];
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
    }
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

/// Per-group scale storage the hot loop is specialised on (f32 or f16), so
/// the chunk loop has no per-chunk branch on the format.
trait ScaleVals: Copy {
    /// Values `off..off + 16` (lanes past `mask` zero), widened to f32.
    ///
    /// # Safety
    /// AVX-512 must be available and the masked lanes inside the values.
    unsafe fn load(self, off: usize, mask: u16) -> __m512;
    /// Value `off` in every lane.
    ///
    /// # Safety
    /// AVX-512 must be available and `off` inside the values.
    unsafe fn splat(self, off: usize) -> __m512;
}

impl ScaleVals for *const f32 {
    #[inline(always)]
    unsafe fn load(self, off: usize, mask: u16) -> __m512 {
        _mm512_maskz_loadu_ps(mask, self.add(off))
    }
    #[inline(always)]
    unsafe fn splat(self, off: usize) -> __m512 {
        _mm512_set1_ps(*self.add(off))
    }
}

impl ScaleVals for *const f16 {
    #[inline(always)]
    unsafe fn load(self, off: usize, mask: u16) -> __m512 {
        _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, self.add(off) as *const i16))
    }
    #[inline(always)]
    unsafe fn splat(self, off: usize) -> __m512 {
        _mm512_cvtph_ps(_mm256_set1_epi16(*(self.add(off) as *const i16)))
    }
}

/// Rows `r0..r1` of y for `BITS`-bit codes, `PER` codes per word.
///
/// # Safety
/// AVX-512 F/BW/VL/DQ and FMA must be available, and the job's slices must
/// have the sizes [`qmv`] checked.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")]
unsafe fn rows<const BITS: u32, const PER: usize>(job: &Job<'_>, r0: usize, r1: usize) {
    match job.scales {
        Groups::F32(s) => rows_in::<BITS, PER, _>(job, s.as_ptr(), r0, r1),
        Groups::F16(s) => rows_in::<BITS, PER, _>(job, s.as_ptr(), r0, r1),
    }
}

/// [`rows`] for one scale format.
///
/// # Safety
/// As [`rows`].
#[inline(always)]
unsafe fn rows_in<const BITS: u32, const PER: usize, S: ScaleVals>(job: &Job<'_>, s: S, r0: usize, r1: usize) {
    let mut i0 = 0;
    while i0 < job.m {
        let mb = (job.m - i0).min(MB);
        match mb {
            1 => block::<BITS, PER, 1, S>(job, s, i0, r0, r1),
            2 => block::<BITS, PER, 2, S>(job, s, i0, r0, r1),
            3 => block::<BITS, PER, 3, S>(job, s, i0, r0, r1),
            _ => block::<BITS, PER, 4, S>(job, s, i0, r0, r1),
        }
        i0 += mb;
    }
}

/// Where a chunk's scales come from: `per` whole groups from group
/// `c · per` (masked load, then `idx` spreads each over its lanes), or —
/// when a group spans whole chunks — group `c >> shift`, broadcast.
///
/// It also holds how a row splits into chunks: `full` whole chunks of 16
/// words, which read `per` groups each, then `tail` words (0 for none).
#[derive(Clone, Copy)]
struct ChunkScales {
    idx: __m512i,
    /// Groups per chunk (0 when a group spans chunks).
    per: usize,
    shift: u32,
    full: usize,
    tail: usize,
    /// Scale-load masks of a whole chunk and of the tail chunk.
    full_mask: u16,
    tail_mask: u16,
}

impl ChunkScales {
    /// The layout of the job's rows.
    ///
    /// # Safety
    /// AVX-512 F must be available.
    #[inline(always)]
    unsafe fn new(job: &Job<'_>) -> ChunkScales {
        let wpg = job.wpg;
        // Lane l belongs to group l / wpg of the chunk's groups.
        let mut lanes = [0i32; L];
        for (l, v) in lanes.iter_mut().enumerate() {
            *v = (l / wpg.clamp(1, L)) as i32;
        }
        let per = if wpg < L { L / wpg } else { 0 };
        let full = job.kw / L;
        ChunkScales {
            idx: _mm512_loadu_si512(lanes.as_ptr() as *const _),
            per,
            shift: (wpg / L).max(1).trailing_zeros(),
            full,
            tail: job.kw % L,
            full_mask: ((1u32 << per) - 1) as u16,
            tail_mask: ((1u32 << (job.groups - (full * per).min(job.groups))) - 1) as u16,
        }
    }

    /// The scales of chunk `c` of the row whose groups start at `row_off`.
    ///
    /// # Safety
    /// AVX-512 must be available; the groups read (`mask` lanes from group
    /// `c · per`, or group `c >> shift`) must lie inside `s`.
    #[inline(always)]
    unsafe fn get<S: ScaleVals>(self, s: S, row_off: usize, c: usize, mask: u16) -> __m512 {
        if self.per == 0 {
            s.splat(row_off + (c >> self.shift))
        } else {
            _mm512_permutexvar_ps(self.idx, s.load(row_off + c * self.per, mask))
        }
    }
}

/// Σ over a chunk's codes of x·q for the `M` rows of x, lanes unreduced:
/// `w` holds 16 words, `xc` the chunk's permuted x of the first row, and
/// the next row's is `xstride` floats on.
///
/// # Safety
/// AVX-512 F and FMA must be available; `xc` must hold `PER · 16` floats per
/// row.
#[inline(always)]
unsafe fn chunk<const BITS: u32, const PER: usize, const M: usize>(
    w: __m512i,
    xc: *const f32,
    xstride: usize,
) -> [__m512; M] {
    let code_mask = (1u32 << BITS) - 1;
    let mut acc = [[_mm512_setzero_ps(); 2]; M];
    for j in 0..PER {
        let bits = _mm512_and_si512(w, _mm512_set1_epi32((code_mask << (BITS as usize * j)) as i32));
        let q = _mm512_cvtepu32_ps(bits);
        for (i, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_loadu_ps(xc.add(i * xstride + j * L));
            a[j & 1] = _mm512_fmadd_ps(xv, q, a[j & 1]);
        }
    }
    let mut out = [_mm512_setzero_ps(); M];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = _mm512_add_ps(a[0], a[1]);
    }
    out
}

/// Rows `r0..r1` of y for the `M` rows of x from `i0`.
///
/// # Safety
/// As [`rows`]; `s` must hold the job's `n × groups` scales.
#[inline(always)]
unsafe fn block<const BITS: u32, const PER: usize, const M: usize, S: ScaleVals>(
    job: &Job<'_>,
    s: S,
    i0: usize,
    r0: usize,
    r1: usize,
) {
    let (chunks, groups) = (job.chunks, job.groups);
    let sc = ChunkScales::new(job);
    let (full, tail, full_smask, tail_smask) = (sc.full, sc.tail, sc.full_mask, sc.tail_mask);
    let xstride = chunks * PER * L;
    let xp = job.xp.as_ptr().add(i0 * xstride);
    let xg = job.xg.as_ptr().add(i0 * groups);
    for r in r0..r1 {
        let wrow = job.wq.as_ptr().add(r * job.kw);
        let goff = r * groups;
        let mut tot = [_mm512_setzero_ps(); M];
        for c in 0..full {
            let w = _mm512_loadu_si512(wrow.add(c * L) as *const _);
            // Rows are consecutive, so this runs ahead into the next rows
            // (and, unlike the hardware prefetcher, across 4 KiB pages).
            _mm_prefetch::<_MM_HINT_T0>(wrow.add(c * L).wrapping_add(PREFETCH) as *const i8);
            let part = chunk::<BITS, PER, M>(w, xp.add(c * PER * L), xstride);
            let sv = sc.get(s, goff, c, full_smask);
            for i in 0..M {
                tot[i] = _mm512_fmadd_ps(part[i], sv, tot[i]);
            }
        }
        if tail != 0 {
            let w = _mm512_maskz_loadu_epi32(((1u32 << tail) - 1) as u16, wrow.add(full * L) as *const i32);
            let part = chunk::<BITS, PER, M>(w, xp.add(full * PER * L), xstride);
            let sv = sc.get(s, goff, full, tail_smask);
            for i in 0..M {
                tot[i] = _mm512_fmadd_ps(part[i], sv, tot[i]);
            }
        }
        bias_and_store(job, &mut tot, xg, i0, r);
    }
}

/// Adds row `r`'s bias term `Σ_g bias_g · Σx_g` (16 groups at a time) to the
/// lane sums of the `M` rows of x from `i0`, and stores their totals in y.
///
/// # Safety
/// AVX-512 F must be available; `xg` must point at row `i0`'s group sums,
/// and `r` must be a row of this call's range.
#[inline(always)]
unsafe fn bias_and_store<const M: usize>(job: &Job<'_>, tot: &mut [__m512; M], xg: *const f32, i0: usize, r: usize) {
    let (groups, goff) = (job.groups, r * job.groups);
    let mut g0 = 0;
    while g0 < groups {
        let mask = ((1u32 << (groups - g0).min(L)) - 1) as u16;
        let b = job.biases.load(goff + g0, mask);
        for (i, t) in tot.iter_mut().enumerate() {
            *t = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(mask, xg.add(i * groups + g0)), *t);
        }
        g0 += L;
    }
    for (i, t) in tot.iter().enumerate() {
        // SAFETY: y element (i0 + i, r) belongs to this range of rows only.
        *job.yp.get().add((i0 + i) * job.n + r) = _mm512_reduce_add_ps(*t);
    }
}

/// Whether the integer path runs (4- and 8-bit codes): AVX-512 with VNNI,
/// unless `KILN_QMV_FLOAT=1` asks for the float kernel (for comparison).
fn vnni() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        available() && is_x86_feature_detected!("avx512vnni") && std::env::var_os("KILN_QMV_FLOAT").is_none()
    })
}

/// Largest magnitude of the 24-bit fixed-point x: three balanced signed
/// bytes, `127·2^16 + 127·2^8 + 127`.
const FIX_MAX: f64 = 8_355_711.0;

/// x split for the integer path. Each word's values (8 at 4 bits, 4 at 8
/// bits: one lane of a chunk) share a scale `e = max|x| / FIX_MAX` and
/// become 24-bit integers `N = a·2^16 + b·2^8 + c` with signed bytes a, b,
/// c — rounding each x by at most `max|x|·6e-8`, the size of an f32
/// rounding of the lane's largest value, so sums keep f32 accuracy.
/// `vpdpbusd` (64 byte products per instruction) then sums code·part per
/// lane exactly in i32:
/// - 4 bits: each Σq·part is at most 8·15·128 < 2^14, so the whole
///   `((Σq·a)·2^8 + Σq·b)·2^8 + Σq·c` stays below 2^31;
/// - 8 bits: Σq·part is below 2^17, so `(Σq·a)·2^8 + Σq·b` is one i32 and
///   `Σq·c` another, joined in f32.
struct IntX {
    /// Per row of x and chunk: parts a, b, c, each as 64 bytes where lane l
    /// holds bytes `4l..4l + 4`, matching the 4 bytes of word l. At 4 bits
    /// each part is two such blocks: the even codes (low nibbles), then the
    /// odd codes.
    parts: Vec<i8>,
    /// Per row of x and chunk: each lane's `e`.
    scale: Vec<f32>,
}

/// Bytes of [`IntX::parts`] per chunk for `BITS`-bit codes.
const fn part_bytes(bits: u32) -> usize {
    if bits == 4 {
        6 * 64
    } else {
        3 * 64
    }
}

impl IntX {
    /// Splits `m` rows of `k` values (`bits`-bit codes, `chunks` chunks of
    /// 16 words per row). `None` when some x is not finite: the float kernel
    /// then keeps IEEE semantics.
    fn split(x: &[f32], m: usize, k: usize, chunks: usize, bits: u32) -> Option<IntX> {
        let pb = part_bytes(bits);
        let mut parts = vec![0i8; m * chunks * pb];
        let mut scale = vec![0.0f32; m * chunks * L];
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            let (p, sc) = (&mut parts[i * chunks * pb..], &mut scale[i * chunks * L..]);
            // SAFETY: `vnni()` (the only caller's guard) checked AVX-512 F/BW/VL/DQ;
            // k is whole words and the buffers hold `chunks` chunks.
            let ok = unsafe {
                if bits == 4 {
                    split_row::<8>(xr, p, sc)
                } else {
                    split_row::<4>(xr, p, sc)
                }
            };
            if !ok {
                return None;
            }
        }
        Some(IntX { parts, scale })
    }
}

/// Splits one row of x into `parts`/`scale` ([`IntX`]'s layout) for words of
/// `PER` values (8 or 4), 16 values per step. Returns false when some value
/// is not finite.
///
/// # Safety
/// AVX-512 F/BW/VL/DQ must be available; `x.len()` must be a multiple of
/// `PER` and the buffers must hold `x.len().div_ceil(16 · PER)` chunks.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn split_row<const PER: usize>(x: &[f32], parts: &mut [i8], scale: &mut [f32]) -> bool {
    let words = x.len() / PER;
    let step = L / PER;
    // At 8 per word: the two words' even codes, then their odd codes.
    let order = if PER == 8 {
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15)
    } else {
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    };
    let (lim, neg_lim) = (_mm512_set1_epi32(FIX_MAX as i32), _mm512_set1_epi32(-(FIX_MAX as i32)));
    let (b128, b255) = (_mm512_set1_epi32(128), _mm512_set1_epi32(255));
    // Balanced low byte of n (in -128..=127) and the rest, n = rest·256 + byte.
    let split = |n: __m512i| {
        let lo = _mm512_sub_epi32(_mm512_and_si512(_mm512_add_epi32(n, b128), b255), b128);
        (lo, _mm512_srai_epi32::<8>(_mm512_sub_epi32(n, lo)))
    };
    let mut w = 0;
    while w < words {
        let live = (words - w).min(step);
        let mask = ((1u32 << (live * PER)) - 1) as u16;
        let v = _mm512_maskz_loadu_ps(mask, x.as_ptr().add(PER * w));
        // Each word's max |x|, in all of its lanes.
        let a = _mm512_abs_ps(v);
        let a = _mm512_max_ps(a, _mm512_permute_ps::<0xB1>(a));
        let mut e = _mm512_max_ps(a, _mm512_permute_ps::<0x4E>(a));
        if PER == 8 {
            e = _mm512_max_ps(e, _mm512_shuffle_f32x4::<0xB1>(e, e));
        }
        if _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(e, _mm512_set1_ps(f32::INFINITY)) != 0 {
            return false;
        }
        let nz = _mm512_cmp_ps_mask::<_CMP_NEQ_OQ>(e, _mm512_setzero_ps());
        let f = _mm512_maskz_div_ps(nz, _mm512_set1_ps(FIX_MAX as f32), e);
        // Rounded to nearest; clamped since v·f may round just past FIX_MAX.
        let n = _mm512_cvtps_epi32(_mm512_permutexvar_ps(order, _mm512_mul_ps(v, f)));
        let n = _mm512_max_epi32(_mm512_min_epi32(n, lim), neg_lim);
        let (lo, n1) = split(n);
        let (mid, hi) = split(n1);
        let (c, l) = (w / L, w % L);
        let pb = part_bytes(if PER == 8 { 4 } else { 8 });
        let dst = parts.as_mut_ptr().add(c * pb + 4 * l);
        for (p, v) in [hi, mid, lo].into_iter().enumerate() {
            let b = _mm512_cvtepi32_epi8(v);
            if PER == 8 {
                _mm_storel_epi64(dst.add(128 * p) as *mut __m128i, b);
                _mm_storel_epi64(dst.add(128 * p + 64) as *mut __m128i, _mm_unpackhi_epi64(b, b));
            } else {
                _mm_storeu_si128(dst.add(64 * p) as *mut __m128i, b);
            }
        }
        // One scale per word: lane 0 of each word's lanes.
        let ev = _mm512_maskz_div_ps(nz, e, _mm512_set1_ps(FIX_MAX as f32));
        let first: u16 = if PER == 8 { 0x0101 } else { 0x1111 };
        _mm512_mask_compressstoreu_ps(scale.as_mut_ptr().add(c * L + l) as *mut _, first, ev);
        w += step;
    }
    true
}

/// Rows `r0..r1` of y on the integer path for `BITS`-bit codes (4 or 8).
///
/// # Safety
/// AVX-512 F/BW/VL/DQ/VNNI and FMA must be available, the job's slices must
/// have the sizes [`qmv`] checked, and `xi` must be split from the job's x.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")]
unsafe fn int_rows<const BITS: u32>(job: &Job<'_>, xi: &IntX, r0: usize, r1: usize) {
    match job.scales {
        Groups::F32(s) => int_rows_in::<BITS, _>(job, xi, s.as_ptr(), r0, r1),
        Groups::F16(s) => int_rows_in::<BITS, _>(job, xi, s.as_ptr(), r0, r1),
    }
}

/// [`int_rows`] for one scale format.
///
/// # Safety
/// As [`int_rows`].
#[inline(always)]
unsafe fn int_rows_in<const BITS: u32, S: ScaleVals>(job: &Job<'_>, xi: &IntX, s: S, r0: usize, r1: usize) {
    let mut i0 = 0;
    while i0 < job.m {
        let mb = (job.m - i0).min(MB);
        match mb {
            1 => int_block::<BITS, 1, S>(job, xi, s, i0, r0, r1),
            2 => int_block::<BITS, 2, S>(job, xi, s, i0, r0, r1),
            3 => int_block::<BITS, 3, S>(job, xi, s, i0, r0, r1),
            _ => int_block::<BITS, 4, S>(job, xi, s, i0, r0, r1),
        }
        i0 += mb;
    }
}

/// The integer registers a chunk is summed in: 512 bits for a whole chunk,
/// 256 for a half one (k = 576's last 8 words), so one routine serves both.
trait IntLanes: Copy {
    /// The words of a chunk (the lanes past `mask` zero).
    unsafe fn load_words(p: *const u32, mask: u16) -> Self;
    /// Part bytes for these lanes.
    unsafe fn load(p: *const i8) -> Self;
    unsafe fn zero() -> Self;
    /// Each byte's low nibble and its high nibble.
    unsafe fn nibbles(self) -> (Self, Self);
    unsafe fn shl8(self) -> Self;
    /// `self + Σ` over each lane's 4 bytes of `codes · x` (u8 × i8).
    unsafe fn dp(self, codes: Self, x: Self) -> Self;
    /// `(self·256 + lo) · scale`, in f32 (`lo` zero when absent), widened to
    /// 512 bits with zero upper lanes.
    unsafe fn scaled(self, lo: Option<Self>, scale: *const f32) -> __m512;
}

impl IntLanes for __m512i {
    #[inline(always)]
    unsafe fn load_words(p: *const u32, mask: u16) -> Self {
        _mm512_maskz_loadu_epi32(mask, p as *const i32)
    }
    #[inline(always)]
    unsafe fn load(p: *const i8) -> Self {
        _mm512_loadu_si512(p as *const _)
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn nibbles(self) -> (Self, Self) {
        let nib = _mm512_set1_epi32(0x0F0F_0F0F);
        (_mm512_and_si512(self, nib), _mm512_and_si512(_mm512_srli_epi32::<4>(self), nib))
    }
    #[inline(always)]
    unsafe fn shl8(self) -> Self {
        _mm512_slli_epi32::<8>(self)
    }
    #[inline(always)]
    unsafe fn dp(self, codes: Self, x: Self) -> Self {
        _mm512_dpbusd_epi32(self, codes, x)
    }
    #[inline(always)]
    unsafe fn scaled(self, lo: Option<Self>, scale: *const f32) -> __m512 {
        let mut f = _mm512_cvtepi32_ps(self);
        if let Some(lo) = lo {
            f = _mm512_fmadd_ps(f, _mm512_set1_ps(256.0), _mm512_cvtepi32_ps(lo));
        }
        _mm512_mul_ps(f, _mm512_loadu_ps(scale))
    }
}

impl IntLanes for __m256i {
    #[inline(always)]
    unsafe fn load_words(p: *const u32, mask: u16) -> Self {
        _mm256_maskz_loadu_epi32(mask as u8, p as *const i32)
    }
    #[inline(always)]
    unsafe fn load(p: *const i8) -> Self {
        _mm256_loadu_si256(p as *const _)
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn nibbles(self) -> (Self, Self) {
        let nib = _mm256_set1_epi32(0x0F0F_0F0F);
        (_mm256_and_si256(self, nib), _mm256_and_si256(_mm256_srli_epi32::<4>(self), nib))
    }
    #[inline(always)]
    unsafe fn shl8(self) -> Self {
        _mm256_slli_epi32::<8>(self)
    }
    #[inline(always)]
    unsafe fn dp(self, codes: Self, x: Self) -> Self {
        _mm256_dpbusd_epi32(self, codes, x)
    }
    #[inline(always)]
    unsafe fn scaled(self, lo: Option<Self>, scale: *const f32) -> __m512 {
        let mut f = _mm256_cvtepi32_ps(self);
        if let Some(lo) = lo {
            f = _mm256_fmadd_ps(f, _mm256_set1_ps(256.0), _mm256_cvtepi32_ps(lo));
        }
        _mm512_zextps256_ps512(_mm256_mul_ps(f, _mm256_loadu_ps(scale)))
    }
}

/// Σ over a chunk's codes of x·q for the `M` rows of x, per lane (f32):
/// `w` holds the words, `parts`/`scale` the first row's split x for the
/// chunk, the next row's `pstride` bytes / `sstride` floats on.
///
/// # Safety
/// AVX-512 F/BW/VL/VNNI must be available and the split x must hold the
/// chunk for `M` rows.
#[inline(always)]
unsafe fn int_chunk<const BITS: u32, const M: usize, V: IntLanes>(
    w: V,
    parts: *const i8,
    pstride: usize,
    scale: *const f32,
    sstride: usize,
) -> [__m512; M] {
    let mut out = [_mm512_setzero_ps(); M];
    for (i, o) in out.iter_mut().enumerate() {
        let p = parts.add(i * pstride);
        let ld = |off: usize| V::load(p.add(off));
        *o = if BITS == 4 {
            let (even, odd) = w.nibbles();
            let mut t = V::zero().dp(even, ld(0)).dp(odd, ld(64)).shl8();
            t = t.dp(even, ld(128)).dp(odd, ld(192)).shl8();
            t.dp(even, ld(256)).dp(odd, ld(320)).scaled(None, scale.add(i * sstride))
        } else {
            let t = V::zero().dp(w, ld(0)).shl8().dp(w, ld(64));
            t.scaled(Some(V::zero().dp(w, ld(128))), scale.add(i * sstride))
        };
    }
    out
}

/// Rows `r0..r1` of y for the `M` rows of x from `i0`, integer path.
///
/// # Safety
/// As [`int_rows`]; `s` must hold the job's `n × groups` scales.
#[inline(always)]
unsafe fn int_block<const BITS: u32, const M: usize, S: ScaleVals>(
    job: &Job<'_>,
    xi: &IntX,
    s: S,
    i0: usize,
    r0: usize,
    r1: usize,
) {
    let (chunks, groups) = (job.chunks, job.groups);
    let sc = ChunkScales::new(job);
    let (full, tail, full_smask, tail_smask) = (sc.full, sc.tail, sc.full_mask, sc.tail_mask);
    let pb = part_bytes(BITS);
    let (pstride, sstride) = (chunks * pb, chunks * L);
    let parts = xi.parts.as_ptr().add(i0 * pstride);
    let scale = xi.scale.as_ptr().add(i0 * sstride);
    let xg = job.xg.as_ptr().add(i0 * groups);
    for r in r0..r1 {
        let wrow = job.wq.as_ptr().add(r * job.kw);
        let goff = r * groups;
        let mut tot = [_mm512_setzero_ps(); M];
        for c in 0..full {
            let w = __m512i::load_words(wrow.add(c * L), 0xFFFF);
            _mm_prefetch::<_MM_HINT_T0>(wrow.add(c * L).wrapping_add(PREFETCH) as *const i8);
            let part = int_chunk::<BITS, M, _>(w, parts.add(c * pb), pstride, scale.add(c * L), sstride);
            let sv = sc.get(s, goff, c, full_smask);
            for i in 0..M {
                tot[i] = _mm512_fmadd_ps(part[i], sv, tot[i]);
            }
        }
        if tail != 0 {
            let mask = ((1u32 << tail) - 1) as u16;
            let (wp, p, sp) = (wrow.add(full * L), parts.add(full * pb), scale.add(full * L));
            let part = if tail <= L / 2 {
                int_chunk::<BITS, M, _>(__m256i::load_words(wp, mask), p, pstride, sp, sstride)
            } else {
                int_chunk::<BITS, M, _>(__m512i::load_words(wp, mask), p, pstride, sp, sstride)
            };
            let sv = sc.get(s, goff, full, tail_smask);
            for i in 0..M {
                tot[i] = _mm512_fmadd_ps(part[i], sv, tot[i]);
            }
        }
        bias_and_store(job, &mut tot, xg, i0, r);
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
