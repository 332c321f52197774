//! Dense linear-algebra kernels, built on `faer`.
//!
//! Every kernel works on a batch of matrices (the leading dimensions of its
//! inputs, which the op layer has already broadcast to one batch shape). Each
//! matrix is gathered into a row-major `f64` buffer (f32 inputs are widened,
//! so f32 results are computed in double precision and rounded once), handed
//! to faer, and the results are written back in the output dtype. Batch
//! elements run in parallel on the rayon pool.
//!
//! Failures never panic and never abort the batch: a factorisation that
//! breaks down (a matrix that is not positive definite for Cholesky, an
//! eigen/singular value iteration that does not converge) fills that batch
//! element's outputs with NaN; singular matrices give non-finite values, as
//! LAPACK-backed MLX gives garbage rather than an error.

use crate::array::{Array, Data};
use crate::backend::LinalgOp;
use crate::dtype::{c64, Dtype, Element};
use crate::error::{Error, Result};
use crate::memory::Buffer;
use crate::primitive::OutSpec;
use faer::linalg::solvers::{DenseSolveCore, Solve};
use faer::{Mat, MatRef, Par, Side};
use rayon::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The elements of `x` in row-major order, widened to f64.
fn read_f64(op: &str, x: &Array) -> Result<Vec<f64>> {
    let d = x.data();
    match x.dtype() {
        Dtype::F64 => Ok(super::strided::gather_to_vec::<f64>(&d, x.shape())),
        Dtype::F32 => Ok(super::strided::gather_to_vec::<f32>(&d, x.shape()).into_iter().map(f64::from).collect()),
        other => Err(Error::invalid(op, format!("No CPU linalg kernel for dtype {other}."))),
    }
}

/// A fresh row-major buffer holding `v`.
fn data_from<T: Element>(v: &[T], shape: &[usize]) -> Result<Data> {
    let buf = Buffer::alloc(std::mem::size_of_val(v))?;
    // SAFETY: the buffer was just allocated with room for exactly `v.len()`
    // elements of T (64-byte aligned) and does not overlap `v`.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), buf.as_ptr() as *mut T, v.len()) };
    Ok(Data::contiguous(buf, shape))
}

/// Writes the f64 values of one output (complex outputs hold interleaved
/// re/im pairs) in the output's dtype.
fn write(vals: &[f64], out: &OutSpec<'_>) -> Result<Data> {
    match out.dtype {
        Dtype::F64 => data_from(vals, out.shape),
        Dtype::F32 => data_from(&vals.iter().map(|&v| v as f32).collect::<Vec<_>>(), out.shape),
        Dtype::U32 => data_from(&vals.iter().map(|&v| v as u32).collect::<Vec<_>>(), out.shape),
        Dtype::C64 => {
            data_from(&vals.chunks_exact(2).map(|p| c64::new(p[0] as f32, p[1] as f32)).collect::<Vec<_>>(), out.shape)
        }
        other => Err(Error::invalid("linalg", format!("No CPU linalg kernel writes dtype {other}."))),
    }
}

/// Row-major values of a faer matrix.
fn rows_of(m: MatRef<'_, f64>) -> Vec<f64> {
    let mut v = Vec::with_capacity(m.nrows() * m.ncols());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            v.push(m[(i, j)]);
        }
    }
    v
}

/// A copy of the lower (or upper) triangle of `a`, zero elsewhere.
fn triangle(a: MatRef<'_, f64>, upper: bool) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| if (upper && j >= i) || (!upper && j <= i) { a[(i, j)] } else { 0.0 })
}

/// Symmetric matrix built from the lower triangle of `a`.
fn symmetric_from_lower(a: MatRef<'_, f64>) -> Mat<f64> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| if j <= i { a[(i, j)] } else { a[(j, i)] })
}

