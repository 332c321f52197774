//! Linear algebra (`kiln_core::linalg`, MLX's `mx.linalg`): norms,
//! factorisations (QR, SVD, LU, Cholesky, eigen), inverses, solvers,
//! determinants and the cross product.
//!
//! Every op works on the last two axes and is batched over the leading ones.
//! Inputs must be float32 or float64 (MLX's CPU linalg dtypes); the
//! factorisations run in the CPU backend's `linalg` kernel (faer), one
//! primitive ([`Linalg`]) per kernel, with transform rules written in
//! ordinary Kiln ops so that they nest. Composite ops (norm, pinv, lu,
//! cholesky_inv, cross) inherit the rules of the ops they are built from.
//!
//! As in MLX (which calls LAPACK and does not check its status), numerical
//! failures are not errors: a singular matrix gives non-finite values from
//! `inv`/`solve`, and a matrix that is not positive definite gives a NaN
//! Cholesky factor.
//!
//! Differences from MLX 0.32.4, all deliberate:
//! * float32 inputs are factorised in float64 and rounded once (more
//!   accurate than MLX's float32 LAPACK calls; results agree to ~1e-6).
//! * `eig`/`eigvals` return eigenvalues in faer's order (LAPACK's order is
//!   unspecified too); `qr`/`svd` signs may differ from LAPACK's.
//! * `solve`/`solve_triangular` broadcast batch dimensions of `a` and `b`
//!   (MLX fails on some broadcasts with an internal `take_along_axis` error).
//! * `det`/`slogdet` of float16/bfloat16 compute in float32 and cast back
//!   (MLX returns NaN); batched float64 `det` keeps float64 precision (MLX
//!   loses it).
//! * `eigh`/`eigvalsh` accept only `UPLO` "L" or "U" (MLX treats anything
//!   else as "L"); complex64 inputs to `svd`/`eig*` are not supported yet.
//! * The matrix products inside composites and transform rules
//!   (`cholesky_inv`, `pinv`, vjp/jvp rules) are `ops::matmul`, so they need
//!   no (…, m, k, n) intermediate.

use super::binary::{divide, greater, multiply, not_equal, power, subtract};
use super::creation::{astype, eye, ones_like, tril, triu, zeros_like};
use super::reduce::{max, min, sum};
use super::shape::{align_batch_axes, broadcast_to, diagonal, expand_dims, moveaxis, reshape_to, swapaxes};
use super::slicing::{concatenate, slice};
use super::{add, Axes};
use crate::array::{Array, Data};
use crate::backend::{Backend, LinalgOp};
use crate::dtype::{promote_types, Dtype};
use crate::error::{fmt_shape, Error, Result};
use crate::primitive::{OutSpec, Primitive, Rule, Rules};
use std::sync::Arc;

// ------------------------------------------------------------------ checks

fn check_float(op: &str, a: &Array) -> Result<()> {
    match a.dtype() {
        Dtype::F32 | Dtype::F64 => Ok(()),
        d => {
            Err(Error::invalid(op, format!("Arrays must have type float32 or float64. Received array with type {d}.")))
        }
    }
}

fn check_ndim(op: &str, a: &Array) -> Result<()> {
    if a.ndim() < 2 {
        return Err(Error::invalid(
            op,
            format!("Arrays must have >= 2 dimensions. Received array with {} dimensions.", a.ndim()),
        ));
    }
    Ok(())
}

fn rows_cols(a: &Array) -> (usize, usize) {
    let nd = a.ndim();
    (a.shape()[nd - 2], a.shape()[nd - 1])
}

fn check_square(op: &str, a: &Array, msg: &str) -> Result<()> {
    let (m, n) = rows_cols(a);
    if m != n {
        return Err(Error::invalid(op, msg.to_string()));
    }
    Ok(())
}

/// Float32/float64, at least 2-d, and (when `square_msg` is given) square.
fn check_matrix(op: &str, a: &Array, square_msg: Option<&str>) -> Result<()> {
    check_float(op, a)?;
    check_ndim(op, a)?;
    if let Some(msg) = square_msg {
        check_square(op, a, msg)?;
    }
    Ok(())
}

// ------------------------------------------------------------------ primitive

/// One dense linear-algebra kernel applied to a batch of matrices.
#[derive(Debug, PartialEq)]
pub struct Linalg {
    /// Which kernel.
    pub op: LinalgOp,
}

/// Records `op` on `inputs` (already validated; two-input kernels get equal batch shapes).
fn record(op: LinalgOp, inputs: Vec<Array>) -> Result<Vec<Array>> {
    let a = &inputs[0];
    let d = a.dtype();
    let nd = a.ndim();
    let batch = a.shape()[..nd - 2].to_vec();
    let (m, n) = rows_cols(a);
    let k = m.min(n);
    let with = |tail: &[usize]| -> Vec<usize> {
        let mut s = batch.clone();
        s.extend_from_slice(tail);
        s
    };
    let outs: Vec<(Vec<usize>, Dtype)> = match op {
        LinalgOp::Inv | LinalgOp::TriInv { .. } | LinalgOp::Cholesky => vec![(a.shape().to_vec(), d)],
        LinalgOp::Qr => vec![(with(&[m, k]), d), (with(&[k, n]), d)],
        LinalgOp::Svd { compute_uv: true } => vec![(with(&[m, m]), d), (with(&[k]), d), (with(&[n, n]), d)],
        LinalgOp::Svd { compute_uv: false } => vec![(with(&[k]), d)],
        LinalgOp::LuFactor => vec![(a.shape().to_vec(), d), (with(&[k]), Dtype::U32), (with(&[m]), Dtype::U32)],
        LinalgOp::Solve | LinalgOp::SolveTriangular { .. } => vec![(inputs[1].shape().to_vec(), d)],
        LinalgOp::Eigh { vectors: true } => vec![(with(&[n]), d), (a.shape().to_vec(), d)],
        LinalgOp::Eigh { vectors: false } => vec![(with(&[n]), d)],
        LinalgOp::Eig { vectors: true } => vec![(with(&[n]), Dtype::C64), (a.shape().to_vec(), Dtype::C64)],
        LinalgOp::Eig { vectors: false } => vec![(with(&[n]), Dtype::C64)],
        LinalgOp::Det => vec![(batch.clone(), d)],
        LinalgOp::SlogDet => vec![(batch.clone(), d), (batch.clone(), d)],
    };
    if outs.len() == 1 {
        let (s, dt) = outs.into_iter().next().expect("one output");
        return Ok(vec![Array::from_op(s, dt, Linalg { op }, inputs)]);
    }
    Ok(Array::from_op_multi(outs, Arc::new(Linalg { op }), inputs))
}

