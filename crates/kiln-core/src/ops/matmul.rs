//! The matmul family: the `Matmul` primitive (batched, broadcasting) and the
//! `GatherMM` primitive, plus the composites built on them: addmm,
//! tensordot, inner, outer, vecdot, kron, einsum (with greedy path
//! optimisation, as opt_einsum's greedy) and block_masked_mm.

use super::binary::{add, equal, multiply};
use super::creation::{arange_int, astype};
use super::reduce::{sum, sum_to_shape};
use super::shape::{
    align_batch_axes, broadcast_to, diagonal, expand_dims, moveaxis, repeat, reshape_to, transpose_perm,
};
use super::slicing::slice;
use super::unary::conjugate;
use crate::array::{Array, Data};
use crate::backend::Backend;
use crate::dtype::{promote_types, Dtype};
use crate::error::{fmt_shape, Error, Result};
use crate::primitive::{OutSpec, Primitive};
use crate::shape::{broadcast_shapes, normalize_axis, numel};

// ---------------------------------------------------------------- Matmul

/// Batched matrix product of `(..., m, k)` and `(..., k, n)` operands of one
/// inexact dtype whose batch dims broadcast.
#[derive(Debug, PartialEq)]
pub struct Matmul;

impl Primitive for Matmul {
    fn name(&self) -> &'static str {
        "Matmul"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.matmul(&inputs[0], &inputs[1], &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let (a, b, g) = (&primals[0], &primals[1], &cotangents[0]);
        argnums
            .iter()
            .map(|&i| {
                // Complex operands: the adjoint (conjugate transpose), MLX's convention.
                let adj = |x: &Array| {
                    let t = swap_last(x)?;
                    if t.dtype().is_complex() {
                        super::unary::conjugate(&t)
                    } else {
                        Ok(t)
                    }
                };
                // An operand recorded as a swap of its last two axes (Linear's
                // `W^T`) gets the transposed product, swapped back: the swap's
                // own vjp then undoes it, so the parameter's gradient is a
                // row-contiguous product rather than a transposed view (which
                // the optimizer update would read column by column).
                let real = !g.dtype().is_complex();
                if i == 0 {
                    if real && is_last_axes_swap(a) {
                        let r = sum_to_shape(&matmul_raw(b, &swap_last(g)?)?, &swapped_shape(a))?;
                        return swap_last(&r);
                    }
                    sum_to_shape(&matmul_raw(g, &adj(b)?)?, a.shape())
                } else {
                    // A matrix shared by a batch of `a` (a linear layer's weight)
                    // gets the sum of the batch's products: one product with the
                    // batch folded into the contraction, (B·m × k)ᵀ·(B·m × n), so
                    // there is no B-fold intermediate and no separate sum.
                    let (na, nb) = (a.ndim(), b.ndim());
                    let fold = real && nb == 2 && na > 2 && a.shape()[..na - 2] == g.shape()[..na - 2];
                    let (a, g) = if fold {
                        let rows = numel(&a.shape()[..na - 1]);
                        (&reshape_to(a, &[rows, a.shape()[na - 1]])?, &reshape_to(g, &[rows, g.shape()[na - 1]])?)
                    } else {
                        (a, g)
                    };
                    if real && is_last_axes_swap(b) {
                        let r = sum_to_shape(&matmul_raw(&swap_last(g)?, a)?, &swapped_shape(b))?;
                        return swap_last(&r);
                    }
                    sum_to_shape(&matmul_raw(&adj(a)?, g)?, b.shape())
                }
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let mut acc: Option<Array> = None;
        for (t, &i) in tangents.iter().zip(argnums) {
            let term = if i == 0 { matmul_raw(t, &primals[1])? } else { matmul_raw(&primals[0], t)? };
            acc = Some(match acc {
                None => term,
                Some(x) => add(&x, &term)?,
            });
        }
        Ok(vec![acc.expect("jvp needs a tangent")])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        // The vmapped axis becomes a leading batch dimension of both operands.
        let (a, b, ax) = align_batch_axes(&inputs[0], axes[0], &inputs[1], axes[1])?;
        Ok((vec![matmul_raw(&a, &b)?], vec![ax]))
    }
    fn output_shapes(&self, inputs: &[Array]) -> Result<Vec<Vec<usize>>> {
        let (a, b) = (inputs[0].shape(), inputs[1].shape());
        if a.len() < 2 || b.len() < 2 || a[a.len() - 1] != b[b.len() - 2] {
            return Err(shape_mismatch(a, b));
        }
        let mut s = broadcast_shapes(&a[..a.len() - 2], &b[..b.len() - 2])?;
        s.extend([a[a.len() - 2], b[b.len() - 1]]);
        Ok(vec![s])
    }
    crate::prim_common!();
}

/// Whether `x` is recorded as a `Transpose` that swaps its last two axes only.
fn is_last_axes_swap(x: &Array) -> bool {
    let n = x.ndim();
    x.primitive().is_some_and(|p| {
        p.as_any().downcast_ref::<super::shape::Transpose>().is_some_and(|t| {
            let perm = t.perm();
            n >= 2 && perm.iter().take(n - 2).enumerate().all(|(i, &q)| i == q) && perm[n - 2..] == [n - 1, n - 2]
        })
    })
}

/// `x`'s shape with the last two axes swapped.
fn swapped_shape(x: &Array) -> Vec<usize> {
    let mut s = x.shape().to_vec();
    let n = s.len();
    s.swap(n - 2, n - 1);
    s
}

/// Swaps the last two axes (a view).
fn swap_last(x: &Array) -> Result<Array> {
    let n = x.ndim();
    let mut perm: Vec<usize> = (0..n).collect();
    perm.swap(n - 2, n - 1);
    transpose_perm(x, &perm)
}

/// Records a matmul of operands with rank ≥ 2 and one dtype (shapes checked).
pub(crate) fn matmul_raw(a: &Array, b: &Array) -> Result<Array> {
    let (na, nb) = (a.ndim(), b.ndim());
    if a.shape()[na - 1] != b.shape()[nb - 2] {
        return Err(shape_mismatch(a.shape(), b.shape()));
    }
    let batch = broadcast_shapes(&a.shape()[..na - 2], &b.shape()[..nb - 2]).map_err(|_| {
        Error::invalid(
            "matmul",
            format!(
                "Batch dimensions of inputs with shapes {} and {} cannot be broadcast.",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        )
    })?;
    let mut shape = batch;
    shape.push(a.shape()[na - 2]);
    shape.push(b.shape()[nb - 1]);
    Ok(Array::from_op(shape, a.dtype(), Matmul, vec![a.clone(), b.clone()]))
}

fn shape_mismatch(a: &[usize], b: &[usize]) -> Error {
    Error::invalid(
        "matmul",
        format!(
            "Last dimension of first input with shape {} must match second to last dimension of second input with shape {}.",
            fmt_shape(a),
            fmt_shape(b)
        ),
    )
}

/// An invalid-argument error of `op` whose message `msg` builds from the
/// formatted shapes of both operands.
fn shapes_error(op: &str, a: &[usize], b: &[usize], msg: impl FnOnce(String, String) -> String) -> Error {
    Error::invalid(op, msg(fmt_shape(a), fmt_shape(b)))
}

/// The common dtype of a product of two batches of matrices (`op` is
/// `block_masked_mm` or `gather_mm`): both at least 2-D, inexact, with
/// matching inner dimensions.
fn matrices_dtype(op: &str, a: &Array, b: &Array) -> Result<Dtype> {
    if a.ndim() < 2 || b.ndim() < 2 {
        return Err(shapes_error(op, a.shape(), b.shape(), |x, y| {
            format!("Inputs must have at least two dimensions, got shapes {x} and {y}.")
        }));
    }
    let d = inexact_dtype(op, a.dtype(), b.dtype())?;
    if a.shape()[a.ndim() - 1] != b.shape()[b.ndim() - 2] {
        return Err(shape_mismatch(a.shape(), b.shape()));
    }
    Ok(d)
}

/// The inexact dtype `op` computes in, or MLX's error for integer/bool inputs.
fn inexact_dtype(op: &str, a: Dtype, b: Dtype) -> Result<Dtype> {
    let d = promote_types(a, b);
    if !d.is_inexact() {
        return Err(Error::invalid(
            op,
            format!(
                "Only inexact types are supported but {a} and {b} were provided which results in {d}, which is not a floating point type."
            ),
        ));
    }
    Ok(d)
}

/// Matrix product with NumPy/MLX semantics: batch dims broadcast, a 1-D
/// first operand is a row vector and a 1-D second operand a column vector
/// (the inserted dimension is removed from the result). Inputs promote to a
/// common inexact dtype; integer and bool products are an error, as in MLX.
///
/// ```
/// use kiln_core::{ops, Array};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
/// let y = ops::matmul(&a, &a).unwrap();
/// assert_eq!(y.to_vec::<f32>().unwrap(), vec![7.0, 10.0, 15.0, 22.0]);
/// ```
pub fn matmul(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err(Error::invalid("matmul", "Got 0 dimension input. Inputs must have at least one dimension."));
    }
    let d = inexact_dtype("matmul", a.dtype(), b.dtype())?;
    let (a0, b0) = (a.shape().to_vec(), b.shape().to_vec());
    let mut x = astype(a, d)?;
    let mut y = astype(b, d)?;
    if x.ndim() == 1 {
        x = reshape_to(&x, &[1, a0[0]])?;
    }
    if y.ndim() == 1 {
        y = reshape_to(&y, &[b0[0], 1])?;
    }
    if x.shape()[x.ndim() - 1] != y.shape()[y.ndim() - 2] {
        return Err(shape_mismatch(&a0, &b0));
    }
    let mut out = matmul_raw(&x, &y)?;
    let mut shape = out.shape().to_vec();
    if b0.len() == 1 {
        shape.pop();
    }
    if a0.len() == 1 {
        let n = shape.len();
        shape.remove(n - 1 - (b0.len() != 1) as usize);
    }
    if shape.as_slice() != out.shape() {
        out = reshape_to(&out, &shape)?;
    }
    Ok(out)
}

/// `alpha * (a @ b) + beta * c`, with `c` broadcast to the product's shape.
/// All three promote to a common inexact dtype.
pub fn addmm(c: &Array, a: &Array, b: &Array, alpha: f64, beta: f64) -> Result<Array> {
    let d = inexact_dtype("addmm", promote_types(a.dtype(), b.dtype()), c.dtype())?;
    let ab = matmul(&astype(a, d)?, &astype(b, d)?)?;
    let c = astype(c, d)?;
    let bad = || {
        shapes_error("addmm", c.shape(), ab.shape(), |x, y| {
            format!("Input c with shape {x} cannot be broadcast to the product's shape {y}.")
        })
    };
    if broadcast_shapes(c.shape(), ab.shape()).map_err(|_| bad())?.as_slice() != ab.shape() {
        return Err(bad());
    }
    let p = if alpha == 1.0 { ab } else { multiply(&ab, alpha)? };
    if beta == 0.0 {
        return Ok(p);
    }
    let q = if beta == 1.0 { c } else { multiply(&c, beta)? };
    add(&p, &q)
}

// ---------------------------------------------------------------- tensordot & co.

/// Which axes [`tensordot`] contracts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TensordotAxes {
    /// The last `n` axes of `a` with the first `n` axes of `b`.
    Count(usize),
    /// These axes of `a` with these axes of `b`, pairwise.
    Lists(Vec<i32>, Vec<i32>),
}

impl From<usize> for TensordotAxes {
    fn from(n: usize) -> Self {
        TensordotAxes::Count(n)
    }
}
impl From<(Vec<i32>, Vec<i32>)> for TensordotAxes {
    fn from(p: (Vec<i32>, Vec<i32>)) -> Self {
        TensordotAxes::Lists(p.0, p.1)
    }
}

/// Contracts `a` and `b` over the given axes; the result has `a`'s free axes
/// followed by `b`'s.
pub fn tensordot(a: &Array, b: &Array, axes: impl Into<TensordotAxes>) -> Result<Array> {
    let op = "tensordot";
    let (xa, xb): (Vec<usize>, Vec<usize>) = match axes.into() {
        TensordotAxes::Count(n) => {
            if n > a.ndim() || n > b.ndim() {
                return Err(shapes_error(op, a.shape(), b.shape(), |x, y| {
                    format!("Cannot contract {n} axes of arrays with shapes {x} and {y}.")
                }));
            }
            ((a.ndim() - n..a.ndim()).collect(), (0..n).collect())
        }
        TensordotAxes::Lists(la, lb) => {
            if la.len() != lb.len() {
                return Err(Error::invalid(op, "axes must have the same number of entries for a and b."));
            }
            let la = la.iter().map(|&x| normalize_axis(op, x, a.ndim())).collect::<Result<Vec<_>>>()?;
            let lb = lb.iter().map(|&x| normalize_axis(op, x, b.ndim())).collect::<Result<Vec<_>>>()?;
            (la, lb)
        }
    };
    for (&i, &j) in xa.iter().zip(&xb) {
        if a.shape()[i] != b.shape()[j] {
            return Err(shapes_error(op, a.shape(), b.shape(), |x, y| {
                format!("a and b must have the same shape on the contracted axes (shapes {x} and {y}).")
            }));
        }
    }
    let unique = |v: &[usize]| {
        let mut s = v.to_vec();
        s.sort();
        s.dedup();
        s.len() == v.len()
    };
    if !unique(&xa) || !unique(&xb) {
        return Err(Error::invalid(op, "Repeated axes in the contraction."));
    }
    let d = inexact_dtype("matmul", a.dtype(), b.dtype())?;
    let free_a: Vec<usize> = (0..a.ndim()).filter(|i| !xa.contains(i)).collect();
    let free_b: Vec<usize> = (0..b.ndim()).filter(|i| !xb.contains(i)).collect();
    let k: usize = xa.iter().map(|&i| a.shape()[i]).product();
    let m: usize = free_a.iter().map(|&i| a.shape()[i]).product();
    let n: usize = free_b.iter().map(|&i| b.shape()[i]).product();
    let pa: Vec<usize> = free_a.iter().chain(&xa).copied().collect();
    let pb: Vec<usize> = xb.iter().chain(&free_b).copied().collect();
    let x = reshape_to(&transpose_perm(&astype(a, d)?, &pa)?, &[m, k])?;
    let y = reshape_to(&transpose_perm(&astype(b, d)?, &pb)?, &[k, n])?;
    let mut shape: Vec<usize> = free_a.iter().map(|&i| a.shape()[i]).collect();
    shape.extend(free_b.iter().map(|&i| b.shape()[i]));
    reshape_to(&matmul_raw(&x, &y)?, &shape)
}

/// Inner product over the last axes (a 0-d operand multiplies).
pub fn inner(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return multiply(a, b);
    }
    if a.shape()[a.ndim() - 1] != b.shape()[b.ndim() - 1] {
        return Err(shapes_error("inner", a.shape(), b.shape(), |x, y| {
            format!("a and b must have the same last dimension (shapes {x} and {y}).")
        }));
    }
    tensordot(a, b, (vec![-1], vec![-1]))
}

