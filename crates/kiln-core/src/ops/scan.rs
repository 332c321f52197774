//! Cumulative scans along one axis: cumsum, cumprod, cummax, cummin and
//! logcumsumexp (the `Scan` primitive).
//!
//! Gradients are O(n) per scanned line, built from scans in the other
//! direction: cumsum's is a reversed cumsum; cumprod's divides by x before
//! the first zero of a line and recomputes the product without that zero at
//! it (exact with zeros, as MLX); cummax/cummin route each output's gradient
//! to the input it copies (ties: the latest, as MLX) with a difference of
//! sums gathered at the next copied position; logcumsumexp sums the positive
//! and negative parts of the cotangent in log space (stable).

use super::binary::{
    add, divide, equal, greater, greater_equal, less, logical_and, maximum, minimum, multiply, subtract,
};
use super::compare::where_;
use super::creation::{arange_int, astype, zeros};
use super::indexing::take_along_axis;
use super::reduce::reduce_keep;
use super::shape::reshape_to;
use super::slicing::concatenate;
use super::unary::{exp, isneginf, log, negative};
use crate::array::{Array, Data};
use crate::backend::{Backend, ReduceOp, ScanOp};
use crate::dtype::{to_inexact, Dtype};
use crate::error::Result;
use crate::primitive::{OutSpec, Primitive};

/// A cumulative scan along `axis`.
#[derive(Debug, PartialEq)]
pub struct Scan {
    /// Which scan.
    pub op: ScanOp,
    /// The scanned axis.
    pub axis: usize,
    /// Scan from the end.
    pub reverse: bool,
    /// Include the current element (otherwise start from the identity).
    pub inclusive: bool,
}

impl Scan {
    /// The same scan direction over `v` (`inclusive` chosen by the caller).
    fn fwd(&self, op: ScanOp, v: &Array, inclusive: bool) -> Array {
        scan_raw(op, v, self.axis, self.reverse, inclusive)
    }

    /// The transposed scan: the opposite direction, this scan's inclusivity.
    fn back(&self, op: ScanOp, v: &Array) -> Array {
        scan_raw(op, v, self.axis, !self.reverse, self.inclusive)
    }

    /// 0..n along the scanned axis (int32), shaped to broadcast against `x`.
    fn positions(&self, x: &Array) -> Result<Array> {
        let n = x.shape()[self.axis];
        let mut s = vec![1usize; x.ndim()];
        s[self.axis] = n;
        reshape_to(&astype(&arange_int(0, n as i64, 1)?, Dtype::I32)?, &s)
    }

    /// cumprod: where x has no zero before position j, y_i / x_j; at the
    /// first zero z of a line, the product with x_z replaced by 1; after it 0.
    /// Returns (x with zeros replaced by 1, first-zero mask, cumprod of x with
    /// its first zero replaced by 1).
    fn prod_parts(&self, x: &Array) -> Result<(Array, Array, Array, Array)> {
        let zero = equal(x, 0.0)?;
        let zi = astype(&zero, Dtype::I32)?;
        let first = logical_and(&zero, &equal(&self.fwd(ScanOp::Sum, &zi, true), 1)?)?;
        let safe = where_(&zero, 1.0, x)?;
        let yp = self.fwd(ScanOp::Prod, &where_(&first, 1.0, x)?, self.inclusive);
        Ok((zi, first, safe, yp))
    }

    /// cummax/cummin: `m[j]` marks the positions a running extreme copies
    /// (x_j equals the inclusive scan at j; ties go to the latest one).
    fn extreme_marks(&self, x: &Array, y: &Array) -> Result<Array> {
        let y_in = if self.inclusive { y.clone() } else { self.fwd(self.op, x, true) };
        equal(x, &y_in)
    }

    /// `where(c > 0, log(c), -inf)` with no NaN in value or derivative.
    fn log_pos(c: &Array) -> Result<Array> {
        let p = greater(c, 0.0)?;
        where_(&p, &log(&where_(&p, c, 1.0)?)?, f64::NEG_INFINITY)
    }

