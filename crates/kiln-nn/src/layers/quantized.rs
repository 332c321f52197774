//! Quantized layers, as MLX's `nn.QuantizedLinear`, `nn.QuantizedEmbedding`
//! and `nn.quantize`.
//!
//! # Quantizing a model in place
//! MLX's `nn.quantize(model, ...)` swaps every `Linear`/`Embedding` leaf of a
//! model for its quantized counterpart by reassigning Python attributes. A
//! Rust struct field has one fixed type, so a field declared as [`Linear`]
//! can never hold a [`QuantizedLinear`]. Models that want in-place
//! quantization therefore declare their projections as [`AnyLinear`] /
//! [`AnyEmbedding`]: layers that are either dense or quantized, with the
//! same parameter keys as MLX in both states (`weight`, `bias` when dense;
//! `weight`, `scales`, `biases`, `bias` when quantized). [`quantize`] walks
//! the module tree and converts those layers in place (a plain [`Linear`] or
//! [`Embedding`] field is left as it is; convert it explicitly with
//! [`QuantizedLinear::from_linear`] if needed). The layers are found through
//! [`Module::as_quantizable`], so the derive needs no change.

use crate::module::{Module, ModuleField, Param};
use crate::{Embedding, Forward, Linear};
use kiln_core::ops::{self, QuantMode, QuantSpec};
use kiln_core::{Array, Dtype, Error, Result};

/// `y = x @ dequantize(W)ᵀ + b` computed from the packed weights, as MLX's
/// `nn.QuantizedLinear`. Parameters (MLX's names): `weight` (packed
/// `uint32`, `(output_dims, input_dims·bits/32)`), `scales`, `biases`
/// (affine only) and the optional `bias`. The quantized arrays are frozen;
/// a bias copied by [`QuantizedLinear::from_linear`] stays trainable, as in
/// MLX.
#[derive(Clone, Debug, crate::Module)]
pub struct QuantizedLinear {
    /// Packed codes.
    pub weight: Param,
    /// Per-group scales.
    pub scales: Param,
    /// Per-group biases (affine mode only).
    pub biases: Option<Param>,
    /// Output bias.
    pub bias: Option<Param>,
    /// Quantization parameters.
    #[module(skip)]
    pub spec: QuantSpec,
}

impl QuantizedLinear {
    /// A layer initialised as MLX's: a uniform `±1/√input_dims` weight,
    /// quantized, and a zero bias; every parameter frozen.
    pub fn new(input_dims: usize, output_dims: usize, bias: bool, spec: QuantSpec) -> Result<QuantizedLinear> {
        let scale = (1.0 / input_dims.max(1) as f64).sqrt();
        let w = crate::init::uniform(&[output_dims, input_dims], -scale, scale, Dtype::F32)?;
        let mut l = QuantizedLinear::from_weights(&w, None, spec)?;
        l.bias = if bias { Some(Param::frozen(ops::zeros(&[output_dims], Dtype::F32)?)) } else { None };
        Ok(l)
    }

    /// Quantizes a dense weight `(output_dims, input_dims)`; the optional bias
    /// stays trainable.
    pub fn from_weights(weight: &Array, bias: Option<Array>, spec: QuantSpec) -> Result<QuantizedLinear> {
        if weight.ndim() != 2 {
            return Err(Error::invalid(
                "QuantizedLinear",
                format!("The weight must be 2-D, got shape {:?}.", weight.shape()),
            ));
        }
        let (wq, scales, biases) = ops::quantize(weight, spec)?;
        Ok(QuantizedLinear {
            weight: Param::frozen(wq),
            scales: Param::frozen(scales),
            biases: biases.map(Param::frozen),
            bias: bias.map(Param::new),
            spec,
        })
    }

    /// Quantizes a [`Linear`] layer (MLX's `QuantizedLinear.from_linear`).
    pub fn from_linear(linear: &Linear, spec: QuantSpec) -> Result<QuantizedLinear> {
        let mut l = QuantizedLinear::from_weights(linear.weight.value(), None, spec)?;
        l.bias = linear.bias.clone();
        Ok(l)
    }

