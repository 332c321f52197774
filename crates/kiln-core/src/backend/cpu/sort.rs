//! Sorting and selection along one axis, parallel over lines.
//!
//! Real dtypes map each value to an unsigned integer key whose order is
//! MLX's order (numeric, `-0.0 == 0.0`, every NaN equal and after `+inf`),
//! then sort lines with a stable LSD radix sort on the key (11-bit digits,
//! passes whose digit is constant across the line skipped; values are
//! decoded back from sorted keys alone unless the line holds a NaN or -0.0,
//! whose keys merge bit patterns, when the values travel with the keys), or, for short
//! lines, an unstable sort of `key << 32 | index` (the index tie-break makes
//! it stable). Partition selects on the same combined key, so `partition`
//! and `argpartition` produce the same permutation (the gradient of
//! `partition` relies on it). Complex numbers use a comparator
//! (lexicographic, NaN last).

use super::reduce::{contiguous, slice_of, split_at_axis};
use super::simd::{parallel_for, SendPtr};
use super::strided::alloc_out;
use crate::array::{Array, Data};
use crate::dtype::{bf16, c64, f16, Dtype, Element};
use crate::error::Result;
use crate::primitive::OutSpec;
use std::cmp::Ordering;

/// What a sort kernel produces for each line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortMode {
    /// Sorted values.
    Values,
    /// The stable sorting permutation (uint32).
    Indices,
    /// Values partitioned around element `kth`.
    PartValues(usize),
    /// Indices partitioned around element `kth` (uint32).
    PartIndices(usize),
}

impl SortMode {
    fn indices(self) -> bool {
        matches!(self, SortMode::Indices | SortMode::PartIndices(_))
    }
}

/// An order-preserving unsigned key.
trait Key: Copy + Ord + Send + Sync + Default {
    /// Radix passes of [`DIGIT_BITS`] bits.
    const PASSES: usize;
    /// The key combined with a line index (key in the high half).
    type Wide: Copy + Ord + Send;
    fn digit(self, p: usize) -> usize;
    fn wide(self, i: u32) -> Self::Wide;
    fn index(w: Self::Wide) -> u32;
}

/// Bits per radix digit (a 2048-entry histogram stays in L1).
const DIGIT_BITS: usize = 11;
const RADIX: usize = 1 << DIGIT_BITS;

impl Key for u32 {
    const PASSES: usize = 3;
    type Wide = u64;
    #[inline(always)]
    fn digit(self, p: usize) -> usize {
        ((self >> (DIGIT_BITS * p)) as usize) & (RADIX - 1)
    }
    #[inline(always)]
    fn wide(self, i: u32) -> u64 {
        ((self as u64) << 32) | i as u64
    }
    #[inline(always)]
    fn index(w: u64) -> u32 {
        w as u32
    }
}

impl Key for u64 {
    const PASSES: usize = 6;
    type Wide = u128;
    #[inline(always)]
    fn digit(self, p: usize) -> usize {
        ((self >> (DIGIT_BITS * p)) as usize) & (RADIX - 1)
    }
    #[inline(always)]
    fn wide(self, i: u32) -> u128 {
        ((self as u128) << 32) | i as u128
    }
    #[inline(always)]
    fn index(w: u128) -> u32 {
        w as u32
    }
}

#[inline(always)]
fn f32_key(v: f32) -> u32 {
    // `+ 0.0` turns -0.0 into +0.0 so the two compare equal (stable order).
    let b = (v + 0.0).to_bits();
    let k = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
    if v.is_nan() {
        u32::MAX
    } else {
        k
    }
}

#[inline(always)]
fn f64_key(v: f64) -> u64 {
    let b = (v + 0.0).to_bits();
    let k = if b >> 63 == 1 { !b } else { b | (1 << 63) };
    if v.is_nan() {
        u64::MAX
    } else {
        k
    }
}

/// A real element type with its sort key.
trait Keyed: Element {
    type K: Key;
    fn key(self) -> Self::K;
    /// The value of a key, for lines where [`Keyed::plain`] holds.
    fn from_key(k: Self::K) -> Self;
    /// Whether `key` is invertible on this line (floats: no NaN, no -0.0,
    /// whose keys merge several bit patterns).
    fn plain(_line: &[Self]) -> bool {
        true
    }
}

#[inline(always)]
fn f32_from_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

#[inline(always)]
fn f64_from_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

