//! Linear, Identity, Embedding, Dropout and Sequential.

use crate::module::{Module, ModuleField, Param};
use crate::{init, Forward};
use kiln_core::ops::{self, Operand};
use kiln_core::{random, Array, Dtype, Error, Result};

/// `y = x Wᵀ + b`, with `W` of shape `(out, in)` as MLX's `nn.Linear`.
#[derive(Clone, Debug, crate::Module)]
pub struct Linear {
    /// `(output_dims, input_dims)`.
    pub weight: Param,
    /// `(output_dims,)`, if the layer has a bias.
    pub bias: Option<Param>,
}

impl Linear {
    /// A layer initialised as MLX: uniform in `±1/√input_dims` (weight and bias).
    pub fn new(input_dims: usize, output_dims: usize, bias: bool) -> Result<Linear> {
        let scale = (1.0 / input_dims.max(1) as f64).sqrt();
        let weight = init::uniform(&[output_dims, input_dims], -scale, scale, Dtype::F32)?;
        let bias =
            if bias { Some(Param::new(init::uniform(&[output_dims], -scale, scale, Dtype::F32)?)) } else { None };
        Ok(Linear { weight: Param::new(weight), bias })
    }
    /// A layer from given arrays (`weight` `(out, in)`, `bias` `(out,)`).
    pub fn from_weights(weight: Array, bias: Option<Array>) -> Result<Linear> {
        if weight.ndim() != 2 {
            return Err(Error::invalid("Linear", format!("The weight must be 2-D, got shape {:?}.", weight.shape())));
        }
        if let Some(b) = &bias {
            if b.shape() != [weight.shape()[0]] {
                return Err(Error::invalid(
                    "Linear",
                    format!("The bias shape {:?} does not match the weight shape {:?}.", b.shape(), weight.shape()),
                ));
            }
        }
        Ok(Linear { weight: Param::new(weight), bias: bias.map(Param::new) })
    }
}

impl Forward for Linear {
    fn forward(&self, x: &Array) -> Result<Array> {
        let wt = ops::transpose(&self.weight)?;
        match &self.bias {
            Some(b) => ops::addmm(b, x, &wt, 1.0, 1.0),
            None => ops::matmul(x, &wt),
        }
    }
}

/// Returns its input (MLX's `nn.Identity`).
#[derive(Clone, Debug, Default, crate::Module)]
pub struct Identity {}

impl Forward for Identity {
    fn forward(&self, x: &Array) -> Result<Array> {
        Ok(x.clone())
    }
}

/// A lookup table `(num_embeddings, dims)` initialised normal with standard
/// deviation `1/√dims`, as MLX's `nn.Embedding`.
#[derive(Clone, Debug, crate::Module)]
pub struct Embedding {
    /// `(num_embeddings, dims)`.
    pub weight: Param,
}

impl Embedding {
    /// A new table.
    pub fn new(num_embeddings: usize, dims: usize) -> Result<Embedding> {
        let scale = (1.0 / dims.max(1) as f64).sqrt();
        Ok(Embedding { weight: Param::new(init::normal(&[num_embeddings, dims], 0.0, scale, Dtype::F32)?) })
    }
    /// Uses the table as an output projection (`x Wᵀ`, for tied embeddings).
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        ops::matmul(x, &ops::transpose(&self.weight)?)
    }
}

impl Forward for Embedding {
    /// Rows of the table for integer indices of any shape.
    fn forward(&self, x: &Array) -> Result<Array> {
        ops::take(&self.weight, x, Some(0))
    }
}

