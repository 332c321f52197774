//! # kiln-nn
//!
//! Neural-network modules for Kiln in the design of MLX's `mlx.nn`: a model
//! is a struct of layers that derives [`Module`], its parameters are a tree
//! keyed by MLX's dotted paths (`layers.0.weight`, so MLX checkpoints load by
//! name), and [`value_and_grad`] differentiates a loss with respect to the
//! trainable parameters.
//!
//! ```
//! use kiln_core::{ops, Array};
//! use kiln_nn::{self as nn, Forward, Module, ModuleExt};
//!
//! #[derive(Clone, Module)]
//! struct Mlp {
//!     layers: Vec<nn::Linear>,
//! }
//!
//! impl Forward for Mlp {
//!     fn forward(&self, x: &Array) -> kiln_core::Result<Array> {
//!         let mut x = x.clone();
//!         for (i, l) in self.layers.iter().enumerate() {
//!             x = l.forward(&x)?;
//!             if i + 1 < self.layers.len() {
//!                 x = nn::relu(&x)?;
//!             }
//!         }
//!         Ok(x)
//!     }
//! }
//!
//! let model = Mlp { layers: vec![nn::Linear::new(4, 8, true).unwrap(), nn::Linear::new(8, 2, true).unwrap()] };
//! let keys: Vec<String> = model.named_parameters().into_iter().map(|(k, _)| k).collect();
//! assert_eq!(keys, ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]);
//!
//! let x = Array::from_slice(&[0.5f32; 12], &[3, 4]).unwrap();
//! let loss_and_grad = nn::value_and_grad(|m: &Mlp, args: &[Array]| ops::sum(&m.forward(&args[0])?, ops::Axes::All, false));
//! let (loss, grads) = loss_and_grad(&model, &[x]).unwrap();
//! assert_eq!(loss.shape(), &[] as &[usize]);
//! assert_eq!(grads.array("layers.1.weight").unwrap().shape(), &[2, 8]);
//! ```
#![warn(missing_docs)]

// The derive macro names paths as `::kiln_nn::…`; this makes them resolve
// inside this crate too.
extern crate self as kiln_nn;

pub mod activations;
pub mod init;
pub mod layers;
pub mod losses;
mod module;

pub use activations::*;
pub use kiln_nn_derive::Module;
pub use layers::*;
pub use module::{join_key, LoadReport, Module, ModuleExt, ModuleField, Param};

use kiln_core::{tree_flatten, tree_unflatten, Array, Result, Tree};
use std::collections::HashMap;

/// A module applied to one array (what [`Sequential`] chains).
pub trait Forward {
    /// Applies the module.
    fn forward(&self, x: &Array) -> Result<Array>;
}

/// MLX's `nn.value_and_grad(model, fn)`: wraps a loss `f(model, args)` so that
/// calling the result with a model returns the loss and the gradient of the
/// loss with respect to the model's trainable parameters, as a tree shaped
/// like [`ModuleExt::trainable_parameters`]. Frozen parameters are constants.
pub fn value_and_grad<M, F>(f: F) -> impl Fn(&M, &[Array]) -> Result<(Array, Tree)>
where
    M: Module + Clone,
    F: Fn(&M, &[Array]) -> Result<Array>,
{
    move |model: &M, args: &[Array]| {
        let flat = tree_flatten(&model.trainable_parameters());
        let keys: Vec<String> = flat.iter().map(|(k, _)| k.clone()).collect();
        let params: Vec<Array> = flat.into_iter().map(|(_, a)| a).collect();
        let n = params.len();
        let mut all = params;
        all.extend(args.iter().cloned());
        let vg = kiln_core::value_and_grad(
            |xs: &[Array]| {
                let mut m = model.clone();
                let by_key: HashMap<&str, &Array> = keys.iter().map(String::as_str).zip(&xs[..n]).collect();
                m.visit_params_mut("", &mut |k, p| {
                    if let Some(a) = by_key.get(k) {
                        p.set((*a).clone());
                    }
                });
                Ok(vec![f(&m, &xs[n..])?])
            },
            &(0..n).collect::<Vec<_>>(),
        );
        if n == 0 {
            // Nothing to differentiate: the loss and an empty tree.
            return Ok((f(model, args)?, Tree::Map(Default::default())));
        }
        let (vals, grads) = vg(&all)?;
        Ok((vals[0].clone(), tree_unflatten(keys.iter().cloned().zip(grads))?))
    }
}
