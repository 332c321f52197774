//! Strided iteration shared by the kernels, and the copy/fill/arange kernels.
//!
//! Inputs of any layout (transposed, broadcast, sliced) are walked row by row:
//! dimensions are collapsed where every operand is contiguous across them, the
//! innermost dimension becomes a tight loop, and the outer positions are
//! decoded from a row index so rows can be split across threads.

use super::simd::{parallel_for, SendPtr};
use crate::array::{Array, Data};
use crate::dtype::{Dtype, Element, Scalar};
use crate::error::Result;
use crate::memory::Buffer;
use crate::primitive::OutSpec;
use crate::shape::{broadcast_strides, collapse_dims, numel, row_major_strides};

/// Row-wise walk of `N` operands over a common (broadcast) shape.
pub struct Rows<const N: usize> {
    /// Collapsed outer shape (all but the innermost dimension).
    outer: Vec<usize>,
    outer_strides: [Vec<isize>; N],
    /// Length of the innermost dimension.
    pub inner: usize,
    /// Innermost stride of each operand.
    pub inner_strides: [isize; N],
    /// Number of rows.
    pub rows: usize,
}

impl<const N: usize> Rows<N> {
    /// Plans a walk over `shape` where operand `k` has `strides[k]` (already
    /// broadcast to `shape`, 0 on broadcast dimensions).
    pub fn new(shape: &[usize], strides: [&[isize]; N]) -> Rows<N> {
        let (cshape, cstrides) = collapse_dims(shape, &strides);
        let n = numel(shape);
        if cshape.is_empty() {
            return Rows {
                outer: vec![],
                outer_strides: std::array::from_fn(|_| vec![]),
                inner: if n == 0 { 0 } else { 1 },
                inner_strides: [0; N],
                rows: if n == 0 { 0 } else { 1 },
            };
        }
        let k = cshape.len() - 1;
        let inner = cshape[k];
        let outer = cshape[..k].to_vec();
        let rows = if inner == 0 { 0 } else { numel(&outer) };
        Rows {
            inner_strides: std::array::from_fn(|i| cstrides[i][k]),
            outer_strides: std::array::from_fn(|i| cstrides[i][..k].to_vec()),
            outer,
            inner,
            rows,
        }
    }

    /// Element offsets of row `r`'s first element in each operand.
    #[inline]
    pub fn offsets(&self, mut r: usize) -> [isize; N] {
        let mut off = [0isize; N];
        for d in (0..self.outer.len()).rev() {
            let i = r % self.outer[d];
            r /= self.outer[d];
            for (k, o) in off.iter_mut().enumerate() {
                *o += i as isize * self.outer_strides[k][d];
            }
        }
        off
    }
}

/// Strides of `x`'s data broadcast to `shape`.
pub fn strides_for(x: &Array, data: &Data, shape: &[usize]) -> Vec<isize> {
    broadcast_strides(x.shape(), &data.strides, shape)
}

/// Allocates a row-major output buffer for `out`.
pub fn alloc_out(out: &OutSpec<'_>) -> Result<Buffer> {
    Buffer::alloc(numel(out.shape) * out.dtype.size())
}

/// Reuses the buffer of an input that is donatable and the same byte size
/// as the output, otherwise allocates a fresh one.
pub fn alloc_or_donate(out: &OutSpec<'_>, candidates: &[&Array]) -> Result<Data> {
    let bytes = numel(out.shape) * out.dtype.size();
    for c in candidates {
        if c.shape() == out.shape && c.dtype().size() == out.dtype.size() && c.is_donatable() {
            let d = c.data();
            if d.buf.len() == bytes {
                return Ok(Data::contiguous_shared(d.buf.clone(), out.shape));
            }
        }
    }
    Ok(Data::contiguous(alloc_out(out)?, out.shape))
}

