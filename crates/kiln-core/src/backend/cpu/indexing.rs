//! Gather and scatter kernels.
//!
//! Both walk a set of index arrays (already broadcast to one shape `I` by the
//! op) and, for every index position, a block ("slice") of the source or
//! destination starting at the indexed coordinates. Indices are validated
//! first (negative ones wrap; anything still outside the axis is an error
//! naming the op, the index and the axis size), so the copy loops never read
//! or write out of bounds.
//!
//! Gather copies each block into its own output range, in parallel over
//! index positions (a table-row gather becomes one `memcpy` per row).
//! Scatter applies the index positions in order within each destination
//! element, so duplicates accumulate deterministically; it parallelises over
//! disjoint parts of the block, or, when blocks are single rows along the
//! indexed axes (so blocks at distinct indices are disjoint), over
//! destination ranges, each thread applying the blocks that start in its
//! range. `searchsorted` is a binary search per value.

use super::simd::{parallel_for, SendPtr};
use super::strided::Rows;
use crate::array::{Array, Data};
use crate::backend::ScatterOp;
use crate::dtype::{bf16, c64, f16, Element};
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::primitive::OutSpec;
use crate::shape::{numel, row_major_strides};

/// Reads index array `x` (shape `ishape`, any integer dtype, any strides) and
/// adds `wrapped(index) * stride` to `offs[i]` for every row-major position `i`.
/// An index outside `[-n, n - slice]` (after wrapping, a block of `slice`
/// elements must fit in the axis of size `n`) is an error.
fn add_offsets(op: &str, x: &Array, n: usize, slice: usize, stride: isize, offs: &mut [isize]) -> Result<()> {
    let d = x.data();
    let ishape = x.shape();
    crate::dispatch_dtype!(x.dtype(), T => add_offsets_typed::<T>(op, &d, ishape, n, slice, stride, offs))
}

fn add_offsets_typed<T: Element>(
    op: &str,
    d: &Data,
    ishape: &[usize],
    n: usize,
    slice: usize,
    stride: isize,
    offs: &mut [isize],
) -> Result<()> {
    let total = offs.len();
    if total == 0 {
        return Ok(());
    }
    let limit = n as i64 - slice as i64; // largest valid start
    let bad = |v: i64| {
        let msg = if slice == 1 {
            format!("Index {v} is out of bounds for axis of size {n}.")
        } else {
            format!("Index {v} with slice size {slice} is out of bounds for axis of size {n}.")
        };
        Error::out_of_range(op, msg)
    };
    let unsigned = T::DTYPE.kind() == crate::dtype::Kind::Unsigned;
    let fix = |raw: T| -> std::result::Result<isize, i64> {
        let v = if unsigned {
            let u = raw.to_u64();
            if u > i64::MAX as u64 {
                return Err(i64::MAX);
            }
            u as i64
        } else {
            raw.to_i64()
        };
        let w = if v < 0 { v + n as i64 } else { v };
        if w < 0 || w > limit {
            return Err(v);
        }
        Ok(w as isize * stride)
    };
    let p = d.ptr::<T>();
    let rows = Rows::new(ishape, [d.strides()]);
    let inner = rows.inner;
    let is = rows.inner_strides[0];
    let mut k = 0usize;
    for r in 0..rows.rows {
        let [o] = rows.offsets(r);
        for j in 0..inner {
            // SAFETY: offsets and strides come from the index array's own view.
            let raw = unsafe { *p.offset(o + j as isize * is) };
            match fix(raw) {
                Ok(off) => offs[k] += off,
                Err(v) => return Err(bad(v)),
            }
            k += 1;
        }
    }
    Ok(())
}

/// Base element offsets (in a layout with `strides`) of every block, one per
/// position of the common index shape.
fn block_offsets(
    op: &str,
    indices: &[Array],
    axes: &[usize],
    shape: &[usize],
    slice_sizes: &[usize],
    strides: &[isize],
) -> Result<Vec<isize>> {
    let m = indices.first().map(|x| x.size()).unwrap_or(1);
    let mut offs = vec![0isize; m];
    for (x, &ax) in indices.iter().zip(axes) {
        add_offsets(op, x, shape[ax], slice_sizes[ax], strides[ax], &mut offs)?;
    }
    Ok(offs)
}

