//! Sorting and selection along one axis, parallel over lines.
//!
//! Real dtypes map each value to an unsigned integer key whose order is
//! MLX's order (numeric, `-0.0 == 0.0`, every NaN equal and after `+inf`).
//! Lines of [`RADIX_MIN`] or more elements are sorted by a stable radix sort
//! on the key: one MSD pass scatters the line into 2048 buckets by the top
//! 11 key bits (in parallel over parts of the line when a single long line is
//! sorted), then every bucket, now small enough to stay in cache, is finished
//! by an LSD radix sort on the remaining bits (11-bit digits, digits constant
//! across the bucket skipped; tiny buckets by insertion sort), buckets shared
//! among threads. Values are decoded back from the sorted keys alone unless
//! the line holds a NaN or -0.0 (whose keys merge bit patterns), when the
//! values travel with the keys; indices always travel. Shorter lines use an
//! unstable sort of `key << 32 | index` (the index tie-break makes it stable).
//! Partition selects on the same combined key, so `partition` and
//! `argpartition` produce the same permutation (the gradient of `partition`
//! relies on it). Complex numbers use a comparator (lexicographic, NaN last).

use super::reduce::{contiguous, slice_of, split_at_axis};
use super::simd::{num_threads, parallel_for, SendPtr};
use super::strided::alloc_out;
use crate::array::{Array, Data};
use crate::dtype::{bf16, c64, f16, Dtype, Element};
use crate::error::Result;
use crate::primitive::OutSpec;
use std::cmp::Ordering;
use std::ops::{BitAnd, BitXor, Not, Shr};

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
trait Key:
    Copy
    + Ord
    + Send
    + Sync
    + Default
    + BitAnd<Output = Self>
    + BitXor<Output = Self>
    + Not<Output = Self>
    + Shr<u32, Output = Self>
{
    /// Bits in the key.
    const BITS: u32;
    /// The top bit alone.
    const SIGN: Self;
    /// The key combined with a line index (key in the high half).
    type Wide: Copy + Ord + Send;
    /// The low bits as a usize (truncating).
    fn low(self) -> usize;
    fn wide(self, i: u32) -> Self::Wide;
    fn index(w: Self::Wide) -> u32;
}

macro_rules! key {
    ($($k:ty => $w:ty),*) => {$(
        impl Key for $k {
            const BITS: u32 = <$k>::BITS;
            const SIGN: $k = 1 << (<$k>::BITS - 1);
            type Wide = $w;
            #[inline(always)]
            fn low(self) -> usize {
                self as usize
            }
            #[inline(always)]
            fn wide(self, i: u32) -> $w {
                ((self as $w) << 32) | i as $w
            }
            #[inline(always)]
            fn index(w: $w) -> u32 {
                w as u32
            }
        }
    )*};
}
key!(u32 => u64, u64 => u128);

/// Bits per LSD radix digit (a 2048-entry histogram stays in L1).
const DIGIT_BITS: u32 = 11;
const RADIX: usize = 1 << DIGIT_BITS;

/// `width` bits of `k` from bit `lo`.
#[inline(always)]
fn digit<K: Key>(k: K, lo: u32, width: u32) -> usize {
    (k >> lo).low() & ((1 << width) - 1)
}

/// The key of IEEE bits `b` (of a value that is not -0.0): negatives have
/// every bit flipped, non-negatives the sign bit set, NaNs the largest key.
#[inline(always)]
fn ieee_key<K: Key>(b: K, nan: bool) -> K {
    let k = if b & K::SIGN == K::default() { b ^ K::SIGN } else { !b };
    if nan {
        !K::default()
    } else {
        k
    }
}

/// The IEEE bits of a key made by [`ieee_key`] from a non-NaN value.
#[inline(always)]
fn ieee_bits<K: Key>(k: K) -> K {
    if k & K::SIGN == K::default() {
        !k
    } else {
        k ^ K::SIGN
    }
}

