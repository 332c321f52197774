//! Cumulative scans along one axis: cumsum, cumprod, cummax, cummin and
//! logcumsumexp (the `Scan` primitive).
//!
//! Gradients: cumsum's is a cumsum in the other direction. cumprod, cummax,
//! cummin and logcumsumexp build, along the scanned axis, an n×n matrix of
//! partial derivatives ∂y_i/∂x_j with ordinary ops (exact where x has zeros
//! for cumprod, stable for logcumsumexp); they cost O(n²) per scanned line.

use super::binary::{add, equal, minimum, multiply, subtract};
use super::creation::astype;
use super::reduce::reduce_keep;
use super::shape::{expand_dims, moveaxis, reshape_to};
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
    fn with_axis(&self, op: ScanOp, x: &Array, axis: usize, inclusive: bool) -> Array {
        scan_raw(op, x, axis, self.reverse, inclusive)
    }

    /// Window mask W[j, i] = 1 when x_j contributes to y_i (scanned axis sizes n×n).
    fn window(&self, n: usize) -> Vec<bool> {
        let mut w = vec![false; n * n];
        for j in 0..n {
            for i in 0..n {
                w[j * n + i] = match (self.reverse, self.inclusive) {
                    (false, true) => j <= i,
                    (false, false) => j < i,
                    (true, true) => j >= i,
                    (true, false) => j > i,
                };
            }
        }
        w
    }

    /// D[..., i, j] = ∂y_i/∂x_j with the scanned axis moved last (shape (..., n, n)).
    fn jacobian(&self, x: &Array) -> Result<Array> {
        let xl = moveaxis(x, self.axis as i32, -1)?;
        let n = *xl.shape().last().expect("rank >= 1");
        let r = xl.ndim();
        let dt = x.dtype();
        let w = self.window(n);
        // Wt[i, j] = W[j, i].
        let wt: Vec<f64> = (0..n * n).map(|k| w[(k % n) * n + k / n] as u8 as f64).collect();
        let wt = astype(&Array::from_vec(wt, &[n, n])?, dt)?;
        let last = r; // the j axis in (..., n, n)
        match self.op {
            ScanOp::Prod => {
                // C[..., j, i] = prod over window(i) of x with x_j replaced by 1.
                let eye: Vec<f64> = (0..n * n).map(|k| (k / n == k % n) as u8 as f64).collect();
                let eye = astype(&Array::from_vec(eye, &[n, n])?, dt)?;
                let xb = expand_dims(&xl, r as i32 - 1)?; // (..., 1, n)
                let xr = add(&multiply(&xb, &subtract(1.0, &eye)?)?, &eye)?; // (..., n(j), n(k))
                let c = scan_raw(ScanOp::Prod, &xr, last, self.reverse, self.inclusive); // (..., j, i)
                let d = moveaxis(&c, -1, -2)?; // (..., i, j)
                multiply(&d, &wt)
            }
            ScanOp::Max | ScanOp::Min => {
                // The gradient of y_i goes to the last "record" position it copies.
                let y_in = self.with_axis(self.op, &xl, r - 1, true);
                let m = astype(&equal(&xl, &y_in)?, dt)?;
                let s_in = self.with_axis(ScanOp::Sum, &m, r - 1, true);
                let s_out = self.with_axis(ScanOp::Sum, &m, r - 1, self.inclusive);
                let e = equal(&expand_dims(&s_out, r as i32)?, &expand_dims(&s_in, r as i32 - 1)?)?;
                multiply(&astype(&e, dt)?, &expand_dims(&m, r as i32 - 1)?)
            }
            ScanOp::LogAddExp => {
                let y = self.with_axis(ScanOp::LogAddExp, &xl, r - 1, self.inclusive);
                let diff = subtract(&expand_dims(&xl, r as i32 - 1)?, &expand_dims(&y, r as i32)?)?; // x_j - y_i
                let logw: Vec<f64> =
                    (0..n * n).map(|k| if w[(k % n) * n + k / n] { 0.0 } else { f64::NEG_INFINITY }).collect();
                let logw = astype(&Array::from_vec(logw, &[n, n])?, dt)?;
                super::unary::exp(&add(&minimum(&diff, 0.0)?, &logw)?)
            }
            ScanOp::Sum => multiply(&super::creation::ones(&[n, n], dt)?, &wt),
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
    fn vjp(&self, primals: &[Array], cotangents: &[Array], _: &[usize], _: &[Array]) -> Result<Vec<Array>> {
        let g = &cotangents[0];
        if self.op == ScanOp::Sum {
            return Ok(vec![scan_raw(ScanOp::Sum, g, self.axis, !self.reverse, self.inclusive)]);
        }
        let d = self.jacobian(&primals[0])?; // (..., i, j)
        let r = d.ndim() - 2;
        let gl = expand_dims(&moveaxis(g, self.axis as i32, -1)?, r as i32 + 1)?; // (..., i, 1)
        let gx = reduce_keep(ReduceOp::Sum, &multiply(&d, &gl)?, &[r])?; // (..., 1, j)
        let mut shape = gx.shape().to_vec();
        shape.remove(r);
        Ok(vec![moveaxis(&reshape_to(&gx, &shape)?, -1, self.axis as i32)?])
    }
    fn jvp(&self, primals: &[Array], tangents: &[Array], _: &[usize]) -> Result<Vec<Array>> {
        let t = &tangents[0];
        if self.op == ScanOp::Sum {
            return Ok(vec![scan_raw(ScanOp::Sum, t, self.axis, self.reverse, self.inclusive)]);
        }
        let d = self.jacobian(&primals[0])?; // (..., i, j)
        let r = d.ndim() - 2;
        let tl = expand_dims(&moveaxis(t, self.axis as i32, -1)?, r as i32)?; // (..., 1, j)
        let ty = reduce_keep(ReduceOp::Sum, &multiply(&d, &tl)?, &[r + 1])?; // (..., i, 1)
        let shape = ty.shape()[..r + 1].to_vec();
        Ok(vec![moveaxis(&reshape_to(&ty, &shape)?, -1, self.axis as i32)?])
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