/// LU with partial pivoting: packed LU (unit L below the diagonal, U on and
/// above), the row permutation `perm` with `(P A)[i] = A[perm[i]]`, and the
/// number of row swaps.
fn lu(a: MatRef<'_, f64>) -> (Mat<f64>, Vec<usize>, usize) {
    let (m, n) = (a.nrows(), a.ncols());
    let mut lu = a.to_owned();
    let mut perm = vec![0usize; m];
    let mut perm_inv = vec![0usize; m];
    let par = Par::Seq;
    let scratch =
        faer::linalg::lu::partial_pivoting::factor::lu_in_place_scratch::<usize, f64>(m, n, par, Default::default());
    let mut mem = faer::dyn_stack::MemBuffer::new(scratch);
    let (info, _) = faer::linalg::lu::partial_pivoting::factor::lu_in_place(
        lu.as_mut(),
        &mut perm,
        &mut perm_inv,
        par,
        faer::dyn_stack::MemStack::new(&mut mem),
        Default::default(),
    );
    (lu, perm, info.transposition_count)
}

/// LAPACK's `ipiv` (0-based) for the row permutation `perm`: at step `i`, the
/// row at position `ipiv[i]` was swapped into position `i`.
fn ipiv_from_perm(perm: &[usize], k: usize) -> Vec<usize> {
    let mut cur: Vec<usize> = (0..perm.len()).collect();
    let mut pos: Vec<usize> = (0..perm.len()).collect(); // pos[row] = position of row in `cur`
    let mut ipiv = Vec::with_capacity(k);
    for (i, &row) in perm.iter().enumerate().take(k) {
        let j = pos[row];
        ipiv.push(j);
        let other = cur[i];
        cur.swap(i, j);
        pos[other] = j;
        pos[row] = i;
    }
    ipiv
}

/// The outputs of one batch element (as f64; complex values interleaved).
fn compute(op: LinalgOp, a: MatRef<'_, f64>, b: Option<MatRef<'_, f64>>) -> Vec<Vec<f64>> {
    let (m, n) = (a.nrows(), a.ncols());
    let k = m.min(n);
    match op {
        LinalgOp::Inv => vec![rows_of(a.partial_piv_lu().inverse().as_ref())],
        LinalgOp::TriInv { upper } => {
            let t = triangle(a, upper);
            let mut dst = Mat::<f64>::zeros(n, n);
            if upper {
                faer::linalg::triangular_inverse::invert_upper_triangular(dst.as_mut(), t.as_ref(), Par::Seq);
            } else {
                faer::linalg::triangular_inverse::invert_lower_triangular(dst.as_mut(), t.as_ref(), Par::Seq);
            }
            vec![rows_of(triangle(dst.as_ref(), upper).as_ref())]
        }
        LinalgOp::Cholesky => {
            let s = symmetric_from_lower(a);
            match s.llt(Side::Lower) {
                Ok(f) => vec![rows_of(triangle(f.L(), false).as_ref())],
                Err(_) => vec![vec![f64::NAN; n * n]],
            }
        }
        LinalgOp::Qr => {
            let f = a.qr();
            let q = f.compute_thin_Q();
            let r = f.thin_R();
            vec![rows_of(q.as_ref()), rows_of(triangle(r, true).as_ref())]
        }
        LinalgOp::Svd { compute_uv } => {
            if compute_uv {
                match a.svd() {
                    Ok(f) => {
                        let s: Vec<f64> = f.S().column_vector().iter().copied().collect();
                        vec![rows_of(f.U()), s, rows_of(f.V().transpose())]
                    }
                    Err(_) => vec![vec![f64::NAN; m * m], vec![f64::NAN; k], vec![f64::NAN; n * n]],
                }
            } else {
                match a.singular_values() {
                    Ok(s) => vec![s],
                    Err(_) => vec![vec![f64::NAN; k]],
                }
            }
        }
        LinalgOp::LuFactor => {
            let (f, perm, _) = lu(a);
            let ipiv = ipiv_from_perm(&perm, k);
            // MLX's `lu` permutation: A = L[p] @ U, the inverse of `perm`.
            let mut p = vec![0.0; m];
            for (i, &r) in perm.iter().enumerate() {
                p[r] = i as f64;
            }
            vec![rows_of(f.as_ref()), ipiv.iter().map(|&v| v as f64).collect(), p]
        }
        LinalgOp::Solve => {
            let b = b.expect("solve has two inputs");
            vec![rows_of(a.partial_piv_lu().solve(b).as_ref())]
        }
        LinalgOp::SolveTriangular { upper } => {
            let t = triangle(a, upper);
            let mut x = b.expect("solve_triangular has two inputs").to_owned();
            if upper {
                t.solve_upper_triangular_in_place(x.as_mut());
            } else {
                t.solve_lower_triangular_in_place(x.as_mut());
            }
            vec![rows_of(x.as_ref())]
        }
        LinalgOp::Eigh { vectors } => {
            let s = symmetric_from_lower(a);
            if vectors {
                match s.self_adjoint_eigen(Side::Lower) {
                    Ok(f) => vec![f.S().column_vector().iter().copied().collect(), rows_of(f.U())],
                    Err(_) => vec![vec![f64::NAN; n], vec![f64::NAN; n * n]],
                }
            } else {
                match s.self_adjoint_eigenvalues(Side::Lower) {
                    Ok(w) => vec![w],
                    Err(_) => vec![vec![f64::NAN; n]],
                }
            }
        }
        LinalgOp::Eig { vectors } => {
            if vectors {
                match a.eigen() {
                    Ok(f) => {
                        let w: Vec<f64> = f.S().column_vector().iter().flat_map(|c| [c.re, c.im]).collect();
                        let u = f.U();
                        let mut v = Vec::with_capacity(2 * n * n);
                        for i in 0..n {
                            for j in 0..n {
                                let c = u[(i, j)];
                                v.extend([c.re, c.im]);
                            }
                        }
                        vec![w, v]
                    }
                    Err(_) => vec![vec![f64::NAN; 2 * n], vec![f64::NAN; 2 * n * n]],
                }
            } else {
                match a.eigenvalues() {
                    Ok(w) => vec![w.iter().flat_map(|c| [c.re, c.im]).collect()],
                    Err(_) => vec![vec![f64::NAN; 2 * n]],
                }
            }
        }
        LinalgOp::Det | LinalgOp::SlogDet => {
            let (f, _, swaps) = lu(a);
            let mut sign = if swaps % 2 == 1 { -1.0 } else { 1.0 };
            let mut logabs = 0.0;
            let mut det = sign;
            for i in 0..n {
                let d = f[(i, i)];
                det *= d;
                sign *= d.signum();
                logabs += d.abs().ln();
                if d == 0.0 {
                    sign = 0.0;
                }
            }
            if det.is_nan() {
                sign = f64::NAN;
            }
            if op == LinalgOp::Det {
                vec![vec![det]]
            } else {
                vec![vec![sign], vec![logabs]]
            }
        }
    }
}

