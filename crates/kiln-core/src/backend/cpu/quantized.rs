//! Quantization kernels: quantize, dequantize, and matrix products computed
//! from packed codes (see `ops/quantized.rs` for the formats).
//!
//! * Decode-shaped products (`x @ Wᵀ` with few rows of x) read the packed
//!   codes directly: per group `scale·Σ q·x + bias·Σ x`, with x permuted
//!   once so the code unpacking vectorises (shift, mask, convert, FMA on
//!   16 words at a time), threads splitting the rows of W.
//! * Larger products dequantize a block of W into an f32 panel that stays in
//!   cache and multiply it with the blocked GEMM, so prompt processing runs
//!   near f32 GEMM speed.
//! * f16/bf16 operands compute in f32; f64 computes in f64.

use super::gemm::{gemm, GemmScalar, Mat};
use super::simd::{parallel_for, SendPtr};
use super::strided::gather_to_vec;
use crate::array::{Array, Data};
use crate::dtype::{bf16, f16, Dtype, Element};
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::ops::quantized::{QuantMode, QuantSpec};
use crate::primitive::OutSpec;
use crate::shape::numel;
use std::borrow::Cow;

// ---------------------------------------------------------------- number formats

/// FP4 E2M1 values by code.
pub(crate) const FP4: [f32; 16] =
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// FP8 E4M3 code to f32 (0x7F reads as 480, as MLX's conversion does).
#[inline]
pub(crate) fn e4m3_to_f32(x: u8) -> f32 {
    let mag = f16::from_bits(((x & 0x7F) as u16) << 7).to_f32() * 256.0;
    if x & 0x80 != 0 {
        -mag
    } else {
        mag
    }
}

/// f32 to FP8 E4M3, round to nearest even, saturating at ±448 (NaN and
/// infinities saturate too).
#[inline]
pub(crate) fn f32_to_e4m3(f: f32) -> u8 {
    let bits = f.to_bits();
    let sign = ((bits >> 24) & 0x80) as u8;
    let a = bits & 0x7FFF_FFFF;
    let code = if a >= 0x43E0_0000 {
        // |f| >= 464 (the midpoint above 448), infinities and NaN.
        0x7E
    } else if a < (121 << 23) {
        // Below the smallest normal (2^-6): multiples of 2^-9.
        (f32::from_bits(a) * 512.0).round_ties_even() as u8
    } else {
        // Rebias the exponent (127 -> 7) and round the mantissa to 3 bits, ties to even.
        let r = a.wrapping_sub(120 << 23).wrapping_add(0x7FFFF + ((a >> 20) & 1));
        (r >> 20) as u8
    };
    code | sign
}

/// E8M0 scale code to f32 (`2^(s-127)`; code 0 reads as 2^-127, 255 as +inf).
#[inline]
pub(crate) fn e8m0_to_f32(s: u8) -> f32 {
    if s == 0 {
        f32::from_bits(0x0040_0000)
    } else {
        f32::from_bits((s as u32) << 23)
    }
}

/// Reads code `i` of a packed row (an LSB-first bit stream over the words).
#[inline(always)]
fn code_at(row: &[u32], i: usize, bits: u32) -> u32 {
    let bit = i * bits as usize;
    let (w, o) = (bit / 32, (bit % 32) as u32);
    let mut v = row[w] >> o;
    if o + bits > 32 {
        v |= row[w + 1] << (32 - o);
    }
    v & ((1u32 << bits) - 1)
}

// ---------------------------------------------------------------- element helpers

/// Float element types a kernel reads and writes (computing in f32, or f64 for f64).
pub(crate) trait Fl: Element {
    fn f32(self) -> f32;
    fn of_f32(x: f32) -> Self;
}
impl Fl for f32 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        x
    }
}
impl Fl for f64 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        x as f64
    }
}
impl Fl for f16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}
impl Fl for bf16 {
    #[inline(always)]
    fn f32(self) -> f32 {
        self.to_f32()
    }
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

/// The accumulation type of a product: f32, or f64 for f64 operands.
pub(crate) trait Acc: GemmScalar + Element + std::ops::Sub<Output = Self> + PartialOrd {
    fn of_f32(x: f32) -> Self;
}
impl Acc for f32 {
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        x
    }
}
impl Acc for f64 {
    #[inline(always)]
    fn of_f32(x: f32) -> Self {
        x as f64
    }
}

/// The elements of an evaluated array in row-major order: borrowed when the
/// data is row-contiguous, gathered otherwise.
fn elems<T: Element>(a: &Array) -> Cow<'static, [T]> {
    let d = a.data();
    let n = a.size();
    if d.is_row_contiguous() {
        // SAFETY: a row-contiguous view holds `n` elements of T from its
        // offset; the buffer outlives the kernel call because the graph holds
        // the input array until the primitive returns. The 'static borrow
        // never escapes the kernel (callers drop it before returning).
        unsafe { Cow::Borrowed(std::slice::from_raw_parts(d.ptr::<T>() as *const T, n)) }
    } else {
        Cow::Owned(gather_to_vec::<T>(&d, a.shape()))
    }
}

/// The elements of a float array in the accumulation type: borrowed when
/// the dtype already matches and the data is contiguous, converted otherwise.
fn elems_acc<A: Acc>(a: &Array) -> Cow<'static, [A]> {
    if a.dtype() == A::DTYPE {
        return elems::<A>(a);
    }
    Cow::Owned(match a.dtype() {
        Dtype::F32 => elems::<f32>(a).iter().map(|&v| A::of_f32(v)).collect(),
        Dtype::F64 => elems::<f64>(a).iter().map(|&v| A::from_f64(v)).collect(),
        Dtype::F16 => elems::<f16>(a).iter().map(|&v| A::of_f32(v.to_f32())).collect(),
        Dtype::BF16 => elems::<bf16>(a).iter().map(|&v| A::of_f32(v.to_f32())).collect(),
        _ => Vec::new(),
    })
}