fn record1(op: LinalgOp, a: &Array) -> Result<Array> {
    Ok(record(op, vec![a.clone()])?.swap_remove(0))
}

/// Records a two-input solve after broadcasting the batch dimensions of `a` (…, n, n) and `b` (…, n, k).
fn record_solve(op: LinalgOp, a: &Array, b: &Array) -> Result<Array> {
    let (na, nb) = (a.ndim(), b.ndim());
    let batch = crate::shape::broadcast_shapes(&a.shape()[..na - 2], &b.shape()[..nb - 2])?;
    let mut sa = batch.clone();
    sa.extend_from_slice(&a.shape()[na - 2..]);
    let mut sb = batch;
    sb.extend_from_slice(&b.shape()[nb - 2..]);
    let (a, b) = (broadcast_to(a, &sa)?, broadcast_to(b, &sb)?);
    Ok(record(op, vec![a, b])?.swap_remove(0))
}

const NO_LU_GRAD: &str = "pivoted LU factors are piecewise functions of the input with integer pivots; differentiate det, slogdet, solve or inv instead (MLX has no LU gradient either)";
const NO_EIG_GRAD: &str = "eigenvectors of a general (non-symmetric) matrix are complex and defined only up to a complex scale; MLX has no eig gradient either";

impl Primitive for Linalg {
    fn name(&self) -> &'static str {
        match self.op {
            LinalgOp::Inv => "Inverse",
            LinalgOp::TriInv { .. } => "TriInverse",
            LinalgOp::Cholesky => "Cholesky",
            LinalgOp::Qr => "QRF",
            LinalgOp::Svd { .. } => "SVD",
            LinalgOp::LuFactor => "LUF",
            LinalgOp::Solve => "Solve",
            LinalgOp::SolveTriangular { .. } => "SolveTriangular",
            LinalgOp::Eigh { .. } => "Eigh",
            LinalgOp::Eig { .. } => "Eig",
            LinalgOp::Det => "Det",
            LinalgOp::SlogDet => "SlogDet",
        }
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        backend.linalg(self.op, inputs, outputs)
    }
    fn rules(&self) -> Rules {
        let no = |why| Rules { vjp: Rule::No(why), jvp: Rule::No(why), vmap: Rule::Yes };
        match self.op {
            LinalgOp::LuFactor => no(NO_LU_GRAD),
            LinalgOp::Eig { .. } => no(NO_EIG_GRAD),
            _ => Rules::ALL,
        }
    }
    fn vjp(&self, primals: &[Array], cot: &[Array], argnums: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        let a = &primals[0];
        let grads = match self.op {
            LinalgOp::Inv => {
                let xt = mt(&outputs[0])?;
                vec![neg(&mm(&mm(&xt, &cot[0])?, &xt)?)?]
            }
            LinalgOp::TriInv { upper } => {
                let xt = mt(&outputs[0])?;
                vec![tri(&neg(&mm(&mm(&xt, &cot[0])?, &xt)?)?, upper)?]
            }
            LinalgOp::Cholesky => {
                let l = &outputs[0];
                let p = phi(&mm(&mt(l)?, &cot[0])?)?;
                let li = record1(LinalgOp::TriInv { upper: false }, l)?;
                let s = mm(&mm(&mt(&li)?, &p)?, &li)?;
                vec![lower_grad(&s)?]
            }
            LinalgOp::Eigh { vectors } => {
                let (w, v) = if vectors {
                    (outputs[0].clone(), outputs[1].clone())
                } else {
                    let r = record(LinalgOp::Eigh { vectors: true }, vec![a.clone()])?;
                    (r[0].clone(), r[1].clone())
                };
                let mut inner = diag_embed(&cot[0])?;
                if vectors {
                    inner = add(&inner, &multiply(&eig_gaps(&w)?, &mm(&mt(&v)?, &cot[1])?)?)?;
                }
                vec![lower_grad(&mm(&mm(&v, &inner)?, &mt(&v)?)?)?]
            }
            LinalgOp::Det => {
                let ai = record1(LinalgOp::Inv, a)?;
                let gd = multiply(&cot[0], &outputs[0])?;
                vec![multiply(&expand2(&gd)?, &mt(&ai)?)?]
            }
            LinalgOp::SlogDet => {
                let ai = record1(LinalgOp::Inv, a)?;
                vec![multiply(&expand2(&cot[1])?, &mt(&ai)?)?]
            }
            LinalgOp::Solve | LinalgOp::SolveTriangular { .. } => {
                let x = &outputs[0];
                let bbar = match self.op {
                    LinalgOp::SolveTriangular { upper } => {
                        record_solve(LinalgOp::SolveTriangular { upper: !upper }, &mt(a)?, &cot[0])?
                    }
                    _ => record_solve(LinalgOp::Solve, &mt(a)?, &cot[0])?,
                };
                let mut abar = neg(&mm(&bbar, &mt(x)?)?)?;
                if let LinalgOp::SolveTriangular { upper } = self.op {
                    abar = tri(&abar, upper)?;
                }
                let mut out = Vec::new();
                for &i in argnums {
                    out.push(if i == 0 { abar.clone() } else { bbar.clone() });
                }
                return Ok(out);
            }
            LinalgOp::Svd { compute_uv: false } => {
                let (uk, vtk) = svd_uv_k(a)?;
                vec![mm(&multiply(&uk, &expand_dims(&cot[0], -2)?)?, &vtk)?]
            }
            LinalgOp::Qr => {
                let (q, r) = (&outputs[0], &outputs[1]);
                let (m, n) = rows_cols(a);
                if m < n {
                    return Err(Error::unsupported(
                        "QRF",
                        "vjp is implemented for m >= n (tall or square) inputs only.",
                    ));
                }
                let (qbar, rbar) = (&cot[0], &cot[1]);
                let mm_ = subtract(&mm(r, &mt(rbar)?)?, &mm(&mt(qbar)?, q)?)?;
                let copyltu = add(&tril(&mm_, 0)?, &mt(&tril(&mm_, -1)?)?)?;
                let lhs = add(qbar, &mm(q, &copyltu)?)?;
                let ri = record1(LinalgOp::TriInv { upper: true }, r)?;
                vec![mm(&lhs, &mt(&ri)?)?]
            }
            LinalgOp::Svd { compute_uv: true } => vec![svd_uv_vjp(a, outputs, cot)?],
            LinalgOp::LuFactor | LinalgOp::Eig { .. } => return Err(self.missing("vjp")),
        };
        Ok(grads)
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], argnums: &[usize]) -> Result<Vec<Array>> {
        let a = &primals[0];
        let da = &tangents[0];
        Ok(match self.op {
            LinalgOp::Inv => {
                let x = record1(LinalgOp::Inv, a)?;
                vec![neg(&mm(&mm(&x, da)?, &x)?)?]
            }
            LinalgOp::TriInv { upper } => {
                let x = record1(self.op, a)?;
                vec![neg(&mm(&mm(&x, &tri(da, upper)?)?, &x)?)?]
            }
            LinalgOp::Cholesky => {
                let l = record1(LinalgOp::Cholesky, a)?;
                let li = record1(LinalgOp::TriInv { upper: false }, &l)?;
                let das = sym_lower(da)?;
                vec![mm(&l, &phi(&mm(&mm(&li, &das)?, &mt(&li)?)?)?)?]
            }
            LinalgOp::Eigh { vectors } => {
                let r = record(LinalgOp::Eigh { vectors: true }, vec![a.clone()])?;
                let (w, v) = (&r[0], &r[1]);
                let m = mm(&mm(&mt(v)?, &sym_lower(da)?)?, v)?;
                let dw = diagonal(&m, 0, -2, -1)?;
                if vectors {
                    vec![dw, mm(v, &multiply(&eig_gaps(w)?, &m)?)?]
                } else {
                    vec![dw]
                }
            }
            LinalgOp::Det => {
                let d = record1(LinalgOp::Det, a)?;
                let ai = record1(LinalgOp::Inv, a)?;
                vec![multiply(&d, &sum(&multiply(&mt(&ai)?, da)?, [-2, -1], false)?)?]
            }
            LinalgOp::SlogDet => {
                let r = record(LinalgOp::SlogDet, vec![a.clone()])?;
                let ai = record1(LinalgOp::Inv, a)?;
                vec![zeros_like(&r[0])?, sum(&multiply(&mt(&ai)?, da)?, [-2, -1], false)?]
            }
            LinalgOp::Solve | LinalgOp::SolveTriangular { .. } => {
                let b = &primals[1];
                let x = record_solve(self.op, a, b)?;
                let mut rhs: Option<Array> = None;
                for (t, &i) in tangents.iter().zip(argnums) {
                    let term = if i == 0 {
                        let ta = match self.op {
                            LinalgOp::SolveTriangular { upper } => tri(t, upper)?,
                            _ => t.clone(),
                        };
                        neg(&mm(&ta, &x)?)?
                    } else {
                        t.clone()
                    };
                    rhs = Some(match rhs {
                        Some(r) => add(&r, &term)?,
                        None => term,
                    });
                }
                let rhs = rhs.expect("jvp has at least one tangent");
                vec![record_solve(self.op, a, &rhs)?]
            }
            LinalgOp::Svd { compute_uv: false } => {
                let (uk, vtk) = svd_uv_k(a)?;
                vec![sum(&multiply(&uk, &mm(da, &mt(&vtk)?)?)?, -2, false)?]
            }
            LinalgOp::Qr => {
                let (m, n) = rows_cols(a);
                if m < n {
                    return Err(Error::unsupported(
                        "QRF",
                        "jvp is implemented for m >= n (tall or square) inputs only.",
                    ));
                }
                let r = record(LinalgOp::Qr, vec![a.clone()])?;
                let (q, rr) = (&r[0], &r[1]);
                let ri = record1(LinalgOp::TriInv { upper: true }, rr)?;
                let x = mm(&mm(&mt(q)?, da)?, &ri)?;
                let low = tril(&x, -1)?;
                let omega = subtract(&low, &mt(&low)?)?;
                let dr = mm(&subtract(&x, &omega)?, rr)?;
                let dq = mm(&subtract(da, &mm(q, &dr)?)?, &ri)?;
                vec![dq, dr]
            }
            LinalgOp::Svd { compute_uv: true } => svd_uv_jvp(a, da)?,
            LinalgOp::LuFactor | LinalgOp::Eig { .. } => return Err(self.missing("jvp")),
        })
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let outs = if inputs.len() == 2 {
            let (a, b, _) = align_batch_axes(&inputs[0], axes[0], &inputs[1], axes[1])?;
            vec![record_solve(self.op, &a, &b)?]
        } else {
            let x = match axes[0] {
                Some(ax) => moveaxis(&inputs[0], ax as i32, 0)?,
                None => inputs[0].clone(),
            };
            record(self.op, vec![x])?
        };
        let n = outs.len();
        Ok((outs, vec![Some(0); n]))
    }
    crate::prim_common!();
}

