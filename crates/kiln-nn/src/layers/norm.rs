//! Normalisation layers.

use crate::module::Param;
use crate::Forward;
use kiln_core::ops;
use kiln_core::{Array, Dtype, Result};

/// Layer normalisation over the last axis (MLX's `nn.LayerNorm`):
/// `(x - mean) / √(var + eps) · weight + bias`.
#[derive(Clone, Debug, crate::Module)]
pub struct LayerNorm {
    /// `(dims,)` scale, if affine.
    pub weight: Option<Param>,
    /// `(dims,)` shift, if affine with a bias.
    pub bias: Option<Param>,
    #[module(skip)]
    eps: f32,
}

impl LayerNorm {
    /// `affine` adds a weight (ones) and, with `bias`, a bias (zeros).
    pub fn new(dims: usize, eps: f32, affine: bool, bias: bool) -> Result<LayerNorm> {
        check_eps("LayerNorm", eps)?;
        let weight = if affine { Some(Param::new(ops::ones(&[dims], Dtype::F32)?)) } else { None };
        let bias = if affine && bias { Some(Param::new(ops::zeros(&[dims], Dtype::F32)?)) } else { None };
        Ok(LayerNorm { weight, bias, eps })
    }
}

impl Forward for LayerNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        layer_norm(x, self.weight.as_deref(), self.bias.as_deref(), self.eps)
    }
}

/// Layer normalisation of the last axis with optional weight and bias: the
/// fused kernel [`kiln_core::ops::fast::layer_norm`] (one pass per row, a
/// fused backward).
pub fn layer_norm(x: &Array, weight: Option<&Array>, bias: Option<&Array>, eps: f32) -> Result<Array> {
    ops::fast::layer_norm(x, weight, bias, eps)
}

/// Root-mean-square normalisation over the last axis (MLX's `nn.RMSNorm`):
/// `x / √(mean(x²) + eps) · weight`.
#[derive(Clone, Debug, crate::Module)]
pub struct RMSNorm {
    /// `(dims,)` scale.
    pub weight: Param,
    #[module(skip)]
    eps: f32,
}

impl RMSNorm {
    /// Weight initialised to ones.
    pub fn new(dims: usize, eps: f32) -> Result<RMSNorm> {
        check_eps("RMSNorm", eps)?;
        Ok(RMSNorm { weight: Param::new(ops::ones(&[dims], Dtype::F32)?), eps })
    }
}

impl Forward for RMSNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        rms_norm(x, Some(&self.weight), self.eps)
    }
}

/// RMS normalisation of the last axis with an optional weight: the fused
/// kernel [`kiln_core::ops::fast::rms_norm`].
pub fn rms_norm(x: &Array, weight: Option<&Array>, eps: f32) -> Result<Array> {
    ops::fast::rms_norm(x, weight, eps)
}

fn check_eps(op: &str, eps: f32) -> Result<()> {
    if eps <= 0.0 {
        return Err(kiln_core::Error::invalid(op, format!("'eps' must be positive but got {eps}.")));
    }
    Ok(())
}

fn affine(x: Array, weight: Option<&Param>, bias: Option<&Param>) -> Result<Array> {
    match (weight, bias) {
        (Some(w), Some(b)) => ops::add(&ops::multiply(w, &x)?, b),
        _ => Ok(x),
    }
}

/// Group normalisation over channels-last input (MLX's `nn.GroupNorm`).
#[derive(Clone, Debug, crate::Module)]
pub struct GroupNorm {
    /// `(dims,)` scale, if affine.
    pub weight: Option<Param>,
    /// `(dims,)` shift, if affine.
    pub bias: Option<Param>,
    #[module(skip)]
    num_groups: usize,
    #[module(skip)]
    eps: f32,
    #[module(skip)]
    pytorch_compatible: bool,
}

impl GroupNorm {
    /// `num_groups` groups of `dims` features. MLX's default groups interleave
    /// channels (`pytorch_compatible = false`); PyTorch's are contiguous blocks.
    pub fn new(num_groups: usize, dims: usize, eps: f32, affine: bool, pytorch_compatible: bool) -> Result<GroupNorm> {
        check_eps("GroupNorm", eps)?;
        if num_groups == 0 || dims == 0 || !dims.is_multiple_of(num_groups) {
            return Err(kiln_core::Error::invalid(
                "GroupNorm",
                format!(
                    "The number of features ({dims}) must be evenly divisible by the number of groups ({num_groups})."
                ),
            ));
        }
        let (weight, bias) = if affine {
            (Some(Param::new(ops::ones(&[dims], Dtype::F32)?)), Some(Param::new(ops::zeros(&[dims], Dtype::F32)?)))
        } else {
            (None, None)
        };
        Ok(GroupNorm { weight, bias, num_groups, eps, pytorch_compatible })
    }
}