fn plain_f32(line: impl Iterator<Item = f32>) -> bool {
    let mut bad = false;
    for v in line {
        bad |= v.is_nan() | (v.to_bits() == 0x8000_0000);
    }
    !bad
}

macro_rules! keyed {
    ($t:ty, $k:ty, |$v:ident| $e:expr, |$kk:ident| $d:expr) => {
        impl Keyed for $t {
            type K = $k;
            #[inline(always)]
            fn key(self) -> $k {
                let $v = self;
                $e
            }
            #[inline(always)]
            fn from_key($kk: $k) -> $t {
                $d
            }
        }
    };
    ($t:ty, $k:ty, |$v:ident| $e:expr, |$kk:ident| $d:expr, |$l:ident| $p:expr) => {
        impl Keyed for $t {
            type K = $k;
            #[inline(always)]
            fn key(self) -> $k {
                let $v = self;
                $e
            }
            #[inline(always)]
            fn from_key($kk: $k) -> $t {
                $d
            }
            fn plain($l: &[$t]) -> bool {
                $p
            }
        }
    };
}
keyed!(bool, u32, |v| v as u32, |k| k != 0);
keyed!(u8, u32, |v| v as u32, |k| k as u8);
keyed!(u16, u32, |v| v as u32, |k| k as u16);
keyed!(u32, u32, |v| v, |k| k);
keyed!(u64, u64, |v| v, |k| k);
keyed!(i8, u32, |v| (v as i32 as u32) ^ 0x8000_0000, |k| (k ^ 0x8000_0000) as i32 as i8);
keyed!(i16, u32, |v| (v as i32 as u32) ^ 0x8000_0000, |k| (k ^ 0x8000_0000) as i32 as i16);
keyed!(i32, u32, |v| (v as u32) ^ 0x8000_0000, |k| (k ^ 0x8000_0000) as i32);
keyed!(i64, u64, |v| (v as u64) ^ (1 << 63), |k| (k ^ (1 << 63)) as i64);
keyed!(f16, u32, |v| f32_key(v.to_f32()), |k| f16::from_f32(f32_from_key(k)), |l| plain_f32(
    l.iter().map(|v| v.to_f32())
));
keyed!(bf16, u32, |v| f32_key(v.to_f32()), |k| bf16::from_f32(f32_from_key(k)), |l| plain_f32(
    l.iter().map(|v| v.to_f32())
));
keyed!(f32, u32, |v| f32_key(v), |k| f32_from_key(k), |l| plain_f32(l.iter().copied()));
keyed!(f64, u64, |v| f64_key(v), |k| f64_from_key(k), |l| {
    let mut bad = false;
    for &v in l {
        bad |= v.is_nan() | (v.to_bits() == 1 << 63);
    }
    !bad
});

/// Lines shorter than this use a comparison sort on the combined key.
const RADIX_MIN: usize = 256;

/// Stable LSD radix sort of `keys` carrying `pay` (`P = ()` sorts keys
/// alone); `tk`/`tp` are scratch of the same length.
fn radix<K: Key, P: Copy>(keys: &mut Vec<K>, pay: &mut Vec<P>, tk: &mut Vec<K>, tp: &mut Vec<P>) {
    let n = keys.len();
    assert!(pay.len() == n && tk.len() == n && tp.len() == n && n < u32::MAX as usize);
    let mut hist = vec![[0u32; RADIX]; K::PASSES];
    for &k in keys.iter() {
        for (p, h) in hist.iter_mut().enumerate() {
            h[k.digit(p)] += 1;
        }
    }
    for (p, h) in hist.iter().enumerate() {
        if h.iter().any(|&c| c as usize == n) {
            continue; // every key has the same digit here
        }
        let mut off = [0u32; RADIX];
        let mut acc = 0u32;
        for (o, &c) in off.iter_mut().zip(h.iter()) {
            *o = acc;
            acc += c;
        }
        let (dk, dp) = (tk.as_mut_ptr(), tp.as_mut_ptr());
        for (&k, &v) in keys.iter().zip(pay.iter()) {
            let d = k.digit(p);
            let o = off[d] as usize;
            off[d] += 1;
            // SAFETY: off[d] starts at the number of keys with a smaller
            // digit and is bumped once per key with digit d, so every o is
            // below n = tk.len() = tp.len() (asserted above).
            unsafe {
                *dk.add(o) = k;
                *dp.add(o) = v;
            }
        }
        std::mem::swap(keys, tk);
        std::mem::swap(pay, tp);
    }
}

