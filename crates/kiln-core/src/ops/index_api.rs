//! NumPy/MLX-style indexing on [`Array`]: `a[...]` as [`Array::index`],
//! `a[...] = v` as [`Array::index_put`] and `a.at[...].add(v)` as
//! [`Array::at`].
//!
//! An index is a list of [`Index`] items (build it with [`idx!`](crate::idx)
//! or from `From` impls): integers (negative count from the end), slices
//! with optional step (`0..5`, `..`, `2..`, `..=3`, and `2..;2` in the
//! macro), [`NewAxis`], one [`Ellipsis`], and integer arrays. Integer arrays
//! (and, next to them, plain integers) are *advanced* indices: they broadcast
//! together and their dimensions replace the indexed axes in place when the
//! advanced indices are adjacent, or go to the front of the result when a
//! slice or new axis separates them (NumPy's rule, which MLX follows).
//!
//! ```
//! use kiln_core::{idx, ops::NewAxis, Array};
//! let a = Array::from_vec((0..24).map(|x| x as f32).collect(), &[2, 3, 4]).unwrap();
//! let i = Array::from_slice(&[2i32, 0], &[2]).unwrap();
//! let b = a.index(idx![.., 1, 1..;2, NewAxis]).unwrap();
//! assert_eq!(b.shape(), &[2, 2, 1]);
//! let c = a.index(idx![0, .., &i]).unwrap(); // 0 and i are separated by a slice
//! assert_eq!(c.shape(), &[2, 3]);
//! let d = a.at(idx![0, 0, &i]).add(1.0).unwrap();
//! assert_eq!(d.index(idx![0, 0]).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 1.0, 3.0, 3.0]);
//! ```

use super::indexing::{gather_raw, scatter_raw};
use super::shape::{broadcast_to, reshape_to, transpose_axes};
use super::slicing::{resolve_slice, slice_raw, slice_update_raw};
use super::Operand;
use crate::array::Array;
use crate::backend::ScatterOp;
use crate::error::{fmt_shape, Error, Result};

/// One item of an index expression.
#[derive(Clone, Debug)]
pub enum Index {
    /// A single position (negative counts from the end); removes the axis.
    Int(i64),
    /// `start:stop:step` with NumPy's clamping (`None`: from/to the end).
    Slice {
        /// First position (default: the start, or the end for a negative step).
        start: Option<i64>,
        /// One past the last position (default: past the end in step's direction).
        stop: Option<i64>,
        /// Step, non-zero (negative walks backwards).
        step: i64,
    },
    /// A new axis of size 1.
    NewAxis,
    /// As many full slices as needed to index every axis (at most one).
    Ellipsis,
    /// An integer index array (advanced indexing).
    Array(Array),
}

/// Marker for [`Index::NewAxis`] (`None` in NumPy).
#[derive(Clone, Copy, Debug)]
pub struct NewAxis;
/// Marker for [`Index::Ellipsis`] (`...` in NumPy).
#[derive(Clone, Copy, Debug)]
pub struct Ellipsis;

impl Index {
    /// A slice `start:stop:step`.
    pub fn slice(start: Option<i64>, stop: Option<i64>, step: i64) -> Index {
        Index::Slice { start, stop, step }
    }
    /// This slice with step `step` (other items are returned unchanged).
    pub fn step(self, step: i64) -> Index {
        match self {
            Index::Slice { start, stop, .. } => Index::Slice { start, stop, step },
            other => other,
        }
    }
}

impl From<NewAxis> for Index {
    fn from(_: NewAxis) -> Self {
        Index::NewAxis
    }
}
impl From<Ellipsis> for Index {
    fn from(_: Ellipsis) -> Self {
        Index::Ellipsis
    }
}
impl From<Array> for Index {
    fn from(a: Array) -> Self {
        Index::Array(a)
    }
}
impl From<&Array> for Index {
    fn from(a: &Array) -> Self {
        Index::Array(a.clone())
    }
}
impl From<std::ops::RangeFull> for Index {
    fn from(_: std::ops::RangeFull) -> Self {
        Index::slice(None, None, 1)
    }
}

