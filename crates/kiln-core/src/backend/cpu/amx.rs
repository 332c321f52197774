//! bf16 GEMM on Intel AMX tiles (Sapphire Rapids and later).
//!
//! `C (bf16) = A (bf16, m×k) · B (bf16, k×n)`, accumulated in f32 by the tile
//! unit's `TDPBF16PS`, which multiplies a 16×32 bf16 tile by a 32×16 tile in one
//! instruction — about 8× the FLOP rate of AVX-512 FMA on the same core — and
//! rounded to bf16 (round to nearest even) once at the end. The instructions are
//! emitted with `asm!` because Rust's AMX intrinsics are not stable; the CPU
//! support check (CPUID) and the Linux permission request
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM)`) happen once, in [`available`].
//!
//! Layout (every tile load has a 64-byte row stride, so each tile is one
//! contiguous KiB):
//! - B is packed once into 32-column blocks: each 32-deep step of k holds two
//!   tiles (columns 0..16, 16..32) in the tile unit's "VNNI" order, where each
//!   4-byte element holds the bf16 pair `(B[2r][j], B[2r+1][j])`. When every
//!   column panel has one task, that task packs its own panel just before using
//!   it (one parallel pass, and the core reads the panel from its own L2, where
//!   it just wrote it); otherwise all of B is packed first, in parallel.
//! - A is packed per task, one 32-row block at a time, in the same step order
//!   (two 16×32 tiles per step: top rows, bottom rows); edges are zero-padded.
//!   Even contiguous A is packed: tile loads of 16 rows a whole row stride apart
//!   measured 25–30% slower than loads of one packed KiB.
//! - C is accumulated in f32 in a per-task scratch of 32×32 blocks (four
//!   contiguous 16×16 tiles each) and rounded to bf16 with AVX-512 when the
//!   block's k loop ends.
//!
//! Blocking: the work is split into column panels of at most [`NC`] columns
//! (one or more per thread, so each thread keeps its own B slice in its L2);
//! within a panel, for each 32-row block of A and each [`KC`]-deep slice of k,
//! the A block slice (in L1) meets every B block of the panel (from L2).
//! The micro-kernel keeps a 32×32 block of C in four accumulator tiles
//! (tmm0-3) and streams two A tiles (tmm4-5) and two B tiles (tmm6-7) per
//! 32-deep step of k. While a row block is computed, the source rows of the
//! next A block and the destination rows of C are prefetched, a share per
//! kernel call, so the memory traffic overlaps the tile work.
//!
//! Measured here per core: the four multiplies of a step alone run at about
//! 3.1 TFLOP/s, and with the step's four tile loads at about 1.9 from packed,
//! 64-byte-aligned buffers (L1 or L2) — but at 0.8 when the packs are not
//! cache-line aligned, since every tile row then spans two lines. Every tile
//! therefore goes through [`aligned`] slices.

#![allow(clippy::too_many_arguments)]

use super::simd::{parallel_for, SendPtr};
use half::bf16;
use std::sync::{Mutex, OnceLock};

/// Depth of one k slice: the 32×KC A slice (KC·64 bytes) stays in L1 while B streams from
/// L2. At 1024³ on two threads, 256 measured 1620 GFLOP/s, 128 1530 and 1024 1385.
pub(crate) const KC: usize = 256;
/// Widest column panel: its B slice (NC·k·2 bytes) should stay in one core's L2.
pub(crate) const NC: usize = 512;

/// Whether the AMX bf16 path can run here (CPU support and OS permission); cached.
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("KILN_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7 sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE; EBX bits 16 and 30:
    // AVX-512 F and BW (used by the epilogue).
    // SAFETY: CPUID is available on every x86_64 CPU (the call is safe in newer Rust).
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid_count(7, 0) };
    if r.edx & (1 << 22) == 0 || r.edx & (1 << 24) == 0 || r.ebx & (1 << 16) == 0 || r.ebx & (1 << 30) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: the syscall only changes this process's permitted XSAVE features.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// A strided bf16 matrix operand: element (i, j) at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const bf16,
    pub rs: isize,
    pub cs: isize,
}
// SAFETY: Mat is only read, from the threads of one gemm call, while the caller keeps the buffer alive.
unsafe impl Send for Mat {}
// SAFETY: as above.
unsafe impl Sync for Mat {}

impl Mat {
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> u16 {
        // SAFETY: callers only ask for (i, j) inside the matrix the caller described.
        unsafe { (*self.ptr.offset(i as isize * self.rs + j as isize * self.cs)).to_bits() }
    }
    /// Row `i`, columns `j0..j0+len` as a slice when columns are contiguous.
    #[inline(always)]
    fn row(&self, i: usize, j0: usize, len: usize) -> Option<&[u16]> {
        // SAFETY: as for `at`; with cs == 1 the elements are contiguous.
        (self.cs == 1 || len <= 1).then(|| unsafe {
            std::slice::from_raw_parts(self.ptr.offset(i as isize * self.rs + j0 as isize * self.cs) as *const u16, len)
        })
    }
}

/// Reusable packing buffers (packs are a few MiB; fresh allocations would page-fault every call).
static POOL: Mutex<Vec<Vec<u16>>> = Mutex::new(Vec::new());

/// A pooled buffer, sized by [`aligned`]: packing writes every element it reads, so stale
/// contents are fine and only new space is zeroed.
fn take_buf() -> Vec<u16> {
    POOL.lock().map(|mut p| p.pop()).ok().flatten().unwrap_or_default()
}

/// The first `len` elements of `v` that start on a 64-byte boundary (`v` grows to hold them).
///
/// Every tile load and store goes through such a slice: a tile row that straddles two cache
/// lines costs two, and unaligned packs measured 2.4× slower in the kernel (810 against
/// 1920 GFLOP/s per core).
fn aligned<T: Copy + Default>(v: &mut Vec<T>, len: usize) -> &mut [T] {
    let spare = 64 / std::mem::size_of::<T>();
    if v.len() < len + spare {
        v.resize(len + spare, T::default());
    }
    let off = v.as_ptr().align_offset(64);
    &mut v[off..off + len]
}

fn give_buf(v: Vec<u16>) {
    // Keep at most four buffers of at most 16 MiB each.
    if v.capacity() <= 8 << 20 {
        if let Ok(mut p) = POOL.lock() {
            if p.len() < 4 {
                p.push(v);
            }
        }
    }
}

/// `c[i*ldc + j] = bf16(sum_p a(i,p) b(p,j))` with f32 accumulation and one rounding
/// (nearest even). `parallel` lets the product use the thread pool.
///
/// # Safety
/// `a` must describe a valid m×k matrix, `b` a valid k×n matrix, and `c` must
/// point to `m` rows of `n` writable bf16 spaced `ldc` apart, not overlapping
/// `a` or `b`; [`available`] must be true.
pub(crate) unsafe fn gemm_bf16(m: usize, n: usize, k: usize, a: Mat, b: Mat, c: *mut bf16, ldc: usize, parallel: bool) {
    if m == 0 || n == 0 {
        return;
    }
    let cp = SendPtr(c as *mut u16);
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i of C has n writable elements.
            unsafe { std::slice::from_raw_parts_mut(cp.get().add(i * ldc), n) }.fill(0);
        }
        return;
    }
    let (mb, nb, kp) = (m.div_ceil(32), n.div_ceil(32), k.div_ceil(32) * 32);
    let threads = if parallel { super::simd::num_threads() } else { 1 };

    // Column panels of whole 32-column blocks: at most NC wide, at least one per thread when
    // there are enough blocks; with fewer panels than threads the rows are split too.
    let mut npan = nb.div_ceil(NC / 32);
    if npan < threads {
        npan = threads.min(nb);
    }
    let mpart = if npan >= threads { 1 } else { threads.div_ceil(npan).min(mb) };
    let tasks = npan * mpart;
    let mut bp_vec = take_buf();
    let bp = aligned(&mut bp_vec, nb * 32 * kp);
    // When each column panel belongs to one task, that task packs its own B blocks: no separate
    // parallel pass, and the packed panel lands in the L2 of the core that reads it.
    let pack_in_task = mpart == 1;
    if !pack_in_task {
        pack_b(b, k, n, kp, bp, parallel);
    }
    let bpp = SendPtr(bp.as_mut_ptr());
    let work = move |range: std::ops::Range<usize>| {
        let cfg = TileCfg::new();
        // SAFETY: a valid palette-1 configuration; the tiles are released before the closure returns.
        unsafe { cfg.load() };
        let (mut cvec, mut avec): (Vec<f32>, Vec<u16>) = (Vec::new(), Vec::new());
        let ablk = aligned(&mut avec, 32 * kp);
        for t in range {
            let (pm, pn) = (t / npan, t % npan);
            let (j0, j1) = (nb * pn / npan, nb * (pn + 1) / npan);
            let (i0, i1) = (mb * pm / mpart, mb * (pm + 1) / mpart);
            let cbuf = aligned(&mut cvec, (j1 - j0) * 1024);
            let width = n.min(j1 * 32) - j0 * 32;
            if pack_in_task {
                for bj in j0..j1 {
                    // SAFETY: block bj's 32·kp elements are inside `bp` and packed by this task only.
                    let blk = unsafe { std::slice::from_raw_parts_mut(bpp.get().add(bj * kp * 32), kp * 32) };
                    pack_b_block(b, k, n, bj, 0..kp / 32, blk);
                }
            }
            for bi in i0..i1 {
                pack_a_block(a, m, k, kp, bi, ablk);
                // While the tiles work on this block, prefetch the source rows of the next A block
                // (into L2) and this block's rows of C (for writing), a share per kernel call.
                let next_rows = if a.cs == 1 { 32.min(m.saturating_sub(bi * 32 + 32)) } else { 0 };
                let (a_lines, c_lines) = (k * 2 / 64 + 1, width * 2 / 64 + 1);
                let rows = 32.min(m - bi * 32);
                let (na, total) = (next_rows * a_lines, next_rows * a_lines + rows * c_lines);
                let calls = kp.div_ceil(KC) * (j1 - j0);
                let mut q = 0;
                let prefetch = |q: usize| {
                    for it in total * q / calls..total * (q + 1) / calls {
                        // Prefetches never fault; the addresses are inside A's rows and C's rows.
                        if it < na {
                            let p = a.ptr.wrapping_offset((bi * 32 + 32 + it / a_lines) as isize * a.rs);
                            prefetch_l2((p as *const u8).wrapping_add(it % a_lines * 64));
                        } else {
                            let it = it - na;
                            let p = cp.get().wrapping_add((bi * 32 + it / c_lines) * ldc + j0 * 32);
                            prefetch_w((p as *const u8).wrapping_add(it % c_lines * 64));
                        }
                    }
                };
                let mut k0 = 0;
                while k0 < kp {
                    let kc = KC.min(kp - k0);
                    for bj in j0..j1 {
                        prefetch(q);
                        q += 1;
                        // SAFETY: the A block holds kp/32 steps of 2 tiles; each B strip holds kp/2
                        // rows of 64 bytes; cbuf holds (j1-j0) blocks of 4 tiles; tiles are configured.
                        unsafe {
                            kernel(
                                ablk.as_ptr().add(k0 * 32),
                                bpp.get().add(bj * 32 * kp + k0 * 32),
                                kc / 32,
                                cbuf.as_mut_ptr().add((bj - j0) * 1024),
                                k0 > 0,
                            );
                        }
                    }
                    k0 += kc;
                }
                // SAFETY: rows bi*32.., columns j0*32..min(j1*32, n) of C are inside C and belong to
                // this task only; cbuf holds j1-j0 blocks; AVX-512 F/BW/VL were checked by `available`.
                unsafe { store_bf16(cbuf.as_ptr(), rows, width, cp.get().add(bi * 32 * ldc + j0 * 32), ldc) };
            }
        }
        // SAFETY: releases this thread's tile state.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) };
    };
    if threads > 1 && tasks > 1 {
        parallel_for(tasks, usize::MAX / tasks, work);
    } else {
        work(0..tasks);
    }
    give_buf(bp_vec);
}

/// Packs rows `bi*32..bi*32+32` of A into `blk`: kp/32 steps of two 16×32 tiles (zero-padded).
fn pack_a_block(a: Mat, m: usize, k: usize, kp: usize, bi: usize, blk: &mut [u16]) {
    // Row r of the block: the 32 elements of step s sit at s*1024 + r*32.
    for s in 0..kp / 32 {
        for r in 0..32 {
            let i = bi * 32 + r;
            let dst: &mut [u16; 32] = (&mut blk[s * 1024 + r * 32..s * 1024 + r * 32 + 32]).try_into().unwrap();
            if i >= m {
                dst.fill(0);
                continue;
            }
            let len = 32.min(k - s * 32);
            match a.row(i, s * 32, len) {
                Some(src) if len == 32 => *dst = src.try_into().unwrap(),
                Some(src) => {
                    dst[..len].copy_from_slice(src);
                    dst[len..].fill(0);
                }
                None => {
                    for (p, v) in dst.iter_mut().enumerate() {
                        *v = if p < len { a.at(i, s * 32 + p) } else { 0 };
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn prefetch_l2(p: *const u8) {
    // SAFETY: a prefetch is a hint; it never faults, whatever the address.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p as *const i8) };
}

#[inline(always)]
fn prefetch_w(p: *const u8) {
    // SAFETY: as above.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p as *const i8) };
}

/// Packs B into 32-column blocks laid out like packed A: block bj (at `bj * kp * 32`) holds
/// kp/32 steps, each two tiles (columns 0..16, 16..32) of 16 rows × 16 bf16 pairs in the tile
/// unit's VNNI order (the 4-byte element (r, j) holds `(B[2r][j], B[2r+1][j])`), zero-padded.
fn pack_b(b: Mat, k: usize, n: usize, kp: usize, out: &mut [u16], parallel: bool) {
    let nb = n.div_ceil(32);
    let op = SendPtr(out.as_mut_ptr());
    let job = move |blocks: std::ops::Range<usize>| {
        for bj in blocks {
            // SAFETY: block bj's 32·kp elements are inside `out` and packed by this job only.
            let blk = unsafe { std::slice::from_raw_parts_mut(op.get().add(bj * kp * 32), kp * 32) };
            pack_b_block(b, k, n, bj, 0..kp / 32, blk);
        }
    };
    if parallel {
        parallel_for(nb, 32 * kp, job);
    } else {
        job(0..nb);
    }
}

/// Packs steps `steps` (32 rows of k each) of B's 32-column block `bj` into `blk` (the whole
/// block, laid out as in [`pack_b`]).
fn pack_b_block(b: Mat, k: usize, n: usize, bj: usize, steps: std::ops::Range<usize>, blk: &mut [u16]) {
    for s in steps {
        for t in 0..2 {
            let c0 = bj * 32 + t * 16;
            let full = c0 + 16 <= n;
            for rr in 0..16 {
                let (k0, k1) = (s * 32 + 2 * rr, s * 32 + 2 * rr + 1);
                let dst: &mut [u16; 32] = (&mut blk[s * 1024 + t * 512 + rr * 32..][..32]).try_into().unwrap();
                let rows = if full && k1 < k { b.row(k0, c0, 16).zip(b.row(k1, c0, 16)) } else { None };
                match rows {
                    Some((x0, x1)) => {
                        if t == 1 {
                            // The next block's columns of these rows, for the next call.
                            prefetch_l2((x0.as_ptr() as *const u8).wrapping_add(64));
                            prefetch_l2((x1.as_ptr() as *const u8).wrapping_add(64));
                        }
                        // SAFETY: both rows hold 16 elements, dst 32; AVX-512 was checked by `available`.
                        unsafe { interleave16(x0.as_ptr(), x1.as_ptr(), dst.as_mut_ptr()) }
                    }
                    None => {
                        for j in 0..16 {
                            let col = c0 + j;
                            dst[2 * j] = if col < n && k0 < k { b.at(k0, col) } else { 0 };
                            dst[2 * j + 1] = if col < n && k1 < k { b.at(k1, col) } else { 0 };
                        }
                    }
                }
            }
        }
    }
}

/// `dst[2j] = x0[j]`, `dst[2j+1] = x1[j]` for `j < 16`.
///
/// # Safety
/// `x0`, `x1` must hold 16 readable u16, `dst` 32 writable; the CPU must support AVX-512 F.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn interleave16(x0: *const u16, x1: *const u16, dst: *mut u16) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the sizes.
    unsafe {
        let lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256(x0 as *const __m256i));
        let hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256(x1 as *const __m256i));
        _mm512_storeu_si512(dst as *mut _, _mm512_or_si512(lo, _mm512_slli_epi32::<16>(hi)));
    }
}

/// Converts a row of 32×32 blocks of f32 tiles (each: top-left, top-right, bottom-left,
/// bottom-right, 16×16 row-major) to bf16 rows `0..rows`, columns `0..cols` of `out` (row
/// stride `ld`), row by row, rounding to nearest even and quieting NaNs exactly as
/// `half::bf16::from_f32`.
///
/// # Safety
/// `tiles` must hold `cols.div_ceil(32)` blocks of 1024 f32; `out` must have `rows` (≤ 32) rows
/// of `cols` writable elements; the CPU must support AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store_bf16(tiles: *const f32, rows: usize, cols: usize, out: *mut u16, ld: usize) {
    use std::arch::x86_64::*;
    let cvt = |p: *const f32| {
        // SAFETY: p points to 16 readable f32 inside `tiles`.
        let x = unsafe { _mm512_loadu_si512(p as *const _) };
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
        let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(x, _mm512_add_epi32(odd, _mm512_set1_epi32(0x7fff))));
        let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7fff_ffff));
        let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
        let quiet = _mm512_or_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(0x40));
        _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet))
    };
    let (full, tail) = (cols / 32, cols % 32);
    let (m0, m1) = ((1u32 << tail.min(16)) - 1, (1u32 << tail.saturating_sub(16)) - 1);
    for r in 0..rows {
        let t = (r / 16) * 512 + (r % 16) * 16;
        // SAFETY: row t of each block's tiles is inside `tiles`; row r of `out` has `cols`
        // writable elements and the masked stores touch no others.
        unsafe {
            let dst = out.add(r * ld);
            for blk in 0..full {
                let (lo, hi) = (cvt(tiles.add(blk * 1024 + t)), cvt(tiles.add(blk * 1024 + t + 256)));
                _mm256_storeu_si256(dst.add(blk * 32) as *mut __m256i, lo);
                _mm256_storeu_si256(dst.add(blk * 32 + 16) as *mut __m256i, hi);
            }
            if tail > 0 {
                let (lo, hi) = (cvt(tiles.add(full * 1024 + t)), cvt(tiles.add(full * 1024 + t + 256)));
                _mm256_mask_storeu_epi16(dst.add(full * 32) as *mut i16, m0 as __mmask16, lo);
                _mm256_mask_storeu_epi16(dst.add(full * 32 + 16) as *mut i16, m1 as __mmask16, hi);
            }
        }
    }
}

#[repr(C, align(64))]
struct TileCfg([u8; 64]);

impl TileCfg {
    /// Palette 1, all eight tiles 16 rows × 64 bytes.
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileCfg(c)
    }
    unsafe fn load(&self) {
        // SAFETY: a 64-byte aligned, valid tile configuration.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr()) };
    }
}

/// One 32×32 block of C (four contiguous 16×16 f32 tiles) (+)= `steps` 32-deep steps of
/// a packed A block times a packed B block (two contiguous tiles per step each).
#[inline(always)]
unsafe fn kernel(a: *const u16, b: *const u16, steps: usize, c: *mut f32, acc: bool) {
    use std::arch::asm;
    // SAFETY (whole function): the caller guarantees every address below is inside its buffer.
    unsafe {
        if acc {
            asm!(
                "tileloadd tmm0, [{c} + {s64}*1]",
                "tileloadd tmm1, [{c} + {s64}*1 + 1024]",
                "tileloadd tmm2, [{c} + {s64}*1 + 2048]",
                "tileloadd tmm3, [{c} + {s64}*1 + 3072]",
                c = in(reg) c, s64 = in(reg) 64usize,
                options(nostack, readonly),
            );
        } else {
            asm!("tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3", options(nostack, nomem));
        }
        for s in 0..steps {
            asm!(
                "tileloadd tmm4, [{pa} + {s64}*1]",
                "tileloadd tmm6, [{pb} + {s64}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{pb} + {s64}*1 + 1024]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{pa} + {s64}*1 + 1024]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                pa = in(reg) a.add(s * 1024),
                pb = in(reg) b.add(s * 1024),
                s64 = in(reg) 64usize,
                options(nostack, readonly),
            );
        }
        asm!(
            "tilestored [{c} + {s64}*1], tmm0",
            "tilestored [{c} + {s64}*1 + 1024], tmm1",
            "tilestored [{c} + {s64}*1 + 2048], tmm2",
            "tilestored [{c} + {s64}*1 + 3072], tmm3",
            c = in(reg) c, s64 = in(reg) 64usize,
            options(nostack),
        );
    }
}