// ------------------------------------------------------------------ rule helpers

/// Batched matrix product (…, m, k) × (…, k, n), batch dims broadcast.
fn mm(a: &Array, b: &Array) -> Result<Array> {
    super::matmul::matmul(a, b)
}

/// Swaps the last two axes.
fn mt(a: &Array) -> Result<Array> {
    swapaxes(a, -1, -2)
}

fn neg(a: &Array) -> Result<Array> {
    super::unary::negative(a)
}

fn tri(a: &Array, upper: bool) -> Result<Array> {
    if upper {
        triu(a, 0)
    } else {
        tril(a, 0)
    }
}

/// Appends two size-1 axes (a per-matrix scalar that broadcasts over a matrix).
fn expand2(a: &Array) -> Result<Array> {
    expand_dims(&expand_dims(a, -1)?, -1)
}

/// (…, n) → (…, n, n) with `v` on the diagonal.
fn diag_embed(v: &Array) -> Result<Array> {
    let n = v.shape()[v.ndim() - 1];
    multiply(&expand_dims(v, -1)?, &eye(n as i64, None, 0, v.dtype())?)
}

/// Lower triangle with the diagonal halved.
fn phi(m: &Array) -> Result<Array> {
    subtract(&tril(m, 0)?, &multiply(&diag_embed(&diagonal(m, 0, -2, -1)?)?, 0.5)?)
}