    fn vjp_line(&self, x: &Array, y: &Array, g: &Array) -> Result<Array> {
        match self.op {
            ScanOp::Sum => Ok(self.back(ScanOp::Sum, g)),
            ScanOp::Prod => {
                // gx_j = Σ_{i ∋ j} g_i Π_{k ≤ i, k ≠ j} x_k, split at the first zero.
                let (zi, first, safe, yp) = self.prod_parts(x)?;
                let before = equal(&self.fwd(ScanOp::Sum, &zi, true), 0)?;
                let a = divide(&self.back(ScanOp::Sum, &multiply(g, y)?), &safe)?;
                let b = self.back(ScanOp::Sum, &multiply(g, &yp)?);
                where_(&before, &a, &where_(&first, &b, 0.0)?)
            }
            ScanOp::Max | ScanOp::Min => {
                // Each output copies one marked input; a marked j collects the
                // contiguous run of outputs it feeds: a difference of sums.
                let m = self.extreme_marks(x, y)?;
                let n = x.shape()[self.axis] as i64;
                let pos = self.positions(x)?;
                let rs = self.back(ScanOp::Sum, g);
                let mut zshape = x.shape().to_vec();
                zshape[self.axis] = 1;
                let z = zeros(&zshape, g.dtype())?;
                let ax = Some(self.axis as i32);
                let other = if !self.reverse {
                    // The next marked position after j (n if none).
                    let nxt = scan_raw(ScanOp::Min, &where_(&m, &pos, n)?, self.axis, true, false);
                    let nxt = minimum(&nxt, n)?;
                    take_along_axis(&concatenate(&[rs.clone(), z], ax)?, &nxt, ax)?
                } else {
                    // The previous marked position before j (-1 if none).
                    let prv = scan_raw(ScanOp::Max, &where_(&m, &pos, -1)?, self.axis, false, false);
                    let prv = add(&maximum(&prv, -1)?, 1)?;
                    take_along_axis(&concatenate(&[z, rs.clone()], ax)?, &prv, ax)?
                };
                where_(&m, &subtract(&rs, &other)?, 0.0)
            }
            ScanOp::LogAddExp => {
                // gx_j = Σ_{i ∋ j} g_i exp(x_j - y_i), positive and negative
                // parts of g each summed in log space (no overflow).
                let y_safe = where_(&isneginf(y)?, 0.0, y)?;
                let part = |c: &Array| -> Result<Array> {
                    let l = subtract(&Self::log_pos(c)?, &y_safe)?;
                    exp(&add(x, &self.back(ScanOp::LogAddExp, &l))?)
                };
                subtract(&part(g)?, &part(&negative(g)?)?)
            }
        }
    }

    fn jvp_line(&self, x: &Array, y: &Array, t: &Array) -> Result<Array> {
        match self.op {
            ScanOp::Sum => Ok(self.fwd(ScanOp::Sum, t, self.inclusive)),
            ScanOp::Prod => {
                let (zi, first, safe, yp) = self.prod_parts(x)?;
                // Outputs before the first zero: y_i Σ_j t_j / x_j; after it, t_z y'_i.
                let region = equal(&self.fwd(ScanOp::Sum, &zi, self.inclusive), 0)?;
                let a = multiply(y, &self.fwd(ScanOp::Sum, &divide(t, &safe)?, self.inclusive))?;
                let tz = reduce_keep(ReduceOp::Sum, &where_(&first, t, 0.0)?, &[self.axis])?;
                where_(&region, &a, &multiply(&tz, &yp)?)
            }
            ScanOp::Max | ScanOp::Min => {
                let m = self.extreme_marks(x, y)?;
                let n = x.shape()[self.axis] as i64;
                let pos = self.positions(x)?;
                let (op, none) = if self.reverse { (ScanOp::Min, n) } else { (ScanOp::Max, -1) };
                let owner = self.fwd(op, &where_(&m, &pos, none)?, self.inclusive);
                let valid = logical_and(&greater_equal(&owner, 0)?, &less(&owner, n)?)?;
                let owner = minimum(&maximum(&owner, 0)?, n - 1)?;
                where_(&valid, &take_along_axis(t, &owner, Some(self.axis as i32))?, 0.0)
            }
            ScanOp::LogAddExp => {
                // ty_i = Σ_{j ∈ i} t_j exp(x_j - y_i), by parts of t in log space.
                let y_safe = where_(&isneginf(y)?, 0.0, y)?;
                let part = |c: &Array| -> Result<Array> {
                    let s = self.fwd(ScanOp::LogAddExp, &add(x, &Self::log_pos(c)?)?, self.inclusive);
                    exp(&subtract(&s, &y_safe)?)
                };
                subtract(&part(t)?, &part(&negative(t)?)?)
            }
        }
    }
}