/// A real element type with its sort key.
trait Keyed: Element {
    type K: Key;
    fn key(self) -> Self::K;
    /// The value of a key of a value that is not [`Keyed::ambiguous`].
    fn from_key(k: Self::K) -> Self;
    /// Whether other bit patterns share this value's key (NaN, -0.0), so
    /// that [`Keyed::from_key`] cannot restore it.
    #[inline(always)]
    fn ambiguous(self) -> bool {
        false
    }
}

/// Integers: the bits widened, the sign bit flipped for signed types.
macro_rules! int_keyed {
    ($($t:ty => $k:ty, $flip:expr);*) => {$(
        impl Keyed for $t {
            type K = $k;
            #[inline(always)]
            fn key(self) -> $k {
                (self as $k) ^ $flip
            }
            #[inline(always)]
            fn from_key(k: $k) -> $t {
                (k ^ $flip) as $t
            }
        }
    )*};
}
int_keyed!(u8 => u32, 0; u16 => u32, 0; u32 => u32, 0; u64 => u64, 0;
    i8 => u32, 1 << 31; i16 => u32, 1 << 31; i32 => u32, 1 << 31; i64 => u64, 1 << 63);

/// Floats: [`ieee_key`] of the bits (`+ 0.0` turns -0.0 into +0.0).
macro_rules! float_keyed {
    ($($t:ty => $k:ty),*) => {$(
        impl Keyed for $t {
            type K = $k;
            #[inline(always)]
            fn key(self) -> $k {
                ieee_key((self + 0.0).to_bits(), self.is_nan())
            }
            #[inline(always)]
            fn from_key(k: $k) -> $t {
                <$t>::from_bits(ieee_bits(k))
            }
            #[inline(always)]
            fn ambiguous(self) -> bool {
                self.is_nan() | (self.to_bits() == <$k as Key>::SIGN)
            }
        }
    )*};
}
float_keyed!(f32 => u32, f64 => u64);

/// Half-precision floats: the key of their f32 value.
macro_rules! half_keyed {
    ($($t:ty),*) => {$(
        impl Keyed for $t {
            type K = u32;
            #[inline(always)]
            fn key(self) -> u32 {
                self.to_f32().key()
            }
            #[inline(always)]
            fn from_key(k: u32) -> $t {
                <$t>::from_f32(f32::from_key(k))
            }
            #[inline(always)]
            fn ambiguous(self) -> bool {
                self.to_f32().ambiguous()
            }
        }
    )*};
}
half_keyed!(f16, bf16);

impl Keyed for bool {
    type K = u32;
    #[inline(always)]
    fn key(self) -> u32 {
        self as u32
    }
    #[inline(always)]
    fn from_key(k: u32) -> bool {
        k != 0
    }
}

/// Lines shorter than this use a comparison sort on the combined key.
const RADIX_MIN: usize = 256;
/// Buckets up to this size are finished by insertion sort.
const INSERTION_MAX: usize = 32;
/// Bits of the MSD digit.
const TOP_BITS: u32 = 11;
/// Fewest elements per part when one line is split across threads.
const PART_MIN: usize = 1 << 16;

/// Runs `f(p)` for every `p < parts` (in parallel when there are several;
/// one part runs on the calling thread) and returns the results in order.
fn each_part<R: Send>(parts: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    if parts <= 1 {
        return (0..parts).map(&f).collect();
    }
    let mut res: Vec<Option<R>> = (0..parts).map(|_| None).collect();
    rayon::scope(|s| {
        let f = &f;
        for (p, r) in res.iter_mut().enumerate() {
            s.spawn(move |_| *r = Some(f(p)));
        }
    });
    res.into_iter().map(|r| r.expect("every part ran")).collect()
}

/// Stable insertion sort of `k` carrying `p`.
fn insertion<K: Key, P: Copy>(k: &mut [K], p: &mut [P]) {
    for i in 1..k.len() {
        let (x, y) = (k[i], p[i]);
        let mut j = i;
        while j > 0 && k[j - 1] > x {
            k[j] = k[j - 1];
            p[j] = p[j - 1];
            j -= 1;
        }
        k[j] = x;
        p[j] = y;
    }
}