/// Per-thread scratch for one line.
struct Scratch<K, T> {
    keys: Vec<K>,
    tk: Vec<K>,
    vals: Vec<T>,
    tv: Vec<T>,
    idx: Vec<u32>,
    ti: Vec<u32>,
    line: Vec<T>,
}

impl<K: Key, T: Element> Scratch<K, T> {
    fn new() -> Self {
        Scratch { keys: vec![], tk: vec![], vals: vec![], tv: vec![], idx: vec![], ti: vec![], line: vec![] }
    }
}

/// Sorts one line (`line`, length n) into `out_v` (values) or `out_i` (indices).
fn keyed_line<T: Keyed>(
    s: &mut Scratch<T::K, T>,
    mode: SortMode,
    out_v: &mut dyn FnMut(usize, T),
    out_i: &mut dyn FnMut(usize, u32),
) {
    let n = s.line.len();
    match mode {
        SortMode::Values | SortMode::Indices if n >= RADIX_MIN => {
            s.keys.clear();
            s.keys.extend(s.line.iter().map(|v| v.key()));
            s.tk.resize(n, T::K::default());
            if mode == SortMode::Values && T::plain(&s.line) {
                let mut unit = vec![(); n];
                let mut tunit = vec![(); n];
                radix(&mut s.keys, &mut unit, &mut s.tk, &mut tunit);
                for (k, &key) in s.keys.iter().enumerate() {
                    out_v(k, T::from_key(key));
                }
            } else if mode == SortMode::Values {
                s.vals.clear();
                s.vals.extend_from_slice(&s.line);
                s.tv.resize(n, T::default());
                radix(&mut s.keys, &mut s.vals, &mut s.tk, &mut s.tv);
                for (k, &v) in s.vals.iter().enumerate() {
                    out_v(k, v);
                }
            } else {
                s.idx.clear();
                s.idx.extend(0..n as u32);
                s.ti.resize(n, 0);
                radix(&mut s.keys, &mut s.idx, &mut s.tk, &mut s.ti);
                for (k, &i) in s.idx.iter().enumerate() {
                    out_i(k, i);
                }
            }
        }
        _ => {
            let mut w: Vec<<T::K as Key>::Wide> =
                s.line.iter().enumerate().map(|(i, v)| v.key().wide(i as u32)).collect();
            match mode {
                SortMode::PartValues(k) | SortMode::PartIndices(k) => {
                    if n > 0 {
                        w.select_nth_unstable(k);
                    }
                }
                _ => w.sort_unstable(),
            }
            for (k, &x) in w.iter().enumerate() {
                let i = T::K::index(x);
                if mode.indices() {
                    out_i(k, i);
                } else {
                    out_v(k, s.line[i as usize]);
                }
            }
        }
    }
}

/// MLX's complex order: lexicographic, any NaN last (NaNs equal).
fn complex_order(a: &c64, b: &c64) -> Ordering {
    let (an, bn) = (a.re.is_nan() || a.im.is_nan(), b.re.is_nan() || b.im.is_nan());
    match (an, bn) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => (a.re, a.im).partial_cmp(&(b.re, b.im)).unwrap_or(Ordering::Equal),
    }
}