    /// Wraps already quantized arrays (e.g. loaded from an MLX checkpoint).
    pub fn from_quantized(
        weight: Array,
        scales: Array,
        biases: Option<Array>,
        bias: Option<Array>,
        spec: QuantSpec,
    ) -> Result<QuantizedLinear> {
        // Validates shapes and dtypes the way the product will see them.
        ops::dequantize(&weight, &scales, biases.as_ref(), spec)?;
        Ok(QuantizedLinear {
            weight: Param::frozen(weight),
            scales: Param::frozen(scales),
            biases: biases.map(Param::frozen),
            bias: bias.map(Param::new),
            spec,
        })
    }

    /// `(output_dims, input_dims)` of the dense weight.
    pub fn dims(&self) -> (usize, usize) {
        let s = self.weight.shape();
        (s[0], self.spec.unpacked_len(s[1]))
    }
}

impl Forward for QuantizedLinear {
    fn forward(&self, x: &Array) -> Result<Array> {
        let y = ops::quantized_matmul(
            x,
            &self.weight,
            &self.scales,
            self.biases.as_ref().map(|b| b.value()),
            true,
            self.spec,
        )?;
        match &self.bias {
            Some(b) => ops::add(&y, b),
            None => Ok(y),
        }
    }
}

/// A lookup table stored quantized, as MLX's `nn.QuantizedEmbedding`:
/// `weight` (packed codes), `scales`, `biases` (affine only), all frozen.
#[derive(Clone, Debug, crate::Module)]
pub struct QuantizedEmbedding {
    /// Packed codes `(num_embeddings, dims·bits/32)`.
    pub weight: Param,
    /// Per-group scales.
    pub scales: Param,
    /// Per-group biases (affine mode only).
    pub biases: Option<Param>,
    /// Quantization parameters.
    #[module(skip)]
    pub spec: QuantSpec,
}

impl QuantizedEmbedding {
    /// A table initialised as MLX's (normal, standard deviation `1/√dims`), quantized.
    pub fn new(num_embeddings: usize, dims: usize, spec: QuantSpec) -> Result<QuantizedEmbedding> {
        let scale = (1.0 / dims.max(1) as f64).sqrt();
        let w = crate::init::normal(&[num_embeddings, dims], 0.0, scale, Dtype::F32)?;
        QuantizedEmbedding::from_weights(&w, spec)
    }

    /// Quantizes a dense table `(num_embeddings, dims)`.
    pub fn from_weights(weight: &Array, spec: QuantSpec) -> Result<QuantizedEmbedding> {
        if weight.ndim() != 2 {
            return Err(Error::invalid(
                "QuantizedEmbedding",
                format!("The weight must be 2-D, got shape {:?}.", weight.shape()),
            ));
        }
        let (wq, scales, biases) = ops::quantize(weight, spec)?;
        Ok(QuantizedEmbedding {
            weight: Param::frozen(wq),
            scales: Param::frozen(scales),
            biases: biases.map(Param::frozen),
            spec,
        })
    }

    /// Quantizes an [`Embedding`] (MLX's `QuantizedEmbedding.from_embedding`).
    pub fn from_embedding(embedding: &Embedding, spec: QuantSpec) -> Result<QuantizedEmbedding> {
        QuantizedEmbedding::from_weights(embedding.weight.value(), spec)
    }

    /// Uses the table as an output projection, `x @ dequantize(W)ᵀ` from the
    /// packed codes (tied embeddings).
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        ops::quantized_matmul(x, &self.weight, &self.scales, self.biases.as_ref().map(|b| b.value()), true, self.spec)
    }
}

impl Forward for QuantizedEmbedding {
    /// The dequantized rows of the table for integer indices of any shape.
    fn forward(&self, x: &Array) -> Result<Array> {
        let take = |a: &Array| ops::take(a, x, Some(0));
        let b = match &self.biases {
            Some(b) => Some(take(b)?),
            None => None,
        };
        ops::dequantize(&take(&self.weight)?, &take(&self.scales)?, b.as_ref(), self.spec)
    }
}

// ---------------------------------------------------------------- in-place quantization

/// A layer [`quantize`] can convert in place.
pub trait Quantizable {
    /// `"Linear"` or `"Embedding"`.
    fn kind(&self) -> &'static str;
    /// Whether the layer is already quantized.
    fn is_quantized(&self) -> bool;
    /// Shape of the dense weight (`(out, in)` or `(num_embeddings, dims)`).
    fn dense_shape(&self) -> Vec<usize>;
    /// Quantizes the layer (a no-op if it already is).
    fn quantize_with(&mut self, spec: QuantSpec) -> Result<()>;
}