/// The symmetric matrix a perturbation of the lower triangle stands for.
fn sym_lower(d: &Array) -> Result<Array> {
    add(&tril(d, 0)?, &mt(&tril(d, -1)?)?)
}

/// Gradient with respect to the lower triangle for a function of the
/// symmetric matrix it stands for, given S with dL = <S, dA_sym>.
fn lower_grad(s: &Array) -> Result<Array> {
    add(&tril(s, 0)?, &tril(&mt(s)?, -1)?)
}

/// F[i, j] = 1 / (w[j] − w[i]) off the diagonal, 0 on it.
fn eig_gaps(w: &Array) -> Result<Array> {
    let n = w.shape()[w.ndim() - 1];
    let i = eye(n as i64, None, 0, w.dtype())?;
    let diff = subtract(&expand_dims(w, -2)?, &expand_dims(w, -1)?)?;
    divide(&subtract(&ones_like(&i)?, &i)?, &add(&diff, &i)?)
}

/// Slice of the last two axes: rows r0..r1, columns c0..c1.
fn block(a: &Array, r: (usize, usize), c: (usize, usize)) -> Result<Array> {
    let nd = a.ndim();
    let mut starts = vec![0i64; nd];
    let mut stops: Vec<i64> = a.shape().iter().map(|&d| d as i64).collect();
    starts[nd - 2] = r.0 as i64;
    stops[nd - 2] = r.1 as i64;
    starts[nd - 1] = c.0 as i64;
    stops[nd - 1] = c.1 as i64;
    slice(a, &starts, &stops, &vec![1; nd])
}

/// The first k = min(m, n) left singular vectors (…, m, k) and right singular vectors as rows (…, k, n).
fn svd_uv_k(a: &Array) -> Result<(Array, Array)> {
    let (m, n) = rows_cols(a);
    let k = m.min(n);
    let r = record(LinalgOp::Svd { compute_uv: true }, vec![a.clone()])?;
    Ok((block(&r[0], (0, m), (0, k))?, block(&r[2], (0, k), (0, n))?))
}

/// Thin factors of an SVD: U (…, m, k), s (…, k), V (…, n, k).
fn thin(u: &Array, s: &Array, vt: &Array, m: usize, n: usize) -> Result<(Array, Array, Array)> {
    let k = m.min(n);
    Ok((block(u, (0, m), (0, k))?, s.clone(), mt(&block(vt, (0, k), (0, n))?)?))
}

/// I − X Xᵀ for X (…, r, k) with orthonormal columns.
fn complement(x: &Array) -> Result<Array> {
    let r = x.shape()[x.ndim() - 2];
    subtract(&eye(r as i64, None, 0, x.dtype())?, &mm(x, &mt(x)?)?)
}

/// Reverse-mode rule of the full SVD (Townsend 2016). U and V enter through
/// their first k = min(m, n) columns; the remaining columns of a non-square
/// input's U or V are arbitrary, so their cotangents are ignored.
fn svd_uv_vjp(a: &Array, outputs: &[Array], cot: &[Array]) -> Result<Array> {
    let (m, n) = rows_cols(a);
    let (u, s, v) = thin(&outputs[0], &outputs[1], &outputs[2], m, n)?;
    let (gu, gs, gv) = thin(&cot[0], &cot[1], &cot[2], m, n)?;
    let f = eig_gaps(&multiply(&s, &s)?)?;
    let j = multiply(&f, &subtract(&mm(&mt(&u)?, &gu)?, &mm(&mt(&gu)?, &u)?)?)?;
    let kk = multiply(&f, &subtract(&mm(&mt(&v)?, &gv)?, &mm(&mt(&gv)?, &v)?)?)?;
    let row = expand_dims(&s, -2)?; // scales columns
    let col = expand_dims(&s, -1)?; // scales rows
    let inner = add(&add(&multiply(&j, &row)?, &diag_embed(&gs)?)?, &multiply(&col, &kk)?)?;
    let mut r = mm(&mm(&u, &inner)?, &mt(&v)?)?;
    if m > n {
        r = add(&r, &mm(&mm(&complement(&u)?, &divide(&gu, &row)?)?, &mt(&v)?)?)?;
    }
    if n > m {
        r = add(&r, &mm(&mm(&u, &mt(&divide(&gv, &row)?)?)?, &complement(&v)?)?)?;
    }
    Ok(r)
}

