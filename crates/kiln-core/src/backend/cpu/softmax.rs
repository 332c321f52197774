//! Fused softmax and log-sum-exp along the last axis.
//!
//! Each row takes one pass for the max, one for exp(x - max) (stored into the
//! output) and its sum, and one to scale; the row stays in cache between
//! passes. `math::exp_flush_f32` keeps the exp pass vectorised. Rows are split
//! across threads. Half types are converted to f32 a row at a time; f64 rows
//! use f64 arithmetic.

use super::math::exp_flush_f32 as exp_f32;
use super::reduce::{contiguous, slice_of};
use super::simd::{parallel_for, SendPtr};
use super::strided::alloc_out;
use crate::array::{Array, Data};
use crate::dtype::{bf16, f16, Dtype};
use crate::error::{Error, Result};
use crate::primitive::OutSpec;

const LANES: usize = 32;

crate::multiversion! {
    fn row_max(x: &[f32]) -> f32 {
        let mut acc = [f32::NEG_INFINITY; LANES];
        let mut nan = [false; LANES];
        let mut ch = x.chunks_exact(LANES);
        for c in &mut ch {
            for k in 0..LANES {
                acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
                nan[k] |= c[k].is_nan();
            }
        }
        let mut any_nan = nan.iter().any(|&b| b);
        let mut w = LANES / 2;
        while w > 0 {
            for k in 0..w {
                acc[k] = if acc[k + w] > acc[k] { acc[k + w] } else { acc[k] };
            }
            w /= 2;
        }
        let mut m = acc[0];
        for &v in ch.remainder() {
            m = if v > m { v } else { m };
            any_nan |= v.is_nan();
        }
        if any_nan { f32::NAN } else { m }
    }
}

crate::multiversion! {
    fn exp_sum(x: &[f32], m: f32, out: &mut [f32]) -> f32 {
        let mut acc = [0f32; LANES];
        let mut xc = x.chunks_exact(LANES);
        let mut oc = out.chunks_exact_mut(LANES);
        for (c, o) in (&mut xc).zip(&mut oc) {
            for k in 0..LANES {
                let e = exp_f32(c[k] - m);
                o[k] = e;
                acc[k] += e;
            }
        }
        let mut s = tree_sum(&mut acc);
        for (&v, o) in xc.remainder().iter().zip(oc.into_remainder()) {
            let e = exp_f32(v - m);
            *o = e;
            s += e;
        }
        s
    }
}

crate::multiversion! {
    fn exp_sum_only(x: &[f32], m: f32) -> f32 {
        let mut acc = [0f32; LANES];
        let mut xc = x.chunks_exact(LANES);
        for c in &mut xc {
            for k in 0..LANES {
                acc[k] += exp_f32(c[k] - m);
            }
        }
        let mut s = tree_sum(&mut acc);
        for &v in xc.remainder() {
            s += exp_f32(v - m);
        }
        s
    }
}

crate::multiversion! {
    fn scale(out: &mut [f32], s: f32) {
        for o in out.iter_mut() {
            *o *= s;
        }
    }
}

fn softmax_row_f32(x: &[f32], out: &mut [f32]) {
    let m = row_max(x);
    let s = exp_sum(x, m, out);
    scale(out, 1.0 / s);
}

fn lse_row_f32(x: &[f32]) -> f32 {
    let m = row_max(x);
    if m.is_infinite() {
        return m;
    }
    m + exp_sum_only(x, m).ln()
}

fn softmax_row_f64(x: &[f64], out: &mut [f64]) {
    let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| if b > a || b.is_nan() { b } else { a });
    let mut s = 0.0;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = (v - m).exp();
        s += *o;
    }
    let r = 1.0 / s;
    for o in out.iter_mut() {
        *o *= r;
    }
}

fn lse_row_f64(x: &[f64]) -> f64 {
    let m = x.iter().fold(f64::NEG_INFINITY, |a, &b| if b > a || b.is_nan() { b } else { a });
    if m.is_infinite() {
        return m;
    }
    m + x.iter().map(|&v| (v - m).exp()).sum::<f64>().ln()
}

/// Sums the lanes pairwise (log depth).
#[inline(always)]
fn tree_sum(acc: &mut [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for k in 0..w {
            acc[k] += acc[k + w];
        }
        w /= 2;
    }
    acc[0]
}