macro_rules! index_from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Index {
            fn from(i: $t) -> Self { Index::Int(i as i64) }
        }
        impl From<std::ops::Range<$t>> for Index {
            fn from(r: std::ops::Range<$t>) -> Self { Index::slice(Some(r.start as i64), Some(r.end as i64), 1) }
        }
        impl From<std::ops::RangeFrom<$t>> for Index {
            fn from(r: std::ops::RangeFrom<$t>) -> Self { Index::slice(Some(r.start as i64), None, 1) }
        }
        impl From<std::ops::RangeTo<$t>> for Index {
            fn from(r: std::ops::RangeTo<$t>) -> Self { Index::slice(None, Some(r.end as i64), 1) }
        }
        /// `a..=b` stops after `b` (`..=-1` runs to the end).
        impl From<std::ops::RangeInclusive<$t>> for Index {
            fn from(r: std::ops::RangeInclusive<$t>) -> Self {
                Index::slice(Some(*r.start() as i64), inclusive_stop(*r.end() as i64), 1)
            }
        }
        impl From<std::ops::RangeToInclusive<$t>> for Index {
            fn from(r: std::ops::RangeToInclusive<$t>) -> Self { Index::slice(None, inclusive_stop(r.end as i64), 1) }
        }
    )*};
}
index_from_int!(i32, i64, isize, usize, u32);

fn inclusive_stop(e: i64) -> Option<i64> {
    if e == -1 {
        None
    } else {
        Some(e + 1)
    }
}