/// Copies `len` elements of `size` bytes from `s` (stride `ss`) to `d` (stride `ds`).
///
/// # Safety
/// Both ranges must be valid for `len` elements at their strides and disjoint.
#[inline(always)]
unsafe fn copy_run(size: usize, s: *const u8, ss: isize, d: *mut u8, ds: isize, len: usize) {
    if ss == 1 && ds == 1 {
        std::ptr::copy_nonoverlapping(s, d, len * size);
        return;
    }
    macro_rules! strided {
        ($t:ty) => {{
            let (s, d) = (s as *const $t, d as *mut $t);
            for i in 0..len as isize {
                *d.offset(i * ds) = *s.offset(i * ss);
            }
        }};
    }
    match size {
        1 => strided!(u8),
        2 => strided!(u16),
        4 => strided!(u32),
        _ => strided!(u64),
    }
}

/// `out[i, s] = a[indices[.][i] at axes + s]` for every index position `i` and
/// block position `s` (block shape `slice_sizes`).
pub fn gather(a: &Array, indices: &[Array], axes: &[usize], slice_sizes: &[usize], out: &OutSpec<'_>) -> Result<Data> {
    let ad = a.data();
    let offs = block_offsets("gather", indices, axes, a.shape(), slice_sizes, ad.strides())?;
    let buf = Buffer::alloc(numel(out.shape) * out.dtype.size())?;
    let data = Data::contiguous(buf, out.shape);
    let block = numel(slice_sizes);
    if block == 0 || offs.is_empty() {
        return Ok(data);
    }
    let size = out.dtype.size();
    let rows = Rows::new(slice_sizes, [ad.strides(), &row_major_strides(slice_sizes)]);
    let row_offs: Vec<[isize; 2]> = (0..rows.rows).map(|r| rows.offsets(r)).collect();
    let [ss, ds] = rows.inner_strides;
    let inner = rows.inner;
    // Byte pointer to a's element 0 (the view offset counts elements).
    let src = SendPtr(ad.buffer().as_ptr().wrapping_offset(ad.offset() * size as isize));
    let dst = SendPtr(data.ptr::<u8>());
    let nrows = row_offs.len();
    parallel_for(offs.len() * nrows, inner * size / 4 + 4, |range| {
        for u in range {
            let (i, r) = (u / nrows, u % nrows);
            let [so, doff] = row_offs[r];
            // SAFETY: offs[i] was validated so the block lies inside `a`, and
            // row offsets come from the block's shape with a's strides; each
            // unit writes its own run of the fresh output.
            unsafe {
                let s = src.get().offset((offs[i] + so) * size as isize);
                let d = dst.get().offset((i * block) as isize * size as isize + doff * size as isize);
                copy_run(size, s, ss, d, ds, inner);
            }
        }
    });
    Ok(data)
}

/// How scatter combines an update with the destination element.
trait Combine: Element {
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn max(self, o: Self) -> Self;
    fn min(self, o: Self) -> Self;
}

macro_rules! combine_int {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            #[inline(always)] fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            #[inline(always)] fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            #[inline(always)] fn max(self, o: Self) -> Self { Ord::max(self, o) }
            #[inline(always)] fn min(self, o: Self) -> Self { Ord::min(self, o) }
        }
    )*};
}
combine_int!(u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! combine_float {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            #[inline(always)] fn add(self, o: Self) -> Self { self + o }
            #[inline(always)] fn mul(self, o: Self) -> Self { self * o }
            // NaN propagates.
            #[inline(always)] fn max(self, o: Self) -> Self { if self > o || self.is_nan() { self } else { o } }
            #[inline(always)] fn min(self, o: Self) -> Self { if self < o || self.is_nan() { self } else { o } }
        }
    )*};
}
combine_float!(f32, f64);

