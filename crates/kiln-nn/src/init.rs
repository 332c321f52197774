//! Initialisers, as MLX's `nn.init`: each returns a new array of the given
//! shape, drawing from the global random key sequence (`random::seed` makes
//! them reproducible; with the same seed they draw what MLX draws).

use kiln_core::ops::{self, Operand};
use kiln_core::{linalg, random, Array, Dtype, Error, Result};

/// Whether a fan is computed from the input or the output side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FanMode {
    /// `fan_in`: the last axis times the receptive field.
    FanIn,
    /// `fan_out`: the first axis times the receptive field.
    FanOut,
}

/// Every element `value`.
pub fn constant(shape: &[usize], value: f64, dtype: Dtype) -> Result<Array> {
    ops::full(shape, value, dtype)
}

/// Normal samples with `mean` and `std`.
pub fn normal(shape: &[usize], mean: f64, std: f64, dtype: Dtype) -> Result<Array> {
    random::normal(shape, dtype, Some(Operand::from(mean as f32)), Some(Operand::from(std as f32)), None)
}

/// Uniform samples in `[low, high)`.
pub fn uniform(shape: &[usize], low: f64, high: f64, dtype: Dtype) -> Result<Array> {
    random::uniform(low as f32, high as f32, shape, dtype, None)
}

/// The identity matrix; `shape` must be square.
pub fn identity(shape: &[usize], dtype: Dtype) -> Result<Array> {
    if shape.len() != 2 || shape[0] != shape[1] {
        return Err(Error::invalid(
            "init.identity",
            format!("The input array must be a square matrix but got shape {shape:?}."),
        ));
    }
    ops::eye(shape[0] as i64, None, 0, dtype)
}

/// `(fan_in, fan_out)` as MLX computes them: the last and first axes, each
/// times the product of the axes between.
pub fn fan_in_fan_out(shape: &[usize]) -> Result<(usize, usize)> {
    if shape.len() < 2 {
        return Err(Error::invalid(
            "init",
            format!(
                "Glorot / He initialization requires at least 2 dimensional input but input with {} dimensions.",
                shape.len()
            ),
        ));
    }
    let receptive: usize = shape[1..shape.len() - 1].iter().product();
    Ok((shape[shape.len() - 1] * receptive, shape[0] * receptive))
}

/// Normal with `std = gain·√(2/(fan_in+fan_out))`.
pub fn glorot_normal(shape: &[usize], gain: f64, dtype: Dtype) -> Result<Array> {
    let (fi, fo) = fan_in_fan_out(shape)?;
    normal(shape, 0.0, gain * (2.0 / (fi + fo) as f64).sqrt(), dtype)
}

/// Uniform in `±gain·√(6/(fan_in+fan_out))`.
pub fn glorot_uniform(shape: &[usize], gain: f64, dtype: Dtype) -> Result<Array> {
    let (fi, fo) = fan_in_fan_out(shape)?;
    let limit = gain * (6.0 / (fi + fo) as f64).sqrt();
    uniform(shape, -limit, limit, dtype)
}

fn fan(shape: &[usize], mode: FanMode) -> Result<f64> {
    let (fi, fo) = fan_in_fan_out(shape)?;
    Ok(match mode {
        FanMode::FanIn => fi,
        FanMode::FanOut => fo,
    } as f64)
}

/// Normal with `std = gain/√fan`.
pub fn he_normal(shape: &[usize], mode: FanMode, gain: f64, dtype: Dtype) -> Result<Array> {
    normal(shape, 0.0, gain / fan(shape, mode)?.sqrt(), dtype)
}

/// Uniform in `±gain·√(3/fan)`.
pub fn he_uniform(shape: &[usize], mode: FanMode, gain: f64, dtype: Dtype) -> Result<Array> {
    let limit = gain * (3.0 / fan(shape, mode)?).sqrt();
    uniform(shape, -limit, limit, dtype)
}

/// Normal samples of a 2-D `shape` with `⌈sparsity·cols⌉` zeros in every row
/// (at positions drawn uniformly).
pub fn sparse(shape: &[usize], sparsity: f64, mean: f64, std: f64, dtype: Dtype) -> Result<Array> {
    if shape.len() != 2 {
        return Err(Error::invalid("init.sparse", "Only tensors with 2 dimensions are supported"));
    }
    let (rows, cols) = (shape[0], shape[1]);
    let num_zeros = ((sparsity * cols as f64).ceil() as usize).min(cols);
    let order = ops::argsort(&random::uniform(0.0f32, 1.0f32, shape, Dtype::F32, None)?, Some(1))?;
    let a = normal(shape, mean, std, dtype)?;
    if num_zeros == 0 {
        return Ok(a);
    }
    let zero_at = ops::slice(&order, &[0, 0], &[rows as i64, num_zeros as i64], &[1, 1])?;
    ops::put_along_axis(&a, &zero_at, &ops::zeros(&[rows, num_zeros], dtype)?, Some(1))
}

/// A (semi-)orthogonal matrix times `gain`: the Q of a QR decomposition of a
/// square normal matrix, with signs fixed by R's diagonal, cut to `shape`.
pub fn orthogonal(shape: &[usize], gain: f64, dtype: Dtype) -> Result<Array> {
    if shape.len() != 2 {
        return Err(Error::invalid(
            "init.orthogonal",
            format!("Orthogonal initialization requires a 2D array but got a {}D array.", shape.len()),
        ));
    }
    let n = shape[0].max(shape[1]);
    let r = random::normal(&[n, n], Dtype::F32, None, None, None)?;
    let (q, rr) = linalg::qr(&r)?;
    let q = ops::multiply(&q, &ops::sign(&ops::diagonal(&rr, 0, 0, 1)?)?)?;
    let q = ops::slice(&q, &[0, 0], &[shape[0] as i64, shape[1] as i64], &[1, 1])?;
    ops::astype(&ops::multiply(&q, gain as f32)?, dtype)
}
