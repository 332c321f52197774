//! # kiln-optim
//!
//! Optimizers and schedules for Kiln, as MLX's `mlx.optimizers`: each keeps
//! a state tree (`step`, `learning_rate` and per-parameter arrays such as
//! Adam's `m` and `v`, keyed like the parameters: `layers.0.weight.m`) that
//! can be saved with the model and restored, so training resumes exactly.
//!
//! ```
//! use kiln_core::{ops, Array};
//! use kiln_nn::{self as nn, Forward, ModuleExt};
//! use kiln_optim::{Optimizer, Sgd};
//!
//! let mut model = nn::Linear::new(3, 1, true).unwrap();
//! let mut opt = Sgd::new(0.01);
//! let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[1, 3]).unwrap();
//! let loss_fn = nn::value_and_grad(|m: &nn::Linear, a: &[Array]| ops::sum(&ops::square(&m.forward(&a[0])?)?, ops::Axes::All, false));
//! let (first, grads) = loss_fn(&model, &[x.clone()]).unwrap();
//! opt.update(&mut model, &grads).unwrap();
//! let (second, _) = loss_fn(&model, &[x]).unwrap();
//! assert!(second.item::<f32>().unwrap() < first.item::<f32>().unwrap());
//! ```
#![warn(missing_docs)]

mod optimizers;
pub mod schedule;
mod step;

pub use optimizers::*;
pub use schedule::Schedule;
pub use step::TrainStep;

use kiln_core::{ops, tree_flatten, tree_map, Array, Dtype, Result, Tree};

/// `(clipped gradients, total norm)`: scales every gradient by
/// `min(max_norm / (‖g‖ + 1e-6), 1)` where `‖g‖` is the global L2 norm over
/// the whole tree (MLX's `clip_grad_norm`).
pub fn clip_grad_norm(grads: &Tree, max_norm: f64) -> Result<(Tree, Array)> {
    if max_norm < 0.0 {
        return Err(kiln_core::Error::invalid(
            "clip_grad_norm",
            format!("max_norm should be >=0, {max_norm} was provided instead"),
        ));
    }
    // MLX starts the sum from a Python 0.0 (weakly typed): the first term sets the dtype.
    let mut norm_sq: Option<Array> = None;
    for (_, g) in tree_flatten(grads) {
        let g = if g.dtype() == Dtype::F16 { ops::astype(&g, Dtype::F32)? } else { g };
        let term = ops::sum(&ops::square(&g)?, ops::Axes::All, false)?;
        norm_sq = Some(match norm_sq {
            None => ops::add(0.0, &term)?,
            Some(acc) => ops::add(&acc, &term)?,
        });
    }
    let total = ops::sqrt(&norm_sq.unwrap_or_else(|| Array::scalar(0.0f32)))?;
    let normalizer = ops::minimum(&ops::divide(max_norm, &ops::add(&total, 1e-6)?)?, 1.0)?;
    let clipped = tree_map(grads, &mut |g| {
        let s = ops::multiply(g, &normalizer)?;
        if g.dtype().is_floating() {
            ops::astype(&s, g.dtype())
        } else {
            Ok(s)
        }
    })?;
    Ok((clipped, total))
}