macro_rules! combine_half {
    ($($t:ty),*) => {$(
        impl Combine for $t {
            #[inline(always)] fn add(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() + o.to_f32()) }
            #[inline(always)] fn mul(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() * o.to_f32()) }
            #[inline(always)] fn max(self, o: Self) -> Self { if self > o || self.is_nan() { self } else { o } }
            #[inline(always)] fn min(self, o: Self) -> Self { if self < o || self.is_nan() { self } else { o } }
        }
    )*};
}
combine_half!(f16, bf16);

impl Combine for bool {
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self | o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self & o
    }
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        self | o
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        self & o
    }
}

impl Combine for c64 {
    #[inline(always)]
    fn add(self, o: Self) -> Self {
        self + o
    }
    #[inline(always)]
    fn mul(self, o: Self) -> Self {
        self * o
    }
    // Complex order: lexicographic on (re, im), as MLX compares complex values.
    #[inline(always)]
    fn max(self, o: Self) -> Self {
        if (self.re, self.im) > (o.re, o.im) {
            self
        } else {
            o
        }
    }
    #[inline(always)]
    fn min(self, o: Self) -> Self {
        if (self.re, self.im) < (o.re, o.im) {
            self
        } else {
            o
        }
    }
}

/// Applies `f(dst, upd)` along a run of `len` elements.
///
/// # Safety
/// Both runs valid for `len` elements at their strides; `d` writable.
#[inline(always)]
unsafe fn combine_run<T: Copy>(d: *mut T, ds: isize, u: *const T, us: isize, len: usize, f: impl Fn(T, T) -> T) {
    for j in 0..len as isize {
        let p = d.offset(j * ds);
        *p = f(*p, *u.offset(j * us));
    }
}

/// Combines a run of `len` updates into the destination as `op` says.
///
/// # Safety
/// As [`combine_run`].
#[inline(always)]
unsafe fn apply_run<T: Combine>(op: ScatterOp, d: *mut T, ds: isize, u: *const T, us: isize, len: usize) {
    match op {
        ScatterOp::None => combine_run(d, ds, u, us, len, |_, b| b),
        ScatterOp::Sum => combine_run(d, ds, u, us, len, T::add),
        ScatterOp::Prod => combine_run(d, ds, u, us, len, T::mul),
        ScatterOp::Max => combine_run(d, ds, u, us, len, T::max),
        ScatterOp::Min => combine_run(d, ds, u, us, len, T::min),
    }
}

