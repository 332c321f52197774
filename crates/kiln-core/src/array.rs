//! The array handle and the graph node behind it.
//!
//! An [`Array`] is a cheap, clonable handle (an `Arc`) to a node that knows its
//! shape and dtype and holds either evaluated [`Data`] or the expression (a
//! primitive and its input arrays) that computes it. Ops only record nodes;
//! [`crate::eval()`] computes them.

use crate::device::{default_stream, Stream};
use crate::dtype::{Dtype, Element, Scalar};
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::primitive::Primitive;
use crate::shape::{numel, row_major_strides};
use std::cell::{Cell, RefCell};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Evaluated storage of an array: a shared buffer plus the strided view of it.
///
/// Views (transpose, broadcast, slices, reshape of contiguous data) share the
/// buffer of their input and differ only in offset and strides.
#[derive(Clone)]
pub struct Data {
    pub(crate) buf: Arc<Buffer>,
    /// Offset of element 0, in elements.
    pub(crate) offset: isize,
    /// Strides in elements, one per dimension.
    pub(crate) strides: Vec<isize>,
    /// Elements are laid out densely in row-major order starting at `offset`.
    pub(crate) row_contiguous: bool,
}

impl Data {
    /// Wraps a fresh buffer holding a row-major array of `shape`.
    pub fn contiguous(buf: Buffer, shape: &[usize]) -> Data {
        Data { buf: Arc::new(buf), offset: 0, strides: row_major_strides(shape), row_contiguous: true }
    }
    /// Wraps a shared buffer as a row-major array of `shape`.
    pub fn contiguous_shared(buf: Arc<Buffer>, shape: &[usize]) -> Data {
        Data { buf, offset: 0, strides: row_major_strides(shape), row_contiguous: true }
    }
    /// A view of `buf` with explicit offset and strides (elements).
    pub fn view(buf: Arc<Buffer>, shape: &[usize], offset: isize, strides: Vec<isize>) -> Data {
        let row_contiguous = is_row_contiguous(shape, &strides);
        Data { buf, offset, strides, row_contiguous }
    }
    /// The underlying buffer.
    pub fn buffer(&self) -> &Arc<Buffer> {
        &self.buf
    }
    /// Offset of the first element, in elements.
    pub fn offset(&self) -> isize {
        self.offset
    }
    /// Strides in elements.
    pub fn strides(&self) -> &[isize] {
        &self.strides
    }
    /// Dense row-major layout.
    pub fn is_row_contiguous(&self) -> bool {
        self.row_contiguous
    }
    /// Pointer to element 0 typed as `T`.
    pub fn ptr<T>(&self) -> *mut T {
        // SAFETY: offset stays inside the allocation for every non-empty view.
        unsafe { (self.buf.as_ptr() as *mut T).offset(self.offset) }
    }
}

/// Whether `strides` describe a dense row-major layout of `shape` (size-1 dims ignored).
pub fn is_row_contiguous(shape: &[usize], strides: &[isize]) -> bool {
    let mut expect = 1isize;
    for i in (0..shape.len()).rev() {
        if shape[i] == 1 {
            continue;
        }
        if strides[i] != expect {
            return false;
        }
        expect *= shape[i] as isize;
    }
    true
}

/// A recorded operation: a primitive applied to inputs on a stream.
pub(crate) struct Expr {
    pub(crate) prim: Arc<dyn Primitive>,
    pub(crate) inputs: Vec<Array>,
    pub(crate) stream: Stream,
    /// All outputs of a multi-output primitive (empty for a single output).
    pub(crate) siblings: OnceLock<Vec<Weak<Node>>>,
    /// Shape and dtype of every output of a multi-output primitive, so a
    /// sibling the user dropped can still be stood in for.
    pub(crate) metas: Vec<(Vec<usize>, Dtype)>,
}

#[allow(dead_code)]
impl Expr {
    /// The marker schedule uses for a node with neither data nor primitive.
    pub(crate) fn placeholder() -> Expr {
        Expr {
            prim: Arc::new(crate::transforms::Copy),
            inputs: Vec::new(),
            stream: default_stream(),
            siblings: OnceLock::new(),
            metas: Vec::new(),
        }
    }
    pub(crate) fn is_placeholder(&self) -> bool {
        self.inputs.is_empty() && self.prim.as_any().is::<crate::transforms::Copy>()
    }
}