/// Zeroes each element with probability `p` in training mode and scales the
/// rest by `1/(1-p)`; the identity in evaluation mode (MLX's `nn.Dropout`).
#[derive(Clone, Debug, crate::Module)]
pub struct Dropout {
    #[module(skip)]
    p: f32,
    #[module(training)]
    training: bool,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1)`.
    pub fn new(p: f32) -> Result<Dropout> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("Dropout", format!("The probability should be in [0, 1), got {p}.")));
        }
        Ok(Dropout { p, training: true })
    }
}

impl Forward for Dropout {
    fn forward(&self, x: &Array) -> Result<Array> {
        if !self.training || self.p == 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.p;
        let mask = random::bernoulli(Operand::from(keep), Some(x.shape()), None)?;
        ops::multiply(&ops::multiply(&mask, x)?, 1.0 / keep)
    }
}

/// Channel dropout: zeroes whole channels of `(N, H, W, C)` or `(H, W, C)`
/// input (MLX's `nn.Dropout2d`).
#[derive(Clone, Debug, crate::Module)]
pub struct Dropout2d {
    #[module(skip)]
    p: f32,
    #[module(training)]
    training: bool,
}

/// Channel dropout for `(N, D, H, W, C)` or `(D, H, W, C)` input (MLX's `nn.Dropout3d`).
#[derive(Clone, Debug, crate::Module)]
pub struct Dropout3d {
    #[module(skip)]
    p: f32,
    #[module(training)]
    training: bool,
}

fn channel_dropout(op: &str, x: &Array, p: f32, training: bool, spatial: usize) -> Result<Array> {
    if x.ndim() != spatial + 1 && x.ndim() != spatial + 2 {
        return Err(Error::invalid(
            op,
            format!(
                "Received input with {} dimensions. Expected {} or {} dimensions.",
                x.ndim(),
                spatial + 1,
                spatial + 2
            ),
        ));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 - p;
    let mut shape = x.shape().to_vec();
    let n = shape.len();
    for d in &mut shape[n - 1 - spatial..n - 1] {
        *d = 1;
    }
    let mask = random::bernoulli(Operand::from(keep), Some(&shape), None)?;
    ops::multiply(&ops::multiply(&mask, x)?, 1.0 / keep)
}

impl Dropout2d {
    /// Drops each channel with probability `p` in `[0, 1)`.
    pub fn new(p: f32) -> Result<Dropout2d> {
        Dropout::new(p).map(|_| Dropout2d { p, training: true })
    }
}

impl Forward for Dropout2d {
    fn forward(&self, x: &Array) -> Result<Array> {
        channel_dropout("Dropout2d", x, self.p, self.training, 2)
    }
}

impl Dropout3d {
    /// Drops each channel with probability `p` in `[0, 1)`.
    pub fn new(p: f32) -> Result<Dropout3d> {
        Dropout::new(p).map(|_| Dropout3d { p, training: true })
    }
}

impl Forward for Dropout3d {
    fn forward(&self, x: &Array) -> Result<Array> {
        channel_dropout("Dropout3d", x, self.p, self.training, 3)
    }
}

/// `y = x1ᵀ W x2 + b` with `W` of shape `(out, in2, in1)` (MLX's `nn.Bilinear`).
#[derive(Clone, Debug, crate::Module)]
pub struct Bilinear {
    /// `(output_dims, input2_dims, input1_dims)`.
    pub weight: Param,
    /// `(output_dims,)`.
    pub bias: Option<Param>,
}

impl Bilinear {
    /// A layer initialised uniform in `±1/√input1_dims`.
    pub fn new(input1_dims: usize, input2_dims: usize, output_dims: usize, bias: bool) -> Result<Bilinear> {
        let scale = (1.0 / input1_dims.max(1) as f64).sqrt();
        let weight = init::uniform(&[output_dims, input2_dims, input1_dims], -scale, scale, Dtype::F32)?;
        let bias =
            if bias { Some(Param::new(init::uniform(&[output_dims], -scale, scale, Dtype::F32)?)) } else { None };
        Ok(Bilinear { weight: Param::new(weight), bias })
    }

    /// Applies the layer to `x1 (…, in1)` and `x2 (…, in2)`.
    pub fn apply(&self, x1: &Array, x2: &Array) -> Result<Array> {
        let (out, in2, in1) = (self.weight.shape()[0], self.weight.shape()[1], self.weight.shape()[2]);
        if x1.shape().last() != Some(&in1)
            || x2.shape().last() != Some(&in2)
            || x1.shape()[..x1.ndim() - 1] != x2.shape()[..x2.ndim() - 1]
        {
            return Err(Error::invalid(
                "Bilinear",
                format!(
                    "Inputs {:?} and {:?} do not match the weight {:?}.",
                    x1.shape(),
                    x2.shape(),
                    self.weight.shape()
                ),
            ));
        }
        let lead = x1.shape()[..x1.ndim() - 1].to_vec();
        let n: usize = lead.iter().product();
        let a = ops::reshape_to(x1, &[n, in1])?;
        let b = ops::reshape_to(x2, &[n, 1, in2])?;
        let w = ops::reshape_to(&self.weight, &[out * in2, in1])?;
        let y = ops::matmul(&a, &ops::transpose(&w)?)?;
        let y = ops::swapaxes(&ops::reshape_to(&y, &[n, out, in2])?, -2, -1)?;
        let y = ops::matmul(&b, &y)?;
        let mut shape = lead;
        shape.push(out);
        let y = ops::reshape_to(&y, &shape)?;
        match &self.bias {
            Some(bias) => ops::add(&y, bias),
            None => Ok(y),
        }
    }
}

/// A layer [`Sequential`] can hold: a [`Module`] applied to one array.
pub trait SequentialLayer: Module + ModuleField + Forward + Send + Sync {
    /// A boxed copy.
    fn clone_box(&self) -> Box<dyn SequentialLayer>;
}

impl<T: Module + ModuleField + Forward + Clone + Send + Sync + 'static> SequentialLayer for T {
    fn clone_box(&self) -> Box<dyn SequentialLayer> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn SequentialLayer> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// Layers applied in order (MLX's `nn.Sequential`); keys are `layers.0.…`.
#[derive(Clone, crate::Module)]
pub struct Sequential {
    /// The layers.
    pub layers: Vec<Box<dyn SequentialLayer>>,
}

impl Sequential {
    /// An empty chain.
    pub fn new() -> Sequential {
        Sequential { layers: Vec::new() }
    }
    /// Appends a layer.
    pub fn push(mut self, layer: impl SequentialLayer + 'static) -> Sequential {
        self.layers.push(Box::new(layer));
        self
    }
}

impl Default for Sequential {
    fn default() -> Self {
        Sequential::new()
    }
}

impl Forward for Sequential {
    fn forward(&self, x: &Array) -> Result<Array> {
        let mut x = x.clone();
        for l in &self.layers {
            x = l.forward(&x)?;
        }
        Ok(x)
    }
}