/// Decoded per-group scales (f32 or f64) of an array of scales in any of
/// the dtypes a mode uses.
fn scales_acc<A: Acc>(s: &Array, spec: QuantSpec) -> Cow<'static, [A]> {
    match spec.mode {
        QuantMode::Affine => elems_acc::<A>(s),
        QuantMode::Nvfp4 => Cow::Owned(elems::<u8>(s).iter().map(|&c| A::of_f32(e4m3_to_f32(c))).collect()),
        QuantMode::Mxfp4 | QuantMode::Mxfp8 => {
            Cow::Owned(elems::<u8>(s).iter().map(|&c| A::of_f32(e8m0_to_f32(c))).collect())
        }
    }
}

/// Writes accumulated values into a fresh buffer of the output dtype.
fn write_out<A: Acc>(vals: &[A], out: &OutSpec<'_>) -> Result<Data> {
    let buf = Buffer::alloc(numel(out.shape) * out.dtype.size())?;
    let n = vals.len();
    macro_rules! put {
        ($t:ty, $conv:expr) => {{
            let p = buf.as_ptr() as *mut $t;
            for (i, &v) in vals.iter().enumerate() {
                // SAFETY: the buffer holds `n` elements of the output dtype.
                unsafe { *p.add(i) = $conv(v) };
            }
        }};
    }
    let _ = n;
    match out.dtype {
        Dtype::F32 => put!(f32, |v: A| v.to_f64() as f32),
        Dtype::F64 => put!(f64, |v: A| v.to_f64()),
        Dtype::F16 => put!(f16, |v: A| f16::from_f32(v.to_f64() as f32)),
        Dtype::BF16 => put!(bf16, |v: A| bf16::from_f32(v.to_f64() as f32)),
        d => return Err(Error::unsupported("quantized", format!("no kernel for output dtype {d}."))),
    }
    Ok(Data::contiguous(buf, out.shape))
}

// ---------------------------------------------------------------- group decoding