/// Forward-mode rule of the full SVD; the tangents of a non-square input's
/// extra (arbitrary) columns of U or V are zero.
fn svd_uv_jvp(a: &Array, da: &Array) -> Result<Vec<Array>> {
    let (m, n) = rows_cols(a);
    let k = m.min(n);
    let r = record(LinalgOp::Svd { compute_uv: true }, vec![a.clone()])?;
    let (u, s, v) = thin(&r[0], &r[1], &r[2], m, n)?;
    let p = mm(&mm(&mt(&u)?, da)?, &v)?;
    let ds = diagonal(&p, 0, -2, -1)?;
    let f = eig_gaps(&multiply(&s, &s)?)?;
    let row = expand_dims(&s, -2)?;
    let col = expand_dims(&s, -1)?;
    let pt = mt(&p)?;
    let mut du = mm(&u, &multiply(&f, &add(&multiply(&p, &row)?, &multiply(&col, &pt)?)?)?)?;
    let mut dv = mm(&v, &multiply(&f, &add(&multiply(&col, &p)?, &multiply(&pt, &row)?)?)?)?;
    if m > n {
        du = add(&du, &divide(&mm(&mm(&complement(&u)?, da)?, &v)?, &row)?)?;
    }
    if n > m {
        dv = add(&dv, &divide(&mm(&mm(&complement(&v)?, &mt(da)?)?, &u)?, &row)?)?;
    }
    let pad = |x: &Array, extra: usize, axis: i32| -> Result<Array> {
        if extra == 0 {
            return Ok(x.clone());
        }
        let mut shape = x.shape().to_vec();
        let ax = if axis < 0 { shape.len() - 1 } else { axis as usize };
        shape[ax] = extra;
        concatenate(&[x.clone(), super::creation::zeros(&shape, x.dtype())?], Some(axis))
    };
    let du = pad(&du, m - k, -1)?;
    let dvt = mt(&pad(&dv, n - k, -1)?)?;
    Ok(vec![du, ds, dvt])
}

// ------------------------------------------------------------------ public ops

/// The inverse of each square matrix (singular matrices give non-finite values, as in MLX).
pub fn inv(a: &Array) -> Result<Array> {
    check_matrix("linalg::inv", a, Some("Inverses are only defined for square matrices."))?;
    record1(LinalgOp::Inv, a)
}

/// The inverse of the lower (or `upper`) triangle of each square matrix; the other triangle is ignored.
pub fn tri_inv(a: &Array, upper: bool) -> Result<Array> {
    // MLX reports tri_inv's argument errors as linalg::inv.
    check_matrix("linalg::inv", a, Some("Inverses are only defined for square matrices."))?;
    record1(LinalgOp::TriInv { upper }, a)
}

/// Cholesky factor of symmetric positive-definite matrices: lower L with
/// A = L Lᵀ reading A's lower triangle, or (`upper`) U with A = Uᵀ U reading
/// the upper triangle. A matrix that is not positive definite gives NaN.
pub fn cholesky(a: &Array, upper: bool) -> Result<Array> {
    check_matrix("linalg::cholesky", a, Some("Cholesky decomposition is only defined for square matrices."))?;
    if upper {
        mt(&record1(LinalgOp::Cholesky, &mt(a)?)?)
    } else {
        record1(LinalgOp::Cholesky, a)
    }
}

/// The inverse of A = L Lᵀ (or Uᵀ U when `upper`) given its Cholesky factor.
pub fn cholesky_inv(l: &Array, upper: bool) -> Result<Array> {
    check_matrix("linalg::cholesky_inv", l, Some("Cholesky inverse is only defined for square matrices."))?;
    let li = record1(LinalgOp::TriInv { upper }, l)?;
    if upper {
        mm(&li, &mt(&li)?)
    } else {
        mm(&mt(&li)?, &li)
    }
}

/// Reduced QR factorisation: Q (…, m, k) with orthonormal columns and upper
/// triangular R (…, k, n), k = min(m, n).
pub fn qr(a: &Array) -> Result<(Array, Array)> {
    check_matrix("linalg::qr", a, None)?;
    let mut r = record(LinalgOp::Qr, vec![a.clone()])?;
    let rr = r.pop().expect("two outputs");
    Ok((r.pop().expect("two outputs"), rr))
}

/// Singular value decomposition: `[U (…, m, m), S (…, k), Vᵀ (…, n, n)]`
/// with S descending, or `[S]` when `compute_uv` is false.
pub fn svd(a: &Array, compute_uv: bool) -> Result<Vec<Array>> {
    check_float_or_complex("linalg::svd", a)?;
    if a.ndim() < 2 {
        return Err(Error::invalid(
            "linalg::svd",
            format!("Input array must have >= 2 dimensions. Received array with {} dimensions.", a.ndim()),
        ));
    }
    record(LinalgOp::Svd { compute_uv }, vec![a.clone()])
}

fn check_float_or_complex(op: &str, a: &Array) -> Result<()> {
    match a.dtype() {
        Dtype::F32 | Dtype::F64 => Ok(()),
        Dtype::C64 => Err(Error::unsupported(op, "complex64 input is not supported by Kiln's CPU linalg kernels.")),
        d => Err(Error::invalid(
            op,
            format!("Arrays must have type float32, float64 or complex64. Received array with type {d}."),
        )),
    }
}