fn complex_line(line: &[c64], mode: SortMode, out_v: &mut dyn FnMut(usize, c64), out_i: &mut dyn FnMut(usize, u32)) {
    let mut idx: Vec<u32> = (0..line.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| complex_order(&line[*a as usize], &line[*b as usize]).then(a.cmp(b));
    match mode {
        SortMode::PartValues(k) | SortMode::PartIndices(k) => {
            if !idx.is_empty() {
                idx.select_nth_unstable_by(k, cmp);
            }
        }
        _ => idx.sort_by(cmp),
    }
    for (k, &i) in idx.iter().enumerate() {
        if mode.indices() {
            out_i(k, i);
        } else {
            out_v(k, line[i as usize]);
        }
    }
}

/// Runs `per_line` over every line along `axis`, writing into a fresh output.
fn run_lines<T: Element>(
    x: &Array,
    axis: usize,
    mode: SortMode,
    out: &OutSpec<'_>,
    per_line: impl Fn(&[T], &mut dyn FnMut(usize, T), &mut dyn FnMut(usize, u32)) + Sync,
) -> Result<Data> {
    let d = contiguous(x)?;
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    if x.size() == 0 {
        return Ok(data);
    }
    let src = slice_of::<T>(&d, x.size());
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let (pv, pi) = (SendPtr(data.ptr::<T>()), SendPtr(data.ptr::<u32>()));
    let indices = mode.indices();
    parallel_for(outer * inner, n * 16, |range| {
        let mut line: Vec<T> = Vec::with_capacity(n);
        for t in range {
            let (o, i) = (t / inner, t % inner);
            let base = o * n * inner + i;
            line.clear();
            if inner == 1 {
                line.extend_from_slice(&src[base..base + n]);
            } else {
                line.extend((0..n).map(|k| src[base + k * inner]));
            }
            let mut wv = |k: usize, v: T| {
                debug_assert!(!indices && k < n);
                // SAFETY: line (o, i) owns output positions base + k * inner, k < n.
                unsafe { *pv.get().add(base + k * inner) = v };
            };
            let mut wi = |k: usize, v: u32| {
                debug_assert!(indices && k < n);
                // SAFETY: as above; the output is uint32 in index modes.
                unsafe { *pi.get().add(base + k * inner) = v };
            };
            per_line(&line, &mut wv, &mut wi);
        }
    });
    Ok(data)
}

fn run_keyed<T: Keyed>(x: &Array, axis: usize, mode: SortMode, out: &OutSpec<'_>) -> Result<Data> {
    run_lines::<T>(x, axis, mode, out, |line, wv, wi| {
        let mut s = Scratch::<T::K, T>::new();
        s.line.extend_from_slice(line);
        keyed_line(&mut s, mode, wv, wi);
    })
}

/// Sorts or partitions `x` along `axis` as `mode` says.
pub fn sort(x: &Array, axis: usize, mode: SortMode, out: &OutSpec<'_>) -> Result<Data> {
    match x.dtype() {
        Dtype::Bool => run_keyed::<bool>(x, axis, mode, out),
        Dtype::U8 => run_keyed::<u8>(x, axis, mode, out),
        Dtype::U16 => run_keyed::<u16>(x, axis, mode, out),
        Dtype::U32 => run_keyed::<u32>(x, axis, mode, out),
        Dtype::U64 => run_keyed::<u64>(x, axis, mode, out),
        Dtype::I8 => run_keyed::<i8>(x, axis, mode, out),
        Dtype::I16 => run_keyed::<i16>(x, axis, mode, out),
        Dtype::I32 => run_keyed::<i32>(x, axis, mode, out),
        Dtype::I64 => run_keyed::<i64>(x, axis, mode, out),
        Dtype::F16 => run_keyed::<f16>(x, axis, mode, out),
        Dtype::BF16 => run_keyed::<bf16>(x, axis, mode, out),
        Dtype::F32 => run_keyed::<f32>(x, axis, mode, out),
        Dtype::F64 => run_keyed::<f64>(x, axis, mode, out),
        Dtype::C64 => run_lines::<c64>(x, axis, mode, out, |line, wv, wi| complex_line(line, mode, wv, wi)),
    }
}

fn take_lines<T: Element>(x: &[T], idx: &[u32], dst: SendPtr<T>, outer: usize, n: usize, m: usize, inner: usize) {
    parallel_for(outer * inner, m * 2, |range| {
        for t in range {
            let (o, i) = (t / inner, t % inner);
            let (sb, db) = (o * n * inner + i, o * m * inner + i);
            for k in 0..m {
                let j = (idx[db + k * inner] as usize).min(n - 1);
                // SAFETY: line (o, i) owns output positions db + k * inner, k < m.
                unsafe { *dst.get().add(db + k * inner) = x[sb + j * inner] };
            }
        }
    });
}

/// `out[.., k, ..] = x[.., idx[.., k, ..], ..]` along `axis` (`idx` uint32,
/// shaped like `x` except along `axis`; indices are clamped to the axis).
pub fn take_along(x: &Array, idx: &Array, axis: usize, out: &OutSpec<'_>) -> Result<Data> {
    let dx = contiguous(x)?;
    let di = contiguous(idx)?;
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    if idx.size() == 0 || x.shape()[axis] == 0 {
        return Ok(data);
    }
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let m = idx.shape()[axis];
    let ii = slice_of::<u32>(&di, idx.size());
    crate::dispatch_dtype!(x.dtype(), T => take_lines::<T>(slice_of::<T>(&dx, x.size()), ii, SendPtr(data.ptr::<T>()), outer, n, m, inner));
    Ok(data)
}