/// Scratch of the per-bucket LSD sort.
struct Lsd<K, P> {
    tk: Vec<K>,
    tp: Vec<P>,
    hist: Vec<[u32; RADIX]>,
}

impl<K: Key, P: Copy> Lsd<K, P> {
    fn new() -> Self {
        Lsd { tk: vec![], tp: vec![], hist: vec![] }
    }

    /// Stable sort of the bucket `k` (carrying `p`) whose keys agree above
    /// their low `bits` bits: LSD radix on those bits, digits that are
    /// constant across the bucket skipped.
    fn sort(&mut self, k: &mut [K], p: &mut [P], bits: u32) {
        let m = k.len();
        if m <= INSERTION_MAX {
            insertion(k, p);
            return;
        }
        let passes = bits.div_ceil(DIGIT_BITS) as usize;
        self.hist.clear();
        self.hist.resize(passes, [0; RADIX]);
        for &x in k.iter() {
            for (q, h) in self.hist.iter_mut().enumerate() {
                h[digit(x, q as u32 * DIGIT_BITS, DIGIT_BITS)] += 1;
            }
        }
        self.tk.resize(m, K::default());
        self.tp.resize(m, p[0]);
        let mut flips = 0;
        {
            let (mut ak, mut ap) = (&mut *k, &mut *p);
            let (mut bk, mut bp) = (&mut self.tk[..m], &mut self.tp[..m]);
            for (q, h) in self.hist.iter().enumerate() {
                if h.iter().any(|&c| c as usize == m) {
                    continue; // every key has the same digit here
                }
                let mut off = [0u32; RADIX];
                let mut acc = 0u32;
                for (o, &c) in off.iter_mut().zip(h.iter()) {
                    *o = acc;
                    acc += c;
                }
                let lo = q as u32 * DIGIT_BITS;
                for (&x, &y) in ak.iter().zip(ap.iter()) {
                    let d = digit(x, lo, DIGIT_BITS);
                    let o = off[d] as usize;
                    off[d] += 1;
                    // SAFETY: off[d] starts at the number of keys with a
                    // smaller digit and grows once per key with digit d, so
                    // o < m = bk.len() = bp.len().
                    unsafe {
                        *bk.get_unchecked_mut(o) = x;
                        *bp.get_unchecked_mut(o) = y;
                    }
                }
                std::mem::swap(&mut ak, &mut bk);
                std::mem::swap(&mut ap, &mut bp);
                flips += 1;
            }
        }
        if flips % 2 == 1 {
            k.copy_from_slice(&self.tk[..m]);
            p.copy_from_slice(&self.tp[..m]);
        }
    }
}

/// One line's output: sorted values or uint32 indices.
enum LineOut<'a, T> {
    Values(&'a mut [T]),
    Indices(&'a mut [u32]),
}

impl<T: Copy> LineOut<'_, T> {
    /// Writes the line permuted by `idx` (values) or `idx` itself (indices).
    fn permuted(self, line: &[T], idx: impl Iterator<Item = u32>) {
        match self {
            LineOut::Values(o) => o.iter_mut().zip(idx).for_each(|(d, i)| *d = line[i as usize]),
            LineOut::Indices(o) => o.iter_mut().zip(idx).for_each(|(d, i)| *d = i),
        }
    }
}

/// Bucket bounds of a line after the MSD pass, and each part's write offsets.
struct Msd {
    parts: usize,
    chunk: usize,
    offs: Vec<[u32; RADIX]>,
    starts: Vec<usize>,
}