pub(crate) struct NodeState {
    pub(crate) data: Option<Data>,
    /// The expression and this node's output position in it; `None` once detached.
    pub(crate) expr: Option<(Arc<Expr>, usize)>,
    /// Claimed by a scheduled eval (not yet computed) or failed on a stream worker.
    pub(crate) pending: Option<crate::stream::Pending>,
}

pub(crate) struct Node {
    pub(crate) shape: Vec<usize>,
    pub(crate) dtype: Dtype,
    /// Created inside a transform: eval keeps its graph (no detach, no donation).
    pub(crate) tracer: bool,
    pub(crate) state: Mutex<NodeState>,
}

impl Node {
    pub(crate) fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    static TRACE_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Marks arrays created while `f` runs as tracers (their graph survives eval).
pub(crate) fn tracing<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            TRACE_DEPTH.with(|d| d.set(d.get() - 1));
        }
    }
    TRACE_DEPTH.with(|d| d.set(d.get() + 1));
    let _g = Guard;
    f()
}

pub(crate) fn in_tracing() -> bool {
    TRACE_DEPTH.with(|d| d.get() > 0)
}

/// An n-dimensional array: a lazy, immutable value in the computation graph.
///
/// Cloning is cheap (a reference count). Ops validate shapes and dtypes when
/// called and record a node; nothing is computed until [`Array::eval`],
/// [`crate::eval()`] or a read such as [`Array::to_vec`] or `Display`.
///
/// ```
/// use kiln_core::Array;
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
/// let b = &a * 2.0;
/// assert_eq!(b.to_vec::<f32>().unwrap(), vec![2.0, 4.0, 6.0]);
/// ```
#[derive(Clone)]
pub struct Array(pub(crate) Arc<Node>);

impl Array {
    fn make(shape: Vec<usize>, dtype: Dtype, data: Option<Data>, expr: Option<(Arc<Expr>, usize)>) -> Array {
        Array(Arc::new(Node {
            shape,
            dtype,
            tracer: in_tracing(),
            state: Mutex::new(NodeState { data, expr, pending: None }),
        }))
    }

    /// A stand-in with no data and no primitive, used by transforms while tracing.
    pub(crate) fn placeholder(shape: Vec<usize>, dtype: Dtype) -> Array {
        Array::make(shape, dtype, None, None)
    }

    /// An evaluated array wrapping `data`.
    pub fn from_data(shape: Vec<usize>, dtype: Dtype, data: Data) -> Array {
        Array::make(shape, dtype, Some(data), None)
    }

    /// Records `prim(inputs)` with one output of `shape` and `dtype`.
    pub fn from_op(shape: Vec<usize>, dtype: Dtype, prim: impl Primitive, inputs: Vec<Array>) -> Array {
        Array::from_op_arc(shape, dtype, Arc::new(prim), inputs)
    }

    /// Like [`Array::from_op`] with a shared primitive.
    pub fn from_op_arc(shape: Vec<usize>, dtype: Dtype, prim: Arc<dyn Primitive>, inputs: Vec<Array>) -> Array {
        debug_assert_registered(prim.as_ref());
        let expr =
            Arc::new(Expr { prim, inputs, stream: default_stream(), siblings: OnceLock::new(), metas: Vec::new() });
        Array::make(shape, dtype, None, Some((expr, 0)))
    }

    /// Records a primitive with several outputs; the returned arrays are siblings.
    pub fn from_op_multi(outs: Vec<(Vec<usize>, Dtype)>, prim: Arc<dyn Primitive>, inputs: Vec<Array>) -> Vec<Array> {
        debug_assert_registered(prim.as_ref());
        let expr = Arc::new(Expr { prim, inputs, stream: default_stream(), siblings: OnceLock::new(), metas: outs });
        let arrays: Vec<Array> = expr
            .metas
            .iter()
            .enumerate()
            .map(|(i, (s, d))| Array::make(s.clone(), *d, None, Some((expr.clone(), i))))
            .collect();
        let _ = expr.siblings.set(arrays.iter().map(|a| Arc::downgrade(&a.0)).collect());
        arrays
    }

    /// An array copied from `data` with `shape`.
    pub fn from_slice<T: Element>(data: &[T], shape: &[usize]) -> Result<Array> {
        let n = crate::shape::checked_numel("array", shape)?;
        if n != data.len() {
            return Err(Error::invalid(
                "array",
                format!("{} elements cannot fill shape {}.", data.len(), crate::error::fmt_shape(shape)),
            ));
        }
        let buf = Buffer::alloc(std::mem::size_of_val(data))?;
        // SAFETY: the buffer holds exactly `data.len()` elements of T and is 64-byte aligned.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf.as_ptr() as *mut T, data.len()) };
        Ok(Array::from_data(shape.to_vec(), T::DTYPE, Data::contiguous(buf, shape)))
    }