#[allow(clippy::too_many_arguments)]
fn scatter_typed<T: Combine>(
    op: ScatterOp,
    offs: &[isize],
    upd: &Array,
    ud: &Data,
    ilen: usize,
    block_shape: &[usize],
    out_strides: &[isize],
    dst: &Data,
    disjoint: bool,
) {
    let ushape = upd.shape();
    let ustr = ud.strides();
    // Offset of update block i (the index dims of `updates` may be strided).
    let ubase: Vec<isize> = if ilen == 0 {
        vec![0; offs.len()]
    } else {
        let rows = Rows::new(&ushape[..ilen], [&ustr[..ilen]]);
        let mut v = Vec::with_capacity(offs.len());
        for r in 0..rows.rows {
            let [o] = rows.offsets(r);
            for j in 0..rows.inner {
                v.push(o + j as isize * rows.inner_strides[0]);
            }
        }
        v
    };
    let rows = Rows::new(block_shape, [out_strides, &ustr[ilen..]]);
    let row_offs: Vec<[isize; 2]> = (0..rows.rows).map(|r| rows.offsets(r)).collect();
    let [ds, us] = rows.inner_strides;
    let inner = rows.inner;
    // Column chunks of a long single block row let both cores work while each
    // destination element is still owned by one unit (deterministic order).
    let threads = super::simd::num_threads();
    let dp = SendPtr(dst.ptr::<T>());
    let up = SendPtr(ud.ptr::<T>());
    // Blocks at distinct index values are disjoint (one element along every
    // indexed axis): share the destination out by block start among
    // threads, each applying its own blocks in index order, when the
    // column split below would leave a thread idle.
    let total = numel(block_shape) * offs.len();
    if disjoint && threads > 1 && row_offs.len() < threads * 2 && inner < 4096 && total >= super::simd::PAR_THRESHOLD {
        let parts = threads * 8;
        let (lo, hi) = offs.iter().fold((isize::MAX, isize::MIN), |(a, b), &o| (a.min(o), b.max(o)));
        let span = (hi - lo) as usize + 1;
        let owner = |o: isize| ((o - lo) as usize as u128 * parts as u128 / span as u128) as usize;
        // Positions grouped by owner, in index order within each group.
        let mut start = vec![0usize; parts + 1];
        for &o in offs {
            start[owner(o) + 1] += 1;
        }
        for p in 0..parts {
            start[p + 1] += start[p];
        }
        let mut fill = start.clone();
        let mut order = vec![0u32; offs.len()];
        for (i, &o) in offs.iter().enumerate() {
            let w = owner(o);
            order[fill[w]] = i as u32;
            fill[w] += 1;
        }
        parallel_for(parts, total / parts + 1, |range| {
            for p in range {
                for &i in &order[start[p]..start[p + 1]] {
                    let (o, ub) = (offs[i as usize], ubase[i as usize]);
                    for &[dof, uof] in &row_offs {
                        // SAFETY: o was validated so the block lies inside the
                        // output; every element of the blocks at start o is
                        // written by part owner(o) alone (blocks at other
                        // starts are disjoint), in index order.
                        unsafe {
                            let (d, s) = (dp.get().offset(o + dof), up.get().offset(ub + uof) as *const T);
                            apply_run(op, d, ds, s, us, inner);
                        }
                    }
                }
            }
        });
        return;
    }
    let chunks = if row_offs.len() >= threads * 2 || inner < 4096 { 1 } else { (threads * 2).min(inner / 1024) };
    let cw = inner.div_ceil(chunks);
    let units = row_offs.len() * chunks;
    parallel_for(units, offs.len() * cw.min(inner), |range| {
        for u in range {
            let (r, c0) = (u / chunks, (u % chunks) * cw);
            if c0 >= inner {
                continue;
            }
            let len = cw.min(inner - c0);
            let [dof, uof] = row_offs[r];
            for (&o, &ub) in offs.iter().zip(&ubase) {
                // SAFETY: o was validated so the block lies inside the output;
                // row offsets come from the block shape; units own disjoint
                // (row, column-chunk) destination elements.
                unsafe {
                    let d = dp.get().offset(o + dof + c0 as isize * ds);
                    let s = up.get().offset(ub + uof + c0 as isize * us) as *const T;
                    apply_run(op, d, ds, s, us, len);
                }
            }
        }
    });
}

/// A copy of `a` where, for every index position `i` in order, the block at
/// `indices[.][i]` (shape `updates.shape[ilen..]`) is combined with `updates[i]`.
pub fn scatter(
    op: ScatterOp,
    a: &Array,
    indices: &[Array],
    updates: &Array,
    axes: &[usize],
    out: &OutSpec<'_>,
) -> Result<Data> {
    let ilen = indices.first().map(|x| x.ndim()).unwrap_or(0);
    let block_shape = &updates.shape()[ilen..];
    let out_strides = row_major_strides(out.shape);
    let offs = block_offsets("scatter", indices, axes, out.shape, block_shape, &out_strides)?;
    let dst = if a.is_donatable() && a.dtype() == out.dtype {
        Data::contiguous_shared(a.data().buffer().clone(), out.shape)
    } else {
        super::strided::copy(a, out)?
    };
    if numel(block_shape) == 0 || offs.is_empty() {
        return Ok(dst);
    }
    let ud = updates.data();
    let disjoint = axes.iter().all(|&ax| block_shape[ax] == 1);
    crate::dispatch_dtype!(out.dtype, T => scatter_typed::<T>(op, &offs, updates, &ud, ilen, block_shape, &out_strides, &dst, disjoint));
    Ok(dst)
}