impl Forward for GroupNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        let shape = x.shape().to_vec();
        if shape.len() < 2 {
            return Err(kiln_core::Error::invalid("GroupNorm", format!("Expected (batch, …, dims), got {shape:?}.")));
        }
        let (b, dims, g) = (shape[0], shape[shape.len() - 1], self.num_groups);
        let rest: usize = shape[1..shape.len() - 1].iter().product();
        let y = if self.pytorch_compatible {
            let gs = dims / g;
            let t = ops::transpose_axes(&ops::reshape_to(x, &[b, rest, g, gs])?, &[0, 2, 1, 3])?;
            let n = layer_norm(&ops::reshape_to(&t, &[b, g, rest * gs])?, None, None, self.eps)?;
            let n = ops::transpose_axes(&ops::reshape_to(&n, &[b, g, rest, gs])?, &[0, 2, 1, 3])?;
            ops::reshape_to(&n, &shape)?
        } else {
            let t = ops::reshape_to(x, &[b, rest * dims / g, g])?;
            let mean = ops::mean(&t, 1, true)?;
            let var = ops::var(&t, 1, true, 0)?;
            let n = ops::multiply(&ops::subtract(&t, &mean)?, &ops::rsqrt(&ops::add(&var, self.eps)?)?)?;
            ops::reshape_to(&n, &shape)?
        };
        affine(y, self.weight.as_ref(), self.bias.as_ref())
    }
}

/// Instance normalisation: each channel of each sample over its spatial
/// positions (MLX's `nn.InstanceNorm`).
#[derive(Clone, Debug, crate::Module)]
pub struct InstanceNorm {
    /// `(dims,)` scale, if affine.
    pub weight: Option<Param>,
    /// `(dims,)` shift, if affine.
    pub bias: Option<Param>,
    #[module(skip)]
    eps: f32,
}

impl InstanceNorm {
    /// Optionally affine (MLX's default is not).
    pub fn new(dims: usize, eps: f32, affine: bool) -> Result<InstanceNorm> {
        check_eps("InstanceNorm", eps)?;
        let (weight, bias) = if affine {
            (Some(Param::new(ops::ones(&[dims], Dtype::F32)?)), Some(Param::new(ops::zeros(&[dims], Dtype::F32)?)))
        } else {
            (None, None)
        };
        Ok(InstanceNorm { weight, bias, eps })
    }
}

impl Forward for InstanceNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        if x.ndim() < 3 {
            return Err(kiln_core::Error::invalid(
                "InstanceNorm",
                format!("InstanceNorm expects inputs with at least 3 dimensions (N, ..., C) but the input has {} dimensions.", x.ndim()),
            ));
        }
        let axes: Vec<i32> = (1..x.ndim() as i32 - 1).collect();
        let mean = ops::mean(x, axes.clone(), true)?;
        let var = ops::var(x, axes, true, 0)?;
        let y = ops::multiply(&ops::subtract(x, &mean)?, &ops::rsqrt(&ops::add(&var, self.eps)?)?)?;
        affine(y, self.weight.as_ref(), self.bias.as_ref())
    }
}

/// A parameter a layer updates while computing its output (BatchNorm's
/// running statistics): visited like a [`Param`], behind a lock.
///
/// Clones share the statistic, so that a training step on a clone updates
/// the original: [`crate::value_and_grad`] runs the loss on a clone of the
/// model, and MLX's `nn.value_and_grad`, which runs the model itself, moves
/// the running statistics with every step. A clone stops sharing as soon as
/// its value is replaced through the module API (`update`, `load_weights`, …).
#[derive(Debug)]
pub struct RunningStat(std::sync::Arc<std::sync::Mutex<Param>>);