    /// A new row-major array of `shape` whose elements `fill` writes (they
    /// start zeroed); returns the array and what `fill` returned. Builds
    /// large arrays (e.g. weights converted while a file is read) without an
    /// intermediate `Vec` and its copy.
    ///
    /// ```
    /// # use kiln_core::Array;
    /// let (a, sum) = Array::from_writer::<f32, _>(&[2, 3], |v| {
    ///     for (i, x) in v.iter_mut().enumerate() {
    ///         *x = i as f32;
    ///     }
    ///     Ok(v.iter().sum::<f32>())
    /// })
    /// .unwrap();
    /// assert_eq!(a.to_vec::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    /// assert_eq!(sum, 15.0);
    /// ```
    pub fn from_writer<T: Element, R>(shape: &[usize], fill: impl FnOnce(&mut [T]) -> Result<R>) -> Result<(Array, R)> {
        let n = crate::shape::checked_numel("array", shape)?;
        let bytes = n.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            Error::invalid("array", format!("Shape {} is too large.", crate::error::fmt_shape(shape)))
        })?;
        let buf = Buffer::zeroed(bytes)?;
        // SAFETY: the zeroed, 64-byte-aligned buffer holds `n` elements of T
        // (every Element type is valid as all-zero bytes) and nothing else
        // refers to it until the array is made below.
        let out = fill(unsafe { std::slice::from_raw_parts_mut(buf.as_ptr() as *mut T, n) })?;
        Ok((Array::from_data(shape.to_vec(), T::DTYPE, Data::contiguous(buf, shape)), out))
    }

    /// An array that takes `data` with `shape`.
    pub fn from_vec<T: Element>(data: Vec<T>, shape: &[usize]) -> Result<Array> {
        Array::from_slice(&data, shape)
    }

    /// A 0-d array holding `x`.
    pub fn scalar<T: Element>(x: T) -> Array {
        Array::from_slice(&[x], &[]).expect("a scalar always fits")
    }

    /// A 0-d array of `value` converted to `dtype`.
    pub fn scalar_as(value: Scalar, dtype: Dtype) -> Array {
        crate::dispatch_dtype!(dtype, T => Array::scalar(scalar_to::<T>(value)))
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    /// Size of dimension `axis` (negative counts from the end).
    pub fn dim(&self, axis: i32) -> Result<usize> {
        Ok(self.0.shape[crate::shape::normalize_axis("dim", axis, self.ndim())?])
    }
    /// The dtype.
    pub fn dtype(&self) -> Dtype {
        self.0.dtype
    }
    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.0.shape.len()
    }
    /// Number of elements.
    pub fn size(&self) -> usize {
        numel(&self.0.shape)
    }
    /// Bytes per element.
    pub fn itemsize(&self) -> usize {
        self.0.dtype.size()
    }
    /// Total bytes of the elements.
    pub fn nbytes(&self) -> usize {
        self.size() * self.itemsize()
    }
    /// A unique id for the node (stable while the array lives).
    pub fn id(&self) -> usize {
        Arc::as_ptr(&self.0) as *const u8 as usize
    }
    /// Whether the array has been computed.
    pub fn is_evaluated(&self) -> bool {
        self.0.lock().data.is_some()
    }
    /// Whether this array was created inside a transform that is still tracing.
    pub fn is_tracer(&self) -> bool {
        self.0.tracer && in_tracing()
    }

    /// Computes the array (and whatever it depends on).
    pub fn eval(&self) -> Result<()> {
        crate::eval::eval(&[self])
    }

    /// The evaluated data. Panics if the array is not evaluated (kernels only
    /// see evaluated inputs).
    pub fn data(&self) -> Data {
        self.0.lock().data.clone().expect("array must be evaluated before its data is read")
    }

    /// The primitive that computes this array, if it is not yet evaluated or is a tracer.
    pub fn primitive(&self) -> Option<Arc<dyn Primitive>> {
        self.0.lock().expr.as_ref().map(|(e, _)| e.prim.clone())
    }
    /// The inputs of this array's primitive (empty for leaves).
    pub fn inputs(&self) -> Vec<Array> {
        self.0.lock().expr.as_ref().map(|(e, _)| e.inputs.clone()).unwrap_or_default()
    }
    /// The outputs of this array's primitive (itself for single-output ops), and its position.
    pub fn siblings(&self) -> (Vec<Array>, usize) {
        let st = self.0.lock();
        match &st.expr {
            Some((e, pos)) => match e.siblings.get() {
                // A dropped sibling is stood in for by a placeholder of its shape.
                Some(s) => (
                    s.iter()
                        .zip(&e.metas)
                        .map(|(w, (shape, d))| {
                            w.upgrade().map(Array).unwrap_or_else(|| Array::placeholder(shape.clone(), *d))
                        })
                        .collect(),
                    *pos,
                ),
                None => (vec![self.clone()], 0),
            },
            None => (vec![self.clone()], 0),
        }
    }
    pub(crate) fn expr(&self) -> Option<(Arc<Expr>, usize)> {
        self.0.lock().expr.clone()
    }
    /// The stream this array's op runs on (the default stream for leaves).
    pub fn stream(&self) -> Stream {
        self.expr().map(|(e, _)| e.stream).unwrap_or_else(default_stream)
    }

    /// Whether the buffer could be reused for an output: only the graph holds
    /// this node, nothing else shares the buffer, and the layout is dense.
    pub fn is_donatable(&self) -> bool {
        if Arc::strong_count(&self.0) != 1 || self.is_tracer() {
            return false;
        }
        let st = self.0.lock();
        match &st.data {
            Some(d) => d.row_contiguous && d.offset == 0 && Arc::strong_count(&d.buf) == 1,
            None => false,
        }
    }

    /// Copies the elements out in row-major order. `T` must match the dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype() {
            return Err(Error::invalid(
                "to_vec",
                format!("Requested {} elements from an array of dtype {}.", T::DTYPE, self.dtype()),
            ));
        }
        self.eval()?;
        let d = self.data();
        Ok(crate::backend::cpu::strided::gather_to_vec::<T>(&d, self.shape()))
    }

    /// The single element of a size-1 array. `T` must match the dtype.
    pub fn item<T: Element>(&self) -> Result<T> {
        if self.size() != 1 {
            return Err(Error::invalid(
                "item",
                format!("item() needs an array of size 1, got shape {}.", crate::error::fmt_shape(self.shape())),
            ));
        }
        Ok(self.to_vec::<T>()?[0])
    }

    /// The single element of a size-1 array as a [`Scalar`], whatever the dtype.
    pub fn item_scalar(&self) -> Result<Scalar> {
        crate::dispatch_dtype!(self.dtype(), T => self.item::<T>().map(|x| x.to_scalar()))
    }
}

