//! `where(cond, x, y)`: picks `x` where `cond` is true, `y` elsewhere, with
//! all three broadcast to the output shape.

use super::simd::{parallel_for, SendPtr};
use super::strided::{alloc_or_donate, strides_for, Rows};
use crate::array::{Array, Data};
use crate::error::Result;
use crate::primitive::OutSpec;
use crate::shape::numel;

crate::multiversion! {
    fn sel_dense<T: Copy>(c: &[bool], x: &[T], y: &[T], o: &mut [T]) {
        for (((o, &c), &x), &y) in o.iter_mut().zip(c).zip(x).zip(y) {
            *o = if c { x } else { y };
        }
    }
}

/// # Safety
/// Each pointer readable for `len` elements at its stride; `po` writable for
/// `len` elements (it may alias `px` or `py` element for element).
#[allow(clippy::too_many_arguments)]
unsafe fn sel_strided<T: Copy>(
    pc: *const bool,
    sc: isize,
    px: *const T,
    sx: isize,
    py: *const T,
    sy: isize,
    po: *mut T,
    len: usize,
) {
    for i in 0..len as isize {
        let (c, x, y) = (*pc.offset(i * sc), *px.offset(i * sx), *py.offset(i * sy));
        *po.offset(i) = if c { x } else { y };
    }
}

fn select_typed<T: Copy>(cond: &Array, x: &Array, y: &Array, shape: &[usize], od: &Data) {
    let n = numel(shape);
    if n == 0 {
        return;
    }
    let (cd, xd, yd) = (cond.data(), x.data(), y.data());
    let pc = SendPtr(cd.ptr::<bool>());
    let px = SendPtr(xd.ptr::<T>());
    let py = SendPtr(yd.ptr::<T>());
    let po = SendPtr(od.ptr::<T>());
    let dense = |a: &Array, d: &Data| a.size() == n && d.is_row_contiguous();
    let aliased = po.get() == px.get() || po.get() == py.get();
    if dense(cond, &cd) && dense(x, &xd) && dense(y, &yd) {
        parallel_for(n, 1, |r| {
            let s = r.start;
            // SAFETY: all three inputs hold n dense elements; ranges are
            // disjoint; an aliased (donated) input goes through raw pointers.
            unsafe {
                if aliased {
                    sel_strided(pc.get().add(s), 1, px.get().add(s), 1, py.get().add(s), 1, po.get().add(s), r.len());
                } else {
                    let l = r.len();
                    sel_dense(
                        std::slice::from_raw_parts(pc.get().add(s), l),
                        std::slice::from_raw_parts(px.get().add(s), l),
                        std::slice::from_raw_parts(py.get().add(s), l),
                        std::slice::from_raw_parts_mut(po.get().add(s), l),
                    );
                }
            }
        });
        return;
    }
    let (s_c, s_x, s_y) = (strides_for(cond, &cd, shape), strides_for(x, &xd, shape), strides_for(y, &yd, shape));
    let rows = Rows::new(shape, [&s_c, &s_x, &s_y]);
    let inner = rows.inner;
    let [ic, ix, iy] = rows.inner_strides;
    parallel_for(rows.rows, inner, |r| {
        for row in r {
            let [oc, ox, oy] = rows.offsets(row);
            // SAFETY: offsets and strides come from the inputs' own views;
            // each row writes its own output elements.
            unsafe {
                sel_strided(
                    pc.get().offset(oc),
                    ic,
                    px.get().offset(ox),
                    ix,
                    py.get().offset(oy),
                    iy,
                    po.get().add(row * inner),
                    inner,
                )
            }
        }
    });
}

/// `cond ? x : y` (cond is bool; x and y share the output dtype).
pub fn select(cond: &Array, x: &Array, y: &Array, out: &OutSpec<'_>) -> Result<Data> {
    let od = alloc_or_donate(out, &[x, y])?;
    // Only the element size matters for a select.
    match out.dtype.size() {
        1 => select_typed::<u8>(cond, x, y, out.shape, &od),
        2 => select_typed::<u16>(cond, x, y, out.shape, &od),
        4 => select_typed::<u32>(cond, x, y, out.shape, &od),
        _ => select_typed::<u64>(cond, x, y, out.shape, &od),
    }
    Ok(od)
}