/// Builds a `Vec<Index>`: `idx![.., 1, 2..;2, NewAxis, Ellipsis, &arr]`.
/// Each comma-separated item converts with `Index::from`; `range;step`
/// gives a slice a step (`..;-1` reverses an axis).
#[macro_export]
macro_rules! idx {
    ($($t:tt)*) => { $crate::__idx_munch!([] [] $($t)*) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __idx_munch {
    ([$($out:expr,)*] []) => { ::std::vec![$($out,)*] };
    ([$($out:expr,)*] [$($cur:tt)+]) => {
        ::std::vec![$($out,)* $crate::ops::Index::from($($cur)+),]
    };
    ([$($out:expr,)*] [$($cur:tt)+] , $($rest:tt)*) => {
        $crate::__idx_munch!([$($out,)* $crate::ops::Index::from($($cur)+),] [] $($rest)*)
    };
    ([$($out:expr,)*] [$($cur:tt)*] ; $($rest:tt)*) => {
        $crate::__idx_step!([$($out,)*] [$($cur)*] [] $($rest)*)
    };
    ([$($out:expr,)*] [$($cur:tt)*] $next:tt $($rest:tt)*) => {
        $crate::__idx_munch!([$($out,)*] [$($cur)* $next] $($rest)*)
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __idx_step {
    ([$($out:expr,)*] [$($r:tt)*] [$($s:tt)+]) => {
        ::std::vec![$($out,)* $crate::ops::Index::from($($r)*).step($($s)+),]
    };
    ([$($out:expr,)*] [$($r:tt)*] [$($s:tt)+] , $($rest:tt)*) => {
        $crate::__idx_munch!([$($out,)* $crate::ops::Index::from($($r)*).step($($s)+),] [] $($rest)*)
    };
    ([$($out:expr,)*] [$($r:tt)*] [$($s:tt)*] $next:tt $($rest:tt)*) => {
        $crate::__idx_step!([$($out,)*] [$($r)*] [$($s)* $next] $($rest)*)
    };
}

/// One index item resolved against an axis.
enum Item {
    /// Resolved slice.
    Slice {
        start: isize,
        len: usize,
        step: isize,
    },
    /// Wrapped integer position.
    Int(i64),
    Adv(Array),
    New,
}

struct Plan {
    items: Vec<Item>,
    has_adv: bool,
}

fn plan(op: &str, shape: &[usize], idx: &[Index]) -> Result<Plan> {
    let consuming = idx.iter().filter(|i| !matches!(i, Index::NewAxis | Index::Ellipsis)).count();
    let ellipses = idx.iter().filter(|i| matches!(i, Index::Ellipsis)).count();
    if ellipses > 1 {
        return Err(Error::invalid(op, "An index can only have a single ellipsis."));
    }
    if consuming > shape.len() {
        return Err(Error::invalid(op, format!("Too many indices for array with {} dimensions.", shape.len())));
    }
    let has_adv = idx.iter().any(|i| matches!(i, Index::Array(_)));
    let mut items = Vec::with_capacity(idx.len() + shape.len());
    let mut axis = 0usize;
    let full = |n: usize| Item::Slice { start: 0, len: n, step: 1 };
    for it in idx {
        match it {
            Index::Ellipsis => {
                for _ in 0..shape.len() - consuming {
                    items.push(full(shape[axis]));
                    axis += 1;
                }
            }
            Index::NewAxis => items.push(Item::New),
            Index::Int(i) => {
                let n = shape[axis] as i64;
                if *i < -n || *i >= n {
                    return Err(Error::out_of_range(
                        op,
                        format!("Index {i} is out of bounds for axis {axis} with size {n}."),
                    ));
                }
                items.push(Item::Int(if *i < 0 { i + n } else { *i }));
                axis += 1;
            }
            Index::Slice { start, stop, step } => {
                if *step == 0 {
                    return Err(Error::invalid(op, format!("Slice step cannot be zero (axis {axis}).")));
                }
                let (s, len) = resolve_slice(shape[axis], *start, *stop, *step);
                items.push(Item::Slice { start: s, len, step: *step as isize });
                axis += 1;
            }
            Index::Array(a) => {
                if !a.dtype().is_integer() {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "Index arrays must be integral, got {} (boolean masks: use masked_scatter).",
                            a.dtype()
                        ),
                    ));
                }
                items.push(Item::Adv(a.clone()));
                axis += 1;
            }
        }
    }
    while axis < shape.len() {
        items.push(full(shape[axis]));
        axis += 1;
    }
    Ok(Plan { items, has_adv })
}

impl Plan {
    /// The strided region every consuming item selects (ints as length 1
    /// without advanced indices; full axes under advanced indices).
    fn region(&self, shape: &[usize]) -> (Vec<isize>, Vec<isize>, Vec<usize>) {
        let (mut s, mut t, mut l) = (vec![], vec![], vec![]);
        let mut axis = 0;
        for it in &self.items {
            match it {
                Item::New => continue,
                Item::Slice { start, len, step } => {
                    s.push(*start);
                    t.push(*step);
                    l.push(*len);
                }
                Item::Int(i) if !self.has_adv => {
                    s.push(*i as isize);
                    t.push(1);
                    l.push(1);
                }
                Item::Int(_) | Item::Adv(_) => {
                    s.push(0);
                    t.push(1);
                    l.push(shape[axis]);
                }
            }
            axis += 1;
        }
        (s, t, l)
    }
}

fn get(a: &Array, p: &Plan) -> Result<Array> {
    let (s, t, l) = p.region(a.shape());
    let x = slice_raw(a, &s, &t, &l)?;
    if !p.has_adv {
        let mut shape = vec![];
        let mut axis = 0;
        for it in &p.items {
            match it {
                Item::New => shape.push(1),
                Item::Int(_) => axis += 1,
                _ => {
                    shape.push(l[axis]);
                    axis += 1;
                }
            }
        }
        return reshape_to(&x, &shape);
    }
    // Advanced indexing: one gather over the advanced axes of the sliced view.
    let (mut adv_axes, mut arrays, mut adv_pos) = (vec![], vec![], vec![]);
    let mut axis = 0;
    for (pos, it) in p.items.iter().enumerate() {
        match it {
            Item::New => continue,
            Item::Int(i) => {
                adv_axes.push(axis);
                arrays.push(Array::scalar(*i));
                adv_pos.push(pos);
            }
            Item::Adv(arr) => {
                adv_axes.push(axis);
                arrays.push(arr.clone());
                adv_pos.push(pos);
            }
            Item::Slice { .. } => {}
        }
        axis += 1;
    }
    let shapes: Vec<&[usize]> = arrays.iter().map(|x| x.shape()).collect();
    let bshape = crate::shape::broadcast_many(&shapes).map_err(|e| Error::invalid("index", e.message().to_string()))?;
    let arrays: Vec<Array> = arrays.iter().map(|x| broadcast_to(x, &bshape)).collect::<Result<_>>()?;
    let mut ss = x.shape().to_vec();
    for &ax in &adv_axes {
        ss[ax] = 1;
    }
    let g = gather_raw(&x, &arrays, &adv_axes, &ss);
    let nb = bshape.len();
    let mut gshape = bshape.clone();
    gshape.extend(x.shape().iter().enumerate().filter(|(d, _)| !adv_axes.contains(d)).map(|(_, &n)| n));
    let g = reshape_to(&g, &gshape)?;
    let adjacent = adv_pos.last().unwrap() - adv_pos[0] + 1 == adv_pos.len();
    // Result dims as positions in `g` (None: a new axis).
    let mut order: Vec<Option<usize>> = vec![];
    if !adjacent {
        order.extend((0..nb).map(Some));
    }
    let mut k = nb;
    for (pos, it) in p.items.iter().enumerate() {
        match it {
            Item::New => order.push(None),
            Item::Slice { .. } => {
                order.push(Some(k));
                k += 1;
            }
            _ => {
                if adjacent && pos == adv_pos[0] {
                    order.extend((0..nb).map(Some));
                }
            }
        }
    }
    let perm: Vec<i32> = order.iter().flatten().map(|&d| d as i32).collect();
    let g = if perm.iter().enumerate().all(|(i, &d)| i as i32 == d) { g } else { transpose_axes(&g, &perm)? };
    let final_shape: Vec<usize> = order.iter().map(|d| d.map(|d| gshape[d]).unwrap_or(1)).collect();
    reshape_to(&g, &final_shape)
}

/// `v` fitted to `shape` as an assignment source: extra leading size-1 dims
/// dropped, then broadcast.
fn fit(op: &str, v: &Array, shape: &[usize]) -> Result<Array> {
    let mut v = v.clone();
    while v.ndim() > shape.len() && v.shape()[0] == 1 {
        let s = v.shape()[1..].to_vec();
        v = reshape_to(&v, &s)?;
    }
    broadcast_to(&v, shape).map_err(|_| {
        Error::invalid(
            op,
            format!(
                "Cannot assign a value of shape {} to an index of shape {}.",
                fmt_shape(v.shape()),
                fmt_shape(shape)
            ),
        )
    })
}

fn operand_as(v: impl Into<Operand>, a: &Array) -> Result<Array> {
    match v.into() {
        Operand::Array(x) => super::creation::astype(&x, a.dtype()),
        Operand::Scalar(s) => Ok(Array::scalar_as(s, a.dtype())),
    }
}

/// The functional `a[idx] op= v`: overwrite or combine by scatter.
fn update(op_name: &str, a: &Array, idx: &[Index], v: &Array, op: ScatterOp) -> Result<Array> {
    let p = plan(op_name, a.shape(), idx)?;
    if !p.has_adv {
        let (s, t, l) = p.region(a.shape());
        let r = get(a, &p)?;
        let v = fit(op_name, v, r.shape())?;
        let v = match op {
            ScatterOp::None => v,
            ScatterOp::Sum => super::binary::add(&r, &v)?,
            ScatterOp::Prod => super::binary::multiply(&r, &v)?,
            ScatterOp::Max => super::binary::maximum(&r, &v)?,
            ScatterOp::Min => super::binary::minimum(&r, &v)?,
        };
        return slice_update_raw(a, &reshape_to(&v, &l)?, &s, &t);
    }
    // One index array on the first axis, every other axis whole: scatter rows.
    let whole = |it: &Item, n: usize| matches!(it, Item::Slice { start: 0, len, step: 1 } if *len == n);
    if let Some(Item::Adv(arr)) = p.items.first() {
        if p.items.len() == a.ndim() && p.items.iter().skip(1).zip(&a.shape()[1..]).all(|(it, &n)| whole(it, n)) {
            let mut r = arr.shape().to_vec();
            r.extend_from_slice(&a.shape()[1..]);
            let v = fit(op_name, v, &r)?;
            r.insert(arr.ndim(), 1);
            return Ok(scatter_raw(op, a, std::slice::from_ref(arr), &reshape_to(&v, &r)?, &[0]));
        }
    }
    // General case: the coordinates of every selected element along each
    // axis, found by indexing broadcast aranges, then one scatter.
    let nd = a.ndim();
    let mut coords = Vec::with_capacity(nd);
    for (d, &n) in a.shape().iter().enumerate() {
        let mut s = vec![1usize; nd];
        s[d] = n;
        let ar = reshape_to(&super::creation::arange_int(0, n as i64, 1)?, &s)?;
        coords.push(get(&broadcast_to(&ar, a.shape())?, &p)?);
    }
    let r = coords[0].shape().to_vec();
    let v = fit(op_name, v, &r)?;
    let mut us = r.clone();
    us.extend(std::iter::repeat_n(1, nd));
    let axes: Vec<usize> = (0..nd).collect();
    Ok(scatter_raw(op, a, &coords, &reshape_to(&v, &us)?, &axes))
}

/// Accumulating updates at an index (MLX's `array.at`); see [`Array::at`].
pub struct At {
    a: Array,
    idx: Vec<Index>,
}

impl At {
    fn run(&self, name: &str, v: Array, op: ScatterOp) -> Result<Array> {
        update(name, &self.a, &self.idx, &v, op)
    }
    /// `a[idx] += v`, with repeated indices accumulating.
    pub fn add(&self, v: impl Into<Operand>) -> Result<Array> {
        self.run("at.add", operand_as(v, &self.a)?, ScatterOp::Sum)
    }
    /// `a[idx] -= v`, with repeated indices accumulating.
    pub fn subtract(&self, v: impl Into<Operand>) -> Result<Array> {
        self.run("at.subtract", super::unary::negative(&operand_as(v, &self.a)?)?, ScatterOp::Sum)
    }
    /// `a[idx] *= v`, with repeated indices accumulating.
    pub fn multiply(&self, v: impl Into<Operand>) -> Result<Array> {
        self.run("at.multiply", operand_as(v, &self.a)?, ScatterOp::Prod)
    }
    /// `a[idx] /= v` (a product with `1 / v` in `a`'s dtype, as MLX does).
    pub fn divide(&self, v: impl Into<Operand>) -> Result<Array> {
        let v = match v.into() {
            Operand::Array(x) => x,
            Operand::Scalar(s) => Array::scalar_as(s, self.a.dtype()),
        };
        let r = super::binary::divide(1.0f64, &v)?;
        self.run("at.divide", super::creation::astype(&r, self.a.dtype())?, ScatterOp::Prod)
    }
    /// `a[idx] = maximum(a[idx], v)`, over repeated indices too.
    pub fn maximum(&self, v: impl Into<Operand>) -> Result<Array> {
        self.run("at.maximum", operand_as(v, &self.a)?, ScatterOp::Max)
    }
    /// `a[idx] = minimum(a[idx], v)`, over repeated indices too.
    pub fn minimum(&self, v: impl Into<Operand>) -> Result<Array> {
        self.run("at.minimum", operand_as(v, &self.a)?, ScatterOp::Min)
    }
}

impl Array {
    /// `a[idx]` with NumPy/MLX semantics (see the [module docs](self)).
    /// Basic indices give a view; integer arrays gather. Literal integers
    /// out of range are an error here; out-of-range index arrays at eval.
    pub fn index(&self, idx: impl AsRef<[Index]>) -> Result<Array> {
        let p = plan("index", self.shape(), idx.as_ref())?;
        get(self, &p)
    }
    /// `a[idx] = v` as a new array (`v` broadcast to `a[idx]`'s shape and cast
    /// to `a`'s dtype); with repeated indices the last write wins.
    pub fn index_put(&self, idx: impl AsRef<[Index]>, v: impl Into<Operand>) -> Result<Array> {
        let v = operand_as(v, self)?;
        update("index_put", self, idx.as_ref(), &v, ScatterOp::None)
    }
    /// Accumulating updates at `idx` (MLX's `a.at[idx]`): `a.at(i).add(v)`
    /// adds `v` once for every occurrence of an index.
    pub fn at(&self, idx: impl AsRef<[Index]>) -> At {
        At { a: self.clone(), idx: idx.as_ref().to_vec() }
    }
}