/// A linear layer that is dense or quantized (see the module docs): a field
/// type for models that [`quantize`] converts in place.
#[derive(Clone, Debug)]
pub enum AnyLinear {
    /// A dense [`Linear`].
    Dense(Linear),
    /// A [`QuantizedLinear`].
    Quantized(QuantizedLinear),
}

/// An embedding that is dense or quantized (see the module docs).
#[derive(Clone, Debug)]
pub enum AnyEmbedding {
    /// A dense [`Embedding`].
    Dense(Embedding),
    /// A [`QuantizedEmbedding`].
    Quantized(QuantizedEmbedding),
}

impl From<Linear> for AnyLinear {
    fn from(l: Linear) -> Self {
        AnyLinear::Dense(l)
    }
}
impl From<QuantizedLinear> for AnyLinear {
    fn from(l: QuantizedLinear) -> Self {
        AnyLinear::Quantized(l)
    }
}
impl From<Embedding> for AnyEmbedding {
    fn from(e: Embedding) -> Self {
        AnyEmbedding::Dense(e)
    }
}
impl From<QuantizedEmbedding> for AnyEmbedding {
    fn from(e: QuantizedEmbedding) -> Self {
        AnyEmbedding::Quantized(e)
    }
}

impl AnyLinear {
    /// A dense layer as [`Linear::new`].
    pub fn new(input_dims: usize, output_dims: usize, bias: bool) -> Result<AnyLinear> {
        Ok(AnyLinear::Dense(Linear::new(input_dims, output_dims, bias)?))
    }
}

impl AnyEmbedding {
    /// A dense table as [`Embedding::new`].
    pub fn new(num_embeddings: usize, dims: usize) -> Result<AnyEmbedding> {
        Ok(AnyEmbedding::Dense(Embedding::new(num_embeddings, dims)?))
    }
    /// Uses the table as an output projection (`x Wᵀ`), dense or quantized.
    pub fn as_linear(&self, x: &Array) -> Result<Array> {
        match self {
            AnyEmbedding::Dense(e) => e.as_linear(x),
            AnyEmbedding::Quantized(e) => e.as_linear(x),
        }
    }
}

impl Forward for AnyLinear {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            AnyLinear::Dense(l) => l.forward(x),
            AnyLinear::Quantized(l) => l.forward(x),
        }
    }
}

impl Forward for AnyEmbedding {
    fn forward(&self, x: &Array) -> Result<Array> {
        match self {
            AnyEmbedding::Dense(e) => e.forward(x),
            AnyEmbedding::Quantized(e) => e.forward(x),
        }
    }
}

impl Quantizable for AnyLinear {
    fn kind(&self) -> &'static str {
        "Linear"
    }
    fn is_quantized(&self) -> bool {
        matches!(self, AnyLinear::Quantized(_))
    }
    fn dense_shape(&self) -> Vec<usize> {
        match self {
            AnyLinear::Dense(l) => l.weight.shape().to_vec(),
            AnyLinear::Quantized(q) => {
                let (o, i) = q.dims();
                vec![o, i]
            }
        }
    }
    fn quantize_with(&mut self, spec: QuantSpec) -> Result<()> {
        if let AnyLinear::Dense(l) = self {
            *self = AnyLinear::Quantized(QuantizedLinear::from_linear(l, spec)?);
        }
        Ok(())
    }
}

impl Quantizable for AnyEmbedding {
    fn kind(&self) -> &'static str {
        "Embedding"
    }
    fn is_quantized(&self) -> bool {
        matches!(self, AnyEmbedding::Quantized(_))
    }
    fn dense_shape(&self) -> Vec<usize> {
        match self {
            AnyEmbedding::Dense(e) => e.weight.shape().to_vec(),
            AnyEmbedding::Quantized(q) => {
                let s = q.weight.shape();
                vec![s[0], q.spec.unpacked_len(s[1])]
            }
        }
    }
    fn quantize_with(&mut self, spec: QuantSpec) -> Result<()> {
        if let AnyEmbedding::Dense(e) = self {
            *self = AnyEmbedding::Quantized(QuantizedEmbedding::from_embedding(e, spec)?);
        }
        Ok(())
    }
}