/// Radix sort of a line (at least [`RADIX_MIN`] long) into `out`; `par`
/// splits it across threads.
fn radix_line<T: Keyed>(line: &[T], out: LineOut<'_, T>, par: bool) {
    let n = line.len();
    assert!(n < u32::MAX as usize);
    let parts = if par { num_threads().min(n / PART_MIN).max(1) } else { 1 };
    let chunk = n.div_ceil(parts);
    let lo = T::K::BITS - TOP_BITS;
    let counts = each_part(parts, |p| {
        let mut h = [0u32; RADIX];
        let mut bad = false;
        for &v in &line[(p * chunk).min(n)..((p + 1) * chunk).min(n)] {
            h[digit(v.key(), lo, TOP_BITS)] += 1;
            bad |= v.ambiguous();
        }
        (h, bad)
    });
    let bad = counts.iter().any(|c| c.1);
    let mut msd = Msd { parts, chunk, offs: vec![[0; RADIX]; parts], starts: vec![0; RADIX + 1] };
    let mut acc = 0u32;
    for b in 0..RADIX {
        msd.starts[b] = acc as usize;
        for (o, c) in msd.offs.iter_mut().zip(&counts) {
            o[b] = acc;
            acc += c.0[b];
        }
    }
    msd.starts[RADIX] = n;
    let mut keys: Vec<T::K> = Vec::new();
    let mut key_store = |n: usize| {
        keys.reserve_exact(n);
        SendPtr(keys.as_mut_ptr())
    };
    match out {
        LineOut::Values(o) if !bad => {
            let ov = SendPtr(o.as_mut_ptr());
            // Keys of T's size are sorted in the output itself, then decoded in place.
            let kp = if std::mem::size_of::<T>() == std::mem::size_of::<T::K>() {
                SendPtr(ov.get() as *mut T::K)
            } else {
                key_store(n)
            };
            let unit = SendPtr(std::ptr::NonNull::<()>::dangling().as_ptr());
            buckets(
                line,
                &msd,
                kp,
                unit,
                |_, _| (),
                |s0, len| {
                    for j in s0..s0 + len {
                        // SAFETY: bucket s0..s0 + len of the n keys is sorted and
                        // belongs to this call alone; each key is read before its
                        // value (same size, same place, when kp aliases ov) is written.
                        unsafe {
                            let k = kp.get().add(j).read();
                            ov.get().add(j).write(T::from_key(k));
                        }
                    }
                },
            );
        }
        LineOut::Values(o) => buckets(line, &msd, key_store(n), SendPtr(o.as_mut_ptr()), |v, _| v, |_, _| {}),
        LineOut::Indices(o) => buckets(line, &msd, key_store(n), SendPtr(o.as_mut_ptr()), |_, i| i as u32, |_, _| {}),
    }
}

/// The MSD scatter of `line` into `kp` (room for n keys) and `mk`'s payload
/// into `pay` (n elements), then the LSD sort of every bucket, passed to
/// `finish` with its start and length.
fn buckets<T: Keyed, P: Copy + Send + Sync>(
    line: &[T],
    msd: &Msd,
    kp: SendPtr<T::K>,
    pay: SendPtr<P>,
    mk: impl Fn(T, usize) -> P + Sync,
    finish: impl Fn(usize, usize) + Sync,
) {
    let n = line.len();
    let lo = T::K::BITS - TOP_BITS;
    each_part(msd.parts, |p| {
        let mut o = msd.offs[p];
        let base = (p * msd.chunk).min(n);
        for (i, &v) in line[base..((p + 1) * msd.chunk).min(n)].iter().enumerate() {
            let k = v.key();
            let d = digit(k, lo, TOP_BITS);
            let j = o[d] as usize;
            o[d] += 1;
            // SAFETY: the offsets (prefix sums of the per-part bucket counts)
            // give every (part, bucket) pair its own range of 0..n, so j < n
            // and no two writes meet; kp and pay have room for n elements.
            unsafe {
                kp.get().add(j).write(k);
                pay.get().add(j).write(mk(v, base + i));
            }
        }
    });
    // Runs of buckets of similar total size, a few per thread.
    let groups = if msd.parts > 1 { msd.parts * 8 } else { 1 };
    let mut cuts = vec![0];
    for b in 0..RADIX {
        if msd.starts[b + 1] * groups >= n * cuts.len() && cuts.len() < groups {
            cuts.push(b + 1);
        }
    }
    cuts.push(RADIX);
    each_part(cuts.len() - 1, |g| {
        let mut s = Lsd::<T::K, P>::new();
        for b in cuts[g]..cuts[g + 1] {
            let (s0, s1) = (msd.starts[b], msd.starts[b + 1]);
            if s1 > s0 {
                // SAFETY: bucket b is positions s0..s1 of the n keys and
                // payloads, all written by the scatter; buckets are disjoint
                // and each is in one group.
                let (ks, ps) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(kp.get().add(s0), s1 - s0),
                        std::slice::from_raw_parts_mut(pay.get().add(s0), s1 - s0),
                    )
                };
                s.sort(ks, ps, lo);
                finish(s0, s1 - s0);
            }
        }
    });
}