/// Moore–Penrose pseudo-inverse (…, n, m) from the SVD; singular values at or
/// below `10 · max(m, n) · eps · max(S)` are treated as zero (as MLX).
pub fn pinv(a: &Array) -> Result<Array> {
    check_matrix("linalg::pinv", a, None)?;
    let (m, n) = rows_cols(a);
    let k = m.min(n);
    let r = svd(a, true)?;
    let s = &r[1];
    let eps = if a.dtype() == Dtype::F64 { f64::EPSILON } else { f32::EPSILON as f64 };
    let cutoff = multiply(&max(s, -1, true)?, 10.0 * m.max(n) as f64 * eps)?;
    let keep = astype(&greater(s, &cutoff)?, a.dtype())?;
    // 1/s where kept, 0 elsewhere (the divisor is 1 where dropped, so no inf appears).
    let sinv = divide(&keep, &add(&multiply(s, &keep)?, &subtract(&ones_like(&keep)?, &keep)?)?)?;
    let uk = block(&r[0], (0, m), (0, k))?;
    let vk = mt(&block(&r[2], (0, k), (0, n))?)?;
    mm(&multiply(&vk, &expand_dims(&sinv, -2)?)?, &mt(&uk)?)
}

/// LU factorisation with partial pivoting as MLX returns it: the packed LU
/// matrix (unit L below the diagonal, U on and above) and LAPACK's 0-based
/// pivot indices (uint32): row i was swapped with row `pivots[i]`.
pub fn lu_factor(a: &Array) -> Result<(Array, Array)> {
    check_matrix("linalg::lu_factor", a, None)?;
    let mut r = record(LinalgOp::LuFactor, vec![a.clone()])?;
    r.truncate(2);
    let p = r.pop().expect("outputs");
    Ok((r.pop().expect("outputs"), p))
}

/// LU factorisation as MLX returns it: `(p, L, U)` with the row permutation
/// `p` (uint32) such that `A = L[p] @ U`, L (…, m, k) unit lower triangular
/// and U (…, k, n) upper triangular.
pub fn lu(a: &Array) -> Result<(Array, Array, Array)> {
    check_matrix("linalg::lu", a, None)?;
    let (m, n) = rows_cols(a);
    let k = m.min(n);
    let r = record(LinalgOp::LuFactor, vec![a.clone()])?;
    let packed = &r[0];
    let l = add(&tril(&block(packed, (0, m), (0, k))?, -1)?, &eye(m as i64, Some(k as i64), 0, a.dtype())?)?;
    let u = triu(&block(packed, (0, k), (0, n))?, 0)?;
    Ok((r[2].clone(), l, u))
}

/// Validates `solve`-style arguments and returns the promoted `a` and `b`
/// (b as a matrix) and whether `b` was a vector.
fn solve_args(op: &str, a: &Array, b: &Array) -> Result<(Array, Array, bool)> {
    let d = promote_types(a.dtype(), b.dtype());
    if !matches!(d, Dtype::F32 | Dtype::F64) {
        return Err(Error::invalid(
            op,
            format!(
                "Input arrays must promote to float32 or float64.  Received arrays with type {} and {}.",
                a.dtype(),
                b.dtype()
            ),
        ));
    }
    let (a, b) = (astype(a, d)?, astype(b, d)?);
    check_ndim(op, &a)?;
    if b.ndim() < 1 {
        return Err(Error::invalid(op, "Second input must have >= 1 dimensions. Received array with 0 dimensions."));
    }
    let (m, n) = rows_cols(&a);
    if m != n {
        return Err(Error::invalid(
            op,
            format!("First input must be a square matrix. Received array with shape {}.", fmt_shape(a.shape())),
        ));
    }
    let vector = b.ndim() == 1;
    let rows = if vector { b.shape()[0] } else { b.shape()[b.ndim() - 2] };
    if rows != n {
        return Err(Error::invalid(
            op,
            format!(
                "Last dimension of first input with shape {} must match second to last dimension of second input with shape {}.",
                fmt_shape(a.shape()),
                fmt_shape(b.shape())
            ),
        ));
    }
    let b = if vector { reshape_to(&b, &[n, 1])? } else { b };
    Ok((a, b, vector))
}

fn solve_with(op_name: &str, op: LinalgOp, a: &Array, b: &Array) -> Result<Array> {
    let (a, bm, vector) = solve_args(op_name, a, b)?;
    let x = record_solve(op, &a, &bm)?;
    if vector {
        let s = x.shape();
        return reshape_to(&x, &s[..s.len() - 1]);
    }
    Ok(x)
}

/// Solves `a @ x = b` for square `a` (…, n, n); `b` is a vector (n,) or a
/// batch of matrices (…, n, k); batch dimensions broadcast.
pub fn solve(a: &Array, b: &Array) -> Result<Array> {
    solve_with("linalg::solve", LinalgOp::Solve, a, b)
}

/// Solves `t @ x = b` where `t` is the lower (or `upper`) triangle of `a`.
pub fn solve_triangular(a: &Array, b: &Array, upper: bool) -> Result<Array> {
    solve_with("linalg::solve_triangular", LinalgOp::SolveTriangular { upper }, a, b)
}

fn eig_args(op: &str, a: &Array) -> Result<()> {
    check_float_or_complex(op, a)?;
    check_ndim(op, a)?;
    check_square(op, a, "Only defined for square matrices.")
}

/// Eigenvalues and right eigenvectors (columns) of general square matrices,
/// both complex64. The order of the eigenvalues is unspecified (as LAPACK's).
pub fn eig(a: &Array) -> Result<(Array, Array)> {
    eig_args("linalg::eig", a)?;
    let mut r = record(LinalgOp::Eig { vectors: true }, vec![a.clone()])?;
    let v = r.pop().expect("two outputs");
    Ok((r.pop().expect("two outputs"), v))
}

/// Eigenvalues (complex64) of general square matrices.
pub fn eigvals(a: &Array) -> Result<Array> {
    eig_args("linalg::eigvals", a)?;
    record1(LinalgOp::Eig { vectors: false }, a)
}

fn uplo_upper(op: &str, uplo: &str) -> Result<bool> {
    match uplo {
        "L" => Ok(false),
        "U" => Ok(true),
        other => Err(Error::invalid(op, format!("UPLO must be 'L' or 'U', got '{other}'."))),
    }
}