/// Module and ModuleField for a dense-or-quantized enum: transparent (the
/// variant's parameters under the enum's key), and quantizable.
macro_rules! any_layer_module {
    ($t:ident) => {
        impl Module for $t {
            fn visit_params(&self, prefix: &str, f: &mut dyn FnMut(&str, &Param)) {
                match self {
                    $t::Dense(l) => Module::visit_params(l, prefix, f),
                    $t::Quantized(l) => Module::visit_params(l, prefix, f),
                }
            }
            fn visit_params_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Param)) {
                match self {
                    $t::Dense(l) => Module::visit_params_mut(l, prefix, f),
                    $t::Quantized(l) => Module::visit_params_mut(l, prefix, f),
                }
            }
            fn visit_children(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn Module)) {
                match self {
                    $t::Dense(l) => Module::visit_children(l, prefix, f),
                    $t::Quantized(l) => Module::visit_children(l, prefix, f),
                }
            }
            fn visit_children_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
                match self {
                    $t::Dense(l) => Module::visit_children_mut(l, prefix, f),
                    $t::Quantized(l) => Module::visit_children_mut(l, prefix, f),
                }
            }
            fn as_quantizable(&mut self) -> Option<&mut dyn Quantizable> {
                Some(self)
            }
        }
        impl ModuleField for $t {
            fn visit_params(&self, key: &str, f: &mut dyn FnMut(&str, &Param)) {
                Module::visit_params(self, key, f)
            }
            fn visit_params_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut Param)) {
                Module::visit_params_mut(self, key, f)
            }
            fn visit_modules(&self, key: &str, f: &mut dyn FnMut(&str, &dyn Module)) {
                f(key, self);
                Module::visit_children(self, key, f)
            }
            fn visit_modules_mut(&mut self, key: &str, f: &mut dyn FnMut(&str, &mut dyn Module)) {
                f(key, self);
                Module::visit_children_mut(self, key, f)
            }
        }
    };
}
any_layer_module!(AnyLinear);
any_layer_module!(AnyEmbedding);

/// A [`quantize`] predicate: the layer's dotted key and the layer to a choice.
pub type QuantizePredicate = dyn Fn(&str, &dyn Quantizable) -> QuantizeChoice;

/// What a [`quantize`] predicate decides for one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantizeChoice {
    /// Leave the layer dense.
    Skip,
    /// Quantize with the parameters given to [`quantize`].
    Default,
    /// Quantize with these parameters (MLX's predicate returning a dict).
    With(QuantSpec),
}

impl From<bool> for QuantizeChoice {
    fn from(b: bool) -> Self {
        if b {
            QuantizeChoice::Default
        } else {
            QuantizeChoice::Skip
        }
    }
}

/// Quantizes, in place, every quantizable layer ([`AnyLinear`],
/// [`AnyEmbedding`]) of `model` the predicate selects, as MLX's
/// `nn.quantize(model, group_size, bits, mode=..., class_predicate=...)`.
/// `group_size` / `bits` default to the mode's defaults (affine 64/4, mxfp4
/// 32/4, nvfp4 16/4, mxfp8 32/8). The predicate receives the layer's dotted
/// key and the layer; without one every quantizable layer is quantized.
/// Returns the keys of the layers it quantized. On an error (e.g. a layer
/// whose input size is not a multiple of the group size, which MLX also
/// rejects) the layers converted before it stay converted.
pub fn quantize(
    model: &mut dyn Module,
    group_size: Option<usize>,
    bits: Option<u32>,
    mode: QuantMode,
    predicate: Option<&QuantizePredicate>,
) -> Result<Vec<String>> {
    let d = QuantSpec::default_for(mode);
    let spec = QuantSpec { group_size: group_size.unwrap_or(d.group_size), bits: bits.unwrap_or(d.bits), mode };
    spec.validate("quantize")?;
    let mut done = Vec::new();
    let mut err: Option<Error> = None;
    let mut visit = |key: &str, m: &mut dyn Module| {
        if err.is_some() {
            return;
        }
        let Some(q) = m.as_quantizable() else { return };
        if q.is_quantized() {
            return;
        }
        let choice = predicate.map_or(QuantizeChoice::Default, |p| p(key, &*q));
        let s = match choice {
            QuantizeChoice::Skip => return,
            QuantizeChoice::Default => spec,
            QuantizeChoice::With(s) => s,
        };
        match q.quantize_with(s) {
            Ok(()) => done.push(key.to_string()),
            Err(e) => err = Some(Error::invalid("quantize", format!("layer '{key}': {e}"))),
        }
    };
    visit("", model);
    model.visit_children_mut("", &mut visit);
    match err {
        Some(e) => Err(e),
        None => Ok(done),
    }
}