/// Sorts or partitions one line into `out`.
fn keyed_line<T: Keyed>(line: &[T], out: LineOut<'_, T>, mode: SortMode, par: bool) {
    let n = line.len();
    match mode {
        SortMode::Values | SortMode::Indices if n >= RADIX_MIN => radix_line(line, out, par),
        _ => {
            let mut w: Vec<<T::K as Key>::Wide> =
                line.iter().enumerate().map(|(i, v)| v.key().wide(i as u32)).collect();
            match mode {
                SortMode::PartValues(k) | SortMode::PartIndices(k) => {
                    if n > 0 {
                        w.select_nth_unstable(k);
                    }
                }
                _ => w.sort_unstable(),
            }
            out.permuted(line, w.iter().map(|&x| T::K::index(x)));
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

fn complex_line(line: &[c64], out: LineOut<'_, c64>, mode: SortMode) {
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
    out.permuted(line, idx.into_iter());
}

/// Runs `per_line(line, out, par)` over every line along `axis`, writing
/// into a fresh output (`par`: few lines, so each may use several threads).
fn run_lines<T: Element>(
    x: &Array,
    axis: usize,
    mode: SortMode,
    out: &OutSpec<'_>,
    per_line: impl Fn(&[T], LineOut<'_, T>, bool) + Sync,
) -> Result<Data> {
    let d = contiguous(x)?;
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    if x.size() == 0 {
        return Ok(data);
    }
    let src = slice_of::<T>(&d, x.size());
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    let lines = outer * inner;
    let (pv, pi) = (SendPtr(data.ptr::<T>()), SendPtr(data.ptr::<u32>()));
    let indices = mode.indices();
    let par = lines < num_threads();
    parallel_for(lines, n * 16, |range| {
        let (mut line, mut ov, mut oi) = (Vec::<T>::new(), Vec::<T>::new(), Vec::<u32>::new());
        for t in range {
            let (o, i) = (t / inner, t % inner);
            let base = o * n * inner + i;
            if inner == 1 {
                // SAFETY: line t alone owns output positions base..base + n
                // (uint32 in index modes, T otherwise).
                let dst = unsafe {
                    if indices {
                        LineOut::Indices(std::slice::from_raw_parts_mut(pi.get().add(base), n))
                    } else {
                        LineOut::Values(std::slice::from_raw_parts_mut(pv.get().add(base), n))
                    }
                };
                per_line(&src[base..base + n], dst, par);
                continue;
            }
            line.clear();
            line.extend((0..n).map(|k| src[base + k * inner]));
            if indices {
                oi.resize(n, 0);
                per_line(&line, LineOut::Indices(&mut oi), par);
                for (k, &v) in oi.iter().enumerate() {
                    // SAFETY: line (o, i) owns output positions base + k * inner, k < n.
                    unsafe { *pi.get().add(base + k * inner) = v };
                }
            } else {
                ov.resize(n, T::default());
                per_line(&line, LineOut::Values(&mut ov), par);
                for (k, &v) in ov.iter().enumerate() {
                    // SAFETY: as above.
                    unsafe { *pv.get().add(base + k * inner) = v };
                }
            }
        }
    });
    Ok(data)
}

fn run_keyed<T: Keyed>(x: &Array, axis: usize, mode: SortMode, out: &OutSpec<'_>) -> Result<Data> {
    run_lines::<T>(x, axis, mode, out, |line, o, par| keyed_line(line, o, mode, par))
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
        Dtype::C64 => run_lines::<c64>(x, axis, mode, out, |line, o, _| complex_line(line, o, mode)),
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
