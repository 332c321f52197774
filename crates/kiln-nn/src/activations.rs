//! Activation functions and their modules, as MLX's `mlx.nn` (same formulas
//! in the same order of operations, so results match MLX's).

use crate::module::Param;
use crate::Forward;
use kiln_core::ops;
use kiln_core::{Array, Result};

/// `1 / (1 + e^-x)`.
pub fn sigmoid(x: &Array) -> Result<Array> {
    ops::sigmoid(x)
}
/// `max(x, 0)`.
pub fn relu(x: &Array) -> Result<Array> {
    ops::maximum(x, 0)
}
/// `max(x, 0)²`.
pub fn relu2(x: &Array) -> Result<Array> {
    ops::square(&relu(x)?)
}
/// `min(max(x, 0), 6)`.
pub fn relu6(x: &Array) -> Result<Array> {
    ops::minimum(&relu(x)?, 6.0)
}
/// `max(slope·x, x)`.
pub fn leaky_relu(x: &Array, negative_slope: f32) -> Result<Array> {
    ops::maximum(&ops::multiply(negative_slope, x)?, x)
}
/// `x - logsumexp(x)` along `axis`.
pub fn log_softmax(x: &Array, axis: i32) -> Result<Array> {
    ops::subtract(x, &ops::logsumexp(x, axis, true)?)
}
/// `x` where positive, `alpha·(eˣ - 1)` elsewhere.
pub fn elu(x: &Array, alpha: f32) -> Result<Array> {
    let neg = ops::multiply(alpha, &ops::subtract(&ops::exp(x)?, 1)?)?;
    ops::where_(&ops::greater(x, 0)?, x, &neg)
}
/// Softmax along `axis`.
pub fn softmax(x: &Array, axis: i32) -> Result<Array> {
    ops::softmax(x, axis, false)
}
/// `log(1 + eˣ)`, computed as `logaddexp(x, 0)`.
pub fn softplus(x: &Array) -> Result<Array> {
    ops::logaddexp(x, 0)
}
/// `x / (1 + |x|)`.
pub fn softsign(x: &Array) -> Result<Array> {
    ops::divide(x, &ops::add(1, &ops::abs(x)?)?)
}
/// `x - sign(x)·λ` where `|x| > λ`, else 0.
pub fn softshrink(x: &Array, lambd: f32) -> Result<Array> {
    let shrunk = ops::subtract(x, &ops::multiply(&ops::sign(x)?, lambd)?)?;
    ops::where_(&ops::greater(&ops::abs(x)?, lambd)?, &shrunk, 0)
}
/// `max(x, 0) + α·(e^{min(x, 0)/α} - 1)`.
pub fn celu(x: &Array, alpha: f32) -> Result<Array> {
    let e = ops::subtract(&ops::exp(&ops::divide(&ops::minimum(x, 0.0)?, alpha)?)?, 1)?;
    ops::add(&ops::maximum(x, 0.0)?, &ops::multiply(alpha, &e)?)
}
/// `x·σ(x)`.
pub fn silu(x: &Array) -> Result<Array> {
    ops::multiply(x, &ops::sigmoid(x)?)
}
/// `-softplus(-x)`.
pub fn log_sigmoid(x: &Array) -> Result<Array> {
    ops::negative(&softplus(&ops::negative(x)?)?)
}
/// Exact GELU: `x·(1 + erf(x/√2))/2`.
pub fn gelu(x: &Array) -> Result<Array> {
    let e = ops::erf(&ops::divide(x, std::f64::consts::SQRT_2 as f32)?)?;
    ops::divide(&ops::multiply(x, &ops::add(1, &e)?)?, 2)
}
/// Tanh approximation: `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
pub fn gelu_approx(x: &Array) -> Result<Array> {
    let c = (2.0 / std::f64::consts::PI).sqrt() as f32;
    // x·x·x rather than power(x, 3): the same value to an ulp, elementwise
    // multiplies that fuse, and no per-element powf forward or backward.
    let x3 = ops::multiply(&ops::square(x)?, x)?;
    let inner = ops::add(x, &ops::multiply(0.044715f32, &x3)?)?;
    let t = ops::tanh(&ops::multiply(c, &inner)?)?;
    ops::multiply(&ops::multiply(0.5f32, x)?, &ops::add(1, &t)?)
}
/// Sigmoid approximation: `x·σ(1.702·x)`.
pub fn gelu_fast_approx(x: &Array) -> Result<Array> {
    ops::multiply(x, &ops::sigmoid(&ops::multiply(1.702f32, x)?)?)
}
/// Gated linear unit: splits `axis` in halves `a, b` and returns `a·σ(b)`.
pub fn glu(x: &Array, axis: i32) -> Result<Array> {
    let parts = ops::split(x, ops::SplitSpec::Sections(2), axis)?;
    ops::multiply(&parts[0], &ops::sigmoid(&parts[1])?)
}
/// 1 where `x ≥ threshold`, else 0.
pub fn step(x: &Array, threshold: f32) -> Result<Array> {
    ops::where_(&ops::greater_equal(x, threshold)?, 1, 0)
}
/// `1.0507·elu(x, 1.67326)`.
pub fn selu(x: &Array) -> Result<Array> {
    ops::multiply(&elu(x, 1.67326)?, 1.0507f32)
}
/// `max(0, x) + α·min(0, x)` with a learned `alpha`.
pub fn prelu(x: &Array, alpha: &Array) -> Result<Array> {
    ops::add(&ops::maximum(0, x)?, &ops::multiply(alpha, &ops::minimum(0, x)?)?)
}
/// `x·tanh(softplus(x))`.
pub fn mish(x: &Array) -> Result<Array> {
    ops::multiply(x, &ops::tanh(&softplus(x)?)?)
}
/// `x·min(max(x + 3, 0), 6)/6`.
pub fn hardswish(x: &Array) -> Result<Array> {
    let m = ops::maximum(&ops::add(x, 3)?, 0)?;
    ops::divide(&ops::multiply(x, &ops::minimum(&m, 6)?)?, 6)
}
/// `min(max(x, min_val), max_val)`.
pub fn hard_tanh(x: &Array, min_val: f32, max_val: f32) -> Result<Array> {
    ops::minimum(&ops::maximum(x, min_val)?, max_val)
}
/// `x` where `|x| > λ`, else 0.
pub fn hard_shrink(x: &Array, lambd: f32) -> Result<Array> {
    ops::where_(&ops::greater(&ops::abs(x)?, lambd)?, x, 0)
}
/// `softmax(-x)` along `axis`.
pub fn softmin(x: &Array, axis: i32) -> Result<Array> {
    ops::softmax(&ops::negative(x)?, axis, false)
}
/// Hyperbolic tangent.
pub fn tanh(x: &Array) -> Result<Array> {
    ops::tanh(x)
}