/// Runs `op` over every matrix of the batch. `outs` describe the outputs;
/// complex outputs are c64.
pub fn linalg(op: LinalgOp, inputs: &[Array], outs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
    let name = "linalg";
    let a = &inputs[0];
    let nd = a.ndim();
    let (m, n) = (a.shape()[nd - 2], a.shape()[nd - 1]);
    let batch: usize = a.shape()[..nd - 2].iter().product();
    let av = read_f64(name, a)?;
    let bv = match inputs.get(1) {
        Some(b) => Some((read_f64(name, b)?, b.shape()[b.ndim() - 1])),
        None => None,
    };
    // Values per batch element of each output (complex counts two).
    let sizes: Vec<usize> = outs
        .iter()
        .map(|o| {
            let per = o.shape.iter().product::<usize>() / batch.max(1);
            if o.dtype == Dtype::C64 {
                2 * per
            } else {
                per
            }
        })
        .collect();
    let results: Vec<Vec<Vec<f64>>> = (0..batch)
        .into_par_iter()
        .map(|i| {
            let am = MatRef::from_row_major_slice(&av[i * m * n..(i + 1) * m * n], m, n);
            let bm = bv.as_ref().map(|(v, k)| MatRef::from_row_major_slice(&v[i * n * k..(i + 1) * n * k], n, *k));
            let r = if m == 0 || n == 0 { None } else { catch_unwind(AssertUnwindSafe(|| compute(op, am, bm))).ok() };
            match r {
                Some(r) if r.len() == sizes.len() && r.iter().zip(&sizes).all(|(v, &s)| v.len() == s) => r,
                _ => sizes.iter().map(|&s| vec![f64::NAN; s]).collect(),
            }
        })
        .collect();
    outs.iter()
        .enumerate()
        .map(|(k, o)| {
            let mut vals = Vec::with_capacity(sizes[k] * batch);
            for r in &results {
                vals.extend_from_slice(&r[k]);
            }
            write(&vals, o)
        })
        .collect()
}