/// A half type converted a row at a time.
trait Half: Copy + Send + Sync {
    fn to(self) -> f32;
    fn from(x: f32) -> Self;
}
impl Half for f16 {
    fn to(self) -> f32 {
        self.to_f32()
    }
    fn from(x: f32) -> Self {
        f16::from_f32(x)
    }
}
impl Half for bf16 {
    fn to(self) -> f32 {
        self.to_f32()
    }
    fn from(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

fn rows_of(x: &Array) -> (usize, usize) {
    let n = *x.shape().last().unwrap_or(&1);
    let n = if x.ndim() == 0 { 1 } else { n };
    (x.size().checked_div(n).unwrap_or(0), n)
}

fn softmax_half<H: Half>(src: &[H], dst: SendPtr<H>, rows: usize, n: usize) {
    parallel_for(rows, n * 16, |range| {
        let mut a = vec![0f32; n];
        let mut b = vec![0f32; n];
        for r in range {
            for (t, &v) in a.iter_mut().zip(&src[r * n..(r + 1) * n]) {
                *t = v.to();
            }
            softmax_row_f32(&a, &mut b);
            // SAFETY: row r of the output belongs to this task.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * n), n) };
            for (o, &v) in o.iter_mut().zip(&b) {
                *o = H::from(v);
            }
        }
    });
}

/// Softmax along the last axis.
pub fn softmax(x: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let d = contiguous(x)?;
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    let (rows, n) = rows_of(x);
    if rows == 0 {
        return Ok(data);
    }
    let sz = x.size();
    match x.dtype() {
        Dtype::F32 => {
            let src = slice_of::<f32>(&d, sz);
            let dst = SendPtr(data.ptr::<f32>());
            parallel_for(rows, n * 16, |range| {
                for r in range {
                    // SAFETY: row r of the output belongs to this task.
                    let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * n), n) };
                    softmax_row_f32(&src[r * n..(r + 1) * n], o);
                }
            });
        }
        Dtype::F64 => {
            let src = slice_of::<f64>(&d, sz);
            let dst = SendPtr(data.ptr::<f64>());
            parallel_for(rows, n * 32, |range| {
                for r in range {
                    // SAFETY: row r of the output belongs to this task.
                    let o = unsafe { std::slice::from_raw_parts_mut(dst.get().add(r * n), n) };
                    softmax_row_f64(&src[r * n..(r + 1) * n], o);
                }
            });
        }
        Dtype::F16 => softmax_half::<f16>(slice_of(&d, sz), SendPtr(data.ptr()), rows, n),
        Dtype::BF16 => softmax_half::<bf16>(slice_of(&d, sz), SendPtr(data.ptr()), rows, n),
        dt => return Err(Error::unsupported("softmax", format!("No CPU kernel for {dt}."))),
    }
    Ok(data)
}

/// log(sum(exp(x))) along the last axis (one value per row).
pub fn logsumexp(x: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let d = contiguous(x)?;
    let (rows, n) = rows_of(x);
    let rows = if n == 0 { numel_out(out) } else { rows };
    let sz = x.size();
    let vals: Vec<f64> = match x.dtype() {
        Dtype::F64 => {
            let src = slice_of::<f64>(&d, sz);
            par_rows(rows, n, |r| if n == 0 { f64::NEG_INFINITY } else { lse_row_f64(&src[r * n..(r + 1) * n]) })
        }
        Dtype::F32 => {
            let src = slice_of::<f32>(&d, sz);
            par_rows(rows, n, |r| if n == 0 { f64::NEG_INFINITY } else { lse_row_f32(&src[r * n..(r + 1) * n]) as f64 })
        }
        Dtype::F16 => half_lse::<f16>(slice_of(&d, sz), rows, n),
        Dtype::BF16 => half_lse::<bf16>(slice_of(&d, sz), rows, n),
        dt => return Err(Error::unsupported("logsumexp", format!("No CPU kernel for {dt}."))),
    };
    super::reduce::write_out(&vals, out)
}

fn numel_out(out: &OutSpec<'_>) -> usize {
    crate::shape::numel(out.shape)
}

fn half_lse<H: Half>(src: &[H], rows: usize, n: usize) -> Vec<f64> {
    par_rows(rows, n, |r| {
        if n == 0 {
            return f64::NEG_INFINITY;
        }
        let a: Vec<f32> = src[r * n..(r + 1) * n].iter().map(|v| v.to()).collect();
        lse_row_f32(&a) as f64
    })
}

fn par_rows(rows: usize, n: usize, f: impl Fn(usize) -> f64 + Sync + Send) -> Vec<f64> {
    let mut out = vec![0f64; rows];
    let p = SendPtr(out.as_mut_ptr());
    parallel_for(rows, n.max(1) * 16, |range| {
        for r in range {
            // SAFETY: each row writes its own slot.
            unsafe { *p.get().add(r) = f(r) };
        }
    });
    out
}