impl Primitive for Scan {
    fn name(&self) -> &'static str {
        match self.op {
            ScanOp::Sum => "CumSum",
            ScanOp::Prod => "CumProd",
            ScanOp::Max => "CumMax",
            ScanOp::Min => "CumMin",
            ScanOp::LogAddExp => "CumLogaddexp",
        }
    }
    fn eval(&self, backend: &dyn Backend, inputs: &[Array], outputs: &[OutSpec<'_>]) -> Result<Vec<Data>> {
        Ok(vec![backend.scan(self.op, &inputs[0], self.axis, self.reverse, self.inclusive, &outputs[0])?])
    }
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], outputs: &[Array]) -> Result<Vec<Array>> {
        Ok(vec![self.vjp_line(&primals[0], &outputs[0], &cotangents[0])?])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let y =
            if self.op == ScanOp::Sum { primals[0].clone() } else { self.fwd(self.op, &primals[0], self.inclusive) };
        Ok(vec![self.jvp_line(&primals[0], &y, &tangents[0])?])
    }
    fn vmap(&self, inputs: &[Array], axes: &[Option<usize>]) -> Result<(Vec<Array>, Vec<Option<usize>>)> {
        let axis = match axes[0] {
            Some(ax) if ax <= self.axis => self.axis + 1,
            _ => self.axis,
        };
        Ok((vec![scan_raw(self.op, &inputs[0], axis, self.reverse, self.inclusive)], vec![axes[0]]))
    }
    crate::prim_common!();
}

fn scan_raw(op: ScanOp, x: &Array, axis: usize, reverse: bool, inclusive: bool) -> Array {
    Array::from_op(x.shape().to_vec(), x.dtype(), Scan { op, axis, reverse, inclusive }, vec![x.clone()])
}

fn scan_public(name: &str, op: ScanOp, a: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    let (x, ax) = match axis {
        None => (reshape_to(a, &[a.size()])?, 0),
        Some(ax) => (a.clone(), crate::shape::normalize_axis(name, ax, a.ndim())?),
    };
    let dt = match (op, x.dtype()) {
        (ScanOp::Sum, Dtype::Bool) => Dtype::I32,
        (ScanOp::LogAddExp, d) => to_inexact(d),
        (_, d) => d,
    };
    Ok(scan_raw(op, &astype(&x, dt)?, ax, reverse, inclusive))
}

/// Cumulative sum along `axis` (`None` flattens); bool → int32, integers keep their dtype and wrap.
pub fn cumsum(a: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan_public("cumsum", ScanOp::Sum, a, axis, reverse, inclusive)
}

/// Cumulative product along `axis` (`None` flattens).
pub fn cumprod(a: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan_public("cumprod", ScanOp::Prod, a, axis, reverse, inclusive)
}

/// Running maximum along `axis` (`None` flattens); exclusive scans start at the dtype minimum.
pub fn cummax(a: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan_public("cummax", ScanOp::Max, a, axis, reverse, inclusive)
}

/// Running minimum along `axis` (`None` flattens); exclusive scans start at the dtype maximum.
pub fn cummin(a: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan_public("cummin", ScanOp::Min, a, axis, reverse, inclusive)
}

/// Running log(sum(exp)) along `axis` (`None` flattens); integers → float32.
pub fn logcumsumexp(a: &Array, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
    scan_public("logcumsumexp", ScanOp::LogAddExp, a, axis, reverse, inclusive)
}

/// Scan methods, as on MLX's array.
impl Array {
    /// Cumulative sum along `axis` (`None` flattens).
    pub fn cumsum(&self, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
        cumsum(self, axis, reverse, inclusive)
    }
    /// Cumulative product along `axis` (`None` flattens).
    pub fn cumprod(&self, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
        cumprod(self, axis, reverse, inclusive)
    }
    /// Cumulative maximum along `axis` (`None` flattens).
    pub fn cummax(&self, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
        cummax(self, axis, reverse, inclusive)
    }
    /// Cumulative minimum along `axis` (`None` flattens).
    pub fn cummin(&self, axis: Option<i32>, reverse: bool, inclusive: bool) -> Result<Array> {
        cummin(self, axis, reverse, inclusive)
    }
}