/// Outer product of the flattened operands.
pub fn outer(a: &Array, b: &Array) -> Result<Array> {
    let x = reshape_to(a, &[a.size(), 1])?;
    let y = reshape_to(b, &[1, b.size()])?;
    multiply(&x, &y)
}

/// Vector dot product along `axis`: `sum(conj(a) * b, axis)` over the
/// broadcast operands. As in MLX, `axis` (normalised against the larger rank)
/// must be a valid axis of both inputs with the same size in each.
pub fn vecdot(a: &Array, b: &Array, axis: i32) -> Result<Array> {
    let op = "vecdot";
    if a.ndim() == 0 || b.ndim() == 0 {
        return Err(Error::invalid(op, "inputs must be at least 1D."));
    }
    let nd = a.ndim().max(b.ndim()) as i64;
    if (axis as i64) < -nd || (axis as i64) >= nd {
        return Err(Error::out_of_range(op, format!("axis {axis} is out of bounds for rank {nd}.")));
    }
    let ax = if axis < 0 { axis as i64 + nd } else { axis as i64 } as usize;
    if ax >= a.ndim() || ax >= b.ndim() {
        return Err(shapes_error(op, a.shape(), b.shape(), |x, y| {
            format!("axis is out of bounds for inputs with shapes {x} and {y}.")
        }));
    }
    if a.shape()[ax] != b.shape()[ax] {
        return Err(shapes_error(op, a.shape(), b.shape(), |x, y| {
            format!("a and b must have the same size along axis {ax} (shapes {x} and {y}).")
        }));
    }
    let ca = if a.dtype().is_complex() { conjugate(a)? } else { a.clone() };
    sum(&multiply(&ca, b)?, ax as i32, false)
}