/// Decodes groups `g0..g1` of one packed row into `out` (`(g1-g0)·gs`
/// values): affine `s·q + b`, fp modes `value(q)·s`.
#[inline]
fn decode_groups<A: Acc>(
    spec: QuantSpec,
    row: &[u32],
    sc: &[A],
    bi: Option<&[A]>,
    g0: usize,
    g1: usize,
    out: &mut [A],
) {
    let gs = spec.group_size;
    let bits = spec.bits;
    for g in g0..g1 {
        let s = sc[g];
        let o = &mut out[(g - g0) * gs..(g - g0 + 1) * gs];
        match spec.mode {
            QuantMode::Affine => {
                let b = bi.expect("affine biases")[g];
                if 32 % bits == 0 {
                    let per = (32 / bits) as usize;
                    let mask = (1u32 << bits) - 1;
                    let words = &row[g * gs / per..(g + 1) * gs / per];
                    for (j, &w) in words.iter().enumerate() {
                        for k in 0..per {
                            o[j * per + k] = s * A::of_f32(((w >> (k as u32 * bits)) & mask) as f32) + b;
                        }
                    }
                } else {
                    for (i, v) in o.iter_mut().enumerate() {
                        *v = s * A::of_f32(code_at(row, g * gs + i, bits) as f32) + b;
                    }
                }
            }
            QuantMode::Mxfp4 | QuantMode::Nvfp4 => {
                for (i, v) in o.iter_mut().enumerate() {
                    *v = A::of_f32(FP4[code_at(row, g * gs + i, 4) as usize]) * s;
                }
            }
            QuantMode::Mxfp8 => {
                for (i, v) in o.iter_mut().enumerate() {
                    *v = A::of_f32(e4m3_to_f32(code_at(row, g * gs + i, 8) as u8)) * s;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- quantize

/// Affine quantization of one group (MLX's arithmetic, in f32): returns the
/// scale and bias and writes the codes.
fn affine_group(w: &[f32], bits: u32, codes: &mut [u32]) -> (f32, f32) {
    let n_bins = ((1u32 << bits) - 1) as f32;
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &v in w {
        hi = hi.max(v);
        lo = lo.min(v);
    }
    if bits == 1 {
        // One bit: the codes pick the group's min or max (MLX 0.32.4).
        let scale = (hi - lo).max(1e-7);
        for (c, &v) in codes.iter_mut().zip(w) {
            *c = ((v - lo) / scale).round_ties_even().clamp(0.0, 1.0) as u32;
        }
        return (scale, lo);
    }
    let mask = lo.abs() > hi.abs();
    let mut scale = ((hi - lo) / n_bins).max(1e-7);
    if !mask {
        scale = -scale;
    }
    let edge = if mask { lo } else { hi };
    let q0 = (edge / scale).round_ties_even();
    let mut bias = 0.0;
    if q0 != 0.0 {
        scale = edge / q0;
        bias = edge;
    }
    for (c, &v) in codes.iter_mut().zip(w) {
        *c = ((v - bias) / scale).round_ties_even().clamp(0.0, n_bins) as u32;
    }
    (scale, bias)
}

/// Rounds an f32 to the dtype `T` and back (emulates an op computed in `T`).
#[inline(always)]
fn rt<T: Fl>(x: f32) -> f32 {
    T::of_f32(x).f32()
}

/// Floating-point quantization of one group, emulating MLX's graph in the
/// input dtype `T`: returns the scale code and writes the value codes.
fn fp_group<T: Fl>(spec: QuantSpec, w: &[f32], codes: &mut [u32]) -> u8 {
    let maxval = if spec.bits == 4 { 6.0 } else { 448.0 };
    let amax = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = rt::<T>(amax / maxval);
    let (scode, vals): (u8, Vec<f32>) = if spec.mode == QuantMode::Nvfp4 {
        // The scale becomes E4M3; the values are divided by it in T and
        // then widened to f32.
        let s8 = f32_to_e4m3(scale);
        let sv = rt::<T>(e4m3_to_f32(s8));
        (s8, w.iter().map(|&v| rt::<T>(v / sv)).collect())
    } else {
        // E8M0: the smallest power of two that brings the group's largest
        // magnitude within the format's range (MLX 0.32.4 rounds the
        // exponent up).
        let e = if scale > 0.0 { ((scale as f64).log2().ceil() as i32).clamp(-127, 127) } else { 0 };
        let p = rt::<T>((e as f32).exp2());
        ((e + 127) as u8, w.iter().map(|&v| rt::<T>(v / p)).collect())
    };
    if spec.bits == 4 {
        // Nearest FP4 value, the first in code order on ties; nvfp4's
        // distances are taken in f32, mxfp4's in T.
        let f32_dist = spec.mode == QuantMode::Nvfp4;
        for (c, &v) in codes.iter_mut().zip(&vals) {
            let mut best = 0usize;
            let mut bd = f32::NAN;
            for (j, &l) in FP4.iter().enumerate() {
                let d = if f32_dist { (v - l).abs() } else { rt::<T>(v - l).abs() };
                if j == 0 || d < bd {
                    best = j;
                    bd = d;
                }
            }
            *c = best as u32;
        }
    } else {
        for (c, &v) in codes.iter_mut().zip(&vals) {
            *c = f32_to_e4m3(v) as u32;
        }
    }
    scode
}

fn quantize_typed<T: Fl>(w: &Array, spec: QuantSpec, outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
    let src = elems::<T>(w);
    let k = w.shape()[w.ndim() - 1];
    let rows = w.size().checked_div(k).unwrap_or(0);
    let gs = spec.group_size;
    let groups = k / gs;
    let kw = spec.packed_len(k);
    let bits = spec.bits;
    let qbuf = Buffer::zeroed(rows * kw * 4)?;
    let sbuf = Buffer::alloc(rows * groups * outs[1].dtype.size())?;
    let bbuf =
        if spec.mode == QuantMode::Affine { Some(Buffer::alloc(rows * groups * T::DTYPE.size())?) } else { None };
    let (qp, sp) = (SendPtr(qbuf.as_ptr() as *mut u32), SendPtr(sbuf.as_ptr()));
    let bp = SendPtr(bbuf.as_ref().map_or(std::ptr::null_mut(), |b| b.as_ptr() as *mut T));
    parallel_for(rows, k.max(1) * 8, |range| {
        let mut wf = vec![0.0f32; gs];
        let mut codes = vec![0u32; gs];
        for r in range {
            // SAFETY: row r's words are written by this chunk only.
            let qrow = unsafe { std::slice::from_raw_parts_mut(qp.get().add(r * kw), kw) };
            for g in 0..groups {
                for (d, s) in wf.iter_mut().zip(&src[r * k + g * gs..r * k + (g + 1) * gs]) {
                    *d = s.f32();
                }
                let i = r * groups + g;
                if spec.mode == QuantMode::Affine {
                    let (s, b) = affine_group(&wf, bits, &mut codes);
                    // SAFETY: scale/bias i is written by this chunk only; the
                    // buffers hold rows·groups elements of T.
                    unsafe {
                        *(sp.get() as *mut T).add(i) = T::of_f32(s);
                        *bp.get().add(i) = T::of_f32(b);
                    }
                } else {
                    let s = fp_group::<T>(spec, &wf, &mut codes);
                    // SAFETY: as above, uint8 scales.
                    unsafe { *sp.get().add(i) = s };
                }
                // Append the codes to the row's LSB-first bit stream.
                for (j, &c) in codes.iter().enumerate() {
                    let bit = (g * gs + j) * bits as usize;
                    let (wi, o) = (bit / 32, (bit % 32) as u32);
                    qrow[wi] |= c << o;
                    if o + bits > 32 {
                        qrow[wi + 1] |= c >> (32 - o);
                    }
                }
            }
        }
    });
    let mut v = vec![Data::contiguous(qbuf, outs[0].shape), Data::contiguous(sbuf, outs[1].shape)];
    if let Some(b) = bbuf {
        v.push(Data::contiguous(b, outs[2].shape));
    }
    Ok(v)
}

/// Quantizes the last axis of `w`.
pub fn quantize(w: &Array, spec: QuantSpec, outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
    match w.dtype() {
        Dtype::F32 => quantize_typed::<f32>(w, spec, outs),
        Dtype::F64 => quantize_typed::<f64>(w, spec, outs),
        Dtype::F16 => quantize_typed::<f16>(w, spec, outs),
        Dtype::BF16 => quantize_typed::<bf16>(w, spec, outs),
        d => Err(Error::invalid("quantize", format!("Only floating point inputs can be quantized, got {d}."))),
    }
}

// ---------------------------------------------------------------- dequantize

fn dequantize_typed<T: Fl>(inputs: &[Array], spec: QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
    let wq = elems::<u32>(&inputs[0]);
    let kw = inputs[0].shape()[inputs[0].ndim() - 1];
    let k = spec.unpacked_len(kw);
    let rows = inputs[0].size().checked_div(kw).unwrap_or(0);
    let gs = spec.group_size;
    let groups = k / gs;
    let buf = Buffer::alloc(rows * k * out.dtype.size())?;
    let op = SendPtr(buf.as_ptr() as *mut T);
    let bits = spec.bits;
    match spec.mode {
        QuantMode::Affine => {
            let sc = elems::<T>(&inputs[1]);
            let bi = elems::<T>(&inputs[2]);
            parallel_for(rows, k.max(1), |range| {
                for r in range {
                    let row = &wq[r * kw..(r + 1) * kw];
                    for i in 0..k {
                        let g = r * groups + i / gs;
                        let q = code_at(row, i, bits);
                        // In T's arithmetic: (q·s rounded to T) + b, rounded to T
                        // (f64 computes in f64).
                        let v = if T::DTYPE == Dtype::F64 {
                            T::from_f64(q as f64 * sc[g].to_f64() + bi[g].to_f64())
                        } else {
                            T::of_f32(rt::<T>(q as f32 * sc[g].f32()) + bi[g].f32())
                        };
                        // SAFETY: element (r, i) is written by this chunk only.
                        unsafe { *op.get().add(r * k + i) = v };
                    }
                }
            });
        }
        _ => {
            let sc = scales_acc::<f32>(&inputs[1], spec);
            parallel_for(rows, k.max(1), |range| {
                let mut tmp = vec![0.0f32; k];
                for r in range {
                    decode_groups::<f32>(spec, &wq[r * kw..(r + 1) * kw], &sc[r * groups..], None, 0, groups, &mut tmp);
                    for (i, &v) in tmp.iter().enumerate() {
                        // SAFETY: element (r, i) is written by this chunk only.
                        unsafe { *op.get().add(r * k + i) = T::of_f32(v) };
                    }
                }
            });
        }
    }
    Ok(Data::contiguous(buf, out.shape))
}

/// Expands packed codes (`inputs` = codes, scales, biases for affine).
pub fn dequantize(inputs: &[Array], spec: QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
    match out.dtype {
        Dtype::F32 => dequantize_typed::<f32>(inputs, spec, out),
        Dtype::F64 => dequantize_typed::<f64>(inputs, spec, out),
        Dtype::F16 => dequantize_typed::<f16>(inputs, spec, out),
        Dtype::BF16 => dequantize_typed::<bf16>(inputs, spec, out),
        d => Err(Error::invalid("dequantize", format!("Unsupported output dtype {d}."))),
    }
}

// ---------------------------------------------------------------- matmul

/// One quantized matrix: packed rows, decoded scales and biases.
struct QMat<'a, A> {
    spec: QuantSpec,
    /// Packed words, `rows × kw`.
    wq: &'a [u32],
    kw: usize,
    /// Scales and biases, `rows × groups`.
    sc: &'a [A],
    bi: Option<&'a [A]>,
    groups: usize,
}

impl<A: Acc> QMat<'_, A> {
    /// Decodes groups `g0..g1` of row `r` into `out`.
    #[inline]
    fn decode(&self, r: usize, g0: usize, g1: usize, out: &mut [A]) {
        let row = &self.wq[r * self.kw..(r + 1) * self.kw];
        let sc = &self.sc[r * self.groups..(r + 1) * self.groups];
        let bi = self.bi.map(|b| &b[r * self.groups..(r + 1) * self.groups]);
        #[cfg(target_arch = "x86_64")]
        if let (true, QuantMode::Affine, Some(b)) = (std::mem::size_of::<A>() == 4, self.spec.mode, bi) {
            // SAFETY: A is f32 here (the only 4-byte Acc), so the casts are identities.
            let (scf, bif, outf) =
                unsafe { (cast_slice::<A, f32>(sc), cast_slice::<A, f32>(b), cast_slice_mut::<A, f32>(out)) };
            let (scg, big) = (super::qmv::Groups::F32(Cow::Borrowed(scf)), super::qmv::Groups::F32(Cow::Borrowed(bif)));
            if super::qmv::dequant_row(row, self.spec.bits, self.spec.group_size, &scg, &big, g0, g1, outf) {
                return;
            }
        }
        decode_groups(self.spec, row, sc, bi, g0, g1, out);
    }
}

/// Values per dequantized panel of W (512 KiB of f32: it stays in L2 while
/// the GEMM streams x past it), and the deepest panel.
const PANEL_ELEMS: usize = 1 << 17;
const PANEL_K: usize = 2048;

/// Rows of W per panel (a multiple of `unit`, the kernel's tile height) and
/// the number of panels, for `n` rows `kb` deep: panels fit
/// [`PANEL_ELEMS`] and split evenly over the threads.
fn panel_rows(n: usize, kb: usize, unit: usize) -> (usize, usize) {
    let max_rows = (PANEL_ELEMS / kb).clamp(16, 512);
    let threads = super::simd::num_threads().max(1);
    let blocks = threads * n.div_ceil(threads * max_rows);
    let rows = n.div_ceil(blocks).next_multiple_of(unit).min(n);
    (rows, n.div_ceil(rows))
}

/// A zeroed scratch slice of `len` values from the array allocator (whose
/// cache hands the same pages back call after call, so no page faults).
fn with_scratch<A: Acc, R>(len: usize, f: impl FnOnce(&mut [A]) -> R) -> R {
    match Buffer::zeroed(len * std::mem::size_of::<A>()) {
        // SAFETY: the zeroed, 64-byte-aligned buffer holds `len` values of A
        // (f32 or f64, valid as zero bytes) and lives until `f` returns.
        Ok(buf) => f(unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut A, len) }),
        Err(_) => f(&mut vec![A::ZERO; len]),
    }
}

/// `y (m×n) = x (m×k) @ Wᵀ` with W (n×k) quantized: panels of W rows are
/// dequantized into cache and multiplied with the GEMM, one panel per task,
/// the panels sized so the tasks split evenly over the threads.
fn qmm_t_panel<A: Acc>(x: &[A], w: &QMat<'_, A>, m: usize, n: usize, k: usize, y: &mut [A]) {
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<A>() == 4 && super::sgemm::available() {
        // SAFETY: A is f32 here (the only 4-byte Acc), so the casts are identities.
        let (xf, yf, wf) = unsafe { (cast_slice::<A, f32>(x), cast_slice_mut::<A, f32>(y), cast_qmat::<A>(w)) };
        assert!(yf.len() >= m * n);
        // SAFETY: sgemm is available and y holds m×n values (asserted).
        let decode = |r, g0, g1, out: &mut [f32]| wf.decode(r, g0, g1, out);
        if unsafe { qmm_t_panel_f32(xf, &decode, wf.spec.group_size, m, n, k, yf.as_mut_ptr()) }.is_ok() {
            return;
        }
    }
    let gs = w.spec.group_size;
    let kb = (PANEL_K / gs).max(1) * gs;
    let kb = kb.min(k.div_ceil(gs) * gs);
    let (rows, blocks) = panel_rows(n, kb, 8);
    let yp = SendPtr(y.as_mut_ptr());
    parallel_for(blocks, rows * k * m.max(4), |range| {
        with_scratch::<A, _>(rows * kb, |panel| {
            for b in range {
                let n0 = b * rows;
                let nb = rows.min(n - n0);
                let mut k0 = 0;
                while k0 < k {
                    let kc = kb.min(k - k0);
                    for r in 0..nb {
                        w.decode(n0 + r, k0 / gs, (k0 + kc) / gs, &mut panel[r * kc..(r + 1) * kc]);
                    }
                    // SAFETY: x holds m×k elements and the panel nb×kc; this task
                    // owns output columns n0..n0+nb of y (m×n).
                    unsafe {
                        gemm(
                            m,
                            nb,
                            kc,
                            yp.get().add(n0),
                            n as isize,
                            1,
                            Mat { ptr: x.as_ptr().add(k0), rs: k as isize, cs: 1 },
                            Mat { ptr: panel.as_ptr(), rs: 1, cs: kc as isize },
                            A::ONE,
                            if k0 == 0 { None } else { Some(A::ONE) },
                            1,
                        );
                    }
                    k0 += kc;
                }
            }
        })
    });
}

/// Expands groups `g0..g1` of row `r` of a quantized matrix into `out`.
#[cfg(target_arch = "x86_64")]
type DecodeRow<'a> = dyn Fn(usize, usize, usize, &mut [f32]) + Sync + 'a;

/// [`qmm_t_panel`] on AVX-512 for f32: x is packed once and each panel of
/// W rows (`decode(row, g0, g1, out)` expands groups `g0..g1` of a row) is
/// multiplied in place by [`super::sgemm`]. Writes every value of `y`
/// (`m × n`, row-major).
///
/// # Safety
/// [`super::sgemm::available`]; `y` is valid for `m·n` writes and not
/// aliased during the call.
#[cfg(target_arch = "x86_64")]
unsafe fn qmm_t_panel_f32(
    x: &[f32],
    decode: &DecodeRow<'_>,
    gs: usize,
    m: usize,
    n: usize,
    k: usize,
    y: *mut f32,
) -> Result<()> {
    use super::sgemm::{gemm_bt, PackedX, KC};
    // Equal k blocks of whole groups, none deeper than KC.
    let kb = k.div_ceil(k.div_ceil(KC)).next_multiple_of(gs).min(k.div_ceil(gs) * gs);
    let (rows, blocks) = panel_rows(n, kb, 6);
    let px = PackedX::new(x, m, k, k)?;
    let yp = SendPtr(y);
    parallel_for(blocks, rows * k * m.max(4), |range| {
        with_panel(rows * kb, |panel| {
            for b in range {
                let n0 = b * rows;
                let nb = rows.min(n - n0);
                let mut k0 = 0;
                while k0 < k {
                    let kc = kb.min(k - k0);
                    for r in 0..nb {
                        decode(n0 + r, k0 / gs, (k0 + kc) / gs, &mut panel[r * kb..(r + 1) * kb]);
                    }
                    // SAFETY: sgemm is available; the panel holds nb rows of
                    // kc values at stride kb; this task owns columns
                    // n0..n0+nb of y (m×n).
                    unsafe { gemm_bt(&px, k0, kc, panel.as_ptr(), kb, nb, yp.get().add(n0), n, k0 > 0) };
                    k0 += kc;
                }
            }
        })
    });
    Ok(())
}

thread_local! {
    /// Each thread's panel scratch, kept between calls (zeroed only when it grows).
    static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` values of this thread's panel scratch.
fn with_panel<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    PANEL.with(|p| match p.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        // A nested call on this thread: its own scratch.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// `y (m×n) = x (m×k) @ W` with W (k×n) quantized along n.
fn qmm_n_panel<A: Acc>(x: &[A], w: &QMat<'_, A>, m: usize, n: usize, k: usize, y: &mut [A]) {
    let gs = w.spec.group_size;
    // Column blocks are whole groups.
    let cb = (128 / gs).max(1) * gs;
    let kb = 256;
    let yp = SendPtr(y.as_mut_ptr());
    let blocks = n.div_ceil(cb);
    parallel_for(blocks, cb * k * m.max(4), |range| {
        let mut panel = vec![A::ZERO; kb * cb];
        for b in range {
            let c0 = b * cb;
            let nc = cb.min(n - c0);
            let mut k0 = 0;
            while k0 < k {
                let kc = kb.min(k - k0);
                for r in 0..kc {
                    w.decode(k0 + r, c0 / gs, (c0 + nc) / gs, &mut panel[r * nc..(r + 1) * nc]);
                }
                // SAFETY: x holds m×k elements and the panel kc×nc; this chunk
                // owns output columns c0..c0+nc of y (m×n).
                unsafe {
                    gemm(
                        m,
                        nc,
                        kc,
                        yp.get().add(c0),
                        n as isize,
                        1,
                        Mat { ptr: x.as_ptr().add(k0), rs: k as isize, cs: 1 },
                        Mat { ptr: panel.as_ptr(), rs: nc as isize, cs: 1 },
                        A::ONE,
                        if k0 == 0 { None } else { Some(A::ONE) },
                        1,
                    );
                }
                k0 += kc;
            }
        }
    });
}

/// Dispatches one matrix product (`y` zero-initialised is not required).
#[allow(clippy::too_many_arguments)]
fn qmm_one<A: Acc>(x: &[A], w: &QMat<'_, A>, m: usize, n: usize, k: usize, transpose: bool, y: &mut [A]) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y.iter_mut().for_each(|v| *v = A::ZERO);
        return;
    }
    if transpose {
        if std::mem::size_of::<A>() == 4 && m <= decode::MAX_M {
            // SAFETY: A is f32 here (the only 4-byte Acc), so the casts are identities.
            let (xf, yf, wf) = unsafe { (cast_slice::<A, f32>(x), cast_slice_mut::<A, f32>(y), cast_qmat::<A>(w)) };
            decode::qmv_t(xf, &wf, m, n, k, yf);
            return;
        }
        qmm_t_panel(x, w, m, n, k, y)
    } else {
        qmm_n_panel(x, w, m, n, k, y)
    }
}

/// # Safety
/// `A` and `B` must be the same type.
unsafe fn cast_slice<A, B>(x: &[A]) -> &[B] {
    std::slice::from_raw_parts(x.as_ptr() as *const B, x.len())
}
/// # Safety
/// `A` and `B` must be the same type.
unsafe fn cast_slice_mut<A, B>(x: &mut [A]) -> &mut [B] {
    std::slice::from_raw_parts_mut(x.as_mut_ptr() as *mut B, x.len())
}
/// # Safety
/// `A` must be f32.
unsafe fn cast_qmat<'a, A>(w: &QMat<'a, A>) -> QMat<'a, f32> {
    QMat { spec: w.spec, wq: w.wq, kw: w.kw, sc: cast_slice(w.sc), bi: w.bi.map(|b| cast_slice(b)), groups: w.groups }
}

/// The prompt-shaped fast path: f32 x of more rows than the decode kernel
/// takes, one matrix of W, f32 output written straight into its buffer.
/// `None` when the operands are not of that form.
#[cfg(target_arch = "x86_64")]
fn qmm_panel_fast(inputs: &[Array], transpose: bool, spec: QuantSpec, out: &OutSpec<'_>) -> Option<Result<Data>> {
    let (x, wqa) = (&inputs[0], &inputs[1]);
    let k = *x.shape().last()?;
    let ws = wqa.shape();
    if !transpose
        || !super::sgemm::available()
        || ws.len() != 2
        || x.dtype() != Dtype::F32
        || out.dtype != Dtype::F32
        || k == 0
        || x.size() / k <= decode::MAX_M
    {
        return None;
    }
    use super::qmv::{dequant_row, Groups};
    let (n, kw, m) = (ws[0], ws[1], x.size() / k);
    let xs = elems::<f32>(x);
    let wq = elems::<u32>(wqa);
    let gs = spec.group_size;
    let groups = spec.unpacked_len(kw) / gs;
    let as_groups = |a: &Array| match a.dtype() {
        Dtype::F32 => Some(Groups::F32(elems::<f32>(a))),
        Dtype::F16 => Some(Groups::F16(elems::<f16>(a))),
        _ => None,
    };
    let run = |decode: &DecodeRow<'_>| -> Result<Data> {
        let buf = Buffer::alloc(m * n * 4)?;
        // SAFETY: sgemm is available; the fresh buffer holds m×n f32 and is
        // written in full before it is shared.
        unsafe { qmm_t_panel_f32(&xs, decode, gs, m, n, k, buf.as_ptr() as *mut f32)? };
        Ok(Data::contiguous(buf, out.shape))
    };
    let direct = spec.mode == QuantMode::Affine && matches!(spec.bits, 4 | 8) && inputs.len() == 4;
    if let (true, Some(sc), Some(bi)) = (direct, as_groups(&inputs[2]), inputs.get(3).and_then(as_groups)) {
        // 4- and 8-bit affine rows expand straight from f32 or f16 scales.
        let decode = |r: usize, g0, g1, out: &mut [f32]| {
            let (row, (s, b)) = (&wq[r * kw..(r + 1) * kw], (row_groups(&sc, r, groups), row_groups(&bi, r, groups)));
            if !dequant_row(row, spec.bits, gs, &s, &b, g0, g1, out) {
                // A group size the vector code does not take: widen this row's values.
                let wide = |g: &Groups<'_>| (0..groups).map(|i| g.get(i)).collect::<Vec<f32>>();
                decode_groups(spec, row, &wide(&s), Some(&wide(&b)), g0, g1, out);
            }
        };
        return Some(run(&decode));
    }
    let sc = scales_acc::<f32>(&inputs[2], spec);
    let bi = inputs.get(3).map(elems_acc::<f32>);
    let w = QMat { spec, wq: &wq, kw, sc: &sc, bi: bi.as_deref(), groups };
    Some(run(&|r, g0, g1, out: &mut [f32]| w.decode(r, g0, g1, out)))
}

/// Row `r`'s `groups` values of per-group scales or biases, borrowed.
#[cfg(target_arch = "x86_64")]
fn row_groups<'a>(g: &'a super::qmv::Groups<'_>, r: usize, groups: usize) -> super::qmv::Groups<'a> {
    use super::qmv::Groups;
    match g {
        Groups::F32(v) => Groups::F32(Cow::Borrowed(&v[r * groups..(r + 1) * groups])),
        Groups::F16(v) => Groups::F16(Cow::Borrowed(&v[r * groups..(r + 1) * groups])),
    }
}

/// The decode-shaped fast path ([`super::qmv`]): f32 x, a single matrix of
/// affine codes, f32 or f16 scales and biases read in place. `None` when
/// the operands are not of that form.
#[cfg(target_arch = "x86_64")]
fn qmv_fast(inputs: &[Array], transpose: bool, spec: QuantSpec, out: &OutSpec<'_>) -> Option<Result<Data>> {
    use super::qmv::{available, qmv, Groups};
    let (x, wqa) = (&inputs[0], &inputs[1]);
    let k = *x.shape().last()?;
    let ws = wqa.shape();
    if !transpose
        || !available()
        || spec.mode != QuantMode::Affine
        || ws.len() != 2
        || x.dtype() != Dtype::F32
        || out.dtype != Dtype::F32
        || inputs.len() != 4
        || k == 0
        || x.size() / k > decode::MAX_M
    {
        return None;
    }
    let (n, kw, m) = (ws[0], ws[1], x.size() / k);
    let groups = |a: &Array| match a.dtype() {
        Dtype::F32 => Some(Groups::F32(elems::<f32>(a))),
        Dtype::F16 => Some(Groups::F16(elems::<f16>(a))),
        _ => None,
    };
    let (Some(sc), Some(bi)) = (groups(&inputs[2]), groups(&inputs[3])) else { return None };
    let xs = elems::<f32>(x);
    let wq = elems::<u32>(wqa);
    let buf = match Buffer::zeroed(m * n * 4) {
        Ok(b) => b,
        Err(e) => return Some(Err(e)),
    };
    // SAFETY: the zeroed buffer holds m·n f32 values.
    let y = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut f32, m * n) };
    if !qmv(&xs, m, k, n, &wq, kw, spec.bits, spec.group_size, &sc, &bi, y) {
        return None;
    }
    Some(Ok(Data::contiguous(buf, out.shape)))
}

fn qmm_typed<A: Acc>(inputs: &[Array], transpose: bool, spec: QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
    #[cfg(target_arch = "x86_64")]
    if std::mem::size_of::<A>() == 4 {
        if let Some(r) = qmv_fast(inputs, transpose, spec, out) {
            return r;
        }
        if let Some(r) = qmm_panel_fast(inputs, transpose, spec, out) {
            return r;
        }
    }
    let (x, wqa) = (&inputs[0], &inputs[1]);
    let k = x.shape()[x.ndim() - 1];
    let ws = wqa.shape();
    let kw = ws[ws.len() - 1];
    let n = out.shape[out.shape.len() - 1];
    let xs = elems_acc::<A>(x);
    let wq = elems::<u32>(wqa);
    let sc = scales_acc::<A>(&inputs[2], spec);
    let bi = inputs.get(3).map(elems_acc::<A>);
    let mut y = vec![A::ZERO; numel(out.shape)];
    // Weights rows × cols of one matrix (stored layout).
    let wrows = ws[ws.len() - 2];
    let (batch, m) = if ws.len() > 2 {
        (numel(&ws[..ws.len() - 2]), x.shape()[x.ndim() - 2])
    } else {
        (1, x.size().checked_div(k).unwrap_or(0))
    };
    let groups = spec.unpacked_len(kw) / spec.group_size;
    for b in 0..batch {
        let w = QMat {
            spec,
            wq: &wq[b * wrows * kw..(b + 1) * wrows * kw],
            kw,
            sc: &sc[b * wrows * groups..(b + 1) * wrows * groups],
            bi: bi.as_ref().map(|v| &v[b * wrows * groups..(b + 1) * wrows * groups]),
            groups,
        };
        let xb = &xs[b * m * k..(b + 1) * m * k];
        let yb = &mut y[b * m * n..(b + 1) * m * n];
        qmm_one(xb, &w, m, n, k, transpose, yb);
    }
    write_out(&y, out)
}

/// `x @ Wᵀ` or `x @ W` from packed codes (`inputs` = x, codes, scales, biases).
pub fn quantized_matmul(inputs: &[Array], transpose: bool, spec: QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
    if out.dtype == Dtype::F64 {
        qmm_typed::<f64>(inputs, transpose, spec, out)
    } else {
        qmm_typed::<f32>(inputs, transpose, spec, out)
    }
}

fn gather_qmm_typed<A: Acc>(inputs: &[Array], transpose: bool, spec: QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
    let nin = inputs.len();
    let (x, wqa) = (&inputs[0], &inputs[1]);
    let li = elems::<u32>(&inputs[nin - 2]);
    let ri = elems::<u32>(&inputs[nin - 1]);
    let k = x.shape()[x.ndim() - 1];
    let m = x.shape()[x.ndim() - 2];
    let ws = wqa.shape();
    let kw = ws[ws.len() - 1];
    let wrows = ws[ws.len() - 2];
    let xcount = numel(&x.shape()[..x.ndim() - 2]);
    let wcount = numel(&ws[..ws.len() - 2]);
    let n = out.shape[out.shape.len() - 1];
    for (&l, &r) in li.iter().zip(ri.iter()) {
        if l as usize >= xcount || r as usize >= wcount {
            return Err(Error::out_of_range(
                "gather_qmm",
                format!("Index pair ({l}, {r}) is out of range for {xcount} lhs and {wcount} rhs matrices."),
            ));
        }
    }
    let xs = elems_acc::<A>(x);
    let wq = elems::<u32>(wqa);
    let sc = scales_acc::<A>(&inputs[2], spec);
    let bi = if spec.mode == QuantMode::Affine { Some(elems_acc::<A>(&inputs[3])) } else { None };
    let groups = spec.unpacked_len(kw) / spec.group_size;
    let mut y = vec![A::ZERO; numel(out.shape)];
    for (i, (&l, &r)) in li.iter().zip(ri.iter()).enumerate() {
        let (l, r) = (l as usize, r as usize);
        let sg = wrows * groups;
        let w = QMat {
            spec,
            wq: &wq[r * wrows * kw..(r + 1) * wrows * kw],
            kw,
            sc: &sc[r * sg..(r + 1) * sg],
            bi: bi.as_ref().map(|v| &v[r * sg..(r + 1) * sg]),
            groups,
        };
        qmm_one(&xs[l * m * k..(l + 1) * m * k], &w, m, n, k, transpose, &mut y[i * m * n..(i + 1) * m * n]);
    }
    write_out(&y, out)
}

/// Gathered quantized matmul (`inputs` = x, codes, scales, [biases], lhs, rhs).
pub fn gather_qmm(inputs: &[Array], transpose: bool, spec: QuantSpec, out: &OutSpec<'_>) -> Result<Data> {
    if out.dtype == Dtype::F64 {
        gather_qmm_typed::<f64>(inputs, transpose, spec, out)
    } else {
        gather_qmm_typed::<f32>(inputs, transpose, spec, out)
    }
}

// ---------------------------------------------------------------- decode kernels

mod decode {
    use super::*;

    /// Words per SIMD chunk (one 512-bit vector of u32).
    const L: usize = 16;
    /// Most rows of x the direct kernel handles at once.
    pub(super) const MAX_M: usize = 8;

    /// `y (m×n) = x (m×k) @ Wᵀ` reading W's codes directly, for few rows of
    /// x (LLM decode). Affine codes of 1, 2, 4 or 8 bits use the chunked
    /// SIMD kernel; other formats decode a row at a time and take dot products.
    pub(super) fn qmv_t(x: &[f32], w: &QMat<'_, f32>, m: usize, n: usize, k: usize, y: &mut [f32]) {
        let spec = w.spec;
        if spec.mode != QuantMode::Affine || 32 % spec.bits != 0 || m > MAX_M {
            return generic(x, w, m, n, k, y);
        }
        let per = (32 / spec.bits) as usize;
        let gs = spec.group_size;
        let kw = w.kw;
        let chunks = kw / L;
        let groups = w.groups;
        // x permuted so that lane l of chunk c, code j reads x[(c·L + l)·per + j].
        let mut xp = vec![0.0f32; m * chunks * per * L];
        for i in 0..m {
            for c in 0..chunks {
                for l in 0..L {
                    for j in 0..per {
                        xp[((i * chunks + c) * per + j) * L + l] = x[i * k + (c * L + l) * per + j];
                    }
                }
            }
        }
        // Σ x over each group, for the bias term.
        let mut xs = vec![0.0f32; m * groups];
        for i in 0..m {
            for g in 0..groups {
                xs[i * groups + g] = x[i * k + g * gs..i * k + (g + 1) * gs].iter().sum();
            }
        }
        let yp = SendPtr(y.as_mut_ptr());
        let (xp, xs) = (&xp[..], &xs[..]);
        parallel_for(n, kw * 2 * m, |range| {
            rows(w, m, n, k, chunks, xp, x, xs, range.start, range.end, yp);
        });
    }

    crate::multiversion! {
        #[allow(clippy::too_many_arguments)]
        fn rows(
            w: &QMat<'_, f32>,
            m: usize,
            n: usize,
            k: usize,
            chunks: usize,
            xp: &[f32],
            x: &[f32],
            xs: &[f32],
            r0: usize,
            r1: usize,
            yp: SendPtr<f32>,
        ) {
            let bits = w.spec.bits;
            let wpg = w.spec.group_size * bits as usize / 32;
            let a = Args { w, m, n, k, chunks, xp, x, xs, wpg };
            match (bits, wpg.min(L)) {
                (4, 4) => rows_t::<4, 8, 4>(&a, r0, r1, yp),
                (4, 8) => rows_t::<4, 8, 8>(&a, r0, r1, yp),
                (4, _) => rows_t::<4, 8, 16>(&a, r0, r1, yp),
                (8, 8) => rows_t::<8, 4, 8>(&a, r0, r1, yp),
                (8, _) => rows_t::<8, 4, 16>(&a, r0, r1, yp),
                (2, 2) => rows_t::<2, 16, 2>(&a, r0, r1, yp),
                (2, 4) => rows_t::<2, 16, 4>(&a, r0, r1, yp),
                (2, _) => rows_t::<2, 16, 8>(&a, r0, r1, yp),
                (1, 1) => rows_t::<1, 32, 1>(&a, r0, r1, yp),
                (1, 2) => rows_t::<1, 32, 2>(&a, r0, r1, yp),
                (_, _) => rows_t::<1, 32, 4>(&a, r0, r1, yp),
            }
        }
    }

    /// The operands of [`rows`].
    struct Args<'a, 'b> {
        w: &'a QMat<'b, f32>,
        m: usize,
        n: usize,
        k: usize,
        chunks: usize,
        xp: &'a [f32],
        x: &'a [f32],
        xs: &'a [f32],
        /// Packed words per group.
        wpg: usize,
    }

    /// Rows `r0..r1` of `y = x @ Wᵀ` for `BITS`-bit codes (`PER` per word),
    /// `WPG` words per group (16 meaning a group spans one or more whole chunks).
    #[inline(always)]
    fn rows_t<const BITS: u32, const PER: usize, const WPG: usize>(
        a: &Args<'_, '_>,
        r0: usize,
        r1: usize,
        yp: SendPtr<f32>,
    ) {
        let mask: u32 = if BITS == 32 { u32::MAX } else { (1u32 << BITS) - 1 };
        let (w, m, k, chunks) = (a.w, a.m, a.k, a.chunks);
        let groups = w.groups;
        for r in r0..r1 {
            let wrow = &w.wq[r * w.kw..(r + 1) * w.kw];
            let srow = &w.sc[r * groups..(r + 1) * groups];
            let brow = &w.bi.expect("affine biases")[r * groups..(r + 1) * groups];
            let mut tot = [[0.0f32; L]; MAX_M];
            for c in 0..chunks {
                let wv: &[u32; L] = wrow[c * L..c * L + L].try_into().expect("a chunk");
                // Each lane's group scale.
                let mut sl = [0.0f32; L];
                if WPG >= L {
                    sl = [srow[c * L / a.wpg]; L];
                } else {
                    let base = c * L / WPG;
                    for (l, s) in sl.iter_mut().enumerate() {
                        *s = srow[base + l / WPG];
                    }
                }
                for (i, t) in tot.iter_mut().enumerate().take(m) {
                    let xc = &a.xp[(i * chunks + c) * PER * L..(i * chunks + c + 1) * PER * L];
                    let mut acc = [0.0f32; L];
                    for j in 0..PER {
                        let xj: &[f32; L] = xc[j * L..j * L + L].try_into().expect("a lane row");
                        for l in 0..L {
                            acc[l] += xj[l] * ((wv[l] >> (BITS as usize * j)) & mask) as i32 as f32;
                        }
                    }
                    for l in 0..L {
                        t[l] += acc[l] * sl[l];
                    }
                }
            }
            for (i, t) in tot.iter().enumerate().take(m) {
                // Words after the last whole chunk.
                let mut tail = 0.0f32;
                for (wi, &wv) in wrow.iter().enumerate().skip(chunks * L) {
                    let mut s = 0.0f32;
                    for j in 0..PER {
                        s += a.x[i * k + wi * PER + j] * ((wv >> (BITS as usize * j)) & mask) as f32;
                    }
                    tail += s * srow[wi / a.wpg];
                }
                let bsum: f32 = brow.iter().zip(&a.xs[i * groups..(i + 1) * groups]).map(|(b, x)| b * x).sum();
                let v = t.iter().sum::<f32>() + tail + bsum;
                // SAFETY: y (m×n) element (i, r) is written by this chunk of rows only.
                unsafe { *yp.get().add(i * a.n + r) = v };
            }
        }
    }

    /// Any format: decode a row of W, then dot it with each row of x.
    fn generic(x: &[f32], w: &QMat<'_, f32>, m: usize, n: usize, k: usize, y: &mut [f32]) {
        let yp = SendPtr(y.as_mut_ptr());
        parallel_for(n, k * m / 4 + 1, |range| {
            let mut row = vec![0.0f32; k];
            for r in range {
                w.decode(r, 0, w.groups, &mut row);
                for i in 0..m {
                    let v = dot(&x[i * k..(i + 1) * k], &row);
                    // SAFETY: y (m×n) element (i, r) is written by this chunk only.
                    unsafe { *yp.get().add(i * n + r) = v };
                }
            }
        });
    }

    crate::multiversion! {
        fn dot(a: &[f32], b: &[f32]) -> f32 {
            let mut acc = [0.0f32; L];
            let n = a.len() / L * L;
            for (ca, cb) in a[..n].chunks_exact(L).zip(b[..n].chunks_exact(L)) {
                for l in 0..L {
                    acc[l] += ca[l] * cb[l];
                }
            }
            let mut s: f32 = acc.iter().sum();
            for i in n..a.len() {
                s += a[i] * b[i];
            }
            s
        }
    }
}