impl RunningStat {
    fn new(a: Array) -> RunningStat {
        RunningStat(std::sync::Arc::new(std::sync::Mutex::new(Param::frozen(a))))
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, Param> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// The current value.
    pub fn value(&self) -> Array {
        self.lock().value().clone()
    }
    fn set(&self, a: Array) {
        self.lock().set(a)
    }
}

impl Clone for RunningStat {
    fn clone(&self) -> Self {
        RunningStat(self.0.clone())
    }
}

impl crate::ModuleField for RunningStat {
    fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
        f(key, &self.lock())
    }
    fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
        let mut p = self.lock().clone();
        let before = p.value().id();
        f(key, &mut p);
        // Running statistics never train, whatever `unfreeze` asked (as MLX's BatchNorm).
        p.set_frozen(true);
        if p.value().id() != before {
            // A new value for this module only: stop sharing with the clones.
            *self = RunningStat(std::sync::Arc::new(std::sync::Mutex::new(p)));
        }
    }
}

/// Batch normalisation over all axes but the last (MLX's `nn.BatchNorm`):
/// batch statistics in training mode (updating the running ones), running
/// statistics in evaluation mode. Clones share the running statistics (see
/// [`RunningStat`]), so training through [`crate::value_and_grad`] updates them.
#[derive(Clone, Debug, crate::Module)]
pub struct BatchNorm {
    /// `(features,)` scale, if affine.
    pub weight: Option<Param>,
    /// `(features,)` shift, if affine.
    pub bias: Option<Param>,
    /// Running mean (frozen).
    pub running_mean: Option<RunningStat>,
    /// Running variance (frozen).
    pub running_var: Option<RunningStat>,
    #[module(skip)]
    eps: f32,
    #[module(skip)]
    momentum: f32,
    #[module(training)]
    training: bool,
}

impl BatchNorm {
    /// MLX's defaults are `eps = 1e-5, momentum = 0.1, affine, track_running_stats`.
    pub fn new(
        num_features: usize,
        eps: f32,
        momentum: f32,
        affine: bool,
        track_running_stats: bool,
    ) -> Result<BatchNorm> {
        check_eps("BatchNorm", eps)?;
        let (weight, bias) = if affine {
            (
                Some(Param::new(ops::ones(&[num_features], Dtype::F32)?)),
                Some(Param::new(ops::zeros(&[num_features], Dtype::F32)?)),
            )
        } else {
            (None, None)
        };
        let (running_mean, running_var) = if track_running_stats {
            (
                Some(RunningStat::new(ops::zeros(&[num_features], Dtype::F32)?)),
                Some(RunningStat::new(ops::ones(&[num_features], Dtype::F32)?)),
            )
        } else {
            (None, None)
        };
        Ok(BatchNorm { weight, bias, running_mean, running_var, eps, momentum, training: true })
    }
}

impl Forward for BatchNorm {
    fn forward(&self, x: &Array) -> Result<Array> {
        if x.ndim() < 2 || x.ndim() > 4 {
            return Err(kiln_core::Error::invalid(
                "BatchNorm",
                format!("Expected input tensor to have 2, 3 or 4 dimensions, but got {}", x.ndim()),
            ));
        }
        let axes: Vec<i32> = (0..x.ndim() as i32 - 1).collect();
        if self.training && x.shape()[..x.ndim() - 1].iter().product::<usize>() == 1 {
            return Err(kiln_core::Error::invalid(
                "BatchNorm",
                "BatchNorm training requires more than one value per channel.",
            ));
        }
        let (mut mean, mut var) = (ops::mean(x, axes.clone(), false)?, ops::var(x, axes.clone(), false, 0)?);
        if let (Some(rm), Some(rv)) = (&self.running_mean, &self.running_var) {
            if self.training {
                let mu = self.momentum as f64;
                let unbiased = ops::var(x, axes, false, 1)?;
                rm.set(ops::add(&ops::multiply(1.0 - mu, &rm.value())?, &ops::multiply(mu, &mean)?)?);
                rv.set(ops::add(&ops::multiply(1.0 - mu, &rv.value())?, &ops::multiply(mu, &unbiased)?)?);
            } else {
                mean = rm.value();
                var = rv.value();
            }
        }
        let y = ops::multiply(&ops::subtract(x, &mean)?, &ops::rsqrt(&ops::add(&var, self.eps)?)?)?;
        affine(y, self.weight.as_ref(), self.bias.as_ref())
    }
}