/// Eigenvalues (ascending) and orthonormal eigenvectors (columns) of the
/// symmetric matrices given by the lower (`"L"`) or upper (`"U"`) triangle.
pub fn eigh(a: &Array, uplo: &str) -> Result<(Array, Array)> {
    eig_args("linalg::eigh", a)?;
    let x = if uplo_upper("linalg::eigh", uplo)? { mt(a)? } else { a.clone() };
    let mut r = record(LinalgOp::Eigh { vectors: true }, vec![x])?;
    let v = r.pop().expect("two outputs");
    Ok((r.pop().expect("two outputs"), v))
}

/// Eigenvalues (ascending) of the symmetric matrices given by one triangle (`"L"` or `"U"`).
pub fn eigvalsh(a: &Array, uplo: &str) -> Result<Array> {
    eig_args("linalg::eigvalsh", a)?;
    let x = if uplo_upper("linalg::eigvalsh", uplo)? { mt(a)? } else { a.clone() };
    record1(LinalgOp::Eigh { vectors: false }, &x)
}

/// Casts for det/slogdet: integers and bool → float32; half types are
/// computed in float32 and cast back.
fn det_input(op: &str, a: &Array) -> Result<(Array, Dtype)> {
    check_ndim(op, a)?;
    check_square(op, a, "Only defined for square matrices.")?;
    match a.dtype() {
        Dtype::F64 | Dtype::F32 => Ok((a.clone(), a.dtype())),
        Dtype::F16 | Dtype::BF16 => Ok((astype(a, Dtype::F32)?, a.dtype())),
        Dtype::C64 => Err(Error::unsupported(op, "complex64 input is not supported by Kiln's CPU linalg kernels.")),
        _ => Ok((astype(a, Dtype::F32)?, Dtype::F32)),
    }
}

/// Determinant of each square matrix (integer input gives float32).
pub fn det(a: &Array) -> Result<Array> {
    let (x, d) = det_input("linalg::det", a)?;
    astype(&record1(LinalgOp::Det, &x)?, d)
}

/// Sign and natural log of the absolute determinant of each square matrix
/// (sign 0 and log −inf for a singular matrix).
pub fn slogdet(a: &Array) -> Result<(Array, Array)> {
    let (x, d) = det_input("linalg::slogdet", a)?;
    let r = record(LinalgOp::SlogDet, vec![x])?;
    Ok((astype(&r[0], d)?, astype(&r[1], d)?))
}

/// Cross product of 2- or 3-vectors along `axis` (a 2-vector has z = 0);
/// the other dimensions broadcast. The result has size 3 along `axis`.
pub fn cross(a: &Array, b: &Array, axis: i32) -> Result<Array> {
    let op = "linalg::cross";
    let d = promote_types(a.dtype(), b.dtype());
    let (a, b) = (astype(a, d)?, astype(b, d)?);
    let ax_a = crate::shape::normalize_axis(op, axis, a.ndim())?;
    let ax_b = crate::shape::normalize_axis(op, axis, b.ndim())?;
    let (a, b) = (moveaxis(&a, ax_a as i32, -1)?, moveaxis(&b, ax_b as i32, -1)?);
    let comps = |x: &Array| -> Result<Vec<Array>> {
        let nd = x.ndim();
        let len = x.shape()[nd - 1];
        if len != 2 && len != 3 {
            return Err(Error::invalid(op, "The specified axis must have size 2 or 3."));
        }
        let mut out = Vec::with_capacity(3);
        for i in 0..len {
            let mut starts = vec![0i64; nd];
            let mut stops: Vec<i64> = x.shape().iter().map(|&s| s as i64).collect();
            starts[nd - 1] = i as i64;
            stops[nd - 1] = i as i64 + 1;
            out.push(slice(x, &starts, &stops, &vec![1; nd])?);
        }
        if len == 2 {
            out.push(zeros_like(&out[0])?);
        }
        Ok(out)
    };
    let (u, v) = (comps(&a)?, comps(&b)?);
    let c = |i: usize, j: usize| -> Result<Array> { subtract(&multiply(&u[i], &v[j])?, &multiply(&u[j], &v[i])?) };
    let r = concatenate(&[c(1, 2)?, c(2, 0)?, c(0, 1)?], Some(-1))?;
    // The result's axis sits where `axis` points in the broadcast result.
    let ax = crate::shape::normalize_axis(op, axis, r.ndim())?;
    moveaxis(&r, -1, ax as i32)
}

// ------------------------------------------------------------------ norm

/// The `ord` of [`norm`]: a number (vector p-norms, or the matrix norms
/// 1, −1, 2, −2, ±inf), the Frobenius norm or the nuclear norm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormOrd {
    /// A numeric order (use `f64::INFINITY` for inf).
    P(f64),
    /// `'fro'`: the Frobenius norm (matrices only).
    Fro,
    /// `'nuc'`: the nuclear norm, the sum of singular values (matrices only).
    Nuc,
}

impl NormOrd {
    /// Parses MLX's string orders `"fro"` and `"nuc"`.
    pub fn from_name(s: &str) -> Result<NormOrd> {
        match s {
            "fro" => Ok(NormOrd::Fro),
            "nuc" => Ok(NormOrd::Nuc),
            other => Err(Error::invalid("linalg::norm", format!("Invalid ord value '{other}' for matrix norm."))),
        }
    }
}

impl From<f64> for NormOrd {
    fn from(p: f64) -> Self {
        NormOrd::P(p)
    }
}

