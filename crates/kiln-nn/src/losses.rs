//! Loss functions, as MLX's `nn.losses` (same formulas, defaults and
//! reductions; shape mismatches are errors naming both shapes).

use kiln_core::ops::{self, Axes};
use kiln_core::{linalg, stop_gradient, Array, Error, Result};

/// How a loss reduces its per-element values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reduction {
    /// Per-element losses.
    None,
    /// Their mean.
    Mean,
    /// Their sum.
    Sum,
}

fn reduce(loss: Array, reduction: Reduction) -> Result<Array> {
    match reduction {
        Reduction::None => Ok(loss),
        Reduction::Mean => ops::mean(&loss, Axes::All, false),
        Reduction::Sum => ops::sum(&loss, Axes::All, false),
    }
}

fn same_shape(op: &str, what: [&str; 2], a: &Array, b: &Array) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::invalid(
            op,
            format!("{} shape {:?} does not match {} shape {:?}.", what[0], a.shape(), what[1], b.shape()),
        ));
    }
    Ok(())
}

fn weighted(op: &str, loss: Array, weights: Option<&Array>) -> Result<Array> {
    match weights {
        None => Ok(loss),
        Some(w) if w.shape() != loss.shape() => Err(Error::invalid(
            op,
            format!("Weights with shape {:?} is not the same as output loss with shape {:?}.", w.shape(), loss.shape()),
        )),
        Some(w) => ops::multiply(&loss, w),
    }
}

/// Cross entropy of `logits` against class indices (one axis fewer than the
/// logits) or probabilities (same shape), with optional per-element weights
/// and label smoothing in `[0, 1)`. MLX's default reduction is `None`.
pub fn cross_entropy(
    logits: &Array,
    targets: &Array,
    weights: Option<&Array>,
    axis: i32,
    label_smoothing: f32,
    reduction: Reduction,
) -> Result<Array> {
    let op = "cross_entropy";
    if !(0.0..1.0).contains(&label_smoothing) {
        return Err(Error::invalid(op, format!("Label smoothing must be in [0, 1), got {label_smoothing}.")));
    }
    let ax = kiln_core::shape::normalize_axis(op, axis, logits.ndim())?;
    let as_probs = targets.ndim() == logits.ndim();
    let mut dropped = logits.shape().to_vec();
    dropped.remove(ax);
    if (as_probs && targets.shape() != logits.shape()) || (!as_probs && targets.shape() != dropped.as_slice()) {
        return Err(Error::invalid(
            op,
            format!("Targets shape {:?} does not match logits shape {:?}.", targets.shape(), logits.shape()),
        ));
    }
    let logits = ops::subtract(logits, &stop_gradient(&ops::max(logits, axis, true)?))?;
    let score = if as_probs {
        ops::sum(&ops::multiply(&logits, targets)?, axis, false)?
    } else {
        let picked = ops::take_along_axis(&logits, &ops::expand_dims(targets, axis)?, Some(axis))?;
        ops::squeeze_axes(&picked, &[axis])?
    };
    let lse = ops::logsumexp(&logits, axis, false)?;
    let loss = if label_smoothing > 0.0 {
        let adjusted = ops::multiply(1.0 - label_smoothing, &score)?;
        let smoothed = ops::multiply(&ops::negative(&ops::mean(&logits, axis, false)?)?, label_smoothing)?;
        ops::add(&ops::subtract(&lse, &adjusted)?, &smoothed)?
    } else {
        ops::subtract(&lse, &score)?
    };
    reduce(weighted(op, loss, weights)?, reduction)
}

/// Binary cross entropy of logits (`with_logits`) or probabilities against
/// targets in [0, 1]; log-probabilities are clipped at -100 as MLX does.
pub fn binary_cross_entropy(
    inputs: &Array,
    targets: &Array,
    weights: Option<&Array>,
    with_logits: bool,
    reduction: Reduction,
) -> Result<Array> {
    let op = "binary_cross_entropy";
    same_shape(op, ["Inputs", "targets"], inputs, targets)?;
    let loss = if with_logits {
        ops::subtract(&ops::logaddexp(0.0f32, inputs)?, &ops::multiply(inputs, targets)?)?
    } else {
        let lo = Some(ops::Operand::from(-100.0f32));
        let l1 = ops::clip(&ops::log(inputs)?, lo.clone(), None)?;
        let l0 = ops::clip(&ops::log(&ops::subtract(1, inputs)?)?, lo, None)?;
        let t = ops::add(&ops::multiply(targets, &l1)?, &ops::multiply(&ops::subtract(1, targets)?, &l0)?)?;
        ops::negative(&t)?
    };
    reduce(weighted(op, loss, weights)?, reduction)
}

/// Mean absolute error (default reduction `Mean`).
pub fn l1_loss(predictions: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    same_shape("l1_loss", ["Predictions", "targets"], predictions, targets)?;
    reduce(ops::abs(&ops::subtract(predictions, targets)?)?, reduction)
}

/// Mean squared error (default reduction `Mean`).
pub fn mse_loss(predictions: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    same_shape("mse_loss", ["Predictions", "targets"], predictions, targets)?;
    reduce(ops::square(&ops::subtract(predictions, targets)?)?, reduction)
}

/// Negative log likelihood of log-probabilities `inputs` at class indices `targets`.
pub fn nll_loss(inputs: &Array, targets: &Array, axis: i32, reduction: Reduction) -> Result<Array> {
    let picked = ops::take_along_axis(inputs, &ops::expand_dims(targets, axis)?, Some(axis))?;
    reduce(ops::negative(&ops::squeeze_axes(&picked, &[axis])?)?, reduction)
}