/// Copies the elements of `d` (viewed with `shape`) into a new vector, row-major.
pub fn gather_to_vec<T: Element>(d: &Data, shape: &[usize]) -> Vec<T> {
    let n = numel(shape);
    let mut v: Vec<T> = Vec::with_capacity(n);
    if n == 0 {
        return v;
    }
    let src = d.ptr::<T>();
    if d.row_contiguous {
        // SAFETY: a row-contiguous view holds n elements from its offset.
        unsafe {
            std::ptr::copy_nonoverlapping(src, v.as_mut_ptr(), n);
            v.set_len(n);
        }
        return v;
    }
    let rows = Rows::new(shape, [&d.strides]);
    for r in 0..rows.rows {
        let [o] = rows.offsets(r);
        for i in 0..rows.inner {
            // SAFETY: offsets come from the view's own shape and strides.
            v.push(unsafe { *src.offset(o + i as isize * rows.inner_strides[0]) });
        }
    }
    v
}

fn cast_rows<S: Element, D: Element>(
    src: &Data,
    shape: &[usize],
    dst: SendPtr<D>,
    dst_off: isize,
    dst_strides: &[isize],
) {
    if transpose_tiles::<S, D>(src, shape, SendPtr(dst.get()), dst_off, dst_strides) {
        return;
    }
    let rows = Rows::new(shape, [&src.strides, dst_strides]);
    let sp = SendPtr(src.ptr::<S>());
    let inner = rows.inner;
    let [ss, ds] = rows.inner_strides;
    // Few long rows (a contiguous copy collapses to one row): split rows into
    // column chunks too, so both cores work.
    let threads = super::simd::num_threads();
    let col_chunks = if rows.rows >= threads * 2 || inner < 1 << 16 {
        1
    } else {
        (threads * 4).div_ceil(rows.rows).min(inner >> 14).max(1)
    };
    let cw = inner.div_ceil(col_chunks);
    parallel_for(rows.rows * col_chunks, cw, |range| {
        for t in range {
            let (r, c0) = (t / col_chunks, (t % col_chunks) * cw);
            if c0 >= inner {
                continue;
            }
            let len = cw.min(inner - c0);
            let [so, doff] = rows.offsets(r);
            // SAFETY: source and destination offsets stay within their views;
            // parallel (row, chunk) units write disjoint destination elements.
            unsafe {
                let s = sp.get().offset(so + c0 as isize * ss);
                let d = dst.get().offset(dst_off + doff + c0 as isize * ds);
                if ss == 1 && ds == 1 {
                    if S::DTYPE == D::DTYPE {
                        std::ptr::copy_nonoverlapping(s as *const D, d, len);
                    } else {
                        cast_slice(std::slice::from_raw_parts(s, len), std::slice::from_raw_parts_mut(d, len));
                    }
                } else if ss == -1 && ds == 1 {
                    // A reversed source run (flip of the last axis): its
                    // elements occupy [s - (len-1), s].
                    let src = std::slice::from_raw_parts(s.offset(1 - len as isize), len);
                    cast_rev(src, std::slice::from_raw_parts_mut(d, len));
                } else {
                    for i in 0..len as isize {
                        *d.offset(i * ds) = D::cast_from(*s.offset(i * ss));
                    }
                }
            }
        }
    });
}

crate::multiversion! {
    fn cast_rev<S: Element, D: Element>(s: &[S], d: &mut [D]) {
        for (o, &x) in d.iter_mut().zip(s.iter().rev()) {
            *o = D::cast_from(x);
        }
    }
}

/// Side of the square tiles a transposing copy moves at a time (fits L1 for
/// 8-byte elements: 2 × 32 × 32 × 8 = 16 KiB).
const TILE: usize = 32;