/// MLX's order for a binary search: `<` and `<=` with NaN (of either
/// component, for complex) after every number.
trait SearchOrd: Element {
    fn nan(self) -> bool;
    fn lt(self, o: Self) -> bool;
    fn le(self, o: Self) -> bool;
}

macro_rules! search_ord {
    ($($t:ty: |$v:ident| $nan:expr);*) => {$(
        impl SearchOrd for $t {
            #[inline(always)]
            fn nan(self) -> bool {
                let $v = self;
                $nan
            }
            #[inline(always)]
            fn lt(self, o: Self) -> bool {
                self < o
            }
            #[inline(always)]
            fn le(self, o: Self) -> bool {
                self <= o
            }
        }
    )*};
}
search_ord!(bool: |_v| false; u8: |_v| false; u16: |_v| false; u32: |_v| false; u64: |_v| false;
    i8: |_v| false; i16: |_v| false; i32: |_v| false; i64: |_v| false;
    f16: |v| v.is_nan(); bf16: |v| v.is_nan(); f32: |v| v.is_nan(); f64: |v| v.is_nan());

impl SearchOrd for c64 {
    fn nan(self) -> bool {
        self.re.is_nan() || self.im.is_nan()
    }
    fn lt(self, o: Self) -> bool {
        (self.re, self.im) < (o.re, o.im)
    }
    fn le(self, o: Self) -> bool {
        (self.re, self.im) <= (o.re, o.im)
    }
}

fn search_typed<T: SearchOrd>(s: &[T], v: &[T], right: bool, dst: SendPtr<u32>) {
    let steps = (usize::BITS - s.len().leading_zeros()) as usize;
    parallel_for(v.len(), 4 * steps + 4, |range| {
        for i in range {
            let x = v[i];
            let pos = if right {
                // Everything is at or below a NaN.
                if x.nan() {
                    s.len()
                } else {
                    s.partition_point(|&e| e.le(x))
                }
            } else if x.nan() {
                // The numbers are below a NaN, the NaNs (last) are not.
                s.partition_point(|&e| !e.nan())
            } else {
                s.partition_point(|&e| e.lt(x))
            };
            // SAFETY: each i < v.len() is written once, into the fresh
            // uint32 output of v.len() elements.
            unsafe { *dst.get().add(i) = pos as u32 };
        }
    });
}

/// For every element of `values`, the number of elements of the sorted 1-D
/// `sorted` (same dtype, NaN last) below it (`right`: at or below it), by a
/// binary search per value, in parallel over values.
pub fn searchsorted(sorted: &Array, values: &Array, right: bool, out: &OutSpec<'_>) -> Result<Data> {
    let (sd, vd) = (super::reduce::contiguous(sorted)?, super::reduce::contiguous(values)?);
    let data = Data::contiguous(Buffer::alloc(values.size() * 4)?, out.shape);
    if values.size() == 0 {
        return Ok(data);
    }
    let dst = SendPtr(data.ptr::<u32>());
    crate::dispatch_dtype!(values.dtype(), T => search_typed::<T>(
        super::reduce::slice_of::<T>(&sd, sorted.size()),
        super::reduce::slice_of::<T>(&vd, values.size()),
        right,
        dst,
    ));
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_wrap_and_reject() {
        let x = Array::from_slice(&[0i32, -1, 2], &[3]).unwrap();
        x.eval().unwrap();
        let mut o = vec![0isize; 3];
        add_offsets("gather", &x, 3, 1, 10, &mut o).unwrap();
        assert_eq!(o, vec![0, 20, 20]);
        let mut o = vec![0isize; 3];
        let e = add_offsets("gather", &x, 3, 2, 1, &mut o).unwrap_err();
        assert!(e.to_string().contains("Index -1"), "{e}");
        assert_eq!(crate::dtype::Dtype::I32, x.dtype());
    }
}