/// Gaussian negative log likelihood with predicted variances `vars` (clamped
/// below at `eps`); `full` adds the constant `½·log(2π)`.
pub fn gaussian_nll_loss(
    inputs: &Array,
    targets: &Array,
    vars: &Array,
    full: bool,
    eps: f32,
    reduction: Reduction,
) -> Result<Array> {
    let op = "gaussian_nll_loss";
    same_shape(op, ["Inputs", "targets"], inputs, targets)?;
    same_shape(op, ["Inputs", "vars"], inputs, vars)?;
    let vars = ops::maximum(vars, eps)?;
    let sq = ops::divide(&ops::square(&ops::subtract(targets, inputs)?)?, &vars)?;
    let mut loss = ops::multiply(0.5f32, &ops::add(&ops::log(&vars)?, &sq)?)?;
    if full {
        loss = ops::add(&loss, (0.5 * (2.0 * std::f64::consts::PI).ln()) as f32)?;
    }
    reduce(loss, reduction)
}

/// Kullback–Leibler divergence of log-probabilities `inputs` from log-probabilities `targets`.
pub fn kl_div_loss(inputs: &Array, targets: &Array, axis: i32, reduction: Reduction) -> Result<Array> {
    let t = ops::multiply(&ops::exp(targets)?, &ops::subtract(targets, inputs)?)?;
    reduce(ops::sum(&t, axis, false)?, reduction)
}

/// Smooth L1: quadratic below `beta`, linear above (default reduction `Mean`).
pub fn smooth_l1_loss(predictions: &Array, targets: &Array, beta: f32, reduction: Reduction) -> Result<Array> {
    same_shape("smooth_l1_loss", ["Predictions", "targets"], predictions, targets)?;
    let diff = ops::abs(&ops::subtract(predictions, targets)?)?;
    let quad = ops::divide(&ops::multiply(0.5f32, &ops::square(&diff)?)?, beta)?;
    let lin = ops::subtract(&ops::abs(&diff)?, 0.5 * beta)?;
    reduce(ops::where_(&ops::less(&diff, beta)?, &quad, &lin)?, reduction)
}

/// Triplet margin loss with `p`-norm distances along `axis`.
#[allow(clippy::too_many_arguments)]
pub fn triplet_loss(
    anchors: &Array,
    positives: &Array,
    negatives: &Array,
    axis: i32,
    p: i32,
    margin: f32,
    eps: f32,
    reduction: Reduction,
) -> Result<Array> {
    let dist = |other: &Array| -> Result<Array> {
        let s = ops::sum(&ops::power(&ops::abs(&ops::subtract(anchors, other)?)?, p)?, axis, false)?;
        ops::power(&ops::add(&s, eps)?, 1.0 / p as f32)
    };
    let d = ops::add(&ops::subtract(&dist(positives)?, &dist(negatives)?)?, margin)?;
    reduce(ops::maximum(&d, 0)?, reduction)
}

/// Hinge loss `max(1 - inputs·targets, 0)`.
pub fn hinge_loss(inputs: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    reduce(ops::maximum(&ops::subtract(1, &ops::multiply(inputs, targets)?)?, 0)?, reduction)
}

/// Huber loss with threshold `delta`.
pub fn huber_loss(inputs: &Array, targets: &Array, delta: f32, reduction: Reduction) -> Result<Array> {
    let abs_err = ops::abs(&ops::subtract(inputs, targets)?)?;
    let quadratic = ops::minimum(&abs_err, delta)?;
    let linear = ops::subtract(&abs_err, &quadratic)?;
    let loss = ops::add(&ops::multiply(0.5f32, &ops::power(&quadratic, 2)?)?, &ops::multiply(delta, &linear)?)?;
    reduce(loss, reduction)
}

/// `log(cosh(inputs - targets))`, computed stably as `logaddexp(e, -e) - log 2`.
pub fn log_cosh_loss(inputs: &Array, targets: &Array, reduction: Reduction) -> Result<Array> {
    let e = ops::subtract(inputs, targets)?;
    let loss = ops::subtract(&ops::logaddexp(&e, &ops::negative(&e)?)?, std::f64::consts::LN_2 as f32)?;
    reduce(loss, reduction)
}

/// Cosine similarity along `axis` (MLX's default axis is 1), the norm
/// product clamped below at `eps`.
pub fn cosine_similarity_loss(x1: &Array, x2: &Array, axis: i32, eps: f32, reduction: Reduction) -> Result<Array> {
    let n1 = linalg::norm(x1, None, Some(&[axis]), false)?;
    let n2 = linalg::norm(x2, None, Some(&[axis]), false)?;
    let dot = ops::sum(&ops::multiply(x1, x2)?, axis, false)?;
    reduce(ops::divide(&dot, &ops::maximum(&ops::multiply(&n1, &n2)?, eps)?)?, reduction)
}

/// `max(0, -targets·(inputs1 - inputs2) + margin)`.
pub fn margin_ranking_loss(
    inputs1: &Array,
    inputs2: &Array,
    targets: &Array,
    margin: f32,
    reduction: Reduction,
) -> Result<Array> {
    if inputs1.shape() != inputs2.shape() || inputs1.shape() != targets.shape() {
        return Err(Error::invalid(
            "margin_ranking_loss",
            format!(
                "The shapes of the arguments do not match. The provided shapes are inputs1.shape={:?}, inputs2.shape={:?}, and targets.shape={:?}.",
                inputs1.shape(),
                inputs2.shape(),
                targets.shape()
            ),
        ));
    }
    let d = ops::subtract(inputs1, inputs2)?;
    let t = ops::add(&ops::multiply(&ops::negative(targets)?, &d)?, margin)?;
    reduce(ops::maximum(0, &t)?, reduction)
}