/// Every primitive must be listed in [`crate::primitive::ALL_PRIMITIVES`] so the
/// rule-coverage test sees it.
#[inline]
fn debug_assert_registered(p: &dyn Primitive) {
    debug_assert!(
        crate::primitive::ALL_PRIMITIVES.contains(&p.name()),
        "primitive {} is not listed in ALL_PRIMITIVES",
        p.name()
    );
}

/// Converts a scalar to an element type with cast semantics.
pub fn scalar_to<T: Element>(s: Scalar) -> T {
    match s {
        Scalar::Bool(b) => T::cast_from(b),
        Scalar::Int(i) => T::cast_from(i),
        Scalar::UInt(u) => T::cast_from(u),
        Scalar::Float(f) => T::cast_from(f),
        Scalar::Complex(r, i) => T::from_c64(crate::dtype::c64::new(r as f32, i as f32)),
    }
}

impl std::fmt::Debug for Array {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

// Deep graphs (a chain of a million adds) must drop without recursion: an
// expression hands its inputs to a per-thread work list, drained by the
// outermost drop.
thread_local! {
    static DRAINING: Cell<bool> = const { Cell::new(false) };
    static PENDING: RefCell<Vec<Array>> = const { RefCell::new(Vec::new()) };
}

impl Drop for Expr {
    fn drop(&mut self) {
        let inputs = std::mem::take(&mut self.inputs);
        if inputs.is_empty() {
            return;
        }
        let queued = PENDING.try_with(|p| p.borrow_mut().extend(inputs)).is_ok();
        if !queued || DRAINING.with(|d| d.replace(true)) {
            return;
        }
        while let Some(a) = PENDING.with(|p| p.borrow_mut().pop()) {
            drop(a);
        }
        DRAINING.with(|d| d.set(false));
    }
}