/// Copies where the destination's innermost dimension is contiguous but the
/// source's is strided while the source is contiguous along the next-outer
/// dimension (a transpose). Moves square tiles so both sides stay in cache.
/// Returns false when the layout is not of that form.
fn transpose_tiles<S: Element, D: Element>(
    src: &Data,
    shape: &[usize],
    dst: SendPtr<D>,
    dst_off: isize,
    dst_strides: &[isize],
) -> bool {
    let (cs, cst) = collapse_dims(shape, &[&src.strides, dst_strides]);
    let k = cs.len();
    if k < 2 || cst[1][k - 1] != 1 || cst[0][k - 2] != 1 || cst[0][k - 1] == 1 || cs[k - 1] < TILE || cs[k - 2] < TILE {
        return false;
    }
    let (nr, nc) = (cs[k - 2], cs[k - 1]);
    let (src_c, dst_r) = (cst[0][k - 1], cst[1][k - 2]);
    let n_outer: usize = cs[..k - 2].iter().product();
    let bands = nr.div_ceil(TILE);
    let sp = SendPtr(src.ptr::<S>());
    let outer_shape = cs[..k - 2].to_vec();
    let (os, od) = (cst[0][..k - 2].to_vec(), cst[1][..k - 2].to_vec());
    parallel_for(n_outer * bands, TILE * nc, |range| {
        for job in range {
            let (mut o, band) = (job / bands, job % bands);
            let (mut so, mut doff) = (0isize, 0isize);
            for d in (0..outer_shape.len()).rev() {
                let i = o % outer_shape[d];
                o /= outer_shape[d];
                so += i as isize * os[d];
                doff += i as isize * od[d];
            }
            let r0 = band * TILE;
            let r1 = (r0 + TILE).min(nr);
            let mut c0 = 0;
            while c0 < nc {
                let c1 = (c0 + TILE).min(nc);
                for r in r0..r1 {
                    // SAFETY: (r, c) lies inside the collapsed shape, so both
                    // offsets stay within their views; bands write disjoint rows.
                    unsafe {
                        let s = sp.get().offset(so + r as isize);
                        let d = dst.get().offset(dst_off + doff + r as isize * dst_r);
                        for c in c0..c1 {
                            *d.add(c) = D::cast_from(*s.offset(c as isize * src_c));
                        }
                    }
                }
                c0 = c1;
            }
        }
    });
    true
}

crate::multiversion! {
    fn cast_slice<S: Element, D: Element>(s: &[S], d: &mut [D]) {
        for (o, &x) in d.iter_mut().zip(s) {
            *o = D::cast_from(x);
        }
    }
}

/// Row-major copy of `x` with cast to `out.dtype`.
pub fn copy(x: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let src = x.data();
    let data = Data::contiguous(alloc_out(out)?, out.shape);
    copy_into(x, &src, &data, out.dtype, 0, &row_major_strides(out.shape));
    Ok(data)
}

/// Copies `x` (data `src`) into the strided region of `dst`.
pub fn copy_into(x: &Array, src: &Data, dst: &Data, dst_dtype: Dtype, dst_off: isize, dst_strides: &[isize]) {
    if x.size() == 0 {
        return;
    }
    crate::dispatch_dtype!(x.dtype(), S => {
        crate::dispatch_dtype!(dst_dtype, D => {
            cast_rows::<S, D>(src, x.shape(), SendPtr(dst.ptr::<D>()), dst_off, dst_strides)
        })
    })
}

/// An output filled with `value`.
pub fn fill(value: Scalar, out: &OutSpec<'_>) -> Result<Data> {
    let buf = alloc_out(out)?;
    let n = numel(out.shape);
    crate::dispatch_dtype!(out.dtype, T => {
        let v: T = crate::array::scalar_to::<T>(value);
        let p = SendPtr(buf.as_ptr() as *mut T);
        parallel_for(n, 1, |r| {
            // SAFETY: each chunk writes its own range of the n-element buffer.
            let s = unsafe { std::slice::from_raw_parts_mut(p.get().add(r.start), r.len()) };
            s.fill(v);
        });
    });
    Ok(Data::contiguous(buf, out.shape))
}

/// `start + i * step` in the output dtype.
pub fn arange(start: f64, step: f64, out: &OutSpec<'_>) -> Result<Data> {
    let buf = alloc_out(out)?;
    let n = numel(out.shape);
    crate::dispatch_dtype!(out.dtype, T => {
        // SAFETY: the buffer holds n elements of T.
        let s = unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut T, n) };
        for (i, o) in s.iter_mut().enumerate() {
            *o = T::cast_from(start + i as f64 * step);
        }
    });
    Ok(Data::contiguous(buf, out.shape))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_decode_transposed_offsets() {
        // A (2,3) view of a (3,2) row-major buffer, transposed.
        let rows = Rows::new(&[2, 3], [&[1, 2]]);
        assert_eq!(rows.rows, 2);
        assert_eq!(rows.inner, 3);
        assert_eq!(rows.offsets(1), [1]);
        assert_eq!(rows.inner_strides, [2]);
    }
}