macro_rules! activation_modules {
    ($($(#[$doc:meta])* $name:ident => |$x:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, crate::Module)]
        pub struct $name {}
        impl Forward for $name {
            fn forward(&self, $x: &Array) -> Result<Array> {
                $body
            }
        }
    )*};
}

activation_modules! {
    /// [`sigmoid`] as a module.
    Sigmoid => |x| sigmoid(x);
    /// [`relu`] as a module.
    ReLU => |x| relu(x);
    /// [`relu2`] as a module.
    ReLU2 => |x| relu2(x);
    /// [`relu6`] as a module.
    ReLU6 => |x| relu6(x);
    /// [`softplus`] as a module.
    Softplus => |x| softplus(x);
    /// [`softsign`] as a module.
    Softsign => |x| softsign(x);
    /// [`silu`] as a module.
    SiLU => |x| silu(x);
    /// [`log_sigmoid`] as a module.
    LogSigmoid => |x| log_sigmoid(x);
    /// [`selu`] as a module.
    SELU => |x| selu(x);
    /// [`mish`] as a module.
    Mish => |x| mish(x);
    /// [`hardswish`] as a module.
    Hardswish => |x| hardswish(x);
    /// [`tanh`] as a module.
    Tanh => |x| tanh(x);
    /// [`softmax`] over the last axis as a module.
    Softmax => |x| softmax(x, -1);
    /// [`softmin`] over the last axis as a module.
    Softmin => |x| softmin(x, -1);
    /// [`log_softmax`] over the last axis as a module.
    LogSoftmax => |x| log_softmax(x, -1);
}

macro_rules! param_activation_modules {
    ($($(#[$doc:meta])* $name:ident($field:ident: $t:ty = $default:expr) => |$s:ident, $x:ident| $body:expr;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, crate::Module)]
        pub struct $name {
            #[module(skip)]
            /// The activation's parameter.
            pub $field: $t,
        }
        impl Default for $name {
            fn default() -> Self {
                $name { $field: $default }
            }
        }
        impl Forward for $name {
            fn forward(&$s, $x: &Array) -> Result<Array> {
                $body
            }
        }
    )*};
}

param_activation_modules! {
    /// [`leaky_relu`] as a module (default slope 0.01).
    LeakyReLU(negative_slope: f32 = 0.01) => |self, x| leaky_relu(x, self.negative_slope);
    /// [`elu`] as a module (default α = 1).
    ELU(alpha: f32 = 1.0) => |self, x| elu(x, self.alpha);
    /// [`celu`] as a module (default α = 1).
    CELU(alpha: f32 = 1.0) => |self, x| celu(x, self.alpha);
    /// [`softshrink`] as a module (default λ = 0.5).
    Softshrink(lambd: f32 = 0.5) => |self, x| softshrink(x, self.lambd);
    /// [`hard_shrink`] as a module (default λ = 0.5).
    HardShrink(lambd: f32 = 0.5) => |self, x| hard_shrink(x, self.lambd);
    /// [`step`] as a module (default threshold 0).
    Step(threshold: f32 = 0.0) => |self, x| step(x, self.threshold);
    /// [`glu`] as a module (default axis -1).
    GLU(axis: i32 = -1) => |self, x| glu(x, self.axis);
}

/// [`hard_tanh`] as a module (default range `[-1, 1]`).
#[derive(Clone, Copy, Debug, crate::Module)]
pub struct HardTanh {
    /// Lower bound.
    #[module(skip)]
    pub min_val: f32,
    /// Upper bound.
    #[module(skip)]
    pub max_val: f32,
}

impl Default for HardTanh {
    fn default() -> Self {
        HardTanh { min_val: -1.0, max_val: 1.0 }
    }
}

impl Forward for HardTanh {
    fn forward(&self, x: &Array) -> Result<Array> {
        hard_tanh(x, self.min_val, self.max_val)
    }
}

/// Which formula [`GELU`] uses (MLX's `approx` argument).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GeluApprox {
    /// The exact erf form.
    #[default]
    None,
    /// The tanh approximation (MLX's "precise" and "tanh").
    Tanh,
    /// The sigmoid approximation (MLX's "fast").
    Fast,
}

impl crate::ModuleField for GeluApprox {}

/// GELU as a module.
#[derive(Clone, Copy, Debug, Default, crate::Module)]
pub struct GELU {
    /// The formula.
    pub approx: GeluApprox,
}

impl Forward for GELU {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self.approx {
            GeluApprox::None => gelu(x),
            GeluApprox::Tanh => gelu_approx(x),
            GeluApprox::Fast => gelu_fast_approx(x),
        }
    }
}

/// [`prelu`] with a learned slope per channel (MLX's `nn.PReLU`, initialised to 0.25).
#[derive(Clone, Debug, crate::Module)]
pub struct PReLU {
    /// `(num_parameters,)` slopes.
    pub weight: Param,
}

impl PReLU {
    /// `num_parameters` slopes, each `init`.
    pub fn new(num_parameters: usize, init: f32) -> Result<PReLU> {
        Ok(PReLU { weight: Param::new(ops::full(&[num_parameters], init, kiln_core::Dtype::F32)?) })
    }
}

impl Forward for PReLU {
    fn forward(&self, x: &Array) -> Result<Array> {
        prelu(x, &self.weight)
    }
}