/// Kronecker product: `out[i*B + j] = a[i] * b[j]` along every axis (the
/// operand of lower rank gets leading size-1 axes).
pub fn kron(a: &Array, b: &Array) -> Result<Array> {
    if a.ndim() == 0 || b.ndim() == 0 {
        return multiply(a, b);
    }
    let nd = a.ndim().max(b.ndim());
    let pad = |x: &Array| {
        let mut s = vec![1usize; nd - x.ndim()];
        s.extend_from_slice(x.shape());
        s
    };
    let (sa, sb) = (pad(a), pad(b));
    let mut ia = Vec::with_capacity(2 * nd);
    let mut ib = Vec::with_capacity(2 * nd);
    for i in 0..nd {
        ia.extend([sa[i], 1]);
        ib.extend([1, sb[i]]);
    }
    let p = multiply(&reshape_to(a, &ia)?, &reshape_to(b, &ib)?)?;
    let out: Vec<usize> = (0..nd).map(|i| sa[i] * sb[i]).collect();
    reshape_to(&p, &out)
}

// ---------------------------------------------------------------- block_masked_mm

/// Matrix product with `block_size × block_size` blocks masked out (MLX's
/// `block_masked_mm`). Masks have shapes `(..., ⌈M/bs⌉, ⌈K/bs⌉)` (lhs),
/// `(..., ⌈K/bs⌉, ⌈N/bs⌉)` (rhs) and `(..., ⌈M/bs⌉, ⌈N/bs⌉)` (out); bool
/// masks select blocks and float masks scale them.
pub fn block_masked_mm(
    a: &Array,
    b: &Array,
    block_size: usize,
    mask_out: Option<&Array>,
    mask_lhs: Option<&Array>,
    mask_rhs: Option<&Array>,
) -> Result<Array> {
    let op = "block_masked_mm";
    if mask_out.is_none() && mask_lhs.is_none() && mask_rhs.is_none() {
        // Nothing masked: a plain product (MLX accepts any block size here).
        return matmul(a, b);
    }
    if block_size != 32 && block_size != 64 {
        return Err(Error::invalid(op, format!("Only block_sizes 32, 64 are supported, got {block_size}.")));
    }
    let d = matrices_dtype(op, a, b)?;
    let (m, k) = (a.shape()[a.ndim() - 2], a.shape()[a.ndim() - 1]);
    let n = b.shape()[b.ndim() - 1];
    let expand = |mask: &Array, r: usize, c: usize, what: &str| -> Result<Array> {
        let nd = mask.ndim();
        let (br, bc) = (r.div_ceil(block_size), c.div_ceil(block_size));
        if nd < 2 || mask.shape()[nd - 2] != br || mask.shape()[nd - 1] != bc {
            return Err(Error::invalid(
                op,
                format!(
                    "Mask {what} with shape {} must end in ({br}, {bc}) for block size {block_size}.",
                    fmt_shape(mask.shape())
                ),
            ));
        }
        // Bool masks select, numeric masks scale; either way in the product's dtype.
        let mk = astype(mask, d)?;
        let e = repeat(&repeat(&mk, block_size as i64, Some(nd as i32 - 2))?, block_size as i64, Some(nd as i32 - 1))?;
        let mut stops: Vec<i64> = e.shape().iter().map(|&s| s as i64).collect();
        stops[nd - 2] = r as i64;
        stops[nd - 1] = c as i64;
        slice(&e, &vec![0; nd], &stops, &vec![1; nd])
    };
    let mut x = astype(a, d)?;
    let mut y = astype(b, d)?;
    if let Some(ml) = mask_lhs {
        x = multiply(&x, &expand(ml, m, k, "lhs")?)?;
    }
    if let Some(mr) = mask_rhs {
        y = multiply(&y, &expand(mr, k, n, "rhs")?)?;
    }
    let mut out = matmul_raw(&x, &y)?;
    if let Some(mo) = mask_out {
        out = multiply(&out, &expand(mo, m, n, "out")?)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------- GatherMM

/// Gathered batched matmul: output batch element `i` is `a[lhs[i]] @ b[rhs[i]]`
/// with `a`, `b` read as flat stacks of matrices. Inputs: `a`, `b`, `lhs`,
/// `rhs` (indices broadcast to the output batch shape).
#[derive(Debug, PartialEq)]
pub struct GatherMM;

impl Primitive for GatherMM {
    fn name(&self) -> &'static str {
        "GatherMM"
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.gather_mm(&inputs[0], &inputs[1], &inputs[2], &inputs[3], &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], argnums: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let (a, b, li, ri, g) = (&primals[0], &primals[1], &primals[2], &primals[3], &cotangents[0]);
        let nbatch = li.ndim();
        let bax: Vec<i32> = (0..nbatch as i32).collect();
        argnums
            .iter()
            .map(|&i| match i {
                0 => {
                    // dA[j] = sum over i with lhs[i] == j of g[i] @ b[rhs[i]]^T.
                    let bsel = select_matrices(b, ri)?;
                    let ga = matmul_raw(g, &swap_last(&bsel)?)?;
                    scatter_matrices(&ga, li, a, &bax)
                }
                1 => {
                    let asel = select_matrices(a, li)?;
                    let gb = matmul_raw(&swap_last(&asel)?, g)?;
                    scatter_matrices(&gb, ri, b, &bax)
                }
                // Integer indices: a zero cotangent.
                _ => super::creation::zeros_like(&primals[i]),
            })
            .collect()
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let mut acc: Option<Array> = None;
        for (t, &i) in tangents.iter().zip(argnums) {
            let mut ins = primals.to_vec();
            match i {
                0 | 1 => ins[i] = t.clone(),
                _ => continue,
            }
            let term = gather_mm_raw(&ins[0], &ins[1], &ins[2], &ins[3])?;
            acc = Some(match acc {
                None => term,
                Some(x) => add(&x, &term)?,
            });
        }
        match acc {
            Some(a) => Ok(vec![a]),
            None => Ok(vec![super::creation::zeros_like(&gather_mm_raw(
                &primals[0],
                &primals[1],
                &primals[2],
                &primals[3],
            )?)?]),
        }
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let v = super::slicing::batch_size(inputs, axes);
        let front = |x: &Array, ax: Option<usize>| -> Result<Option<Array>> {
            ax.map(|ax| moveaxis(x, ax as i32, 0)).transpose()
        };
        // A batched operand becomes one flat stack of v·count matrices, and
        // its indices shift by count per batch element.
        let prep = |x: &Array, xa: Option<usize>, idx: &Array, ia: Option<usize>| -> Result<(Array, Array)> {
            let idx = match front(idx, ia)? {
                Some(i) => i,
                None => expand_dims(idx, 0)?,
            };
            let idx = astype(&idx, Dtype::I64)?;
            match front(x, xa)? {
                None => Ok((x.clone(), idx)),
                Some(xb) => {
                    let s = xb.shape();
                    let count = numel(&s[1..s.len() - 2]);
                    let flat = reshape_to(&xb, &[v * count, s[s.len() - 2], s[s.len() - 1]])?;
                    let mut os = vec![1usize; idx.ndim()];
                    os[0] = v;
                    let off = reshape_to(&multiply(&arange_int(0, v as i64, 1)?, count as i64)?, &os)?;
                    Ok((flat, add(&idx, &astype(&off, Dtype::I64)?)?))
                }
            }
        };
        let (a, li) = prep(&inputs[0], axes[0], &inputs[2], axes[2])?;
        let (b, ri) = prep(&inputs[1], axes[1], &inputs[3], axes[3])?;
        let mut bs = broadcast_shapes(li.shape(), ri.shape())?;
        bs[0] = v;
        let li = broadcast_to(&li, &bs)?;
        let ri = broadcast_to(&ri, &bs)?;
        Ok((vec![gather_mm_raw(&a, &b, &li, &ri)?], vec![Some(0)]))
    }
    crate::prim_common!();
}

/// One-hot weights `(idx..., count)` selecting matrix `idx` of `x`'s flat stack.
fn one_hot(idx: &Array, count: usize, d: Dtype) -> Result<Array> {
    let r = arange_int(0, count as i64, 1)?;
    let e = equal(&expand_dims(&astype(idx, Dtype::I64)?, -1)?, &astype(&r, Dtype::I64)?)?;
    astype(&e, d)
}

/// `x`'s matrices at `idx` (shape `idx.shape + x.shape[-2:]`), differentiable in `x`.
fn select_matrices(x: &Array, idx: &Array) -> Result<Array> {
    let s = x.shape();
    let count = numel(&s[..s.len() - 2]);
    let flat = reshape_to(x, &[count, s[s.len() - 2] * s[s.len() - 1]])?;
    let oh = reshape_to(&one_hot(idx, count, x.dtype())?, &[idx.size(), count])?;
    let mut shape = idx.shape().to_vec();
    shape.extend_from_slice(&s[s.len() - 2..]);
    reshape_to(&matmul_raw(&oh, &flat)?, &shape)
}

/// Sums the matrices of `g` (batch shape = `idx.shape`) into a zero array
/// shaped like `like` at the flat positions `idx`.
fn scatter_matrices(g: &Array, idx: &Array, like: &Array, _bax: &[i32]) -> Result<Array> {
    let s = like.shape();
    let count = numel(&s[..s.len() - 2]);
    let mk = s[s.len() - 2] * s[s.len() - 1];
    let oh = reshape_to(&one_hot(idx, count, g.dtype())?, &[idx.size(), count])?;
    let gf = reshape_to(g, &[idx.size(), mk])?;
    reshape_to(&matmul_raw(&swap_last(&oh)?, &gf)?, s)
}

fn gather_mm_raw(a: &Array, b: &Array, li: &Array, ri: &Array) -> Result<Array> {
    let mut shape = li.shape().to_vec();
    shape.push(a.shape()[a.ndim() - 2]);
    shape.push(b.shape()[b.ndim() - 1]);
    Ok(Array::from_op(shape, a.dtype(), GatherMM, vec![a.clone(), b.clone(), li.clone(), ri.clone()]))
}

/// Matrix products of gathered batch matrices (MLX's `gather_mm`): output
/// batch element `i` is `a[lhs[i]] @ b[rhs[i]]`, where indices count matrices
/// in the flattened batch dims of `a` (`(..., m, k)`) and `b` (`(..., k, n)`).
/// Missing indices default to `arange` over the operand's batch, reshaped to
/// its batch shape; the index arrays broadcast against each other.
pub fn gather_mm(
    a: &Array,
    b: &Array,
    lhs_indices: Option<&Array>,
    rhs_indices: Option<&Array>,
    sorted_indices: bool,
) -> Result<Array> {
    let _ = sorted_indices;
    let op = "gather_mm";
    let d = matrices_dtype(op, a, b)?;
    let default_idx = |x: &Array| -> Result<Array> {
        let bs = &x.shape()[..x.ndim() - 2];
        reshape_to(&astype(&arange_int(0, numel(bs) as i64, 1)?, Dtype::U32)?, bs)
    };
    let check = |i: &Array| -> Result<Array> {
        if !i.dtype().is_integer() {
            return Err(Error::invalid(op, format!("Indices must be integers, got {}.", i.dtype())));
        }
        Ok(i.clone())
    };
    let li = match lhs_indices {
        Some(i) => check(i)?,
        None => default_idx(a)?,
    };
    let ri = match rhs_indices {
        Some(i) => check(i)?,
        None => default_idx(b)?,
    };
    let bs = broadcast_shapes(li.shape(), ri.shape()).map_err(|_| {
        Error::invalid(
            op,
            format!("Index shapes {} and {} cannot be broadcast.", fmt_shape(li.shape()), fmt_shape(ri.shape())),
        )
    })?;
    let (li, ri) = (broadcast_to(&li, &bs)?, broadcast_to(&ri, &bs)?);
    let (x, y) = (astype(a, d)?, astype(b, d)?);
    if matches!(d, Dtype::F16 | Dtype::BF16) {
        let r = gather_mm_raw(&astype(&x, Dtype::F32)?, &astype(&y, Dtype::F32)?, &li, &ri)?;
        return astype(&r, d);
    }
    gather_mm_raw(&x, &y, &li, &ri)
}

// ---------------------------------------------------------------- einsum

/// A parsed einsum: each operand's labels (one per axis after expanding the
/// ellipsis) and the output labels.
struct Spec {
    inputs: Vec<Vec<char>>,
    output: Vec<char>,
}

/// Labels standing in for ellipsis dimensions (outside what users can write).
fn ell_label(i: usize) -> char {
    char::from_u32(0x100 + i as u32).expect("valid char")
}

fn parse_einsum(subscripts: &str, shapes: &[&[usize]]) -> Result<Spec> {
    let op = "einsum";
    let s: String = subscripts.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match s.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (s.clone(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != shapes.len() {
        return Err(Error::invalid(
            op,
            format!(
                "Number of operands, {}, does not match number of input subscripts, {}.",
                shapes.len(),
                terms.len()
            ),
        ));
    }
    let mut ell_max = 0usize;
    let mut inputs = Vec::new();
    for (t, shape) in terms.iter().zip(shapes) {
        let (pre, post, has_ell) = match t.split_once("...") {
            Some((p, q)) => (p, q, true),
            None => (*t, "", false),
        };
        for c in pre.chars().chain(post.chars()) {
            if !c.is_ascii_alphabetic() {
                return Err(Error::invalid(op, format!("Subscripts must be letters, got '{c}' in \"{subscripts}\".")));
            }
        }
        let named = pre.len() + post.len();
        if (!has_ell && named != shape.len()) || (has_ell && named > shape.len()) {
            return Err(Error::invalid(
                op,
                format!("Subscript \"{t}\" does not match the operand's shape {}.", fmt_shape(shape)),
            ));
        }
        let ne = if has_ell { shape.len() - named } else { 0 };
        ell_max = ell_max.max(ne);
        let mut labels: Vec<char> = pre.chars().collect();
        // Ellipsis dims align to the right across operands.
        labels.extend((0..ne).map(|i| ell_label(1000 - ne + i)));
        labels.extend(post.chars());
        inputs.push(labels);
    }
    let ell: Vec<char> = (0..ell_max).map(|i| ell_label(1000 - ell_max + i)).collect();
    let output = match rhs {
        Some(r) => {
            let (pre, post) = match r.split_once("...") {
                Some((p, q)) => (p.to_string(), Some(q.to_string())),
                None => (r.clone(), None),
            };
            let mut out: Vec<char> = pre.chars().collect();
            if let Some(q) = &post {
                out.extend(&ell);
                out.extend(q.chars());
            } else if ell_max > 0 {
                // Without an ellipsis in the output, broadcast dims are summed (as NumPy does only when size 1).
            }
            for c in pre.chars().chain(post.unwrap_or_default().chars()) {
                if !c.is_ascii_alphabetic() {
                    return Err(Error::invalid(op, format!("Output subscripts must be letters, got '{c}'.")));
                }
                if !inputs.iter().any(|l| l.contains(&c)) {
                    return Err(Error::invalid(op, format!("Output subscript '{c}' does not appear in the inputs.")));
                }
            }
            let mut seen = out.clone();
            seen.sort();
            seen.dedup();
            if seen.len() != out.len() {
                return Err(Error::invalid(op, "Output subscripts must be unique."));
            }
            out
        }
        None => {
            // Implicit output: ellipsis dims, then labels used exactly once, sorted.
            let mut counts = std::collections::BTreeMap::new();
            for l in &inputs {
                for &c in l {
                    if (c as u32) < 0x100 {
                        *counts.entry(c).or_insert(0usize) += 1;
                    }
                }
            }
            let mut out = ell.clone();
            out.extend(counts.into_iter().filter(|(_, n)| *n == 1).map(|(c, _)| c));
            out
        }
    };
    Ok(Spec { inputs, output })
}

/// Size of every label, checking operands agree (size 1 broadcasts).
fn label_sizes(spec: &Spec, shapes: &[&[usize]]) -> Result<std::collections::HashMap<char, usize>> {
    let mut sizes = std::collections::HashMap::new();
    for (l, s) in spec.inputs.iter().zip(shapes) {
        for (&c, &n) in l.iter().zip(s.iter()) {
            let e = sizes.entry(c).or_insert(n);
            if *e != n {
                if *e == 1 {
                    *e = n;
                } else if n != 1 {
                    let name = if (c as u32) < 0x100 { format!("'{c}'") } else { "...".to_string() };
                    return Err(Error::invalid(
                        "einsum",
                        format!("Size of label {name} does not match between operands ({} and {n}).", *e),
                    ));
                }
            }
        }
    }
    Ok(sizes)
}

/// One pairwise contraction step of an einsum path.
struct Step {
    pair: (usize, usize),
    flops: f64,
    scaling: usize,
}

/// opt_einsum's flop model: the size of the full index space times the
/// number of operations per point (operands − 1, plus 1 if anything is summed).
fn flop_count(labels: &[char], inner: bool, terms: usize, sizes: &std::collections::HashMap<char, usize>) -> f64 {
    let size: f64 = labels.iter().map(|c| sizes[c] as f64).product();
    let f = (terms.max(2) - 1) + inner as usize;
    size * f as f64
}

fn uniq(v: impl IntoIterator<Item = char>) -> Vec<char> {
    let mut out = Vec::new();
    for c in v {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Greedy contraction order (as opt_einsum's greedy): repeatedly contract the
/// pair whose result is smallest relative to its inputs (preferring pairs that
/// share a label); the result goes to the end of the operand list.
fn greedy_path(spec: &Spec, sizes: &std::collections::HashMap<char, usize>) -> Vec<Step> {
    let mut ops: Vec<Vec<char>> = spec.inputs.iter().map(|l| uniq(l.iter().copied())).collect();
    let size = |l: &[char]| -> f64 { l.iter().map(|c| sizes[c] as f64).product() };
    let mut steps = Vec::new();
    while ops.len() > 1 {
        let mut best: Option<(bool, f64, usize, usize, Vec<char>)> = None;
        for i in 0..ops.len() {
            for j in i + 1..ops.len() {
                let keep: Vec<char> = ops
                    .iter()
                    .enumerate()
                    .filter(|(t, _)| *t != i && *t != j)
                    .flat_map(|(_, l)| l.iter().copied())
                    .chain(spec.output.iter().copied())
                    .collect();
                let res: Vec<char> =
                    uniq(ops[i].iter().chain(&ops[j]).copied()).into_iter().filter(|c| keep.contains(c)).collect();
                let shares = ops[i].iter().any(|c| ops[j].contains(c));
                let cost = size(&res) - size(&ops[i]) - size(&ops[j]);
                let better = match &best {
                    None => true,
                    Some((bs, bc, ..)) => (shares && !bs) || (shares == *bs && cost < *bc),
                };
                if better {
                    best = Some((shares, cost, i, j, res));
                }
            }
        }
        let (_, _, i, j, res) = best.expect("at least one pair");
        let all = uniq(ops[i].iter().chain(&ops[j]).copied());
        let inner = all.len() > res.len();
        steps.push(Step { pair: (i, j), flops: flop_count(&all, inner, 2, sizes), scaling: all.len() });
        ops.remove(j);
        ops.remove(i);
        ops.push(res);
    }
    steps
}

/// Brings an operand to unique labels: repeated labels take the diagonal.
fn dedup_labels(mut x: Array, mut l: Vec<char>) -> Result<(Array, Vec<char>)> {
    loop {
        let mut found = None;
        'o: for i in 0..l.len() {
            for j in i + 1..l.len() {
                if l[i] == l[j] {
                    found = Some((i, j));
                    break 'o;
                }
            }
        }
        let Some((i, j)) = found else { return Ok((x, l)) };
        if x.shape()[i] != x.shape()[j] {
            return Err(Error::invalid(
                "einsum",
                format!("Repeated label '{}' has sizes {} and {}.", l[i], x.shape()[i], x.shape()[j]),
            ));
        }
        x = diagonal(&x, 0, i as i32, j as i32)?;
        let c = l[i];
        l.remove(j);
        l.remove(i);
        l.push(c);
    }
}

/// Sums away the labels of `x` not in `keep`.
fn sum_unused(x: Array, l: Vec<char>, keep: &[char]) -> Result<(Array, Vec<char>)> {
    let axes: Vec<i32> = (0..l.len()).filter(|&i| !keep.contains(&l[i])).map(|i| i as i32).collect();
    if axes.is_empty() {
        return Ok((x, l));
    }
    let nl = l.into_iter().filter(|c| keep.contains(c)).collect();
    Ok((sum(&x, axes, false)?, nl))
}

/// Contracts two operands with unique labels, keeping the labels in `keep`.
fn contract(
    x: &Array,
    lx: &[char],
    y: &Array,
    ly: &[char],
    keep: &[char],
    sizes: &std::collections::HashMap<char, usize>,
) -> Result<(Array, Vec<char>)> {
    let (x, lx) = sum_unused(x.clone(), lx.to_vec(), &[keep, ly].concat())?;
    let (y, ly) = sum_unused(y.clone(), ly.to_vec(), &[keep, &lx].concat())?;
    let batch: Vec<char> = lx.iter().filter(|c| ly.contains(c) && keep.contains(c)).copied().collect();
    let con: Vec<char> = lx.iter().filter(|c| ly.contains(c) && !keep.contains(c)).copied().collect();
    let fx: Vec<char> = lx.iter().filter(|c| !ly.contains(c)).copied().collect();
    let fy: Vec<char> = ly.iter().filter(|c| !lx.contains(c)).copied().collect();
    let pos = |l: &[char], c: char| l.iter().position(|&d| d == c).expect("label present");
    let sz = |v: &[char]| -> usize { v.iter().map(|c| sizes[c]).product() };
    let bshape: Vec<usize> = batch.iter().map(|c| sizes[c]).collect();
    let prep = |a: &Array, l: &[char], order: Vec<char>, rows: usize, cols: usize| -> Result<Array> {
        let perm: Vec<usize> = order.iter().map(|&c| pos(l, c)).collect();
        let t = transpose_perm(a, &perm)?;
        let full: Vec<usize> = order.iter().map(|c| sizes[c]).collect();
        let t = broadcast_to(&t, &full)?;
        let mut s = bshape.clone();
        s.extend([rows, cols]);
        reshape_to(&t, &s)
    };
    let xo: Vec<char> = batch.iter().chain(&fx).chain(&con).copied().collect();
    let yo: Vec<char> = batch.iter().chain(&con).chain(&fy).copied().collect();
    let (m, k, n) = (sz(&fx), sz(&con), sz(&fy));
    let xm = prep(&x, &lx, xo, m, k)?;
    let ym = prep(&y, &ly, yo, k, n)?;
    let r = matmul_raw(&xm, &ym)?;
    let labels: Vec<char> = batch.iter().chain(&fx).chain(&fy).copied().collect();
    let shape: Vec<usize> = labels.iter().map(|c| sizes[c]).collect();
    Ok((reshape_to(&r, &shape)?, labels))
}

/// Einstein summation (MLX's `einsum`): `"ij,jk->ik"`, implicit outputs
/// (`"ij,jk"`), repeated labels (traces and diagonals, `"ii->i"`), `...` for
/// broadcast dimensions. Contractions run pairwise in the greedy order of
/// [`einsum_path`], each as a batched matmul.
pub fn einsum(subscripts: &str, operands: &[Array]) -> Result<Array> {
    if operands.is_empty() {
        return Err(Error::invalid("einsum", "At least one operand is required."));
    }
    let shapes: Vec<&[usize]> = operands.iter().map(|o| o.shape()).collect();
    let spec = parse_einsum(subscripts, &shapes)?;
    let sizes = label_sizes(&spec, &shapes)?;
    let mut d = operands[0].dtype();
    for o in &operands[1..] {
        d = promote_types(d, o.dtype());
    }
    if operands.len() > 1 && !d.is_inexact() {
        return Err(Error::invalid(
            "matmul",
            format!("Only inexact types are supported but got {d}, which is not a floating point type."),
        ));
    }
    let steps = greedy_path(&spec, &sizes);
    let mut cur: Vec<(Array, Vec<char>)> = Vec::new();
    for (o, l) in operands.iter().zip(&spec.inputs) {
        cur.push(dedup_labels(astype(o, d)?, l.clone())?);
    }
    for st in &steps {
        let (i, j) = st.pair;
        let (y, ly) = cur.remove(j);
        let (x, lx) = cur.remove(i);
        let keep: Vec<char> =
            cur.iter().flat_map(|(_, l)| l.iter().copied()).chain(spec.output.iter().copied()).collect();
        cur.push(contract(&x, &lx, &y, &ly, &keep, &sizes)?);
    }
    let (x, l) = cur.pop().expect("one operand left");
    let (x, l) = sum_unused(x, l, &spec.output)?;
    let perm: Vec<usize> = spec.output.iter().map(|c| l.iter().position(|d| d == c).expect("label")).collect();
    let x = transpose_perm(&x, &perm)?;
    let shape: Vec<usize> = spec.output.iter().map(|c| sizes[c]).collect();
    if x.shape() != shape.as_slice() {
        return broadcast_to(&x, &shape);
    }
    Ok(x)
}

/// The contraction order [`einsum`] uses (pairs of positions in the shrinking
/// operand list, the result appended at the end) and a report with the naive
/// and optimised scaling and flop counts, in the style of MLX/opt_einsum.
pub fn einsum_path(subscripts: &str, operands: &[Array]) -> Result<(Vec<(usize, usize)>, String)> {
    let shapes: Vec<&[usize]> = operands.iter().map(|o| o.shape()).collect();
    let spec = parse_einsum(subscripts, &shapes)?;
    let sizes = label_sizes(&spec, &shapes)?;
    let steps = greedy_path(&spec, &sizes);
    let all = uniq(spec.inputs.iter().flatten().copied());
    let inner = all.len() > spec.output.len();
    let naive = flop_count(&all, inner, spec.inputs.len(), &sizes);
    let opt: f64 = if steps.is_empty() { naive } else { steps.iter().map(|s| s.flops).sum() };
    let scaling = steps.iter().map(|s| s.scaling).max().unwrap_or(all.len());
    let report = format!(
        "  Complete contraction:  {subscripts}\n         Naive scaling:  {}\n     Optimized scaling:  {scaling}\n      Naive FLOP count:  {naive:.0}\n  Optimized FLOP count:  {opt:.0}\n",
        all.len()
    );
    Ok((steps.iter().map(|s| s.pair).collect(), report))
}

impl Array {
    /// See [`matmul`].
    pub fn matmul(&self, other: &Array) -> Result<Array> {
        matmul(self, other)
    }
}