fn fmt_ord(p: f64) -> String {
    if p.is_infinite() {
        if p > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if p.fract() == 0.0 {
        format!("{}", p as i64)
    } else {
        format!("{p}")
    }
}

/// Vector or matrix norm, as `mx.linalg.norm`.
///
/// * `axis` None and `ord` None: the 2-norm of the flattened array.
/// * `axis` None and `ord` given: the array must be 1-d (vector norm) or 2-d (matrix norm).
/// * One axis: vector norms — ord None/2 (Euclidean), ±inf (max/min |x|),
///   0 (count of non-zeros), any other p (`sum(|x|^p)^(1/p)`).
/// * Two axes: matrix norms — None/'fro', 'nuc', ±1 (max/min column sum),
///   ±inf (max/min row sum), ±2 (largest/smallest singular value).
///
/// Integer and bool inputs give float32; complex inputs use |x|.
pub fn norm(a: &Array, ord: Option<NormOrd>, axis: Option<&[i32]>, keepdims: bool) -> Result<Array> {
    let op = "linalg::norm";
    let x = match a.dtype() {
        Dtype::C64 => super::unary::abs(a)?,
        d if d.is_floating() => a.clone(),
        _ => astype(a, Dtype::F32)?,
    };
    let axes: Vec<usize> = match axis {
        None => {
            if ord.is_none() {
                let flat = reshape_to(&x, &[x.size()])?;
                let r = vector_norm(&flat, None, 0)?;
                return reshape_to(&r, &if keepdims { vec![1; a.ndim()] } else { vec![] });
            }
            if a.ndim() > 2 {
                return Err(Error::invalid(op, "Received too many axes for norm."));
            }
            (0..a.ndim()).collect()
        }
        Some(list) => {
            let axes = super::reduce::reduce_axes(op, Axes::List(list.to_vec()), a.ndim())?;
            // Keep the caller's order (row axis first for matrix norms).
            let mut ordered = Vec::with_capacity(list.len());
            for &ax in list {
                ordered.push(crate::shape::normalize_axis(op, ax, a.ndim())?);
            }
            if axes.len() > 2 {
                return Err(Error::invalid(op, "Received too many axes for norm."));
            }
            ordered
        }
    };
    let r = match axes.len() {
        0 => super::unary::abs(&x)?,
        1 => {
            if matches!(ord, Some(NormOrd::Fro | NormOrd::Nuc)) {
                let name = if ord == Some(NormOrd::Fro) { "fro" } else { "nuc" };
                return Err(Error::invalid(
                    op,
                    format!("Norm '{name}' only supported for matrices, but received 1 axis/axes."),
                ));
            }
            vector_norm(&x, ord.map(|o| if let NormOrd::P(p) = o { p } else { 2.0 }), axes[0])?
        }
        _ => matrix_norm(&x, ord, axes[0], axes[1])?,
    };
    if keepdims {
        return Ok(r);
    }
    let mut sorted = axes.clone();
    sorted.sort_unstable();
    let shape: Vec<usize> =
        r.shape().iter().enumerate().filter(|(i, _)| !sorted.contains(i)).map(|(_, &d)| d).collect();
    reshape_to(&r, &shape)
}

/// Vector norm along `axis`, keeping it as size 1.
fn vector_norm(x: &Array, p: Option<f64>, axis: usize) -> Result<Array> {
    let ax = axis as i32;
    let p = p.unwrap_or(2.0);
    let ab = super::unary::abs(x)?;
    if p == 2.0 {
        return super::unary::sqrt(&sum(&multiply(x, x)?, ax, true)?);
    }
    if p == f64::INFINITY {
        return max(&ab, ax, true);
    }
    if p == f64::NEG_INFINITY {
        return min(&ab, ax, true);
    }
    if p == 0.0 {
        return sum(&astype(&not_equal(x, 0.0)?, x.dtype())?, ax, true);
    }
    if p == 1.0 {
        return sum(&ab, ax, true);
    }
    power(&sum(&power(&ab, p)?, ax, true)?, 1.0 / p)
}

/// Matrix norm over (row, col) axes, keeping both as size 1.
fn matrix_norm(x: &Array, ord: Option<NormOrd>, row: usize, col: usize) -> Result<Array> {
    let op = "linalg::norm";
    let (r, c) = (row as i32, col as i32);
    let ab = || super::unary::abs(x);
    match ord.unwrap_or(NormOrd::Fro) {
        NormOrd::Fro => super::unary::sqrt(&sum(&multiply(x, x)?, [r, c], true)?),
        NormOrd::Nuc => sv_reduce(x, row, col, |s| sum(s, -1, true)),
        NormOrd::P(p) => {
            if p == 1.0 {
                max(&sum(&ab()?, r, true)?, c, true)
            } else if p == -1.0 {
                min(&sum(&ab()?, r, true)?, c, true)
            } else if p == f64::INFINITY {
                max(&sum(&ab()?, c, true)?, r, true)
            } else if p == f64::NEG_INFINITY {
                min(&sum(&ab()?, c, true)?, r, true)
            } else if p == 2.0 {
                sv_reduce(x, row, col, |s| max(s, -1, true))
            } else if p == -2.0 {
                sv_reduce(x, row, col, |s| min(s, -1, true))
            } else {
                Err(Error::invalid(op, format!("Invalid ord {} for matrix norm.", fmt_ord(p))))
            }
        }
    }
}

/// Reduces the singular values of the (row, col) matrices with `f` (which
/// keeps the last axis as size 1) and puts size-1 axes at `row` and `col`.
fn sv_reduce(x: &Array, row: usize, col: usize, f: impl Fn(&Array) -> Result<Array>) -> Result<Array> {
    let nd = x.ndim();
    let mut perm: Vec<usize> = (0..nd).filter(|&i| i != row && i != col).collect();
    perm.extend([row, col]);
    let t = super::shape::transpose_perm(x, &perm)?;
    let s = svd(&t, false)?.swap_remove(0);
    let v = f(&s)?; // (…batch, 1)
    let mut shape = x.shape().to_vec();
    shape[row] = 1;
    shape[col] = 1;
    reshape_to(&v, &shape)
}
